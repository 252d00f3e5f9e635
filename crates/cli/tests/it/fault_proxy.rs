//! A hostile network between keyhold and the KMS peer: a loopback HTTP/1.1
//! proxy that forwards AWS JSON 1.1 requests to LocalStack and, following a
//! plan the test sets, answers some of them itself the way AWS or a broken
//! network would: a `ThrottlingException`, an HTTP 500 or 503 with an AWS
//! error body, an answer held back past the client's timeout, a connection
//! reset, or a partition that resets every connection until it heals.
//!
//! Only the test's credential points at the proxy; the test reads KMS state
//! directly from LocalStack, never through it.
//!
//! It can also play the man in the middle keyhold's custody rules guard
//! against ([`FaultProxy::swap_wrapping_key`]): it answers
//! `GetParametersForImport` with a wrapping public key of its own choosing
//! and keeps every `ImportKeyMaterial` it sees, so a test can tell whether
//! key material reached it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does instead of (or on top of) forwarding a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// HTTP 400 with `ThrottlingException`, as KMS answers over its quota.
    Throttle,
    /// HTTP 500 (`KMSInternalException`) or 503 (`ServiceUnavailableException`).
    ServerError(u16),
    /// Forwarded (KMS acts on it), but the answer is held back this long.
    SlowAnswer(Duration),
    /// The connection is reset once the request is read, before forwarding.
    Reset,
}

/// Which requests a rule hits, among those of its operation.
#[derive(Clone, Copy, Debug)]
pub enum Schedule {
    /// The first `n`.
    First(u32),
    /// Every `n`th (1 = all).
    Every(u32),
}

/// One fault for the requests of one operation (its `X-Amz-Target` action,
/// as `CreateKey`), or of every operation.
#[derive(Clone, Debug)]
pub struct Rule {
    pub operation: Option<&'static str>,
    pub fault: Fault,
    pub schedule: Schedule,
}

impl Rule {
    pub fn on(operation: &'static str, fault: Fault, schedule: Schedule) -> Self {
        Self {
            operation: Some(operation),
            fault,
            schedule,
        }
    }

    pub fn on_all(fault: Fault, schedule: Schedule) -> Self {
        Self {
            operation: None,
            fault,
            schedule,
        }
    }
}

/// What went through the proxy since the plan was last set.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    pub requests: u32,
    pub forwarded: u32,
    pub injected: u32,
    /// Connections reset because of the partition.
    pub partitioned: u32,
}

#[derive(Default)]
struct Plan {
    rules: Vec<(Rule, u32)>,
    tally: Tally,
}

struct Shared {
    upstream: String,
    http: reqwest::Client,
    plan: Mutex<Plan>,
    partition: AtomicBool,
    swap: Mutex<Swap>,
}

/// The man in the middle's state: the public key it hands out instead of
/// KMS's, and what it has seen.
#[derive(Clone, Debug, Default)]
pub struct Swap {
    /// Base64 DER of the wrapping public key to hand out; None: pass through.
    pub public_key: Option<String>,
    /// `GetParametersForImport` answers whose public key it replaced.
    pub swapped: u32,
    /// The `EncryptedKeyMaterial` of every `ImportKeyMaterial` it saw.
    pub captured: Vec<String>,
}

pub struct FaultProxy {
    pub url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// A proxy on a free loopback port, forwarding to `upstream` (the KMS peer).
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            plan: Mutex::default(),
            partition: AtomicBool::new(false),
            swap: Mutex::default(),
        });
        let accepting = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(serve_connection(stream, accepting.clone()));
            }
        });
        Self { url, shared, task }
    }

    /// Replaces the plan and starts a new tally.
    pub fn set_plan(&self, rules: Vec<Rule>) {
        let mut plan = self.shared.plan.lock().unwrap();
        plan.rules = rules.into_iter().map(|r| (r, 0)).collect();
        plan.tally = Tally::default();
    }

    /// Cuts keyhold off from KMS (every connection reset at once), or heals.
    pub fn partition(&self, on: bool) {
        self.shared.partition.store(on, Ordering::SeqCst);
    }

    pub fn tally(&self) -> Tally {
        self.shared.plan.lock().unwrap().tally.clone()
    }

    /// From now on answers `GetParametersForImport` with `public_key` (base64
    /// DER) instead of KMS's, and keeps the material sent to it.
    pub fn swap_wrapping_key(&self, public_key: &str) {
        self.shared.swap.lock().unwrap().public_key = Some(public_key.to_owned());
    }

    pub fn swap_state(&self) -> Swap {
        self.shared.swap.lock().unwrap().clone()
    }
}

/// The fault for a request of `operation`, if a rule hits it.
fn decide(shared: &Shared, operation: &str) -> Option<Fault> {
    let mut plan = shared.plan.lock().unwrap();
    plan.tally.requests += 1;
    let mut chosen = None;
    for (rule, seen) in &mut plan.rules {
        if rule.operation.is_some_and(|op| op != operation) {
            continue;
        }
        *seen += 1;
        let hit = match rule.schedule {
            Schedule::First(n) => *seen <= n,
            Schedule::Every(n) => *seen % n.max(1) == 0,
        };
        if hit && chosen.is_none() {
            chosen = Some(rule.fault);
        }
    }
    if chosen.is_some() {
        plan.tally.injected += 1;
    }
    chosen
}

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `TrentService.CreateKey` → `CreateKey`.
    fn operation(&self) -> String {
        let target = self.header("x-amz-target").unwrap_or_default();
        target.rsplit('.').next().unwrap_or(target).to_owned()
    }
}

/// Reads one request (the SDK sends a Content-Length, never chunks); `None`
/// when the client closed the connection.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Request> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_owned();
    let path = first.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[head_end..head_end + length].to_vec();
    buf.drain(..head_end + length);
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

/// Drops the connection with a TCP reset rather than a clean close.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn serve_connection(mut stream: TcpStream, shared: Arc<Shared>) {
    let mut buf = Vec::new();
    loop {
        if shared.partition.load(Ordering::SeqCst) {
            shared.plan.lock().unwrap().tally.partitioned += 1;
            return reset(stream);
        }
        let Some(request) = read_request(&mut stream, &mut buf).await else {
            return;
        };
        if shared.partition.load(Ordering::SeqCst) {
            shared.plan.lock().unwrap().tally.partitioned += 1;
            return reset(stream);
        }
        let operation = request.operation();
        let fault = decide(&shared, &operation);
        let answer = match fault {
            Some(Fault::Reset) => return reset(stream),
            Some(Fault::Throttle) => aws_error(400, "ThrottlingException", "Rate exceeded"),
            Some(Fault::ServerError(status)) => {
                let code = if status == 503 {
                    "ServiceUnavailableException"
                } else {
                    "KMSInternalException"
                };
                aws_error(status, code, "injected by the fault proxy")
            }
            Some(Fault::SlowAnswer(delay)) => {
                let answer = forward(&shared, request).await;
                tokio::time::sleep(delay).await;
                answer
            }
            None => man_in_the_middle(&shared, &operation, request).await,
        };
        if stream.write_all(&answer).await.is_err() {
            return;
        }
    }
}

/// An AWS JSON 1.1 error, as KMS sends it.
fn aws_error(status: u16, code: &str, message: &str) -> Vec<u8> {
    let body = serde_json::json!({"__type": code, "message": message}).to_string();
    response(
        status,
        &[
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amzn-errortype", code),
            ("x-amzn-requestid", &uuid::Uuid::new_v4().to_string()),
        ],
        body.as_bytes(),
    )
}

fn response(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let mut out = format!("HTTP/1.1 {status} {reason}\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// Forwards the request; with a swap set, keeps the material an import
/// carries and hands out its own public key for imports.
async fn man_in_the_middle(shared: &Shared, operation: &str, request: Request) -> Vec<u8> {
    let swapping = shared.swap.lock().unwrap().public_key.clone();
    let Some(public_key) = swapping else {
        return forward(shared, request).await;
    };
    if operation == "ImportKeyMaterial"
        && let Ok(body) = serde_json::from_slice::<serde_json::Value>(&request.body)
        && let Some(material) = body["EncryptedKeyMaterial"].as_str()
    {
        shared
            .swap
            .lock()
            .unwrap()
            .captured
            .push(material.to_owned());
    }
    let answer = forward(shared, request).await;
    if operation != "GetParametersForImport" {
        return answer;
    }
    let Some(split) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return answer;
    };
    let Ok(mut body) = serde_json::from_slice::<serde_json::Value>(&answer[split + 4..]) else {
        return answer;
    };
    if body.get("PublicKey").is_none() {
        return answer;
    }
    body["PublicKey"] = serde_json::Value::String(public_key);
    shared.swap.lock().unwrap().swapped += 1;
    response(
        200,
        &[("content-type", "application/x-amz-json-1.1")],
        body.to_string().as_bytes(),
    )
}

async fn forward(shared: &Shared, request: Request) -> Vec<u8> {
    let method = reqwest::Method::from_bytes(request.method.as_bytes()).unwrap();
    let mut upstream = shared
        .http
        .request(method, format!("{}{}", shared.upstream, request.path))
        .body(request.body.clone());
    for (name, value) in &request.headers {
        if !["host", "content-length", "connection"]
            .iter()
            .any(|h| name.eq_ignore_ascii_case(h))
        {
            upstream = upstream.header(name, value);
        }
    }
    {
        shared.plan.lock().unwrap().tally.forwarded += 1;
    }
    let answer = match upstream.send().await {
        Ok(answer) => answer,
        // The peer itself is away: say so the way a gateway would.
        Err(_) => return aws_error(503, "ServiceUnavailableException", "KMS peer unreachable"),
    };
    let status = answer.status().as_u16();
    let headers: Vec<(String, String)> = answer
        .headers()
        .iter()
        .filter(|(n, _)| {
            !["content-length", "transfer-encoding", "connection"].contains(&n.as_str())
        })
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or_default().to_owned()))
        .collect();
    let body = answer.bytes().await.unwrap_or_default();
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    response(status, &headers, &body)
}
