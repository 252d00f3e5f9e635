//! keyhold's persistence: [`SqlStore`] implements the core's
//! [`Store`](keyhold_core::ports::Store) port on sqlx.
//!
//! SQLite is the embedded default; PostgreSQL serves several nodes sharing one
//! database. Each backend module (`sqlite`, `postgres`) holds only what
//! differs: connecting, its writer lock, its migrations folder. Everything
//! else is shared: the queries and audited transactions in `sql/` (compiled
//! into each backend), `rows` converts between columns and domain types,
//! `audit` seals entries and builds the audit filter, `error` classifies
//! database errors. SQL text uses `$N` placeholders, which both accept.

mod audit;
mod error;
mod pool;
mod postgres;
mod rows;
mod sqlite;
#[cfg(feature = "testing")]
pub mod testing;
mod url;

use async_trait::async_trait;
use keyhold_core::StoreError;
use keyhold_core::audit::{AuditEntry, AuditFilter, AuditRecord};
use keyhold_core::clock::Timestamp;
use keyhold_core::cloud::aws::KmsKeyId;
use keyhold_core::cluster::{Lease, NodeRecord};
use keyhold_core::credential::Credential;
use keyhold_core::group::KeyGroup;
use keyhold_core::identity::{Identity, Session};
use keyhold_core::job::{Job, JobMessage};
use keyhold_core::key::{Key, KeyPage};
use keyhold_core::names::{CredentialName, GroupName, IdentityName, NodeId};
use keyhold_core::ports::{JobCommit, Scheduled, SharedAuditMac, Store};
use keyhold_core::settings::Settings;

pub use url::mask_url;

/// The store over a SQL database, chosen by the URL given to [`SqlStore::connect`].
pub struct SqlStore {
    backend: Backend,
    /// The URL with any password masked, for logs and `Debug`.
    masked_url: String,
}

enum Backend {
    Sqlite(sqlite::SqliteStore),
    Postgres(postgres::PostgresStore),
}

/// The kinds of database a URL may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatabaseKind {
    /// `sqlite://PATH`, `sqlite:PATH`, `sqlite::memory:` or a plain file path.
    Sqlite,
    /// `postgres://…` or `postgresql://…`.
    Postgres,
}

impl DatabaseKind {
    /// The kind of database `url` names, or an error that names the URL
    /// (password masked) and the forms keyhold accepts.
    pub fn of(url: &str) -> Result<Self, String> {
        if postgres::accepts(url) {
            Ok(Self::Postgres)
        } else if sqlite::accepts(url) {
            Ok(Self::Sqlite)
        } else {
            Err(format!(
                "unsupported database URL {}: use sqlite://PATH (or a file path) for SQLite, \
                 or postgres://USER@HOST/DATABASE for PostgreSQL",
                mask_url(url)
            ))
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

impl std::fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let backend = match self.backend {
            Backend::Sqlite(_) => DatabaseKind::Sqlite,
            Backend::Postgres(_) => DatabaseKind::Postgres,
        };
        f.debug_struct("SqlStore")
            .field("backend", &backend.as_str())
            .field("url", &self.masked_url)
            .finish_non_exhaustive()
    }
}

impl SqlStore {
    /// Opens the database at `url` and brings its schema up to date.
    ///
    /// `url` is `sqlite://path?mode=rwc`, `sqlite:path` or a plain file path
    /// (the file is created when missing), or `postgres://user@host/database`
    /// (the database must exist). Audit entries written through the store are
    /// sealed with `audit_mac`. Errors never show a password from `url`.
    pub async fn connect(url: &str, audit_mac: SharedAuditMac) -> Result<Self, StoreError> {
        let masked_url = mask_url(url);
        let backend = match DatabaseKind::of(url).map_err(StoreError::Unavailable)? {
            DatabaseKind::Sqlite => Backend::Sqlite(sqlite::open(url, audit_mac).await?),
            DatabaseKind::Postgres => Backend::Postgres(postgres::open(url, audit_mac).await?),
        };
        Ok(Self {
            backend,
            masked_url,
        })
    }

    /// Closes every connection, waiting for those in use to be returned.
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite(s) => s.close().await,
            Backend::Postgres(s) => s.close().await,
        }
    }

    fn inner(&self) -> &dyn Store {
        match &self.backend {
            Backend::Sqlite(s) => s,
            Backend::Postgres(s) => s,
        }
    }
}

#[async_trait]
impl Store for SqlStore {
    async fn list_identities(&self) -> Result<Vec<Identity>, StoreError> {
        self.inner().list_identities().await
    }
    async fn get_identity(&self, name: &IdentityName) -> Result<Option<Identity>, StoreError> {
        self.inner().get_identity(name).await
    }
    async fn insert_identity(
        &self,
        identity: &Identity,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        self.inner().insert_identity(identity, audit).await
    }
    async fn update_identity(
        &self,
        identity: &Identity,
        audit: Option<&AuditRecord>,
    ) -> Result<(), StoreError> {
        self.inner().update_identity(identity, audit).await
    }
    async fn delete_identity(
        &self,
        name: &IdentityName,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        self.inner().delete_identity(name, audit).await
    }

    async fn insert_session(&self, session: &Session) -> Result<(), StoreError> {
        self.inner().insert_session(session).await
    }
    async fn get_session(&self, id: &str) -> Result<Option<Session>, StoreError> {
        self.inner().get_session(id).await
    }
    async fn update_session(&self, session: &Session) -> Result<(), StoreError> {
        self.inner().update_session(session).await
    }
    async fn replace_session(
        &self,
        previous_id: &str,
        session: &Session,
    ) -> Result<(), StoreError> {
        self.inner().replace_session(previous_id, session).await
    }
    async fn delete_session(&self, id: &str) -> Result<(), StoreError> {
        self.inner().delete_session(id).await
    }
    async fn delete_sessions_of(&self, name: &IdentityName) -> Result<(), StoreError> {
        self.inner().delete_sessions_of(name).await
    }

    async fn list_credentials(&self) -> Result<Vec<Credential>, StoreError> {
        self.inner().list_credentials().await
    }
    async fn get_credential(
        &self,
        name: &CredentialName,
    ) -> Result<Option<Credential>, StoreError> {
        self.inner().get_credential(name).await
    }
    async fn insert_credential(
        &self,
        credential: &Credential,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        self.inner().insert_credential(credential, audit).await
    }
    async fn update_credential_secret(
        &self,
        id: uuid::Uuid,
        sealed_secret: &[u8],
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        self.inner()
            .update_credential_secret(id, sealed_secret, audit)
            .await
    }
    async fn delete_credential(
        &self,
        name: &CredentialName,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        self.inner().delete_credential(name, audit).await
    }

    async fn list_groups(&self) -> Result<Vec<KeyGroup>, StoreError> {
        self.inner().list_groups().await
    }
    async fn get_group(&self, name: &GroupName) -> Result<Option<KeyGroup>, StoreError> {
        self.inner().get_group(name).await
    }
    async fn insert_group(&self, group: &KeyGroup, audit: &AuditRecord) -> Result<(), StoreError> {
        self.inner().insert_group(group, audit).await
    }
    async fn update_group(&self, group: &KeyGroup, audit: &AuditRecord) -> Result<(), StoreError> {
        self.inner().update_group(group, audit).await
    }
    async fn delete_group(&self, name: &GroupName, audit: &AuditRecord) -> Result<(), StoreError> {
        self.inner().delete_group(name, audit).await
    }

    async fn list_keys(&self, page: &KeyPage) -> Result<Vec<Key>, StoreError> {
        self.inner().list_keys(page).await
    }
    async fn get_key(&self, id: uuid::Uuid) -> Result<Option<Key>, StoreError> {
        self.inner().get_key(id).await
    }
    async fn find_key_by_kms_id(&self, kms_key_id: &KmsKeyId) -> Result<Option<Key>, StoreError> {
        self.inner().find_key_by_kms_id(kms_key_id).await
    }
    async fn insert_key(&self, key: &Key, audit: Option<&AuditRecord>) -> Result<(), StoreError> {
        self.inner().insert_key(key, audit).await
    }
    async fn update_key(&self, key: &Key, audit: Option<&AuditRecord>) -> Result<(), StoreError> {
        self.inner().update_key(key, audit).await
    }
    async fn delete_key(&self, id: uuid::Uuid, audit: &AuditRecord) -> Result<(), StoreError> {
        self.inner().delete_key(id, audit).await
    }

    async fn insert_job(
        &self,
        job: &Job,
        schedule: Option<Scheduled<'_>>,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        self.inner().insert_job(job, schedule, audit).await
    }
    async fn get_job(&self, id: uuid::Uuid) -> Result<Option<Job>, StoreError> {
        self.inner().get_job(id).await
    }
    async fn list_jobs(&self, limit: u32) -> Result<Vec<Job>, StoreError> {
        self.inner().list_jobs(limit).await
    }
    async fn unfinished_jobs(&self) -> Result<Vec<Job>, StoreError> {
        self.inner().unfinished_jobs().await
    }

    async fn unfinished_group_job(&self, group: &GroupName) -> Result<Option<Job>, StoreError> {
        self.inner().unfinished_group_job(group).await
    }
    async fn commit_job(&self, commit: &JobCommit<'_>) -> Result<(), StoreError> {
        self.inner().commit_job(commit).await
    }
    async fn job_messages(&self, job_id: uuid::Uuid) -> Result<Vec<JobMessage>, StoreError> {
        self.inner().job_messages(job_id).await
    }

    async fn latest_key_version(&self, group: &GroupName) -> Result<Option<u32>, StoreError> {
        self.inner().latest_key_version(group).await
    }
    async fn latest_rotation(&self, group: &GroupName) -> Result<Option<Job>, StoreError> {
        self.inner().latest_rotation(group).await
    }
    async fn failed_jobs(&self, limit: u32) -> Result<Vec<Job>, StoreError> {
        self.inner().failed_jobs(limit).await
    }
    async fn due_groups(&self, now: Timestamp, limit: u32) -> Result<Vec<KeyGroup>, StoreError> {
        self.inner().due_groups(now, limit).await
    }
    async fn heartbeat(&self, node: &NodeRecord) -> Result<(), StoreError> {
        self.inner().heartbeat(node).await
    }
    async fn list_nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        self.inner().list_nodes().await
    }
    async fn acquire_lease(
        &self,
        name: &str,
        holder: &NodeId,
        now: Timestamp,
        until: Timestamp,
    ) -> Result<Option<Lease>, StoreError> {
        self.inner().acquire_lease(name, holder, now, until).await
    }
    async fn get_lease(&self, name: &str) -> Result<Option<Lease>, StoreError> {
        self.inner().get_lease(name).await
    }
    async fn release_lease(&self, name: &str, holder: &NodeId) -> Result<(), StoreError> {
        self.inner().release_lease(name, holder).await
    }

    async fn get_settings(&self) -> Result<Settings, StoreError> {
        self.inner().get_settings().await
    }
    async fn put_settings(
        &self,
        settings: &Settings,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        self.inner().put_settings(settings, audit).await
    }

    async fn append_audit(&self, audit: &AuditRecord) -> Result<(), StoreError> {
        self.inner().append_audit(audit).await
    }
    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
        self.inner().list_audit(filter).await
    }
    async fn audit_page(&self, after_seq: i64, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        self.inner().audit_page(after_seq, limit).await
    }
}
