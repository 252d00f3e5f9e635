//! Where data lives: the data directory and the database. Rules: the
//! database defaults to SQLite inside the data directory; a database URL
//! never reaches a log or message with its password (see [`DatabaseUrl`]).

use std::path::PathBuf;

use keyhold_store::{DatabaseKind, mask_url};
use secrecy::SecretString;

use super::ConfigError;
use super::layering::settings_area;

/// Where data lives unless told otherwise.
pub const DEFAULT_DATA_DIR: &str = "./keyhold-data";

settings_area! {
    /// The data directory and the database.
    pub struct DataArgs {
        /// Directory holding the database and the software keystore [default: ./keyhold-data].
        #[arg(long, env = "KEYHOLD_DATA_DIR")]
        pub data_dir: Option<PathBuf>,
        /// Database URL: sqlite://PATH (a file, created when missing) or
        /// postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE (an existing database,
        /// shared by several nodes) [default: sqlite://<data-dir>/keyhold.db].
        #[arg(long, env = "KEYHOLD_DATABASE_URL", hide_env_values = true)]
        pub database_url: Option<String>,
        /// Refuse to serve an empty data directory instead of initialising it
        /// (which prints the default administrators' one-time passwords on
        /// stdout); `keyhold init` initialises it, on the operator's terminal.
        /// The Debian package's configuration sets it.
        #[arg(long, env = "KEYHOLD_REQUIRE_INITIALISED")]
        pub require_initialised: bool,
        /// Directory the backups are written to (encrypted; their shares are
        /// kept apart, in the database and with the custodians); ship it off
        /// this machine [default: <data-dir>/backups].
        #[arg(long, env = "KEYHOLD_BACKUP_DIR")]
        pub backup_dir: Option<PathBuf>,
        /// Directory the signed audit archive files are written to
        /// [default: <data-dir>/audit-archive].
        #[arg(long, env = "KEYHOLD_AUDIT_ARCHIVE_DIR")]
        pub audit_archive_dir: Option<PathBuf>,
    }
}

/// The validated data directory and database.
#[derive(Debug)]
pub struct DataConfig {
    pub data_dir: PathBuf,
    pub database: DatabaseUrl,
    /// `serve` refuses an empty data directory.
    pub require_initialised: bool,
    pub backup_dir: PathBuf,
    pub audit_archive_dir: PathBuf,
}

impl DataArgs {
    pub fn resolve(self) -> Result<DataConfig, ConfigError> {
        let data_dir = self
            .data_dir
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let database = self.database_url.unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                data_dir.join("keyhold.db").display()
            )
        });
        DatabaseKind::of(&database).map_err(ConfigError)?;
        Ok(DataConfig {
            backup_dir: self.backup_dir.unwrap_or_else(|| data_dir.join("backups")),
            audit_archive_dir: self
                .audit_archive_dir
                .unwrap_or_else(|| data_dir.join("audit-archive")),
            data_dir,
            database: DatabaseUrl(SecretString::from(database)),
            require_initialised: self.require_initialised,
        })
    }
}

/// A database URL whose password never reaches a log or message.
#[derive(Clone)]
pub struct DatabaseUrl(pub(super) SecretString);

impl DatabaseUrl {
    pub fn expose(&self) -> &str {
        secrecy::ExposeSecret::expose_secret(&self.0)
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&mask_url(self.expose()))
    }
}

impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&mask_url(self.expose()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_database_urls_are_masked() {
        let url = DatabaseUrl(SecretString::from("postgres://u:pw@h/d".to_owned()));
        assert_eq!(
            format!("{url:?} {url}"),
            "postgres://u:***@h/d postgres://u:***@h/d"
        );
        let url = DatabaseUrl(SecretString::from(
            "postgresql://h/d?user=u&password=pw".to_owned(),
        ));
        assert!(!format!("{url:?} {url}").contains("pw"), "{url}");
    }
}
