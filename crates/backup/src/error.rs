//! Why a backup, a share or an archive is refused.

use keyhold_core::KeystoreError;

/// Every refusal of this crate. Messages name what is wrong and what to do;
/// they never quote key bytes, shares or passphrases.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("cannot read or write the file: {0}")]
    Io(std::io::Error),
    #[error("not a keyhold backup file: {0}")]
    NotABackup(String),
    #[error("the backup file is damaged or was altered: {0}; use another copy of the file")]
    Damaged(String),
    #[error("the backup key does not open this backup: {0}")]
    WrongKey(String),
    #[error("the backup's signature does not verify: {0}")]
    Signature(String),
    #[error("the shares do not open this backup: {0}")]
    Shares(String),
    #[error("not a usable share file: {0}")]
    ShareFile(String),
    #[error("custodian key: {0}")]
    Custodian(String),
    #[error("not a valid audit archive: {0}")]
    Archive(String),
    /// The caller asked for something this crate cannot do (a programming
    /// or configuration error, not a damaged file).
    #[error("{0}")]
    Invalid(String),
    #[error("the keystore failed: {0}")]
    Keystore(#[from] KeystoreError),
}

impl From<std::io::Error> for BackupError {
    fn from(e: std::io::Error) -> Self {
        // A file that ends early was cut short, not unreadable.
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Self::Damaged("the file ends early (truncated)".into())
        } else {
            Self::Io(e)
        }
    }
}

pub type Result<T, E = BackupError> = std::result::Result<T, E>;
