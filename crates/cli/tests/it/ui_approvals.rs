//! Quorum approvals in the web UI, in headless Chromium against a real
//! server: the policies set on the Configuration screen, a held operation
//! sent for approval from its own form, the requester unable to answer it,
//! another administrator's badge, the request's exact parameters, Approve
//! (which runs it) and Deny with a reason, and the one-time password of an
//! identity added under a quorum shown once to its requester. The Approvals
//! pages are checked with axe-core at 1280 and 800 px, and their answer
//! forms from the keyboard alone.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;
use crate::ui::{check_page, log_in};
use crate::ui_steps::{log_in_alone, tab_to};
use crate::webdriver::{Browser, keys};

const ADMIN3_PASSWORD: &str = "Admin3-gentle-lantern";

/// Logs the browser's session out.
async fn log_out(browser: &Browser) {
    browser
        .click("header.top form[action='/ui/logout'] button")
        .await;
    browser.wait_text("main", "Logged out.", 10).await;
}

/// Sets a select's value as a person choosing an option would.
async fn choose(browser: &Browser, id: &str, value: &str) {
    browser
        .execute(
            "const s = document.getElementById(arguments[0]); s.value = arguments[1]; s.dispatchEvent(new Event('change'));",
            json!([id, value]),
        )
        .await;
}

/// Sets class `class` to a quorum of `approvals` administrators in the
/// policies form and saves the whole set.
async fn set_quorum(browser: &Browser, class: &str, approvals: u8) {
    choose(browser, &format!("policy-kind-{class}"), "quorum").await;
    browser
        .fill(
            &format!("#policy-approvals-{class}"),
            &approvals.to_string(),
        )
        .await;
    choose(browser, &format!("policy-role-{class}"), "administrator").await;
    browser.fill(&format!("#policy-hours-{class}"), "24").await;
    browser.click("#save-approval-policies").await;
}

/// The id of the request whose page the browser shows.
async fn request_id(browser: &Browser) -> String {
    let url = browser.current_url().await;
    let path = url.split("/ui/approvals/").nth(1).unwrap_or_else(|| {
        panic!("not on an approval request's page: {url}");
    });
    path.split(['?', '#']).next().unwrap().to_owned()
}

/// The Approvals link of the navigation: its text and accessible name.
async fn approvals_link(browser: &Browser) -> (String, Option<String>) {
    let link = "nav.side a[href='/ui/approvals']";
    (
        browser.text(link).await,
        browser.attribute(link, "aria-label").await,
    )
}

/// axe-core at both widths on the page shown now.
async fn check_both_widths(browser: &Browser, name: &str) {
    for (width, height) in [(1280, 800), (800, 900)] {
        browser.resize(width, height).await;
        check_page(browser, &format!("{width}-{name}")).await;
        let overflow = browser
            .execute(
                "return document.documentElement.scrollWidth - window.innerWidth;",
                json!([]),
            )
            .await;
        assert!(
            overflow.as_i64().unwrap() <= 0,
            "{name} at {width} px scrolls sideways by {overflow} px"
        );
    }
    browser.resize(1280, 800).await;
}

#[tokio::test]
async fn a_quorum_holds_group_deletion_until_another_administrator_answers() {
    let app = TestApp::spawn().await;
    let token = app.dual_session().await;
    app.add_identity(&token, "Admin3", "administrator", ADMIN3_PASSWORD)
        .await;
    app.import_credential(&token, "aws").await;
    let approved_group = unique("ui-quorum");
    let denied_group = unique("ui-denied");
    for group in [&approved_group, &denied_group] {
        let (status, body) = app.create_group(&token, group_body(group, "aws")).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    // ---- the policy, under today's dual control ----
    let first = Browser::start("approvals-requester").await;
    log_in_alone(&app, &first, "Admin1", ADMIN1_PASSWORD).await;
    log_in(&first, "Admin2", ADMIN2_PASSWORD).await;
    first
        .wait_text("main .notice", "Admin2 joined this session.", 10)
        .await;
    first.goto(&format!("{}/ui/configuration", app.base)).await;
    first.find("#approval-policies-form").await;
    check_page(&first, "01-policies").await;
    set_quorum(&first, "delete_group", 1).await;
    first
        .wait_text("main .notice", "Approval policies saved.", 10)
        .await;
    let row = first
        .text("#approval-policies-table tr[data-class='delete_group'] td.policy")
        .await;
    assert!(row.contains("1 approval from administrator"), "{row}");
    let delete_group = app.approval_policy(&token, "delete_group").await;
    assert_eq!(delete_group["policy"], "quorum", "{delete_group}");
    assert_eq!(delete_group["approvals"], 1, "{delete_group}");
    log_out(&first).await;

    // ---- Admin1 alone asks; the form sends it for approval ----
    log_in_alone(&app, &first, "Admin1", ADMIN1_PASSWORD).await;
    first
        .goto(&format!(
            "{}/ui/keys/groups/{approved_group}/delete",
            app.base
        ))
        .await;
    // The dialog says what will happen: a request, not a refusal for want
    // of a second officer.
    let note = first.text("p[data-approval='required']").await;
    assert!(
        note.contains("runs once 1 administrator other than you approve it"),
        "{note}"
    );
    assert!(!first.exists("dialog p[data-dual-control='required']").await);
    first.click("#confirm-delete").await;
    let notice = first
        .wait_text("main .notice", "Sent for approval", 10)
        .await;
    assert!(
        notice.contains("waits for 1 approval from administrator identities"),
        "{notice}"
    );
    let approved_id = request_id(&first).await;
    assert_eq!(first.text("#approval-status").await.trim(), "pending");
    assert!(
        !first.exists("#approve-request").await && !first.exists("#deny-request").await,
        "the requester was offered to answer its own request"
    );
    let why = first.text("#approval-why-not").await;
    assert!(why.contains("You asked for this"), "{why}");
    let (status, _) = app
        .get(&format!("/api/v1/groups/{approved_group}"), &token)
        .await;
    assert_eq!(status, StatusCode::OK, "the group went before its approval");
    // Its own request counts for nobody in Admin1's badge.
    let (text, name) = approvals_link(&first).await;
    assert_eq!(text.trim(), "Approvals", "{name:?}");

    // A forged approval from the requester is refused, on the page.
    first
        .execute(
            r#"
            const f = document.createElement('form');
            f.method = 'post';
            f.action = '/ui/approvals/' + arguments[0] + '/approve';
            const c = document.createElement('input');
            c.type = 'hidden'; c.name = 'csrf';
            c.value = document.querySelector('input[name=csrf]').value;
            f.appendChild(c);
            document.body.appendChild(f);
            f.submit();
            "#,
            json!([approved_id]),
        )
        .await;
    first.find("main .notice.error").await;
    let (status, view) = app
        .get(&format!("/api/v1/approvals/{approved_id}"), &token)
        .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["status"], "pending", "{view}");

    // ---- Admin2, in its own browser, approves ----
    let second = Browser::start("approvals-approver").await;
    log_in_alone(&app, &second, "Admin2", ADMIN2_PASSWORD).await;
    second.goto(&format!("{}/ui/keys", app.base)).await;
    let (text, name) = approvals_link(&second).await;
    assert_eq!(text.trim(), "Approvals (1)");
    assert!(
        name.as_deref()
            .is_some_and(|n| n.contains("1 request waits for your approval")),
        "{name:?}"
    );
    second.click("nav.side a[href='/ui/approvals']").await;
    second.find("#approvals-table").await;
    let listed = second
        .text(&format!("tr[data-approval='{approved_id}']"))
        .await;
    assert!(
        listed.contains("pending") && listed.contains("Admin1") && listed.contains("0 of 1"),
        "{listed}"
    );
    check_both_widths(&second, "02-approvals-list").await;
    second
        .click(&format!("tr[data-approval='{approved_id}'] a"))
        .await;
    second.find("#approve-form").await;
    let parameters = second.text("#approval-operation").await;
    assert!(
        parameters.contains("\"kind\": \"delete_group\"")
            && parameters.contains(&format!("\"group\": \"{approved_group}\"")),
        "{parameters}"
    );
    let hash = second.text("#approval-hash").await;
    assert_eq!(hash.trim().len(), 64, "{hash}");
    assert_eq!(hash.trim(), view["params_hash"].as_str().unwrap());
    check_both_widths(&second, "03-approval-request").await;
    // Both answers are reachable from the keyboard alone.
    tab_to(&second, "#approve-request").await;
    tab_to(&second, "#deny-reason").await;
    tab_to(&second, "#deny-request").await;
    tab_to(&second, "#approve-request").await;
    second.press(keys::ENTER).await;
    let notice = second
        .wait_text("main .notice", "You approved this request", 10)
        .await;
    assert!(notice.contains("ran"), "{notice}");
    assert_eq!(second.text("#approval-status").await.trim(), "executed");
    assert!(second.text("#votes-table").await.contains("Admin2"));
    assert!(!second.exists("#approve-request").await);
    let (text, _) = approvals_link(&second).await;
    assert_eq!(text.trim(), "Approvals");
    let (status, _) = app
        .get(&format!("/api/v1/groups/{approved_group}"), &token)
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "the approved deletion did not run"
    );
    check_page(&second, "04-executed").await;

    // ---- a second request, denied with a reason by Admin3 ----
    first
        .goto(&format!(
            "{}/ui/keys/groups/{denied_group}/delete",
            app.base
        ))
        .await;
    first.click("#confirm-delete").await;
    first
        .wait_text("main .notice", "Sent for approval", 10)
        .await;
    let denied_id = request_id(&first).await;
    log_out(&second).await;
    log_in_alone(&app, &second, "Admin3", ADMIN3_PASSWORD).await;
    second
        .goto(&format!("{}/ui/approvals/{denied_id}", app.base))
        .await;
    second
        .fill("#deny-reason", "not during the change freeze")
        .await;
    second.click("#deny-request").await;
    second
        .wait_text("main .notice", "You denied this request", 10)
        .await;
    assert_eq!(second.text("#approval-status").await.trim(), "denied");
    let votes = second.text("#votes-table").await;
    assert!(
        votes.contains("Admin3") && votes.contains("not during the change freeze"),
        "{votes}"
    );
    let (status, _) = app
        .get(&format!("/api/v1/groups/{denied_group}"), &token)
        .await;
    assert_eq!(status, StatusCode::OK, "a denied deletion ran");
    // The requester reads the answer; the list shows both decided.
    first
        .goto(&format!("{}/ui/approvals/{denied_id}", app.base))
        .await;
    assert_eq!(first.text("#approval-status").await.trim(), "denied");
    assert!(
        first
            .text("#votes-table")
            .await
            .contains("not during the change freeze")
    );
    first.goto(&format!("{}/ui/approvals", app.base)).await;
    for (id, status) in [(&approved_id, "executed"), (&denied_id, "denied")] {
        let row = first.text(&format!("tr[data-approval='{id}']")).await;
        assert!(row.contains(status), "{row}");
    }
    check_both_widths(&first, "05-approvals-decided").await;
    first.quit().await;
    second.quit().await;
}

#[tokio::test]
async fn a_policy_change_and_an_added_identity_wait_for_approval() {
    let app = TestApp::spawn().await;
    let token = app.dual_session().await;
    // A quorum somewhere makes every policy change a request.
    let (status, body) = app
        .request(
            reqwest::Method::PUT,
            "/api/v1/approval-policies",
            Some(&token),
            Some(json!({"quorums": {"delete_group": {"approvals": 1, "role": "administrator", "expires_after_hours": 24}}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // ---- Admin1 asks from the Configuration screen ----
    let first = Browser::start("approvals-policies").await;
    log_in_alone(&app, &first, "Admin1", ADMIN1_PASSWORD).await;
    first.goto(&format!("{}/ui/configuration", app.base)).await;
    first.find("#approval-policies-form").await;
    set_quorum(&first, "manage_identities", 1).await;
    let notice = first
        .wait_text("main .notice", "Sent for approval", 10)
        .await;
    assert!(
        notice.contains("waits for 1 approval from administrator identities"),
        "{notice}"
    );
    let policy_request = request_id(&first).await;
    let changes = first.text("#policy-changes").await;
    assert!(
        changes.contains("manage_identities") && changes.contains("dual control"),
        "{changes}"
    );

    // ---- Admin2 approves it; then an identity Admin1 adds waits too ----
    let second = Browser::start("approvals-policies-approver").await;
    log_in_alone(&app, &second, "Admin2", ADMIN2_PASSWORD).await;
    second
        .goto(&format!("{}/ui/approvals/{policy_request}", app.base))
        .await;
    check_both_widths(&second, "01-policy-change").await;
    second.click("#approve-request").await;
    second
        .wait_text("main .notice", "You approved this request", 10)
        .await;
    assert_eq!(second.text("#approval-status").await.trim(), "executed");
    let manage = app.approval_policy(&token, "manage_identities").await;
    assert_eq!(manage["policy"], "quorum", "{manage}");

    let (status, admin1) = app.login(None, "Admin1", ADMIN1_PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{admin1}");
    let admin1 = admin1["token"].as_str().unwrap().to_owned();
    let (status, waiting) = app
        .post(
            "/api/v1/identities",
            Some(&admin1),
            json!({"name": "Officer4", "role": "key_officer"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{waiting}");
    let identity_request = waiting["id"].as_str().unwrap().to_owned();
    second
        .goto(&format!("{}/ui/approvals/{identity_request}", app.base))
        .await;
    second.click("#approve-request").await;
    second
        .wait_text("main .notice", "You approved this request", 10)
        .await;
    // The approver is never offered the requester's password.
    assert!(!second.exists("#show-result").await);

    // ---- the requester sees the one-time password, once ----
    first
        .goto(&format!("{}/ui/approvals/{identity_request}", app.base))
        .await;
    assert_eq!(first.text("#approval-status").await.trim(), "executed");
    first.click("#show-result").await;
    let password = first.text("#approval-password").await;
    let password = password.trim();
    assert!(!password.is_empty());
    check_page(&first, "02-one-time-password").await;
    let (status, body) = app.login(None, "Officer4", password).await;
    assert_ne!(status, StatusCode::UNAUTHORIZED, "{body}");
    first
        .goto(&format!("{}/ui/approvals/{identity_request}", app.base))
        .await;
    assert!(
        !first.exists("#show-result").await,
        "the password was offered a second time"
    );
    assert!(!first.source().await.contains(password));
    first.quit().await;
    second.quit().await;
}
