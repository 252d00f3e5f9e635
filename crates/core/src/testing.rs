//! Test support (feature `testing`): small in-memory fakes of the store, the
//! keystore and the cloud port, so the core's operations (and other crates'
//! tests) run without a database, a token or AWS.
//!
//! Rules: each fake keeps only the state the job engine reads back, and is
//! honest about it: a store call the fake does not keep answers
//! [`StoreError::Unavailable`] instead of pretending; the fake KMS enforces
//! what AWS enforces for imported material (a key takes only the material
//! first imported into it, is PendingImport again once it is deleted, and is
//! enabled by an import).
//! Failures are injected by name ([`FakeKms::fail_next`],
//! [`FakeStore::refuse_commits`]); every KMS call is counted.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use zeroize::Zeroizing;

use crate::approval::{ApprovalRequest, ApprovalStatus, Vote};
use crate::audit::{AuditEntry, AuditFilter, AuditMac, AuditRecord, hmac_sha256};
use crate::clock::Timestamp;
use crate::cloud::aws::{Alias, KeyMaterialId, KeyPolicy, KmsKeyId, Region};
use crate::cloud::{
    CloudConnector, CloudError, CloudKeyInfo, CloudKms, CloudMaterial, ImportParameters,
    MaterialImport, OperationPacing, PacingReport, WrappingAlgorithm,
};
use crate::cluster::{Lease, NodeRecord};
use crate::credential::{CloudService, Credential};
use crate::drift::{DriftCheck, DriftFilter, DriftKind, Finding};
use crate::error::{KeystoreError, StoreError};
use crate::group::KeyGroup;
use crate::identity::{Identity, Session};
use crate::job::{Job, JobKind, JobMessage, JobStatus};
use crate::key::{CheckDigits, Key, KeyPage, KeyState, MaterialState};
use crate::names::{CredentialName, GroupName, IdentityName, NodeId};
use crate::ports::{GeneratedKey, JobCommit, Keystore, KeystoreKind, Scheduled, Store};
use crate::settings::Settings;
use crate::xks::{XksAccessKeyId, XksCredential, XksKey, XksStore};

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

// The store

/// What the fake store holds; [`FakeStore::snapshot`] reads it back.
#[derive(Clone, Debug, Default)]
pub struct StoreState {
    pub credentials: BTreeMap<CredentialName, Credential>,
    pub groups: BTreeMap<GroupName, KeyGroup>,
    pub keys: BTreeMap<uuid::Uuid, Key>,
    /// In order of insertion.
    pub jobs: Vec<Job>,
    pub messages: Vec<JobMessage>,
    pub audit: Vec<AuditRecord>,
    pub settings: Settings,
    pub identities: BTreeMap<IdentityName, Identity>,
    /// Earlier password hashes per identity, newest first.
    pub password_history: BTreeMap<IdentityName, Vec<String>>,
    pub sessions: BTreeMap<String, Session>,
    /// Approval requests with their votes, oldest vote first.
    pub approvals: BTreeMap<uuid::Uuid, ApprovalRequest>,
    /// The sealed results waiting for their requesters, by request (the
    /// request's `has_sealed_result` says the same).
    pub approval_results: BTreeMap<uuid::Uuid, Vec<u8>>,
    /// Drift findings by id, open and cleared.
    pub drift: BTreeMap<uuid::Uuid, Finding>,
    /// Each group's last drift check.
    pub drift_checks: BTreeMap<GroupName, DriftCheck>,
    /// Backups in order of insertion.
    pub backups: Vec<crate::backup::BackupRecord>,
    /// Audit archives in order of insertion.
    pub audit_archives: Vec<crate::backup::AuditArchive>,
    /// Bumped by every XKS write, as the database's `xks_revision`.
    pub xks_revision: i64,
    /// External key stores, credentials and XKS keys, oldest first.
    pub xks_stores: Vec<XksStore>,
    pub xks_credentials: Vec<XksCredential>,
    pub xks_keys: Vec<XksKey>,
}

impl StoreState {
    /// The drift findings still open, by group, kind and subject.
    pub fn open_drift(&self) -> Vec<&Finding> {
        let mut open: Vec<&Finding> = self.drift.values().filter(|f| f.is_open()).collect();
        open.sort_by(|a, b| (&a.group, a.kind, &a.subject).cmp(&(&b.group, b.kind, &b.subject)));
        open
    }

    pub fn job(&self, id: uuid::Uuid) -> Option<&Job> {
        self.jobs.iter().find(|j| j.id == id)
    }

    /// The key first imported into this KMS key (the one its id names).
    pub fn key_by_kms_id(&self, kms_key_id: &KmsKeyId) -> Option<&Key> {
        self.keys
            .values()
            .find(|k| k.kms_key_id.as_ref() == Some(kms_key_id) && !k.rotated_in)
    }

    pub fn messages_of(&self, job: uuid::Uuid) -> Vec<String> {
        self.messages
            .iter()
            .filter(|m| m.job_id == job)
            .map(|m| m.text.clone())
            .collect()
    }

    pub fn audit_summaries(&self) -> Vec<String> {
        self.audit.iter().map(|a| a.summary.clone()).collect()
    }

    /// Appends an audit record, as the database does in its change's
    /// transaction. A record that executes an approved request
    /// ([`AuditRecord::executes`]) first marks the request executed, only
    /// while it is approved: otherwise [`StoreError::ApprovalSpent`] and
    /// nothing is recorded. The fake checks when it records the entry, so
    /// every write records its entry before it changes anything else: a
    /// refused entry then leaves the whole state as it was, as the
    /// database's rollback does.
    pub fn record(&mut self, a: &AuditRecord) -> Result<(), StoreError> {
        if let Some(execution) = &a.executes {
            let request = self
                .approvals
                .get_mut(&execution.request)
                .filter(|r| r.status == ApprovalStatus::Approved)
                .ok_or(StoreError::ApprovalSpent)?;
            request.status = ApprovalStatus::Executed;
            request.decided_at = Some(a.time);
            request.outcome = Some(a.summary.clone());
            request.has_sealed_result = execution.sealed_result.is_some();
            match &execution.sealed_result {
                Some(sealed) => {
                    self.approval_results
                        .insert(execution.request, sealed.clone());
                }
                None => {
                    self.approval_results.remove(&execution.request);
                }
            }
        }
        self.audit.push(a.clone());
        Ok(())
    }

    /// Whether a credential's id or access key id is taken (unique
    /// columns of the database).
    fn xks_credential_taken(&self, credential: &XksCredential) -> bool {
        self.xks_credentials
            .iter()
            .any(|c| c.id == credential.id || c.access_key_id == credential.access_key_id)
    }

    /// [`Self::record`] for the writes whose entry is optional.
    pub fn record_opt(&mut self, a: Option<&AuditRecord>) -> Result<(), StoreError> {
        a.map_or(Ok(()), |a| self.record(a))
    }
}

/// The [`Store`] port in memory: jobs, keys, groups, credentials, job
/// messages, identities with their password history, sessions, approval
/// requests with their votes and sealed results, backups and audit archives,
/// external key stores with their credentials and keys (and the revision
/// every XKS write bumps), and audit records (unsealed: the chain is the real store's job; no
/// snapshot either, the fake has no tables). Entries that execute an
/// approved request are checked as the database checks them
/// ([`StoreState::record`]).
#[derive(Default)]
pub struct FakeStore {
    state: Mutex<StoreState>,
    /// Makes every job commit fail from now on (a stale fence, a database gone).
    refusal: Mutex<Option<fn() -> StoreError>>,
    /// Makes every entry written on its own (refusals, logins) fail, and
    /// [`Store::writable`] say so: a database that cannot record changes.
    audit_refusal: Mutex<Option<fn() -> StoreError>>,
}

impl FakeStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn snapshot(&self) -> StoreState {
        lock(&self.state).clone()
    }

    pub fn put_credential(&self, credential: Credential) {
        lock(&self.state)
            .credentials
            .insert(credential.name.clone(), credential);
    }

    pub fn put_group(&self, group: KeyGroup) {
        lock(&self.state).groups.insert(group.name.clone(), group);
    }

    /// Replaces the settings without an audit entry (a test's starting point).
    pub fn replace_settings(&self, settings: Settings) {
        lock(&self.state).settings = settings;
    }

    pub fn put_identity(&self, identity: Identity) {
        lock(&self.state)
            .identities
            .insert(identity.name.clone(), identity);
    }

    pub fn put_key(&self, key: Key) {
        lock(&self.state).keys.insert(key.id, key);
    }

    pub fn put_job(&self, job: Job) {
        let mut state = lock(&self.state);
        state.jobs.retain(|j| j.id != job.id);
        state.jobs.push(job);
    }

    /// Every job commit from now on fails with `error()`; `None` lifts it.
    pub fn refuse_commits(&self, error: Option<fn() -> StoreError>) {
        *lock(&self.refusal) = error;
    }

    /// Every entry appended on its own fails with `error()` from now on,
    /// and [`Store::writable`] answers it; `None` lifts it.
    pub fn refuse_audit(&self, error: Option<fn() -> StoreError>) {
        *lock(&self.audit_refusal) = error;
    }

    fn not_kept<T>(what: &str) -> Result<T, StoreError> {
        Err(StoreError::Unavailable(format!(
            "the fake store keeps no {what}"
        )))
    }
}

#[async_trait]
impl Store for FakeStore {
    async fn xks_revision(&self) -> Result<i64, StoreError> {
        Ok(lock(&self.state).xks_revision)
    }
    async fn list_xks_stores(&self) -> Result<Vec<XksStore>, StoreError> {
        Ok(lock(&self.state).xks_stores.clone())
    }
    async fn insert_xks_store(
        &self,
        store: &XksStore,
        credential: &XksCredential,
        a: &AuditRecord,
    ) -> Result<(), StoreError> {
        let mut state = lock(&self.state);
        let taken = state.xks_stores.iter().any(|s| {
            s.id == store.id || s.name == store.name || s.path_prefix == store.path_prefix
        });
        if taken || state.xks_credential_taken(credential) {
            return Err(StoreError::Duplicate);
        }
        state.record(a)?;
        state.xks_stores.push(store.clone());
        state.xks_credentials.push(credential.clone());
        state.xks_revision += 1;
        Ok(())
    }
    async fn replace_xks_store(
        &self,
        expected: &XksStore,
        next: &XksStore,
        a: &AuditRecord,
    ) -> Result<bool, StoreError> {
        let mut state = lock(&self.state);
        let Some(i) = state.xks_stores.iter().position(|s| s == expected) else {
            return Ok(false);
        };
        state.record(a)?;
        // What the database's update writes: the rest stays as it was.
        let current = &mut state.xks_stores[i];
        current.quota_per_second = next.quota_per_second;
        current.mtls.clone_from(&next.mtls);
        current.updated_at = next.updated_at;
        state.xks_revision += 1;
        Ok(true)
    }
    async fn delete_xks_store(&self, id: uuid::Uuid, a: &AuditRecord) -> Result<(), StoreError> {
        let mut state = lock(&self.state);
        if !state.xks_stores.iter().any(|s| s.id == id) {
            return Err(StoreError::NotFound);
        }
        if state.xks_keys.iter().any(|k| k.store_id == id) {
            return Err(StoreError::InUse);
        }
        state.record(a)?;
        state.xks_stores.retain(|s| s.id != id);
        state.xks_credentials.retain(|c| c.store_id != id);
        state.xks_revision += 1;
        Ok(())
    }
    async fn list_xks_credentials(&self) -> Result<Vec<XksCredential>, StoreError> {
        Ok(lock(&self.state).xks_credentials.clone())
    }
    /// Counts and inserts under one lock, as the database does in one
    /// transaction: parallel calls never leave more than `max_active`.
    async fn insert_xks_credential(
        &self,
        credential: &XksCredential,
        max_active: u32,
        a: &AuditRecord,
    ) -> Result<bool, StoreError> {
        let mut state = lock(&self.state);
        if !state.xks_stores.iter().any(|s| s.id == credential.store_id) {
            return Err(StoreError::NotFound);
        }
        if state.xks_credential_taken(credential) {
            return Err(StoreError::Duplicate);
        }
        let active = state
            .xks_credentials
            .iter()
            .filter(|c| c.store_id == credential.store_id)
            .count();
        if active >= usize::try_from(max_active).unwrap_or(usize::MAX) {
            return Ok(false);
        }
        state.record(a)?;
        state.xks_credentials.push(credential.clone());
        state.xks_revision += 1;
        Ok(true)
    }
    async fn delete_xks_credential(
        &self,
        store_id: uuid::Uuid,
        access_key_id: &XksAccessKeyId,
        a: &AuditRecord,
    ) -> Result<bool, StoreError> {
        let mut state = lock(&self.state);
        let Some(i) = state
            .xks_credentials
            .iter()
            .position(|c| c.store_id == store_id && &c.access_key_id == access_key_id)
        else {
            return Ok(false);
        };
        state.record(a)?;
        state.xks_credentials.remove(i);
        state.xks_revision += 1;
        Ok(true)
    }
    async fn list_xks_keys(&self, store_id: Option<uuid::Uuid>) -> Result<Vec<XksKey>, StoreError> {
        Ok(lock(&self.state)
            .xks_keys
            .iter()
            .filter(|k| store_id.is_none_or(|id| k.store_id == id))
            .cloned()
            .collect())
    }
    async fn get_xks_key(&self, id: uuid::Uuid) -> Result<Option<XksKey>, StoreError> {
        Ok(lock(&self.state)
            .xks_keys
            .iter()
            .find(|k| k.id == id)
            .cloned())
    }
    async fn insert_xks_key(&self, key: &XksKey, a: &AuditRecord) -> Result<(), StoreError> {
        let mut state = lock(&self.state);
        if !state.xks_stores.iter().any(|s| s.id == key.store_id) {
            return Err(StoreError::NotFound);
        }
        if state.xks_keys.iter().any(|k| k.id == key.id) {
            return Err(StoreError::Duplicate);
        }
        state.record(a)?;
        state.xks_keys.push(key.clone());
        state.xks_revision += 1;
        Ok(())
    }
    async fn replace_xks_key(
        &self,
        expected: &XksKey,
        next: &XksKey,
        a: &AuditRecord,
    ) -> Result<bool, StoreError> {
        let mut state = lock(&self.state);
        let Some(i) = state.xks_keys.iter().position(|k| k == expected) else {
            return Ok(false);
        };
        state.record(a)?;
        // What the database's update writes: never the id, store, material
        // or creation time.
        let current = &mut state.xks_keys[i];
        current.description.clone_from(&next.description);
        current.usage = next.usage;
        current.enabled = next.enabled;
        current.rule.clone_from(&next.rule);
        current.updated_at = next.updated_at;
        state.xks_revision += 1;
        Ok(true)
    }
    async fn delete_xks_key(&self, id: uuid::Uuid, a: &AuditRecord) -> Result<bool, StoreError> {
        let mut state = lock(&self.state);
        let Some(i) = state.xks_keys.iter().position(|k| k.id == id) else {
            return Ok(false);
        };
        state.record(a)?;
        state.xks_keys.remove(i);
        state.xks_revision += 1;
        Ok(true)
    }
    async fn update_xks_key_handle(
        &self,
        id: uuid::Uuid,
        handle: &[u8],
        a: &AuditRecord,
    ) -> Result<(), StoreError> {
        let mut state = lock(&self.state);
        let Some(i) = state.xks_keys.iter().position(|k| k.id == id) else {
            return Err(StoreError::NotFound);
        };
        state.record(a)?;
        state.xks_keys[i].handle = handle.to_vec();
        state.xks_revision += 1;
        Ok(())
    }
    async fn update_xks_credential_secret(
        &self,
        id: uuid::Uuid,
        sealed_secret: &[u8],
        a: &AuditRecord,
    ) -> Result<(), StoreError> {
        let mut state = lock(&self.state);
        let Some(i) = state.xks_credentials.iter().position(|c| c.id == id) else {
            return Err(StoreError::NotFound);
        };
        state.record(a)?;
        state.xks_credentials[i].sealed_secret = sealed_secret.to_vec();
        state.xks_revision += 1;
        Ok(())
    }

    async fn list_identities(&self) -> Result<Vec<Identity>, StoreError> {
        Ok(lock(&self.state).identities.values().cloned().collect())
    }
    async fn get_identity(&self, name: &IdentityName) -> Result<Option<Identity>, StoreError> {
        Ok(lock(&self.state).identities.get(name).cloned())
    }
    async fn insert_identity(&self, i: &Identity, a: &AuditRecord) -> Result<(), StoreError> {
        let mut state = lock(&self.state);
        if state.identities.contains_key(&i.name) {
            return Err(StoreError::Duplicate);
        }
        state.record(a)?;
        state.identities.insert(i.name.clone(), i.clone());
        Ok(())
    }
    async fn update_identity(
        &self,
        i: &Identity,
        a: Option<&AuditRecord>,
    ) -> Result<(), StoreError> {
        let mut state = lock(&self.state);
        if !state.identities.contains_key(&i.name) {
            return Err(StoreError::NotFound);
        }
        state.record_opt(a)?;
        state.identities.insert(i.name.clone(), i.clone());
        Ok(())
    }
    async fn delete_identity(
        &self,
        name: &IdentityName,
        a: &AuditRecord,
    ) -> Result<(), StoreError> {
        let mut state = lock(&self.state);
        if !state.identities.contains_key(name) {
            return Err(StoreError::NotFound);
        }
        state.record(a)?;
        state.identities.remove(name);
        // The history goes with its identity, as the database's cascade does.
        state.password_history.remove(name);
        Ok(())
    }
    async fn begin_login_attempt(
        &self,
        name: &IdentityName,
        now: Timestamp,
        threshold: u32,
    ) -> Result<Option<u32>, StoreError> {
        let mut state = lock(&self.state);
        let Some(who) = state.identities.get_mut(name) else {
            return Ok(None);
        };
        if who.is_locked(now) || who.failed_logins >= threshold.max(1) {
            return Ok(None);
        }
        who.failed_logins += 1;
        Ok(Some(who.failed_logins))
    }
    async fn lock_identity(
        &self,
        name: &IdentityName,
        until: Timestamp,
        a: &AuditRecord,
    ) -> Result<(), StoreError> {
        let mut state = lock(&self.state);
        if !state.identities.contains_key(name) {
            return Err(StoreError::NotFound);
        }
        state.record(a)?;
        if let Some(who) = state.identities.get_mut(name) {
            who.locked_until = Some(until);
            who.failed_logins = 0;
        }
        Ok(())
    }
    async fn clear_failed_logins(
        &self,
        name: &IdentityName,
        now: Timestamp,
        checked_hash: &str,
    ) -> Result<bool, StoreError> {
        let mut state = lock(&self.state);
        let Some(who) = state.identities.get_mut(name) else {
            return Ok(false);
        };
        if who.is_locked(now) || who.password_hash != checked_hash {
            return Ok(false);
        }
        who.failed_logins = 0;
        who.locked_until = None;
        Ok(true)
    }
    async fn set_password(
        &self,
        name: &IdentityName,
        current_hash: &str,
        new_hash: &str,
        keep_previous: u32,
        a: &AuditRecord,
    ) -> Result<bool, StoreError> {
        let mut state = lock(&self.state);
        if state
            .identities
            .get(name)
            .is_none_or(|who| who.password_hash != current_hash)
        {
            return Ok(false);
        }
        state.record(a)?;
        if let Some(who) = state.identities.get_mut(name) {
            new_hash.clone_into(&mut who.password_hash);
            who.must_change_password = false;
        }
        let history = state.password_history.entry(name.clone()).or_default();
        history.insert(0, current_hash.to_owned());
        history.truncate(usize::try_from(keep_previous).unwrap_or(usize::MAX));
        Ok(true)
    }
    async fn password_history(&self, name: &IdentityName) -> Result<Vec<String>, StoreError> {
        Ok(lock(&self.state)
            .password_history
            .get(name)
            .cloned()
            .unwrap_or_default())
    }
    async fn insert_session(&self, session: &Session, a: &AuditRecord) -> Result<(), StoreError> {
        let mut state = lock(&self.state);
        state.record(a)?;
        state.sessions.insert(session.id.clone(), session.clone());
        Ok(())
    }
    async fn get_session(&self, id: &str) -> Result<Option<Session>, StoreError> {
        Ok(lock(&self.state).sessions.get(id).cloned())
    }
    async fn update_session(&self, session: &Session) -> Result<(), StoreError> {
        lock(&self.state)
            .sessions
            .insert(session.id.clone(), session.clone());
        Ok(())
    }
    async fn replace_session(
        &self,
        previous_id: &str,
        session: &Session,
        a: &AuditRecord,
    ) -> Result<(), StoreError> {
        let mut state = lock(&self.state);
        state.record(a)?;
        state.sessions.remove(previous_id);
        state.sessions.insert(session.id.clone(), session.clone());
        Ok(())
    }
    async fn delete_session(&self, id: &str, a: Option<&AuditRecord>) -> Result<(), StoreError> {
        let mut state = lock(&self.state);
        state.record_opt(a)?;
        state.sessions.remove(id);
        Ok(())
    }
    async fn delete_sessions_of(&self, name: &IdentityName) -> Result<(), StoreError> {
        lock(&self.state)
            .sessions
            .retain(|_, s| !s.identities.iter().any(|i| &i.name == name));
        Ok(())
    }

    async fn list_credentials(&self) -> Result<Vec<Credential>, StoreError> {
        Ok(lock(&self.state).credentials.values().cloned().collect())
    }
    async fn get_credential(
        &self,
        name: &CredentialName,
    ) -> Result<Option<Credential>, StoreError> {
        Ok(lock(&self.state).credentials.get(name).cloned())
    }
    async fn insert_credential(&self, c: &Credential, a: &AuditRecord) -> Result<(), StoreError> {
        let mut state = lock(&self.state);
        if state.credentials.contains_key(&c.name) {
            return Err(StoreError::Duplicate);
        }
        state.record(a)?;
        state.credentials.insert(c.name.clone(), c.clone());
        Ok(())
    }
    async fn update_credential_secret(
        &self,
        _: uuid::Uuid,
        _: &[u8],
        _: &AuditRecord,
    ) -> Result<(), StoreError> {
        Self::not_kept("credential secrets")
    }
    async fn delete_credential(
        &self,
        _: &CredentialName,
        _: &AuditRecord,
    ) -> Result<(), StoreError> {
        Self::not_kept("credential deletions")
    }

    async fn list_groups(&self) -> Result<Vec<KeyGroup>, StoreError> {
        Ok(lock(&self.state).groups.values().cloned().collect())
    }
    async fn get_group(&self, name: &GroupName) -> Result<Option<KeyGroup>, StoreError> {
        Ok(lock(&self.state).groups.get(name).cloned())
    }
    async fn insert_group(&self, g: &KeyGroup, a: &AuditRecord) -> Result<(), StoreError> {
        let mut state = lock(&self.state);
        // The name's unique constraint, and the index on (region, alias).
        if state.groups.contains_key(&g.name)
            || state
                .groups
                .values()
                .any(|o| o.aws.alias == g.aws.alias && o.aws.region == g.aws.region)
        {
            return Err(StoreError::Duplicate);
        }
        state.record(a)?;
        state.groups.insert(g.name.clone(), g.clone());
        Ok(())
    }
    async fn update_group(&self, g: &KeyGroup, a: &AuditRecord) -> Result<(), StoreError> {
        let mut state = lock(&self.state);
        if !state.groups.contains_key(&g.name) {
            return Err(StoreError::NotFound);
        }
        state.record(a)?;
        state.groups.insert(g.name.clone(), g.clone());
        Ok(())
    }
    async fn replace_group(
        &self,
        expected: &KeyGroup,
        next: &KeyGroup,
        a: &AuditRecord,
    ) -> Result<bool, StoreError> {
        let mut state = lock(&self.state);
        match state.groups.get(&expected.name) {
            None => return Err(StoreError::NotFound),
            Some(current) if current != expected => return Ok(false),
            Some(_) => {}
        }
        // The database's unique index on (region, alias).
        if state.groups.values().any(|g| {
            g.name != next.name && g.aws.alias == next.aws.alias && g.aws.region == next.aws.region
        }) {
            return Err(StoreError::Duplicate);
        }
        state.record(a)?;
        state.groups.insert(next.name.clone(), next.clone());
        Ok(true)
    }
    async fn delete_group(&self, _: &GroupName, _: &AuditRecord) -> Result<(), StoreError> {
        Self::not_kept("group deletions")
    }

    async fn list_keys(&self, page: &KeyPage) -> Result<Vec<Key>, StoreError> {
        let mut keys: Vec<Key> = lock(&self.state)
            .keys
            .values()
            .filter(|k| page.group.as_ref().is_none_or(|g| &k.group == g))
            .filter(|k| {
                page.after
                    .as_ref()
                    .is_none_or(|after| (&k.group, k.version) > (&after.group, after.version))
            })
            .cloned()
            .collect();
        keys.sort_by(|a, b| (&a.group, a.version).cmp(&(&b.group, b.version)));
        keys.truncate(usize::try_from(page.limit).unwrap_or(usize::MAX));
        Ok(keys)
    }
    async fn get_key(&self, id: uuid::Uuid) -> Result<Option<Key>, StoreError> {
        Ok(lock(&self.state).keys.get(&id).cloned())
    }
    async fn keys_in_kms_key(&self, kms_key_id: &KmsKeyId) -> Result<Vec<Key>, StoreError> {
        let mut keys: Vec<Key> = lock(&self.state)
            .keys
            .values()
            .filter(|k| k.kms_key_id.as_ref() == Some(kms_key_id))
            .cloned()
            .collect();
        keys.sort_by_key(|k| k.version);
        Ok(keys)
    }
    async fn latest_key_version(&self, group: &GroupName) -> Result<Option<u32>, StoreError> {
        Ok(lock(&self.state)
            .keys
            .values()
            .filter(|k| &k.group == group)
            .map(|k| k.version)
            .max())
    }
    async fn insert_key(&self, key: &Key, audit: Option<&AuditRecord>) -> Result<(), StoreError> {
        let mut state = lock(&self.state);
        if state.keys.contains_key(&key.id) {
            return Err(StoreError::Duplicate);
        }
        state.record_opt(audit)?;
        state.keys.insert(key.id, key.clone());
        Ok(())
    }
    async fn update_key(&self, key: &Key, audit: Option<&AuditRecord>) -> Result<(), StoreError> {
        let mut state = lock(&self.state);
        if !state.keys.contains_key(&key.id) {
            return Err(StoreError::NotFound);
        }
        state.record_opt(audit)?;
        state.keys.insert(key.id, key.clone());
        Ok(())
    }
    async fn delete_key(&self, _: uuid::Uuid, _: &AuditRecord) -> Result<(), StoreError> {
        Self::not_kept("key deletions")
    }

    async fn insert_approval(
        &self,
        request: &ApprovalRequest,
        a: &AuditRecord,
    ) -> Result<(), StoreError> {
        let mut state = lock(&self.state);
        if state.approvals.contains_key(&request.id) {
            return Err(StoreError::Duplicate);
        }
        state.record(a)?;
        // Stored as the database stores a new request: pending, no votes,
        // nothing decided.
        let stored = ApprovalRequest {
            status: ApprovalStatus::Pending,
            votes: Vec::new(),
            decided_at: None,
            outcome: None,
            has_sealed_result: false,
            ..request.clone()
        };
        state.approvals.insert(request.id, stored);
        Ok(())
    }
    async fn get_approval(&self, id: uuid::Uuid) -> Result<Option<ApprovalRequest>, StoreError> {
        Ok(lock(&self.state).approvals.get(&id).cloned())
    }
    async fn list_approvals(
        &self,
        status: Option<ApprovalStatus>,
        limit: u32,
    ) -> Result<Vec<ApprovalRequest>, StoreError> {
        let limit = match limit {
            0 => 100,
            n => n.min(1000),
        };
        let mut requests: Vec<ApprovalRequest> = lock(&self.state)
            .approvals
            .values()
            .filter(|r| status.is_none_or(|s| r.status == s))
            .cloned()
            .collect();
        // Newest first (the sort is stable: ties keep the map's order).
        requests.sort_by_key(|r| std::cmp::Reverse(r.requested_at));
        requests.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(requests)
    }
    async fn vote_approval(
        &self,
        id: uuid::Uuid,
        vote: &Vote,
        a: &AuditRecord,
    ) -> Result<Option<ApprovalStatus>, StoreError> {
        let mut state = lock(&self.state);
        let Some(request) = state.approvals.get(&id) else {
            return Err(StoreError::NotFound);
        };
        if request.status != ApprovalStatus::Pending || vote.at >= request.expires_at {
            return Ok(None);
        }
        // The database's primary key on (request, identity).
        if request.votes.iter().any(|v| v.identity == vote.identity) {
            return Err(StoreError::Duplicate);
        }
        state.record(a)?;
        let Some(request) = state.approvals.get_mut(&id) else {
            return Err(StoreError::NotFound);
        };
        request.votes.push(vote.clone());
        if !vote.approve {
            request.status = ApprovalStatus::Denied;
            request.decided_at = Some(vote.at);
        } else if request.remaining() == 0 {
            request.status = ApprovalStatus::Approved;
        }
        Ok(Some(request.status))
    }
    async fn close_approval(
        &self,
        id: uuid::Uuid,
        from: ApprovalStatus,
        to: ApprovalStatus,
        outcome: &str,
        a: &AuditRecord,
    ) -> Result<bool, StoreError> {
        let mut state = lock(&self.state);
        if state.approvals.get(&id).is_none_or(|r| r.status != from) {
            return Ok(false);
        }
        state.record(a)?;
        if let Some(request) = state.approvals.get_mut(&id) {
            request.status = to;
            request.outcome = Some(outcome.to_owned());
            request.decided_at = Some(a.time);
        }
        Ok(true)
    }
    async fn take_approval_result(
        &self,
        id: uuid::Uuid,
        a: &AuditRecord,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let mut state = lock(&self.state);
        if !state.approval_results.contains_key(&id) {
            return Ok(None);
        }
        state.record(a)?;
        if let Some(request) = state.approvals.get_mut(&id) {
            request.has_sealed_result = false;
        }
        Ok(state.approval_results.remove(&id))
    }

    async fn insert_job(
        &self,
        job: &Job,
        schedule: Option<Scheduled<'_>>,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        let mut state = lock(&self.state);
        // The database's unique index: one unfinished job per group.
        if state.job(job.id).is_some()
            || state
                .jobs
                .iter()
                .any(|j| j.kind.group() == job.kind.group() && !j.status.is_finished())
        {
            return Err(StoreError::Duplicate);
        }
        state.record(audit)?;
        if let Some(scheduled) = schedule {
            state
                .groups
                .insert(scheduled.group.name.clone(), scheduled.group.clone());
        }
        state.jobs.push(job.clone());
        Ok(())
    }
    async fn get_job(&self, id: uuid::Uuid) -> Result<Option<Job>, StoreError> {
        Ok(lock(&self.state).job(id).cloned())
    }
    async fn list_jobs(&self, _: u32) -> Result<Vec<Job>, StoreError> {
        Ok(lock(&self.state).jobs.iter().rev().cloned().collect())
    }
    async fn unfinished_jobs(&self) -> Result<Vec<Job>, StoreError> {
        Ok(lock(&self.state)
            .jobs
            .iter()
            .filter(|j| !j.status.is_finished())
            .cloned()
            .collect())
    }
    async fn unfinished_group_job(&self, group: &GroupName) -> Result<Option<Job>, StoreError> {
        Ok(lock(&self.state)
            .jobs
            .iter()
            .find(|j| j.kind.group() == group && !j.status.is_finished())
            .cloned())
    }
    async fn commit_job(&self, commit: &JobCommit<'_>) -> Result<(), StoreError> {
        if let Some(refusal) = *lock(&self.refusal) {
            return Err(refusal());
        }
        let mut state = lock(&self.state);
        if state.job(commit.job.id).is_none() {
            return Err(StoreError::NotFound);
        }
        state.record_opt(commit.audit)?;
        if let Some(job) = state.jobs.iter_mut().find(|j| j.id == commit.job.id) {
            *job = commit.job.clone();
        }
        for key in commit.keys {
            state.keys.insert(key.id, key.clone());
        }
        if let Some(group) = commit.group {
            state.groups.insert(group.name.clone(), group.clone());
        }
        if let Some(drift) = commit.drift {
            for audit in &drift.audits {
                state.record(audit)?;
            }
            for finding in &drift.findings {
                state.drift.insert(finding.id, finding.clone());
            }
            state
                .drift_checks
                .insert(drift.check.group.clone(), drift.check.clone());
        }
        state.messages.extend(commit.messages.iter().cloned());
        Ok(())
    }
    async fn change_job_status(
        &self,
        job: &Job,
        from: JobStatus,
        message: &JobMessage,
        audit: &AuditRecord,
        _: Option<&Lease>,
        remove_key: Option<uuid::Uuid>,
    ) -> Result<bool, StoreError> {
        if let Some(refusal) = *lock(&self.refusal) {
            return Err(refusal());
        }
        let mut state = lock(&self.state);
        if state
            .job(job.id)
            .is_none_or(|stored| stored.status != from || stored.attempts != job.attempts)
        {
            return Ok(false);
        }
        state.record(audit)?;
        if let Some(stored) = state.jobs.iter_mut().find(|j| j.id == job.id) {
            stored.status = job.status;
            stored.error.clone_from(&job.error);
            stored.finished_at = job.finished_at;
        }
        if let Some(id) = remove_key
            && state.keys.get(&id).is_some_and(|k| k.kms_key_id.is_none())
        {
            state.keys.remove(&id);
        }
        state.messages.push(message.clone());
        Ok(true)
    }
    async fn start_job(
        &self,
        job: &Job,
        from: JobStatus,
        attempts: u32,
        message: &JobMessage,
        _: Option<&Lease>,
    ) -> Result<bool, StoreError> {
        if let Some(refusal) = *lock(&self.refusal) {
            return Err(refusal());
        }
        let mut state = lock(&self.state);
        let Some(stored) = state.jobs.iter_mut().find(|j| j.id == job.id) else {
            return Err(StoreError::NotFound);
        };
        if stored.status != from || stored.attempts != attempts {
            return Ok(false);
        }
        *stored = job.clone();
        state.messages.push(message.clone());
        Ok(true)
    }
    async fn job_messages(&self, job_id: uuid::Uuid) -> Result<Vec<JobMessage>, StoreError> {
        Ok(lock(&self.state)
            .messages
            .iter()
            .filter(|m| m.job_id == job_id)
            .cloned()
            .collect())
    }
    async fn latest_rotation(&self, group: &GroupName) -> Result<Option<Job>, StoreError> {
        Ok(lock(&self.state)
            .jobs
            .iter()
            .rev()
            .find(|j| matches!(&j.kind, JobKind::Rotate { group: g } if g == group))
            .cloned())
    }
    async fn failed_jobs(&self, limit: u32) -> Result<Vec<Job>, StoreError> {
        Ok(lock(&self.state)
            .jobs
            .iter()
            .rev()
            .filter(|j| j.status == JobStatus::Failed)
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .cloned()
            .collect())
    }

    async fn list_drift(&self, filter: &DriftFilter) -> Result<Vec<Finding>, StoreError> {
        let state = lock(&self.state);
        let wanted = |f: &&Finding| {
            filter.group.as_ref().is_none_or(|g| &f.group == g)
                && filter.key.as_ref().is_none_or(|k| k.concern(f))
        };
        let mut found: Vec<Finding> = state
            .open_drift()
            .into_iter()
            .filter(wanted)
            .cloned()
            .collect();
        if filter.include_cleared {
            let mut cleared: Vec<&Finding> = state
                .drift
                .values()
                .filter(|f| !f.is_open())
                .filter(wanted)
                .collect();
            cleared.sort_by_key(|f| std::cmp::Reverse(f.cleared_at));
            found.extend(cleared.into_iter().cloned());
        }
        found.truncate(match filter.limit {
            0 => 100,
            n => n.min(1000) as usize,
        });
        Ok(found)
    }
    async fn get_drift(&self, id: uuid::Uuid) -> Result<Option<Finding>, StoreError> {
        Ok(lock(&self.state).drift.get(&id).cloned())
    }
    async fn drift_checks(&self) -> Result<Vec<DriftCheck>, StoreError> {
        Ok(lock(&self.state).drift_checks.values().cloned().collect())
    }
    async fn groups_due_for_drift_check(
        &self,
        checked_before: Timestamp,
        quiet_since: Timestamp,
        limit: u32,
    ) -> Result<Vec<KeyGroup>, StoreError> {
        let state = lock(&self.state);
        let mut due: Vec<(Timestamp, KeyGroup)> = state
            .groups
            .values()
            .map(|g| {
                let last = state
                    .drift_checks
                    .get(&g.name)
                    .map_or(g.created_at, |c| c.checked_at);
                (last, g)
            })
            .filter(|(last, g)| {
                *last <= checked_before
                    && !state.jobs.iter().any(|j| {
                        j.kind.group() == &g.name
                            && j.kind.label() == JobKind::CHECK_DRIFT_LABEL
                            && j.created_at > quiet_since
                    })
            })
            .map(|(last, g)| (last, g.clone()))
            .collect();
        due.sort_by(|(a, g), (b, h)| a.cmp(b).then_with(|| g.name.cmp(&h.name)));
        due.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(due.into_iter().map(|(_, g)| g).collect())
    }
    async fn drift_counts(&self) -> Result<Vec<(DriftKind, u64)>, StoreError> {
        let mut counts: BTreeMap<DriftKind, u64> = BTreeMap::new();
        for finding in lock(&self.state).open_drift() {
            *counts.entry(finding.kind).or_default() += 1;
        }
        Ok(counts.into_iter().collect())
    }
    async fn unknown_kms_keys(&self, ids: &[KmsKeyId]) -> Result<Vec<KmsKeyId>, StoreError> {
        let state = lock(&self.state);
        Ok(ids
            .iter()
            .filter(|id| {
                !state
                    .keys
                    .values()
                    .any(|k| k.kms_key_id.as_ref() == Some(*id))
            })
            .cloned()
            .collect())
    }

    async fn due_groups(&self, now: Timestamp, limit: u32) -> Result<Vec<KeyGroup>, StoreError> {
        let mut due: Vec<KeyGroup> = lock(&self.state)
            .groups
            .values()
            .filter(|g| g.next_rotation_at.is_some_and(|at| at <= now))
            .cloned()
            .collect();
        due.sort_by_key(|g| g.next_rotation_at);
        due.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(due)
    }
    async fn heartbeat(&self, _: &NodeRecord) -> Result<(), StoreError> {
        Self::not_kept("nodes")
    }
    async fn list_nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        Self::not_kept("nodes")
    }
    async fn acquire_lease(
        &self,
        _: &str,
        _: &NodeId,
        _: Timestamp,
        _: Timestamp,
    ) -> Result<Option<Lease>, StoreError> {
        Self::not_kept("leases")
    }
    async fn get_lease(&self, _: &str) -> Result<Option<Lease>, StoreError> {
        Self::not_kept("leases")
    }
    async fn release_lease(&self, _: &str, _: &NodeId) -> Result<(), StoreError> {
        Self::not_kept("leases")
    }

    async fn get_settings(&self) -> Result<Settings, StoreError> {
        Ok(lock(&self.state).settings.clone())
    }
    async fn put_settings(&self, s: &Settings, a: &AuditRecord) -> Result<(), StoreError> {
        let mut state = lock(&self.state);
        state.record(a)?;
        state.settings = s.clone();
        Ok(())
    }

    async fn replace_settings(
        &self,
        expected: &Settings,
        next: &Settings,
        a: &AuditRecord,
    ) -> Result<bool, StoreError> {
        let mut state = lock(&self.state);
        if &state.settings != expected {
            return Ok(false);
        }
        state.record(a)?;
        state.settings = next.clone();
        Ok(true)
    }

    async fn append_audit(&self, audit: &AuditRecord) -> Result<(), StoreError> {
        if let Some(refusal) = *lock(&self.audit_refusal) {
            return Err(refusal());
        }
        lock(&self.state).record(audit)
    }
    async fn insert_backup(
        &self,
        b: &crate::backup::BackupRecord,
        a: &AuditRecord,
    ) -> Result<(), StoreError> {
        use crate::backup::BackupStatus;
        let mut state = lock(&self.state);
        // As the database's indexes: one running at a time, ids and files unique.
        if state
            .backups
            .iter()
            .any(|x| x.id == b.id || x.file == b.file || x.status == BackupStatus::Running)
        {
            return Err(StoreError::Duplicate);
        }
        state.record(a)?;
        let mut record = b.clone();
        record.status = BackupStatus::Running;
        state.backups.push(record);
        Ok(())
    }
    async fn finish_backup(
        &self,
        b: &crate::backup::BackupRecord,
        a: &AuditRecord,
    ) -> Result<bool, StoreError> {
        use crate::backup::BackupStatus;
        let mut state = lock(&self.state);
        let Some(i) = state
            .backups
            .iter()
            .position(|x| x.id == b.id && x.status == BackupStatus::Running)
        else {
            return Ok(false);
        };
        state.record(a)?;
        let stored = &mut state.backups[i];
        stored.status = b.status;
        stored.finished_at = b.finished_at;
        stored.size = b.size;
        stored.sha256.clone_from(&b.sha256);
        stored.keys = b.keys;
        stored.error.clone_from(&b.error);
        Ok(true)
    }
    async fn get_backup(
        &self,
        id: uuid::Uuid,
    ) -> Result<Option<crate::backup::BackupRecord>, StoreError> {
        Ok(lock(&self.state)
            .backups
            .iter()
            .find(|b| b.id == id)
            .cloned())
    }
    async fn list_backups(
        &self,
        limit: u32,
    ) -> Result<Vec<crate::backup::BackupRecord>, StoreError> {
        let limit = match limit {
            0 => 100,
            n => n.min(1000),
        };
        let mut all = lock(&self.state).backups.clone();
        // Newest first, as the database orders them.
        all.sort_by_key(|b| std::cmp::Reverse((b.started_at, b.id)));
        all.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(all)
    }
    async fn delete_backup(&self, id: uuid::Uuid, a: &AuditRecord) -> Result<(), StoreError> {
        let mut state = lock(&self.state);
        let Some(i) = state.backups.iter().position(|b| b.id == id) else {
            return Err(StoreError::NotFound);
        };
        state.record(a)?;
        state.backups.remove(i);
        Ok(())
    }
    /// The fake keeps domain values, not the database's tables a snapshot
    /// is made of: a backup of it is refused, as every call it cannot
    /// answer honestly is (test backups against the real store).
    async fn export_snapshot(
        &self,
        _: &mut dyn crate::backup::SnapshotSink,
    ) -> Result<crate::backup::SnapshotSummary, StoreError> {
        Self::not_kept("tables, so it has no snapshot to export")
    }
    /// Records the archive; the fake's audit records are unsealed and have
    /// no seq, so there is no entry to mark archived.
    async fn insert_audit_archive(
        &self,
        archive: &crate::backup::AuditArchive,
        a: &AuditRecord,
    ) -> Result<(), StoreError> {
        let mut state = lock(&self.state);
        if state
            .audit_archives
            .iter()
            .any(|x| x.id == archive.id || x.file == archive.file)
        {
            return Err(StoreError::Duplicate);
        }
        state.record(a)?;
        state.audit_archives.push(archive.clone());
        Ok(())
    }
    async fn list_audit_archives(&self) -> Result<Vec<crate::backup::AuditArchive>, StoreError> {
        let mut all = lock(&self.state).audit_archives.clone();
        all.sort_by_key(|x| (x.first_seq, x.created_at));
        Ok(all)
    }
    async fn writable(&self, _: Timestamp) -> Result<(), StoreError> {
        match *lock(&self.audit_refusal) {
            Some(refusal) => Err(refusal()),
            None => Ok(()),
        }
    }
    async fn list_audit(&self, _: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
        Self::not_kept("sealed audit entries")
    }
    async fn audit_page(&self, _: i64, _: u32) -> Result<Vec<AuditEntry>, StoreError> {
        Self::not_kept("sealed audit entries")
    }
    async fn audit_stream_cursor(&self, _: &str) -> Result<Option<i64>, StoreError> {
        Self::not_kept("audit stream cursors")
    }
    async fn advance_audit_stream_cursor(
        &self,
        _: &str,
        _: Option<i64>,
        _: i64,
        _: &NodeId,
        _: Timestamp,
    ) -> Result<bool, StoreError> {
        Self::not_kept("audit stream cursors")
    }
}

// The keystore

/// A keystore in memory. A key's material is 32 bytes derived from its id
/// (distinct per key, and the same again for the same id); "wrapping" puts
/// the material after the wrapping public key, which is what the fake KMS
/// checks and takes apart. XKS keys' "AES-GCM" is a toy of the same shape
/// (an HMAC keystream and a truncated HMAC tag) that refuses a wrong tag with
/// [`KeystoreError::SealBroken`] as AES-GCM does.
#[derive(Default)]
pub struct FakeKeystore {
    material: Mutex<HashMap<uuid::Uuid, Vec<u8>>>,
    /// XKS keys' material, apart: it is never wrapped for a cloud (only
    /// into a backup).
    xks_material: Mutex<HashMap<uuid::Uuid, Zeroizing<Vec<u8>>>>,
    signing_key: std::sync::OnceLock<crate::audit::SoftwareSigningKey>,
}

impl FakeKeystore {
    pub fn new() -> Self {
        Self::default()
    }

    /// The material of keyhold key `id`, as the fake KMS receives it.
    pub fn material(&self, id: uuid::Uuid) -> Option<Vec<u8>> {
        lock(&self.material).get(&id).cloned()
    }

    /// Its checkpoint key, made at first use (each fake has its own).
    fn signing_key(&self) -> Result<&crate::audit::SoftwareSigningKey, KeystoreError> {
        if let Some(key) = self.signing_key.get() {
            return Ok(key);
        }
        let key = crate::audit::SoftwareSigningKey::generate()?;
        Ok(self.signing_key.get_or_init(|| key))
    }

    /// What the fake KMS receives for `material` wrapped under `public_key_der`.
    pub fn wrapped(public_key_der: &[u8], material: &[u8]) -> Vec<u8> {
        [public_key_der, material].concat()
    }

    /// Whether the fake holds material for XKS key `id`.
    pub fn has_xks_material(&self, id: uuid::Uuid) -> bool {
        lock(&self.xks_material).contains_key(&id)
    }

    /// An XKS key's material, when `handle` is the one the fake gave for it.
    fn xks_material_for(
        &self,
        key_id: uuid::Uuid,
        handle: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeystoreError> {
        let missing = || KeystoreError::KeyNotFound(key_id.to_string());
        if handle != key_id.as_bytes() {
            return Err(missing());
        }
        lock(&self.xks_material)
            .get(&key_id)
            .cloned()
            .ok_or_else(missing)
    }

    /// Not AES-GCM (the core has no AES), only its shape and its honesty:
    /// a keystream XORed in, and a 16-byte tag over the IV, the AAD and
    /// the ciphertext that refuses any change to them or another key.
    fn xks_keystream(
        material: &[u8],
        iv: &[u8; 12],
        len: usize,
    ) -> Result<Zeroizing<Vec<u8>>, KeystoreError> {
        let mut stream = Zeroizing::new(Vec::with_capacity(len + 32));
        let mut counter = 0u32;
        while stream.len() < len {
            let block = hmac_sha256(
                material,
                &[b"fake xks stream".as_slice(), iv, &counter.to_be_bytes()].concat(),
            )?;
            stream.extend_from_slice(&block);
            counter += 1;
        }
        Ok(stream)
    }

    fn xks_tag(
        material: &[u8],
        iv: &[u8; 12],
        aad: &[u8],
        ciphertext: &[u8],
    ) -> Result<[u8; 16], KeystoreError> {
        // The AAD's length first, so no bytes can move between AAD and ciphertext.
        let aad_len = u64::try_from(aad.len()).unwrap_or(u64::MAX).to_be_bytes();
        let input = [b"fake xks tag".as_slice(), iv, &aad_len, aad, ciphertext].concat();
        let mac = hmac_sha256(material, &input)?;
        let mut tag = [0u8; 16];
        tag.copy_from_slice(&mac[..16]);
        Ok(tag)
    }

    /// The key secrets sealed under `context` are sealed with.
    fn seal_key(context: &[u8]) -> Result<Zeroizing<[u8; 32]>, KeystoreError> {
        Ok(Zeroizing::new(hmac_sha256(
            b"fake keystore seal key",
            context,
        )?))
    }

    /// Encrypts a block and decrypts it again (the health check's test).
    fn xks_round_trip(&self, key_id: uuid::Uuid, handle: &[u8]) -> Result<(), KeystoreError> {
        let block = [0x5a_u8; 16];
        let sealed = self.xks_encrypt(key_id, handle, &block, b"health")?;
        let opened = self.xks_decrypt(key_id, handle, &sealed, b"health")?;
        if opened.as_slice() == block {
            Ok(())
        } else {
            Err(KeystoreError::Internal(
                "the health check's block did not decrypt to itself (fake keystore)".into(),
            ))
        }
    }

    /// As a keystore computes them: the first bytes of the zero block
    /// encrypted under the key (here, its MAC).
    fn xks_check_digits(material: &[u8]) -> Result<CheckDigits, KeystoreError> {
        let mac = hmac_sha256(material, &[0u8; 16])?;
        let mut block = [0u8; 16];
        block.copy_from_slice(&mac[..16]);
        Ok(CheckDigits::from_encrypted_zero_block(&block))
    }
}

impl AuditMac for FakeKeystore {
    fn audit_mac(&self, data: &[u8]) -> Result<[u8; 32], KeystoreError> {
        hmac_sha256(b"fake keystore audit key", data)
    }
}

impl crate::audit::AuditSigner for FakeKeystore {
    fn audit_public_key(&self) -> Result<crate::audit::AuditPublicKey, KeystoreError> {
        self.signing_key()?.audit_public_key()
    }
    fn audit_sign(&self, message: &[u8]) -> Result<Vec<u8>, KeystoreError> {
        self.signing_key()?.audit_sign(message)
    }
}

impl Keystore for FakeKeystore {
    fn describe(&self) -> crate::ports::KeystoreDescription {
        crate::ports::KeystoreDescription {
            id: "fake".into(),
            model: "keyhold fake keystore (tests)".into(),
        }
    }

    fn xks_generate_key(&self, key_id: uuid::Uuid) -> Result<GeneratedKey, KeystoreError> {
        let material =
            Zeroizing::new(hmac_sha256(b"fake keystore xks material", key_id.as_bytes())?.to_vec());
        let check_digits = Self::xks_check_digits(&material)?;
        lock(&self.xks_material).insert(key_id, material);
        Ok(GeneratedKey {
            handle: key_id.as_bytes().to_vec(),
            check_digits,
        })
    }

    fn xks_encrypt(
        &self,
        key_id: uuid::Uuid,
        handle: &[u8],
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<crate::ports::GcmCiphertext, KeystoreError> {
        let material = self.xks_material_for(key_id, handle)?;
        let mut iv = [0u8; 12];
        getrandom::getrandom(&mut iv)
            .map_err(|e| KeystoreError::Unavailable(format!("no OS randomness: {e}")))?;
        let stream = Self::xks_keystream(&material, &iv, plaintext.len())?;
        let ciphertext: Vec<u8> = plaintext
            .iter()
            .zip(stream.iter())
            .map(|(p, k)| p ^ k)
            .collect();
        let tag = Self::xks_tag(&material, &iv, aad, &ciphertext)?;
        Ok(crate::ports::GcmCiphertext {
            iv,
            ciphertext,
            tag,
        })
    }

    fn xks_decrypt(
        &self,
        key_id: uuid::Uuid,
        handle: &[u8],
        sealed: &crate::ports::GcmCiphertext,
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeystoreError> {
        let material = self.xks_material_for(key_id, handle)?;
        let tag = Self::xks_tag(&material, &sealed.iv, aad, &sealed.ciphertext)?;
        if tag != sealed.tag {
            return Err(KeystoreError::SealBroken);
        }
        let stream = Self::xks_keystream(&material, &sealed.iv, sealed.ciphertext.len())?;
        Ok(Zeroizing::new(
            sealed
                .ciphertext
                .iter()
                .zip(stream.iter())
                .map(|(c, k)| c ^ k)
                .collect(),
        ))
    }

    fn xks_health_check(&self) -> Result<(), KeystoreError> {
        let key_id = uuid::Uuid::new_v4();
        let generated = self.xks_generate_key(key_id)?;
        let outcome = self.xks_round_trip(key_id, &generated.handle);
        // Destroyed whatever the outcome: a throwaway key must not stay.
        let destroyed = self.delete_key(key_id, &generated.handle);
        outcome.and(destroyed)
    }

    fn kind(&self) -> KeystoreKind {
        KeystoreKind::Software
    }
    fn check(&self) -> Result<(), KeystoreError> {
        Ok(())
    }
    fn generate_key(&self, key_id: uuid::Uuid) -> Result<GeneratedKey, KeystoreError> {
        let material = [key_id.as_bytes().as_slice(), key_id.as_bytes().as_slice()].concat();
        let check_digits = CheckDigits::parse(&hex::encode_upper(&material[..2]))
            .map_err(|e| KeystoreError::Internal(e.message))?;
        lock(&self.material).insert(key_id, material);
        Ok(GeneratedKey {
            handle: key_id.as_bytes().to_vec(),
            check_digits,
        })
    }
    fn wrap_key(
        &self,
        key_id: uuid::Uuid,
        _: &[u8],
        wrapping_public_key_der: &[u8],
        _: WrappingAlgorithm,
    ) -> Result<Vec<u8>, KeystoreError> {
        let material = self
            .material(key_id)
            .ok_or_else(|| KeystoreError::KeyNotFound(key_id.to_string()))?;
        Ok(Self::wrapped(wrapping_public_key_der, &material))
    }
    fn delete_key(&self, key_id: uuid::Uuid, _: &[u8]) -> Result<(), KeystoreError> {
        lock(&self.material).remove(&key_id);
        lock(&self.xks_material).remove(&key_id);
        Ok(())
    }
    fn wrapping_algorithms(&self) -> Result<Vec<WrappingAlgorithm>, KeystoreError> {
        Ok(vec![WrappingAlgorithm::RsaAesKeyWrapSha256])
    }
    fn missing_material(
        &self,
        keys: &[(uuid::Uuid, &[u8])],
    ) -> Result<Vec<uuid::Uuid>, KeystoreError> {
        let held = lock(&self.material);
        let held_xks = lock(&self.xks_material);
        Ok(keys
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| !held.contains_key(id) && !held_xks.contains_key(id))
            .collect())
    }
    /// `tag (16) || secret XOR keystream` under a key made from the
    /// context: the secret is not in the sealed bytes, and they open under
    /// their own context only (as a real keystore's do).
    fn seal_secret(&self, context: &[u8], secret: &[u8]) -> Result<Vec<u8>, KeystoreError> {
        let key = Self::seal_key(context)?;
        let stream = Self::xks_keystream(&key[..], &[0; 12], secret.len())?;
        let body: Vec<u8> = secret
            .iter()
            .zip(stream.iter())
            .map(|(s, k)| s ^ k)
            .collect();
        let tag = Self::xks_tag(&key[..], &[0; 12], b"", &body)?;
        Ok([tag.as_slice(), &body].concat())
    }
    fn open_secret(
        &self,
        context: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeystoreError> {
        if sealed.len() < 16 {
            return Err(KeystoreError::SealBroken);
        }
        let (tag, body) = sealed.split_at(16);
        let key = Self::seal_key(context)?;
        if Self::xks_tag(&key[..], &[0; 12], b"", body)?.as_slice() != tag {
            return Err(KeystoreError::SealBroken);
        }
        let stream = Self::xks_keystream(&key[..], &[0; 12], body.len())?;
        Ok(Zeroizing::new(
            body.iter().zip(stream.iter()).map(|(b, k)| b ^ k).collect(),
        ))
    }
    fn backup_export<'a>(
        &'a self,
        wrap_key: &crate::backup::BackupWrapKey,
    ) -> Result<Box<dyn crate::backup::BackupExport + 'a>, KeystoreError> {
        Ok(Box::new(FakeBackup {
            keystore: self,
            wrap_key: Zeroizing::new(*wrap_key.expose()),
        }))
    }
    fn backup_import<'a>(
        &'a self,
        wrap_key: &crate::backup::BackupWrapKey,
    ) -> Result<Box<dyn crate::backup::BackupImport + 'a>, KeystoreError> {
        Ok(Box::new(FakeBackup {
            keystore: self,
            wrap_key: Zeroizing::new(*wrap_key.expose()),
        }))
    }
}

/// The fake keystore's side of a backup. Its "wrap" is not RFC 5649 (the
/// core has no AES), only its shape: `tag (16) || data XOR keystream`, both
/// HMAC-SHA256 under the wrap key, so another wrap key is refused and the
/// bytes are not the material. Only a fake keystore opens what a fake made.
struct FakeBackup<'a> {
    keystore: &'a FakeKeystore,
    wrap_key: Zeroizing<[u8; 32]>,
}

impl FakeBackup<'_> {
    const TAG_LEN: usize = 16;

    fn keystream(&self, len: usize) -> Result<Zeroizing<Vec<u8>>, KeystoreError> {
        let mut stream = Zeroizing::new(Vec::with_capacity(len + 32));
        let mut counter = 0u32;
        while stream.len() < len {
            let block = hmac_sha256(
                &self.wrap_key[..],
                &[
                    b"fake keystore backup stream".as_slice(),
                    &counter.to_be_bytes(),
                ]
                .concat(),
            )?;
            stream.extend_from_slice(&block);
            counter += 1;
        }
        Ok(stream)
    }

    fn tag(&self, data: &[u8]) -> Result<[u8; 32], KeystoreError> {
        let input = Zeroizing::new([b"fake keystore backup tag".as_slice(), data].concat());
        hmac_sha256(&self.wrap_key[..], &input)
    }

    fn wrap(&self, data: &[u8]) -> Result<Vec<u8>, KeystoreError> {
        let stream = self.keystream(data.len())?;
        let mut out = self.tag(data)?[..Self::TAG_LEN].to_vec();
        out.extend(data.iter().zip(stream.iter()).map(|(d, k)| d ^ k));
        Ok(out)
    }

    fn unwrap(&self, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeystoreError> {
        let refused = || {
            KeystoreError::Unsupported(
                "the wrapped bytes do not unwrap under this wrap key (fake keystore)".into(),
            )
        };
        if wrapped.len() < Self::TAG_LEN {
            return Err(refused());
        }
        let (tag, body) = wrapped.split_at(Self::TAG_LEN);
        let stream = self.keystream(body.len())?;
        let data = Zeroizing::new(
            body.iter()
                .zip(stream.iter())
                .map(|(b, k)| b ^ k)
                .collect::<Vec<u8>>(),
        );
        if self.tag(&data)?[..Self::TAG_LEN] != *tag {
            return Err(refused());
        }
        Ok(data)
    }
}

impl crate::backup::BackupExport for FakeBackup<'_> {
    /// Keys and XKS keys alike, as a keystore exports both.
    fn export_key(&self, key_id: uuid::Uuid, _: &[u8]) -> Result<Vec<u8>, KeystoreError> {
        let material = match self.keystore.material(key_id) {
            Some(material) => Zeroizing::new(material),
            None => lock(&self.keystore.xks_material)
                .get(&key_id)
                .cloned()
                .ok_or_else(|| KeystoreError::KeyNotFound(key_id.to_string()))?,
        };
        self.wrap(&material)
    }
    fn export_audit_keys(&self) -> Result<crate::backup::WrappedAuditKeys, KeystoreError> {
        use crate::audit::AuditSigner as _;
        let signing = self.keystore.signing_key()?;
        Ok(crate::backup::WrappedAuditKeys {
            mac: self.wrap(b"fake keystore audit key")?,
            signing: self.wrap(signing.pkcs8())?,
            signing_public: signing.audit_public_key()?.to_spki_der(),
        })
    }
}

impl crate::backup::BackupImport for FakeBackup<'_> {
    /// Repeatable; material other than what the fake holds for the key, or
    /// not 32 bytes (AES-256), is refused.
    fn import_xks_key(
        &self,
        key_id: uuid::Uuid,
        wrapped: &[u8],
    ) -> Result<GeneratedKey, KeystoreError> {
        let material = self.unwrap(wrapped)?;
        if material.len() != 32 {
            return Err(KeystoreError::Unsupported(format!(
                "the material of XKS key {key_id} is {} bytes, not 32 (fake keystore)",
                material.len()
            )));
        }
        let mut held = lock(&self.keystore.xks_material);
        match held.get(&key_id) {
            Some(existing) if existing.as_slice() != material.as_slice() => {
                return Err(KeystoreError::Unsupported(format!(
                    "the fake keystore holds other material for XKS key {key_id}"
                )));
            }
            Some(_) => {}
            None => {
                held.insert(key_id, material.clone());
            }
        }
        Ok(GeneratedKey {
            handle: key_id.as_bytes().to_vec(),
            check_digits: FakeKeystore::xks_check_digits(&material)?,
        })
    }

    /// Repeatable; material other than what the fake holds for the key is refused.
    fn import_key(
        &self,
        key_id: uuid::Uuid,
        wrapped: &[u8],
    ) -> Result<GeneratedKey, KeystoreError> {
        let material = self.unwrap(wrapped)?;
        if material.len() < 2 {
            return Err(KeystoreError::Unsupported(format!(
                "the material of key {key_id} is {} bytes (fake keystore)",
                material.len()
            )));
        }
        let mut held = lock(&self.keystore.material);
        match held.get(&key_id) {
            Some(existing) if existing.as_slice() != material.as_slice() => {
                return Err(KeystoreError::Unsupported(format!(
                    "the fake keystore holds other material for key {key_id}"
                )));
            }
            Some(_) => {}
            None => {
                held.insert(key_id, material.to_vec());
            }
        }
        let check_digits = CheckDigits::parse(&hex::encode_upper(&material[..2]))
            .map_err(|e| KeystoreError::Internal(e.message))?;
        Ok(GeneratedKey {
            handle: key_id.as_bytes().to_vec(),
            check_digits,
        })
    }
}

#[cfg(test)]
mod fake_backup_tests {
    use super::*;
    use crate::backup::BackupWrapKey;

    #[test]
    fn the_fake_keystore_backs_up_and_restores_material() {
        let wrap_key = || BackupWrapKey::new(Zeroizing::new([7u8; 32]));
        let source = FakeKeystore::new();
        let key_id = uuid::Uuid::new_v4();
        let generated = source.generate_key(key_id).unwrap();
        let exporter = source.backup_export(&wrap_key()).unwrap();
        let wrapped = exporter.export_key(key_id, &generated.handle).unwrap();
        assert!(exporter.export_audit_keys().is_ok());
        assert_ne!(&wrapped[16..], source.material(key_id).unwrap().as_slice());

        let target = FakeKeystore::new();
        let importer = target.backup_import(&wrap_key()).unwrap();
        let restored = importer.import_key(key_id, &wrapped).unwrap();
        assert_eq!(restored.check_digits, generated.check_digits);
        assert_eq!(target.material(key_id), source.material(key_id));
        assert!(importer.import_key(key_id, &wrapped).is_ok(), "repeatable");
        let other = BackupWrapKey::new(Zeroizing::new([8u8; 32]));
        assert!(
            target
                .backup_import(&other)
                .unwrap()
                .import_key(key_id, &wrapped)
                .is_err()
        );
    }
}

#[cfg(test)]
mod fake_xks_tests {
    use super::*;
    use crate::backup::BackupWrapKey;
    use crate::ports::GcmCiphertext;
    use crate::xks::{PathPrefix, XksStoreName, generate_credential};

    #[test]
    fn the_fake_xks_cipher_refuses_every_change_as_aes_gcm_does() {
        let keystore = FakeKeystore::new();
        let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        let key_a = keystore.xks_generate_key(a).unwrap();
        let key_b = keystore.xks_generate_key(b).unwrap();
        assert_ne!(key_a.check_digits, key_b.check_digits);
        let plaintext = b"thirty-two bytes of plaintext!!!".repeat(3);
        let sealed = keystore
            .xks_encrypt(a, &key_a.handle, &plaintext, b"aad")
            .unwrap();
        assert_eq!(sealed.ciphertext.len(), plaintext.len());
        assert_ne!(sealed.ciphertext, plaintext);
        let again = keystore
            .xks_encrypt(a, &key_a.handle, &plaintext, b"aad")
            .unwrap();
        assert_ne!(again.iv, sealed.iv, "a fresh IV each time");
        assert_eq!(
            keystore
                .xks_decrypt(a, &key_a.handle, &sealed, b"aad")
                .unwrap()
                .as_slice(),
            plaintext.as_slice()
        );

        let broken = |s: &GcmCiphertext, aad: &[u8], id, handle: &[u8]| {
            matches!(
                keystore.xks_decrypt(id, handle, s, aad),
                Err(KeystoreError::SealBroken)
            )
        };
        assert!(broken(&sealed, b"aae", a, &key_a.handle), "other AAD");
        assert!(broken(&sealed, b"", a, &key_a.handle), "no AAD");
        assert!(broken(&sealed, b"aad", b, &key_b.handle), "other key");
        let mut altered = sealed.clone();
        altered.ciphertext[5] ^= 1;
        assert!(broken(&altered, b"aad", a, &key_a.handle), "ciphertext");
        let mut altered = sealed.clone();
        altered.tag[0] ^= 1;
        assert!(broken(&altered, b"aad", a, &key_a.handle), "tag");
        let mut altered = sealed.clone();
        altered.iv[0] ^= 1;
        assert!(broken(&altered, b"aad", a, &key_a.handle), "iv");

        assert!(matches!(
            keystore.xks_decrypt(a, &key_b.handle, &sealed, b"aad"),
            Err(KeystoreError::KeyNotFound(_))
        ));
        keystore.delete_key(a, &key_a.handle).unwrap();
        assert!(!keystore.has_xks_material(a));
        assert!(matches!(
            keystore.xks_decrypt(a, &key_a.handle, &sealed, b"aad"),
            Err(KeystoreError::KeyNotFound(_))
        ));
        assert_eq!(
            keystore
                .missing_material(&[(a, &key_a.handle[..]), (b, &key_b.handle[..])])
                .unwrap(),
            vec![a]
        );
    }

    #[test]
    fn the_health_check_leaves_no_key_behind() {
        let keystore = FakeKeystore::new();
        keystore.xks_health_check().unwrap();
        assert!(lock(&keystore.xks_material).is_empty());
    }

    #[test]
    fn sealed_secrets_hide_the_secret_and_open_under_their_context_only() {
        let keystore = FakeKeystore::new();
        let sealed = keystore.seal_secret(b"one", b"the secret").unwrap();
        assert!(!sealed.windows(10).any(|w| w == b"the secret"));
        assert_eq!(
            keystore.open_secret(b"one", &sealed).unwrap().as_slice(),
            b"the secret"
        );
        assert!(matches!(
            keystore.open_secret(b"two", &sealed),
            Err(KeystoreError::SealBroken)
        ));
        assert!(matches!(
            keystore.open_secret(b"one", &sealed[..8]),
            Err(KeystoreError::SealBroken)
        ));
    }

    #[test]
    fn xks_keys_go_into_a_backup_and_come_back_usable() {
        let wrap_key = || BackupWrapKey::new(Zeroizing::new([7u8; 32]));
        let source = FakeKeystore::new();
        let id = uuid::Uuid::new_v4();
        let generated = source.xks_generate_key(id).unwrap();
        let sealed = source
            .xks_encrypt(id, &generated.handle, b"data", b"")
            .unwrap();
        let wrapped = source
            .backup_export(&wrap_key())
            .unwrap()
            .export_key(id, &generated.handle)
            .unwrap();

        let target = FakeKeystore::new();
        let importer = target.backup_import(&wrap_key()).unwrap();
        let restored = importer.import_xks_key(id, &wrapped).unwrap();
        assert_eq!(restored.check_digits, generated.check_digits);
        assert_eq!(
            target
                .xks_decrypt(id, &restored.handle, &sealed, b"")
                .unwrap()
                .as_slice(),
            b"data"
        );
        assert!(importer.import_xks_key(id, &wrapped).is_ok(), "repeatable");
        let other = uuid::Uuid::new_v4();
        let other_wrapped = source
            .backup_export(&wrap_key())
            .unwrap()
            .export_key(other, b"")
            .map(drop);
        assert!(matches!(other_wrapped, Err(KeystoreError::KeyNotFound(_))));
    }

    fn store(name: &str, prefix: &str) -> XksStore {
        XksStore {
            id: uuid::Uuid::new_v4(),
            name: XksStoreName::parse(name).unwrap(),
            path_prefix: PathPrefix::parse(prefix).unwrap(),
            quota_per_second: 10,
            mtls: None,
            created_at: chrono::DateTime::UNIX_EPOCH,
            updated_at: chrono::DateTime::UNIX_EPOCH,
        }
    }

    fn credential(store: &XksStore) -> XksCredential {
        XksCredential {
            id: uuid::Uuid::new_v4(),
            store_id: store.id,
            access_key_id: generate_credential().unwrap().0,
            sealed_secret: vec![1, 2, 3],
            created_at: chrono::DateTime::UNIX_EPOCH,
        }
    }

    fn key(store: &XksStore) -> XksKey {
        XksKey {
            id: uuid::Uuid::new_v4(),
            store_id: store.id,
            description: String::new(),
            usage: crate::xks::XksKeyUsage::EncryptDecrypt,
            enabled: false,
            rule: crate::xks::AuthorizationRule::default(),
            handle: vec![],
            check_digits: CheckDigits::from_encrypted_zero_block(&[0; 16]),
            created_at: chrono::DateTime::UNIX_EPOCH,
            updated_at: chrono::DateTime::UNIX_EPOCH,
        }
    }

    fn audit() -> AuditRecord {
        AuditRecord::new(chrono::DateTime::UNIX_EPOCH, "Off1,Off2", "x")
    }

    #[tokio::test]
    async fn the_fake_store_keeps_xks_rows_as_the_database_does() {
        let fake = FakeStore::new();
        let s = store("payments", "/xks/payments");
        let first = credential(&s);
        fake.insert_xks_store(&s, &first, &audit()).await.unwrap();
        assert_eq!(fake.xks_revision().await.unwrap(), 1);

        let duplicates = [
            (store("payments", "/other"), credential(&s)),
            (store("other", "/xks/payments"), credential(&s)),
            (store("other", "/other"), first.clone()),
        ];
        for (dup, cred) in duplicates {
            assert!(matches!(
                fake.insert_xks_store(&dup, &cred, &audit()).await,
                Err(StoreError::Duplicate)
            ));
        }
        assert_eq!(
            fake.xks_revision().await.unwrap(),
            1,
            "refusals write nothing"
        );

        assert!(
            fake.insert_xks_credential(&credential(&s), 2, &audit())
                .await
                .unwrap()
        );
        assert!(
            !fake
                .insert_xks_credential(&credential(&s), 2, &audit())
                .await
                .unwrap()
        );
        assert!(matches!(
            fake.insert_xks_credential(&credential(&store("gone", "/gone")), 2, &audit())
                .await,
            Err(StoreError::NotFound)
        ));
        assert!(
            fake.delete_xks_credential(s.id, &first.access_key_id, &audit())
                .await
                .unwrap()
        );
        assert!(
            !fake
                .delete_xks_credential(s.id, &first.access_key_id, &audit())
                .await
                .unwrap()
        );
        assert_eq!(fake.xks_revision().await.unwrap(), 3);

        let k = key(&s);
        fake.insert_xks_key(&k, &audit()).await.unwrap();
        assert!(matches!(
            fake.delete_xks_store(s.id, &audit()).await,
            Err(StoreError::InUse)
        ));
        let enabled = XksKey {
            enabled: true,
            ..k.clone()
        };
        assert!(fake.replace_xks_key(&k, &enabled, &audit()).await.unwrap());
        assert!(
            !fake.replace_xks_key(&k, &enabled, &audit()).await.unwrap(),
            "stale"
        );
        let quicker = XksStore {
            quota_per_second: 20,
            ..s.clone()
        };
        assert!(
            fake.replace_xks_store(&s, &quicker, &audit())
                .await
                .unwrap()
        );
        assert!(
            !fake
                .replace_xks_store(&s, &quicker, &audit())
                .await
                .unwrap()
        );
        assert!(fake.delete_xks_key(k.id, &audit()).await.unwrap());
        assert!(!fake.delete_xks_key(k.id, &audit()).await.unwrap());
        fake.delete_xks_store(s.id, &audit()).await.unwrap();
        assert!(fake.list_xks_credentials().await.unwrap().is_empty());
        assert_eq!(fake.xks_revision().await.unwrap(), 8);
        assert_eq!(fake.snapshot().audit.len(), 8, "one entry per write");
    }
}

// The cloud

/// One KMS key as the fake holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeKmsKey {
    pub state: KeyState,
    /// `Origin=EXTERNAL`.
    pub external: bool,
    /// The material it holds now.
    pub material: Option<Vec<u8>>,
    /// The material first imported: the only material it ever takes as
    /// existing material.
    pub first_material: Option<Vec<u8>>,
    /// Materials imported as new (in-place rotation), in order, and which
    /// of them waits for RotateKeyOnDemand.
    pub new_materials: Vec<Vec<u8>>,
    /// The description each new material was imported with, in the same order.
    pub descriptions: Vec<String>,
    pub pending_rotation: Option<Vec<u8>>,
    /// The material it encrypts with.
    pub current: Option<Vec<u8>>,
    pub on_demand_rotations: u32,
    pub valid_to: Option<Timestamp>,
    pub tags: Vec<(String, String)>,
    pub policy: Option<KeyPolicy>,
    /// Set while it is pending deletion.
    pub deletion_date: Option<Timestamp>,
}

impl FakeKmsKey {
    /// AWS's id of a material: computed from the key and the material.
    pub fn material_id(key_id: &KmsKeyId, material: &[u8]) -> KeyMaterialId {
        use sha2::Digest;
        let digest = sha2::Sha256::new()
            .chain_update(key_id.as_str())
            .chain_update(material)
            .finalize();
        KeyMaterialId::from_digest(digest.into())
    }

    fn holds(&self, material: &[u8]) -> bool {
        self.first_material.as_deref() == Some(material)
            || self.new_materials.iter().any(|m| m == material)
    }
}

impl FakeKmsKey {
    fn awaiting_import() -> Self {
        Self {
            state: KeyState::PendingImport,
            external: true,
            material: None,
            first_material: None,
            new_materials: Vec::new(),
            descriptions: Vec::new(),
            pending_rotation: None,
            current: None,
            on_demand_rotations: 0,
            valid_to: None,
            tags: Vec::new(),
            policy: None,
            deletion_date: None,
        }
    }
}

/// What the fake KMS holds.
#[derive(Clone, Debug, Default)]
pub struct KmsState {
    pub keys: BTreeMap<KmsKeyId, FakeKmsKey>,
    /// Alias name → KMS key.
    pub aliases: BTreeMap<String, KmsKeyId>,
    /// Import token → (KMS key, wrapping public key it goes with).
    tokens: HashMap<Vec<u8>, (KmsKeyId, Vec<u8>)>,
    /// Every call, by operation name, in order.
    pub calls: Vec<&'static str>,
    /// Failures to answer, each to the next call of its operation.
    failures: VecDeque<(&'static str, CloudError)>,
    /// What pacing costs the next call of an operation, each once.
    paced: VecDeque<(&'static str, OperationPacing)>,
    /// What pacing cost the calls since the last `take_pacing`.
    pacing: Vec<OperationPacing>,
}

impl KmsState {
    pub fn calls_of(&self, operation: &str) -> usize {
        self.calls.iter().filter(|c| **c == operation).count()
    }
    pub fn alias(&self, alias: &str) -> Option<&KmsKeyId> {
        self.aliases.get(alias)
    }
}

/// One AWS account and region of KMS in memory; the operation names are the
/// port's method names (`create_key`, `import_key_material`, …).
#[derive(Default)]
pub struct FakeKms {
    state: Mutex<KmsState>,
}

impl FakeKms {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn snapshot(&self) -> KmsState {
        lock(&self.state).clone()
    }

    /// Changes what the fake holds behind keyhold's back (a console user,
    /// a pipeline): drift for the checks to find.
    pub fn alter(&self, change: impl FnOnce(&mut KmsState)) {
        change(&mut lock(&self.state));
    }

    /// The next call of `operation` fails with `error` (queued in order).
    pub fn fail_next(&self, operation: &'static str, error: CloudError) {
        lock(&self.state).failures.push_back((operation, error));
    }

    /// A KMS key a user created for imported material (a placeholder);
    /// `first_material` when it once held material since deleted.
    pub fn add_external_key(&self, first_material: Option<Vec<u8>>) -> KmsKeyId {
        let id = new_kms_key_id();
        let key = FakeKmsKey {
            first_material,
            ..FakeKmsKey::awaiting_import()
        };
        lock(&self.state).keys.insert(id.clone(), key);
        id
    }

    /// The next call of `operation` waits for pacing as `pacing` says (the
    /// fake does not wait), which the next `take_pacing` reports.
    pub fn pace_next(&self, operation: &'static str, pacing: OperationPacing) {
        lock(&self.state).paced.push_back((operation, pacing));
    }

    /// Records the call, with the pacing and the failure queued for it, if any.
    fn call(&self, operation: &'static str) -> Result<MutexGuard<'_, KmsState>, CloudError> {
        let mut state = lock(&self.state);
        state.calls.push(operation);
        if let Some(pacing) = next_for(&mut state.paced, operation) {
            state.pacing.push(pacing);
        }
        match next_for(&mut state.failures, operation) {
            Some(error) => Err(error),
            None => Ok(state),
        }
    }
}

/// Takes what `queue` holds for the next call of `operation`, if anything.
fn next_for<T>(queue: &mut VecDeque<(&'static str, T)>, operation: &str) -> Option<T> {
    let at = queue.iter().position(|(op, _)| *op == operation)?;
    queue.remove(at).map(|(_, queued)| queued)
}

fn new_kms_key_id() -> KmsKeyId {
    KmsKeyId::from_uuid(uuid::Uuid::new_v4())
}

fn not_found(operation: &'static str, key_id: &KmsKeyId) -> CloudError {
    CloudError::NotFound {
        operation,
        message: format!("Key '{key_id}' does not exist"),
    }
}

fn invalid_state(operation: &'static str, key_id: &KmsKeyId, state: KeyState) -> CloudError {
    CloudError::InvalidState {
        operation,
        message: format!("{key_id} is {}", state.as_str()),
    }
}

#[async_trait]
impl CloudKms for FakeKms {
    fn service(&self) -> CloudService {
        CloudService::Aws
    }

    fn take_pacing(&self) -> Option<PacingReport> {
        let operations = std::mem::take(&mut lock(&self.state).pacing);
        (!operations.is_empty()).then_some(PacingReport {
            quotas_of: "AWS KMS",
            operations,
        })
    }

    async fn create_key(
        &self,
        _: &str,
        policy: Option<&KeyPolicy>,
        tags: &[(String, String)],
    ) -> Result<KmsKeyId, CloudError> {
        let mut state = self.call("create_key")?;
        let id = new_kms_key_id();
        let key = FakeKmsKey {
            tags: tags.to_vec(),
            policy: policy.cloned(),
            ..FakeKmsKey::awaiting_import()
        };
        state.keys.insert(id.clone(), key);
        Ok(id)
    }

    async fn describe_key(&self, key_id: &KmsKeyId) -> Result<CloudKeyInfo, CloudError> {
        const OP: &str = "describe_key";
        let state = self.call(OP)?;
        let key = state
            .keys
            .get(key_id)
            .ok_or_else(|| not_found(OP, key_id))?;
        Ok(CloudKeyInfo {
            key_id: key_id.clone(),
            state: key.state,
            external: key.external,
            valid_to: key.valid_to,
            current_material: key
                .current
                .as_ref()
                .map(|m| FakeKmsKey::material_id(key_id, m)),
            deletion_date: key.deletion_date,
        })
    }

    async fn get_parameters_for_import(
        &self,
        key_id: &KmsKeyId,
        algorithm: WrappingAlgorithm,
    ) -> Result<ImportParameters, CloudError> {
        const OP: &str = "get_parameters_for_import";
        let mut state = self.call(OP)?;
        let key = state
            .keys
            .get(key_id)
            .ok_or_else(|| not_found(OP, key_id))?;
        if !key.external {
            return Err(CloudError::Rejected {
                operation: OP,
                message: "the key's origin is not EXTERNAL".into(),
            });
        }
        let token = uuid::Uuid::new_v4().as_bytes().to_vec();
        let public_key_der = [b"public key ".as_slice(), token.as_slice()].concat();
        state
            .tokens
            .insert(token.clone(), (key_id.clone(), public_key_der.clone()));
        Ok(ImportParameters {
            public_key_der,
            import_token: token,
            valid_until: None,
            algorithm,
        })
    }

    async fn import_key_material(
        &self,
        key_id: &KmsKeyId,
        import_token: &[u8],
        encrypted_material: &[u8],
        valid_to: Option<Timestamp>,
        import: MaterialImport<'_>,
    ) -> Result<Option<KeyMaterialId>, CloudError> {
        const OP: &str = "import_key_material";
        let mut state = self.call(OP)?;
        let Some((for_key, public_key)) = state.tokens.get(import_token).cloned() else {
            return Err(CloudError::Rejected {
                operation: OP,
                message: "the import token is not valid".into(),
            });
        };
        if &for_key != key_id {
            return Err(CloudError::Rejected {
                operation: OP,
                message: "the import token belongs to another key".into(),
            });
        }
        let Some(material) = encrypted_material.strip_prefix(public_key.as_slice()) else {
            return Err(CloudError::Rejected {
                operation: OP,
                message: "the material is not wrapped under this token's public key".into(),
            });
        };
        let key = state
            .keys
            .get_mut(key_id)
            .ok_or_else(|| not_found(OP, key_id))?;
        if key.state == KeyState::PendingDeletion {
            return Err(invalid_state(OP, key_id, key.state));
        }
        let id = FakeKmsKey::material_id(key_id, material);
        let incorrect = |message: &str| CloudError::IncorrectKeyMaterial {
            operation: OP,
            message: message.into(),
        };
        match import {
            MaterialImport::New { description } => {
                if key.first_material.is_none() {
                    return Err(invalid_state(OP, key_id, key.state));
                }
                if key.pending_rotation.is_some() {
                    return Err(CloudError::InvalidState {
                        operation: OP,
                        message: "another key material is pending rotation".into(),
                    });
                }
                if key.holds(material) {
                    return Err(incorrect(
                        "the key material is already associated with the key",
                    ));
                }
                key.new_materials.push(material.to_vec());
                key.descriptions.push(description.to_owned());
                key.pending_rotation = Some(material.to_vec());
            }
            MaterialImport::Existing(named) => {
                if key.first_material.is_some() && !key.holds(material) {
                    return Err(incorrect("the key material is not associated with the key"));
                }
                if named.is_some_and(|named| *named != id) {
                    return Err(incorrect("the key material id does not match the material"));
                }
                if key.first_material.is_none() {
                    key.first_material = Some(material.to_vec());
                    key.current = Some(material.to_vec());
                }
                key.material = Some(material.to_vec());
            }
        }
        key.valid_to = valid_to;
        // As AWS does: an import enables the key, a disabled one included.
        if matches!(key.state, KeyState::PendingImport | KeyState::Disabled) {
            key.state = KeyState::Enabled;
        }
        Ok(Some(id))
    }

    async fn delete_imported_key_material(
        &self,
        key_id: &KmsKeyId,
        _: Option<&KeyMaterialId>,
    ) -> Result<(), CloudError> {
        const OP: &str = "delete_imported_key_material";
        let mut state = self.call(OP)?;
        let key = state
            .keys
            .get_mut(key_id)
            .ok_or_else(|| not_found(OP, key_id))?;
        if key.state == KeyState::PendingDeletion {
            return Err(invalid_state(OP, key_id, key.state));
        }
        key.material = None;
        key.state = KeyState::PendingImport;
        Ok(())
    }

    async fn list_key_materials(
        &self,
        key_id: &KmsKeyId,
    ) -> Result<Vec<CloudMaterial>, CloudError> {
        const OP: &str = "list_key_materials";
        let state = self.call(OP)?;
        let key = state
            .keys
            .get(key_id)
            .ok_or_else(|| not_found(OP, key_id))?;
        let described = key
            .new_materials
            .iter()
            .zip(&key.descriptions)
            .map(|(m, d)| (m, Some(d.clone())));
        Ok(key
            .first_material
            .iter()
            .map(|m| (m, None))
            .chain(described)
            .map(|(material, description)| CloudMaterial {
                id: FakeKmsKey::material_id(key_id, material),
                description,
                state: if key.pending_rotation.as_ref() == Some(material) {
                    MaterialState::PendingRotation
                } else if key.current.as_ref() == Some(material) {
                    MaterialState::Current
                } else {
                    MaterialState::NonCurrent
                },
                imported: key.state != KeyState::PendingImport,
            })
            .collect())
    }

    async fn rotate_key_on_demand(&self, key_id: &KmsKeyId) -> Result<(), CloudError> {
        const OP: &str = "rotate_key_on_demand";
        let mut state = self.call(OP)?;
        let key = state
            .keys
            .get_mut(key_id)
            .ok_or_else(|| not_found(OP, key_id))?;
        if key.on_demand_rotations >= crate::cloud::aws::ON_DEMAND_ROTATION_LIMIT {
            return Err(CloudError::LimitExceeded {
                operation: OP,
                message: "The on-demand rotations limit has been reached".into(),
            });
        }
        let Some(pending) = key.pending_rotation.take() else {
            return Err(CloudError::InvalidState {
                operation: OP,
                message: "no key material is pending rotation".into(),
            });
        };
        key.on_demand_rotations += 1;
        key.current = Some(pending);
        Ok(())
    }

    async fn point_alias(&self, alias: &Alias, key_id: &KmsKeyId) -> Result<(), CloudError> {
        const OP: &str = "point_alias";
        let mut state = self.call(OP)?;
        if !state.keys.contains_key(key_id) {
            return Err(not_found(OP, key_id));
        }
        state.aliases.insert(alias.to_string(), key_id.clone());
        Ok(())
    }

    async fn disable_key(&self, key_id: &KmsKeyId) -> Result<(), CloudError> {
        const OP: &str = "disable_key";
        let mut state = self.call(OP)?;
        let key = state
            .keys
            .get_mut(key_id)
            .ok_or_else(|| not_found(OP, key_id))?;
        match key.state {
            KeyState::Enabled | KeyState::Disabled => {
                key.state = KeyState::Disabled;
                Ok(())
            }
            other => Err(invalid_state(OP, key_id, other)),
        }
    }

    async fn put_key_policy(
        &self,
        key_id: &KmsKeyId,
        policy: &KeyPolicy,
    ) -> Result<(), CloudError> {
        const OP: &str = "put_key_policy";
        let mut state = self.call(OP)?;
        let key = state
            .keys
            .get_mut(key_id)
            .ok_or_else(|| not_found(OP, key_id))?;
        key.policy = Some(policy.clone());
        Ok(())
    }

    async fn find_keys_tagged(&self, key: &str, value: &str) -> Result<Vec<KmsKeyId>, CloudError> {
        let state = self.call("find_keys_tagged")?;
        Ok(state
            .keys
            .iter()
            .filter(|(_, k)| k.tags.iter().any(|(t, v)| t == key && v == value))
            .map(|(id, _)| id.clone())
            .collect())
    }

    async fn get_key_policy(&self, key_id: &KmsKeyId) -> Result<KeyPolicy, CloudError> {
        const OP: &str = "get_key_policy";
        let state = self.call(OP)?;
        let key = state
            .keys
            .get(key_id)
            .ok_or_else(|| not_found(OP, key_id))?;
        match &key.policy {
            Some(policy) => Ok(policy.clone()),
            // AWS's default key policy: the account may use the key.
            None => KeyPolicy::parse(
                r#"{"Version":"2012-10-17","Id":"key-default-1","Statement":[{"Sid":"Enable IAM User Permissions","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::000000000000:root"},"Action":"kms:*","Resource":"*"}]}"#,
            )
            .map_err(|e| CloudError::Rejected {
                operation: OP,
                message: e.message,
            }),
        }
    }

    async fn list_aliases(&self) -> Result<Vec<(Alias, KmsKeyId)>, CloudError> {
        let state = self.call("list_aliases")?;
        Ok(state
            .aliases
            .iter()
            .filter_map(|(alias, key)| Some((Alias::parse(alias).ok()?, key.clone())))
            .collect())
    }

    async fn list_key_ids(&self) -> Result<Vec<KmsKeyId>, CloudError> {
        let state = self.call("list_key_ids")?;
        Ok(state.keys.keys().cloned().collect())
    }

    async fn list_tags(&self, key_id: &KmsKeyId) -> Result<Vec<(String, String)>, CloudError> {
        const OP: &str = "list_tags";
        let state = self.call(OP)?;
        let key = state
            .keys
            .get(key_id)
            .ok_or_else(|| not_found(OP, key_id))?;
        Ok(key.tags.clone())
    }

    async fn tag_key(
        &self,
        key_id: &KmsKeyId,
        tags: &[(String, String)],
    ) -> Result<(), CloudError> {
        const OP: &str = "tag_key";
        let mut state = self.call(OP)?;
        let key = state
            .keys
            .get_mut(key_id)
            .ok_or_else(|| not_found(OP, key_id))?;
        for (name, value) in tags {
            key.tags.retain(|(have, _)| have != name);
            key.tags.push((name.clone(), value.clone()));
        }
        Ok(())
    }

    async fn enable_key(&self, key_id: &KmsKeyId) -> Result<(), CloudError> {
        const OP: &str = "enable_key";
        let mut state = self.call(OP)?;
        let key = state
            .keys
            .get_mut(key_id)
            .ok_or_else(|| not_found(OP, key_id))?;
        match key.state {
            KeyState::Enabled | KeyState::Disabled => {
                key.state = KeyState::Enabled;
                Ok(())
            }
            other => Err(invalid_state(OP, key_id, other)),
        }
    }

    async fn cancel_key_deletion(&self, key_id: &KmsKeyId) -> Result<(), CloudError> {
        const OP: &str = "cancel_key_deletion";
        let mut state = self.call(OP)?;
        let key = state
            .keys
            .get_mut(key_id)
            .ok_or_else(|| not_found(OP, key_id))?;
        if key.state != KeyState::PendingDeletion {
            return Err(invalid_state(OP, key_id, key.state));
        }
        key.deletion_date = None;
        key.state = if key.material.is_some() || key.current.is_some() {
            KeyState::Disabled
        } else {
            KeyState::PendingImport
        };
        Ok(())
    }
}

/// Connects every credential, in every region, to one [`FakeKms`].
pub struct FakeConnector {
    pub kms: Arc<FakeKms>,
}

#[async_trait]
impl CloudConnector for FakeConnector {
    fn service(&self) -> CloudService {
        CloudService::Aws
    }

    async fn connect(
        &self,
        _: &Credential,
        _: Option<secrecy::SecretString>,
        _: &Region,
    ) -> Result<Arc<dyn CloudKms>, CloudError> {
        Ok(self.kms.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::approval::{Execution, OperationClass, Quorum};
    use crate::identity::Role;

    fn at(secs: i64) -> Timestamp {
        chrono::DateTime::UNIX_EPOCH + chrono::Duration::seconds(secs)
    }

    fn request(approvals: u8) -> ApprovalRequest {
        ApprovalRequest::pending(
            OperationClass::ChangeConfiguration,
            serde_json::json!({"kind": "change_configuration"}),
            "Change the configuration".into(),
            vec![IdentityName::parse("Admin1").unwrap()],
            Quorum::new(approvals, Role::Administrator, 1).unwrap(),
            at(0),
        )
    }

    fn vote(who: &str, approve: bool, secs: i64) -> Vote {
        Vote {
            identity: IdentityName::parse(who).unwrap(),
            role: Role::Administrator,
            approve,
            at: at(secs),
            reason: None,
        }
    }

    fn entry(summary: &str) -> AuditRecord {
        AuditRecord::new(at(10), "Admin1", summary)
    }

    fn executing(id: uuid::Uuid, sealed: Option<&[u8]>) -> AuditRecord {
        let mut a = entry("Changed the configuration.");
        a.executes = Some(Execution {
            request: id,
            sealed_result: sealed.map(<[u8]>::to_vec),
        });
        a
    }

    #[tokio::test]
    async fn the_fake_takes_votes_as_the_database_does() {
        let store = FakeStore::new();
        let r = request(2);
        store.insert_approval(&r, &entry("asked")).await.unwrap();
        let late = vote("Admin2", true, 3600);
        assert_eq!(
            store.vote_approval(r.id, &late, &entry("v")).await.unwrap(),
            None
        );
        let first = vote("Admin2", true, 1);
        assert_eq!(
            store
                .vote_approval(r.id, &first, &entry("v"))
                .await
                .unwrap(),
            Some(ApprovalStatus::Pending)
        );
        assert!(matches!(
            store.vote_approval(r.id, &first, &entry("v")).await,
            Err(StoreError::Duplicate)
        ));
        let second = vote("Admin3", true, 2);
        assert_eq!(
            store
                .vote_approval(r.id, &second, &entry("v"))
                .await
                .unwrap(),
            Some(ApprovalStatus::Approved)
        );
        assert_eq!(
            store
                .vote_approval(r.id, &vote("Admin4", false, 3), &entry("v"))
                .await
                .unwrap(),
            None
        );
        // The request, and one entry per vote taken.
        assert_eq!(store.snapshot().audit.len(), 3);
        let stored = store.get_approval(r.id).await.unwrap().unwrap();
        assert_eq!(stored.votes, [first, second]);

        let d = request(2);
        store.insert_approval(&d, &entry("asked")).await.unwrap();
        assert_eq!(
            store
                .vote_approval(d.id, &vote("Admin2", false, 5), &entry("v"))
                .await
                .unwrap(),
            Some(ApprovalStatus::Denied)
        );
        let denied = store.get_approval(d.id).await.unwrap().unwrap();
        assert_eq!(
            (denied.status, denied.decided_at),
            (ApprovalStatus::Denied, Some(at(5)))
        );
        let listed: Vec<_> = store
            .list_approvals(Some(ApprovalStatus::Approved), 0)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(listed, [r.id]);
    }

    #[tokio::test]
    async fn the_fake_runs_an_approved_request_once_and_writes_nothing_after() {
        let store = FakeStore::new();
        let r = request(1);
        store.insert_approval(&r, &entry("asked")).await.unwrap();
        let pending = executing(r.id, None);
        assert!(matches!(
            store.put_settings(&Settings::default(), &pending).await,
            Err(StoreError::ApprovalSpent)
        ));
        store
            .vote_approval(r.id, &vote("Admin2", true, 1), &entry("v"))
            .await
            .unwrap();
        let entries = store.snapshot().audit.len();

        let original = store.get_settings().await.unwrap();
        store
            .put_settings(&original, &executing(r.id, Some(b"sealed")))
            .await
            .unwrap();
        let run = store.get_approval(r.id).await.unwrap().unwrap();
        assert_eq!(run.status, ApprovalStatus::Executed);
        assert_eq!(run.outcome.as_deref(), Some("Changed the configuration."));
        assert!(run.has_sealed_result);

        // A second run: refused, and the settings it carried not written.
        let mut changed = original.clone();
        changed.dual_control = !changed.dual_control;
        assert!(matches!(
            store.put_settings(&changed, &executing(r.id, None)).await,
            Err(StoreError::ApprovalSpent)
        ));
        assert_eq!(store.get_settings().await.unwrap(), original);
        assert_eq!(store.snapshot().audit.len(), entries + 1);

        let collect = entry("collected");
        assert_eq!(
            store.take_approval_result(r.id, &collect).await.unwrap(),
            Some(b"sealed".to_vec())
        );
        assert_eq!(
            store.take_approval_result(r.id, &collect).await.unwrap(),
            None
        );
        assert!(
            !store
                .get_approval(r.id)
                .await
                .unwrap()
                .unwrap()
                .has_sealed_result
        );
        assert_eq!(store.snapshot().audit.len(), entries + 2);
    }
}
