//! Signed checkpoints of the audit log. Rules: checkpoints go to a file
//! outside the database (and to the server log), so an operator can ship
//! them where someone with the data directory cannot reach; a checkpoint is
//! written only when the log grew since the last one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::layering::settings_area;
use super::{ConfigError, in_range};

/// Seconds between checkpoints unless told otherwise.
pub const DEFAULT_AUDIT_CHECKPOINT_SECONDS: u64 = 900;
/// Where checkpoints go unless told otherwise, inside the data directory.
pub const DEFAULT_AUDIT_CHECKPOINT_FILE: &str = "audit-checkpoints.jsonl";

settings_area! {
    /// Signed audit checkpoints.
    pub struct AuditArgs {
        /// File the signed audit checkpoints are appended to, one JSON object a
        /// line; ship it off the machine [default: <data-dir>/audit-checkpoints.jsonl].
        #[arg(long, env = "KEYHOLD_AUDIT_CHECKPOINT_FILE", value_name = "PATH")]
        pub audit_checkpoint_file: Option<PathBuf>,
        /// Seconds between signed audit checkpoints, written when the log grew:
        /// 1 to 86400 [default: 900].
        #[arg(long, env = "KEYHOLD_AUDIT_CHECKPOINT_SECONDS", value_name = "SECONDS")]
        pub audit_checkpoint_seconds: Option<u64>,
    }
}

/// Where and how often checkpoints are written.
#[derive(Clone, Debug)]
pub struct AuditConfig {
    pub checkpoint_file: PathBuf,
    pub checkpoint_every: Duration,
}

impl AuditArgs {
    pub fn resolve(self, data_dir: &Path) -> Result<AuditConfig, ConfigError> {
        let checkpoint_file = self
            .audit_checkpoint_file
            .unwrap_or_else(|| data_dir.join(DEFAULT_AUDIT_CHECKPOINT_FILE));
        if checkpoint_file.is_dir() {
            return Err(ConfigError(format!(
                "audit_checkpoint_file {} is a directory: name a file in it, such as {}",
                checkpoint_file.display(),
                checkpoint_file
                    .join(DEFAULT_AUDIT_CHECKPOINT_FILE)
                    .display()
            )));
        }
        let seconds = in_range(
            "audit_checkpoint_seconds",
            self.audit_checkpoint_seconds,
            DEFAULT_AUDIT_CHECKPOINT_SECONDS,
            1..=86_400,
            "seconds between audit checkpoints",
        )?;
        Ok(AuditConfig {
            checkpoint_file,
            checkpoint_every: Duration::from_secs(seconds),
        })
    }
}
