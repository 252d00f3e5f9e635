//! Where the master key comes from: a private file, or a passphrase stretched
//! with Argon2id.

use std::fmt;

use argon2::{Algorithm, Argon2, Params, Version};
use keyhold_core::error::KeystoreError;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::seal::fill_random;

pub(crate) const MASTER_KEY_LEN: usize = 32;
const SALT_LEN: usize = 16;

/// How the master key is obtained, at `init` and at every `open`.
#[derive(Clone)]
pub enum MasterKeySource {
    /// A random key in `master.key` (mode 0600) next to the sealed files.
    File,
    /// A key derived from this passphrase with Argon2id; only the salt is stored.
    Passphrase(SecretString),
}

impl fmt::Debug for MasterKeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File => f.write_str("File"),
            Self::Passphrase(_) => f.write_str("Passphrase(<redacted>)"),
        }
    }
}

/// Contents of `master.salt`. The parameters are stored with the salt so a
/// future change of the defaults still opens keystores made with the old ones.
#[derive(Serialize, Deserialize)]
pub(crate) struct KdfParams {
    algorithm: String,
    memory_kib: u32,
    iterations: u32,
    parallelism: u32,
    salt_hex: String,
}

const ARGON2ID: &str = "argon2id";

impl KdfParams {
    /// Argon2id, m = 64 MiB, t = 3, p = 1, with a fresh random salt.
    pub(crate) fn generate() -> Result<Self, KeystoreError> {
        let mut salt = [0u8; SALT_LEN];
        fill_random(&mut salt)?;
        Ok(Self {
            algorithm: ARGON2ID.into(),
            memory_kib: 64 * 1024,
            iterations: 3,
            parallelism: 1,
            salt_hex: hex::encode(salt),
        })
    }

    pub(crate) fn to_json(&self) -> Result<Vec<u8>, KeystoreError> {
        serde_json::to_vec_pretty(self)
            .map_err(|e| KeystoreError::Internal(format!("encoding the KDF parameters: {e}")))
    }

    pub(crate) fn from_json(raw: &[u8]) -> Result<Self, KeystoreError> {
        let params: Self = serde_json::from_slice(raw).map_err(|e| {
            KeystoreError::Unavailable(format!("master.salt is not valid keyhold KDF JSON: {e}"))
        })?;
        if params.algorithm != ARGON2ID {
            return Err(KeystoreError::Unsupported(format!(
                "master.salt names KDF '{}'; this keyhold supports only {ARGON2ID}",
                params.algorithm
            )));
        }
        Ok(params)
    }

    pub(crate) fn derive(
        &self,
        passphrase: &SecretString,
    ) -> Result<Zeroizing<[u8; MASTER_KEY_LEN]>, KeystoreError> {
        let salt = hex::decode(&self.salt_hex)
            .map_err(|e| KeystoreError::Unavailable(format!("master.salt: bad salt: {e}")))?;
        let params = Params::new(
            self.memory_kib,
            self.iterations,
            self.parallelism,
            Some(MASTER_KEY_LEN),
        )
        .map_err(|e| {
            KeystoreError::Unavailable(format!("master.salt: bad Argon2 parameters: {e}"))
        })?;
        let mut key = Zeroizing::new([0u8; MASTER_KEY_LEN]);
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(passphrase.expose_secret().as_bytes(), &salt, &mut key[..])
            .map_err(|e| KeystoreError::Internal(format!("Argon2id derivation failed: {e}")))?;
        Ok(key)
    }
}
