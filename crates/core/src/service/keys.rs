//! Keys: listed under their groups, deleted only explicitly and under dual control.

use std::collections::BTreeMap;

use super::Keyhold;
use crate::action::Action;
use crate::cloud::aws::KmsKeyId;
use crate::error::{CoreError, CoreResult, StoreError};
use crate::identity::{Operation, Session};
use crate::job::Job;
use crate::key::{Key, KeyCursor, KeyListing, KeyPage, Material, MaterialState};
use crate::names::GroupName;

/// How a key is named on the command line: keyhold's id or its KMS key id.
pub fn parse_key_ref(raw: &str) -> Result<uuid::Uuid, crate::error::InvalidInput> {
    crate::id::parse_uuid(raw).ok_or_else(|| {
        crate::error::InvalidInput::new(
            "key",
            "a key is named by its KMS key id (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx) as shown by `keyhold key list`",
        )
    })
}

impl Keyhold {
    /// One page of the keys, each with whether the keystore holds its material.
    pub async fn list_keys(
        &self,
        session: &Session,
        page: &KeyPage,
    ) -> CoreResult<Vec<KeyListing>> {
        session.authorize(Operation::READ, true)?;
        if let Some(name) = &page.group {
            self.find_group(name).await?;
        }
        let keys = self.store.list_keys(page).await?;
        self.listed(keys).await
    }

    pub async fn get_key(&self, session: &Session, name: &str) -> CoreResult<KeyListing> {
        session.authorize(Operation::READ, true)?;
        let key = self.find_key(name).await?;
        let mut listed = self.listed(vec![key]).await?;
        listed
            .pop()
            .ok_or_else(|| CoreError::not_found("key", name))
    }

    /// The keys with their material and, for those that never reached KMS,
    /// the note that explains them. Such keys are few (a rotation under
    /// way, failed or cancelled), so their groups' latest rotations are
    /// read one index lookup each, not the jobs for every key.
    async fn listed(&self, keys: Vec<Key>) -> CoreResult<Vec<KeyListing>> {
        let mut rotations: BTreeMap<GroupName, Option<Job>> = BTreeMap::new();
        for key in keys.iter().filter(|k| k.kms_key_id.is_none()) {
            if !rotations.contains_key(&key.group) {
                let latest = self.latest_rotation(&key.group).await?;
                rotations.insert(key.group.clone(), latest);
            }
        }
        let mut listed = self.with_material(keys);
        for listing in &mut listed {
            let latest = rotations.get(&listing.key.group).and_then(Option::as_ref);
            listing.note = listing.key.state_note(latest);
        }
        Ok(listed)
    }

    /// Asks the keystore once for the whole list. A keystore that cannot be
    /// reached makes every key's material unknown, not the listing fail:
    /// officers still see their keys while the HSM is away.
    fn with_material(&self, keys: Vec<Key>) -> Vec<KeyListing> {
        let handles: Vec<(uuid::Uuid, &[u8])> = keys
            .iter()
            .map(|k| (k.id, k.keystore_handle.as_slice()))
            .collect();
        let missing = self.keystore.missing_material(&handles).ok();
        keys.into_iter()
            .map(|key| {
                let material = match &missing {
                    None => Material::Unknown,
                    Some(missing) if missing.contains(&key.id) => Material::Missing,
                    Some(_) => Material::Present,
                };
                KeyListing {
                    key,
                    material,
                    note: None,
                }
            })
            .collect()
    }

    /// Fails with a clear message when the keystore no longer holds the
    /// key's material (deleted on the token, token re-initialised).
    pub(super) fn require_material(&self, key: &Key) -> CoreResult<()> {
        let missing = self
            .keystore
            .missing_material(&[(key.id, key.keystore_handle.as_slice())])?;
        if missing.is_empty() {
            Ok(())
        } else {
            Err(CoreError::Conflict(format!(
                "the key material of key {} is missing from the keystore (deleted on the token, or the token was re-initialised): it cannot be imported into KMS. Restore the token from its backup, or rotate the group to make a new key",
                key.display_name(),
            )))
        }
    }

    /// The key whose material is current in this KMS key: the newest such
    /// version (a rotation in place leaves its predecessors non-current).
    pub(super) async fn current_key_in(&self, kms_key_id: &KmsKeyId) -> CoreResult<Option<Key>> {
        Ok(self
            .store
            .keys_in_kms_key(kms_key_id)
            .await?
            .into_iter()
            .rfind(|k| k.material_state == MaterialState::Current))
    }

    /// Finds a key by its name ([`Key::display_name`]: the KMS key id, that
    /// id and a version for a version rotated into it, or group and version
    /// for a key without a KMS key) or keyhold's own id.
    pub(super) async fn find_key(&self, name: &str) -> CoreResult<Key> {
        if let Some((kms, version)) = Key::parse_rotated_in_name(name) {
            return self
                .store
                .keys_in_kms_key(&kms)
                .await?
                .into_iter()
                .find(|k| k.version == version)
                .ok_or_else(|| CoreError::not_found("key", name));
        }
        if let Some((group, version)) = Key::parse_local_name(name) {
            return self
                .find_key_without_kms_key(group, version)
                .await?
                .ok_or_else(|| CoreError::not_found("key", name));
        }
        let id = parse_key_ref(name)?;
        let by_kms = match KmsKeyId::parse(name) {
            Ok(kms) => {
                let keys = self.store.keys_in_kms_key(&kms).await?;
                keys.into_iter().find(|k| !k.rotated_in)
            }
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

    /// Version `version` of the group, when it has no KMS key: once it has
    /// one, the KMS key id is its name.
    async fn find_key_without_kms_key(
        &self,
        group: GroupName,
        version: u32,
    ) -> CoreResult<Option<Key>> {
        let page = KeyPage {
            group: Some(group.clone()),
            after: Some(KeyCursor {
                group,
                version: version.saturating_sub(1),
            }),
            limit: 1,
        };
        Ok(self
            .store
            .list_keys(&page)
            .await?
            .into_iter()
            .find(|k| k.version == version && k.kms_key_id.is_none()))
    }

    /// Deletes a key from keyhold and its material from the keystore. The
    /// group's active key cannot be deleted: rotate first.
    pub async fn delete_key(&self, session: &Session, name: &str) -> CoreResult<()> {
        self.authorize(session, Operation::DELETE_KEY).await?;
        let key = self.find_key(name).await?;
        let group = self.find_group(&key.group).await?;
        // Versions rotated out of the active KMS key may go (KMS keeps
        // decrypting with them, from its own copy); the current one may not.
        if key.kms_key_id.is_some()
            && group.aws.active_key_id == key.kms_key_id
            && key.material_state != MaterialState::NonCurrent
        {
            return Err(CoreError::Conflict(format!(
                "key {} is the active key of key group '{}': rotate the group first, then delete the old key",
                key.display_name(),
                group.name
            )));
        }
        let record = self
            .record_for(session, Action::DeleteKey(&key.display_name()).succeeded())
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
