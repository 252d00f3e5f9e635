//! The External Key Stores screen in a real browser: keyboard, axe.
//!
//! Two officers create a store in the UI (after a refused form that says
//! what is missing), and its secret access key is shown once: the result
//! page holds it, with the AWS CLI lines and the AWS KMS console's file
//! that carry it; the store's page, the list and the API never show it
//! again, and the access key id the API lists is the one shown. The
//! secret is the one the proxy accepts: a request signed by curl's own
//! SigV4 with it reaches the store's health check. A key is created with
//! an authorization rule; one key officer alone may disable it but not
//! enable it again, nor create a store; two enable it, rotate the
//! credential (the new secret shown once too) and revoke the older one,
//! whose signature the proxy then refuses; a disabled key is deleted. An
//! auditor reads the screens and finds no form. Under a quorum policy of
//! class `manage_xks_stores`, *Create store* becomes an approval request;
//! once another administrator approves it, its requester collects the
//! credential once on the request's page, as the store's own page would
//! have shown it. Every screen passes axe-core at 1280 and 800 px.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::ui::check_page;
use crate::ui_steps::{check_both_widths, log_in_alone, log_in_both, press_enter_on};
use crate::webdriver::Browser;

const OFFICER_PASSWORD: &str = "Officer-xks-lantern-42";
const AUDITOR_PASSWORD: &str = "Auditor-xks-harbour-17";

/// Undoes the percent-encoding of the console file's `data:` URL.
fn percent_decode(encoded: &str) -> String {
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// What the result page shows of a credential just issued: access key id,
/// secret, and the console file (from its download link and its text).
struct Shown {
    access_key_id: String,
    secret: String,
    console_file: Value,
    commands: String,
}

async fn shown_credential(browser: &Browser) -> Shown {
    let access_key_id = browser.text("#xks-access-key-id").await.trim().to_owned();
    let secret = browser.text("#xks-secret").await.trim().to_owned();
    let commands = browser.text("#aws-cli-command").await;
    let text: Value = serde_json::from_str(&browser.text("#kms-console-file").await).unwrap();
    let href = browser
        .attribute("#download-console-file", "href")
        .await
        .unwrap();
    let downloaded: Value = serde_json::from_str(&percent_decode(
        href.strip_prefix("data:application/json;charset=utf-8,")
            .unwrap_or_else(|| panic!("not a JSON data URL: {href}")),
    ))
    .unwrap();
    assert_eq!(text, downloaded, "the download differs from the text shown");
    Shown {
        access_key_id,
        secret,
        console_file: text,
        commands,
    }
}

/// A store as the API shows it.
async fn store(app: &TestApp, token: &str, name: &str) -> Value {
    let (status, body) = app.get(&format!("/api/v1/xks/stores/{name}"), token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// The store's keys as the API lists them.
async fn keys(app: &TestApp, token: &str, name: &str) -> Vec<Value> {
    let (status, body) = app
        .get(&format!("/api/v1/xks/stores/{name}/keys"), token)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body.as_array().unwrap().clone()
}

fn access_key_ids(store: &Value) -> Vec<String> {
    store["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["access_key_id"].as_str().unwrap().to_owned())
        .collect()
}

/// keyhold's clock at the wall clock's time: curl signs with the wall
/// clock, and the proxy checks a signature's time against keyhold's
/// (within five minutes). Only ever moves the test clock forward.
fn clock_at_wall_time(app: &TestApp) {
    use keyhold_core::clock::{Clock, SystemClock};
    app.clock.set(SystemClock.now());
}

/// A health request to the store's proxy path, signed by curl's SigV4 (an
/// implementation that is not keyhold's) with `access_key_id` and
/// `secret`: the status and body the proxy answers.
async fn signed_health(
    app: &TestApp,
    uri_path: &str,
    access_key_id: &str,
    secret: &str,
) -> (u16, String) {
    clock_at_wall_time(app);
    let url = format!("{}{uri_path}/health", app.base);
    let user = format!("{access_key_id}:{secret}");
    let body = json!({"requestMetadata": {
        "kmsRequestId": uuid::Uuid::new_v4().to_string(),
        "kmsOperation": "KmsHealthCheck",
    }})
    .to_string();
    let output = tokio::process::Command::new("curl")
        .args([
            "--silent",
            "--show-error",
            "--max-time",
            "10",
            "--output",
            "-",
            "--write-out",
            "\n%{http_code}",
            "--aws-sigv4",
            "aws:amz:eu-west-1:kms-xks-proxy",
            "--user",
            &user,
            "--header",
            "Content-Type: application/json",
            "--data",
            &body,
            &url,
        ])
        .output()
        .await
        .expect("curl runs (the Debian package curl)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (answer, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), answer.to_owned())
}

/// Waits (up to 30 s) until the proxy answers a signed health request with
/// `status`: every node reloads its stores and credentials within seconds
/// of a change, not at once.
async fn proxy_answers(app: &TestApp, uri_path: &str, credential: (&str, &str), status: u16) {
    let mut last = (0, String::new());
    for _ in 0..150 {
        last = signed_health(app, uri_path, credential.0, credential.1).await;
        if last.0 == status {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    panic!(
        "the proxy never answered {status} to a request signed by {}: {} {}",
        credential.0, last.0, last.1
    );
}

#[tokio::test]
async fn officers_create_a_store_see_its_secret_once_and_manage_its_keys() {
    let app = TestApp::spawn().await;
    clock_at_wall_time(&app);
    let token = app.dual_session().await;
    app.add_identity(&token, "Officer1", "key_officer", OFFICER_PASSWORD)
        .await;
    app.add_identity(&token, "Auditor1", "auditor", AUDITOR_PASSWORD)
        .await;
    let browser = Browser::start("xks").await;
    log_in_both(&app, &browser).await;

    // ---- the screen before anything ----
    browser.click("nav.side a[href='/ui/xks']").await;
    browser.find("#xks-stores-table").await;
    assert_eq!(
        browser.text("#xks-stores-table tbody").await.trim(),
        "No external key stores yet."
    );
    check_both_widths(&browser, "01-xks-nothing-yet").await;

    // ---- a refused form says what is missing, beside the field ----
    browser.fill("#xks-name", "payments").await;
    browser.fill("#xks-path-prefix", "/tenant-a/payments").await;
    browser.fill("#xks-quota", "50").await;
    browser
        .fill("#xks-mtls-subject", "cks.kms.eu-west-1.amazonaws.com")
        .await;
    press_enter_on(&browser, "#create-store-button").await;
    let refusal = browser
        .wait_text("main .notice.error", "mutual TLS needs the CA", 10)
        .await;
    assert!(refusal.contains("clear the subject"), "{refusal}");
    assert_eq!(
        browser
            .attribute("#xks-mtls-ca", "aria-invalid")
            .await
            .as_deref(),
        Some("true")
    );
    assert!(browser.text("#xks-mtls-ca-error").await.contains("PEM"));
    for (field, kept) in [
        ("#xks-name", "payments"),
        ("#xks-path-prefix", "/tenant-a/payments"),
        ("#xks-quota", "50"),
    ] {
        assert_eq!(
            browser.attribute(field, "value").await.as_deref(),
            Some(kept),
            "{field} was not kept"
        );
    }
    check_both_widths(&browser, "02-xks-refused").await;
    let (_, none) = app.get("/api/v1/xks/stores", &token).await;
    assert_eq!(none, json!([]), "a refused form created a store");

    // ---- created: the secret shown once, with what AWS needs ----
    browser.fill("#xks-mtls-subject", "").await;
    press_enter_on(&browser, "#create-store-button").await;
    browser
        .wait_text("main .notice", "Created external key store payments", 10)
        .await;
    let first = shown_credential(&browser).await;
    let uri_path = "/tenant-a/payments/kms/xks/v1";
    assert_eq!(browser.text("#xks-uri-path").await.trim(), uri_path);
    assert_eq!(first.secret.len(), 44, "{}", first.secret);
    assert_eq!(
        first.console_file,
        json!({
            "XksProxyUriPath": uri_path,
            "XksProxyAuthenticationCredential": {
                "AccessKeyId": first.access_key_id,
                "RawSecretAccessKey": first.secret,
            }
        })
    );
    for expected in [
        "aws kms create-custom-key-store".to_owned(),
        "--custom-key-store-name payments".to_owned(),
        "--custom-key-store-type EXTERNAL_KEY_STORE".to_owned(),
        format!("--xks-proxy-uri-path {uri_path}"),
        format!(
            "--xks-proxy-authentication-credential 'AccessKeyId={},RawSecretAccessKey={}'",
            first.access_key_id, first.secret
        ),
        "aws kms connect-custom-key-store".to_owned(),
    ] {
        assert!(
            first.commands.contains(&expected),
            "{expected} not in {}",
            first.commands
        );
    }
    assert_eq!(
        browser
            .attribute("#download-console-file", "download")
            .await
            .as_deref(),
        Some("payments-xks-proxy.json")
    );
    check_both_widths(&browser, "03-xks-created-secret-once").await;

    // The access key id the API lists is the one shown; no answer of the
    // API, and no page after this one, holds the secret.
    let created = store(&app, &token, "payments").await;
    assert_eq!(access_key_ids(&created), [first.access_key_id.as_str()]);
    assert_eq!(created["uri_path"], uri_path, "{created}");
    assert_eq!(created["quota_per_second"], 50, "{created}");
    let (_, listed) = app.get("/api/v1/xks/stores", &token).await;
    for answer in [&created, &listed] {
        assert!(!answer.to_string().contains(&first.secret), "{answer}");
    }
    for page in ["/ui/xks", "/ui/xks/payments"] {
        browser.goto(&format!("{}{page}", app.base)).await;
        browser.find("main h1").await;
        let source = browser.source().await;
        assert!(
            !source.contains(&first.secret),
            "{page} shows the secret again"
        );
        assert!(source.contains(&first.access_key_id), "{page}");
    }

    // ---- the secret shown is the one the proxy accepts ----
    proxy_answers(&app, uri_path, (&first.access_key_id, &first.secret), 200).await;
    let (status, answer) = signed_health(
        &app,
        uri_path,
        &first.access_key_id,
        "bm90LXRoZS1zZWNyZXQtbm90LXRoZS1zZWNyZXQtbm90LQ==",
    )
    .await;
    assert_eq!(status, 401, "a wrong secret was accepted: {answer}");

    // ---- the list shows the store ----
    browser.goto(&format!("{}/ui/xks", app.base)).await;
    let row = "#xks-stores-table tr[data-store='payments']";
    let shown = browser.text(row).await;
    for expected in [
        uri_path,
        "50",
        "Off",
        &first.access_key_id,
        "less than a day old",
    ] {
        assert!(shown.contains(expected), "{expected} not in {shown}");
    }
    assert_eq!(browser.text(&format!("{row} td.keys")).await.trim(), "0");

    // ---- a key with an authorization rule ----
    press_enter_on(&browser, "#store-payments").await;
    browser
        .wait_text("main h1", "External key store payments", 10)
        .await;
    browser.fill("#xks-key-description", "payroll").await;
    browser
        .fill(
            "#xks-key-principals",
            "arn:aws:iam::111122223333:role/payroll-*\narn:aws:iam::111122223333:root",
        )
        .await;
    browser
        .fill("#xks-key-operations", "Encrypt\nDecrypt\nGenerateDataKey*")
        .await;
    press_enter_on(&browser, "#create-key-button").await;
    browser
        .wait_text("main .notice", "Created XKS key", 10)
        .await;
    let made = keys(&app, &token, "payments").await;
    assert_eq!(made.len(), 1, "{made:?}");
    let key = made[0].clone();
    let id = key["id"].as_str().unwrap().to_owned();
    assert_eq!(key["description"], "payroll");
    assert_eq!(key["usage"], "encrypt_decrypt");
    assert_eq!(key["enabled"], true);
    assert_eq!(
        key["rule"],
        json!({
            "principals": ["arn:aws:iam::111122223333:role/payroll-*", "arn:aws:iam::111122223333:root"],
            "kms_key_arns": [],
            "kms_operations": ["Encrypt", "Decrypt", "GenerateDataKey*"],
            "source_vpcs": [],
        })
    );
    let key_row = format!("#xks-keys-table tr[data-key='{id}']");
    let shown = browser.text(&key_row).await;
    for expected in [
        "payroll",
        "Encrypt and decrypt",
        "Enabled",
        "arn:aws:iam::111122223333:role/payroll-*",
        "GenerateDataKey*",
        key["check_digits"].as_str().unwrap(),
    ] {
        assert!(shown.contains(expected), "{expected} not in {shown}");
    }
    let command = browser
        .text(&format!(".key-commands li[data-key='{id}'] pre"))
        .await;
    for expected in [
        "aws kms create-key",
        "--origin EXTERNAL_KEY_STORE",
        "--custom-key-store-id",
        &format!("--xks-key-id {id}"),
    ] {
        assert!(command.contains(expected), "{expected} not in {command}");
    }
    check_both_widths(&browser, "04-xks-store-with-a-key").await;

    // ---- the quota changed; the store cannot go while it holds a key ----
    press_enter_on(&browser, "#store-settings-summary").await;
    browser.find("#store-settings[open]").await;
    browser.fill("#xks-quota", "75").await;
    press_enter_on(&browser, "#save-settings").await;
    browser
        .wait_text("main .notice", "Saved the quota and mutual TLS", 10)
        .await;
    assert_eq!(
        store(&app, &token, "payments").await["quota_per_second"],
        75
    );
    assert!(
        browser
            .text("#xks-store-facts")
            .await
            .contains("75 requests")
    );
    press_enter_on(&browser, "#delete-store").await;
    browser.find("#delete-has-keys").await;
    check_both_widths(&browser, "05-xks-delete-store-with-keys").await;
    press_enter_on(&browser, "#confirm-delete-store").await;
    let refusal = browser
        .wait_text("main .notice.error", "still has 1 XKS key", 10)
        .await;
    assert!(refusal.contains("delete it first"), "{refusal}");
    assert_eq!(store(&app, &token, "payments").await["key_count"], 1);

    // ---- one key officer alone: disable, but not enable, nor create a store ----
    let officer = Browser::start("xks-officer").await;
    log_in_alone(&app, &officer, "Officer1", OFFICER_PASSWORD).await;
    officer.goto(&format!("{}/ui/xks/payments", app.base)).await;
    press_enter_on(&officer, &format!("#disable-{id}")).await;
    officer
        .wait_text("main .notice", "Disabled XKS key", 10)
        .await;
    let disabled = keys(&app, &token, "payments").await;
    assert_eq!(disabled[0]["enabled"], false, "{disabled:?}");
    assert!(
        officer
            .text(&format!("{key_row} td.state"))
            .await
            .contains("Disabled")
    );
    press_enter_on(&officer, &format!("#enable-{id}")).await;
    let refusal = officer
        .wait_text("main .notice.error", "dual control", 10)
        .await;
    assert!(refusal.contains("needs dual control"), "{refusal}");
    assert_eq!(keys(&app, &token, "payments").await[0]["enabled"], false);
    check_page(&officer, "06-officer-refused-enable").await;

    officer.goto(&format!("{}/ui/xks", app.base)).await;
    let note = officer
        .text("#create-store p[data-dual-control='required']")
        .await;
    assert!(note.contains("Needs two identities"), "{note}");
    officer.fill("#xks-name", "solo").await;
    press_enter_on(&officer, "#create-store-button").await;
    let refusal = officer
        .wait_text("main .notice.error", "dual control", 10)
        .await;
    assert!(
        refusal.contains("needs dual control") && refusal.contains("second identity"),
        "{refusal}"
    );
    assert_eq!(
        officer.attribute("#xks-name", "value").await.as_deref(),
        Some("solo")
    );
    check_page(&officer, "07-officer-refused-store").await;
    officer.quit().await;
    let (status, _) = app.get("/api/v1/xks/stores/solo", &token).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // ---- two officers enable it again ----
    browser.goto(&format!("{}/ui/xks/payments", app.base)).await;
    press_enter_on(&browser, &format!("#enable-{id}")).await;
    browser
        .wait_text("main .notice", "Enabled XKS key", 10)
        .await;
    assert_eq!(keys(&app, &token, "payments").await[0]["enabled"], true);

    // ---- rotation: a second credential, its secret shown once ----
    press_enter_on(&browser, "#rotate-credential").await;
    browser
        .wait_text("main .notice", "Issued a new credential", 10)
        .await;
    let second = shown_credential(&browser).await;
    assert_ne!(second.access_key_id, first.access_key_id);
    assert_ne!(second.secret, first.secret);
    assert!(
        second.commands.contains("aws kms update-custom-key-store")
            && second.commands.contains(&format!(
                "'AccessKeyId={},RawSecretAccessKey={}'",
                second.access_key_id, second.secret
            )),
        "{}",
        second.commands
    );
    check_both_widths(&browser, "07-xks-rotated-secret-once").await;
    assert_eq!(
        access_key_ids(&store(&app, &token, "payments").await),
        [first.access_key_id.clone(), second.access_key_id.clone()]
    );
    for credential in [&first, &second] {
        proxy_answers(
            &app,
            uri_path,
            (&credential.access_key_id, &credential.secret),
            200,
        )
        .await;
    }

    // Two at a time: no third until one is revoked.
    browser.goto(&format!("{}/ui/xks/payments", app.base)).await;
    assert!(browser.exists("#rotate-full").await);
    assert!(!browser.exists("#rotate-credential").await);
    assert!(!browser.source().await.contains(&second.secret));

    // ---- the older one revoked: its signature is refused ----
    press_enter_on(&browser, &format!("#revoke-{}", first.access_key_id)).await;
    browser.find("#confirm-revoke").await;
    check_both_widths(&browser, "08-xks-revoke-confirm").await;
    press_enter_on(&browser, "#confirm-revoke").await;
    browser
        .wait_text("main .notice", "Revoked credential", 10)
        .await;
    assert_eq!(
        access_key_ids(&store(&app, &token, "payments").await),
        [second.access_key_id.as_str()]
    );
    assert!(browser.exists("#rotate-credential").await);
    proxy_answers(&app, uri_path, (&first.access_key_id, &first.secret), 401).await;
    let (status, answer) =
        signed_health(&app, uri_path, &second.access_key_id, &second.secret).await;
    assert_eq!(status, 200, "the newer credential was refused: {answer}");

    // ---- an auditor reads, and finds no form ----
    let auditor = Browser::start("xks-auditor").await;
    log_in_alone(&app, &auditor, "Auditor1", AUDITOR_PASSWORD).await;
    for (page, shot) in [
        ("/ui/xks", "09-auditor-list"),
        ("/ui/xks/payments", "10-auditor-store"),
    ] {
        auditor.goto(&format!("{}{page}", app.base)).await;
        auditor.find("#xks-read-only").await;
        let forms = auditor
            .execute(
                "return document.querySelectorAll('main form, main button, main textarea, main input').length;",
                json!([]),
            )
            .await;
        assert_eq!(forms, 0, "{page} offers an auditor a form");
        check_page(&auditor, shot).await;
    }
    assert!(auditor.text(&key_row).await.contains("payroll"));
    auditor.quit().await;

    // ---- a key is deleted only once disabled ----
    assert!(!browser.exists(&format!("#delete-{id}")).await);
    press_enter_on(&browser, &format!("#disable-{id}")).await;
    browser
        .wait_text("main .notice", "Disabled XKS key", 10)
        .await;
    press_enter_on(&browser, &format!("#delete-{id}")).await;
    browser.find("#confirm-delete").await;
    check_both_widths(&browser, "11-xks-delete-key").await;
    press_enter_on(&browser, "#confirm-delete").await;
    browser
        .wait_text("main .notice", "Deleted XKS key", 10)
        .await;
    assert!(keys(&app, &token, "payments").await.is_empty());
    assert_eq!(
        browser.text("#xks-keys-table tbody").await.trim(),
        "No keys yet."
    );

    // ---- the empty store deleted: AWS KMS can no longer reach it ----
    press_enter_on(&browser, "#delete-store").await;
    assert!(!browser.exists("#delete-has-keys").await);
    press_enter_on(&browser, "#confirm-delete-store").await;
    browser
        .wait_text("main .notice", "Deleted external key store payments", 10)
        .await;
    let (status, _) = app.get("/api/v1/xks/stores/payments", &token).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        browser.text("#xks-stores-table tbody").await.trim(),
        "No external key stores yet."
    );
    // The spec's InvalidUriPathException, once every node has reloaded.
    proxy_answers(&app, uri_path, (&second.access_key_id, &second.secret), 404).await;
    browser.quit().await;
}

#[tokio::test]
async fn a_quorum_sends_store_creation_for_approval() {
    let app = TestApp::spawn().await;
    clock_at_wall_time(&app);
    let token = app.dual_session().await;
    let (status, body) = app
        .request(
            reqwest::Method::PUT,
            "/api/v1/approval-policies",
            Some(&token),
            Some(json!({"quorums": {"manage_xks_stores": {"approvals": 1, "role": "administrator", "expires_after_hours": 24}}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let browser = Browser::start("xks-quorum").await;
    log_in_alone(&app, &browser, "Admin1", ADMIN1_PASSWORD).await;
    browser.goto(&format!("{}/ui/xks", app.base)).await;
    let note = browser
        .text("#create-store p[data-approval='required']")
        .await;
    assert!(note.contains("Sent for approval"), "{note}");
    check_both_widths(&browser, "01-xks-under-a-quorum").await;
    browser.fill("#xks-name", "held").await;
    press_enter_on(&browser, "#create-store-button").await;
    let sent = browser
        .wait_text("main .notice", "Sent for approval", 10)
        .await;
    assert!(sent.contains("waits for 1 approval"), "{sent}");
    let summary = browser.text("#approval-request").await;
    assert!(summary.contains("held"), "{summary}");
    // Nothing secret in the request: its parameters hold no credential.
    assert!(!browser.source().await.contains("RawSecretAccessKey"));
    let (_, stores) = app.get("/api/v1/xks/stores", &token).await;
    assert_eq!(stores, json!([]));
    let url = browser.current_url().await;
    let request = url
        .split("/ui/approvals/")
        .nth(1)
        .and_then(|rest| rest.split(['?', '#']).next())
        .unwrap_or_else(|| panic!("not on an approval request's page: {url}"))
        .to_owned();

    // ---- Admin2 approves: the store is made, its secret waits for Admin1 ----
    let admin2 = alone(&app, ("Admin2", ADMIN2_PASSWORD)).await;
    let (status, body) = app
        .post(
            &format!("/api/v1/approvals/{request}/approve"),
            Some(&admin2),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "executed", "{body}");
    assert!(!body.to_string().contains("RawSecretAccessKey"), "{body}");

    browser
        .goto(&format!("{}/ui/approvals/{request}", app.base))
        .await;
    assert_eq!(
        browser.text("#show-result").await.trim(),
        "Show the credential's secret"
    );
    press_enter_on(&browser, "#show-result").await;
    browser.find("#xks-secret").await;
    let shown = shown_credential(&browser).await;
    assert!(
        shown.commands.contains("aws kms create-custom-key-store")
            && shown
                .commands
                .contains("--xks-proxy-uri-path /xks/held/kms/xks/v1"),
        "{}",
        shown.commands
    );
    check_both_widths(&browser, "02-xks-collected-secret-once").await;
    let held = store(&app, &token, "held").await;
    assert_eq!(access_key_ids(&held), [shown.access_key_id.as_str()]);
    proxy_answers(
        &app,
        "/xks/held/kms/xks/v1",
        (&shown.access_key_id, &shown.secret),
        200,
    )
    .await;

    // Collected once: the request's page never offers it again.
    browser
        .goto(&format!("{}/ui/approvals/{request}", app.base))
        .await;
    browser.find("#approval-status").await;
    assert!(!browser.exists("#show-result").await);
    assert!(!browser.source().await.contains(&shown.secret));
    browser.quit().await;
}
