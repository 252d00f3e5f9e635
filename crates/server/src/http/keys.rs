//! *Key Management → Keys*: the keys beneath their groups.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use keyhold_api as api;
use keyhold_core::key::{KeyCursor, KeyPage};
use keyhold_core::names::GroupName;
use serde::Deserialize;

use super::errors::ApiResult;
use super::extract::{ApiQuery, Caller};
use super::page_limit;
use crate::app::AppState;
use crate::operations::keys;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyQuery {
    group: Option<String>,
    limit: Option<u32>,
    /// `GROUP:VERSION` of the last key of the previous page.
    after: Option<String>,
}

/// One page of keys by group name, then version; the next page starts
/// `after` the `group:version` of this page's last key.
pub async fn list(
    State(app): State<AppState>,
    Caller(session): Caller,
    ApiQuery(query): ApiQuery<KeyQuery>,
) -> ApiResult<Json<Vec<api::KeyView>>> {
    let page = KeyPage {
        group: query.group.as_deref().map(GroupName::parse).transpose()?,
        after: query.after.as_deref().map(KeyCursor::parse).transpose()?,
        limit: page_limit(query.limit)?,
    };
    Ok(Json(keys::list(&app, &session, &page).await?))
}

pub async fn show(
    State(app): State<AppState>,
    Caller(session): Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<api::KeyView>> {
    Ok(Json(keys::show(&app, &session, &name).await?))
}

pub async fn delete(
    State(app): State<AppState>,
    Caller(session): Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    keys::delete(&app, &session, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
