//! *Administration → Configuration*.

use axum::Json;
use axum::extract::State;
use keyhold_api as api;
use keyhold_core::settings::SettingsChange;

use super::errors::ApiResult;
use super::extract::{ApiJson, Caller};
use super::{AppState, views};

pub async fn show(
    State(app): State<AppState>,
    Caller(session): Caller,
) -> ApiResult<Json<api::SettingsView>> {
    Ok(Json(views::settings(
        &app.keyhold.settings(&session).await?,
    )))
}

pub async fn change(
    State(app): State<AppState>,
    Caller(session): Caller,
    ApiJson(req): ApiJson<api::SettingsChangeRequest>,
) -> ApiResult<Json<api::SettingsView>> {
    let change = SettingsChange {
        dual_control: req.dual_control,
        lockout_threshold: req.lockout_threshold,
        lockout_minutes: req.lockout_minutes,
        session_idle_minutes: req.session_idle_minutes,
        session_max_hours: req.session_max_hours,
    };
    let result = app
        .keyhold
        .change_settings(&session, change)
        .await
        .map_err(Into::into);
    let settings = app
        .audited_for(
            &session,
            || "Failed to change configuration".to_owned(),
            result,
        )
        .await?;
    Ok(Json(views::settings(&settings)))
}
