//! Scenario 6, rotation in place: the two rotation strategies side by side
//! against the zero-latency KMS peer, with the KMS calls each rotation
//! makes, and what a `new_material` group does at the on-demand rotation
//! limit.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::{Value, json};

use crate::engine::rotate_all;
use crate::kms_peer::{KmsPeer, MAX_ON_DEMAND_ROTATIONS};
use crate::report::{self, Bar, Chart, Section, Stat};
use crate::server::{KeyholdProcess, ServeOptions, group_body};
use crate::{Context, Sizes};

const NEW_KEY: &str = "new_key";
const NEW_MATERIAL: &str = "new_material";

/// The groups of one strategy, and when their last pass ended.
struct Groups {
    names: Vec<String>,
    last_pass_end: Option<Instant>,
}

/// keyhold paces GetParametersForImport at one request per second per
/// credential and Region, without a burst (`crates/aws/src/rate_limit.rs`):
/// a pass that followed the same groups' previous one closer than this would
/// measure the pacing, not the rotations.
const PACING_GAP: Duration = Duration::from_millis(1100);

/// One pass: every group of one strategy Force-Rotated once.
struct Pass {
    rotations: usize,
    wall: Duration,
    cpu: Duration,
    failed: usize,
    first_error: Option<String>,
    /// KMS calls per operation during the pass (the peer's counts).
    calls: BTreeMap<String, u64>,
}

/// Passes of one kind added up: their KMS calls, failures and timings.
#[derive(Default)]
struct Tally {
    rotations: usize,
    failed: usize,
    first_error: Option<String>,
    calls: BTreeMap<String, u64>,
    per_second: Vec<f64>,
    cpu_ms: Vec<f64>,
    wall_ms: Vec<f64>,
    /// Steps of the groups' rotation jobs (`steps_total`).
    steps: BTreeSet<u64>,
}

impl Tally {
    fn add(&mut self, pass: Pass, states: &[GroupState]) {
        let n = pass.rotations as f64;
        self.rotations += pass.rotations;
        self.failed += pass.failed;
        if self.first_error.is_none() {
            self.first_error = pass.first_error;
        }
        for (op, calls) in pass.calls {
            *self.calls.entry(op).or_default() += calls;
        }
        self.per_second.push(n / pass.wall.as_secs_f64());
        self.cpu_ms.push(pass.cpu.as_secs_f64() * 1000.0 / n);
        self.wall_ms.push(pass.wall.as_secs_f64() * 1000.0 / n);
        self.steps.extend(states.iter().map(|s| s.steps));
    }

    fn calls_per_rotation(&self) -> f64 {
        self.calls.values().sum::<u64>() as f64 / self.rotations.max(1) as f64
    }

    /// A row of the timing table.
    fn row(&self, label: &str) -> Vec<String> {
        let steps: Vec<String> = self.steps.iter().map(u64::to_string).collect();
        vec![
            label.to_owned(),
            self.rotations.to_string(),
            Stat::of(&self.per_second).show(1),
            Stat::of(&self.cpu_ms).show(2),
            Stat::of(&self.wall_ms).show(2),
            steps.join(", "),
            figure(self.calls_per_rotation()),
            self.failed.to_string(),
        ]
    }
}

/// A count per rotation: whole numbers as such.
fn figure(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Force Rotate of every group at once, timed, with the KMS calls it made;
/// then what the API says of each group.
async fn pass(
    keyhold: &KeyholdProcess,
    peer: &KmsPeer,
    token: &str,
    groups: &mut Groups,
) -> anyhow::Result<(Pass, Vec<GroupState>)> {
    if let Some(end) = groups.last_pass_end {
        tokio::time::sleep((end + PACING_GAP).saturating_duration_since(Instant::now())).await;
    }
    peer.reset_counts();
    let cpu_before = keyhold.cpu_time()?;
    let (wall, failed, first_error) =
        rotate_all(keyhold, token, &groups.names, Duration::from_secs(600)).await?;
    let cpu = keyhold.cpu_time()?.saturating_sub(cpu_before);
    groups.last_pass_end = Some(Instant::now());
    let calls = peer
        .counts()
        .into_iter()
        .map(|(op, c)| (op, c.accepted + c.throttled))
        .collect();
    let mut states = Vec::with_capacity(groups.names.len());
    for name in &groups.names {
        states.push(group_state(keyhold, token, name).await?);
    }
    let pass = Pass {
        rotations: groups.names.len(),
        wall,
        cpu,
        failed,
        first_error,
        calls,
    };
    Ok((pass, states))
}

/// What the API says of a group after a pass: its active KMS key, its
/// count of in-place rotations, and the steps of its last rotation job.
struct GroupState {
    name: String,
    active_key: String,
    in_place_used: Option<u64>,
    steps: u64,
}

async fn group_state(
    keyhold: &KeyholdProcess,
    token: &str,
    name: &str,
) -> anyhow::Result<GroupState> {
    let group = keyhold.get(&format!("/groups/{name}"), token).await?;
    let steps = match group["last_rotation_job"].as_str() {
        Some(job) => keyhold.get(&format!("/jobs/{job}"), token).await?["steps_total"]
            .as_u64()
            .unwrap_or_default(),
        None => 0,
    };
    Ok(GroupState {
        name: name.to_owned(),
        active_key: group["active_key_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        in_place_used: group["in_place_rotations"]["used"].as_u64(),
        steps,
    })
}

/// Checks each `new_material` group's KMS key and count after a pass:
/// `same_key` says whether it should still be on `keys` (else on another),
/// `used` its in-place rotations, `steps` its job's. Describes the first
/// group that differs.
fn check(
    when: &str,
    states: &[GroupState],
    keys: &[String],
    same_key: bool,
    used: u64,
    steps: u64,
) -> Option<String> {
    states.iter().zip(keys).find_map(|(s, key)| {
        let key_ok = (s.active_key == *key) == same_key;
        (!key_ok || s.in_place_used != Some(used) || s.steps != steps).then(|| {
            format!(
                "{when}, group {} is on KMS key {} ({}the one before), with {:?} in-place rotations and a {}-step job (wanted {}the same key, {used} and {steps})",
                s.name,
                s.active_key,
                if s.active_key == *key { "" } else { "not " },
                s.in_place_used,
                s.steps,
                if same_key { "" } else { "not " },
            )
        })
    })
}

async fn create_group(
    keyhold: &KeyholdProcess,
    token: &str,
    name: &str,
    credential: &str,
    strategy: &str,
) -> anyhow::Result<()> {
    let mut body = group_body(name, credential, "30d");
    body["rotation_strategy"] = json!(strategy);
    // keyhold's default, said here so the scenario does not depend on it.
    body["at_rotation_limit"] = json!(NEW_KEY);
    let (status, answer) = keyhold
        .call(reqwest::Method::POST, "/groups", Some(token), Some(body))
        .await?;
    if status != 201 {
        bail!("POST /groups ({name}, {strategy}): HTTP {status}: {answer}");
    }
    Ok(())
}

async fn set_rotation_limit(
    keyhold: &KeyholdProcess,
    token: &str,
    limit: usize,
) -> anyhow::Result<Value> {
    let (status, answer) = keyhold
        .call(
            reqwest::Method::PATCH,
            "/config",
            Some(token),
            Some(json!({"on_demand_rotation_limit": limit})),
        )
        .await?;
    if status != 200 {
        bail!("PATCH /config on_demand_rotation_limit {limit}: HTTP {status}: {answer}");
    }
    Ok(answer)
}

pub async fn run(ctx: &Context, sizes: &Sizes) -> anyhow::Result<Section> {
    let groups = sizes.inplace_groups;
    let passes = sizes.runs;
    // The measured in-place rotations stay under AWS's limit; the limit is
    // then set to where they are.
    anyhow::ensure!(
        (1..MAX_ON_DEMAND_ROTATIONS as usize).contains(&passes),
        "rotation in place: {passes} passes would reach AWS's {MAX_ON_DEMAND_ROTATIONS} on-demand rotations"
    );
    eprintln!("rotation in place: {groups} groups of each strategy, {passes} passes");
    let peer = KmsPeer::start(false).await?;
    let data_dir = ctx
        .work
        .join(format!("inplace-{}", uuid::Uuid::new_v4().simple()));
    let keyhold = KeyholdProcess::spawn(&ctx.keyhold, &data_dir, &ServeOptions::default())?;
    let token = keyhold.dual_session().await?;
    // One credential per group, as in scenario 1: keyhold's pacing per
    // credential (GetParametersForImport 1/s) would otherwise set the pace.
    let mut by_strategy = Vec::new();
    for (strategy, prefix) in [(NEW_KEY, "nk"), (NEW_MATERIAL, "nm")] {
        let mut names = Vec::with_capacity(groups);
        for i in 0..groups {
            let name = format!("{prefix}-{i:05}");
            let credential = format!("{prefix}-cred-{i}");
            keyhold
                .import_credential(&token, &credential, &peer.endpoint)
                .await?;
            create_group(&keyhold, &token, &name, &credential, strategy).await?;
            names.push(name);
        }
        by_strategy.push(Groups {
            names,
            last_pass_end: None,
        });
    }
    let [mut new_key, mut new_material]: [Groups; 2] = by_strategy
        .try_into()
        .map_err(|_| anyhow::anyhow!("two strategies"))?;
    let mut problems: Vec<String> = Vec::new();
    let key_ids = |states: &[GroupState]| -> Vec<String> {
        states.iter().map(|s| s.active_key.clone()).collect()
    };

    // First rotations: each group's first KMS key (the alias created), for
    // both strategies; untimed, counted apart.
    let mut first_new_key = Tally::default();
    let (p, states) = pass(&keyhold, &peer, &token, &mut new_key).await?;
    first_new_key.add(p, &states);
    let mut first = Tally::default();
    let (p, states) = pass(&keyhold, &peer, &token, &mut new_material).await?;
    first.add(p, &states);
    let first_keys = key_ids(&states);
    problems.extend(check(
        "after the first rotation",
        &states,
        &first_keys,
        true,
        0,
        6,
    ));

    // The measured passes, the strategies taking turns.
    let mut key_tally = Tally::default();
    let mut in_place = Tally::default();
    for pass_index in 1..=passes {
        let (p, states) = pass(&keyhold, &peer, &token, &mut new_key).await?;
        key_tally.add(p, &states);
        let (p, states) = pass(&keyhold, &peer, &token, &mut new_material).await?;
        in_place.add(p, &states);
        let when = format!("after in-place rotation {pass_index}");
        problems.extend(check(
            &when,
            &states,
            &first_keys,
            true,
            pass_index as u64,
            4,
        ));
    }

    // At the limit: set where the groups are, so the next rotation of each
    // moves to a new KMS key (at_rotation_limit new_key).
    set_rotation_limit(&keyhold, &token, passes).await?;
    let mut at_limit = Tally::default();
    let (p, states) = pass(&keyhold, &peer, &token, &mut new_material).await?;
    at_limit.add(p, &states);
    problems.extend(check("at the limit", &states, &first_keys, false, 0, 6));
    let second_keys = key_ids(&states);
    // And the rotation after that is in place again, in the new KMS key.
    let mut after_limit = Tally::default();
    let (p, states) = pass(&keyhold, &peer, &token, &mut new_material).await?;
    after_limit.add(p, &states);
    problems.extend(check("after the limit", &states, &second_keys, true, 1, 4));
    keyhold.stop()?;
    let _ = std::fs::remove_dir_all(&data_dir);

    let mut section = Section::new("6. Rotation in place (zero-latency KMS peer)").headers(&[
        "Rotation",
        "Rotations",
        "Rotations/s",
        "CPU ms per rotation",
        "Wall ms per rotation",
        "Steps per job",
        "KMS calls per rotation",
        "Failed jobs",
    ]);
    section.text = format!(
        "The two rotation strategies of a key group side by side, in one `keyhold serve` \
         process (software keystore, SQLite) against scenario 1's zero-latency KMS peer, \
         with one credential per group as there. {groups} groups have `rotation_strategy` \
         `new_key` (every rotation a new KMS key: CreateKey, the material imported, the \
         alias moved, the previous key disabled) and {groups} `new_material` (rotation in \
         place: the first rotation creates the group's KMS key as `new_key` does; every \
         later one imports new material into that key with ImportType NEW_KEY_MATERIAL \
         and makes it current with RotateKeyOnDemand, checked by DescribeKey before and \
         after: no new key, no alias move, nothing disabled). Every group is rotated once \
         untimed (its first KMS key), then {passes} measured passes follow, the two \
         strategies taking turns: a pass Force-Rotates every group of one strategy at once \
         ({concurrency} jobs run concurrently, the default) and ends when the last job has \
         ended. A pass starts at least {gap:.1} s after the same groups' previous pass \
         ended: keyhold paces GetParametersForImport at one request per second per \
         credential, without a burst, and a pass closer than that would measure the \
         pacing, not the rotations. Rotations/s, CPU and wall time per rotation are \
         measured as in scenario 1: the pass's rotations over its wall time, and the \
         `keyhold serve` process's user + system CPU time and the pass's wall time, each \
         divided by its rotations (with {concurrency} jobs at once, wall time per rotation \
         is the inverse of the throughput, not one rotation's latency); median (min–max) \
         over the passes. Steps per job is `steps_total` of each group's rotation job. \
         KMS calls are the requests the peer answered during a pass, by operation, \
         divided by the pass's rotations: the requests AWS KMS would receive, each \
         counted against its request quota (scenario 3). The peer does no cryptography \
         (what KMS does with imported material is not keyhold's cost), so the figures \
         compare keyhold's own work: its steps, with their store commits and audit \
         entries, and its KMS round trips.\n\n\
         At the limit: AWS allows {aws} on-demand rotations per KMS key; keyhold rotates \
         a key in place at most `on_demand_rotation_limit` times (a runtime setting, \
         1–{aws}, default {aws}), then applies the group's `at_rotation_limit` (`new_key` \
         here, the default). After the measured passes each `new_material` group had \
         rotated its KMS key in place {passes} times, well under AWS's {aws}; the setting \
         was then lowered to {passes} (`PATCH /api/v1/config`) and the groups rotated \
         twice more. keyhold counts the rotations itself and queues the rotation at the \
         limit with a `new_key` rotation's steps, so AWS is never asked for a rotation it \
         would refuse: a new KMS key, the alias moved to it and the previous key disabled, \
         since these groups set `disable_after_rotate` (which leaves every version rotated \
         into that key unable to decrypt). The rotation after it is in place again, in \
         the new key, its count restarted. Each group's KMS key and count were checked \
         after every pass through `GET /api/v1/groups/{{name}}` (`active_key_id`, \
         `in_place_rotations.used`). The figures of these two passes are of one run each.",
        concurrency = 8,
        gap = PACING_GAP.as_secs_f64(),
        aws = MAX_ON_DEMAND_ROTATIONS,
    );
    section.row(key_tally.row("`new_key`: a new KMS key per rotation"));
    section.row(in_place.row("`new_material`: in place"));
    section.row(at_limit.row("`new_material` at the limit: a new KMS key (one pass)"));
    section.row(after_limit.row("`new_material` after the limit: in place again (one pass)"));

    let columns: [(&str, &Tally); 5] = [
        ("`new_key`, every rotation", &key_tally),
        ("`new_material`, first rotation", &first),
        ("`new_material`, in place", &in_place),
        ("`new_material`, at the limit", &at_limit),
        ("`new_material`, after the limit", &after_limit),
    ];
    let mut operations: Vec<&String> = columns.iter().flat_map(|(_, t)| t.calls.keys()).collect();
    operations.sort();
    operations.dedup();
    let mut rows: Vec<Vec<String>> = operations
        .iter()
        .map(|op| {
            let mut row = vec![(*op).clone()];
            row.extend(columns.iter().map(|(_, t)| {
                figure(t.calls.get(*op).copied().unwrap_or(0) as f64 / t.rotations.max(1) as f64)
            }));
            row
        })
        .collect();
    let mut total = vec!["**All KMS calls**".to_owned()];
    total.extend(
        columns
            .iter()
            .map(|(_, t)| format!("**{}**", figure(t.calls_per_rotation()))),
    );
    rows.push(total);
    let mut headers = vec!["Operation"];
    headers.extend(columns.iter().map(|(label, _)| *label));
    let speed = Stat::of(&in_place.per_second).median / Stat::of(&key_tally.per_second).median;
    let cpu = Stat::of(&in_place.cpu_ms).median / Stat::of(&key_tally.cpu_ms).median;
    let first_rotations = if first_new_key.calls == first.calls {
        format!(
            "A `new_key` group's first rotation (untimed, not in the tables) made the same \
             {} calls as a `new_material` group's: UpdateAlias finds no alias yet and \
             CreateAlias follows, and there is no previous key to disable.",
            figure(first.calls_per_rotation())
        )
    } else {
        format!(
            "A `new_key` group's first rotation (untimed, not in the tables) made {} calls, \
             a `new_material` group's {}.",
            figure(first_new_key.calls_per_rotation()),
            figure(first.calls_per_rotation())
        )
    };
    section.notes = format!(
        "In place against a new KMS key per rotation, medians of the measured passes: \
         {speed:.2}× the rotations per second, {cpu:.2}× the CPU time per rotation, and \
         {calls_in_place} KMS calls per rotation instead of {calls_key}. {first_rotations}\n\n\
         KMS calls per rotation, by operation (calls the peer answered ÷ rotations, over \
         {key_n}, {first_n}, {in_place_n}, {at_limit_n} and {after_n} rotations):\n\n{table}",
        calls_in_place = figure(in_place.calls_per_rotation()),
        calls_key = figure(key_tally.calls_per_rotation()),
        key_n = key_tally.rotations,
        first_n = first.rotations,
        in_place_n = in_place.rotations,
        at_limit_n = at_limit.rotations,
        after_n = after_limit.rotations,
        table = report::table(&headers, &rows),
    );
    section.charts.push(Chart {
        slug: "in-place-rotations-per-second".into(),
        title: "Rotation in place: rotations per second (zero-latency KMS)".into(),
        unit: "rotations/s, median with min–max over the passes; higher is better".into(),
        bars: vec![
            Bar {
                label: "new_key (a new KMS key)".into(),
                stat: Stat::of(&key_tally.per_second),
            },
            Bar {
                label: "new_material (in place)".into(),
                stat: Stat::of(&in_place.per_second),
            },
        ],
    });
    section.charts.push(Chart {
        slug: "in-place-kms-calls".into(),
        title: "Rotation in place: KMS calls per rotation".into(),
        unit: "requests to AWS KMS per rotation, all operations; lower is better".into(),
        bars: columns
            .iter()
            .map(|(label, t)| Bar {
                label: label.replace('`', ""),
                stat: Stat::of(&[t.calls_per_rotation()]),
            })
            .collect(),
    });

    let failed = first_new_key.failed
        + first.failed
        + key_tally.failed
        + in_place.failed
        + at_limit.failed
        + after_limit.failed;
    if failed > 0 {
        let first_error = [
            &first_new_key,
            &first,
            &key_tally,
            &in_place,
            &at_limit,
            &after_limit,
        ]
        .iter()
        .find_map(|t| t.first_error.clone())
        .unwrap_or_default();
        problems.push(format!(
            "{failed} rotations failed (the first: {first_error})"
        ));
    }
    if !problems.is_empty() {
        section.notes.push_str(&format!(
            "\n**Not as expected:** {}.\n",
            problems.join("; ")
        ));
        section.failure = Some(problems.join("; "));
    }
    Ok(section)
}
