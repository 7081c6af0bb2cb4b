//! Plugins through a real OCI registry on 127.0.0.1 (Debian's
//! `docker-registry`, installed by `tests/run`): push and pull with the CLI,
//! and a server installing a signed plugin by reference from an allowed
//! registry, on SQLite and PostgreSQL.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use nachfass::api::{AppState, OciSettings, app};
use nachfass::clock::ManualClock;
use nachfass::oci::{AllowedRegistries, OciClient};
use nachfass::runtime::Registry;
use nachfass::runtime::signature::{self, PublisherKey, SignaturePolicy};
use nachfass::store::Scope;
use nachfass_tests::{guests, nachfass_cli, signing_runtime, stores};
use serde_json::{Value, json};
use tower::ServiceExt;

/// A registry process with its storage in a temp dir; killed on drop.
struct LocalRegistry {
    child: Child,
    address: String,
    _storage: tempfile::TempDir,
}

impl LocalRegistry {
    async fn start() -> LocalRegistry {
        let storage = tempfile::tempdir().unwrap();
        let address = format!("127.0.0.1:{}", nachfass_tests::server::free_port());
        let config = storage.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {address}\n",
                storage.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry (Debian package docker-registry) is installed by tests/run");
        let registry = LocalRegistry {
            child,
            address,
            _storage: storage,
        };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(&registry.address)
                .await
                .is_ok()
            {
                return registry;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("docker-registry did not listen on {}", registry.address);
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test]
async fn push_and_pull_a_signed_bundle_with_the_cli() {
    let registry = LocalRegistry::start().await;
    let dir = tempfile::tempdir().unwrap();
    let key = PublisherKey::generate("acme").unwrap();
    let bundle =
        signature::sign(&std::fs::read(guests::ENGAGEMENT.packed()).unwrap(), &key).unwrap();
    let file = dir.path().join("engagement.signed.wasm");
    std::fs::write(&file, &bundle).unwrap();
    let reference = format!("{}/acme/engagement:0.1.0", registry.address);

    let (result, out) = nachfass_cli(&["plugin", "push", path(&file), &reference]).await;
    result.unwrap();
    assert!(out.contains("pushed"), "{out}");

    let pulled = dir.path().join("pulled.wasm");
    let (result, out) = nachfass_cli(&["plugin", "pull", &reference, "--out", path(&pulled)]).await;
    result.unwrap();
    assert!(out.contains("signed by acme"), "{out}");
    assert_eq!(std::fs::read(&pulled).unwrap(), bundle, "byte for byte");

    // The artifact follows the WebAssembly OCI layout (what wkg reads).
    let manifest: Value = reqwest_free_get(
        &registry.address,
        "/v2/acme/engagement/manifests/0.1.0",
        "application/vnd.oci.image.manifest.v1+json",
    )
    .await;
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.wasm.config.v0+json"
    );
    assert_eq!(manifest["layers"][0]["mediaType"], "application/wasm");
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 1);
    assert_eq!(
        manifest["annotations"]["org.opencontainers.image.version"],
        "0.1.0"
    );

    let (result, _) = nachfass_cli(&[
        "plugin",
        "pull",
        &format!("{}/acme/nothing-here:1.0.0", registry.address),
        "--out",
        path(&dir.path().join("missing.wasm")),
    ])
    .await;
    assert!(result.is_err());
}

/// A GET over a plain TCP connection: enough HTTP/1.1 for one JSON document.
async fn reqwest_free_get(address: &str, path: &str, accept: &str) -> Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    serde_json::from_str(body).unwrap()
}

async fn install_by_reference_from_an_allowed_registry_only(dialect: &str) {
    let registry = LocalRegistry::start().await;
    let (_, store, temp) = stores()
        .await
        .into_iter()
        .find(|(d, ..)| *d == dialect)
        .unwrap();
    let key = PublisherKey::generate("acme").unwrap();
    store
        .trust_key(&key.public_key.to_string(), "acme", "test", 0)
        .await
        .unwrap();
    let runtime = signing_runtime(&store, SignaturePolicy::Required).await;
    let (_, admin) = store
        .create_api_key("admin", &[Scope::Admin], 0)
        .await
        .unwrap();
    let pipeline = nachfass_tests::world::pipeline(
        store.clone(),
        Arc::new(Registry::new(runtime)),
        Arc::new(ManualClock::new(1_700_000_000_000)),
    );
    let mut state = AppState::new(pipeline, None);
    state.oci = OciSettings {
        allowed: AllowedRegistries(vec![registry.address.clone()]),
        client: OciClient::new(None),
    };
    let router = app(state);
    let pull = |reference: String| {
        let router = router.clone();
        let admin = admin.clone();
        async move {
            let request = Request::builder()
                .method("POST")
                .uri("/v1/plugins/pull")
                .header("authorization", format!("Bearer {admin}"))
                .header("content-type", "application/json")
                .body(Body::from(json!({ "reference": reference }).to_string()))
                .unwrap();
            let response = router.oneshot(request).await.unwrap();
            let status = response.status();
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            (status, serde_json::from_slice::<Value>(&bytes).unwrap())
        }
    };

    // Publish a signed and an unsigned plugin to the registry.
    let client = OciClient::new(None);
    let signed_ref = format!("{}/acme/engagement:0.1.0", registry.address);
    let signed =
        signature::sign(&std::fs::read(guests::ENGAGEMENT.packed()).unwrap(), &key).unwrap();
    client
        .push(&signed_ref.parse().unwrap(), &signed)
        .await
        .unwrap();
    let unsigned_ref = format!("{}/acme/hello:0.1.0", registry.address);
    client
        .push(
            &unsigned_ref.parse().unwrap(),
            &std::fs::read(guests::HELLO.packed()).unwrap(),
        )
        .await
        .unwrap();

    let (status, body) = pull(signed_ref.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["plugin"], "engagement@0.1.0");
    assert_eq!(body["signed_by"], "acme");

    // An upgrade that reads a new configuration key is installed from the
    // registry but waits for an admin's approval.
    let mut next = guests::ENGAGEMENT.manifest();
    next.version = "0.2.0".into();
    next.config.push(nachfass::runtime::manifest::ConfigKey {
        key: "campaign".into(),
        description: String::new(),
        required: false,
    });
    let next_ref = format!("{}/acme/engagement:0.2.0", registry.address);
    let upgrade = nachfass::runtime::manifest::embed(&guests::ENGAGEMENT.bytes(), &next).unwrap();
    client
        .push(
            &next_ref.parse().unwrap(),
            &signature::sign(&upgrade, &key).unwrap(),
        )
        .await
        .unwrap();
    let (status, body) = pull(next_ref).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{dialect}: {body}");
    assert_eq!(body["live"], false, "{body}");
    assert_eq!(
        body["review"]["needs_approval"]["config"],
        json!(["campaign"]),
        "{body}"
    );

    // Signatures are required here: the unsigned one is refused.
    let (status, body) = pull(unsigned_ref).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not signed")
    );

    // The same registry under another name is not on the allow-list, and
    // neither is anything else; nothing is fetched.
    let port = registry.address.rsplit_once(':').unwrap().1;
    for reference in [
        format!("localhost:{port}/acme/engagement:0.1.0"),
        "ghcr.io/acme/engagement:0.1.0".to_owned(),
    ] {
        let (status, body) = pull(reference.clone()).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{reference}: {body}"
        );
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("is not allowed"), "{message}");
        assert!(message.contains(&registry.address), "{message}");
    }
    let (status, body) = pull("not a reference!".into()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    temp.cleanup(store).await;
}

#[tokio::test]
async fn install_by_reference_from_an_allowed_registry_only_sqlite() {
    install_by_reference_from_an_allowed_registry_only("sqlite").await;
}

#[tokio::test]
async fn install_by_reference_from_an_allowed_registry_only_postgres() {
    install_by_reference_from_an_allowed_registry_only("postgres").await;
}
