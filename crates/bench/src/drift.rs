//! Scenario 7, drift: what a drift check costs by group size under AWS's
//! request quotas, how close a 10,000-key check comes to the least time the
//! quotas keyhold allows it leave (issue 21: at least 90% of it), what it
//! finds once AWS was changed behind keyhold's back and how long the
//! reconciliation takes, and whether a long check holds up the rotations of
//! other groups on the same credential.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use reqwest::Method;
use serde_json::{Value, json};

use keyhold_core::job::{GROUP_TAG, KEY_TAG};

use crate::kms_peer::{AWS_DEFAULT_QUOTAS, KmsPeer, OpCounts};
use crate::report::{self, Bar, Chart, Section, Stat, percentile};
use crate::server::{KeyholdProcess, ServeOptions, cpu_time_of, group_body};
use crate::{Context, Sizes};

/// The credential every group is on while measured: one AWS account and
/// Region, so the check and the rotations share one set of keyhold's
/// pacing buckets, as they do in production.
const ACCOUNT: &str = "account";

/// Credentials the groups are built with, taken in turn, one per rotation.
/// keyhold paces GetParametersForImport at one request per second per
/// credential and CreateKey at five: one group rotated 1,000 times on one
/// credential would take 17 minutes of pacing. Rotation after rotation on
/// the next credential of the cycle (the group's credential changed in
/// between), each credential is used again only after the whole cycle.
const BUILD_CREDENTIALS: usize = 48;

/// Between the starts of two measured rotations on [`ACCOUNT`]: half as
/// much again as the GetParametersForImport pacing interval (1 s and 2%),
/// so a rotation never waits for the previous one's turn and its latency is
/// its own. Closer, the peer's 1/s quota (a bucket of one request, as AWS
/// counts per second) throttles now and then, when scheduling on the shared
/// cores brings two rotations' requests less than a second apart; keyhold's
/// pacing then halves that operation's rate and wins it back over some
/// twenty rotations, which each wait for it meanwhile: a throttle's cost,
/// not the check's.
const ROTATION_GAP: Duration = Duration::from_millis(1500);

/// How long the peer holds each answer for the check that stands for one
/// against AWS: a round trip to AWS KMS from within or near its Region
/// (the loopback peer otherwise answers in well under a millisecond).
const AWS_ROUND_TRIP: Duration = Duration::from_millis(20);

/// A key policy someone widened in the console.
const WIDENED: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"root","Effect":"Allow","Principal":{"AWS":"*"},"Action":"kms:*","Resource":"*"}]}"#;

/// How often a job is polled: often enough for a 10-key check, a single
/// small GET for the server each time.
const POLL: Duration = Duration::from_millis(10);
const JOB_TIMEOUT: Duration = Duration::from_secs(900);

/// Issue 21's target: a 10,000-key check takes at most 1/0.9 of its
/// quota-bound minimum ([`quota_bound`]).
const EFFICIENCY_TARGET: f64 = 0.9;

/// Rotations beside a check are not starved while their p99 latency stays
/// within this factor of their p99 alone, or within [`STARVATION_SLACK_MS`]
/// of it where that is more. What a check can take from a rotation is CPU
/// on the shared cores, and turns in the one bucket they share
/// (DescribeKey's, where a rotation waits behind at most
/// `keyhold_core::drift::KEYS_IN_FLIGHT` of the check's requests, under
/// 10 ms): tens of milliseconds. A rotation held back by the check, for
/// its quota turns or for its group, would wait for seconds, the check's
/// length at worst. The bound tells the two apart on a machine where the
/// slowest of some seventy rotations (their nearest-rank p99) is a
/// scheduling stall of a few hundred milliseconds with or without a check.
const STARVATION_FACTOR: f64 = 2.0;
const STARVATION_SLACK_MS: f64 = 100.0;

/// The rate (requests per second) keyhold allows a drift check for
/// `operation`: a tenth of AWS's default quota for the check's own reads
/// (`crates/aws/src/rate_limit.rs`), DescribeKey at its whole quota, in the
/// bucket the rotations use too. `None` for operations a check does not send.
fn check_rate(operation: &str) -> Option<f64> {
    let quota = AWS_DEFAULT_QUOTAS
        .iter()
        .find(|(op, _)| *op == operation)
        .map(|(_, rate)| *rate)?;
    match operation {
        "DescribeKey" => Some(quota),
        "GetKeyPolicy" | "ListResourceTags" | "ListKeys" | "ListAliases" | "ListKeyRotations" => {
            Some(quota / 10.0)
        }
        _ => None,
    }
}

/// Operations a check sends as one paged listing, which keyhold paces as
/// one turn: the pages follow one another as fast as they are answered.
const LISTINGS: [&str; 2] = ["ListKeys", "ListAliases"];

/// The quota-bound minimum of one check that made `calls`: keyhold paces
/// each operation on its own, so the check needs at least, for each
/// operation, the turns it takes divided by the rate it is allowed
/// ([`check_rate`]), and no less than the slowest of those. A turn is a
/// request the peer accepted (a throttled one was sent again), or a whole
/// listing ([`LISTINGS`], one of each per check). In seconds, with the
/// operation that sets it.
fn quota_bound(calls: &Calls) -> (f64, String) {
    calls
        .iter()
        .filter_map(|(op, c)| {
            let turns = if LISTINGS.contains(&op.as_str()) {
                c.accepted.min(1)
            } else {
                c.accepted
            };
            Some((turns as f64 / check_rate(op)?, op.clone()))
        })
        .fold((0.0, String::new()), |slowest, this| {
            if this.0 > slowest.0 { this } else { slowest }
        })
}

/// The build credentials, taken in turn across groups.
struct Pool {
    names: Vec<String>,
    next: usize,
}

impl Pool {
    fn take(&mut self) -> String {
        let name = self.names[self.next % self.names.len()].clone();
        self.next += 1;
        name
    }
}

/// A group made for the scenario and its KMS keys, oldest first: the last
/// is the active key, the others were disabled by the rotation after them
/// (`disable_after_rotate`).
struct Built {
    name: String,
    kms_keys: Vec<String>,
}

async fn create_group(
    keyhold: &KeyholdProcess,
    token: &str,
    name: &str,
    credential: &str,
) -> anyhow::Result<()> {
    let mut body = group_body(name, credential, "30d");
    // Each rotation a new KMS key: a check reads every one of them.
    body["rotation_strategy"] = json!("new_key");
    let (status, answer) = keyhold
        .call(Method::POST, "/groups", Some(token), Some(body))
        .await?;
    if status != 201 {
        bail!("POST /groups ({name}): HTTP {status}: {answer}");
    }
    Ok(())
}

async fn use_credential(
    keyhold: &KeyholdProcess,
    token: &str,
    group: &str,
    credential: &str,
) -> anyhow::Result<()> {
    let (status, answer) = keyhold
        .call(
            Method::PATCH,
            &format!("/groups/{group}"),
            Some(token),
            Some(json!({"credential": credential})),
        )
        .await?;
    if status != 200 {
        bail!("PATCH /groups/{group} credential {credential}: HTTP {status}: {answer}");
    }
    Ok(())
}

/// Polls job `id` until it ends: its view, or an error naming why it did
/// not succeed.
async fn finish(keyhold: &KeyholdProcess, token: &str, id: &str) -> anyhow::Result<Value> {
    let deadline = Instant::now() + JOB_TIMEOUT;
    loop {
        let job = keyhold.get(&format!("/jobs/{id}"), token).await?;
        match job["status"].as_str() {
            Some("succeeded") => return Ok(job),
            Some("failed" | "cancelled") => bail!(
                "job {id} ({}, {}) ended {}: {}",
                job["title"],
                job["group"],
                job["status"],
                job["error"]
            ),
            _ => {}
        }
        if Instant::now() > deadline {
            bail!("job {id} did not end within {JOB_TIMEOUT:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Posts a request that queues a job (202); the job's id.
async fn start_job(
    keyhold: &KeyholdProcess,
    token: &str,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<String> {
    let (status, answer) = keyhold.call(Method::POST, path, Some(token), body).await?;
    if status != 202 {
        bail!("POST {path}: HTTP {status}: {answer}");
    }
    Ok(answer["id"]
        .as_str()
        .with_context(|| format!("POST {path} answered no job id: {answer}"))?
        .to_owned())
}

/// From the job's creation (the request that queued it) to its end, as the
/// server recorded them (microseconds), in seconds.
fn job_seconds(job: &Value) -> anyhow::Result<f64> {
    let at = |field: &str| -> anyhow::Result<chrono::DateTime<chrono::FixedOffset>> {
        let text = job[field]
            .as_str()
            .with_context(|| format!("job without {field}: {job}"))?;
        Ok(chrono::DateTime::parse_from_rfc3339(text)?)
    };
    let micros = (at("finished_at")? - at("created_at")?)
        .num_microseconds()
        .unwrap_or_default();
    Ok(micros as f64 / 1e6)
}

/// Creates group `name` and rotates it `rotations` times, each rotation on
/// the next build credential; then puts it on [`ACCOUNT`].
async fn build_group(
    keyhold: &KeyholdProcess,
    token: &str,
    name: &str,
    rotations: usize,
    pool: &mut Pool,
) -> anyhow::Result<Built> {
    let mut credential = pool.take();
    create_group(keyhold, token, name, &credential).await?;
    let mut kms_keys = Vec::with_capacity(rotations);
    for i in 0..rotations {
        if i > 0 {
            credential = pool.take();
            use_credential(keyhold, token, name, &credential).await?;
        }
        let id = keyhold.rotate(token, name).await?;
        let job = finish(keyhold, token, &id).await?;
        kms_keys.push(
            job["kms_key_id"]
                .as_str()
                .with_context(|| format!("rotation {id} of {name} names no KMS key"))?
                .to_owned(),
        );
    }
    use_credential(keyhold, token, name, ACCOUNT).await?;
    Ok(Built {
        name: name.to_owned(),
        kms_keys,
    })
}

/// Gives group `group` (created, never rotated) `copies` older keys at once,
/// as `copies` rotations would have left them, without the rotations: in
/// keyhold's database, rows copied from the key of `template` (a KMS key an
/// earlier rotation disabled) by bulk SQL through keyhold's own schema, as
/// scenario 4 seeds its groups, each with a KMS key of its own, versions
/// 1 to `copies`; in the peer, copies of that KMS key (disabled, the same
/// policy and material) tagged with the group and the key, as keyhold tags
/// the keys it creates. keyhold must not be running. The KMS key ids, oldest
/// first.
async fn seed_older_keys(
    data_dir: &std::path::Path,
    peer: &KmsPeer,
    group: &str,
    template: &str,
    copies: usize,
) -> anyhow::Result<Vec<String>> {
    use sqlx::Connection as _;
    let keys: Vec<(String, String)> = (0..copies)
        .map(|_| {
            (
                uuid::Uuid::new_v4().hyphenated().to_string(),
                uuid::Uuid::new_v4().hyphenated().to_string(),
            )
        })
        .collect();
    let mut conn = sqlx::SqliteConnection::connect(&crate::audit::sqlite_url(data_dir)).await?;
    let inserted = sqlx::query(
        "INSERT INTO keys (id, group_name, version, kms_key_id, check_digits, valid_from, \
           valid_to, state, keystore_handle, created_at, kms_material_id, material_state, \
           rotated_in) \
         SELECT json_extract(c.value, '$[0]'), $1, c.key + 1, json_extract(c.value, '$[1]'), \
           t.check_digits, t.valid_from, t.valid_to, t.state, t.keystore_handle, t.created_at, \
           t.kms_material_id, t.material_state, 0 \
         FROM json_each($2) c, (SELECT * FROM keys WHERE kms_key_id = $3) t",
    )
    .bind(group)
    .bind(serde_json::to_string(&keys)?)
    .bind(template)
    .execute(&mut conn)
    .await
    .context("seeding the older keys")?
    .rows_affected();
    if inserted != copies as u64 {
        bail!("seeded {inserted} keys of {copies}: is {template} a key of keyhold's?");
    }
    drop(conn);
    peer.copy_key(
        template,
        keys.iter()
            .map(|(key, kms_key)| {
                let tags = vec![
                    (GROUP_TAG.to_owned(), group.to_owned()),
                    (KEY_TAG.to_owned(), key.clone()),
                ];
                (kms_key.clone(), tags)
            })
            .collect(),
    )?;
    Ok(keys.into_iter().map(|(_, kms_key)| kms_key).collect())
}

/// The open findings of a group as sorted `(kind, subject)` pairs.
async fn open_findings(
    keyhold: &KeyholdProcess,
    token: &str,
    group: &str,
) -> anyhow::Result<BTreeSet<(String, String)>> {
    let found = keyhold
        .get(&format!("/drift/findings?group={group}&limit=1000"), token)
        .await?;
    Ok(found
        .as_array()
        .context("findings: not a list")?
        .iter()
        .map(|f| {
            (
                f["kind"].as_str().unwrap_or_default().to_owned(),
                f["subject"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect())
}

/// Calls per operation, accepted and throttled.
type Calls = BTreeMap<String, OpCounts>;

fn throttled(calls: &Calls) -> u64 {
    calls.values().map(|c| c.throttled).sum()
}

fn sent(calls: &Calls, op: &str) -> u64 {
    calls.get(op).map_or(0, |c| c.accepted + c.throttled)
}

/// One drift check of a group, timed, with the KMS calls it made.
struct CheckRun {
    seconds: f64,
    /// CPU time (user and system) `keyhold serve` used meanwhile, in seconds
    /// (the polling of the job's state, a few small GETs, included).
    cpu_seconds: f64,
    calls: Calls,
    open: BTreeSet<(String, String)>,
}

async fn check(
    keyhold: &KeyholdProcess,
    peer: &KmsPeer,
    token: &str,
    group: &str,
) -> anyhow::Result<CheckRun> {
    peer.reset_counts();
    let cpu_before = cpu_time_of(keyhold.pid())?;
    let id = start_job(
        keyhold,
        token,
        &format!("/drift/groups/{group}/check"),
        None,
    )
    .await?;
    let job = finish(keyhold, token, &id).await?;
    let cpu = cpu_time_of(keyhold.pid())?.saturating_sub(cpu_before);
    let calls = peer.counts();
    Ok(CheckRun {
        seconds: job_seconds(&job)?,
        cpu_seconds: cpu.as_secs_f64(),
        calls,
        open: open_findings(keyhold, token, group).await?,
    })
}

/// The peer's AWS API, as a console user or a pipeline calls it (JSON 1.1;
/// the peer does not check signatures). A throttled request is sent again
/// a little later, as the SDKs do.
struct AwsApi {
    http: reqwest::Client,
    endpoint: String,
}

impl AwsApi {
    async fn call(&self, operation: &str, body: Value) -> anyhow::Result<Value> {
        for _ in 0..100 {
            let response = self
                .http
                .post(&self.endpoint)
                .header("X-Amz-Target", format!("TrentService.{operation}"))
                .header("Content-Type", "application/x-amz-json-1.1")
                .body(body.to_string())
                .send()
                .await?;
            let status = response.status();
            let answer: Value =
                serde_json::from_str(&response.text().await?).unwrap_or(Value::Null);
            if status.is_success() {
                return Ok(answer);
            }
            if answer["__type"] != "ThrottlingException" {
                bail!("{operation} {body}: HTTP {status}: {answer}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("{operation} {body}: throttled 100 times")
    }
}

/// What was changed behind keyhold's back, and the findings it should make.
struct Drift {
    /// Older KMS keys changed (one change each).
    old_keys: usize,
    expected: BTreeSet<(String, String)>,
}

/// Changes a tenth of the group's older KMS keys (at least three, when the
/// group has them) through the peer's AWS API, each one way in turn:
/// enabled again, its policy widened, its `keyhold:key-id` tag removed;
/// then disables the active key and deletes the group's alias.
async fn make_drift(aws: &AwsApi, group: &Built) -> anyhow::Result<Drift> {
    let (active, old) = group
        .kms_keys
        .split_last()
        .context("a group without keys")?;
    let changed = (old.len() / 10).max(old.len().min(3));
    let mut expected = BTreeSet::new();
    for j in 0..changed {
        let key = &old[j * old.len() / changed];
        let kind = match j % 3 {
            0 => {
                aws.call("EnableKey", json!({"KeyId": key})).await?;
                "state_differs"
            }
            1 => {
                aws.call(
                    "PutKeyPolicy",
                    json!({"KeyId": key, "PolicyName": "default", "Policy": WIDENED}),
                )
                .await?;
                "policy_differs"
            }
            _ => {
                aws.call(
                    "UntagResource",
                    json!({"KeyId": key, "TagKeys": ["keyhold:key-id"]}),
                )
                .await?;
                "tags_missing"
            }
        };
        expected.insert((kind.to_owned(), key.clone()));
    }
    aws.call("DisableKey", json!({"KeyId": active})).await?;
    expected.insert(("state_differs".to_owned(), active.clone()));
    let alias = format!("alias/{}", group.name);
    aws.call("DeleteAlias", json!({"AliasName": alias})).await?;
    expected.insert(("alias_missing".to_owned(), alias));
    Ok(Drift {
        old_keys: changed,
        expected,
    })
}

/// The drift made in one group, found, and put right.
struct Reconciled {
    keys: usize,
    drift: Drift,
    check: CheckRun,
    repairs: usize,
    seconds: f64,
    calls: Calls,
    open_after: usize,
}

async fn drift_and_reconcile(
    keyhold: &KeyholdProcess,
    peer: &KmsPeer,
    aws: &AwsApi,
    token: &str,
    group: &Built,
) -> anyhow::Result<Reconciled> {
    let drift = make_drift(aws, group).await?;
    let found = check(keyhold, peer, token, &group.name).await?;
    let plan = keyhold
        .get(&format!("/drift/groups/{}/plan", group.name), token)
        .await?;
    let repairs = plan["actions"].as_array().map_or(0, Vec::len);
    peer.reset_counts();
    let id = start_job(
        keyhold,
        token,
        &format!("/drift/groups/{}/reconcile", group.name),
        Some(json!({"plan": plan["digest"]})),
    )
    .await?;
    let job = finish(keyhold, token, &id).await?;
    let calls = peer.counts();
    Ok(Reconciled {
        keys: group.kms_keys.len(),
        drift,
        check: found,
        repairs,
        seconds: job_seconds(&job)?,
        calls,
        open_after: open_findings(keyhold, token, &group.name).await?.len(),
    })
}

/// How long a series of rotations goes on.
#[derive(Clone, Copy)]
enum Until<'a> {
    /// This many rotations.
    Count(usize),
    /// Until the job (a check) with this id has ended.
    Ends(&'a str),
}

/// Force Rotates of the rotation groups, taken in turn, one every
/// [`ROTATION_GAP`], each followed to its end, `until` says when to stop.
/// Each rotation's latency in ms and when it ended.
async fn rotations(
    keyhold: &KeyholdProcess,
    token: &str,
    groups: &[Built],
    until: Until<'_>,
) -> anyhow::Result<Vec<(f64, String)>> {
    if groups.is_empty() {
        bail!("no group to rotate");
    }
    let started = tokio::time::Instant::now();
    let mut done = Vec::new();
    for i in 0.. {
        if let Until::Count(n) = until
            && i >= n
        {
            break;
        }
        tokio::time::sleep_until(started + ROTATION_GAP * u32::try_from(i)?).await;
        if let Until::Ends(check) = until {
            let job = keyhold.get(&format!("/jobs/{check}"), token).await?;
            if job["finished_at"].is_string() {
                break;
            }
        }
        let group = &groups[i % groups.len()];
        let id = keyhold.rotate(token, &group.name).await?;
        let job = finish(keyhold, token, &id).await?;
        done.push((
            job_seconds(&job)? * 1000.0,
            job["finished_at"].as_str().unwrap_or_default().to_owned(),
        ));
    }
    Ok(done)
}

/// Rotations alone, then during a check of the largest group.
struct Contention {
    alone: Vec<f64>,
    during: Vec<f64>,
    /// Of `during`, those that ended before the check did.
    overlapped: usize,
    check_seconds: f64,
    check_keys: usize,
    /// Every call the peer answered while the check ran, the rotations' too.
    calls_during: Calls,
    throttled_alone: u64,
}

async fn contention(
    keyhold: &KeyholdProcess,
    peer: &KmsPeer,
    token: &str,
    rotation_groups: &[Built],
    checked: &Built,
    alone_rotations: usize,
) -> anyhow::Result<Contention> {
    peer.reset_counts();
    let alone = rotations(
        keyhold,
        token,
        rotation_groups,
        Until::Count(alone_rotations),
    )
    .await?;
    let throttled_alone = throttled(&peer.counts());
    tokio::time::sleep(ROTATION_GAP).await;
    peer.reset_counts();
    let id = start_job(
        keyhold,
        token,
        &format!("/drift/groups/{}/check", checked.name),
        None,
    )
    .await?;
    // The rotations start once the check has begun reading.
    let deadline = Instant::now() + JOB_TIMEOUT;
    loop {
        let job = keyhold.get(&format!("/jobs/{id}"), token).await?;
        if job["status"] != "queued" || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    let during = rotations(keyhold, token, rotation_groups, Until::Ends(&id)).await?;
    let job = finish(keyhold, token, &id).await?;
    let calls_during = peer.counts();
    let check_end = job["finished_at"].as_str().unwrap_or_default();
    // The same fixed-width UTC form: text order is time order.
    let overlapped = during
        .iter()
        .filter(|(_, end)| end.as_str() <= check_end)
        .count();
    Ok(Contention {
        alone: alone.into_iter().map(|(ms, _)| ms).collect(),
        during: during.into_iter().map(|(ms, _)| ms).collect(),
        overlapped,
        check_seconds: job_seconds(&job)?,
        check_keys: checked.kms_keys.len(),
        calls_during,
        throttled_alone,
    })
}

/// A count per key: whole numbers as such.
fn per_key(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

fn kinds(found: &BTreeSet<(String, String)>) -> String {
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for (kind, _) in found {
        *by_kind.entry(kind.as_str()).or_default() += 1;
    }
    by_kind
        .iter()
        .map(|(kind, n)| format!("{n} `{kind}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The nearest-rank p99 of `samples`.
fn p99(samples: &[f64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    percentile(&sorted, 99.0)
}

pub async fn run(ctx: &Context, sizes: &Sizes) -> anyhow::Result<Section> {
    let begun = Instant::now();
    let group_keys = sizes.drift_keys;
    eprintln!(
        "drift: groups of {} keys rotated, one of {} keys seeded, {} rotation groups",
        group_keys
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(" and "),
        sizes.drift_seeded,
        sizes.drift_rotations
    );
    let peer = KmsPeer::start_faithful().await?;
    let data_dir = ctx
        .work
        .join(format!("drift-{}", uuid::Uuid::new_v4().simple()));
    let keyhold = KeyholdProcess::spawn(&ctx.keyhold, &data_dir, &ServeOptions::default())?;
    let token = keyhold.dual_session().await?;
    keyhold
        .import_credential(&token, ACCOUNT, &peer.endpoint)
        .await?;
    let mut pool = Pool {
        names: (0..BUILD_CREDENTIALS)
            .map(|i| format!("build-{i}"))
            .collect(),
        next: 0,
    };
    for name in &pool.names {
        keyhold
            .import_credential(&token, name, &peer.endpoint)
            .await?;
    }

    // Built with the peer's quotas off: CreateKey's 5/s would take minutes.
    let building = Instant::now();
    let mut checked = Vec::new();
    for n in group_keys {
        checked.push(build_group(&keyhold, &token, &format!("drift-{n:05}"), n, &mut pool).await?);
    }
    let mut rotation_groups = Vec::new();
    for i in 0..sizes.drift_rotations {
        rotation_groups
            .push(build_group(&keyhold, &token, &format!("rot-{i:03}"), 1, &mut pool).await?);
    }
    let built_in = building.elapsed();

    // The largest group: its older keys seeded with keyhold stopped, its
    // active key made by a Force Rotate.
    let seeding = Instant::now();
    let seeded_name = format!("seeded-{:05}", sizes.drift_seeded);
    create_group(&keyhold, &token, &seeded_name, &pool.take()).await?;
    keyhold.stop()?;
    let template = checked
        .iter()
        .find(|g| g.kms_keys.len() > 1)
        .and_then(|g| g.kms_keys.first())
        .context("no rotated group has a disabled key to copy")?;
    let mut seeded_keys = seed_older_keys(
        &data_dir,
        &peer,
        &seeded_name,
        template,
        sizes.drift_seeded.saturating_sub(1),
    )
    .await?;
    let keyhold = KeyholdProcess::spawn(&ctx.keyhold, &data_dir, &ServeOptions::default())?;
    let token = keyhold.dual_session().await?;
    let id = keyhold.rotate(&token, &seeded_name).await?;
    let job = finish(&keyhold, &token, &id).await?;
    seeded_keys.push(
        job["kms_key_id"]
            .as_str()
            .with_context(|| format!("rotation {id} of {seeded_name} names no KMS key"))?
            .to_owned(),
    );
    use_credential(&keyhold, &token, &seeded_name, ACCOUNT).await?;
    let seeded = Built {
        name: seeded_name,
        kms_keys: seeded_keys,
    };
    let seeded_in = seeding.elapsed();
    let built_groups = checked.len();
    checked.push(seeded);
    let region_keys = checked
        .iter()
        .chain(&rotation_groups)
        .map(|g| g.kms_keys.len())
        .sum::<usize>();
    peer.set_quotas(true);

    // 1. Checks of groups AWS holds as keyhold left them.
    let mut clean: Vec<Vec<CheckRun>> = Vec::new();
    for group in &checked {
        eprintln!("drift: checking the {}-key group", group.kms_keys.len());
        let mut runs = Vec::new();
        for _ in 0..sizes.runs {
            runs.push(check(&keyhold, &peer, &token, &group.name).await?);
        }
        clean.push(runs);
    }
    // 1b. The largest group once more, each answer held as long as a round
    // trip to AWS.
    let far = {
        let largest = checked
            .iter()
            .max_by_key(|g| g.kms_keys.len())
            .context("no group to check")?;
        eprintln!(
            "drift: checking the {}-key group with {} ms round trips",
            largest.kms_keys.len(),
            AWS_ROUND_TRIP.as_millis()
        );
        peer.set_latency(AWS_ROUND_TRIP);
        let far = check(&keyhold, &peer, &token, &largest.name).await;
        peer.set_latency(Duration::ZERO);
        far?
    };
    // 2. Drift made out of band, found, and reconciled, in the groups built
    // by rotations.
    let aws = AwsApi {
        http: keyhold.http.clone(),
        endpoint: peer.endpoint.clone(),
    };
    let mut reconciled = Vec::new();
    for group in &checked[..built_groups] {
        reconciled.push(drift_and_reconcile(&keyhold, &peer, &aws, &token, group).await?);
    }
    // 3. Rotations of other groups alone, as many as fit in the largest
    // group's check, then during a check of it.
    let (largest, largest_runs) = checked
        .iter()
        .zip(&clean)
        .max_by_key(|(g, _)| g.kms_keys.len())
        .context("no group to check")?;
    let largest_alone = Stat::of(&largest_runs.iter().map(|r| r.seconds).collect::<Vec<_>>());
    let alone_rotations = ((largest_alone.median / ROTATION_GAP.as_secs_f64()).ceil() as usize)
        .max(rotation_groups.len());
    eprintln!("drift: {alone_rotations} rotations alone, then beside a check");
    let contention = contention(
        &keyhold,
        &peer,
        &token,
        &rotation_groups,
        largest,
        alone_rotations,
    )
    .await?;
    keyhold.stop()?;
    let _ = std::fs::remove_dir_all(&data_dir);
    eprintln!("drift: {:.0} s in all", begun.elapsed().as_secs_f64());

    let mut problems: Vec<String> = Vec::new();
    let mut section = Section::new("7. Drift check (faithful KMS peer under AWS's quotas)")
        .headers(&[
            "Keys in the group",
            "Check wall time (s)",
            "Quota-bound minimum (s)",
            "Minimum ÷ wall time",
            "ms per key",
            "KMS calls per key",
            "Throttled calls",
            "Open findings",
        ]);
    // Per group: the median wall time and the quota-bound minimum (the
    // same calls each run).
    let mut bounds: Vec<(f64, f64, String)> = Vec::new();
    for (group, runs) in checked.iter().zip(&clean) {
        let n = group.kms_keys.len();
        let seconds: Vec<f64> = runs.iter().map(|r| r.seconds).collect();
        let ms_per_key: Vec<f64> = seconds.iter().map(|s| s * 1000.0 / n as f64).collect();
        let calls: u64 = runs
            .iter()
            .flat_map(|r| r.calls.values())
            .map(|c| c.accepted + c.throttled)
            .sum();
        let open: BTreeSet<(String, String)> =
            runs.iter().flat_map(|r| r.open.iter().cloned()).collect();
        if !open.is_empty() {
            problems.push(format!(
                "a check of the untouched {n}-key group found {}",
                kinds(&open)
            ));
        }
        let minimum: Vec<(f64, String)> = runs.iter().map(|r| quota_bound(&r.calls)).collect();
        let minimum_s = Stat::of(&minimum.iter().map(|m| m.0).collect::<Vec<_>>()).median;
        let slowest = minimum.first().map(|m| m.1.clone()).unwrap_or_default();
        let wall = Stat::of(&seconds);
        let efficiency: Vec<f64> = runs
            .iter()
            .zip(&minimum)
            .map(|(r, m)| m.0 / r.seconds)
            .collect();
        bounds.push((wall.median, minimum_s, slowest.clone()));
        section.row(vec![
            n.to_string(),
            wall.show(2),
            format!("{minimum_s:.2} ({slowest})"),
            percent(&Stat::of(&efficiency)),
            Stat::of(&ms_per_key).show(2),
            per_key(calls as f64 / (runs.len() * n) as f64),
            runs.iter()
                .map(|r| throttled(&r.calls))
                .sum::<u64>()
                .to_string(),
            open.len().to_string(),
        ]);
    }
    let (largest_wall, largest_minimum, largest_slowest) =
        bounds
            .last()
            .cloned()
            .unwrap_or((f64::NAN, f64::NAN, String::new()));
    let largest_efficiency = largest_minimum / largest_wall;
    let largest_throttled: u64 = largest_runs.iter().map(|r| throttled(&r.calls)).sum();
    let seeded_keys = largest.kms_keys.len();
    section.text = format!(
        "A drift check (\"Check HSM protected keys\", `POST \
         /api/v1/drift/groups/{{group}}/check`) of one key group, timed from the request \
         that queued the job to the job's end (the server's `created_at` and \
         `finished_at`), in one `keyhold serve` process (software keystore, SQLite) \
         against the benchmark's KMS peer in its faithful mode (key states derived \
         from the imported material, policies, tags, aliases and the listings kept as AWS \
         keeps them) with AWS's default request quotas enforced, as in scenario 3, for \
         the whole measurement. Each group rotates by `new_key`, so a group of N keys \
         is N KMS keys: the active one and N − 1 that its rotations disabled. The \
         groups of {rotated} keys were built by Force Rotates with the peer's quotas \
         off, on {build} credentials taken in turn (the group's credential changed \
         before each rotation; keyhold paces GetParametersForImport at 1/s per \
         credential, and one group's rotations on one credential would take N \
         seconds): {built_in:.0} s, the {rotations} one-key groups of the rotations \
         below included. The group of {seeded_keys} keys was seeded instead \
         ({seeded_in:.1} s): created through the API, then, with keyhold stopped, its \
         {older} older keys copied by bulk SQL through keyhold's own schema (as \
         scenario 4 seeds) from a key an earlier rotation disabled, each with a KMS key \
         of its own made in the peer as a copy of that key's (disabled, the same policy \
         and material) with keyhold's tags for the group and the key; then its active \
         key made by a Force Rotate. A check reads only what it finds there, so it \
         cannot tell the two apart. Then every group was put on one credential, as one \
         AWS account: the checks, the repairs and the rotations below share keyhold's \
         pacing buckets for that account and Region, and the peer's quotas. The \
         Region's listings hold every group's keys ({region_keys} KMS keys, {aliases} \
         aliases with the 3 AWS predefines). Each group was checked {runs} times while \
         AWS held what keyhold left there; figures are the median (min–max) over \
         those checks, KMS calls those the peer answered during them (accepted and \
         throttled), per KMS key of the group.\n\n\
         **What a check reads, and at what pace.** DescribeKey, GetKeyPolicy (the groups \
         have a policy) and ListResourceTags per KMS key, and one ListAliases and one \
         ListKeys listing per check (paged: 100 aliases, 1,000 keys to a page), whatever \
         the group's size. keyhold paces the check's own reads at a tenth of AWS's \
         default quotas (GetKeyPolicy 100/s, ListResourceTags 200/s, ListAliases and \
         ListKeys 50/s, ListKeyRotations 10/s) and DescribeKey in the rotations' \
         bucket at its quota (2,000/s). A tenth, because a check is background work \
         that nobody waits for and, in a big group, runs for minutes: AWS counts every \
         principal of the account in the same per-operation quotas, so at the whole \
         quota a check would leave nothing to the rotations, their repairs and every \
         other tool of the account while it runs; at a tenth nine tenths stay theirs. \
         The check keeps {in_flight} keys' reads under way at once, each request still \
         waiting for its operation's turn, and takes their answers in key order.\n\n\
         **Quota-bound minimum.** The least time a check's reads need at the rates \
         keyhold allows a check: each operation is paced on its own, so the check \
         needs, for each operation, the turns it takes divided by its rate above, and \
         no less than the slowest of those: max over operations of turns ÷ rate. A \
         turn is a request the peer accepted, except that keyhold paces a listing as \
         one turn, its pages following one another as fast as they are answered \
         ({listing_pages} ListKeys pages here, in a fraction of a second). For a group with a policy \
         that is GetKeyPolicy's, one request per KMS key at 100/s, 10 ms per key \
         (ListResourceTags needs half of it, DescribeKey a twentieth); a group of a \
         few keys is bound by round trips, not by the quotas. keyhold leaves its \
         requests 2% further apart than the rate (jitter margin), so about 98% is the \
         most a check can reach. **Minimum ÷ wall time** is that minimum \
         over the check's wall time (issue 21's target: at least {target:.0}% for \
         the {seeded_keys}-key check). The job's own work (reading the group's keys \
         and findings from the store, comparing, committing) counts in the wall time.",
        rotated = checked[..built_groups]
            .iter()
            .map(|g| g.kms_keys.len().to_string())
            .collect::<Vec<_>>()
            .join(" and "),
        build = BUILD_CREDENTIALS,
        built_in = built_in.as_secs_f64(),
        rotations = rotation_groups.len(),
        seeded_in = seeded_in.as_secs_f64(),
        older = seeded_keys.saturating_sub(1),
        aliases = checked.len() + rotation_groups.len() + 3,
        runs = sizes.runs,
        in_flight = keyhold_core::drift::KEYS_IN_FLIGHT,
        target = EFFICIENCY_TARGET * 100.0,
        listing_pages = largest_runs
            .first()
            .map_or(0, |r| sent(&r.calls, "ListKeys")),
    );

    // Calls per key by operation.
    let mut operations: BTreeSet<&String> = BTreeSet::new();
    for runs in &clean {
        for r in runs {
            operations.extend(r.calls.keys());
        }
    }
    let mut call_rows: Vec<Vec<String>> = operations
        .iter()
        .map(|op| {
            let mut row = vec![(*op).clone()];
            for (group, runs) in checked.iter().zip(&clean) {
                let calls: u64 = runs.iter().map(|r| sent(&r.calls, op)).sum();
                let per_check = calls as f64 / runs.len() as f64;
                row.push(format!(
                    "{} ({})",
                    per_key(per_check / group.kms_keys.len() as f64),
                    per_key(per_check)
                ));
            }
            row
        })
        .collect();
    let mut total_row = vec!["**All KMS calls**".to_owned()];
    for (group, runs) in checked.iter().zip(&clean) {
        let calls: u64 = runs
            .iter()
            .flat_map(|r| r.calls.values())
            .map(|c| c.accepted + c.throttled)
            .sum();
        let per_check = calls as f64 / runs.len() as f64;
        total_row.push(format!(
            "**{} ({})**",
            per_key(per_check / group.kms_keys.len() as f64),
            per_key(per_check)
        ));
    }
    call_rows.push(total_row);
    let call_headers: Vec<String> = std::iter::once("Operation".to_owned())
        .chain(
            checked
                .iter()
                .map(|g| format!("{} keys: per key (per check)", g.kms_keys.len())),
        )
        .collect();

    // Drift found and reconciled.
    let mut drift_rows = Vec::new();
    for r in &reconciled {
        let missed: Vec<_> = r.drift.expected.difference(&r.check.open).collect();
        let extra: Vec<_> = r.check.open.difference(&r.drift.expected).collect();
        if !missed.is_empty() || !extra.is_empty() {
            problems.push(format!(
                "in the {}-key group the check missed {missed:?} and found {extra:?} besides",
                r.keys
            ));
        }
        if r.open_after > 0 {
            problems.push(format!(
                "in the {}-key group {} findings were still open after the reconciliation",
                r.keys, r.open_after
            ));
        }
        drift_rows.push(vec![
            r.keys.to_string(),
            format!("{} older keys, the active key, the alias", r.drift.old_keys),
            r.drift.expected.len().to_string(),
            format!(
                "{} ({})",
                r.check.open.intersection(&r.drift.expected).count(),
                kinds(&r.check.open)
            ),
            format!("{:.2}", r.check.seconds),
            r.repairs.to_string(),
            format!("{:.2}", r.seconds),
            (throttled(&r.check.calls) + throttled(&r.calls)).to_string(),
            r.open_after.to_string(),
        ]);
    }
    let repair_ops: Vec<String> = reconciled
        .last()
        .map(|r| {
            r.calls
                .iter()
                .map(|(op, c)| format!("{op} {}", c.accepted + c.throttled))
                .collect()
        })
        .unwrap_or_default();

    // Rotations beside a check.
    let c = &contention;
    let alone = Stat::of(&c.alone);
    let during = Stat::of(&c.during);
    let (p99_alone, p99_during) = (p99(&c.alone), p99(&c.during));
    let p99_allowed = (p99_alone * STARVATION_FACTOR).max(p99_alone + STARVATION_SLACK_MS);
    // No rotation during the check (a NaN p99) is not a criterion met.
    let not_starved = p99_during <= p99_allowed;
    let throttled_ops: Vec<String> = c
        .calls_during
        .iter()
        .filter(|(_, counts)| counts.throttled > 0)
        .map(|(op, counts)| format!("{op} {}", counts.throttled))
        .collect();
    let throttled_ops_during = if throttled_ops.is_empty() {
        "none".to_owned()
    } else {
        throttled_ops.join(", ")
    };
    let rotation_rows = vec![
        vec![
            "alone".to_owned(),
            c.alone.len().to_string(),
            alone.show(1),
            format!("{p99_alone:.1}"),
            c.throttled_alone.to_string(),
        ],
        vec![
            format!("during a check of the {}-key group", c.check_keys),
            c.during.len().to_string(),
            during.show(1),
            format!("{p99_during:.1}"),
            throttled(&c.calls_during).to_string(),
        ],
    ];
    if c.during.is_empty() {
        problems.push("no rotation started while the check ran".to_owned());
    }
    let (during_minimum, _) = quota_bound(&c.calls_during);
    let (far_minimum, _) = quota_bound(&far.calls);
    if !far.open.is_empty() {
        problems.push(format!(
            "the check with {} ms round trips found {}",
            AWS_ROUND_TRIP.as_millis(),
            kinds(&far.open)
        ));
    }
    // One key after the other, a key's three reads wait for each other's
    // round trips: a lower bound of that, for the text.
    let one_at_a_time = 3.0 * AWS_ROUND_TRIP.as_secs_f64() * seeded_keys as f64;
    let during_efficiency = during_minimum / c.check_seconds;
    let verdict = |met: bool| if met { "met" } else { "**not met**" };

    section.notes = format!(
        "**The {seeded_keys}-key check against its minimum.** Wall time {wall} s \
         (median of {runs}), quota-bound minimum {minimum:.2} s (set by \
         {slowest}): {efficiency:.1}% of the minimum's pace, target {target:.0}% \
         {target_verdict}. {throttled_largest} of its calls were throttled; \
         `keyhold serve` used {cpu} s of CPU during it ({cpu_share:.0}% of one \
         core). Beside \
         the rotations below it took {during_check:.2} s for a minimum of \
         {during_minimum:.2} s ({during_efficiency:.1}%). With every answer of the \
         peer held {round_trip} ms, as long as a round trip to AWS KMS takes (the \
         loopback peer answers in well under a millisecond), one check took \
         {far_seconds:.2} s for a minimum of {far_minimum:.2} s ({far_efficiency:.1}%), \
         {far_throttled} calls throttled: with {in_flight} keys in flight the round \
         trips overlap and the quotas set the pace. One key after the other, each key \
         would wait for its three reads' round trips in turn, {per_key_ms} ms a key \
         at least, {one_at_a_time:.0} s for the group ({one_at_a_time_efficiency:.0}% \
         of the minimum's pace).\n\n\
         KMS calls of a check, by operation: per KMS key of the group, and per check in \
         brackets (the mean over the {runs} checks):\n\n{calls}\n\
         **Drift made out of band.** Through the peer's AWS API (as a console user or \
         a pipeline would, a throttled request sent again), in each group built by \
         rotations: a tenth of \
         the older KMS keys (at least three where the group has them, spread evenly) \
         changed one way each in turn, enabled again (`state_differs`), the key policy \
         widened (`policy_differs`), or the `keyhold:key-id` tag removed \
         (`tags_missing`); and the active key disabled (`state_differs`) and the \
         group's alias deleted (`alias_missing`). Then a check (timed as above), the \
         group's reconcile plan (`GET /api/v1/drift/groups/{{group}}/plan`), and the \
         reconciliation applied by two officers (`POST …/reconcile` with the plan's \
         digest): one step per repair, each paced at its operation's quota (DisableKey \
         and EnableKey 5/s, PutKeyPolicy 15/s, TagResource 10/s, UpdateAlias and CreateAlias 5/s), \
         then the recheck, a whole check again, which clears what the repairs \
         resolved; its time is the job's, from the request to its end. Findings found \
         counts those the check reported that were made (the kinds it reported in \
         brackets); open after is what the findings listing holds after the \
         reconciliation. (The {seeded_keys}-key group is left out: a tenth of its keys \
         changed would be a plan of a thousand repairs, most at 5/s, which measures \
         the repairs' quotas, not keyhold.)\n\n{drift}\n\
         KMS calls of the last reconciliation: {repair_ops}.\n\n\
         **Rotations during a check.** {groups} other groups on the same credential \
         (one KMS key each to begin with) were Force-Rotated in turn, a rotation \
         starting every {gap:.2} s (half as much again as keyhold's \
         GetParametersForImport pacing interval, so that no rotation waits for \
         another's turn, nor meets the peer's 1/s quota when scheduling on the shared \
         cores brings two of them closer), each followed to \
         its end: first {n_alone} alone (as many as fit in the check's time), then \
         while a check of the {keys}-key group ran (the rotations start once the \
         check's job is running, and stop when it has ended). Latency is from the \
         Force Rotate request to the job's end, as the server recorded them; median \
         (min–max) and nearest-rank p99 over the rotations (under 100 rotations, \
         the slowest). {overlapped} of the {n_during} rotations during the check \
         ended before it did. Throttled calls are those the peer refused with \
         `ThrottlingException` during each phase, all callers counted (during the \
         check: {throttled_ops_during}). **Not starved** means a rotation beside the \
         check is not held back by it: their p99 beside the check within \
         {factor:.0}× their p99 alone, or {slack:.0} ms of it where that is more. What \
         a check can take from a rotation is CPU on the shared cores, and turns in \
         the one pacing bucket they share (DescribeKey's, where a rotation waits behind \
         at most {in_flight} of the check's requests, under 10 ms): tens of \
         milliseconds. A rotation held back by the check, for quota turns or for its \
         group, would wait for seconds, the check's length at worst; the bound tells \
         the two apart on a machine where the slowest of {n_alone} rotations can be a \
         stall of a few hundred milliseconds with or without a check. Here \
         {p99_during:.1} ms against {p99_allowed:.1} ms allowed: {starved_verdict}; \
         the median moved from {median_alone:.1} ms to {median_during:.1} ms.\n\n{rotations}",
        wall = Stat::of(&largest_runs.iter().map(|r| r.seconds).collect::<Vec<_>>()).show(2),
        runs = sizes.runs,
        minimum = largest_minimum,
        slowest = largest_slowest,
        efficiency = largest_efficiency * 100.0,
        target = EFFICIENCY_TARGET * 100.0,
        target_verdict = verdict(largest_efficiency >= EFFICIENCY_TARGET),
        throttled_largest = largest_throttled,
        cpu = Stat::of(
            &largest_runs
                .iter()
                .map(|r| r.cpu_seconds)
                .collect::<Vec<_>>()
        )
        .show(1),
        cpu_share = Stat::of(
            &largest_runs
                .iter()
                .map(|r| r.cpu_seconds / r.seconds * 100.0)
                .collect::<Vec<_>>()
        )
        .median,
        during_check = c.check_seconds,
        during_efficiency = during_efficiency * 100.0,
        round_trip = AWS_ROUND_TRIP.as_millis(),
        far_seconds = far.seconds,
        far_minimum = far_minimum,
        far_efficiency = far_minimum / far.seconds * 100.0,
        far_throttled = throttled(&far.calls),
        in_flight = keyhold_core::drift::KEYS_IN_FLIGHT,
        per_key_ms = 3 * AWS_ROUND_TRIP.as_millis(),
        one_at_a_time = one_at_a_time,
        one_at_a_time_efficiency = largest_minimum / one_at_a_time * 100.0,
        calls = report::table(&call_headers, &call_rows),
        drift = report::table(
            &[
                "Keys in the group",
                "Changed out of band",
                "Findings expected",
                "Findings found",
                "Check wall time (s)",
                "Repairs in the plan",
                "Reconcile job (s)",
                "Throttled calls",
                "Open after",
            ],
            &drift_rows,
        ),
        repair_ops = if repair_ops.is_empty() {
            "none".to_owned()
        } else {
            repair_ops.join(", ")
        },
        groups = rotation_groups.len(),
        gap = ROTATION_GAP.as_secs_f64(),
        n_alone = c.alone.len(),
        keys = c.check_keys,
        overlapped = c.overlapped,
        n_during = c.during.len(),
        factor = STARVATION_FACTOR,
        median_alone = alone.median,
        median_during = during.median,
        slack = STARVATION_SLACK_MS,
        starved_verdict = verdict(not_starved),
        rotations = report::table(
            &[
                "Force Rotate of another group",
                "Rotations",
                "Latency (ms)",
                "p99 (ms)",
                "Throttled calls",
            ],
            &rotation_rows,
        ),
    );
    section.charts.push(Chart {
        slug: "drift-check-ms-per-key".into(),
        title: "Drift check: wall time per KMS key".into(),
        unit: "ms per key of the group, median with min–max over the checks; the pace is keyhold's"
            .into(),
        bars: checked
            .iter()
            .zip(&clean)
            .map(|(g, runs)| {
                let n = g.kms_keys.len() as f64;
                Bar {
                    label: format!("group of {} keys", g.kms_keys.len()),
                    stat: Stat::of(
                        &runs
                            .iter()
                            .map(|r| r.seconds * 1000.0 / n)
                            .collect::<Vec<_>>(),
                    ),
                }
            })
            .collect(),
    });
    section.charts.push(Chart {
        slug: "drift-rotation-latency".into(),
        title: "Force Rotate latency beside a drift check".into(),
        unit: "ms from the request to the job's end, median with min–max; lower is better".into(),
        bars: vec![
            Bar {
                label: "alone".into(),
                stat: alone,
            },
            Bar {
                label: format!("during a check of {} keys", c.check_keys),
                stat: during,
            },
        ],
    });
    if !problems.is_empty() {
        section.notes.push_str(&format!(
            "\n**Not as expected:** {}.\n",
            problems.join("; ")
        ));
        section.failure = Some(problems.join("; "));
    }
    Ok(section)
}

/// A ratio as a percentage, median with min–max.
fn percent(stat: &Stat) -> String {
    if stat.runs <= 1 {
        return format!("{:.1}%", stat.median * 100.0);
    }
    format!(
        "{:.1}% ({:.1}–{:.1})",
        stat.median * 100.0,
        stat.min * 100.0,
        stat.max * 100.0
    )
}
