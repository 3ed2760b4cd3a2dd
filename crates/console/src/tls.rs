//! HTTPS for a console off loopback: a certificate the firm gives (PEM
//! files), or one the console makes for itself and keeps, so that its
//! fingerprint, printed at start, stays the same across restarts.
//! Handshakes run on tasks of their own, so a slow client holds up no one.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::Digest;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::conn::{accept_bounded, Guarded};

/// Where the certificate comes from.
#[derive(Debug, Clone)]
pub enum Tls {
    /// PEM certificate chain and private key.
    Files { cert: PathBuf, key: PathBuf },
    /// Made on first start and kept in these two files (the key readable
    /// by its owner only).
    SelfSigned { cert: PathBuf, key: PathBuf },
}

/// How long a client may take to finish its handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// The server's TLS settings, and the certificate's SHA-256 fingerprint.
pub fn server_config(tls: &Tls) -> Result<(Arc<rustls::ServerConfig>, String)> {
    let (cert_path, key_path) = match tls {
        Tls::Files { cert, key } => (cert, key),
        Tls::SelfSigned { cert, key } => {
            if !cert.exists() || !key.exists() {
                make_self_signed(cert, key)?;
            }
            (cert, key)
        }
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .with_context(|| format!("cannot read the certificate {}", cert_path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow!("{}: not a PEM certificate: {e}", cert_path.display()))?;
    if certs.is_empty() {
        bail!("{} holds no certificate", cert_path.display());
    }
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| anyhow!("{}: not a PEM private key: {e}", key_path.display()))?;
    let fingerprint = fingerprint(&certs[0]);
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow!("TLS settings: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            anyhow!(
                "{} and {} do not make a usable certificate: {e}",
                cert_path.display(),
                key_path.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(config), fingerprint))
}

/// `AB:CD:...`, as browsers show it.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    sha2::Sha256::digest(cert.as_ref())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn make_self_signed(cert: &Path, key: &Path) -> Result<()> {
    let host = hostname();
    let mut names = vec!["localhost".to_string()];
    if !host.is_empty() && host != "localhost" {
        names.push(host);
    }
    let made = rcgen::generate_simple_self_signed(names)
        .map_err(|e| anyhow!("cannot make a certificate: {e}"))?;
    write_private(key, made.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(cert, made.cert.pem())
        .with_context(|| format!("cannot write {}", cert.display()))?;
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(bytes)?;
    Ok(())
}

type Ready = (Guarded<TlsStream<TcpStream>>, SocketAddr);

/// Accepts TCP connections (each with a permit, see `conn.rs`) and hands
/// on those that finished a handshake.
pub struct TlsListener {
    ready: tokio::sync::mpsc::Receiver<Ready>,
    addr: SocketAddr,
}

impl TlsListener {
    /// Must be called inside the runtime.
    pub fn new(
        tcp: TcpListener,
        config: Arc<rustls::ServerConfig>,
        permits: Arc<Semaphore>,
        idle: Duration,
    ) -> std::io::Result<Self> {
        let addr = tcp.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let (tx, ready) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (stream, peer, permit) = accept_bounded(&tcp, &permits).await;
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let shake = tokio::time::timeout(HANDSHAKE, acceptor.accept(stream)).await;
                    if let Ok(Ok(tls)) = shake {
                        let _ = tx.send((Guarded::new(tls, permit, idle), peer)).await;
                    }
                });
            }
        });
        Ok(TlsListener { ready, addr })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = Guarded<TlsStream<TcpStream>>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accepting task is gone only when the runtime stops.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.addr)
    }
}
