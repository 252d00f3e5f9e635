//! Configuration, layered: built-in defaults, then a TOML file, then
//! environment variables (`KEYHOLD_*`), then command-line flags. The raw layers
//! are merged and then converted once into a validated [`Config`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use keyhold_aws::WrappingKeySpec;
use keyhold_core::names::NodeId;
use keyhold_keystore::{MasterKeySource, Pkcs11Settings, TokenSelector};
use keyhold_store::{DatabaseKind, mask_url};
use secrecy::SecretString;
use serde::Deserialize;

use crate::tls::TlsConfig;

/// Where `keyhold serve` listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8600";
/// Where data lives unless told otherwise.
pub const DEFAULT_DATA_DIR: &str = "./keyhold-data";
/// Environment variable holding the keystore passphrase. Environment only:
/// a flag would show in `ps` and shell history.
pub const PASSPHRASE_ENV: &str = "KEYHOLD_KEYSTORE_PASSPHRASE";
/// Environment variable holding the PKCS#11 user PIN (environment only).
pub const PIN_ENV: &str = "KEYHOLD_PKCS11_PIN";
/// Attempts per AWS KMS request unless told otherwise (the SDK's standard retry).
pub const DEFAULT_KMS_MAX_ATTEMPTS: u32 = 5;
/// Most attempts per AWS KMS request: beyond this a job step would hang for
/// minutes on an outage instead of failing and being retried by an officer.
pub const MAX_KMS_MAX_ATTEMPTS: u32 = 10;
/// Seconds one AWS KMS request attempt may take unless told otherwise.
pub const DEFAULT_KMS_REQUEST_TIMEOUT_SECONDS: u64 = 10;
pub const MAX_KMS_REQUEST_TIMEOUT_SECONDS: u64 = 300;
/// Rotate and synchronize jobs that run at once unless told otherwise.
pub const DEFAULT_JOB_CONCURRENCY: u32 = 8;
/// More jobs at once than this would only queue on AWS KMS's request quotas
/// (CreateKey and UpdateAlias are 5 per second per account and Region).
pub const MAX_JOB_CONCURRENCY: u32 = 64;
/// The SDK's standard retry waits at most this long between two attempts.
const SDK_MAX_BACKOFF: Duration = Duration::from_secs(20);

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
    /// Database URL: sqlite://PATH (a file, created when missing) or
    /// postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE (an existing database,
    /// shared by several nodes) [default: sqlite://<data-dir>/keyhold.db].
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
    /// Serve HTTPS with this certificate chain (PEM: the server certificate,
    /// then its intermediates). Needs --tls-private-key.
    #[arg(long, env = "KEYHOLD_TLS_CERTIFICATE", value_name = "PATH")]
    pub tls_certificate: Option<PathBuf>,
    /// The private key of --tls-certificate (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "KEYHOLD_TLS_PRIVATE_KEY", value_name = "PATH")]
    pub tls_private_key: Option<PathBuf>,
    /// Where keys live: `software` (sealed under a master key in
    /// <data-dir>/keystore) or `pkcs11` (an HSM token) [default: software].
    #[arg(long, env = "KEYHOLD_KEYSTORE", value_name = "KIND")]
    pub keystore: Option<String>,
    /// PKCS#11 module (shared library) of the HSM, such as
    /// /usr/lib/softhsm/libsofthsm2.so. Needed with --keystore pkcs11.
    #[arg(long, env = "KEYHOLD_PKCS11_MODULE", value_name = "PATH")]
    pub pkcs11_module: Option<PathBuf>,
    /// Label of the token that holds keyhold's keys (or --pkcs11-slot).
    #[arg(long, env = "KEYHOLD_PKCS11_TOKEN_LABEL", value_name = "LABEL")]
    pub pkcs11_token_label: Option<String>,
    /// Slot id of the token, instead of its label.
    #[arg(long, env = "KEYHOLD_PKCS11_SLOT", value_name = "ID")]
    pub pkcs11_slot: Option<u64>,
    /// File holding the token's user PIN. The PIN may also come from the
    /// KEYHOLD_PKCS11_PIN variable; never from a flag.
    #[arg(long, env = "KEYHOLD_PKCS11_PIN_FILE", value_name = "PATH")]
    pub pkcs11_pin_file: Option<PathBuf>,
    /// Size of the RSA key AWS KMS generates to receive key material for
    /// import: RSA_2048, RSA_3072 or RSA_4096 [default: RSA_4096, AWS's
    /// recommendation].
    #[arg(long, env = "KEYHOLD_KMS_WRAPPING_KEY_SPEC", value_name = "SPEC")]
    pub kms_wrapping_key_spec: Option<String>,
    /// Send requests to AWS KMS's FIPS endpoints (kms-fips.<region>.amazonaws.com)
    /// [default: false]. A credential's endpoint override is used as given.
    #[arg(
        long,
        env = "KEYHOLD_KMS_USE_FIPS",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub kms_use_fips: Option<bool>,
    /// Attempts per AWS KMS request, the first included (1 = no retry), with
    /// exponential back-off and jitter in between: 1 to 10 [default: 5].
    #[arg(long, env = "KEYHOLD_KMS_MAX_ATTEMPTS", value_name = "N")]
    pub kms_max_attempts: Option<u32>,
    /// Seconds one attempt of an AWS KMS request may take: 1 to 300 [default: 10].
    #[arg(
        long,
        env = "KEYHOLD_KMS_REQUEST_TIMEOUT_SECONDS",
        value_name = "SECONDS"
    )]
    pub kms_request_timeout_seconds: Option<u64>,
    /// Rotate and synchronize jobs that run at the same time; more wait their
    /// turn: 1 to 64 [default: 8].
    #[arg(long, env = "KEYHOLD_JOB_CONCURRENCY", value_name = "N")]
    pub job_concurrency: Option<u32>,
    /// This node's id in a cluster (letters, digits, '.', '_', '-'); stable
    /// across restarts [default: the host name].
    #[arg(long, env = "KEYHOLD_NODE_ID", value_name = "ID")]
    pub node_id: Option<String>,
    /// Milliseconds between scheduler ticks (heartbeat, rotator lease,
    /// due rotations): 50 to 5000 [default: 2000].
    #[arg(long, env = "KEYHOLD_SCHEDULER_TICK_MS", value_name = "MS")]
    pub scheduler_tick_ms: Option<u64>,
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
    /// Database URL (`sqlite://…` or `postgres://…`).
    database_url: Option<String>,
    /// File holding the keystore passphrase.
    keystore_passphrase_file: Option<PathBuf>,
    /// Log filter.
    log: Option<String>,
    /// Serve plain HTTP on an address other than loopback.
    allow_plain_http: Option<bool>,
    /// Certificate chain (PEM) to serve HTTPS with.
    tls_certificate: Option<PathBuf>,
    /// Private key (PEM) of the certificate.
    tls_private_key: Option<PathBuf>,
    /// `software` or `pkcs11`.
    keystore: Option<String>,
    /// PKCS#11 module (shared library) of the HSM.
    pkcs11_module: Option<PathBuf>,
    /// Label of the token that holds keyhold's keys.
    pkcs11_token_label: Option<String>,
    /// Slot id of the token, instead of its label.
    pkcs11_slot: Option<u64>,
    /// File holding the token's user PIN.
    pkcs11_pin_file: Option<PathBuf>,
    /// RSA_2048, RSA_3072 or RSA_4096.
    kms_wrapping_key_spec: Option<String>,
    /// Use AWS KMS's FIPS endpoints.
    kms_use_fips: Option<bool>,
    /// Attempts per AWS KMS request, the first included.
    kms_max_attempts: Option<u32>,
    /// Seconds per attempt of an AWS KMS request.
    kms_request_timeout_seconds: Option<u64>,
    /// Jobs that run at the same time.
    job_concurrency: Option<u32>,
    /// This node's id in a cluster.
    node_id: Option<String>,
    /// Milliseconds between scheduler ticks.
    scheduler_tick_ms: Option<u64>,
}

/// The validated configuration the server runs with.
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// HTTPS, when a certificate is configured; plain HTTP otherwise.
    pub tls: Option<TlsConfig>,
    pub database: DatabaseUrl,
    pub keystore: KeystoreConfig,
    pub log: String,
    /// How keyhold reaches AWS KMS.
    pub kms: KmsConfig,
    /// Jobs that run at the same time.
    pub job_concurrency: usize,
    /// This node's id in a cluster.
    pub node_id: NodeId,
    /// Time between scheduler ticks (well under the rotator lease's life).
    pub scheduler_tick: Duration,
}

/// Where keys live.
#[derive(Clone, Debug)]
pub enum KeystoreConfig {
    /// Sealed under a master key kept in (or derived for) <data-dir>/keystore.
    Software(MasterKeySource),
    /// Inside a PKCS#11 token. `migrate_from` opens the software keystore
    /// a data directory used before, for `keyhold keystore migrate`.
    Pkcs11 {
        token: Pkcs11Settings,
        migrate_from: MasterKeySource,
    },
}

/// Secrets that come from the environment only (never a flag, which `ps`
/// and shell history would show). Passed in, so tests need not touch the
/// process environment.
#[derive(Default)]
pub struct EnvSecrets {
    /// KEYHOLD_KEYSTORE_PASSPHRASE.
    pub keystore_passphrase: Option<SecretString>,
    /// KEYHOLD_PKCS11_PIN.
    pub pkcs11_pin: Option<SecretString>,
}

impl EnvSecrets {
    pub fn from_process_env() -> Self {
        let read = |name: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .map(SecretString::from)
        };
        Self {
            keystore_passphrase: read(PASSPHRASE_ENV),
            pkcs11_pin: read(PIN_ENV),
        }
    }
}

/// How keyhold's AWS KMS clients behave; the same for every credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KmsConfig {
    pub wrapping_key_spec: WrappingKeySpec,
    pub use_fips: bool,
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    /// One attempt, from sending the request to reading the whole response.
    pub request_timeout: Duration,
}

impl Default for KmsConfig {
    fn default() -> Self {
        Self {
            wrapping_key_spec: WrappingKeySpec::default(),
            use_fips: false,
            max_attempts: DEFAULT_KMS_MAX_ATTEMPTS,
            request_timeout: Duration::from_secs(DEFAULT_KMS_REQUEST_TIMEOUT_SECONDS),
        }
    }
}

impl KmsConfig {
    /// The bound on one whole call, retries included. It follows from the
    /// settings users tune (attempts and their timeout) so that raising
    /// either never cuts calls short: every attempt may take its full
    /// timeout, and every back-off its maximum.
    pub fn operation_timeout(&self) -> Duration {
        self.request_timeout.saturating_mul(self.max_attempts)
            + SDK_MAX_BACKOFF.saturating_mul(self.max_attempts.saturating_sub(1))
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("data_dir", &self.data_dir)
            .field("listen", &self.listen)
            .field("tls", &self.tls)
            .field("database", &self.database)
            .field("keystore", &self.keystore)
            .field("log", &self.log)
            .field("kms", &self.kms)
            .field("job_concurrency", &self.job_concurrency)
            .field("node_id", &self.node_id)
            .field("scheduler_tick", &self.scheduler_tick)
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
        f.write_str(&mask_url(self.expose()))
    }
}

impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&mask_url(self.expose()))
    }
}

/// What is wrong with the configuration, and how to fix it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl ServeArgs {
    /// Merges the layers and validates them.
    pub fn resolve(self, secrets: EnvSecrets) -> Result<Config, ConfigError> {
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
        let tls = match (
            self.tls_certificate.or(file.tls_certificate),
            self.tls_private_key.or(file.tls_private_key),
        ) {
            (Some(certificate), Some(key)) => {
                Some(TlsConfig::load(&certificate, &key).map_err(|e| ConfigError(e.to_string()))?)
            }
            (None, None) => None,
            (Some(_), None) | (None, Some(_)) => {
                return Err(ConfigError(
                    "HTTPS needs both tls_certificate and tls_private_key (PEM files); give both, or neither for plain HTTP on loopback".into(),
                ));
            }
        };
        let allow_plain_http = self.allow_plain_http || file.allow_plain_http.unwrap_or(false);
        if tls.is_none() && !listen.ip().is_loopback() && !allow_plain_http {
            return Err(ConfigError(format!(
                "refusing to serve plain HTTP on {listen}, which is not a loopback address: sessions and passwords would cross the network unencrypted. Give tls_certificate and tls_private_key to serve HTTPS, listen on 127.0.0.1 behind a TLS proxy, or pass --allow-plain-http if the network is otherwise protected"
            )));
        }
        let database_raw = self.database_url.or(file.database_url).unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                data_dir.join("keyhold.db").display()
            )
        });
        DatabaseKind::of(&database_raw).map_err(ConfigError)?;
        let passphrase_file = self
            .keystore_passphrase_file
            .or(file.keystore_passphrase_file);
        let software_master = match (passphrase_file, secrets.keystore_passphrase) {
            (Some(path), _) => {
                MasterKeySource::Passphrase(read_secret_file("keystore passphrase", &path)?)
            }
            (None, Some(passphrase)) => MasterKeySource::Passphrase(passphrase),
            (None, None) => MasterKeySource::File,
        };
        let keystore = match self
            .keystore
            .or(file.keystore)
            .as_deref()
            .unwrap_or("software")
        {
            "software" => KeystoreConfig::Software(software_master),
            "pkcs11" => {
                let module = self.pkcs11_module.or(file.pkcs11_module).ok_or_else(|| {
                    ConfigError("the pkcs11 keystore needs pkcs11_module: the path of the HSM's PKCS#11 library, such as /usr/lib/softhsm/libsofthsm2.so".into())
                })?;
                let token = match (
                    self.pkcs11_token_label.or(file.pkcs11_token_label),
                    self.pkcs11_slot.or(file.pkcs11_slot),
                ) {
                    (Some(label), None) => TokenSelector::Label(label),
                    (None, Some(slot)) => TokenSelector::Slot(slot),
                    (Some(_), Some(_)) => {
                        return Err(ConfigError(
                            "give the token's pkcs11_token_label or its pkcs11_slot, not both"
                                .into(),
                        ));
                    }
                    (None, None) => {
                        return Err(ConfigError("the pkcs11 keystore needs pkcs11_token_label (or pkcs11_slot) to find its token".into()));
                    }
                };
                let pin = match (
                    self.pkcs11_pin_file.or(file.pkcs11_pin_file),
                    secrets.pkcs11_pin,
                ) {
                    (Some(path), _) => read_secret_file("PKCS#11 PIN", &path)?,
                    (None, Some(pin)) => pin,
                    (None, None) => {
                        return Err(ConfigError(format!(
                            "the pkcs11 keystore needs the token's user PIN: set {PIN_ENV} or pkcs11_pin_file (never a flag)"
                        )));
                    }
                };
                KeystoreConfig::Pkcs11 {
                    token: Pkcs11Settings { module, token, pin },
                    migrate_from: software_master,
                }
            }
            other => {
                return Err(ConfigError(format!(
                    "keystore '{other}' is not known: use software or pkcs11"
                )));
            }
        };
        let kms = KmsConfig {
            wrapping_key_spec: match self.kms_wrapping_key_spec.or(file.kms_wrapping_key_spec) {
                Some(raw) => parse_wrapping_key_spec(&raw)?,
                None => WrappingKeySpec::default(),
            },
            use_fips: self.kms_use_fips.or(file.kms_use_fips).unwrap_or(false),
            max_attempts: in_range(
                "kms_max_attempts",
                self.kms_max_attempts.or(file.kms_max_attempts),
                DEFAULT_KMS_MAX_ATTEMPTS,
                1..=MAX_KMS_MAX_ATTEMPTS,
                "attempts per AWS KMS request (1 means no retry)",
            )?,
            request_timeout: Duration::from_secs(in_range(
                "kms_request_timeout_seconds",
                self.kms_request_timeout_seconds
                    .or(file.kms_request_timeout_seconds),
                DEFAULT_KMS_REQUEST_TIMEOUT_SECONDS,
                1..=MAX_KMS_REQUEST_TIMEOUT_SECONDS,
                "seconds per AWS KMS request attempt",
            )?),
        };
        let job_concurrency = in_range(
            "job_concurrency",
            self.job_concurrency.or(file.job_concurrency),
            DEFAULT_JOB_CONCURRENCY,
            1..=MAX_JOB_CONCURRENCY,
            "jobs running at the same time",
        )?;
        let node_id = match self.node_id.or(file.node_id) {
            Some(raw) => NodeId::parse(&raw).map_err(|e| {
                ConfigError(format!(
                    "node_id: {} (set --node-id or KEYHOLD_NODE_ID)",
                    e.message
                ))
            })?,
            None => default_node_id()?,
        };
        let scheduler_tick = Duration::from_millis(in_range(
            "scheduler_tick_ms",
            self.scheduler_tick_ms.or(file.scheduler_tick_ms),
            DEFAULT_SCHEDULER_TICK_MS,
            50..=5000,
            "milliseconds between scheduler ticks",
        )?);
        Ok(Config {
            node_id,
            scheduler_tick,
            data_dir,
            listen,
            tls,
            database: DatabaseUrl(SecretString::from(database_raw)),
            keystore,
            log: self.log.or(file.log).unwrap_or_else(|| "info".to_owned()),
            kms,
            // At most MAX_JOB_CONCURRENCY, so the conversion cannot fail.
            job_concurrency: usize::try_from(job_concurrency).unwrap_or(1),
        })
    }
}

const DEFAULT_SCHEDULER_TICK_MS: u64 = 2000;

/// The host name when it makes a valid node id, else `keyhold`.
fn default_node_id() -> Result<NodeId, ConfigError> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .and_then(|name| NodeId::parse(name.trim()).ok())
        .map_or_else(|| NodeId::parse("keyhold"), Ok)
        .map_err(|e| ConfigError(format!("node_id: {}", e.message)))
}

/// RSA_2048, RSA_3072 or RSA_4096, as AWS names them (any case).
fn parse_wrapping_key_spec(raw: &str) -> Result<WrappingKeySpec, ConfigError> {
    [WrappingKeySpec::Rsa2048, WrappingKeySpec::Rsa3072, WrappingKeySpec::Rsa4096]
        .into_iter()
        .find(|spec| spec.aws_name().eq_ignore_ascii_case(raw.trim()))
        .ok_or_else(|| {
            ConfigError(format!(
                "kms_wrapping_key_spec '{}' is not a KMS wrapping key spec: use RSA_2048, RSA_3072 or RSA_4096 (RSA_4096 is AWS's recommendation)",
                raw.chars().filter(|c| !c.is_control()).take(40).collect::<String>()
            ))
        })
}

/// The value given, or the default, checked against its range. The setting
/// is named as in the configuration file; the flag and variable derive from it.
fn in_range<T>(
    name: &str,
    value: Option<T>,
    default: T,
    range: std::ops::RangeInclusive<T>,
    what: &str,
) -> Result<T, ConfigError>
where
    T: PartialOrd + std::fmt::Display + Copy,
{
    let value = value.unwrap_or(default);
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError(format!(
            "{name} is {value}, but the {what} must be between {} and {} (default {default}): set --{} or KEYHOLD_{} accordingly",
            range.start(),
            range.end(),
            name.replace('_', "-"),
            name.to_ascii_uppercase()
        )))
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

fn read_secret_file(what: &str, path: &Path) -> Result<SecretString, ConfigError> {
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
        ConfigError(format!(
            "cannot read the {what} file {}: {e}",
            path.display()
        ))
    })?);
    let secret = text.trim_end_matches(['\r', '\n']);
    if secret.is_empty() {
        return Err(ConfigError(format!(
            "the {what} file {} is empty",
            path.display()
        )));
    }
    Ok(SecretString::from(secret.to_owned()))
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
        let config = args.resolve(EnvSecrets::default()).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/from/flag"));
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.log, "debug");
        assert!(config.database.expose().contains("/from/flag/keyhold.db"));
    }

    #[test]
    fn unknown_file_keys_and_bad_addresses_are_refused() {
        let err = resolve_file("listne = \"127.0.0.1:9000\"\n").unwrap_err();
        assert!(err.to_string().contains("listne"), "{err}");
        let err = ServeArgs {
            listen: Some("localhost".into()),
            ..Default::default()
        }
        .resolve(EnvSecrets::default())
        .unwrap_err();
        assert!(err.to_string().contains("not an IP address"));
    }

    #[test]
    fn plain_http_beyond_loopback_needs_consent() {
        let args = ServeArgs {
            listen: Some("0.0.0.0:8600".into()),
            ..Default::default()
        };
        assert!(args.clone().resolve(EnvSecrets::default()).is_err());
        assert!(
            ServeArgs {
                allow_plain_http: true,
                ..args
            }
            .resolve(EnvSecrets::default())
            .is_ok()
        );
    }

    #[test]
    fn tls_needs_a_readable_certificate_and_key_and_never_shows_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let garbage_key = dir.path().join("key.pem");
        std::fs::write(
            &garbage_key,
            "-----BEGIN PRIVATE KEY-----\nS3cretKeyBytesS3cretKeyBytes\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let not_a_certificate = dir.path().join("cert.pem");
        std::fs::write(&not_a_certificate, "hello\n").unwrap();
        let with = |certificate: Option<&Path>, key: Option<&Path>| {
            ServeArgs {
                listen: Some("0.0.0.0:8600".into()),
                tls_certificate: certificate.map(Path::to_owned),
                tls_private_key: key.map(Path::to_owned),
                ..Default::default()
            }
            .resolve(EnvSecrets::default())
            .map(drop)
            .unwrap_err()
            .to_string()
        };
        let message = with(Some(&not_a_certificate), None);
        assert!(
            message.contains("both tls_certificate and tls_private_key"),
            "{message}"
        );
        let message = with(None, Some(&garbage_key));
        assert!(
            message.contains("both tls_certificate and tls_private_key"),
            "{message}"
        );
        let missing = dir.path().join("missing.pem");
        let message = with(Some(&missing), Some(&garbage_key));
        assert!(
            message.contains("missing.pem") && message.contains("PEM"),
            "{message}"
        );
        let message = with(Some(&not_a_certificate), Some(&garbage_key));
        assert!(message.contains("no CERTIFICATE"), "{message}");
        let message = with(
            Some(Path::new(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/tls/certificate.pem"
            ))),
            Some(&garbage_key),
        );
        assert!(message.contains("key.pem"), "{message}");
        assert!(
            !message.contains("S3cret"),
            "the key's contents never show: {message}"
        );
    }

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

    /// The configuration from a file holding `text`, and nothing else.
    fn resolve_file(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keyhold.toml");
        std::fs::write(&file, text).unwrap();
        ServeArgs {
            config: Some(file),
            ..Default::default()
        }
        .resolve(EnvSecrets::default())
    }

    fn database_of(url: &str) -> Result<Config, ConfigError> {
        ServeArgs {
            database_url: Some(url.to_owned()),
            ..Default::default()
        }
        .resolve(EnvSecrets::default())
    }

    #[test]
    fn sqlite_and_postgres_urls_are_accepted() {
        for url in [
            "sqlite:///var/lib/keyhold/keyhold.db?mode=rwc",
            "sqlite:keyhold.db",
            "/var/lib/keyhold/keyhold.db",
            "postgres://keyhold@db.internal:5432/keyhold",
            "postgresql://keyhold:s3cret@db.internal/keyhold?sslmode=require",
        ] {
            let config = database_of(url).unwrap();
            assert_eq!(config.database.expose(), url);
        }
        let config = resolve_file("database_url = \"postgres://k@db/keyhold\"\n").unwrap();
        assert_eq!(config.database.expose(), "postgres://k@db/keyhold");
    }

    #[test]
    fn other_database_urls_are_refused_naming_both_backends_without_the_password() {
        for url in [
            "mysql://keyhold:s3cret@db/keyhold",
            "postgre://keyhold:s3cret@db/keyhold",
        ] {
            let err = database_of(url).unwrap_err().to_string();
            assert!(err.contains("sqlite://"), "{err}");
            assert!(err.contains("postgres://"), "{err}");
            assert!(!err.contains("s3cret"), "{err}");
            assert!(err.contains("keyhold:***@db"), "{err}");
        }
    }

    #[test]
    fn kms_and_job_settings_default_to_the_documented_values() {
        let config = ServeArgs::default().resolve(EnvSecrets::default()).unwrap();
        assert_eq!(config.kms, KmsConfig::default());
        assert_eq!(config.kms.wrapping_key_spec, WrappingKeySpec::Rsa4096);
        assert!(!config.kms.use_fips);
        assert_eq!(config.kms.max_attempts, 5);
        assert_eq!(config.kms.request_timeout, Duration::from_secs(10));
        assert_eq!(config.job_concurrency, 8);
        // 5 attempts of 10 s and 4 back-offs of at most 20 s.
        assert_eq!(config.kms.operation_timeout(), Duration::from_secs(130));
    }

    #[test]
    fn kms_and_job_settings_layer_like_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keyhold.toml");
        std::fs::write(
            &file,
            "kms_wrapping_key_spec = \"RSA_3072\"\nkms_use_fips = true\nkms_max_attempts = 3\nkms_request_timeout_seconds = 30\njob_concurrency = 2\n",
        )
        .unwrap();
        let from_file = ServeArgs {
            config: Some(file.clone()),
            ..Default::default()
        }
        .resolve(EnvSecrets::default())
        .unwrap();
        assert_eq!(
            from_file.kms,
            KmsConfig {
                wrapping_key_spec: WrappingKeySpec::Rsa3072,
                use_fips: true,
                max_attempts: 3,
                request_timeout: Duration::from_secs(30),
            }
        );
        assert_eq!(from_file.job_concurrency, 2);
        let flags = ServeArgs {
            config: Some(file),
            kms_wrapping_key_spec: Some("rsa_2048".into()),
            kms_use_fips: Some(false),
            kms_max_attempts: Some(1),
            kms_request_timeout_seconds: Some(5),
            job_concurrency: Some(16),
            ..Default::default()
        }
        .resolve(EnvSecrets::default())
        .unwrap();
        assert_eq!(flags.kms.wrapping_key_spec, WrappingKeySpec::Rsa2048);
        assert!(
            !flags.kms.use_fips,
            "a flag turns off what the file turned on"
        );
        assert_eq!(flags.kms.max_attempts, 1);
        assert_eq!(flags.kms.request_timeout, Duration::from_secs(5));
        assert_eq!(flags.job_concurrency, 16);
    }

    #[test]
    fn kms_and_job_settings_out_of_range_are_refused_with_the_way_out() {
        let refuse = |args: ServeArgs, needle: &str| {
            let err = args.resolve(EnvSecrets::default()).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        };
        refuse(
            ServeArgs {
                kms_wrapping_key_spec: Some("RSA_1024".into()),
                ..Default::default()
            },
            "RSA_2048, RSA_3072 or RSA_4096",
        );
        refuse(
            ServeArgs {
                kms_max_attempts: Some(0),
                ..Default::default()
            },
            "--kms-max-attempts",
        );
        refuse(
            ServeArgs {
                kms_max_attempts: Some(11),
                ..Default::default()
            },
            "between 1 and 10",
        );
        refuse(
            ServeArgs {
                kms_request_timeout_seconds: Some(0),
                ..Default::default()
            },
            "KEYHOLD_KMS_REQUEST_TIMEOUT_SECONDS",
        );
        refuse(
            ServeArgs {
                kms_request_timeout_seconds: Some(301),
                ..Default::default()
            },
            "between 1 and 300",
        );
        refuse(
            ServeArgs {
                job_concurrency: Some(0),
                ..Default::default()
            },
            "job_concurrency is 0",
        );
        refuse(
            ServeArgs {
                job_concurrency: Some(65),
                ..Default::default()
            },
            "between 1 and 64",
        );
    }

    #[test]
    fn kms_flags_parse_from_the_command_line() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let cli = Cli::try_parse_from([
            "keyhold",
            "--kms-wrapping-key-spec",
            "RSA_2048",
            "--kms-use-fips",
            "--kms-max-attempts",
            "2",
            "--kms-request-timeout-seconds",
            "7",
            "--job-concurrency",
            "3",
        ])
        .unwrap();
        assert_eq!(cli.serve.kms_use_fips, Some(true));
        let config = cli.serve.resolve(EnvSecrets::default()).unwrap();
        assert_eq!(config.kms.wrapping_key_spec, WrappingKeySpec::Rsa2048);
        assert_eq!(config.kms.max_attempts, 2);
        assert_eq!(config.kms.request_timeout, Duration::from_secs(7));
        assert_eq!(config.job_concurrency, 3);
        let off = Cli::try_parse_from(["keyhold", "--kms-use-fips=false"]).unwrap();
        assert_eq!(off.serve.kms_use_fips, Some(false));
    }

    #[test]
    fn passphrase_sources() {
        let config = ServeArgs::default()
            .resolve(EnvSecrets {
                keystore_passphrase: Some(SecretString::from("x".to_owned())),
                ..Default::default()
            })
            .unwrap();
        assert!(matches!(
            config.keystore,
            KeystoreConfig::Software(MasterKeySource::Passphrase(_))
        ));
        assert!(matches!(
            ServeArgs::default()
                .resolve(EnvSecrets::default())
                .unwrap()
                .keystore,
            KeystoreConfig::Software(MasterKeySource::File)
        ));
    }

    #[test]
    fn the_pkcs11_keystore_needs_module_token_and_pin_and_keeps_the_pin_out_of_sight() {
        let base = ServeArgs {
            keystore: Some("pkcs11".into()),
            ..Default::default()
        };
        let err = base
            .clone()
            .resolve(EnvSecrets::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("pkcs11_module"), "{err}");
        let with_module = ServeArgs {
            pkcs11_module: Some("/usr/lib/softhsm/libsofthsm2.so".into()),
            ..base
        };
        let err = with_module
            .clone()
            .resolve(EnvSecrets::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("pkcs11_token_label"), "{err}");
        let with_token = ServeArgs {
            pkcs11_token_label: Some("keyhold".into()),
            ..with_module
        };
        let err = with_token
            .clone()
            .resolve(EnvSecrets::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains(PIN_ENV), "{err}");
        let pin = EnvSecrets {
            pkcs11_pin: Some(SecretString::from("987654".to_owned())),
            ..Default::default()
        };
        let config = with_token.resolve(pin).unwrap();
        assert!(matches!(config.keystore, KeystoreConfig::Pkcs11 { .. }));
        assert!(
            !format!("{config:?}").contains("987654"),
            "the PIN never reaches Debug output"
        );
        let err = ServeArgs {
            keystore: Some("tpm".into()),
            ..Default::default()
        }
        .resolve(EnvSecrets::default())
        .unwrap_err()
        .to_string();
        assert!(err.contains("software or pkcs11"), "{err}");
    }
}
