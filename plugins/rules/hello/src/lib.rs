use nachfass_sdk::*;

pub struct HasEmail;

impl SegmentRule for HasEmail {
    fn matches(_: &Ctx, contact: &Contact, _: &[ActivityCount]) -> Result<bool, PluginError> {
        Ok(contact.email.is_some())
    }
}

export_segment_rule!(HasEmail);
