//! The peer's quota mode: AWS KMS's default request quotas as token buckets,
//! and the per-operation call counts the quota scenario reports.

use std::time::Instant;

/// AWS KMS's default request quotas (requests per second, per account and
/// Region) for the operations keyhold sends; AWS KMS Developer Guide,
/// *Request quotas*, table "Request quotas for each AWS KMS API operation"
/// (<https://docs.aws.amazon.com/kms/latest/developerguide/requests-per-second.html>).
///
/// Encrypt and Decrypt are listed at the *Cryptographic operations
/// (symmetric) request rate*, which they share ([`bucket_for`]): 100,000 in
/// eu-west-1, the Region of the peer's ARNs (10,000 by default elsewhere,
/// 20,000 in six Regions).
pub const AWS_DEFAULT_QUOTAS: &[(&str, f64)] = &[
    ("CreateKey", 5.0),
    ("DescribeKey", 2000.0),
    ("GetParametersForImport", 1.0),
    ("ImportKeyMaterial", 15.0),
    ("DeleteImportedKeyMaterial", 15.0),
    ("RotateKeyOnDemand", 5.0),
    ("ListKeyRotations", 100.0),
    ("Encrypt", 100_000.0),
    ("Decrypt", 100_000.0),
    ("CreateAlias", 5.0),
    ("UpdateAlias", 5.0),
    ("DisableKey", 5.0),
    ("EnableKey", 5.0),
    ("PutKeyPolicy", 15.0),
    ("ListKeys", 500.0),
    ("ListResourceTags", 2000.0),
    // What drift checks read and their repairs write.
    ("GetKeyPolicy", 1000.0),
    ("ListAliases", 500.0),
    ("TagResource", 10.0),
    ("UntagResource", 5.0),
    ("DeleteAlias", 15.0),
    ("ScheduleKeyDeletion", 15.0),
    ("CancelKeyDeletion", 5.0),
];

/// The bucket an operation draws from: its own, except the cryptographic
/// operations, which share one quota (*Shared quotas for cryptographic
/// operations* in the same guide).
pub fn bucket_for(operation: &str) -> &str {
    match operation {
        "Encrypt" | "Decrypt" => "Cryptographic operations (symmetric)",
        other => other,
    }
}

/// Calls to one operation since the start (or the last reset).
#[derive(Debug, Clone, Default)]
pub struct OpCounts {
    pub accepted: u64,
    pub throttled: u64,
}

/// A bucket holding up to one second's quota, refilled continuously: AWS
/// counts requests per second, so a full second's worth at once is allowed.
#[derive(Debug)]
pub(super) struct Bucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    pub(super) fn new(rate: f64) -> Self {
        Self {
            rate,
            tokens: rate.max(1.0),
            last: Instant::now(),
        }
    }

    pub(super) fn take(&mut self) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encrypt_and_decrypt_share_one_bucket_and_the_rest_have_their_own() {
        assert_eq!(bucket_for("Encrypt"), bucket_for("Decrypt"));
        assert_eq!(bucket_for("RotateKeyOnDemand"), "RotateKeyOnDemand");
        let shared: Vec<f64> = AWS_DEFAULT_QUOTAS
            .iter()
            .filter(|(op, _)| bucket_for(op) == bucket_for("Encrypt"))
            .map(|(_, rate)| *rate)
            .collect();
        assert_eq!(shared, [100_000.0, 100_000.0]);
    }

    #[test]
    fn a_bucket_allows_one_seconds_worth_at_once_then_refuses() {
        let mut bucket = Bucket::new(5.0);
        assert!((0..5).all(|_| bucket.take()));
        assert!(!bucket.take());
    }
}
