//! What it takes to reach one AWS KMS account in one region.

use std::time::Duration;

use keyhold_core::InvalidInput;
use keyhold_core::cloud::aws::Region;
use keyhold_core::credential::Endpoint;
use secrecy::SecretString;

/// How the adapter authenticates to AWS.
///
/// `Debug` shows the access key id (not secret) and never the secret access key.
#[derive(Clone, Debug)]
pub enum AwsCredentials {
    /// An IAM access key, as imported from the console's CSV.
    Static {
        access_key_id: String,
        secret_access_key: SecretString,
    },
    /// The SDK's default chain: environment, shared config and credentials
    /// files (including `credential_process`), web identity, ECS and EC2
    /// instance roles. With `assume_role_arn`, those credentials only serve to
    /// assume the role through STS, and KMS is called as the role.
    /// (SSO profiles are not supported: they would pull two more SDK clients.)
    DefaultChain { assume_role_arn: Option<String> },
}

/// Size of the RSA key KMS generates to receive the wrapped key material.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WrappingKeySpec {
    Rsa2048,
    Rsa3072,
    /// AWS's recommendation, and the default.
    #[default]
    Rsa4096,
}

impl WrappingKeySpec {
    pub fn aws_name(self) -> &'static str {
        match self {
            Self::Rsa2048 => "RSA_2048",
            Self::Rsa3072 => "RSA_3072",
            Self::Rsa4096 => "RSA_4096",
        }
    }
}

/// The SDK's retry strategies; both back off exponentially with jitter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RetryMode {
    #[default]
    Standard,
    /// Standard, plus a client-side rate limiter that slows down after
    /// throttling: for bulk work that would otherwise hit the request quotas.
    Adaptive,
}

#[derive(Clone, Debug)]
pub struct RetrySettings {
    pub mode: RetryMode,
    /// Attempts per call, the first one included (1 = no retry).
    pub max_attempts: u32,
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            mode: RetryMode::Standard,
            max_attempts: 5,
        }
    }
}

#[derive(Clone, Debug)]
pub struct TimeoutSettings {
    /// Establishing a TCP/TLS connection.
    pub connect: Duration,
    /// One attempt, from sending the request to reading the whole response.
    pub attempt: Duration,
    /// One call, all its retries and back-offs included.
    pub operation: Duration,
}

impl Default for TimeoutSettings {
    fn default() -> Self {
        Self {
            // The SDK's own default for this behaviour version.
            connect: Duration::from_millis(3100),
            attempt: Duration::from_secs(10),
            operation: Duration::from_secs(60),
        }
    }
}

#[derive(Clone, Debug)]
pub struct AwsKmsSettings {
    pub region: Region,
    pub credentials: AwsCredentials,
    /// A URL that replaces AWS's endpoint (VPC endpoint, test peer). When
    /// absent, the SDK's `AWS_ENDPOINT_URL_KMS` / `AWS_ENDPOINT_URL` (or the
    /// shared config's `endpoint_url`) apply, and else the regional endpoint.
    pub endpoint: Option<String>,
    /// Use `kms-fips.<region>.amazonaws.com`. Only affects AWS's own
    /// endpoints: an explicit endpoint is used as given.
    pub use_fips: bool,
    pub wrapping_key_spec: WrappingKeySpec,
    pub retry: RetrySettings,
    pub timeouts: TimeoutSettings,
}

impl AwsKmsSettings {
    /// Settings with the defaults: no endpoint override, no FIPS, RSA_4096,
    /// standard retry with 5 attempts, 10 s per attempt, 60 s per call.
    pub fn new(region: Region, credentials: AwsCredentials) -> Self {
        Self {
            region,
            credentials,
            endpoint: None,
            use_fips: false,
            wrapping_key_spec: WrappingKeySpec::default(),
            retry: RetrySettings::default(),
            timeouts: TimeoutSettings::default(),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), InvalidInput> {
        if let Some(raw) = &self.endpoint {
            Endpoint::parse(raw)?;
        }
        if let AwsCredentials::Static { access_key_id, .. } = &self.credentials
            && access_key_id.trim().is_empty()
        {
            return Err(InvalidInput::new(
                "credential",
                "the access key id is empty",
            ));
        }
        if let AwsCredentials::DefaultChain {
            assume_role_arn: Some(arn),
        } = &self.credentials
            && !arn.starts_with("arn:")
        {
            return Err(InvalidInput::new(
                "assume_role_arn",
                "the role to assume must be an IAM role ARN such as arn:aws:iam::123456789012:role/keyhold",
            ));
        }
        if self.retry.max_attempts == 0 {
            return Err(InvalidInput::new(
                "retry",
                "max_attempts must be at least 1 (1 means no retry)",
            ));
        }
        let t = &self.timeouts;
        if t.connect.is_zero() || t.attempt.is_zero() || t.operation.is_zero() {
            return Err(InvalidInput::new(
                "timeouts",
                "connect, attempt and operation timeouts must be greater than zero",
            ));
        }
        if t.attempt > t.operation {
            return Err(InvalidInput::new(
                "timeouts",
                "the per-attempt timeout must not exceed the operation timeout",
            ));
        }
        Ok(())
    }
}
