//! External key stores (AWS KMS XKS): the stores KMS reaches keyhold's
//! proxy under, their SigV4 credentials and their keys.
//!
//! Rules ([`crate::xks`] has the domain's):
//! - Stores and their credentials need dual control (`manage_xks_stores`);
//!   so do creating and deleting a key and anything that gives a key more
//!   than it had (`manage_xks_keys`). One key officer may disable a key,
//!   narrow its usage or change its description alone: the brake needs no
//!   second hand.
//! - A credential's secret is generated here, sealed by the keystore under
//!   its credential's id before it is stored, and handed back once. No
//!   audit entry holds it; run as an approved request, it waits sealed for
//!   the requester (as an added identity's password does).
//! - Every write goes through the store's compare-and-swap or its
//!   count-and-insert, so parallel officers and nodes never leave more
//!   than the rules allow.
//! - The proxy reads everything at once with [`Keyhold::xks_snapshot`].

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::Keyhold;
use crate::action::Action;
use crate::approval::OperationClass;
use crate::error::{CoreError, CoreResult, KeystoreError, StoreError};
use crate::identity::{Operation, Session};
use crate::xks::{
    AuthorizationRule, DEFAULT_QUOTA_PER_SECOND, MAX_ACTIVE_CREDENTIALS, MtlsRule, PathPrefix,
    XksAccessKeyId, XksCredential, XksKey, XksKeyChange, XksKeyUsage, XksSecret, XksStore,
    XksStoreChange, XksStoreName, generate_credential, kms_console_file, parse_description,
    parse_quota, secret_context,
};

/// Attempts at a compare-and-swap of a store or a key before giving up.
const MAX_CHANGE_ROUNDS: usize = 16;
/// A rule whose JSON is longer is audited as its sizes and its SHA-256,
/// not in full (a rule may hold 256 patterns of 2 KiB).
const MAX_RULE_DETAIL_LEN: usize = 8 * 1024;

/// A store to create. Left `None`, the prefix is `/xks/<name>` and the
/// quota AWS KMS's default ([`DEFAULT_QUOTA_PER_SECOND`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewXksStore {
    pub name: XksStoreName,
    pub path_prefix: Option<PathPrefix>,
    pub quota_per_second: Option<u32>,
    pub mtls: Option<MtlsRule>,
}

/// A credential just made: its secret is shown this once. No `Debug` of
/// the secret.
pub struct IssuedCredential {
    pub store: XksStore,
    pub access_key_id: XksAccessKeyId,
    pub secret: XksSecret,
}

impl IssuedCredential {
    /// The settings file the AWS KMS console takes for the store.
    pub fn kms_console_file(&self) -> serde_json::Value {
        kms_console_file(&self.store.path_prefix, &self.access_key_id, &self.secret)
    }
}

impl std::fmt::Debug for IssuedCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCredential")
            .field("store", &self.store.name)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// A store with its credentials (sealed) and keys, oldest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XksStoreDetail {
    pub store: XksStore,
    pub credentials: Vec<XksCredential>,
    pub keys: Vec<XksKey>,
}

/// A key to create in a store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewXksKey {
    pub description: String,
    pub usage: XksKeyUsage,
    pub rule: AuthorizationRule,
    pub enabled: bool,
}

/// What the proxy serves from: everything, read at one revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XksSnapshot {
    /// Read before the rest: the data is at least this new, so a write in
    /// between only makes the next poll reload once more.
    pub revision: i64,
    pub stores: Vec<XksStore>,
    pub credentials: Vec<XksCredential>,
    pub keys: Vec<XksKey>,
}

impl Keyhold {
    pub async fn list_xks_stores(&self, session: &Session) -> CoreResult<Vec<XksStoreDetail>> {
        session.authorize(Operation::READ, true)?;
        let mut stores = self.store.list_xks_stores().await?;
        stores.sort_by(|a, b| a.name.cmp(&b.name));
        let credentials = self.store.list_xks_credentials().await?;
        let keys = self.store.list_xks_keys(None).await?;
        Ok(stores
            .into_iter()
            .map(|store| XksStoreDetail {
                credentials: credentials
                    .iter()
                    .filter(|c| c.store_id == store.id)
                    .cloned()
                    .collect(),
                keys: keys
                    .iter()
                    .filter(|k| k.store_id == store.id)
                    .cloned()
                    .collect(),
                store,
            })
            .collect())
    }

    pub async fn get_xks_store(
        &self,
        session: &Session,
        name: &XksStoreName,
    ) -> CoreResult<XksStoreDetail> {
        session.authorize(Operation::READ, true)?;
        let store = self.find_xks_store(name).await?;
        let credentials = self
            .store
            .list_xks_credentials()
            .await?
            .into_iter()
            .filter(|c| c.store_id == store.id)
            .collect();
        let keys = self.store.list_xks_keys(Some(store.id)).await?;
        Ok(XksStoreDetail {
            store,
            credentials,
            keys,
        })
    }

    /// Creates a store with its first credential, whose secret the result
    /// holds (shown once).
    pub async fn create_xks_store(
        &self,
        session: &Session,
        new: NewXksStore,
    ) -> CoreResult<IssuedCredential> {
        self.authorize(session, Operation::MANAGE_XKS_STORES)
            .await?;
        let path_prefix = match new.path_prefix {
            Some(prefix) => prefix,
            None => PathPrefix::for_store(&new.name)?,
        };
        let quota_per_second =
            parse_quota(new.quota_per_second.unwrap_or(DEFAULT_QUOTA_PER_SECOND))?;
        let now = self.now();
        let store = XksStore {
            id: uuid::Uuid::new_v4(),
            name: new.name,
            path_prefix,
            quota_per_second,
            mtls: new.mtls,
            created_at: now,
            updated_at: now,
        };
        let (credential, issued) = self.issue_credential(&store)?;
        let mut details = store_details(&store);
        if let Some(fields) = details.as_object_mut() {
            fields.insert(
                "access_key_id".to_owned(),
                credential.access_key_id.as_str().into(),
            );
        }
        let mut record = self
            .record_for(
                session,
                Action::CreateXksStore(store.name.as_str()).succeeded(),
            )
            .with_details(details);
        self.seal_issued(&mut record, &issued)?;
        match self
            .store
            .insert_xks_store(&store, &credential, &record)
            .await
        {
            Ok(()) => Ok(issued),
            Err(StoreError::Duplicate) => Err(self.store_taken(&store).await?),
            Err(e) => Err(e.into()),
        }
    }

    /// Changes a store's quota or mTLS rule, applied to the store as it is
    /// when written (a parallel change is kept, not overwritten). A change
    /// that changes nothing writes nothing.
    pub async fn update_xks_store(
        &self,
        session: &Session,
        name: &XksStoreName,
        change: XksStoreChange,
    ) -> CoreResult<XksStore> {
        self.authorize(session, Operation::MANAGE_XKS_STORES)
            .await?;
        if let Some(quota) = change.quota_per_second {
            parse_quota(quota)?;
        }
        for _ in 0..MAX_CHANGE_ROUNDS {
            let before = self.find_xks_store(name).await?;
            let after = change.apply(&before, self.now());
            if after.quota_per_second == before.quota_per_second && after.mtls == before.mtls {
                return Ok(before);
            }
            let record = self
                .record_for(session, Action::UpdateXksStore(name.as_str()).succeeded())
                .with_details(serde_json::json!({
                    "before": store_details(&before),
                    "after": store_details(&after),
                }));
            if self
                .store
                .replace_xks_store(&before, &after, &record)
                .await?
            {
                return Ok(after);
            }
        }
        Err(CoreError::Conflict(format!(
            "external key store '{name}' kept changing while this change was applied: try again"
        )))
    }

    /// Deletes a store and its credentials; refused while it has keys.
    pub async fn delete_xks_store(&self, session: &Session, name: &XksStoreName) -> CoreResult<()> {
        self.authorize(session, Operation::MANAGE_XKS_STORES)
            .await?;
        let store = self.find_xks_store(name).await?;
        let record = self
            .record_for(session, Action::DeleteXksStore(name.as_str()).succeeded())
            .with_details(serde_json::json!({ "before": store_details(&store) }));
        match self.store.delete_xks_store(store.id, &record).await {
            Ok(()) => Ok(()),
            Err(StoreError::InUse) => {
                let keys = self.store.list_xks_keys(Some(store.id)).await?.len();
                Err(CoreError::Conflict(format!(
                    "external key store '{name}' still has {keys} XKS key{}: delete {} first (disable each, then delete it; deleting a key destroys its material)",
                    if keys == 1 { "" } else { "s" },
                    if keys == 1 { "it" } else { "them" },
                )))
            }
            Err(StoreError::NotFound) => Err(CoreError::not_found("external key store", name)),
            Err(e) => Err(e.into()),
        }
    }

    /// A new credential for the store (to rotate: add one, give it to KMS,
    /// then revoke the old one). Refused while the store has
    /// [`MAX_ACTIVE_CREDENTIALS`]; counted and written in one transaction.
    pub async fn add_xks_credential(
        &self,
        session: &Session,
        name: &XksStoreName,
    ) -> CoreResult<IssuedCredential> {
        self.authorize(session, Operation::MANAGE_XKS_STORES)
            .await?;
        let store = self.find_xks_store(name).await?;
        let (credential, issued) = self.issue_credential(&store)?;
        let mut record = self
            .record_for(session, Action::AddXksCredential(name.as_str()).succeeded())
            .with_details(serde_json::json!({
                "access_key_id": credential.access_key_id.as_str(),
            }));
        self.seal_issued(&mut record, &issued)?;
        match self
            .store
            .insert_xks_credential(&credential, MAX_ACTIVE_CREDENTIALS, &record)
            .await
        {
            Ok(true) => Ok(issued),
            Ok(false) => Err(self.credentials_full(&store).await?),
            Err(StoreError::NotFound) => Err(CoreError::not_found("external key store", name)),
            Err(e) => Err(e.into()),
        }
    }

    /// Revokes one of a store's credentials: KMS calls signed with it are
    /// refused from the next reload on (within seconds). Revoking the last
    /// one is allowed (a leaked credential must go at once); the store
    /// serves nothing until a new one is added.
    pub async fn revoke_xks_credential(
        &self,
        session: &Session,
        name: &XksStoreName,
        access_key_id: &XksAccessKeyId,
    ) -> CoreResult<()> {
        self.authorize(session, Operation::MANAGE_XKS_STORES)
            .await?;
        let store = self.find_xks_store(name).await?;
        let not_found = || {
            CoreError::not_found(
                "credential",
                format!("{access_key_id} of external key store '{name}'"),
            )
        };
        let Some(credential) = self
            .store
            .list_xks_credentials()
            .await?
            .into_iter()
            .find(|c| c.store_id == store.id && &c.access_key_id == access_key_id)
        else {
            return Err(not_found());
        };
        let record = self
            .record_for(
                session,
                Action::RevokeXksCredential(name.as_str(), access_key_id.as_str()).succeeded(),
            )
            .with_details(serde_json::json!({
                "access_key_id": access_key_id.as_str(),
                "created_at": credential.created_at,
            }));
        if self
            .store
            .delete_xks_credential(store.id, access_key_id, &record)
            .await?
        {
            Ok(())
        } else {
            Err(not_found())
        }
    }

    /// Generates an AES-256 key in the keystore for the store. Its id is
    /// the `XksKeyId` to give KMS `CreateKey`.
    pub async fn create_xks_key(
        &self,
        session: &Session,
        store_name: &XksStoreName,
        new: NewXksKey,
    ) -> CoreResult<XksKey> {
        self.authorize(session, Operation::MANAGE_XKS_KEYS).await?;
        let description = parse_description(&new.description)?;
        new.rule.check()?;
        let store = self.find_xks_store(store_name).await?;
        let id = uuid::Uuid::new_v4();
        let generated = self.keystore.xks_generate_key(id)?;
        let now = self.now();
        let key = XksKey {
            id,
            store_id: store.id,
            description,
            usage: new.usage,
            enabled: new.enabled,
            rule: new.rule,
            handle: generated.handle,
            check_digits: generated.check_digits,
            created_at: now,
            updated_at: now,
        };
        let record = self
            .record_for(
                session,
                Action::CreateXksKey(store_name.as_str()).succeeded(),
            )
            .with_details(key_details(&key, store_name));
        match self.store.insert_xks_key(&key, &record).await {
            Ok(()) => Ok(key),
            Err(error) => {
                // Nothing refers to the material: destroy it rather than
                // leave it in the keystore. Should that fail too, it is an
                // orphan no row names (a leak, never a key in use).
                let _ = self.keystore.delete_key(key.id, &key.handle);
                Err(match error {
                    StoreError::NotFound => CoreError::not_found("external key store", store_name),
                    e => e.into(),
                })
            }
        }
    }

    /// One store's keys (`Some`), or all stores', oldest first.
    pub async fn list_xks_keys(
        &self,
        session: &Session,
        store: Option<&XksStoreName>,
    ) -> CoreResult<Vec<XksKey>> {
        session.authorize(Operation::READ, true)?;
        let store_id = match store {
            Some(name) => Some(self.find_xks_store(name).await?.id),
            None => None,
        };
        Ok(self.store.list_xks_keys(store_id).await?)
    }

    pub async fn get_xks_key(&self, session: &Session, id: uuid::Uuid) -> CoreResult<XksKey> {
        session.authorize(Operation::READ, true)?;
        self.find_xks_key(id).await
    }

    /// What `change` to `key` needs: [`Operation::MANAGE_XKS_KEYS`] (dual
    /// control, or a quorum) when it gives the key more than it has,
    /// [`Operation::RESTRICT_XKS_KEY`] (one key officer) otherwise. The
    /// edge asks it to know whether a change must be asked for as an
    /// approval request.
    pub fn xks_key_operation(change: &XksKeyChange, key: &XksKey) -> Operation {
        if change.widens(key) {
            Operation::MANAGE_XKS_KEYS
        } else {
            Operation::RESTRICT_XKS_KEY
        }
    }

    /// Changes a key. Applied to the key as it is when written: each round
    /// reads it again and decides again whether the change widens it, so a
    /// parallel change can neither be lost nor turn a restriction into an
    /// unchecked widening. A change that changes nothing writes nothing.
    pub async fn update_xks_key(
        &self,
        session: &Session,
        id: uuid::Uuid,
        change: XksKeyChange,
    ) -> CoreResult<XksKey> {
        // Before the key is read, so that a refusal for want of a role
        // never depends on whether the key exists.
        self.authorize_xks_key_change(session, Operation::RESTRICT_XKS_KEY)
            .await?;
        if let Some(description) = &change.description {
            parse_description(description)?;
        }
        if let Some(rule) = &change.rule {
            rule.check()?;
        }
        for _ in 0..MAX_CHANGE_ROUNDS {
            let before = self.find_xks_key(id).await?;
            let op = Self::xks_key_operation(&change, &before);
            self.authorize_xks_key_change(session, op).await?;
            let after = change.apply(&before, self.now());
            let changed = changed_key_fields(&before, &after);
            if changed.is_empty() {
                return Ok(before);
            }
            let values = |of: &XksKey| -> serde_json::Map<String, serde_json::Value> {
                changed
                    .iter()
                    .map(|field| ((*field).to_owned(), key_field(of, field)))
                    .collect()
            };
            let record = self
                .record_for(session, Action::UpdateXksKey(&id.to_string()).succeeded())
                .with_details(serde_json::json!({
                    "changed": changed,
                    "dual_control": op == Operation::MANAGE_XKS_KEYS,
                    "before": values(&before),
                    "after": values(&after),
                }));
            if self.store.replace_xks_key(&before, &after, &record).await? {
                return Ok(after);
            }
        }
        Err(CoreError::Conflict(format!(
            "XKS key {id} kept changing while this change was applied: try again"
        )))
    }

    /// Deletes a disabled key and destroys its material: everything AWS
    /// encrypted under it can never be decrypted again.
    pub async fn delete_xks_key(&self, session: &Session, id: uuid::Uuid) -> CoreResult<()> {
        self.authorize(session, Operation::MANAGE_XKS_KEYS).await?;
        let key = self.find_xks_key(id).await?;
        if key.enabled {
            return Err(CoreError::Conflict(format!(
                "XKS key {id} is enabled: disable it first; deleting destroys its material, and everything AWS encrypted under it becomes unreadable"
            )));
        }
        let store_name = self.xks_store_name(key.store_id).await?;
        let record = self
            .record_for(session, Action::DeleteXksKey(&id.to_string()).succeeded())
            .with_details(serde_json::json!({
                "before": key_details(&key, &store_name),
            }));
        // The material goes first, then the row with its entry. Deleting is
        // a crypto-shred: were the row deleted first and the keystore then
        // failed, the material would outlive the key with no row left to
        // retry from, and the shred would silently not have happened. This
        // way a failed row delete leaves a disabled key without material
        // (the proxy refuses it as disabled), and deleting it again
        // finishes the job (material already gone counts as destroyed).
        // The same dual control that allows this delete is needed to enable
        // the key again, so no one enables it in between by accident.
        match self.keystore.delete_key(key.id, &key.handle) {
            Ok(()) | Err(KeystoreError::KeyNotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        if self.store.delete_xks_key(key.id, &record).await? {
            Ok(())
        } else {
            // A parallel delete took the row (and its entry) first.
            Err(CoreError::not_found("XKS key", id))
        }
    }

    /// Everything the proxy serves from. No session: the proxy's reload
    /// on every node, when [`crate::ports::Store::xks_revision`] moved.
    pub async fn xks_snapshot(&self) -> CoreResult<XksSnapshot> {
        // The revision first: were it read last, a write between the lists
        // and it would label older data with the newer revision, and the
        // poll would never reload what it missed.
        let revision = self.store.xks_revision().await?;
        let stores = self.store.list_xks_stores().await?;
        let credentials = self.store.list_xks_credentials().await?;
        let keys = self.store.list_xks_keys(None).await?;
        Ok(XksSnapshot {
            revision,
            stores,
            credentials,
            keys,
        })
    }

    /// Opens a credential's sealed secret, to verify SigV4 signatures with
    /// (the proxy's reload). A blocking keystore call, as every one is.
    pub fn open_xks_secret(&self, credential: &XksCredential) -> CoreResult<XksSecret> {
        let opened = self
            .keystore
            .open_secret(&secret_context(credential.id), &credential.sealed_secret)?;
        Ok(XksSecret::from_opened(opened)?)
    }

    async fn find_xks_store(&self, name: &XksStoreName) -> CoreResult<XksStore> {
        self.store
            .list_xks_stores()
            .await?
            .into_iter()
            .find(|s| &s.name == name)
            .ok_or_else(|| CoreError::not_found("external key store", name))
    }

    async fn find_xks_key(&self, id: uuid::Uuid) -> CoreResult<XksKey> {
        self.store
            .get_xks_key(id)
            .await?
            .ok_or_else(|| CoreError::not_found("XKS key", id))
    }

    async fn xks_store_name(&self, store_id: uuid::Uuid) -> CoreResult<XksStoreName> {
        self.store
            .list_xks_stores()
            .await?
            .into_iter()
            .find(|s| s.id == store_id)
            .map(|s| s.name)
            .ok_or_else(|| CoreError::not_found("external key store", store_id))
    }

    /// [`Keyhold::authorize`], where a session running an approved
    /// `manage_xks_keys` request may also restrict: the key may have
    /// changed since the request was made so that the approved change no
    /// longer widens it, and the approval covers more than that needs.
    async fn authorize_xks_key_change(&self, session: &Session, op: Operation) -> CoreResult<()> {
        let approved = session
            .grant
            .is_some_and(|g| g.class == OperationClass::ManageXksKeys);
        let op = if approved && op == Operation::RESTRICT_XKS_KEY {
            Operation::MANAGE_XKS_KEYS
        } else {
            op
        };
        self.authorize(session, op).await
    }

    /// A new credential for `store`: its secret sealed under the
    /// credential's id for the store, and in the clear for the officer.
    fn issue_credential(&self, store: &XksStore) -> CoreResult<(XksCredential, IssuedCredential)> {
        let (access_key_id, secret) = generate_credential()
            .map_err(|e| KeystoreError::Unavailable(format!("no OS randomness: {e}")))?;
        let id = uuid::Uuid::new_v4();
        let sealed_secret = self
            .keystore
            .seal_secret(&secret_context(id), secret.expose().as_bytes())?;
        let credential = XksCredential {
            id,
            store_id: store.id,
            access_key_id: access_key_id.clone(),
            sealed_secret,
            created_at: self.now(),
        };
        let issued = IssuedCredential {
            store: store.clone(),
            access_key_id,
            secret,
        };
        Ok((credential, issued))
    }

    /// Run as an approved request, the console file (with the secret)
    /// waits sealed for the requester: the approver whose answer ran it
    /// never sees it. Otherwise nothing.
    fn seal_issued(
        &self,
        record: &mut crate::audit::AuditRecord,
        issued: &IssuedCredential,
    ) -> CoreResult<()> {
        if record.executes.is_none() {
            return Ok(());
        }
        let file = Zeroizing::new(issued.kms_console_file().to_string());
        self.seal_result(record, file.as_bytes())
    }

    /// The refusal of a store whose name or prefix is taken, naming which.
    async fn store_taken(&self, store: &XksStore) -> CoreResult<CoreError> {
        let existing = self.store.list_xks_stores().await?;
        Ok(CoreError::Conflict(
            if existing.iter().any(|s| s.name == store.name) {
                format!(
                    "an external key store named '{}' already exists: choose another name, or delete the old store first",
                    store.name
                )
            } else if let Some(other) = existing.iter().find(|s| s.path_prefix == store.path_prefix)
            {
                format!(
                    "path prefix {} is external key store '{}''s already: give this store another prefix",
                    store.path_prefix, other.name
                )
            } else {
                // The generated access key id collided (2^-128): asking
                // again draws another.
                "the new credential collided with an existing one: try again".to_owned()
            },
        ))
    }

    /// The refusal of a third credential, naming the two and which to revoke.
    async fn credentials_full(&self, store: &XksStore) -> CoreResult<CoreError> {
        let mut held: Vec<XksCredential> = self
            .store
            .list_xks_credentials()
            .await?
            .into_iter()
            .filter(|c| c.store_id == store.id)
            .collect();
        held.sort_by_key(|c| c.created_at);
        let listed = held
            .iter()
            .map(|c| format!("{} made {}", c.access_key_id, c.created_at.to_rfc3339()))
            .collect::<Vec<_>>()
            .join(", ");
        let (older, newer) = match (held.first(), held.last()) {
            (Some(first), Some(last)) => {
                (first.access_key_id.as_str(), last.access_key_id.as_str())
            }
            _ => ("the older", "the newer"),
        };
        Ok(CoreError::Conflict(format!(
            "external key store '{}' has {MAX_ACTIVE_CREDENTIALS} credentials already ({listed}): revoke the older one ({older}) once KMS uses the newer ({newer}), then add another",
            store.name
        )))
    }
}

/// What a store is, as its audit entries record it (never a secret; the
/// CA as its SHA-256, the PEM is long).
fn store_details(store: &XksStore) -> serde_json::Value {
    serde_json::json!({
        "path_prefix": store.path_prefix.as_str(),
        "uri_path": store.path_prefix.uri_path(),
        "quota_per_second": store.quota_per_second,
        "mtls_subject": store.mtls.as_ref().map(|m| m.subject.as_str()),
        "mtls_ca_sha256": store
            .mtls
            .as_ref()
            .map(|m| hex::encode(Sha256::digest(m.ca_pem.as_bytes()))),
    })
}

/// What a key is, as its audit entries record it.
fn key_details(key: &XksKey, store: &XksStoreName) -> serde_json::Value {
    serde_json::json!({
        "store": store.as_str(),
        "key_id": key.id.to_string(),
        "description": key.description,
        "usage": key.usage.as_str(),
        "enabled": key.enabled,
        "rule": rule_summary(&key.rule),
        "check_digits": key.check_digits.as_str(),
    })
}

/// A rule as audited: itself when short, else how many patterns each list
/// holds and the SHA-256 of its JSON (which identifies it exactly).
fn rule_summary(rule: &AuthorizationRule) -> serde_json::Value {
    let value = serde_json::to_value(rule).unwrap_or(serde_json::Value::Null);
    let text = value.to_string();
    if text.len() <= MAX_RULE_DETAIL_LEN {
        return value;
    }
    serde_json::json!({
        "entries": {
            "principals": rule.principals.len(),
            "kms_key_arns": rule.kms_key_arns.len(),
            "kms_operations": rule.kms_operations.len(),
            "source_vpcs": rule.source_vpcs.len(),
        },
        "sha256": hex::encode(Sha256::digest(text.as_bytes())),
    })
}

/// The fields of a key a change can touch, in a fixed order.
const KEY_FIELDS: [&str; 4] = ["description", "usage", "enabled", "rule"];

fn changed_key_fields(before: &XksKey, after: &XksKey) -> Vec<&'static str> {
    KEY_FIELDS
        .into_iter()
        .filter(|field| key_field(before, field) != key_field(after, field))
        .collect()
}

fn key_field(key: &XksKey, field: &str) -> serde_json::Value {
    match field {
        "description" => key.description.as_str().into(),
        "usage" => key.usage.as_str().into(),
        "enabled" => key.enabled.into(),
        "rule" => rule_summary(&key.rule),
        _ => serde_json::Value::Null,
    }
}
