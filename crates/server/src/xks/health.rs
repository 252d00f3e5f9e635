//! The deep health check behind `GetHealthStatus`, answered from a cache.
//!
//! Rules (the specification lets a proxy whose deep check can take longer
//! than KMS's 250 ms answer from a cached result no older than a minute):
//! - A background task runs the keystore's deep check (a throwaway key
//!   generated, used and destroyed) every [`CHECK_EVERY`], bounded by
//!   [`CHECK_TIMEOUT`], and counts the cluster's live nodes for
//!   `xksProxyFleetSize`. Requests only read the result.
//! - A result no older than [`MAX_AGE`] is answered: `ACTIVE` when the
//!   check succeeded, `UNAVAILABLE` when it failed. An older one (the task
//!   stalled) is no answer at all: the request gets `InternalException`
//!   rather than a status keyhold cannot vouch for.
//! - Ages are measured on the monotonic clock; the Clock port (wall time,
//!   a test's manual clock) only decides which nodes are alive, as it does
//!   for the rotator.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use keyhold_core::ports::KeystoreDescription;
use keyhold_core::service::Keyhold;

use super::fault;
use crate::metrics::Metrics;

/// Time between deep checks.
pub const CHECK_EVERY: Duration = Duration::from_secs(20);
/// The oldest result answered.
pub const MAX_AGE: Duration = Duration::from_secs(60);
/// A deep check still running after this counts as failed.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// The key manager's state as `ekmFleetDetails.healthStatus` says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EkmStatus {
    Active,
    Unavailable,
}

/// The last deep check.
#[derive(Clone, Debug)]
struct Checked {
    at: Instant,
    healthy: bool,
}

/// What a health request answers with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthAnswer {
    pub status: EkmStatus,
    pub fleet_size: u32,
    pub keystore: KeystoreDescription,
}

pub struct HealthCache {
    latest: tokio::sync::watch::Sender<Option<Checked>>,
    fleet_size: AtomicU32,
    keystore: RwLock<Option<KeystoreDescription>>,
}

impl std::fmt::Debug for HealthCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthCache").finish_non_exhaustive()
    }
}

impl HealthCache {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            latest: tokio::sync::watch::Sender::new(None),
            fleet_size: AtomicU32::new(1),
            keystore: RwLock::new(None),
        })
    }

    /// The answer at `now`, waiting until `deadline` for the first check
    /// (a request that arrives while the node starts); `None` when there is
    /// no result young enough.
    pub async fn answer(
        &self,
        now: Instant,
        deadline: tokio::time::Instant,
    ) -> Option<HealthAnswer> {
        let mut results = self.latest.subscribe();
        let checked =
            match tokio::time::timeout_at(deadline, results.wait_for(Option::is_some)).await {
                Ok(Ok(result)) => result.clone()?,
                _ => return None,
            };
        let status = status_at(&checked, now)?;
        let keystore = self
            .keystore
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()?;
        Some(HealthAnswer {
            status,
            fleet_size: self.fleet_size.load(Ordering::Relaxed).max(1),
            keystore,
        })
    }

    /// Checks now, then every [`CHECK_EVERY`] (or when a test changes the
    /// fault switch), until aborted.
    pub async fn run(self: Arc<Self>, keyhold: Keyhold, metrics: Arc<Metrics>) {
        loop {
            self.check_once(&keyhold, &metrics).await;
            tokio::select! {
                () = tokio::time::sleep(CHECK_EVERY) => {}
                () = fault::changed() => {}
            }
        }
    }

    async fn check_once(&self, keyhold: &Keyhold, metrics: &Metrics) {
        let keystore = keyhold.keystore().clone();
        let check = tokio::task::spawn_blocking(move || {
            let description = keystore.describe();
            let outcome = fault::before_health_check().and_then(|()| keystore.xks_health_check());
            (description, outcome)
        });
        let healthy = match tokio::time::timeout(CHECK_TIMEOUT, check).await {
            Ok(Ok((description, outcome))) => {
                *self
                    .keystore
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = Some(description);
                match outcome {
                    Ok(()) => true,
                    Err(error) => {
                        tracing::warn!(%error, "the XKS deep health check failed: GetHealthStatus answers UNAVAILABLE until it succeeds");
                        false
                    }
                }
            }
            Ok(Err(error)) => {
                tracing::error!(%error, "the XKS deep health check panicked");
                false
            }
            Err(_) => {
                tracing::warn!(
                    seconds = CHECK_TIMEOUT.as_secs(),
                    "the XKS deep health check did not finish in time: GetHealthStatus answers UNAVAILABLE"
                );
                false
            }
        };
        metrics.xks.health(healthy);
        self.latest.send_replace(Some(Checked {
            at: Instant::now(),
            healthy,
        }));
        self.count_nodes(keyhold).await;
    }

    async fn count_nodes(&self, keyhold: &Keyhold) {
        match keyhold.store().list_nodes().await {
            Ok(nodes) => {
                let now = keyhold.now();
                let alive = nodes.iter().filter(|node| node.is_alive(now)).count();
                let alive = u32::try_from(alive).unwrap_or(u32::MAX).max(1);
                self.fleet_size.store(alive, Ordering::Relaxed);
            }
            Err(error) => {
                tracing::warn!(%error, "cannot count the cluster's nodes for the XKS health answer; keeping the last count");
            }
        }
    }
}

/// The status a result stands for at `now`, if it is young enough.
fn status_at(checked: &Checked, now: Instant) -> Option<EkmStatus> {
    if now.saturating_duration_since(checked.at) > MAX_AGE {
        return None;
    }
    Some(if checked.healthy {
        EkmStatus::Active
    } else {
        EkmStatus::Unavailable
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_older_than_a_minute_are_no_answer() {
        let t0 = Instant::now();
        let ok = Checked {
            at: t0,
            healthy: true,
        };
        let failed = Checked {
            at: t0,
            healthy: false,
        };
        assert_eq!(status_at(&ok, t0), Some(EkmStatus::Active));
        assert_eq!(
            status_at(&failed, t0 + MAX_AGE),
            Some(EkmStatus::Unavailable)
        );
        assert_eq!(
            status_at(&ok, t0 + MAX_AGE + Duration::from_millis(1)),
            None
        );
        // The task checks three times in that minute.
        assert!(CHECK_EVERY * 3 <= MAX_AGE && CHECK_TIMEOUT < CHECK_EVERY);
    }

    #[tokio::test]
    async fn no_result_yet_waits_until_the_deadline_then_gives_none() {
        let cache = HealthCache::new();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(30);
        assert_eq!(cache.answer(Instant::now(), deadline).await, None);
        *cache.keystore.write().unwrap() = Some(KeystoreDescription {
            id: "ks".into(),
            model: "model".into(),
        });
        cache.latest.send_replace(Some(Checked {
            at: Instant::now(),
            healthy: true,
        }));
        let deadline = tokio::time::Instant::now() + Duration::from_millis(30);
        let answer = cache.answer(Instant::now(), deadline).await.unwrap();
        assert_eq!(answer.status, EkmStatus::Active);
        assert_eq!(answer.fleet_size, 1);
    }
}
