//! The webhook connector against a real HTTP server on 127.0.0.1, with the
//! binding's allow-list enforced by the host.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use nachfass::model::{Callback, DeliveryStatus, Message, SendError};
use nachfass::runtime::{Binding, Limits, Plugin, World};
use nachfass_tests::{HttpSink, guests, runtime};

fn message() -> Message {
    serde_json::from_value(serde_json::json!({
        "idempotency_key": "run-42:step-1",
        "to": "ada@acme.example",
        "subject": "Ihr Whitepaper",
        "text": "Hallo Ada, hier ist Ihr Whitepaper.",
        "metadata": { "journey": "whitepaper-follow-up", "variant": "B" }
    }))
    .unwrap()
}

fn binding(url: &str, allow: &[String]) -> Arc<Binding> {
    let mut binding = Binding::new("crm-hook", World::Channel)
        .with_config("url", url)
        .with_config("secret", "geheim")
        .with_limits(Limits {
            wall_time: Duration::from_secs(5),
            ..Limits::for_world(World::Channel)
        });
    binding.allow_http = allow.to_vec();
    Arc::new(binding)
}

async fn webhook() -> Plugin {
    runtime()
        .load_file(&guests::WEBHOOK.packed())
        .await
        .unwrap()
}

#[tokio::test]
async fn delivers_signed_json_to_an_allowed_host() {
    let sink = HttpSink::start(200).await;
    let plugin = webhook().await;
    let url = format!("http://{}/hooks/nachfass", sink.addr);
    let b = binding(&url, &[sink.addr.to_string()]);
    let now = 1_763_900_000_000;

    let info = plugin.describe(&b, now).await.unwrap();
    assert_eq!(info.provider, "Generic webhook");
    let delivery = plugin.deliver(&b, now, &message()).await.unwrap().unwrap();
    assert_eq!(delivery.provider_id.as_deref(), Some("rq-0"));

    let received = sink.received();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", "/hooks/nachfass")
    );
    assert_eq!(request.header("Idempotency-Key"), Some("run-42:step-1"));
    assert_eq!(
        request.header("X-Nachfass-Timestamp"),
        Some(now.to_string().as_str())
    );
    let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(body["subject"], "Ihr Whitepaper");
    assert_eq!(body["metadata"]["variant"], "B");
    // The receiver can check the signature with the shared secret; the
    // callback parser of the same plugin is such a receiver.
    let callback = Callback {
        method: "POST".into(),
        path: "/v1/callbacks/crm-hook".into(),
        headers: vec![
            ("X-Nachfass-Timestamp".into(), now.to_string()),
            (
                "X-Nachfass-Signature".into(),
                request.header("X-Nachfass-Signature").unwrap().to_owned(),
            ),
        ],
        body: request.body.clone(),
    };
    let verdict = plugin.parse_callback(&b, now, &callback).await.unwrap();
    assert_eq!(
        verdict.unwrap_err().code,
        "bad-callback",
        "the signature holds; the body is no callback"
    );
}

#[tokio::test]
async fn callbacks_are_parsed_and_forgeries_refused() {
    let plugin = webhook().await;
    let b = binding("http://127.0.0.1:9/", &[]);
    let body = br#"{"events":[{"message_ref":"rq-0","status":"hard_bounce","at":7,"detail":"550 5.1.1"}]}"#.to_vec();
    let signature = webhook::sign("geheim", "7", &body);
    let callback = |signature: &str| Callback {
        method: "POST".into(),
        path: "/v1/callbacks/crm-hook".into(),
        headers: vec![
            ("x-nachfass-timestamp".into(), "7".into()),
            ("x-nachfass-signature".into(), signature.into()),
        ],
        body: body.clone(),
    };
    let events = plugin
        .parse_callback(&b, 0, &callback(&signature))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].status, events[0].detail.as_deref()),
        (DeliveryStatus::HardBounce, Some("550 5.1.1"))
    );
    let forged = plugin
        .parse_callback(&b, 0, &callback("sha256=00"))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(forged.code, "bad-signature");
}

#[tokio::test]
async fn hosts_off_the_allow_list_are_denied_before_connecting() {
    let sink = HttpSink::start(200).await;
    let plugin = webhook().await;
    let url = format!("http://{}/hooks/nachfass", sink.addr);
    for allow in [
        vec![],
        vec!["crm.example.com".to_owned()],
        vec![format!("127.0.0.1:{}", sink.addr.port() + 1)],
    ] {
        let answer = plugin
            .deliver(&binding(&url, &allow), 0, &message())
            .await
            .unwrap();
        let Err(SendError::Permanent(why)) = answer else {
            panic!("{answer:?}")
        };
        assert!(why.contains("denied"), "{why}");
    }
    assert!(sink.received().is_empty(), "no request reached the server");
}

#[tokio::test]
async fn receiver_status_codes_become_retry_decisions() {
    let plugin = webhook().await;
    for (status, expected) in [(429, "rate"), (503, "transient"), (404, "permanent")] {
        let sink = HttpSink::start(status).await;
        let url = format!("http://{}/in", sink.addr);
        let answer = plugin
            .deliver(&binding(&url, &[sink.addr.to_string()]), 0, &message())
            .await
            .unwrap();
        match (expected, answer) {
            ("rate", Err(SendError::RateLimited(9))) => {}
            ("transient", Err(SendError::Transient(_))) => {}
            ("permanent", Err(SendError::Permanent(_))) => {}
            (_, other) => panic!("{status}: {other:?}"),
        }
    }
}

/// A version that declares its hosts (`http_hosts`) reaches only those,
/// whatever its binding allows: the declaration an admin approved holds.
#[tokio::test]
async fn a_binding_reaches_only_hosts_the_plugin_declares() {
    let sink = HttpSink::start(200).await;
    let url = format!("http://{}/hooks/nachfass", sink.addr);
    let allowed = binding(&url, &[sink.addr.to_string()]);
    let declaring = |hosts: Vec<String>| {
        let mut manifest = guests::WEBHOOK.manifest();
        manifest.http_hosts = hosts;
        let bytes =
            nachfass::runtime::manifest::embed(&guests::WEBHOOK.bytes(), &manifest).unwrap();
        async move { runtime().load(bytes, manifest).await.unwrap() }
    };

    let elsewhere = declaring(vec!["crm.example.com".to_owned()]).await;
    let answer = elsewhere.deliver(&allowed, 0, &message()).await.unwrap();
    let Err(SendError::Permanent(why)) = answer else {
        panic!("{answer:?}")
    };
    assert!(why.contains("denied"), "{why}");
    assert!(sink.received().is_empty(), "no request reached the server");

    let here = declaring(vec![sink.addr.to_string()]).await;
    let delivery = here.deliver(&allowed, 0, &message()).await.unwrap();
    assert!(delivery.is_ok(), "{delivery:?}");
    assert_eq!(sink.received().len(), 1);
}

/// Deliveries reuse the connection to a provider: three messages in a row
/// to a keep-alive server open one connection, not three.
#[tokio::test]
async fn deliveries_reuse_one_connection() {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::serve::ListenerExt;

    let connections = Arc::new(AtomicUsize::new(0));
    let opened = connections.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let listener = listener.tap_io(move |_| {
        opened.fetch_add(1, Ordering::SeqCst);
    });
    let app = axum::Router::new().route("/hook", axum::routing::post(|| async { "ok" }));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let plugin = webhook().await;
    let b = binding(&format!("http://{addr}/hook"), &[addr.to_string()]);
    for n in 0..3 {
        let mut m = message();
        m.idempotency_key = format!("run-42:step-{n}");
        let delivered = plugin.deliver(&b, 1_763_900_000_000, &m).await.unwrap();
        assert!(delivered.is_ok(), "message {n}: {delivered:?}");
    }
    assert_eq!(connections.load(Ordering::SeqCst), 1);
    server.abort();
}
