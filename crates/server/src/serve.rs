//! The HTTP accept loop: bounded connections, header and idle timeouts, graceful shutdown.
//!
//! `axum::serve` keeps every connection for as long as the peer likes, so a few hundred idle or
//! slowloris sockets used to exhaust the file-descriptor limit and starve runners and admins
//! (issue 8, finding 5). This loop serves the same [`Router`] through hyper directly and adds:
//!
//! - **A header timeout**: a connection must deliver a complete request head within
//!   `header_timeout` of being accepted, and within `header_timeout` of its first byte after an
//!   idle period. hyper 1.12's own `header_read_timeout` starts at accept *and* again whenever the
//!   connection goes idle, so on its own it is one timer for both phases; bosun wants a short
//!   header timeout (slowloris) and a longer idle timeout for its own clients, whose pool keeps
//!   connections for 30 s (`bosun-api`): a server that closed them sooner would race the client's
//!   reuse. So the watchdog below keeps both timers itself and hyper's is off.
//! - **An idle timeout** between requests on a keep-alive connection that has authenticated;
//!   connections that never authenticated keep the header timeout between requests too. No
//!   timeout runs while an authenticated request is in flight (the claim and heartbeat
//!   long-polls wait there); an unauthenticated one must be answered within the idle timeout
//!   (a slowly sent body), on probation within the probation header timeout.
//! - **A connection cap** derived from `RLIMIT_NOFILE` (raised to its hard limit at start), with
//!   a reserve for authenticated clients: connections are anonymous until one of their requests
//!   carries a valid token (the auth extractors call [`mark_authenticated`]). Anonymous connections
//!   may take `cap - reserve` slots; beyond that a new connection is admitted on probation into
//!   the reserve, with a short header timeout, and its first request must authenticate or it is
//!   answered 503 and closed. When every slot is taken, the oldest idle unauthenticated
//!   connection (probation first) makes room; if there is none, the new connection is closed
//!   at once. Authenticated connections (runners' long-polls, the CLI) count against the whole
//!   cap only.
//! - **`EMFILE` handling**: accept never spins on a full descriptor table; a spare descriptor is
//!   given up to accept and close the pending connection, so the kernel backlog does not grow,
//!   and the condition is logged once per interval.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Descriptors kept free for everything that is not a client connection: the database and its
/// WAL files, blob files, git processes' pipes, the spare descriptor, logs.
const FD_MARGIN: u64 = 128;
/// Descriptors a connection may hold at once: its socket plus one file or pipe its request opens.
const FDS_PER_CONNECTION: u64 = 2;
/// The cap when `--max-connections` is not given and descriptors allow more. An idle connection
/// costs about 10 KiB, one with a partial request head about 22 KiB (measured), at most
/// [`MAX_BUF_SIZE`] more: 6144 unauthenticated slots hold about 130 MiB in a slowloris flood and
/// at most ~500 MiB when every one of them also fills its buffer; 8192 slots still cover the
/// 5,000 simulated runners of the performance budget. Larger fleets raise `--max-connections`.
const DEFAULT_MAX_CONNECTIONS: usize = 8192;
/// hyper's per-connection read and write buffer limit (its default is ~400 KiB): also the
/// largest request head. 64 KiB is far above any head bosun's clients send and keeps a
/// connection that streams a large head from costing more.
const MAX_BUF_SIZE: usize = 64 * 1024;
/// How long a connection admitted on probation has to deliver its first request head.
const PROBATION_HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// The listen backlog asked for; see [`bind`].
const LISTEN_BACKLOG: u32 = 1024;
/// How often a repeated condition (descriptor table full, cap reached) is logged at most.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Connection limits and timeouts of the HTTP listener.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// How long a connection has to deliver a whole request head (from accept, or from the first
    /// byte after an idle period). Default 10 s: a real client sends its head in one packet,
    /// and a slowloris holds a descriptor no longer than this.
    pub header_timeout: Duration,
    /// How long an authenticated keep-alive connection may sit idle between requests. Default
    /// 60 s: above `bosun-api`'s 30 s pool idle timeout, so the client always gives up an idle
    /// connection before the server does and never sends a request into a closing socket.
    pub idle_timeout: Duration,
    /// Upper bound on concurrent connections; `None` derives it from `RLIMIT_NOFILE`, at most
    /// 8192. A value above what the descriptor limit allows is lowered to it.
    pub max_connections: Option<usize>,
    /// How long in-flight requests may take to finish once shutdown starts.
    pub shutdown_grace: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> ConnectionLimits {
        ConnectionLimits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: None,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Marks the connection `parts` arrived on as authenticated when `valid` (the request carried a
/// token the server issued), so it counts against the whole cap instead of the anonymous share.
/// Requests that did not come through [`serve`] (in-process tests of the router) carry no
/// connection and are left alone.
pub(crate) fn mark_authenticated(parts: &Parts, valid: bool) {
    if !valid {
        return;
    }
    if let Some(handle) = parts.extensions.get::<ConnectionHandle>() {
        handle.0.authenticate();
    }
}

/// The connection a request arrived on, for handlers that authenticate a request themselves
/// (the continuation key in `POST /api/v2/pipeline/continue`'s body) instead of through the
/// `auth.rs` extractors.
pub(crate) struct RequestConnection(Option<ConnectionHandle>);

impl<S: Sync> axum::extract::FromRequestParts<S> for RequestConnection {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        Ok(RequestConnection(
            parts.extensions.get::<ConnectionHandle>().cloned(),
        ))
    }
}

impl RequestConnection {
    /// Like [`mark_authenticated`], once the handler has checked the request's credential.
    pub(crate) fn mark_authenticated(&self) {
        if let Some(handle) = &self.0 {
            handle.0.authenticate();
        }
    }
}

/// Binds the listening socket with a backlog of [`LISTEN_BACKLOG`] (the kernel caps it at
/// `net.core.somaxconn`). Tokio's `bind` uses 128, which a burst of clients (runners reconnecting
/// after a restart, or a flood) overflows: Linux then drops the handshake's last ACK and the
/// connection only reaches `accept` seconds later, after SYN-ACK retransmits.
pub(crate) fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and derives the connection cap from it:
/// `requested` if given and the descriptors allow it, else the smaller of what they allow and
/// [`DEFAULT_MAX_CONNECTIONS`].
fn connection_cap(requested: Option<usize>) -> usize {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let soft = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard {
                match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                    Ok(()) => hard,
                    Err(err) => {
                        tracing::warn!(
                            "cannot raise the open-file limit from {soft} to {hard}: {err}"
                        );
                        soft
                    }
                }
            } else {
                soft
            }
        }
        Err(err) => {
            tracing::warn!("cannot read the open-file limit: {err}; assuming 1024");
            1024
        }
    };
    let derived = usize::try_from(soft.saturating_sub(FD_MARGIN) / FDS_PER_CONNECTION)
        .unwrap_or(usize::MAX)
        .max(1);
    match requested {
        Some(requested) if requested > derived => {
            tracing::warn!(
                "--max-connections {requested} is more than the open-file limit {soft} allows; using {derived}"
            );
            derived
        }
        Some(requested) => requested.max(1),
        None => derived.min(DEFAULT_MAX_CONNECTIONS),
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting, lets in-flight
/// requests finish for up to `limits.shutdown_grace` and closes what is left.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let cap = connection_cap(limits.max_connections);
    let limiter = Arc::new(Limiter::new(cap));
    tracing::info!(
        "accepting up to {cap} connections ({} for connections that have not authenticated); header timeout {:?}, idle timeout {:?}",
        limiter.anonymous_cap,
        limits.header_timeout,
        limits.idle_timeout
    );
    let limits = Arc::new(limits);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut spare = open_spare();
    let mut fd_log = RateLimitedLog::default();
    let mut cap_log = RateLimitedLog::default();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(err) = done {
                    tracing::error!("a connection task failed: {err}");
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let Some(conn) = limiter.admit() else {
                        // Every slot is held by an authenticated or busy connection: closing at
                        // once keeps the backlog short and tells the client to retry.
                        cap_log.note(|suppressed| tracing::warn!(
                            "connection limit {cap} reached: closing new connections ({suppressed} more since the last message)"
                        ));
                        drop(stream);
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    tasks.spawn(serve_connection(
                        stream,
                        tls.clone(),
                        conn,
                        app.clone(),
                        limits.clone(),
                        stop_rx.clone(),
                    ));
                }
                Err(err) if is_fd_exhaustion(&err) => {
                    fd_log.note(|suppressed| tracing::warn!(
                        "accept: {err} ({suppressed} more since the last message); closing pending connections until descriptors are free"
                    ));
                    shed_one(&listener, &mut spare).await;
                }
                // ECONNABORTED and friends concern one connection, not the listener.
                Err(err) => tracing::debug!("accept: {err}"),
            },
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(limits.shutdown_grace, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            "{} connections still busy {:?} after shutdown began; closing them",
            tasks.len(),
            limits.shutdown_grace
        );
        tasks.shutdown().await;
    }
    Ok(())
}

fn is_fd_exhaustion(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(nix::libc::EMFILE | nix::libc::ENFILE | nix::libc::ENOBUFS | nix::libc::ENOMEM)
    )
}

/// A descriptor held in reserve so a pending connection can still be accepted (and closed)
/// when the descriptor table is full.
fn open_spare() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

/// With the descriptor table full: gives up the spare descriptor, accepts one pending
/// connection and closes it, then takes the spare back. Without a spare (another thread took
/// the freed slot), waits briefly instead of spinning on `accept`.
async fn shed_one(listener: &TcpListener, spare: &mut Option<std::fs::File>) {
    if spare.take().is_some() {
        if let Ok(Ok((stream, _))) =
            tokio::time::timeout(Duration::from_millis(10), listener.accept()).await
        {
            drop(stream);
        }
        *spare = open_spare();
    }
    if spare.is_none() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        *spare = open_spare();
    }
}

/// Logs a repeated condition at most once per [`LOG_INTERVAL`], counting what it left out.
#[derive(Default)]
struct RateLimitedLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimitedLog {
    fn note(&mut self, log: impl FnOnce(u64)) {
        let now = Instant::now();
        match self.last {
            Some(last) if now.duration_since(last) < LOG_INTERVAL => self.suppressed += 1,
            _ => {
                log(self.suppressed);
                self.last = Some(now);
                self.suppressed = 0;
            }
        }
    }
}

/// How a connection counts against the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Class {
    /// Not yet authenticated, in the anonymous part of the cap.
    Anonymous = 0,
    /// Not yet authenticated, admitted into the reserve: its first request must authenticate.
    Probation = 1,
    /// A request on it carried a valid token.
    Authenticated = 2,
}

impl Class {
    fn from_u8(value: u8) -> Class {
        match value {
            0 => Class::Anonymous,
            1 => Class::Probation,
            _ => Class::Authenticated,
        }
    }
}

/// Counts connections by class and picks one to close when every slot is taken.
struct Limiter {
    cap: usize,
    anonymous_cap: usize,
    /// How many evicted connections may still hold their descriptor at once (see `admit`).
    max_closing: usize,
    slots: Mutex<Slots>,
}

struct Slots {
    anonymous: usize,
    total: usize,
    /// Evicted connections whose tasks have not closed their socket yet.
    closing: usize,
    next_id: u64,
    /// Open connections by id, so the oldest comes first.
    open: BTreeMap<u64, Arc<Conn>>,
}

impl Limiter {
    fn new(cap: usize) -> Limiter {
        // A quarter of the cap, at least one slot, is kept for authenticated clients.
        let reserve = (cap / 4).max(1).min(cap);
        Limiter {
            cap,
            anonymous_cap: cap - reserve,
            max_closing: (cap / 4).max(1),
            slots: Mutex::new(Slots {
                anonymous: 0,
                total: 0,
                closing: 0,
                next_id: 0,
                open: BTreeMap::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        // A panic while holding this lock leaves consistent counts behind (every update is a
        // few integer operations), so a poisoned lock is still usable.
        self.slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A slot for a new connection, or `None` if it must be closed at once.
    fn admit(self: &Arc<Limiter>) -> Option<Arc<Conn>> {
        let mut slots = self.lock();
        if slots.total >= self.cap {
            // An evicted connection keeps its descriptor until its task sees the eviction, a
            // moment later: in a burst of connects, evicting without bound would run the server
            // out of descriptors before the victims close. So at most `max_closing` may be
            // closing at once (the descriptor budget leaves room for them); past that a
            // newcomer is closed at once.
            if slots.closing >= self.max_closing {
                return None;
            }
            let victim = slots.victim()?;
            let conn = slots.open.remove(&victim).expect("victim is open");
            slots.forget(conn.class());
            slots.closing += 1;
            conn.evict();
        }
        let class = if slots.anonymous < self.anonymous_cap {
            slots.anonymous += 1;
            Class::Anonymous
        } else {
            Class::Probation
        };
        slots.total += 1;
        let id = slots.next_id;
        slots.next_id += 1;
        let conn = Arc::new(Conn::new(id, class, self.clone()));
        slots.open.insert(id, conn.clone());
        Some(conn)
    }

    fn release(&self, conn: &Conn) {
        let mut slots = self.lock();
        if slots.open.remove(&conn.id).is_some() {
            slots.forget(conn.class());
        } else if conn.evicted.load(Ordering::Acquire) {
            // Its slot went to a newcomer at eviction; its descriptor closes now.
            slots.closing = slots.closing.saturating_sub(1);
        }
    }

    fn authenticate(&self, conn: &Conn) {
        let mut slots = self.lock();
        if !slots.open.contains_key(&conn.id) {
            return;
        }
        if conn.class() == Class::Anonymous {
            slots.anonymous -= 1;
        }
        conn.class
            .store(Class::Authenticated as u8, Ordering::Release);
    }
}

impl Slots {
    /// The oldest connection that has not authenticated and has no request in flight, preferring
    /// one on probation.
    fn victim(&self) -> Option<u64> {
        let mut anonymous = None;
        for (id, conn) in &self.open {
            if conn.in_flight.load(Ordering::Acquire) > 0 {
                continue;
            }
            match conn.class() {
                Class::Probation => return Some(*id),
                Class::Anonymous if anonymous.is_none() => anonymous = Some(*id),
                _ => {}
            }
        }
        anonymous
    }

    fn forget(&mut self, class: Class) {
        if class == Class::Anonymous {
            self.anonymous -= 1;
        }
        self.total -= 1;
    }
}

/// One connection's state, shared by its watchdog, its IO and its requests.
struct Conn {
    id: u64,
    class: AtomicU8,
    in_flight: AtomicUsize,
    evicted: AtomicBool,
    activity: Mutex<Activity>,
    /// Woken when anything the watchdog's deadline depends on changes.
    changed: Notify,
    limiter: Arc<Limiter>,
}

struct Activity {
    /// When the connection was accepted or its last response was done.
    idle_since: Instant,
    /// When the first byte of the next request head arrived, if it has.
    head_started: Option<Instant>,
    /// Requests started so far.
    requests: u64,
    /// When the latest request's head was complete.
    request_started: Instant,
}

impl Conn {
    fn new(id: u64, class: Class, limiter: Arc<Limiter>) -> Conn {
        Conn {
            id,
            class: AtomicU8::new(class as u8),
            in_flight: AtomicUsize::new(0),
            evicted: AtomicBool::new(false),
            activity: Mutex::new(Activity {
                idle_since: Instant::now(),
                head_started: None,
                requests: 0,
                request_started: Instant::now(),
            }),
            changed: Notify::new(),
            limiter,
        }
    }

    fn class(&self) -> Class {
        Class::from_u8(self.class.load(Ordering::Acquire))
    }

    fn activity(&self) -> std::sync::MutexGuard<'_, Activity> {
        // Plain timestamps: still consistent after a panic elsewhere.
        self.activity
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn authenticate(&self) {
        if self.class() != Class::Authenticated {
            self.limiter.authenticate(self);
            self.changed.notify_one();
        }
    }

    fn evict(&self) {
        self.evicted.store(true, Ordering::Release);
        self.changed.notify_one();
    }

    fn bytes_read(&self) {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return;
        }
        let mut activity = self.activity();
        if activity.head_started.is_none() {
            activity.head_started = Some(Instant::now());
            drop(activity);
            self.changed.notify_one();
        }
    }

    fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let mut activity = self.activity();
        activity.head_started = None;
        activity.requests += 1;
        activity.request_started = Instant::now();
        drop(activity);
        self.changed.notify_one();
    }

    fn request_finished(&self) {
        let mut activity = self.activity();
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            activity.idle_since = Instant::now();
            activity.head_started = None;
        }
        drop(activity);
        self.changed.notify_one();
    }

    /// When the watchdog closes the connection unless something happens first; `None` while an
    /// authenticated request is in flight.
    fn deadline(&self, limits: &ConnectionLimits) -> Option<Instant> {
        if self.evicted.load(Ordering::Acquire) {
            return Some(Instant::now());
        }
        let class = self.class();
        let header_timeout = match class {
            Class::Probation => limits.header_timeout.min(PROBATION_HEADER_TIMEOUT),
            _ => limits.header_timeout,
        };
        let activity = self.activity();
        if self.in_flight.load(Ordering::Acquire) > 0 {
            // An authenticated request may take as long as it needs (long-polls, uploads). One
            // that has not authenticated (yet) must be done within the idle timeout, on
            // probation within the short header timeout, so a body sent a byte at a time to an
            // endpoint that reads it before any token check cannot hold a slot for ever.
            return match class {
                Class::Authenticated => None,
                Class::Probation => Some(activity.request_started + header_timeout),
                Class::Anonymous => Some(activity.request_started + limits.idle_timeout),
            };
        }
        let wait = if activity.requests > 0 && class == Class::Authenticated {
            limits.idle_timeout
        } else {
            header_timeout
        };
        let idle_deadline = activity.idle_since + wait;
        Some(match activity.head_started {
            Some(started) => idle_deadline.min(started + header_timeout),
            None => idle_deadline,
        })
    }
}

/// Gives a connection's slot back however its task ends (finished, failed or aborted).
struct Slot(Arc<Conn>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.limiter.release(&self.0);
    }
}

/// The request extension through which auth extractors reach their connection.
#[derive(Clone)]
struct ConnectionHandle(Arc<Conn>);

/// One connection: the TLS handshake first when the server speaks HTTPS (bounded by the
/// header timeout: a client that never finishes it holds its slot no longer than a slow
/// request head would), then HTTP/1.
async fn serve_connection(
    stream: TcpStream,
    tls: Option<tokio_rustls::TlsAcceptor>,
    conn: Arc<Conn>,
    app: Router,
    limits: Arc<ConnectionLimits>,
    stop: watch::Receiver<bool>,
) {
    let slot = Slot(conn.clone());
    let tracked = TrackedIo {
        inner: stream,
        conn: conn.clone(),
    };
    match tls {
        None => serve_http(TokioIo::new(tracked), conn, app, limits, stop).await,
        Some(acceptor) => {
            match tokio::time::timeout(limits.header_timeout, acceptor.accept(tracked)).await {
                Ok(Ok(stream)) => serve_http(TokioIo::new(stream), conn, app, limits, stop).await,
                Ok(Err(err)) => tracing::debug!("connection {}: TLS handshake: {err}", conn.id),
                Err(_) => tracing::debug!("connection {}: TLS handshake timed out", conn.id),
            }
        }
    }
    drop(slot);
}

async fn serve_http<I>(
    io: TokioIo<I>,
    conn: Arc<Conn>,
    app: Router,
    limits: Arc<ConnectionLimits>,
    mut stop: watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = ConnService {
        app: TowerToHyperService::new(app),
        conn: conn.clone(),
    };
    // hyper's own header timer is off: the watchdog below keeps header and idle time (see the
    // module comment).
    let mut connection = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .max_buf_size(MAX_BUF_SIZE)
        .header_read_timeout(None)
        .serve_connection(io, service);
    let mut draining = *stop.borrow();
    if draining {
        Pin::new(&mut connection).graceful_shutdown();
    }
    // Whether hyper finished with the connection itself (rather than a timeout closing it).
    let mut finished = false;
    loop {
        let deadline = conn.deadline(&limits);
        tokio::select! {
            // Without hyper's own shutdown, so the socket can be closed gently below.
            result = std::future::poll_fn(|cx| connection.poll_without_shutdown(cx)) => {
                match result {
                    Ok(()) => finished = true,
                    Err(err) => tracing::debug!("connection {}: {err}", conn.id),
                }
                break;
            }
            _ = conn.changed.notified() => {}
            _ = sleep_until(deadline) => {
                // The deadline may have moved while we slept (a request started); close only
                // if it still stands. Nothing is in flight, so closing loses no answer.
                if conn.deadline(&limits).is_some_and(|d| d <= Instant::now()) {
                    tracing::debug!("connection {}: closed after header or idle timeout", conn.id);
                    break;
                }
            }
            changed = stop.changed(), if !draining => {
                // Either shutdown began or the sender is gone; both mean drain.
                let _ = changed;
                draining = true;
                Pin::new(&mut connection).graceful_shutdown();
            }
        }
    }
    if finished {
        linger(connection.into_parts().io.into_inner(), conn.id).await;
    }
}

/// Most bytes, and longest time, a closing connection is read and discarded for.
const LINGER_BYTES: usize = 4 << 20;
const LINGER_TIME: Duration = Duration::from_secs(2);

/// Closes a connection gently ("lingering close"): the write side first, then what the client
/// still sends is read and thrown away for a bounded while. A handler that answers before
/// reading the body (a cache key that exists, an archive over the limit) leaves body bytes
/// unread; closing with them in the receive buffer makes the kernel send a reset, which can
/// destroy the answer before the client reads it, so the client would see a broken pipe
/// instead of the 409 or 413.
async fn linger<I>(mut io: I, id: u64)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    if io.shutdown().await.is_err() {
        return;
    }
    let drained = tokio::time::timeout(LINGER_TIME, async {
        let mut buf = vec![0u8; 16 << 10];
        let mut total = 0;
        while total < LINGER_BYTES {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
        total
    })
    .await;
    if let Ok(n) = drained {
        if n > 0 {
            tracing::debug!("connection {id}: discarded {n} unread bytes before closing");
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The connection's socket, noting when the bytes of a new request head start to arrive.
struct TrackedIo {
    inner: TcpStream,
    conn: Arc<Conn>,
}

impl AsyncRead for TrackedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll {
            if buf.filled().len() > before {
                self.conn.bytes_read();
            }
        }
        poll
    }
}

impl AsyncWrite for TrackedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Counts a request as in flight from its head until its response body is done.
struct InFlight(Arc<Conn>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// The router, seen from one connection: tags requests with the connection and turns away
/// unauthenticated requests on probation connections.
struct ConnService {
    app: TowerToHyperService<Router>,
    conn: Arc<Conn>,
}

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        self.conn.request_started();
        let guard = InFlight(self.conn.clone());
        request
            .extensions_mut()
            .insert(ConnectionHandle(self.conn.clone()));
        let answer = self.app.call(request);
        let conn = self.conn.clone();
        Box::pin(async move {
            let response = match answer.await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            let response = if conn.class() == Class::Probation {
                busy()
            } else {
                response
            };
            // The guard lives as long as the body, so a long download counts as in flight.
            Ok(response.map(|body| {
                Body::new(body.map_frame(move |frame| {
                    let _ = &guard;
                    frame
                }))
            }))
        })
    }
}

/// The answer to an unauthenticated request on a probation connection; the connection closes.
fn busy() -> Response<Body> {
    let body = serde_json::json!({
        "message": "server busy: too many open connections; only authenticated requests are served now, try again later"
    });
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_cap_evicts_idle_unauthenticated_connections_probation_first() {
        let limiter = Arc::new(Limiter::new(4));
        assert_eq!(limiter.anonymous_cap, 3);
        let anon: Vec<_> = (0..3).map(|_| limiter.admit().unwrap()).collect();
        assert!(anon.iter().all(|c| c.class() == Class::Anonymous));
        let probation = limiter.admit().unwrap();
        assert_eq!(probation.class(), Class::Probation);
        // Full: the probation connection makes room, though it is the youngest.
        let next = limiter.admit().unwrap();
        assert!(probation.evicted.load(Ordering::Acquire));
        assert_eq!(next.class(), Class::Probation);
        // Its task sees the eviction and ends, closing its socket.
        limiter.release(&probation);
        // Once it authenticates it is safe, and the oldest idle anonymous one goes next.
        next.authenticate();
        assert_eq!(next.class(), Class::Authenticated);
        let another = limiter.admit().unwrap();
        assert!(anon[0].evicted.load(Ordering::Acquire));
        assert_eq!(another.class(), Class::Anonymous);
        limiter.release(&anon[0]);
        // Busy connections are never evicted: with everything busy or authenticated, the
        // newcomer is refused.
        for conn in [&anon[1], &anon[2], &another] {
            conn.request_started();
        }
        assert!(limiter.admit().is_none());
        // Releasing gives slots back exactly once.
        limiter.release(&anon[0]);
        limiter.release(&next);
        let slots = limiter.lock();
        assert_eq!((slots.total, slots.anonymous, slots.closing), (3, 3, 0));
    }

    #[test]
    fn evictions_wait_for_closing_connections_so_a_burst_cannot_exhaust_descriptors() {
        let limiter = Arc::new(Limiter::new(8));
        assert_eq!(limiter.max_closing, 2);
        let first: Vec<_> = (0..8).map(|_| limiter.admit().unwrap()).collect();
        // Two evictions may be pending at once; the third newcomer is closed at once.
        let a = limiter.admit().unwrap();
        let b = limiter.admit().unwrap();
        assert!(limiter.admit().is_none());
        // Once an evicted connection's task ends, its descriptor is free: one more may come in.
        let evicted: Vec<_> = first
            .iter()
            .filter(|c| c.evicted.load(Ordering::Acquire))
            .collect();
        assert_eq!(evicted.len(), 2);
        limiter.release(evicted[0]);
        assert!(limiter.admit().is_some());
        drop((a, b));
    }

    /// How far in the future the connection's deadline is, in whole seconds (rounded up).
    fn due(conn: &Conn, limits: &ConnectionLimits) -> Option<u64> {
        conn.deadline(limits).map(|deadline| {
            let left = deadline.saturating_duration_since(Instant::now());
            left.as_secs() + u64::from(left.subsec_nanos() > 0)
        })
    }

    #[test]
    fn deadlines_follow_the_connection_state() {
        let limits = ConnectionLimits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            ..ConnectionLimits::default()
        };
        let limiter = Arc::new(Limiter::new(8));
        let conn = limiter.admit().unwrap();
        // A fresh connection has the header timeout to send its first head.
        assert_eq!(due(&conn, &limits), Some(10));
        // An unauthenticated request must be done within the idle timeout.
        conn.request_started();
        assert_eq!(due(&conn, &limits), Some(60));
        // Once it authenticates, nothing times out while it is in flight (a long-poll).
        conn.authenticate();
        assert_eq!(due(&conn, &limits), None);
        // Idle after an authenticated request: the idle timeout; a first byte starts the
        // header timeout.
        conn.request_finished();
        assert_eq!(due(&conn, &limits), Some(60));
        conn.bytes_read();
        assert_eq!(due(&conn, &limits), Some(10));
        // On probation everything is short, and an evicted connection is due now.
        let probation = Arc::new(Conn::new(99, Class::Probation, limiter.clone()));
        assert_eq!(due(&probation, &limits), Some(2));
        probation.request_started();
        assert_eq!(due(&probation, &limits), Some(2));
        probation.evict();
        assert_eq!(due(&probation, &limits), Some(0));
    }
}
