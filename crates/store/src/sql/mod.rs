//! The store on one SQL database, compiled once per backend: `crate::sqlite`
//! and `crate::postgres` each include this module (`#[path]`) after defining
//! what differs between them, so every query, row conversion and audited
//! transaction is written once and checked by the compiler against each
//! backend's concrete types. The including module provides:
//!
//! - `Db`: the sqlx database;
//! - `Serial` and `SerialGuard<'a>`: what orders writers, and its guard;
//! - `lock_writers(&Serial)`: this process's turn to write, and
//!   `begin_write(&SqlxPool, &mut Kept)`: starts a `WriteTransaction` (which
//!   derefs to the connection, and rolls back) that holds the backend's
//!   writer lock, so the audit chain head it reads cannot move, and gives
//!   that head's row where it read it on the way (SQLite);
//! - `commit_after(WriteTransaction, AuditInserts)`: inserts the
//!   transaction's audit entries and commits, in one query where the backend
//!   can (SQLite);
//! - `INSERT_ORDER`: the column that orders rows inserted in one microsecond;
//! - `FOR_UPDATE`: what locks the rows a write transaction's `SELECT` reads,
//!   where the backend locks rows at all;
//! - `BATCHES_STATEMENTS`: whether one query may hold several statements
//!   (see `batch`);
//! - `KIND`: the [`DatabaseKind`](crate::DatabaseKind) it serves, for `Debug`;
//! - `Readers`: what the backend keeps to read besides the pool, with
//!   `read(&self, &read::Query, build)`, the rows it reads with it or
//!   `None` where sqlx must (see `read`), and `close(&self)`;
//! - `MIGRATOR` and `connect(url)`: its migrations and its pool, which
//!   [`SqlBackend::migrate`] wraps in [`Connections`](crate::pool::Connections)
//!   keeping as many idle connections as the backend says;
//! - for snapshots and loads (`snapshot`, `load`): `TABLES_SQL` and
//!   `COLUMNS_SQL` (the schema's tables; a table's columns and declared
//!   types), `column_kind` (a declared type's [`ColumnKind`](crate::snapshot::ColumnKind)),
//!   `SNAPSHOT_BEGIN` (a consistent read-only transaction), `row_order`,
//!   `begin_load`, `INSERT_OVERRIDING` and `after_load`.

mod approvals;
mod archives;
mod audit;
mod backups;
mod batch;
mod cluster;
mod credentials;
mod drift;
mod groups;
mod identities;
mod jobs;
pub(super) mod keys;
pub(crate) mod load;
mod probe;
pub(super) mod read;
mod sessions;
mod settings;
mod snapshot;
mod streams;
mod xks;

use async_trait::async_trait;
use keyhold_core::StoreError;
use keyhold_core::approval::{ApprovalRequest, ApprovalStatus, Vote};
use keyhold_core::audit::{AuditEntry, AuditFilter, AuditRecord};
use keyhold_core::backup::{AuditArchive, BackupRecord, SnapshotSink, SnapshotSummary};
use keyhold_core::clock::Timestamp;
use keyhold_core::cloud::aws::KmsKeyId;
use keyhold_core::cluster::{Lease, NodeRecord};
use keyhold_core::credential::Credential;
use keyhold_core::drift::{DriftCheck, DriftFilter, DriftKind, Finding};
use keyhold_core::group::KeyGroup;
use keyhold_core::identity::{Identity, Session};
use keyhold_core::job::{Job, JobMessage, JobStatus};
use keyhold_core::key::{Key, KeyPage};
use keyhold_core::names::{CredentialName, GroupName, IdentityName, NodeId};
use keyhold_core::ports::{JobCommit, Scheduled, SharedAuditMac, Store};
use keyhold_core::settings::Settings;
use keyhold_core::xks::{XksAccessKeyId, XksCredential, XksKey, XksStore};
use sqlx::migrate::Migrator;

use super::{
    BATCHES_STATEMENTS, COLUMNS_SQL, Db, FOR_UPDATE, INSERT_ORDER, INSERT_OVERRIDING, KIND,
    MIGRATOR, Readers, SNAPSHOT_BEGIN, Serial, SerialGuard, TABLES_SQL, WriteTransaction,
    after_load, begin_load, begin_write, column_kind, commit_after, connect, lock_writers,
    row_order,
};
use crate::SqlStore;
use crate::audit::{ChainHeadRow, chain_head, seal_all};
use crate::error::db;
use crate::pool::{Connections, Kept};
use crate::url::{mask_url, unavailable};
pub(super) use audit::Inserts as AuditInserts;

/// The store's way to its database: reads run on `&Pool` one statement at a
/// time; writes take a connection of it (see [`Connections`]).
type Pool = Connections<Db>;
/// sqlx's own pool, for migrations and loads.
type SqlxPool = sqlx::Pool<Db>;
type Conn = <Db as sqlx::Database>::Connection;

pub(crate) struct SqlBackend {
    pool: Pool,
    /// What reads besides the pool (see `read`).
    readers: Readers,
    audit_mac: SharedAuditMac,
    serial: Serial,
    /// The URL with any password masked, for logs and `Debug`.
    masked_url: String,
    /// Whether the last write was refused, for readiness.
    health: probe::WriteHealth,
}

impl std::fmt::Debug for SqlBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStore")
            .field("backend", &KIND.as_str())
            .field("url", &self.masked_url)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl SqlStore for SqlBackend {
    async fn close(&self) {
        self.readers.close();
        self.pool.close().await;
    }
}

impl SqlBackend {
    /// Brings the schema of the database at `url`, open in `pool`, up to date
    /// with `migrator`, and returns the store on it, keeping up to `keep`
    /// idle connections between uses.
    pub(super) async fn migrate(
        pool: SqlxPool,
        migrator: &Migrator,
        url: &str,
        audit_mac: SharedAuditMac,
        serial: Serial,
        keep: usize,
        readers: Readers,
    ) -> Result<Self, StoreError> {
        migrator
            .run(&pool)
            .await
            .map_err(|e| unavailable(url, "cannot migrate the database", &e))?;
        let masked_url = mask_url(url);
        tracing::debug!(url = %masked_url, "store opened");
        Ok(Self {
            pool: Connections::new(pool, keep),
            readers,
            audit_mac,
            serial,
            masked_url,
            health: probe::WriteHealth::default(),
        })
    }

    /// Where reads go: in place where the backend can, the pool otherwise.
    fn reads(&self) -> read::Reads<'_> {
        read::Reads {
            pool: &self.pool,
            readers: &self.readers,
        }
    }

    /// This process's turn to write, and a connection to write on.
    async fn writer(&self) -> Result<Writer<'_>, StoreError> {
        let serial = lock_writers(&self.serial).await;
        let connection = self.pool.take().await.map_err(db)?;
        Ok(Writer {
            connection,
            _serial: serial,
            pool: &self.pool,
            audit_mac: &self.audit_mac,
        })
    }

    /// Runs a change in one write transaction, with the audit entries
    /// `audits` picks from its result sealed after it in order: none exists
    /// without the others.
    async fn transact<'a, T>(
        &self,
        change: impl AsyncFnOnce(&mut Conn) -> Result<T, StoreError>,
        audits: impl FnOnce(&T) -> &'a [&'a AuditRecord],
    ) -> Result<T, StoreError> {
        let mut writer = self.writer().await?;
        let outcome = async {
            let mut w = writer.begin().await?;
            let result = change(&mut w.tx).await;
            let audits = result.as_ref().map_or(&[][..], audits);
            w.finish(result, audits).await
        }
        .await;
        writer.done(&outcome);
        outcome
    }

    /// Runs a change in one write transaction, with its audit entries in
    /// order: none exists without the others.
    async fn write<T>(
        &self,
        audits: &[&AuditRecord],
        change: impl AsyncFnOnce(&mut Conn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.transact(change, |_| audits).await
    }

    /// [`Self::write`] with one audit entry or none, its outcome noted for
    /// readiness.
    async fn audited<T>(
        &self,
        audit: Option<&AuditRecord>,
        change: impl AsyncFnOnce(&mut Conn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.audited_all(audit.as_slice(), change).await
    }

    /// [`Self::write`], its outcome noted for readiness.
    async fn audited_all<T>(
        &self,
        audits: &[&AuditRecord],
        change: impl AsyncFnOnce(&mut Conn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let outcome = self.write(audits, change).await;
        self.health.note(outcome, !audits.is_empty())
    }

    /// A conditional change: audited when it took place (`true`); when its
    /// condition did not hold (`false`) nothing is written, not even the entry.
    async fn audited_if(
        &self,
        audit: &AuditRecord,
        change: impl AsyncFnOnce(&mut Conn) -> Result<bool, StoreError>,
    ) -> Result<bool, StoreError> {
        let entry = [audit];
        let outcome = self
            .transact(change, |done| if *done { &entry[..] } else { &[] })
            .await;
        let grew = matches!(outcome, Ok(true));
        self.health.note(outcome, grew)
    }

    /// [`Self::audited_if`] for a change that says what it did: audited
    /// when it took place (`Some`); when its condition did not hold (`None`)
    /// nothing is written, not even the entry.
    async fn audited_some<T>(
        &self,
        audit: &AuditRecord,
        change: impl AsyncFnOnce(&mut Conn) -> Result<Option<T>, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        let entry = [audit];
        let outcome = self
            .transact(change, |done| if done.is_some() { &entry[..] } else { &[] })
            .await;
        let grew = matches!(outcome, Ok(Some(_)));
        self.health.note(outcome, grew)
    }
}

/// This process's turn to write, on a connection of its own. Dropped
/// without [`Writer::done`] (its task cancelled), the connection goes back
/// to the pool, which closes it if a transaction is still open on it.
struct Writer<'a> {
    // Declared before the guard so that it is let go (and a transaction a
    // cancelled task left on it rolled back) before the next writer may start.
    connection: Kept<Db>,
    _serial: SerialGuard<'a>,
    pool: &'a Pool,
    audit_mac: &'a SharedAuditMac,
}

impl Writer<'_> {
    /// Starts the write transaction, holding the backend's writer lock.
    async fn begin(&mut self) -> Result<WriteTx<'_>, StoreError> {
        let (tx, chain_head) = begin_write(self.pool.sqlx(), &mut self.connection).await?;
        Ok(WriteTx {
            tx,
            chain_head,
            audit_mac: self.audit_mac,
        })
    }

    /// Gives the connection back once the transaction has ended. After a
    /// failure of the database itself (rather than a refusal keyhold
    /// decides on, a duplicate or a lost fence) the pool checks it first.
    fn done<T>(self, outcome: &Result<T, StoreError>) {
        let failed = matches!(
            outcome,
            Err(StoreError::Unavailable(_) | StoreError::CannotWrite { .. })
        );
        self.pool.give_back(self.connection, failed);
    }
}

/// A write transaction. Dropping it without [`WriteTx::finish`] rolls back.
struct WriteTx<'a> {
    tx: WriteTransaction<'a>,
    /// The audit chain's head, where the backend read it as the
    /// transaction began; otherwise it is read when an entry is appended.
    chain_head: Option<ChainHeadRow>,
    audit_mac: &'a SharedAuditMac,
}

impl WriteTx<'_> {
    /// Commits the change with its audit entries, appended to the chain in
    /// the order given, when all succeed; otherwise rolls everything back
    /// and returns the first error. An entry that executes an approved
    /// request ([`AuditRecord::executes`]) first marks the request executed,
    /// only while it is still approved: otherwise
    /// [`StoreError::ApprovalSpent`], and the change is rolled back with it,
    /// so an approved request runs once however many writes race to run it.
    async fn finish<T>(
        mut self,
        result: Result<T, StoreError>,
        audits: &[&AuditRecord],
    ) -> Result<T, StoreError> {
        let sealed = match result {
            Ok(value) => self.seal(audits).await.map(|entries| (value, entries)),
            Err(e) => Err(e),
        };
        match sealed {
            Ok((value, entries)) => {
                commit_after(self.tx, audit::inserts(&entries)).await?;
                Ok(value)
            }
            Err(e) => {
                roll_back(self.tx).await;
                Err(e)
            }
        }
    }

    /// Spends the approvals `audits` execute and seals the entries after the
    /// chain's head, ready to insert.
    async fn seal(&mut self, audits: &[&AuditRecord]) -> Result<Vec<AuditEntry>, StoreError> {
        if audits.is_empty() {
            return Ok(Vec::new());
        }
        for record in audits {
            if let Some(execution) = &record.executes {
                approvals::spend(&mut self.tx, execution, record).await?;
            }
        }
        let head = match self.chain_head.take() {
            Some(row) => row,
            None => audit::read_head(&mut self.tx).await?,
        };
        seal_all(chain_head(head)?, audits, self.audit_mac).await
    }
}

/// Rolls `tx` back after a failure, which is what the caller reports; a
/// rollback that fails too leaves the connection to discard the transaction.
pub(super) async fn roll_back(tx: WriteTransaction<'_>) {
    if let Err(rollback) = tx.rollback().await {
        tracing::warn!(error = %rollback, "rollback failed; the connection discards the transaction");
    }
}

#[async_trait]
impl Store for SqlBackend {
    async fn xks_revision(&self) -> Result<i64, StoreError> {
        xks::revision(&self.pool).await
    }

    async fn list_xks_stores(&self) -> Result<Vec<XksStore>, StoreError> {
        xks::list_stores(&self.pool).await
    }

    async fn insert_xks_store(
        &self,
        store: &XksStore,
        credential: &XksCredential,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        self.audited(Some(audit), async |c| {
            xks::insert_store(c, store, credential).await
        })
        .await
    }

    async fn replace_xks_store(
        &self,
        expected: &XksStore,
        next: &XksStore,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        self.audited_if(audit, async |c| xks::replace_store(c, expected, next).await)
            .await
    }

    async fn delete_xks_store(
        &self,
        id: uuid::Uuid,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        self.audited(Some(audit), async |c| xks::delete_store(c, id).await)
            .await
    }

    async fn list_xks_credentials(&self) -> Result<Vec<XksCredential>, StoreError> {
        xks::list_credentials(&self.pool).await
    }

    async fn insert_xks_credential(
        &self,
        credential: &XksCredential,
        max_active: u32,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        self.audited_if(audit, async |c| {
            xks::insert_credential(c, credential, max_active).await
        })
        .await
    }

    async fn delete_xks_credential(
        &self,
        store_id: uuid::Uuid,
        access_key_id: &XksAccessKeyId,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        self.audited_if(audit, async |c| {
            xks::delete_credential(c, store_id, access_key_id).await
        })
        .await
    }

    async fn list_xks_keys(&self, store_id: Option<uuid::Uuid>) -> Result<Vec<XksKey>, StoreError> {
        xks::list_keys(&self.pool, store_id).await
    }

    async fn get_xks_key(&self, id: uuid::Uuid) -> Result<Option<XksKey>, StoreError> {
        let mut conn = self.pool.take().await.map_err(db)?;
        let key = xks::get_key(&mut conn, id).await;
        self.pool.give_back(conn, key.is_err());
        key
    }

    async fn insert_xks_key(&self, key: &XksKey, audit: &AuditRecord) -> Result<(), StoreError> {
        self.audited(Some(audit), async |c| xks::insert_key(c, key).await)
            .await
    }

    async fn replace_xks_key(
        &self,
        expected: &XksKey,
        next: &XksKey,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        self.audited_if(audit, async |c| xks::replace_key(c, expected, next).await)
            .await
    }

    async fn delete_xks_key(
        &self,
        id: uuid::Uuid,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        self.audited_if(audit, async |c| xks::delete_key(c, id).await)
            .await
    }

    async fn update_xks_key_handle(
        &self,
        id: uuid::Uuid,
        handle: &[u8],
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        self.audited(Some(audit), async |c| {
            xks::update_key_handle(c, id, handle).await
        })
        .await
    }

    async fn update_xks_credential_secret(
        &self,
        id: uuid::Uuid,
        sealed_secret: &[u8],
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        self.audited(Some(audit), async |c| {
            xks::update_credential_secret(c, id, sealed_secret).await
        })
        .await
    }

    async fn list_identities(&self) -> Result<Vec<Identity>, StoreError> {
        identities::list(&self.pool).await
    }

    async fn get_identity(&self, name: &IdentityName) -> Result<Option<Identity>, StoreError> {
        identities::get(&self.pool, name).await
    }

    async fn insert_identity(
        &self,
        identity: &Identity,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        self.audited(Some(audit), async |c| identities::insert(c, identity).await)
            .await
    }

    async fn update_identity(
        &self,
        identity: &Identity,
        audit: Option<&AuditRecord>,
    ) -> Result<(), StoreError> {
        self.audited(audit, async |c| identities::update(c, identity).await)
            .await
    }

    async fn delete_identity(
        &self,
        name: &IdentityName,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        self.audited(Some(audit), async |c| identities::delete(c, name).await)
            .await
    }

    async fn begin_login_attempt(
        &self,
        name: &IdentityName,
        now: Timestamp,
        threshold: u32,
    ) -> Result<Option<u32>, StoreError> {
        self.audited(None, async |c| {
            identities::begin_attempt(c, name, &now, threshold).await
        })
        .await
    }

    async fn lock_identity(
        &self,
        name: &IdentityName,
        until: Timestamp,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        self.audited(Some(audit), async |c| {
            identities::lock(c, name, &until).await
        })
        .await
    }

    async fn clear_failed_logins(
        &self,
        name: &IdentityName,
        now: Timestamp,
        checked_hash: &str,
    ) -> Result<bool, StoreError> {
        self.audited(None, async |c| {
            identities::clear_failures(c, name, &now, checked_hash).await
        })
        .await
    }

    async fn set_password(
        &self,
        name: &IdentityName,
        current_hash: &str,
        new_hash: &str,
        keep_previous: u32,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        self.audited_if(audit, async |c| {
            identities::set_password(c, name, current_hash, new_hash, keep_previous, &audit.time)
                .await
        })
        .await
    }

    async fn password_history(&self, name: &IdentityName) -> Result<Vec<String>, StoreError> {
        identities::password_history(&self.pool, name).await
    }

    async fn insert_session(
        &self,
        session: &Session,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        self.audited(Some(audit), async |c| sessions::insert(c, session).await)
            .await
    }

    async fn get_session(&self, id: &str) -> Result<Option<Session>, StoreError> {
        sessions::get(self.reads(), id).await
    }

    async fn update_session(&self, session: &Session) -> Result<(), StoreError> {
        self.audited(None, async |c| sessions::update(c, session).await)
            .await
    }

    async fn replace_session(
        &self,
        previous_id: &str,
        session: &Session,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        self.audited(Some(audit), async |c| {
            sessions::replace(c, previous_id, session).await
        })
        .await
    }

    async fn delete_session(
        &self,
        id: &str,
        audit: Option<&AuditRecord>,
    ) -> Result<(), StoreError> {
        self.audited(audit, async |c| sessions::delete(c, id).await)
            .await
    }

    async fn delete_sessions_of(&self, name: &IdentityName) -> Result<(), StoreError> {
        self.audited(None, async |c| sessions::delete_of(c, name).await)
            .await
    }

    async fn list_credentials(&self) -> Result<Vec<Credential>, StoreError> {
        credentials::list(&self.pool).await
    }

    async fn get_credential(
        &self,
        name: &CredentialName,
    ) -> Result<Option<Credential>, StoreError> {
        credentials::get(self.reads(), name).await
    }

    async fn insert_credential(
        &self,
        credential: &Credential,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        self.audited(Some(audit), async |c| {
            credentials::insert(c, credential).await
        })
        .await
    }

    async fn update_credential_secret(
        &self,
        id: uuid::Uuid,
        sealed_secret: &[u8],
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        self.audited(Some(audit), async |c| {
            credentials::update_secret(c, id, sealed_secret).await
        })
        .await
    }

    async fn delete_credential(
        &self,
        name: &CredentialName,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        self.audited(Some(audit), async |c| credentials::delete(c, name).await)
            .await
    }

    async fn list_groups(&self) -> Result<Vec<KeyGroup>, StoreError> {
        groups::list(&self.pool).await
    }

    async fn get_group(&self, name: &GroupName) -> Result<Option<KeyGroup>, StoreError> {
        groups::get(self.reads(), name).await
    }

    async fn insert_group(&self, group: &KeyGroup, audit: &AuditRecord) -> Result<(), StoreError> {
        self.audited(Some(audit), async |c| groups::insert(c, group).await)
            .await
    }

    async fn update_group(&self, group: &KeyGroup, audit: &AuditRecord) -> Result<(), StoreError> {
        self.audited(Some(audit), async |c| groups::update(c, group).await)
            .await
    }

    async fn replace_group(
        &self,
        expected: &KeyGroup,
        next: &KeyGroup,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        self.audited_if(audit, async |c| groups::replace(c, expected, next).await)
            .await
    }

    async fn delete_group(&self, name: &GroupName, audit: &AuditRecord) -> Result<(), StoreError> {
        self.audited(Some(audit), async |c| groups::delete(c, name).await)
            .await
    }

    async fn list_keys(&self, page: &KeyPage) -> Result<Vec<Key>, StoreError> {
        self.reads().rows(&keys::page_query(page)).await
    }

    async fn get_key(&self, id: uuid::Uuid) -> Result<Option<Key>, StoreError> {
        keys::get(self.reads(), id).await
    }

    async fn keys_in_kms_key(&self, kms_key_id: &KmsKeyId) -> Result<Vec<Key>, StoreError> {
        keys::in_kms_key(self.reads(), kms_key_id).await
    }

    async fn latest_key_version(&self, group: &GroupName) -> Result<Option<u32>, StoreError> {
        keys::latest_version(self.reads(), group).await
    }

    async fn insert_key(&self, key: &Key, audit: Option<&AuditRecord>) -> Result<(), StoreError> {
        self.audited(audit, async |c| keys::insert(c, key).await)
            .await
    }

    async fn update_key(&self, key: &Key, audit: Option<&AuditRecord>) -> Result<(), StoreError> {
        self.audited(audit, async |c| keys::update(c, key).await)
            .await
    }

    async fn delete_key(&self, id: uuid::Uuid, audit: &AuditRecord) -> Result<(), StoreError> {
        self.audited(Some(audit), async |c| keys::delete(c, id).await)
            .await
    }

    async fn insert_approval(
        &self,
        request: &ApprovalRequest,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        self.audited(Some(audit), async |c| approvals::insert(c, request).await)
            .await
    }

    async fn get_approval(&self, id: uuid::Uuid) -> Result<Option<ApprovalRequest>, StoreError> {
        approvals::get(&self.pool, id).await
    }

    async fn list_approvals(
        &self,
        status: Option<ApprovalStatus>,
        limit: u32,
    ) -> Result<Vec<ApprovalRequest>, StoreError> {
        approvals::list(&self.pool, status, limit).await
    }

    async fn vote_approval(
        &self,
        id: uuid::Uuid,
        vote: &Vote,
        audit: &AuditRecord,
    ) -> Result<Option<ApprovalStatus>, StoreError> {
        self.audited_some(audit, async |c| approvals::vote(c, id, vote).await)
            .await
    }

    async fn close_approval(
        &self,
        id: uuid::Uuid,
        from: ApprovalStatus,
        to: ApprovalStatus,
        outcome: &str,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        self.audited_if(audit, async |c| {
            approvals::close(c, id, from, to, outcome, &audit.time).await
        })
        .await
    }

    async fn take_approval_result(
        &self,
        id: uuid::Uuid,
        audit: &AuditRecord,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.audited_some(audit, async |c| approvals::take_result(c, id).await)
            .await
    }

    async fn insert_job(
        &self,
        job: &Job,
        schedule: Option<Scheduled<'_>>,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        self.audited(Some(audit), async |c| {
            if let Some(fence) = schedule.and_then(|s| s.fence) {
                cluster::check_fence(&mut *c, fence).await?;
            }
            jobs::insert(c, job).await?;
            if let Some(scheduled) = schedule {
                groups::update_rotation(c, scheduled.group).await?;
            }
            Ok(())
        })
        .await
    }

    async fn get_job(&self, id: uuid::Uuid) -> Result<Option<Job>, StoreError> {
        jobs::get(self.reads(), id).await
    }

    async fn list_jobs(&self, limit: u32) -> Result<Vec<Job>, StoreError> {
        jobs::list(&self.pool, limit).await
    }

    async fn unfinished_jobs(&self) -> Result<Vec<Job>, StoreError> {
        jobs::unfinished(&self.pool).await
    }

    async fn unfinished_group_job(&self, group: &GroupName) -> Result<Option<Job>, StoreError> {
        jobs::unfinished_of_group(self.reads(), group).await
    }

    /// The step's audit entry comes first in the chain, then its drift
    /// record's, in their order.
    async fn commit_job(&self, commit: &JobCommit<'_>) -> Result<(), StoreError> {
        let drift_audits = commit
            .drift
            .map(|d| d.audits.as_slice())
            .unwrap_or_default();
        let audits: Vec<&AuditRecord> = commit.audit.into_iter().chain(drift_audits).collect();
        self.audited_all(&audits, async |c| jobs::commit(c, commit).await)
            .await
    }

    async fn change_job_status(
        &self,
        job: &Job,
        from: JobStatus,
        message: &JobMessage,
        audit: &AuditRecord,
        fence: Option<&Lease>,
        remove_key: Option<uuid::Uuid>,
    ) -> Result<bool, StoreError> {
        self.audited_if(audit, async |c| {
            if !jobs::change_status(c, job, from, message, fence).await? {
                return Ok(false);
            }
            if let Some(id) = remove_key {
                keys::delete_without_kms_key(c, id).await?;
            }
            Ok(true)
        })
        .await
    }

    async fn start_job(
        &self,
        job: &Job,
        from: JobStatus,
        attempts: u32,
        message: &JobMessage,
        fence: Option<&Lease>,
    ) -> Result<bool, StoreError> {
        self.audited(None, async |c| {
            jobs::start(c, job, from, attempts, message, fence).await
        })
        .await
    }

    async fn job_messages(&self, job_id: uuid::Uuid) -> Result<Vec<JobMessage>, StoreError> {
        jobs::messages(self.reads(), job_id).await
    }

    async fn latest_rotation(&self, group: &GroupName) -> Result<Option<Job>, StoreError> {
        jobs::latest_rotation(self.reads(), group).await
    }

    async fn failed_jobs(&self, limit: u32) -> Result<Vec<Job>, StoreError> {
        jobs::failed(&self.pool, limit).await
    }

    async fn due_groups(&self, now: Timestamp, limit: u32) -> Result<Vec<KeyGroup>, StoreError> {
        groups::due(&self.pool, &now, limit).await
    }

    async fn heartbeat(&self, node: &NodeRecord) -> Result<(), StoreError> {
        // A write every few seconds on every node: readiness learns from it
        // that the database cannot record changes before a request fails.
        self.health
            .note(cluster::heartbeat(&self.pool, node).await, false)
    }

    async fn list_nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        cluster::list_nodes(&self.pool).await
    }

    async fn acquire_lease(
        &self,
        name: &str,
        holder: &NodeId,
        now: Timestamp,
        until: Timestamp,
    ) -> Result<Option<Lease>, StoreError> {
        self.audited(None, async |c| {
            cluster::acquire(c, name, holder, now, until).await
        })
        .await
    }

    async fn get_lease(&self, name: &str) -> Result<Option<Lease>, StoreError> {
        let mut conn = self.pool.take().await.map_err(db)?;
        let lease = cluster::get_lease(&mut conn, name).await;
        self.pool.give_back(conn, lease.is_err());
        lease
    }

    async fn release_lease(&self, name: &str, holder: &NodeId) -> Result<(), StoreError> {
        self.audited(None, async |c| cluster::release(c, name, holder).await)
            .await
    }

    async fn list_drift(&self, filter: &DriftFilter) -> Result<Vec<Finding>, StoreError> {
        drift::list(&self.pool, filter).await
    }

    async fn get_drift(&self, id: uuid::Uuid) -> Result<Option<Finding>, StoreError> {
        drift::get(&self.pool, id).await
    }

    async fn drift_checks(&self) -> Result<Vec<DriftCheck>, StoreError> {
        drift::checks(&self.pool).await
    }

    async fn groups_due_for_drift_check(
        &self,
        checked_before: Timestamp,
        quiet_since: Timestamp,
        limit: u32,
    ) -> Result<Vec<KeyGroup>, StoreError> {
        groups::due_for_drift_check(&self.pool, &checked_before, &quiet_since, limit).await
    }

    async fn drift_counts(&self) -> Result<Vec<(DriftKind, u64)>, StoreError> {
        drift::counts(&self.pool).await
    }

    async fn unknown_kms_keys(&self, ids: &[KmsKeyId]) -> Result<Vec<KmsKeyId>, StoreError> {
        drift::unknown_kms_keys(&self.pool, ids).await
    }

    async fn get_settings(&self) -> Result<Settings, StoreError> {
        settings::get(self.reads()).await
    }

    async fn put_settings(&self, value: &Settings, audit: &AuditRecord) -> Result<(), StoreError> {
        self.audited(Some(audit), async |c| settings::put(c, value).await)
            .await
    }

    async fn replace_settings(
        &self,
        expected: &Settings,
        next: &Settings,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        self.audited_if(audit, async |c| settings::replace(c, expected, next).await)
            .await
    }

    async fn append_audit(&self, record: &AuditRecord) -> Result<(), StoreError> {
        self.audited(Some(record), async |_| Ok(())).await
    }

    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
        audit::list(&self.pool, filter).await
    }

    async fn audit_page(&self, after_seq: i64, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        audit::page(&self.pool, after_seq, limit).await
    }

    async fn audit_stream_cursor(&self, sink: &str) -> Result<Option<i64>, StoreError> {
        streams::cursor(&self.pool, sink).await
    }

    async fn advance_audit_stream_cursor(
        &self,
        sink: &str,
        expected: Option<i64>,
        seq: i64,
        node: &NodeId,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        self.audited(None, async |c| {
            streams::advance(c, sink, expected, seq, node, now).await
        })
        .await
    }

    async fn insert_backup(
        &self,
        backup: &BackupRecord,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        self.audited(Some(audit), async |c| backups::insert(c, backup).await)
            .await
    }

    async fn finish_backup(
        &self,
        backup: &BackupRecord,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        self.audited_if(audit, async |c| backups::finish(c, backup).await)
            .await
    }

    async fn get_backup(&self, id: uuid::Uuid) -> Result<Option<BackupRecord>, StoreError> {
        backups::get(&self.pool, id).await
    }

    async fn list_backups(&self, limit: u32) -> Result<Vec<BackupRecord>, StoreError> {
        backups::list(&self.pool, limit).await
    }

    async fn delete_backup(&self, id: uuid::Uuid, audit: &AuditRecord) -> Result<(), StoreError> {
        self.audited(Some(audit), async |c| backups::delete(c, id).await)
            .await
    }

    async fn export_snapshot(
        &self,
        sink: &mut dyn SnapshotSink,
    ) -> Result<SnapshotSummary, StoreError> {
        snapshot::export(&self.pool, sink).await
    }

    async fn insert_audit_archive(
        &self,
        archive: &AuditArchive,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        self.audited(Some(audit), async |c| archives::insert(c, archive).await)
            .await
    }

    async fn list_audit_archives(&self) -> Result<Vec<AuditArchive>, StoreError> {
        archives::list(&self.pool).await
    }

    async fn writable(&self, now: Timestamp) -> Result<(), StoreError> {
        match self.health.check(now) {
            probe::Check::Writable => Ok(()),
            probe::Check::Refused(error) => Err(error),
            // A success makes the store writable again.
            probe::Check::Probe => {
                let outcome = self.write(&[], async |c| probe::write(c).await).await;
                self.health.note(outcome, true)
            }
        }
    }
}

/// An update or delete by key touches exactly one row, or the row is missing.
fn one_row(rows_affected: u64) -> Result<(), StoreError> {
    if rows_affected == 0 {
        Err(StoreError::NotFound)
    } else {
        Ok(())
    }
}
