//! Keeps a retargeting audience in step with a segment: a message whose
//! text is `add` puts the contact into the audience, `remove` takes it out
//! (two journeys send them, on `segment_entered` and `segment_left`). The
//! ads API never sees an address, only its SHA-256 of the trimmed,
//! lower-cased email, as customer-match APIs expect:
//! `POST {url}:add` / `POST {url}:remove` with
//! `{"members": [{"email_sha256": "…"}], "idempotency_key": "…"}`.

use nachfass_sdk::http::{HttpError, Request};
use nachfass_sdk::*;
use sha2::{Digest, Sha256};

pub struct AudienceSync;

/// The hashed identifier the ads API matches on.
pub fn email_sha256(email: &str) -> String {
    let digest = Sha256::digest(email.trim().to_lowercase().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn setting(ctx: &Ctx, key: &str) -> Result<String, SendError> {
    ctx.config_required(key)
        .map_err(|e| SendError::Permanent(e.message))
}

impl Channel for AudienceSync {
    fn describe() -> ChannelInfo {
        ChannelInfo {
            kind: ChannelKind::Audience,
            provider: "Ads audience API".to_owned(),
        }
    }

    fn deliver(ctx: &Ctx, message: &Message) -> Result<Delivery, SendError> {
        let operation = match message.text.trim() {
            "add" => "add",
            "remove" => "remove",
            other => {
                return Err(SendError::Permanent(format!(
                    "the message text must be `add` or `remove`, not `{other}`"
                )));
            }
        };
        if !message.to.contains('@') {
            return Err(SendError::Permanent(
                "the contact has no email address to match on".into(),
            ));
        }
        let url = setting(ctx, "url")?;
        let token = setting(ctx, "token")?;
        let body = serde_json::json!({
            "members": [ { "email_sha256": email_sha256(&message.to) } ],
            "idempotency_key": message.idempotency_key,
        })
        .to_string();
        let request = Request::post(&format!("{url}:{operation}"))
            .header("Content-Type", "application/json")
            .header("Authorization", &format!("Bearer {token}"))
            .body(body);
        let response = ctx.http(&request).map_err(|e| match e {
            HttpError::Failed(why) => SendError::Transient(why),
            other => SendError::Permanent(other.to_string()),
        })?;
        match response.status {
            200..=299 => Ok(Delivery { provider_id: None }),
            429 => Err(SendError::RateLimited(
                response
                    .header("Retry-After")
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(60),
            )),
            500..=599 => Err(SendError::Transient(format!(
                "ads API answered {}",
                response.status
            ))),
            status => Err(SendError::Permanent(format!("ads API answered {status}"))),
        }
    }

    fn parse_callback(_: &Ctx, _: &Callback) -> Result<Vec<DeliveryEvent>, PluginError> {
        Err(PluginError::new(
            "no-callbacks",
            "the ads API sends no callbacks",
        ))
    }
}

export_channel!(AudienceSync);

#[cfg(test)]
mod tests {
    use super::*;
    use nachfass_sdk::http::Response;
    use nachfass_sdk::testing::TestHost;

    fn message(text: &str) -> Message {
        Message {
            idempotency_key: "nf-9".into(),
            to: " Ada@Example.com ".into(),
            subject: None,
            text: text.into(),
            html: None,
            headers: vec![],
            metadata: vec![],
        }
    }

    fn host(status: u16) -> TestHost {
        TestHost::new()
            .config("url", "https://ads.example/v1/audiences/7/members")
            .config("token", "tok")
            .http(move |_| Ok(Response::new(status)))
    }

    #[test]
    fn adds_and_removes_hashed_members_only() {
        let host = host(200);
        AudienceSync::deliver(&host.ctx(), &message("add")).unwrap();
        AudienceSync::deliver(&host.ctx(), &message("remove\n")).unwrap();
        let requests = host.requests();
        assert_eq!(
            requests[0].url,
            "https://ads.example/v1/audiences/7/members:add"
        );
        assert_eq!(
            requests[1].url,
            "https://ads.example/v1/audiences/7/members:remove"
        );
        let body = String::from_utf8(requests[0].body.clone()).unwrap();
        assert!(!body.contains("ada"), "no address leaves: {body}");
        assert!(body.contains(&email_sha256("ada@example.com")));
        assert_eq!(
            email_sha256("ada@example.com"),
            email_sha256(" ADA@example.com")
        );
        assert_eq!(email_sha256("ada@example.com").len(), 64);
    }

    #[test]
    fn bad_operations_and_answers_are_refused_or_retried() {
        assert!(matches!(
            AudienceSync::deliver(&host(200).ctx(), &message("subscribe")),
            Err(SendError::Permanent(_))
        ));
        assert!(matches!(
            AudienceSync::deliver(&host(503).ctx(), &message("add")),
            Err(SendError::Transient(_))
        ));
        assert_eq!(
            AudienceSync::deliver(&host(429).ctx(), &message("add")),
            Err(SendError::RateLimited(60))
        );
        assert!(matches!(
            AudienceSync::deliver(&host(403).ctx(), &message("add")),
            Err(SendError::Permanent(_))
        ));
    }
}
