//! Making backups while the server runs, on request or on schedule, and
//! keeping the backup directory to its retention.
//!
//! Rules:
//! - One read transaction gives the snapshot (`Store::export_snapshot`);
//!   its rows flow through a bounded channel into one blocking thread that
//!   wraps each key's material in the keystore, encrypts and writes: memory
//!   does not grow with the number of keys.
//! - Key material leaves the keystore only wrapped under the backup's wrap
//!   key; the old keystore's handles and sealed secrets are left out (they
//!   open nowhere else). XKS keys and XKS credentials travel the same way
//!   as keys and cloud credentials; the table a record comes in tells the
//!   restore which they are (see [`TableShape`]). The backup key exists only in this process, until
//!   the file is finished, and as the custodians' shares.
//! - The file is written under a hidden `.partial` name and renamed when it
//!   is complete and synced: a file with a backup's name is whole. A backup
//!   interrupted by a crash is marked failed at the next start, and its
//!   partial file removed.

pub mod archive;
pub mod restore;

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use keyhold_backup::{BackupKey, BackupWriter, Header, HeaderInfo, Record, SecretBytes};
use keyhold_core::backup::{
    BackupRecord, BackupStatus, BackupTrigger, CREDENTIAL_ID_COLUMN, CREDENTIAL_SECRET_COLUMN,
    CREDENTIALS_TABLE, CustodianSet, KEY_HANDLE_COLUMN, KEY_ID_COLUMN, KEYS_TABLE, SnapshotItem,
    SnapshotSink, SnapshotValue, XKS_CREDENTIALS_TABLE, XKS_KEYS_TABLE,
};
use keyhold_core::error::{CoreError, CoreResult, StoreError};
use keyhold_core::identity::Session;
use keyhold_core::names::NodeId;
use keyhold_core::ports::Keystore;
use keyhold_core::service::Keyhold;

/// Items in flight between the snapshot and the writer: enough to keep
/// both busy, few enough that memory stays flat.
const SNAPSHOT_QUEUE: usize = 256;
/// The backup files' extension.
pub const BACKUP_EXTENSION: &str = "khbk";

/// This node's backups: where they go, and how the last one ended.
pub struct Backups {
    keyhold: Keyhold,
    dir: PathBuf,
    archive_dir: PathBuf,
    node: NodeId,
    database: keyhold_store::DatabaseKind,
}

impl std::fmt::Debug for Backups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backups")
            .field("dir", &self.dir)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// What the writer thread wrote.
struct Written {
    size: u64,
    sha256: String,
    keys: u64,
}

impl Backups {
    pub fn new(
        keyhold: Keyhold,
        dir: PathBuf,
        archive_dir: PathBuf,
        node: NodeId,
        database: keyhold_store::DatabaseKind,
    ) -> Self {
        Self {
            keyhold,
            dir,
            archive_dir,
            node,
            database,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn archive_dir(&self) -> &Path {
        &self.archive_dir
    }

    pub fn keyhold(&self) -> &Keyhold {
        &self.keyhold
    }

    /// Backups this node left running when it stopped (a crash, a kill):
    /// marked failed, their partial files removed.
    pub async fn recover(&self) -> CoreResult<usize> {
        let mut recovered = 0;
        for mut record in self.keyhold.store().list_backups(1000).await? {
            if record.status != BackupStatus::Running || record.node != self.node.as_str() {
                continue;
            }
            // A file with the backup's name may be whole (the crash came
            // after its rename): without its record it is not to be trusted.
            let _ = std::fs::remove_file(self.partial_path(&record.file));
            let _ = std::fs::remove_file(self.dir.join(&record.file));
            record.status = BackupStatus::Failed;
            record.finished_at = Some(self.keyhold.now());
            record.error = Some("interrupted: the server stopped while it was being made".into());
            if self.keyhold.finish_backup(&record).await? {
                recovered += 1;
            }
        }
        Ok(recovered)
    }

    /// Starts a backup for `session` (`None`: the schedule): its key is made
    /// and split for the custodians, its record written (audited), and the
    /// file is made in the background. Returns the record, status running.
    pub async fn start(self: &Arc<Self>, session: Option<&Session>) -> CoreResult<BackupRecord> {
        let custodians = match session {
            Some(session) => self.keyhold.authorize_backup(session).await?,
            None => self.keyhold.backup_custodians().await?,
        };
        let (record, header, key) = self.prepare(session, &custodians)?;
        self.keyhold
            .begin_backup(session, &record, &custodians)
            .await?;
        let this = self.clone();
        let running = record.clone();
        tokio::spawn(async move {
            this.complete(running, header, key).await;
        });
        Ok(record)
    }

    fn prepare(
        &self,
        session: Option<&Session>,
        custodians: &CustodianSet,
    ) -> CoreResult<(BackupRecord, Header, BackupKey)> {
        let id = uuid::Uuid::new_v4();
        let now = self.keyhold.now();
        let file = format!(
            "keyhold-{}-{}.{BACKUP_EXTENSION}",
            now.format("%Y%m%dT%H%M%SZ"),
            &id.simple().to_string()[..8]
        );
        let initiated_by = session.map_or_else(
            || keyhold_core::audit::SYSTEM_USER.to_owned(),
            |s| s.users(),
        );
        let keystore = self.keyhold.keystore();
        let audit_public_key = keystore.audit_public_key()?;
        let key = BackupKey::generate().map_err(internal)?;
        let header = Header::new(
            HeaderInfo {
                backup_id: id,
                created_at: keyhold_core::clock::format_timestamp(&now),
                created_by: initiated_by.clone(),
                node: self.node.to_string(),
                keystore: match keystore.kind() {
                    keyhold_core::ports::KeystoreKind::Software => "software",
                    keyhold_core::ports::KeystoreKind::Pkcs11 => "pkcs11",
                }
                .to_owned(),
                database: match self.database {
                    keyhold_store::DatabaseKind::Sqlite => "sqlite",
                    keyhold_store::DatabaseKind::Postgres => "postgres",
                }
                .to_owned(),
                schema_version: keyhold_store::restore::latest_schema_version(self.database),
            },
            custodians,
            &audit_public_key,
            &key,
        )
        .map_err(internal)?;
        let shares = keyhold_backup::split(&key, &header, custodians).map_err(internal)?;
        let record = BackupRecord {
            id,
            trigger: if session.is_some() {
                BackupTrigger::Manual
            } else {
                BackupTrigger::Scheduled
            },
            initiated_by,
            status: BackupStatus::Running,
            started_at: now,
            finished_at: None,
            file,
            size: None,
            sha256: None,
            keys: None,
            threshold: custodians.threshold,
            custodians: custodians.names(),
            shares: shares.iter().map(|s| s.to_text()).collect(),
            error: None,
            node: self.node.to_string(),
        };
        Ok((record, header, key))
    }

    /// Makes the file and records how it ended. Never fails: a failure is
    /// the backup's outcome, recorded and logged.
    async fn complete(&self, mut record: BackupRecord, header: Header, key: BackupKey) {
        let outcome = self.write(&record, header, key).await;
        record.finished_at = Some(self.keyhold.now());
        match outcome {
            Ok(written) => {
                record.status = BackupStatus::Succeeded;
                record.size = Some(written.size);
                record.sha256 = Some(written.sha256);
                record.keys = Some(written.keys);
                tracing::info!(backup = %record.id, file = %record.file, keys = written.keys, "backup made");
            }
            Err(error) => {
                let _ = std::fs::remove_file(self.partial_path(&record.file));
                let _ = std::fs::remove_file(self.dir.join(&record.file));
                record.status = BackupStatus::Failed;
                record.error = Some(format!("{error:#}"));
                tracing::warn!(backup = %record.id, error = %format!("{error:#}"), "backup failed");
            }
        }
        crate::crash_point("backup_before_finish");
        if let Err(error) = self.keyhold.finish_backup(&record).await {
            tracing::error!(backup = %record.id, %error, "the backup's outcome could not be recorded; a restart marks it failed");
        }
    }

    fn partial_path(&self, file: &str) -> PathBuf {
        self.dir.join(format!(".{file}.partial"))
    }

    async fn write(
        &self,
        record: &BackupRecord,
        header: Header,
        key: BackupKey,
    ) -> anyhow::Result<Written> {
        create_private_dir(&self.dir)?;
        let partial = self.partial_path(&record.file);
        let file = create_private_file(&partial)?;
        let archives = archive::archive_files(&self.keyhold, &self.archive_dir).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(SNAPSHOT_QUEUE);
        let keystore = self.keyhold.keystore().clone();
        let writer = tokio::task::spawn_blocking(move || {
            write_backup(file, &header, &key, keystore.as_ref(), rx, &archives)
        });
        let mut sink = ChannelSink { tx };
        let snapshot = self.keyhold.store().export_snapshot(&mut sink).await;
        drop(sink);
        let written = writer.await.context("the backup writer stopped")??;
        let summary = snapshot.context("reading the database's snapshot")?;
        if summary.schema_version != keyhold_store::restore::latest_schema_version(self.database) {
            anyhow::bail!(
                "the database's schema is version {}, this keyhold's is {}: another node upgraded it; make the backup on an upgraded node",
                summary.schema_version,
                keyhold_store::restore::latest_schema_version(self.database)
            );
        }
        crate::crash_point("backup_before_rename");
        let target = self.dir.join(&record.file);
        std::fs::rename(&partial, &target)
            .with_context(|| format!("cannot name the backup {}", target.display()))?;
        sync_dir(&self.dir)?;
        Ok(written)
    }

    /// The rotator's part: a scheduled backup when one is due, then
    /// retention. Never fails: failures are logged and recorded.
    pub async fn schedule_pass(self: &Arc<Self>) {
        match self.keyhold.backup_due(self.keyhold.now()).await {
            Ok(true) => match self.start(None).await {
                Ok(record) => tracing::info!(backup = %record.id, "scheduled backup started"),
                Err(error) => tracing::warn!(%error, "the scheduled backup could not start"),
            },
            Ok(false) => {}
            Err(error) => tracing::warn!(%error, "cannot tell whether a backup is due"),
        }
        match self.keyhold.backups_beyond_retention().await {
            Ok(old) => {
                for record in old {
                    let path = self.dir.join(&record.file);
                    match std::fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(error) => {
                            tracing::warn!(file = %path.display(), %error, "cannot remove an old backup");
                            continue;
                        }
                    }
                    if let Err(error) = self.keyhold.forget_backup(&record).await {
                        tracing::warn!(%error, "cannot forget an old backup");
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "cannot read the backups for retention"),
        }
    }

    /// The path of a backup's file, for downloads.
    pub fn file_of(&self, record: &BackupRecord) -> PathBuf {
        self.dir.join(&record.file)
    }
}

fn internal(error: impl std::fmt::Display) -> CoreError {
    CoreError::Keystore(keyhold_core::error::KeystoreError::Internal(
        error.to_string(),
    ))
}

/// Hands snapshot items to the writer thread; fails once it stopped.
struct ChannelSink {
    tx: tokio::sync::mpsc::Sender<SnapshotItem>,
}

#[async_trait::async_trait]
impl SnapshotSink for ChannelSink {
    async fn item(&mut self, item: SnapshotItem) -> Result<(), StoreError> {
        self.tx
            .send(item)
            .await
            .map_err(|_| StoreError::Unavailable("the backup writer stopped".into()))
    }
}

/// Where the columns that hold old-keystore data are, in the table being
/// written or restored: found once per table, not per row.
///
/// A key's `KeyMaterial` record and a credential's `CredentialSecret`
/// record come right before their row, inside their table: so the table
/// tells an XKS key's material (restored with `import_xks_key`) from a
/// BYOK key's, and an XKS credential's secret (sealed under
/// `keyhold_core::xks::secret_context`) from a cloud credential's, with no
/// record kind of their own and no change to the backup format.
#[derive(Default)]
pub(crate) struct TableShape {
    /// Keys: id, keystore handle, check digits.
    pub(crate) key: Option<(usize, usize, usize)>,
    /// Credentials: id, sealed secret.
    pub(crate) credential: Option<(usize, usize)>,
    /// The table holds XKS keys or XKS credentials.
    pub(crate) xks: bool,
}

/// The column of keys' check digits (compared after a restore's import).
const KEY_CHECK_DIGITS_COLUMN: &str = "check_digits";

impl TableShape {
    pub(crate) fn of(name: &str, columns: &[String]) -> anyhow::Result<Self> {
        let index = |column: &str| {
            columns
                .iter()
                .position(|c| c == column)
                .with_context(|| format!("table {name} has no column {column}"))
        };
        let xks = matches!(name, XKS_KEYS_TABLE | XKS_CREDENTIALS_TABLE);
        Ok(match name {
            KEYS_TABLE | XKS_KEYS_TABLE => Self {
                key: Some((
                    index(KEY_ID_COLUMN)?,
                    index(KEY_HANDLE_COLUMN)?,
                    index(KEY_CHECK_DIGITS_COLUMN)?,
                )),
                xks,
                ..Self::default()
            },
            CREDENTIALS_TABLE | XKS_CREDENTIALS_TABLE => Self {
                credential: Some((
                    index(CREDENTIAL_ID_COLUMN)?,
                    index(CREDENTIAL_SECRET_COLUMN)?,
                )),
                xks,
                ..Self::default()
            },
            _ => Self::default(),
        })
    }

    /// The context the keystore seals credential `id`'s secret under.
    pub(crate) fn secret_context(&self, id: uuid::Uuid) -> Vec<u8> {
        if self.xks {
            keyhold_core::xks::secret_context(id)
        } else {
            id.as_bytes().to_vec()
        }
    }

    /// How messages name this table's keys and credentials.
    pub(crate) fn noun(&self, what: &'static str) -> String {
        if self.xks {
            format!("XKS {what}")
        } else {
            what.to_owned()
        }
    }
}

pub(crate) fn uuid_of(value: &SnapshotValue) -> anyhow::Result<uuid::Uuid> {
    match value {
        SnapshotValue::Text(text) => {
            uuid::Uuid::parse_str(text).with_context(|| format!("'{text}' is not an id"))
        }
        SnapshotValue::Bytes(bytes) => {
            uuid::Uuid::from_slice(bytes).context("an id is not 16 bytes")
        }
        _ => anyhow::bail!("an id column holds no id"),
    }
}

fn write_backup(
    file: std::fs::File,
    header: &Header,
    key: &BackupKey,
    keystore: &dyn Keystore,
    mut rx: tokio::sync::mpsc::Receiver<SnapshotItem>,
    archives: &[(String, PathBuf)],
) -> anyhow::Result<Written> {
    let wrap_key = key.wrap_key();
    let export = keystore
        .backup_export(&wrap_key)
        .context("the keystore cannot export for a backup")?;
    let mut out = BackupWriter::new(BufWriter::new(file), header, key)?;
    out.write(&Record::AuditKeys(
        export
            .export_audit_keys()
            .context("the keystore cannot export the audit keys")?,
    ))?;
    let mut shape = TableShape::default();
    let mut keys = 0u64;
    // Counted only for the crash points: the writer counts the records itself.
    let mut records = 1u64;
    while let Some(item) = rx.blocking_recv() {
        match item {
            SnapshotItem::Table { name, columns } => {
                shape = TableShape::of(&name, &columns)?;
                out.write(&Record::Table { name, columns })?;
                records += 1;
            }
            SnapshotItem::Row(mut values) => {
                if let Some((id, handle, _)) = shape.key {
                    let key_id = uuid_of(&values[id])?;
                    let SnapshotValue::Bytes(handle_bytes) = &values[handle] else {
                        anyhow::bail!("key {key_id} has no keystore handle");
                    };
                    // The handle says which kind of key it is to the keystore.
                    let wrapped = export.export_key(key_id, handle_bytes).with_context(|| {
                        format!("exporting {} {key_id}'s material", shape.noun("key"))
                    })?;
                    out.write(&Record::KeyMaterial { key_id, wrapped })?;
                    values[handle] = SnapshotValue::Bytes(Vec::new());
                    keys += 1;
                    records += 1;
                }
                if let Some((id, secret)) = shape.credential {
                    let credential = uuid_of(&values[id])?;
                    if let SnapshotValue::Bytes(sealed) = &values[secret]
                        && !sealed.is_empty()
                    {
                        let plain = keystore
                            .open_secret(&shape.secret_context(credential), sealed)
                            .with_context(|| {
                                format!(
                                    "opening {} {credential}'s secret",
                                    shape.noun("credential")
                                )
                            })?;
                        out.write(&Record::CredentialSecret {
                            id: credential,
                            secret: SecretBytes::new(plain),
                        })?;
                        values[secret] = SnapshotValue::Bytes(Vec::new());
                        records += 1;
                    }
                }
                out.write(&Record::Row { values })?;
                records += 1;
                crate::crash_point_after("backup_rows", records);
            }
        }
    }
    drop(export);
    for (name, path) in archives {
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read audit archive {}", path.display()))?;
        out.write(&Record::AuditArchive {
            file: name.clone(),
            bytes,
        })?;
    }
    let (buffered, summary) = out.finish(keystore)?;
    let file = buffered
        .into_inner()
        .map_err(|e| anyhow::anyhow!("writing the backup: {}", e.error()))?;
    file.sync_all().context("syncing the backup")?;
    Ok(Written {
        size: summary.size,
        sha256: summary.sha256,
        keys,
    })
}

/// Bytes a download reads at a time.
const DOWNLOAD_CHUNK: usize = 64 * 1024;

/// A backup file's bytes as a response body, read a chunk at a time off
/// the executor (a backup may be far larger than memory should hold).
pub(crate) fn file_body(file: std::fs::File) -> axum::body::Body {
    let chunks = futures_util::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let read = tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let mut buf = vec![0u8; DOWNLOAD_CHUNK];
            let n = file.read(&mut buf)?;
            buf.truncate(n);
            Ok::<_, std::io::Error>((buf, file))
        })
        .await;
        match read {
            Ok(Ok((buf, _))) if buf.is_empty() => None,
            Ok(Ok((buf, file))) => Some((Ok(axum::body::Bytes::from(buf)), Some(file))),
            Ok(Err(e)) => Some((Err(e), None)),
            Err(e) => Some((Err(std::io::Error::other(e)), None)),
        }
    });
    axum::body::Body::from_stream(chunks)
}

/// `Content-Disposition` for a download named `name`: the names keyhold
/// gives files and custodians have no quote or control character, but a
/// header is no place to trust that.
pub(crate) fn attachment(name: &str) -> String {
    let safe: String = name
        .chars()
        .filter(|c| c.is_ascii_graphic() && !matches!(c, '"' | '\\' | '/'))
        .collect();
    format!("attachment; filename=\"{safe}\"")
}

pub(crate) fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

pub(crate) fn create_private_file(path: &Path) -> anyhow::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))
}

pub(crate) fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync {}", dir.display()))
}

/// Writes `bytes` to a new private file, synced, under a temporary name
/// first (a file with its final name is whole).
pub(crate) fn write_private_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().context("a file path has no directory")?;
    create_private_dir(dir)?;
    let name = path
        .file_name()
        .context("a file path has no name")?
        .to_string_lossy();
    let temp = dir.join(format!(".{name}.partial"));
    let _ = std::fs::remove_file(&temp);
    let mut file = create_private_file(&temp)?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", temp.display()))?;
    std::fs::rename(&temp, path).with_context(|| format!("cannot name {}", path.display()))?;
    sync_dir(dir)
}
