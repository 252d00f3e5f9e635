//! HTTPS for the API, the UI and the XKS proxy: rustls with the configured
//! certificate chain and private key (PEM files). Client certificates are
//! asked for only while an external key store has an mTLS rule, and never
//! required (see `crate::xks::mtls`); which rules a connection's certificate
//! satisfied travels with it ([`TlsConnection`]).

use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::xks::mtls::{ClientIdentity, MtlsRules};

/// A client that has not finished its handshake by then is dropped, so slow
/// or silent clients cannot hold connections open.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes finished but not yet taken up by the HTTP server.
const READY_BACKLOG: usize = 64;

/// The certificate and key the server presents, loaded and checked at
/// start-up so a bad file stops `keyhold serve` with a clear message.
#[derive(Clone)]
pub struct TlsConfig {
    /// The certificate file, for messages (never the key's contents).
    pub certificate_path: std::path::PathBuf,
    server: Arc<rustls::ServerConfig>,
    /// The external key stores' mTLS rules the listener applies (the XKS
    /// proxy's directory replaces them as stores change).
    client_rules: Arc<MtlsRules>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("certificate_path", &self.certificate_path)
            .finish_non_exhaustive()
    }
}

/// What is wrong with the TLS files, and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "cannot read the TLS certificate chain {path}: {cause}. Give a PEM file with the server certificate first, then its intermediates"
    )]
    Certificate { path: String, cause: String },
    #[error(
        "cannot read the TLS private key {path}: {cause}. Give a PEM file with one PKCS#8, PKCS#1 (RSA) or SEC1 (EC) private key"
    )]
    PrivateKey { path: String, cause: String },
    #[error(
        "the TLS private key {key} does not belong to the certificate {certificate}, or its algorithm is not supported: {cause}"
    )]
    Mismatch {
        certificate: String,
        key: String,
        cause: String,
    },
}

impl TlsConfig {
    pub fn load(certificate: &Path, private_key: &Path) -> Result<Self, TlsError> {
        let certificate_error = |cause: String| TlsError::Certificate {
            path: certificate.display().to_string(),
            cause,
        };
        let chain = CertificateDer::pem_file_iter(certificate)
            .map_err(|e| certificate_error(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| certificate_error(e.to_string()))?;
        if chain.is_empty() {
            return Err(certificate_error("it holds no CERTIFICATE block".into()));
        }
        // The parse error names the PEM section, never the key's bytes.
        let key = PrivateKeyDer::from_pem_file(private_key).map_err(|e| TlsError::PrivateKey {
            path: private_key.display().to_string(),
            cause: e.to_string(),
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client_rules = MtlsRules::new();
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|builder| {
                builder
                    .with_client_cert_verifier(client_rules.verifier())
                    .with_single_cert(chain, key)
            })
            .map_err(|e| TlsError::Mismatch {
                certificate: certificate.display().to_string(),
                key: private_key.display().to_string(),
                cause: e.to_string(),
            })?;
        let mut server = server;
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            certificate_path: certificate.to_owned(),
            server: Arc::new(server),
            client_rules,
        })
    }

    /// The mTLS rules this listener applies, for the XKS proxy to keep current.
    pub(crate) fn client_rules(&self) -> Arc<MtlsRules> {
        self.client_rules.clone()
    }
}

/// Accepts TCP connections and hands the HTTP server only those that
/// completed a TLS handshake. Handshakes run in their own tasks, so one slow
/// client never delays the others.
pub struct TlsListener {
    local_addr: SocketAddr,
    ready: mpsc::Receiver<(TlsConnection, SocketAddr)>,
    accepting: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub fn new(listener: TcpListener, config: &TlsConfig) -> std::io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(config.server.clone());
        let (sender, ready) = mpsc::channel(READY_BACKLOG);
        let accepting = tokio::spawn(accept_loop(
            listener,
            acceptor,
            config.client_rules.clone(),
            sender,
        ));
        Ok(Self {
            local_addr,
            ready,
            accepting,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    client_rules: Arc<MtlsRules>,
    ready: mpsc::Sender<(TlsConnection, SocketAddr)>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: back off, don't spin.
                tracing::warn!(%error, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        let client_rules = client_rules.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    // Once per connection, off the request path: which
                    // stores' rules the certificate it presented satisfies.
                    let client = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| client_rules.identify(chain))
                        .map(Arc::new);
                    let _ = ready.send((TlsConnection { stream, client }, peer)).await;
                }
                Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsConnection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            if let Some(accepted) = self.ready.recv().await {
                return accepted;
            }
            // The accept loop only ends when aborted with this listener;
            // should it ever stop, wait rather than spin.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

/// A connection whose TLS handshake completed, with what its client
/// certificate (if any) was found to be.
pub struct TlsConnection {
    stream: TlsStream<TcpStream>,
    client: Option<Arc<ClientIdentity>>,
}

impl TlsConnection {
    /// The verdict on the client's certificate; `None` when it sent none.
    pub(crate) fn client(&self) -> Option<Arc<ClientIdentity>> {
        self.client.clone()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
