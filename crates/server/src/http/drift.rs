//! *Drift*: findings, reconcile plans, and the jobs that check and
//! reconcile. Starting a job answers 202 at once with the queued job and
//! its `Location`; the runner takes it from there.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use keyhold_api as api;

use super::errors::ApiResult;
use super::extract::{ApiJson, ApiQuery, Caller};
use crate::app::AppState;
use crate::operations::drift::{self, FindingsQuery};

/// 202 with the queued job and where to follow it.
fn accepted(job: api::JobView) -> (StatusCode, HeaderMap, Json<api::JobView>) {
    let mut headers = HeaderMap::new();
    // A job id is a UUID: always a valid header value.
    if let Ok(value) = HeaderValue::from_str(&format!("/api/v1/jobs/{}", job.id)) {
        headers.insert(header::LOCATION, value);
    }
    (StatusCode::ACCEPTED, headers, Json(job))
}

pub async fn overview(
    State(app): State<AppState>,
    Caller(session): Caller,
) -> ApiResult<Json<api::DriftOverviewView>> {
    Ok(Json(drift::overview(&app, &session).await?))
}

pub async fn findings(
    State(app): State<AppState>,
    Caller(session): Caller,
    ApiQuery(query): ApiQuery<FindingsQuery>,
) -> ApiResult<Json<Vec<api::DriftFindingView>>> {
    Ok(Json(drift::findings(&app, &session, &query).await?))
}

pub async fn finding(
    State(app): State<AppState>,
    Caller(session): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<api::DriftFindingView>> {
    Ok(Json(drift::finding(&app, &session, &id).await?))
}

pub async fn check_all(
    State(app): State<AppState>,
    Caller(session): Caller,
) -> ApiResult<(StatusCode, Json<api::DriftChecksStartedView>)> {
    let started = drift::check_all(&app, &session).await?;
    Ok((StatusCode::ACCEPTED, Json(started)))
}

pub async fn check_group(
    State(app): State<AppState>,
    Caller(session): Caller,
    Path(group): Path<String>,
) -> ApiResult<(StatusCode, HeaderMap, Json<api::JobView>)> {
    Ok(accepted(drift::check_group(&app, &session, &group).await?))
}

pub async fn plan(
    State(app): State<AppState>,
    Caller(session): Caller,
    Path(group): Path<String>,
) -> ApiResult<Json<api::DriftPlanView>> {
    Ok(Json(drift::plan(&app, &session, &group).await?))
}

pub async fn reconcile(
    State(app): State<AppState>,
    Caller(session): Caller,
    Path(group): Path<String>,
    ApiJson(req): ApiJson<api::ReconcileRequest>,
) -> ApiResult<(StatusCode, HeaderMap, Json<api::JobView>)> {
    Ok(accepted(
        drift::reconcile(&app, &session, &group, &req).await?,
    ))
}
