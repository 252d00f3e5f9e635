//! An external key store served by a two-node cluster, as AWS KMS reaches it
//! through a network load balancer: two `keyhold serve` processes on one
//! database (the suite's SQLite file or PostgreSQL) and one keystore (the
//! data directory's software keystore, or one SoftHSM2 token both log in to
//! in the PKCS#11 pass), over HTTPS, every request signed with SigV4 by the
//! AWS SDK's signer (`keyhold_bench::xks_client`), not by keyhold's code.
//!
//! Processes, not in-process servers: the node is killed with SIGKILL, so
//! nothing of it runs on (no graceful shutdown, no task left in the test's
//! runtime), and each node has a process's own keystore sessions.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use keyhold_bench::xks_client::{
    self as xks, Answer, Sealed, XksClient, XksCredential, XksEndpoint,
};
use keyhold_store::testing::TestDatabase;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{
    Hsm, dual_login, init_data_dir_on, spawn_listening, test_database, unique, use_database,
};
use crate::test_ca::{TestCa, Usage};

const KEYHOLD: &str = env!("CARGO_BIN_EXE_keyhold");
/// Requests in flight at once: KMS keeps many connections to a proxy open.
const CONCURRENCY: usize = 16;
/// Encrypt/decrypt round trips completed before the kill, and after it.
const ROUND_TRIPS_BEFORE_KILL: usize = 120;
const ROUND_TRIPS_AFTER_KILL: usize = 120;
/// How long a change made through one node may take to reach the other.
/// Each node polls the store's revision every second and reloads when it
/// moved, so a change shows within about 2 s; the third second is for a CI
/// machine whose two cores run both nodes, the test and its client.
const RELOAD_LIMIT: Duration = Duration::from_secs(3);

/// A `keyhold serve` process; killed (if still running) when dropped.
struct Node {
    child: Child,
    base: String,
}

impl Node {
    /// SIGKILL: no shutdown hook runs, connections are cut where they are.
    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One installation the nodes share: data directory (SQLite file, software
/// keystore), database, token, TLS certificate.
struct Cluster {
    dir: tempfile::TempDir,
    db: TestDatabase,
    hsm: Option<Hsm>,
    /// `keyhold init`'s answer: the administrators' one-time passwords.
    init: Value,
    certificate: PathBuf,
    private_key: PathBuf,
    /// Trusts the test CA; keeps connections alive, as KMS does.
    http: reqwest::Client,
}

impl Cluster {
    async fn new(prefix: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = test_database().await;
        // A token of the test's own directory: the suite runs many
        // processes side by side (see `Hsm::isolated`); both nodes log in to it.
        let hsm = Hsm::for_suite().map(|_| Hsm::isolated(prefix, dir.path()));
        let init = init_data_dir_on(&dir.path().join("data"), &db, hsm.as_ref());
        let tls = dir.path().join("tls");
        std::fs::create_dir(&tls).unwrap();
        let ca = TestCa::new(&tls, "keyhold XKS cluster test CA");
        let (certificate, private_key) = ca.issue("server", "localhost", Usage::Server);
        let root =
            reqwest::Certificate::from_pem(&std::fs::read(ca.certificate()).unwrap()).unwrap();
        let http = reqwest::Client::builder()
            .add_root_certificate(root)
            // Bounded, so a request nobody answers fails the test rather
            // than hanging it.
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Self {
            dir,
            db,
            hsm,
            init,
            certificate,
            private_key,
            http,
        }
    }

    /// Starts node `node` on the shared installation, serving HTTPS.
    fn serve(&self, node: &str) -> Node {
        let mut command = Command::new(KEYHOLD);
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--log", "warn"])
            .args(["--node-id", node])
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .arg("--tls-certificate")
            .arg(&self.certificate)
            .arg("--tls-private-key")
            .arg(&self.private_key)
            // No --xks-usage-log: the default names the node, so two nodes
            // on one data directory keep their own logs (checked below).
            .env_remove("KEYHOLD_PAUSE_AT")
            .env_remove("KEYHOLD_CRASH_AT")
            .stderr(Stdio::inherit());
        if let Some(hsm) = &self.hsm {
            hsm.configure_command(&mut command);
        }
        use_database(&mut command, &self.db);
        let (child, base) = spawn_listening(&mut command);
        Node { child, base }
    }

    /// Both administrators in one session (dual control), through `node`.
    async fn administrators(&self, node: &Node) -> String {
        dual_login(&self.http, &node.base, &self.init).await
    }

    async fn call(
        &self,
        node: &Node,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", node.base))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// A new external key store, through `node`: its path prefix and first
    /// credential. Its quota is the highest keyhold takes: this test is
    /// about a node's death, not about throttling.
    async fn create_store(&self, node: &Node, token: &str, name: &str) -> (String, XksCredential) {
        let (status, issued) = self
            .call(
                node,
                Method::POST,
                "/api/v1/xks/stores",
                token,
                Some(json!({"name": name, "quota_per_second": 100_000})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{issued}");
        let prefix = issued["store"]["path_prefix"].as_str().unwrap().to_owned();
        (prefix, credential_of(&issued))
    }

    /// A new AES-256 key in store `store`, through `node`; its XksKeyId.
    async fn create_key(&self, node: &Node, token: &str, store: &str) -> String {
        let (status, key) = self
            .call(
                node,
                Method::POST,
                &format!("/api/v1/xks/stores/{store}/keys"),
                token,
                Some(json!({"description": "cluster test key", "usage": "encrypt_decrypt"})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{key}");
        key["id"].as_str().unwrap().to_owned()
    }

    /// The store's second credential (KMS is moved to it before the first
    /// is revoked), through `node`.
    async fn add_credential(&self, node: &Node, token: &str, store: &str) -> XksCredential {
        let (status, issued) = self
            .call(
                node,
                Method::POST,
                &format!("/api/v1/xks/stores/{store}/credentials"),
                token,
                None,
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{issued}");
        credential_of(&issued)
    }

    async fn revoke(&self, node: &Node, token: &str, store: &str, credential: &XksCredential) {
        let (status, body) = self
            .call(
                node,
                Method::DELETE,
                &format!(
                    "/api/v1/xks/stores/{store}/credentials/{}",
                    credential.access_key_id
                ),
                token,
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    }
}

/// The credential of a store creation's or credential addition's answer.
fn credential_of(issued: &Value) -> XksCredential {
    XksCredential::new(
        issued["access_key_id"].as_str().unwrap(),
        issued["secret_access_key"].as_str().unwrap(),
    )
}

/// 32 random bytes: a data key, as GenerateDataKey would have KMS encrypt.
fn random_plaintext() -> Vec<u8> {
    [uuid::Uuid::new_v4(), uuid::Uuid::new_v4()]
        .iter()
        .flat_map(|u| u.as_bytes().to_vec())
        .collect()
}

/// Polls `check` every 50 ms until it holds; how long that took. Fails the
/// test at `limit`.
async fn within<F>(limit: Duration, what: &str, mut check: impl FnMut() -> F) -> Duration
where
    F: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{what}: not within {} ms",
            limit.as_millis()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One node as the load balancer sees it.
struct Target {
    endpoint: XksEndpoint,
    /// Taken out: its connection was refused.
    down: AtomicBool,
    in_flight: AtomicUsize,
    /// Requests sent to it so far (a request's sequence number on it).
    sent: AtomicUsize,
    /// `sent` when it was taken out.
    sent_when_taken_out: AtomicUsize,
}

/// A request that got no good answer.
struct Failure {
    node: usize,
    /// Its sequence number on that node.
    sequence: usize,
    /// An error answer, rather than a connection cut.
    answered: bool,
    what: String,
}

/// The client half of a network load balancer in front of the nodes:
/// requests go round-robin to the nodes not taken out. A node whose
/// connection is refused or cut is taken out at once (a balancer's health
/// check would, a little later); a request it refused the connection for
/// goes to the next node, since nothing reached the refusing one. A request
/// that reached a node and got no answer, or an error answer, is a failure:
/// a balancer does not repeat it, KMS would see it fail.
struct Balancer {
    client: XksClient,
    targets: Vec<Target>,
    next: AtomicUsize,
}

impl Balancer {
    fn new(client: XksClient, endpoints: Vec<XksEndpoint>) -> Self {
        Self {
            client,
            targets: endpoints
                .into_iter()
                .map(|endpoint| Target {
                    endpoint,
                    down: AtomicBool::new(false),
                    in_flight: AtomicUsize::new(0),
                    sent: AtomicUsize::new(0),
                    sent_when_taken_out: AtomicUsize::new(usize::MAX),
                })
                .collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// The next node in turn that is not taken out.
    fn pick(&self) -> usize {
        let count = self.targets.len();
        let start = self.next.fetch_add(1, Ordering::SeqCst);
        (0..count)
            .map(|k| (start + k) % count)
            .find(|&n| !self.targets[n].down.load(Ordering::SeqCst))
            .expect("every node is down")
    }

    fn take_out(&self, target: &Target) {
        if !target.down.swap(true, Ordering::SeqCst) {
            target
                .sent_when_taken_out
                .store(target.sent.load(Ordering::SeqCst), Ordering::SeqCst);
        }
    }

    async fn send(
        &self,
        credential: &XksCredential,
        key_id: &str,
        operation: &str,
        body: &Value,
    ) -> Result<Answer, Failure> {
        loop {
            let node = self.pick();
            let target = &self.targets[node];
            let sequence = target.sent.fetch_add(1, Ordering::SeqCst);
            target.in_flight.fetch_add(1, Ordering::SeqCst);
            let url = target.endpoint.key_url(key_id, operation);
            let result = self.client.post(&url, credential, body).await;
            target.in_flight.fetch_sub(1, Ordering::SeqCst);
            let (what, answered) = match result {
                Ok(answer) if answer.status == 200 => return Ok(answer),
                Ok(answer) => (
                    format!("{operation}: HTTP {} {}", answer.status, answer.body),
                    true,
                ),
                Err(e) => {
                    self.take_out(target);
                    if e.is_refused() {
                        continue;
                    }
                    (format!("{operation}: {e}"), false)
                }
            };
            return Err(Failure {
                node,
                sequence,
                answered,
                what,
            });
        }
    }
}

/// What one encrypt gave: to decrypt again later.
struct RoundTrip {
    plaintext: Vec<u8>,
    aad: Vec<u8>,
    sealed: Sealed,
}

/// A client of the load: encrypt, then decrypt what came back (on whichever
/// node the balancer picks), until `stop`.
async fn client_loop(
    balancer: Arc<Balancer>,
    credential: XksCredential,
    key_id: String,
    client: usize,
    completed: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> (Vec<RoundTrip>, Vec<Failure>) {
    let mut made = Vec::new();
    let mut failures = Vec::new();
    for n in 0.. {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let plaintext = random_plaintext();
        let aad = format!("client={client},n={n}").into_bytes();
        let body = xks::encrypt_body(&plaintext, Some(&aad), true);
        let sealed = match balancer.send(&credential, &key_id, "encrypt", &body).await {
            Ok(answer) => {
                assert!(
                    answer.body["ciphertextDataIntegrityValue"].is_string(),
                    "a CDIV was asked for: {}",
                    answer.body
                );
                Sealed::from_answer(&answer.body).unwrap()
            }
            Err(failure) => {
                failures.push(failure);
                continue;
            }
        };
        let body = xks::decrypt_body(&sealed, Some(&aad));
        match balancer.send(&credential, &key_id, "decrypt", &body).await {
            Ok(answer) => assert_eq!(
                xks::plaintext_of(&answer.body).as_deref(),
                Some(plaintext.as_slice()),
                "decrypt gave back another plaintext"
            ),
            Err(failure) => failures.push(failure),
        }
        // Kept even when its decrypt failed: it must decrypt on the survivor.
        made.push(RoundTrip {
            plaintext,
            aad,
            sealed,
        });
        completed.fetch_add(1, Ordering::SeqCst);
    }
    (made, failures)
}

/// Waits until `completed` reaches `count` (bounded).
async fn completed_reaches(completed: &AtomicUsize, count: usize) {
    within(Duration::from_secs(40), "load round trips", || async {
        completed.load(Ordering::SeqCst) >= count
    })
    .await;
}

async fn encrypt(
    client: &XksClient,
    endpoint: &XksEndpoint,
    credential: &XksCredential,
    key_id: &str,
) -> Answer {
    let body = xks::encrypt_body(b"reload probe", None, false);
    client
        .post(&endpoint.key_url(key_id, "encrypt"), credential, &body)
        .await
        .unwrap()
}

/// Node A is killed with SIGKILL in the middle of the load. The balancer
/// takes it out at the first connection to it refused or cut and sends the
/// rest to B:
/// only requests A had in flight fail, B fails none, every ciphertext made
/// before and after decrypts on B, B's health answer still comes. A
/// credential rotated through B meanwhile is what A serves once started
/// again.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_killed_mid_load_fails_only_what_it_had_in_flight_and_its_peer_serves_on() {
    let cluster = Cluster::new("xks-kill").await;
    let mut a = cluster.serve("node-a");
    let token = cluster.administrators(&a).await;
    let store = unique("kill");
    let (prefix, first) = cluster.create_store(&a, &token, &store).await;
    let key_id = cluster.create_key(&a, &token, &store).await;
    // B starts once the key is on the token: with SoftHSM2, a process that
    // reads a token while another writes it can misread it (see
    // scripts/softhsm-per-test); a real HSM serialises its clients.
    let b = cluster.serve("node-b");
    let client = XksClient::new(cluster.http.clone());
    let on_a = XksEndpoint::new(&a.base, &prefix);
    let on_b = XksEndpoint::new(&b.base, &prefix);
    for endpoint in [&on_a, &on_b] {
        within(RELOAD_LIMIT, "both nodes serve the new key", || async {
            encrypt(&client, endpoint, &first, &key_id).await.status == 200
        })
        .await;
    }

    let balancer = Arc::new(Balancer::new(
        client.clone(),
        vec![on_a.clone(), on_b.clone()],
    ));
    let completed = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CONCURRENCY)
        .map(|n| {
            tokio::spawn(client_loop(
                balancer.clone(),
                first.clone(),
                key_id.clone(),
                n,
                completed.clone(),
                stop.clone(),
            ))
        })
        .collect();
    completed_reaches(&completed, ROUND_TRIPS_BEFORE_KILL).await;
    let target_a = &balancer.targets[0];
    // Read before the signal: what A holds when it dies is at most these
    // and those sent to it before the balancer took it out.
    let in_flight_at_kill = target_a.in_flight.load(Ordering::SeqCst);
    let sent_at_kill = target_a.sent.load(Ordering::SeqCst);
    a.kill();
    completed_reaches(&completed, ROUND_TRIPS_BEFORE_KILL + ROUND_TRIPS_AFTER_KILL).await;
    stop.store(true, Ordering::SeqCst);
    let mut made = Vec::new();
    let mut failures = Vec::new();
    for client in clients {
        let (m, f) = client.await.unwrap();
        made.extend(m);
        failures.extend(f);
    }

    assert!(
        target_a.down.load(Ordering::SeqCst),
        "the balancer never saw a connection to A fail"
    );
    let sent_until_taken_out = target_a.sent_when_taken_out.load(Ordering::SeqCst);
    let late = sent_until_taken_out.saturating_sub(sent_at_kill);
    let failed: Vec<String> = failures
        .iter()
        .map(|f| format!("node {} request {}: {}", f.node, f.sequence, f.what))
        .collect();
    eprintln!(
        "{} round trips; A held {in_flight_at_kill} requests when the kill was sent and was \
         sent {late} more (while it died, and on kept-alive connections to it) before the \
         balancer took it out; {} failed: {failed:#?}",
        made.len(),
        failures.len()
    );
    assert!(
        failures.iter().all(|f| f.node == 0),
        "B failed requests: {failed:#?}"
    );
    assert!(
        failures.iter().all(|f| !f.answered),
        "a node answered with an error: {failed:#?}"
    );
    assert!(
        failures.iter().all(|f| f.sequence < sent_until_taken_out),
        "A failed requests sent after it was taken out: {failed:#?}"
    );
    assert!(
        failures.len() <= (in_flight_at_kill + late).min(CONCURRENCY),
        "more failures than requests in flight on A: {failed:#?}"
    );

    // Every ciphertext, from before and after the kill, decrypts on B.
    let made = Arc::new(made);
    let sweepers: Vec<_> = (0..CONCURRENCY)
        .map(|offset| {
            let (made, client, on_b, first, key_id) = (
                made.clone(),
                client.clone(),
                on_b.clone(),
                first.clone(),
                key_id.clone(),
            );
            tokio::spawn(async move {
                for round_trip in made.iter().skip(offset).step_by(CONCURRENCY) {
                    let body = xks::decrypt_body(&round_trip.sealed, Some(&round_trip.aad));
                    let answer = client
                        .post(&on_b.key_url(&key_id, "decrypt"), &first, &body)
                        .await
                        .unwrap();
                    assert_eq!(answer.status, 200, "{}", answer.body);
                    assert_eq!(
                        xks::plaintext_of(&answer.body).as_deref(),
                        Some(round_trip.plaintext.as_slice())
                    );
                }
            })
        })
        .collect();
    for sweeper in sweepers {
        sweeper.await.unwrap();
    }

    // B's health answer still comes (from its own cached deep check).
    let health = client
        .post(&on_b.health_url(), &first, &xks::health_body())
        .await
        .unwrap();
    assert_eq!(health.status, 200, "{}", health.body);
    assert_eq!(
        health.body["ekmFleetDetails"][0]["healthStatus"], "ACTIVE",
        "{}",
        health.body
    );

    // The two nodes share a data directory, yet each logged its calls to a
    // usage log of its own (their digests each cover their own lines).
    let data = cluster.dir.path().join("data");
    within(
        Duration::from_secs(5),
        "each node's own usage log",
        || async {
            ["node-a", "node-b"].iter().all(|node| {
                std::fs::read_to_string(data.join(format!("xks-usage-{node}.jsonl"))).is_ok_and(
                    |text| text.lines().count() > 0 && text.contains(&format!("\"{node}\"")),
                )
            })
        },
    )
    .await;

    // While A is down the credential is rotated through B: a second one,
    // then the first revoked.
    let second = cluster.add_credential(&b, &token, &store).await;
    cluster.revoke(&b, &token, &store, &first).await;
    within(RELOAD_LIMIT, "B refuses the revoked credential", || async {
        encrypt(&client, &on_b, &first, &key_id).await.status == 401
    })
    .await;

    // A, started again, serves the revision it loads: the new credential,
    // not the revoked one, and the ciphertexts of before.
    let a = cluster.serve("node-a");
    let on_a = XksEndpoint::new(&a.base, &prefix);
    let answer = encrypt(&client, &on_a, &first, &key_id).await;
    assert_ne!(
        answer.status, 200,
        "A restarted accepted a revoked credential"
    );
    within(
        RELOAD_LIMIT,
        "A restarted serves the new credential",
        || async { encrypt(&client, &on_a, &second, &key_id).await.status == 200 },
    )
    .await;
    let refused = encrypt(&client, &on_a, &first, &key_id).await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert_eq!(refused.error_name(), "AuthenticationFailedException");
    let oldest = &made[0];
    let answer = client
        .post(
            &on_a.key_url(&key_id, "decrypt"),
            &second,
            &xks::decrypt_body(&oldest.sealed, Some(&oldest.aad)),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        xks::plaintext_of(&answer.body).as_deref(),
        Some(oldest.plaintext.as_slice())
    );
}

/// A credential revoked, and then a key disabled, through node A are
/// refused by node B once it reloads (it polls the revision every second),
/// while the other credential goes on working there until the key is off.
#[tokio::test(flavor = "multi_thread")]
async fn a_credential_revoked_or_a_key_disabled_on_one_node_is_refused_by_the_other_within_the_reload()
 {
    let cluster = Cluster::new("xks-reload").await;
    let a = cluster.serve("node-a");
    let token = cluster.administrators(&a).await;
    let store = unique("reload");
    let (prefix, first) = cluster.create_store(&a, &token, &store).await;
    let key_id = cluster.create_key(&a, &token, &store).await;
    let second = cluster.add_credential(&a, &token, &store).await;
    // Started after the key was made (see the test above).
    let b = cluster.serve("node-b");
    let client = XksClient::new(cluster.http.clone());
    let on_b = XksEndpoint::new(&b.base, &prefix);
    within(RELOAD_LIMIT, "B serves the key", || async {
        encrypt(&client, &on_b, &first, &key_id).await.status == 200
    })
    .await;
    let answer = encrypt(&client, &on_b, &second, &key_id).await;
    assert_eq!(answer.status, 200, "{}", answer.body);

    cluster.revoke(&a, &token, &store, &first).await;
    let took = within(RELOAD_LIMIT, "B refuses the revoked credential", || async {
        let answer = encrypt(&client, &on_b, &first, &key_id).await;
        match answer.status {
            200 => false,
            401 => {
                assert_eq!(answer.error_name(), "AuthenticationFailedException");
                true
            }
            _ => panic!("B answered {} {}", answer.status, answer.body),
        }
    })
    .await;
    eprintln!(
        "B refused the revoked credential {} ms after A's answer",
        took.as_millis()
    );
    let answer = encrypt(&client, &on_b, &second, &key_id).await;
    assert_eq!(answer.status, 200, "{}", answer.body);

    // Disabling needs one key officer; the dual session holds two.
    let (status, key) = cluster
        .call(
            &a,
            Method::PATCH,
            &format!("/api/v1/xks/keys/{key_id}"),
            &token,
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{key}");
    assert_eq!(key["enabled"], false, "{key}");
    let took = within(RELOAD_LIMIT, "B refuses the disabled key", || async {
        let answer = encrypt(&client, &on_b, &second, &key_id).await;
        match answer.status {
            200 => false,
            400 => {
                assert_eq!(answer.error_name(), "InvalidStateException");
                true
            }
            _ => panic!("B answered {} {}", answer.status, answer.body),
        }
    })
    .await;
    eprintln!(
        "B refused the disabled key {} ms after A's answer",
        took.as_millis()
    );
    // KMS's DescribeKey sees it disabled there too.
    let metadata = client
        .post(
            &on_b.key_url(&key_id, "metadata"),
            &second,
            &xks::metadata_body(),
        )
        .await
        .unwrap();
    assert_eq!(metadata.status, 200, "{}", metadata.body);
    assert_eq!(metadata.body["keyStatus"], "DISABLED", "{}", metadata.body);
}
