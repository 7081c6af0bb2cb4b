//! Demographic and interest segments: `industry eq software`,
//! `employees gt 250`, `interests contains webinar`, `country in DE,AT,CH`.
//!
//! Text compares case-insensitively. Numbers compare numerically, also when
//! stored as text. A missing attribute matches only `ne`.

use nachfass_sdk::*;

pub struct AttributeMatch;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Ne,
    Contains,
    Gt,
    Lt,
    Exists,
    In,
}

struct Condition {
    attribute: String,
    op: Op,
    value: String,
    list: Vec<String>,
}

impl Condition {
    fn from_config(ctx: &Ctx) -> Result<Condition, PluginError> {
        let attribute: String = ctx.config_required("attribute")?;
        let op = match ctx
            .config_required::<String>("op")?
            .to_ascii_lowercase()
            .as_str()
        {
            "eq" => Op::Eq,
            "ne" => Op::Ne,
            "contains" => Op::Contains,
            "gt" => Op::Gt,
            "lt" => Op::Lt,
            "exists" => Op::Exists,
            "in" => Op::In,
            other => {
                return Err(PluginError::bad_config(
                    "op",
                    &format!("`{other}` is unknown; use eq, ne, contains, gt, lt, exists or in"),
                ));
            }
        };
        let value = ctx.config("value").unwrap_or_default();
        if op != Op::Exists && value.trim().is_empty() {
            return Err(PluginError::bad_config("value", "is required for this op"));
        }
        if matches!(op, Op::Gt | Op::Lt) && value.trim().parse::<f64>().is_err() {
            return Err(PluginError::bad_config(
                "value",
                &format!("`{value}` is not a number"),
            ));
        }
        let list = value
            .split(',')
            .map(|v| v.trim().to_lowercase())
            .filter(|v| !v.is_empty())
            .collect();
        Ok(Condition {
            attribute,
            op,
            value: value.trim().to_lowercase(),
            list,
        })
    }

    fn lookup(&self, contact: &Contact) -> Option<Value> {
        match self.attribute.as_str() {
            "contact.email" => contact.email.clone().map(Value::Text),
            "contact.phone" => contact.phone.clone().map(Value::Text),
            "contact.timezone" => contact.timezone.clone().map(Value::Text),
            "contact.stage" => Some(Value::Text(contact.stage.clone())),
            "contact.score" => Some(Value::Integer(contact.score)),
            "contact.segments" => Some(Value::Texts(contact.segments.clone())),
            key => contact.attr(key).cloned(),
        }
    }

    fn check(&self, contact: &Contact) -> bool {
        let value = match self.lookup(contact) {
            None | Some(Value::Null) => return self.op == Op::Ne,
            Some(value) => value,
        };
        match self.op {
            Op::Exists => true,
            Op::Eq => equals(&value, &self.value),
            Op::Ne => !equals(&value, &self.value),
            Op::Contains => match &value {
                Value::Texts(items) => items.iter().any(|i| i.to_lowercase() == self.value),
                other => text(other).is_some_and(|t| t.contains(&self.value)),
            },
            Op::In => match &value {
                Value::Texts(items) => items.iter().any(|i| self.list.contains(&i.to_lowercase())),
                other => text(other).is_some_and(|t| self.list.contains(&t)),
            },
            Op::Gt | Op::Lt => {
                let (Some(have), Ok(want)) = (value.as_f64(), self.value.parse::<f64>()) else {
                    return false;
                };
                if self.op == Op::Gt {
                    have > want
                } else {
                    have < want
                }
            }
        }
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::Text(s) => Some(s.trim().to_lowercase()),
        Value::Integer(i) => Some(i.to_string()),
        Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

fn equals(value: &Value, want: &str) -> bool {
    match (value.as_f64(), want.parse::<f64>()) {
        (Some(have), Ok(want)) => have == want,
        _ => text(value).is_some_and(|t| t == want),
    }
}

impl SegmentRule for AttributeMatch {
    fn matches(ctx: &Ctx, contact: &Contact, _: &[ActivityCount]) -> Result<bool, PluginError> {
        Ok(Condition::from_config(ctx)?.check(contact))
    }

    fn matches_batch(ctx: &Ctx, items: &[RuleInput]) -> Result<Vec<bool>, PluginError> {
        let condition = Condition::from_config(ctx)?;
        Ok(items
            .iter()
            .map(|item| condition.check(&item.contact))
            .collect())
    }
}

export_segment_rule!(AttributeMatch);

#[cfg(test)]
mod tests {
    use super::*;
    use nachfass_sdk::testing::TestHost;

    fn check(attribute: &str, op: &str, value: &str, contact: &Contact) -> bool {
        let host = TestHost::new()
            .config("attribute", attribute)
            .config("op", op)
            .config("value", value);
        host.matches::<AttributeMatch>(contact, &[]).unwrap()
    }

    fn acme() -> Contact {
        Contact::new("c1")
            .with_email("ada@acme.example")
            .with_score(42)
            .with_attr("industry", "Software")
            .with_attr("employees", 250)
            .with_attr("revenue", "1200000")
            .with_attr("interests", &["webinar", "pricing"][..])
            .with_attr("newsletter", true)
    }

    #[test]
    fn each_operator_matches_and_rejects() {
        let c = acme();
        assert!(check("industry", "eq", "software", &c));
        assert!(!check("industry", "eq", "retail", &c));
        assert!(check("industry", "ne", "retail", &c));
        assert!(check("industry", "contains", "soft", &c));
        assert!(check("interests", "contains", "Webinar", &c));
        assert!(!check("interests", "contains", "web", &c));
        assert!(check("employees", "gt", "249", &c));
        assert!(!check("employees", "gt", "250", &c));
        assert!(check("revenue", "gt", "1000000", &c));
        assert!(check("employees", "lt", "1000", &c));
        assert!(check("industry", "in", "retail, software", &c));
        assert!(check("interests", "in", "pricing,demo", &c));
        assert!(check("newsletter", "eq", "true", &c));
        assert!(check("industry", "exists", "", &c));
        assert!(!check("country", "exists", "", &c));
    }

    #[test]
    fn missing_attributes_match_only_ne() {
        let c = Contact::new("c2");
        assert!(!check("industry", "eq", "software", &c));
        assert!(check("industry", "ne", "software", &c));
        assert!(!check("employees", "lt", "10", &c));
    }

    #[test]
    fn built_in_fields_are_reachable() {
        let c = acme();
        assert!(check("contact.score", "gt", "40", &c));
        assert!(check("contact.stage", "eq", "subscriber", &c));
        assert!(check("contact.email", "contains", "@acme.", &c));
    }

    #[test]
    fn bad_configuration_is_a_plugin_error() {
        let host = TestHost::new()
            .config("attribute", "x")
            .config("op", "like")
            .config("value", "1");
        let err = host.matches::<AttributeMatch>(&acme(), &[]).unwrap_err();
        assert_eq!(err.code, "bad-config");
        assert!(err.message.contains("`like` is unknown"), "{}", err.message);
        let host = TestHost::new()
            .config("attribute", "x")
            .config("op", "gt")
            .config("value", "lots");
        assert!(host.matches::<AttributeMatch>(&acme(), &[]).is_err());
        let host = TestHost::new().config("op", "eq").config("value", "x");
        assert!(
            host.matches::<AttributeMatch>(&acme(), &[])
                .unwrap_err()
                .message
                .contains("attribute")
        );
    }

    #[test]
    fn batch_answers_in_order() {
        let host = TestHost::new()
            .config("attribute", "employees")
            .config("op", "gt")
            .config("value", "100");
        let items = vec![
            RuleInput::new(acme(), vec![]),
            RuleInput::new(Contact::new("small").with_attr("employees", 5), vec![]),
        ];
        assert_eq!(
            AttributeMatch::matches_batch(&host.ctx(), &items).unwrap(),
            vec![true, false]
        );
    }
}
