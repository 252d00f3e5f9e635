//! Logging in, a second officer joining the session (dual control),
//! logging out, and changing a password (first use).

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keyhold_api as api;
use keyhold_core::CoreError;
use keyhold_core::identity::Session;
use maud::{Markup, html};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::layout::{self, Notice, csrf_field};
use super::session::{
    LOGIN_COOKIE, SESSION_COOKIE, UiSession, clear_cookie, cookie, csrf_token, set_cookie,
};
use super::{encode, see_other};
use crate::ApiError;
use crate::app::AppState;
use crate::client_address::ClientAddress;
use crate::operations::sessions;

#[derive(Deserialize, Default)]
pub struct LoginQuery {
    m: Option<String>,
    /// Where to go back after a second officer joins (a dialog being filled).
    next: Option<String>,
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    user: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: Option<String>,
}

/// A page of keyhold's web UI to return to after a login: only a path of
/// this UI, so a crafted link cannot send an officer elsewhere (an open
/// redirect) or back to the login itself.
fn return_to(raw: Option<&str>) -> Option<String> {
    let path = raw?;
    let safe = path.starts_with("/ui/")
        && !path.starts_with("/ui/login")
        && !path.starts_with("/ui/logout")
        && path.len() <= 512
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-_.~%".contains(&b))
        && !path.contains("//")
        && !path.contains("/../")
        && !path.ends_with("/..");
    safe.then(|| path.to_owned())
}

#[derive(Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    user: String,
    #[serde(default)]
    current_password: String,
    #[serde(default)]
    new_password: String,
    #[serde(default)]
    confirm_password: String,
}

/// The login screen's state: who is in the browser's session already.
struct Screen {
    session: Option<Session>,
    csrf: String,
    /// Cookies to set or clear with the answer.
    cookies: Vec<axum::http::HeaderValue>,
    /// The page to return to once an officer joins ([`return_to`]).
    next: Option<String>,
    /// A refused password change: its form stays open, the user name kept.
    password_user: Option<String>,
}

/// Works out the session (if its cookie is live) and the CSRF secret the
/// page's forms will use, creating a login nonce when there is no session.
async fn screen(app: &AppState, headers: &HeaderMap) -> Result<Screen, ApiError> {
    let mut cookies = Vec::new();
    if let Some(token) = cookie(headers, SESSION_COOKIE) {
        match app.keyhold.session(&token).await {
            Ok(session) => {
                return Ok(Screen {
                    session: Some(session),
                    csrf: csrf_token(&token),
                    cookies,
                    next: None,
                    password_user: None,
                });
            }
            Err(CoreError::Unauthenticated(_)) => cookies.push(clear_cookie(SESSION_COOKIE)),
            Err(e) => return Err(e.into()),
        }
    }
    let nonce = match cookie(headers, LOGIN_COOKIE) {
        Some(nonce) => nonce,
        None => {
            let nonce = keyhold_core::identity::generate_token()?;
            let nonce = nonce.expose_secret().to_owned();
            cookies.push(set_cookie(LOGIN_COOKIE, &nonce));
            nonce
        }
    };
    Ok(Screen {
        session: None,
        csrf: csrf_token(&nonce),
        cookies,
        next: None,
        password_user: None,
    })
}

fn message(code: Option<&str>) -> Option<Notice> {
    Some(match code? {
        "expired" => Notice::Failed(
            "Your session has ended (timed out or logged out elsewhere). Log in again.".into(),
        ),
        "logged_out" => Notice::Done("Logged out.".into()),
        "password_changed" => Notice::Done("Password changed. Log in with the new one.".into()),
        _ => return None,
    })
}

fn render(screen: Screen, notice: Option<&Notice>, status: StatusCode) -> Response {
    let csrf = screen.csrf.as_str();
    let title = if screen.session.is_some() {
        "Add an officer to this session"
    } else {
        "Log in"
    };
    let body = html! {
        main #main.narrow {
            p.brand-large { "keyhold" }
            h1 { (title) }
            (layout::notice(notice))
            @if let Some(session) = &screen.session {
                section aria-labelledby="in-session" {
                    h2 #in-session { "In this session" }
                    ul #session-users {
                        @for identity in &session.identities {
                            li { strong { (identity.name.as_str()) } " (" (identity.role.as_str().replace('_', " ")) ")" }
                        }
                    }
                    p {
                        "Actions under dual control (adding or deleting key groups, deleting keys or key material, "
                        "changing the configuration, managing identities) need a second officer. "
                        "The second officer logs in here, on the same screen, and joins this session."
                    }
                    p.actions {
                        a.button #continue href=(screen.next.as_deref().unwrap_or("/ui/keys")) { "Continue to keyhold" }
                    }
                }
            }
            (login_form(csrf, screen.session.is_some(), screen.next.as_deref()))
            (password_form(csrf, screen.password_user.as_deref()))
            @if screen.session.is_some() {
                form method="post" action="/ui/logout" {
                    (csrf_field(csrf))
                    button.secondary type="submit" { "Log out everyone in this session" }
                }
            }
        }
    };
    let mut response = (status, layout::document(title, body)).into_response();
    for cookie in screen.cookies {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

fn login_form(csrf: &str, joining: bool, next: Option<&str>) -> Markup {
    html! {
        form.card #login-form method="post" action="/ui/login" {
            h2 { @if joining { "Second officer" } @else { "Officer" } }
            (csrf_field(csrf))
            @if let Some(next) = next { input type="hidden" name="next" value=(next); }
            div.field {
                label for="login-user" { "User name" }
                input #login-user type="text" name="user" autocomplete="username" required;
            }
            div.field {
                label for="login-password" { "Password" }
                input #login-password type="password" name="password" autocomplete="current-password" required;
            }
            button type="submit" { @if joining { "Join this session" } @else { "Log in" } }
        }
    }
}

fn password_form(csrf: &str, refused_for: Option<&str>) -> Markup {
    html! {
        details.card #password-change open[refused_for.is_some()] {
            summary { "Change a password (first use: replace the one-time password)" }
            form method="post" action="/ui/password" {
                (csrf_field(csrf))
                div.field {
                    label for="pw-user" { "User name" }
                    input #pw-user type="text" name="user" autocomplete="username" required value=[refused_for];
                }
                div.field {
                    label for="pw-current" { "Current password" }
                    input #pw-current type="password" name="current_password" autocomplete="current-password" required;
                }
                div.field {
                    label for="pw-new" { "New password (at least 12 characters)" }
                    input #pw-new type="password" name="new_password" autocomplete="new-password" minlength="12" required;
                }
                div.field {
                    label for="pw-confirm" { "New password again" }
                    input #pw-confirm type="password" name="confirm_password" autocomplete="new-password" minlength="12" required;
                }
                button type="submit" { "Change password" }
            }
        }
    }
}

fn unavailable(error: &ApiError) -> Response {
    super::error_page(
        error.status_and_code().0,
        "keyhold is unavailable",
        &error.public_message(),
    )
}

pub async fn page(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<LoginQuery>,
) -> Response {
    match screen(&app, &headers).await {
        Ok(screen) => {
            let screen = Screen {
                next: return_to(query.next.as_deref()),
                ..screen
            };
            render(screen, message(query.m.as_deref()).as_ref(), StatusCode::OK)
        }
        Err(e) => unavailable(&e),
    }
}

pub async fn login(
    State(app): State<AppState>,
    ClientAddress(client): ClientAddress,
    headers: HeaderMap,
    axum::Form(form): axum::Form<LoginForm>,
) -> Response {
    let current = match screen(&app, &headers).await {
        Ok(screen) => Screen {
            next: return_to(form.next.as_deref()),
            ..screen
        },
        Err(e) => return unavailable(&e),
    };
    if current.session.is_none() && cookie(&headers, SESSION_COOKIE).is_some() {
        // The session this officer meant to join has ended meanwhile.
        let notice = message(Some("expired"));
        return render(current, notice.as_ref(), StatusCode::UNAUTHORIZED);
    }
    let token = current
        .session
        .is_some()
        .then(|| cookie(&headers, SESSION_COOKIE))
        .flatten();
    let password = SecretString::from(form.password);
    match sessions::login(&app, client, token.as_deref(), &form.user, &password).await {
        Ok(outcome) => {
            let mut response = match (outcome.joined, &current.next) {
                (true, Some(next)) => see_other(next),
                (true, None) => {
                    see_other(&format!("/ui/keys?done=joined&name={}", encode(&form.user)))
                }
                (false, Some(next)) => see_other(&format!("/ui/login?next={}", encode(next))),
                (false, None) => see_other("/ui/login"),
            };
            let headers = response.headers_mut();
            // A new cookie on every login, joining too (no session fixation).
            headers.append(
                header::SET_COOKIE,
                set_cookie(SESSION_COOKIE, outcome.token.expose_secret()),
            );
            headers.append(header::SET_COOKIE, clear_cookie(LOGIN_COOKIE));
            response
        }
        Err(error) => {
            let text = match &error {
                ApiError::Core(CoreError::PasswordChangeRequired(name)) => format!(
                    "{name} must replace the one-time password first: use \"Change a password\" below."
                ),
                other => other.public_message(),
            };
            refused(current, &error, text)
        }
    }
}

pub async fn change_password(
    State(app): State<AppState>,
    ClientAddress(client): ClientAddress,
    headers: HeaderMap,
    axum::Form(form): axum::Form<PasswordForm>,
) -> Response {
    let current = match screen(&app, &headers).await {
        Ok(screen) => Screen {
            password_user: Some(form.user.clone()),
            ..screen
        },
        Err(e) => return unavailable(&e),
    };
    if form.new_password != form.confirm_password {
        let notice =
            Notice::Failed("The two new passwords differ: type the same one twice.".into());
        return render(current, Some(&notice), StatusCode::BAD_REQUEST);
    }
    let request = api::PasswordChangeRequest {
        user: form.user,
        current_password: form.current_password,
        new_password: form.new_password,
    };
    match sessions::change_password(&app, client, request).await {
        Ok(()) => see_other("/ui/login?m=password_changed"),
        Err(error) => {
            let text = error.public_message();
            refused(current, &error, text)
        }
    }
}

/// The screen again with why the login or change was refused, under the
/// error's status (and `Retry-After` when throttled).
fn refused(screen: Screen, error: &ApiError, text: String) -> Response {
    let mut response = render(
        screen,
        Some(&Notice::Failed(text)),
        error.status_and_code().0,
    );
    if let Some(retry_after) = error.retry_after() {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, retry_after);
    }
    response
}

pub async fn logout(State(app): State<AppState>, ui: UiSession) -> Response {
    if let Err(e) = app.keyhold.logout(&ui.session).await {
        return unavailable(&ApiError::from(e));
    }
    let mut response = see_other("/ui/login?m=logged_out");
    response
        .headers_mut()
        .append(header::SET_COOKIE, clear_cookie(SESSION_COOKIE));
    response
}

#[cfg(test)]
mod tests {
    use super::return_to;

    #[test]
    fn a_login_returns_only_to_a_page_of_this_ui() {
        for good in [
            "/ui/keys/groups/new",
            "/ui/keys/groups/ig-demo/edit",
            "/ui/keys/groups/ig%20demo/edit",
        ] {
            assert_eq!(return_to(Some(good)).as_deref(), Some(good), "{good}");
        }
        for bad in [
            "",
            "https://evil.example/ui/keys",
            "//evil.example/ui/keys",
            "/\\evil.example",
            "/ui//evil.example",
            "/ui/../api/v1/keys",
            "/ui/keys/..",
            "/ui/login",
            "/ui/login?next=/ui/keys",
            "/ui/logout",
            "/api/v1/keys",
            "/ui/keys\r\nSet-Cookie: a=b",
            "/ui/keys?x=\"><script>",
        ] {
            assert_eq!(return_to(Some(bad)), None, "{bad}");
        }
        assert_eq!(return_to(None), None);
        assert_eq!(return_to(Some(&format!("/ui/{}", "a".repeat(600)))), None);
    }
}
