//! *Backups*: records, files, shares and custodians; the audit log's
//! archives. Starting a backup answers 202 at once with its record and
//! `Location`; the file is made in the background.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keyhold_api as api;
use serde::Deserialize;

use super::errors::ApiResult;
use super::extract::{ApiJson, ApiQuery, Caller};
use crate::app::AppState;
use crate::operations::backups;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    limit: Option<u32>,
}

pub async fn list(
    State(app): State<AppState>,
    Caller(session): Caller,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult<Json<Vec<api::BackupView>>> {
    Ok(Json(backups::list(&app, &session, query.limit).await?))
}

pub async fn start(
    State(app): State<AppState>,
    Caller(session): Caller,
) -> ApiResult<(StatusCode, HeaderMap, Json<api::BackupView>)> {
    let backup = backups::start(&app, &session).await?;
    let mut headers = HeaderMap::new();
    // A backup id is a UUID: always a valid header value.
    if let Ok(value) = HeaderValue::from_str(&format!("/api/v1/backups/{}", backup.id)) {
        headers.insert(header::LOCATION, value);
    }
    Ok((StatusCode::ACCEPTED, headers, Json(backup)))
}

pub async fn show(
    State(app): State<AppState>,
    Caller(session): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<api::BackupView>> {
    Ok(Json(backups::show(&app, &session, &id).await?))
}

pub async fn shares(
    State(app): State<AppState>,
    Caller(session): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<api::BackupSharesView>> {
    Ok(Json(backups::shares(&app, &session, &id).await?))
}

/// The backup file, streamed (it is encrypted; its key is in the shares).
pub async fn file(
    State(app): State<AppState>,
    Caller(session): Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (name, path) = backups::file(&app, &session, &id).await?;
    let file = std::fs::File::open(&path).map_err(|e| {
        keyhold_core::error::CoreError::Conflict(format!(
            "the file of backup {id} cannot be read on this node ({e}): download it from the node that made it, or from where the backup directory is shipped"
        ))
    })?;
    let disposition = crate::backup::attachment(&name);
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        crate::backup::file_body(file),
    )
        .into_response())
}

pub async fn custodians(
    State(app): State<AppState>,
    Caller(session): Caller,
) -> ApiResult<Json<api::CustodiansView>> {
    Ok(Json(backups::custodians(&app, &session).await?))
}

pub async fn set_custodians(
    State(app): State<AppState>,
    Caller(session): Caller,
    ApiJson(req): ApiJson<api::SetCustodiansRequest>,
) -> ApiResult<Json<api::CustodiansView>> {
    Ok(Json(backups::set_custodians(&app, &session, &req).await?))
}

pub async fn archives(
    State(app): State<AppState>,
    Caller(session): Caller,
) -> ApiResult<Json<Vec<api::AuditArchiveView>>> {
    Ok(Json(backups::archives(&app, &session).await?))
}

/// 201 with the archive written, or 204 when there was nothing to archive.
pub async fn archive(
    State(app): State<AppState>,
    Caller(session): Caller,
    ApiJson(req): ApiJson<api::ArchiveRequest>,
) -> ApiResult<Response> {
    Ok(match backups::archive(&app, &session, &req).await? {
        Some(view) => (StatusCode::CREATED, Json(view)).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}
