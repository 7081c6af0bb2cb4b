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

/// Outcomes closer together than this share a bucket: the window holds
/// at most one bucket per slice (600 for a minute) whatever the call
/// rate, and an outcome leaves it at most one slice early.
const SLICE: Duration = Duration::from_millis(100);

/// The outcomes of calls that started a slice at `start`.
struct Bucket {
    start: Instant,
    calls: usize,
    failures: usize,
}

#[derive(Default)]
struct Window {
    buckets: VecDeque<Bucket>,
    /// The sums over `buckets`, kept as they change: a call costs the
    /// same however many calls the window holds.
    calls: usize,
    failures: usize,
    /// When it tripped. It stays open for one window length (while the
    /// cluster rolls back or pauses), then counts afresh, on every node.
    tripped: Option<Instant>,
}

/// Every breaker of this node.
#[derive(Default)]
pub struct Breakers {
    config: BreakerConfig,
    /// By binding, then plugin version.
    windows: Mutex<HashMap<String, HashMap<String, Window>>>,
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
        // Looked up by reference: the keys are copied only the first time.
        if !windows.get(binding).is_some_and(|w| w.contains_key(plugin)) {
            windows
                .entry(binding.to_owned())
                .or_default()
                .insert(plugin.to_owned(), Window::default());
        }
        let window = windows.get_mut(binding)?.get_mut(plugin)?;
        if let Some(when) = window.tripped {
            if at.duration_since(when) <= self.config.window {
                return None;
            }
            window.tripped = None;
        }
        match window.buckets.back_mut() {
            Some(bucket) if at.duration_since(bucket.start) < SLICE => {
                bucket.calls += 1;
                bucket.failures += usize::from(failed);
            }
            _ => window.buckets.push_back(Bucket {
                start: at,
                calls: 1,
                failures: usize::from(failed),
            }),
        }
        window.calls += 1;
        window.failures += usize::from(failed);
        while let Some(old) = window.buckets.front()
            && at.duration_since(old.start) > self.config.window
        {
            window.calls -= old.calls;
            window.failures -= old.failures;
            window.buckets.pop_front();
        }
        let (calls, failures) = (window.calls, window.failures);
        if calls >= self.config.min_calls
            && failures as f64 >= self.config.failure_ratio * calls as f64
        {
            window.tripped = Some(at);
            window.buckets.clear();
            window.calls = 0;
            window.failures = 0;
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
        windows.remove(binding);
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

    #[test]
    fn a_busy_window_keeps_its_counts_in_slices() {
        let breakers = Breakers::default();
        let start = Instant::now();
        // A minute of calls at 1,000/s, a third of them failing: counted
        // in at most one bucket per slice, never tripping.
        for i in 0..60_000u64 {
            let at = start + Duration::from_millis(i);
            assert_eq!(breakers.record_at("fit", "p@1.0.0", i % 3 == 0, at), None);
        }
        let windows = breakers.windows.lock().unwrap();
        let window = &windows["fit"]["p@1.0.0"];
        assert_eq!(window.buckets.len(), 600);
        assert_eq!(
            (window.calls, window.failures),
            (
                window.buckets.iter().map(|b| b.calls).sum(),
                window.buckets.iter().map(|b| b.failures).sum()
            )
        );
        assert_eq!(window.calls, 60_000);
        drop(windows);
        // Half a minute later the first half has left the window; failing
        // calls now tip it over half.
        let later = start + Duration::from_millis(90_000);
        let mut trip = None;
        for _ in 0..30_000 {
            trip = trip.or(breakers.record_at("fit", "p@1.0.0", true, later));
        }
        let trip = trip.expect("tripped");
        assert!(trip.failures * 2 >= trip.calls, "{trip:?}");
        assert!(trip.calls < 60_000, "old calls left the window: {trip:?}");
    }
}
