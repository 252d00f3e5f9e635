//! The audit log: filters, export, and verification that catches an edited,
//! a deleted and a swapped row written straight into the database, and,
//! against signed checkpoints, a log cut short, emptied or replaced; offline
//! with the public key alone (`keyhold audit verify --export`).

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
    let mut lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let closing = lines.pop().unwrap();
    assert_eq!(
        closing["checkpoint"]["seq"],
        lines.last().unwrap()["seq"],
        "the closing checkpoint covers the last entry: {closing}"
    );
    assert_eq!(closing["checkpoint"]["hash"], lines.last().unwrap()["hash"]);
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

/// Signs a checkpoint now (`POST /audit/checkpoints`).
async fn checkpoint(app: &TestApp, token: &str) -> serde_json::Value {
    let (status, checkpoint) = app
        .post("/api/v1/audit/checkpoints", Some(token), json!({}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{checkpoint}");
    checkpoint
}

/// The lines of the server's checkpoint file.
pub fn checkpoint_file(app: &TestApp) -> Vec<serde_json::Value> {
    std::fs::read_to_string(app.data_dir.join("audit-checkpoints.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn a_log_cut_short_or_emptied_fails_against_the_newest_checkpoint() {
    let (app, token) = app_with_history().await;
    let signed = checkpoint(&app, &token).await;
    let at = signed["seq"].as_i64().unwrap();
    assert!(at >= 9, "{signed}");
    assert!(
        checkpoint_file(&app).contains(&signed),
        "appended to the file outside the database"
    );
    assert_eq!(verify(&app, &token).await["checkpoint_seq"], at);

    // The tail cut off: what is left is an intact chain, short of the checkpoint.
    tamper(
        &app,
        &[&format!("DELETE FROM audit_log WHERE seq > {}", at - 3)],
    )
    .await;
    let report = verify(&app, &token).await;
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(report["first_bad_seq"], at - 2);
    assert!(
        report["reason"]
            .as_str()
            .unwrap()
            .contains("cut from its end"),
        "{report}"
    );
    // No checkpoint is signed over the cut log.
    let (status, refused) = app
        .post("/api/v1/audit/checkpoints", Some(&token), json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert_eq!(checkpoint_file(&app).last(), Some(&signed));

    // Cut to its first entry, then emptied.
    tamper(&app, &["DELETE FROM audit_log WHERE seq > 1"]).await;
    let report = verify(&app, &token).await;
    assert_eq!(
        (report["ok"].clone(), report["first_bad_seq"].clone()),
        (json!(false), json!(2))
    );
    tamper(&app, &["DELETE FROM audit_log"]).await;
    let report = verify(&app, &token).await;
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(report["entries_checked"], 0);
    assert!(
        report["reason"].as_str().unwrap().contains("no entries"),
        "{report}"
    );
    crate::report::section(
        25,
        "Audit log: cut short, emptied, rewritten",
        &format!(
            "With a checkpoint signed at entry {at}, written to the checkpoint file: the log cut \
             back by three entries, cut to its first entry, and emptied (straight in the \
             database, its guard dropped) each failed `audit verify`, naming the first missing \
             entry (\"cut from its end\", \"no entries\"); the server refused to sign a checkpoint \
             of the cut log (409). A cut made while the server was stopped, with the checkpoint \
             file removed, passed the server's own check after restart and failed against the \
             checkpoint the auditor kept (POST /audit/verify). An export checked offline with the \
             public key alone passed, and failed with an entry edited, the last entry dropped, \
             the closing line dropped, or another key."
        ),
    );
}

#[tokio::test]
async fn a_checkpoint_kept_elsewhere_catches_a_cut_the_server_no_longer_knows() {
    let (app, token) = app_with_history().await;
    let kept = checkpoint(&app, &token).await;
    let at = kept["seq"].as_i64().unwrap();

    // Someone with the data directory cuts the log, removes the checkpoint
    // file, and restarts the server: it has nothing left to compare with.
    let mut app = app;
    app.shut_down().await;
    tamper(
        &app,
        &[&format!("DELETE FROM audit_log WHERE seq > {}", at - 2)],
    )
    .await;
    std::fs::remove_file(app.data_dir.join("audit-checkpoints.jsonl")).unwrap();
    let app = app.restart().await;
    let token = app.dual_session_again().await;

    // The server signed the cut log at its start, and the logins since grew
    // it back past the cut: only the auditor's own copy still catches it.
    assert_eq!(verify(&app, &token).await["ok"], true);
    let (status, report) = app
        .post(
            "/api/v1/audit/verify",
            Some(&token),
            json!({"checkpoints": [kept]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(report["first_bad_seq"], at, "{report}");
    assert!(
        report["reason"].as_str().unwrap().contains("rewritten"),
        "{report}"
    );

    // An altered checkpoint is refused as such, and garbage is a 400.
    let mut altered = kept.clone();
    altered["seq"] = json!(at - 3);
    let (_, report) = app
        .post(
            "/api/v1/audit/verify",
            Some(&token),
            json!({"checkpoints": [altered]}),
        )
        .await;
    assert_eq!(report["ok"], false);
    assert!(
        report["reason"]
            .as_str()
            .unwrap()
            .contains("altered or forged"),
        "{report}"
    );
    let (status, body) = app
        .post(
            "/api/v1/audit/verify",
            Some(&token),
            json!({"checkpoints": [{"seq": 1}]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "checkpoints");
}

#[tokio::test]
async fn an_export_verifies_offline_with_the_public_key_alone() {
    let (app, token) = app_with_history().await;
    let kept = checkpoint(&app, &token).await;
    let dir = tempfile::tempdir().unwrap();
    let (status, key) = app.get("/api/v1/audit/public-key", &token).await;
    assert_eq!(status, StatusCode::OK, "{key}");
    assert_eq!(key["fingerprint"], kept["key"]);
    let key_file = dir.path().join("audit-key.pem");
    std::fs::write(&key_file, key["pem"].as_str().unwrap()).unwrap();
    let kept_file = dir.path().join("kept.jsonl");
    std::fs::write(&kept_file, format!("{kept}\n")).unwrap();
    let export = app
        .http
        .get(format!("{}/api/v1/audit/export", app.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<&str> = export.lines().collect();

    // No server, no session, no MAC key: the file, the key, the kept checkpoint.
    let offline = |name: &str, content: &str| {
        let file = dir.path().join(name);
        std::fs::write(&file, content).unwrap();
        keyhold_cli(
            "http://127.0.0.1:9",
            &dir.path().join("no-session"),
            &[
                "audit",
                "verify",
                "--export",
                file.to_str().unwrap(),
                "--public-key",
                key_file.to_str().unwrap(),
                "--checkpoint",
                kept_file.to_str().unwrap(),
            ],
            b"",
        )
    };
    let out = offline("export.jsonl", &export);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("intact"), "{stdout}");
    assert!(
        stdout.contains(&format!("checkpoint of entry {}", kept["seq"])),
        "{stdout}"
    );

    let broken = |out: std::process::Output| {
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let joined = |lines: &[&str]| lines.iter().map(|l| format!("{l}\n")).collect::<String>();
    // An entry edited in the file.
    let edited = export.replacen(
        "Added HSM protected key group ig-two",
        "Added HSM protected key group ig-twin",
        1,
    );
    assert!(broken(offline("edited.jsonl", &edited)).contains("edited"));
    // The last entries dropped, the closing line kept.
    let mut cut = lines.clone();
    cut.remove(cut.len() - 2);
    assert!(
        broken(offline("cut.jsonl", &joined(&cut))).contains("closing checkpoint covers entry")
    );
    // The closing line dropped.
    let unsigned = joined(&lines[..lines.len() - 1]);
    assert!(broken(offline("unsigned.jsonl", &unsigned)).contains("no closing line"));

    // Another key (another installation's, an attacker's) does not verify it.
    use keyhold_core::audit::AuditSigner;
    let other = keyhold_core::audit::SoftwareSigningKey::generate().unwrap();
    std::fs::write(&key_file, other.audit_public_key().unwrap().to_pem()).unwrap();
    assert!(broken(offline("export.jsonl", &export)).contains("another key"));

    // Bad input is named, and changes nothing.
    std::fs::write(&key_file, "not a key").unwrap();
    let out = offline("export.jsonl", &export);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("BEGIN PUBLIC KEY"));
}

#[tokio::test]
async fn checkpoints_are_written_on_schedule_and_only_for_a_session() {
    let app = TestApp::spawn_with(|args| args.audit.audit_checkpoint_seconds = Some(1)).await;
    let token = app.dual_session().await;
    app.import_credential(&token, "aws-prod").await;
    let (_, newest) = app.get("/api/v1/audit?limit=1", &token).await;
    let head = newest[0]["seq"].clone();
    // The schedule catches up with the log by itself.
    app.eventually("a scheduled checkpoint of the head", || async {
        checkpoint_file(&app)
            .iter()
            .any(|c| c["seq"] == head)
            .then_some(())
    })
    .await;

    // Without a session: nothing.
    let (status, _) = app.post("/api/v1/audit/checkpoints", None, json!({})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let response = app
        .http
        .get(format!("{}/api/v1/audit/public-key", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}
