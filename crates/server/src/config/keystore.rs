//! Where keys live: the software keystore or a PKCS#11 token. Rules: the
//! keystore passphrase and the PKCS#11 PIN come from a file or the
//! environment, never from a flag (`ps` and shell history would show it),
//! and never reach Debug output.

use std::path::{Path, PathBuf};

use keyhold_keystore::{MasterKeySource, Pkcs11Settings, TokenSelector};
use secrecy::SecretString;

use super::ConfigError;
use super::layering::settings_area;

/// Environment variable holding the keystore passphrase. Environment only:
/// a flag would show in `ps` and shell history.
pub const PASSPHRASE_ENV: &str = "KEYHOLD_KEYSTORE_PASSPHRASE";
/// Environment variable holding the PKCS#11 user PIN (environment only).
pub const PIN_ENV: &str = "KEYHOLD_PKCS11_PIN";

settings_area! {
    /// The keystore: software or PKCS#11.
    pub struct KeystoreArgs {
        /// File holding the keystore passphrase (derives the master key with Argon2id
        /// instead of keeping it in <data-dir>/keystore/master.key). The passphrase
        /// may also come from the KEYHOLD_KEYSTORE_PASSPHRASE variable.
        #[arg(long, env = "KEYHOLD_KEYSTORE_PASSPHRASE_FILE")]
        pub keystore_passphrase_file: Option<PathBuf>,
        /// Where keys live: `software` (sealed under a master key in
        /// <data-dir>/keystore) or `pkcs11` (an HSM token) [default: software].
        #[arg(long, env = "KEYHOLD_KEYSTORE", value_name = "KIND")]
        pub keystore: Option<String>,
        /// PKCS#11 module (shared library) of the HSM, such as
        /// /usr/lib/softhsm/libsofthsm2.so. Needed with --keystore pkcs11.
        #[arg(long, env = "KEYHOLD_PKCS11_MODULE", value_name = "PATH")]
        pub pkcs11_module: Option<PathBuf>,
        /// Label of the token that holds keyhold's keys (or --pkcs11-slot).
        #[arg(long, env = "KEYHOLD_PKCS11_TOKEN_LABEL", value_name = "LABEL")]
        pub pkcs11_token_label: Option<String>,
        /// Slot id of the token, instead of its label.
        #[arg(long, env = "KEYHOLD_PKCS11_SLOT", value_name = "ID")]
        pub pkcs11_slot: Option<u64>,
        /// File holding the token's user PIN. The PIN may also come from the
        /// KEYHOLD_PKCS11_PIN variable; never from a flag.
        #[arg(long, env = "KEYHOLD_PKCS11_PIN_FILE", value_name = "PATH")]
        pub pkcs11_pin_file: Option<PathBuf>,
    }
}

/// Where keys live.
#[derive(Clone, Debug)]
pub enum KeystoreConfig {
    /// Sealed under a master key kept in (or derived for) <data-dir>/keystore.
    Software(MasterKeySource),
    /// Inside a PKCS#11 token. `migrate_from` opens the software keystore
    /// a data directory used before, for `keyhold keystore migrate`.
    Pkcs11 {
        token: Pkcs11Settings,
        migrate_from: MasterKeySource,
    },
}

/// Secrets that come from the environment only (never a flag, which `ps`
/// and shell history would show). Passed in, so tests need not touch the
/// process environment.
#[derive(Default)]
pub struct EnvSecrets {
    /// KEYHOLD_KEYSTORE_PASSPHRASE.
    pub keystore_passphrase: Option<SecretString>,
    /// KEYHOLD_PKCS11_PIN.
    pub pkcs11_pin: Option<SecretString>,
    /// KEYHOLD_APPROVAL_WEBHOOK_SECRET.
    pub approval_webhook_secret: Option<SecretString>,
}

impl EnvSecrets {
    pub fn from_process_env() -> Self {
        let read = |name: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .map(SecretString::from)
        };
        Self {
            keystore_passphrase: read(PASSPHRASE_ENV),
            pkcs11_pin: read(PIN_ENV),
            approval_webhook_secret: read(super::approval_webhook::WEBHOOK_SECRET_ENV),
        }
    }
}

impl KeystoreArgs {
    pub fn resolve(self, secrets: EnvSecrets) -> Result<KeystoreConfig, ConfigError> {
        let software_master = match (self.keystore_passphrase_file, secrets.keystore_passphrase) {
            (Some(path), _) => {
                MasterKeySource::Passphrase(read_secret_file("keystore passphrase", &path)?)
            }
            (None, Some(passphrase)) => MasterKeySource::Passphrase(passphrase),
            (None, None) => MasterKeySource::File,
        };
        match self.keystore.as_deref().unwrap_or("software") {
            "software" => Ok(KeystoreConfig::Software(software_master)),
            "pkcs11" => {
                let module = self.pkcs11_module.ok_or_else(|| {
                    ConfigError("the pkcs11 keystore needs pkcs11_module: the path of the HSM's PKCS#11 library, such as /usr/lib/softhsm/libsofthsm2.so".into())
                })?;
                let token = match (self.pkcs11_token_label, self.pkcs11_slot) {
                    (Some(label), None) => TokenSelector::Label(label),
                    (None, Some(slot)) => TokenSelector::Slot(slot),
                    (Some(_), Some(_)) => {
                        return Err(ConfigError(
                            "give the token's pkcs11_token_label or its pkcs11_slot, not both"
                                .into(),
                        ));
                    }
                    (None, None) => {
                        return Err(ConfigError("the pkcs11 keystore needs pkcs11_token_label (or pkcs11_slot) to find its token".into()));
                    }
                };
                let pin = match (self.pkcs11_pin_file, secrets.pkcs11_pin) {
                    (Some(path), _) => read_secret_file("PKCS#11 PIN", &path)?,
                    (None, Some(pin)) => pin,
                    (None, None) => {
                        return Err(ConfigError(format!(
                            "the pkcs11 keystore needs the token's user PIN: set {PIN_ENV} or pkcs11_pin_file (never a flag)"
                        )));
                    }
                };
                Ok(KeystoreConfig::Pkcs11 {
                    token: Pkcs11Settings { module, token, pin },
                    migrate_from: software_master,
                })
            }
            other => Err(ConfigError(format!(
                "keystore '{other}' is not known: use software or pkcs11"
            ))),
        }
    }
}

pub(super) fn read_secret_file(what: &str, path: &Path) -> Result<SecretString, ConfigError> {
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
        ConfigError(format!(
            "cannot read the {what} file {}: {e}",
            path.display()
        ))
    })?);
    let secret = text.trim_end_matches(['\r', '\n']);
    if secret.is_empty() {
        return Err(ConfigError(format!(
            "the {what} file {} is empty",
            path.display()
        )));
    }
    Ok(SecretString::from(secret.to_owned()))
}
