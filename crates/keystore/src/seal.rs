//! The sealed-blob format shared by key handles, secrets and the keystore's own files:
//!
//! ```text
//! kind (1 byte) || nonce (12 bytes) || AES-256-GCM ciphertext || tag (16 bytes)
//! ```
//!
//! The kind byte doubles as the format version and is also the first byte of
//! the AAD, so a blob sealed as one kind never opens as another, even when a
//! caller's context happens to equal a key id.

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce, Tag};
use keyhold_core::error::KeystoreError;
use zeroize::Zeroizing;

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 1 + NONCE_LEN;

/// What a blob holds; written as its first byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum BlobKind {
    /// Key material, bound to its key id.
    KeyHandle = 0x01,
    /// A caller's secret, bound to the caller's context.
    Secret = 0x02,
    /// The keystore's own files (`master.check`, `audit-mac.key`).
    Internal = 0x03,
    /// An XKS key's material, bound to its key id. A kind of its own, so
    /// a BYOK key's handle never serves AES-GCM for KMS and an XKS key's
    /// handle is never wrapped for a cloud.
    XksKeyHandle = 0x04,
}

/// AES-256-GCM under the master key. The expanded key is wiped on drop
/// (`aes` zeroize feature).
pub(crate) struct Sealer {
    cipher: Aes256Gcm,
}

impl Sealer {
    pub(crate) fn new(master_key: &[u8; 32]) -> Self {
        Self {
            cipher: Aes256Gcm::new(master_key.into()),
        }
    }

    pub(crate) fn seal(
        &self,
        kind: BlobKind,
        context: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, KeystoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce)?;
        // Sized up front so the plaintext copy is never left behind by a reallocation.
        let mut blob = Zeroizing::new(Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN));
        blob.push(kind as u8);
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(plaintext);
        let tag = self
            .cipher
            .encrypt_in_place_detached(
                Nonce::from_slice(&nonce),
                &aad(kind, context),
                &mut blob[HEADER_LEN..],
            )
            .map_err(|_| KeystoreError::Internal("AES-GCM sealing failed".into()))?;
        blob.extend_from_slice(&tag);
        Ok(std::mem::take(&mut *blob))
    }

    /// Fails with [`KeystoreError::SealBroken`] for a wrong master key, a wrong
    /// context, another kind of blob, or any change to the blob.
    pub(crate) fn open(
        &self,
        kind: BlobKind,
        context: &[u8],
        blob: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeystoreError> {
        if blob.len() < HEADER_LEN + TAG_LEN || blob[0] != kind as u8 {
            return Err(KeystoreError::SealBroken);
        }
        let (header, rest) = blob.split_at(HEADER_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        let mut plaintext = Zeroizing::new(ciphertext.to_vec());
        self.cipher
            .decrypt_in_place_detached(
                Nonce::from_slice(&header[1..]),
                &aad(kind, context),
                &mut plaintext,
                Tag::from_slice(tag),
            )
            .map_err(|_| KeystoreError::SealBroken)?;
        Ok(plaintext)
    }
}

fn aad(kind: BlobKind, context: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(1 + context.len());
    aad.push(kind as u8);
    aad.extend_from_slice(context);
    aad
}

pub(crate) fn fill_random(buf: &mut [u8]) -> Result<(), KeystoreError> {
    getrandom::getrandom(buf)
        .map_err(|e| KeystoreError::Unavailable(format!("the OS random generator failed: {e}")))
}
