//! The web UI for security officers, under `/ui`: server-rendered HTML with
//! a little JavaScript, its assets compiled into the binary.
//!
//! Every action calls the same operation the API's handler calls
//! (`crate::operations`, or for read-only views the core) with the
//! browser's session, so authorization, dual control, validation and the
//! auditing of failures are exactly the API's: the UI enforces no rule of
//! its own and only renders. It says in advance when an action will need a
//! second officer. An action a quorum policy holds is not a failure: every
//! screen's error path sends the officer to the approval request it became
//! ([`sent_for_approval`]). Its routes are in `crate::routes`.

pub(crate) mod approvals;
pub(crate) mod audit;
pub(crate) mod backups;
pub(crate) mod configuration;
pub(crate) mod credentials;
pub(crate) mod drift;
pub(crate) mod identities;
pub(crate) mod jobs;
pub(crate) mod keys;
mod layout;
pub(crate) mod login;
pub mod session;
pub(crate) mod xks;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use keyhold_core::CoreError;
use maud::html;

use crate::ApiError;
use layout::Notice;
use session::UiSession;

const APP_CSS: &str = include_str!("assets/app.css");
const APP_JS: &str = include_str!("assets/app.js");

/// No inline script or style, nothing from elsewhere, no framing.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub(crate) async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        // `same-origin` keeps the Origin header on form posts (`no-referrer`
        // would turn it into `null`).
        (header::REFERRER_POLICY, "same-origin"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

pub(crate) async fn css() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], APP_CSS).into_response()
}

pub(crate) async fn js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        APP_JS,
    )
        .into_response()
}

/// A page for a request that went wrong before any screen could be drawn.
pub fn error_page(status: StatusCode, title: &str, message: &str) -> Response {
    let body = layout::document(
        title,
        html! {
            main #main.narrow {
                h1 { (title) }
                p.notice.error role="alert" { (message) }
                p { a href="/ui/keys" { "Back to keyhold" } }
            }
        },
    );
    (status, body).into_response()
}

/// The answer to a failed action: back to the login page when the session
/// ended, else the screen with the reason.
fn failure(
    ui: &UiSession,
    nav: layout::Nav,
    title: &str,
    error: ApiError,
    body: maud::Markup,
) -> Response {
    if matches!(error, ApiError::Core(CoreError::Unauthenticated(_))) {
        return session::to_login(true);
    }
    if let Some(sent) = sent_for_approval(&error) {
        return sent;
    }
    let status = error.status_and_code().0;
    let notice = Notice::Failed(error.public_message());
    (status, layout::page(ui, nav, title, Some(&notice), body)).into_response()
}

/// An action a quorum policy holds did not fail: keyhold stored it as an
/// approval request, so the officer is sent to that request's page, which
/// says what it waits for. Every screen's error path asks this first.
fn sent_for_approval(error: &ApiError) -> Option<Response> {
    match error {
        ApiError::AwaitingApproval(view) => Some(see_other(&format!(
            "/ui/approvals/{}?done=sent",
            encode(&view.id)
        ))),
        _ => None,
    }
}

/// A redirect after a successful POST (so reloading does not repeat it).
fn see_other(target: &str) -> Response {
    Redirect::to(target).into_response()
}

/// Percent-encodes a value for a query string or path segment.
fn encode(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for byte in raw.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(byte));
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// Outcome notices a redirect carries as `?done=CODE&name=X`: only these
/// sentences can appear, with the name escaped like any other text.
#[derive(serde::Deserialize, Default)]
pub(crate) struct Done {
    done: Option<String>,
    name: Option<String>,
}

impl Done {
    fn notice(&self) -> Option<Notice> {
        let name = self.name.as_deref().unwrap_or("");
        let text = match self.done.as_deref()? {
            "group_added" => format!("Added HSM protected key group {name}."),
            "group_updated" => format!("Updated HSM protected key group {name}."),
            "group_deleted" => format!("Deleted HSM protected key group {name}."),
            "key_deleted" => format!("Deleted HSM protected key {name}."),
            "credential_added" => format!("Added cloud credential {name}."),
            "credential_deleted" => format!("Deleted cloud credential {name}."),
            "identity_deleted" => format!("Deleted identity {name}."),
            "configuration" => "Configuration saved.".to_owned(),
            "approval_policies" => "Approval policies saved.".to_owned(),
            "joined" => format!("{name} joined this session."),
            "job" => format!("Started job {name}: its progress shows below."),
            _ => return None,
        };
        Some(Notice::Done(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_keeps_unreserved_characters_only() {
        assert_eq!(encode("ig-demo_1.x~"), "ig-demo_1.x~");
        assert_eq!(encode("a b/c&d=é"), "a%20b%2Fc%26d%3D%C3%A9");
    }

    #[test]
    fn unknown_notice_codes_show_nothing() {
        let done = Done {
            done: Some("<script>".into()),
            name: Some("x".into()),
        };
        assert!(done.notice().is_none());
        let done = Done {
            done: Some("group_added".into()),
            name: Some("ig-demo".into()),
        };
        assert!(
            matches!(done.notice(), Some(Notice::Done(t)) if t == "Added HSM protected key group ig-demo.")
        );
    }
}
