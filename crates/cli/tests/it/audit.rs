//! The audit log: filters, export, and verification that catches an edited,
//! a deleted and a swapped row written straight into the database.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

/// A server with some history: logins, a credential, two groups, a change.
async fn app_with_history() -> (TestApp, String) {
    let app = TestApp::spawn().await;
    let token = app.dual_session().await;
    app.import_credential(&token, "aws-prod").await;
    app.create_group(&token, group_body("ig-one", "aws-prod"))
        .await;
    app.create_group(&token, group_body("ig-two", "aws-prod"))
        .await;
    app.patch("/api/v1/groups/ig-one", &token, json!({"owner": "ops"}))
        .await;
    (app, token)
}

async fn verify(app: &TestApp, token: &str) -> serde_json::Value {
    let (status, report) = app.get("/api/v1/audit/verify", token).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    report
}

/// The database refuses edits to the log; an attacker with access to it drops that guard first.
async fn tamper(app: &TestApp, statements: &[&str]) {
    let mut db = open_db(app).await;
    for sql in db.drop_audit_guard().iter().chain(statements) {
        db.execute(sql).await.unwrap();
    }
}

async fn seq_of(app: &TestApp, token: &str, summary: &str) -> i64 {
    let (_, entries) = app
        .get(
            &format!("/api/v1/audit?text={}", summary.replace(' ', "%20")),
            token,
        )
        .await;
    entries[0]["seq"].as_i64().unwrap()
}

#[tokio::test]
async fn an_intact_log_verifies_and_the_database_refuses_edits() {
    let (app, token) = app_with_history().await;
    let report = verify(&app, &token).await;
    assert_eq!(report["ok"], true, "{report}");
    assert!(report["entries_checked"].as_u64().unwrap() >= 9);

    let mut db = open_db(&app).await;
    assert!(
        db.execute("UPDATE audit_log SET summary = 'x'")
            .await
            .is_err()
    );
    assert!(db.execute("DELETE FROM audit_log").await.is_err());
}

#[tokio::test]
async fn an_edited_row_is_named() {
    let (app, token) = app_with_history().await;
    let seq = seq_of(&app, &token, "Added HSM protected key group ig-two").await;
    tamper(&app, &[&format!("UPDATE audit_log SET summary = 'Added HSM protected key group harmless' WHERE seq = {seq}")]).await;
    let report = verify(&app, &token).await;
    assert_eq!(report["ok"], false);
    assert_eq!(report["first_bad_seq"], seq);
    assert!(
        report["reason"].as_str().unwrap().contains("edited"),
        "{report}"
    );
}

#[tokio::test]
async fn a_deleted_row_is_named() {
    let (app, token) = app_with_history().await;
    let seq = seq_of(&app, &token, "Added HSM protected key group ig-one").await;
    tamper(&app, &[&format!("DELETE FROM audit_log WHERE seq = {seq}")]).await;
    let report = verify(&app, &token).await;
    assert_eq!(report["ok"], false);
    assert_eq!(report["first_bad_seq"], seq + 1);
    assert!(
        report["reason"].as_str().unwrap().contains("deleted"),
        "{report}"
    );
}

#[tokio::test]
async fn swapped_rows_are_named() {
    let (app, token) = app_with_history().await;
    let a = seq_of(&app, &token, "Added HSM protected key group ig-one").await;
    let b = a + 1;
    // Swap the two rows' positions in the sequence.
    tamper(
        &app,
        &[
            &format!("UPDATE audit_log SET seq = -1 WHERE seq = {a}"),
            &format!("UPDATE audit_log SET seq = {a} WHERE seq = {b}"),
            &format!("UPDATE audit_log SET seq = {b} WHERE seq = -1"),
        ],
    )
    .await;
    let report = verify(&app, &token).await;
    assert_eq!(report["ok"], false);
    assert_eq!(report["first_bad_seq"], a);
    assert!(
        report["reason"].as_str().unwrap().contains("order"),
        "{report}"
    );
}

#[tokio::test]
async fn a_recomputed_chain_without_the_keystore_key_is_caught() {
    let (app, token) = app_with_history().await;
    // Re-hashing needs the chain algorithm only; the MAC needs the keystore.
    // Zeroing one MAC stands for any forgery made without the key.
    let zeros = open_db(&app).await.bytes_literal(&[0; 32]);
    tamper(
        &app,
        &[&format!("UPDATE audit_log SET mac = {zeros} WHERE seq = 3")],
    )
    .await;
    let report = verify(&app, &token).await;
    assert_eq!(report["first_bad_seq"], 3);
    assert!(
        report["reason"].as_str().unwrap().contains("MAC"),
        "{report}"
    );
}

#[tokio::test]
async fn the_log_filters_by_user_text_and_time_and_pages() {
    let (app, token) = app_with_history().await;
    let (_, all) = app.get("/api/v1/audit?limit=1000", &token).await;
    let all = all.as_array().unwrap().clone();
    assert!(
        all.windows(2)
            .all(|w| w[0]["seq"].as_i64() > w[1]["seq"].as_i64()),
        "newest first"
    );
    let first = &all[all.len() - 1];
    for field in [
        "seq",
        "date",
        "users",
        "summary",
        "has_details",
        "details",
        "archived",
    ] {
        assert!(first.get(field).is_some(), "{field}");
    }

    let (_, system) = app.get("/api/v1/audit?user=System", &token).await;
    assert_eq!(
        system.as_array().unwrap().len(),
        2,
        "the default administrators were added by System"
    );
    let (_, admin2) = app.get("/api/v1/audit?user=Admin2", &token).await;
    assert!(admin2.as_array().unwrap().iter().all(|e| {
        e["users"]
            .as_str()
            .unwrap()
            .split(',')
            .any(|u| u == "Admin2")
    }));
    let (_, text) = app.get("/api/v1/audit?text=ig-TWO", &token).await;
    assert_eq!(
        text.as_array().unwrap().len(),
        1,
        "text search ignores case"
    );
    assert_eq!(text[0]["has_details"], true);
    assert_eq!(text[0]["details"]["alias"], "alias/ig-two");

    app.clock.advance(chrono::Duration::hours(1));
    // Adding a credential needs two: both log in again.
    let token = app.dual_session_again().await;
    app.import_credential(&token, "later").await;
    let (_, recent) = app
        .get("/api/v1/audit?from=2026-11-29T09:30:00Z", &token)
        .await;
    assert_eq!(
        recent.as_array().unwrap().len(),
        3,
        "the two new logins and the credential: {recent:#}"
    );
    let (_, early) = app
        .get("/api/v1/audit?to=2026-11-29T09:30:00Z&limit=1000", &token)
        .await;
    assert_eq!(early.as_array().unwrap().len(), all.len());

    let (_, page1) = app.get("/api/v1/audit?limit=3", &token).await;
    let last = page1[2]["seq"].as_i64().unwrap();
    let (_, page2) = app
        .get(&format!("/api/v1/audit?limit=3&before_seq={last}"), &token)
        .await;
    assert_eq!(page2[0]["seq"].as_i64().unwrap(), last - 1);

    let (status, body) = app.get("/api/v1/audit?from=yesterday", &token).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "from");
    let (status, _) = app.get("/api/v1/audit?limit=0", &token).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn export_writes_every_entry_as_json_lines() {
    let (app, token) = app_with_history().await;
    let response = app
        .http
        .get(format!("{}/api/v1/audit/export", app.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let text = response.text().await.unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let seqs: Vec<i64> = lines.iter().map(|l| l["seq"].as_i64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as i64).collect::<Vec<_>>(),
        "oldest first, none missing"
    );
    assert!(
        lines.last().unwrap()["summary"]
            .as_str()
            .unwrap()
            .contains("Exported the audit log")
    );
    for pair in lines.windows(2) {
        assert_eq!(
            pair[1]["prev_hash"], pair[0]["hash"],
            "the export carries the chain"
        );
    }
}
