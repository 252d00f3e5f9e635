//! Logging in, first-use password change, dual control, lockout and timeouts.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn default_administrators_must_change_their_one_time_password_first() {
    let app = TestApp::spawn().await;
    assert_eq!(app.initial_passwords.len(), 2);
    let one_time = app.initial_passwords["Admin1"].clone();
    let (status, body) = app.login(None, "Admin1", &one_time).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], "password_change_required");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("keyhold passwd")
    );

    // A weak new password is refused and the one-time password still works.
    let (status, body) = app
        .post(
            "/api/v1/password",
            None,
            json!({"user": "Admin1", "current_password": one_time, "new_password": "short"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "password");

    app.activate_admins().await;
    let (status, body) = app.login(None, "Admin1", ADMIN1_PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = app.login(None, "Admin1", &one_time).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the one-time password must stop working"
    );
}

#[tokio::test]
async fn a_second_identity_joins_the_session_and_both_are_recorded() {
    let app = TestApp::spawn().await;
    let token = app.single_session().await;
    // Alone, Admin1 may not add a cloud credential (where key material goes)…
    let (status, body) = app
        .post(
            "/api/v1/credentials",
            Some(&token),
            json!({"name": "aws-prod", "csv": console_csv()}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "dual_control_required");

    // …nor a key group.
    let (status, body) = app
        .create_group(&token, group_body("ig-demo", "aws-prod"))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "dual_control_required");
    let (_, groups) = app.get("/api/v1/groups", &token).await;
    assert_eq!(groups, json!([]), "a refused action changes nothing");

    // Admin2 joins the same session, which gets a new token: whoever held
    // (or planted) the old one does not gain Admin2's rights with it.
    let before = token;
    let (status, body) = app.login(Some(&before), "Admin2", ADMIN2_PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["users"], "Admin1,Admin2");
    let token = body["token"].as_str().unwrap().to_owned();
    assert_ne!(token, before, "joining replaces the token");
    let (status, _) = app.get("/api/v1/session", &before).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the old token is dead");

    // The same identity cannot count twice.
    let (status, _) = app.login(Some(&token), "Admin2", ADMIN2_PASSWORD).await;
    assert_eq!(status, StatusCode::CONFLICT);

    app.import_credential(&token, "aws-prod").await;
    let (status, body) = app
        .create_group(&token, group_body("ig-demo", "aws-prod"))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let audit = app.audit_summaries(&token).await;
    assert!(
        audit.contains(&"Admin1 | Logged in 'Admin1' using Password.".to_owned()),
        "{audit:#?}"
    );
    assert!(
        audit.contains(&"Admin1,Admin2 | Logged in 'Admin2' using Password.".to_owned()),
        "{audit:#?}"
    );
    assert!(
        audit.contains(&"Admin1,Admin2 | Added HSM protected key group ig-demo".to_owned()),
        "{audit:#?}"
    );
    assert!(
        audit
            .iter()
            .any(|a| a.starts_with("Admin1 | Failed to add HSM protected key group ig-demo")),
        "{audit:#?}"
    );
}

#[tokio::test]
async fn repeated_failures_lock_the_identity_without_revealing_it() {
    let app = TestApp::spawn().await;
    app.activate_admins().await;
    let (_, unknown) = app.login(None, "Nobody", "whatever-password").await;
    for _ in 0..5 {
        let (status, wrong) = app.login(None, "Admin1", "not-the-password").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            wrong, unknown,
            "a wrong password and an unknown name must look the same"
        );
    }
    // Locked: even the right password is refused, with the same answer.
    let (status, locked) = app.login(None, "Admin1", ADMIN1_PASSWORD).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(locked, unknown);

    // Admin2 can still log in and sees the failures in the audit log.
    let (_, body) = app.login(None, "Admin2", ADMIN2_PASSWORD).await;
    let token = body["token"].as_str().unwrap().to_owned();
    let audit = app.audit_summaries(&token).await;
    let failures = audit
        .iter()
        .filter(|a| a.contains("Failed login for 'Admin1'"))
        .count();
    assert_eq!(failures, 6, "{audit:#?}");
    let (_, entries) = app.get("/api/v1/audit?text=locked%20for", &token).await;
    assert_eq!(
        entries.as_array().unwrap().len(),
        1,
        "the locking failure says so in its details"
    );

    // The lock lifts after the lockout period (15 minutes by default).
    app.clock.advance(chrono::Duration::minutes(16));
    let (status, _) = app.login(None, "Admin1", ADMIN1_PASSWORD).await;
    assert_eq!(status, StatusCode::OK);

    crate::report::section(
        21,
        "No way in: lockout",
        "Five wrong passwords locked Admin1: the sixth attempt, with the right password, was \
         refused with exactly the answer an unknown name gets (no hint that the name exists or \
         is locked); all six failures are in the audit log, the locking one saying so; the \
         lock lifted after the configured 15 minutes (test clock), and not before.",
    );
}

#[tokio::test]
async fn idle_sessions_expire_and_logged_out_tokens_stop_working() {
    let app = TestApp::spawn().await;
    let token = app.single_session().await;
    let (status, _) = app.get("/api/v1/session", &token).await;
    assert_eq!(status, StatusCode::OK);

    app.clock.advance(chrono::Duration::minutes(16));
    let (status, body) = app.get("/api/v1/groups", &token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("log in again")
    );

    let (_, body) = app.login(None, "Admin1", ADMIN1_PASSWORD).await;
    let token = body["token"].as_str().unwrap().to_owned();
    let (status, _) = app
        .post("/api/v1/session/logout", Some(&token), json!({}))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app.get("/api/v1/groups", &token).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a token replayed after logout is refused"
    );

    let (_, body) = app.login(None, "Admin2", ADMIN2_PASSWORD).await;
    let other = body["token"].as_str().unwrap().to_owned();
    let audit = app.audit_summaries(&other).await;
    assert!(
        audit
            .iter()
            .any(|a| a.contains("Refused GET /api/v1/groups with an invalid or expired session")),
        "{audit:#?}"
    );
}

#[tokio::test]
async fn roles_limit_what_an_identity_may_do() {
    let app = TestApp::spawn().await;
    let admins = app.dual_session().await;
    let (status, created) = app
        .post(
            "/api/v1/identities",
            Some(&admins),
            json!({"name": "auditor1", "role": "auditor"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let one_time = created["password"].as_str().unwrap();
    let (status, _) = app
        .post("/api/v1/password", None, json!({"user": "auditor1", "current_password": one_time, "new_password": "auditor-password-1"}))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, body) = app.login(None, "auditor1", "auditor-password-1").await;
    let auditor = body["token"].as_str().unwrap().to_owned();

    let (status, _) = app.get("/api/v1/groups", &auditor).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app.get("/api/v1/audit/verify", &auditor).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = app
        .post(
            "/api/v1/credentials",
            Some(&auditor),
            json!({"name": "c", "csv": console_csv()}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    let (_, creds) = app.get("/api/v1/credentials", &auditor).await;
    assert_eq!(creds, json!([]));

    // An administrator with an auditor is still not two identities that may add a group.
    let auditor = app.join(&auditor, "Admin1", ADMIN1_PASSWORD).await;
    let (status, body) = app.create_group(&auditor, group_body("g1", "c")).await;
    assert_eq!(
        body["error"]["code"], "dual_control_required",
        "{status} {body}"
    );

    // Identity management itself needs two administrators.
    let (status, body) = app.delete("/api/v1/identities/auditor1", &auditor).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "dual_control_required");
    let (status, body) = app.delete("/api/v1/identities/auditor1", &admins).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, _) = app.get("/api/v1/groups", &auditor).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a deleted identity's sessions end"
    );
    let (status, body) = app.delete("/api/v1/identities/Admin2", &admins).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
}

#[tokio::test]
async fn configuration_changes_need_two_administrators_and_take_effect() {
    let app = TestApp::spawn().await;
    let single = app.single_session().await;
    let (status, body) = app
        .patch("/api/v1/config", &single, json!({"lockout_threshold": 3}))
        .await;
    assert_eq!(body["error"]["code"], "dual_control_required", "{status}");
    let (_, body) = app.login(Some(&single), "Admin2", ADMIN2_PASSWORD).await;
    assert_eq!(body["users"], "Admin1,Admin2");
    let single = body["token"].as_str().unwrap().to_owned();
    let (status, body) = app
        .patch("/api/v1/config", &single, json!({"lockout_threshold": 3}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["lockout_threshold"], 3);
    let (status, body) = app
        .patch("/api/v1/config", &single, json!({"lockout_threshold": 0}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = app
        .patch("/api/v1/config", &single, json!({"lockout_thresold": 3}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("lockout_thresold")
    );

    for _ in 0..3 {
        app.login(None, "Admin2", "wrong-password!").await;
    }
    let (status, _) = app.login(None, "Admin2", ADMIN2_PASSWORD).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "locked after three failures now"
    );
}

#[tokio::test]
async fn nothing_acknowledged_is_lost_across_a_restart() {
    let app = TestApp::spawn().await;
    let token = app.dual_session().await;
    app.import_credential(&token, "aws-prod").await;
    let (status, _) = app
        .create_group(&token, group_body("ig-demo", "aws-prod"))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, before) = app.get("/api/v1/groups/ig-demo", &token).await;
    let audit_before = app.audit_count(&token).await;

    let app = app.restart().await;
    assert!(
        app.initial_passwords.is_empty(),
        "an initialised directory is not initialised again"
    );
    let (status, after) = app.get("/api/v1/groups/ig-demo", &token).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "sessions survive a restart: {after}"
    );
    assert_eq!(before, after);
    assert!(app.audit_count(&token).await >= audit_before);
    let (_, verify) = app.get("/api/v1/audit/verify", &token).await;
    assert_eq!(verify["ok"], true, "{verify}");
}
