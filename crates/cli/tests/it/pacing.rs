//! Pacing of AWS KMS requests under the quotas the operator gives
//! (`kms_quotas`, `kms_credential_quotas`), against the benchmark's
//! quota-enforcing KMS peer (a token bucket per operation, AWS's default
//! quotas unless a test raises one, `ThrottlingException` when empty) and a
//! real server: quotas set above the account's are throttled, paced down
//! and every job still succeeds, saying so; raised quotas go faster than
//! the defaults allow; bad values stop the server with the reason.
//!
//! Nothing here times the machine: how long pacing held a job back depends
//! on when its requests left, not on how fast the machine runs them (a
//! slow machine makes jobs collide less, never more).

use std::process::Command;
use std::time::{Duration, Instant};

use keyhold_bench::kms_peer::KmsPeer;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::*;

const KEYHOLD: &str = env!("CARGO_BIN_EXE_keyhold");
const GPFI: &str = "GetParametersForImport";

/// A server that may reach `peer`, paced under `quotas` (every
/// credential) and `credential_quotas`, with a session of both
/// administrators and the credentials `credentials`, all reaching the peer.
async fn scene(
    peer: &KmsPeer,
    quotas: &[&str],
    credential_quotas: &[&str],
    credentials: &[&str],
) -> (TestApp, String) {
    let endpoint = peer.endpoint.clone();
    let list = |entries: &[&str]| -> Option<Vec<String>> {
        (!entries.is_empty()).then(|| entries.iter().map(|e| (*e).to_owned()).collect())
    };
    let (quotas, credential_quotas) = (list(quotas), list(credential_quotas));
    let app = TestApp::spawn_with(move |args| {
        allow_endpoints(args, &[&endpoint]);
        args.kms.kms_quotas = quotas;
        args.kms.kms_credential_quotas = credential_quotas;
    })
    .await;
    let token = app.dual_session().await;
    for credential in credentials {
        app.import_credential_at(&token, credential, &peer.endpoint)
            .await;
    }
    (app, token)
}

/// `n` new groups on `credential`; their names.
async fn groups(app: &TestApp, token: &str, credential: &str, n: usize) -> Vec<String> {
    let mut names = Vec::new();
    for _ in 0..n {
        let name = unique("pace");
        let (status, group) = app.create_group(token, group_body(&name, credential)).await;
        assert_eq!(status, StatusCode::CREATED, "{group}");
        names.push(name);
    }
    names
}

/// Force-rotates every group at once and waits for every job to end.
async fn rotate_all(app: &TestApp, token: &str, groups: &[String]) -> Vec<Value> {
    let mut ids = Vec::new();
    for group in groups {
        ids.push(app.rotate(token, group).await);
    }
    let mut jobs = Vec::new();
    for id in ids {
        jobs.push(
            app.wait_job_within(token, &id, Duration::from_secs(180))
                .await,
        );
    }
    jobs
}

fn messages(job: &Value) -> Vec<String> {
    job["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect()
}

/// The value of `name`'s series for `credential` in eu-west-1 and `operation`.
fn series(metrics: &str, name: &str, credential: &str, operation: &str) -> Option<f64> {
    let prefix = format!(
        "{name}{{credential=\"{credential}\",region=\"eu-west-1\",operation=\"{operation}\"}} "
    );
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map(|value| value.trim().parse().unwrap())
}

/// The seconds a step message says `operation` held its step back, if it
/// says so: `held back 2.1 s by the AWS KMS request quota for Op, 1/s …`
/// for one operation, `…: Op 2.1 s at 1/s, Other 0.3 s at 5/s` for several.
fn held_back_by(message: &str, operation: &str) -> Option<f64> {
    let seconds = |text: &str| {
        text.split(" s")
            .next()
            .unwrap()
            .trim()
            .parse::<f64>()
            .unwrap()
    };
    let note = &message[message.find("(held back ")?..];
    if let Some(rest) = note.strip_prefix("(held back ")
        && note.contains(&format!("request quota for {operation},"))
    {
        return Some(seconds(rest));
    }
    let (_, after) = note.split_once(&format!("{operation} "))?;
    Some(seconds(after))
}

#[test]
fn step_notes_parse() {
    let one = "Step 2 of 5: Imported (held back 2.1 s by the AWS KMS request quota for GetParametersForImport, 1/s for credential 'aws')";
    assert_eq!(held_back_by(one, GPFI), Some(2.1));
    assert_eq!(held_back_by(one, "CreateKey"), None);
    let many = "Step 2 of 5: x (held back 2.4 s by the AWS KMS request quotas for credential 'aws': GetParametersForImport 2.1 s at 1/s, CreateKey 0.3 s at 5/s)";
    assert_eq!(held_back_by(many, GPFI), Some(2.1));
    assert_eq!(held_back_by(many, "CreateKey"), Some(0.3));
    assert_eq!(held_back_by("Step 1 of 5: Generated", GPFI), None);
}

/// keyhold told the account allows GetParametersForImport at 5/s, where the
/// peer (as AWS by default) allows 1/s: the first requests are throttled,
/// the pacer halves its rate on each throttle and every rotation succeeds,
/// with the throttles a fraction of the calls. The jobs' messages say when
/// pacing held them back and when AWS throttled them; `/metrics` counts the
/// waits and throttles, and shows the rate slowed below the quota.
#[tokio::test]
async fn quotas_above_the_accounts_are_throttled_then_paced_down_and_every_job_succeeds() {
    let peer = KmsPeer::start(true).await.unwrap();
    let (app, token) = scene(&peer, &["GetParametersForImport=5"], &[], &["aws"]).await;
    let names = groups(&app, &token, "aws", 10).await;
    peer.reset_counts();
    let jobs = rotate_all(&app, &token, &names).await;
    for job in &jobs {
        assert_eq!(job["status"], "succeeded", "{job:#}");
    }

    let counts = peer.counts();
    let gpfi = &counts[GPFI];
    eprintln!(
        "GetParametersForImport at 5/s against 1/s: {} accepted, {} throttled",
        gpfi.accepted, gpfi.throttled
    );
    assert_eq!(gpfi.accepted, 10, "{counts:?}");
    assert!(
        gpfi.throttled >= 1,
        "5/s is above the peer's 1/s: {counts:?}"
    );
    // Slowing down on each throttle keeps them a fraction of the calls;
    // pacing at the 5/s it was told regardless would have most refused.
    assert!(
        gpfi.throttled <= gpfi.accepted,
        "{} throttled for {} accepted",
        gpfi.throttled,
        gpfi.accepted
    );

    let all: Vec<String> = jobs.iter().flat_map(messages).collect();
    assert!(
        all.iter()
            .any(|m| held_back_by(m, GPFI).is_some_and(|s| s > 0.0)
                && m.contains("5/s")
                && m.contains("credential 'aws'")),
        "no message says GetParametersForImport's quota held a job back: {all:#?}"
    );
    let throttled_notes = all
        .iter()
        .filter(|m| m.contains("AWS KMS throttled"))
        .count();
    assert!(
        throttled_notes >= 1 && throttled_notes as u64 <= gpfi.throttled,
        "{throttled_notes} notes of throttles for {} throttled: {all:#?}",
        gpfi.throttled
    );

    let metrics = app.metrics().await;
    let value =
        |name| series(&metrics, name, "aws", GPFI).unwrap_or_else(|| panic!("{name}: {metrics}"));
    // Every throttle the peer answered reached the pacer (none was retried
    // by the SDK behind its back).
    assert_eq!(value("keyhold_kms_throttled_total") as u64, gpfi.throttled);
    assert!(
        value("keyhold_kms_pacing_wait_seconds_total") > 1.0,
        "{metrics}"
    );
    assert!(value("keyhold_kms_pacing_waits_total") >= 1.0, "{metrics}");
    let rate = value("keyhold_kms_pacing_rate");
    assert!(rate > 0.0 && rate < 5.0, "slowed below the quota: {rate}");
    // Operations the peer never throttled stay at their quota.
    assert_eq!(
        series(&metrics, "keyhold_kms_pacing_rate", "aws", "CreateKey"),
        Some(5.0)
    );
}

/// The account's quotas raised through Service Quotas (the peer allows 25/s
/// for the rotation's calls) and keyhold told so for credential `raised`:
/// 16 rotations at once are never throttled and no job waits a second for
/// GetParametersForImport, where the default 1/s would hold the second of
/// any two jobs reaching it together back a second or more, as it does for
/// the credential `plain`, left at the defaults, on the same account.
#[tokio::test]
async fn raised_quotas_for_a_credential_let_its_rotations_go_faster_than_the_defaults_allow() {
    let peer = KmsPeer::start(true).await.unwrap();
    let raised = [
        "GetParametersForImport",
        "CreateKey",
        "CreateAlias",
        "UpdateAlias",
    ];
    for operation in raised {
        peer.set_quota(operation, 25.0).unwrap();
    }
    let credential_quotas: Vec<String> =
        raised.iter().map(|op| format!("raised:{op}=20")).collect();
    let credential_quotas: Vec<&str> = credential_quotas.iter().map(String::as_str).collect();
    let (app, token) = scene(&peer, &[], &credential_quotas, &["raised", "plain"]).await;

    let fast = groups(&app, &token, "raised", 16).await;
    peer.reset_counts();
    let started = Instant::now();
    let jobs = rotate_all(&app, &token, &fast).await;
    let took = started.elapsed();
    for job in &jobs {
        assert_eq!(job["status"], "succeeded", "{job:#}");
    }
    let counts = peer.counts();
    for operation in [GPFI, "CreateKey", "CreateAlias"] {
        let c = &counts[operation];
        assert_eq!(
            (c.accepted, c.throttled),
            (16, 0),
            "{operation}: {counts:?}"
        );
    }
    let all: Vec<String> = jobs.iter().flat_map(messages).collect();
    for message in &all {
        if let Some(seconds) = held_back_by(message, GPFI) {
            assert!(seconds < 1.0, "held back a second or more: {message}");
            assert!(message.contains("20/s"), "{message}");
        }
        assert!(!message.contains("AWS KMS throttled"), "{message}");
    }
    let metrics = app.metrics().await;
    assert_eq!(
        series(&metrics, "keyhold_kms_pacing_rate", "raised", GPFI),
        Some(20.0)
    );
    assert_eq!(
        series(&metrics, "keyhold_kms_throttled_total", "raised", GPFI),
        Some(0.0)
    );
    // For the record: the default quota could not have served 16
    // GetParametersForImport in under 15 s.
    eprintln!(
        "16 rotations with raised quotas: {:.1} s",
        took.as_secs_f64()
    );

    // The same account through a credential left at the defaults: 1/s.
    let slow = groups(&app, &token, "plain", 4).await;
    let jobs = rotate_all(&app, &token, &slow).await;
    for job in &jobs {
        assert_eq!(job["status"], "succeeded", "{job:#}");
    }
    let longest = jobs
        .iter()
        .flat_map(messages)
        .filter_map(|m| {
            held_back_by(&m, GPFI)
                .filter(|_| m.contains("1/s for credential 'plain'") || m.contains("at 1/s"))
        })
        .fold(0.0_f64, f64::max);
    assert!(
        longest >= 0.9,
        "at 1/s, four rotations at once hold one back a second or more: {longest}"
    );
    assert_eq!(
        series(
            &app.metrics().await,
            "keyhold_kms_pacing_rate",
            "plain",
            GPFI
        ),
        Some(1.0)
    );
}

/// Bad quota settings, from the environment, a flag or the file, stop
/// `keyhold serve` before it creates anything, saying which entry is wrong
/// and why; good ones from the environment start it.
#[test]
fn bad_quota_settings_stop_the_server_saying_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let config = dir.path().join("keyhold.toml");
    std::fs::write(&config, "kms_quotas = [\"CreateKey=-1\"]\n").unwrap();
    let serve = |extra: &[&str], env: &[(&str, &str)]| {
        let mut command = Command::new(KEYHOLD);
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--log", "warn"])
            .arg("--data-dir")
            .arg(&data_dir)
            .args(extra)
            .envs(env.iter().copied());
        command
    };
    for (extra, env, says) in [
        (
            &[][..],
            &[("KEYHOLD_KMS_QUOTAS", "GetParametersForImport=10,Encrypt=10")][..],
            &[
                "kms_quotas",
                "'Encrypt' is not an AWS KMS operation keyhold sends",
                "GetParametersForImport, ImportKeyMaterial",
                "KEYHOLD_KMS_QUOTAS",
            ][..],
        ),
        (
            &[],
            &[("KEYHOLD_KMS_QUOTAS", "CreateKey=0")],
            &["'CreateKey=0': a rate must be more than 0"],
        ),
        (
            &["--kms-quotas", "*=250000"],
            &[],
            &["at most 100000 requests per second"],
        ),
        (
            &["--kms-quotas", "CreateKey=0.0001"],
            &[],
            &["at most 3 decimals"],
        ),
        (
            &[],
            &[("KEYHOLD_KMS_CREDENTIAL_QUOTAS", "CreateKey=1")],
            &["kms_credential_quotas", "CREDENTIAL:OPERATION=RATE"],
        ),
        (
            &[],
            &[("KEYHOLD_KMS_CREDENTIAL_QUOTAS", "bad name:CreateKey=1")],
            &["credential name"],
        ),
        (
            &["--config", config.to_str().unwrap()],
            &[],
            &["'CreateKey=-1'", "requests per second"],
        ),
    ] {
        let output = serve(extra, env).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success(),
            "{extra:?} {env:?} started: {stderr}"
        );
        for needle in says {
            assert!(stderr.contains(needle), "{needle}: {stderr}");
        }
        assert!(
            !data_dir.exists(),
            "a refused start created the data directory"
        );
    }

    // Good values from the environment: the server starts.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = runtime.block_on(test_database());
    let mut command = serve(
        &[],
        &[
            ("KEYHOLD_KMS_QUOTAS", "GetParametersForImport=2.5,*=50"),
            (
                "KEYHOLD_KMS_CREDENTIAL_QUOTAS",
                "prod:CreateKey=0.25,prod:*=10",
            ),
        ],
    );
    if let Some(hsm) = Hsm::for_suite() {
        hsm.configure_command(&mut command);
    }
    use_database(&mut command, &db);
    let (mut child, url) = spawn_listening(&mut command);
    let ready = runtime.block_on(async { reqwest::get(format!("{url}/readyz")).await });
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(ready.unwrap().status(), StatusCode::OK);
}
