//! *Key Management → Keys → Key Group*: add, change, delete.

use std::collections::HashMap;

use keyhold_api as api;
use keyhold_core::action::Action;
use keyhold_core::drift::DriftCheck;
use keyhold_core::group::KeyGroup;
use keyhold_core::identity::{Operation, Session};
use keyhold_core::names::GroupName;

use super::approvals::{PendingOperation, gate};
use super::{audited, requests};
use crate::ApiResult;
use crate::app::AppState;
use crate::views;

/// The group with where its rotation and its drift stand (the caller has
/// read it already, so may read these). A listing calls [`list`], which
/// reads the drift checks once for every group.
pub async fn view(app: &AppState, group: &KeyGroup) -> ApiResult<api::GroupView> {
    let checks = drift_checks(app).await?;
    view_with(app, group, &checks).await
}

/// The groups as the API lists them (the caller has read them already).
pub async fn views_of(app: &AppState, groups: &[KeyGroup]) -> ApiResult<Vec<api::GroupView>> {
    let checks = drift_checks(app).await?;
    let mut views = Vec::with_capacity(groups.len());
    for group in groups {
        views.push(view_with(app, group, &checks).await?);
    }
    Ok(views)
}

async fn view_with(
    app: &AppState,
    group: &KeyGroup,
    checks: &HashMap<GroupName, DriftCheck>,
) -> ApiResult<api::GroupView> {
    let rotation = app.keyhold.rotation_state(group).await?;
    Ok(views::group(group, &rotation, checks.get(&group.name)))
}

/// Every group's last drift check: one read, a row per group checked.
async fn drift_checks(app: &AppState) -> ApiResult<HashMap<GroupName, DriftCheck>> {
    Ok(app
        .keyhold
        .store()
        .drift_checks()
        .await?
        .into_iter()
        .map(|c| (c.group.clone(), c))
        .collect())
}

/// Every group, as the API lists them.
pub async fn list(app: &AppState, session: &Session) -> ApiResult<Vec<api::GroupView>> {
    let list = app.keyhold.list_groups(session).await?;
    views_of(app, &list).await
}

/// The group named in a request, as the API shows it.
pub async fn show(app: &AppState, session: &Session, name: &str) -> ApiResult<api::GroupView> {
    let name = GroupName::parse(name)?;
    let group = app.keyhold.get_group(session, &name).await?;
    view(app, &group).await
}

pub async fn add(
    app: &AppState,
    session: &Session,
    req: &api::CreateGroupRequest,
) -> ApiResult<api::GroupView> {
    let group = audited(app, session, Action::AddGroup(&req.name), async {
        let spec = requests::new_group(req)?;
        gate(app, session, Operation::ADD_GROUP, async || {
            Ok((
                PendingOperation::AddGroup { group: req.clone() },
                format!(
                    "Add key group '{}' (alias {} in {}, credential {})",
                    spec.name, spec.aws.alias, spec.aws.region, spec.credential
                ),
            ))
        })
        .await?;
        Ok(app.keyhold.create_group(session, spec).await?)
    })
    .await?;
    view(app, &group).await
}

/// Changes the fields the request names; the core applies them to the group
/// as it is when written. The caller's authority is checked before any read.
pub async fn update(
    app: &AppState,
    session: &Session,
    name: &str,
    req: &api::UpdateGroupRequest,
) -> ApiResult<api::GroupView> {
    let group = audited(app, session, Action::UpdateGroup(name), async {
        app.keyhold
            .authorize(session, Operation::UPDATE_GROUP)
            .await?;
        let parsed = GroupName::parse(name)?;
        let change = requests::group_change(req)?;
        // Which fields the change names decides whether it needs dual
        // control; that is settled before the group is read.
        app.keyhold
            .authorize_group_change(session, &parsed, &change)
            .await?;
        // A missing group is reported before the change is applied.
        app.keyhold.get_group(session, &parsed).await?;
        let custody = change.custody_fields();
        if !custody.is_empty() {
            gate(app, session, Operation::CHANGE_GROUP_CUSTODY, async || {
                Ok((
                    PendingOperation::UpdateGroup {
                        group: parsed.to_string(),
                        change: req.clone(),
                    },
                    format!("Change key group '{parsed}': {}", custody.join(", ")),
                ))
            })
            .await?;
        }
        Ok(app.keyhold.update_group(session, &parsed, change).await?)
    })
    .await?;
    view(app, &group).await
}

pub async fn delete(app: &AppState, session: &Session, name: &str) -> ApiResult<()> {
    audited(app, session, Action::DeleteGroup(name), async {
        let parsed = GroupName::parse(name)?;
        gate(app, session, Operation::DELETE_GROUP, async || {
            // A request to delete nothing is refused now, not after its
            // approvals.
            app.keyhold.get_group(session, &parsed).await?;
            Ok((
                PendingOperation::DeleteGroup {
                    group: parsed.to_string(),
                },
                format!("Delete key group '{parsed}'"),
            ))
        })
        .await?;
        Ok(app.keyhold.delete_group(session, &parsed).await?)
    })
    .await
}
