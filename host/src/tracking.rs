//! Tracking: open pixel, click redirect and unsubscribe links with
//! HMAC-signed tokens. A token names one outbox message (and for a click,
//! the index of a link in it), so a forged or altered token is refused and
//! a click can only lead to a link that was in the message.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::model::{Message, Value};

/// What a token is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    Open,
    Click(u32),
    Unsubscribe,
    /// Confirms a double opt-in request (the id is the request's).
    Confirm,
}

impl TokenKind {
    fn tag(self) -> (char, u32) {
        match self {
            TokenKind::Open => ('o', 0),
            TokenKind::Click(index) => ('c', index),
            TokenKind::Unsubscribe => ('u', 0),
            TokenKind::Confirm => ('k', 0),
        }
    }
}

/// The signing secret and the public address links point to.
#[derive(Clone)]
pub struct Tracking {
    secret: Vec<u8>,
    /// `https://nachfass.example.com`, without a trailing slash.
    pub base_url: String,
}

impl std::fmt::Debug for Tracking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracking")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

/// Metadata key of the message's original links, in token index order.
pub const LINKS: &str = "links";

impl Tracking {
    pub fn new(secret: &[u8], base_url: &str) -> Tracking {
        Tracking {
            secret: secret.to_vec(),
            base_url: base_url.trim_end_matches('/').to_owned(),
        }
    }

    fn mac(&self, body: &str) -> Hmac<Sha256> {
        // HMAC takes a key of any length.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).unwrap_or_else(|_| {
            Hmac::<Sha256>::new_from_slice(b"nachfass").expect("a fixed key is valid")
        });
        mac.update(body.as_bytes());
        mac
    }

    /// `o.m_0192….0.<mac>`: readable, URL-safe, and useless when changed.
    pub fn token(&self, kind: TokenKind, outbox_id: &str) -> String {
        let (tag, index) = kind.tag();
        let body = format!("{tag}.{outbox_id}.{index}");
        let mac = self.mac(&body).finalize().into_bytes();
        format!("{body}.{}", hex::encode(&mac[..16]))
    }

    /// The message and purpose a token names, if it is genuine.
    pub fn verify(&self, token: &str) -> Option<(TokenKind, String)> {
        let (body, signature) = token.rsplit_once('.')?;
        let signature = hex::decode(signature).ok()?;
        if signature.len() != 16 {
            return None;
        }
        // Constant time: a forger learns nothing from how long we took.
        self.mac(body).verify_truncated_left(&signature).ok()?;
        let mut parts = body.splitn(3, '.');
        let (tag, outbox_id, index) = (parts.next()?, parts.next()?, parts.next()?);
        let index: u32 = index.parse().ok()?;
        let kind = match tag {
            "o" => TokenKind::Open,
            "c" => TokenKind::Click(index),
            "u" => TokenKind::Unsubscribe,
            "k" => TokenKind::Confirm,
            _ => return None,
        };
        Some((kind, outbox_id.to_owned()))
    }

    /// `text` with every genuine token replaced by `redacted`: what a key
    /// without admin scope may see of a sent message (a working token
    /// would let it unsubscribe or confirm for the recipient).
    pub fn redact(&self, text: &str) -> String {
        let is_token_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(slash) = rest.find('/') {
            out.push_str(&rest[..=slash]);
            rest = &rest[slash + 1..];
            let end = rest.find(|c: char| !is_token_char(c)).unwrap_or(rest.len());
            if self.verify(&rest[..end]).is_some() {
                out.push_str("redacted");
                rest = &rest[end..];
            }
        }
        out.push_str(rest);
        out
    }

    pub fn url(&self, kind: TokenKind, outbox_id: &str) -> String {
        let path = match kind {
            TokenKind::Open => "t/o",
            TokenKind::Click(_) => "t/c",
            TokenKind::Unsubscribe => "u",
            TokenKind::Confirm => "c",
        };
        format!("{}/{path}/{}", self.base_url, self.token(kind, outbox_id))
    }

    /// Rewrites an email before it is queued: links go through the click
    /// redirect, HTML gets the open pixel, and marketing mail gets an
    /// unsubscribe link and the RFC 8058 one-click headers. Only links to
    /// an origin the template itself wrote (see [`template_origins`]) are
    /// tracked: a URL that came from contact or event data stays plain
    /// text, so our redirect can never lead where a data value says.
    pub fn instrument(
        &self,
        message: &mut Message,
        outbox_id: &str,
        marketing: bool,
        origins: &[String],
    ) {
        let mut links: Vec<String> = Vec::new();
        let mut track = |url: &str| {
            if !origins.iter().any(|o| *o == origin(url)) {
                return url.to_owned();
            }
            let index = match links.iter().position(|l| l == url) {
                Some(index) => index,
                None => {
                    links.push(url.to_owned());
                    links.len() - 1
                }
            };
            self.url(
                TokenKind::Click(u32::try_from(index).unwrap_or(u32::MAX)),
                outbox_id,
            )
        };
        message.text = rewrite_text_links(&message.text, &mut track);
        if let Some(html) = &message.html {
            let mut html = rewrite_html_links(html, &mut track);
            let pixel = format!(
                "<img src=\"{}\" width=\"1\" height=\"1\" alt=\"\" style=\"display:none\">",
                self.url(TokenKind::Open, outbox_id)
            );
            let unsubscribe = marketing.then(|| {
                format!(
                    "<p style=\"font-size:small\"><a href=\"{}\">Abmelden</a></p>",
                    self.url(TokenKind::Unsubscribe, outbox_id)
                )
            });
            let tail = format!("{}{pixel}", unsubscribe.unwrap_or_default());
            match html.rfind("</body>") {
                Some(at) => html.insert_str(at, &tail),
                None => html.push_str(&tail),
            }
            message.html = Some(html);
        }
        if marketing {
            let unsubscribe = self.url(TokenKind::Unsubscribe, outbox_id);
            message
                .text
                .push_str(&format!("\n\n--\nAbmelden: {unsubscribe}\n"));
            message.headers.insert(
                "List-Unsubscribe".into(),
                Value::Text(format!("<{unsubscribe}>")),
            );
            message.headers.insert(
                "List-Unsubscribe-Post".into(),
                Value::Text("List-Unsubscribe=One-Click".into()),
            );
        }
        message.metadata.insert(LINKS.into(), Value::Texts(links));
    }
}

/// `https://shop.example:8443` of a URL, lower-cased: everything before
/// the path, query or fragment.
fn origin(url: &str) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let end = url[scheme_end..]
        .find(|c: char| {
            matches!(c, '/' | '?' | '#' | '{' | '"' | '\'' | '<' | '>') || c.is_whitespace()
        })
        .map_or(url.len(), |i| scheme_end + i);
    url[..end].to_lowercase()
}

/// The origins of the `http(s)://` links written in template sources
/// (text and HTML): what a rendered link must start with to be tracked.
/// An origin built by a template expression (`https://{{ host }}/`) is
/// not written in the template and so not trusted.
pub fn template_origins(sources: &[&str]) -> Vec<String> {
    let mut origins: Vec<String> = Vec::new();
    for source in sources {
        let source = unescape(source);
        let mut rest = source.as_str();
        while let Some(start) = rest.find("http") {
            let candidate = &rest[start..];
            if is_url_start(candidate) {
                let found = origin(candidate);
                let host = found.split_once("://").map_or("", |(_, host)| host);
                if !host.is_empty() && !origins.contains(&found) {
                    origins.push(found);
                }
            }
            rest = &candidate[4..];
        }
    }
    origins
}

fn is_url_start(rest: &str) -> bool {
    rest.starts_with("https://") || rest.starts_with("http://")
}

/// Replaces every `http(s)://…` in plain text (up to whitespace or a
/// closing bracket or quote).
fn rewrite_text_links(text: &str, track: &mut impl FnMut(&str) -> String) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("http") {
        out.push_str(&rest[..start]);
        let candidate = &rest[start..];
        if !is_url_start(candidate) {
            out.push_str("http");
            rest = &candidate[4..];
            continue;
        }
        let end = candidate
            .find(|c: char| c.is_whitespace() || matches!(c, ')' | '>' | '"' | '\'' | '<'))
            .unwrap_or(candidate.len());
        // A sentence's full stop or comma is not part of the link.
        let url = candidate[..end].trim_end_matches(['.', ',', ';', ':', '!', '?']);
        out.push_str(&track(url));
        rest = &candidate[url.len()..];
    }
    out.push_str(rest);
    out
}

/// Replaces the value of every `href="http(s)://…"`.
fn rewrite_html_links(html: &str, track: &mut impl FnMut(&str) -> String) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(start) = rest.find("href=\"") {
        let value_start = start + "href=\"".len();
        out.push_str(&rest[..value_start]);
        let value = &rest[value_start..];
        let end = value.find('"').unwrap_or(value.len());
        // Rendering escaped the HTML (`&amp;`, `&#x2f;`): track the link
        // the reader's browser would follow.
        let url = unescape(&value[..end]);
        if is_url_start(&url) {
            out.push_str(&track(&url));
        } else {
            out.push_str(&value[..end]);
        }
        rest = &value[end..];
    }
    out.push_str(rest);
    out
}

/// Undoes the entity escaping of an HTML attribute value.
fn unescape(value: &str) -> String {
    const ENTITIES: [(&str, &str); 9] = [
        ("&#x2f;", "/"),
        ("&#47;", "/"),
        ("&#x27;", "'"),
        ("&#39;", "'"),
        ("&quot;", "\""),
        ("&#34;", "\""),
        ("&lt;", "<"),
        ("&gt;", ">"),
        ("&amp;", "&"),
    ];
    let mut out = value.to_owned();
    for (entity, plain) in ENTITIES {
        out = out.replace(entity, plain);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn tracking() -> Tracking {
        Tracking::new(b"secret", "https://t.example/")
    }

    #[test]
    fn only_links_the_template_wrote_are_tracked() {
        let origins = template_origins(&[
            "Shop: https://shop.example/cart?c={{ contact.id }} Site: {{ contact.attributes.site }} \
             Host: https://{{ contact.attributes.host }}/x",
        ]);
        assert_eq!(origins, vec!["https://shop.example".to_owned()]);
        let mut message: Message = serde_json::from_str(
            r#"{"idempotency_key":"k","to":"a@b.example","text":"Shop: https://shop.example/cart?c=c_1 Site: https://evil.example/x Host: https://evil.example/x Trick: https://shop.example@evil.example/ https://shop.example.evil.example/"}"#,
        )
        .unwrap();
        tracking().instrument(&mut message, "m_7", false, &origins);
        assert_eq!(
            message.metadata[LINKS],
            Value::Texts(vec!["https://shop.example/cart?c=c_1".into()])
        );
        assert!(
            message.text.contains("Site: https://evil.example/x"),
            "{}",
            message.text
        );
        assert!(
            message.text.contains("https://shop.example@evil.example/"),
            "{}",
            message.text
        );
        assert!(
            message.text.contains("https://shop.example.evil.example/"),
            "{}",
            message.text
        );
    }

    #[test]
    fn redaction_removes_genuine_tokens_only() {
        let t = tracking();
        let text = format!(
            "<{}> and {} and https://shop.example/a.b.c",
            t.url(TokenKind::Unsubscribe, "m_1"),
            t.url(TokenKind::Click(0), "m_1")
        );
        let redacted = t.redact(&text);
        assert_eq!(
            redacted,
            "<https://t.example/u/redacted> and https://t.example/t/c/redacted and https://shop.example/a.b.c"
        );
    }

    #[test]
    fn tokens_verify_and_refuse_any_change() {
        let t = tracking();
        let token = t.token(TokenKind::Click(2), "m_1");
        assert_eq!(
            t.verify(&token),
            Some((TokenKind::Click(2), "m_1".to_owned()))
        );
        let altered = token.replacen(".2.", ".3.", 1);
        assert_eq!(t.verify(&altered), None);
        let other = token.replacen("m_1", "m_2", 1);
        assert_eq!(t.verify(&other), None);
        assert_eq!(t.verify("c.m_1.2.00000000000000000000000000000000"), None);
        assert_eq!(t.verify("nonsense"), None);
        let foreign = Tracking::new(b"other", "https://t.example").token(TokenKind::Open, "m_1");
        assert_eq!(t.verify(&foreign), None);
    }

    #[test]
    fn emails_get_tracked_links_a_pixel_and_one_click_unsubscribe() {
        let mut message: Message = serde_json::from_str(
            r#"{"idempotency_key":"k","to":"a@b.example","text":"Hier: https://shop.example/cart?id=1. Und http://x.example","html":"<body><a href=\"https:&#x2f;&#x2f;shop.example&#x2f;cart?id=1&amp;x=2\">Warenkorb</a><a href=\"mailto:a@b\">m</a></body>"}"#,
        )
        .unwrap();
        let origins = template_origins(&[&message.text, message.html.as_deref().unwrap_or("")]);
        tracking().instrument(&mut message, "m_9", true, &origins);
        assert!(!message.text.contains("shop.example"), "{}", message.text);
        assert!(
            message.text.contains("https://t.example/t/c/c.m_9.0."),
            "{}",
            message.text
        );
        assert!(
            message
                .text
                .contains("Abmelden: https://t.example/u/u.m_9.0."),
            "{}",
            message.text
        );
        let html = message.html.clone().unwrap();
        assert!(html.contains("https://t.example/t/o/o.m_9.0."), "{html}");
        assert!(html.contains("mailto:a@b"), "{html}");
        assert!(
            html.find("display:none").unwrap() < html.find("</body>").unwrap(),
            "{html}"
        );
        assert_eq!(
            message.metadata[LINKS],
            Value::Texts(vec![
                "https://shop.example/cart?id=1".into(),
                "http://x.example".into(),
                "https://shop.example/cart?id=1&x=2".into(),
            ])
        );
        assert_eq!(
            message.headers["List-Unsubscribe-Post"],
            Value::Text("List-Unsubscribe=One-Click".into())
        );
        let mut transactional = message.clone();
        transactional.headers.clear();
        tracking().instrument(&mut transactional, "m_8", false, &origins);
        assert!(!transactional.headers.contains_key("List-Unsubscribe"));
    }
}
