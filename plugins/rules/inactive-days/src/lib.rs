//! Contacts with no activity for N days, for wake-up nurtures and
//! reactivation ("Wir vermissen Sie").
//!
//! Activity is what the contact did. What nachfass did to them (messages
//! sent or delivered, bounces) and bookkeeping events (segment, score, stage,
//! journey) never count, or mailing someone would keep them "active".
//! A contact who never did anything counts from their creation time.

use nachfass_sdk::*;

pub struct InactiveDays;

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// Kinds the host writes about a contact rather than the contact doing them.
const NOT_ACTIVITY: &[&str] = &[
    "email.sent",
    "email.delivered",
    "email.bounced",
    "email.soft_bounced",
    "email.complained",
    "message.*",
    "segment.*",
    "score.*",
    "stage.*",
    "journey.*",
    "policy.*",
    "consent.*",
];

fn kind_matches(pattern: &str, kind: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => kind.starts_with(prefix),
        None => pattern == kind,
    }
}

struct Settings {
    days: i64,
    kinds: Option<Vec<String>>,
}

impl Settings {
    fn from_config(ctx: &Ctx) -> Result<Settings, PluginError> {
        let days: i64 = ctx.config_or("days", 30)?;
        if days <= 0 {
            return Err(PluginError::bad_config(
                "days",
                "must be a positive number of days",
            ));
        }
        let kinds = ctx.config("kinds").map(|list| {
            list.split(',')
                .map(|k| k.trim().to_owned())
                .filter(|k| !k.is_empty())
                .collect()
        });
        Ok(Settings { days, kinds })
    }

    fn counts(&self, kind: &str) -> bool {
        match &self.kinds {
            Some(kinds) => kinds.iter().any(|p| kind_matches(p, kind)),
            None => !NOT_ACTIVITY.iter().any(|p| kind_matches(p, kind)),
        }
    }

    fn inactive(&self, now: i64, contact: &Contact, activity: &[ActivityCount]) -> bool {
        let last_activity = activity
            .iter()
            .filter(|a| a.total > 0 && self.counts(&a.kind))
            .filter_map(|a| a.last_at)
            .max();
        let since = last_activity.unwrap_or(contact.created_at);
        now.saturating_sub(since) >= self.days.saturating_mul(DAY_MS)
    }
}

impl SegmentRule for InactiveDays {
    fn matches(
        ctx: &Ctx,
        contact: &Contact,
        activity: &[ActivityCount],
    ) -> Result<bool, PluginError> {
        Ok(Settings::from_config(ctx)?.inactive(ctx.now(), contact, activity))
    }

    fn matches_batch(ctx: &Ctx, items: &[RuleInput]) -> Result<Vec<bool>, PluginError> {
        let settings = Settings::from_config(ctx)?;
        let now = ctx.now();
        Ok(items
            .iter()
            .map(|item| settings.inactive(now, &item.contact, &item.activity))
            .collect())
    }
}

export_segment_rule!(InactiveDays);

#[cfg(test)]
mod tests {
    use super::*;
    use nachfass_sdk::testing::{DAY, TestHost};

    const NOW: i64 = 1_000 * DAY;

    fn inactive(host: &TestHost, activity: &[ActivityCount]) -> bool {
        let contact = Contact::new("c").with_created_at(NOW - 400 * DAY);
        host.matches::<InactiveDays>(&contact, activity).unwrap()
    }

    #[test]
    fn counts_days_since_the_last_thing_the_contact_did() {
        let host = TestHost::new().config("days", "60").now(NOW);
        let visited = |days_ago| {
            [ActivityCount::new(
                "page.visited",
                3,
                Some(NOW - days_ago * DAY),
            )]
        };
        assert!(inactive(&host, &visited(61)));
        assert!(inactive(&host, &visited(60)));
        assert!(!inactive(&host, &visited(59)));
    }

    #[test]
    fn our_own_messages_do_not_count_as_activity() {
        let host = TestHost::new().config("days", "30").now(NOW);
        let activity = [
            ActivityCount::new("email.sent", 9, Some(NOW - DAY)),
            ActivityCount::new("segment.entered", 1, Some(NOW - DAY)),
            ActivityCount::new("email.opened", 1, Some(NOW - 90 * DAY)),
        ];
        assert!(inactive(&host, &activity));
    }

    #[test]
    fn configured_kinds_narrow_what_counts() {
        let host = TestHost::new()
            .config("kinds", "purchase, email.*")
            .now(NOW);
        let activity = [
            ActivityCount::new("page.visited", 5, Some(NOW - DAY)),
            ActivityCount::new("email.clicked", 1, Some(NOW - 45 * DAY)),
        ];
        assert!(inactive(&host, &activity), "page visits are not in `kinds`");
    }

    #[test]
    fn a_contact_without_activity_counts_from_creation() {
        let host = TestHost::new().config("days", "30").now(NOW);
        let fresh = Contact::new("new").with_created_at(NOW - 2 * DAY);
        assert!(!host.matches::<InactiveDays>(&fresh, &[]).unwrap());
        let old = Contact::new("old").with_created_at(NOW - 31 * DAY);
        assert!(host.matches::<InactiveDays>(&old, &[]).unwrap());
    }

    #[test]
    fn bad_days_are_rejected() {
        for days in ["0", "-3", "soon"] {
            let host = TestHost::new().config("days", days).now(NOW);
            let err = host
                .matches::<InactiveDays>(&Contact::new("c"), &[])
                .unwrap_err();
            assert_eq!(err.code, "bad-config", "{days}");
        }
    }
}
