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
            cpu_time: std::time::Duration::from_secs(2),
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
async fn endless_loop_hits_the_cpu_limit() {
    let (message, kind) = contained(guests::ENDLESS_LOOP).await;
    assert!(
        matches!(kind, RuntimeErrorKind::CpuTime { limit_ms: 10 }),
        "{message}"
    );
    assert_eq!(
        message,
        "plugin endless-loop@0.1.0: CPU time limit of 10 ms exceeded"
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
    // Copying 8 MiB out of the guest takes longer than the default 10 ms of
    // CPU in a debug build; give it time so the output limit is what stops it.
    let binding = Binding::new("hostile", World::Scorer).with_limits(nachfass::runtime::Limits {
        cpu_time: std::time::Duration::from_secs(5),
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
            cpu_time: std::time::Duration::from_secs(2),
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
