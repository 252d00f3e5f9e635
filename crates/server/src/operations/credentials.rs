//! *Identity Management → Cloud Credentials*: add (from an access key CSV,
//! or on the server's default credential chain) and delete. Secrets go in,
//! never out.

use keyhold_api as api;
use keyhold_core::InvalidInput;
use keyhold_core::action::{Action, printable};
use keyhold_core::credential::{AccessKeyCsv, CloudService, CredentialKind, Endpoint, RoleArn};
use keyhold_core::identity::{Operation, Session};
use keyhold_core::names::CredentialName;

use super::approvals::{PendingOperation, csv_context, gate};
use super::audited;
use crate::ApiResult;
use crate::app::AppState;
use crate::views;

pub async fn list(app: &AppState, session: &Session) -> ApiResult<Vec<api::CredentialView>> {
    let credentials = app.keyhold.list_credentials(session).await?;
    Ok(credentials.iter().map(views::credential).collect())
}

pub async fn show(app: &AppState, session: &Session, name: &str) -> ApiResult<api::CredentialView> {
    let name = CredentialName::parse(name)?;
    Ok(views::credential(
        &app.keyhold.get_credential(session, &name).await?,
    ))
}

/// Adds an access key from the CSV that IAM offers for download.
pub async fn import(
    app: &AppState,
    session: &Session,
    req: api::ImportCredentialRequest,
) -> ApiResult<api::CredentialView> {
    // The CSV text holds the secret: it is parsed into a SecretString at once
    // and the request's copy is wiped when this returns.
    let csv_text = zeroize::Zeroizing::new(req.csv);
    let credential = audited(app, session, Action::AddCredential(&req.name), async {
        let name = CredentialName::parse(&req.name)?;
        if let Some(service) = &req.service {
            CloudService::parse(service)?;
        }
        let csv = AccessKeyCsv::parse(csv_text.as_bytes())?;
        let endpoint = req.endpoint.as_deref().map(Endpoint::parse).transpose()?;
        gate(app, session, Operation::ADD_CREDENTIAL, async || {
            // The CSV holds the secret: the request keeps it sealed by the
            // keystore, and shows only the access key id.
            use base64::Engine;
            let seal = uuid::Uuid::new_v4();
            let sealed = app
                .keyhold
                .keystore()
                .seal_secret(&csv_context(seal), csv_text.as_bytes())
                .map_err(keyhold_core::CoreError::from)?;
            Ok((
                PendingOperation::ImportCredential {
                    name: name.to_string(),
                    service: req.service.clone(),
                    endpoint: req.endpoint.clone(),
                    access_key_id: csv.access_key_id.to_string(),
                    seal,
                    sealed_csv: base64::engine::general_purpose::STANDARD.encode(sealed),
                },
                format!(
                    "Add cloud credential '{name}' (access key {}{})",
                    csv.access_key_id,
                    endpoint
                        .as_ref()
                        .map(|e| format!(", endpoint {e}"))
                        .unwrap_or_default()
                ),
            ))
        })
        .await?;
        Ok(app
            .keyhold
            .import_credential(session, name, csv, endpoint)
            .await?)
    })
    .await?;
    Ok(views::credential(&credential))
}

/// Adds a credential on the server's AWS default credential chain, with an
/// optional role to assume: nothing secret is sent or stored.
pub async fn add_chain(
    app: &AppState,
    session: &Session,
    req: &api::AddCredentialRequest,
) -> ApiResult<api::CredentialView> {
    let credential = audited(app, session, Action::AddCredential(&req.name), async {
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
        gate(app, session, Operation::ADD_CREDENTIAL, async || {
            Ok((
                PendingOperation::AddChainCredential {
                    credential: req.clone(),
                },
                format!(
                    "Add cloud credential '{name}' on the server's default credential chain{}",
                    role_arn
                        .as_ref()
                        .map(|r| format!(", assuming {r}"))
                        .unwrap_or_default()
                ),
            ))
        })
        .await?;
        Ok(app
            .keyhold
            .add_chain_credential(session, name, role_arn, endpoint)
            .await?)
    })
    .await?;
    Ok(views::credential(&credential))
}

pub async fn delete(app: &AppState, session: &Session, name: &str) -> ApiResult<()> {
    audited(app, session, Action::DeleteCredential(name), async {
        let parsed = CredentialName::parse(name)?;
        gate(app, session, Operation::DELETE_CREDENTIAL, async || {
            app.keyhold.get_credential(session, &parsed).await?;
            Ok((
                PendingOperation::DeleteCredential {
                    name: parsed.to_string(),
                },
                format!("Delete cloud credential '{parsed}'"),
            ))
        })
        .await?;
        Ok(app.keyhold.delete_credential(session, &parsed).await?)
    })
    .await
}
