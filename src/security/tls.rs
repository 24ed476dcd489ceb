//! TLS on the gRPC listeners.
//!
//! tonic's own `ServerTlsConfig` cannot change its certificate without a restart, so the server
//! accepts TCP connections itself ([`incoming`]) and runs each handshake with the current
//! [`ReloadingTls`] configuration. A rotated certificate, key or client CA applies to the next
//! connection; open connections keep theirs. Each connection carries a [`ConnInfo`], which tonic
//! puts in every request's extensions, so that [`super::auth`] can see the client's certificate
//! identity.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::{Context, bail};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::config::TlsSettings;

/// Connections accepted but not yet taken by the server; a full queue pauses accepting.
const ACCEPT_QUEUE: usize = 64;

/// The crypto provider of every TLS configuration: ring, passed explicitly rather than installed
/// as the process default, so that nothing depends on global state.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server's TLS configuration, swapped for a new one when its files change.
pub struct ReloadingTls {
    settings: TlsSettings,
    current: RwLock<Arc<ServerConfig>>,
}

impl ReloadingTls {
    /// Loads `settings.cert`, `settings.key` and `settings.client_ca`; fails, naming the
    /// setting, when one does not load.
    pub fn load(settings: &TlsSettings) -> anyhow::Result<Arc<Self>> {
        let config = server_config(settings)?;
        Ok(Arc::new(Self {
            settings: settings.clone(),
            current: RwLock::new(Arc::new(config)),
        }))
    }

    /// The files whose changes [`Self::reload`] must see.
    pub fn paths(&self) -> Vec<PathBuf> {
        [
            &self.settings.cert,
            &self.settings.key,
            &self.settings.client_ca,
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect()
    }

    /// Reads the files again. A pair that does not load (for example while cert-manager has
    /// replaced only one of the two files) leaves the previous configuration in place.
    pub fn reload(&self) {
        match server_config(&self.settings) {
            Ok(config) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
                tracing::info!("TLS certificate reloaded; new connections use it");
            }
            Err(err) => tracing::warn!(
                error = format!("{err:#}"),
                "TLS files changed but do not load; keeping the previous certificate"
            ),
        }
    }

    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// A rustls server configuration from the files named by `settings`: TLS 1.3 and 1.2 with
/// rustls's default suites (for 1.2: ECDHE with AES-GCM or ChaCha20-Poly1305), HTTP/2 by ALPN
/// (grpc-go clients insist on it), and client certificates required when `client_ca` is set.
fn server_config(settings: &TlsSettings) -> anyhow::Result<ServerConfig> {
    let (Some(cert), Some(key)) = (&settings.cert, &settings.key) else {
        bail!("tls.cert and tls.key must be set together");
    };
    let chain = read_certs(cert).context("tls.cert")?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("tls.key: reading a private key from {}", key.display()))?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("choosing the TLS versions")?;
    let builder = match &settings.client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(ca).context("tls.client_ca")? {
                roots
                    .add(cert)
                    .with_context(|| format!("tls.client_ca: a certificate in {}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .context("tls.client_ca")?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .context("tls.cert and tls.key do not form a usable pair")?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Every certificate in a PEM file; at least one.
fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading certificates from {}", path.display()))?;
    if certs.is_empty() {
        bail!("{} holds no PEM certificate", path.display());
    }
    Ok(certs)
}

/// Who the client's certificate says it is: its DNS subject alternative names and common names,
/// matched against `auth.admin_subjects` and `auth.reader_subjects`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The DNS names, then the common names, in certificate order.
    pub names: Vec<String>,
}

impl PeerIdentity {
    /// The identity in a DER certificate, or `None` when it does not parse (rustls has verified
    /// it already, so that would be a certificate x509-parser cannot read).
    pub fn from_der(der: &[u8]) -> Option<Self> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let mut names = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                if let GeneralName::DNSName(dns) = name {
                    names.push((*dns).to_owned());
                }
            }
        }
        for cn in cert.subject().iter_common_name() {
            if let Ok(cn) = cn.as_str() {
                names.push(cn.to_owned());
            }
        }
        Some(Self { names })
    }
}

/// What tonic inserts into the extensions of every request of a connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The client's address.
    pub remote_addr: Option<SocketAddr>,
    /// The identity of the client's certificate, under mutual TLS.
    pub peer: Option<Arc<PeerIdentity>>,
}

/// An accepted connection: plaintext, or TLS after a completed handshake.
pub enum Conn {
    /// Plaintext HTTP/2 (no `[tls]` configured).
    Plain(TcpStream, ConnInfo),
    /// TLS, handshake done.
    Tls(Box<TlsStream<TcpStream>>, ConnInfo),
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        match self {
            Conn::Plain(_, info) | Conn::Tls(_, info) => info.clone(),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(stream, _) => Pin::new(stream).poll_read(cx, buf),
            Conn::Tls(stream, _) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(stream, _) => Pin::new(stream).poll_write(cx, buf),
            Conn::Tls(stream, _) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(stream, _) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Conn::Tls(stream, _) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    /// False, on purpose, although both streams could take vectored writes: h2 then copies DATA
    /// payloads up to 1 KiB (not 256 bytes) into its buffer, so a GetImageSpec answer of a few
    /// hundred bytes shares a write system call with others instead of costing one of its own.
    /// An answer over 1 KiB goes out as two writes instead of one vectored write. Figures:
    /// docs/benchmarks-history.md.
    fn is_write_vectored(&self) -> bool {
        false
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(stream, _) => Pin::new(stream).poll_flush(cx),
            Conn::Tls(stream, _) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(stream, _) => Pin::new(stream).poll_shutdown(cx),
            Conn::Tls(stream, _) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The connections of `listener` for `serve_with_incoming_shutdown`, TLS-terminated when `tls`
/// is given.
///
/// Handshakes run in tasks of their own, so a slow or silent client never holds up the others,
/// and are abandoned after `handshake_timeout`. At most `max_handshakes` run at once: a
/// connection beyond them is closed at once, as `server.max_connections` closes one beyond its
/// limit, so clients that connect and never finish a handshake hold at most that many
/// connections. A failed handshake (no client certificate under
/// mutual TLS, an unknown CA, a plaintext client) is logged at DEBUG: it is the client's problem,
/// and scanners would flood a louder level. Accepting stops when the server drops the stream or
/// `cancel` fires, which closes the listener.
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<ReloadingTls>>,
    handshake_timeout: Duration,
    max_handshakes: usize,
    cancel: CancellationToken,
) -> ReceiverStream<io::Result<Conn>> {
    let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
    let handshakes = Arc::new(Semaphore::new(max_handshakes.min(Semaphore::MAX_PERMITS)));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = tx.closed() => return,
                () = cancel.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let (stream, remote_addr) = match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %err, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let Some(tls) = &tls else {
                let info = ConnInfo {
                    remote_addr: Some(remote_addr),
                    peer: None,
                };
                if tx.send(Ok(Conn::Plain(stream, info))).await.is_err() {
                    return;
                }
                continue;
            };
            let Ok(handshake) = handshakes.clone().try_acquire_owned() else {
                tracing::debug!(
                    %remote_addr,
                    max_handshakes,
                    "tls.max_handshakes reached; closing a new connection"
                );
                continue;
            };
            let acceptor = tls.acceptor();
            let tx = tx.clone();
            tokio::spawn(async move {
                // Held until the connection is handed to the server (or dropped), so that
                // finished handshakes waiting for a full accept queue are bounded too.
                let _handshake = handshake;
                let stream =
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(err)) => {
                            tracing::debug!(%remote_addr, error = %err, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%remote_addr, "TLS handshake timed out");
                            return;
                        }
                    };
                let peer = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .and_then(|leaf| PeerIdentity::from_der(leaf))
                    .map(Arc::new);
                let info = ConnInfo {
                    remote_addr: Some(remote_addr),
                    peer,
                };
                let _ = tx.send(Ok(Conn::Tls(Box::new(stream), info))).await;
            });
        }
    });
    ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_connections_do_not_offer_vectored_writes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        assert!(stream.is_write_vectored(), "the TCP stream itself could");
        let conn = Conn::Plain(
            stream,
            ConnInfo {
                remote_addr: None,
                peer: None,
            },
        );
        // See `Conn::is_write_vectored`: found answers would each cost a write of their own.
        assert!(!conn.is_write_vectored());
    }
}
