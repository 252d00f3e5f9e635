//! What every request handler shares: the application and this node's
//! workers. The API (`crate::http`), the web UI (`crate::ui`) and the
//! operations both call (`crate::operations`) take it from here.

use std::sync::Arc;

use keyhold_core::service::Keyhold;

use crate::audit_checkpoints::AuditCheckpoints;
use crate::audit_stream::StreamBoard;
use crate::client_address::TrustedProxies;
use crate::jobs::JobRunner;
use crate::login_throttle::LoginThrottle;
use crate::metrics::Metrics;
use crate::rotator::Rotator;

#[derive(Clone)]
pub struct AppState {
    pub keyhold: Keyhold,
    pub metrics: Arc<Metrics>,
    /// Runs the jobs the handlers create or retry (on the rotator node).
    pub jobs: JobRunner,
    /// This node's part in the cluster.
    pub rotator: Rotator,
    /// Signed checkpoints of the audit log, and the newest one.
    pub checkpoints: Arc<AuditCheckpoints>,
    /// What this node's audit streams to a SIEM are doing.
    pub streams: Arc<StreamBoard>,
    /// Password attempts per client address, on this node.
    pub login_throttle: Arc<LoginThrottle>,
    /// The proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Arc<TrustedProxies>,
    /// Where approval requests are announced (the webhook, if configured).
    pub approval_events: Arc<crate::approval_webhook::ApprovalEvents>,
    /// Backups this node makes, and the audit archives it writes.
    pub backups: Arc<crate::backup::Backups>,
    /// The AWS KMS external key store proxy this node serves.
    pub xks: Arc<crate::xks::XksProxy>,
}
