//! Sends each message as a MIME email (text, plus an HTML alternative when
//! there is one) through the host's `mail` import, which connects to the
//! SMTP server of the binding's configuration.
//!
//! The Message-ID comes from the idempotency key, so a retried message is
//! recognisably the same message. Headers the host sets (List-Unsubscribe
//! and List-Unsubscribe-Post for marketing mail, RFC 8058) are passed on.

use nachfass_sdk::*;

pub struct SmtpEmail;

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(BASE64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Base64 in lines of 76 characters, as MIME wants.
fn base64_lines(bytes: &[u8]) -> String {
    let encoded = base64(bytes);
    let mut out = String::with_capacity(encoded.len() + encoded.len() / 38);
    for (i, c) in encoded.chars().enumerate() {
        if i > 0 && i % 76 == 0 {
            out.push_str("\r\n");
        }
        out.push(c);
    }
    out
}

/// A header value without line breaks: nothing can inject a header.
fn one_line(value: &str) -> String {
    value.replace(['\r', '\n'], " ")
}

/// RFC 2047: non-ASCII text as `=?UTF-8?B?…?=` words of at most 75 bytes.
fn encode_words(text: &str) -> String {
    let text = one_line(text);
    if text.is_ascii() {
        return text;
    }
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in text.chars() {
        if chunk.len() + c.len_utf8() > 45 {
            words.push(format!("=?UTF-8?B?{}?=", base64(chunk.as_bytes())));
            chunk.clear();
        }
        chunk.push(c);
    }
    if !chunk.is_empty() {
        words.push(format!("=?UTF-8?B?{}?=", base64(chunk.as_bytes())));
    }
    words.join("\r\n ")
}

/// `Anna Beispiel <anna@beispiel.example>` → the address and the header
/// value with the display name encoded.
fn mailbox(value: &str) -> (String, String) {
    match (value.find('<'), value.rfind('>')) {
        (Some(open), Some(close)) if open < close => {
            let address = value[open + 1..close].trim().to_owned();
            let name = value[..open].trim().trim_matches('"');
            let header = if name.is_empty() {
                format!("<{address}>")
            } else if name.is_ascii() {
                format!("\"{}\" <{address}>", one_line(name).replace('"', ""))
            } else {
                format!("{} <{address}>", encode_words(name))
            };
            (address, header)
        }
        _ => (value.trim().to_owned(), one_line(value.trim())),
    }
}

/// `Mon, 23 Nov 2026 09:00:00 +0000` for Unix milliseconds.
fn rfc2822(millis: i64) -> String {
    let seconds = millis.div_euclid(1000);
    let (days, secs) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} +0000",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(month - 1) as usize],
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// The complete message, CRLF line ends.
pub fn build(ctx: &Ctx, message: &Message) -> Result<(String, String), SendError> {
    let from = ctx
        .config_required::<String>("from")
        .map_err(|e| SendError::Permanent(e.message))?;
    let (sender, from_header) = mailbox(&from);
    let domain = ctx
        .config("message_id_domain")
        .or_else(|| sender.rsplit_once('@').map(|(_, d)| d.to_owned()))
        .unwrap_or_else(|| "nachfass.invalid".to_owned());
    let mut head = vec![
        format!("From: {from_header}"),
        format!("To: {}", mailbox(&message.to).1),
        format!(
            "Subject: {}",
            encode_words(message.subject.as_deref().unwrap_or(""))
        ),
        format!("Date: {}", rfc2822(ctx.now())),
        format!(
            "Message-ID: <{}@{}>",
            one_line(&message.idempotency_key),
            one_line(&domain)
        ),
        "MIME-Version: 1.0".to_owned(),
    ];
    if let Some(reply_to) = ctx.config("reply_to") {
        head.push(format!("Reply-To: {}", mailbox(&reply_to).1));
    }
    const RESERVED: [&str; 8] = [
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "reply-to",
    ];
    for field in &message.headers {
        if RESERVED.contains(&field.key.to_ascii_lowercase().as_str())
            || field.key.is_empty()
            || !field
                .key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            continue;
        }
        if let Value::Text(value) = &field.value {
            head.push(format!("{}: {}", field.key, one_line(value)));
        }
    }
    let part = |kind: &str, body: &str| {
        format!(
            "Content-Type: text/{kind}; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
            base64_lines(body.as_bytes())
        )
    };
    let body = match &message.html {
        Some(html) => {
            let boundary = format!(
                "=_nachfass_{}",
                base64(message.idempotency_key.as_bytes()).trim_end_matches('=')
            );
            head.push(format!(
                "Content-Type: multipart/alternative; boundary=\"{boundary}\""
            ));
            format!(
                "--{boundary}\r\n{}--{boundary}\r\n{}--{boundary}--\r\n",
                part("plain", &message.text),
                part("html", html)
            )
        }
        None => {
            let single = part("plain", &message.text);
            let (headers, body) = single.split_once("\r\n\r\n").unwrap_or(("", ""));
            head.extend(headers.split("\r\n").map(str::to_owned));
            body.to_owned()
        }
    };
    Ok((sender, format!("{}\r\n\r\n{body}", head.join("\r\n"))))
}

impl Channel for SmtpEmail {
    fn describe() -> ChannelInfo {
        ChannelInfo {
            kind: ChannelKind::Email,
            provider: "SMTP".to_owned(),
        }
    }

    fn deliver(ctx: &Ctx, message: &Message) -> Result<Delivery, SendError> {
        let (sender, raw) = build(ctx, message)?;
        let recipient = mailbox(&message.to).0;
        match ctx.mail(&sender, &[recipient], raw.as_bytes()) {
            Ok(reply) => Ok(Delivery {
                provider_id: Some(reply),
            }),
            Err(MailError::Transient(why)) => Err(SendError::Transient(why)),
            Err(MailError::Permanent(why)) => Err(SendError::Permanent(why)),
        }
    }

    fn parse_callback(_: &Ctx, _: &Callback) -> Result<Vec<DeliveryEvent>, PluginError> {
        Err(PluginError::new(
            "no-callbacks",
            "SMTP has no delivery callbacks; report bounces through the provider's webhook binding",
        ))
    }
}

export_channel!(SmtpEmail);

#[cfg(test)]
mod tests {
    use super::*;
    use nachfass_sdk::testing::TestHost;

    fn message(html: Option<&str>) -> Message {
        Message {
            idempotency_key: "nf-0123abcd".into(),
            to: "Jörg Müller <joerg@kunde.example>".into(),
            subject: Some("Ihr Warenkorb wartet – jetzt bestellen".into()),
            text: "Hallo Jörg,\nIhr Warenkorb wartet.".into(),
            html: html.map(str::to_owned),
            headers: vec![
                Field {
                    key: "List-Unsubscribe".into(),
                    value: Value::Text("<https://t.example/u/u.m_1.0.ab>".into()),
                },
                Field {
                    key: "X-Evil".into(),
                    value: Value::Text("x\r\nBcc: victim@example.com".into()),
                },
                Field {
                    key: "Subject".into(),
                    value: Value::Text("overridden".into()),
                },
            ],
            metadata: vec![],
        }
    }

    fn host() -> TestHost {
        TestHost::new()
            .config("from", "Beispiel GmbH <news@beispiel.example>")
            .now(1_795_424_400_000)
    }

    #[test]
    fn builds_a_multipart_message_with_a_stable_message_id() {
        let host = host();
        let delivery =
            SmtpEmail::deliver(&host.ctx(), &message(Some("<p>Hallo Jörg</p>"))).unwrap();
        assert_eq!(delivery.provider_id.as_deref(), Some("250 OK (TestHost)"));
        let mail = &host.mails()[0];
        assert_eq!(mail.sender, "news@beispiel.example");
        assert_eq!(mail.recipients, ["joerg@kunde.example"]);
        let text = mail.text();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains("Message-ID: <nf-0123abcd@beispiel.example>"),
            "{head}"
        );
        assert!(
            head.contains("Date: Mon, 23 Nov 2026 09:00:00 +0000"),
            "{head}"
        );
        assert!(head.contains("Subject: =?UTF-8?B?"), "{head}");
        assert!(
            head.contains("From: \"Beispiel GmbH\" <news@beispiel.example>"),
            "{head}"
        );
        assert!(
            head.contains("List-Unsubscribe: <https://t.example/u/u.m_1.0.ab>"),
            "{head}"
        );
        assert!(
            head.contains("X-Evil: x  Bcc: victim@example.com"),
            "no header injection: {head}"
        );
        assert!(!head.contains("overridden"), "{head}");
        assert!(head.contains("multipart/alternative"), "{head}");
        assert!(body.contains("Content-Type: text/plain; charset=utf-8"));
        assert!(body.contains("Content-Type: text/html; charset=utf-8"));
        assert!(body.contains(&base64("Hallo Jörg,\nIhr Warenkorb wartet.".as_bytes())));
        let again = host.ctx();
        SmtpEmail::deliver(&again, &message(Some("<p>Hallo Jörg</p>"))).unwrap();
        assert_eq!(
            host.mails()[1].message,
            mail.message,
            "a retry sends the same message"
        );
    }

    #[test]
    fn text_only_mail_is_one_part_and_errors_map_to_retries() {
        let host = host().mail(|_| Err(MailError::Transient("421 try later".into())));
        let err = SmtpEmail::deliver(&host.ctx(), &message(None)).unwrap_err();
        assert_eq!(err, SendError::Transient("421 try later".into()));
        let text = host.mails()[0].text();
        assert!(!text.contains("multipart"), "{text}");
        let host = TestHost::new().mail(|_| Ok("250".into()));
        assert!(
            matches!(SmtpEmail::deliver(&host.ctx(), &message(None)), Err(SendError::Permanent(m)) if m.contains("from"))
        );
    }

    #[test]
    fn encodings_are_standard() {
        assert_eq!(base64(b"Man"), "TWFu");
        assert_eq!(base64(b"Ma"), "TWE=");
        assert_eq!(base64(b"M"), "TQ==");
        assert_eq!(rfc2822(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc2822(951_782_400_000), "Tue, 29 Feb 2000 00:00:00 +0000");
        assert_eq!(encode_words("plain"), "plain");
        let long = encode_words(&"ä".repeat(40));
        assert!(long.split("\r\n ").all(|w| w.len() <= 75), "{long}");
    }
}
