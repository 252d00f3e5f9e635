//! Audit archive files: entries moved out of the live log, as text that
//! an auditor can read and check with the audit public key alone.
//!
//! ```text
//! {"format":"keyhold-audit-archive","version":1,"first_seq":…,"last_seq":…,"count":…,
//!  "first_prev_hash":hex,"last_hash":hex,"created_at":…,"audit_public_key":base64 SPKI}
//! {"seq":…,"time":…,"users":…,"summary":…,"details":…,"archived":…,"prev_hash":hex,"hash":hex,"mac":hex}
//! … one line per entry, `count` of them …
//! {"sha256":hex,"signature":base64}
//! ```
//!
//! The last line holds the SHA-256 of every byte before it and an ECDSA
//! P-256 signature (the audit signing key) over
//! `"keyhold-audit-archive-v1 trailer" || that hash`. Entries must be
//! contiguous and hash-chained from `first_prev_hash` to `last_hash`;
//! their MACs are returned unchecked (that needs the keystore's MAC key:
//! the server checks them).

use std::io::{BufRead, Read, Write};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use keyhold_core::audit::{AuditEntry, AuditPublicKey, AuditSigner, ChainHead, ChainVerifier};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{BackupError, Result};
use crate::io::HashingWriter;
use crate::signature::SIGNATURE_LEN;

pub const ARCHIVE_FORMAT: &str = "keyhold-audit-archive";
pub const ARCHIVE_VERSION: u32 = 1;
const TRAILER_DOMAIN: &[u8] = b"keyhold-audit-archive-v1 trailer";
/// Longest line a reader accepts: an entry's details are a few KiB at most.
const MAX_LINE_LEN: usize = 4 * 1024 * 1024;

/// The archive's first line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveHeader {
    pub format: String,
    pub version: u32,
    pub first_seq: i64,
    pub last_seq: i64,
    pub count: u64,
    /// Hex: the `prev_hash` of the first entry.
    pub first_prev_hash: String,
    /// Hex: the `hash` of the last entry.
    pub last_hash: String,
    pub created_at: String,
    /// Base64 SubjectPublicKeyInfo DER of the key that signs the last line.
    pub audit_public_key: String,
}

/// The entries an archive will hold, known before writing them (the header
/// comes first): the store's range and the hashes at its two ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArchiveRange {
    pub first_seq: i64,
    pub last_seq: i64,
    pub first_prev_hash: [u8; 32],
    pub last_hash: [u8; 32],
}

/// What a written archive is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveSummary {
    pub first_seq: i64,
    pub last_seq: i64,
    pub count: u64,
    pub size: u64,
    /// SHA-256 of the whole file, hex.
    pub sha256: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryLine {
    seq: i64,
    time: String,
    users: String,
    summary: String,
    details: String,
    archived: bool,
    prev_hash: String,
    hash: String,
    mac: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrailerLine {
    sha256: String,
    signature: String,
}

impl From<&AuditEntry> for EntryLine {
    fn from(e: &AuditEntry) -> Self {
        Self {
            seq: e.seq,
            time: e.time.clone(),
            users: e.users.clone(),
            summary: e.summary.clone(),
            details: e.details.clone(),
            archived: e.archived,
            prev_hash: hex::encode(e.prev_hash),
            hash: hex::encode(e.hash),
            mac: hex::encode(e.mac),
        }
    }
}

fn hash32(field: &str, text: &str) -> Result<[u8; 32]> {
    hex::decode(text)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| BackupError::Archive(format!("its {field} is not 32 bytes of hex")))
}

impl TryFrom<EntryLine> for AuditEntry {
    type Error = BackupError;

    fn try_from(l: EntryLine) -> Result<Self> {
        Ok(Self {
            seq: l.seq,
            prev_hash: hash32("prev_hash", &l.prev_hash)?,
            hash: hash32("hash", &l.hash)?,
            mac: hash32("mac", &l.mac)?,
            time: l.time,
            users: l.users,
            summary: l.summary,
            details: l.details,
            archived: l.archived,
        })
    }
}

impl ArchiveHeader {
    fn check(&self) -> Result<AuditPublicKey> {
        if self.format != ARCHIVE_FORMAT {
            return Err(BackupError::Archive(format!(
                "its first line's format is not {ARCHIVE_FORMAT}"
            )));
        }
        if self.version != ARCHIVE_VERSION {
            return Err(BackupError::Archive(format!(
                "it is version {}, this keyhold reads version {ARCHIVE_VERSION}",
                self.version
            )));
        }
        let span = self
            .last_seq
            .checked_sub(self.first_seq)
            .and_then(|d| u64::try_from(d).ok())
            .and_then(|d| d.checked_add(1));
        if self.first_seq < 1 || span != Some(self.count) {
            return Err(BackupError::Archive(format!(
                "entries {} to {} cannot be {} entries",
                self.first_seq, self.last_seq, self.count
            )));
        }
        hash32("first_prev_hash", &self.first_prev_hash)?;
        hash32("last_hash", &self.last_hash)?;
        let der = BASE64
            .decode(&self.audit_public_key)
            .map_err(|_| BackupError::Archive("its audit_public_key is not base64".into()))?;
        AuditPublicKey::from_spki_der(&der)
            .map_err(|e| BackupError::Archive(format!("its audit_public_key: {e}")))
    }
}

fn json_line<W: Write, T: Serialize>(out: &mut W, value: &T) -> Result<()> {
    serde_json::to_writer(&mut *out, value)
        .map_err(|e| BackupError::Invalid(format!("an archive line does not serialise: {e}")))?;
    out.write_all(b"\n")?;
    Ok(())
}

/// Writes an archive one entry at a time, checking that the entries are
/// the contiguous, chained range announced in the header.
pub struct ArchiveWriter<W: Write> {
    out: HashingWriter<W>,
    range: ArchiveRange,
    audit_key: AuditPublicKey,
    verifier: ChainVerifier,
}

impl<W: Write> std::fmt::Debug for ArchiveWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveWriter")
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

impl<W: Write> ArchiveWriter<W> {
    /// Writes the header. `audit_public_key` must be the key of the signer
    /// given to [`ArchiveWriter::finish`].
    pub fn new(
        writer: W,
        range: ArchiveRange,
        created_at: String,
        audit_public_key: &AuditPublicKey,
    ) -> Result<Self> {
        let span = range
            .last_seq
            .checked_sub(range.first_seq)
            .and_then(|d| u64::try_from(d).ok())
            .and_then(|d| d.checked_add(1))
            .filter(|_| range.first_seq >= 1)
            .ok_or_else(|| {
                BackupError::Invalid(format!(
                    "an archive of entries {} to {} is empty or reversed",
                    range.first_seq, range.last_seq
                ))
            })?;
        let header = ArchiveHeader {
            format: ARCHIVE_FORMAT.into(),
            version: ARCHIVE_VERSION,
            first_seq: range.first_seq,
            last_seq: range.last_seq,
            count: span,
            first_prev_hash: hex::encode(range.first_prev_hash),
            last_hash: hex::encode(range.last_hash),
            created_at,
            audit_public_key: BASE64.encode(audit_public_key.to_spki_der()),
        };
        let mut out = HashingWriter::new(writer);
        json_line(&mut out, &header)?;
        let verifier = ChainVerifier::offline().resume_after(ChainHead {
            seq: range.first_seq - 1,
            hash: range.first_prev_hash,
        });
        Ok(Self {
            out,
            range,
            audit_key: audit_public_key.clone(),
            verifier,
        })
    }

    /// Appends the next entry; refuses one that does not follow the last.
    pub fn entry(&mut self, entry: &AuditEntry) -> Result<()> {
        if entry.seq > self.range.last_seq {
            return Err(BackupError::Invalid(format!(
                "entry {} is past the archive's last entry {}",
                entry.seq, self.range.last_seq
            )));
        }
        self.verifier.push(entry).map_err(|b| {
            BackupError::Invalid(format!(
                "audit entry {} cannot be archived: it {}",
                entry.seq,
                b.describe()
            ))
        })?;
        json_line(&mut self.out, &EntryLine::from(entry))
    }

    /// Signs and closes the archive: every announced entry must have been written.
    pub fn finish(mut self, signer: &dyn AuditSigner) -> Result<(W, ArchiveSummary)> {
        let end = ChainHead {
            seq: self.range.last_seq,
            hash: self.range.last_hash,
        };
        if self.verifier.head() != end {
            return Err(BackupError::Invalid(format!(
                "the archive stops at entry {} (or its hash differs), not at entry {} as announced",
                self.verifier.head().seq,
                self.range.last_seq
            )));
        }
        let digest = self.out.digest();
        let signature = crate::signature::sign(TRAILER_DOMAIN, &digest, signer, &self.audit_key)?;
        json_line(
            &mut self.out,
            &TrailerLine {
                sha256: hex::encode(digest),
                signature: BASE64.encode(signature),
            },
        )?;
        self.out.flush()?;
        let summary = ArchiveSummary {
            first_seq: self.range.first_seq,
            last_seq: self.range.last_seq,
            count: self.verifier.checked(),
            size: self.out.written(),
            sha256: hex::encode(self.out.digest()),
        };
        Ok((self.out.into_inner(), summary))
    }
}

/// Writes `entries` (contiguous, in order, at least one) as an archive
/// signed by `signer`.
pub fn write_archive<W: Write>(
    writer: W,
    entries: &[AuditEntry],
    created_at: String,
    signer: &dyn AuditSigner,
) -> Result<(W, ArchiveSummary)> {
    let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
        return Err(BackupError::Invalid(
            "an archive needs at least one entry".into(),
        ));
    };
    let range = ArchiveRange {
        first_seq: first.seq,
        last_seq: last.seq,
        first_prev_hash: first.prev_hash,
        last_hash: last.hash,
    };
    let mut archive = ArchiveWriter::new(writer, range, created_at, &signer.audit_public_key()?)?;
    for entry in entries {
        archive.entry(entry)?;
    }
    archive.finish(signer)
}

/// Reads an archive. Entries come out as they are read, before the
/// signature is checked: trust them only once the reader returned
/// `Ok(None)` (the iterator: ended without an error).
pub struct ArchiveReader<R: BufRead> {
    input: R,
    header: ArchiveHeader,
    audit_key: AuditPublicKey,
    hasher: Sha256,
    verifier: ChainVerifier,
    remaining: u64,
    line: Vec<u8>,
    state: ReadState,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ReadState {
    Entries,
    Done,
    Failed,
}

impl<R: BufRead> std::fmt::Debug for ArchiveReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveReader")
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

/// Opens an archive (see [`ArchiveReader::open`]).
pub fn read_archive<R: BufRead>(
    reader: R,
    expected_key: Option<&AuditPublicKey>,
) -> Result<ArchiveReader<R>> {
    ArchiveReader::open(reader, expected_key)
}

impl<R: BufRead> ArchiveReader<R> {
    /// Reads the header line; with `expected_key`, refuses an archive
    /// signed by another key.
    pub fn open(mut reader: R, expected_key: Option<&AuditPublicKey>) -> Result<Self> {
        let mut hasher = Sha256::new();
        let mut line = Vec::new();
        read_line(&mut reader, &mut line, Some(&mut hasher))?;
        let header: ArchiveHeader = serde_json::from_slice(&line).map_err(|e| {
            BackupError::Archive(format!(
                "its first line is not an archive header ({e}): give a file `keyhold audit archive` wrote"
            ))
        })?;
        let audit_key = header.check()?;
        if let Some(expected) = expected_key
            && &audit_key != expected
        {
            return Err(BackupError::Archive(format!(
                "it is signed by audit key {}, not by the expected {}",
                audit_key.fingerprint_hex(),
                expected.fingerprint_hex()
            )));
        }
        let verifier = ChainVerifier::offline().resume_after(ChainHead {
            seq: header.first_seq - 1,
            hash: hash32("first_prev_hash", &header.first_prev_hash)?,
        });
        Ok(Self {
            input: reader,
            remaining: header.count,
            header,
            audit_key,
            hasher,
            verifier,
            line,
            state: ReadState::Entries,
        })
    }

    pub fn header(&self) -> &ArchiveHeader {
        &self.header
    }

    /// The next entry; `Ok(None)` once the last line verified. Any error is final.
    pub fn next_entry(&mut self) -> Result<Option<AuditEntry>> {
        match self.state {
            ReadState::Done => return Ok(None),
            ReadState::Failed => {
                return Err(BackupError::Archive(
                    "it was refused at an earlier error".into(),
                ));
            }
            ReadState::Entries => {}
        }
        let result = self.advance();
        self.state = match &result {
            Err(_) => ReadState::Failed,
            Ok(None) => ReadState::Done,
            Ok(Some(_)) => ReadState::Entries,
        };
        result
    }

    fn advance(&mut self) -> Result<Option<AuditEntry>> {
        if self.remaining > 0 {
            read_line(&mut self.input, &mut self.line, Some(&mut self.hasher))?;
            let line: EntryLine = serde_json::from_slice(&self.line)
                .map_err(|e| BackupError::Archive(format!("an entry line is not valid ({e})")))?;
            let entry = AuditEntry::try_from(line)?;
            self.verifier.push(&entry).map_err(|b| {
                BackupError::Archive(format!("entry {} {}", entry.seq, b.describe()))
            })?;
            self.remaining -= 1;
            return Ok(Some(entry));
        }
        let end = ChainHead {
            seq: self.header.last_seq,
            hash: hash32("last_hash", &self.header.last_hash)?,
        };
        if self.verifier.head() != end {
            return Err(BackupError::Archive(
                "its last entry's hash is not the header's last_hash".into(),
            ));
        }
        let digest: [u8; 32] = self.hasher.clone().finalize().into();
        read_line(&mut self.input, &mut self.line, None)?;
        let trailer: TrailerLine = serde_json::from_slice(&self.line).map_err(|e| {
            BackupError::Archive(format!(
                "its last line is not the signature line ({e}): the file was cut short or extended"
            ))
        })?;
        if trailer.sha256 != hex::encode(digest) {
            return Err(BackupError::Archive(
                "the signature line's SHA-256 is not that of the lines before it: the file was altered".into(),
            ));
        }
        let signature = BASE64
            .decode(&trailer.signature)
            .ok()
            .filter(|s| s.len() == SIGNATURE_LEN)
            .ok_or_else(|| {
                BackupError::Archive(format!(
                    "its signature is not {SIGNATURE_LEN} bytes of base64"
                ))
            })?;
        // The line is not covered by the hash it holds: only the exact
        // bytes the writer writes are accepted (no upper-case hex, no
        // spacing), so the file's own SHA-256 is the only one it can have.
        let mut canonical = serde_json::to_vec(&trailer).unwrap_or_default();
        canonical.push(b'\n');
        if canonical != self.line || BASE64.encode(&signature) != trailer.signature {
            return Err(BackupError::Archive(
                "its signature line is not written as keyhold writes it: the file was altered"
                    .into(),
            ));
        }
        if !crate::signature::verifies(TRAILER_DOMAIN, &digest, &signature, &self.audit_key) {
            return Err(BackupError::Archive(format!(
                "its signature does not verify under audit key {}: the file was altered or forged",
                self.audit_key.fingerprint_hex()
            )));
        }
        let mut rest = [0u8; 1];
        if self.input.read(&mut rest)? != 0 {
            return Err(BackupError::Archive(
                "bytes follow the signature line".into(),
            ));
        }
        Ok(None)
    }
}

/// Reads one line, newline included (into the hash when given), refusing
/// one without a newline or longer than any keyhold writes.
fn read_line<R: BufRead>(
    input: &mut R,
    line: &mut Vec<u8>,
    hasher: Option<&mut Sha256>,
) -> Result<()> {
    line.clear();
    let limit = (MAX_LINE_LEN + 1) as u64;
    input.take(limit).read_until(b'\n', line)?;
    if line.last() != Some(&b'\n') {
        return Err(BackupError::Archive(if line.len() > MAX_LINE_LEN {
            format!("a line is longer than {MAX_LINE_LEN} bytes")
        } else {
            "it ends in the middle of a line or before its signature line: the file was cut short"
                .into()
        }));
    }
    if let Some(hasher) = hasher {
        hasher.update(&line);
    }
    Ok(())
}

impl<R: BufRead> Iterator for ArchiveReader<R> {
    type Item = Result<AuditEntry>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_entry().transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyhold_core::KeystoreError;
    use keyhold_core::audit::{AuditMac, AuditRecord, SoftwareSigningKey, hmac_sha256, seal};

    struct Mac;
    impl AuditMac for Mac {
        fn audit_mac(&self, data: &[u8]) -> std::result::Result<[u8; 32], KeystoreError> {
            hmac_sha256(b"k", data)
        }
    }

    fn chain(n: usize) -> Vec<AuditEntry> {
        let mut head = ChainHead::EMPTY;
        (0..n)
            .map(|i| {
                let record =
                    AuditRecord::new(chrono_epoch(), "Admin1,Admin2", format!("entry {i}"))
                        .with_details(serde_json::json!({"i": i, "note": "line\nbreak"}));
                let entry = seal(head, &record, &Mac).unwrap();
                head = ChainHead {
                    seq: entry.seq,
                    hash: entry.hash,
                };
                entry
            })
            .collect()
    }

    fn chrono_epoch() -> keyhold_core::clock::Timestamp {
        keyhold_core::clock::Timestamp::UNIX_EPOCH
    }

    fn read_all(bytes: &[u8], key: Option<&AuditPublicKey>) -> Result<Vec<AuditEntry>> {
        read_archive(bytes, key)?.collect()
    }

    #[test]
    fn an_archive_reads_back_entry_for_entry() {
        let signer = SoftwareSigningKey::generate().unwrap();
        let entries = chain(12);
        let (bytes, summary) = write_archive(
            Vec::new(),
            &entries[3..9],
            "2030-01-01T00:00:00Z".into(),
            &signer,
        )
        .unwrap();
        assert_eq!(
            (summary.first_seq, summary.last_seq, summary.count),
            (4, 9, 6)
        );
        assert_eq!(summary.size, bytes.len() as u64);
        assert_eq!(summary.sha256, hex::encode(Sha256::digest(&bytes)));
        let key = signer.audit_public_key().unwrap();
        assert_eq!(
            read_all(&bytes, Some(&key)).unwrap(),
            entries[3..9].to_vec()
        );
        assert_eq!(read_all(&bytes, None).unwrap().len(), 6);
        let other = SoftwareSigningKey::generate()
            .unwrap()
            .audit_public_key()
            .unwrap();
        assert!(read_all(&bytes, Some(&other)).is_err());
    }

    #[test]
    fn a_changed_cut_or_extended_archive_is_refused() {
        let signer = SoftwareSigningKey::generate().unwrap();
        let entries = chain(5);
        let (bytes, _) = write_archive(Vec::new(), &entries, "t".into(), &signer).unwrap();
        for i in 0..bytes.len() {
            for mask in [0x01, 0x20, 0x80] {
                let mut flipped = bytes.clone();
                flipped[i] ^= mask;
                assert!(read_all(&flipped, None).is_err(), "flip {mask:#x} at {i}");
            }
        }
        for len in 0..bytes.len() {
            assert!(read_all(&bytes[..len], None).is_err(), "cut at {len}");
        }
        let mut longer = bytes.clone();
        longer.extend_from_slice(b"\n");
        assert!(read_all(&longer, None).is_err());
        // An entry dropped from the middle, with the header left alone.
        let text = String::from_utf8(bytes).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        lines.remove(3);
        assert!(read_all(lines.join("\n").as_bytes(), None).is_err());
    }

    #[test]
    fn the_writer_refuses_entries_that_are_not_the_announced_chain() {
        let signer = SoftwareSigningKey::generate().unwrap();
        let key = signer.audit_public_key().unwrap();
        let entries = chain(4);
        let range = ArchiveRange {
            first_seq: 1,
            last_seq: 4,
            first_prev_hash: [0; 32],
            last_hash: entries[3].hash,
        };
        let mut w = ArchiveWriter::new(Vec::new(), range, "t".into(), &key).unwrap();
        w.entry(&entries[0]).unwrap();
        assert!(w.entry(&entries[2]).is_err(), "a gap");
        let mut w = ArchiveWriter::new(Vec::new(), range, "t".into(), &key).unwrap();
        w.entry(&entries[0]).unwrap();
        assert!(w.finish(&signer).is_err(), "stopped early");
        let other = SoftwareSigningKey::generate().unwrap();
        let mut w = ArchiveWriter::new(Vec::new(), range, "t".into(), &key).unwrap();
        for e in &entries {
            w.entry(e).unwrap();
        }
        assert!(w.finish(&other).is_err(), "signed by another key");
        assert!(write_archive(Vec::new(), &[], "t".into(), &signer).is_err());
    }
}
