//! The XKS proxy's series in `/metrics`.
//!
//! Rules: every label set is bounded. Stores and keys are what officers
//! created (a key id that is not one, from a scanner, counts under
//! `unknown`); principals are whatever KMS sends, so only the first
//! [`MAX_PRINCIPAL_LABELS`] seen get a series of their own and the rest
//! count under `other`.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Principals with a series of their own, at most.
pub const MAX_PRINCIPAL_LABELS: usize = 50;
/// The label of everything past a bound.
pub const OTHER: &str = "other";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    store: String,
    key: String,
    operation: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PrincipalLabels {
    principal: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreLabels {
    store: String,
}

pub struct XksMetrics {
    calls: Family<CallLabels, Counter>,
    principals: Family<PrincipalLabels, Counter>,
    /// The principals that have a series of their own.
    principal_labels: Mutex<HashSet<String>>,
    latency: Family<OperationLabels, Histogram>,
    throttled: Family<StoreLabels, Counter>,
    usage_log_dropped: Counter,
    denials_unaudited: Counter,
    health_active: Gauge,
    directory_revision: Gauge,
}

impl std::fmt::Debug for XksMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XksMetrics").finish_non_exhaustive()
    }
}

impl XksMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "xks_requests",
            "XKS proxy calls by store, key, operation and outcome (ok or the errorName answered)",
            calls.clone(),
        );
        let principals = Family::<PrincipalLabels, Counter>::default();
        registry.register(
            "xks_principal_requests",
            "XKS proxy calls by the AWS principal in their request metadata (the first 50 principals seen; the rest as \"other\")",
            principals.clone(),
        );
        let latency = Family::<OperationLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_25, 2.0, 12))
        });
        registry.register(
            "xks_request_duration_seconds",
            "XKS proxy latency by operation, from the request's arrival to its answer (KMS gives up after 250 ms)",
            latency.clone(),
        );
        let throttled = Family::<StoreLabels, Counter>::default();
        registry.register(
            "xks_throttled",
            "XKS proxy calls answered ThrottlingException: the store's quota per node was spent",
            throttled.clone(),
        );
        let usage_log_dropped = Counter::default();
        registry.register(
            "xks_usage_log_dropped",
            "XKS usage-log lines dropped because the writer fell behind (requests never wait for it); the digest counts them too",
            usage_log_dropped.clone(),
        );
        let denials_unaudited = Counter::default();
        registry.register(
            "xks_denials_unaudited",
            "Refused XKS requests beyond the audit log's rate for individual denials (20 a minute per node); the next digest counts them",
            denials_unaudited.clone(),
        );
        let health_active = Gauge::default();
        registry.register(
            "xks_health_active",
            "1 while the last deep health check of the keystore (every 20 s) succeeded, else 0",
            health_active.clone(),
        );
        let directory_revision = Gauge::default();
        registry.register(
            "xks_directory_revision",
            "The XKS revision (stores, credentials, keys) this node serves",
            directory_revision.clone(),
        );
        Self {
            calls,
            principals,
            principal_labels: Mutex::new(HashSet::new()),
            latency,
            throttled,
            usage_log_dropped,
            denials_unaudited,
            health_active,
            directory_revision,
        }
    }

    /// One call: its counters and latency.
    pub fn call(
        &self,
        store: &str,
        key: &str,
        operation: &str,
        outcome: &str,
        principal: Option<&str>,
        seconds: f64,
    ) {
        self.calls
            .get_or_create(&CallLabels {
                store: store.to_owned(),
                key: key.to_owned(),
                operation: operation.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        if let Some(principal) = principal {
            let label = self.principal_label(principal);
            self.principals
                .get_or_create(&PrincipalLabels { principal: label })
                .inc();
        }
        self.latency
            .get_or_create(&OperationLabels {
                operation: operation.to_owned(),
            })
            .observe(seconds);
        if outcome == "ThrottlingException" {
            self.throttled
                .get_or_create(&StoreLabels {
                    store: store.to_owned(),
                })
                .inc();
        }
    }

    fn principal_label(&self, principal: &str) -> String {
        let mut known = self
            .principal_labels
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if known.contains(principal) {
            return principal.to_owned();
        }
        if known.len() < MAX_PRINCIPAL_LABELS {
            known.insert(principal.to_owned());
            return principal.to_owned();
        }
        OTHER.to_owned()
    }

    pub fn usage_line_dropped(&self) -> Counter {
        self.usage_log_dropped.clone()
    }

    pub fn denial_unaudited(&self) {
        self.denials_unaudited.inc();
    }

    pub fn health(&self, active: bool) {
        self.health_active.set(i64::from(active));
    }

    pub fn revision(&self, revision: i64) {
        self.directory_revision.set(revision);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_past_the_bound_count_as_other() {
        let mut registry = Registry::default();
        let metrics = XksMetrics::register(&mut registry);
        for i in 0..MAX_PRINCIPAL_LABELS + 5 {
            let principal = format!("arn:aws:iam::111122223333:role/r{i}");
            metrics.call("s", "k", "encrypt", "ok", Some(&principal), 0.001);
        }
        metrics.call(
            "s",
            "k",
            "encrypt",
            "ThrottlingException",
            Some("arn:aws:iam::111122223333:role/r0"),
            0.0,
        );
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("xks_principal_requests_total{principal=\"other\"} 5"),
            "{text}"
        );
        assert!(text.contains(
            "xks_principal_requests_total{principal=\"arn:aws:iam::111122223333:role/r0\"} 2"
        ));
        assert!(text.contains(
            "xks_requests_total{store=\"s\",key=\"k\",operation=\"encrypt\",outcome=\"ok\"} 55"
        ));
        assert!(
            text.contains("xks_throttled_total{store=\"s\"} 1"),
            "{text}"
        );
        assert!(text.contains("xks_request_duration_seconds_bucket"));
    }
}
