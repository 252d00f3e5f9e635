//! keyhold as an AWS KMS external key store (XKS) proxy: the runtime that
//! serves `<prefix>/kms/xks/v1/...` on every node of a cluster.
//!
//! The protocol (wire types, errors, routes, SigV4, CDIV) is
//! `keyhold-xks`'s; the stores, credentials and keys are the core's. Here:
//! - `directory`: the stores as served, reloaded when their revision moves;
//! - `proxy`: one request, its checks in order, its answer;
//! - `quota`: a token bucket per store, per node;
//! - `mtls`: the listener's client certificate rules and their verdicts;
//! - `health`: the cached deep health check;
//! - `usage`: the usage log (a line per call, off the request path);
//! - `digest` and `denials`: what of the traffic reaches the audit log;
//! - `metrics`: the `/metrics` series;
//! - `fault`: the test-only fault switch.
//!
//! Nothing here writes to the database per request: the audit log gets a
//! digest per node and period, and refusals at a bounded rate.

mod denials;
mod digest;
mod directory;
pub mod fault;
mod health;
pub mod metrics;
pub mod mtls;
mod proxy;
mod quota;
mod usage;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use keyhold_core::names::NodeId;
use keyhold_core::ports::AuditFallback;
use keyhold_core::service::Keyhold;
use tokio::sync::Semaphore;

use crate::ApiError;
use crate::app::AppState;
use crate::config::XksConfig;
use crate::metrics::Metrics;

use self::denials::Denials;
use self::digest::PeriodCounts;
use self::directory::DirectoryCell;
use self::health::HealthCache;
use self::mtls::MtlsRules;
use self::usage::UsageLog;

/// How often each node looks at the XKS revision.
const RELOAD_EVERY: Duration = Duration::from_secs(1);
/// How often the digest task looks at the Clock for the period's end.
const DIGEST_POLL: Duration = Duration::from_secs(1);

/// This node's XKS proxy: shared by the handlers and its background tasks.
pub struct XksProxy {
    enabled: bool,
    keyhold: Keyhold,
    node: NodeId,
    directory: DirectoryCell,
    mtls: Arc<MtlsRules>,
    health: Arc<HealthCache>,
    /// `None` while the proxy is off.
    usage: Option<UsageLog>,
    counts: PeriodCounts,
    denials: Denials,
    metrics: Arc<Metrics>,
    audit_fallback: Arc<dyn AuditFallback>,
    digest_every: Duration,
    /// The keystore's calls at once ([`Keystore::calls_at_once`]): a call
    /// beyond them waits for one to end, its wait counted against the
    /// keystore's deadline. `None`, no bound.
    ///
    /// [`Keystore::calls_at_once`]: keyhold_core::ports::Keystore::calls_at_once
    keystore_calls: Option<Arc<Semaphore>>,
}

impl std::fmt::Debug for XksProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XksProxy")
            .field("enabled", &self.enabled)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl XksProxy {
    /// The proxy of this node; with `enabled`, its usage log is opened (an
    /// unwritable file stops start-up, saying which) and its directory
    /// loaded once, so the first requests find their stores. `mtls` is the
    /// listener's rule set (a fresh one serves a plain HTTP listener).
    pub async fn start(
        config: &XksConfig,
        keyhold: Keyhold,
        node: NodeId,
        metrics: Arc<Metrics>,
        mtls: Arc<MtlsRules>,
    ) -> anyhow::Result<Arc<Self>> {
        let usage = if config.enabled {
            let dropped = metrics.xks.usage_line_dropped();
            let log = UsageLog::start(config.usage_log.clone(), Arc::new(move || {
                dropped.inc();
            }))
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot open the XKS usage log {}: {e}. Set xks_usage_log to a writable file, or xks_enabled = false",
                    config.usage_log.display()
                )
            })?;
            Some(log)
        } else {
            None
        };
        let keystore_calls = keyhold
            .keystore()
            .calls_at_once()
            .map(|calls| Arc::new(Semaphore::new(calls)));
        let proxy = Arc::new(Self {
            enabled: config.enabled,
            keystore_calls,
            counts: PeriodCounts::new(keyhold.now()),
            audit_fallback: Arc::new(metrics.audit_fallback()),
            keyhold,
            node,
            directory: DirectoryCell::new(),
            mtls,
            health: HealthCache::new(),
            usage,
            denials: Denials::new(),
            metrics,
            digest_every: config.digest_every,
        });
        if proxy.enabled
            && let Err(error) = proxy.reload().await
        {
            tracing::warn!(%error, "cannot load the external key stores yet; retrying every second");
        }
        Ok(proxy)
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    async fn reload(&self) -> Result<(), String> {
        let served = self.directory.refresh(&self.keyhold, &self.mtls).await?;
        if let Some(revision) = served {
            self.metrics.xks.revision(revision);
        }
        Ok(())
    }

    /// The background tasks: directory reloads, the deep health check and
    /// the usage digest. None while the proxy is off.
    pub fn spawn(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        if !self.enabled {
            return Vec::new();
        }
        let reloading = {
            let proxy = self.clone();
            tokio::spawn(async move { proxy.reload_loop().await })
        };
        let checking = tokio::spawn(
            self.health
                .clone()
                .run(self.keyhold.clone(), self.metrics.clone()),
        );
        let digesting = {
            let proxy = self.clone();
            tokio::spawn(async move { proxy.digest_loop().await })
        };
        vec![reloading, checking, digesting]
    }

    async fn reload_loop(&self) {
        let mut ticks = tokio::time::interval(RELOAD_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            ticks.tick().await;
            match self.reload().await {
                Ok(()) => {
                    if failing {
                        tracing::info!("the external key stores are loaded again");
                    }
                    failing = false;
                }
                Err(error) => {
                    // Once per outage, not every second.
                    if !failing {
                        tracing::warn!(%error, "cannot reload the external key stores; serving the last ones loaded, retrying every second");
                    }
                    failing = true;
                }
            }
        }
    }

    /// Ends the period when the Clock says the interval has passed (and
    /// the period has calls), appending its digest.
    async fn digest_loop(&self) {
        let every =
            chrono::Duration::from_std(self.digest_every).unwrap_or(chrono::Duration::minutes(5));
        loop {
            tokio::time::sleep(DIGEST_POLL).await;
            let now = self.keyhold.now();
            let started = self.counts.started_at();
            if now < started {
                // The clock went back: the period restarts at the new time.
                self.counts.restart(now);
                continue;
            }
            if now - started >= every && !self.counts.is_empty() {
                self.digest(now).await;
            }
        }
    }

    async fn digest(&self, end: keyhold_core::clock::Timestamp) {
        let (segments, dropped) = match &self.usage {
            Some(usage) => usage.cut().await,
            None => (Vec::new(), 0),
        };
        let record = self
            .counts
            .digest(self.node.as_str(), end, segments, dropped);
        digest::append(&self.keyhold, self.audit_fallback.as_ref(), record).await;
    }

    /// At a graceful stop: the last period's digest, if it had calls.
    pub async fn final_digest(&self) {
        if self.enabled && !self.counts.is_empty() {
            self.digest(self.keyhold.now()).await;
        }
    }
}

/// Whether `path` is the XKS API's (the proxy answers it, on or off).
pub fn is_xks_path(path: &str) -> bool {
    keyhold_xks::route(path).is_some()
}

/// The router's fallback: XKS paths go to the proxy (which answers GET and
/// other methods with 405 itself); everything else is the API's 404.
pub async fn fallback(State(app): State<AppState>, request: Request) -> Response {
    if app.xks.enabled() && is_xks_path(request.uri().path()) {
        proxy::serve(&app.xks, request).await
    } else {
        ApiError::NoRoute.into_response()
    }
}
