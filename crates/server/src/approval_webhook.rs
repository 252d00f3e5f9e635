//! The approval webhook: tells a team's chat or ticketing of every approval
//! request made and decided, by an HMAC-signed POST.
//!
//! Rules:
//! - Delivery never holds up the request that caused it: each event is
//!   posted from a task of its own, retried a few times with back-off on a
//!   transport error or a 5xx answer, each attempt within a timeout.
//! - The body is `{"event": …, "request": <ApprovalView>}`; the
//!   `X-Keyhold-Signature` header is `sha256=` and the hex HMAC-SHA256 of
//!   exactly that body under the configured secret, so the receiver can
//!   tell keyhold's events from anyone else's.
//! - The secret is never logged, printed or put in an error; a failed
//!   delivery is logged (URL and reason) and counted in /metrics.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use keyhold_api as api;
use prometheus_client::metrics::counter::Counter;
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

/// How long one delivery attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// The waits before the attempts after the first.
const RETRY_DELAYS: [Duration; 3] = [
    Duration::from_millis(500),
    Duration::from_secs(2),
    Duration::from_secs(8),
];

/// Where the approval events go, as configured.
#[derive(Clone)]
pub struct WebhookConfig {
    /// An `http://` or `https://` URL.
    pub url: reqwest::Url,
    /// The HMAC key of the signatures.
    pub secret: SecretString,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &"…")
            .finish_non_exhaustive()
    }
}

/// The webhook's counters, registered by [`crate::metrics::Metrics`]
/// (a clone counts into the same values).
#[derive(Clone, Debug, Default)]
pub struct WebhookCounters {
    /// Events the receiver took (2xx).
    pub delivered: Counter,
    /// Attempts that failed (each retry counts).
    pub failed_attempts: Counter,
    /// Events given up on after the last retry.
    pub dropped: Counter,
}

/// Where approval events go (nowhere unless a webhook is configured).
#[derive(Default)]
pub struct ApprovalEvents {
    sink: Option<Arc<Sink>>,
}

impl std::fmt::Debug for ApprovalEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApprovalEvents")
            .field("enabled", &self.sink.is_some())
            .finish()
    }
}

struct Sink {
    http: reqwest::Client,
    url: reqwest::Url,
    secret: SecretString,
    counters: WebhookCounters,
}

impl ApprovalEvents {
    /// No webhook: events go nowhere.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// The events of a server with this configuration, counted in `counters`.
    pub fn start(
        config: &crate::config::Config,
        counters: WebhookCounters,
    ) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(Self::new(
            config.approval_webhook.as_ref(),
            counters,
        )?))
    }

    /// Events go to the configured webhook, if any.
    pub fn new(config: Option<&WebhookConfig>, counters: WebhookCounters) -> anyhow::Result<Self> {
        let Some(config) = config else {
            return Ok(Self::disabled());
        };
        let http = reqwest::Client::builder()
            .timeout(ATTEMPT_TIMEOUT)
            .connect_timeout(ATTEMPT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("keyhold/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                anyhow::anyhow!("cannot set up the approval webhook's HTTP client: {e}")
            })?;
        Ok(Self {
            sink: Some(Arc::new(Sink {
                http,
                url: config.url.clone(),
                secret: config.secret.clone(),
                counters,
            })),
        })
    }

    /// A request was made and waits for approvals.
    pub fn requested(&self, request: &api::ApprovalView) {
        self.send("requested", request);
    }

    /// A request was approved, denied, executed or failed (or got one of
    /// several approvals it needs: `voted`).
    pub fn decided(&self, request: &api::ApprovalView) {
        self.send(event_of(&request.status), request);
    }

    fn send(&self, event: &str, request: &api::ApprovalView) {
        let Some(sink) = &self.sink else { return };
        let body = match serde_json::to_vec(&serde_json::json!({
            "event": event,
            "request": request,
        })) {
            Ok(body) => body,
            Err(e) => {
                tracing::error!(error = %e, "approval webhook: the event does not serialise");
                return;
            }
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(event, request = %request.id, "approval webhook: no runtime to deliver the event from");
            return;
        };
        let signature = sign(sink.secret.expose_secret().as_bytes(), &body);
        let sink = sink.clone();
        let event = event.to_owned();
        let id = request.id.clone();
        runtime.spawn(async move { sink.deliver(&event, &id, body, signature).await });
    }
}

impl Sink {
    /// Scheme, host and port of the receiver: its path or query may hold a
    /// token of its own (chat webhooks do), so they stay out of the log.
    fn target(&self) -> String {
        let mut target = format!(
            "{}://{}",
            self.url.scheme(),
            self.url.host_str().unwrap_or("?")
        );
        if let Some(port) = self.url.port() {
            target.push_str(&format!(":{port}"));
        }
        target
    }

    async fn deliver(&self, event: &str, id: &str, body: Vec<u8>, signature: String) {
        let counters = &self.counters;
        let mut attempt = 0usize;
        loop {
            let sent = self
                .http
                .post(self.url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header("X-Keyhold-Event", event)
                .header("X-Keyhold-Signature", &signature)
                .body(body.clone())
                .send()
                .await;
            let reason = match sent {
                Ok(answer) if answer.status().is_success() => {
                    counters.delivered.inc();
                    tracing::debug!(event, request = id, "approval webhook: delivered");
                    return;
                }
                Ok(answer) if answer.status().is_server_error() => {
                    format!("the receiver answered {}", answer.status())
                }
                Ok(answer) => {
                    // A 4xx will not change by asking again.
                    counters.failed_attempts.inc();
                    counters.dropped.inc();
                    tracing::warn!(
                        event,
                        request = id,
                        receiver = %self.target(),
                        status = %answer.status(),
                        "approval webhook: the receiver refused the event; not retried"
                    );
                    return;
                }
                Err(e) => without_url(e),
            };
            counters.failed_attempts.inc();
            let Some(delay) = RETRY_DELAYS.get(attempt) else {
                counters.dropped.inc();
                tracing::warn!(
                    event,
                    request = id,
                    receiver = %self.target(),
                    reason,
                    "approval webhook: delivery failed; the event is dropped"
                );
                return;
            };
            tracing::info!(
                event,
                request = id,
                receiver = %self.target(),
                reason,
                "approval webhook: delivery failed; retrying"
            );
            attempt += 1;
            tokio::time::sleep(*delay).await;
        }
    }
}

/// A transport error, without its URL (logged beside it anyway).
fn without_url(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The event a request's status tells.
pub fn event_of(status: &str) -> &'static str {
    match status {
        "pending" => "voted",
        "approved" => "approved",
        "executed" => "executed",
        "failed" => "failed",
        "denied" => "denied",
        "expired" => "expired",
        _ => "changed",
    }
}

/// `sha256=<hex HMAC-SHA256 of body under key>`.
pub fn sign(key: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length: this cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_in_hex() {
        // RFC 4231, test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn events_follow_the_status() {
        assert_eq!(event_of("executed"), "executed");
        assert_eq!(event_of("denied"), "denied");
        assert_eq!(event_of("pending"), "voted");
    }

    #[test]
    fn the_secret_stays_out_of_debug_output() {
        let config = WebhookConfig {
            url: reqwest::Url::parse("https://hooks.example/keyhold").unwrap(),
            secret: SecretString::from("s3cr3t-value".to_owned()),
        };
        let text = format!("{config:?}");
        assert!(!text.contains("s3cr3t"));
    }
}
