//! *Key Management → Keys*: a key, and deleting one.

use keyhold_api as api;
use keyhold_core::action::{Action, printable};
use keyhold_core::drift::{DriftFilter, Finding};
use keyhold_core::identity::{Operation, Session};
use keyhold_core::key::KeyPage;
use keyhold_core::names::GroupName;

use super::approvals::{PendingOperation, gate};
use super::audited;
use crate::ApiResult;
use crate::app::AppState;
use crate::views;

/// The key named by its KMS key id or keyhold's id, as the API shows it.
pub async fn show(app: &AppState, session: &Session, name: &str) -> ApiResult<api::KeyView> {
    let key = app.keyhold.get_key(session, name).await?;
    let open = open_drift(app, Some(&key.key.group)).await?;
    Ok(views::key_with_drift(&key, app.keyhold.now(), &open))
}

/// One page of keys, each with its drift badge (the open findings are read
/// once for the page).
pub async fn list(
    app: &AppState,
    session: &Session,
    page: &KeyPage,
) -> ApiResult<Vec<api::KeyView>> {
    let keys = app.keyhold.list_keys(session, page).await?;
    let open = open_drift(app, page.group.as_ref()).await?;
    let now = app.keyhold.now();
    Ok(keys
        .iter()
        .map(|k| views::key_with_drift(k, now, &open))
        .collect())
}

/// The open drift findings, of one group or all (as many as one listing
/// holds: a store this far off is read on the Drift screen, not by badges).
/// The caller has read the keys, so may read these.
async fn open_drift(app: &AppState, group: Option<&GroupName>) -> ApiResult<Vec<Finding>> {
    let filter = DriftFilter {
        group: group.cloned(),
        limit: crate::http::MAX_PAGE,
        ..DriftFilter::default()
    };
    Ok(app.keyhold.store().list_drift(&filter).await?)
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
