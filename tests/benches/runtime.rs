//! Plugin runtime figures, printed in one run:
//!
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

use nachfass::model::{ActivityCount, Contact, Event, Value};
use nachfass::runtime::bindings::scorer::ScorerPre;
use nachfass::runtime::bindings::types as wit;
use nachfass::runtime::cache::{ArtifactCache, content_hash};
use nachfass::runtime::sandbox::{self, CallState};
use nachfass::runtime::{Binding, Limits, Runtime, RuntimeConfig, RuntimeLimits, World};
use nachfass_sdk::Scorer as _;
use nachfass_sdk::SegmentRule as _;
use nachfass_tests::{guests, languages, runtime};

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
        let memory = store.data().memory_bytes();
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

#[tokio::main(flavor = "current_thread")]
async fn main() {
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
