//! The JSON lines sink: every entry appended to one file as the export's
//! line, synced before the entry counts as delivered.
//!
//! The file is its own cursor: its last line names the last entry
//! delivered, so it needs no row in the database and each node of a cluster
//! keeps its own. A line cut short by a crash was never delivered, and is
//! cut off at start; a batch whose write fails is cut off again, so the file
//! only ever holds whole lines, in order.

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use keyhold_core::audit::AuditEntry;

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
    /// The seq of the file's last line.
    last: Option<i64>,
}

impl FileSink {
    /// Opens the file and reads its last line; a last line that is no entry
    /// keyhold wrote stops start-up (it may be someone else's file).
    pub fn open(path: &Path) -> Result<Self, String> {
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
        })
    }

    pub fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn cursor(&self) -> Option<i64> {
        self.last
    }

    pub fn advanced(&mut self, seq: i64) {
        self.last = Some(seq);
    }

    /// Appends the entries and syncs them, off the async threads.
    pub async fn deliver(&mut self, entries: &[AuditEntry]) -> Result<(), StreamError> {
        let mut lines = String::new();
        for entry in entries {
            lines.push_str(&export_line(entry));
            lines.push('\n');
        }
        let failed = |e: std::io::Error| StreamError::File {
            path: self.path.display().to_string(),
            cause: e.to_string(),
        };
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
        assert_eq!(FileSink::open(&path).unwrap().cursor(), None);
        std::fs::write(&path, "{\"seq\":1}\n{\"seq\":2}\n{\"seq\":3,\"summ").unwrap();
        assert_eq!(FileSink::open(&path).unwrap().cursor(), Some(2));
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"seq\":1}\n{\"seq\":2}\n"
        );
        std::fs::write(&path, "hello\n").unwrap();
        let err = FileSink::open(&path).map(drop).unwrap_err();
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
