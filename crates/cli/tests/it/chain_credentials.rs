//! Cloud credentials on the server's AWS default credential chain, with an
//! optional IAM role to assume: no access key, no secret in keyhold. The KMS
//! peer is LocalStack; the suite's script gives the server process the
//! environment credentials (AWS_ACCESS_KEY_ID=test) the chain finds.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::kms::{self, Kms};

const KEYHOLD: &str = env!("CARGO_BIN_EXE_keyhold");
const ROLE: &str = "arn:aws:iam::123456789012:role/keyhold-rotator";

/// The chain must find credentials in this process's environment, as it does
/// in the server's: say how to run the suite rather than fail obscurely.
fn require_environment_credentials() {
    for var in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
        assert!(
            std::env::var(var).is_ok_and(|v| !v.is_empty()),
            "{var} is unset: the default credential chain of the in-process server needs it; run the suite with ./scripts/test, or export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test"
        );
    }
}

async fn add_chain(app: &TestApp, token: &str, body: Value) -> (StatusCode, Value) {
    app.post("/api/v1/credentials/chain", Some(token), body)
        .await
}

#[tokio::test]
async fn a_default_chain_credential_rotates_a_group_into_kms() {
    require_environment_credentials();
    let app = TestApp::spawn().await;
    let token = app.dual_session().await;
    let endpoint = kms::endpoint();

    let (status, added) = add_chain(
        &app,
        &token,
        json!({"name": "aws-chain", "kind": "default_chain", "endpoint": endpoint}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{added}");
    assert_eq!(added["kind"], "default_chain");
    assert_eq!(added["service"], "aws");
    assert_eq!(added["access_name"], "default credential chain");
    assert_eq!(added["role_arn"], Value::Null);
    assert_eq!(added["endpoint"], endpoint.trim_end_matches('/'));
    let (status, shown) = app.get("/api/v1/credentials/aws-chain", &token).await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(shown, added);

    let (_, audit) = app.get("/api/v1/audit?limit=1", &token).await;
    assert_eq!(audit[0]["summary"], "Added cloud credential aws-chain");
    assert_eq!(
        audit[0]["details"],
        json!({
            "service": "aws",
            "kind": "default_chain",
            "access_name": "default credential chain",
            "endpoint": endpoint.trim_end_matches('/'),
        })
    );

    let group = unique("ig-chain");
    let (status, body) = app
        .create_group(&token, group_body(&group, "aws-chain"))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = app.rotate(&token, &group).await;
    let job = app.wait_job(&token, &id).await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    let kms_key_id = job["kms_key_id"].as_str().unwrap();

    // What AWS holds, read through the AWS API.
    let aws = Kms::connect().await;
    assert_eq!(aws.state(kms_key_id).await, "Enabled");
    assert_eq!(
        aws.alias_target(&format!("alias/{group}")).await.as_deref(),
        Some(kms_key_id)
    );
    assert_eq!(aws.keys_of_group(&group).await, [kms_key_id]);
    let ciphertext = aws.encrypt(kms_key_id, b"chain").await;
    assert_eq!(aws.decrypt(&ciphertext).await.unwrap(), b"chain");

    // The credential is held by its group like an imported one.
    let (status, body) = app.delete("/api/v1/credentials/aws-chain", &token).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
}

#[tokio::test]
async fn role_arns_and_kinds_are_checked_with_a_reason() {
    let app = TestApp::spawn().await;
    let token = app.dual_session().await;
    let audit_before = app.audit_count(&token).await;
    let bad_arns = [
        "keyhold-rotator",
        "arn:aws:iam::123456789012:user/keyhold",
        "arn:aws:iam::12345678901:role/keyhold",
        "arn:aws:sts::123456789012:assumed-role/keyhold/s",
        "arn:aws-eu:iam::123456789012:role/keyhold",
        "arn:aws:iam::123456789012:role/key hold",
        "arn:aws:iam::123456789012:role/",
    ];
    for arn in bad_arns {
        let (status, body) = add_chain(
            &app,
            &token,
            json!({"name": "bad", "kind": "default_chain", "role_arn": arn}),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{arn}: {body}");
        assert_eq!(body["error"]["field"], "role_arn", "{arn}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("arn:aws:iam::123456789012:role/"),
            "the message shows the form: {message}"
        );
    }
    let too_long = format!("arn:aws:iam::123456789012:role/{}", "p/".repeat(1100));
    let (status, body) = add_chain(
        &app,
        &token,
        json!({"name": "bad", "kind": "default_chain", "role_arn": too_long}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "role_arn");

    for (body, field) in [
        (json!({"name": "bad", "kind": "access_key"}), "kind"),
        (json!({"name": "bad", "kind": "password"}), "kind"),
        (
            json!({"name": "bad", "kind": "default_chain", "service": "gcp"}),
            "service",
        ),
        (
            json!({"name": "bad", "kind": "default_chain", "endpoint": "ftp://x"}),
            "endpoint",
        ),
        (
            json!({"name": "b d", "kind": "default_chain"}),
            "credential name",
        ),
    ] {
        let (status, answer) = add_chain(&app, &token, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{body}: {answer}");
    }
    // Unknown fields (a secret, say) are refused, not ignored.
    let (status, body) = add_chain(
        &app,
        &token,
        json!({"name": "bad", "kind": "default_chain", "secret_access_key": "x"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    let (_, list) = app.get("/api/v1/credentials", &token).await;
    assert_eq!(list, json!([]));
    let summaries = app.audit_summaries(&token).await;
    assert!(summaries.len() > audit_before);
    assert!(
        summaries[audit_before..]
            .iter()
            .all(|s| s.ends_with("Failed to add cloud credential bad")
                || s.ends_with("Failed to add cloud credential b d")),
        "{summaries:#?}"
    );

    // A good one, then the same name again.
    let body = json!({"name": "aws-role", "kind": "default_chain", "role_arn": ROLE});
    let (status, added) = add_chain(&app, &token, body.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{added}");
    assert_eq!(added["role_arn"], ROLE);
    assert_eq!(added["access_name"], ROLE);
    assert_eq!(added["endpoint"], Value::Null);
    let (status, again) = add_chain(&app, &token, body).await;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");
    // Both kinds share one namespace.
    let (status, body) = app
        .post(
            "/api/v1/credentials",
            Some(&token),
            json!({"name": "aws-role", "csv": console_csv()}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
}

#[tokio::test]
async fn a_credential_named_chain_stays_reachable() {
    let app = TestApp::spawn().await;
    let token = app.dual_session().await;
    app.import_credential(&token, "chain").await;
    let (status, shown) = app.get("/api/v1/credentials/chain", &token).await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(shown["kind"], "access_key");
    assert_eq!(shown["role_arn"], Value::Null);
    let (status, body) = app.delete("/api/v1/credentials/chain", &token).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
}

/// The real `keyhold` binary against the in-process server.
struct Client {
    url: String,
    session_file: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Client {
    fn new(app: &TestApp) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self {
            url: app.base.clone(),
            session_file: dir.path().join("session.json"),
            _dir: dir,
        }
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new(KEYHOLD)
            .args(args)
            .env("KEYHOLD_URL", &self.url)
            .env("KEYHOLD_SESSION_FILE", &self.session_file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(input) = stdin {
            child
                .stdin
                .as_mut()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        drop(child.stdin.take());
        child.wait_with_output().unwrap()
    }

    fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        assert!(
            out.status.success(),
            "keyhold {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

#[tokio::test]
async fn the_cli_adds_lists_and_shows_chain_credentials() {
    let app = TestApp::spawn_with(|args| {
        allow_endpoints(
            args,
            &["https://vpce-0abc.kms.eu-west-1.vpce.amazonaws.com"],
        )
    })
    .await;
    app.activate_admins().await;
    let cli = Client::new(&app);
    let cli = tokio::task::spawn_blocking(move || {
        // Adding a credential needs two officers.
        cli.ok(
            &["login", "--user", "Admin1", "--password-stdin"],
            Some(&format!("{ADMIN1_PASSWORD}\n")),
        );
        cli.ok(
            &["login", "--user", "Admin2", "--password-stdin"],
            Some(&format!("{ADMIN2_PASSWORD}\n")),
        );
        let added: Value = serde_json::from_str(&cli.ok(
            &[
                "credential",
                "add",
                "--name",
                "aws-role",
                "--default-chain",
                "--role-arn",
                ROLE,
                "--output",
                "json",
            ],
            None,
        ))
        .unwrap();
        assert_eq!(added["kind"], "default_chain");
        assert_eq!(added["role_arn"], ROLE);
        cli.ok(
            &[
                "credential",
                "add",
                "--name",
                "aws-chain",
                "--default-chain",
                "--endpoint",
                "https://vpce-0abc.kms.eu-west-1.vpce.amazonaws.com",
            ],
            None,
        );

        let list: Value =
            serde_json::from_str(&cli.ok(&["credential", "list", "--output", "json"], None))
                .unwrap();
        let kinds: Vec<(&str, &str, &Value)> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap(),
                    c["kind"].as_str().unwrap(),
                    &c["role_arn"],
                )
            })
            .collect();
        assert_eq!(
            kinds,
            [
                ("aws-chain", "default_chain", &Value::Null),
                ("aws-role", "default_chain", &json!(ROLE)),
            ]
        );
        let table = cli.ok(&["credential", "list"], None);
        assert!(table.contains("Role"), "{table}");
        assert!(table.contains("default credential chain"), "{table}");
        let shown = cli.ok(&["credential", "show", "aws-role"], None);
        assert!(shown.contains("default_chain"), "{shown}");
        assert!(shown.contains(ROLE), "{shown}");

        // The kind is named, and a bad role is refused with the server's reason.
        let out = cli.run(&["credential", "add", "--name", "x"], None);
        assert!(!out.status.success());
        let out = cli.run(
            &[
                "credential",
                "add",
                "--name",
                "x",
                "--default-chain",
                "--role-arn",
                "arn:aws:iam::123:role/x",
            ],
            None,
        );
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("12-digit"), "{stderr}");
        cli
    })
    .await
    .unwrap();
    drop(cli);
}

/// The assume-role case runs in a child process: STS must be sent to the
/// LocalStack peer (whose STS is not running: SERVICES=kms), and the SDK
/// reads that endpoint from the process environment, which a test cannot
/// change safely in-process.
#[test]
fn a_role_that_cannot_be_assumed_fails_the_rotation_with_a_reason() {
    require_environment_credentials();
    let name = "chain_credentials::child_role_that_cannot_be_assumed";
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            name,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("AWS_ENDPOINT_URL_STS", kms::endpoint())
        // Nothing but the environment credentials: no profile, no instance role.
        .env("AWS_CONFIG_FILE", "/nonexistent/keyhold-test/config")
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/keyhold-test/credentials",
        )
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("KEYHOLD_CHILD_TEST", name)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "child test {name} failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("1 passed"),
        "child test {name} did not run:\n{stdout}\n{stderr}"
    );
}

#[tokio::test]
#[ignore = "run by a_role_that_cannot_be_assumed_fails_the_rotation_with_a_reason, which sets up its environment"]
async fn child_role_that_cannot_be_assumed() {
    assert_eq!(
        std::env::var("KEYHOLD_CHILD_TEST").as_deref(),
        Ok("chain_credentials::child_role_that_cannot_be_assumed"),
        "run this test through its parent, which sends STS to the LocalStack peer"
    );
    let app = TestApp::spawn().await;
    let token = app.dual_session().await;
    let (status, body) = add_chain(
        &app,
        &token,
        json!({"name": "aws-role", "kind": "default_chain", "role_arn": ROLE, "endpoint": kms::endpoint()}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let group = unique("ig-role");
    let (status, body) = app
        .create_group(&token, group_body(&group, "aws-role"))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let started = Instant::now();
    let id = app.rotate(&token, &group).await;
    let job = app.wait_job(&token, &id).await;
    let took = started.elapsed();
    assert_eq!(job["status"], "failed", "{job:#}");
    assert!(
        took < Duration::from_secs(45),
        "the failure took {took:?}: it must not hang"
    );
    let error = job["error"].as_str().unwrap();
    assert!(
        error.contains("no usable AWS credentials"),
        "the reason names the credentials: {error}"
    );
    assert!(
        error.contains("sts") || error.contains("STS") || error.contains("AssumeRole"),
        "the reason names STS: {error}"
    );
    // Nothing reached KMS: no key was created for the group.
    assert_eq!(job["kms_key_id"], Value::Null, "{job:#}");
    assert!(Kms::connect().await.keys_of_group(&group).await.is_empty());
    let summaries = app.audit_summaries(&token).await;
    assert!(
        summaries.last().unwrap().ends_with(&format!(
            "Failed to rotate keys for HSM protected key group {group}."
        )),
        "{summaries:#?}"
    );
}
