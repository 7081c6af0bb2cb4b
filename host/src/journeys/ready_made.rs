//! Ready-made journeys an operator installs and adapts: the JSON files in
//! `host/journeys/`, built into the binary.

use serde::Serialize;

use super::definition::{JourneyDef, Step};

const READY_MADE: [(&str, &str); 9] = [
    (
        "welcome-nurture",
        include_str!("../../journeys/welcome-nurture.json"),
    ),
    (
        "content-follow-up",
        include_str!("../../journeys/content-follow-up.json"),
    ),
    (
        "webinar-follow-up",
        include_str!("../../journeys/webinar-follow-up.json"),
    ),
    (
        "wake-up-nurture",
        include_str!("../../journeys/wake-up-nurture.json"),
    ),
    (
        "cart-abandonment",
        include_str!("../../journeys/cart-abandonment.json"),
    ),
    (
        "post-purchase-thank-you",
        include_str!("../../journeys/post-purchase-thank-you.json"),
    ),
    (
        "review-request",
        include_str!("../../journeys/review-request.json"),
    ),
    (
        "support-follow-up",
        include_str!("../../journeys/support-follow-up.json"),
    ),
    (
        "reactivation",
        include_str!("../../journeys/reactivation.json"),
    ),
];

#[derive(Clone, Debug, Serialize)]
pub struct ReadyMade {
    pub name: &'static str,
    pub description: String,
    pub definition: JourneyDef,
}

/// All ready-made journeys. Their sends name the binding `email`.
pub fn all() -> Vec<ReadyMade> {
    READY_MADE
        .iter()
        .filter_map(|(name, json)| {
            // Built in and tested: a file that does not parse is a bug
            // caught by `every_ready_made_journey_is_valid`.
            let definition = JourneyDef::from_json(json.as_bytes()).ok()?;
            Some(ReadyMade {
                name,
                description: definition.description.clone(),
                definition,
            })
        })
        .collect()
}

/// A ready-made journey adapted to this installation: sent through
/// `binding`, saved under `name`.
pub fn adapt(template: &str, binding: &str, name: Option<&str>) -> Option<JourneyDef> {
    let mut def = all().into_iter().find(|r| r.name == template)?.definition;
    for step in &mut def.steps {
        if let Step::Send { binding: b, .. } = step {
            *b = binding.to_owned();
        }
    }
    if let Some(name) = name {
        def.name = name.to_owned();
    }
    Some(def)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::validate::{Known, validate};
    use super::*;

    #[test]
    fn every_ready_made_journey_is_valid() {
        assert_eq!(
            all().len(),
            READY_MADE.len(),
            "a ready-made file does not parse"
        );
        for (name, json) in READY_MADE {
            let def = JourneyDef::from_json(json.as_bytes()).unwrap();
            assert_eq!(def.name, name);
            let known = Known {
                channel_bindings: ["mail".to_owned()].into(),
                segments: Default::default(),
            };
            let adapted = adapt(name, "mail", None).unwrap();
            assert_eq!(validate(&adapted, &known), Ok(()), "{name}");
        }
    }

    /// Every ready-made text, rendered for a contact with nothing but an
    /// address and a trigger without properties, still reads as a letter:
    /// no dangling "Hallo ,", no doubled or stray spaces, nothing left
    /// unrendered.
    #[test]
    fn ready_made_texts_read_well_without_any_data() {
        use crate::render::{JourneyContext, RenderContext, render};
        let contact: crate::model::Contact =
            serde_json::from_str(r#"{"id":"c_1","email":"x@example.com"}"#).unwrap();
        let event: crate::model::Event = serde_json::from_str(
            r#"{"id":"e_1","contact_id":"c_1","kind":"signup","at":0,"properties":{}}"#,
        )
        .unwrap();
        let mut rendered = 0;
        for ready in all() {
            for step in &ready.definition.steps {
                let Step::Send {
                    id,
                    template,
                    variants,
                    ..
                } = step
                else {
                    continue;
                };
                let templates = template.iter().map(|t| (None, t)).chain(
                    variants
                        .iter()
                        .map(|v| (Some(v.name.as_str()), &v.template)),
                );
                for (variant, template) in templates {
                    for event in [None, Some(&event)] {
                        let context = RenderContext {
                            contact: &contact,
                            event,
                            journey: JourneyContext {
                                name: ready.name,
                                step: id,
                                variant,
                            },
                        };
                        let out = render(template, &context)
                            .unwrap_or_else(|e| panic!("{} / {id}: {e}", ready.name));
                        let subject = out.subject.clone().unwrap_or_default();
                        let html = out.html.clone().unwrap_or_default();
                        let at = format!("{} / {id} / {variant:?}", ready.name);
                        assert!(!subject.trim().is_empty(), "{at}: empty subject");
                        for part in [&subject, &out.text, &html] {
                            for bad in [
                                " ,",
                                " !",
                                " .",
                                " ?",
                                "  ",
                                "{{",
                                "{%",
                                "<p></p>",
                                "undefined",
                                "none",
                            ] {
                                assert!(!part.contains(bad), "{at}: `{bad}` in {part:?}");
                            }
                            let first = part.trim_start_matches("<p>");
                            assert!(
                                !first.starts_with([',', '.', '!', ' ']),
                                "{at}: starts with punctuation: {part:?}"
                            );
                        }
                        rendered += 1;
                    }
                }
            }
        }
        assert!(rendered >= 2 * 16, "only {rendered} texts rendered");
    }
}
