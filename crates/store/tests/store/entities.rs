use std::sync::Arc;

use keyhold_core::StoreError;
use keyhold_core::cloud::aws::{KeyMaterialId, KmsKeyId};
use keyhold_core::identity::{Role, Session, SessionIdentity};
use keyhold_core::key::{Key, KeyCursor, KeyPage, KeyState, MaterialState};
use keyhold_core::names::{CredentialName, GroupName, IdentityName};
use keyhold_core::settings::Settings;
use keyhold_store::SqlStore;

use crate::common::{Fixture, TestMac, at, connect, credential, group, identity, key, record};

#[tokio::test]
async fn identities_round_trip_update_and_delete() {
    let f = Fixture::new().await;
    let s = &f.store;
    let mut alice = identity("Alice");
    s.insert_identity(&alice, &record("Added identity Alice"))
        .await
        .unwrap();
    s.insert_identity(&identity("Bob"), &record("Added identity Bob"))
        .await
        .unwrap();
    assert_eq!(
        s.get_identity(&alice.name).await.unwrap(),
        Some(alice.clone())
    );
    let names: Vec<String> = s
        .list_identities()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.name.to_string())
        .collect();
    assert_eq!(names, ["Alice", "Bob"]);

    alice.role = Role::Administrator;
    alice.failed_logins = 5;
    alice.locked_until = Some(at(900));
    alice.must_change_password = false;
    alice.password_hash = "$argon2id$new".into();
    // A failed login updates counters without an audit entry of its own.
    s.update_identity(&alice, None).await.unwrap();
    assert_eq!(
        s.get_identity(&alice.name).await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(f.audit_count().await, 2);

    s.delete_identity(&alice.name, &record("Deleted identity Alice"))
        .await
        .unwrap();
    assert_eq!(s.get_identity(&alice.name).await.unwrap(), None);
    assert_eq!(f.audit_count().await, 3);
}

#[tokio::test]
async fn duplicate_names_and_missing_rows_are_reported() {
    let f = Fixture::new().await;
    let s = &f.store;
    s.insert_identity(&identity("Alice"), &record("a"))
        .await
        .unwrap();
    assert!(matches!(
        s.insert_identity(&identity("Alice"), &record("again"))
            .await,
        Err(StoreError::Duplicate)
    ));
    s.insert_credential(&credential("aws-prod"), &record("c"))
        .await
        .unwrap();
    assert!(matches!(
        s.insert_credential(&credential("aws-prod"), &record("c again"))
            .await,
        Err(StoreError::Duplicate)
    ));
    s.insert_group(&group("payments", "aws-prod"), &record("g"))
        .await
        .unwrap();
    assert!(matches!(
        s.insert_group(&group("payments", "aws-prod"), &record("g again"))
            .await,
        Err(StoreError::Duplicate)
    ));
    let k = key("payments", 1);
    s.insert_key(&k, None).await.unwrap();
    let mut same_version = key("payments", 1);
    assert!(matches!(
        s.insert_key(&same_version, None).await,
        Err(StoreError::Duplicate)
    ));
    same_version.version = 2;
    same_version.kms_key_id = k.kms_key_id.clone();
    assert!(matches!(
        s.insert_key(&same_version, None).await,
        Err(StoreError::Duplicate)
    ));
    // Refused writes leave no audit entry behind.
    assert_eq!(f.audit_count().await, 3);

    let ghost = identity("Ghost");
    assert!(matches!(
        s.update_identity(&ghost, Some(&record("x"))).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        s.delete_identity(&ghost.name, &record("x")).await,
        Err(StoreError::NotFound)
    ));
    let no_cred = CredentialName::parse("nothing").unwrap();
    assert!(matches!(
        s.delete_credential(&no_cred, &record("x")).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        s.update_group(&group("nothing", "aws-prod"), &record("x"))
            .await,
        Err(StoreError::NotFound)
    ));
    let no_group = GroupName::parse("nothing").unwrap();
    assert!(matches!(
        s.delete_group(&no_group, &record("x")).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        s.update_key(&key("payments", 9), None).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        s.delete_key(uuid::Uuid::new_v4(), &record("x")).await,
        Err(StoreError::NotFound)
    ));
    // A row may not refer to a credential or group that does not exist.
    assert!(matches!(
        s.insert_group(&group("orphan", "nothing"), &record("x"))
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        s.update_group(&group("payments", "nothing"), &record("x"))
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        s.insert_key(&key("nothing", 1), None).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(f.audit_count().await, 3);
}

#[tokio::test]
async fn sessions_round_trip_and_end_with_their_identities() {
    let f = Fixture::new().await;
    let s = &f.store;
    let who = |n: &str, role| SessionIdentity {
        name: IdentityName::parse(n).unwrap(),
        role,
    };
    let mut one = Session {
        id: "a".repeat(64),
        identities: vec![who("Admin1", Role::Administrator)],
        created_at: at(10),
        last_seen: at(10),
        grant: None,
    };
    let other = Session {
        id: "b".repeat(64),
        identities: vec![who("Officer", Role::KeyOfficer)],
        created_at: at(11),
        last_seen: at(11),
        grant: None,
    };
    s.insert_session(&one, &record("Logged in 'Admin1' using Password."))
        .await
        .unwrap();
    s.insert_session(&other, &record("Logged in 'Officer' using Password."))
        .await
        .unwrap();
    assert!(matches!(
        s.insert_session(&one, &record("Logged in 'Admin1' using Password."))
            .await,
        Err(StoreError::Duplicate)
    ));
    assert_eq!(s.get_session(&one.id).await.unwrap(), Some(one.clone()));

    one.identities.push(who("Admin2", Role::Administrator));
    one.last_seen = at(20);
    s.update_session(&one).await.unwrap();
    assert_eq!(s.get_session(&one.id).await.unwrap(), Some(one.clone()));

    s.delete_sessions_of(&IdentityName::parse("Admin2").unwrap())
        .await
        .unwrap();
    assert_eq!(s.get_session(&one.id).await.unwrap(), None);
    assert_eq!(s.get_session(&other.id).await.unwrap(), Some(other.clone()));
    assert!(matches!(
        s.update_session(&one).await,
        Err(StoreError::NotFound)
    ));

    s.delete_session(&other.id, Some(&record("Logged out.")))
        .await
        .unwrap();
    assert_eq!(s.get_session(&other.id).await.unwrap(), None);
    // Ending an ended session (two logouts racing, or an expiry) is not an error.
    s.delete_session(&other.id, None).await.unwrap();
    // A login and a logout each commit with their entry (the refused
    // duplicate login wrote none); a touch, an expiry and the end of an
    // identity's sessions write none.
    assert_eq!(f.audit_count().await, 3);
}

#[tokio::test]
async fn credentials_groups_and_keys_round_trip() {
    let f = Fixture::new().await;
    let s = &f.store;
    let cred = credential("aws-prod");
    let mut plain = credential("aws-test");
    plain.endpoint = None;
    s.insert_credential(&cred, &record("c1")).await.unwrap();
    s.insert_credential(&plain, &record("c2")).await.unwrap();
    assert_eq!(
        s.get_credential(&cred.name).await.unwrap(),
        Some(cred.clone())
    );
    assert_eq!(
        s.list_credentials().await.unwrap(),
        vec![cred.clone(), plain.clone()]
    );

    let mut g = group("payments", "aws-prod");
    let mut bare = group("archive", "aws-test");
    bare.rotate_every = None;
    bare.valid_for = None;
    bare.next_rotation_at = None;
    bare.aws.active_key_id = None;
    bare.aws.policy = None;
    bare.info = Default::default();
    s.insert_group(&g, &record("g1")).await.unwrap();
    s.insert_group(&bare, &record("g2")).await.unwrap();
    assert_eq!(s.get_group(&g.name).await.unwrap(), Some(g.clone()));
    assert_eq!(
        s.list_groups().await.unwrap(),
        vec![bare.clone(), g.clone()]
    );

    g.credential = plain.name.clone();
    g.rotate_every = None;
    g.next_rotation_at = None;
    g.aws.active_key_id = None;
    g.updated_at = at(50);
    s.update_group(&g, &record("g1 updated")).await.unwrap();
    assert_eq!(s.get_group(&g.name).await.unwrap(), Some(g.clone()));

    let mut k1 = key("payments", 1);
    let mut k2 = key("payments", 2);
    k2.kms_key_id = None;
    k2.valid_to = None;
    k2.state = KeyState::PreActive;
    let k3 = key("archive", 1);
    s.insert_key(&k2, None).await.unwrap();
    s.insert_key(&k1, Some(&record("k1"))).await.unwrap();
    s.insert_key(&k3, None).await.unwrap();
    assert_eq!(s.get_key(k1.id).await.unwrap(), Some(k1.clone()));
    assert_eq!(s.get_key(k2.id).await.unwrap(), Some(k2.clone()));
    assert_eq!(
        s.list_keys(&KeyPage::whole_group(&g.name)).await.unwrap(),
        vec![k1.clone(), k2.clone()]
    );
    let page = |group: Option<&GroupName>, after: Option<&Key>, limit| KeyPage {
        group: group.cloned(),
        after: after.map(KeyCursor::after),
        limit,
    };
    assert_eq!(
        s.list_keys(&page(None, None, 1000)).await.unwrap(),
        vec![k3.clone(), k1.clone(), k2.clone()]
    );
    // Pages by group name, then version, each resuming after the last key
    // of the one before, with or without a group.
    assert_eq!(
        s.list_keys(&page(None, None, 2)).await.unwrap(),
        vec![k3.clone(), k1.clone()]
    );
    assert_eq!(
        s.list_keys(&page(None, Some(&k1), 2)).await.unwrap(),
        vec![k2.clone()]
    );
    assert_eq!(
        s.list_keys(&page(None, Some(&k2), 2)).await.unwrap(),
        vec![]
    );
    assert_eq!(
        s.list_keys(&page(Some(&g.name), Some(&k1), 5))
            .await
            .unwrap(),
        vec![k2.clone()]
    );
    assert_eq!(
        s.list_keys(&page(Some(&g.name), Some(&k3), 1))
            .await
            .unwrap(),
        vec![k1.clone()],
        "a cursor from another group resumes at this group's first key after it"
    );
    let kms = k1.kms_key_id.clone().unwrap();
    assert_eq!(s.keys_in_kms_key(&kms).await.unwrap(), vec![k1.clone()]);
    let unknown = KmsKeyId::parse(&uuid::Uuid::new_v4().to_string()).unwrap();
    assert_eq!(s.keys_in_kms_key(&unknown).await.unwrap(), vec![]);
    // The next rotation's version comes from the group's highest, whatever
    // order the keys were inserted in.
    assert_eq!(s.latest_key_version(&g.name).await.unwrap(), Some(2));
    assert_eq!(s.latest_key_version(&k3.group).await.unwrap(), Some(1));
    let empty = GroupName::parse("no-keys").unwrap();
    assert_eq!(s.latest_key_version(&empty).await.unwrap(), None);

    k1.state = KeyState::Disabled;
    k1.valid_to = None;
    k1.keystore_handle = vec![9; 40];
    s.update_key(&k1, Some(&record("k1 disabled")))
        .await
        .unwrap();
    assert_eq!(s.get_key(k1.id).await.unwrap(), Some(k1.clone()));

    s.delete_key(k2.id, &record("k2 deleted")).await.unwrap();
    assert_eq!(s.get_key(k2.id).await.unwrap(), None);
    // c1 c2 g1 g2 g1-updated k1 k1-disabled k2-deleted
    assert_eq!(f.audit_count().await, 8);
}

/// The credential `aws-prod`, and the groups `names` on it.
async fn groups_of_one_credential(s: &Arc<dyn SqlStore>, names: &[&str]) {
    s.insert_credential(&credential("aws-prod"), &record("c"))
        .await
        .unwrap();
    for name in names {
        s.insert_group(&group(name, "aws-prod"), &record("g"))
            .await
            .unwrap();
    }
}

/// Keys are read in place from the database's rows (no copy of each column
/// first): a row edited behind keyhold's back is still reported as corrupt,
/// naming its column, by every read of keys.
#[tokio::test]
async fn a_key_row_edited_behind_keyholds_back_is_corrupt_in_every_read() {
    let f = Fixture::new().await;
    let s = &f.store;
    groups_of_one_credential(s, &["payments"]).await;
    let k = key("payments", 1);
    s.insert_key(&k, None).await.unwrap();
    let kms = k.kms_key_id.clone().unwrap();
    let mut conn = f.raw().await;
    let id = k.id;
    for (edit, column) in [
        ("check_digits = 'not digits'", "keys.check_digits"),
        ("valid_from = 'yesterday'", "keys.valid_from"),
        ("valid_to = '2026-13-01T00:00:00.000000Z'", "keys.valid_to"),
        ("state = 'melted'", "keys.state"),
        ("material_state = 'half'", "keys.material_state"),
        ("kms_material_id = ''", "keys.kms_material_id"),
        ("created_at = ''", "keys.created_at"),
        ("version = -1", "keys.version"),
    ] {
        assert_eq!(
            conn.execute(&format!("UPDATE keys SET {edit} WHERE id = '{id}'"))
                .await
                .unwrap(),
            1,
            "{edit}"
        );
        let reads = [
            s.list_keys(&KeyPage::whole_group(&k.group))
                .await
                .map(|_| ()),
            s.get_key(id).await.map(|_| ()),
            s.keys_in_kms_key(&kms).await.map(|_| ()),
        ];
        for read in reads {
            match read {
                Err(StoreError::Corrupt(why)) => assert!(why.contains(column), "{edit}: {why}"),
                other => panic!("{edit}: {other:?}"),
            }
        }
        conn.execute(&format!("DELETE FROM keys WHERE id = '{id}'"))
            .await
            .unwrap();
        s.insert_key(&k, None).await.unwrap();
    }
    assert_eq!(s.get_key(id).await.unwrap(), Some(k));
}

/// 16 clients walk the whole listing page by page while a rotation adds
/// keys to another group: every walk sees each key once, in order, the
/// keys there before it began all of them, and the connections the pages
/// borrowed all come back (a page after the walks is served).
#[tokio::test]
async fn sixteen_walks_of_the_listing_during_writes_see_every_key_once_in_order() {
    let f = Fixture::new().await;
    let s = &f.store;
    groups_of_one_credential(s, &["payments", "zeta"]).await;
    let before: Vec<Key> = (1..=40).map(|v| key("payments", v)).collect();
    for k in &before {
        s.insert_key(k, None).await.unwrap();
    }
    let writer = {
        let s = s.clone();
        tokio::spawn(async move {
            for v in 1..=40 {
                s.insert_key(&key("zeta", v), Some(&record("k")))
                    .await
                    .unwrap();
            }
        })
    };
    let walks: Vec<_> = (0..16)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move {
                let mut seen: Vec<Key> = Vec::new();
                loop {
                    let page = KeyPage {
                        group: None,
                        after: seen.last().map(KeyCursor::after),
                        limit: 7,
                    };
                    let keys = s.list_keys(&page).await.unwrap();
                    if keys.is_empty() {
                        return seen;
                    }
                    seen.extend(keys);
                }
            })
        })
        .collect();
    for walk in walks {
        let seen = walk.await.unwrap();
        assert_eq!(seen[..before.len()], before[..]);
        let zeta: Vec<u32> = seen[before.len()..].iter().map(|k| k.version).collect();
        assert_eq!(zeta, (1..=zeta.len() as u32).collect::<Vec<_>>());
        assert!(
            seen[before.len()..]
                .iter()
                .all(|k| k.group.as_str() == "zeta")
        );
    }
    writer.await.unwrap();
    let all = s
        .list_keys(&KeyPage {
            group: None,
            after: None,
            limit: 1000,
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 80);
}

/// An in-memory SQLite database has no file for the store's own readers to
/// open: its pages are read through sqlx, the same pages.
#[tokio::test]
async fn an_in_memory_database_pages_its_keys_too() {
    let mac = Arc::new(TestMac::default());
    let s = &connect("sqlite::memory:", &mac).await;
    groups_of_one_credential(s, &["payments"]).await;
    let keys: Vec<Key> = (1..=3).map(|v| key("payments", v)).collect();
    for k in &keys {
        s.insert_key(k, None).await.unwrap();
    }
    let first = KeyPage {
        group: None,
        after: None,
        limit: 2,
    };
    assert_eq!(s.list_keys(&first).await.unwrap(), keys[..2]);
    let next = KeyPage {
        after: Some(KeyCursor::after(&keys[1])),
        ..first
    };
    assert_eq!(s.list_keys(&next).await.unwrap(), keys[2..]);
}

/// Versions rotated in place share their KMS key: the database holds one key
/// first imported into each KMS key, and each material in it once.
#[tokio::test]
async fn versions_share_a_kms_key_each_with_its_own_material() {
    let f = Fixture::new().await;
    let s = &f.store;
    groups_of_one_credential(s, &["payments"]).await;
    let material = |digit: char| KeyMaterialId::parse(&digit.to_string().repeat(64)).unwrap();
    let mut first = key("payments", 1);
    first.kms_material_id = Some(material('a'));
    first.material_state = MaterialState::NonCurrent;
    s.insert_key(&first, None).await.unwrap();
    let mut second = key("payments", 2);
    second.kms_key_id = first.kms_key_id.clone();
    second.kms_material_id = Some(material('b'));
    second.rotated_in = true;
    s.insert_key(&second, None).await.unwrap();
    // Not yet imported: no material id, several may wait (at most one per
    // job, but the database does not need to know).
    let mut pending = key("payments", 3);
    pending.kms_key_id = first.kms_key_id.clone();
    pending.kms_material_id = None;
    pending.material_state = MaterialState::PendingRotation;
    pending.rotated_in = true;
    s.insert_key(&pending, None).await.unwrap();
    let kms = first.kms_key_id.clone().unwrap();
    assert_eq!(
        s.keys_in_kms_key(&kms).await.unwrap(),
        vec![first.clone(), second.clone(), pending.clone()]
    );

    // A second key first imported into the same KMS key, or the same
    // material twice, is refused.
    let mut another_first = key("payments", 4);
    another_first.kms_key_id = first.kms_key_id.clone();
    assert!(matches!(
        s.insert_key(&another_first, None).await,
        Err(StoreError::Duplicate)
    ));
    let mut same_material = key("payments", 5);
    same_material.kms_key_id = first.kms_key_id.clone();
    same_material.kms_material_id = Some(material('b'));
    same_material.rotated_in = true;
    assert!(matches!(
        s.insert_key(&same_material, None).await,
        Err(StoreError::Duplicate)
    ));
}

#[tokio::test]
async fn referenced_rows_cannot_be_deleted() {
    let f = Fixture::new().await;
    let s = &f.store;
    let cred = credential("aws-prod");
    let g = group("payments", "aws-prod");
    let k = key("payments", 1);
    s.insert_credential(&cred, &record("c")).await.unwrap();
    s.insert_group(&g, &record("g")).await.unwrap();
    s.insert_key(&k, None).await.unwrap();

    let r = s.delete_credential(&cred.name, &record("x")).await;
    assert!(matches!(r, Err(StoreError::InUse)), "{r:?}");
    assert!(matches!(
        s.delete_group(&g.name, &record("x")).await,
        Err(StoreError::InUse)
    ));
    assert_eq!(f.audit_count().await, 2);
    assert!(s.get_group(&g.name).await.unwrap().is_some());
    assert!(s.get_credential(&cred.name).await.unwrap().is_some());

    s.delete_key(k.id, &record("k")).await.unwrap();
    s.delete_group(&g.name, &record("g")).await.unwrap();
    s.delete_credential(&cred.name, &record("c")).await.unwrap();
    assert_eq!(s.list_groups().await.unwrap(), vec![]);
    assert_eq!(s.list_credentials().await.unwrap(), vec![]);
    assert_eq!(f.audit_count().await, 5);
}

#[tokio::test]
async fn settings_default_until_saved() {
    let f = Fixture::new().await;
    let s = &f.store;
    assert_eq!(s.get_settings().await.unwrap(), Settings::default());
    let changed = Settings {
        dual_control: false,
        lockout_threshold: 3,
        ..Settings::default()
    };
    s.put_settings(&changed, &record("Changed configuration"))
        .await
        .unwrap();
    assert_eq!(s.get_settings().await.unwrap(), changed);
    let again = Settings {
        session_max_hours: 1,
        ..changed
    };
    s.put_settings(&again, &record("Changed configuration"))
        .await
        .unwrap();
    assert_eq!(s.get_settings().await.unwrap(), again);
    assert_eq!(f.audit_count().await, 2);
}
