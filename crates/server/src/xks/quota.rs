//! Request quotas: a token bucket per external key store, per node.
//!
//! Rules:
//! - A store's bucket holds at most one second of its quota and refills at
//!   its quota per second, so a store may burst up to its quota and then
//!   keeps to it; beyond that KMS gets `ThrottlingException` (the
//!   specification lets a proxy keep a quota per path prefix).
//! - Time here is the monotonic clock, not the Clock port: a rate is real
//!   elapsed time, and a wall clock set back or frozen (a test's) must not
//!   stop or flood the bucket.
//! - Buckets outlive directory reloads (see `directory`): changing a
//!   store's rule must not hand it a fresh second of quota.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Tokens refilled at `per_second`, at most `capacity` held.
#[derive(Debug)]
pub struct TokenBucket {
    state: Mutex<BucketState>,
}

#[derive(Debug)]
struct BucketState {
    capacity: f64,
    per_second: f64,
    tokens: f64,
    refilled_at: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(capacity: u32, per: Duration, now: Instant) -> Self {
        let capacity = f64::from(capacity.max(1));
        Self {
            state: Mutex::new(BucketState {
                capacity,
                per_second: capacity / per.as_secs_f64().max(f64::EPSILON),
                tokens: capacity,
                refilled_at: now,
            }),
        }
    }

    /// A store's quota: `per_second` requests a second, one second's burst.
    pub fn per_second(per_second: u32, now: Instant) -> Self {
        Self::new(per_second, Duration::from_secs(1), now)
    }

    /// Takes one token if there is one.
    pub fn try_take(&self, now: Instant) -> bool {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.refill(now);
        if state.tokens >= 1.0 {
            state.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Changes the rate (a store's quota edited); tokens held stay, up to
    /// the new capacity.
    pub fn set_per_second(&self, per_second: u32, now: Instant) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.refill(now);
        state.capacity = f64::from(per_second.max(1));
        state.per_second = state.capacity;
        state.tokens = state.tokens.min(state.capacity);
    }
}

impl BucketState {
    fn refill(&mut self, now: Instant) {
        // An instant before the last refill (calls racing) adds nothing.
        let elapsed = now.saturating_duration_since(self.refilled_at);
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.per_second).min(self.capacity);
        if now > self.refilled_at {
            self.refilled_at = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_bursts_to_its_quota_then_refills_at_its_rate() {
        let t0 = Instant::now();
        let bucket = TokenBucket::per_second(10, t0);
        assert_eq!((0..15).filter(|_| bucket.try_take(t0)).count(), 10);
        // A tenth of a second later: one more.
        let later = t0 + Duration::from_millis(100);
        assert!(bucket.try_take(later));
        assert!(!bucket.try_take(later));
        // Long idle: never more than one second's worth.
        let idle = t0 + Duration::from_secs(60);
        assert_eq!((0..15).filter(|_| bucket.try_take(idle)).count(), 10);
    }

    #[test]
    fn slower_buckets_and_rate_changes() {
        let t0 = Instant::now();
        let per_minute = TokenBucket::new(20, Duration::from_secs(60), t0);
        assert_eq!((0..30).filter(|_| per_minute.try_take(t0)).count(), 20);
        assert!(!per_minute.try_take(t0 + Duration::from_secs(2)));
        assert!(per_minute.try_take(t0 + Duration::from_secs(3)));

        let bucket = TokenBucket::per_second(100, t0);
        bucket.set_per_second(5, t0);
        assert_eq!((0..10).filter(|_| bucket.try_take(t0)).count(), 5);
        // A call with an earlier instant (calls racing) adds nothing.
        let t1 = t0 + Duration::from_millis(200);
        assert!(bucket.try_take(t1));
        assert!(!bucket.try_take(t0));
    }
}
