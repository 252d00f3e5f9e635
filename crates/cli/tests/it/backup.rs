//! Backups end to end: keys rotated into LocalStack, a ciphertext made,
//! a backup taken with three custodians; then the machine is gone (data
//! directory, database and, with the PKCS#11 keystore, the token) and a new
//! one is restored with two of the three shares. AWS loses the material;
//! Synchronize from the restored installation puts it back, and the old
//! ciphertext decrypts. On the way: what one officer alone, a wrong share,
//! too few shares, an altered file and 16 requests at once can do.

use reqwest::{Method, StatusCode};
use secrecy::SecretString;
use serde_json::{Value, json};
use sha2::Digest;

use crate::concurrency::burst;
use crate::helpers::*;
use crate::kms::Kms;

const PLAINTEXT: &[u8] = b"payroll 2026, encrypted before the backup";

/// Polls the backup until it is no longer running.
async fn wait_backup(app: &TestApp, token: &str, id: &str) -> Value {
    app.eventually("the backup to finish", || async {
        let (status, backup) = app.get(&format!("/api/v1/backups/{id}"), token).await;
        assert_eq!(status, StatusCode::OK, "{backup}");
        (backup["status"] != "running").then_some(backup)
    })
    .await
}

async fn download(app: &TestApp, token: &str, id: &str) -> Vec<u8> {
    let response = app
        .http
        .get(format!("{}/api/v1/backups/{id}/file", app.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.bytes().await.unwrap().to_vec()
}

#[tokio::test]
async fn a_lost_installation_comes_back_from_a_backup_and_old_ciphertexts_decrypt() {
    // The token the new machine will have, made before the PKCS#11 module
    // is loaded (SoftHSM2 lists tokens once per process).
    let fresh_token = Hsm::for_suite().map(|_| Hsm::fresh_token("restored"));
    let app = TestApp::spawn().await;
    let admins = app.dual_session().await;
    let credential = unique("bk-cred");
    app.import_kms_credential(&admins, &credential).await;
    let (payroll, billing) = (unique("bk-payroll"), unique("bk-billing"));
    for group in [&payroll, &billing] {
        let (status, body) = app
            .create_group(&admins, group_body(group, &credential))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    app.rotate_ok(&admins, &payroll).await;
    let active = app.rotate_ok(&admins, &payroll).await;
    app.rotate_ok(&admins, &billing).await;
    let kms = Kms::connect().await;
    let ciphertext = kms.encrypt(&active, PLAINTEXT).await;

    // No custodians, no backup: its key would have nobody to hold it.
    let (status, body) = app.post("/api/v1/backups", Some(&admins), json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("custodians"),
        "{body}"
    );

    // Three custodians, any two of whom open a backup: alice derived her
    // key from a passphrase on her own machine, bob made a key pair, carol
    // gave her passphrase to the server, which keeps only the public key.
    let kdf = keyhold_backup::passphrase_kdf_for_tests();
    let alice_passphrase = SecretString::from("alice's long passphrase".to_owned());
    let alice = keyhold_backup::custodian_from_passphrase(&alice_passphrase, &kdf).unwrap();
    let (bob, bob_public) = keyhold_backup::generate_custodian_key().unwrap();
    let custodians = json!({"threshold": 2, "custodians": [
        {"name": "alice", "public_key": alice.public_key_hex(), "kdf": kdf},
        {"name": "bob", "public_key": bob_public},
        {"name": "carol", "passphrase": "carol's own passphrase"},
    ]});
    let single = app.login(None, "Admin1", ADMIN1_PASSWORD).await.1["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = app
        .request(
            Method::PUT,
            "/api/v1/backups/custodians",
            Some(&single),
            Some(custodians.clone()),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "one administrator alone: {body}"
    );
    let (status, set) = app
        .request(
            Method::PUT,
            "/api/v1/backups/custodians",
            Some(&admins),
            Some(custodians),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{set}");
    assert_eq!(set["threshold"], 2);
    assert_eq!(set["custodians"][2]["passphrase"], true);
    let audit = app.audit_export(&admins).await;
    assert!(
        !serde_json::to_string(&audit)
            .unwrap()
            .contains("carol's own passphrase"),
        "a passphrase reached the audit log"
    );

    let (status, before) = app
        .post("/api/v1/audit/checkpoints", Some(&admins), json!({}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{before}");

    // One administrator alone cannot take the keys out, even encrypted.
    let (status, body) = app.post("/api/v1/backups", Some(&single), json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "dual_control_required", "{body}");

    // 16 requests at once: one backup, the others told one is running.
    let answers = burst(
        &app,
        (0..16)
            .map(|_| {
                (
                    Method::POST,
                    "/api/v1/backups".to_owned(),
                    Some(admins.clone()),
                    None,
                )
            })
            .collect(),
    )
    .await;
    let started: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::ACCEPTED)
        .map(|(_, b)| b)
        .collect();
    let refused = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::CONFLICT)
        .count();
    assert!(!started.is_empty(), "{answers:?}");
    assert_eq!(started.len() + refused, 16, "{answers:?}");
    let id = started[0]["id"].as_str().unwrap().to_owned();
    let backup = wait_backup(&app, &admins, &id).await;
    assert_eq!(backup["status"], "succeeded", "{backup:#}");
    assert_eq!(backup["keys"], 3, "{backup:#}");
    for other in &started[1..] {
        // Started one after the other, never two at a time.
        let later = wait_backup(&app, &admins, other["id"].as_str().unwrap()).await;
        assert_eq!(later["status"], "succeeded", "{later:#}");
    }
    let (_, all) = app.get("/api/v1/backups", &admins).await;
    assert_eq!(all.as_array().unwrap().len(), started.len());

    let file = download(&app, &admins, &id).await;
    assert_eq!(
        hex::encode(sha2::Sha256::digest(&file)),
        backup["sha256"].as_str().unwrap(),
        "the file downloaded is the file recorded"
    );
    let secret_key = console_csv();
    let secret_key = secret_key
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .nth(1)
        .unwrap();
    assert!(
        !file
            .windows(secret_key.len())
            .any(|w| w == secret_key.as_bytes()),
        "the credential's secret is in the backup in the clear"
    );
    let (status, shares) = app
        .get(&format!("/api/v1/backups/{id}/shares"), &admins)
        .await;
    assert_eq!(status, StatusCode::OK, "{shares}");
    let share_text = |name: &str| {
        shares["shares"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["custodian"] == name)
            .unwrap()["text"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyhold.khbk");
    std::fs::write(&path, &file).unwrap();

    // Checkpoints shipped off the machine before it was lost: one signed
    // before the backup, one after it.
    let (status, after) = app
        .post("/api/v1/audit/checkpoints", Some(&admins), json!({}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{after}");

    // The machine is gone: its data directory, its database, its token.
    let mut app = app;
    app.shut_down().await;
    std::fs::remove_dir_all(&app.data_dir).unwrap();
    // The old token goes once the restore is done (below): SoftHSM2 in
    // this process loses its other tokens for a while when a token's
    // directory vanishes under it; a restore runs in a process of its own.
    let pin = fresh_token.as_ref().map(|t| t.pin.clone());
    let target = app
        .sibling(
            |args| {
                if let Some(token) = &fresh_token {
                    token.configure(args);
                }
            },
            pin,
        )
        .await;
    let config = target.config();

    let header = keyhold_server::backup::restore::read_header(&path).unwrap();
    assert_eq!(header.custodians, ["alice", "bob", "carol"]);
    let alice_share = keyhold_backup::ShareFile::parse(&share_text("alice"))
        .unwrap()
        .open(&alice)
        .unwrap();
    let bob_share = keyhold_backup::ShareFile::parse(&share_text("bob"))
        .unwrap()
        .open(&bob)
        .unwrap();
    // A wrong passphrase does not open alice's share; bob's key does not open it.
    let wrong = keyhold_backup::custodian_from_passphrase(
        &SecretString::from("not alice's passphrase".to_owned()),
        &kdf,
    )
    .unwrap();
    assert!(
        keyhold_backup::ShareFile::parse(&share_text("alice"))
            .unwrap()
            .open(&wrong)
            .is_err()
    );
    assert!(
        keyhold_backup::ShareFile::parse(&share_text("alice"))
            .unwrap()
            .open(&bob)
            .is_err()
    );
    // One share is not enough.
    assert!(keyhold_backup::combine(&header, std::slice::from_ref(&alice_share)).is_err());

    // An altered file is refused, and nothing is written.
    let altered = dir.path().join("altered.khbk");
    let mut bytes = file.clone();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&altered, &bytes).unwrap();
    let key = keyhold_backup::combine(&header, &[alice_share.clone(), bob_share.clone()]).unwrap();
    let refused = keyhold_server::backup::restore::restore(
        &config,
        app.clock.clone(),
        &altered,
        key,
        &["alice".to_owned(), "bob".to_owned()],
    )
    .await
    .unwrap_err();
    assert!(
        format!("{refused:#}").contains("damaged or was altered"),
        "{refused:#}"
    );
    assert!(
        !target.data_dir().join("keystore").exists(),
        "a refused restore made a keystore"
    );

    let key = keyhold_backup::combine(&header, &[alice_share, bob_share]).unwrap();
    let report = keyhold_server::backup::restore::restore(
        &config,
        app.clock.clone(),
        &path,
        key,
        &["alice".to_owned(), "bob".to_owned()],
    )
    .await
    .unwrap();
    assert_eq!(report.keys, 3, "{report}");
    assert_eq!(report.credentials, 1, "{report}");
    if let Some(suite) = Hsm::for_suite() {
        std::fs::remove_dir_all(suite.token_dir()).unwrap();
    }

    // The restored installation: same groups, keys, identities; the same
    // audit chain, one link longer, and it verifies.
    let restored = target.start().await;
    let admins = restored.dual_session_again().await;
    // The backup it came from was running when its snapshot was read:
    // the restored record says how it ended, from the file.
    let (_, itself) = restored
        .get(&format!("/api/v1/backups/{id}"), &admins)
        .await;
    assert_eq!(itself["status"], "succeeded", "{itself:#}");
    assert_eq!(itself["sha256"], backup["sha256"], "{itself:#}");
    let (_, keys) = restored.get("/api/v1/keys", &admins).await;
    assert_eq!(keys.as_array().unwrap().len(), 3, "{keys:#}");
    let (_, verify) = restored.get("/api/v1/audit/verify", &admins).await;
    assert_eq!(verify["ok"], true, "{verify:#}");
    // The checkpoint signed before the backup holds for the restored log:
    // the same entries, under the same signing key. The one signed after it
    // names entries the backup could not hold, and says so.
    let (status, held) = restored
        .post(
            "/api/v1/audit/verify",
            Some(&admins),
            json!({"checkpoints": [before]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{held}");
    assert_eq!(held["ok"], true, "{held:#}");
    let (status, lost) = restored
        .post(
            "/api/v1/audit/verify",
            Some(&admins),
            json!({"checkpoints": [after]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{lost}");
    assert_eq!(lost["ok"], false, "{lost:#}");
    // Enough entries to reach the start whatever the order: the refusals
    // of all 15 other requests may have come after it.
    let (_, newest) = restored.get("/api/v1/audit?limit=40", &admins).await;
    let summaries: Vec<&str> = newest
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["summary"].as_str().unwrap())
        .collect();
    // Newest first: the logins of this session, then the restore, chained
    // after the last entry the backup held: its own start is there (with
    // the refusals of the other 15 requests, in whatever order they came);
    // its success, written after its snapshot, is not.
    let restore_at = summaries
        .iter()
        .position(|s| *s == format!("Restored from backup {id}"))
        .unwrap_or_else(|| panic!("{summaries:?}"));
    let started = format!("Started backup {id}");
    assert!(
        summaries[restore_at + 1..].contains(&started.as_str()),
        "{summaries:?}"
    );
    let whole = restored.audit_summaries(&admins).await;
    assert!(
        !whole
            .iter()
            .any(|s| s.starts_with(&format!("Backup {id} succeeded"))),
        "{whole:?}"
    );

    // AWS loses the material; the restored installation puts it back.
    kms.client
        .delete_imported_key_material()
        .key_id(&active)
        .send()
        .await
        .unwrap();
    assert_eq!(kms.state(&active).await, "PendingImport");
    assert!(kms.decrypt(&ciphertext).await.is_err());
    let job = restored
        .sync(
            &admins,
            &active,
            json!({"update_policy": false, "import_material": true}),
        )
        .await;
    let job = restored.wait_job(&admins, &job).await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    assert_eq!(kms.decrypt(&ciphertext).await.unwrap(), PLAINTEXT);
    // And it goes on rotating.
    restored.rotate_ok(&admins, &billing).await;
}

#[tokio::test]
async fn audit_archives_chain_into_the_live_log_and_a_changed_archive_is_caught() {
    let app = TestApp::spawn().await;
    let admins = app.dual_session().await;
    for i in 0..5 {
        app.add_identity(
            &admins,
            &format!("reader{i}"),
            "auditor",
            "reader-password-long-1",
        )
        .await;
    }
    // 16 requests at once, each for a little more: the archives they write
    // are contiguous, none overlaps another, every entry archived once.
    let answers = burst(
        &app,
        (1..=16)
            .map(|i| {
                (
                    Method::POST,
                    "/api/v1/audit/archives".to_owned(),
                    Some(admins.clone()),
                    Some(json!({"up_to_seq": i * 2})),
                )
            })
            .collect(),
    )
    .await;
    for (status, body) in &answers {
        assert!(
            *status == StatusCode::CREATED || *status == StatusCode::NO_CONTENT,
            "{status} {body}"
        );
    }
    let (_, archives) = app.get("/api/v1/audit/archives", &admins).await;
    let archives = archives.as_array().unwrap();
    let mut next = 1;
    for archive in archives {
        assert_eq!(archive["first_seq"], next, "{archives:#?}");
        next = archive["last_seq"].as_i64().unwrap() + 1;
    }
    assert_eq!(next, 33, "{archives:#?}");
    let (_, entries) = app.get("/api/v1/audit?limit=1000", &admins).await;
    for entry in entries.as_array().unwrap() {
        let seq = entry["seq"].as_i64().unwrap();
        assert_eq!(entry["archived"], seq <= 32, "{entry}");
    }
    let (_, verify) = app.get("/api/v1/audit/verify", &admins).await;
    assert_eq!(verify["ok"], true, "{verify:#}");
    assert_eq!(verify["archives"]["entries"], 32, "{verify:#}");

    // An archive changed on disk no longer verifies, and says which.
    let file = archives[0]["file"].as_str().unwrap();
    let path = app.data_dir.join("audit-archive").join(file);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();
    let (_, verify) = app.get("/api/v1/audit/verify", &admins).await;
    assert_eq!(verify["ok"], false, "{verify:#}");
    assert!(
        verify["archives"]["problem"]
            .as_str()
            .unwrap()
            .contains(file),
        "{verify:#}"
    );
}

#[tokio::test]
async fn custodians_and_backups_held_to_a_quorum_run_once_approved_and_keep_no_passphrase() {
    let app = TestApp::spawn().await;
    let admins = app.dual_session().await;
    let approvers = [
        ("Admin3", "Admin3-quorum-pass-77"),
        ("Admin4", "Admin4-quorum-pass-88"),
    ];
    for (name, password) in approvers {
        app.add_identity(&admins, name, "administrator", password)
            .await;
    }
    let quorum = json!({"approvals": 2, "role": "administrator", "expires_after_hours": 24});
    let (status, body) = app
        .request(
            Method::PUT,
            "/api/v1/approval-policies",
            Some(&admins),
            Some(json!({"quorums": {"set_custodians": quorum, "create_backup": quorum}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, bob_public) = keyhold_backup::generate_custodian_key().unwrap();
    let passphrase = "a passphrase held to a quorum";
    let (status, request) = app
        .request(
            Method::PUT,
            "/api/v1/backups/custodians",
            Some(&admins),
            Some(json!({"threshold": 2, "custodians": [
                {"name": "alice", "passphrase": passphrase},
                {"name": "bob", "public_key": bob_public},
            ]})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{request}");
    assert!(!request.to_string().contains(passphrase), "{request}");
    let (_, none) = app.get("/api/v1/backups/custodians", &admins).await;
    assert_eq!(
        none["threshold"], 0,
        "nothing set before the approvals: {none}"
    );
    let approve = async |id: &str| {
        for approver in approvers {
            let token = alone(&app, approver).await;
            let (status, body) = app
                .post(
                    &format!("/api/v1/approvals/{id}/approve"),
                    Some(&token),
                    json!({}),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
    };
    approve(request["id"].as_str().unwrap()).await;
    let (_, set) = app.get("/api/v1/backups/custodians", &admins).await;
    assert_eq!(set["threshold"], 2, "{set}");
    assert_eq!(set["custodians"][0]["passphrase"], true, "{set}");
    let stored = app
        .get(
            &format!("/api/v1/approvals/{}", request["id"].as_str().unwrap()),
            &admins,
        )
        .await
        .1;
    assert!(!stored.to_string().contains(passphrase), "{stored}");

    let (status, request) = app.post("/api/v1/backups", Some(&admins), json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{request}");
    let (_, backups) = app.get("/api/v1/backups", &admins).await;
    assert_eq!(
        backups.as_array().unwrap().len(),
        0,
        "no backup before the approvals"
    );
    approve(request["id"].as_str().unwrap()).await;
    let (_, backups) = app.get("/api/v1/backups", &admins).await;
    let id = backups[0]["id"].as_str().unwrap().to_owned();
    let backup = wait_backup(&app, &admins, &id).await;
    assert_eq!(backup["status"], "succeeded", "{backup:#}");
    assert_eq!(backups.as_array().unwrap().len(), 1);
}
