//! Configuration. Rules:
//! - Layered: built-in defaults, then a TOML file, then environment variables
//!   (`KEYHOLD_*`), then command-line flags; a flag beats its variable, and
//!   both beat the file.
//! - One struct per area (`listen`, `data`, `keystore`, `kms`, `jobs`,
//!   `cluster`, `logging`, `audit`, `login`, `xks`) declares each of its settings once: that struct is
//!   the area's flags and its keys of the file (see `layering`), and
//!   `resolve` validates it into what the server runs with.
//! - The file's keys sit at the top level and unknown keys are an error, so
//!   a misspelt setting is caught rather than silently ignored.
//! - Secrets (keystore passphrase, PKCS#11 PIN) come from a file or the
//!   environment only ([`EnvSecrets`]), never from a flag.
//!
//! The README's configuration table lists every setting; a test below keeps
//! it true to the flags.

mod approval_webhook;
mod audit;
mod cluster;
mod data;
mod jobs;
mod keystore;
mod kms;
mod layering;
mod listen;
mod logging;
mod login;
mod xks;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use keyhold_core::names::NodeId;
use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};

pub use approval_webhook::{ApprovalWebhookArgs, WEBHOOK_SECRET_ENV};
pub use audit::{
    AuditArgs, AuditConfig, DEFAULT_AUDIT_CHECKPOINT_FILE, DEFAULT_AUDIT_CHECKPOINT_SECONDS,
};
pub use cluster::{ClusterArgs, ClusterConfig};
pub use data::{DEFAULT_DATA_DIR, DataArgs, DataConfig, DatabaseUrl};
pub use jobs::{DEFAULT_JOB_CONCURRENCY, JobsArgs, MAX_JOB_CONCURRENCY};
pub use keystore::{EnvSecrets, KeystoreArgs, KeystoreConfig, PASSPHRASE_ENV, PIN_ENV};
pub use kms::{
    DEFAULT_KMS_MAX_ATTEMPTS, DEFAULT_KMS_REQUEST_TIMEOUT_SECONDS, KmsArgs, KmsConfig,
    MAX_KMS_MAX_ATTEMPTS, MAX_KMS_REQUEST_TIMEOUT_SECONDS,
};
pub use listen::{DEFAULT_LISTEN, ListenArgs, ListenConfig};
pub use logging::LogArgs;
pub use login::LoginArgs;
pub use xks::{DEFAULT_XKS_DIGEST_MINUTES, XksArgs, XksConfig, default_usage_log};

use crate::client_address::TrustedProxies;
use crate::login_throttle::ThrottleSettings;
use crate::tls::TlsConfig;

/// Flags of `keyhold serve` and `keyhold init`. Each flag also reads the
/// environment variable named beside it; a flag beats its variable, and
/// both beat the configuration file.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ServeArgs {
    /// Configuration file (TOML); see the README for its keys.
    #[arg(long, env = "KEYHOLD_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub listen: ListenArgs,
    #[command(flatten)]
    pub log: LogArgs,
    #[command(flatten)]
    pub keystore: KeystoreArgs,
    #[command(flatten)]
    pub kms: KmsArgs,
    #[command(flatten)]
    pub jobs: JobsArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub audit: AuditArgs,
    #[command(flatten)]
    pub login: LoginArgs,
    #[command(flatten)]
    pub approval_webhook: ApprovalWebhookArgs,
    #[command(flatten)]
    pub xks: XksArgs,
}

/// The validated configuration the server runs with.
pub struct Config {
    pub data_dir: PathBuf,
    /// `serve` refuses an empty data directory rather than initialising it.
    pub require_initialised: bool,
    /// Where backups are written.
    pub backup_dir: PathBuf,
    /// Where signed audit archives are written.
    pub audit_archive_dir: PathBuf,
    pub listen: std::net::SocketAddr,
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
    /// Signed audit checkpoints: where and how often.
    pub audit: AuditConfig,
    /// The per-address login throttle.
    pub login_throttle: ThrottleSettings,
    /// The reverse proxies whose X-Forwarded-For the throttle believes.
    pub trusted_proxies: TrustedProxies,
    /// Where approval events are POSTed, signed (none: nowhere).
    pub approval_webhook: Option<crate::approval_webhook::WebhookConfig>,
    /// The AWS KMS external key store proxy: on or off, its usage log and digest.
    pub xks: XksConfig,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("data_dir", &self.data_dir)
            .field("require_initialised", &self.require_initialised)
            .field("listen", &self.listen)
            .field("tls", &self.tls)
            .field("database", &self.database)
            .field("keystore", &self.keystore)
            .field("log", &self.log)
            .field("kms", &self.kms)
            .field("job_concurrency", &self.job_concurrency)
            .field("node_id", &self.node_id)
            .field("scheduler_tick", &self.scheduler_tick)
            .field("audit", &self.audit)
            .field("login_throttle", &self.login_throttle)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("approval_webhook", &self.approval_webhook)
            .field("xks", &self.xks)
            .finish()
    }
}

impl Config {
    pub fn keystore_dir(&self) -> PathBuf {
        self.data_dir.join("keystore")
    }
}

/// What is wrong with the configuration, and how to fix it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl ServeArgs {
    /// Lays these flags over the configuration file and validates the
    /// result, area by area.
    pub fn resolve(self, secrets: EnvSecrets) -> Result<Config, ConfigError> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => Self::default(),
        };
        let Self {
            config: _,
            data,
            listen,
            log,
            keystore,
            kms,
            jobs,
            cluster,
            audit,
            login,
            approval_webhook,
            xks,
        } = self.over(file);
        let webhook_secret = secrets.approval_webhook_secret.clone();
        let ListenConfig { address, tls } = listen.resolve()?;
        let DataConfig {
            data_dir,
            database,
            require_initialised,
            backup_dir,
            audit_archive_dir,
        } = data.resolve()?;
        let audit = audit.resolve(&data_dir)?;
        let keystore = keystore.resolve(secrets)?;
        let kms = kms.resolve()?;
        let job_concurrency = jobs.resolve()?;
        let ClusterConfig {
            node_id,
            scheduler_tick,
        } = cluster.resolve()?;
        let xks = xks.resolve(&data_dir, &node_id)?;
        let (login_throttle, trusted_proxies) = login.resolve()?;
        let approval_webhook = approval_webhook.resolve(webhook_secret)?;
        Ok(Config {
            data_dir,
            require_initialised,
            backup_dir,
            audit_archive_dir,
            listen: address,
            tls,
            database,
            keystore,
            log: log.resolve(),
            kms,
            job_concurrency,
            node_id,
            scheduler_tick,
            audit,
            login_throttle,
            trusted_proxies,
            approval_webhook,
            xks,
        })
    }

    /// These settings laid over `lower`'s, area by area. The file names no
    /// other file, so `config` is this layer's.
    fn over(self, lower: Self) -> Self {
        Self {
            config: self.config,
            data: self.data.over(lower.data),
            listen: self.listen.over(lower.listen),
            log: self.log.over(lower.log),
            keystore: self.keystore.over(lower.keystore),
            kms: self.kms.over(lower.kms),
            jobs: self.jobs.over(lower.jobs),
            cluster: self.cluster.over(lower.cluster),
            audit: self.audit.over(lower.audit),
            login: self.login.over(lower.login),
            approval_webhook: self.approval_webhook.over(lower.approval_webhook),
            xks: self.xks.over(lower.xks),
        }
    }

    /// Every key of the configuration file, area by area.
    fn file_keys() -> &'static [&'static str] {
        static KEYS: OnceLock<Vec<&'static str>> = OnceLock::new();
        KEYS.get_or_init(|| {
            [
                DataArgs::KEYS,
                ListenArgs::KEYS,
                LogArgs::KEYS,
                KeystoreArgs::KEYS,
                KmsArgs::KEYS,
                JobsArgs::KEYS,
                ClusterArgs::KEYS,
                AuditArgs::KEYS,
                LoginArgs::KEYS,
                ApprovalWebhookArgs::KEYS,
                XksArgs::KEYS,
            ]
            .concat()
        })
    }

    /// Hands the value of a file key to the area that owns it.
    fn read_key<'de, A: MapAccess<'de>>(
        &mut self,
        key: &str,
        map: &mut A,
    ) -> Result<bool, A::Error> {
        Ok(self.data.read_key(key, map)?
            || self.listen.read_key(key, map)?
            || self.log.read_key(key, map)?
            || self.keystore.read_key(key, map)?
            || self.kms.read_key(key, map)?
            || self.jobs.read_key(key, map)?
            || self.cluster.read_key(key, map)?
            || self.audit.read_key(key, map)?
            || self.login.read_key(key, map)?
            || self.approval_webhook.read_key(key, map)?
            || self.xks.read_key(key, map)?)
    }
}

/// The configuration file, read as one layer of [`ServeArgs`] (without
/// `config`).
struct FileLayer(ServeArgs);

impl<'de> Deserialize<'de> for FileLayer {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FileVisitor;
        impl<'de> Visitor<'de> for FileVisitor {
            type Value = FileLayer;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a table of keyhold settings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FileLayer, A::Error> {
                let mut file = ServeArgs::default();
                while let Some(FileKey(key)) = map.next_key()? {
                    if !file.read_key(key, &mut map)? {
                        return Err(de::Error::unknown_field(key, ServeArgs::file_keys()));
                    }
                }
                Ok(FileLayer(file))
            }
        }
        deserializer.deserialize_map(FileVisitor)
    }
}

/// A key of the configuration file. An unknown key fails here, as the key is
/// read, so the error points at it.
struct FileKey(&'static str);

impl<'de> Deserialize<'de> for FileKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = FileKey;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a keyhold setting")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<FileKey, E> {
                let keys = ServeArgs::file_keys();
                keys.iter()
                    .copied()
                    .find(|known| *known == key)
                    .map(FileKey)
                    .ok_or_else(|| E::unknown_field(key, keys))
            }
        }
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

fn read_file(path: &Path) -> Result<ServeArgs, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError(format!(
            "cannot read configuration file {}: {e}",
            path.display()
        ))
    })?;
    toml::from_str::<FileLayer>(&text)
        .map(|FileLayer(file)| file)
        .map_err(|e| {
            ConfigError(format!(
                "configuration file {} is invalid: {e}",
                path.display()
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use keyhold_aws::WrappingKeySpec;
    use keyhold_keystore::MasterKeySource;
    use secrecy::SecretString;

    use super::*;

    /// The default flags, changed by `set`.
    fn args(set: impl FnOnce(&mut ServeArgs)) -> ServeArgs {
        let mut args = ServeArgs::default();
        set(&mut args);
        args
    }

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keyhold.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\ndata_dir = \"/from/file\"\nlog = \"debug\"\n",
        )
        .unwrap();
        let args = args(|a| {
            a.config = Some(file);
            a.data.data_dir = Some("/from/flag".into());
        });
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
        let err = args(|a| a.listen.listen = Some("localhost".into()))
            .resolve(EnvSecrets::default())
            .unwrap_err();
        assert!(err.to_string().contains("not an IP address"));
    }

    #[test]
    fn file_errors_point_at_the_key_or_value_and_list_the_keys() {
        let err = resolve_file("log = \"info\"\nlistne = \"127.0.0.1:9000\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2, column 1"), "{err}");
        assert!(
            err.contains("unknown field `listne`, expected one of `data_dir`"),
            "{err}"
        );
        for key in ServeArgs::file_keys() {
            assert!(err.contains(&format!("`{key}`")), "{key}: {err}");
        }
        let err = resolve_file("log = \"info\"\nkms_max_attempts = \"3\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2, column 20"), "{err}");
        assert!(err.contains("expected u32"), "{err}");
        let err = resolve_file("config = \"other.toml\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `config`"), "{err}");
    }

    #[test]
    fn every_setting_reads_from_the_file() {
        let config = resolve_file(
            "data_dir = \"/d\"\nlisten = \"0.0.0.0:9001\"\nallow_plain_http = true\n\
             database_url = \"postgres://k@db/keyhold\"\nlog = \"warn\"\n\
             keystore = \"pkcs11\"\npkcs11_module = \"/m.so\"\npkcs11_slot = 3\n\
             kms_wrapping_key_spec = \"RSA_2048\"\nkms_use_fips = true\nkms_max_attempts = 2\n\
             kms_request_timeout_seconds = 4\njob_concurrency = 5\nnode_id = \"node-f\"\n\
             scheduler_tick_ms = 60\n",
        );
        // The PIN is environment-only, so the file alone stops there.
        let err = config.unwrap_err().to_string();
        assert!(err.contains(PIN_ENV), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let pin_file = dir.path().join("pin");
        std::fs::write(&pin_file, "1234\n").unwrap();
        let file = dir.path().join("keyhold.toml");
        std::fs::write(
            &file,
            format!(
                "data_dir = \"/d\"\nlisten = \"0.0.0.0:9001\"\nallow_plain_http = true\n\
                 log = \"warn\"\nkeystore = \"pkcs11\"\npkcs11_module = \"/m.so\"\n\
                 pkcs11_slot = 3\npkcs11_pin_file = {pin_file:?}\n\
                 kms_use_fips = true\njob_concurrency = 5\nnode_id = \"node-f\"\n\
                 scheduler_tick_ms = 60\n"
            ),
        )
        .unwrap();
        let config = args(|a| a.config = Some(file))
            .resolve(EnvSecrets::default())
            .unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/d"));
        assert_eq!(config.listen.port(), 9001);
        assert_eq!(config.log, "warn");
        assert!(matches!(config.keystore, KeystoreConfig::Pkcs11 { .. }));
        assert!(config.kms.use_fips);
        assert_eq!(config.job_concurrency, 5);
        assert_eq!(config.node_id.as_str(), "node-f");
        assert_eq!(config.scheduler_tick, Duration::from_millis(60));
    }

    #[test]
    fn plain_http_beyond_loopback_needs_consent() {
        let args = args(|a| a.listen.listen = Some("0.0.0.0:8600".into()));
        assert!(args.clone().resolve(EnvSecrets::default()).is_err());
        let mut consenting = args;
        consenting.listen.allow_plain_http = true;
        assert!(consenting.resolve(EnvSecrets::default()).is_ok());
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
            args(|a| {
                a.listen.listen = Some("0.0.0.0:8600".into());
                a.listen.tls_certificate = certificate.map(Path::to_owned);
                a.listen.tls_private_key = key.map(Path::to_owned);
            })
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

    /// The configuration from a file holding `text`, and nothing else.
    fn resolve_file(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keyhold.toml");
        std::fs::write(&file, text).unwrap();
        args(|a| a.config = Some(file)).resolve(EnvSecrets::default())
    }

    fn database_of(url: &str) -> Result<Config, ConfigError> {
        args(|a| a.data.database_url = Some(url.to_owned())).resolve(EnvSecrets::default())
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
    fn audit_streams_are_off_by_default_and_read_from_the_file() {
        let config = ServeArgs::default().resolve(EnvSecrets::default()).unwrap();
        assert!(config.audit.stream.is_off());
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("stream.jsonl");
        let config = resolve_file(&format!(
            "audit_syslog_address = \"siem.example.com:6514\"\naudit_syslog_facility = \"local4\"\n\
             audit_json_file = {json:?}\naudit_stream_from = \"now\"\n"
        ))
        .unwrap();
        let stream = &config.audit.stream;
        assert_eq!(stream.from, crate::audit_stream::StartFrom::Now);
        assert_eq!(stream.json_file.as_deref(), Some(json.as_path()));
        let syslog = format!("{:?}", stream.syslog.as_ref().unwrap());
        assert!(
            syslog.contains("siem.example.com")
                && syslog.contains("6514")
                && syslog.contains("local4"),
            "{syslog}"
        );
        for (text, says) in [
            (
                "audit_syslog_address = \"siem.example.com\"\n",
                "--audit-syslog-address",
            ),
            (
                "audit_syslog_tls_ca_file = \"/ca.pem\"\n",
                "audit_syslog_address is not",
            ),
            (
                "audit_syslog_address = \"h:1\"\naudit_syslog_facility = \"x\"\n",
                "KEYHOLD_AUDIT_SYSLOG_FACILITY",
            ),
            ("audit_stream_from = \"later\"\n", "--audit-stream-from"),
        ] {
            let err = resolve_file(text).unwrap_err().to_string();
            assert!(err.contains(says), "{text}: {err}");
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
    fn the_login_throttle_trips_before_the_default_lockout_and_is_configurable() {
        let config = ServeArgs::default().resolve(EnvSecrets::default()).unwrap();
        assert_eq!(config.login_throttle, ThrottleSettings::default());
        let lockout = keyhold_core::settings::Settings::default();
        assert!(config.login_throttle.failures < lockout.lockout_threshold);
        assert!(config.login_throttle.window_minutes >= lockout.lockout_minutes);
        let config = resolve_file(
            "login_throttle_failures = 50\nlogin_throttle_minutes = 2\nlogin_throttle_addresses = 500\n",
        )
        .unwrap();
        assert_eq!(
            config.login_throttle,
            ThrottleSettings {
                failures: 50,
                window_minutes: 2,
                max_addresses: 500
            }
        );
        let err = resolve_file("login_throttle_failures = 0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("--login-throttle-failures"), "{err}");
        let err = resolve_file("login_throttle_addresses = 10\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("between 100 and 1000000"), "{err}");
        let config = resolve_file("login_trusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n").unwrap();
        assert_eq!(
            config.trusted_proxies,
            TrustedProxies::parse(&["10.0.0.0/8".into(), "::1".into()]).unwrap()
        );
        let err = resolve_file("login_trusted_proxies = [\"proxy.example\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("--login-trusted-proxies"), "{err}");
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
        let from_file = args(|a| a.config = Some(file.clone()))
            .resolve(EnvSecrets::default())
            .unwrap();
        assert_eq!(
            from_file.kms,
            KmsConfig {
                wrapping_key_spec: WrappingKeySpec::Rsa3072,
                use_fips: true,
                max_attempts: 3,
                request_timeout: Duration::from_secs(30),
                endpoints: keyhold_core::credential::EndpointPolicy::none(),
                quotas: keyhold_aws::KmsQuotas::default(),
                credential_quotas: keyhold_aws::CredentialQuotas::default(),
            }
        );
        assert_eq!(from_file.job_concurrency, 2);
        let flags = args(|a| {
            a.config = Some(file);
            a.kms.kms_wrapping_key_spec = Some("rsa_2048".into());
            a.kms.kms_use_fips = Some(false);
            a.kms.kms_max_attempts = Some(1);
            a.kms.kms_request_timeout_seconds = Some(5);
            a.jobs.job_concurrency = Some(16);
        })
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
            args(|a| a.kms.kms_wrapping_key_spec = Some("RSA_1024".into())),
            "RSA_2048, RSA_3072 or RSA_4096",
        );
        refuse(
            args(|a| a.kms.kms_max_attempts = Some(0)),
            "--kms-max-attempts",
        );
        refuse(
            args(|a| a.kms.kms_max_attempts = Some(11)),
            "between 1 and 10",
        );
        refuse(
            args(|a| a.kms.kms_request_timeout_seconds = Some(0)),
            "KEYHOLD_KMS_REQUEST_TIMEOUT_SECONDS",
        );
        refuse(
            args(|a| a.kms.kms_request_timeout_seconds = Some(301)),
            "between 1 and 300",
        );
        refuse(
            args(|a| a.jobs.job_concurrency = Some(0)),
            "job_concurrency is 0",
        );
        refuse(
            args(|a| a.jobs.job_concurrency = Some(65)),
            "between 1 and 64",
        );
    }

    #[test]
    fn kms_endpoint_overrides_come_from_the_allow_list_https_or_loopback_with_consent() {
        use keyhold_core::credential::Endpoint;
        let peer = Endpoint::parse("http://127.0.0.1:4566").unwrap();
        let vpce = Endpoint::parse("https://vpce-1.kms.eu-west-1.vpce.amazonaws.com").unwrap();
        let none = ServeArgs::default().resolve(EnvSecrets::default()).unwrap();
        assert!(none.kms.endpoints.allowed().is_empty());
        let file = resolve_file(
            "kms_endpoint_allow = [\"https://vpce-1.kms.eu-west-1.vpce.amazonaws.com\", \"http://127.0.0.1:4566\"]\nkms_endpoint_allow_plain_http = true\n",
        )
        .unwrap();
        assert_eq!(file.kms.endpoints.allowed(), [vpce.clone(), peer.clone()]);
        assert!(file.kms.endpoints.check(&peer).is_ok());
        let refuse = |text: &str, needle: &str| {
            let err = resolve_file(text).map(drop).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        };
        refuse(
            "kms_endpoint_allow = [\"http://127.0.0.1:4566\"]\n",
            "kms_endpoint_allow_plain_http",
        );
        refuse(
            "kms_endpoint_allow = [\"http://kms.example.com\"]\nkms_endpoint_allow_plain_http = true\n",
            "only over HTTPS",
        );
        refuse("kms_endpoint_allow = [\"ftp://x\"]\n", "kms_endpoint_allow");
        use clap::Parser;
        let cli = Cli::try_parse_from([
            "keyhold",
            "--kms-endpoint-allow",
            "http://127.0.0.1:4566,https://vpce-1.kms.eu-west-1.vpce.amazonaws.com",
            "--kms-endpoint-allow-plain-http",
        ])
        .unwrap();
        let config = cli.serve.resolve(EnvSecrets::default()).unwrap();
        assert_eq!(config.kms.endpoints.allowed(), [peer, vpce]);
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    #[test]
    fn kms_quotas_default_to_aws_and_layer_file_under_flags() {
        use keyhold_aws::{KmsOperation as Op, Rate};
        use keyhold_core::names::CredentialName;
        let prod = CredentialName::parse("prod").unwrap();
        let none = ServeArgs::default().resolve(EnvSecrets::default()).unwrap();
        assert!(none.kms.quotas.is_empty());
        assert_eq!(
            none.kms.quotas.rate(Op::GetParametersForImport),
            Rate::per_second(1)
        );
        assert_eq!(none.kms.credential_quotas.credentials().count(), 0);

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keyhold.toml");
        std::fs::write(
            &file,
            "kms_quotas = [\"GetParametersForImport=100\", \"*=50\"]\n\
             kms_credential_quotas = [\"prod:CreateKey=0.25\"]\n",
        )
        .unwrap();
        let from_file = args(|a| a.config = Some(file.clone()))
            .resolve(EnvSecrets::default())
            .unwrap();
        let quotas = &from_file.kms.quotas;
        assert_eq!(
            quotas.rate(Op::GetParametersForImport),
            Rate::per_second(100)
        );
        assert_eq!(quotas.rate(Op::DisableKey), Rate::per_second(50));
        let of_prod = from_file
            .kms
            .credential_quotas
            .for_credential(&prod, quotas);
        assert_eq!(of_prod.rate(Op::CreateKey), Rate::parse("0.25").unwrap());
        assert_eq!(
            of_prod.rate(Op::GetParametersForImport),
            Rate::per_second(100)
        );

        // Flags (and their variables, which clap splits on the same commas)
        // replace the file's list whole, not entry by entry.
        use clap::Parser;
        let cli = Cli::try_parse_from([
            "keyhold",
            "--kms-quotas",
            "GetParametersForImport=2.5,CreateKey=10",
            "--kms-credential-quotas",
            "prod:*=1",
        ])
        .unwrap();
        let mut flags = cli.serve;
        flags.config = Some(file);
        let config = flags.resolve(EnvSecrets::default()).unwrap();
        let quotas = &config.kms.quotas;
        assert_eq!(
            quotas.rate(Op::GetParametersForImport),
            Rate::parse("2.5").unwrap()
        );
        assert_eq!(quotas.rate(Op::CreateKey), Rate::per_second(10));
        assert_eq!(
            quotas.rate(Op::DisableKey),
            Rate::per_second(5),
            "the file's *=50 is replaced with the rest of its list"
        );
        let of_prod = config.kms.credential_quotas.for_credential(&prod, quotas);
        for op in Op::ALL {
            assert_eq!(of_prod.rate(op), Rate::per_second(1), "{op}");
        }
    }

    #[test]
    fn bad_kms_quotas_are_refused_saying_what_is_wrong_and_where_to_fix_it() {
        let refuse = |args: ServeArgs, needles: &[&str]| {
            let err = args.resolve(EnvSecrets::default()).unwrap_err().to_string();
            for needle in needles {
                assert!(err.contains(needle), "{needle}: {err}");
            }
        };
        refuse(
            args(|a| a.kms.kms_quotas = Some(vec!["Encrypt=10".into()])),
            &[
                "kms_quotas: 'Encrypt' is not an AWS KMS operation keyhold sends",
                "GetParametersForImport",
                "CancelKeyDeletion",
                "--kms-quotas",
                "KEYHOLD_KMS_QUOTAS",
            ],
        );
        refuse(
            args(|a| a.kms.kms_quotas = Some(vec!["CreateKey=0".into()])),
            &["more than 0"],
        );
        refuse(
            args(|a| a.kms.kms_quotas = Some(vec!["CreateKey=fast".into()])),
            &["requests per second"],
        );
        refuse(
            args(|a| a.kms.kms_quotas = Some(vec!["CreateKey=250000".into()])),
            &["at most 100000"],
        );
        refuse(
            args(|a| a.kms.kms_credential_quotas = Some(vec!["CreateKey=1".into()])),
            &[
                "kms_credential_quotas",
                "CREDENTIAL:OPERATION=RATE",
                "KEYHOLD_KMS_CREDENTIAL_QUOTAS",
            ],
        );
        let err = resolve_file("kms_quotas = \"CreateKey=1\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("kms_quotas") || err.contains("sequence"),
            "{err}"
        );
    }

    #[test]
    fn kms_flags_parse_from_the_command_line() {
        use clap::Parser;
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
        assert_eq!(cli.serve.kms.kms_use_fips, Some(true));
        let config = cli.serve.resolve(EnvSecrets::default()).unwrap();
        assert_eq!(config.kms.wrapping_key_spec, WrappingKeySpec::Rsa2048);
        assert_eq!(config.kms.max_attempts, 2);
        assert_eq!(config.kms.request_timeout, Duration::from_secs(7));
        assert_eq!(config.job_concurrency, 3);
        let off = Cli::try_parse_from(["keyhold", "--kms-use-fips=false"]).unwrap();
        assert_eq!(off.serve.kms.kms_use_fips, Some(false));
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
        let base = args(|a| a.keystore.keystore = Some("pkcs11".into()));
        let err = base
            .clone()
            .resolve(EnvSecrets::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("pkcs11_module"), "{err}");
        let mut with_module = base;
        with_module.keystore.pkcs11_module = Some("/usr/lib/softhsm/libsofthsm2.so".into());
        let err = with_module
            .clone()
            .resolve(EnvSecrets::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("pkcs11_token_label"), "{err}");
        let mut with_token = with_module;
        with_token.keystore.pkcs11_token_label = Some("keyhold".into());
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
        let err = args(|a| a.keystore.keystore = Some("tpm".into()))
            .resolve(EnvSecrets::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("software or pkcs11"), "{err}");
    }

    #[test]
    fn the_approval_webhook_needs_an_http_url_and_a_secret() {
        assert!(resolve_file("").unwrap().approval_webhook.is_none());
        let err = resolve_file("approval_webhook_url = \"https://hooks.example/k\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains(WEBHOOK_SECRET_ENV), "{err}");
        let with_secret = |url: &str| {
            args(|a| a.approval_webhook.approval_webhook_url = Some(url.into())).resolve(
                EnvSecrets {
                    approval_webhook_secret: Some(SecretString::from("hook-secret".to_owned())),
                    ..EnvSecrets::default()
                },
            )
        };
        let config = with_secret("https://hooks.example/k").unwrap();
        let webhook = config.approval_webhook.unwrap();
        assert_eq!(webhook.url.as_str(), "https://hooks.example/k");
        assert!(!format!("{webhook:?}").contains("hook-secret"));
        let err = with_secret("ftp://hooks.example/k")
            .unwrap_err()
            .to_string();
        assert!(err.contains("https://"), "{err}");
        assert!(!err.contains("hook-secret"));
        assert!(with_secret("not a url").is_err());
    }

    /// Each flag is one row of the README's configuration table, with its file
    /// key and variable, and every row is a flag or an environment-only secret.
    #[test]
    fn the_readme_table_lists_every_setting_as_the_flags_declare_it() {
        use clap::CommandFactory;
        let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"));
        let section = readme
            .split("\n## Configuration\n")
            .nth(1)
            .and_then(|section| section.split("\n## ").next())
            .unwrap();
        let table = section
            .split("| file key | environment | flag | default |\n|---|---|---|---|\n")
            .nth(1)
            .and_then(|rest| rest.split("\n\n").next())
            .unwrap();
        let documented: std::collections::BTreeSet<String> = table
            .lines()
            .map(|line| line.split(" | ").take(3).collect::<Vec<_>>().join(" | "))
            .collect();
        let command = Cli::command();
        let mut declared: std::collections::BTreeSet<String> = command
            .get_arguments()
            .filter(|arg| arg.get_id() != "config")
            .filter_map(|arg| {
                let key = arg.get_id().as_str();
                let env = arg.get_env()?.to_str()?;
                let flag = arg.get_long()?;
                Some(format!("| `{key}` | `{env}` | `--{flag}`"))
            })
            .collect();
        for secret in [PASSPHRASE_ENV, PIN_ENV, WEBHOOK_SECRET_ENV] {
            declared.insert(format!("| — | `{secret}` | — (never a flag)"));
        }
        assert_eq!(documented, declared);
        let keys: std::collections::BTreeSet<&str> =
            ServeArgs::file_keys().iter().copied().collect();
        let flag_keys: std::collections::BTreeSet<&str> = command
            .get_arguments()
            .filter(|arg| arg.get_env().is_some())
            .map(|arg| arg.get_id().as_str())
            .filter(|id| *id != "config")
            .collect();
        assert_eq!(keys, flag_keys, "every flag is a file key, and only those");
        assert!(section.contains("`--config FILE` / `KEYHOLD_CONFIG`"));
    }
}
