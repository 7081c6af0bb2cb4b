//! Explicit scoring: points for how well a contact's profile fits the ideal
//! customer, by industry, company size, position and budget.
//!
//! Each table is configurable; the defaults suit a B2B software vendor.
//! `on-profile` returns the profile's whole worth, so the host can replace
//! the previous value when attributes change.

use nachfass_sdk::*;

pub struct B2bFit;

const DEFAULT_INDUSTRY: &str =
    "software:20,it:20,saas:20,finance:15,manufacturing:10,consulting:10,retail:5";
const DEFAULT_SIZE: &str = "1-9:0,10-49:5,50-249:10,250-999:15,1000+:20";
const DEFAULT_POSITION: &str =
    "ceo:20,cto:20,founder:20,owner:20,vp:15,head:15,director:15,lead:10,manager:5";
const DEFAULT_BUDGET: &str = "0-999:0,1000-9999:10,10000-49999:15,50000+:20";

/// `key:points` pairs from a comma-separated list.
fn pairs(ctx: &Ctx, key: &str, default: &str) -> Result<Vec<(String, i64)>, PluginError> {
    let raw = ctx.config(key).unwrap_or_else(|| default.to_owned());
    raw.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let (name, points) = entry.rsplit_once(':').ok_or_else(|| {
                PluginError::bad_config(key, &format!("entry `{entry}` is not `name:points`"))
            })?;
            let points = points.trim().parse().map_err(|_| {
                PluginError::bad_config(key, &format!("points in `{entry}` are not a whole number"))
            })?;
            Ok((name.trim().to_lowercase(), points))
        })
        .collect()
}

/// `10-49` or `1000+` contains `value`?
fn in_range(key: &str, range: &str, value: f64) -> Result<bool, PluginError> {
    let bad =
        || PluginError::bad_config(key, &format!("range `{range}` is not `low-high` or `low+`"));
    if let Some(low) = range.strip_suffix('+') {
        return Ok(value >= low.trim().parse::<f64>().map_err(|_| bad())?);
    }
    let (low, high) = range.split_once('-').ok_or_else(bad)?;
    let low: f64 = low.trim().parse().map_err(|_| bad())?;
    let high: f64 = high.trim().parse().map_err(|_| bad())?;
    Ok(value >= low && value <= high)
}

fn score(ctx: &Ctx, contact: &Contact) -> Result<ScoreChange, PluginError> {
    let mut change = ScoreChange::none();
    let text = |key: &str| {
        contact
            .attr(key)
            .and_then(Value::as_str)
            .map(|s| s.trim().to_lowercase())
    };

    let industries = pairs(ctx, "industry_points", DEFAULT_INDUSTRY)?;
    if let Some(industry) = text("industry")
        && let Some((name, points)) = industries.iter().find(|(name, _)| *name == industry)
    {
        change.add(*points, format!("industry {name} {points:+}"));
    }

    for (key, attribute, default) in [
        ("size_points", "employees", DEFAULT_SIZE),
        ("budget_points", "budget", DEFAULT_BUDGET),
    ] {
        let ranges = pairs(ctx, key, default)?;
        if let Some(value) = contact.attr(attribute).and_then(Value::as_f64) {
            for (range, points) in &ranges {
                if in_range(key, range, value)? {
                    change.add(*points, format!("{attribute} {range} {points:+}"));
                    break;
                }
            }
        }
    }

    let positions = pairs(ctx, "position_points", DEFAULT_POSITION)?;
    if let Some(position) = text("position") {
        let words: Vec<&str> = position.split(|c: char| !c.is_alphanumeric()).collect();
        let best = positions
            .iter()
            .filter(|(word, _)| words.contains(&word.as_str()))
            .max_by_key(|(_, points)| *points);
        if let Some((word, points)) = best {
            change.add(*points, format!("position {word} {points:+}"));
        }
    }
    Ok(change)
}

impl Scorer for B2bFit {
    fn on_profile(ctx: &Ctx, contact: &Contact) -> Result<ScoreChange, PluginError> {
        score(ctx, contact)
    }
}

export_scorer!(B2bFit);

#[cfg(test)]
mod tests {
    use super::*;
    use nachfass_sdk::testing::TestHost;

    #[test]
    fn ideal_customer_scores_on_every_dimension() {
        let contact = Contact::new("c")
            .with_attr("industry", "Software")
            .with_attr("employees", 320)
            .with_attr("position", "Head of Marketing")
            .with_attr("budget", "25000");
        let change = TestHost::new().on_profile::<B2bFit>(&contact).unwrap();
        assert_eq!(change.delta, 20 + 15 + 15 + 15);
        assert_eq!(
            change.reasons,
            [
                "industry software +20",
                "employees 250-999 +15",
                "budget 10000-49999 +15",
                "position head +15"
            ]
        );
    }

    #[test]
    fn configured_tables_replace_the_defaults() {
        let host = TestHost::new()
            .config("industry_points", "retail:30, software:-5")
            .config("size_points", "1-49:10,50+:0")
            .config("position_points", "buyer:25");
        let contact = Contact::new("c")
            .with_attr("industry", "retail")
            .with_attr("employees", 12)
            .with_attr("position", "Senior Buyer");
        let change = host.on_profile::<B2bFit>(&contact).unwrap();
        assert_eq!(change.delta, 30 + 10 + 25);
    }

    #[test]
    fn an_empty_profile_is_worth_nothing() {
        let change = TestHost::new()
            .on_profile::<B2bFit>(&Contact::new("c"))
            .unwrap();
        assert_eq!(change, ScoreChange::none());
    }

    #[test]
    fn malformed_tables_name_the_key() {
        let host = TestHost::new().config("size_points", "lots:5");
        let contact = Contact::new("c").with_attr("employees", 3);
        let err = host.on_profile::<B2bFit>(&contact).unwrap_err();
        assert!(err.message.contains("size_points"), "{}", err.message);
        let host = TestHost::new().config("industry_points", "software=5");
        assert_eq!(
            host.on_profile::<B2bFit>(&contact).unwrap_err().code,
            "bad-config"
        );
    }

    #[test]
    fn profile_changes_do_not_score_events() {
        let event = Event::new("page.visited", 0);
        let change = TestHost::new()
            .on_event::<B2bFit>(&Contact::new("c"), &event, &[])
            .unwrap();
        assert_eq!(change.delta, 0);
    }
}
