//! The Backups screen in a real browser: keyboard, axe.
//!
//! Officers set the custodians in the UI (two who give passphrases, one
//! who gives the public key of a key made on their own machine), and the
//! page never shows a passphrase again, not even when the form is refused.
//! One officer alone is refused *Back up now*; two make a backup, which
//! the API reads back as succeeded with every key; its shares page has one
//! share per custodian, whose downloads two custodians open and combine
//! into the key that opens the downloaded file. Under a quorum policy of
//! class `create_backup`, *Back up now* becomes an approval request. Every
//! screen passes axe-core at 1280 and 800 px.

use std::io::Cursor;

use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::ui::check_page;
use crate::ui_steps::{check_both_widths, log_in_alone, log_in_both, press_enter_on};
use crate::webdriver::Browser;

const ANNE_PASSPHRASE: &str = "anne-Tr0ub4dor&3-horse-staple";
const BOB_PASSPHRASE: &str = "bob-plaid-umbrella-47-lantern";

/// Fills custodian row `index` of the form.
async fn fill_row(
    browser: &Browser,
    index: usize,
    name: &str,
    key: &str,
    passphrase: (&str, &str),
) {
    let field = |what: &str| format!("#custodian-{index}-{what}");
    browser.fill(&field("name"), name).await;
    browser.fill(&field("public-key"), key).await;
    browser.fill(&field("passphrase"), passphrase.0).await;
    browser.fill(&field("confirm"), passphrase.1).await;
}

/// The page's HTML holds none of the passphrases typed.
async fn assert_no_passphrase(browser: &Browser, when: &str) {
    let source = browser.source().await;
    for secret in [ANNE_PASSPHRASE, BOB_PASSPHRASE, "anne-typo"] {
        assert!(
            !source.contains(secret),
            "{when}: the page shows a passphrase"
        );
    }
    // And no field holds one either (a browser keeps values it was not sent).
    let values = browser
        .execute(
            "return Array.from(document.querySelectorAll('input[type=password]')).map(i => i.value).join('');",
            json!([]),
        )
        .await;
    assert_eq!(values, "", "{when}: a passphrase field still holds text");
}

/// Every key the server holds, as the API lists them.
async fn key_count(app: &TestApp, token: &str) -> u64 {
    let (status, keys) = app.get("/api/v1/keys?limit=1000", token).await;
    assert_eq!(status, StatusCode::OK, "{keys}");
    keys.as_array().unwrap().len() as u64
}

async fn backups(app: &TestApp, token: &str) -> Vec<Value> {
    let (status, list) = app.get("/api/v1/backups", token).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    list.as_array().unwrap().clone()
}

/// What the browser gets from a download link: status, headers, size and
/// the SHA-256 of the bytes, and (for text) the text.
async fn fetch_in_browser(browser: &Browser, href: &str) -> Value {
    browser
        .execute_async(
            r#"
            const done = arguments[arguments.length - 1];
            fetch(arguments[0], { credentials: 'same-origin' }).then(async r => {
                const bytes = await r.arrayBuffer();
                const digest = await crypto.subtle.digest('SHA-256', bytes);
                done({
                    status: r.status,
                    type: r.headers.get('content-type'),
                    disposition: r.headers.get('content-disposition'),
                    size: bytes.byteLength,
                    sha256: Array.from(new Uint8Array(digest)).map(b => b.toString(16).padStart(2, '0')).join(''),
                    text: new TextDecoder().decode(bytes),
                });
            }).catch(e => done({ error: String(e) }));
            "#,
            json!([href]),
        )
        .await
}

#[tokio::test]
async fn officers_set_custodians_and_make_a_backup_from_the_keyboard() {
    let app = TestApp::spawn().await;
    let token = app.dual_session().await;
    app.import_kms_credential(&token, "aws").await;
    for prefix in ["ui-backup-a", "ui-backup-b"] {
        let group = unique(prefix);
        let (status, body) = app.create_group(&token, group_body(&group, "aws")).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        app.rotate_ok(&token, &group).await;
    }
    let keys_made = key_count(&app, &token).await;
    assert!(keys_made >= 2, "{keys_made}");
    let (carol_secret, carol_public) = keyhold_backup::generate_custodian_key().unwrap();

    let browser = Browser::start("backups").await;
    log_in_both(&app, &browser).await;

    // ---- the screen before anything: no custodians, no backups ----
    browser.click("nav.side a[href='/ui/backups']").await;
    browser.find("#backups-table").await;
    assert!(browser.exists("#no-custodians").await);
    assert_eq!(
        browser.text("#backups-table tbody").await.trim(),
        "No backups yet."
    );
    assert!(browser.exists("#no-archives").await);
    check_both_widths(&browser, "01-backups-nothing-yet").await;

    // ---- a refused form keeps names and keys, never the passphrases ----
    browser.fill("#custodians-threshold", "2").await;
    fill_row(&browser, 0, "anne", "", (ANNE_PASSPHRASE, "anne-typo")).await;
    fill_row(&browser, 1, "bob", "", (BOB_PASSPHRASE, BOB_PASSPHRASE)).await;
    fill_row(&browser, 2, "carol", &carol_public, ("", "")).await;
    press_enter_on(&browser, "#save-custodians").await;
    let refusal = browser.wait_text("main .notice.error", "differ", 10).await;
    assert!(refusal.contains("'anne'"), "{refusal}");
    assert!(browser.exists("#passphrases-again").await);
    assert_eq!(
        browser
            .attribute("#custodian-2-public-key", "value")
            .await
            .as_deref(),
        Some(carol_public.as_str())
    );
    assert_eq!(
        browser
            .attribute("#custodian-1-name", "value")
            .await
            .as_deref(),
        Some("bob")
    );
    assert_no_passphrase(&browser, "refused custodians").await;
    let (_, none) = app.get("/api/v1/backups/custodians", &token).await;
    assert_eq!(none["threshold"], 0, "{none}");
    check_both_widths(&browser, "02-custodians-refused").await;
    browser
        .execute(
            "document.querySelector('#custodians-form').scrollIntoView();",
            json!([]),
        )
        .await;
    browser.screenshot("02-custodians-form").await;

    // ---- the set saved: two passphrases and a public key ----
    fill_row(&browser, 0, "anne", "", (ANNE_PASSPHRASE, ANNE_PASSPHRASE)).await;
    fill_row(&browser, 1, "bob", "", (BOB_PASSPHRASE, BOB_PASSPHRASE)).await;
    press_enter_on(&browser, "#save-custodians").await;
    browser
        .wait_text("main .notice", "Custodians saved", 30)
        .await;
    assert_no_passphrase(&browser, "custodians saved").await;
    let (status, set) = app.get("/api/v1/backups/custodians", &token).await;
    assert_eq!(status, StatusCode::OK, "{set}");
    assert_eq!(set["threshold"], 2, "{set}");
    let custodians = set["custodians"].as_array().unwrap();
    let summary: Vec<(&str, bool)> = custodians
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap(),
                c["passphrase"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [("anne", true), ("bob", true), ("carol", false)],
        "{set}"
    );
    assert_eq!(custodians[2]["public_key"], carol_public.as_str());
    let table = browser.text("#custodians-table").await;
    assert!(
        table.contains("From a passphrase") && table.contains(&carol_public),
        "{table}"
    );
    assert!(!browser.exists("#no-custodians").await);
    check_both_widths(&browser, "03-custodians-set").await;

    // The form shows the set in force: saved again unchanged, the
    // passphrase custodians keep their keys' salts, so nothing changes.
    press_enter_on(&browser, "#save-custodians").await;
    browser
        .wait_text("main .notice.error", "nothing to change", 30)
        .await;
    let (_, again) = app.get("/api/v1/backups/custodians", &token).await;
    assert_eq!(again, set, "saving unchanged changed the custodians");

    // ---- one officer alone is told it needs a second, and refused ----
    let alone = Browser::start("backups-alone").await;
    log_in_alone(&app, &alone, "Admin1", ADMIN1_PASSWORD).await;
    alone.goto(&format!("{}/ui/backups", app.base)).await;
    let note = alone.text("#backups p[data-dual-control='required']").await;
    assert!(note.contains("Needs two identities"), "{note}");
    press_enter_on(&alone, "#backup-now").await;
    let refusal = alone
        .wait_text("main .notice.error", "dual control", 10)
        .await;
    assert!(refusal.contains("needs dual control"), "{refusal}");
    check_page(&alone, "04-alone-refused").await;
    alone.quit().await;
    assert!(backups(&app, &token).await.is_empty());

    // ---- two officers back up now, from the keyboard ----
    press_enter_on(&browser, "#backup-now").await;
    browser
        .wait_text("main .notice", "Started backup", 10)
        .await;
    let backup = app
        .eventually("the backup finishes", || async {
            let list = backups(&app, &token).await;
            let first = list.first()?;
            (first["status"] != "running").then(|| first.clone())
        })
        .await;
    assert_eq!(backup["status"], "succeeded", "{backup}");
    assert_eq!(backup["keys"], keys_made, "{backup}");
    assert_eq!(backup["threshold"], 2, "{backup}");
    assert_eq!(backup["custodians"], json!(["anne", "bob", "carol"]));
    assert_eq!(
        backup["initiated_by"].as_str().unwrap(),
        "Admin1,Admin2",
        "{backup}"
    );
    let id = backup["id"].as_str().unwrap().to_owned();
    let sha256 = backup["sha256"].as_str().unwrap().to_owned();

    browser.goto(&format!("{}/ui/backups", app.base)).await;
    let row = format!("#backups-table tr[data-backup='{id}']");
    let shown = browser.text(&row).await;
    for expected in [
        "succeeded",
        "Admin1, Admin2",
        "2 of 3",
        "anne, bob, carol",
        backup["file"].as_str().unwrap(),
        &sha256,
    ] {
        assert!(shown.contains(expected), "{expected} not in {shown}");
    }
    assert_eq!(
        browser.text(&format!("{row} td.keys")).await.trim(),
        keys_made.to_string()
    );
    check_both_widths(&browser, "05-backup-succeeded").await;

    // ---- the file downloads as the API describes it ----
    let download = browser
        .attribute(&format!("{row} a.download"), "href")
        .await
        .unwrap();
    let file = fetch_in_browser(&browser, &download).await;
    assert_eq!(file["status"], 200, "{}", file["text"]);
    assert_eq!(file["type"], "application/octet-stream");
    assert_eq!(file["size"], backup["size"], "{backup}");
    assert_eq!(file["sha256"], sha256.as_str());
    assert_eq!(
        file["disposition"],
        format!(
            "attachment; filename=\"{}\"",
            backup["file"].as_str().unwrap()
        )
    );

    // ---- the shares: one per custodian, each its own file ----
    press_enter_on(&browser, &format!("{row} a.shares")).await;
    browser.find("section.share").await;
    let count = browser
        .execute(
            "return Array.from(document.querySelectorAll('section.share')).map(s => s.dataset.custodian);",
            json!([]),
        )
        .await;
    assert_eq!(count, json!(["anne", "bob", "carol"]));
    assert!(
        browser
            .text("#shares-threshold")
            .await
            .contains("any 2 of its 3 custodians")
    );
    check_both_widths(&browser, "06-backup-shares").await;
    let mut texts = std::collections::HashMap::new();
    for custodian in ["anne", "carol"] {
        let link = format!("section.share[data-custodian='{custodian}'] a.download-share");
        assert_eq!(
            browser.attribute(&link, "download").await.as_deref(),
            Some(format!("{custodian}.share").as_str())
        );
        let href = browser.attribute(&link, "href").await.unwrap();
        let share = fetch_in_browser(&browser, &href).await;
        assert_eq!(share["status"], 200, "{share}");
        assert_eq!(
            share["disposition"],
            format!("attachment; filename=\"{custodian}.share\"")
        );
        texts.insert(custodian, share["text"].as_str().unwrap().to_owned());
    }
    let (_, api_shares) = app
        .get(&format!("/api/v1/backups/{id}/shares"), &token)
        .await;
    assert_eq!(api_shares["shares"][2]["text"], texts["carol"].as_str());

    // ---- two custodians open their shares and the backup file ----
    let anne_file = keyhold_backup::ShareFile::parse(&texts["anne"]).unwrap();
    let anne_kdf = anne_file
        .kdf
        .clone()
        .expect("anne's share names her key derivation");
    let anne_secret = keyhold_backup::custodian_from_passphrase(
        &SecretString::from(ANNE_PASSPHRASE.to_owned()),
        &anne_kdf,
    )
    .unwrap();
    let anne = anne_file.open(&anne_secret).unwrap();
    let carol = keyhold_backup::ShareFile::parse(&texts["carol"])
        .unwrap()
        .open(&carol_secret)
        .unwrap();
    let bytes = app
        .http
        .get(format!("{}/api/v1/backups/{id}/file", app.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let mut reader = keyhold_backup::BackupReader::open(Cursor::new(bytes.to_vec())).unwrap();
    let key = keyhold_backup::combine(reader.header(), &[anne, carol]).unwrap();
    reader.unlock(&key).unwrap();
    while reader.next_record().unwrap().is_some() {}

    // ---- the audit archive form, then the archives listed ----
    browser.goto(&format!("{}/ui/backups", app.base)).await;
    browser.fill("#archive-up-to-seq", "5").await;
    press_enter_on(&browser, "#archive-up-to").await;
    browser
        .wait_text("main .notice", "Archived audit entries 1 to 5", 30)
        .await;
    let archives = browser.text("#archives-table").await;
    assert!(archives.contains("1 to 5"), "{archives}");
    let (_, listed) = app.get("/api/v1/audit/archives", &token).await;
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    check_both_widths(&browser, "07-audit-archived").await;
    browser.quit().await;
}

#[tokio::test]
async fn a_quorum_sends_back_up_now_for_approval() {
    let app = TestApp::spawn().await;
    let token = app.dual_session().await;
    let (_, first) = keyhold_backup::generate_custodian_key().unwrap();
    let (_, second) = keyhold_backup::generate_custodian_key().unwrap();
    let (status, body) = app
        .request(
            reqwest::Method::PUT,
            "/api/v1/backups/custodians",
            Some(&token),
            Some(json!({"threshold": 2, "custodians": [
                {"name": "dana", "public_key": first},
                {"name": "erin", "public_key": second},
            ]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app
        .request(
            reqwest::Method::PUT,
            "/api/v1/approval-policies",
            Some(&token),
            Some(json!({"quorums": {"create_backup": {"approvals": 1, "role": "administrator", "expires_after_hours": 24}}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let browser = Browser::start("backups-quorum").await;
    log_in_alone(&app, &browser, "Admin1", ADMIN1_PASSWORD).await;
    browser.goto(&format!("{}/ui/backups", app.base)).await;
    let note = browser.text("#backups p[data-approval='required']").await;
    assert!(note.contains("Sent for approval"), "{note}");
    check_both_widths(&browser, "01-backup-under-a-quorum").await;
    press_enter_on(&browser, "#backup-now").await;
    let sent = browser
        .wait_text("main .notice", "Sent for approval", 10)
        .await;
    assert!(sent.contains("waits for 1 approval"), "{sent}");
    let summary = browser.text("#approval-request").await;
    assert!(
        summary.contains("Make a backup") && summary.contains("dana, erin"),
        "{summary}"
    );
    assert!(backups(&app, &token).await.is_empty());
    browser.quit().await;
}
