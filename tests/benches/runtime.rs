//! Plugin runtime figures, printed in one run:
//!
//! - batches against compiled-in rules: the engagement scorer and two
//!   attribute-match segment bindings, once as components (one instance
//!   and one call per batch) and once as the same Rust compiled into the
//!   host, both behind one binding interface, per item and as a ratio
//!   (`NACHFASS_BENCH_BATCH_ONLY=1` runs only this);
//! - `scoring/engagement` per call as a component (fresh sandbox each call)
//!   against the same logic compiled natively, and their ratio;
//! - the cost of a fresh sandboxed instance alone;
//! - segment-rule batch throughput over 1M contacts;
//! - what counting instructions (fuel, the CPU limit) costs against an
//!   engine without fuel, where only the epoch backstop limits CPU;
//! - cost per language: the engagement scorer in Rust, Python
//!   (componentize-py) and JavaScript (componentize-js): size, compile
//!   time, instantiation, a call on a fresh instance and on a reused one,
//!   linear memory.
//!
//! `cargo bench -p nachfass-tests --bench runtime` (set NACHFASS_BENCH_CONTACTS
//! for another population size; NACHFASS_BENCH_LANGUAGES_ONLY=1 runs only
//! the languages, which need componentize-py and componentize-js;
//! NACHFASS_BENCH_FUEL_ONLY=1 only the fuel comparison).

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use nachfass::model::{ActivityCount, Contact, Event, PluginError, ScoreChange, Value};
use nachfass::runtime::bindings::scorer::ScorerPre;
use nachfass::runtime::bindings::types as wit;
use nachfass::runtime::cache::{ArtifactCache, content_hash};
use nachfass::runtime::sandbox::{self, CallState};
use nachfass::runtime::{
    Binding, Limits, Plugin, Runtime, RuntimeConfig, RuntimeLimits, ScorerInput, World,
};
use nachfass_sdk::Scorer as _;
use nachfass_sdk::SegmentRule as _;
use nachfass_tests::{guests, languages, runtime, sdk_records};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn binding(world: World, config: &[(&str, &str)]) -> Arc<Binding> {
    let mut binding = Binding::new("bench", world).with_limits(Limits {
        fuel: 1_000 * nachfass::runtime::DEFAULT_FUEL,
        wall_time: Duration::from_secs(30),
        ..Limits::for_world(world)
    });
    for (k, v) in config {
        binding = binding.with_config(k, v);
    }
    Arc::new(binding)
}

fn contact(i: usize) -> Contact {
    let mut c: Contact = serde_json::from_value(
        serde_json::json!({ "id": format!("c{i}"), "email": format!("c{i}@example.com") }),
    )
    .unwrap();
    let industries = ["software", "retail", "manufacturing", "finance"];
    c.attributes
        .insert("industry".into(), Value::Text(industries[i % 4].into()));
    c.attributes
        .insert("employees".into(), Value::Integer((i % 2000) as i64));
    c.attributes.insert(
        "country".into(),
        Value::Text(["DE", "AT", "CH", "FR"][i % 4].into()),
    );
    c
}

/// The same calls on an engine with fuel (the default) and one without.
async fn fuel_against_epoch_only() {
    let with_fuel = runtime();
    let cache = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    let epoch_only = Runtime::new(RuntimeConfig {
        limits: RuntimeLimits {
            consume_fuel: false,
            ..RuntimeLimits::default()
        },
        cache_dir: Some(cache),
        ..RuntimeConfig::default()
    })
    .unwrap();
    let calls = 20_000;
    let c = contact(7);
    let event: Event = serde_json::from_value(serde_json::json!({
        "id": "e1", "contact_id": "c7", "kind": "page.visited", "at": 5, "properties": { "url": "https://acme.example/pricing" }
    }))
    .unwrap();
    let population = 200_000;
    let items: Vec<(Contact, Vec<ActivityCount>)> =
        (0..population).map(|i| (contact(i), Vec::new())).collect();
    println!("== fuel (instruction budget) against epoch-only ==");
    for (label, runtime) in [("fuel", &with_fuel), ("epoch-only", &epoch_only)] {
        let scorer = runtime
            .load_file(&guests::ENGAGEMENT.packed())
            .await
            .unwrap();
        let b = binding(World::Scorer, &[]);
        for _ in 0..500 {
            scorer
                .on_event(&b, 10, &c, &event, &[])
                .await
                .unwrap()
                .unwrap();
        }
        let started = Instant::now();
        for _ in 0..calls {
            scorer
                .on_event(&b, 10, &c, &event, &[])
                .await
                .unwrap()
                .unwrap();
        }
        let per_call = started.elapsed() / calls as u32;
        let fuel = scorer
            .stats()
            .fuel_used
            .load(std::sync::atomic::Ordering::Relaxed)
            / (calls as u64 + 500);
        let rule = runtime
            .load_file(&guests::ATTRIBUTE_MATCH.packed())
            .await
            .unwrap();
        let rb = binding(
            World::SegmentRule,
            &[("attribute", "employees"), ("op", "gt"), ("value", "249")],
        );
        let started = Instant::now();
        for chunk in items.chunks(1_000) {
            rule.matches_batch(&rb, 0, chunk).await.unwrap().unwrap();
        }
        let rate = population as f64 / started.elapsed().as_secs_f64();
        println!(
            "{label:>10}: engagement on-event {:.2} µs per call ({fuel} instructions); attribute-match batches of 1,000: {rate:.0} contacts/s",
            micros(per_call)
        );
    }
}

/// The same scorer in three languages, measured alike.
async fn cost_per_language() {
    let cache = tempfile::tempdir().unwrap();
    // A cold cache: the first load compiles.
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        ..RuntimeConfig::default()
    })
    .unwrap();
    let c = contact(1);
    let event: Event = serde_json::from_value(serde_json::json!({
        "id": "e1", "contact_id": "c1", "kind": "page.visited", "at": 5, "properties": { "url": "https://acme.example/pricing" }
    }))
    .unwrap();
    let activity = vec![ActivityCount {
        kind: "page.visited".into(),
        total: 3,
        last_24_hours: 1,
        last_30_days: 3,
        last_at: Some(4),
    }];
    let b = binding(World::Scorer, &[]);
    println!("== cost per language: the engagement scorer, on-event ==");
    println!(
        "| language | component | compile | instantiate p50 | call, fresh instance p50 / p99 | call, reused instance p50 | linear memory |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let files = [
        ("Rust", guests::ENGAGEMENT.packed(), 2_000),
        ("Python", languages::ENGAGEMENT_PY.built(), 300),
        ("JavaScript", languages::ENGAGEMENT_JS.built(), 300),
    ];
    for (language, file, calls) in files {
        let bytes = std::fs::read(&file).unwrap();
        let t = Instant::now();
        let plugin = runtime.load_file(&file).await.unwrap();
        let compile = t.elapsed();
        assert!(!plugin.from_cache());

        let mut instantiate = Vec::with_capacity(calls);
        let mut fresh = Vec::with_capacity(calls);
        for _ in 0..calls {
            let t = Instant::now();
            plugin.probe(&b, 10).await.unwrap();
            instantiate.push(t.elapsed());
            let t = Instant::now();
            let change = plugin
                .on_event(&b, 10, &c, &event, &activity)
                .await
                .unwrap()
                .unwrap();
            fresh.push(t.elapsed());
            assert_eq!(change.delta, 10, "{language}");
        }
        instantiate.sort();
        fresh.sort();

        // One instance, called again and again (what a batch export or a
        // replay could do); the machine code comes from the cache above.
        let engine = runtime.engine();
        let (component, from_cache) = ArtifactCache::new(cache.path())
            .unwrap()
            .load_or_compile(engine, &content_hash(&bytes), &bytes)
            .unwrap();
        assert!(from_cache);
        let linker = sandbox::linker(engine, World::Scorer).unwrap();
        let pre = ScorerPre::new(linker.instantiate_pre(&component).unwrap()).unwrap();
        let state = CallState::new(plugin.id().into(), b.clone(), &[], &b.limits, 10);
        let mut store = sandbox::store(engine, state, &b.limits, runtime.limits());
        let scorer = pre.instantiate_async(&mut store).await.unwrap();
        sandbox::start_call_budget(&mut store, &b.limits.scaled(calls), runtime.limits());
        let (wc, we) = (wit::Contact::from(&c), wit::Event::from(&event));
        let wa: Vec<wit::ActivityCount> = activity.iter().map(Into::into).collect();
        let mut reused = Vec::with_capacity(calls);
        for _ in 0..calls {
            let t = Instant::now();
            let change = scorer
                .call_on_event(&mut store, &wc, &we, &wa)
                .await
                .unwrap()
                .unwrap();
            reused.push(t.elapsed());
            assert_eq!(change.delta, 10);
        }
        reused.sort();
        let memory = store.data().memory_bytes_now();
        println!(
            "| {language} | {:.1} MB | {:.2} s | {:.0} µs | {:.0} / {:.0} µs | {:.1} µs | {:.1} MiB |",
            bytes.len() as f64 / 1e6,
            compile.as_secs_f64(),
            micros(percentile(&instantiate, 0.5)),
            micros(percentile(&fresh, 0.5)),
            micros(percentile(&fresh, 0.99)),
            micros(percentile(&reused, 0.5)),
            memory as f64 / f64::from(1 << 20),
        );
    }
}

/// What the host asks of a scorer binding, however the scorer is built.
trait ScorerBinding {
    async fn on_event_batch(
        &self,
        now: i64,
        items: &[ScorerInput<'_>],
    ) -> Vec<Result<ScoreChange, PluginError>>;
}

/// What the host asks of a segment binding, however the rule is built.
trait SegmentBinding {
    async fn matches_batch(&self, now: i64, items: &[(Contact, Vec<ActivityCount>)]) -> Vec<bool>;
}

/// A component behind the binding interface: one instance per batch.
struct Component {
    plugin: Plugin,
    binding: Arc<Binding>,
}

impl ScorerBinding for Component {
    async fn on_event_batch(
        &self,
        now: i64,
        items: &[ScorerInput<'_>],
    ) -> Vec<Result<ScoreChange, PluginError>> {
        self.plugin
            .on_event_batch(&self.binding, now, items)
            .await
            .unwrap()
    }
}

impl SegmentBinding for Component {
    async fn matches_batch(&self, now: i64, items: &[(Contact, Vec<ActivityCount>)]) -> Vec<bool> {
        self.plugin
            .matches_batch(&self.binding, now, items)
            .await
            .unwrap()
            .unwrap()
    }
}

/// The same plugin crates compiled into the host: the host's records
/// become the SDK's, the rule runs, its answer becomes the host's again,
/// as a compiled-in rule would need.
struct Native {
    host: nachfass_sdk::testing::TestHost,
}

impl Native {
    fn new(now: i64, config: &[(&str, &str)]) -> Native {
        let mut host = nachfass_sdk::testing::TestHost::new().now(now);
        for (key, value) in config {
            host = host.config(key, value);
        }
        Native { host }
    }
}

impl ScorerBinding for Native {
    async fn on_event_batch(
        &self,
        _now: i64,
        items: &[ScorerInput<'_>],
    ) -> Vec<Result<ScoreChange, PluginError>> {
        let ctx = self.host.ctx();
        let inputs: Vec<nachfass_sdk::ScorerInput> = items
            .iter()
            .map(|item| {
                nachfass_sdk::ScorerInput::new(
                    sdk_records::contact(item.contact),
                    sdk_records::event(item.event),
                    sdk_records::activity(item.activity),
                )
            })
            .collect();
        engagement::Engagement::on_event_batch(&ctx, &inputs)
            .unwrap()
            .into_iter()
            .map(|answer| {
                answer
                    .map(|c| ScoreChange {
                        delta: c.delta,
                        reasons: c.reasons,
                    })
                    .map_err(|e| PluginError {
                        code: e.code,
                        message: e.message,
                    })
            })
            .collect()
    }
}

impl SegmentBinding for Native {
    async fn matches_batch(&self, _now: i64, items: &[(Contact, Vec<ActivityCount>)]) -> Vec<bool> {
        let ctx = self.host.ctx();
        let inputs: Vec<nachfass_sdk::RuleInput> = items
            .iter()
            .map(|(contact, activity)| {
                nachfass_sdk::RuleInput::new(
                    sdk_records::contact(contact),
                    sdk_records::activity(activity),
                )
            })
            .collect();
        attribute_match::AttributeMatch::matches_batch(&ctx, &inputs).unwrap()
    }
}

/// Touchpoints of varied kinds over `contacts`, with activity so far.
fn touchpoints(n: usize) -> Vec<(Contact, Event, Vec<ActivityCount>)> {
    let kinds = [
        "email.opened",
        "email.clicked",
        "page.visited",
        "download",
        "webinar.attended",
        "email.bounced",
    ];
    (0..n)
        .map(|i| {
            let c = contact(i % 5_000);
            let kind = kinds[i % kinds.len()];
            let url = if i % 3 == 0 {
                "https://acme.example/pricing"
            } else {
                "https://acme.example/blog"
            };
            let event: Event = serde_json::from_value(serde_json::json!({
                "id": format!("e{i}"), "contact_id": c.id, "kind": kind, "at": 5,
                "properties": { "url": url }
            }))
            .unwrap();
            let activity = vec![ActivityCount {
                kind: kind.into(),
                total: (i % 9) as u32,
                last_24_hours: (i % 7) as u32,
                last_30_days: (i % 9) as u32,
                last_at: Some(4),
            }];
            (c, event, activity)
        })
        .collect()
}

/// Time per item of `rounds` passes over `items` in batches of `size`.
async fn per_item_scoring(
    scorer: &impl ScorerBinding,
    items: &[ScorerInput<'_>],
    size: usize,
    rounds: usize,
) -> (Duration, Vec<Result<ScoreChange, PluginError>>) {
    let mut answers = Vec::with_capacity(items.len());
    for chunk in items.chunks(size) {
        answers.extend(scorer.on_event_batch(10, chunk).await);
    }
    let started = Instant::now();
    for _ in 0..rounds {
        for chunk in items.chunks(size) {
            std::hint::black_box(scorer.on_event_batch(10, chunk).await);
        }
    }
    (started.elapsed() / (rounds * items.len()) as u32, answers)
}

async fn per_item_segments(
    rules: &[&impl SegmentBinding],
    items: &[(Contact, Vec<ActivityCount>)],
    size: usize,
    rounds: usize,
) -> (Duration, Vec<Vec<bool>>) {
    let mut answers = Vec::new();
    for rule in rules {
        let mut all = Vec::with_capacity(items.len());
        for chunk in items.chunks(size) {
            all.extend(rule.matches_batch(0, chunk).await);
        }
        answers.push(all);
    }
    let started = Instant::now();
    for _ in 0..rounds {
        for rule in rules {
            for chunk in items.chunks(size) {
                std::hint::black_box(rule.matches_batch(0, chunk).await);
            }
        }
    }
    (
        started.elapsed() / (rounds * items.len() * rules.len()) as u32,
        answers,
    )
}

/// The same scorer and segment rules as components and compiled in,
/// behind the same binding interfaces, in batches.
async fn batched_against_native() {
    let runtime = runtime();
    let events: usize = std::env::var("NACHFASS_BENCH_BATCH_ITEMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let rounds = 5;
    let scorer = Component {
        plugin: runtime
            .load_file(&guests::ENGAGEMENT.packed())
            .await
            .unwrap(),
        binding: binding(World::Scorer, &[]),
    };
    assert_eq!(scorer.plugin.api(), "0.2.0");
    let native_scorer = Native::new(10, &[]);
    let rule_configs: [&[(&str, &str)]; 2] = [
        &[("attribute", "employees"), ("op", "gt"), ("value", "249")],
        &[
            ("attribute", "industry"),
            ("op", "in"),
            ("value", "software,finance"),
        ],
    ];
    let rule_plugin = || async {
        runtime
            .load_file(&guests::ATTRIBUTE_MATCH.packed())
            .await
            .unwrap()
    };
    let rules = [
        Component {
            plugin: rule_plugin().await,
            binding: binding(World::SegmentRule, rule_configs[0]),
        },
        Component {
            plugin: rule_plugin().await,
            binding: binding(World::SegmentRule, rule_configs[1]),
        },
    ];
    let native_rules = [
        Native::new(0, rule_configs[0]),
        Native::new(0, rule_configs[1]),
    ];

    let touchpoints = touchpoints(events);
    let inputs: Vec<ScorerInput> = touchpoints
        .iter()
        .map(|(contact, event, activity)| ScorerInput {
            contact,
            event,
            activity,
        })
        .collect();
    let profiles: Vec<(Contact, Vec<ActivityCount>)> = touchpoints
        .iter()
        .map(|(c, _, a)| (c.clone(), a.clone()))
        .collect();
    println!(
        "== batches: components against the same rules compiled in, {events} items, {rounds} rounds =="
    );
    println!("| what | batch | component per item | native per item | ratio |");
    println!("| --- | --- | --- | --- | --- |");
    for size in [100usize, 1_000] {
        let (component, from_component) = per_item_scoring(&scorer, &inputs, size, rounds).await;
        let (native, from_native) = per_item_scoring(&native_scorer, &inputs, size, rounds).await;
        assert_eq!(from_component, from_native, "both score alike");
        println!(
            "| scorer engagement (on-event-batch) | {size} | {:.3} µs | {:.3} µs | {:.2}x |",
            micros(component),
            micros(native),
            component.as_secs_f64() / native.as_secs_f64()
        );
        let (component, from_component) =
            per_item_segments(&[&rules[0], &rules[1]], &profiles, size, rounds).await;
        let (native, from_native) = per_item_segments(
            &[&native_rules[0], &native_rules[1]],
            &profiles,
            size,
            rounds,
        )
        .await;
        assert_eq!(from_component, from_native, "both decide alike");
        println!(
            "| 2 segment rules attribute-match (matches-batch), per rule | {size} | {:.3} µs | {:.3} µs | {:.2}x |",
            micros(component),
            micros(native),
            component.as_secs_f64() / native.as_secs_f64()
        );
    }
    let stats = scorer.plugin.stats();
    let calls = stats.calls.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "component scorer stats: {calls} calls counted (one per item), {} instructions per item",
        stats.fuel_used.load(std::sync::atomic::Ordering::Relaxed) / calls.max(1)
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    batched_against_native().await;
    if std::env::var_os("NACHFASS_BENCH_BATCH_ONLY").is_some() {
        return;
    }
    if std::env::var_os("NACHFASS_BENCH_FUEL_ONLY").is_some() {
        fuel_against_epoch_only().await;
        return;
    }
    cost_per_language().await;
    if std::env::var_os("NACHFASS_BENCH_LANGUAGES_ONLY").is_some() {
        return;
    }
    let runtime = runtime();
    let calls = 20_000;

    // 1. engagement: component vs native.
    let engagement = runtime
        .load_file(&guests::ENGAGEMENT.packed())
        .await
        .unwrap();
    let b = binding(World::Scorer, &[]);
    let c = contact(1);
    let event: Event = serde_json::from_value(serde_json::json!({
        "id": "e1", "contact_id": "c1", "kind": "page.visited", "at": 5, "properties": { "url": "https://acme.example/pricing" }
    }))
    .unwrap();
    let activity = vec![ActivityCount {
        kind: "page.visited".into(),
        total: 3,
        last_24_hours: 1,
        last_30_days: 3,
        last_at: Some(4),
    }];
    for _ in 0..500 {
        engagement
            .on_event(&b, 10, &c, &event, &activity)
            .await
            .unwrap()
            .unwrap();
    }
    let mut samples = Vec::with_capacity(calls);
    let started = Instant::now();
    for _ in 0..calls {
        let t = Instant::now();
        let change = engagement
            .on_event(&b, 10, &c, &event, &activity)
            .await
            .unwrap()
            .unwrap();
        samples.push(t.elapsed());
        assert_eq!(change.delta, 10);
    }
    let component_mean = started.elapsed() / calls as u32;
    samples.sort();

    let native_contact = nachfass_sdk::Contact::new("c1").with_attr("industry", "software");
    let native_event = nachfass_sdk::Event::new("page.visited", 5)
        .with_prop("url", "https://acme.example/pricing");
    let native_activity =
        [nachfass_sdk::ActivityCount::new("page.visited", 3, Some(4)).with_last_24_hours(1)];
    let host = nachfass_sdk::testing::TestHost::new().now(10);
    let native_calls = 1_000_000u32;
    let started = Instant::now();
    for _ in 0..native_calls {
        let ctx = host.ctx();
        let change = engagement::Engagement::on_event(
            &ctx,
            &native_contact,
            &native_event,
            &native_activity,
        )
        .unwrap();
        std::hint::black_box(change);
    }
    let native_mean = started.elapsed() / native_calls;

    println!("== scoring/engagement on-event, {calls} calls, one fresh sandbox per call ==");
    println!(
        "component: mean {:.2} µs, p50 {:.2} µs, p99 {:.2} µs",
        micros(component_mean),
        micros(percentile(&samples, 0.50)),
        micros(percentile(&samples, 0.99))
    );
    println!(
        "native:    mean {:.3} µs ({native_calls} calls)",
        micros(native_mean)
    );
    println!(
        "ratio component/native: {:.0}x",
        component_mean.as_secs_f64() / native_mean.as_secs_f64()
    );

    // 2. A fresh sandboxed instance alone (store, WASI context, instance).
    let mut samples = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        engagement.probe(&b, 10).await.unwrap();
        samples.push(t.elapsed());
    }
    samples.sort();
    println!(
        "fresh instance (store + WASI ctx + instantiate): p50 {:.2} µs, p99 {:.2} µs",
        micros(percentile(&samples, 0.50)),
        micros(percentile(&samples, 0.99))
    );

    // 3. Segment-rule batch throughput.
    let population: usize = std::env::var("NACHFASS_BENCH_CONTACTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let items: Vec<(Contact, Vec<ActivityCount>)> =
        (0..population).map(|i| (contact(i), Vec::new())).collect();
    let rule = runtime
        .load_file(&guests::ATTRIBUTE_MATCH.packed())
        .await
        .unwrap();
    let rb = binding(
        World::SegmentRule,
        &[("attribute", "employees"), ("op", "gt"), ("value", "249")],
    );
    println!("== segment rule rules/attribute-match (employees gt 249), {population} contacts ==");
    for batch in [100usize, 1_000, 10_000] {
        let started = Instant::now();
        let mut members = 0usize;
        for chunk in items.chunks(batch) {
            let answers = rule.matches_batch(&rb, 0, chunk).await.unwrap().unwrap();
            members += answers.iter().filter(|m| **m).count();
        }
        let elapsed = started.elapsed();
        println!(
            "batch {batch:>6}: {:>10.0} contacts/s ({:.2} s, {members} members)",
            population as f64 / elapsed.as_secs_f64(),
            elapsed.as_secs_f64()
        );
    }
    let native_items: Vec<nachfass_sdk::RuleInput> = (0..population.min(200_000))
        .map(|i| {
            let c = nachfass_sdk::Contact::new(&format!("c{i}"))
                .with_attr("employees", (i % 2000) as i64);
            nachfass_sdk::RuleInput::new(c, vec![])
        })
        .collect();
    let host = nachfass_sdk::testing::TestHost::new()
        .config("attribute", "employees")
        .config("op", "gt")
        .config("value", "249");
    let started = Instant::now();
    let answers =
        attribute_match::AttributeMatch::matches_batch(&host.ctx(), &native_items).unwrap();
    let elapsed = started.elapsed();
    println!(
        "native:       {:>10.0} contacts/s ({} contacts, {} members)",
        native_items.len() as f64 / elapsed.as_secs_f64(),
        native_items.len(),
        answers.iter().filter(|m| **m).count()
    );

    fuel_against_epoch_only().await;
}
