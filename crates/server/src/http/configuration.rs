//! *Administration → Configuration*.

use axum::Json;
use axum::extract::State;
use keyhold_api as api;

use super::errors::ApiResult;
use super::extract::{ApiJson, Caller};
use crate::app::AppState;
use crate::operations::configuration;

pub async fn show(
    State(app): State<AppState>,
    Caller(session): Caller,
) -> ApiResult<Json<api::SettingsView>> {
    Ok(Json(configuration::show(&app, &session).await?))
}

pub async fn change(
    State(app): State<AppState>,
    Caller(session): Caller,
    ApiJson(req): ApiJson<api::SettingsChangeRequest>,
) -> ApiResult<Json<api::SettingsView>> {
    Ok(Json(configuration::change(&app, &session, &req).await?))
}
