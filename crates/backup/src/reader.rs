//! Reads a backup file: its header without the key, its records with it,
//! and its signature with neither ([`verify_file`]).

use std::io::Read;

use aead::generic_array::GenericArray;
use aead::stream::DecryptorBE32;
use aes_gcm::{Aes256Gcm, KeyInit};
use keyhold_core::audit::AuditPublicKey;
use zeroize::Zeroizing;

use crate::error::{BackupError, Result};
use crate::format::{
    MAX_RECORD_LEN, SEGMENT_LEN, TAG_LEN, read_header, read_segment, read_trailer,
};
use crate::header::Header;
use crate::io::HashingReader;
use crate::key::BackupKey;
use crate::record::Record;

/// Reads a backup. Records come out as they are decrypted, before the
/// trailer is checked: act on them for good (commit a restore) only once
/// [`BackupReader::next_record`] has returned `Ok(None)`, which it does
/// only after the end record and a verified trailer.
pub struct BackupReader<R: Read> {
    input: HashingReader<R>,
    header: Header,
    header_digest: [u8; 32],
    state: State,
    records: u64,
}

enum State {
    Locked,
    Open(Box<Stream>),
    Done,
    /// An error was returned: nothing more is read.
    Failed,
}

struct Stream {
    /// `None` once the last segment was decrypted.
    decryptor: Option<DecryptorBE32<Aes256Gcm>>,
    /// The current segment's plaintext (wiped on drop) and how much of it was used.
    plain: Zeroizing<Vec<u8>>,
    used: usize,
}

impl<R: Read> std::fmt::Debug for BackupReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupReader")
            .field("backup_id", &self.header.backup_id)
            .finish_non_exhaustive()
    }
}

impl<R: Read> BackupReader<R> {
    /// Reads and checks the header. Give a buffered reader: the file is
    /// read in small pieces.
    pub fn open(reader: R) -> Result<Self> {
        let mut input = HashingReader::new(reader);
        let (header, header_digest) = read_header(&mut input)?;
        Ok(Self {
            input,
            header,
            header_digest,
            state: State::Locked,
            records: 0,
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Starts decrypting with `key`, refused when it is not this backup's.
    pub fn unlock(&mut self, key: &BackupKey) -> Result<()> {
        if !matches!(self.state, State::Locked) {
            return Err(BackupError::Invalid(
                "the backup is already unlocked".into(),
            ));
        }
        if !self.header.matches(key) {
            return Err(BackupError::WrongKey(format!(
                "its key check differs, so the shares given are not those of backup {}: use that backup's share files",
                self.header.backup_id
            )));
        }
        let stream_key = key.stream_key(&self.header_digest);
        let cipher = Aes256Gcm::new(GenericArray::from_slice(stream_key.as_ref()));
        let nonce = self.header.stream_nonce()?;
        self.state = State::Open(Box::new(Stream {
            decryptor: Some(DecryptorBE32::from_aead(
                cipher,
                GenericArray::from_slice(&nonce),
            )),
            plain: Zeroizing::new(Vec::with_capacity(SEGMENT_LEN + TAG_LEN)),
            used: 0,
        }));
        Ok(())
    }

    /// The next record; `Ok(None)` after the end record once the trailer
    /// verified. Any error is final.
    pub fn next_record(&mut self) -> Result<Option<Record>> {
        let result = self.advance();
        if result.is_err() {
            self.state = State::Failed;
        }
        result
    }

    /// Records returned so far.
    pub fn records_read(&self) -> u64 {
        self.records
    }

    fn advance(&mut self) -> Result<Option<Record>> {
        let stream = match &mut self.state {
            State::Open(stream) => stream,
            State::Done => return Ok(None),
            State::Locked => {
                return Err(BackupError::Invalid(
                    "unlock the backup with its key before reading records".into(),
                ));
            }
            State::Failed => {
                return Err(BackupError::Invalid(
                    "the backup was refused at an earlier error".into(),
                ));
            }
        };
        if stream.exhausted(&mut self.input)? {
            return Err(BackupError::Damaged(
                "the stream ends without its end record: the file was cut short".into(),
            ));
        }
        let mut len = [0u8; 4];
        stream.fill(&mut self.input, &mut len)?;
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_RECORD_LEN {
            return Err(BackupError::Damaged(format!(
                "a record claims {len} bytes, more than {MAX_RECORD_LEN}"
            )));
        }
        let mut json = Zeroizing::new(vec![0u8; len]);
        stream.fill(&mut self.input, &mut json)?;
        let record: Record = serde_json::from_slice(&json).map_err(|e| {
            // The stream authenticated it, so this is not damage in transit:
            // a writer bug or a newer format.
            BackupError::NotABackup(format!(
                "record {} is not one this keyhold knows ({e}); restore with the keyhold release that made the backup",
                self.records + 1
            ))
        })?;
        match &record {
            Record::End { records } => {
                if *records != self.records {
                    return Err(BackupError::Damaged(format!(
                        "the end record counts {records} records, the stream held {}",
                        self.records
                    )));
                }
                if !stream.exhausted(&mut self.input)? {
                    return Err(BackupError::Damaged("data follows the end record".into()));
                }
                read_trailer(&mut self.input, &self.header)?;
                self.state = State::Done;
                return Ok(None);
            }
            Record::AuditKeys(keys) => {
                let named = self.header.audit_public_key()?;
                if keys.signing_public != named.to_spki_der() {
                    return Err(BackupError::Damaged(
                        "the audit keys inside are not the ones the header names".into(),
                    ));
                }
            }
            _ => {}
        }
        self.records += 1;
        Ok(Some(record))
    }
}

impl Stream {
    /// Whether every plaintext byte was used and the last segment read.
    /// Decrypts the next segment when the current one is used up.
    fn exhausted<R: Read>(&mut self, input: &mut HashingReader<R>) -> Result<bool> {
        while self.used == self.plain.len() {
            if self.decryptor.is_none() {
                return Ok(true);
            }
            self.next_segment(input)?;
        }
        Ok(false)
    }

    fn fill<R: Read>(&mut self, input: &mut HashingReader<R>, mut out: &mut [u8]) -> Result<()> {
        while !out.is_empty() {
            if self.exhausted(input)? {
                return Err(BackupError::Damaged(
                    "the stream ends in the middle of a record".into(),
                ));
            }
            let available = &self.plain[self.used..];
            let take = available.len().min(out.len());
            let (now, rest) = out.split_at_mut(take);
            now.copy_from_slice(&available[..take]);
            self.used += take;
            out = rest;
        }
        Ok(())
    }

    fn next_segment<R: Read>(&mut self, input: &mut HashingReader<R>) -> Result<()> {
        let last = read_segment(input, &mut self.plain)?;
        self.used = 0;
        let refused = || {
            BackupError::Damaged(
                "a segment does not decrypt: the file was altered, reordered or cut".into(),
            )
        };
        if last {
            let decryptor = self.decryptor.take().ok_or_else(refused)?;
            decryptor
                .decrypt_last_in_place(b"", &mut *self.plain)
                .map_err(|_| refused())?;
        } else {
            let decryptor = self.decryptor.as_mut().ok_or_else(refused)?;
            decryptor
                .decrypt_next_in_place(b"", &mut *self.plain)
                .map_err(|_| refused())?;
        }
        Ok(())
    }
}

/// What [`verify_file`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub header: Header,
    /// Bytes in the file.
    pub size: u64,
    /// SHA-256 of the whole file, hex.
    pub sha256: String,
}

/// Checks a backup file without its key: its structure, that its trailer
/// holds the SHA-256 of everything before it, and that the trailer is
/// signed by the audit key the header names, which must be
/// `expected_key` when one is given. Says nothing about the records (that
/// needs the key) but catches any change to the file.
pub fn verify_file<R: Read>(reader: R, expected_key: Option<&AuditPublicKey>) -> Result<Verified> {
    let mut input = HashingReader::new(reader);
    let (header, _) = read_header(&mut input)?;
    if let Some(expected) = expected_key {
        let named = header.audit_public_key()?;
        if &named != expected {
            return Err(BackupError::Signature(format!(
                "the file names audit key {}, not the expected {}: it was made by another installation, or forged",
                named.fingerprint_hex(),
                expected.fingerprint_hex()
            )));
        }
    }
    let mut segment = Vec::with_capacity(SEGMENT_LEN + TAG_LEN);
    while !read_segment(&mut input, &mut segment)? {}
    read_trailer(&mut input, &header)?;
    Ok(Verified {
        header,
        size: input.read_so_far(),
        sha256: hex::encode(input.digest()),
    })
}
