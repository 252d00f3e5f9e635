//! keyhold's operations. Each checks the session's authority, validates against
//! current state, and writes the change together with its audit entry.
//!
//! The server parses requests into domain types and calls these; the same
//! rules therefore hold for the API, the CLI and the web UI. Audit summaries
//! come from [`crate::action`], success and failure side by side.

mod access;
mod audit_log;
mod configuration;
mod credentials;
#[cfg(test)]
mod custody_tests;
mod groups;
mod jobs;
mod keys;
mod schedule;

use std::sync::Arc;

use crate::action::Action;
use crate::audit::AuditRecord;
use crate::clock::{Clock, Timestamp};
use crate::credential::EndpointPolicy;
use crate::error::CoreResult;
use crate::ports::{Keystore, Store};

pub use access::{LoginOutcome, OneTimePassword};
pub use audit_log::AuditExport;
pub use jobs::JobRuntime;
pub use schedule::{DUE_PER_PASS, RotationState, SchedulePass};

/// The application: ports wired together.
#[derive(Clone)]
pub struct Keyhold {
    store: Arc<dyn Store>,
    keystore: Arc<dyn Keystore>,
    clock: Arc<dyn Clock>,
    /// The endpoint overrides the operator allows (none unless configured).
    endpoints: EndpointPolicy,
}

impl Keyhold {
    pub fn new(store: Arc<dyn Store>, keystore: Arc<dyn Keystore>, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            keystore,
            clock,
            endpoints: EndpointPolicy::none(),
        }
    }

    /// The endpoint overrides this server's operator allows; the server
    /// passes them from its configuration (the core reads no files).
    pub fn with_endpoint_policy(mut self, endpoints: EndpointPolicy) -> Self {
        self.endpoints = endpoints;
        self
    }

    pub fn endpoint_policy(&self) -> &EndpointPolicy {
        &self.endpoints
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn keystore(&self) -> &Arc<dyn Keystore> {
        &self.keystore
    }

    fn record(&self, users: impl Into<String>, summary: impl Into<String>) -> AuditRecord {
        AuditRecord::new(self.clock.now(), users, summary)
    }

    /// Records a refused or failed operation, with the failure text its
    /// [`Action`] names beside its success text. Called by the edge for every
    /// operation that fails, so failures are audited in one place.
    pub async fn audit_failure(
        &self,
        users: &str,
        action: Action<'_>,
        reason: &str,
    ) -> CoreResult<()> {
        self.audit_refusal(users, action.failed(), reason).await
    }

    /// Records a refused request that is no operation of its own: a login
    /// or password change that failed, a request with a dead session.
    pub async fn audit_refusal(
        &self,
        users: &str,
        summary: String,
        reason: &str,
    ) -> CoreResult<()> {
        let record = self
            .record(users, summary)
            .with_details(serde_json::json!({ "reason": reason }));
        self.store.append_audit(&record).await?;
        Ok(())
    }

    /// Whether the database and the keystore answer now, each with the
    /// reason when not (for `/readyz`).
    pub async fn readiness(&self) -> [(&'static str, Result<(), String>); 2] {
        let database = self
            .store
            .get_settings()
            .await
            .map(drop)
            .map_err(|e| e.to_string());
        let keystore = self.keystore.check().map_err(|e| e.to_string());
        [("database", database), ("keystore", keystore)]
    }
}
