//! Drift: where AWS no longer holds what keyhold's record says, and the
//! actions that put it back.
//!
//! Rules:
//! - A check reads; it never writes to AWS. What it read ([`Observed`]) is
//!   compared with keyhold's record by [`detect`], a pure function, so every
//!   kind of drift is tested without a cloud.
//! - A finding is known by its group, kind and subject (a KMS key id, a
//!   version's material, an alias): seen again, it keeps its id and first
//!   seen time ([`merge`]); no longer seen, it is cleared, not deleted, so
//!   the record of what happened stays.
//! - A finding's [`Repair`] is the one AWS call that brings AWS back to the
//!   record. Only repairs that restore what keyhold put there and lose
//!   nothing are [`Repair::is_safe`]: self-heal runs those alone. Enabling a
//!   key someone disabled, cancelling a deletion someone scheduled, or a
//!   key keyhold does not know always wait for officers.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::clock::{Timestamp, message_time};
use crate::cloud::aws::{Alias, KeyPolicy, KmsKeyId};
use crate::cloud::{CloudKeyInfo, CloudMaterial};
use crate::group::KeyGroup;
use crate::job::{GROUP_TAG, KEY_TAG};
use crate::key::{Key, KeyState};
use crate::names::GroupName;

/// What kind of difference a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftKind {
    /// The KMS key is gone from AWS (deleted, or this credential cannot see it).
    KeyMissing,
    /// Someone scheduled the KMS key for deletion.
    PendingDeletion,
    /// Enabled in AWS where keyhold records it disabled, or the reverse.
    StateDiffers,
    /// The imported material is gone (deleted, or expired): the KMS key is
    /// pending import.
    MaterialDeleted,
    /// The material expires within the expiry window and no newer version
    /// takes over.
    MaterialExpiring,
    /// The group's alias does not exist.
    AliasMissing,
    /// The group's alias points at another KMS key.
    AliasElsewhere,
    /// The KMS key's policy is not the group's.
    PolicyDiffers,
    /// Tags keyhold put on the KMS key are missing or changed.
    TagsMissing,
    /// A KMS key tagged with this group that keyhold does not know.
    UnknownKey,
}

impl DriftKind {
    pub const ALL: [Self; 10] = [
        Self::KeyMissing,
        Self::PendingDeletion,
        Self::StateDiffers,
        Self::MaterialDeleted,
        Self::MaterialExpiring,
        Self::AliasMissing,
        Self::AliasElsewhere,
        Self::PolicyDiffers,
        Self::TagsMissing,
        Self::UnknownKey,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::KeyMissing => "key_missing",
            Self::PendingDeletion => "pending_deletion",
            Self::StateDiffers => "state_differs",
            Self::MaterialDeleted => "material_deleted",
            Self::MaterialExpiring => "material_expiring",
            Self::AliasMissing => "alias_missing",
            Self::AliasElsewhere => "alias_elsewhere",
            Self::PolicyDiffers => "policy_differs",
            Self::TagsMissing => "tags_missing",
            Self::UnknownKey => "unknown_key",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == raw)
    }

    /// A few words for lists and badges.
    pub fn title(self) -> &'static str {
        match self {
            Self::KeyMissing => "KMS key missing",
            Self::PendingDeletion => "KMS key pending deletion",
            Self::StateDiffers => "key state differs",
            Self::MaterialDeleted => "key material deleted",
            Self::MaterialExpiring => "key material expiring",
            Self::AliasMissing => "alias missing",
            Self::AliasElsewhere => "alias on another key",
            Self::PolicyDiffers => "key policy differs",
            Self::TagsMissing => "keyhold tags missing",
            Self::UnknownKey => "unknown keyhold-tagged key",
        }
    }
}

/// One AWS call that puts one finding right. Each is idempotent: run again
/// after an interruption, it finds AWS already as it should be.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Repair {
    /// Import the key's material again (exactly that material, when it
    /// shares its KMS key with other versions).
    ReimportMaterial {
        key_id: uuid::Uuid,
        kms_key_id: KmsKeyId,
    },
    /// Put the group's key policy on the KMS key.
    PutPolicy {
        kms_key_id: KmsKeyId,
    },
    /// Point the group's alias back at its active KMS key.
    PointAlias {
        alias: Alias,
        kms_key_id: KmsKeyId,
    },
    /// Put keyhold's tags back on the KMS key.
    TagKey {
        kms_key_id: KmsKeyId,
        tags: Vec<(String, String)>,
    },
    EnableKey {
        kms_key_id: KmsKeyId,
    },
    DisableKey {
        kms_key_id: KmsKeyId,
    },
    /// Cancel the scheduled deletion; AWS leaves the key disabled, so a key
    /// keyhold records enabled is enabled again (`enable`).
    CancelDeletion {
        kms_key_id: KmsKeyId,
        enable: bool,
    },
}

impl Repair {
    /// Whether self-heal may run it without officers: it restores what
    /// keyhold put in AWS and takes nothing away from anyone. Changing a
    /// key's state or its deletion is a decision someone may have made on
    /// purpose (an incident), so it waits for officers.
    pub fn is_safe(&self) -> bool {
        match self {
            Self::ReimportMaterial { .. }
            | Self::PutPolicy { .. }
            | Self::PointAlias { .. }
            | Self::TagKey { .. } => true,
            Self::EnableKey { .. } | Self::DisableKey { .. } | Self::CancelDeletion { .. } => false,
        }
    }

    /// Runs before the others: a key pending deletion or disabled takes no
    /// import, alias or policy until it is back.
    fn order(&self) -> u8 {
        match self {
            Self::CancelDeletion { .. } => 0,
            Self::EnableKey { .. } | Self::DisableKey { .. } => 1,
            Self::ReimportMaterial { .. } => 2,
            Self::PointAlias { .. } => 3,
            Self::PutPolicy { .. } => 4,
            Self::TagKey { .. } => 5,
        }
    }

    /// The KMS key it acts on.
    pub fn kms_key_id(&self) -> &KmsKeyId {
        match self {
            Self::ReimportMaterial { kms_key_id, .. }
            | Self::PutPolicy { kms_key_id }
            | Self::PointAlias { kms_key_id, .. }
            | Self::TagKey { kms_key_id, .. }
            | Self::EnableKey { kms_key_id }
            | Self::DisableKey { kms_key_id }
            | Self::CancelDeletion { kms_key_id, .. } => kms_key_id,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::ReimportMaterial { .. } => "reimport_material",
            Self::PutPolicy { .. } => "put_policy",
            Self::PointAlias { .. } => "point_alias",
            Self::TagKey { .. } => "tag_key",
            Self::EnableKey { .. } => "enable_key",
            Self::DisableKey { .. } => "disable_key",
            Self::CancelDeletion { .. } => "cancel_deletion",
        }
    }

    /// What it does, in words an officer approves.
    pub fn describe(&self) -> String {
        match self {
            Self::ReimportMaterial { kms_key_id, key_id } => {
                format!(
                    "import the key material of keyhold key {key_id} into KMS key {kms_key_id} again"
                )
            }
            Self::PutPolicy { kms_key_id } => {
                format!("put the key group's policy on KMS key {kms_key_id}")
            }
            Self::PointAlias { alias, kms_key_id } => {
                format!("point alias {alias} at KMS key {kms_key_id}")
            }
            Self::TagKey { kms_key_id, tags } => format!(
                "tag KMS key {kms_key_id} with {}",
                tags.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Self::EnableKey { kms_key_id } => format!("enable KMS key {kms_key_id}"),
            Self::DisableKey { kms_key_id } => format!("disable KMS key {kms_key_id}"),
            Self::CancelDeletion { kms_key_id, enable } => format!(
                "cancel the scheduled deletion of KMS key {kms_key_id}{}",
                if *enable {
                    " and enable it"
                } else {
                    " (it stays disabled)"
                }
            ),
        }
    }
}

/// A difference between AWS and keyhold's record, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub id: uuid::Uuid,
    pub group: GroupName,
    pub kind: DriftKind,
    /// What drifted: a KMS key id, `KMS-KEY-ID vN` for one version's
    /// material, or an alias.
    pub subject: String,
    /// The keyhold key concerned, when there is one.
    pub key_id: Option<uuid::Uuid>,
    pub kms_key_id: Option<KmsKeyId>,
    /// What keyhold expected and what AWS holds, readably (a policy's
    /// difference line by line).
    pub detail: String,
    /// The action that puts it right; `None` when only officers can decide,
    /// outside keyhold (a key AWS deleted, a key keyhold does not know).
    pub repair: Option<Repair>,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    /// When a check stopped seeing it; `None` while it is open.
    pub cleared_at: Option<Timestamp>,
}

impl Finding {
    pub fn is_open(&self) -> bool {
        self.cleared_at.is_none()
    }

    /// What the audit entries and messages say of it.
    pub fn summary(&self) -> String {
        format!(
            "{} on {} of key group {}",
            self.kind.title(),
            self.subject,
            self.group
        )
    }
}

/// A difference one check saw, before it is matched with the stored findings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Detected {
    pub kind: DriftKind,
    pub subject: String,
    pub key_id: Option<uuid::Uuid>,
    pub kms_key_id: Option<KmsKeyId>,
    pub detail: String,
    pub repair: Option<Repair>,
}

/// What a check read of one KMS key of the group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedKey {
    pub kms_key_id: KmsKeyId,
    /// `None`: AWS does not know the key (NotFound).
    pub info: Option<CloudKeyInfo>,
    /// The key policy (`None` when not read: the group has none, or the
    /// key is gone).
    pub policy: Option<KeyPolicy>,
    pub tags: Vec<(String, String)>,
    /// Its materials, read only for a KMS key several versions share.
    pub materials: Option<Vec<CloudMaterial>>,
}

/// Everything one check of a group read from AWS.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    pub keys: Vec<ObservedKey>,
    /// The region's aliases and the KMS key each points at.
    pub aliases: HashMap<Alias, KmsKeyId>,
    /// KMS keys tagged `keyhold:group` = this group that keyhold does not know.
    pub unknown: Vec<KmsKeyId>,
}

/// What [`detect`] needs besides the record and the observation.
#[derive(Clone, Copy, Debug)]
pub struct DetectParams {
    pub now: Timestamp,
    /// Material expiring sooner than this is a finding.
    pub expiry_window: chrono::Duration,
}

/// The tags keyhold puts on the KMS key it creates for `key`.
pub fn expected_tags(group: &GroupName, first_key: &Key) -> Vec<(String, String)> {
    vec![
        (GROUP_TAG.to_owned(), group.to_string()),
        (KEY_TAG.to_owned(), first_key.id.to_string()),
    ]
}

/// KMS keys whose reads a check has under way at once. A check's time is
/// set by its slowest operation's turns under the request quotas (a tenth
/// of each quota for its own reads), not by round trips, only while enough
/// keys are in flight to keep those turns taken as each key waits out its
/// own reads' round trips: against AWS a key's three reads take some 60 ms
/// one after the other, six GetKeyPolicy intervals at a tenth of the
/// default quota, and more where quotas were raised. A bound, because each
/// key in flight may hold a turn ahead in a bucket others use too
/// (DescribeKey's, with the rotations).
pub const KEYS_IN_FLIGHT: usize = 16;

/// The KMS keys of the group that a check reads: those keyhold's record
/// holds to exist (a key pending deletion or deleted by keyhold's own hand,
/// or not yet in KMS, is not), each with its versions, by version.
pub fn kms_keys_to_check(keys: &[Key]) -> BTreeMap<KmsKeyId, Vec<&Key>> {
    let mut by_kms: BTreeMap<KmsKeyId, Vec<&Key>> = BTreeMap::new();
    for key in keys {
        let Some(kms) = &key.kms_key_id else { continue };
        if matches!(
            key.state,
            KeyState::PreActive | KeyState::PendingDeletion | KeyState::Deleted
        ) {
            continue;
        }
        by_kms.entry(kms.clone()).or_default().push(key);
    }
    for versions in by_kms.values_mut() {
        versions.sort_by_key(|k| k.version);
    }
    by_kms
}

/// The differences between the group's record and what AWS answered.
pub fn detect(
    group: &KeyGroup,
    keys: &[Key],
    observed: &Observed,
    params: DetectParams,
) -> Vec<Detected> {
    let mut found = Vec::new();
    let record = kms_keys_to_check(keys);
    let observed_keys: HashMap<&KmsKeyId, &ObservedKey> =
        observed.keys.iter().map(|o| (&o.kms_key_id, o)).collect();
    let active = group.aws.active_key_id.as_ref();
    for (kms, versions) in &record {
        let Some(seen) = observed_keys.get(kms) else {
            continue;
        };
        detect_key(
            group,
            kms,
            versions,
            seen,
            active == Some(kms),
            params,
            &mut found,
        );
    }
    detect_alias(group, &record, observed, &mut found);
    for unknown in &observed.unknown {
        found.push(Detected {
            kind: DriftKind::UnknownKey,
            subject: unknown.to_string(),
            key_id: None,
            kms_key_id: Some(unknown.clone()),
            detail: format!(
                "KMS key {unknown} is tagged {GROUP_TAG}={}, but keyhold holds no key in it. \
                 It may be left from a rotation that was cancelled, or made outside keyhold: \
                 find out who made it (CloudTrail), then schedule it for deletion in AWS if it is not needed",
                group.name
            ),
            repair: None,
        });
    }
    found.sort_by(|a, b| (a.kind, &a.subject).cmp(&(b.kind, &b.subject)));
    found
}

fn detect_key(
    group: &KeyGroup,
    kms: &KmsKeyId,
    versions: &[&Key],
    seen: &ObservedKey,
    is_active: bool,
    params: DetectParams,
    found: &mut Vec<Detected>,
) {
    // The version whose state the KMS key's state is: the first imported
    // (a key rotated by new KMS keys has only that one).
    let Some(first) = versions.first().copied() else {
        return;
    };
    let newest = versions.last().copied().unwrap_or(first);
    let on_key = |kind, detail: String, repair| Detected {
        kind,
        subject: kms.to_string(),
        key_id: Some(first.id),
        kms_key_id: Some(kms.clone()),
        detail,
        repair,
    };
    let Some(info) = &seen.info else {
        found.push(on_key(
            DriftKind::KeyMissing,
            format!(
                "AWS does not know KMS key {kms}, which holds version {} of key group {}: it was deleted, or the credential can no longer see it. \
                 Nothing in keyhold can bring a deleted KMS key back: rotate the group (a new KMS key) and re-encrypt what the old key protected if AWS still holds it elsewhere",
                first.version, group.name
            ),
            None,
        ));
        return;
    };
    let recorded = newest.state;
    if info.state == KeyState::PendingDeletion {
        let when = info
            .deletion_date
            .as_ref()
            .map(|d| format!(" on {}", message_time(d)))
            .unwrap_or_default();
        found.push(on_key(
            DriftKind::PendingDeletion,
            format!(
                "KMS key {kms} is scheduled for deletion{when}; keyhold records it {}. Cancel the deletion before that date, or the key and everything it encrypted are lost",
                recorded.as_str()
            ),
            Some(Repair::CancelDeletion {
                kms_key_id: kms.clone(),
                enable: recorded == KeyState::Enabled,
            }),
        ));
        return;
    }
    match (recorded, info.state) {
        (KeyState::Enabled, KeyState::Disabled) | (KeyState::Disabled, KeyState::Enabled) => {
            let repair = if recorded == KeyState::Enabled {
                Repair::EnableKey {
                    kms_key_id: kms.clone(),
                }
            } else {
                Repair::DisableKey {
                    kms_key_id: kms.clone(),
                }
            };
            found.push(on_key(
                DriftKind::StateDiffers,
                format!(
                    "KMS key {kms} is {} in AWS; keyhold records it {}",
                    info.state.as_str(),
                    recorded.as_str()
                ),
                Some(repair),
            ));
        }
        (KeyState::Enabled | KeyState::Disabled, KeyState::PendingImport) => {
            // The newest version carries the KMS key's current material.
            found.push(Detected {
                key_id: Some(newest.id),
                ..on_key(
                    DriftKind::MaterialDeleted,
                    format!(
                        "KMS key {kms} holds no key material (pending import): it was deleted, or it expired. keyhold records it {}; nothing encrypts or decrypts with it until the material is imported again",
                        recorded.as_str()
                    ),
                    Some(Repair::ReimportMaterial {
                        key_id: newest.id,
                        kms_key_id: kms.clone(),
                    }),
                )
            });
        }
        _ => {}
    }
    if let Some(materials) = &seen.materials {
        detect_materials(kms, versions, materials, info.state, found);
    }
    if is_active && info.state == KeyState::Enabled {
        detect_expiry(group, kms, newest, info, params, found);
    }
    if let (Some(want), Some(have)) = (&group.aws.policy, &seen.policy)
        && let Some(difference) = policy_difference(want, have)
    {
        found.push(on_key(
            DriftKind::PolicyDiffers,
            format!("The key policy of KMS key {kms} is not the key group's:\n{difference}"),
            Some(Repair::PutPolicy {
                kms_key_id: kms.clone(),
            }),
        ));
    }
    let missing: Vec<(String, String)> = expected_tags(&group.name, first)
        .into_iter()
        .filter(|want| !seen.tags.contains(want))
        .collect();
    if !missing.is_empty() {
        let listed: Vec<String> = missing
            .iter()
            .map(|(k, v)| {
                let now = seen
                    .tags
                    .iter()
                    .find(|(have, _)| have == k)
                    .map(|(_, v)| format!(" (now '{v}')"))
                    .unwrap_or_else(|| " (absent)".to_owned());
                format!("{k}={v}{now}")
            })
            .collect();
        found.push(on_key(
            DriftKind::TagsMissing,
            format!(
                "KMS key {kms} lacks the tags keyhold put on it: {}. keyhold finds a key after an interruption by them",
                listed.join(", ")
            ),
            Some(Repair::TagKey {
                kms_key_id: kms.clone(),
                tags: missing,
            }),
        ));
    }
}

/// Versions of a shared KMS key whose own material is gone while the KMS
/// key as a whole still has some.
fn detect_materials(
    kms: &KmsKeyId,
    versions: &[&Key],
    materials: &[CloudMaterial],
    state: KeyState,
    found: &mut Vec<Detected>,
) {
    if state == KeyState::PendingImport {
        return; // said once for the whole key
    }
    for key in versions {
        let Some(id) = &key.kms_material_id else {
            continue;
        };
        if key.state == KeyState::PendingImport {
            continue; // keyhold deleted it itself
        }
        let imported = materials.iter().any(|m| &m.id == id && m.imported);
        if !imported {
            found.push(Detected {
                kind: DriftKind::MaterialDeleted,
                subject: key.display_name(),
                key_id: Some(key.id),
                kms_key_id: Some(kms.clone()),
                detail: format!(
                    "KMS key {kms} no longer holds the material of version {} (material {id}): what that version encrypted cannot be decrypted until it is imported again",
                    key.version
                ),
                repair: Some(Repair::ReimportMaterial {
                    key_id: key.id,
                    kms_key_id: kms.clone(),
                }),
            });
        }
    }
}

fn detect_expiry(
    group: &KeyGroup,
    kms: &KmsKeyId,
    key: &Key,
    info: &CloudKeyInfo,
    params: DetectParams,
    found: &mut Vec<Detected>,
) {
    let Some(valid_to) = info.valid_to else {
        return;
    };
    if valid_to > params.now + params.expiry_window {
        return;
    }
    // The next rotation makes the successor; expiry before it is an outage.
    if group.next_rotation_at.is_some_and(|next| next < valid_to) {
        return;
    }
    let recorded_later = key.valid_to.is_none_or(|mine| mine > valid_to);
    let (detail, repair) = if recorded_later {
        (
            format!(
                "The material of KMS key {kms} expires on {} in AWS, sooner than keyhold records ({}); no rotation is due before then. Importing it again restores keyhold's expiry",
                message_time(&valid_to),
                key.valid_to
                    .as_ref()
                    .map(message_time)
                    .unwrap_or_else(|| "no expiry".to_owned())
            ),
            Some(Repair::ReimportMaterial {
                key_id: key.id,
                kms_key_id: kms.clone(),
            }),
        )
    } else {
        (
            format!(
                "The material of KMS key {kms}, key group {}'s active key, expires on {} and no rotation is due before then: Force Rotate the group (or shorten its rotation interval) before that date",
                group.name,
                message_time(&valid_to)
            ),
            None,
        )
    };
    found.push(Detected {
        kind: DriftKind::MaterialExpiring,
        subject: kms.to_string(),
        key_id: Some(key.id),
        kms_key_id: Some(kms.clone()),
        detail,
        repair,
    });
}

fn detect_alias(
    group: &KeyGroup,
    record: &BTreeMap<KmsKeyId, Vec<&Key>>,
    observed: &Observed,
    found: &mut Vec<Detected>,
) {
    let Some(active) = &group.aws.active_key_id else {
        return;
    };
    // A group whose active KMS key AWS lost gets one finding, not two.
    if !record.contains_key(active) {
        return;
    }
    let alias = &group.aws.alias;
    let repair = Some(Repair::PointAlias {
        alias: alias.clone(),
        kms_key_id: active.clone(),
    });
    match observed.aliases.get(alias) {
        Some(target) if target == active => {}
        Some(target) => found.push(Detected {
            kind: DriftKind::AliasElsewhere,
            subject: alias.to_string(),
            key_id: None,
            kms_key_id: Some(active.clone()),
            detail: format!(
                "Alias {alias} points at KMS key {target}; keyhold's active key for the group is {active}. Whatever encrypts under the alias uses a key keyhold does not rotate"
            ),
            repair,
        }),
        None => found.push(Detected {
            kind: DriftKind::AliasMissing,
            subject: alias.to_string(),
            key_id: None,
            kms_key_id: Some(active.clone()),
            detail: format!(
                "Alias {alias} does not exist in {}; it should point at KMS key {active}. Applications that encrypt under the alias fail",
                group.aws.region
            ),
            repair,
        }),
    }
}

/// A readable difference between two policies, or `None` when they are the
/// same document (JSON compared by value, so whitespace and key order,
/// which AWS may change, do not count).
pub fn policy_difference(want: &KeyPolicy, have: &KeyPolicy) -> Option<String> {
    let parse = |p: &KeyPolicy| serde_json::from_str::<serde_json::Value>(p.as_str()).ok();
    if let (Some(a), Some(b)) = (parse(want), parse(have))
        && a == b
    {
        return None;
    }
    let pretty = |p: &KeyPolicy| {
        parse(p)
            .and_then(|v| serde_json::to_string_pretty(&v).ok())
            .unwrap_or_else(|| p.as_str().to_owned())
    };
    let (want, have) = (pretty(want), pretty(have));
    let mut out = String::new();
    for change in similar::TextDiff::from_lines(&want, &have).iter_all_changes() {
        let sign = match change.tag() {
            similar::ChangeTag::Delete => "- ",
            similar::ChangeTag::Insert => "+ ",
            similar::ChangeTag::Equal => continue,
        };
        let _ = write!(out, "{sign}{}", change.value());
        if change.missing_newline() {
            out.push('\n');
        }
    }
    out.insert_str(0, "(- the group's policy, + the key's policy in AWS)\n");
    Some(out)
}

/// The findings after a check: the detected ones matched with the open
/// ones stored (kept: same id and first seen time), new ones, and the open
/// ones no longer seen, cleared.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Merged {
    /// Seen before and still there, with this check's detail and time.
    pub still: Vec<Finding>,
    pub appeared: Vec<Finding>,
    pub cleared: Vec<Finding>,
}

impl Merged {
    /// Every finding the check writes.
    pub fn all(&self) -> impl Iterator<Item = &Finding> {
        self.still.iter().chain(&self.appeared).chain(&self.cleared)
    }

    /// The findings open after the check.
    pub fn open(&self) -> impl Iterator<Item = &Finding> {
        self.still.iter().chain(&self.appeared)
    }
}

/// Matches a check's detections with the group's open findings.
pub fn merge(
    group: &GroupName,
    open: &[Finding],
    detected: Vec<Detected>,
    now: Timestamp,
    new_id: impl Fn() -> uuid::Uuid,
) -> Merged {
    let mut merged = Merged::default();
    let mut previous: HashMap<(DriftKind, String), &Finding> = open
        .iter()
        .filter(|f| f.is_open())
        .map(|f| ((f.kind, f.subject.clone()), f))
        .collect();
    for d in detected {
        let finding = |id, first_seen| Finding {
            id,
            group: group.clone(),
            kind: d.kind,
            subject: d.subject.clone(),
            key_id: d.key_id,
            kms_key_id: d.kms_key_id.clone(),
            detail: d.detail.clone(),
            repair: d.repair.clone(),
            first_seen,
            last_seen: now,
            cleared_at: None,
        };
        match previous.remove(&(d.kind, d.subject.clone())) {
            Some(before) => merged.still.push(finding(before.id, before.first_seen)),
            None => merged.appeared.push(finding(new_id(), now)),
        }
    }
    let mut gone: Vec<Finding> = previous
        .into_values()
        .map(|f| Finding {
            cleared_at: Some(now),
            ..f.clone()
        })
        .collect();
    gone.sort_by(|a, b| (a.kind, &a.subject).cmp(&(b.kind, &b.subject)));
    merged.cleared = gone;
    merged
}

/// Most repairs one reconcile job runs (a few per key: a group this far
/// off is better rotated).
pub const MAX_PLAN_REPAIRS: usize = 1000;

/// The reconcile plan: the repairs of the open findings, in the order they
/// run, each once; and the findings no action of keyhold's can resolve.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<PlannedRepair>,
    /// Open findings without a repair: they need officers, outside keyhold.
    pub unresolved: Vec<Finding>,
}

/// One repair with the findings it resolves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedRepair {
    pub repair: Repair,
    pub findings: Vec<uuid::Uuid>,
}

impl Plan {
    /// The plan for these findings (only open ones count); with `safe_only`,
    /// self-heal's part of it.
    pub fn of(findings: &[Finding], safe_only: bool) -> Self {
        let mut plan = Self::default();
        for finding in findings.iter().filter(|f| f.is_open()) {
            match &finding.repair {
                Some(repair) if !safe_only || repair.is_safe() => {
                    match plan.actions.iter_mut().find(|a| &a.repair == repair) {
                        Some(planned) => planned.findings.push(finding.id),
                        None => plan.actions.push(PlannedRepair {
                            repair: repair.clone(),
                            findings: vec![finding.id],
                        }),
                    }
                }
                Some(_) => {}
                None => plan.unresolved.push(finding.clone()),
            }
        }
        plan.actions
            .sort_by_key(|a| (a.repair.order(), a.repair.describe()));
        plan
    }

    pub fn repairs(&self) -> Vec<Repair> {
        self.actions.iter().map(|a| a.repair.clone()).collect()
    }

    /// SHA-256 of the repairs in order (hex): names this plan, so the
    /// request that applies it (and the officers who approve it) apply what
    /// they were shown, not what a later check made of it.
    pub fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let repairs = serde_json::to_vec(&self.repairs()).unwrap_or_default();
        hex::encode(Sha256::digest(repairs))
    }
}

/// Where a group's drift stands: its last check, and its open findings by kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriftCheck {
    pub group: GroupName,
    pub checked_at: Timestamp,
    /// The job that checked.
    pub job_id: uuid::Uuid,
    pub open: u32,
}

/// What a check step writes with the job's progress: every finding it saw
/// or cleared (upserted by id), the group's check time, and one audit entry
/// per finding that appeared or cleared.
#[derive(Clone, Debug, PartialEq)]
pub struct DriftRecord {
    pub check: DriftCheck,
    pub findings: Vec<Finding>,
    pub audits: Vec<crate::audit::AuditRecord>,
}

/// The findings that concern one key: those naming it, and those on the
/// KMS key its material is in (a policy, tags or the alias of a KMS key
/// several versions share concern each of them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyFindings {
    pub key_id: uuid::Uuid,
    pub kms_key_id: Option<KmsKeyId>,
}

impl KeyFindings {
    pub fn of(key: &Key) -> Self {
        Self {
            key_id: key.id,
            kms_key_id: key.kms_key_id.clone(),
        }
    }

    pub fn concern(&self, finding: &Finding) -> bool {
        finding.key_id == Some(self.key_id)
            || (self.kms_key_id.is_some() && finding.kms_key_id == self.kms_key_id)
    }
}

/// Which findings a listing returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DriftFilter {
    pub group: Option<GroupName>,
    /// Only those that concern this key.
    pub key: Option<KeyFindings>,
    /// Cleared findings too (newest first).
    pub include_cleared: bool,
    /// 0 means 100; at most 1000.
    pub limit: u32,
}

#[cfg(test)]
mod tests;
