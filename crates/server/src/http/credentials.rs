//! *Identity Management → Cloud Credentials*. Secrets go in, never out; a
//! default-chain credential has none at all.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use keyhold_api as api;
use keyhold_core::InvalidInput;
use keyhold_core::credential::{AccessKeyCsv, CloudService, CredentialKind, Endpoint, RoleArn};
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

/// Adds a credential on the server's AWS default credential chain, with an
/// optional role to assume: nothing secret is sent or stored.
pub async fn add_chain(
    State(app): State<AppState>,
    Caller(session): Caller,
    ApiJson(req): ApiJson<api::AddCredentialRequest>,
) -> ApiResult<(StatusCode, Json<api::CredentialView>)> {
    let result = async {
        let name = CredentialName::parse(&req.name)?;
        if let Some(service) = &req.service {
            CloudService::parse(service)?;
        }
        match req.kind.as_str() {
            CredentialKind::DEFAULT_CHAIN => {}
            CredentialKind::ACCESS_KEY => {
                return Err(InvalidInput::new(
                    "kind",
                    "access keys are imported from the CSV that IAM offers for download: POST /api/v1/credentials (keyhold credential import)",
                )
                .into());
            }
            _ => {
                return Err(InvalidInput::new(
                    "kind",
                    format!(
                        "unknown credential kind '{}': the kind added here is '{}'",
                        printable(&req.kind),
                        CredentialKind::DEFAULT_CHAIN
                    ),
                )
                .into());
            }
        }
        let role_arn = req.role_arn.as_deref().map(RoleArn::parse).transpose()?;
        let endpoint = req.endpoint.as_deref().map(Endpoint::parse).transpose()?;
        Ok(app
            .keyhold
            .add_chain_credential(&session, name, role_arn, endpoint)
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
