//! How keyhold's AWS KMS clients behave: the same for every credential,
//! except the request quotas keyhold paces itself under, which may differ
//! per credential (accounts raise different quotas through Service Quotas).
//! Rules: retries and timeouts are bounded, so that an outage fails a job
//! step (which an officer retries) instead of hanging it for minutes.

use std::time::Duration;

use keyhold_aws::{CredentialQuotas, KmsQuotas, QuotaError, WrappingKeySpec};
use keyhold_core::credential::{Endpoint, EndpointPolicy};

use super::layering::settings_area;
use super::{ConfigError, in_range};

/// Attempts per AWS KMS request unless told otherwise (the SDK's standard retry).
pub const DEFAULT_KMS_MAX_ATTEMPTS: u32 = 5;
/// Most attempts per AWS KMS request: beyond this a job step would hang for
/// minutes on an outage instead of failing and being retried by an officer.
pub const MAX_KMS_MAX_ATTEMPTS: u32 = 10;
/// Seconds one AWS KMS request attempt may take unless told otherwise.
pub const DEFAULT_KMS_REQUEST_TIMEOUT_SECONDS: u64 = 10;
pub const MAX_KMS_REQUEST_TIMEOUT_SECONDS: u64 = 300;
/// The SDK's standard retry waits at most this long between two attempts.
const SDK_MAX_BACKOFF: Duration = Duration::from_secs(20);

settings_area! {
    /// AWS KMS requests: wrapping key, endpoints, retries, request quotas.
    pub struct KmsArgs {
        /// Size of the RSA key AWS KMS generates to receive key material for
        /// import: RSA_2048, RSA_3072 or RSA_4096 [default: RSA_4096, AWS's
        /// recommendation].
        #[arg(long, env = "KEYHOLD_KMS_WRAPPING_KEY_SPEC", value_name = "SPEC")]
        pub kms_wrapping_key_spec: Option<String>,
        /// Send requests to AWS KMS's FIPS endpoints (kms-fips.<region>.amazonaws.com)
        /// [default: false]. A credential's endpoint override is used as given.
        #[arg(
            long,
            env = "KEYHOLD_KMS_USE_FIPS",
            value_name = "BOOL",
            num_args = 0..=1,
            require_equals = true,
            default_missing_value = "true"
        )]
        pub kms_use_fips: Option<bool>,
        /// Attempts per AWS KMS request, the first included (1 = no retry), with
        /// exponential back-off and jitter in between: 1 to 10 [default: 5].
        #[arg(long, env = "KEYHOLD_KMS_MAX_ATTEMPTS", value_name = "N")]
        pub kms_max_attempts: Option<u32>,
        /// Seconds one attempt of an AWS KMS request may take: 1 to 300 [default: 10].
        #[arg(
            long,
            env = "KEYHOLD_KMS_REQUEST_TIMEOUT_SECONDS",
            value_name = "SECONDS"
        )]
        pub kms_request_timeout_seconds: Option<u64>,
        /// KMS endpoint overrides a credential may name (a VPC endpoint, a
        /// test peer), comma-separated in the environment. Endpoints decide
        /// where key material is sent, so officers choose only among these
        /// [default: none: AWS's own endpoints only]. Each must be https://,
        /// or http:// to a loopback address with kms_endpoint_allow_plain_http.
        #[arg(
            long,
            env = "KEYHOLD_KMS_ENDPOINT_ALLOW",
            value_name = "URL",
            value_delimiter = ','
        )]
        pub kms_endpoint_allow: Option<Vec<String>>,
        /// Allow plain http:// endpoint overrides to a loopback address (127.0.0.1,
        /// [::1]): for a local test peer such as LocalStack [default: false].
        #[arg(
            long,
            env = "KEYHOLD_KMS_ENDPOINT_ALLOW_PLAIN_HTTP",
            value_name = "BOOL",
            num_args = 0..=1,
            require_equals = true,
            default_missing_value = "true"
        )]
        pub kms_endpoint_allow_plain_http: Option<bool>,
        /// The AWS KMS request quotas keyhold paces itself under, for every
        /// credential: Operation=RATE entries, RATE in requests per second
        /// (decimals allowed, e.g. GetParametersForImport=100 or CreateKey=0.5),
        /// *=RATE for every operation; comma-separated in the environment.
        /// Set them to the account's quotas when they were raised through
        /// Service Quotas, or lower to leave room for other tools of the
        /// account [default: AWS's default quotas].
        #[arg(
            long,
            env = "KEYHOLD_KMS_QUOTAS",
            value_name = "OPERATION=RATE",
            value_delimiter = ','
        )]
        pub kms_quotas: Option<Vec<String>>,
        /// Request quotas for one credential, over kms_quotas:
        /// CREDENTIAL:Operation=RATE entries (or CREDENTIAL:*=RATE), for a
        /// credential whose account has other quotas; comma-separated in the
        /// environment [default: none: kms_quotas for every credential].
        #[arg(
            long,
            env = "KEYHOLD_KMS_CREDENTIAL_QUOTAS",
            value_name = "CREDENTIAL:OPERATION=RATE",
            value_delimiter = ','
        )]
        pub kms_credential_quotas: Option<Vec<String>>,
    }
}

/// How keyhold's AWS KMS clients behave; the same for every credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KmsConfig {
    pub wrapping_key_spec: WrappingKeySpec,
    pub use_fips: bool,
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    /// One attempt, from sending the request to reading the whole response.
    pub request_timeout: Duration,
    /// The endpoint overrides credentials may name.
    pub endpoints: EndpointPolicy,
    /// The request quotas every credential is paced under (AWS's default
    /// for the operations not given).
    pub quotas: KmsQuotas,
    /// Quotas of named credentials, over `quotas`.
    pub credential_quotas: CredentialQuotas,
}

impl Default for KmsConfig {
    fn default() -> Self {
        Self {
            wrapping_key_spec: WrappingKeySpec::default(),
            use_fips: false,
            max_attempts: DEFAULT_KMS_MAX_ATTEMPTS,
            request_timeout: Duration::from_secs(DEFAULT_KMS_REQUEST_TIMEOUT_SECONDS),
            endpoints: EndpointPolicy::none(),
            quotas: KmsQuotas::default(),
            credential_quotas: CredentialQuotas::default(),
        }
    }
}

impl KmsConfig {
    /// The bound on one whole call, retries included. It follows from the
    /// settings users tune (attempts and their timeout) so that raising
    /// either never cuts calls short: every attempt may take its full
    /// timeout, and every back-off its maximum.
    pub fn operation_timeout(&self) -> Duration {
        self.request_timeout.saturating_mul(self.max_attempts)
            + SDK_MAX_BACKOFF.saturating_mul(self.max_attempts.saturating_sub(1))
    }
}

impl KmsArgs {
    pub fn resolve(self) -> Result<KmsConfig, ConfigError> {
        Ok(KmsConfig {
            wrapping_key_spec: match self.kms_wrapping_key_spec {
                Some(raw) => parse_wrapping_key_spec(&raw)?,
                None => WrappingKeySpec::default(),
            },
            use_fips: self.kms_use_fips.unwrap_or(false),
            max_attempts: in_range(
                "kms_max_attempts",
                self.kms_max_attempts,
                DEFAULT_KMS_MAX_ATTEMPTS,
                1..=MAX_KMS_MAX_ATTEMPTS,
                "attempts per AWS KMS request (1 means no retry)",
            )?,
            request_timeout: Duration::from_secs(in_range(
                "kms_request_timeout_seconds",
                self.kms_request_timeout_seconds,
                DEFAULT_KMS_REQUEST_TIMEOUT_SECONDS,
                1..=MAX_KMS_REQUEST_TIMEOUT_SECONDS,
                "seconds per AWS KMS request attempt",
            )?),
            endpoints: endpoint_policy(
                self.kms_endpoint_allow.unwrap_or_default(),
                self.kms_endpoint_allow_plain_http.unwrap_or(false),
            )?,
            quotas: KmsQuotas::parse(&self.kms_quotas.unwrap_or_default())
                .map_err(|e| quota_error("kms_quotas", &e))?,
            credential_quotas: CredentialQuotas::parse(
                &self.kms_credential_quotas.unwrap_or_default(),
            )
            .map_err(|e| quota_error("kms_credential_quotas", &e))?,
        })
    }
}

/// A bad quota entry, with where quotas are set.
fn quota_error(name: &str, error: &QuotaError) -> ConfigError {
    ConfigError(format!(
        "{name}: {error} (file key {name}, an array of strings; --{} or KEYHOLD_{}, comma-separated)",
        name.replace('_', "-"),
        name.to_ascii_uppercase()
    ))
}

/// The allow-list of endpoint overrides, each a URL keyhold accepts as an
/// endpoint and sends material to over HTTPS (or plain HTTP to loopback
/// with consent).
fn endpoint_policy(raw: Vec<String>, plain_http: bool) -> Result<EndpointPolicy, ConfigError> {
    let bad = |message: String| ConfigError(format!("kms_endpoint_allow: {message}"));
    let endpoints = raw
        .iter()
        .map(|entry| entry.trim())
        .filter(|entry| !entry.is_empty())
        .map(|entry| Endpoint::parse(entry).map_err(|e| bad(e.message)))
        .collect::<Result<Vec<_>, _>>()?;
    EndpointPolicy::new(endpoints, plain_http).map_err(|e| bad(e.message))
}

/// RSA_2048, RSA_3072 or RSA_4096, as AWS names them (any case).
fn parse_wrapping_key_spec(raw: &str) -> Result<WrappingKeySpec, ConfigError> {
    [WrappingKeySpec::Rsa2048, WrappingKeySpec::Rsa3072, WrappingKeySpec::Rsa4096]
        .into_iter()
        .find(|spec| spec.aws_name().eq_ignore_ascii_case(raw.trim()))
        .ok_or_else(|| {
            ConfigError(format!(
                "kms_wrapping_key_spec '{}' is not a KMS wrapping key spec: use RSA_2048, RSA_3072 or RSA_4096 (RSA_4096 is AWS's recommendation)",
                raw.chars().filter(|c| !c.is_control()).take(40).collect::<String>()
            ))
        })
}
