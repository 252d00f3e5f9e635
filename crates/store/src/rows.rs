//! Rows as the database holds them, and their conversion to and from the
//! domain. Independent of the backend: every column is text, an integer, a
//! boolean or bytes, and everything read back goes through the core's parsers,
//! so a row edited behind keyhold's back is reported as corrupt, not trusted.

use keyhold_core::StoreError;
use keyhold_core::approval::{ApprovalRequest, ApprovalStatus, OperationClass, Quorum, Vote};
use keyhold_core::audit::AuditEntry;
use keyhold_core::backup::{AuditArchive, BackupRecord, BackupStatus, BackupTrigger};
use keyhold_core::clock::{Timestamp, format_timestamp, parse_timestamp};
use keyhold_core::cloud::aws::{Alias, Description, KeyMaterialId, KeyPolicy, KmsKeyId, Region};
use keyhold_core::cluster::{Lease, NodeRecord, NodeRole};
use keyhold_core::credential::{
    AccessKeyId, CloudService, Credential, CredentialKind, Endpoint, RoleArn,
};
use keyhold_core::drift::{DriftCheck, DriftKind, Finding, Repair};
use keyhold_core::group::{
    AtRotationLimit, AwsProperties, GroupInfo, KeyGroup, KeySpec, RotationStrategy,
};
use keyhold_core::identity::{Identity, Role, Session, SessionIdentity};
use keyhold_core::interval::Interval;
use keyhold_core::job::{Initiator, Job, JobKind, JobMessage, JobProgress, JobStatus};
use keyhold_core::key::{CheckDigits, Key, KeyState, MaterialState};
use keyhold_core::names::{CredentialName, GroupName, IdentityName, NodeId};
use keyhold_core::settings::Settings;
use keyhold_core::xks::{
    AuthorizationRule, MtlsRule, PathPrefix, XksAccessKeyId, XksCredential, XksKey, XksKeyUsage,
    XksStore, XksStoreName, parse_description, parse_quota,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::corrupt;

/// A row SQLite's in-place readers build (`sqlite::InPlaceReaders`) from
/// the row their statement stands on.
pub(crate) trait InPlaceRow: Sized {
    fn in_place(row: &rusqlite::Row<'_>) -> Result<Self, StoreError>;
}

/// The column `name` of a row read in place, as `T`: a missing column or a
/// value of another type is reported as corrupt, as sqlx's read reports it.
pub(crate) fn in_place_column<T: rusqlite::types::FromSql>(
    row: &rusqlite::Row<'_>,
    table: &str,
    name: &str,
) -> Result<T, StoreError> {
    row.get(name).map_err(|e| corrupt(table, name, e))
}

/// Defines a row read both ways, from one field list: sqlx's `FromRow`
/// and [`InPlaceRow`], each field from the column of its name in `$table`.
macro_rules! read_row {
    ($(#[$meta:meta])* $vis:vis struct $name:ident in $table:literal {
        $($field:ident: $ty:ty),+ $(,)?
    }) => {
        $(#[$meta])*
        #[derive(sqlx::FromRow)]
        $vis struct $name {
            $($field: $ty),+
        }

        impl $crate::rows::InPlaceRow for $name {
            fn in_place(
                row: &::rusqlite::Row<'_>,
            ) -> Result<Self, ::keyhold_core::StoreError> {
                Ok(Self {
                    $($field: $crate::rows::in_place_column(row, $table, stringify!($field))?),+
                })
            }
        }
    };
}
pub(crate) use read_row;

/// The kinds of credential rows. Migration 0003's CHECK names them too.
pub(crate) const ACCESS_KEY_KIND: &str = CredentialKind::ACCESS_KEY;
pub(crate) const DEFAULT_CHAIN_KIND: &str = CredentialKind::DEFAULT_CHAIN;

pub(crate) fn ts(t: &Timestamp) -> String {
    format_timestamp(t)
}

pub(crate) fn opt_ts(t: Option<&Timestamp>) -> Option<String> {
    t.map(format_timestamp)
}

fn read_ts(table: &str, column: &str, raw: &str) -> Result<Timestamp, StoreError> {
    parse_timestamp(raw).ok_or_else(|| corrupt(table, column, "not a timestamp"))
}

fn read_opt_ts(
    table: &str,
    column: &str,
    raw: Option<&str>,
) -> Result<Option<Timestamp>, StoreError> {
    raw.map(|r| read_ts(table, column, r)).transpose()
}

fn read_uuid(table: &str, column: &str, raw: &str) -> Result<uuid::Uuid, StoreError> {
    uuid::Uuid::try_parse(raw).map_err(|_| corrupt(table, column, "not a UUID"))
}

/// Parses a column with a core parser, naming the column when it refuses.
fn read<T, E: std::fmt::Display>(
    table: &str,
    column: &str,
    parsed: Result<T, E>,
) -> Result<T, StoreError> {
    parsed.map_err(|e| corrupt(table, column, e))
}

pub(crate) fn read_u32(table: &str, column: &str, raw: i64) -> Result<u32, StoreError> {
    u32::try_from(raw).map_err(|_| corrupt(table, column, format!("{raw} is out of range")))
}

pub(crate) fn hash32(table: &str, column: &str, raw: &[u8]) -> Result<[u8; 32], StoreError> {
    <[u8; 32]>::try_from(raw)
        .map_err(|_| corrupt(table, column, format!("{} bytes, not 32", raw.len())))
}

// Identities

#[derive(sqlx::FromRow)]
pub(crate) struct IdentityRow {
    name: String,
    role: String,
    password_hash: String,
    must_change_password: bool,
    failed_logins: i64,
    locked_until: Option<String>,
    created_at: String,
}

impl TryFrom<IdentityRow> for Identity {
    type Error = StoreError;
    fn try_from(row: IdentityRow) -> Result<Self, StoreError> {
        const T: &str = "identities";
        Ok(Self {
            name: read(T, "name", IdentityName::parse(&row.name))?,
            role: read(T, "role", Role::parse(&row.role))?,
            password_hash: row.password_hash,
            must_change_password: row.must_change_password,
            failed_logins: read_u32(T, "failed_logins", row.failed_logins)?,
            locked_until: read_opt_ts(T, "locked_until", row.locked_until.as_deref())?,
            created_at: read_ts(T, "created_at", &row.created_at)?,
        })
    }
}

// Sessions

/// One element of `sessions.identities`.
#[derive(Serialize, Deserialize)]
struct SessionIdentityJson {
    name: IdentityName,
    role: Role,
}

pub(crate) fn session_identities_json(session: &Session) -> Result<String, StoreError> {
    let items: Vec<SessionIdentityJson> = session
        .identities
        .iter()
        .map(|i| SessionIdentityJson {
            name: i.name.clone(),
            role: i.role,
        })
        .collect();
    serde_json::to_string(&items)
        .map_err(|e| StoreError::Corrupt(format!("session identities: {e}")))
}

read_row! {
    pub(crate) struct SessionRow in "sessions" {
        id: String,
        identities: String,
        created_at: String,
        last_seen: String,
    }
}

impl SessionRow {
    pub(crate) fn includes(&self, name: &IdentityName) -> Result<bool, StoreError> {
        Ok(parse_session_identities(&self.identities)?
            .iter()
            .any(|i| &i.name == name))
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }
}

fn parse_session_identities(raw: &str) -> Result<Vec<SessionIdentity>, StoreError> {
    let items: Vec<SessionIdentityJson> =
        serde_json::from_str(raw).map_err(|e| corrupt("sessions", "identities", e))?;
    Ok(items
        .into_iter()
        .map(|i| SessionIdentity {
            name: i.name,
            role: i.role,
        })
        .collect())
}

impl TryFrom<SessionRow> for Session {
    type Error = StoreError;
    fn try_from(row: SessionRow) -> Result<Self, StoreError> {
        const T: &str = "sessions";
        Ok(Self {
            identities: parse_session_identities(&row.identities)?,
            created_at: read_ts(T, "created_at", &row.created_at)?,
            last_seen: read_ts(T, "last_seen", &row.last_seen)?,
            id: row.id,
            // A grant is never stored: only the session keyhold makes to run
            // an approved request carries one.
            grant: None,
        })
    }
}

// Credentials

/// A credential's columns, flattened from its kind: the columns another kind
/// uses are NULL.
pub(crate) struct CredentialColumns<'a> {
    pub kind: &'static str,
    pub access_key_id: Option<&'a str>,
    pub sealed_secret: Option<&'a [u8]>,
    pub role_arn: Option<&'a str>,
}

pub(crate) fn credential_columns(credential: &Credential) -> CredentialColumns<'_> {
    match &credential.kind {
        CredentialKind::AccessKey {
            access_key_id,
            sealed_secret,
        } => CredentialColumns {
            kind: ACCESS_KEY_KIND,
            access_key_id: Some(access_key_id.as_str()),
            sealed_secret: Some(sealed_secret),
            role_arn: None,
        },
        CredentialKind::DefaultChain { role_arn } => CredentialColumns {
            kind: DEFAULT_CHAIN_KIND,
            access_key_id: None,
            sealed_secret: None,
            role_arn: role_arn.as_ref().map(RoleArn::as_str),
        },
    }
}

read_row! {
    pub(crate) struct CredentialRow in "credentials" {
        id: String,
        name: String,
        service: String,
        kind: String,
        access_key_id: Option<String>,
        sealed_secret: Option<Vec<u8>>,
        role_arn: Option<String>,
        endpoint: Option<String>,
        created_at: String,
    }
}

impl TryFrom<CredentialRow> for Credential {
    type Error = StoreError;
    fn try_from(row: CredentialRow) -> Result<Self, StoreError> {
        const T: &str = "credentials";
        // A row must be whole for its kind and carry nothing of another's.
        let kind = match (
            row.kind.as_str(),
            row.access_key_id,
            row.sealed_secret,
            row.role_arn,
        ) {
            (ACCESS_KEY_KIND, Some(access_key_id), Some(sealed_secret), None) => {
                CredentialKind::AccessKey {
                    access_key_id: read(T, "access_key_id", AccessKeyId::parse(&access_key_id))?,
                    sealed_secret,
                }
            }
            (ACCESS_KEY_KIND, access_key_id, sealed_secret, _) => {
                let column = match (access_key_id, sealed_secret) {
                    (None, _) => "access_key_id",
                    (_, None) => "sealed_secret",
                    _ => "role_arn",
                };
                return Err(corrupt(
                    T,
                    column,
                    "an access key credential needs an access key id and a sealed secret, and no role",
                ));
            }
            (DEFAULT_CHAIN_KIND, None, None, role_arn) => CredentialKind::DefaultChain {
                role_arn: read_opt(T, "role_arn", role_arn.as_deref(), RoleArn::parse)?,
            },
            (DEFAULT_CHAIN_KIND, access_key_id, _, _) => {
                let column = if access_key_id.is_some() {
                    "access_key_id"
                } else {
                    "sealed_secret"
                };
                return Err(corrupt(
                    T,
                    column,
                    "a default credential chain credential holds no access key or secret",
                ));
            }
            (other, ..) => return Err(corrupt(T, "kind", format!("unknown kind '{other}'"))),
        };
        Ok(Self {
            id: read_uuid(T, "id", &row.id)?,
            name: read(T, "name", CredentialName::parse(&row.name))?,
            service: read(T, "service", CloudService::parse(&row.service))?,
            kind,
            endpoint: row
                .endpoint
                .as_deref()
                .map(|e| read(T, "endpoint", Endpoint::parse(e)))
                .transpose()?,
            created_at: read_ts(T, "created_at", &row.created_at)?,
        })
    }
}

// Key groups

read_row! {
    pub(crate) struct GroupRow in "key_groups" {
        id: String,
        name: String,
        service: String,
        credential_name: String,
        rotate_every: Option<String>,
        valid_for: Option<String>,
        info_owner: String,
        info_notes: String,
        alias: String,
        description: String,
        region: String,
        active_key_id: Option<String>,
        policy: Option<String>,
        disable_after_rotate: bool,
        created_at: String,
        updated_at: String,
        next_rotation_at: Option<String>,
        rotation_strategy: String,
        at_rotation_limit: String,
        self_heal: bool,
    }
}

fn read_opt<T, E: std::fmt::Display>(
    table: &str,
    column: &str,
    raw: Option<&str>,
    parse: impl Fn(&str) -> Result<T, E>,
) -> Result<Option<T>, StoreError> {
    raw.map(|r| read(table, column, parse(r))).transpose()
}

impl TryFrom<GroupRow> for KeyGroup {
    type Error = StoreError;
    fn try_from(row: GroupRow) -> Result<Self, StoreError> {
        const T: &str = "key_groups";
        Ok(Self {
            id: read_uuid(T, "id", &row.id)?,
            name: read(T, "name", GroupName::parse(&row.name))?,
            service: read(T, "service", CloudService::parse(&row.service))?,
            credential: read(
                T,
                "credential_name",
                CredentialName::parse(&row.credential_name),
            )?,
            spec: KeySpec,
            rotate_every: read_opt(
                T,
                "rotate_every",
                row.rotate_every.as_deref(),
                Interval::parse,
            )?,
            valid_for: read_opt(T, "valid_for", row.valid_for.as_deref(), Interval::parse)?,
            info: read(
                T,
                "info_owner",
                GroupInfo::parse(&row.info_owner, &row.info_notes),
            )?,
            aws: AwsProperties {
                alias: read(T, "alias", Alias::parse(&row.alias))?,
                description: read(T, "description", Description::parse(&row.description))?,
                region: read(T, "region", Region::parse(&row.region))?,
                active_key_id: read_opt(
                    T,
                    "active_key_id",
                    row.active_key_id.as_deref(),
                    KmsKeyId::parse,
                )?,
                policy: read_opt(T, "policy", row.policy.as_deref(), KeyPolicy::parse)?,
                disable_after_rotate: row.disable_after_rotate,
                rotation: read(
                    T,
                    "rotation_strategy",
                    RotationStrategy::parse(&row.rotation_strategy),
                )?,
                at_rotation_limit: read(
                    T,
                    "at_rotation_limit",
                    AtRotationLimit::parse(&row.at_rotation_limit),
                )?,
                self_heal: row.self_heal,
            },
            created_at: read_ts(T, "created_at", &row.created_at)?,
            updated_at: read_ts(T, "updated_at", &row.updated_at)?,
            next_rotation_at: read_opt_ts(T, "next_rotation_at", row.next_rotation_at.as_deref())?,
        })
    }
}

// Keys

/// The columns of a key's row, in the order [`KeyRow::in_place`] reads them.
pub(crate) const KEY_COLUMNS: &str = "id, group_name, version, kms_key_id, check_digits, \
     valid_from, valid_to, state, keystore_handle, created_at, kms_material_id, material_state, \
     rotated_in";

/// A key's row, borrowed from the database's row: the text columns are
/// parsed where they lie instead of being copied into a `String` each first
/// (a page of keys reads a thousand of them).
#[derive(sqlx::FromRow)]
pub(crate) struct KeyRow<'r> {
    id: &'r str,
    group_name: &'r str,
    version: i64,
    kms_key_id: Option<&'r str>,
    check_digits: &'r str,
    valid_from: &'r str,
    valid_to: Option<&'r str>,
    state: &'r str,
    keystore_handle: &'r [u8],
    created_at: &'r str,
    kms_material_id: Option<&'r str>,
    material_state: &'r str,
    rotated_in: bool,
}

impl<'r> KeyRow<'r> {
    /// The row SQLite's statement stands on, its columns [`KEY_COLUMNS`]: by
    /// position, and borrowed from SQLite's own buffers until the next step.
    pub(crate) fn in_place(row: &'r rusqlite::Row<'_>) -> Result<Self, StoreError> {
        const T: &str = "keys";
        let column = |index: usize, name: &str| {
            row.get_ref(index)
                .map_err(|e| corrupt(T, name, format!("not in the row: {e}")))
        };
        let text = |index, name| {
            column(index, name)?
                .as_str()
                .map_err(|e| corrupt(T, name, e))
        };
        let opt_text = |index, name| {
            column(index, name)?
                .as_str_or_null()
                .map_err(|e| corrupt(T, name, e))
        };
        let integer = |index, name| {
            column(index, name)?
                .as_i64()
                .map_err(|e| corrupt(T, name, e))
        };
        Ok(Self {
            id: text(0, "id")?,
            group_name: text(1, "group_name")?,
            version: integer(2, "version")?,
            kms_key_id: opt_text(3, "kms_key_id")?,
            check_digits: text(4, "check_digits")?,
            valid_from: text(5, "valid_from")?,
            valid_to: opt_text(6, "valid_to")?,
            state: text(7, "state")?,
            keystore_handle: column(8, "keystore_handle")?
                .as_blob()
                .map_err(|e| corrupt(T, "keystore_handle", e))?,
            created_at: text(9, "created_at")?,
            kms_material_id: opt_text(10, "kms_material_id")?,
            material_state: text(11, "material_state")?,
            // As sqlx reads SQLite's booleans (the key's other reads).
            rotated_in: integer(12, "rotated_in")? != 0,
        })
    }
}

impl TryFrom<KeyRow<'_>> for Key {
    type Error = StoreError;
    fn try_from(row: KeyRow<'_>) -> Result<Self, StoreError> {
        const T: &str = "keys";
        Ok(Self {
            id: read_uuid(T, "id", row.id)?,
            group: read(T, "group_name", GroupName::parse(row.group_name))?,
            version: read_u32(T, "version", row.version)?,
            kms_key_id: read_opt(T, "kms_key_id", row.kms_key_id, KmsKeyId::parse)?,
            check_digits: read(T, "check_digits", CheckDigits::parse(row.check_digits))?,
            valid_from: read_ts(T, "valid_from", row.valid_from)?,
            valid_to: read_opt_ts(T, "valid_to", row.valid_to)?,
            state: KeyState::parse(row.state)
                .ok_or_else(|| corrupt(T, "state", format!("unknown state '{}'", row.state)))?,
            kms_material_id: read_opt(
                T,
                "kms_material_id",
                row.kms_material_id,
                KeyMaterialId::parse,
            )?,
            material_state: MaterialState::parse(row.material_state).ok_or_else(|| {
                corrupt(
                    T,
                    "material_state",
                    format!("unknown material state '{}'", row.material_state),
                )
            })?,
            rotated_in: row.rotated_in,
            keystore_handle: row.keystore_handle.to_vec(),
            created_at: read_ts(T, "created_at", row.created_at)?,
        })
    }
}

// Settings

pub(crate) fn settings_json(settings: &Settings) -> Result<String, StoreError> {
    serde_json::to_string(settings).map_err(|e| StoreError::Corrupt(format!("settings: {e}")))
}

/// Reads saved settings over the defaults, so that a setting added in a later
/// release takes its default instead of making older rows unreadable.
pub(crate) fn parse_settings(raw: &str) -> Result<Settings, StoreError> {
    parse_over_default("settings", "body", raw)
}

/// Reads a JSON object over `T::default()`: fields missing from `raw` (added
/// by a later release) take their defaults instead of making the row unreadable.
fn parse_over_default<T>(table: &str, column: &str, raw: &str) -> Result<T, StoreError>
where
    T: Serialize + DeserializeOwned + Default,
{
    let bad = |e: serde_json::Error| corrupt(table, column, e);
    let saved: serde_json::Value = serde_json::from_str(raw).map_err(bad)?;
    let mut merged = serde_json::to_value(T::default()).map_err(bad)?;
    match (&mut merged, saved) {
        (serde_json::Value::Object(base), serde_json::Value::Object(saved)) => base.extend(saved),
        _ => return Err(corrupt(table, column, "not a JSON object")),
    }
    serde_json::from_value(merged).map_err(bad)
}

// Jobs

pub(crate) fn job_spec_json(kind: &JobKind) -> Result<String, StoreError> {
    serde_json::to_string(kind).map_err(|e| StoreError::Corrupt(format!("job spec: {e}")))
}

pub(crate) fn job_progress_json(progress: &JobProgress) -> Result<String, StoreError> {
    serde_json::to_string(progress).map_err(|e| StoreError::Corrupt(format!("job progress: {e}")))
}

read_row! {
    pub(crate) struct JobRow in "jobs" {
        id: String,
        kind: String,
        spec: String,
        status: String,
        users: String,
        initiator: String,
        created_at: String,
        started_at: Option<String>,
        finished_at: Option<String>,
        progress: String,
        error: Option<String>,
        attempts: i64,
    }
}

impl TryFrom<JobRow> for Job {
    type Error = StoreError;
    fn try_from(row: JobRow) -> Result<Self, StoreError> {
        const T: &str = "jobs";
        let kind: JobKind = serde_json::from_str(&row.spec).map_err(|e| corrupt(T, "spec", e))?;
        if kind.label() != row.kind {
            return Err(corrupt(
                T,
                "kind",
                format!("'{}' but spec is a {} job", row.kind, kind.label()),
            ));
        }
        Ok(Self {
            id: read_uuid(T, "id", &row.id)?,
            kind,
            status: JobStatus::parse(&row.status)
                .ok_or_else(|| corrupt(T, "status", format!("unknown status '{}'", row.status)))?,
            initiator: Initiator::parse(&row.initiator, row.users).ok_or_else(|| {
                corrupt(
                    T,
                    "initiator",
                    format!("unknown initiator '{}'", row.initiator),
                )
            })?,
            created_at: read_ts(T, "created_at", &row.created_at)?,
            started_at: read_opt_ts(T, "started_at", row.started_at.as_deref())?,
            finished_at: read_opt_ts(T, "finished_at", row.finished_at.as_deref())?,
            // Over the defaults: a job interrupted by an upgrade resumes with
            // progress fields added since it started.
            progress: parse_over_default(T, "progress", &row.progress)?,
            error: row.error,
            attempts: read_u32(T, "attempts", row.attempts)?,
        })
    }
}

read_row! {
    pub(crate) struct JobMessageRow in "job_messages" {
        job_id: String,
        time: String,
        text: String,
    }
}

impl TryFrom<JobMessageRow> for JobMessage {
    type Error = StoreError;
    fn try_from(row: JobMessageRow) -> Result<Self, StoreError> {
        const T: &str = "job_messages";
        Ok(Self {
            job_id: read_uuid(T, "job_id", &row.job_id)?,
            time: read_ts(T, "time", &row.time)?,
            text: row.text,
        })
    }
}

// Approvals

/// `requested_by` as stored: the identities' names, comma-separated (names
/// hold no comma).
pub(crate) fn requested_by_text(request: &ApprovalRequest) -> String {
    request
        .requested_by
        .iter()
        .map(IdentityName::as_str)
        .collect::<Vec<_>>()
        .join(",")
}

pub(crate) fn approval_operation_json(request: &ApprovalRequest) -> Result<String, StoreError> {
    serde_json::to_string(&request.operation)
        .map_err(|e| StoreError::Corrupt(format!("approval operation: {e}")))
}

/// A request's row, without its votes (rows of their own).
#[derive(sqlx::FromRow)]
pub(crate) struct ApprovalRow {
    id: String,
    class: String,
    operation: String,
    params_hash: String,
    summary: String,
    requested_by: String,
    requested_at: String,
    expires_at: String,
    approvals_needed: i64,
    approver_role: String,
    expires_after_hours: i64,
    status: String,
    decided_at: Option<String>,
    outcome: Option<String>,
    /// `sealed_result IS NOT NULL`: the sealed bytes are read only by the
    /// requester's one collection.
    has_sealed_result: bool,
}

pub(crate) fn read_approval_status(
    table: &str,
    column: &str,
    raw: &str,
) -> Result<ApprovalStatus, StoreError> {
    ApprovalStatus::parse(raw)
        .ok_or_else(|| corrupt(table, column, format!("unknown status '{raw}'")))
}

impl ApprovalRow {
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// The request, with `votes` (its own, oldest first).
    pub(crate) fn into_request(self, votes: Vec<Vote>) -> Result<ApprovalRequest, StoreError> {
        const T: &str = "approval_requests";
        let approvals = u8::try_from(self.approvals_needed).map_err(|_| {
            corrupt(
                T,
                "approvals_needed",
                format!("{} is out of range", self.approvals_needed),
            )
        })?;
        let quorum = read(
            T,
            "approvals_needed",
            Quorum::new(
                approvals,
                read(T, "approver_role", Role::parse(&self.approver_role))?,
                read_u32(T, "expires_after_hours", self.expires_after_hours)?,
            ),
        )?;
        let requested_by = self
            .requested_by
            .split(',')
            .map(|name| read(T, "requested_by", IdentityName::parse(name)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ApprovalRequest {
            id: read_uuid(T, "id", &self.id)?,
            class: read(T, "class", OperationClass::parse(&self.class))?,
            operation: serde_json::from_str(&self.operation)
                .map_err(|e| corrupt(T, "operation", e))?,
            params_hash: self.params_hash,
            summary: self.summary,
            requested_by,
            requested_at: read_ts(T, "requested_at", &self.requested_at)?,
            expires_at: read_ts(T, "expires_at", &self.expires_at)?,
            quorum,
            status: read_approval_status(T, "status", &self.status)?,
            votes,
            decided_at: read_opt_ts(T, "decided_at", self.decided_at.as_deref())?,
            outcome: self.outcome,
            has_sealed_result: self.has_sealed_result,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct VoteRow {
    request_id: String,
    identity: String,
    role: String,
    approve: bool,
    voted_at: String,
    reason: Option<String>,
}

impl VoteRow {
    pub(crate) fn request_id(&self) -> &str {
        &self.request_id
    }
}

impl TryFrom<VoteRow> for Vote {
    type Error = StoreError;
    fn try_from(row: VoteRow) -> Result<Self, StoreError> {
        const T: &str = "approval_votes";
        Ok(Self {
            identity: read(T, "identity", IdentityName::parse(&row.identity))?,
            role: read(T, "role", Role::parse(&row.role))?,
            approve: row.approve,
            at: read_ts(T, "voted_at", &row.voted_at)?,
            reason: row.reason,
        })
    }
}

// Audit log

#[derive(sqlx::FromRow)]
pub(crate) struct AuditRow {
    seq: i64,
    time: String,
    users: String,
    summary: String,
    details: String,
    archived: bool,
    prev_hash: Vec<u8>,
    hash: Vec<u8>,
    mac: Vec<u8>,
}

impl TryFrom<AuditRow> for AuditEntry {
    type Error = StoreError;
    fn try_from(row: AuditRow) -> Result<Self, StoreError> {
        const T: &str = "audit_log";
        // Text columns are returned exactly as stored: verification, not
        // decoding, is what judges an edited entry.
        Ok(Self {
            seq: row.seq,
            time: row.time,
            users: row.users,
            summary: row.summary,
            details: row.details,
            archived: row.archived,
            prev_hash: hash32(T, "prev_hash", &row.prev_hash)?,
            hash: hash32(T, "hash", &row.hash)?,
            mac: hash32(T, "mac", &row.mac)?,
        })
    }
}

// Drift

pub(crate) fn repair_json(repair: Option<&Repair>) -> Result<Option<String>, StoreError> {
    repair
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("drift repair: {e}")))
}

#[derive(sqlx::FromRow)]
pub(crate) struct FindingRow {
    id: String,
    group_name: String,
    kind: String,
    subject: String,
    key_id: Option<String>,
    kms_key_id: Option<String>,
    detail: String,
    repair: Option<String>,
    first_seen: String,
    last_seen: String,
    cleared_at: Option<String>,
}

impl TryFrom<FindingRow> for Finding {
    type Error = StoreError;
    fn try_from(row: FindingRow) -> Result<Self, StoreError> {
        const T: &str = "drift_findings";
        Ok(Self {
            id: read_uuid(T, "id", &row.id)?,
            group: read(T, "group_name", GroupName::parse(&row.group_name))?,
            kind: read_drift_kind(T, "kind", &row.kind)?,
            subject: row.subject,
            key_id: row
                .key_id
                .as_deref()
                .map(|raw| read_uuid(T, "key_id", raw))
                .transpose()?,
            kms_key_id: read_opt(T, "kms_key_id", row.kms_key_id.as_deref(), KmsKeyId::parse)?,
            detail: row.detail,
            repair: row
                .repair
                .as_deref()
                .map(|raw| serde_json::from_str::<Repair>(raw).map_err(|e| corrupt(T, "repair", e)))
                .transpose()?,
            first_seen: read_ts(T, "first_seen", &row.first_seen)?,
            last_seen: read_ts(T, "last_seen", &row.last_seen)?,
            cleared_at: read_opt_ts(T, "cleared_at", row.cleared_at.as_deref())?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct DriftCheckRow {
    group_name: String,
    checked_at: String,
    job_id: String,
    open_findings: i64,
}

impl TryFrom<DriftCheckRow> for DriftCheck {
    type Error = StoreError;
    fn try_from(row: DriftCheckRow) -> Result<Self, StoreError> {
        const T: &str = "drift_checks";
        Ok(Self {
            group: read(T, "group_name", GroupName::parse(&row.group_name))?,
            checked_at: read_ts(T, "checked_at", &row.checked_at)?,
            job_id: read_uuid(T, "job_id", &row.job_id)?,
            open: read_u32(T, "open_findings", row.open_findings)?,
        })
    }
}

/// A kind as stored, read back.
pub(crate) fn read_drift_kind(
    table: &str,
    column: &str,
    raw: &str,
) -> Result<DriftKind, StoreError> {
    DriftKind::parse(raw).ok_or_else(|| corrupt(table, column, format!("unknown kind '{raw}'")))
}

// The cluster

#[derive(sqlx::FromRow)]
pub(crate) struct NodeRow {
    id: String,
    started_at: String,
    last_seen: String,
    role: String,
}

impl TryFrom<NodeRow> for NodeRecord {
    type Error = StoreError;
    fn try_from(row: NodeRow) -> Result<Self, StoreError> {
        const T: &str = "nodes";
        Ok(Self {
            id: read(T, "id", NodeId::parse(&row.id))?,
            started_at: read_ts(T, "started_at", &row.started_at)?,
            last_seen: read_ts(T, "last_seen", &row.last_seen)?,
            role: NodeRole::parse(&row.role).ok_or_else(|| corrupt(T, "role", "unknown role"))?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct LeaseRow {
    name: String,
    holder: String,
    token: i64,
    expires_at: String,
}

impl TryFrom<LeaseRow> for Lease {
    type Error = StoreError;
    fn try_from(row: LeaseRow) -> Result<Self, StoreError> {
        const T: &str = "leases";
        Ok(Self {
            name: row.name,
            holder: read(T, "holder", NodeId::parse(&row.holder))?,
            token: row.token,
            expires_at: read_ts(T, "expires_at", &row.expires_at)?,
        })
    }
}

// Backups and audit archives

/// A list of texts (custodian names, share files) as one JSON column.
pub(crate) fn text_list_json(items: &[String]) -> Result<String, StoreError> {
    serde_json::to_string(items).map_err(|e| StoreError::Corrupt(format!("text list: {e}")))
}

fn read_text_list(table: &str, column: &str, raw: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(raw).map_err(|e| corrupt(table, column, e))
}

/// A count or size as the database keeps it (a signed 64-bit integer).
pub(crate) fn count_column(what: &str, value: Option<u64>) -> Result<Option<i64>, StoreError> {
    value
        .map(|v| {
            i64::try_from(v).map_err(|_| {
                StoreError::Corrupt(format!("{what} {v} is beyond what the database can hold"))
            })
        })
        .transpose()
}

fn read_count(table: &str, column: &str, raw: Option<i64>) -> Result<Option<u64>, StoreError> {
    raw.map(|r| u64::try_from(r).map_err(|_| corrupt(table, column, format!("{r} is negative"))))
        .transpose()
}

#[derive(sqlx::FromRow)]
pub(crate) struct BackupRow {
    id: String,
    trigger_kind: String,
    initiated_by: String,
    status: String,
    started_at: String,
    finished_at: Option<String>,
    file: String,
    size_bytes: Option<i64>,
    sha256: Option<String>,
    key_count: Option<i64>,
    threshold: i64,
    custodians: String,
    shares: String,
    error: Option<String>,
    node: String,
}

impl TryFrom<BackupRow> for BackupRecord {
    type Error = StoreError;
    fn try_from(row: BackupRow) -> Result<Self, StoreError> {
        const T: &str = "backups";
        Ok(Self {
            id: read_uuid(T, "id", &row.id)?,
            trigger: BackupTrigger::parse(&row.trigger_kind)
                .ok_or_else(|| corrupt(T, "trigger_kind", "unknown trigger"))?,
            initiated_by: row.initiated_by,
            status: BackupStatus::parse(&row.status)
                .ok_or_else(|| corrupt(T, "status", "unknown status"))?,
            started_at: read_ts(T, "started_at", &row.started_at)?,
            finished_at: read_opt_ts(T, "finished_at", row.finished_at.as_deref())?,
            file: row.file,
            size: read_count(T, "size_bytes", row.size_bytes)?,
            sha256: row.sha256,
            keys: read_count(T, "key_count", row.key_count)?,
            threshold: u8::try_from(row.threshold).map_err(|_| {
                corrupt(T, "threshold", format!("{} is out of range", row.threshold))
            })?,
            custodians: read_text_list(T, "custodians", &row.custodians)?,
            shares: read_text_list(T, "shares", &row.shares)?,
            error: row.error,
            node: row.node,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct AuditArchiveRow {
    id: String,
    file: String,
    first_seq: i64,
    last_seq: i64,
    created_at: String,
    sha256: String,
}

impl TryFrom<AuditArchiveRow> for AuditArchive {
    type Error = StoreError;
    fn try_from(row: AuditArchiveRow) -> Result<Self, StoreError> {
        const T: &str = "audit_archives";
        Ok(Self {
            id: read_uuid(T, "id", &row.id)?,
            file: row.file,
            first_seq: row.first_seq,
            last_seq: row.last_seq,
            created_at: read_ts(T, "created_at", &row.created_at)?,
            sha256: row.sha256,
        })
    }
}

// External key stores (XKS)

/// A key's authorization rule as stored: its JSON.
pub(crate) fn xks_rule_json(rule: &AuthorizationRule) -> Result<String, StoreError> {
    serde_json::to_string(rule).map_err(|e| StoreError::Corrupt(format!("xks key rule: {e}")))
}

/// A store's mTLS rule as its two columns, both NULL without one.
pub(crate) fn mtls_columns(mtls: Option<&MtlsRule>) -> (Option<&str>, Option<&str>) {
    match mtls {
        Some(rule) => (Some(rule.subject.as_str()), Some(rule.ca_pem.as_str())),
        None => (None, None),
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct XksStoreRow {
    id: String,
    name: String,
    path_prefix: String,
    quota_per_second: i64,
    mtls_subject: Option<String>,
    mtls_ca_pem: Option<String>,
    created_at: String,
    updated_at: String,
}

impl TryFrom<XksStoreRow> for XksStore {
    type Error = StoreError;
    fn try_from(row: XksStoreRow) -> Result<Self, StoreError> {
        const T: &str = "xks_stores";
        let mtls = match (row.mtls_subject, row.mtls_ca_pem) {
            (Some(subject), Some(ca_pem)) => {
                Some(read(T, "mtls_subject", MtlsRule::new(&subject, &ca_pem))?)
            }
            (None, None) => None,
            (subject, _) => {
                let column = if subject.is_some() {
                    "mtls_ca_pem"
                } else {
                    "mtls_subject"
                };
                return Err(corrupt(
                    T,
                    column,
                    "an mTLS rule needs both a subject and a CA, or neither",
                ));
            }
        };
        Ok(Self {
            id: read_uuid(T, "id", &row.id)?,
            name: read(T, "name", XksStoreName::parse(&row.name))?,
            path_prefix: read(T, "path_prefix", PathPrefix::parse(&row.path_prefix))?,
            quota_per_second: read(
                T,
                "quota_per_second",
                parse_quota(read_u32(T, "quota_per_second", row.quota_per_second)?),
            )?,
            mtls,
            created_at: read_ts(T, "created_at", &row.created_at)?,
            updated_at: read_ts(T, "updated_at", &row.updated_at)?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct XksCredentialRow {
    id: String,
    store_id: String,
    access_key_id: String,
    sealed_secret: Vec<u8>,
    created_at: String,
}

impl TryFrom<XksCredentialRow> for XksCredential {
    type Error = StoreError;
    fn try_from(row: XksCredentialRow) -> Result<Self, StoreError> {
        const T: &str = "xks_credentials";
        Ok(Self {
            id: read_uuid(T, "id", &row.id)?,
            store_id: read_uuid(T, "store_id", &row.store_id)?,
            access_key_id: read(
                T,
                "access_key_id",
                XksAccessKeyId::parse(&row.access_key_id),
            )?,
            sealed_secret: row.sealed_secret,
            created_at: read_ts(T, "created_at", &row.created_at)?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct XksKeyRow {
    id: String,
    store_id: String,
    description: String,
    usage: String,
    enabled: bool,
    rule: String,
    keystore_handle: Vec<u8>,
    check_digits: String,
    created_at: String,
    updated_at: String,
}

impl TryFrom<XksKeyRow> for XksKey {
    type Error = StoreError;
    fn try_from(row: XksKeyRow) -> Result<Self, StoreError> {
        const T: &str = "xks_keys";
        let rule: AuthorizationRule =
            serde_json::from_str(&row.rule).map_err(|e| corrupt(T, "rule", e))?;
        read(T, "rule", rule.check())?;
        Ok(Self {
            id: read_uuid(T, "id", &row.id)?,
            store_id: read_uuid(T, "store_id", &row.store_id)?,
            description: read(T, "description", parse_description(&row.description))?,
            usage: read(T, "usage", XksKeyUsage::parse(&row.usage))?,
            enabled: row.enabled,
            rule,
            handle: row.keystore_handle,
            check_digits: read(T, "check_digits", CheckDigits::parse(&row.check_digits))?,
            created_at: read_ts(T, "created_at", &row.created_at)?,
            updated_at: read_ts(T, "updated_at", &row.updated_at)?,
        })
    }
}
