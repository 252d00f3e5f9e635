//! Logging in and changing a password (a first-use change needs no
//! session): both check a password, so both pass the client address's
//! throttle first (`crate::login_throttle`).

use std::net::IpAddr;

use keyhold_api as api;
use keyhold_core::CoreError;
use keyhold_core::audit::ANONYMOUS_USER;
use keyhold_core::service::LoginOutcome;
use secrecy::SecretString;

use crate::app::AppState;
use crate::login_throttle::Admission;
use crate::{ApiError, ApiResult};

/// Logs in (or joins the session of `token`) for a client at `client`.
pub async fn login(
    app: &AppState,
    client: IpAddr,
    token: Option<&str>,
    user: &str,
    password: &SecretString,
) -> ApiResult<LoginOutcome> {
    let admission = admit(app, client).await?;
    let outcome = app.keyhold.login(token, user, password).await;
    settle(admission, outcome.as_ref().err());
    Ok(outcome?)
}

pub async fn change_password(
    app: &AppState,
    client: IpAddr,
    req: api::PasswordChangeRequest,
) -> ApiResult<()> {
    let current = SecretString::from(req.current_password);
    let new = SecretString::from(req.new_password);
    let admission = admit(app, client).await?;
    let changed = app.keyhold.change_password(&req.user, &current, &new).await;
    settle(admission, changed.as_ref().err());
    Ok(changed?)
}

/// Admits a password attempt from `client`, or refuses it before any
/// password is checked. The first refusal of a run is audited; the ones
/// after it are not (a flood would fill the log).
async fn admit(app: &AppState, client: IpAddr) -> ApiResult<Admission> {
    let throttled = match app.login_throttle.admit(client, app.keyhold.now()) {
        Ok(admission) => return Ok(admission),
        Err(throttled) => throttled,
    };
    if throttled.first {
        let settings = app.login_throttle.settings();
        let reason = format!(
            "{} failed logins or password changes from this address within {} minutes: its attempts are refused without checking a password for {} s (entries for the refusals that follow are left out)",
            settings.failures, settings.window_minutes, throttled.retry_after_seconds
        );
        if let Err(error) = app
            .keyhold
            .audit_refusal(
                ANONYMOUS_USER,
                format!("Throttled logins from {client}."),
                &reason,
            )
            .await
        {
            tracing::error!(%error, %client, "could not audit a throttled address");
        }
    }
    Err(ApiError::LoginThrottled {
        retry_after_seconds: throttled.retry_after_seconds,
    })
}

/// Ends an admitted attempt: a wrong name or password (or a locked
/// identity) counts against the address; anything else gives its place back.
fn settle(admission: Admission, error: Option<&CoreError>) {
    match error {
        Some(CoreError::Unauthenticated(_)) => admission.failed(),
        _ => admission.succeeded(),
    }
}
