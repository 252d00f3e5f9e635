//! *Identity Management → Cloud Credentials*. Secrets go in, never out; a
//! default-chain credential has none at all.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use keyhold_api as api;

use super::errors::ApiResult;
use super::extract::{ApiJson, Caller};
use crate::app::AppState;
use crate::operations::credentials;

pub async fn list(
    State(app): State<AppState>,
    Caller(session): Caller,
) -> ApiResult<Json<Vec<api::CredentialView>>> {
    Ok(Json(credentials::list(&app, &session).await?))
}

pub async fn show(
    State(app): State<AppState>,
    Caller(session): Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<api::CredentialView>> {
    Ok(Json(credentials::show(&app, &session, &name).await?))
}

pub async fn import(
    State(app): State<AppState>,
    Caller(session): Caller,
    ApiJson(req): ApiJson<api::ImportCredentialRequest>,
) -> ApiResult<(StatusCode, Json<api::CredentialView>)> {
    let credential = credentials::import(&app, &session, req).await?;
    Ok((StatusCode::CREATED, Json(credential)))
}

/// Adds a credential on the server's AWS default credential chain, with an
/// optional role to assume: nothing secret is sent or stored.
pub async fn add_chain(
    State(app): State<AppState>,
    Caller(session): Caller,
    ApiJson(req): ApiJson<api::AddCredentialRequest>,
) -> ApiResult<(StatusCode, Json<api::CredentialView>)> {
    let credential = credentials::add_chain(&app, &session, &req).await?;
    Ok((StatusCode::CREATED, Json(credential)))
}

/// `/credentials/chain` is also the path of a credential named `chain`: the
/// router takes that path to its own route, so these keep GET and DELETE
/// working for that name.
const CHAIN_PATH: &str = "chain";

pub async fn show_named_chain(
    state: State<AppState>,
    caller: Caller,
) -> ApiResult<Json<api::CredentialView>> {
    show(state, caller, Path(CHAIN_PATH.to_owned())).await
}

pub async fn delete_named_chain(state: State<AppState>, caller: Caller) -> ApiResult<StatusCode> {
    delete(state, caller, Path(CHAIN_PATH.to_owned())).await
}

pub async fn delete(
    State(app): State<AppState>,
    Caller(session): Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    credentials::delete(&app, &session, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
