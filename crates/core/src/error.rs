//! The core's errors. Each layer has its own enum; the HTTP layer maps
//! [`CoreError`] to a status in one exhaustive match.

use thiserror::Error;

use crate::cloud::error::CloudError;

/// Input that does not parse. The message says what is wrong and how to fix it;
/// it never echoes a secret.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{message}")]
pub struct InvalidInput {
    /// Which field of the request is wrong (`alias`, `region`, …).
    pub field: &'static str,
    pub message: String,
}

impl InvalidInput {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// Failures of a [`Store`](crate::ports::Store) adapter.
#[derive(Debug, Error)]
pub enum StoreError {
    /// A unique name is taken (the caller knows which object it was writing).
    #[error("already exists")]
    Duplicate,
    /// The row to change or delete is not there.
    #[error("not found")]
    NotFound,
    /// A row is still referenced by another (a credential used by a group).
    #[error("still in use")]
    InUse,
    /// The database cannot be reached or refused the write.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database answers but cannot record changes now (its storage is
    /// full, say): the write was rolled back whole, change and audit entry
    /// alike. Reads still work; writes work again once the cause is gone.
    #[error("the database cannot record changes: {refusal}: {detail}")]
    CannotWrite {
        refusal: WriteRefusal,
        /// The driver's own words, for the log.
        detail: String,
    },
    /// Stored data does not decode into the domain type it should be.
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    /// A job commit under a lease that another node has taken since.
    #[error("this node no longer holds the {0} lease: another node took over")]
    Fenced(String),
    /// A write executing an approved request ([`crate::audit::AuditRecord::executes`])
    /// found it no longer approved: it ran already, or was closed. Nothing
    /// was written.
    #[error("the approved request was run or closed already")]
    ApprovalSpent,
    /// The audit entry that had to accompany the write could not be sealed.
    #[error("audit entry could not be sealed: {0}")]
    AuditSeal(#[from] KeystoreError),
}

/// Why a database that still answers refuses to record changes, read from
/// the driver's error code (never its message text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteRefusal {
    /// No space left for the database: SQLite's `SQLITE_FULL` (the disk, or
    /// its `max_page_count`), PostgreSQL's `disk_full` (SQLSTATE 53100).
    StorageFull,
    /// The database server ran out of memory: PostgreSQL's `out_of_memory`
    /// (SQLSTATE 53200).
    OutOfMemory,
    /// The database is read-only: SQLite's `SQLITE_READONLY` (a read-only
    /// file or directory), PostgreSQL's `read_only_sql_transaction`
    /// (SQLSTATE 25006: a standby, or `default_transaction_read_only`).
    ReadOnly,
}

impl WriteRefusal {
    /// What the operator has to fix, in a few words.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StorageFull => "storage full",
            Self::OutOfMemory => "database out of memory",
            Self::ReadOnly => "database read-only",
        }
    }
}

impl std::fmt::Display for WriteRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl StoreError {
    /// Why the database refused to record a change, when that is what failed.
    pub fn write_refusal(&self) -> Option<WriteRefusal> {
        match self {
            Self::CannotWrite { refusal, .. } => Some(*refusal),
            _ => None,
        }
    }
}

/// Failures of a [`Keystore`](crate::ports::Keystore) adapter. Messages never contain key bytes.
#[derive(Debug, Error)]
pub enum KeystoreError {
    #[error("keystore unavailable: {0}")]
    Unavailable(String),
    #[error("keystore has no key {0}")]
    KeyNotFound(String),
    #[error("keystore cannot do this: {0}")]
    Unsupported(String),
    /// Authentication of sealed data failed: wrong master key or tampered data.
    #[error("sealed data failed authentication")]
    SealBroken,
    #[error("keystore failure: {0}")]
    Internal(String),
}

/// What an operation of the core can fail with.
#[derive(Debug, Error)]
pub enum CoreError {
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    #[error("{what} '{name}' does not exist")]
    NotFound { what: &'static str, name: String },
    #[error("{0}")]
    Conflict(String),
    /// No valid session, or credentials that do not match. Deliberately vague.
    #[error("{0}")]
    Unauthenticated(String),
    /// The session's identities lack the role for this operation.
    #[error("{0}")]
    Forbidden(String),
    /// The operation needs a second identity in the session.
    #[error(
        "{operation} needs dual control: a second identity with the right role must log in to this session first"
    )]
    DualControlRequired { operation: String },
    /// An approval policy holds the operation to a quorum: it runs only as
    /// an approved request (the edges ask for one instead of calling it).
    #[error(
        "{operation} needs approvals ({policy}): it runs only as an approved request, which keyhold makes when the operation is asked for as usual"
    )]
    ApprovalRequired { operation: String, policy: String },
    #[error(
        "the password of '{0}' must be changed before it can log in: use `keyhold passwd --user {0}`"
    )]
    PasswordChangeRequired(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Keystore(#[from] KeystoreError),
    /// A cloud KMS call failed (issue: AWS engine).
    #[error(transparent)]
    Cloud(#[from] CloudError),
}

impl CoreError {
    pub fn not_found(what: &'static str, name: impl std::fmt::Display) -> Self {
        Self::NotFound {
            what,
            name: name.to_string(),
        }
    }
}

pub type CoreResult<T> = Result<T, CoreError>;

/// Echo user input in a message without letting control characters through
/// and without letting a huge value flood a response.
pub(crate) fn printable(raw: &str) -> String {
    let cleaned: String = raw
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(80)
        .collect();
    if raw.chars().count() > 80 {
        format!("{cleaned}…")
    } else {
        cleaned
    }
}
