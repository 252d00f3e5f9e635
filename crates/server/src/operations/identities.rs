//! *Identity Management → Identities*: add (with a one-time password) and delete.

use keyhold_api as api;
use keyhold_core::action::Action;
use keyhold_core::identity::{Operation, Role, Session};
use keyhold_core::names::IdentityName;
use secrecy::ExposeSecret;

use super::approvals::{PendingOperation, gate};
use super::audited;
use crate::ApiResult;
use crate::app::AppState;
use crate::views;

pub async fn list(app: &AppState, session: &Session) -> ApiResult<Vec<api::IdentityView>> {
    let now = app.keyhold.now();
    let identities = app.keyhold.list_identities(session).await?;
    Ok(identities.iter().map(|i| views::identity(i, now)).collect())
}

/// Adds an identity; its one-time password is in the answer, once.
pub async fn add(
    app: &AppState,
    session: &Session,
    req: &api::CreateIdentityRequest,
) -> ApiResult<api::CreatedIdentity> {
    let action = Action::AddIdentity {
        name: &req.name,
        role: &req.role,
    };
    let created = audited(app, session, action, async {
        let name = IdentityName::parse(&req.name)?;
        let role = Role::parse(&req.role)?;
        gate(app, session, Operation::MANAGE_IDENTITIES, async || {
            Ok((
                PendingOperation::AddIdentity {
                    identity: req.clone(),
                },
                format!(
                    "Add identity '{name}' with role {} (its one-time password goes to the requester)",
                    role.as_str()
                ),
            ))
        })
        .await?;
        Ok(app.keyhold.create_identity(session, name, role).await?)
    })
    .await?;
    Ok(api::CreatedIdentity {
        name: created.name.to_string(),
        role: req.role.clone(),
        password: created.password.expose_secret().to_owned(),
    })
}

pub async fn delete(app: &AppState, session: &Session, name: &str) -> ApiResult<()> {
    audited(app, session, Action::DeleteIdentity(name), async {
        let parsed = IdentityName::parse(name)?;
        gate(app, session, Operation::MANAGE_IDENTITIES, async || {
            Ok((
                PendingOperation::DeleteIdentity {
                    name: parsed.to_string(),
                },
                format!("Delete identity '{parsed}'"),
            ))
        })
        .await?;
        Ok(app.keyhold.delete_identity(session, &parsed).await?)
    })
    .await
}
