//! The approval webhook and the `keyhold approval` commands, against a real
//! server: every request made and decided is POSTed, signed, to a receiver
//! this test runs; a request made through the CLI says it was sent for
//! approval, and an approver reads it and answers from their own session.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

const SECRET: &str = "webhook-shared-secret-9f2c";
const ADMIN3: (&str, &str) = ("Admin3", "admin3-password-x");

/// One POST the receiver took.
#[derive(Clone, Debug)]
struct Delivery {
    path: String,
    content_type: String,
    event: String,
    signature: String,
    body: Vec<u8>,
}

impl Delivery {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A webhook receiver on 127.0.0.1:0 speaking just enough HTTP/1.1: it
/// answers 500 to its first `fail_first` POSTs, then 200, and keeps what
/// it took.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Delivery>>>,
    refused: Arc<AtomicUsize>,
}

impl Receiver {
    async fn start(fail_first: usize) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks/keyhold", listener.local_addr().unwrap());
        let got = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(AtomicUsize::new(0));
        let (kept, refusals) = (got.clone(), refused.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (kept, refusals) = (kept.clone(), refusals.clone());
                tokio::spawn(async move {
                    let _ = serve_one(stream, fail_first, kept, refusals).await;
                });
            }
        });
        Self { url, got, refused }
    }

    fn deliveries(&self) -> Vec<Delivery> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until a delivery of `event` about request `id` arrived.
    async fn wait_for(&self, event: &str, id: &str) -> Delivery {
        for _ in 0..200 {
            if let Some(found) = self
                .deliveries()
                .into_iter()
                .find(|d| d.event == event && d.json()["request"]["id"] == id)
            {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "no '{event}' event for {id}; got: {:?}",
            self.deliveries()
                .iter()
                .map(|d| d.event.clone())
                .collect::<Vec<_>>()
        );
    }
}

async fn serve_one(
    mut stream: tokio::net::TcpStream,
    fail_first: usize,
    kept: Arc<Mutex<Vec<Delivery>>>,
    refused: Arc<AtomicUsize>,
) -> std::io::Result<()> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buffer.extend_from_slice(&chunk[..n]);
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
    let mut lines = head.lines();
    let request_line = lines.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let length: usize = header("content-length").parse().unwrap_or(0);
    while buffer.len() < head_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    let status = if refused.fetch_add(1, Ordering::SeqCst) < fail_first {
        "500 Internal Server Error"
    } else {
        kept.lock().unwrap().push(Delivery {
            path: request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_owned(),
            content_type: header("content-type"),
            event: header("x-keyhold-event"),
            signature: header("x-keyhold-signature"),
            body: buffer[head_end..head_end + length.min(buffer.len() - head_end)].to_vec(),
        });
        "200 OK"
    };
    stream
        .write_all(
            format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    stream.shutdown().await
}

/// `sha256=<hex HMAC-SHA256(secret, body)>`, computed here independently.
fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// How a receiver checks a delivery: recompute and compare in constant time.
fn verifies(secret: &str, delivery: &Delivery) -> bool {
    let Some(hex_mac) = delivery.signature.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(given) = hex::decode(hex_mac) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(&delivery.body);
    mac.verify_slice(&given).is_ok()
}

/// A server whose approval webhook posts to `receiver`, its secret in a file.
async fn server_for(receiver: &Receiver) -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("webhook-secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let url = receiver.url.clone();
    let app = TestApp::spawn_with(move |args| {
        args.approval_webhook.approval_webhook_url = Some(url);
        args.approval_webhook.approval_webhook_secret_file = Some(secret_file);
    })
    .await;
    (app, dir)
}

async fn set_policies(app: &TestApp, token: &str, quorums: Value) {
    let (status, body) = app
        .request(
            Method::PUT,
            "/api/v1/approval-policies",
            Some(token),
            Some(json!({ "quorums": quorums })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn every_request_and_decision_is_posted_signed_to_the_webhook() {
    let receiver = Receiver::start(0).await;
    let (app, _secret_dir) = server_for(&receiver).await;
    let admins = app.dual_session().await;
    app.add_identity(&admins, ADMIN3.0, "administrator", ADMIN3.1)
        .await;
    set_policies(
        &app,
        &admins,
        json!({"manage_identities": {"approvals": 2, "role": "administrator", "expires_after_hours": 24}}),
    )
    .await;

    // Admin3 alone asks; nothing is created yet.
    let admin3 = alone(&app, ADMIN3).await;
    let (status, request) = app
        .post(
            "/api/v1/identities",
            Some(&admin3),
            json!({"name": "hooked", "role": "auditor"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{request}");
    let id = request["id"].as_str().unwrap().to_owned();
    let requested = receiver.wait_for("requested", &id).await;

    // Admin1 and Admin2 approve from their own sessions.
    for (name, password) in [("Admin1", ADMIN1_PASSWORD), ("Admin2", ADMIN2_PASSWORD)] {
        let token = alone(&app, (name, password)).await;
        let (status, body) = app
            .post(
                &format!("/api/v1/approvals/{id}/approve"),
                Some(&token),
                json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let executed = receiver.wait_for("executed", &id).await;
    receiver.wait_for("voted", &id).await;

    let events: Vec<String> = receiver
        .deliveries()
        .iter()
        .filter(|d| d.json()["request"]["id"] == id.as_str())
        .map(|d| d.event.clone())
        .collect();
    let position = |event: &str| events.iter().position(|e| e == event).unwrap();
    assert!(position("requested") < position("executed"), "{events:?}");

    for delivery in [&requested, &executed] {
        assert_eq!(delivery.path, "/hooks/keyhold");
        assert_eq!(delivery.content_type, "application/json");
        let body = delivery.json();
        assert_eq!(body["event"], delivery.event.as_str(), "{body}");
        assert_eq!(body["request"]["id"], id.as_str());
        assert_eq!(body["request"]["class"], "manage_identities");
        assert_eq!(body["request"]["requested_by"], json!(["Admin3"]));
        // The signature is HMAC-SHA256 of exactly these bytes.
        assert_eq!(delivery.signature, signature(SECRET, &delivery.body));
        assert!(verifies(SECRET, delivery));
        // Another secret, or a body changed by one byte, does not verify.
        assert!(!verifies("not-the-secret", delivery));
        let mut forged = delivery.clone();
        forged.body.push(b' ');
        assert!(!verifies(SECRET, &forged));
        assert!(!String::from_utf8_lossy(&delivery.body).contains(SECRET));
    }
    assert_eq!(requested.json()["request"]["status"], "pending");
    assert_eq!(executed.json()["request"]["status"], "executed");
    assert!(
        executed.json()["request"]["votes"]
            .as_array()
            .unwrap()
            .len()
            == 2
    );
    // It ran: the identity exists.
    let (status, identities) = app.get("/api/v1/identities", &admins).await;
    assert_eq!(status, StatusCode::OK);
    assert!(identities.to_string().contains("hooked"), "{identities}");

    let metrics = app.metrics().await;
    assert!(
        metrics.contains("keyhold_approval_webhook_deliveries_total"),
        "{metrics}"
    );
    assert!(!metrics.contains(SECRET));
}

#[tokio::test]
async fn a_failing_receiver_is_retried_and_counted() {
    let receiver = Receiver::start(2).await;
    let (app, _secret_dir) = server_for(&receiver).await;
    let admins = app.dual_session().await;
    set_policies(
        &app,
        &admins,
        json!({"manage_identities": {"approvals": 1, "role": "administrator", "expires_after_hours": 24}}),
    )
    .await;
    let admin1 = alone(&app, ("Admin1", ADMIN1_PASSWORD)).await;
    let (status, request) = app
        .post(
            "/api/v1/identities",
            Some(&admin1),
            json!({"name": "retried", "role": "auditor"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{request}");
    let id = request["id"].as_str().unwrap();
    // Two 500s, then the third attempt is taken.
    let delivery = receiver.wait_for("requested", id).await;
    assert!(verifies(SECRET, &delivery));
    assert!(receiver.refused.load(Ordering::SeqCst) >= 3);
    let metrics = app.metrics().await;
    let failures = metrics
        .lines()
        .find(|l| l.starts_with("keyhold_approval_webhook_failures_total "))
        .unwrap_or_else(|| panic!("{metrics}"));
    let count: f64 = failures.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(count >= 2.0, "{failures}");
}

// ---- the `keyhold approval` commands ----

/// Runs the `keyhold` binary (off the runtime's threads: it blocks).
async fn keyhold(
    url: &str,
    session: &std::path::Path,
    args: &[&str],
    stdin: &str,
) -> (bool, String, String) {
    let (url, session, stdin) = (url.to_owned(), session.to_owned(), stdin.to_owned());
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let output = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        keyhold_cli(&url, &session, &args, stdin.as_bytes())
    })
    .await
    .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn cli_login(url: &str, session: &std::path::Path, (name, password): (&str, &str)) {
    let (ok, out, err) = keyhold(
        url,
        session,
        &["login", "--user", name, "--password-stdin"],
        &format!("{password}\n"),
    )
    .await;
    assert!(ok, "login {name}: {out}{err}");
}

/// The request id of "Sent for approval: request <id> waits …".
fn request_id(stdout: &str) -> String {
    stdout
        .split("request ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no request id in: {stdout}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_sends_for_approval_shows_and_answers_requests() {
    let app = TestApp::spawn().await;
    let admins = app.dual_session().await;
    app.add_identity(&admins, ADMIN3.0, "administrator", ADMIN3.1)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let (dual, requester, approver) = (
        dir.path().join("dual.json"),
        dir.path().join("admin3.json"),
        dir.path().join("admin1.json"),
    );
    let url = app.base.as_str();

    // The policies, set and shown from a dual session.
    cli_login(url, &dual, ("Admin1", ADMIN1_PASSWORD)).await;
    cli_login(url, &dual, ("Admin2", ADMIN2_PASSWORD)).await;
    let policies = r#"{"quorums": {"manage_identities": {"approvals": 1, "role": "administrator", "expires_after_hours": 24}}}"#;
    let (ok, out, err) = keyhold(
        url,
        &dual,
        &["approval", "policies", "set", "--file", "-"],
        policies,
    )
    .await;
    assert!(ok, "{out}{err}");
    let (ok, out, err) = keyhold(url, &dual, &["approval", "policies"], "").await;
    assert!(ok, "{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("manage_identities"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains("quorum"), "{out}");

    // Admin3 alone asks through the usual command: it is sent for approval.
    cli_login(url, &requester, ADMIN3).await;
    let (ok, out, err) = keyhold(
        url,
        &requester,
        &[
            "identity",
            "create",
            "--name",
            "cli-newcomer",
            "--role",
            "auditor",
        ],
        "",
    )
    .await;
    assert!(ok, "exit 0 when sent for approval: {out}{err}");
    assert!(out.starts_with("Sent for approval: request "), "{out}");
    assert!(
        out.contains("waits for 1 approval from administrator identities (expires "),
        "{out}"
    );
    assert!(out.contains("Approvers: keyhold approval show "), "{out}");
    assert!(!out.contains("One-time password"), "{out}");
    let id = request_id(&out);

    // With --output json, the request itself.
    let (ok, out, err) = keyhold(
        url,
        &requester,
        &[
            "identity",
            "create",
            "--name",
            "cli-denied",
            "--role",
            "auditor",
            "-o",
            "json",
        ],
        "",
    )
    .await;
    assert!(ok, "{out}{err}");
    let denied: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(denied["status"], "pending");
    assert!(
        denied["params_hash"].as_str().unwrap().len() == 64,
        "{denied}"
    );
    let denied_id = denied["id"].as_str().unwrap().to_owned();

    // An approver lists and reads it: exactly what will run.
    cli_login(url, &approver, ("Admin1", ADMIN1_PASSWORD)).await;
    let (ok, out, err) = keyhold(
        url,
        &approver,
        &["approval", "list", "--status", "pending"],
        "",
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains(&id) && out.contains(&denied_id), "{out}");
    let (ok, out, err) = keyhold(url, &approver, &["approval", "show", &id], "").await;
    assert!(ok, "{err}");
    for expected in [
        "Parameters (exactly what will run):",
        "\"name\": \"cli-newcomer\"",
        "\"role\": \"auditor\"",
        "Params hash:",
        "Requested by:",
        "Admin3",
        "Expires:",
        "Votes:",
        "You may answer:  yes",
    ] {
        assert!(out.contains(expected), "{expected}: {out}");
    }
    // The requester may not answer their own request.
    let (ok, _, err) = keyhold(url, &requester, &["approval", "approve", &id], "").await;
    assert!(!ok, "{err}");

    // Approved from Admin1's own session: it runs.
    let (ok, out, err) = keyhold(url, &approver, &["approval", "approve", &id], "").await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("executed"), "{out}");
    assert!(
        out.contains(&format!("keyhold approval result {id}")),
        "{out}"
    );
    let (ok, out, err) = keyhold(url, &approver, &["identity", "list"], "").await;
    assert!(ok, "{err}");
    assert!(out.contains("cli-newcomer"), "{out}");

    // The requester collects the one-time password, once.
    let (ok, out, err) = keyhold(url, &requester, &["approval", "result", &id], "").await;
    assert!(ok, "{err}");
    assert!(out.contains("One-time password"), "{out}");
    let (ok, _, _) = keyhold(url, &requester, &["approval", "result", &id], "").await;
    assert!(!ok, "a result is given once");

    // Denied, with a reason: it will not run.
    let (ok, out, err) = keyhold(
        url,
        &approver,
        &["approval", "deny", &denied_id, "--reason", "not this week"],
        "",
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("will not run"), "{out}");
    let (ok, out, err) = keyhold(
        url,
        &approver,
        &["approval", "show", &denied_id, "-o", "json"],
        "",
    )
    .await;
    assert!(ok, "{err}");
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["status"], "denied");
    assert_eq!(shown["votes"][0]["reason"], "not this week");
    let (ok, out, _) = keyhold(url, &approver, &["identity", "list"], "").await;
    assert!(ok);
    assert!(!out.contains("cli-denied"), "{out}");
}
