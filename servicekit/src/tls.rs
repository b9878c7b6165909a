//! Server TLS from PEM files, for axum and for tonic.
//!
//! Why: the REST and gRPC APIs leave the machine once the Helm chart exposes them, and an
//! API key sent in clear text is no key. The certificate chain and the private key are
//! PEM files (what cert-manager and `openssl` write); [`ServerTls::load`] reads and checks
//! them once at start-up, so a wrong path or a key that does not match the certificate
//! stops the service with a clear error instead of failing every handshake.
//!
//! - axum: [`HttpListener`] is an `axum::serve::Listener` that is either plain TCP or TLS;
//!   `axum::serve(listener, router)` works unchanged, graceful shutdown included. TLS
//!   handshakes run on their own tasks (bounded by [`HANDSHAKE_TIMEOUT`]), so a slow or
//!   silent client cannot hold up the accept loop.
//! - tonic: [`grpc_server`] returns a `tonic::transport::Server` with
//!   [`ServerTls::tonic_config`] applied (tonic's `tls-ring` feature), which also
//!   applies to `serve_with_incoming_shutdown`.
//!
//! The crypto provider is rustls's `ring` (see the workspace `Cargo.toml`). Only TLS 1.2
//! and 1.3 with rustls's safe defaults are offered. Certificates are not reloaded while
//! running: rotating them means a rolling restart.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a client may take to complete the TLS handshake before it is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections whose handshake finished but that the server has not picked up yet.
const READY_QUEUE: usize = 128;

/// Where the server's certificate chain and private key are (config section `tls`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM file with the certificate chain, the server's own certificate first.
    pub cert: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("TLS {what} file {}: {source}", path.display())]
    Read {
        /// `certificate` or `key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A file is not PEM, or holds nothing of the expected kind.
    #[error("TLS {what} {origin}: {source}")]
    Pem {
        /// `certificate` or `key`.
        what: &'static str,
        /// The file, or `PEM` when given as bytes.
        origin: String,
        /// What the PEM parser said.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The certificate file holds no certificate.
    #[error("TLS certificate {origin}: no CERTIFICATE block found")]
    NoCertificate {
        /// The file, or `PEM` when given as bytes.
        origin: String,
    },
    /// rustls refused the certificate and key (e.g. the key does not match).
    #[error("TLS certificate and key: {0}")]
    Rustls(#[source] rustls::Error),
}

/// A checked server identity: the PEM text (for tonic) and the rustls config built from
/// it (for axum).
#[derive(Clone)]
pub struct ServerTls {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    config: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("ServerTls")
            .field("cert_pem_bytes", &self.cert_pem.len())
            .finish_non_exhaustive()
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

impl ServerTls {
    /// Reads and checks the files.
    pub fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        let cert_pem = read("certificate", &files.cert)?;
        let key_pem = read("key", &files.key)?;
        Self::build(
            cert_pem,
            key_pem,
            &files.cert.display().to_string(),
            &files.key.display().to_string(),
        )
    }

    /// Checks PEM text given directly (tests, secrets held in memory).
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, TlsError> {
        Self::build(cert_pem.to_vec(), key_pem.to_vec(), "PEM", "PEM")
    }

    fn build(
        cert_pem: Vec<u8>,
        key_pem: Vec<u8>,
        cert_origin: &str,
        key_origin: &str,
    ) -> Result<Self, TlsError> {
        let certs = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| TlsError::Pem {
                what: "certificate",
                origin: cert_origin.to_owned(),
                source,
            })?;
        if certs.is_empty() {
            return Err(TlsError::NoCertificate {
                origin: cert_origin.to_owned(),
            });
        }
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|source| TlsError::Pem {
            what: "key",
            origin: key_origin.to_owned(),
            source,
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Rustls)?
            .with_no_client_auth()
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(TlsError::Rustls)?;
        // rustls checks the pairing only when it can; check it always, so that a key
        // that does not belong to the certificate fails here and not in every handshake.
        rustls::sign::CertifiedKey::from_der(certs, key, &provider).map_err(TlsError::Rustls)?;
        // axum serves HTTP/1.1 (the workspace does not enable its `http2` feature).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ServerTls {
            cert_pem,
            key_pem,
            config: Arc::new(config),
        })
    }

    /// The rustls server config (HTTP/1.1 ALPN).
    pub fn rustls_config(&self) -> Arc<rustls::ServerConfig> {
        self.config.clone()
    }

    /// The same identity for tonic.
    pub fn tonic_config(&self) -> tonic::transport::ServerTlsConfig {
        tonic::transport::ServerTlsConfig::new().identity(tonic::transport::Identity::from_pem(
            &self.cert_pem,
            &self.key_pem,
        ))
    }
}

/// A tonic server builder, with TLS when `tls` is given.
pub fn grpc_server(
    tls: Option<&ServerTls>,
) -> Result<tonic::transport::Server, tonic::transport::Error> {
    let server = tonic::transport::Server::builder();
    match tls {
        Some(tls) => server.tls_config(tls.tonic_config()),
        None => Ok(server),
    }
}

/// A listener for `axum::serve`: plain TCP, or TLS over it.
#[derive(Debug)]
pub struct HttpListener {
    local_addr: SocketAddr,
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Plain(TcpListener),
    Tls(mpsc::Receiver<(HttpStream, SocketAddr)>),
}

impl HttpListener {
    /// Serves plain HTTP on `listener`.
    pub fn plain(listener: TcpListener) -> io::Result<Self> {
        Ok(HttpListener {
            local_addr: listener.local_addr()?,
            inner: Inner::Plain(listener),
        })
    }

    /// Serves HTTPS on `listener`. Spawns the accept loop on the current tokio runtime;
    /// it stops when this listener is dropped (which `axum::serve` does on shutdown).
    pub fn tls(listener: TcpListener, tls: &ServerTls) -> io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let (ready_tx, ready_rx) = mpsc::channel(READY_QUEUE);
        tokio::spawn(accept_loop(
            listener,
            TlsAcceptor::from(tls.rustls_config()),
            ready_tx,
        ));
        Ok(HttpListener {
            local_addr,
            inner: Inner::Tls(ready_rx),
        })
    }

    /// [`HttpListener::tls`] when `tls` is given, else [`HttpListener::plain`].
    pub fn new(listener: TcpListener, tls: Option<&ServerTls>) -> io::Result<Self> {
        match tls {
            Some(tls) => Self::tls(listener, tls),
            None => Self::plain(listener),
        }
    }

    /// Whether connections are TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.inner, Inner::Tls(_))
    }
}

/// Accepts TCP connections and hands each to its own handshake task.
async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(HttpStream, SocketAddr)>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = ready.closed() => return,
        };
        let (tcp, peer) = match accepted {
            Ok(connection) => connection,
            Err(error) => {
                // As axum does: per-connection errors and resource exhaustion (EMFILE)
                // are not fatal; back off a little and go on.
                tracing::debug!("accept: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let _ = ready.send((HttpStream::Tls(Box::new(stream)), peer)).await;
                }
                Ok(Err(error)) => tracing::debug!(%peer, "TLS handshake failed: {error}"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for HttpListener {
    type Io = HttpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match &mut self.inner {
            Inner::Plain(listener) => {
                // axum's own accept for TcpListener (it retries accept errors).
                let (tcp, peer) = axum::serve::Listener::accept(listener).await;
                (HttpStream::Plain(tcp), peer)
            }
            Inner::Tls(ready) => match ready.recv().await {
                Some(connection) => connection,
                // The accept loop only ends once this receiver is gone; never here.
                None => std::future::pending().await,
            },
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

/// One accepted connection, plain or TLS.
#[derive(Debug)]
pub enum HttpStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP (boxed: the TLS state is large).
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for HttpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            HttpStream::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            HttpStream::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for HttpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            HttpStream::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            HttpStream::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            HttpStream::Plain(stream) => Pin::new(stream).poll_flush(cx),
            HttpStream::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            HttpStream::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            HttpStream::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            HttpStream::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            HttpStream::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            HttpStream::Plain(stream) => stream.is_write_vectored(),
            HttpStream::Tls(stream) => stream.is_write_vectored(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed() -> (String, String) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        (cert.cert.pem(), cert.signing_key.serialize_pem())
    }

    #[test]
    fn a_matching_pair_loads_from_files() {
        let (cert, key) = self_signed();
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
        };
        std::fs::write(&files.cert, cert).unwrap();
        std::fs::write(&files.key, key).unwrap();
        let tls = ServerTls::load(&files).unwrap();
        assert_eq!(tls.rustls_config().alpn_protocols, [b"http/1.1".to_vec()]);
        assert!(!format!("{tls:?}").contains("PRIVATE"));
    }

    #[test]
    fn missing_files_name_the_file() {
        let files = TlsFiles {
            cert: "/nonexistent/tls.crt".into(),
            key: "/nonexistent/tls.key".into(),
        };
        let error = ServerTls::load(&files).unwrap_err().to_string();
        assert!(error.contains("/nonexistent/tls.crt"), "{error}");
    }

    #[test]
    fn a_file_without_a_certificate_is_refused() {
        let (_, key) = self_signed();
        let error = ServerTls::from_pem(b"not pem at all\n", key.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(error.contains("no CERTIFICATE"), "{error}");
    }

    #[test]
    fn a_missing_key_is_refused() {
        let (cert, _) = self_signed();
        let error = ServerTls::from_pem(cert.as_bytes(), cert.as_bytes()).unwrap_err();
        assert!(
            matches!(error, TlsError::Pem { what: "key", .. }),
            "{error}"
        );
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let (cert, _) = self_signed();
        let (_, other_key) = self_signed();
        let error = ServerTls::from_pem(cert.as_bytes(), other_key.as_bytes()).unwrap_err();
        assert!(matches!(error, TlsError::Rustls(_)), "{error}");
    }
}
