//! *Identity Management → Identities*.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use keyhold_api as api;

use super::errors::ApiResult;
use super::extract::{ApiJson, Caller};
use crate::app::AppState;
use crate::operations::identities;

pub async fn list(
    State(app): State<AppState>,
    Caller(session): Caller,
) -> ApiResult<Json<Vec<api::IdentityView>>> {
    Ok(Json(identities::list(&app, &session).await?))
}

pub async fn create(
    State(app): State<AppState>,
    Caller(session): Caller,
    ApiJson(req): ApiJson<api::CreateIdentityRequest>,
) -> ApiResult<(StatusCode, Json<api::CreatedIdentity>)> {
    let created = identities::add(&app, &session, &req).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

pub async fn delete(
    State(app): State<AppState>,
    Caller(session): Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    identities::delete(&app, &session, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
