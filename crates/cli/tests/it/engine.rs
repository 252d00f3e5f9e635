//! The AWS engine against a real KMS peer: Force Rotate, Synchronize, the
//! placeholder key, policies, failures and retries. Every assertion about
//! AWS reads KMS state through the AWS API.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::kms::Kms;

/// A server with a dual session and a credential that reaches the KMS peer.
async fn ready_app() -> (TestApp, String) {
    ready_app_allowing(&[]).await
}

/// The same, on a server whose operator also allows `endpoints` (stand-ins
/// for KMS on loopback).
async fn ready_app_allowing(endpoints: &[&str]) -> (TestApp, String) {
    let app = TestApp::spawn_with(|args| allow_endpoints(args, endpoints)).await;
    let token = app.dual_session().await;
    app.import_kms_credential(&token, "aws").await;
    (app, token)
}

async fn group_named(app: &TestApp, token: &str, name: &str, adjust: impl FnOnce(&mut Value)) {
    let mut body = group_body(name, "aws");
    body["region"] = json!("eu-west-1");
    adjust(&mut body);
    let (status, created) = app.create_group(token, body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
}

#[tokio::test]
async fn three_force_rotates_leave_three_kms_keys_with_the_alias_on_the_newest() {
    let (app, token) = ready_app().await;
    let kms = Kms::connect().await;
    let (on, off) = (unique("rot-on"), unique("rot-off"));
    group_named(&app, &token, &on, |g| {
        g["disable_after_rotate"] = json!(true)
    })
    .await;
    group_named(&app, &token, &off, |g| {
        g["disable_after_rotate"] = json!(false);
        g["valid_for"] = Value::Null;
    })
    .await;

    for (group, disable) in [(&on, true), (&off, false)] {
        let mut rotated = Vec::new();
        for _ in 0..3 {
            rotated.push(app.rotate_ok(&token, group).await);
        }
        let mut in_kms = kms.keys_of_group(group).await;
        in_kms.sort();
        let mut expected = rotated.clone();
        expected.sort();
        assert_eq!(in_kms, expected, "exactly one KMS key per rotation");
        let newest = rotated.last().unwrap();
        assert_eq!(
            kms.alias_target(&format!("alias/{group}")).await.as_deref(),
            Some(newest.as_str())
        );
        assert_eq!(kms.state(newest).await, "Enabled");
        for older in &rotated[..2] {
            let state = kms.state(older).await;
            assert_eq!(
                state,
                if disable { "Disabled" } else { "Enabled" },
                "{group}: {older}"
            );
        }
        // Validity: material that expires when the group keeps keys valid for a time.
        let expiration = kms
            .describe(newest)
            .await
            .expiration_model()
            .map(|m| m.as_str().to_owned());
        let expected_model = if disable {
            "KEY_MATERIAL_EXPIRES"
        } else {
            "KEY_MATERIAL_DOES_NOT_EXPIRE"
        };
        assert_eq!(expiration.as_deref(), Some(expected_model));

        // keyhold's list mirrors it: versions 1..3, the KMS ids as names, states as seen.
        let (_, keys) = app
            .get(&format!("/api/v1/keys?group={group}"), &token)
            .await;
        let mut listed: Vec<(u64, String, String)> = keys
            .as_array()
            .unwrap()
            .iter()
            .map(|k| {
                (
                    k["version"].as_u64().unwrap(),
                    k["name"].as_str().unwrap().to_owned(),
                    k["state"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        listed.sort();
        assert_eq!(
            listed.iter().map(|k| k.0).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(
            listed.iter().map(|k| k.1.clone()).collect::<Vec<_>>(),
            rotated
        );
        assert_eq!(listed[2].2, "enabled");
        assert_eq!(listed[0].2, if disable { "disabled" } else { "enabled" });
        let check_digits = keys[0]["check_digits"].as_str().unwrap();
        assert!(check_digits.len() == 4 && check_digits.chars().all(|c| c.is_ascii_hexdigit()));
        if disable {
            assert!(
                keys[0]["valid_to"].is_string(),
                "valid_to follows 'keep valid for'"
            );
        }
    }

    let audit = app.audit_summaries(&token).await;
    let ok = format!("Admin1,Admin2 | Successfully rotated keys for HSM protected key group {on}.");
    assert_eq!(audit.iter().filter(|a| **a == ok).count(), 3, "{audit:#?}");
}

#[tokio::test]
async fn the_placeholder_active_key_id_receives_the_first_material() {
    let (app, token) = ready_app().await;
    let kms = Kms::connect().await;
    let placeholder = kms.create_placeholder().await;
    assert_eq!(kms.state(&placeholder).await, "PendingImport");
    let group = unique("placeholder");
    group_named(&app, &token, &group, |g| {
        g["active_key_id"] = json!(placeholder)
    })
    .await;

    let active = app.rotate_ok(&token, &group).await;
    assert_eq!(
        active, placeholder,
        "no new key: the placeholder took the material"
    );
    assert!(
        kms.keys_of_group(&group).await.is_empty(),
        "no KMS key was created for the group"
    );
    assert_eq!(kms.state(&placeholder).await, "Enabled");
    assert_eq!(
        kms.alias_target(&format!("alias/{group}")).await.as_deref(),
        Some(placeholder.as_str())
    );

    // The second rotation creates a key and moves the alias on.
    let second = app.rotate_ok(&token, &group).await;
    assert_ne!(second, placeholder);
    assert_eq!(
        kms.alias_target(&format!("alias/{group}")).await.as_deref(),
        Some(second.as_str())
    );
}

#[tokio::test]
async fn deleting_and_reimporting_material_brings_back_the_same_key() {
    let (app, token) = ready_app().await;
    let kms = Kms::connect().await;
    let group = unique("sync");
    group_named(&app, &token, &group, |_| {}).await;
    let key = app.rotate_ok(&token, &group).await;
    let alias = format!("alias/{group}");
    let ciphertext = kms.encrypt(&alias, b"customer records").await;

    // Delete Key Material alone: the key becomes PendingImport and cannot decrypt.
    let id = app
        .sync(
            &token,
            &key,
            json!({"update_policy": false, "import_material": false, "delete_material": true}),
        )
        .await;
    let job = app.wait_job(&token, &id).await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    assert_eq!(kms.state(&key).await, "PendingImport");
    assert!(kms.decrypt(&ciphertext).await.is_err());
    let (_, shown) = app.get(&format!("/api/v1/keys/{key}"), &token).await;
    assert_eq!(
        shown["state"], "pending_import",
        "keyhold mirrors the state it saw"
    );

    // Import Key Material: the key's own material goes back; old data decrypts again.
    let id = app
        .sync(&token, &key, json!({"update_policy": false}))
        .await;
    let job = app.wait_job(&token, &id).await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    assert_eq!(kms.state(&key).await, "Enabled");
    assert_eq!(kms.decrypt(&ciphertext).await.unwrap(), b"customer records");

    // All three in one job run delete, then import, then policy.
    let id = app
        .sync(&token, &key, json!({"delete_material": true}))
        .await;
    let job = app.wait_job(&token, &id).await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    let steps: Vec<&str> = job["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["text"].as_str())
        .filter(|t| t.starts_with("Step"))
        .collect();
    assert!(
        steps[0].contains("Deleted the imported key material"),
        "{steps:#?}"
    );
    assert!(steps[1].contains("Imported the key material"), "{steps:#?}");
    assert!(steps[2].contains("policy"), "{steps:#?}");
    assert_eq!(kms.decrypt(&ciphertext).await.unwrap(), b"customer records");

    let audit = app.audit_summaries(&token).await;
    assert!(
        audit.contains(&format!(
            "Admin1,Admin2 | Successfully synchronized HSM protected key {key}."
        )),
        "{audit:#?}"
    );
}

#[tokio::test]
async fn deleting_key_material_needs_two_officers() {
    let (app, token) = ready_app().await;
    let group = unique("dual-del");
    group_named(&app, &token, &group, |_| {}).await;
    let key = app.rotate_ok(&token, &group).await;
    let (_, body) = app.login(None, "Admin1", ADMIN1_PASSWORD).await;
    let single = body["token"].as_str().unwrap().to_owned();
    let (status, body) = app
        .post(
            &format!("/api/v1/keys/{key}/sync"),
            Some(&single),
            json!({"delete_material": true}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("dual_control_required")),
        "{body}"
    );
    assert_eq!(
        Kms::connect().await.state(&key).await,
        "Enabled",
        "nothing was deleted"
    );
    // Re-importing and putting the policy are one officer's work.
    let id = app.sync(&single, &key, json!({})).await;
    assert_eq!(app.wait_job(&single, &id).await["status"], "succeeded");
}

#[tokio::test]
async fn update_policy_puts_the_groups_policy_on_the_key() {
    let (app, token) = ready_app().await;
    let kms = Kms::connect().await;
    let group = unique("policy");
    group_named(&app, &token, &group, |_| {}).await;
    let key = app.rotate_ok(&token, &group).await;
    let initial: Value =
        serde_json::from_str(group_body("x", "aws")["policy"].as_str().unwrap()).unwrap();
    assert_eq!(
        kms.policy(&key).await,
        initial,
        "CreateKey carried the group's policy"
    );

    let new_policy = json!({"Version": "2012-10-17", "Statement": [{"Sid": "ops", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:role/ops"}, "Action": ["kms:Decrypt"], "Resource": "*"}]});
    let (status, _) = app
        .patch(
            &format!("/api/v1/groups/{group}"),
            &token,
            json!({"policy": new_policy.to_string()}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let id = app
        .sync(&token, &key, json!({"import_material": false}))
        .await;
    assert_eq!(app.wait_job(&token, &id).await["status"], "succeeded");
    assert_eq!(kms.policy(&key).await, new_policy);
}

#[tokio::test]
async fn rsa_4096_wrapping_keys_work_too() {
    let app =
        TestApp::spawn_with(|args| args.kms.kms_wrapping_key_spec = Some("RSA_4096".into())).await;
    let token = app.dual_session().await;
    app.import_kms_credential(&token, "aws").await;
    let group = unique("rsa4096");
    group_named(&app, &token, &group, |_| {}).await;
    let id = app.rotate(&token, &group).await;
    let job = app.wait_job(&token, &id).await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    // The best the keystore can do: SoftHSM2 2.6 wraps with OAEP SHA-1 only.
    let expected = if Hsm::for_suite().is_some() {
        "RSAES_OAEP_SHA_1"
    } else {
        "RSAES_OAEP_SHA_256"
    };
    assert_eq!(job["wrapping_algorithm"], expected);
    let messages = job["messages"].to_string();
    assert!(
        messages.contains(&format!("wrapped with {expected}")),
        "the job says which wrapping it used: {messages}"
    );
    assert_eq!(
        Kms::connect()
            .await
            .state(job["kms_key_id"].as_str().unwrap())
            .await,
        "Enabled"
    );
}

#[tokio::test]
async fn a_missing_active_key_id_fails_the_job_and_a_retry_after_the_fix_succeeds() {
    let (app, token) = ready_app().await;
    let group = unique("missing");
    let ghost = uuid::Uuid::new_v4().to_string();
    group_named(&app, &token, &group, |g| g["active_key_id"] = json!(ghost)).await;
    let id = app.rotate(&token, &group).await;
    let job = app.wait_job(&token, &id).await;
    assert_eq!(job["status"], "failed");
    let error = job["error"].as_str().unwrap();
    assert!(
        error.contains(&ghost) && error.contains("does not exist"),
        "{error}"
    );
    let (_, g) = app.get(&format!("/api/v1/groups/{group}"), &token).await;
    assert_eq!(g["active_key_id"], json!(ghost), "nothing local changed");
    let audit = app.audit_summaries(&token).await;
    assert!(
        audit.contains(&format!(
            "Admin1,Admin2 | Failed to rotate keys for HSM protected key group {group}."
        )),
        "{audit:#?}"
    );

    // A new rotation waits for the failed one to be retried or cancelled.
    let (status, _) = app
        .post(
            &format!("/api/v1/groups/{group}/rotate"),
            Some(&token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);

    app.patch(
        &format!("/api/v1/groups/{group}"),
        &token,
        json!({"active_key_id": null}),
    )
    .await;
    let (status, retried) = app
        .post(&format!("/api/v1/jobs/{id}/retry"), Some(&token), json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{retried}");
    let job = app.wait_job(&token, &id).await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    assert_eq!(job["attempts"], 2);
    assert_eq!(Kms::connect().await.keys_of_group(&group).await.len(), 1);
}

#[tokio::test]
async fn an_unreachable_endpoint_fails_the_job_with_the_reason_and_loses_nothing() {
    let (app, token) = ready_app_allowing(&["http://127.0.0.1:9"]).await;
    app.import_credential_at(&token, "nowhere", "http://127.0.0.1:9")
        .await;
    let group = unique("unreachable");
    let mut body = group_body(&group, "nowhere");
    body["region"] = json!("eu-west-1");
    app.create_group(&token, body).await;
    let id = app.rotate(&token, &group).await;
    let job = app.wait_job(&token, &id).await;
    assert_eq!(job["status"], "failed", "{job:#}");
    assert!(
        job["error"].as_str().unwrap().contains("unavailable"),
        "{job:#}"
    );
    let (_, keys) = app
        .get(&format!("/api/v1/keys?group={group}"), &token)
        .await;
    assert_eq!(
        keys.as_array().unwrap().len(),
        1,
        "the generated key is kept, not lost"
    );

    app.patch(
        &format!("/api/v1/groups/{group}"),
        &token,
        json!({"credential": "aws"}),
    )
    .await;
    app.post(&format!("/api/v1/jobs/{id}/retry"), Some(&token), json!({}))
        .await;
    let job = app.wait_job(&token, &id).await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    let (_, keys) = app
        .get(&format!("/api/v1/keys?group={group}"), &token)
        .await;
    assert_eq!(
        keys.as_array().unwrap().len(),
        1,
        "the retry used the key it had generated"
    );
    assert_eq!(keys[0]["state"], "enabled");
}

#[tokio::test]
async fn a_key_deleted_behind_keyholds_back_fails_sync_until_restored() {
    let (app, token) = ready_app().await;
    let kms = Kms::connect().await;
    let group = unique("behind");
    group_named(&app, &token, &group, |_| {}).await;
    let key = app.rotate_ok(&token, &group).await;
    kms.client
        .schedule_key_deletion()
        .key_id(&key)
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();

    let id = app
        .sync(&token, &key, json!({"update_policy": false}))
        .await;
    let job = app.wait_job(&token, &id).await;
    assert_eq!(job["status"], "failed");
    assert!(
        job["error"].as_str().unwrap().contains("pending deletion"),
        "{job:#}"
    );
    let (status, _) = app.get(&format!("/api/v1/keys/{key}"), &token).await;
    assert_eq!(status, StatusCode::OK, "keyhold keeps the key");

    kms.client
        .cancel_key_deletion()
        .key_id(&key)
        .send()
        .await
        .unwrap();
    kms.client.enable_key().key_id(&key).send().await.unwrap();
    app.post(&format!("/api/v1/jobs/{id}/retry"), Some(&token), json!({}))
        .await;
    let job = app.wait_job(&token, &id).await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    assert_eq!(kms.state(&key).await, "Enabled");
}

/// A stand-in for AWS KMS that answers every request with one AWS error, in
/// AWS's own wire format (JSON body, `__type`): for cases LocalStack cannot
/// produce (it accepts any access key and does not validate policies).
async fn failing_kms(error_type: &'static str, message: &'static str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let _ = socket.read(&mut buf).await;
                let body = format!(r#"{{"__type":"{error_type}","message":"{message}"}}"#);
                let response = format!(
                    "HTTP/1.1 400 Bad Request\r\nContent-Type: application/x-amz-json-1.1\r\nx-amzn-RequestId: 5e8f4c\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}")
}

async fn refusing_kms() -> String {
    failing_kms(
        "UnrecognizedClientException",
        "The security token included in the request is invalid.",
    )
    .await
}

#[tokio::test]
async fn a_policy_kms_rejects_fails_the_job_with_awss_reason() {
    let endpoint = failing_kms(
        "MalformedPolicyDocumentException",
        "The new key policy will not allow you to update the key policy in the future.",
    )
    .await;
    let (app, token) = ready_app_allowing(&[&endpoint]).await;
    app.import_credential_at(&token, "strict", &endpoint).await;
    let group = unique("bad-policy");
    let mut body = group_body(&group, "strict");
    body["region"] = json!("eu-west-1");
    app.create_group(&token, body).await;
    let id = app.rotate(&token, &group).await;
    let job = app.wait_job(&token, &id).await;
    assert_eq!(job["status"], "failed");
    let error = job["error"].as_str().unwrap();
    assert!(
        error.contains("CreateKey") && error.contains("key policy will not allow"),
        "{error}"
    );
    let (_, g) = app.get(&format!("/api/v1/groups/{group}"), &token).await;
    assert_eq!(g["active_key_id"], Value::Null, "nothing became active");
}

/// The `keyhold` binary against this test's server, as a script would use it.
fn keyhold(
    app: &TestApp,
    session: &std::path::Path,
    args: &[&str],
    stdin: &str,
) -> std::process::Output {
    keyhold_cli(&app.base, session, args, stdin.as_bytes())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_waits_for_jobs_and_exits_by_their_outcome() {
    let (app, token) = ready_app().await;
    let good = unique("cli-wait");
    group_named(&app, &token, &good, |_| {}).await;
    let bad = unique("cli-fail");
    group_named(&app, &token, &bad, |g| {
        g["active_key_id"] = json!(uuid::Uuid::new_v4().to_string())
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("session.json");
    let app = std::sync::Arc::new(app);
    let run = {
        let app = app.clone();
        move |args: Vec<String>, stdin: String| {
            let app = app.clone();
            let session = session.clone();
            tokio::task::spawn_blocking(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                keyhold(&app, &session, &args, &stdin)
            })
        }
    };
    let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    for (user, password) in [("Admin1", ADMIN1_PASSWORD), ("Admin2", ADMIN2_PASSWORD)] {
        let out = run(
            args(&["login", "--user", user, "--password-stdin"]),
            format!("{password}\n"),
        )
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let out = run(
        args(&["group", "rotate", &good, "--wait", "--output", "json"]),
        String::new(),
    )
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(job["status"], "succeeded");
    let key = job["kms_key_id"].as_str().unwrap().to_owned();
    assert_eq!(Kms::connect().await.state(&key).await, "Enabled");

    let out = run(
        args(&["key", "sync", &key, "--no-update-policy", "--wait"]),
        String::new(),
    )
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let people = String::from_utf8_lossy(&out.stdout);
    assert!(
        people.contains("Imported the key material"),
        "the job's messages are shown as they arrive: {people}"
    );

    let out = run(args(&["group", "rotate", &bad, "--wait"]), String::new())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "a failed job exits 1");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("does not exist") && stderr.contains("job retry"),
        "{stderr}"
    );

    let out = run(args(&["job", "list", "--output", "json"]), String::new())
        .await
        .unwrap();
    let jobs: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(jobs.as_array().unwrap().len(), 3);
    drop(token);
}

#[tokio::test]
async fn a_refused_credential_fails_the_job_with_awss_reason() {
    let endpoint = refusing_kms().await;
    let (app, token) = ready_app_allowing(&[&endpoint]).await;
    app.import_credential_at(&token, "revoked", &endpoint).await;
    let group = unique("refused");
    let mut body = group_body(&group, "revoked");
    body["region"] = json!("eu-west-1");
    app.create_group(&token, body).await;
    let id = app.rotate(&token, &group).await;
    let job = app.wait_job(&token, &id).await;
    assert_eq!(job["status"], "failed");
    let error = job["error"].as_str().unwrap();
    assert!(
        error.contains("refused the credential") && error.contains("security token"),
        "{error}"
    );
    assert!(!job.to_string().contains(SECRET_ACCESS_KEY));
}

#[tokio::test]
async fn jobs_are_listed_with_progress_and_messages() {
    let (app, token) = ready_app().await;
    let group = unique("jobs");
    group_named(&app, &token, &group, |_| {}).await;
    let id = app.rotate(&token, &group).await;
    let job = app.wait_job(&token, &id).await;
    assert_eq!(
        (job["steps_done"].as_u64(), job["steps_total"].as_u64()),
        (Some(6), Some(6))
    );
    assert_eq!(job["users"], "Admin1,Admin2");
    let texts: Vec<&str> = job["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("Step 1 of 6: Generated AES-256 key version 1")),
        "{texts:#?}"
    );
    assert!(
        texts.iter().any(|t| t.contains("Alias alias/")),
        "{texts:#?}"
    );
    let (_, list) = app.get("/api/v1/jobs", &token).await;
    assert_eq!(list[0]["id"], json!(id));
    assert!(list[0].get("messages").is_none(), "lists stay light");
    let (status, _) = app
        .post(&format!("/api/v1/jobs/{id}/retry"), Some(&token), json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "only failed jobs are retried");
}
