//! *Key Management → Keys*: a key, and deleting one.

use keyhold_api as api;
use keyhold_core::action::Action;
use keyhold_core::identity::Session;

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
        Ok(app.keyhold.delete_key(session, name).await?)
    })
    .await
}
