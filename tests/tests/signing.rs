//! Signed plugin bundles: `plugin keygen | pack | verify` on real
//! components, and a server that accepts only what its trust policy allows
//! (on SQLite and PostgreSQL).

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use nachfass::api::{AppState, app};
use nachfass::clock::ManualClock;
use nachfass::runtime::Registry;
use nachfass::runtime::signature::{self, PublisherKey, SignaturePolicy};
use nachfass::store::{Scope, Store};
use nachfass_tests::{TempStore, guests, nachfass_cli, signing_runtime, stores};
use serde_json::{Value, json};
use tower::ServiceExt;

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test]
async fn keygen_pack_and_verify_a_real_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("acme.key");
    let (result, public_key) = nachfass_cli(&[
        "plugin",
        "keygen",
        "--publisher",
        "acme-agency",
        "--out",
        path(&key_file),
    ])
    .await;
    result.unwrap();
    let public_key = public_key.trim().to_owned();
    assert!(public_key.starts_with("ed25519:"), "{public_key}");
    // The key file is private, and never overwritten.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "mode {mode:o}");
    }
    let (again, _) = nachfass_cli(&[
        "plugin",
        "keygen",
        "--publisher",
        "acme-agency",
        "--out",
        path(&key_file),
    ])
    .await;
    assert!(again.unwrap_err().to_string().contains("never overwrites"));

    let bundle = dir.path().join("engagement.signed.wasm");
    let (result, out) = nachfass_cli(&[
        "plugin",
        "pack",
        path(&guests::ENGAGEMENT.packed()),
        "--key",
        path(&key_file),
        "--out",
        path(&bundle),
    ])
    .await;
    result.unwrap();
    assert!(out.contains("signed by acme-agency"), "{out}");

    let (result, out) =
        nachfass_cli(&["plugin", "verify", path(&bundle), "--trust", &public_key]).await;
    result.unwrap();
    assert!(
        out.contains("signature valid, publisher acme-agency"),
        "{out}"
    );
    assert!(out.contains("the key is trusted"), "{out}");

    // A bundle is still a plugin: check and test load it as before.
    let (result, out) = nachfass_cli(&["plugin", "check", path(&bundle)]).await;
    result.unwrap();
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["plugin"], "engagement@0.1.0");

    // Another key is not trusted; a changed byte is caught.
    let other = PublisherKey::generate("acme-agency").unwrap();
    let (result, _) = nachfass_cli(&[
        "plugin",
        "verify",
        path(&bundle),
        "--trust",
        &other.public_key.to_string(),
    ])
    .await;
    assert!(result.unwrap_err().to_string().contains("does not trust"));
    let mut bytes = std::fs::read(&bundle).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    let tampered = dir.path().join("tampered.wasm");
    std::fs::write(&tampered, bytes).unwrap();
    let (result, _) = nachfass_cli(&["plugin", "verify", path(&tampered)]).await;
    assert!(
        result
            .unwrap_err()
            .to_string()
            .contains("changed after it was signed")
    );
    let (result, _) = nachfass_cli(&["plugin", "check", path(&tampered)]).await;
    assert!(result.is_err(), "a tampered bundle must not load anywhere");
}

struct Server {
    router: axum::Router,
    admin: String,
    store: Store,
    temp: TempStore,
}

async fn server(dialect: &str, signatures: SignaturePolicy) -> Server {
    let (_, store, temp) = stores()
        .await
        .into_iter()
        .find(|(d, ..)| *d == dialect)
        .unwrap();
    let runtime = signing_runtime(&store, signatures).await;
    let (_, admin) = store
        .create_api_key("admin", &[Scope::Admin], 0)
        .await
        .unwrap();
    let pipeline = nachfass_tests::world::pipeline(
        store.clone(),
        Arc::new(Registry::new(runtime)),
        Arc::new(ManualClock::new(1_700_000_000_000)),
    );
    Server {
        router: app(AppState::new(pipeline, None)),
        admin,
        store,
        temp,
    }
}

impl Server {
    async fn call(&self, method: &str, uri: &str, body: Body, json: bool) -> (StatusCode, Value) {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {}", self.admin));
        if json {
            request = request.header("content-type", "application/json");
        }
        let response = self
            .router
            .clone()
            .oneshot(request.body(body).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn upload(&self, bytes: Vec<u8>) -> (StatusCode, Value) {
        self.call("POST", "/v1/plugins", Body::from(bytes), false)
            .await
    }

    async fn trust(&self, key: &PublisherKey) -> (StatusCode, Value) {
        let body = json!({ "public_key": key.public_key.to_string(), "publisher": key.publisher });
        self.call(
            "POST",
            "/v1/trusted-keys",
            Body::from(body.to_string()),
            true,
        )
        .await
    }

    async fn signed_by(&self, name: &str) -> Value {
        let (_, list) = self.call("GET", "/v1/plugins", Body::empty(), false).await;
        list["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .map(|p| p["signed_by"].clone())
            .unwrap_or(Value::Null)
    }

    async fn finish(self) {
        self.temp.cleanup(self.store).await;
    }
}

fn error_message(body: &Value) -> String {
    body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn trusted_bundles_install_and_everything_else_is_refused(dialect: &str) {
    let server = server(dialect, SignaturePolicy::Required).await;
    let acme = PublisherKey::generate("acme").unwrap();
    let stranger = PublisherKey::generate("acme").unwrap();
    let packed = std::fs::read(guests::ENGAGEMENT.packed()).unwrap();
    let bundle = signature::sign(&packed, &acme).unwrap();

    // Before the key is trusted: refused, naming the key and the fix.
    let (status, body) = server.upload(bundle.clone()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(error_message(&body).contains("does not trust"), "{body}");
    assert!(error_message(&body).contains(&acme.public_key.to_string()));

    let (status, body) = server.trust(&acme).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _) = server.trust(&acme).await;
    assert_eq!(status, StatusCode::OK, "trusting twice changes nothing");

    // One changed byte in the component, then in the manifest.
    let code_at = bundle.len() / 3;
    let manifest_at = bundle
        .windows(b"engagement".len())
        .rposition(|w| w == b"engagement")
        .unwrap();
    for at in [code_at, manifest_at] {
        let mut tampered = bundle.clone();
        tampered[at] ^= 1;
        let (status, body) = server.upload(tampered).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "byte {at}: {body}"
        );
        assert!(
            error_message(&body).contains("changed after it was signed"),
            "byte {at}: {body}"
        );
    }

    // Signed by a key nobody trusts (claiming the same publisher name).
    let (status, body) = server
        .upload(signature::sign(&packed, &stranger).unwrap())
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(error_message(&body).contains("does not trust"), "{body}");

    // Unsigned, while signatures are required.
    let (status, body) = server.upload(packed.clone()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(error_message(&body).contains("not signed"), "{body}");

    // Nothing of the refused uploads was installed.
    assert_eq!(server.signed_by("engagement").await, Value::Null);

    let (status, body) = server.upload(bundle).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        server.signed_by("engagement").await,
        json!({ "0.1.0": "acme" })
    );

    // The trust change is in the audit log, with who made it.
    let audit = server
        .store
        .audit_by_action("trust.key_added", 10)
        .await
        .unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].detail["publisher"], "acme");

    // Removing the key: installed versions stay, new uploads are refused.
    let uri = format!("/v1/trusted-keys/{}", acme.public_key);
    let (status, _) = server.call("DELETE", &uri, Body::empty(), false).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let hello = signature::sign(&std::fs::read(guests::HELLO.packed()).unwrap(), &acme).unwrap();
    let (status, _) = server.upload(hello).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        server
            .store
            .audit_by_action("trust.key_removed", 10)
            .await
            .unwrap()
            .len(),
        1
    );
    server.finish().await;
}

async fn optional_signatures_accept_unsigned_uploads_marked_as_such(dialect: &str) {
    let server = server(dialect, SignaturePolicy::Optional).await;
    let (status, body) = server
        .upload(std::fs::read(guests::HELLO.packed()).unwrap())
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(server.signed_by("hello").await, json!({ "0.1.0": null }));
    // Optional never means "any signature": an untrusted one is refused.
    let stranger = PublisherKey::generate("someone").unwrap();
    let bundle = signature::sign(
        &std::fs::read(guests::ENGAGEMENT.packed()).unwrap(),
        &stranger,
    )
    .unwrap();
    let (status, body) = server.upload(bundle).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    // A malformed key is a clear 422, and changes nothing.
    let (status, body) = server
        .call(
            "POST",
            "/v1/trusted-keys",
            Body::from(json!({ "public_key": "ed25519:1234", "publisher": "x" }).to_string()),
            true,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(error_message(&body).contains("64 hex digits"), "{body}");
    assert!(server.store.trusted_keys().await.unwrap().is_empty());
    server.finish().await;
}

macro_rules! per_dialect {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $name() { super::$name("sqlite").await })*
        }
        mod postgres {
            $(#[tokio::test] async fn $name() { super::$name("postgres").await })*
        }
    };
}

per_dialect!(
    trusted_bundles_install_and_everything_else_is_refused,
    optional_signatures_accept_unsigned_uploads_marked_as_such,
);
