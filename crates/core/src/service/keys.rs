//! Keys: listed under their groups, deleted only explicitly and under dual control.

use super::Keyhold;
use crate::error::{CoreError, CoreResult, StoreError};
use crate::identity::{Operation, Session};
use crate::key::Key;
use crate::names::GroupName;

/// How a key is named on the command line: keyhold's id or its KMS key id.
pub fn parse_key_ref(raw: &str) -> Result<uuid::Uuid, crate::error::InvalidInput> {
    uuid::Uuid::try_parse(raw).map_err(|_| {
        crate::error::InvalidInput::new(
            "key",
            "a key is named by its KMS key id (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx) as shown by `keyhold key list`",
        )
    })
}

impl Keyhold {
    pub async fn list_keys(
        &self,
        session: &Session,
        group: Option<&GroupName>,
    ) -> CoreResult<Vec<Key>> {
        session.authorize(Operation::READ, true)?;
        if let Some(name) = group {
            self.find_group(name).await?;
        }
        Ok(self.store.list_keys(group).await?)
    }

    pub async fn get_key(&self, session: &Session, name: &str) -> CoreResult<Key> {
        session.authorize(Operation::READ, true)?;
        self.find_key(name).await
    }

    /// Finds a key by its KMS key id (its name) or keyhold's own id.
    pub(super) async fn find_key(&self, name: &str) -> CoreResult<Key> {
        let id = parse_key_ref(name)?;
        let by_kms = match crate::aws::KmsKeyId::parse(name) {
            Ok(kms) => self.store.find_key_by_kms_id(&kms).await?,
            Err(_) => None,
        };
        match by_kms {
            Some(key) => Ok(key),
            None => self
                .store
                .get_key(id)
                .await?
                .ok_or_else(|| CoreError::not_found("key", name)),
        }
    }

    /// Deletes a key from keyhold and its material from the keystore. The
    /// group's active key cannot be deleted: rotate first.
    pub async fn delete_key(&self, session: &Session, name: &str) -> CoreResult<()> {
        self.authorize(session, Operation::DELETE_KEY).await?;
        let key = self.find_key(name).await?;
        let group = self.find_group(&key.group).await?;
        if key.kms_key_id.is_some() && group.aws.active_key_id == key.kms_key_id {
            return Err(CoreError::Conflict(format!(
                "key {} is the active key of key group '{}': rotate the group first, then delete the old key",
                key.display_name(),
                group.name
            )));
        }
        let record = self
            .record(
                session.users(),
                format!("Deleted HSM protected key {}", key.display_name()),
            )
            .with_details(serde_json::json!({
                "group": key.group.as_str(),
                "version": key.version,
                "check_digits": key.check_digits.as_str(),
            }));
        // The record goes first: if the keystore then fails, keyhold still
        // knows the key is gone from its list, and nothing claims it exists.
        match self.store.delete_key(key.id, &record).await {
            Ok(()) => {}
            Err(StoreError::NotFound) => return Err(CoreError::not_found("key", name)),
            Err(e) => return Err(e.into()),
        }
        self.keystore.delete_key(key.id, &key.keystore_handle)?;
        Ok(())
    }
}
