//! Key groups: the unit users configure, rotate and bind to an AWS alias.

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::cloud::aws::{Alias, Description, KeyPolicy, KmsKeyId, Region};
use crate::credential::CloudService;
use crate::error::InvalidInput;
use crate::interval::Interval;
use crate::names::{CredentialName, GroupName};

/// Longest free-text info field (owner, notes).
pub const MAX_INFO_CHARS: usize = 4096;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyGroup {
    pub id: uuid::Uuid,
    pub name: GroupName,
    pub service: CloudService,
    pub credential: CredentialName,
    pub spec: KeySpec,
    /// `Some(every)` when "Rotate Key" is on.
    pub rotate_every: Option<Interval>,
    /// "Keep key valid for": keys expire this long after creation.
    pub valid_for: Option<Interval>,
    pub info: GroupInfo,
    pub aws: AwsProperties,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// When the scheduler will next rotate the group (None when rotation is off).
    pub next_rotation_at: Option<Timestamp>,
}

/// Key type, length and usage. Only AES-256 for encrypt and decrypt exists for
/// AWS, and the parser says so; the type is here so the refusal has a home.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct KeySpec;

impl KeySpec {
    pub const KEY_TYPE: &'static str = "AES";
    pub const ALGORITHM: &'static str = "AES-256";
    pub const USAGE: &'static str = "encrypt_decrypt";

    pub fn parse(
        key_type: Option<&str>,
        key_length: Option<u32>,
        usage: Option<&str>,
    ) -> Result<Self, InvalidInput> {
        if let Some(t) = key_type {
            match t.to_ascii_lowercase().as_str() {
                "aes" | "symmetric" => {}
                "rsa" | "ec" | "ecc" | "asymmetric" => {
                    return Err(InvalidInput::new(
                        "key_type",
                        "asymmetric keys are not supported for AWS: key groups for AWS KMS import hold symmetric AES keys; use key type AES",
                    ));
                }
                _ => return Err(InvalidInput::new("key_type", "unknown key type: use AES")),
            }
        }
        if let Some(len) = key_length
            && len != 256
        {
            return Err(InvalidInput::new(
                "key_length",
                format!(
                    "AES-{len} is not supported for AWS: AWS KMS imports only 256-bit symmetric key material; use 256"
                ),
            ));
        }
        if let Some(u) = usage {
            let u = u.to_ascii_lowercase().replace(['+', '-', ' '], "_");
            if u != "encrypt_decrypt" {
                return Err(InvalidInput::new(
                    "usage",
                    "AWS KMS symmetric keys with imported material are used to encrypt and decrypt: use usage encrypt_decrypt",
                ));
            }
        }
        Ok(Self)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GroupInfo {
    #[serde(default)]
    pub owner: String,
    #[serde(default)]
    pub notes: String,
}

impl GroupInfo {
    pub fn parse(owner: &str, notes: &str) -> Result<Self, InvalidInput> {
        for (field, value) in [("owner", owner), ("notes", notes)] {
            if value.chars().count() > MAX_INFO_CHARS {
                return Err(InvalidInput::new(
                    field,
                    format!("{field} is longer than {MAX_INFO_CHARS} characters"),
                ));
            }
            if value
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t')
            {
                return Err(InvalidInput::new(
                    field,
                    format!("{field} contains control characters: remove them"),
                ));
            }
        }
        Ok(Self {
            owner: owner.to_owned(),
            notes: notes.to_owned(),
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AwsProperties {
    pub alias: Alias,
    pub description: Description,
    pub region: Region,
    /// The KMS key that currently holds the group's newest material, or the
    /// placeholder the user created that awaits its first import.
    pub active_key_id: Option<KmsKeyId>,
    pub policy: Option<KeyPolicy>,
    pub disable_after_rotate: bool,
    pub rotation: RotationStrategy,
    /// What a `new_material` rotation does once the KMS key has rotated as
    /// often as AWS allows.
    pub at_rotation_limit: AtRotationLimit,
    /// Drift self-heal: a drift check repairs what is safe to repair
    /// ([`crate::drift::Repair::is_safe`]) at once, and audits it.
    pub self_heal: bool,
}

/// How a rotation gives the group's alias new material in AWS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RotationStrategy {
    /// A new KMS key per rotation, the alias moved to it (the reference
    /// appliance's way): services that pin the key's ARN must be moved too.
    #[default]
    NewKey,
    /// One KMS key; each rotation imports new material into it
    /// (`ImportType=NEW_KEY_MATERIAL`) and makes it current with
    /// `RotateKeyOnDemand`. The ARN never changes, and ciphertexts under
    /// earlier material still decrypt.
    NewMaterial,
}

impl RotationStrategy {
    pub const ALL: [Self; 2] = [Self::NewKey, Self::NewMaterial];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::NewKey => "new_key",
            Self::NewMaterial => "new_material",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == raw.trim())
            .ok_or_else(|| {
                InvalidInput::new(
                    "rotation_strategy",
                    "rotation strategy must be new_key (a new KMS key per rotation, the alias moved) or new_material (new material rotated into the same KMS key)",
                )
            })
    }
}

/// What a `new_material` group does when its KMS key has used up AWS's
/// on-demand rotations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AtRotationLimit {
    /// The next rotation creates a new KMS key and moves the alias to it,
    /// then rotates that one in place: the group rotates for years.
    #[default]
    NewKey,
    /// The rotation is refused with the reason: an officer decides.
    Refuse,
}

impl AtRotationLimit {
    pub const ALL: [Self; 2] = [Self::NewKey, Self::Refuse];

    /// What happens once the limit is reached, for warnings ahead of it.
    pub fn what_follows(self) -> &'static str {
        match self {
            Self::NewKey => "the next rotation creates a new KMS key and moves the alias to it",
            Self::Refuse => {
                "rotations are refused until the group's rotation strategy or at_rotation_limit changes"
            }
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::NewKey => "new_key",
            Self::Refuse => "refuse",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == raw.trim())
            .ok_or_else(|| {
                InvalidInput::new(
                    "at_rotation_limit",
                    "at_rotation_limit must be new_key (start a new KMS key and move the alias) or refuse",
                )
            })
    }
}

/// Everything needed to create a group, already parsed.
#[derive(Clone, Debug)]
pub struct NewGroup {
    pub name: GroupName,
    pub credential: CredentialName,
    pub rotate_every: Option<Interval>,
    pub valid_for: Option<Interval>,
    pub info: GroupInfo,
    pub aws: AwsProperties,
}

/// A change of a group's owner, notes or both. Each part is applied to the
/// info as it is when the change is written, never completed at the edge
/// from an earlier read (which a parallel change of the other part would
/// then lose).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InfoChange {
    owner: Option<String>,
    notes: Option<String>,
}

impl InfoChange {
    /// `None` when neither part is given; the parts given are checked as
    /// [`GroupInfo::parse`] checks them.
    pub fn parse(owner: Option<&str>, notes: Option<&str>) -> Result<Option<Self>, InvalidInput> {
        if owner.is_none() && notes.is_none() {
            return Ok(None);
        }
        GroupInfo::parse(owner.unwrap_or_default(), notes.unwrap_or_default())?;
        Ok(Some(Self {
            owner: owner.map(str::to_owned),
            notes: notes.map(str::to_owned),
        }))
    }

    fn apply(self, info: &mut GroupInfo) {
        if let Some(owner) = self.owner {
            info.owner = owner;
        }
        if let Some(notes) = self.notes {
            info.notes = notes;
        }
    }
}

/// A change to a group; `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct GroupChange {
    pub credential: Option<CredentialName>,
    /// `Some(None)` turns rotation off.
    pub rotate_every: Option<Option<Interval>>,
    pub valid_for: Option<Option<Interval>>,
    pub info: Option<InfoChange>,
    pub alias: Option<Alias>,
    pub description: Option<Description>,
    pub region: Option<Region>,
    pub active_key_id: Option<Option<KmsKeyId>>,
    pub policy: Option<Option<KeyPolicy>>,
    pub disable_after_rotate: Option<bool>,
    pub rotation: Option<RotationStrategy>,
    pub at_rotation_limit: Option<AtRotationLimit>,
    pub self_heal: Option<bool>,
}

/// The fields of a group that decide where its key material goes (the
/// credential and its account, the region, the KMS key it is imported into)
/// or who may use the key in AWS (alias, policy, whether old keys stay
/// enabled, whether a rotation makes a new KMS key or rotates the one
/// services already use, whether drift checks write to AWS on their own).
/// Changing any of them needs dual control; the others
/// (description, owner and notes, rotation interval, validity) do not.
pub const CUSTODY_FIELDS: &[&str] = &[
    "credential",
    "region",
    "alias",
    "active_key_id",
    "policy",
    "disable_after_rotate",
    "rotation_strategy",
    "at_rotation_limit",
    "self_heal",
];

impl GroupChange {
    /// The custody fields ([`CUSTODY_FIELDS`]) this change names. A field
    /// named counts even when its value is the group's already: the check
    /// is made before the group is read, so a refusal tells nothing about
    /// it, and a stale value sent back cannot undo what two officers set.
    pub fn custody_fields(&self) -> Vec<&'static str> {
        [
            ("credential", self.credential.is_some()),
            ("region", self.region.is_some()),
            ("alias", self.alias.is_some()),
            ("active_key_id", self.active_key_id.is_some()),
            ("policy", self.policy.is_some()),
            ("disable_after_rotate", self.disable_after_rotate.is_some()),
            ("rotation_strategy", self.rotation.is_some()),
            ("at_rotation_limit", self.at_rotation_limit.is_some()),
            ("self_heal", self.self_heal.is_some()),
        ]
        .into_iter()
        .filter_map(|(field, named)| named.then_some(field))
        .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.credential.is_none()
            && self.rotate_every.is_none()
            && self.valid_for.is_none()
            && self.info.is_none()
            && self.alias.is_none()
            && self.description.is_none()
            && self.region.is_none()
            && self.active_key_id.is_none()
            && self.policy.is_none()
            && self.disable_after_rotate.is_none()
            && self.rotation.is_none()
            && self.at_rotation_limit.is_none()
            && self.self_heal.is_none()
    }

    /// Applies the change, recomputing the next rotation when the interval changed.
    pub fn apply(self, group: &mut KeyGroup, now: Timestamp) {
        if let Some(c) = self.credential {
            group.credential = c;
        }
        if let Some(r) = self.rotate_every {
            if r != group.rotate_every {
                group.next_rotation_at =
                    r.map(|every| crate::schedule::next_rotation(now, every, None, None));
            }
            group.rotate_every = r;
        }
        if let Some(v) = self.valid_for {
            group.valid_for = v;
        }
        if let Some(i) = self.info {
            i.apply(&mut group.info);
        }
        if let Some(a) = self.alias {
            group.aws.alias = a;
        }
        if let Some(d) = self.description {
            group.aws.description = d;
        }
        if let Some(r) = self.region {
            group.aws.region = r;
        }
        if let Some(k) = self.active_key_id {
            group.aws.active_key_id = k;
        }
        if let Some(p) = self.policy {
            group.aws.policy = p;
        }
        if let Some(d) = self.disable_after_rotate {
            group.aws.disable_after_rotate = d;
        }
        if let Some(r) = self.rotation {
            group.aws.rotation = r;
        }
        if let Some(l) = self.at_rotation_limit {
            group.aws.at_rotation_limit = l;
        }
        if let Some(h) = self.self_heal {
            group.aws.self_heal = h;
        }
        group.updated_at = now;
    }
}

impl KeyGroup {
    pub fn create(spec: NewGroup, now: Timestamp) -> Self {
        Self {
            id: uuid::Uuid::new_v4(),
            name: spec.name,
            service: CloudService::Aws,
            credential: spec.credential,
            spec: KeySpec,
            next_rotation_at: spec
                .rotate_every
                .map(|every| crate::schedule::next_rotation(now, every, None, None)),
            rotate_every: spec.rotate_every,
            valid_for: spec.valid_for,
            info: spec.info,
            aws: spec.aws,
            created_at: now,
            updated_at: now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_aes_256_encrypt_decrypt_is_accepted_and_refusals_say_why() {
        assert!(KeySpec::parse(Some("AES"), Some(256), Some("encrypt+decrypt")).is_ok());
        assert!(KeySpec::parse(None, None, None).is_ok());
        assert!(
            KeySpec::parse(Some("RSA"), None, None)
                .unwrap_err()
                .message
                .contains("asymmetric")
        );
        assert!(
            KeySpec::parse(None, Some(128), None)
                .unwrap_err()
                .message
                .contains("256-bit")
        );
        assert!(KeySpec::parse(None, None, Some("sign_verify")).is_err());
    }

    fn group(t0: Timestamp) -> KeyGroup {
        KeyGroup::create(
            NewGroup {
                name: GroupName::parse("g").unwrap(),
                credential: CredentialName::parse("c").unwrap(),
                rotate_every: Some(Interval::parse("30d").unwrap()),
                valid_for: None,
                info: GroupInfo::default(),
                aws: AwsProperties {
                    alias: Alias::parse("alias/g").unwrap(),
                    description: Description::default(),
                    region: Region::parse("eu-west-1").unwrap(),
                    active_key_id: None,
                    policy: None,
                    disable_after_rotate: false,
                    rotation: RotationStrategy::NewKey,
                    at_rotation_limit: AtRotationLimit::NewKey,
                    self_heal: false,
                },
            },
            t0,
        )
    }

    #[test]
    fn custody_fields_are_those_that_change_where_material_goes_or_who_uses_it() {
        let g = group(chrono::DateTime::UNIX_EPOCH);
        let harmless = GroupChange {
            rotate_every: Some(None),
            valid_for: Some(Some(Interval::parse("1y").unwrap())),
            info: InfoChange::parse(Some("me"), Some("notes")).unwrap(),
            description: Some(Description::parse("new").unwrap()),
            ..Default::default()
        };
        assert!(harmless.custody_fields().is_empty());
        let same_again = GroupChange {
            credential: Some(g.credential.clone()),
            ..Default::default()
        };
        assert_eq!(same_again.custody_fields(), ["credential"]);
        let sensitive = GroupChange {
            credential: Some(CredentialName::parse("other").unwrap()),
            region: Some(Region::parse("us-east-1").unwrap()),
            alias: Some(Alias::parse("alias/other").unwrap()),
            active_key_id: Some(Some(
                KmsKeyId::parse("0b0e2b3c-1d2e-4f5a-8b9c-0d1e2f3a4b5c").unwrap(),
            )),
            policy: Some(Some(KeyPolicy::parse(r#"{"Statement":{}}"#).unwrap())),
            disable_after_rotate: Some(true),
            rotation: Some(RotationStrategy::NewMaterial),
            at_rotation_limit: Some(AtRotationLimit::Refuse),
            self_heal: Some(true),
            ..Default::default()
        };
        assert_eq!(sensitive.custody_fields(), CUSTODY_FIELDS);
    }

    #[test]
    fn strategies_parse_from_their_names_and_refusals_list_the_choices() {
        for s in RotationStrategy::ALL {
            assert_eq!(RotationStrategy::parse(s.as_str()).unwrap(), s);
        }
        for l in AtRotationLimit::ALL {
            assert_eq!(AtRotationLimit::parse(l.as_str()).unwrap(), l);
        }
        let e = RotationStrategy::parse("in_place").unwrap_err();
        assert!(e.message.contains("new_key") && e.message.contains("new_material"));
        assert!(
            AtRotationLimit::parse("")
                .unwrap_err()
                .message
                .contains("refuse")
        );
    }

    #[test]
    fn changing_the_interval_recomputes_the_next_rotation() {
        let t0 = chrono::DateTime::UNIX_EPOCH;
        let mut g = group(t0);
        assert_eq!(g.next_rotation_at, Some(t0 + chrono::Duration::days(30)));
        let t1 = t0 + chrono::Duration::days(1);
        GroupChange {
            rotate_every: Some(Some(Interval::parse("1d").unwrap())),
            ..Default::default()
        }
        .apply(&mut g, t1);
        assert_eq!(g.next_rotation_at, Some(t1 + chrono::Duration::days(1)));
        GroupChange {
            rotate_every: Some(None),
            ..Default::default()
        }
        .apply(&mut g, t1);
        assert_eq!(g.next_rotation_at, None);
    }
}
