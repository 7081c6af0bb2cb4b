//! A loaded plugin version and its calls.
//!
//! Every call — or every batch — gets a fresh store and instance from the
//! pre-instantiated component, runs under the binding's limits, and
//! returns two tiers: `Err(RuntimeError)` when the runtime stopped it
//! (trap, limit, bad output), `Ok(Err(PluginError))` when the plugin
//! itself declined. A batch uses one instance for all its items and drops
//! it afterwards, so nothing a guest keeps in memory reaches the next
//! batch.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tracing::Instrument;
use wasmtime::component::{Component, ComponentExportIndex};
use wasmtime::{Store, Trap};

use super::Runtime;
use super::bindings::{channel, latest, segment_rule, since_v0_1_0, types as wit};
use super::convert;
use super::error::{LoadError, RuntimeError, RuntimeErrorKind};
use super::limits::{Limits, RuntimeLimits};
use super::manifest::{ContactParts, Manifest, World};
use super::sandbox::{self, Binding, CallState};
use super::signature::SignedBy;
use super::views;
pub use super::views::ScorerInput;
use crate::model;

mod session;
pub use session::ScorerSession;

/// The outer tier is the runtime's verdict, the inner one the plugin's.
pub type CallResult<T, E = model::PluginError> = Result<Result<T, E>, RuntimeError>;

/// The exports of segment rules and channels are the same in every WIT
/// version, so one pre-instance type serves them all (the linker offers
/// each version's `host` and `mail` imports); scorers gained
/// `on-event-batch` in 0.2.0.
///
/// Batch exports are called through their place in the component, found
/// once at load, with [`views`] of the host's records rather than through
/// `bindgen!`'s owned types, so nothing is cloned on the way in.
enum WorldPre {
    SegmentRule(
        segment_rule::SegmentRulePre<CallState>,
        ComponentExportIndex,
    ),
    Scorer(ScorerPre),
    Channel(channel::ChannelPre<CallState>),
}

enum ScorerPre {
    /// `nachfass:plugin@0.2.0` and later: a batch is one call of
    /// `on-event-batch`.
    Batch(latest::scorer::ScorerPre<CallState>, ComponentExportIndex),
    /// `nachfass:plugin@0.1.0`: a batch is one `on-event` per item, on one
    /// instance.
    PerItem(
        since_v0_1_0::scorer::ScorerPre<CallState>,
        ComponentExportIndex,
    ),
}

enum ScorerInstance {
    Batch(latest::scorer::Scorer),
    PerItem(since_v0_1_0::scorer::Scorer),
}

type Answer<T> = Result<T, wit::PluginError>;

/// Where `name` sits among the component's exports.
fn export_index(
    component: &Component,
    name: &str,
) -> Result<ComponentExportIndex, wasmtime::Error> {
    component
        .get_export_index(None, name)
        .ok_or_else(|| wasmtime::format_err!("the component exports no function `{name}`"))
}

impl ScorerPre {
    async fn instantiate(&self, store: &mut Store<CallState>) -> wasmtime::Result<ScorerInstance> {
        Ok(match self {
            ScorerPre::Batch(pre, _) => ScorerInstance::Batch(pre.instantiate_async(store).await?),
            ScorerPre::PerItem(pre, _) => {
                ScorerInstance::PerItem(pre.instantiate_async(store).await?)
            }
        })
    }

    /// The whole batch on one fresh instance: one call since 0.2.0, one
    /// call per item before.
    async fn on_event_batch(
        &self,
        store: &mut Store<CallState>,
        limits: &Limits,
        runtime: &RuntimeLimits,
        items: &[ScorerInput<'_>],
        parts: ContactParts,
    ) -> wasmtime::Result<Answer<Vec<Answer<wit::ScoreChange>>>> {
        let instance_pre = match self {
            ScorerPre::Batch(pre, _) => pre.instance_pre(),
            ScorerPre::PerItem(pre, _) => pre.instance_pre(),
        };
        let instance = instance_pre.instantiate_async(&mut *store).await?;
        sandbox::start_call_budget(store, limits, runtime);
        match self {
            ScorerPre::Batch(_, index) => {
                let items: Vec<views::ScorerItem> = items
                    .iter()
                    .map(|&input| views::ScorerItem { input, parts })
                    .collect();
                let batch = instance
                    .get_typed_func::<(&[views::ScorerItem],), (Answer<Vec<Answer<wit::ScoreChange>>>,)>(
                        &mut *store,
                        index,
                    )?;
                Ok(batch.call_async(&mut *store, (&items,)).await?.0)
            }
            ScorerPre::PerItem(_, index) => {
                let on_event = instance.get_typed_func::<(
                    &views::ContactView,
                    &views::EventView,
                    &[views::ActivityView],
                ), (Answer<wit::ScoreChange>,)>(
                    &mut *store, index
                )?;
                let mut answers = Vec::with_capacity(items.len());
                for item in items {
                    let contact = views::contact(item.contact, parts);
                    let event = views::event(item.event);
                    let activity = views::activity(parts.activity(item.activity));
                    answers.push(
                        on_event
                            .call_async(&mut *store, (&contact, &event, &activity))
                            .await?
                            .0,
                    );
                }
                Ok(Ok(answers))
            }
        }
    }
}

impl ScorerInstance {
    async fn on_event(
        &self,
        store: &mut Store<CallState>,
        contact: &wit::Contact,
        event: &wit::Event,
        activity: &[wit::ActivityCount],
    ) -> wasmtime::Result<Answer<wit::ScoreChange>> {
        match self {
            ScorerInstance::Batch(world) => {
                world.call_on_event(store, contact, event, activity).await
            }
            ScorerInstance::PerItem(world) => {
                world.call_on_event(store, contact, event, activity).await
            }
        }
    }

    async fn on_profile(
        &self,
        store: &mut Store<CallState>,
        contact: &wit::Contact,
    ) -> wasmtime::Result<Answer<wit::ScoreChange>> {
        match self {
            ScorerInstance::Batch(world) => world.call_on_profile(store, contact).await,
            ScorerInstance::PerItem(world) => world.call_on_profile(store, contact).await,
        }
    }
}

/// Call counters of one plugin version. A batch counts as one call per
/// item, so means per call compare across batched and single calls.
#[derive(Debug, Default)]
pub struct CallStats {
    pub calls: AtomicU64,
    pub plugin_errors: AtomicU64,
    pub runtime_errors: AtomicU64,
    pub busy_micros: AtomicU64,
    /// Instructions (wasmtime fuel) used by all calls.
    pub fuel_used: AtomicU64,
    /// Instructions used by the most recent call (for a batch, its mean
    /// per item).
    pub last_fuel: AtomicU64,
}

/// What one call cost: wall time and instructions (wasmtime fuel).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallUsage {
    pub micros: u64,
    pub fuel: u64,
}

std::thread_local! {
    static LAST_USAGE: std::cell::Cell<Option<CallUsage>> = const { std::cell::Cell::new(None) };
}

/// The cost of the call that finished last on this thread, taken (a second
/// read gives `None`). A call's future sets it in the same poll that
/// returns its answer, so a caller that reads it before its own next
/// `.await` reads its own call's cost, whatever else runs concurrently
/// (shadow mode compares the live call's cost with the candidate's this
/// way, without touching the live call).
pub fn take_last_usage() -> Option<CallUsage> {
    LAST_USAGE.with(std::cell::Cell::take)
}

/// One compiled, type-checked plugin version, ready to call.
pub struct Plugin {
    manifest: Manifest,
    /// What the plugin is shown of each contact (its manifest's `reads`).
    parts: ContactParts,
    imports: Vec<String>,
    exports: Vec<String>,
    api: String,
    id: Arc<str>,
    hash: String,
    from_cache: bool,
    pre: WorldPre,
    runtime: Runtime,
    stats: CallStats,
    signed_by: Option<SignedBy>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("id", &self.id)
            .field("hash", &self.hash)
            .finish()
    }
}

impl Plugin {
    pub(super) fn new(
        runtime: Runtime,
        manifest: Manifest,
        hash: String,
        component: Component,
        from_cache: bool,
    ) -> Result<Plugin, LoadError> {
        let world = manifest.world;
        let instance_pre = runtime
            .linker(world)
            .instantiate_pre(&component)
            .map_err(|e| LoadError::ForbiddenImport {
                world,
                detail: format!("{e:#}"),
            })?;
        let wrong_world = |e: wasmtime::Error| LoadError::WrongWorld {
            claimed: world,
            detail: format!("{e:#}"),
        };
        let engine = runtime.engine();
        let ty = component.component_type();
        let imports: Vec<String> = ty
            .imports(engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        let exports = ty
            .exports(engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        let api = api_of(&imports).unwrap_or_else(|| manifest.api.clone());
        let pre = match world {
            World::SegmentRule => WorldPre::SegmentRule(
                segment_rule::SegmentRulePre::new(instance_pre).map_err(wrong_world)?,
                export_index(&component, "matches-batch").map_err(wrong_world)?,
            ),
            World::Scorer => WorldPre::Scorer(
                if api == super::manifest::API_VERSION_0_1 {
                    since_v0_1_0::scorer::ScorerPre::new(instance_pre).and_then(|pre| {
                        Ok(ScorerPre::PerItem(
                            pre,
                            export_index(&component, "on-event")?,
                        ))
                    })
                } else {
                    latest::scorer::ScorerPre::new(instance_pre).and_then(|pre| {
                        Ok(ScorerPre::Batch(
                            pre,
                            export_index(&component, "on-event-batch")?,
                        ))
                    })
                }
                .map_err(wrong_world)?,
            ),
            World::Channel => {
                WorldPre::Channel(channel::ChannelPre::new(instance_pre).map_err(wrong_world)?)
            }
        };
        Ok(Plugin {
            imports,
            exports,
            api,
            id: manifest.id().into(),
            parts: manifest.contact_parts(),
            manifest,
            hash,
            from_cache,
            pre,
            runtime,
            stats: CallStats::default(),
            signed_by: None,
        })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The parts of a contact the plugin is shown, from its manifest's
    /// `reads`; a caller need not load the others for it.
    pub fn contact_parts(&self) -> ContactParts {
        self.parts
    }

    /// Names of the interfaces and functions the component imports.
    pub fn imports(&self) -> &[String] {
        &self.imports
    }

    /// Names of what the component exports.
    pub fn exports(&self) -> &[String] {
        &self.exports
    }

    /// The version of the WIT package `nachfass:plugin` the component was
    /// built against, from what it imports: `0.1.0` or `0.2.0`.
    pub fn api(&self) -> &str {
        &self.api
    }

    /// `name@version`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// SHA-256 of the component bytes.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// Who signed this version, checked when it was loaded; `None` if unsigned.
    pub fn signer(&self) -> Option<&SignedBy> {
        self.signed_by.as_ref()
    }

    pub(super) fn signed_by(mut self, signer: Option<SignedBy>) -> Plugin {
        self.signed_by = signer;
        self
    }

    /// Whether the machine code came from the on-disk cache.
    pub fn from_cache(&self) -> bool {
        self.from_cache
    }

    pub fn stats(&self) -> &CallStats {
        &self.stats
    }

    /// Creates a fresh store and instance and drops them without calling
    /// anything: proves the component instantiates under `binding`'s limits
    /// (a start function that traps fails here), and is what every call
    /// pays before its first instruction.
    pub async fn probe(&self, binding: &Arc<Binding>, now: i64) -> Result<(), RuntimeError> {
        let limits = &binding.limits;
        match &self.pre {
            WorldPre::SegmentRule(pre, _) => {
                self.run("instantiate", binding, limits, now, 1, async |store| {
                    pre.instantiate_async(store).await.map(drop)
                })
                .await
            }
            WorldPre::Scorer(pre) => {
                self.run("instantiate", binding, limits, now, 1, async |store| {
                    pre.instantiate(store).await.map(drop)
                })
                .await
            }
            WorldPre::Channel(pre) => {
                self.run("instantiate", binding, limits, now, 1, async |store| {
                    pre.instantiate_async(store).await.map(drop)
                })
                .await
            }
        }
    }

    /// Does `contact` belong to the segment?
    pub async fn matches(
        &self,
        binding: &Arc<Binding>,
        now: i64,
        contact: &model::Contact,
        activity: &[model::ActivityCount],
    ) -> CallResult<bool> {
        let WorldPre::SegmentRule(pre, _) = &self.pre else {
            return Err(self.not_a(World::SegmentRule));
        };
        let contact = convert::contact(contact, self.parts);
        let activity = convert::activity(self.parts.activity(activity));
        let limits = &binding.limits;
        let answer = self
            .run("matches", binding, limits, now, 1, async |store| {
                let world = pre.instantiate_async(&mut *store).await?;
                sandbox::start_call_budget(store, limits, self.runtime.limits());
                world.call_matches(&mut *store, &contact, &activity).await
            })
            .await?;
        self.inner(answer, limits, |_| Ok(()))
    }

    /// One answer per contact, in order. Limits scale with the batch size.
    pub async fn matches_batch(
        &self,
        binding: &Arc<Binding>,
        now: i64,
        items: &[(model::Contact, Vec<model::ActivityCount>)],
    ) -> CallResult<Vec<bool>> {
        let WorldPre::SegmentRule(pre, index) = &self.pre else {
            return Err(self.not_a(World::SegmentRule));
        };
        let inputs: Vec<views::RuleInput> = items
            .iter()
            .map(|(contact, activity)| views::RuleInput {
                contact,
                activity,
                parts: self.parts,
            })
            .collect();
        let limits = binding.limits.scaled(items.len());
        let answer = self
            .run(
                "matches-batch",
                binding,
                &limits,
                now,
                items.len(),
                async |store| {
                    let instance = pre.instance_pre().instantiate_async(&mut *store).await?;
                    sandbox::start_call_budget(store, &limits, self.runtime.limits());
                    let batch = instance
                        .get_typed_func::<(&[views::RuleInput],), (Answer<Vec<bool>>,)>(
                            &mut *store,
                            index,
                        )?;
                    Ok(batch.call_async(&mut *store, (&inputs,)).await?.0)
                },
            )
            .await?;
        self.inner_batch(answer, &limits, items.len(), |answers| {
            if answers.len() == items.len() {
                Ok(())
            } else {
                Err(RuntimeErrorKind::InvalidOutput {
                    detail: format!("{} answers for {} contacts", answers.len(), items.len()),
                })
            }
        })
    }

    /// Implicit scoring of one touchpoint.
    pub async fn on_event(
        &self,
        binding: &Arc<Binding>,
        now: i64,
        contact: &model::Contact,
        event: &model::Event,
        activity: &[model::ActivityCount],
    ) -> CallResult<model::ScoreChange> {
        let WorldPre::Scorer(pre) = &self.pre else {
            return Err(self.not_a(World::Scorer));
        };
        let contact = convert::contact(contact, self.parts);
        let event = wit::Event::from(event);
        let activity = convert::activity(self.parts.activity(activity));
        let limits = &binding.limits;
        let answer = self
            .run("on-event", binding, limits, now, 1, async |store| {
                let world = pre.instantiate(&mut *store).await?;
                sandbox::start_call_budget(store, limits, self.runtime.limits());
                world
                    .on_event(&mut *store, &contact, &event, &activity)
                    .await
            })
            .await?;
        self.inner(answer, limits, |change| check_reasons(change, limits))
            .map(|r| r.map(Into::into))
    }

    /// Implicit scoring of many touchpoints on one instance: one answer per
    /// item, in order, each what [`Plugin::on_event`] would answer for it.
    /// A 0.2.0 scorer gets one `on-event-batch` call, a 0.1.0 scorer one
    /// `on-event` per item on that same instance. Fuel and wall time scale
    /// with the batch; a trap or a limit anywhere fails the whole batch,
    /// and the instance is dropped after it either way. A plugin that
    /// declines the whole batch declines each item with that error.
    pub async fn on_event_batch(
        &self,
        binding: &Arc<Binding>,
        now: i64,
        items: &[ScorerInput<'_>],
    ) -> Result<Vec<Result<model::ScoreChange, model::PluginError>>, RuntimeError> {
        let WorldPre::Scorer(pre) = &self.pre else {
            return Err(self.not_a(World::Scorer));
        };
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let limits = binding.limits.scaled(items.len());
        let answer = self
            .run(
                "on-event-batch",
                binding,
                &limits,
                now,
                items.len(),
                async |store| {
                    pre.on_event_batch(store, &limits, self.runtime.limits(), items, self.parts)
                        .await
                },
            )
            .await?;
        let answers = match answer {
            Ok(answers) => answers,
            // The plugin declined the whole batch: every item shares the
            // reason.
            Err(e) => vec![Err(e); items.len()],
        };
        let checked = if answers.len() == items.len() {
            let size: usize = answers
                .iter()
                .map(|a| match a {
                    Ok(change) => change.reasons.iter().map(String::len).sum(),
                    Err(e) => e.code.len() + e.message.len(),
                })
                .sum();
            within(size, &limits, "score reasons and errors")
        } else {
            Err(RuntimeErrorKind::InvalidOutput {
                detail: format!("{} answers for {} events", answers.len(), items.len()),
            })
        };
        if let Err(kind) = checked {
            self.stats.runtime_errors.fetch_add(1, Ordering::Relaxed);
            self.record_outcome("trap", 1);
            return Err(self.error(kind));
        }
        let declined = answers.iter().filter(|a| a.is_err()).count();
        self.count_items(items.len() - declined, declined);
        Ok(answers
            .into_iter()
            .map(|a| a.map(Into::into).map_err(Into::into))
            .collect())
    }

    /// Explicit scoring of a profile.
    pub async fn on_profile(
        &self,
        binding: &Arc<Binding>,
        now: i64,
        contact: &model::Contact,
    ) -> CallResult<model::ScoreChange> {
        let WorldPre::Scorer(pre) = &self.pre else {
            return Err(self.not_a(World::Scorer));
        };
        let contact = convert::contact(contact, self.parts);
        let limits = &binding.limits;
        let answer = self
            .run("on-profile", binding, limits, now, 1, async |store| {
                let world = pre.instantiate(&mut *store).await?;
                sandbox::start_call_budget(store, limits, self.runtime.limits());
                world.on_profile(&mut *store, &contact).await
            })
            .await?;
        self.inner(answer, limits, |change| check_reasons(change, limits))
            .map(|r| r.map(Into::into))
    }

    /// What kind of channel this connector is.
    pub async fn describe(
        &self,
        binding: &Arc<Binding>,
        now: i64,
    ) -> Result<model::ChannelInfo, RuntimeError> {
        let WorldPre::Channel(pre) = &self.pre else {
            return Err(self.not_a(World::Channel));
        };
        let limits = &binding.limits;
        let info = self
            .run("describe", binding, limits, now, 1, async |store| {
                let world = pre.instantiate_async(&mut *store).await?;
                sandbox::start_call_budget(store, limits, self.runtime.limits());
                world.call_describe(&mut *store).await
            })
            .await?;
        if info.provider.len() > limits.max_output_bytes {
            return Err(self.error(RuntimeErrorKind::OutputTooLarge {
                detail: "provider name".into(),
            }));
        }
        Ok(info.into())
    }

    /// Delivers one message.
    pub async fn deliver(
        &self,
        binding: &Arc<Binding>,
        now: i64,
        message: &model::Message,
    ) -> CallResult<model::Delivery, model::SendError> {
        let WorldPre::Channel(pre) = &self.pre else {
            return Err(self.not_a(World::Channel));
        };
        let message = wit::Message::from(message);
        let limits = &binding.limits;
        let answer = self
            .run("deliver", binding, limits, now, 1, async |store| {
                let world = pre.instantiate_async(&mut *store).await?;
                sandbox::start_call_budget(store, limits, self.runtime.limits());
                world.call_deliver(&mut *store, &message).await
            })
            .await?;
        let size = match &answer {
            Ok(delivery) => delivery.provider_id.as_ref().map_or(0, String::len),
            Err(wit::SendError::Transient(why) | wit::SendError::Permanent(why)) => why.len(),
            Err(wit::SendError::RateLimited(_)) => 0,
        };
        if size > limits.max_output_bytes {
            return Err(self.error(RuntimeErrorKind::OutputTooLarge {
                detail: format!(
                    "{size} bytes in the send result, limit {}",
                    limits.max_output_bytes
                ),
            }));
        }
        self.count(answer.is_err());
        Ok(answer.map(Into::into).map_err(Into::into))
    }

    /// Parses a provider callback into delivery outcomes.
    pub async fn parse_callback(
        &self,
        binding: &Arc<Binding>,
        now: i64,
        callback: &model::Callback,
    ) -> CallResult<Vec<model::DeliveryEvent>> {
        let WorldPre::Channel(pre) = &self.pre else {
            return Err(self.not_a(World::Channel));
        };
        let callback = wit::Callback::from(callback);
        let limits = &binding.limits;
        let answer = self
            .run("parse-callback", binding, limits, now, 1, async |store| {
                let world = pre.instantiate_async(&mut *store).await?;
                sandbox::start_call_budget(store, limits, self.runtime.limits());
                world.call_parse_callback(&mut *store, &callback).await
            })
            .await?;
        self.inner(answer, limits, |events| {
            let size: usize = events
                .iter()
                .map(|e| 32 + e.message_ref.len() + e.detail.as_ref().map_or(0, String::len))
                .sum();
            within(size, limits, "delivery events")
        })
        .map(|r| r.map(|events| events.into_iter().map(Into::into).collect()))
    }

    /// Runs `call` in a fresh store under `limits` and turns traps, limit
    /// breaches and timeouts into a [`RuntimeError`] naming the plugin.
    /// `items` is how many calls it stands for (a batch's size): the
    /// statistics count calls, time and instructions per item.
    async fn run<T>(
        &self,
        function: &'static str,
        binding: &Arc<Binding>,
        limits: &Limits,
        now: i64,
        items: usize,
        call: impl AsyncFnOnce(&mut Store<CallState>) -> wasmtime::Result<T>,
    ) -> Result<T, RuntimeError> {
        let span = tracing::debug_span!("plugin_call", plugin = %self.id, binding = %binding.name, function, items);
        async {
            let started = Instant::now();
            let state = CallState::new(
                self.id.clone(),
                binding.clone(),
                &self.manifest.http_hosts,
                limits,
                now,
            );
            let runtime_limits = self.runtime.limits();
            let mut store = sandbox::store(self.runtime.engine(), state, limits, runtime_limits);
            let outcome = tokio::time::timeout(limits.wall_time, call(&mut store)).await;
            self.settle(function, started, items, limits, &store, outcome)
        }
        .instrument(span)
        .await
    }

    /// Counts a finished call (or batch of `items`) and turns its outcome
    /// into the runtime's verdict.
    fn settle<T>(
        &self,
        function: &'static str,
        started: Instant,
        items: usize,
        limits: &Limits,
        store: &Store<CallState>,
        outcome: Result<wasmtime::Result<T>, tokio::time::error::Elapsed>,
    ) -> Result<T, RuntimeError> {
        let runtime_limits = self.runtime.limits();
        let elapsed = started.elapsed();
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let count = u64::try_from(items.max(1)).unwrap_or(u64::MAX);
        self.stats.busy_micros.fetch_add(micros, Ordering::Relaxed);
        self.stats.calls.fetch_add(count, Ordering::Relaxed);
        // The histogram is of time per item: a batch adds its mean once
        // per item, so percentiles compare with single calls.
        metrics::histogram!(
            "nachfass_plugin_call_duration_seconds",
            "plugin" => self.manifest.name.clone(),
            "version" => self.manifest.version.clone(),
            "function" => function
        )
        .record_many(elapsed.as_secs_f64() / count as f64, items.max(1));
        let mut usage = CallUsage { micros, fuel: 0 };
        if runtime_limits.consume_fuel {
            let used = limits.fuel.saturating_sub(store.get_fuel().unwrap_or(0));
            usage.fuel = used;
            self.stats.fuel_used.fetch_add(used, Ordering::Relaxed);
            self.stats.last_fuel.store(used / count, Ordering::Relaxed);
            metrics::counter!(
                "nachfass_plugin_fuel_total",
                "plugin" => self.manifest.name.clone(),
                "version" => self.manifest.version.clone()
            )
            .increment(used);
        }
        LAST_USAGE.with(|last| last.set(Some(usage)));
        let result = match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(self.error(classify(e, store, limits))),
            Err(_elapsed) => Err(self.error(RuntimeErrorKind::WallTime {
                limit_ms: limits.wall_time.as_millis(),
            })),
        };
        if let Err(e) = &result {
            self.stats.runtime_errors.fetch_add(1, Ordering::Relaxed);
            self.record_outcome("trap", 1);
            tracing::warn!(error = %e, "plugin call failed");
        }
        result
    }

    /// Checks the plugin's own answer against the output limits.
    fn inner<T>(
        &self,
        answer: Result<T, wit::PluginError>,
        limits: &Limits,
        check: impl FnOnce(&T) -> Result<(), RuntimeErrorKind>,
    ) -> CallResult<T> {
        self.inner_batch(answer, limits, 1, check)
    }

    /// [`Plugin::inner`] for an answer that stands for `items` calls.
    fn inner_batch<T>(
        &self,
        answer: Result<T, wit::PluginError>,
        limits: &Limits,
        items: usize,
        check: impl FnOnce(&T) -> Result<(), RuntimeErrorKind>,
    ) -> CallResult<T> {
        let checked = match &answer {
            Ok(value) => check(value),
            Err(e) => within(e.code.len() + e.message.len(), limits, "plugin error"),
        };
        if let Err(kind) = checked {
            self.stats.runtime_errors.fetch_add(1, Ordering::Relaxed);
            self.record_outcome("trap", 1);
            return Err(self.error(kind));
        }
        let items = items.max(1);
        if answer.is_err() {
            self.count_items(0, items);
        } else {
            self.count_items(items, 0);
        }
        Ok(answer.map_err(Into::into))
    }

    fn count(&self, plugin_error: bool) {
        if plugin_error {
            self.count_items(0, 1);
        } else {
            self.count_items(1, 0);
        }
    }

    fn count_items(&self, ok: usize, declined: usize) {
        if declined > 0 {
            let declined = u64::try_from(declined).unwrap_or(u64::MAX);
            self.stats
                .plugin_errors
                .fetch_add(declined, Ordering::Relaxed);
            self.record_outcome("plugin_error", declined);
        }
        if ok > 0 {
            self.record_outcome("ok", u64::try_from(ok).unwrap_or(u64::MAX));
        }
    }

    /// Counts finished calls for `/metrics` (the facade: the recorder is
    /// installed by whoever serves the figures).
    fn record_outcome(&self, outcome: &'static str, calls: u64) {
        metrics::counter!(
            "nachfass_plugin_calls_total",
            "plugin" => self.manifest.name.clone(),
            "version" => self.manifest.version.clone(),
            "outcome" => outcome
        )
        .increment(calls);
    }

    fn error(&self, kind: RuntimeErrorKind) -> RuntimeError {
        RuntimeError {
            plugin: self.id.to_string(),
            kind,
        }
    }

    fn not_a(&self, wanted: World) -> RuntimeError {
        self.error(RuntimeErrorKind::Host {
            detail: format!("is a {}, not a {wanted}", self.manifest.world),
        })
    }
}

/// The `nachfass:plugin` version among a component's imports
/// (`nachfass:plugin/types@0.1.0` → `0.1.0`); `None` if it imports none.
fn api_of(imports: &[String]) -> Option<String> {
    imports
        .iter()
        .find_map(|name| name.strip_prefix("nachfass:plugin/"))
        .and_then(|rest| rest.split_once('@'))
        .map(|(_, version)| version.to_owned())
}

fn within(size: usize, limits: &Limits, what: &str) -> Result<(), RuntimeErrorKind> {
    if size > limits.max_output_bytes {
        return Err(RuntimeErrorKind::OutputTooLarge {
            detail: format!(
                "{size} bytes of {what}, limit {} bytes",
                limits.max_output_bytes
            ),
        });
    }
    Ok(())
}

fn check_reasons(change: &wit::ScoreChange, limits: &Limits) -> Result<(), RuntimeErrorKind> {
    within(
        change.reasons.iter().map(String::len).sum(),
        limits,
        "score reasons",
    )
}

/// Names the limit or fault behind a failed call.
fn classify(error: wasmtime::Error, store: &Store<CallState>, limits: &Limits) -> RuntimeErrorKind {
    let state = store.data();
    if state.limiter.memory_exceeded {
        return RuntimeErrorKind::Memory {
            limit_bytes: limits.memory_bytes,
        };
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => RuntimeErrorKind::Fuel { limit: limits.fuel },
        // The epoch deadline is the wall-clock backstop.
        Some(Trap::Interrupt) => RuntimeErrorKind::WallTime {
            limit_ms: limits.wall_time.as_millis(),
        },
        Some(Trap::StackOverflow) => RuntimeErrorKind::StackOverflow,
        // Rust and C guests keep part of their stack in linear memory below
        // the data; overflowing it lands out of bounds.
        Some(Trap::MemoryOutOfBounds) => RuntimeErrorKind::Trapped {
            message: "out-of-bounds memory access (a bug in the plugin, or its in-memory stack overflowed)".into(),
        },
        Some(Trap::UnreachableCodeReached) if state.stderr_text().contains("panicked") => {
            RuntimeErrorKind::Panicked {
                message: panic_message(&state.stderr_text()),
            }
        }
        Some(trap) => RuntimeErrorKind::Trapped {
            message: trap.to_string(),
        },
        None if error
            .chain()
            .any(|e| e.is::<wasmtime::PoolConcurrencyLimitError>()) =>
        {
            RuntimeErrorKind::Exhausted {
                detail: format!(
                    "{error:#}: every slot of the plugin pool is in use by other calls; retry the call later"
                ),
            }
        }
        None => RuntimeErrorKind::Trapped {
            message: format!("{error:#}"),
        },
    }
}

/// `thread '<unnamed>' panicked at src/lib.rs:7:9:\nboom\nnote: …` → `boom (src/lib.rs:7:9)`.
fn panic_message(stderr: &str) -> String {
    let mut lines = stderr.lines().filter(|l| !l.starts_with("note:"));
    let header = lines.next().unwrap_or_default();
    let location = header
        .split_once(" panicked at ")
        .map(|(_, at)| at.trim_end_matches(':').to_owned());
    let text: Vec<&str> = lines.collect();
    match (text.is_empty(), location) {
        (false, Some(at)) => format!("{} ({at})", text.join(" ")),
        (false, None) => text.join(" "),
        (true, _) => header.to_owned(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::panic_message;

    #[test]
    fn panic_messages_are_tidied() {
        let stderr = "thread '<unnamed>' panicked at src/lib.rs:7:9:\nscorer gave up\nnote: run with `RUST_BACKTRACE=1`";
        assert_eq!(panic_message(stderr), "scorer gave up (src/lib.rs:7:9)");
    }
}
