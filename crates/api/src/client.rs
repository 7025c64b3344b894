//! A small HTTP/1 client over hyper-util's pooled client. Plain `http://` for now: bosun's
//! embedded server listens on loopback. TLS (rustls with ring) joins when the server does.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, StatusCode, header};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::types::ErrorBody;

/// Largest response body the client reads (log pages are smaller).
const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// Everything a call can fail with; each message names the method and URL.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{method} {url}: {status}: {message}")]
    Status {
        method: Method,
        url: String,
        status: StatusCode,
        message: String,
    },
    #[error("{method} {url}: {message}")]
    Transport {
        method: Method,
        url: String,
        message: String,
    },
    #[error("{method} {url}: no answer within {0:?}", timeout)]
    Timeout {
        method: Method,
        url: String,
        timeout: Duration,
    },
    #[error("{method} {url}: unreadable answer: {message}")]
    Decode {
        method: Method,
        url: String,
        message: String,
    },
    #[error("bad server URL `{0}`: expected http://host:port")]
    BadUrl(String),
}

impl ApiError {
    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether retrying later may help: transport errors, timeouts and 5xx answers.
    pub fn is_retryable(&self) -> bool {
        match self {
            ApiError::Transport { .. } | ApiError::Timeout { .. } => true,
            ApiError::Status { status, .. } => status.is_server_error(),
            _ => false,
        }
    }
}

/// How a request authenticates.
#[derive(Clone)]
pub enum Auth {
    None,
    /// `Authorization: Bearer` (runner and task tokens).
    Bearer(String),
    /// `Circle-Token` (admin and user calls, as CircleCI's CLI sends).
    CircleToken(String),
}

impl std::fmt::Debug for Auth {
    // Never print a token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::None => f.write_str("Auth::None"),
            Auth::Bearer(_) => f.write_str("Auth::Bearer(<redacted>)"),
            Auth::CircleToken(_) => f.write_str("Auth::CircleToken(<redacted>)"),
        }
    }
}

/// A raw answer.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Response {
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }
}

/// A client for one server base URL.
#[derive(Clone, Debug)]
pub struct Client {
    base: String,
    http: HyperClient<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl Client {
    /// `base` is the server URL, e.g. `http://127.0.0.1:8730`.
    pub fn new(base: &str) -> Result<Client, ApiError> {
        let base = base.trim_end_matches('/').to_owned();
        let rest = base
            .strip_prefix("http://")
            .ok_or_else(|| ApiError::BadUrl(base.clone()))?;
        if rest.is_empty() || rest.contains(['?', '#', ' ']) {
            return Err(ApiError::BadUrl(base));
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(10)));
        let http = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Client {
            base,
            http,
            timeout: Duration::from_secs(60),
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Sends one request; non-2xx answers become [`ApiError::Status`] with the server's message.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        auth: &Auth,
        body: Option<(&'static str, Bytes)>,
        timeout: Option<Duration>,
    ) -> Result<Response, ApiError> {
        let url = format!("{}{}", self.base, path);
        let mut builder = Request::builder().method(method.clone()).uri(&url);
        match auth {
            Auth::None => {}
            Auth::Bearer(token) => {
                builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
            }
            Auth::CircleToken(token) => builder = builder.header("Circle-Token", token.as_str()),
        }
        builder = builder.header(
            header::USER_AGENT,
            concat!("bosun/", env!("CARGO_PKG_VERSION")),
        );
        let body = match body {
            Some((content_type, bytes)) => {
                builder = builder.header(header::CONTENT_TYPE, content_type);
                Full::new(bytes)
            }
            None => Full::new(Bytes::new()),
        };
        let request = builder.body(body).map_err(|err| ApiError::Transport {
            method: method.clone(),
            url: url.clone(),
            message: err.to_string(),
        })?;
        let timeout = timeout.unwrap_or(self.timeout);
        let exchange = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|err| ApiError::Transport {
                    method: method.clone(),
                    url: url.clone(),
                    message: error_chain(&err),
                })?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|err| ApiError::Transport {
                    method: method.clone(),
                    url: url.clone(),
                    message: format!("reading the answer: {err}"),
                })?
                .to_bytes();
            Ok::<_, ApiError>(Response {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        let response = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| ApiError::Timeout {
                method: method.clone(),
                url: url.clone(),
                timeout,
            })??;
        if response.status.is_success() {
            return Ok(response);
        }
        let message = match serde_json::from_slice::<ErrorBody>(&response.body) {
            Ok(body) => body.message,
            Err(_) => String::from_utf8_lossy(&response.body)
                .chars()
                .take(300)
                .collect(),
        };
        Err(ApiError::Status {
            method,
            url,
            status: response.status,
            message,
        })
    }

    /// JSON in, JSON out.
    pub async fn json<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        auth: &Auth,
        body: Option<&B>,
    ) -> Result<T, ApiError> {
        let response = self
            .send_json(method.clone(), path, auth, body, None)
            .await?;
        self.decode(method, path, &response)
    }

    /// JSON in, raw answer out (for calls whose 204 means something).
    pub async fn send_json<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        auth: &Auth,
        body: Option<&B>,
        timeout: Option<Duration>,
    ) -> Result<Response, ApiError> {
        let body = match body {
            Some(body) => Some((
                "application/json",
                Bytes::from(serde_json::to_vec(body).map_err(|err| ApiError::Decode {
                    method: method.clone(),
                    url: format!("{}{}", self.base, path),
                    message: err.to_string(),
                })?),
            )),
            None => None,
        };
        self.send(method, path, auth, body, timeout).await
    }

    /// Decodes a JSON answer, naming the URL on failure.
    pub fn decode<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        response: &Response,
    ) -> Result<T, ApiError> {
        response.json().map_err(|err| ApiError::Decode {
            method,
            url: format!("{}{}", self.base, path),
            message: err.to_string(),
        })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str, auth: &Auth) -> Result<T, ApiError> {
        self.json::<(), T>(Method::GET, path, auth, None).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        auth: &Auth,
        body: &B,
    ) -> Result<T, ApiError> {
        self.json(Method::POST, path, auth, Some(body)).await
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        source = inner.source();
    }
    message
}

/// Percent-encodes one query or path component (RFC 3986 unreserved characters pass).
pub fn encode_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
