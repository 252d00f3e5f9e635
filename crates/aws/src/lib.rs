//! keyhold's AWS adapter: [`keyhold_core::cloud::CloudKms`] on AWS KMS, built
//! on the official SDK (`aws-sdk-kms`, `aws-config`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), keyhold_core::InvalidInput> {
//! use keyhold_aws::{AwsCredentials, AwsKms, AwsKmsSettings};
//! use keyhold_core::cloud::aws::Region;
//!
//! let settings = AwsKmsSettings::new(
//!     Region::parse("eu-west-1")?,
//!     AwsCredentials::DefaultChain { assume_role_arn: None },
//! );
//! let kms = AwsKms::new(settings).await?;
//! # let _ = kms;
//! # Ok(())
//! # }
//! ```
//!
//! Errors are classified into [`keyhold_core::cloud::CloudError`] by AWS error
//! code; messages carry AWS's reason and never a secret.

mod error;
mod kms;
pub mod rate_limit;
mod retry;
mod settings;

pub use kms::{AwsKms, EndpointChoice};
pub use rate_limit::{
    CredentialQuotas, KmsOperation, KmsQuotas, KmsRateLimiter, KmsRateLimits, OperationPacingStats,
    QuotaError, Rate, RateError, RateLimitedKms,
};
pub use settings::{
    AwsCredentials, AwsKmsSettings, RetryMode, RetrySettings, TimeoutSettings, WrappingKeySpec,
};
