//! Wrapping key material for AWS KMS `ImportKeyMaterial`.

use aes_kw::KekAes256;
use keyhold_core::cloud::WrappingAlgorithm;
use keyhold_core::error::KeystoreError;
use rsa::pkcs8::DecodePublicKey;
use rsa::rand_core::OsRng;
use rsa::traits::PublicKeyParts;
use rsa::{Oaep, RsaPublicKey};
use sha1::Sha1;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::seal::fill_random;

/// KMS offers RSA_2048 and up; anything smaller is not a KMS wrapping key and
/// would protect the material less than AES-256 does.
const MIN_RSA_BITS: usize = 2048;

/// RFC 5649 output: the input padded to 8 bytes, plus the 8-byte integrity block.
fn kwp_output_len(input_len: usize) -> usize {
    input_len.div_ceil(8) * 8 + 8
}

pub(crate) fn wrap_for_kms(
    material: &[u8],
    wrapping_public_key_der: &[u8],
    algorithm: WrappingAlgorithm,
) -> Result<Vec<u8>, KeystoreError> {
    let public_key = RsaPublicKey::from_public_key_der(wrapping_public_key_der).map_err(|e| {
        KeystoreError::Unsupported(format!(
            "the wrapping public key is not a DER SubjectPublicKeyInfo RSA key: {e}"
        ))
    })?;
    let bits = public_key.size() * 8;
    if bits < MIN_RSA_BITS {
        return Err(KeystoreError::Unsupported(format!(
            "the wrapping public key has {bits} bits; at least {MIN_RSA_BITS} are required"
        )));
    }
    match algorithm {
        WrappingAlgorithm::RsaesOaepSha256 => {
            rsa_encrypt(&public_key, Oaep::new::<Sha256>(), material)
        }
        WrappingAlgorithm::RsaesOaepSha1 => rsa_encrypt(&public_key, Oaep::new::<Sha1>(), material),
        WrappingAlgorithm::RsaAesKeyWrapSha256 => rsa_aes_key_wrap(&public_key, material),
    }
}

/// RSA_AES_KEY_WRAP_SHA_256: RSA-OAEP-SHA-256(ephemeral AES key) || AES-KWP(material).
fn rsa_aes_key_wrap(public_key: &RsaPublicKey, material: &[u8]) -> Result<Vec<u8>, KeystoreError> {
    let mut ephemeral = Zeroizing::new([0u8; 32]);
    fill_random(&mut ephemeral[..])?;
    let mut wrapped = rsa_encrypt(public_key, Oaep::new::<Sha256>(), &ephemeral[..])?;
    let kek = KekAes256::try_from(&ephemeral[..])
        .map_err(|e| KeystoreError::Internal(format!("AES key wrap key: {e}")))?;
    let mut key_wrapped = vec![0u8; kwp_output_len(material.len())];
    kek.wrap_with_padding(material, &mut key_wrapped)
        .map_err(|e| KeystoreError::Internal(format!("AES key wrap with padding failed: {e}")))?;
    wrapped.extend_from_slice(&key_wrapped);
    Ok(wrapped)
}

fn rsa_encrypt(
    public_key: &RsaPublicKey,
    padding: Oaep,
    plaintext: &[u8],
) -> Result<Vec<u8>, KeystoreError> {
    public_key
        .encrypt(&mut OsRng, padding, plaintext)
        .map_err(|e| KeystoreError::Internal(format!("RSA-OAEP encryption failed: {e}")))
}
