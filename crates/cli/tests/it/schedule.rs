//! Scheduled rotation, key validity and the designated rotator, with the
//! test's clock: a day passes when the test says so.

use reqwest::StatusCode;
use serde_json::{Value, json};

use keyhold_core::clock::Clock;

use crate::helpers::*;
use crate::kms::Kms;

async fn group(app: &TestApp, token: &str, name: &str) -> Value {
    let (status, group) = app.get(&format!("/api/v1/groups/{name}"), token).await;
    assert_eq!(status, StatusCode::OK, "{group}");
    group
}

/// The group's rotation jobs, newest first.
async fn rotations(app: &TestApp, token: &str, name: &str) -> Vec<Value> {
    let (status, jobs) = app.get("/api/v1/jobs?limit=100", token).await;
    assert_eq!(status, StatusCode::OK, "{jobs}");
    jobs.as_array()
        .unwrap()
        .iter()
        .filter(|j| j["kind"] == "rotate" && j["group"] == name)
        .cloned()
        .collect()
}

/// Waits until the group's newest rotation has ended with `status`.
async fn rotation_ended(
    app: &TestApp,
    token: &str,
    name: &str,
    count: usize,
    status: &str,
) -> Vec<Value> {
    rotation_ended_on(&[app], token, name, count, status).await
}

/// [`rotation_ended`] as the first of `nodes` sees it; a failure describes
/// every node (the rotator's error is in its own status only).
async fn rotation_ended_on(
    nodes: &[&TestApp],
    token: &str,
    name: &str,
    count: usize,
    status: &str,
) -> Vec<Value> {
    let app = nodes[0];
    for _ in 0..300 {
        let jobs = rotations(app, token, name).await;
        if jobs.len() == count && jobs[0]["status"] == status {
            return jobs;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let jobs = rotations(app, token, name).await;
    let (_, group) = app.get(&format!("/api/v1/groups/{name}"), token).await;
    // What the scheduler said: a deferral and its reason, in the details.
    let (_, audit) = app.get("/api/v1/audit?limit=20", token).await;
    let said: Vec<String> = audit
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["users"] == "System")
        .map(|e| format!("{} {} {}", e["time"], e["summary"], e["details"]))
        .collect();
    let mut clusters = Vec::new();
    for node in nodes {
        let (_, config) = node.get("/api/v1/config", token).await;
        clusters.push(config["cluster"].clone());
    }
    panic!(
        "rotation {count} of {name} did not end {status}: {} jobs, newest {:#}; \
         group's next rotation {}; the system's last audit entries {said:#?}; \
         each node's cluster status {clusters:#?}",
        jobs.len(),
        jobs.first().cloned().unwrap_or_default(),
        group["next_rotation_at"],
    );
}

fn time(raw: &Value) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(raw.as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_due_group_rotates_once_as_system_and_missed_intervals_collapse() {
    let app = TestApp::spawn().await;
    let token = app.dual_session().await;
    app.import_kms_credential(&token, "aws").await;
    let name = unique("sched");
    let mut body = group_body(&name, "aws");
    body["rotate_every"] = json!("1d");
    let (status, created) = app.create_group(&token, body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["next_rotation_at"], "2026-11-30T09:00:00.000000Z");
    assert!(rotations(&app, &token, &name).await.is_empty());

    // A day later the rotator starts it, as System.
    app.clock
        .advance(chrono::Duration::days(1) + chrono::Duration::minutes(1));
    // Sessions end after a day at most: log in again.
    let token = app.dual_session_again().await;
    let jobs = rotation_ended(&app, &token, &name, 1, "succeeded").await;
    assert_eq!(jobs[0]["users"], "System");
    let g = group(&app, &token, &name).await;
    assert_eq!(g["active_key_id"], jobs[0]["kms_key_id"]);
    assert_eq!(g["last_rotation_status"], "succeeded");
    assert_eq!(
        time(&g["next_rotation_at"]),
        app.clock.now() + chrono::Duration::days(1),
        "counted from the rotation"
    );
    let kms = Kms::connect().await;
    assert_eq!(
        kms.alias_target(&format!("alias/{name}")).await.as_deref(),
        jobs[0]["kms_key_id"].as_str()
    );

    // Down for five days: one rotation, not five.
    app.clock.advance(chrono::Duration::days(5));
    // Sessions end after a day at most: log in again.
    let token = app.dual_session_again().await;
    rotation_ended(&app, &token, &name, 2, "succeeded").await;
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    assert_eq!(rotations(&app, &token, &name).await.len(), 2);
    assert_eq!(kms.keys_of_group(&name).await.len(), 2);
    let g = group(&app, &token, &name).await;
    assert_eq!(
        time(&g["next_rotation_at"]),
        app.clock.now() + chrono::Duration::days(1)
    );
    let audit = app.audit_summaries(&token).await;
    assert_eq!(
        audit
            .iter()
            .filter(|s| s.contains(&format!(
                "Started rotating keys for HSM protected key group {name}"
            )))
            .count(),
        2,
        "{audit:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_scheduled_rotation_shows_why_and_is_retried_with_backoff() {
    let app = TestApp::spawn_with(|args| {
        args.kms.kms_max_attempts = Some(1);
        args.kms.kms_request_timeout_seconds = Some(2);
        allow_endpoints(args, &["http://127.0.0.1:9"]);
    })
    .await;
    let token = app.dual_session().await;
    // Nothing listens there: every KMS call fails.
    app.import_credential_at(&token, "nowhere", "http://127.0.0.1:9")
        .await;
    let name = unique("retry");
    let mut body = group_body(&name, "nowhere");
    body["rotate_every"] = json!("1d");
    app.create_group(&token, body).await;

    app.clock.advance(chrono::Duration::days(1));
    // Sessions end after a day at most: log in again.
    let token = app.dual_session_again().await;
    let jobs = rotation_ended(&app, &token, &name, 1, "failed").await;
    assert_eq!(jobs[0]["attempts"], 1);
    let g = group(&app, &token, &name).await;
    assert_eq!(g["last_rotation_status"], "failed");
    assert!(
        g["last_rotation_error"]
            .as_str()
            .unwrap()
            .contains("create the KMS key"),
        "{g:#}"
    );
    let finished = time(&jobs[0]["finished_at"]);
    assert_eq!(
        time(&g["rotation_retry_at"]),
        finished + chrono::Duration::minutes(1)
    );
    // The failure blocks a new rotation until retried: the next due time
    // does not start a second job.
    app.clock.advance(chrono::Duration::seconds(30));
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(rotations(&app, &token, &name).await[0]["attempts"], 1);

    // A minute after the failure, the same job is tried again; then after two.
    app.clock.advance(chrono::Duration::seconds(31));
    let job = app
        .eventually("the second attempt to fail", || async {
            let jobs = rotations(&app, &token, &name).await;
            (jobs[0]["attempts"] == 2 && jobs[0]["status"] == "failed").then(|| jobs[0].clone())
        })
        .await;
    assert_eq!(
        rotations(&app, &token, &name).await.len(),
        1,
        "the same job, retried"
    );
    let g = group(&app, &token, &name).await;
    assert_eq!(
        time(&g["rotation_retry_at"]),
        time(&job["finished_at"]) + chrono::Duration::minutes(2)
    );
    let audit = app.audit_summaries(&token).await;
    assert!(
        audit
            .iter()
            .any(|s| s.contains("Retried job") && s.contains("Rotate HSM protected keys")),
        "{audit:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_are_rotated_before_they_expire_and_shown_expired_after() {
    let app = TestApp::spawn().await;
    let token = app.dual_session().await;
    app.import_kms_credential(&token, "aws").await;
    let name = unique("valid");
    let mut body = group_body(&name, "aws");
    body["rotate_every"] = json!("30d");
    body["valid_for"] = json!("10d");
    app.create_group(&token, body).await;
    let first = app.rotate_ok(&token, &name).await;
    let g = group(&app, &token, &name).await;
    // Valid for 10 days, rotating every 30: a day before the key's end.
    assert_eq!(
        time(&g["next_rotation_at"]),
        app.clock.now() + chrono::Duration::days(9)
    );

    app.clock
        .advance(chrono::Duration::days(9) + chrono::Duration::minutes(1));
    // Sessions end after a day at most: log in again.
    let token = app.dual_session_again().await;
    let jobs = rotation_ended(&app, &token, &name, 2, "succeeded").await;
    assert_eq!(jobs[0]["users"], "System");
    let (_, old) = app.get(&format!("/api/v1/keys/{first}"), &token).await;
    assert_eq!(old["expired"], false, "rotated before the end");

    app.clock.advance(chrono::Duration::days(1));
    // Sessions end after a day at most: log in again.
    let token = app.dual_session_again().await;
    let (_, old) = app.get(&format!("/api/v1/keys/{first}"), &token).await;
    assert_eq!(old["expired"], true, "{old:#}");
    let kms = Kms::connect().await;
    assert_eq!(
        kms.describe(&first)
            .await
            .expiration_model()
            .map(|m| m.as_str().to_owned()),
        Some("KEY_MATERIAL_EXPIRES".to_owned())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_schedule_and_rotator_settings_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    let token = app.dual_session().await;
    app.import_kms_credential(&token, "aws").await;
    let mut body = group_body("too-often", "aws");
    body["rotate_every"] = json!("23h");
    let (status, refused) = app.create_group(&token, body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert_eq!(refused["error"]["field"], "rotate_every");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("too often")
    );
    let (status, _) = app.get("/api/v1/groups/too-often", &token).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, refused) = app
        .patch(
            "/api/v1/config",
            &token,
            json!({"designated_rotator": "node-zz"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("no node 'node-zz' has joined"),
        "{message}"
    );
    assert!(
        message.contains("node-a"),
        "names the known nodes: {message}"
    );
    let (status, refused) = app
        .patch(
            "/api/v1/config",
            &token,
            json!({"designated_rotator": "node zz"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    let (_, config) = app.get("/api/v1/config", &token).await;
    assert_eq!(config["designated_rotator"], "automatic");
    assert_eq!(config["cluster"]["node"], "node-a");
    assert_eq!(config["cluster"]["role"], "rotator");

    let (status, changed) = app
        .patch(
            "/api/v1/config",
            &token,
            json!({"designated_rotator": "node-a"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["designated_rotator"], "node-a");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_designated_node_down_nobody_else_rotates_and_says_why() {
    let a = TestApp::spawn().await;
    let token = a.dual_session().await;
    a.import_kms_credential(&token, "aws").await;
    let mut b = a.spawn_peer("node-b").await;
    b.eventually("node-b to join", || async {
        let (_, config) = b.get("/api/v1/config", &token).await;
        (config["cluster"]["nodes"].as_array().map(Vec::len) == Some(2)).then_some(())
    })
    .await;
    let (status, changed) = a
        .patch(
            "/api/v1/config",
            &token,
            json!({"designated_rotator": "node-b"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    b.eventually("node-b to take the lease", || async {
        let (_, config) = b.get("/api/v1/config", &token).await;
        (config["cluster"]["role"] == "rotator").then_some(())
    })
    .await;

    // node-b goes down; a group falls due; node-a serves but does not rotate.
    b.crash().await;
    let name = unique("held");
    let mut body = group_body(&name, "aws");
    body["rotate_every"] = json!("1d");
    a.create_group(&token, body).await;
    a.clock.advance(chrono::Duration::days(2));
    // Sessions end after a day at most: log in again.
    let token = a.dual_session_again().await;
    let ready = a
        .eventually("node-a to say why nothing rotates", || async {
            let (_, ready) = a.readyz().await;
            ready["cluster"]["note"]
                .as_str()
                .is_some_and(|n| n.starts_with("nothing rotates"))
                .then_some(ready)
        })
        .await;
    assert_eq!(ready["ready"], true, "a standby is ready: {ready:#}");
    assert_eq!(ready["cluster"]["role"], "standby");
    let note = ready["cluster"]["note"].as_str().unwrap();
    assert!(
        note.contains("the designated rotator node-b has not been seen since"),
        "{note}"
    );
    // A Force Rotate is accepted, and waits for the rotator.
    let id = a.rotate(&token, &name).await;
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let (_, job) = a.get(&format!("/api/v1/jobs/{id}"), &token).await;
    assert_eq!(job["status"], "queued", "{job:#}");
    assert_eq!(
        rotations(&a, &token, &name).await.len(),
        1,
        "no scheduled one"
    );
    let audit = a.audit_summaries(&token).await;
    assert!(
        audit
            .iter()
            .any(|s| s.contains("nothing rotates: the designated rotator node-b")),
        "{audit:#?}"
    );

    // Back to automatic: node-a takes over and runs the waiting job.
    let (status, _) = a
        .patch(
            "/api/v1/config",
            &token,
            json!({"designated_rotator": "automatic"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // node-b's lease runs out first (it crashed holding it).
    a.clock.advance(chrono::Duration::seconds(20));
    let job = a.wait_job(&token, &id).await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crashed_rotator_is_replaced_and_its_job_finishes_once() {
    let mut a = TestApp::spawn().await;
    let token = a.dual_session().await;
    a.import_kms_credential(&token, "aws").await;
    let b = a.spawn_peer("node-b").await;
    let name = unique("failover");
    a.create_group(&token, group_body(&name, "aws")).await;
    a.rotate_ok(&token, &name).await;

    // node-a (the rotator) crashes; node-b takes the lease once it expires.
    a.crash().await;
    let id = b.rotate(&token, &name).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let (_, job) = b.get(&format!("/api/v1/jobs/{id}"), &token).await;
    assert_eq!(
        job["status"], "queued",
        "nobody runs it while node-a's lease lasts"
    );
    b.clock.advance(chrono::Duration::seconds(16));
    let job = b.wait_job(&token, &id).await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    let (_, config) = b.get("/api/v1/config", &token).await;
    assert_eq!(config["cluster"]["role"], "rotator");
    assert_eq!(config["cluster"]["lease_holder"], "node-b");
    assert_eq!(
        config["cluster"]["lease_token"], 2,
        "a new holder, a new token"
    );
    let kms = Kms::connect().await;
    assert_eq!(kms.keys_of_group(&name).await.len(), 2);
    assert_eq!(
        kms.alias_target(&format!("alias/{name}")).await.as_deref(),
        job["kms_key_id"].as_str()
    );
}

/// The node that holds the rotator lease, as a live node reports it.
async fn rotator_of(app: &TestApp, token: &str) -> Option<String> {
    let (_, config) = app.get("/api/v1/config", token).await;
    config["cluster"]["lease_holder"]
        .as_str()
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_scheduled_rotations_happen_once_each_while_rotators_crash_and_come_back() {
    let first = TestApp::spawn().await;
    let token = first.dual_session().await;
    first.import_kms_credential(&token, "aws").await;
    let name = unique("fifty");
    let mut body = group_body(&name, "aws");
    body["rotate_every"] = json!("1d");
    first.create_group(&token, body).await;
    let second = first.spawn_peer("node-b").await;
    let mut nodes = [first, second];

    for due in 1..=50usize {
        nodes[0]
            .clock
            .advance(chrono::Duration::days(1) + chrono::Duration::minutes(1));
        if due % 10 == 5 {
            // The rotator dies as the rotation falls due (perhaps mid-job);
            // the other node takes over once the lease runs out, and the
            // dead one comes back as a standby.
            let token = nodes[0].dual_session_again().await;
            let holder = rotator_of(&nodes[0], &token).await.unwrap();
            let index = usize::from(holder == "node-b");
            nodes[index].crash().await;
            // A KMS request the crash cut off after it was sent still
            // completes at the peer; with the lease's 15 s of real time it
            // would have before anyone took over. The test clock skips
            // those seconds, so give the peer a real moment first.
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            nodes[0].clock.advance(chrono::Duration::seconds(16));
            let back = nodes[index].spawn_peer(&holder).await;
            nodes[index] = back;
        }
        let token = nodes[0].dual_session_again().await;
        rotation_ended_on(&[&nodes[0], &nodes[1]], &token, &name, due, "succeeded").await;
    }
    let token = nodes[1].dual_session_again().await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let jobs = rotations(&nodes[1], &token, &name).await;
    assert_eq!(jobs.len(), 50, "every due rotation once, no more");
    assert!(
        jobs.iter()
            .all(|j| j["status"] == "succeeded" && j["users"] == "System")
    );
    let kms = Kms::connect().await;
    assert_eq!(
        kms.keys_of_group(&name).await.len(),
        50,
        "one KMS key per rotation"
    );
    let (_, verified) = nodes[1].get("/api/v1/audit/verify", &token).await;
    assert_eq!(verified["ok"], true, "{verified}");
}

#[tokio::test(flavor = "multi_thread")]
async fn many_groups_due_at_once_all_rotate_once() {
    let app = TestApp::spawn_with(|args| args.jobs.job_concurrency = Some(4)).await;
    let token = app.dual_session().await;
    app.import_kms_credential(&token, "aws").await;
    let names: Vec<String> = (0..12).map(|i| unique(&format!("bulk{i}"))).collect();
    for name in &names {
        let mut body = group_body(name, "aws");
        body["rotate_every"] = json!("1d");
        let (status, created) = app.create_group(&token, body).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
    }
    app.clock
        .advance(chrono::Duration::days(1) + chrono::Duration::minutes(1));
    let token = app.dual_session_again().await;
    for name in &names {
        let jobs = rotation_ended(&app, &token, name, 1, "succeeded").await;
        assert_eq!(jobs[0]["users"], "System");
    }
    let (_, jobs) = app.get("/api/v1/jobs?limit=100", &token).await;
    assert_eq!(
        jobs.as_array().unwrap().len(),
        12,
        "one rotation per due group, no more"
    );
    let audit = app.audit_summaries(&token).await;
    assert!(
        !audit.iter().any(|s| s.contains("deferred")),
        "nothing had to wait for another pass: {audit:#?}"
    );
    // The rotator reports its last pass over the schedule, after the jump.
    let (_, ready) = app.readyz().await;
    let pass = &ready["cluster"]["last_schedule_pass"];
    let at = keyhold_core::clock::parse_timestamp(pass["at"].as_str().unwrap()).unwrap();
    assert!(
        at >= app.clock.now() - chrono::Duration::seconds(1),
        "{pass}"
    );
    assert!(pass["duration_ms"].is_u64(), "{pass}");
    assert_eq!(pass["deferred"], 0, "{pass}");
    assert!(pass["started"].as_u64().unwrap() <= 200, "{pass}");
}
