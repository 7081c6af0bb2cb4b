//! Hostile plugins: each is contained with an error that names the plugin
//! and the limit, and the next call to a good plugin succeeds.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use nachfass::model::{Contact, Event, ScoreChange};
use nachfass::runtime::manifest::{self, Manifest};
use nachfass::runtime::{
    Binding, LoadError, Plugin, Runtime, RuntimeConfig, RuntimeErrorKind, RuntimeLimits, World,
};
use nachfass_tests::{Guest, guests, runtime};

fn contact() -> Contact {
    serde_json::from_value(serde_json::json!({ "id": "c-17" })).unwrap()
}

fn event() -> Event {
    serde_json::from_value(
        serde_json::json!({ "id": "e1", "contact_id": "c-17", "kind": "email.opened", "at": 1 }),
    )
    .unwrap()
}

fn scorer_binding() -> Arc<Binding> {
    Arc::new(Binding::new("hostile", World::Scorer))
}

async fn load(runtime: &Runtime, guest: Guest) -> Plugin {
    runtime
        .load_file(&guest.packed())
        .await
        .expect("fixture loads")
}

/// Runs a hostile scorer once and returns how the runtime stopped it, then
/// checks that a good scorer on the same runtime still answers.
async fn contained(guest: Guest) -> (String, RuntimeErrorKind) {
    contained_by(guest, scorer_binding()).await
}

async fn contained_by(guest: Guest, binding: Arc<Binding>) -> (String, RuntimeErrorKind) {
    let runtime = runtime();
    let hostile = load(&runtime, guest).await;
    let error = hostile
        .on_event(&binding, 0, &contact(), &event(), &[])
        .await
        .expect_err("the runtime stops this plugin");
    let good = load(&runtime, guests::ENGAGEMENT).await;
    let relaxed = Arc::new(Binding::new("good", World::Scorer).with_limits(
        nachfass::runtime::Limits {
            wall_time: std::time::Duration::from_secs(5),
            ..nachfass::runtime::Limits::for_world(World::Scorer)
        },
    ));
    let answer = good.on_event(&relaxed, 0, &contact(), &event(), &[]).await;
    assert_eq!(
        answer.unwrap().unwrap(),
        ScoreChange {
            delta: 1,
            reasons: vec!["email.opened +1".into()]
        }
    );
    assert_eq!(error.plugin, hostile.id());
    (error.to_string(), error.kind)
}

#[tokio::test]
async fn endless_loop_hits_the_cpu_budget() {
    let (message, kind) = contained(guests::ENDLESS_LOOP).await;
    assert!(
        matches!(kind, RuntimeErrorKind::Fuel { limit: 11_000_000 }),
        "{message}"
    );
    assert_eq!(
        message,
        "plugin endless-loop@0.1.0: CPU budget of 11000000 instructions exceeded"
    );
}

#[tokio::test]
async fn memory_bomb_hits_the_memory_limit() {
    let (message, kind) = contained(guests::MEMORY_BOMB).await;
    assert!(
        matches!(kind, RuntimeErrorKind::Memory { limit_bytes } if limit_bytes == 32 << 20),
        "{message}"
    );
    assert!(message.contains("memory-bomb@0.1.0"), "{message}");
}

#[tokio::test]
async fn deep_recursion_overflows_the_stack() {
    let (message, kind) = contained(guests::DEEP_RECURSION).await;
    assert!(matches!(kind, RuntimeErrorKind::StackOverflow), "{message}");
}

#[tokio::test]
async fn guest_panic_is_reported_with_its_message() {
    let (message, kind) = contained(guests::GUEST_PANIC).await;
    let RuntimeErrorKind::Panicked { message: panic } = kind else {
        panic!("{message}")
    };
    assert!(
        panic.starts_with("scorer gave up on contact c-17 ("),
        "{panic}"
    );
}

#[tokio::test]
async fn huge_output_is_refused() {
    // Building 8 MiB of reasons takes more than the default instruction
    // budget; give it more so the output limit is what stops it.
    let binding = Binding::new("hostile", World::Scorer).with_limits(nachfass::runtime::Limits {
        fuel: 1_000_000_000,
        wall_time: std::time::Duration::from_secs(10),
        ..nachfass::runtime::Limits::for_world(World::Scorer)
    });
    let (message, kind) = contained_by(guests::HUGE_OUTPUT, Arc::new(binding)).await;
    assert!(
        matches!(kind, RuntimeErrorKind::OutputTooLarge { .. }),
        "{message}"
    );
    assert!(message.contains("score reasons"), "{message}");
}

#[tokio::test]
async fn files_environment_sockets_and_clocks_are_out_of_reach() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let runtime = runtime();
    let plugin = load(&runtime, guests::ESCAPE_ATTEMPTS).await;
    let mut probe = event();
    probe.properties.insert(
        "port".into(),
        nachfass::model::Value::Integer(i64::from(port)),
    );
    let binding = Arc::new(Binding::new("escape", World::Scorer).with_limits(
        nachfass::runtime::Limits {
            wall_time: std::time::Duration::from_secs(5),
            ..nachfass::runtime::Limits::for_world(World::Scorer)
        },
    ));
    let now = 1_234_567;
    let report = plugin
        .on_event(&binding, now, &contact(), &probe, &[])
        .await
        .unwrap()
        .unwrap()
        .reasons;
    let line = |prefix: &str| {
        report
            .iter()
            .find(|r| r.starts_with(prefix))
            .cloned()
            .unwrap_or_default()
    };
    assert!(line("fs:").starts_with("fs: refused"), "{report:?}");
    assert!(
        line("fs-write:").starts_with("fs-write: refused"),
        "{report:?}"
    );
    assert_eq!(line("env:"), "env: empty");
    assert!(line("tcp:").starts_with("tcp: refused"), "{report:?}");
    assert!(line("udp:").starts_with("udp: refused"), "{report:?}");
    assert_eq!(
        line("clock:"),
        format!("clock: {now}"),
        "WASI clocks stand at the evaluation time"
    );
    assert!(
        listener.accept().is_err(),
        "nothing connected to the listener"
    );
}

#[tokio::test]
async fn a_rule_that_imports_http_is_rejected_at_load() {
    let err = runtime()
        .load_file(&guests::SNEAKY_RULE.packed())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            LoadError::ForbiddenImport {
                world: World::SegmentRule,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("wasi:http"), "{err}");
}

#[tokio::test]
async fn a_component_of_the_wrong_world_is_rejected_at_load() {
    let mut manifest = guests::ENGAGEMENT.manifest();
    manifest.world = World::SegmentRule;
    let err = runtime()
        .load(guests::ENGAGEMENT.bytes(), manifest)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            LoadError::WrongWorld {
                claimed: World::SegmentRule,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("matches"),
        "names the missing export: {err}"
    );
}

#[tokio::test]
async fn corrupt_bytes_are_rejected_with_a_reason() {
    let manifest = guests::HELLO.manifest();
    let mut bytes = guests::HELLO.bytes();
    bytes.truncate(bytes.len() / 2);
    let err = runtime().load(bytes, manifest.clone()).await.unwrap_err();
    assert!(
        matches!(err, LoadError::Invalid(_) | LoadError::Manifest(_)),
        "{err}"
    );

    let err = runtime()
        .load(b"\0asm\x01\0\0\0".to_vec(), manifest.clone())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("core WebAssembly module, not a component"),
        "{err}"
    );
    let err = runtime()
        .load(b"MZ not wasm at all".to_vec(), manifest)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("magic bytes"), "{err}");
}

#[tokio::test]
async fn a_component_over_the_size_limit_is_refused_before_compiling() {
    let small = Runtime::new(RuntimeConfig {
        limits: RuntimeLimits {
            max_component_bytes: 64 << 10,
            ..RuntimeLimits::default()
        },
        ..RuntimeConfig::default()
    })
    .unwrap();
    let size = guests::HELLO.bytes().len();
    let err = small.load_file(&guests::HELLO.packed()).await.unwrap_err();
    assert!(
        matches!(err, LoadError::TooLarge { limit, .. } if limit == 64 << 10),
        "{err}"
    );

    // Padding a real component past the default 32 MiB limit.
    let padded = manifest::embed(
        &guests::HELLO.bytes(),
        &Manifest {
            description: "x".repeat(33 << 20),
            ..guests::HELLO.manifest()
        },
    )
    .unwrap();
    assert!(padded.len() > size);
    let err = runtime()
        .load(padded, guests::HELLO.manifest())
        .await
        .unwrap_err();
    assert!(
        matches!(err, LoadError::TooLarge { limit, .. } if limit == 32 << 20),
        "{err}"
    );
}

/// The CPU limit counts instructions, not time: with the machine
/// oversubscribed (4 spinning threads per core beside the calls), a healthy
/// scorer never hits it, and the endless loop is still stopped by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_machine_fails_no_healthy_call_and_still_stops_the_loop() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let runtime = runtime();
    let scorer = load(&runtime, guests::B2B_FIT).await;
    let looping = load(&runtime, guests::ENDLESS_LOOP).await;
    let mut c = contact();
    c.attributes.insert(
        "industry".into(),
        nachfass::model::Value::Text("software".into()),
    );
    c.attributes
        .insert("employees".into(), nachfass::model::Value::Integer(120));
    // Default limits, as a binding without limits gets.
    let binding = scorer_binding();

    let stop = Arc::new(AtomicBool::new(false));
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let spinners: Vec<_> = (0..4 * cores)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = 1u64;
                while !stop.load(Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            })
        })
        .collect();

    let mut failures = Vec::new();
    let mut points = std::collections::BTreeSet::new();
    for _ in 0..10_000 {
        match scorer.on_profile(&binding, 0, &c).await {
            Ok(Ok(change)) => {
                points.insert(change.delta);
            }
            Ok(Err(declined)) => failures.push(declined.to_string()),
            Err(limit) => failures.push(limit.to_string()),
        }
    }
    let stopped = looping.on_event(&binding, 0, &c, &event(), &[]).await;
    stop.store(true, Ordering::Relaxed);
    for spinner in spinners {
        spinner.join().unwrap();
    }

    assert_eq!(
        failures.len(),
        0,
        "first failures: {:?}",
        &failures[..failures.len().min(3)]
    );
    assert_eq!(points.len(), 1, "the same answer every time: {points:?}");
    assert!(points.iter().all(|p| *p > 0), "{points:?}");
    let error = stopped.expect_err("the loop is stopped");
    assert!(
        matches!(error.kind, RuntimeErrorKind::Fuel { limit: 11_000_000 }),
        "{error}"
    );
    let stats = scorer.stats();
    let (used, calls) = (
        stats.fuel_used.load(Ordering::Relaxed),
        stats.calls.load(Ordering::Relaxed),
    );
    assert_eq!(calls, 10_000);
    assert!(
        used > 0 && used / calls < 11_000_000,
        "fuel: {used} in {calls} calls"
    );
}
