//! Quorum approvals: an operation a policy holds to M approvals is stored as
//! a request, approved by others from their own sessions, and run once,
//! as the requester and the approvers, read back from KMS, the job list,
//! the audit log and the database. One officer alone, a crowd of approvers
//! at once, and a crash between the last approval and the run.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;
use crate::kms::Kms;

const ADMINS: [(&str, &str); 3] = [
    ("Admin3", "admin3-password-x"),
    ("Admin4", "admin4-password-x"),
    ("Admin5", "admin5-password-x"),
];
const OFFICER: (&str, &str) = ("officer1", "officer-password-1");

/// A server with Admin1..Admin5 and a key officer, a KMS credential and a
/// rotated group; returns the app, the Admin1+Admin2 session and the group.
async fn scene(prefix: &str) -> (TestApp, String, String) {
    let app = TestApp::spawn().await;
    let admins = app.dual_session().await;
    for (name, password) in ADMINS {
        app.add_identity(&admins, name, "administrator", password)
            .await;
    }
    app.add_identity(&admins, OFFICER.0, "key_officer", OFFICER.1)
        .await;
    app.import_kms_credential(&admins, "aws").await;
    let group = unique(prefix);
    let (status, body) = app.create_group(&admins, group_body(&group, "aws")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    app.rotate_ok(&admins, &group).await;
    (app, admins, group)
}

async fn admin1(app: &TestApp) -> String {
    alone(app, ("Admin1", crate::helpers::ADMIN1_PASSWORD)).await
}

async fn admin2(app: &TestApp) -> String {
    alone(app, ("Admin2", crate::helpers::ADMIN2_PASSWORD)).await
}

async fn set_policies(app: &TestApp, token: &str, quorums: Value) -> (StatusCode, Value) {
    app.request(
        Method::PUT,
        "/api/v1/approval-policies",
        Some(token),
        Some(json!({ "quorums": quorums })),
    )
    .await
}

fn quorum(approvals: u8) -> Value {
    json!({"approvals": approvals, "role": "administrator", "expires_after_hours": 24})
}

/// Force Rotate of `group` asked for by `token`'s session, which a policy
/// holds to a quorum: the request it made.
async fn ask_rotation(app: &TestApp, token: &str, group: &str) -> Value {
    let (status, request) = app
        .post(
            &format!("/api/v1/groups/{group}/rotate"),
            Some(token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{request}");
    request
}

async fn approve(app: &TestApp, token: &str, id: &str) -> (StatusCode, Value) {
    app.post(
        &format!("/api/v1/approvals/{id}/approve"),
        Some(token),
        json!({}),
    )
    .await
}

async fn rotations_of(app: &TestApp, token: &str, group: &str) -> Vec<Value> {
    let (status, jobs) = app.get("/api/v1/jobs?limit=1000", token).await;
    assert_eq!(status, StatusCode::OK, "{jobs}");
    jobs.as_array()
        .unwrap()
        .iter()
        .filter(|j| j["kind"] == "rotate" && j["target"] == group)
        .cloned()
        .collect()
}

#[tokio::test]
async fn a_quorum_runs_force_rotate_once_its_approvers_agree_from_their_own_sessions() {
    let (app, admins, group) = scene("quorum").await;
    let kms = Kms::connect().await;
    let (status, body) = set_policies(&app, &admins, json!({ "rotate_group": quorum(2) })).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Admin1 alone asks: nothing runs, a request waits.
    let a1 = admin1(&app).await;
    let request = ask_rotation(&app, &a1, &group).await;
    assert_eq!(request["class"], "rotate_group");
    assert_eq!(request["status"], "pending");
    assert_eq!(request["approvals_remaining"], 2);
    assert_eq!(request["requested_by"], json!(["Admin1"]));
    assert_eq!(
        request["operation"],
        json!({"kind": "rotate_group", "group": group})
    );
    assert_eq!(request["params_hash"].as_str().unwrap().len(), 64);
    let id = request["id"].as_str().unwrap().to_owned();
    assert_eq!(rotations_of(&app, &admins, &group).await.len(), 1);
    assert_eq!(kms.keys_of_group(&group).await.len(), 1);

    // Even two identities in one session only ask.
    let (status, second) = app
        .post(
            &format!("/api/v1/groups/{group}/rotate"),
            Some(&admins),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{second}");
    assert_eq!(second["requested_by"], json!(["Admin1", "Admin2"]));

    // The requester cannot approve; a key officer holds the wrong role;
    // a session of two cannot answer for one person.
    let (status, body) = approve(&app, &a1, &id).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("your own"),
        "{body}"
    );
    let officer = alone(&app, OFFICER).await;
    let (status, body) = approve(&app, &officer, &id).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = approve(&app, &admins, &id).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    // Admin2 approves from its own session, once.
    let a2 = admin2(&app).await;
    let (status, shown) = app.get(&format!("/api/v1/approvals/{id}"), &a2).await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(shown["you_may_answer"], true);
    let (status, after) = approve(&app, &a2, &id).await;
    assert_eq!(status, StatusCode::OK, "{after}");
    assert_eq!(after["status"], "pending");
    assert_eq!(after["approvals_remaining"], 1);
    let (status, body) = approve(&app, &a2, &id).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(rotations_of(&app, &admins, &group).await.len(), 1);

    // The second approval runs it, as all three.
    let a3 = alone(&app, ADMINS[0]).await;
    let (status, done) = approve(&app, &a3, &id).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["status"], "executed", "{done}");
    let rotations = rotations_of(&app, &admins, &group).await;
    assert_eq!(rotations.len(), 2, "{rotations:#?}");
    let job = rotations
        .iter()
        .find(|j| j["users"] == "Admin1,Admin2,Admin3")
        .expect("the rotation names the requester and both approvers");
    let job = app.wait_job(&admins, job["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    assert_eq!(kms.keys_of_group(&group).await.len(), 2);

    // A late answer changes nothing.
    let a4 = alone(&app, ADMINS[1]).await;
    let (status, body) = approve(&app, &a4, &id).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(kms.keys_of_group(&group).await.len(), 2);

    let audit = app.audit_summaries(&admins).await;
    let started =
        format!("Admin1,Admin2,Admin3 | Started rotating keys for HSM protected key group {group}");
    for expected in [
        format!("Admin1 | Requested approval {id}: Force Rotate key group '{group}'"),
        format!("Admin2 | Approved request {id}"),
        format!("Admin3 | Approved request {id}"),
        started.clone(),
    ] {
        assert!(
            audit.iter().any(|line| line.starts_with(&expected)),
            "no `{expected}` in {audit:#?}"
        );
    }
    assert_eq!(audit.iter().filter(|l| **l == started).count(), 1);
}

#[tokio::test]
async fn a_denial_ends_a_request_and_nothing_runs() {
    let (app, admins, group) = scene("denied").await;
    let (status, body) = set_policies(&app, &admins, json!({ "delete_group": quorum(2) })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // A missing group is refused at once, not made a request.
    let a1 = admin1(&app).await;
    let (status, body) = app.delete("/api/v1/groups/no-such-group", &a1).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    let (status, request) = app.delete(&format!("/api/v1/groups/{group}"), &a1).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{request}");
    let id = request["id"].as_str().unwrap().to_owned();
    let a2 = admin2(&app).await;
    let (status, denied) = app
        .post(
            &format!("/api/v1/approvals/{id}/deny"),
            Some(&a2),
            json!({"reason": "not during the freeze"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{denied}");
    assert_eq!(denied["status"], "denied");
    assert_eq!(denied["votes"][0]["reason"], "not during the freeze");
    for who in [ADMINS[0], ADMINS[1]] {
        let token = alone(&app, who).await;
        let (status, body) = approve(&app, &token, &id).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
    }
    let (status, body) = app.get(&format!("/api/v1/groups/{group}"), &admins).await;
    assert_eq!(status, StatusCode::OK, "the group is still there: {body}");
    let (status, list) = app.get("/api/v1/approvals?status=denied", &admins).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (status, body) = app.get("/api/v1/approvals?status=maybe", &admins).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = app.get("/api/v1/approvals/not-a-uuid", &admins).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sixteen_approvals_at_once_run_the_operation_once() {
    let (app, admins, group) = scene("crowd").await;
    let kms = Kms::connect().await;
    // Sixteen administrators besides the requester.
    let crowd: Vec<(String, String)> = (0..16)
        .map(|i| {
            (
                format!("approver{i:02}"),
                format!("approver-password-{i:02}"),
            )
        })
        .collect();
    for (name, password) in &crowd {
        app.add_identity(&admins, name, "administrator", password)
            .await;
    }
    let (status, body) = set_policies(&app, &admins, json!({ "rotate_group": quorum(3) })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let a1 = admin1(&app).await;
    let request = ask_rotation(&app, &a1, &group).await;
    let id = request["id"].as_str().unwrap().to_owned();

    let mut tokens: Vec<String> = Vec::new();
    for (name, password) in &crowd {
        tokens.push(alone(&app, (name, password)).await);
    }
    let path = format!("/api/v1/approvals/{id}/approve");
    let answers = crate::concurrency::burst(
        &app,
        tokens
            .into_iter()
            .map(|t| (Method::POST, path.clone(), Some(t), Some(json!({}))))
            .collect(),
    )
    .await;
    let accepted = answers.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    let refused = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::CONFLICT)
        .count();
    assert_eq!((accepted, refused), (3, 13), "{answers:#?}");

    let (_, shown) = app.get(&format!("/api/v1/approvals/{id}"), &admins).await;
    assert_eq!(shown["status"], "executed", "{shown:#}");
    assert_eq!(shown["votes"].as_array().unwrap().len(), 3);
    let rotations = rotations_of(&app, &admins, &group).await;
    assert_eq!(
        rotations.len(),
        2,
        "one rotation from the request: {rotations:#?}"
    );
    let job = rotations
        .iter()
        .find(|j| j["users"] != "Admin1,Admin2")
        .unwrap();
    let job = app.wait_job(&admins, job["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    assert_eq!(kms.keys_of_group(&group).await.len(), 2);
}

#[tokio::test]
async fn changing_the_policies_needs_the_strictest_policy_and_shows_the_difference() {
    let (app, admins, _) = scene("policy").await;
    let (status, body) = set_policies(&app, &admins, json!({ "delete_group": quorum(2) })).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Now even the two administrators together only ask.
    let (status, request) = set_policies(
        &app,
        &admins,
        json!({ "delete_group": quorum(1), "delete_key": quorum(1) }),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{request}");
    assert_eq!(request["class"], "change_approval_policies");
    let changes = request["policy_changes"].as_array().unwrap();
    let classes: Vec<&str> = changes
        .iter()
        .map(|c| c["class"].as_str().unwrap())
        .collect();
    assert_eq!(
        classes,
        ["delete_group", "delete_key", "change_approval_policies"],
        "{request:#}"
    );
    assert!(
        changes[0]["before"]
            .as_str()
            .unwrap()
            .starts_with("2 approvals")
    );
    assert!(
        changes[0]["after"]
            .as_str()
            .unwrap()
            .starts_with("1 approval ")
    );
    let id = request["id"].as_str().unwrap().to_owned();
    let delete_key = app.approval_policy(&admins, "delete_key").await;
    assert_eq!(delete_key["policy"], "dual_control", "not changed yet");

    for who in [ADMINS[0], ADMINS[1]] {
        let token = alone(&app, who).await;
        let (status, body) = approve(&app, &token, &id).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    for class in ["delete_key", "delete_group"] {
        assert_eq!(app.approval_policy(&admins, class).await["approvals"], 1);
    }

    // Bad policies are refused with the reason, and change nothing.
    for bad in [
        json!({ "delete_group": {"approvals": 0, "role": "administrator", "expires_after_hours": 24} }),
        json!({ "delete_group": {"approvals": 2, "role": "auditor", "expires_after_hours": 24} }),
        json!({ "drop_tables": quorum(1) }),
        json!({ "change_approval_policies": quorum(1) }),
        json!({ "delete_group": quorum(16) }),
    ] {
        let (status, body) = set_policies(&app, &admins, bad.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
}

#[tokio::test]
async fn an_identity_added_by_quorum_gives_its_password_to_the_requester_alone() {
    let (app, admins, _) = scene("identity").await;
    let (status, body) =
        set_policies(&app, &admins, json!({ "manage_identities": quorum(1) })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let a1 = admin1(&app).await;
    let (status, request) = app
        .post(
            "/api/v1/identities",
            Some(&a1),
            json!({"name": "newcomer", "role": "key_officer"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{request}");
    let id = request["id"].as_str().unwrap().to_owned();
    let a2 = admin2(&app).await;
    let (status, done) = approve(&app, &a2, &id).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["status"], "executed", "{done}");
    assert_eq!(done["result_waiting"], true);
    assert!(!done.to_string().contains("password\":\""), "{done}");

    // Only the requester collects it, once.
    let path = format!("/api/v1/approvals/{id}/result");
    let (status, body) = app.post(&path, Some(&a2), json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, result) = app.post(&path, Some(&a1), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{result:?}");
    let password = result["password"].as_str().unwrap().to_owned();
    let (status, body) = app.post(&path, Some(&a1), json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = app
        .post(
            "/api/v1/password",
            None,
            json!({"user": "newcomer", "current_password": password, "new_password": "newcomer-password-1"}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "the password works: {body}");
}

#[tokio::test]
async fn a_credential_asked_for_keeps_its_secret_sealed_until_it_runs() {
    let (app, admins, _) = scene("credential").await;
    let (status, body) = set_policies(&app, &admins, json!({ "add_credential": quorum(1) })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let a1 = admin1(&app).await;
    let csv = console_csv();
    let secret = csv
        .lines()
        .nth(1)
        .and_then(|l| l.split(',').nth(1))
        .unwrap()
        .trim()
        .to_owned();
    let (status, request) = app
        .post(
            "/api/v1/credentials",
            Some(&a1),
            json!({"name": "second", "csv": csv, "endpoint": crate::kms::endpoint()}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{request}");
    assert!(!request.to_string().contains(&secret), "{request}");
    assert!(
        request["operation"]["access_key_id"].is_string(),
        "{request}"
    );
    // Nor in the database, as an attacker who reads it would find it.
    let mut db = open_db(&app).await;
    let sql = match app.db.kind() {
        keyhold_store::DatabaseKind::Sqlite => {
            "SELECT CAST(operation AS BLOB) FROM approval_requests"
        }
        keyhold_store::DatabaseKind::Postgres => {
            "SELECT convert_to(operation, 'UTF8') FROM approval_requests"
        }
    };
    let stored = db.fetch_bytes(sql).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert!(
        !stored
            .iter()
            .any(|o| String::from_utf8_lossy(o).contains(&secret)),
        "{stored:?}"
    );

    let a2 = admin2(&app).await;
    let (status, done) = approve(&app, &a2, request["id"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["status"], "executed", "{done}");
    let (status, credential) = app.get("/api/v1/credentials/second", &admins).await;
    assert_eq!(status, StatusCode::OK, "{credential}");
}

/// A `keyhold serve` process, over HTTP.
struct Served {
    http: reqwest::Client,
    base: String,
}

impl Served {
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn login(&self, user: &str, password: &str) -> String {
        let (status, body) = self
            .call(
                Method::POST,
                "/api/v1/session/login",
                None,
                json!({"user": user, "password": password}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["token"].as_str().unwrap().to_owned()
    }
}

/// Killed after the last approval committed and before the request ran, a
/// server restarted on the same data runs it, once.
#[tokio::test(flavor = "multi_thread")]
async fn a_crash_between_the_last_approval_and_the_run_is_resumed() {
    use std::process::Command;

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let paused = dir.path().join("paused");
    let db = test_database().await;
    let hsm = Hsm::for_suite().map(|_| Hsm::isolated("approval", dir.path()));
    let init = init_data_dir_on(&data, &db, hsm.as_ref());
    let serve = |pause: bool| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_keyhold"));
        command
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--log",
                "warn",
                "--data-dir",
            ])
            .arg(&data)
            .env_remove("KEYHOLD_PAUSE_AT");
        if let Some(hsm) = &hsm {
            hsm.configure_command(&mut command);
        }
        use_database(&mut command, &db);
        if pause {
            command
                .env("KEYHOLD_PAUSE_AT", "approval_approved:after")
                .env("KEYHOLD_PAUSE_FILE", &paused);
        }
        let (child, base) = spawn_listening(&mut command);
        let served = Served {
            http: reqwest::Client::new(),
            base,
        };
        (child, served)
    };
    let (mut child, server) = serve(true);
    let admins = dual_login(&server.http, &server.base, &init).await;
    let (status, created) = server
        .call(
            Method::POST,
            "/api/v1/identities",
            Some(&admins),
            json!({"name": "Admin3", "role": "administrator"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (status, _) = server
        .call(
            Method::POST,
            "/api/v1/password",
            None,
            json!({"user": "Admin3", "current_password": created["password"], "new_password": ADMINS[0].1}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = server
        .call(
            Method::PUT,
            "/api/v1/approval-policies",
            Some(&admins),
            json!({"quorums": {"manage_identities": quorum(1)}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let a3 = server.login("Admin3", ADMINS[0].1).await;
    let (status, request) = server
        .call(
            Method::DELETE,
            "/api/v1/identities/Admin2",
            Some(&a3),
            json!(null),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{request}");
    let id = request["id"].as_str().unwrap().to_owned();

    // Admin1 approves; the server stops for good before it runs it.
    let a1 = server.login("Admin1", "Admin1-served-pass").await;
    let server = std::sync::Arc::new(server);
    let approving = {
        let server = server.clone();
        let path = format!("/api/v1/approvals/{id}/approve");
        tokio::spawn(async move { server.call(Method::POST, &path, Some(&a1), json!({})).await })
    };
    for _ in 0..300 {
        if paused.exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(std::fs::read_to_string(&paused).unwrap().trim(), id);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let _ = approving.await;

    let (mut child, server) = serve(false);
    let token = server.login("Admin1", "Admin1-served-pass").await;
    let mut shown = Value::Null;
    for _ in 0..100 {
        shown = server
            .call(
                Method::GET,
                &format!("/api/v1/approvals/{id}"),
                Some(&token),
                json!(null),
            )
            .await
            .1;
        if shown["status"] == "executed" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(shown["status"], "executed", "{shown:#}");
    let (_, identities) = server
        .call(Method::GET, "/api/v1/identities", Some(&token), json!(null))
        .await;
    let names: Vec<&str> = identities
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert!(!names.contains(&"Admin2"), "{names:?}");
    let (_, audit) = server
        .call(
            Method::GET,
            "/api/v1/audit?limit=1000",
            Some(&token),
            json!(null),
        )
        .await;
    let deleted = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["summary"] == "Deleted identity 'Admin2'")
        .collect::<Vec<_>>();
    assert_eq!(deleted.len(), 1, "{audit:#}");
    assert_eq!(deleted[0]["users"], "Admin3,Admin1");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn a_request_refused_when_it_runs_fails_with_the_reason_and_an_expired_one_takes_no_answer() {
    let (app, admins, group) = scene("refused").await;
    let one_hour = json!({"approvals": 1, "role": "administrator", "expires_after_hours": 1});
    let (status, body) = set_policies(
        &app,
        &admins,
        json!({ "delete_credential": quorum(1), "delete_group": one_hour }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // The credential is in use by the group: asked for, approved, and then
    // refused when it runs; the request says why.
    let a1 = admin1(&app).await;
    let (status, request) = app.delete("/api/v1/credentials/aws", &a1).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{request}");
    let a2 = admin2(&app).await;
    let (status, done) = approve(&app, &a2, request["id"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["status"], "failed", "{done}");
    assert!(
        done["outcome"].as_str().unwrap().contains(&group),
        "the reason names the group using it: {done}"
    );
    let (status, body) = app.get("/api/v1/credentials/aws", &admins).await;
    assert_eq!(status, StatusCode::OK, "still there: {body}");

    // Not approved within the hour: expired, and no answer is taken.
    let (status, request) = app.delete(&format!("/api/v1/groups/{group}"), &a1).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{request}");
    let id = request["id"].as_str().unwrap().to_owned();
    app.clock.advance(chrono::Duration::minutes(61));
    let a2 = admin2(&app).await;
    let (status, body) = approve(&app, &a2, &id).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{body}"
    );
    let (_, expired) = app.get("/api/v1/approvals?status=expired", &a2).await;
    let ids: Vec<&str> = expired
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id.as_str()]);
    let (status, body) = app.get(&format!("/api/v1/groups/{group}"), &a2).await;
    assert_eq!(status, StatusCode::OK, "the group is still there: {body}");
}
