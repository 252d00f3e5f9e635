//! Audit archiving: entries written out to signed archive files, then
//! marked archived in the live log (which keeps them: the log is
//! append-only, and the archive is the copy that leaves the machine).
//!
//! Rules:
//! - Archives are contiguous: each starts right after the last one, so the
//!   chain runs through them and on into the live log.
//! - The file is written and synced under its final name before the store
//!   marks its entries archived; a crash in between leaves a file the next
//!   archive overwrites (same range), never entries marked without a file.
//! - One archiving at a time on a node.

use std::path::{Path, PathBuf};

use keyhold_backup::archive::{ArchiveRange, ArchiveWriter, read_archive};
use keyhold_core::audit::AuditPublicKey;
use keyhold_core::backup::AuditArchive;
use keyhold_core::error::{CoreError, CoreResult, KeystoreError};
use keyhold_core::identity::{Operation, Session};
use keyhold_core::service::Keyhold;
use tokio::sync::Mutex;

use super::Backups;

/// Most entries one archive file holds; a larger range makes several files.
const MAX_ENTRIES_PER_FILE: usize = 10_000;
/// Entries read from the store at a time.
const PAGE: u32 = 1000;
/// Archive files' extension.
pub const ARCHIVE_EXTENSION: &str = "khar";

/// One archiving at a time on this node.
static ARCHIVING: Mutex<()> = Mutex::const_new(());

/// Which entries to archive.
#[derive(Clone, Copy, Debug)]
pub enum Bound {
    /// Up to and including this sequence number.
    UpToSeq(i64),
    /// Those older than this, by the Clock.
    OlderThan(chrono::Duration),
}

fn internal(error: impl std::fmt::Display) -> CoreError {
    CoreError::Keystore(KeystoreError::Internal(error.to_string()))
}

/// Archives the entries `bound` names that no archive holds yet, in files
/// of at most [`MAX_ENTRIES_PER_FILE`]. Returns the last archive written,
/// or `None` when there was nothing to archive.
pub async fn archive(
    keyhold: &Keyhold,
    dir: &Path,
    session: Option<&Session>,
    bound: Bound,
) -> CoreResult<Option<AuditArchive>> {
    if let Some(session) = session {
        keyhold.authorize(session, Operation::ARCHIVE_AUDIT).await?;
    }
    let _one_at_a_time = ARCHIVING.lock().await;
    let cutoff = match bound {
        Bound::UpToSeq(_) => None,
        Bound::OlderThan(age) => Some(keyhold.now() - age),
    };
    let mut last_written = None;
    loop {
        let after = keyhold
            .store()
            .list_audit_archives()
            .await?
            .last()
            .map_or(0, |a| a.last_seq);
        let mut entries = Vec::new();
        let mut cursor = after;
        'pages: while entries.len() < MAX_ENTRIES_PER_FILE {
            let page = keyhold.store().audit_page(cursor, PAGE).await?;
            if page.is_empty() {
                break;
            }
            for entry in page {
                let inside = match bound {
                    Bound::UpToSeq(up_to) => entry.seq <= up_to,
                    Bound::OlderThan(_) => keyhold_core::clock::parse_timestamp(&entry.time)
                        .zip(cutoff)
                        .is_some_and(|(at, cutoff)| at < cutoff),
                };
                if !inside || entries.len() == MAX_ENTRIES_PER_FILE {
                    break 'pages;
                }
                cursor = entry.seq;
                entries.push(entry);
            }
        }
        if entries.is_empty() {
            return Ok(last_written);
        }
        let archive = write_file(keyhold, dir, &entries).await?;
        crate::crash_point("archive_before_mark");
        keyhold.record_audit_archive(session, &archive).await?;
        last_written = Some(archive);
    }
}

async fn write_file(
    keyhold: &Keyhold,
    dir: &Path,
    entries: &[keyhold_core::audit::AuditEntry],
) -> CoreResult<AuditArchive> {
    let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
        return Err(internal("an archive needs entries"));
    };
    let file = format!(
        "audit-{:012}-{:012}.{ARCHIVE_EXTENSION}",
        first.seq, last.seq
    );
    let range = ArchiveRange {
        first_seq: first.seq,
        last_seq: last.seq,
        first_prev_hash: first.prev_hash,
        last_hash: last.hash,
    };
    let created_at = keyhold.now();
    let keystore = keyhold.keystore().clone();
    let path = dir.join(&file);
    let entries = entries.to_vec();
    let summary = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let key = keystore.audit_public_key()?;
        let mut bytes = Vec::new();
        let mut writer = ArchiveWriter::new(
            &mut bytes,
            range,
            keyhold_core::clock::format_timestamp(&created_at),
            &key,
        )?;
        for entry in &entries {
            writer.entry(entry)?;
        }
        let (_, summary) = writer.finish(keystore.as_ref())?;
        super::write_private_file(&path, &bytes)?;
        Ok(summary)
    })
    .await
    .map_err(internal)?
    .map_err(|e| internal(format!("writing audit archive {file}: {e:#}")))?;
    Ok(AuditArchive {
        id: uuid::Uuid::new_v4(),
        file,
        first_seq: summary.first_seq,
        last_seq: summary.last_seq,
        created_at,
        sha256: summary.sha256,
    })
}

/// The daily pass: archives entries older than `audit_archive_after_days`
/// when set, at most once a day (by the newest archive's time).
pub async fn scheduled_pass(backups: &Backups) {
    let keyhold = backups.keyhold();
    let age = match keyhold.store().get_settings().await {
        Ok(settings) => settings.audit_archive_age(),
        Err(error) => {
            tracing::warn!(%error, "cannot read the settings for audit archiving");
            return;
        }
    };
    let Some(age) = age else {
        return;
    };
    let newest = match keyhold.store().list_audit_archives().await {
        Ok(archives) => archives.last().map(|a| a.created_at),
        Err(error) => {
            tracing::warn!(%error, "cannot read the audit archives");
            return;
        }
    };
    if newest.is_some_and(|at| keyhold.now() < at + chrono::Duration::days(1)) {
        return;
    }
    match archive(keyhold, backups.archive_dir(), None, Bound::OlderThan(age)).await {
        Ok(Some(archive)) => {
            tracing::info!(file = %archive.file, last_seq = archive.last_seq, "audit entries archived");
        }
        Ok(None) => {}
        Err(error) => tracing::warn!(%error, "audit archiving failed; the next pass tries again"),
    }
}

/// The archive files a backup carries: every recorded archive, by name.
pub async fn archive_files(
    keyhold: &Keyhold,
    dir: &Path,
) -> anyhow::Result<Vec<(String, PathBuf)>> {
    Ok(keyhold
        .store()
        .list_audit_archives()
        .await?
        .into_iter()
        .map(|a| {
            let path = dir.join(&a.file);
            (a.file, path)
        })
        .collect())
}

/// What checking the archives found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchivesChecked {
    pub archives: usize,
    pub entries: u64,
    /// The first problem, if any.
    pub problem: Option<String>,
}

/// Checks every recorded archive: its file is there with the recorded
/// digest, its signature holds under this installation's audit key, its
/// entries chain on from the previous archive, and each equals the live
/// entry it copies (same hash and MAC).
pub async fn verify(keyhold: &Keyhold, dir: &Path) -> CoreResult<ArchivesChecked> {
    let archives = keyhold.store().list_audit_archives().await?;
    let key = keyhold.keystore().audit_public_key()?;
    let mut checked = ArchivesChecked {
        archives: archives.len(),
        entries: 0,
        problem: None,
    };
    let mut expected_first = 1;
    for archive in &archives {
        let outcome = verify_one(keyhold, dir, archive, &key, expected_first).await;
        match outcome {
            Ok(entries) => checked.entries += entries,
            Err(problem) => {
                checked.problem = Some(format!("audit archive {}: {problem}", archive.file));
                return Ok(checked);
            }
        }
        expected_first = archive.last_seq + 1;
    }
    Ok(checked)
}

async fn verify_one(
    keyhold: &Keyhold,
    dir: &Path,
    archive: &AuditArchive,
    key: &AuditPublicKey,
    expected_first: i64,
) -> Result<u64, String> {
    if archive.first_seq != expected_first {
        return Err(format!(
            "it starts at entry {}, the previous archive ends at {}",
            archive.first_seq,
            expected_first - 1
        ));
    }
    let path = dir.join(&archive.file);
    let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    if digest != archive.sha256 {
        return Err("its file is not the one archived (its SHA-256 differs)".into());
    }
    let mut reader =
        read_archive(std::io::Cursor::new(bytes), Some(key)).map_err(|e| e.to_string())?;
    let mut entries = Vec::new();
    while let Some(entry) = reader.next_entry().map_err(|e| e.to_string())? {
        entries.push(entry);
    }
    let live = keyhold
        .store()
        .audit_page(
            archive.first_seq - 1,
            (archive.last_seq - archive.first_seq + 1) as u32,
        )
        .await
        .map_err(|e| e.to_string())?;
    if live.len() != entries.len() {
        return Err(format!(
            "it holds {} entries, the live log {} for its range",
            entries.len(),
            live.len()
        ));
    }
    for (copy, original) in entries.iter().zip(&live) {
        if copy.seq != original.seq || copy.hash != original.hash || copy.mac != original.mac {
            return Err(format!("entry {} differs from the live log's", copy.seq));
        }
        if !original.archived {
            return Err(format!(
                "entry {} is not marked archived in the live log",
                original.seq
            ));
        }
    }
    Ok(entries.len() as u64)
}
