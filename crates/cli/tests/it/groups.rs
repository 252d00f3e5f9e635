//! Key groups: every field of the walkthrough, validation, change, delete; keys beneath them.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn a_group_keeps_every_field_of_the_walkthrough() {
    let app = TestApp::spawn().await;
    let token = app.dual_session().await;
    app.import_credential(&token, "aws-prod").await;
    let mut body = group_body("ig-demo", "aws-prod");
    body["active_key_id"] = json!("BBB61D9F-0FBA-4585-8C31-988CBC999849");
    body["key_type"] = json!("AES");
    body["key_length"] = json!(256);
    body["usage"] = json!("encrypt_decrypt");
    body["notes"] = json!("BYOK for the payments bucket");
    let (status, created) = app.create_group(&token, body.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");

    let (_, group) = app.get("/api/v1/groups/ig-demo", &token).await;
    assert_eq!(group, created);
    for (field, expected) in [
        ("service", json!("aws")),
        ("credential", json!("aws-prod")),
        ("key_type", json!("AES")),
        ("key_length", json!(256)),
        ("algorithm", json!("AES-256")),
        ("usage", json!("encrypt_decrypt")),
        ("storage", json!("Protected")),
        ("rotate", json!(true)),
        ("rotate_every", json!("30d")),
        ("valid_for", json!("1y")),
        ("owner", json!("security team")),
        ("notes", json!("BYOK for the payments bucket")),
        ("alias", json!("alias/ig-demo")),
        ("description", json!("payments data key")),
        ("region", json!("eu-west-1")),
        (
            "active_key_id",
            json!("bbb61d9f-0fba-4585-8c31-988cbc999849"),
        ),
        ("policy", body["policy"].clone()),
        ("disable_after_rotate", json!(true)),
        ("next_rotation_at", json!("2026-12-29T09:00:00.000000Z")),
    ] {
        assert_eq!(group[field], expected, "{field}");
    }
    let (_, list) = app.get("/api/v1/groups", &token).await;
    assert_eq!(list, json!([created]));
}

#[tokio::test]
async fn a_harmless_change_needs_one_officer_and_recomputes_the_next_rotation() {
    let app = TestApp::spawn().await;
    let token = app.dual_session().await;
    app.import_credential(&token, "aws-prod").await;
    app.create_group(&token, group_body("ig-demo", "aws-prod"))
        .await;
    app.clock.advance(chrono::Duration::days(2));
    let (_, body) = app.login(None, "Admin1", ADMIN1_PASSWORD).await;
    let single = body["token"].as_str().unwrap().to_owned();
    let (status, group) = app
        .patch(
            "/api/v1/groups/ig-demo",
            &single,
            json!({"rotate_every": "1d", "owner": "platform"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{group}");
    assert_eq!(group["rotate_every"], "1d");
    assert_eq!(group["next_rotation_at"], "2026-12-02T09:00:00.000000Z");
    assert_eq!(group["owner"], "platform");
    assert_eq!(group["notes"], "", "untouched fields stay");
    assert_eq!(group["alias"], "alias/ig-demo");

    let (_, group) = app
        .patch(
            "/api/v1/groups/ig-demo",
            &single,
            json!({"rotate_every": null, "description": "cards"}),
        )
        .await;
    assert_eq!(group["rotate"], false);
    assert_eq!(group["next_rotation_at"], Value::Null);

    // Custody fields need a second officer; the refusal names them.
    let (status, body) = app
        .patch(
            "/api/v1/groups/ig-demo",
            &single,
            json!({"policy": null, "disable_after_rotate": false, "owner": "x"}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "dual_control_required");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("policy, disable_after_rotate")
            && message.contains("ig-demo")
            && message.contains("needs dual control"),
        "{message}"
    );
    // Even a custody field sent back unchanged needs two: the check comes
    // before the group is read.
    let (status, body) = app
        .patch(
            "/api/v1/groups/ig-demo",
            &single,
            json!({"alias": "alias/ig-demo"}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (_, unchanged) = app.get("/api/v1/groups/ig-demo", &single).await;
    assert_eq!(
        unchanged["owner"], "platform",
        "nothing of a refused change is kept"
    );
    assert_eq!(unchanged["disable_after_rotate"], true);

    // The first session expired with the clock moved on: two log in afresh.
    let token = app.dual_session_again().await;
    let (status, group) = app
        .patch(
            "/api/v1/groups/ig-demo",
            &token,
            json!({"policy": null, "disable_after_rotate": false}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{group}");
    assert_eq!(group["policy"], Value::Null);
    assert_eq!(group["disable_after_rotate"], false);

    let (status, body) = app
        .patch("/api/v1/groups/ig-demo", &single, json!({}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let audit = app.audit_summaries(&single).await;
    assert!(
        audit.contains(&"Admin1 | Updated HSM protected key group ig-demo".to_owned()),
        "{audit:#?}"
    );
    assert!(
        audit.contains(&"Admin1,Admin2 | Updated HSM protected key group ig-demo".to_owned()),
        "{audit:#?}"
    );
    let entries = app.audit_export(&token).await;
    let dual = entries
        .iter()
        .rev()
        .find(|e| e["summary"] == "Updated HSM protected key group ig-demo")
        .unwrap();
    let details = &dual["details"];
    assert_eq!(details["dual_control"], true, "{dual:#}");
    assert_eq!(details["before"]["disable_after_rotate"], true);
    assert_eq!(details["after"]["disable_after_rotate"], false);
    assert_eq!(details["after"]["policy"], Value::Null);
    assert_eq!(
        details["before"]["policy"]["sha256"]
            .as_str()
            .unwrap()
            .len(),
        64
    );
}

#[tokio::test]
async fn invalid_groups_are_refused_field_by_field_and_nothing_is_created() {
    let app = TestApp::spawn().await;
    let token = app.dual_session().await;
    app.import_credential(&token, "aws-prod").await;
    let cases: Vec<(&str, Value, &str)> = vec![
        ("name", json!(""), "empty"),
        ("name", json!("x".repeat(65)), "longer than 64"),
        ("name", json!("bad name"), "not allowed"),
        ("name", json!("../etc/passwd"), "not allowed"),
        ("name", json!("tab\there"), "not allowed"),
        ("credential", json!("nope"), "keyhold credential import"),
        ("alias", json!("ig-demo"), "must start with 'alias/'"),
        ("alias", json!("alias/aws/s3"), "reserved"),
        ("region", json!("eu-west-9"), "not an AWS region"),
        ("active_key_id", json!("not-a-uuid"), "UUID"),
        ("policy", json!("{\"Statement\": ["), "not valid JSON"),
        (
            "policy",
            json!("{\"Version\": \"2012-10-17\"}"),
            "Statement",
        ),
        (
            "policy",
            json!(format!(
                "{{\"Statement\":[],\"x\":\"{}\"}}",
                "a".repeat(33_000)
            )),
            "at most",
        ),
        ("rotate_every", json!("0d"), "zero"),
        ("rotate_every", json!("abc"), "unit"),
        ("valid_for", json!("1.5y"), "number and a unit"),
        ("key_type", json!("RSA"), "asymmetric"),
        ("key_length", json!(128), "256-bit"),
        ("usage", json!("sign_verify"), "encrypt"),
        ("service", json!("gcp"), "aws"),
    ];
    for (field, value, expect) in &cases {
        let mut body = group_body("ig-demo", "aws-prod");
        body[*field] = value.clone();
        let (status, answer) = app.create_group(&token, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}={value}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(expect),
            "{field}: '{message}' should mention '{expect}'"
        );
    }
    let (_, list) = app.get("/api/v1/groups", &token).await;
    assert_eq!(list, json!([]), "no refused request created a group");

    // Conflicts: a duplicate name, and an alias another group moves in the same region.
    assert_eq!(
        app.create_group(&token, group_body("ig-demo", "aws-prod"))
            .await
            .0,
        StatusCode::CREATED
    );
    let (status, body) = app
        .create_group(&token, group_body("ig-demo", "aws-prod"))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let mut clash = group_body("other", "aws-prod");
    clash["alias"] = json!("alias/ig-demo");
    let (status, body) = app.create_group(&token, clash).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ig-demo")
    );
    let (_, list) = app.get("/api/v1/groups", &token).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn keys_are_listed_with_the_walkthrough_columns_and_deleted_only_under_dual_control() {
    let app = TestApp::spawn().await;
    let token = app.dual_session().await;
    app.import_credential(&token, "aws-prod").await;
    // Rotation off: the year the clock jumps below would make it due.
    let mut body = group_body("ig-demo", "aws-prod");
    body["rotate_every"] = Value::Null;
    app.create_group(&token, body).await;
    let (status, keys) = app.get("/api/v1/keys?group=ig-demo", &token).await;
    assert_eq!((status, keys), (StatusCode::OK, json!([])));
    let (status, _) = app.get("/api/v1/keys?group=missing", &token).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Keys arrive through rotation (AWS engine); here one is placed in the
    // store directly, as a rotation would leave it.
    let kms_key_id = "7907323e-ea39-4542-b198-ef4a4ca5793c";
    {
        let mut db = open_db(&app).await;
        let handle = db.bytes_literal(&[0]);
        let id = uuid::Uuid::new_v4();
        db.execute(&format!(
            "INSERT INTO keys (id, group_name, version, kms_key_id, check_digits, valid_from, valid_to, state, keystore_handle, created_at)
             VALUES ('{id}', 'ig-demo', 1, '{kms_key_id}', '57CF', '2026-11-29T09:00:00.000000Z', '2027-11-29T09:00:00.000000Z', 'disabled', {handle}, '2026-11-29T09:00:00.000000Z')",
        ))
        .await
        .unwrap();
    }
    let (_, keys) = app.get("/api/v1/keys", &token).await;
    let key = &keys[0];
    for (field, expected) in [
        ("name", json!(kms_key_id)),
        ("group", json!("ig-demo")),
        ("certificate", Value::Null),
        ("version", json!(1)),
        ("storage", json!("Protected")),
        ("key_type", json!("AES")),
        ("algorithm", json!("AES-256")),
        ("check_digits", json!("57CF")),
        ("valid_from", json!("2026-11-29T09:00:00.000000Z")),
        ("valid_to", json!("2027-11-29T09:00:00.000000Z")),
        ("state", json!("disabled")),
        ("expired", json!(false)),
        // Placed by hand with a handle that holds no material.
        ("material", json!("missing")),
    ] {
        assert_eq!(key[field], expected, "{field}");
    }
    app.clock.advance(chrono::Duration::days(366));
    let token = app.login(None, "Admin1", ADMIN1_PASSWORD).await.1["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let token = app.join(&token, "Admin2", ADMIN2_PASSWORD).await;
    let (status, key) = app.get(&format!("/api/v1/keys/{kms_key_id}"), &token).await;
    assert_eq!(status, StatusCode::OK, "{key}");
    assert_eq!(key["expired"], true);

    // A group with keys cannot be deleted: its keys go first, explicitly.
    let token = {
        let (_, b) = app.login(None, "Admin1", ADMIN1_PASSWORD).await;
        b["token"].as_str().unwrap().to_owned()
    };
    let (status, body) = app.delete("/api/v1/groups/ig-demo", &token).await;
    assert_eq!(body["error"]["code"], "dual_control_required", "{status}");
    let (status, body) = app
        .delete(&format!("/api/v1/keys/{kms_key_id}"), &token)
        .await;
    assert_eq!(body["error"]["code"], "dual_control_required", "{status}");
    let token = app.join(&token, "Admin2", ADMIN2_PASSWORD).await;
    let (status, body) = app.delete("/api/v1/groups/ig-demo", &token).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("1 key"));
    let (status, _) = app
        .delete(&format!("/api/v1/keys/{kms_key_id}"), &token)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app.delete("/api/v1/groups/ig-demo", &token).await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let audit = app.audit_summaries(&token).await;
    assert!(
        audit.contains(&format!(
            "Admin1,Admin2 | Deleted HSM protected key {kms_key_id}"
        )),
        "{audit:#?}"
    );
    assert!(
        audit.contains(&"Admin1,Admin2 | Deleted HSM protected key group ig-demo".to_owned()),
        "{audit:#?}"
    );
}

#[tokio::test]
async fn keys_are_listed_page_by_page_by_group_then_version() {
    let app = TestApp::spawn().await;
    let token = app.dual_session().await;
    app.import_credential(&token, "aws-prod").await;
    for name in ["alpha", "beta"] {
        let mut body = group_body(name, "aws-prod");
        body["rotate_every"] = Value::Null;
        body["alias"] = json!(format!("alias/{name}"));
        app.create_group(&token, body).await;
    }
    // Five keys as rotations would leave them: beta 1–3, alpha 1–2.
    {
        let mut db = open_db(&app).await;
        let handle = db.bytes_literal(&[0]);
        for (group, version) in [
            ("beta", 2),
            ("alpha", 2),
            ("beta", 1),
            ("beta", 3),
            ("alpha", 1),
        ] {
            let id = uuid::Uuid::new_v4();
            db.execute(&format!(
                "INSERT INTO keys (id, group_name, version, kms_key_id, check_digits, valid_from, valid_to, state, keystore_handle, created_at)
                 VALUES ('{id}', '{group}', {version}, NULL, '57CF', '2026-11-29T09:00:00.000000Z', NULL, 'disabled', {handle}, '2026-11-29T09:00:00.000000Z')",
            ))
            .await
            .unwrap();
        }
    }
    let listed = |page: &Value| -> Vec<String> {
        page.as_array()
            .unwrap()
            .iter()
            .map(|k| format!("{}:{}", k["group"].as_str().unwrap(), k["version"]))
            .collect()
    };

    // Two at a time, each page resuming after the last key of the one before.
    let mut walked = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let url = match &after {
            Some(a) => format!("/api/v1/keys?limit=2&after={a}"),
            None => "/api/v1/keys?limit=2".to_owned(),
        };
        let (status, page) = app.get(&url, &token).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let keys = listed(&page);
        assert!(keys.len() <= 2);
        walked.extend(keys.clone());
        after = keys.last().cloned();
        if keys.len() < 2 {
            break;
        }
    }
    assert_eq!(walked, ["alpha:1", "alpha:2", "beta:1", "beta:2", "beta:3"]);
    // Without a limit a page holds 100; within a group; from a cursor whose
    // key no longer exists.
    let (_, all) = app.get("/api/v1/keys", &token).await;
    assert_eq!(listed(&all), walked);
    let (_, page) = app
        .get("/api/v1/keys?group=beta&after=beta:1&limit=1", &token)
        .await;
    assert_eq!(listed(&page), ["beta:2"]);
    let (_, page) = app.get("/api/v1/keys?after=alpha:9", &token).await;
    assert_eq!(listed(&page), ["beta:1", "beta:2", "beta:3"]);

    // Pages out of bounds or cursors that are not one: 400, naming the field.
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=-1", "limit"),
        ("after=beta", "after"),
        ("after=beta:x", "after"),
        ("after=:1", "after"),
        ("after=be%20ta:1", "after"),
    ] {
        let (status, body) = app.get(&format!("/api/v1/keys?{query}"), &token).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        let named = body["error"]["field"].as_str().unwrap_or_default();
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(named == field || message.contains(field), "{query}: {body}");
    }
}
