//! Scenario 1, engine overhead: keyhold alone, against the zero-latency KMS
//! peer, for each keystore and database.

use std::time::{Duration, Instant};

use crate::kms_peer::KmsPeer;
use crate::profile::{Profile, Recording};
use crate::report::{self, Bar, Chart, Section, Stat};
use crate::server::{KeyholdProcess, Keystore, PgDatabase, ServeOptions};
use crate::{Context, Sizes};

pub struct EngineRun {
    pub label: String,
    pub per_second: Stat,
    pub cpu_ms: Stat,
    pub wall_ms: Stat,
    /// Threads of `keyhold serve` parking (voluntary context switches) per
    /// rotation: its thread hand-offs, counted, which other work on the
    /// machine hardly changes, unlike CPU time.
    pub parks: Stat,
    pub failed: usize,
    /// Sampled during extra runs after the measured ones, when asked for.
    pub profile: Option<Profile>,
}

/// Creates `groups` groups on `credential`, rotates each once (the first
/// rotation creates the alias; later ones move it and disable the old key).
pub async fn prepare_groups(
    keyhold: &KeyholdProcess,
    token: &str,
    credential: &str,
    prefix: &str,
    groups: usize,
) -> anyhow::Result<Vec<String>> {
    let names: Vec<String> = (0..groups).map(|i| format!("{prefix}-{i:05}")).collect();
    for name in &names {
        keyhold.create_group(token, name, credential, "30d").await?;
    }
    Ok(names)
}

/// Force Rotate of every group at once; returns (wall time, failed jobs,
/// the first failure's error). The wall time runs from the first request to
/// the end of the last job as the server recorded it: waiting for the next
/// job-status poll to see it would add up to a poll interval to every pass.
pub async fn rotate_all(
    keyhold: &KeyholdProcess,
    token: &str,
    names: &[String],
    timeout: Duration,
) -> anyhow::Result<(Duration, usize, Option<String>)> {
    let started = Instant::now();
    // The clock the server stamps `finished_at` with.
    let started_at = keyhold_core::clock::Clock::now(&keyhold_core::clock::SystemClock);
    let mut ids = Vec::with_capacity(names.len());
    // Submitted a few at a time, in order, as a script or the UI would.
    for chunk in names.chunks(16) {
        let submitted =
            futures_util::future::join_all(chunk.iter().map(|name| keyhold.rotate(token, name)))
                .await;
        for id in submitted {
            ids.push(id?);
        }
    }
    let ended = keyhold.wait_jobs(token, &ids, timeout).await?;
    // The server runs on this machine: its record and `started_at` compare.
    // Should the clock have stepped back, the pass's own elapsed time is
    // the bound.
    let wall = ended
        .last
        .and_then(|last| (last - started_at).to_std().ok())
        .map_or_else(|| started.elapsed(), |wall| wall.min(started.elapsed()));
    Ok((wall, ended.failed, ended.first_error))
}

async fn one_configuration(
    ctx: &Context,
    sizes: &Sizes,
    peer: &KmsPeer,
    keystore: Keystore,
    postgres: bool,
    profile: bool,
) -> anyhow::Result<EngineRun> {
    let db = if postgres {
        Some(PgDatabase::create().await?)
    } else {
        None
    };
    let label = format!(
        "{} keystore, {}",
        keystore.label(),
        if postgres { "PostgreSQL" } else { "SQLite" }
    );
    eprintln!("engine overhead: {label}");
    let data_dir = ctx
        .work
        .join(format!("engine-{}", uuid::Uuid::new_v4().simple()));
    let options = ServeOptions {
        keystore,
        database_url: db.as_ref().map(|d| d.url.clone()),
        ..Default::default()
    };
    let keyhold = KeyholdProcess::spawn(&ctx.keyhold, &data_dir, &options)?;
    let token = keyhold.dual_session().await?;
    // One credential per group: keyhold paces its requests per credential and
    // Region at AWS's quotas (GetParametersForImport: 1/s), which would
    // otherwise hide the engine's own cost; scenario 3 measures the pacing.
    let mut names = Vec::new();
    for i in 0..sizes.engine_groups {
        let credential = format!("standin-{i}");
        keyhold
            .import_credential(&token, &credential, &peer.endpoint)
            .await?;
        names.extend(prepare_groups(&keyhold, &token, &credential, &format!("eng{i}"), 1).await?);
    }
    let timeout = Duration::from_secs(600);
    // Warm-up: the first rotation of each group (alias creation).
    let (_, mut failed, _) = rotate_all(&keyhold, &token, &names, timeout).await?;
    let mut per_second = Vec::new();
    let mut cpu_ms = Vec::new();
    let mut wall_ms = Vec::new();
    let mut parks = Vec::new();
    for _ in 0..sizes.runs {
        let cpu_before = keyhold.cpu_time()?;
        let parks_before = voluntary_context_switches(keyhold.pid())?;
        let (wall, f, _) = rotate_all(&keyhold, &token, &names, timeout).await?;
        let cpu = keyhold.cpu_time()?.saturating_sub(cpu_before);
        let parked = voluntary_context_switches(keyhold.pid())?.saturating_sub(parks_before);
        failed += f;
        let n = names.len() as f64;
        per_second.push(n / wall.as_secs_f64());
        cpu_ms.push(cpu.as_secs_f64() * 1000.0 / n);
        wall_ms.push(wall.as_secs_f64() * 1000.0 / n);
        parks.push(parked as f64 / n);
    }
    // After the measured runs, so that sampling does not weigh on them.
    let profile = if profile {
        let data = ctx.work.join("engine.perf.data");
        let mut recording = Recording::start(keyhold.pid(), sizes.profile_seconds, &data)?;
        while recording.running()? {
            let (_, f, _) = rotate_all(&keyhold, &token, &names, timeout).await?;
            failed += f;
        }
        let profile = recording.finish(&data)?;
        let _ = std::fs::remove_file(&data);
        Some(profile)
    } else {
        None
    };
    keyhold.stop()?;
    if let Some(db) = db {
        db.drop_now().await?;
    }
    let _ = std::fs::remove_dir_all(&data_dir);
    Ok(EngineRun {
        label,
        per_second: Stat::of(&per_second),
        cpu_ms: Stat::of(&cpu_ms),
        wall_ms: Stat::of(&wall_ms),
        parks: Stat::of(&parks),
        failed,
        profile,
    })
}

/// `KEYHOLD_BENCH_ENGINE=software-sqlite` (comma-separated, of
/// `software-sqlite`, `pkcs11-sqlite`, `software-postgres`,
/// `pkcs11-postgres`): only these configurations, for a quick before/after
/// of a change to one of them. Unset, all four, as the report needs.
const CONFIGURATIONS_ENV: &str = "KEYHOLD_BENCH_ENGINE";

/// The configurations asked for, in the report's order: (pkcs11, postgres).
fn configurations() -> anyhow::Result<Vec<(bool, bool)>> {
    let all = [(false, false), (true, false), (false, true), (true, true)];
    let name = |(pkcs11, postgres): (bool, bool)| {
        format!(
            "{}-{}",
            if pkcs11 { "pkcs11" } else { "software" },
            if postgres { "postgres" } else { "sqlite" }
        )
    };
    let Some(wanted) = std::env::var(CONFIGURATIONS_ENV)
        .ok()
        .filter(|w| !w.trim().is_empty())
    else {
        return Ok(all.to_vec());
    };
    let wanted: Vec<&str> = wanted.split(',').map(str::trim).collect();
    if let Some(unknown) = wanted.iter().find(|w| !all.iter().any(|c| name(*c) == **w)) {
        anyhow::bail!(
            "{CONFIGURATIONS_ENV}: unknown configuration {unknown} (software-sqlite, pkcs11-sqlite, software-postgres, pkcs11-postgres)"
        );
    }
    Ok(all
        .into_iter()
        .filter(|c| wanted.contains(&name(*c).as_str()))
        .collect())
}

/// Issue 21's target for the profiled configuration (software keystore,
/// SQLite): CPU ms per rotation, at the median.
const CPU_TARGET_MS: f64 = 5.0;

pub async fn run(ctx: &Context, sizes: &Sizes) -> anyhow::Result<Section> {
    let peer = KmsPeer::start(false).await?;
    let configurations = configurations()?;
    let pkcs11 = if configurations.iter().any(|(pkcs11, _)| *pkcs11) {
        Some(Keystore::pkcs11_from_env()?)
    } else {
        None
    };
    let mut runs = Vec::new();
    for (pkcs11_keystore, postgres) in configurations {
        let keystore = match (&pkcs11, pkcs11_keystore) {
            (Some(token), true) => token.clone(),
            _ => Keystore::Software,
        };
        // The configuration the 5 ms target is set for is the one profiled.
        let profile = !pkcs11_keystore && !postgres;
        runs.push(one_configuration(ctx, sizes, &peer, keystore, postgres, profile).await?);
    }
    let mut section = Section::new("1. Engine overhead (zero-latency KMS peer)").headers(&[
        "Keystore, database",
        "Rotations/s",
        "CPU ms per rotation",
        "Wall ms per rotation",
        "Threads parked per rotation",
        "Failed jobs",
    ]);
    section.text = format!(
        "One `keyhold serve` process (release build), {groups} key groups, each \
         Force-Rotated once to warm up (the first rotation creates the alias) and \
         then {runs} more times; a run submits a Force Rotate for every group at \
         once ({concurrency} jobs run concurrently, the default) and ends when the \
         last job has ended (wall time: up to the `finished_at` keyhold recorded \
         for it, not the job-status poll that saw it). The KMS is the benchmark's zero-latency peer on \
         loopback (`crates/bench/src/kms_peer.rs`), reached through keyhold's real \
         AWS adapter (AWS SDK, SigV4, JSON 1.1): what is measured is keyhold alone. \
         Each group has a credential of its own: keyhold paces its requests per \
         credential and Region at AWS's default quotas (GetParametersForImport \
         1/s), which would cap one credential at one rotation per second and hide \
         the engine's cost (scenario 3 measures that pacing). \
         CPU time is user + system time of the `keyhold serve` process \
         (`/proc/<pid>/stat`) over the run, divided by the rotations; it includes \
         the HTTP handling of the Force Rotate requests and of the job-status polls \
         (one small GET at a time). Threads parked are the voluntary context \
         switches of all its threads over the run (`/proc/<pid>/task/*/status`) \
         per rotation: each is a thread that went to sleep waiting for another, \
         the thread hand-offs of the breakdown below, counted; unlike CPU time, \
         other work on the machine hardly changes them. Each rotation is CreateKey, \
         GetParametersForImport, the RSA-OAEP-SHA-256 wrap in the keystore, \
         ImportKeyMaterial, UpdateAlias, DisableKey of the previous \
         key, with the store commits and audit entries of its steps: five durable \
         commits (the job; its start; the generated key with the mark before \
         CreateKey; the KMS key's id; the import with the alias, the disable and \
         the activation, whose calls are safe to repeat). Figures: \
         median (min–max) over the runs.",
        groups = sizes.engine_groups,
        runs = sizes.runs,
        concurrency = 8,
    );
    for r in &runs {
        section.row(vec![
            r.label.clone(),
            r.per_second.show(1),
            r.cpu_ms.show(2),
            r.wall_ms.show(2),
            r.parks.show(0),
            r.failed.to_string(),
        ]);
    }
    section.charts.push(Chart {
        slug: "engine-rotations-per-second".into(),
        title: "Engine overhead: rotations per second (zero-latency KMS)".into(),
        unit: "rotations/s, median with min–max over the runs; higher is better".into(),
        bars: runs
            .iter()
            .map(|r| Bar {
                label: r.label.clone(),
                stat: r.per_second.clone(),
            })
            .collect(),
    });
    section.charts.push(Chart {
        slug: "engine-cpu-per-rotation".into(),
        title: "Engine overhead: CPU time per rotation".into(),
        unit: "ms of keyhold serve CPU per rotation; lower is better".into(),
        bars: runs
            .iter()
            .map(|r| Bar {
                label: r.label.clone(),
                stat: r.cpu_ms.clone(),
            })
            .collect(),
    });
    if let Some((run, profile)) = runs.iter().find_map(|r| Some((r, r.profile.as_ref()?))) {
        section.notes = format!(
            "**Target (issue 21): under {CPU_TARGET_MS:.0} ms of CPU per rotation on SQLite \
             with the software keystore.** Measured: {} ms, {}.\n\n{}",
            run.cpu_ms.show(2),
            if run.cpu_ms.median < CPU_TARGET_MS {
                "**met**"
            } else {
                "**not met**"
            },
            breakdown(ctx, run, profile)?
        );
    }
    Ok(section)
}

/// Voluntary context switches of every thread of process `pid` so far. A
/// thread that ended meanwhile takes its count with it; keyhold's threads
/// (the runtime's, the database connections') live as long as the server.
fn voluntary_context_switches(pid: u32) -> anyhow::Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        // A thread may end between the listing and the read.
        let Ok(status) = std::fs::read_to_string(task?.path().join("status")) else {
            continue;
        };
        if let Some(count) = status
            .lines()
            .find_map(|line| line.strip_prefix("voluntary_ctxt_switches:"))
        {
            total += count.trim().parse::<u64>()?;
        }
    }
    Ok(total)
}

/// The profiled configuration's flame graph (written beside the charts) and
/// its breakdown table, as Markdown.
fn breakdown(ctx: &Context, run: &EngineRun, profile: &Profile) -> anyhow::Result<String> {
    const FLAME_GRAPH: &str = "engine-flamegraph.svg";
    let title = format!("keyhold serve rotating keys: {}", run.label);
    std::fs::write(ctx.charts.join(FLAME_GRAPH), profile.flame_graph(&title)?)?;
    let rows: Vec<Vec<String>> = profile
        .breakdown()
        .into_iter()
        .map(|(category, share)| {
            vec![
                category.to_owned(),
                format!("{share:.1}%"),
                format!("{:.2}", share * run.cpu_ms.median / 100.0),
            ]
        })
        .collect();
    Ok(format!(
        "### Where the time goes ({label})\n\n\
         After the measured runs, `perf record` sampled `keyhold serve` ({hz} Hz, user \
         and kernel stacks) while the same Force Rotate runs went on: {sampled:.1} s of its CPU time. \
         [Flame graph](benchmarks/{FLAME_GRAPH}) (SVG; open it in a browser to \
         search and zoom). Each sample is counted once, in the first category below \
         whose frames are on its stack, in the table's order (`crates/bench/src/profile.rs`): \
         time spent waking or parking a thread is counted as hand-off even inside \
         SQLite or the AWS SDK. The shares are of the process's CPU time, so at the \
         median above each point is worth {per_point:.3} ms per rotation.\n\n{table}",
        label = run.label,
        hz = crate::profile::FREQUENCY,
        sampled = profile.sampled_ns() as f64 / 1e9,
        per_point = run.cpu_ms.median / 100.0,
        table = report::table(&["Where", "Share of CPU", "ms per rotation"], &rows),
    ))
}
