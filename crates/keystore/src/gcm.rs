//! AES-256-GCM of XKS keys in software, as AWS KMS asks it of an external
//! key store: plain AES-GCM (NIST SP 800-38D) with a 12-byte IV from the
//! OS and a 128-bit tag, so any AES-GCM implementation reads what this
//! writes (and KMS's own format around it is KMS's business).

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce, Tag};
use keyhold_core::error::KeystoreError;
use keyhold_core::ports::GcmCiphertext;
use zeroize::Zeroizing;

use crate::KEY_LEN;
use crate::seal::fill_random;

pub(crate) const IV_LEN: usize = 12;

/// Encrypts under `key` with a fresh random IV.
pub(crate) fn encrypt(
    key: &[u8; KEY_LEN],
    plaintext: &[u8],
    aad: &[u8],
) -> Result<GcmCiphertext, KeystoreError> {
    let mut iv = [0u8; IV_LEN];
    fill_random(&mut iv)?;
    // Encrypted in place: the copy of the plaintext becomes the ciphertext,
    // and is wiped should the encryption fail instead.
    let mut buffer = Zeroizing::new(plaintext.to_vec());
    let tag = Aes256Gcm::new(key.into())
        .encrypt_in_place_detached(Nonce::from_slice(&iv), aad, &mut buffer)
        .map_err(|_| {
            KeystoreError::Internal(format!(
                "AES-GCM refused to encrypt {} bytes",
                plaintext.len()
            ))
        })?;
    Ok(GcmCiphertext {
        iv,
        ciphertext: std::mem::take(&mut *buffer),
        tag: tag.into(),
    })
}

/// Decrypts; [`KeystoreError::SealBroken`] when the tag does not
/// authenticate the ciphertext and `aad` under `key`.
pub(crate) fn decrypt(
    key: &[u8; KEY_LEN],
    sealed: &GcmCiphertext,
    aad: &[u8],
) -> Result<Zeroizing<Vec<u8>>, KeystoreError> {
    let mut buffer = Zeroizing::new(sealed.ciphertext.clone());
    Aes256Gcm::new(key.into())
        .decrypt_in_place_detached(
            Nonce::from_slice(&sealed.iv),
            aad,
            &mut buffer,
            Tag::from_slice(&sealed.tag),
        )
        .map_err(|_| KeystoreError::SealBroken)?;
    Ok(buffer)
}

/// The XKS health check's round trip with a key that lives only in this
/// call: the OS random source and AES-GCM both answer.
pub(crate) fn round_trip_throwaway_key() -> Result<(), KeystoreError> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    fill_random(&mut key[..])?;
    let mut block = [0u8; 16];
    fill_random(&mut block)?;
    let aad = b"keyhold xks health check";
    let sealed = encrypt(&key, &block, aad)?;
    let opened = decrypt(&key, &sealed, aad)?;
    if opened.as_slice() == block {
        Ok(())
    } else {
        Err(KeystoreError::Internal(
            "AES-GCM decrypted the health check's block into other bytes".into(),
        ))
    }
}
