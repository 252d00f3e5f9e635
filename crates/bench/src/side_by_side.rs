//! Scenario 2: keyhold against the programs people write today, all against
//! the same LocalStack in the same run, RSA_2048 wrapping keys, one
//! credential and the same concurrency for every contender.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::engine::{prepare_groups, rotate_all};
use crate::report::{Bar, Chart, Section, Stat};
use crate::server::{KeyholdProcess, ServeOptions, cpu_time_of};
use crate::{Context, Sizes};

/// Rotations in flight at once, for every contender that runs several:
/// keyhold's job runner runs 8 jobs at once by default, and the SDK loop and
/// boto3 get as many tasks or threads.
const CONCURRENCY: usize = 8;

/// keyhold's request quotas in this scenario, every operation at 10,000/s:
/// far above what LocalStack serves here (tens of rotations per second), so
/// keyhold's pacing never holds it back and the comparison is of the work
/// each contender does per rotation. A team whose quotas AWS raised sets
/// them the same way.
const QUOTAS: &str = "*=10000";

/// keyhold and the contenders issue #21's targets compare it with run this
/// many rounds for each of the report's runs: the targets are read from
/// their ratios, round by round, and one pass of each takes seconds, while
/// the serial contenders (the shell loop above all) take much longer.
const COMPARED_ROUNDS_PER_RUN: usize = 3;

/// Issue #21's targets: keyhold's rotations/s over the raw AWS SDK loop's,
/// and over boto3's on threads.
const SDK_TARGET: f64 = 0.9;
const BOTO3_TARGET: f64 = 1.0;

/// The Prometheus counter of keyhold's time spent waiting for its pacing.
const PACING_WAIT_SERIES: &str = "keyhold_kms_pacing_wait_seconds_total";

/// The raw AWS SDK baseline's binary (bench/baselines/sdk-rotate), which
/// scripts/bench builds with keyhold, into the same directory.
const SDK_BASELINE: &str = "sdk-rotate";

fn localstack_endpoint() -> anyhow::Result<String> {
    std::env::var("AWS_ENDPOINT_URL_KMS").context(
        "AWS_ENDPOINT_URL_KMS is unset: run ./scripts/bench, which starts LocalStack (scripts/localstack)",
    )
}

/// The LocalStack scripts/localstack started for this run's peers
/// directory, watched from outside: its CPU time and its request log show
/// what each contender asks of the KMS peer, which shares the two cores with
/// the contender.
struct LocalStack {
    pid: u32,
    /// LocalStack logs every request it answered, one line each
    /// (`localstack.request.aws : AWS kms.CreateKey => 200`).
    log: PathBuf,
}

/// The KMS requests of a stretch of LocalStack's log, by operation.
fn kms_requests(log: &str) -> BTreeMap<String, u64> {
    let mut requests = BTreeMap::new();
    for line in log.lines() {
        let Some((_, request)) = line.split_once("localstack.request.aws") else {
            continue;
        };
        let Some((_, operation)) = request.split_once("AWS kms.") else {
            continue;
        };
        let operation = operation.split_whitespace().next().unwrap_or_default();
        *requests.entry(operation.to_owned()).or_insert(0) += 1;
    }
    requests
}

/// Where LocalStack's CPU time and log stood before a pass.
struct LocalStackMark {
    cpu: Duration,
    log_bytes: u64,
}

impl LocalStack {
    fn find() -> Option<Self> {
        let state = Path::new(&std::env::var("KEYHOLD_PEERS_DIR").ok()?).join("localstack");
        let pid: u32 = std::fs::read_to_string(state.join("pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let command_line = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let log = state.join("localstack.log");
        (String::from_utf8_lossy(&command_line).contains("localstack") && log.is_file())
            .then_some(Self { pid, log })
    }

    fn mark(&self) -> anyhow::Result<LocalStackMark> {
        Ok(LocalStackMark {
            cpu: cpu_time_of(self.pid)?,
            log_bytes: std::fs::metadata(&self.log)?.len(),
        })
    }

    /// CPU time spent and KMS requests answered (by operation) since `mark`.
    async fn since(
        &self,
        mark: &LocalStackMark,
    ) -> anyhow::Result<(Duration, BTreeMap<String, u64>)> {
        // LocalStack writes a request's line once it has answered it: give
        // the last answers of the pass time to reach the log.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let cpu = cpu_time_of(self.pid)?.saturating_sub(mark.cpu);
        let mut file = std::fs::File::open(&self.log)?;
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(mark.log_bytes))?;
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut text)?;
        let requests = kms_requests(&String::from_utf8_lossy(&text));
        Ok((cpu, requests))
    }
}

/// CPU time (user + system) of the children this process has waited for:
/// a baseline's program and everything it ran (the AWS CLI's interpreters
/// included), once `Command::output` has returned.
fn waited_children_cpu() -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("/proc/self/stat without ')'")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // cutime and cstime are fields 16 and 17 of stat; 14 and 15 after ')'.
    let ticks = |i: usize| -> anyhow::Result<u64> {
        Ok(fields.get(i).context("short /proc/self/stat")?.parse()?)
    };
    // USER_HZ is 100 on Linux.
    Ok(Duration::from_millis((ticks(13)? + ticks(14)?) * 10))
}

/// keyhold's time waiting for its pacing so far, over every credential and
/// operation; None when this keyhold exports no such series (a build from
/// before the quotas were configurable).
async fn pacing_wait_seconds(keyhold: &KeyholdProcess) -> anyhow::Result<Option<f64>> {
    let text = keyhold
        .http
        .get(format!("{}/metrics", keyhold.base))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    series_total(&text, PACING_WAIT_SERIES)
}

/// The sum of every sample of the series `name` in a Prometheus or
/// OpenMetrics text exposition; None when it has none.
fn series_total(exposition: &str, name: &str) -> anyhow::Result<Option<f64>> {
    let mut total = None;
    for line in exposition.lines().filter(|l| !l.starts_with('#')) {
        let (series, rest) = match line.split_once('{') {
            Some((series, labels)) => (series, labels.rsplit_once('}').map_or("", |(_, v)| v)),
            None => line.split_once(' ').unwrap_or((line, "")),
        };
        if series.trim() != name {
            continue;
        }
        let value: f64 = rest
            .split_whitespace()
            .next()
            .with_context(|| format!("{name} without a value"))?
            .parse()
            .with_context(|| format!("reading {line}"))?;
        *total.get_or_insert(0.0) += value;
    }
    Ok(total)
}

/// Runs a baseline; returns its standard output.
fn run_command(command: &mut Command) -> anyhow::Result<String> {
    let output = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A pass as a baseline program timed it itself
/// (`rotations=N seconds=S cpu_seconds=C`, its last line of output).
#[derive(Debug, PartialEq)]
struct SelfTimed {
    rotations: usize,
    seconds: f64,
    cpu_seconds: f64,
}

impl SelfTimed {
    fn parse(output: &str) -> anyhow::Result<Option<Self>> {
        let Some(line) = output.lines().rev().find(|l| l.starts_with("rotations=")) else {
            return Ok(None);
        };
        let field = |name: &str| -> anyhow::Result<&str> {
            line.split_whitespace()
                .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
                .with_context(|| format!("no {name} in the baseline's timing line {line:?}"))
        };
        Ok(Some(Self {
            rotations: field("rotations")?.parse()?,
            seconds: field("seconds")?.parse()?,
            cpu_seconds: field("cpu_seconds")?.parse()?,
        }))
    }
}

/// How long a pass took and the CPU time the contender's own processes
/// spent on it.
struct PassTimes {
    /// As the contender timed it (the baselines that time their rotations
    /// alone) or as keyhold's jobs recorded their end; otherwise the bench
    /// times the whole pass.
    wall: Option<Duration>,
    cpu: Duration,
}

/// How a contender rotates all its groups once.
enum Rotation<'a> {
    /// Force Rotate of every group through keyhold's API, then waiting for
    /// the jobs.
    Keyhold {
        process: &'a KeyholdProcess,
        token: &'a str,
        names: &'a [String],
    },
    /// One run of a baseline program; the closure builds its command.
    Program(Box<dyn Fn() -> Command + 'a>),
}

impl Rotation<'_> {
    /// One pass over all the contender's groups.
    async fn pass(&self, groups: usize) -> anyhow::Result<PassTimes> {
        match self {
            Self::Keyhold {
                process,
                token,
                names,
            } => {
                let before = process.cpu_time()?;
                let timeout = Duration::from_secs(1800);
                let (wall, failed, first_error) =
                    rotate_all(process, token, names, timeout).await?;
                if failed > 0 {
                    bail!(
                        "{failed} keyhold rotations against LocalStack failed; the first: {}",
                        first_error.unwrap_or_default()
                    );
                }
                Ok(PassTimes {
                    wall: Some(wall),
                    cpu: process.cpu_time()?.saturating_sub(before),
                })
            }
            Self::Program(command) => {
                let before = waited_children_cpu()?;
                let mut command = command();
                let output = run_command(&mut command)?;
                let cpu = waited_children_cpu()?.saturating_sub(before);
                Ok(match SelfTimed::parse(&output)? {
                    Some(timed) if timed.rotations == groups => PassTimes {
                        wall: Some(Duration::try_from_secs_f64(timed.seconds)?),
                        cpu: Duration::try_from_secs_f64(timed.cpu_seconds)?,
                    },
                    Some(timed) => bail!(
                        "{command:?} rotated {} groups, not {groups}",
                        timed.rotations
                    ),
                    None => PassTimes { wall: None, cpu },
                })
            }
        }
    }
}

struct Contender<'a> {
    label: String,
    /// Rotations in flight at once.
    concurrency: usize,
    groups: usize,
    rotation: Rotation<'a>,
    /// Issue #21's target for keyhold's rotations/s over this contender's.
    target: Option<f64>,
    /// Timed passes, one per round.
    rounds: usize,
    per_second: Vec<f64>,
    client_cpu_ms: Vec<f64>,
    localstack_cpu_ms: Vec<f64>,
    /// KMS requests per rotation, every operation together, per pass.
    requests: Vec<f64>,
    /// KMS requests of the timed passes, by operation.
    requests_by_operation: BTreeMap<String, u64>,
}

impl<'a> Contender<'a> {
    fn new(
        label: &str,
        concurrency: usize,
        groups: usize,
        rounds: usize,
        rotation: Rotation<'a>,
    ) -> Self {
        Self {
            label: label.to_owned(),
            concurrency,
            groups,
            rotation,
            target: None,
            rounds,
            per_second: Vec::new(),
            client_cpu_ms: Vec::new(),
            localstack_cpu_ms: Vec::new(),
            requests: Vec::new(),
            requests_by_operation: BTreeMap::new(),
        }
    }

    fn with_target(mut self, target: f64) -> Self {
        self.target = Some(target);
        self
    }

    /// One timed pass over all the contender's groups.
    async fn timed_pass(&mut self, localstack: Option<&LocalStack>) -> anyhow::Result<()> {
        let mark = localstack.map(LocalStack::mark).transpose()?;
        let started = Instant::now();
        let times = self.rotation.pass(self.groups).await?;
        let took = times.wall.unwrap_or_else(|| started.elapsed());
        let client_cpu = times.cpu;
        let n = self.groups as f64;
        self.per_second.push(n / took.as_secs_f64());
        self.client_cpu_ms
            .push(client_cpu.as_secs_f64() * 1000.0 / n);
        if let (Some(localstack), Some(mark)) = (localstack, mark) {
            let (cpu, requests) = localstack.since(&mark).await?;
            self.localstack_cpu_ms.push(cpu.as_secs_f64() * 1000.0 / n);
            self.requests
                .push(requests.values().sum::<u64>() as f64 / n);
            for (operation, count) in requests {
                *self.requests_by_operation.entry(operation).or_insert(0) += count;
            }
        }
        Ok(())
    }
}

/// keyhold's rotations/s over another contender's, round by round (each
/// round runs every contender once, so a round's ratio compares passes made
/// under the same conditions).
fn ratio(keyhold: &Contender, other: &Contender) -> Stat {
    let ratios: Vec<f64> = keyhold
        .per_second
        .iter()
        .zip(&other.per_second)
        .map(|(k, o)| k / o)
        .collect();
    Stat::of(&ratios)
}

pub async fn run(ctx: &Context, sizes: &Sizes) -> anyhow::Result<Section> {
    let endpoint = localstack_endpoint()?;
    let run_id = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let groups = sizes.side_groups;
    let cli_groups = sizes.cli_groups;
    let sdk_rotate = sdk_baseline(&ctx.keyhold)?;
    let localstack = LocalStack::find();

    // keyhold: a real `keyhold serve`, software keystore, SQLite, one
    // credential for all groups.
    let data_dir = ctx.work.join(format!("side-{run_id}"));
    let options = ServeOptions {
        job_concurrency: u32::try_from(CONCURRENCY)?,
        env: vec![("KEYHOLD_KMS_QUOTAS".to_owned(), QUOTAS.to_owned())],
        ..ServeOptions::default()
    };
    let keyhold = KeyholdProcess::spawn(&ctx.keyhold, &data_dir, &options)?;
    let token = keyhold.dual_session().await?;
    keyhold
        .import_credential(&token, "localstack", &endpoint)
        .await?;
    let names = prepare_groups(
        &keyhold,
        &token,
        "localstack",
        &format!("kh-{run_id}"),
        groups,
    )
    .await?;

    let baselines_dir = ctx.repo.join("bench/baselines");
    let state = ctx.work.join(format!("baseline-state-{run_id}"));
    std::fs::create_dir_all(&state)?;
    let cli_state = state.join("cli");
    let sdk_state = state.join("sdk8.json");
    let (sdk_endpoint, sdk_prefix) = (endpoint.clone(), format!("sdk8-{run_id}"));
    let boto3 = |prefix: &str, threads: usize| {
        let state_file = state.join(format!("{prefix}.json"));
        let script = baselines_dir.join("boto3_rotate.py");
        let (python, endpoint) = (ctx.python.clone(), endpoint.clone());
        let prefix = format!("{prefix}-{run_id}");
        Rotation::Program(Box::new(move || {
            let mut c = Command::new(&python);
            c.arg(&script)
                .arg(&endpoint)
                .arg(&prefix)
                .arg(groups.to_string())
                .arg(&state_file)
                .arg(threads.to_string());
            c
        }))
    };
    let cli_script = baselines_dir.join("aws-cli.sh");
    let aws_cli = ctx.aws_cli.clone();
    let cli_endpoint = endpoint.clone();
    let cli_prefix = format!("cli-{run_id}");
    let compared_rounds = sizes.runs * COMPARED_ROUNDS_PER_RUN;
    let mut contenders = vec![
        Contender::new(
            &format!("keyhold ({CONCURRENCY} concurrent jobs)"),
            CONCURRENCY,
            groups,
            compared_rounds,
            Rotation::Keyhold {
                process: &keyhold,
                token: &token,
                names: &names,
            },
        ),
        Contender::new(
            &format!("AWS SDK for Rust loop, {CONCURRENCY} tasks"),
            CONCURRENCY,
            groups,
            compared_rounds,
            Rotation::Program(Box::new(move || {
                let mut c = Command::new(&sdk_rotate);
                c.arg(&sdk_endpoint)
                    .arg(&sdk_prefix)
                    .arg(groups.to_string())
                    .arg(&sdk_state)
                    .arg(CONCURRENCY.to_string());
                c
            })),
        )
        .with_target(SDK_TARGET),
        Contender::new(
            &format!("boto3, {CONCURRENCY} threads"),
            CONCURRENCY,
            groups,
            compared_rounds,
            boto3("py8", CONCURRENCY),
        )
        .with_target(BOTO3_TARGET),
        Contender::new("boto3, serial", 1, groups, sizes.runs, boto3("py1", 1)),
        Contender::new(
            "AWS CLI + openssl, shell loop",
            1,
            cli_groups,
            sizes.runs,
            Rotation::Program(Box::new(move || {
                let mut c = Command::new("bash");
                c.arg(&cli_script)
                    .arg(&cli_endpoint)
                    .arg(&cli_prefix)
                    .arg(cli_groups.to_string())
                    .arg(&cli_state)
                    .env("AWS_CLI", &aws_cli);
                c
            })),
        ),
    ];

    // An untimed pass each: keys and aliases created, interpreters and
    // caches warm.
    for contender in &contenders {
        eprintln!("side by side: {} (first pass)", contender.label);
        contender.rotation.pass(contender.groups).await?;
    }
    let pacing_before = pacing_wait_seconds(&keyhold).await?;
    // Round by round, every contender once per round (while it has rounds
    // left), starting one further each round: other work on the machine
    // weighs on all of them alike.
    for round in 0..compared_rounds.max(sizes.runs) {
        for i in 0..contenders.len() {
            let index = (round + i) % contenders.len();
            let contender = &mut contenders[index];
            if round >= contender.rounds {
                continue;
            }
            eprintln!("side by side: {} (round {})", contender.label, round + 1);
            contender.timed_pass(localstack.as_ref()).await?;
        }
    }
    let pacing_after = pacing_wait_seconds(&keyhold).await?;
    let pacing_wait = pacing_before
        .zip(pacing_after)
        .map(|(before, after)| after - before);

    let section = report(
        &contenders,
        &Figures {
            runs: sizes.runs,
            compared_rounds,
            cli_groups,
            pacing_wait,
            localstack: localstack.is_some(),
        },
    );
    drop(contenders);
    keyhold.stop()?;
    let _ = std::fs::remove_dir_all(&data_dir);
    let _ = std::fs::remove_dir_all(&state);
    Ok(section)
}

/// The SDK loop's binary next to the keyhold binary being measured (both
/// built by scripts/bench in the same profile and target directory).
fn sdk_baseline(keyhold: &Path) -> anyhow::Result<PathBuf> {
    let path = keyhold
        .parent()
        .context("the keyhold binary's directory")?
        .join(SDK_BASELINE);
    if !path.is_file() {
        bail!(
            "{} is missing: ./scripts/bench builds it (cargo build -p {SDK_BASELINE}, from bench/baselines/{SDK_BASELINE})",
            path.display()
        );
    }
    Ok(path)
}

/// What the section says besides the contenders' own figures.
struct Figures {
    runs: usize,
    /// Rounds of keyhold and of the contenders the targets compare it with.
    compared_rounds: usize,
    cli_groups: usize,
    /// keyhold's pacing waits over the timed passes, seconds; None when it
    /// exports no pacing series.
    pacing_wait: Option<f64>,
    /// Whether LocalStack's CPU time and request log could be read.
    localstack: bool,
}

/// "0.95× (0.91–0.99)": a ratio's median, then its range over the rounds.
fn show_ratio(ratio: &Stat) -> String {
    if ratio.runs <= 1 {
        return format!("{:.2}×", ratio.median);
    }
    format!("{:.2}× ({:.2}–{:.2})", ratio.median, ratio.min, ratio.max)
}

fn report(contenders: &[Contender], figures: &Figures) -> Section {
    let mut section = Section::new("2. Side by side against LocalStack").headers(&[
        "Who rotates",
        "At once",
        "Groups per pass",
        "Rotations/s",
        "keyhold ÷ this",
        "Client CPU ms per rotation",
        "LocalStack CPU ms per rotation",
        "KMS requests per rotation",
    ]);
    section.text = format!(
        "The same rotation five ways, against the same LocalStack ({endpoint_kind}) in \
         this run, RSA_2048 wrapping keys: a new KMS key with Origin EXTERNAL (policy \
         and tag), GetParametersForImport, 32 bytes of key material wrapped with \
         RSAES_OAEP_SHA_256, ImportKeyMaterial (valid for a year), the alias moved to \
         the new key and the previous key disabled. Each contender first rotates its \
         groups once untimed (creating keys and aliases); then come rounds of timed \
         passes, a round being one pass over all the groups of every contender in \
         turn, the order shifted by one each round, so that other work on the machine \
         weighs on all of them alike: {compared_rounds} rounds of keyhold, the SDK \
         loop and boto3 on threads, whose ratios the targets below are read from, \
         {runs} of the serial boto3 and the shell loop. The baselines are in `bench/baselines/`: `sdk-rotate` (the steps \
         written directly against `aws-sdk-kms`, the AWS SDK keyhold's adapter is \
         built on, with the same TLS and client settings; tokio tasks sharing one \
         client; no store, no audit, no pacing), `boto3_rotate.py` (the same steps in \
         one boto3 program, on threads and serially) and `aws-cli.sh` (AWS CLI v1 and \
         `openssl pkeyutl`, AWS's documented import steps, one group after the \
         other; {cli_groups} groups per pass, as each `aws` call starts a Python \
         interpreter). keyhold runs {CONCURRENCY} jobs at once, its default, and the \
         SDK loop and boto3 get {CONCURRENCY} tasks or threads; every contender uses \
         one credential for all its groups. keyhold paces its requests per \
         credential and Region, at AWS's default quotas unless told otherwise, which \
         would hold it to one rotation per second here (GetParametersForImport: 1/s) \
         while LocalStack enforces no quota and the baselines pace nothing. So \
         keyhold runs with its quotas raised above what LocalStack can serve \
         (`KEYHOLD_KMS_QUOTAS={QUOTAS}`, as a team whose AWS quotas were raised \
         configures it): what is compared is the work each contender does per \
         rotation. keyhold's figure includes what the baselines skip: the key \
         generated and kept in the keystore, every step committed to the database \
         with its audit entry, the job resumable after a crash. keyhold's passes are \
         timed by the benchmark, from the first Force Rotate request to the end of the \
         last job as keyhold recorded it (the job's `finished_at`, to the \
         microsecond; its API and the job-status polls, every 50 ms, included, but \
         not the wait for the poll that sees the end); the \
         SDK loop and boto3 time their rotations themselves, from the first request \
         to the last answer, leaving out the start of the process and the client's \
         set-up (about half a second for a Python interpreter with boto3), which a \
         long-running program pays once; the shell loop is timed whole, a start per \
         call being how it works. Client CPU is the CPU time (user + system) of the \
         contender's own processes over the same stretch, per rotation: `keyhold \
         serve`'s, the SDK loop's and boto3's process's, the shell loop's with \
         everything it starts. LocalStack CPU and KMS requests are the KMS peer's \
         during the contender's timed passes (its CPU time and its request log): \
         LocalStack shares the two cores with the contender.",
        endpoint_kind = "`scripts/localstack`",
        runs = figures.runs,
        compared_rounds = figures.compared_rounds,
        cli_groups = figures.cli_groups,
    );
    let Some(keyhold) = contenders.first() else {
        return section;
    };
    let localstack_figure = |values: &[f64], decimals: usize| {
        if figures.localstack {
            Stat::of(values).show(decimals)
        } else {
            "n/a".to_owned()
        }
    };
    for (i, c) in contenders.iter().enumerate() {
        section.row(vec![
            c.label.clone(),
            c.concurrency.to_string(),
            c.groups.to_string(),
            Stat::of(&c.per_second).show(2),
            if i == 0 {
                "1×".to_owned()
            } else {
                show_ratio(&ratio(keyhold, c))
            },
            Stat::of(&c.client_cpu_ms).show(1),
            localstack_figure(&c.localstack_cpu_ms, 1),
            localstack_figure(&c.requests, 1),
        ]);
    }
    section.charts.push(Chart {
        slug: "side-by-side-localstack".into(),
        title: "Rotations per second against LocalStack".into(),
        unit: "rotations/s, median with min–max over the rounds; higher is better".into(),
        bars: contenders
            .iter()
            .map(|c| Bar {
                label: c.label.clone(),
                stat: Stat::of(&c.per_second),
            })
            .collect(),
    });

    let mut notes = String::from(
        "Issue #21's targets, from the ratios of the rounds (keyhold's pass over the \
         other contender's in the same round; median with min–max):\n\n\
         | Target | keyhold ÷ contender | |\n|---|---|---|\n",
    );
    for other in contenders {
        let Some(target) = other.target else {
            continue;
        };
        let ratio = ratio(keyhold, other);
        notes.push_str(&format!(
            "| keyhold ≥ {target:.1}× {} | {} | {} |\n",
            other.label,
            show_ratio(&ratio),
            if ratio.median >= target {
                "met"
            } else {
                "**not met**"
            },
        ));
    }
    notes.push('\n');
    notes.push_str(&match figures.pacing_wait {
        Some(wait) => format!(
            "keyhold's pacing waited {wait:.2} s in all during the timed passes \
             (`{PACING_WAIT_SERIES}`, summed over operations; 0 when the quotas never \
             held a request back).\n"
        ),
        None => format!(
            "This keyhold exports no `{PACING_WAIT_SERIES}`: it predates configurable \
             quotas, ignores `KEYHOLD_KMS_QUOTAS` and paced itself at AWS's defaults \
             (GetParametersForImport 1/s), which its figure shows.\n"
        ),
    });
    if figures.localstack {
        notes.push_str(&cpu_per_rotation(keyhold, contenders));
        notes.push_str(&requests_by_operation(contenders));
    }
    section.notes = notes;
    section
}

/// KMS requests per rotation by operation, one column per contender: where
/// the contenders ask LocalStack for different work.
fn requests_by_operation(contenders: &[Contender]) -> String {
    let operations: std::collections::BTreeSet<&String> = contenders
        .iter()
        .flat_map(|c| c.requests_by_operation.keys())
        .collect();
    let mut headers = vec!["KMS requests per rotation".to_owned()];
    headers.extend(contenders.iter().map(|c| c.label.clone()));
    let rows: Vec<Vec<String>> = operations
        .into_iter()
        .map(|operation| {
            let mut row = vec![operation.clone()];
            row.extend(contenders.iter().map(|c| {
                let rotations = (c.groups * c.per_second.len()) as f64;
                let count = c.requests_by_operation.get(operation).copied();
                count.map_or("–".to_owned(), |n| format!("{:.2}", n as f64 / rotations))
            }));
            row
        })
        .collect();
    format!(
        "\nKMS requests per rotation by operation over the timed passes, from \
         LocalStack's request log:\n\n{}",
        crate::report::table(&headers, &rows)
    )
}

/// The CPU a rotation costs on the two cores, the contender's and
/// LocalStack's together, next to keyhold's: when the cores are busy (other
/// work, LocalStack's Python), rotations/s follow it.
fn cpu_per_rotation(keyhold: &Contender, contenders: &[Contender]) -> String {
    let total =
        |c: &Contender| Stat::of(&c.client_cpu_ms).median + Stat::of(&c.localstack_cpu_ms).median;
    let keyhold_total = total(keyhold);
    let others: Vec<String> = contenders
        .iter()
        .filter(|c| c.target.is_some())
        .map(|c| {
            format!(
                "{} {:.1} ms (÷ keyhold's: {:.2})",
                c.label,
                total(c),
                total(c) / keyhold_total
            )
        })
        .collect();
    format!(
        "\nCPU per rotation, the contender's and LocalStack's together (medians): \
         keyhold {keyhold_total:.1} ms; {}.\n",
        others.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_series_total_sums_its_labelled_samples_and_ignores_the_rest() {
        let exposition = "\
# HELP keyhold_kms_pacing_wait_seconds_total Time waited.
# TYPE keyhold_kms_pacing_wait_seconds_total counter
keyhold_kms_pacing_wait_seconds_total{credential=\"a\",region=\"eu-west-1\",operation=\"CreateKey\"} 1.5
keyhold_kms_pacing_wait_seconds_total{credential=\"a\",region=\"eu-west-1\",operation=\"DisableKey\"} 0.25
keyhold_kms_pacing_waits_total{credential=\"a\",region=\"eu-west-1\",operation=\"CreateKey\"} 7
keyhold_up 1
# EOF
";
        assert_eq!(
            series_total(exposition, PACING_WAIT_SERIES).unwrap(),
            Some(1.75)
        );
        assert_eq!(series_total(exposition, "keyhold_up").unwrap(), Some(1.0));
        assert_eq!(series_total(exposition, "keyhold_absent").unwrap(), None);
    }

    #[test]
    fn a_baseline_s_own_timing_is_its_last_timing_line() {
        let output =
            "rotations=3 seconds=9 cpu_seconds=9\nrotations=20 seconds=2.5 cpu_seconds=0.125\n";
        assert_eq!(
            SelfTimed::parse(output).unwrap(),
            Some(SelfTimed {
                rotations: 20,
                seconds: 2.5,
                cpu_seconds: 0.125
            })
        );
        assert_eq!(SelfTimed::parse("").unwrap(), None);
        assert!(SelfTimed::parse("rotations=20 seconds=2.5\n").is_err());
    }

    #[test]
    fn kms_requests_are_counted_by_operation_from_localstack_s_request_lines() {
        let log = "\
2026-12-06T16:21:09.539  WARN --- [et.reactor-2] l.aws.protocol.serializer  : Response object AliasListEntry contains a member which is not specified: LastUpdateDate
2026-12-06T16:21:09.539  INFO --- [et.reactor-2] localstack.request.aws     : AWS kms.DescribeKey => 200
2026-12-06T16:21:09.542  INFO --- [et.reactor-1] localstack.request.aws     : AWS kms.UpdateAlias => 400 (NotFoundException)
2026-12-06T16:21:09.545  INFO --- [et.reactor-0] localstack.request.aws     : AWS kms.DescribeKey => 200
";
        let counted = kms_requests(log);
        assert_eq!(
            counted.into_iter().collect::<Vec<_>>(),
            [("DescribeKey".to_owned(), 2), ("UpdateAlias".to_owned(), 1)]
        );
    }
}
