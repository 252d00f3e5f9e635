//! The parts of a backup file both the writer and the readers know: the
//! magic, the header frame, segment framing and the trailer.

use std::io::{Read, Write};

use sha2::{Digest, Sha256};

use crate::error::{BackupError, Result};
use crate::header::Header;
use crate::io::HashingReader;
use crate::signature::SIGNATURE_LEN;

pub(crate) const MAGIC: &[u8; 8] = b"KHBACKUP";
/// A header is a few hundred bytes; the limit keeps a hostile file from
/// making a reader allocate before anything is checked.
pub(crate) const MAX_HEADER_LEN: usize = 64 * 1024;
/// Plaintext bytes per STREAM segment.
pub(crate) const SEGMENT_LEN: usize = 64 * 1024;
/// AES-GCM tag.
pub(crate) const TAG_LEN: usize = 16;
pub(crate) const SEGMENT_MORE: u8 = 0x00;
pub(crate) const SEGMENT_LAST: u8 = 0x01;
/// Largest record (its JSON): an audit archive file travels as one record.
pub(crate) const MAX_RECORD_LEN: usize = 1 << 30;
/// Domain of the trailer's signed message.
pub(crate) const TRAILER_DOMAIN: &[u8] = b"keyhold-backup-v1 trailer";
pub(crate) const TRAILER_LEN: usize = 32 + SIGNATURE_LEN;

pub(crate) fn write_header<W: Write>(out: &mut W, header: &Header) -> Result<[u8; 32]> {
    let bytes = serde_json::to_vec(header)
        .map_err(|e| BackupError::Invalid(format!("the header does not serialise: {e}")))?;
    if bytes.len() > MAX_HEADER_LEN {
        return Err(BackupError::Invalid(format!(
            "the header is {} bytes, more than {MAX_HEADER_LEN}: shorten the names in it",
            bytes.len()
        )));
    }
    out.write_all(MAGIC)?;
    out.write_all(&(bytes.len() as u32).to_be_bytes())?;
    out.write_all(&bytes)?;
    Ok(Sha256::digest(&bytes).into())
}

/// Reads and checks the magic and the header; returns the header and the
/// SHA-256 of its exact bytes.
pub(crate) fn read_header<R: Read>(input: &mut HashingReader<R>) -> Result<(Header, [u8; 32])> {
    let mut magic = [0u8; 8];
    input
        .read_exact(&mut magic)
        .map_err(|_| BackupError::NotABackup("it is shorter than the file signature".into()))?;
    if &magic != MAGIC {
        return Err(BackupError::NotABackup(
            "it does not start with KHBACKUP: give the file `keyhold backup create` wrote".into(),
        ));
    }
    let mut len = [0u8; 4];
    input.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_HEADER_LEN {
        return Err(BackupError::NotABackup(format!(
            "its header claims {len} bytes, more than {MAX_HEADER_LEN}"
        )));
    }
    let mut bytes = vec![0u8; len];
    input.read_exact(&mut bytes)?;
    let header: Header = serde_json::from_slice(&bytes)
        .map_err(|e| BackupError::NotABackup(format!("its header is not valid: {e}")))?;
    header.check()?;
    Ok((header, Sha256::digest(&bytes).into()))
}

pub(crate) fn write_segment<W: Write>(out: &mut W, last: bool, ciphertext: &[u8]) -> Result<()> {
    out.write_all(&[if last { SEGMENT_LAST } else { SEGMENT_MORE }])?;
    out.write_all(&(ciphertext.len() as u32).to_be_bytes())?;
    out.write_all(ciphertext)?;
    Ok(())
}

/// Reads the next segment's ciphertext into `buf` (whose capacity is a full
/// segment, so it never grows); returns whether it is the last.
pub(crate) fn read_segment<R: Read>(input: &mut R, buf: &mut Vec<u8>) -> Result<bool> {
    let mut head = [0u8; 5];
    input.read_exact(&mut head)?;
    let last = match head[0] {
        SEGMENT_MORE => false,
        SEGMENT_LAST => true,
        other => {
            return Err(BackupError::Damaged(format!(
                "a segment has the unknown kind {other:#04x}"
            )));
        }
    };
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let full = SEGMENT_LEN + TAG_LEN;
    if len < TAG_LEN || len > full || (!last && len != full) {
        return Err(BackupError::Damaged(format!(
            "a segment claims {len} bytes: segments before the last hold exactly {full}, the last {TAG_LEN} to {full}"
        )));
    }
    buf.clear();
    buf.resize(len, 0);
    input.read_exact(buf)?;
    Ok(last)
}

/// Reads the trailer after the last segment and checks it: the hash of
/// everything before it, a signature by `header`'s audit key, then the end
/// of the file.
pub(crate) fn read_trailer<R: Read>(input: &mut HashingReader<R>, header: &Header) -> Result<()> {
    let digest = input.digest();
    let mut trailer = [0u8; TRAILER_LEN];
    input.read_exact(&mut trailer)?;
    if !input.at_end()? {
        return Err(BackupError::Damaged(
            "bytes follow the signed trailer".into(),
        ));
    }
    let (hash, signature) = trailer.split_at(32);
    if hash != digest {
        return Err(BackupError::Damaged(
            "the trailer's SHA-256 is not that of the file before it".into(),
        ));
    }
    let key = header.audit_public_key()?;
    if !crate::signature::verifies(TRAILER_DOMAIN, &digest, signature, &key) {
        return Err(BackupError::Signature(format!(
            "the trailer is not signed by the audit key the header names (fingerprint {}): the file was altered or forged",
            key.fingerprint_hex()
        )));
    }
    Ok(())
}
