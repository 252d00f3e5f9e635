//! Scenario 9, backup and restore at scale: an installation of 100,000 and
//! one of 1,000,000 keys (scenario 4's bulk seeding), each backed up by
//! `keyhold backup create` against a running `keyhold serve` and restored by
//! `keyhold backup restore` into a new data directory, as the README's
//! runbook does it: wall time, keys per second, the file's size, and the peak
//! memory of the process doing the work, at both sizes, so a memory that
//! grows with the number of keys shows.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use keyhold_core::ports::Keystore as _;
use keyhold_keystore::{MasterKeySource, SoftKeystore};
use serde_json::Value;
use sqlx::{Connection, QueryBuilder, Sqlite};

use crate::engine::{prepare_groups, rotate_all};
use crate::kms_peer::KmsPeer;
use crate::report::{Bar, Chart, Section, Stat, thousands};
use crate::server::{
    ADMIN1_PASSWORD, ADMIN2_PASSWORD, KeyholdProcess, ServeOptions, cpu_time_of, status_kib,
};
use crate::{Context, Sizes};

/// Keys of each seeded group, as in scenario 4.
const KEYS_PER_GROUP: usize = 10;
/// The custodians (key-file custodians) and how many of them open a backup.
const CUSTODIANS: [&str; 3] = ["ann", "bob", "cy"];
const THRESHOLD: usize = 2;
/// The CLI session the runs make their backups with.
const RUNS_SESSION: &str = "runs";
/// How often the peak RSS of a short-lived process is read: VmHWM only
/// grows, so only a peak in the last interval before it exits is missed.
const HWM_POLL: Duration = Duration::from_millis(10);
/// How often the parts of a process's RSS are sampled: they have no
/// high-water mark of their own.
const SAMPLE_EVERY: Duration = Duration::from_millis(20);
/// How long a VmHWM must hold still for a start-up to count as settled.
const SETTLED: Duration = Duration::from_secs(4);
/// Rows per insert when the seeded keys get material of their own.
const MATERIAL_BATCH: usize = 500;
/// The memory target: the peak at the larger size at most this much above
/// the smaller size's (a memory that grows with the keys grows tenfold).
const FLAT_RATIO: f64 = 1.10;
const FLAT_SLACK_MIB: f64 = 16.0;

const MIB: f64 = 1_048_576.0;

/// What one backup and its restore measured.
struct Run {
    /// `keyhold serve` made the file: the record's started_at to finished_at.
    backup_secs: f64,
    /// `keyhold backup create --file --shares-dir`: start, wait, download, shares.
    create_secs: f64,
    file_bytes: u64,
    /// `keyhold serve`'s RSS just before the backup, and its peak during it
    /// (VmHWM: anonymous memory and mapped files together).
    serve_rest_kib: u64,
    serve_peak_kib: u64,
    /// Its anonymous memory (RssAnon: heap and stacks) just before, and the
    /// highest sampled during the backup; and the highest of its mapped
    /// files (RssFile: the binary and its libraries).
    serve_anon_rest_kib: u64,
    serve_anon_peak_kib: u64,
    serve_file_peak_kib: u64,
    /// `keyhold serve`'s CPU time (user + system) while the backup ran.
    backup_cpu_secs: f64,
    restore_secs: f64,
    restore_cpu_secs: f64,
    restore_peak_kib: u64,
    restore_anon_peak_kib: u64,
}

/// One database size, every run of it.
struct SizeFigures {
    groups: usize,
    keys: u64,
    seeded_secs: f64,
    material_secs: f64,
    /// `keyhold serve`'s peak anonymous memory in its first seconds with
    /// the default settings.
    default_anon_peak_kib: u64,
    runs: Vec<Run>,
    /// The restored installation's server: start-up time, and one group's keys over the API.
    restored_startup_secs: f64,
    restored_group_keys: usize,
}

impl SizeFigures {
    fn stat(&self, f: impl Fn(&Run) -> f64) -> Stat {
        Stat::of(&self.runs.iter().map(f).collect::<Vec<_>>())
    }

    fn serve_anon_peak_mib(&self) -> Stat {
        self.stat(|r| r.serve_anon_peak_kib as f64 / 1024.0)
    }

    fn restore_anon_peak_mib(&self) -> Stat {
        self.stat(|r| r.restore_anon_peak_kib as f64 / 1024.0)
    }
}

pub async fn run(ctx: &Context, sizes: &Sizes) -> anyhow::Result<Section> {
    let group_counts = [sizes.scale_groups / 10, sizes.scale_groups];
    let load_at_start = load_average();
    let mut figures = Vec::new();
    let mut failures = Vec::new();
    for groups in group_counts {
        let (size, mismatches) = measure_size(ctx, groups, sizes.runs).await?;
        failures.extend(mismatches);
        figures.push(size);
    }
    let load_at_end = load_average();
    Ok(section(&figures, failures, &load_at_start, &load_at_end))
}

/// Seeds `groups` groups, then backs up and restores them `runs` times.
/// Returns the figures and every count that did not match.
async fn measure_size(
    ctx: &Context,
    groups: usize,
    runs: usize,
) -> anyhow::Result<(SizeFigures, Vec<String>)> {
    eprintln!("backup: {groups} groups, {} keys", groups * KEYS_PER_GROUP);
    let work = ctx
        .work
        .join(format!("backup-{}", uuid::Uuid::new_v4().simple()));
    let data_dir = work.join("source");
    let url = crate::audit::sqlite_url(&data_dir);

    // One group created and rotated through the API, then copied in bulk.
    let peer = KmsPeer::start(false).await?;
    let keyhold = KeyholdProcess::spawn(&ctx.keyhold, &data_dir, &ServeOptions::default())?;
    let token = keyhold.dual_session().await?;
    keyhold
        .import_credential(&token, "standin", &peer.endpoint)
        .await?;
    let template = prepare_groups(&keyhold, &token, "standin", "template", 1).await?;
    rotate_all(&keyhold, &token, &template, Duration::from_secs(60)).await?;
    keyhold.stop()?;
    let seeding = Instant::now();
    crate::scale::seed(&url, &template[0], groups, KEYS_PER_GROUP).await?;
    let seeded_secs = seeding.elapsed().as_secs_f64();
    let material = Instant::now();
    own_material(&data_dir, &url).await?;
    let material_secs = material.elapsed().as_secs_f64();
    let keys = count_keys(&url).await?.0;

    // Before any backup: the server's memory in its first seconds, when the
    // rotator's first tick runs the once-a-minute drift pass (which must
    // cost the same with any number of groups), reported beside the backup's.
    let keyhold = KeyholdProcess::spawn(&ctx.keyhold, &data_dir, &ServeOptions::default())?;
    let default_anon_peak_kib = settled_anon_peak(keyhold.pid()).await?;
    let mut cli = Cli {
        binary: ctx.keyhold.clone(),
        base: keyhold.base.clone(),
        dir: work.join("cli"),
    };
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(&cli.dir)?;
    set_up(&cli)?;
    keyhold.stop()?;
    // Started again, so what follows is the backup's.
    let keyhold = KeyholdProcess::spawn(&ctx.keyhold, &data_dir, &ServeOptions::default())?;
    cli.base.clone_from(&keyhold.base);
    // One session for every run: a login hashes the password (Argon2id,
    // 19 MiB) in the server, which a login before each run would add to
    // the server's memory then.
    cli.login(RUNS_SESSION)?;

    let mut measured = Vec::new();
    let mut mismatches = Vec::new();
    let mut restored_dir = None;
    for run in 0..runs {
        let (figures, restored, wrong) =
            backup_and_restore(&cli, &keyhold, &work, keys, run).await?;
        measured.push(figures);
        mismatches.extend(wrong);
        // Only the last restore is kept, for its server's check below.
        if let Some(previous) = restored_dir.replace(restored) {
            let _ = std::fs::remove_dir_all(previous);
        }
    }
    keyhold.stop()?;

    // The last restored installation serves: started as the runbook's
    // last step says, and one group's keys listed by the restored admins.
    let restored_dir = restored_dir.context("no run")?;
    let restored = KeyholdProcess::spawn(&ctx.keyhold, &restored_dir, &ServeOptions::default())?;
    let restored_startup_secs = restored.started_in.as_secs_f64();
    let token = restored.dual_session().await?;
    let listed = restored.get("/keys?group=s000001", &token).await?;
    let restored_group_keys = listed.as_array().map_or(0, Vec::len);
    if restored_group_keys != KEYS_PER_GROUP {
        mismatches.push(format!(
            "the restored server lists {restored_group_keys} keys of group s000001, not {KEYS_PER_GROUP}"
        ));
    }
    drop(token);
    restored.stop()?;
    drop(peer);
    let _ = std::fs::remove_dir_all(&work);
    Ok((
        SizeFigures {
            groups,
            keys,
            seeded_secs,
            material_secs,
            default_anon_peak_kib,
            runs: measured,
            restored_startup_secs,
            restored_group_keys,
        },
        mismatches,
    ))
}

/// The custodians (three key files, any two of them), through the CLI:
/// dual control, so one session of both administrators.
fn set_up(cli: &Cli) -> anyhow::Result<()> {
    cli.login("setup")?;
    let mut set = vec![
        "backup".to_owned(),
        "custodians".to_owned(),
        "set".to_owned(),
        "--threshold".to_owned(),
        THRESHOLD.to_string(),
    ];
    for name in CUSTODIANS {
        let made = cli.json(
            "setup",
            &[
                "backup",
                "custodian-key",
                "--out",
                path_str(&cli.key_file(name))?,
            ],
        )?;
        let public = made["public_key"]
            .as_str()
            .context("custodian-key printed no public key")?;
        set.push("--custodian".to_owned());
        set.push(format!("{name}={public}"));
    }
    cli.ok("setup", &set.iter().map(String::as_str).collect::<Vec<_>>())?;
    Ok(())
}

/// The process's highest anonymous memory (RssAnon, read every
/// [`SAMPLE_EVERY`]) until its VmHWM has stopped rising for
/// [`SETTLED`] (from [`SETTLED`] after the start, for at most 30 s): what
/// its start-up and first passes took.
async fn settled_anon_peak(pid: u32) -> anyhow::Result<u64> {
    let started = Instant::now();
    let mut peak = 0;
    let mut hwm = status_kib(pid, "VmHWM:")?;
    let mut unchanged_since = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        peak = peak.max(status_kib(pid, "RssAnon:")?);
        let now = status_kib(pid, "VmHWM:")?;
        if now != hwm {
            hwm = now;
            unchanged_since = Instant::now();
        } else if started.elapsed() >= SETTLED && unchanged_since.elapsed() >= SETTLED {
            break;
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
    Ok(peak)
}

/// Samples a process's RssAnon and RssFile every [`SAMPLE_EVERY`] until
/// stopped: VmHWM has no counterpart for each part.
struct RssSampler {
    running: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(u64, u64)>,
}

impl RssSampler {
    fn start(pid: u32) -> Self {
        let running = Arc::new(AtomicBool::new(true));
        let task = tokio::spawn({
            let running = running.clone();
            async move {
                let (mut anon, mut file) = (0, 0);
                while running.load(Ordering::Relaxed) {
                    if let Ok(kib) = status_kib(pid, "RssAnon:") {
                        anon = anon.max(kib);
                    }
                    if let Ok(kib) = status_kib(pid, "RssFile:") {
                        file = file.max(kib);
                    }
                    tokio::time::sleep(SAMPLE_EVERY).await;
                }
                (anon, file)
            }
        });
        Self { running, task }
    }

    /// The highest (RssAnon, RssFile) seen, KiB.
    async fn stop(self) -> anyhow::Result<(u64, u64)> {
        self.running.store(false, Ordering::Relaxed);
        Ok(self.task.await?)
    }
}

/// One backup through the CLI against the running server, then its restore
/// into a new data directory. Returns the figures, the restored data
/// directory, and any count that did not match `keys`.
async fn backup_and_restore(
    cli: &Cli,
    keyhold: &KeyholdProcess,
    work: &Path,
    keys: u64,
    run: usize,
) -> anyhow::Result<(Run, PathBuf, Vec<String>)> {
    let mut mismatches = Vec::new();
    let file = work.join(format!("run{run}.khbk"));
    let shares = work.join(format!("run{run}-shares"));
    std::fs::create_dir_all(&shares)?;

    // The server's peak from here on: VmHWM reset to the current RSS.
    reset_peak(keyhold.pid())?;
    let serve_rest_kib = status_kib(keyhold.pid(), "VmRSS:")?;
    let serve_anon_rest_kib = status_kib(keyhold.pid(), "RssAnon:")?;
    let serve_cpu = cpu_time_of(keyhold.pid())?;
    let sampler = RssSampler::start(keyhold.pid());
    eprintln!("backup: run {run}, backup of {keys} keys");
    let mut create = cli.command(RUNS_SESSION);
    create.args([
        "backup",
        "create",
        "--file",
        path_str(&file)?,
        "--shares-dir",
        path_str(&shares)?,
        "-o",
        "json",
    ]);
    let created = measured(create).await?;
    let (serve_anon_peak_kib, serve_file_peak_kib) = sampler.stop().await?;
    let serve_peak_kib = status_kib(keyhold.pid(), "VmHWM:")?;
    let backup_cpu_secs = (cpu_time_of(keyhold.pid())? - serve_cpu).as_secs_f64();
    let created_json: Value = serde_json::from_str(&created.stdout)
        .with_context(|| format!("backup create printed: {}", created.stdout))?;
    let record = &created_json["backup"];
    let backup_secs = seconds_between(&record["started_at"], &record["finished_at"])?;
    let recorded_keys = record["keys"].as_u64().unwrap_or(0);
    if recorded_keys != keys {
        mismatches.push(format!(
            "run {run}: the backup holds {recorded_keys} keys, the database {keys}"
        ));
    }
    let file_bytes = std::fs::metadata(&file)?.len();
    // The server's copy is not needed again (the downloaded one is restored).
    if let Some(name) = record["file"].as_str() {
        let _ = std::fs::remove_file(work.join("source").join("backups").join(name));
    }

    eprintln!("backup: run {run}, restore of {keys} keys");
    let target = work.join(format!("restored-{run}"));
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(&target)?;
    let mut restore = Command::new(&cli.binary);
    restore
        .args(["backup", "restore", "--file", path_str(&file)?])
        .arg("--data-dir")
        .arg(&target)
        .args(["--log", "warn", "-o", "json"]);
    for name in &CUSTODIANS[..THRESHOLD] {
        restore
            .arg("--share")
            .arg(shares.join(format!("{name}.share")))
            .arg("--custodian-key")
            .arg(cli.key_file(name));
    }
    clean_env(&mut restore);
    let restored = measured(restore).await?;
    let report: Value = serde_json::from_str(&restored.stdout)
        .with_context(|| format!("backup restore printed: {}", restored.stdout))?;
    let reported_keys = report["keys"].as_u64().unwrap_or(0);
    // Counted in the restored database itself, not taken from the report.
    let (in_database, with_material) = count_keys(&crate::audit::sqlite_url(&target)).await?;
    for (what, count) in [
        ("the restore reports", reported_keys),
        ("the restored database holds", in_database),
        ("the restored database has material for", with_material),
    ] {
        if count != keys {
            mismatches.push(format!("run {run}: {what} {count} keys, the source {keys}"));
        }
    }
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_dir_all(&shares);
    let figures = Run {
        backup_secs,
        create_secs: created.elapsed.as_secs_f64(),
        file_bytes,
        serve_rest_kib,
        serve_peak_kib,
        serve_anon_rest_kib,
        serve_anon_peak_kib,
        serve_file_peak_kib,
        backup_cpu_secs,
        restore_secs: restored.elapsed.as_secs_f64(),
        restore_cpu_secs: restored.cpu.as_secs_f64(),
        restore_peak_kib: restored.peak_kib,
        restore_anon_peak_kib: restored.anon_peak_kib,
    };
    eprintln!(
        "backup: run {run}: backup {:.1} s ({:.1} s CPU), {:.0} MiB, serve RSS {:.0} -> peak {:.0} MiB \
         (anonymous {:.0} -> {:.0}, mapped files up to {:.0}); restore {:.1} s ({:.1} s CPU), \
         peak {:.0} MiB (anonymous {:.0})",
        figures.backup_secs,
        figures.backup_cpu_secs,
        figures.file_bytes as f64 / MIB,
        figures.serve_rest_kib as f64 / 1024.0,
        figures.serve_peak_kib as f64 / 1024.0,
        figures.serve_anon_rest_kib as f64 / 1024.0,
        figures.serve_anon_peak_kib as f64 / 1024.0,
        figures.serve_file_peak_kib as f64 / 1024.0,
        figures.restore_secs,
        figures.restore_cpu_secs,
        figures.restore_peak_kib as f64 / 1024.0,
        figures.restore_anon_peak_kib as f64 / 1024.0,
    );
    Ok((figures, target, mismatches))
}

/// The seeding copies the template key's keystore handle to every key, but
/// the software keystore seals a key's material under its key id: a copied
/// handle opens for no other key, and a backup (which unwraps every key's
/// material) would stop at the first. Each seeded key gets material of its
/// own, generated and sealed by the installation's keystore as a rotation
/// would, with its check digits.
async fn own_material(data_dir: &Path, url: &str) -> anyhow::Result<()> {
    let keystore = SoftKeystore::open(&data_dir.join("keystore"), MasterKeySource::File)
        .map_err(|e| anyhow::anyhow!("opening the software keystore: {e}"))?;
    let mut conn = sqlx::SqliteConnection::connect(url).await?;
    let ids: Vec<String> =
        sqlx::query_scalar("SELECT id FROM keys WHERE group_name GLOB 's[0-9]*'")
            .fetch_all(&mut conn)
            .await?;
    let mut tx = conn.begin().await?;
    sqlx::query(
        "CREATE TEMP TABLE bench_material (id TEXT PRIMARY KEY, handle BLOB NOT NULL, \
         check_digits TEXT NOT NULL)",
    )
    .execute(&mut *tx)
    .await?;
    for chunk in ids.chunks(MATERIAL_BATCH) {
        let mut made = Vec::with_capacity(chunk.len());
        for id in chunk {
            let key = keystore
                .generate_key(uuid::Uuid::parse_str(id)?)
                .map_err(|e| anyhow::anyhow!("generating key {id}: {e}"))?;
            made.push((id, key.handle, key.check_digits.as_str().to_owned()));
        }
        let mut insert =
            QueryBuilder::<Sqlite>::new("INSERT INTO bench_material (id, handle, check_digits) ");
        insert.push_values(made, |mut row, (id, handle, digits)| {
            row.push_bind(id.as_str())
                .push_bind(handle)
                .push_bind(digits);
        });
        insert.build().execute(&mut *tx).await?;
    }
    sqlx::query(
        "UPDATE keys SET keystore_handle = m.handle, check_digits = m.check_digits \
         FROM bench_material m WHERE keys.id = m.id",
    )
    .execute(&mut *tx)
    .await
    .context("giving the seeded keys their material")?;
    sqlx::query("DROP TABLE bench_material")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Keys in the database at `url`, and those with material (a handle).
async fn count_keys(url: &str) -> anyhow::Result<(u64, u64)> {
    let mut conn = sqlx::SqliteConnection::connect(url).await?;
    let (all, with_material): (i64, i64) =
        sqlx::query_as("SELECT COUNT(*), COALESCE(SUM(length(keystore_handle) > 0), 0) FROM keys")
            .fetch_one(&mut conn)
            .await?;
    Ok((u64::try_from(all)?, u64::try_from(with_material)?))
}

/// The `keyhold` CLI against the server at `base`, each session in a file
/// of its own under `dir`.
struct Cli {
    binary: PathBuf,
    base: String,
    dir: PathBuf,
}

/// A process run to its end: what it printed, how long it took, and its
/// peak resident set (VmHWM).
struct Measured {
    stdout: String,
    elapsed: Duration,
    /// User + system CPU time, as last read before it exited.
    cpu: Duration,
    peak_kib: u64,
    /// The highest RssAnon read.
    anon_peak_kib: u64,
}

impl Cli {
    fn key_file(&self, custodian: &str) -> PathBuf {
        self.dir.join(format!("{custodian}.key"))
    }

    fn command(&self, session: &str) -> Command {
        let mut command = Command::new(&self.binary);
        clean_env(&mut command);
        command.env("KEYHOLD_URL", &self.base).env(
            "KEYHOLD_SESSION_FILE",
            self.dir.join(format!("{session}.session")),
        );
        command
    }

    /// Both administrators logged into one session (dual control).
    fn login(&self, session: &str) -> anyhow::Result<()> {
        for (user, password) in [("Admin1", ADMIN1_PASSWORD), ("Admin2", ADMIN2_PASSWORD)] {
            let mut command = self.command(session);
            command.args(["login", "--user", user, "--password-stdin"]);
            finished(&mut command, &format!("{password}\n"))?;
        }
        Ok(())
    }

    fn ok(&self, session: &str, args: &[&str]) -> anyhow::Result<String> {
        let mut command = self.command(session);
        command.args(args);
        finished(&mut command, "")
    }

    fn json(&self, session: &str, args: &[&str]) -> anyhow::Result<Value> {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["-o", "json"]);
        let out = self.ok(session, &all)?;
        serde_json::from_str(&out).with_context(|| format!("{args:?} printed: {out}"))
    }
}

/// Runs `command` to its end off the executor, reading its VmHWM every
/// [`HWM_POLL`].
async fn measured(command: Command) -> anyhow::Result<Measured> {
    tokio::task::spawn_blocking(move || measured_blocking(command)).await?
}

fn measured_blocking(mut command: Command) -> anyhow::Result<Measured> {
    let started = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", command.get_program().display()))?;
    let stdout = drain(child.stdout.take().context("the child's stdout")?);
    let stderr = drain(child.stderr.take().context("the child's stderr")?);
    let pid = child.id();
    let mut peak_kib = 0;
    let mut anon_peak_kib = 0;
    let mut cpu = Duration::ZERO;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        // A process that has just exited has no VmHWM any more.
        if let Ok(kib) = status_kib(pid, "VmHWM:") {
            peak_kib = peak_kib.max(kib);
        }
        if let Ok(kib) = status_kib(pid, "RssAnon:") {
            anon_peak_kib = anon_peak_kib.max(kib);
        }
        if let Ok(time) = cpu_time_of(pid) {
            cpu = cpu.max(time);
        }
        std::thread::sleep(HWM_POLL);
    };
    let elapsed = started.elapsed();
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    if !status.success() {
        bail!("{:?} ended {status}: {stderr}{stdout}", command.get_args());
    }
    Ok(Measured {
        stdout,
        elapsed,
        cpu,
        peak_kib,
        anon_peak_kib,
    })
}

/// Reads a pipe to its end on a thread of its own, so it never fills.
fn drain(mut pipe: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

/// Runs `command` with `stdin`; its stdout, or an error with what it said.
fn finished(command: &mut Command, stdin: &str) -> anyhow::Result<String> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut input) = child.stdin.take() {
        // A command may refuse before it reads its input: a closed pipe is fine.
        let _ = input.write_all(stdin.as_bytes());
    }
    let out = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "{:?} ended {}: {}{stdout}",
            command.get_args(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}

/// The CLI and the restore configured by their flags alone.
fn clean_env(command: &mut Command) {
    for name in [
        "KEYHOLD_DATABASE_URL",
        "KEYHOLD_URL",
        "KEYHOLD_SESSION_FILE",
        "KEYHOLD_CONFIG",
        "KEYHOLD_KEYSTORE_PASSPHRASE",
    ] {
        command.env_remove(name);
    }
}

/// Sets the process's VmHWM back to its current RSS (Linux's
/// `/proc/PID/clear_refs`, value 5), so the next reading is the peak of
/// what it did since.
fn reset_peak(pid: u32) -> anyhow::Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .with_context(|| format!("resetting the peak RSS of process {pid}"))
}

fn seconds_between(start: &Value, end: &Value) -> anyhow::Result<f64> {
    let at = |v: &Value| -> anyhow::Result<chrono::DateTime<chrono::FixedOffset>> {
        let text = v.as_str().context("a backup record without its times")?;
        chrono::DateTime::parse_from_rfc3339(text).with_context(|| format!("time '{text}'"))
    };
    let micros = (at(end)? - at(start)?)
        .num_microseconds()
        .context("a backup longer than microseconds count")?;
    Ok(micros as f64 / 1e6)
}

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Whether the peak at the larger size stays within the target of the
/// smaller's; the sentence that says so, with the figures.
fn flat(
    what: &str,
    small: &SizeFigures,
    large: &SizeFigures,
    peak: fn(&SizeFigures) -> Stat,
) -> (bool, String) {
    let (a, b) = (peak(small).median, peak(large).median);
    let met = b <= (a * FLAT_RATIO).max(a + FLAT_SLACK_MIB);
    let sentence = format!(
        "{what}: {a:.1} MiB at {} keys, {b:.1} MiB at {} keys ({:+.1} MiB, {:.2}×) — **{}**",
        thousands(small.keys),
        thousands(large.keys),
        b - a,
        b / a,
        if met { "met" } else { "not met" }
    );
    (met, sentence)
}

fn section(
    figures: &[SizeFigures],
    failures: Vec<String>,
    load_at_start: &str,
    load_at_end: &str,
) -> Section {
    let mut section = Section::new("9. Backup and restore").headers(&[
        "Keys",
        "Backup s",
        "Backup CPU s",
        "Backup keys/s",
        "File MiB",
        "`serve` peak anonymous RSS, MiB",
        "`serve` VmHWM, MiB",
        "Restore s",
        "Restore CPU s",
        "Restore keys/s",
        "Restore peak anonymous RSS, MiB",
        "Restore VmHWM, MiB",
    ]);
    let mib = |kib: u64| kib as f64 / 1024.0;
    for size in figures {
        let keys = size.keys as f64;
        section.row(vec![
            thousands(size.keys),
            size.stat(|r| r.backup_secs).show(1),
            size.stat(|r| r.backup_cpu_secs).show(1),
            size.stat(|r| keys / r.backup_secs).show(0),
            size.stat(|r| r.file_bytes as f64 / MIB).show(1),
            size.serve_anon_peak_mib().show(0),
            size.stat(|r| mib(r.serve_peak_kib)).show(0),
            size.stat(|r| r.restore_secs).show(1),
            size.stat(|r| r.restore_cpu_secs).show(1),
            size.stat(|r| keys / r.restore_secs).show(0),
            size.restore_anon_peak_mib().show(0),
            size.stat(|r| mib(r.restore_peak_kib)).show(0),
        ]);
    }
    let runs = figures.first().map_or(0, |f| f.runs.len());
    section.text = format!(
        "SQLite, software keystore, three custodians with key files, any two of whom \
         open a backup. Each size is scenario 4's installation: one group created and \
         rotated through the API, copied by bulk SQL into groups of {KEYS_PER_GROUP} keys, \
         each seeded key then given material of its own (generated and sealed by the \
         installation's keystore, as a rotation does; a backup unwraps every key's \
         material). A real `keyhold serve` runs on it with the default settings (scheduled \
         drift checks on, every 24 hours; see below); each run is \
         the README's runbook: `keyhold backup create --file F --shares-dir D` (dual \
         control), then `keyhold backup restore --file F --share … --custodian-key …` \
         into a new data directory. **Backup** is the server's time from the backup's \
         start to its file being complete (the record's `started_at` to `finished_at`), \
         and the server's CPU time (user + system) meanwhile; **restore** is the restore \
         command's wall and CPU time, start to exit (it reads and checks the whole file, \
         then decrypts it again, unwraps every key into the new keystore, and loads every \
         row in one transaction). Every key is counted again in the restored database \
         (SQL). **Memory**: VmHWM is the kernel's high-water mark of the whole RSS (for \
         `serve` reset just before the backup with `clear_refs`, so it is the peak while \
         it made the backup; for the restore, its own process); the anonymous RSS \
         (RssAnon: heap and stacks, what the process allocates) has no high-water mark, \
         so it is sampled every {} ms. Median over {runs} runs (range).",
        SAMPLE_EVERY.as_millis()
    );
    let mut notes = String::new();
    if let [small, large] = figures {
        let (serve_met, serve_line) = flat(
            "`keyhold serve` making the backup",
            small,
            large,
            SizeFigures::serve_anon_peak_mib,
        );
        let (restore_met, restore_line) = flat(
            "`keyhold backup restore`",
            small,
            large,
            SizeFigures::restore_anon_peak_mib,
        );
        notes.push_str(&format!(
            "**Target: memory does not grow with the number of keys**, judged on the \
             anonymous RSS (at ten times the keys at most {:.0}% or {FLAT_SLACK_MIB:.0} MiB \
             above, whichever is more). {serve_line}; {restore_line}. Overall: **{}**.\n\n",
            (FLAT_RATIO - 1.0) * 100.0,
            if serve_met && restore_met {
                "met"
            } else {
                "not met"
            }
        ));
    }
    notes.push_str(
        "**The rest of `serve`'s VmHWM is mapped files** (RssFile): keyhold's binary and \
         the libraries it runs, their pages read in as they are used. The database is not \
         among them: SQLite reads it with system calls into each connection's page cache \
         (a few MiB at most, in the anonymous RSS above), so a backup reading every page \
         of the database leaves both where they were.\n\n\
         | Size | `serve` anonymous RSS before the backup, MiB | peak during it, MiB | mapped files (RssFile) peak, MiB | VmHWM, MiB |\n\
         |---|---|---|---|---|\n",
    );
    for size in figures {
        notes.push_str(&format!(
            "| {} keys | {} | {} | {} | {} |\n",
            thousands(size.keys),
            size.stat(|r| mib(r.serve_anon_rest_kib)).show(0),
            size.serve_anon_peak_mib().show(0),
            size.stat(|r| mib(r.serve_file_peak_kib)).show(0),
            size.stat(|r| mib(r.serve_peak_kib)).show(0),
        ));
    }
    if let [small, large] = figures {
        notes.push_str(&format!(
            "\n**Scheduled drift checks stay on.** The rotator's once-a-minute drift pass \
             asks the store for the groups due only (`groups_due_for_drift_check`, one \
             query with a limit; none are due here, every group being younger than the \
             interval), so its cost does not follow the number of groups. In its first \
             seconds, before any backup, `serve`'s anonymous RSS peaked at {:.0} MiB with \
             {} groups and {:.0} MiB with {} groups. (It read every group and every drift \
             check into memory each minute until issue 21's round 2, which the earlier \
             report measured growing with the groups.)\n",
            mib(small.default_anon_peak_kib),
            thousands(small.groups as u64),
            mib(large.default_anon_peak_kib),
            thousands(large.groups as u64),
        ));
    }
    notes.push_str(
        "\n| Size | Seeding (bulk SQL) | Material for every seeded key | `backup create` in all (start, wait, download, shares) | Restored database | Restored `serve` start-up |\n\
         |---|---|---|---|---|---|\n",
    );
    for size in figures {
        notes.push_str(&format!(
            "| {} keys | {:.1} s | {:.1} s | {} s | {} keys counted by SQL after every run, each with material; {} keys of one group listed over the API | {:.2} s |\n",
            thousands(size.keys),
            size.seeded_secs,
            size.material_secs,
            size.stat(|r| r.create_secs).show(1),
            thousands(size.keys),
            size.restored_group_keys,
            size.restored_startup_secs,
        ));
    }
    notes.push_str(&format!(
        "\nLoad average at this scenario's start {load_at_start}, at its end \
         {load_at_end} (1, 5, 15 min): other work shared the two cores, which lengthens \
         the wall times (compare the CPU times) and leaves the memory figures as they \
         are.\n"
    ));
    if !failures.is_empty() {
        notes.push_str(&format!(
            "\n**Counts that did not match:** {}\n",
            failures.join("; ")
        ));
        section.failure = Some(failures.join("; "));
    }
    section.notes = notes;
    section.charts.push(Chart {
        slug: "backup-peak-rss".into(),
        title: "Peak anonymous RSS making and restoring a backup".into(),
        unit: "MiB; flat from the smaller to the larger size is the target".into(),
        bars: figures
            .iter()
            .flat_map(|size| {
                [
                    Bar {
                        label: format!("serve, backup, {} keys", thousands(size.keys)),
                        stat: size.serve_anon_peak_mib(),
                    },
                    Bar {
                        label: format!("restore, {} keys", thousands(size.keys)),
                        stat: size.restore_anon_peak_mib(),
                    },
                ]
            })
            .collect(),
    });
    section
}
