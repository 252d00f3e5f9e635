//! Writes a backup file, one record at a time: memory stays at one segment
//! whatever the number or size of records.

use std::io::{self, Write};

use aead::generic_array::GenericArray;
use aead::stream::EncryptorBE32;
use aes_gcm::{Aes256Gcm, KeyInit};
use keyhold_core::audit::{AuditPublicKey, AuditSigner};
use keyhold_core::backup::SnapshotValue;
use zeroize::Zeroizing;

use crate::error::{BackupError, Result};
use crate::format::{
    MAX_RECORD_LEN, SEGMENT_LEN, TAG_LEN, TRAILER_DOMAIN, write_header, write_segment,
};
use crate::header::Header;
use crate::io::HashingWriter;
use crate::key::BackupKey;
use crate::record::Record;

/// What a finished backup file is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Bytes in the file.
    pub size: u64,
    /// SHA-256 of the whole file, hex.
    pub sha256: String,
    /// Records before the end record.
    pub records: u64,
}

pub struct BackupWriter<W: Write> {
    out: HashingWriter<W>,
    header: Header,
    audit_key: AuditPublicKey,
    /// `None` once the last segment is written.
    encryptor: Option<EncryptorBE32<Aes256Gcm>>,
    /// Plaintext of the segment being filled; its capacity holds a full
    /// segment and its tag, so it never reallocates (and leaves no copy behind).
    plain: Zeroizing<Vec<u8>>,
    records: u64,
}

impl<W: Write> std::fmt::Debug for BackupWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupWriter")
            .field("backup_id", &self.header.backup_id)
            .field("records", &self.records)
            .finish_non_exhaustive()
    }
}

impl<W: Write> BackupWriter<W> {
    /// Writes the header (made by [`Header::new`] with `key`) and starts
    /// the encrypted stream.
    pub fn new(writer: W, header: &Header, key: &BackupKey) -> Result<Self> {
        header.check()?;
        if !header.matches(key) {
            return Err(BackupError::Invalid(
                "the header's key_check is not this backup key's: make the header with Header::new and the same key".into(),
            ));
        }
        let audit_key = header.audit_public_key()?;
        let mut out = HashingWriter::new(writer);
        let header_digest = write_header(&mut out, header)?;
        let stream_key = key.stream_key(&header_digest);
        let cipher = Aes256Gcm::new(GenericArray::from_slice(stream_key.as_ref()));
        let nonce = header.stream_nonce()?;
        let encryptor = EncryptorBE32::from_aead(cipher, GenericArray::from_slice(&nonce));
        Ok(Self {
            out,
            header: header.clone(),
            audit_key,
            encryptor: Some(encryptor),
            plain: Zeroizing::new(Vec::with_capacity(SEGMENT_LEN + TAG_LEN)),
            records: 0,
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Appends one record. The end record is [`BackupWriter::finish`]'s.
    pub fn write(&mut self, record: &Record) -> Result<()> {
        match record {
            Record::End { .. } => {
                return Err(BackupError::Invalid(
                    "the end record is written by finish(), not write()".into(),
                ));
            }
            // JSON has no NaN or infinity: such a value would not read back.
            Record::Row { values }
                if values
                    .iter()
                    .any(|v| matches!(v, SnapshotValue::Real(r) if !r.is_finite())) =>
            {
                return Err(BackupError::Invalid(
                    "a row holds a REAL that is NaN or infinite, which a backup cannot carry"
                        .into(),
                ));
            }
            _ => {}
        }
        self.frame(record)?;
        self.records += 1;
        Ok(())
    }

    /// Writes the end record, the last segment and the trailer signed by
    /// `signer` (the keystore's audit signing key, which must be the key
    /// the header names). Returns the writer and what the file is.
    pub fn finish(mut self, signer: &dyn AuditSigner) -> Result<(W, Summary)> {
        self.frame(&Record::End {
            records: self.records,
        })?;
        let encryptor = self.encryptor.take().ok_or_else(|| {
            BackupError::Invalid("the backup's stream was already finished".into())
        })?;
        encryptor
            .encrypt_last_in_place(b"", &mut *self.plain)
            .map_err(|_| {
                BackupError::Invalid("AES-GCM refused to encrypt the last segment".into())
            })?;
        write_segment(&mut self.out, true, &self.plain)?;
        self.plain.clear();
        let digest = self.out.digest();
        let signature = crate::signature::sign(TRAILER_DOMAIN, &digest, signer, &self.audit_key)?;
        self.out.write_all(&digest)?;
        self.out.write_all(&signature)?;
        self.out.flush()?;
        let summary = Summary {
            size: self.out.written(),
            sha256: hex::encode(self.out.digest()),
            records: self.records,
        };
        let Self { out, .. } = self;
        Ok((out.into_inner(), summary))
    }

    /// One frame: the JSON's length, then the JSON, serialised straight
    /// into the segments (twice: first to count it), never into a buffer
    /// of its own that would keep a secret after it is written.
    fn frame(&mut self, record: &Record) -> Result<()> {
        let mut counter = Counter(0);
        serde_json::to_writer(&mut counter, record)
            .map_err(|e| BackupError::Invalid(format!("a record does not serialise: {e}")))?;
        let len = counter.0;
        if len > MAX_RECORD_LEN {
            return Err(BackupError::Invalid(format!(
                "a record is {len} bytes, more than the {MAX_RECORD_LEN} a backup carries in one"
            )));
        }
        self.push(&(len as u32).to_be_bytes())?;
        let mut sink = Segments { writer: self };
        serde_json::to_writer(&mut sink, record)
            .map_err(|e| BackupError::Invalid(format!("a record does not serialise: {e}")))?;
        Ok(())
    }

    /// Appends plaintext, sealing a segment each time one is full and more
    /// follows (so the last segment is never empty).
    fn push(&mut self, mut bytes: &[u8]) -> Result<()> {
        while !bytes.is_empty() {
            if self.plain.len() == SEGMENT_LEN {
                self.seal_segment()?;
            }
            let take = (SEGMENT_LEN - self.plain.len()).min(bytes.len());
            let (now, rest) = bytes.split_at(take);
            self.plain.extend_from_slice(now);
            bytes = rest;
        }
        Ok(())
    }

    fn seal_segment(&mut self) -> Result<()> {
        let encryptor = self.encryptor.as_mut().ok_or_else(|| {
            BackupError::Invalid("the backup's stream was already finished".into())
        })?;
        encryptor
            .encrypt_next_in_place(b"", &mut *self.plain)
            .map_err(|_| {
                BackupError::Invalid("the backup is too long for one stream (2^32 segments)".into())
            })?;
        write_segment(&mut self.out, false, &self.plain)?;
        self.plain.clear();
        Ok(())
    }
}

struct Counter(usize);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 = self.0.saturating_add(buf.len());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Segments<'a, W: Write> {
    writer: &'a mut BackupWriter<W>,
}

impl<W: Write> Write for Segments<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer.push(buf).map_err(|e| match e {
            BackupError::Io(io) => io,
            other => io::Error::other(other.to_string()),
        })?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
