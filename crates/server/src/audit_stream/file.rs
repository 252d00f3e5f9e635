//! The JSON lines sink: every entry appended to one file as the export's
//! line, synced before the entry counts as delivered.
//!
//! The cursor is the later of the file's last line and a row of this node's
//! in the database (`file://<node><path>`): the line survives a crash between
//! the write and the row's update, the row survives the file being rotated
//! away (logrotate's move, or copytruncate), so a new, empty file goes on
//! from the next entry instead of starting the whole log again. Each node of
//! a cluster keeps its own file and row. A line cut short by a crash was
//! never delivered, and is cut off at start; a batch whose write fails is
//! cut off again, so the file only ever holds whole lines, in order. Before
//! each batch the path is looked at again: moved away, it is created anew.

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use keyhold_core::audit::AuditEntry;
use keyhold_core::names::NodeId;
use keyhold_core::service::Keyhold;

use super::{StreamError, export_line};

/// How much of the file's end is read to find its last line (an entry is
/// well under this; details are bounded by the 1 MiB request limit only in
/// theory, so a longer line is refused with a message).
const TAIL_BYTES: u64 = 4 * 1024 * 1024;

/// Refuses at start-up a path keyhold could not append to.
pub fn check_writable(path: &Path) -> Result<(), String> {
    if path.is_dir() {
        return Err(format!(
            "audit_json_file {} is a directory: name a file in it, such as {}",
            path.display(),
            path.join("audit-stream.jsonl").display()
        ));
    }
    open_append(path).map(drop).map_err(|e| {
        format!(
            "cannot open audit_json_file {} for appending: {e}. Name a file in an existing directory keyhold may write to (--audit-json-file or KEYHOLD_AUDIT_JSON_FILE)",
            path.display()
        )
    })
}

/// Creates the file (mode 0600, like the data directory's) when missing.
fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
}

pub struct FileSink {
    path: PathBuf,
    file: std::fs::File,
    /// The seq of the file's last line (of the file open now).
    last: Option<i64>,
    node: NodeId,
    /// The database row's value as this sink last read or moved it:
    /// `None` until read.
    recorded: Option<Option<i64>>,
}

impl FileSink {
    /// Opens the file and reads its last line; a last line that is no entry
    /// keyhold wrote stops start-up (it may be someone else's file).
    pub fn open(path: &Path, node: &NodeId) -> Result<Self, String> {
        let refuse = |cause: String| {
            format!(
                "audit_json_file {}: {cause}. Move the file away, or name another (--audit-json-file)",
                path.display()
            )
        };
        let mut file = open_append(path).map_err(|e| refuse(e.to_string()))?;
        let last = last_seq(&mut file, path).map_err(refuse)?;
        Ok(Self {
            path: path.to_owned(),
            file,
            last,
            node: node.clone(),
            recorded: None,
        })
    }

    /// This node's row for this file.
    fn row(&self) -> String {
        format!("file://{}{}", self.node, self.path.display())
    }

    pub fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The later of the file's last line and the database row.
    pub async fn cursor(&mut self, keyhold: &Keyhold) -> Result<Option<i64>, StreamError> {
        let recorded = keyhold.store().audit_stream_cursor(&self.row()).await?;
        self.recorded = Some(recorded);
        Ok(self.last.max(recorded))
    }

    /// The entries up to `seq` are in the file: the row follows. The row is
    /// this node's alone, so a row another writer moved (a second server on
    /// the same node id and path, a misconfiguration) is read again and
    /// overwritten rather than stopping the stream.
    pub async fn advanced(&mut self, keyhold: &Keyhold, seq: i64) -> Result<(), StreamError> {
        self.last = Some(seq);
        let expected = match self.recorded {
            Some(recorded) => recorded,
            None => keyhold.store().audit_stream_cursor(&self.row()).await?,
        };
        let store = keyhold.store();
        let moved = store
            .advance_audit_stream_cursor(&self.row(), expected, seq, &self.node, keyhold.now())
            .await?;
        if !moved {
            let now = store.audit_stream_cursor(&self.row()).await?;
            store
                .advance_audit_stream_cursor(&self.row(), now, seq, &self.node, keyhold.now())
                .await?;
        }
        self.recorded = Some(Some(seq));
        Ok(())
    }

    /// Opens the path again when the file open now is no longer there (a
    /// log rotation moved it away): entries go on in a new file.
    fn follow_rotation(&mut self) -> std::io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let open = self.file.metadata()?;
        let same = std::fs::metadata(&self.path)
            .is_ok_and(|at_path| at_path.dev() == open.dev() && at_path.ino() == open.ino());
        if !same {
            self.file = open_append(&self.path)?;
            self.last = None;
            tracing::info!(file = %self.path.display(), "the audit JSON file was moved away (rotated): a new one goes on from the next entry");
        }
        Ok(())
    }

    /// Appends the entries and syncs them, off the async threads.
    pub async fn deliver(&mut self, entries: &[AuditEntry]) -> Result<(), StreamError> {
        let mut lines = String::new();
        for entry in entries {
            lines.push_str(&export_line(entry));
            lines.push('\n');
        }
        let path = self.path.display().to_string();
        let failed = |e: std::io::Error| StreamError::File {
            path: path.clone(),
            cause: e.to_string(),
        };
        self.follow_rotation().map_err(failed)?;
        let mut file = self.file.try_clone().map_err(failed)?;
        tokio::task::spawn_blocking(move || {
            let length = file.metadata()?.len();
            let written = file
                .write_all(lines.as_bytes())
                .and_then(|()| file.sync_data());
            if written.is_err() {
                // Never leave part of a batch: the retry appends it whole.
                let _ = file.set_len(length);
            }
            written
        })
        .await
        .map_err(|e| failed(std::io::Error::other(e)))?
        .map_err(failed)
    }
}

/// The seq of the file's last whole line, after cutting off a last line a
/// crash left without its newline.
fn last_seq(file: &mut std::fs::File, path: &Path) -> Result<Option<i64>, String> {
    let length = file.metadata().map_err(|e| e.to_string())?.len();
    let start = length.saturating_sub(TAIL_BYTES);
    file.seek(SeekFrom::Start(start))
        .map_err(|e| e.to_string())?;
    let mut tail = Vec::new();
    file.take(TAIL_BYTES)
        .read_to_end(&mut tail)
        .map_err(|e| e.to_string())?;
    let whole = match tail.iter().rposition(|b| *b == b'\n') {
        Some(end) => end + 1,
        None if start == 0 => 0,
        None => return Err("its last line is longer than 4 MiB".into()),
    };
    if whole < tail.len() {
        let keep = start + whole as u64;
        tracing::warn!(
            file = %path.display(),
            cut_bytes = length - keep,
            "the audit JSON file ends with part of a line (a crash while writing it): cut off, the entries are written again"
        );
        file.set_len(keep).map_err(|e| e.to_string())?;
        file.sync_data().map_err(|e| e.to_string())?;
    }
    let Some(line) = tail[..whole]
        .split(|b| *b == b'\n')
        .rev()
        .find(|line| !line.is_empty())
    else {
        return Ok(None);
    };
    serde_json::from_slice::<serde_json::Value>(line)
        .ok()
        .and_then(|value| value.get("seq").and_then(serde_json::Value::as_i64))
        .map(Some)
        .ok_or_else(|| "its last line is no audit entry keyhold wrote (no \"seq\")".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_line_is_the_cursor_and_a_torn_line_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stream.jsonl");
        let node = NodeId::parse("node-a").unwrap();
        assert_eq!(FileSink::open(&path, &node).unwrap().last, None);
        std::fs::write(&path, "{\"seq\":1}\n{\"seq\":2}\n{\"seq\":3,\"summ").unwrap();
        assert_eq!(FileSink::open(&path, &node).unwrap().last, Some(2));
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"seq\":1}\n{\"seq\":2}\n"
        );
        std::fs::write(&path, "hello\n").unwrap();
        let err = FileSink::open(&path, &node).map(drop).unwrap_err();
        assert!(
            err.contains("no audit entry") && err.contains("Move the file away"),
            "{err}"
        );
    }

    #[test]
    fn a_directory_or_an_unwritable_path_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            check_writable(dir.path())
                .unwrap_err()
                .contains("is a directory")
        );
        let err = check_writable(&dir.path().join("missing/stream.jsonl")).unwrap_err();
        assert!(err.contains("existing directory"), "{err}");
    }
}
