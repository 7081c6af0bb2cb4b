//! Message templates: minijinja with the contact, the event that started
//! the run and the journey as context. A missing attribute renders empty;
//! `{{ contact.attributes.first_name | default("Kundin, Kunde") }}` gives
//! a fallback. HTML parts are auto-escaped.

use minijinja::Environment;
use serde::Serialize;

use crate::model::journey::Template;
use crate::model::{Contact, Event};

/// What a template can read.
#[derive(Clone, Debug, Serialize)]
pub struct RenderContext<'a> {
    pub contact: &'a Contact,
    /// The touchpoint that started the run, if one did.
    pub event: Option<&'a Event>,
    pub journey: JourneyContext<'a>,
}

#[derive(Clone, Debug, Serialize)]
pub struct JourneyContext<'a> {
    pub name: &'a str,
    pub step: &'a str,
    pub variant: Option<&'a str>,
}

/// A rendered message body.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Rendered {
    pub subject: Option<String>,
    pub text: String,
    pub html: Option<String>,
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    // Templates come from operators; keep a runaway loop bounded.
    env.set_fuel(Some(100_000));
    // A run without a triggering event (manual enrolment, a sweep) or a
    // contact without the attribute renders `event.properties.title` as
    // missing instead of failing the send, so `| default(…)` works at any
    // depth.
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
    env
}

/// Parses a template without rendering it.
pub fn check(source: &str) -> Result<(), String> {
    environment()
        .template_from_str(source)
        .map(drop)
        .map_err(|e| describe(&e))
}

pub fn render(template: &Template, context: &RenderContext<'_>) -> Result<Rendered, String> {
    let env = environment();
    let plain = |source: &str| env.render_str(source, context).map_err(|e| describe(&e));
    let html = |source: &str| {
        env.template_from_named_str("message.html", source)
            .and_then(|t| t.render(context))
            .map_err(|e| describe(&e))
    };
    Ok(Rendered {
        subject: template.subject.as_deref().map(plain).transpose()?,
        text: plain(&template.text)?,
        html: template.html.as_deref().map(html).transpose()?,
    })
}

fn describe(error: &minijinja::Error) -> String {
    let what = match error.detail() {
        Some(detail) => format!("{}: {detail}", error.kind()),
        None => error.kind().to_string(),
    };
    match error.line() {
        Some(line) => format!("{what} (line {line})"),
        None => what,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::model::Value;

    fn contact() -> Contact {
        let mut contact: Contact =
            serde_json::from_str(r#"{"id":"c_1","email":"ada@example.com"}"#).unwrap();
        contact
            .attributes
            .insert("first_name".into(), Value::Text("Ada <3".into()));
        contact
    }

    #[test]
    fn templates_see_contact_event_and_journey() {
        let contact = contact();
        let event: Event = serde_json::from_str(
            r#"{"id":"e_1","contact_id":"c_1","kind":"download","at":0,"properties":{"title":"Whitepaper KI"}}"#,
        )
        .unwrap();
        let context = RenderContext {
            contact: &contact,
            event: Some(&event),
            journey: JourneyContext {
                name: "follow-up",
                step: "thanks",
                variant: Some("b"),
            },
        };
        let template = Template {
            subject: Some("Ihr {{ event.properties.title }}".into()),
            text: "Hallo {{ contact.attributes.first_name }}, {{ contact.attributes.company | default('Ihr Team') }} ({{ journey.variant }})".into(),
            html: Some("<p>{{ contact.attributes.first_name }}</p>".into()),
        };
        let out = render(&template, &context).unwrap();
        assert_eq!(out.subject.as_deref(), Some("Ihr Whitepaper KI"));
        assert_eq!(out.text, "Hallo Ada <3, Ihr Team (b)");
        assert_eq!(out.html.as_deref(), Some("<p>Ada &lt;3</p>"));
    }

    #[test]
    fn broken_templates_say_where() {
        let err = check("Hallo\n{{ contact.email ").unwrap_err();
        assert!(err.contains("line 2"), "{err}");
        assert!(check("{% for x in y %}").is_err());
    }
}
