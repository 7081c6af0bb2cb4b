//! Life in the demo: new visitors sign up every few seconds (with a time
//! zone where it is daytime, or now and then night, and a granted consent),
//! and simulated recipients read what lands in the demo mailbox — they
//! open, click, buy or unsubscribe through the real HTTP endpoints (open
//! pixel, click redirect, `/v1/events`, one-click unsubscribe), so
//! journeys, KPIs and A/B results fill within a minute.

use std::sync::Arc;
use std::time::Duration;

use chrono::Timelike;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use super::Dice;
use crate::mailbox::{Mailbox, MailboxMessage};

/// Zones spread around the globe, so at any hour some have daytime and
/// some night.
const ZONES: [&str; 18] = [
    "Europe/Berlin",
    "Europe/London",
    "Europe/Moscow",
    "Asia/Dubai",
    "Asia/Kolkata",
    "Asia/Singapore",
    "Asia/Tokyo",
    "Australia/Sydney",
    "Pacific/Auckland",
    "Pacific/Kiritimati",
    "Pacific/Honolulu",
    "America/Anchorage",
    "America/Los_Angeles",
    "America/Denver",
    "America/Chicago",
    "America/New_York",
    "America/Sao_Paulo",
    "Atlantic/Azores",
];

const FIRST_NAMES: [&str; 8] = ["Anna", "Ben", "", "Clara", "Deniz", "", "Emil", "Frieda"];

/// Zones whose local hour at `now` (Unix ms) lies in `hours`.
pub fn zones_at(now: i64, hours: std::ops::Range<u32>) -> Vec<&'static str> {
    let Some(at) = chrono::DateTime::from_timestamp_millis(now) else {
        return Vec::new();
    };
    ZONES
        .into_iter()
        .filter(|zone| {
            zone.parse::<chrono_tz::Tz>()
                .is_ok_and(|tz| hours.contains(&at.with_timezone(&tz).hour()))
        })
        .collect()
}

/// Where the demo server answers, and the key it acts with.
pub struct Demo {
    /// `http://127.0.0.1:8080`
    pub base: String,
    pub key: String,
    pub mailbox: Arc<Mailbox>,
}

/// Runs until the process ends: a sign-up every 1.5 s, and every message
/// in the mailbox read within half a second.
pub async fn run(demo: Demo) {
    let mut dice = Dice(2026);
    let mut seen = 0;
    let mut visitor = 0u64;
    let mut bought = false;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    for round in 0u64.. {
        tick.tick().await;
        if round % 3 == 0 {
            if let Err(e) = sign_up(&demo, visitor, &mut dice).await {
                tracing::warn!(error = %e, "demo visitor could not sign up");
            }
            visitor += 1;
        }
        for message in demo.mailbox.since(seen) {
            seen = message.id;
            if let Err(e) = read(&demo, &message, &mut dice, &mut bought).await {
                tracing::warn!(error = %e, message = message.id, "demo recipient failed");
            }
        }
    }
}

async fn sign_up(demo: &Demo, n: u64, dice: &mut Dice) -> Result<(), String> {
    let now = crate::clock::Clock::now(&crate::clock::SystemClock);
    // Every seventh visitor lives where it is night: their welcome waits
    // for the morning, and the dashboard says so.
    let zones = if n % 7 == 6 {
        zones_at(now, 0..6)
    } else {
        zones_at(now, 10..18)
    };
    let zone = zones
        .get(dice.roll(zones.len() as u64) as usize)
        .copied()
        .unwrap_or("Europe/Berlin");
    let first_name = FIRST_NAMES[(n % FIRST_NAMES.len() as u64) as usize];
    let mut attributes = json!({ "industry": dice.pick(&["software", "retail", "consulting"]) });
    if !first_name.is_empty() {
        attributes["first_name"] = json!(first_name);
    }
    let email = format!("besucher{n}.{}@neukunde.example", now / 1000);
    let contact = demo
        .call(
            "POST",
            "/v1/contacts",
            json!({ "email": email, "timezone": zone, "attributes": attributes }),
        )
        .await?;
    let id = contact["id"]
        .as_str()
        .ok_or_else(|| format!("no contact id in {contact}"))?
        .to_owned();
    demo.call(
        "PUT",
        &format!("/v1/contacts/{id}/consents"),
        json!({ "channel": "email", "status": "granted", "source": "demo sign-up form", "text_version": "demo-1" }),
    )
    .await?;
    demo.call(
        "POST",
        "/v1/events",
        json!({ "kind": "signup", "contact_id": id, "properties": { "source": "demo" } }),
    )
    .await?;
    if n % 4 == 1 {
        demo.call(
            "POST",
            "/v1/events",
            json!({ "kind": "download", "contact_id": id, "properties": { "title": "Leitfaden Lead-Nurturing" } }),
        )
        .await?;
    }
    Ok(())
}

/// One recipient reads one message: opens most, clicks some, and of those
/// who click some buy (the first clicker always does, so a conversion
/// shows early); a few unsubscribe.
async fn read(
    demo: &Demo,
    message: &MailboxMessage,
    dice: &mut Dice,
    bought: &mut bool,
) -> Result<(), String> {
    let contact_id = message.message.metadata.get("contact_id").cloned();
    let pixel = message.links("/t/o/");
    if pixel.is_empty() || dice.roll(100) >= 75 {
        let unsubscribe = message.links("/u/");
        if let Some(url) = unsubscribe.first().filter(|_| dice.roll(100) < 15) {
            demo.fetch("POST", url, Some("List-Unsubscribe=One-Click"))
                .await?;
            demo.mailbox.note(message.id, "unsubscribed");
        }
        return Ok(());
    }
    demo.fetch("GET", &pixel[0], None).await?;
    demo.mailbox.note(message.id, "opened");
    let clicks = message.links("/t/c/");
    let Some(click) = clicks.first().filter(|_| dice.roll(100) < 60) else {
        return Ok(());
    };
    demo.fetch("GET", click, None).await?;
    demo.mailbox.note(message.id, "clicked");
    let buys = !*bought || dice.roll(100) < 25;
    if let (true, Some(contact_id)) = (buys, contact_id) {
        *bought = true;
        let value = [49.0, 129.0, 19.9][dice.roll(3) as usize];
        demo.call(
            "POST",
            "/v1/events",
            json!({ "kind": "purchase", "contact_id": contact_id,
                    "properties": { "value": value, "order_id": format!("D-{}", message.id) } }),
        )
        .await?;
        demo.mailbox.note(message.id, "purchased");
    }
    Ok(())
}

impl Demo {
    /// An API call with the demo's key; the answer's JSON.
    async fn call(&self, method: &str, path: &str, body: Value) -> Result<Value, String> {
        let (status, answer) = request(
            method,
            &format!("{}{path}", self.base),
            Some(&self.key),
            Some(("application/json", body.to_string())),
        )
        .await?;
        if !(200..300).contains(&status) {
            return Err(format!(
                "{method} {path} answered {status}: {}",
                String::from_utf8_lossy(&answer)
            ));
        }
        serde_json::from_slice(&answer).map_err(|e| format!("{method} {path}: {e}"))
    }

    /// What a mail client does with a link: one request, no redirects.
    async fn fetch(&self, method: &str, url: &str, form: Option<&str>) -> Result<(), String> {
        let body = form.map(|f| ("application/x-www-form-urlencoded", f.to_owned()));
        let (status, _) = request(method, url, None, body).await?;
        if status >= 400 {
            return Err(format!("{method} {url} answered {status}"));
        }
        Ok(())
    }
}

/// One HTTP/1.1 request on a fresh connection.
async fn request(
    method: &str,
    url: &str,
    key: Option<&str>,
    body: Option<(&str, String)>,
) -> Result<(u16, Bytes), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let authority = uri
        .authority()
        .ok_or_else(|| format!("{url} names no host"))?
        .clone();
    let stream = tokio::net::TcpStream::connect(authority.as_str())
        .await
        .map_err(|e| format!("{authority}: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut builder = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, authority.as_str());
    if let Some(key) = key {
        builder = builder.header(http::header::AUTHORIZATION, format!("Bearer {key}"));
    }
    let content = match body {
        Some((content_type, content)) => {
            builder = builder.header(http::header::CONTENT_TYPE, content_type);
            content
        }
        None => String::new(),
    };
    let request = builder
        .body(Full::new(Bytes::from(content)))
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("{method} {url}: {e}"))?;
    let status = response.status().as_u16();
    let answer = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_any_hour_some_zone_has_daytime_and_some_night() {
        let hour = 60 * 60 * 1000;
        for h in 0..(24 * 7) {
            let now = 1_764_000_000_000 + h * hour;
            assert!(
                !zones_at(now, 10..18).is_empty(),
                "no daytime zone at +{h}h"
            );
            assert!(!zones_at(now, 0..6).is_empty(), "no night zone at +{h}h");
        }
    }
}
