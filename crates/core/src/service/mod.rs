//! keyhold's operations. Each checks the session's authority, validates against
//! current state, and writes the change together with its audit entry.
//!
//! The server parses requests into domain types and calls these; the same
//! rules therefore hold for the API, the CLI and the web UI. Audit summaries
//! come from [`crate::action`], success and failure side by side.

mod access;
mod approvals;
mod audit_log;
mod backup;
mod configuration;
mod credentials;
#[cfg(test)]
mod custody_tests;
mod drift;
mod groups;
mod jobs;
mod keys;
mod schedule;
mod xks;
#[cfg(test)]
mod xks_tests;

use std::sync::Arc;

use crate::action::Action;
use crate::audit::AuditRecord;
use crate::clock::{Clock, Timestamp};
use crate::credential::EndpointPolicy;
use crate::error::{CoreResult, StoreError};
use crate::ports::{AuditFallback, Keystore, NoAuditFallback, Store};

pub use access::{Activity, LoginOutcome, OneTimePassword};
pub use approvals::Gate;
pub use audit_log::AuditExport;
pub use backup::BACKUP_RETRY;
pub use drift::{ChecksStarted, DriftOverview, GroupDrift, GroupPlan};
pub use jobs::{InPlaceRotations, JobRuntime};
pub use schedule::{DUE_PER_PASS, RotationState, SchedulePass};
pub use xks::{IssuedCredential, NewXksKey, NewXksStore, XksSnapshot, XksStoreDetail};

/// The application: ports wired together.
#[derive(Clone)]
pub struct Keyhold {
    store: Arc<dyn Store>,
    keystore: Arc<dyn Keystore>,
    clock: Arc<dyn Clock>,
    /// The endpoint overrides the operator allows (none unless configured).
    endpoints: EndpointPolicy,
    /// Told of refusals whose audit entry could not be written.
    fallback: Arc<dyn AuditFallback>,
}

impl Keyhold {
    pub fn new(store: Arc<dyn Store>, keystore: Arc<dyn Keystore>, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            keystore,
            clock,
            endpoints: EndpointPolicy::none(),
            fallback: Arc::new(NoAuditFallback),
        }
    }

    /// Where refusals go whose audit entry cannot be written (the server's
    /// log and metrics); by default nowhere.
    pub fn with_audit_fallback(mut self, fallback: Arc<dyn AuditFallback>) -> Self {
        self.fallback = fallback;
        self
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
    /// operation that fails, so failures are audited in one place. The
    /// operation's own error is the answer whatever becomes of its entry: one
    /// that cannot be written goes to the [`AuditFallback`].
    pub async fn audit_failure(&self, users: &str, action: Action<'_>, reason: &str) {
        // Reported to the fallback when it fails; nothing more to do here.
        let _ = self.audit_refusal(users, action.failed(), reason).await;
    }

    /// Records a refused request that is no operation of its own: a login
    /// or password change that failed, a request with a dead session.
    ///
    /// An entry the store refuses goes to the [`AuditFallback`] (the
    /// server's log and metrics). When the database cannot record changes
    /// (its storage is full, say) the refusal stands as it is: `Ok`, and the
    /// caller refuses the request as it would have. Any other failure (the
    /// keystore that seals entries is away, the database is unreachable) is
    /// returned, as for every change that cannot be audited.
    pub async fn audit_refusal(
        &self,
        users: &str,
        summary: String,
        reason: &str,
    ) -> CoreResult<()> {
        let record = self
            .record(users, summary)
            .with_details(serde_json::json!({ "reason": reason }));
        match self.store.append_audit(&record).await {
            Ok(()) => Ok(()),
            Err(error) => {
                self.fallback.unwritten(&record, &error);
                match error {
                    StoreError::CannotWrite { .. } => Ok(()),
                    other => Err(other.into()),
                }
            }
        }
    }

    /// Tells the [`AuditFallback`] of a refusal that could not even be
    /// attempted, let alone audited, because the store failed first (a
    /// login whose attempt could not be counted): the caller returns
    /// `error`.
    fn unaudited_refusal(&self, users: &str, summary: String, error: &StoreError) {
        let record = self
            .record(users, summary)
            .with_details(serde_json::json!({ "reason": error.to_string() }));
        self.fallback.unwritten(&record, error);
    }

    /// Whether the database answers, whether it records changes (see
    /// [`Store::writable`]) and whether the keystore answers, each with the
    /// reason when not (for `/readyz`).
    pub async fn readiness(&self) -> [(&'static str, Result<(), String>); 3] {
        let database = self
            .store
            .get_settings()
            .await
            .map(drop)
            .map_err(|e| e.to_string());
        let storage = self
            .store
            .writable(self.now())
            .await
            .map_err(|e| e.to_string());
        let keystore = self.keystore.check().map_err(|e| e.to_string());
        [
            ("database", database),
            ("storage", storage),
            ("keystore", keystore),
        ]
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::Keyhold;
    use crate::action::Action;
    use crate::audit::AuditRecord;
    use crate::clock::ManualClock;
    use crate::error::{StoreError, WriteRefusal};
    use crate::ports::AuditFallback;
    use crate::testing::{FakeKeystore, FakeStore};

    #[derive(Default)]
    struct Recorded(Mutex<Vec<(String, String, Option<WriteRefusal>)>>);

    impl AuditFallback for Recorded {
        fn unwritten(&self, record: &AuditRecord, error: &StoreError) {
            self.0.lock().unwrap().push((
                record.users.clone(),
                record.summary.clone(),
                error.write_refusal(),
            ));
        }
    }

    fn full() -> StoreError {
        StoreError::CannotWrite {
            refusal: WriteRefusal::StorageFull,
            detail: "(code: 13) database or disk is full".into(),
        }
    }

    #[tokio::test]
    async fn a_refusal_whose_entry_the_store_refuses_goes_to_the_fallback_and_readiness_says_why() {
        let store = Arc::new(FakeStore::new());
        let fallback = Arc::new(Recorded::default());
        let keyhold = Keyhold::new(
            store.clone(),
            Arc::new(FakeKeystore::new()),
            Arc::new(ManualClock::new(chrono::DateTime::UNIX_EPOCH)),
        )
        .with_audit_fallback(fallback.clone());

        keyhold
            .audit_failure("Admin1", Action::ChangeConfiguration, "forbidden")
            .await;
        assert_eq!(store.snapshot().audit.len(), 1);
        assert!(fallback.0.lock().unwrap().is_empty());
        assert!(keyhold.readiness().await.iter().all(|(_, r)| r.is_ok()));

        store.refuse_audit(Some(full));
        keyhold
            .audit_failure("Admin1", Action::ChangeConfiguration, "forbidden")
            .await;
        keyhold
            .audit_refusal("Anonymous", "Refused a request".into(), "no session")
            .await
            .unwrap();
        assert_eq!(store.snapshot().audit.len(), 1);
        assert_eq!(
            *fallback.0.lock().unwrap(),
            vec![
                (
                    "Admin1".to_owned(),
                    "Failed to change configuration".to_owned(),
                    Some(WriteRefusal::StorageFull)
                ),
                (
                    "Anonymous".to_owned(),
                    "Refused a request".to_owned(),
                    Some(WriteRefusal::StorageFull)
                ),
            ]
        );
        let readiness = keyhold.readiness().await;
        let (name, storage) = &readiness[1];
        assert_eq!(*name, "storage");
        assert!(storage.as_ref().unwrap_err().contains("storage full"));

        store.refuse_audit(None);
        assert!(keyhold.readiness().await.iter().all(|(_, r)| r.is_ok()));
    }
}
