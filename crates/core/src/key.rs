//! Keys: AES-256 key material held by the keystore, one version per rotation.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::clock::Timestamp;
use crate::cloud::aws::{KeyMaterialId, KmsKeyId};
use crate::error::InvalidInput;
use crate::job::{JOB_TAG, Job, JobStatus, KEY_TAG};
use crate::names::GroupName;

/// Whether the keystore holds a key's material.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Material {
    Present,
    /// Deleted on the token, the token re-initialised, or held by another
    /// keystore: the key cannot be imported into KMS again.
    Missing,
    /// The keystore could not be asked (token absent, for instance).
    Unknown,
}

impl Material {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Present => "present",
            Self::Missing => "missing",
            Self::Unknown => "unknown",
        }
    }
}

/// Where a page of the key listing resumes: after the key of this version
/// of this group (keys are listed by group name, then version). Written
/// `GROUP:VERSION`, the `group` and `version` of the last key of a page;
/// group names cannot hold a `:`. Unlike a key's id, it stays valid when
/// that key is deleted in between.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyCursor {
    pub group: GroupName,
    pub version: u32,
}

impl KeyCursor {
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        let invalid = || {
            InvalidInput::new(
                "after",
                "after must be GROUP:VERSION, the group and version of the last key of the previous page, such as payments:3",
            )
        };
        let (group, version) = raw.rsplit_once(':').ok_or_else(invalid)?;
        Ok(Self {
            group: GroupName::parse(group).map_err(|_| invalid())?,
            version: version.parse().map_err(|_| invalid())?,
        })
    }

    /// The cursor that resumes after `key`.
    pub fn after(key: &Key) -> Self {
        Self {
            group: key.group.clone(),
            version: key.version,
        }
    }
}

impl fmt::Display for KeyCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.group, self.version)
    }
}

/// One page of the key listing, by group name then version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPage {
    /// Only this group's keys.
    pub group: Option<GroupName>,
    pub after: Option<KeyCursor>,
    pub limit: u32,
}

impl KeyPage {
    /// Most keys one page may hold.
    pub const MAX_LIMIT: u32 = 1000;

    /// Every key of one group: a group holds one key per rotation, so the
    /// whole of it is one page.
    pub fn whole_group(group: &GroupName) -> Self {
        Self {
            group: Some(group.clone()),
            after: None,
            limit: u32::MAX,
        }
    }
}

/// A key as listed: with whether its material is in the keystore.
#[derive(Clone, Debug)]
pub struct KeyListing {
    pub key: Key,
    pub material: Material,
    /// Why the key is in its state, when the state alone would leave an
    /// officer guessing (a key that never reached KMS: see [`Key::state_note`]).
    pub note: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    pub id: uuid::Uuid,
    pub group: GroupName,
    /// 1 for the group's first rotation, then one more each time.
    pub version: u32,
    /// The KMS key holding this material; the key's name once known.
    pub kms_key_id: Option<KmsKeyId>,
    pub check_digits: CheckDigits,
    pub valid_from: Timestamp,
    pub valid_to: Option<Timestamp>,
    /// KMS key state as last seen by keyhold (the KMS key's, which every
    /// material it holds shares).
    pub state: KeyState,
    /// AWS's name for this key's material inside its KMS key, once an import
    /// has answered it (keys imported by earlier releases learn it at their
    /// next import).
    pub kms_material_id: Option<KeyMaterialId>,
    /// Whether KMS encrypts with this material, only decrypts with it, or
    /// holds it awaiting `RotateKeyOnDemand`.
    pub material_state: MaterialState,
    /// Imported as new material into a KMS key that already held an earlier
    /// version (in-place rotation): it shares that KMS key's id, so its name
    /// adds its version ([`Key::display_name`]).
    pub rotated_in: bool,
    /// What the keystore needs to find the material again (a sealed blob for
    /// the software keystore, an object label for PKCS#11). Opaque here.
    pub keystore_handle: Vec<u8>,
    pub created_at: Timestamp,
}

/// How the name of a key without a KMS key ends ([`Key::display_name`]).
const NO_KMS_KEY: &str = " (no KMS key)";

impl Key {
    /// The "Name" column: the KMS key id; before AWS knows the key, its
    /// group and version, such as `ig-demo v3 (no KMS key)`, which an
    /// officer can read (keyhold's own id is in the listing's `id`).
    /// [`Key::parse_local_name`] reads it back, so actions that address a
    /// key by the name listed keep working.
    /// A version rotated into an existing KMS key is `KMS-KEY-ID vN`: the
    /// KMS key id alone names the key first imported into it.
    pub fn display_name(&self) -> String {
        match &self.kms_key_id {
            Some(id) if self.rotated_in => format!("{id} v{}", self.version),
            Some(id) => id.to_string(),
            None => format!("{} v{}{NO_KMS_KEY}", self.group, self.version),
        }
    }

    /// The KMS key id and version a [`Key::display_name`] of a rotated-in
    /// version names.
    pub fn parse_rotated_in_name(raw: &str) -> Option<(KmsKeyId, u32)> {
        let (kms, version) = raw.trim().rsplit_once(" v")?;
        let version = version.parse::<u32>().ok().filter(|v| *v > 0)?;
        Some((KmsKeyId::parse(kms).ok()?, version))
    }

    /// The group and version a [`Key::display_name`] of a key without a
    /// KMS key names (the ` (no KMS key)` ending may be left off).
    pub fn parse_local_name(raw: &str) -> Option<(GroupName, u32)> {
        let raw = raw.trim();
        let raw = raw.strip_suffix(NO_KMS_KEY).unwrap_or(raw);
        let (group, version) = raw.rsplit_once(" v")?;
        let version = version.parse::<u32>().ok().filter(|v| *v > 0)?;
        Some((GroupName::parse(group).ok()?, version))
    }

    /// What an officer needs to know about a key that has no KMS key (its
    /// state alone, `pre_active`, does not say why or what to do), from the
    /// group's latest rotation: the job that generated it when it is that
    /// one. `None` for a key in KMS.
    pub fn state_note(&self, latest_rotation: Option<&Job>) -> Option<String> {
        if self.kms_key_id.is_some() {
            return None;
        }
        let state = self.state.as_str();
        let job = latest_rotation.filter(|j| j.progress.key_id == Some(self.id));
        let Some(job) = job else {
            return Some(format!(
                "{state}: its rotation did not finish and no KMS key is recorded for it. \
                 If AWS holds no KMS key tagged {KEY_TAG}={id}, delete this key (dual control); \
                 if it does, that KMS key never received this material",
                id = self.id
            ));
        };
        let id = job.id;
        Some(match job.status {
            JobStatus::Queued | JobStatus::Running => format!(
                "{state}: its rotation job {id} is {} and has not created its KMS key yet",
                job.status.as_str()
            ),
            JobStatus::Failed if job.progress.create_key_sent => format!(
                "{state}: its rotation job {id} failed after CreateKey was sent: \
                 retry the job (`keyhold job retry {id}`), which takes the KMS key tagged \
                 {JOB_TAG}={id} if AWS made one, or cancel it"
            ),
            JobStatus::Failed => format!(
                "{state}: its rotation job {id} failed before the key reached KMS: \
                 retry the job (`keyhold job retry {id}`), or cancel it (which removes this key)"
            ),
            JobStatus::Cancelled if job.progress.create_key_sent => format!(
                "{state}: its rotation job {id} was cancelled after CreateKey was sent, \
                 so a KMS key tagged {JOB_TAG}={id} may exist in AWS without this material. \
                 Check AWS (schedule that KMS key for deletion if it exists), then delete this key (dual control)"
            ),
            JobStatus::Cancelled | JobStatus::Succeeded => format!(
                "{state}: its rotation job {id} was {} before any KMS key was created: \
                 delete this key (dual control)",
                job.status.as_str()
            ),
        })
    }

    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.valid_to.is_some_and(|end| end <= now)
    }
}

/// A material's place in its KMS key (AWS's `KeyMaterialState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaterialState {
    /// KMS encrypts with it (and decrypts what it encrypted).
    #[default]
    Current,
    /// Rotated out: KMS still decrypts with it, never encrypts.
    NonCurrent,
    /// Imported as new material, waiting for `RotateKeyOnDemand`.
    PendingRotation,
}

impl MaterialState {
    pub const ALL: [Self; 3] = [Self::Current, Self::NonCurrent, Self::PendingRotation];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Current => "current",
            Self::NonCurrent => "non_current",
            Self::PendingRotation => "pending_rotation",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

/// The state of a key's KMS key, as keyhold last saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    /// Generated in the keystore, not yet imported.
    PreActive,
    PendingImport,
    Enabled,
    Disabled,
    PendingDeletion,
    /// The KMS key is gone from AWS.
    Deleted,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PreActive => "pre_active",
            Self::PendingImport => "pending_import",
            Self::Enabled => "enabled",
            Self::Disabled => "disabled",
            Self::PendingDeletion => "pending_deletion",
            Self::Deleted => "deleted",
        }
    }
    pub fn parse(raw: &str) -> Option<Self> {
        [
            Self::PreActive,
            Self::PendingImport,
            Self::Enabled,
            Self::Disabled,
            Self::PendingDeletion,
            Self::Deleted,
        ]
        .into_iter()
        .find(|s| s.as_str() == raw)
    }
}

/// Check digits: the first four hex digits, upper case, of AES-ECB(key, zero block).
/// Officers compare them across systems to see that two keys are the same.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CheckDigits([u8; 4]);

impl CheckDigits {
    /// From the AES-ECB encryption of a zero block under the key.
    pub fn from_encrypted_zero_block(block: &[u8; 16]) -> Self {
        let hex = hex::encode_upper(&block[..2]);
        let mut out = [0u8; 4];
        out.copy_from_slice(hex.as_bytes());
        Self(out)
    }

    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        if raw.len() == 4 && raw.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut out = [0u8; 4];
            out.copy_from_slice(raw.to_ascii_uppercase().as_bytes());
            Ok(Self(out))
        } else {
            Err(InvalidInput::new(
                "check_digits",
                "check digits are four hex digits",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        // Constructed only from ASCII hex digits.
        std::str::from_utf8(&self.0).unwrap_or("????")
    }
}

impl fmt::Display for CheckDigits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
impl fmt::Debug for CheckDigits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CheckDigits({})", self.as_str())
    }
}
impl TryFrom<String> for CheckDigits {
    type Error = InvalidInput;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}
impl From<CheckDigits> for String {
    fn from(c: CheckDigits) -> String {
        c.as_str().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_digits_are_the_first_two_bytes_in_upper_hex() {
        let block = [0x57, 0xcf, 0x01, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            CheckDigits::from_encrypted_zero_block(&block).as_str(),
            "57CF"
        );
        assert_eq!(CheckDigits::parse("57cf").unwrap().as_str(), "57CF");
        assert!(CheckDigits::parse("57CG").is_err());
    }

    #[test]
    fn a_key_without_a_kms_key_is_named_by_group_and_version_and_read_back() {
        let mut key = Key {
            id: uuid::Uuid::new_v4(),
            group: GroupName::parse("ig-demo").unwrap(),
            version: 3,
            kms_key_id: None,
            check_digits: CheckDigits::parse("57CF").unwrap(),
            valid_from: chrono::DateTime::from_timestamp(0, 0).unwrap(),
            valid_to: None,
            state: KeyState::PreActive,
            kms_material_id: None,
            material_state: MaterialState::Current,
            rotated_in: false,
            keystore_handle: Vec::new(),
            created_at: chrono::DateTime::from_timestamp(0, 0).unwrap(),
        };
        assert_eq!(key.display_name(), "ig-demo v3 (no KMS key)");
        let parsed = Key::parse_local_name(&key.display_name()).unwrap();
        assert_eq!((parsed.0.as_str(), parsed.1), ("ig-demo", 3));
        assert_eq!(
            Key::parse_local_name("ig-demo v3").map(|(g, v)| (g.to_string(), v)),
            Some(("ig-demo".to_owned(), 3))
        );
        for not_one in [
            "1234abcd-12ab-34cd-56ef-1234567890ab",
            "ig-demo v0",
            "ig-demo vx",
            "ig demo v3",
            " v3",
            "ig-demo",
        ] {
            assert_eq!(Key::parse_local_name(not_one), None, "{not_one}");
        }
        // Without a rotation to name, the note still says what to check.
        let note = key.state_note(None).unwrap();
        assert!(
            note.starts_with("pre_active: its rotation did not finish"),
            "{note}"
        );
        assert!(
            note.contains(&format!("keyhold:key-id={}", key.id)),
            "{note}"
        );
        key.kms_key_id = Some(KmsKeyId::parse("1234abcd-12ab-34cd-56ef-1234567890ab").unwrap());
        assert_eq!(key.display_name(), "1234abcd-12ab-34cd-56ef-1234567890ab");
        assert_eq!(key.state_note(None), None);
        // A version rotated into that KMS key adds its version, and reads back.
        key.rotated_in = true;
        assert_eq!(
            key.display_name(),
            "1234abcd-12ab-34cd-56ef-1234567890ab v3"
        );
        assert_eq!(
            Key::parse_rotated_in_name(&key.display_name()),
            key.kms_key_id.clone().map(|k| (k, 3))
        );
        for not_one in [
            "ig-demo v3",
            "1234abcd-12ab-34cd-56ef-1234567890ab",
            "1234abcd-12ab-34cd-56ef-1234567890ab v0",
        ] {
            assert_eq!(Key::parse_rotated_in_name(not_one), None, "{not_one}");
        }
    }

    #[test]
    fn material_states_round_trip() {
        for s in MaterialState::ALL {
            assert_eq!(MaterialState::parse(s.as_str()), Some(s));
        }
        assert_eq!(MaterialState::parse("CURRENT"), None);
    }

    #[test]
    fn key_cursors_round_trip_and_refuse_what_is_not_one() {
        let cursor = KeyCursor::parse("payments-eu:12").unwrap();
        assert_eq!(cursor.group.as_str(), "payments-eu");
        assert_eq!(cursor.version, 12);
        assert_eq!(cursor.to_string(), "payments-eu:12");
        for bad in [
            "",
            "payments",
            ":3",
            "payments:",
            "payments:x",
            "pay ments:1",
            "payments:-1",
        ] {
            let error = KeyCursor::parse(bad).unwrap_err();
            assert_eq!(error.field, "after", "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_cursor_written_parses_back(group in "[a-z0-9][a-z0-9._-]{0,40}", version in proptest::prelude::any::<u32>()) {
            let cursor = KeyCursor { group: GroupName::parse(&group).unwrap(), version };
            proptest::prop_assert_eq!(KeyCursor::parse(&cursor.to_string()).unwrap(), cursor);
        }
    }
}
