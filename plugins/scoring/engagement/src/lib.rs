//! Implicit scoring: points per touchpoint kind, a pricing-page visit as a
//! micro conversion, and a cap so that one kind scores at most
//! `max_per_day` times in 24 hours (ten opens of one mail are one interest,
//! not ten).

use nachfass_sdk::*;

pub struct Engagement;

const DEFAULT_POINTS: &[(&str, i64)] = &[
    ("email.opened", 1),
    ("email.clicked", 3),
    ("page.visited", 1),
    ("download", 5),
    ("form.submitted", 5),
    ("webinar.registered", 5),
    ("webinar.attended", 10),
    ("demo.requested", 20),
    ("email.unsubscribed", -10),
    ("email.bounced", -5),
];

/// The binding's configuration, read from the host once per call or per
/// batch. A value that does not parse fails only the events that need it,
/// as before batches existed.
struct Settings {
    points: Option<String>,
    pricing_path: String,
    pricing_points: Result<i64, PluginError>,
    max_per_day: Result<u32, PluginError>,
}

impl Settings {
    fn read(ctx: &Ctx) -> Settings {
        Settings {
            points: ctx.config("points"),
            pricing_path: ctx
                .config("pricing_path")
                .unwrap_or_else(|| "/pricing".to_owned())
                .to_lowercase(),
            pricing_points: ctx.config_or("pricing_points", 10),
            max_per_day: ctx.config_or("max_per_day", 5),
        }
    }

    /// Points for `kind`: the configured table over the defaults.
    fn points_for(&self, kind: &str) -> Result<i64, PluginError> {
        if let Some(table) = &self.points {
            for entry in table.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                let (name, points) = entry.rsplit_once(':').ok_or_else(|| {
                    PluginError::bad_config(
                        "points",
                        &format!("entry `{entry}` is not `kind:points`"),
                    )
                })?;
                if name.trim() == kind {
                    return points.trim().parse().map_err(|_| {
                        PluginError::bad_config(
                            "points",
                            &format!("points in `{entry}` are not a whole number"),
                        )
                    });
                }
            }
        }
        Ok(DEFAULT_POINTS
            .iter()
            .find(|(name, _)| *name == kind)
            .map_or(0, |(_, points)| *points))
    }

    fn is_pricing_visit(&self, event: &Event) -> bool {
        event.kind == "page.visited"
            && ["url", "path"]
                .iter()
                .filter_map(|key| event.prop(key).and_then(Value::as_str))
                .any(|url| url.to_lowercase().contains(&self.pricing_path))
    }

    fn score(&self, event: &Event, activity: &[ActivityCount]) -> Result<ScoreChange, PluginError> {
        let max_per_day = self.max_per_day.clone()?;
        let mut change = ScoreChange::none();
        let (points, reason) = if self.is_pricing_visit(event) {
            (
                self.pricing_points.clone()?,
                "pricing page visit (micro conversion)",
            )
        } else {
            (self.points_for(&event.kind)?, event.kind.as_str())
        };
        let today = activity
            .iter()
            .find(|a| a.kind == event.kind)
            .map_or(0, |a| a.last_24_hours);
        // Caps limit praise, never penalties: every bounce counts.
        if points > 0 && today >= max_per_day {
            return Ok(change);
        }
        change.add(points, format!("{reason} {points:+}"));
        Ok(change)
    }
}

impl Scorer for Engagement {
    fn on_event(
        ctx: &Ctx,
        _contact: &Contact,
        event: &Event,
        activity: &[ActivityCount],
    ) -> Result<ScoreChange, PluginError> {
        Settings::read(ctx).score(event, activity)
    }

    /// The configuration is read once for the whole batch.
    fn on_event_batch(
        ctx: &Ctx,
        items: &[ScorerInput],
    ) -> Result<Vec<Result<ScoreChange, PluginError>>, PluginError> {
        let settings = Settings::read(ctx);
        Ok(items
            .iter()
            .map(|item| settings.score(&item.event, &item.activity))
            .collect())
    }
}

export_scorer!(Engagement);

#[cfg(test)]
mod tests {
    use super::*;
    use nachfass_sdk::testing::TestHost;

    fn score(host: &TestHost, event: Event, today: u32) -> ScoreChange {
        let activity = [ActivityCount::new(&event.kind, today, Some(0)).with_last_24_hours(today)];
        host.on_event::<Engagement>(&Contact::new("c"), &event, &activity)
            .unwrap()
    }

    #[test]
    fn default_points_per_kind() {
        let host = TestHost::new();
        assert_eq!(score(&host, Event::new("email.clicked", 0), 0).delta, 3);
        assert_eq!(score(&host, Event::new("webinar.attended", 0), 0).delta, 10);
        assert_eq!(
            score(&host, Event::new("email.unsubscribed", 0), 0).delta,
            -10
        );
        assert_eq!(
            score(&host, Event::new("something.else", 0), 0),
            ScoreChange::none()
        );
    }

    #[test]
    fn pricing_page_is_a_micro_conversion() {
        let host = TestHost::new();
        let visit =
            Event::new("page.visited", 0).with_prop("url", "https://acme.example/Pricing?plan=pro");
        let change = score(&host, visit, 0);
        assert_eq!(change.delta, 10);
        assert_eq!(
            change.reasons,
            ["pricing page visit (micro conversion) +10"]
        );
        let blog = Event::new("page.visited", 0).with_prop("path", "/blog/follow-up");
        assert_eq!(score(&host, blog, 0).delta, 1);
    }

    #[test]
    fn caps_stop_praise_but_not_penalties() {
        let host = TestHost::new().config("max_per_day", "2");
        assert_eq!(score(&host, Event::new("email.opened", 0), 1).delta, 1);
        assert_eq!(score(&host, Event::new("email.opened", 0), 2).delta, 0);
        assert_eq!(score(&host, Event::new("email.bounced", 0), 9).delta, -5);
    }

    #[test]
    fn configured_points_override_defaults() {
        let host = TestHost::new()
            .config("points", "email.opened:0, demo.booked:30")
            .config("pricing_points", "25");
        assert_eq!(score(&host, Event::new("email.opened", 0), 0).delta, 0);
        assert_eq!(score(&host, Event::new("demo.booked", 0), 0).delta, 30);
        assert_eq!(score(&host, Event::new("email.clicked", 0), 0).delta, 3);
        let visit = Event::new("page.visited", 0).with_prop("url", "/pricing");
        assert_eq!(score(&host, visit, 0).delta, 25);
    }

    #[test]
    fn a_batch_answers_like_single_calls() {
        let visit = Event::new("page.visited", 0).with_prop("url", "/pricing");
        let items = [
            ScorerInput::new(Contact::new("a"), Event::new("email.opened", 0), vec![]),
            ScorerInput::new(Contact::new("a"), visit, vec![]),
            ScorerInput::new(Contact::new("b"), Event::new("download", 0), vec![]),
        ];
        for host in [
            TestHost::new(),
            TestHost::new().config("pricing_points", "lots"),
            TestHost::new().config("points", "download:x"),
        ] {
            let ctx = host.ctx();
            let single: Vec<_> = items
                .iter()
                .map(|i| Engagement::on_event(&ctx, &i.contact, &i.event, &i.activity))
                .collect();
            assert_eq!(Engagement::on_event_batch(&ctx, &items).unwrap(), single);
        }
        let host = TestHost::new().config("pricing_points", "lots");
        let answers = Engagement::on_event_batch(&host.ctx(), &items).unwrap();
        assert_eq!(answers[0].as_ref().unwrap().delta, 1);
        assert_eq!(answers[1].as_ref().unwrap_err().code, "bad-config");
    }

    #[test]
    fn malformed_config_is_reported() {
        let host = TestHost::new().config("points", "email.opened=3");
        let err = Engagement::on_event(
            &host.ctx(),
            &Contact::new("c"),
            &Event::new("email.opened", 0),
            &[],
        )
        .unwrap_err();
        assert_eq!(err.code, "bad-config");
        let host = TestHost::new().config("max_per_day", "many");
        assert!(
            host.on_event::<Engagement>(&Contact::new("c"), &Event::new("x", 0), &[])
                .is_err()
        );
    }
}
