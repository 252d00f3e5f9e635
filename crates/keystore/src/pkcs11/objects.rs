//! keyhold's objects on the token: their labels, templates and lookup.

use std::collections::HashMap;

use cryptoki::context::Function;
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState};
use keyhold_core::error::KeystoreError;

use super::error::Fail;
use super::session::Ctx;

/// Seals credential secrets (AES-256-GCM).
pub(super) const SEAL_LABEL: &str = "keyhold:seal";
/// Signs audit entries (HMAC-SHA256).
pub(super) const AUDIT_MAC_LABEL: &str = "keyhold:audit-mac";
/// Signs audit checkpoints (ECDSA P-256): a private and a public key object.
pub(super) const AUDIT_SIGNING_LABEL: &str = "keyhold:audit-signing";
/// DER of the prime256v1 (P-256) curve's OID, the public key's `CKA_EC_PARAMS`.
const P256_EC_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// Followed by the keyhold key id: the label of a key's material.
pub(super) const KEY_LABEL_PREFIX: &str = "keyhold:key:";
/// Followed by the XKS key id: the label of an XKS key's material.
pub(super) const XKS_KEY_LABEL_PREFIX: &str = "keyhold:xks:";

pub(super) const AES_256_LEN: u64 = 32;
const OWN_KEY_ID_LEN: u32 = 16;

/// The label of key `key_id`'s material; also the handle the store keeps.
pub(super) fn key_label(key_id: uuid::Uuid) -> String {
    Material::Key.label(key_id)
}

/// Which kind of key a material object holds. The two kinds are told apart
/// by their labels: a BYOK key's material is wrapped for KMS import and
/// never serves XKS calls; an XKS key's serves AES-GCM for KMS and is never
/// wrapped for a cloud (only into backups).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Material {
    /// A BYOK key (`keyhold:key:<uuid>`).
    Key,
    /// An XKS key (`keyhold:xks:<uuid>`).
    Xks,
}

impl Material {
    fn prefix(self) -> &'static str {
        match self {
            Self::Key => KEY_LABEL_PREFIX,
            Self::Xks => XKS_KEY_LABEL_PREFIX,
        }
    }

    /// The label of the material of key `key_id`; also its handle in the store.
    pub(super) fn label(self, key_id: uuid::Uuid) -> String {
        format!("{}{key_id}", self.prefix())
    }

    /// Which kind `handle` (as the store keeps it) names for `key_id`;
    /// `None` when it names neither (another keystore's handle).
    pub(super) fn of_handle(key_id: uuid::Uuid, handle: &[u8]) -> Option<Self> {
        [Self::Key, Self::Xks]
            .into_iter()
            .find(|kind| handle == kind.label(key_id).as_bytes())
    }

    /// How messages name the key.
    pub(super) fn noun(self) -> &'static str {
        match self {
            Self::Key => "key",
            Self::Xks => "XKS key",
        }
    }
}

/// keyhold's own long-lived keys, created on the token at the first open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum OwnKey {
    Seal,
    AuditMac,
}

impl OwnKey {
    pub(super) fn label(self) -> &'static str {
        match self {
            Self::Seal => SEAL_LABEL,
            Self::AuditMac => AUDIT_MAC_LABEL,
        }
    }

    fn key_type(self) -> KeyType {
        match self {
            Self::Seal => KeyType::AES,
            Self::AuditMac => KeyType::GENERIC_SECRET,
        }
    }

    pub(super) fn template(self, id: Vec<u8>) -> Vec<Attribute> {
        let (encrypts, signs) = match self {
            Self::Seal => (true, false),
            Self::AuditMac => (false, true),
        };
        // Sensitive either way (its value is never read). The audit MAC key
        // leaves wrapped, in backups: the restored audit log must verify.
        let extractable = self == Self::AuditMac;
        vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(self.key_type()),
            Attribute::ValueLen(AES_256_LEN.into()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(extractable),
            Attribute::Encrypt(encrypts),
            Attribute::Decrypt(encrypts),
            Attribute::Sign(signs),
            Attribute::Verify(signs),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Derive(false),
            Attribute::Label(self.label().as_bytes().to_vec()),
            Attribute::Id(id),
        ]
    }

    fn mechanism(self) -> Mechanism<'static> {
        match self {
            Self::Seal => Mechanism::AesKeyGen,
            Self::AuditMac => Mechanism::GenericSecretKeyGen,
        }
    }

    fn search(self) -> Vec<Attribute> {
        vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(self.key_type()),
            Attribute::Label(self.label().as_bytes().to_vec()),
        ]
    }
}

/// C_FindObjects, where "nothing found" is trusted only from a logged-in
/// session: logged out, a token hides its private objects and an empty answer
/// would read as "deleted" (and a delete as done). A logout between the
/// pool's check and the search thus becomes CKR_USER_NOT_LOGGED_IN, which
/// the pool answers with a fresh login and one retry.
fn find(session: &Session, template: &[Attribute]) -> Result<Vec<ObjectHandle>, Fail> {
    let found = session.find_objects(template)?;
    if found.is_empty() && session.get_session_info()?.session_state() != SessionState::RwUser {
        return Err(Fail::Token(Error::Pkcs11(
            RvError::UserNotLoggedIn,
            Function::FindObjects,
        )));
    }
    Ok(found)
}

/// Finds an own key; `None` when the token does not have it.
pub(super) fn find_own_key(session: &Session, key: OwnKey) -> Result<Option<ObjectHandle>, Fail> {
    let found = find(session, &key.search())?;
    match found.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(*one)),
        several => {
            // Two keyhold processes created the key at the same moment. Every
            // process picks the same one (lowest CKA_ID), so all seal and MAC
            // with one key; the other stays unused.
            tracing::warn!(
                label = key.label(),
                count = several.len(),
                "several objects carry keyhold's label; using the one with the lowest CKA_ID"
            );
            let mut best: Option<(Vec<u8>, ObjectHandle)> = None;
            for handle in several {
                let id = session
                    .get_attributes(*handle, &[AttributeType::Id])?
                    .into_iter()
                    .find_map(|a| match a {
                        Attribute::Id(id) => Some(id),
                        _ => None,
                    })
                    .unwrap_or_default();
                if best.as_ref().is_none_or(|(lowest, _)| id < *lowest) {
                    best = Some((id, *handle));
                }
            }
            Ok(best.map(|(_, handle)| handle))
        }
    }
}

/// The own key, which `open` created: missing now means it was deleted on the token.
pub(super) fn own_key(c: &Ctx<'_>, key: OwnKey) -> Result<ObjectHandle, Fail> {
    let label = key.label().as_bytes();
    if let Some(handle) = c.handles.get(c, label, ObjectClass::SECRET_KEY) {
        return Ok(handle);
    }
    let handle = find_own_key(c.session, key)?.ok_or_else(|| {
        Fail::Verdict(KeystoreError::Unavailable(format!(
            "the token no longer holds keyhold's key {}: it was deleted on the token or the token was re-initialised; data protected by it cannot be used any more",
            key.label()
        )))
    })?;
    c.handles.put(c, label.to_vec(), handle);
    Ok(handle)
}

/// Creates the own key when the token does not have it yet (first open).
/// Run it with [`super::session::Token::run_writing`].
pub(super) fn ensure_own_key(c: &Ctx<'_>, key: OwnKey) -> Result<(), Fail> {
    if find_own_key(c.session, key)?.is_some() {
        return Ok(());
    }
    let id = c.session.generate_random_vec(OWN_KEY_ID_LEN)?;
    c.session
        .generate_key(&key.mechanism(), &key.template(id))?;
    tracing::info!(
        label = key.label(),
        "created keyhold's key on the PKCS#11 token"
    );
    Ok(())
}

fn signing_key_search(class: ObjectClass) -> Vec<Attribute> {
    vec![
        Attribute::Class(class),
        Attribute::KeyType(KeyType::EC),
        Attribute::Label(AUDIT_SIGNING_LABEL.as_bytes().to_vec()),
    ]
}

/// The checkpoint signing key pair (private, public); `None` when the token
/// lacks either half. Two processes that created it at once leave two pairs;
/// every process takes the first private key and the public key of its CKA_ID.
pub(super) fn find_signing_key(
    session: &Session,
) -> Result<Option<(ObjectHandle, ObjectHandle)>, Fail> {
    let mut private = find(session, &signing_key_search(ObjectClass::PRIVATE_KEY))?;
    private.sort_by_key(|h| h.handle());
    let Some(private) = private.first().copied() else {
        return Ok(None);
    };
    let id = session
        .get_attributes(private, &[AttributeType::Id])?
        .into_iter()
        .find_map(|a| match a {
            Attribute::Id(id) => Some(id),
            _ => None,
        })
        .unwrap_or_default();
    let mut public_search = signing_key_search(ObjectClass::PUBLIC_KEY);
    public_search.push(Attribute::Id(id));
    Ok(find(session, &public_search)?
        .first()
        .map(|public| (private, *public)))
}

/// Creates the checkpoint signing key pair when the token does not have it.
/// The private key never leaves the token; it only signs.
pub(super) fn ensure_signing_key(c: &Ctx<'_>) -> Result<(), Fail> {
    if find_signing_key(c.session)?.is_some() {
        return Ok(());
    }
    let id = c.session.generate_random_vec(OWN_KEY_ID_LEN)?;
    let public = [
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::EcParams(P256_EC_PARAMS.to_vec()),
        Attribute::Label(AUDIT_SIGNING_LABEL.as_bytes().to_vec()),
        Attribute::Id(id.clone()),
    ];
    let mut private = signing_private_template(id);
    private.retain(|a| !matches!(a, Attribute::Class(_) | Attribute::KeyType(_)));
    c.session
        .generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)?;
    tracing::info!(
        label = AUDIT_SIGNING_LABEL,
        "created keyhold's audit checkpoint signing key on the PKCS#11 token"
    );
    Ok(())
}

/// The checkpoint signing private key, as generated or unwrapped (a
/// restore). Sensitive, but extractable: it leaves wrapped, in backups,
/// so that checkpoints signed before a restore keep their key.
pub(super) fn signing_private_template(id: Vec<u8>) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(KeyType::EC),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(true),
        Attribute::Sign(true),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
        Attribute::Label(AUDIT_SIGNING_LABEL.as_bytes().to_vec()),
        Attribute::Id(id),
    ]
}

/// The checkpoint signing public key object made from its uncompressed
/// point (a restore), `CKA_EC_POINT` DER-encoded as the standard says.
pub(super) fn signing_public_template(point: &[u8], id: Vec<u8>) -> Vec<Attribute> {
    let mut ec_point = Vec::with_capacity(point.len() + 2);
    ec_point.push(0x04);
    // A P-256 point (65 bytes) needs the short DER length form only.
    ec_point.push(u8::try_from(point.len()).unwrap_or(0));
    ec_point.extend_from_slice(point);
    vec![
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::KeyType(KeyType::EC),
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::Encrypt(false),
        Attribute::Wrap(false),
        Attribute::Derive(false),
        Attribute::EcParams(P256_EC_PARAMS.to_vec()),
        Attribute::EcPoint(ec_point),
        Attribute::Label(AUDIT_SIGNING_LABEL.as_bytes().to_vec()),
        Attribute::Id(id),
    ]
}

/// The uncompressed point of a public key object. `CKA_EC_POINT` is a DER
/// OCTET STRING by the standard; some tokens answer the bare point.
pub(super) fn ec_point(session: &Session, public: ObjectHandle) -> Result<Vec<u8>, Fail> {
    let raw = session
        .get_attributes(public, &[AttributeType::EcPoint])?
        .into_iter()
        .find_map(|a| match a {
            Attribute::EcPoint(point) => Some(point),
            _ => None,
        })
        .unwrap_or_default();
    Ok(match raw.as_slice() {
        [0x04, len, point @ ..] if usize::from(*len) == point.len() => point.to_vec(),
        _ => raw,
    })
}

/// Template of a key's material (C_GenerateKey, CKM_AES_KEY_GEN).
/// For the unit tests: the keystore names the kind of key ([`Material`]).
#[cfg(test)]
pub(super) fn data_key_template(key_id: uuid::Uuid) -> Vec<Attribute> {
    material_template(Material::Key, key_id)
}

/// Template of a BYOK or XKS key's material: the same attributes (an XKS
/// key encrypts and decrypts with CKM_AES_GCM in the token, a BYOK key is
/// wrapped for KMS; both leave the token only wrapped), told apart by label.
pub(super) fn material_template(kind: Material, key_id: uuid::Uuid) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(AES_256_LEN.into()),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        // Extractable only so that C_WrapKey can wrap it for KMS import;
        // sensitive keeps C_GetAttributeValue(CKA_VALUE) from ever returning it.
        Attribute::Extractable(true),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        // Derivation (e.g. CKM_EXTRACT_KEY_FROM_KEY) could copy the material out.
        Attribute::Derive(false),
        Attribute::Label(kind.label(key_id).into_bytes()),
        Attribute::Id(key_id.as_bytes().to_vec()),
    ]
}

/// The token objects holding key `key_id`'s material (normally one).
/// For the unit tests: the keystore names the kind of key ([`Material`]).
#[cfg(test)]
pub(super) fn find_data_keys(
    session: &Session,
    key_id: uuid::Uuid,
) -> Result<Vec<ObjectHandle>, Fail> {
    find_material(session, Material::Key, key_id)
}

/// The token objects holding the material of key `key_id` of `kind`.
pub(super) fn find_material(
    session: &Session,
    kind: Material,
    key_id: uuid::Uuid,
) -> Result<Vec<ObjectHandle>, Fail> {
    find(
        session,
        &[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(kind.label(key_id).into_bytes()),
        ],
    )
}

/// Makes the material of key `key_id` of `kind` with `generate`
/// (`C_GenerateKey`; the tests inject lost answers), or returns the object
/// made for the key before. Run it with
/// [`super::session::Token::run_writing`]: in this process, nothing else
/// creates or destroys objects meanwhile.
///
/// Rules:
/// - a label this keystore never met ([`super::handles`]) is generated at
///   once, without a search: the callers of `Keystore::generate_key` give a
///   key id never given before (`keyhold_core::ports`), so no object carries
///   its label unless one was made behind keyhold's back, and a search costs
///   time in proportion to the objects on the token, every rotation;
/// - the label is known from before `C_GenerateKey` is sent, and holds the
///   handle once it answers: a retry after an answer lost on the way back
///   (on a fresh session, or the caller again) finds the handle, or searches;
/// - a known label whose handle still checks out is that object; otherwise
///   the token is searched as it always was: one object found is used, none
///   found is generated, several are reported with their remedy.
pub(super) fn generate_material(
    c: &Ctx<'_>,
    kind: Material,
    key_id: uuid::Uuid,
    token: &str,
    generate: impl Fn(&Session, &[Attribute]) -> Result<ObjectHandle, Error>,
) -> Result<ObjectHandle, Fail> {
    let label = kind.label(key_id).into_bytes();
    if let Some(handle) = c.handles.get(c, &label, ObjectClass::SECRET_KEY) {
        tracing::info!(%key_id, "this keystore knows this key's material already; using it");
        return Ok(handle);
    }
    if c.handles.knows(&label) {
        match find_material(c.session, kind, key_id)?.as_slice() {
            [] => {}
            [existing] => {
                tracing::info!(%key_id, "the token already holds this key's material; using it");
                c.handles.put(c, label, *existing);
                return Ok(*existing);
            }
            // Reports the ambiguity with its remedy.
            _ => return material(c, kind, key_id, token),
        }
    }
    c.handles.distrust(&label);
    let handle = generate(c.session, &material_template(kind, key_id))?;
    c.handles.put(c, label, handle);
    Ok(handle)
}

/// `template` as `C_UnwrapKey` takes it: the length comes from the
/// unwrapped material, and PKCS#11 forbids `CKA_VALUE_LEN` there.
pub(super) fn unwrapped_template(template: Vec<Attribute>) -> Vec<Attribute> {
    template
        .into_iter()
        .filter(|a| !matches!(a, Attribute::ValueLen(_)))
        .collect()
}

/// Every keyhold key object on the token, BYOK and XKS, by label (one
/// search, for listings).
pub(super) fn data_key_objects(
    session: &Session,
) -> Result<HashMap<Vec<u8>, Vec<ObjectHandle>>, Fail> {
    let candidates = find(
        session,
        &[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
        ],
    )?;
    let mut objects: HashMap<Vec<u8>, Vec<ObjectHandle>> = HashMap::with_capacity(candidates.len());
    for object in candidates {
        let attributes = match session.get_attributes(object, &[AttributeType::Label]) {
            Ok(attributes) => attributes,
            // Destroyed between the search and this read (another process or
            // node deleting a key on the same token): not present.
            Err(Error::Pkcs11(RvError::ObjectHandleInvalid, _)) => continue,
            Err(e) => return Err(e.into()),
        };
        for attribute in attributes {
            if let Attribute::Label(label) = attribute
                && (label.starts_with(KEY_LABEL_PREFIX.as_bytes())
                    || label.starts_with(XKS_KEY_LABEL_PREFIX.as_bytes()))
            {
                objects.entry(label).or_default().push(object);
            }
        }
    }
    Ok(objects)
}

/// The one object holding key `key_id`'s material.
pub(super) fn data_key(c: &Ctx<'_>, key_id: uuid::Uuid, token: &str) -> Result<ObjectHandle, Fail> {
    material(c, Material::Key, key_id, token)
}

/// The one object holding the material of key `key_id` of `kind`.
pub(super) fn material(
    c: &Ctx<'_>,
    kind: Material,
    key_id: uuid::Uuid,
    token: &str,
) -> Result<ObjectHandle, Fail> {
    let label = kind.label(key_id).into_bytes();
    if let Some(handle) = c.handles.get(c, &label, ObjectClass::SECRET_KEY) {
        return Ok(handle);
    }
    let noun = kind.noun();
    match find_material(c.session, kind, key_id)?.as_slice() {
        [one] => {
            c.handles.put(c, label, *one);
            Ok(*one)
        }
        [] => Err(Fail::Verdict(KeystoreError::KeyNotFound(format!(
            "the key material of {noun} {key_id} is missing from the {token} (object {}): it was deleted on the token or the token was re-initialised",
            kind.label(key_id)
        )))),
        several => Err(Fail::Verdict(KeystoreError::Internal(format!(
            "{} objects on the {token} are labelled {}; keyhold cannot tell which holds the material of {noun} {key_id}: remove the ones {}",
            several.len(),
            kind.label(key_id),
            match kind {
                Material::Key => "never imported into KMS",
                Material::Xks => "whose check digits differ from keyhold's record of the key",
            }
        )))),
    }
}

/// Runs `op` with the object holding the material of key `key_id` of
/// `kind`. A cached handle is checked before use ([`super::handles`]), but
/// the object may be destroyed between that check and `op` (a delete on
/// another node): when the token then calls the handle invalid, it is
/// forgotten and the object searched for once more, which reports the key
/// missing if it is gone.
pub(super) fn with_material<T>(
    c: &Ctx<'_>,
    kind: Material,
    key_id: uuid::Uuid,
    token: &str,
    op: impl Fn(ObjectHandle) -> Result<T, Fail>,
) -> Result<T, Fail> {
    let handle = material(c, kind, key_id, token)?;
    match op(handle) {
        Err(Fail::Token(Error::Pkcs11(
            RvError::KeyHandleInvalid | RvError::ObjectHandleInvalid,
            _,
        ))) => {
            c.handles.distrust(kind.label(key_id).as_bytes());
            op(material(c, kind, key_id, token)?)
        }
        result => result,
    }
}
