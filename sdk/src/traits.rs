//! The three traits a plugin implements, one per WIT world.

use crate::{
    ActivityCount, Callback, ChannelInfo, Contact, Ctx, Delivery, DeliveryEvent, Event, Message,
    PluginError, RuleInput, ScoreChange, ScorerInput, SendError,
};

/// Decides whether a contact belongs to a segment.
pub trait SegmentRule {
    /// Does `contact` belong? `activity` summarises their touchpoints per kind.
    fn matches(
        ctx: &Ctx,
        contact: &Contact,
        activity: &[ActivityCount],
    ) -> Result<bool, PluginError>;

    /// Many contacts at once, one answer per item in order. Override only
    /// when a batch can share work (parsing configuration once, say).
    fn matches_batch(ctx: &Ctx, items: &[RuleInput]) -> Result<Vec<bool>, PluginError> {
        items
            .iter()
            .map(|item| Self::matches(ctx, &item.contact, &item.activity))
            .collect()
    }
}

/// Moves a contact's lead score. Both methods default to no change, so a
/// scorer implements the one it cares about.
pub trait Scorer {
    /// Implicit scoring: a touchpoint happened. `activity` summarises the
    /// history before it.
    fn on_event(
        ctx: &Ctx,
        contact: &Contact,
        event: &Event,
        activity: &[ActivityCount],
    ) -> Result<ScoreChange, PluginError> {
        let _ = (ctx, contact, event, activity);
        Ok(ScoreChange::none())
    }

    /// Many touchpoints at once, on one instance: one answer per item, in
    /// order. The default calls [`Scorer::on_event`] per item, so a scorer
    /// need not implement it; override it when items can share work
    /// (parsing configuration once, say). `Err` for the whole batch
    /// declines every item; an item's own `Err` declines only that item.
    fn on_event_batch(
        ctx: &Ctx,
        items: &[ScorerInput],
    ) -> Result<Vec<Result<ScoreChange, PluginError>>, PluginError> {
        Ok(items
            .iter()
            .map(|item| Self::on_event(ctx, &item.contact, &item.event, &item.activity))
            .collect())
    }

    /// Explicit scoring: the profile's whole worth from this scorer. The
    /// host replaces the previous profile contribution with it.
    fn on_profile(ctx: &Ctx, contact: &Contact) -> Result<ScoreChange, PluginError> {
        let _ = (ctx, contact);
        Ok(ScoreChange::none())
    }
}

/// Delivers messages to a provider.
pub trait Channel {
    fn describe() -> ChannelInfo;

    /// Deliver one message; pass `message.idempotency_key` on to the
    /// provider so a retry never delivers twice.
    fn deliver(ctx: &Ctx, message: &Message) -> Result<Delivery, SendError>;

    /// Parse a provider callback into delivery outcomes. Defaults to none.
    fn parse_callback(ctx: &Ctx, request: &Callback) -> Result<Vec<DeliveryEvent>, PluginError> {
        let _ = (ctx, request);
        Ok(Vec::new())
    }
}
