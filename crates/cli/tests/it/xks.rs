//! Managing external key stores (keyhold as the AWS KMS XKS proxy) through
//! the API and the `keyhold xks` commands: stores and their SigV4
//! credentials under dual control (the secret shown once, to the one who
//! asked), keys that one officer may restrict but only two may widen,
//! parallel rotations that never leave more than two credentials, input
//! refused with a message that says what to fix, and a quorum policy whose
//! approved request hands the secret to its requester alone.

use std::path::{Path, PathBuf};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;

const OFFICER: (&str, &str) = ("officer1", "officer-password-1");
const AUDITOR: (&str, &str) = ("auditor1", "auditor-password-1");

/// A server with a key officer and an auditor besides the two
/// administrators; returns it and the Admin1+Admin2 session.
async fn scene() -> (TestApp, String) {
    let app = TestApp::spawn().await;
    let admins = app.dual_session().await;
    app.add_identity(&admins, OFFICER.0, "key_officer", OFFICER.1)
        .await;
    app.add_identity(&admins, AUDITOR.0, "auditor", AUDITOR.1)
        .await;
    (app, admins)
}

async fn create_store(app: &TestApp, token: &str, body: Value) -> (StatusCode, Value) {
    app.post("/api/v1/xks/stores", Some(token), body).await
}

/// A store created by `token`'s session; the answer (with its secret).
async fn store_ok(app: &TestApp, token: &str, name: &str) -> Value {
    let (status, issued) = create_store(app, token, json!({ "name": name })).await;
    assert_eq!(status, StatusCode::CREATED, "{issued}");
    issued
}

/// A key of `store` created by `token`'s session.
async fn key_ok(app: &TestApp, token: &str, store: &str, body: Value) -> Value {
    let (status, key) = app
        .post(
            &format!("/api/v1/xks/stores/{store}/keys"),
            Some(token),
            body,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    key
}

/// Everything the management API shows (of `store` too, when it still
/// exists), and the whole audit log: where a secret must never appear.
async fn everything_shown(app: &TestApp, token: &str, store: Option<&str>) -> String {
    let mut seen = String::new();
    let mut paths = vec![
        "/api/v1/xks/stores".to_owned(),
        "/api/v1/xks/keys".to_owned(),
        "/api/v1/approvals?limit=1000".to_owned(),
        "/api/v1/audit?limit=1000".to_owned(),
    ];
    if let Some(store) = store {
        paths.push(format!("/api/v1/xks/stores/{store}"));
        paths.push(format!("/api/v1/xks/stores/{store}/keys"));
    }
    for path in paths {
        let (status, body) = app.get(&path, token).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        seen.push_str(&body.to_string());
    }
    for entry in app.audit_export(token).await {
        seen.push_str(&entry.to_string());
    }
    seen
}

/// The stores and keys as listed: what a refused request must not change.
async fn xks_state(app: &TestApp, token: &str) -> Value {
    let (_, stores) = app.get("/api/v1/xks/stores", token).await;
    let (_, keys) = app.get("/api/v1/xks/keys", token).await;
    json!({ "stores": stores, "keys": keys })
}

#[tokio::test]
async fn two_officers_create_a_store_whose_secret_is_shown_once_and_never_again() {
    let (app, admins) = scene().await;
    let issued = store_ok(&app, &admins, "payments").await;
    let secret = issued["secret_access_key"].as_str().unwrap().to_owned();
    let access_key_id = issued["access_key_id"].as_str().unwrap().to_owned();
    assert_eq!(secret.len(), 44, "the Base64 of 32 random bytes");
    assert_eq!(access_key_id.len(), 26);
    assert_eq!(issued["store"]["path_prefix"], "/xks/payments");
    assert_eq!(issued["store"]["uri_path"], "/xks/payments/kms/xks/v1");
    assert_eq!(issued["store"]["quota_per_second"], 1800);
    assert_eq!(issued["store"]["mtls"], Value::Null);
    assert_eq!(issued["store"]["key_count"], 0);
    assert_eq!(
        issued["kms_console_file"],
        json!({
            "XksProxyUriPath": "/xks/payments/kms/xks/v1",
            "XksProxyAuthenticationCredential": {
                "AccessKeyId": access_key_id,
                "RawSecretAccessKey": secret,
            }
        })
    );
    assert_eq!(
        issued["store"]["credentials"][0]["access_key_id"],
        access_key_id
    );
    let key = key_ok(
        &app,
        &admins,
        "payments",
        json!({"description": "orders table", "rule": {"principals": ["arn:aws:iam::111122223333:role/app-*"]}}),
    )
    .await;
    assert_eq!(key["store"], "payments");
    assert_eq!(key["usage"], "encrypt_decrypt");
    assert_eq!(key["enabled"], true);
    assert_eq!(key["check_digits"].as_str().unwrap().len(), 4);
    assert_eq!(key["aws"]["xks_key_id"], key["id"]);
    assert_eq!(key["aws"]["xks_proxy_uri_path"], "/xks/payments/kms/xks/v1");
    assert!(
        key["aws"]["create_key_command"]
            .as_str()
            .unwrap()
            .contains(&format!("--xks-key-id {}", key["id"].as_str().unwrap())),
        "{key}"
    );
    let (_, store) = app.get("/api/v1/xks/stores/payments", &admins).await;
    assert_eq!(store["key_count"], 1);

    let seen = everything_shown(&app, &admins, Some("payments")).await;
    assert!(seen.contains(&access_key_id), "the access key id is shown");
    assert!(
        !seen.contains(&secret),
        "the secret access key came back out of the API or the audit log"
    );
    let summaries = app.audit_summaries(&admins).await;
    assert!(
        summaries
            .iter()
            .any(|s| s == "Admin1,Admin2 | Created external key store payments"),
        "{summaries:#?}"
    );
}

#[tokio::test]
async fn one_officer_alone_is_refused_audited_and_nothing_is_made() {
    let (app, admins) = scene().await;
    let officer = alone(&app, OFFICER).await;
    let before = app.audit_count(&admins).await;
    let (status, body) = create_store(&app, &officer, json!({"name": "payments"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "dual_control_required");
    let (_, stores) = app.get("/api/v1/xks/stores", &admins).await;
    assert_eq!(stores, json!([]));
    let summaries = app.audit_summaries(&admins).await;
    assert_eq!(summaries.len(), before + 1, "the refusal is audited once");
    assert_eq!(
        summaries.last().unwrap(),
        "officer1 | Failed to create external key store payments"
    );

    // Credentials and keys are held to two officers alike.
    store_ok(&app, &admins, "payments").await;
    let (status, body) = app
        .post(
            "/api/v1/xks/stores/payments/credentials",
            Some(&officer),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = app
        .post(
            "/api/v1/xks/stores/payments/keys",
            Some(&officer),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "dual_control_required");
    let (_, store) = app.get("/api/v1/xks/stores/payments", &admins).await;
    assert_eq!(store["credentials"].as_array().unwrap().len(), 1);
    assert_eq!(store["key_count"], 0);
}

#[tokio::test]
async fn auditors_read_everything_and_change_nothing() {
    let (app, admins) = scene().await;
    store_ok(&app, &admins, "payments").await;
    let key = key_ok(&app, &admins, "payments", json!({})).await;
    let id = key["id"].as_str().unwrap();
    let auditor = alone(&app, AUDITOR).await;
    let two_auditors = {
        app.add_identity(&admins, "auditor2", "auditor", "auditor-password-2")
            .await;
        let token = alone(&app, AUDITOR).await;
        app.join(&token, "auditor2", "auditor-password-2").await
    };
    for path in [
        "/api/v1/xks/stores".to_owned(),
        "/api/v1/xks/stores/payments".to_owned(),
        "/api/v1/xks/stores/payments/keys".to_owned(),
        "/api/v1/xks/keys?store=payments".to_owned(),
        format!("/api/v1/xks/keys/{id}"),
    ] {
        let (status, body) = app.get(&path, &auditor).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
    let before = xks_state(&app, &admins).await;
    for token in [&auditor, &two_auditors] {
        for (method, path, body) in [
            (
                Method::POST,
                "/api/v1/xks/stores".to_owned(),
                Some(json!({"name": "other"})),
            ),
            (
                Method::PATCH,
                "/api/v1/xks/stores/payments".to_owned(),
                Some(json!({"quota_per_second": 5})),
            ),
            (
                Method::DELETE,
                "/api/v1/xks/stores/payments".to_owned(),
                None,
            ),
            (
                Method::POST,
                "/api/v1/xks/stores/payments/credentials".to_owned(),
                Some(json!({})),
            ),
            (
                Method::POST,
                "/api/v1/xks/stores/payments/keys".to_owned(),
                Some(json!({})),
            ),
            (
                Method::PATCH,
                format!("/api/v1/xks/keys/{id}"),
                Some(json!({"enabled": false})),
            ),
            (Method::DELETE, format!("/api/v1/xks/keys/{id}"), None),
        ] {
            let (status, answer) = app.request(method.clone(), &path, Some(token), body).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {answer}");
            assert_eq!(answer["error"]["code"], "forbidden", "{answer}");
        }
    }
    assert_eq!(xks_state(&app, &admins).await, before);
}

#[tokio::test]
async fn a_key_officer_alone_restricts_a_key_but_only_two_widen_it() {
    let (app, admins) = scene().await;
    store_ok(&app, &admins, "payments").await;
    let key = key_ok(&app, &admins, "payments", json!({})).await;
    let path = format!("/api/v1/xks/keys/{}", key["id"].as_str().unwrap());
    let officer = alone(&app, OFFICER).await;

    // The brake: one officer disables, narrows, describes.
    for (change, field, value) in [
        (json!({"enabled": false}), "enabled", json!(false)),
        (json!({"usage": "decrypt"}), "usage", json!("decrypt")),
        (
            json!({"description": "retiring"}),
            "description",
            json!("retiring"),
        ),
    ] {
        let (status, changed) = app.patch(&path, &officer, change.clone()).await;
        assert_eq!(status, StatusCode::OK, "{change}: {changed}");
        assert_eq!(changed[field], value, "{changed}");
    }
    // Giving it more needs a second officer.
    let before = app.get(&path, &admins).await.1;
    for change in [
        json!({"enabled": true}),
        json!({"usage": "encrypt_decrypt"}),
        json!({"usage": "encrypt"}),
        json!({"rule": {"kms_operations": ["Decrypt"]}}),
        json!({"description": "x", "enabled": true}),
    ] {
        let (status, body) = app.patch(&path, &officer, change.clone()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{change}: {body}");
        assert_eq!(body["error"]["code"], "dual_control_required", "{body}");
    }
    assert_eq!(app.get(&path, &admins).await.1, before, "nothing changed");
    let (status, widened) = app
        .patch(
            &path,
            &admins,
            json!({"enabled": true, "usage": "encrypt_decrypt", "rule": {"kms_operations": ["Decrypt", "Encrypt"]}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{widened}");
    assert_eq!(widened["enabled"], true);
    assert_eq!(
        widened["rule"]["kms_operations"],
        json!(["Decrypt", "Encrypt"])
    );
    let summaries = app.audit_summaries(&admins).await;
    let refused = summaries
        .iter()
        .filter(|s| s.starts_with("officer1 | Failed to update XKS key"))
        .count();
    assert_eq!(refused, 5, "each refusal is audited: {summaries:#?}");
}

#[tokio::test]
async fn sixteen_parallel_rotations_leave_exactly_two_credentials() {
    let (app, admins) = scene().await;
    let first = store_ok(&app, &admins, "payments").await;
    let first_id = first["access_key_id"].as_str().unwrap().to_owned();
    let path = "/api/v1/xks/stores/payments/credentials";
    // At once, from a barrier: the store counts and inserts in one
    // transaction, so no interleaving lets a third in.
    let answers = crate::concurrency::burst(
        &app,
        (0..16)
            .map(|_| {
                (
                    Method::POST,
                    path.to_owned(),
                    Some(admins.clone()),
                    Some(json!({})),
                )
            })
            .collect(),
    )
    .await;
    let created: Vec<&Value> = answers
        .iter()
        .filter(|(status, _)| *status == StatusCode::CREATED)
        .map(|(_, body)| body)
        .collect();
    assert_eq!(created.len(), 1, "{answers:#?}");
    for (status, body) in &answers {
        assert!(
            *status == StatusCode::CREATED || *status == StatusCode::CONFLICT,
            "{status} {body}"
        );
    }
    let second_id = created[0]["access_key_id"].as_str().unwrap().to_owned();
    let (_, store) = app.get("/api/v1/xks/stores/payments", &admins).await;
    let held: Vec<&str> = store["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["access_key_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        held,
        vec![first_id.as_str(), second_id.as_str()],
        "oldest first"
    );

    // A third waits until one is revoked; the refusal says which.
    let (status, body) = app.post(path, Some(&admins), json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("revoke"), "{message}");
    assert!(message.contains(&first_id), "{message}");
    let (status, body) = app.delete(&format!("{path}/{first_id}"), &admins).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = app.delete(&format!("{path}/{first_id}"), &admins).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "revoked already: {body}");
    let (status, third) = app.post(path, Some(&admins), json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{third}");
    let held: Vec<Value> = third["store"]["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["access_key_id"].clone())
        .collect();
    assert_eq!(held, vec![json!(second_id), third["access_key_id"].clone()]);
    let summaries = app.audit_summaries(&admins).await;
    assert!(summaries.iter().any(|s| s
        == &format!(
            "Admin1,Admin2 | Revoked credential {first_id} of external key store payments"
        )));
}

#[tokio::test]
async fn taken_names_and_prefixes_are_refused_with_a_conflict() {
    let (app, admins) = scene().await;
    store_ok(&app, &admins, "payments").await;
    for (body, says) in [
        (json!({"name": "payments"}), "named 'payments'"),
        (
            json!({"name": "orders", "path_prefix": "/xks/payments"}),
            "/xks/payments",
        ),
    ] {
        let (status, answer) = create_store(&app, &admins, body.clone()).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{message}");
    }
    let (_, stores) = app.get("/api/v1/xks/stores", &admins).await;
    assert_eq!(stores.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn bad_input_gets_a_400_that_says_what_to_fix_and_changes_nothing() {
    let (app, admins) = scene().await;
    store_ok(&app, &admins, "payments").await;
    let key = key_ok(&app, &admins, "payments", json!({})).await;
    let key_path = format!("/api/v1/xks/keys/{}", key["id"].as_str().unwrap());
    let before = xks_state(&app, &admins).await;
    let audit_before = app.audit_count(&admins).await;
    let not_a_ca = "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n";
    let cases: Vec<(Method, String, Value, &str)> = vec![
        (
            Method::POST,
            "/api/v1/xks/stores".into(),
            json!({"name": "a", "path_prefix": "xks/a"}),
            "/xks/payments",
        ),
        (
            Method::POST,
            "/api/v1/xks/stores".into(),
            json!({"name": "a", "path_prefix": "/api/a"}),
            "keyhold's own routes",
        ),
        (
            Method::POST,
            "/api/v1/xks/stores".into(),
            json!({"name": "a", "path_prefix": "/a/../b"}),
            "not allowed",
        ),
        (
            Method::POST,
            "/api/v1/xks/stores".into(),
            json!({"name": "a", "quota_per_second": 0}),
            "1800",
        ),
        (
            Method::POST,
            "/api/v1/xks/stores".into(),
            json!({"name": "a b"}),
            "letters, digits",
        ),
        (
            Method::POST,
            "/api/v1/xks/stores".into(),
            json!({"name": "a", "mtls": {"subject": "cks.kms.eu-west-1.amazonaws.com", "ca_pem": not_a_ca}}),
            "not an X.509 certificate",
        ),
        (
            Method::POST,
            "/api/v1/xks/stores".into(),
            json!({"name": "a", "mtls": {"subject": "cks.kms.eu-west-1.amazonaws.com", "ca_pem": "hello"}}),
            "CERTIFICATE",
        ),
        (
            Method::POST,
            "/api/v1/xks/stores".into(),
            json!({"name": "a", "mtls": {"subject": "no spaces allowed", "ca_pem": not_a_ca}}),
            "common name",
        ),
        (
            Method::POST,
            "/api/v1/xks/stores".into(),
            json!({"name": "a", "quota": 5}),
            "unknown field",
        ),
        (
            Method::PATCH,
            "/api/v1/xks/stores/payments".into(),
            json!({}),
            "nothing to change",
        ),
        (
            Method::PATCH,
            "/api/v1/xks/stores/payments".into(),
            json!({"quota_per_second": 100_001}),
            "quota_per_second",
        ),
        (
            Method::POST,
            "/api/v1/xks/stores/payments/keys".into(),
            json!({"usage": "sign"}),
            "encrypt_decrypt, encrypt or decrypt",
        ),
        (
            Method::POST,
            "/api/v1/xks/stores/payments/keys".into(),
            json!({"description": "a\nb"}),
            "printable",
        ),
        (
            Method::POST,
            "/api/v1/xks/stores/payments/keys".into(),
            json!({"rule": {"principals": [""]}}),
            "rule.principals",
        ),
        (
            Method::POST,
            "/api/v1/xks/stores/payments/keys".into(),
            json!({"rule": {"principal": ["x"]}}),
            "unknown field",
        ),
        (
            Method::POST,
            "/api/v1/xks/stores/payments/keys".into(),
            json!({"enabled": "yes"}),
            "expected a boolean",
        ),
        (
            Method::PATCH,
            key_path.clone(),
            json!({}),
            "nothing to change",
        ),
        (
            Method::PATCH,
            key_path.clone(),
            json!({"usage": "both"}),
            "encrypt_decrypt",
        ),
        (
            Method::PATCH,
            key_path.clone(),
            json!({"colour": "red"}),
            "unknown field",
        ),
        (
            Method::GET,
            "/api/v1/xks/keys/not-a-key".into(),
            Value::Null,
            "not an XKS key id",
        ),
        (
            Method::DELETE,
            "/api/v1/xks/stores/payments/credentials/lowercase-id".into(),
            Value::Null,
            "A-Z and 2-7",
        ),
    ];
    let mut wrong = Vec::new();
    for (method, path, body, says) in &cases {
        let body = (!body.is_null()).then(|| body.clone());
        let (status, answer) = app.request(method.clone(), path, Some(&admins), body).await;
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        if status != StatusCode::BAD_REQUEST || !message.contains(says) {
            wrong.push(format!(
                "{method} {path}: {status} {answer} (expected 400 saying {says:?})"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(xks_state(&app, &admins).await, before, "nothing changed");
    // Every refused change is audited (reads and bodies that do not parse
    // never reach an operation).
    assert!(app.audit_count(&admins).await > audit_before);
}

#[tokio::test]
async fn stores_with_keys_and_enabled_keys_are_not_deleted() {
    let (app, admins) = scene().await;
    store_ok(&app, &admins, "payments").await;
    let key = key_ok(&app, &admins, "payments", json!({})).await;
    let key_path = format!("/api/v1/xks/keys/{}", key["id"].as_str().unwrap());

    let (status, body) = app.delete("/api/v1/xks/stores/payments", &admins).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1 XKS key"),
        "{body}"
    );
    let (status, body) = app.delete(&key_path, &admins).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("disable it first"),
        "{body}"
    );
    let (status, _) = app.get(&key_path, &admins).await;
    assert_eq!(status, StatusCode::OK, "still there");

    let (status, body) = app
        .patch(&key_path, &admins, json!({"enabled": false}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app.delete(&key_path, &admins).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, _) = app.get(&key_path, &admins).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = app.delete("/api/v1/xks/stores/payments", &admins).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, _) = app.get("/api/v1/xks/stores/payments", &admins).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

// Multi-threaded: the in-process server answers while the test waits on the CLI.
#[tokio::test(flavor = "multi_thread")]
async fn a_quorum_holds_store_creation_and_the_secret_reaches_the_requester_alone() {
    let (app, admins) = scene().await;
    let quorum = json!({"approvals": 1, "role": "administrator", "expires_after_hours": 24});
    let (status, body) = app
        .request(
            Method::PUT,
            "/api/v1/approval-policies",
            Some(&admins),
            Some(json!({"quorums": {"manage_xks_stores": quorum}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Asked for by one officer: stored as a request, nothing made yet.
    let officer = alone(&app, OFFICER).await;
    let (status, request) = create_store(
        &app,
        &officer,
        json!({"name": "payments", "quota_per_second": 900}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{request}");
    assert_eq!(request["class"], "manage_xks_stores");
    assert_eq!(request["operation"]["kind"], "create_xks_store");
    let id = request["id"].as_str().unwrap().to_owned();
    let (_, stores) = app.get("/api/v1/xks/stores", &admins).await;
    assert_eq!(stores, json!([]));
    // Two identities in one session do not run it past the quorum either.
    let pair = {
        let token = alone(&app, OFFICER).await;
        app.join(&token, "Admin1", ADMIN1_PASSWORD).await
    };
    let (status, body) = create_store(&app, &pair, json!({"name": "other"})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");

    // Approved from an administrator's own session: it runs, and the
    // approver sees no secret.
    let admin2 = alone(&app, ("Admin2", ADMIN2_PASSWORD)).await;
    let (status, done) = app
        .post(
            &format!("/api/v1/approvals/{id}/approve"),
            Some(&admin2),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["status"], "executed", "{done}");
    assert_eq!(done["result_waiting"], true);
    let (_, store) = app.get("/api/v1/xks/stores/payments", &admins).await;
    assert_eq!(store["quota_per_second"], 900);
    let held = store["credentials"][0]["access_key_id"].clone();

    // Only the requester collects it, once.
    let path = format!("/api/v1/approvals/{id}/result");
    let (status, body) = app.post(&path, Some(&admin2), json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, result) = app.post(&path, Some(&officer), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{result:?}");
    let credential = &result["xks_credential"];
    let secret = credential["secret_access_key"].as_str().unwrap().to_owned();
    assert_eq!(secret.len(), 44);
    assert_eq!(result["password"], secret);
    assert_eq!(credential["access_key_id"], held);
    assert_eq!(credential["store"]["name"], "payments");
    assert_eq!(
        credential["kms_console_file"],
        json!({
            "XksProxyUriPath": "/xks/payments/kms/xks/v1",
            "XksProxyAuthenticationCredential": {"AccessKeyId": held, "RawSecretAccessKey": secret},
        })
    );
    let (status, body) = app.post(&path, Some(&officer), json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    let seen = everything_shown(&app, &admins, Some("payments")).await;
    assert!(!seen.contains(&secret), "the secret leaked");
    let summaries = app.audit_summaries(&admins).await;
    assert!(
        summaries
            .iter()
            .any(|s| s == "officer1,Admin2 | Created external key store payments"),
        "the entry names the requester and the approver: {summaries:#?}"
    );

    // A rotation asked for the same way, from the command line, hands its
    // secret to its requester too: `keyhold approval result` prints it.
    let cli = Cli::new(&app);
    cli.login(OFFICER).await;
    let out = cli
        .ok(&["xks", "credential", "rotate", "--store", "payments"])
        .await;
    assert!(out.starts_with("Sent for approval: request "), "{out}");
    let id = out
        .trim_start_matches("Sent for approval: request ")
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let (status, done) = app
        .post(
            &format!("/api/v1/approvals/{id}/approve"),
            Some(&admin2),
            json!({}),
        )
        .await;
    assert_eq!(done["status"], "executed", "{status} {done}");
    let out = cli.ok(&["approval", "result", &id]).await;
    let (_, store) = app.get("/api/v1/xks/stores/payments", &admins).await;
    let credentials = store["credentials"].as_array().unwrap();
    assert_eq!(credentials.len(), 2);
    let new_id = credentials[1]["access_key_id"].as_str().unwrap();
    assert_ne!(credentials[1]["access_key_id"], held);
    assert!(
        out.contains(&format!("New access key ID:  {new_id}")),
        "{out}"
    );
    assert!(out.contains("Secret access key:"), "{out}");
    assert!(out.contains("update-custom-key-store"), "{out}");
    let ran = cli.run(&["approval", "result", &id]).await;
    assert_eq!(ran.code, Some(2), "collected once: {}", ran.out);
}

// ---- the command line ----

/// The `keyhold` binary against one server, with its own session file.
struct Cli {
    base: String,
    dir: tempfile::TempDir,
}

struct Ran {
    code: Option<i32>,
    out: String,
    err: String,
}

impl Cli {
    fn new(app: &TestApp) -> Self {
        Self {
            base: app.base.clone(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    async fn run(&self, args: &[&str]) -> Ran {
        let (base, session) = (self.base.clone(), self.path("session"));
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = keyhold_cli(&base, &session, &args, b"");
            Ran {
                code: out.status.code(),
                out: String::from_utf8(out.stdout).unwrap(),
                err: String::from_utf8(out.stderr).unwrap(),
            }
        })
        .await
        .unwrap()
    }

    async fn ok(&self, args: &[&str]) -> String {
        let ran = self.run(args).await;
        assert_eq!(ran.code, Some(0), "{args:?}: {}\n{}", ran.err, ran.out);
        ran.out
    }

    async fn json(&self, args: &[&str]) -> Value {
        let out = self.ok(&[args, &["--output", "json"]].concat()).await;
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    }

    async fn login(&self, (user, password): (&str, &str)) {
        let (base, session) = (self.base.clone(), self.path("session"));
        let (user, password) = (user.to_owned(), password.to_owned());
        tokio::task::spawn_blocking(move || {
            let out = keyhold_cli(
                &base,
                &session,
                &["login", "--user", &user, "--password-stdin"],
                format!("{password}\n").as_bytes(),
            );
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        })
        .await
        .unwrap();
    }
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

// Multi-threaded: the in-process server answers while the test waits on the CLI.
#[tokio::test(flavor = "multi_thread")]
async fn the_cli_manages_stores_credentials_and_keys_and_shows_a_secret_once() {
    let (app, admins) = scene().await;
    let cli = Cli::new(&app);
    cli.login(("Admin1", ADMIN1_PASSWORD)).await;
    cli.login(("Admin2", ADMIN2_PASSWORD)).await;

    // The console's file: written with mode 0600, the secret not printed.
    let file = cli.path("payments-kms.json");
    let out = cli
        .ok(&[
            "xks",
            "store",
            "create",
            "--name",
            "payments",
            "--quota",
            "900",
            "--kms-config-out",
            file.to_str().unwrap(),
        ])
        .await;
    #[cfg(unix)]
    assert_eq!(mode(&file), 0o600);
    let console: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(console["XksProxyUriPath"], "/xks/payments/kms/xks/v1");
    let secret = console["XksProxyAuthenticationCredential"]["RawSecretAccessKey"]
        .as_str()
        .unwrap()
        .to_owned();
    let first_id = console["XksProxyAuthenticationCredential"]["AccessKeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(secret.len(), 44);
    assert!(!out.contains(&secret), "{out}");
    assert!(
        out.contains(&first_id) && out.contains(file.to_str().unwrap()),
        "{out}"
    );
    assert!(out.contains("create-custom-key-store"), "{out}");
    // Never overwritten: the command refuses before anything is made.
    let ran = cli
        .run(&[
            "xks",
            "store",
            "create",
            "--name",
            "orders",
            "--kms-config-out",
            file.to_str().unwrap(),
        ])
        .await;
    assert_eq!(ran.code, Some(2), "{}", ran.err);
    assert!(ran.err.contains("exists already"), "{}", ran.err);
    let stores = cli.json(&["xks", "store", "list"]).await;
    assert_eq!(stores.as_array().unwrap().len(), 1, "{stores}");

    // Without a file: printed, this once.
    let out = cli
        .ok(&["xks", "credential", "rotate", "--store", "payments"])
        .await;
    assert!(out.contains("Secret access key:"), "{out}");
    assert!(out.contains("shown only now"), "{out}");
    assert!(
        out.contains(&format!("--access-key-id {first_id}")),
        "{out}"
    );
    let store = cli.json(&["xks", "store", "show", "payments"]).await;
    let held: Vec<&str> = store["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["access_key_id"].as_str().unwrap())
        .collect();
    assert_eq!(held.len(), 2);
    assert_eq!(held[0], first_id);
    let second_id = held[1].to_owned();
    assert!(out.contains(&second_id), "{out}");
    let ran = cli
        .run(&["xks", "credential", "rotate", "--store", "payments"])
        .await;
    assert_eq!(ran.code, Some(2), "a third is refused: {}", ran.out);
    assert!(ran.err.contains("revoke"), "{}", ran.err);
    cli.ok(&[
        "xks",
        "credential",
        "revoke",
        "--store",
        "payments",
        "--access-key-id",
        &first_id,
    ])
    .await;
    let json = cli
        .json(&["xks", "credential", "rotate", "--store", "payments"])
        .await;
    assert_eq!(json["secret_access_key"].as_str().unwrap().len(), 44);
    assert_eq!(json["store"]["credentials"].as_array().unwrap().len(), 2);

    // Keys, with an authorization rule.
    let key = cli
        .json(&[
            "xks",
            "key",
            "create",
            "--store",
            "payments",
            "--description",
            "orders table",
            "--allow-principal",
            "arn:aws:iam::111122223333:role/app-*",
            "--allow-operation",
            "Decrypt",
            "--allow-operation",
            "Encrypt",
        ])
        .await;
    let id = key["id"].as_str().unwrap().to_owned();
    assert_eq!(key["rule"]["kms_operations"], json!(["Decrypt", "Encrypt"]));
    let listed = cli
        .json(&["xks", "key", "list", "--store", "payments"])
        .await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let shown = cli.ok(&["xks", "key", "show", &id]).await;
    assert!(shown.contains(&format!("--xks-key-id {id}")), "{shown}");
    let table = cli.ok(&["xks", "key", "list"]).await;
    assert!(table.starts_with("XksKeyId"), "{table}");
    let ran = cli.run(&["xks", "key", "delete", &id]).await;
    assert_eq!(ran.code, Some(2), "an enabled key stays: {}", ran.out);
    let disabled = cli.json(&["xks", "key", "disable", &id]).await;
    assert_eq!(disabled["enabled"], false);
    let narrowed = cli
        .json(&[
            "xks",
            "key",
            "update",
            &id,
            "--usage",
            "decrypt",
            "--no-rule",
        ])
        .await;
    assert_eq!(narrowed["usage"], "decrypt");
    assert_eq!(narrowed["rule"]["principals"], json!([]));
    cli.ok(&["xks", "key", "delete", &id]).await;
    let updated = cli
        .json(&["xks", "store", "update", "payments", "--quota", "1200"])
        .await;
    assert_eq!(updated["quota_per_second"], 1200);
    let ran = cli.run(&["xks", "store", "update", "payments"]).await;
    assert_eq!(ran.code, Some(2));
    assert!(ran.err.contains("nothing to change"), "{}", ran.err);
    cli.ok(&["xks", "store", "delete", "payments"]).await;

    let seen = everything_shown(&app, &admins, None).await;
    assert!(!seen.contains(&secret));
    assert!(!seen.contains(json["secret_access_key"].as_str().unwrap()));
}
