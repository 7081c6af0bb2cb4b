//! Circuit breakers per binding and plugin version: a sliding window of
//! call outcomes on this node. When failures (traps, limits, the plugin's
//! own errors) reach the threshold, the breaker trips once; what happens
//! then (rollback or pause, on every node) is decided above the runtime.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// When a breaker trips.
#[derive(Clone, Debug, PartialEq)]
pub struct BreakerConfig {
    /// How far back outcomes count.
    pub window: Duration,
    /// Calls in the window before the breaker may trip.
    pub min_calls: usize,
    /// Share of failed calls that trips it (0.5: half).
    pub failure_ratio: f64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            window: Duration::from_secs(60),
            min_calls: 20,
            failure_ratio: 0.5,
        }
    }
}

/// A breaker that just tripped.
#[derive(Clone, Debug, PartialEq)]
pub struct Trip {
    pub binding: String,
    /// `name@version` of the plugin version that failed.
    pub plugin: String,
    pub calls: usize,
    pub failures: usize,
}

#[derive(Default)]
struct Window {
    outcomes: VecDeque<(Instant, bool)>,
    /// When it tripped. It stays open for one window length (while the
    /// cluster rolls back or pauses), then counts afresh, on every node.
    tripped: Option<Instant>,
}

/// Every breaker of this node.
#[derive(Default)]
pub struct Breakers {
    config: BreakerConfig,
    windows: Mutex<HashMap<(String, String), Window>>,
}

impl Breakers {
    pub fn new(config: BreakerConfig) -> Breakers {
        Breakers {
            config,
            windows: Mutex::default(),
        }
    }

    /// Records one call of `plugin` (`name@version`) for `binding`; returns
    /// the trip when this call made the breaker trip.
    pub fn record(&self, binding: &str, plugin: &str, failed: bool) -> Option<Trip> {
        self.record_at(binding, plugin, failed, Instant::now())
    }

    fn record_at(&self, binding: &str, plugin: &str, failed: bool, at: Instant) -> Option<Trip> {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let window = windows
            .entry((binding.to_owned(), plugin.to_owned()))
            .or_default();
        if let Some(when) = window.tripped {
            if at.duration_since(when) <= self.config.window {
                return None;
            }
            window.tripped = None;
        }
        window.outcomes.push_back((at, failed));
        while window
            .outcomes
            .front()
            .is_some_and(|(when, _)| at.duration_since(*when) > self.config.window)
        {
            window.outcomes.pop_front();
        }
        let calls = window.outcomes.len();
        let failures = window.outcomes.iter().filter(|(_, failed)| *failed).count();
        if calls >= self.config.min_calls
            && failures as f64 >= self.config.failure_ratio * calls as f64
        {
            window.tripped = Some(at);
            window.outcomes.clear();
            return Some(Trip {
                binding: binding.to_owned(),
                plugin: plugin.to_owned(),
                calls,
                failures,
            });
        }
        None
    }

    /// Closes every breaker of `binding` again (an operator resumed it).
    pub fn reset(&self, binding: &str) {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        windows.retain(|(b, _), _| b != binding);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trips_once_at_half_of_twenty_calls_within_the_window() {
        let breakers = Breakers::default();
        let start = Instant::now();
        let mut trips = Vec::new();
        for i in 0..40 {
            let failed = i >= 10;
            if let Some(trip) = breakers.record_at("fit", "flaky@2.0.0", failed, start) {
                trips.push((i, trip));
            }
        }
        assert_eq!(trips.len(), 1, "{trips:?}");
        assert_eq!(
            (trips[0].0, trips[0].1.calls, trips[0].1.failures),
            (19, 20, 10)
        );
        // Another binding of the same version has its own breaker.
        assert_eq!(
            breakers.record_at("other", "flaky@2.0.0", true, start),
            None
        );
    }

    #[test]
    fn old_outcomes_leave_the_window_and_reset_closes_it() {
        let breakers = Breakers::default();
        let start = Instant::now();
        for _ in 0..15 {
            breakers.record_at("fit", "p@1.0.0", true, start);
        }
        // A minute later those failures no longer count.
        let later = start + Duration::from_secs(61);
        for _ in 0..19 {
            assert_eq!(breakers.record_at("fit", "p@1.0.0", false, later), None);
        }
        for _ in 0..19 {
            breakers.record_at("fit", "p@1.0.0", true, later);
        }
        assert_eq!(
            breakers.record_at("fit", "p@1.0.0", true, later),
            None,
            "tripped already"
        );
        let much_later = later + Duration::from_secs(61);
        for _ in 0..19 {
            breakers.record_at("fit", "p@1.0.0", true, much_later);
        }
        assert!(
            breakers
                .record_at("fit", "p@1.0.0", true, much_later)
                .is_some(),
            "re-armed"
        );
        breakers.reset("fit");
        assert_eq!(
            breakers.record_at("fit", "p@1.0.0", true, later),
            None,
            "counts afresh"
        );
    }
}
