//! Where the API listens, and over what. Rules: HTTPS needs both a
//! certificate and its key; plain HTTP beyond loopback needs the operator's
//! explicit consent, since sessions and passwords would cross the network
//! unencrypted.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::ConfigError;
use super::layering::settings_area;
use crate::tls::TlsConfig;

/// Where `keyhold serve` listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8600";

settings_area! {
    /// The listening address and TLS.
    pub struct ListenArgs {
        /// Address and port the HTTP API listens on [default: 127.0.0.1:8600]. Port 0 picks a free port.
        #[arg(long, env = "KEYHOLD_LISTEN")]
        pub listen: Option<String>,
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
    }
}

/// The validated listening address and TLS.
#[derive(Debug)]
pub struct ListenConfig {
    pub address: SocketAddr,
    /// HTTPS, when a certificate is configured; plain HTTP otherwise.
    pub tls: Option<TlsConfig>,
}

impl ListenArgs {
    pub fn resolve(self) -> Result<ListenConfig, ConfigError> {
        let raw = self.listen.unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let address: SocketAddr = raw.parse().map_err(|_| {
            ConfigError(format!(
                "listen address '{raw}' is not an IP address and port, such as 127.0.0.1:8600"
            ))
        })?;
        let tls = match (self.tls_certificate, self.tls_private_key) {
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
        if tls.is_none() && !address.ip().is_loopback() && !self.allow_plain_http {
            return Err(ConfigError(format!(
                "refusing to serve plain HTTP on {address}, which is not a loopback address: sessions and passwords would cross the network unencrypted. Give tls_certificate and tls_private_key to serve HTTPS, listen on 127.0.0.1 behind a TLS proxy, or pass --allow-plain-http if the network is otherwise protected"
            )));
        }
        Ok(ListenConfig { address, tls })
    }
}
