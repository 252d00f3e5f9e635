//! Invariants under racing requests: each class of mutating endpoint gets N
//! identical or overlapping requests at once over HTTP (released together by
//! a barrier), and the test reads the invariant back from the server, the
//! database's answers and KMS: lockout counts every failure, a password
//! change is never undone, one unfinished job per group, one alias per
//! region, and no lost update on settings and groups.

use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;
use crate::report;

/// Requests per burst (the brief: at least 16).
const N: usize = 16;

/// One request of a burst: method, path, bearer token, body.
pub(crate) type Request = (Method, String, Option<String>, Option<Value>);

/// Sends every request at once: each waits at a barrier until all are ready,
/// so they reach the server together. Answers in the order of `requests`.
pub(crate) async fn burst(app: &TestApp, requests: Vec<Request>) -> Vec<(StatusCode, Value)> {
    let barrier = Arc::new(tokio::sync::Barrier::new(requests.len()));
    let mut tasks = Vec::new();
    for (method, path, token, body) in requests {
        let http = app.http.clone();
        let url = format!("{}{path}", app.base);
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let mut req = http.request(method, url);
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            if let Some(b) = body {
                req = req.json(&b);
            }
            barrier.wait().await;
            let resp = req.send().await.unwrap();
            let status = resp.status();
            let text = resp.text().await.unwrap();
            let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
            (status, value)
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    answers
}

fn count(answers: &[(StatusCode, Value)], status: StatusCode) -> usize {
    answers.iter().filter(|(s, _)| *s == status).count()
}

fn wrong_login(user: &str) -> Request {
    (
        Method::POST,
        "/api/v1/session/login".into(),
        None,
        Some(json!({"user": user, "password": "not-the-password"})),
    )
}

/// The audit entries of failed logins of `user`, by the reason in their details.
async fn login_failures(app: &TestApp, token: &str, user: &str) -> Vec<String> {
    app.audit_export(token)
        .await
        .into_iter()
        .filter(|e| {
            e["summary"]
                .as_str()
                .is_some_and(|s| s.starts_with(&format!("Failed login for '{user}'")))
        })
        .map(|e| e["details"]["reason"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_wrong_passwords_lock_after_exactly_the_threshold() {
    let app = TestApp::spawn().await;
    app.activate_admins().await;
    let threshold = 5;

    // One failure short of the threshold, all at once: not locked.
    let answers = burst(&app, vec![wrong_login("Admin1"); threshold - 1]).await;
    assert_eq!(count(&answers, StatusCode::UNAUTHORIZED), threshold - 1);
    let (status, body) = app.login(None, "Admin1", ADMIN1_PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // N failures at once (the count restarted at the right password): every
    // one counts, and the identity ends locked.
    let answers = burst(&app, vec![wrong_login("Admin1"); N]).await;
    assert_eq!(count(&answers, StatusCode::UNAUTHORIZED), N);
    let (status, _) = app.login(None, "Admin1", ADMIN1_PASSWORD).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "locked: the right password is refused"
    );

    let (_, body) = app.login(None, "Admin2", ADMIN2_PASSWORD).await;
    let admin2 = body["token"].as_str().unwrap().to_owned();
    let reasons = login_failures(&app, &admin2, "Admin1").await;
    // The short burst, the long one, and the right password while locked.
    assert_eq!(reasons.len(), threshold - 1 + N + 1, "{reasons:#?}");
    let later = &reasons[threshold - 1..threshold - 1 + N];
    let checked = later.iter().filter(|r| *r == "wrong password").count();
    let locking = later.iter().filter(|r| r.contains("locked for")).count();
    let unchecked = later.iter().filter(|r| *r == "identity is locked").count();
    // Exactly `threshold` guesses were checked, the last of them locking;
    // every other request was refused without its password being checked.
    assert_eq!(
        (checked, locking, unchecked),
        (threshold - 1, 1, N - threshold),
        "{later:#?}"
    );
    assert_eq!(reasons.last().unwrap(), "identity is locked");
    // The database holds the lock, and the count started again.
    let mut db = open_db(&app).await;
    let locked = db
        .execute(
            "UPDATE identities SET name = name WHERE name = 'Admin1' \
             AND locked_until IS NOT NULL AND failed_logins = 0",
        )
        .await
        .unwrap();
    assert_eq!(locked, 1);

    report::section(
        23,
        "Racing requests: lockout",
        &format!(
            "{} wrong passwords at once (one short of the threshold of {threshold}) left Admin1 \
             unlocked, and the right password logged in. Then {N} wrong passwords at once: all \
             {N} are in the audit log; the database admitted exactly {threshold} of them (each \
             attempt is counted by an atomic increment before its password is checked), the \
             last admitted locked the identity, and the other {} were refused without their \
             password being checked. The right password was refused while locked.",
            threshold - 1,
            N - threshold
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_password_change_racing_failed_logins_is_never_undone() {
    let app = TestApp::spawn().await;
    let admins = app.dual_session().await;
    // High enough that the failures do not lock the identity: the race is
    // between the change and the failures' writes, not the lock.
    let (status, body) = app
        .patch("/api/v1/config", &admins, json!({"lockout_threshold": 100}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let rounds = 3;
    let mut current = ADMIN1_PASSWORD.to_owned();
    for round in 0..rounds {
        let next = format!("Admin1-new-password-{round}-x");
        let mut requests = vec![wrong_login("Admin1"); N];
        requests.insert(
            N / 2,
            (
                Method::POST,
                "/api/v1/password".into(),
                None,
                Some(json!({"user": "Admin1", "current_password": current, "new_password": next})),
            ),
        );
        let answers = burst(&app, requests).await;
        assert_eq!(
            answers[N / 2].0,
            StatusCode::NO_CONTENT,
            "{:?}",
            answers[N / 2]
        );
        assert_eq!(count(&answers, StatusCode::UNAUTHORIZED), N);
        let (status, _) = app.login(None, "Admin1", &current).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "round {round}: the old password still works"
        );
        let (status, body) = app.login(None, "Admin1", &next).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "round {round}: the new password is lost: {body}"
        );
        current = next;
    }
    report::section(
        23,
        "Racing requests: password change",
        &format!(
            "{rounds} times, a password change was sent together with {N} wrong-password logins \
             of the same identity. Each change was answered 204 and held: the new password \
             logged in, the old one was refused. Failed logins write only the lockout counters \
             (in one statement), and a change writes only the password, over the hash it checked."
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_force_rotates_start_one_job_and_one_kms_key() {
    let app = TestApp::spawn().await;
    let token = app.dual_session().await;
    app.import_kms_credential(&token, "aws").await;
    let group = unique("race-rot");
    let (status, body) = app.create_group(&token, group_body(&group, "aws")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let request = (
        Method::POST,
        format!("/api/v1/groups/{group}/rotate"),
        Some(token.clone()),
        Some(json!({})),
    );
    let answers = burst(&app, vec![request; N]).await;
    assert_eq!(count(&answers, StatusCode::ACCEPTED), 1, "{answers:#?}");
    assert_eq!(count(&answers, StatusCode::CONFLICT), N - 1, "{answers:#?}");
    for (status, body) in &answers {
        if *status == StatusCode::CONFLICT {
            let message = body["error"]["message"].as_str().unwrap();
            assert!(
                message.contains(&format!("for key group '{group}'")),
                "{message}"
            );
        }
    }
    let (_, jobs) = app.get("/api/v1/jobs", &token).await;
    let of_group: Vec<&Value> = jobs
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["group"] == group.as_str())
        .collect();
    assert_eq!(of_group.len(), 1, "{jobs:#}");
    let id = of_group[0]["id"].as_str().unwrap();
    let job = app.wait_job(&token, id).await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    let keys = crate::kms::Kms::connect().await.keys_of_group(&group).await;
    assert_eq!(keys.len(), 1, "one KMS key for one rotation: {keys:?}");

    report::section(
        23,
        "Racing requests: Force Rotate",
        &format!(
            "{N} Force Rotates of one group at once: one answered 202, {} answered 409 with the \
             reason; one job was recorded (a unique index admits one unfinished job per group), \
             it succeeded, and KMS (read through the AWS API) holds exactly one key tagged with \
             the group.",
            N - 1
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_group_creations_with_one_alias_create_one_group() {
    let app = TestApp::spawn().await;
    let token = app.dual_session().await;
    app.import_credential(&token, "aws-prod").await;
    let requests: Vec<Request> = (0..N)
        .map(|i| {
            let mut body = group_body(&format!("race-{i}"), "aws-prod");
            body["alias"] = json!("alias/shared");
            (
                Method::POST,
                "/api/v1/groups".into(),
                Some(token.clone()),
                Some(body),
            )
        })
        .collect();
    let answers = burst(&app, requests).await;
    assert_eq!(count(&answers, StatusCode::CREATED), 1, "{answers:#?}");
    assert_eq!(count(&answers, StatusCode::CONFLICT), N - 1, "{answers:#?}");
    let (_, groups) = app.get("/api/v1/groups", &token).await;
    let holders = groups
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["alias"] == "alias/shared")
        .count();
    assert_eq!(holders, 1, "{groups:#}");
    assert_eq!(groups.as_array().unwrap().len(), 1, "{groups:#}");
    report::section(
        23,
        "Racing requests: group creation",
        &format!(
            "{N} creations of groups with one alias in one region at once: one answered 201, \
             {} answered 409; one group exists (a unique index on region and alias).",
            N - 1
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_alias_changes_leave_the_alias_to_one_group() {
    let app = TestApp::spawn().await;
    let token = app.dual_session().await;
    app.import_credential(&token, "aws-prod").await;
    for i in 0..N {
        let (status, body) = app
            .create_group(&token, group_body(&format!("race-{i}"), "aws-prod"))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let requests: Vec<Request> = (0..N)
        .map(|i| {
            (
                Method::PATCH,
                format!("/api/v1/groups/race-{i}"),
                Some(token.clone()),
                Some(json!({"alias": "alias/shared"})),
            )
        })
        .collect();
    let answers = burst(&app, requests).await;
    assert_eq!(count(&answers, StatusCode::OK), 1, "{answers:#?}");
    assert_eq!(count(&answers, StatusCode::CONFLICT), N - 1, "{answers:#?}");
    let (_, groups) = app.get("/api/v1/groups", &token).await;
    let holders = groups
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["alias"] == "alias/shared")
        .count();
    assert_eq!(holders, 1, "{groups:#}");
    report::section(
        23,
        "Racing requests: alias changes",
        &format!(
            "{N} groups changed their alias to one alias at once: one answered 200, {} answered \
             409, and one group holds the alias.",
            N - 1
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_configuration_changes_of_different_fields_all_survive() {
    let app = TestApp::spawn().await;
    let token = app.dual_session().await;
    let changes = [
        ("lockout_threshold", json!(7)),
        ("lockout_minutes", json!(21)),
        ("session_idle_minutes", json!(25)),
        ("session_max_hours", json!(9)),
    ];
    let requests: Vec<Request> = (0..N)
        .map(|i| {
            let (field, value) = &changes[i % changes.len()];
            (
                Method::PATCH,
                "/api/v1/config".into(),
                Some(token.clone()),
                Some(json!({ *field: value })),
            )
        })
        .collect();
    let answers = burst(&app, requests).await;
    assert_eq!(count(&answers, StatusCode::OK), N, "{answers:#?}");
    let (_, config) = app.get("/api/v1/config", &token).await;
    for (field, value) in &changes {
        assert_eq!(&config[*field], value, "{field} lost: {config:#}");
    }
    let changed = app
        .audit_summaries(&token)
        .await
        .iter()
        .filter(|s| s.contains("Changed configuration"))
        .count();
    assert_eq!(changed, N);
    report::section(
        23,
        "Racing requests: configuration",
        &format!(
            "{N} changes of {} different settings at once: all answered 200 and audited, and \
             every setting holds its new value (each change is applied to the settings as they \
             are when written, again if another changed them meanwhile).",
            changes.len()
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_group_updates_of_different_fields_all_survive() {
    let app = TestApp::spawn().await;
    let token = app.dual_session().await;
    app.import_credential(&token, "aws-prod").await;
    let (status, body) = app
        .create_group(&token, group_body("race", "aws-prod"))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let changes = [
        ("description", json!("raced description")),
        ("owner", json!("raced owner")),
        ("notes", json!("raced notes")),
        ("disable_after_rotate", json!(false)),
    ];
    let requests: Vec<Request> = (0..N)
        .map(|i| {
            let (field, value) = &changes[i % changes.len()];
            (
                Method::PATCH,
                "/api/v1/groups/race".into(),
                Some(token.clone()),
                Some(json!({ *field: value })),
            )
        })
        .collect();
    let answers = burst(&app, requests).await;
    assert_eq!(count(&answers, StatusCode::OK), N, "{answers:#?}");
    let (_, group) = app.get("/api/v1/groups/race", &token).await;
    for (field, value) in &changes {
        assert_eq!(&group[*field], value, "{field} lost: {group:#}");
    }
    report::section(
        23,
        "Racing requests: group changes",
        &format!(
            "{N} changes of {} different fields of one group at once: all answered 200, and \
             every field holds its new value (a change is written only over the group it was \
             applied to, and applied again when another got there first).",
            changes.len()
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_retries_and_cancels_move_a_job_once() {
    let app = TestApp::spawn().await;
    let token = app.dual_session().await;
    app.import_kms_credential(&token, "aws").await;
    let failing = |group: &str| {
        let mut body = group_body(group, "aws");
        // No such KMS key: the rotation fails at once, nothing created.
        body["active_key_id"] = json!(uuid::Uuid::new_v4().to_string());
        body
    };
    let (retried_group, cancelled_group) = (unique("race-retry"), unique("race-cancel"));
    let mut failed = Vec::new();
    for group in [&retried_group, &cancelled_group] {
        let (status, body) = app.create_group(&token, failing(group)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let id = app.rotate(&token, group).await;
        let job = app.wait_job(&token, &id).await;
        assert_eq!(job["status"], "failed", "{job:#}");
        failed.push(id);
    }
    let (status, body) = app
        .patch(
            &format!("/api/v1/groups/{retried_group}"),
            &token,
            json!({"active_key_id": null}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let each = |id: &str, verb: &str| -> Vec<Request> {
        vec![
            (
                Method::POST,
                format!("/api/v1/jobs/{id}/{verb}"),
                Some(token.clone()),
                Some(json!({})),
            );
            N
        ]
    };
    let retries = burst(&app, each(&failed[0], "retry")).await;
    let cancels = burst(&app, each(&failed[1], "cancel")).await;
    for (answers, what) in [(&retries, "retry"), (&cancels, "cancel")] {
        let moved = answers.iter().filter(|(s, _)| s.is_success()).count();
        assert_eq!(moved, 1, "{what}: {answers:#?}");
        assert_eq!(
            count(answers, StatusCode::CONFLICT),
            N - 1,
            "{what}: {answers:#?}"
        );
    }
    let job = app.wait_job(&token, &failed[0]).await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    assert_eq!(job["attempts"], 2, "one retry ran: {job:#}");
    let keys = crate::kms::Kms::connect()
        .await
        .keys_of_group(&retried_group)
        .await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    let (_, job) = app
        .get(&format!("/api/v1/jobs/{}", failed[1]), &token)
        .await;
    assert_eq!(job["status"], "cancelled", "{job:#}");
    let audit = app.audit_summaries(&token).await;
    for id in &failed {
        let moves = audit
            .iter()
            .filter(|s| {
                (s.contains("Retried") || s.contains("Cancelled")) && s.contains(id.as_str())
            })
            .count();
        assert_eq!(moves, 1, "{id}: {audit:#?}");
    }
    report::section(
        23,
        "Racing requests: retry and cancel",
        &format!(
            "{N} retries of one failed job at once, and {N} cancellations of another: each \
             time one answered success and {} answered 409; the job moved once (one audit \
             entry), the retried job ran once more and succeeded with one KMS key, and no \
             stale retry wrote its read of the job back over the running job's progress.",
            N - 1
        ),
    );
}

#[tokio::test]
async fn sixteen_checkpoints_at_once_are_each_written_once_and_verify() {
    let app = TestApp::spawn().await;
    let token = app.dual_session().await;
    let requests = (0..N)
        .map(|_| {
            let request: Request = (
                Method::POST,
                "/api/v1/audit/checkpoints".into(),
                Some(token.clone()),
                Some(json!({})),
            );
            request
        })
        .collect();
    let answers = burst(&app, requests).await;
    let written = crate::audit::checkpoint_file(&app);
    for (status, checkpoint) in &answers {
        assert_eq!(*status, StatusCode::CREATED, "{checkpoint}");
        assert_eq!(
            written.iter().filter(|c| *c == checkpoint).count(),
            1,
            "each answered checkpoint is in the file once"
        );
    }
    // Whole lines only: every line of the file is a checkpoint the log reaches.
    let (status, report) = app
        .post(
            "/api/v1/audit/verify",
            Some(&token),
            json!({"checkpoints": written}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["ok"], true, "{report}");
    report::section(
        23,
        "Racing requests: audit checkpoints",
        &format!(
            "{N} checkpoint requests at once: all answered 201; each answered checkpoint is in \
             the checkpoint file exactly once, as a whole line ({} lines with the one written at \
             start), and the log verifies against every one of them. Checkpoints are signed and \
             appended one at a time.",
            written.len()
        ),
    );
}
