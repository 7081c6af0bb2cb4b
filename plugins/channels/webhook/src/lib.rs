//! POSTs each message as JSON to a configured URL.
//!
//! The receiver verifies `X-Nachfass-Signature: sha256=<hex>`, an
//! HMAC-SHA256 with the shared secret over `<X-Nachfass-Timestamp>.<body>`,
//! and deduplicates on `Idempotency-Key`. Callbacks to
//! `/v1/callbacks/{binding}` are signed the same way and carry
//! `{"events": [{"message_ref", "status", "at", "detail"}]}`.

use hmac::{Hmac, Mac};
use nachfass_sdk::http::{HttpError, Request};
use nachfass_sdk::*;
use serde_json::{Map, Value as Json, json};
use sha2::Sha256;

pub struct Webhook;

pub const SIGNATURE_HEADER: &str = "X-Nachfass-Signature";
pub const TIMESTAMP_HEADER: &str = "X-Nachfass-Timestamp";

fn mac(secret: &str, timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The signature header value for `body` sent at `timestamp`.
pub fn sign(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let digest = mac(secret, timestamp, body).finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

fn verify(secret: &str, timestamp: &str, body: &[u8], signature: &str) -> bool {
    let Some(hex) = signature.strip_prefix("sha256=") else {
        return false;
    };
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    bytes.is_some_and(|bytes| mac(secret, timestamp, body).verify_slice(&bytes).is_ok())
}

fn to_json(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Boolean(b) => json!(b),
        Value::Integer(i) => json!(i),
        Value::Float(f) => json!(f),
        Value::Text(s) => json!(s),
        Value::Timestamp(t) => json!({ "timestamp": t }),
        Value::Texts(items) => json!(items),
    }
}

fn fields(fields: &[Field]) -> Json {
    Json::Object(
        fields
            .iter()
            .map(|f| (f.key.clone(), to_json(&f.value)))
            .collect::<Map<_, _>>(),
    )
}

fn setting(ctx: &Ctx, key: &str) -> Result<String, SendError> {
    ctx.config_required(key)
        .map_err(|e| SendError::Permanent(e.message))
}

impl Channel for Webhook {
    fn describe() -> ChannelInfo {
        ChannelInfo {
            kind: ChannelKind::Webhook,
            provider: "Generic webhook".to_owned(),
        }
    }

    fn deliver(ctx: &Ctx, message: &Message) -> Result<Delivery, SendError> {
        let url = setting(ctx, "url")?;
        let secret = setting(ctx, "secret")?;
        let body = json!({
            "idempotency_key": message.idempotency_key,
            "to": message.to,
            "subject": message.subject,
            "text": message.text,
            "html": message.html,
            "headers": fields(&message.headers),
            "metadata": fields(&message.metadata),
        })
        .to_string();
        let timestamp = ctx.now().to_string();
        let request = Request::post(&url)
            .header("Content-Type", "application/json")
            .header("Idempotency-Key", &message.idempotency_key)
            .header(TIMESTAMP_HEADER, &timestamp)
            .header(
                SIGNATURE_HEADER,
                &sign(&secret, &timestamp, body.as_bytes()),
            )
            .body(body);
        let response = ctx.http(&request).map_err(|e| match e {
            HttpError::Failed(why) => SendError::Transient(why),
            denied_or_invalid => SendError::Permanent(denied_or_invalid.to_string()),
        })?;
        match response.status {
            200..=299 => Ok(Delivery {
                provider_id: response.header("X-Request-Id").map(str::to_owned),
            }),
            429 => Err(SendError::RateLimited(
                response
                    .header("Retry-After")
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(60),
            )),
            408 | 500..=599 => Err(SendError::Transient(format!(
                "receiver answered {}",
                response.status
            ))),
            status => Err(SendError::Permanent(format!("receiver answered {status}"))),
        }
    }

    fn parse_callback(ctx: &Ctx, request: &Callback) -> Result<Vec<DeliveryEvent>, PluginError> {
        let secret: String = ctx.config_required("secret")?;
        let timestamp = request.header(TIMESTAMP_HEADER).unwrap_or_default();
        let signature = request.header(SIGNATURE_HEADER).unwrap_or_default();
        if !verify(&secret, timestamp, &request.body, signature) {
            return Err(PluginError::new(
                "bad-signature",
                "X-Nachfass-Signature does not match the body",
            ));
        }
        let body: Json = serde_json::from_slice(&request.body)
            .map_err(|e| PluginError::new("bad-callback", format!("body is not JSON: {e}")))?;
        let events = body["events"]
            .as_array()
            .ok_or_else(|| PluginError::new("bad-callback", "expected {\"events\": [...]}"))?;
        events
            .iter()
            .map(|event| {
                let status = match event["status"].as_str().unwrap_or_default() {
                    "delivered" => DeliveryStatus::Delivered,
                    "soft_bounce" => DeliveryStatus::SoftBounce,
                    "hard_bounce" => DeliveryStatus::HardBounce,
                    "complaint" => DeliveryStatus::Complaint,
                    "opened" => DeliveryStatus::Opened,
                    "clicked" => DeliveryStatus::Clicked,
                    "unsubscribed" => DeliveryStatus::Unsubscribed,
                    other => {
                        return Err(PluginError::new(
                            "bad-callback",
                            format!("unknown status `{other}`"),
                        ));
                    }
                };
                Ok(DeliveryEvent {
                    message_ref: event["message_ref"]
                        .as_str()
                        .ok_or_else(|| {
                            PluginError::new("bad-callback", "event without message_ref")
                        })?
                        .to_owned(),
                    status,
                    at: event["at"].as_i64().unwrap_or_else(|| ctx.now()),
                    detail: event["detail"].as_str().map(str::to_owned),
                })
            })
            .collect()
    }
}

export_channel!(Webhook);

#[cfg(test)]
mod tests {
    use super::*;
    use nachfass_sdk::http::Response;
    use nachfass_sdk::testing::TestHost;

    fn message() -> Message {
        Message {
            idempotency_key: "run-7:step-2".into(),
            to: "ada@acme.example".into(),
            subject: Some("Willkommen".into()),
            text: "Hallo Ada".into(),
            html: None,
            headers: vec![],
            metadata: vec![Field {
                key: "journey".into(),
                value: Value::Text("welcome".into()),
            }],
        }
    }

    fn host(status: u16) -> TestHost {
        TestHost::new()
            .config("url", "https://crm.example/hook")
            .config("secret", "s3cret")
            .now(1_700_000_000_000)
            .http(move |_| {
                let mut response = Response::new(status);
                response.headers.push(("retry-after".into(), "7".into()));
                response
                    .headers
                    .push(("x-request-id".into(), "rq-1".into()));
                Ok(response)
            })
    }

    #[test]
    fn posts_signed_json_with_the_idempotency_key() {
        let host = host(202);
        let delivery = Webhook::deliver(&host.ctx(), &message()).unwrap();
        assert_eq!(delivery.provider_id.as_deref(), Some("rq-1"));
        let sent = &host.requests()[0];
        assert_eq!(sent.method, "POST");
        assert_eq!(sent.url, "https://crm.example/hook");
        let header = |name: &str| {
            sent.headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(header("Idempotency-Key").as_deref(), Some("run-7:step-2"));
        let signature = header(SIGNATURE_HEADER).unwrap();
        assert!(verify("s3cret", "1700000000000", &sent.body, &signature));
        assert!(!verify("other", "1700000000000", &sent.body, &signature));
        let body: Json = serde_json::from_slice(&sent.body).unwrap();
        assert_eq!(body["subject"], "Willkommen");
        assert_eq!(body["metadata"]["journey"], "welcome");
    }

    #[test]
    fn status_codes_map_to_retry_decisions() {
        assert_eq!(
            Webhook::deliver(&host(429).ctx(), &message()),
            Err(SendError::RateLimited(7))
        );
        assert!(matches!(
            Webhook::deliver(&host(503).ctx(), &message()),
            Err(SendError::Transient(_))
        ));
        assert!(matches!(
            Webhook::deliver(&host(410).ctx(), &message()),
            Err(SendError::Permanent(_))
        ));
        let unconfigured = TestHost::new();
        assert!(
            matches!(Webhook::deliver(&unconfigured.ctx(), &message()), Err(SendError::Permanent(m)) if m.contains("url"))
        );
    }

    #[test]
    fn denied_destinations_are_permanent_and_failures_transient() {
        let denied = host(200).http(|_| Err(HttpError::Denied("not allowed".into())));
        assert!(matches!(
            Webhook::deliver(&denied.ctx(), &message()),
            Err(SendError::Permanent(_))
        ));
        let down = host(200).http(|_| Err(HttpError::Failed("connection refused".into())));
        assert!(matches!(
            Webhook::deliver(&down.ctx(), &message()),
            Err(SendError::Transient(_))
        ));
    }

    #[test]
    fn callbacks_need_a_valid_signature() {
        let host = host(200);
        let body = br#"{"events":[{"message_ref":"rq-1","status":"hard_bounce","at":5,"detail":"550 no such user"}]}"#;
        let callback = |signature: String| Callback {
            method: "POST".into(),
            path: "/v1/callbacks/hook".into(),
            headers: vec![
                (TIMESTAMP_HEADER.into(), "9".into()),
                (SIGNATURE_HEADER.into(), signature),
            ],
            body: body.to_vec(),
        };
        let events =
            Webhook::parse_callback(&host.ctx(), &callback(sign("s3cret", "9", body))).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].status, DeliveryStatus::HardBounce);
        assert_eq!(events[0].detail.as_deref(), Some("550 no such user"));
        let forged =
            Webhook::parse_callback(&host.ctx(), &callback(sign("guess", "9", body))).unwrap_err();
        assert_eq!(forged.code, "bad-signature");
    }
}
