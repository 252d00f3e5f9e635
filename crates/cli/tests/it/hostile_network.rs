//! Rotations and synchronizations through a hostile network (the fault
//! proxy between keyhold and the KMS peer): each case ends either succeeded
//! with the right KMS state, or failed with a clear reason and then, once the
//! network is healed, succeeds on retry, with nothing lost on the way. No
//! job stays running.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::fault_proxy::{Fault, FaultProxy, Rule, Schedule};
use crate::helpers::{TestApp, allow_endpoints, group_body, unique};
use crate::kms::{Kms, endpoint};

/// keyhold's retry budget in these tests: 3 attempts per KMS request, 2 s
/// each (the SDK backs off between them). Small, so giving up is quick.
const MAX_ATTEMPTS: u32 = 3;
const ATTEMPT_TIMEOUT_S: u64 = 2;
/// A region no other test uses. Finding the key a failed CreateKey may have
/// made means reading the tags of every key in the region; in the region
/// every other test shares, that grows with the whole suite's keys.
const REGION: &str = "ap-southeast-2";
/// Past the attempt timeout: the answer arrives after the client gave up.
const SLOW: Duration = Duration::from_secs(ATTEMPT_TIMEOUT_S + 2);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Rotate,
    Synchronize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// The retries absorb the faults.
    Succeeds,
    /// More faults than the retry budget: the job fails with a reason
    /// naming `cause`, and a retry after the network heals succeeds.
    FailsThenRetrySucceeds { cause: &'static str },
}

struct Case {
    name: &'static str,
    kind: Kind,
    rules: Vec<Rule>,
    /// Every connection reset from the start until the job has failed.
    partition: bool,
    expect: Expect,
}

/// The operations a rotation sends that are safe to repeat, and that the
/// SDK therefore retries by itself. (CreateKey is not: keyhold retries it,
/// looking for the key a failed attempt may have created in between, so
/// faults on it get cases of their own.)
const IDEMPOTENT: [&str; 6] = [
    "DescribeKey",
    "GetParametersForImport",
    "ImportKeyMaterial",
    "CreateAlias",
    "UpdateAlias",
    "DisableKey",
];

fn on_each(fault: Fault, schedule: Schedule) -> Vec<Rule> {
    IDEMPOTENT
        .iter()
        .map(|op| Rule::on(op, fault, schedule))
        .collect()
}

fn cases() -> Vec<Case> {
    use Fault::*;
    use Schedule::*;
    let case = |name, kind, rules, expect| Case {
        name,
        kind,
        rules,
        partition: false,
        expect,
    };
    vec![
        case(
            "throttling on every 2nd request",
            Kind::Rotate,
            vec![Rule::on_all(Throttle, Every(2))],
            Expect::Succeeds,
        ),
        case(
            "CreateKey throttled more times than the retry budget",
            Kind::Rotate,
            vec![Rule::on("CreateKey", Throttle, First(MAX_ATTEMPTS))],
            Expect::FailsThenRetrySucceeds {
                cause: "ThrottlingException",
            },
        ),
        case(
            "HTTP 500 on the first 2 ImportKeyMaterial",
            Kind::Rotate,
            vec![Rule::on("ImportKeyMaterial", ServerError(500), First(2))],
            Expect::Succeeds,
        ),
        case(
            "HTTP 503 on every 3rd request of each idempotent operation",
            Kind::Rotate,
            on_each(ServerError(503), Every(3)),
            Expect::Succeeds,
        ),
        case(
            "CreateKey answered with HTTP 500 (KMS may or may not have acted)",
            Kind::Rotate,
            vec![Rule::on("CreateKey", ServerError(500), First(1))],
            Expect::Succeeds,
        ),
        case(
            "CreateKey answered after the timeout (KMS did create the key)",
            Kind::Rotate,
            vec![Rule::on("CreateKey", SlowAnswer(SLOW), First(1))],
            Expect::Succeeds,
        ),
        case(
            "UpdateAlias answered after the timeout",
            Kind::Rotate,
            vec![Rule::on("UpdateAlias", SlowAnswer(SLOW), First(1))],
            Expect::Succeeds,
        ),
        case(
            "connection reset on the first 2 GetParametersForImport",
            Kind::Rotate,
            vec![Rule::on("GetParametersForImport", Reset, First(2))],
            Expect::Succeeds,
        ),
        case(
            "connection reset on every 2nd request of each idempotent operation",
            Kind::Rotate,
            on_each(Reset, Every(2)),
            Expect::Succeeds,
        ),
        case(
            "connection reset on CreateKey before it reached KMS",
            Kind::Rotate,
            vec![Rule::on("CreateKey", Reset, First(1))],
            Expect::Succeeds,
        ),
        Case {
            name: "partition longer than the retry budget, then healed",
            kind: Kind::Rotate,
            rules: Vec::new(),
            partition: true,
            expect: Expect::FailsThenRetrySucceeds {
                cause: "AWS KMS is unavailable",
            },
        },
        case(
            "synchronize: HTTP 500 on ImportKeyMaterial, throttled PutKeyPolicy, slow DeleteImportedKeyMaterial",
            Kind::Synchronize,
            vec![
                Rule::on("ImportKeyMaterial", ServerError(500), First(2)),
                Rule::on("PutKeyPolicy", Throttle, First(1)),
                Rule::on("DeleteImportedKeyMaterial", SlowAnswer(SLOW), First(1)),
            ],
            Expect::Succeeds,
        ),
        Case {
            name: "synchronize: partition longer than the retry budget, then healed",
            kind: Kind::Synchronize,
            rules: Vec::new(),
            partition: true,
            expect: Expect::FailsThenRetrySucceeds {
                cause: "AWS KMS is unavailable",
            },
        },
    ]
}

/// AWS (read directly from LocalStack) agrees with keyhold about `group`:
/// the same keys, the alias on the active one, nothing half-imported.
/// Returns the number of keys.
async fn assert_agrees(app: &TestApp, token: &str, kms: &Kms, group: &str, case: &str) -> usize {
    let (status, keys) = app.get(&format!("/api/v1/keys?group={group}"), token).await;
    assert_eq!(status, StatusCode::OK, "{keys}");
    let keys = keys.as_array().unwrap().clone();
    let mut recorded: Vec<String> = keys
        .iter()
        .map(|k| k["name"].as_str().unwrap().to_owned())
        .collect();
    recorded.sort();
    let mut in_kms = kms.keys_of_group(group).await;
    in_kms.sort();
    assert_eq!(
        in_kms, recorded,
        "{case}: KMS keys of the group == keyhold's (no orphan)"
    );
    let (_, g) = app.get(&format!("/api/v1/groups/{group}"), token).await;
    let active = g["active_key_id"].as_str().unwrap().to_owned();
    assert_eq!(
        kms.alias_target(&format!("alias/{group}")).await.as_deref(),
        Some(active.as_str()),
        "{case}: alias on the active key"
    );
    for key in &recorded {
        let state = kms.state(key).await;
        let expected = if *key == active {
            "Enabled"
        } else {
            "Disabled"
        };
        assert_eq!(
            state, expected,
            "{case}: {key} (PendingImport = half-imported)"
        );
    }
    let sealed = kms
        .encrypt(&format!("alias/{group}"), b"through the storm")
        .await;
    assert_eq!(kms.decrypt(&sealed).await.unwrap(), b"through the storm");
    recorded.len()
}

async fn start(app: &TestApp, token: &str, kind: Kind, group: &str) -> String {
    match kind {
        Kind::Rotate => app.rotate(token, group).await,
        Kind::Synchronize => {
            let (_, g) = app.get(&format!("/api/v1/groups/{group}"), token).await;
            let key = g["active_key_id"].as_str().unwrap().to_owned();
            app.sync(
                token,
                &key,
                json!({"update_policy": true, "import_material": true, "delete_material": true}),
            )
            .await
        }
    }
}

/// Every case on one server, one after the other (each its own group, the
/// proxy's plan set for it), then the figures.
#[tokio::test(flavor = "multi_thread")]
async fn every_network_fault_ends_in_success_or_a_clear_failure_with_nothing_lost() {
    let proxy = FaultProxy::start(&endpoint()).await;
    let app = TestApp::spawn_with(|args| {
        allow_endpoints(args, &[&proxy.url]);
        args.kms.kms_max_attempts = Some(MAX_ATTEMPTS);
        args.kms.kms_request_timeout_seconds = Some(ATTEMPT_TIMEOUT_S);
        args.kms.kms_wrapping_key_spec = Some("RSA_2048".into());
    })
    .await;
    let token = app.dual_session().await;
    app.import_credential_at(&token, "hostile", &proxy.url)
        .await;
    let kms = Kms::in_region(&endpoint(), REGION).await;

    let mut rows = Vec::new();
    for case in cases() {
        let name = case.name;
        let group = unique("storm");
        let mut body = group_body(&group, "hostile");
        body["region"] = json!(REGION);
        let (status, body) = app.create_group(&token, body).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        // A synchronization needs a key to work on, and a rotation a
        // previous key to disable: one undisturbed rotation first.
        proxy.set_plan(Vec::new());
        app.rotate_ok(&token, &group).await;

        proxy.set_plan(case.rules.clone());
        proxy.partition(case.partition);
        let started = Instant::now();
        let id = start(&app, &token, case.kind, &group).await;
        let job = wait(&app, &token, &id).await;
        let first_run = started.elapsed();
        let outcome = match case.expect {
            Expect::Succeeds => {
                assert_eq!(job["status"], "succeeded", "{name}: {job:#}");
                "succeeded".to_owned()
            }
            Expect::FailsThenRetrySucceeds { cause } => {
                assert_eq!(job["status"], "failed", "{name}: {job:#}");
                let reason = job["error"].as_str().unwrap_or_default().to_owned();
                assert!(
                    reason.contains(cause) && reason.contains("failed"),
                    "{name}: the reason should name the step and the cause ({cause}): {reason}"
                );
                // Nothing lost while failed: what KMS holds for the group is
                // what keyhold recorded (a key created before the failure
                // is recorded, not orphaned).
                let mut in_kms = kms.keys_of_group(&group).await;
                in_kms.sort();
                let (_, keys) = app
                    .get(&format!("/api/v1/keys?group={group}"), &token)
                    .await;
                let recorded: Vec<String> = keys
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|k| {
                        let name = k["name"].as_str().unwrap();
                        in_kms.contains(&name.to_owned()).then(|| name.to_owned())
                    })
                    .collect();
                assert_eq!(
                    in_kms.len(),
                    recorded.len(),
                    "{name}: a KMS key keyhold does not know"
                );
                let injected = proxy.tally();
                proxy.partition(false);
                proxy.set_plan(Vec::new());
                let (status, body) = app
                    .post(&format!("/api/v1/jobs/{id}/retry"), Some(&token), json!({}))
                    .await;
                assert_eq!(status, StatusCode::ACCEPTED, "{name}: {body}");
                let retried = wait(&app, &token, &id).await;
                assert_eq!(retried["status"], "succeeded", "{name}: {retried:#}");
                let short = reason.split(": ").skip(1).collect::<Vec<_>>().join(": ");
                let short: String = short.chars().take(140).collect();
                rows.push(row(
                    name,
                    &injected,
                    first_run,
                    &format!(
                        "failed: \"{}\"; retried once healed: succeeded",
                        short.replace('|', "\\|")
                    ),
                ));
                let keys = assert_agrees(&app, &token, &kms, &group, name).await;
                let (_, verify) = app.get("/api/v1/audit/verify", &token).await;
                assert_eq!(verify["ok"], true, "{name}: {verify}");
                let last = rows.last_mut().unwrap();
                *last = format!("{last} {keys} |");
                continue;
            }
        };
        let injected = proxy.tally();
        let keys = assert_agrees(&app, &token, &kms, &group, name).await;
        let (_, verify) = app.get("/api/v1/audit/verify", &token).await;
        assert_eq!(verify["ok"], true, "{name}: {verify}");
        rows.push(format!(
            "{} {keys} |",
            row(name, &injected, first_run, &outcome)
        ));
    }

    // Nothing left running or queued.
    let (_, jobs) = app.get("/api/v1/jobs?limit=1000", &token).await;
    let unfinished: Vec<&Value> = jobs
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| matches!(j["status"].as_str(), Some("running" | "queued")))
        .collect();
    assert!(unfinished.is_empty(), "{unfinished:#?}");

    let total = rows.len();
    crate::report::section(
        20,
        "Hostile network",
        &format!(
            "A fault-injecting proxy (`crates/cli/tests/it/fault_proxy.rs`) sits between keyhold \
             and the KMS peer; keyhold runs with {MAX_ATTEMPTS} attempts per KMS request and \
             {ATTEMPT_TIMEOUT_S} s per attempt. Each case is one job (after an undisturbed \
             rotation of its group); afterwards the group's KMS keys, read from the peer \
             directly, are exactly keyhold's keys, the alias is on the active key, the active \
             key is Enabled and the previous one Disabled (none PendingImport), the active key \
             encrypts and decrypts, and the audit chain verifies. No job was left queued or \
             running.\n\n\
             **{total} of {total} cases ended as expected.**\n\n\
             | case | requests / injected | outcome | keys |\n|---|---|---|---|\n{}\n",
            rows.join("\n")
        ),
    );
}

/// Waits (bounded: a job never stays running) until the job ends.
async fn wait(app: &TestApp, token: &str, id: &str) -> Value {
    app.wait_job_within(token, id, Duration::from_secs(120))
        .await
}

fn row(name: &str, tally: &crate::fault_proxy::Tally, took: Duration, outcome: &str) -> String {
    let injected = if tally.partitioned > 0 {
        format!("{} connections reset by the partition", tally.partitioned)
    } else {
        format!("{} injected", tally.injected)
    };
    format!(
        "| {name} | {} / {injected} | {outcome} ({:.1} s) |",
        tally.requests,
        took.as_secs_f64()
    )
}
