//! `keyhold keystore migrate`: moves a data directory from the software
//! keystore into the PKCS#11 token configured as its keystore.
//!
//! Generated keys cannot be re-created, so their material travels: the token
//! makes an ephemeral RSA transport key, the software keystore wraps the
//! material under it, and the token unwraps it into a token object
//! (`Pkcs11Keystore::import_key`). Every step can be repeated, so the command
//! is resumable: after a crash, run it again.
//!
//! 1. The audit MAC key moves first (or is found in the token already), so
//!    entries sealed before and after the move verify under one key.
//! 2. Each credential secret is sealed again by the token: the row and its
//!    audit entry are written in one transaction. Cloud credentials first,
//!    then the external key stores' SigV4 credentials (sealed under
//!    `keyhold_core::xks::secret_context`).
//! 3. Each key's material is unwrapped into the token, its check digits are
//!    compared with the recorded ones, then the key's handle in the store is
//!    replaced with the token object's label, with its audit entry. The
//!    software copy existed only in that handle, so replacing it removes it.
//!    BYOK keys first, then XKS keys. The two kinds travel apart: an XKS
//!    key's handle opens only as one ([`SoftKeystore::wrap_xks_key`]) and
//!    arrives as a `keyhold:xks:` object ([`Pkcs11Keystore::xks_import_key`]),
//!    so neither kind ever becomes the other on the way.
//! 4. The software keystore's files (master key, audit MAC key) are removed:
//!    nothing is sealed under them any more.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context, bail};
use keyhold_core::audit::{AuditMac, AuditRecord, AuditSigner, SYSTEM_USER};
use keyhold_core::clock::Clock;
use keyhold_core::credential::CredentialKind;
use keyhold_core::error::KeystoreError;
use keyhold_core::key::{KeyCursor, KeyPage};
use keyhold_core::ports::{Keystore, Store};
use keyhold_core::xks::secret_context;
use keyhold_keystore::{Pkcs11Keystore, SoftKeystore};

use crate::config::{Config, KeystoreConfig};

/// Names the command in the audit details of every entry it writes.
const COMMAND: &str = "keyhold keystore migrate";
/// Data for comparing the two audit MAC keys without revealing either.
const MAC_PROBE: &[u8] = b"keyhold keystore migration: audit MAC key check";

/// What one run did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MigrationReport {
    pub keys_moved: usize,
    /// Keys whose material was in the token already (an earlier run).
    pub keys_in_token_already: usize,
    pub credentials_moved: usize,
    pub xks_keys_moved: usize,
    /// XKS keys whose material was in the token already (an earlier run).
    pub xks_keys_in_token_already: usize,
    pub xks_credentials_moved: usize,
    /// Whether this run removed the software keystore's files.
    pub software_keystore_removed: bool,
}

impl std::fmt::Display for MigrationReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "moved {} key(s) and {} credential secret(s) into the PKCS#11 token; {} key(s) were there already",
            self.keys_moved, self.credentials_moved, self.keys_in_token_already
        )?;
        // Said only where there are external key stores' keys or credentials.
        if self.xks_keys_moved + self.xks_keys_in_token_already + self.xks_credentials_moved > 0 {
            write!(
                f,
                "; moved {} XKS key(s) and {} XKS credential secret(s); {} XKS key(s) were there already",
                self.xks_keys_moved, self.xks_credentials_moved, self.xks_keys_in_token_already
            )?;
        }
        if self.software_keystore_removed {
            write!(f, "; removed the software keystore")?;
        }
        Ok(())
    }
}

/// Test-only crash point: aborts the process right after the N-th key's
/// move was committed.
const CRASH_AFTER_KEYS: &str = "KEYHOLD_CRASH_MIGRATION_AFTER_KEYS";
/// Test-only crash point: aborts the process right after the N-th XKS key's
/// material reached the token, before its handle was written (the run
/// after it must find the token object and finish).
const CRASH_AFTER_XKS_IMPORTS: &str = "KEYHOLD_CRASH_MIGRATION_AFTER_XKS_IMPORTS";

/// Aborts when the crash point `variable` names `count`.
#[cfg(feature = "crash-points")]
fn maybe_crash(variable: &str, count: usize) {
    let wanted = std::env::var(variable)
        .ok()
        .and_then(|v| v.parse::<usize>().ok());
    if wanted == Some(count) {
        eprintln!("crash point: aborting at {variable}={count}");
        std::process::abort();
    }
}

#[cfg(not(feature = "crash-points"))]
fn maybe_crash(_: &str, _: usize) {}

pub async fn migrate(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<MigrationReport> {
    let KeystoreConfig::Pkcs11 {
        token: settings,
        migrate_from,
    } = &config.keystore
    else {
        bail!(
            "keystore migrate moves keys into a PKCS#11 token: configure the target with keystore = pkcs11 (pkcs11_module, pkcs11_token_label or pkcs11_slot, and the PIN), and keep the software keystore's master key file or passphrase where it is"
        );
    };
    let dir = config.keystore_dir();
    let token = Arc::new(
        Pkcs11Keystore::load(settings.clone())
            .map_err(|e| anyhow::anyhow!("PKCS#11 keystore: {e}"))?,
    );
    let software = if SoftKeystore::is_initialised(&dir) {
        Some(
            SoftKeystore::open(&dir, migrate_from.clone())
                .map_err(|e| anyhow::anyhow!("software keystore in {}: {e}", dir.display()))?,
        )
    } else {
        None
    };
    if let Some(software) = &software {
        let expected = software.audit_mac(MAC_PROBE)?;
        token
            .adopt_audit_mac_key(MAC_PROBE, &expected, &|der, algorithm| {
                software.wrap_audit_mac_key(der, algorithm)
            })
            .map_err(|e| anyhow::anyhow!("moving the audit MAC key into the token: {e}"))?;
    }
    token
        .check()
        .map_err(|e| anyhow::anyhow!("PKCS#11 keystore: {e}"))?;

    let store = keyhold_store::connect(config.database.expose(), token.clone())
        .await
        .map_err(|e| anyhow::anyhow!("database {}: {e}", config.database))?;
    if store.list_identities().await?.is_empty() {
        bail!(
            "{} is not initialised: there is nothing to migrate. Run `keyhold init` with keystore = pkcs11 instead",
            config.data_dir.display()
        );
    }
    let record = |summary: String| {
        AuditRecord::new(clock.now(), SYSTEM_USER, summary)
            .with_details(serde_json::json!({ "command": COMMAND }))
    };
    let mut report = MigrationReport::default();

    for credential in store.list_credentials().await? {
        let CredentialKind::AccessKey { sealed_secret, .. } = &credential.kind else {
            continue;
        };
        let context = credential.id.as_bytes();
        match token.open_secret(context, sealed_secret) {
            Ok(_) => continue,
            Err(KeystoreError::SealBroken) => {}
            Err(e) => return Err(e).context("checking a credential secret"),
        }
        let Some(software) = &software else {
            bail!(
                "the secret of credential '{}' is sealed neither by the token nor by a software keystore in {}: import the credential again",
                credential.name,
                dir.display()
            );
        };
        let secret = software
            .open_secret(context, sealed_secret)
            .with_context(|| format!("opening the secret of credential '{}'", credential.name))?;
        let resealed = token.seal_secret(context, &secret)?;
        drop(secret);
        store
            .update_credential_secret(
                credential.id,
                &resealed,
                &record(format!(
                    "Moved the secret of cloud credential '{}' into the PKCS#11 keystore",
                    credential.name
                )),
            )
            .await?;
        report.credentials_moved += 1;
    }
    let xks = Xks {
        token: &token,
        software: software.as_ref(),
        store: &*store,
        dir: &dir,
        clock: clock.as_ref(),
        store_names: store
            .list_xks_stores()
            .await?
            .into_iter()
            .map(|s| (s.id, s.name.to_string()))
            .collect(),
    };
    xks.move_credential_secrets(&mut report).await?;

    // Page by page: a store may hold a million keys.
    let mut page = KeyPage {
        group: None,
        after: None,
        limit: KeyPage::MAX_LIMIT,
    };
    loop {
        let keys = store.list_keys(&page).await?;
        let Some(last) = keys.last() else {
            break;
        };
        page.after = Some(KeyCursor::after(last));
        for key in keys {
            if Pkcs11Keystore::names_token_object(key.id, &key.keystore_handle) {
                report.keys_in_token_already += 1;
                continue;
            }
            let Some(software) = &software else {
                bail!(
                    "key {} is sealed by the software keystore, but {} holds none any more: restore it from a backup and run the migration again",
                    key.display_name(),
                    dir.display()
                );
            };
            let imported = token
                .import_key(key.id, &|der, algorithm| {
                    software.wrap_key(key.id, &key.keystore_handle, der, algorithm)
                })
                .with_context(|| format!("moving key {} into the token", key.display_name()))?;
            if imported.check_digits != key.check_digits {
                bail!(
                    "the token holds material for key {} with check digits {}, but keyhold recorded {}: remove the token object {} and run the migration again",
                    key.display_name(),
                    imported.check_digits.as_str(),
                    key.check_digits.as_str(),
                    String::from_utf8_lossy(&imported.handle)
                );
            }
            let mut moved = key.clone();
            moved.keystore_handle = imported.handle;
            let entry = record(format!(
                "Moved the material of HSM protected key {} into the PKCS#11 keystore",
                key.display_name()
            ))
            .with_details(serde_json::json!({
                "command": COMMAND,
                "group": key.group.as_str(),
                "check_digits": key.check_digits.as_str(),
            }));
            store.update_key(&moved, Some(&entry)).await?;
            report.keys_moved += 1;
            maybe_crash(CRASH_AFTER_KEYS, report.keys_moved);
        }
    }
    xks.move_keys(&mut report).await?;

    if let Some(software) = software {
        drop(software);
        SoftKeystore::remove(&dir).map_err(|e| {
            anyhow::anyhow!("removing the software keystore in {}: {e}", dir.display())
        })?;
        report.software_keystore_removed = true;
        // Checkpoints from now on are signed in the token: name its key, so
        // an auditor knows which key verifies which checkpoints.
        let signing_key = token
            .audit_public_key()
            .map(|k| k.fingerprint_hex())
            .map_err(|e| anyhow::anyhow!("reading the token's audit signing key: {e}"))?;
        store
            .append_audit(
                &record(format!(
                    "Keystore migration finished: {report}. Removed the software keystore in {}",
                    dir.display()
                ))
                .with_details(serde_json::json!({
                    "command": COMMAND,
                    "audit_signing_key": signing_key,
                })),
            )
            .await?;
    }
    store.close().await;
    Ok(report)
}

/// The external key stores' part of the move: their credentials' secrets
/// and their keys' material.
struct Xks<'a> {
    token: &'a Pkcs11Keystore,
    software: Option<&'a SoftKeystore>,
    store: &'a dyn Store,
    dir: &'a std::path::Path,
    clock: &'a dyn Clock,
    /// Store names by id, for the messages and audit entries.
    store_names: HashMap<uuid::Uuid, String>,
}

impl Xks<'_> {
    fn store_name(&self, id: uuid::Uuid) -> String {
        self.store_names
            .get(&id)
            .cloned()
            .unwrap_or_else(|| id.to_string())
    }

    fn record(&self, summary: String, details: serde_json::Value) -> AuditRecord {
        AuditRecord::new(self.clock.now(), SYSTEM_USER, summary).with_details(details)
    }

    /// Each SigV4 secret the token does not open yet is opened by the
    /// software keystore and sealed again by the token, under the same
    /// context (the credential's id).
    async fn move_credential_secrets(&self, report: &mut MigrationReport) -> anyhow::Result<()> {
        for credential in self.store.list_xks_credentials().await? {
            let context = secret_context(credential.id);
            match self.token.open_secret(&context, &credential.sealed_secret) {
                Ok(_) => continue,
                Err(KeystoreError::SealBroken) => {}
                Err(e) => return Err(e).context("checking an XKS credential secret"),
            }
            let store_name = self.store_name(credential.store_id);
            let Some(software) = self.software else {
                bail!(
                    "the secret of XKS credential {} of external key store '{store_name}' is sealed neither by the token nor by a software keystore in {}: add another credential to the store (keyhold xks credential rotate), give it to AWS KMS, then revoke this one",
                    credential.access_key_id,
                    self.dir.display()
                );
            };
            let secret = software
                .open_secret(&context, &credential.sealed_secret)
                .with_context(|| {
                    format!(
                        "opening the secret of XKS credential {} of external key store '{store_name}'",
                        credential.access_key_id
                    )
                })?;
            let resealed = self.token.seal_secret(&context, &secret)?;
            drop(secret);
            let entry = self.record(
                format!(
                    "Moved the secret of XKS credential {} of external key store '{store_name}' into the PKCS#11 keystore",
                    credential.access_key_id
                ),
                serde_json::json!({
                    "command": COMMAND,
                    "store": store_name,
                    "access_key_id": credential.access_key_id.as_str(),
                }),
            );
            self.store
                .update_xks_credential_secret(credential.id, &resealed, &entry)
                .await?;
            report.xks_credentials_moved += 1;
        }
        Ok(())
    }

    /// Each XKS key whose handle is not its token object yet: the software
    /// keystore wraps its material under the token's transport key, the
    /// token unwraps it into the key's XKS object (or finds it there from
    /// an earlier run), the check digits are compared, and the handle is
    /// replaced with the object's label.
    async fn move_keys(&self, report: &mut MigrationReport) -> anyhow::Result<()> {
        for key in self.store.list_xks_keys(None).await? {
            if Pkcs11Keystore::names_xks_token_object(key.id, &key.handle) {
                report.xks_keys_in_token_already += 1;
                continue;
            }
            let store_name = self.store_name(key.store_id);
            let Some(software) = self.software else {
                bail!(
                    "XKS key {} of external key store '{store_name}' is sealed by the software keystore, but {} holds none any more: restore it from a backup and run the migration again",
                    key.id,
                    self.dir.display()
                );
            };
            let imported = self
                .token
                .xks_import_key(key.id, &|der, algorithm| {
                    software.wrap_xks_key(key.id, &key.handle, der, algorithm)
                })
                .with_context(|| {
                    format!(
                        "moving XKS key {} of external key store '{store_name}' into the token",
                        key.id
                    )
                })?;
            maybe_crash(CRASH_AFTER_XKS_IMPORTS, report.xks_keys_moved + 1);
            if imported.check_digits != key.check_digits {
                bail!(
                    "the token holds material for XKS key {} with check digits {}, but keyhold recorded {}: remove the token object {} and run the migration again",
                    key.id,
                    imported.check_digits.as_str(),
                    key.check_digits.as_str(),
                    String::from_utf8_lossy(&imported.handle)
                );
            }
            let entry = self.record(
                format!(
                    "Moved the material of XKS key {} of external key store '{store_name}' into the PKCS#11 keystore",
                    key.id
                ),
                serde_json::json!({
                    "command": COMMAND,
                    "store": store_name,
                    "key_id": key.id,
                    "check_digits": key.check_digits.as_str(),
                }),
            );
            self.store
                .update_xks_key_handle(key.id, &imported.handle, &entry)
                .await?;
            report.xks_keys_moved += 1;
        }
        Ok(())
    }
}
