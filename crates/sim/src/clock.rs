//! Simulated time: every realistic delay of the world (VM clone, boot, pod start) goes through
//! [`Speed::delay`], so `--speed 50` runs the world fifty times faster than its defaults.

use std::time::Duration;

/// How much faster than real life the world runs (`1.0`: realistic delays).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Speed(pub f64);

impl Default for Speed {
    fn default() -> Self {
        Speed(1.0)
    }
}

impl Speed {
    /// The simulated duration of something that takes `realistic` in real life.
    ///
    /// Factors that are not finite and positive count as `1.0`, so a bad flag cannot stop time.
    pub fn delay(&self, realistic: Duration) -> Duration {
        let factor = if self.0.is_finite() && self.0 > 0.0 {
            self.0
        } else {
            1.0
        };
        realistic.div_f64(factor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn divides_by_the_factor() {
        assert_eq!(
            Speed(50.0).delay(Duration::from_secs(100)),
            Duration::from_secs(2)
        );
        assert_eq!(
            Speed(0.0).delay(Duration::from_secs(3)),
            Duration::from_secs(3)
        );
    }
}
