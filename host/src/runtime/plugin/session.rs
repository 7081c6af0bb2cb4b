//! A replay's scorer calls: many `on-event` calls, one after another, each
//! at its own event's time, on one instance instead of one instance each.
//!
//! A batch (`on-event-batch`) cannot carry them: it has one `host.now` for
//! all its items, and a replay's events each have their own. So a session
//! keeps one store and instance and moves `host.now` and the WASI clocks
//! before each call, with a fresh instruction budget and wall-clock
//! deadline per call, as a fresh instance would have. Reusing an instance
//! is what live batches do already; a replay keeps a session for one
//! contact's events, so nothing a guest keeps in memory reaches another
//! contact. To keep answers exactly those of a fresh instance, a call that
//! fails on a reused instance is run again on a fresh one, whose answer
//! counts, and instances are renewed every [`RENEW_AFTER`] calls so a
//! guest's heap does not grow without end.

use std::sync::Arc;
use std::time::Instant;

use wasmtime::Store;

use super::{CallResult, Plugin, ScorerInstance, WorldPre, check_reasons, convert, sandbox, wit};
use crate::model;
use crate::runtime::World;
use crate::runtime::sandbox::{Binding, CallState};

/// Calls on one instance before a fresh one.
const RENEW_AFTER: u32 = 1_000;

/// Sequential `on-event` calls of one scorer version for one binding.
pub struct ScorerSession<'a> {
    plugin: &'a Plugin,
    binding: Arc<Binding>,
    instance: Option<(Store<CallState>, ScorerInstance)>,
    calls: u32,
}

impl Plugin {
    /// A session of `on-event` calls for `binding` (see `session.rs`).
    pub fn scorer_session(&self, binding: &Arc<Binding>) -> ScorerSession<'_> {
        ScorerSession {
            plugin: self,
            binding: binding.clone(),
            instance: None,
            calls: 0,
        }
    }
}

impl ScorerSession<'_> {
    /// What [`Plugin::on_event`] answers for these inputs at `now`.
    pub async fn on_event(
        &mut self,
        now: i64,
        contact: &model::Contact,
        event: &model::Event,
        activity: &[model::ActivityCount],
    ) -> CallResult<model::ScoreChange> {
        let parts = self.plugin.contact_parts();
        let contact = convert::contact(contact, parts);
        let event = wit::Event::from(event);
        let activity = convert::activity(parts.activity(activity));
        let reused = self.instance.is_some();
        let answer = self.call(now, &contact, &event, &activity).await;
        match answer {
            // A fresh instance decides, as it would have live.
            Err(_) | Ok(Err(_)) if reused => {
                self.instance = None;
                self.call(now, &contact, &event, &activity).await
            }
            answer => answer,
        }
    }

    async fn call(
        &mut self,
        now: i64,
        contact: &wit::Contact,
        event: &wit::Event,
        activity: &[wit::ActivityCount],
    ) -> CallResult<model::ScoreChange> {
        let plugin = self.plugin;
        let WorldPre::Scorer(pre) = &plugin.pre else {
            return Err(plugin.not_a(World::Scorer));
        };
        let limits = &self.binding.limits;
        let runtime_limits = plugin.runtime.limits();
        let started = Instant::now();
        if self.calls >= RENEW_AFTER {
            self.instance = None;
        }
        let (mut store, reused) = match self.instance.take() {
            Some((store, world)) => (store, Some(world)),
            None => {
                self.calls = 0;
                let state = CallState::new(
                    plugin.id.clone(),
                    self.binding.clone(),
                    &plugin.manifest.http_hosts,
                    limits,
                    now,
                );
                let store = sandbox::store(plugin.runtime.engine(), state, limits, runtime_limits);
                (store, None)
            }
        };
        store.data_mut().next_call(now);
        sandbox::restart_deadline(&mut store, limits, runtime_limits);
        let outcome = tokio::time::timeout(limits.wall_time, async {
            let world = match reused {
                Some(world) => world,
                None => pre.instantiate(&mut store).await?,
            };
            sandbox::start_call_budget(&mut store, limits, runtime_limits);
            let answer = world.on_event(&mut store, contact, event, activity).await?;
            Ok((world, answer))
        })
        .await;
        let (world, answer) = plugin.settle("on-event", started, 1, limits, &store, outcome)?;
        // Only an instance that answered is called again.
        self.instance = Some((store, world));
        self.calls += 1;
        plugin
            .inner(answer, limits, |change| check_reasons(change, limits))
            .map(|r| r.map(Into::into))
    }
}
