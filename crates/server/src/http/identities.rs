//! *Identity Management → Identities*.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use keyhold_api as api;
use keyhold_core::identity::Role;
use keyhold_core::names::IdentityName;
use secrecy::ExposeSecret;

use super::errors::ApiResult;
use super::extract::{ApiJson, Caller};
use super::{AppState, printable, views};

pub async fn list(
    State(app): State<AppState>,
    Caller(session): Caller,
) -> ApiResult<Json<Vec<api::IdentityView>>> {
    let now = app.keyhold.now();
    let identities = app.keyhold.list_identities(&session).await?;
    Ok(Json(
        identities.iter().map(|i| views::identity(i, now)).collect(),
    ))
}

pub async fn create(
    State(app): State<AppState>,
    Caller(session): Caller,
    ApiJson(req): ApiJson<api::CreateIdentityRequest>,
) -> ApiResult<(StatusCode, Json<api::CreatedIdentity>)> {
    let result = async {
        let name = IdentityName::parse(&req.name)?;
        let role = Role::parse(&req.role)?;
        Ok(app.keyhold.create_identity(&session, name, role).await?)
    }
    .await;
    let created = app
        .audited_for(
            &session,
            || format!("Failed to add identity '{}'", printable(&req.name)),
            result,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(api::CreatedIdentity {
            name: created.name.to_string(),
            role: req.role,
            password: created.password.expose_secret().to_owned(),
        }),
    ))
}

pub async fn delete(
    State(app): State<AppState>,
    Caller(session): Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let result = async {
        let parsed = IdentityName::parse(&name)?;
        Ok(app.keyhold.delete_identity(&session, &parsed).await?)
    }
    .await;
    app.audited_for(
        &session,
        || format!("Failed to delete identity '{}'", printable(&name)),
        result,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
