//! *Key Management → Keys*: a key, and deleting one.

use keyhold_api as api;
use keyhold_core::action::{Action, printable};
use keyhold_core::identity::{Operation, Session};

use super::approvals::{PendingOperation, gate};
use super::audited;
use crate::ApiResult;
use crate::app::AppState;
use crate::views;

/// The key named by its KMS key id or keyhold's id, as the API shows it.
pub async fn show(app: &AppState, session: &Session, name: &str) -> ApiResult<api::KeyView> {
    let key = app.keyhold.get_key(session, name).await?;
    Ok(views::key(&key, app.keyhold.now()))
}

pub async fn delete(app: &AppState, session: &Session, name: &str) -> ApiResult<()> {
    audited(app, session, Action::DeleteKey(name), async {
        gate(app, session, Operation::DELETE_KEY, async || {
            app.keyhold.get_key(session, name).await?;
            Ok((
                PendingOperation::DeleteKey {
                    key: name.to_owned(),
                },
                format!("Delete key {}", printable(name)),
            ))
        })
        .await?;
        Ok(app.keyhold.delete_key(session, name).await?)
    })
    .await
}
