//! Delivery rate limits of channel bindings: the configuration on the
//! binding and the token bucket behind it. The bucket is one row per
//! binding in the database, so the limit holds for the whole cluster, not
//! per node: a batch takes its tokens from that row in one transaction
//! (row-locked on PostgreSQL, the single writer on SQLite), refilling it
//! from the clock first.

use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::{Dialect, Store, StoreError};

/// The most messages a second a rate may allow: more than any provider
/// sells, and the scale the bucket's arithmetic is exact at.
pub const MAX_PER_SECOND: f64 = 100_000.0;

/// The slowest rate: one message an hour. Slower would push deferred
/// messages days out for every batch that finds the bucket empty.
pub const MIN_PER_SECOND: f64 = 1.0 / 3600.0;

/// The largest burst.
pub const MAX_BURST: u32 = 100_000;

/// How fast a channel binding may deliver, cluster-wide: `per_second` or
/// `per_minute` (one of them), and a `burst` the bucket holds (by default
/// one period's worth: 10 for 10 a second, 30 for 30 a minute).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_second: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_minute: Option<f64>,
    /// Messages that may go out at once after a quiet spell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

impl Rate {
    /// Refuses a rate that is not one positive, finite amount within the
    /// maxima, or a burst outside 1..=[`MAX_BURST`], saying which and why.
    pub fn check(&self) -> Result<(), String> {
        let per_second = match (self.per_second, self.per_minute) {
            (Some(n), None) => checked("per_second", n, 1.0)?,
            (None, Some(n)) => checked("per_minute", n, 60.0)?,
            (Some(_), Some(_)) => {
                return Err("rate: give per_second or per_minute, not both".into());
            }
            (None, None) => {
                return Err(
                    "rate needs per_second or per_minute, e.g. {\"per_second\": 10, \"burst\": 20}"
                        .into(),
                );
            }
        };
        debug_assert!(per_second > 0.0);
        match self.burst {
            Some(b) if b == 0 || b > MAX_BURST => Err(format!(
                "rate.burst must be between 1 and {MAX_BURST} messages, not {b}"
            )),
            _ => Ok(()),
        }
    }

    /// Tokens added per millisecond.
    pub fn per_ms(&self) -> f64 {
        match (self.per_second, self.per_minute) {
            (Some(n), _) => n / 1000.0,
            (None, Some(n)) => n / 60_000.0,
            (None, None) => MIN_PER_SECOND / 1000.0,
        }
    }

    /// Tokens the bucket holds at most.
    pub fn burst(&self) -> f64 {
        match self.burst {
            Some(b) => f64::from(b),
            None => {
                let period = self.per_second.or(self.per_minute).unwrap_or(1.0);
                period.ceil().clamp(1.0, f64::from(MAX_BURST))
            }
        }
    }
}

/// `n` messages per `seconds`, checked; as messages per second.
fn checked(field: &str, n: f64, seconds: f64) -> Result<f64, String> {
    let per_second = n / seconds;
    if !n.is_finite() || n <= 0.0 {
        return Err(format!(
            "rate.{field} must be a positive number of messages, not {n}"
        ));
    }
    if per_second > MAX_PER_SECOND {
        return Err(format!(
            "rate.{field} {n} is more than the most allowed, {} a second",
            MAX_PER_SECOND
        ));
    }
    if per_second < MIN_PER_SECOND {
        return Err(format!(
            "rate.{field} {n} is slower than the slowest allowed, one message an hour"
        ));
    }
    Ok(per_second)
}

/// What a batch got from a bucket: how many of its messages may go out
/// now, and when each of the rest is due again (in order).
#[derive(Clone, Debug, PartialEq)]
pub struct Grant {
    pub granted: u32,
    pub deferred_to: Vec<i64>,
}

/// The bucket's state after refilling it and taking `want` tokens at
/// `now`, as (grant, tokens left, queued until).
fn take(
    rate: &Rate,
    (tokens, refilled_at, queued_until): (f64, i64, i64),
    want: u32,
    now: i64,
) -> (Grant, f64, i64) {
    let per_ms = rate.per_ms();
    // A node whose clock is behind adds nothing (and takes the time back).
    let elapsed = (now - refilled_at).max(0) as f64;
    let available = (tokens + elapsed * per_ms).min(rate.burst());
    let granted = (available.floor().max(0.0) as u32).min(want);
    let left = available - f64::from(granted);
    let deferred = want - granted;
    if deferred == 0 {
        return (
            Grant {
                granted,
                deferred_to: Vec::new(),
            },
            left,
            queued_until,
        );
    }
    // The next token comes when the bucket refills to one, or after the
    // messages deferred before have had theirs, whichever is later; the
    // rest follow one token apart, so a backlog is spread at the rate
    // instead of coming back all at once to be deferred again.
    let spacing = 1.0 / per_ms;
    let first = (now as f64 + (1.0 - left) / per_ms).max(queued_until as f64 + spacing);
    // Rounded up: at its due time, a message's token is there.
    let deferred_to: Vec<i64> = (0..deferred)
        .map(|k| (first + f64::from(k) * spacing).ceil() as i64)
        .collect();
    let last = deferred_to.last().copied().unwrap_or(queued_until);
    (
        Grant {
            granted,
            deferred_to,
        },
        left,
        last,
    )
}

impl Store {
    /// Takes up to `want` tokens from `binding`'s bucket at `now`, in one
    /// transaction (the bucket is made full the first time). A crash
    /// after this and before the sends only wastes the tokens.
    pub async fn take_tokens(
        &self,
        binding: &str,
        rate: &Rate,
        want: u32,
        now: i64,
    ) -> Result<Grant, StoreError> {
        let select = match self.dialect {
            Dialect::Postgres => {
                "SELECT tokens, refilled_at, queued_until FROM rate_buckets WHERE binding = $1 FOR UPDATE"
            }
            // One writer at a time: the write transaction is the lock.
            Dialect::Sqlite => {
                "SELECT tokens, refilled_at, queued_until FROM rate_buckets WHERE binding = $1"
            }
        };
        let mut tx = self.write_tx().await?;
        let mut row = sqlx::query(select)
            .bind(binding.to_owned())
            .fetch_optional(&mut *tx)
            .await?;
        if row.is_none() {
            // Two nodes may both find no row: one inserts, the other waits
            // on it and then reads (and locks) the row the first made.
            sqlx::query(
                "INSERT INTO rate_buckets (binding, tokens, refilled_at, queued_until) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (binding) DO NOTHING",
            )
            .bind(binding.to_owned())
            .bind(rate.burst())
            .bind(now)
            .bind(0_i64)
            .execute(&mut *tx)
            .await?;
            row = sqlx::query(select)
                .bind(binding.to_owned())
                .fetch_optional(&mut *tx)
                .await?;
        }
        let row = row.ok_or_else(|| {
            StoreError::Invalid(format!("the rate bucket of `{binding}` vanished"))
        })?;
        let state = (
            row.try_get::<f64, _>("tokens")?,
            row.try_get::<i64, _>("refilled_at")?,
            row.try_get::<i64, _>("queued_until")?,
        );
        let (grant, tokens, queued_until) = take(rate, state, want, now);
        sqlx::query(
            "UPDATE rate_buckets SET tokens = $1, refilled_at = $2, queued_until = $3 WHERE binding = $4",
        )
        .bind(tokens)
        .bind(now.max(state.1))
        .bind(queued_until)
        .bind(binding.to_owned())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(grant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(per_second: f64, burst: u32) -> Rate {
        Rate {
            per_second: Some(per_second),
            per_minute: None,
            burst: Some(burst),
        }
    }

    #[test]
    fn a_full_bucket_grants_its_burst_and_spreads_the_rest() {
        let (grant, left, queued) = take(&rate(10.0, 3), (3.0, 0, 0), 5, 1_000);
        assert_eq!(grant.granted, 3);
        assert_eq!(left, 0.0);
        // One token every 100 ms.
        assert_eq!(grant.deferred_to, vec![1_100, 1_200]);
        assert_eq!(queued, 1_200);
    }

    #[test]
    fn later_deferrals_queue_behind_earlier_ones() {
        let r = rate(10.0, 3);
        let (grant, _, queued) = take(&r, (0.0, 1_000, 1_200), 2, 1_000);
        assert_eq!(grant.granted, 0);
        assert_eq!(grant.deferred_to, vec![1_300, 1_400]);
        assert_eq!(queued, 1_400);
    }

    #[test]
    fn refills_with_time_up_to_the_burst() {
        let r = rate(10.0, 3);
        let (grant, left, _) = take(&r, (0.0, 0, 0), 1, 150);
        assert_eq!(grant.granted, 1);
        assert!((left - 0.5).abs() < 1e-9, "{left}");
        let (grant, left, _) = take(&r, (0.0, 0, 0), 10, 3_600_000);
        assert_eq!((grant.granted, left), (3, 0.0));
        // A clock behind the last refill adds nothing.
        let (grant, _, _) = take(&r, (0.0, 5_000, 0), 1, 1_000);
        assert_eq!(grant.granted, 0);
    }

    #[test]
    fn bad_rates_are_refused_with_the_field_named() {
        for (bad, field) in [
            (rate(0.0, 1), "per_second"),
            (rate(-1.0, 1), "per_second"),
            (rate(f64::NAN, 1), "per_second"),
            (rate(f64::INFINITY, 1), "per_second"),
            (rate(1e9, 1), "per_second"),
            (rate(10.0, 0), "burst"),
            (rate(10.0, MAX_BURST + 1), "burst"),
        ] {
            let why = bad.check().unwrap_err();
            assert!(why.contains(field), "{why}");
        }
        let neither = Rate {
            per_second: None,
            per_minute: None,
            burst: Some(2),
        };
        assert!(neither.check().is_err());
        let slow = Rate {
            per_second: None,
            per_minute: Some(0.001),
            burst: None,
        };
        assert!(slow.check().unwrap_err().contains("slowest"));
        assert_eq!(rate(10.0, 20).check(), Ok(()));
    }

    #[test]
    fn the_default_burst_is_one_period() {
        let per_minute = Rate {
            per_second: None,
            per_minute: Some(30.0),
            burst: None,
        };
        assert_eq!(per_minute.burst(), 30.0);
        let slow = Rate {
            per_second: Some(0.5),
            per_minute: None,
            burst: None,
        };
        assert_eq!(slow.burst(), 1.0);
    }
}
