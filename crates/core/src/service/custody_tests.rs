//! Custody rules of the operations, against the fakes: what one identity
//! alone may change, what needs two, which endpoints an officer may give,
//! and what the audit entries record.

use std::sync::Arc;

use crate::clock::ManualClock;
use crate::cloud::aws::{Alias, Description, KeyPolicy, Region};
use crate::credential::{
    AccessKeyCsv, CloudService, Credential, CredentialKind, Endpoint, EndpointPolicy,
};
use crate::error::CoreError;
use crate::group::{AwsProperties, GroupChange, GroupInfo, InfoChange, KeyGroup, KeySpec};
use crate::identity::{Role, Session, SessionIdentity};
use crate::interval::Interval;
use crate::names::{CredentialName, GroupName, IdentityName};
use crate::service::Keyhold;
use crate::testing::{FakeKeystore, FakeStore};

const PEER: &str = "http://127.0.0.1:4566";
const WIDE_OPEN: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"*"},"Action":"kms:*","Resource":"*"}]}"#;

fn session(ids: &[(&str, Role)]) -> Session {
    Session {
        id: "s".into(),
        identities: ids
            .iter()
            .map(|(n, r)| SessionIdentity {
                name: IdentityName::parse(n).unwrap(),
                role: *r,
            })
            .collect(),
        created_at: chrono::DateTime::UNIX_EPOCH,
        last_seen: chrono::DateTime::UNIX_EPOCH,
        grant: None,
    }
}

fn officer() -> Session {
    session(&[("Off1", Role::KeyOfficer)])
}

fn two_officers() -> Session {
    session(&[("Off1", Role::KeyOfficer), ("Off2", Role::KeyOfficer)])
}

fn world() -> (Keyhold, Arc<FakeStore>) {
    let store = Arc::new(FakeStore::new());
    for name in ["aws", "other"] {
        store.put_credential(Credential {
            id: uuid::Uuid::new_v4(),
            name: CredentialName::parse(name).unwrap(),
            service: CloudService::Aws,
            kind: CredentialKind::DefaultChain { role_arn: None },
            endpoint: None,
            created_at: chrono::DateTime::UNIX_EPOCH,
        });
    }
    store.put_group(KeyGroup {
        id: uuid::Uuid::new_v4(),
        name: GroupName::parse("payments").unwrap(),
        service: CloudService::Aws,
        credential: CredentialName::parse("aws").unwrap(),
        spec: KeySpec,
        rotate_every: None,
        valid_for: None,
        info: GroupInfo::default(),
        aws: AwsProperties {
            alias: Alias::parse("alias/payments").unwrap(),
            description: Description::parse("payments").unwrap(),
            region: Region::parse("eu-west-1").unwrap(),
            active_key_id: None,
            policy: None,
            disable_after_rotate: true,
            rotation: crate::group::RotationStrategy::NewKey,
            at_rotation_limit: crate::group::AtRotationLimit::NewKey,
            self_heal: false,
        },
        created_at: chrono::DateTime::UNIX_EPOCH,
        updated_at: chrono::DateTime::UNIX_EPOCH,
        next_rotation_at: None,
    });
    let keyhold = Keyhold::new(
        store.clone(),
        Arc::new(FakeKeystore::new()),
        Arc::new(ManualClock::new(chrono::DateTime::UNIX_EPOCH)),
    )
    .with_endpoint_policy(EndpointPolicy::new(vec![Endpoint::parse(PEER).unwrap()], true).unwrap());
    (keyhold, store)
}

fn payments() -> GroupName {
    GroupName::parse("payments").unwrap()
}

fn csv() -> AccessKeyCsv {
    AccessKeyCsv::parse(
        b"Access key ID,Secret access key\nAKIAIOSFODNN7EXAMPLE,wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n",
    )
    .unwrap()
}

#[tokio::test]
async fn one_officer_changes_harmless_fields_alone_and_nothing_else() {
    let (keyhold, store) = world();
    let harmless = GroupChange {
        rotate_every: Some(Some(Interval::parse("30d").unwrap())),
        description: Some(Description::parse("cards").unwrap()),
        info: InfoChange::parse(Some("team"), Some("")).unwrap(),
        ..Default::default()
    };
    keyhold
        .update_group(&officer(), &payments(), harmless)
        .await
        .unwrap();

    let sensitive: Vec<(&str, GroupChange)> = vec![
        (
            "credential",
            GroupChange {
                credential: Some(CredentialName::parse("other").unwrap()),
                ..Default::default()
            },
        ),
        (
            "region",
            GroupChange {
                region: Some(Region::parse("us-east-1").unwrap()),
                ..Default::default()
            },
        ),
        (
            "alias",
            GroupChange {
                alias: Some(Alias::parse("alias/other").unwrap()),
                ..Default::default()
            },
        ),
        (
            "policy",
            GroupChange {
                policy: Some(Some(KeyPolicy::parse(WIDE_OPEN).unwrap())),
                ..Default::default()
            },
        ),
        (
            "disable_after_rotate",
            GroupChange {
                disable_after_rotate: Some(false),
                ..Default::default()
            },
        ),
    ];
    let before = store.snapshot();
    let same_again = GroupChange {
        credential: Some(CredentialName::parse("aws").unwrap()),
        ..Default::default()
    };
    let sensitive = sensitive
        .into_iter()
        .chain([("credential", same_again)])
        .collect::<Vec<_>>();
    for (field, change) in sensitive {
        let with_harmless = GroupChange {
            description: Some(Description::parse("sneaky").unwrap()),
            ..change.clone()
        };
        for change in [change, with_harmless] {
            let err = keyhold
                .update_group(&officer(), &payments(), change)
                .await
                .unwrap_err();
            let CoreError::DualControlRequired { .. } = &err else {
                panic!("{field}: {err}");
            };
            let text = err.to_string();
            assert!(
                text.contains(field) && text.contains("needs dual control"),
                "{text}"
            );
        }
    }
    let after = store.snapshot();
    assert_eq!(after.groups, before.groups, "nothing changed");
    assert_eq!(after.audit.len(), before.audit.len());
}

#[tokio::test]
async fn two_officers_change_the_policy_and_the_entry_holds_before_and_after() {
    let (keyhold, store) = world();
    let policy = KeyPolicy::parse(WIDE_OPEN).unwrap();
    keyhold
        .update_group(
            &two_officers(),
            &payments(),
            GroupChange {
                policy: Some(Some(policy.clone())),
                credential: Some(CredentialName::parse("other").unwrap()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let entry = store.snapshot().audit.last().unwrap().clone();
    assert_eq!(entry.users, "Off1,Off2");
    let details = entry.details;
    assert_eq!(details["dual_control"], true);
    assert_eq!(details["before"]["credential"], "aws");
    assert_eq!(details["after"]["credential"], "other");
    assert_eq!(details["before"]["policy"], serde_json::Value::Null);
    assert_eq!(details["after"]["policy"]["sha256"], policy.sha256_hex());
    assert_eq!(details["after"]["policy"]["text"], WIDE_OPEN);
    assert_eq!(policy.sha256_hex().len(), 64);
}

#[tokio::test]
async fn credentials_are_added_and_deleted_by_two_only_and_endpoints_must_be_allowed() {
    let (keyhold, store) = world();
    let name = |n: &str| CredentialName::parse(n).unwrap();
    for alone in [
        officer(),
        session(&[("Admin1", Role::Administrator)]),
        session(&[("Off1", Role::KeyOfficer), ("Aud", Role::Auditor)]),
    ] {
        let err = keyhold
            .import_credential(&alone, name("new"), csv(), None)
            .await
            .unwrap_err();
        assert!(
            matches!(err, CoreError::DualControlRequired { .. }),
            "{err}"
        );
        let err = keyhold
            .add_chain_credential(&alone, name("new"), None, None)
            .await
            .unwrap_err();
        assert!(
            matches!(err, CoreError::DualControlRequired { .. }),
            "{err}"
        );
        let err = keyhold
            .delete_credential(&alone, &name("other"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, CoreError::DualControlRequired { .. }),
            "{err}"
        );
    }
    let auditor = session(&[("Aud", Role::Auditor)]);
    let err = keyhold
        .import_credential(&auditor, name("new"), csv(), None)
        .await
        .unwrap_err();
    assert!(matches!(err, CoreError::Forbidden(_)), "{err}");

    for refused in ["https://mitm.example.com", "http://127.0.0.1:4567"] {
        let err = keyhold
            .import_credential(
                &two_officers(),
                name("mitm"),
                csv(),
                Some(Endpoint::parse(refused).unwrap()),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&err, CoreError::Invalid(e) if e.field == "endpoint"
                && e.message.contains("KEYHOLD_KMS_ENDPOINT_ALLOW")),
            "{err}"
        );
    }
    assert_eq!(store.snapshot().credentials.len(), 2, "nothing added");
    keyhold
        .import_credential(
            &two_officers(),
            name("peer"),
            csv(),
            Some(Endpoint::parse(PEER).unwrap()),
        )
        .await
        .unwrap();
    let entry = store.snapshot().audit.last().unwrap().clone();
    assert_eq!(entry.users, "Off1,Off2");
    assert_eq!(entry.details["endpoint"], PEER);
}
