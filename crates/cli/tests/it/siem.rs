//! Streaming the audit log to a SIEM, against a real receiver: Debian's
//! `rsyslog` (`rsyslogd`, with `rsyslog-gnutls` for TLS), started per test on
//! a free port, writing each message it receives raw to one file and, as it
//! parsed it (RFC 5424), to another. `./scripts/test` installs it; without
//! it these tests fail, saying so.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::*;
use crate::test_ca::{TestCa, Usage};

const RSYSLOGD: &str = "/usr/sbin/rsyslogd";

/// A free port on loopback (bound and let go; the receiver takes it next).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The TLS files of a receiver: a private CA, and a certificate it signed
/// for `localhost` and 127.0.0.1 (made by the openssl command line).
struct ReceiverTls {
    ca: PathBuf,
    certificate: PathBuf,
    key: PathBuf,
    /// A client certificate the same CA signed, for keyhold.
    client_certificate: PathBuf,
    client_key: PathBuf,
    /// Whether the receiver accepts only senders with a certificate its CA signed.
    authenticate_senders: bool,
}

impl ReceiverTls {
    fn make(dir: &Path, authenticate_senders: bool) -> Self {
        let ca = TestCa::new(dir, "keyhold SIEM test CA");
        let (certificate, key) = ca.issue("receiver", "localhost", Usage::Server);
        let (client_certificate, client_key) = ca.issue("client", "keyhold", Usage::Client);
        Self {
            ca: ca.certificate(),
            certificate,
            key,
            client_certificate,
            client_key,
            authenticate_senders,
        }
    }
}

/// An `rsyslogd` of this test's own, in the foreground.
struct Rsyslog {
    dir: tempfile::TempDir,
    port: u16,
    tls: Option<ReceiverTls>,
    child: Option<Child>,
}

impl Rsyslog {
    async fn start() -> Self {
        Self::start_with(false, false).await
    }

    async fn start_tls() -> Self {
        Self::start_with(true, false).await
    }

    /// Over TLS, accepting only senders with a certificate its CA signed.
    async fn start_mutual_tls() -> Self {
        Self::start_with(true, true).await
    }

    async fn start_with(tls: bool, authenticate_senders: bool) -> Self {
        assert!(
            Path::new(RSYSLOGD).exists(),
            "{RSYSLOGD} is missing: the SIEM tests need Debian's rsyslog and rsyslog-gnutls \
             (`apt-get install rsyslog rsyslog-gnutls`; ./scripts/test installs them)"
        );
        if tls {
            let driver = std::fs::read_dir("/usr/lib")
                .unwrap()
                .filter_map(Result::ok)
                .any(|d| d.path().join("rsyslog/lmnsd_gtls.so").exists());
            assert!(
                driver,
                "rsyslog's TLS driver (lmnsd_gtls.so) is missing: install rsyslog-gnutls \
                 (./scripts/test does)"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let tls = tls.then(|| ReceiverTls::make(dir.path(), authenticate_senders));
        let mut receiver = Self {
            port: free_port(),
            dir,
            tls,
            child: None,
        };
        receiver.run().await;
        receiver
    }

    fn received_path(&self) -> PathBuf {
        self.dir.path().join("received.log")
    }

    fn parsed_path(&self) -> PathBuf {
        self.dir.path().join("parsed.log")
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Writes its configuration and starts it; returns once it listens.
    async fn run(&mut self) {
        let dir = self.dir.path();
        let driver = match &self.tls {
            None => String::new(),
            Some(tls) => format!(
                "global(DefaultNetstreamDriver=\"gtls\" DefaultNetstreamDriverCAFile=\"{}\" \
                 DefaultNetstreamDriverCertFile=\"{}\" DefaultNetstreamDriverKeyFile=\"{}\")\n",
                tls.ca.display(),
                tls.certificate.display(),
                tls.key.display()
            ),
        };
        let imtcp = match &self.tls {
            Some(tls) if tls.authenticate_senders => {
                "module(load=\"imtcp\" StreamDriver.Name=\"gtls\" StreamDriver.Mode=\"1\" StreamDriver.AuthMode=\"x509/certvalid\")"
            }
            Some(_) => {
                "module(load=\"imtcp\" StreamDriver.Name=\"gtls\" StreamDriver.Mode=\"1\" StreamDriver.AuthMode=\"anon\")"
            }
            None => "module(load=\"imtcp\")",
        };
        let config = format!(
            "global(workDirectory=\"{dir}\" maxMessageSize=\"1m\")\n{driver}{imtcp}\n\
             input(type=\"imtcp\" port=\"{port}\" address=\"127.0.0.1\")\n\
             template(name=\"raw\" type=\"string\" string=\"%rawmsg%\\n\")\n\
             template(name=\"fields\" type=\"string\" string=\"%pri%|%protocol-version%|%timereported:::date-rfc3339%|%hostname%|%app-name%|%procid%|%msgid%|%structured-data%\\n\")\n\
             action(type=\"omfile\" file=\"{received}\" template=\"raw\" flushOnTXEnd=\"on\")\n\
             action(type=\"omfile\" file=\"{parsed}\" template=\"fields\" flushOnTXEnd=\"on\")\n",
            dir = dir.display(),
            port = self.port,
            received = self.received_path().display(),
            parsed = self.parsed_path().display(),
        );
        let conf = dir.join("rsyslog.conf");
        std::fs::write(&conf, config).unwrap();
        let child = Command::new(RSYSLOGD)
            .arg("-n")
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(dir.join("rsyslogd.pid"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("rsyslogd.err")).unwrap())
            .spawn()
            .unwrap();
        self.child = Some(child);
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(self.address()).await.is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "rsyslogd exited ({status}): {}",
                    std::fs::read_to_string(dir.join("rsyslogd.err")).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("rsyslogd did not listen on {} within 10 s", self.address());
    }

    /// Stops it (SIGTERM, as an operator restarting it would) and waits.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }

    /// The messages received, raw, in the order received.
    fn received(&self) -> Vec<String> {
        std::fs::read_to_string(self.received_path())
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The seq of each message received, in order.
    fn seqs(&self) -> Vec<i64> {
        self.received().iter().map(|m| seq_of(m)).collect()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The seq in a message's structured data.
fn seq_of(message: &str) -> i64 {
    let start = message
        .find("seq=\"")
        .unwrap_or_else(|| panic!("no seq in {message}"))
        + 5;
    let end = start + message[start..].find('"').unwrap();
    message[start..end].parse().unwrap()
}

/// The newest entry's seq, read over the API.
async fn head(app: &TestApp, token: &str) -> i64 {
    let (status, body) = app.get("/api/v1/audit?limit=1", token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body[0]["seq"].as_i64().unwrap()
}

/// Waits until the receiver holds every entry up to `head`.
async fn wait_for(app: &TestApp, receiver: &Rsyslog, head: i64) -> Vec<i64> {
    app.eventually(&format!("entries up to {head} at the receiver"), || async {
        let seqs = receiver.seqs();
        seqs.contains(&head).then_some(seqs)
    })
    .await
}

/// Waits until the receiver holds every entry up to `last`, and checks it
/// holds exactly `first..=last`: each once, in order, none missing.
async fn all_arrive(app: &TestApp, receiver: &Rsyslog, first: i64, last: i64, why: &str) {
    let seqs = wait_for(app, receiver, last).await;
    assert_eq!(seqs, (first..=last).collect::<Vec<_>>(), "{why}");
}

/// Waits until `/metrics` says the syslog stream is down after a failed
/// delivery.
async fn syslog_delivery_failed(app: &TestApp) {
    app.eventually("a failed delivery counted", || async {
        let metrics = app.metrics().await;
        (metrics.contains("keyhold_audit_stream_up{sink=\"syslog\"} 0")
            && !metrics.contains("keyhold_audit_stream_failures_total{sink=\"syslog\"} 0"))
        .then_some(())
    })
    .await;
}

/// The node's audit streams as the API reports them.
async fn streams(app: &TestApp, token: &str) -> Vec<Value> {
    let (status, body) = app.get("/api/v1/audit/streams", token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body.as_array().unwrap().clone()
}

/// Waits until the node reports its one stream in `state`; returns it.
async fn stream_in(app: &TestApp, token: &str, state: &str) -> Value {
    app.eventually(&format!("the stream {state}"), || async {
        let all = streams(app, token).await;
        assert_eq!(all.len(), 1, "{all:?}");
        (all[0]["state"] == state).then(|| all[0].clone())
    })
    .await
}

/// The cursor keyhold keeps for a syslog receiver, read from the database.
async fn cursor_in_db(app: &TestApp) -> Vec<i64> {
    open_db(app)
        .await
        .fetch_i64("SELECT seq FROM audit_stream_cursors")
        .await
        .unwrap()
}

fn stream_to(receiver: &Rsyslog) -> impl FnOnce(&mut keyhold_server::ServeArgs) + use<> {
    let address = receiver.address();
    let ca = receiver.tls.as_ref().map(|t| t.ca.clone());
    move |args| {
        args.audit.audit_syslog_address = Some(address);
        args.audit.audit_syslog_tls_ca_file = ca;
    }
}

/// `n` requests at once with a token that is no session: each is refused
/// and audited.
async fn refused_requests(app: &TestApp, n: usize) {
    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    let mut tasks = Vec::new();
    for i in 0..n {
        let http = app.http.clone();
        let url = format!("{}/api/v1/groups", app.base);
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            http.request(Method::GET, url)
                .bearer_auth(format!("not-a-session-{i}"))
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn entries_arrive_in_order_as_rfc5424_with_their_seq_and_hash() {
    let receiver = Rsyslog::start().await;
    let app = TestApp::spawn_with(stream_to(&receiver)).await;
    let token = app.dual_session().await;
    // A refusal: a warning, not a notice.
    let (status, _) = app
        .post(
            "/api/v1/session/login",
            None,
            serde_json::json!({"user": "Admin1", "password": "not the password"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let export = app.audit_export(&token).await;
    let last = export.last().unwrap()["seq"].as_i64().unwrap();
    let seqs = wait_for(&app, &receiver, last).await;
    assert_eq!(seqs[..last as usize], (1..=last).collect::<Vec<_>>()[..]);

    let received = receiver.received();
    for (message, entry) in received.iter().zip(&export) {
        let seq = entry["seq"].as_i64().unwrap();
        let hash = entry["hash"].as_str().unwrap();
        let prev = entry["prev_hash"].as_str().unwrap();
        let refused = entry["details"].get("reason").is_some();
        let pri = if refused { 84 } else { 85 };
        let verb = entry["summary"]
            .as_str()
            .unwrap()
            .split(' ')
            .next()
            .unwrap();
        let header = format!(
            "<{pri}>1 {} node-a keyhold - {verb} [keyhold@32473 seq=\"{seq}\" hash=\"{hash}\" prev_hash=\"{prev}\"] ",
            entry["date"].as_str().unwrap()
        );
        let body = message
            .strip_prefix(&header)
            .unwrap_or_else(|| panic!("{message}\ndoes not start with\n{header}"));
        // The body is the export's line for that entry.
        assert_eq!(&serde_json::from_str::<Value>(body).unwrap(), entry);
    }
    assert!(
        received.iter().any(|m| m.starts_with("<84>1 ")),
        "the failed login is a warning"
    );

    // rsyslog parsed them as RFC 5424: its fields are keyhold's.
    let parsed = std::fs::read_to_string(receiver.parsed_path()).unwrap();
    let first: Vec<&str> = parsed.lines().next().unwrap().split('|').collect();
    assert_eq!(first[0], "85", "{parsed}");
    assert_eq!(first[1], "1");
    assert_eq!(first[3], "node-a");
    assert_eq!(first[4], "keyhold");
    assert_eq!(first[5], "-");
    assert!(
        first[7].starts_with("[keyhold@32473 seq=\"1\" hash=\""),
        "{parsed}"
    );

    // The cursor is the last entry delivered.
    app.eventually("the cursor at the head", || async {
        (cursor_in_db(&app).await == vec![last]).then_some(())
    })
    .await;
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("keyhold_audit_stream_entries_sent_total{sink=\"syslog\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("keyhold_audit_stream_lag_entries{sink=\"syslog\"} 0"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_resumes_after_the_last_entry_sent_without_a_gap_or_a_repeat() {
    let receiver = Rsyslog::start().await;
    let app = TestApp::spawn_with(stream_to(&receiver)).await;
    let token = app.dual_session().await;
    let before = head(&app, &token).await;
    wait_for(&app, &receiver, before).await;
    app.eventually("the cursor at the head", || async {
        (cursor_in_db(&app).await == vec![before]).then_some(())
    })
    .await;

    let app = app.restart().await;
    let token = app.dual_session_again().await;
    refused_requests(&app, 3).await;
    let after = head(&app, &token).await;
    assert!(after > before + 3);
    all_arrive(&app, &receiver, 1, after, "each entry once, in order").await;
    app.eventually("the cursor at the new head", || async {
        (cursor_in_db(&app).await == vec![after]).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn entries_written_while_the_receiver_is_down_arrive_when_it_is_back() {
    let mut receiver = Rsyslog::start().await;
    let app = TestApp::spawn_with(stream_to(&receiver)).await;
    let token = app.dual_session().await;
    let before = head(&app, &token).await;
    wait_for(&app, &receiver, before).await;

    receiver.stop();
    refused_requests(&app, 5).await;
    let token = app.dual_session_again().await;
    let during = head(&app, &token).await;
    // Requests were answered meanwhile, and the stream notices the receiver is away.
    syslog_delivery_failed(&app).await;
    assert_eq!(receiver.seqs().last(), Some(&before));
    // Officers and auditors see it too: the API, the Audit Logs screen, the CLI.
    let away = stream_in(&app, &token, "retrying").await;
    assert_eq!(away["kind"], "syslog", "{away}");
    assert_eq!(
        away["destination"],
        format!("syslog://{}", receiver.address()),
        "{away}"
    );
    assert_eq!(away["cursor"], before, "{away}");
    assert!(away["failures"].as_u64().unwrap() >= 1, "{away}");
    assert!(
        away["last_error"]
            .as_str()
            .unwrap()
            .contains(&receiver.address()),
        "{away}"
    );
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let cookie = crate::ui::ui_session_cookie(&http, &app, "Admin1", ADMIN1_PASSWORD).await;
    let page = http
        .get(format!("{}/ui/audit", app.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let section = &page[page
        .find("id=\"audit-streams\"")
        .expect("no streams section")..];
    assert!(section.contains("data-status=\"retrying\""), "{section}");
    let session = tempfile::tempdir().unwrap();
    let session_file = session.path().join("session");
    let login = keyhold_cli(
        &app.base,
        &session_file,
        &["login", "--user", "Admin1", "--password-stdin"],
        format!("{ADMIN1_PASSWORD}\n").as_bytes(),
    );
    assert!(login.status.success(), "{login:?}");
    let cli = keyhold_cli(&app.base, &session_file, &["audit", "streams"], b"");
    let printed = String::from_utf8_lossy(&cli.stdout);
    assert!(
        cli.status.success() && printed.contains("retrying"),
        "{cli:?}"
    );

    receiver.run().await;
    refused_requests(&app, 2).await;
    let after = head(&app, &token).await;
    assert!(after > during);
    all_arrive(
        &app,
        &receiver,
        1,
        after,
        "none lost, none repeated, in order",
    )
    .await;
    let back = app
        .eventually("the stream caught up", || async {
            let all = streams(&app, &token).await;
            (all[0]["state"] == "delivering" && all[0]["cursor"].as_i64() >= Some(after))
                .then(|| all[0].clone())
        })
        .await;
    assert!(back["last_error"].is_null(), "{back}");
    assert!(back["last_delivered_at"].is_string(), "{back}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_delivers_to_a_receiver_whose_certificate_the_ca_file_vouches_for() {
    let receiver = Rsyslog::start_tls().await;
    let app = TestApp::spawn_with(stream_to(&receiver)).await;
    let token = app.dual_session().await;
    let last = head(&app, &token).await;
    all_arrive(&app, &receiver, 1, last, "each entry once, in order").await;
    assert!(receiver.received()[0].starts_with("<85>1 "));

    // A receiver whose certificate another CA issued gets nothing.
    let other = Rsyslog::start_tls().await;
    let address = other.address();
    let ca = receiver.tls.as_ref().map(|t| t.ca.clone());
    let wrong = TestApp::spawn_with(move |args| {
        args.audit.audit_syslog_address = Some(address);
        args.audit.audit_syslog_tls_ca_file = ca;
    })
    .await;
    wrong
        .eventually("a refused handshake counted", || async {
            let metrics = wrong.metrics().await;
            metrics
                .contains("keyhold_audit_stream_up{sink=\"syslog\"} 0")
                .then_some(())
        })
        .await;
    assert!(other.received().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_json_file_holds_the_logs_entries_in_order_as_the_export_writes_them() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit-stream.jsonl");
    let path = file.clone();
    let app = TestApp::spawn_with(move |args| args.audit.audit_json_file = Some(path)).await;
    let token = app.dual_session().await;
    refused_requests(&app, 4).await;
    let export = app.audit_export(&token).await;
    // The export's own entry comes after what it exported.
    let last = head(&app, &token).await;
    let lines = app
        .eventually("the file up to the head", || async {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            let lines: Vec<Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            (lines.last().and_then(|l| l["seq"].as_i64()) == Some(last)).then_some(lines)
        })
        .await;
    assert_eq!(lines.len() as i64, last);
    assert_eq!(lines[..export.len()], export[..]);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.ends_with('\n'));

    // After a restart it goes on from its last line.
    let app = app.restart().await;
    let token = app.dual_session_again().await;
    let last = head(&app, &token).await;
    app.eventually("the file up to the new head", || async {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let seqs: Vec<i64> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["seq"]
                    .as_i64()
                    .unwrap()
            })
            .collect();
        (seqs == (1..=last).collect::<Vec<_>>()).then_some(())
    })
    .await;
}

/// The seqs of a JSON lines file (none when it is missing).
fn file_seqs(file: &Path) -> Vec<i64> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["seq"]
                .as_i64()
                .unwrap()
        })
        .collect()
}

/// Waits until `file` holds exactly the entries `first..=last`.
async fn file_holds(app: &TestApp, file: &Path, first: i64, last: i64) {
    app.eventually(
        &format!("{} holding {first}..={last}", file.display()),
        || async { (file_seqs(file) == (first..=last).collect::<Vec<_>>()).then_some(()) },
    )
    .await;
}

/// A log rotation moves the file away (logrotate's default) or empties it
/// in place (copytruncate): the stream goes on from the next entry in the
/// file at the path, never starting the whole log again, across a restart
/// too (the database remembers where the file's lines ended).
#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_json_file_goes_on_from_the_next_entry() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit-stream.jsonl");
    let path = file.clone();
    let app = TestApp::spawn_with(move |args| args.audit.audit_json_file = Some(path)).await;
    let token = app.dual_session().await;
    let first = head(&app, &token).await;
    file_holds(&app, &file, 1, first).await;

    // Moved away: a new file at the path takes the entries after it.
    let rotated = dir.path().join("audit-stream.jsonl.1");
    std::fs::rename(&file, &rotated).unwrap();
    refused_requests(&app, 3).await;
    let second = head(&app, &token).await;
    file_holds(&app, &file, first + 1, second).await;
    assert_eq!(file_seqs(&rotated), (1..=first).collect::<Vec<_>>());

    // Moved away while keyhold is stopped, then emptied in place.
    let app = app.restart().await;
    std::fs::rename(&file, dir.path().join("audit-stream.jsonl.2")).unwrap();
    let token = app.dual_session_again().await;
    let third = head(&app, &token).await;
    file_holds(&app, &file, second + 1, third).await;
    std::fs::File::create(&file).unwrap();
    refused_requests(&app, 2).await;
    let fourth = head(&app, &token).await;
    file_holds(&app, &file, third + 1, fourth).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sixteen_concurrent_requests_stream_every_entry_once_in_order() {
    let receiver = Rsyslog::start().await;
    let app = TestApp::spawn_with(stream_to(&receiver)).await;
    let token = app.dual_session().await;
    refused_requests(&app, 16).await;
    refused_requests(&app, 16).await;
    let last = head(&app, &token).await;
    all_arrive(&app, &receiver, 1, last, "each entry once, in order").await;
    let refusals = receiver
        .received()
        .iter()
        .filter(|m| m.starts_with("<84>1 ") && m.contains(" Refused [keyhold@32473"))
        .count();
    assert_eq!(refusals, 32);
}

#[test]
fn bad_stream_settings_stop_start_up_saying_what_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, String, &str); 5] = [
        (
            "KEYHOLD_AUDIT_SYSLOG_ADDRESS",
            "siem.example.com".into(),
            "is not HOST:PORT",
        ),
        (
            "KEYHOLD_AUDIT_SYSLOG_FACILITY",
            "audit".into(),
            "no syslog facility",
        ),
        (
            "KEYHOLD_AUDIT_STREAM_FROM",
            "yesterday".into(),
            "must be `start`",
        ),
        (
            "KEYHOLD_AUDIT_JSON_FILE",
            dir.path()
                .join("no/such/dir/audit.jsonl")
                .display()
                .to_string(),
            "existing directory keyhold may write to",
        ),
        (
            "KEYHOLD_AUDIT_SYSLOG_TLS_CA_FILE",
            dir.path().join("missing-ca.pem").display().to_string(),
            "PEM file with the CA certificate(s)",
        ),
    ];
    for (variable, value, says) in cases {
        let output = Command::new(env!("CARGO_BIN_EXE_keyhold"))
            .arg("serve")
            .env("KEYHOLD_DATA_DIR", dir.path().join("data"))
            .env("KEYHOLD_LISTEN", "127.0.0.1:0")
            .env("KEYHOLD_AUDIT_SYSLOG_ADDRESS", "127.0.0.1:6514")
            .env(variable, &value)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{variable}={value}: started");
        assert!(stderr.contains(says), "{variable}={value}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// Two nodes of a cluster, configured alike: entries written through either
/// reach the receiver once each, in order, from the one node holding the
/// receiver's lease; when that node dies, the other takes over once the
/// lease lapses and goes on after the cursor, with no gap.
#[tokio::test(flavor = "multi_thread")]
async fn in_a_cluster_one_node_streams_and_another_takes_over_without_a_gap() {
    let receiver = Rsyslog::start().await;
    let mut a = TestApp::spawn_with(stream_to(&receiver)).await;
    let token = a.dual_session().await;
    let first = head(&a, &token).await;
    wait_for(&a, &receiver, first).await;
    let b = a.spawn_peer("node-b").await;
    refused_requests(&a, 4).await;
    refused_requests(&b, 4).await;
    let both = head(&a, &token).await;
    all_arrive(&a, &receiver, 1, both, "each entry once, in order").await;
    assert!(
        receiver
            .received()
            .iter()
            .all(|m| m.contains(" node-a keyhold - ")),
        "node-a holds the lease and sends everything, node-b's entries too"
    );
    // Each node reports its own part: node-a delivers, node-b stands by.
    stream_in(&a, &token, "delivering").await;
    stream_in(&b, &token, "standby").await;

    a.crash().await;
    refused_requests(&b, 3).await;
    // The lease (15 s) lapses on the cluster's clock; node-b takes it.
    a.clock.advance(chrono::Duration::seconds(20));
    let token = b.dual_session_again().await;
    let last = head(&b, &token).await;
    all_arrive(&b, &receiver, 1, last, "no gap across the takeover").await;
    assert!(
        receiver
            .received()
            .last()
            .unwrap()
            .contains(" node-b keyhold - ")
    );
    assert_eq!(cursor_in_db(&b).await, vec![last]);
}

/// A node that stops cleanly gives its receiver's lease up: another node
/// streams at once, not when the lease would have expired.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_that_stops_cleanly_hands_its_receiver_over_at_once() {
    let receiver = Rsyslog::start().await;
    let mut a = TestApp::spawn_with(stream_to(&receiver)).await;
    let token = a.dual_session().await;
    let b = a.spawn_peer("node-b").await;
    let first = head(&a, &token).await;
    all_arrive(&a, &receiver, 1, first, "node-a streams").await;
    stream_in(&b, &token, "standby").await;

    a.shut_down().await;
    // The cluster's clock stands still: only the release lets node-b in.
    refused_requests(&b, 3).await;
    let token = b.dual_session_again().await;
    let last = head(&b, &token).await;
    all_arrive(&b, &receiver, 1, last, "no gap across the handover").await;
    stream_in(&b, &token, "delivering").await;
    assert!(
        receiver
            .received()
            .last()
            .unwrap()
            .contains(" node-b keyhold - ")
    );
}

/// `audit_stream_from = now`: a new receiver gets only what is written
/// after the stream first started, and a restart keeps that start (the
/// cursor recorded it) instead of starting "now" again.
#[tokio::test(flavor = "multi_thread")]
async fn a_stream_from_now_starts_after_the_newest_entry_and_keeps_that_start() {
    let mut receiver = Rsyslog::start().await;
    let configure = stream_to(&receiver);
    let app = TestApp::spawn_with(move |args| {
        configure(args);
        args.audit.audit_stream_from = Some("now".into());
    })
    .await;
    // The initialisation's entries were written before the stream started.
    let start = app
        .eventually("the cursor recorded", || async {
            cursor_in_db(&app).await.first().copied()
        })
        .await;
    assert!(start >= 1);
    let token = app.dual_session().await;
    let last = head(&app, &token).await;
    all_arrive(
        &app,
        &receiver,
        start + 1,
        last,
        "each entry once, in order",
    )
    .await;

    // Entries that wait while the receiver is away, across a restart, are
    // not skipped as "before now".
    receiver.stop();
    refused_requests(&app, 3).await;
    let app = app.restart().await;
    receiver.run().await;
    let token = app.dual_session_again().await;
    let after = head(&app, &token).await;
    all_arrive(
        &app,
        &receiver,
        start + 1,
        after,
        "no gap after the restart",
    )
    .await;
}

/// A receiver that authenticates its senders takes keyhold's entries only
/// when keyhold presents the client certificate its CA signed.
#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_that_authenticates_senders_takes_keyholds_client_certificate() {
    let receiver = Rsyslog::start_mutual_tls().await;
    let tls = receiver.tls.as_ref().unwrap();
    let (certificate, key) = (tls.client_certificate.clone(), tls.client_key.clone());
    let configure = stream_to(&receiver);
    let app = TestApp::spawn_with(move |args| {
        configure(args);
        args.audit.audit_syslog_tls_client_certificate = Some(certificate);
        args.audit.audit_syslog_tls_client_key = Some(key);
    })
    .await;
    let token = app.dual_session().await;
    let last = head(&app, &token).await;
    all_arrive(&app, &receiver, 1, last, "each entry once, in order").await;

    // Without it, the receiver refuses the connection and gets nothing.
    let other = Rsyslog::start_mutual_tls().await;
    let anonymous = TestApp::spawn_with(stream_to(&other)).await;
    syslog_delivery_failed(&anonymous).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(other.received().is_empty());
}

/// A server killed while it streams loses nothing: after the restart every
/// entry has arrived, in order. A crash between a batch's delivery and its
/// cursor's update (made certain here by setting the cursor back) sends that
/// batch again, once, in order: at least once, never a gap.
#[tokio::test(flavor = "multi_thread")]
async fn a_crash_while_streaming_loses_nothing_and_replays_only_the_batch_after_the_cursor() {
    let mut receiver = Rsyslog::start().await;
    let mut app = TestApp::spawn_with(stream_to(&receiver)).await;
    let token = app.dual_session().await;
    let before = head(&app, &token).await;
    wait_for(&app, &receiver, before).await;

    // A backlog waits while the receiver is away, then streams; the server
    // is killed as soon as the first of it arrives.
    receiver.stop();
    for _ in 0..6 {
        refused_requests(&app, 16).await;
    }
    receiver.run().await;
    app.eventually("the backlog streaming", || async {
        receiver.seqs().iter().any(|s| *s > before).then_some(())
    })
    .await;
    app.crash().await;
    // The crash may have come after the cursor moved, or between the send and
    // the cursor's update; make it the latter, whatever the timing: the
    // cursor back where it was before the backlog was sent.
    let cursor = cursor_in_db(&app).await[0];
    // What the killed server had written out reaches the receiver's file.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sent = receiver.seqs().into_iter().max().unwrap();
    assert!(
        sent > before && cursor <= sent,
        "cursor {cursor}, sent {sent}"
    );
    open_db(&app)
        .await
        .execute(&format!("UPDATE audit_stream_cursors SET seq = {before}"))
        .await
        .unwrap();

    let app = app.restart().await;
    let token = app.dual_session_again().await;
    let last = head(&app, &token).await;
    let seqs = wait_for(&app, &receiver, last).await;
    let mut seen = std::collections::BTreeSet::new();
    let firsts: Vec<i64> = seqs.iter().copied().filter(|s| seen.insert(*s)).collect();
    assert_eq!(
        firsts,
        (1..=last).collect::<Vec<_>>(),
        "none lost, first arrivals in order"
    );
    // Exactly what was sent after the cursor is sent again, once, in order,
    // and the stream goes on from there.
    assert_eq!(seqs.len() - firsts.len(), (sent - before) as usize);
    let back = seqs.windows(2).position(|w| w[1] <= w[0]).unwrap() + 1;
    assert_eq!(seqs[back], before + 1);
    assert_eq!(seqs[back..], (before + 1..=last).collect::<Vec<_>>()[..]);
}
