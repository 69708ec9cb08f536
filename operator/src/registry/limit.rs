//! Per-registry request budget (rate and concurrency) and the retry schedule.

use std::time::Duration;

use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Paces requests to one registry: at most `max_concurrency` in flight and, when a
/// rate is set, starts spaced `1/requests_per_second` apart.
#[derive(Debug)]
pub(crate) struct Budget {
    slots: std::sync::Arc<Semaphore>,
    interval: Option<Duration>,
    next_start: Mutex<Instant>,
}

impl Budget {
    pub(crate) fn new(max_concurrency: usize, requests_per_second: Option<f64>) -> Self {
        let interval = requests_per_second
            .filter(|r| r.is_finite() && *r > 0.0)
            .map(|r| Duration::from_secs_f64(1.0 / r));
        Self {
            slots: std::sync::Arc::new(Semaphore::new(max_concurrency.max(1))),
            interval,
            next_start: Mutex::new(Instant::now()),
        }
    }

    /// Waits for a slot and for the rate limit; the permit is held until the response
    /// has been read.
    pub(crate) async fn acquire(&self) -> Option<OwnedSemaphorePermit> {
        let permit = self.slots.clone().acquire_owned().await.ok()?;
        if let Some(interval) = self.interval {
            let start = {
                let mut next = self.next_start.lock().await;
                let start = (*next).max(Instant::now());
                *next = start + interval;
                start
            };
            tokio::time::sleep_until(start).await;
        }
        Some(permit)
    }
}

/// Exponential backoff with ±50 % jitter: `base · 2^(attempt-1)`, capped at `max`.
/// `attempt` counts from 1 (the delay after the first failure).
pub(crate) fn backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    let exp = base.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(16)));
    let capped = exp.min(max);
    let jitter = 0.5 + fastrand::f64();
    capped.mul_f64(jitter).min(max)
}

/// Parses `Retry-After` as delta-seconds (RFC 9110 §10.2.3). HTTP-dates are not
/// parsed (registries send seconds); callers fall back to [`backoff`].
pub(crate) fn retry_after(value: Option<&str>) -> Option<Duration> {
    value?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_jitter_and_caps() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        for _ in 0..50 {
            let first = backoff(1, base, max);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(150));
            let third = backoff(3, base, max);
            assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(600));
            assert!(backoff(30, base, max) <= max);
        }
    }

    #[test]
    fn retry_after_reads_seconds_only() {
        assert_eq!(retry_after(Some(" 2 ")), Some(Duration::from_secs(2)));
        assert_eq!(retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")), None);
        assert_eq!(retry_after(None), None);
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_spaces_request_starts() {
        let budget = Budget::new(8, Some(10.0));
        let t0 = Instant::now();
        for _ in 0..5 {
            let _p = budget.acquire().await;
        }
        assert!(t0.elapsed() >= Duration::from_millis(400));
    }
}
