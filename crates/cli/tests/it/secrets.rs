//! Secrets stay secret: passwords (one-time, new, wrong), a cloud
//! credential's secret access key, the PKCS#11 PIN and session tokens never
//! appear in the server's log (at debug level), the audit log, an API
//! answer or an error message. Everything a real `keyhold serve` process
//! wrote and answered is captured and searched.

use std::io::BufRead;
use std::process::{Command, Stdio};

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{
    ACCESS_KEY_ID, Hsm, SECRET_ACCESS_KEY, console_csv, group_body, init_data_dir_on,
    test_database, unique, use_database,
};
use crate::kms::endpoint;

const KEYHOLD: &str = env!("CARGO_BIN_EXE_keyhold");

/// Everything the server answered, except the answers whose purpose is to
/// hand a secret to its owner (a login's token, a new identity's one-time
/// password), which are kept apart.
struct Transcript {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    answers: String,
}

impl Transcript {
    async fn call(&mut self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let (status, text) = self.raw(method, path, body).await;
        self.answers.push_str(&text);
        self.answers.push('\n');
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// A call whose answer carries a secret meant for the caller.
    async fn handing_over(&mut self, method: Method, path: &str, body: Value) -> (u16, Value) {
        let (status, text) = self.raw(method, path, Some(body)).await;
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn raw(&self, method: Method, path: &str, body: Option<Value>) -> (u16, String) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    async fn login(&mut self, user: &str, password: &str) {
        let (status, body) = self
            .handing_over(
                Method::POST,
                "/api/v1/session/login",
                json!({"user": user, "password": password}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        // Logging in with a token joins its session and replaces the token.
        self.token = Some(body["token"].as_str().unwrap().to_owned());
    }
}

#[tokio::test]
async fn no_secret_reaches_a_log_the_audit_log_an_answer_or_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let db = test_database().await;
    let hsm = Hsm::for_suite();
    let configure = |command: &mut Command| {
        command.arg("--data-dir").arg(&data);
        if let Some(hsm) = &hsm {
            hsm.configure_command(command);
        }
        use_database(command, &db);
    };

    let init = init_data_dir_on(&data, &db, hsm.as_ref());
    let one_time: Vec<String> = init["identities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["password"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(one_time.len(), 2, "{init}");

    let log_file = dir.path().join("server.log");
    let mut serve = Command::new(KEYHOLD);
    serve
        .args(["serve", "--listen", "127.0.0.1:0", "--log", "debug"])
        .args(["--kms-wrapping-key-spec", "RSA_2048"])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log_file).unwrap());
    configure(&mut serve);
    crate::helpers::allow_kms_peer(&mut serve);
    let mut child = serve.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut printed = String::new();
    let mut lines = std::io::BufReader::new(stdout).lines();
    let base = loop {
        let line = lines.next().expect("keyhold serve exited").unwrap();
        printed.push_str(&line);
        if let Some(url) = line.strip_prefix("keyhold listening on ") {
            break url.trim().to_owned();
        }
    };
    let mut api = Transcript {
        http: reqwest::Client::new(),
        base,
        token: None,
        answers: String::new(),
    };

    // Passwords: the one-time ones replaced, a wrong one tried.
    let new_passwords = ["Admin1-Sekrit-Phrase-77", "Admin2-Sekrit-Phrase-88"];
    for ((user, current), new) in ["Admin1", "Admin2"]
        .iter()
        .zip(&one_time)
        .zip(new_passwords)
    {
        let (status, body) = api
            .call(
                Method::POST,
                "/api/v1/password",
                Some(json!({"user": user, "current_password": current, "new_password": new})),
            )
            .await;
        assert_eq!(status, 204, "{body}");
    }
    let wrong = "Wrong-Guess-Sekrit-99";
    let (status, _) = api
        .call(
            Method::POST,
            "/api/v1/session/login",
            Some(json!({"user": "Admin1", "password": wrong})),
        )
        .await;
    assert_eq!(status, 401);
    let (status, _) = api
        .call(
            Method::POST,
            "/api/v1/password",
            Some(json!({"user": "Admin2", "current_password": wrong, "new_password": "short"})),
        )
        .await;
    assert!((400..500).contains(&status));
    api.login("Admin1", new_passwords[0]).await;
    let first_token = api.token.clone().unwrap();
    api.login("Admin2", new_passwords[1]).await;

    // A credential, a malformed one with a secret in it, a new identity.
    let credential = unique("secret-cred");
    let (status, body) = api
        .call(
            Method::POST,
            "/api/v1/credentials",
            Some(json!({"name": credential, "csv": console_csv(), "endpoint": endpoint()})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let malformed_secret = "MalformedSecretKeyValue0123456789abcdefXY";
    for csv in [
        format!("Access key ID,Secret access key\n{ACCESS_KEY_ID},{malformed_secret},extra\n"),
        format!("Access key ID,Secret access key\n{ACCESS_KEY_ID}\n{malformed_secret}\n"),
        format!("{malformed_secret},{ACCESS_KEY_ID}\n"),
        format!("Access key ID,Secret access key\nnot an id,{malformed_secret}\n"),
    ] {
        let (status, body) = api
            .call(
                Method::POST,
                "/api/v1/credentials",
                Some(json!({"name": unique("bad"), "csv": csv})),
            )
            .await;
        assert_eq!(status, 400, "{body}");
    }
    let (status, created) = api
        .handing_over(
            Method::POST,
            "/api/v1/identities",
            json!({"name": "auditor9", "role": "auditor"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let auditor_one_time = created["password"].as_str().unwrap().to_owned();

    // A rotation through KMS, then everything read back.
    let group = unique("secret-group");
    let (status, body) = api
        .call(
            Method::POST,
            "/api/v1/groups",
            Some(group_body(&group, &credential)),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, job) = api
        .call(
            Method::POST,
            &format!("/api/v1/groups/{group}/rotate"),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 202, "{job}");
    let job_path = format!("/api/v1/jobs/{}", job["id"].as_str().unwrap());
    let mut finished = Value::Null;
    for _ in 0..300 {
        let (_, job) = api.call(Method::GET, &job_path, None).await;
        if matches!(job["status"].as_str(), Some("succeeded" | "failed")) {
            finished = job;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(finished["status"], "succeeded", "{finished}");
    for path in [
        "/api/v1/credentials",
        &format!("/api/v1/credentials/{credential}"),
        "/api/v1/groups",
        "/api/v1/keys",
        "/api/v1/jobs",
        "/api/v1/identities",
        "/api/v1/config",
        "/api/v1/session",
        "/api/v1/audit?limit=1000",
        "/api/v1/audit/export",
        "/readyz",
        "/metrics",
    ] {
        let (status, _) = api.call(Method::GET, path, None).await;
        assert_eq!(status, 200, "{path}");
    }
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(&log_file).unwrap();
    assert!(
        log.contains("DEBUG"),
        "the server logged at debug level, so the search covers the most it ever logs"
    );

    let mut secrets: Vec<(&str, String)> = vec![
        ("a secret access key", SECRET_ACCESS_KEY.to_owned()),
        (
            "a malformed credential's secret",
            malformed_secret.to_owned(),
        ),
        ("a wrong password", wrong.to_owned()),
        ("the auditor's one-time password", auditor_one_time),
        ("a session token", first_token),
        ("the joined session's token", api.token.clone().unwrap()),
    ];
    secrets.extend(one_time.iter().map(|p| ("a one-time password", p.clone())));
    secrets.extend(
        new_passwords
            .iter()
            .map(|p| ("a new password", (*p).to_owned())),
    );
    if let Some(hsm) = &hsm {
        secrets.push(("the PKCS#11 PIN", hsm.pin.clone()));
    }
    let places = [
        ("the server's log", log.as_str()),
        ("the server's standard output", printed.as_str()),
        (
            "the API's answers (audit log included)",
            api.answers.as_str(),
        ),
    ];
    let mut leaks = Vec::new();
    for (what, secret) in &secrets {
        for (place, text) in places {
            if text.contains(secret.as_str()) {
                leaks.push(format!("{what} appears in {place}"));
            }
        }
    }
    assert!(leaks.is_empty(), "{}", leaks.join("\n"));
    // The embedded database keeps the credential sealed, not in clear.
    let database_file = data.join("keyhold.db");
    if database_file.exists() {
        let bytes = std::fs::read(&database_file).unwrap();
        let secret = SECRET_ACCESS_KEY.as_bytes();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret),
            "the secret access key is stored in clear"
        );
    }

    crate::report::section(
        22,
        "Secrets never shown",
        &format!(
            "A real `keyhold serve` process logging at debug level was taken through password changes, \
             a wrong password, a cloud credential import, {} malformed credential files carrying a \
             secret, an identity creation and a rotation through KMS; then every list was read back. \
             {} secrets (passwords, one-time passwords, the secret access key, session tokens{}) were \
             searched for in {} bytes of log, the standard output and {} bytes of API answers \
             including the whole audit log: found 0 times.",
            4,
            secrets.len(),
            if hsm.is_some() {
                ", the PKCS#11 PIN"
            } else {
                ""
            },
            log.len(),
            api.answers.len()
        ),
    );
}

/// The modes of everything in `dir`, recursively, relative to it.
fn modes_under(dir: &std::path::Path) -> Vec<(String, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut modes = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let name = path.strip_prefix(dir).unwrap().display().to_string();
            modes.push((name, meta.permissions().mode() & 0o777));
            if meta.is_dir() {
                pending.push(path);
            }
        }
    }
    modes
}

/// The database holds the password hashes and sealed secrets, the keystore
/// directory the master key: none of it is readable by another local user,
/// including the `-wal` and `-shm` files SQLite creates after start-up.
#[tokio::test]
async fn the_data_directory_and_everything_in_it_are_private_to_keyhold() {
    use std::os::unix::fs::PermissionsExt;
    let app = crate::helpers::TestApp::spawn().await;
    // Writes, so the WAL and shared-memory files exist while the server runs.
    let token = app.dual_session().await;
    app.import_credential(&token, "c").await;
    assert_eq!(
        std::fs::metadata(&app.data_dir)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    let modes = modes_under(&app.data_dir);
    if app.db.url_override().is_none() {
        for name in ["keyhold.db", "keyhold.db-wal", "keyhold.db-shm"] {
            assert!(
                modes.iter().any(|(n, _)| n == name),
                "{name} missing: {modes:?}"
            );
        }
    }
    let open: Vec<_> = modes.iter().filter(|(_, m)| m & 0o077 != 0).collect();
    assert!(open.is_empty(), "readable by group or others: {open:?}");

    // A data directory others can read is refused, saying what to run, and
    // nothing is written into it.
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut init = Command::new(KEYHOLD);
    init.args(["init", "--data-dir"]).arg(&shared);
    use_database(&mut init, &app.db);
    let out = init.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("chmod 700 {}", shared.display())),
        "{stderr}"
    );
    assert_eq!(std::fs::read_dir(&shared).unwrap().count(), 0);
}
