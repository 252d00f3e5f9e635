//! keyhold's PKCS#11 keystore: key material generated and kept inside an HSM
//! token; it leaves the token only wrapped (`C_WrapKey`) under a KMS wrapping
//! public key, so plaintext key bytes never exist in keyhold's memory.
//!
//! # Objects on the token
//!
//! | label                | type                        | attributes                                     | use |
//! |----------------------|-----------------------------|------------------------------------------------|-----|
//! | `keyhold:seal`       | AES-256                     | token, private, sensitive, not extractable     | seals credential secrets (CKM_AES_GCM) |
//! | `keyhold:audit-mac`  | generic secret, 32 bytes    | token, private, sensitive, extractable (only to be wrapped, into backups) | audit entry MAC (CKM_SHA256_HMAC) |
//! | `keyhold:audit-signing` | EC P-256 key pair      | private: token, private, sensitive, extractable (only to be wrapped, into backups), sign only; public: token, verify | audit checkpoints (CKM_ECDSA over SHA-256) |
//! | `keyhold:key:<uuid>` | AES-256, CKA_ID = uuid bytes | token, private, sensitive, extractable (only to be wrapped), encrypt/decrypt, no wrap/unwrap/derive | a key's material |
//! | `keyhold:xks:<uuid>` | AES-256, CKA_ID = uuid bytes | the same as a key's material | an XKS key's material (CKM_AES_GCM for KMS; wrapped only into backups) |
//!
//! `open` creates the first three when the token lacks them, so every keyhold
//! (and every node of a cluster) using the token shares them. A key's handle
//! in the store is its label; the label's prefix keeps the two kinds of keys
//! apart (a BYOK key never serves XKS calls, an XKS key is never wrapped for
//! a cloud). Tokens set up by a keyhold from before backups
//! hold audit keys that are not extractable: their backups cannot carry them
//! (see `backup`).
//!
//! While a backup or a restore runs, its wrap key is a session object
//! `keyhold:backup-wrap:<random>` (AES-256, sensitive, not extractable,
//! wrap/unwrap only), destroyed at its end.
//!
//! # Sealed secret format
//!
//! `0x01 (version) || IV (12 bytes, from C_GenerateRandom) || ciphertext || tag (16 bytes)`,
//! AES-256-GCM under `keyhold:seal` with the caller's context as AAD.
//!
//! # XKS encryption
//!
//! CKM_AES_GCM in the token under the XKS key's object, a 128-bit tag and
//! KMS's AAD. The 12-byte IV comes from the token's C_GenerateRandom, as
//! for sealed secrets: the keystore's random source, which an HSM certifies,
//! for the price of one call more per encryption. Tokens that generate GCM
//! IVs themselves only (some HSMs in FIPS mode refuse a caller's IV) are
//! not supported yet.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use cryptoki::context::Function;
use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState};
use keyhold_core::audit::{AuditMac, AuditPublicKey, AuditSigner};
use keyhold_core::backup::{BackupExport, BackupImport, BackupWrapKey};
use keyhold_core::cloud::WrappingAlgorithm;
use keyhold_core::error::KeystoreError;
use keyhold_core::key::CheckDigits;
use keyhold_core::ports::{
    GcmCiphertext, GeneratedKey, Keystore, KeystoreDescription, KeystoreKind, prove_round_trip,
};
use secrecy::SecretString;
use zeroize::Zeroizing;

mod backup;
mod context;
mod error;
mod handles;
mod objects;
mod session;
mod transport;
mod wrap;

#[cfg(test)]
mod tests;

use error::{Fail, rv};
use objects::{Material, OwnKey};
use session::Token;
use wrap::{OaepHash, WrappingKey};

pub use transport::WrapForTransport;

const SEAL_VERSION: u8 = 0x01;
const GCM_IV_LEN: usize = 12;
const GCM_TAG_LEN: usize = 16;
const AES_BLOCK_LEN: usize = 16;

/// Which token of the module keyhold uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenSelector {
    /// The token with this label (`CKA_LABEL` of the token, e.g. `keyhold`).
    /// Labels survive slot renumbering; SoftHSM2 moves a token to another slot
    /// when it is initialised.
    Label(String),
    /// The token in this slot id.
    Slot(u64),
}

impl fmt::Display for TokenSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Label(label) => write!(f, "token labelled '{label}'"),
            Self::Slot(slot) => write!(f, "token in slot {slot}"),
        }
    }
}

/// How to reach the token.
#[derive(Clone)]
pub struct Pkcs11Settings {
    /// The PKCS#11 module (shared library), e.g. `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: PathBuf,
    pub token: TokenSelector,
    /// The token's user PIN.
    pub pin: SecretString,
}

impl fmt::Debug for Pkcs11Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Settings")
            .field("module", &self.module)
            .field("token", &self.token)
            .field("pin", &"<redacted>")
            .finish()
    }
}

/// Keys inside a PKCS#11 token. Shareable between threads: calls run on a
/// small pool of logged-in sessions.
pub struct Pkcs11Keystore {
    token: Token,
    /// Probed the first time the token answered (see
    /// [`Keystore::wrapping_algorithms`]); `None` until then.
    algorithms: Mutex<Option<Vec<WrappingAlgorithm>>>,
    /// What [`Keystore::describe`] last read from the token, given while
    /// the token does not answer.
    description: Mutex<Option<KeystoreDescription>>,
}

impl fmt::Debug for Pkcs11Keystore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Keystore")
            .field("module", &self.token.module().path())
            .field("token", self.token.selector())
            .field("algorithms", &*lock(&self.algorithms))
            .finish_non_exhaustive()
    }
}

impl Pkcs11Keystore {
    /// Loads the module, finds the token, logs in as user, creates keyhold's
    /// own keys on the token when missing, and probes which wrapping
    /// algorithms the token can produce. Fails when the token cannot be used now.
    pub fn open(settings: Pkcs11Settings) -> Result<Self, KeystoreError> {
        let keystore = Self::load(settings)?;
        keystore.prepare()?;
        Ok(keystore)
    }

    /// Loads the module only: the token is reached at its first use, and
    /// every call until then reports why it cannot be (absent token, refused
    /// PIN). A server starts this way and says so on `/readyz`, instead of
    /// refusing to start while an HSM is briefly away.
    pub fn load(settings: Pkcs11Settings) -> Result<Self, KeystoreError> {
        let Pkcs11Settings { module, token, pin } = settings;
        let module = context::load(&module)?;
        Ok(Self {
            token: Token::new(module, token, pin),
            algorithms: Mutex::new(None),
            description: Mutex::new(None),
        })
    }

    /// Makes sure keyhold's own keys are on the token and knows what it can
    /// wrap with; done once, at the first call that reaches the token.
    fn prepare(&self) -> Result<Vec<WrappingAlgorithm>, KeystoreError> {
        if let Some(algorithms) = lock(&self.algorithms).clone() {
            return Ok(algorithms);
        }
        let token = &self.token;
        token.run_writing("opening the PKCS#11 token", |c| {
            objects::ensure_own_key(c, OwnKey::Seal)?;
            objects::ensure_own_key(c, OwnKey::AuditMac)?;
            objects::ensure_signing_key(c)
        })?;
        let algorithms = token.run("probing the token's wrapping mechanisms", wrap::probe)?;
        if algorithms.is_empty() {
            tracing::warn!(
                token = %token.selector(),
                "the PKCS#11 token cannot wrap keys with RSA-OAEP: keys cannot be imported into AWS KMS"
            );
        } else {
            tracing::info!(
                token = %token.selector(),
                algorithms = ?algorithms.iter().map(|a| a.aws_name()).collect::<Vec<_>>(),
                "PKCS#11 keystore open"
            );
        }
        *lock(&self.algorithms) = Some(algorithms.clone());
        Ok(algorithms)
    }

    /// Whether `handle` (as the store keeps it) names this keystore's token
    /// object for key `key_id`, rather than another keystore's handle.
    pub fn names_token_object(key_id: uuid::Uuid, handle: &[u8]) -> bool {
        handle == objects::key_label(key_id).as_bytes()
    }

    /// The same for XKS key `key_id`: whether `handle` is its
    /// `keyhold:xks:` label.
    pub fn names_xks_token_object(key_id: uuid::Uuid, handle: &[u8]) -> bool {
        Material::of_handle(key_id, handle) == Some(Material::Xks)
    }

    /// The OAEP hash the token unwraps transported material with: SHA-256
    /// where it wraps with it, else SHA-1 (SoftHSM2 2.6).
    fn transport_hash(&self) -> Result<OaepHash, KeystoreError> {
        Ok(transport_hash_of(&self.prepare()?))
    }

    /// Brings key `key_id`'s material from another keystore into the token
    /// (keystore migration): `wrap_material` wraps it under a transport key
    /// the token made, and the token unwraps it into a key object like the
    /// ones [`Keystore::generate_key`] makes. Idempotent: when the token
    /// holds material for `key_id` already (an earlier run), that is
    /// returned; the caller compares the check digits.
    pub fn import_key(
        &self,
        key_id: uuid::Uuid,
        wrap_material: WrapForTransport<'_>,
    ) -> Result<GeneratedKey, KeystoreError> {
        self.import_material(Material::Key, key_id, wrap_material)
    }

    /// [`Self::import_key`] for XKS key `key_id`: the token unwraps the
    /// material into an XKS key object (`keyhold:xks:<uuid>`, the
    /// attributes [`Keystore::xks_generate_key`] gives), never a BYOK key's.
    /// Idempotent in the same way; the caller compares the check digits.
    pub fn xks_import_key(
        &self,
        key_id: uuid::Uuid,
        wrap_material: WrapForTransport<'_>,
    ) -> Result<GeneratedKey, KeystoreError> {
        self.import_material(Material::Xks, key_id, wrap_material)
    }

    fn import_material(
        &self,
        kind: Material,
        key_id: uuid::Uuid,
        wrap_material: WrapForTransport<'_>,
    ) -> Result<GeneratedKey, KeystoreError> {
        let hash = self.transport_hash()?;
        let token = self.token_name();
        let what = format!("importing {} {key_id} into the token", kind.noun());
        self.token.run_writing(&what, |c| {
            let handle = match objects::find_material(c.session, kind, key_id)?.as_slice() {
                [] => transport::unwrap_into_token(
                    c.session,
                    hash,
                    &objects::unwrapped_template(objects::material_template(kind, key_id)),
                    wrap_material,
                )?,
                [existing] => *existing,
                // Reports the ambiguity with its remedy.
                _ => objects::material(c, kind, key_id, &token)?,
            };
            Ok(GeneratedKey {
                handle: kind.label(key_id).into_bytes(),
                check_digits: check_digits(c.session, handle)?,
            })
        })
    }

    /// Takes over another keystore's audit MAC key (keystore migration), so
    /// the audit entries it sealed still verify. When the token has an audit
    /// MAC key already, it must compute `expected` over `probe` (the same
    /// key, from an earlier run); a different key is refused, because
    /// replacing it would break the audit log of whoever else uses it.
    pub fn adopt_audit_mac_key(
        &self,
        probe: &[u8],
        expected: &[u8; 32],
        wrap_material: WrapForTransport<'_>,
    ) -> Result<(), KeystoreError> {
        let hash = self.transport_hash_before_own_keys()?;
        let token = self.token_name();
        self.token.run_writing("moving the audit MAC key into the token", |c| {
            let key = match objects::find_own_key(c.session, OwnKey::AuditMac)? {
                Some(key) => key,
                None => {
                    let id = c.session.generate_random_vec(16)?;
                    transport::unwrap_into_token(
                        c.session,
                        hash,
                        &objects::unwrapped_template(OwnKey::AuditMac.template(id)),
                        wrap_material,
                    )?
                }
            };
            let mac = c.session.sign(&Mechanism::Sha256Hmac, key, probe)?;
            if mac.as_slice() == expected.as_slice() {
                Ok(())
            } else {
                Err(Fail::Verdict(KeystoreError::Unsupported(format!(
                    "the {token} already holds another audit MAC key ({}), which another keyhold installation may be using: migrate into a token of this installation's own",
                    OwnKey::AuditMac.label()
                ))))
            }
        })
    }

    /// [`Self::transport_hash`] without creating keyhold's own keys first:
    /// the audit MAC key must come from the source keystore, not be made here.
    fn transport_hash_before_own_keys(&self) -> Result<OaepHash, KeystoreError> {
        if lock(&self.algorithms).is_some() {
            return self.transport_hash();
        }
        let algorithms = self
            .token
            .run("probing the token's wrapping mechanisms", wrap::probe)?;
        Ok(transport_hash_of(&algorithms))
    }

    /// AES-GCM under XKS key `key_id` with a fresh IV from the token; when
    /// `proven`, the output decrypted in the same session must give
    /// `plaintext` back ([`Keystore::xks_encrypt_proven`]).
    fn xks_gcm_encrypt(
        &self,
        key_id: uuid::Uuid,
        handle: &[u8],
        plaintext: &[u8],
        aad: &[u8],
        proven: bool,
    ) -> Result<GcmCiphertext, KeystoreError> {
        check_xks_handle(key_id, handle)?;
        self.prepare()?;
        let token = self.token_name();
        self.token.run("encrypting with an XKS key", |c| {
            let mut iv = [0u8; GCM_IV_LEN];
            c.session.generate_random_slice(&mut iv)?;
            objects::with_material(c, Material::Xks, key_id, &token, |key| {
                let mut params_iv = iv;
                let params = GcmParams::new(&mut params_iv, aad, GCM_TAG_BITS.into())?;
                let sealed = split_tag(
                    iv,
                    c.session
                        .encrypt(&Mechanism::AesGcm(params), key, plaintext)?,
                )?;
                if proven {
                    let opened = match gcm_decrypt(c.session, key, &sealed, aad) {
                        // A session or device failure: retried or reported as such.
                        Err(Fail::Token(e)) => return Err(Fail::Token(e)),
                        Err(Fail::Verdict(e) | Fail::TokenVerdict(e)) => Err(e),
                        Ok(opened) => Ok(opened),
                    };
                    prove_round_trip(opened, plaintext).map_err(Fail::Verdict)?;
                }
                Ok(sealed)
            })
        })
    }

    fn token_name(&self) -> String {
        self.token.selector().to_string()
    }

    /// Makes the material of key `key_id` of `kind` in the token, without
    /// searching the token for a key id this keystore never met (see
    /// [`objects::generate_material`]). Idempotent per key id within this
    /// keystore: the material made for `key_id` before (an earlier call
    /// whose answer was lost) is returned instead of a second object under
    /// the same label.
    fn generate_material(
        &self,
        kind: Material,
        key_id: uuid::Uuid,
    ) -> Result<GeneratedKey, KeystoreError> {
        self.prepare()?;
        let token = self.token_name();
        let what = format!("generating {} {key_id}", kind.noun());
        self.token.run_writing(&what, |c| {
            let handle =
                objects::generate_material(c, kind, key_id, &token, |session, template| {
                    session.generate_key(&Mechanism::AesKeyGen, template)
                })?;
            Ok(GeneratedKey {
                handle: kind.label(key_id).into_bytes(),
                check_digits: check_digits(c.session, handle)?,
            })
        })
    }

    /// Test hook: the RSA-AES key wrap composition, but with OAEP-SHA-1 for the
    /// ephemeral key, so tokens that cannot wrap with OAEP-SHA-256 (SoftHSM2
    /// 2.6) can still show that the composition is right. Not an AWS format.
    #[doc(hidden)]
    pub fn wrap_rsa_aes_oaep_sha1_for_tests(
        &self,
        key_id: uuid::Uuid,
        handle: &[u8],
        wrapping_public_key_der: &[u8],
    ) -> Result<Vec<u8>, KeystoreError> {
        check_handle(key_id, handle)?;
        let wrapping_key = WrappingKey::from_der(wrapping_public_key_der)?;
        let token = self.token_name();
        self.token.run("wrapping a key (test)", |c| {
            let target = objects::data_key(c, key_id, &token)?;
            let public = wrapping_key.create(c.session)?;
            let wrapped = wrap::rsa_aes_key_wrap(c.session, public, target, wrap::OaepHash::Sha1);
            wrap::destroy(c.session, public);
            wrapped
        })
    }
}

/// SHA-256 where the token wraps with OAEP-SHA-256, else SHA-1.
fn transport_hash_of(algorithms: &[WrappingAlgorithm]) -> OaepHash {
    if algorithms.contains(&WrappingAlgorithm::RsaesOaepSha256) {
        OaepHash::Sha256
    } else {
        OaepHash::Sha1
    }
}

/// The handle the store kept must be this key's label: a handle moved to
/// another key would otherwise wrap the wrong material.
fn check_handle(key_id: uuid::Uuid, handle: &[u8]) -> Result<(), KeystoreError> {
    if handle == objects::key_label(key_id).as_bytes() {
        Ok(())
    } else {
        Err(KeystoreError::Internal(format!(
            "the keystore handle stored with key {key_id} does not name its PKCS#11 object {}",
            objects::key_label(key_id)
        )))
    }
}

/// The same for an XKS key: its handle must be its own label, and a BYOK
/// key's never serves AES-GCM for KMS.
fn check_xks_handle(key_id: uuid::Uuid, handle: &[u8]) -> Result<(), KeystoreError> {
    match Material::of_handle(key_id, handle) {
        Some(Material::Xks) => Ok(()),
        Some(Material::Key) => Err(KeystoreError::Internal(format!(
            "the keystore handle given for XKS key {key_id} is a BYOK key's handle: it does not serve AES-GCM for KMS"
        ))),
        None => Err(KeystoreError::Internal(format!(
            "the keystore handle stored with XKS key {key_id} does not name its PKCS#11 object {}",
            Material::Xks.label(key_id)
        ))),
    }
}

/// Which kind of key a handle names, for what treats both alike (backups):
/// it must be one of the key's two labels.
fn material_of_handle(key_id: uuid::Uuid, handle: &[u8]) -> Result<Material, KeystoreError> {
    match Material::of_handle(key_id, handle) {
        Some(kind) => Ok(kind),
        None => check_handle(key_id, handle).map(|()| Material::Key),
    }
}

const GCM_TAG_BITS: u64 = GCM_TAG_LEN as u64 * 8;

/// `C_Encrypt`'s CKM_AES_GCM output, `ciphertext || tag`, split.
fn split_tag(iv: [u8; GCM_IV_LEN], mut sealed: Vec<u8>) -> Result<GcmCiphertext, Fail> {
    let Some(at) = sealed.len().checked_sub(GCM_TAG_LEN) else {
        return Err(Fail::TokenVerdict(KeystoreError::Internal(format!(
            "the token's AES-GCM output is {} bytes, shorter than a tag",
            sealed.len()
        ))));
    };
    let tag = sealed.split_off(at);
    let tag: [u8; GCM_TAG_LEN] = tag.as_slice().try_into().map_err(|_| {
        Fail::TokenVerdict(KeystoreError::Internal(
            "the token's AES-GCM tag is not 16 bytes".into(),
        ))
    })?;
    Ok(GcmCiphertext {
        iv,
        ciphertext: sealed,
        tag,
    })
}

/// The XKS health check's key: a session object (never on the token),
/// made and destroyed by the check.
fn health_check_key_template() -> Vec<cryptoki::object::Attribute> {
    use cryptoki::object::{Attribute, KeyType, ObjectClass};
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(objects::AES_256_LEN.into()),
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
        Attribute::Label(b"keyhold:xks-health-check".to_vec()),
    ]
}

/// Encrypts and decrypts one block under `key` with CKM_AES_GCM.
fn gcm_round_trip(session: &Session, key: ObjectHandle) -> Result<(), Fail> {
    let aad = b"keyhold xks health check";
    let mut block = [0u8; AES_BLOCK_LEN];
    session.generate_random_slice(&mut block)?;
    let mut iv = [0u8; GCM_IV_LEN];
    session.generate_random_slice(&mut iv)?;
    let mut params_iv = iv;
    let params = GcmParams::new(&mut params_iv, aad, GCM_TAG_BITS.into())?;
    let sealed = session.encrypt(&Mechanism::AesGcm(params), key, &block)?;
    let mut params_iv = iv;
    let params = GcmParams::new(&mut params_iv, aad, GCM_TAG_BITS.into())?;
    let opened = session.decrypt(&Mechanism::AesGcm(params), key, &sealed)?;
    if opened.as_slice() == block {
        Ok(())
    } else {
        Err(Fail::TokenVerdict(KeystoreError::Internal(
            "the token's AES-GCM decrypted the health check's block into other bytes".into(),
        )))
    }
}

/// AES-ECB of the zero block under the key, computed by the token.
fn check_digits(session: &Session, key: ObjectHandle) -> Result<CheckDigits, Fail> {
    let block = session.encrypt(&Mechanism::AesEcb, key, &[0u8; AES_BLOCK_LEN])?;
    let block: [u8; AES_BLOCK_LEN] = block.as_slice().try_into().map_err(|_| {
        Fail::TokenVerdict(KeystoreError::Internal(format!(
            "the token returned {} bytes for one AES block",
            block.len()
        )))
    })?;
    Ok(CheckDigits::from_encrypted_zero_block(&block))
}

impl AuditMac for Pkcs11Keystore {
    fn audit_mac(&self, data: &[u8]) -> Result<[u8; 32], KeystoreError> {
        self.prepare()?;
        self.token.run("computing an audit MAC", |c| {
            let key = objects::own_key(c, OwnKey::AuditMac)?;
            let mac = c.session.sign(&Mechanism::Sha256Hmac, key, data)?;
            mac.as_slice().try_into().map_err(|_| {
                Fail::TokenVerdict(KeystoreError::Internal(format!(
                    "the token returned an HMAC-SHA256 of {} bytes",
                    mac.len()
                )))
            })
        })
    }
}

/// The signing key pair, which `open` created: missing now means it was deleted.
fn signing_key(session: &Session) -> Result<(ObjectHandle, ObjectHandle), Fail> {
    objects::find_signing_key(session)?.ok_or_else(|| {
        Fail::Verdict(KeystoreError::Unavailable(format!(
            "the token no longer holds keyhold's key {}: it was deleted on the token or the token was re-initialised",
            objects::AUDIT_SIGNING_LABEL
        )))
    })
}

impl AuditSigner for Pkcs11Keystore {
    fn audit_public_key(&self) -> Result<AuditPublicKey, KeystoreError> {
        self.prepare()?;
        let point = self
            .token
            .run("reading the audit signing public key", |c| {
                let (_, public) = signing_key(c.session)?;
                objects::ec_point(c.session, public)
            })?;
        AuditPublicKey::from_sec1(&point)
            .map_err(|e| KeystoreError::Internal(format!("the token's audit signing key: {e}")))
    }

    /// CKM_ECDSA signs a digest; SHA-256 of a public message is computed here.
    fn audit_sign(&self, message: &[u8]) -> Result<Vec<u8>, KeystoreError> {
        use sha2::Digest as _;
        self.prepare()?;
        let digest = sha2::Sha256::digest(message);
        self.token.run("signing an audit checkpoint", |c| {
            let (private, _) = signing_key(c.session)?;
            Ok(c.session.sign(&Mechanism::Ecdsa, private, &digest)?)
        })
    }
}

impl Keystore for Pkcs11Keystore {
    /// The session pool's size: see [`session::POOL_SIZE`].
    fn calls_at_once(&self) -> Option<usize> {
        Some(session::POOL_SIZE)
    }

    /// The token's label and serial number; its maker and model, and the
    /// module's (C_GetTokenInfo, C_GetInfo). While the token does not
    /// answer, what it said last, or the configured selector.
    fn describe(&self) -> KeystoreDescription {
        let read = self.token.run("describing the PKCS#11 token", |c| {
            let token = c.pkcs11.get_token_info(c.slot)?;
            let library = c.pkcs11.get_library_info()?;
            Ok(KeystoreDescription {
                id: format!("{}/{}", token.label().trim(), token.serial_number().trim()),
                model: format!(
                    "{} {} (hardware {}, firmware {}; PKCS#11 module: {} {} {})",
                    token.manufacturer_id().trim(),
                    token.model().trim(),
                    token.hardware_version(),
                    token.firmware_version(),
                    library.manufacturer_id().trim(),
                    library.library_description().trim(),
                    library.library_version(),
                ),
            })
        });
        let mut last = lock(&self.description);
        match read {
            Ok(description) => {
                *last = Some(description.clone());
                description
            }
            Err(e) => {
                tracing::debug!(error = %e, "the PKCS#11 token cannot describe itself now");
                last.clone().unwrap_or_else(|| KeystoreDescription {
                    id: self.token.selector().to_string(),
                    model: format!(
                        "PKCS#11 module {}",
                        self.token
                            .module()
                            .path()
                            .file_name()
                            .map_or_else(|| "(unnamed)".into(), |n| n.to_string_lossy())
                    ),
                })
            }
        }
    }

    /// CKM_AES_KEY_GEN into a token object labelled `keyhold:xks:<uuid>`;
    /// no search for a fresh key id, and idempotent per key id within this
    /// keystore, like [`Keystore::generate_key`].
    fn xks_generate_key(&self, key_id: uuid::Uuid) -> Result<GeneratedKey, KeystoreError> {
        self.generate_material(Material::Xks, key_id)
    }

    fn xks_encrypt(
        &self,
        key_id: uuid::Uuid,
        handle: &[u8],
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<GcmCiphertext, KeystoreError> {
        self.xks_gcm_encrypt(key_id, handle, plaintext, aad, false)
    }

    fn xks_decrypt(
        &self,
        key_id: uuid::Uuid,
        handle: &[u8],
        sealed: &GcmCiphertext,
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeystoreError> {
        check_xks_handle(key_id, handle)?;
        self.prepare()?;
        let token = self.token_name();
        self.token.run("decrypting with an XKS key", |c| {
            objects::with_material(c, Material::Xks, key_id, &token, |key| {
                gcm_decrypt(c.session, key, sealed, aad)
            })
        })
    }

    /// Both in one session, the key's object looked up (and its handle
    /// checked) once: per request, half the token's work of an Encrypt
    /// followed by a Decrypt.
    fn xks_encrypt_proven(
        &self,
        key_id: uuid::Uuid,
        handle: &[u8],
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<GcmCiphertext, KeystoreError> {
        self.xks_gcm_encrypt(key_id, handle, plaintext, aad, true)
    }

    /// An AES-256 session object (never a token object) encrypts and
    /// decrypts a block with CKM_AES_GCM, and is destroyed, whatever the
    /// outcome.
    fn xks_health_check(&self) -> Result<(), KeystoreError> {
        self.prepare()?;
        self.token.run("checking the token's AES-GCM for XKS", |c| {
            let key = c
                .session
                .generate_key(&Mechanism::AesKeyGen, &health_check_key_template())?;
            let result = gcm_round_trip(c.session, key);
            wrap::destroy(c.session, key);
            result
        })
    }

    fn kind(&self) -> KeystoreKind {
        KeystoreKind::Pkcs11
    }

    /// A pooled session reads the token info and is logged in, and keyhold's
    /// own keys are still on the token.
    fn check(&self) -> Result<(), KeystoreError> {
        self.prepare()?;
        self.token.run("checking the PKCS#11 token", |c| {
            let info = c.pkcs11.get_token_info(c.slot)?;
            if info.user_pin_locked() {
                return Err(Fail::Verdict(KeystoreError::Unavailable(format!(
                    "the user PIN of the {} is locked",
                    self.token.selector()
                ))));
            }
            let state = c.session.get_session_info()?.session_state();
            if state != SessionState::RwUser {
                return Err(Fail::Verdict(KeystoreError::Unavailable(format!(
                    "keyhold's session on the {} is not logged in ({state:?})",
                    self.token.selector()
                ))));
            }
            objects::own_key(c, OwnKey::Seal)?;
            objects::own_key(c, OwnKey::AuditMac)?;
            Ok(())
        })
    }

    /// CKM_AES_KEY_GEN into a token object labelled `keyhold:key:<uuid>`,
    /// with no search of the token for a key id new to this keystore (the
    /// port's callers give fresh ids). Idempotent per key id within this
    /// keystore: when it made material for `key_id` already (an earlier
    /// attempt whose answer was lost), that material is returned instead of
    /// a second object under the same label.
    fn generate_key(&self, key_id: uuid::Uuid) -> Result<GeneratedKey, KeystoreError> {
        self.generate_material(Material::Key, key_id)
    }

    fn wrap_key(
        &self,
        key_id: uuid::Uuid,
        handle: &[u8],
        wrapping_public_key_der: &[u8],
        algorithm: WrappingAlgorithm,
    ) -> Result<Vec<u8>, KeystoreError> {
        check_handle(key_id, handle)?;
        let algorithms = self.prepare()?;
        if !algorithms.contains(&algorithm) {
            return Err(KeystoreError::Unsupported(format!(
                "the {} cannot wrap with {}; it can wrap with: {}",
                self.token.selector(),
                algorithm.aws_name(),
                if algorithms.is_empty() {
                    "nothing (no RSA-OAEP key wrapping)".to_owned()
                } else {
                    algorithms
                        .iter()
                        .map(|a| a.aws_name())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            )));
        }
        let wrapping_key = WrappingKey::from_der(wrapping_public_key_der)?;
        let token = self.token_name();
        self.token.run("wrapping a key for KMS import", |c| {
            let target = objects::data_key(c, key_id, &token)?;
            wrap::wrap(c.session, target, &wrapping_key, algorithm)
        })
    }

    /// Destroys every object labelled with the key; none left is success.
    /// The handle says only which kind of key it is (an XKS key's handle is
    /// its `keyhold:xks:` label): the label names the key's material, and a
    /// key whose handle is not ours (another keystore's) has none here.
    fn delete_key(&self, key_id: uuid::Uuid, handle: &[u8]) -> Result<(), KeystoreError> {
        let kind = Material::of_handle(key_id, handle).unwrap_or(Material::Key);
        self.prepare()?;
        self.token.run_writing("deleting a key", |c| {
            let label = kind.label(key_id).into_bytes();
            // Until every object is destroyed, generating for the key searches.
            c.handles.distrust(&label);
            for object in objects::find_material(c.session, kind, key_id)? {
                match c.session.destroy_object(object) {
                    Ok(()) => {}
                    // Destroyed by someone else since the search.
                    Err(e) if rv(&e) == Some(RvError::ObjectHandleInvalid) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            c.handles.forget(&label);
            Ok(())
        })
    }

    /// What the token proved at open it can do, best first: `RSAES_OAEP_SHA_256`
    /// when it wraps with OAEP-SHA-256, `RSAES_OAEP_SHA_1` when it wraps with
    /// OAEP-SHA-1 (SoftHSM2 2.6 does only this), `RSA_AES_KEY_WRAP_SHA_256`
    /// when it also has an RFC 5649 `CKM_AES_KEY_WRAP_PAD`.
    fn wrapping_algorithms(&self) -> Result<Vec<WrappingAlgorithm>, KeystoreError> {
        self.prepare()
    }

    /// Answers from the handles this keystore knows (one
    /// `C_GetAttributeValue` each, as every use checks them) and lists
    /// keyhold's key objects on the token once for the others, rather than
    /// one search per key; the handles that listing finds are kept, so the
    /// same keys listed again cost no search. Answers for XKS keys' handles
    /// too.
    fn missing_material(
        &self,
        keys: &[(uuid::Uuid, &[u8])],
    ) -> Result<Vec<uuid::Uuid>, KeystoreError> {
        self.prepare()?;
        let present = self.token.run("listing the token's keys", |c| {
            let mut present: Vec<Option<bool>> = keys
                .iter()
                .map(|(id, handle)| match Material::of_handle(*id, handle) {
                    // Another keystore's handle: no material here.
                    None => Some(false),
                    Some(_) => c
                        .handles
                        .get(c, handle, ObjectClass::SECRET_KEY)
                        .map(|_| true),
                })
                .collect();
            if present.iter().all(Option::is_some) {
                return Ok(present);
            }
            let on_token = objects::data_key_objects(c.session)?;
            for ((_, handle), known) in keys.iter().zip(present.iter_mut()) {
                if known.is_some() {
                    continue;
                }
                let found = on_token.get(*handle);
                // Several objects under one label are left to the next use,
                // which reports them.
                if let Some([one]) = found.map(Vec::as_slice) {
                    c.handles.put(c, handle.to_vec(), *one);
                }
                *known = Some(found.is_some());
            }
            Ok(present)
        })?;
        Ok(keys
            .iter()
            .zip(present)
            .filter(|(_, present)| *present != Some(true))
            .map(|((id, _), _)| *id)
            .collect())
    }

    fn seal_secret(&self, context: &[u8], secret: &[u8]) -> Result<Vec<u8>, KeystoreError> {
        self.prepare()?;
        self.token.run("sealing a secret", |c| {
            let key = objects::own_key(c, OwnKey::Seal)?;
            let mut iv = [0u8; GCM_IV_LEN];
            c.session.generate_random_slice(&mut iv)?;
            let mut params_iv = iv;
            let params = GcmParams::new(&mut params_iv, context, (GCM_TAG_LEN as u64 * 8).into())?;
            let sealed = c.session.encrypt(&Mechanism::AesGcm(params), key, secret)?;
            let mut blob = Vec::with_capacity(1 + GCM_IV_LEN + sealed.len());
            blob.push(SEAL_VERSION);
            blob.extend_from_slice(&iv);
            blob.extend_from_slice(&sealed);
            Ok(blob)
        })
    }

    /// Fails with [`KeystoreError::SealBroken`] for a wrong context, another
    /// token's seal key, or any change to the blob.
    fn open_secret(
        &self,
        context: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeystoreError> {
        if sealed.len() < 1 + GCM_IV_LEN + GCM_TAG_LEN || sealed[0] != SEAL_VERSION {
            return Err(KeystoreError::SealBroken);
        }
        let (iv, ciphertext) = sealed[1..].split_at(GCM_IV_LEN);
        self.prepare()?;
        self.token.run("opening a sealed secret", |c| {
            let key = objects::own_key(c, OwnKey::Seal)?;
            let mut params_iv = [0u8; GCM_IV_LEN];
            params_iv.copy_from_slice(iv);
            let params = GcmParams::new(&mut params_iv, context, (GCM_TAG_LEN as u64 * 8).into())?;
            match c
                .session
                .decrypt(&Mechanism::AesGcm(params), key, ciphertext)
            {
                Ok(plaintext) => Ok(Zeroizing::new(plaintext)),
                Err(e) if is_tag_mismatch(c.session, &e) => {
                    Err(Fail::TokenVerdict(KeystoreError::SealBroken))
                }
                Err(e) => Err(e.into()),
            }
        })
    }

    fn backup_export<'a>(
        &'a self,
        wrap_key: &BackupWrapKey,
    ) -> Result<Box<dyn BackupExport + 'a>, KeystoreError> {
        self.start_backup_export(wrap_key)
    }

    fn backup_import<'a>(
        &'a self,
        wrap_key: &BackupWrapKey,
    ) -> Result<Box<dyn BackupImport + 'a>, KeystoreError> {
        self.start_backup_import(wrap_key)
    }
}

/// AES-GCM decryption of `sealed` with `key`; a tag that does not
/// authenticate is the token's verdict [`KeystoreError::SealBroken`].
fn gcm_decrypt(
    session: &Session,
    key: ObjectHandle,
    sealed: &GcmCiphertext,
    aad: &[u8],
) -> Result<Zeroizing<Vec<u8>>, Fail> {
    let mut input = Vec::with_capacity(sealed.ciphertext.len() + GCM_TAG_LEN);
    input.extend_from_slice(&sealed.ciphertext);
    input.extend_from_slice(&sealed.tag);
    let mut params_iv = sealed.iv;
    let params = GcmParams::new(&mut params_iv, aad, GCM_TAG_BITS.into())?;
    match session.decrypt(&Mechanism::AesGcm(params), key, &input) {
        Ok(plaintext) => Ok(Zeroizing::new(plaintext)),
        Err(e) if is_tag_mismatch(session, &e) => {
            Err(Fail::TokenVerdict(KeystoreError::SealBroken))
        }
        Err(e) => Err(e.into()),
    }
}

/// Whether C_Decrypt failed because the GCM tag does not verify. The standard
/// answer is CKR_ENCRYPTED_DATA_INVALID; SoftHSM2 2.6 answers
/// CKR_GENERAL_ERROR, which is taken as a tag mismatch only when the session
/// still answers afterwards (a failing device would not).
fn is_tag_mismatch(session: &Session, e: &cryptoki::error::Error) -> bool {
    match e {
        cryptoki::error::Error::Pkcs11(
            RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange,
            _,
        ) => true,
        cryptoki::error::Error::Pkcs11(RvError::GeneralError, Function::Decrypt) => {
            session.get_session_info().is_ok()
        }
        _ => false,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain data (a list of algorithms): carrying on after a panic elsewhere is safe.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
