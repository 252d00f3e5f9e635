//! Backups of the PKCS#11 keystore: the token wraps material and audit keys
//! out under the backup's wrap key, and unwraps them in, with
//! `CKM_AES_KEY_WRAP_PAD` (RFC 5649, checked against a known answer first):
//! the same bytes the software keystore makes (see `crate::backup`), so
//! backups move between the two. Plaintext material never exists outside a
//! keystore.
//!
//! The wrap key enters the token as a session object (not a token object,
//! sensitive, not extractable, wrap and unwrap only) under a label of its
//! own, and is destroyed when the exporter or importer is dropped. Session
//! objects die with the session that made them, and the pool closes
//! sessions (errors, more than it keeps): so the object is found again by
//! its label like any cached handle ([`super::handles`]) and made again
//! when it is gone.

use cryptoki::context::Function;
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use keyhold_core::audit::AuditPublicKey;
use keyhold_core::backup::{BackupExport, BackupImport, BackupWrapKey, WrappedAuditKeys};
use keyhold_core::error::KeystoreError;
use keyhold_core::key::CheckDigits;
use keyhold_core::ports::GeneratedKey;
use sha2::Digest as _;
use zeroize::{Zeroize, Zeroizing};

use super::error::{Fail, rv};
use super::objects::{self, AUDIT_SIGNING_LABEL, Material, OwnKey};
use super::session::{Ctx, Token};
use super::{AES_BLOCK_LEN, Pkcs11Keystore, material_of_handle, wrap};
use crate::seal::fill_random;

/// Followed by 16 random bytes in hex: one exporter's or importer's wrap key.
const WRAP_KEY_LABEL_PREFIX: &str = "keyhold:backup-wrap:";
/// A session object unwrapped only to be compared with a token object: a
/// label no search of keyhold's own objects matches.
const COMPARE_LABEL: &[u8] = b"keyhold:backup-compare";
/// Data whose MAC and signature compare audit keys; public, not a secret.
const PROBE: &[u8] = b"keyhold backup: audit key comparison";
/// An uncompressed P-256 point: 0x04 || x || y.
const P256_POINT_LEN: usize = 65;

/// The backup's wrap key, as a session object of the token when in use.
struct TokenWrapKey<'a> {
    token: &'a Token,
    value: Zeroizing<[u8; 32]>,
    label: Vec<u8>,
}

impl<'a> TokenWrapKey<'a> {
    fn new(token: &'a Token, wrap_key: &BackupWrapKey) -> Result<Self, KeystoreError> {
        let mut suffix = [0u8; 16];
        fill_random(&mut suffix)?;
        Ok(Self {
            token,
            value: Zeroizing::new(*wrap_key.expose()),
            label: format!("{WRAP_KEY_LABEL_PREFIX}{}", hex::encode(suffix)).into_bytes(),
        })
    }

    /// The object, made in this session when the token no longer has it.
    fn handle(&self, c: &Ctx<'_>) -> Result<ObjectHandle, Fail> {
        if let Some(handle) = c.handles.get(c, &self.label, ObjectClass::SECRET_KEY) {
            return Ok(handle);
        }
        let mut template = vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(false),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Wrap(true),
            Attribute::Unwrap(true),
            Attribute::Encrypt(false),
            Attribute::Decrypt(false),
            Attribute::Sign(false),
            Attribute::Verify(false),
            Attribute::Derive(false),
            Attribute::Label(self.label.clone()),
            Attribute::Value(self.value.to_vec()),
        ];
        let created = c.session.create_object(&template);
        for attribute in &mut template {
            if let Attribute::Value(value) = attribute {
                value.zeroize();
            }
        }
        let handle = created?;
        c.handles.put(c, self.label.clone(), handle);
        Ok(handle)
    }

    /// Runs `op` with the wrap key. When the object vanished between the
    /// lookup and its use (the session that made it was closed by another
    /// thread meanwhile), it is made again once: the error concerns that
    /// other session's object, not this session, which stays usable.
    fn with<T>(
        &self,
        c: &Ctx<'_>,
        op: impl Fn(ObjectHandle) -> Result<T, Error>,
    ) -> Result<T, Fail> {
        let handle = self.handle(c)?;
        match op(handle) {
            Err(e)
                if is_handle_gone(&e)
                    && c.handles
                        .get(c, &self.label, ObjectClass::SECRET_KEY)
                        .is_none() =>
            {
                Ok(op(self.handle(c)?)?)
            }
            result => Ok(result?),
        }
    }
}

fn is_handle_gone(e: &Error) -> bool {
    matches!(
        rv(e),
        Some(
            RvError::WrappingKeyHandleInvalid
                | RvError::UnwrappingKeyHandleInvalid
                | RvError::KeyHandleInvalid
                | RvError::ObjectHandleInvalid
        )
    )
}

impl Drop for TokenWrapKey<'_> {
    fn drop(&mut self) {
        let label = self.label.clone();
        let removed = self
            .token
            .run("removing the backup wrap key from the token", |c| {
                let found = c.session.find_objects(&[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::Label(label.clone()),
                ])?;
                for object in found {
                    wrap::destroy(c.session, object);
                }
                Ok(())
            });
        if let Err(e) = removed {
            // A session object dies with its session at the latest.
            tracing::debug!(error = %e, "removing the backup wrap key from the token failed");
        }
        // The handle, if the object is gone, may name another object next.
        self.token.forget_handle(&self.label);
    }
}

/// `C_UnwrapKey` with `CKM_AES_KEY_WRAP_PAD`; a refusal of the wrapped
/// bytes themselves (integrity check) is the backup's fault, said so.
fn unwrap_pad(
    c: &Ctx<'_>,
    wrap_key: &TokenWrapKey<'_>,
    wrapped: &[u8],
    template: &[Attribute],
    what: &str,
) -> Result<ObjectHandle, Fail> {
    let session = c.session;
    let result = wrap_key.with(c, |kek| {
        session.unwrap_key(&Mechanism::AesKeyWrapPad, kek, wrapped, template)
    });
    match result {
        Err(Fail::Token(e)) if is_wrapped_data_refused(session, &e) => {
            Err(Fail::TokenVerdict(KeystoreError::Unsupported(format!(
                "{what} in the backup does not unwrap under the backup's wrap key: the backup was altered, or it is being opened with another backup's key"
            ))))
        }
        other => other,
    }
}

/// The standard answers `CKR_WRAPPED_KEY_INVALID`; SoftHSM2 2.6 answers
/// `CKR_GENERAL_ERROR`, taken as a refusal only while the session still
/// answers (a failing device would not).
fn is_wrapped_data_refused(session: &Session, e: &Error) -> bool {
    match e {
        Error::Pkcs11(
            RvError::WrappedKeyInvalid
            | RvError::WrappedKeyLenRange
            | RvError::EncryptedDataInvalid
            | RvError::EncryptedDataLenRange,
            _,
        ) => true,
        Error::Pkcs11(RvError::GeneralError, Function::UnwrapKey) => {
            session.get_session_info().is_ok()
        }
        _ => false,
    }
}

/// AES-ECB of the zero block under an AES key: its check digits come from
/// the first two bytes; all 16 compare two keys.
fn zero_block(session: &Session, key: ObjectHandle) -> Result<[u8; AES_BLOCK_LEN], Fail> {
    let block = session.encrypt(&Mechanism::AesEcb, key, &[0u8; AES_BLOCK_LEN])?;
    block.as_slice().try_into().map_err(|_| {
        Fail::TokenVerdict(KeystoreError::Internal(format!(
            "the token returned {} bytes for one AES block",
            block.len()
        )))
    })
}

/// A template made for a token object, as a session object for comparing.
fn as_compare_object(template: Vec<Attribute>) -> Vec<Attribute> {
    template
        .into_iter()
        .map(|a| match a {
            Attribute::Token(_) => Attribute::Token(false),
            Attribute::Label(_) => Attribute::Label(COMPARE_LABEL.to_vec()),
            Attribute::Extractable(_) => Attribute::Extractable(false),
            other => other,
        })
        .collect()
}

/// The uncompressed point at the end of a P-256 SubjectPublicKeyInfo.
fn sec1_point(spki: &[u8]) -> &[u8] {
    &spki[spki.len().saturating_sub(P256_POINT_LEN)..]
}

/// Whether the token says the unwrapped key is not 32 bytes. SoftHSM2
/// leaves `CKA_VALUE_LEN` of an unwrapped generic secret at 0: unknown,
/// not wrong.
fn has_wrong_length(session: &Session, key: ObjectHandle) -> Result<bool, Fail> {
    let len = session
        .get_attributes(key, &[AttributeType::ValueLen])?
        .into_iter()
        .find_map(|a| match a {
            Attribute::ValueLen(len) => Some(u64::from(len)),
            _ => None,
        });
    Ok(matches!(len, Some(len) if len != 0 && len != objects::AES_256_LEN))
}

fn is_extractable(session: &Session, key: ObjectHandle) -> Result<bool, Fail> {
    Ok(session
        .get_attributes(key, &[AttributeType::Extractable])?
        .into_iter()
        .any(|a| matches!(a, Attribute::Extractable(true))))
}

/// Refuses a token whose `CKM_AES_KEY_WRAP_PAD` is missing or not RFC 5649:
/// its backups would not restore anywhere else.
fn check_kwp(keystore: &Pkcs11Keystore) -> Result<(), KeystoreError> {
    let rfc5649 = keystore.token.run(
        "checking the token's AES key wrap with padding",
        wrap::kwp_is_rfc5649,
    )?;
    if rfc5649 {
        Ok(())
    } else {
        Err(KeystoreError::Unsupported(format!(
            "the {} has no RFC 5649 AES key wrap with padding (CKM_AES_KEY_WRAP_PAD), which backups are made with: back up this token with its vendor's tools instead",
            keystore.token.selector()
        )))
    }
}

struct Pkcs11Export<'a> {
    keystore: &'a Pkcs11Keystore,
    wrap_key: TokenWrapKey<'a>,
}

impl BackupExport for Pkcs11Export<'_> {
    /// BYOK and XKS keys alike: the handle (the object's label) says which
    /// it is, and the backup's record which import restores it.
    fn export_key(&self, key_id: uuid::Uuid, handle: &[u8]) -> Result<Vec<u8>, KeystoreError> {
        let kind = material_of_handle(key_id, handle)?;
        let token = self.keystore.token_name();
        self.keystore.token.run("wrapping a key for a backup", |c| {
            let target = objects::material(c, kind, key_id, &token)?;
            self.wrap_key.with(c, |kek| {
                c.session.wrap_key(&Mechanism::AesKeyWrapPad, kek, target)
            })
        })
    }

    fn export_audit_keys(&self) -> Result<WrappedAuditKeys, KeystoreError> {
        let token = self.keystore.token_name();
        self.keystore.token.run("wrapping the audit keys for a backup", |c| {
            let mac = objects::own_key(c, OwnKey::AuditMac)?;
            let (private, public) = super::signing_key(c.session)?;
            for (object, label) in [(mac, OwnKey::AuditMac.label()), (private, AUDIT_SIGNING_LABEL)] {
                if !is_extractable(c.session, object)? {
                    return Err(Fail::Verdict(KeystoreError::Unsupported(format!(
                        "the {token}'s audit key {label} was made not extractable, by a keyhold from before backups, and PKCS#11 never lets a key become extractable later: a backup cannot carry it. Back up the token itself with its vendor's tools next to keyhold's backups, or move to a new token"
                    ))));
                }
            }
            let wrap = |object| {
                self.wrap_key.with(c, |kek| {
                    c.session.wrap_key(&Mechanism::AesKeyWrapPad, kek, object)
                })
            };
            let point = objects::ec_point(c.session, public)?;
            let public = AuditPublicKey::from_sec1(&point).map_err(|e| {
                Fail::Verdict(KeystoreError::Internal(format!(
                    "the token's audit signing public key: {e}"
                )))
            })?;
            Ok(WrappedAuditKeys {
                mac: wrap(mac)?,
                signing: wrap(private)?,
                signing_public: public.to_spki_der(),
            })
        })
    }
}

struct Pkcs11Import<'a> {
    keystore: &'a Pkcs11Keystore,
    wrap_key: TokenWrapKey<'a>,
}

impl BackupImport for Pkcs11Import<'_> {
    /// Unwraps into a token object like the ones `generate_key` makes. When
    /// the token holds material for `key_id` already (an interrupted
    /// restore), the backup's material is unwrapped into a session object
    /// only to compare: the same is returned, other material refused.
    fn import_key(
        &self,
        key_id: uuid::Uuid,
        wrapped: &[u8],
    ) -> Result<GeneratedKey, KeystoreError> {
        self.import_material(Material::Key, key_id, wrapped)
    }

    /// The same, into an object like the ones `xks_generate_key` makes.
    fn import_xks_key(
        &self,
        key_id: uuid::Uuid,
        wrapped: &[u8],
    ) -> Result<GeneratedKey, KeystoreError> {
        self.import_material(Material::Xks, key_id, wrapped)
    }
}

impl Pkcs11Import<'_> {
    fn import_material(
        &self,
        kind: Material,
        key_id: uuid::Uuid,
        wrapped: &[u8],
    ) -> Result<GeneratedKey, KeystoreError> {
        let token = self.keystore.token_name();
        let noun = kind.noun();
        let label = kind.label(key_id);
        let what = format!("the material of {noun} {key_id}");
        self.keystore.token.run_writing(&format!("restoring {noun} {key_id} into the token"), |c| {
            let template = objects::unwrapped_template(objects::material_template(kind, key_id));
            let handle = match objects::find_material(c.session, kind, key_id)?.as_slice() {
                [] => {
                    let handle =
                        unwrap_pad(c, &self.wrap_key, wrapped, &template, &what)?;
                    if has_wrong_length(c.session, handle)? {
                        wrap::destroy(c.session, handle);
                        return Err(Fail::Verdict(KeystoreError::Unsupported(format!(
                            "{what} in the backup is not an AES-256 key: the backup is damaged"
                        ))));
                    }
                    handle
                }
                [existing] => {
                    let copy = unwrap_pad(
                        c,
                        &self.wrap_key,
                        wrapped,
                        &as_compare_object(template),
                        &what,
                    )?;
                    let same = zero_block(c.session, copy)
                        .and_then(|theirs| Ok(theirs == zero_block(c.session, *existing)?));
                    wrap::destroy(c.session, copy);
                    if !same? {
                        return Err(Fail::Verdict(KeystoreError::Unsupported(format!(
                            "the {token} already holds other material for {noun} {key_id} (object {label}) than the backup: it is not this installation's; restore into a token of the restored installation's own, or remove that object"
                        ))));
                    }
                    *existing
                }
                _ => objects::material(c, kind, key_id, &token)?,
            };
            c.handles.put(c, label.clone().into_bytes(), handle);
            Ok(GeneratedKey {
                handle: label.clone().into_bytes(),
                check_digits: CheckDigits::from_encrypted_zero_block(&zero_block(
                    c.session, handle,
                )?),
            })
        })
    }
}

impl Pkcs11Keystore {
    pub(super) fn start_backup_export<'a>(
        &'a self,
        wrap_key: &BackupWrapKey,
    ) -> Result<Box<dyn BackupExport + 'a>, KeystoreError> {
        self.prepare()?;
        check_kwp(self)?;
        Ok(Box::new(Pkcs11Export {
            keystore: self,
            wrap_key: TokenWrapKey::new(&self.token, wrap_key)?,
        }))
    }

    /// Does not make keyhold's own keys: a restore brings the audit keys
    /// first ([`Self::adopt_backup_audit_keys`]).
    pub(super) fn start_backup_import<'a>(
        &'a self,
        wrap_key: &BackupWrapKey,
    ) -> Result<Box<dyn BackupImport + 'a>, KeystoreError> {
        check_kwp(self)?;
        Ok(Box::new(Pkcs11Import {
            keystore: self,
            wrap_key: TokenWrapKey::new(&self.token, wrap_key)?,
        }))
    }

    /// Takes a backup's audit keys into the token (a restore), so the
    /// restored audit log verifies and checkpoints keep their key: the MAC
    /// key and the signing private key are unwrapped into token objects
    /// like the ones `open` makes, and the public key object is made from
    /// the backup's public key. Call it before anything else uses the token
    /// (which would make audit keys of its own). Repeatable: audit keys
    /// the token holds already are compared, and the same ones accepted;
    /// other ones are refused, as they would break someone's audit log.
    pub fn adopt_backup_audit_keys(
        &self,
        wrap_key: &BackupWrapKey,
        audit_keys: &WrappedAuditKeys,
    ) -> Result<(), KeystoreError> {
        let public = AuditPublicKey::from_spki_der(&audit_keys.signing_public).map_err(|e| {
            KeystoreError::Unsupported(format!(
                "the backup's audit signing public key is unusable ({e}): the backup is damaged"
            ))
        })?;
        check_kwp(self)?;
        let wrap_key = TokenWrapKey::new(&self.token, wrap_key)?;
        let token = self.token_name();
        self.token
            .run_writing("restoring the audit keys into the token", |c| {
                adopt_mac(c, &wrap_key, &audit_keys.mac, &token)?;
                adopt_signing(c, &wrap_key, &audit_keys.signing, &public, &token)
            })
    }
}

fn adopt_mac(
    c: &Ctx<'_>,
    wrap_key: &TokenWrapKey<'_>,
    wrapped: &[u8],
    token: &str,
) -> Result<(), Fail> {
    let what = "the audit MAC key";
    match objects::find_own_key(c.session, OwnKey::AuditMac)? {
        None => {
            let id = c.session.generate_random_vec(16)?;
            let template = objects::unwrapped_template(OwnKey::AuditMac.template(id));
            let key = unwrap_pad(c, wrap_key, wrapped, &template, what)?;
            if has_wrong_length(c.session, key)? {
                wrap::destroy(c.session, key);
                return Err(Fail::Verdict(KeystoreError::Unsupported(format!(
                    "{what} in the backup is not 32 bytes: the backup is damaged"
                ))));
            }
            tracing::info!(
                label = OwnKey::AuditMac.label(),
                "restored the audit MAC key into the PKCS#11 token"
            );
            Ok(())
        }
        Some(existing) => {
            let template = as_compare_object(objects::unwrapped_template(
                OwnKey::AuditMac.template(Vec::new()),
            ));
            let copy = unwrap_pad(c, wrap_key, wrapped, &template, what)?;
            let mac = |key| c.session.sign(&Mechanism::Sha256Hmac, key, PROBE);
            let same = mac(copy).and_then(|theirs| Ok(theirs == mac(existing)?));
            wrap::destroy(c.session, copy);
            if same? {
                Ok(())
            } else {
                Err(Fail::Verdict(KeystoreError::Unsupported(format!(
                    "the {token} already holds another audit MAC key ({}) than the backup, which another keyhold installation may be using: restore into a token of the restored installation's own",
                    OwnKey::AuditMac.label()
                ))))
            }
        }
    }
}

fn adopt_signing(
    c: &Ctx<'_>,
    wrap_key: &TokenWrapKey<'_>,
    wrapped: &[u8],
    public: &AuditPublicKey,
    token: &str,
) -> Result<(), Fail> {
    let other_key = || {
        Fail::Verdict(KeystoreError::Unsupported(format!(
            "the {token} already holds another audit signing key ({AUDIT_SIGNING_LABEL}) than the backup, which another keyhold installation may be using: restore into a token of the restored installation's own"
        )))
    };
    if let Some((_, existing)) = objects::find_signing_key(c.session)? {
        return if AuditPublicKey::from_sec1(&objects::ec_point(c.session, existing)?).ok()
            == Some(public.clone())
        {
            Ok(())
        } else {
            Err(other_key())
        };
    }
    // CKA_ID from the public key: a rerun after a crash between the two
    // objects finds the half it made and adds the other.
    let spki = public.to_spki_der();
    let id = sha2::Sha256::digest(&spki)[..16].to_vec();
    let label = AUDIT_SIGNING_LABEL.as_bytes().to_vec();
    let with_id = |class| {
        c.session.find_objects(&[
            Attribute::Class(class),
            Attribute::KeyType(KeyType::EC),
            Attribute::Label(label.clone()),
            Attribute::Id(id.clone()),
        ])
    };
    let public_object = match with_id(ObjectClass::PUBLIC_KEY)?.first() {
        Some(object) => *object,
        None => c.session.create_object(&objects::signing_public_template(
            sec1_point(&spki),
            id.clone(),
        ))?,
    };
    let private_object = match with_id(ObjectClass::PRIVATE_KEY)?.first() {
        Some(object) => *object,
        None => unwrap_pad(
            c,
            wrap_key,
            wrapped,
            &objects::signing_private_template(id.clone()),
            "the audit signing key",
        )?,
    };
    // The backup's private key must be the public key's other half.
    let digest = sha2::Sha256::digest(PROBE);
    let signature = c.session.sign(&Mechanism::Ecdsa, private_object, &digest)?;
    match c
        .session
        .verify(&Mechanism::Ecdsa, public_object, &digest, &signature)
    {
        Ok(()) => {}
        Err(Error::Pkcs11(RvError::SignatureInvalid, _)) => {
            wrap::destroy(c.session, private_object);
            wrap::destroy(c.session, public_object);
            return Err(Fail::TokenVerdict(KeystoreError::Unsupported(
                "the backup's audit signing key does not match the public key the backup names: the backup is damaged".into(),
            )));
        }
        Err(e) => return Err(e.into()),
    }
    // What everyone else finds must be this pair, not a stray half.
    match objects::find_signing_key(c.session)? {
        Some((_, found)) if found == public_object => {
            tracing::info!(
                label = AUDIT_SIGNING_LABEL,
                "restored the audit signing key into the PKCS#11 token"
            );
            Ok(())
        }
        _ => Err(Fail::Verdict(KeystoreError::Unavailable(format!(
            "the {token} holds a stray {AUDIT_SIGNING_LABEL} private key without its public key, found before the restored one: delete the private keys labelled {AUDIT_SIGNING_LABEL} whose CKA_ID is not {} (e.g. pkcs11-tool --delete-object --type privkey --id ID) and restore again",
            hex::encode(&id)
        )))),
    }
}
