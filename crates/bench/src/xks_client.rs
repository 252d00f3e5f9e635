//! A client of keyhold's External Key Store proxy as AWS KMS's proxy fleet
//! calls it: JSON bodies of AWS's *External Key Store Proxy API
//! Specification*, POSTed over keyhold's listener and signed with SigV4
//! (service `kms-xks-proxy`, signed headers `host;x-amz-date`, as the
//! specification's Appendix A describes KMS's requests) by the AWS SDK's own
//! signer, `aws-sigv4`: an implementation independent of keyhold's verifier.
//!
//! The benchmark's XKS scenario drives keyhold with it, and the CLI crate's
//! cluster test sends its load through it (both need the same signing, so it
//! lives once, here).

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use keyhold_core::clock::{Clock, SystemClock};
use serde_json::{Value, json};

/// The SigV4 service name of the XKS proxy API (specification, Appendix A).
pub const SIGV4_SERVICE: &str = "kms-xks-proxy";
/// The Region the signatures name: where KMS would call from. keyhold does
/// not tie a credential to a Region, so any would do.
pub const REGION: &str = "eu-west-1";

/// One of a store's SigV4 credentials, as keyhold showed it once at its
/// creation. No `Debug`: it holds the secret.
#[derive(Clone)]
pub struct XksCredential {
    pub access_key_id: String,
    secret: Arc<secrecy::SecretString>,
}

impl XksCredential {
    pub fn new(access_key_id: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            access_key_id: access_key_id.into(),
            secret: Arc::new(secrecy::SecretString::from(secret.into())),
        }
    }

    /// The secret, for a client of another language the benchmark hands it
    /// to (on its standard input, never on a command line).
    pub fn secret(&self) -> &secrecy::SecretString {
        &self.secret
    }
}

/// Where a store's proxy API is: the server's base URL (`https://host:port`)
/// and the store's path prefix (`/xks/<name>` by default).
#[derive(Clone, Debug)]
pub struct XksEndpoint {
    pub base: String,
    pub path_prefix: String,
}

impl XksEndpoint {
    pub fn new(base: impl Into<String>, path_prefix: impl Into<String>) -> Self {
        Self {
            base: base.into().trim_end_matches('/').to_owned(),
            path_prefix: path_prefix.into().trim_end_matches('/').to_owned(),
        }
    }

    /// `<base><prefix>/kms/xks/v1/keys/<key_id>/<operation>`.
    pub fn key_url(&self, key_id: &str, operation: &str) -> String {
        format!(
            "{}{}/kms/xks/v1/keys/{key_id}/{operation}",
            self.base, self.path_prefix
        )
    }

    /// `<base><prefix>/kms/xks/v1/health`.
    pub fn health_url(&self) -> String {
        format!("{}{}/kms/xks/v1/health", self.base, self.path_prefix)
    }
}

/// Why a call got no HTTP answer.
#[derive(Debug)]
pub enum CallError {
    /// The URL or the signing parameters were refused by the signer.
    Signing(String),
    /// No answer: refused, reset, timed out.
    Transport(reqwest::Error),
}

impl CallError {
    /// Whether the connection was never made (the node is down): a load
    /// balancer sends such a request elsewhere, nothing reached the node.
    pub fn is_refused(&self) -> bool {
        matches!(self, Self::Transport(e) if e.is_connect())
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Signing(reason) => write!(f, "signing the request: {reason}"),
            // The chain of sources says what happened to the connection.
            Self::Transport(e) => {
                write!(f, "{e}")?;
                let mut source = std::error::Error::source(e);
                while let Some(cause) = source {
                    write!(f, ": {cause}")?;
                    source = cause.source();
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for CallError {}

/// An HTTP answer: its status and its JSON body (`Value::Null` when empty or
/// not JSON).
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    /// The error name of a refusal (`errorName`), or "" on success.
    pub fn error_name(&self) -> &str {
        self.body["errorName"].as_str().unwrap_or_default()
    }
}

/// The fields of an Encrypt answer that a Decrypt sends back, as the
/// base64 strings keyhold gave (KMS keeps them in its ciphertext blob).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    pub ciphertext: String,
    pub initialization_vector: String,
    pub authentication_tag: String,
    pub ciphertext_metadata: Option<String>,
}

impl Sealed {
    /// The fields of an Encrypt answer's body; None when one is missing.
    pub fn from_answer(body: &Value) -> Option<Self> {
        let field = |name: &str| body[name].as_str().map(str::to_owned);
        Some(Self {
            ciphertext: field("ciphertext")?,
            initialization_vector: field("initializationVector")?,
            authentication_tag: field("authenticationTag")?,
            ciphertext_metadata: field("ciphertextMetadata"),
        })
    }
}

/// `requestMetadata` as KMS sends it for `kms_operation` (a KMS API name:
/// Encrypt, Decrypt, GenerateDataKey, DescribeKey, …), with a fresh request id.
pub fn request_metadata(kms_operation: &str) -> Value {
    json!({
        "awsPrincipalArn": "arn:aws:iam::111122223333:role/keyhold-bench",
        "kmsKeyArn": "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "kmsOperation": kms_operation,
        "kmsRequestId": uuid::Uuid::new_v4().to_string(),
    })
}

/// An Encrypt body: AES_GCM, the AAD when given, and a CDIV asked for
/// when `cdiv` (KMS asks for one).
pub fn encrypt_body(plaintext: &[u8], aad: Option<&[u8]>, cdiv: bool) -> Value {
    let mut body = json!({
        "requestMetadata": request_metadata("Encrypt"),
        "plaintext": BASE64.encode(plaintext),
        "encryptionAlgorithm": "AES_GCM",
    });
    if let Some(aad) = aad {
        body["additionalAuthenticatedData"] = json!(BASE64.encode(aad));
    }
    if cdiv {
        body["ciphertextDataIntegrityValueAlgorithm"] = json!("SHA_256");
    }
    body
}

/// A Decrypt body for what an Encrypt gave, with the same AAD.
pub fn decrypt_body(sealed: &Sealed, aad: Option<&[u8]>) -> Value {
    let mut body = json!({
        "requestMetadata": request_metadata("Decrypt"),
        "encryptionAlgorithm": "AES_GCM",
        "ciphertext": sealed.ciphertext,
        "initializationVector": sealed.initialization_vector,
        "authenticationTag": sealed.authentication_tag,
    });
    if let Some(aad) = aad {
        body["additionalAuthenticatedData"] = json!(BASE64.encode(aad));
    }
    if let Some(metadata) = &sealed.ciphertext_metadata {
        body["ciphertextMetadata"] = json!(metadata);
    }
    body
}

/// A GetHealthStatus body, as KMS sends it.
pub fn health_body() -> Value {
    json!({
        "requestMetadata": {
            "kmsOperation": "KmsHealthCheck",
            "kmsRequestId": uuid::Uuid::new_v4().to_string(),
        }
    })
}

/// A GetKeyMetadata body, as KMS sends it for DescribeKey.
pub fn metadata_body() -> Value {
    json!({ "requestMetadata": request_metadata("DescribeKey") })
}

/// The plaintext of a Decrypt answer; None when it has none or it is not
/// base64.
pub fn plaintext_of(body: &Value) -> Option<Vec<u8>> {
    body["plaintext"]
        .as_str()
        .and_then(|p| BASE64.decode(p).ok())
}

/// Sends signed XKS requests. Cheap to clone: connections are pooled and
/// kept alive (HTTP/1.1), as KMS's fleet keeps them.
#[derive(Clone)]
pub struct XksClient {
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
}

impl XksClient {
    /// Over `http` (which trusts the server's certificate), signing with
    /// the system clock's time.
    pub fn new(http: reqwest::Client) -> Self {
        Self {
            http,
            clock: Arc::new(SystemClock),
        }
    }

    /// POSTs `body` to `url`, signed with `credential`.
    pub async fn post(
        &self,
        url: &str,
        credential: &XksCredential,
        body: &Value,
    ) -> Result<Answer, CallError> {
        let payload = serde_json::to_vec(body).map_err(|e| CallError::Signing(e.to_string()))?;
        let mut request = self
            .http
            .post(url)
            .header("content-type", "application/json");
        for (name, value) in self.sign(url, credential, &payload)? {
            request = request.header(name, value);
        }
        let response = request
            .body(payload)
            .send()
            .await
            .map_err(CallError::Transport)?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(CallError::Transport)?;
        Ok(Answer {
            status,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        })
    }

    /// The headers SigV4 adds (`x-amz-date`, `authorization`) for a POST of
    /// `payload` to `url`. Only `host` is given to the signer besides the
    /// date it adds, so the signed headers are `host;x-amz-date`, as KMS's.
    fn sign(
        &self,
        url: &str,
        credential: &XksCredential,
        payload: &[u8],
    ) -> Result<Vec<(String, String)>, CallError> {
        use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
        use secrecy::ExposeSecret as _;

        let parsed = reqwest::Url::parse(url).map_err(|e| CallError::Signing(e.to_string()))?;
        let host = match (parsed.host_str(), parsed.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            (None, _) => return Err(CallError::Signing(format!("{url} has no host"))),
        };
        // The path as sent (already percent-encoded by the URL parser).
        let path = parsed.path().to_owned();
        let identity = aws_credential_types::Credentials::new(
            credential.access_key_id.clone(),
            credential.secret.expose_secret().to_owned(),
            None,
            None,
            "keyhold-xks-client",
        )
        .into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(REGION)
            .name(SIGV4_SERVICE)
            .time(std::time::SystemTime::from(self.clock.now()))
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| CallError::Signing(e.to_string()))?
            .into();
        let headers = [("host", host.as_str())];
        let signable = SignableRequest::new(
            "POST",
            path,
            headers.into_iter(),
            SignableBody::Bytes(payload),
        )
        .map_err(|e| CallError::Signing(e.to_string()))?;
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|e| CallError::Signing(e.to_string()))?
            .into_parts();
        Ok(instructions
            .headers()
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect())
    }
}
