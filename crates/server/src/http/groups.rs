//! *Key Management → Keys → Key Group*.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use keyhold_api as api;

use super::errors::ApiResult;
use super::extract::{ApiJson, Caller};
use crate::app::AppState;
use crate::operations::groups;

pub async fn list(
    State(app): State<AppState>,
    Caller(session): Caller,
) -> ApiResult<Json<Vec<api::GroupView>>> {
    Ok(Json(groups::list(&app, &session).await?))
}

pub async fn show(
    State(app): State<AppState>,
    Caller(session): Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<api::GroupView>> {
    Ok(Json(groups::show(&app, &session, &name).await?))
}

pub async fn create(
    State(app): State<AppState>,
    Caller(session): Caller,
    ApiJson(req): ApiJson<api::CreateGroupRequest>,
) -> ApiResult<(StatusCode, Json<api::GroupView>)> {
    let group = groups::add(&app, &session, &req).await?;
    Ok((StatusCode::CREATED, Json(group)))
}

pub async fn update(
    State(app): State<AppState>,
    Caller(session): Caller,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<api::UpdateGroupRequest>,
) -> ApiResult<Json<api::GroupView>> {
    Ok(Json(groups::update(&app, &session, &name, &req).await?))
}

pub async fn delete(
    State(app): State<AppState>,
    Caller(session): Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    groups::delete(&app, &session, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
