//! Backups and their custodians; archiving the audit log.
//!
//! The server makes the file (it streams the store's snapshot and the
//! keystore's wrapped material into it); these are the decisions around
//! it: who may start one, with which custodians, when the schedule wants
//! one, and the records and entries that say what happened.

use crate::action::Action;
use crate::backup::{AuditArchive, BackupRecord, BackupStatus, BackupTrigger, CustodianSet};
use crate::clock::Timestamp;
use crate::error::{CoreError, CoreResult, InvalidInput, StoreError};
use crate::identity::{Operation, Session};
use crate::settings::Settings;

use super::Keyhold;
use crate::audit::SYSTEM_USER;

/// Attempts at a compare-and-swap of the settings before giving up.
const MAX_CHANGE_ROUNDS: usize = 8;

/// A scheduled backup that failed is tried again after this long, not at
/// every pass.
pub const BACKUP_RETRY: chrono::Duration = chrono::Duration::hours(1);

impl Keyhold {
    /// The custodians set now, if any.
    pub async fn custodians(&self, session: &Session) -> CoreResult<Option<CustodianSet>> {
        self.authorize(session, Operation::READ).await?;
        Ok(self.store.get_settings().await?.backup_custodians)
    }

    /// Sets who holds the shares of every backup made from now on. Backups
    /// made before keep the custodians they were made for.
    pub async fn set_custodians(
        &self,
        session: &Session,
        next: CustodianSet,
    ) -> CoreResult<Settings> {
        self.authorize(session, Operation::SET_CUSTODIANS).await?;
        for _ in 0..MAX_CHANGE_ROUNDS {
            let current = self.store.get_settings().await?;
            if current.backup_custodians.as_ref() == Some(&next) {
                return Err(CoreError::Conflict(
                    "these custodians are set already: nothing to change".into(),
                ));
            }
            let mut settings = current.clone();
            settings.backup_custodians = Some(next.clone());
            let record = self
                .record_for(session, Action::SetCustodians.succeeded())
                .with_details(serde_json::json!({
                    "before": current.backup_custodians.as_ref().map(describe),
                    "after": describe(&next),
                }));
            if self
                .store
                .replace_settings(&current, &settings, &record)
                .await?
            {
                return Ok(settings);
            }
        }
        Err(CoreError::Conflict(
            "the configuration kept changing while the custodians were set: try again".into(),
        ))
    }

    /// Checks that `session` may start a backup now, and returns the
    /// custodians to split its key among (refused while none are set).
    pub async fn authorize_backup(&self, session: &Session) -> CoreResult<CustodianSet> {
        self.authorize(session, Operation::CREATE_BACKUP).await?;
        self.backup_custodians().await
    }

    /// The custodians a backup would be made for now, refused while none
    /// are set. No authorization of its own: for a caller that checked
    /// the session's role already (an approval request being made).
    pub async fn backup_custodians(&self) -> CoreResult<CustodianSet> {
        self.store
            .get_settings()
            .await?
            .backup_custodians
            .ok_or_else(|| {
                InvalidInput::new(
                    "custodians",
                    "no backup custodians are set: a backup's key is split among them, so set them first (PUT /api/v1/backups/custodians, `keyhold backup custodians set`, or Backups → Custodians)",
                )
                .into()
            })
    }

    /// Records a backup that starts, for `session` (`None`: the schedule).
    /// The server made `record` (file name, shares) for `custodians`; a
    /// change of custodians in between is refused (the shares would be
    /// for the old ones). One backup runs at a time: a second is refused
    /// with a conflict.
    pub async fn begin_backup(
        &self,
        session: Option<&Session>,
        record: &BackupRecord,
        custodians: &CustodianSet,
    ) -> CoreResult<()> {
        if let Some(session) = session {
            self.authorize(session, Operation::CREATE_BACKUP).await?;
        }
        if &self.backup_custodians().await? != custodians {
            return Err(CoreError::Conflict(
                "the backup custodians changed while the backup was being prepared: start it again"
                    .into(),
            ));
        }
        let id = record.id.to_string();
        let summary = Action::CreateBackup(&id).succeeded();
        let audit = match session {
            Some(session) => self.record_for(session, summary),
            None => self.record(SYSTEM_USER, summary),
        }
        .with_details(serde_json::json!({
            "backup": id,
            "trigger": record.trigger.as_str(),
            "file": record.file,
            "threshold": record.threshold,
            "custodians": record.custodians,
        }));
        match self.store.insert_backup(record, &audit).await {
            Ok(()) => Ok(()),
            Err(StoreError::Duplicate) => Err(CoreError::Conflict(
                "a backup is being made already: wait for it to finish (GET /api/v1/backups)"
                    .into(),
            )),
            Err(other) => Err(other.into()),
        }
    }

    /// Writes how a backup ended, with its entry. `false` when it was not
    /// running any more (finished already, or failed at a restart).
    pub async fn finish_backup(&self, record: &BackupRecord) -> CoreResult<bool> {
        let summary = match record.status {
            BackupStatus::Succeeded => format!(
                "Backup {} succeeded: {} key(s), {} bytes",
                record.id,
                record.keys.unwrap_or(0),
                record.size.unwrap_or(0)
            ),
            BackupStatus::Failed | BackupStatus::Running => format!("Backup {} failed", record.id),
        };
        let audit = self
            .record(record.initiated_by.clone(), summary)
            .with_details(serde_json::json!({
                "backup": record.id.to_string(),
                "file": record.file,
                "sha256": record.sha256,
                "keys": record.keys,
                "size": record.size,
                "error": record.error,
            }));
        Ok(self.store.finish_backup(record, &audit).await?)
    }

    /// Backups newest first (`limit` 0: 100).
    pub async fn list_backups(
        &self,
        session: &Session,
        limit: u32,
    ) -> CoreResult<Vec<BackupRecord>> {
        self.authorize(session, Operation::READ).await?;
        Ok(self.store.list_backups(limit).await?)
    }

    pub async fn get_backup(&self, session: &Session, id: uuid::Uuid) -> CoreResult<BackupRecord> {
        self.authorize(session, Operation::READ).await?;
        self.find_backup(id).await
    }

    async fn find_backup(&self, id: uuid::Uuid) -> CoreResult<BackupRecord> {
        self.store
            .get_backup(id)
            .await?
            .ok_or_else(|| CoreError::NotFound {
                what: "backup",
                name: id.to_string(),
            })
    }

    /// A backup whose file or shares `session` takes away, with the entry
    /// that says so (`shares`: the shares, else the file).
    pub async fn hand_out_backup(
        &self,
        session: &Session,
        id: uuid::Uuid,
        shares: bool,
    ) -> CoreResult<BackupRecord> {
        self.authorize(session, Operation::DOWNLOAD_BACKUPS).await?;
        let record = self.find_backup(id).await?;
        let id = record.id.to_string();
        let action = if shares {
            Action::DownloadShares(&id)
        } else {
            Action::DownloadBackup(&id)
        };
        let audit = self
            .record_for(session, action.succeeded())
            .with_details(serde_json::json!({
                "backup": id,
                "file": record.file,
                "custodians": record.custodians,
            }));
        self.store.append_audit(&audit).await?;
        Ok(record)
    }

    /// Whether the schedule wants a backup at `now`: scheduled backups are
    /// on and custodians set, none runs, the newest succeeded backup is at
    /// least an interval old, and no backup failed within the last hour.
    pub async fn backup_due(&self, now: Timestamp) -> CoreResult<bool> {
        let settings = self.store.get_settings().await?;
        let (Some(interval), Some(_)) = (settings.backup_interval(), &settings.backup_custodians)
        else {
            return Ok(false);
        };
        let recent = self.store.list_backups(100).await?;
        if recent.iter().any(|b| b.status == BackupStatus::Running) {
            return Ok(false);
        }
        let last_success = recent
            .iter()
            .find(|b| b.status == BackupStatus::Succeeded)
            .map(|b| b.started_at);
        let last_failure = recent
            .iter()
            .find(|b| b.status == BackupStatus::Failed)
            .map(|b| b.started_at);
        if last_success.is_some_and(|at| now < at + interval) {
            return Ok(false);
        }
        Ok(last_failure.is_none_or(|at| now >= at + BACKUP_RETRY))
    }

    /// The scheduled backups beyond the newest `backup_keep` succeeded ones
    /// (to remove, file then record); manual backups are never removed.
    pub async fn backups_beyond_retention(&self) -> CoreResult<Vec<BackupRecord>> {
        let keep = self.store.get_settings().await?.backup_keep;
        if keep == 0 {
            return Ok(Vec::new());
        }
        let scheduled: Vec<BackupRecord> = self
            .store
            .list_backups(1000)
            .await?
            .into_iter()
            .filter(|b| b.trigger == BackupTrigger::Scheduled && b.status != BackupStatus::Running)
            .collect();
        // Newest first: counted by successes, so failures (nothing to
        // restore) never push a good backup out; older failures go with
        // the backups beyond.
        let mut succeeded = 0u32;
        Ok(scheduled
            .into_iter()
            .filter(|b| {
                let beyond = succeeded >= keep;
                if b.status == BackupStatus::Succeeded {
                    succeeded += 1;
                }
                beyond
            })
            .collect())
    }

    /// Forgets a backup whose file retention removed.
    pub async fn forget_backup(&self, record: &BackupRecord) -> CoreResult<()> {
        let audit = self
            .record(
                SYSTEM_USER,
                format!("Removed backup {} (retention)", record.id),
            )
            .with_details(
                serde_json::json!({ "backup": record.id.to_string(), "file": record.file }),
            );
        Ok(self.store.delete_backup(record.id, &audit).await?)
    }

    /// Archives already written, oldest first.
    pub async fn audit_archives(&self, session: &Session) -> CoreResult<Vec<AuditArchive>> {
        session.authorize(Operation::READ, true)?;
        Ok(self.store.list_audit_archives().await?)
    }

    /// Records an archive file written for entries `first..=last` and marks
    /// them archived, by `session` or (`None`) the daily pass.
    pub async fn record_audit_archive(
        &self,
        session: Option<&Session>,
        archive: &AuditArchive,
    ) -> CoreResult<()> {
        if let Some(session) = session {
            self.authorize(session, Operation::ARCHIVE_AUDIT).await?;
        }
        let last = archive.last_seq.to_string();
        let summary = Action::ArchiveAudit(&last).succeeded();
        let audit = match session {
            Some(session) => self.record_for(session, summary),
            None => self.record(SYSTEM_USER, summary),
        }
        .with_details(serde_json::json!({
            "file": archive.file,
            "first_seq": archive.first_seq,
            "last_seq": archive.last_seq,
            "sha256": archive.sha256,
        }));
        match self.store.insert_audit_archive(archive, &audit).await {
            Ok(()) => Ok(()),
            Err(StoreError::Duplicate) => Err(CoreError::Conflict(format!(
                "entries {}..={} do not follow the last archive: another node archived meanwhile; archive again",
                archive.first_seq, archive.last_seq
            ))),
            Err(other) => Err(other.into()),
        }
    }
}

/// A custodian set as audit details: names, threshold and key fingerprints
/// (public keys are no secret, but the names are what people read).
fn describe(set: &CustodianSet) -> serde_json::Value {
    serde_json::json!({
        "threshold": set.threshold,
        "custodians": set.custodians.iter().map(|c| serde_json::json!({
            "name": c.name,
            "public_key": c.public_key,
            "passphrase": c.kdf.is_some(),
        })).collect::<Vec<_>>(),
    })
}
