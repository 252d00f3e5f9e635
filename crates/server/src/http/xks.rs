//! *External Key Stores*: the stores AWS KMS reaches keyhold's XKS proxy
//! under, their SigV4 credentials and their keys (`/api/v1/xks/...`). A
//! credential's secret is in the answer that made it (201), and never again.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use keyhold_api as api;
use serde::Deserialize;

use super::errors::ApiResult;
use super::extract::{ApiJson, ApiQuery, Caller};
use crate::app::AppState;
use crate::operations::xks;

pub async fn list_stores(
    State(app): State<AppState>,
    Caller(session): Caller,
) -> ApiResult<Json<Vec<api::XksStoreView>>> {
    Ok(Json(xks::list_stores(&app, &session).await?))
}

pub async fn create_store(
    State(app): State<AppState>,
    Caller(session): Caller,
    ApiJson(req): ApiJson<api::CreateXksStoreRequest>,
) -> ApiResult<(StatusCode, Json<api::IssuedXksCredentialView>)> {
    let issued = xks::create_store(&app, &session, &req).await?;
    Ok((StatusCode::CREATED, Json(issued)))
}

pub async fn show_store(
    State(app): State<AppState>,
    Caller(session): Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<api::XksStoreView>> {
    Ok(Json(xks::show_store(&app, &session, &name).await?))
}

pub async fn update_store(
    State(app): State<AppState>,
    Caller(session): Caller,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<api::UpdateXksStoreRequest>,
) -> ApiResult<Json<api::XksStoreView>> {
    Ok(Json(xks::update_store(&app, &session, &name, &req).await?))
}

pub async fn delete_store(
    State(app): State<AppState>,
    Caller(session): Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    xks::delete_store(&app, &session, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn add_credential(
    State(app): State<AppState>,
    Caller(session): Caller,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, Json<api::IssuedXksCredentialView>)> {
    let issued = xks::add_credential(&app, &session, &name).await?;
    Ok((StatusCode::CREATED, Json(issued)))
}

pub async fn revoke_credential(
    State(app): State<AppState>,
    Caller(session): Caller,
    Path((name, access_key_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    xks::revoke_credential(&app, &session, &name, &access_key_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn list_store_keys(
    State(app): State<AppState>,
    Caller(session): Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<api::XksKeyView>>> {
    Ok(Json(xks::list_keys(&app, &session, Some(&name)).await?))
}

pub async fn create_key(
    State(app): State<AppState>,
    Caller(session): Caller,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<api::CreateXksKeyRequest>,
) -> ApiResult<(StatusCode, Json<api::XksKeyView>)> {
    let key = xks::create_key(&app, &session, &name, &req).await?;
    Ok((StatusCode::CREATED, Json(key)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysQuery {
    /// One store's keys; every store's without it.
    store: Option<String>,
}

pub async fn list_keys(
    State(app): State<AppState>,
    Caller(session): Caller,
    ApiQuery(query): ApiQuery<KeysQuery>,
) -> ApiResult<Json<Vec<api::XksKeyView>>> {
    Ok(Json(
        xks::list_keys(&app, &session, query.store.as_deref()).await?,
    ))
}

pub async fn show_key(
    State(app): State<AppState>,
    Caller(session): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<api::XksKeyView>> {
    Ok(Json(xks::show_key(&app, &session, &id).await?))
}

pub async fn update_key(
    State(app): State<AppState>,
    Caller(session): Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<api::UpdateXksKeyRequest>,
) -> ApiResult<Json<api::XksKeyView>> {
    Ok(Json(xks::update_key(&app, &session, &id, &req).await?))
}

pub async fn delete_key(
    State(app): State<AppState>,
    Caller(session): Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    xks::delete_key(&app, &session, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
