//! The web UI for everyone who uses it: every screen at 1280 px and at
//! 800 px wide (axe-core finds nothing serious, nothing is cut off, the
//! sidebar gives way), and every dialog and menu from the keyboard alone,
//! in headless Chromium against a real server and the LocalStack KMS peer.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::ui::{check_page, log_in, save_new_group};
use crate::webdriver::{Browser, keys};

/// What a screen's layout looks like now (see [`assert_layout`]).
const LAYOUT: &str = r#"
    const page = document.documentElement.scrollWidth - window.innerWidth;
    const nav = document.querySelector('nav.side');
    const main = document.querySelector('main');
    const n = nav ? nav.getBoundingClientRect() : null;
    const m = main.getBoundingClientRect();
    const tables = Array.from(document.querySelectorAll('.table-wrap')).map(w => ({
        table: (w.querySelector('table') || {}).id || '?',
        hidden: w.scrollWidth - w.clientWidth,
    }));
    const actions = Array.from(document.querySelectorAll('td.row-actions')).filter(td => {
        const r = td.getBoundingClientRect();
        return !(r.left >= -1 && r.right <= window.innerWidth + 1);
    }).length;
    return {
        width: window.innerWidth,
        page_overflow: page,
        nav_above: n ? n.bottom <= m.top + 1 : null,
        nav_beside: n ? n.right <= m.left + 1 : null,
        tables: tables,
        actions_out_of_view: actions,
    };
"#;

/// The screen shown now at `width`: axe-core finds nothing serious or
/// critical, the page never scrolls sideways, the sidebar sits beside the
/// page when wide and above it when narrow; at 1280 px every table shows
/// all its columns, and at 800 px each row's Actions stay in view.
async fn assert_layout(browser: &Browser, width: u32, name: &str) {
    let shot = format!("{width}-{name}");
    check_page(browser, &shot).await;
    let layout = browser.execute(LAYOUT, json!([])).await;
    assert!(
        layout["page_overflow"].as_i64().unwrap() <= 0,
        "{shot}: the page scrolls sideways: {layout}"
    );
    if !layout["nav_above"].is_null() {
        if width <= 800 {
            assert_eq!(
                layout["nav_above"], true,
                "{shot}: sidebar not collapsed: {layout}"
            );
        } else {
            assert_eq!(
                layout["nav_beside"], true,
                "{shot}: sidebar not beside: {layout}"
            );
        }
    }
    if width >= 1280 {
        for table in layout["tables"].as_array().unwrap() {
            assert!(
                table["hidden"].as_i64().unwrap() <= 0,
                "{shot}: table {} hides {} px of columns: {layout}",
                table["table"],
                table["hidden"]
            );
        }
    }
    assert_eq!(
        layout["actions_out_of_view"], 0,
        "{shot}: Actions buttons out of view: {layout}"
    );
}

/// Opens the Actions menu of the last row on the keys screen and checks
/// that its panel lies inside the window and is what a click there hits
/// (no scroll area clips it).
async fn assert_last_menu_reachable(browser: &Browser, width: u32) {
    browser
        .click("#keys-table tbody:last-of-type tr:last-child details.menu summary")
        .await;
    // The script places the panel on the menu's `toggle` event, which the
    // browser fires in a task of its own after the click: on a loaded
    // machine the first look may come before it. Look until it is placed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let seen = loop {
        let seen = browser
            .execute(
                r#"
            const menu = document.querySelector('#keys-table tbody:last-of-type tr:last-child details.menu');
            const panel = menu.querySelector('.menu-panel');
            const r = panel.getBoundingClientRect();
            const item = panel.querySelector('.menu-item').getBoundingClientRect();
            const hit = document.elementFromPoint(item.left + item.width / 2, item.top + item.height / 2);
            return {
                open: menu.open,
                placed: menu.classList.contains('placed'),
                inside: r.left >= 0 && r.top >= 0 && r.right <= window.innerWidth && r.bottom <= window.innerHeight,
                hit: panel.contains(hit),
            };
            "#,
                json!([]),
            )
            .await;
        if seen["placed"] == true || std::time::Instant::now() > deadline {
            break json!({"open": seen["open"], "inside": seen["inside"], "hit": seen["hit"]});
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(
        seen,
        json!({"open": true, "inside": true, "hit": true}),
        "{width} px: the last row's menu is clipped or out of view"
    );
    browser.press(keys::ESCAPE).await;
}

/// Waits (up to 5 s) until the focus is inside `css`: a menu opened from
/// the keyboard moves it there as soon as it is drawn.
async fn wait_focus_in(browser: &Browser, css: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let (focused, inside) = browser.focus(css).await;
        if inside {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the focus never moved into {css}; it is on {focused}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Admin1 and Admin2 log in on the login screen of a server with the
/// administrators activated.
async fn dual_browser_session(app: &TestApp, browser: &Browser) {
    browser.goto(&format!("{}/ui/login", app.base)).await;
    log_in(browser, "Admin1", ADMIN1_PASSWORD).await;
    browser.wait_text("#session-users", "Admin1", 10).await;
    log_in(browser, "Admin2", ADMIN2_PASSWORD).await;
    browser
        .wait_text("main .notice", "Admin2 joined this session.", 10)
        .await;
}

/// A group with two keys (one rotation, then another), a finished rotation
/// and a finished synchronization.
async fn group_with_keys(app: &TestApp, token: &str) -> (String, String, String) {
    app.import_kms_credential(token, "aws").await;
    let group = unique("ui-wide");
    let (status, body) = app.create_group(token, group_body(&group, "aws")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    app.rotate_ok(token, &group).await;
    let job = app.rotate_ok(token, &group).await;
    let (_, keys) = app.get(&format!("/api/v1/keys?group={group}"), token).await;
    let key = keys.as_array().unwrap()[0]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    // A Synchronize job too: its target, a KMS key id, is the widest cell.
    let sync = app
        .sync(
            token,
            &key,
            json!({"update_policy": true, "import_material": true}),
        )
        .await;
    app.wait_job(token, &sync).await;
    (group, key, job)
}

#[tokio::test]
async fn every_screen_reads_and_fits_from_800_px_up() {
    // A stream to a JSON file, so the Audit Logs screen shows its table.
    let siem = tempfile::tempdir().unwrap();
    let stream_file = siem.path().join("audit.jsonl");
    let app = TestApp::spawn_with(|args| args.audit.audit_json_file = Some(stream_file)).await;
    let token = app.dual_session().await;
    let (group, key, job) = group_with_keys(&app, &token).await;
    // An external key store with a key, for its screens' tables.
    let store = unique("ui-wide-xks");
    let (status, body) = app
        .post("/api/v1/xks/stores", Some(&token), json!({"name": store}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = app
        .post(
            &format!("/api/v1/xks/stores/{store}/keys"),
            Some(&token),
            json!({"description": "payroll", "rule": {"principals": ["arn:aws:iam::111122223333:role/payroll-*"]}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // A request waiting for approval, for the Approvals screens.
    let (status, body) = app
        .request(
            reqwest::Method::PUT,
            "/api/v1/approval-policies",
            Some(&token),
            Some(json!({"quorums": {"rotate_group": {"approvals": 1, "role": "administrator", "expires_after_hours": 24}}})),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    let admin1 = alone(&app, ("Admin1", ADMIN1_PASSWORD)).await;
    let (status, request) = app
        .post(
            &format!("/api/v1/groups/{group}/rotate"),
            Some(&admin1),
            json!({}),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::ACCEPTED, "{request}");
    let approval = request["id"].as_str().unwrap().to_owned();
    let browser = Browser::start("widths").await;
    dual_browser_session(&app, &browser).await;

    let screens = [
        ("login-join", "/ui/login".to_owned()),
        ("identities", "/ui/identities".to_owned()),
        ("credentials", "/ui/credentials".to_owned()),
        ("keys", "/ui/keys".to_owned()),
        ("group-new", "/ui/keys/groups/new".to_owned()),
        ("group-edit", format!("/ui/keys/groups/{group}/edit")),
        ("group-rotate", format!("/ui/keys/groups/{group}/rotate")),
        ("group-delete", format!("/ui/keys/groups/{group}/delete")),
        ("key-sync", format!("/ui/keys/{key}/sync")),
        ("key-delete", format!("/ui/keys/{key}/delete")),
        ("jobs", "/ui/jobs".to_owned()),
        ("drift", "/ui/drift".to_owned()),
        ("job", format!("/ui/jobs/{job}")),
        ("audit", "/ui/audit".to_owned()),
        ("configuration", "/ui/configuration".to_owned()),
        ("approvals", "/ui/approvals".to_owned()),
        ("approval", format!("/ui/approvals/{approval}")),
        ("backups", "/ui/backups".to_owned()),
        ("xks", "/ui/xks".to_owned()),
        ("xks-store", format!("/ui/xks/{store}")),
    ];
    for (width, height) in [(1280, 800), (800, 900)] {
        browser.resize(width, height).await;
        for (name, path) in &screens {
            browser.goto(&format!("{}{path}", app.base)).await;
            browser.find("main h1").await;
            if *name == "audit" {
                browser
                    .wait_text("#audit-streams-table", "audit.jsonl", 10)
                    .await;
            }
            assert_layout(&browser, width, name).await;
        }
        browser.goto(&format!("{}/ui/keys", app.base)).await;
        assert_last_menu_reachable(&browser, width).await;
    }
    // The login screen of a browser with no session, narrow.
    browser
        .click("header.top form[action='/ui/logout'] button")
        .await;
    browser.wait_text("main", "Logged out.", 10).await;
    assert_layout(&browser, 800, "login").await;
    browser.quit().await;
}

#[tokio::test]
async fn dialogs_and_menus_work_from_the_keyboard_alone() {
    let app = TestApp::spawn().await;
    let token = app.dual_session().await;
    let (group, _key, _job) = group_with_keys(&app, &token).await;
    let jobs_before = app.get("/api/v1/jobs", &token).await.1;
    let browser = Browser::start("keyboard").await;
    dual_browser_session(&app, &browser).await;
    browser.goto(&format!("{}/ui/keys", app.base)).await;

    // A row's Actions menu: Enter opens it, the arrows walk its items, Esc
    // closes it and gives the focus back to its button.
    let summary = format!("tbody[data-group='{group}'] tr.group-row details.menu summary");
    browser
        .execute(
            "document.querySelector(arguments[0]).focus();",
            json!([summary]),
        )
        .await;
    browser.press(keys::ENTER).await;
    browser.press(keys::ARROW_DOWN).await;
    let menu = format!("tbody[data-group='{group}'] tr.group-row details.menu");
    wait_focus_in(&browser, &format!("{menu} .menu-panel")).await;
    assert_eq!(
        browser
            .execute(
                "return document.activeElement.getAttribute('data-action');",
                json!([])
            )
            .await,
        "edit"
    );
    browser.press(keys::ESCAPE).await;
    let (focused, _) = browser.focus(&menu).await;
    assert_eq!(focused, "summary", "Esc left the focus on {focused}");
    assert!(!browser.exists(&format!("{menu}[open]")).await);

    // Down again opens it at Edit; Enter follows it into the group dialog.
    browser.press(keys::ARROW_DOWN).await;
    wait_focus_in(&browser, &format!("{menu} .menu-panel")).await;
    browser.press(keys::ENTER).await;
    browser.find("#group-dialog").await;
    let (focused, inside) = browser.focus("#group-dialog").await;
    assert!(inside, "the focus did not move into the dialog: {focused}");
    // Tab never reaches the page behind the dialog.
    let mut stayed = 0;
    for _ in 0..40 {
        browser.press(keys::TAB).await;
        let (focused, inside) = browser.focus("#group-dialog").await;
        assert!(
            inside || focused == "body" || focused == "html",
            "Tab reached {focused} behind the dialog"
        );
        stayed += usize::from(inside);
    }
    assert!(stayed >= 35, "Tab left the dialog {} times", 40 - stayed);
    check_page(&browser, "01-group-dialog-keyboard").await;
    // Esc leaves it, as its Cancel does.
    browser.press(keys::ESCAPE).await;
    browser.wait_text("main h1", "Keys", 10).await;
    assert!(browser.current_url().await.ends_with("/ui/keys"));
    assert!(!browser.exists("dialog[open]").await);

    // A refused save: the reason is in the dialog, beside the field, which
    // has the focus; the rest of what was typed is kept.
    browser
        .goto(&format!("{}/ui/keys/groups/{group}/edit", app.base))
        .await;
    browser.fill("#group-rotate_every", "12h").await;
    browser.click("#tab-info-button").await;
    browser.fill("#group-owner", "treasury").await;
    browser.click("#save-group").await;
    let alert = browser
        .wait_text("#group-dialog .notice.error", "1d", 10)
        .await;
    let beside = browser.text("#group-rotate_every-error").await;
    assert!(beside.contains("1d"), "{beside} / {alert}");
    let (focused, _) = browser.focus("#group-dialog").await;
    assert_eq!(focused, "input#group-rotate_every");
    let visible = browser
        .execute(
            r#"
            const r = document.querySelector('#group-dialog .notice.error').getBoundingClientRect();
            const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
            return !!hit && hit.closest('#group-dialog') !== null;
            "#,
            json!([]),
        )
        .await;
    assert_eq!(visible, true, "the error is hidden behind the dialog");
    assert_eq!(
        browser.attribute("#group-owner", "value").await.as_deref(),
        Some("treasury")
    );
    check_page(&browser, "02-refused-in-dialog").await;
    let (_, unchanged) = app.get(&format!("/api/v1/groups/{group}"), &token).await;
    assert_eq!(unchanged["rotate_every"], "30d", "{unchanged}");
    assert_eq!(unchanged["owner"], "security team", "{unchanged}");

    // Force Rotate's confirmation starts on Cancel: Enter there creates no
    // billed KMS key.
    browser
        .goto(&format!("{}/ui/keys/groups/{group}/rotate", app.base))
        .await;
    let (focused, _) = browser.focus("#rotate-dialog").await;
    assert_eq!(focused, "a.button", "not on Cancel: {focused}");
    browser.press(keys::ENTER).await;
    browser.wait_text("main h1", "Keys", 10).await;
    assert!(browser.current_url().await.ends_with("/ui/keys"));
    assert_eq!(
        app.get("/api/v1/jobs", &token).await.1,
        jobs_before,
        "the confirmation's Enter started a job"
    );

    // The designated rotator has its own Save.
    browser
        .goto(&format!("{}/ui/configuration", app.base))
        .await;
    browser
        .execute(
            "const s = document.getElementById('config-designated_rotator'); s.value = 'node-a';",
            json!([]),
        )
        .await;
    browser.click("#save-rotator").await;
    browser
        .wait_text("main .notice", "Configuration saved.", 10)
        .await;
    let (_, settings) = app.get("/api/v1/config", &token).await;
    assert_eq!(settings["designated_rotator"], "node-a", "{settings}");
    browser.quit().await;
}

#[tokio::test]
async fn a_second_officer_joins_from_a_dialog_without_losing_what_was_typed() {
    let app = TestApp::spawn().await;
    let token = app.dual_session().await;
    app.import_kms_credential(&token, "aws").await;
    let browser = Browser::start("join-from-dialog").await;
    browser.goto(&format!("{}/ui/login", app.base)).await;
    log_in(&browser, "Admin1", ADMIN1_PASSWORD).await;
    browser.click("#continue").await;
    browser.click("#add-group").await;
    browser.find("#group-dialog").await;
    let group = unique("ui-join");
    browser.fill("#group-name", &group).await;
    browser.fill("#group-valid_for", "2y").await;
    browser.click("#tab-info-button").await;
    browser.fill("#group-owner", "payments").await;
    browser.click("#tab-aws-button").await;
    browser
        .fill("#group-alias", &format!("alias/{group}"))
        .await;
    browser.fill("#group-region", "eu-west-1").await;
    browser.click("#group-disable").await;
    // One officer: the dialog says a second one is needed, and links there.
    browser
        .click("#group-dialog [data-dual-control='required'] a")
        .await;
    browser.wait_text("main h1", "Add an officer", 10).await;
    log_in(&browser, "Admin2", ADMIN2_PASSWORD).await;
    browser.find("#group-dialog").await;
    assert!(browser.current_url().await.ends_with("/ui/keys/groups/new"));
    let header = browser.text("header.top").await;
    assert!(header.contains("Dual control: 2 officers"), "{header}");
    for (field, typed) in [
        ("#group-name", group.clone()),
        ("#group-valid_for", "2y".to_owned()),
        ("#group-owner", "payments".to_owned()),
        ("#group-alias", format!("alias/{group}")),
        ("#group-region", "eu-west-1".to_owned()),
    ] {
        let kept = browser
            .execute(
                "return document.querySelector(arguments[0]).value;",
                json!([field]),
            )
            .await;
        assert_eq!(kept, Value::from(typed), "{field} was not kept");
    }
    assert!(browser.is_selected("#group-disable").await);
    let created = save_new_group(&app, &browser, &group).await;
    assert_eq!(created["owner"], "payments", "{created}");
    assert_eq!(created["valid_for"], "2y", "{created}");
    assert_eq!(created["disable_after_rotate"], true, "{created}");

    // A login link cannot send the officer off this UI.
    browser
        .click("header.top form[action='/ui/logout'] button")
        .await;
    browser
        .goto(&format!(
            "{}/ui/login?next=%2F%2Fevil.example%2Fui%2Fkeys",
            app.base
        ))
        .await;
    browser.find("#login-form").await;
    assert!(
        !browser.exists("#login-form input[name=next]").await,
        "a login offered to return off this UI"
    );
    browser.quit().await;
}

#[tokio::test]
async fn a_refused_password_change_keeps_its_form_open() {
    let app = TestApp::spawn().await;
    let browser = Browser::start("password-refused").await;
    browser.goto(&format!("{}/ui/login", app.base)).await;
    browser.click("#password-change summary").await;
    browser.fill("#pw-user", "Admin1").await;
    browser
        .fill("#pw-current", "not-the-one-time-password")
        .await;
    browser.fill("#pw-new", ADMIN1_PASSWORD).await;
    browser.fill("#pw-confirm", ADMIN1_PASSWORD).await;
    browser.click("#password-change button[type=submit]").await;
    browser.find("main .notice.error").await;
    assert!(
        browser
            .attribute("#password-change", "open")
            .await
            .is_some(),
        "the refused change collapsed its form"
    );
    assert_eq!(
        browser
            .execute(
                "return document.getElementById('pw-user').value;",
                json!([])
            )
            .await,
        "Admin1"
    );
    check_page(&browser, "01-refused").await;
    // Nothing changed: the one-time password still logs in (and must be replaced).
    let (status, _) = app
        .login(None, "Admin1", &app.initial_passwords["Admin1"])
        .await;
    assert_ne!(status, StatusCode::UNAUTHORIZED);
    browser.quit().await;
}

/// A group rotated in place (on the LocalStack that serves on-demand
/// rotation): its versions share one KMS key. The keys screen says how the
/// group rotates, how many of AWS's on-demand rotations are used and what
/// happens at the limit, which version's material is current, in words;
/// each version's ids open from the keyboard; and the screen reads and
/// fits at both widths.
#[tokio::test]
async fn versions_sharing_a_kms_key_read_and_fit_from_800_px_up() {
    let endpoint = crate::in_place::rotation_peer();
    let allowed = endpoint.clone();
    let app = TestApp::spawn_with(move |args| allow_endpoints(args, &[&allowed])).await;
    let token = app.dual_session().await;
    // Few on-demand rotations allowed, so the group's heading warns.
    let (status, body) = app
        .patch(
            "/api/v1/config",
            &token,
            json!({"on_demand_rotation_limit": 3}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.import_credential_at(&token, "aws", &endpoint).await;
    let group = unique("ui-inplace");
    let mut body = group_body(&group, "aws");
    body["rotation_strategy"] = json!("new_material");
    body["disable_after_rotate"] = json!(false);
    let (status, created) = app.create_group(&token, body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    app.rotate_ok(&token, &group).await;
    app.rotate_ok(&token, &group).await;
    let (_, versions) = app
        .get(&format!("/api/v1/keys?group={group}"), &token)
        .await;
    let mut versions = versions.as_array().unwrap().clone();
    versions.sort_by_key(|k| k["version"].as_u64().unwrap());
    assert_eq!(versions.len(), 2, "{versions:#?}");
    let kms_key = versions[0]["kms_key_id"].as_str().unwrap().to_owned();
    assert_eq!(
        versions[1]["name"],
        format!("{kms_key} v2"),
        "{versions:#?}"
    );
    let material = |k: &Value| k["kms_material_id"].as_str().unwrap().to_owned();

    let browser = Browser::start("in-place-keys").await;
    dual_browser_session(&app, &browser).await;
    browser.goto(&format!("{}/ui/keys", app.base)).await;
    let heading = browser
        .text(&format!("tbody[data-group='{group}'] tr.group-row"))
        .await;
    for said in [
        format!("new material in KMS key {kms_key}"),
        "1 of 3 on-demand rotations used".to_owned(),
        "at the limit: new KMS key".to_owned(),
    ] {
        assert!(heading.contains(&said), "{said} missing in {heading}");
    }
    let warning = browser
        .text(&format!(
            "tbody[data-group='{group}'] .rotation-limit-warning"
        ))
        .await;
    assert!(
        warning.contains("2 of 3 on-demand rotations") && warning.contains(&kms_key),
        "{warning}"
    );
    let older = format!("tr.key-row[data-key='{kms_key}']");
    let newer = format!("tr.key-row[data-key='{kms_key} v2']");
    let state = browser.text(&format!("{older} td.state")).await;
    assert!(
        state.contains("KMS material: non-current (decrypts only)"),
        "{state}"
    );
    let state = browser.text(&format!("{newer} td.state")).await;
    assert!(state.contains("KMS material: current"), "{state}");

    // The older version's ids, opened from the keyboard.
    let summary = format!("{older} details.key-ids summary");
    browser
        .execute(
            "document.querySelector(arguments[0]).focus();",
            json!([summary]),
        )
        .await;
    browser.press(keys::ENTER).await;
    browser
        .find(&format!("{older} details.key-ids[open]"))
        .await;
    let ids = browser.text(&format!("{older} details.key-ids")).await;
    assert!(
        ids.contains(&kms_key) && ids.contains(&material(&versions[0])),
        "{ids}"
    );

    for (width, height) in [(1280, 800), (800, 900)] {
        browser.resize(width, height).await;
        browser.goto(&format!("{}/ui/keys", app.base)).await;
        browser.find("main h1").await;
        assert_layout(&browser, width, "keys-in-place").await;
        // With a version's ids open: long ids wrap rather than widen the table.
        browser
            .click(&format!("{newer} details.key-ids summary"))
            .await;
        browser
            .find(&format!("{newer} details.key-ids[open]"))
            .await;
        assert_layout(&browser, width, "keys-in-place-ids").await;
        // The Synchronize dialog says where the version's material is.
        let id = versions[1]["id"].as_str().unwrap();
        browser
            .goto(&format!("{}/ui/keys/{id}/sync", app.base))
            .await;
        let facts = browser.text("#sync-dialog .key-facts").await;
        assert!(
            facts.contains(&kms_key)
                && facts.contains(&material(&versions[1]))
                && facts.contains("current (encrypts and decrypts)"),
            "{facts}"
        );
        assert_layout(&browser, width, "key-sync-in-place").await;
    }
    browser.quit().await;
}
