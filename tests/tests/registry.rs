//! Hot swap, rollback, the watched plugins directory and the artifact cache.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nachfass::model::{Contact, Event};
use nachfass::runtime::registry::{Activation, RegistryError};
use nachfass::runtime::watch::PluginDir;
use nachfass::runtime::{Binding, Limits, Manifest, Registry, Runtime, RuntimeConfig, World};
use nachfass_tests::{guests, runtime};

fn contact() -> Contact {
    serde_json::from_value(serde_json::json!({ "id": "c" })).unwrap()
}

fn event() -> Event {
    serde_json::from_value(
        serde_json::json!({ "id": "e", "contact_id": "c", "kind": "x", "at": 1 }),
    )
    .unwrap()
}

fn binding() -> Arc<Binding> {
    Arc::new(Binding::new("swap", World::Scorer).with_limits(Limits {
        wall_time: Duration::from_secs(5),
        ..Limits::for_world(World::Scorer)
    }))
}

/// version-tag 1.0.0 and 2.0.0 under one plugin name.
fn tagged(version: u8) -> (Vec<u8>, Manifest) {
    let guest = if version == 1 {
        guests::VERSION_TAG
    } else {
        guests::VERSION_TAG_NEXT
    };
    let mut manifest = guest.manifest();
    manifest.name = "version-tag".into();
    (guest.bytes(), manifest)
}

async fn live_version(registry: &Registry) -> String {
    let plugin = registry.live("version-tag").expect("installed");
    let change = plugin
        .on_event(&binding(), 0, &contact(), &event(), &[])
        .await
        .unwrap()
        .unwrap();
    change.reasons[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_swap_under_load_loses_no_call() {
    let registry = Arc::new(Registry::new(runtime()));
    let (bytes, manifest) = tagged(1);
    registry
        .install(bytes, manifest, Activation::Now)
        .await
        .unwrap();
    let v2 = registry
        .runtime()
        .load(tagged(2).0, tagged(2).1)
        .await
        .unwrap();

    let swapping = Arc::new(AtomicBool::new(true));
    let caller = {
        let (registry, swapping) = (registry.clone(), swapping.clone());
        tokio::spawn(async move {
            let mut answers = Vec::new();
            while swapping.load(Ordering::Relaxed) || answers.len() < 200 {
                // Take the live version once per call: the call finishes on
                // the version it started with, whatever happens meanwhile.
                let plugin = registry.live("version-tag").unwrap();
                let change = plugin
                    .on_event(&binding(), 0, &contact(), &event(), &[])
                    .await;
                let change = change.expect("no call fails during a swap").unwrap();
                assert_eq!(change.reasons.len(), 1);
                assert_eq!(
                    change.delta.to_string(),
                    change.reasons[0].split('.').next().unwrap().to_owned()
                );
                answers.push(change.reasons[0].clone());
            }
            answers
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    registry.add(v2, Activation::Now).unwrap();
    // The swaps come from a plain OS thread while the calls run on the
    // async workers.
    let swapper = {
        let registry = registry.clone();
        std::thread::spawn(move || {
            for _ in 0..100 {
                std::thread::sleep(Duration::from_millis(2));
                registry.rollback("version-tag").unwrap();
            }
            registry.activate("version-tag", "2.0.0").unwrap();
        })
    };
    tokio::task::spawn_blocking(move || swapper.join().unwrap())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    swapping.store(false, Ordering::Relaxed);
    let answers = caller.await.unwrap();

    assert!(
        answers.iter().all(|a| a == "1.0.0" || a == "2.0.0"),
        "{answers:?}"
    );
    assert!(answers.contains(&"1.0.0".to_owned()) && answers.contains(&"2.0.0".to_owned()));
    assert_eq!(
        answers.last().unwrap(),
        "2.0.0",
        "the last activation holds"
    );
}

#[tokio::test]
async fn activate_rollback_and_refusals() {
    let registry = Registry::new(runtime());
    let (bytes, manifest) = tagged(1);
    let installed = registry
        .install(bytes.clone(), manifest.clone(), Activation::Now)
        .await
        .unwrap();
    assert!(installed.live && !installed.unchanged);
    assert!(matches!(
        registry.rollback("version-tag"),
        Err(RegistryError::NothingToRollBack(_))
    ));

    let (bytes2, manifest2) = tagged(2);
    let later = registry
        .install(bytes2, manifest2, Activation::Later)
        .await
        .unwrap();
    assert!(!later.live);
    assert_eq!(live_version(&registry).await, "1.0.0");
    registry.activate("version-tag", "2.0.0").unwrap();
    assert_eq!(live_version(&registry).await, "2.0.0");
    registry.rollback("version-tag").unwrap();
    assert_eq!(live_version(&registry).await, "1.0.0");
    registry.rollback("version-tag").unwrap();
    assert_eq!(live_version(&registry).await, "2.0.0");

    // Re-installing the same bytes is a no-op; other bytes under a used version are refused.
    assert!(
        registry
            .install(bytes, manifest.clone(), Activation::Now)
            .await
            .unwrap()
            .unchanged
    );
    let err = registry
        .install(guests::ENGAGEMENT.bytes(), manifest, Activation::Now)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Conflict { .. }), "{err}");
    // A new version may not change the world.
    let mut rule = guests::HELLO.manifest();
    rule.name = "version-tag".into();
    rule.version = "3.0.0".into();
    let err = registry
        .install(guests::HELLO.bytes(), rule, Activation::Now)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::WorldChanged { .. }), "{err}");
    assert!(matches!(
        registry.activate("version-tag", "9.9.9"),
        Err(RegistryError::UnknownVersion { .. })
    ));
    assert!(matches!(
        registry.activate("nope", "1.0.0"),
        Err(RegistryError::UnknownPlugin(_))
    ));

    let listed = registry.list();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].live.as_str(), listed[0].versions.len()),
        ("2.0.0", 2)
    );
}

fn write_packed(dir: &Path, file: &str, bytes: Vec<u8>, manifest: &Manifest) {
    let packed = nachfass::runtime::manifest::embed(&bytes, manifest).unwrap();
    std::fs::write(dir.join(file), packed).unwrap();
}

#[tokio::test]
async fn watched_directory_takes_new_versions_and_reports_broken_files() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::new(runtime());
    let mut watched = PluginDir::new(dir.path());
    assert!(watched.scan(&registry).await.is_empty());

    let (bytes, manifest) = tagged(1);
    write_packed(dir.path(), "tag-1.wasm", bytes, &manifest);
    let reports = watched.scan(&registry).await;
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].outcome.as_deref(), Ok("version-tag@1.0.0 live"));

    std::fs::write(dir.path().join("broken.wasm"), b"\0asm\x0d\0\x01\0garbage").unwrap();
    let reports = watched.scan(&registry).await;
    assert_eq!(reports.len(), 1, "only the new file is looked at");
    assert!(reports[0].outcome.is_err());
    assert_eq!(
        live_version(&registry).await,
        "1.0.0",
        "a broken file leaves the live version"
    );

    let (bytes, manifest) = tagged(2);
    write_packed(dir.path(), "tag-2.wasm", bytes, &manifest);
    watched.scan(&registry).await;
    assert_eq!(live_version(&registry).await, "2.0.0");
    assert!(
        watched.scan(&registry).await.is_empty(),
        "unchanged files are not reloaded"
    );

    // A restart reads the whole directory and lands on the newest version.
    let restarted = Registry::new(runtime());
    let reports = PluginDir::new(dir.path()).scan(&restarted).await;
    assert_eq!(reports.len(), 3);
    assert_eq!(live_version(&restarted).await, "2.0.0");
}

#[tokio::test]
async fn the_watcher_task_installs_dropped_files() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Arc::new(Registry::new(runtime()));
    let task = PluginDir::new(dir.path()).spawn(registry.clone(), Duration::from_millis(20));
    let (bytes, manifest) = tagged(1);
    write_packed(dir.path(), "tag.wasm", bytes, &manifest);
    let mut waited = 0;
    while registry.live("version-tag").is_none() && waited < 500 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += 1;
    }
    assert_eq!(live_version(&registry).await, "1.0.0");
    task.abort();
}

#[tokio::test]
async fn compiled_artifacts_are_reused_across_restarts() {
    let cache = tempfile::tempdir().unwrap();
    let config = RuntimeConfig {
        cache_dir: Some(cache.path().to_owned()),
        ..RuntimeConfig::default()
    };
    let first = Runtime::new(config.clone())
        .unwrap()
        .load_file(&guests::ENGAGEMENT.packed())
        .await
        .unwrap();
    assert!(!first.from_cache());
    let second = Runtime::new(config)
        .unwrap()
        .load_file(&guests::ENGAGEMENT.packed())
        .await
        .unwrap();
    assert!(second.from_cache());
    assert_eq!(first.hash(), second.hash());
    let answer = second
        .on_event(&binding(), 0, &contact(), &event(), &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        answer.delta, 0,
        "kind `x` scores nothing, from the cached code too"
    );

    // A damaged artifact is dropped and compiled again, not trusted.
    for entry in std::fs::read_dir(cache.path()).unwrap() {
        std::fs::write(entry.unwrap().path(), b"garbage").unwrap();
    }
    let config = RuntimeConfig {
        cache_dir: Some(cache.path().to_owned()),
        ..RuntimeConfig::default()
    };
    let third = Runtime::new(config)
        .unwrap()
        .load_file(&guests::ENGAGEMENT.packed())
        .await
        .unwrap();
    assert!(!third.from_cache());
}
