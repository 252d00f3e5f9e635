//! A KMS peer on loopback that speaks AWS KMS's wire protocol (JSON 1.1,
//! `X-Amz-Target: TrentService.<Operation>`, errors as
//! `{"__type": ..., "message": ...}` with status 400), so keyhold's real AWS
//! adapter talks to it through a credential whose endpoint points here.
//!
//! Two uses, and only these two (everything else runs against LocalStack):
//! - zero latency, to measure keyhold alone (engine overhead): it answers at
//!   once from memory, with one RSA-2048 wrapping key made at start-up;
//! - quota-enforcing: a token bucket per operation at AWS's default request
//!   quotas, answering `ThrottlingException` when a bucket is empty, and
//!   counting every call and every throttled call.
//!
//! It answers itself rather than forwarding to LocalStack: LocalStack's own
//! latency (a fresh RSA key pair per GetParametersForImport) would add to
//! the wall time and make "minimum set by the quotas" unreachable for
//! reasons that have nothing to do with the quotas or keyhold.
//! Imported material is not decrypted: what KMS does with it is not keyhold's
//! cost.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rsa::pkcs8::EncodePublicKey;
use serde_json::{Value, json};

const ACCOUNT: &str = "111122223333";

/// AWS KMS's default request quotas (requests per second, per account and
/// Region) for the operations keyhold sends; AWS KMS Developer Guide,
/// *Request quotas*, table "Request quotas for each AWS KMS API operation".
pub const AWS_DEFAULT_QUOTAS: &[(&str, f64)] = &[
    ("CreateKey", 5.0),
    ("DescribeKey", 2000.0),
    ("GetParametersForImport", 1.0),
    ("ImportKeyMaterial", 15.0),
    ("DeleteImportedKeyMaterial", 15.0),
    ("CreateAlias", 5.0),
    ("UpdateAlias", 5.0),
    ("DisableKey", 5.0),
    ("PutKeyPolicy", 15.0),
    ("ListKeys", 500.0),
    ("ListResourceTags", 2000.0),
];

/// A bucket holding up to one second's quota, refilled continuously: AWS
/// counts requests per second, so a full second's worth at once is allowed.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: f64) -> Self {
        Self {
            rate,
            tokens: rate.max(1.0),
            last: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate.max(1.0));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct OpCounts {
    pub accepted: u64,
    pub throttled: u64,
}

#[derive(Debug)]
struct KeyRecord {
    state: &'static str,
    description: String,
    tags: Vec<(String, String)>,
    created: f64,
    valid_to: Option<f64>,
}

#[derive(Debug, Default)]
struct Inner {
    keys: HashMap<String, KeyRecord>,
    aliases: HashMap<String, String>,
    counts: BTreeMap<String, OpCounts>,
    buckets: Option<HashMap<String, Bucket>>,
}

#[derive(Clone)]
struct Peer {
    inner: Arc<Mutex<Inner>>,
    public_key_der: Arc<Vec<u8>>,
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
    /// Starts on a free loopback port. `quotas` enables the token buckets.
    pub async fn start(quotas: bool) -> anyhow::Result<Self> {
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
        let buckets = quotas.then(|| {
            AWS_DEFAULT_QUOTAS
                .iter()
                .map(|(op, rate)| ((*op).to_owned(), Bucket::new(*rate)))
                .collect()
        });
        let inner = Arc::new(Mutex::new(Inner {
            buckets,
            ..Default::default()
        }));
        let peer = Peer {
            inner: inner.clone(),
            public_key_der: Arc::new(public_key_der),
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
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(endpoint.clone());
        Ok(Self {
            endpoint,
            inner,
            _stop: stop,
        })
    }

    /// Calls per operation so far.
    pub fn counts(&self) -> BTreeMap<String, OpCounts> {
        lock(&self.inner).counts.clone()
    }

    pub fn reset_counts(&self) {
        lock(&self.inner).counts.clear();
    }
}

fn lock(inner: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
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
    let now = keyhold_core::clock::Clock::now(&keyhold_core::clock::SystemClock);
    now.timestamp_millis() as f64 / 1000.0
}

fn arn(key_id: &str) -> String {
    format!("arn:aws:kms:eu-west-1:{ACCOUNT}:key/{key_id}")
}

/// Accepts a key id, key ARN or alias name.
fn resolve(inner: &Inner, raw: &str) -> Option<String> {
    let id = if raw.starts_with("alias/") {
        inner.aliases.get(raw)?.clone()
    } else {
        raw.rsplit('/').next().unwrap_or(raw).to_owned()
    };
    inner.keys.contains_key(&id).then_some(id)
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
        "Origin": "EXTERNAL",
        "KeyManager": "CUSTOMER",
        "KeySpec": "SYMMETRIC_DEFAULT",
        "CustomerMasterKeySpec": "SYMMETRIC_DEFAULT",
        "EncryptionAlgorithms": ["SYMMETRIC_DEFAULT"],
        "MultiRegion": false,
    });
    if let Some(valid_to) = key.valid_to {
        m["ValidTo"] = json!(valid_to);
        m["ExpirationModel"] = json!("KEY_MATERIAL_EXPIRES");
    } else if key.state != "PendingImport" {
        m["ExpirationModel"] = json!("KEY_MATERIAL_DOES_NOT_EXPIRE");
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
    let str_field = |name: &str| request[name].as_str().unwrap_or_default().to_owned();
    let mut inner = lock(&peer.inner);
    let allowed = match inner.buckets.as_mut() {
        Some(buckets) => buckets.get_mut(&op).is_none_or(Bucket::take),
        None => true,
    };
    let counts = inner.counts.entry(op.clone()).or_default();
    if !allowed {
        counts.throttled += 1;
        return error("ThrottlingException", "Rate exceeded");
    }
    counts.accepted += 1;
    match op.as_str() {
        "CreateKey" => {
            let id = uuid::Uuid::new_v4().hyphenated().to_string();
            let tags = request["Tags"]
                .as_array()
                .map(|tags| {
                    tags.iter()
                        .map(|t| {
                            (
                                t["TagKey"].as_str().unwrap_or_default().to_owned(),
                                t["TagValue"].as_str().unwrap_or_default().to_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let key = KeyRecord {
                state: "PendingImport",
                description: str_field("Description"),
                tags,
                created: now_epoch(),
                valid_to: None,
            };
            let body = json!({"KeyMetadata": metadata(&id, &key)});
            inner.keys.insert(id, key);
            ok(body)
        }
        "DescribeKey" => match resolve(&inner, &str_field("KeyId")) {
            Some(id) => ok(json!({"KeyMetadata": metadata(&id, &inner.keys[&id])})),
            None => error("NotFoundException", "key not found"),
        },
        "GetParametersForImport" => match resolve(&inner, &str_field("KeyId")) {
            Some(id) => ok(json!({
                "KeyId": arn(&id),
                "ImportToken": B64.encode(uuid::Uuid::new_v4().as_bytes()),
                "PublicKey": B64.encode(peer.public_key_der.as_slice()),
                "ParametersValidTo": now_epoch() + 86_400.0,
            })),
            None => error("NotFoundException", "key not found"),
        },
        "ImportKeyMaterial" => {
            let valid_to = request["ValidTo"].as_f64();
            match resolve(&inner, &str_field("KeyId")).and_then(|id| inner.keys.get_mut(&id)) {
                Some(key) => {
                    key.state = "Enabled";
                    key.valid_to = valid_to;
                    ok(json!({}))
                }
                None => error("NotFoundException", "key not found"),
            }
        }
        "DeleteImportedKeyMaterial" => {
            match resolve(&inner, &str_field("KeyId")).and_then(|id| inner.keys.get_mut(&id)) {
                Some(key) => {
                    key.state = "PendingImport";
                    key.valid_to = None;
                    ok(json!({}))
                }
                None => error("NotFoundException", "key not found"),
            }
        }
        "DisableKey" => {
            match resolve(&inner, &str_field("KeyId")).and_then(|id| inner.keys.get_mut(&id)) {
                Some(key) => {
                    key.state = "Disabled";
                    ok(json!({}))
                }
                None => error("NotFoundException", "key not found"),
            }
        }
        "PutKeyPolicy" => match resolve(&inner, &str_field("KeyId")) {
            Some(_) => ok(json!({})),
            None => error("NotFoundException", "key not found"),
        },
        "CreateAlias" | "UpdateAlias" => {
            let alias = str_field("AliasName");
            let Some(target) = resolve(&inner, &str_field("TargetKeyId")) else {
                return error("NotFoundException", "target key not found");
            };
            let exists = inner.aliases.contains_key(&alias);
            if op == "CreateAlias" && exists {
                return error("AlreadyExistsException", "alias already exists");
            }
            if op == "UpdateAlias" && !exists {
                return error("NotFoundException", "alias not found");
            }
            inner.aliases.insert(alias, target);
            ok(json!({}))
        }
        "ListKeys" => {
            let keys: Vec<Value> = inner
                .keys
                .keys()
                .map(|id| json!({"KeyId": id, "KeyArn": arn(id)}))
                .collect();
            ok(json!({"Keys": keys, "Truncated": false}))
        }
        "ListResourceTags" => match resolve(&inner, &str_field("KeyId")) {
            Some(id) => {
                let tags: Vec<Value> = inner.keys[&id]
                    .tags
                    .iter()
                    .map(|(k, v)| json!({"TagKey": k, "TagValue": v}))
                    .collect();
                ok(json!({"Tags": tags, "Truncated": false}))
            }
            None => error("NotFoundException", "key not found"),
        },
        other => error(
            "UnsupportedOperationException",
            &format!("{other} is not served by keyhold's benchmark peer"),
        ),
    }
}
