//! The web UI in a real browser: headless Chromium through WebDriver against
//! a real keyhold server and the LocalStack KMS peer. Every screen visited is
//! checked with axe-core and saved as a screenshot under
//! `target/ui-screenshots/<test>/`.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::kms::Kms;
use crate::webdriver::Browser;

const POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"root","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}]}"#;

/// Logs `user` in on the login screen (a first officer, or one joining).
pub(crate) async fn log_in(browser: &Browser, user: &str, password: &str) {
    browser.fill("#login-user", user).await;
    browser.fill("#login-password", password).await;
    browser.click("#login-form button[type=submit]").await;
}

/// A screenshot and an accessibility check of the page shown now.
pub(crate) async fn check_page(browser: &Browser, name: &str) {
    browser.screenshot(name).await;
    browser.assert_accessible(name).await;
}

/// Admin1 (through the UI) and Admin2 (through the API) replace their
/// one-time passwords.
async fn first_use(app: &TestApp, browser: &Browser) {
    browser.goto(&format!("{}/ui/keys", app.base)).await;
    assert!(browser.current_url().await.ends_with("/ui/login"));
    browser.click("#password-change summary").await;
    browser.fill("#pw-user", "Admin1").await;
    browser
        .fill("#pw-current", &app.initial_passwords["Admin1"])
        .await;
    browser.fill("#pw-new", ADMIN1_PASSWORD).await;
    browser.fill("#pw-confirm", ADMIN1_PASSWORD).await;
    browser.click("#password-change button[type=submit]").await;
    browser
        .wait_text("main", "Password changed. Log in with the new one.", 10)
        .await;
    let (status, body) = app
        .post(
            "/api/v1/password",
            None,
            json!({"user": "Admin2", "current_password": app.initial_passwords["Admin2"], "new_password": ADMIN2_PASSWORD}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
}

/// Waits until the Jobs page's row of `job` shows `status`, without reloading.
async fn wait_job_row(browser: &Browser, job: &str, status: &str) {
    browser
        .wait_text(&format!("tr[data-job='{job}'] td.status"), status, 60)
        .await;
}

fn write_file(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn two_officers_run_the_walkthrough_in_the_browser() {
    let app = TestApp::spawn().await;
    let kms = Kms::connect().await;
    let browser = Browser::start("walkthrough").await;
    let files = tempfile::tempdir().unwrap();
    let base = app.base.clone();

    // ---- log in, a second officer joins on the same screen ----
    first_use(&app, &browser).await;
    check_page(&browser, "01-login").await;
    log_in(&browser, "Admin1", ADMIN1_PASSWORD).await;
    browser.wait_text("#session-users", "Admin1", 10).await;
    check_page(&browser, "02-second-officer").await;
    // The session cookie: HttpOnly, Secure (Chromium keeps Secure cookies on
    // http://127.0.0.1, a potentially trustworthy origin) and SameSite=Strict.
    let cookies = browser.cookies().await;
    let session = cookies
        .iter()
        .find(|c| c["name"] == "keyhold_session")
        .unwrap_or_else(|| panic!("no session cookie kept: {cookies:?}"));
    assert_eq!(session["httpOnly"], true, "{session}");
    assert_eq!(session["secure"], true, "{session}");
    assert_eq!(session["sameSite"], "Strict", "{session}");
    log_in(&browser, "Admin2", ADMIN2_PASSWORD).await;
    browser
        .wait_text("main .notice", "Admin2 joined this session.", 10)
        .await;
    let header = browser.text("header.top").await;
    assert!(
        header.contains("Admin1") && header.contains("Admin2"),
        "{header}"
    );
    assert!(header.contains("Dual control: 2 officers"), "{header}");

    // ---- Identity Management ----
    browser.click("nav.side a[href='/ui/identities']").await;
    browser.wait_text("#identities-table", "Admin2", 10).await;
    check_page(&browser, "03-identities").await;

    // ---- Cloud Credentials: add from the CSV file ----
    browser.click("nav.side a[href='/ui/credentials']").await;
    browser.find("#credential-form").await;
    browser.fill("#credential-name", "aws").await;
    browser
        .fill("#credential-endpoint", &crate::kms::endpoint())
        .await;
    // As IAM's console writes it: BOM and CRLF.
    let csv = write_file(
        &files,
        "keyhold_accessKeys.csv",
        &format!(
            "\u{feff}Access key ID,Secret access key\r\n{ACCESS_KEY_ID},{SECRET_ACCESS_KEY}\r\n"
        ),
    );
    browser.fill("#credential-csv", &csv).await;
    browser.click("#add-credential-button").await;
    browser
        .wait_text("main .notice", "Added cloud credential aws.", 10)
        .await;
    assert!(
        browser
            .text("#credentials-table")
            .await
            .contains(ACCESS_KEY_ID)
    );
    assert!(
        !browser.source().await.contains(SECRET_ACCESS_KEY),
        "the secret shows in the page"
    );
    check_page(&browser, "04-credentials").await;

    // ---- Keys: a group from the dialog, its policy from a file ----
    let group = unique("ui-demo");
    browser.click("nav.side a[href='/ui/keys']").await;
    browser.click("#add-group").await;
    browser.find("#group-dialog").await;
    check_page(&browser, "05-group-dialog").await;
    browser.fill("#group-name", &group).await;
    browser.fill("#group-valid_for", "1y").await;
    browser.click("#tab-info-button").await;
    browser.fill("#group-owner", "security team").await;
    browser.click("#tab-aws-button").await;
    browser
        .fill("#group-alias", &format!("alias/{group}"))
        .await;
    browser.fill("#group-region", "eu-west-1").await;
    browser
        .fill("#group-description", "payments data key")
        .await;
    let policy = write_file(&files, "policy.json", POLICY);
    browser.fill("#group-policy-file", &policy).await;
    browser
        .wait_text("#group-policy-status", "Valid JSON policy", 10)
        .await;
    browser.click("#group-disable").await;
    browser.screenshot("06-group-dialog-aws").await;
    let created = save_new_group(&app, &browser, &group).await;
    assert_eq!(created["policy"], POLICY, "{created}");
    assert_eq!(created["owner"], "security team");
    assert_eq!(created["disable_after_rotate"], true);
    assert_eq!(created["rotate_every"], "30d");

    // ---- Cloud → Force Rotate from the row's context menu (right-click) ----
    let group_row = format!("tbody[data-group='{group}'] tr.group-row");
    browser.right_click(&group_row).await;
    let menu = format!("{group_row} details.menu[open]");
    browser.find(&menu).await;
    browser.screenshot("07-context-menu").await;
    // Edit comes first; Force Rotate asks before it creates a billed KMS key.
    let first = browser
        .execute(
            "return document.querySelector(arguments[0] + ' .menu-item').getAttribute('data-action');",
            json!([menu]),
        )
        .await;
    assert_eq!(first, "edit");
    browser
        .click(&format!("{menu} [data-action='force-rotate']"))
        .await;
    let what = browser.text("#rotate-what").await;
    assert!(
        what.contains("AWS bills each key") && what.contains(&format!("alias/{group}")),
        "{what}"
    );
    assert!(
        what.contains("disabled in AWS"),
        "disable after rotate is on: {what}"
    );
    let token = api_token(&app).await;
    let (_, jobs) = app.get("/api/v1/jobs", &token).await;
    assert_eq!(
        jobs.as_array().unwrap().len(),
        0,
        "nothing ran before the confirmation"
    );
    check_page(&browser, "07b-rotate-confirmation").await;
    browser.click("#confirm-rotate").await;
    browser.wait_text("main .notice", "Started job", 10).await;
    let started = browser.text("main .notice").await;
    let rotate_job = started
        .split_whitespace()
        .nth(2)
        .unwrap()
        .trim_end_matches(':')
        .to_owned();
    // The row turns to succeeded by itself: the page is never reloaded.
    browser
        .execute("window.keyholdNotReloaded = true;", json!([]))
        .await;
    wait_job_row(&browser, &rotate_job, "succeeded").await;
    check_page(&browser, "08-jobs").await;
    // A job started elsewhere appears and finishes on the open page too.
    let second = app.rotate(&token, &group).await;
    wait_job_row(&browser, &second, "succeeded").await;
    assert_eq!(
        browser
            .execute("return window.keyholdNotReloaded === true;", json!([]))
            .await,
        true,
        "the Jobs page was reloaded instead of updating itself"
    );
    // The detail view with the job's messages.
    browser
        .click(&format!("tr[data-job='{rotate_job}'] a"))
        .await;
    browser.wait_text("#job-status", "succeeded", 10).await;
    let messages = browser.text("#job-messages").await;
    assert!(!messages.is_empty(), "no messages");
    check_page(&browser, "09-job-detail").await;

    // ---- Cloud → Synchronize a key: Delete Key Material ----
    let (_, keys) = app
        .get(&format!("/api/v1/keys?group={group}"), &token)
        .await;
    let keys = keys.as_array().unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
    // The older key (version 1): not the group's active key.
    let old_key = keys.iter().find(|k| k["version"] == 1).unwrap()["name"]
        .as_str()
        .unwrap()
        .to_owned();
    browser.click("nav.side a[href='/ui/keys']").await;
    let key_row = format!("tr.key-row[data-key='{old_key}']");
    let row_text = browser.text(&key_row).await;
    for column in [&group, "Protected", "AES", "AES-256"] {
        assert!(row_text.contains(column), "{column} missing in {row_text}");
    }
    check_page(&browser, "10-keys").await;
    // The visible Actions button opens the same menu.
    browser
        .click(&format!("{key_row} details.menu summary"))
        .await;
    browser
        .click(&format!("{key_row} [data-action='synchronize']"))
        .await;
    browser.find("#sync-dialog").await;
    assert!(browser.is_selected("#sync-update-policy").await);
    assert!(browser.is_selected("#sync-import-material").await);
    assert!(!browser.is_selected("#sync-delete-material").await);
    browser.click("#sync-import-material").await;
    browser.click("#sync-update-policy").await;
    browser.click("#sync-delete-material").await;
    check_page(&browser, "11-sync-dialog").await;
    browser.click("#start-sync").await;
    browser.wait_text("main .notice", "Started job", 10).await;
    let started = browser.text("main .notice").await;
    let sync_job = started
        .split_whitespace()
        .nth(2)
        .unwrap()
        .trim_end_matches(':')
        .to_owned();
    wait_job_row(&browser, &sync_job, "succeeded").await;
    assert_eq!(kms.state(&old_key).await, "PendingImport");

    // ---- Audit Logs: the entries, the verification, filters, export ----
    browser.click("nav.side a[href='/ui/audit']").await;
    assert_eq!(
        browser
            .attribute("#audit-verify", "data-ok")
            .await
            .as_deref(),
        Some("true")
    );
    browser
        .wait_text("#audit-verify", "Chain verified", 5)
        .await;
    let table = browser.text("#audit-table").await;
    for summary in [
        "Logged in 'Admin2' using Password.".to_owned(),
        format!("Added HSM protected key group {group}"),
        format!("Successfully rotated keys for HSM protected key group {group}."),
        format!("Successfully synchronized HSM protected key {old_key}."),
    ] {
        assert!(table.contains(&summary), "{summary} missing in\n{table}");
    }
    assert!(table.contains("Admin1,Admin2"), "{table}");
    check_page(&browser, "12-audit").await;
    browser.fill("#audit-text", "rotated keys").await;
    browser.fill("#audit-user", "Admin2").await;
    browser.click("#audit-filters button[type=submit]").await;
    browser
        .wait_text("#audit-table", "Successfully rotated", 10)
        .await;
    let rows = browser
        .execute(
            "return Array.from(document.querySelectorAll('#audit-table tbody tr td.summary')).map(td => td.textContent);",
            json!([]),
        )
        .await;
    let rows = rows.as_array().unwrap();
    assert!(!rows.is_empty());
    assert!(
        rows.iter()
            .all(|r| r.as_str().unwrap().contains("rotated keys")),
        "{rows:?}"
    );
    browser.screenshot("13-audit-filtered").await;
    // The export is the whole log whatever the filters, and says so.
    let note = browser.text("#audit-export-note").await;
    assert!(note.contains("not only those the filters show"), "{note}");
    let export = browser
        .execute_async(
            "const done = arguments[0]; fetch('/ui/audit/export').then(r => r.text()).then(done);",
            json!([]),
        )
        .await;
    let lines: Vec<Value> = export
        .as_str()
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() >= 8, "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l["summary"] == format!("Added HSM protected key group {group}"))
    );
    assert!(
        lines.last().unwrap().get("checkpoint").is_some(),
        "the export ends with its signed checkpoint"
    );

    // A signed checkpoint to copy away from the server; the log verifies against it.
    browser
        .click("#audit-checkpoint-form button[type=submit]")
        .await;
    browser
        .wait_text("#audit-checkpoints", "Checkpoint signed at entry", 10)
        .await;
    let signed: Value =
        serde_json::from_str(&browser.text("#audit-checkpoint-line").await).unwrap();
    let (_, key) = app.get("/api/v1/audit/public-key", &token).await;
    assert_eq!(signed["key"], key["fingerprint"]);
    let (status, report) = app
        .post(
            "/api/v1/audit/verify",
            Some(&token),
            json!({"checkpoints": [signed]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["checkpoint_seq"], signed["seq"], "{report}");
    check_page(&browser, "13b-audit-checkpoint").await;

    // ---- Administration → Configuration ----
    browser.click("nav.side a[href='/ui/configuration']").await;
    let options = browser.text("#hsm-protected-key-options").await;
    assert!(options.contains("Designated rotator"), "{options}");
    assert!(options.contains("This node: node-a (rotator)"), "{options}");
    browser.fill("#config-session_idle_minutes", "20").await;
    browser.click("#save-configuration").await;
    browser
        .wait_text("main .notice", "Configuration saved.", 10)
        .await;
    let (_, settings) = app.get("/api/v1/config", &token).await;
    assert_eq!(settings["session_idle_minutes"], 20);
    check_page(&browser, "14-configuration").await;

    // A group that still has keys: the dialog says keyhold refuses, and its
    // Delete button does not pretend otherwise.
    browser
        .goto(&format!("{}/ui/keys/groups/{group}/delete", app.base))
        .await;
    let what = browser.text("#delete-dialog").await;
    assert!(what.contains("still has"), "{what}");
    assert!(
        browser
            .attribute("#confirm-delete", "disabled")
            .await
            .is_some(),
        "the Delete button is disabled"
    );

    // Nothing secret in any URL the browser went to.
    let url = browser.current_url().await;
    assert!(!url.contains(ADMIN1_PASSWORD) && !url.contains(SECRET_ACCESS_KEY));
    let _ = base;
    browser.quit().await;
}

/// Saves the open new-group dialog and returns the group as the API reads
/// it back.
pub(crate) async fn save_new_group(app: &TestApp, browser: &Browser, group: &str) -> Value {
    browser.click("#save-group").await;
    browser
        .wait_text(
            "main .notice",
            &format!("Added HSM protected key group {group}."),
            10,
        )
        .await;
    let (status, created) = app
        .get(&format!("/api/v1/groups/{group}"), &api_token(app).await)
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    created
}

/// A session through the API for the test's own checks.
pub(crate) async fn api_token(app: &TestApp) -> String {
    let (status, body) = app.login(None, "Admin1", ADMIN1_PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn one_officer_cannot_delete_a_group_forged_forms_are_refused_and_sessions_time_out() {
    let app = TestApp::spawn().await;
    let token = app.dual_session().await;
    app.import_credential(&token, "aws").await;
    let group = unique("ui-single");
    let (status, body) = app.create_group(&token, group_body(&group, "aws")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let browser = Browser::start("single-officer").await;

    browser.goto(&format!("{}/ui/login", app.base)).await;
    log_in(&browser, "Admin1", ADMIN1_PASSWORD).await;
    browser.click("#continue").await;
    let header = browser.text("header.top").await;
    assert!(header.contains("One officer"), "{header}");

    // The confirmation names what goes and says, before it is attempted,
    // that a second officer is needed.
    browser
        .click(&format!(
            "tbody[data-group='{group}'] tr.group-row details.menu summary"
        ))
        .await;
    browser
        .click(&format!(
            "tbody[data-group='{group}'] [data-action='delete']"
        ))
        .await;
    let what = browser.text("#delete-what").await;
    assert!(
        what.contains(&group) && what.contains(&format!("alias/{group}")),
        "{what}"
    );
    assert!(browser.exists("[data-dual-control='required']").await);
    check_page(&browser, "01-delete-confirmation").await;
    // Attempted anyway: keyhold refuses it, and says why.
    browser.click("#confirm-delete").await;
    browser
        .wait_text("main .notice.error", "needs dual control", 10)
        .await;
    check_page(&browser, "02-refused").await;
    let (status, _) = app.get(&format!("/api/v1/groups/{group}"), &token).await;
    assert_eq!(status, StatusCode::OK, "the group was deleted");

    // A form posted without the CSRF token (as another page would forge it)
    // is refused before it reaches keyhold, even from this very origin.
    for token_field in ["", "0000"] {
        browser
            .execute(
                r#"
                const f = document.createElement('form');
                f.method = 'post';
                f.action = arguments[0];
                if (arguments[1]) {
                    const i = document.createElement('input');
                    i.type = 'hidden'; i.name = 'csrf'; i.value = arguments[1];
                    f.appendChild(i);
                }
                document.body.appendChild(f);
                f.submit();
                "#,
                json!([format!("/ui/keys/groups/{group}/delete"), token_field]),
            )
            .await;
        browser.wait_text("main", "security token (CSRF)", 10).await;
    }
    browser.screenshot("03-csrf-refused").await;
    let (status, _) = app.get(&format!("/api/v1/groups/{group}"), &token).await;
    assert_eq!(status, StatusCode::OK, "the forged form deleted the group");

    // An invalid policy is caught before saving, and by keyhold when the
    // browser's check is bypassed; the dialog keeps what was typed.
    browser
        .goto(&format!("{}/ui/keys/groups/{group}/edit", app.base))
        .await;
    browser.click("#tab-aws-button").await;
    browser.fill("#group-policy", "{\"Version\": ").await;
    browser
        .wait_text("#group-policy-status", "Not valid JSON", 10)
        .await;
    browser.click("#save-group").await;
    assert!(
        browser
            .current_url()
            .await
            .ends_with(&format!("/ui/keys/groups/{group}/edit")),
        "the browser sent an invalid policy"
    );
    browser
        .execute("document.getElementById('group-form').submit();", json!([]))
        .await;
    browser.wait_text("main .notice.error", "policy", 10).await;
    assert!(browser.exists("#group-dialog").await);
    assert_eq!(
        browser
            .attribute("#group-policy", "aria-invalid")
            .await
            .as_deref(),
        Some("true")
    );
    check_page(&browser, "04-invalid-policy").await;

    // After the idle timeout the next page asks to log in again.
    app.clock.advance(chrono::Duration::minutes(16));
    browser.goto(&format!("{}/ui/jobs", app.base)).await;
    browser
        .wait_text("main", "Your session has ended", 10)
        .await;
    assert!(browser.current_url().await.contains("/ui/login"));
    check_page(&browser, "05-session-ended").await;
    browser.quit().await;
}

/// Without a browser: the headers every page carries, and form posts
/// without a token, from another origin, or without a cookie.
#[tokio::test]
async fn ui_pages_carry_a_strict_policy_and_forms_need_their_token() {
    let app = TestApp::spawn().await;
    app.activate_admins().await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = http
        .get(format!("{}/ui/login", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let headers = resp.headers().clone();
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["cache-control"], "no-store");
    let set_cookie = headers["set-cookie"].to_str().unwrap().to_owned();
    for attribute in ["keyhold_login=", "HttpOnly", "Secure", "SameSite=Strict"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    let nonce = set_cookie.split(';').next().unwrap().to_owned();
    let page = resp.text().await.unwrap();
    assert!(!page.contains("<script>"), "inline script in the page");
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let form = |csrf: &str| {
        format!(
            "csrf={csrf}&user=Admin1&password={}",
            ADMIN1_PASSWORD.replace('-', "%2D")
        )
    };
    let post = |cookie: Option<String>, origin: Option<&str>, body: String| {
        let mut req = http
            .post(format!("{}/ui/login", app.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(cookie) = cookie {
            req = req.header("cookie", cookie);
        }
        if let Some(origin) = origin {
            req = req.header("origin", origin);
        }
        req.send()
    };
    let own_origin = app.base.clone();
    // No token, a wrong one, no cookie, another origin: all refused.
    for (cookie, origin, body) in [
        (
            Some(nonce.clone()),
            Some(own_origin.as_str()),
            "user=Admin1&password=x".to_owned(),
        ),
        (Some(nonce.clone()), Some(own_origin.as_str()), form("00")),
        (None, Some(own_origin.as_str()), form(&csrf)),
        (
            Some(nonce.clone()),
            Some("http://evil.example"),
            form(&csrf),
        ),
    ] {
        let resp = post(cookie, origin, body).await.unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    }
    // The real form logs in and sets the session cookie.
    let resp = post(Some(nonce.clone()), Some(&own_origin), form(&csrf))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let cookies: Vec<String> = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let session = cookies
        .iter()
        .find(|c| c.starts_with("keyhold_session="))
        .unwrap();
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict"] {
        assert!(session.contains(attribute), "{session}");
    }
    // The assets come from the binary, as files (no inline code).
    let js = http
        .get(format!("{}/ui/assets/app.js", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(js.status(), StatusCode::OK);
    assert!(
        js.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    // Without a session, pages lead to the login.
    let resp = http
        .get(format!("{}/ui/keys", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()["location"], "/ui/login");
}

/// Counts, from now on, the requests the open page's script makes by itself.
async fn count_refreshes(browser: &Browser) {
    browser
        .execute(
            r"
            if (window.keyholdRefreshes === undefined) {
                window.keyholdRefreshes = 0;
                const fetchNow = window.fetch;
                window.fetch = function () {
                    window.keyholdRefreshes += 1;
                    return fetchNow.apply(this, arguments);
                };
            }
            ",
            json!([]),
        )
        .await;
}

/// Waits until the page's script has sent two more refreshes: the second
/// follows the answer to the first, which was sent after this was called.
async fn two_more_refreshes(browser: &Browser) {
    let count = || async {
        browser
            .execute("return window.keyholdRefreshes;", json!([]))
            .await
            .as_u64()
            .expect("the Jobs page was left: did its session end?")
    };
    let start = count().await;
    for _ in 0..150 {
        if count().await >= start + 2 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    panic!("the Jobs page did not refresh itself within 30 s");
}

#[tokio::test]
async fn an_open_jobs_page_does_not_keep_its_session_alive() {
    let app = TestApp::spawn().await;
    app.activate_admins().await;
    let browser = Browser::start("unattended-jobs").await;
    let jobs = format!("{}/ui/jobs", app.base);
    browser.goto(&format!("{}/ui/login", app.base)).await;
    log_in(&browser, "Admin1", ADMIN1_PASSWORD).await;
    browser.wait_text("#session-users", "Admin1", 10).await;
    log_in(&browser, "Admin2", ADMIN2_PASSWORD).await;
    browser
        .wait_text("main .notice", "Admin2 joined this session.", 10)
        .await;

    // Minute 0: the officers open the Jobs page and leave it.
    browser.goto(&jobs).await;
    count_refreshes(&browser).await;
    two_more_refreshes(&browser).await;
    // Minute 10: it has refreshed itself all along, and the session is live.
    app.clock.advance(chrono::Duration::minutes(10));
    two_more_refreshes(&browser).await;
    assert_eq!(browser.current_url().await, jobs);

    // An officer opens the page again: that is activity.
    browser.goto(&jobs).await;
    count_refreshes(&browser).await;
    // Minute 20: 20 minutes since the login, 10 since the page was opened.
    app.clock.advance(chrono::Duration::minutes(10));
    two_more_refreshes(&browser).await;
    assert_eq!(
        browser.current_url().await,
        jobs,
        "the page view did not count"
    );

    // Minute 26: 16 minutes unattended, refreshed all the while. The idle
    // timeout (15 minutes) has passed: the next refresh finds the session
    // ended, and the page asks to log in again.
    app.clock.advance(chrono::Duration::minutes(6));
    browser
        .wait_text("main", "Your session has ended", 30)
        .await;
    assert!(browser.current_url().await.contains("/ui/login?m=expired"));
    check_page(&browser, "01-session-ended").await;

    // Read back: the session's token is dead, and the refusal is audited.
    browser.goto(&jobs).await;
    assert!(browser.current_url().await.contains("/ui/login"));
    let token = api_token(&app).await;
    let audit = app.audit_summaries(&token).await;
    assert!(
        audit.contains(
            &"Anonymous | Refused GET /ui/jobs.json with an invalid or expired session.".to_owned()
        ),
        "{audit:#?}"
    );
    browser.quit().await;
}

/// Logs `user` in through the login form with `http` (which follows no
/// redirects); returns the session cookie to send back.
pub(crate) async fn ui_session_cookie(
    http: &reqwest::Client,
    app: &TestApp,
    user: &str,
    password: &str,
) -> String {
    let resp = ui_login_from(http, app, user, password).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|c| c.starts_with("keyhold_session="))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

/// Without a browser: both refresh endpoints need a live session but do not
/// extend it, whatever the idle timeout is set to; a page view does.
#[tokio::test]
async fn refreshes_need_a_live_session_but_only_page_views_extend_it() {
    let app = TestApp::spawn().await;
    let admins = app.dual_session().await;
    let (status, body) = app
        .patch(
            "/api/v1/config",
            &admins,
            json!({"session_idle_minutes": 5}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let get = |cookie: &str, path: &str| {
        http.get(format!("{}{path}", app.base))
            .header("cookie", cookie)
            .send()
    };
    // A job id the detail refresh asks about (unknown: answered 404 while
    // the session lives, which is all this needs).
    let detail = format!("/ui/jobs/{}/json", uuid::Uuid::new_v4());
    let expired = |resp: &reqwest::Response| {
        resp.status() == StatusCode::SEE_OTHER
            && resp.headers()["location"] == "/ui/login?m=expired"
    };

    for refresh in ["/ui/jobs.json", detail.as_str()] {
        // Refreshed every minute: answered for the 5 minutes of the idle
        // timeout, then the session is over.
        let cookie = ui_session_cookie(&http, &app, "Admin1", ADMIN1_PASSWORD).await;
        for minute in 1..=5 {
            app.clock.advance(chrono::Duration::minutes(1));
            let resp = get(&cookie, refresh).await.unwrap();
            assert!(!expired(&resp), "{refresh} refused at minute {minute}");
            let expected = if refresh == "/ui/jobs.json" {
                StatusCode::OK
            } else {
                StatusCode::NOT_FOUND
            };
            assert_eq!(resp.status(), expected, "{refresh} at minute {minute}");
        }
        app.clock.advance(chrono::Duration::minutes(1));
        let resp = get(&cookie, refresh).await.unwrap();
        assert!(expired(&resp), "{refresh} kept the session alive: {resp:?}");
        // Ended for every request, not only refreshes.
        let resp = get(&cookie, "/ui/keys").await.unwrap();
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    }

    // With a page view every 4 minutes the same session lives for 20
    // minutes and more, refreshed in between.
    let cookie = ui_session_cookie(&http, &app, "Admin1", ADMIN1_PASSWORD).await;
    for _ in 0..5 {
        app.clock.advance(chrono::Duration::minutes(2));
        let resp = get(&cookie, "/ui/jobs.json").await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        app.clock.advance(chrono::Duration::minutes(2));
        let resp = get(&cookie, "/ui/jobs").await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
    app.clock.advance(chrono::Duration::minutes(6));
    assert!(expired(&get(&cookie, "/ui/jobs.json").await.unwrap()));

    // Read back: each refused refresh is audited under the path the browser sent.
    let (_, body) = app.login(None, "Admin2", ADMIN2_PASSWORD).await;
    let token = body["token"].as_str().unwrap();
    let audit = app.audit_summaries(token).await;
    for path in ["/ui/jobs.json", detail.as_str()] {
        let refused = format!("Anonymous | Refused GET {path} with an invalid or expired session.");
        assert!(audit.contains(&refused), "{refused} missing in {audit:#?}");
    }
}

/// The group dialog asks for intervals as keyhold accepts them: every
/// example its hints and placeholders give is taken by the server as it is.
#[tokio::test]
async fn the_group_dialog_gives_only_intervals_keyhold_accepts() {
    let app = TestApp::spawn().await;
    let token = app.dual_session().await;
    app.import_credential(&token, "aws").await;
    let group = unique("ui-hints");
    let (status, body) = app.create_group(&token, group_body(&group, "aws")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let browser = Browser::start("interval-hints").await;
    browser.goto(&format!("{}/ui/login", app.base)).await;
    log_in(&browser, "Admin1", ADMIN1_PASSWORD).await;
    browser.wait_text("#session-users", "Admin1", 10).await;
    browser
        .goto(&format!("{}/ui/keys/groups/new", app.base))
        .await;
    browser.find("#group-dialog").await;
    check_page(&browser, "01-group-dialog").await;

    for (field, hint_needs) in [("rotate_every", "from 1 day (24h)"), ("valid_for", "")] {
        let hint = browser.text(&format!("#group-{field}-hint")).await;
        assert!(hint.contains(hint_needs), "{hint}");
        let placeholder = browser
            .attribute(&format!("#group-{field}"), "placeholder")
            .await
            .unwrap();
        let mut examples: Vec<&str> = keyhold_core::interval::written_intervals(&hint).collect();
        assert!(examples.len() >= 3, "{hint}");
        examples.push(&placeholder);
        for example in examples {
            let (status, body) = app
                .patch(
                    &format!("/api/v1/groups/{group}"),
                    &token,
                    json!({ field: example }),
                )
                .await;
            assert_eq!(
                status,
                StatusCode::OK,
                "{field} {example} from {hint:?}: {body}"
            );
            let (_, read_back) = app.get(&format!("/api/v1/groups/{group}"), &token).await;
            assert_eq!(read_back[field], example, "{read_back}");
        }
    }
    // What the old hint offered is refused, and the refusal says what is
    // accepted instead.
    for refused in ["12h", "6m"] {
        let (status, body) = app
            .patch(
                &format!("/api/v1/groups/{group}"),
                &token,
                json!({ "rotate_every": refused }),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("for example 1d, 30d, 2w or 1y") || message.contains("24h (1d)"),
            "{message}"
        );
    }
    browser.quit().await;
}

/// Whether the page still is the one loaded when [`mark_page`] ran: a
/// reload or a navigation drops the mark.
async fn same_page(browser: &Browser) -> bool {
    browser
        .execute("return window.keyholdSamePage === true;", json!([]))
        .await
        .as_bool()
        .unwrap_or(false)
}

async fn mark_page(browser: &Browser) {
    browser
        .execute("window.keyholdSamePage = true;", json!([]))
        .await;
}

#[tokio::test]
async fn a_job_that_fails_while_watched_offers_retry_and_cancel_without_a_reload() {
    use crate::fault_proxy::{Fault, FaultProxy, Rule, Schedule};

    // KMS answers DescribeKey of the group's Active Key ID slowly, then
    // says it does not exist: the rotation runs for a few seconds at
    // "create the KMS key", then fails.
    let proxy = FaultProxy::start(&crate::kms::endpoint()).await;
    let app = TestApp::spawn_with(|args| {
        allow_endpoints(args, &[&proxy.url]);
        args.kms.kms_max_attempts = Some(1);
        args.kms.kms_request_timeout_seconds = Some(30);
    })
    .await;
    let token = app.dual_session().await;
    app.import_credential_at(&token, "slow", &proxy.url).await;
    let group = unique("watched");
    let mut body = group_body(&group, "slow");
    body["region"] = json!("eu-west-1");
    body["active_key_id"] = json!(uuid::Uuid::new_v4().to_string());
    let (status, created) = app.create_group(&token, body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");

    let browser = Browser::start("watched-job").await;
    browser.goto(&format!("{}/ui/login", app.base)).await;
    log_in(&browser, "Admin1", ADMIN1_PASSWORD).await;
    browser.wait_text("#session-users", "Admin1", 10).await;

    proxy.set_plan(vec![Rule::on(
        "DescribeKey",
        Fault::SlowAnswer(std::time::Duration::from_secs(6)),
        Schedule::First(1),
    )]);
    let id = app.rotate(&token, &group).await;
    browser.goto(&format!("{}/ui/jobs/{id}", app.base)).await;
    mark_page(&browser).await;
    let status = browser.text("#job-status").await;
    assert!(
        status.contains("running") || status.contains("queued"),
        "the job should still be under way when the page opens: {status}"
    );
    assert!(
        !browser.text("#job-actions").await.contains("Retry"),
        "no Retry while the job runs"
    );
    assert_eq!(
        browser.text("#job-summary").await,
        format!("new key for key group {group}")
    );

    // It fails while watched: the page shows Retry and Cancel by itself.
    browser.wait_text("#job-status", "failed", 60).await;
    browser
        .wait_text("#job-actions", "Retry from the failed step", 15)
        .await;
    let actions = browser.text("#job-actions").await;
    assert!(actions.contains("Cancel job"), "{actions}");
    assert!(same_page(&browser).await, "shown without a reload");
    check_page(&browser, "01-failed-while-watched").await;

    // The Keys screen lists the key the rotation generated under a readable
    // name, and says why it has no KMS key and what to do.
    browser.goto(&format!("{}/ui/keys", app.base)).await;
    let row = format!("tr.key-row[data-key='{group} v1 (no KMS key)']");
    let note = browser
        .wait_text(
            &format!("{row} .state-note"),
            "failed before the key reached KMS",
            10,
        )
        .await;
    assert!(note.contains(&id), "{note}");
    check_page(&browser, "02-keys-with-its-key").await;
    browser.goto(&format!("{}/ui/jobs/{id}", app.base)).await;

    // The cause fixed, the officer retries from the page; the job finishes.
    let (status, patched) = app
        .patch(
            &format!("/api/v1/groups/{group}"),
            &token,
            json!({"active_key_id": null}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    browser.click("#retry-job").await;
    browser.wait_text("#job-status", "succeeded", 60).await;
    browser.wait_text("#job-attempts", "2", 10).await;
    let (_, job) = app.get(&format!("/api/v1/jobs/{id}"), &token).await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    assert_eq!(job["attempts"], 2, "{job:#}");
    assert!(
        !browser.text("#job-actions").await.contains("Retry"),
        "nothing to retry once it succeeded"
    );
    let audit = app.audit_summaries(&token).await;
    assert!(
        audit.contains(&format!(
            "Admin1 | Retried job {id} (Rotate HSM protected keys)"
        )),
        "{audit:#?}"
    );
    browser.quit().await;
}

/// The group dialog sets a group to rotate in place (new material in the
/// same KMS key, refusing at AWS's limit); changing that back is a custody
/// change: one officer is refused, in the dialog, and two may.
#[tokio::test]
async fn the_rotation_strategy_is_set_in_the_dialog_and_changed_only_by_two_officers() {
    let app = TestApp::spawn().await;
    let token = app.dual_session().await;
    app.import_kms_credential(&token, "aws").await;
    let browser = Browser::start("rotation-strategy").await;
    let strategy = |value: &str| format!("#group-rotation-strategy option[value='{value}']");
    let at_limit = |value: &str| format!("#group-at-rotation-limit option[value='{value}']");

    // Both officers (adding a group needs dual control) add one that
    // rotates in place and refuses at the limit.
    browser.goto(&format!("{}/ui/login", app.base)).await;
    log_in(&browser, "Admin1", ADMIN1_PASSWORD).await;
    browser.wait_text("#session-users", "Admin1", 10).await;
    log_in(&browser, "Admin2", ADMIN2_PASSWORD).await;
    browser
        .wait_text("main .notice", "Admin2 joined this session.", 10)
        .await;
    browser
        .goto(&format!("{}/ui/keys/groups/new", app.base))
        .await;
    browser.find("#group-dialog").await;
    let group = unique("ui-inplace");
    browser.fill("#group-name", &group).await;
    assert!(
        browser.is_selected(&strategy("new_key")).await
            && browser.is_selected(&at_limit("new_key")).await,
        "a new group does not default to a new KMS key per rotation"
    );
    browser.click(&strategy("new_material")).await;
    browser.click(&at_limit("refuse")).await;
    assert_eq!(
        browser.text(&strategy("new_material")).await,
        "New material in the same KMS key (ARN kept)"
    );
    assert_eq!(browser.text(&at_limit("refuse")).await, "Refuse to rotate");
    check_page(&browser, "01-group-dialog-in-place").await;
    browser.click("#tab-aws-button").await;
    browser
        .fill("#group-alias", &format!("alias/{group}"))
        .await;
    browser.fill("#group-region", "eu-west-1").await;
    let created = save_new_group(&app, &browser, &group).await;
    assert_eq!(created["rotation_strategy"], "new_material", "{created}");
    assert_eq!(created["at_rotation_limit"], "refuse", "{created}");
    // The keys screen says how the group rotates.
    let heading = format!("tbody[data-group='{group}'] tr.group-row");
    let said = browser.text(&heading).await;
    assert!(
        said.contains("new material in one KMS key")
            && said.contains("at the limit: refuse to rotate"),
        "{said}"
    );
    check_page(&browser, "02-keys-in-place").await;

    // One officer: the dialog warns first, and keyhold refuses the change
    // in the dialog, naming the custody field; the choice stays as made.
    browser
        .click("header.top form[action='/ui/logout'] button")
        .await;
    browser.wait_text("main", "Logged out.", 10).await;
    log_in(&browser, "Admin1", ADMIN1_PASSWORD).await;
    browser.click("#continue").await;
    browser
        .goto(&format!("{}/ui/keys/groups/{group}/edit", app.base))
        .await;
    browser.find("#group-dialog").await;
    assert!(browser.is_selected(&strategy("new_material")).await);
    assert!(browser.is_selected(&at_limit("refuse")).await);
    assert!(
        browser
            .exists("#group-dialog [data-dual-control='required']")
            .await
    );
    browser.click(&strategy("new_key")).await;
    browser.click("#save-group").await;
    let refused = browser
        .wait_text("#group-dialog .notice.error", "needs dual control", 10)
        .await;
    assert!(
        refused.contains("rotation_strategy") && refused.contains(&group),
        "{refused}"
    );
    assert!(
        browser.is_selected(&strategy("new_key")).await,
        "the refused dialog lost the choice"
    );
    check_page(&browser, "03-refused-one-officer").await;
    let (_, unchanged) = app.get(&format!("/api/v1/groups/{group}"), &token).await;
    assert_eq!(
        unchanged["rotation_strategy"], "new_material",
        "{unchanged}"
    );
    assert_eq!(unchanged["at_rotation_limit"], "refuse", "{unchanged}");

    // The second officer joins from the dialog, which comes back with the
    // choice kept; saved by both, the change is made.
    browser
        .click("#group-dialog [data-dual-control='required'] a")
        .await;
    browser.wait_text("main h1", "Add an officer", 10).await;
    log_in(&browser, "Admin2", ADMIN2_PASSWORD).await;
    browser.find("#group-dialog").await;
    assert!(
        browser
            .current_url()
            .await
            .ends_with(&format!("/ui/keys/groups/{group}/edit"))
    );
    assert!(
        browser.is_selected(&strategy("new_key")).await,
        "the choice was not kept across the login"
    );
    browser.click("#save-group").await;
    browser
        .wait_text(
            "main .notice",
            &format!("Updated HSM protected key group {group}."),
            10,
        )
        .await;
    let (_, changed) = app.get(&format!("/api/v1/groups/{group}"), &token).await;
    assert_eq!(changed["rotation_strategy"], "new_key", "{changed}");
    assert_eq!(changed["at_rotation_limit"], "refuse", "{changed}");
    let said = browser.text(&heading).await;
    assert!(said.contains("new KMS key per rotation"), "{said}");
    let audit = app.audit_summaries(&token).await;
    assert!(
        audit.iter().any(|line| line.starts_with("Admin1 |")
            && line.contains(&format!("Failed to update HSM protected key group {group}"))),
        "the refusal is not audited: {audit:#?}"
    );
    browser.quit().await;
}
