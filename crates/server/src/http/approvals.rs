//! *Administration → Approvals*: requests held to a quorum, their answers,
//! and the approval policies.

use axum::Json;
use axum::extract::{Path, State};
use keyhold_api as api;
use serde::Deserialize;

use super::errors::ApiResult;
use super::extract::{ApiJson, ApiQuery, Caller, OptionalJson};
use super::page_limit;
use crate::app::AppState;
use crate::operations::approvals;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalQuery {
    /// `pending`, `approved`, `executed`, `failed`, `denied` or `expired`.
    status: Option<String>,
    limit: Option<u32>,
}

pub async fn list(
    State(app): State<AppState>,
    Caller(session): Caller,
    ApiQuery(query): ApiQuery<ApprovalQuery>,
) -> ApiResult<Json<Vec<api::ApprovalView>>> {
    let limit = page_limit(query.limit)?;
    Ok(Json(
        approvals::list(&app, &session, query.status.as_deref(), limit).await?,
    ))
}

pub async fn show(
    State(app): State<AppState>,
    Caller(session): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<api::ApprovalView>> {
    Ok(Json(approvals::show(&app, &session, &id).await?))
}

pub async fn approve(
    State(app): State<AppState>,
    Caller(session): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<api::ApprovalView>> {
    Ok(Json(approvals::approve(&app, &session, &id).await?))
}

pub async fn deny(
    State(app): State<AppState>,
    Caller(session): Caller,
    Path(id): Path<String>,
    OptionalJson(req): OptionalJson<api::DenyRequest>,
) -> ApiResult<Json<api::ApprovalView>> {
    Ok(Json(approvals::deny(&app, &session, &id, &req).await?))
}

pub async fn collect_result(
    State(app): State<AppState>,
    Caller(session): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<api::ApprovalResultView>> {
    Ok(Json(approvals::collect_result(&app, &session, &id).await?))
}

pub async fn policies(
    State(app): State<AppState>,
    Caller(session): Caller,
) -> ApiResult<Json<Vec<api::PolicyView>>> {
    Ok(Json(approvals::policies(&app, &session).await?))
}

pub async fn change_policies(
    State(app): State<AppState>,
    Caller(session): Caller,
    ApiJson(req): ApiJson<api::ApprovalPoliciesRequest>,
) -> ApiResult<Json<Vec<api::PolicyView>>> {
    Ok(Json(
        approvals::change_policies(&app, &session, &req).await?,
    ))
}
