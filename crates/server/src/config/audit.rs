//! Signed checkpoints of the audit log. Rules: checkpoints go to a file
//! outside the database (and to the server log), so an operator can ship
//! them where someone with the data directory cannot reach; a checkpoint is
//! written only when the log grew since the last one.
//! - Streams to a SIEM (`crate::audit_stream`) are off unless a receiver or
//!   file is named; a setting that cannot work stops start-up, saying which
//!   and how to fix it, rather than failing quietly in the background.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::layering::settings_area;
use super::{ConfigError, in_range};
use crate::audit_stream::{StreamConfig, StreamSettings};

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
        /// Stream the audit log to this syslog receiver (a SIEM) as RFC 5424
        /// messages over TCP, HOST:PORT; entries arrive in order and resume
        /// after the last one delivered [default: none: no syslog stream].
        #[arg(long, env = "KEYHOLD_AUDIT_SYSLOG_ADDRESS", value_name = "HOST:PORT")]
        pub audit_syslog_address: Option<String>,
        /// Speak TLS (RFC 5425) to the syslog receiver, trusting the CA
        /// certificates of this PEM file [default: none: plain TCP].
        #[arg(long, env = "KEYHOLD_AUDIT_SYSLOG_TLS_CA_FILE", value_name = "PATH")]
        pub audit_syslog_tls_ca_file: Option<PathBuf>,
        /// The name the syslog receiver's TLS certificate must carry
        /// [default: the host of audit_syslog_address].
        #[arg(long, env = "KEYHOLD_AUDIT_SYSLOG_TLS_SERVER_NAME", value_name = "NAME")]
        pub audit_syslog_tls_server_name: Option<String>,
        /// A PEM certificate chain keyhold presents to the syslog receiver
        /// over TLS, for receivers that authenticate their senders
        /// [default: none]. Needs audit_syslog_tls_client_key.
        #[arg(
            long,
            env = "KEYHOLD_AUDIT_SYSLOG_TLS_CLIENT_CERTIFICATE",
            value_name = "PATH"
        )]
        pub audit_syslog_tls_client_certificate: Option<PathBuf>,
        /// The PEM private key of audit_syslog_tls_client_certificate
        /// (PKCS#8, PKCS#1 or SEC1) [default: none].
        #[arg(long, env = "KEYHOLD_AUDIT_SYSLOG_TLS_CLIENT_KEY", value_name = "PATH")]
        pub audit_syslog_tls_client_key: Option<PathBuf>,
        /// Syslog facility of the audit messages, by name or code
        /// [default: authpriv].
        #[arg(long, env = "KEYHOLD_AUDIT_SYSLOG_FACILITY", value_name = "FACILITY")]
        pub audit_syslog_facility: Option<String>,
        /// Append every audit entry to this file as one JSON line (the
        /// export's form), synced, in order; resumes after its last line
        /// [default: none].
        #[arg(long, env = "KEYHOLD_AUDIT_JSON_FILE", value_name = "PATH")]
        pub audit_json_file: Option<PathBuf>,
        /// Where a new audit stream starts: `start` (the whole log) or `now`
        /// (entries after the current one) [default: start].
        #[arg(long, env = "KEYHOLD_AUDIT_STREAM_FROM", value_name = "start|now")]
        pub audit_stream_from: Option<String>,
    }
}

/// Where and how often checkpoints are written, and where the log streams.
#[derive(Clone, Debug)]
pub struct AuditConfig {
    pub checkpoint_file: PathBuf,
    pub checkpoint_every: Duration,
    pub stream: StreamConfig,
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
        let stream = StreamConfig::resolve(StreamSettings {
            syslog_address: self.audit_syslog_address,
            tls_ca_file: self.audit_syslog_tls_ca_file,
            tls_server_name: self.audit_syslog_tls_server_name,
            tls_client_certificate: self.audit_syslog_tls_client_certificate,
            tls_client_key: self.audit_syslog_tls_client_key,
            facility: self.audit_syslog_facility,
            json_file: self.audit_json_file,
            from: self.audit_stream_from,
        })
        .map_err(ConfigError)?;
        Ok(AuditConfig {
            checkpoint_file,
            checkpoint_every: Duration::from_secs(seconds),
            stream,
        })
    }
}
