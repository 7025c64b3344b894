//! HTTPS for `bosun-server --tls-cert FILE --tls-key FILE` (PEM; rustls with ring). The
//! certificate is read again on SIGHUP and swapped in for new handshakes; connections already
//! open keep theirs, so a renewal drops nothing. A file that does not load on SIGHUP leaves the
//! served certificate as it was, and says why in the log.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::{Context, bail};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The certificate and key files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Hands every handshake the certificate loaded last.
#[derive(Debug)]
struct Reloadable {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Reloadable {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|current| current.clone())
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads the certificate chain and the private key, and checks that they belong together.
fn load(files: &TlsFiles) -> anyhow::Result<Arc<CertifiedKey>> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|err| anyhow::anyhow!("--tls-cert {}: {err}", files.cert.display()))?;
    if chain.is_empty() {
        bail!(
            "--tls-cert {} holds no PEM certificate",
            files.cert.display()
        );
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|err| anyhow::anyhow!("--tls-key {}: {err}", files.key.display()))?;
    let key = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|err| anyhow::anyhow!("--tls-key {}: {err}", files.key.display()))?;
    let certified = CertifiedKey::new(chain, key);
    certified.keys_match().with_context(|| {
        format!(
            "--tls-key {} is not the key of --tls-cert {}",
            files.key.display(),
            files.cert.display()
        )
    })?;
    Ok(Arc::new(certified))
}

/// The acceptor new connections go through, and the means to reload its certificate.
pub struct Tls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    resolver: Arc<Reloadable>,
    files: TlsFiles,
}

impl Tls {
    pub fn new(files: &TlsFiles) -> anyhow::Result<Tls> {
        let resolver = Arc::new(Reloadable {
            current: RwLock::new(load(files)?),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            resolver,
            files: files.clone(),
        })
    }

    /// Loads the files again; on success new handshakes get the new certificate.
    pub fn reload(&self) -> anyhow::Result<()> {
        let certified = load(&self.files)?;
        if let Ok(mut current) = self.resolver.current.write() {
            *current = certified;
        }
        Ok(())
    }

    pub fn cert_path(&self) -> &Path {
        &self.files.cert
    }
}

/// Reloads `tls` on every SIGHUP, until the server stops.
pub fn reload_on_sighup(tls: Arc<Tls>) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("listening for SIGHUP")?;
    Ok(tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            match tls.reload() {
                Ok(()) => tracing::info!(
                    "SIGHUP: reloaded the TLS certificate {}",
                    tls.cert_path().display()
                ),
                Err(err) => tracing::error!("SIGHUP: {err:#}; still serving the old certificate"),
            }
        }
    }))
}
