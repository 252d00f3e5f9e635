//! *Identity Management → Cloud Credentials*. Secrets go in, never out.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use keyhold_api as api;
use keyhold_core::credential::{AccessKeyCsv, CloudService, Endpoint};
use keyhold_core::names::CredentialName;

use super::errors::ApiResult;
use super::extract::{ApiJson, Caller};
use super::{AppState, printable, views};

pub async fn list(
    State(app): State<AppState>,
    Caller(session): Caller,
) -> ApiResult<Json<Vec<api::CredentialView>>> {
    let credentials = app.keyhold.list_credentials(&session).await?;
    Ok(Json(credentials.iter().map(views::credential).collect()))
}

pub async fn show(
    State(app): State<AppState>,
    Caller(session): Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<api::CredentialView>> {
    let name = CredentialName::parse(&name)?;
    Ok(Json(views::credential(
        &app.keyhold.get_credential(&session, &name).await?,
    )))
}

pub async fn import(
    State(app): State<AppState>,
    Caller(session): Caller,
    ApiJson(req): ApiJson<api::ImportCredentialRequest>,
) -> ApiResult<(StatusCode, Json<api::CredentialView>)> {
    // The CSV text holds the secret: it is parsed into a SecretString at once
    // and the request's copy is wiped when this handler returns.
    let csv_text = zeroize::Zeroizing::new(req.csv);
    let result = async {
        let name = CredentialName::parse(&req.name)?;
        if let Some(service) = &req.service {
            CloudService::parse(service)?;
        }
        let csv = AccessKeyCsv::parse(csv_text.as_bytes())?;
        let endpoint = req.endpoint.as_deref().map(Endpoint::parse).transpose()?;
        Ok(app
            .keyhold
            .import_credential(&session, name, csv, endpoint)
            .await?)
    }
    .await;
    let credential = app
        .audited_for(
            &session,
            || format!("Failed to add cloud credential {}", printable(&req.name)),
            result,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(views::credential(&credential))))
}

pub async fn delete(
    State(app): State<AppState>,
    Caller(session): Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let result = async {
        let parsed = CredentialName::parse(&name)?;
        Ok(app.keyhold.delete_credential(&session, &parsed).await?)
    }
    .await;
    app.audited_for(
        &session,
        || format!("Failed to delete cloud credential {}", printable(&name)),
        result,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
