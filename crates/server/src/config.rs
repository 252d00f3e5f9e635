//! Configuration, layered: built-in defaults, then a TOML file, then
//! environment variables (`KEYHOLD_*`), then command-line flags. The raw layers
//! are merged and then converted once into a validated [`Config`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use keyhold_keystore::MasterKeySource;
use secrecy::SecretString;
use serde::Deserialize;

/// Where `keyhold serve` listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8600";
/// Where data lives unless told otherwise.
pub const DEFAULT_DATA_DIR: &str = "./keyhold-data";
/// Environment variable holding the keystore passphrase. Environment only:
/// a flag would show in `ps` and shell history.
pub const PASSPHRASE_ENV: &str = "KEYHOLD_KEYSTORE_PASSPHRASE";

/// Flags of `keyhold serve` and `keyhold init`. Each flag also reads the
/// environment variable named beside it; a flag beats its variable, and
/// both beat the configuration file.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ServeArgs {
    /// Configuration file (TOML); see the README for its keys.
    #[arg(long, env = "KEYHOLD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory holding the database and the software keystore [default: ./keyhold-data].
    #[arg(long, env = "KEYHOLD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address and port the HTTP API listens on [default: 127.0.0.1:8600]. Port 0 picks a free port.
    #[arg(long, env = "KEYHOLD_LISTEN")]
    pub listen: Option<String>,
    /// Database URL [default: sqlite://<data-dir>/keyhold.db].
    #[arg(long, env = "KEYHOLD_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// File holding the keystore passphrase (derives the master key with Argon2id
    /// instead of keeping it in <data-dir>/keystore/master.key). The passphrase
    /// may also come from the KEYHOLD_KEYSTORE_PASSPHRASE variable.
    #[arg(long, env = "KEYHOLD_KEYSTORE_PASSPHRASE_FILE")]
    pub keystore_passphrase_file: Option<PathBuf>,
    /// Log filter, such as `info` or `keyhold_server=debug` [default: info].
    #[arg(long, env = "KEYHOLD_LOG")]
    pub log: Option<String>,
    /// Serve plain HTTP on an address other than loopback. Off by default:
    /// sessions and passwords would cross the network unencrypted.
    #[arg(long, env = "KEYHOLD_ALLOW_PLAIN_HTTP")]
    pub allow_plain_http: bool,
}

/// The configuration file. Unknown keys are an error, so a misspelt setting
/// is caught rather than silently ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    /// Directory holding the database and the software keystore.
    data_dir: Option<PathBuf>,
    /// Address and port the HTTP API listens on.
    listen: Option<String>,
    /// Database URL (`sqlite://…`).
    database_url: Option<String>,
    /// File holding the keystore passphrase.
    keystore_passphrase_file: Option<PathBuf>,
    /// Log filter.
    log: Option<String>,
    /// Serve plain HTTP on an address other than loopback.
    allow_plain_http: Option<bool>,
}

/// The validated configuration the server runs with.
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub database: DatabaseUrl,
    pub master_key: MasterKeySource,
    pub log: String,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("data_dir", &self.data_dir)
            .field("listen", &self.listen)
            .field("database", &self.database)
            .field("master_key", &self.master_key)
            .field("log", &self.log)
            .finish()
    }
}

impl Config {
    pub fn keystore_dir(&self) -> PathBuf {
        self.data_dir.join("keystore")
    }
}

/// A database URL whose password never reaches a log or message.
#[derive(Clone)]
pub struct DatabaseUrl(SecretString);

impl DatabaseUrl {
    pub fn expose(&self) -> &str {
        secrecy::ExposeSecret::expose_secret(&self.0)
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&mask_password(self.expose()))
    }
}

impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&mask_password(self.expose()))
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
pub fn mask_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// What is wrong with the configuration, and how to fix it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl ServeArgs {
    /// Merges the layers and validates them. `passphrase_env` is the value of
    /// KEYHOLD_KEYSTORE_PASSPHRASE, passed in so tests need not touch the
    /// process environment.
    pub fn resolve(self, passphrase_env: Option<SecretString>) -> Result<Config, ConfigError> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let data_dir = self
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let listen_raw = self
            .listen
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen: SocketAddr = listen_raw.parse().map_err(|_| {
            ConfigError(format!(
                "listen address '{listen_raw}' is not an IP address and port, such as 127.0.0.1:8600"
            ))
        })?;
        let allow_plain_http = self.allow_plain_http || file.allow_plain_http.unwrap_or(false);
        if !listen.ip().is_loopback() && !allow_plain_http {
            return Err(ConfigError(format!(
                "refusing to serve plain HTTP on {listen}, which is not a loopback address: sessions and passwords would cross the network unencrypted. Listen on 127.0.0.1 behind a TLS proxy, or pass --allow-plain-http if the network is otherwise protected"
            )));
        }
        let database_raw = self.database_url.or(file.database_url).unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                data_dir.join("keyhold.db").display()
            )
        });
        if !database_raw.starts_with("sqlite:") {
            return Err(ConfigError(format!(
                "database URL '{}' is not supported: use sqlite://PATH",
                mask_password(&database_raw)
            )));
        }
        let passphrase_file = self
            .keystore_passphrase_file
            .or(file.keystore_passphrase_file);
        let master_key = match (passphrase_file, passphrase_env) {
            (Some(path), _) => MasterKeySource::Passphrase(read_passphrase(&path)?),
            (None, Some(passphrase)) => MasterKeySource::Passphrase(passphrase),
            (None, None) => MasterKeySource::File,
        };
        Ok(Config {
            data_dir,
            listen,
            database: DatabaseUrl(SecretString::from(database_raw)),
            master_key,
            log: self.log.or(file.log).unwrap_or_else(|| "info".to_owned()),
        })
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError(format!(
            "cannot read configuration file {}: {e}",
            path.display()
        ))
    })?;
    toml::from_str(&text).map_err(|e| {
        ConfigError(format!(
            "configuration file {} is invalid: {e}",
            path.display()
        ))
    })
}

fn read_passphrase(path: &Path) -> Result<SecretString, ConfigError> {
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
        ConfigError(format!(
            "cannot read keystore passphrase file {}: {e}",
            path.display()
        ))
    })?);
    let passphrase = text.trim_end_matches(['\r', '\n']);
    if passphrase.is_empty() {
        return Err(ConfigError(format!(
            "keystore passphrase file {} is empty",
            path.display()
        )));
    }
    Ok(SecretString::from(passphrase.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keyhold.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\ndata_dir = \"/from/file\"\nlog = \"debug\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(file),
            data_dir: Some("/from/flag".into()),
            ..Default::default()
        };
        let config = args.resolve(None).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/from/flag"));
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.log, "debug");
        assert!(config.database.expose().contains("/from/flag/keyhold.db"));
    }

    #[test]
    fn unknown_file_keys_and_bad_addresses_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keyhold.toml");
        std::fs::write(&file, "listne = \"127.0.0.1:9000\"\n").unwrap();
        let err = ServeArgs {
            config: Some(file),
            ..Default::default()
        }
        .resolve(None)
        .unwrap_err();
        assert!(err.to_string().contains("listne"), "{err}");
        let err = ServeArgs {
            listen: Some("localhost".into()),
            ..Default::default()
        }
        .resolve(None)
        .unwrap_err();
        assert!(err.to_string().contains("not an IP address"));
    }

    #[test]
    fn plain_http_beyond_loopback_needs_consent() {
        let args = ServeArgs {
            listen: Some("0.0.0.0:8600".into()),
            ..Default::default()
        };
        assert!(args.clone().resolve(None).is_err());
        assert!(
            ServeArgs {
                allow_plain_http: true,
                ..args
            }
            .resolve(None)
            .is_ok()
        );
    }

    #[test]
    fn passwords_in_database_urls_are_masked() {
        assert_eq!(
            mask_password("postgres://keyhold:s3cret@db:5432/k"),
            "postgres://keyhold:***@db:5432/k"
        );
        assert_eq!(
            mask_password("sqlite:///x/keyhold.db"),
            "sqlite:///x/keyhold.db"
        );
        let url = DatabaseUrl(SecretString::from("postgres://u:pw@h/d".to_owned()));
        assert!(!format!("{url:?} {url}").contains("pw@"));
    }

    #[test]
    fn passphrase_sources() {
        let config = ServeArgs::default()
            .resolve(Some(SecretString::from("x".to_owned())))
            .unwrap();
        assert!(matches!(config.master_key, MasterKeySource::Passphrase(_)));
        assert!(matches!(
            ServeArgs::default().resolve(None).unwrap().master_key,
            MasterKeySource::File
        ));
    }
}
