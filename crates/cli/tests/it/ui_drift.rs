//! The Drift screen and the drift badges in a real browser: keyboard, axe.
//!
//! Drift is made out of band through the AWS API (the LocalStack peer), as
//! someone in the console would: a key disabled, its alias deleted, its
//! policy edited. The officers run *Check now* from the keyboard, see the
//! findings with their badges on the Keys screen and in the navigation,
//! read the reconcile plan, and apply it with two identities; what AWS
//! holds afterwards is read back through the AWS API. A single officer is
//! told the plan needs a second one; under a quorum policy the plan is sent
//! for approval. Every screen passes axe-core at 1280 and 800 px.

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::kms::Kms;
use crate::ui::check_page;
use crate::ui_steps::{check_both_widths, log_in_alone, log_in_both, tab_to};
use crate::webdriver::{Browser, keys};

/// A policy other than the group's (`group_body`'s), as someone edited it
/// in the console: another account may use the key.
const EDITED_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"root","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"},{"Sid":"partner","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::444455556666:root"},"Action":"kms:Decrypt","Resource":"*"}]}"#;

/// The Drift link of the navigation: its text and accessible name.
async fn drift_link(browser: &Browser) -> (String, Option<String>) {
    let link = "nav.side a[href='/ui/drift']";
    (
        browser.text(link).await.trim().to_owned(),
        browser.attribute(link, "aria-label").await,
    )
}

/// The job a form started: the Jobs screen it led to names it.
async fn started_job(browser: &Browser) -> String {
    browser.wait_text("main .notice", "Started job", 10).await;
    let url = browser.current_url().await;
    url.split("name=")
        .nth(1)
        .unwrap_or_else(|| panic!("no job named in {url}"))
        .split('&')
        .next()
        .unwrap()
        .to_owned()
}

/// Waits until the Jobs screen's row of `job` shows `status`, without
/// reloading (the page refreshes its rows).
async fn wait_job_row(browser: &Browser, job: &str, status: &str) -> String {
    browser
        .wait_text(&format!("tr[data-job='{job}'] td.status"), status, 60)
        .await;
    browser.text(&format!("tr[data-job='{job}']")).await
}

/// The group's open findings, as the API lists them.
async fn open_findings(app: &TestApp, token: &str, group: &str) -> Vec<Value> {
    let (status, found) = app
        .get(&format!("/api/v1/drift/findings?group={group}"), token)
        .await;
    assert_eq!(status, StatusCode::OK, "{found}");
    found.as_array().unwrap().clone()
}

fn kinds(findings: &[Value]) -> BTreeSet<String> {
    findings
        .iter()
        .map(|f| f["kind"].as_str().unwrap().to_owned())
        .collect()
}

/// A group rotated once into the KMS peer; its active KMS key.
async fn rotated_group(app: &TestApp, token: &str, prefix: &str) -> (String, String) {
    let group = unique(prefix);
    let (status, body) = app.create_group(token, group_body(&group, "aws")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let kms_key = app.rotate_ok(token, &group).await;
    (group, kms_key)
}

/// Someone in the console: the key disabled, its alias deleted, its policy
/// edited.
async fn drift_out_of_band(kms: &Kms, group: &str, kms_key: &str) {
    kms.client
        .disable_key()
        .key_id(kms_key)
        .send()
        .await
        .unwrap();
    kms.client
        .delete_alias()
        .alias_name(format!("alias/{group}"))
        .send()
        .await
        .unwrap();
    kms.client
        .put_key_policy()
        .key_id(kms_key)
        .policy_name("default")
        .policy(EDITED_POLICY)
        .send()
        .await
        .unwrap();
}

/// The index the Drift screen gives `group` (its Check now button's id).
async fn check_now_button(browser: &Browser, group: &str) -> String {
    let id = browser
        .attribute(&format!("#drift-groups button[data-group='{group}']"), "id")
        .await
        .unwrap();
    format!("#{id}")
}

#[tokio::test]
async fn officers_find_drift_from_the_keyboard_and_apply_the_plan_with_two_identities() {
    let app = TestApp::spawn().await;
    let token = app.dual_session().await;
    app.import_kms_credential(&token, "aws").await;
    let kms = Kms::connect().await;
    let (group, kms_key) = rotated_group(&app, &token, "ui-drift").await;
    let browser = Browser::start("drift").await;
    log_in_both(&app, &browser).await;

    // ---- before any drift: the screen, and no badge anywhere ----
    browser.click("nav.side a[href='/ui/drift']").await;
    browser.find("#drift-groups").await;
    let row = browser
        .text(&format!("#drift-groups tr[data-group='{group}']"))
        .await;
    assert!(
        row.contains("Never checked") && row.contains("Off"),
        "{row}"
    );
    assert_eq!(drift_link(&browser).await, ("Drift".to_owned(), None));
    check_both_widths(&browser, "01-drift-nothing-yet").await;

    // ---- drift made in AWS, then Check now from the keyboard alone ----
    drift_out_of_band(&kms, &group, &kms_key).await;
    let check_now = check_now_button(&browser, &group).await;
    tab_to(&browser, &check_now).await;
    browser.press(keys::ENTER).await;
    let check = started_job(&browser).await;
    let row = wait_job_row(&browser, &check, "succeeded").await;
    assert!(row.contains("Check HSM protected keys"), "{row}");

    let open = open_findings(&app, &token, &group).await;
    let found = kinds(&open);
    for kind in ["state_differs", "alias_missing", "policy_differs"] {
        assert!(found.contains(kind), "{kind} not found: {open:#?}");
    }
    let count = open.len();

    // ---- the badges: navigation, group and key on the Keys screen ----
    browser.click("nav.side a[href='/ui/keys']").await;
    browser.find("#keys-table").await;
    let (text, name) = drift_link(&browser).await;
    assert_eq!(text, format!("Drift ({count})"));
    assert_eq!(
        name.as_deref(),
        Some(format!("Drift ({count}): {count} open drift findings").as_str())
    );
    let group_badge = format!("tbody[data-group='{group}'] tr.group-row a.badge.drift");
    assert_eq!(
        browser.text(&group_badge).await.trim(),
        format!("Drift: {count}")
    );
    let label = browser.attribute(&group_badge, "aria-label").await.unwrap();
    assert!(
        label.starts_with(&format!(
            "Drift: {count} open findings in key group {group}"
        )),
        "{label}"
    );
    let key_badge = format!("tbody[data-group='{group}'] tr.key-row a.badge.drift");
    let key_badge_text = browser.text(&key_badge).await;
    assert!(
        key_badge_text.trim().starts_with("Drift: "),
        "{key_badge_text}"
    );
    let (_, key) = app.get(&format!("/api/v1/keys/{kms_key}"), &token).await;
    assert_eq!(
        key_badge_text.trim(),
        format!("Drift: {}", key["drift_open"]),
        "{key}"
    );
    check_both_widths(&browser, "02-keys-with-drift-badges").await;

    // ---- the badge leads to the group's findings and plan ----
    browser.click(&group_badge).await;
    browser.find("ol.plan-actions").await;
    assert!(
        browser
            .current_url()
            .await
            .contains(&format!("group={group}")),
        "the badge did not filter the Drift screen"
    );
    let section = format!("section.drift-group[data-group='{group}']");
    for finding in &open {
        let row = browser
            .text(&format!(
                "{section} tr[data-finding='{}']",
                finding["id"].as_str().unwrap()
            ))
            .await;
        assert!(
            row.contains(finding["subject"].as_str().unwrap()),
            "{row} / {finding}"
        );
    }
    // The policy's difference, line by line, in a <pre>.
    let difference = browser
        .text(&format!(
            "{section} tr[data-kind='policy_differs'] pre.drift-detail"
        ))
        .await;
    assert!(
        difference.contains("444455556666") && difference.lines().count() > 2,
        "{difference}"
    );
    // The disabled key waits for officers; the alias and policy are safe.
    let plan = browser.text(&format!("{section} ol.plan-actions")).await;
    assert!(
        plan.contains(&format!("Enable KMS key {kms_key}")) && plan.contains("officers only"),
        "{plan}"
    );
    assert!(
        plan.contains(&format!("Point alias alias/{group} at KMS key {kms_key}")),
        "{plan}"
    );
    assert!(
        browser
            .exists(&format!(
                "{section} li[data-action='put_policy'][data-safe='true']"
            ))
            .await
    );
    let hint = browser.text(&format!("{section} .plan .hint.dual")).await;
    assert!(hint.contains("needs two identities"), "{hint}");
    check_both_widths(&browser, "03-drift-findings-and-plan").await;

    // No cleared findings yet.
    browser.click("#toggle-cleared").await;
    browser
        .wait_text(
            &format!("{section} .no-cleared"),
            "No cleared findings.",
            10,
        )
        .await;

    // ---- one officer alone is told it needs a second, and refused ----
    let alone_browser = Browser::start("drift-alone").await;
    log_in_alone(&app, &alone_browser, "Admin1", ADMIN1_PASSWORD).await;
    alone_browser
        .goto(&format!("{}/ui/drift?group={group}", app.base))
        .await;
    let note = alone_browser
        .text(&format!("{section} p[data-dual-control='required']"))
        .await;
    assert!(note.contains("Needs two identities"), "{note}");
    alone_browser
        .click(&format!("{section} form.apply-plan button[type=submit]"))
        .await;
    let refusal = alone_browser.text("main .notice.error").await;
    assert!(refusal.contains("needs dual control"), "{refusal}");
    check_page(&alone_browser, "04-alone-refused").await;
    alone_browser.quit().await;
    assert_eq!(open_findings(&app, &token, &group).await.len(), count);

    // ---- two officers apply it from the keyboard; AWS is put back ----
    let apply = browser
        .attribute(
            &format!("{section} form.apply-plan button[type=submit]"),
            "id",
        )
        .await
        .unwrap();
    tab_to(&browser, &format!("#{apply}")).await;
    browser.press(keys::ENTER).await;
    let reconcile = started_job(&browser).await;
    let row = wait_job_row(&browser, &reconcile, "succeeded").await;
    assert!(row.contains("Reconcile HSM protected keys"), "{row}");
    assert_eq!(kms.state(&kms_key).await, "Enabled");
    assert_eq!(
        kms.alias_target(&format!("alias/{group}")).await.as_deref(),
        Some(kms_key.as_str())
    );
    let policy = kms.policy(&kms_key).await;
    assert!(!policy.to_string().contains("444455556666"), "{policy}");
    assert!(open_findings(&app, &token, &group).await.is_empty());

    // ---- cleared: no badge, the findings listed as cleared ----
    browser
        .goto(&format!("{}/ui/drift?group={group}&cleared=1", app.base))
        .await;
    browser.find(&format!("{section} table.findings")).await;
    assert_eq!(drift_link(&browser).await, ("Drift".to_owned(), None));
    assert!(browser.exists(&format!("{section} .no-findings")).await);
    let cleared = browser.text(&format!("{section} table.findings")).await;
    for kind in ["Key state differs", "Alias missing", "Key policy differs"] {
        assert!(cleared.contains(kind), "{kind} not cleared: {cleared}");
    }
    check_both_widths(&browser, "05-drift-cleared").await;
    browser.goto(&format!("{}/ui/keys", app.base)).await;
    browser.find("#keys-table").await;
    assert!(!browser.exists("#keys-table a.badge.drift").await);
    browser.quit().await;
}

#[tokio::test]
async fn a_quorum_sends_the_plan_for_approval_and_the_settings_are_set_in_the_ui() {
    let app = TestApp::spawn().await;
    let token = app.dual_session().await;
    app.import_kms_credential(&token, "aws").await;
    let kms = Kms::connect().await;
    let (group, kms_key) = rotated_group(&app, &token, "ui-drift-q").await;
    let browser = Browser::start("drift-quorum").await;
    log_in_both(&app, &browser).await;

    // ---- the settings: the check interval and expiry window, self-heal ----
    browser
        .goto(&format!("{}/ui/configuration", app.base))
        .await;
    browser.fill("#config-drift_check_hours", "0").await;
    browser.fill("#config-drift_expiry_days", "45").await;
    browser.click("#save-configuration").await;
    browser
        .wait_text("main .notice", "Configuration saved.", 10)
        .await;
    let (_, config) = app.get("/api/v1/config", &token).await;
    assert_eq!(config["drift_check_hours"], 0, "{config}");
    assert_eq!(config["drift_expiry_days"], 45, "{config}");
    browser
        .goto(&format!("{}/ui/keys/groups/{group}/edit", app.base))
        .await;
    browser.click("#tab-aws-button").await;
    assert!(!browser.is_selected("#group-self-heal").await);
    browser.click("#group-self-heal").await;
    browser.click("#save-group").await;
    browser
        .wait_text(
            "main .notice",
            &format!("Updated HSM protected key group {group}."),
            10,
        )
        .await;
    let (_, saved) = app.get(&format!("/api/v1/groups/{group}"), &token).await;
    assert_eq!(saved["self_heal"], true, "{saved}");

    // ---- a key disabled in the console; Check all ----
    kms.client
        .disable_key()
        .key_id(&kms_key)
        .send()
        .await
        .unwrap();
    browser.goto(&format!("{}/ui/drift", app.base)).await;
    let schedule = browser.text("#drift-schedule").await;
    assert!(
        schedule.contains("Scheduled checks are off") && schedule.contains("45 days"),
        "{schedule}"
    );
    browser.click("#check-all").await;
    let notice = browser
        .wait_text("main .notice", "Started 1 drift check", 10)
        .await;
    assert!(notice.contains("Jobs screen"), "{notice}");
    app.eventually("the check finds the disabled key", || async {
        let found = open_findings(&app, &token, &group).await;
        kinds(&found).contains("state_differs").then_some(())
    })
    .await;
    // Self-heal makes only safe repairs: enabling waits for officers.
    assert_eq!(kms.state(&kms_key).await, "Disabled");

    // ---- a quorum holds reconcile_drift: Apply plan becomes a request ----
    let (status, body) = app
        .request(
            reqwest::Method::PUT,
            "/api/v1/approval-policies",
            Some(&token),
            Some(json!({"quorums": {"reconcile_drift": {"approvals": 1, "role": "administrator", "expires_after_hours": 24}}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let alone_browser = Browser::start("drift-quorum-requester").await;
    log_in_alone(&app, &alone_browser, "Admin1", ADMIN1_PASSWORD).await;
    alone_browser
        .goto(&format!("{}/ui/drift?group={group}", app.base))
        .await;
    let section = format!("section.drift-group[data-group='{group}']");
    let row = alone_browser
        .text(&format!("#drift-groups tr[data-group='{group}']"))
        .await;
    assert!(row.contains("On"), "self-heal not shown: {row}");
    let note = alone_browser
        .text(&format!("{section} p[data-approval='required']"))
        .await;
    assert!(note.contains("Sent for approval"), "{note}");
    check_both_widths(&alone_browser, "01-plan-under-a-quorum").await;
    alone_browser
        .click(&format!("{section} form.apply-plan button[type=submit]"))
        .await;
    let sent = alone_browser
        .wait_text("main .notice", "Sent for approval", 10)
        .await;
    assert!(sent.contains("waits for 1 approval"), "{sent}");
    let summary = alone_browser.text("#approval-request").await;
    assert!(
        summary.contains(&group) && summary.contains("enable KMS key"),
        "{summary}"
    );
    alone_browser.quit().await;
    browser.quit().await;
}
