//! Import parameters: the import token, and unwrapping imported material with
//! the peer's RSA-2048 private key (faithful mode only).
//!
//! The wrapping algorithms are AWS KMS's (Developer Guide, *Download the
//! wrapping public key and import token*): RSAES_OAEP_SHA_1/_256 encrypt the
//! material with RSA-OAEP; RSA_AES_KEY_WRAP_SHA_1/_256 encrypt an ephemeral
//! AES-256 key with RSA-OAEP and append the material wrapped under it with AES
//! key wrap with padding (RFC 5649), as keyhold does in
//! crates/keystore/src/wrap.rs.

use aes_kw::KekAes256;
use rsa::rand_core::OsRng;
use rsa::traits::PublicKeyParts;
use rsa::{Oaep, RsaPrivateKey};
use sha1::Sha1;
use sha2::Sha256;

use super::KmsError;

/// GetParametersForImport's `WrappingAlgorithm`s the peer unwraps.
/// RSAES_PKCS1_V1_5 (no longer offered by AWS) and SM2PKE (China Regions
/// only) are refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum WrappingAlgorithm {
    RsaesOaepSha1,
    RsaesOaepSha256,
    RsaAesKeyWrapSha1,
    RsaAesKeyWrapSha256,
}

impl WrappingAlgorithm {
    const ALL: [Self; 4] = [
        Self::RsaesOaepSha1,
        Self::RsaesOaepSha256,
        Self::RsaAesKeyWrapSha1,
        Self::RsaAesKeyWrapSha256,
    ];

    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::RsaesOaepSha1 => "RSAES_OAEP_SHA_1",
            Self::RsaesOaepSha256 => "RSAES_OAEP_SHA_256",
            Self::RsaAesKeyWrapSha1 => "RSA_AES_KEY_WRAP_SHA_1",
            Self::RsaAesKeyWrapSha256 => "RSA_AES_KEY_WRAP_SHA_256",
        }
    }

    pub(super) fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == raw)
    }
}

/// What an import token stands for. AWS's tokens are opaque; the peer's
/// carry the key and the wrapping algorithm GetParametersForImport was asked
/// for, so ImportKeyMaterial knows how to unwrap without the peer keeping a
/// table of tokens (the benchmarks ask for thousands).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ImportToken {
    pub key_id: String,
    pub algorithm: WrappingAlgorithm,
    /// `ParametersValidTo`, in milliseconds since the epoch.
    pub valid_to_ms: i64,
}

const TOKEN_PREFIX: &str = "keyhold-bench-kms-peer/import-token/v1";

impl ImportToken {
    /// A token unique to this request (a random nonce), like AWS's.
    pub(super) fn encode(&self) -> Vec<u8> {
        format!(
            "{TOKEN_PREFIX} {} {} {} {}",
            self.key_id,
            self.algorithm.as_str(),
            self.valid_to_ms,
            uuid::Uuid::new_v4().simple()
        )
        .into_bytes()
    }

    pub(super) fn decode(raw: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(raw).ok()?;
        let mut parts = text.split(' ');
        if parts.next()? != TOKEN_PREFIX {
            return None;
        }
        let key_id = parts.next()?.to_owned();
        let algorithm = WrappingAlgorithm::parse(parts.next()?)?;
        let valid_to_ms = parts.next()?.parse().ok()?;
        parts.next()?;
        parts.next().is_none().then_some(Self {
            key_id,
            algorithm,
            valid_to_ms,
        })
    }
}

/// The material inside `wrapped`; `InvalidCiphertextException` when it does
/// not unwrap ("KMS could not decrypt the encrypted (wrapped) key material",
/// ImportKeyMaterial).
pub(super) fn unwrap_material(
    private: &RsaPrivateKey,
    algorithm: WrappingAlgorithm,
    wrapped: &[u8],
) -> Result<Vec<u8>, KmsError> {
    match algorithm {
        WrappingAlgorithm::RsaesOaepSha1 => rsa_decrypt(private, Oaep::new::<Sha1>(), wrapped),
        WrappingAlgorithm::RsaesOaepSha256 => rsa_decrypt(private, Oaep::new::<Sha256>(), wrapped),
        WrappingAlgorithm::RsaAesKeyWrapSha1 => {
            rsa_aes_key_unwrap(private, Oaep::new::<Sha1>(), wrapped)
        }
        WrappingAlgorithm::RsaAesKeyWrapSha256 => {
            rsa_aes_key_unwrap(private, Oaep::new::<Sha256>(), wrapped)
        }
    }
}

/// RSA-OAEP(ephemeral AES-256 key) || AES-KWP(material): the RSA part is one
/// modulus long.
fn rsa_aes_key_unwrap(
    private: &RsaPrivateKey,
    padding: Oaep,
    wrapped: &[u8],
) -> Result<Vec<u8>, KmsError> {
    let modulus_len = private.size();
    if wrapped.len() < modulus_len + 16 {
        return Err(not_unwrapped("too short for RSA_AES_KEY_WRAP"));
    }
    let (rsa_part, kwp_part) = wrapped.split_at(modulus_len);
    let ephemeral = rsa_decrypt(private, padding, rsa_part)?;
    let kek = KekAes256::try_from(ephemeral.as_slice())
        .map_err(|_| not_unwrapped("the ephemeral key is not an AES-256 key"))?;
    let mut out = vec![0u8; kwp_part.len().saturating_sub(8)];
    let material = kek
        .unwrap_with_padding(kwp_part, &mut out)
        .map_err(|_| not_unwrapped("AES key wrap with padding failed its integrity check"))?;
    Ok(material.to_vec())
}

fn rsa_decrypt(
    private: &RsaPrivateKey,
    padding: Oaep,
    ciphertext: &[u8],
) -> Result<Vec<u8>, KmsError> {
    private
        .decrypt_blinded(&mut OsRng, padding, ciphertext)
        .map_err(|_| not_unwrapped("RSA-OAEP decryption failed"))
}

fn not_unwrapped(why: &str) -> KmsError {
    KmsError::new(
        "InvalidCiphertextException",
        format!("KMS could not decrypt the encrypted (wrapped) key material: {why}"),
    )
}

#[cfg(test)]
mod tests {
    use aes_kw::KekAes256;
    use rsa::RsaPublicKey;

    use super::*;

    fn wrap(public: &RsaPublicKey, algorithm: WrappingAlgorithm, material: &[u8]) -> Vec<u8> {
        let oaep = |sha1: bool| {
            if sha1 {
                Oaep::new::<Sha1>()
            } else {
                Oaep::new::<Sha256>()
            }
        };
        match algorithm {
            WrappingAlgorithm::RsaesOaepSha1 | WrappingAlgorithm::RsaesOaepSha256 => public
                .encrypt(
                    &mut OsRng,
                    oaep(algorithm == WrappingAlgorithm::RsaesOaepSha1),
                    material,
                )
                .unwrap(),
            WrappingAlgorithm::RsaAesKeyWrapSha1 | WrappingAlgorithm::RsaAesKeyWrapSha256 => {
                let ephemeral = [9u8; 32];
                let mut out = public
                    .encrypt(
                        &mut OsRng,
                        oaep(algorithm == WrappingAlgorithm::RsaAesKeyWrapSha1),
                        &ephemeral,
                    )
                    .unwrap();
                let kek = KekAes256::try_from(&ephemeral[..]).unwrap();
                let mut kwp = vec![0u8; material.len().div_ceil(8) * 8 + 8];
                kek.wrap_with_padding(material, &mut kwp).unwrap();
                out.extend_from_slice(&kwp);
                out
            }
        }
    }

    #[test]
    fn every_algorithm_unwraps_what_it_wrapped_and_no_other_algorithm_does() {
        let private = RsaPrivateKey::new(&mut OsRng, 2048).unwrap();
        let public = private.to_public_key();
        let material = [42u8; 32];
        for algorithm in WrappingAlgorithm::ALL {
            let wrapped = wrap(&public, algorithm, &material);
            assert_eq!(
                unwrap_material(&private, algorithm, &wrapped).unwrap(),
                material,
                "{algorithm:?}"
            );
            for other in WrappingAlgorithm::ALL
                .into_iter()
                .filter(|a| *a != algorithm)
            {
                let err = unwrap_material(&private, other, &wrapped).unwrap_err();
                assert_eq!(
                    err.code, "InvalidCiphertextException",
                    "{algorithm:?} as {other:?}"
                );
            }
        }
    }

    #[test]
    fn a_token_carries_its_key_and_algorithm_and_nothing_else_parses() {
        let token = ImportToken {
            key_id: "0b9c0a55-3f0e-4a43-9c2e-6a1c1f8f2b11".to_owned(),
            algorithm: WrappingAlgorithm::RsaAesKeyWrapSha256,
            valid_to_ms: 1_700_000_000_000,
        };
        let encoded = token.encode();
        assert_ne!(encoded, token.encode(), "each token is unique");
        assert_eq!(ImportToken::decode(&encoded), Some(token));
        assert_eq!(ImportToken::decode(b"not a token"), None);
        assert_eq!(
            ImportToken::decode(&uuid::Uuid::new_v4().into_bytes()),
            None
        );
    }
}
