//! Sends each message's text as an SMS through a generic form-POST gateway
//! (`To`, `From`, `Body`, as Twilio and most gateways take them), with HTTP
//! basic auth. 429 is a rate limit (its `Retry-After` is honoured), 5xx a
//! transient error, any other refusal permanent. Delivery reports posted to
//! `/v1/callbacks/{binding}` as form fields (`MessageSid`, `MessageStatus`)
//! become delivery events.

use nachfass_sdk::http::{HttpError, Request};
use nachfass_sdk::*;

pub struct SmsHttp;

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                BASE64[((n >> (18 - 6 * i)) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_encode(value: &str) -> String {
    let mut out = String::new();
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

fn form_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&value[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn setting(ctx: &Ctx, key: &str) -> Result<String, SendError> {
    ctx.config_required(key)
        .map_err(|e| SendError::Permanent(e.message))
}

impl Channel for SmsHttp {
    fn describe() -> ChannelInfo {
        ChannelInfo {
            kind: ChannelKind::Sms,
            provider: "HTTP SMS gateway".to_owned(),
        }
    }

    fn deliver(ctx: &Ctx, message: &Message) -> Result<Delivery, SendError> {
        let url = setting(ctx, "url")?;
        let from = setting(ctx, "from")?;
        let max: usize = ctx
            .config_or("max_length", 612)
            .map_err(|e| SendError::Permanent(e.message))?;
        if message.text.chars().count() > max {
            return Err(SendError::Permanent(format!(
                "the text has {} characters, more than max_length {max}",
                message.text.chars().count()
            )));
        }
        let body = format!(
            "To={}&From={}&Body={}",
            form_encode(&message.to),
            form_encode(&from),
            form_encode(&message.text)
        );
        let mut request = Request::post(&url)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("Idempotency-Key", &message.idempotency_key)
            .body(body);
        if let (Some(account), Some(token)) = (ctx.config("account"), ctx.config("token")) {
            let credentials = base64(format!("{account}:{token}").as_bytes());
            request = request.header("Authorization", &format!("Basic {credentials}"));
        }
        let response = ctx.http(&request).map_err(|e| match e {
            HttpError::Failed(why) => SendError::Transient(why),
            other => SendError::Permanent(other.to_string()),
        })?;
        match response.status {
            200..=299 => {
                let json: serde_json::Value =
                    serde_json::from_slice(&response.body).unwrap_or_default();
                Ok(Delivery {
                    provider_id: json["sid"]
                        .as_str()
                        .or(json["id"].as_str())
                        .map(str::to_owned),
                })
            }
            429 => Err(SendError::RateLimited(
                response
                    .header("Retry-After")
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(60),
            )),
            500..=599 => Err(SendError::Transient(format!(
                "gateway answered {}",
                response.status
            ))),
            status => Err(SendError::Permanent(format!(
                "gateway answered {status}: {}",
                String::from_utf8_lossy(&response.body)
                    .chars()
                    .take(200)
                    .collect::<String>()
            ))),
        }
    }

    fn parse_callback(ctx: &Ctx, request: &Callback) -> Result<Vec<DeliveryEvent>, PluginError> {
        let body = String::from_utf8_lossy(&request.body);
        let field = |name: &str| {
            body.split('&')
                .filter_map(|pair| pair.split_once('='))
                .find(|(k, _)| *k == name)
                .map(|(_, v)| form_decode(v))
        };
        let sid = field("MessageSid")
            .ok_or_else(|| PluginError::new("bad-callback", "no MessageSid field"))?;
        let status = match field("MessageStatus").as_deref() {
            Some("delivered") => DeliveryStatus::Delivered,
            Some("undelivered") => DeliveryStatus::SoftBounce,
            Some("failed") => DeliveryStatus::HardBounce,
            // queued, sent, …: nothing to report yet.
            _ => return Ok(vec![]),
        };
        Ok(vec![DeliveryEvent {
            message_ref: sid,
            status,
            at: ctx.now(),
            detail: field("ErrorCode"),
        }])
    }
}

export_channel!(SmsHttp);

#[cfg(test)]
mod tests {
    use super::*;
    use nachfass_sdk::http::Response;
    use nachfass_sdk::testing::TestHost;

    fn message(text: &str) -> Message {
        Message {
            idempotency_key: "nf-1".into(),
            to: "+49 151 2345678".into(),
            subject: None,
            text: text.into(),
            html: None,
            headers: vec![],
            metadata: vec![],
        }
    }

    fn host(status: u16, body: &'static str) -> TestHost {
        TestHost::new()
            .config("url", "https://api.sms.example/Messages.json")
            .config("from", "Shop")
            .config("account", "AC1")
            .config("token", "t0k")
            .http(move |_| {
                let mut response = Response::new(status);
                response.headers.push(("retry-after".into(), "30".into()));
                response.body = body.as_bytes().to_vec();
                Ok(response)
            })
    }

    #[test]
    fn posts_a_form_with_basic_auth() {
        let host = host(201, r#"{"sid":"SM42"}"#);
        let delivery = SmsHttp::deliver(&host.ctx(), &message("Ihr Code: 12 & mehr ü")).unwrap();
        assert_eq!(delivery.provider_id.as_deref(), Some("SM42"));
        let sent = &host.requests()[0];
        let body = String::from_utf8(sent.body.clone()).unwrap();
        assert_eq!(
            body,
            "To=%2B49+151+2345678&From=Shop&Body=Ihr+Code%3A+12+%26+mehr+%C3%BC"
        );
        let auth = sent
            .headers
            .iter()
            .find(|(k, _)| k == "Authorization")
            .unwrap();
        assert_eq!(auth.1, format!("Basic {}", base64(b"AC1:t0k")));
    }

    #[test]
    fn rate_limits_and_errors_map_to_retry_decisions() {
        assert_eq!(
            SmsHttp::deliver(&host(429, "").ctx(), &message("x")),
            Err(SendError::RateLimited(30))
        );
        assert!(matches!(
            SmsHttp::deliver(&host(503, "").ctx(), &message("x")),
            Err(SendError::Transient(_))
        ));
        assert!(
            matches!(SmsHttp::deliver(&host(400, "bad number").ctx(), &message("x")), Err(SendError::Permanent(m)) if m.contains("bad number"))
        );
        let long = "x".repeat(613);
        assert!(
            matches!(SmsHttp::deliver(&host(201, "").ctx(), &message(&long)), Err(SendError::Permanent(m)) if m.contains("max_length"))
        );
    }

    #[test]
    fn delivery_reports_become_events() {
        let callback = |body: &str| Callback {
            method: "POST".into(),
            path: "/v1/callbacks/sms".into(),
            headers: vec![],
            body: body.as_bytes().to_vec(),
        };
        let ctx = TestHost::new().now(5).ctx();
        let events = SmsHttp::parse_callback(
            &ctx,
            &callback("MessageSid=SM42&MessageStatus=failed&ErrorCode=30006"),
        )
        .unwrap();
        assert_eq!(events[0].message_ref, "SM42");
        assert_eq!(events[0].status, DeliveryStatus::HardBounce);
        assert_eq!(events[0].detail.as_deref(), Some("30006"));
        assert!(
            SmsHttp::parse_callback(&ctx, &callback("MessageSid=SM42&MessageStatus=sent"))
                .unwrap()
                .is_empty()
        );
        assert!(SmsHttp::parse_callback(&ctx, &callback("nothing")).is_err());
    }
}
