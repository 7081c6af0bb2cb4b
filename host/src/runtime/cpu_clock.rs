//! A call's CPU budget, counted in CPU time of the thread running the
//! guest rather than in wall time. The epoch deadline only says "look
//! again": on a loaded machine 10 ms of wall time may hold 1 ms of the
//! plugin's own work, and a healthy plugin must not fail because the box
//! is busy (the wall-clock limit still bounds every call).

use std::thread::ThreadId;
use std::time::Duration;

#[derive(Debug)]
pub struct CpuBudget {
    budget: Duration,
    used: Duration,
    /// Where and when the guest's CPU time was last read.
    last: Option<(ThreadId, Duration)>,
}

impl CpuBudget {
    pub fn new(budget: Duration) -> CpuBudget {
        CpuBudget {
            budget,
            used: Duration::ZERO,
            last: None,
        }
    }

    /// Starts counting on the current thread.
    pub fn start(&mut self) {
        self.last = thread_cpu_time().map(|now| (std::thread::current().id(), now));
    }

    /// What is left after counting the CPU time since the last look; zero
    /// when counting never started or the clock is unavailable (then the
    /// deadline is plain wall time, as before). Time spent on another
    /// thread after an async call moved is not seen: the wall-clock limit
    /// covers that.
    pub fn remaining(&mut self) -> Duration {
        let (Some((thread, then)), Some(now)) = (self.last, thread_cpu_time()) else {
            return Duration::ZERO;
        };
        let current = std::thread::current().id();
        if current == thread {
            self.used += now.saturating_sub(then);
        }
        self.last = Some((current, now));
        self.budget.saturating_sub(self.used)
    }
}

#[cfg(unix)]
#[allow(unsafe_code)]
fn thread_cpu_time() -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to a pointer we own; the
    // clock id is a constant every Unix we build for supports.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| {
        Duration::new(
            u64::try_from(ts.tv_sec).unwrap_or(0),
            u32::try_from(ts.tv_nsec).unwrap_or(0),
        )
    })
}

#[cfg(not(unix))]
fn thread_cpu_time() -> Option<Duration> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_work_and_not_sleep() {
        let mut budget = CpuBudget::new(Duration::from_millis(20));
        assert_eq!(budget.remaining(), Duration::ZERO, "not started");
        budget.start();
        std::thread::sleep(Duration::from_millis(30));
        assert!(
            budget.remaining() > Duration::from_millis(10),
            "sleeping is not work"
        );
        // Spinning is: 20 ms of it spend the budget (within a generous
        // wall-clock bound for a busy machine).
        let started = std::time::Instant::now();
        let mut spin = 0u64;
        while !budget.remaining().is_zero() && started.elapsed() < Duration::from_secs(10) {
            spin = std::hint::black_box(spin.wrapping_add(1));
        }
        assert!(budget.remaining().is_zero());
    }
}
