//! Drift detection, merging and planning, without a cloud: each kind from
//! the smallest observation that shows it, and the absence of findings
//! when AWS holds what the record says.

use super::*;
use crate::cloud::aws::{Description, KeyMaterialId, Region};
use crate::credential::CloudService;
use crate::group::{AtRotationLimit, AwsProperties, GroupInfo, KeySpec, RotationStrategy};
use crate::key::{CheckDigits, MaterialState};
use crate::names::CredentialName;
use proptest::prelude::*;

const POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}]}"#;

fn t0() -> Timestamp {
    chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

fn kms_id(n: u8) -> KmsKeyId {
    KmsKeyId::from_uuid(uuid::Uuid::from_bytes([n; 16]))
}

fn alias() -> Alias {
    Alias::parse("alias/payments").unwrap()
}

fn group(active: Option<KmsKeyId>) -> KeyGroup {
    KeyGroup {
        id: uuid::Uuid::nil(),
        name: GroupName::parse("payments").unwrap(),
        service: CloudService::Aws,
        credential: CredentialName::parse("aws").unwrap(),
        spec: KeySpec,
        rotate_every: None,
        valid_for: None,
        info: GroupInfo::default(),
        aws: AwsProperties {
            alias: alias(),
            description: Description::default(),
            region: Region::parse("eu-west-1").unwrap(),
            active_key_id: active,
            policy: Some(KeyPolicy::parse(POLICY).unwrap()),
            disable_after_rotate: true,
            rotation: RotationStrategy::NewKey,
            at_rotation_limit: AtRotationLimit::NewKey,
            self_heal: false,
        },
        created_at: t0(),
        updated_at: t0(),
        next_rotation_at: None,
    }
}

fn key(version: u32, kms: &KmsKeyId, state: KeyState) -> Key {
    Key {
        id: uuid::Uuid::from_u128(u128::from(version)),
        group: GroupName::parse("payments").unwrap(),
        version,
        kms_key_id: Some(kms.clone()),
        check_digits: CheckDigits::parse("AB12").unwrap(),
        valid_from: t0(),
        valid_to: None,
        state,
        kms_material_id: None,
        material_state: MaterialState::Current,
        rotated_in: false,
        keystore_handle: Vec::new(),
        created_at: t0(),
    }
}

fn info(kms: &KmsKeyId, state: KeyState) -> CloudKeyInfo {
    CloudKeyInfo {
        key_id: kms.clone(),
        state,
        external: true,
        valid_to: None,
        current_material: None,
        deletion_date: None,
    }
}

/// AWS exactly as the record says: the active key enabled, the old one
/// disabled, both with the group's policy and tags, the alias on the active.
struct Scene {
    group: KeyGroup,
    keys: Vec<Key>,
    observed: Observed,
}

fn in_line() -> Scene {
    let (old, new) = (kms_id(1), kms_id(2));
    let keys = vec![
        key(1, &old, KeyState::Disabled),
        key(2, &new, KeyState::Enabled),
    ];
    let group = group(Some(new.clone()));
    let observed_key = |k: &Key| ObservedKey {
        kms_key_id: k.kms_key_id.clone().unwrap(),
        info: Some(info(k.kms_key_id.as_ref().unwrap(), k.state)),
        policy: Some(KeyPolicy::parse(POLICY).unwrap()),
        tags: expected_tags(&group.name, k),
        materials: None,
    };
    let observed = Observed {
        keys: keys.iter().map(observed_key).collect(),
        aliases: [(alias(), new.clone())].into_iter().collect(),
        unknown: Vec::new(),
    };
    Scene {
        group,
        keys,
        observed,
    }
}

fn params() -> DetectParams {
    DetectParams {
        now: t0(),
        expiry_window: chrono::Duration::days(30),
    }
}

impl Scene {
    fn detect(&self) -> Vec<Detected> {
        detect(&self.group, &self.keys, &self.observed, params())
    }
    fn seen(&mut self, n: u8) -> &mut ObservedKey {
        let id = kms_id(n);
        self.observed
            .keys
            .iter_mut()
            .find(|k| k.kms_key_id == id)
            .unwrap()
    }
    fn only(&self) -> Detected {
        let found = self.detect();
        assert_eq!(found.len(), 1, "{found:#?}");
        found.into_iter().next().unwrap()
    }
}

#[test]
fn aws_as_the_record_says_is_no_drift() {
    assert_eq!(in_line().detect(), Vec::new());
}

#[test]
fn a_policy_with_other_whitespace_and_key_order_is_the_same_policy() {
    let mut scene = in_line();
    let reordered = r#"{
  "Statement": [ { "Resource": "*", "Action": "kms:*", "Effect": "Allow",
                   "Principal": { "AWS": "arn:aws:iam::111122223333:root" } } ],
  "Version": "2012-10-17"
}"#;
    scene.seen(2).policy = Some(KeyPolicy::parse(reordered).unwrap());
    assert_eq!(scene.detect(), Vec::new());
}

#[test]
fn a_key_aws_does_not_know_is_missing_with_no_repair() {
    let mut scene = in_line();
    scene.seen(1).info = None;
    let found = scene.only();
    assert_eq!(found.kind, DriftKind::KeyMissing);
    assert_eq!(found.subject, kms_id(1).to_string());
    assert_eq!(found.repair, None);
}

#[test]
fn a_scheduled_deletion_is_cancelled_and_an_enabled_key_enabled_again() {
    let mut scene = in_line();
    let seen = scene.seen(2);
    seen.info.as_mut().unwrap().state = KeyState::PendingDeletion;
    seen.info.as_mut().unwrap().deletion_date = Some(t0() + chrono::Duration::days(7));
    let found = scene.only();
    assert_eq!(found.kind, DriftKind::PendingDeletion);
    assert!(
        found.detail.contains("scheduled for deletion on"),
        "{}",
        found.detail
    );
    assert_eq!(
        found.repair,
        Some(Repair::CancelDeletion {
            kms_key_id: kms_id(2),
            enable: true
        })
    );
    assert!(!found.repair.unwrap().is_safe());
}

#[test]
fn a_state_changed_in_aws_is_put_back_to_the_record_by_officers_only() {
    let mut scene = in_line();
    scene.seen(2).info.as_mut().unwrap().state = KeyState::Disabled;
    scene.seen(1).info.as_mut().unwrap().state = KeyState::Enabled;
    let found = scene.detect();
    let repairs: Vec<_> = found.iter().map(|d| d.repair.clone().unwrap()).collect();
    assert!(found.iter().all(|d| d.kind == DriftKind::StateDiffers));
    assert!(repairs.contains(&Repair::EnableKey {
        kms_key_id: kms_id(2)
    }));
    assert!(repairs.contains(&Repair::DisableKey {
        kms_key_id: kms_id(1)
    }));
    assert!(repairs.iter().all(|r| !r.is_safe()));
}

#[test]
fn deleted_material_is_imported_again() {
    let mut scene = in_line();
    scene.seen(2).info.as_mut().unwrap().state = KeyState::PendingImport;
    let found = scene.only();
    assert_eq!(found.kind, DriftKind::MaterialDeleted);
    assert_eq!(
        found.repair,
        Some(Repair::ReimportMaterial {
            key_id: scene.keys[1].id,
            kms_key_id: kms_id(2)
        })
    );
    assert!(found.repair.unwrap().is_safe());
}

#[test]
fn material_keyhold_deleted_itself_is_not_drift() {
    let mut scene = in_line();
    scene.keys[1].state = KeyState::PendingImport;
    scene.seen(2).info.as_mut().unwrap().state = KeyState::PendingImport;
    assert_eq!(scene.detect(), Vec::new());
}

#[test]
fn one_version_of_a_shared_kms_key_losing_its_material_is_named_by_version() {
    let mut scene = in_line();
    let shared = kms_id(2);
    let material = |n: u8| KeyMaterialId::from_digest([n; 32]);
    scene.keys[1].kms_material_id = Some(material(2));
    scene.keys[1].material_state = MaterialState::NonCurrent;
    let mut v3 = key(3, &shared, KeyState::Enabled);
    v3.rotated_in = true;
    v3.kms_material_id = Some(material(3));
    scene.keys.push(v3.clone());
    scene.seen(2).materials = Some(vec![
        CloudMaterial {
            id: material(2),
            description: None,
            state: MaterialState::NonCurrent,
            imported: false,
        },
        CloudMaterial {
            id: material(3),
            description: None,
            state: MaterialState::Current,
            imported: true,
        },
    ]);
    let found = scene.only();
    assert_eq!(found.kind, DriftKind::MaterialDeleted);
    assert_eq!(found.subject, format!("{shared}"));
    assert_eq!(found.key_id, Some(scene.keys[1].id));
    // v3's name is `KMS v3`; v2 is the first imported, named by the KMS key.
    scene.seen(2).materials.as_mut().unwrap()[0].imported = true;
    scene.seen(2).materials.as_mut().unwrap()[1].imported = false;
    let found = scene.only();
    assert_eq!(found.subject, format!("{shared} v3"));
    assert_eq!(
        found.repair,
        Some(Repair::ReimportMaterial {
            key_id: v3.id,
            kms_key_id: shared
        })
    );
}

#[test]
fn material_expiring_with_no_rotation_due_is_drift_and_a_due_rotation_is_not() {
    let mut scene = in_line();
    let soon = t0() + chrono::Duration::days(10);
    scene.seen(2).info.as_mut().unwrap().valid_to = Some(soon);
    // keyhold records no expiry: AWS's is someone else's; import again.
    let found = scene.only();
    assert_eq!(found.kind, DriftKind::MaterialExpiring);
    assert!(matches!(
        found.repair,
        Some(Repair::ReimportMaterial { .. })
    ));
    // keyhold's own validity ends then: only a rotation helps.
    scene.keys[1].valid_to = Some(soon);
    let found = scene.only();
    assert_eq!(found.repair, None);
    assert!(found.detail.contains("Force Rotate"), "{}", found.detail);
    // A rotation before the expiry makes the successor in time.
    scene.group.next_rotation_at = Some(soon - chrono::Duration::days(1));
    assert_eq!(scene.detect(), Vec::new());
    // Beyond the window: not yet.
    scene.group.next_rotation_at = None;
    scene.seen(2).info.as_mut().unwrap().valid_to = Some(t0() + chrono::Duration::days(31));
    scene.keys[1].valid_to = None;
    assert_eq!(scene.detect(), Vec::new());
}

#[test]
fn an_alias_missing_or_elsewhere_is_pointed_back_at_the_active_key() {
    let mut scene = in_line();
    scene.observed.aliases.clear();
    let found = scene.only();
    assert_eq!(found.kind, DriftKind::AliasMissing);
    let back = Repair::PointAlias {
        alias: alias(),
        kms_key_id: kms_id(2),
    };
    assert_eq!(found.repair, Some(back.clone()));
    scene.observed.aliases.insert(alias(), kms_id(9));
    let found = scene.only();
    assert_eq!(found.kind, DriftKind::AliasElsewhere);
    assert!(found.detail.contains(&kms_id(9).to_string()));
    assert_eq!(found.repair, Some(back));
}

#[test]
fn an_edited_policy_shows_its_difference_line_by_line() {
    let mut scene = in_line();
    let widened = POLICY.replace("arn:aws:iam::111122223333:root", "*");
    scene.seen(1).policy = Some(KeyPolicy::parse(&widened).unwrap());
    let found = scene.only();
    assert_eq!(found.kind, DriftKind::PolicyDiffers);
    assert!(
        found
            .detail
            .contains(r#"-         "AWS": "arn:aws:iam::111122223333:root""#),
        "{}",
        found.detail
    );
    assert!(
        found.detail.contains(r#"+         "AWS": "*""#),
        "{}",
        found.detail
    );
    assert_eq!(
        found.repair,
        Some(Repair::PutPolicy {
            kms_key_id: kms_id(1)
        })
    );
}

#[test]
fn a_group_without_a_policy_never_finds_one_differing() {
    let mut scene = in_line();
    scene.group.aws.policy = None;
    scene.seen(1).policy = Some(KeyPolicy::parse(&POLICY.replace("kms:*", "kms:Decrypt")).unwrap());
    assert_eq!(scene.detect(), Vec::new());
}

#[test]
fn removed_or_changed_tags_are_put_back() {
    let mut scene = in_line();
    let group_name = scene.group.name.clone();
    let seen = scene.seen(2);
    seen.tags.retain(|(k, _)| k != GROUP_TAG);
    seen.tags
        .push((GROUP_TAG.to_owned(), "someone-else".to_owned()));
    let found = scene.only();
    assert_eq!(found.kind, DriftKind::TagsMissing);
    assert!(
        found.detail.contains("(now 'someone-else')"),
        "{}",
        found.detail
    );
    assert_eq!(
        found.repair,
        Some(Repair::TagKey {
            kms_key_id: kms_id(2),
            tags: vec![(GROUP_TAG.to_owned(), group_name.to_string())]
        })
    );
}

#[test]
fn a_stray_tagged_key_is_reported_for_officers() {
    let mut scene = in_line();
    scene.observed.unknown.push(kms_id(7));
    let found = scene.only();
    assert_eq!(found.kind, DriftKind::UnknownKey);
    assert_eq!(found.repair, None);
}

#[test]
fn keys_not_in_kms_or_on_their_way_out_are_not_checked() {
    let mut keys = in_line().keys;
    keys[0].state = KeyState::PendingDeletion;
    keys.push(Key {
        kms_key_id: None,
        state: KeyState::PreActive,
        ..key(3, &kms_id(3), KeyState::PreActive)
    });
    let checked = kms_keys_to_check(&keys);
    assert_eq!(checked.keys().collect::<Vec<_>>(), vec![&kms_id(2)]);
}

fn finding(kind: DriftKind, subject: &str, repair: Option<Repair>) -> Detected {
    Detected {
        kind,
        subject: subject.to_owned(),
        key_id: None,
        kms_key_id: Some(kms_id(1)),
        detail: format!("{subject} drifted"),
        repair,
    }
}

#[test]
fn a_finding_seen_again_keeps_its_id_and_first_seen_and_one_gone_is_cleared() {
    let g = GroupName::parse("payments").unwrap();
    let first = merge(
        &g,
        &[],
        vec![
            finding(DriftKind::AliasMissing, "alias/payments", None),
            finding(DriftKind::TagsMissing, "k1", None),
        ],
        t0(),
        uuid::Uuid::new_v4,
    );
    assert_eq!(first.appeared.len(), 2);
    let stored: Vec<Finding> = first.open().cloned().collect();
    let later = t0() + chrono::Duration::hours(24);
    let second = merge(
        &g,
        &stored,
        vec![finding(DriftKind::AliasMissing, "alias/payments", None)],
        later,
        uuid::Uuid::new_v4,
    );
    assert!(second.appeared.is_empty());
    let still = &second.still[0];
    let before = stored
        .iter()
        .find(|f| f.kind == DriftKind::AliasMissing)
        .unwrap();
    assert_eq!((still.id, still.first_seen), (before.id, t0()));
    assert_eq!(still.last_seen, later);
    assert_eq!(second.cleared.len(), 1);
    assert_eq!(second.cleared[0].kind, DriftKind::TagsMissing);
    assert_eq!(second.cleared[0].cleared_at, Some(later));
    // Cleared findings are history: a later check does not clear them again.
    let all: Vec<Finding> = second.all().cloned().collect();
    let third = merge(&g, &all, Vec::new(), later, uuid::Uuid::new_v4);
    assert_eq!(third.cleared.len(), 1);
    assert_eq!(third.cleared[0].kind, DriftKind::AliasMissing);
}

#[test]
fn the_plan_runs_each_repair_once_deletions_first_and_self_heal_only_the_safe() {
    let g = GroupName::parse("payments").unwrap();
    let tag = Repair::TagKey {
        kms_key_id: kms_id(1),
        tags: vec![],
    };
    let cancel = Repair::CancelDeletion {
        kms_key_id: kms_id(1),
        enable: true,
    };
    let alias_back = Repair::PointAlias {
        alias: alias(),
        kms_key_id: kms_id(1),
    };
    let merged = merge(
        &g,
        &[],
        vec![
            finding(DriftKind::TagsMissing, "k1", Some(tag.clone())),
            finding(DriftKind::AliasMissing, "alias/a", Some(alias_back.clone())),
            finding(
                DriftKind::AliasElsewhere,
                "alias/b",
                Some(alias_back.clone()),
            ),
            finding(DriftKind::PendingDeletion, "k1", Some(cancel.clone())),
            finding(DriftKind::UnknownKey, "k9", None),
        ],
        t0(),
        uuid::Uuid::new_v4,
    );
    let open: Vec<Finding> = merged.open().cloned().collect();
    let plan = Plan::of(&open, false);
    assert_eq!(
        plan.repairs(),
        vec![cancel, alias_back.clone(), tag.clone()]
    );
    assert_eq!(plan.actions[1].findings.len(), 2);
    assert_eq!(plan.unresolved.len(), 1);
    let heal = Plan::of(&open, true);
    assert_eq!(heal.repairs(), vec![alias_back, tag]);
    assert_ne!(plan.digest(), heal.digest());
    assert_eq!(plan.digest(), Plan::of(&open, false).digest());
}

#[test]
fn kinds_parse_from_their_names() {
    for kind in DriftKind::ALL {
        assert_eq!(DriftKind::parse(kind.as_str()), Some(kind));
    }
    assert_eq!(DriftKind::parse("nonsense"), None);
}

proptest! {
    /// Whatever a check detects, merging it twice in a row changes only
    /// the times: no finding appears or clears the second time.
    #[test]
    fn merging_the_same_detection_twice_is_stable(
        subjects in proptest::collection::btree_set("[a-z]{1,8}", 0..12),
        kinds in proptest::collection::vec(0usize..DriftKind::ALL.len(), 12),
    ) {
        let g = GroupName::parse("payments").unwrap();
        let detected: Vec<Detected> = subjects
            .iter()
            .zip(&kinds)
            .map(|(s, k)| finding(DriftKind::ALL[*k], s, None))
            .collect();
        let first = merge(&g, &[], detected.clone(), t0(), uuid::Uuid::new_v4);
        let stored: Vec<Finding> = first.open().cloned().collect();
        let second = merge(&g, &stored, detected, t0(), uuid::Uuid::new_v4);
        prop_assert!(second.appeared.is_empty());
        prop_assert!(second.cleared.is_empty());
        prop_assert_eq!(second.still.len(), stored.len());
    }

    /// A policy always equals itself, whatever its text.
    #[test]
    fn a_policy_never_differs_from_itself(statement in "[a-zA-Z:*]{1,20}") {
        let text = format!(r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"{statement}","Resource":"*"}}]}}"#);
        let policy = KeyPolicy::parse(&text).unwrap();
        prop_assert_eq!(policy_difference(&policy, &policy), None);
    }
}
