//! *Backups*: making one (dual control, or the `create_backup` approval
//! class), the custodians who together open them (dual control, or
//! `set_custodians`), reading their records, files and shares; and the
//! audit log's archives.

use keyhold_api as api;
use keyhold_core::InvalidInput;
use keyhold_core::action::{Action, printable};
use keyhold_core::backup::{Custodian, CustodianName, CustodianSet, PassphraseKdf};
use keyhold_core::identity::{Operation, Session};
use secrecy::SecretString;

use super::approvals::{PendingOperation, gate};
use super::audited;
use crate::ApiResult;
use crate::app::AppState;
use crate::http::page_limit;
use crate::views;

fn backup_id(raw: &str) -> Result<uuid::Uuid, InvalidInput> {
    keyhold_core::id::parse_uuid(raw).ok_or_else(|| {
        InvalidInput::new(
            "id",
            format!(
                "'{}' is not a backup id: use the id a backup listing shows (a UUID), see GET /api/v1/backups or `keyhold backup list`",
                printable(raw)
            ),
        )
    })
}

pub async fn list(
    app: &AppState,
    session: &Session,
    limit: Option<u32>,
) -> ApiResult<Vec<api::BackupView>> {
    let limit = page_limit(limit)?;
    let backups = app.keyhold.list_backups(session, limit).await?;
    Ok(backups.iter().map(views::backup).collect())
}

pub async fn show(app: &AppState, session: &Session, id: &str) -> ApiResult<api::BackupView> {
    let record = app.keyhold.get_backup(session, backup_id(id)?).await?;
    Ok(views::backup(&record))
}

/// The shares of a backup, each encrypted for its custodian alone; the
/// handing out is audited.
pub async fn shares(
    app: &AppState,
    session: &Session,
    id: &str,
) -> ApiResult<api::BackupSharesView> {
    let record = audited(app, session, Action::DownloadShares(id), async {
        Ok(app
            .keyhold
            .hand_out_backup(session, backup_id(id)?, true)
            .await?)
    })
    .await?;
    Ok(views::backup_shares(&record))
}

/// The path of a finished backup's file, for its download (audited).
pub async fn file(
    app: &AppState,
    session: &Session,
    id: &str,
) -> ApiResult<(String, std::path::PathBuf)> {
    let record = audited(app, session, Action::DownloadBackup(id), async {
        // The role first: a refusal never tells which backups exist.
        app.keyhold
            .authorize(session, Operation::DOWNLOAD_BACKUPS)
            .await?;
        let record = app.keyhold.get_backup(session, backup_id(id)?).await?;
        if record.status != keyhold_core::backup::BackupStatus::Succeeded {
            return Err(keyhold_core::error::CoreError::Conflict(format!(
                "backup {} is {}: only a succeeded backup has a file to download",
                record.id,
                record.status.as_str()
            ))
            .into());
        }
        Ok(app
            .keyhold
            .hand_out_backup(session, record.id, false)
            .await?)
    })
    .await?;
    Ok((record.file.clone(), app.backups.file_of(&record)))
}

/// Backups → Back up now: the backup starts at once (202); its file is
/// made in the background.
pub async fn start(app: &AppState, session: &Session) -> ApiResult<api::BackupView> {
    let record = audited(app, session, Action::CreateBackup(""), async {
        gate(app, session, Operation::CREATE_BACKUP, async || {
            // Approvers are told who would hold the key (the role was
            // checked by the gate; a quorum, not this session, authorizes).
            let custodians = app.keyhold.backup_custodians().await?;
            Ok((
                PendingOperation::CreateBackup,
                format!(
                    "Make a backup, its key split among {} ({} of them open it)",
                    custodians.names().join(", "),
                    custodians.threshold
                ),
            ))
        })
        .await?;
        Ok(app.backups.start(Some(session)).await?)
    })
    .await?;
    Ok(views::backup(&record))
}

pub async fn custodians(app: &AppState, session: &Session) -> ApiResult<api::CustodiansView> {
    let set = app.keyhold.custodians(session).await?;
    Ok(views::custodians(set.as_ref()))
}

/// Backups → Custodians. A passphrase is turned into the custodian's key
/// here (Argon2id) and forgotten; only the public key and the salt are kept.
pub async fn set_custodians(
    app: &AppState,
    session: &Session,
    req: &api::SetCustodiansRequest,
) -> ApiResult<api::CustodiansView> {
    audited(app, session, Action::SetCustodians, async {
        // The role first: deriving keys from passphrases costs memory and
        // time no caller without the right may spend.
        session.authorize(Operation::SET_CUSTODIANS, false)?;
        let set = custodian_set(req).await?;
        set_custodian_set(app, session, set).await
    })
    .await
}

/// Sets an already parsed set (also what an approved request runs).
pub async fn set_custodian_set(
    app: &AppState,
    session: &Session,
    set: CustodianSet,
) -> ApiResult<api::CustodiansView> {
    gate(app, session, Operation::SET_CUSTODIANS, async || {
        Ok((
            PendingOperation::SetCustodians {
                custodians: set.clone(),
            },
            format!(
                "Set the backup custodians: {} ({} of them open a backup)",
                set.names().join(", "),
                set.threshold
            ),
        ))
    })
    .await?;
    let settings = app.keyhold.set_custodians(session, set).await?;
    Ok(views::custodians(settings.backup_custodians.as_ref()))
}

/// Most custodians whose passphrases one request may ask the server to
/// stretch: each costs 64 MiB and a fraction of a second.
const MAX_PASSPHRASES: usize = keyhold_core::backup::MAX_CUSTODIANS;
/// Shortest custodian passphrase accepted (the CLI asks the same).
const MIN_PASSPHRASE_CHARS: usize = 12;

async fn custodian_set(req: &api::SetCustodiansRequest) -> ApiResult<CustodianSet> {
    let mut custodians = Vec::with_capacity(req.custodians.len());
    let passphrases = req
        .custodians
        .iter()
        .filter(|c| c.passphrase.is_some())
        .count();
    if passphrases > MAX_PASSPHRASES {
        return Err(InvalidInput::new(
            "custodians",
            format!("at most {MAX_PASSPHRASES} custodians"),
        )
        .into());
    }
    for custodian in &req.custodians {
        let name = CustodianName::parse(&custodian.name)?;
        let (public_key, kdf) = match (&custodian.public_key, &custodian.passphrase, &custodian.kdf)
        {
            (Some(key), None, kdf) => (
                key.trim().to_ascii_lowercase(),
                kdf.as_ref().map(|k| PassphraseKdf {
                    memory_kib: k.memory_kib,
                    iterations: k.iterations,
                    parallelism: k.parallelism,
                    salt: k.salt.trim().to_ascii_lowercase(),
                }),
            ),
            (None, Some(passphrase), None) => {
                // The share file carries the salt: a short passphrase
                // would fall to an offline search.
                if passphrase.chars().count() < MIN_PASSPHRASE_CHARS {
                    return Err(InvalidInput::new(
                        "passphrase",
                        format!(
                            "custodian '{name}': a passphrase needs at least {MIN_PASSPHRASE_CHARS} characters (a share carries its salt, so a short one can be searched offline)"
                        ),
                    )
                    .into());
                }
                let passphrase = SecretString::from(passphrase.clone());
                let name_text = name.to_string();
                tokio::task::spawn_blocking(move || {
                    let kdf = keyhold_backup::new_passphrase_kdf()?;
                    let secret = keyhold_backup::custodian_from_passphrase(&passphrase, &kdf)?;
                    Ok::<_, keyhold_backup::BackupError>((secret.public_key_hex(), Some(kdf)))
                })
                .await
                .map_err(|e| {
                    keyhold_core::error::CoreError::Keystore(
                        keyhold_core::error::KeystoreError::Internal(e.to_string()),
                    )
                })?
                .map_err(|e| {
                    InvalidInput::new("passphrase", format!("custodian '{name_text}': {e}"))
                })?
            }
            _ => {
                return Err(InvalidInput::new(
                    "custodians",
                    format!(
                        "custodian '{name}': give either `public_key` (from `keyhold backup custodian-key`, with `kdf` when it was derived from a passphrase) or `passphrase`, not both"
                    ),
                )
                .into());
            }
        };
        custodians.push(Custodian {
            name,
            public_key,
            kdf,
        });
    }
    Ok(CustodianSet::new(req.threshold, custodians)?)
}

pub async fn archives(app: &AppState, session: &Session) -> ApiResult<Vec<api::AuditArchiveView>> {
    let archives = app.keyhold.audit_archives(session).await?;
    Ok(archives.iter().map(views::audit_archive).collect())
}

/// Audit Logs → Archive: the entries up to a sequence number, or older
/// than some days, into a signed archive file; `None` when there was
/// nothing to archive.
pub async fn archive(
    app: &AppState,
    session: &Session,
    req: &api::ArchiveRequest,
) -> ApiResult<Option<api::AuditArchiveView>> {
    let bound = match (req.up_to_seq, req.older_than_days) {
        (Some(seq), None) if seq > 0 => crate::backup::archive::Bound::UpToSeq(seq),
        (None, Some(days)) if (1..=36_500).contains(&days) => {
            crate::backup::archive::Bound::OlderThan(chrono::Duration::days(days.into()))
        }
        _ => {
            return Err(InvalidInput::new(
                "body",
                "give one of `up_to_seq` (a sequence number of the audit log, 1 or more) or `older_than_days` (1 to 36500)",
            )
            .into());
        }
    };
    let done = audited(app, session, Action::ArchiveAudit(""), async {
        Ok(crate::backup::archive::archive(
            &app.keyhold,
            app.backups.archive_dir(),
            Some(session),
            bound,
        )
        .await?)
    })
    .await?;
    Ok(done.as_ref().map(views::audit_archive))
}
