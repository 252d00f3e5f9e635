//! The test harness: a real keyhold server per test, on its own port, data
//! directory and database, with a clock the test controls. The database is
//! the data directory's SQLite file, or with KEYHOLD_TEST_DATABASE=postgres a
//! fresh PostgreSQL database (see keyhold_store::testing).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use keyhold_core::clock::ManualClock;
use keyhold_store::testing::{RawConnection, TestDatabase};
use reqwest::StatusCode;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

pub const ADMIN1_PASSWORD: &str = "Admin1-correct-horse";
pub const ADMIN2_PASSWORD: &str = "Admin2-battery-staple";
pub const SECRET_ACCESS_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
pub const ACCESS_KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";

/// A name no other test (nor an earlier run against the same LocalStack) uses.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

pub fn console_csv() -> String {
    format!("Access key ID,Secret access key\n{ACCESS_KEY_ID},{SECRET_ACCESS_KEY}\n")
}

pub struct TestApp {
    args: keyhold_server::ServeArgs,
    /// The PKCS#11 PIN the server gets through its environment.
    pin: Option<String>,
    pub base: String,
    pub http: reqwest::Client,
    pub data_dir: PathBuf,
    pub clock: Arc<ManualClock>,
    /// One-time passwords printed at initialisation.
    pub initial_passwords: HashMap<String, String>,
    _dir: Arc<tempfile::TempDir>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// Outlives restarts; a PostgreSQL database is dropped with the last holder.
    pub db: Arc<TestDatabase>,
}

fn start_time() -> keyhold_core::clock::Timestamp {
    chrono::DateTime::parse_from_rfc3339("2026-11-29T09:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc)
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// A server whose configuration the test adjusts (wrapping key size, …).
    /// KMS wrapping keys default to RSA_2048 here: LocalStack makes a fresh
    /// key pair per import, and RSA_4096 takes it about a second.
    pub async fn spawn_with(configure: impl FnOnce(&mut keyhold_server::ServeArgs)) -> Self {
        Self::spawn_configured(configure, None).await
    }

    /// A server whose keys live on `hsm`'s token, whatever the suite runs with.
    pub async fn spawn_on(hsm: &Hsm) -> Self {
        Self::spawn_configured(|args| hsm.configure(args), Some(hsm.pin.clone())).await
    }

    async fn spawn_configured(
        configure: impl FnOnce(&mut keyhold_server::ServeArgs),
        mut pin: Option<String>,
    ) -> Self {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let db = Arc::new(test_database().await);
        let clock = Arc::new(ManualClock::new(start_time()));
        let mut args = keyhold_server::ServeArgs::default();
        args.data.data_dir = Some(dir.path().join("data"));
        args.listen.listen = Some("127.0.0.1:0".into());
        args.log.log = Some("warn".into());
        args.data.database_url = db.url_override().map(str::to_owned);
        // Quick ticks: jobs start soon after they are accepted, and a
        // clock moved on is noticed at once.
        args.cluster.scheduler_tick_ms = Some(100);
        args.cluster.node_id = Some("node-a".into());
        // The operator's allow-list of KMS endpoints: the KMS peer (a test
        // adds its own proxies with `allow_endpoints`).
        for peer in kms_peers() {
            allow_endpoints(&mut args, &[&peer]);
        }
        // Tests fail logins on purpose, all from 127.0.0.1: the per-address
        // throttle would refuse them before the lockout they test. Tests of
        // the throttle set it back (`login_throttle_failures = None`: the
        // defaults as shipped).
        args.login.login_throttle_failures = Some(10_000);
        configure(&mut args);
        // A test that chose its keystore keeps it.
        if args.keystore.keystore.is_none()
            && let Some(hsm) = Hsm::for_suite()
        {
            hsm.configure(&mut args);
            pin = Some(hsm.pin);
        }
        Self::start(dir, db, clock, args, pin).await
    }

    async fn start(
        dir: Arc<tempfile::TempDir>,
        db: Arc<TestDatabase>,
        clock: Arc<ManualClock>,
        args: keyhold_server::ServeArgs,
        pin: Option<String>,
    ) -> Self {
        let data_dir = args.data.data_dir.clone().unwrap();
        let secrets = keyhold_server::EnvSecrets {
            pkcs11_pin: pin.clone().map(secrecy::SecretString::from),
            ..Default::default()
        };
        let config = args.clone().resolve(secrets).unwrap();
        let (server, passwords) = keyhold_server::Server::build(&config, clock.clone())
            .await
            .unwrap();
        let addr = server.local_addr().unwrap();
        let scheme = server.scheme();
        let certificate = args.listen.tls_certificate.clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .run(async move {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        Self {
            args,
            pin,
            // Over HTTPS the name the test certificate is issued to.
            base: match &certificate {
                Some(_) => format!("{scheme}://localhost:{}", addr.port()),
                None => format!("{scheme}://{addr}"),
            },
            http: match &certificate {
                // The chain ends with the CA that issued the server's certificate.
                Some(chain) => {
                    reqwest::Certificate::from_pem_bundle(&std::fs::read(chain).unwrap())
                        .unwrap()
                        .into_iter()
                        .fold(reqwest::Client::builder(), |client, certificate| {
                            client.add_root_certificate(certificate)
                        })
                        .build()
                        .unwrap()
                }
                None => reqwest::Client::new(),
            },
            data_dir,
            clock,
            initial_passwords: passwords
                .into_iter()
                .map(|p| (p.name, p.password.expose_secret().to_owned()))
                .collect(),
            _dir: dir,
            shutdown: Some(tx),
            task: Some(task),
            db,
        }
    }

    /// Stops the server and starts a new one on the same data directory.
    pub async fn restart(self) -> Self {
        let pin = self.pin.clone();
        self.restart_with(|_| {}, pin).await
    }

    /// Restarts with changed settings and PKCS#11 PIN.
    pub async fn restart_with(
        mut self,
        configure: impl FnOnce(&mut keyhold_server::ServeArgs),
        pin: Option<String>,
    ) -> Self {
        self.stop().await;
        let mut args = self.args.clone();
        configure(&mut args);
        Self::start(
            self._dir.clone(),
            self.db.clone(),
            self.clock.clone(),
            args,
            pin,
        )
        .await
    }

    /// A second node of the same cluster: same database, keystore and clock,
    /// its own id and port.
    pub async fn spawn_peer(&self, node: &str) -> Self {
        let mut args = self.args.clone();
        args.cluster.node_id = Some(node.to_owned());
        let mut peer = Self::start(
            self._dir.clone(),
            self.db.clone(),
            self.clock.clone(),
            args,
            self.pin.clone(),
        )
        .await;
        peer.initial_passwords = self.initial_passwords.clone();
        peer
    }

    /// A new installation beside this one (same clock and KMS peers), on a
    /// data directory and database of its own, not initialised: where a
    /// restore goes. `configure` adjusts it (a fresh token, say); `pin` is
    /// its PKCS#11 PIN, if any.
    pub async fn sibling(
        &self,
        configure: impl FnOnce(&mut keyhold_server::ServeArgs),
        pin: Option<String>,
    ) -> Installation {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let db = Arc::new(test_database().await);
        let mut args = self.args.clone();
        args.data.data_dir = Some(dir.path().join("data"));
        args.data.database_url = db.url_override().map(str::to_owned);
        args.data.backup_dir = None;
        args.data.audit_archive_dir = None;
        configure(&mut args);
        Installation {
            args,
            dir,
            db,
            clock: self.clock.clone(),
            pin: pin.or_else(|| self.pin.clone()),
            passwords: self.initial_passwords.clone(),
        }
    }

    /// Stops the server as a crash would: its task is dropped without a
    /// graceful shutdown, so it keeps the rotator lease until that expires.
    pub async fn crash(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        // Kept, not sent: a send would be a clean shutdown.
        if let Some(tx) = self.shutdown.take() {
            std::mem::forget(tx);
        }
    }

    /// Polls `check` (up to 30 s) until it returns a value.
    pub async fn eventually<T, F>(&self, what: &str, mut check: impl FnMut() -> F) -> T
    where
        F: std::future::Future<Output = Option<T>>,
    {
        for _ in 0..300 {
            if let Some(value) = check().await {
                return value;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("timed out waiting for {what}");
    }

    /// Stops the server; the data directory stays until the app is dropped.
    pub async fn shut_down(&mut self) {
        self.stop().await;
    }

    async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("keyhold.db")
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.request(reqwest::Method::GET, path, Some(token), None)
            .await
    }
    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.request(reqwest::Method::POST, path, token, Some(body))
            .await
    }
    pub async fn patch(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.request(reqwest::Method::PATCH, path, Some(token), Some(body))
            .await
    }
    pub async fn delete(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.request(reqwest::Method::DELETE, path, Some(token), None)
            .await
    }

    /// Changes both default administrators' one-time passwords (first use).
    pub async fn activate_admins(&self) {
        for (name, new) in [("Admin1", ADMIN1_PASSWORD), ("Admin2", ADMIN2_PASSWORD)] {
            let (status, body) = self
                .post(
                    "/api/v1/password",
                    None,
                    json!({"user": name, "current_password": self.initial_passwords[name], "new_password": new}),
                )
                .await;
            assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
        }
    }

    /// Creates an identity with `role` (in the administrators' session
    /// `admins`) and replaces its one-time password with `password`.
    pub async fn add_identity(&self, admins: &str, name: &str, role: &str, password: &str) {
        let (status, created) = self
            .post(
                "/api/v1/identities",
                Some(admins),
                json!({"name": name, "role": role}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let (status, body) = self
            .post(
                "/api/v1/password",
                None,
                json!({"user": name, "current_password": created["password"], "new_password": password}),
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    }

    pub async fn login(
        &self,
        token: Option<&str>,
        user: &str,
        password: &str,
    ) -> (StatusCode, Value) {
        self.post(
            "/api/v1/session/login",
            token,
            json!({"user": user, "password": password}),
        )
        .await
    }

    /// A session holding Admin1 alone.
    pub async fn single_session(&self) -> String {
        self.activate_admins().await;
        let (status, body) = self.login(None, "Admin1", ADMIN1_PASSWORD).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["token"].as_str().unwrap().to_owned()
    }

    /// A session holding Admin1 and Admin2 (dual control).
    pub async fn dual_session(&self) -> String {
        let token = self.single_session().await;
        self.join(&token, "Admin2", ADMIN2_PASSWORD).await
    }

    /// `user` joins the session of `token`; returns the session's new token
    /// (joining replaces it).
    pub async fn join(&self, token: &str, user: &str, password: &str) -> String {
        let (status, body) = self.login(Some(token), user, password).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["token"].as_str().unwrap().to_owned()
    }

    /// Admin1 and Admin2 in one session again, their passwords set already
    /// (after a restart).
    pub async fn dual_session_again(&self) -> String {
        let (status, body) = self.login(None, "Admin1", ADMIN1_PASSWORD).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let token = body["token"].as_str().unwrap().to_owned();
        self.join(&token, "Admin2", ADMIN2_PASSWORD).await
    }

    pub async fn import_credential(&self, token: &str, name: &str) {
        let (status, body) = self
            .post(
                "/api/v1/credentials",
                Some(token),
                json!({"name": name, "csv": console_csv()}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    /// A credential whose endpoint override is the KMS peer.
    pub async fn import_kms_credential(&self, token: &str, name: &str) {
        self.import_credential_at(token, name, &crate::kms::endpoint())
            .await;
    }

    pub async fn import_credential_at(&self, token: &str, name: &str, endpoint: &str) {
        let (status, body) = self
            .post(
                "/api/v1/credentials",
                Some(token),
                json!({"name": name, "csv": console_csv(), "endpoint": endpoint}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    /// Force Rotate; returns the job id.
    pub async fn rotate(&self, token: &str, group: &str) -> String {
        let (status, job) = self
            .post(
                &format!("/api/v1/groups/{group}/rotate"),
                Some(token),
                json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{job}");
        assert_eq!(job["title"], "Rotate HSM protected keys");
        job["id"].as_str().unwrap().to_owned()
    }

    pub async fn sync(&self, token: &str, key: &str, options: Value) -> String {
        let (status, job) = self
            .post(&format!("/api/v1/keys/{key}/sync"), Some(token), options)
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{job}");
        assert_eq!(job["title"], "Synchronize HSM protected keys");
        job["id"].as_str().unwrap().to_owned()
    }

    /// Waits (bounded) until the job ends; returns it with its messages.
    pub async fn wait_job(&self, token: &str, id: &str) -> Value {
        self.wait_job_within(token, id, std::time::Duration::from_secs(60))
            .await
    }

    /// Polls the job until it ends; fails the test when it is still
    /// unfinished after `limit` (a job never stays running for ever).
    pub async fn wait_job_within(
        &self,
        token: &str,
        id: &str,
        limit: std::time::Duration,
    ) -> Value {
        let poll = std::time::Duration::from_millis(100);
        let mut job = Value::Null;
        for _ in 0..limit.as_millis() / poll.as_millis() {
            let (status, current) = self.get(&format!("/api/v1/jobs/{id}"), token).await;
            assert_eq!(status, StatusCode::OK, "{current}");
            job = current;
            if matches!(
                job["status"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            ) {
                return job;
            }
            tokio::time::sleep(poll).await;
        }
        panic!(
            "job {id} did not finish within {} s: {job:#}",
            limit.as_secs()
        );
    }

    /// Rotates and asserts the job succeeded; returns the new active KMS key id.
    pub async fn rotate_ok(&self, token: &str, group: &str) -> String {
        let id = self.rotate(token, group).await;
        let job = self.wait_job(token, &id).await;
        assert_eq!(job["status"], "succeeded", "{job:#}");
        let (_, g) = self.get(&format!("/api/v1/groups/{group}"), token).await;
        assert_eq!(g["active_key_id"], job["kms_key_id"]);
        job["kms_key_id"].as_str().unwrap().to_owned()
    }

    pub async fn create_group(&self, token: &str, body: Value) -> (StatusCode, Value) {
        self.post("/api/v1/groups", Some(token), body).await
    }

    /// Audit summaries, oldest first.
    /// The whole audit log, oldest first, as `/api/v1/audit/export` streams it.
    pub async fn audit_export(&self, token: &str) -> Vec<Value> {
        let response = self
            .http
            .get(format!("{}/api/v1/audit/export", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let text = response.text().await.unwrap();
        let mut lines: Vec<Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        // The closing line: the export verified and signed.
        let closing = lines.pop().unwrap();
        assert!(closing.get("checkpoint").is_some(), "{closing}");
        lines
    }

    /// `/readyz`: its status and body.
    /// The server's `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn readyz(&self) -> (StatusCode, Value) {
        let response = self
            .http
            .get(format!("{}/readyz", self.base))
            .send()
            .await
            .unwrap();
        (response.status(), response.json().await.unwrap())
    }

    pub async fn audit_summaries(&self, token: &str) -> Vec<String> {
        let (status, body) = self.get("/api/v1/audit?limit=1000", token).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let mut summaries: Vec<String> = body
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                format!(
                    "{} | {}",
                    e["users"].as_str().unwrap(),
                    e["summary"].as_str().unwrap()
                )
            })
            .collect();
        summaries.reverse();
        summaries
    }

    /// The approval policy of `class` (`delete_group`, …) as the API shows it.
    pub async fn approval_policy(&self, token: &str, class: &str) -> Value {
        let (status, policies) = self.get("/api/v1/approval-policies", token).await;
        assert_eq!(status, StatusCode::OK, "{policies}");
        policies
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["class"] == class)
            .unwrap_or_else(|| panic!("no policy of class {class} in {policies}"))
            .clone()
    }

    pub async fn audit_count(&self, token: &str) -> usize {
        self.audit_summaries(token).await.len()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The SoftHSM2 token the test script creates. The suite runs twice: with
/// the software keystore, and with KEYHOLD_TEST_KEYSTORE=pkcs11 on this token.
#[derive(Clone, Debug)]
/// An installation not started yet ([`TestApp::sibling`]).
pub struct Installation {
    pub args: keyhold_server::ServeArgs,
    dir: Arc<tempfile::TempDir>,
    pub db: Arc<TestDatabase>,
    clock: Arc<ManualClock>,
    pin: Option<String>,
    passwords: HashMap<String, String>,
}

impl Installation {
    /// Its resolved configuration (what `keyhold backup restore` reads).
    pub fn config(&self) -> keyhold_server::Config {
        let secrets = keyhold_server::EnvSecrets {
            pkcs11_pin: self.pin.clone().map(secrecy::SecretString::from),
            ..Default::default()
        };
        self.args.clone().resolve(secrets).unwrap()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.args.data.data_dir.clone().unwrap()
    }

    /// Starts a server on it (its administrators as on the installation it
    /// was made beside).
    pub async fn start(self) -> TestApp {
        let mut app = TestApp::start(self.dir, self.db, self.clock, self.args, self.pin).await;
        if app.initial_passwords.is_empty() {
            app.initial_passwords = self.passwords;
        }
        app
    }
}

pub struct Hsm {
    pub module: String,
    pub token: String,
    pub pin: String,
    /// A `SOFTHSM2_CONF` of the token's own ([`Hsm::isolated`]); the
    /// suite's otherwise.
    pub conf: Option<PathBuf>,
}

impl Hsm {
    /// The token, whatever keystore the suite runs with. Fails loudly when the
    /// test script did not create one.
    pub fn required() -> Self {
        let var = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| panic!("{name} is unset: run the suite with ./scripts/test, which creates a SoftHSM2 token"))
        };
        Self {
            module: var("KEYHOLD_TEST_PKCS11_MODULE"),
            token: var("KEYHOLD_TEST_PKCS11_TOKEN"),
            pin: var("KEYHOLD_TEST_PKCS11_PIN"),
            conf: None,
        }
    }

    /// The token when this run of the suite uses the PKCS#11 keystore.
    pub fn for_suite() -> Option<Self> {
        match std::env::var("KEYHOLD_TEST_KEYSTORE").as_deref() {
            Ok("pkcs11") => Some(Self::required()),
            Ok("software") | Err(_) => None,
            Ok(other) => panic!("KEYHOLD_TEST_KEYSTORE={other}: use software or pkcs11"),
        }
    }

    /// A token of the test's own on the suite's SoftHSM2 (same module and
    /// token directory), for tests that pull it out or log in wrongly.
    pub fn fresh_token(prefix: &str) -> Self {
        let suite = Self::required();
        let token = token_label(prefix);
        let pin = init_token(&token, None);
        Self {
            module: suite.module,
            token,
            pin,
            conf: None,
        }
    }

    /// A token alone in a SoftHSM2 token directory of its own under `dir`,
    /// for `keyhold` processes (their `SOFTHSM2_CONF` names it). Processes
    /// that log in to tokens of one directory at the same time can read a
    /// token's file while another's login rewrites it (SoftHSM2's file
    /// backend truncates before it locks) and see the PIN as never set: a
    /// race of the test peer, not of keyhold, which tests running many
    /// processes side by side avoid this way.
    pub fn isolated(prefix: &str, dir: &Path) -> Self {
        let suite = Self::required();
        let tokens = dir.join("softhsm-tokens");
        std::fs::create_dir_all(&tokens).unwrap();
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap();
        let token = token_label(prefix);
        let pin = init_token(&token, Some(&conf));
        Self {
            module: suite.module,
            token,
            pin,
            conf: Some(conf),
        }
    }

    /// The directory SoftHSM2 keeps this token's objects in (file backend):
    /// moving it away is pulling the token out.
    pub fn token_dir(&self) -> PathBuf {
        let conf = self.conf.clone().unwrap_or_else(|| {
            std::env::var("SOFTHSM2_CONF")
                .expect("SOFTHSM2_CONF is unset: run the suite with ./scripts/test")
                .into()
        });
        let conf = std::fs::read_to_string(conf).unwrap();
        let tokens = conf
            .lines()
            .find_map(|l| l.trim().strip_prefix("directories.tokendir"))
            .and_then(|rest| rest.trim().strip_prefix('='))
            .map(|dir| PathBuf::from(dir.trim()))
            .expect("no directories.tokendir in SOFTHSM2_CONF");
        std::fs::read_dir(&tokens)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .find(|dir| {
                std::fs::read(dir.join("token.object")).is_ok_and(|bytes| {
                    bytes
                        .windows(self.token.len())
                        .any(|w| w == self.token.as_bytes())
                })
            })
            .unwrap_or_else(|| {
                panic!(
                    "no directory of token {} in {}",
                    self.token,
                    tokens.display()
                )
            })
    }

    pub fn configure(&self, args: &mut keyhold_server::ServeArgs) {
        assert!(
            self.conf.is_none(),
            "a server in the test process reads the suite's SOFTHSM2_CONF: isolated tokens are for `keyhold` processes"
        );
        args.keystore.keystore = Some("pkcs11".into());
        args.keystore.pkcs11_module = Some(self.module.clone().into());
        args.keystore.pkcs11_token_label = Some(self.token.clone());
    }

    /// The same, as flags and environment of the `keyhold` binary.
    pub fn configure_command(&self, command: &mut std::process::Command) {
        command
            .args([
                "--keystore",
                "pkcs11",
                "--pkcs11-module",
                &self.module,
                "--pkcs11-token-label",
                &self.token,
            ])
            .env("KEYHOLD_PKCS11_PIN", &self.pin);
        if let Some(conf) = &self.conf {
            command.env("SOFTHSM2_CONF", conf);
        }
    }
}

/// A token label no other test uses.
fn token_label(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Initialises a SoftHSM2 token labelled `label` (in the token directory of
/// `conf`, the suite's without one); returns its user PIN.
fn init_token(label: &str, conf: Option<&Path>) -> String {
    let pin = "13572468".to_owned();
    let mut command = std::process::Command::new("softhsm2-util");
    command
        .args(["--init-token", "--free", "--label", label])
        .args(["--pin", &pin, "--so-pin", "86427531"]);
    if let Some(conf) = conf {
        command.env("SOFTHSM2_CONF", conf);
    }
    let init = command
        .output()
        .expect("softhsm2-util (Debian package softhsm2) is missing: ./scripts/test installs it");
    assert!(
        init.status.success(),
        "softhsm2-util --init-token: {init:?}"
    );
    pin
}

/// The KMS peer (LocalStack) when the suite runs with one.
pub fn kms_peer() -> Option<String> {
    std::env::var("AWS_ENDPOINT_URL_KMS")
        .or_else(|_| std::env::var("KEYHOLD_TEST_KMS_ENDPOINT"))
        .ok()
}

/// Lets the server's credentials name `endpoints` (loopback test peers and
/// proxies, over plain HTTP): endpoint overrides are operator configuration.
pub fn allow_endpoints(args: &mut keyhold_server::ServeArgs, endpoints: &[&str]) {
    args.kms
        .kms_endpoint_allow
        .get_or_insert_with(Vec::new)
        .extend(endpoints.iter().map(|e| (*e).to_owned()));
    args.kms.kms_endpoint_allow_plain_http = Some(true);
}

/// The same for a `keyhold serve` process: the KMS peers (LocalStack, and
/// the one that rotates imported material when the suite runs with it),
/// through its environment.
pub fn allow_kms_peer(command: &mut std::process::Command) {
    let peers = kms_peers();
    if !peers.is_empty() {
        command
            .env("KEYHOLD_KMS_ENDPOINT_ALLOW", peers.join(","))
            .env("KEYHOLD_KMS_ENDPOINT_ALLOW_PLAIN_HTTP", "true");
    }
}

/// Every KMS peer of this run a server may be pointed at: LocalStack, the
/// LocalStack that rotates imported material, and the faithful benchmark
/// peer once this process has started it.
fn kms_peers() -> Vec<String> {
    kms_peer()
        .into_iter()
        .chain(rotation_kms_peer())
        .chain(crate::in_place::started_faithful_peer())
        .collect()
}

/// The KMS peer that rotates imported material in place (LocalStack 4.11).
pub fn rotation_kms_peer() -> Option<String> {
    std::env::var("KEYHOLD_TEST_KMS_ROTATION_ENDPOINT")
        .ok()
        .filter(|e| !e.trim().is_empty())
}

pub fn group_body(name: &str, credential: &str) -> Value {
    json!({
        "name": name,
        "credential": credential,
        "alias": format!("alias/{name}"),
        "region": "eu-west-1",
        "rotate_every": "30d",
        "valid_for": "1y",
        "description": "payments data key",
        "owner": "security team",
        "policy": r#"{"Version":"2012-10-17","Statement":[{"Sid":"root","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}]}"#,
        "disable_after_rotate": true
    })
}

/// Opens the test server's database directly, as an attacker with access to
/// it would, bypassing keyhold.
pub async fn open_db(app: &TestApp) -> RawConnection {
    app.db.raw(&app.db_path()).await.unwrap()
}

/// A fresh database on the backend of this run; fails the test when that is
/// PostgreSQL and the server cannot be reached.
pub async fn test_database() -> TestDatabase {
    TestDatabase::create().await.unwrap()
}

/// Points a `keyhold serve` or `keyhold init` process at the test's database
/// (SQLite needs nothing: the data directory holds its file).
pub fn use_database(command: &mut std::process::Command, db: &TestDatabase) {
    if let Some(url) = db.url_override() {
        command.env("KEYHOLD_DATABASE_URL", url);
    }
}

/// Spawns `keyhold serve` (stdout piped) and waits for the address it
/// listens on, which it prints first.
pub fn spawn_listening(command: &mut std::process::Command) -> (std::process::Child, String) {
    use std::io::BufRead;
    allow_kms_peer(command);
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("keyhold serve exited before listening")
            .unwrap();
        if let Some(url) = line.strip_prefix("keyhold listening on ") {
            break url.trim().to_owned();
        }
    };
    (child, url)
}

/// Runs the `keyhold` binary with `args` against the server at `url`,
/// keeping its session in `session_file`, with `stdin` as its input.
pub fn keyhold_cli(
    url: &str,
    session_file: &std::path::Path,
    args: &[&str],
    stdin: &[u8],
) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_keyhold"))
        .args(args)
        .env("KEYHOLD_URL", url)
        .env("KEYHOLD_SESSION_FILE", session_file)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A command may refuse before it reads its input: a closed pipe is fine.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    child.wait_with_output().unwrap()
}

/// A session of the identity `name` alone; its token.
pub async fn alone(app: &TestApp, (name, password): (&str, &str)) -> String {
    let (status, body) = app.login(None, name, password).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["token"].as_str().unwrap().to_owned()
}

/// `keyhold init` on a fresh data directory; its JSON holds the one-time passwords.
pub fn init_data_dir(data: &std::path::Path, db: &TestDatabase) -> Value {
    init_data_dir_on(data, db, Hsm::for_suite().as_ref())
}

/// The same, with the keys on `hsm`'s token (or in software).
pub fn init_data_dir_on(data: &std::path::Path, db: &TestDatabase, hsm: Option<&Hsm>) -> Value {
    let mut init = std::process::Command::new(env!("CARGO_BIN_EXE_keyhold"));
    init.args(["init", "--output", "json", "--data-dir"])
        .arg(data);
    if let Some(hsm) = hsm {
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

/// Against a `keyhold serve` process set up by [`init_data_dir`]: both
/// administrators set their passwords and log in to one session, whose
/// token this returns.
pub async fn dual_login(http: &reqwest::Client, base: &str, init: &Value) -> String {
    let mut token: Option<String> = None;
    for (i, name) in ["Admin1", "Admin2"].iter().enumerate() {
        let current = init["identities"][i]["password"].as_str().unwrap();
        let new = format!("{name}-served-pass");
        let resp = http
            .post(format!("{base}/api/v1/password"))
            .json(&json!({"user": name, "current_password": current, "new_password": new}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        let mut login = http
            .post(format!("{base}/api/v1/session/login"))
            .json(&json!({"user": name, "password": new}));
        if let Some(t) = &token {
            login = login.bearer_auth(t);
        }
        let resp = login.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let body: Value = resp.json().await.unwrap();
        if let Some(t) = body["token"].as_str() {
            token = Some(t.to_owned());
        }
    }
    token.unwrap()
}

/// The web UI's login form, sent from `http` with the nonce and token of a
/// login page it fetched first.
pub async fn ui_login_from(
    http: &reqwest::Client,
    app: &TestApp,
    user: &str,
    password: &str,
) -> reqwest::Response {
    let page = http
        .get(format!("{}/ui/login", app.base))
        .send()
        .await
        .unwrap();
    let nonce = page.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let text = page.text().await.unwrap();
    let csrf = text
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    http.post(format!("{}/ui/login", app.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", nonce)
        .header("origin", &app.base)
        .body(format!(
            "csrf={csrf}&user={user}&password={}",
            password.replace('-', "%2D")
        ))
        .send()
        .await
        .unwrap()
}
