//! A send step rendered for one contact, as it would go out (before
//! tracking links are added): what the dashboard's preview shows.

use super::Journeys;
use super::definition::Step;
use crate::render::{JourneyContext, RenderContext, Rendered, render};
use crate::store::StoreError;
use crate::store::timeline::event_in;

/// What to preview: a send step of the journey's latest version, for a
/// contact, optionally a named variant and a stored touchpoint as `event`.
#[derive(Clone, Copy, Debug)]
pub struct Preview<'a> {
    pub journey: &'a str,
    pub step: &'a str,
    pub variant: Option<&'a str>,
    pub contact_id: &'a str,
    pub event_id: Option<&'a str>,
}

impl Journeys {
    /// Renders the step: the named variant, else the step's template, else
    /// its first variant. An event of another contact is not shown.
    pub async fn preview(&self, asked: Preview<'_>) -> Result<Rendered, StoreError> {
        let store = &self.pipeline.store;
        let (_, def) = self.latest(asked.journey).await?;
        let Some((
            _,
            Step::Send {
                template, variants, ..
            },
        )) = def.step(asked.step)
        else {
            return Err(StoreError::Invalid(format!(
                "journey {} has no send step `{}`",
                asked.journey, asked.step
            )));
        };
        let template = match asked.variant {
            Some(wanted) => variants
                .iter()
                .find(|v| v.name == wanted)
                .map(|v| &v.template)
                .ok_or_else(|| {
                    StoreError::Invalid(format!("step `{}` has no variant `{wanted}`", asked.step))
                })?,
            None => template
                .as_ref()
                .or(variants.first().map(|v| &v.template))
                .ok_or_else(|| StoreError::Invalid("the step has no template".into()))?,
        };
        let mut contact = store.contact(asked.contact_id).await?;
        contact.segments = store.memberships(&contact.id).await?;
        let event = match asked.event_id {
            Some(id) => {
                let mut conn = store.pool().acquire().await?;
                event_in(&mut conn, id)
                    .await?
                    .filter(|e| e.contact_id == contact.id)
            }
            None => None,
        };
        let context = RenderContext {
            contact: &contact,
            event: event.as_ref(),
            journey: JourneyContext {
                name: asked.journey,
                step: asked.step,
                variant: asked.variant,
            },
        };
        render(template, &context).map_err(StoreError::Invalid)
    }
}
