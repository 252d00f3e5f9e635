//! What the rotator does on its own, on the test's clock: scheduled backups
//! (started by System, kept to `backup_keep`, a manual backup never
//! removed), how the last one ended on `/readyz`, `/metrics` and the
//! Configuration screen, and the daily audit archiving. Every outcome is
//! read back from the API, the backup directory and the archive directory.
//!
//! Advancing the clock by hours ends the administrators' session (idle
//! timeout): each advance is followed by `dual_session_again`.

use std::collections::BTreeSet;
use std::path::Path;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;

/// Two custodians with key pairs (no passphrase to derive): any backup's
/// key is split between them.
async fn set_custodians(app: &TestApp, admins: &str) {
    let custodians: Vec<Value> = ["ann", "bob"]
        .iter()
        .map(|name| {
            let (_, public) = keyhold_backup::generate_custodian_key().unwrap();
            json!({"name": name, "public_key": public})
        })
        .collect();
    let (status, body) = app
        .request(
            Method::PUT,
            "/api/v1/backups/custodians",
            Some(admins),
            Some(json!({"threshold": 2, "custodians": custodians})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Every backup record, newest first.
async fn backups(app: &TestApp, token: &str) -> Vec<Value> {
    let (status, body) = app.get("/api/v1/backups?limit=100", token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body.as_array().unwrap().clone()
}

/// The scheduled backups, newest first, once none is running.
async fn settled_scheduled(app: &TestApp, token: &str, count: usize) -> Vec<Value> {
    app.eventually(&format!("{count} scheduled backup(s) made"), || async {
        let all = backups(app, token).await;
        if all.iter().any(|b| b["status"] == "running") {
            return None;
        }
        let scheduled: Vec<Value> = all
            .into_iter()
            .filter(|b| b["trigger"] == "scheduled")
            .collect();
        (scheduled.len() == count).then_some(scheduled)
    })
    .await
}

/// The names of the files in `dir` (none when it does not exist).
fn files_in(dir: &Path) -> BTreeSet<String> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
        Err(e) => panic!("cannot read {}: {e}", dir.display()),
    }
}

/// A manual backup by `admins`, once it has succeeded.
async fn manual_backup(app: &TestApp, admins: &str) -> Value {
    let (status, started) = app.post("/api/v1/backups", Some(admins), json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let id = started["id"].as_str().unwrap().to_owned();
    let backup = app
        .eventually("the manual backup to finish", || async {
            let (status, backup) = app.get(&format!("/api/v1/backups/{id}"), admins).await;
            assert_eq!(status, StatusCode::OK, "{backup}");
            (backup["status"] != "running").then_some(backup)
        })
        .await;
    assert_eq!(backup["status"], "succeeded", "{backup:#}");
    backup
}

/// The value of the `/metrics` sample `name` (no labels).
fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {name} in\n{metrics}"))
        .trim()
        .parse()
        .unwrap()
}

fn timestamp(text: &Value) -> i64 {
    keyhold_core::clock::parse_timestamp(text.as_str().unwrap())
        .unwrap_or_else(|| panic!("{text} is not a time"))
        .timestamp()
}

#[tokio::test]
async fn scheduled_backups_are_made_and_kept_to_their_number_and_a_manual_one_stays() {
    let app = TestApp::spawn().await;
    let admins = app.dual_session().await;
    let backup_dir = app.data_dir.join("backups");

    // A schedule without custodians would make backups nobody can open:
    // refused, and the configuration is as it was.
    // The settings, without the cluster's live figures (pass durations).
    let settings = |mut config: Value| {
        config.as_object_mut().unwrap().remove("cluster");
        config
    };
    let (_, before) = app.get("/api/v1/config", &admins).await;
    let (status, body) = app
        .patch(
            "/api/v1/config",
            &admins,
            json!({"backup_every_hours": 24, "backup_keep": 2}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.to_string().contains("custodians"), "{body}");
    let (_, after) = app.get("/api/v1/config", &admins).await;
    assert_eq!(settings(after.clone()), settings(before));
    assert_eq!(after["backup_every_hours"], 0, "{after:#}");

    set_custodians(&app, &admins).await;
    let (status, config) = app
        .patch(
            "/api/v1/config",
            &admins,
            json!({"backup_every_hours": 24, "backup_keep": 2}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{config}");
    let (_, config) = app.get("/api/v1/config", &admins).await;
    assert_eq!(config["backup_every_hours"], 24, "{config:#}");
    assert_eq!(config["backup_keep"], 2, "{config:#}");

    // A manual backup first: the schedule counts from it, and retention
    // never removes it.
    let manual = manual_backup(&app, &admins).await;
    assert_eq!(manual["trigger"], "manual");

    // A minute on: the manual backup is recent, nothing is due.
    app.clock.advance(chrono::Duration::minutes(2));
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let admins = app.dual_session_again().await;
    assert_eq!(backups(&app, &admins).await.len(), 1);

    // Three days, a backup each.
    let mut admins = admins;
    for day in 1..=3 {
        app.clock.advance(chrono::Duration::hours(24));
        admins = app.dual_session_again().await;
        let scheduled = settled_scheduled(&app, &admins, day).await;
        let newest = &scheduled[0];
        assert_eq!(newest["status"], "succeeded", "day {day}: {newest:#}");
        assert_eq!(newest["initiated_by"], "System", "{newest:#}");
        assert_eq!(newest["trigger"], "scheduled", "{newest:#}");
        assert!(
            backup_dir.join(newest["file"].as_str().unwrap()).is_file(),
            "day {day}: {newest:#}"
        );
    }
    let all = backups(&app, &admins).await;
    assert_eq!(all.len(), 4, "{all:#?}");
    let oldest_scheduled = all[2].clone();
    assert_eq!(oldest_scheduled["trigger"], "scheduled");

    // Retention runs at the next pass: the oldest scheduled backup goes,
    // file and record; the two newest and the manual one stay.
    app.clock.advance(chrono::Duration::minutes(1));
    let admins = app.dual_session_again().await;
    let kept = settled_scheduled(&app, &admins, 2).await;
    assert_eq!(kept[0]["id"], all[0]["id"]);
    assert_eq!(kept[1]["id"], all[1]["id"]);
    let remaining = backups(&app, &admins).await;
    assert_eq!(remaining.len(), 3, "{remaining:#?}");
    assert!(
        remaining.iter().any(|b| b["id"] == manual["id"]),
        "{remaining:#?}"
    );
    let (status, gone) = app
        .get(
            &format!(
                "/api/v1/backups/{}",
                oldest_scheduled["id"].as_str().unwrap()
            ),
            &admins,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{gone}");
    let expected: BTreeSet<String> = remaining
        .iter()
        .map(|b| b["file"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(files_in(&backup_dir), expected, "the backup directory");
    // The retention left its mark in the audit log.
    let summaries = app.audit_summaries(&admins).await;
    let removal = format!(
        "System | Removed backup {} (retention)",
        oldest_scheduled["id"].as_str().unwrap()
    );
    assert!(summaries.contains(&removal), "{summaries:#?}");

    // How the last one ended, for monitoring.
    let (status, ready) = app.readyz().await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert_eq!(ready["backup"]["last_status"], "succeeded", "{ready:#}");
    assert_eq!(
        timestamp(&ready["backup"]["last_success_at"]),
        timestamp(&kept[0]["finished_at"]),
        "{ready:#}"
    );
    let metrics = app.metrics().await;
    let success = sample(&metrics, "keyhold_backup_last_success_timestamp_seconds");
    assert!(success > 0.0, "{metrics}");
    assert_eq!(success as i64, timestamp(&kept[0]["finished_at"]));
    assert_eq!(
        sample(&metrics, "keyhold_backup_last_failed"),
        0.0,
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "keyhold_backups_running"),
        0.0,
        "{metrics}"
    );
}

#[tokio::test]
async fn audit_entries_are_archived_daily_once_old_enough() {
    let app = TestApp::spawn().await;
    let admins = app.dual_session().await;
    let (status, body) = app
        .patch(
            "/api/v1/config",
            &admins,
            json!({"audit_archive_after_days": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, archives) = app.get("/api/v1/audit/archives", &admins).await;
    assert_eq!(archives, json!([]), "nothing is a day old yet");
    let (_, entries) = app.get("/api/v1/audit?limit=1000", &admins).await;
    let before = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .max()
        .unwrap();

    // Two days on: everything written before is older than a day.
    app.clock.advance(chrono::Duration::days(2));
    let admins = app.dual_session_again().await;
    let archives = app
        .eventually("the daily archive", || async {
            let (status, archives) = app.get("/api/v1/audit/archives", &admins).await;
            assert_eq!(status, StatusCode::OK, "{archives}");
            (!archives.as_array().unwrap().is_empty()).then_some(archives)
        })
        .await;
    let first = &archives[0];
    assert_eq!(first["first_seq"], 1, "{archives:#}");
    let last_seq = first["last_seq"].as_i64().unwrap();
    assert!(
        last_seq >= before,
        "{archives:#} (entries before: {before})"
    );
    let archive_dir = app.data_dir.join("audit-archive");
    let file = archive_dir.join(first["file"].as_str().unwrap());
    assert_eq!(
        sha256_hex(&std::fs::read(&file).unwrap()),
        first["sha256"].as_str().unwrap(),
        "the archive file is the one recorded"
    );
    assert_archived_up_to(&app, &admins, last_seq).await;
    let (_, verify) = app.get("/api/v1/audit/verify", &admins).await;
    assert_eq!(verify["ok"], true, "{verify:#}");

    // The next day's archive starts where the first ended (the logins
    // since are a day old by then).
    app.clock
        .advance(chrono::Duration::days(1) + chrono::Duration::minutes(1));
    let admins = app.dual_session_again().await;
    let archives = app
        .eventually("the next day's archive", || async {
            let (_, archives) = app.get("/api/v1/audit/archives", &admins).await;
            (archives.as_array().unwrap().len() == 2).then_some(archives)
        })
        .await;
    assert_eq!(archives[1]["first_seq"], last_seq + 1, "{archives:#}");
    let last_seq = archives[1]["last_seq"].as_i64().unwrap();
    assert_archived_up_to(&app, &admins, last_seq).await;
    assert_eq!(
        files_in(&archive_dir),
        archives
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["file"].as_str().unwrap().to_owned())
            .collect::<BTreeSet<_>>()
    );
    let (_, verify) = app.get("/api/v1/audit/verify", &admins).await;
    assert_eq!(verify["ok"], true, "{verify:#}");
}

/// Entries up to `last_seq` are marked archived in the live log (which
/// keeps them), and none after.
async fn assert_archived_up_to(app: &TestApp, token: &str, last_seq: i64) {
    let (_, entries) = app.get("/api/v1/audit?limit=1000", token).await;
    let entries = entries.as_array().unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e["seq"].as_i64().unwrap() > last_seq),
        "the newest entries are not archived yet"
    );
    for entry in entries {
        let seq = entry["seq"].as_i64().unwrap();
        assert_eq!(
            entry["archived"],
            seq <= last_seq,
            "entry {seq} (archived up to {last_seq}): {entry:#}"
        );
    }
    assert_eq!(
        entries.iter().filter(|e| e["archived"] == true).count() as i64,
        last_seq,
        "the log keeps the archived entries"
    );
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[tokio::test]
async fn the_configuration_screen_tells_how_the_last_backup_ended() {
    let app = TestApp::spawn().await;
    let admins = app.dual_session().await;
    set_custodians(&app, &admins).await;
    let backup = manual_backup(&app, &admins).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let cookie = crate::ui::ui_session_cookie(&http, &app, "Admin1", ADMIN1_PASSWORD).await;
    let page = http
        .get(format!("{}/ui/configuration", app.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("Last backup: succeeded"), "{html}");
    assert_eq!(backup["status"], "succeeded");

    // The Audit Logs screen tells the archives' check beside the chain's.
    let (status, body) = app
        .post(
            "/api/v1/audit/archives",
            Some(&admins),
            serde_json::json!({"up_to_seq": 4}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let page = http
        .get(format!("{}/ui/audit", app.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(r#"id="audit-archives" data-ok="true""#)
            && page.contains("1 signed archive(s) hold entries 1 to 4"),
        "{page}"
    );
}

/// Puts a file where the backup directory is, so the next backup cannot
/// create its file there (the tests run as root: permissions would not
/// stop it); [`unblock`] puts the directory back.
fn block(dir: &Path) {
    std::fs::rename(dir, dir.with_extension("away")).unwrap();
    std::fs::write(dir, b"not a directory").unwrap();
}

fn unblock(dir: &Path) {
    std::fs::remove_file(dir).unwrap();
    std::fs::rename(dir.with_extension("away"), dir).unwrap();
}

/// A scheduled backup that fails is told to monitoring, tried again after
/// an hour, and never makes retention remove a backup that succeeded:
/// `backup_keep` counts backups that can be restored.
#[tokio::test]
async fn a_failed_scheduled_backup_is_retried_and_never_displaces_a_good_one() {
    let app = TestApp::spawn().await;
    let admins = app.dual_session().await;
    let backup_dir = app.data_dir.join("backups");
    set_custodians(&app, &admins).await;
    let (status, body) = app
        .patch(
            "/api/v1/config",
            &admins,
            json!({"backup_every_hours": 24, "backup_keep": 2}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Two good ones: at the next pass (none made yet), and a day later.
    app.clock.advance(chrono::Duration::minutes(1));
    let admins = app.dual_session_again().await;
    settled_scheduled(&app, &admins, 1).await;
    app.clock.advance(chrono::Duration::hours(24));
    let admins = app.dual_session_again().await;
    let good = settled_scheduled(&app, &admins, 2).await;
    assert!(good.iter().all(|b| b["status"] == "succeeded"), "{good:#?}");

    // The third cannot write its file.
    block(&backup_dir);
    app.clock.advance(chrono::Duration::hours(24));
    let admins = app.dual_session_again().await;
    let third = settled_scheduled(&app, &admins, 3).await;
    let failed = &third[0];
    assert_eq!(failed["status"], "failed", "{failed:#}");
    assert!(
        failed["error"].as_str().unwrap().contains("cannot create"),
        "{failed:#}"
    );
    let (_, ready) = app.readyz().await;
    assert_eq!(ready["backup"]["last_status"], "failed", "{ready:#}");
    assert_eq!(
        timestamp(&ready["backup"]["last_success_at"]),
        timestamp(&good[0]["finished_at"]),
        "{ready:#}"
    );
    assert_eq!(
        sample(&app.metrics().await, "keyhold_backup_last_failed"),
        1.0
    );
    unblock(&backup_dir);

    // The next pass, within the hour: no retry yet, and retention keeps
    // both good backups (the failed one has nothing to restore).
    app.clock.advance(chrono::Duration::minutes(1));
    let admins = app.dual_session_again().await;
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let all = backups(&app, &admins).await;
    assert_eq!(all.len(), 3, "{all:#?}");
    let files: BTreeSet<String> = good
        .iter()
        .map(|b| b["file"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(files_in(&backup_dir), files, "the good backups' files");

    // An hour after the failure: tried again, and it succeeds; then the
    // oldest good one goes (the failed record, newer, stays as history).
    app.clock.advance(chrono::Duration::hours(1));
    let admins = app.dual_session_again().await;
    let retried = app
        .eventually("the retry", || async {
            let all = backups(&app, &admins).await;
            (all.len() == 4 && all[0]["status"] != "running").then_some(all)
        })
        .await;
    assert_eq!(retried[0]["status"], "succeeded", "{retried:#?}");
    assert_eq!(retried[0]["initiated_by"], "System");
    assert_eq!(
        sample(&app.metrics().await, "keyhold_backup_last_failed"),
        0.0
    );
    app.clock.advance(chrono::Duration::minutes(1));
    let admins = app.dual_session_again().await;
    let kept = app
        .eventually("retention after the retry", || async {
            let all = backups(&app, &admins).await;
            (all.iter().filter(|b| b["status"] == "succeeded").count() == 2).then_some(all)
        })
        .await;
    let ids = |list: &[Value]| -> BTreeSet<String> {
        list.iter()
            .map(|b| b["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        ids(&kept),
        ids(&[retried[0].clone(), failed.clone(), good[0].clone()]),
        "{kept:#?}"
    );
    assert_eq!(
        files_in(&backup_dir),
        BTreeSet::from([
            retried[0]["file"].as_str().unwrap().to_owned(),
            good[0]["file"].as_str().unwrap().to_owned(),
        ])
    );
}
