//! One XKS request, from its path to its answer.
//!
//! The order of the checks decides which error a request gets when several
//! apply, and what a caller learns before it is authenticated:
//! 1. the method (POST only; anything else 405);
//! 2. the store, by the path's prefix (`InvalidUriPathException`);
//! 3. a path under the store that is none of the API's
//!    (`InvalidUriPathException`);
//! 4. the body, read up to keyhold's bound;
//! 5. SigV4 with one of the store's credentials, at the Clock port's time
//!    (`AuthenticationFailedException`; audited);
//! 6. the store's mTLS rule against the connection's certificate
//!    (`AuthenticationFailedException`; audited);
//! 7. the store's quota on this node (`ThrottlingException`): after
//!    authentication, so requests nobody signed cannot use up KMS's quota;
//! 8. the body's fields (`ValidationException`, `UnsupportedOperationException`);
//! 9. the key, within this store only (`KeyNotFoundException`), enabled
//!    (`InvalidStateException`), its usage (`InvalidKeyUsageException`),
//!    its authorization rule (`AccessDeniedException`; audited);
//! 10. the keystore, on the blocking pool, no more calls at once than it
//!     serves best (`Keystore::calls_at_once`; the others wait their turn),
//!     by a deadline ([`KEYSTORE_DEADLINE`] after arrival, the wait
//!     included: `DependencyTimeoutException`; a broken seal on Decrypt
//!     `InvalidCiphertextException`; any other failure `InternalException`).
//!
//! Every call, answered or refused, is counted and logged once (`finish`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keyhold_core::KeystoreError;
use keyhold_core::clock::format_timestamp;
use keyhold_core::ports::{GcmCiphertext, Keystore};
use keyhold_core::xks::{XksKey, XksOperation};
use keyhold_xks::decode::MAX_REQUEST_BODY_LEN;
use keyhold_xks::sigv4::{Authorization, SignedRequest};
use keyhold_xks::wire::{
    DecryptResponse, EkmFleetDetail, EncryptResponse, HealthResponse, HealthStatus,
    MetadataResponse, RequestMetadata,
};
use keyhold_xks::{Route, XksError};
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

use super::denials::Refusal;
use super::digest::CountedCall;
use super::directory::ServedStore;
use super::health::EkmStatus;
use super::mtls::ClientIdentity;
use super::usage::UsageLine;
use super::{XksProxy, fault};

/// How long after a request's arrival the keystore may take: KMS gives up
/// at 250 ms, and an answer it never reads is wasted.
pub const KEYSTORE_DEADLINE: Duration = Duration::from_millis(200);
/// `xksProxyVendor` and `ekmVendor`'s fallback.
pub const VENDOR: &str = "keyhold";

/// A refusal: the error KMS gets, and what the operator's logs get besides.
struct Refused {
    error: XksError,
    /// For the usage log and the server log; never sent to the caller.
    log_detail: Option<String>,
}

impl From<XksError> for Refused {
    fn from(error: XksError) -> Self {
        Self {
            error,
            log_detail: None,
        }
    }
}

impl Refused {
    fn with_detail(error: XksError, detail: impl Into<String>) -> Self {
        Self {
            error,
            log_detail: Some(detail.into()),
        }
    }
}

/// What is known of a call so far, for its line, counters and audit entry.
struct Call<'a> {
    path: &'a str,
    operation: &'static str,
    /// The key id the path names, as sent (the route bounds it).
    key_id: Option<&'a str>,
    key_found: bool,
    store: Option<Arc<ServedStore>>,
    access_key_id: Option<String>,
    metadata: Option<RequestMetadata>,
    /// `kmsRequestId` and `kmsOperation` of a health request.
    health: Option<(String, String)>,
}

impl Call<'_> {
    fn store_name(&self) -> Option<&str> {
        self.store.as_ref().map(|served| served.store.name.as_str())
    }

    fn kms_request_id(&self) -> Option<&str> {
        self.metadata
            .as_ref()
            .map(|m| m.kms_request_id.as_str())
            .or(self.health.as_ref().map(|(id, _)| id.as_str()))
    }

    fn kms_operation(&self) -> Option<&str> {
        self.metadata
            .as_ref()
            .map(|m| m.kms_operation.as_str())
            .or(self.health.as_ref().map(|(_, op)| op.as_str()))
    }

    fn principal(&self) -> Option<&str> {
        self.metadata.as_ref().map(|m| m.aws_principal_arn.as_str())
    }
}

fn operation_name(route: &Route<'_>) -> &'static str {
    match route {
        Route::Health { .. } => "health",
        Route::Key { operation, .. } => operation.as_str(),
        Route::Invalid { .. } => "unknown",
    }
}

/// Serves one request under `/kms/xks/v1`.
pub async fn serve(proxy: &XksProxy, request: axum::extract::Request) -> Response {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    let Some(route) = keyhold_xks::route(path) else {
        // The router sends only XKS paths here.
        return error_response(&XksError::InvalidUriPath);
    };
    let mut call = Call {
        path,
        operation: operation_name(&route),
        key_id: match route {
            Route::Key { key_id, .. } => Some(key_id),
            Route::Health { .. } | Route::Invalid { .. } => None,
        },
        key_found: false,
        store: None,
        access_key_id: None,
        metadata: None,
        health: None,
    };
    let answered = handle(proxy, &parts, body, route, &mut call, started).await;
    let (response, outcome, detail) = match answered {
        Ok(response) => (response, "ok", None),
        Err(refused) => {
            let detail = refused.log_detail.or_else(|| match refused.error {
                XksError::InvalidCiphertext
                | XksError::InvalidKeyUsage
                | XksError::KeyNotFound
                | XksError::InvalidUriPath
                | XksError::Throttling
                | XksError::DependencyTimeout
                | XksError::Internal => None,
                XksError::Validation(ref d)
                | XksError::InvalidState(ref d)
                | XksError::AuthenticationFailed(ref d)
                | XksError::AccessDenied(ref d)
                | XksError::UnsupportedOperation(ref d) => Some(d.clone()),
            });
            let mut response = error_response(&refused.error);
            if parts.method != Method::POST {
                *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
                response
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("POST"));
            }
            (response, refused.error.name(), detail)
        }
    };
    proxy.finish(&call, outcome, detail.as_deref(), started.elapsed());
    response
}

async fn handle(
    proxy: &XksProxy,
    parts: &Parts,
    body: Body,
    route: Route<'_>,
    call: &mut Call<'_>,
    started: Instant,
) -> Result<Response, Refused> {
    if parts.method != Method::POST {
        // 405 (the specification's rule for GET); the body says why.
        return Err(XksError::Validation(format!(
            "XKS API requests are POST requests, not {}",
            parts.method
        ))
        .into());
    }
    let directory = proxy.directory.load();
    let served = directory
        .store(route.prefix())
        .ok_or(XksError::InvalidUriPath)?
        .clone();
    call.store = Some(served.clone());
    if matches!(route, Route::Invalid { .. }) {
        return Err(XksError::InvalidUriPath.into());
    }
    let body = read_body(parts, body).await?;
    authenticate(proxy, parts, &body, &served, call)?;
    // Only authenticated requests spend the store's quota: a flood of
    // unsigned requests must not throttle KMS's own.
    if !served.quota.try_take(Instant::now()) {
        return Err(XksError::Throttling.into());
    }
    match route {
        Route::Health { .. } => {
            // GetHealthStatus never answers ValidationException (the
            // specification's table): its metadata is logged when it reads.
            call.health = keyhold_xks::parse_health(&body)
                .ok()
                .map(|m| (m.kms_request_id, m.kms_operation));
            health(proxy, started).await
        }
        Route::Key {
            key_id, operation, ..
        } => {
            let response = match operation {
                XksOperation::Metadata => {
                    let metadata = keyhold_xks::parse_key_metadata(&body)?;
                    call.metadata = Some(metadata);
                    let key = admit(proxy, &served, key_id, operation, call)?;
                    json_response(&MetadataResponse::new(key.usage, key.enabled))
                }
                XksOperation::Encrypt => {
                    let input = keyhold_xks::parse_encrypt(&body)?;
                    call.metadata = Some(input.metadata().clone());
                    let key = admit(proxy, &served, key_id, operation, call)?.clone();
                    encrypt(proxy.keystore_call(started), key, input).await?
                }
                XksOperation::Decrypt => {
                    let input = keyhold_xks::parse_decrypt(&body)?;
                    call.metadata = Some(input.metadata().clone());
                    let key = admit(proxy, &served, key_id, operation, call)?.clone();
                    decrypt(proxy.keystore_call(started), key, input).await?
                }
            };
            Ok(response)
        }
        Route::Invalid { .. } => Err(XksError::InvalidUriPath.into()),
    }
}

/// The body, up to keyhold's bound, into memory wiped when dropped: an
/// Encrypt's body holds the plaintext (in Base64). Sized once from
/// `Content-Length` (bounded), so growing it leaves no copy behind; hyper's
/// own read buffers are reused for the connection's next bytes.
async fn read_body(parts: &Parts, body: Body) -> Result<Zeroizing<Vec<u8>>, Refused> {
    use futures_util::StreamExt as _;
    let too_large = || {
        XksError::UnsupportedOperation(format!(
            "the request body is larger than keyhold's {MAX_REQUEST_BODY_LEN} bytes"
        ))
    };
    let announced = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    if announced > MAX_REQUEST_BODY_LEN {
        return Err(too_large().into());
    }
    let mut out = Zeroizing::new(Vec::with_capacity(announced));
    let mut chunks = body.into_data_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|error| {
            Refused::with_detail(
                XksError::Validation("the request body could not be read".into()),
                error.to_string(),
            )
        })?;
        if out.len() + chunk.len() > MAX_REQUEST_BODY_LEN {
            return Err(too_large().into());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// SigV4 under one of the store's credentials, then the store's mTLS rule.
fn authenticate(
    proxy: &XksProxy,
    parts: &Parts,
    body: &[u8],
    served: &ServedStore,
    call: &mut Call<'_>,
) -> Result<(), Refused> {
    let signed = (|| {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| {
                XksError::AuthenticationFailed("the Authorization header is missing".into())
            })?
            .to_str()
            .map_err(|_| {
                XksError::AuthenticationFailed("the Authorization header is not text".into())
            })?;
        let authorization = Authorization::parse(header)?;
        call.access_key_id = Some(authorization.access_key_id().to_owned());
        let credential = served
            .credential(authorization.access_key_id())
            .ok_or_else(|| {
                XksError::AuthenticationFailed(
                    "the access key id is not one of this external key store's credentials".into(),
                )
            })?;
        let headers: Vec<(&str, &[u8])> = parts
            .headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_bytes()))
            .collect();
        let request = SignedRequest {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query().unwrap_or(""),
            headers: &headers,
            body,
        };
        keyhold_xks::sigv4::verify(
            &authorization,
            &request,
            credential.secret.expose().as_bytes(),
            proxy.keyhold.now(),
        )
    })();
    if let Err(error) = signed {
        proxy.refused(call, &error);
        return Err(error.into());
    }
    if let Some(rule) = served.mtls {
        let identity = parts.extensions.get::<Arc<ClientIdentity>>();
        if !identity.is_some_and(|identity| identity.satisfies(rule)) {
            let seen = match identity {
                None => "no client certificate".to_owned(),
                Some(identity) => format!(
                    "a client certificate (CN {}) that does not match",
                    identity.common_name.as_deref().unwrap_or("none")
                ),
            };
            let error = XksError::AuthenticationFailed(format!(
                "this external key store requires mutual TLS with its configured subject and CA; the connection presented {seen}"
            ));
            proxy.refused(call, &error);
            return Err(error.into());
        }
    }
    Ok(())
}

/// The key the path names, if this request may use it.
fn admit<'s>(
    proxy: &XksProxy,
    served: &'s ServedStore,
    key_id: &str,
    operation: XksOperation,
    call: &mut Call<'_>,
) -> Result<&'s XksKey, Refused> {
    let key = served.key(key_id).ok_or(XksError::KeyNotFound)?;
    call.key_found = true;
    // GetKeyMetadata answers a disabled key's status (DISABLED) instead.
    if operation != XksOperation::Metadata && !key.enabled {
        return Err(
            XksError::InvalidState("the external key is disabled in keyhold".into()).into(),
        );
    }
    if !key.usage.allows(operation) {
        return Err(Refused::with_detail(
            XksError::InvalidKeyUsage,
            format!("the key's usage is {}", key.usage.as_str()),
        ));
    }
    let Some(metadata) = &call.metadata else {
        return Err(Refused::with_detail(
            XksError::Internal,
            "no request metadata",
        ));
    };
    if let Err(denial) = key.rule.permits(&metadata.context()) {
        let error = XksError::AccessDenied(denial.to_string());
        proxy.refused(call, &error);
        return Err(error.into());
    }
    Ok(key)
}

async fn health(proxy: &XksProxy, started: Instant) -> Result<Response, Refused> {
    let deadline = tokio::time::Instant::from_std(started + KEYSTORE_DEADLINE);
    let Some(answer) = proxy.health.answer(Instant::now(), deadline).await else {
        return Err(Refused::with_detail(
            XksError::Internal,
            "no deep health check result younger than a minute",
        ));
    };
    let model = answer.keystore.model.clone();
    Ok(json_response(&HealthResponse {
        xks_proxy_fleet_size: answer.fleet_size,
        xks_proxy_vendor: VENDOR.to_owned(),
        xks_proxy_model: format!("keyhold {}", env!("CARGO_PKG_VERSION")),
        ekm_vendor: ekm_vendor(&model),
        ekm_fleet_details: vec![EkmFleetDetail {
            id: answer.keystore.id,
            model,
            health_status: match answer.status {
                EkmStatus::Active => HealthStatus::Active,
                EkmStatus::Unavailable => HealthStatus::Unavailable,
            },
        }],
    }))
}

/// The key manager's vendor: the first word of its model (`SoftHSM`,
/// `keyhold` for the software keystore).
fn ekm_vendor(model: &str) -> String {
    model.split_whitespace().next().unwrap_or(VENDOR).to_owned()
}

async fn encrypt(
    call: KeystoreCall,
    key: XksKey,
    input: keyhold_xks::EncryptInput,
) -> Result<Response, Refused> {
    let (sealed, cdiv) = call
        .run("encrypt", move |keystore| {
            let aad = input.keystore_aad();
            if !input.cdiv_requested() {
                let sealed = keystore.xks_encrypt(key.id, &key.handle, input.plaintext(), &aad)?;
                return Ok((sealed, None));
            }
            // Appendix C: the value from the keystore's output as it is, once a
            // decryption of that output has proved it opens.
            let sealed =
                keystore.xks_encrypt_proven(key.id, &key.handle, input.plaintext(), &aad)?;
            let value = keyhold_xks::cdiv(
                input.aad(),
                &[],
                &sealed.iv,
                &sealed.ciphertext,
                &sealed.tag,
            );
            Ok((sealed, Some(value)))
        })
        .await?;
    Ok(json_response(&EncryptResponse::new(&sealed, cdiv.as_ref())))
}

async fn decrypt(
    call: KeystoreCall,
    key: XksKey,
    input: keyhold_xks::DecryptInput,
) -> Result<Response, Refused> {
    let plaintext: Zeroizing<Vec<u8>> = call
        .run("decrypt", move |keystore| {
            let sealed: &GcmCiphertext = input.sealed();
            keystore.xks_decrypt(key.id, &key.handle, sealed, &input.keystore_aad())
        })
        .await?;
    let body = DecryptResponse::new(&plaintext).to_json();
    // The response buffer belongs to hyper once handed over; this copy is
    // the one that leaves keyhold's wiped memory.
    Ok(json_bytes(body.to_vec()))
}

impl XksProxy {
    /// A call to the keystore for a request that arrived at `started`.
    fn keystore_call(&self, started: Instant) -> KeystoreCall {
        KeystoreCall {
            keystore: self.keyhold.keystore().clone(),
            calls: self.keystore_calls.clone(),
            deadline: tokio::time::Instant::from_std(started + KEYSTORE_DEADLINE),
        }
    }
}

/// A keystore call of a request: on the blocking pool (keystore calls
/// block), within the keystore's calls at once, by the request's deadline.
struct KeystoreCall {
    keystore: Arc<dyn Keystore>,
    /// See `XksProxy::keystore_calls`.
    calls: Option<Arc<Semaphore>>,
    deadline: tokio::time::Instant,
}

impl KeystoreCall {
    /// Runs `work` once one of the keystore's calls at once is free,
    /// answering `DependencyTimeoutException` at the deadline, be it spent
    /// waiting or in the keystore. A call past its deadline finishes in the
    /// background, holding its place among the calls at once until it
    /// ends; its result is dropped.
    async fn run<T: Send + 'static>(
        self,
        operation: &'static str,
        work: impl FnOnce(&dyn Keystore) -> Result<T, KeystoreError> + Send + 'static,
    ) -> Result<T, Refused> {
        let Self {
            keystore,
            calls,
            deadline,
        } = self;
        let call = async move {
            let place = match calls {
                // Never closed: the proxy holds it for the process's life.
                Some(calls) => calls.acquire_owned().await.ok(),
                None => None,
            };
            tokio::task::spawn_blocking(move || {
                let _place = place;
                fault::before_key_operation()?;
                work(keystore.as_ref())
            })
            .await
        };
        match tokio::time::timeout_at(deadline, call).await {
            Err(_) => Err(Refused::with_detail(
                XksError::DependencyTimeout,
                format!(
                    "the keystore did not answer within {} ms",
                    KEYSTORE_DEADLINE.as_millis()
                ),
            )),
            Ok(Err(joined)) => Err(Refused::with_detail(
                XksError::Internal,
                format!("the keystore call ended abnormally: {joined}"),
            )),
            Ok(Ok(Err(error))) => Err(keystore_refusal(error, operation)),
            Ok(Ok(Ok(value))) => Ok(value),
        }
    }
}

/// The XKS error for a keystore failure; its text goes to the logs only.
fn keystore_refusal(error: KeystoreError, operation: &str) -> Refused {
    let detail = error.to_string();
    let xks = match error {
        KeystoreError::SealBroken if operation == "decrypt" => XksError::InvalidCiphertext,
        KeystoreError::KeyNotFound(_) => XksError::KeyNotFound,
        KeystoreError::Unsupported(_) => {
            XksError::UnsupportedOperation("the key manager does not support this operation".into())
        }
        KeystoreError::SealBroken | KeystoreError::Unavailable(_) | KeystoreError::Internal(_) => {
            XksError::Internal
        }
    };
    if matches!(xks, XksError::Internal | XksError::KeyNotFound) {
        tracing::error!(operation, error = %detail, "an XKS keystore call failed");
    }
    Refused::with_detail(xks, detail)
}

fn json_response<T: serde::Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => json_bytes(body),
        Err(error) => {
            tracing::error!(%error, "an XKS answer cannot be encoded");
            error_response(&XksError::Internal)
        }
    }
}

fn json_bytes(body: Vec<u8>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// The specification's error answer: its status, `errorName` and message.
pub fn error_response(error: &XksError) -> Response {
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_vec(&error.body()).unwrap_or_default();
    let mut response = json_bytes(body);
    *response.status_mut() = status;
    response
}

impl XksProxy {
    /// Audits an authentication or authorization refusal (rate-limited).
    fn refused(&self, call: &Call<'_>, error: &XksError) {
        let reason = error.to_string();
        self.denials.refused(
            &self.keyhold,
            self.audit_fallback.clone(),
            &self.counts,
            &Refusal {
                subject: call.key_id.unwrap_or(call.path),
                store: call.store_name().unwrap_or("unknown"),
                access_key_id: call.access_key_id.as_deref(),
                kms_request_id: call.kms_request_id(),
                principal: call.principal(),
                error_name: error.name(),
                reason: &reason,
            },
        );
    }

    /// Counts and logs a finished call.
    fn finish(&self, call: &Call<'_>, outcome: &str, detail: Option<&str>, took: Duration) {
        let store = call.store_name().unwrap_or("unknown");
        let key = match (call.key_id, call.key_found) {
            (Some(id), true) => id,
            (Some(_), false) => "unknown",
            (None, _) => "-",
        };
        self.metrics.xks.call(
            store,
            key,
            call.operation,
            outcome,
            call.principal(),
            took.as_secs_f64(),
        );
        self.counts.call(&CountedCall {
            store,
            key,
            operation: call.operation,
            outcome,
            principal: call.principal(),
        });
        if let Some(usage) = &self.usage {
            let metadata = call.metadata.as_ref();
            usage.record(&UsageLine {
                time: format_timestamp(&self.keyhold.now()),
                node: self.node.as_str(),
                store: call.store_name(),
                key: call.key_id,
                operation: call.operation,
                kms_operation: call.kms_operation(),
                kms_request_id: call.kms_request_id(),
                aws_principal_arn: call.principal(),
                kms_key_arn: metadata.and_then(|m| m.kms_key_arn.as_deref()),
                aws_source_vpc: metadata.and_then(|m| m.aws_source_vpc.as_deref()),
                aws_source_vpce: metadata.and_then(|m| m.aws_source_vpce.as_deref()),
                kms_via_service: metadata.and_then(|m| m.kms_via_service.as_deref()),
                access_key_id: call.access_key_id.as_deref(),
                outcome,
                detail,
                latency_us: u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use keyhold_core::testing::FakeKeystore;

    use super::*;

    /// A call of a request arriving now, within `calls` at once.
    fn call(calls: &Arc<Semaphore>) -> KeystoreCall {
        KeystoreCall {
            keystore: Arc::new(FakeKeystore::new()),
            calls: Some(calls.clone()),
            deadline: tokio::time::Instant::from_std(Instant::now() + KEYSTORE_DEADLINE),
        }
    }

    /// 16 requests at once with a keystore that serves 2 calls at once:
    /// never more than 2 in it, and every request answered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sixteen_requests_at_once_keep_to_the_keystores_calls_at_once() {
        let calls = Arc::new(Semaphore::new(2));
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let requests: Vec<_> = (0..16)
            .map(|_| {
                let (inside, most) = (inside.clone(), most.clone());
                tokio::spawn(call(&calls).run("encrypt", move |_| {
                    let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    // Long enough for the others to arrive meanwhile.
                    std::thread::sleep(Duration::from_millis(5));
                    inside.fetch_sub(1, Ordering::SeqCst);
                    Ok(())
                }))
            })
            .collect();
        for request in requests {
            assert!(request.await.unwrap().is_ok());
        }
        assert_eq!(most.load(Ordering::SeqCst), 2);
    }

    /// A request that waits its turn past its deadline is answered
    /// `DependencyTimeoutException` and never reaches the keystore; the
    /// call ahead of it keeps its place until it ends.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wait_for_a_turn_counts_against_the_deadline() {
        let calls = Arc::new(Semaphore::new(1));
        let slow = tokio::spawn(call(&calls).run("encrypt", |_| {
            std::thread::sleep(KEYSTORE_DEADLINE + Duration::from_millis(50));
            Ok(())
        }));
        // The slow call holds the one place.
        while calls.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        let reached = Arc::new(AtomicUsize::new(0));
        let counted = reached.clone();
        let refused = call(&calls)
            .run("encrypt", move |_| {
                counted.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
            .await
            .err()
            .unwrap();
        assert_eq!(refused.error.name(), "DependencyTimeoutException");
        assert_eq!(reached.load(Ordering::SeqCst), 0);
        assert_eq!(
            slow.await.unwrap().err().unwrap().error.name(),
            "DependencyTimeoutException"
        );
        // Its work over, the place is free again.
        while calls.available_permits() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[test]
    fn keystore_failures_map_to_the_specifications_errors() {
        let name = |e: KeystoreError, op: &str| keystore_refusal(e, op).error.name();
        assert_eq!(
            name(KeystoreError::SealBroken, "decrypt"),
            "InvalidCiphertextException"
        );
        assert_eq!(
            name(KeystoreError::SealBroken, "encrypt"),
            "InternalException"
        );
        assert_eq!(
            name(KeystoreError::KeyNotFound("k".into()), "decrypt"),
            "KeyNotFoundException"
        );
        assert_eq!(
            name(KeystoreError::Unsupported("x".into()), "encrypt"),
            "UnsupportedOperationException"
        );
        assert_eq!(
            name(KeystoreError::Unavailable("token gone".into()), "encrypt"),
            "InternalException"
        );
        // The keystore's own words reach the log, never the caller.
        let refused = keystore_refusal(
            KeystoreError::Internal("CKR_DEVICE_ERROR".into()),
            "decrypt",
        );
        assert!(!refused.error.body().error_message.contains("CKR"));
        assert!(refused.log_detail.unwrap().contains("CKR_DEVICE_ERROR"));
    }

    #[test]
    fn errors_answer_with_the_table_status_and_json_body() {
        let response = error_response(&XksError::Throttling);
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(ekm_vendor("SoftHSM 2.6 (PKCS#11)"), "SoftHSM");
        assert_eq!(ekm_vendor(""), VENDOR);
    }
}
