//! The audit log: append-only, hash-chained, and MACed with a keystore key.
//!
//! Each entry's hash covers its own fields and the previous entry's hash, so an
//! edited, deleted or reordered row breaks the chain at that row. The MAC over
//! the hash, made with a key only the keystore holds, stops someone with write
//! access to the database from recomputing the chain after an edit. Signed
//! [checkpoints](checkpoint) of the head catch what the chain alone cannot:
//! entries cut from its end, and a chain rewritten by someone holding the MAC key.

use std::sync::Arc;

use hmac::Mac;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::clock::{Timestamp, format_timestamp};
use crate::error::{InvalidInput, KeystoreError};

mod checkpoint;
pub mod syslog;

pub use checkpoint::{
    AuditPublicKey, AuditSigner, CHECKPOINT_FORMAT, Checkpoint, CheckpointError, ExportEnd,
    SoftwareSigningKey, parse_checkpoints,
};

/// The `prev_hash` of the first entry.
pub const GENESIS_HASH: [u8; 32] = [0u8; 32];

/// Who did it: the session's identities, or `System` for scheduled work.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub time: Timestamp,
    /// `Admin1,Admin2`, `System`, or `Anonymous` for a request without a session.
    pub users: String,
    pub summary: String,
    /// Extra facts as JSON (`{}` when there are none). Never a secret.
    pub details: serde_json::Value,
    /// The approved request this entry's change executes: the store marks
    /// it executed in the same transaction, and writes nothing (the change
    /// included) unless it was still approved, so it runs once.
    #[serde(skip)]
    pub executes: Option<crate::approval::Execution>,
}

pub const SYSTEM_USER: &str = "System";
pub const ANONYMOUS_USER: &str = "Anonymous";

impl AuditRecord {
    pub fn new(time: Timestamp, users: impl Into<String>, summary: impl Into<String>) -> Self {
        Self {
            time,
            users: users.into(),
            summary: summary.into(),
            details: serde_json::Value::Object(serde_json::Map::new()),
            executes: None,
        }
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }

    pub fn has_details(&self) -> bool {
        !matches!(&self.details, serde_json::Value::Object(m) if m.is_empty())
            && !self.details.is_null()
    }
}

/// An entry as stored: the record plus its place in the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    pub seq: i64,
    pub time: String,
    pub users: String,
    pub summary: String,
    /// The details JSON exactly as hashed.
    pub details: String,
    /// Operational flag (moved to an archive); not part of the chain so that
    /// archiving does not rewrite history.
    pub archived: bool,
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
    pub mac: [u8; 32],
}

impl AuditEntry {
    pub fn has_details(&self) -> bool {
        self.details != "{}" && self.details != "null" && !self.details.is_empty()
    }
}

/// The newest entry's sequence number and hash: what the next entry chains to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainHead {
    pub seq: i64,
    pub hash: [u8; 32],
}

impl ChainHead {
    pub const EMPTY: Self = Self {
        seq: 0,
        hash: GENESIS_HASH,
    };
}

/// Produces the MAC over an entry's hash. Implemented by the keystore, which
/// holds the MAC key.
pub trait AuditMac: Send + Sync {
    fn audit_mac(&self, data: &[u8]) -> Result<[u8; 32], KeystoreError>;

    /// Whether a MAC may wait on a device (a token over PKCS#11), so that the
    /// store computes it off the async executor. Only a MAC computed in
    /// memory says no, sparing every audited write a thread hop.
    fn may_block(&self) -> bool {
        true
    }
}

/// An HMAC-SHA256 [`AuditMac`] over key bytes, for keystores that hold the key
/// in memory (the software keystore).
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> Result<[u8; 32], KeystoreError> {
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(key)
        .map_err(|e| KeystoreError::Internal(format!("audit MAC key: {e}")))?;
    mac.update(data);
    Ok(mac.finalize().into_bytes().into())
}

fn entry_hash(
    seq: i64,
    time: &str,
    users: &str,
    summary: &str,
    details: &str,
    prev: &[u8; 32],
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"keyhold-audit-v1");
    h.update(seq.to_be_bytes());
    for field in [time, users, summary, details] {
        // Length-prefixed so that moving text between fields changes the hash.
        h.update((field.len() as u64).to_be_bytes());
        h.update(field.as_bytes());
    }
    h.update(prev);
    h.finalize().into()
}

/// Seals a record as the entry after `head`.
pub fn seal(
    head: ChainHead,
    record: &AuditRecord,
    mac: &dyn AuditMac,
) -> Result<AuditEntry, KeystoreError> {
    let seq = head.seq + 1;
    let time = format_timestamp(&record.time);
    let details = record.details.to_string();
    let hash = entry_hash(
        seq,
        &time,
        &record.users,
        &record.summary,
        &details,
        &head.hash,
    );
    let tag = mac.audit_mac(&hash)?;
    Ok(AuditEntry {
        seq,
        time,
        users: record.users.clone(),
        summary: record.summary.clone(),
        details,
        archived: false,
        prev_hash: head.hash,
        hash,
        mac: tag,
    })
}

/// Why an entry (or the log as a whole) fails verification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChainBreak {
    /// Sequence numbers skip: entries before this one were deleted.
    Gap { expected_seq: i64 },
    /// The entry does not chain to the one before it (deleted or reordered).
    Unlinked,
    /// The entry's content does not match its hash (edited).
    Altered,
    /// The MAC does not match (chain recomputed without the keystore's key).
    BadMac,
    /// The entry's hash is not the one a signed checkpoint holds for it.
    CheckpointMismatch { checkpoint_time: String },
    /// The log ends before an entry a signed checkpoint covers.
    Truncated {
        last_seq: i64,
        checkpoint_seq: i64,
        checkpoint_time: String,
    },
    /// The log has no entries at all.
    Empty,
    /// A checkpoint given to check against does not verify.
    CheckpointRefused { why: String },
}

impl ChainBreak {
    pub fn describe(&self) -> String {
        match self {
            Self::Gap { expected_seq } => {
                format!("entry {expected_seq} is missing: entries were deleted")
            }
            Self::Unlinked => {
                "does not follow the entry before it: an entry was deleted or the order was changed"
                    .into()
            }
            Self::Altered => "its content does not match its hash: the entry was edited".into(),
            Self::BadMac => {
                "its MAC does not match: the chain was rewritten without the keystore's key".into()
            }
            Self::CheckpointMismatch { checkpoint_time } => format!(
                "its hash is not the one the checkpoint signed at {checkpoint_time} holds: the log was rewritten up to this entry"
            ),
            Self::Truncated {
                last_seq,
                checkpoint_seq,
                checkpoint_time,
            } => format!(
                "the log ends at entry {last_seq}, but the checkpoint signed at {checkpoint_time} covers entry {checkpoint_seq}: entries {} to {checkpoint_seq} were cut from its end",
                last_seq + 1
            ),
            Self::CheckpointRefused { why } => why.clone(),
            Self::Empty => "the log has no entries: an installation records at least its first administrators, so every entry was deleted".into(),
        }
    }
}

/// Checks entries in sequence order, one at a time, so a long log is verified
/// in pages without holding it all in memory; then [`ChainVerifier::finish`]
/// checks the log reached every checkpoint it was anchored to.
pub struct ChainVerifier {
    head: ChainHead,
    /// `None` offline: an auditor without the MAC key checks links, hashes
    /// and checkpoints.
    mac: Option<Arc<dyn AuditMac>>,
    checked: u64,
    /// Checkpoints not reached yet, by ascending seq. Their signatures were
    /// checked by whoever anchored the verifier.
    anchors: std::collections::VecDeque<Checkpoint>,
    /// The newest checkpoint the log matched.
    matched: Option<Checkpoint>,
}

impl ChainVerifier {
    pub fn new(mac: Arc<dyn AuditMac>) -> Self {
        Self::with_mac(Some(mac))
    }

    /// Without the MAC key: for an exported log checked with the public key.
    pub fn offline() -> Self {
        Self::with_mac(None)
    }

    fn with_mac(mac: Option<Arc<dyn AuditMac>>) -> Self {
        Self {
            head: ChainHead::EMPTY,
            mac,
            checked: 0,
            anchors: Default::default(),
            matched: None,
        }
    }

    /// Starts after `head` (an entry already known good) instead of at the
    /// beginning: the checkpointer checks only what was added since its last.
    pub fn resume_after(mut self, head: ChainHead) -> Self {
        self.head = head;
        self
    }

    /// Also requires the log to hold each checkpoint's hash at its entry.
    /// Check each checkpoint's signature first ([`Checkpoint::verify`]).
    pub fn anchored(mut self, checkpoints: &[Checkpoint]) -> Self {
        let mut sorted = checkpoints.to_vec();
        sorted.sort_by_key(|c| c.seq);
        self.anchors = sorted.into();
        self
    }

    pub fn checked(&self) -> u64 {
        self.checked
    }

    /// The last entry that verified.
    pub fn head(&self) -> ChainHead {
        self.head
    }

    /// Checks the next entry. On a break, the caller names `entry.seq` as the first bad one.
    pub fn push(&mut self, entry: &AuditEntry) -> Result<(), ChainBreak> {
        let expected_seq = self.head.seq + 1;
        if entry.prev_hash != self.head.hash {
            return Err(if entry.seq > expected_seq {
                ChainBreak::Gap { expected_seq }
            } else {
                ChainBreak::Unlinked
            });
        }
        if entry.seq != expected_seq {
            return Err(ChainBreak::Unlinked);
        }
        let hash = entry_hash(
            entry.seq,
            &entry.time,
            &entry.users,
            &entry.summary,
            &entry.details,
            &entry.prev_hash,
        );
        if hash != entry.hash {
            return Err(ChainBreak::Altered);
        }
        if let Some(mac) = &self.mac {
            match mac.audit_mac(&hash) {
                Ok(tag) if tag == entry.mac => {}
                _ => return Err(ChainBreak::BadMac),
            }
        }
        while let Some(anchor) = self.anchors.front().filter(|a| a.seq == entry.seq) {
            if anchor.hash != entry.hash {
                return Err(ChainBreak::CheckpointMismatch {
                    checkpoint_time: anchor.time.clone(),
                });
            }
            self.matched = self.anchors.pop_front();
        }
        self.head = ChainHead {
            seq: entry.seq,
            hash: entry.hash,
        };
        self.checked += 1;
        Ok(())
    }

    /// After the last entry: the log must not be empty, and must reach every
    /// checkpoint. Returns the first missing entry and why.
    pub fn finish(&self) -> Result<(), (i64, ChainBreak)> {
        if self.head.seq == 0 {
            return Err((1, ChainBreak::Empty));
        }
        match self.anchors.back() {
            Some(newest) => Err((
                self.head.seq + 1,
                ChainBreak::Truncated {
                    last_seq: self.head.seq,
                    checkpoint_seq: newest.seq,
                    checkpoint_time: newest.time.clone(),
                },
            )),
            None => Ok(()),
        }
    }

    /// The report of a walk that stopped at `outcome` (the first break, or
    /// the end of the log and [`ChainVerifier::finish`]).
    pub fn report(&self, outcome: Result<(), (i64, ChainBreak)>) -> VerifyReport {
        let (first_bad_seq, reason) = match outcome {
            Ok(()) => (None, None),
            Err((seq, broken)) => (Some(seq), Some(broken.describe())),
        };
        VerifyReport {
            ok: first_bad_seq.is_none(),
            entries_checked: self.checked,
            first_bad_seq,
            reason,
            checkpoint: self.matched.as_ref().map(|c| CheckpointReached {
                seq: c.seq,
                time: c.time.clone(),
            }),
        }
    }
}

/// Result of verifying the whole log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub ok: bool,
    pub entries_checked: u64,
    /// Sequence number of the first entry that fails (or is missing), if any.
    pub first_bad_seq: Option<i64>,
    pub reason: Option<String>,
    /// The newest signed checkpoint the log was found to match.
    pub checkpoint: Option<CheckpointReached>,
}

/// A checkpoint a verified log matched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CheckpointReached {
    pub seq: i64,
    pub time: String,
}

/// Longest user or text an audit search accepts.
pub const MAX_SEARCH_LEN: usize = 200;

/// A user or text to search the audit log for: printable, bounded. An empty
/// one searches for nothing in particular (no filter).
pub fn search_term(
    field: &'static str,
    raw: Option<String>,
) -> Result<Option<String>, InvalidInput> {
    let Some(raw) = raw.filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    if raw.chars().any(char::is_control) {
        return Err(InvalidInput::new(
            field,
            format!("{field} must not contain control characters"),
        ));
    }
    if raw.chars().count() > MAX_SEARCH_LEN {
        return Err(InvalidInput::new(
            field,
            format!("{field} is longer than {MAX_SEARCH_LEN} characters"),
        ));
    }
    Ok(Some(raw))
}

/// Filter for listing audit entries.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
    /// Matches entries whose users include this identity (or `System`).
    pub user: Option<String>,
    /// Case-insensitive substring of the summary or details.
    pub text: Option<String>,
    pub limit: u32,
    /// Return entries with `seq` below this (newest first paging).
    pub before_seq: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TestMac;
    impl AuditMac for TestMac {
        fn audit_mac(&self, data: &[u8]) -> Result<[u8; 32], KeystoreError> {
            hmac_sha256(b"test key", data)
        }
    }

    fn chain(n: usize) -> Vec<AuditEntry> {
        let mut head = ChainHead::EMPTY;
        (0..n)
            .map(|i| {
                let rec = AuditRecord::new(
                    chrono::DateTime::UNIX_EPOCH,
                    "Admin1,Admin2",
                    format!("entry {i}"),
                );
                let e = seal(head, &rec, &TestMac).unwrap();
                head = ChainHead {
                    seq: e.seq,
                    hash: e.hash,
                };
                e
            })
            .collect()
    }

    fn first_break(entries: &[AuditEntry]) -> Option<(i64, ChainBreak)> {
        let mut v = ChainVerifier::new(Arc::new(TestMac));
        entries
            .iter()
            .find_map(|e| v.push(e).err().map(|b| (e.seq, b)))
    }

    /// Walks `entries` anchored to checkpoints of `anchors` (by seq), to the end.
    fn verify_anchored(entries: &[AuditEntry], anchors: &[i64], mac: bool) -> VerifyReport {
        let keystore = crate::testing::FakeKeystore::default();
        let full = chain(8);
        let checkpoints: Vec<Checkpoint> = anchors
            .iter()
            .map(|seq| {
                let e = &full[(*seq - 1) as usize];
                let head = ChainHead {
                    seq: e.seq,
                    hash: e.hash,
                };
                Checkpoint::sign(head, chrono::DateTime::UNIX_EPOCH, &keystore).unwrap()
            })
            .collect();
        let mut v = if mac {
            ChainVerifier::new(Arc::new(TestMac))
        } else {
            ChainVerifier::offline()
        }
        .anchored(&checkpoints);
        let outcome = entries
            .iter()
            .find_map(|e| v.push(e).err().map(|b| (e.seq, b)))
            .map_or_else(|| v.finish(), Err);
        v.report(outcome)
    }

    #[test]
    fn a_log_cut_short_of_a_checkpoint_fails() {
        let full = chain(8);
        let intact = verify_anchored(&full, &[3, 6], true);
        assert!(intact.ok, "{intact:?}");
        assert_eq!(intact.checkpoint.map(|c| c.seq), Some(6));

        // The tail cut off: every remaining entry is intact, the checkpoint is not reached.
        let cut = verify_anchored(&full[..4], &[3, 6], true);
        assert!(!cut.ok);
        assert_eq!(cut.first_bad_seq, Some(5));
        assert!(cut.reason.unwrap().contains("entries 5 to 6 were cut"));
        assert_eq!(cut.checkpoint.map(|c| c.seq), Some(3));

        // Cut to its first entry, and emptied.
        let first = verify_anchored(&full[..1], &[3], false);
        assert_eq!(first.first_bad_seq, Some(2));
        let empty = verify_anchored(&[], &[3], true);
        assert!(!empty.ok);
        assert!(empty.reason.unwrap().contains("no entries"));
        // Empty fails even with no checkpoint to compare with.
        assert!(!verify_anchored(&[], &[], true).ok);
    }

    #[test]
    fn a_log_rewritten_before_a_checkpoint_fails_even_offline() {
        // A rewrite that recomputes every hash (as one holding the MAC key
        // could, with MACs too): only the checkpoint catches it.
        let full = chain(8);
        let mut head = ChainHead::EMPTY;
        let rewritten: Vec<AuditEntry> = full
            .iter()
            .map(|e| {
                let summary = if e.seq == 2 {
                    "nothing happened".into()
                } else {
                    e.summary.clone()
                };
                let rec = AuditRecord::new(chrono::DateTime::UNIX_EPOCH, e.users.clone(), summary);
                let sealed = seal(head, &rec, &TestMac).unwrap();
                head = ChainHead {
                    seq: sealed.seq,
                    hash: sealed.hash,
                };
                sealed
            })
            .collect();
        assert!(verify_anchored(&rewritten, &[], true).ok);
        let caught = verify_anchored(&rewritten, &[4], false);
        assert!(!caught.ok);
        assert_eq!(caught.first_bad_seq, Some(4));
        assert!(caught.reason.unwrap().contains("rewritten"));
    }

    #[test]
    fn intact_chain_verifies() {
        assert_eq!(first_break(&chain(5)), None);
    }

    #[test]
    fn edit_delete_and_swap_are_named_at_the_first_bad_entry() {
        let mut edited = chain(5);
        edited[2].summary = "Deleted nothing".into();
        assert_eq!(first_break(&edited), Some((3, ChainBreak::Altered)));

        let mut deleted = chain(5);
        deleted.remove(2);
        assert_eq!(
            first_break(&deleted),
            Some((4, ChainBreak::Gap { expected_seq: 3 }))
        );

        let mut swapped = chain(5);
        swapped.swap(1, 2);
        assert_eq!(first_break(&swapped).map(|b| b.0), Some(3));

        let mut forged = chain(3);
        forged[1].mac = [0; 32];
        assert_eq!(first_break(&forged), Some((2, ChainBreak::BadMac)));
    }

    #[test]
    fn moving_text_between_fields_changes_the_hash() {
        let a = entry_hash(1, "t", "ab", "c", "{}", &GENESIS_HASH);
        let b = entry_hash(1, "t", "a", "bc", "{}", &GENESIS_HASH);
        assert_ne!(a, b);
    }
}
