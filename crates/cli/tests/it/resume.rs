//! A rotation (or synchronization) killed with SIGKILL at every step boundary
//! resumes after a restart, and AWS ends up exactly as if nothing happened:
//! one KMS key per rotation, the alias on it, the material imported.
//!
//! The server binary is built with the `crash-points` feature: with
//! KEYHOLD_PAUSE_AT=<step>:<before|after> it stops at that point (before =
//! after the step's AWS call, before its commit) and writes KEYHOLD_PAUSE_FILE,
//! and the test kills the process there.

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

    use serde_json::json;

    use keyhold_store::testing::TestDatabase;

    use crate::helpers::{console_csv, spawn_listening, test_database, use_database};
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
        node: &str,
        pause: Option<(&str, &Path)>,
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
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(hsm) = crate::helpers::Hsm::for_suite() {
            hsm.configure_command(&mut command);
        }
        use_database(&mut command, db);
        if let Some((point, file)) = pause {
            command
                .env("KEYHOLD_PAUSE_AT", point)
                .env("KEYHOLD_PAUSE_FILE", file);
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

    /// `keyhold init` on a fresh data directory; its JSON holds the one-time passwords.
    fn init_data_dir(data: &Path, db: &TestDatabase) -> serde_json::Value {
        let mut init = Command::new(KEYHOLD);
        init.args(["init", "--output", "json", "--data-dir"])
            .arg(data);
        if let Some(hsm) = crate::helpers::Hsm::for_suite() {
            hsm.configure_command(&mut init);
        }
        use_database(&mut init, db);
        let init = init.output().unwrap();
        assert!(
            init.status.success(),
            "{}",
            String::from_utf8_lossy(&init.stderr)
        );
        serde_json::from_slice(&init.stdout).unwrap()
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
        for _ in 0..600 {
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
        panic!("job {id} did not finish after the restart");
    }

    /// Sets up a group, optionally rotates it once undisturbed, then starts
    /// `action` with the server set to stop at `point`, kills it there,
    /// restarts it, and returns what is needed to check the outcome.
    async fn kill_at(point: &str, sync: bool) {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let paused = dir.path().join("paused");
        let db = test_database().await;
        let init = init_data_dir(&data, &db);

        let group = format!(
            "resume-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..10]
        );
        let mut client = Client {
            http: reqwest::Client::new(),
            token: None,
        };
        let mut server = serve(
            &data,
            &db,
            "node-a",
            if sync { None } else { Some((point, &paused)) },
        );
        let base = server.base.clone();
        dual_login(&mut client, &base, &init).await;
        let (s, b) = client
            .call(
                &base,
                reqwest::Method::POST,
                "/api/v1/credentials",
                json!({"name": "aws", "csv": console_csv(), "endpoint": endpoint()}),
            )
            .await;
        assert_eq!(s, 201, "{b}");
        let mut body = crate::helpers::group_body(&group, "aws");
        body["region"] = json!("eu-west-1");
        let (s, b) = client
            .call(&base, reqwest::Method::POST, "/api/v1/groups", body)
            .await;
        assert_eq!(s, 201, "{b}");

        let kms = Kms::connect().await;
        let (job_id, ciphertext) = if sync {
            // One clean rotation first, then a synchronize that deletes and re-imports.
            let (_, job) = client
                .call(
                    &base,
                    reqwest::Method::POST,
                    &format!("/api/v1/groups/{group}/rotate"),
                    json!({}),
                )
                .await;
            let job = wait_job(&client, &base, job["id"].as_str().unwrap()).await;
            assert_eq!(job["status"], "succeeded", "{job:#}");
            let key = job["kms_key_id"].as_str().unwrap().to_owned();
            let ciphertext = kms
                .encrypt(&format!("alias/{group}"), b"before the crash")
                .await;
            drop(server);
            server = serve(&data, &db, "node-a", Some((point, &paused)));
            let (s, job) = client
                .call(
                    &server.base,
                    reqwest::Method::POST,
                    &format!("/api/v1/keys/{key}/sync"),
                    json!({"delete_material": true}),
                )
                .await;
            assert_eq!(s, 202, "{job}");
            (job["id"].as_str().unwrap().to_owned(), Some(ciphertext))
        } else {
            let (s, job) = client
                .call(
                    &base,
                    reqwest::Method::POST,
                    &format!("/api/v1/groups/{group}/rotate"),
                    json!({}),
                )
                .await;
            assert_eq!(s, 202, "{job}");
            (job["id"].as_str().unwrap().to_owned(), None)
        };

        wait_for(&paused).await;
        server.child.kill().unwrap(); // SIGKILL: no shutdown hook runs
        server.child.wait().unwrap();
        drop(server);

        let server = serve(&data, &db, "node-a", None);
        let job = wait_job(&client, &server.base, &job_id).await;
        assert_eq!(job["status"], "succeeded", "killed at {point}: {job:#}");
        let active = job["kms_key_id"].as_str().unwrap();

        let in_kms = kms.keys_of_group(&group).await;
        assert_eq!(
            in_kms,
            vec![active.to_owned()],
            "killed at {point}: exactly one KMS key, no orphan"
        );
        assert_eq!(
            kms.alias_target(&format!("alias/{group}")).await.as_deref(),
            Some(active),
            "killed at {point}"
        );
        assert_eq!(kms.state(active).await, "Enabled", "killed at {point}");
        if let Some(ciphertext) = ciphertext {
            assert_eq!(
                kms.decrypt(&ciphertext).await.unwrap(),
                b"before the crash",
                "killed at {point}"
            );
        }
        let (_, keys) = client
            .call(
                &server.base,
                reqwest::Method::GET,
                &format!("/api/v1/keys?group={group}"),
                json!(null),
            )
            .await;
        assert_eq!(
            keys.as_array().unwrap().len(),
            1,
            "killed at {point}: {keys:#}"
        );
        let (_, verify) = client
            .call(
                &server.base,
                reqwest::Method::GET,
                "/api/v1/audit/verify",
                json!(null),
            )
            .await;
        assert_eq!(verify["ok"], true, "killed at {point}: {verify}");
        let messages = job["messages"].to_string();
        assert!(
            messages.contains("Resumed after an interruption"),
            "killed at {point}: {messages}"
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
        let init = init_data_dir(&data, &db);

        let a = serve(
            &data,
            &db,
            "node-a",
            Some(("import_material:after", &paused)),
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
        let b = serve(&data, &db, "node-b", None);
        let c = serve(&data, &db, "node-c", None);

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
        // right after importing the material.
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
        // One of the two survivors took over, under the next token.
        let cluster = config(c.base.clone()).await["cluster"].clone();
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

    macro_rules! kill_points {
        ($($name:ident => $point:literal, $sync:literal;)*) => {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    kill_at($point, $sync).await;
                }
            )*
        };
    }

    kill_points! {
        rotate_killed_before_generate_key_commit => "generate_key:before", false;
        rotate_killed_after_generate_key => "generate_key:after", false;
        rotate_killed_between_create_key_and_its_commit => "create_kms_key:before", false;
        rotate_killed_between_create_key_and_import => "create_kms_key:after", false;
        rotate_killed_between_import_and_its_commit => "import_material:before", false;
        rotate_killed_after_import => "import_material:after", false;
        rotate_killed_between_alias_move_and_its_commit => "move_alias:before", false;
        rotate_killed_after_alias_move => "move_alias:after", false;
        rotate_killed_before_disable_previous_commit => "disable_previous:before", false;
        rotate_killed_after_disable_previous => "disable_previous:after", false;
        rotate_killed_before_activate_commit => "activate:before", false;
        sync_killed_between_delete_and_its_commit => "delete_material:before", true;
        sync_killed_after_delete => "delete_material:after", true;
        sync_killed_between_import_and_its_commit => "import_material:before", true;
    }
}
