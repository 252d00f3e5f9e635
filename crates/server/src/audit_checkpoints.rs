//! Signed audit checkpoints, written outside the database. Rules:
//! - Appended to one file, a JSON object a line, and synced before anyone is
//!   told; never rewritten, so an operator can tail it or ship it elsewhere
//!   (`audit_checkpoint_file`). Each one also goes to the server log.
//! - Written every `audit_checkpoint_seconds` when the log grew, at start,
//!   and on demand (`POST /api/v1/audit/checkpoints`).
//! - The newest checkpoint this keystore signed anchors the next one (the
//!   core checks the entries since, and refuses to sign a broken log) and
//!   every verification: a log cut back behind it fails.
//! - This process remembers the newest checkpoint it read or wrote, so
//!   deleting or truncating the file later does not loosen the anchor.
//! - One writer at a time in this process; each node of a cluster keeps its
//!   own file.

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use keyhold_core::CoreResult;
use keyhold_core::audit::{AuditPublicKey, Checkpoint};
use keyhold_core::identity::Session;
use keyhold_core::service::Keyhold;

use crate::config::AuditConfig;

/// How much of the file's end is read at start to find the newest checkpoint
/// (one is about 300 bytes).
const TAIL_BYTES: u64 = 64 * 1024;

/// The checkpoint file and the newest checkpoint of this keystore.
pub struct AuditCheckpoints {
    keyhold: Keyhold,
    path: PathBuf,
    every: Duration,
    /// Held while signing and appending: checkpoints reach the file in order.
    writing: tokio::sync::Mutex<()>,
    newest: Mutex<Option<Checkpoint>>,
}

impl AuditCheckpoints {
    /// Reads the newest checkpoint this keystore signed from the end of the
    /// file; an unreadable file or keystore leaves it unknown (logged), and
    /// the first checkpoint then walks the whole log.
    pub fn open(keyhold: Keyhold, config: &AuditConfig) -> Self {
        let checkpoints = Self {
            keyhold,
            path: config.checkpoint_file.clone(),
            every: config.checkpoint_every,
            writing: tokio::sync::Mutex::new(()),
            newest: Mutex::new(None),
        };
        match checkpoints.keyhold.keystore().audit_public_key() {
            Ok(key) => {
                tracing::info!(
                    fingerprint = %key.fingerprint_hex(),
                    file = %checkpoints.path.display(),
                    "audit checkpoints are signed with this key (`keyhold audit public-key` prints it)"
                );
                let newest = newest_in_tail(&checkpoints.path, &key);
                *checkpoints.lock() = newest;
            }
            Err(error) => tracing::warn!(
                %error,
                "cannot read the audit signing key now; checkpoints wait for the keystore"
            ),
        }
        checkpoints
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Checkpoint>> {
        self.newest.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The newest checkpoint known to this process.
    pub fn newest(&self) -> Option<Checkpoint> {
        self.lock().clone()
    }

    /// Signs the head now for `session` (which the core authorizes),
    /// appends it and logs it.
    pub async fn write_now(&self, session: &Session) -> CoreResult<Checkpoint> {
        let _writing = self.writing.lock().await;
        let previous = self.newest();
        let checkpoint = self
            .keyhold
            .checkpoint_audit(session, previous.as_ref())
            .await?;
        Ok(self.keep(checkpoint))
    }

    /// Signs the head when the log grew since the newest checkpoint.
    pub async fn write_if_grown(&self) -> CoreResult<Option<Checkpoint>> {
        let _writing = self.writing.lock().await;
        let previous = self.newest();
        let head = self.keyhold.audit_head().await?;
        if previous.as_ref().is_some_and(|p| p.head() == head) {
            return Ok(None);
        }
        let checkpoint = self
            .keyhold
            .sign_audit_checkpoint(previous.as_ref())
            .await?;
        Ok(Some(self.keep(checkpoint)))
    }

    /// Appends a new checkpoint to the file and the log, and remembers it.
    fn keep(&self, checkpoint: Checkpoint) -> Checkpoint {
        let line = checkpoint.to_json_line();
        if let Err(error) = append_line(&self.path, &line) {
            // Still in the log, and the caller sees it; the file catches up
            // with the next one.
            tracing::error!(
                %error,
                file = %self.path.display(),
                "cannot append the audit checkpoint to its file"
            );
        }
        tracing::info!(checkpoint = %line, "audit checkpoint");
        *self.lock() = Some(checkpoint.clone());
        checkpoint
    }

    /// Writes checkpoints until the task is aborted (shutdown).
    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let checkpoints = Arc::clone(self);
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(checkpoints.every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                if let Err(error) = checkpoints.write_if_grown().await {
                    tracing::error!(%error, "no audit checkpoint written this time");
                }
            }
        })
    }
}

/// Appends one line and syncs it; creates the file (mode 0600, like everything in the data directory) when missing.
fn append_line(path: &Path, line: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(format!("{line}\n").as_bytes())?;
    file.sync_data()
}

/// The checkpoint of the highest entry among the last lines of `path` that
/// `key` signed. Lines that are not such checkpoints are passed over, with
/// a warning: they cannot anchor anything.
fn newest_in_tail(path: &Path, key: &AuditPublicKey) -> Option<Checkpoint> {
    let text = match read_tail(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(error) => {
            tracing::warn!(%error, file = %path.display(), "cannot read the audit checkpoint file");
            return None;
        }
    };
    let mut newest: Option<Checkpoint> = None;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match Checkpoint::from_json_line(line.trim()).and_then(|c| c.verify(key).map(|()| c)) {
            Ok(c) if newest.as_ref().is_none_or(|n| c.seq >= n.seq) => newest = Some(c),
            Ok(_) => {}
            Err(error) => tracing::warn!(
                %error,
                file = %path.display(),
                "a line of the audit checkpoint file is not a checkpoint of this keystore; passed over"
            ),
        }
    }
    newest
}

/// The file's last [`TAIL_BYTES`], from the first whole line.
fn read_tail(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let start = len.saturating_sub(TAIL_BYTES);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.take(TAIL_BYTES).read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    Ok(if start == 0 {
        text
    } else {
        // The first line was cut by the seek.
        text.split_once('\n')
            .map(|(_, rest)| rest.to_owned())
            .unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use keyhold_core::audit::{AuditSigner, ChainHead, SoftwareSigningKey};

    use super::*;

    fn signed(keystore: &SoftwareSigningKey, seq: i64) -> Checkpoint {
        let head = ChainHead {
            seq,
            hash: [seq as u8; 32],
        };
        Checkpoint::sign(head, chrono::DateTime::UNIX_EPOCH, keystore).unwrap()
    }

    #[test]
    fn the_newest_own_checkpoint_is_found_in_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoints.jsonl");
        let ours = SoftwareSigningKey::generate().unwrap();
        let theirs = SoftwareSigningKey::generate().unwrap();
        let key = ours.audit_public_key().unwrap();
        assert_eq!(newest_in_tail(&path, &key), None);

        // Enough lines that the start of the file is past the tail.
        for seq in 1..=400 {
            append_line(&path, &signed(&ours, seq).to_json_line()).unwrap();
        }
        append_line(&path, "not json").unwrap();
        append_line(&path, &signed(&theirs, 900).to_json_line()).unwrap();
        let mut forged = signed(&ours, 901);
        forged.seq = 902;
        append_line(&path, &forged.to_json_line()).unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() > TAIL_BYTES);

        let newest = newest_in_tail(&path, &key).unwrap();
        assert_eq!(newest.seq, 400);
    }
}
