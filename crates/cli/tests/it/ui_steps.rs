//! Steps the web UI tests share: logging in (alone, or two for dual
//! control), reaching a control by the keyboard alone, and checking a page
//! at both widths.

use serde_json::json;

use crate::helpers::{ADMIN1_PASSWORD, ADMIN2_PASSWORD, TestApp};
use crate::ui::{check_page, log_in};
use crate::webdriver::{Browser, keys};

/// Logs `user` in alone in `browser` (a fresh browser session).
pub(crate) async fn log_in_alone(app: &TestApp, browser: &Browser, user: &str, password: &str) {
    browser.goto(&format!("{}/ui/login", app.base)).await;
    log_in(browser, user, password).await;
    browser.wait_text("#session-users", user, 10).await;
}

/// Admin1 and Admin2 in one browser session: dual control.
pub(crate) async fn log_in_both(app: &TestApp, browser: &Browser) {
    log_in_alone(app, browser, "Admin1", ADMIN1_PASSWORD).await;
    log_in(browser, "Admin2", ADMIN2_PASSWORD).await;
    browser
        .wait_text("main .notice", "Admin2 joined this session.", 10)
        .await;
}

/// Tabs from the top of the page until the focus is on `css`: the element
/// can be reached by the keyboard alone.
pub(crate) async fn tab_to(browser: &Browser, css: &str) {
    browser
        .execute(
            "document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0);",
            json!([]),
        )
        .await;
    let wanted = browser
        .execute(
            "const e = document.querySelector(arguments[0]); return e.tagName.toLowerCase() + (e.id ? '#' + e.id : e.className ? '.' + String(e.className).split(' ')[0] : '');",
            json!([css]),
        )
        .await;
    for _ in 0..120 {
        browser.press(keys::TAB).await;
        let (focused, _) = browser.focus("body").await;
        if wanted == focused.as_str() {
            return;
        }
    }
    panic!("{css} cannot be reached with Tab");
}

/// Tabs to `css` and presses Enter on it.
pub(crate) async fn press_enter_on(browser: &Browser, css: &str) {
    tab_to(browser, css).await;
    browser.press(keys::ENTER).await;
}

/// axe-core at 1280 and 800 px on the page shown now; the page never
/// scrolls sideways, and at 1280 px no table hides columns.
pub(crate) async fn check_both_widths(browser: &Browser, name: &str) {
    for (width, height) in [(1280, 800), (800, 900)] {
        browser.resize(width, height).await;
        check_page(browser, &format!("{width}-{name}")).await;
        let layout = browser
            .execute(
                r#"
                return {
                    page: document.documentElement.scrollWidth - window.innerWidth,
                    tables: Array.from(document.querySelectorAll('.table-wrap'))
                        .map(w => w.scrollWidth - w.clientWidth),
                };
                "#,
                json!([]),
            )
            .await;
        assert!(
            layout["page"].as_i64().unwrap() <= 0,
            "{name} at {width} px scrolls sideways: {layout}"
        );
        if width >= 1280 {
            assert!(
                layout["tables"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|hidden| hidden.as_i64().unwrap() <= 0),
                "{name} at 1280 px hides table columns: {layout}"
            );
        }
    }
    browser.resize(1280, 800).await;
}
