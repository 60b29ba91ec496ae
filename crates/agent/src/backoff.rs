//! Reconnect delays: exponential backoff with full jitter ("Exponential Backoff And Jitter",
//! AWS architecture blog): the n-th delay is uniform in `[0, min(cap, base * 2^n)]`, so
//! thousands of agents that lost their manager at the same moment spread their reconnects
//! over the whole window instead of arriving in waves.

use std::time::Duration;

/// First backoff window.
pub const BASE: Duration = Duration::from_millis(500);
/// Largest backoff window.
pub const CAP: Duration = Duration::from_secs(30);

/// The upper bound of the delay after `attempt` failures (0-based): `min(cap, base * 2^attempt)`.
pub fn window(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let factor = 2u32.checked_pow(attempt.min(31)).unwrap_or(u32::MAX);
    base.checked_mul(factor).map_or(cap, |d| d.min(cap))
}

/// A delay drawn with full jitter: `unit` (in `[0, 1)`) scales the window.
pub fn full_jitter(attempt: u32, base: Duration, cap: Duration, unit: f64) -> Duration {
    window(attempt, base, cap).mul_f64(unit.clamp(0.0, 1.0))
}

/// Backoff state of one reconnect loop.
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    attempt: u32,
}

impl Backoff {
    /// The next delay (random, within the current window), and widens the window.
    pub fn next_delay(&mut self) -> Duration {
        let delay = full_jitter(self.attempt, BASE, CAP, fastrand::f64());
        self.attempt = self.attempt.saturating_add(1);
        delay
    }

    /// Starts over after a connection that worked.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_double_up_to_the_cap() {
        assert_eq!(window(0, BASE, CAP), Duration::from_millis(500));
        assert_eq!(window(1, BASE, CAP), Duration::from_secs(1));
        assert_eq!(window(5, BASE, CAP), Duration::from_secs(16));
        assert_eq!(window(6, BASE, CAP), CAP);
        assert_eq!(window(1000, BASE, CAP), CAP);
    }

    #[test]
    fn delays_stay_within_zero_and_the_window() {
        let mut backoff = Backoff::default();
        for attempt in 0..200u32 {
            let delay = backoff.next_delay();
            assert!(delay <= window(attempt, BASE, CAP), "{attempt}: {delay:?}");
            assert!(delay <= CAP);
        }
        assert_eq!(full_jitter(3, BASE, CAP, 0.0), Duration::ZERO);
        assert_eq!(full_jitter(3, BASE, CAP, 1.0), Duration::from_secs(4));
        assert_eq!(full_jitter(3, BASE, CAP, 7.0), Duration::from_secs(4));
        backoff.reset();
        assert!(backoff.next_delay() <= BASE);
    }
}
