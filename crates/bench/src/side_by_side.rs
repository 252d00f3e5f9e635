//! Scenario 2: keyhold against the scripts people use today, all against the
//! same LocalStack in the same run, RSA_2048 wrapping keys.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::engine::{prepare_groups, rotate_all};
use crate::report::{Bar, Chart, Section, Stat};
use crate::server::{KeyholdProcess, ServeOptions};
use crate::{Context, Sizes};

fn localstack_endpoint() -> anyhow::Result<String> {
    std::env::var("AWS_ENDPOINT_URL_KMS").context(
        "AWS_ENDPOINT_URL_KMS is unset: run ./scripts/bench, which starts LocalStack (scripts/localstack)",
    )
}

fn run_timed(command: &mut Command) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let output = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    let elapsed = started.elapsed();
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(elapsed)
}

struct Baseline {
    label: String,
    groups: usize,
    per_second: Stat,
}

/// One setup pass (creates the keys and aliases), then `runs` timed passes,
/// each a full rotation of every group.
fn baseline(
    label: &str,
    groups: usize,
    runs: usize,
    mut pass: impl FnMut() -> Command,
) -> anyhow::Result<Baseline> {
    eprintln!("side by side: {label}");
    run_timed(&mut pass())?;
    let mut per_second = Vec::new();
    for _ in 0..runs {
        let took = run_timed(&mut pass())?;
        per_second.push(groups as f64 / took.as_secs_f64());
    }
    Ok(Baseline {
        label: label.to_owned(),
        groups,
        per_second: Stat::of(&per_second),
    })
}

pub async fn run(ctx: &Context, sizes: &Sizes) -> anyhow::Result<Section> {
    let endpoint = localstack_endpoint()?;
    let run_id = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let groups = sizes.side_groups;
    let cli_groups = sizes.cli_groups;
    let threads = 8;

    // keyhold: a real `keyhold serve`, software keystore, SQLite.
    eprintln!("side by side: keyhold");
    let data_dir = ctx.work.join(format!("side-{run_id}"));
    let keyhold = KeyholdProcess::spawn(&ctx.keyhold, &data_dir, &ServeOptions::default())?;
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
    let timeout = Duration::from_secs(1800);
    let (_, mut failed, _) = rotate_all(&keyhold, &token, &names, timeout).await?;
    let mut per_second = Vec::new();
    for _ in 0..sizes.runs {
        let (wall, f, _) = rotate_all(&keyhold, &token, &names, timeout).await?;
        failed += f;
        per_second.push(groups as f64 / wall.as_secs_f64());
    }
    keyhold.stop()?;
    let _ = std::fs::remove_dir_all(&data_dir);
    if failed > 0 {
        bail!("{failed} keyhold rotations against LocalStack failed");
    }
    let keyhold_run = Baseline {
        label: "keyhold (8 concurrent jobs)".into(),
        groups,
        per_second: Stat::of(&per_second),
    };

    let baselines_dir = ctx.repo.join("bench/baselines");
    let state = ctx.work.join(format!("baseline-state-{run_id}"));
    std::fs::create_dir_all(&state)?;
    let cli_state = state.join("cli");
    let shell = baseline(
        "AWS CLI + openssl, shell loop",
        cli_groups,
        sizes.runs,
        || {
            let mut c = Command::new("bash");
            c.arg(baselines_dir.join("aws-cli.sh"))
                .arg(&endpoint)
                .arg(format!("cli-{run_id}"))
                .arg(cli_groups.to_string())
                .arg(&cli_state)
                .env("AWS_CLI", &ctx.aws_cli);
            c
        },
    )?;
    let py = |label: &str, prefix: &str, threads: usize| {
        let state_file = state.join(format!("{prefix}.json"));
        baseline(label, groups, sizes.runs, || {
            let mut c = Command::new(&ctx.python);
            c.arg(baselines_dir.join("boto3_rotate.py"))
                .arg(&endpoint)
                .arg(format!("{prefix}-{run_id}"))
                .arg(groups.to_string())
                .arg(&state_file)
                .arg(threads.to_string());
            c
        })
    };
    let serial = py("boto3, serial", "py1", 1)?;
    let threaded = py(&format!("boto3, {threads} threads"), "py8", threads)?;
    let _ = std::fs::remove_dir_all(&state);

    let all = [keyhold_run, shell, serial, threaded];
    let mut section = Section::new("2. Side by side against LocalStack").headers(&[
        "Who rotates",
        "Groups per run",
        "Rotations/s",
        "keyhold ÷ this",
    ]);
    section.text = format!(
        "The same rotation four ways, against the same LocalStack ({endpoint_kind}), \
         one after the other in this run, RSA_2048 wrapping keys: a new KMS key \
         with Origin EXTERNAL (policy and tag), GetParametersForImport, 32 bytes of \
         key material wrapped with RSAES_OAEP_SHA_256, ImportKeyMaterial (valid for \
         a year), the alias moved to the new key and the previous key disabled. \
         Each contender first rotates its groups once untimed (creating keys and \
         aliases), then {runs} timed passes over all its groups. The baselines are \
         in `bench/baselines/`: `aws-cli.sh` (AWS CLI v1 and `openssl pkeyutl`, \
         AWS's documented import steps, one group after the other) and \
         `boto3_rotate.py` (the same steps in one boto3 program, serially and on \
         {threads} threads, the concurrency of keyhold's job runner). The shell \
         loop rotates fewer groups per pass ({cli_groups}): each `aws` call starts \
         a Python interpreter, so a pass takes seconds per group. keyhold's \
         figure includes what the baselines skip: the key generated and kept in \
         the keystore, every step committed to the database with its audit \
         entry, and the job resumable after a crash. keyhold also paces itself \
         under AWS's default request quotas per credential and Region, which \
         LocalStack does not enforce and the baselines ignore: with one \
         credential, GetParametersForImport at 1/s holds keyhold to about one \
         rotation per second here, as AWS would hold every contender (the \
         baselines would be throttled there; scenario 3 measures keyhold against \
         enforced quotas, scenario 1 its engine without them).",
        endpoint_kind = "`scripts/localstack`",
        runs = sizes.runs,
    );
    let keyhold_median = all[0].per_second.median;
    for b in &all {
        section.row(vec![
            b.label.clone(),
            b.groups.to_string(),
            b.per_second.show(2),
            format!("{:.1}×", keyhold_median / b.per_second.median),
        ]);
    }
    section.charts.push(Chart {
        slug: "side-by-side-localstack".into(),
        title: "Rotations per second against LocalStack".into(),
        unit: "rotations/s, median with min–max over the runs; higher is better".into(),
        bars: all
            .iter()
            .map(|b| Bar {
                label: b.label.clone(),
                stat: b.per_second.clone(),
            })
            .collect(),
    });
    Ok(section)
}
