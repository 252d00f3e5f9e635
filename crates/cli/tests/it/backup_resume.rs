//! Backups, restores and audit archives cut off by a crash (the process
//! aborts at a crash point, as kill -9 would stop it): nothing half done is
//! left behind, and doing it again succeeds.
//!
//! The `keyhold` binary is built with the `crash-points` feature: with
//! `KEYHOLD_CRASH_AT=<point>` (or `<point>:<count>` for a point inside a
//! loop) it aborts when it reaches that point. The points are those of
//! `crates/server/src/backup/**`; [`every_backup_crash_point_has_a_case`]
//! reads them from the source, so a new point without a case here fails.
//!
//! One installation goes through every backup and archive case in turn (a
//! server per case, on the same data): each restart must clean up what the
//! crash before it left. Its last, whole backup is then restored into a
//! fresh installation per restore case, side by side.

use std::collections::BTreeSet;
use std::path::Path;

/// Aborts while the snapshot streams into the file.
const BACKUP_ROWS: &str = "backup_rows";
/// The file complete and synced under its `.partial` name, not yet named.
const BACKUP_BEFORE_RENAME: &str = "backup_before_rename";
/// The file named, its record still running.
const BACKUP_BEFORE_FINISH: &str = "backup_before_finish";
/// A restore: the keystore holds the backup's audit keys, no row loaded.
const RESTORE_AFTER_KEYSTORE: &str = "restore_after_keystore";
/// A restore: rows loaded into the open transaction.
const RESTORE_ROWS: &str = "restore_rows";
/// A restore: every row loaded, the transaction not committed.
const RESTORE_BEFORE_COMMIT: &str = "restore_before_commit";
/// The archive file written and synced, its entries not marked archived.
const ARCHIVE_BEFORE_MARK: &str = "archive_before_mark";

/// Every crash point a case below covers.
const COVERED: &[&str] = &[
    BACKUP_ROWS,
    BACKUP_BEFORE_RENAME,
    BACKUP_BEFORE_FINISH,
    RESTORE_AFTER_KEYSTORE,
    RESTORE_ROWS,
    RESTORE_BEFORE_COMMIT,
    ARCHIVE_BEFORE_MARK,
];

/// The source of `crates/server/src/backup/**`, where the crash points are.
const SOURCES: &[(&str, &str)] = &[
    ("mod.rs", include_str!("../../../server/src/backup/mod.rs")),
    (
        "restore.rs",
        include_str!("../../../server/src/backup/restore.rs"),
    ),
    (
        "archive.rs",
        include_str!("../../../server/src/backup/archive.rs"),
    ),
];

/// The crash point names `source` passes to `crash_point("…")` and
/// `crash_point_after("…", n)`; a point named otherwise than by a literal
/// fails (this test could not see it).
fn crash_points_in(file: &str, source: &str) -> Vec<String> {
    let mut points = Vec::new();
    for call in ["crash_point(", "crash_point_after("] {
        for (at, _) in source.match_indices(call) {
            let rest = &source[at + call.len()..];
            let name = rest
                .strip_prefix('"')
                .and_then(|r| r.split('"').next())
                .unwrap_or_else(|| {
                    panic!(
                        "{file}: a crash point not named by a string literal: {}",
                        &rest[..rest.len().min(60)]
                    )
                });
            points.push(name.to_owned());
        }
    }
    points
}

/// Every crash point in `crates/server/src/backup/**` has a case in this
/// module, and every case's point is still in the source.
#[test]
fn every_backup_crash_point_has_a_case() {
    // A new file there must join SOURCES, or its points go unseen.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../server/src/backup");
    let mut on_disk = BTreeSet::new();
    let mut stack = vec![dir.clone()];
    while let Some(next) = stack.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                on_disk.insert(
                    path.strip_prefix(&dir)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    let read: BTreeSet<String> = SOURCES.iter().map(|(f, _)| (*f).to_owned()).collect();
    assert_eq!(
        on_disk, read,
        "the files of crates/server/src/backup are not those this test reads: add them to SOURCES"
    );

    let found: BTreeSet<String> = SOURCES
        .iter()
        .flat_map(|(file, source)| crash_points_in(file, source))
        .collect();
    let covered: BTreeSet<String> = COVERED.iter().map(|p| (*p).to_owned()).collect();
    let untested: Vec<&String> = found.difference(&covered).collect();
    assert!(
        untested.is_empty(),
        "crash points without a case in backup_resume.rs: {untested:?}"
    );
    let stale: Vec<&String> = covered.difference(&found).collect();
    assert!(
        stale.is_empty(),
        "cases for crash points no longer in the source: {stale:?}"
    );
}

#[cfg(feature = "crash-points")]
mod killed {
    use std::collections::BTreeSet;
    use std::os::unix::process::ExitStatusExt;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::Duration;

    use keyhold_store::testing::TestDatabase;
    use reqwest::Method;
    use serde_json::{Value, json};

    use super::*;
    use crate::helpers::{
        Hsm, console_csv, dual_login, group_body, init_data_dir_on, spawn_listening, test_database,
        unique, use_database,
    };

    const KEYHOLD: &str = env!("CARGO_BIN_EXE_keyhold");
    /// [`BACKUP_ROWS`] after the file's 4th record: the audit keys, the
    /// identities table and two identities, which every installation has.
    const BACKUP_ROWS_AT: &str = "backup_rows:4";
    /// [`RESTORE_ROWS`] at the 3rd row loaded.
    const RESTORE_ROWS_AT: &str = "restore_rows:3";
    const CRASH_AT: &str = "KEYHOLD_CRASH_AT";
    /// `abort()`'s signal.
    const SIGABRT: i32 = 6;

    struct Server {
        child: Child,
        base: String,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// An installation: data directory, database and (with the PKCS#11
    /// keystore) a token of its own ([`Hsm::isolated`]: many processes run
    /// side by side).
    struct Site {
        dir: tempfile::TempDir,
        db: TestDatabase,
        hsm: Option<Hsm>,
    }

    impl Site {
        async fn new(prefix: &str) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let db = test_database().await;
            let hsm = Hsm::for_suite().map(|_| Hsm::isolated(prefix, dir.path()));
            Self { dir, db, hsm }
        }

        fn data(&self) -> PathBuf {
            self.dir.path().join("data")
        }

        fn backup_dir(&self) -> PathBuf {
            self.data().join("backups")
        }

        fn archive_dir(&self) -> PathBuf {
            self.data().join("audit-archive")
        }

        /// `keyhold serve`, aborting at `crash_at` when given.
        fn serve(&self, crash_at: Option<&str>) -> Server {
            let mut command = Command::new(KEYHOLD);
            command
                .args([
                    "serve",
                    "--listen",
                    "127.0.0.1:0",
                    "--log",
                    "warn",
                    "--kms-wrapping-key-spec",
                    "RSA_2048",
                    "--node-id",
                    "node-a",
                    "--scheduler-tick-ms",
                    "200",
                ])
                .arg("--data-dir")
                .arg(self.data())
                .env_remove(CRASH_AT)
                .env_remove("KEYHOLD_PAUSE_AT")
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            if let Some(point) = crash_at {
                command.env(CRASH_AT, point);
            }
            if let Some(hsm) = &self.hsm {
                hsm.configure_command(&mut command);
            }
            use_database(&mut command, &self.db);
            let (child, base) = spawn_listening(&mut command);
            Server { child, base }
        }

        /// Nothing is installed: no identity, no audit entry (a restore
        /// that did not commit left no row).
        async fn assert_empty(&self, point: &str) {
            let mut db = self.db.raw(&self.data().join("keyhold.db")).await.unwrap();
            for table in ["identities", "audit_log", "keys", "credentials"] {
                let count = db
                    .fetch_i64(&format!("SELECT COUNT(*) FROM {table}"))
                    .await
                    .unwrap_or_else(|e| panic!("{point}: counting {table}: {e}"));
                assert_eq!(count, [0], "{point}: rows left in {table}");
            }
        }
    }

    /// Waits (bounded) for `server` to abort at `point`.
    async fn aborted(mut server: Server, point: &str) {
        for _ in 0..600 {
            if let Some(status) = server.child.try_wait().unwrap() {
                assert_eq!(
                    status.signal(),
                    Some(SIGABRT),
                    "the server stopped otherwise than at {point}: {status:?}"
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the server never reached crash point {point}");
    }

    /// Names of the files in `dir` (none when it does not exist).
    fn files_in(dir: &Path) -> BTreeSet<String> {
        match std::fs::read_dir(dir) {
            Ok(entries) => entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
            Err(e) => panic!("cannot read {}: {e}", dir.display()),
        }
    }

    #[derive(Clone)]
    struct Client {
        http: reqwest::Client,
        token: String,
    }

    impl Client {
        /// The request, or `None` when the server went away before it answered.
        async fn try_call(
            &self,
            base: &str,
            method: Method,
            path: &str,
            body: Option<Value>,
        ) -> Option<(u16, Value)> {
            let mut request = self
                .http
                .request(method, format!("{base}{path}"))
                .bearer_auth(&self.token);
            if let Some(body) = body {
                request = request.json(&body);
            }
            let response = request.send().await.ok()?;
            let status = response.status().as_u16();
            let text = response.text().await.ok()?;
            Some((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
        }

        async fn call(
            &self,
            base: &str,
            method: Method,
            path: &str,
            body: Option<Value>,
        ) -> (u16, Value) {
            let what = format!("{method} {path}");
            self.try_call(base, method, path, body)
                .await
                .unwrap_or_else(|| panic!("{what}: no answer"))
        }

        async fn get(&self, base: &str, path: &str) -> Value {
            let (status, body) = self.call(base, Method::GET, path, None).await;
            assert_eq!(status, 200, "GET {path}: {body}");
            body
        }

        async fn audit_verifies(&self, base: &str, when: &str) {
            let verify = self.get(base, "/api/v1/audit/verify").await;
            assert_eq!(verify["ok"], true, "{when}: {verify:#}");
        }

        async fn wait_backup(&self, base: &str, id: &str) -> Value {
            for _ in 0..600 {
                let backup = self.get(base, &format!("/api/v1/backups/{id}")).await;
                if backup["status"] != "running" {
                    return backup;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("backup {id} still running after 60 s");
        }
    }

    /// Both administrators log in again (their passwords set by
    /// [`dual_login`]) to one session.
    async fn login_again(http: &reqwest::Client, base: &str) -> Client {
        let mut token: Option<String> = None;
        for name in ["Admin1", "Admin2"] {
            let mut login = http
                .post(format!("{base}/api/v1/session/login"))
                .json(&json!({"user": name, "password": format!("{name}-served-pass")}));
            if let Some(t) = &token {
                login = login.bearer_auth(t);
            }
            let response = login.send().await.unwrap();
            assert_eq!(response.status(), 200, "{name} logs in");
            let body: Value = response.json().await.unwrap();
            token = Some(body["token"].as_str().unwrap().to_owned());
        }
        Client {
            http: http.clone(),
            token: token.unwrap(),
        }
    }

    /// What a source installation leaves for the restore cases.
    struct Made {
        /// The backup, copied out of the (stopped) source.
        file: PathBuf,
        id: String,
        shares: Vec<PathBuf>,
        custodian_keys: Vec<PathBuf>,
        /// Its keys, credentials and archives.
        keys: usize,
        _dir: tempfile::TempDir,
    }

    /// A rotated group (one key, its material on the keystore), a
    /// credential, two custodians with key files: what a backup carries.
    async fn populate(base: &str, client: &Client, out: &Path) -> Vec<PathBuf> {
        let mut custodians = Vec::new();
        let mut keys = Vec::new();
        for name in ["ann", "bob"] {
            let (secret, public) = keyhold_backup::generate_custodian_key().unwrap();
            let path = out.join(format!("{name}.key"));
            std::fs::write(&path, secret.to_text().as_bytes()).unwrap();
            keys.push(path);
            custodians.push(json!({"name": name, "public_key": public}));
        }
        let (status, body) = client
            .call(
                base,
                Method::PUT,
                "/api/v1/backups/custodians",
                Some(json!({"threshold": 2, "custodians": custodians})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = client
            .call(
                base,
                Method::POST,
                "/api/v1/credentials",
                Some(json!({"name": "aws", "csv": console_csv(), "endpoint": crate::kms::endpoint()})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let group = unique("bk-crash");
        let (status, body) = client
            .call(
                base,
                Method::POST,
                "/api/v1/groups",
                Some(group_body(&group, "aws")),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let (status, job) = client
            .call(
                base,
                Method::POST,
                &format!("/api/v1/groups/{group}/rotate"),
                Some(json!({})),
            )
            .await;
        assert_eq!(status, 202, "{job}");
        let id = job["id"].as_str().unwrap();
        for _ in 0..600 {
            let job = client.get(base, &format!("/api/v1/jobs/{id}")).await;
            match job["status"].as_str() {
                Some("succeeded") => return keys,
                Some("failed" | "cancelled") => panic!("the rotation failed: {job:#}"),
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        panic!("the rotation did not finish within 60 s");
    }

    /// `archive_before_mark`: the archive file is written, the process
    /// dies before its entries are marked. The next server archives the
    /// same range again (the file overwritten), and the log verifies.
    /// `server` is armed at `archive_before_mark`; returns the next server
    /// (armed at `next`).
    async fn archive_case(site: &Site, server: Server, client: &Client, next: &str) -> Server {
        let newest = client.get(&server.base, "/api/v1/audit?limit=1").await;
        let up_to = newest[0]["seq"].as_i64().unwrap();
        let answer = client
            .try_call(
                &server.base,
                Method::POST,
                "/api/v1/audit/archives",
                Some(json!({"up_to_seq": up_to})),
            )
            .await;
        assert!(
            answer.is_none(),
            "the archive was answered before the crash point: {answer:?}"
        );
        aborted(server, ARCHIVE_BEFORE_MARK).await;
        let left = files_in(&site.archive_dir());
        assert_eq!(left.len(), 1, "{ARCHIVE_BEFORE_MARK}: {left:?}");
        let file = left.into_iter().next().unwrap();
        assert!(
            !file.starts_with('.'),
            "{ARCHIVE_BEFORE_MARK}: the file is not named yet: {file}"
        );

        let server = site.serve(Some(next));
        let base = server.base.clone();
        let archives = client.get(&base, "/api/v1/audit/archives").await;
        assert_eq!(archives, json!([]), "{ARCHIVE_BEFORE_MARK}: recorded");
        let entries = client.get(&base, "/api/v1/audit?limit=1000").await;
        assert!(
            entries
                .as_array()
                .unwrap()
                .iter()
                .all(|e| e["archived"] == false),
            "{ARCHIVE_BEFORE_MARK}: entries marked without their archive: {entries:#}"
        );
        client
            .audit_verifies(&base, &format!("after {ARCHIVE_BEFORE_MARK}"))
            .await;

        let (status, archive) = client
            .call(
                &base,
                Method::POST,
                "/api/v1/audit/archives",
                Some(json!({"up_to_seq": up_to})),
            )
            .await;
        assert_eq!(status, 201, "archiving again: {archive}");
        assert_eq!(archive["first_seq"], 1, "{archive:#}");
        assert_eq!(archive["last_seq"], up_to, "{archive:#}");
        assert_eq!(
            archive["file"],
            file.as_str(),
            "the same range, the same file"
        );
        assert_eq!(files_in(&site.archive_dir()), BTreeSet::from([file]));
        let entries = client.get(&base, "/api/v1/audit?limit=1000").await;
        for entry in entries.as_array().unwrap() {
            let seq = entry["seq"].as_i64().unwrap();
            assert_eq!(entry["archived"], seq <= up_to, "entry {seq}: {entry:#}");
        }
        client
            .audit_verifies(
                &base,
                &format!("archived again after {ARCHIVE_BEFORE_MARK}"),
            )
            .await;
        server
    }

    /// Starts a backup on `server` (armed at `point`), which aborts; the
    /// next server (armed at `next`, if any) marks it failed and removes
    /// what it left. Returns that server.
    async fn backup_case(
        site: &Site,
        server: Server,
        client: &Client,
        point: &str,
        next: Option<&str>,
        seen: &mut BTreeSet<String>,
    ) -> Server {
        let answer = client
            .try_call(
                &server.base,
                Method::POST,
                "/api/v1/backups",
                Some(json!({})),
            )
            .await;
        if let Some((status, body)) = &answer {
            assert_eq!(*status, 202, "{point}: {body}");
        }
        aborted(server, point).await;
        let left = files_in(&site.backup_dir());

        let server = site.serve(next);
        let base = server.base.clone();
        // The one started here (by its id when the answer came back).
        let backups = client.get(&base, "/api/v1/backups").await;
        let new: Vec<&Value> = backups
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| !seen.contains(b["id"].as_str().unwrap()))
            .collect();
        assert_eq!(new.len(), 1, "{point}: {backups:#}");
        let backup = new[0];
        if let Some((_, started)) = &answer {
            assert_eq!(backup["id"], started["id"], "{point}: {backups:#}");
        }
        seen.insert(backup["id"].as_str().unwrap().to_owned());
        assert_eq!(backup["status"], "failed", "{point}: {backup:#}");
        assert!(
            backup["error"].as_str().unwrap().starts_with("interrupted"),
            "{point}: {backup:#}"
        );
        assert!(backup["finished_at"].is_string(), "{point}: {backup:#}");
        // Where the crash came: what it left on disk.
        let named = backup["file"].as_str().unwrap().to_owned();
        let partial = format!(".{named}.partial");
        let expected = if point == BACKUP_BEFORE_FINISH {
            &named
        } else {
            &partial
        };
        assert_eq!(
            left,
            BTreeSet::from([expected.clone()]),
            "{point}: the crash left"
        );
        // And the restart removed it.
        assert_eq!(
            files_in(&site.backup_dir()),
            BTreeSet::new(),
            "{point}: left after the restart"
        );
        server
    }

    /// The source installation through every archive and backup case;
    /// returns its last backup, whole, for the restores.
    async fn source() -> Made {
        let out = tempfile::tempdir().unwrap();
        let site = Site::new("bk-source").await;
        let init = init_data_dir_on(&site.data(), &site.db, site.hsm.as_ref());
        // Armed from the start: nothing before the archive crosses the point.
        let server = site.serve(Some(ARCHIVE_BEFORE_MARK));
        let http = reqwest::Client::new();
        let client = Client {
            http: http.clone(),
            token: dual_login(&http, &server.base, &init).await,
        };
        let custodian_keys = populate(&server.base, &client, out.path()).await;

        let server = archive_case(&site, server, &client, BACKUP_ROWS_AT).await;
        let mut seen = BTreeSet::new();
        let server = backup_case(
            &site,
            server,
            &client,
            BACKUP_ROWS_AT,
            Some(BACKUP_BEFORE_RENAME),
            &mut seen,
        )
        .await;
        let server = backup_case(
            &site,
            server,
            &client,
            BACKUP_BEFORE_RENAME,
            Some(BACKUP_BEFORE_FINISH),
            &mut seen,
        )
        .await;
        let server = backup_case(
            &site,
            server,
            &client,
            BACKUP_BEFORE_FINISH,
            None,
            &mut seen,
        )
        .await;

        // And then a backup succeeds: its file alone in the directory.
        let base = server.base.clone();
        let (status, started) = client
            .call(&base, Method::POST, "/api/v1/backups", Some(json!({})))
            .await;
        assert_eq!(status, 202, "{started}");
        let id = started["id"].as_str().unwrap().to_owned();
        let backup = client.wait_backup(&base, &id).await;
        assert_eq!(backup["status"], "succeeded", "{backup:#}");
        assert_eq!(backup["keys"], 1, "{backup:#}");
        let named = backup["file"].as_str().unwrap().to_owned();
        assert_eq!(
            files_in(&site.backup_dir()),
            BTreeSet::from([named.clone()])
        );
        let all = client.get(&base, "/api/v1/backups").await;
        let mut statuses: Vec<&str> = all
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["status"].as_str().unwrap())
            .collect();
        statuses.sort_unstable();
        assert_eq!(
            statuses,
            ["failed", "failed", "failed", "succeeded"],
            "{all:#}"
        );
        client.audit_verifies(&base, "after the backups").await;

        let file = out.path().join("backup.khbk");
        std::fs::copy(site.backup_dir().join(&named), &file).unwrap();
        let shares = client
            .get(&base, &format!("/api/v1/backups/{id}/shares"))
            .await;
        let mut share_files = Vec::new();
        for share in shares["shares"].as_array().unwrap() {
            let path = out
                .path()
                .join(format!("{}.share", share["custodian"].as_str().unwrap()));
            std::fs::write(&path, share["text"].as_str().unwrap()).unwrap();
            share_files.push(path);
        }
        assert_eq!(share_files.len(), 2);
        drop(server);
        Made {
            file,
            id,
            shares: share_files,
            custodian_keys,
            keys: 1,
            _dir: out,
        }
    }

    struct Ran {
        status: std::process::ExitStatus,
        out: String,
        err: String,
    }

    /// `keyhold backup restore` of `made` into `site`, aborting at
    /// `crash_at` when given.
    async fn restore(site: &Site, made: &Made, crash_at: Option<&str>) -> Ran {
        let mut command = Command::new(KEYHOLD);
        command
            .args(["backup", "restore", "--file"])
            .arg(&made.file)
            .arg("--data-dir")
            .arg(site.data())
            .args(["--log", "warn", "-o", "json"])
            .env_remove(CRASH_AT);
        for share in &made.shares {
            command.arg("--share").arg(share);
        }
        for key in &made.custodian_keys {
            command.arg("--custodian-key").arg(key);
        }
        if let Some(point) = crash_at {
            command.env(CRASH_AT, point);
        }
        if let Some(hsm) = &site.hsm {
            hsm.configure_command(&mut command);
        }
        use_database(&mut command, &site.db);
        tokio::task::spawn_blocking(move || {
            let out = command.stdin(Stdio::null()).output().unwrap();
            Ran {
                status: out.status,
                out: String::from_utf8(out.stdout).unwrap(),
                err: String::from_utf8(out.stderr).unwrap(),
            }
        })
        .await
        .unwrap()
    }

    /// A restore aborted at `point` leaves no installation; the same
    /// restore run again succeeds, and the restored server starts with the
    /// backup's keys, archive and a verifying audit log.
    async fn restore_case(made: &Made, point: &'static str) -> String {
        let site = Site::new("bk-restore").await;
        let ran = restore(&site, made, Some(point)).await;
        assert_eq!(
            ran.status.signal(),
            Some(SIGABRT),
            "{point}: the restore did not abort there: {:?}\n{}\n{}",
            ran.status,
            ran.err,
            ran.out
        );
        assert!(
            ran.err.contains(&format!(
                "crash point: aborting at {}",
                point.split(':').next().unwrap()
            )),
            "{point}: {}",
            ran.err
        );
        site.assert_empty(point).await;

        let ran = restore(&site, made, None).await;
        assert_eq!(
            ran.status.code(),
            Some(0),
            "{point}: the restore run again: {}\n{}",
            ran.err,
            ran.out
        );
        let report: Value = serde_json::from_str(&ran.out).unwrap();
        assert_eq!(report["backup_id"], made.id.as_str(), "{point}: {report:#}");
        assert_eq!(report["keys"], made.keys, "{point}: {report:#}");
        assert_eq!(report["credentials"], 1, "{point}: {report:#}");
        assert_eq!(report["archives"], 1, "{point}: {report:#}");

        let server = site.serve(None);
        let base = server.base.clone();
        let client = login_again(&reqwest::Client::new(), &base).await;
        client
            .audit_verifies(&base, &format!("restored after {point}"))
            .await;
        let keys = client.get(&base, "/api/v1/keys").await;
        assert_eq!(
            keys.as_array().unwrap().len(),
            made.keys,
            "{point}: {keys:#}"
        );
        let archives = client.get(&base, "/api/v1/audit/archives").await;
        assert_eq!(
            archives.as_array().unwrap().len(),
            1,
            "{point}: {archives:#}"
        );
        // One restore recorded: the interrupted one left no entry.
        let entries = client.get(&base, "/api/v1/audit?limit=1000").await;
        let restores = entries
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["summary"] == format!("Restored from backup {}", made.id))
            .count();
        assert_eq!(restores, 1, "{point}: {entries:#}");
        let itself = client
            .get(&base, &format!("/api/v1/backups/{}", made.id))
            .await;
        assert_eq!(itself["status"], "succeeded", "{point}: {itself:#}");
        format!("{point}: aborted, nothing installed; restored again, audit verifies")
    }

    /// Every backup, archive and restore crash point: see the module's
    /// comment.
    #[tokio::test]
    async fn backups_archives_and_restores_cut_off_by_a_crash_leave_nothing_half_done() {
        let made = source().await;
        // Each into an installation of its own, side by side.
        let outcomes = tokio::join!(
            restore_case(&made, RESTORE_AFTER_KEYSTORE),
            restore_case(&made, RESTORE_ROWS_AT),
            restore_case(&made, RESTORE_BEFORE_COMMIT),
        );
        eprintln!("{}\n{}\n{}", outcomes.0, outcomes.1, outcomes.2);
    }
}
