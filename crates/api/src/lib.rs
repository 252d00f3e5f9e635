//! Bodies of keyhold's HTTP API (`/api/v1`), shared by the server and the CLI
//! so the two cannot drift apart. Timestamps are RFC 3339 strings in UTC.
//! Requests reject unknown fields, so a misspelt option is an error, not a no-op.

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

/// Every error answer: `{"error": {"code": "...", "message": "...", "field": "..."}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable machine-readable code (`invalid_input`, `not_found`, `dual_control_required`, …).
    pub code: String,
    /// What is wrong and how to fix it. Never contains a secret.
    pub message: String,
    /// The request field at fault, when one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

// ---- sessions and passwords ----

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub user: String,
    pub password: String,
}

impl fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginRequest")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordChangeRequest {
    pub user: String,
    pub current_password: String,
    pub new_password: String,
}

impl fmt::Debug for PasswordChangeRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordChangeRequest")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Serialize, Deserialize)]
pub struct SessionView {
    /// The bearer token, present only in the answer to a login that opened a
    /// new session. Send it as `Authorization: Bearer <token>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    pub identities: Vec<SessionIdentityView>,
    /// `Admin1,Admin2`: how audit entries name this session.
    pub users: String,
    pub created_at: String,
}

impl fmt::Debug for SessionView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionView")
            .field("users", &self.users)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionIdentityView {
    pub name: String,
    pub role: String,
}

// ---- identities ----

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IdentityView {
    pub name: String,
    pub role: String,
    pub must_change_password: bool,
    pub locked: bool,
    pub created_at: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateIdentityRequest {
    pub name: String,
    /// `administrator`, `key_officer` or `auditor`.
    pub role: String,
}

/// The answer to creating an identity: its one-time password, shown this once.
#[derive(Clone, Serialize, Deserialize)]
pub struct CreatedIdentity {
    pub name: String,
    pub role: String,
    pub password: String,
}

impl fmt::Debug for CreatedIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreatedIdentity")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

// ---- cloud credentials ----

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportCredentialRequest {
    pub name: String,
    /// `aws` (the default).
    #[serde(default)]
    pub service: Option<String>,
    /// The CSV file IAM offers for download, as text.
    pub csv: String,
    /// Endpoint override (VPC endpoint, test peer).
    #[serde(default)]
    pub endpoint: Option<String>,
}

impl fmt::Debug for ImportCredentialRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImportCredentialRequest")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A credential that holds no secret: the server's AWS default credential
/// chain, optionally used to assume an IAM role through STS.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddCredentialRequest {
    pub name: String,
    /// `aws` (the default).
    #[serde(default)]
    pub service: Option<String>,
    /// `default_chain` (the only kind added this way; access keys are imported).
    pub kind: String,
    /// The IAM role to assume, such as `arn:aws:iam::123456789012:role/keyhold`.
    #[serde(default)]
    pub role_arn: Option<String>,
    /// Endpoint override (VPC endpoint, test peer).
    #[serde(default)]
    pub endpoint: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CredentialView {
    pub name: String,
    pub service: String,
    /// `access_key` or `default_chain`.
    pub kind: String,
    /// What identifies the credential to AWS: the access key id, the role
    /// ARN, or `default credential chain`. Not secret.
    pub access_name: String,
    /// The IAM role assumed through STS (default-chain credentials only).
    pub role_arn: Option<String>,
    pub endpoint: Option<String>,
    pub created_at: String,
}

// ---- key groups ----

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateGroupRequest {
    pub name: String,
    pub credential: String,
    /// `aws` (the default and only choice).
    #[serde(default)]
    pub service: Option<String>,
    /// `AES` (default). Asymmetric types are refused for AWS.
    #[serde(default)]
    pub key_type: Option<String>,
    /// 256 (default and only choice for AWS).
    #[serde(default)]
    pub key_length: Option<u32>,
    /// `encrypt_decrypt` (default).
    #[serde(default)]
    pub usage: Option<String>,
    /// Rotation interval such as `30d`; absent means rotation off.
    #[serde(default)]
    pub rotate_every: Option<String>,
    /// Validity such as `1y`; absent means keys do not expire.
    #[serde(default)]
    pub valid_for: Option<String>,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub notes: Option<String>,
    pub alias: String,
    #[serde(default)]
    pub description: Option<String>,
    pub region: String,
    /// A placeholder KMS key (origin External) awaiting its first material.
    #[serde(default)]
    pub active_key_id: Option<String>,
    /// Key policy JSON text.
    #[serde(default)]
    pub policy: Option<String>,
    #[serde(default)]
    pub disable_after_rotate: Option<bool>,
    /// `new_key` (default: a new KMS key per rotation, the alias moved) or
    /// `new_material` (new material rotated into the same KMS key).
    #[serde(default)]
    pub rotation_strategy: Option<String>,
    /// For `new_material`, once AWS's on-demand rotation limit is reached:
    /// `new_key` (default: a new KMS key, the alias moved) or `refuse`.
    #[serde(default)]
    pub at_rotation_limit: Option<String>,
    /// Drift self-heal: a drift check repairs the safe findings (material,
    /// alias, policy, tags) by itself. Off by default.
    #[serde(default)]
    pub self_heal: Option<bool>,
}

/// A change to a group. Absent fields stay; `null` clears the clearable ones
/// (`rotate_every` turns rotation off).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateGroupRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub rotate_every: Option<Option<String>>,
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub valid_for: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub active_key_id: Option<Option<String>>,
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub policy: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_after_rotate: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_strategy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_rotation_limit: Option<String>,
    /// A custody field (dual control).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_heal: Option<bool>,
}

/// Tells "absent" (outer None) from "null" (Some(None)).
fn double_option<'de, D, T>(de: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(de).map(Some)
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GroupView {
    pub name: String,
    pub service: String,
    pub credential: String,
    pub key_type: String,
    pub key_length: u32,
    pub algorithm: String,
    pub usage: String,
    pub storage: String,
    pub rotate: bool,
    pub rotate_every: Option<String>,
    pub next_rotation_at: Option<String>,
    pub valid_for: Option<String>,
    pub owner: String,
    pub notes: String,
    pub alias: String,
    pub description: String,
    pub region: String,
    pub active_key_id: Option<String>,
    pub policy: Option<String>,
    pub disable_after_rotate: bool,
    /// `new_key` or `new_material`.
    pub rotation_strategy: String,
    /// `new_key` or `refuse`.
    pub at_rotation_limit: String,
    /// Drift self-heal on.
    #[serde(default)]
    pub self_heal: bool,
    /// Open drift findings (the badge), and the last check's time.
    #[serde(default)]
    pub drift_open: u32,
    #[serde(default)]
    pub drift_checked_at: Option<String>,
    /// For a `new_material` group with a KMS key: its count against AWS's
    /// on-demand rotation limit.
    #[serde(default)]
    pub in_place_rotations: Option<InPlaceRotationsView>,
    pub created_at: String,
    pub updated_at: String,
    /// The group's newest rotation job, its status and, when it failed, why.
    pub last_rotation_job: Option<String>,
    pub last_rotation_status: Option<String>,
    pub last_rotation_error: Option<String>,
    /// When a failed scheduled rotation is tried again (backoff).
    pub rotation_retry_at: Option<String>,
}

/// How far a KMS key rotated in place is through AWS's on-demand rotations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InPlaceRotationsView {
    pub used: u32,
    pub limit: u32,
    pub left: u32,
    /// Said when few are left: what the group does at the limit.
    pub warning: Option<String>,
}

// ---- keys ----

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyView {
    /// The KMS key id; before AWS knows the key, its group and version,
    /// such as `ig-demo v3 (no KMS key)`. Either addresses the key in
    /// `/keys/{name}`, as does `id`.
    pub name: String,
    pub id: String,
    pub group: String,
    pub certificate: Option<String>,
    pub version: u32,
    pub storage: String,
    pub key_type: String,
    pub algorithm: String,
    pub check_digits: String,
    pub valid_from: String,
    pub valid_to: Option<String>,
    /// KMS key state as last seen: `enabled`, `disabled`, `pending_import`, …
    pub state: String,
    pub expired: bool,
    /// Whether the keystore holds the key's material: `present`, `missing`
    /// (deleted on the token: it cannot be synchronized) or `unknown`
    /// (the keystore cannot be reached now).
    pub material: String,
    /// Why a key without a KMS key is in its state and what to do about it
    /// (its rotation job running, failed or cancelled); null otherwise.
    #[serde(default)]
    pub state_note: Option<String>,
    /// The KMS key holding the material (several versions share one when
    /// their group rotates in place).
    #[serde(default)]
    pub kms_key_id: Option<String>,
    /// AWS's id of this version's material in that KMS key, once known.
    #[serde(default)]
    pub kms_material_id: Option<String>,
    /// `current` (KMS encrypts with it), `non_current` (decrypts only) or
    /// `pending_rotation`.
    #[serde(default)]
    pub material_state: String,
    /// Open drift findings that concern this key (the badge).
    #[serde(default)]
    pub drift_open: u32,
}

// ---- audit ----

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuditEntryView {
    pub seq: i64,
    pub date: String,
    pub users: String,
    pub summary: String,
    pub has_details: bool,
    pub details: serde_json::Value,
    pub archived: bool,
    /// Hex SHA-256 of the previous entry and of this one (the chain).
    pub prev_hash: String,
    pub hash: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuditVerifyView {
    pub ok: bool,
    pub entries_checked: u64,
    pub first_bad_seq: Option<i64>,
    pub reason: Option<String>,
    /// The newest signed checkpoint the log matched: its entry and when it was signed.
    #[serde(default)]
    pub checkpoint_seq: Option<i64>,
    #[serde(default)]
    pub checkpoint_time: Option<String>,
    /// The signed audit archives, checked against the live log (absent
    /// from an offline check of an export).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archives: Option<ArchivesVerifiedView>,
}

/// What checking the audit archives found: each file there with the
/// recorded digest, signed by this installation's audit key, chained on
/// from the one before, each entry equal to the live entry it copies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivesVerifiedView {
    pub archives: usize,
    pub entries: u64,
    /// The first problem found, if any (then `ok` is false).
    pub problem: Option<String>,
}

/// `POST /audit/verify`: checkpoints the log must reach (each a line of a
/// checkpoint file, as `keyhold audit checkpoint` prints it), besides the
/// newest one the server wrote.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditVerifyRequest {
    pub checkpoints: Vec<serde_json::Value>,
}

/// The public half of the audit checkpoint signing key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuditPublicKeyView {
    /// `ECDSA P-256 SHA-256`.
    pub algorithm: String,
    /// Hex SHA-256 of the key's DER: the `key` of every checkpoint it signs.
    pub fingerprint: String,
    /// SubjectPublicKeyInfo in PEM, as OpenSSL reads it.
    pub pem: String,
}

/// An audit stream to a SIEM, as the node answering sees it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuditStreamView {
    /// `syslog` (RFC 5424 over TCP or TLS) or `file` (JSON lines).
    pub kind: String,
    /// The receiver's URL (`syslog://…`, `syslog+tls://…`) or the file's path.
    pub destination: String,
    /// `starting`, `delivering` (or caught up), `standby` (another node of
    /// the cluster delivers to this receiver) or `retrying` (the last
    /// delivery failed; the entries wait in the log).
    pub state: String,
    /// The seq of the last entry delivered.
    pub cursor: Option<i64>,
    /// Entries committed but not yet delivered, at the streamer's last pass.
    pub lag: Option<i64>,
    /// When this node last delivered (RFC 3339).
    pub last_delivered_at: Option<String>,
    /// Why the last delivery failed, while it is retried.
    pub last_error: Option<String>,
    /// Failed deliveries since this node started.
    pub failures: u64,
}

// ---- jobs (Force Rotate, Synchronize) ----

/// Options of *Cloud → Synchronize*; absent fields take the defaults
/// (update policy on, import key material on, delete key material off).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_policy: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import_material: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_material: Option<bool>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobView {
    pub id: String,
    /// `rotate` or `synchronize`.
    pub kind: String,
    /// "Rotate HSM protected keys" / "Synchronize HSM protected keys".
    pub title: String,
    /// What this job does, beside the title its kind shares: the options
    /// chosen ("update policy, import key material", "delete key material")
    /// or the group a rotation makes a new key for.
    #[serde(default)]
    pub summary: String,
    /// The key group (rotate) or the KMS key id (synchronize).
    pub target: String,
    pub group: String,
    /// `queued`, `running`, `succeeded`, `failed`, `cancelled`.
    pub status: String,
    pub users: String,
    pub steps_done: u32,
    pub steps_total: u32,
    /// The step running or next to run.
    pub current_step: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub error: Option<String>,
    pub attempts: u32,
    /// The KMS key the job created or acts on, once known.
    pub kms_key_id: Option<String>,
    /// The wrapping algorithm used for the import, once known.
    pub wrapping_algorithm: Option<String>,
    /// Present in `GET /api/v1/jobs/{id}` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<JobMessageView>>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobMessageView {
    pub time: String,
    pub text: String,
}

// ---- configuration ----

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingsView {
    pub dual_control: bool,
    pub lockout_threshold: u32,
    pub lockout_minutes: u32,
    pub session_idle_minutes: u32,
    pub session_max_hours: u32,
    /// *HSM Protected Key Options*: `automatic` or a node id.
    pub designated_rotator: String,
    /// On-demand rotations keyhold makes of one KMS key (AWS allows 25).
    pub on_demand_rotation_limit: u32,
    /// Hours between scheduled drift checks of every group; 0: only on demand.
    #[serde(default)]
    pub drift_check_hours: u32,
    /// Material expiring within this many days (no rotation due before) is drift.
    #[serde(default)]
    pub drift_expiry_days: u32,
    /// Hours between scheduled backups; 0: only on demand.
    #[serde(default)]
    pub backup_every_hours: u32,
    /// Scheduled backups kept in the backup directory; 0: all.
    #[serde(default)]
    pub backup_keep: u32,
    /// Audit entries older than this many days are archived daily; 0: only on demand.
    #[serde(default)]
    pub audit_archive_after_days: u32,
    /// The last backup, if any was made.
    #[serde(default)]
    pub last_backup: Option<BackupView>,
    /// Who rotates now, seen from the node that answered.
    pub cluster: ClusterView,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsChangeRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dual_control: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lockout_threshold: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lockout_minutes: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_idle_minutes: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_max_hours: Option<u32>,
    /// `automatic`, or the id of a node that has joined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub designated_rotator: Option<String>,
    /// 1 to 25.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_demand_rotation_limit: Option<u32>,
    /// 0 (checks only on demand) to 744.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift_check_hours: Option<u32>,
    /// 1 to 366.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift_expiry_days: Option<u32>,
    /// 0 (backups only on demand) to 744; scheduled backups need custodians.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_every_hours: Option<u32>,
    /// 0 (keep all) to 10000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_keep: Option<u32>,
    /// 0 (archive only on demand) to 36500.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_archive_after_days: Option<u32>,
}

// ---- backups ----

/// One backup, as `GET /api/v1/backups` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupView {
    pub id: String,
    /// `manual` or `scheduled`.
    pub trigger: String,
    pub initiated_by: String,
    /// `running`, `succeeded` or `failed`.
    pub status: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    /// The file's name in the backup directory.
    pub file: String,
    pub size: Option<u64>,
    /// SHA-256 of the whole file, hex.
    pub sha256: Option<String>,
    pub keys: Option<u64>,
    pub threshold: u8,
    pub custodians: Vec<String>,
    pub error: Option<String>,
    pub node: String,
}

/// A backup's shares: one per custodian, each encrypted for that
/// custodian alone (`GET /api/v1/backups/{id}/shares`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupSharesView {
    pub backup: String,
    pub threshold: u8,
    pub shares: Vec<ShareView>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareView {
    pub custodian: String,
    /// The share file's text, to save as `<custodian>.share`.
    pub text: String,
}

/// One custodian: who they are and the public key their shares are
/// encrypted to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustodianView {
    pub name: String,
    /// X25519, 64 hex digits.
    pub public_key: String,
    /// Whether the key comes from a passphrase (Argon2id).
    pub passphrase: bool,
}

/// `GET /api/v1/backups/custodians`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustodiansView {
    /// 0 while none are set.
    pub threshold: u8,
    pub custodians: Vec<CustodianView>,
}

/// One custodian to set: a public key (from `keyhold backup custodian-key`),
/// or a passphrase the server turns into one (Argon2id) and forgets; or
/// both the public key and the `kdf` it was derived with (the CLI derives
/// it locally, so the passphrase never leaves the custodian's terminal).
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustodianRequest {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passphrase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kdf: Option<PassphraseKdfView>,
}

impl std::fmt::Debug for CustodianRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustodianRequest")
            .field("name", &self.name)
            .field("public_key", &self.public_key)
            .field(
                "passphrase",
                &self.passphrase.as_ref().map(|_| "<redacted>"),
            )
            .field("kdf", &self.kdf)
            .finish()
    }
}

/// Argon2id parameters and salt of a passphrase custodian's key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassphraseKdfView {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    pub salt: String,
}

/// `PUT /api/v1/backups/custodians`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetCustodiansRequest {
    /// How many custodians together open a backup (at least 2).
    pub threshold: u8,
    pub custodians: Vec<CustodianRequest>,
}

/// `POST /api/v1/audit/archives`: archive the entries up to `up_to_seq`,
/// or those older than `older_than_days` (one of the two).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up_to_seq: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub older_than_days: Option<u32>,
}

/// One signed audit archive file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditArchiveView {
    pub id: String,
    pub file: String,
    pub first_seq: i64,
    pub last_seq: i64,
    pub created_at: String,
    pub sha256: String,
}

// ---- drift ----

/// A difference between AWS and keyhold's record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftFindingView {
    pub id: String,
    pub group: String,
    /// `key_missing`, `pending_deletion`, `state_differs`, `material_deleted`,
    /// `material_expiring`, `alias_missing`, `alias_elsewhere`,
    /// `policy_differs`, `tags_missing`, `unknown_key`.
    pub kind: String,
    /// The kind in words ("alias on another key").
    pub title: String,
    /// What drifted: a KMS key id, `KMS-KEY-ID vN` for one version's
    /// material, or an alias.
    pub subject: String,
    pub key_id: Option<String>,
    pub kms_key_id: Option<String>,
    /// What keyhold expected and what AWS holds (a policy's difference
    /// line by line).
    pub detail: String,
    /// The repair that puts it right, if keyhold can make one.
    pub repair: Option<DriftRepairView>,
    pub first_seen: String,
    pub last_seen: String,
    /// Absent while the finding is open.
    pub cleared_at: Option<String>,
}

/// One AWS call of a reconcile plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftRepairView {
    /// `reimport_material`, `put_policy`, `point_alias`, `tag_key`,
    /// `enable_key`, `disable_key`, `cancel_deletion`.
    pub action: String,
    pub description: String,
    pub kms_key_id: String,
    /// Whether self-heal makes it without officers.
    pub safe: bool,
}

/// A group's reconcile plan, as `POST /api/v1/drift/groups/{group}/reconcile`
/// applies it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftPlanView {
    pub group: String,
    /// Names this plan: the reconcile request sends it back, and is refused
    /// (409) if the plan changed since.
    pub digest: String,
    /// In the order they run, each with the findings it resolves.
    pub actions: Vec<DriftPlannedView>,
    /// Open findings no repair of keyhold's resolves: for officers, outside keyhold.
    pub unresolved: Vec<DriftFindingView>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftPlannedView {
    pub repair: DriftRepairView,
    pub findings: Vec<String>,
}

/// `POST /api/v1/drift/groups/{group}/reconcile`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileRequest {
    /// The `digest` of the plan that was shown.
    pub plan: String,
}

/// A group's drift at a glance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupDriftView {
    pub group: String,
    /// The last check that finished, and the job that made it.
    pub checked_at: Option<String>,
    pub check_job: Option<String>,
    pub open: u32,
    pub self_heal: bool,
}

/// `GET /api/v1/drift`: every group's drift and the schedule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftOverviewView {
    pub groups: Vec<GroupDriftView>,
    pub check_hours: u32,
    pub expiry_days: u32,
}

/// `POST /api/v1/drift/checks`: the checks started, and the groups left
/// alone because another job of theirs is unfinished.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DriftChecksStartedView {
    pub started: Vec<JobView>,
    pub busy: Vec<DriftBusyView>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DriftBusyView {
    pub group: String,
    pub reason: String,
}

// ---- approvals ----

/// A request for a sensitive operation held to a quorum, and its answers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApprovalView {
    pub id: String,
    /// The policy class: `delete_group`, `add_credential`, …
    pub class: String,
    /// What the class covers, for people.
    pub class_label: String,
    /// What will happen, in one sentence.
    pub summary: String,
    /// The exact parameters that will run (a secret among them only as
    /// sealed text), as approvers must see them.
    pub operation: serde_json::Value,
    /// SHA-256 (hex) of the parameters in canonical form.
    pub params_hash: String,
    /// The identities of the session that asked; none of them may approve.
    pub requested_by: Vec<String>,
    pub requested_at: String,
    pub expires_at: String,
    pub approvals_needed: u8,
    /// The role every approver must hold.
    pub approver_role: String,
    /// Approvals still needed while pending.
    pub approvals_remaining: u32,
    /// `pending`, `approved` (running), `executed`, `failed`, `denied`, `expired`.
    pub status: String,
    /// Every answer, oldest first.
    pub votes: Vec<VoteView>,
    /// When it ran, failed, was denied or expired.
    pub decided_at: Option<String>,
    /// What running it gave (its audit summary) or why it failed.
    pub outcome: Option<String>,
    /// A result (an added identity's one-time password) waits for the
    /// requester: `POST /api/v1/approvals/{id}/result`.
    pub result_waiting: bool,
    /// For a change of the approval policies: each class whose policy
    /// changes, before and after.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy_changes: Vec<PolicyChangeView>,
    /// Whether the caller may approve or deny it now.
    pub you_may_answer: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VoteView {
    pub identity: String,
    pub role: String,
    /// `approved` or `denied`.
    pub answer: String,
    pub at: String,
    pub reason: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PolicyChangeView {
    pub class: String,
    pub before: String,
    pub after: String,
}

/// Denying a request, with an optional reason the others read.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenyRequest {
    #[serde(default)]
    pub reason: Option<String>,
}

/// The result of an executed request, given once to its requester.
#[derive(Clone, Serialize, Deserialize)]
pub struct ApprovalResultView {
    pub id: String,
    /// The secret the operation gave: an added identity's one-time
    /// password, or a new XKS credential's secret access key.
    pub password: String,
    /// For a request that created an external key store or added a
    /// credential to one: the credential, with the AWS KMS console's file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xks_credential: Option<IssuedXksCredentialView>,
}

impl fmt::Debug for ApprovalResultView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApprovalResultView")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// One class of sensitive operation and the policy it is held to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyView {
    pub class: String,
    pub label: String,
    /// `dual_control` or `quorum`.
    pub policy: String,
    /// The quorum's approvals, role and expiry (quorum only).
    pub approvals: Option<u8>,
    pub role: Option<String>,
    pub expires_after_hours: Option<u32>,
    /// The policy in words.
    pub description: String,
}

/// A quorum as a policy change names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuorumRequest {
    pub approvals: u8,
    /// `administrator` or `key_officer`.
    pub role: String,
    /// How long a request waits for its approvals (1 to 720).
    pub expires_after_hours: u32,
}

/// The whole set of quorums; a class left out keeps dual control.
/// `change_approval_policies` is not set itself: it is always held to the
/// strictest policy of the others.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalPoliciesRequest {
    pub quorums: std::collections::BTreeMap<String, QuorumRequest>,
}

// ---- external key stores (XKS proxy) ----

/// `POST /api/v1/xks/stores`: a new external key store and its first SigV4
/// credential (dual control, or the approval class `manage_xks_stores`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateXksStoreRequest {
    /// Letters, digits, '.', '_', '-'.
    pub name: String,
    /// The path before `/kms/xks/v1` under which AWS KMS reaches the store,
    /// such as `/xks/payments`; `/xks/<name>` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Requests per second the store is served, per node; 1800 (AWS KMS's
    /// default for an external key store) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_per_second: Option<u32>,
    /// Mutual TLS: KMS's client certificate must chain to the CA and carry
    /// the subject. Off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<XksMtlsRequest>,
}

/// A store's mutual-TLS rule as a request names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XksMtlsRequest {
    /// The common name of KMS's client certificate, such as
    /// `cks.kms.eu-west-1.amazonaws.com`.
    pub subject: String,
    /// One or more PEM `CERTIFICATE` blocks: the CA KMS's client certificate
    /// chains to (public, not secret).
    pub ca_pem: String,
}

/// `PATCH /api/v1/xks/stores/{name}`: absent fields stay; `"mtls": null`
/// turns mutual TLS off. At least one field must be given.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateXksStoreRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_per_second: Option<u32>,
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub mtls: Option<Option<XksMtlsRequest>>,
}

/// An external key store: what to give AWS KMS to reach it, its limits,
/// and its credentials (never their secrets).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct XksStoreView {
    pub name: String,
    pub path_prefix: String,
    /// The `XksProxyUriPath` to give KMS: the prefix and `/kms/xks/v1`.
    pub uri_path: String,
    /// Requests per second served per node; beyond it KMS gets `ThrottlingException`.
    pub quota_per_second: u32,
    /// Mutual TLS, when on.
    pub mtls: Option<XksMtlsView>,
    /// The SigV4 credentials KMS may sign with (at most two: the one in use
    /// and its successor), oldest first.
    pub credentials: Vec<XksCredentialView>,
    /// How many XKS keys the store holds.
    pub key_count: u32,
    pub created_at: String,
    pub updated_at: String,
}

/// A store's mutual-TLS rule as shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct XksMtlsView {
    pub subject: String,
    /// Hex SHA-256 of each CA certificate's DER, in the PEM's order.
    pub ca_sha256: Vec<String>,
    /// The CA certificates as given (public).
    pub ca_pem: String,
}

/// One SigV4 credential of a store: its access key id, never its secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct XksCredentialView {
    pub access_key_id: String,
    pub created_at: String,
}

/// The answer to creating a store or adding a credential to it: the
/// secret access key, shown this once, and the file the AWS KMS console
/// takes for the store.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedXksCredentialView {
    pub store: XksStoreView,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// The JSON the AWS KMS console's "Upload proxy configuration file"
    /// accepts, as the XKS proxy specification gives it.
    pub kms_console_file: KmsConsoleFile,
}

impl fmt::Debug for IssuedXksCredentialView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedXksCredentialView")
            .field("store", &self.store.name)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// The external key store's proxy configuration file for the AWS KMS
/// console: `{"XksProxyUriPath": …, "XksProxyAuthenticationCredential":
/// {"AccessKeyId": …, "RawSecretAccessKey": …}}`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KmsConsoleFile {
    #[serde(rename = "XksProxyUriPath")]
    pub xks_proxy_uri_path: String,
    #[serde(rename = "XksProxyAuthenticationCredential")]
    pub xks_proxy_authentication_credential: KmsConsoleCredential,
}

impl fmt::Debug for KmsConsoleFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KmsConsoleFile")
            .field("xks_proxy_uri_path", &self.xks_proxy_uri_path)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KmsConsoleCredential {
    #[serde(rename = "AccessKeyId")]
    pub access_key_id: String,
    #[serde(rename = "RawSecretAccessKey")]
    pub raw_secret_access_key: String,
}

impl fmt::Debug for KmsConsoleCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KmsConsoleCredential")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// An XKS key's authorization rule on KMS's `requestMetadata`: every list
/// that is not empty must hold a pattern matching the request's value
/// (`*` matches any run of characters). Empty lists admit everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XksRuleView {
    /// `awsPrincipalArn` patterns, such as `arn:aws:iam::111122223333:role/app-*`.
    #[serde(default)]
    pub principals: Vec<String>,
    /// `kmsKeyArn` patterns.
    #[serde(default)]
    pub kms_key_arns: Vec<String>,
    /// `kmsOperation` names: `Encrypt`, `Decrypt`, `GenerateDataKey*`, `ReEncrypt*`, …
    #[serde(default)]
    pub kms_operations: Vec<String>,
    /// `awsSourceVpc` patterns (requests through a VPC endpoint).
    #[serde(default)]
    pub source_vpcs: Vec<String>,
}

/// `POST /api/v1/xks/stores/{name}/keys`: a new AES-256 key generated in
/// the keystore (dual control, or the approval class `manage_xks_keys`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateXksKeyRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `encrypt_decrypt` (the default, and what KMS `CreateKey` needs),
    /// `encrypt` or `decrypt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<String>,
    /// Enabled unless `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// No rule (SigV4 alone) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<XksRuleView>,
}

/// `PATCH /api/v1/xks/keys/{id}`: absent fields stay. Disabling a key,
/// narrowing its usage or changing its description needs one key officer;
/// enabling it, widening its usage or changing its rule needs two (or the
/// approval class `manage_xks_keys`). At least one field must be given.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateXksKeyRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Replaces the whole rule (`{}` removes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<XksRuleView>,
}

/// An XKS key, with what AWS KMS needs to use it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct XksKeyView {
    /// The `XksKeyId` to give KMS `CreateKey`.
    pub id: String,
    /// The external key store's name.
    pub store: String,
    pub description: String,
    /// `encrypt_decrypt`, `encrypt` or `decrypt`.
    pub usage: String,
    pub enabled: bool,
    pub rule: XksRuleView,
    /// Check digits: the first four hex digits of AES-ECB(key, zero block).
    pub check_digits: String,
    pub created_at: String,
    pub updated_at: String,
    /// The values the AWS side needs.
    pub aws: XksKeyAwsView,
}

/// What to give AWS KMS for an XKS key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct XksKeyAwsView {
    /// `--xks-key-id` of `aws kms create-key` (the key's id).
    pub xks_key_id: String,
    /// The store's `XksProxyUriPath` (`--xks-proxy-uri-path` of
    /// `aws kms create-custom-key-store`).
    pub xks_proxy_uri_path: String,
    /// The `aws kms create-key` command that makes the KMS key, with the
    /// custom key store's id (from `create-custom-key-store`) to fill in.
    pub create_key_command: String,
}

// ---- health ----

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReadinessView {
    pub ready: bool,
    pub checks: Vec<ReadinessCheck>,
    /// This node's part in the cluster (not a readiness condition: a
    /// standby node is ready).
    pub cluster: ClusterView,
    /// How the last backup ended (not a readiness condition); absent
    /// before the first backup. Only times and status: `/readyz` answers
    /// without a session.
    #[serde(default)]
    pub backup: Option<BackupHealthView>,
}

/// The last backup at a glance, for `/readyz`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupHealthView {
    /// `running`, `succeeded` or `failed`.
    pub last_status: String,
    pub last_started_at: String,
    /// The newest backup that succeeded, if any.
    pub last_success_at: Option<String>,
}

/// *HSM Protected Key Options*: who rotates, seen from one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    /// This node's id.
    pub node: String,
    /// This node's role: `rotator` or `standby`.
    pub role: String,
    /// The configured choice: `automatic` or a node id.
    pub designated_rotator: String,
    /// The rotator lease as last read.
    pub lease_holder: Option<String>,
    pub lease_token: Option<i64>,
    pub lease_expires_at: Option<String>,
    /// Why this node does not rotate, or why nothing rotates.
    pub note: Option<String>,
    /// The last tick's failure, when it failed.
    pub error: Option<String>,
    /// This node's last pass over the schedule (rotator only).
    #[serde(default)]
    pub last_schedule_pass: Option<SchedulePassView>,
    /// Every node that has joined, with when it was last seen.
    pub nodes: Vec<NodeView>,
}

/// One pass of the rotator over the schedule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchedulePassView {
    /// When the pass began.
    pub at: String,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
    /// Scheduled rotations it started (at most 200 a pass).
    pub started: u32,
    /// Due rotations it put off (another job of the group in the way).
    pub deferred: u32,
    /// Failed scheduled rotations it took up again.
    pub retried: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    pub id: String,
    pub role: String,
    pub started_at: String,
    pub last_seen: String,
    /// Seen within two lease periods.
    pub alive: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReadinessCheck {
    pub name: String,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_tells_absent_from_null() {
        let absent: UpdateGroupRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(absent.rotate_every, None);
        let null: UpdateGroupRequest = serde_json::from_str(r#"{"rotate_every":null}"#).unwrap();
        assert_eq!(null.rotate_every, Some(None));
        let set: UpdateGroupRequest = serde_json::from_str(r#"{"rotate_every":"1d"}"#).unwrap();
        assert_eq!(set.rotate_every, Some(Some("1d".into())));
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(serde_json::from_str::<CreateGroupRequest>(r#"{"name":"a","credential":"c","alias":"alias/a","region":"eu-west-1","rotate":"yes"}"#).is_err());
    }

    #[test]
    fn xks_requests_refuse_unknown_fields_and_tell_null_from_absent() {
        assert!(
            serde_json::from_str::<CreateXksStoreRequest>(r#"{"name":"s","quota":5}"#).is_err()
        );
        assert!(
            serde_json::from_str::<CreateXksKeyRequest>(r#"{"rule":{"principal":["x"]}}"#).is_err()
        );
        let absent: UpdateXksStoreRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(absent.mtls, None);
        let null: UpdateXksStoreRequest = serde_json::from_str(r#"{"mtls":null}"#).unwrap();
        assert_eq!(null.mtls, Some(None));
        // A request held for approval is stored as it serialises: `null` stays `null`.
        let stored: UpdateXksStoreRequest =
            serde_json::from_value(serde_json::to_value(&null).unwrap()).unwrap();
        assert_eq!(stored, null);
    }

    #[test]
    fn the_kms_console_file_has_the_specifications_field_names_and_no_debug_secret() {
        let file = KmsConsoleFile {
            xks_proxy_uri_path: "/xks/a/kms/xks/v1".into(),
            xks_proxy_authentication_credential: KmsConsoleCredential {
                access_key_id: "ABCDEFGHIJKLMNOPQRSTUVWXYZ".into(),
                raw_secret_access_key: "c2VjcmV0c2VjcmV0".into(),
            },
        };
        assert_eq!(
            serde_json::to_value(&file).unwrap(),
            serde_json::json!({
                "XksProxyUriPath": "/xks/a/kms/xks/v1",
                "XksProxyAuthenticationCredential": {
                    "AccessKeyId": "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
                    "RawSecretAccessKey": "c2VjcmV0c2VjcmV0",
                }
            })
        );
        assert!(!format!("{file:?}").contains("c2VjcmV0"));
    }

    #[test]
    fn debug_never_prints_passwords() {
        let req = LoginRequest {
            user: "Admin1".into(),
            password: "hunter2hunter2".into(),
        };
        assert!(!format!("{req:?}").contains("hunter2"));
    }
}
