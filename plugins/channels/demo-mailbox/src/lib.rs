//! The demo's email channel: delivers each message, exactly as a recipient
//! would see it (tracked links, open pixel, unsubscribe headers), as JSON
//! into the mailbox that `nachfass demo` keeps and its dashboard shows.
//! A real connector in every respect but the last hop, so the demo runs
//! without an SMTP server.

use nachfass_sdk::http::{HttpError, Request};
use nachfass_sdk::*;

pub struct DemoMailbox;

/// `text` as a JSON string literal. Written by hand so the plugin depends
/// on the SDK alone.
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn value_text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::Boolean(b) => b.to_string(),
        Value::Integer(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Text(s) => s.clone(),
        Value::Timestamp(t) => t.to_string(),
        Value::Texts(items) => items.join(", "),
    }
}

/// Fields as a JSON object of strings.
fn object(fields: &[Field]) -> String {
    let members: Vec<String> = fields
        .iter()
        .map(|f| {
            format!(
                "{}:{}",
                json_string(&f.key),
                json_string(&value_text(&f.value))
            )
        })
        .collect();
    format!("{{{}}}", members.join(","))
}

fn optional(text: Option<&str>) -> String {
    text.map(json_string).unwrap_or_else(|| "null".to_owned())
}

/// The message as the mailbox stores it.
pub fn body(message: &Message) -> String {
    format!(
        "{{\"idempotency_key\":{},\"to\":{},\"subject\":{},\"text\":{},\"html\":{},\"headers\":{},\"metadata\":{}}}",
        json_string(&message.idempotency_key),
        json_string(&message.to),
        optional(message.subject.as_deref()),
        json_string(&message.text),
        optional(message.html.as_deref()),
        object(&message.headers),
        object(&message.metadata),
    )
}

fn setting(ctx: &Ctx, key: &str) -> Result<String, SendError> {
    ctx.config_required(key)
        .map_err(|e| SendError::Permanent(e.message))
}

impl Channel for DemoMailbox {
    fn describe() -> ChannelInfo {
        ChannelInfo {
            kind: ChannelKind::Email,
            provider: "Demo mailbox".to_owned(),
        }
    }

    fn deliver(ctx: &Ctx, message: &Message) -> Result<Delivery, SendError> {
        let url = setting(ctx, "url")?;
        let token = setting(ctx, "token")?;
        let request = Request::post(&url)
            .header("Content-Type", "application/json")
            .header("Authorization", &format!("Bearer {token}"))
            .header("Idempotency-Key", &message.idempotency_key)
            .body(body(message));
        let response = ctx.http(&request).map_err(|e| match e {
            HttpError::Failed(why) => SendError::Transient(why),
            denied_or_invalid => SendError::Permanent(denied_or_invalid.to_string()),
        })?;
        match response.status {
            200..=299 => Ok(Delivery {
                provider_id: Some(message.idempotency_key.clone()),
            }),
            500..=599 => Err(SendError::Transient(format!(
                "mailbox answered {}",
                response.status
            ))),
            status => Err(SendError::Permanent(format!("mailbox answered {status}"))),
        }
    }
}

export_channel!(DemoMailbox);

#[cfg(test)]
mod tests {
    use super::*;
    use nachfass_sdk::http::Response;
    use nachfass_sdk::testing::TestHost;

    fn message() -> Message {
        Message {
            idempotency_key: "run-1:welcome".into(),
            to: "ada@acme.example".into(),
            subject: Some("Willkommen \"Ada\"".into()),
            text: "Hallo Ada,\n\nC:\\pfad\u{1}".into(),
            html: None,
            headers: vec![Field {
                key: "List-Unsubscribe".into(),
                value: Value::Text("<https://x.example/u/t>".into()),
            }],
            metadata: vec![Field {
                key: "step".into(),
                value: Value::Integer(2),
            }],
        }
    }

    #[test]
    fn delivers_the_message_as_json_with_the_token() {
        let host = TestHost::new()
            .config("url", "http://127.0.0.1:8080/demo/mailbox")
            .config("token", "s3cret")
            .http(|_| Ok(Response::new(202)));
        let delivery = DemoMailbox::deliver(&host.ctx(), &message()).unwrap();
        assert_eq!(delivery.provider_id.as_deref(), Some("run-1:welcome"));
        let request = &host.requests()[0];
        assert_eq!(request.url, "http://127.0.0.1:8080/demo/mailbox");
        assert!(
            request
                .headers
                .iter()
                .any(|(k, v)| k == "Authorization" && v == "Bearer s3cret")
        );
        let body = String::from_utf8(request.body.clone()).unwrap();
        assert_eq!(
            body,
            r#"{"idempotency_key":"run-1:welcome","to":"ada@acme.example","subject":"Willkommen \"Ada\"","text":"Hallo Ada,\n\nC:\\pfad\u0001","html":null,"headers":{"List-Unsubscribe":"<https://x.example/u/t>"},"metadata":{"step":"2"}}"#
        );
    }

    #[test]
    fn a_refusal_is_permanent_and_a_server_error_transient() {
        let refuse = TestHost::new()
            .config("url", "http://127.0.0.1:1/m")
            .config("token", "t")
            .http(|_| Ok(Response::new(401)));
        assert!(matches!(
            DemoMailbox::deliver(&refuse.ctx(), &message()),
            Err(SendError::Permanent(_))
        ));
        let busy = TestHost::new()
            .config("url", "http://127.0.0.1:1/m")
            .config("token", "t")
            .http(|_| Ok(Response::new(503)));
        assert!(matches!(
            DemoMailbox::deliver(&busy.ctx(), &message()),
            Err(SendError::Transient(_))
        ));
        let missing = TestHost::new();
        assert!(matches!(
            DemoMailbox::deliver(&missing.ctx(), &message()),
            Err(SendError::Permanent(why)) if why.contains("url")
        ));
    }
}
