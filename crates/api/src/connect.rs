//! How a [`crate::Client`] reaches its server: `http://` or `https://` (rustls with ring; the
//! system's roots from `rustls-native-certs`, plus a PEM bundle for a private CA), directly or
//! through the proxy `HTTPS_PROXY` / `HTTP_PROXY` name (`NO_PROXY` honoured), as a `CONNECT`
//! tunnel in both cases (so the proxy sees only the host and port, never a request or a token).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::Uri;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use tokio::net::TcpStream;

use crate::client::{ApiError, BoxError};

/// How a client connects, besides the server URL.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// PEM certificates trusted besides the system's roots (`api.ca_file`, `--ca-file`).
    pub ca_file: Option<PathBuf>,
    /// Proxies as the environment names them; `None` reads `HTTPS_PROXY`, `HTTP_PROXY`,
    /// `NO_PROXY` (and their lower-case forms) when the client is made.
    pub proxy: Option<ProxyChoice>,
}

/// A proxy decision made by the caller instead of the environment.
#[derive(Debug, Clone)]
pub enum ProxyChoice {
    Direct,
    /// `http://[user:pass@]host:port` of a proxy that takes `CONNECT`.
    Via(String),
}

/// The connector stack: TLS (when the URL is `https://`) over a direct or tunnelled TCP stream.
pub(crate) type Connector = HttpsConnector<ProxyOrDirect>;

/// Builds the connector for `base`, the server's URL.
pub(crate) fn connector(base: &str, options: &ConnectOptions) -> Result<Connector, ApiError> {
    let uri: Uri = base
        .parse()
        .map_err(|_| ApiError::BadUrl(base.to_owned()))?;
    let mut tcp = HttpConnector::new();
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(Some(Duration::from_secs(10)));
    // The TLS layer, not this one, decides on the scheme.
    tcp.enforce_http(false);
    let proxy = match &options.proxy {
        Some(ProxyChoice::Direct) => None,
        Some(ProxyChoice::Via(url)) => Some(
            Matcher::builder()
                .http(url.as_str())
                .https(url.as_str())
                .build()
                .intercept(&uri)
                .ok_or_else(|| ApiError::BadUrl(format!("proxy {url}")))?,
        ),
        None => Matcher::from_env().intercept(&uri),
    };
    let inner = match proxy {
        Some(intercept) => {
            let mut tunnel = Tunnel::new(intercept.uri().clone(), tcp);
            if let Some(auth) = intercept.basic_auth() {
                tunnel = tunnel.with_auth(auth.clone());
            }
            ProxyOrDirect::Tunnel(tunnel)
        }
        None => ProxyOrDirect::Direct(tcp),
    };
    let tls = if uri.scheme_str() == Some("https") {
        tls_config(options.ca_file.as_deref())?
    } else {
        // Never used for http://, but the builder wants one: no roots at all.
        client_config(rustls::RootCertStore::empty())?
    };
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(inner))
}

fn client_config(roots: rustls::RootCertStore) -> Result<rustls::ClientConfig, ApiError> {
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|err| ApiError::Tls(err.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

/// The system's roots plus those of `ca_file`. A CA file that cannot be read, or holds no
/// certificate, is an error naming it; with neither a CA file nor any system root, too.
fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, ApiError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<_, _>>())
            .map_err(|err| ApiError::Tls(format!("CA file {}: {err}", path.display())))?;
        if certs.is_empty() {
            return Err(ApiError::Tls(format!(
                "CA file {} holds no PEM certificate",
                path.display()
            )));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|err| ApiError::Tls(format!("CA file {}: {err}", path.display())))?;
        }
    }
    if roots.is_empty() {
        return Err(ApiError::Tls(
            "no trusted root certificates: the system has none (install ca-certificates) and no CA file was given"
                .into(),
        ));
    }
    client_config(roots)
}

/// A TCP stream to the server itself, or through a proxy's `CONNECT` tunnel.
#[derive(Clone, Debug)]
pub(crate) enum ProxyOrDirect {
    Direct(HttpConnector),
    Tunnel(Tunnel<HttpConnector>),
}

type Connecting = Pin<Box<dyn Future<Output = Result<TokioIo<TcpStream>, BoxError>> + Send>>;

impl tower_service::Service<Uri> for ProxyOrDirect {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Connecting;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            ProxyOrDirect::Direct(tcp) => tcp.poll_ready(cx).map_err(Into::into),
            ProxyOrDirect::Tunnel(tunnel) => tunnel.poll_ready(cx).map_err(Into::into),
        }
    }

    fn call(&mut self, dst: Uri) -> Connecting {
        match self {
            ProxyOrDirect::Direct(tcp) => {
                let connecting = tcp.call(dst);
                Box::pin(async move { connecting.await.map_err(Into::into) })
            }
            ProxyOrDirect::Tunnel(tunnel) => {
                let connecting = tunnel.call(dst);
                Box::pin(async move {
                    connecting
                        .await
                        .map_err(|err| format!("through the proxy: {err}").into())
                })
            }
        }
    }
}
