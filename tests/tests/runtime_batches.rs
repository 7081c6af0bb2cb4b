//! Batches in the real sandbox: a scorer batch runs on one instance (one
//! `on-event-batch` call for `nachfass:plugin@0.2.0`, one `on-event` per
//! item for 0.1.0) and answers like single calls, every field reaching the
//! plugin alike either way; a trap or an exhausted
//! budget fails the whole batch and nothing reaches the next one; the
//! instance pool says clearly when it is full, and starts under an
//! address-space limit.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use nachfass::model::{ActivityCount, Contact, Event, PluginError, ScoreChange};
use nachfass::runtime::cache::{ArtifactCache, content_hash};
use nachfass::runtime::sandbox::{self, CallState};
use nachfass::runtime::{
    Binding, ContactPart, ContactParts, Limits, Plugin, Runtime, RuntimeConfig, RuntimeErrorKind,
    RuntimeLimits, ScorerInput, World,
};
use nachfass_tests::{guests, languages, runtime, sdk_records};

fn binding() -> Arc<Binding> {
    // Functional tests are not about wall time; a loaded CI machine must
    // not turn a slow instantiation into a failure.
    Arc::new(Binding::new("batch", World::Scorer).with_limits(Limits {
        wall_time: Duration::from_secs(5),
        ..Limits::for_world(World::Scorer)
    }))
}

async fn load(file: &std::path::Path) -> Plugin {
    runtime().load_file(file).await.expect("the plugin loads")
}

fn contact(id: &str, industry: &str) -> Contact {
    serde_json::from_value(serde_json::json!({
        "id": id, "email": format!("{id}@acme.example"), "attributes": { "industry": industry }
    }))
    .unwrap()
}

fn event(contact: &str, kind: &str, url: Option<&str>) -> Event {
    let properties = match url {
        Some(url) => serde_json::json!({ "url": url }),
        None => serde_json::json!({}),
    };
    serde_json::from_value(serde_json::json!({
        "id": format!("e-{contact}-{kind}"), "contact_id": contact, "kind": kind, "at": 1_000,
        "properties": properties
    }))
    .unwrap()
}

fn today(kind: &str, count: u32) -> Vec<ActivityCount> {
    vec![ActivityCount {
        kind: kind.into(),
        total: count,
        last_24_hours: count,
        last_30_days: count,
        last_at: Some(900),
    }]
}

/// Varied touchpoints: points per kind, a pricing visit, a capped kind,
/// a penalty, an unknown kind; two contacts interleaved.
fn touchpoints() -> Vec<(Contact, Event, Vec<ActivityCount>)> {
    let (a, b) = (contact("a", "software"), contact("b", "retail"));
    vec![
        (a.clone(), event("a", "email.opened", None), vec![]),
        (
            b.clone(),
            event("b", "page.visited", Some("https://acme.example/pricing")),
            vec![],
        ),
        (
            a.clone(),
            event("a", "email.clicked", None),
            today("email.clicked", 9),
        ),
        (b.clone(), event("b", "email.bounced", None), vec![]),
        (a.clone(), event("a", "demo.requested", None), vec![]),
        (b.clone(), event("b", "something.else", None), vec![]),
        (
            a,
            event("a", "page.visited", Some("/blog")),
            today("page.visited", 1),
        ),
    ]
}

fn inputs(items: &[(Contact, Event, Vec<ActivityCount>)]) -> Vec<ScorerInput<'_>> {
    items
        .iter()
        .map(|(contact, event, activity)| ScorerInput {
            contact,
            event,
            activity,
        })
        .collect()
}

/// The batch's answers against one single call per item.
async fn assert_batch_answers_like_single_calls(plugin: &Plugin) {
    let b = binding();
    let items = touchpoints();
    let mut single = Vec::new();
    for (contact, event, activity) in &items {
        single.push(
            plugin
                .on_event(&b, 1_000, contact, event, activity)
                .await
                .unwrap(),
        );
    }
    let calls_before = plugin.stats().calls.load(Ordering::Relaxed);
    let batched = plugin
        .on_event_batch(&b, 1_000, &inputs(&items))
        .await
        .unwrap();
    assert_eq!(batched, single, "{}", plugin.id());
    // Sanity of the inputs: they do not all score alike.
    let deltas: Vec<i64> = batched.iter().map(|a| a.as_ref().unwrap().delta).collect();
    assert_eq!(deltas, [1, 10, 0, -5, 20, 0, 1], "{}", plugin.id());
    assert_eq!(
        plugin.stats().calls.load(Ordering::Relaxed) - calls_before,
        items.len() as u64,
        "a batch counts one call per item"
    );
}

fn ok(delta: i64, reason: &str) -> Result<ScoreChange, PluginError> {
    Ok(ScoreChange {
        delta,
        reasons: vec![reason.to_owned()],
    })
}

/// What the echo fixture must print for an item.
fn echoed(contact: &Contact, event: &Event, activity: &[ActivityCount]) -> Vec<String> {
    vec![
        format!("{:?}", sdk_records::contact(contact)),
        format!("{:?}", sdk_records::event(event)),
        format!("{:?}", sdk_records::activity(activity)),
    ]
}

/// Batches lower borrowed views of the host's records, single calls the
/// types `bindgen!` generates: every field, optional or not, and every
/// kind of value must reach the plugin the same either way.
#[tokio::test]
async fn every_field_reaches_the_plugin_alike_in_batches_and_single_calls() {
    let plugin = load(&guests::ECHO_INPUT.packed()).await;
    let b = binding();
    let full: Contact = serde_json::from_value(serde_json::json!({
        "id": "full", "email": "full@acme.example", "external_id": "crm-7",
        "phone": "+4930123456", "timezone": "Europe/Berlin", "score": -12,
        "stage": "mql", "segments": ["a-list", "mittelstand"],
        "created_at": 1_000, "last_seen_at": 2_000,
        "attributes": {
            "none": null, "vip": true, "employees": 250, "ratio": 0.30000000000000004,
            "industry": "software", "tags": ["b2b", "saas", ""], "empty": []
        }
    }))
    .unwrap();
    let mut timestamped = full.clone();
    timestamped.attributes.insert(
        "renewal".into(),
        nachfass::model::Value::Timestamp(1_700_000_000_000),
    );
    let bare: Contact = serde_json::from_value(serde_json::json!({ "id": "bare" })).unwrap();
    let mut rich_event = event("full", "page.visited", Some("https://acme.example/ü"));
    rich_event.properties.insert(
        "plan".into(),
        nachfass::model::Value::Texts(vec!["pro".into()]),
    );
    let activity = vec![
        ActivityCount {
            kind: "email.opened".into(),
            total: 7,
            last_24_hours: 2,
            last_30_days: 5,
            last_at: Some(1_900),
        },
        ActivityCount {
            kind: "download".into(),
            total: 1,
            last_24_hours: 0,
            last_30_days: 0,
            last_at: None,
        },
    ];
    let items = vec![
        (timestamped, rich_event, activity),
        (bare.clone(), event("bare", "signup", None), vec![]),
        (
            full,
            event("full", "email.opened", None),
            today("email.opened", 3),
        ),
    ];
    let batched = plugin
        .on_event_batch(&b, 1_000, &inputs(&items))
        .await
        .unwrap();
    for ((contact, event, activity), answer) in items.iter().zip(&batched) {
        let expected = echoed(contact, event, activity);
        assert_eq!(
            answer.as_ref().unwrap().reasons,
            expected,
            "batch, {}",
            contact.id
        );
        let single = plugin
            .on_event(&b, 1_000, contact, event, activity)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(single.reasons, expected, "single call, {}", contact.id);
    }
    // What was printed is the data, not a placeholder.
    let first = &batched[0].as_ref().unwrap().reasons;
    assert!(first[0].contains("Europe/Berlin") && first[0].contains("0.30000000000000004"));
    assert!(first[0].contains("1700000000000") && first[1].contains("acme.example/ü"));
}

/// A plugin is handed only the parts of a contact its manifest `reads`:
/// the others arrive empty, in batches, single calls and profile scoring
/// alike, whatever the contact holds.
#[tokio::test]
async fn a_plugin_is_handed_only_the_parts_it_reads() {
    let contact: Contact = serde_json::from_value(serde_json::json!({
        "id": "c1", "email": "c1@acme.example", "phone": "+4930123456",
        "timezone": "Europe/Berlin", "score": 7, "stage": "lead",
        "segments": ["a-list"], "created_at": 1_000, "last_seen_at": 2_000,
        "attributes": { "industry": "software" }
    }))
    .unwrap();
    let touch = event("c1", "email.opened", Some("https://acme.example/"));
    let activity = today("email.opened", 3);
    let items = vec![(contact.clone(), touch.clone(), activity.clone())];
    let b = binding();
    for reads in [
        vec![],
        vec![ContactPart::Attributes],
        vec![ContactPart::ContactPoints, ContactPart::Activity],
        vec![ContactPart::Segments],
    ] {
        let mut manifest = guests::ECHO_INPUT.manifest();
        manifest.reads = Some(reads.clone());
        let plugin = runtime()
            .load(guests::ECHO_INPUT.bytes(), manifest)
            .await
            .unwrap();
        let parts = ContactParts::of(&reads);
        assert_eq!(plugin.contact_parts(), parts);
        let mut shown = contact.clone();
        if !parts.contact_points {
            (shown.email, shown.phone) = (None, None);
        }
        if !parts.attributes {
            shown.attributes.clear();
        }
        if !parts.segments {
            shown.segments.clear();
        }
        let shown_activity = if parts.activity {
            activity.clone()
        } else {
            vec![]
        };
        let expected = echoed(&shown, &touch, &shown_activity);
        let batched = plugin
            .on_event_batch(&b, 1_000, &inputs(&items))
            .await
            .unwrap();
        assert_eq!(
            batched[0].as_ref().unwrap().reasons,
            expected,
            "batch, {reads:?}"
        );
        let single = plugin
            .on_event(&b, 1_000, &contact, &touch, &activity)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(single.reasons, expected, "single call, {reads:?}");
        // What was held back is really gone from what the plugin printed.
        let printed = &batched[0].as_ref().unwrap().reasons[0];
        assert_eq!(
            printed.contains("c1@acme.example"),
            parts.contact_points,
            "{printed}"
        );
        assert_eq!(printed.contains("software"), parts.attributes, "{printed}");
        assert_eq!(printed.contains("a-list"), parts.segments, "{printed}");
        assert!(printed.contains("Europe/Berlin") && printed.contains("lead"));
    }
    // Without `reads`, the whole contact, as before the field existed.
    let whole = load(&guests::ECHO_INPUT.packed()).await;
    assert_eq!(whole.manifest().reads, None);
    assert_eq!(whole.contact_parts(), ContactParts::ALL);
}

#[tokio::test]
async fn a_batch_answers_like_single_calls() {
    let plugin = load(&guests::ENGAGEMENT.packed()).await;
    assert_eq!(plugin.api(), "0.2.0");
    assert!(plugin.exports().iter().any(|e| e == "on-event-batch"));
    assert_batch_answers_like_single_calls(&plugin).await;
    assert!(
        plugin
            .on_event_batch(&binding(), 0, &[])
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn python_and_javascript_scorers_of_the_first_wit_answer_batches_like_single_calls() {
    for file in [
        languages::ENGAGEMENT_PY.built(),
        languages::ENGAGEMENT_JS.built(),
    ] {
        let plugin = load(&file).await;
        assert_eq!(plugin.api(), "0.1.0", "{}", plugin.id());
        assert!(!plugin.exports().iter().any(|e| e == "on-event-batch"));
        assert_batch_answers_like_single_calls(&plugin).await;
    }
}

/// `n` plain touchpoints with `kinds` spliced in at their positions.
fn batch(n: usize, special: &[(usize, &str)]) -> Vec<(Contact, Event, Vec<ActivityCount>)> {
    (0..n)
        .map(|i| {
            let kind = special
                .iter()
                .find(|(at, _)| *at == i)
                .map_or("email.opened", |(_, kind)| kind);
            let id = format!("c{i}");
            (contact(&id, "software"), event(&id, kind, None), vec![])
        })
        .collect()
}

async fn run(
    plugin: &Plugin,
    items: &[(Contact, Event, Vec<ActivityCount>)],
) -> Result<Vec<Result<ScoreChange, PluginError>>, nachfass::runtime::RuntimeError> {
    plugin.on_event_batch(&binding(), 0, &inputs(items)).await
}

fn deltas(answers: &[Result<ScoreChange, PluginError>]) -> Vec<Result<i64, String>> {
    answers
        .iter()
        .map(|a| a.as_ref().map(|c| c.delta).map_err(|e| e.code.clone()))
        .collect()
}

#[tokio::test]
async fn a_batch_shares_one_instance_and_the_next_batch_starts_fresh() {
    let plugin = load(&guests::BATCH_COUNTER.packed()).await;
    // The global counts up across the items of one batch …
    let first = run(&plugin, &batch(3, &[])).await.unwrap();
    assert_eq!(
        first,
        [
            ok(1, "item 1 on this instance"),
            ok(2, "item 2 on this instance"),
            ok(3, "item 3 on this instance")
        ]
    );
    // … and starts again in the next: the instance was dropped.
    let second = run(&plugin, &batch(2, &[])).await.unwrap();
    assert_eq!(deltas(&second), [Ok(1), Ok(2)]);
    // The plugin's own error fails only its item.
    let declined = run(&plugin, &batch(3, &[(1, "decline")])).await.unwrap();
    assert_eq!(deltas(&declined), [Ok(1), Err("declined".into()), Ok(2)]);
    // Single calls keep their own fresh instance.
    let (c, e, a) = &batch(1, &[])[0];
    let single = plugin.on_event(&binding(), 0, c, e, a).await.unwrap();
    assert_eq!(single.unwrap().delta, 1);
    assert_eq!(plugin.stats().plugin_errors.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_trap_or_the_budget_running_out_mid_batch_fails_the_batch_and_leaks_nothing() {
    let plugin = load(&guests::BATCH_COUNTER.packed()).await;
    let error = run(&plugin, &batch(3, &[(1, "trap")])).await.unwrap_err();
    assert!(
        matches!(&error.kind, RuntimeErrorKind::Panicked { message } if message.contains("asked to trap after 1 items")),
        "{error}"
    );
    assert_eq!(error.plugin, "batch-counter@1.0.0");
    let after = run(&plugin, &batch(2, &[])).await.unwrap();
    assert_eq!(
        deltas(&after),
        [Ok(1), Ok(2)],
        "the trapped instance is gone"
    );

    // The budget of a batch is the binding's per call times the items.
    let error = run(&plugin, &batch(4, &[(2, "spin")])).await.unwrap_err();
    let budget = 4 * binding().limits.fuel;
    assert!(
        matches!(error.kind, RuntimeErrorKind::Fuel { limit } if limit == budget),
        "{error}"
    );
    assert!(
        error.to_string().contains(&format!(
            "batch-counter@1.0.0: CPU budget of {budget} instructions exceeded"
        )),
        "{error}"
    );
    let after = run(&plugin, &batch(3, &[])).await.unwrap();
    assert_eq!(deltas(&after), [Ok(1), Ok(2), Ok(3)]);
    assert_eq!(plugin.stats().runtime_errors.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn a_scorer_of_the_first_wit_runs_a_batch_as_calls_on_one_instance() {
    let plugin = load(&guests::SCORER_V0_1.packed()).await;
    assert_eq!(plugin.api(), "0.1.0");
    assert!(
        plugin
            .imports()
            .iter()
            .any(|i| i == "nachfass:plugin/types@0.1.0"),
        "{:?}",
        plugin.imports()
    );
    assert_eq!(plugin.exports(), ["on-event", "on-profile"]);
    let first = run(&plugin, &batch(3, &[])).await.unwrap();
    assert_eq!(
        first,
        [
            ok(1, "0.1.0 item 1"),
            ok(2, "0.1.0 item 2"),
            ok(3, "0.1.0 item 3")
        ]
    );
    let error = run(&plugin, &batch(3, &[(2, "trap")])).await.unwrap_err();
    assert_eq!(error.kind.code(), "panic", "{error}");
    assert_eq!(
        deltas(&run(&plugin, &batch(1, &[])).await.unwrap()),
        [Ok(1)]
    );
    // The single-call API works on it as before.
    let (c, e, a) = &batch(1, &[])[0];
    let single = plugin.on_event(&binding(), 0, c, e, a).await.unwrap();
    assert_eq!(single.unwrap().delta, 1);
    let profile = plugin.on_profile(&binding(), 0, c).await.unwrap();
    assert_eq!(profile.unwrap().delta, 0);
}

#[tokio::test]
async fn a_full_instance_pool_fails_the_call_with_a_clear_error() {
    let cache = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(RuntimeConfig {
        limits: RuntimeLimits {
            max_instances: 1,
            ..RuntimeLimits::default()
        },
        cache_dir: Some(cache.path().to_path_buf()),
        ..RuntimeConfig::default()
    })
    .unwrap();
    assert_eq!(runtime.pool().instances, 1);
    let file = guests::ENGAGEMENT.packed();
    let plugin = runtime.load_file(&file).await.unwrap();
    let b = binding();

    // Someone else holds the one slot: an instance in a store of its own.
    let bytes = std::fs::read(&file).unwrap();
    let engine = runtime.engine();
    let (component, _) = ArtifactCache::new(cache.path())
        .unwrap()
        .load_or_compile(engine, &content_hash(&bytes), &bytes)
        .unwrap();
    let pre = sandbox::linker(engine, World::Scorer)
        .unwrap()
        .instantiate_pre(&component)
        .unwrap();
    let state = CallState::new(plugin.id().into(), b.clone(), &[], &b.limits, 0);
    let mut store = sandbox::store(engine, state, &b.limits, runtime.limits());
    let _held = pre.instantiate_async(&mut store).await.unwrap();

    let items = touchpoints();
    let error = plugin
        .on_event_batch(&b, 0, &inputs(&items))
        .await
        .unwrap_err();
    assert_eq!(error.kind.code(), "exhausted", "{error}");
    let message = error.to_string();
    assert!(
        message.contains("no free instance slot")
            && message.contains("maximum concurrent limit of 1")
            && message.contains("retry"),
        "{message}"
    );

    // The slot is the store's until the store goes.
    drop(store);
    let answers = plugin.on_event_batch(&b, 0, &inputs(&items)).await.unwrap();
    assert_eq!(answers.len(), items.len(), "the slot is free again");
}

#[test]
fn the_runtime_starts_under_an_address_space_limit() {
    // 8 GiB of address space: far less than the 2 TiB a guarded pool of
    // 256 slots reserves, so the engine must fall back to a compact pool.
    let file = guests::ENGAGEMENT.packed();
    let checked = std::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 8388608 && exec \"$0\" plugin check \"$1\"")
        .arg(nachfass_tests::server::binary())
        .arg(&file)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&checked.stdout);
    let stderr = String::from_utf8_lossy(&checked.stderr);
    assert!(checked.status.success(), "{stdout}\n{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["plugin"], "engagement@0.1.0");
}

/// A replay's call session (`runtime/plugin/session.rs`): one instance
/// answers call after call, each at its own time through `host.now` and
/// the WASI clocks, exactly as a fresh instance per call does; after a
/// trap the next call gets a fresh instance.
#[tokio::test]
async fn a_session_moves_the_clock_per_call_on_one_instance() {
    let plugin = load(&guests::CLOCK_TAG.packed()).await;
    let b = binding();
    let nows = [
        1_780_000_000_000,
        1_780_000_005_000,
        1_779_000_000_000,
        1_780_086_400_000,
        1_000,
        1_780_000_000_000,
        1_790_000_000_000,
    ];
    let mut session = plugin.scorer_session(&b);
    for (i, ((contact, event, activity), now)) in touchpoints().iter().zip(nows).enumerate() {
        let fresh = plugin
            .on_event(&b, now, contact, event, activity)
            .await
            .unwrap()
            .unwrap();
        let reused = session
            .on_event(now, contact, event, activity)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(fresh.delta, now / 1000, "{fresh:?}");
        assert_eq!(
            fresh.reasons[..2],
            [format!("host.now {now}"), format!("wasi {now}")]
        );
        assert_eq!(fresh.reasons[2], "calls before 0", "a fresh instance each");
        assert_eq!(
            (reused.delta, &reused.reasons[..2]),
            (fresh.delta, &fresh.reasons[..2]),
            "call {i}"
        );
        assert_eq!(
            reused.reasons[2],
            format!("calls before {i}"),
            "one instance"
        );
    }
    let (contact, _, activity) = &touchpoints()[0];
    let trapping: Event = serde_json::from_value(serde_json::json!({
        "id": "e-trap", "contact_id": "a", "kind": "page.visited", "at": 1_000,
        "properties": { "trap": true }
    }))
    .unwrap();
    let failed = session.on_event(2_000, contact, &trapping, activity).await;
    assert!(failed.is_err(), "{failed:?}");
    let (_, event, _) = &touchpoints()[0];
    let after = session
        .on_event(3_000, contact, event, activity)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (after.delta, after.reasons[2].as_str()),
        (3, "calls before 0"),
        "a trapped instance is not called again"
    );
}
