//! Applying stored events in batches. The events of a batch are grouped
//! by contact and taken in rounds (the first event of every contact, then
//! the second…), so each contact's events keep their order and every
//! scorer sees the score, stage and memberships the contact's earlier
//! events produced, exactly as one event at a time would. Per round, each
//! binding's plugin is called for the whole round: segment rules once,
//! through `matches-batch`. A batch needs a handful of reads (bindings,
//! contacts with memberships, activity) and one write transaction.

use std::collections::HashMap;
use std::sync::Arc;

use crate::model::{ActivityCount, Contact, Event};
use crate::pipeline::Pipeline;
use crate::runtime::{Binding, Plugin, ScorerInput, World};
use crate::scoring::runtime_binding;
use crate::store::bindings::profile_bindings_in;
use crate::store::{Applied, BindingDef, ProfileEffect, StoreError};

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// How often a batch is computed again after another worker applied part
/// of it meanwhile.
const RACE_RETRIES: usize = 3;

/// A live binding with the plugin it runs on this node.
struct Live {
    def: BindingDef,
    plugin: Arc<Plugin>,
    binding: Arc<Binding>,
}

impl Pipeline {
    /// Applies the profile effects of the events among `ids` that are not
    /// applied yet (a `process_events` job: after a crash, or as the
    /// backstop of a batch this node applied at once).
    pub async fn process_events(&self, ids: &[String]) -> Result<(), StoreError> {
        let events = self.store.unprocessed_events(ids).await?;
        self.apply_events(events, None).await
    }

    /// Computes and writes the effects of `events`, stored and not yet
    /// applied, in one transaction; with them goes the group's backstop
    /// `process_events` job, named by the group's first event.
    pub(crate) async fn apply_events(
        &self,
        mut events: Vec<Event>,
        backstop: Option<&str>,
    ) -> Result<(), StoreError> {
        for _ in 0..RACE_RETRIES {
            if events.is_empty() {
                return Ok(());
            }
            let now = self.clock.now();
            let mut conn = self.store.pool().acquire().await?;
            let effects = self.effects_of(&mut conn, &events, now).await?;
            drop(conn);
            let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
            match self
                .store
                .apply_profile_effects(&ids, &effects, backstop, now)
                .await?
            {
                Applied::Done => return Ok(()),
                // Another worker applied some: compute again for the rest.
                Applied::Raced => events = self.store.unprocessed_events(&ids).await?,
            }
        }
        Err(StoreError::Conflict(
            "events kept being applied by another worker meanwhile; the process_events job retries them"
                .into(),
        ))
    }

    /// The scorer and the segment bindings that apply events now, with
    /// the plugins they run on this node, read on `conn`.
    async fn live(
        &self,
        conn: &mut sqlx::AnyConnection,
    ) -> Result<(Vec<Live>, Vec<Live>), StoreError> {
        let (scorers, segments) = profile_bindings_in(conn).await?;
        Ok((
            self.runnable(scorers, World::Scorer),
            self.runnable(segments, World::SegmentRule),
        ))
    }

    /// Those of `defs` that run here: not paused, their plugin installed.
    fn runnable(&self, defs: Vec<BindingDef>, world: World) -> Vec<Live> {
        let mut live = Vec::new();
        for def in defs {
            // Paused by the circuit breaker: no effect until resumed.
            if def.paused.is_some() {
                continue;
            }
            let Some(plugin) = self.registry.resolve(&def.plugin, def.version.as_deref()) else {
                tracing::warn!(binding = %def.name, plugin = %def.plugin, "plugin not installed; binding skipped");
                continue;
            };
            let binding = runtime_binding(&def, world, &plugin);
            live.push(Live {
                def,
                plugin,
                binding,
            });
        }
        live
    }

    /// The effects of `events`, in the order they happen, reading their
    /// contacts on `conn`. Their contacts' activity is read from the
    /// applied events: `events` are not among them (not applied yet, or
    /// not stored yet), and each is added in its turn.
    pub(super) async fn effects_of(
        &self,
        conn: &mut sqlx::AnyConnection,
        events: &[Event],
        now: i64,
    ) -> Result<Vec<ProfileEffect>, StoreError> {
        let (scorers, segments) = self.live(conn).await?;
        // A purchase makes a customer even where nothing scores.
        let stages_move = |kind: &str| !scorers.is_empty() || kind == "purchase";
        if segments.is_empty() && !events.iter().any(|e| stages_move(&e.kind)) {
            return Ok(Vec::new());
        }
        let mut order: Vec<String> = Vec::new();
        let mut by_contact: HashMap<&str, Vec<&Event>> = HashMap::new();
        for event in events {
            let queue = by_contact.entry(&event.contact_id).or_default();
            if queue.is_empty() {
                order.push(event.contact_id.clone());
            }
            queue.push(event);
        }
        let (mut contacts, mut activity) = self.store.profiles_in(conn, &order, now).await?;
        let rounds = by_contact.values().map(Vec::len).max().unwrap_or(0);
        let mut effects = Vec::new();
        for round in 0..rounds {
            // A contact deleted meanwhile has nothing left to change.
            let items: Vec<(&str, &Event)> = order
                .iter()
                .filter(|id| contacts.contains_key(id.as_str()))
                .filter_map(|id| {
                    let event = by_contact.get(id.as_str())?.get(round)?;
                    Some((id.as_str(), *event))
                })
                .collect();
            for live in &scorers {
                self.score_round(live, &items, &mut contacts, &activity, now, &mut effects)
                    .await;
            }
            // Timeline events this round causes, added to the activity
            // once the segment rules have seen the round's own events.
            let mut caused: Vec<(&str, &'static str)> = Vec::new();
            for (contact_id, event) in &items {
                add_to_activity(
                    activity.entry((*contact_id).to_owned()).or_default(),
                    &event.kind,
                    event.at,
                    now,
                );
                let Some(contact) = contacts.get_mut(*contact_id) else {
                    continue;
                };
                if !stages_move(&event.kind) {
                    continue;
                }
                let stage = self
                    .stages
                    .stage_for(&contact.stage, contact.score, &event.kind);
                if stage != contact.stage {
                    effects.push(ProfileEffect::Stage {
                        contact_id: contact.id.clone(),
                        from: std::mem::replace(&mut contact.stage, stage.clone()),
                        to: stage,
                        score: contact.score,
                    });
                    caused.push((contact_id, "stage.changed"));
                }
            }
            if !segments.is_empty() {
                let members = self
                    .segment_answers(&segments, &items, &contacts, &activity, now)
                    .await;
                for (segment, contact_id, member) in members {
                    effects.push(ProfileEffect::Membership {
                        segment: segment.clone(),
                        contact_id: contact_id.to_owned(),
                        member,
                    });
                    if let Some(contact) = contacts.get_mut(contact_id) {
                        if member {
                            contact.segments.push(segment);
                            contact.segments.sort();
                        } else {
                            contact.segments.retain(|s| *s != segment);
                        }
                    }
                    caused.push((
                        contact_id,
                        if member {
                            "segment.entered"
                        } else {
                            "segment.left"
                        },
                    ));
                }
            }
            for (contact_id, kind) in caused {
                add_to_activity(
                    activity.entry(contact_id.to_owned()).or_default(),
                    kind,
                    now,
                    now,
                );
            }
        }
        Ok(effects)
    }

    /// One scorer binding over a round: one call with every event of the
    /// round (the contacts are distinct), each with its contact as the
    /// earlier bindings and rounds left it and the activity before it.
    async fn score_round(
        &self,
        live: &Live,
        items: &[(&str, &Event)],
        contacts: &mut HashMap<String, Contact>,
        activity: &HashMap<String, Vec<ActivityCount>>,
        now: i64,
        effects: &mut Vec<ProfileEffect>,
    ) {
        let present: Vec<&(&str, &Event)> = items
            .iter()
            .filter(|(id, _)| contacts.contains_key(*id))
            .collect();
        let answers = {
            let inputs: Vec<ScorerInput<'_>> = present
                .iter()
                .filter_map(|(id, event)| {
                    Some(ScorerInput {
                        contact: contacts.get(*id)?,
                        event,
                        activity: activity.get(*id).map(Vec::as_slice).unwrap_or_default(),
                    })
                })
                .collect();
            let answers = live
                .plugin
                .on_event_batch(&live.binding, now, &inputs)
                .await;
            let call = crate::shadow::Call::OnEventBatch {
                items: &inputs,
                answer: &answers,
            };
            crate::shadow::observe(self, &live.binding, &live.plugin, now, call).await;
            answers
        };
        let answers = match answers {
            Ok(answers) => answers,
            // A scorer's failure must not lose the touchpoints: it is logged
            // and counted on the plugin, and the events stay recorded.
            Err(failed) => {
                crate::breaker::observe(self, &live.def.name, &live.plugin, true).await;
                tracing::warn!(binding = %live.def.name, error = %failed, events = present.len(), "scorer failed");
                return;
            }
        };
        for ((id, event), answer) in present.into_iter().zip(answers) {
            crate::breaker::observe(self, &live.def.name, &live.plugin, answer.is_err()).await;
            let Some(contact) = contacts.get_mut(*id) else {
                continue;
            };
            match answer {
                Ok(change) if change.delta != 0 => {
                    contact.score += change.delta;
                    effects.push(ProfileEffect::Score {
                        contact_id: contact.id.clone(),
                        binding: live.def.name.clone(),
                        delta: change.delta,
                        reasons: change.reasons,
                        event_id: event.id.clone(),
                    });
                }
                Ok(_) => {}
                Err(declined) => {
                    tracing::warn!(binding = %live.def.name, error = %declined, "scorer declined")
                }
            }
        }
    }

    /// Every segment rule's answer for the round's contacts, one batch call
    /// per rule, all on the same view of the contacts: the memberships that
    /// change, as (segment, contact, member).
    async fn segment_answers<'a>(
        &self,
        segments: &[Live],
        items: &[(&'a str, &Event)],
        contacts: &HashMap<String, Contact>,
        activity: &HashMap<String, Vec<ActivityCount>>,
        now: i64,
    ) -> Vec<(String, &'a str, bool)> {
        let (ids, batch): (Vec<&'a str>, Vec<(Contact, Vec<ActivityCount>)>) = items
            .iter()
            .filter_map(|(id, _)| {
                let contact = contacts.get(*id)?.clone();
                let activity = activity.get(*id).cloned().unwrap_or_default();
                Some((*id, (contact, activity)))
            })
            .unzip();
        let mut changes = Vec::new();
        for live in segments {
            let answer = live.plugin.matches_batch(&live.binding, now, &batch).await;
            let call = crate::shadow::Call::MatchesBatch {
                items: &batch,
                answer: &answer,
            };
            crate::shadow::observe(self, &live.binding, &live.plugin, now, call).await;
            crate::breaker::observe(
                self,
                &live.def.name,
                &live.plugin,
                !matches!(answer, Ok(Ok(_))),
            )
            .await;
            let answers = match answer {
                Ok(Ok(answers)) => answers,
                // Keep the memberships as they are when the rule cannot decide.
                Ok(Err(declined)) => {
                    tracing::warn!(segment = %live.def.name, error = %declined, "segment rule declined");
                    continue;
                }
                Err(failed) => {
                    tracing::warn!(segment = %live.def.name, error = %failed, "segment rule failed");
                    continue;
                }
            };
            for ((id, (contact, _)), member) in ids.iter().zip(&batch).zip(answers) {
                if contact.segments.contains(&live.def.name) != member {
                    changes.push((live.def.name.clone(), *id, member));
                }
            }
        }
        changes
    }
}

/// Counts one more event of `kind` at `at` in a contact's activity
/// summary, as the summary's query would have counted it at `now`.
fn add_to_activity(activity: &mut Vec<ActivityCount>, kind: &str, at: i64, now: i64) {
    if at > now {
        return;
    }
    let index = match activity.binary_search_by(|a| a.kind.as_str().cmp(kind)) {
        Ok(index) => index,
        Err(index) => {
            activity.insert(
                index,
                ActivityCount {
                    kind: kind.to_owned(),
                    total: 0,
                    last_24_hours: 0,
                    last_30_days: 0,
                    last_at: None,
                },
            );
            index
        }
    };
    let count = &mut activity[index];
    count.total += 1;
    if at > now - DAY_MS {
        count.last_24_hours += 1;
    }
    if at > now - 30 * DAY_MS {
        count.last_30_days += 1;
    }
    count.last_at = Some(count.last_at.map_or(at, |last| last.max(at)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activity_counts_an_event_like_the_summary_query() {
        let now = 100 * DAY_MS;
        let mut activity = Vec::new();
        add_to_activity(&mut activity, "visit", now - 2 * DAY_MS, now);
        add_to_activity(&mut activity, "download", now - 1000, now);
        add_to_activity(&mut activity, "visit", now - 40 * DAY_MS, now);
        // Not yet happened at `now`: the summary leaves it out.
        add_to_activity(&mut activity, "visit", now + 1000, now);
        let kinds: Vec<&str> = activity.iter().map(|a| a.kind.as_str()).collect();
        assert_eq!(kinds, ["download", "visit"]);
        assert_eq!(
            (
                activity[1].total,
                activity[1].last_24_hours,
                activity[1].last_30_days
            ),
            (2, 0, 1)
        );
        assert_eq!(activity[1].last_at, Some(now - 2 * DAY_MS));
        assert_eq!((activity[0].total, activity[0].last_24_hours), (1, 1));
    }
}
