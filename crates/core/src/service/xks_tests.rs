//! External key stores against the fakes: who may do what alone, what
//! needs two or a quorum, the credential limit under parallel rotations,
//! where secrets go (and never go), and what the audit entries record.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::approval::{ApprovalPolicies, OperationClass, Quorum};
use crate::clock::ManualClock;
use crate::error::{CoreError, KeystoreError};
use crate::identity::{Identity, Operation, Role, Session, SessionIdentity};
use crate::names::IdentityName;
use crate::ports::Keystore;
use crate::service::{Gate, Keyhold, NewXksKey, NewXksStore};
use crate::testing::{FakeKeystore, FakeStore};
use crate::xks::{
    AuthorizationRule, MtlsRule, PathPrefix, Pattern, XksAccessKeyId, XksKey, XksKeyChange,
    XksKeyUsage, XksStoreChange, XksStoreName, secret_context,
};

struct World {
    keyhold: Keyhold,
    store: Arc<FakeStore>,
    keystore: Arc<FakeKeystore>,
}

fn world() -> World {
    let store = Arc::new(FakeStore::new());
    let keystore = Arc::new(FakeKeystore::new());
    let keyhold = Keyhold::new(
        store.clone(),
        keystore.clone(),
        Arc::new(ManualClock::new(chrono::DateTime::UNIX_EPOCH)),
    );
    World {
        keyhold,
        store,
        keystore,
    }
}

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

fn auditor() -> Session {
    session(&[("Aud1", Role::Auditor)])
}

fn payments() -> XksStoreName {
    XksStoreName::parse("payments").unwrap()
}

fn new_store(name: &str) -> NewXksStore {
    NewXksStore {
        name: XksStoreName::parse(name).unwrap(),
        path_prefix: None,
        quota_per_second: None,
        mtls: None,
    }
}

fn new_key(enabled: bool) -> NewXksKey {
    NewXksKey {
        description: "orders database".into(),
        usage: XksKeyUsage::EncryptDecrypt,
        rule: AuthorizationRule {
            principals: vec![Pattern::parse("arn:aws:iam::111122223333:role/app-*").unwrap()],
            ..AuthorizationRule::default()
        },
        enabled,
    }
}

fn change(f: impl FnOnce(&mut XksKeyChange)) -> XksKeyChange {
    let mut c = XksKeyChange::default();
    f(&mut c);
    c
}

/// A world with store `payments` (one credential) and one enabled key.
async fn world_with_key() -> (World, XksKey) {
    let w = world();
    w.keyhold
        .create_xks_store(&two_officers(), new_store("payments"))
        .await
        .unwrap();
    let key = w
        .keyhold
        .create_xks_key(&two_officers(), &payments(), new_key(true))
        .await
        .unwrap();
    (w, key)
}

fn assert_dual(result: Result<impl std::fmt::Debug, CoreError>, what: &str) {
    match result {
        Err(CoreError::DualControlRequired { .. }) => {}
        other => panic!("{what}: {other:?}"),
    }
}

fn assert_forbidden(result: Result<impl std::fmt::Debug, CoreError>, what: &str) {
    match result {
        Err(CoreError::Forbidden(_)) => {}
        other => panic!("{what}: {other:?}"),
    }
}

#[tokio::test]
async fn one_officer_alone_is_refused_every_dual_operation_and_two_run_them() {
    let (w, key) = world_with_key().await;
    let k = &w.keyhold;
    let before = w.store.snapshot();
    let one = officer();
    let credential = before.xks_credentials[0].access_key_id.clone();

    assert_dual(
        k.create_xks_store(&one, new_store("other")).await,
        "create store",
    );
    assert_dual(
        k.update_xks_store(
            &one,
            &payments(),
            XksStoreChange {
                quota_per_second: Some(10),
                ..Default::default()
            },
        )
        .await,
        "update store",
    );
    assert_dual(
        k.add_xks_credential(&one, &payments()).await,
        "add credential",
    );
    assert_dual(
        k.revoke_xks_credential(&one, &payments(), &credential)
            .await,
        "revoke credential",
    );
    assert_dual(k.delete_xks_store(&one, &payments()).await, "delete store");
    assert_dual(
        k.create_xks_key(&one, &payments(), new_key(false)).await,
        "create key",
    );
    assert_dual(k.delete_xks_key(&one, key.id).await, "delete key");
    let after = w.store.snapshot();
    assert_eq!(after.audit.len(), before.audit.len(), "nothing audited");
    assert_eq!(after.xks_revision, before.xks_revision, "nothing written");
    assert_eq!(after.xks_stores, before.xks_stores);
    assert_eq!(after.xks_keys, before.xks_keys);

    // Two officers run each of them.
    let two = two_officers();
    k.create_xks_store(&two, new_store("other")).await.unwrap();
    let updated = k
        .update_xks_store(
            &two,
            &payments(),
            XksStoreChange {
                quota_per_second: Some(10),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.quota_per_second, 10);
    k.add_xks_credential(&two, &payments()).await.unwrap();
    k.revoke_xks_credential(&two, &payments(), &credential)
        .await
        .unwrap();
    k.update_xks_key(&one, key.id, change(|c| c.enabled = Some(false)))
        .await
        .unwrap();
    k.delete_xks_key(&two, key.id).await.unwrap();
    k.delete_xks_store(&two, &payments()).await.unwrap();
    let after = w.store.snapshot();
    assert_eq!(after.xks_stores.len(), 1);
    assert_eq!(after.xks_stores[0].name.as_str(), "other");
    assert_eq!(
        after.xks_credentials.len(),
        1,
        "the deleted store's went with it"
    );
    assert!(after.xks_keys.is_empty());
}

#[tokio::test]
async fn one_key_officer_disables_and_narrows_alone_but_never_widens() {
    let (w, key) = world_with_key().await;
    let k = &w.keyhold;
    let one = officer();

    let narrowed = k
        .update_xks_key(
            &one,
            key.id,
            change(|c| {
                c.usage = Some(XksKeyUsage::Decrypt);
                c.description = Some("retiring".into());
            }),
        )
        .await
        .unwrap();
    assert_eq!(narrowed.usage, XksKeyUsage::Decrypt);
    let disabled = k
        .update_xks_key(&one, key.id, change(|c| c.enabled = Some(false)))
        .await
        .unwrap();
    assert!(!disabled.enabled);
    let entry = w.store.snapshot().audit.last().unwrap().clone();
    assert_eq!(entry.summary, format!("Updated XKS key {}", key.id));
    assert_eq!(entry.users, "Off1");
    assert_eq!(entry.details["changed"], serde_json::json!(["enabled"]));
    assert_eq!(entry.details["dual_control"], false);
    assert_eq!(entry.details["before"]["enabled"], true);
    assert_eq!(entry.details["after"]["enabled"], false);

    let widening = [
        ("enable", change(|c| c.enabled = Some(true))),
        (
            "usage",
            change(|c| c.usage = Some(XksKeyUsage::EncryptDecrypt)),
        ),
        (
            "rule",
            change(|c| c.rule = Some(AuthorizationRule::default())),
        ),
        (
            "enable with a harmless description",
            change(|c| {
                c.enabled = Some(true);
                c.description = Some("sneaky".into());
            }),
        ),
    ];
    let before = w.store.snapshot();
    for (what, widen) in widening {
        assert_eq!(
            Keyhold::xks_key_operation(&widen, &disabled),
            Operation::MANAGE_XKS_KEYS,
            "{what}"
        );
        assert_dual(k.update_xks_key(&one, key.id, widen).await, what);
    }
    let after = w.store.snapshot();
    assert_eq!(after.xks_keys, before.xks_keys);
    assert_eq!(after.audit.len(), before.audit.len());

    // The same rule again gives nothing: one officer, and nothing written.
    let same_rule = change(|c| c.rule = Some(key.rule.clone()));
    assert_eq!(
        Keyhold::xks_key_operation(&same_rule, &disabled),
        Operation::RESTRICT_XKS_KEY
    );
    let unchanged = k.update_xks_key(&one, key.id, same_rule).await.unwrap();
    assert_eq!(unchanged, disabled);
    assert_eq!(w.store.snapshot().xks_revision, after.xks_revision);

    // Two officers widen it again; the entry says dual control.
    let enabled = k
        .update_xks_key(
            &two_officers(),
            key.id,
            change(|c| {
                c.enabled = Some(true);
                c.usage = Some(XksKeyUsage::EncryptDecrypt);
            }),
        )
        .await
        .unwrap();
    assert!(enabled.enabled);
    let entry = w.store.snapshot().audit.last().unwrap().clone();
    assert_eq!(entry.details["dual_control"], true);
    assert_eq!(
        entry.details["changed"],
        serde_json::json!(["usage", "enabled"])
    );
}

#[tokio::test]
async fn an_auditor_reads_everything_and_changes_nothing() {
    let (w, key) = world_with_key().await;
    let k = &w.keyhold;
    let aud = auditor();
    assert_eq!(k.list_xks_stores(&aud).await.unwrap().len(), 1);
    let detail = k.get_xks_store(&aud, &payments()).await.unwrap();
    assert_eq!(detail.credentials.len(), 1);
    assert_eq!(detail.keys, vec![key.clone()]);
    assert_eq!(k.list_xks_keys(&aud, None).await.unwrap().len(), 1);
    assert_eq!(
        k.list_xks_keys(&aud, Some(&payments())).await.unwrap(),
        vec![key.clone()]
    );
    assert_eq!(k.get_xks_key(&aud, key.id).await.unwrap(), key);

    let before = w.store.snapshot();
    let credential = before.xks_credentials[0].access_key_id.clone();
    assert_forbidden(k.create_xks_store(&aud, new_store("x")).await, "create");
    assert_forbidden(
        k.update_xks_store(&aud, &payments(), XksStoreChange::default())
            .await,
        "update store",
    );
    assert_forbidden(k.delete_xks_store(&aud, &payments()).await, "delete store");
    assert_forbidden(k.add_xks_credential(&aud, &payments()).await, "add");
    assert_forbidden(
        k.revoke_xks_credential(&aud, &payments(), &credential)
            .await,
        "revoke",
    );
    assert_forbidden(
        k.create_xks_key(&aud, &payments(), new_key(false)).await,
        "create key",
    );
    assert_forbidden(
        k.update_xks_key(&aud, key.id, change(|c| c.enabled = Some(false)))
            .await,
        "disable key",
    );
    // Refused before anything is read: the same answer for a key that
    // does not exist.
    assert_forbidden(
        k.update_xks_key(
            &aud,
            uuid::Uuid::new_v4(),
            change(|c| c.enabled = Some(false)),
        )
        .await,
        "disable a missing key",
    );
    assert_forbidden(k.delete_xks_key(&aud, key.id).await, "delete key");
    let after = w.store.snapshot();
    assert_eq!(after.xks_revision, before.xks_revision);
    assert_eq!(after.audit.len(), before.audit.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_parallel_rotations_leave_exactly_two_credentials() {
    let w = world();
    w.keyhold
        .create_xks_store(&two_officers(), new_store("payments"))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let keyhold = w.keyhold.clone();
            tokio::spawn(async move {
                keyhold
                    .add_xks_credential(&two_officers(), &payments())
                    .await
            })
        })
        .collect();
    let mut added = 0;
    let mut refused = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => added += 1,
            Err(CoreError::Conflict(message)) => {
                assert!(
                    message.contains("has 2 credentials already")
                        && message.contains("revoke the older one"),
                    "{message}"
                );
                refused += 1;
            }
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!((added, refused), (1, 15));
    let state = w.store.snapshot();
    assert_eq!(state.xks_credentials.len(), 2);
    let adds = state
        .audit
        .iter()
        .filter(|a| a.summary == "Added a credential to external key store payments")
        .count();
    assert_eq!(adds, 1, "only the credential written is audited");
}

#[tokio::test]
async fn secrets_are_stored_sealed_to_their_credential_and_never_audited() {
    let w = world();
    let k = &w.keyhold;
    let first = k
        .create_xks_store(&two_officers(), new_store("payments"))
        .await
        .unwrap();
    let second = k
        .add_xks_credential(&two_officers(), &payments())
        .await
        .unwrap();
    let state = w.store.snapshot();
    assert_eq!(state.xks_credentials.len(), 2);
    for (issued, stored) in [&first, &second].into_iter().zip(&state.xks_credentials) {
        let secret = issued.secret.expose();
        assert_eq!(stored.access_key_id, issued.access_key_id);
        assert!(
            !contains(&stored.sealed_secret, secret.as_bytes()),
            "the store holds the secret in the clear"
        );
        let opened = w
            .keystore
            .open_secret(&secret_context(stored.id), &stored.sealed_secret)
            .unwrap();
        assert_eq!(opened.as_slice(), secret.as_bytes());
        // Bound to its credential: another's context does not open it.
        assert!(matches!(
            w.keystore
                .open_secret(&secret_context(uuid::Uuid::new_v4()), &stored.sealed_secret),
            Err(KeystoreError::SealBroken)
        ));
        assert!(!format!("{issued:?}").contains(secret));
        assert_eq!(k.open_xks_secret(stored).unwrap().expose(), secret);
    }
    for entry in &state.audit {
        let text = serde_json::to_string(entry).unwrap();
        for issued in [&first, &second] {
            assert!(!text.contains(issued.secret.expose()), "{text}");
        }
    }
    let snapshot = k.xks_snapshot().await.unwrap();
    assert!(!format!("{snapshot:?}").contains(first.secret.expose()));

    let file = first.kms_console_file();
    assert_eq!(file["XksProxyUriPath"], "/xks/payments/kms/xks/v1");
    assert_eq!(
        file["XksProxyAuthenticationCredential"]["AccessKeyId"],
        first.access_key_id.as_str()
    );
    assert_eq!(
        file["XksProxyAuthenticationCredential"]["RawSecretAccessKey"],
        first.secret.expose()
    );
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn identity(name: &str, role: Role) -> Identity {
    Identity {
        name: IdentityName::parse(name).unwrap(),
        role,
        password_hash: String::new(),
        must_change_password: false,
        failed_logins: 0,
        locked_until: None,
        created_at: chrono::DateTime::UNIX_EPOCH,
    }
}

/// Holds `class` to one approval from another key officer.
fn quorum_world(classes: &[OperationClass]) -> World {
    let w = world();
    for (name, role) in [
        ("Off1", Role::KeyOfficer),
        ("Off2", Role::KeyOfficer),
        ("Off3", Role::KeyOfficer),
    ] {
        w.store.put_identity(identity(name, role));
    }
    let mut settings = w.store.snapshot().settings;
    settings.approval_policies = ApprovalPolicies::new(
        classes
            .iter()
            .map(|&class| (class, Quorum::new(1, Role::KeyOfficer, 24).unwrap()))
            .collect::<BTreeMap<_, _>>(),
    );
    w.store.replace_settings(settings);
    w
}

#[tokio::test]
async fn a_quorum_on_xks_keys_turns_creating_one_into_an_approval_request() {
    let w = quorum_world(&[OperationClass::ManageXksKeys]);
    let k = &w.keyhold;
    k.create_xks_store(&two_officers(), new_store("payments"))
        .await
        .unwrap();
    let refused = k
        .create_xks_key(&two_officers(), &payments(), new_key(true))
        .await;
    assert!(
        matches!(refused, Err(CoreError::ApprovalRequired { .. })),
        "{refused:?}"
    );
    assert!(w.store.snapshot().xks_keys.is_empty());
    assert_eq!(
        k.gate(&officer(), Operation::MANAGE_XKS_KEYS)
            .await
            .unwrap(),
        Gate::Request(OperationClass::ManageXksKeys)
    );

    // Asked for, approved by another officer, run in the approved session.
    let request = k
        .request_approval(
            &officer(),
            Operation::MANAGE_XKS_KEYS,
            serde_json::json!({"create_xks_key": "payments"}),
            "Create an XKS key in payments".into(),
        )
        .await
        .unwrap();
    let approved = k
        .approve(&session(&[("Off3", Role::KeyOfficer)]), request.id)
        .await
        .unwrap();
    let run_as = k.approved_session(&approved).await.unwrap();
    let key = k
        .create_xks_key(&run_as, &payments(), new_key(true))
        .await
        .unwrap();
    let state = w.store.snapshot();
    assert_eq!(state.xks_keys, vec![key.clone()]);
    assert_eq!(
        state.approvals[&request.id].status,
        crate::approval::ApprovalStatus::Executed
    );

    // Restricting stays one officer's to do, quorum or not.
    k.update_xks_key(&officer(), key.id, change(|c| c.enabled = Some(false)))
        .await
        .unwrap();
}

/// Asks for `op` as Off1, has Off3 approve it, and returns the session
/// the approved request runs in.
async fn approved(k: &Keyhold, op: Operation, what: &str) -> Session {
    let request = k
        .request_approval(
            &officer(),
            op,
            serde_json::json!({ "what": what }),
            what.to_owned(),
        )
        .await
        .unwrap();
    let approved = k
        .approve(&session(&[("Off3", Role::KeyOfficer)]), request.id)
        .await
        .unwrap();
    k.approved_session(&approved).await.unwrap()
}

#[tokio::test]
async fn an_approved_widening_still_runs_when_the_key_was_widened_meanwhile() {
    let w = quorum_world(&[
        OperationClass::ManageXksKeys,
        OperationClass::ManageXksStores,
    ]);
    let k = &w.keyhold;
    let run_as = approved(k, Operation::MANAGE_XKS_STORES, "create store").await;
    k.create_xks_store(&run_as, new_store("payments"))
        .await
        .unwrap();
    let run_as = approved(k, Operation::MANAGE_XKS_KEYS, "create").await;
    let key = k
        .create_xks_key(&run_as, &payments(), new_key(false))
        .await
        .unwrap();
    // Two requests to enable the key, both approved.
    let first = approved(k, Operation::MANAGE_XKS_KEYS, "enable").await;
    let second = approved(k, Operation::MANAGE_XKS_KEYS, "enable, described").await;
    let enable = change(|c| c.enabled = Some(true));
    assert!(enable.widens(&key));
    assert!(
        k.update_xks_key(&first, key.id, enable)
            .await
            .unwrap()
            .enabled
    );
    // The second widens nothing now: it runs all the same, its approval
    // covering more than it needs.
    let described = change(|c| {
        c.enabled = Some(true);
        c.description = Some("enabled".into());
    });
    let updated = k.update_xks_key(&second, key.id, described).await.unwrap();
    assert_eq!(updated.description, "enabled");
    // An approved request runs its own class only: not even a restriction
    // of a key under an approval for stores.
    let stores = approved(k, Operation::MANAGE_XKS_STORES, "add credential").await;
    assert_forbidden(
        k.update_xks_key(&stores, key.id, change(|c| c.enabled = Some(false)))
            .await,
        "restrict under a store approval",
    );
}

#[tokio::test]
async fn a_credential_made_by_an_approved_request_waits_sealed_for_its_requester() {
    let w = quorum_world(&[OperationClass::ManageXksStores]);
    let k = &w.keyhold;
    assert!(matches!(
        k.create_xks_store(&two_officers(), new_store("payments"))
            .await,
        Err(CoreError::ApprovalRequired { .. })
    ));
    let request = k
        .request_approval(
            &officer(),
            Operation::MANAGE_XKS_STORES,
            serde_json::json!({"create_xks_store": "payments"}),
            "Create external key store payments".into(),
        )
        .await
        .unwrap();
    let approved = k
        .approve(&session(&[("Off3", Role::KeyOfficer)]), request.id)
        .await
        .unwrap();
    let run_as = k.approved_session(&approved).await.unwrap();
    let issued = k
        .create_xks_store(&run_as, new_store("payments"))
        .await
        .unwrap();
    let result = k
        .collect_approval_result(&officer(), request.id)
        .await
        .unwrap();
    let file: serde_json::Value = serde_json::from_slice(&result).unwrap();
    assert_eq!(file, issued.kms_console_file());
    for entry in &w.store.snapshot().audit {
        let text = serde_json::to_string(entry).unwrap();
        assert!(!text.contains(issued.secret.expose()));
    }
}

#[tokio::test]
async fn an_enabled_key_is_not_deleted_and_a_store_with_keys_stays() {
    let (w, key) = world_with_key().await;
    let k = &w.keyhold;
    assert!(w.keystore.has_xks_material(key.id));

    let Err(CoreError::Conflict(message)) = k.delete_xks_key(&two_officers(), key.id).await else {
        panic!("an enabled key was deleted");
    };
    assert!(message.contains("disable it first"), "{message}");
    assert!(message.contains("unreadable"), "{message}");
    assert!(w.keystore.has_xks_material(key.id), "material kept");
    assert_eq!(w.store.snapshot().xks_keys, vec![key.clone()]);

    let Err(CoreError::Conflict(message)) = k.delete_xks_store(&two_officers(), &payments()).await
    else {
        panic!("a store with keys was deleted");
    };
    assert!(message.contains("1 XKS key:"), "{message}");

    k.update_xks_key(&officer(), key.id, change(|c| c.enabled = Some(false)))
        .await
        .unwrap();
    k.delete_xks_key(&two_officers(), key.id).await.unwrap();
    assert!(!w.keystore.has_xks_material(key.id), "material destroyed");
    assert!(w.store.snapshot().xks_keys.is_empty());
    assert!(matches!(
        k.delete_xks_key(&two_officers(), key.id).await,
        Err(CoreError::NotFound { .. })
    ));
    k.delete_xks_store(&two_officers(), &payments())
        .await
        .unwrap();
}

#[tokio::test]
async fn the_snapshot_is_read_at_its_revision_and_moves_with_every_write() {
    let (w, key) = world_with_key().await;
    let k = &w.keyhold;
    let snapshot = k.xks_snapshot().await.unwrap();
    let state = w.store.snapshot();
    assert_eq!(snapshot.revision, state.xks_revision);
    assert_eq!(snapshot.revision, 2, "a store and a key written");
    assert_eq!(snapshot.stores, state.xks_stores);
    assert_eq!(snapshot.credentials, state.xks_credentials);
    assert_eq!(snapshot.keys, vec![key.clone()]);

    // A change that changes nothing writes nothing, so nodes reload nothing.
    k.update_xks_key(&officer(), key.id, change(|c| c.enabled = Some(true)))
        .await
        .unwrap();
    k.update_xks_store(
        &two_officers(),
        &payments(),
        XksStoreChange {
            quota_per_second: Some(1800),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(k.xks_snapshot().await.unwrap().revision, 2);

    k.update_xks_key(&officer(), key.id, change(|c| c.enabled = Some(false)))
        .await
        .unwrap();
    let next = k.xks_snapshot().await.unwrap();
    assert_eq!(next.revision, 3);
    assert!(!next.keys[0].enabled);
}

#[tokio::test]
async fn audit_entries_say_what_happened_with_their_details() {
    let w = world();
    let k = &w.keyhold;
    let two = two_officers();
    let ca = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let issued = k
        .create_xks_store(
            &two,
            NewXksStore {
                name: payments(),
                path_prefix: Some(PathPrefix::parse("/tenant/payments").unwrap()),
                quota_per_second: Some(500),
                mtls: Some(MtlsRule::new("cks.kms.eu-west-1.amazonaws.com", ca).unwrap()),
            },
        )
        .await
        .unwrap();
    let added = k.add_xks_credential(&two, &payments()).await.unwrap();
    k.revoke_xks_credential(&two, &payments(), &issued.access_key_id)
        .await
        .unwrap();
    k.update_xks_store(
        &two,
        &payments(),
        XksStoreChange {
            mtls: Some(None),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let key = k
        .create_xks_key(&two, &payments(), new_key(false))
        .await
        .unwrap();
    k.update_xks_key(
        &officer(),
        key.id,
        change(|c| c.usage = Some(XksKeyUsage::Encrypt)),
    )
    .await
    .unwrap();
    k.delete_xks_key(&two, key.id).await.unwrap();
    k.delete_xks_store(&two, &payments()).await.unwrap();

    let state = w.store.snapshot();
    assert_eq!(
        state.audit_summaries(),
        vec![
            "Created external key store payments".to_owned(),
            "Added a credential to external key store payments".to_owned(),
            format!(
                "Revoked credential {} of external key store payments",
                issued.access_key_id
            ),
            "Updated external key store payments".to_owned(),
            "Created an XKS key in external key store payments".to_owned(),
            format!("Updated XKS key {}", key.id),
            format!("Deleted XKS key {}", key.id),
            "Deleted external key store payments".to_owned(),
        ]
    );
    assert!(
        state
            .audit
            .iter()
            .all(|a| a.users == "Off1,Off2" || a.users == "Off1")
    );
    let created = &state.audit[0].details;
    assert_eq!(created["path_prefix"], "/tenant/payments");
    assert_eq!(created["uri_path"], "/tenant/payments/kms/xks/v1");
    assert_eq!(created["quota_per_second"], 500);
    assert_eq!(created["mtls_subject"], "cks.kms.eu-west-1.amazonaws.com");
    assert_eq!(created["mtls_ca_sha256"].as_str().unwrap().len(), 64);
    assert_eq!(created["access_key_id"], issued.access_key_id.as_str());
    assert_eq!(
        state.audit[1].details["access_key_id"],
        added.access_key_id.as_str()
    );
    let updated = &state.audit[3].details;
    assert_eq!(
        updated["before"]["mtls_subject"],
        "cks.kms.eu-west-1.amazonaws.com"
    );
    assert_eq!(updated["after"]["mtls_subject"], serde_json::Value::Null);
    let key_created = &state.audit[4].details;
    assert_eq!(key_created["store"], "payments");
    assert_eq!(key_created["key_id"], key.id.to_string());
    assert_eq!(key_created["usage"], "encrypt_decrypt");
    assert_eq!(key_created["enabled"], false);
    assert_eq!(key_created["check_digits"], key.check_digits.as_str());
    assert_eq!(
        key_created["rule"]["principals"],
        serde_json::json!(["arn:aws:iam::111122223333:role/app-*"])
    );
    assert_eq!(state.audit[5].details["before"]["usage"], "encrypt_decrypt");
    assert_eq!(state.audit[5].details["after"]["usage"], "encrypt");
    assert_eq!(
        state.audit[6].details["before"]["check_digits"],
        key.check_digits.as_str()
    );
}

#[tokio::test]
async fn long_rules_are_audited_by_their_sizes_and_hash() {
    let w = world();
    let k = &w.keyhold;
    k.create_xks_store(&two_officers(), new_store("payments"))
        .await
        .unwrap();
    let long = Pattern::parse(&format!(
        "arn:aws:iam::111122223333:role/{}",
        "a".repeat(1000)
    ))
    .unwrap();
    let key = k
        .create_xks_key(
            &two_officers(),
            &payments(),
            NewXksKey {
                rule: AuthorizationRule {
                    principals: vec![long; 20],
                    ..AuthorizationRule::default()
                },
                ..new_key(false)
            },
        )
        .await
        .unwrap();
    let entry = w.store.snapshot().audit.last().unwrap().clone();
    assert_eq!(entry.details["key_id"], key.id.to_string());
    assert_eq!(entry.details["rule"]["entries"]["principals"], 20);
    assert_eq!(entry.details["rule"]["sha256"].as_str().unwrap().len(), 64);
}

#[tokio::test]
async fn refusals_say_what_to_do() {
    let (w, key) = world_with_key().await;
    let k = &w.keyhold;
    let two = two_officers();

    let Err(CoreError::Conflict(taken)) = k.create_xks_store(&two, new_store("payments")).await
    else {
        panic!("a second store of the name");
    };
    assert!(taken.contains("choose another name"), "{taken}");
    let Err(CoreError::Conflict(taken)) = k
        .create_xks_store(
            &two,
            NewXksStore {
                path_prefix: Some(PathPrefix::parse("/xks/payments").unwrap()),
                ..new_store("other")
            },
        )
        .await
    else {
        panic!("a second store on the prefix");
    };
    assert!(
        taken.contains("/xks/payments") && taken.contains("another prefix"),
        "{taken}"
    );
    assert!(matches!(
        k.create_xks_store(
            &two,
            NewXksStore {
                quota_per_second: Some(0),
                ..new_store("other")
            }
        )
        .await,
        Err(CoreError::Invalid(_))
    ));

    let missing = XksStoreName::parse("missing").unwrap();
    for result in [
        k.add_xks_credential(&two, &missing).await.map(drop),
        k.create_xks_key(&two, &missing, new_key(false))
            .await
            .map(drop),
        k.delete_xks_store(&two, &missing).await,
        k.get_xks_store(&two, &missing).await.map(drop),
    ] {
        assert!(
            matches!(result, Err(CoreError::NotFound { .. })),
            "{result:?}"
        );
    }
    let unknown = XksAccessKeyId::parse("AAAAAAAAAAAAAAAAAAAAAAAAAA").unwrap();
    assert!(matches!(
        k.revoke_xks_credential(&two, &payments(), &unknown).await,
        Err(CoreError::NotFound { .. })
    ));
    assert!(matches!(
        k.update_xks_key(
            &officer(),
            uuid::Uuid::new_v4(),
            change(|c| c.enabled = Some(false))
        )
        .await,
        Err(CoreError::NotFound { .. })
    ));
    assert!(matches!(
        k.update_xks_key(
            &officer(),
            key.id,
            change(|c| c.description = Some("bad\u{7}".into()))
        )
        .await,
        Err(CoreError::Invalid(_))
    ));
}

#[tokio::test]
async fn a_key_made_by_the_keystore_encrypts_and_decrypts_there() {
    let (w, key) = world_with_key().await;
    let ks = &w.keystore;
    let sealed = ks
        .xks_encrypt(key.id, &key.handle, b"plaintext", b"aad")
        .unwrap();
    assert_ne!(sealed.ciphertext, b"plaintext");
    assert_eq!(
        ks.xks_decrypt(key.id, &key.handle, &sealed, b"aad")
            .unwrap()
            .as_slice(),
        b"plaintext"
    );
}
