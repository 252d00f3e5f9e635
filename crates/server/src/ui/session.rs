//! The web UI's session cookie, its CSRF tokens and the Origin check.
//!
//! The cookie holds the same bearer token the CLI sends, so a browser session
//! is an ordinary keyhold session: same timeouts, same dual control, same
//! authorization in the core. It is `HttpOnly`, `Secure` and
//! `SameSite=Strict`, and never appears in a page or a URL.
//!
//! Every request that changes something carries a CSRF token derived from a
//! secret only the browser's cookie holds: the session token, or before login
//! a random login nonce. [`guard`] checks it (and the Origin) for every
//! non-GET request under `/ui`, before any handler runs.

use axum::body::Body;
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use keyhold_core::CoreError;
use keyhold_core::identity::Session;
use keyhold_core::service::Activity;
use sha2::{Digest, Sha256};

use crate::app::AppState;
use crate::routes::MAX_BODY_BYTES;

pub const SESSION_COOKIE: &str = "keyhold_session";
/// A random nonce the login page sets, so the login form has a CSRF token
/// before any session exists.
pub const LOGIN_COOKIE: &str = "keyhold_login";
/// The form field every state-changing form carries.
pub const CSRF_FIELD: &str = "csrf";

/// The value of cookie `name`, if the request carries it.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, v)| *k == name && !v.is_empty())
        .map(|(_, v)| v.to_owned())
}

fn cookie_header(raw: String) -> HeaderValue {
    // Cookie values are URL-safe base64 tokens: always a valid header.
    HeaderValue::from_str(&raw).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `Set-Cookie` for a cookie only the UI's own pages send back.
pub fn set_cookie(name: &str, value: &str) -> HeaderValue {
    cookie_header(format!(
        "{name}={value}; Path=/ui; HttpOnly; Secure; SameSite=Strict"
    ))
}

pub fn clear_cookie(name: &str) -> HeaderValue {
    cookie_header(format!(
        "{name}=; Path=/ui; Max-Age=0; HttpOnly; Secure; SameSite=Strict"
    ))
}

/// The CSRF token that belongs to a cookie secret: a hash, so the page
/// reveals nothing about the secret, and no store is needed.
pub fn csrf_token(secret: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"keyhold-ui-csrf\0");
    hasher.update(secret.as_bytes());
    hex::encode(hasher.finalize())
}

/// The secret a request's CSRF token must derive from: its session cookie,
/// else its login nonce.
pub fn csrf_secret(headers: &HeaderMap) -> Option<String> {
    cookie(headers, SESSION_COOKIE).or_else(|| cookie(headers, LOGIN_COOKIE))
}

fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether a present `Origin` header names this server. Browsers send it with
/// every POST; a missing one (older clients) leaves the token to decide.
fn origin_ok(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let (Ok(origin), Some(host)) = (
        origin.to_str(),
        headers.get(header::HOST).and_then(|h| h.to_str().ok()),
    ) else {
        return false;
    };
    origin == format!("http://{host}") || origin == format!("https://{host}")
}

/// Why a state-changing request was refused before it reached a handler.
fn refused(reason: &str) -> Response {
    super::error_page(StatusCode::FORBIDDEN, "Request refused", reason)
}

/// Checks Origin and CSRF token on every request under `/ui` that is not a
/// GET or HEAD. Forms are `application/x-www-form-urlencoded`; the token is
/// their `csrf` field.
pub async fn guard(request: Request, next: Next) -> Response {
    if matches!(*request.method(), Method::GET | Method::HEAD) {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    if !origin_ok(&parts.headers) {
        return refused(
            "this form was sent from another site (its Origin is not this server), so it was not carried out",
        );
    }
    let is_form = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return refused("the web UI accepts only its own forms here");
    }
    let Some(secret) = csrf_secret(&parts.headers) else {
        return refused(
            "your browser sent no session or login cookie with this form: open the login page again and retry",
        );
    };
    let bytes = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return super::error_page(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request refused",
                "the form is larger than 1 MiB",
            );
        }
    };
    let sent = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes)
        .ok()
        .and_then(|pairs| {
            pairs
                .into_iter()
                .find(|(k, _)| k == CSRF_FIELD)
                .map(|(_, v)| v)
        });
    let expected = csrf_token(&secret);
    match sent {
        Some(token) if same_bytes(token.as_bytes(), expected.as_bytes()) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        _ => refused(
            "the form's security token (CSRF) is missing or does not belong to your session, so it was not carried out: reload the page and try again",
        ),
    }
}

/// The browser's live keyhold session, resolved from its cookie. Without one
/// (or after it timed out) the request is sent to the login page.
pub struct UiSession {
    pub session: Session,
    /// The token this session's forms carry.
    pub csrf: String,
    /// How many pending approval requests this session may answer, for the
    /// navigation's badge (`None` when it could not be counted, or for a
    /// page's own refreshes, which draw no navigation).
    pub awaiting_you: Option<usize>,
    /// How many drift findings are open, for the navigation's Drift badge
    /// (`None` when they could not be counted, or for a page's own
    /// refreshes).
    pub drift_open: Option<u64>,
    /// The approval policies in force, so that a form says when its
    /// operation will be sent for approval rather than run (defaults for a
    /// page's own refreshes, which draw no forms).
    pub approval_policies: keyhold_core::approval::ApprovalPolicies,
}

/// Where a request without a live session goes.
pub fn to_login(expired: bool) -> Response {
    let target = if expired {
        "/ui/login?m=expired"
    } else {
        "/ui/login"
    };
    let mut response = Redirect::to(target).into_response();
    if expired {
        response
            .headers_mut()
            .append(header::SET_COOKIE, clear_cookie(SESSION_COOKIE));
    }
    response
}

impl FromRequestParts<AppState> for UiSession {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Response> {
        resolve(parts, app, Activity::Officer).await
    }
}

/// The browser's live session for a request the page's script makes by
/// itself (the Jobs page's refreshes): a live session is needed as for any
/// page, but the request does not extend the idle timeout, so a page left
/// open does not keep its officers' session alive.
///
/// Which requests these are is decided by route, in the server: only the
/// refresh endpoints' handlers take this extractor. Nothing a client sends
/// (a header, a parameter) makes a request count as an officer's activity
/// or not.
pub struct UiRefresh(pub UiSession);

impl FromRequestParts<AppState> for UiRefresh {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Response> {
        resolve(parts, app, Activity::Refresh).await.map(Self)
    }
}

async fn resolve(parts: &Parts, app: &AppState, activity: Activity) -> Result<UiSession, Response> {
    let Some(token) = cookie(&parts.headers, SESSION_COOKIE) else {
        return Err(to_login(false));
    };
    match app.keyhold.session_for(&token, activity).await {
        Ok(session) => {
            let (awaiting_you, drift_open, approval_policies) = match activity {
                Activity::Officer => (
                    awaiting_you(app, &session).await,
                    drift_open(app).await,
                    app.keyhold
                        .store()
                        .get_settings()
                        .await
                        .map(|s| s.approval_policies)
                        .unwrap_or_default(),
                ),
                Activity::Refresh => (None, None, Default::default()),
            };
            Ok(UiSession {
                session,
                csrf: csrf_token(&token),
                awaiting_you,
                drift_open,
                approval_policies,
            })
        }
        Err(e @ CoreError::Unauthenticated(_)) => {
            crate::http::audit_refused_session(app, parts, &e).await;
            Err(to_login(true))
        }
        Err(e) => {
            let error = crate::ApiError::from(e);
            Err(super::error_page(
                error.status_and_code().0,
                "keyhold is unavailable",
                &error.public_message(),
            ))
        }
    }
}

/// Most pending requests the badge counts; more read as this many.
const AWAITING_COUNTED: u32 = 200;

/// The pending requests `session` may answer now, by the same rule the
/// request pages and the API apply (`you_may_answer`).
async fn awaiting_you(app: &AppState, session: &Session) -> Option<usize> {
    // An answer is one identity's: a session of two may answer nothing.
    let [me] = session.identities.as_slice() else {
        return Some(0);
    };
    // Counted on the requests themselves, by the rule the core applies to
    // an answer: no view of each is built for a number in the navigation.
    let pending = app
        .keyhold
        .list_approvals(
            session,
            Some(keyhold_core::approval::ApprovalStatus::Pending),
            AWAITING_COUNTED,
        )
        .await;
    match pending {
        Ok(list) => {
            let now = app.keyhold.now();
            Some(
                list.iter()
                    .filter(|r| r.may_vote(&me.name, me.role, now).is_ok())
                    .count(),
            )
        }
        Err(error) => {
            tracing::debug!(%error, "cannot count the approval requests waiting for this session");
            None
        }
    }
}

/// The open drift findings of every group: the counts `/metrics` exports,
/// one small query, so every page can say them in its navigation.
async fn drift_open(app: &AppState) -> Option<u64> {
    match app.keyhold.drift_counts().await {
        Ok(counts) => Some(counts.iter().map(|(_, n)| n).sum()),
        Err(error) => {
            tracing::debug!(%error, "cannot count the open drift findings");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    #[test]
    fn cookies_are_read_by_exact_name() {
        let h = headers(&[("cookie", "a=1; keyhold_session=tok; keyhold_sessionx=no")]);
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("tok"));
        assert_eq!(cookie(&h, LOGIN_COOKIE), None);
        let empty = headers(&[("cookie", "keyhold_session=")]);
        assert_eq!(cookie(&empty, SESSION_COOKIE), None);
    }

    #[test]
    fn the_session_cookie_wins_over_the_login_nonce() {
        let h = headers(&[("cookie", "keyhold_login=n; keyhold_session=s")]);
        assert_eq!(csrf_secret(&h).as_deref(), Some("s"));
        let h = headers(&[("cookie", "keyhold_login=n")]);
        assert_eq!(csrf_secret(&h).as_deref(), Some("n"));
    }

    #[test]
    fn tokens_differ_per_secret_and_hide_it() {
        let a = csrf_token("secret-a");
        assert_eq!(a, csrf_token("secret-a"));
        assert_ne!(a, csrf_token("secret-b"));
        assert!(!a.contains("secret"));
        assert!(same_bytes(a.as_bytes(), a.as_bytes()));
        assert!(!same_bytes(a.as_bytes(), b"short"));
    }

    #[test]
    fn cookies_are_http_only_secure_and_strict() {
        let set = set_cookie(SESSION_COOKIE, "tok");
        let set = set.to_str().unwrap();
        for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/ui"] {
            assert!(set.contains(attribute), "{set}");
        }
        assert!(
            clear_cookie(SESSION_COOKIE)
                .to_str()
                .unwrap()
                .contains("Max-Age=0")
        );
    }

    #[test]
    fn the_origin_must_be_this_server() {
        assert!(origin_ok(&headers(&[("host", "127.0.0.1:8600")])));
        assert!(origin_ok(&headers(&[
            ("host", "127.0.0.1:8600"),
            ("origin", "http://127.0.0.1:8600")
        ])));
        assert!(!origin_ok(&headers(&[
            ("host", "127.0.0.1:8600"),
            ("origin", "http://evil.example")
        ])));
        assert!(!origin_ok(&headers(&[
            ("host", "127.0.0.1:8600"),
            ("origin", "null")
        ])));
    }
}
