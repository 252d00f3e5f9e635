//! *Key Management → Keys → Key Group*.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use keyhold_api as api;
use keyhold_core::group::KeyGroup;
use keyhold_core::identity::Operation;
use keyhold_core::names::GroupName;

use super::errors::ApiResult;
use super::extract::{ApiJson, Caller};
use super::{AppState, printable, requests, views};

pub async fn list(
    State(app): State<AppState>,
    Caller(session): Caller,
) -> ApiResult<Json<Vec<api::GroupView>>> {
    let groups = app.keyhold.list_groups(&session).await?;
    let mut views = Vec::with_capacity(groups.len());
    for group in &groups {
        views.push(view(&app, group).await?);
    }
    Ok(Json(views))
}

pub async fn show(
    State(app): State<AppState>,
    Caller(session): Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<api::GroupView>> {
    let name = GroupName::parse(&name)?;
    let group = app.keyhold.get_group(&session, &name).await?;
    Ok(Json(view(&app, &group).await?))
}

/// The group with where its rotation stands (the caller has read it already).
pub(crate) async fn view(app: &AppState, group: &KeyGroup) -> ApiResult<api::GroupView> {
    let rotation = app.keyhold.rotation_state(&group.name).await?;
    Ok(views::group(group, &rotation))
}

pub async fn create(
    State(app): State<AppState>,
    Caller(session): Caller,
    ApiJson(req): ApiJson<api::CreateGroupRequest>,
) -> ApiResult<(StatusCode, Json<api::GroupView>)> {
    let result = async {
        let spec = requests::new_group(&req)?;
        Ok(app.keyhold.create_group(&session, spec).await?)
    }
    .await;
    let group = app
        .audited_for(
            &session,
            || {
                format!(
                    "Failed to add HSM protected key group {}",
                    printable(&req.name)
                )
            },
            result,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(view(&app, &group).await?)))
}

pub async fn update(
    State(app): State<AppState>,
    Caller(session): Caller,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<api::UpdateGroupRequest>,
) -> ApiResult<Json<api::GroupView>> {
    let result = async {
        app.keyhold
            .authorize(&session, Operation::UPDATE_GROUP)
            .await?;
        let parsed = GroupName::parse(&name)?;
        let current = app.keyhold.get_group(&session, &parsed).await?;
        let change = requests::group_change(&req, &current.info)?;
        Ok(app.keyhold.update_group(&session, &parsed, change).await?)
    }
    .await;
    let group = app
        .audited_for(
            &session,
            || {
                format!(
                    "Failed to update HSM protected key group {}",
                    printable(&name)
                )
            },
            result,
        )
        .await?;
    Ok(Json(view(&app, &group).await?))
}

pub async fn delete(
    State(app): State<AppState>,
    Caller(session): Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let result = async {
        let parsed = GroupName::parse(&name)?;
        Ok(app.keyhold.delete_group(&session, &parsed).await?)
    }
    .await;
    app.audited_for(
        &session,
        || {
            format!(
                "Failed to delete HSM protected key group {}",
                printable(&name)
            )
        },
        result,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
