//! A small HTTP/1 client over hyper-util's pooled client, `http://` or `https://` (rustls with
//! ring), directly or through a proxy: see `connect.rs`.
//!
//! Two kinds of exchange share one connection pool and one error type:
//! - buffered ([`Client::send`] and the typed methods of `endpoints.rs`): the request body is in
//!   memory, the answer is read whole (at most [`MAX_RESPONSE_BYTES`]) and the whole exchange has
//!   one deadline ([`Timeouts::request`]);
//! - streamed ([`Client::upload`], [`Client::download`]): the request body is a [`Body`] pulled
//!   from its source only as fast as the server takes it, the answer is a [`Download`] read chunk by
//!   chunk, and the deadline is an idle one ([`Timeouts::idle`]): the exchange fails when no byte
//!   moved for that long, however long the whole transfer takes.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::{Method, Request, StatusCode, header};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::types::ErrorBody;

/// Largest response body a buffered call reads (log pages are smaller).
pub const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// Largest error answer read from a streamed exchange: enough for any `{"message": ...}`.
const MAX_ERROR_BYTES: usize = 64 << 10;

/// The error an upload's source may fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

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
        /// The server's address refused the TCP connection: nothing listens there (down or
        /// restarting), as opposed to a connection that failed later.
        refused: bool,
    },
    #[error("{method} {url}: no answer within {0:?}", timeout)]
    Timeout {
        method: Method,
        url: String,
        timeout: Duration,
    },
    /// A streamed exchange where nothing moved for [`Timeouts::idle`].
    #[error("{method} {url}: nothing {during} for {idle:?}")]
    Idle {
        method: Method,
        url: String,
        /// What stalled: `sent`, `answered` or `received`.
        during: &'static str,
        idle: Duration,
    },
    /// The source of an upload failed, or gave another length than it announced.
    #[error("{method} {url}: reading the upload: {message}")]
    Upload {
        method: Method,
        url: String,
        message: String,
    },
    /// A download went past the limit its reader set ([`Download::limit`]).
    #[error("{method} {url}: the answer is longer than {limit} bytes")]
    TooLong {
        method: Method,
        url: String,
        limit: u64,
    },
    #[error("{method} {url}: unreadable answer: {message}")]
    Decode {
        method: Method,
        url: String,
        message: String,
    },
    #[error("bad server URL `{0}`: expected http://host:port or https://host:port")]
    BadUrl(String),
    /// The TLS set-up: the CA file or the system's roots.
    #[error("TLS: {0}")]
    Tls(String),
}

impl ApiError {
    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether retrying later may help: transport errors, timeouts and 5xx answers. A streamed
    /// upload retries only with a new [`Body`] from its source: the client cannot replay one.
    pub fn is_retryable(&self) -> bool {
        match self {
            ApiError::Transport { .. } | ApiError::Timeout { .. } | ApiError::Idle { .. } => true,
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

/// The deadlines of a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// A buffered call's whole exchange, unless the call gives its own.
    pub request: Duration,
    /// A streamed exchange's longest pause: no byte of the upload taken, no answer, or no byte of
    /// the download received for this long ends it with [`ApiError::Idle`].
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            request: Duration::from_secs(60),
            idle: Duration::from_secs(60),
        }
    }
}

/// A client for one server base URL.
#[derive(Clone, Debug)]
pub struct Client {
    base: String,
    http: HyperClient<crate::connect::Connector, RequestBody>,
    timeouts: Timeouts,
}

impl Client {
    /// `base` is the server URL, e.g. `http://127.0.0.1:8730`.
    pub fn new(base: &str) -> Result<Client, ApiError> {
        Client::with_timeouts(base, Timeouts::default())
    }

    pub fn with_timeouts(base: &str, timeouts: Timeouts) -> Result<Client, ApiError> {
        Client::with_options(base, timeouts, &crate::ConnectOptions::default())
    }

    /// A client for `base` (`http://` or `https://`), with a CA file or a proxy choice.
    pub fn with_options(
        base: &str,
        timeouts: Timeouts,
        options: &crate::ConnectOptions,
    ) -> Result<Client, ApiError> {
        let base = base.trim_end_matches('/').to_owned();
        let rest = base
            .strip_prefix("http://")
            .or_else(|| base.strip_prefix("https://"))
            .ok_or_else(|| ApiError::BadUrl(base.clone()))?;
        if rest.is_empty() || rest.contains(['?', '#', ' ']) {
            return Err(ApiError::BadUrl(base));
        }
        let connector = crate::connect::connector(&base, options)?;
        let http = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Client {
            base,
            http,
            timeouts,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    fn request(
        &self,
        method: &Method,
        url: &str,
        auth: &Auth,
        content_type: Option<&'static str>,
        body: RequestBody,
    ) -> Result<Request<RequestBody>, ApiError> {
        let mut builder = Request::builder().method(method.clone()).uri(url);
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
        if let Some(content_type) = content_type {
            builder = builder.header(header::CONTENT_TYPE, content_type);
        }
        builder.body(body).map_err(|err| ApiError::Transport {
            method: method.clone(),
            url: url.to_owned(),
            message: err.to_string(),
            refused: false,
        })
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
        let url = self.url(path);
        let (content_type, body) = match body {
            Some((content_type, bytes)) => (Some(content_type), RequestBody::full(bytes)),
            None => (None, RequestBody::full(Bytes::new())),
        };
        let request = self.request(&method, &url, auth, content_type, body)?;
        let timeout = timeout.unwrap_or(self.timeouts.request);
        let exchange = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|err| transport_error(&method, &url, &err))?;
            let (parts, body) = response.into_parts();
            let body = collect_limited(body, MAX_RESPONSE_BYTES, &method, &url).await?;
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
        Err(status_error(method, url, response.status, &response.body))
    }

    /// Sends a streamed body; the (small) answer is read whole. The body's source is pulled only
    /// as fast as the connection takes it, so memory stays flat however long the upload; a pause
    /// longer than [`Timeouts::idle`] in sending, or in waiting for the answer after, fails with
    /// [`ApiError::Idle`].
    pub async fn upload(
        &self,
        method: Method,
        path: &str,
        auth: &Auth,
        content_type: &'static str,
        body: Body,
    ) -> Result<Response, ApiError> {
        let url = self.url(path);
        let idle = self.timeouts.idle;
        let progress = Arc::new(Progress::new());
        let body = RequestBody::stream(body, progress.clone());
        let request = self.request(&method, &url, auth, Some(content_type), body)?;
        let exchange = async {
            let response = self.http.request(request).await;
            let response = match (response, progress.take_failure()) {
                (_, Some(message)) => {
                    return Err(ApiError::Upload {
                        method: method.clone(),
                        url: url.clone(),
                        message,
                    });
                }
                (Ok(response), None) => response,
                (Err(err), None) => {
                    return Err(transport_error(&method, &url, &err));
                }
            };
            progress.touch();
            let (parts, body) = response.into_parts();
            let limit = if parts.status.is_success() {
                MAX_RESPONSE_BYTES
            } else {
                MAX_ERROR_BYTES
            };
            let body = collect_limited(body, limit, &method, &url).await?;
            Ok::<_, ApiError>(Response {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        let response = tokio::select! {
            response = exchange => response?,
            during = progress.stalled(idle) => {
                return Err(ApiError::Idle { method, url, during, idle });
            }
        };
        if response.status.is_success() {
            return Ok(response);
        }
        Err(status_error(method, url, response.status, &response.body))
    }

    /// Sends a request without a body and answers with its body as a stream; each wait (for the
    /// answer's head, then for every chunk) is bounded by [`Timeouts::idle`]. Non-2xx answers
    /// become [`ApiError::Status`] here, before any byte reaches the caller.
    pub async fn download(
        &self,
        method: Method,
        path: &str,
        auth: &Auth,
    ) -> Result<Download, ApiError> {
        let url = self.url(path);
        let idle = self.timeouts.idle;
        let request = self.request(&method, &url, auth, None, RequestBody::full(Bytes::new()))?;
        let response = match tokio::time::timeout(idle, self.http.request(request)).await {
            Err(_) => {
                return Err(ApiError::Idle {
                    method,
                    url,
                    during: "answered",
                    idle,
                });
            }
            Ok(Err(err)) => {
                return Err(transport_error(&method, &url, &err));
            }
            Ok(Ok(response)) => response,
        };
        let (parts, body) = response.into_parts();
        let mut download = Download {
            method,
            url,
            status: parts.status,
            headers: parts.headers,
            body,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
            received: 0,
            limit: None,
            waiting: false,
            done: false,
        };
        if download.status.is_success() {
            return Ok(download);
        }
        // The error answer is read whole, but only up to a bound: a message, not a blob.
        download.limit = Some(MAX_ERROR_BYTES as u64);
        let mut message = Vec::new();
        loop {
            match download.chunk().await {
                Ok(Some(bytes)) => message.extend_from_slice(&bytes),
                Ok(None) | Err(ApiError::TooLong { .. }) => break,
                Err(err) => return Err(err),
            }
        }
        Err(status_error(
            download.method,
            download.url,
            download.status,
            &message,
        ))
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
                    url: self.url(path),
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
            url: self.url(path),
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

/// The error of a non-2xx answer: the server's `{"message"}`, or the start of its text.
/// Reads a whole (small) answer body, at most `limit` bytes.
async fn collect_limited(
    body: Incoming,
    limit: usize,
    method: &Method,
    url: &str,
) -> Result<Bytes, ApiError> {
    Ok(Limited::new(body, limit)
        .collect()
        .await
        .map_err(|err| ApiError::Transport {
            method: method.clone(),
            url: url.to_owned(),
            message: format!("reading the answer: {err}"),
            refused: false,
        })?
        .to_bytes())
}

fn status_error(method: Method, url: String, status: StatusCode, body: &[u8]) -> ApiError {
    let message = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(body) => body.message,
        Err(_) => String::from_utf8_lossy(body).chars().take(300).collect(),
    };
    ApiError::Status {
        method,
        url,
        status,
        message,
    }
}

/// A request that failed before any answer, as [`ApiError::Transport`]; `refused` when an
/// `ECONNREFUSED` anywhere in the error's chain says nothing listened at the address.
fn transport_error(
    method: &Method,
    url: &str,
    err: &(dyn std::error::Error + 'static),
) -> ApiError {
    let mut refused = false;
    let mut source = Some(err);
    while let Some(inner) = source {
        if let Some(io) = inner.downcast_ref::<std::io::Error>() {
            refused |= io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        source = inner.source();
    }
    ApiError::Transport {
        method: method.clone(),
        url: url.to_owned(),
        message: error_chain(err),
        refused,
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

/// Undoes [`encode_component`]; an escape that is not two hex digits is kept as written.
pub fn decode_component(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let escape = text
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok());
            if let Some(byte) = escape {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---- streamed request bodies ----

type ChunkStream = Pin<Box<dyn Stream<Item = Result<Bytes, BoxError>> + Send>>;

/// The body of an upload: a stream of chunks, pulled only when the connection can take more.
pub struct Body {
    stream: ChunkStream,
    length: Option<u64>,
}

impl Body {
    /// A body of chunks of unknown total length (sent chunked).
    pub fn stream<S, E>(stream: S) -> Body
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        use futures_util::StreamExt;
        Body {
            stream: Box::pin(stream.map(|chunk| chunk.map_err(Into::into))),
            length: None,
        }
    }

    /// A body of exactly `length` bytes, sent with `Content-Length` so the server can refuse an
    /// object over its limit before reading it. A source that gives more or fewer bytes fails the
    /// upload with [`ApiError::Upload`] instead of sending a truncated object.
    pub fn sized<S, E>(length: u64, stream: S) -> Body
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        Body {
            length: Some(length),
            ..Body::stream(stream)
        }
    }

    /// A body read from `reader` in chunks of at most `chunk` bytes.
    pub fn reader<R>(reader: R, chunk: usize) -> Body
    where
        R: tokio::io::AsyncRead + Send + 'static,
    {
        Body::stream(tokio_util::io::ReaderStream::with_capacity(
            reader,
            chunk.max(1),
        ))
    }

    /// A body fed through a [`BodySender`], for a source that pushes (the launch-agent relaying
    /// a task-agent's data frames). At most `capacity` chunks wait in between: a slow server makes
    /// [`BodySender::send`] wait, so backpressure reaches the source. The body ends only at
    /// [`BodySender::finish`]; a sender dropped before it fails the upload, so a source that died
    /// never leaves a truncated object that looks complete.
    pub fn channel(capacity: usize) -> (BodySender, Body) {
        let (sender, receiver) = tokio::sync::mpsc::channel(capacity.max(1));
        let body = Body::stream(ChannelStream {
            receiver,
            ended: false,
        });
        (BodySender { sender }, body)
    }

    /// [`Body::channel`] for a source that knows its length: sent with `Content-Length`.
    pub fn sized_channel(length: u64, capacity: usize) -> (BodySender, Body) {
        let (sender, body) = Body::channel(capacity);
        (
            sender,
            Body {
                length: Some(length),
                ..body
            },
        )
    }

    /// The announced length, when known.
    pub fn length(&self) -> Option<u64> {
        self.length
    }
}

enum ChannelItem {
    Data(Bytes),
    End,
    Fail(BoxError),
}

/// The feeding end of a [`Body::channel`].
#[derive(Debug)]
pub struct BodySender {
    sender: tokio::sync::mpsc::Sender<ChannelItem>,
}

/// The upload ended (it failed, or the server stopped it) before the source did.
#[derive(Debug, thiserror::Error)]
#[error("the upload is no longer reading its source")]
pub struct UploadGone;

impl BodySender {
    /// Queues one chunk; waits while the queue is full.
    pub async fn send(&self, chunk: Bytes) -> Result<(), UploadGone> {
        self.sender
            .send(ChannelItem::Data(chunk))
            .await
            .map_err(|_| UploadGone)
    }

    /// Ends the body: the upload completes once the server took everything. The upload's own
    /// result says whether it succeeded (a sized body may already be complete and gone).
    pub async fn finish(self) {
        let _ = self.sender.send(ChannelItem::End).await;
    }

    /// Fails the upload with `why` (it becomes [`ApiError::Upload`]).
    pub async fn fail(self, why: impl Into<BoxError>) {
        // An upload that is gone has already failed: nothing is left to tell.
        let _ = self.sender.send(ChannelItem::Fail(why.into())).await;
    }
}

struct ChannelStream {
    receiver: tokio::sync::mpsc::Receiver<ChannelItem>,
    ended: bool,
}

impl Stream for ChannelStream {
    type Item = Result<Bytes, BoxError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        match this.receiver.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(ChannelItem::Data(chunk))) => Poll::Ready(Some(Ok(chunk))),
            Poll::Ready(Some(ChannelItem::End)) => {
                this.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(ChannelItem::Fail(why))) => {
                this.ended = true;
                Poll::Ready(Some(Err(why)))
            }
            Poll::Ready(None) => {
                this.ended = true;
                Poll::Ready(Some(Err(
                    "the source stopped before the end of its data".into()
                )))
            }
        }
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Body")
            .field("length", &self.length)
            .finish_non_exhaustive()
    }
}

/// What a streamed exchange has done lately, shared between its body and its watchdog.
struct Progress {
    started: tokio::time::Instant,
    /// Nanoseconds after `started` of the last byte taken (or the answer's head).
    last: AtomicU64,
    /// Set once the whole body was taken: from then on the wait is for the answer.
    sent: std::sync::atomic::AtomicBool,
    /// Set while the body's own source has nothing to give: that wait is the caller's, not the
    /// server's, and does not count as idle.
    source_pending: std::sync::atomic::AtomicBool,
    failure: Mutex<Option<String>>,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            started: tokio::time::Instant::now(),
            last: AtomicU64::new(0),
            sent: std::sync::atomic::AtomicBool::new(false),
            source_pending: std::sync::atomic::AtomicBool::new(false),
            failure: Mutex::new(None),
        }
    }

    fn touch(&self) {
        let nanos = self.started.elapsed().as_nanos().min(u64::MAX as u128) as u64;
        self.last.store(nanos, Ordering::Relaxed);
    }

    fn fail(&self, message: String) {
        if let Ok(mut failure) = self.failure.lock() {
            failure.get_or_insert(message);
        }
    }

    fn take_failure(&self) -> Option<String> {
        self.failure
            .lock()
            .ok()
            .and_then(|mut failure| failure.take())
    }

    /// Resolves once nothing moved for `idle`, with what stalled.
    async fn stalled(&self, idle: Duration) -> &'static str {
        loop {
            let last = self.started + Duration::from_nanos(self.last.load(Ordering::Relaxed));
            let deadline = last + idle;
            if self.source_pending.load(Ordering::Relaxed) {
                // The source is slow, not the server: look again after a full period.
                tokio::time::sleep(idle).await;
                continue;
            }
            if tokio::time::Instant::now() >= deadline {
                return if self.sent.load(Ordering::Relaxed) {
                    "answered"
                } else {
                    "sent"
                };
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// The one body type the pooled client sends: bytes in memory or a watched stream.
struct RequestBody {
    kind: BodyKind,
}

enum BodyKind {
    Full(Option<Bytes>),
    Stream {
        stream: ChunkStream,
        length: Option<u64>,
        taken: u64,
        progress: Arc<Progress>,
    },
}

impl RequestBody {
    fn full(bytes: Bytes) -> RequestBody {
        RequestBody {
            kind: BodyKind::Full(if bytes.is_empty() { None } else { Some(bytes) }),
        }
    }

    fn stream(body: Body, progress: Arc<Progress>) -> RequestBody {
        RequestBody {
            kind: BodyKind::Stream {
                stream: body.stream,
                length: body.length,
                taken: 0,
                progress,
            },
        }
    }
}

impl hyper::body::Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().kind {
            BodyKind::Full(bytes) => Poll::Ready(bytes.take().map(|bytes| Ok(Frame::data(bytes)))),
            BodyKind::Stream {
                stream,
                length,
                taken,
                progress,
            } => loop {
                let next = stream.as_mut().poll_next(cx);
                // Being asked for more means the last chunk went out.
                progress.touch();
                progress
                    .source_pending
                    .store(next.is_pending(), Ordering::Relaxed);
                match next {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Some(Ok(chunk))) => {
                        if chunk.is_empty() {
                            continue;
                        }
                        *taken += chunk.len() as u64;
                        if let Some(length) = *length {
                            if *taken > length {
                                let message =
                                    format!("the source gave more than its {length} bytes");
                                progress.fail(message.clone());
                                return Poll::Ready(Some(Err(message.into())));
                            }
                        }
                        return Poll::Ready(Some(Ok(Frame::data(chunk))));
                    }
                    Poll::Ready(Some(Err(err))) => {
                        let message = error_chain(err.as_ref());
                        progress.fail(message);
                        return Poll::Ready(Some(Err(err)));
                    }
                    Poll::Ready(None) => {
                        if let Some(length) = *length {
                            if *taken != length {
                                let message =
                                    format!("the source ended after {taken} of its {length} bytes");
                                progress.fail(message.clone());
                                return Poll::Ready(Some(Err(message.into())));
                            }
                        }
                        progress.touch();
                        progress.sent.store(true, Ordering::Relaxed);
                        return Poll::Ready(None);
                    }
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Full(bytes) => bytes.is_none(),
            BodyKind::Stream { .. } => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |bytes| bytes.len() as u64))
            }
            BodyKind::Stream {
                length: Some(length),
                ..
            } => SizeHint::with_exact(*length),
            BodyKind::Stream { .. } => SizeHint::default(),
        }
    }
}

// ---- streamed answers ----

/// A 2xx answer whose body is read as it arrives: [`Download::chunk`], or as a [`Stream`].
/// Every wait for a chunk is bounded by the client's idle timeout.
pub struct Download {
    method: Method,
    url: String,
    status: StatusCode,
    headers: hyper::HeaderMap,
    body: Incoming,
    idle: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
    received: u64,
    limit: Option<u64>,
    /// Whether a wait for the next chunk is under way: the idle deadline runs from the moment the
    /// reader asks, so a slow reader is not mistaken for a stalled server.
    waiting: bool,
    done: bool,
}

impl Download {
    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn headers(&self) -> &hyper::HeaderMap {
        &self.headers
    }

    /// The `Content-Length` the server announced, if any.
    pub fn content_length(&self) -> Option<u64> {
        self.headers
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|text| text.parse().ok())
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Fails the download with [`ApiError::TooLong`] once more than `bytes` arrived.
    pub fn limit(mut self, bytes: u64) -> Download {
        self.limit = Some(bytes);
        self
    }

    /// The next chunk; `None` at the end of the body.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, ApiError> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx))
            .await
            .transpose()
    }

    /// The body as an `AsyncRead`, for copying to a file or a pipe.
    pub fn into_reader(self) -> impl tokio::io::AsyncRead + Send + Unpin {
        use futures_util::StreamExt;
        tokio_util::io::StreamReader::new(self.map(|chunk| chunk.map_err(std::io::Error::other)))
    }

    /// The rest of the body in memory: for answers known to be small.
    pub async fn bytes(mut self) -> Result<Bytes, ApiError> {
        let mut all = bytes::BytesMut::new();
        while let Some(chunk) = self.chunk().await? {
            all.extend_from_slice(&chunk);
        }
        Ok(all.freeze())
    }
}

impl std::fmt::Debug for Download {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Download")
            .field("method", &self.method)
            .field("url", &self.url)
            .field("status", &self.status)
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

impl Stream for Download {
    type Item = Result<Bytes, ApiError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if !this.waiting {
            this.waiting = true;
            this.deadline
                .as_mut()
                .reset(tokio::time::Instant::now() + this.idle);
        }
        let next = this.poll_body(cx);
        if next.is_ready() {
            this.waiting = false;
        }
        next
    }
}

impl Download {
    fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, ApiError>>> {
        let this = self;
        loop {
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        // Trailers carry nothing bosun reads.
                        continue;
                    };
                    if data.is_empty() {
                        continue;
                    }
                    this.received += data.len() as u64;
                    if let Some(limit) = this.limit {
                        if this.received > limit {
                            this.done = true;
                            return Poll::Ready(Some(Err(ApiError::TooLong {
                                method: this.method.clone(),
                                url: this.url.clone(),
                                limit,
                            })));
                        }
                    }
                    return Poll::Ready(Some(Ok(data)));
                }
                Poll::Ready(Some(Err(err))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(ApiError::Transport {
                        method: this.method.clone(),
                        url: this.url.clone(),
                        message: format!("reading the answer: {}", error_chain(&err)),
                        refused: false,
                    })));
                }
                Poll::Ready(None) => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Pending => {
                    if this.deadline.as_mut().poll(cx).is_ready() {
                        this.done = true;
                        return Poll::Ready(Some(Err(ApiError::Idle {
                            method: this.method.clone(),
                            url: this.url.clone(),
                            during: "received",
                            idle: this.idle,
                        })));
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}
