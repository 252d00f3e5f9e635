//! Prometheus metrics: requests by route and status, and their latency;
//! audit entries that could not be written.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use keyhold_core::StoreError;
use keyhold_core::audit::AuditRecord;
use keyhold_core::ports::AuditFallback;

use crate::app::AppState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    unwritten_audit: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("keyhold");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 14))
        });
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            latency.clone(),
        );
        let unwritten_audit = Counter::default();
        registry.register(
            "audit_entries_unwritten",
            "Audit entries of refused requests that could not be written (the database could not record them); each is in the server log instead",
            unwritten_audit.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            unwritten_audit,
        }
    }
}

impl Metrics {
    /// What the core tells of refusals whose audit entry it could not write.
    pub fn audit_fallback(&self) -> UnwrittenAudit {
        UnwrittenAudit {
            counter: self.unwritten_audit.clone(),
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        out
    }
}

/// Where a refusal goes whose audit entry the store refused: the server log,
/// at error level, with everything the entry would have said (summaries and
/// reasons never hold a secret), and the `keyhold_audit_entries_unwritten`
/// counter. The refusal itself stands.
pub struct UnwrittenAudit {
    counter: Counter,
}

impl AuditFallback for UnwrittenAudit {
    fn unwritten(&self, record: &AuditRecord, error: &StoreError) {
        self.counter.inc();
        tracing::error!(
            users = %record.users,
            summary = %record.summary,
            details = %record.details,
            time = %record.time.to_rfc3339(),
            error = %error,
            "refused; its audit entry could not be written"
        );
    }
}

/// Records each request under its route template (not the raw path, so ids
/// do not explode the label set).
pub async fn record(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    app.metrics
        .requests
        .get_or_create(&RequestLabels {
            method,
            route: route.clone(),
            status: response.status().as_u16(),
        })
        .inc();
    app.metrics
        .latency
        .get_or_create(&RouteLabels { route })
        .observe(started.elapsed().as_secs_f64());
    response
}
