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
use super::{AppState, page_limit, printable, views};

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
    let now = app.keyhold.now();
    let keys = app.keyhold.list_keys(&session, &page).await?;
    Ok(Json(keys.iter().map(|k| views::key(k, now)).collect()))
}

pub async fn show(
    State(app): State<AppState>,
    Caller(session): Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<api::KeyView>> {
    let key = app.keyhold.get_key(&session, &name).await?;
    Ok(Json(views::key(&key, app.keyhold.now())))
}

pub async fn delete(
    State(app): State<AppState>,
    Caller(session): Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let result = app
        .keyhold
        .delete_key(&session, &name)
        .await
        .map_err(Into::into);
    app.audited_for(
        &session,
        || format!("Failed to delete HSM protected key {}", printable(&name)),
        result,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
