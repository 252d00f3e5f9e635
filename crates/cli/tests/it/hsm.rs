//! The PKCS#11 keystore on a real SoftHSM2 token: keys are generated and
//! wrapped inside the token, and the token itself shows them as sensitive
//! and unreadable. Runs on the token whatever keystore the rest of the suite uses.

use std::process::Command;

use keyhold_bench::xks_client::{self, Sealed, XksClient, XksCredential, XksEndpoint};
use keyhold_core::clock::{Clock, SystemClock};
use serde_json::json;

use crate::helpers::*;
use crate::kms::Kms;

fn pkcs11_tool(hsm: &Hsm, args: &[&str]) -> std::process::Output {
    Command::new("pkcs11-tool")
        .args([
            "--module",
            &hsm.module,
            "--token-label",
            &hsm.token,
            "--login",
            "--pin",
            &hsm.pin,
        ])
        .args(args)
        .output()
        .expect("pkcs11-tool (Debian package opensc) is missing: ./scripts/test installs it")
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_live_in_the_token_sensitive_and_are_wrapped_there() {
    let hsm = Hsm::required();
    let app = TestApp::spawn_on(&hsm).await;
    let token = app.dual_session().await;
    app.import_kms_credential(&token, "aws").await;
    let group = format!("hsm-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let mut body = group_body(&group, "aws");
    body["region"] = json!("eu-west-1");
    let (status, created) = app.create_group(&token, body).await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{created}");

    let id = app.rotate(&token, &group).await;
    let job = app.wait_job(&token, &id).await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    // SoftHSM2 2.6 wraps with OAEP SHA-1 only; the engine picks what the token can do and says so.
    assert_eq!(job["wrapping_algorithm"], "RSAES_OAEP_SHA_1", "{job:#}");
    assert!(
        job["messages"]
            .to_string()
            .contains("wrapped with RSAES_OAEP_SHA_1")
    );
    let first = job["kms_key_id"].as_str().unwrap().to_owned();
    let kms = Kms::connect().await;
    let ciphertext = kms
        .encrypt(&format!("alias/{group}"), b"held in the HSM")
        .await;
    assert_eq!(kms.decrypt(&ciphertext).await.unwrap(), b"held in the HSM");

    let (_, keys) = app
        .get(&format!("/api/v1/keys?group={group}"), &token)
        .await;
    let key_id = keys[0]["id"].as_str().unwrap().to_owned();
    let label = format!("keyhold:key:{key_id}");

    // The token lists the key as a sensitive secret key…
    let listed = pkcs11_tool(&hsm, &["--list-objects", "--type", "secrkey"]);
    let listing = String::from_utf8_lossy(&listed.stdout).to_string();
    let entry = listing
        .split("Secret Key Object")
        .find(|o| o.contains(&label))
        .unwrap_or_else(|| panic!("{label} not in the token:\n{listing}"));
    assert!(entry.contains("sensitive"), "{entry}");
    // …whose value cannot be read out.
    let read = pkcs11_tool(
        &hsm,
        &["--read-object", "--type", "secrkey", "--label", &label],
    );
    assert!(
        !read.status.success(),
        "reading CKA_VALUE must fail: {}",
        String::from_utf8_lossy(&read.stdout)
    );

    // Synchronize with delete + re-import: the token's material goes back, old data decrypts.
    let id = app
        .sync(
            &token,
            &first,
            json!({"delete_material": true, "update_policy": false}),
        )
        .await;
    assert_eq!(app.wait_job(&token, &id).await["status"], "succeeded");
    assert_eq!(kms.decrypt(&ciphertext).await.unwrap(), b"held in the HSM");

    // Deleting a key deletes its token object.
    app.rotate_ok(&token, &group).await;
    let (status, body) = app.delete(&format!("/api/v1/keys/{first}"), &token).await;
    assert_eq!(status, reqwest::StatusCode::NO_CONTENT, "{body}");
    let listed = pkcs11_tool(&hsm, &["--list-objects", "--type", "secrkey"]);
    assert!(
        !String::from_utf8_lossy(&listed.stdout).contains(&label),
        "the token object is gone"
    );
}

const KEYHOLD: &str = env!("CARGO_BIN_EXE_keyhold");

fn keystore_reason(ready: &serde_json::Value) -> String {
    let checks = ready["checks"].as_array().unwrap();
    let keystore = checks.iter().find(|c| c["name"] == "keystore").unwrap();
    assert_eq!(keystore["ok"], false, "{ready:#}");
    let database = checks.iter().find(|c| c["name"] == "database").unwrap();
    assert_eq!(database["ok"], true, "{ready:#}");
    keystore["reason"].as_str().unwrap().to_owned()
}

/// `keyhold serve` in a process of its own on `app`'s data directory: a real
/// restart, with nothing of this test process's login to the token carried
/// over (PKCS#11 logins belong to the process, not to one keystore).
struct Served {
    child: std::process::Child,
    base: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve_on(app: &TestApp, hsm: &Hsm, label: &str, pin: &str) -> Served {
    let mut command = Command::new(KEYHOLD);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--log", "error"])
        .args(["--node-id", "node-a", "--data-dir"])
        .arg(&app.data_dir)
        .args(["--keystore", "pkcs11", "--pkcs11-module", &hsm.module])
        .args(["--pkcs11-token-label", label])
        .env("KEYHOLD_PKCS11_PIN", pin)
        .stderr(std::process::Stdio::inherit());
    use_database(&mut command, &app.db);
    let (child, base) = spawn_listening(&mut command);
    Served { child, base }
}

async fn readyz_at(base: &str) -> (reqwest::StatusCode, serde_json::Value) {
    let response = reqwest::get(format!("{base}/readyz")).await.unwrap();
    (response.status(), response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_says_why_the_token_cannot_be_used_until_it_can() {
    let hsm = Hsm::fresh_token("ready");
    let mut app = TestApp::spawn_on(&hsm).await;
    let (status, ready) = app.readyz().await;
    assert_eq!(status, reqwest::StatusCode::OK, "{ready:#}");
    app.shut_down().await;

    // A wrong PIN: the server starts, says so, and never shows the PIN.
    let wrong = "97531864";
    let served = serve_on(&app, &hsm, &hsm.token, wrong);
    let (status, ready) = readyz_at(&served.base).await;
    assert_eq!(
        status,
        reqwest::StatusCode::SERVICE_UNAVAILABLE,
        "{ready:#}"
    );
    let reason = keystore_reason(&ready);
    assert!(
        reason.contains("refused the PIN (CKR_PIN_INCORRECT)"),
        "{reason}"
    );
    assert!(reason.contains(&hsm.token), "{reason}");
    assert!(!ready.to_string().contains(wrong), "{ready}");
    // Every change is audited, and the audit key is in the token: refused, clearly.
    let response = reqwest::Client::new()
        .post(format!("{}/api/v1/session/login", served.base))
        .json(&json!({"user": "Admin1", "password": "anything"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "keystore_unavailable", "{body}");
    drop(served);

    // An absent token.
    let served = serve_on(&app, &hsm, "not-plugged-in", &hsm.pin);
    let (status, ready) = readyz_at(&served.base).await;
    assert_eq!(status, reqwest::StatusCode::SERVICE_UNAVAILABLE);
    let reason = keystore_reason(&ready);
    assert!(
        reason.contains("no token labelled 'not-plugged-in'"),
        "{reason}"
    );
    drop(served);

    // The right token and PIN again: ready.
    let served = serve_on(&app, &hsm, &hsm.token, &hsm.pin);
    let (status, ready) = readyz_at(&served.base).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{ready:#}");
}

#[test]
fn a_missing_module_is_a_clear_error_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(KEYHOLD)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .args([
            "--keystore",
            "pkcs11",
            "--pkcs11-module",
            "/opt/nowhere/libpkcs11.so",
        ])
        .args(["--pkcs11-token-label", "keyhold"])
        .env("KEYHOLD_PKCS11_PIN", "24681357")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot load PKCS#11 module /opt/nowhere/libpkcs11.so"),
        "{stderr}"
    );
    assert!(stderr.contains("set pkcs11_module"), "{stderr}");
    assert!(!stderr.contains("24681357"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_pulled_out_while_running_is_reported_and_work_goes_on_once_it_is_back() {
    let hsm = Hsm::fresh_token("pulled");
    let app = TestApp::spawn_on(&hsm).await;
    let token = app.dual_session().await;
    app.import_kms_credential(&token, "aws").await;
    let group = unique("pulled");
    let (status, created) = app.create_group(&token, group_body(&group, "aws")).await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{created}");
    app.rotate_ok(&token, &group).await;

    let dir = hsm.token_dir();
    // Out of SoftHSM2's token directory, which it scans for tokens.
    let away = dir
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join(format!("{}.away", hsm.token));
    std::fs::rename(&dir, &away).unwrap();

    let (status, ready) = app.readyz().await;
    assert_eq!(status, reqwest::StatusCode::SERVICE_UNAVAILABLE);
    let reason = keystore_reason(&ready);
    assert!(
        reason.contains("is not reachable") || reason.contains("no token labelled"),
        "{reason}"
    );
    let (status, body) = app
        .post(
            &format!("/api/v1/groups/{group}/rotate"),
            Some(&token),
            json!({}),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "keystore_unavailable", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/readyz"),
        "{body}"
    );
    // Listing still works; the keys' material cannot be told.
    let (status, keys) = app
        .get(&format!("/api/v1/keys?group={group}"), &token)
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{keys}");
    assert_eq!(keys[0]["material"], "unknown", "{keys}");

    std::fs::rename(&away, &dir).unwrap();
    let (status, ready) = app.readyz().await;
    assert_eq!(status, reqwest::StatusCode::OK, "{ready:#}");
    let second = app.rotate_ok(&token, &group).await;
    let kms = Kms::connect().await;
    let ciphertext = kms.encrypt(&format!("alias/{group}"), b"back again").await;
    assert_eq!(kms.decrypt(&ciphertext).await.unwrap(), b"back again");
    let (_, keys) = app
        .get(&format!("/api/v1/keys?group={group}"), &token)
        .await;
    assert!(
        keys.as_array()
            .unwrap()
            .iter()
            .all(|k| k["material"] == "present"),
        "{keys}"
    );
    assert!(keys.to_string().contains(&second), "{keys}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_whose_token_object_is_gone_is_shown_missing_and_cannot_be_synchronized() {
    let hsm = Hsm::fresh_token("gone");
    let app = TestApp::spawn_on(&hsm).await;
    let token = app.dual_session().await;
    app.import_kms_credential(&token, "aws").await;
    let group = unique("gone");
    app.create_group(&token, group_body(&group, "aws")).await;
    let kms_key_id = app.rotate_ok(&token, &group).await;
    let (_, key) = app.get(&format!("/api/v1/keys/{kms_key_id}"), &token).await;
    assert_eq!(key["material"], "present", "{key}");

    let label = format!("keyhold:key:{}", key["id"].as_str().unwrap());
    let deleted = pkcs11_tool(
        &hsm,
        &["--delete-object", "--type", "secrkey", "--label", &label],
    );
    assert!(deleted.status.success(), "{deleted:?}");

    let (_, key) = app.get(&format!("/api/v1/keys/{kms_key_id}"), &token).await;
    assert_eq!(key["material"], "missing", "{key}");
    let (status, body) = app
        .post(
            &format!("/api/v1/keys/{kms_key_id}/sync"),
            Some(&token),
            json!({}),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::CONFLICT, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("material of key"), "{message}");
    assert!(message.contains("missing from the keystore"), "{message}");
    // Refused before any job was made.
    let (_, jobs) = app.get("/api/v1/jobs", &token).await;
    assert_eq!(jobs.as_array().unwrap().len(), 1, "{jobs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn keystore_migrate_moves_a_software_data_directory_into_the_token_and_resumes() {
    // A data directory on the software keystore, with two keys in KMS.
    let app = TestApp::spawn_with(|args| args.keystore.keystore = Some("software".into())).await;
    let token = app.dual_session().await;
    app.import_kms_credential(&token, "aws").await;
    let group = unique("moved");
    app.create_group(&token, group_body(&group, "aws")).await;
    let first = app.rotate_ok(&token, &group).await;
    let second = app.rotate_ok(&token, &group).await;
    let kms = Kms::connect().await;
    let ciphertext = kms.encrypt(&format!("alias/{group}"), b"from before").await;
    let mut app = app;
    app.shut_down().await;

    let hsm = Hsm::fresh_token("migrate");
    let migrate = |crash_after: Option<&str>| {
        let mut command = Command::new(KEYHOLD);
        command
            .args(["keystore", "migrate", "--data-dir"])
            .arg(&app.data_dir);
        hsm.configure_command(&mut command);
        use_database(&mut command, &app.db);
        if let Some(n) = crash_after {
            command.env("KEYHOLD_CRASH_MIGRATION_AFTER_KEYS", n);
        }
        command.output().unwrap()
    };
    // Killed after the first key moved…
    let crashed = migrate(Some("1"));
    assert!(!crashed.status.success(), "{crashed:?}");
    let handles = open_db(&app)
        .await
        .fetch_bytes("SELECT keystore_handle FROM keys ORDER BY version")
        .await
        .unwrap();
    let in_token = handles
        .iter()
        .filter(|h| h.starts_with(b"keyhold:key:"))
        .count();
    assert_eq!(in_token, 1, "one key moved before the crash");
    assert!(app.data_dir.join("keystore/audit-mac.key").exists());
    // The credential went first: its secret is sealed by the token now.
    let sealed = open_db(&app)
        .await
        .fetch_bytes("SELECT sealed_secret FROM credentials")
        .await
        .unwrap();
    assert_eq!(sealed[0][0], 0x01, "the token's seal format");

    // …and run again: it resumes.
    let done = migrate(None);
    let stdout = String::from_utf8_lossy(&done.stdout);
    assert!(done.status.success(), "{done:?}");
    assert!(
        stdout.contains("moved 1 key(s) and 0 credential secret(s) into the PKCS#11 token; 1 key(s) were there already; removed the software keystore"),
        "{stdout}"
    );
    assert!(!app.data_dir.join("keystore/audit-mac.key").exists());
    assert!(!app.data_dir.join("keystore/master.key").exists());
    let listed = pkcs11_tool(&hsm, &["--list-objects", "--type", "secrkey"]);
    let listing = String::from_utf8_lossy(&listed.stdout).to_string();
    let key_objects: Vec<&str> = listing
        .split("Secret Key Object")
        .filter(|o| o.contains("keyhold:key:"))
        .collect();
    assert_eq!(key_objects.len(), 2, "{listing}");
    assert!(
        key_objects.iter().all(|o| o.contains("sensitive")),
        "{listing}"
    );

    // The server on the token: the old audit log verifies, the credential
    // works, and the moved material is the material KMS holds.
    let app = app
        .restart_with(|args| hsm.configure(args), Some(hsm.pin.clone()))
        .await;
    let token = app.dual_session_again().await;
    let (status, verified) = app.get("/api/v1/audit/verify", &token).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{verified}");
    assert_eq!(verified["ok"], true, "{verified}");
    let summaries = app.audit_summaries(&token).await;
    assert!(
        summaries
            .iter()
            .any(|s| s.contains(&format!("Moved the material of HSM protected key {first}"))),
        "{summaries:#?}"
    );
    let (_, keys) = app
        .get(&format!("/api/v1/keys?group={group}"), &token)
        .await;
    assert!(
        keys.as_array()
            .unwrap()
            .iter()
            .all(|k| k["material"] == "present"),
        "{keys}"
    );
    let id = app
        .sync(
            &token,
            &second,
            json!({"delete_material": true, "update_policy": false}),
        )
        .await;
    let job = app.wait_job(&token, &id).await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    assert_eq!(kms.decrypt(&ciphertext).await.unwrap(), b"from before");
}

/// The number of secret key objects on `hsm`'s token whose label starts
/// with `prefix`, and whether all of them are sensitive.
fn token_objects(hsm: &Hsm, prefix: &str) -> (usize, bool) {
    let listed = pkcs11_tool(hsm, &["--list-objects", "--type", "secrkey"]);
    let listing = String::from_utf8_lossy(&listed.stdout).to_string();
    let objects: Vec<&str> = listing
        .split("Secret Key Object")
        .filter(|o| o.contains(prefix))
        .collect();
    (
        objects.len(),
        objects.iter().all(|o| o.contains("sensitive")),
    )
}

/// An XKS call through the proxy, signed by the AWS SDK's signer with the
/// wall clock (the server's clock is set to it first); waits while the
/// proxy has not loaded the store or key yet (it reloads each second).
async fn xks_call(
    app: &TestApp,
    credential: &XksCredential,
    endpoint: &XksEndpoint,
    key_id: &str,
    operation: &str,
    body: &serde_json::Value,
) -> serde_json::Value {
    let client = XksClient::new(app.http.clone());
    let url = endpoint.key_url(key_id, operation);
    let answer = app
        .eventually(&format!("the proxy serving {url}"), || async {
            app.clock.set(SystemClock.now());
            let answer = client.post(&url, credential, body).await.unwrap();
            (answer.status != 404).then_some(answer)
        })
        .await;
    assert_eq!(answer.status, 200, "{operation} {key_id}: {}", answer.body);
    answer.body
}

#[tokio::test(flavor = "multi_thread")]
async fn keystore_migrate_moves_xks_keys_and_credential_secrets_into_the_token_and_resumes() {
    // A data directory on the software keystore with an external key store,
    // its credential (as given to KMS) and two keys, each with a ciphertext
    // KMS holds from before the move.
    let app = TestApp::spawn_with(|args| args.keystore.keystore = Some("software".into())).await;
    let admins = app.dual_session().await;
    let store = unique("moved");
    let (status, issued) = app
        .post(
            "/api/v1/xks/stores",
            Some(&admins),
            json!({ "name": store }),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{issued}");
    let access_key_id = issued["access_key_id"].as_str().unwrap().to_owned();
    let credential = XksCredential::new(
        &access_key_id,
        issued["secret_access_key"].as_str().unwrap(),
    );
    let prefix = issued["store"]["path_prefix"].as_str().unwrap().to_owned();
    let endpoint = XksEndpoint::new(&app.base, &prefix);
    let mut keys = Vec::new();
    for description in ["first", "second"] {
        let (status, key) = app
            .post(
                &format!("/api/v1/xks/stores/{store}/keys"),
                Some(&admins),
                json!({ "description": description, "usage": "encrypt_decrypt" }),
            )
            .await;
        assert_eq!(status, reqwest::StatusCode::CREATED, "{key}");
        keys.push(key["id"].as_str().unwrap().to_owned());
    }
    let mut before = Vec::new();
    for key in &keys {
        let plaintext = format!("a data key of {key}").into_bytes();
        let aad = format!("encryption context of {key}").into_bytes();
        let body = xks_client::encrypt_body(&plaintext, Some(&aad), true);
        let answer = xks_call(&app, &credential, &endpoint, key, "encrypt", &body).await;
        before.push((
            key.clone(),
            plaintext,
            aad,
            Sealed::from_answer(&answer).unwrap(),
        ));
    }
    let mut app = app;
    app.shut_down().await;

    let hsm = Hsm::fresh_token("xks-migrate");
    let migrate = |crash_after_imports: Option<&str>| {
        let mut command = Command::new(KEYHOLD);
        command
            .args(["keystore", "migrate", "--data-dir"])
            .arg(&app.data_dir);
        hsm.configure_command(&mut command);
        use_database(&mut command, &app.db);
        if let Some(n) = crash_after_imports {
            command.env("KEYHOLD_CRASH_MIGRATION_AFTER_XKS_IMPORTS", n);
        }
        command.output().unwrap()
    };
    let xks_rows = || async {
        let mut db = open_db(&app).await;
        let handles = db
            .fetch_bytes("SELECT keystore_handle FROM xks_keys ORDER BY created_at")
            .await
            .unwrap();
        let secrets = db
            .fetch_bytes("SELECT sealed_secret FROM xks_credentials")
            .await
            .unwrap();
        (handles, secrets)
    };

    // Killed after the first XKS key's material reached the token, before
    // its handle was written…
    let crashed = migrate(Some("1"));
    assert!(!crashed.status.success(), "{crashed:?}");
    let (handles, secrets) = xks_rows().await;
    assert!(
        handles.iter().all(|h| !h.starts_with(b"keyhold:")),
        "no XKS handle replaced before the crash"
    );
    assert_eq!(token_objects(&hsm, "keyhold:xks:").0, 1);
    // The credential went first: its secret is sealed by the token now.
    assert_eq!(secrets.len(), 1);
    assert_eq!(secrets[0][0], 0x01, "the token's seal format");
    assert!(app.data_dir.join("keystore/audit-mac.key").exists());

    // …and run again: it finds that object, moves the other key, and
    // removes the software keystore.
    let done = migrate(None);
    let stdout = String::from_utf8_lossy(&done.stdout);
    assert!(done.status.success(), "{done:?}");
    assert!(
        stdout.contains("moved 0 key(s) and 0 credential secret(s) into the PKCS#11 token; 0 key(s) were there already; moved 2 XKS key(s) and 0 XKS credential secret(s); 0 XKS key(s) were there already; removed the software keystore"),
        "{stdout}"
    );
    assert!(!app.data_dir.join("keystore/audit-mac.key").exists());
    assert!(!app.data_dir.join("keystore/master.key").exists());
    let (handles, secrets) = xks_rows().await;
    let labels: Vec<Vec<u8>> = keys
        .iter()
        .map(|k| format!("keyhold:xks:{k}").into_bytes())
        .collect();
    assert_eq!(handles, labels);
    assert_eq!(token_objects(&hsm, "keyhold:xks:"), (2, true));
    assert_eq!(token_objects(&hsm, "keyhold:key:").0, 0, "no BYOK object");

    // A run after the move finds nothing left to do and writes nothing.
    let mut db = open_db(&app).await;
    let revision = db
        .fetch_i64("SELECT revision FROM xks_revision")
        .await
        .unwrap();
    let again = migrate(None);
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success(), "{again:?}");
    assert!(
        stdout.contains("moved 0 key(s) and 0 credential secret(s) into the PKCS#11 token; 0 key(s) were there already; moved 0 XKS key(s) and 0 XKS credential secret(s); 2 XKS key(s) were there already"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("removed the software keystore"),
        "{stdout}"
    );
    assert_eq!(xks_rows().await, (handles, secrets));
    assert_eq!(
        db.fetch_i64("SELECT revision FROM xks_revision")
            .await
            .unwrap(),
        revision
    );
    assert_eq!(token_objects(&hsm, "keyhold:xks:"), (2, true));
    drop(db);

    // The server on the token: the audit log verifies, the credential KMS
    // was given still signs (its secret opens under the token), and what
    // KMS holds from before the move decrypts.
    let app = app
        .restart_with(|args| hsm.configure(args), Some(hsm.pin.clone()))
        .await;
    // Listening on another port now.
    let endpoint = XksEndpoint::new(&app.base, &prefix);
    let admins = app.dual_session_again().await;
    let (status, verified) = app.get("/api/v1/audit/verify", &admins).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{verified}");
    assert_eq!(verified["ok"], true, "{verified}");
    let summaries = app.audit_summaries(&admins).await;
    for expected in [
        format!(
            "Moved the material of XKS key {} of external key store '{store}'",
            keys[0]
        ),
        format!(
            "Moved the material of XKS key {} of external key store '{store}'",
            keys[1]
        ),
        format!(
            "Moved the secret of XKS credential {access_key_id} of external key store '{store}'"
        ),
    ] {
        assert!(
            summaries.iter().any(|s| s.contains(&expected)),
            "{expected}: {summaries:#?}"
        );
    }
    for (key, plaintext, aad, sealed) in &before {
        let body = xks_client::decrypt_body(sealed, Some(aad));
        let answer = xks_call(&app, &credential, &endpoint, key, "decrypt", &body).await;
        assert_eq!(
            xks_client::plaintext_of(&answer).as_deref(),
            Some(plaintext.as_slice())
        );
    }
    // And the moved keys go on encrypting, in the token.
    let body = xks_client::encrypt_body(b"after the move", None, false);
    let answer = xks_call(&app, &credential, &endpoint, &keys[1], "encrypt", &body).await;
    let sealed = Sealed::from_answer(&answer).unwrap();
    let body = xks_client::decrypt_body(&sealed, None);
    let answer = xks_call(&app, &credential, &endpoint, &keys[1], "decrypt", &body).await;
    assert_eq!(
        xks_client::plaintext_of(&answer).as_deref(),
        Some(b"after the move".as_slice())
    );
}
