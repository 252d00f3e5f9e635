//! `keyhold audit verify --export FILE --public-key KEY`: an exported audit
//! log checked on the auditor's own machine, without a server or the MAC key.
//!
//! What it proves: every entry links to the one before it and matches its
//! hash; the export's closing checkpoint, signed by the key the auditor
//! pinned, covers its last entry (nothing was cut off or edited after the
//! export); and the log reaches every checkpoint the auditor kept with the
//! same hashes (nothing was cut or rewritten before the export). What it does
//! not: entries after the newest checkpoint the auditor kept are vouched for
//! only by the server that exported them.

use std::io::{BufRead, Read};
use std::path::Path;

use keyhold_api::{AuditEntryView, AuditVerifyView};
use keyhold_core::audit::{
    AuditEntry, AuditPublicKey, ChainBreak, ChainVerifier, Checkpoint, ExportEnd,
};
use keyhold_server::audit_verify_view as view;

use crate::error::CliError;
use crate::input;

/// Longest line an export holds (an entry's details are bounded well below).
const MAX_LINE: usize = 1024 * 1024;

/// One line of an export: an entry, or the closing line.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum ExportLine {
    Entry(Box<AuditEntryView>),
    End(ExportEnd),
}

/// Verifies `export` with `key`, anchored to `checkpoints`.
pub fn verify(
    export: &Path,
    key: &AuditPublicKey,
    checkpoints: &[Checkpoint],
) -> Result<AuditVerifyView, CliError> {
    let verifier = ChainVerifier::offline();
    if let Some((seq, refused)) = checkpoints
        .iter()
        .find_map(|c| c.verify(key).err().map(|e| (c.seq, e)))
    {
        let why = ChainBreak::CheckpointRefused {
            why: refused.to_string(),
        };
        return Ok(view(verifier.report(Err((seq, why)))));
    }
    let mut verifier = verifier.anchored(checkpoints);
    let file = input::open_regular_file(export, "audit export")?;
    let mut lines = std::io::BufReader::new(file);
    let mut end: Option<ExportEnd> = None;
    let mut number = 0usize;
    let mut line = String::new();
    loop {
        line.clear();
        let read = Read::take(&mut lines, MAX_LINE as u64 + 1)
            .read_line(&mut line)
            .map_err(|e| CliError::Input(format!("cannot read {}: {e}", export.display())))?;
        if read == 0 {
            break;
        }
        number += 1;
        let bad_line = |why: String| {
            CliError::Input(format!(
                "line {number} of {} is not an audit export line: {why}. Give the file `keyhold audit export --file` wrote, unchanged",
                export.display()
            ))
        };
        if read > MAX_LINE {
            return Err(bad_line(format!("longer than {MAX_LINE} bytes")));
        }
        if line.trim().is_empty() {
            continue;
        }
        if end.is_some() {
            return Err(bad_line("it follows the export's closing line".into()));
        }
        match serde_json::from_str::<ExportLine>(line.trim()) {
            Ok(ExportLine::Entry(entry)) => {
                let entry = entry_of(&entry).map_err(bad_line)?;
                if let Err(broken) = verifier.push(&entry) {
                    return Ok(view(verifier.report(Err((entry.seq, broken)))));
                }
            }
            Ok(ExportLine::End(closing)) => end = Some(closing),
            Err(e) => return Err(bad_line(e.to_string())),
        }
    }
    let head = verifier.head();
    let closing = match end {
        None => Err("the export has no closing line: it was cut short".to_owned()),
        Some(ExportEnd::Broken {
            first_bad_seq,
            reason,
        }) => Err(format!(
            "the server found the log broken at entry {first_bad_seq} when it exported it: {reason}"
        )),
        Some(ExportEnd::Unsigned { reason }) => Err(format!(
            "the export is not signed ({reason}), so it cannot be verified offline"
        )),
        Some(ExportEnd::Checkpoint(closing)) => match closing.verify(key) {
            Err(refused) => Err(format!("its closing checkpoint: {refused}")),
            Ok(()) if closing.head() != head => Err(format!(
                "its closing checkpoint covers entry {}, but the export's last entry is {}: entries were removed or added after the export",
                closing.seq, head.seq
            )),
            Ok(()) => Ok(()),
        },
    };
    let outcome = match closing {
        Ok(()) => verifier.finish(),
        Err(why) => Err((head.seq + 1, ChainBreak::CheckpointRefused { why })),
    };
    Ok(view(verifier.report(outcome)))
}

/// The entry as the chain hashed it: the details exactly as the server
/// serialised them (keys in order, no spaces), the hashes from hex.
fn entry_of(view: &AuditEntryView) -> Result<AuditEntry, String> {
    let hash = |field: &str, text: &str| -> Result<[u8; 32], String> {
        hex::decode(text)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| format!("its {field} is not 64 hex digits"))
    };
    Ok(AuditEntry {
        seq: view.seq,
        time: view.date.clone(),
        users: view.users.clone(),
        summary: view.summary.clone(),
        details: view.details.to_string(),
        archived: view.archived,
        prev_hash: hash("prev_hash", &view.prev_hash)?,
        hash: hash("hash", &view.hash)?,
        // Not exported and not checked offline.
        mac: [0; 32],
    })
}
