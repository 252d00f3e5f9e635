//! Streaming the audit log to a SIEM: RFC 5424 syslog over TCP or TLS, and
//! JSON lines appended to a file. Rules:
//! - The streamer reads the committed log, never the write path: a request
//!   or an audit write never waits for a receiver, and entries written by
//!   other nodes of a cluster stream too. It looks for new entries every
//!   [`POLL`], so an entry goes out within that of its commit.
//! - In order, none lost: each sink has a cursor, the seq of the last entry
//!   it delivered, moved only after the delivery succeeded (syslog: written
//!   and flushed to the receiver's connection; file: written and synced).
//!   A restart resumes after it. A crash between delivering and moving the
//!   cursor delivers those entries again (at least once): the seq in each
//!   message's structured data lets the SIEM drop the repeat.
//! - A receiver that is away is retried with a doubling back-off up to
//!   [`MAX_BACKOFF`]; entries wait in the log meanwhile, none is dropped.
//! - Syslog's cursor is in the database, shared by the nodes of a cluster,
//!   and one node at a time streams (a lease per receiver, as the rotator
//!   holds its own); the cursor moves only from the value the streamer read,
//!   so a node that lost the lease cannot move it back. The file sink is this
//!   node's own file (like the checkpoint file): its cursor is its last line.

mod file;
mod status;
mod syslog;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use keyhold_core::StoreError;
use keyhold_core::audit::AuditEntry;
use keyhold_core::audit::syslog::Facility;
use keyhold_core::names::NodeId;
use keyhold_core::service::Keyhold;

pub use file::FileSink;
pub use status::{StreamBoard, StreamState, StreamStatus};
pub use syslog::{SyslogSink, SyslogTarget, TlsSettings};

use status::StreamSlot;

use crate::metrics::{Metrics, StreamMetrics};

/// How long a clean shutdown waits for a streamer to finish the batch it
/// is delivering (a receiver that stopped reading is cut off after it).
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// How often a streamer looks for new entries.
const POLL: Duration = Duration::from_millis(200);
/// How often a node that does not hold a syslog stream's lease asks again.
const STANDBY_POLL: Duration = Duration::from_secs(2);
/// Entries read and delivered at once.
const BATCH: u32 = 200;
/// The first wait after a failed delivery; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The stream settings as given, before they are checked.
#[derive(Debug, Default)]
pub struct StreamSettings {
    pub syslog_address: Option<String>,
    pub tls_ca_file: Option<PathBuf>,
    pub tls_server_name: Option<String>,
    pub tls_client_certificate: Option<PathBuf>,
    pub tls_client_key: Option<PathBuf>,
    pub facility: Option<String>,
    pub json_file: Option<PathBuf>,
    pub from: Option<String>,
}

/// Where a sink with no cursor yet starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StartFrom {
    /// The whole log, from its first entry.
    #[default]
    Start,
    /// After the entry that is newest when the sink first starts.
    Now,
}

/// The checked stream settings: none of either sink means no streaming.
#[derive(Clone, Debug, Default)]
pub struct StreamConfig {
    pub syslog: Option<SyslogTarget>,
    pub json_file: Option<PathBuf>,
    pub from: StartFrom,
}

impl StreamConfig {
    /// Checks the settings; each refusal names the setting and how to fix it.
    pub fn resolve(settings: StreamSettings) -> Result<Self, String> {
        let from = match settings.from.as_deref().map(str::trim) {
            None | Some("start") => StartFrom::Start,
            Some("now") => StartFrom::Now,
            Some(other) => {
                return Err(format!(
                    "audit_stream_from is '{other}', but it must be `start` (the whole log) or `now` (entries from now on): set --audit-stream-from or KEYHOLD_AUDIT_STREAM_FROM accordingly"
                ));
            }
        };
        let facility = settings
            .facility
            .as_deref()
            .map(Facility::parse)
            .transpose()
            .map_err(|e| {
                format!(
                    "audit_syslog_facility: {e} (set --audit-syslog-facility or KEYHOLD_AUDIT_SYSLOG_FACILITY)"
                )
            })?
            .unwrap_or(Facility::AUTHPRIV);
        let tls = TlsSettings {
            ca_file: settings.tls_ca_file,
            server_name: settings.tls_server_name,
            client_certificate: settings.tls_client_certificate,
            client_key: settings.tls_client_key,
        };
        let syslog = match settings.syslog_address {
            Some(address) => Some(SyslogTarget::resolve(&address, tls, facility)?),
            None if tls.is_given() => {
                return Err("audit_syslog_tls_* is set, but audit_syslog_address is not: name the syslog receiver (--audit-syslog-address HOST:PORT), or drop the TLS settings".into());
            }
            None => None,
        };
        if let Some(path) = &settings.json_file {
            file::check_writable(path)?;
        }
        Ok(Self {
            syslog,
            json_file: settings.json_file,
            from,
        })
    }

    pub fn is_off(&self) -> bool {
        self.syslog.is_none() && self.json_file.is_none()
    }
}

/// Why a delivery failed; the streamer logs it and tries again.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("the database: {0}")]
    Store(#[from] StoreError),
    #[error("reading the audit log: {0}")]
    Core(#[from] keyhold_core::CoreError),
    #[error("cannot connect to {target}: {cause}")]
    Connect { target: String, cause: String },
    #[error("sending to {target}: {cause}")]
    Send { target: String, cause: String },
    #[error("writing to {path}: {cause}")]
    File { path: String, cause: String },
}

/// A destination of the stream.
enum Sink {
    Syslog(SyslogSink),
    File(FileSink),
}

impl Sink {
    /// The metric label: which kind of sink.
    fn kind(&self) -> &'static str {
        match self {
            Self::Syslog(_) => "syslog",
            Self::File(_) => "file",
        }
    }

    /// Where it delivers: the receiver's URL, the file's path.
    fn destination(&self) -> String {
        match self {
            Self::Syslog(sink) => sink.describe(),
            Self::File(sink) => sink.path().display().to_string(),
        }
    }

    /// For the log: the kind and where.
    fn describe(&self) -> String {
        match self {
            Self::Syslog(sink) => sink.describe(),
            Self::File(sink) => sink.describe(),
        }
    }

    /// Whether this node streams to the sink now.
    async fn may_deliver(&mut self, keyhold: &Keyhold) -> Result<bool, StreamError> {
        match self {
            Self::Syslog(sink) => sink.hold_lease(keyhold).await,
            Self::File(_) => Ok(true),
        }
    }

    async fn cursor(&mut self, keyhold: &Keyhold) -> Result<Option<i64>, StreamError> {
        match self {
            Self::Syslog(sink) => sink.cursor(keyhold).await,
            Self::File(sink) => sink.cursor(keyhold).await,
        }
    }

    async fn deliver(&mut self, entries: &[AuditEntry]) -> Result<(), StreamError> {
        match self {
            Self::Syslog(sink) => sink.deliver(entries).await,
            Self::File(sink) => sink.deliver(entries).await,
        }
    }

    /// Moves the cursor from `expected` to `seq`; false when another
    /// streamer moved it meanwhile.
    async fn advance(
        &mut self,
        keyhold: &Keyhold,
        expected: Option<i64>,
        seq: i64,
    ) -> Result<bool, StreamError> {
        match self {
            Self::Syslog(sink) => sink.advance(keyhold, expected, seq).await,
            Self::File(sink) => {
                sink.advanced(keyhold, seq).await?;
                Ok(true)
            }
        }
    }
}

/// The configured sinks of this node, opened and checked at start-up.
pub struct AuditStreams {
    streamers: std::sync::Mutex<Vec<Streamer>>,
    /// Tells the streamers to stop once their batch is delivered and its
    /// cursor moved ([`Self::stop`]).
    stop: tokio::sync::watch::Sender<bool>,
    /// What each of them is doing, for the API and the web UI.
    board: Arc<StreamBoard>,
    keyhold: Keyhold,
    node: NodeId,
    /// The syslog receivers' leases this node may hold.
    leases: Vec<String>,
}

impl AuditStreams {
    /// Opens the sinks: the JSON file is opened and its last line read now,
    /// so a file keyhold did not write stops start-up instead of being
    /// appended to.
    pub fn open(
        keyhold: &Keyhold,
        config: &StreamConfig,
        node: &NodeId,
        metrics: &Arc<Metrics>,
    ) -> Result<Self, String> {
        let mut sinks = Vec::new();
        if let Some(target) = &config.syslog {
            sinks.push(Sink::Syslog(SyslogSink::new(target.clone(), node.clone())));
        }
        if let Some(path) = &config.json_file {
            sinks.push(Sink::File(FileSink::open(path, node)?));
        }
        let board = Arc::new(StreamBoard::default());
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let streamers = sinks
            .into_iter()
            .map(|sink| {
                tracing::info!(sink = %sink.describe(), "the audit log streams to this sink");
                Streamer {
                    keyhold: keyhold.clone(),
                    stop: stopped.clone(),
                    metrics: metrics.audit_stream(sink.kind()),
                    status: board.add(sink.kind(), sink.destination()),
                    sink,
                    from: config.from,
                    cursor: None,
                    backoff: FIRST_BACKOFF,
                }
            })
            .collect();
        Ok(Self {
            streamers: std::sync::Mutex::new(streamers),
            stop,
            board,
            keyhold: keyhold.clone(),
            node: node.clone(),
            leases: config.syslog.iter().map(SyslogTarget::lease_name).collect(),
        })
    }

    /// After the streamers stopped (a clean shutdown): gives up this node's
    /// receiver leases, so another node of the cluster streams at once
    /// instead of when they expire.
    pub async fn release(&self) {
        for lease in &self.leases {
            if let Err(error) = self.keyhold.store().release_lease(lease, &self.node).await {
                tracing::warn!(%error, lease, "could not release an audit stream's lease; it expires by itself");
            }
        }
    }

    /// The streams' statuses, shared with the request handlers.
    pub fn board(&self) -> Arc<StreamBoard> {
        Arc::clone(&self.board)
    }

    /// Asks the streamers to stop (a clean shutdown): each ends after the
    /// batch it is delivering, its cursor moved, so the node that takes a
    /// receiver over resumes exactly after what this one delivered. The
    /// caller waits for the tasks before [`Self::release`].
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// Starts one task per sink; they stream until stopped ([`Self::stop`])
    /// or aborted.
    pub fn spawn(&self) -> Vec<tokio::task::JoinHandle<()>> {
        let streamers = std::mem::take(
            &mut *self
                .streamers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        streamers
            .into_iter()
            .map(|streamer| tokio::spawn(streamer.run()))
            .collect()
    }
}

/// What one pass over the log did.
enum Pass {
    /// Delivered a batch; there may be more.
    Delivered,
    /// Nothing new.
    Idle,
    /// Another node streams to this sink.
    Standby,
}

struct Streamer {
    keyhold: Keyhold,
    /// `true` once the node shuts down cleanly.
    stop: tokio::sync::watch::Receiver<bool>,
    sink: Sink,
    from: StartFrom,
    metrics: StreamMetrics,
    status: StreamSlot,
    /// The cursor as last read or moved by this streamer: `None` when it
    /// must be read again (at start, after another node moved it).
    cursor: Option<Option<i64>>,
    backoff: Duration,
}

impl Streamer {
    async fn run(mut self) {
        // A pass is never cut short by a stop: only the waits between passes.
        while !*self.stop.borrow() {
            let pause = match self.pass().await {
                Ok(Pass::Delivered) => {
                    self.recovered();
                    continue;
                }
                Ok(Pass::Idle) => {
                    self.recovered();
                    POLL
                }
                Ok(Pass::Standby) => {
                    self.cursor = None;
                    self.status.update(|s| s.state = StreamState::Standby);
                    STANDBY_POLL
                }
                Err(error) => {
                    self.metrics.failed();
                    self.status.update(|s| {
                        s.state = StreamState::Retrying;
                        s.last_error = Some(error.to_string());
                        s.failures += 1;
                    });
                    tracing::warn!(
                        sink = %self.sink.describe(),
                        %error,
                        retry_in_ms = self.backoff.as_millis() as u64,
                        "audit entries not delivered yet; they wait in the log and go out in order once the sink takes them"
                    );
                    let pause = self.backoff;
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                    pause
                }
            };
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                changed = self.stop.changed() => {
                    // The sender gone is a stop too.
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    }

    fn recovered(&mut self) {
        if self.backoff != FIRST_BACKOFF {
            tracing::info!(sink = %self.sink.describe(), "audit stream delivering again");
        }
        self.backoff = FIRST_BACKOFF;
        self.metrics.up(true);
        let cursor = self.cursor.flatten();
        self.status.update(|s| {
            s.state = StreamState::Delivering;
            s.last_error = None;
            s.cursor = cursor;
        });
    }

    async fn pass(&mut self) -> Result<Pass, StreamError> {
        if !self.sink.may_deliver(&self.keyhold).await? {
            return Ok(Pass::Standby);
        }
        let cursor = match self.cursor {
            Some(cursor) => cursor,
            None => {
                let cursor = self.start().await?;
                self.cursor = Some(cursor);
                cursor
            }
        };
        let after = cursor.unwrap_or(0);
        let entries = self.keyhold.store().audit_page(after, BATCH).await?;
        let Some(last) = entries.last().map(|e| e.seq) else {
            self.metrics.lag(0);
            self.status.update(|s| s.lag = Some(0));
            return Ok(Pass::Idle);
        };
        if let Ok(head) = self.keyhold.audit_head().await {
            self.metrics.lag(head.seq - after);
            self.status.update(|s| s.lag = Some(head.seq - after));
        }
        if let Err(error) = self.sink.deliver(&entries).await {
            self.metrics.up(false);
            return Err(error);
        }
        if !self.sink.advance(&self.keyhold, cursor, last).await? {
            tracing::warn!(
                sink = %self.sink.describe(),
                "another node moved this audit stream's cursor; reading it again"
            );
            return Ok(Pass::Standby);
        }
        self.cursor = Some(Some(last));
        self.metrics.delivered(entries.len() as u64, last);
        let now = self.keyhold.now();
        self.status.update(|s| {
            s.cursor = Some(last);
            s.last_delivered_at = Some(now);
        });
        Ok(Pass::Delivered)
    }

    /// The sink's cursor; for a sink that has none yet and starts `now`, the
    /// newest entry, recorded as its cursor so a restart keeps that start.
    async fn start(&mut self) -> Result<Option<i64>, StreamError> {
        let cursor = self.sink.cursor(&self.keyhold).await?;
        if cursor.is_some() || self.from == StartFrom::Start {
            return Ok(cursor);
        }
        let head = self.keyhold.audit_head().await?.seq;
        if self.sink.advance(&self.keyhold, None, head).await? {
            tracing::info!(sink = %self.sink.describe(), after_seq = head, "new audit stream starts after the newest entry (audit_stream_from = now)");
            Ok(Some(head))
        } else {
            self.sink.cursor(&self.keyhold).await
        }
    }
}

/// An entry as the export writes it, without the newline: the body of a
/// syslog message and a line of the JSON file.
fn export_line(entry: &AuditEntry) -> String {
    serde_json::to_string(&crate::views::audit_entry(entry)).unwrap_or_else(|_| "{}".to_owned())
}
