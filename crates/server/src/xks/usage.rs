//! The usage log: one JSON line per XKS call, on this node, to a file.
//!
//! Rules:
//! - A line holds the request's metadata, the key, the operation, the
//!   outcome and the latency; never plaintext, AAD or ciphertext (the type
//!   below has no field that could hold them).
//! - Requests never wait for the file: lines go through a bounded channel
//!   to one writer thread with a buffered file, flushed at least every
//!   second. The writer takes lines in batches every few milliseconds, so
//!   a request does not wake it (a thread hand-off per call). When the
//!   channel is full the line is dropped and counted (metric and the next
//!   digest), rather than slowing KMS's requests.
//! - The writer numbers lines as they are in the file (it counts the lines
//!   already there when it opens it) and hashes each period's lines, so a
//!   digest in the audit log can name the lines it covers and their
//!   SHA-256 (`sed -n 'A,Bp' file | sha256sum`). Before answering a cut
//!   it flushes and syncs, so the lines a digest names are on disk.
//! - A file moved away or truncated (log rotation) is noticed within a
//!   second: the writer reopens the path and numbers from the new file;
//!   the period then has one segment per file.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::time::{Duration, Instant};

use serde::Serialize;
use sha2::{Digest, Sha256};

/// Lines waiting for the writer at most; beyond that they are dropped.
const CHANNEL_LINES: usize = 16 * 1024;
/// The writer flushes at least this often.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// How long the writer rests after taking what was queued. A line sent to
/// a writer waiting in the channel wakes its thread: under load, one wake
/// (a thread hand-off) per XKS call. Resting, it is woken by nothing, and
/// takes the lines of the last few milliseconds at once; a line or a
/// digest's cut waits for it that long at most.
const BATCH_EVERY: Duration = Duration::from_millis(5);

/// One XKS call as the usage log records it. Every field is request
/// metadata or keyhold's own; nothing a caller encrypts or decrypts.
#[derive(Debug, Serialize)]
pub struct UsageLine<'a> {
    pub time: String,
    pub node: &'a str,
    pub store: Option<&'a str>,
    pub key: Option<&'a str>,
    /// `health`, `metadata`, `encrypt` or `decrypt`; `unknown` when the
    /// path named none.
    pub operation: &'a str,
    pub kms_operation: Option<&'a str>,
    pub kms_request_id: Option<&'a str>,
    pub aws_principal_arn: Option<&'a str>,
    pub kms_key_arn: Option<&'a str>,
    pub aws_source_vpc: Option<&'a str>,
    pub aws_source_vpce: Option<&'a str>,
    pub kms_via_service: Option<&'a str>,
    pub access_key_id: Option<&'a str>,
    /// `ok`, or the `errorName` answered.
    pub outcome: &'a str,
    /// Why it was refused, for the operator (never a secret).
    pub detail: Option<&'a str>,
    pub latency_us: u64,
}

/// The lines of one file a period covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Segment {
    pub file: String,
    /// How many lines; the numbers and hash are absent when none.
    pub lines: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_line: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_line: Option<u64>,
    /// Hex SHA-256 of exactly those lines' bytes, newlines included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Some of the period's lines could not be written (the disk full, say):
    /// the file lacks them, and the hash will not match.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub write_failed: bool,
}

enum Message {
    Line(String),
    Cut(tokio::sync::oneshot::Sender<Vec<Segment>>),
}

/// The request side of the usage log.
pub struct UsageLog {
    sender: SyncSender<Message>,
    /// Lines dropped since the last cut (channel full or writer gone).
    dropped_in_period: AtomicU64,
    on_drop: Arc<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for UsageLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageLog").finish_non_exhaustive()
    }
}

impl UsageLog {
    /// Starts the writer thread on `path`. `on_drop` is told of each line
    /// dropped (the metric). The thread ends when this is dropped.
    pub fn start(path: PathBuf, on_drop: Arc<dyn Fn() + Send + Sync>) -> std::io::Result<Self> {
        let (sender, receiver) = std::sync::mpsc::sync_channel(CHANNEL_LINES);
        let writer = Writer::open(path)?;
        std::thread::Builder::new()
            .name("xks-usage-log".into())
            .spawn(move || writer.run(receiver))?;
        Ok(Self {
            sender,
            dropped_in_period: AtomicU64::new(0),
            on_drop,
        })
    }

    /// Queues one line; never waits.
    pub fn record(&self, line: &UsageLine<'_>) {
        let text = match serde_json::to_string(line) {
            Ok(mut text) => {
                text.push('\n');
                text
            }
            Err(error) => {
                tracing::error!(%error, "an XKS usage line cannot be encoded");
                self.dropped();
                return;
            }
        };
        match self.sender.try_send(Message::Line(text)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => self.dropped(),
        }
    }

    fn dropped(&self) {
        self.dropped_in_period.fetch_add(1, Ordering::Relaxed);
        (self.on_drop)();
    }

    /// Ends the period: the writer flushes and syncs, and returns the
    /// segments the period's lines are in, with the lines dropped in it.
    pub async fn cut(&self) -> (Vec<Segment>, u64) {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let sender = self.sender.clone();
        // Waits for room behind the lines already queued, off the executor.
        let sent = tokio::task::spawn_blocking(move || sender.send(Message::Cut(reply))).await;
        let dropped = self.dropped_in_period.swap(0, Ordering::Relaxed);
        match sent {
            Ok(Ok(())) => (answer.await.unwrap_or_default(), dropped),
            _ => (Vec::new(), dropped),
        }
    }
}

/// The file side: the open file, its line count and the period's hashes.
struct Writer {
    path: PathBuf,
    file: Option<OpenFile>,
    /// Segments of the period closed by a rotation.
    closed: Vec<Segment>,
    /// When the last failure was logged, so a full disk logs once a minute.
    last_complaint: Option<Instant>,
}

struct OpenFile {
    out: BufWriter<File>,
    device: u64,
    inode: u64,
    /// Bytes in the file as this writer knows it (written or found).
    length: u64,
    /// Lines in the file, the same way.
    lines: u64,
    segment: OpenSegment,
}

struct OpenSegment {
    first_line: u64,
    lines: u64,
    hash: Sha256,
    write_failed: bool,
}

impl OpenSegment {
    fn starting_after(lines: u64) -> Self {
        Self {
            first_line: lines + 1,
            lines: 0,
            hash: Sha256::new(),
            write_failed: false,
        }
    }

    fn close(&mut self, file: &Path, next_first_line: u64) -> Segment {
        let done = std::mem::replace(self, Self::starting_after(next_first_line - 1));
        let has_lines = done.lines > 0;
        Segment {
            file: file.display().to_string(),
            lines: done.lines,
            first_line: has_lines.then_some(done.first_line),
            last_line: has_lines.then_some(done.first_line + done.lines - 1),
            sha256: has_lines.then(|| hex::encode(done.hash.finalize())),
            write_failed: done.write_failed,
        }
    }
}

impl Writer {
    fn open(path: PathBuf) -> std::io::Result<Self> {
        let file = OpenFile::open(&path)?;
        Ok(Self {
            path,
            file: Some(file),
            closed: Vec::new(),
            last_complaint: None,
        })
    }

    fn run(mut self, receiver: Receiver<Message>) {
        let mut next_flush = Instant::now() + FLUSH_EVERY;
        loop {
            let wait = next_flush.saturating_duration_since(Instant::now());
            // Idle, the writer sleeps in the channel until a line comes;
            // then it takes every line queued and rests for `BATCH_EVERY`.
            match receiver.recv_timeout(wait) {
                Ok(message) => self.take(message),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return self.flush(true),
            }
            loop {
                match receiver.try_recv() {
                    Ok(message) => self.take(message),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return self.flush(true),
                }
            }
            // Checked after every batch too: under steady traffic the
            // channel is never empty long enough to time out.
            if Instant::now() >= next_flush {
                self.flush(false);
                self.follow_rotation();
                next_flush = Instant::now() + FLUSH_EVERY;
            }
            std::thread::sleep(BATCH_EVERY);
        }
    }

    fn take(&mut self, message: Message) {
        match message {
            Message::Line(line) => self.write(&line),
            Message::Cut(reply) => {
                self.flush(true);
                let _ = reply.send(self.cut());
            }
        }
    }

    fn write(&mut self, line: &str) {
        if self.file.is_none() {
            self.reopen();
        }
        let Some(file) = &mut self.file else {
            return;
        };
        match file.out.write_all(line.as_bytes()) {
            Ok(()) => {
                file.length += line.len() as u64;
                file.lines += 1;
                file.segment.lines += 1;
                file.segment.hash.update(line.as_bytes());
            }
            Err(error) => {
                file.segment.write_failed = true;
                self.complain(&error);
            }
        }
    }

    fn flush(&mut self, sync: bool) {
        let Some(file) = &mut self.file else {
            return;
        };
        let flushed = file.out.flush().and_then(|()| {
            if sync {
                file.out.get_ref().sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(error) = flushed {
            file.segment.write_failed = true;
            self.complain(&error);
        }
    }

    /// The period's segments: those a rotation closed, and the open one.
    fn cut(&mut self) -> Vec<Segment> {
        let mut segments = std::mem::take(&mut self.closed);
        if let Some(file) = &mut self.file {
            let next = file.lines + 1;
            segments.push(file.segment.close(&self.path, next));
        }
        segments
    }

    /// Reopens the path when the file there is no longer the one open
    /// (moved away, replaced) or is shorter than written (truncated).
    fn follow_rotation(&mut self) {
        let Some(file) = &self.file else {
            self.reopen();
            return;
        };
        let moved = match std::fs::metadata(&self.path) {
            Ok(meta) => {
                meta.dev() != file.device || meta.ino() != file.inode || meta.len() < file.length
            }
            Err(_) => true,
        };
        if moved {
            self.reopen();
        }
    }

    fn reopen(&mut self) {
        if let Some(mut old) = self.file.take() {
            let _ = old.out.flush();
            let next = old.lines + 1;
            let segment = old.segment.close(&self.path, next);
            if segment.lines > 0 || segment.write_failed {
                self.closed.push(segment);
            }
        }
        match OpenFile::open(&self.path) {
            Ok(file) => {
                tracing::info!(file = %self.path.display(), "the XKS usage log was rotated; writing to a new file");
                self.file = Some(file);
            }
            Err(error) => self.complain(&error),
        }
    }

    fn complain(&mut self, error: &std::io::Error) {
        let quiet = self
            .last_complaint
            .is_some_and(|at| at.elapsed() < Duration::from_secs(60));
        if !quiet {
            tracing::error!(file = %self.path.display(), %error, "cannot write the XKS usage log; its lines are lost until it can (the next digest says so)");
            self.last_complaint = Some(Instant::now());
        }
    }
}

impl OpenFile {
    /// Opens `path` for appending, counting the lines already in it. A last
    /// line cut short (a crash mid-write) is ended first, so it stays one
    /// line and the next starts on its own.
    fn open(path: &Path) -> std::io::Result<Self> {
        // Owner only, as everything in the data directory: the lines name
        // the AWS principals and keys that use keyhold.
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .mode(0o600)
            .open(path)?;
        let (length, lines, ends_cleanly) = count_lines(&mut file)?;
        let meta = file.metadata()?;
        let mut out = BufWriter::with_capacity(64 * 1024, file);
        let mut length = length;
        if !ends_cleanly {
            // Ends the line counted already; it adds none.
            out.write_all(b"\n")?;
            out.flush()?;
            length += 1;
        }
        Ok(Self {
            out,
            device: meta.dev(),
            inode: meta.ino(),
            length,
            lines,
            segment: OpenSegment::starting_after(lines),
        })
    }
}

/// The file's length, its lines (a last one without a newline counts),
/// and whether it is empty or ends with a newline.
fn count_lines(file: &mut File) -> std::io::Result<(u64, u64, bool)> {
    let mut buffer = vec![0u8; 64 * 1024];
    let (mut length, mut newlines, mut last) = (0u64, 0u64, b'\n');
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        let chunk = &buffer[..read];
        length += read as u64;
        newlines += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
        last = chunk[read - 1];
    }
    let ends_cleanly = last == b'\n';
    Ok((length, newlines + u64::from(!ends_cleanly), ends_cleanly))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(outcome: &str) -> UsageLine<'_> {
        UsageLine {
            time: "2026-12-06T12:00:00.000Z".into(),
            node: "node-a",
            store: Some("payments"),
            key: None,
            operation: "health",
            kms_operation: Some("KmsHealthCheck"),
            kms_request_id: Some("r-1"),
            aws_principal_arn: None,
            kms_key_arn: None,
            aws_source_vpc: None,
            aws_source_vpce: None,
            kms_via_service: None,
            access_key_id: None,
            outcome,
            detail: None,
            latency_us: 7,
        }
    }

    fn sha256_of_lines(path: &Path, first: u64, last: u64) -> String {
        let text = std::fs::read_to_string(path).unwrap();
        let selected: String = text
            .split_inclusive('\n')
            .skip(usize::try_from(first - 1).unwrap())
            .take(usize::try_from(last - first + 1).unwrap())
            .collect();
        hex::encode(Sha256::digest(selected.as_bytes()))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn periods_name_their_lines_and_hash_exactly_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.jsonl");
        // A previous run left two lines, the last cut short by a crash.
        std::fs::write(&path, "{\"old\":1}\n{\"old\":2").unwrap();
        let drops = Arc::new(AtomicU64::new(0));
        let counted = drops.clone();
        let log = UsageLog::start(
            path.clone(),
            Arc::new(move || {
                counted.fetch_add(1, Ordering::Relaxed);
            }),
        )
        .unwrap();
        log.record(&line("ok"));
        log.record(&line("ThrottlingException"));
        let (segments, dropped) = log.cut().await;
        assert_eq!(dropped, 0);
        assert_eq!(segments.len(), 1);
        let segment = &segments[0];
        assert_eq!((segment.first_line, segment.last_line), (Some(3), Some(4)));
        assert_eq!(segment.lines, 2);
        assert_eq!(
            segment.sha256.as_deref(),
            Some(sha256_of_lines(&path, 3, 4).as_str())
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("{\"old\":1}\n{\"old\":2\n{\"time\""),
            "{text}"
        );

        // An empty period says so, without numbers.
        let (segments, _) = log.cut().await;
        assert_eq!(segments[0].lines, 0);
        assert_eq!(segments[0].first_line, None);

        // Rotation: the file moved away; the writer follows within a second.
        log.record(&line("ok"));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        std::fs::rename(&path, dir.path().join("usage.jsonl.1")).unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        log.record(&line("ok"));
        log.record(&line("ok"));
        let (segments, _) = log.cut().await;
        assert_eq!(segments.len(), 2, "{segments:?}");
        assert_eq!(
            (segments[0].first_line, segments[0].last_line),
            (Some(5), Some(5))
        );
        assert_eq!(
            (segments[1].first_line, segments[1].last_line),
            (Some(1), Some(2))
        );
        assert_eq!(
            segments[1].sha256.as_deref(),
            Some(sha256_of_lines(&path, 1, 2).as_str())
        );
        assert_eq!(drops.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn lines_are_counted_as_the_file_holds_them() {
        let dir = tempfile::tempdir().unwrap();
        for (content, expected) in [
            ("", (0, 0, true)),
            ("a\n", (2, 1, true)),
            ("a\nb", (3, 2, false)),
        ] {
            let path = dir.path().join("f");
            std::fs::write(&path, content).unwrap();
            let mut file = File::open(&path).unwrap();
            assert_eq!(count_lines(&mut file).unwrap(), expected, "{content:?}");
        }
    }
}
