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

    // The same identity cannot count twice, and the refusal is audited
    // like every refusal of a logged-in caller, with its reason.
    let (status, body) = app.login(Some(&token), "Admin2", ADMIN2_PASSWORD).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already logged in to this session"),
        "{body}"
    );
    let (status, entries) = app
        .get("/api/v1/audit?text=Failed%20login%20for%20'Admin2'", &token)
        .await;
    assert_eq!(status, StatusCode::OK, "{entries}");
    let entries = entries.as_array().unwrap();
    assert_eq!(entries.len(), 1, "{entries:#?}");
    assert_eq!(entries[0]["users"], "Admin1,Admin2");
    assert_eq!(
        entries[0]["summary"],
        "Failed login for 'Admin2' using Password."
    );
    assert!(
        entries[0]["details"]["reason"]
            .as_str()
            .unwrap()
            .contains("'Admin2' is already logged in to this session"),
        "{entries:#?}"
    );
    // The session is as it was, its token still good.
    let (status, session) = app.get("/api/v1/session", &token).await;
    assert_eq!(status, StatusCode::OK, "{session}");
    assert_eq!(session["users"], "Admin1,Admin2");

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

/// A client whose connections come from `source` (Linux routes all of
/// 127.0.0.0/8 to loopback, so 127.0.0.2 is a second client address).
fn client_from(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(source.parse::<std::net::IpAddr>().unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn post_from(
    http: &reqwest::Client,
    app: &TestApp,
    path: &str,
    body: serde_json::Value,
) -> reqwest::Response {
    http.post(format!("{}{path}", app.base))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Whether `name` is unlocked with at most `failures` failures counted, as
/// the database holds it.
async fn unlocked_with_at_most(app: &TestApp, name: &str, failures: u32) -> bool {
    let mut db = open_db(app).await;
    db.execute(&format!(
        "UPDATE identities SET name = name WHERE name = '{name}' \
         AND locked_until IS NULL AND failed_logins <= {failures}"
    ))
    .await
    .unwrap()
        == 1
}

/// With the throttle as shipped (3 failures per address in 15 minutes, below
/// the lockout threshold of 5), an attacker at one address who guesses at
/// both administrators, through the API, the password change and the web
/// UI, is refused with 429 before any identity is locked; the officers log
/// in from their own address all the while.
#[tokio::test]
async fn an_attacker_at_one_address_cannot_lock_the_administrators_out() {
    let app = TestApp::spawn_with(|a| a.login.login_throttle_failures = None).await;
    app.activate_admins().await;
    let attacker = client_from("127.0.0.2");
    let mut statuses = Vec::new();
    for user in ["Admin1", "Admin2", "Admin1", "Admin2"] {
        for _ in 0..3 {
            let resp = post_from(
                &attacker,
                &app,
                "/api/v1/session/login",
                json!({"user": user, "password": "not-the-password"}),
            )
            .await;
            let status = resp.status();
            if status == StatusCode::TOO_MANY_REQUESTS {
                let retry: u64 = resp.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!((1..=15 * 60).contains(&retry), "{retry}");
                let body: serde_json::Value = resp.json().await.unwrap();
                assert_eq!(body["error"]["code"], "login_throttled", "{body}");
                let message = body["error"]["message"].as_str().unwrap();
                assert!(message.contains(&format!("wait {retry} s")), "{message}");
            }
            statuses.push(status);
        }
    }
    let checked = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    let throttled = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((checked, throttled), (3, 9), "{statuses:?}");
    // The password change checks a password too, and so does the web UI.
    let resp = post_from(
        &attacker,
        &app,
        "/api/v1/password",
        json!({"user": "Admin1", "current_password": "not-the-password", "new_password": "tulip marble quietly orbit"}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let resp = ui_login_from(&attacker, &app, "Admin2", "not-the-password").await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().contains_key("retry-after"));
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("too many failed logins")
    );
    // Even the right password is refused at that address: nothing is checked.
    let resp = post_from(
        &attacker,
        &app,
        "/api/v1/session/login",
        json!({"user": "Admin1", "password": ADMIN1_PASSWORD}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);

    // No identity is locked: the officers log in from 127.0.0.1, in the
    // API and in the web UI, and can act under dual control.
    // Admin1 took the three checked guesses: below the threshold of 5.
    assert!(unlocked_with_at_most(&app, "Admin1", 3).await);
    assert!(unlocked_with_at_most(&app, "Admin2", 0).await);
    let admins = app.dual_session_again().await;
    let (status, identities) = app.get("/api/v1/identities", &admins).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        identities
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["locked"] == false),
        "{identities}"
    );
    let resp = ui_login_from(&client_from("127.0.0.1"), &app, "Admin1", ADMIN1_PASSWORD).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);

    // One audit entry for the throttled address, however many refusals.
    let audit = app.audit_summaries(&admins).await;
    let entries = audit
        .iter()
        .filter(|a| a.contains("Throttled logins from 127.0.0.2."))
        .count();
    assert_eq!(entries, 1, "{audit:#?}");

    // The window passes (test clock): the address may try again.
    app.clock.advance(chrono::Duration::minutes(16));
    let resp = post_from(
        &attacker,
        &app,
        "/api/v1/session/login",
        json!({"user": "Admin1", "password": "not-the-password"}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    crate::report::section(
        21,
        "No way in: login throttling per client address",
        &format!(
            "With the defaults (3 failures per client address within 15 minutes, below the \
             lockout threshold of 5), an attacker at 127.0.0.2 guessed at both administrators: \
             {checked} guesses were checked (401), the other {throttled} were refused with 429 \
             and Retry-After before any password was checked, as were the attacker's password \
             change, web UI login and even the right password. Neither administrator was \
             locked; both logged in from 127.0.0.1 meanwhile (API and web UI). The refusals left \
             one audit entry for the address. After the window the address could try again."
        ),
    );
}

/// Parallel wrong logins from one address: no more than the throttle's
/// number reach a password check, so the identity's count stays below its
/// lockout threshold.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_from_one_address_gets_no_more_than_the_throttle_through() {
    const BURST: usize = 16;
    let app = TestApp::spawn_with(|a| a.login.login_throttle_failures = None).await;
    app.activate_admins().await;
    let attacker = client_from("127.0.0.2");
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(BURST));
    let mut tasks = Vec::new();
    for _ in 0..BURST {
        let request = attacker
            .post(format!("{}/api/v1/session/login", app.base))
            .json(&json!({"user": "Admin1", "password": "not-the-password"}));
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            request.send().await.unwrap().status()
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    let checked = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    let throttled = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(checked + throttled, BURST, "{statuses:?}");
    assert!(checked <= 3, "{checked} attempts reached a password check");
    assert!(unlocked_with_at_most(&app, "Admin1", 3).await);
    let (status, _) = app.login(None, "Admin1", ADMIN1_PASSWORD).await;
    assert_eq!(status, StatusCode::OK);
    let (_, body) = app.login(None, "Admin2", ADMIN2_PASSWORD).await;
    let token = body["token"].as_str().unwrap().to_owned();
    let audit = app.audit_summaries(&token).await;
    let failed = audit
        .iter()
        .filter(|a| a.contains("Failed login for 'Admin1'"))
        .count();
    assert_eq!(failed, checked, "{audit:#?}");
    assert_eq!(
        audit
            .iter()
            .filter(|a| a.contains("Throttled logins from 127.0.0.2."))
            .count(),
        1,
        "{audit:#?}"
    );

    crate::report::section(
        23,
        "Racing requests: login throttle",
        &format!(
            "{BURST} wrong passwords at once from one address: {checked} reached a password \
             check (the throttle admits attempts before they are checked and counts those still \
             running), {throttled} were refused with 429; Admin1 stayed unlocked with at most 3 \
             failures counted, and one audit entry recorded the throttled address."
        ),
    );
}

/// Behind a reverse proxy named in `login_trusted_proxies`, the throttle
/// counts the client the proxy names, not the proxy: an attacker behind it is
/// throttled, another client behind the same proxy is not; a client that is
/// no proxy cannot pick its own address with the header.
#[tokio::test]
async fn behind_a_trusted_proxy_the_throttle_counts_each_client_and_no_one_else_is_believed() {
    let app = TestApp::spawn_with(|a| {
        a.login.login_throttle_failures = None;
        a.login.login_trusted_proxies = Some(vec!["127.0.0.3".into()]);
    })
    .await;
    app.activate_admins().await;
    let proxy = client_from("127.0.0.3");
    let login_via = |http: &reqwest::Client, forwarded_for: &str, password: &str| {
        http.post(format!("{}/api/v1/session/login", app.base))
            .header("x-forwarded-for", forwarded_for)
            .json(&json!({"user": "Admin1", "password": password}))
            .send()
    };

    // The attacker behind the proxy: three guesses, then 429 even with the
    // right password. What it wrote left of the proxy's entry is ignored.
    let mut statuses = Vec::new();
    for n in 0..4 {
        let forwarded = format!("10.{n}.0.1, 203.0.113.9");
        statuses.push(
            login_via(&proxy, &forwarded, "not-the-password")
                .await
                .unwrap()
                .status(),
        );
    }
    assert_eq!(
        statuses,
        [
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    let right = login_via(&proxy, "203.0.113.9", ADMIN1_PASSWORD)
        .await
        .unwrap();
    assert_eq!(right.status(), StatusCode::TOO_MANY_REQUESTS);

    // Another client behind the same proxy logs in.
    let other = login_via(&proxy, "198.51.100.7", ADMIN1_PASSWORD)
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::OK);

    // A client that is not the proxy: its header is its own words, ignored.
    let direct = client_from("127.0.0.2");
    let mut statuses = Vec::new();
    for n in 0..4 {
        let spoofed = format!("198.51.100.{}", 10 + n);
        statuses.push(
            login_via(&direct, &spoofed, "not-the-password")
                .await
                .unwrap()
                .status(),
        );
    }
    assert_eq!(statuses[3], StatusCode::TOO_MANY_REQUESTS, "{statuses:?}");

    let (_, body) = app.login(None, "Admin2", ADMIN2_PASSWORD).await;
    let token = body["token"].as_str().unwrap().to_owned();
    let audit = app.audit_summaries(&token).await;
    for throttled in ["203.0.113.9", "127.0.0.2"] {
        let line = format!("Throttled logins from {throttled}.");
        assert_eq!(
            audit.iter().filter(|a| a.ends_with(&line)).count(),
            1,
            "{audit:#?}"
        );
    }
    assert!(
        !audit
            .iter()
            .any(|a| a.contains("from 198.51.100") || a.contains("from 127.0.0.3")),
        "neither spoofed addresses nor the proxy were throttled: {audit:#?}"
    );
}

/// A new password must differ from the identity's last five.
#[tokio::test]
async fn recent_passwords_cannot_be_used_again() {
    let app = TestApp::spawn().await;
    app.activate_admins().await;
    let passwords: Vec<String> = (1..=5)
        .map(|n| format!("tulip marble quietly orbit {n}"))
        .collect();
    let mut current = ADMIN1_PASSWORD.to_owned();
    for next in &passwords[..4] {
        let (status, body) = app
            .post(
                "/api/v1/password",
                None,
                json!({"user": "Admin1", "current_password": current, "new_password": next}),
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
        current = next.clone();
    }
    // Current: the fourth; the one-time password has left the last five.
    for earlier in [
        ADMIN1_PASSWORD,
        passwords[0].as_str(),
        passwords[2].as_str(),
    ] {
        let (status, body) = app
            .post(
                "/api/v1/password",
                None,
                json!({"user": "Admin1", "current_password": current, "new_password": earlier}),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"]["field"], "password");
        assert_eq!(
            body["error"]["message"],
            "the new password was used recently: choose one you have not used for your last 5 passwords"
        );
    }
    let (status, body) = app
        .post(
            "/api/v1/password",
            None,
            json!({"user": "Admin1", "current_password": current, "new_password": passwords[4]}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    // Now the one-time password is the sixth-latest: accepted again.
    let (status, body) = app
        .post(
            "/api/v1/password",
            None,
            json!({"user": "Admin1", "current_password": passwords[4], "new_password": ADMIN1_PASSWORD}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    // Only hashes are kept, at most four per identity.
    let mut db = open_db(&app).await;
    let mut rows = async |condition: &str| {
        db.execute(&format!(
            "UPDATE password_history SET seq = seq WHERE identity = 'Admin1' {condition}"
        ))
        .await
        .unwrap()
    };
    assert_eq!(rows("").await, 4);
    assert_eq!(rows("AND password_hash LIKE '$argon2id$%'").await, 4);
    assert_eq!(rows("AND password_hash LIKE '%tulip%'").await, 0);
    let (_, body) = app.login(None, "Admin2", ADMIN2_PASSWORD).await;
    let token = body["token"].as_str().unwrap().to_owned();
    let audit = app.audit_summaries(&token).await;
    assert_eq!(
        audit
            .iter()
            .filter(|a| a.contains("Failed password change for 'Admin1'"))
            .count(),
        3,
        "{audit:#?}"
    );

    crate::report::section(
        21,
        "No way in: password re-use",
        "After four changes, Admin1's one-time password and two of the four set since were \
         refused as new passwords (400, saying they were used recently and how many must \
         differ), each refusal audited; a fifth new one was accepted, after which the one-time \
         password, now the sixth-latest, was accepted again. The database kept four Argon2id \
         hashes for Admin1 (with the current one, the last five passwords), never a password.",
    );
}
