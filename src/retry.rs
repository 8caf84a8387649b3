//! Exponential backoff between retries, as in afterburn's `retry`: the first retry waits
//! `initial`, each further one twice as long, never more than `max`. No jitter: the callers
//! retry one thing each (an upload, a unit's restart), so there is no herd to spread.

use std::time::Duration;

/// Doubling delays from `initial`, capped at `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The delay before the first retry.
    pub initial: Duration,
    /// The largest delay.
    pub max: Duration,
}

impl Backoff {
    /// A backoff from `initial` up to `max`.
    pub const fn new(initial: Duration, max: Duration) -> Self {
        Backoff { initial, max }
    }

    /// The delay before retry number `attempt` (1 for the first retry; 0 counts as 1):
    /// `initial * 2^(attempt-1)`, at most `max`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1).min(31))
            .unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap() {
        let backoff = Backoff::new(Duration::from_secs(5), Duration::from_secs(600));
        let delays: Vec<u64> = (1..=10).map(|n| backoff.delay(n).as_secs()).collect();
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 320, 600, 600, 600]);
        assert_eq!(backoff.delay(0), backoff.delay(1));
        assert_eq!(backoff.delay(1000), backoff.max);
        assert_eq!(backoff.delay(u32::MAX), backoff.max);
    }

    #[test]
    fn never_overflows() {
        let backoff = Backoff::new(Duration::MAX, Duration::MAX);
        assert_eq!(backoff.delay(40), Duration::MAX);
        let zero = Backoff::new(Duration::ZERO, Duration::from_secs(1));
        assert_eq!(zero.delay(7), Duration::ZERO);
    }
}
