//! Client-side pacing of AWS KMS requests, so bulk work (many rotations at
//! once, a resume after an outage) stays within AWS KMS's request quotas
//! instead of relying on `ThrottlingException` and retries alone.
//!
//! AWS counts requests per account and Region, per API operation, each quota
//! independently of the others. [`KmsRateLimits::default`] holds the default
//! quotas documented in *Request quotas*, AWS KMS Developer Guide,
//! <https://docs.aws.amazon.com/kms/latest/developerguide/requests-per-second.html>
//! (table "Request quotas for each AWS KMS API operation"). The quotas are
//! shared by every principal of the account, so keyhold paces itself a little
//! below those rates, never above them.
//!
//! A caller that finds a bucket empty waits for its turn (FIFO); nothing
//! fails because of the limiter. A request AWS throttles all the same (other
//! users of the account spend the quota too) comes back here rather than to
//! the SDK's retries (see [`crate::retry`]): the operation is held back for a
//! growing pause and the request is sent again in a turn of its own, up to
//! the attempts a call may make.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use keyhold_core::clock::Timestamp;
use keyhold_core::cloud::aws::{Alias, KeyMaterialId, KeyPolicy, KmsKeyId};
use keyhold_core::cloud::{
    CloudError, CloudKeyInfo, CloudKms, CloudMaterial, ImportParameters, MaterialImport,
    WrappingAlgorithm,
};
use keyhold_core::credential::CloudService;
use tokio::time::Instant;

use crate::retry::backoff;

/// How much further apart than the quota's interval requests leave. AWS
/// counts the requests that reach it; two that left exactly one interval
/// apart can arrive closer together (network and scheduling jitter) and the
/// second would be throttled. Two percent keeps a 1/s quota's requests
/// 20 ms apart more than needed, at a cost of 2% of the quota.
const JITTER_MARGIN_PERCENT: u32 = 2;

/// A request rate: `requests` per `per`. Written as a count over a period
/// so that sub-1/s quotas (one request every few seconds) are exact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub requests: u32,
    pub per: Duration,
}

impl Rate {
    pub const fn per_second(requests: u32) -> Self {
        Self {
            requests,
            per: Duration::from_secs(1),
        }
    }

    /// One request every `period`.
    pub const fn one_every(period: Duration) -> Self {
        Self {
            requests: 1,
            per: period,
        }
    }

    /// The spacing between two requests, the jitter margin included. A
    /// zero count would mean "never"; it is read as one request per period
    /// so a misconfiguration slows keyhold down rather than stopping it for
    /// good.
    fn interval(self) -> Duration {
        let exact = self.per / self.requests.max(1);
        exact + exact * JITTER_MARGIN_PERCENT / 100
    }
}

/// The rate allowed for each `CloudKms` operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KmsRateLimits {
    pub create_key: Rate,
    pub describe_key: Rate,
    pub get_parameters_for_import: Rate,
    pub import_key_material: Rate,
    pub delete_imported_key_material: Rate,
    /// `point_alias` sends CreateAlias and, when the alias exists, UpdateAlias.
    /// Both quotas are 5/s and counted separately by AWS, so pacing the call
    /// at 5/s keeps each of them within its quota.
    pub point_alias: Rate,
    pub disable_key: Rate,
    pub put_key_policy: Rate,
    /// RotateKeyOnDemand: a management call like DisableKey; in-place
    /// rotations send one each.
    pub rotate_key_on_demand: Rate,
    /// ListKeyRotations: a rotation in place resumed after an interruption
    /// sends it, and a drift check once per KMS key that holds more than one
    /// material; a background read, paced at a tenth of its quota (see
    /// [`KmsRateLimits::get_key_policy`]).
    pub list_key_materials: Rate,
    /// `find_keys_tagged` pages through ListKeys and sends one
    /// ListResourceTags per key: a single call is many requests, one after
    /// the other. It only runs when a job resumes after an interruption, so
    /// it is paced well below the ListKeys quota (500/s) to leave the
    /// account's quota to other callers. This bucket paces whole searches,
    /// not their requests, and is apart from [`KmsRateLimits::list_key_ids`]
    /// and [`KmsRateLimits::list_tags`], the drift check's single requests:
    /// the two callers spend the same ListKeys and ListResourceTags quotas,
    /// which the drift check's tenth leaves room for.
    pub find_keys_tagged: Rate,
    /// GetKeyPolicy, once per KMS key in a drift check.
    ///
    /// The drift check's reads (GetKeyPolicy, ListAliases, ListKeys,
    /// ListResourceTags, ListKeyRotations) are paced at a tenth of their
    /// quotas. A check is background work that nobody waits for, and it
    /// walks every key of a group, 10,000 of them in a big one: at the full
    /// quota it would hold the account's quota for as long as it runs, and
    /// rotations, their repairs and every other principal of the account
    /// (AWS counts them all in the same quota) would be throttled meanwhile.
    /// At a tenth, nine tenths stay free for them, and a 10,000-key check
    /// still reads its policies in under two minutes.
    pub get_key_policy: Rate,
    /// ListAliases, once per drift check. One call pages through every
    /// alias of the Region (100 to a page), each page sent once the one
    /// before it was answered: the pace bounds how often a listing starts,
    /// the round trip how fast its pages follow.
    pub list_aliases: Rate,
    /// ListKeys, once per drift check (1,000 keys to a page, pages one after
    /// the other as for [`KmsRateLimits::list_aliases`]).
    pub list_key_ids: Rate,
    /// ListResourceTags of one KMS key (one request for up to 50 tags): a
    /// drift check sends one per key of the group and one per key of the
    /// Region keyhold does not know.
    pub list_tags: Rate,
    /// TagResource: a drift repair putting back a key's tags.
    pub tag_key: Rate,
    /// EnableKey: a drift repair enabling a key that was disabled.
    pub enable_key: Rate,
    /// CancelKeyDeletion: a drift repair saving a key scheduled for deletion.
    pub cancel_key_deletion: Rate,
}

/// A tenth of an AWS quota, for background reads (see
/// [`KmsRateLimits::get_key_policy`]).
const fn a_tenth_of(quota_per_second: u32) -> Rate {
    Rate::per_second(quota_per_second / 10)
}

impl Default for KmsRateLimits {
    /// AWS KMS's default request quotas (requests per second, per account and
    /// Region), from
    /// <https://docs.aws.amazon.com/kms/latest/developerguide/requests-per-second.html>:
    /// CreateKey 5, DescribeKey 2000, GetParametersForImport 1 (earlier
    /// editions of the page gave 0.25, one every 4 s; accounts with that
    /// quota see a few retried throttles at most), ImportKeyMaterial 15,
    /// DeleteImportedKeyMaterial 15, CreateAlias 5, UpdateAlias 5,
    /// DisableKey 5, PutKeyPolicy 15, ListKeys 500, ListResourceTags 2000,
    /// RotateKeyOnDemand 5, ListKeyRotations 100, GetKeyPolicy 1000,
    /// ListAliases 500, TagResource 10, EnableKey 5, CancelKeyDeletion 5.
    /// The drift check's reads are paced at a tenth of theirs (ListKeyRotations
    /// 10, GetKeyPolicy 100, ListAliases 50, ListKeys 50, ListResourceTags
    /// 200; see [`KmsRateLimits::get_key_policy`]); its repairs, which are
    /// few and wanted done, at the quota.
    fn default() -> Self {
        Self {
            create_key: Rate::per_second(5),
            describe_key: Rate::per_second(2000),
            get_parameters_for_import: Rate::per_second(1),
            import_key_material: Rate::per_second(15),
            delete_imported_key_material: Rate::per_second(15),
            point_alias: Rate::per_second(5),
            disable_key: Rate::per_second(5),
            put_key_policy: Rate::per_second(15),
            rotate_key_on_demand: Rate::per_second(5),
            list_key_materials: a_tenth_of(100),
            find_keys_tagged: Rate::per_second(5),
            get_key_policy: a_tenth_of(1000),
            list_aliases: a_tenth_of(500),
            list_key_ids: a_tenth_of(500),
            list_tags: a_tenth_of(2000),
            tag_key: Rate::per_second(10),
            enable_key: Rate::per_second(5),
            cancel_key_deletion: Rate::per_second(5),
        }
    }
}

/// A token bucket of capacity one on tokio's clock: requests leave at most
/// one `interval` apart. Capacity one (no burst) because AWS counts requests
/// in each one-second interval: a burst of a full second's quota followed by
/// the steady rate would put up to twice the quota in one second.
#[derive(Debug)]
struct TokenBucket {
    operation: &'static str,
    interval: Duration,
    /// The earliest instant the next request may leave.
    next_free: Mutex<Option<Instant>>,
}

impl TokenBucket {
    fn new(operation: &'static str, rate: Rate) -> Self {
        Self {
            operation,
            interval: rate.interval(),
            next_free: Mutex::new(None),
        }
    }

    /// Waits for this caller's turn. Turns are handed out in call order; a
    /// caller that gives up while waiting forfeits its turn (the slot stays
    /// used, which errs on the side of fewer requests).
    async fn acquire(&self) {
        let slot = {
            // No await while locked; a poisoned lock only means another
            // caller panicked after reserving, and the instant is still valid.
            let mut next_free = self
                .next_free
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            let slot = match *next_free {
                Some(free) if free > now => free,
                _ => now,
            };
            *next_free = Some(slot.checked_add(self.interval).unwrap_or(slot));
            slot
        };
        let wait = slot.saturating_duration_since(Instant::now());
        if !wait.is_zero() {
            tracing::debug!(
                operation = self.operation,
                wait_ms = wait.as_millis() as u64,
                "pacing AWS KMS requests under the request quota"
            );
            tokio::time::sleep_until(slot).await;
        }
    }

    /// After AWS throttled this operation: no request of it leaves before
    /// `pause` has passed (turns already handed out beyond that keep them).
    fn hold_back(&self, pause: Duration) {
        let mut next_free = self
            .next_free
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let until = Instant::now() + pause;
        if next_free.is_none_or(|free| free < until) {
            *next_free = Some(until);
        }
    }

    /// Sends `call` in this bucket's turn; a throttled answer holds the
    /// operation back and sends it again in a later turn, at most `attempts`
    /// times in all.
    async fn paced<T, F>(&self, attempts: u32, call: impl Fn() -> F) -> Result<T, CloudError>
    where
        F: Future<Output = Result<T, CloudError>>,
    {
        let mut attempt = 1;
        loop {
            self.acquire().await;
            match call().await {
                Err(error @ CloudError::Throttled { .. }) if attempt < attempts => {
                    let pause = backoff(attempt).max(self.interval);
                    tracing::warn!(
                        operation = self.operation,
                        attempt,
                        pause_ms = pause.as_millis() as u64,
                        %error,
                        "AWS KMS throttled the request; sending it again in a later turn"
                    );
                    self.hold_back(pause);
                    attempt += 1;
                }
                outcome => return outcome,
            }
        }
    }
}

/// One set of buckets: share it between every client that reaches the same
/// AWS account and Region (keyhold keeps one per credential and Region).
#[derive(Debug)]
pub struct KmsRateLimiter {
    create_key: TokenBucket,
    describe_key: TokenBucket,
    get_parameters_for_import: TokenBucket,
    import_key_material: TokenBucket,
    delete_imported_key_material: TokenBucket,
    point_alias: TokenBucket,
    disable_key: TokenBucket,
    put_key_policy: TokenBucket,
    rotate_key_on_demand: TokenBucket,
    list_key_materials: TokenBucket,
    find_keys_tagged: TokenBucket,
    get_key_policy: TokenBucket,
    list_aliases: TokenBucket,
    list_key_ids: TokenBucket,
    list_tags: TokenBucket,
    tag_key: TokenBucket,
    enable_key: TokenBucket,
    cancel_key_deletion: TokenBucket,
}

impl KmsRateLimiter {
    pub fn new(limits: &KmsRateLimits) -> Self {
        Self {
            create_key: TokenBucket::new("CreateKey", limits.create_key),
            describe_key: TokenBucket::new("DescribeKey", limits.describe_key),
            get_parameters_for_import: TokenBucket::new(
                "GetParametersForImport",
                limits.get_parameters_for_import,
            ),
            import_key_material: TokenBucket::new("ImportKeyMaterial", limits.import_key_material),
            delete_imported_key_material: TokenBucket::new(
                "DeleteImportedKeyMaterial",
                limits.delete_imported_key_material,
            ),
            point_alias: TokenBucket::new("CreateAlias/UpdateAlias", limits.point_alias),
            disable_key: TokenBucket::new("DisableKey", limits.disable_key),
            put_key_policy: TokenBucket::new("PutKeyPolicy", limits.put_key_policy),
            rotate_key_on_demand: TokenBucket::new(
                "RotateKeyOnDemand",
                limits.rotate_key_on_demand,
            ),
            list_key_materials: TokenBucket::new("ListKeyRotations", limits.list_key_materials),
            // Named apart from the drift check's ListKeys and ListResourceTags
            // buckets, so a log line tells which caller waited.
            find_keys_tagged: TokenBucket::new(
                "find_keys_tagged (ListKeys, ListResourceTags)",
                limits.find_keys_tagged,
            ),
            get_key_policy: TokenBucket::new("GetKeyPolicy", limits.get_key_policy),
            list_aliases: TokenBucket::new("ListAliases", limits.list_aliases),
            list_key_ids: TokenBucket::new("ListKeys", limits.list_key_ids),
            list_tags: TokenBucket::new("ListResourceTags", limits.list_tags),
            tag_key: TokenBucket::new("TagResource", limits.tag_key),
            enable_key: TokenBucket::new("EnableKey", limits.enable_key),
            cancel_key_deletion: TokenBucket::new("CancelKeyDeletion", limits.cancel_key_deletion),
        }
    }
}

impl Default for KmsRateLimiter {
    fn default() -> Self {
        Self::new(&KmsRateLimits::default())
    }
}

/// A [`CloudKms`] that waits for its operation's bucket before each call,
/// and sends a throttled call again in a later turn.
pub struct RateLimitedKms {
    inner: Arc<dyn CloudKms>,
    limiter: Arc<KmsRateLimiter>,
    /// Attempts per call, the first included, when AWS throttles it.
    attempts: u32,
}

impl std::fmt::Debug for RateLimitedKms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitedKms")
            .field("limiter", &self.limiter)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

impl RateLimitedKms {
    /// `attempts` bounds how often one call is sent when AWS throttles it
    /// (the first time included; 1 = never again), as the SDK's
    /// `max_attempts` bounds the other retries.
    pub fn new(inner: Arc<dyn CloudKms>, limiter: Arc<KmsRateLimiter>, attempts: u32) -> Self {
        Self {
            inner,
            limiter,
            attempts: attempts.max(1),
        }
    }
}

#[async_trait]
impl CloudKms for RateLimitedKms {
    fn service(&self) -> CloudService {
        self.inner.service()
    }

    async fn create_key(
        &self,
        description: &str,
        policy: Option<&KeyPolicy>,
        tags: &[(String, String)],
    ) -> Result<KmsKeyId, CloudError> {
        self.limiter
            .create_key
            .paced(self.attempts, || {
                self.inner.create_key(description, policy, tags)
            })
            .await
    }

    async fn describe_key(&self, key_id: &KmsKeyId) -> Result<CloudKeyInfo, CloudError> {
        self.limiter
            .describe_key
            .paced(self.attempts, || self.inner.describe_key(key_id))
            .await
    }

    async fn get_parameters_for_import(
        &self,
        key_id: &KmsKeyId,
        algorithm: WrappingAlgorithm,
    ) -> Result<ImportParameters, CloudError> {
        self.limiter
            .get_parameters_for_import
            .paced(self.attempts, || {
                self.inner.get_parameters_for_import(key_id, algorithm)
            })
            .await
    }

    async fn import_key_material(
        &self,
        key_id: &KmsKeyId,
        import_token: &[u8],
        encrypted_material: &[u8],
        valid_to: Option<Timestamp>,
        import: MaterialImport<'_>,
    ) -> Result<Option<KeyMaterialId>, CloudError> {
        self.limiter
            .import_key_material
            .paced(self.attempts, || {
                self.inner.import_key_material(
                    key_id,
                    import_token,
                    encrypted_material,
                    valid_to,
                    import,
                )
            })
            .await
    }

    async fn delete_imported_key_material(
        &self,
        key_id: &KmsKeyId,
        material: Option<&KeyMaterialId>,
    ) -> Result<(), CloudError> {
        self.limiter
            .delete_imported_key_material
            .paced(self.attempts, || {
                self.inner.delete_imported_key_material(key_id, material)
            })
            .await
    }

    async fn list_key_materials(
        &self,
        key_id: &KmsKeyId,
    ) -> Result<Vec<CloudMaterial>, CloudError> {
        self.limiter
            .list_key_materials
            .paced(self.attempts, || self.inner.list_key_materials(key_id))
            .await
    }

    async fn rotate_key_on_demand(&self, key_id: &KmsKeyId) -> Result<(), CloudError> {
        self.limiter
            .rotate_key_on_demand
            .paced(self.attempts, || self.inner.rotate_key_on_demand(key_id))
            .await
    }

    async fn point_alias(&self, alias: &Alias, key_id: &KmsKeyId) -> Result<(), CloudError> {
        self.limiter
            .point_alias
            .paced(self.attempts, || self.inner.point_alias(alias, key_id))
            .await
    }

    async fn disable_key(&self, key_id: &KmsKeyId) -> Result<(), CloudError> {
        self.limiter
            .disable_key
            .paced(self.attempts, || self.inner.disable_key(key_id))
            .await
    }

    async fn put_key_policy(
        &self,
        key_id: &KmsKeyId,
        policy: &KeyPolicy,
    ) -> Result<(), CloudError> {
        self.limiter
            .put_key_policy
            .paced(self.attempts, || self.inner.put_key_policy(key_id, policy))
            .await
    }

    async fn find_keys_tagged(&self, key: &str, value: &str) -> Result<Vec<KmsKeyId>, CloudError> {
        self.limiter
            .find_keys_tagged
            .paced(self.attempts, || self.inner.find_keys_tagged(key, value))
            .await
    }

    async fn get_key_policy(&self, key_id: &KmsKeyId) -> Result<KeyPolicy, CloudError> {
        self.limiter
            .get_key_policy
            .paced(self.attempts, || self.inner.get_key_policy(key_id))
            .await
    }

    async fn list_aliases(&self) -> Result<Vec<(Alias, KmsKeyId)>, CloudError> {
        self.limiter
            .list_aliases
            .paced(self.attempts, || self.inner.list_aliases())
            .await
    }

    async fn list_key_ids(&self) -> Result<Vec<KmsKeyId>, CloudError> {
        self.limiter
            .list_key_ids
            .paced(self.attempts, || self.inner.list_key_ids())
            .await
    }

    async fn list_tags(&self, key_id: &KmsKeyId) -> Result<Vec<(String, String)>, CloudError> {
        self.limiter
            .list_tags
            .paced(self.attempts, || self.inner.list_tags(key_id))
            .await
    }

    async fn tag_key(
        &self,
        key_id: &KmsKeyId,
        tags: &[(String, String)],
    ) -> Result<(), CloudError> {
        self.limiter
            .tag_key
            .paced(self.attempts, || self.inner.tag_key(key_id, tags))
            .await
    }

    async fn enable_key(&self, key_id: &KmsKeyId) -> Result<(), CloudError> {
        self.limiter
            .enable_key
            .paced(self.attempts, || self.inner.enable_key(key_id))
            .await
    }

    async fn cancel_key_deletion(&self, key_id: &KmsKeyId) -> Result<(), CloudError> {
        self.limiter
            .cancel_key_deletion
            .paced(self.attempts, || self.inner.cancel_key_deletion(key_id))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyhold_core::key::KeyState;

    const KEY: &str = "1234abcd-12ab-34cd-56ef-1234567890ab";

    fn key() -> KmsKeyId {
        KmsKeyId::parse(KEY).unwrap()
    }

    fn policy() -> KeyPolicy {
        KeyPolicy::parse(
            r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}]}"#,
        ).unwrap()
    }

    /// A KMS that answers at once and records when each call reached it;
    /// the first calls get the `failures`, in order.
    #[derive(Default)]
    struct Recorder {
        calls: Mutex<Vec<(&'static str, Instant)>>,
        failures: Mutex<std::collections::VecDeque<CloudError>>,
    }

    impl Recorder {
        fn failing(failures: Vec<CloudError>) -> Self {
            Self {
                failures: Mutex::new(failures.into()),
                ..Self::default()
            }
        }

        /// Throttles the first `calls` calls, as KMS over its quota does.
        fn throttling(calls: usize) -> Self {
            let throttled = || CloudError::Throttled {
                operation: "any",
                message: "ThrottlingException: Rate exceeded".into(),
            };
            Self::failing(std::iter::repeat_with(throttled).take(calls).collect())
        }

        fn note(&self, op: &'static str) -> Result<(), CloudError> {
            self.calls.lock().unwrap().push((op, Instant::now()));
            match self.failures.lock().unwrap().pop_front() {
                Some(failure) => Err(failure),
                None => Ok(()),
            }
        }
        fn times(&self, op: &str, start: Instant) -> Vec<Duration> {
            self.calls
                .lock()
                .unwrap()
                .iter()
                .filter(|(o, _)| *o == op)
                .map(|(_, t)| *t - start)
                .collect()
        }
    }

    #[async_trait]
    impl CloudKms for Recorder {
        fn service(&self) -> CloudService {
            CloudService::Aws
        }

        async fn create_key(
            &self,
            _: &str,
            _: Option<&KeyPolicy>,
            _: &[(String, String)],
        ) -> Result<KmsKeyId, CloudError> {
            self.note("create_key")?;
            Ok(key())
        }
        async fn describe_key(&self, key_id: &KmsKeyId) -> Result<CloudKeyInfo, CloudError> {
            self.note("describe_key")?;
            Ok(CloudKeyInfo {
                key_id: key_id.clone(),
                state: KeyState::Enabled,
                external: true,
                valid_to: None,
                current_material: None,
                deletion_date: None,
            })
        }
        async fn get_parameters_for_import(
            &self,
            _: &KmsKeyId,
            algorithm: WrappingAlgorithm,
        ) -> Result<ImportParameters, CloudError> {
            self.note("get_parameters_for_import")?;
            Ok(ImportParameters {
                public_key_der: vec![1],
                import_token: vec![2],
                valid_until: None,
                algorithm,
            })
        }
        async fn import_key_material(
            &self,
            _: &KmsKeyId,
            _: &[u8],
            _: &[u8],
            _: Option<Timestamp>,
            _: MaterialImport<'_>,
        ) -> Result<Option<KeyMaterialId>, CloudError> {
            self.note("import_key_material")?;
            Ok(None)
        }
        async fn delete_imported_key_material(
            &self,
            _: &KmsKeyId,
            _: Option<&KeyMaterialId>,
        ) -> Result<(), CloudError> {
            self.note("delete_imported_key_material")?;
            Ok(())
        }
        async fn rotate_key_on_demand(&self, _: &KmsKeyId) -> Result<(), CloudError> {
            self.note("rotate_key_on_demand")?;
            Ok(())
        }
        async fn list_key_materials(&self, _: &KmsKeyId) -> Result<Vec<CloudMaterial>, CloudError> {
            self.note("list_key_materials")?;
            Ok(Vec::new())
        }
        async fn point_alias(&self, _: &Alias, _: &KmsKeyId) -> Result<(), CloudError> {
            self.note("point_alias")?;
            Ok(())
        }
        async fn disable_key(&self, _: &KmsKeyId) -> Result<(), CloudError> {
            self.note("disable_key")?;
            Ok(())
        }
        async fn put_key_policy(&self, _: &KmsKeyId, _: &KeyPolicy) -> Result<(), CloudError> {
            self.note("put_key_policy")?;
            Ok(())
        }
        async fn find_keys_tagged(&self, _: &str, _: &str) -> Result<Vec<KmsKeyId>, CloudError> {
            self.note("find_keys_tagged")?;
            Ok(vec![])
        }
        async fn get_key_policy(&self, _: &KmsKeyId) -> Result<KeyPolicy, CloudError> {
            self.note("get_key_policy")?;
            Ok(policy())
        }
        async fn list_aliases(&self) -> Result<Vec<(Alias, KmsKeyId)>, CloudError> {
            self.note("list_aliases")?;
            Ok(Vec::new())
        }
        async fn list_key_ids(&self) -> Result<Vec<KmsKeyId>, CloudError> {
            self.note("list_key_ids")?;
            Ok(vec![key()])
        }
        async fn list_tags(&self, _: &KmsKeyId) -> Result<Vec<(String, String)>, CloudError> {
            self.note("list_tags")?;
            Ok(Vec::new())
        }
        async fn tag_key(&self, _: &KmsKeyId, _: &[(String, String)]) -> Result<(), CloudError> {
            self.note("tag_key")?;
            Ok(())
        }
        async fn enable_key(&self, _: &KmsKeyId) -> Result<(), CloudError> {
            self.note("enable_key")?;
            Ok(())
        }
        async fn cancel_key_deletion(&self, _: &KmsKeyId) -> Result<(), CloudError> {
            self.note("cancel_key_deletion")?;
            Ok(())
        }
    }

    fn limited(limits: &KmsRateLimits) -> (Arc<Recorder>, Arc<RateLimitedKms>) {
        paced(Recorder::default(), limits, 3)
    }

    fn paced(
        recorder: Recorder,
        limits: &KmsRateLimits,
        attempts: u32,
    ) -> (Arc<Recorder>, Arc<RateLimitedKms>) {
        let recorder = Arc::new(recorder);
        let kms = Arc::new(RateLimitedKms::new(
            recorder.clone(),
            Arc::new(KmsRateLimiter::new(limits)),
            attempts,
        ));
        (recorder, kms)
    }

    fn ms(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|v| Duration::from_millis(*v)).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn sequential_calls_are_spaced_at_the_quota() {
        let (recorder, kms) = limited(&KmsRateLimits::default());
        let start = Instant::now();
        for _ in 0..11 {
            kms.create_key("d", None, &[]).await.unwrap();
        }
        // CreateKey is 5/s: the first goes at once, then one every 200 ms
        // and the 2% jitter margin.
        assert_eq!(Instant::now() - start, Duration::from_millis(2040));
        assert_eq!(
            recorder.times("create_key", start),
            ms(&[0, 204, 408, 612, 816, 1020, 1224, 1428, 1632, 1836, 2040])
        );
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_queue_in_turn_and_never_exceed_the_quota() {
        let (recorder, kms) = limited(&KmsRateLimits::default());
        let start = Instant::now();
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let kms = kms.clone();
                tokio::spawn(async move { kms.disable_key(&key()).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let mut times = recorder.times("disable_key", start);
        times.sort();
        assert_eq!(times.len(), 20);
        // DisableKey is 5/s: no half-open one-second window holds more than 5.
        for (i, t) in times.iter().enumerate() {
            let in_window = times[i..]
                .iter()
                .take_while(|u| **u < *t + Duration::from_secs(1))
                .count();
            assert!(
                in_window <= 5,
                "{in_window} requests within a second from {t:?}"
            );
        }
        assert_eq!(times.last().copied(), Some(Duration::from_millis(19 * 204)));
    }

    #[tokio::test(start_paused = true)]
    async fn get_parameters_for_import_is_paced_far_below_the_management_calls() {
        let (recorder, kms) = limited(&KmsRateLimits::default());
        let start = Instant::now();
        for _ in 0..4 {
            kms.get_parameters_for_import(&key(), WrappingAlgorithm::RsaesOaepSha256)
                .await
                .unwrap();
        }
        assert_eq!(
            recorder.times("get_parameters_for_import", start),
            ms(&[0, 1020, 2040, 3060])
        );
    }

    #[tokio::test(start_paused = true)]
    async fn each_operation_has_its_own_bucket() {
        let (recorder, kms) = limited(&KmsRateLimits::default());
        let start = Instant::now();
        // Emptying the CreateKey bucket does not delay DescribeKey or PutKeyPolicy.
        for _ in 0..3 {
            kms.create_key("d", None, &[]).await.unwrap();
        }
        let after_creates = Instant::now() - start;
        kms.describe_key(&key()).await.unwrap();
        kms.put_key_policy(&key(), &policy()).await.unwrap();
        kms.point_alias(&Alias::parse("alias/x").unwrap(), &key())
            .await
            .unwrap();
        assert_eq!(Instant::now() - start, after_creates);
        assert_eq!(recorder.times("describe_key", start), vec![after_creates]);
    }

    #[tokio::test(start_paused = true)]
    async fn clients_sharing_a_limiter_share_its_buckets() {
        let limiter = Arc::new(KmsRateLimiter::default());
        let recorder = Arc::new(Recorder::default());
        let a = RateLimitedKms::new(recorder.clone(), limiter.clone(), 3);
        let b = RateLimitedKms::new(recorder.clone(), limiter, 3);
        let start = Instant::now();
        a.import_key_material(&key(), b"t", b"m", None, MaterialImport::Existing(None))
            .await
            .unwrap();
        b.import_key_material(&key(), b"t", b"m", None, MaterialImport::Existing(None))
            .await
            .unwrap();
        a.import_key_material(&key(), b"t", b"m", None, MaterialImport::Existing(None))
            .await
            .unwrap();
        // ImportKeyMaterial is 15/s: 1/15 s and the margin apart across both
        // clients (tokio's timer rounds each wait up to the next millisecond).
        let times = recorder.times("import_key_material", start);
        assert_eq!(times.len(), 3);
        let step = Duration::from_secs(1) / 15 * 102 / 100;
        for (i, t) in (0u32..).zip(&times) {
            let due = step * i;
            assert!(
                *t >= due && *t <= due + Duration::from_millis(1),
                "call {i} at {t:?}"
            );
        }
    }

    /// Every paced operation once, all at the same time.
    async fn every_operation_at_once(kms: Arc<RateLimitedKms>) {
        let k = key();
        let alias_tags = [("keyhold:group".to_owned(), "g".to_owned())];
        let _ = tokio::join!(
            kms.get_key_policy(&k),
            kms.list_aliases(),
            kms.list_key_ids(),
            kms.list_tags(&k),
            kms.list_key_materials(&k),
            kms.find_keys_tagged("keyhold:job", "j"),
            kms.tag_key(&k, &alias_tags),
            kms.enable_key(&k),
            kms.cancel_key_deletion(&k),
            kms.describe_key(&k),
        );
    }

    #[tokio::test(start_paused = true)]
    async fn drift_reads_go_at_a_tenth_of_their_quotas_and_repairs_at_theirs() {
        let (recorder, kms) = limited(&KmsRateLimits::default());
        let start = Instant::now();
        // Two rounds, every operation at once in each: the first goes out at
        // once (each operation has its own bucket, none waits for another),
        // the second one interval later, its own operation's.
        every_operation_at_once(kms.clone()).await;
        every_operation_at_once(kms).await;
        let interval = |per_second: u32| Rate::per_second(per_second).interval();
        for (op, expected) in [
            // GetKeyPolicy 1000/s, ListAliases 500/s, ListKeys 500/s,
            // ListResourceTags 2000/s, ListKeyRotations 100/s: a tenth.
            ("get_key_policy", interval(100)),
            ("list_aliases", interval(50)),
            ("list_key_ids", interval(50)),
            ("list_tags", interval(200)),
            ("list_key_materials", interval(10)),
            // TagResource 10/s, EnableKey 5/s, CancelKeyDeletion 5/s.
            ("tag_key", interval(10)),
            ("enable_key", interval(5)),
            ("cancel_key_deletion", interval(5)),
            ("find_keys_tagged", interval(5)),
            ("describe_key", interval(2000)),
        ] {
            let times = recorder.times(op, start);
            assert_eq!(times.len(), 2, "{op}: {times:?}");
            assert_eq!(
                times[0],
                Duration::ZERO,
                "{op} waited for another operation"
            );
            // tokio's timer rounds a wait up to the next millisecond.
            assert!(
                times[1] >= expected && times[1] <= expected + Duration::from_millis(1),
                "{op}: second call at {:?}, expected {expected:?}",
                times[1]
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_drift_check_over_many_keys_leaves_nine_tenths_of_the_quota() {
        let (recorder, kms) = limited(&KmsRateLimits::default());
        let start = Instant::now();
        // A check reads each key's policy and tags in turn, as fast as the
        // pacer lets it; over a second, that is a tenth of each quota.
        while Instant::now() - start < Duration::from_secs(1) {
            kms.get_key_policy(&key()).await.unwrap();
            kms.list_tags(&key()).await.unwrap();
        }
        let in_first_second = |op| {
            recorder
                .times(op, start)
                .into_iter()
                .filter(|t| *t < Duration::from_secs(1))
                .count()
        };
        assert!(in_first_second("get_key_policy") <= 100);
        assert!(in_first_second("get_key_policy") >= 95);
        // Tags wait behind the policy read of the same key, never above a tenth.
        assert!(in_first_second("list_tags") <= 200);
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttled_repair_is_sent_again_by_the_pacer() {
        let (recorder, kms) = paced(Recorder::throttling(1), &KmsRateLimits::default(), 3);
        let start = Instant::now();
        kms.cancel_key_deletion(&key()).await.unwrap();
        assert_eq!(recorder.times("cancel_key_deletion", start), ms(&[0, 500]));
    }

    #[tokio::test(start_paused = true)]
    async fn sub_one_per_second_rates_and_idle_buckets() {
        let limits = KmsRateLimits {
            find_keys_tagged: Rate::one_every(Duration::from_secs(4)),
            ..KmsRateLimits::default()
        };
        let (recorder, kms) = limited(&limits);
        let start = Instant::now();
        for _ in 0..3 {
            kms.find_keys_tagged("k", "v").await.unwrap();
        }
        // After an idle spell the next call goes at once: no credit builds up
        // beyond the one request, so no burst follows.
        tokio::time::sleep(Duration::from_secs(60)).await;
        kms.find_keys_tagged("k", "v").await.unwrap();
        kms.find_keys_tagged("k", "v").await.unwrap();
        assert_eq!(
            recorder.times("find_keys_tagged", start),
            ms(&[0, 4080, 8160, 68_160, 72_240])
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_that_gives_up_does_not_stall_the_others() {
        let (recorder, kms) = limited(&KmsRateLimits::default());
        let start = Instant::now();
        kms.create_key("d", None, &[]).await.unwrap();
        // This one would go at 204 ms but is abandoned at 50 ms.
        let abandoned =
            tokio::time::timeout(Duration::from_millis(50), kms.create_key("d", None, &[])).await;
        assert!(abandoned.is_err());
        kms.create_key("d", None, &[]).await.unwrap();
        assert_eq!(recorder.times("create_key", start), ms(&[0, 408]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttled_call_is_sent_again_in_later_turns_backing_off() {
        let (recorder, kms) = paced(Recorder::throttling(2), &KmsRateLimits::default(), 3);
        let start = Instant::now();
        let created = kms.create_key("d", None, &[]).await;
        assert_eq!(created.unwrap(), key());
        // Held back 500 ms after the first throttle, 1 s after the second.
        assert_eq!(recorder.times("create_key", start), ms(&[0, 500, 1500]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_throttled_on_every_attempt_fails_as_throttled() {
        let (recorder, kms) = paced(Recorder::throttling(3), &KmsRateLimits::default(), 3);
        let start = Instant::now();
        let error = kms.disable_key(&key()).await.unwrap_err();
        assert!(matches!(error, CloudError::Throttled { .. }), "{error:?}");
        assert_eq!(recorder.times("disable_key", start), ms(&[0, 500, 1500]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttle_holds_the_operation_back_for_every_caller() {
        let (recorder, kms) = paced(Recorder::throttling(1), &KmsRateLimits::default(), 2);
        let start = Instant::now();
        let first = tokio::spawn({
            let kms = kms.clone();
            async move { kms.put_key_policy(&key(), &policy()).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Free to go at 100 ms before the throttle; now after the throttled
        // call's own second attempt at 500 ms, one interval later.
        kms.put_key_policy(&key(), &policy()).await.unwrap();
        first.await.unwrap().unwrap();
        let step = (Duration::from_secs(1) / 15 * 102 / 100).as_millis() as u64 + 1;
        assert_eq!(
            recorder.times("put_key_policy", start),
            ms(&[0, 500, 500 + step])
        );
    }

    #[tokio::test(start_paused = true)]
    async fn other_failures_are_not_sent_again_by_the_pacer() {
        let transient = CloudError::Transient {
            operation: "create_key",
            message: "no answer in time".into(),
        };
        let (recorder, kms) = paced(
            Recorder::failing(vec![transient]),
            &KmsRateLimits::default(),
            5,
        );
        let start = Instant::now();
        let error = kms.create_key("d", None, &[]).await.unwrap_err();
        assert!(matches!(error, CloudError::Transient { .. }), "{error:?}");
        assert_eq!(recorder.times("create_key", start), ms(&[0]));
    }
}
