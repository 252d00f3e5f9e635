//! Which retries the SDK may make by itself.
//!
//! The SDK retries throttled requests on its own back-off, outside keyhold's
//! pacing ([`crate::rate_limit`]): under a quota the pacer fills exactly, each
//! such retry spends a request the pacer has already promised to the next
//! caller, which is then throttled in turn, until jobs fail with their
//! attempts spent (the quota-bound benchmark lost 86 of 500 rotations this
//! way). So for every operation keyhold paces one request at a time, a
//! throttled answer goes back to the pacer, which sends the request again in
//! a turn of its own. Faults of KMS or the network are still retried by the
//! SDK.

use std::time::Duration;

use aws_sdk_kms::config::interceptors::InterceptorContext;
use aws_sdk_kms::config::retry::{ClassifyRetry, RetryAction};
use aws_sdk_kms::error::ProvideErrorMetadata;
use aws_sdk_kms::operation::{
    cancel_key_deletion::CancelKeyDeletionError, create_alias::CreateAliasError,
    create_key::CreateKeyError, delete_imported_key_material::DeleteImportedKeyMaterialError,
    describe_key::DescribeKeyError, disable_key::DisableKeyError, enable_key::EnableKeyError,
    get_key_policy::GetKeyPolicyError, get_parameters_for_import::GetParametersForImportError,
    import_key_material::ImportKeyMaterialError, put_key_policy::PutKeyPolicyError,
    tag_resource::TagResourceError, update_alias::UpdateAliasError,
};

use crate::error::is_throttling;

/// The wait before a call's next attempt when keyhold retries it itself
/// (CreateKey, throttled requests): doubling from half a second, at most
/// the SDK's own longest back-off.
pub(crate) fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(500)
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(6))
        .min(Duration::from_secs(20))
}

/// Forbids the SDK's retry of a throttled request to a paced operation.
#[derive(Debug, Default)]
pub(crate) struct ThrottlingLeftToThePacer;

impl ThrottlingLeftToThePacer {
    /// Whether a paced operation's error is a throttle. The listings
    /// (`ListKeys`, `ListAliases`, `ListResourceTags`, `ListKeyRotations`)
    /// are absent on purpose: one call pages through them, so its requests
    /// are not paced one by one (`find_keys_tagged` sends a ListResourceTags
    /// per key in a row), and the SDK's retries keep a long listing from
    /// starting over on one throttle. The drift check paces its listings at
    /// a tenth of their quotas, so such a retry spends no request another
    /// caller was promised.
    fn paced_and_throttled(ctx: &InterceptorContext) -> bool {
        let Some(error) = ctx
            .output_or_error()
            .and_then(Result::err)
            .and_then(|e| e.as_operation_error())
        else {
            return false;
        };
        macro_rules! code_of {
            ($($operation_error:ty),+ $(,)?) => {
                $(
                    if let Some(e) = error.downcast_ref::<$operation_error>() {
                        return e.code().is_some_and(is_throttling);
                    }
                )+
            };
        }
        code_of!(
            CreateKeyError,
            DescribeKeyError,
            GetParametersForImportError,
            ImportKeyMaterialError,
            DeleteImportedKeyMaterialError,
            CreateAliasError,
            UpdateAliasError,
            DisableKeyError,
            PutKeyPolicyError,
            GetKeyPolicyError,
            TagResourceError,
            EnableKeyError,
            CancelKeyDeletionError,
        );
        false
    }
}

impl ClassifyRetry for ThrottlingLeftToThePacer {
    fn classify_retry(&self, ctx: &InterceptorContext) -> RetryAction {
        if Self::paced_and_throttled(ctx) {
            RetryAction::RetryForbidden
        } else {
            RetryAction::NoActionIndicated
        }
    }

    fn name(&self) -> &'static str {
        "keyhold: throttling is retried by the pacer"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_half_a_second_up_to_the_sdk_maximum() {
        let waits: Vec<u64> = (1..=8).map(|a| backoff(a).as_millis() as u64).collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 8000, 16000, 20000, 20000]);
        assert_eq!(backoff(0), Duration::from_millis(500));
        assert_eq!(backoff(u32::MAX), Duration::from_secs(20));
    }
}
