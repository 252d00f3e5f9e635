//! What the proxy serves from: every external key store by path prefix,
//! its credentials by access key id (secrets opened) and its keys by id,
//! as of one XKS revision.
//!
//! Rules:
//! - Requests read the current directory without waiting: it sits behind
//!   an `Arc` that a reload replaces whole ([`DirectoryCell`]); a request
//!   holds the one it started with.
//! - Each node polls the XKS revision every second and reloads when it
//!   moved, so a revoked credential or a disabled key stops working on
//!   every node about a second after the write. A reload that fails keeps
//!   the directory served and is tried again at the next poll.
//! - A credential's secret is opened once, through the keystore (bound to
//!   the credential's id), when it first appears; later reloads keep the
//!   opened secret as long as the credential is unchanged. Secrets stay in
//!   `Zeroizing` memory and are wiped when the credential goes.
//! - A credential whose secret cannot be opened is left out (its requests
//!   fail authentication, and the log says why); the store's others work.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Instant;

use keyhold_core::service::Keyhold;
use keyhold_core::xks::{
    XksAccessKeyId, XksCredential, XksKey, XksSecret, XksStore, secret_context,
};

use super::mtls::{MtlsRules, RuleId};
use super::quota::TokenBucket;

/// Credentials with their secrets opened, or why one could not be.
pub type OpenedSecrets = Vec<(XksCredential, Result<XksSecret, String>)>;

/// A credential with its secret opened.
pub struct OpenedCredential {
    id: uuid::Uuid,
    store_id: uuid::Uuid,
    sealed: Vec<u8>,
    pub access_key_id: XksAccessKeyId,
    pub secret: XksSecret,
}

/// One store as served.
pub struct ServedStore {
    pub store: XksStore,
    credentials: HashMap<String, Arc<OpenedCredential>>,
    keys: HashMap<uuid::Uuid, XksKey>,
    /// The store's mTLS rule, as the listener's rules know it.
    pub mtls: Option<RuleId>,
    /// Survives reloads (see `quota`).
    pub quota: Arc<TokenBucket>,
}

impl ServedStore {
    pub fn credential(&self, access_key_id: &str) -> Option<&OpenedCredential> {
        self.credentials.get(access_key_id).map(AsRef::as_ref)
    }

    /// The store's key whose `XksKeyId` is `key_id` (a hyphenated UUID, in
    /// either case). Another store's key is not found here.
    pub fn key(&self, key_id: &str) -> Option<&XksKey> {
        if key_id.len() != 36 {
            return None;
        }
        let id = uuid::Uuid::try_parse(key_id).ok()?;
        self.keys.get(&id)
    }
}

/// Every store, as of `revision`.
pub struct Directory {
    /// `None` before the first load.
    pub revision: Option<i64>,
    by_prefix: HashMap<String, Arc<ServedStore>>,
}

impl Directory {
    pub fn empty() -> Self {
        Self {
            revision: None,
            by_prefix: HashMap::new(),
        }
    }

    pub fn store(&self, prefix: &str) -> Option<&Arc<ServedStore>> {
        self.by_prefix.get(prefix)
    }

    fn by_id(&self, id: uuid::Uuid) -> Option<&Arc<ServedStore>> {
        self.by_prefix.values().find(|served| served.store.id == id)
    }

    fn opened(&self, credential: &XksCredential) -> Option<Arc<OpenedCredential>> {
        self.by_prefix
            .values()
            .filter_map(|served| served.credentials.get(credential.access_key_id.as_str()))
            .find(|opened| {
                opened.id == credential.id
                    && opened.store_id == credential.store_id
                    && opened.sealed == credential.sealed_secret
            })
            .cloned()
    }

    /// The directory for `snapshot`, reusing what `previous` already
    /// opened and the quota buckets it had. `open` opens the secrets not
    /// seen before (through the keystore, off the executor).
    pub async fn build<F, Fut>(
        previous: &Self,
        revision: i64,
        stores: Vec<XksStore>,
        credentials: Vec<XksCredential>,
        keys: Vec<XksKey>,
        open: F,
    ) -> Self
    where
        F: FnOnce(Vec<XksCredential>) -> Fut,
        Fut: std::future::Future<Output = OpenedSecrets>,
    {
        let mut opened: Vec<Arc<OpenedCredential>> = Vec::new();
        let mut to_open = Vec::new();
        for credential in credentials {
            match previous.opened(&credential) {
                Some(known) => opened.push(known),
                None => to_open.push(credential),
            }
        }
        for (credential, secret) in open(to_open).await {
            match secret {
                Ok(secret) => opened.push(Arc::new(OpenedCredential {
                    id: credential.id,
                    store_id: credential.store_id,
                    sealed: credential.sealed_secret,
                    access_key_id: credential.access_key_id,
                    secret,
                })),
                Err(error) => tracing::error!(
                    access_key_id = %credential.access_key_id,
                    %error,
                    "an XKS credential's secret cannot be opened: requests signed with it fail authentication"
                ),
            }
        }
        let now = Instant::now();
        let mut by_prefix = HashMap::new();
        let mut keys_by_store: HashMap<uuid::Uuid, HashMap<uuid::Uuid, XksKey>> = HashMap::new();
        for key in keys {
            keys_by_store
                .entry(key.store_id)
                .or_default()
                .insert(key.id, key);
        }
        for store in stores {
            let quota = match previous.by_id(store.id) {
                Some(served) => {
                    if served.store.quota_per_second != store.quota_per_second {
                        served.quota.set_per_second(store.quota_per_second, now);
                    }
                    served.quota.clone()
                }
                None => Arc::new(TokenBucket::per_second(store.quota_per_second, now)),
            };
            let credentials = opened
                .iter()
                .filter(|credential| credential.store_id == store.id)
                .map(|credential| {
                    (
                        credential.access_key_id.as_str().to_owned(),
                        credential.clone(),
                    )
                })
                .collect();
            let served = ServedStore {
                mtls: store.mtls.as_ref().map(RuleId::of),
                keys: keys_by_store.remove(&store.id).unwrap_or_default(),
                credentials,
                quota,
                store,
            };
            by_prefix.insert(
                served.store.path_prefix.as_str().to_owned(),
                Arc::new(served),
            );
        }
        Self {
            revision: Some(revision),
            by_prefix,
        }
    }

    /// Every store's mTLS rule, for the listener.
    pub fn mtls_rules(&self) -> impl Iterator<Item = &keyhold_core::xks::MtlsRule> {
        self.by_prefix
            .values()
            .filter_map(|served| served.store.mtls.as_ref())
    }
}

/// The directory requests read; a reload swaps it whole.
pub struct DirectoryCell {
    current: RwLock<Arc<Directory>>,
}

impl std::fmt::Debug for DirectoryCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectoryCell")
            .field("revision", &self.load().revision)
            .finish_non_exhaustive()
    }
}

impl DirectoryCell {
    pub fn new() -> Self {
        Self {
            current: RwLock::new(Arc::new(Directory::empty())),
        }
    }

    /// The directory now (an `Arc` clone under a read lock held for no
    /// longer than that).
    pub fn load(&self) -> Arc<Directory> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn replace(&self, next: Directory) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(next);
    }

    /// Reloads when the XKS revision differs from the one served; returns
    /// the revision served afterwards.
    pub async fn refresh(
        &self,
        keyhold: &Keyhold,
        mtls: &MtlsRules,
    ) -> Result<Option<i64>, String> {
        let current = self.load();
        let revision = keyhold
            .store()
            .xks_revision()
            .await
            .map_err(|e| format!("reading the XKS revision: {e}"))?;
        if current.revision == Some(revision) {
            return Ok(current.revision);
        }
        let snapshot = keyhold
            .xks_snapshot()
            .await
            .map_err(|e| format!("reading the external key stores: {e}"))?;
        let keystore = keyhold.keystore().clone();
        let next = Directory::build(
            &current,
            snapshot.revision,
            snapshot.stores,
            snapshot.credentials,
            snapshot.keys,
            |sealed| async move {
                tokio::task::spawn_blocking(move || open_secrets(keystore.as_ref(), sealed))
                    .await
                    .unwrap_or_default()
            },
        )
        .await;
        mtls.replace(next.mtls_rules());
        let served = next.revision;
        self.replace(next);
        Ok(served)
    }
}

/// Opens each credential's secret, bound to its id.
fn open_secrets(
    keystore: &dyn keyhold_core::ports::Keystore,
    credentials: Vec<XksCredential>,
) -> OpenedSecrets {
    credentials
        .into_iter()
        .map(|credential| {
            let secret = keystore
                .open_secret(&secret_context(credential.id), &credential.sealed_secret)
                .map_err(|e| e.to_string())
                .and_then(|opened| XksSecret::from_opened(opened).map_err(|e| e.message));
            (credential, secret)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use keyhold_core::key::CheckDigits;
    use keyhold_core::xks::{AuthorizationRule, MtlsRule, PathPrefix, XksKeyUsage, XksStoreName};
    use zeroize::Zeroizing;

    use super::*;

    fn store(name: &str, quota: u32) -> XksStore {
        let name = XksStoreName::parse(name).unwrap();
        XksStore {
            id: uuid::Uuid::new_v4(),
            path_prefix: PathPrefix::for_store(&name).unwrap(),
            name,
            quota_per_second: quota,
            mtls: None,
            created_at: chrono::DateTime::UNIX_EPOCH,
            updated_at: chrono::DateTime::UNIX_EPOCH,
        }
    }

    fn credential(store: &XksStore, akid: &str, sealed: &[u8]) -> XksCredential {
        XksCredential {
            id: uuid::Uuid::new_v4(),
            store_id: store.id,
            access_key_id: XksAccessKeyId::parse(akid).unwrap(),
            sealed_secret: sealed.to_vec(),
            created_at: chrono::DateTime::UNIX_EPOCH,
        }
    }

    fn key(store: &XksStore) -> XksKey {
        XksKey {
            id: uuid::Uuid::new_v4(),
            store_id: store.id,
            description: String::new(),
            usage: XksKeyUsage::EncryptDecrypt,
            enabled: true,
            rule: AuthorizationRule::default(),
            handle: vec![],
            check_digits: CheckDigits::from_encrypted_zero_block(&[0; 16]),
            created_at: chrono::DateTime::UNIX_EPOCH,
            updated_at: chrono::DateTime::UNIX_EPOCH,
        }
    }

    /// "Opens" a sealed secret by reading it as text; counts the calls.
    fn opener(
        calls: &AtomicUsize,
    ) -> impl FnOnce(Vec<XksCredential>) -> std::future::Ready<OpenedSecrets> + '_ {
        move |sealed| {
            calls.fetch_add(sealed.len(), Ordering::Relaxed);
            std::future::ready(
                sealed
                    .into_iter()
                    .map(|c| {
                        let secret = if c.sealed_secret == b"broken" {
                            Err("seal broken".to_owned())
                        } else {
                            XksSecret::from_opened(Zeroizing::new(c.sealed_secret.clone()))
                                .map_err(|e| e.message)
                        };
                        (c, secret)
                    })
                    .collect(),
            )
        }
    }

    const AKID_1: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAA";
    const AKID_2: &str = "BBBBBBBBBBBBBBBBBBBBBBBBBB";
    const AKID_3: &str = "CCCCCCCCCCCCCCCCCCCCCCCCCC";

    #[tokio::test]
    async fn stores_credentials_and_keys_are_found_only_where_they_belong() {
        let calls = AtomicUsize::new(0);
        let payments = store("payments", 10);
        let mut billing = store("billing", 10);
        billing.mtls = Some(MtlsRule {
            subject: "cks.kms.eu-west-1.amazonaws.com".into(),
            ca_pem: "-----BEGIN CERTIFICATE-----".into(),
        });
        let pay_key = key(&payments);
        let bill_key = key(&billing);
        let directory = Directory::build(
            &Directory::empty(),
            7,
            vec![payments.clone(), billing.clone()],
            vec![
                credential(&payments, AKID_1, b"secret-one"),
                credential(&billing, AKID_2, b"secret-two"),
                credential(&billing, AKID_3, b"broken"),
            ],
            vec![pay_key.clone(), bill_key.clone()],
            opener(&calls),
        )
        .await;
        assert_eq!(directory.revision, Some(7));
        let served = directory.store("/xks/payments").unwrap();
        assert_eq!(
            served.credential(AKID_1).unwrap().secret.expose(),
            "secret-one"
        );
        assert!(
            served.credential(AKID_2).is_none(),
            "another store's credential"
        );
        assert!(served.key(&pay_key.id.to_string()).is_some());
        assert!(served.key(&pay_key.id.to_string().to_uppercase()).is_some());
        assert!(served.key(&pay_key.id.simple().to_string()).is_none());
        assert!(
            served.key(&bill_key.id.to_string()).is_none(),
            "another store's key"
        );
        assert!(served.mtls.is_none());
        let billing_served = directory.store("/xks/billing").unwrap();
        assert!(
            billing_served.credential(AKID_3).is_none(),
            "unopenable: left out"
        );
        assert!(billing_served.mtls.is_some());
        assert_eq!(directory.mtls_rules().count(), 1);
        assert!(directory.store("/xks").is_none());
        assert_eq!(calls.load(Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn reloads_keep_opened_secrets_and_quota_buckets() {
        let calls = AtomicUsize::new(0);
        let payments = store("payments", 2);
        let first_credential = credential(&payments, AKID_1, b"secret-one");
        let first = Directory::build(
            &Directory::empty(),
            1,
            vec![payments.clone()],
            vec![first_credential.clone()],
            vec![],
            opener(&calls),
        )
        .await;
        let now = Instant::now();
        let bucket = first.store("/xks/payments").unwrap().quota.clone();
        assert!(bucket.try_take(now) && bucket.try_take(now) && !bucket.try_take(now));

        // Rotation: a second credential added; the first is not opened again.
        let second_credential = credential(&payments, AKID_2, b"secret-two");
        let second = Directory::build(
            &first,
            2,
            vec![payments.clone()],
            vec![first_credential.clone(), second_credential.clone()],
            vec![],
            opener(&calls),
        )
        .await;
        assert_eq!(calls.load(Ordering::Relaxed), 2);
        let served = second.store("/xks/payments").unwrap();
        assert!(served.credential(AKID_1).is_some() && served.credential(AKID_2).is_some());
        // The bucket is the same one, still empty: no fresh second of quota.
        assert!(!served.quota.try_take(now));

        // Revocation: the first credential is gone from the next directory.
        let third = Directory::build(
            &second,
            3,
            vec![payments],
            vec![second_credential],
            vec![],
            opener(&calls),
        )
        .await;
        let served = third.store("/xks/payments").unwrap();
        assert!(served.credential(AKID_1).is_none());
        assert!(served.credential(AKID_2).is_some());
        assert_eq!(calls.load(Ordering::Relaxed), 2);
    }
}
