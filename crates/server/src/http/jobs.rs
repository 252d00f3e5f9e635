//! *Cloud → Force Rotate*, *Cloud → Synchronize*, and *Logging and
//! Reporting → Jobs*. Starting a job answers 202 at once with the queued
//! job; the runner takes it from there.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use keyhold_api as api;
use serde::Deserialize;

use super::errors::ApiResult;
use super::extract::{ApiQuery, Caller, OptionalJson};
use super::page_limit;
use crate::app::AppState;
use crate::operations::jobs;
use crate::views;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobQuery {
    limit: Option<u32>,
}

pub async fn rotate(
    State(app): State<AppState>,
    Caller(session): Caller,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, Json<api::JobView>)> {
    let job = jobs::rotate(&app, &session, &name).await?;
    Ok((StatusCode::ACCEPTED, Json(job)))
}

pub async fn synchronize(
    State(app): State<AppState>,
    Caller(session): Caller,
    Path(name): Path<String>,
    OptionalJson(req): OptionalJson<api::SyncRequest>,
) -> ApiResult<(StatusCode, Json<api::JobView>)> {
    let job = jobs::synchronize(&app, &session, &name, &req).await?;
    Ok((StatusCode::ACCEPTED, Json(job)))
}

pub async fn list(
    State(app): State<AppState>,
    Caller(session): Caller,
    ApiQuery(query): ApiQuery<JobQuery>,
) -> ApiResult<Json<Vec<api::JobView>>> {
    let limit = page_limit(query.limit)?;
    let jobs = app.keyhold.list_jobs(&session, limit).await?;
    Ok(Json(jobs.iter().map(|j| views::job(j, None)).collect()))
}

pub async fn show(
    State(app): State<AppState>,
    Caller(session): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<api::JobView>> {
    Ok(Json(jobs::show(&app, &session, &id).await?))
}

pub async fn retry(
    State(app): State<AppState>,
    Caller(session): Caller,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<api::JobView>)> {
    let job = jobs::retry(&app, &session, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(job)))
}

pub async fn cancel(
    State(app): State<AppState>,
    Caller(session): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<api::JobView>> {
    Ok(Json(jobs::cancel(&app, &session, &id).await?))
}
