//! Rotation in place (`rotation_strategy: new_material`): one KMS key, new
//! material per rotation, made current by `RotateKeyOnDemand`.
//!
//! Which peer proves what:
//! - LocalStack 4.11.1 (`KEYHOLD_TEST_KMS_ROTATION_ENDPOINT`; 4.8.1, the
//!   suite's main peer, answers 501 to new material): the rotations
//!   themselves, the ARN that never changes, `CurrentKeyMaterialId`
//!   following keyhold's newest version, every earlier ciphertext still
//!   decrypting, AWS's own rotation limit (LocalStack enforces 10).
//! - The benchmark's KMS peer in its faithful mode (`keyhold_bench`), where
//!   LocalStack falls short: it checks `ImportType` and `KeyMaterialId`,
//!   deletes one material by its id, lists materials (`ListKeyRotations`)
//!   and decrypts after a delete and re-import, which 4.11.1 breaks.

use aws_sdk_kms::types::{ImportState, IncludeKeyMaterial, KeyMaterialState};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::kms::Kms;

/// The LocalStack that serves on-demand rotation of imported material.
pub(crate) fn rotation_peer() -> String {
    std::env::var("KEYHOLD_TEST_KMS_ROTATION_ENDPOINT").expect(
        "no KMS peer for in-place rotation: run the suite with ./scripts/test, or \
         `eval \"$(KEYHOLD_LOCALSTACK_SERIES=4.11 scripts/localstack start)\"` first \
         (KEYHOLD_TEST_KMS_ROTATION_ENDPOINT is unset)",
    )
}

/// The faithful peer shared by the whole test process, once started.
static SHARED_FAITHFUL_PEER: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// One faithful peer for the whole test process, on a thread of its own, for
/// `keyhold serve` processes (the crash cases) that outlive any one test's
/// runtime; the allow-list of every server started afterwards names it.
pub(crate) fn shared_faithful_peer() -> &'static str {
    SHARED_FAITHFUL_PEER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let peer = keyhold_bench::kms_peer::KmsPeer::start_faithful()
                    .await
                    .unwrap();
                tx.send(peer.endpoint.clone()).unwrap();
                // Serves for as long as the process runs.
                std::future::pending::<()>().await;
                drop(peer);
            });
        });
        rx.recv().unwrap()
    })
}

/// The shared faithful peer, when this process has started it.
pub(crate) fn started_faithful_peer() -> Option<String> {
    SHARED_FAITHFUL_PEER.get().cloned()
}

/// A server whose credential `aws` reaches `endpoint`, a session of both
/// administrators, and a `new_material` group `name` with `at_limit`.
async fn scene(endpoint: &str, name: &str, at_limit: &str) -> (TestApp, String) {
    let allowed = endpoint.to_owned();
    let app = TestApp::spawn_with(move |args| allow_endpoints(args, &[&allowed])).await;
    let token = app.dual_session().await;
    app.import_credential_at(&token, "aws", endpoint).await;
    let mut body = group_body(name, "aws");
    body["rotation_strategy"] = json!("new_material");
    body["at_rotation_limit"] = json!(at_limit);
    body["disable_after_rotate"] = json!(false);
    let (status, group) = app.create_group(&token, body).await;
    assert_eq!(status, StatusCode::CREATED, "{group}");
    assert_eq!(group["rotation_strategy"], "new_material");
    assert_eq!(group["at_rotation_limit"], at_limit);
    (app, token)
}

/// The group's keys, by version.
async fn keys_of(app: &TestApp, token: &str, group: &str) -> Vec<Value> {
    let (status, keys) = app.get(&format!("/api/v1/keys?group={group}"), token).await;
    assert_eq!(status, StatusCode::OK, "{keys}");
    let mut keys = keys.as_array().unwrap().clone();
    keys.sort_by_key(|k| k["version"].as_u64().unwrap());
    keys
}

async fn rotate_job(app: &TestApp, token: &str, group: &str) -> Value {
    let id = app.rotate(token, group).await;
    let job = app.wait_job(token, &id).await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    job
}

#[tokio::test]
async fn three_rotations_keep_the_arn_and_every_ciphertext_decrypts() {
    let endpoint = rotation_peer();
    let group = unique("inplace");
    let (app, token) = scene(&endpoint, &group, "new_key").await;
    let kms = Kms::at(&endpoint).await;
    let alias = format!("alias/{group}");

    let first = rotate_job(&app, &token, &group).await;
    let kms_key = first["kms_key_id"].as_str().unwrap().to_owned();
    let arn = kms.describe(&kms_key).await.arn().unwrap().to_owned();
    let mut ciphertexts = vec![kms.encrypt(&alias, b"version 1").await];
    for version in 2..=4 {
        let job = rotate_job(&app, &token, &group).await;
        assert_eq!(job["kms_key_id"], kms_key.as_str(), "{job:#}");
        assert!(
            job["messages"].to_string().contains("Rotated on demand"),
            "{job:#}"
        );
        // AWS's current material is the version keyhold just made.
        let keys = keys_of(&app, &token, &group).await;
        let newest = keys.last().unwrap();
        assert_eq!(newest["version"], version);
        let meta = kms.describe(&kms_key).await;
        assert_eq!(meta.arn(), Some(arn.as_str()), "the ARN never changes");
        assert_eq!(
            meta.current_key_material_id(),
            newest["kms_material_id"].as_str(),
            "{newest:#}"
        );
        assert_eq!(
            kms.alias_target(&alias).await.as_deref(),
            Some(kms_key.as_str())
        );
        ciphertexts.push(
            kms.encrypt(&alias, format!("version {version}").as_bytes())
                .await,
        );
    }
    // Every ciphertext, under each material in turn, still decrypts.
    for (i, ciphertext) in ciphertexts.iter().enumerate() {
        assert_eq!(
            kms.decrypt(ciphertext).await.unwrap(),
            format!("version {}", i + 1).as_bytes()
        );
    }

    let keys = keys_of(&app, &token, &group).await;
    assert_eq!(keys.len(), 4);
    let names: Vec<&str> = keys.iter().map(|k| k["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            kms_key.clone(),
            format!("{kms_key} v2"),
            format!("{kms_key} v3"),
            format!("{kms_key} v4")
        ]
    );
    let states: Vec<&str> = keys
        .iter()
        .map(|k| k["material_state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        ["non_current", "non_current", "non_current", "current"]
    );
    let mut ids: Vec<&str> = keys
        .iter()
        .map(|k| k["kms_material_id"].as_str().unwrap())
        .collect();
    ids.dedup();
    assert_eq!(ids.len(), 4, "a material id per version: {keys:#?}");
    assert!(keys.iter().all(|k| k["kms_key_id"] == kms_key.as_str()));
    // A version is addressed by its name.
    let (status, v2) = app.get(&format!("/api/v1/keys/{kms_key} v2"), &token).await;
    assert_eq!(status, StatusCode::OK, "{v2}");
    assert_eq!(v2["version"], 2);

    let (_, view) = app.get(&format!("/api/v1/groups/{group}"), &token).await;
    assert_eq!(view["active_key_id"], kms_key.as_str());
    assert_eq!(view["in_place_rotations"]["used"], 3, "{view:#}");
    assert_eq!(view["in_place_rotations"]["limit"], 25, "{view:#}");
    assert_eq!(kms.keys_of_group(&group).await, vec![kms_key.clone()]);
}

#[tokio::test]
async fn deleting_and_reimporting_one_old_material_brings_its_ciphertexts_back() {
    let peer = keyhold_bench::kms_peer::KmsPeer::start_faithful()
        .await
        .unwrap();
    let group = unique("inplace-del");
    let (app, token) = scene(&peer.endpoint, &group, "new_key").await;
    let kms = Kms::at(&peer.endpoint).await;
    let alias = format!("alias/{group}");
    let mut ciphertexts = Vec::new();
    for version in 1..=3 {
        rotate_job(&app, &token, &group).await;
        ciphertexts.push(kms.encrypt(&alias, format!("v{version}").as_bytes()).await);
    }
    let keys = keys_of(&app, &token, &group).await;
    let kms_key = keys[0]["name"].as_str().unwrap().to_owned();
    let v1_material = keys[0]["kms_material_id"].as_str().unwrap().to_owned();

    // Delete version 1's material only: the KMS key cannot be used meanwhile.
    let job = app
        .sync(
            &token,
            &kms_key,
            json!({"update_policy": false, "import_material": false, "delete_material": true}),
        )
        .await;
    let job = app.wait_job(&token, &job).await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    let listed = materials(&kms, &kms_key).await;
    assert_eq!(
        listed,
        vec![
            (
                v1_material.clone(),
                ImportState::PendingImport,
                KeyMaterialState::NonCurrent
            ),
            (
                keys[1]["kms_material_id"].as_str().unwrap().to_owned(),
                ImportState::Imported,
                KeyMaterialState::NonCurrent
            ),
            (
                keys[2]["kms_material_id"].as_str().unwrap().to_owned(),
                ImportState::Imported,
                KeyMaterialState::Current
            ),
        ],
        "only version 1's material was deleted"
    );
    assert!(kms.decrypt(&ciphertexts[0]).await.is_err());

    // Synchronize imports exactly that material again, named by its id.
    let job = app
        .sync(
            &token,
            &kms_key,
            json!({"update_policy": false, "import_material": true, "delete_material": false}),
        )
        .await;
    let job = app.wait_job(&token, &job).await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    assert!(
        job["messages"].to_string().contains(&v1_material),
        "{job:#}"
    );
    for (i, ciphertext) in ciphertexts.iter().enumerate() {
        assert_eq!(
            kms.decrypt(ciphertext).await.unwrap(),
            format!("v{}", i + 1).as_bytes()
        );
    }
    assert!(
        materials(&kms, &kms_key)
            .await
            .iter()
            .all(|(_, imported, _)| *imported == ImportState::Imported)
    );
    // The current material is still the newest version's.
    assert_eq!(
        kms.describe(&kms_key).await.current_key_material_id(),
        keys[2]["kms_material_id"].as_str()
    );
}

/// A KMS key's materials as `ListKeyRotations` lists them, oldest first.
async fn materials(kms: &Kms, key: &str) -> Vec<(String, ImportState, KeyMaterialState)> {
    let listed = kms
        .client
        .list_key_rotations()
        .key_id(key)
        .include_key_material(IncludeKeyMaterial::AllKeyMaterial)
        .send()
        .await
        .unwrap();
    listed
        .rotations()
        .iter()
        .map(|r| {
            (
                r.key_material_id().unwrap().to_owned(),
                r.import_state().unwrap().clone(),
                r.key_material_state().unwrap().clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn at_the_limit_a_group_refuses_or_moves_to_a_new_kms_key_as_officers_chose() {
    let peer = keyhold_bench::kms_peer::KmsPeer::start_faithful()
        .await
        .unwrap();
    let group = unique("inplace-limit");
    let (app, token) = scene(&peer.endpoint, &group, "refuse").await;
    let (status, settings) = app
        .patch(
            "/api/v1/config",
            &token,
            json!({"on_demand_rotation_limit": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{settings}");
    assert_eq!(settings["on_demand_rotation_limit"], 1);
    let kms = Kms::at(&peer.endpoint).await;
    let alias = format!("alias/{group}");

    let first = rotate_job(&app, &token, &group).await["kms_key_id"]
        .as_str()
        .unwrap()
        .to_owned();
    rotate_job(&app, &token, &group).await;
    let (_, view) = app.get(&format!("/api/v1/groups/{group}"), &token).await;
    assert_eq!(view["in_place_rotations"]["left"], 0, "{view:#}");
    assert!(
        view["in_place_rotations"]["warning"]
            .as_str()
            .is_some_and(|w| w.contains("refused")),
        "{view:#}"
    );
    // Refused, with the reason and the way out, and nothing generated.
    let (status, refused) = app
        .post(
            &format!("/api/v1/groups/{group}/rotate"),
            Some(&token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert!(
        refused.to_string().contains("at_rotation_limit to new_key"),
        "{refused}"
    );
    assert_eq!(keys_of(&app, &token, &group).await.len(), 2);

    // One officer alone may not change it: it decides where material goes.
    let alone_token = alone(&app, ("Admin1", ADMIN1_PASSWORD)).await;
    let (status, body) = app
        .patch(
            &format!("/api/v1/groups/{group}"),
            &alone_token,
            json!({"at_rotation_limit": "new_key"}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = app
        .patch(
            &format!("/api/v1/groups/{group}"),
            &token,
            json!({"at_rotation_limit": "new_key"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let moved = rotate_job(&app, &token, &group).await;
    let second = moved["kms_key_id"].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    // The alias names the new key (DescribeKey resolves it).
    assert_eq!(kms.describe(&alias).await.key_id(), second.as_str());
    assert_eq!(
        kms.state(&first).await,
        "Enabled",
        "the old key still decrypts"
    );
    // The new KMS key then rotates in place in its turn.
    let again = rotate_job(&app, &token, &group).await;
    assert_eq!(again["kms_key_id"], second.as_str());
    let audit = app.audit_summaries(&token).await;
    assert!(
        audit
            .iter()
            .any(|s| s.contains(&group) && s.contains("Successfully")),
        "{audit:#?}"
    );
}

#[tokio::test]
async fn sixteen_force_rotations_at_once_add_one_material() {
    let peer = keyhold_bench::kms_peer::KmsPeer::start_faithful()
        .await
        .unwrap();
    let group = unique("inplace-16");
    let (app, token) = scene(&peer.endpoint, &group, "new_key").await;
    rotate_job(&app, &token, &group).await;
    let path = format!("/api/v1/groups/{group}/rotate");
    let requests = (0..16)
        .map(|_| {
            (
                reqwest::Method::POST,
                path.clone(),
                Some(token.clone()),
                Some(json!({})),
            )
        })
        .collect();
    let answers = crate::concurrency::burst(&app, requests).await;
    let accepted: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::ACCEPTED)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(accepted.len(), 1, "{answers:#?}");
    assert!(
        answers
            .iter()
            .all(|(s, _)| *s == StatusCode::ACCEPTED || *s == StatusCode::CONFLICT),
        "{answers:#?}"
    );
    let job = app
        .wait_job(&token, accepted[0]["id"].as_str().unwrap())
        .await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    let kms = Kms::at(&peer.endpoint).await;
    let kms_key = job["kms_key_id"].as_str().unwrap();
    assert_eq!(materials(&kms, kms_key).await.len(), 2);
    assert_eq!(keys_of(&app, &token, &group).await.len(), 2);
}

/// LocalStack enforces 10 on-demand rotations (AWS's API reference once said
/// so), fewer than keyhold's default of 25: AWS's own refusal, not keyhold's
/// count, then meets the group's choice, and the version goes into a new KMS
/// key with the alias moved.
#[tokio::test]
async fn when_aws_refuses_another_rotation_the_version_goes_into_a_new_kms_key() {
    let endpoint = rotation_peer();
    let group = unique("inplace-aws-limit");
    let (app, token) = scene(&endpoint, &group, "new_key").await;
    let kms = Kms::at(&endpoint).await;
    let alias = format!("alias/{group}");
    let first = rotate_job(&app, &token, &group).await["kms_key_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = kms.encrypt(&alias, b"under the first KMS key").await;
    let mut moved = None;
    for _ in 0..11 {
        let job = rotate_job(&app, &token, &group).await;
        if job["kms_key_id"] != first.as_str() {
            assert!(
                job["messages"]
                    .to_string()
                    .contains("no more on-demand rotations"),
                "{job:#}"
            );
            moved = Some(job["kms_key_id"].as_str().unwrap().to_owned());
            break;
        }
    }
    let second = moved.expect("LocalStack never refused a rotation in 11 tries");
    assert_eq!(
        kms.alias_target(&alias).await.as_deref(),
        Some(second.as_str())
    );
    assert_eq!(kms.state(&first).await, "Enabled");
    assert_eq!(
        kms.decrypt(&before).await.unwrap(),
        b"under the first KMS key"
    );
    let keys = keys_of(&app, &token, &group).await;
    let newest = keys.last().unwrap();
    assert_eq!(newest["name"], second.as_str(), "{newest:#}");
    assert_eq!(newest["material_state"], "current");
    // The version whose material AWS left pending is not the old key's current.
    let current_in_first: Vec<&Value> = keys
        .iter()
        .filter(|k| k["kms_key_id"] == first.as_str() && k["material_state"] == "current")
        .collect();
    assert_eq!(current_in_first.len(), 1, "{keys:#?}");
}

/// A group switched from new_key to new_material and back: every version's
/// record stays right (which KMS key, which material is current there), an
/// older version synchronizes back into its own KMS key, and the audit log
/// has both changes.
#[tokio::test]
async fn switching_strategies_keeps_both_kinds_of_history_right() {
    let endpoint = rotation_peer();
    let group = unique("switch");
    let allowed = endpoint.clone();
    let app = TestApp::spawn_with(move |args| allow_endpoints(args, &[&allowed])).await;
    let token = app.dual_session().await;
    app.import_credential_at(&token, "aws", &endpoint).await;
    let mut body = group_body(&group, "aws");
    body["disable_after_rotate"] = json!(false);
    let (status, created) = app.create_group(&token, body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["rotation_strategy"], "new_key");
    assert_eq!(created["in_place_rotations"], Value::Null);
    let kms = Kms::at(&endpoint).await;
    let alias = format!("alias/{group}");

    let k1 = app.rotate_ok(&token, &group).await;
    let k2 = app.rotate_ok(&token, &group).await;
    let under_k2 = kms.encrypt(&alias, b"under k2").await;
    let switch = |strategy: &'static str| {
        let (app, token, group) = (&app, &token, &group);
        async move {
            let (status, body) = app
                .patch(
                    &format!("/api/v1/groups/{group}"),
                    token,
                    json!({"rotation_strategy": strategy}),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
    };
    switch("new_material").await;
    let job = rotate_job(&app, &token, &group).await;
    assert_eq!(
        job["kms_key_id"],
        k2.as_str(),
        "rotated into the active KMS key"
    );
    assert_eq!(
        job["summary"],
        format!("new material in the KMS key of key group {group}")
    );
    switch("new_key").await;
    let k3 = app.rotate_ok(&token, &group).await;
    assert!(k3 != k1 && k3 != k2);

    let keys = keys_of(&app, &token, &group).await;
    let rows: Vec<(String, String, String)> = keys
        .iter()
        .map(|k| {
            (
                k["name"].as_str().unwrap().to_owned(),
                k["kms_key_id"].as_str().unwrap().to_owned(),
                k["material_state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (k1.clone(), k1.clone(), "current".to_owned()),
            (k2.clone(), k2.clone(), "non_current".to_owned()),
            (format!("{k2} v3"), k2.clone(), "current".to_owned()),
            (k3.clone(), k3.clone(), "current".to_owned()),
        ]
    );
    // Version 3 is what AWS encrypts with in k2, and version 2's ciphertext
    // still decrypts there.
    assert_eq!(
        kms.describe(&k2).await.current_key_material_id(),
        keys[2]["kms_material_id"].as_str()
    );
    assert_eq!(kms.decrypt(&under_k2).await.unwrap(), b"under k2");
    // Synchronizing version 3 re-imports its own material into k2.
    let job = app
        .sync(
            &token,
            &format!("{k2} v3"),
            json!({"update_policy": true, "import_material": true, "delete_material": false}),
        )
        .await;
    let job = app.wait_job(&token, &job).await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    assert_eq!(job["kms_key_id"], k2.as_str());
    assert_eq!(kms.decrypt(&under_k2).await.unwrap(), b"under k2");

    let audit = app.audit_export(&token).await;
    let changes: Vec<&Value> = audit
        .iter()
        .filter(|e| {
            e["details"]["changed"]
                .as_array()
                .is_some_and(|c| c.contains(&json!("rotation_strategy")))
        })
        .collect();
    assert_eq!(changes.len(), 2, "{audit:#?}");
    let in_place = audit
        .iter()
        .filter(|e| e["details"]["in_place"] == true)
        .count();
    assert_eq!(in_place, 1, "one rotation in place in the audit log");
}
