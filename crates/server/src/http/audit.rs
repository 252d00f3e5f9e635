//! *Logging and Reporting → Audit Logs*: list, verify, export.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use keyhold_api as api;
use keyhold_core::InvalidInput;
use keyhold_core::audit::{AuditFilter, Checkpoint, search_term};
use keyhold_core::clock::parse_timestamp;
use serde::Deserialize;

use super::errors::{ApiError, ApiResult};
use super::extract::{ApiJson, ApiQuery, Caller};
use super::page_limit;
use crate::app::AppState;
use crate::operations::audit;
use crate::views;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    from: Option<String>,
    to: Option<String>,
    user: Option<String>,
    text: Option<String>,
    limit: Option<u32>,
    before_seq: Option<i64>,
}

fn time_bound(
    field: &'static str,
    raw: Option<&str>,
) -> Result<Option<keyhold_core::clock::Timestamp>, InvalidInput> {
    raw.map(|r| {
        parse_timestamp(r).ok_or_else(|| {
            InvalidInput::new(
                field,
                format!("{field} must be an RFC 3339 time such as 2026-11-29T12:00:00Z"),
            )
        })
    })
    .transpose()
}

pub async fn list(
    State(app): State<AppState>,
    Caller(session): Caller,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> ApiResult<Json<Vec<api::AuditEntryView>>> {
    let limit = page_limit(query.limit)?;
    let filter = AuditFilter {
        from: time_bound("from", query.from.as_deref())?,
        to: time_bound("to", query.to.as_deref())?,
        user: search_term("user", query.user)?,
        text: search_term("text", query.text)?,
        limit,
        before_seq: query.before_seq,
    };
    let entries = app.keyhold.list_audit(&session, &filter).await?;
    Ok(Json(entries.iter().map(views::audit_entry).collect()))
}

/// Against the newest checkpoint this server wrote.
pub async fn verify(
    State(app): State<AppState>,
    Caller(session): Caller,
) -> ApiResult<Json<api::AuditVerifyView>> {
    let report = audit::verify(&app, &session, Vec::new()).await?;
    let archives = audit::verify_archives(&app, &session).await?;
    Ok(Json(views::audit_verify_with_archives(report, &archives)))
}

/// Against the checkpoints in the body too (kept elsewhere by an auditor).
pub async fn verify_against(
    State(app): State<AppState>,
    Caller(session): Caller,
    ApiJson(request): ApiJson<api::AuditVerifyRequest>,
) -> ApiResult<Json<api::AuditVerifyView>> {
    let given = request
        .checkpoints
        .into_iter()
        .enumerate()
        .map(|(i, value)| {
            serde_json::from_value::<Checkpoint>(value).map_err(|e| {
                InvalidInput::new(
                    "checkpoints",
                    format!(
                        "checkpoints[{i}] is not a keyhold audit checkpoint ({e}); give the lines of a checkpoint file unchanged"
                    ),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let report = audit::verify(&app, &session, given).await?;
    let archives = audit::verify_archives(&app, &session).await?;
    Ok(Json(views::audit_verify_with_archives(report, &archives)))
}

/// Signs the log's head now, and appends it to the checkpoint file.
pub async fn checkpoint(
    State(app): State<AppState>,
    Caller(session): Caller,
) -> ApiResult<(StatusCode, Json<Checkpoint>)> {
    let checkpoint = audit::checkpoint(&app, &session).await?;
    Ok((StatusCode::CREATED, Json(checkpoint)))
}

pub async fn public_key(
    State(app): State<AppState>,
    Caller(session): Caller,
) -> ApiResult<Json<api::AuditPublicKeyView>> {
    let key = app.keyhold.audit_public_key(&session)?;
    Ok(Json(views::audit_public_key(&key)))
}

/// What this node's audit streams to a SIEM are doing.
pub async fn streams(
    State(app): State<AppState>,
    Caller(session): Caller,
) -> ApiResult<Json<Vec<api::AuditStreamView>>> {
    Ok(Json(audit::streams(&app, &session)?))
}

/// Streams the whole log as JSON Lines, oldest first.
pub async fn export(State(app): State<AppState>, Caller(session): Caller) -> ApiResult<Response> {
    let lines = audit::export(&app, &session).await?;
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response())
}

impl From<std::convert::Infallible> for ApiError {
    fn from(never: std::convert::Infallible) -> Self {
        match never {}
    }
}
