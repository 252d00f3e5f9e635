//! A rotation cancelled before it reached AWS takes the key it generated
//! with it: out of the listing, the database and the keystore, while AWS
//! keeps exactly the KMS keys it had. Read back from the API, the database
//! itself, the token (on the PKCS#11 run) and LocalStack.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::kms::Kms;

/// The token's key objects, as `pkcs11-tool` lists them.
fn token_listing(hsm: &Hsm) -> String {
    let out = std::process::Command::new("pkcs11-tool")
        .args(["--module", &hsm.module, "--token-label", &hsm.token])
        .args(["--login", "--pin", &hsm.pin])
        .args(["--list-objects", "--type", "secrkey"])
        .output()
        .expect("pkcs11-tool (Debian package opensc) is missing: ./scripts/test installs it");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether the keystore holds key `id`'s material: on the token, an object
/// labelled with it; in the software keystore the material is the sealed
/// handle in the key's row, so it exists while the row does.
async fn material_held(app: &TestApp, id: &str) -> bool {
    match Hsm::for_suite() {
        Some(hsm) => token_listing(&hsm).contains(&format!("keyhold:key:{id}")),
        None => !key_rows(app, id).await.is_empty(),
    }
}

/// The key's row in the database, read directly (its keystore handle).
async fn key_rows(app: &TestApp, id: &str) -> Vec<Vec<u8>> {
    open_db(app)
        .await
        .fetch_bytes(&format!(
            "SELECT keystore_handle FROM keys WHERE id = '{id}'"
        ))
        .await
        .unwrap()
}

async fn keys_of(app: &TestApp, token: &str, group: &str) -> Vec<Value> {
    let (status, keys) = app.get(&format!("/api/v1/keys?group={group}"), token).await;
    assert_eq!(status, StatusCode::OK, "{keys}");
    keys.as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotation_cancelled_before_create_key_leaves_no_key_behind() {
    let app = TestApp::spawn().await;
    let token = app.dual_session().await;
    app.import_kms_credential(&token, "aws").await;
    let kms = Kms::connect().await;
    let group = unique("cancel");
    let mut body = group_body(&group, "aws");
    body["region"] = json!("eu-west-1");
    let (status, created) = app.create_group(&token, body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let first = app.rotate_ok(&token, &group).await;

    // The group's Active Key ID now names a KMS key that does not exist: the
    // next rotation generates its key, then fails at "create the KMS key"
    // before any CreateKey is sent.
    let ghost = uuid::Uuid::new_v4().to_string();
    let (status, patched) = app
        .patch(
            &format!("/api/v1/groups/{group}"),
            &token,
            json!({"active_key_id": ghost}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    let id = app.rotate(&token, &group).await;
    let failed = app.wait_job(&token, &id).await;
    assert_eq!(failed["status"], "failed", "{failed:#}");
    assert_eq!(failed["current_step"], "create_kms_key", "{failed:#}");
    assert_eq!(failed["summary"], format!("new key for key group {group}"));
    let kms_before = kms.keys_of_group(&group).await;
    assert_eq!(kms_before, vec![first.clone()]);

    // Listed under a readable name, with why and what to do.
    let keys = keys_of(&app, &token, &group).await;
    assert_eq!(keys.len(), 2, "{keys:#?}");
    let pending = keys.iter().find(|k| k["version"] == 2).unwrap().clone();
    let name = format!("{group} v2 (no KMS key)");
    assert_eq!(pending["name"], name, "{pending:#}");
    assert_eq!(pending["state"], "pre_active");
    let note = pending["state_note"].as_str().unwrap();
    assert!(
        note.contains(&format!(
            "its rotation job {id} failed before the key reached KMS"
        )),
        "{note}"
    );
    let key_id = pending["id"].as_str().unwrap().to_owned();
    // The name it is listed under addresses it, as actions do.
    let (status, by_name) = app
        .get(
            &format!(
                "/api/v1/keys/{}",
                name.replace(' ', "%20")
                    .replace('(', "%28")
                    .replace(')', "%29")
            ),
            &token,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{by_name}");
    assert_eq!(by_name["id"], key_id.as_str());
    assert_eq!(key_rows(&app, &key_id).await.len(), 1);
    assert!(
        material_held(&app, &key_id).await,
        "generated in the keystore"
    );

    let (status, cancelled) = app
        .post(
            &format!("/api/v1/jobs/{id}/cancel"),
            Some(&token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");

    // Gone from the listing, the database and the keystore…
    let keys = keys_of(&app, &token, &group).await;
    let names: Vec<&str> = keys.iter().map(|k| k["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec![first.as_str()]);
    let (status, _) = app.get(&format!("/api/v1/keys/{key_id}"), &token).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(key_rows(&app, &key_id).await.is_empty(), "the row is gone");
    assert!(!material_held(&app, &key_id).await, "the material is gone");
    // …said in the job's messages and the audit log…
    let (_, job) = app.get(&format!("/api/v1/jobs/{id}"), &token).await;
    let last = job["messages"].as_array().unwrap().last().unwrap()["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        last.starts_with(&format!(
            "Cancelled by Admin1,Admin2. Removed its key {name} (version 2, check digits "
        )),
        "{last}"
    );
    let audit = app.audit_summaries(&token).await;
    let expected = format!(
        "Admin1,Admin2 | Cancelled job {id} (Rotate HSM protected keys); removed its key {name}, which never reached KMS"
    );
    assert!(audit.contains(&expected), "{audit:#?}");
    // …and AWS holds what it held: the first key, active behind the alias.
    assert_eq!(kms.keys_of_group(&group).await, kms_before);
    assert_eq!(kms.state(&first).await, "Enabled");
    assert_eq!(
        kms.alias_target(&format!("alias/{group}")).await.as_deref(),
        Some(first.as_str())
    );
    // The first key's material is untouched.
    let (_, first_key) = app.get(&format!("/api/v1/keys/{first}"), &token).await;
    assert_eq!(first_key["material"], "present", "{first_key:#}");
    assert_eq!(first_key["state_note"], Value::Null);
}
