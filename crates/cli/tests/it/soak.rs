//! Soak: a real `keyhold serve` process under concurrent API clients and a
//! steady stream of rotations, for a bounded time (KEYHOLD_SOAK_SECONDS,
//! 60 by default). Every response must be a success, every rotation must
//! succeed, and the process's resident memory must not grow by more than
//! [`RSS_GROWTH_BOUND_MIB`] between the end of the warm-up and the end.

use std::collections::BTreeMap;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{
    console_csv, group_body, init_data_dir_on, spawn_listening, test_database, unique, use_database,
};
use crate::kms::{Kms, endpoint};

const KEYHOLD: &str = env!("CARGO_BIN_EXE_keyhold");
/// Concurrent API clients, each looping over the read endpoints.
const CLIENTS: usize = 8;
/// Groups rotated in turn, each as soon as its previous rotation finished.
const GROUPS: usize = 4;
const WARM_UP: Duration = Duration::from_secs(10);
/// Resident memory may grow by this much from the end of the warm-up to the
/// end of the run: caches and allocator pools settle, a leak does not.
const RSS_GROWTH_BOUND_MIB: f64 = 32.0;

/// What the clients ask for, in turn.
const READS: [&str; 9] = [
    "/healthz",
    "/readyz",
    "/metrics",
    "/api/v1/config",
    "/api/v1/groups",
    "/api/v1/keys",
    "/api/v1/jobs?limit=50",
    "/api/v1/audit?limit=50",
    "/api/v1/credentials",
];

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[derive(Default)]
struct Counts {
    /// Responses by status code.
    statuses: BTreeMap<u16, u64>,
    /// The first few failures, for the assertion message.
    failures: Vec<String>,
}

impl Counts {
    fn record(&mut self, what: &str, status: u16, body: &str) {
        *self.statuses.entry(status).or_default() += 1;
        if !(200..300).contains(&status) && self.failures.len() < 10 {
            let body: String = body.chars().take(300).collect();
            self.failures.push(format!("{what}: {status} {body}"));
        }
    }
}

struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
    counts: Arc<Mutex<Counts>>,
}

impl Api {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let (status, text) = match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                (status, resp.text().await.unwrap_or_default())
            }
            // A refused or broken connection counts as an error response.
            Err(e) => (0, e.to_string()),
        };
        self.counts
            .lock()
            .unwrap()
            .record(&format!("{method} {path}"), status, &text);
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_served_process_under_load_answers_everything_finishes_every_job_and_keeps_its_memory() {
    let seconds: u64 = std::env::var("KEYHOLD_SOAK_SECONDS")
        .ok()
        .map(|s| {
            s.parse()
                .expect("KEYHOLD_SOAK_SECONDS is a number of seconds")
        })
        .unwrap_or(60);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let db = test_database().await;
    // A token of its own in the PKCS#11 pass: SoftHSM2 keeps a token in
    // files that other test processes rewrite as they make keys, and a read
    // racing such a write fails (CKR_GENERAL_ERROR), which is the shared test
    // token's doing, not the load's.
    let hsm = crate::helpers::Hsm::for_suite().map(|_| crate::helpers::Hsm::fresh_token("soak"));
    let init = init_data_dir_on(&data, &db, hsm.as_ref());

    let mut command = Command::new(KEYHOLD);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--log", "warn"])
        .args(["--kms-wrapping-key-spec", "RSA_2048"])
        .arg("--data-dir")
        .arg(&data)
        .args(["--node-id", "soak", "--scheduler-tick-ms", "200"])
        .env_remove("KEYHOLD_PAUSE_AT")
        .env_remove("KEYHOLD_CRASH_TRACE");
    if let Some(hsm) = &hsm {
        hsm.configure_command(&mut command);
    }
    use_database(&mut command, &db);
    let (child, base) = spawn_listening(&mut command);
    let server = Process(child);
    let pid = server.0.id();

    let http = reqwest::Client::new();
    let token = crate::helpers::dual_login(&http, &base, &init).await;
    let counts = Arc::new(Mutex::new(Counts::default()));
    let api = Arc::new(Api {
        http: http.clone(),
        base: base.clone(),
        token,
        counts: counts.clone(),
    });
    api.call(
        reqwest::Method::POST,
        "/api/v1/credentials",
        Some(json!({"name": "aws", "csv": console_csv(), "endpoint": endpoint()})),
    )
    .await;
    let groups: Vec<String> = (0..GROUPS).map(|_| unique("soak")).collect();
    for group in &groups {
        api.call(
            reqwest::Method::POST,
            "/api/v1/groups",
            Some(group_body(group, "aws")),
        )
        .await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let api = api.clone();
        let stop = stop.clone();
        clients.push(tokio::spawn(async move {
            let mut n = i;
            let mut requests = 0u64;
            while !stop.load(Ordering::Relaxed) {
                api.call(reqwest::Method::GET, READS[n % READS.len()], None)
                    .await;
                n += 1;
                requests += 1;
            }
            requests
        }));
    }

    // The rotation stream: each group rotated again as soon as its last
    // rotation ended (one job per group at a time is keyhold's rule).
    let rotations = {
        let api = api.clone();
        let stop = stop.clone();
        let groups = groups.clone();
        tokio::spawn(async move {
            let mut jobs: Vec<String> = Vec::new();
            let mut current: Vec<Option<String>> = vec![None; groups.len()];
            while !stop.load(Ordering::Relaxed) {
                for (g, group) in groups.iter().enumerate() {
                    if let Some(id) = &current[g] {
                        let job = api
                            .call(reqwest::Method::GET, &format!("/api/v1/jobs/{id}"), None)
                            .await;
                        if !matches!(
                            job["status"].as_str(),
                            Some("succeeded" | "failed" | "cancelled")
                        ) {
                            continue;
                        }
                    }
                    let job = api
                        .call(
                            reqwest::Method::POST,
                            &format!("/api/v1/groups/{group}/rotate"),
                            Some(json!({})),
                        )
                        .await;
                    let id = job["id"].as_str().map(ToOwned::to_owned);
                    if let Some(id) = &id {
                        jobs.push(id.clone());
                    }
                    current[g] = id;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            jobs
        })
    };

    tokio::time::sleep(WARM_UP).await;
    let rss_start = rss_kib(pid);
    let mut rss_peak = rss_start;
    let run = Instant::now();
    while run.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        rss_peak = rss_peak.max(rss_kib(pid));
    }
    stop.store(true, Ordering::Relaxed);
    let mut requests = 0;
    for client in clients {
        requests += client.await.unwrap();
    }
    let jobs = rotations.await.unwrap();
    let rss_end = rss_kib(pid);
    rss_peak = rss_peak.max(rss_end);

    // Every rotation started ends, and succeeds.
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    for id in &jobs {
        let mut finished = None;
        for _ in 0..600 {
            let job = api
                .call(reqwest::Method::GET, &format!("/api/v1/jobs/{id}"), None)
                .await;
            if matches!(
                job["status"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            ) {
                finished = Some(job);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let job =
            finished.unwrap_or_else(|| panic!("job {id} still unfinished 60 s after the run"));
        *statuses
            .entry(job["status"].as_str().unwrap().to_owned())
            .or_default() += 1;
        assert_eq!(job["status"], "succeeded", "{job:#}");
    }
    // Each group holds one key per rotation, its alias on the newest.
    let kms = Kms::connect().await;
    for group in &groups {
        let keys = api
            .call(
                reqwest::Method::GET,
                &format!("/api/v1/keys?group={group}"),
                None,
            )
            .await;
        let g = api
            .call(
                reqwest::Method::GET,
                &format!("/api/v1/groups/{group}"),
                None,
            )
            .await;
        assert!(
            !keys.as_array().unwrap().is_empty(),
            "{group} never rotated"
        );
        assert_eq!(
            kms.alias_target(&format!("alias/{group}")).await.as_deref(),
            g["active_key_id"].as_str(),
            "{group}"
        );
    }

    let counts = counts.lock().unwrap();
    let total: u64 = counts.statuses.values().sum();
    let errors: u64 = counts
        .statuses
        .iter()
        .filter(|(s, _)| !(200..300).contains(*s))
        .map(|(_, n)| n)
        .sum();
    let growth = mib(rss_end) - mib(rss_start);
    let by_status = counts
        .statuses
        .iter()
        .map(|(s, n)| format!("{s}: {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    crate::report::section(
        50,
        "Load (soak)",
        &format!(
            "A real `keyhold serve` process on loopback for {seconds} s after a {} s warm-up: \
             {CLIENTS} concurrent API clients looping over {} read endpoints (health, \
             readiness, metrics, configuration, groups, keys, jobs, audit, credentials), and a \
             stream of Force Rotate jobs over {GROUPS} groups (each rotated again as soon as \
             its last rotation ended).\n\n\
             | figure | value |\n|---|---|\n\
             | HTTP responses | {total} ({by_status}) |\n\
             | read requests by the clients | {requests} |\n\
             | error responses | {errors} |\n\
             | rotations started / succeeded | {} / {} |\n\
             | resident memory after warm-up / peak / end | {:.1} / {:.1} / {:.1} MiB |\n\
             | growth (bound {RSS_GROWTH_BOUND_MIB} MiB) | {growth:+.1} MiB |\n",
            WARM_UP.as_secs(),
            READS.len(),
            jobs.len(),
            statuses.get("succeeded").copied().unwrap_or(0),
            mib(rss_start),
            mib(rss_peak),
            mib(rss_end),
        ),
    );
    assert_eq!(
        errors, 0,
        "error responses: {by_status}\n{:#?}",
        counts.failures
    );
    assert!(
        jobs.len() >= GROUPS,
        "only {} rotations started",
        jobs.len()
    );
    assert!(
        growth < RSS_GROWTH_BOUND_MIB,
        "resident memory grew by {growth:.1} MiB (from {:.1} to {:.1}, peak {:.1})",
        mib(rss_start),
        mib(rss_end),
        mib(rss_peak)
    );
}
