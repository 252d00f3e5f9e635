//! `keyhold backup restore`: a backup back into an empty data directory and
//! database, on this machine's keystore (software or PKCS#11, whichever the
//! backup was made with).
//!
//! Rules:
//! - Nothing is written before the whole file was read and checked: its
//!   signature, then every record decrypted to its end. An altered or cut
//!   backup, or a key the shares did not give, changes nothing.
//! - The database must hold no installation; the software keystore
//!   directory must be empty, or hold this backup's audit keys (an earlier,
//!   interrupted restore); a token must hold no other audit keys.
//! - Key material goes straight from the backup into the keystore
//!   (unwrapped there); its check digits must equal the recorded ones.
//! - Every row is loaded in one transaction, with the entry that records
//!   the restore as the audit chain's next link: a crash leaves no rows, and
//!   the restored log never lacks its restore entry.

use std::collections::HashMap;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use keyhold_backup::{BackupKey, BackupReader, Header, Record};
use keyhold_core::audit::{AuditRecord, ChainHead, SYSTEM_USER, seal};
use keyhold_core::backup::{SnapshotValue, WrappedAuditKeys};
use keyhold_core::clock::Clock;
use keyhold_core::ports::Keystore;
use keyhold_keystore::{Pkcs11Keystore, SoftKeystore};
use zeroize::Zeroizing;

use super::{TableShape, uuid_of};
use crate::config::{Config, KeystoreConfig};

/// The table the audit chain is kept in, and its columns the restore reads
/// to chain its own entry.
const AUDIT_TABLE: &str = "audit_log";

/// What a restore did.
#[derive(Debug, PartialEq, Eq)]
pub struct RestoreReport {
    pub backup_id: uuid::Uuid,
    pub created_at: String,
    pub keys: u64,
    pub credentials: u64,
    pub audit_entries: u64,
    pub archives: u64,
}

impl std::fmt::Display for RestoreReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "restored backup {} (made {}): {} key(s), {} credential secret(s), {} audit entries, {} audit archive(s)",
            self.backup_id,
            self.created_at,
            self.keys,
            self.credentials,
            self.audit_entries,
            self.archives
        )
    }
}

/// The cleartext header of a backup file: which backup, whose shares.
pub fn read_header(file: &Path) -> anyhow::Result<Header> {
    let reader = BackupReader::open(BufReader::new(open(file)?))
        .with_context(|| format!("{} is not a keyhold backup", file.display()))?;
    Ok(reader.header().clone())
}

fn open(file: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))
}

/// What the checking pass learnt.
struct Checked {
    audit_keys: WrappedAuditKeys,
    records: u64,
    size: u64,
    sha256: String,
}

/// Reads the whole backup under `key` without writing anything.
fn check(file: &Path, key: &BackupKey) -> anyhow::Result<Checked> {
    let verified = keyhold_backup::verify_file(BufReader::new(open(file)?), None)
        .context("the backup file is damaged or was altered")?;
    let mut reader = BackupReader::open(BufReader::new(open(file)?))?;
    reader
        .unlock(key)
        .context("the shares given do not open this backup")?;
    let mut audit_keys = None;
    let mut records = 0;
    while let Some(record) = reader
        .next_record()
        .context("the backup file is damaged or was altered")?
    {
        records += 1;
        if let Record::AuditKeys(keys) = record {
            audit_keys = Some(keys);
        }
    }
    let audit_keys = audit_keys.context("the backup holds no audit keys")?;
    let signer = keyhold_core::audit::AuditPublicKey::from_spki_der(&audit_keys.signing_public)
        .map_err(|e| anyhow::anyhow!("the backup's audit signing key is not valid: {e}"))?;
    if signer != verified.header.audit_public_key()? {
        bail!("the backup was signed by another audit key than the one it holds: it was altered");
    }
    Ok(Checked {
        audit_keys,
        records,
        size: verified.size,
        sha256: verified.sha256,
    })
}

/// Restores `file`, opened with `key` (combined from the custodians'
/// shares, who are named in the restore's entry), into the data directory
/// and database of `config`.
pub async fn restore(
    config: &Config,
    clock: Arc<dyn Clock>,
    file: &Path,
    key: BackupKey,
    custodians: &[String],
) -> anyhow::Result<RestoreReport> {
    let header = read_header(file)?;
    let file_owned = file.to_path_buf();
    let key = Arc::new(key);
    let checked = {
        let key = key.clone();
        tokio::task::spawn_blocking(move || check(&file_owned, &key)).await??
    };
    super::create_private_dir(&config.data_dir)?;
    let mut loader =
        keyhold_store::restore::Loader::begin(config.database.expose(), header.schema_version)
            .await
            .with_context(|| format!("database {}", config.database))?;
    let wrap_key = key.wrap_key();
    let keystore: Arc<dyn Keystore> = match &config.keystore {
        KeystoreConfig::Software(source) => {
            let dir = config.keystore_dir();
            Arc::new(
                SoftKeystore::init_from_backup(
                    &dir,
                    source.clone(),
                    &wrap_key,
                    &checked.audit_keys,
                )
                .map_err(|e| anyhow::anyhow!("keystore in {}: {e}", dir.display()))?,
            )
        }
        KeystoreConfig::Pkcs11 { token, .. } => {
            let keystore = Pkcs11Keystore::load(token.clone())
                .map_err(|e| anyhow::anyhow!("PKCS#11 keystore: {e}"))?;
            keystore
                .adopt_backup_audit_keys(&wrap_key, &checked.audit_keys)
                .map_err(|e| anyhow::anyhow!("PKCS#11 keystore: {e}"))?;
            Arc::new(keystore)
        }
    };
    crate::crash_point("restore_after_keystore");

    let (tx, mut rx) = tokio::sync::mpsc::channel::<Step>(256);
    let reading = {
        let file = file.to_path_buf();
        let keystore = keystore.clone();
        let archive_dir = config.audit_archive_dir.clone();
        let itself = ItsOwnRecord {
            id: header.backup_id,
            size: checked.size,
            sha256: checked.sha256.clone(),
            finished_at: keyhold_core::clock::format_timestamp(&clock.now()),
        };
        tokio::task::spawn_blocking(move || {
            read_records(&file, &key, keystore.as_ref(), &archive_dir, &itself, tx)
        })
    };
    let restore_record = AuditRecord::new(
        clock.now(),
        SYSTEM_USER,
        format!("Restored from backup {}", header.backup_id),
    )
    .with_details(serde_json::json!({
        "backup": header.backup_id.to_string(),
        "made_at": header.created_at,
        "made_by": header.created_by,
        "made_on": header.node,
        "keystore": header.keystore,
        "database": header.database,
        "custodians": custodians,
        "threshold": header.threshold,
    }));
    let mut in_audit = false;
    let mut head = ChainHead::EMPTY;
    let mut audit_columns: Vec<String> = Vec::new();
    let mut entries = 0u64;
    let mut rows = 0u64;
    while let Some(step) = rx.recv().await {
        match step {
            Step::Table { name, columns } => {
                if in_audit {
                    loader
                        .row(restore_row(
                            &audit_columns,
                            head,
                            &restore_record,
                            keystore.as_ref(),
                        )?)
                        .await?;
                }
                in_audit = name == AUDIT_TABLE;
                if in_audit {
                    audit_columns = columns.clone();
                }
                loader.table(&name, &columns).await?;
            }
            Step::Row(values) => {
                if in_audit {
                    head = chain_head(&audit_columns, &values)?;
                    entries += 1;
                }
                loader.row(values).await?;
                rows += 1;
                crate::crash_point_after("restore_rows", rows);
            }
        }
    }
    let read = reading.await.context("the backup reader stopped")??;
    if in_audit {
        loader
            .row(restore_row(
                &audit_columns,
                head,
                &restore_record,
                keystore.as_ref(),
            )?)
            .await?;
    }
    if entries == 0 {
        bail!("the backup holds no audit log");
    }
    if read.records != checked.records {
        bail!("the backup read differently the second time: is the file being changed?");
    }
    crate::crash_point("restore_before_commit");
    loader
        .finish()
        .await
        .context("committing the restored database")?;
    let report = RestoreReport {
        backup_id: header.backup_id,
        created_at: header.created_at.clone(),
        keys: read.keys,
        credentials: read.credentials,
        audit_entries: entries,
        archives: read.archives,
    };
    expire_pending_approvals(config, keystore, clock).await?;
    Ok(report)
}

/// What the reading thread hands the loader.
enum Step {
    Table { name: String, columns: Vec<String> },
    Row(Vec<SnapshotValue>),
}

struct Read {
    records: u64,
    keys: u64,
    credentials: u64,
    archives: u64,
}

/// The backup's own record is in its snapshot, as running (it was made
/// while the backup ran): the restore writes how it ended, from the file.
struct ItsOwnRecord {
    id: uuid::Uuid,
    size: u64,
    sha256: String,
    finished_at: String,
}

/// The table of backups, and the columns of a backup's outcome.
const BACKUPS_TABLE: &str = "backups";

impl ItsOwnRecord {
    /// Rewrites the outcome of a backup row that was running at the
    /// snapshot: this backup succeeded (its file is here); another (none
    /// should be: one runs at a time) was cut off by the restore.
    fn settle(
        &self,
        columns: &[String],
        values: &mut [SnapshotValue],
        keys: u64,
    ) -> anyhow::Result<()> {
        let status = index(columns, "status")?;
        if values[status] != SnapshotValue::Text("running".into()) {
            return Ok(());
        }
        let ours = uuid_of(&values[index(columns, "id")?])? == self.id;
        let set = |values: &mut [SnapshotValue],
                   column: &str,
                   value: SnapshotValue|
         -> anyhow::Result<()> {
            values[index(columns, column)?] = value;
            Ok(())
        };
        set(
            values,
            "finished_at",
            SnapshotValue::Text(self.finished_at.clone()),
        )?;
        if ours {
            set(values, "status", SnapshotValue::Text("succeeded".into()))?;
            set(
                values,
                "size_bytes",
                SnapshotValue::Integer(i64::try_from(self.size)?),
            )?;
            set(values, "sha256", SnapshotValue::Text(self.sha256.clone()))?;
            set(
                values,
                "key_count",
                SnapshotValue::Integer(i64::try_from(keys)?),
            )?;
        } else {
            set(values, "status", SnapshotValue::Text("failed".into()))?;
            set(
                values,
                "error",
                SnapshotValue::Text("interrupted by a restore from another backup".into()),
            )?;
        }
        Ok(())
    }
}

/// The second pass: decrypts, unwraps the material into the keystore,
/// seals secrets again, writes the archives, and sends the rows on.
fn read_records(
    file: &Path,
    key: &BackupKey,
    keystore: &dyn Keystore,
    archive_dir: &Path,
    itself: &ItsOwnRecord,
    tx: tokio::sync::mpsc::Sender<Step>,
) -> anyhow::Result<Read> {
    let wrap_key = key.wrap_key();
    let import = keystore
        .backup_import(&wrap_key)
        .context("the keystore cannot import a backup's keys")?;
    let mut reader = BackupReader::open(BufReader::new(open(file)?))?;
    reader.unlock(key)?;
    let mut table = String::new();
    let mut shape = TableShape::default();
    let mut columns: Vec<String> = Vec::new();
    let mut imported: HashMap<uuid::Uuid, keyhold_core::ports::GeneratedKey> = HashMap::new();
    let mut secrets: HashMap<uuid::Uuid, Zeroizing<Vec<u8>>> = HashMap::new();
    let mut read = Read {
        records: 0,
        keys: 0,
        credentials: 0,
        archives: 0,
    };
    let send = |step: Step| {
        tx.blocking_send(step)
            .map_err(|_| anyhow::anyhow!("the database loader stopped"))
    };
    while let Some(record) = reader.next_record()? {
        read.records += 1;
        match record {
            Record::Table {
                name,
                columns: names,
            } => {
                shape = TableShape::of(&name, &names)?;
                table = name.clone();
                columns = names.clone();
                send(Step::Table {
                    name,
                    columns: names,
                })?;
            }
            Record::KeyMaterial { key_id, wrapped } => {
                // Written right before its row: the table says which kind.
                let made = if shape.xks {
                    import.import_xks_key(key_id, &wrapped)
                } else {
                    import.import_key(key_id, &wrapped)
                }
                .with_context(|| format!("importing {} {key_id}'s material", shape.noun("key")))?;
                imported.insert(key_id, made);
            }
            Record::CredentialSecret { id, secret } => {
                secrets.insert(id, Zeroizing::new(secret.expose().to_vec()));
            }
            Record::Row { mut values } => {
                if let Some((id, handle, check_digits)) = shape.key {
                    let id = uuid_of(&values[id])?;
                    let made = imported.remove(&id).with_context(|| {
                        format!(
                            "the backup holds no material for {} {id}",
                            shape.noun("key")
                        )
                    })?;
                    if let SnapshotValue::Text(recorded) = &values[check_digits]
                        && !recorded.eq_ignore_ascii_case(made.check_digits.as_str())
                    {
                        bail!(
                            "{} {id}: the restored material's check digits are {}, the record says {recorded}: the restore stops",
                            shape.noun("key"),
                            made.check_digits.as_str()
                        );
                    }
                    values[handle] = SnapshotValue::Bytes(made.handle);
                    read.keys += 1;
                }
                if table == BACKUPS_TABLE {
                    itself.settle(&columns, &mut values, read.keys)?;
                }
                if let Some((id, secret_at)) = shape.credential {
                    let id = uuid_of(&values[id])?;
                    if let Some(secret) = secrets.remove(&id) {
                        let sealed = keystore
                            .seal_secret(&shape.secret_context(id), &secret)
                            .with_context(|| {
                                format!("sealing {} {id}'s secret", shape.noun("credential"))
                            })?;
                        values[secret_at] = SnapshotValue::Bytes(sealed);
                        read.credentials += 1;
                    }
                }
                send(Step::Row(values))?;
            }
            Record::AuditKeys(_) => {}
            Record::AuditArchive { file, bytes } => {
                let name = Path::new(&file)
                    .file_name()
                    .filter(|n| *n == std::ffi::OsStr::new(&file))
                    .with_context(|| {
                        format!(
                            "the backup names an archive '{file}' that is not a plain file name"
                        )
                    })?;
                super::write_private_file(&archive_dir.join(name), &bytes)?;
                read.archives += 1;
            }
            Record::End { .. } => {}
        }
    }
    Ok(read)
}

fn index(columns: &[String], name: &str) -> anyhow::Result<usize> {
    columns
        .iter()
        .position(|c| c == name)
        .with_context(|| format!("the backup's table has no column {name}"))
}

/// The chain head a stored audit row ends at.
fn chain_head(columns: &[String], values: &[SnapshotValue]) -> anyhow::Result<ChainHead> {
    let seq = match &values[index(columns, "seq")?] {
        SnapshotValue::Integer(seq) => *seq,
        _ => bail!("an audit entry's seq is not a number"),
    };
    let hash = match &values[index(columns, "hash")?] {
        SnapshotValue::Bytes(hash) => <[u8; 32]>::try_from(hash.as_slice())
            .map_err(|_| anyhow::anyhow!("audit entry {seq}'s hash is not 32 bytes"))?,
        _ => bail!("audit entry {seq}'s hash is not bytes"),
    };
    Ok(ChainHead { seq, hash })
}

/// The restore's own entry, chained after `head`, as a row of the audit table.
fn restore_row(
    columns: &[String],
    head: ChainHead,
    record: &AuditRecord,
    keystore: &dyn Keystore,
) -> anyhow::Result<Vec<SnapshotValue>> {
    let entry = seal(head, record, keystore).context("sealing the restore's audit entry")?;
    columns
        .iter()
        .map(|column| {
            Ok(match column.as_str() {
                "seq" => SnapshotValue::Integer(entry.seq),
                "time" => SnapshotValue::Text(entry.time.clone()),
                "users" => SnapshotValue::Text(entry.users.clone()),
                "summary" => SnapshotValue::Text(entry.summary.clone()),
                "details" => SnapshotValue::Text(entry.details.clone()),
                "archived" => SnapshotValue::Bool(false),
                "prev_hash" => SnapshotValue::Bytes(entry.prev_hash.to_vec()),
                "hash" => SnapshotValue::Bytes(entry.hash.to_vec()),
                "mac" => SnapshotValue::Bytes(entry.mac.to_vec()),
                other => bail!("the audit table has a column {other} this keyhold does not know"),
            })
        })
        .collect()
}

/// Approval requests left pending or approved at the backup are closed:
/// what was asked of the old installation is asked again of this one.
async fn expire_pending_approvals(
    config: &Config,
    keystore: Arc<dyn Keystore>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<()> {
    use keyhold_core::approval::ApprovalStatus;
    let store = keyhold_store::connect(config.database.expose(), keystore)
        .await
        .with_context(|| format!("database {}", config.database))?;
    for status in [ApprovalStatus::Pending, ApprovalStatus::Approved] {
        for request in store.list_approvals(Some(status), 1000).await? {
            let outcome = "closed by the restore from a backup: ask again";
            let audit = AuditRecord::new(
                clock.now(),
                SYSTEM_USER,
                format!("Expired approval request {} at the restore", request.id),
            );
            store
                .close_approval(request.id, status, ApprovalStatus::Expired, outcome, &audit)
                .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use keyhold_backup::HeaderInfo;
    use keyhold_core::audit::AuditSigner;
    use keyhold_core::backup::{
        Custodian, CustodianName, CustodianSet, SnapshotItem, XKS_CREDENTIALS_TABLE, XKS_KEYS_TABLE,
    };
    use keyhold_core::error::KeystoreError;
    use keyhold_keystore::MasterKeySource;

    use super::*;

    const AAD: &[u8] = b"kms request aad";

    fn custodians() -> CustodianSet {
        let custodian = |name: &str| {
            let (_secret, public_key) = keyhold_backup::generate_custodian_key().unwrap();
            Custodian {
                name: CustodianName::parse(name).unwrap(),
                public_key,
                kdf: None,
            }
        };
        CustodianSet::new(2, vec![custodian("alice"), custodian("bob")]).unwrap()
    }

    fn text(id: uuid::Uuid) -> SnapshotValue {
        SnapshotValue::Text(id.to_string())
    }

    /// The writer and the restore's reader, with no database: BYOK and XKS
    /// keys, cloud and XKS credentials, each restored as its own kind.
    #[test]
    fn xks_keys_and_credentials_are_backed_up_and_restored_as_xks() {
        let dir = tempfile::tempdir().unwrap();
        let source = SoftKeystore::init(&dir.path().join("source"), MasterKeySource::File).unwrap();
        let (byok_id, xks_id) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        let byok = source.generate_key(byok_id).unwrap();
        let xks = source.xks_generate_key(xks_id).unwrap();
        let sealed = source
            .xks_encrypt(xks_id, &xks.handle, b"a data key", AAD)
            .unwrap();
        let (cloud_id, xks_credential_id) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        let cloud_secret = source
            .seal_secret(cloud_id.as_bytes(), b"cloud secret")
            .unwrap();
        let xks_secret = source
            .seal_secret(
                &keyhold_core::xks::secret_context(xks_credential_id),
                b"xks secret",
            )
            .unwrap();

        let key_columns = || {
            vec![
                "id".to_owned(),
                "keystore_handle".to_owned(),
                "check_digits".to_owned(),
            ]
        };
        let key_row = |id, made: &keyhold_core::ports::GeneratedKey| {
            SnapshotItem::Row(vec![
                text(id),
                SnapshotValue::Bytes(made.handle.clone()),
                SnapshotValue::Text(made.check_digits.as_str().to_owned()),
            ])
        };
        let credential_columns = || vec!["id".to_owned(), "sealed_secret".to_owned()];
        let items = vec![
            SnapshotItem::Table {
                name: "keys".into(),
                columns: key_columns(),
            },
            key_row(byok_id, &byok),
            SnapshotItem::Table {
                name: XKS_KEYS_TABLE.into(),
                columns: key_columns(),
            },
            key_row(xks_id, &xks),
            SnapshotItem::Table {
                name: "credentials".into(),
                columns: credential_columns(),
            },
            SnapshotItem::Row(vec![text(cloud_id), SnapshotValue::Bytes(cloud_secret)]),
            SnapshotItem::Table {
                name: XKS_CREDENTIALS_TABLE.into(),
                columns: credential_columns(),
            },
            SnapshotItem::Row(vec![
                text(xks_credential_id),
                SnapshotValue::Bytes(xks_secret),
            ]),
        ];
        let (tx, rx) = tokio::sync::mpsc::channel(items.len());
        for item in items {
            tx.try_send(item).unwrap();
        }
        drop(tx);

        let key = BackupKey::generate().unwrap();
        let header = Header::new(
            HeaderInfo {
                backup_id: uuid::Uuid::new_v4(),
                created_at: "2026-12-06T12:00:00Z".into(),
                created_by: "Admin1,Admin2".into(),
                node: "node-1".into(),
                keystore: "software".into(),
                database: "sqlite".into(),
                schema_version: 14,
            },
            &custodians(),
            &source.audit_public_key().unwrap(),
            &key,
        )
        .unwrap();
        let path = dir.path().join("backup.khbk");
        let file = std::fs::File::create(&path).unwrap();
        let written = super::super::write_backup(file, &header, &key, &source, rx, &[]).unwrap();
        assert_eq!(written.keys, 2);

        let checked = check(&path, &key).unwrap();
        let target = SoftKeystore::init_from_backup(
            &dir.path().join("target"),
            MasterKeySource::File,
            &key.wrap_key(),
            &checked.audit_keys,
        )
        .unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let itself = ItsOwnRecord {
            id: header.backup_id,
            size: checked.size,
            sha256: checked.sha256.clone(),
            finished_at: "2026-12-06T12:01:00Z".into(),
        };
        let read = read_records(
            &path,
            &key,
            &target,
            &dir.path().join("archives"),
            &itself,
            tx,
        )
        .unwrap();
        assert_eq!((read.keys, read.credentials), (2, 2));
        let mut rows: HashMap<String, Vec<Vec<SnapshotValue>>> = HashMap::new();
        let mut table = String::new();
        while let Ok(step) = rx.try_recv() {
            match step {
                Step::Table { name, .. } => table = name,
                Step::Row(values) => rows.entry(table.clone()).or_default().push(values),
            }
        }
        let bytes = |table: &str, column: usize| match &rows[table][0][column] {
            SnapshotValue::Bytes(bytes) => bytes.clone(),
            other => panic!("{table}: {other:?}"),
        };

        // The XKS key decrypts what the source encrypted; the BYOK key is
        // still a BYOK key (it serves no XKS call).
        let restored_xks = bytes(XKS_KEYS_TABLE, 1);
        assert_eq!(
            target
                .xks_decrypt(xks_id, &restored_xks, &sealed, AAD)
                .unwrap()
                .as_slice(),
            b"a data key"
        );
        let restored_byok = bytes("keys", 1);
        assert!(matches!(
            target.xks_encrypt(byok_id, &restored_byok, b"x", AAD),
            Err(KeystoreError::Internal(_))
        ));
        assert!(
            target
                .missing_material(&[(byok_id, restored_byok.as_slice())])
                .unwrap()
                .is_empty()
        );

        // Each secret sealed again under its own kind's context.
        assert_eq!(
            target
                .open_secret(cloud_id.as_bytes(), &bytes("credentials", 1))
                .unwrap()
                .as_slice(),
            b"cloud secret"
        );
        let restored_secret = bytes(XKS_CREDENTIALS_TABLE, 1);
        assert_eq!(
            target
                .open_secret(
                    &keyhold_core::xks::secret_context(xks_credential_id),
                    &restored_secret
                )
                .unwrap()
                .as_slice(),
            b"xks secret"
        );
        assert!(
            target
                .open_secret(xks_credential_id.as_bytes(), &restored_secret)
                .is_err()
        );
    }
}
