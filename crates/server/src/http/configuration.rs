//! *Administration → Configuration*.

use axum::Json;
use axum::extract::State;
use keyhold_api as api;
use keyhold_core::CoreError;
use keyhold_core::cluster::RotatorChoice;
use keyhold_core::settings::SettingsChange;

use super::errors::ApiResult;
use super::extract::{ApiJson, Caller};
use super::{AppState, views};

pub async fn show(
    State(app): State<AppState>,
    Caller(session): Caller,
) -> ApiResult<Json<api::SettingsView>> {
    let settings = app.keyhold.settings(&session).await?;
    Ok(Json(views::settings(&settings, cluster(&app).await?)))
}

/// Who rotates, as this node sees it, with every node that has joined.
pub async fn cluster(app: &AppState) -> ApiResult<api::ClusterView> {
    let nodes = app
        .keyhold
        .store()
        .list_nodes()
        .await
        .map_err(CoreError::from)?;
    Ok(views::cluster(
        &app.rotator.status(),
        &nodes,
        app.keyhold.now(),
    ))
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
        designated_rotator: req
            .designated_rotator
            .as_deref()
            .map(RotatorChoice::parse)
            .transpose()
            .map_err(CoreError::from)?,
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
    Ok(Json(views::settings(&settings, cluster(&app).await?)))
}
