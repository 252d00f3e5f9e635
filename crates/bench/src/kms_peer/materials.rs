//! A key's key materials, kept the way AWS KMS documents them since on-demand
//! rotation of imported key material (GA June 2025).
//!
//! A symmetric key with `EXTERNAL` origin has a list of materials: the first
//! one imported becomes CURRENT and permanently associated; one imported with
//! `ImportType=NEW_KEY_MATERIAL` waits as PENDING_ROTATION (at most one at a
//! time, and not yet permanently associated: deleting it drops it) until
//! RotateKeyOnDemand makes it CURRENT and the former one NON_CURRENT. Every
//! permanently associated material must be imported for the key to be usable:
//! deleting (or letting expire) any one of them, even a NON_CURRENT one, puts
//! the key in PendingImport until that same material is imported again.
//!
//! Sources: AWS KMS API Reference (ImportKeyMaterial, RotateKeyOnDemand,
//! DeleteImportedKeyMaterial, ListKeyRotations, RotationsListEntry) and
//! Developer Guide, *Import key material* ("Import new key material": "A KMS
//! key can have at most one key material in PENDING_ROTATION state").

use rsa::rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};

use super::KmsError;

/// "You can perform on-demand key rotation a maximum of 25 times per KMS
/// key" (RotateKeyOnDemand); not adjustable.
pub const MAX_ON_DEMAND_ROTATIONS: u32 = 25;

/// A material's role in the key (`KeyMaterialState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyMaterialState {
    /// Encrypts and decrypts.
    Current,
    /// Decrypts only: it was current before a rotation.
    NonCurrent,
    /// Imported for the next on-demand rotation; used for nothing yet.
    PendingRotation,
}

impl KeyMaterialState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Current => "CURRENT",
            Self::NonCurrent => "NON_CURRENT",
            Self::PendingRotation => "PENDING_ROTATION",
        }
    }
}

/// Whether a material is in KMS right now (`ImportState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportState {
    Imported,
    /// Deleted or expired: the same material has to be imported again.
    PendingImport,
}

impl ImportState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Imported => "IMPORTED",
            Self::PendingImport => "PENDING_IMPORT",
        }
    }
}

/// ImportKeyMaterial's `ImportType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ImportType {
    New,
    Existing,
}

impl ImportType {
    pub(super) fn parse(raw: Option<&str>) -> Result<Option<Self>, KmsError> {
        match raw {
            None => Ok(None),
            Some("NEW_KEY_MATERIAL") => Ok(Some(Self::New)),
            Some("EXISTING_KEY_MATERIAL") => Ok(Some(Self::Existing)),
            Some(other) => Err(KmsError::validation(format!(
                "ImportType {other:?} is not NEW_KEY_MATERIAL or EXISTING_KEY_MATERIAL"
            ))),
        }
    }
}

/// `ExpirationModel` and `ValidTo` of one import.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Expiration {
    /// KEY_MATERIAL_EXPIRES, at `valid_to` (seconds since the epoch).
    Expires { valid_to: f64 },
    /// KEY_MATERIAL_DOES_NOT_EXPIRE.
    DoesNotExpire,
}

impl Expiration {
    pub fn model(self) -> &'static str {
        match self {
            Self::Expires { .. } => "KEY_MATERIAL_EXPIRES",
            Self::DoesNotExpire => "KEY_MATERIAL_DOES_NOT_EXPIRE",
        }
    }

    pub fn valid_to(self) -> Option<f64> {
        match self {
            Self::Expires { valid_to } => Some(valid_to),
            Self::DoesNotExpire => None,
        }
    }
}

/// One key material of a key, as the peer holds it.
#[derive(Clone)]
pub struct KeyMaterial {
    /// `KeyMaterialId`: lowercase hex of SHA-256(key id || material), so the
    /// same material always gets the same id in the same key ([`material_id`]).
    pub id: String,
    pub state: KeyMaterialState,
    pub import_state: ImportState,
    /// `KeyMaterialDescription`, kept from the last import that gave one.
    pub description: Option<String>,
    /// From the last import; `None` while PENDING_IMPORT, and for material
    /// KMS generated (origin AWS_KMS).
    pub expiration: Option<Expiration>,
    /// When an on-demand rotation made it CURRENT; `None` for the first
    /// material and a PENDING_ROTATION one.
    pub rotation_date: Option<f64>,
    material: [u8; 32],
}

impl KeyMaterial {
    /// The 256-bit material itself: the unwrapped import in faithful mode;
    /// made up by the peer in the benchmarks' mode (which does not unwrap)
    /// and for keys with origin AWS_KMS.
    pub fn material(&self) -> &[u8; 32] {
        &self.material
    }
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyMaterial")
            .field("id", &self.id)
            .field("state", &self.state)
            .field("import_state", &self.import_state)
            .field("description", &self.description)
            .field("expiration", &self.expiration)
            .field("rotation_date", &self.rotation_date)
            .finish_non_exhaustive()
    }
}

/// The peer's `KeyMaterialId` for `material` in the key `key_id` (the bare
/// key id, not the ARN). AWS documents only that the id is derived from the
/// key id and the material; tests can predict the peer's.
pub fn material_id(key_id: &str, material: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update(key_id.as_bytes());
    hash.update(material);
    hex::encode(hash.finalize())
}

fn random_material() -> [u8; 32] {
    let mut material = [0u8; 32];
    OsRng.fill_bytes(&mut material);
    material
}

/// One ImportKeyMaterial request, checked and unwrapped.
pub(super) struct Import {
    /// The unwrapped material; `None` in the benchmarks' mode, which does not
    /// unwrap and so cannot tell one material from another.
    pub material: Option<[u8; 32]>,
    pub import_type: Option<ImportType>,
    pub key_material_id: Option<String>,
    pub description: Option<String>,
    pub expiration: Expiration,
}

/// A key's materials and its count of on-demand rotations.
#[derive(Clone, Debug, Default)]
pub(super) struct Materials {
    /// In the order they were associated, which is also the rotation order
    /// (one pending material at a time).
    list: Vec<KeyMaterial>,
    on_demand_rotations: u32,
}

impl Materials {
    /// A key with origin AWS_KMS: KMS makes its first material at creation.
    pub(super) fn generated(key_id: &str) -> Self {
        Self {
            list: vec![Self::generate(key_id, KeyMaterialState::Current)],
            on_demand_rotations: 0,
        }
    }

    fn generate(key_id: &str, state: KeyMaterialState) -> KeyMaterial {
        let material = random_material();
        KeyMaterial {
            id: material_id(key_id, &material),
            state,
            import_state: ImportState::Imported,
            description: None,
            expiration: None,
            rotation_date: None,
            material,
        }
    }

    pub(super) fn list(&self) -> &[KeyMaterial] {
        &self.list
    }

    pub(super) fn current(&self) -> Option<&KeyMaterial> {
        self.list
            .iter()
            .find(|m| m.state == KeyMaterialState::Current)
    }

    pub(super) fn find(&self, id: &str) -> Option<&KeyMaterial> {
        self.list.iter().find(|m| m.id == id)
    }

    fn position(&self, id: &str) -> Option<usize> {
        self.list.iter().position(|m| m.id == id)
    }

    /// Whether every material permanently associated with the key (all but a
    /// PENDING_ROTATION one) is imported: the condition for the key to leave
    /// PendingImport. A key with no material yet is not usable.
    pub(super) fn all_associated_imported(&self) -> bool {
        let mut associated = self
            .list
            .iter()
            .filter(|m| m.state != KeyMaterialState::PendingRotation)
            .peekable();
        associated.peek().is_some() && associated.all(|m| m.import_state == ImportState::Imported)
    }

    /// ImportKeyMaterial on a key with EXTERNAL origin; answers the id of the
    /// material imported.
    ///
    /// The import type defaults to NEW_KEY_MATERIAL while the key has never
    /// had material and to EXISTING_KEY_MATERIAL after (ImportKeyMaterial,
    /// `ImportType`). NEW_KEY_MATERIAL into a key without material imports
    /// its first, CURRENT material.
    pub(super) fn import(&mut self, key_id: &str, import: Import) -> Result<String, KmsError> {
        let import_type = import.import_type.unwrap_or(if self.list.is_empty() {
            ImportType::New
        } else {
            ImportType::Existing
        });
        match import_type {
            ImportType::New => self.import_new(key_id, import),
            ImportType::Existing => self.reimport(key_id, import),
        }
    }

    fn import_new(&mut self, key_id: &str, import: Import) -> Result<String, KmsError> {
        if import.key_material_id.is_some() {
            return Err(KmsError::validation(
                "KeyMaterialId cannot be specified with ImportType NEW_KEY_MATERIAL",
            ));
        }
        let material = import.material.unwrap_or_else(random_material);
        let id = material_id(key_id, &material);
        if self.position(&id).is_some() {
            return Err(KmsError::new(
                "IncorrectKeyMaterialException",
                format!(
                    "ImportType NEW_KEY_MATERIAL expects new key material, but key material \
                     {id} is already associated with the KMS key"
                ),
            ));
        }
        let state = if self.list.is_empty() {
            KeyMaterialState::Current
        } else if self
            .list
            .iter()
            .any(|m| m.state == KeyMaterialState::PendingRotation)
        {
            return Err(KmsError::new(
                "KMSInvalidStateException",
                "the KMS key already has key material in PENDING_ROTATION state: rotate \
                 (RotateKeyOnDemand) or delete it before importing other new key material",
            ));
        } else {
            KeyMaterialState::PendingRotation
        };
        self.list.push(KeyMaterial {
            id: id.clone(),
            state,
            import_state: ImportState::Imported,
            description: import.description,
            expiration: Some(import.expiration),
            rotation_date: None,
            material,
        });
        Ok(id)
    }

    /// EXISTING_KEY_MATERIAL: the same material again (after a delete or an
    /// expiry, or to change its expiration or description).
    fn reimport(&mut self, key_id: &str, import: Import) -> Result<String, KmsError> {
        let index = match import.material {
            Some(material) => {
                let id = material_id(key_id, &material);
                if let Some(given) = &import.key_material_id
                    && *given != id
                {
                    return Err(KmsError::new(
                        "IncorrectKeyMaterialException",
                        format!(
                            "the key material imported is not key material {given} (its \
                             identifier is {id})"
                        ),
                    ));
                }
                self.position(&id).ok_or_else(|| not_associated(&id))?
            }
            // The benchmarks' mode cannot compare materials: it takes the id
            // given, else the first one missing, else the current one.
            None => match &import.key_material_id {
                Some(given) => self.position(given).ok_or_else(|| not_associated(given))?,
                None => self
                    .list
                    .iter()
                    .position(|m| m.import_state == ImportState::PendingImport)
                    .or_else(|| {
                        self.list
                            .iter()
                            .position(|m| m.state == KeyMaterialState::Current)
                    })
                    .ok_or_else(|| not_associated("(none)"))?,
            },
        };
        let Some(entry) = self.list.get_mut(index) else {
            return Err(not_associated("(none)"));
        };
        entry.import_state = ImportState::Imported;
        entry.expiration = Some(import.expiration);
        if import.description.is_some() {
            entry.description = import.description;
        }
        Ok(entry.id.clone())
    }

    /// RotateKeyOnDemand once the key's state allows it: the PENDING_ROTATION
    /// material (EXTERNAL origin) or a fresh one (AWS_KMS) becomes CURRENT.
    pub(super) fn rotate(
        &mut self,
        key_id: &str,
        external: bool,
        now: f64,
    ) -> Result<String, KmsError> {
        if self.on_demand_rotations >= MAX_ON_DEMAND_ROTATIONS {
            return Err(KmsError::new(
                "LimitExceededException",
                format!("the KMS key has used its {MAX_ON_DEMAND_ROTATIONS} on-demand rotations"),
            ));
        }
        let pending = self
            .list
            .iter()
            .position(|m| m.state == KeyMaterialState::PendingRotation);
        let next = match pending {
            Some(index) => index,
            None if external => {
                return Err(KmsError::new(
                    "KMSInvalidStateException",
                    "the KMS key has no key material in PENDING_ROTATION state: import new key \
                     material (ImportType NEW_KEY_MATERIAL) before rotating",
                ));
            }
            None => {
                self.list
                    .push(Self::generate(key_id, KeyMaterialState::PendingRotation));
                self.list.len() - 1
            }
        };
        for material in &mut self.list {
            if material.state == KeyMaterialState::Current {
                material.state = KeyMaterialState::NonCurrent;
            }
        }
        let Some(entry) = self.list.get_mut(next) else {
            return Err(KmsError::internal("the pending key material vanished"));
        };
        entry.state = KeyMaterialState::Current;
        entry.rotation_date = Some(now);
        self.on_demand_rotations += 1;
        Ok(entry.id.clone())
    }

    /// DeleteImportedKeyMaterial: `id`, or the current material. A permanently
    /// associated material becomes PENDING_IMPORT (the key with it); a
    /// PENDING_ROTATION one is dropped, since it never was permanently
    /// associated ("You can delete this key material and import different key
    /// material in its place", RotationsListEntry). Answers the id deleted,
    /// `None` when the key has no material at all (no effect, as on a key in
    /// PendingImport).
    pub(super) fn delete(&mut self, id: Option<&str>) -> Result<Option<String>, KmsError> {
        let index = match id {
            Some(id) => self.position(id).ok_or_else(|| {
                KmsError::new(
                    "NotFoundException",
                    format!("key material {id} is not associated with the KMS key"),
                )
            })?,
            None => match self
                .list
                .iter()
                .position(|m| m.state == KeyMaterialState::Current)
            {
                Some(index) => index,
                None => return Ok(None),
            },
        };
        let Some(entry) = self.list.get_mut(index) else {
            return Ok(None);
        };
        if entry.state == KeyMaterialState::PendingRotation {
            let dropped = self.list.remove(index);
            return Ok(Some(dropped.id));
        }
        entry.import_state = ImportState::PendingImport;
        entry.expiration = None;
        Ok(Some(entry.id.clone()))
    }

    /// KMS deletes imported material when its ValidTo passes; the peer does
    /// it lazily, whenever the key is looked at.
    pub(super) fn expire(&mut self, now: f64) {
        let expired = |m: &KeyMaterial| {
            m.import_state == ImportState::Imported
                && m.expiration
                    .and_then(Expiration::valid_to)
                    .is_some_and(|valid_to| valid_to <= now)
        };
        self.list
            .retain(|m| !(m.state == KeyMaterialState::PendingRotation && expired(m)));
        for material in &mut self.list {
            if expired(material) {
                material.import_state = ImportState::PendingImport;
                material.expiration = None;
            }
        }
    }
}

fn not_associated(id: &str) -> KmsError {
    KmsError::new(
        "IncorrectKeyMaterialException",
        format!(
            "ImportType EXISTING_KEY_MATERIAL expects key material already associated with the \
             KMS key; key material {id} is not"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0b9c0a55-3f0e-4a43-9c2e-6a1c1f8f2b11";

    fn import(material: [u8; 32], import_type: Option<ImportType>) -> Import {
        Import {
            material: Some(material),
            import_type,
            key_material_id: None,
            description: None,
            expiration: Expiration::DoesNotExpire,
        }
    }

    #[test]
    fn the_material_id_is_sha256_of_the_key_id_and_the_material_in_lowercase_hex() {
        let id = material_id(KEY, &[7u8; 32]);
        assert_eq!(id.len(), 64);
        assert!(
            id.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_eq!(id, material_id(KEY, &[7u8; 32]));
        assert_ne!(id, material_id("another-key", &[7u8; 32]));
    }

    #[test]
    fn a_new_material_waits_for_the_rotation_and_is_dropped_if_deleted_before() {
        let mut materials = Materials::default();
        let first = materials.import(KEY, import([1; 32], None)).unwrap();
        let second = materials
            .import(KEY, import([2; 32], Some(ImportType::New)))
            .unwrap();
        assert_eq!(materials.current().unwrap().id, first);
        assert!(materials.all_associated_imported());
        assert_eq!(
            materials.delete(Some(&second)).unwrap(),
            Some(second.clone())
        );
        assert!(materials.find(&second).is_none());
        assert!(materials.all_associated_imported());
        let err = materials.rotate(KEY, true, 1.0).unwrap_err();
        assert_eq!(err.code, "KMSInvalidStateException");
    }

    #[test]
    fn deleting_a_non_current_material_makes_the_key_wait_for_it() {
        let mut materials = Materials::default();
        let first = materials.import(KEY, import([1; 32], None)).unwrap();
        materials
            .import(KEY, import([2; 32], Some(ImportType::New)))
            .unwrap();
        materials.rotate(KEY, true, 1.0).unwrap();
        materials.delete(Some(&first)).unwrap();
        assert!(!materials.all_associated_imported());
        assert_eq!(materials.import(KEY, import([1; 32], None)).unwrap(), first);
        assert!(materials.all_associated_imported());
    }

    #[test]
    fn expired_material_is_pending_import_and_an_expired_pending_one_is_gone() {
        let mut materials = Materials::default();
        let mut expiring = import([1; 32], None);
        expiring.expiration = Expiration::Expires { valid_to: 10.0 };
        let first = materials.import(KEY, expiring).unwrap();
        let mut pending = import([2; 32], Some(ImportType::New));
        pending.expiration = Expiration::Expires { valid_to: 10.0 };
        let second = materials.import(KEY, pending).unwrap();
        materials.expire(9.0);
        assert!(materials.find(&second).is_some());
        materials.expire(10.0);
        assert!(materials.find(&second).is_none());
        let first = materials.find(&first).unwrap();
        assert_eq!(first.import_state, ImportState::PendingImport);
        assert_eq!(first.expiration, None);
    }

    #[test]
    fn the_benchmarks_mode_reimports_the_material_that_is_missing() {
        let mut materials = Materials::default();
        let blind = |import_type| Import {
            material: None,
            import_type,
            key_material_id: None,
            description: None,
            expiration: Expiration::DoesNotExpire,
        };
        let first = materials.import(KEY, blind(None)).unwrap();
        materials.delete(None).unwrap();
        assert_eq!(materials.import(KEY, blind(None)).unwrap(), first);
        assert!(materials.all_associated_imported());
    }
}
