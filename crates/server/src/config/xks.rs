//! The AWS KMS external key store (XKS) proxy this node serves (see
//! `crate::xks`). Rules: on by default, since it answers nothing until an
//! officer creates a store; the usage log stays beside the data unless
//! told otherwise; the digest's interval is bounded so the audit log gets
//! at most one entry a minute per node from it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use keyhold_core::names::NodeId;

use super::layering::settings_area;
use super::{ConfigError, in_range};

/// Where each XKS call's line goes unless told otherwise, in the data
/// directory: `xks-usage-<node id>.jsonl`.
pub fn default_usage_log(node: &NodeId) -> String {
    format!("xks-usage-{node}.jsonl")
}
/// Minutes between usage digests in the audit log unless told otherwise.
pub const DEFAULT_XKS_DIGEST_MINUTES: u32 = 5;

settings_area! {
    /// The XKS proxy.
    pub struct XksArgs {
        /// Serve the AWS KMS external key store proxy API (`<prefix>/kms/xks/v1/…`)
        /// for the external key stores officers create [default: true].
        #[arg(
            long,
            env = "KEYHOLD_XKS_ENABLED",
            value_name = "BOOL",
            num_args = 0..=1,
            require_equals = true,
            default_missing_value = "true"
        )]
        pub xks_enabled: Option<bool>,
        /// File each XKS proxy call is appended to as one JSON line (request
        /// metadata, key, outcome, latency; never plaintext, AAD or
        /// ciphertext) [default: <data-dir>/xks-usage-<node id>.jsonl].
        #[arg(long, env = "KEYHOLD_XKS_USAGE_LOG", value_name = "PATH")]
        pub xks_usage_log: Option<PathBuf>,
        /// Minutes between this node's XKS usage digests in the audit log (counts
        /// and the SHA-256 of the usage-log lines of the period): 1 to 1440
        /// [default: 5].
        #[arg(long, env = "KEYHOLD_XKS_DIGEST_MINUTES", value_name = "MINUTES")]
        pub xks_digest_minutes: Option<u32>,
    }
}

/// The validated XKS proxy settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XksConfig {
    pub enabled: bool,
    pub usage_log: PathBuf,
    pub digest_every: Duration,
}

impl XksArgs {
    /// The usage log defaults to a file named after the node, so nodes that
    /// share a data directory (or a network mount) never mix their lines,
    /// which would break each node's digest of them.
    pub fn resolve(self, data_dir: &Path, node: &NodeId) -> Result<XksConfig, ConfigError> {
        let usage_log = self
            .xks_usage_log
            .unwrap_or_else(|| data_dir.join(default_usage_log(node)));
        if usage_log.is_dir() {
            return Err(ConfigError(format!(
                "xks_usage_log {} is a directory: name a file in it, such as {}",
                usage_log.display(),
                usage_log.join(default_usage_log(node)).display()
            )));
        }
        let minutes = in_range(
            "xks_digest_minutes",
            self.xks_digest_minutes,
            DEFAULT_XKS_DIGEST_MINUTES,
            1..=1440,
            "minutes between XKS usage digests",
        )?;
        Ok(XksConfig {
            enabled: self.xks_enabled.unwrap_or(true),
            usage_log,
            digest_every: Duration::from_secs(u64::from(minutes) * 60),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> NodeId {
        NodeId::parse("node-a").unwrap()
    }

    #[test]
    fn defaults_live_in_the_data_directory_and_bounds_are_enforced() {
        let config = XksArgs::default()
            .resolve(Path::new("/data"), &node())
            .unwrap();
        assert_eq!(
            config,
            XksConfig {
                enabled: true,
                usage_log: PathBuf::from("/data/xks-usage-node-a.jsonl"),
                digest_every: Duration::from_secs(300),
            }
        );
        let off = XksArgs {
            xks_enabled: Some(false),
            xks_digest_minutes: Some(1440),
            ..XksArgs::default()
        }
        .resolve(Path::new("/data"), &node())
        .unwrap();
        assert!(!off.enabled);
        assert_eq!(off.digest_every, Duration::from_secs(86_400));
        let err = XksArgs {
            xks_digest_minutes: Some(0),
            ..XksArgs::default()
        }
        .resolve(Path::new("/data"), &node())
        .unwrap_err()
        .to_string();
        assert!(err.contains("--xks-digest-minutes"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let err = XksArgs {
            xks_usage_log: Some(dir.path().to_owned()),
            ..XksArgs::default()
        }
        .resolve(Path::new("/data"), &node())
        .unwrap_err()
        .to_string();
        assert!(err.contains("is a directory"), "{err}");
    }
}
