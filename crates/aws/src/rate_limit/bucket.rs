//! One operation's pacing: requests leave one at a time, at most one
//! interval apart, and the interval adapts to AWS's answers without ever
//! going below the configured quota's.
//!
//! - **Ceiling.** The configured quota, less the jitter margin, is the
//!   fastest the bucket ever goes: recovery stops there.
//! - **Multiplicative decrease.** A `ThrottlingException` means the quota is
//!   spent (other principals of the account use it too, or the account's
//!   quota is below the configured one): the rate halves, down to a floor of
//!   a 64th of the ceiling, but never slower than one request every 10 s
//!   (unless the ceiling itself is slower). The 64th lets a large quota that
//!   others nearly fill still be shared (6 halvings); the 10 s keeps a job
//!   from crawling for minutes over a burst of throttles, since the throttled
//!   request's own hold-back (growing pauses, see [`crate::retry::backoff`])
//!   already spaces out a quota that stays spent. Throttles of requests that
//!   left before the last decrease count once: they were sent at the old
//!   rate, and halving again for each would drop to the floor after one
//!   congested second.
//! - **Gradual recovery.** Each success takes a tenth off the gap between
//!   the current interval and the ceiling's. The approach is fast while far
//!   below the ceiling and slows as it nears the rate that was throttled, so
//!   a shared quota is probed gently instead of hit in a sawtooth; and since
//!   it counts successes rather than seconds, it behaves alike for a 1/s
//!   quota and a 2,000/s one (22 successes win back 90% of a halving).
//!
//! Requests leave in call order (a fair async lock), and the interval is
//! read when a request leaves, so a slow-down applies at once to everyone
//! waiting. Capacity one, no burst: AWS counts requests per second, and a
//! burst of a second's quota followed by the steady rate would put up to
//! twice the quota in one second.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use keyhold_core::cloud::CloudError;
use tokio::time::Instant;

use super::quotas::Rate;
use crate::retry::backoff;

/// How much further apart than the quota's interval requests leave. AWS
/// counts the requests that reach it; two that left exactly one interval
/// apart can arrive closer together (network and scheduling jitter) and the
/// second would be throttled. Two percent keeps a 1/s quota's requests
/// 20 ms apart more than needed, at a cost of 2% of the quota.
const JITTER_MARGIN_PERCENT: u32 = 2;
/// The slowest a throttled bucket goes, as a fraction of its ceiling...
const FLOOR_FRACTION: u32 = 64;
/// ...unless that is slower than one request this far apart.
const FLOOR_LONGEST_INTERVAL: Duration = Duration::from_secs(10);
/// Each success takes this fraction (1/N) off the gap to the ceiling.
const RECOVERY_DIVISOR: u32 = 10;
/// Queueing shorter than this, without a sleep, is callers taking turns at
/// the lock, not the quota holding one back: it is not counted as a wait.
const NOTICEABLE_QUEUEING: Duration = Duration::from_millis(1);

/// The spacing of requests at `rate`, the jitter margin included.
pub(super) fn paced_interval(rate: Rate) -> Duration {
    let exact = rate.interval();
    exact + exact * JITTER_MARGIN_PERCENT / 100
}

/// What one call spent on pacing, its re-sent attempts included.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct CallPacing {
    pub waited: Duration,
    pub throttled: u32,
}

/// An operation's pacing since start-up, for `/metrics`.
#[derive(Clone, Debug, PartialEq)]
pub struct OperationPacingStats {
    /// The AWS operation (`CreateAlias/UpdateAlias` for the call that sends either).
    pub operation: &'static str,
    /// The ceiling: the configured (or default) quota, a tenth of it for
    /// the drift check's background reads.
    pub quota: Rate,
    /// Requests per second the bucket allows now: the ceiling until AWS
    /// throttles, less after (keyhold leaves a further 2% margin either way).
    pub rate_now: f64,
    /// Time requests spent waiting for their turn.
    pub waited: Duration,
    /// Requests that had to wait for their turn.
    pub waits: u64,
    /// Requests AWS answered with a throttling error.
    pub throttled: u64,
}

/// A request's turn: when it left, and how long pacing held it back (zero
/// when it went at once).
struct Turn {
    sent_at: Instant,
    waited: Duration,
}

#[derive(Debug)]
struct Pace {
    /// The earliest instant the next request may leave.
    next_free: Option<Instant>,
    /// The spacing now, between the ceiling's and the floor's.
    interval: Duration,
    /// When AWS's last throttle slowed the bucket down.
    slowed_at: Option<Instant>,
}

#[derive(Debug, Default)]
struct Totals {
    waited_nanos: AtomicU64,
    waits: AtomicU64,
    throttled: AtomicU64,
}

#[derive(Debug)]
pub(super) struct TokenBucket {
    operation: &'static str,
    quota: Rate,
    /// The ceiling's spacing.
    fastest: Duration,
    /// The floor's spacing.
    slowest: Duration,
    /// Held by the request whose turn is next, while it waits for it.
    gate: tokio::sync::Mutex<()>,
    pace: Mutex<Pace>,
    totals: Totals,
}

impl TokenBucket {
    pub(super) fn new(operation: &'static str, quota: Rate) -> Self {
        let fastest = paced_interval(quota);
        let slowest = fastest
            .saturating_mul(FLOOR_FRACTION)
            .min(FLOOR_LONGEST_INTERVAL.max(fastest));
        Self {
            operation,
            quota,
            fastest,
            slowest,
            gate: tokio::sync::Mutex::new(()),
            pace: Mutex::new(Pace {
                next_free: None,
                interval: fastest,
                slowed_at: None,
            }),
            totals: Totals::default(),
        }
    }

    pub(super) fn operation(&self) -> &'static str {
        self.operation
    }

    pub(super) fn quota(&self) -> Rate {
        self.quota
    }

    fn pace(&self) -> MutexGuard<'_, Pace> {
        // No await while locked; a poisoned lock only means another caller
        // panicked in between, and the values are still valid.
        self.pace.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for this caller's turn. Turns go in call order; a caller that
    /// gives up while waiting leaves its turn to the next.
    async fn acquire(&self) -> Turn {
        let arrived = Instant::now();
        let (_turn, queued) = match self.gate.try_lock() {
            Ok(turn) => (turn, false),
            Err(_) => (self.gate.lock().await, true),
        };
        let mut slept = false;
        loop {
            // Read again after each sleep: a throttle may have held the
            // operation back meanwhile.
            let due = self.pace().next_free;
            match due {
                Some(due) if due > Instant::now() => {
                    if !slept {
                        tracing::debug!(
                            operation = self.operation,
                            wait_ms = due.saturating_duration_since(arrived).as_millis() as u64,
                            "pacing AWS KMS requests under the request quota"
                        );
                    }
                    tokio::time::sleep_until(due).await;
                    slept = true;
                }
                _ => break,
            }
        }
        let sent_at = Instant::now();
        {
            let mut pace = self.pace();
            // The next turn follows this one's due instant while it is
            // recent, so a wake-up late by the timer's millisecond does not
            // slow the rate; after an idle spell it follows now, so no
            // credit builds up and no burst follows.
            let slot = match pace.next_free {
                Some(due) if sent_at.saturating_duration_since(due) < pace.interval => due,
                _ => sent_at,
            };
            pace.next_free = Some(slot.checked_add(pace.interval).unwrap_or(slot));
        }
        let waited = sent_at.saturating_duration_since(arrived);
        // Held back: it waited for its turn, not merely for the lock a
        // caller ahead of it held for a moment.
        let held_back = slept || (queued && waited >= NOTICEABLE_QUEUEING);
        if !held_back {
            return Turn {
                sent_at,
                waited: Duration::ZERO,
            };
        }
        self.totals.waits.fetch_add(1, Ordering::Relaxed);
        self.totals
            .waited_nanos
            .fetch_add(saturating_nanos(waited), Ordering::Relaxed);
        Turn { sent_at, waited }
    }

    /// AWS throttled a request that left at `sent_at`: halve the rate
    /// (unless the request left before the last slow-down), and space the
    /// next request from it at the new rate.
    fn slow_down(&self, sent_at: Instant) {
        let mut pace = self.pace();
        if pace.slowed_at.is_some_and(|at| sent_at <= at) {
            return;
        }
        pace.interval = pace.interval.saturating_mul(2).min(self.slowest);
        pace.slowed_at = Some(Instant::now());
        let spaced = sent_at.checked_add(pace.interval).unwrap_or(sent_at);
        if pace.next_free.is_none_or(|free| free < spaced) {
            pace.next_free = Some(spaced);
        }
        tracing::info!(
            operation = self.operation,
            requests_per_second = self.rate_at(pace.interval),
            "AWS KMS throttled a request; pacing this operation more slowly"
        );
    }

    /// AWS answered: win back a tenth of the gap to the ceiling.
    fn speed_up(&self) {
        let mut pace = self.pace();
        let gap = pace.interval.saturating_sub(self.fastest);
        if gap.is_zero() {
            return;
        }
        // The last nanoseconds of a gap are not worth ten more requests.
        pace.interval = if gap <= self.fastest / 1000 {
            self.fastest
        } else {
            pace.interval - gap / RECOVERY_DIVISOR
        };
    }

    /// After AWS throttled this operation: no request of it leaves before
    /// `pause` has passed.
    fn hold_back(&self, pause: Duration) {
        let mut pace = self.pace();
        let until = Instant::now() + pause;
        if pace.next_free.is_none_or(|free| free < until) {
            pace.next_free = Some(until);
        }
    }

    /// Requests per second at `interval`, on the quota's scale (the
    /// ceiling reads as the quota, the jitter margin aside).
    fn rate_at(&self, interval: Duration) -> f64 {
        let ratio = self.fastest.as_secs_f64() / interval.as_secs_f64().max(f64::MIN_POSITIVE);
        self.quota.requests_per_second() * ratio
    }

    pub(super) fn stats(&self) -> OperationPacingStats {
        let interval = self.pace().interval;
        OperationPacingStats {
            operation: self.operation,
            quota: self.quota,
            rate_now: self.rate_at(interval),
            waited: Duration::from_nanos(self.totals.waited_nanos.load(Ordering::Relaxed)),
            waits: self.totals.waits.load(Ordering::Relaxed),
            throttled: self.totals.throttled.load(Ordering::Relaxed),
        }
    }

    /// Sends `call` in this bucket's turn; a throttled answer slows the
    /// bucket down, holds the operation back and sends the call again in a
    /// later turn, at most `attempts` times in all.
    pub(super) async fn paced<T, F>(
        &self,
        attempts: u32,
        call: impl Fn() -> F,
    ) -> (Result<T, CloudError>, CallPacing)
    where
        F: Future<Output = Result<T, CloudError>>,
    {
        let mut spent = CallPacing::default();
        let mut attempt = 1;
        loop {
            let turn = self.acquire().await;
            spent.waited += turn.waited;
            let outcome = call().await;
            match &outcome {
                Ok(_) => self.speed_up(),
                Err(error @ CloudError::Throttled { .. }) => {
                    spent.throttled += 1;
                    self.totals.throttled.fetch_add(1, Ordering::Relaxed);
                    self.slow_down(turn.sent_at);
                    if attempt < attempts {
                        let pause = backoff(attempt).max(self.pace().interval);
                        tracing::warn!(
                            operation = self.operation,
                            attempt,
                            pause_ms = pause.as_millis() as u64,
                            %error,
                            "AWS KMS throttled the request; sending it again in a later turn"
                        );
                        self.hold_back(pause);
                        attempt += 1;
                        continue;
                    }
                }
                Err(_) => {}
            }
            return (outcome, spent);
        }
    }
}

fn saturating_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::Arc;

    fn throttled() -> CloudError {
        CloudError::Throttled {
            operation: "test",
            message: "ThrottlingException: Rate exceeded".into(),
        }
    }

    fn interval(bucket: &TokenBucket) -> Duration {
        bucket.pace().interval
    }

    /// A KMS enforcing `per_second` requests in any one-second window, as
    /// AWS counts them, recording when each request arrived and whether it
    /// was let through.
    struct QuotaKms {
        per_second: usize,
        accepted: Mutex<VecDeque<Instant>>,
        log: Mutex<Vec<(Instant, bool)>>,
    }

    impl QuotaKms {
        fn new(per_second: usize) -> Arc<Self> {
            Arc::new(Self {
                per_second,
                accepted: Mutex::new(VecDeque::new()),
                log: Mutex::new(Vec::new()),
            })
        }

        fn call(&self) -> Result<(), CloudError> {
            let now = Instant::now();
            let mut accepted = self.accepted.lock().unwrap();
            while accepted
                .front()
                .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
            {
                accepted.pop_front();
            }
            let allowed = accepted.len() < self.per_second;
            if allowed {
                accepted.push_back(now);
            }
            self.log.lock().unwrap().push((now, allowed));
            if allowed { Ok(()) } else { Err(throttled()) }
        }

        fn sent(&self) -> Vec<Instant> {
            self.log.lock().unwrap().iter().map(|(t, _)| *t).collect()
        }

        fn counts(&self) -> (usize, usize) {
            let log = self.log.lock().unwrap();
            let accepted = log.iter().filter(|(_, ok)| *ok).count();
            (accepted, log.len() - accepted)
        }
    }

    /// The most requests in any one-second window of `times`.
    fn busiest_second(times: &[Instant]) -> usize {
        let mut times = times.to_vec();
        times.sort();
        (0..times.len())
            .map(|i| {
                times[i..]
                    .iter()
                    .take_while(|t| t.duration_since(times[i]) < Duration::from_secs(1))
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    fn gaps(times: &[Instant]) -> Vec<Duration> {
        times.windows(2).map(|w| w[1] - w[0]).collect()
    }

    /// tokio's timer rounds a wait up to the next millisecond.
    fn about(actual: Duration, expected: Duration) -> bool {
        actual + Duration::from_millis(1) >= expected
            && actual <= expected + Duration::from_millis(1)
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttle_halves_the_rate_and_successes_win_it_back_to_the_ceiling() {
        let bucket = TokenBucket::new("CreateKey", Rate::per_second(10));
        let fastest = Duration::from_millis(102);
        let sent = Mutex::new(Vec::new());
        for call in 0..80 {
            let (outcome, _) = bucket
                .paced(1, || {
                    sent.lock().unwrap().push(Instant::now());
                    async move { if call == 0 { Err(throttled()) } else { Ok(()) } }
                })
                .await;
            assert_eq!(outcome.is_ok(), call > 0);
        }
        let sent = sent.into_inner().unwrap();
        let gaps = gaps(&sent);
        // Right after the throttle: twice the ceiling's spacing.
        assert!(about(gaps[0], fastest * 2), "{:?}", &gaps[..3]);
        // Then a little less each time, never closer than the ceiling's.
        for pair in gaps.windows(2) {
            assert!(
                pair[1] <= pair[0] + Duration::from_millis(1),
                "slowed down again without a throttle: {gaps:?}"
            );
        }
        assert!(
            gaps.iter()
                .all(|g| *g + Duration::from_millis(1) >= fastest),
            "{gaps:?}"
        );
        // Back at the ceiling, exactly, by the end.
        assert_eq!(interval(&bucket), fastest);
        assert!(about(*gaps.last().unwrap(), fastest), "{gaps:?}");
        // 22 successes win back 90% of the halving (the gap after the
        // 22nd success is gaps[23]).
        assert!(
            gaps[23] <= fastest + fastest / 10 + Duration::from_millis(1),
            "{gaps:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn recovery_stops_at_the_ceiling_however_long_things_go_well() {
        let bucket = TokenBucket::new("DisableKey", Rate::per_second(5));
        let sent = Mutex::new(Vec::new());
        for _ in 0..40 {
            let (outcome, _) = bucket
                .paced(1, || {
                    sent.lock().unwrap().push(Instant::now());
                    async { Ok::<_, CloudError>(()) }
                })
                .await;
            outcome.unwrap();
        }
        let sent = sent.into_inner().unwrap();
        assert_eq!(interval(&bucket), Duration::from_millis(204));
        assert!(busiest_second(&sent) <= 5);
        assert_eq!(bucket.stats().rate_now, 5.0);
    }

    #[tokio::test(start_paused = true)]
    async fn throttles_of_requests_sent_before_a_slow_down_count_once() {
        let bucket = TokenBucket::new("PutKeyPolicy", Rate::per_second(10));
        let early = Instant::now();
        tokio::time::advance(Duration::from_millis(5)).await;
        let later = Instant::now();
        tokio::time::advance(Duration::from_millis(5)).await;
        // Two requests that left before AWS's first answer, both throttled.
        bucket.slow_down(early);
        bucket.slow_down(later);
        assert_eq!(interval(&bucket), Duration::from_millis(204));
        // One sent after the slow-down and throttled again halves again.
        tokio::time::advance(Duration::from_millis(5)).await;
        bucket.slow_down(Instant::now());
        assert_eq!(interval(&bucket), Duration::from_millis(408));
        assert_eq!(bucket.stats().rate_now, 2.5);
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_never_falls_below_its_floor() {
        for (quota, floor) in [
            // A 64th of the ceiling's 1.02 s would be 65 s: one every 10 s instead.
            (Rate::per_second(1), Duration::from_secs(10)),
            // A 64th of 2000/s (0.51 ms) is 32.64 ms.
            (Rate::per_second(2000), Duration::from_micros(32_640)),
            // A ceiling slower than the 10 s floor is its own floor.
            (Rate::parse("0.05").unwrap(), Duration::from_millis(20_400)),
        ] {
            let bucket = TokenBucket::new("op", quota);
            for _ in 0..20 {
                tokio::time::advance(Duration::from_millis(1)).await;
                bucket.slow_down(Instant::now());
            }
            assert_eq!(interval(&bucket), floor, "{quota}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn sixteen_callers_never_exceed_the_ceiling_and_settle_under_a_tighter_kms() {
        // keyhold is told 20/s; the account only has 5/s left (another tool
        // spends the rest, or the quota was never raised).
        let bucket = Arc::new(TokenBucket::new(
            "GetParametersForImport",
            Rate::per_second(20),
        ));
        let kms = QuotaKms::new(5);
        let callers: Vec<_> = (0..16)
            .map(|_| {
                let (bucket, kms) = (bucket.clone(), kms.clone());
                tokio::spawn(async move {
                    let mut throttles = 0;
                    for _ in 0..10 {
                        let (outcome, spent) = bucket.paced(8, || async { kms.call() }).await;
                        outcome.unwrap();
                        throttles += spent.throttled;
                    }
                    throttles
                })
            })
            .collect();
        let mut throttled = 0;
        for caller in callers {
            throttled += caller.await.unwrap();
        }
        let (accepted, refused) = kms.counts();
        assert_eq!(accepted, 160, "every call got through");
        assert_eq!(refused as u32, throttled);
        // Never above the ceiling, in any second.
        assert!(busiest_second(&kms.sent()) <= 20);
        // Adapting keeps the throttles a fraction of the calls; a fixed
        // pace at 20/s would have had three refused for every one let in.
        assert!(
            refused * 4 <= accepted,
            "{refused} throttled for {accepted} accepted"
        );
        let stats = bucket.stats();
        assert_eq!(stats.throttled, refused as u64);
        assert!(stats.rate_now <= 20.0 && stats.rate_now > 0.0, "{stats:?}");
        assert!(
            stats.waits > 0 && stats.waited > Duration::ZERO,
            "{stats:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn sixteen_callers_under_a_roomy_kms_go_at_the_ceiling_and_no_faster() {
        let bucket = Arc::new(TokenBucket::new("ImportKeyMaterial", Rate::per_second(15)));
        let kms = QuotaKms::new(1000);
        let start = Instant::now();
        let callers: Vec<_> = (0..16)
            .map(|_| {
                let (bucket, kms) = (bucket.clone(), kms.clone());
                tokio::spawn(async move {
                    for _ in 0..5 {
                        bucket.paced(1, || async { kms.call() }).await.0.unwrap();
                    }
                })
            })
            .collect();
        for caller in callers {
            caller.await.unwrap();
        }
        let sent = kms.sent();
        assert_eq!(sent.len(), 80);
        assert!(busiest_second(&sent) <= 15);
        // 80 requests at 15/s and the margin: the last leaves 79 intervals in.
        let last = *sent.iter().max().unwrap() - start;
        let expected = paced_interval(Rate::per_second(15)) * 79;
        assert!(about(last, expected), "{last:?} vs {expected:?}");
        for gap in gaps(&{
            let mut s = sent.clone();
            s.sort();
            s
        }) {
            assert!(gap + Duration::from_millis(1) >= paced_interval(Rate::per_second(15)));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn waits_and_throttles_are_counted_per_call_and_in_total() {
        let bucket = TokenBucket::new("CreateKey", Rate::per_second(5));
        let (_, first) = bucket.paced(1, || async { Ok::<_, CloudError>(()) }).await;
        assert_eq!(first, CallPacing::default(), "the first goes at once");
        let answers = Mutex::new(vec![Ok(()), Err(throttled())]);
        let (outcome, second) = bucket
            .paced(3, || {
                let answer = answers.lock().unwrap().pop();
                async move { answer.unwrap() }
            })
            .await;
        outcome.unwrap();
        // 204 ms for its turn; throttled, then held back 500 ms.
        assert_eq!(second.throttled, 1);
        assert_eq!(second.waited, Duration::from_millis(204 + 500));
        let stats = bucket.stats();
        assert_eq!((stats.waits, stats.throttled), (2, 1));
        assert_eq!(stats.waited, Duration::from_millis(704));
        assert_eq!(stats.quota, Rate::per_second(5));
    }
}
