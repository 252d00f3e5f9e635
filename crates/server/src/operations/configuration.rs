//! *Administration → Configuration*: the settings with the cluster as this
//! node sees it, and changing them.

use keyhold_api as api;
use keyhold_core::CoreError;
use keyhold_core::action::Action;
use keyhold_core::cluster::RotatorChoice;
use keyhold_core::identity::{Operation, Session};
use keyhold_core::settings::SettingsChange;

use super::approvals::{PendingOperation, gate};
use super::audited;
use crate::ApiResult;
use crate::app::AppState;
use crate::views;

/// Who rotates, as this node sees it, with every node that has joined.
async fn cluster(app: &AppState) -> ApiResult<api::ClusterView> {
    let nodes = app
        .keyhold
        .store()
        .list_nodes()
        .await
        .map_err(CoreError::from)?;
    Ok(views::cluster(
        &app.rotator.status(),
        &nodes,
        app.keyhold.now(),
    ))
}

/// The newest backup (every node sees the records).
async fn last_backup(app: &AppState) -> ApiResult<Option<keyhold_core::backup::BackupRecord>> {
    Ok(app
        .keyhold
        .store()
        .list_backups(1)
        .await
        .map_err(CoreError::from)?
        .into_iter()
        .next())
}

pub async fn show(app: &AppState, session: &Session) -> ApiResult<api::SettingsView> {
    let settings = app.keyhold.settings(session).await?;
    Ok(views::settings(
        &settings,
        cluster(app).await?,
        last_backup(app).await?.as_ref(),
    ))
}

/// Changes the settings the request names. A designated rotator that is not
/// a node name at all is refused before the change is attempted, and so is
/// not audited as a failed change.
pub async fn change(
    app: &AppState,
    session: &Session,
    req: &api::SettingsChangeRequest,
) -> ApiResult<api::SettingsView> {
    let change = SettingsChange {
        dual_control: req.dual_control,
        lockout_threshold: req.lockout_threshold,
        lockout_minutes: req.lockout_minutes,
        session_idle_minutes: req.session_idle_minutes,
        session_max_hours: req.session_max_hours,
        designated_rotator: req
            .designated_rotator
            .as_deref()
            .map(RotatorChoice::parse)
            .transpose()
            .map_err(CoreError::from)?,
        on_demand_rotation_limit: req.on_demand_rotation_limit,
        drift_check_hours: req.drift_check_hours,
        drift_expiry_days: req.drift_expiry_days,
        backup_every_hours: req.backup_every_hours,
        backup_keep: req.backup_keep,
        audit_archive_after_days: req.audit_archive_after_days,
    };
    let settings = audited(app, session, Action::ChangeConfiguration, async {
        gate(app, session, Operation::CHANGE_CONFIGURATION, async || {
            let named = serde_json::to_value(req)
                .ok()
                .and_then(|v| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()))
                .unwrap_or_default();
            Ok((
                PendingOperation::ChangeConfiguration {
                    change: req.clone(),
                },
                format!("Change the configuration: {}", named.join(", ")),
            ))
        })
        .await?;
        Ok(app.keyhold.change_settings(session, change).await?)
    })
    .await?;
    Ok(views::settings(
        &settings,
        cluster(app).await?,
        last_backup(app).await?.as_ref(),
    ))
}
