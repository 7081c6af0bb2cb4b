//! The policy gate before every send, enforced by the host: suppression,
//! consent, frequency cap and send window, in that order. A pure function
//! of the facts, so every rule is tested without a database.

use chrono::{DateTime, Datelike, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::model::journey::{Duration, Purpose, SendWindow, Weekday, WhenBlocked};
use crate::model::status::ConsentStatus;
pub use crate::store::suppressions::Suppression;

/// At most `max` marketing messages per contact in any `per`, across all
/// journeys and channels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrequencyCap {
    pub max: u32,
    pub per: Duration,
    #[serde(default)]
    pub on_exceed: WhenBlocked,
}

/// The server-wide rules.
#[derive(Clone, Debug)]
pub struct Policy {
    pub cap: FrequencyCap,
    /// For marketing sends whose journey and step name no window.
    pub default_window: SendWindow,
    /// For contacts without a time zone and windows without one.
    pub default_timezone: Tz,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            cap: FrequencyCap {
                max: 3,
                per: Duration::hours(7 * 24),
                on_exceed: WhenBlocked::Defer,
            },
            default_window: SendWindow::default(),
            default_timezone: chrono_tz::Europe::Berlin,
        }
    }
}

impl Suppression {
    /// Whether it stops a message on `channel` (marketing or not).
    pub fn applies(&self, channel: &str, marketing: bool) -> bool {
        (self.channel == "*" || self.channel == channel) && (self.scope == "all" || marketing)
    }
}

/// Everything the gate looks at for one send.
#[derive(Clone, Debug)]
pub struct SendFacts<'a> {
    pub purpose: Purpose,
    pub channel: &'a str,
    /// Status of the contact's consent for this channel and marketing.
    pub consent: Option<ConsentStatus>,
    /// When that consent was last recorded.
    pub consent_at: Option<i64>,
    /// When the contact's address was erased before (it came back since).
    pub erased_at: Option<i64>,
    pub suppressions: &'a [Suppression],
    /// The step's window, else the journey's.
    pub window: Option<&'a SendWindow>,
    pub contact_timezone: Option<&'a str>,
    /// When this contact's marketing messages of the cap's period were queued.
    pub recent_sends: &'a [i64],
    pub now: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    Send,
    Defer { until: i64, reason: String },
    Skip { reason: String },
}

pub fn decide(policy: &Policy, facts: &SendFacts<'_>) -> Decision {
    let marketing = facts.purpose == Purpose::Marketing;
    if let Some(s) = facts
        .suppressions
        .iter()
        .find(|s| s.applies(facts.channel, marketing))
    {
        return Decision::Skip {
            reason: format!("skipped: contact is suppressed ({})", s.reason),
        };
    }
    // An erased address that came back is not mailed until it gives
    // consent again, whatever the purpose.
    if let Some(erased) = facts.erased_at
        && facts.consent_at.is_none_or(|at| at <= erased)
    {
        return Decision::Skip {
            reason: "skipped: this address was erased; it needs new consent first".into(),
        };
    }
    if marketing && facts.consent != Some(ConsentStatus::Granted) {
        return Decision::Skip {
            reason: format!(
                "skipped: no marketing consent for {} ({})",
                facts.channel,
                facts.consent.map_or("none recorded", ConsentStatus::as_str)
            ),
        };
    }
    if marketing {
        let cap = &policy.cap;
        let mut recent: Vec<i64> = facts
            .recent_sends
            .iter()
            .copied()
            .filter(|t| *t > facts.now - cap.per.millis)
            .collect();
        if recent.len() >= cap.max as usize {
            recent.sort_unstable();
            let until = recent[recent.len() - cap.max as usize] + cap.per.millis;
            let limit = format!("{} per {}", cap.max, cap.per);
            return blocked(
                cap.on_exceed,
                until,
                format!("frequency cap {limit} reached"),
                policy.default_timezone,
            );
        }
    }
    let window = match (facts.window, marketing) {
        (Some(window), _) => window,
        (None, true) => &policy.default_window,
        (None, false) => return Decision::Send,
    };
    let tz = facts
        .contact_timezone
        .and_then(|tz| tz.parse::<Tz>().ok())
        .or_else(|| window.timezone.as_deref().and_then(|tz| tz.parse().ok()))
        .unwrap_or(policy.default_timezone);
    match next_opening(window, tz, facts.now) {
        None => Decision::Send,
        Some(until) => blocked(window.outside, until, "outside send window".to_owned(), tz),
    }
}

fn blocked(when: WhenBlocked, until: i64, why: String, tz: Tz) -> Decision {
    match when {
        WhenBlocked::Defer => Decision::Defer {
            until,
            reason: format!("deferred: {why} until {}", local_label(until, tz)),
        },
        WhenBlocked::Skip => Decision::Skip {
            reason: format!("skipped: {why}"),
        },
    }
}

/// `Mon 08:00 Europe/Berlin`.
pub fn local_label(at: i64, tz: Tz) -> String {
    match DateTime::<Utc>::from_timestamp_millis(at) {
        Some(utc) => format!(
            "{} {}",
            utc.with_timezone(&tz).format("%a %H:%M"),
            tz.name()
        ),
        None => at.to_string(),
    }
}

/// `None` when the window is open at `now`, else when it next opens.
pub fn next_opening(window: &SendWindow, tz: Tz, now: i64) -> Option<i64> {
    let local = DateTime::<Utc>::from_timestamp_millis(now)?.with_timezone(&tz);
    let at_minutes = |date: chrono::NaiveDate, minutes: u32| {
        let time = NaiveTime::from_num_seconds_from_midnight_opt(minutes.min(24 * 60 - 1) * 60, 0)?;
        let naive = date.and_time(time);
        // A time skipped by a daylight-saving change opens an hour later.
        tz.from_local_datetime(&naive)
            .earliest()
            .or_else(|| {
                tz.from_local_datetime(&(naive + chrono::Duration::hours(1)))
                    .earliest()
            })
            .map(|t| t.timestamp_millis())
    };
    for offset in 0..8 {
        let date = local.date_naive() + chrono::Days::new(offset);
        if !window.days.contains(&Weekday::from_chrono(date.weekday())) {
            continue;
        }
        let open = at_minutes(date, window.start.0)?;
        let close = at_minutes(date, window.end.0)?;
        if now < open {
            return Some(open);
        }
        if now < close {
            return None;
        }
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// 2026-11-23 is a Monday; Berlin is UTC+1 in November.
    fn berlin(day: u32, hour: u32, minute: u32) -> i64 {
        chrono_tz::Europe::Berlin
            .with_ymd_and_hms(2026, 11, day, hour, minute, 0)
            .unwrap()
            .timestamp_millis()
    }

    fn facts(now: i64) -> SendFacts<'static> {
        SendFacts {
            purpose: Purpose::Marketing,
            channel: "email",
            consent: Some(ConsentStatus::Granted),
            consent_at: Some(0),
            erased_at: None,
            suppressions: &[],
            window: None,
            contact_timezone: None,
            recent_sends: &[],
            now,
        }
    }

    #[test]
    fn marketing_waits_for_business_hours_in_the_contacts_zone() {
        let policy = Policy::default();
        assert_eq!(decide(&policy, &facts(berlin(24, 10, 0))), Decision::Send);
        // Friday 19:30 defers to Monday 08:00.
        let decision = decide(&policy, &facts(berlin(27, 19, 30)));
        assert_eq!(
            decision,
            Decision::Defer {
                until: berlin(30, 8, 0),
                reason: "deferred: outside send window until Mon 08:00 Europe/Berlin".into()
            }
        );
        // 08:30 in Berlin is 02:30 in New York: night there.
        let mut f = facts(berlin(24, 8, 30));
        f.contact_timezone = Some("America/New_York");
        let Decision::Defer { until, reason } = decide(&policy, &f) else {
            panic!("a night send went out")
        };
        assert_eq!(until, berlin(24, 14, 0));
        assert_eq!(
            reason,
            "deferred: outside send window until Tue 08:00 America/New_York"
        );
    }

    #[test]
    fn transactional_ignores_consent_cap_and_default_window() {
        let policy = Policy::default();
        let mut f = facts(berlin(29, 3, 0));
        f.purpose = Purpose::Transactional;
        f.consent = None;
        f.recent_sends = &[0, 1, 2, 3];
        assert_eq!(decide(&policy, &f), Decision::Send);
        // ... but not a hard bounce.
        let bounced = [Suppression {
            channel: "email".into(),
            reason: "hard_bounced".into(),
            scope: "all".into(),
            at: 0,
        }];
        f.suppressions = &bounced;
        assert!(
            matches!(decide(&policy, &f), Decision::Skip { reason } if reason.contains("hard_bounced"))
        );
    }

    #[test]
    fn unsubscribed_or_unconsented_marketing_is_skipped() {
        let policy = Policy::default();
        let unsubscribed = [Suppression {
            channel: "*".into(),
            reason: "unsubscribed".into(),
            scope: "marketing".into(),
            at: 0,
        }];
        let mut f = facts(berlin(24, 10, 0));
        f.suppressions = &unsubscribed;
        assert!(
            matches!(decide(&policy, &f), Decision::Skip { reason } if reason.contains("unsubscribed"))
        );
        let mut f = facts(berlin(24, 10, 0));
        f.consent = Some(ConsentStatus::Pending);
        assert_eq!(
            decide(&policy, &f),
            Decision::Skip {
                reason: "skipped: no marketing consent for email (pending)".into()
            }
        );
    }

    #[test]
    fn the_frequency_cap_defers_until_the_oldest_send_ages_out() {
        let mut policy = Policy::default();
        let now = berlin(26, 10, 0);
        let day = 86_400_000;
        let sends = [now - 6 * day, now - 2 * day, now - day];
        let mut f = facts(now);
        f.recent_sends = &sends;
        let Decision::Defer { until, reason } = decide(&policy, &f) else {
            panic!("the cap let a fourth message through")
        };
        assert_eq!(until, now + day);
        assert!(
            reason.starts_with("deferred: frequency cap 3 per 1w reached until"),
            "{reason}"
        );
        policy.cap.on_exceed = WhenBlocked::Skip;
        assert!(matches!(decide(&policy, &f), Decision::Skip { .. }));
        // A send older than the period no longer counts.
        let sends = [now - 8 * day, now - 2 * day, now - day];
        f.recent_sends = &sends;
        assert_eq!(decide(&policy, &f), Decision::Send);
    }

    #[test]
    fn an_erased_address_needs_new_consent() {
        let policy = Policy::default();
        let mut f = facts(berlin(24, 10, 0));
        f.erased_at = Some(5);
        f.purpose = Purpose::Transactional;
        assert!(
            matches!(decide(&policy, &f), Decision::Skip { reason } if reason.contains("erased"))
        );
        f.consent_at = Some(6);
        assert_eq!(decide(&policy, &f), Decision::Send);
    }

    #[test]
    fn a_window_may_skip_instead_of_defer() {
        let window = SendWindow {
            outside: WhenBlocked::Skip,
            ..SendWindow::default()
        };
        let mut f = facts(berlin(28, 12, 0));
        f.window = Some(&window);
        assert_eq!(
            decide(&Policy::default(), &f),
            Decision::Skip {
                reason: "skipped: outside send window".into()
            }
        );
    }
}
