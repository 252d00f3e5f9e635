//! Client-side pacing of AWS KMS requests, so bulk work (many rotations at
//! once, a resume after an outage) stays within AWS KMS's request quotas
//! instead of relying on `ThrottlingException` and retries alone.
//!
//! AWS counts requests per account and Region, per API operation, each quota
//! independently of the others. The quotas keyhold paces itself under are
//! AWS's defaults (documented in *Request quotas*, AWS KMS Developer Guide,
//! <https://docs.aws.amazon.com/kms/latest/developerguide/requests-per-second.html>,
//! table "Request quotas for each AWS KMS API operation") unless the
//! operator gives others ([`quotas`]): quotas raised through Service Quotas,
//! or a share of a quota other tools of the account use too. The quotas are
//! shared by every principal of the account, so keyhold paces itself a
//! little below them, never above ([`bucket`]).
//!
//! A caller that finds a bucket empty waits for its turn (FIFO); nothing
//! fails because of the limiter. A request AWS throttles all the same (other
//! users of the account spend the quota too) comes back here rather than to
//! the SDK's retries (see [`crate::retry`]): the operation slows down, is
//! held back for a growing pause and the request is sent again in a turn of
//! its own, up to the attempts a call may make.

mod bucket;
pub mod quotas;

use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use keyhold_core::clock::Timestamp;
use keyhold_core::cloud::aws::{Alias, KeyMaterialId, KeyPolicy, KmsKeyId};
use keyhold_core::cloud::{
    CloudError, CloudKeyInfo, CloudKms, CloudMaterial, ImportParameters, MaterialImport,
    OperationPacing, PacingReport, WrappingAlgorithm,
};
use keyhold_core::credential::CloudService;

pub use bucket::OperationPacingStats;
use bucket::{CallPacing, TokenBucket};
pub use quotas::{CredentialQuotas, KmsOperation, KmsQuotas, QuotaError, Rate, RateError};

/// The rate allowed for each `CloudKms` call, from the quotas of the AWS
/// operations it sends ([`KmsRateLimits::from_quotas`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KmsRateLimits {
    pub create_key: Rate,
    pub describe_key: Rate,
    pub get_parameters_for_import: Rate,
    pub import_key_material: Rate,
    pub delete_imported_key_material: Rate,
    /// `point_alias` sends CreateAlias and, when the alias exists, UpdateAlias.
    /// Both are counted separately by AWS, so pacing the call at the lower
    /// of their quotas keeps each of them within its quota.
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
    /// it is paced well below the ListKeys and ListResourceTags quotas (a
    /// hundredth of the lower, 5/s by default) to leave the account's quota
    /// to other callers. This bucket paces whole searches, not their
    /// requests, and is apart from [`KmsRateLimits::list_key_ids`] and
    /// [`KmsRateLimits::list_tags`], the drift check's single requests: the
    /// two callers spend the same ListKeys and ListResourceTags quotas,
    /// which the drift check's tenth leaves room for.
    pub find_keys_tagged: Rate,
    /// GetKeyPolicy, once per KMS key in a drift check.
    ///
    /// The drift check's reads (GetKeyPolicy, ListAliases, ListKeys,
    /// ListResourceTags, ListKeyRotations) are paced at a tenth of their
    /// quotas, configured or default. A check is background work that
    /// nobody waits for, and it walks every key of a group, 10,000 of them
    /// in a big one: at the full quota it would hold the account's quota for
    /// as long as it runs, and rotations, their repairs and every other
    /// principal of the account (AWS counts them all in the same quota)
    /// would be throttled meanwhile. At a tenth, nine tenths stay free for
    /// them, and a 10,000-key check still reads its policies in under two
    /// minutes at the default quota.
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

/// Background reads go at a tenth of their quota (see
/// [`KmsRateLimits::get_key_policy`]).
const BACKGROUND_SHARE: u32 = 10;
/// A search by tag goes at a hundredth of the ListKeys and ListResourceTags
/// quotas (see [`KmsRateLimits::find_keys_tagged`]).
const SEARCH_SHARE: u32 = 100;

impl KmsRateLimits {
    /// The rates for `quotas`. With AWS's default quotas: CreateKey 5,
    /// DescribeKey 2000, GetParametersForImport 1, ImportKeyMaterial 15,
    /// DeleteImportedKeyMaterial 15, CreateAlias and UpdateAlias 5,
    /// DisableKey 5, PutKeyPolicy 15, RotateKeyOnDemand 5, TagResource 10,
    /// EnableKey 5, CancelKeyDeletion 5; the drift check's reads at a tenth
    /// of theirs (ListKeyRotations 10, GetKeyPolicy 100, ListAliases 50,
    /// ListKeys 50, ListResourceTags 200); searches by tag 5. The drift
    /// check's repairs, which are few and wanted done, go at their quota.
    pub fn from_quotas(quotas: &KmsQuotas) -> Self {
        use KmsOperation as Op;
        let rate = |op| quotas.rate(op);
        let background = |op| quotas.rate(op).share(BACKGROUND_SHARE);
        Self {
            create_key: rate(Op::CreateKey),
            describe_key: rate(Op::DescribeKey),
            get_parameters_for_import: rate(Op::GetParametersForImport),
            import_key_material: rate(Op::ImportKeyMaterial),
            delete_imported_key_material: rate(Op::DeleteImportedKeyMaterial),
            point_alias: rate(Op::CreateAlias).min(rate(Op::UpdateAlias)),
            disable_key: rate(Op::DisableKey),
            put_key_policy: rate(Op::PutKeyPolicy),
            rotate_key_on_demand: rate(Op::RotateKeyOnDemand),
            list_key_materials: background(Op::ListKeyRotations),
            find_keys_tagged: rate(Op::ListKeys)
                .min(rate(Op::ListResourceTags))
                .share(SEARCH_SHARE),
            get_key_policy: background(Op::GetKeyPolicy),
            list_aliases: background(Op::ListAliases),
            list_key_ids: background(Op::ListKeys),
            list_tags: background(Op::ListResourceTags),
            tag_key: rate(Op::TagResource),
            enable_key: rate(Op::EnableKey),
            cancel_key_deletion: rate(Op::CancelKeyDeletion),
        }
    }
}

impl Default for KmsRateLimits {
    /// AWS KMS's default request quotas (see [`KmsRateLimits::from_quotas`]).
    fn default() -> Self {
        Self::from_quotas(&KmsQuotas::default())
    }
}

/// Declares the limiter's buckets once: the struct, building it from
/// [`KmsRateLimits`], and listing every bucket.
macro_rules! buckets {
    ($($field:ident: $label:literal,)+) => {
        /// One set of buckets: share it between every client that reaches
        /// the same AWS account and Region (keyhold keeps one per credential
        /// and Region).
        #[derive(Debug)]
        pub struct KmsRateLimiter {
            $($field: TokenBucket,)+
        }

        impl KmsRateLimiter {
            pub fn new(limits: &KmsRateLimits) -> Self {
                Self {
                    $($field: TokenBucket::new($label, limits.$field),)+
                }
            }

            fn buckets(&self) -> [&TokenBucket; [$($label),+].len()] {
                [$(&self.$field),+]
            }
        }
    };
}

buckets! {
    create_key: "CreateKey",
    describe_key: "DescribeKey",
    get_parameters_for_import: "GetParametersForImport",
    import_key_material: "ImportKeyMaterial",
    delete_imported_key_material: "DeleteImportedKeyMaterial",
    point_alias: "CreateAlias/UpdateAlias",
    disable_key: "DisableKey",
    put_key_policy: "PutKeyPolicy",
    rotate_key_on_demand: "RotateKeyOnDemand",
    list_key_materials: "ListKeyRotations",
    // Named apart from the drift check's ListKeys and ListResourceTags
    // buckets, so a log line or series tells which caller waited.
    find_keys_tagged: "ListKeys/ListResourceTags (search by tag)",
    get_key_policy: "GetKeyPolicy",
    list_aliases: "ListAliases",
    list_key_ids: "ListKeys",
    list_tags: "ListResourceTags",
    tag_key: "TagResource",
    enable_key: "EnableKey",
    cancel_key_deletion: "CancelKeyDeletion",
}

impl KmsRateLimiter {
    /// Every operation's pacing since start-up (for `/metrics`).
    pub fn stats(&self) -> Vec<OperationPacingStats> {
        self.buckets().iter().map(|b| b.stats()).collect()
    }
}

impl Default for KmsRateLimiter {
    fn default() -> Self {
        Self::new(&KmsRateLimits::default())
    }
}

/// A [`CloudKms`] that waits for its operation's bucket before each call,
/// and sends a throttled call again in a later turn. Several may share one
/// [`KmsRateLimiter`] (and one client behind it); each keeps its own tally
/// of what pacing cost its calls, for [`CloudKms::take_pacing`], so a job
/// run given one of its own reads its own waits.
pub struct RateLimitedKms {
    inner: Arc<dyn CloudKms>,
    limiter: Arc<KmsRateLimiter>,
    /// Attempts per call, the first included, when AWS throttles it.
    attempts: u32,
    /// What pacing cost this client's calls since the last `take_pacing`.
    tally: Mutex<Vec<OperationPacing>>,
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
            tally: Mutex::new(Vec::new()),
        }
    }

    /// Sends `call` through `bucket`, noting what pacing cost it.
    async fn paced<T, F>(&self, bucket: &TokenBucket, call: impl Fn() -> F) -> Result<T, CloudError>
    where
        F: Future<Output = Result<T, CloudError>>,
    {
        let (outcome, spent) = bucket.paced(self.attempts, call).await;
        self.note(bucket, spent);
        outcome
    }

    fn note(&self, bucket: &TokenBucket, spent: CallPacing) {
        if spent == CallPacing::default() {
            return;
        }
        let mut tally = self.tally.lock().unwrap_or_else(PoisonError::into_inner);
        let operation = bucket.operation();
        match tally.iter_mut().find(|o| o.operation == operation) {
            Some(seen) => {
                seen.waited += spent.waited;
                seen.throttled = seen.throttled.saturating_add(spent.throttled);
            }
            None => tally.push(OperationPacing {
                operation,
                paced_at_per_second: bucket.quota().requests_per_second(),
                waited: spent.waited,
                throttled: spent.throttled,
            }),
        }
    }
}

/// Sends the call through the limiter's bucket of the same name.
macro_rules! paced {
    ($self:ident, $bucket:ident, $call:expr) => {
        $self.paced(&$self.limiter.$bucket, || $call).await
    };
}

#[async_trait]
impl CloudKms for RateLimitedKms {
    fn service(&self) -> CloudService {
        self.inner.service()
    }

    fn take_pacing(&self) -> Option<PacingReport> {
        let operations =
            std::mem::take(&mut *self.tally.lock().unwrap_or_else(PoisonError::into_inner));
        (!operations.is_empty()).then_some(PacingReport {
            quotas_of: "AWS KMS",
            operations,
        })
    }

    async fn create_key(
        &self,
        description: &str,
        policy: Option<&KeyPolicy>,
        tags: &[(String, String)],
    ) -> Result<KmsKeyId, CloudError> {
        paced!(
            self,
            create_key,
            self.inner.create_key(description, policy, tags)
        )
    }

    async fn describe_key(&self, key_id: &KmsKeyId) -> Result<CloudKeyInfo, CloudError> {
        paced!(self, describe_key, self.inner.describe_key(key_id))
    }

    async fn get_parameters_for_import(
        &self,
        key_id: &KmsKeyId,
        algorithm: WrappingAlgorithm,
    ) -> Result<ImportParameters, CloudError> {
        paced!(
            self,
            get_parameters_for_import,
            self.inner.get_parameters_for_import(key_id, algorithm)
        )
    }

    async fn import_key_material(
        &self,
        key_id: &KmsKeyId,
        import_token: &[u8],
        encrypted_material: &[u8],
        valid_to: Option<Timestamp>,
        import: MaterialImport<'_>,
    ) -> Result<Option<KeyMaterialId>, CloudError> {
        paced!(
            self,
            import_key_material,
            self.inner.import_key_material(
                key_id,
                import_token,
                encrypted_material,
                valid_to,
                import
            )
        )
    }

    async fn delete_imported_key_material(
        &self,
        key_id: &KmsKeyId,
        material: Option<&KeyMaterialId>,
    ) -> Result<(), CloudError> {
        paced!(
            self,
            delete_imported_key_material,
            self.inner.delete_imported_key_material(key_id, material)
        )
    }

    async fn list_key_materials(
        &self,
        key_id: &KmsKeyId,
    ) -> Result<Vec<CloudMaterial>, CloudError> {
        paced!(
            self,
            list_key_materials,
            self.inner.list_key_materials(key_id)
        )
    }

    async fn rotate_key_on_demand(&self, key_id: &KmsKeyId) -> Result<(), CloudError> {
        paced!(
            self,
            rotate_key_on_demand,
            self.inner.rotate_key_on_demand(key_id)
        )
    }

    async fn point_alias(&self, alias: &Alias, key_id: &KmsKeyId) -> Result<(), CloudError> {
        paced!(self, point_alias, self.inner.point_alias(alias, key_id))
    }

    async fn disable_key(&self, key_id: &KmsKeyId) -> Result<(), CloudError> {
        paced!(self, disable_key, self.inner.disable_key(key_id))
    }

    async fn put_key_policy(
        &self,
        key_id: &KmsKeyId,
        policy: &KeyPolicy,
    ) -> Result<(), CloudError> {
        paced!(
            self,
            put_key_policy,
            self.inner.put_key_policy(key_id, policy)
        )
    }

    async fn find_keys_tagged(&self, key: &str, value: &str) -> Result<Vec<KmsKeyId>, CloudError> {
        paced!(
            self,
            find_keys_tagged,
            self.inner.find_keys_tagged(key, value)
        )
    }

    async fn get_key_policy(&self, key_id: &KmsKeyId) -> Result<KeyPolicy, CloudError> {
        paced!(self, get_key_policy, self.inner.get_key_policy(key_id))
    }

    async fn list_aliases(&self) -> Result<Vec<(Alias, KmsKeyId)>, CloudError> {
        paced!(self, list_aliases, self.inner.list_aliases())
    }

    async fn list_key_ids(&self) -> Result<Vec<KmsKeyId>, CloudError> {
        paced!(self, list_key_ids, self.inner.list_key_ids())
    }

    async fn list_tags(&self, key_id: &KmsKeyId) -> Result<Vec<(String, String)>, CloudError> {
        paced!(self, list_tags, self.inner.list_tags(key_id))
    }

    async fn tag_key(
        &self,
        key_id: &KmsKeyId,
        tags: &[(String, String)],
    ) -> Result<(), CloudError> {
        paced!(self, tag_key, self.inner.tag_key(key_id, tags))
    }

    async fn enable_key(&self, key_id: &KmsKeyId) -> Result<(), CloudError> {
        paced!(self, enable_key, self.inner.enable_key(key_id))
    }

    async fn cancel_key_deletion(&self, key_id: &KmsKeyId) -> Result<(), CloudError> {
        paced!(
            self,
            cancel_key_deletion,
            self.inner.cancel_key_deletion(key_id)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyhold_core::key::KeyState;
    use std::time::Duration;
    use tokio::time::Instant;

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
        let interval = |per_second: u32| bucket::paced_interval(Rate::per_second(per_second));
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
            find_keys_tagged: Rate::parse("0.25").unwrap(),
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
        // This one would go at 204 ms but is abandoned at 50 ms: the next
        // caller takes its turn.
        let abandoned =
            tokio::time::timeout(Duration::from_millis(50), kms.create_key("d", None, &[])).await;
        assert!(abandoned.is_err());
        kms.create_key("d", None, &[]).await.unwrap();
        assert_eq!(recorder.times("create_key", start), ms(&[0, 204]));
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
        // call's own second attempt at 500 ms, one interval later, and the
        // throttle halved the rate: two of the quota's intervals.
        kms.put_key_policy(&key(), &policy()).await.unwrap();
        first.await.unwrap().unwrap();
        let slowed = bucket::paced_interval(Rate::per_second(15)) * 2;
        let step = slowed.as_millis() as u64 + 1;
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

    #[test]
    fn default_limits_are_aws_default_quotas_and_background_shares() {
        let limits = KmsRateLimits::default();
        let per_second = |n| Rate::per_second(n);
        assert_eq!(
            limits,
            KmsRateLimits {
                create_key: per_second(5),
                describe_key: per_second(2000),
                get_parameters_for_import: per_second(1),
                import_key_material: per_second(15),
                delete_imported_key_material: per_second(15),
                point_alias: per_second(5),
                disable_key: per_second(5),
                put_key_policy: per_second(15),
                rotate_key_on_demand: per_second(5),
                list_key_materials: per_second(10),
                find_keys_tagged: per_second(5),
                get_key_policy: per_second(100),
                list_aliases: per_second(50),
                list_key_ids: per_second(50),
                list_tags: per_second(200),
                tag_key: per_second(10),
                enable_key: per_second(5),
                cancel_key_deletion: per_second(5),
            }
        );
    }

    #[test]
    fn configured_quotas_set_the_limits_and_background_reads_stay_at_a_tenth() {
        let quotas = KmsQuotas::parse(&[
            "GetParametersForImport=100",
            "CreateKey=0.25",
            "UpdateAlias=2",
            "GetKeyPolicy=500",
            "ListKeys=1000",
            "ListResourceTags=300",
        ])
        .unwrap();
        let limits = KmsRateLimits::from_quotas(&quotas);
        assert_eq!(limits.get_parameters_for_import, Rate::per_second(100));
        assert_eq!(limits.create_key, Rate::parse("0.25").unwrap());
        // The alias call goes at the lower of CreateAlias (5) and UpdateAlias.
        assert_eq!(limits.point_alias, Rate::per_second(2));
        assert_eq!(limits.get_key_policy, Rate::per_second(50));
        assert_eq!(limits.list_key_ids, Rate::per_second(100));
        assert_eq!(limits.list_tags, Rate::per_second(30));
        // A hundredth of the lower of ListKeys and ListResourceTags.
        assert_eq!(limits.find_keys_tagged, Rate::per_second(3));
        // Untouched operations keep AWS's default.
        assert_eq!(limits.disable_key, Rate::per_second(5));
        let everything = KmsRateLimits::from_quotas(&KmsQuotas::parse(&["*=40"]).unwrap());
        assert_eq!(everything.describe_key, Rate::per_second(40));
        assert_eq!(everything.get_key_policy, Rate::per_second(4));
        assert_eq!(everything.find_keys_tagged, Rate::parse("0.4").unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn raised_quotas_pace_faster() {
        let quotas = KmsQuotas::parse(&["GetParametersForImport=20"]).unwrap();
        let (recorder, kms) = limited(&KmsRateLimits::from_quotas(&quotas));
        let start = Instant::now();
        for _ in 0..4 {
            kms.get_parameters_for_import(&key(), WrappingAlgorithm::RsaesOaepSha256)
                .await
                .unwrap();
        }
        assert_eq!(
            recorder.times("get_parameters_for_import", start),
            ms(&[0, 51, 102, 153])
        );
    }

    #[tokio::test(start_paused = true)]
    async fn each_client_of_a_shared_limiter_reads_its_own_pacing() {
        let limiter = Arc::new(KmsRateLimiter::default());
        let recorder = Arc::new(Recorder::throttling(1));
        let a = Arc::new(RateLimitedKms::new(recorder.clone(), limiter.clone(), 3));
        let b = Arc::new(RateLimitedKms::new(recorder.clone(), limiter.clone(), 3));
        assert_eq!(a.take_pacing(), None);
        // a's first GetParametersForImport is throttled, which halves the
        // rate: sent again 2.04 s later; b's waits another 2.04 s behind it.
        a.get_parameters_for_import(&key(), WrappingAlgorithm::RsaesOaepSha256)
            .await
            .unwrap();
        b.get_parameters_for_import(&key(), WrappingAlgorithm::RsaesOaepSha256)
            .await
            .unwrap();
        b.create_key("d", None, &[]).await.unwrap();
        let of_a = a.take_pacing().unwrap();
        assert_eq!(of_a.quotas_of, "AWS KMS");
        assert_eq!(
            of_a.operations,
            [OperationPacing {
                operation: "GetParametersForImport",
                paced_at_per_second: 1.0,
                waited: Duration::from_millis(2040),
                throttled: 1,
            }]
        );
        let of_b = b.take_pacing().unwrap();
        assert_eq!(of_b.operations.len(), 1, "CreateKey went at once: {of_b:?}");
        assert_eq!(of_b.operations[0].throttled, 0);
        assert_eq!(of_b.operations[0].waited, Duration::from_millis(2040));
        // Taken means gone.
        assert_eq!(a.take_pacing(), None);
        assert_eq!(b.take_pacing(), None);
        // The limiter's totals hold both.
        let stats = limiter.stats();
        assert_eq!(stats.len(), 18);
        let gpfi = stats
            .iter()
            .find(|s| s.operation == "GetParametersForImport")
            .unwrap();
        assert_eq!((gpfi.waits, gpfi.throttled), (2, 1));
        assert!(gpfi.rate_now < 1.0, "slowed down: {gpfi:?}");
        assert!(
            stats
                .iter()
                .any(|s| s.operation == "CreateAlias/UpdateAlias")
        );
    }
}
