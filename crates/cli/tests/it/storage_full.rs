//! A database that cannot record changes: on SQLite a real `SQLITE_FULL`
//! (the test hook of keyhold-store's `storage-limit` feature stops the file
//! from growing, and the test fills what room is left with audited
//! refusals); on PostgreSQL, where a full disk cannot be made on demand, a
//! database turned read-only (`default_transaction_read_only`, SQLSTATE
//! 25006), which keyhold treats alike. A real `keyhold serve` process, so
//! its log is read as an operator would.
//!
//! While writes fail: a change is answered 503 with the reason and
//! "nothing was changed", and nothing did change; `/readyz` is 503 with the
//! reason; refusals are still refused, and each refusal whose audit entry
//! could not be written is in the server log and counted on `/metrics`. Once
//! writes work again: ready, changes are made, and the audit chain verifies.

use std::io::Read;
use std::process::Command;
use std::time::Duration;

use keyhold_store::DatabaseKind;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    Hsm, dual_login, group_body, init_data_dir, spawn_listening, test_database, use_database,
};
use crate::report;

const KEYHOLD: &str = env!("CARGO_BIN_EXE_keyhold");
const AUDITOR_PASSWORD: &str = "Quartz-maple-47-drift-auditor";
const UNWRITTEN: &str = "keyhold_audit_entries_unwritten_total";

struct Server {
    http: reqwest::Client,
    base: String,
}

impl Server {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, token, None).await
    }

    /// The counter of audit entries that could not be written.
    async fn unwritten(&self) -> u64 {
        let text = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("{UNWRITTEN} ")))
            .unwrap_or_else(|| panic!("no {UNWRITTEN} in /metrics:\n{text}"))
            .trim()
            .parse()
            .unwrap()
    }

    /// The newest audit entry's sequence number.
    async fn newest_seq(&self, token: &str) -> i64 {
        let (status, entries) = self.get("/api/v1/audit?limit=1", Some(token)).await;
        assert_eq!(status, StatusCode::OK, "{entries}");
        entries[0]["seq"].as_i64().unwrap()
    }

    async fn lockout_threshold(&self, token: &str) -> u64 {
        let (status, config) = self.get("/api/v1/config", Some(token)).await;
        assert_eq!(status, StatusCode::OK, "{config}");
        config["lockout_threshold"].as_u64().unwrap()
    }

    async fn readyz(&self) -> (StatusCode, Value) {
        self.get("/readyz", None).await
    }
}

/// The readiness check named `name`.
fn check<'a>(ready: &'a Value, name: &str) -> &'a Value {
    ready["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name}: {ready:#}"))
}

/// How the test stops the database from recording changes, and lets it again.
enum Stopper {
    /// The `storage-limit` marker beside the SQLite file.
    SqliteFull { marker: std::path::PathBuf },
    /// `default_transaction_read_only` on the test's PostgreSQL database.
    PostgresReadOnly { database: String },
}

impl Stopper {
    fn code(&self) -> &'static str {
        match self {
            Self::SqliteFull { .. } => "storage_full",
            Self::PostgresReadOnly { .. } => "database_read_only",
        }
    }

    fn words(&self) -> &'static str {
        match self {
            Self::SqliteFull { .. } => "storage full",
            Self::PostgresReadOnly { .. } => "database read-only",
        }
    }

    /// Sets the database's state; on PostgreSQL the server's connections
    /// are ended, so those it opens next get the new default.
    async fn set(
        &self,
        db: &keyhold_store::testing::TestDatabase,
        sqlite: &std::path::Path,
        stop: bool,
    ) {
        match self {
            Self::SqliteFull { marker } => {
                if stop {
                    std::fs::write(marker, b"").unwrap();
                } else {
                    std::fs::remove_file(marker).unwrap();
                }
            }
            Self::PostgresReadOnly { database } => {
                let mut raw = db.raw(sqlite).await.unwrap();
                let value = if stop { "on" } else { "off" };
                // A new connection is read-only too once the database is.
                raw.execute("SET default_transaction_read_only = off")
                    .await
                    .unwrap();
                raw.execute(&format!(
                    "ALTER DATABASE {database} SET default_transaction_read_only = {value}"
                ))
                .await
                .unwrap();
                raw.execute(&format!(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE datname = '{database}' AND pid <> pg_backend_pid()"
                ))
                .await
                .unwrap();
            }
        }
    }
}

#[tokio::test]
async fn while_the_database_cannot_record_changes_nothing_is_acknowledged_and_refusals_are_logged()
{
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let sqlite = data.join("keyhold.db");
    let db = test_database().await;
    let stopper = match &db {
        keyhold_store::testing::TestDatabase::Postgres { name, .. } => Stopper::PostgresReadOnly {
            database: name.clone(),
        },
        keyhold_store::testing::TestDatabase::Sqlite => Stopper::SqliteFull {
            marker: keyhold_store::storage_limit::marker(&sqlite),
        },
    };
    assert_eq!(
        matches!(stopper, Stopper::PostgresReadOnly { .. }),
        db.kind() == DatabaseKind::Postgres
    );
    let init = init_data_dir(&data, &db);
    let log_file = dir.path().join("server.log");
    let mut serve = Command::new(KEYHOLD);
    serve
        .args(["serve", "--listen", "127.0.0.1:0", "--log", "info"])
        .arg("--data-dir")
        .arg(&data)
        .stderr(std::fs::File::create(&log_file).unwrap());
    if let Some(hsm) = Hsm::for_suite() {
        hsm.configure_command(&mut serve);
    }
    use_database(&mut serve, &db);
    let (mut child, base) = spawn_listening(&mut serve);
    let server = Server {
        http: reqwest::Client::new(),
        base,
    };
    let mut steps: Vec<(String, String)> = Vec::new();

    // An administrators' session, and an auditor's.
    let admins = dual_login(&server.http, &server.base, &init).await;
    let (status, created) = server
        .call(
            reqwest::Method::POST,
            "/api/v1/identities",
            Some(&admins),
            Some(json!({"name": "auditor1", "role": "auditor"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (status, body) = server
        .call(
            reqwest::Method::POST,
            "/api/v1/password",
            None,
            Some(json!({"user": "auditor1", "current_password": created["password"], "new_password": AUDITOR_PASSWORD})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = server
        .call(
            reqwest::Method::POST,
            "/api/v1/session/login",
            None,
            Some(json!({"user": "auditor1", "password": AUDITOR_PASSWORD})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let auditor = body["token"].as_str().unwrap().to_owned();
    let (status, ready) = server.readyz().await;
    assert_eq!(status, StatusCode::OK, "{ready:#}");
    assert_eq!(server.unwritten().await, 0);
    let threshold = server.lockout_threshold(&admins).await;

    // The database stops recording changes. On SQLite the file may not grow
    // any more, and audited refusals (requests with a dead session) fill
    // the room left in its pages until one's entry does not fit.
    stopper.set(&db, &sqlite, true).await;
    let mut filled = 0;
    while server.unwritten().await == 0 {
        let (status, _) = server.get("/api/v1/groups", Some("no-such-session")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        filled += 1;
        assert!(
            filled < 20_000,
            "the database never refused an entry: is keyhold-store's storage-limit feature on?"
        );
    }
    steps.push((
        "the database stops recording changes".into(),
        match stopper {
            Stopper::SqliteFull { .. } => format!(
                "the SQLite file may not grow; {filled} audited refusals filled the room left until an entry did not fit (`SQLITE_FULL`)"
            ),
            Stopper::PostgresReadOnly { .. } => {
                "`default_transaction_read_only = on` (SQLSTATE 25006 on every write)".into()
            }
        },
    ));
    let mut unwritten = server.unwritten().await;
    let seq_before = server.newest_seq(&admins).await;

    // A change: refused with the reason, and nothing changed.
    let (status, body) = server
        .call(
            reqwest::Method::PATCH,
            "/api/v1/config",
            Some(&admins),
            Some(json!({"lockout_threshold": threshold + 2})),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], stopper.code(), "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!(
            "cannot record changes right now ({})",
            stopper.words()
        )) && message.contains("Nothing was changed"),
        "{message}"
    );
    assert!(
        !message.contains("code:"),
        "the driver's words stay in the log: {message}"
    );
    assert_eq!(server.lockout_threshold(&admins).await, threshold);
    assert_eq!(server.newest_seq(&admins).await, seq_before);
    // Its failure's own entry could not be written either: logged, counted.
    assert_eq!(server.unwritten().await, unwritten + 1);
    unwritten += 1;
    steps.push((
        "an administrator changes the lockout threshold".into(),
        format!(
            "503 `{}`: \"{message}\"; the setting and the newest audit entry unchanged",
            stopper.code()
        ),
    ));

    // Not ready, with the reason; reads still answer.
    let (status, ready) = server.readyz().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{ready:#}");
    assert_eq!(ready["ready"], false);
    let storage = check(&ready, "storage");
    assert_eq!(storage["ok"], false, "{ready:#}");
    let reason = storage["reason"].as_str().unwrap();
    assert!(reason.contains(stopper.words()), "{reason}");
    assert_eq!(check(&ready, "database")["ok"], true, "{ready:#}");
    steps.push((
        "`/readyz`".into(),
        format!("503, check `storage`: \"{reason}\"; check `database` (reads) ok"),
    ));

    // Refusals stand, each logged and counted as unaudited.
    let (status, body) = server
        .call(
            reqwest::Method::POST,
            "/api/v1/session/login",
            None,
            Some(json!({"user": "Admin1", "password": "Wrong-Guess-Sekrit-99"})),
        )
        .await;
    // SQLite counts the attempt in place (no new page), then refuses the
    // password; a read-only PostgreSQL cannot count it, so the password is
    // not even checked.
    match stopper {
        Stopper::SqliteFull { .. } => assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}"),
        Stopper::PostgresReadOnly { .. } => {
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
            assert_eq!(body["error"]["code"], stopper.code(), "{body}");
        }
    }
    assert_eq!(server.unwritten().await, unwritten + 1);
    unwritten += 1;
    steps.push((
        "a login with a wrong password".into(),
        format!(
            "refused ({}), its unwritten entry logged and counted",
            status.as_u16()
        ),
    ));
    let (status, body) = server
        .call(
            reqwest::Method::POST,
            "/api/v1/groups",
            Some(&auditor),
            Some(group_body("ig-auditor", "aws-none")),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(server.unwritten().await, unwritten + 1);
    unwritten += 1;
    steps.push((
        "an auditor adds a key group".into(),
        "refused (403), its unwritten entry logged and counted".into(),
    ));
    assert_eq!(server.newest_seq(&admins).await, seq_before);

    // Writes work again: ready once the store has seen one succeed (the
    // readiness probe runs at most every 5 s), then changes are made.
    stopper.set(&db, &sqlite, false).await;
    let mut waited = Duration::ZERO;
    loop {
        let (status, ready) = server.readyz().await;
        if status == StatusCode::OK {
            assert_eq!(check(&ready, "storage")["ok"], true, "{ready:#}");
            break;
        }
        assert!(
            waited < Duration::from_secs(30),
            "still not ready: {ready:#}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        waited += Duration::from_millis(250);
    }
    steps.push((
        match stopper {
            Stopper::SqliteFull { .. } => "space is freed (the file may grow again)".into(),
            Stopper::PostgresReadOnly { .. } => "the database is writable again".into(),
        },
        format!(
            "`/readyz` 200 after {:.1} s (its probe runs at most every 5 s)",
            waited.as_secs_f64()
        ),
    ));
    let (status, body) = server
        .call(
            reqwest::Method::PATCH,
            "/api/v1/config",
            Some(&admins),
            Some(json!({"lockout_threshold": threshold + 2})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(server.lockout_threshold(&admins).await, threshold + 2);
    let (status, report) = server.get("/api/v1/audit/verify", Some(&admins)).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(server.unwritten().await, unwritten);
    steps.push((
        "the change again; `audit verify`".into(),
        format!(
            "200, applied; the chain verifies ({} entries)",
            report["entries_checked"]
        ),
    ));

    child.kill().unwrap();
    child.wait().unwrap();
    let mut log = String::new();
    std::fs::File::open(&log_file)
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    // Each refusal is in the log with what its entry would have said, at
    // error level, and no password.
    for summary in [
        "Failed to change configuration",
        "Failed login for 'Admin1' using Password.",
        "auditor1",
    ] {
        assert!(
            log.lines().any(|line| line.contains("ERROR")
                && line.contains("its audit entry could not be written")
                && line.contains(summary)),
            "no unaudited refusal naming {summary:?} in the log:\n{log}"
        );
    }
    assert!(!log.contains("Wrong-Guess-Sekrit-99"), "{log}");
    assert!(!log.contains(AUDITOR_PASSWORD), "{log}");
    assert!(log.contains("the database cannot record changes"), "{log}");

    let table: String = steps
        .iter()
        .map(|(what, outcome)| format!("| {what} | {outcome} |\n"))
        .collect();
    report::section(
        25,
        "When the database cannot record changes",
        &format!(
            "`storage_full.rs`: a real `keyhold serve` whose database stops recording changes, \
             then records them again. Every step's outcome is read back from the API, \
             `/readyz`, `/metrics` (`{UNWRITTEN}`) and the server log.\n\n\
             | step | outcome |\n|---|---|\n{table}"
        ),
    );
}
