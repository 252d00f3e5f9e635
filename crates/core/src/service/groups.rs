//! Key groups: add (dual control), change, delete (dual control).

use super::Keyhold;
use crate::action::Action;
use crate::cloud::aws::KeyPolicy;
use crate::error::{CoreError, CoreResult, StoreError};
use crate::group::{GroupChange, KeyGroup, NewGroup};
use crate::identity::{Operation, Session};
use crate::key::KeyPage;
use crate::names::GroupName;

/// How often a change is applied again to a group that changed meanwhile:
/// more than the parallel writers a deployment sees on one group.
const MAX_UPDATE_ROUNDS: usize = 64;

impl Keyhold {
    pub async fn create_group(&self, session: &Session, spec: NewGroup) -> CoreResult<KeyGroup> {
        self.authorize(session, Operation::ADD_GROUP).await?;
        self.require_credential(&spec.credential).await?;
        let group = KeyGroup::create(spec, self.now());
        self.check_alias_free(&group).await?;
        let record = self
            .record_for(session, Action::AddGroup(group.name.as_str()).succeeded())
            .with_details(serde_json::json!({
                "credential": group.credential.as_str(),
                "alias": group.aws.alias.as_str(),
                "region": group.aws.region.as_str(),
                "rotate_every": group.rotate_every.map(|i| i.to_string()),
                "valid_for": group.valid_for.map(|i| i.to_string()),
                "active_key_id": group.aws.active_key_id.as_ref().map(|k| k.to_string()),
                "description": group.aws.description.as_str(),
                "policy": policy_value(group.aws.policy.as_ref(), true),
                "disable_after_rotate": group.aws.disable_after_rotate,
                "rotation_strategy": group.aws.rotation.as_str(),
                "at_rotation_limit": group.aws.at_rotation_limit.as_str(),
                "self_heal": group.aws.self_heal,
            }));
        match self.store.insert_group(&group, &record).await {
            Ok(()) => Ok(group),
            // The name or the (region, alias) index: a parallel creation got
            // there first. Say which.
            Err(StoreError::Duplicate) => {
                self.check_alias_free(&group).await?;
                Err(CoreError::Conflict(format!(
                    "a key group named '{}' already exists: choose another name",
                    group.name
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn list_groups(&self, session: &Session) -> CoreResult<Vec<KeyGroup>> {
        session.authorize(Operation::READ, true)?;
        Ok(self.store.list_groups().await?)
    }

    pub async fn get_group(&self, session: &Session, name: &GroupName) -> CoreResult<KeyGroup> {
        session.authorize(Operation::READ, true)?;
        self.find_group(name).await
    }

    /// Changes a group. Anyone who may manage keys changes its harmless
    /// fields; a change to a field that decides where material goes or who
    /// may use the key in AWS ([`crate::group::CUSTODY_FIELDS`]) needs dual
    /// control, and the refusal names the fields. The audit entry holds
    /// every changed field's value before and after.
    pub async fn update_group(
        &self,
        session: &Session,
        name: &GroupName,
        change: GroupChange,
    ) -> CoreResult<KeyGroup> {
        self.authorize_group_change(session, name, &change).await?;
        if change.is_empty() {
            return Err(crate::error::InvalidInput::new(
                "body",
                "nothing to change: give at least one field",
            )
            .into());
        }
        let custody = change.custody_fields();
        if let Some(credential) = &change.credential {
            self.require_credential(credential).await?;
        }
        // The change applies to the group as it is when written: a parallel
        // update (or a rotation's commit) in between makes the write refuse,
        // and the change is applied again to what is there now, so neither
        // is lost. Each round at least one writer succeeds.
        for _ in 0..MAX_UPDATE_ROUNDS {
            let before = self.find_group(name).await?;
            let mut group = before.clone();
            change.clone().apply(&mut group, self.now());
            self.check_alias_free(&group).await?;
            let changed = changed_fields(&before, &group);
            // The policy text is given for the new policy; the old one's is in
            // the entry that set it.
            let values =
                |of: &KeyGroup, with_text: bool| -> serde_json::Map<String, serde_json::Value> {
                    changed
                        .iter()
                        .map(|field| ((*field).to_owned(), field_value(of, field, with_text)))
                        .collect()
                };
            let record = self
                .record_for(session, Action::UpdateGroup(name.as_str()).succeeded())
                .with_details(serde_json::json!({
                    "changed": changed,
                    "dual_control": !custody.is_empty(),
                    "before": values(&before, false),
                    "after": values(&group, true),
                }));
            match self.store.replace_group(&before, &group, &record).await {
                Ok(true) => return Ok(group),
                Ok(false) => {}
                Err(StoreError::NotFound) => return Err(CoreError::not_found("key group", name)),
                Err(StoreError::Duplicate) => {
                    self.check_alias_free(&group).await?;
                    return Err(CoreError::Conflict(format!(
                        "alias {} in {} was just taken by another key group: choose another alias",
                        group.aws.alias, group.aws.region
                    )));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(CoreError::Conflict(format!(
            "key group '{name}' kept changing while this change was applied: try again"
        )))
    }

    /// Whether the session may make `change` to group `name`: one identity
    /// that may manage keys for the harmless fields, two for any custody
    /// field the change names (the refusal names them). Checked before the
    /// group is read.
    pub async fn authorize_group_change(
        &self,
        session: &Session,
        name: &GroupName,
        change: &GroupChange,
    ) -> CoreResult<()> {
        self.authorize(session, Operation::UPDATE_GROUP).await?;
        let custody = change.custody_fields();
        if custody.is_empty() {
            return Ok(());
        }
        self.authorize(session, Operation::CHANGE_GROUP_CUSTODY)
            .await
            .map_err(|e| match e {
                CoreError::DualControlRequired { .. } => CoreError::DualControlRequired {
                    operation: format!("changing the {} of key group '{name}'", custody.join(", ")),
                },
                other => other,
            })
    }

    /// Deletes a group that has no keys left. Keys are deleted one by one and
    /// explicitly, because AWS may still need their material.
    pub async fn delete_group(&self, session: &Session, name: &GroupName) -> CoreResult<()> {
        self.authorize(session, Operation::DELETE_GROUP).await?;
        self.find_group(name).await?;
        let record = self.record_for(session, Action::DeleteGroup(name.as_str()).succeeded());
        match self.store.delete_group(name, &record).await {
            Ok(()) => Ok(()),
            Err(StoreError::InUse) => {
                let keys = self
                    .store
                    .list_keys(&KeyPage::whole_group(name))
                    .await?
                    .len();
                Err(CoreError::Conflict(format!(
                    "key group '{name}' still has {keys} key(s) whose material AWS may need: delete them first with `keyhold key delete`, then the group"
                )))
            }
            Err(StoreError::NotFound) => Err(CoreError::not_found("key group", name)),
            Err(e) => Err(e.into()),
        }
    }

    pub(super) async fn find_group(&self, name: &GroupName) -> CoreResult<KeyGroup> {
        self.store
            .get_group(name)
            .await?
            .ok_or_else(|| CoreError::not_found("key group", name))
    }

    async fn require_credential(&self, name: &crate::names::CredentialName) -> CoreResult<()> {
        match self.store.get_credential(name).await? {
            Some(_) => Ok(()),
            None => Err(crate::error::InvalidInput::new(
                "credential",
                format!("cloud credential '{name}' does not exist: import it first with `keyhold credential import`"),
            )
            .into()),
        }
    }

    /// Two groups moving one alias in one region would take it from each other
    /// on every rotation.
    async fn check_alias_free(&self, group: &KeyGroup) -> CoreResult<()> {
        let clash = self.store.list_groups().await?.into_iter().find(|g| {
            g.name != group.name
                && g.aws.alias == group.aws.alias
                && g.aws.region == group.aws.region
        });
        match clash {
            Some(other) => Err(CoreError::Conflict(format!(
                "alias {} in {} already belongs to key group '{}': choose another alias",
                group.aws.alias, group.aws.region, other.name
            ))),
            None => Ok(()),
        }
    }
}

fn changed_fields(before: &KeyGroup, after: &KeyGroup) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let mut check = |name, differs: bool| {
        if differs {
            changed.push(name);
        }
    };
    check("credential", before.credential != after.credential);
    check("rotate_every", before.rotate_every != after.rotate_every);
    check("valid_for", before.valid_for != after.valid_for);
    check("info", before.info != after.info);
    check("alias", before.aws.alias != after.aws.alias);
    check(
        "description",
        before.aws.description != after.aws.description,
    );
    check("region", before.aws.region != after.aws.region);
    check(
        "active_key_id",
        before.aws.active_key_id != after.aws.active_key_id,
    );
    check("policy", before.aws.policy != after.aws.policy);
    check(
        "disable_after_rotate",
        before.aws.disable_after_rotate != after.aws.disable_after_rotate,
    );
    check(
        "rotation_strategy",
        before.aws.rotation != after.aws.rotation,
    );
    check(
        "at_rotation_limit",
        before.aws.at_rotation_limit != after.aws.at_rotation_limit,
    );
    check("self_heal", before.aws.self_heal != after.aws.self_heal);
    changed
}

/// A field's value as the audit entry shows it. A policy is named by its
/// SHA-256, and the new one (`with_text`) is given whole, so an auditor sees
/// exactly what keyhold pushes to AWS.
fn field_value(group: &KeyGroup, field: &str, with_text: bool) -> serde_json::Value {
    use serde_json::json;
    let interval = |i: Option<crate::interval::Interval>| i.map(|i| i.to_string());
    match field {
        "credential" => json!(group.credential.as_str()),
        "rotate_every" => json!(interval(group.rotate_every)),
        "valid_for" => json!(interval(group.valid_for)),
        "info" => json!({ "owner": group.info.owner, "notes": group.info.notes }),
        "alias" => json!(group.aws.alias.as_str()),
        "description" => json!(group.aws.description.as_str()),
        "region" => json!(group.aws.region.as_str()),
        "active_key_id" => json!(group.aws.active_key_id.as_ref().map(|k| k.to_string())),
        "policy" => policy_value(group.aws.policy.as_ref(), with_text),
        "disable_after_rotate" => json!(group.aws.disable_after_rotate),
        "rotation_strategy" => json!(group.aws.rotation.as_str()),
        "at_rotation_limit" => json!(group.aws.at_rotation_limit.as_str()),
        "self_heal" => json!(group.aws.self_heal),
        _ => serde_json::Value::Null,
    }
}

fn policy_value(policy: Option<&KeyPolicy>, with_text: bool) -> serde_json::Value {
    match policy {
        None => serde_json::Value::Null,
        Some(p) if with_text => serde_json::json!({ "sha256": p.sha256_hex(), "text": p.as_str() }),
        Some(p) => serde_json::json!({ "sha256": p.sha256_hex() }),
    }
}
