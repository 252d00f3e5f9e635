//! A rotation (or synchronization) killed with SIGKILL on either side of
//! every commit it makes resumes after a restart, and AWS ends up exactly as
//! if nothing happened: one KMS key per rotation, the alias on it, the
//! material imported, keyhold's records matching.
//!
//! The server binary is built with the `crash-points` feature: with
//! KEYHOLD_PAUSE_AT=<commit>:<before|after> it stops at that point (before =
//! after the outside effect, before its commit) and writes KEYHOLD_PAUSE_FILE,
//! and the test kills the process there. The points are the table
//! `keyhold_server::crash_points::CRASH_POINTS`, which these tests iterate.

#[cfg(not(feature = "crash-points"))]
#[test]
fn crash_points_are_compiled_in() {
    panic!(
        "the resume tests need the crash-points feature: run ./scripts/test (cargo nextest run --all-features)"
    );
}

#[cfg(feature = "crash-points")]
mod killed {
    use std::path::Path;
    use std::process::{Child, Command, Stdio};
    use std::time::Duration;

    use serde_json::{Value, json};

    use keyhold_core::job::Checkpoint;
    use keyhold_server::crash_points::{CRASH_POINTS, CrashJob, CrashPoint};
    use keyhold_store::testing::TestDatabase;

    use crate::helpers::{
        Hsm, console_csv, init_data_dir_on, spawn_listening, test_database, use_database,
    };
    use crate::kms::{Kms, endpoint};

    const KEYHOLD: &str = env!("CARGO_BIN_EXE_keyhold");

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

    fn serve(
        data_dir: &Path,
        db: &TestDatabase,
        hsm: Option<&Hsm>,
        node: &str,
        pause: Option<(&str, &Path)>,
    ) -> Server {
        serve_traced(data_dir, db, hsm, node, pause, None)
    }

    /// A token of the test's own, in a token directory of its own under
    /// `dir`, when the suite runs with the PKCS#11 keystore
    /// ([`Hsm::isolated`]: these tests run many processes side by side).
    fn own_token(prefix: &str, dir: &Path) -> Option<Hsm> {
        Hsm::for_suite().map(|_| Hsm::isolated(prefix, dir))
    }

    /// `keyhold serve`, optionally stopping at a crash point and tracing
    /// every point its jobs cross.
    fn serve_traced(
        data_dir: &Path,
        db: &TestDatabase,
        hsm: Option<&Hsm>,
        node: &str,
        pause: Option<(&str, &Path)>,
        trace: Option<&Path>,
    ) -> Server {
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
            ])
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--node-id", node, "--scheduler-tick-ms", "200"])
            .env_remove("KEYHOLD_PAUSE_AT")
            .env_remove("KEYHOLD_CRASH_TRACE")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(hsm) = hsm {
            hsm.configure_command(&mut command);
        }
        use_database(&mut command, db);
        if let Some((point, file)) = pause {
            command
                .env("KEYHOLD_PAUSE_AT", point)
                .env("KEYHOLD_PAUSE_FILE", file);
        }
        if let Some(trace) = trace {
            command.env("KEYHOLD_CRASH_TRACE", trace);
        }
        let (child, base) = spawn_listening(&mut command);
        Server { child, base }
    }

    struct Client {
        http: reqwest::Client,
        token: Option<String>,
    }

    impl Client {
        async fn call(
            &self,
            base: &str,
            method: reqwest::Method,
            path: &str,
            body: serde_json::Value,
        ) -> (u16, serde_json::Value) {
            let mut req = self
                .http
                .request(method, format!("{base}{path}"))
                .json(&body);
            if let Some(t) = &self.token {
                req = req.bearer_auth(t);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap();
            (
                status,
                serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
            )
        }
    }

    /// Both administrators set their passwords and log in to one session.
    async fn dual_login(client: &mut Client, base: &str, init: &serde_json::Value) {
        for (i, name) in ["Admin1", "Admin2"].iter().enumerate() {
            let current = init["identities"][i]["password"].as_str().unwrap();
            let new = format!("{name}-resume-pass");
            let (s, b) = client
                .call(
                    base,
                    reqwest::Method::POST,
                    "/api/v1/password",
                    json!({"user": name, "current_password": current, "new_password": new}),
                )
                .await;
            assert_eq!(s, 204, "{b}");
            let (s, b) = client
                .call(
                    base,
                    reqwest::Method::POST,
                    "/api/v1/session/login",
                    json!({"user": name, "password": new}),
                )
                .await;
            assert_eq!(s, 200, "{b}");
            if let Some(t) = b["token"].as_str() {
                client.token = Some(t.to_owned());
            }
        }
    }

    async fn wait_for(file: &Path) {
        for _ in 0..300 {
            if file.exists() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the server never reached the pause point");
    }

    async fn wait_job(client: &Client, base: &str, id: &str) -> serde_json::Value {
        for _ in 0..1200 {
            let (_, job) = client
                .call(
                    base,
                    reqwest::Method::GET,
                    &format!("/api/v1/jobs/{id}"),
                    json!(null),
                )
                .await;
            if matches!(
                job["status"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            ) {
                return job;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("job {id} did not finish within 120 s of the restart");
    }

    /// The region of the crash cases' groups, which no other test uses:
    /// resuming in CreateKey's window finds the key by reading the tags of
    /// every key in the region, and in the region the rest of the suite
    /// shares that grows with all its keys.
    const CRASH_REGION: &str = "ap-northeast-3";

    /// A group with one undisturbed rotation behind it, on a server that
    /// was then stopped: what every crash case starts from.
    struct Scene {
        dir: tempfile::TempDir,
        db: TestDatabase,
        hsm: Option<Hsm>,
        client: Client,
        group: String,
        /// The KMS key of the undisturbed rotation.
        first_key: String,
        /// The KMS peer the group's credential reaches.
        endpoint: String,
    }

    impl Scene {
        fn data(&self) -> std::path::PathBuf {
            self.dir.path().join("data")
        }

        /// `in_place`: a `new_material` group on `endpoint`, a KMS peer
        /// that rotates imported material.
        async fn new(prefix: &str, trace: Option<&Path>, in_place: Option<&str>) -> (Self, Server) {
            let endpoint = in_place.map_or_else(endpoint, str::to_owned);
            let in_place = in_place.is_some();
            let dir = tempfile::tempdir().unwrap();
            let data = dir.path().join("data");
            let db = test_database().await;
            let hsm = own_token(prefix, dir.path());
            let init = init_data_dir_on(&data, &db, hsm.as_ref());
            let group = crate::helpers::unique(prefix);
            let mut client = Client {
                http: reqwest::Client::new(),
                token: None,
            };
            let server = serve_traced(&data, &db, hsm.as_ref(), "node-a", None, trace);
            let base = server.base.clone();
            dual_login(&mut client, &base, &init).await;
            let (s, b) = client
                .call(
                    &base,
                    reqwest::Method::POST,
                    "/api/v1/credentials",
                    json!({"name": "aws", "csv": console_csv(), "endpoint": endpoint}),
                )
                .await;
            assert_eq!(s, 201, "{b}");
            let mut body = crate::helpers::group_body(&group, "aws");
            body["region"] = json!(CRASH_REGION);
            if in_place {
                body["rotation_strategy"] = json!("new_material");
                body["disable_after_rotate"] = json!(false);
            }
            let (s, b) = client
                .call(&base, reqwest::Method::POST, "/api/v1/groups", body)
                .await;
            assert_eq!(s, 201, "{b}");
            let job = start_job(&client, &base, CrashJob::Rotate, &group, "").await;
            let job = wait_job(&client, &base, &job).await;
            assert_eq!(job["status"], "succeeded", "{job:#}");
            let first_key = job["kms_key_id"].as_str().unwrap().to_owned();
            let scene = Self {
                dir,
                db,
                hsm,
                client,
                group,
                first_key,
                endpoint,
            };
            (scene, server)
        }
    }

    /// Starts the job a crash point belongs to: a rotation of the group, or
    /// a synchronization of `key` with every option on (so it crosses every
    /// commit a synchronization has). Returns the job id.
    async fn start_job(
        client: &Client,
        base: &str,
        job: CrashJob,
        group: &str,
        key: &str,
    ) -> String {
        let (path, body) = match job {
            CrashJob::Rotate | CrashJob::RotateInPlace => {
                (format!("/api/v1/groups/{group}/rotate"), json!({}))
            }
            CrashJob::Synchronize => (
                format!("/api/v1/keys/{key}/sync"),
                json!({"update_policy": true, "import_material": true, "delete_material": true}),
            ),
            CrashJob::CheckDrift => (format!("/api/v1/drift/groups/{group}/check"), json!(null)),
            CrashJob::Reconcile => {
                let (s, plan) = client
                    .call(
                        base,
                        reqwest::Method::GET,
                        &format!("/api/v1/drift/groups/{group}/plan"),
                        json!(null),
                    )
                    .await;
                assert_eq!(s, 200, "{plan}");
                (
                    format!("/api/v1/drift/groups/{group}/reconcile"),
                    json!({"plan": plan["digest"]}),
                )
            }
        };
        let (s, job) = client.call(base, reqwest::Method::POST, &path, body).await;
        assert_eq!(s, 202, "{job}");
        job["id"].as_str().unwrap().to_owned()
    }

    /// KMS's `PendingImport` as keyhold's views spell it, `pending_import`.
    fn snake(aws: &str) -> String {
        let mut out = String::new();
        for (i, c) in aws.chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        }
        out
    }

    /// Starts the job of `point` on a server armed to stop there, kills
    /// the process with SIGKILL once it has, and starts a fresh one on the
    /// same data; returns it with the job once finished (it must have
    /// succeeded), and whether the kill fell inside the job (it had been
    /// marked running and had not committed its end), which its messages
    /// must then say it resumed from.
    async fn killed_and_resumed(
        scene: &Scene,
        point: CrashPoint,
        key: &str,
    ) -> (Server, Value, bool) {
        let name = point.name();
        let client = &scene.client;
        let paused = scene.dir.path().join("paused");
        let mut server = serve(
            &scene.data(),
            &scene.db,
            scene.hsm.as_ref(),
            "node-a",
            Some((&name, &paused)),
        );
        let job_id = start_job(client, &server.base, point.job, &scene.group, key).await;
        wait_for(&paused).await;
        server.child.kill().unwrap(); // SIGKILL: no shutdown hook runs
        server.child.wait().unwrap();
        drop(server);

        let server = serve(&scene.data(), &scene.db, scene.hsm.as_ref(), "node-a", None);
        let job = wait_job(client, &server.base, &job_id).await;
        assert_eq!(job["status"], "succeeded", "killed at {name}: {job:#}");
        let last = CRASH_POINTS.iter().rfind(|p| p.job == point.job).unwrap();
        let inside = (point.committed || point.at != Checkpoint::Start) && point != *last;
        let messages = job["messages"].to_string();
        assert_eq!(
            messages.contains("Resumed after an interruption"),
            inside,
            "killed at {name}: {messages}"
        );
        (server, job, inside)
    }

    /// One crash case: the job of `point` is started on a server armed to
    /// stop there, the process is killed with SIGKILL, a fresh one is
    /// started on the same data, and once the job has finished, AWS (read
    /// directly) must agree with keyhold's records. Returns what held.
    async fn kill_at(point: CrashPoint) -> String {
        if matches!(point.job, CrashJob::CheckDrift | CrashJob::Reconcile) {
            return drift_killed_at(point).await;
        }
        let name = point.name();
        let in_place = point.job == CrashJob::RotateInPlace;
        // The crash cases in place run against the faithful peer: LocalStack
        // 4.11 refuses to re-import a material that is pending rotation, which
        // AWS documents as allowed and keyhold's resumption relies on.
        let peer = in_place.then(crate::in_place::shared_faithful_peer);
        let (scene, server) = Scene::new("crash", None, peer).await;
        let client = &scene.client;
        let group = scene.group.clone();
        let kms = Kms::in_region(&scene.endpoint, CRASH_REGION).await;
        let alias = format!("alias/{group}");
        // Written before the crash, readable after it when the material
        // was re-imported (synchronize) rather than a new key made.
        let ciphertext = kms.encrypt(&alias, b"before the crash").await;
        drop(server);
        let (server, job, inside) = killed_and_resumed(&scene, point, &scene.first_key).await;
        let base = &server.base;

        // keyhold's records of the group.
        let (s, keys) = client
            .call(
                base,
                reqwest::Method::GET,
                &format!("/api/v1/keys?group={group}"),
                json!(null),
            )
            .await;
        assert_eq!(s, 200, "{keys}");
        let mut keys = keys.as_array().unwrap().clone();
        keys.sort_by_key(|k| k["version"].as_u64().unwrap());
        let expected = match point.job {
            CrashJob::Rotate | CrashJob::RotateInPlace => 2,
            CrashJob::Synchronize | CrashJob::CheckDrift | CrashJob::Reconcile => 1,
        };
        assert_eq!(keys.len(), expected, "killed at {name}: {keys:#?}");
        if in_place {
            let held =
                in_place_recovered(&scene, base, &kms, &job, &keys, &ciphertext, &name).await;
            return format!("{held}{}", if inside { ", job resumed" } else { "" });
        }
        let newest = keys.last().unwrap()["name"].as_str().unwrap().to_owned();
        assert_eq!(
            job["kms_key_id"].as_str(),
            Some(newest.as_str()),
            "killed at {name}"
        );
        let (_, g) = client
            .call(
                base,
                reqwest::Method::GET,
                &format!("/api/v1/groups/{group}"),
                json!(null),
            )
            .await;
        assert_eq!(
            g["active_key_id"].as_str(),
            Some(newest.as_str()),
            "killed at {name}: {g:#}"
        );

        // AWS, read directly: the same keys, no orphan.
        let mut in_kms = kms.keys_of_group(&group).await;
        in_kms.sort();
        let mut recorded: Vec<String> = keys
            .iter()
            .map(|k| k["name"].as_str().unwrap().to_owned())
            .collect();
        recorded.sort();
        assert_eq!(
            in_kms, recorded,
            "killed at {name}: KMS keys of the group == keyhold's"
        );
        assert_eq!(
            kms.alias_target(&alias).await.as_deref(),
            Some(newest.as_str()),
            "killed at {name}: the alias on the newest key"
        );
        // Nothing half-imported, and keyhold's state is KMS's.
        let mut states = Vec::new();
        for key in &keys {
            let id = key["name"].as_str().unwrap();
            let state = kms.state(id).await;
            assert_ne!(
                state, "PendingImport",
                "killed at {name}: {id} half-imported"
            );
            assert_eq!(
                snake(&state),
                key["state"],
                "killed at {name}: state of {id}"
            );
            states.push(state);
        }
        let expected_states = match point.job {
            CrashJob::Rotate => vec!["Disabled", "Enabled"],
            CrashJob::RotateInPlace
            | CrashJob::Synchronize
            | CrashJob::CheckDrift
            | CrashJob::Reconcile => vec!["Enabled"],
        };
        assert_eq!(states, expected_states, "killed at {name}");
        // The newest key works; after a synchronization, with the material
        // it had before.
        let fresh = kms.encrypt(&alias, b"after the crash").await;
        assert_eq!(kms.decrypt(&fresh).await.unwrap(), b"after the crash");
        if point.job == CrashJob::Synchronize {
            assert_eq!(
                kms.decrypt(&ciphertext).await.unwrap(),
                b"before the crash",
                "killed at {name}"
            );
        }
        audit_chain_verifies(client, base, &name).await;
        format!(
            "{} KMS key(s) ({}), alias on the newest, audit chain verifies{}",
            states.len(),
            states.join(", "),
            if inside { ", job resumed" } else { "" }
        )
    }

    /// The audit chain, after the case, verifies end to end.
    async fn audit_chain_verifies(client: &Client, base: &str, name: &str) {
        let (_, verify) = client
            .call(
                base,
                reqwest::Method::GET,
                "/api/v1/audit/verify",
                json!(null),
            )
            .await;
        assert_eq!(verify["ok"], true, "killed at {name}: {verify}");
    }

    /// Deletes the group's alias behind keyhold's back (as a console user
    /// would): the drift the drift crash cases find and repair.
    async fn delete_alias(kms: &Kms, group: &str) {
        kms.client
            .delete_alias()
            .alias_name(format!("alias/{group}"))
            .send()
            .await
            .unwrap();
    }

    /// The group's open drift findings, as `(kind, subject)`.
    async fn open_findings(client: &Client, base: &str, group: &str) -> Vec<(String, String)> {
        let (s, found) = client
            .call(
                base,
                reqwest::Method::GET,
                &format!("/api/v1/drift/findings?group={group}"),
                json!(null),
            )
            .await;
        assert_eq!(s, 200, "{found}");
        found
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["kind"].as_str().unwrap().to_owned(),
                    f["subject"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    /// How many audit entries contain `text`.
    async fn audited(client: &Client, base: &str, text: &str) -> usize {
        let (s, entries) = client
            .call(
                base,
                reqwest::Method::GET,
                &format!("/api/v1/audit?limit=1000&text={}", urlencoding(text)),
                json!(null),
            )
            .await;
        assert_eq!(s, 200, "{entries}");
        entries
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["summary"].as_str().is_some_and(|s| s.contains(text)))
            .count()
    }

    fn urlencoding(text: &str) -> String {
        text.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    }

    /// A drift check or a reconciliation killed at `point`: the group's
    /// alias was deleted in AWS; after the restart the check records that
    /// once (one finding, one entry), and the reconciliation points the
    /// alias back once and clears the finding.
    async fn drift_killed_at(point: CrashPoint) -> String {
        let name = point.name();
        let (scene, server) = Scene::new("crash", None, None).await;
        let client = &scene.client;
        let group = scene.group.clone();
        let kms = Kms::in_region(&scene.endpoint, CRASH_REGION).await;
        let alias = format!("alias/{group}");
        delete_alias(&kms, &group).await;
        let missing = vec![("alias_missing".to_owned(), alias.clone())];
        if point.job == CrashJob::Reconcile {
            let check = start_job(client, &server.base, CrashJob::CheckDrift, &group, "").await;
            let check = wait_job(client, &server.base, &check).await;
            assert_eq!(check["status"], "succeeded", "{check:#}");
            assert_eq!(open_findings(client, &server.base, &group).await, missing);
        }
        drop(server);
        let (server, _, inside) = killed_and_resumed(&scene, point, "").await;
        let base = &server.base;
        let found = format!("Drift found: alias missing on {alias}");
        assert_eq!(audited(client, base, &found).await, 1, "killed at {name}");
        let held = if point.job == CrashJob::CheckDrift {
            assert_eq!(
                open_findings(client, base, &group).await,
                missing,
                "killed at {name}"
            );
            assert_eq!(
                kms.alias_target(&alias).await,
                None,
                "killed at {name}: a check writes nothing"
            );
            "the finding recorded once, with one audit entry; AWS untouched"
        } else {
            assert_eq!(
                kms.alias_target(&alias).await.as_deref(),
                Some(scene.first_key.as_str()),
                "killed at {name}: the alias back on the group's key"
            );
            assert_eq!(
                open_findings(client, base, &group).await,
                Vec::new(),
                "killed at {name}"
            );
            assert_eq!(
                audited(
                    client,
                    base,
                    &format!("Repaired drift of HSM protected key group {group}")
                )
                .await,
                1,
                "killed at {name}"
            );
            "the alias pointed back once, the finding cleared, one repair entry"
        };
        audit_chain_verifies(client, base, &name).await;
        format!(
            "{held}, audit chain verifies{}",
            if inside { ", job resumed" } else { "" }
        )
    }

    /// What a rotation in place must leave after a kill anywhere in it: one
    /// KMS key (no second), the alias still on it, the new version's
    /// material current in AWS and the first one non-current, what was
    /// encrypted before still decrypting, and the audit chain intact.
    async fn in_place_recovered(
        scene: &Scene,
        base: &str,
        kms: &Kms,
        job: &Value,
        keys: &[Value],
        ciphertext: &[u8],
        name: &str,
    ) -> String {
        let first = scene.first_key.as_str();
        assert_eq!(job["kms_key_id"].as_str(), Some(first), "killed at {name}");
        let names: Vec<&str> = keys.iter().map(|k| k["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            [first.to_owned(), format!("{first} v2")],
            "killed at {name}"
        );
        assert_eq!(
            kms.keys_of_group(&scene.group).await,
            vec![first.to_owned()],
            "killed at {name}: one KMS key, none created"
        );
        let alias = format!("alias/{}", scene.group);
        // The alias still names the KMS key (DescribeKey resolves it).
        assert_eq!(
            kms.describe(&alias).await.key_id(),
            first,
            "killed at {name}"
        );
        let meta = kms.describe(first).await;
        assert_eq!(
            meta.current_key_material_id(),
            keys[1]["kms_material_id"].as_str(),
            "killed at {name}: AWS encrypts with the new version's material"
        );
        assert_eq!(
            [
                keys[0]["material_state"].as_str(),
                keys[1]["material_state"].as_str()
            ],
            [Some("non_current"), Some("current")],
            "killed at {name}"
        );
        assert_eq!(kms.state(first).await, "Enabled", "killed at {name}");
        assert_eq!(
            kms.decrypt(ciphertext).await.unwrap(),
            b"before the crash",
            "killed at {name}: the first material still decrypts"
        );
        let fresh = kms.encrypt(&alias, b"after the crash").await;
        assert_eq!(kms.decrypt(&fresh).await.unwrap(), b"after the crash");
        audit_chain_verifies(&scene.client, base, name).await;
        "1 KMS key, rotated in place (its first material non-current, still decrypting), audit chain verifies".to_owned()
    }

    /// How many crash cases run at once: each is a few processes waiting on
    /// LocalStack, so some overlap pays; more would only queue on 2 cores.
    const CONCURRENT_CASES: usize = 4;

    /// Every point of the table, each killed, restarted and checked. One
    /// test, so the report counts every point; a failed case does not stop
    /// the others, and the test fails listing all that failed. Each case runs
    /// on a thread and runtime of its own, a few at a time.
    #[test]
    fn every_crash_point_is_recovered() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::{Arc, Mutex};

        type Outcome = Result<(String, Duration), String>;
        let next = Arc::new(AtomicUsize::new(0));
        let outcomes: Arc<Mutex<Vec<Option<Outcome>>>> =
            Arc::new(Mutex::new(vec![None; CRASH_POINTS.len()]));
        let workers: Vec<_> = (0..CONCURRENT_CASES)
            .map(|_| {
                let next = next.clone();
                let outcomes = outcomes.clone();
                std::thread::spawn(move || {
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let Some(&point) = CRASH_POINTS.get(i) else {
                            return;
                        };
                        let case = std::thread::spawn(move || {
                            let runtime = tokio::runtime::Builder::new_current_thread()
                                .enable_all()
                                .build()
                                .unwrap();
                            let started = std::time::Instant::now();
                            let held = runtime.block_on(kill_at(point));
                            (held, started.elapsed())
                        });
                        let outcome = case.join().map_err(|panic| {
                            panic
                                .downcast_ref::<String>()
                                .cloned()
                                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                                .unwrap_or_else(|| "the case panicked".to_owned())
                        });
                        outcomes.lock().unwrap()[i] = Some(outcome);
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().unwrap();
        }
        let outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
        let mut rows = Vec::new();
        let mut failed = Vec::new();
        for (point, outcome) in CRASH_POINTS.iter().zip(outcomes) {
            let job = match point.job {
                CrashJob::Rotate => "rotate",
                CrashJob::RotateInPlace => "rotate in place",
                CrashJob::Synchronize => "synchronize",
                CrashJob::CheckDrift => "drift check",
                CrashJob::Reconcile => "reconcile",
            };
            match outcome.unwrap() {
                Ok((held, took)) => rows.push(format!(
                    "| {job} | `{}` | recovered: {held} | {:.1} s |",
                    point.name(),
                    took.as_secs_f64()
                )),
                Err(why) => {
                    let first_line = why.lines().next().unwrap_or_default().replace('|', "\\|");
                    rows.push(format!(
                        "| {job} | `{}` | NOT recovered: {first_line} | |",
                        point.name()
                    ));
                    failed.push(format!("{job} {}: {why}", point.name()));
                }
            }
        }
        let total = CRASH_POINTS.len();
        let recovered = total - failed.len();
        crate::report::section(
            10,
            "Crash at every step",
            &format!(
                "Every point of `keyhold_server::crash_points::CRASH_POINTS` (both sides of every \
                 store commit a rotation, a rotation in place, a synchronization, a drift check or a reconciliation makes): the real `keyhold serve` \
                 process is stopped there and killed with SIGKILL, a new process is started on \
                 the same data, and the job finishes. Then AWS KMS, read through its API, must \
                 agree with keyhold: the group's tagged KMS keys are exactly keyhold's keys (no \
                 orphan), the alias is on the newest key, no key is PendingImport and every \
                 key's state is the one keyhold records, the newest key encrypts (and after a \
                 synchronization, decrypts what was encrypted before the crash), and the audit \
                 chain verifies.\n\n\
                 **{recovered} of {total} crash points recovered.**\n\n\
                 | job | crash point | outcome | time |\n|---|---|---|---|\n{}\n",
                rows.join("\n")
            ),
        );
        assert!(
            failed.is_empty(),
            "{} of {total} crash points not recovered:\n{}",
            failed.len(),
            failed.join("\n\n")
        );
    }

    /// The table is complete: an undisturbed rotation and synchronization
    /// cross exactly the points it lists, in its order. A commit added to a
    /// job without a row in the table fails here.
    #[tokio::test(flavor = "multi_thread")]
    async fn the_crash_point_table_is_every_commit_a_job_makes() {
        let trace_dir = tempfile::tempdir().unwrap();
        let trace = trace_dir.path().join("trace");
        let (scene, server) = Scene::new("trace", Some(trace.as_path()), None).await;
        let client = &scene.client;
        let rotation = start_job(client, &server.base, CrashJob::Rotate, &scene.group, "").await;
        let job = wait_job(client, &server.base, &rotation).await;
        assert_eq!(job["status"], "succeeded", "{job:#}");
        let key = job["kms_key_id"].as_str().unwrap().to_owned();
        let sync = start_job(
            client,
            &server.base,
            CrashJob::Synchronize,
            &scene.group,
            &key,
        )
        .await;
        let job = wait_job(client, &server.base, &sync).await;
        assert_eq!(job["status"], "succeeded", "{job:#}");

        let text = std::fs::read_to_string(&trace).unwrap();
        let crossed = |id: &str| -> Vec<String> {
            text.lines()
                .filter_map(|l| l.strip_prefix(id))
                .map(|p| p.trim().to_owned())
                .collect()
        };
        let listed = |job: CrashJob| -> Vec<String> {
            CRASH_POINTS
                .iter()
                .filter(|p| p.job == job)
                .map(CrashPoint::name)
                .collect()
        };
        assert_eq!(crossed(&rotation), listed(CrashJob::Rotate), "rotation");
        assert_eq!(
            crossed(&sync),
            listed(CrashJob::Synchronize),
            "synchronization"
        );
        // A drift check that finds the alias gone, and its reconciliation.
        let kms = Kms::in_region(&scene.endpoint, CRASH_REGION).await;
        delete_alias(&kms, &scene.group).await;
        let check = start_job(client, &server.base, CrashJob::CheckDrift, &scene.group, "").await;
        let job = wait_job(client, &server.base, &check).await;
        assert_eq!(job["status"], "succeeded", "{job:#}");
        let reconcile =
            start_job(client, &server.base, CrashJob::Reconcile, &scene.group, "").await;
        let job = wait_job(client, &server.base, &reconcile).await;
        assert_eq!(job["status"], "succeeded", "{job:#}");
        let text = std::fs::read_to_string(&trace).unwrap();
        let crossed = |id: &str| -> Vec<String> {
            text.lines()
                .filter_map(|l| l.strip_prefix(id))
                .map(|p| p.trim().to_owned())
                .collect()
        };
        assert_eq!(crossed(&check), listed(CrashJob::CheckDrift), "drift check");
        assert_eq!(
            crossed(&reconcile),
            listed(CrashJob::Reconcile),
            "reconciliation"
        );
        drop(server);

        // A rotation in place, on a new_material group with a KMS key.
        let trace = trace_dir.path().join("trace-in-place");
        let rotation_peer = crate::in_place::rotation_peer();
        let (scene, server) =
            Scene::new("trace", Some(trace.as_path()), Some(&rotation_peer)).await;
        let in_place = start_job(
            &scene.client,
            &server.base,
            CrashJob::RotateInPlace,
            &scene.group,
            "",
        )
        .await;
        let job = wait_job(&scene.client, &server.base, &in_place).await;
        assert_eq!(job["status"], "succeeded", "{job:#}");
        let text = std::fs::read_to_string(&trace).unwrap();
        let crossed: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix(in_place.as_str()))
            .map(|p| p.trim().to_owned())
            .collect();
        assert_eq!(
            crossed,
            listed(CrashJob::RotateInPlace),
            "rotation in place"
        );
    }

    /// A cluster of three nodes on one database: the rotator is killed
    /// (SIGKILL) in the middle of a rotation; another node takes the lease
    /// once it expires, with a higher fencing token, and finishes the job:
    /// one new KMS key, the alias on it, nothing orphaned.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_rotator_killed_mid_rotation_is_replaced_by_another_node() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let paused = dir.path().join("paused");
        let db = test_database().await;
        let hsm = own_token("failover", dir.path());
        let init = init_data_dir_on(&data, &db, hsm.as_ref());

        let a = serve(
            &data,
            &db,
            hsm.as_ref(),
            "node-a",
            Some(("create_kms_key:after", &paused)),
        );
        let mut client = Client {
            http: reqwest::Client::new(),
            token: None,
        };
        dual_login(&mut client, &a.base, &init).await;
        let config = |base: String| {
            let client = &client;
            async move {
                client
                    .call(&base, reqwest::Method::GET, "/api/v1/config", json!(null))
                    .await
                    .1
            }
        };
        for _ in 0..100 {
            if config(a.base.clone()).await["cluster"]["role"] == "rotator" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(config(a.base.clone()).await["cluster"]["role"], "rotator");
        let b = serve(&data, &db, hsm.as_ref(), "node-b", None);
        let c = serve(&data, &db, hsm.as_ref(), "node-c", None);

        let group = format!(
            "failover-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..10]
        );
        let (s, r) = client
            .call(
                &b.base,
                reqwest::Method::POST,
                "/api/v1/credentials",
                json!({"name": "aws", "csv": console_csv(), "endpoint": endpoint()}),
            )
            .await;
        assert_eq!(s, 201, "{r}");
        let (s, r) = client
            .call(
                &b.base,
                reqwest::Method::POST,
                "/api/v1/groups",
                crate::helpers::group_body(&group, "aws"),
            )
            .await;
        assert_eq!(s, 201, "{r}");
        // Accepted by node-b, executed by the rotator node-a, which stops
        // right after recording the KMS key it created: the import, the
        // alias and the activation are left to the node that takes over.
        let (s, job) = client
            .call(
                &b.base,
                reqwest::Method::POST,
                &format!("/api/v1/groups/{group}/rotate"),
                json!({}),
            )
            .await;
        assert_eq!(s, 202, "{job}");
        let id = job["id"].as_str().unwrap().to_owned();
        wait_for(&paused).await;
        let mut a = a;
        a.child.kill().unwrap(); // SIGKILL: the lease is not given back
        a.child.wait().unwrap();
        drop(a);

        let job = wait_job(&client, &b.base, &id).await;
        assert_eq!(job["status"], "succeeded", "{job:#}");
        assert!(
            job["messages"]
                .to_string()
                .contains("Resumed after an interruption"),
            "{job:#}"
        );
        // One of the two survivors took over, under the next token. node-c
        // shows the lease as it read it at its last tick, which may have come
        // just before the takeover: its next one (100 ms) sees it.
        let mut cluster = Value::Null;
        for _ in 0..50 {
            cluster = config(c.base.clone()).await["cluster"].clone();
            if cluster["lease_token"] == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let holder = cluster["lease_holder"].as_str().unwrap_or_default();
        assert!(["node-b", "node-c"].contains(&holder), "{cluster:#}");
        assert_eq!(cluster["lease_token"], 2, "{cluster:#}");
        assert_eq!(cluster["nodes"].as_array().unwrap().len(), 3, "{cluster:#}");
        let kms = Kms::connect().await;
        let active = job["kms_key_id"].as_str().unwrap();
        assert_eq!(
            kms.keys_of_group(&group).await,
            vec![active.to_owned()],
            "no orphan, no second key"
        );
        assert_eq!(
            kms.alias_target(&format!("alias/{group}")).await.as_deref(),
            Some(active)
        );
        let ciphertext = kms
            .encrypt(&format!("alias/{group}"), b"after the failover")
            .await;
        assert_eq!(
            kms.decrypt(&ciphertext).await.unwrap(),
            b"after the failover"
        );
        let (_, verify) = client
            .call(
                &b.base,
                reqwest::Method::GET,
                "/api/v1/audit/verify",
                json!(null),
            )
            .await;
        assert_eq!(verify["ok"], true, "{verify}");
    }
}
