//! *Logging and Reporting → Audit Logs*: list, verify, export.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use keyhold_api as api;
use keyhold_core::InvalidInput;
use keyhold_core::audit::{AuditFilter, search_term};
use keyhold_core::clock::parse_timestamp;
use serde::Deserialize;

use super::errors::{ApiError, ApiResult};
use super::extract::{ApiQuery, Caller};
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

pub async fn verify(
    State(app): State<AppState>,
    Caller(session): Caller,
) -> ApiResult<Json<api::AuditVerifyView>> {
    let report = app.keyhold.verify_audit(&session).await?;
    Ok(Json(api::AuditVerifyView {
        ok: report.ok,
        entries_checked: report.entries_checked,
        first_bad_seq: report.first_bad_seq,
        reason: report.reason,
    }))
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
