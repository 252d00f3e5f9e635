//! A real `keyhold serve` process, driven over its HTTP API as an operator
//! would, plus what /proc says about it (CPU time, RSS).

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

pub const ADMIN1_PASSWORD: &str = "Admin1-bench-horse-staple";
pub const ADMIN2_PASSWORD: &str = "Admin2-bench-battery-staple";

/// Where keys live.
#[derive(Clone, Debug)]
pub enum Keystore {
    Software,
    Pkcs11 {
        module: String,
        token: String,
        pin: String,
    },
}

impl Keystore {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Software => "software",
            Self::Pkcs11 { .. } => "PKCS#11 (SoftHSM2)",
        }
    }

    /// The SoftHSM2 token of KEYHOLD_TEST_PKCS11_* (scripts/bench creates it).
    pub fn pkcs11_from_env() -> anyhow::Result<Self> {
        let var = |name: &str| {
            std::env::var(name).with_context(|| {
                format!("{name} is unset: run ./scripts/bench, which creates a SoftHSM2 token")
            })
        };
        Ok(Self::Pkcs11 {
            module: var("KEYHOLD_TEST_PKCS11_MODULE")?,
            token: var("KEYHOLD_TEST_PKCS11_TOKEN")?,
            pin: var("KEYHOLD_TEST_PKCS11_PIN")?,
        })
    }
}

#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub keystore: Keystore,
    /// None: SQLite in the data directory.
    pub database_url: Option<String>,
    pub job_concurrency: u32,
    pub scheduler_tick_ms: u64,
    pub log: String,
    /// HTTPS with this certificate; plain HTTP on loopback when None.
    pub tls: Option<TlsFiles>,
    /// More `KEYHOLD_*` variables for the server (settings a scenario
    /// changes, such as `KEYHOLD_KMS_QUOTAS`), set after the ones above.
    pub env: Vec<(String, String)>,
}

/// A server certificate chain, its key, and the CA the benchmark's clients
/// trust it through (PEM files).
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub chain: std::path::PathBuf,
    pub private_key: std::path::PathBuf,
    pub ca: std::path::PathBuf,
}

impl TlsFiles {
    /// A client that trusts the CA, keeping up to `idle` connections alive.
    pub fn client(&self, idle: usize) -> anyhow::Result<reqwest::Client> {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(&self.ca)?)?;
        Ok(reqwest::Client::builder()
            .add_root_certificate(ca)
            .pool_max_idle_per_host(idle)
            .build()?)
    }
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            keystore: Keystore::Software,
            database_url: None,
            job_concurrency: 8,
            // keyhold's default.
            scheduler_tick_ms: 2000,
            log: "warn".into(),
            tls: None,
            env: Vec::new(),
        }
    }
}

pub struct KeyholdProcess {
    child: Child,
    pub base: String,
    pub http: reqwest::Client,
    pub passwords: Vec<(String, String)>,
    pub started_in: Duration,
}

/// The KMS endpoints a spawned server allows credentials to name.
fn allowed_endpoints() -> String {
    let mut endpoints = crate::kms_peer::PEER_ENDPOINTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    endpoints.extend(std::env::var("AWS_ENDPOINT_URL_KMS").ok());
    endpoints.join(",")
}

impl KeyholdProcess {
    /// Starts `keyhold serve` on a free port and waits until it listens.
    pub fn spawn(binary: &Path, data_dir: &Path, options: &ServeOptions) -> anyhow::Result<Self> {
        // keyhold refuses a data directory group or others can read.
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(data_dir)?;
        let mut command = Command::new(binary);
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0", "--node-id", "bench"])
            .args(["--kms-wrapping-key-spec", "RSA_2048"])
            .arg("--job-concurrency")
            .arg(options.job_concurrency.to_string())
            .arg("--scheduler-tick-ms")
            .arg(options.scheduler_tick_ms.to_string())
            .arg("--log")
            .arg(&options.log)
            .env_remove("KEYHOLD_DATABASE_URL")
            // The stand-in peers started so far and LocalStack, all on loopback.
            .env("KEYHOLD_KMS_ENDPOINT_ALLOW", allowed_endpoints())
            .env("KEYHOLD_KMS_ENDPOINT_ALLOW_PLAIN_HTTP", "true")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(data_dir.join("serve.log"))?,
            ));
        if let Some(url) = &options.database_url {
            command.env("KEYHOLD_DATABASE_URL", url);
        }
        command.envs(options.env.iter().map(|(name, value)| (name, value)));
        if let Keystore::Pkcs11 { module, token, pin } = &options.keystore {
            command
                .args(["--keystore", "pkcs11", "--pkcs11-module", module])
                .args(["--pkcs11-token-label", token])
                .env("KEYHOLD_PKCS11_PIN", pin);
        }
        if let Some(tls) = &options.tls {
            command
                .arg("--tls-certificate")
                .arg(&tls.chain)
                .arg("--tls-private-key")
                .arg(&tls.private_key);
        }
        let started = Instant::now();
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stdout = child.stdout.take().context("keyhold's stdout")?;
        let mut lines = std::io::BufReader::new(stdout).lines();
        let mut passwords = Vec::new();
        let base = loop {
            let Some(line) = lines.next() else {
                let log = std::fs::read_to_string(data_dir.join("serve.log")).unwrap_or_default();
                bail!("keyhold serve exited before listening:\n{log}");
            };
            let line = line?;
            if let Some(url) = line.strip_prefix("keyhold listening on ") {
                break url.trim().to_owned();
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            if let [name, password] = words.as_slice()
                && name.starts_with("Admin")
            {
                passwords.push(((*name).to_owned(), (*password).to_owned()));
            }
        };
        let started_in = started.elapsed();
        // Nothing more comes on stdout; drain it so the pipe never blocks.
        std::thread::spawn(move || for _ in lines {});
        Ok(Self {
            child,
            base,
            http: match &options.tls {
                Some(tls) => tls.client(64)?,
                None => reqwest::Client::builder()
                    .pool_max_idle_per_host(64)
                    .build()?,
            },
            passwords,
            started_in,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// User + system CPU time of the whole process so far.
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        cpu_time_of(self.pid())
    }

    /// Resident set size, bytes.
    pub fn rss_bytes(&self) -> anyhow::Result<u64> {
        status_kib(self.pid(), "VmRSS:").map(|k| k * 1024)
    }

    /// Stops with SIGTERM (graceful) and waits.
    pub fn stop(mut self) -> anyhow::Result<()> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = self
            .http
            .request(method, format!("{}/api/v1{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, value))
    }

    async fn expect(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        want: u16,
    ) -> anyhow::Result<Value> {
        let (status, value) = self.call(method.clone(), path, token, body).await?;
        if status != want {
            bail!("{method} {path}: HTTP {status} (wanted {want}): {value}");
        }
        Ok(value)
    }

    pub async fn get(&self, path: &str, token: &str) -> anyhow::Result<Value> {
        self.expect(reqwest::Method::GET, path, Some(token), None, 200)
            .await
    }

    /// Sets both administrators' passwords (first use) and returns a session
    /// that holds both (dual control, as Force Rotate needs).
    pub async fn dual_session(&self) -> anyhow::Result<String> {
        for (name, new) in [("Admin1", ADMIN1_PASSWORD), ("Admin2", ADMIN2_PASSWORD)] {
            if let Some((_, current)) = self.passwords.iter().find(|(n, _)| n == name) {
                self.expect(
                    reqwest::Method::POST,
                    "/password",
                    None,
                    Some(json!({"user": name, "current_password": current, "new_password": new})),
                    204,
                )
                .await?;
            }
        }
        let login = |token: Option<String>, user: &'static str, password: &'static str| async move {
            self.expect(
                reqwest::Method::POST,
                "/session/login",
                token.as_deref(),
                Some(json!({"user": user, "password": password})),
                200,
            )
            .await
        };
        let token_of = |answer: serde_json::Value| {
            answer["token"]
                .as_str()
                .map(str::to_owned)
                .context("login answered without a token")
        };
        let first = token_of(login(None, "Admin1", ADMIN1_PASSWORD).await?)?;
        // Joining replaces the session's token.
        token_of(login(Some(first), "Admin2", ADMIN2_PASSWORD).await?)
    }

    /// A credential whose endpoint override is `endpoint` (a KMS peer).
    pub async fn import_credential(
        &self,
        token: &str,
        name: &str,
        endpoint: &str,
    ) -> anyhow::Result<()> {
        let csv = "Access key ID,Secret access key\nAKIAIOSFODNN7EXAMPLE,wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n";
        self.expect(
            reqwest::Method::POST,
            "/credentials",
            Some(token),
            Some(json!({"name": name, "csv": csv, "endpoint": endpoint})),
            201,
        )
        .await?;
        Ok(())
    }

    pub async fn create_group(
        &self,
        token: &str,
        name: &str,
        credential: &str,
        rotate_every: &str,
    ) -> anyhow::Result<()> {
        self.expect(
            reqwest::Method::POST,
            "/groups",
            Some(token),
            Some(group_body(name, credential, rotate_every)),
            201,
        )
        .await?;
        Ok(())
    }

    /// Force Rotate; returns the job id.
    pub async fn rotate(&self, token: &str, group: &str) -> anyhow::Result<String> {
        let job = self
            .expect(
                reqwest::Method::POST,
                &format!("/groups/{group}/rotate"),
                Some(token),
                Some(json!({})),
                202,
            )
            .await?;
        Ok(job["id"].as_str().context("job without id")?.to_owned())
    }

    /// Waits until every job has ended; returns how many failed, the first
    /// failure's error, and when the last job ended by the server's record
    /// (its `finished_at`, to the microsecond), which a poll only finds up
    /// to a poll interval later. Polls the oldest unfinished job only, so
    /// the polling itself costs the server one small query per poll.
    pub async fn wait_jobs(
        &self,
        token: &str,
        ids: &[String],
        timeout: Duration,
    ) -> anyhow::Result<JobsEnded> {
        let deadline = Instant::now() + timeout;
        let mut ended = JobsEnded::default();
        for id in ids {
            loop {
                let job = self.get(&format!("/jobs/{id}"), token).await?;
                if let Some(end @ ("succeeded" | "failed" | "cancelled")) = job["status"].as_str() {
                    let finished = job["finished_at"]
                        .as_str()
                        .with_context(|| format!("job {id} ended without finished_at"))?;
                    let finished = chrono::DateTime::parse_from_rfc3339(finished)
                        .with_context(|| format!("job {id}'s finished_at '{finished}'"))?
                        .to_utc();
                    ended.last = ended.last.max(Some(finished));
                    if end != "succeeded" {
                        ended.failed += 1;
                        eprintln!("job {id} ended {end}: {}", job["error"]);
                        if ended.first_error.is_none() {
                            ended.first_error = job["error"].as_str().map(str::to_owned);
                        }
                    }
                    break;
                }
                if Instant::now() > deadline {
                    bail!("job {id} did not end within {timeout:?}");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(ended)
    }
}

/// How a set of jobs ended ([`KeyholdProcess::wait_jobs`]).
#[derive(Default)]
pub struct JobsEnded {
    pub failed: usize,
    pub first_error: Option<String>,
    /// The latest `finished_at` among them; `None` for no jobs.
    pub last: Option<chrono::DateTime<chrono::Utc>>,
}

impl Drop for KeyholdProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn group_body(name: &str, credential: &str, rotate_every: &str) -> Value {
    json!({
        "name": name,
        "credential": credential,
        "alias": format!("alias/{name}"),
        "region": "eu-west-1",
        "rotate_every": rotate_every,
        "valid_for": "1y",
        "description": "benchmark data key",
        "owner": "security team",
        "policy": r#"{"Version":"2012-10-17","Statement":[{"Sid":"root","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}]}"#,
        "disable_after_rotate": true
    })
}

/// Clock ticks per second of /proc's CPU times (USER_HZ, 100 on Linux).
const USER_HZ: u64 = 100;

pub fn cpu_time_of(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("/proc/PID/stat without ')'")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat; 12 and 13 after ')'.
    let ticks = |i: usize| -> anyhow::Result<u64> {
        Ok(fields.get(i).context("short /proc/PID/stat")?.parse()?)
    };
    let total = ticks(11)? + ticks(12)?;
    Ok(Duration::from_millis(total * 1000 / USER_HZ))
}

pub fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("status value")?
        .parse()?)
}

/// A fresh PostgreSQL database on the server of KEYHOLD_TEST_POSTGRES_URL,
/// dropped by [`PgDatabase::drop_now`].
pub struct PgDatabase {
    admin_url: String,
    pub name: String,
    pub url: String,
}

impl PgDatabase {
    pub async fn create() -> anyhow::Result<Self> {
        use sqlx::Connection;
        let admin_url = std::env::var("KEYHOLD_TEST_POSTGRES_URL").context(
            "KEYHOLD_TEST_POSTGRES_URL is unset: run ./scripts/bench, which starts PostgreSQL",
        )?;
        let name = format!(
            "keyhold_bench_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..10]
        );
        let mut conn = sqlx::PgConnection::connect(&admin_url)
            .await
            .context("connecting to PostgreSQL (KEYHOLD_TEST_POSTGRES_URL)")?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await?;
        let (base, _) = admin_url
            .rsplit_once('/')
            .context("KEYHOLD_TEST_POSTGRES_URL without a database")?;
        let url = format!("{base}/{name}");
        Ok(Self {
            admin_url,
            name,
            url,
        })
    }

    pub async fn drop_now(self) -> anyhow::Result<()> {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&self.admin_url).await?;
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut conn)
        .await?;
        Ok(())
    }
}
