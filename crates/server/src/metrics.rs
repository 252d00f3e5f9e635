//! Prometheus metrics: requests by route and status, and their latency;
//! audit entries that could not be written; the audit streams to a SIEM;
//! open drift findings by kind (read from the database at each scrape);
//! the XKS proxy's calls (`crate::xks::metrics`); the pacing of AWS KMS
//! requests under their quotas (read from the connector at each scrape).

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use keyhold_core::StoreError;
use keyhold_core::audit::AuditRecord;
use keyhold_core::drift::DriftKind;
use keyhold_core::ports::AuditFallback;
use keyhold_core::service::Keyhold;

use crate::app::AppState;
use crate::connector::AwsConnector;

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkLabels {
    sink: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DriftLabels {
    kind: String,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    unwritten_audit: Counter,
    stream_sent: Family<SinkLabels, Counter>,
    stream_failures: Family<SinkLabels, Counter>,
    stream_lag: Family<SinkLabels, Gauge>,
    stream_cursor: Family<SinkLabels, Gauge>,
    stream_up: Family<SinkLabels, Gauge>,
    approval_webhook: crate::approval_webhook::WebhookCounters,
    drift_findings: Family<DriftLabels, Gauge>,
    backup_last_success: Gauge,
    backup_last_failed: Gauge,
    backups_running: Gauge,
    /// The XKS proxy's series (see `crate::xks::metrics`).
    pub xks: crate::xks::metrics::XksMetrics,
    /// The connector whose pacing the `kms_pacing` series show, once the
    /// server has one.
    kms_pacing: Arc<OnceLock<Arc<AwsConnector>>>,
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
        let stream_sent = Family::<SinkLabels, Counter>::default();
        registry.register(
            "audit_stream_entries_sent",
            "Audit entries delivered to a SIEM sink (syslog, file)",
            stream_sent.clone(),
        );
        let stream_failures = Family::<SinkLabels, Counter>::default();
        registry.register(
            "audit_stream_failures",
            "Failed deliveries to a SIEM sink; each is retried and logged at warning level with its reason",
            stream_failures.clone(),
        );
        let stream_lag = Family::<SinkLabels, Gauge>::default();
        registry.register(
            "audit_stream_lag_entries",
            "Audit entries committed but not yet delivered to the sink (newest seq minus the sink's cursor)",
            stream_lag.clone(),
        );
        let stream_cursor = Family::<SinkLabels, Gauge>::default();
        registry.register(
            "audit_stream_cursor_seq",
            "The seq of the last audit entry delivered to the sink",
            stream_cursor.clone(),
        );
        let stream_up = Family::<SinkLabels, Gauge>::default();
        registry.register(
            "audit_stream_up",
            "1 while the sink takes entries, 0 since its last delivery failed",
            stream_up.clone(),
        );
        let webhook = crate::approval_webhook::WebhookCounters::default();
        registry.register(
            "approval_webhook_deliveries",
            "Approval events the webhook receiver took (2xx)",
            webhook.delivered.clone(),
        );
        registry.register(
            "approval_webhook_failures",
            "Failed approval webhook delivery attempts (each retry counts); each is logged at warning or info level with its reason",
            webhook.failed_attempts.clone(),
        );
        registry.register(
            "approval_webhook_dropped",
            "Approval events given up on after the last retry (or refused by the receiver with 4xx)",
            webhook.dropped.clone(),
        );
        let drift_findings = Family::<DriftLabels, Gauge>::default();
        registry.register(
            "drift_findings",
            "Open drift findings by kind: where AWS no longer holds what keyhold's record says (read from the database at each scrape; absent while it cannot be read)",
            drift_findings.clone(),
        );
        let backup_last_success = Gauge::default();
        registry.register(
            "backup_last_success_timestamp_seconds",
            "When the newest backup that succeeded finished, as a Unix time (0 before the first; read from the database at each scrape)",
            backup_last_success.clone(),
        );
        let backup_last_failed = Gauge::default();
        registry.register(
            "backup_last_failed",
            "1 when the newest finished backup failed (its reason is on the Backups screen and in the audit log), else 0",
            backup_last_failed.clone(),
        );
        let backups_running = Gauge::default();
        registry.register(
            "backups_running",
            "Backups being made now",
            backups_running.clone(),
        );
        let xks = crate::xks::metrics::XksMetrics::register(&mut registry);
        let kms_pacing = Arc::new(OnceLock::new());
        registry.register_collector(Box::new(KmsPacingSeries {
            connector: kms_pacing.clone(),
        }));
        Self {
            xks,
            kms_pacing,
            registry,
            drift_findings,
            backup_last_success,
            backup_last_failed,
            backups_running,
            requests,
            latency,
            unwritten_audit,
            stream_sent,
            stream_failures,
            stream_lag,
            stream_cursor,
            stream_up,
            approval_webhook: webhook,
        }
    }
}

impl Metrics {
    /// Shows `connector`'s pacing of AWS KMS requests in the `kms_pacing`
    /// series from now on (the first connector given stays).
    pub fn watch_kms_pacing(&self, connector: Arc<AwsConnector>) {
        let _ = self.kms_pacing.set(connector);
    }

    /// The approval webhook's counters (clones count into these).
    pub fn approval_webhook(&self) -> crate::approval_webhook::WebhookCounters {
        self.approval_webhook.clone()
    }

    /// What the core tells of refusals whose audit entry it could not write.
    pub fn audit_fallback(&self) -> UnwrittenAudit {
        UnwrittenAudit {
            counter: self.unwritten_audit.clone(),
        }
    }

    /// The series of one audit stream sink (`syslog`, `file`).
    pub fn audit_stream(&self, sink: &str) -> StreamMetrics {
        let labels = SinkLabels {
            sink: sink.to_owned(),
        };
        StreamMetrics {
            sent: self.stream_sent.get_or_create(&labels).clone(),
            failures: self.stream_failures.get_or_create(&labels).clone(),
            lag: self.stream_lag.get_or_create(&labels).clone(),
            cursor: self.stream_cursor.get_or_create(&labels).clone(),
            up: self.stream_up.get_or_create(&labels).clone(),
        }
    }

    /// Reads the open drift findings by kind into their gauges, one series
    /// per kind, 0 included, so an alert can watch a kind before it first
    /// appears. Every node answers alike: the counts are the database's.
    /// While the database cannot answer, the series are left out rather
    /// than shown stale.
    pub async fn refresh_drift(&self, keyhold: &Keyhold) {
        match keyhold.drift_counts().await {
            Ok(counts) => self.set_drift(&counts),
            Err(error) => {
                tracing::warn!(%error, "cannot read the drift findings for /metrics; their series are left out of this scrape");
                self.drift_findings.clear();
            }
        }
    }

    /// Reads the backups' outcome into their gauges (left as they were
    /// when the database cannot be read).
    pub async fn refresh_backups(&self, keyhold: &Keyhold) {
        use keyhold_core::backup::BackupStatus;
        match keyhold.store().list_backups(100).await {
            Ok(backups) => {
                let success = backups
                    .iter()
                    .find(|b| b.status == BackupStatus::Succeeded)
                    .and_then(|b| b.finished_at)
                    .map_or(0, |at| at.timestamp());
                self.backup_last_success.set(success);
                let failed = backups
                    .iter()
                    .find(|b| b.status != BackupStatus::Running)
                    .is_some_and(|b| b.status == BackupStatus::Failed);
                self.backup_last_failed.set(i64::from(failed));
                let running = backups
                    .iter()
                    .filter(|b| b.status == BackupStatus::Running)
                    .count();
                self.backups_running
                    .set(i64::try_from(running).unwrap_or(i64::MAX));
            }
            Err(error) => {
                tracing::warn!(%error, "cannot read the backups for /metrics");
            }
        }
    }

    fn set_drift(&self, counts: &[(DriftKind, u64)]) {
        for kind in DriftKind::ALL {
            let open = counts
                .iter()
                .find(|(k, _)| *k == kind)
                .map_or(0, |(_, n)| *n);
            self.drift_findings
                .get_or_create(&DriftLabels {
                    kind: kind.as_str().to_owned(),
                })
                .set(i64::try_from(open).unwrap_or(i64::MAX));
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PacingLabels {
    credential: String,
    region: String,
    operation: String,
}

/// The AWS KMS pacing series, read from the connector's limiters at each
/// scrape: one series per credential, Region and operation, for the
/// credentials used since start-up (a credential's series begin with its
/// first job, and start again from 0 when it is changed, since its client
/// is built anew).
#[derive(Debug)]
struct KmsPacingSeries {
    connector: Arc<OnceLock<Arc<AwsConnector>>>,
}

impl Collector for KmsPacingSeries {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(connector) = self.connector.get() else {
            return Ok(());
        };
        let pacing = connector.pacing();
        let series: Vec<(PacingLabels, &keyhold_aws::OperationPacingStats)> = pacing
            .iter()
            .flat_map(|credential| {
                credential.operations.iter().map(|operation| {
                    (
                        PacingLabels {
                            credential: credential.credential.as_str().to_owned(),
                            region: credential.region.as_str().to_owned(),
                            operation: operation.operation.to_owned(),
                        },
                        operation,
                    )
                })
            })
            .collect();
        if series.is_empty() {
            return Ok(());
        }
        counter_family(
            &mut encoder,
            "kms_pacing_wait_seconds",
            "Time AWS KMS requests waited for their turn under the request quota keyhold paces them at (kms_quotas, kms_credential_quotas, else AWS's defaults)",
            &series,
            |s| s.waited.as_secs_f64(),
        )?;
        counter_family(
            &mut encoder,
            "kms_pacing_waits",
            "AWS KMS requests that waited for their turn under the request quota",
            &series,
            |s| s.waits,
        )?;
        counter_family(
            &mut encoder,
            "kms_throttled",
            "AWS KMS requests AWS throttled (ThrottlingException) all the same: each slows the operation's pacing down, and the request is sent again",
            &series,
            |s| s.throttled,
        )?;
        let mut family = encoder.encode_descriptor(
            "kms_pacing_rate",
            "Requests per second keyhold allows itself now for the operation: its quota (or the tenth of it a drift check's reads take) until AWS throttles, less after, recovering gradually",
            None,
            MetricType::Gauge,
        )?;
        for (labels, stats) in &series {
            ConstGauge::new(stats.rate_now).encode(family.encode_family(labels)?)?;
        }
        Ok(())
    }
}

type PacingSeries<'a> = [(PacingLabels, &'a keyhold_aws::OperationPacingStats)];

/// One counter family of the pacing series, `value` read off each series' stats.
fn counter_family<N>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &PacingSeries<'_>,
    value: impl Fn(&keyhold_aws::OperationPacingStats) -> N,
) -> Result<(), std::fmt::Error>
where
    N: prometheus_client::encoding::EncodeCounterValue,
{
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, stats) in series {
        ConstCounter::new(value(stats)).encode(family.encode_family(labels)?)?;
    }
    Ok(())
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

/// What an audit streamer reports.
pub struct StreamMetrics {
    sent: Counter,
    failures: Counter,
    lag: Gauge,
    cursor: Gauge,
    up: Gauge,
}

impl StreamMetrics {
    pub fn delivered(&self, entries: u64, cursor: i64) {
        self.sent.inc_by(entries);
        self.cursor.set(cursor);
    }

    pub fn failed(&self) {
        self.failures.inc();
        self.up.set(0);
    }

    pub fn up(&self, up: bool) {
        self.up.set(i64::from(up));
    }

    pub fn lag(&self, entries: i64) {
        self.lag.set(entries.max(0));
    }
}

/// Records each request under its route template (not the raw path, so ids
/// do not explode the label set).
pub async fn record(State(app): State<AppState>, request: Request, next: Next) -> Response {
    // XKS paths reach the router's fallback (their prefixes are the
    // officers'); they share one label, their own series are per store.
    let route = request.extensions().get::<MatchedPath>().map_or_else(
        || {
            if crate::xks::is_xks_path(request.uri().path()) {
                "xks".to_owned()
            } else {
                "unmatched".to_owned()
            }
        },
        |p| p.as_str().to_owned(),
    );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn kms_pacing_series_are_read_from_the_connector_at_each_scrape() {
        use keyhold_core::cloud::CloudConnector;
        use keyhold_core::credential::{AccessKeyId, CloudService, Credential, CredentialKind};
        let metrics = Metrics::default();
        assert!(!metrics.encode().contains("kms_pacing"));
        let connector = Arc::new(AwsConnector::new(crate::config::KmsConfig {
            quotas: keyhold_aws::KmsQuotas::parse(&["GetParametersForImport=2.5"]).unwrap(),
            ..Default::default()
        }));
        metrics.watch_kms_pacing(connector.clone());
        // No series before a credential is used.
        assert!(!metrics.encode().contains("kms_pacing"));
        let credential = Credential {
            id: uuid::Uuid::new_v4(),
            name: keyhold_core::names::CredentialName::parse("prod").unwrap(),
            service: CloudService::Aws,
            kind: CredentialKind::AccessKey {
                access_key_id: AccessKeyId::parse("AKIAIOSFODNN7EXAMPLE").unwrap(),
                sealed_secret: vec![1],
            },
            endpoint: None,
            created_at: chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
        };
        // Building a client sends nothing to AWS.
        connector
            .connect(
                &credential,
                Some(secrecy::SecretString::from("s".to_owned())),
                &keyhold_core::cloud::aws::Region::parse("eu-west-1").unwrap(),
            )
            .await
            .unwrap();
        let text = metrics.encode();
        for line in [
            "# TYPE keyhold_kms_pacing_wait_seconds counter",
            "# TYPE keyhold_kms_pacing_waits counter",
            "# TYPE keyhold_kms_throttled counter",
            "# TYPE keyhold_kms_pacing_rate gauge",
            "keyhold_kms_pacing_rate{credential=\"prod\",region=\"eu-west-1\",operation=\"GetParametersForImport\"} 2.5",
            "keyhold_kms_pacing_rate{credential=\"prod\",region=\"eu-west-1\",operation=\"CreateKey\"} 5.0",
            "keyhold_kms_pacing_wait_seconds_total{credential=\"prod\",region=\"eu-west-1\",operation=\"CreateKey\"} 0.0",
            "keyhold_kms_pacing_waits_total{credential=\"prod\",region=\"eu-west-1\",operation=\"GetKeyPolicy\"} 0",
            "keyhold_kms_throttled_total{credential=\"prod\",region=\"eu-west-1\",operation=\"CreateAlias/UpdateAlias\"} 0",
        ] {
            assert!(text.contains(line), "{line}\n{text}");
        }
    }

    #[test]
    fn every_drift_kind_has_a_series() {
        let metrics = Metrics::default();
        metrics.set_drift(&[(DriftKind::AliasMissing, 2), (DriftKind::UnknownKey, 1)]);
        let text = metrics.encode();
        assert!(
            text.contains("# HELP keyhold_drift_findings Open drift findings by kind"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE keyhold_drift_findings gauge"),
            "{text}"
        );
        assert!(
            text.contains("keyhold_drift_findings{kind=\"alias_missing\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("keyhold_drift_findings{kind=\"unknown_key\"} 1"),
            "{text}"
        );
        for kind in DriftKind::ALL {
            assert!(
                text.contains(&format!(
                    "keyhold_drift_findings{{kind=\"{}\"}}",
                    kind.as_str()
                )),
                "{kind:?}: {text}"
            );
        }
        // A kind that cleared reads 0 at the next scrape, not its old count.
        metrics.set_drift(&[(DriftKind::UnknownKey, 1)]);
        assert!(
            metrics
                .encode()
                .contains("keyhold_drift_findings{kind=\"alias_missing\"} 0")
        );
    }
}
