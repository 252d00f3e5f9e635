//! Custodians' keys: X25519 (HPKE's DHKEM(X25519, HKDF-SHA256)), made at
//! random and kept in a private key file, or derived from a passphrase
//! with Argon2id so that keyhold enrols the public key without ever
//! keeping the passphrase.

use std::fmt;

use argon2::{Algorithm, Argon2, Params, Version};
use hpke::{Deserializable, Kem as _, Serializable};
use keyhold_core::backup::PassphraseKdf;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::{BackupError, Result};

pub(crate) type Kem = hpke::kem::X25519HkdfSha256;
pub(crate) type PrivateKey = <Kem as hpke::Kem>::PrivateKey;
pub(crate) type PublicKey = <Kem as hpke::Kem>::PublicKey;

/// What a custodian's private key file starts with.
pub const SECRET_PREFIX: &str = "keyhold-custodian-secret-v1:";
const KEY_LEN: usize = 32;

/// Argon2id for passphrase custodians: 64 MiB, 3 passes, one lane (the
/// OWASP-recommended floor; a custodian derives once per restore).
pub const PASSPHRASE_MEMORY_KIB: u32 = 64 * 1024;
pub const PASSPHRASE_ITERATIONS: u32 = 3;
pub const PASSPHRASE_PARALLELISM: u32 = 1;
// Bounds on parameters read from a share file, so a tampered one cannot
// make a restore allocate or compute without end.
const MAX_MEMORY_KIB: u32 = 4 * 1024 * 1024;
const MAX_ITERATIONS: u32 = 64;
const MAX_PARALLELISM: u32 = 64;

/// A custodian's private key. Wiped on drop, never printed.
pub struct CustodianSecret {
    secret: PrivateKey,
    public: PublicKey,
}

impl fmt::Debug for CustodianSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CustodianSecret(public key {}, <secret redacted>)",
            self.public_key_hex()
        )
    }
}

impl CustodianSecret {
    /// A new random key (`keyhold backup custodian-key`).
    pub fn generate() -> Result<Self> {
        let mut ikm = Zeroizing::new([0u8; KEY_LEN]);
        getrandom::getrandom(ikm.as_mut()).map_err(|e| {
            BackupError::Custodian(format!(
                "the operating system gave no random bytes for a custodian key: {e}"
            ))
        })?;
        Ok(Self::derive(ikm.as_ref()))
    }

    /// The key a passphrase makes under `kdf`: the same every time, so
    /// the custodian needs only the passphrase at a restore.
    pub fn from_passphrase(passphrase: &SecretString, kdf: &PassphraseKdf) -> Result<Self> {
        if passphrase.expose_secret().is_empty() {
            return Err(BackupError::Custodian("the passphrase is empty".into()));
        }
        if kdf.memory_kib > MAX_MEMORY_KIB
            || kdf.iterations > MAX_ITERATIONS
            || kdf.parallelism > MAX_PARALLELISM
        {
            return Err(BackupError::Custodian(format!(
                "the passphrase parameters ({} KiB, {} passes, {} lanes) are beyond what keyhold ever sets: the share file was altered",
                kdf.memory_kib, kdf.iterations, kdf.parallelism
            )));
        }
        let salt = hex::decode(&kdf.salt)
            .ok()
            .filter(|s| s.len() == 16)
            .ok_or_else(|| {
                BackupError::Custodian("the passphrase salt is not 16 bytes of hex".into())
            })?;
        let params = Params::new(
            kdf.memory_kib,
            kdf.iterations,
            kdf.parallelism,
            Some(KEY_LEN),
        )
        .map_err(|e| BackupError::Custodian(format!("the passphrase parameters: {e}")))?;
        let mut ikm = Zeroizing::new([0u8; KEY_LEN]);
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(passphrase.expose_secret().as_bytes(), &salt, ikm.as_mut())
            .map_err(|e| BackupError::Custodian(format!("deriving from the passphrase: {e}")))?;
        Ok(Self::derive(ikm.as_ref()))
    }

    /// HPKE's DeriveKeyPair (RFC 9180 §7.1.3): uniform keys from any
    /// 32 bytes of entropy.
    fn derive(ikm: &[u8]) -> Self {
        let (secret, public) = Kem::derive_keypair(ikm);
        Self { secret, public }
    }

    /// The private key file's text: `keyhold-custodian-secret-v1:<hex>`.
    pub fn to_text(&self) -> Zeroizing<String> {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        self.secret.write_exact(bytes.as_mut());
        let mut text = Zeroizing::new(String::with_capacity(SECRET_PREFIX.len() + 2 * KEY_LEN + 1));
        text.push_str(SECRET_PREFIX);
        text.push_str(&Zeroizing::new(hex::encode(bytes.as_ref())));
        text.push('\n');
        text
    }

    /// A private key file's text, as [`CustodianSecret::to_text`] wrote it
    /// (surrounding white space allowed).
    pub fn parse(text: &str) -> Result<Self> {
        let body = text.trim().strip_prefix(SECRET_PREFIX).ok_or_else(|| {
            BackupError::Custodian(format!(
                "a custodian key file starts with {SECRET_PREFIX}: give the file `keyhold backup custodian-key` wrote"
            ))
        })?;
        let bytes = Zeroizing::new(
            hex::decode(body)
                .ok()
                .filter(|b| b.len() == KEY_LEN)
                .ok_or_else(|| {
                    BackupError::Custodian(format!(
                        "the key after {SECRET_PREFIX} must be {KEY_LEN} bytes as {} hex digits",
                        2 * KEY_LEN
                    ))
                })?,
        );
        let secret = PrivateKey::from_bytes(&bytes)
            .map_err(|_| BackupError::Custodian("not an X25519 private key".into()))?;
        let public = Kem::sk_to_pk(&secret);
        Ok(Self { secret, public })
    }

    pub(crate) fn private(&self) -> &PrivateKey {
        &self.secret
    }

    /// The public key to enrol (a custodian's `public_key`), hex.
    pub fn public_key_hex(&self) -> String {
        hex::encode(self.public.to_bytes())
    }

    /// See [`key_fingerprint`].
    pub fn fingerprint(&self) -> String {
        fingerprint_of(&self.public.to_bytes())
    }
}

/// A new random key and its public key in hex.
pub fn generate_custodian_key() -> Result<(CustodianSecret, String)> {
    let secret = CustodianSecret::generate()?;
    let public = secret.public_key_hex();
    Ok((secret, public))
}

/// The key a passphrase makes (see [`CustodianSecret::from_passphrase`]).
pub fn custodian_from_passphrase(
    passphrase: &SecretString,
    kdf: &PassphraseKdf,
) -> Result<CustodianSecret> {
    CustodianSecret::from_passphrase(passphrase, kdf)
}

/// Argon2id parameters for a new passphrase custodian, with a fresh salt.
pub fn new_passphrase_kdf() -> Result<PassphraseKdf> {
    kdf_with(
        PASSPHRASE_MEMORY_KIB,
        PASSPHRASE_ITERATIONS,
        PASSPHRASE_PARALLELISM,
    )
}

/// Like [`new_passphrase_kdf`], but cheap (8 KiB, one pass): for tests only.
#[cfg(any(test, feature = "testing"))]
pub fn passphrase_kdf_for_tests() -> PassphraseKdf {
    kdf_with(8, 1, 1).unwrap_or(PassphraseKdf {
        memory_kib: 8,
        iterations: 1,
        parallelism: 1,
        salt: "00".repeat(16),
    })
}

fn kdf_with(memory_kib: u32, iterations: u32, parallelism: u32) -> Result<PassphraseKdf> {
    let mut salt = [0u8; 16];
    getrandom::getrandom(&mut salt).map_err(|e| {
        BackupError::Custodian(format!(
            "the operating system gave no random bytes for a salt: {e}"
        ))
    })?;
    Ok(PassphraseKdf {
        memory_kib,
        iterations,
        parallelism,
        salt: hex::encode(salt),
    })
}

/// A short name of a custodian public key (hex of the first 16 bytes of
/// its SHA-256), printed on share files so a custodian sees which key
/// opens one. `None` when `public_key_hex` is not 32 bytes of hex.
pub fn key_fingerprint(public_key_hex: &str) -> Option<String> {
    let bytes = hex::decode(public_key_hex)
        .ok()
        .filter(|b| b.len() == KEY_LEN)?;
    Some(fingerprint_of(&bytes))
}

fn fingerprint_of(public: &[u8]) -> String {
    hex::encode(&Sha256::digest(public)[..16])
}

pub(crate) fn parse_public_key(custodian: &str, public_key_hex: &str) -> Result<PublicKey> {
    hex::decode(public_key_hex)
        .ok()
        .filter(|b| b.len() == KEY_LEN)
        .and_then(|b| PublicKey::from_bytes(&b).ok())
        .ok_or_else(|| {
            BackupError::Custodian(format!(
                "custodian '{custodian}': the public key is not 32 bytes of hex"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_round_trips_and_refuses_what_is_not_one() {
        let (secret, public) = generate_custodian_key().unwrap();
        let text = secret.to_text();
        let back = CustodianSecret::parse(&format!("  {}  ", &*text)).unwrap();
        assert_eq!(back.public_key_hex(), public);
        assert_eq!(key_fingerprint(&public).unwrap(), secret.fingerprint());
        assert!(
            !format!("{secret:?}").contains(&text[SECRET_PREFIX.len()..SECRET_PREFIX.len() + 64])
        );
        for bad in [
            "",
            "keyhold-custodian-secret-v1:",
            "keyhold-custodian-secret-v1:zz",
            "00",
        ] {
            assert!(CustodianSecret::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_passphrase_makes_the_same_key_each_time_and_another_one_another() {
        let kdf = passphrase_kdf_for_tests();
        let pass = SecretString::from("correct horse battery staple");
        let a = custodian_from_passphrase(&pass, &kdf).unwrap();
        let b = custodian_from_passphrase(&pass, &kdf).unwrap();
        assert_eq!(a.public_key_hex(), b.public_key_hex());
        let other =
            custodian_from_passphrase(&SecretString::from("correct horse battery stapler"), &kdf)
                .unwrap();
        assert_ne!(a.public_key_hex(), other.public_key_hex());
        let salted = custodian_from_passphrase(&pass, &passphrase_kdf_for_tests()).unwrap();
        assert_ne!(a.public_key_hex(), salted.public_key_hex());
        let hostile = PassphraseKdf {
            memory_kib: u32::MAX,
            ..kdf.clone()
        };
        assert!(custodian_from_passphrase(&pass, &hostile).is_err());
        assert!(custodian_from_passphrase(&SecretString::from(""), &kdf).is_err());
        let production = new_passphrase_kdf().unwrap();
        assert_eq!(production.memory_kib, 65536);
        assert_eq!(production.iterations, 3);
        assert_eq!(production.salt.len(), 32);
    }
}
