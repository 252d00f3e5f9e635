//! Scenario 10, PKCS#11 cost and the token's size: the same Force Rotate
//! runs as scenario 1's PKCS#11 contender, on SoftHSM2 tokens that already
//! hold 10, 1,000 and 10,000 of keyhold's keys.
//!
//! Each size gets a token of its own, filled before `keyhold serve` starts
//! by the PKCS#11 keystore's own `generate_key` in this process: the objects
//! are those rotations leave (`keyhold:key:<uuid>`, the same template and
//! label scheme, and keyhold's own keys), made at a small fraction of a
//! rotation's cost (no KMS, no store, no audit).

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use keyhold_core::ports::Keystore as _;
use keyhold_keystore::{Pkcs11Keystore, Pkcs11Settings, TokenSelector};
use secrecy::SecretString;

use crate::engine::{prepare_groups, rotate_all};
use crate::kms_peer::KmsPeer;
use crate::report::{Bar, Chart, Section, Stat, thousands};
use crate::server::{KeyholdProcess, Keystore, ServeOptions};
use crate::{Context, Sizes};

/// Issue 21's target: CPU time per rotation with the most keys on the
/// token, divided by that with the fewest.
const TARGET_RATIO: f64 = 1.5;
/// keyhold paces GetParametersForImport at one request per second per
/// credential and Region, without a burst (as in scenario 6): a run that
/// followed the previous one on the same groups closer than this would
/// measure the pacing, not the rotations.
const PACING_GAP: Duration = Duration::from_millis(1100);
/// Searches timed on each filled token (one label search each).
const SEARCHES: usize = 5;
const PIN: &str = "24681357";
const SO_PIN: &str = "97531864";

/// One token size's figures.
struct SizeRun {
    keys: usize,
    fill: Duration,
    /// One `C_FindObjects` by label on the filled token, ms (median).
    search_ms: f64,
    per_second: Stat,
    cpu_ms: Stat,
    wall_ms: Stat,
    failed: usize,
    first_error: Option<String>,
}

/// A SoftHSM2 token of its own in the token directory of `SOFTHSM2_CONF`
/// (scripts/bench's), removed by [`delete_token`].
fn fresh_token(keys: usize) -> anyhow::Result<String> {
    let label = format!(
        "keyhold-size-{keys}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    );
    let output = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", &label])
        .args(["--pin", PIN, "--so-pin", SO_PIN])
        .output()
        .context("running softhsm2-util (Debian package softhsm2)")?;
    if !output.status.success() {
        bail!(
            "softhsm2-util --init-token: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(label)
}

fn delete_token(label: &str) {
    match Command::new("softhsm2-util")
        .args(["--delete-token", "--token", label])
        .output()
    {
        Ok(output) if output.status.success() => {}
        Ok(output) => eprintln!(
            "token size: softhsm2-util --delete-token {label}: {}",
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(e) => eprintln!("token size: softhsm2-util --delete-token {label}: {e}"),
    }
}

/// Puts `keys` keys on the token with the keystore's own `generate_key`,
/// then times label searches on it (a delete of a key the token does not
/// hold is exactly one). Returns the fill time and the search's median ms.
fn fill(module: &str, label: &str, keys: usize) -> anyhow::Result<(Duration, f64)> {
    let settings = Pkcs11Settings {
        module: module.into(),
        token: TokenSelector::Label(label.to_owned()),
        pin: SecretString::from(PIN),
    };
    // This process loaded the module before the token existed when an
    // earlier size ran: the keystore re-initialises it after the first
    // "no such token", and the second open finds it.
    let keystore = match Pkcs11Keystore::open(settings.clone()) {
        Ok(keystore) => keystore,
        Err(_) => Pkcs11Keystore::open(settings)?,
    };
    let started = Instant::now();
    for _ in 0..keys {
        keystore.generate_key(uuid::Uuid::new_v4())?;
    }
    let filled = started.elapsed();
    let mut searches = Vec::with_capacity(SEARCHES);
    for _ in 0..SEARCHES {
        let absent = uuid::Uuid::new_v4();
        let handle = format!("keyhold:key:{absent}").into_bytes();
        let started = Instant::now();
        keystore.delete_key(absent, &handle)?;
        searches.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok((filled, Stat::of(&searches).median))
}

async fn one_size(
    ctx: &Context,
    sizes: &Sizes,
    peer: &KmsPeer,
    module: &str,
    keys: usize,
) -> anyhow::Result<SizeRun> {
    eprintln!("token size: {keys} keys on the token");
    let label = fresh_token(keys)?;
    let measured = measure(ctx, sizes, peer, module, &label, keys).await;
    delete_token(&label);
    measured
}

async fn measure(
    ctx: &Context,
    sizes: &Sizes,
    peer: &KmsPeer,
    module: &str,
    label: &str,
    keys: usize,
) -> anyhow::Result<SizeRun> {
    let (fill_time, search_ms) = {
        let (module, label) = (module.to_owned(), label.to_owned());
        tokio::task::spawn_blocking(move || fill(&module, &label, keys)).await??
    };
    let data_dir = ctx
        .work
        .join(format!("token-size-{}", uuid::Uuid::new_v4().simple()));
    let options = ServeOptions {
        keystore: Keystore::Pkcs11 {
            module: module.to_owned(),
            token: label.to_owned(),
            pin: PIN.to_owned(),
        },
        ..Default::default()
    };
    let keyhold = KeyholdProcess::spawn(&ctx.keyhold, &data_dir, &options)?;
    let token = keyhold.dual_session().await?;
    // One credential per group, as in scenario 1: pacing per credential
    // would otherwise hide the keystore's cost.
    let mut names = Vec::new();
    for i in 0..sizes.token_groups {
        let credential = format!("standin-{i}");
        keyhold
            .import_credential(&token, &credential, &peer.endpoint)
            .await?;
        names.extend(prepare_groups(&keyhold, &token, &credential, &format!("tok{i}"), 1).await?);
    }
    let timeout = Duration::from_secs(600);
    // Warm-up: the first rotation of each group (alias creation).
    let (_, mut failed, mut first_error) = rotate_all(&keyhold, &token, &names, timeout).await?;
    let mut last_end = Instant::now();
    let mut per_second = Vec::new();
    let mut cpu_ms = Vec::new();
    let mut wall_ms = Vec::new();
    for _ in 0..sizes.runs {
        tokio::time::sleep((last_end + PACING_GAP).saturating_duration_since(Instant::now())).await;
        let cpu_before = keyhold.cpu_time()?;
        let (wall, f, error) = rotate_all(&keyhold, &token, &names, timeout).await?;
        let cpu = keyhold.cpu_time()?.saturating_sub(cpu_before);
        last_end = Instant::now();
        failed += f;
        first_error = first_error.or(error);
        let n = names.len() as f64;
        per_second.push(n / wall.as_secs_f64());
        cpu_ms.push(cpu.as_secs_f64() * 1000.0 / n);
        wall_ms.push(wall.as_secs_f64() * 1000.0 / n);
    }
    keyhold.stop()?;
    let _ = std::fs::remove_dir_all(&data_dir);
    Ok(SizeRun {
        keys,
        fill: fill_time,
        search_ms,
        per_second: Stat::of(&per_second),
        cpu_ms: Stat::of(&cpu_ms),
        wall_ms: Stat::of(&wall_ms),
        failed,
        first_error,
    })
}

pub async fn run(ctx: &Context, sizes: &Sizes) -> anyhow::Result<Section> {
    let peer = KmsPeer::start(false).await?;
    let Keystore::Pkcs11 { module, .. } = Keystore::pkcs11_from_env()? else {
        bail!("the token-size scenario needs the PKCS#11 keystore");
    };
    let mut runs = Vec::new();
    for keys in sizes.token_keys {
        runs.push(one_size(ctx, sizes, &peer, &module, keys).await?);
    }
    Ok(section(sizes, &runs))
}

fn section(sizes: &Sizes, runs: &[SizeRun]) -> Section {
    let fewest = runs.first();
    let most = runs.last();
    let mut section = Section::new("10. PKCS#11 cost and the token's size (zero-latency KMS peer)");
    section.headers = vec![
        "Keys on the token".into(),
        "Rotations/s".into(),
        "CPU ms per rotation".into(),
        "Wall ms per rotation".into(),
        format!(
            "CPU ÷ the {}-key token's",
            fewest.map_or_else(String::new, |r| thousands(r.keys as u64))
        ),
        "One search by label, ms".into(),
        "Filling the token, ms per key".into(),
        "Failed jobs".into(),
    ];
    let ratio = |of: &SizeRun, pick: fn(&SizeRun) -> f64| {
        fewest.map_or(f64::NAN, |base| pick(of) / pick(base))
    };
    let cpu = |r: &SizeRun| r.cpu_ms.median;
    let wall = |r: &SizeRun| r.wall_ms.median;
    for r in runs {
        section.row(vec![
            thousands(r.keys as u64),
            r.per_second.show(1),
            r.cpu_ms.show(2),
            r.wall_ms.show(2),
            format!("{:.2}×", ratio(r, cpu)),
            format!("{:.2}", r.search_ms),
            format!(
                "{:.2}",
                r.fill.as_secs_f64() * 1000.0 / r.keys.max(1) as f64
            ),
            r.failed.to_string(),
        ]);
    }
    let groups = sizes.token_groups;
    let added = groups * (sizes.runs + 1);
    section.text = format!(
        "Scenario 1's PKCS#11 contender (SoftHSM2, SQLite) on tokens that already hold \
         many keys: for each size a token of its own (`softhsm2-util --init-token`, file \
         object store, as scripts/bench makes), filled before `keyhold serve` starts with \
         that many keys by the PKCS#11 keystore's own `generate_key` (`keyhold:key:<uuid>` \
         AES-256 objects, the template and labels rotations leave, next to keyhold's own \
         seal, audit MAC and audit signing keys), then {groups} key groups, each with a \
         credential of its own on the zero-latency KMS peer, Force-Rotated once to warm up \
         and then {runs} more times, a run at least {gap:.1} s after the previous one (the \
         pacing of GetParametersForImport per credential). Rotations/s, CPU and wall time \
         per rotation are measured as in scenario 1 (user + system CPU of `keyhold serve` \
         over the run ÷ its rotations; 8 jobs at once, so wall time per rotation is the \
         inverse of the throughput); median (min–max) over the runs. The database holds \
         only these groups, so what differs between the rows is the token alone; each \
         rotation adds its key, {added} in all, to the token. One search by label is a \
         `C_FindObjects` for a label the token does not hold (a delete of an absent key), \
         timed in the benchmark process on the filled token: what each rotation paid per \
         search before keyhold stopped searching for a new key's label. Filling the \
         token is the fill's time per key (one `C_GenerateKey` and the check digits' \
         `C_Encrypt` each).",
        runs = sizes.runs,
        gap = PACING_GAP.as_secs_f64(),
    );
    if let (Some(fewest), Some(most)) = (fewest, most) {
        let cpu_ratio = ratio(most, cpu);
        let verdict = if cpu_ratio <= TARGET_RATIO {
            "met"
        } else {
            "**not met**"
        };
        section.notes = format!(
            "With {most_keys} keys on the token against {fewest_keys}: {cpu_ratio:.2}× the \
             CPU time per rotation ({most_cpu:.2} ms against {fewest_cpu:.2} ms; issue 21's \
             target is at most {TARGET_RATIO:.1}×: {verdict}) and {wall_ratio:.2}× the wall \
             time per rotation. A label search costs {most_search:.2} ms there against \
             {fewest_search:.2} ms. Wall time per rotation follows the time to put a key on \
             the token (the last column but one) rather than the token's size: keyhold makes \
             one token object at a time (SoftHSM2 corrupts objects written at once, its \
             issue #573), each a few file writes by SoftHSM2 whose time depends on the other \
             work on the machine (the load average at the start, above).",
            most_keys = thousands(most.keys as u64),
            fewest_keys = thousands(fewest.keys as u64),
            most_cpu = most.cpu_ms.median,
            fewest_cpu = fewest.cpu_ms.median,
            wall_ratio = ratio(most, wall),
            most_search = most.search_ms,
            fewest_search = fewest.search_ms,
        );
    }
    section.charts.push(Chart {
        slug: "token-size-cpu-per-rotation".into(),
        title: "PKCS#11 (SoftHSM2): CPU time per rotation by keys on the token".into(),
        unit: format!(
            "ms of keyhold serve CPU per rotation, median with min–max over the runs; \
             lower is better (target: the most keys within {TARGET_RATIO:.1}× the fewest)"
        ),
        bars: runs
            .iter()
            .map(|r| Bar {
                label: format!("{} keys on the token", thousands(r.keys as u64)),
                stat: r.cpu_ms.clone(),
            })
            .collect(),
    });
    let failed: usize = runs.iter().map(|r| r.failed).sum();
    if failed > 0 {
        let first = runs
            .iter()
            .find_map(|r| r.first_error.clone())
            .unwrap_or_default();
        let problem = format!("{failed} rotations failed (the first: {first})");
        section
            .notes
            .push_str(&format!("\n\n**Not as expected:** {problem}.\n"));
        section.failure = Some(problem);
    }
    section
}
