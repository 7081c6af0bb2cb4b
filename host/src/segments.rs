//! Live segments: after each touchpoint only the affected contact is
//! re-evaluated against every segment binding; changes are written as
//! `segment.entered` / `segment.left` events.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracing::Instrument;

use crate::model::{ActivityCount, Contact};
use crate::pipeline::Pipeline;
use crate::runtime::{Binding, Plugin, World};
use crate::scoring::runtime_binding;
use crate::store::{BindingDef, BindingKind, ClaimedJob, PageChanges, StoreError, TaskStep};

pub(crate) async fn evaluate_contact(
    pipeline: &Pipeline,
    contact_id: &str,
    activity: &[ActivityCount],
    now: i64,
) -> Result<(), StoreError> {
    let bindings = pipeline.store.bindings(BindingKind::Segment).await?;
    if bindings.is_empty() {
        return Ok(());
    }
    let mut contact = pipeline.store.contact(contact_id).await?;
    contact.segments = pipeline.store.memberships(contact_id).await?;
    for def in bindings {
        // Paused by the circuit breaker: memberships stay as they are.
        if def.paused.is_some() {
            continue;
        }
        let Some(plugin) = pipeline
            .registry
            .resolve(&def.plugin, def.version.as_deref())
        else {
            tracing::warn!(segment = %def.name, plugin = %def.plugin, "segment plugin not installed; skipped");
            continue;
        };
        let binding = runtime_binding(&def, World::SegmentRule, &plugin);
        let answer = plugin.matches(&binding, now, &contact, activity).await;
        crate::shadow::observe(
            pipeline,
            &binding,
            &plugin,
            now,
            crate::shadow::Call::Matches {
                contact: &contact,
                activity,
                answer: &answer,
            },
        )
        .await;
        crate::breaker::observe(pipeline, &def.name, &plugin, !matches!(answer, Ok(Ok(_)))).await;
        let member = match answer {
            Ok(Ok(member)) => member,
            // Keep the membership as it is when the rule cannot decide.
            Ok(Err(declined)) => {
                tracing::warn!(segment = %def.name, error = %declined, "segment rule declined");
                continue;
            }
            Err(failed) => {
                tracing::warn!(segment = %def.name, error = %failed, "segment rule failed");
                continue;
            }
        };
        let was = contact.segments.contains(&def.name);
        if was != member
            && pipeline
                .store
                .set_membership(&def.name, contact_id, member, now)
                .await?
        {
            let kind = if member {
                "segment.entered"
            } else {
                "segment.left"
            };
            pipeline
                .record(contact_id, kind, &[("segment", &def.name)], now)
                .await?;
        }
    }
    Ok(())
}

/// Progress of a segment rebuild, visible through the API.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct RebuildProgress {
    pub total: i64,
    pub evaluated: i64,
    pub entered: i64,
    pub left: i64,
    pub done: bool,
    pub error: Option<String>,
}

/// Contacts per page of a rebuild: one read (three queries), one write
/// transaction with the page's changes and the task's cursor. Large pages
/// make the per-statement and per-commit costs vanish per contact.
pub const REBUILD_PAGE: u32 = 5000;

/// Contacts per `matches-batch` call. A call's fuel and wall time scale
/// with its size, its memory does not: a page goes to the rule in a few
/// calls so that a rule in a heavier language keeps fitting its memory.
const RULE_CALL: usize = 1000;

/// Re-evaluates every contact against one segment, page by page, writing
/// `segment.entered` / `segment.left` for each change. `report` sees the
/// progress after every page.
pub async fn rebuild(
    pipeline: &Pipeline,
    segment: &str,
    now: i64,
    mut report: impl FnMut(&RebuildProgress),
) -> Result<RebuildProgress, StoreError> {
    let (def, plugin) = segment_plugin(pipeline, segment).await?;
    let rebuild = Rebuild::new(pipeline, &def, plugin);
    let mut progress = RebuildProgress {
        total: pipeline.store.count_contacts().await?,
        ..Default::default()
    };
    report(&progress);
    let outcome = rebuild
        .run(
            None,
            None,
            |page, changes| {
                progress.evaluated += page.evaluated;
                progress.entered += changes.entered;
                progress.left += changes.left;
                report(&progress);
            },
            || now,
        )
        .await?;
    if let Outcome::Failed(error) = outcome {
        progress.error = Some(error);
    }
    progress.done = true;
    report(&progress);
    Ok(progress)
}

async fn segment_plugin(
    pipeline: &Pipeline,
    segment: &str,
) -> Result<(BindingDef, Arc<Plugin>), StoreError> {
    let def = pipeline
        .store
        .bindings(BindingKind::Segment)
        .await?
        .into_iter()
        .find(|b| b.name == segment)
        .ok_or_else(|| StoreError::NotFound(format!("segment {segment}")))?;
    let plugin = pipeline
        .registry
        .resolve(&def.plugin, def.version.as_deref())
        .ok_or_else(|| StoreError::Invalid(format!("plugin `{}` is not installed", def.plugin)))?;
    Ok((def, plugin))
}

/// One segment being rebuilt: its rule, and where the time goes.
struct Rebuild<'a> {
    pipeline: &'a Pipeline,
    plugin: Arc<Plugin>,
    binding: Arc<Binding>,
    timing: Timing,
}

/// Time spent per phase, in nanoseconds, logged when a rebuild ends. A
/// page is read while the one before it is evaluated and the one before
/// that written, so `read` is the time spent waiting for reads, and the
/// phases may add up to more than the whole (hence atomics too).
#[derive(Default)]
struct Timing {
    read: AtomicU64,
    rules: AtomicU64,
    write: AtomicU64,
}

impl Timing {
    fn add(counter: &AtomicU64, since: Instant) {
        let nanos = u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
        counter.fetch_add(nanos, Ordering::Relaxed);
    }

    fn seconds(counter: &AtomicU64) -> f64 {
        Duration::from_nanos(counter.load(Ordering::Relaxed)).as_secs_f64()
    }
}

/// A page being read on a task of its own, with the time its activity
/// windows end at: the rule is asked about the page at that same time.
struct PageRead {
    now: i64,
    task: tokio::task::JoinHandle<Result<ContactsPage, StoreError>>,
}

/// Contacts with their activity, as a page read returns them.
type ContactsPage = Vec<(Contact, Vec<ActivityCount>)>;

/// How a rebuild run ended.
enum Outcome {
    /// Every contact after the cursor was evaluated.
    Done,
    /// The rule failed on a page; the rebuild stops there.
    Failed(String),
    /// The task's job belongs to another node now.
    LeaseLost,
}

/// A page read and evaluated, ready to apply.
struct Evaluated {
    /// The page's last contact id: the cursor once it is applied.
    last: String,
    evaluated: i64,
    enter: Vec<String>,
    leave: Vec<String>,
}

enum Page {
    /// No contacts after the cursor.
    Done,
    Failed(String),
    Evaluated(Evaluated),
}

impl<'a> Rebuild<'a> {
    fn new(pipeline: &'a Pipeline, def: &BindingDef, plugin: Arc<Plugin>) -> Self {
        let binding = runtime_binding(def, World::SegmentRule, &plugin);
        Rebuild {
            pipeline,
            plugin,
            binding,
            timing: Timing::default(),
        }
    }

    /// Evaluates and applies the pages after `after` until none is left.
    /// With `task`, each page's transaction also records the task's cursor
    /// and progress and renews the job's lease, so a crash resumes at the
    /// first page not committed and nothing is applied or counted twice.
    /// Three pages are in flight: while one is written, the next is
    /// evaluated and the one after it read.
    async fn run(
        &self,
        mut after: Option<String>,
        task: Option<(&ClaimedJob, &str)>,
        mut applied: impl FnMut(&Evaluated, PageChanges),
        now: impl Fn() -> i64,
    ) -> Result<Outcome, StoreError> {
        let started = Instant::now();
        let mut evaluated = 0;
        let (mut next, mut reading) = self.evaluate(self.read(after.clone(), now()), &now).await?;
        let outcome = loop {
            let page = match next {
                Page::Done => break Outcome::Done,
                Page::Failed(error) => break Outcome::Failed(error),
                Page::Evaluated(page) => page,
            };
            let Some(read) = reading.take() else {
                break Outcome::Done;
            };
            let step = task.map(|(job, task)| TaskStep {
                job,
                task,
                from: after.as_deref(),
                cursor: &page.last,
                evaluated: page.evaluated,
            });
            let (changes, following) =
                tokio::join!(self.apply(&page, step, now()), self.evaluate(read, &now));
            let Some(changes) = changes? else {
                break Outcome::LeaseLost;
            };
            evaluated += page.evaluated;
            applied(&page, changes);
            after = Some(page.last);
            (next, reading) = following?;
        };
        // A read begun for a page that will not be evaluated is let go.
        if let Some(read) = reading {
            read.task.abort();
        }
        let elapsed = started.elapsed().as_secs_f64();
        tracing::info!(
            segment = %self.binding.name,
            evaluated,
            seconds = elapsed,
            per_second = (evaluated as f64 / elapsed.max(1e-9)).round(),
            read_s = Timing::seconds(&self.timing.read),
            rules_s = Timing::seconds(&self.timing.rules),
            write_s = Timing::seconds(&self.timing.write),
            "segment rebuild pass ended"
        );
        Ok(outcome)
    }

    /// Starts reading the page after `after` (contacts with their
    /// memberships and activity: one statement on SQLite, three on
    /// PostgreSQL) on a task of its own, so that it goes on while the page
    /// before it is evaluated: on SQLite the read runs on the connection's
    /// thread and the rule on the runtime's, so the two overlap. A rule
    /// that does not read activity (its manifest's `reads`) is not handed
    /// any, so none is summed for it.
    fn read(&self, after: Option<String>, now: i64) -> PageRead {
        let store = self.pipeline.store.clone();
        let activity_at = Some(now).filter(|_| self.plugin.contact_parts().activity);
        let task = tokio::spawn(
            async move {
                store
                    .contacts_for_rule(after.as_deref(), REBUILD_PAGE, activity_at)
                    .await
            }
            .in_current_span(),
        );
        PageRead { now, task }
    }

    /// Waits for `read`, starts reading the page after it, and asks the
    /// rule about this one.
    async fn evaluate(
        &self,
        read: PageRead,
        now: impl Fn() -> i64,
    ) -> Result<(Page, Option<PageRead>), StoreError> {
        let started = Instant::now();
        let items = match read.task.await {
            Ok(items) => items?,
            // The read panicked: carry the panic on as if it had happened here.
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        let Some(last) = items.last().map(|(contact, _)| contact.id.clone()) else {
            return Ok((Page::Done, None));
        };
        Timing::add(&self.timing.read, started);
        let following = self.read(Some(last.clone()), now());
        let now = read.now;
        let started = Instant::now();
        // The calls of a page run side by side (each on its own sandbox):
        // copying contacts into the rule is the rebuild's largest cost,
        // and a multi-core node shares it out.
        let mut calls = Vec::new();
        let mut rest = items;
        while !rest.is_empty() {
            let tail = rest.split_off(rest.len().min(RULE_CALL));
            let chunk = std::mem::replace(&mut rest, tail);
            let (plugin, binding) = (self.plugin.clone(), self.binding.clone());
            calls.push(tokio::spawn(async move {
                let answer = plugin.matches_batch(&binding, now, &chunk).await;
                (chunk, answer)
            }));
        }
        let segment = self.binding.name.as_str();
        let (mut enter, mut leave, mut evaluated) = (Vec::new(), Vec::new(), 0);
        let mut failure = None;
        for call in calls {
            let (chunk, answer) = match call.await {
                Ok(done) => done,
                Err(e) => {
                    failure.get_or_insert(format!("the rule's call did not finish: {e}"));
                    continue;
                }
            };
            let answers = match answer {
                Ok(Ok(answers)) => answers,
                Ok(Err(declined)) => {
                    failure.get_or_insert(format!("the rule declined: {declined}"));
                    continue;
                }
                Err(failed) => {
                    failure.get_or_insert(failed.to_string());
                    continue;
                }
            };
            evaluated += chunk.len();
            for ((contact, _), member) in chunk.into_iter().zip(answers) {
                let was = contact.segments.iter().any(|s| s == segment);
                match (was, member) {
                    (false, true) => enter.push(contact.id),
                    (true, false) => leave.push(contact.id),
                    _ => {}
                }
            }
        }
        Timing::add(&self.timing.rules, started);
        if let Some(error) = failure {
            following.task.abort();
            return Ok((Page::Failed(error), None));
        }
        Ok((
            Page::Evaluated(Evaluated {
                last,
                evaluated: i64::try_from(evaluated).unwrap_or(i64::MAX),
                enter,
                leave,
            }),
            Some(following),
        ))
    }

    /// Writes the page's membership changes (and the task's step) in one
    /// transaction. `None`: the lease was lost.
    async fn apply(
        &self,
        page: &Evaluated,
        step: Option<TaskStep<'_>>,
        now: i64,
    ) -> Result<Option<PageChanges>, StoreError> {
        let started = Instant::now();
        let enter: Vec<&str> = page.enter.iter().map(String::as_str).collect();
        let leave: Vec<&str> = page.leave.iter().map(String::as_str).collect();
        let changes = self
            .pipeline
            .store
            .apply_rebuild_page(&self.binding.name, &enter, &leave, step, now)
            .await;
        Timing::add(&self.timing.write, started);
        changes
    }
}

/// Runs a segment-rebuild task from its cursor; each page's changes, the
/// task's cursor and progress and the job's lease commit together. Finishes
/// the task and its job together. Stops quietly when another node took the
/// job over.
pub async fn run_rebuild_task(
    pipeline: &Pipeline,
    job: &ClaimedJob,
    task_id: &str,
) -> Result<(), StoreError> {
    let store = &pipeline.store;
    let task = store.task(task_id).await?;
    let now = pipeline.clock.now();
    let (def, plugin) = match segment_plugin(pipeline, &task.target).await {
        Ok(found) => found,
        // The segment was deleted meanwhile: nothing left to do.
        Err(StoreError::NotFound(what)) => {
            let why = format!("{what} does not exist any more");
            store.finish_task(job, task_id, Some(&why), now).await?;
            return Ok(());
        }
        // Not loaded on this node yet: retried, by any node.
        Err(e) => return Err(e),
    };
    if let Some(paused) = &def.paused {
        let why = format!("segment {} is paused: {paused}", def.name);
        store.finish_task(job, task_id, Some(&why), now).await?;
        return Ok(());
    }
    store
        .set_task_total(task_id, store.count_contacts().await?, now)
        .await?;
    let rebuild = Rebuild::new(pipeline, &def, plugin);
    let outcome = rebuild
        .run(
            task.cursor,
            Some((job, task_id)),
            |_, _| {},
            || pipeline.clock.now(),
        )
        .await?;
    let now = pipeline.clock.now();
    match outcome {
        Outcome::Done => {
            store.finish_task(job, task_id, None, now).await?;
        }
        Outcome::Failed(error) => {
            tracing::warn!(segment = %task.target, %error, "segment rebuild stopped");
            store.finish_task(job, task_id, Some(&error), now).await?;
        }
        Outcome::LeaseLost => {
            tracing::warn!(segment = %task.target, "lease lost; another node continues the rebuild");
        }
    }
    Ok(())
}
