//! A KMS peer on loopback that speaks AWS KMS's wire protocol (JSON 1.1,
//! `X-Amz-Target: TrentService.<Operation>`, errors as
//! `{"__type": ..., "message": ...}` with status 400), so keyhold's real AWS
//! adapter talks to it through a credential whose endpoint points here.
//!
//! Three uses, and only these three (everything else runs against LocalStack;
//! the quotas of the second may be turned on in the third too, with
//! [`KmsPeer::set_quotas`], as the drift scenario does):
//! - zero latency, to measure keyhold alone (engine overhead): it answers at
//!   once from memory, with one RSA-2048 wrapping key made at start-up
//!   ([`KmsPeer::start`]`(false)`);
//! - quota-enforcing: a token bucket per operation at AWS's default request
//!   quotas, answering `ThrottlingException` when a bucket is empty, and
//!   counting every call and every throttled call ([`KmsPeer::start`]`(true)`);
//! - faithful: AWS's documented behaviour for in-place rotation where
//!   LocalStack falls short ([`KmsPeer::start_faithful`], for keyhold-aws's
//!   tests). Since June 2025 AWS KMS rotates symmetric keys with imported
//!   material on demand; LocalStack does not check `ImportType`, ignores
//!   `KeyMaterialId` on delete, has no ListKeyRotations, and its Decrypt
//!   breaks after a delete and re-import. In this mode the peer:
//!   - unwraps imported material with its private key (RSAES_OAEP_SHA_1/_256,
//!     RSA_AES_KEY_WRAP_SHA_1/_256, in `wrapping.rs`), the algorithm coming from
//!     the import token GetParametersForImport gave, and refuses anything but
//!     256-bit material;
//!   - keeps each key's materials as AWS does ([`materials`]): ids derived
//!     from the key and the material, CURRENT / NON_CURRENT /
//!     PENDING_ROTATION, IMPORTED / PENDING_IMPORT, descriptions, expiration
//!     (enforced, lazily), rotation dates;
//!   - checks ImportKeyMaterial's `ImportType` and `KeyMaterialId`, deletes
//!     the material `KeyMaterialId` names, rotates on demand (at most 25
//!     times), lists rotations (`IncludeKeyMaterial`), and derives the key
//!     state from its materials (PendingImport while any permanently
//!     associated one is missing);
//!   - encrypts and decrypts for real (AES-256-GCM under the material, in the
//!     peer's own ciphertext format, in `ciphertext.rs`), so a test sees which
//!     material a ciphertext needs and that it decrypts again after a
//!     re-import;
//!   - answers AWS's documented errors, by the key-state table of the AWS KMS
//!     Developer Guide (*Key states of AWS KMS keys*) where it gives one.
//!
//! Both modes also keep what drift checks read and their repairs write
//! ([`manage`]): key policies (AWS's default one when CreateKey names none),
//! tags, aliases (with the aliases AWS predefines for its own keys), the
//! key's life (EnableKey, DisableKey, ScheduleKeyDeletion with its
//! `DeletionDate`, CancelKeyDeletion back to Disabled), and the listings
//! (ListKeys, ListAliases, ListResourceTags), paged with `Limit` and
//! `Marker` as AWS pages them. The peer never deletes a key whose waiting
//! period ended: at seven days at least, no test runs that long.
//!
//! The first two answer themselves rather than forwarding to LocalStack:
//! LocalStack's own latency (a fresh RSA key pair per GetParametersForImport)
//! would add to the wall time and make "minimum set by the quotas"
//! unreachable for reasons that have nothing to do with the quotas or
//! keyhold. They do not decrypt imported material either (what KMS does with
//! it is not keyhold's cost): the new operations work there in a simplified
//! way, with material the peer makes up and re-imports matched by
//! `KeyMaterialId` instead of by content.

mod ciphertext;
mod import;
mod manage;
pub mod materials;
mod quotas;
#[cfg(test)]
mod sdk_tests;
mod wrapping;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rsa::RsaPrivateKey;
use rsa::pkcs8::EncodePublicKey;
use serde_json::{Value, json};

use self::materials::Materials;
pub use self::materials::{
    Expiration, ImportState, KeyMaterial, KeyMaterialState, MAX_ON_DEMAND_ROTATIONS, material_id,
};
use self::quotas::Bucket;
pub use self::quotas::{AWS_DEFAULT_QUOTAS, OpCounts, bucket_for};

const ACCOUNT: &str = "111122223333";
const EXTERNAL: &str = "EXTERNAL";
const AWS_KMS: &str = "AWS_KMS";
/// How long GetParametersForImport's token and public key are valid (24 h).
const IMPORT_PARAMETERS_LIFETIME_MS: i64 = 24 * 3600 * 1000;
/// ImportKeyMaterial's `ValidTo` is at most 365 days ahead.
const MAX_VALID_TO_SECONDS: f64 = 365.0 * 86_400.0;
/// Encrypt's plaintext limit.
const MAX_PLAINTEXT: usize = 4096;

/// An error answered to the client: AWS's error code (`__type`) and message.
#[derive(Debug)]
struct KmsError {
    code: &'static str,
    message: String,
}

impl KmsError {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    fn validation(message: impl Into<String>) -> Self {
        Self::new("ValidationException", message)
    }

    fn internal(message: impl Into<String>) -> Self {
        Self::new("KMSInternalException", message)
    }

    fn unsupported(message: impl Into<String>) -> Self {
        Self::new("UnsupportedOperationException", message)
    }
}

type Answer = Result<Value, KmsError>;

#[derive(Debug)]
struct KeyRecord {
    /// `KeyState`: Enabled, Disabled, PendingImport or PendingDeletion.
    state: &'static str,
    /// `Origin`: EXTERNAL or AWS_KMS.
    origin: &'static str,
    description: String,
    /// In the order they were first added (TagResource overwrites a value
    /// in place).
    tags: Vec<(String, String)>,
    /// The key policy (`default`, the only one), kept verbatim.
    policy: String,
    created: f64,
    /// The order of creation (keys are never removed): ListKeys's order,
    /// which `created`, in milliseconds, cannot always tell.
    serial: usize,
    /// `DeletionDate` while PendingDeletion.
    deletion_date: Option<f64>,
    materials: Materials,
}

impl KeyRecord {
    fn external(&self) -> bool {
        self.origin == EXTERNAL
    }

    /// A key with imported material is usable only while every material
    /// permanently associated with it is imported (Developer Guide, *Import
    /// key material*): PendingImport otherwise; importing the last missing
    /// one enables a PendingImport key ("When this operation is successful,
    /// the state of the KMS key changes to Enabled", ImportKeyMaterial), and
    /// leaves a Disabled one disabled.
    ///
    /// A key pending deletion stays so whatever happens to its material
    /// ("When the specified KMS key is in the PendingDeletion state, this
    /// operation does not change the KMS key's state",
    /// DeleteImportedKeyMaterial).
    fn settle_state(&mut self) {
        if !self.external() || self.pending_deletion() {
            return;
        }
        if !self.materials.all_associated_imported() {
            self.state = "PendingImport";
        } else if self.state == "PendingImport" {
            self.state = "Enabled";
        }
    }

    fn pending_deletion(&self) -> bool {
        self.state == PENDING_DELETION
    }

    /// The key-state table's answers for operations that need an enabled
    /// key: footnote [1] "DisabledException: <key ARN> is disabled.", [5]
    /// "KMSInvalidStateException: <key ARN> is pending import.", [3]
    /// "KMSInvalidStateException: <key ARN> is pending deletion.".
    fn usable(&self, id: &str) -> Result<(), KmsError> {
        match self.state {
            "Enabled" => Ok(()),
            "Disabled" => Err(KmsError::new(
                "DisabledException",
                format!("{} is disabled.", arn(id)),
            )),
            PENDING_DELETION => Err(pending_deletion(id)),
            _ => Err(pending_import(id)),
        }
    }

    /// Operations the key-state table refuses on a key pending deletion,
    /// footnote [3] (or [8], the same answer, for imports).
    fn not_pending_deletion(&self, id: &str) -> Result<(), KmsError> {
        if self.pending_deletion() {
            Err(pending_deletion(id))
        } else {
            Ok(())
        }
    }

    fn require_external(&self, id: &str) -> Result<(), KmsError> {
        if self.external() {
            Ok(())
        } else {
            Err(KmsError::unsupported(format!(
                "{} origin is {} which is not valid for this operation.",
                arn(id),
                self.origin
            )))
        }
    }
}

fn pending_import(id: &str) -> KmsError {
    KmsError::new(
        "KMSInvalidStateException",
        format!("{} is pending import.", arn(id)),
    )
}

const PENDING_DELETION: &str = "PendingDeletion";

fn pending_deletion(id: &str) -> KmsError {
    KmsError::new(
        "KMSInvalidStateException",
        format!("{} is pending deletion.", arn(id)),
    )
}

/// An alias and the key it points at.
#[derive(Debug, Clone)]
struct AliasRecord {
    target: String,
    created: f64,
    updated: f64,
}

#[derive(Debug, Default)]
struct Inner {
    faithful: bool,
    keys: HashMap<String, KeyRecord>,
    /// By name, so ListAliases lists them in a stable order.
    aliases: BTreeMap<String, AliasRecord>,
    counts: BTreeMap<String, OpCounts>,
    buckets: Option<HashMap<&'static str, Bucket>>,
    /// How long every answer is held ([`KmsPeer::set_latency`]).
    latency: std::time::Duration,
}

impl Inner {
    /// The key `raw` names (key id, key ARN or alias name), its expired
    /// material deleted first in faithful mode.
    fn key_mut(&mut self, raw: &str) -> Result<(String, &mut KeyRecord), KmsError> {
        let Some(id) = resolve(self, raw) else {
            return Err(KmsError::new(
                "NotFoundException",
                format!("Key '{raw}' does not exist"),
            ));
        };
        let faithful = self.faithful;
        let Some(key) = self.keys.get_mut(&id) else {
            return Err(KmsError::internal("resolved key vanished"));
        };
        if faithful {
            key.materials.expire(now_epoch());
            key.settle_state();
        }
        Ok((id, key))
    }
}

#[derive(Clone)]
struct Peer {
    inner: Arc<Mutex<Inner>>,
    private_key: Arc<RsaPrivateKey>,
    public_key_der: Arc<Vec<u8>>,
    faithful: bool,
}

/// A running peer; stops when dropped.
pub struct KmsPeer {
    pub endpoint: String,
    inner: Arc<Mutex<Inner>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Every peer started in this run: keyhold servers the bench spawns allow
/// them as KMS endpoints (endpoint overrides are operator configuration).
pub static PEER_ENDPOINTS: Mutex<Vec<String>> = Mutex::new(Vec::new());

impl KmsPeer {
    /// Starts on a free loopback port in the benchmarks' mode (imported
    /// material is not decrypted). `quotas` enables the token buckets.
    pub async fn start(quotas: bool) -> anyhow::Result<Self> {
        Self::launch(quotas, false).await
    }

    /// Starts on a free loopback port in faithful mode (see the module
    /// documentation), without quotas.
    pub async fn start_faithful() -> anyhow::Result<Self> {
        Self::launch(false, true).await
    }

    async fn launch(quotas: bool, faithful: bool) -> anyhow::Result<Self> {
        let private = tokio::task::spawn_blocking(|| {
            rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048)
        })
        .await?
        .context("generating the peer's RSA-2048 wrapping key")?;
        let public_key_der = private
            .to_public_key()
            .to_public_key_der()
            .context("encoding the wrapping public key")?
            .as_bytes()
            .to_vec();
        let buckets = quotas.then(quota_buckets);
        let inner = Arc::new(Mutex::new(Inner {
            faithful,
            buckets,
            ..Default::default()
        }));
        let peer = Peer {
            inner: inner.clone(),
            private_key: Arc::new(private),
            public_key_der: Arc::new(public_key_der),
            faithful,
        };
        let app = axum::Router::new().fallback(handle).with_state(peer);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        let endpoint = format!("http://{addr}");
        PEER_ENDPOINTS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(endpoint.clone());
        Ok(Self {
            endpoint,
            inner,
            _stop: stop,
        })
    }

    /// Turns AWS's request quotas on (fresh buckets, each holding one
    /// second's worth, as at start-up) or off on a running peer, in either
    /// mode: a scenario may build its keys faster than CreateKey's 5/s
    /// allows, then measure under the quotas (the drift scenario does, on
    /// the faithful peer).
    pub fn set_quotas(&self, on: bool) {
        lock(&self.inner).buckets = on.then(quota_buckets);
    }

    /// Sets one operation's quota (requests per second) on a peer in quota
    /// mode, its bucket full: as if the account had it raised (or lowered)
    /// through Service Quotas. Encrypt and Decrypt share theirs.
    pub fn set_quota(&self, operation: &str, rate: f64) -> anyhow::Result<()> {
        anyhow::ensure!(rate > 0.0, "a quota is more than 0 requests per second");
        let mut inner = lock(&self.inner);
        let bucket = inner
            .buckets
            .as_mut()
            .context("the peer enforces no quotas: start it with quotas, or turn them on")?
            .get_mut(bucket_for(operation))
            .with_context(|| format!("the peer has no quota for {operation}"))?;
        *bucket = Bucket::new(rate);
        Ok(())
    }

    /// Calls per operation so far.
    pub fn counts(&self) -> BTreeMap<String, OpCounts> {
        lock(&self.inner).counts.clone()
    }

    pub fn reset_counts(&self) {
        lock(&self.inner).counts.clear();
    }

    /// The materials of the key `key` names (key id, ARN or alias), in the
    /// order they were associated, as ListKeyRotations with ALL_KEY_MATERIAL
    /// would list them, with the material itself: a test can check that
    /// what the peer holds is what keyhold wrapped.
    pub fn materials(&self, key: &str) -> Option<Vec<KeyMaterial>> {
        let mut inner = lock(&self.inner);
        let (_, record) = inner.key_mut(key).ok()?;
        Some(record.materials.list().to_vec())
    }

    /// The `KeyState` DescribeKey would answer for `key`.
    pub fn key_state(&self, key: &str) -> Option<String> {
        let mut inner = lock(&self.inner);
        let (_, record) = inner.key_mut(key).ok()?;
        Some(record.state.to_owned())
    }

    /// The tags of `key` (key id, ARN or alias), as ListResourceTags lists them.
    pub fn tags(&self, key: &str) -> Option<Vec<(String, String)>> {
        let mut inner = lock(&self.inner);
        let (_, record) = inner.key_mut(key).ok()?;
        Some(record.tags.clone())
    }

    /// The key policy of `key`, as GetKeyPolicy answers it.
    pub fn policy(&self, key: &str) -> Option<String> {
        let mut inner = lock(&self.inner);
        let (_, record) = inner.key_mut(key).ok()?;
        Some(record.policy.clone())
    }

    /// When AWS would delete `key`, while it is pending deletion
    /// (`DeletionDate`, seconds since the epoch).
    pub fn deletion_date(&self, key: &str) -> Option<f64> {
        let mut inner = lock(&self.inner);
        let (_, record) = inner.key_mut(key).ok()?;
        record.deletion_date
    }

    /// Every alias made in the peer and the key id it points at, by name.
    pub fn aliases(&self) -> Vec<(String, String)> {
        lock(&self.inner)
            .aliases
            .iter()
            .map(|(name, alias)| (name.clone(), alias.target.clone()))
            .collect()
    }

    /// Holds every answer `latency` before it is sent (zero, the default, for
    /// none): the round trip of a request to AWS KMS, which the loopback
    /// peer otherwise answers in well under a millisecond.
    pub fn set_latency(&self, latency: std::time::Duration) {
        lock(&self.inner).latency = latency;
    }

    /// Makes keys as copies of the key `template` names (its state, origin,
    /// description, policy and materials), each under the key id and with
    /// the tags given, newest last in ListKeys: a scenario seeds thousands
    /// of keys at once where CreateKey and an import each would take as
    /// long as the rotations they stand for (the drift scenario's largest
    /// group).
    pub fn copy_key(
        &self,
        template: &str,
        copies: Vec<(String, Vec<(String, String)>)>,
    ) -> anyhow::Result<()> {
        let mut inner = lock(&self.inner);
        let (_, original) = inner
            .key_mut(template)
            .map_err(|e| anyhow::anyhow!("{}: {}", e.code, e.message))?;
        let (state, origin, description, policy, materials) = (
            original.state,
            original.origin,
            original.description.clone(),
            original.policy.clone(),
            original.materials.clone(),
        );
        for (id, tags) in copies {
            if inner.keys.contains_key(&id) {
                anyhow::bail!("the peer already holds a key {id}");
            }
            let key = KeyRecord {
                state,
                origin,
                description: description.clone(),
                tags,
                policy: policy.clone(),
                created: now_epoch(),
                serial: inner.keys.len(),
                deletion_date: None,
                materials: materials.clone(),
            };
            inner.keys.insert(id, key);
        }
        Ok(())
    }
}

/// A token bucket per quota at AWS's default request quotas, each full.
fn quota_buckets() -> HashMap<&'static str, Bucket> {
    let mut buckets = HashMap::new();
    for (op, rate) in AWS_DEFAULT_QUOTAS {
        buckets
            .entry(bucket_for(op))
            .or_insert_with(|| Bucket::new(*rate));
    }
    buckets
}

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(PoisonError::into_inner)
}

fn error(code: &str, message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [
            (header::CONTENT_TYPE, "application/x-amz-json-1.1"),
            (header::HeaderName::from_static("x-amzn-errortype"), code),
        ],
        json!({"__type": code, "message": message}).to_string(),
    )
        .into_response()
}

fn ok(body: Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-amz-json-1.1")],
        body.to_string(),
    )
        .into_response()
}

fn now_epoch() -> f64 {
    now_millis() as f64 / 1000.0
}

fn now_millis() -> i64 {
    keyhold_core::clock::Clock::now(&keyhold_core::clock::SystemClock).timestamp_millis()
}

fn arn(key_id: &str) -> String {
    format!("arn:aws:kms:eu-west-1:{ACCOUNT}:key/{key_id}")
}

/// Accepts a key id, key ARN or alias name.
fn resolve(inner: &Inner, raw: &str) -> Option<String> {
    let id = if raw.starts_with("alias/") {
        inner.aliases.get(raw)?.target.clone()
    } else {
        raw.rsplit('/').next().unwrap_or(raw).to_owned()
    };
    inner.keys.contains_key(&id).then_some(id)
}

/// A string field of the request, absent when missing or not a string.
fn field<'a>(request: &'a Value, name: &str) -> Option<&'a str> {
    request[name].as_str()
}

fn metadata(id: &str, key: &KeyRecord) -> Value {
    let mut m = json!({
        "AWSAccountId": ACCOUNT,
        "KeyId": id,
        "Arn": arn(id),
        "CreationDate": key.created,
        "Enabled": key.state == "Enabled",
        "Description": key.description,
        "KeyUsage": "ENCRYPT_DECRYPT",
        "KeyState": key.state,
        "Origin": key.origin,
        "KeyManager": "CUSTOMER",
        "KeySpec": "SYMMETRIC_DEFAULT",
        "CustomerMasterKeySpec": "SYMMETRIC_DEFAULT",
        "EncryptionAlgorithms": ["SYMMETRIC_DEFAULT"],
        "MultiRegion": false,
    });
    if let Some(deletion_date) = key.deletion_date {
        m["DeletionDate"] = json!(deletion_date);
    }
    if let Some(current) = key.materials.current() {
        m["CurrentKeyMaterialId"] = json!(current.id);
        // The expiration of the current material while it is imported.
        if let Some(expiration) = current.expiration.filter(|_| key.external()) {
            m["ExpirationModel"] = json!(expiration.model());
            if let Some(valid_to) = expiration.valid_to() {
                m["ValidTo"] = json!(valid_to);
            }
        }
    }
    m
}

async fn handle(State(peer): State<Peer>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(op) = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.strip_prefix("TrentService."))
        .map(str::to_owned)
    else {
        return error("UnknownOperationException", "missing X-Amz-Target");
    };
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let latency = lock(&peer.inner).latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if !admit(&peer, &op) {
        return error("ThrottlingException", "Rate exceeded");
    }
    let answer = match op.as_str() {
        // The one operation that unwraps, which takes a while: outside the lock.
        "ImportKeyMaterial" => import::import_key_material(&peer, &request).await,
        _ => answer(&peer, &op, &request),
    };
    match answer {
        Ok(body) => ok(body),
        Err(e) => error(e.code, &e.message),
    }
}

/// Takes a token from the operation's bucket (quota mode) and counts the call.
fn admit(peer: &Peer, op: &str) -> bool {
    let mut inner = lock(&peer.inner);
    let allowed = match inner.buckets.as_mut() {
        Some(buckets) => buckets.get_mut(bucket_for(op)).is_none_or(Bucket::take),
        None => true,
    };
    let counts = inner.counts.entry(op.to_owned()).or_default();
    if allowed {
        counts.accepted += 1;
    } else {
        counts.throttled += 1;
    }
    allowed
}

/// Every operation but ImportKeyMaterial, under the lock.
fn answer(peer: &Peer, op: &str, request: &Value) -> Answer {
    let mut inner = lock(&peer.inner);
    answer_locked(peer, &mut inner, op, request)
}

fn answer_locked(peer: &Peer, inner: &mut Inner, op: &str, request: &Value) -> Answer {
    let key_field = field(request, "KeyId").unwrap_or_default();
    match op {
        "CreateKey" => create_key(peer, inner, request),
        "DescribeKey" => {
            let (id, key) = inner.key_mut(key_field)?;
            Ok(json!({"KeyMetadata": metadata(&id, key)}))
        }
        "GetParametersForImport" => import::get_parameters_for_import(peer, inner, request),
        // Allowed on a key pending deletion, whose state it leaves (see
        // `KeyRecord::settle_state`).
        "DeleteImportedKeyMaterial" => {
            let (id, key) = inner.key_mut(key_field)?;
            key.require_external(&id)?;
            let deleted = key.materials.delete(field(request, "KeyMaterialId"))?;
            key.settle_state();
            let mut body = json!({"KeyId": arn(&id)});
            if let Some(deleted) = deleted {
                body["KeyMaterialId"] = json!(deleted);
            }
            Ok(body)
        }
        "RotateKeyOnDemand" => {
            let (id, key) = inner.key_mut(key_field)?;
            key.usable(&id)?;
            let external = key.external();
            key.materials.rotate(&id, external, now_epoch())?;
            Ok(json!({"KeyId": arn(&id)}))
        }
        "ListKeyRotations" => list_key_rotations(inner, request),
        "Encrypt" => ciphertext::encrypt(inner, request),
        "Decrypt" => ciphertext::decrypt(inner, request),
        "DisableKey" => manage::disable_key(inner, request),
        "EnableKey" => manage::enable_key(inner, request),
        "ScheduleKeyDeletion" => manage::schedule_key_deletion(inner, request),
        "CancelKeyDeletion" => manage::cancel_key_deletion(inner, request),
        "GetKeyPolicy" => manage::get_key_policy(inner, request),
        "PutKeyPolicy" => manage::put_key_policy(inner, request),
        "CreateAlias" | "UpdateAlias" => manage::create_or_update_alias(inner, op, request),
        "DeleteAlias" => manage::delete_alias(inner, request),
        "ListAliases" => manage::list_aliases(inner, request),
        "ListKeys" => manage::list_keys(inner, request),
        "ListResourceTags" => manage::list_resource_tags(inner, request),
        "TagResource" => manage::tag_resource(inner, request),
        "UntagResource" => manage::untag_resource(inner, request),
        other => Err(KmsError::unsupported(format!(
            "{other} is not served by keyhold's benchmark peer"
        ))),
    }
}

fn create_key(peer: &Peer, inner: &mut Inner, request: &Value) -> Answer {
    let origin = match field(request, "Origin") {
        Some(EXTERNAL) => EXTERNAL,
        Some(AWS_KMS) => AWS_KMS,
        // AWS's default is AWS_KMS; the benchmarks' mode has always made
        // keys for import, which is all keyhold creates.
        None if peer.faithful => AWS_KMS,
        None => EXTERNAL,
        Some(other) => {
            return Err(KmsError::unsupported(format!(
                "Origin {other} is not served by keyhold's KMS peer"
            )));
        }
    };
    if peer.faithful {
        for (name, wanted) in [
            ("KeySpec", "SYMMETRIC_DEFAULT"),
            ("KeyUsage", "ENCRYPT_DECRYPT"),
        ] {
            if let Some(other) = field(request, name).filter(|v| *v != wanted) {
                return Err(KmsError::unsupported(format!(
                    "{name} {other}: keyhold's KMS peer serves symmetric encryption keys only"
                )));
            }
        }
    }
    let id = uuid::Uuid::new_v4().hyphenated().to_string();
    let tags = match request.get("Tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(tags) => manage::tags_to_add(&[], tags)?,
    };
    let policy = match field(request, "Policy") {
        Some(policy) => manage::check_policy(policy)?,
        None => manage::default_policy(),
    };
    let (state, materials) = if origin == EXTERNAL {
        ("PendingImport", Materials::default())
    } else {
        ("Enabled", Materials::generated(&id))
    };
    let key = KeyRecord {
        state,
        origin,
        description: field(request, "Description").unwrap_or_default().to_owned(),
        tags,
        policy,
        created: now_epoch(),
        serial: inner.keys.len(),
        deletion_date: None,
        materials,
    };
    let body = json!({"KeyMetadata": metadata(&id, &key)});
    inner.keys.insert(id, key);
    Ok(body)
}

/// ListKeyRotations: by default the materials on-demand rotations made
/// current (ROTATIONS_ONLY); ALL_KEY_MATERIAL adds the first material and a
/// pending one. `Limit` (1 to 1000, default 100) and `Marker` page as AWS's
/// do; the peer's markers are offsets.
fn list_key_rotations(inner: &mut Inner, request: &Value) -> Answer {
    let (id, key) = inner.key_mut(field(request, "KeyId").unwrap_or_default())?;
    let all = match field(request, "IncludeKeyMaterial") {
        None | Some("ROTATIONS_ONLY") => false,
        Some("ALL_KEY_MATERIAL") => true,
        Some(other) => {
            return Err(KmsError::validation(format!(
                "IncludeKeyMaterial {other:?} is not ALL_KEY_MATERIAL or ROTATIONS_ONLY"
            )));
        }
    };
    let external = key.external();
    let entries: Vec<Value> = key
        .materials
        .list()
        .iter()
        .filter(|m| all || m.rotation_date.is_some())
        .map(|m| rotation_entry(&id, external, m))
        .collect();
    page(request, "Rotations", entries, 100, 1000)
}

/// One page of a listing, as AWS answers it: `name` holds at most `Limit`
/// entries (1 to `max`, `default` when absent) from `Marker` on;
/// `Truncated` says whether more follow, and `NextMarker` where. The
/// peer's markers are offsets.
fn page(request: &Value, name: &str, entries: Vec<Value>, default: u64, max: u64) -> Answer {
    let limit = match request["Limit"].as_u64() {
        None if request["Limit"].is_null() => default,
        Some(limit) if (1..=max).contains(&limit) => limit,
        _ => {
            return Err(KmsError::validation(format!(
                "Limit must be between 1 and {max}"
            )));
        }
    };
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let start = match field(request, "Marker") {
        None => 0,
        Some(marker) => marker
            .parse::<usize>()
            .ok()
            .filter(|start| *start <= entries.len())
            .ok_or_else(|| KmsError::new("InvalidMarkerException", "the marker is not valid"))?,
    };
    let end = start.saturating_add(limit).min(entries.len());
    let page = entries.get(start..end).unwrap_or_default();
    let mut body = json!({name: page, "Truncated": end < entries.len()});
    if end < entries.len() {
        body["NextMarker"] = json!(end.to_string());
    }
    Ok(body)
}

/// One `RotationsListEntry`: import state, description and expiration only
/// for EXTERNAL keys; rotation date and type not for the first material nor
/// a pending one.
fn rotation_entry(key_id: &str, external: bool, material: &KeyMaterial) -> Value {
    let mut entry = json!({
        "KeyId": key_id,
        "KeyMaterialId": material.id,
        "KeyMaterialState": material.state.as_str(),
    });
    if external {
        entry["ImportState"] = json!(material.import_state.as_str());
        if let Some(description) = &material.description {
            entry["KeyMaterialDescription"] = json!(description);
        }
        if let Some(expiration) = material.expiration {
            entry["ExpirationModel"] = json!(expiration.model());
            if let Some(valid_to) = expiration.valid_to() {
                entry["ValidTo"] = json!(valid_to);
            }
        }
    }
    if let Some(date) = material.rotation_date {
        entry["RotationDate"] = json!(date);
        entry["RotationType"] = json!("ON_DEMAND");
    }
    entry
}
