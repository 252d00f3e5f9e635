//! Logging in (and joining a session for dual control), out, and passwords.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::request::Parts;
use keyhold_api as api;
use secrecy::{ExposeSecret, SecretString};

use super::errors::ApiResult;
use super::extract::{ApiJson, Caller, bearer_token};
use crate::app::AppState;
use crate::client_address::ClientAddress;
use crate::operations::sessions;
use crate::views;

/// The bearer token, read without requiring a session (login may start one).
pub struct OptionalToken(Option<String>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for OptionalToken {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(bearer_token(parts)))
    }
}

pub async fn login(
    State(app): State<AppState>,
    ClientAddress(client): ClientAddress,
    OptionalToken(token): OptionalToken,
    ApiJson(req): ApiJson<api::LoginRequest>,
) -> ApiResult<Json<api::SessionView>> {
    let password = SecretString::from(req.password);
    let outcome = sessions::login(&app, client, token.as_deref(), &req.user, &password).await?;
    let token = outcome.token.expose_secret().to_owned();
    Ok(Json(views::session(&outcome.session, Some(token))))
}

pub async fn show(Caller(session): Caller) -> Json<api::SessionView> {
    Json(views::session(&session, None))
}

pub async fn logout(State(app): State<AppState>, Caller(session): Caller) -> ApiResult<StatusCode> {
    app.keyhold.logout(&session).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn change_password(
    State(app): State<AppState>,
    ClientAddress(client): ClientAddress,
    ApiJson(req): ApiJson<api::PasswordChangeRequest>,
) -> ApiResult<StatusCode> {
    sessions::change_password(&app, client, req).await?;
    Ok(StatusCode::NO_CONTENT)
}
