//! The syslog sink: RFC 5424 messages, octet-counted (RFC 6587), over TCP
//! or TLS (RFC 5425), to one receiver.
//!
//! Plain syslog over TCP has no acknowledgement: bytes the receiver's
//! kernel accepted count as delivered. So before each batch the connection
//! is checked for the receiver having closed it (a receiver that stopped
//! sends FIN or RST, which an idle sender would otherwise only learn of by
//! losing its next write), a new TLS connection waits briefly for the
//! receiver's verdict on keyhold's certificate, and a batch whose write or
//! flush fails is sent again whole on a new connection.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use keyhold_core::audit::AuditEntry;
use keyhold_core::audit::syslog::{Facility, SyslogOrigin};
use keyhold_core::clock::Timestamp;
use keyhold_core::names::NodeId;
use keyhold_core::service::Keyhold;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{StreamError, export_line};

/// Connecting (and the TLS handshake) may take this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Writing and flushing one batch may take this long.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a node streams to a receiver before it must renew its claim.
const LEASE: chrono::Duration = chrono::Duration::seconds(15);
/// The claim is renewed once less than this is left of it.
const RENEW_BEFORE: chrono::Duration = chrono::Duration::seconds(10);

/// A syslog receiver, checked at start-up.
#[derive(Clone)]
pub struct SyslogTarget {
    host: String,
    port: u16,
    facility: Facility,
    tls: Option<Tls>,
}

#[derive(Clone)]
struct Tls {
    server_name: ServerName<'static>,
    client: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for SyslogTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyslogTarget")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("facility", &self.facility.name())
            .field(
                "tls_server_name",
                &self.tls.as_ref().map(|t| t.server_name.to_str()),
            )
            .finish()
    }
}

/// The TLS settings as given.
#[derive(Debug, Default)]
pub struct TlsSettings {
    pub ca_file: Option<PathBuf>,
    pub server_name: Option<String>,
    pub client_certificate: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

impl TlsSettings {
    pub fn is_given(&self) -> bool {
        self.ca_file.is_some()
            || self.server_name.is_some()
            || self.client_certificate.is_some()
            || self.client_key.is_some()
    }
}

impl SyslogTarget {
    pub fn resolve(address: &str, tls: TlsSettings, facility: Facility) -> Result<Self, String> {
        let (host, port) = split_address(address.trim()).ok_or_else(|| {
            format!(
                "audit_syslog_address '{address}' is not HOST:PORT (such as siem.example.com:6514, 10.0.0.5:514 or [fd00::5]:514): set --audit-syslog-address or KEYHOLD_AUDIT_SYSLOG_ADDRESS accordingly"
            )
        })?;
        let tls = match &tls.ca_file {
            Some(_) => Some(Tls::load(&tls, &host)?),
            None if tls.is_given() => {
                return Err("audit_syslog_tls_server_name or a client certificate is set, but audit_syslog_tls_ca_file is not: TLS to the syslog receiver needs the CA file that issued its certificate (--audit-syslog-tls-ca-file)".into());
            }
            None => None,
        };
        Ok(Self {
            host,
            port,
            facility,
            tls,
        })
    }

    /// `syslog+tls://host:port` or `syslog://host:port`: the cursor's key in
    /// the database, so a new receiver gets its own cursor.
    /// The lease one node of a cluster holds to stream to this receiver.
    pub fn lease_name(&self) -> String {
        format!("audit-stream {}", self.url())
    }

    fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "syslog+tls"
        } else {
            "syslog"
        };
        if self.host.contains(':') {
            format!("{scheme}://[{}]:{}", self.host, self.port)
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// `host:port`, `[v6]:port`; the host is resolved at each connection, so a
/// receiver that moves (DNS) is followed.
fn split_address(address: &str) -> Option<(String, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.strip_suffix(']')?,
        None if host.contains(':') => return None,
        None => host,
    };
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/') {
        return None;
    }
    Some((host.to_owned(), port))
}

impl Tls {
    fn load(settings: &TlsSettings, host: &str) -> Result<Self, String> {
        let ca_file = settings.ca_file.as_deref().unwrap_or(Path::new(""));
        let server_name = settings.server_name.as_deref().unwrap_or(host);
        let refuse = |cause: String| {
            format!(
                "cannot use audit_syslog_tls_ca_file {}: {cause}. Give a PEM file with the CA certificate(s) that issued the syslog receiver's certificate",
                ca_file.display()
            )
        };
        let certificates = CertificateDer::pem_file_iter(ca_file)
            .map_err(|e| refuse(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| refuse(e.to_string()))?;
        if certificates.is_empty() {
            return Err(refuse("it holds no CERTIFICATE block".into()));
        }
        let mut roots = rustls::RootCertStore::empty();
        for certificate in certificates {
            roots.add(certificate).map_err(|e| refuse(e.to_string()))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| refuse(e.to_string()))?
            .with_root_certificates(roots);
        let client = match (&settings.client_certificate, &settings.client_key) {
            (None, None) => builder.with_no_client_auth(),
            (Some(certificate), Some(key)) => {
                let (chain, private_key) = client_identity(certificate, key)?;
                builder
                    .with_client_auth_cert(chain, private_key)
                    .map_err(|e| {
                        format!(
                            "the key {} does not belong to the certificate {}, or its algorithm is not supported: {e}",
                            key.display(),
                            certificate.display()
                        )
                    })?
            }
            _ => {
                return Err("give both audit_syslog_tls_client_certificate and audit_syslog_tls_client_key, or neither".into());
            }
        };
        let server_name = ServerName::try_from(server_name.to_owned()).map_err(|e| {
            format!(
                "audit_syslog_tls_server_name '{server_name}' is no DNS name or IP address ({e}): set --audit-syslog-tls-server-name to the name on the receiver's certificate"
            )
        })?;
        Ok(Self {
            server_name,
            client: Arc::new(client),
        })
    }
}

/// The certificate chain and key keyhold presents to a receiver that
/// authenticates its senders. A parse error names the PEM section, never the
/// key's bytes.
fn client_identity(
    certificate: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let refuse_certificate = |cause: String| {
        format!(
            "cannot read audit_syslog_tls_client_certificate {}: {cause}. Give a PEM file with keyhold's client certificate first, then its intermediates",
            certificate.display()
        )
    };
    let chain = CertificateDer::pem_file_iter(certificate)
        .map_err(|e| refuse_certificate(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| refuse_certificate(e.to_string()))?;
    if chain.is_empty() {
        return Err(refuse_certificate("it holds no CERTIFICATE block".into()));
    }
    let private_key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        format!(
            "cannot read audit_syslog_tls_client_key {}: {e}. Give a PEM file with one PKCS#8, PKCS#1 (RSA) or SEC1 (EC) private key",
            key.display()
        )
    })?;
    Ok((chain, private_key))
}

/// A connection to the receiver, plain or TLS.
trait Connection: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Connection for T {}

pub struct SyslogSink {
    target: SyslogTarget,
    origin: SyslogOrigin,
    node: NodeId,
    connection: Option<Box<dyn Connection>>,
    /// Until when this node holds the receiver's lease, as far as it knows.
    lease_until: Option<Timestamp>,
}

impl SyslogSink {
    pub fn new(target: SyslogTarget, node: NodeId) -> Self {
        let origin = SyslogOrigin {
            facility: target.facility,
            hostname: node.as_str().to_owned(),
        };
        Self {
            target,
            origin,
            node,
            connection: None,
            lease_until: None,
        }
    }

    pub fn describe(&self) -> String {
        self.target.url()
    }

    fn lease_name(&self) -> String {
        self.target.lease_name()
    }

    /// Takes or renews this receiver's lease: one node streams to it at a
    /// time. A node that loses it drops its connection.
    pub async fn hold_lease(&mut self, keyhold: &Keyhold) -> Result<bool, StreamError> {
        let now = keyhold.now();
        if self
            .lease_until
            .is_some_and(|until| now + RENEW_BEFORE < until)
        {
            return Ok(true);
        }
        let lease = keyhold
            .store()
            .acquire_lease(&self.lease_name(), &self.node, now, now + LEASE)
            .await?;
        if lease.is_none() && self.lease_until.is_some() {
            tracing::info!(sink = %self.describe(), "another node streams the audit log to this receiver now");
            self.connection = None;
        }
        self.lease_until = lease.map(|l| l.expires_at);
        Ok(self.lease_until.is_some())
    }

    pub async fn cursor(&self, keyhold: &Keyhold) -> Result<Option<i64>, StreamError> {
        Ok(keyhold
            .store()
            .audit_stream_cursor(&self.target.url())
            .await?)
    }

    pub async fn advance(
        &self,
        keyhold: &Keyhold,
        expected: Option<i64>,
        seq: i64,
    ) -> Result<bool, StreamError> {
        Ok(keyhold
            .store()
            .advance_audit_stream_cursor(
                &self.target.url(),
                expected,
                seq,
                &self.node,
                keyhold.now(),
            )
            .await?)
    }

    /// Sends the entries, in order, as one write, and flushes it.
    pub async fn deliver(&mut self, entries: &[AuditEntry]) -> Result<(), StreamError> {
        let mut bytes = Vec::new();
        for entry in entries {
            bytes.extend(self.origin.frame(entry, &export_line(entry)));
        }
        if self.connection.as_mut().is_some_and(|c| closed(c.as_mut())) {
            tracing::info!(sink = %self.describe(), "the syslog receiver closed the connection; connecting again");
            self.connection = None;
        }
        let connection = match &mut self.connection {
            Some(connection) => connection,
            None => self.connection.insert(self.connect().await?),
        };
        let sent = tokio::time::timeout(WRITE_TIMEOUT, async {
            connection.write_all(&bytes).await?;
            connection.flush().await
        })
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("not written within {} s", WRITE_TIMEOUT.as_secs()),
            ))
        });
        if let Err(e) = sent {
            self.connection = None;
            return Err(StreamError::Send {
                target: self.describe(),
                cause: e.to_string(),
            });
        }
        Ok(())
    }

    async fn connect(&self) -> Result<Box<dyn Connection>, StreamError> {
        let refused = |cause: String| StreamError::Connect {
            target: self.describe(),
            cause,
        };
        let connecting = async {
            let tcp = TcpStream::connect((self.target.host.as_str(), self.target.port))
                .await
                .map_err(|e| refused(e.to_string()))?;
            // Each batch is one write; send it without waiting for more.
            let _ = tcp.set_nodelay(true);
            let connection: Box<dyn Connection> = match &self.target.tls {
                None => Box::new(tcp),
                Some(tls) => Box::new(
                    tokio_rustls::TlsConnector::from(tls.client.clone())
                        .connect(tls.server_name.clone(), tcp)
                        .await
                        .map_err(|e| refused(format!("TLS handshake: {e}")))?,
                ),
            };
            Ok(connection)
        };
        let mut connection = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .unwrap_or_else(|_| {
                Err(refused(format!(
                    "no connection within {} s",
                    CONNECT_TIMEOUT.as_secs()
                )))
            })?;
        // In TLS 1.3 the client's side of the handshake ends before the
        // receiver has checked the client's certificate: a receiver that
        // refuses it says so only afterwards, and a batch written meanwhile
        // would count as delivered. So wait for that verdict first.
        if self.target.tls.is_some() && refused_after_handshake(connection.as_mut()).await {
            return Err(refused(
                "the receiver closed the connection after the TLS handshake: it refused keyhold (a receiver that authenticates its senders needs audit_syslog_tls_client_certificate and audit_syslog_tls_client_key, signed by a CA it trusts)".into(),
            ));
        }
        Ok(connection)
    }
}

/// How long a new TLS connection waits for the receiver to refuse it.
const VERDICT_WAIT: Duration = Duration::from_millis(500);

/// Whether the receiver ends a new TLS connection within [`VERDICT_WAIT`]
/// (an alert, or a close); session tickets it sends meanwhile are read
/// and carry no data.
async fn refused_after_handshake(connection: &mut dyn Connection) -> bool {
    let mut buffer = [0u8; 1024];
    let verdict = tokio::time::timeout(VERDICT_WAIT, async {
        loop {
            match connection.read(&mut buffer).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => continue,
            }
        }
    });
    verdict.await.unwrap_or(false)
}

/// Whether the receiver closed the connection: a syslog receiver never
/// writes, so a read that ends (or fails) at once means it is gone, and one
/// that would wait means it is there. TLS records the receiver sends (TLS
/// 1.3 session tickets) are consumed by the read and carry no data.
fn closed(connection: &mut dyn Connection) -> bool {
    let mut buffer = [0u8; 1024];
    loop {
        match connection.read(&mut buffer).now_or_never() {
            None => return false,
            Some(Ok(0)) | Some(Err(_)) => return true,
            Some(Ok(_)) => continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_host_and_port() {
        assert_eq!(
            split_address("siem.example.com:6514"),
            Some(("siem.example.com".into(), 6514))
        );
        assert_eq!(
            split_address("10.0.0.5:514"),
            Some(("10.0.0.5".into(), 514))
        );
        assert_eq!(
            split_address("[fd00::5]:514"),
            Some(("fd00::5".into(), 514))
        );
        for bad in [
            "siem.example.com",
            "fd00::5:514",
            ":514",
            "host:0",
            "host:65536",
            "tcp://host:514",
            "host name:514",
        ] {
            assert_eq!(split_address(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_missing_ca_file_or_a_lone_server_name_is_refused_saying_what_to_do() {
        let tls = |ca: Option<&str>, name: Option<&str>| TlsSettings {
            ca_file: ca.map(PathBuf::from),
            server_name: name.map(str::to_owned),
            ..TlsSettings::default()
        };
        let err = SyslogTarget::resolve(
            "siem:6514",
            tls(Some("/nonexistent/ca.pem"), None),
            Facility::AUTHPRIV,
        )
        .unwrap_err();
        assert!(
            err.contains("/nonexistent/ca.pem") && err.contains("PEM file with the CA"),
            "{err}"
        );
        let err = SyslogTarget::resolve("siem:6514", tls(None, Some("siem")), Facility::AUTHPRIV)
            .unwrap_err();
        assert!(err.contains("--audit-syslog-tls-ca-file"), "{err}");
        let err = SyslogTarget::resolve("siem", tls(None, None), Facility::AUTHPRIV).unwrap_err();
        assert!(err.contains("HOST:PORT"), "{err}");
    }
}
