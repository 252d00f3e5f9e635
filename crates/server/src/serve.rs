//! Serving HTTP/1.1 connections: keyhold's own accept loop instead of
//! `axum::serve`, which gives hyper no timer and so no header read timeout
//! (a client could hold a connection open for ever by sending half its
//! headers). Each request carries the client's address ([`ConnectInfo`])
//! and, over TLS, what its client certificate was found to be
//! ([`ClientCertificate`], for the XKS proxy's mTLS rules),
//! and the answers hyper gives on its own to requests it cannot parse carry
//! the API's JSON error like every other answer ([`JsonParseErrors`]).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::serve::Listener;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::ApiError;
use crate::xks::mtls::ClientIdentity;

/// A client that has not sent a request's whole head (request line and
/// headers) by then is disconnected; the same limit ends a kept-alive
/// connection that sends no next request. Bodies have theirs in the router
/// ([`crate::routes::BODY_IDLE_TIMEOUT`]).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `router` on the connections `listener` accepts until `shutdown`
/// completes, then stops accepting and waits for the open connections to
/// finish their requests (idle ones close at once).
pub async fn serve<L>(
    mut listener: L,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: Listener<Addr = SocketAddr>,
    L::Io: ClientCertificate,
{
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (io, client) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let router = router.clone();
        let certificate = io.client_certificate();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(client));
            if let Some(certificate) = &certificate {
                request.extensions_mut().insert(certificate.clone());
            }
            tower::ServiceExt::oneshot(router.clone(), request)
        });
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(TokioIo::new(JsonParseErrors::new(io)), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%client, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// What a connection's client certificate was found to be, once per
/// connection: nothing over plain TCP, the TLS handshake's verdict over TLS.
pub trait ClientCertificate {
    fn client_certificate(&self) -> Option<std::sync::Arc<ClientIdentity>>;
}

impl ClientCertificate for tokio::net::TcpStream {
    fn client_certificate(&self) -> Option<std::sync::Arc<ClientIdentity>> {
        None
    }
}

impl ClientCertificate for crate::tls::TlsConnection {
    fn client_certificate(&self) -> Option<std::sync::Arc<ClientIdentity>> {
        self.client()
    }
}

/// A connection whose outgoing bytes are watched for the answers hyper writes
/// by itself, before any route runs, to requests it cannot take: 414 for a
/// URL over 64 KiB and 431 for a head over its buffer. Those have no body;
/// each is replaced, whole, by the same status with the API's JSON error.
/// The router never answers 414 or 431 itself, so only hyper's are matched.
/// hyper closes the connection after them, which the replacement says too.
struct JsonParseErrors<Io> {
    inner: Io,
    replacing: Option<Replacement>,
}

struct Replacement {
    bytes: Vec<u8>,
    written: usize,
    /// The length of hyper's own answer, reported as written once the
    /// replacement is.
    replaces: usize,
}

impl<Io> JsonParseErrors<Io> {
    fn new(inner: Io) -> Self {
        Self {
            inner,
            replacing: None,
        }
    }
}

/// The JSON answer replacing hyper's, if `head` is one of hyper's own.
fn json_answer(head: &[u8]) -> Option<Vec<u8>> {
    let version = head.get(..9)?;
    if version != b"HTTP/1.1 " && version != b"HTTP/1.0 " {
        return None;
    }
    let error = match head.get(9..13)? {
        b"414 " => ApiError::UriTooLong,
        b"431 " => ApiError::HeadersTooLarge,
        _ => return None,
    };
    let status = error.status_and_code().0;
    let body = serde_json::to_vec(&error.body()).ok()?;
    let mut answer = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or_default(),
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(&body);
    Some(answer)
}

impl<Io: AsyncWrite + Unpin> JsonParseErrors<Io> {
    /// Writes the replacement, if one is under way; then reports hyper's
    /// answer written.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<usize>>> {
        let Some(replacement) = &mut self.replacing else {
            return Poll::Ready(Ok(None));
        };
        while replacement.written < replacement.bytes.len() {
            let written = ready!(
                Pin::new(&mut self.inner).poll_write(cx, &replacement.bytes[replacement.written..])
            )?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            replacement.written += written;
        }
        let replaces = replacement.replaces;
        self.replacing = None;
        Poll::Ready(Ok(Some(replaces)))
    }

    fn start_replacing(&mut self, first: &[u8], total: usize) {
        if self.replacing.is_none()
            && let Some(bytes) = json_answer(first)
        {
            self.replacing = Some(Replacement {
                bytes,
                written: 0,
                replaces: total,
            });
        }
    }
}

impl<Io: AsyncRead + Unpin> AsyncRead for JsonParseErrors<Io> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for JsonParseErrors<Io> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.start_replacing(buf, buf.len());
        if let Some(replaced) = ready!(this.poll_replacement(cx))? {
            return Poll::Ready(Ok(replaced));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
            this.start_replacing(first, bufs.iter().map(|b| b.len()).sum());
        }
        if let Some(replaced) = ready!(this.poll_replacement(cx))? {
            return Poll::Ready(Ok(replaced));
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn hypers_own_414_and_431_carry_the_json_error_and_other_answers_pass_unchanged() {
        for (hyper_answer, code) in [
            (
                &b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n\r\n"[..],
                "uri_too_long",
            ),
            (
                &b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n"[..],
                "headers_too_large",
            ),
        ] {
            let (client, server) = tokio::io::duplex(64 * 1024);
            let mut server = JsonParseErrors::new(server);
            server.write_all(hyper_answer).await.unwrap();
            server.shutdown().await.unwrap();
            drop(server);
            let mut answer = String::new();
            let mut client = client;
            client.read_to_string(&mut answer).await.unwrap();
            let (head, body) = answer.split_once("\r\n\r\n").unwrap();
            assert!(
                head.starts_with(&String::from_utf8_lossy(&hyper_answer[..12]).to_string()),
                "{head}"
            );
            assert!(head.contains("content-type: application/json"), "{head}");
            assert!(
                head.contains(&format!("content-length: {}", body.len())),
                "{head}"
            );
            let body: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(body["error"]["code"], code);
            assert!(body["error"]["message"].as_str().unwrap().len() > 20);
        }

        let ordinary = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}";
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let mut server = JsonParseErrors::new(server);
        server.write_all(ordinary).await.unwrap();
        drop(server);
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, ordinary);
    }
}
