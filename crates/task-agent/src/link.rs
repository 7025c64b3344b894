//! The socket to the launch-agent, owned by one task.
//!
//! Steps never touch the [`Connection`]: they queue [`Outgoing`] items on an [`Outbox`] (a bounded
//! channel, so when the launch-agent stops reading, the queue fills, the step's pipe fills and the
//! job blocks: backpressure, not buffering). The link task writes them in order and, at the same
//! time, reads what the launch-agent sends: a `Cancel` or the end of the connection becomes the
//! [`Control`] state that every running step watches; the answers to uploads and downloads are
//! routed by stream id to the step that opened the stream.
//!
//! Stream ids are allocated here, by the [`Outbox`], from 1 up, under a lock held until the
//! opening item is queued: so ids reach the launch-agent in increasing order whichever step
//! (foreground or background) opens a stream.
//!
//! Download data reaches its step through a small bounded channel. When the step reads slowly
//! and that channel is full, the link stops reading the socket (so the launch-agent, and the
//! server behind it, wait) but goes on writing: a step that logs while it downloads cannot
//! deadlock the link, and memory stays at a few chunks per download.
//!
//! Every byte of a step's log goes through the task's [`Masks`] here, in [`Outbox::data`] (and
//! so [`Outbox::text`]): step output, git's output, the agent's own lines. Each log stream keeps
//! its held tail (the start of what may be a secret) until its next chunk or its
//! `StepFinished`, which releases it first. Uploads are files and are not masked.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bosun_protocol::{
    BlobKind, Connection, DEFAULT_MAX_OPEN_STREAMS, Incoming, Message, ProtocolError, StreamTable,
    UploadOutcome,
};
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::mask::{Held, Masks};

/// How many items may wait for the socket. Each data item is at most one 64 KiB chunk, so this
/// bounds the agent's log memory at about 1 MiB whatever the job prints.
const OUTBOX_CAPACITY: usize = 16;

/// How many received chunks of one download may wait for its step (each at most a frame, 1 MiB).
const DOWNLOAD_CAPACITY: usize = 4;

/// One item for the launch-agent.
#[derive(Debug)]
pub enum Outgoing {
    Message(Message),
    Data {
        stream: u32,
        bytes: Bytes,
    },
    /// A message that opens an upload or a download: the link routes the stream's answers to
    /// `route` before it writes `message`.
    Open {
        stream: u32,
        message: Message,
        route: Route,
    },
}

/// Where the answers for a stream the task-agent opened go.
#[derive(Debug)]
pub enum Route {
    /// A download waiting for `Found` or `NotFound`.
    Asked(oneshot::Sender<Fetched>),
    /// A found download whose data goes to its step.
    Receiving(mpsc::Sender<Chunk>),
    /// A download its step stopped reading: data is dropped until the stream's `End`.
    Abandoned,
    /// An upload waiting for `Uploaded`.
    Uploading(oneshot::Sender<UploadOutcome>),
}

/// One piece of a download, as the link hands it to the step.
#[derive(Debug)]
pub enum Chunk {
    Data(Bytes),
    /// The stream's `End`; with an error, the launch-agent gave up on it.
    End(Option<String>),
}

/// The connection to the launch-agent is gone: the task cannot report anything any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lost;

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the connection to the launch-agent is lost")
    }
}

impl std::error::Error for Lost {}

/// What a running step should do, as a state that only moves forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Keep running.
    Run,
    /// The launch-agent canceled the task: SIGTERM, `grace`, SIGKILL.
    Cancel { reason: String, grace: Duration },
    /// The task is over (used for background steps): SIGTERM, `grace`, SIGKILL.
    Finish { grace: Duration },
    /// The launch-agent is gone: SIGKILL now.
    Lost,
}

/// The sending side of the link; cheap to clone.
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Outgoing>,
    /// The next stream id; locked until the item opening a stream is queued.
    next_stream: Arc<tokio::sync::Mutex<u32>>,
    /// The secrets masked in every log.
    masks: Arc<Masks>,
    /// The open log streams and their held tails.
    logs: Arc<std::sync::Mutex<Logs>>,
}

/// The open log streams. A tail is behind an async lock held while its masked bytes are
/// queued, so that two writers of one stream (a step and its process's output) cannot reorder
/// its bytes.
#[derive(Debug, Default)]
struct Logs {
    /// Log stream of each started, unfinished step.
    by_step: HashMap<u32, u32>,
    tails: HashMap<u32, Arc<tokio::sync::Mutex<Tail>>>,
}

/// What a log stream holds back.
#[derive(Debug, Default)]
struct Tail {
    held: Held,
    /// The stream's end released `held`: a late writer must not hold anything any more.
    ended: bool,
}

impl Outbox {
    /// Sends a message; a `StepFinished` first releases what its log stream holds back, and
    /// `TaskFinished` what every log does.
    pub async fn message(&self, message: Message) -> Result<(), Lost> {
        match &message {
            Message::StepFinished { step, .. } => self.end_log(*step).await?,
            Message::TaskFinished { .. } => {
                let steps: Vec<u32> = self.lock_logs().by_step.keys().copied().collect();
                for step in steps {
                    self.end_log(step).await?;
                }
            }
            _ => {}
        }
        self.tx
            .send(Outgoing::Message(message))
            .await
            .map_err(|_| Lost)
    }

    /// The task's masks: add the task's secrets before the first step, runtime ones any time.
    pub fn masks(&self) -> &Arc<Masks> {
        &self.masks
    }

    /// Sends bytes of log stream `stream`, masked.
    pub async fn data(&self, stream: u32, bytes: Bytes) -> Result<(), Lost> {
        // Nothing to mask (the set only grows, so nothing is held either): the chunk goes out
        // as it is.
        let Some(patterns) = self.masks.current() else {
            return self.send_data(stream, bytes).await;
        };
        let tail = self.lock_logs().tails.get(&stream).cloned();
        let mut tail = match &tail {
            Some(tail) => Some(tail.lock().await),
            None => None,
        };
        let masked = match tail.as_deref_mut() {
            Some(Tail { held, ended: false }) => patterns.mask_chunk(held, bytes),
            // Not an open log stream (a step's log is opened by `step_started`), or one whose
            // end came already: masked on its own, nothing held.
            _ => {
                let mut held = Held::new();
                let masked = patterns.mask_chunk(&mut held, bytes);
                if held.is_empty() {
                    masked
                } else {
                    let mut all = masked.to_vec();
                    all.extend_from_slice(&patterns.finish(&mut held));
                    Bytes::from(all)
                }
            }
        };
        if masked.is_empty() {
            return Ok(());
        }
        // Still under the tail's lock: this stream's bytes are queued in the order masked.
        self.send_data(stream, masked).await
    }

    /// Releases (masked) what step `step`'s log holds back and forgets the stream.
    async fn end_log(&self, step: u32) -> Result<(), Lost> {
        let tail = {
            let mut logs = self.lock_logs();
            let Some(stream) = logs.by_step.remove(&step) else {
                return Ok(());
            };
            logs.tails.remove(&stream).map(|tail| (stream, tail))
        };
        let Some((stream, tail)) = tail else {
            return Ok(());
        };
        let mut tail = tail.lock().await;
        tail.ended = true;
        if tail.held.is_empty() {
            return Ok(());
        }
        let rest = match self.masks.current() {
            Some(patterns) => patterns.finish(&mut tail.held),
            None => Bytes::from(std::mem::take(&mut tail.held)),
        };
        self.send_data(stream, rest).await
    }

    fn lock_logs(&self) -> std::sync::MutexGuard<'_, Logs> {
        self.logs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sends bytes of `stream` as they are (uploads).
    async fn send_data(&self, stream: u32, bytes: Bytes) -> Result<(), Lost> {
        self.tx
            .send(Outgoing::Data { stream, bytes })
            .await
            .map_err(|_| Lost)
    }

    /// Writes a line of the agent's own (not the job's) into a step's log.
    pub async fn text(&self, stream: u32, text: impl Into<String>) -> Result<(), Lost> {
        self.data(stream, Bytes::from(text.into())).await
    }

    /// Allocates the next stream id and queues the item `make` builds with it, in one go.
    async fn open_stream<T>(&self, make: impl FnOnce(u32) -> (Outgoing, T)) -> Result<T, Lost> {
        let mut next = self.next_stream.lock().await;
        let permit = self.tx.reserve().await.map_err(|_| Lost)?;
        let stream = *next;
        // Past u32::MAX the id stays put; the launch-agent refuses it as reused, a clear error.
        *next = next.saturating_add(1);
        let (item, value) = make(stream);
        permit.send(item);
        Ok(value)
    }

    /// Sends `StepStarted` for step `step`; returns the id of the step's log stream.
    pub async fn step_started(&self, step: u32, name: String) -> Result<u32, Lost> {
        let log = self
            .open_stream(|log| {
                let message = Message::StepStarted { step, name, log };
                (Outgoing::Message(message), log)
            })
            .await?;
        let mut logs = self.lock_logs();
        logs.by_step.insert(step, log);
        logs.tails.insert(log, Arc::default());
        Ok(log)
    }

    /// Opens an upload of `kind` named `name`: write its bytes to the returned [`Upload`], then
    /// [`Upload::finish`] it.
    pub async fn upload(&self, kind: BlobKind, name: String) -> Result<Upload, Lost> {
        let (tx, rx) = oneshot::channel();
        let stream = self
            .open_stream(|stream| {
                let message = Message::Upload { stream, kind, name };
                let route = Route::Uploading(tx);
                (
                    Outgoing::Open {
                        stream,
                        message,
                        route,
                    },
                    stream,
                )
            })
            .await?;
        Ok(Upload {
            stream,
            out: self.clone(),
            outcome: rx,
            answered: None,
            ended: false,
        })
    }

    /// Asks for an object of `kind` matching `keys`; waits for the launch-agent's answer.
    pub async fn download(&self, kind: BlobKind, keys: Vec<String>) -> Result<Fetched, Lost> {
        let (tx, rx) = oneshot::channel();
        self.open_stream(|stream| {
            let message = Message::Download { stream, kind, keys };
            let route = Route::Asked(tx);
            (
                Outgoing::Open {
                    stream,
                    message,
                    route,
                },
                (),
            )
        })
        .await?;
        rx.await.map_err(|_| Lost)
    }
}

/// The launch-agent's answer to a download.
#[derive(Debug)]
pub enum Fetched {
    Found(Download),
    NotFound,
}

/// A found download: read it with [`Download::next_chunk`] until `None`. Dropping it before the
/// end abandons the stream (the link tells the launch-agent to stop sending).
#[derive(Debug)]
pub struct Download {
    pub stream: u32,
    /// The key of the object that matched.
    pub key: String,
    /// Its size in bytes, when the launch-agent knows it.
    pub size: Option<u64>,
    rx: mpsc::Receiver<Chunk>,
}

/// A download that did not complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownloadError {
    /// The launch-agent ended the stream with an error: what was received is incomplete.
    Aborted {
        stream: u32,
        message: String,
    },
    Lost,
}

impl std::fmt::Display for DownloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DownloadError::Aborted { stream, message } => {
                write!(f, "download stream {stream} was aborted: {message}")
            }
            DownloadError::Lost => Lost.fmt(f),
        }
    }
}

impl std::error::Error for DownloadError {}

impl Download {
    /// The next piece of the object, or `None` after its last byte.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, DownloadError> {
        match self.rx.recv().await {
            Some(Chunk::Data(bytes)) => Ok(Some(bytes)),
            Some(Chunk::End(None)) => {
                self.rx.close();
                Ok(None)
            }
            Some(Chunk::End(Some(message))) => {
                self.rx.close();
                Err(DownloadError::Aborted {
                    stream: self.stream,
                    message,
                })
            }
            None => Err(DownloadError::Lost),
        }
    }
}

/// An open upload. Every upload ends with [`Upload::finish`] or [`Upload::abort`]; one dropped
/// without either is aborted.
#[derive(Debug)]
pub struct Upload {
    stream: u32,
    out: Outbox,
    outcome: oneshot::Receiver<UploadOutcome>,
    /// The launch-agent's answer, once it came before the end.
    answered: Option<UploadOutcome>,
    ended: bool,
}

/// Why [`Upload::write`] took no more bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadStop {
    /// The launch-agent answered already (it refused the upload); [`Upload::finish`] says how.
    Answered,
    Lost,
}

impl Upload {
    pub fn stream(&self) -> u32 {
        self.stream
    }

    /// Sends the next bytes of the object (any length: the link splits them into frames).
    pub async fn write(&mut self, bytes: Bytes) -> Result<(), UploadStop> {
        if self.answered.is_none() {
            if let Ok(outcome) = self.outcome.try_recv() {
                self.answered = Some(outcome);
            }
        }
        if self.answered.is_some() {
            return Err(UploadStop::Answered);
        }
        // Files are not masked (as on CircleCI): only logs are.
        self.out
            .send_data(self.stream, bytes)
            .await
            .map_err(|_| UploadStop::Lost)
    }

    /// Ends the upload and waits for the launch-agent's outcome.
    pub async fn finish(self) -> Result<UploadOutcome, Lost> {
        self.end(None).await
    }

    /// Ends the upload as incomplete (`error` says why); the launch-agent discards it.
    pub async fn abort(self, error: String) -> Result<UploadOutcome, Lost> {
        self.end(Some(error)).await
    }

    async fn end(mut self, error: Option<String>) -> Result<UploadOutcome, Lost> {
        self.ended = true;
        let stream = self.stream;
        self.out.message(Message::End { stream, error }).await?;
        match self.answered.take() {
            Some(outcome) => Ok(outcome),
            None => (&mut self.outcome).await.map_err(|_| Lost),
        }
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        // A step that returned early (an error reading its files) still ends its stream, so the
        // launch-agent does not keep it open; the outcome is nobody's concern any more.
        let out = self.out.clone();
        let stream = self.stream;
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let error = Some("the task-agent dropped the upload".to_owned());
                let _ = out.message(Message::End { stream, error }).await;
            });
        }
    }
}

/// Starts the link task. It ends with `Ok(())` once every [`Outbox`] clone is dropped and the
/// queue is written, or with the error that broke the connection (then [`Control::Lost`] is set
/// and the outboxes start failing).
pub fn spawn<T>(
    conn: Connection<T>,
) -> (
    Outbox,
    watch::Receiver<Control>,
    JoinHandle<Result<(), ProtocolError>>,
)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    spawn_until(conn, std::future::pending())
}

/// [`spawn`], and when `stop` completes (SIGTERM: the launch-agent died or the agent is being
/// stopped) the link ends as if the connection were lost: every step is killed.
pub fn spawn_until<T, S>(
    conn: Connection<T>,
    stop: S,
) -> (
    Outbox,
    watch::Receiver<Control>,
    JoinHandle<Result<(), ProtocolError>>,
)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(OUTBOX_CAPACITY);
    let (control_tx, control_rx) = watch::channel(Control::Run);
    let handle = tokio::spawn(async move {
        let result = tokio::select! {
            result = pump(conn, rx, &control_tx) => result,
            () = stop => {
                tracing::warn!("stopping the task: SIGTERM (the launch-agent is gone or stopping this agent)");
                Err(ProtocolError::Closed("the end of the task (stopped by SIGTERM)"))
            }
        };
        if result.is_err() {
            control_tx.send_replace(Control::Lost);
        }
        result
    });
    let outbox = Outbox {
        tx,
        next_stream: Arc::new(tokio::sync::Mutex::new(1)),
        masks: Arc::new(Masks::new()),
        logs: Arc::default(),
    };
    (outbox, control_rx, handle)
}

/// A chunk the link could not hand to its step yet (the step's channel was full).
struct Pending {
    stream: u32,
    tx: mpsc::Sender<Chunk>,
    chunk: Chunk,
}

async fn pump<T>(
    mut conn: Connection<T>,
    mut rx: mpsc::Receiver<Outgoing>,
    control: &watch::Sender<Control>,
) -> Result<(), ProtocolError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    // Set once `TaskFinished` is written: the launch-agent may then close the socket at once.
    let mut task_finished = false;
    let mut routes: StreamTable<Route> = StreamTable::new(DEFAULT_MAX_OPEN_STREAMS);
    let mut pending: Option<Pending> = None;
    loop {
        let deliver = async {
            match &pending {
                Some(pending) => pending.tx.clone().reserve_owned().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            item = rx.recv() => match item {
                Some(Outgoing::Message(message)) => {
                    conn.send(&message).await?;
                    task_finished |= matches!(message, Message::TaskFinished { .. });
                }
                Some(Outgoing::Data { stream, bytes }) => conn.send_data(stream, bytes).await?,
                Some(Outgoing::Open { stream, message, route }) => {
                    routes.open(stream, route)?;
                    conn.send(&message).await?;
                }
                None => return Ok(()),
            },
            permit = deliver, if pending.is_some() => {
                let Some(Pending { stream, chunk, .. }) = pending.take() else {
                    continue;
                };
                match permit {
                    Ok(permit) => {
                        permit.send(chunk);
                    }
                    Err(_) => abandon(&mut conn, &mut routes, stream).await?,
                }
            },
            incoming = conn.recv(), if pending.is_none() => match incoming? {
                Some(Incoming::Message(Message::Cancel { reason, grace_ms })) => {
                    tracing::info!(%reason, grace_ms, "task canceled by the launch-agent");
                    control.send_if_modified(|state| {
                        if *state == Control::Run {
                            *state = Control::Cancel {
                                reason,
                                grace: Duration::from_millis(grace_ms),
                            };
                            true
                        } else {
                            false
                        }
                    });
                }
                Some(Incoming::Message(message @ (Message::Found { .. }
                | Message::NotFound { .. }
                | Message::Uploaded { .. }
                | Message::End { .. }))) => {
                    pending = route(&mut conn, &mut routes, message).await?;
                }
                Some(Incoming::Message(other)) => {
                    tracing::warn!(message = other.kind(), "ignoring an unexpected message");
                }
                Some(Incoming::Data { stream, bytes }) => {
                    pending = deliver_chunk(&mut conn, &mut routes, stream, Chunk::Data(bytes)).await?;
                }
                None if task_finished => return Ok(()),
                None => return Err(ProtocolError::Closed("the end of the task")),
            },
        }
    }
}

/// Routes one answer of the launch-agent to the stream it names.
async fn route<T>(
    conn: &mut Connection<T>,
    routes: &mut StreamTable<Route>,
    message: Message,
) -> Result<Option<Pending>, ProtocolError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let kind = message.kind();
    let mismatch = |stream: u32, expected: &'static str| ProtocolError::UnexpectedMessage {
        expected,
        received: format!("`{kind}` for stream {stream}"),
    };
    match message {
        Message::Found { stream, key, size } => {
            let route = routes.expect(stream, "a `found` message")?;
            let reply = match std::mem::replace(route, Route::Abandoned) {
                Route::Asked(reply) => reply,
                other => {
                    *route = other;
                    return Err(mismatch(
                        stream,
                        "found only for a download waiting for its answer",
                    ));
                }
            };
            let (tx, rx) = mpsc::channel(DOWNLOAD_CAPACITY);
            *route = Route::Receiving(tx);
            let download = Download {
                stream,
                key,
                size,
                rx,
            };
            if reply.send(Fetched::Found(download)).is_err() {
                // The step gave up waiting (it was canceled).
                abandon(conn, routes, stream).await?;
            }
            Ok(None)
        }
        Message::NotFound { stream } => match routes.close(stream, "a `not_found` message")? {
            Route::Asked(reply) => {
                let _ = reply.send(Fetched::NotFound);
                Ok(None)
            }
            _ => Err(mismatch(
                stream,
                "not_found only for a download waiting for its answer",
            )),
        },
        Message::Uploaded { stream, outcome } => {
            match routes.close(stream, "an `uploaded` message")? {
                Route::Uploading(reply) => {
                    let _ = reply.send(outcome);
                    Ok(None)
                }
                _ => Err(mismatch(stream, "uploaded only for an upload")),
            }
        }
        Message::End { stream, error } => {
            match routes.expect(stream, "an `end` message")? {
                Route::Receiving(_) | Route::Abandoned => {}
                _ => return Err(mismatch(stream, "end only for a found download")),
            }
            let pending = deliver_chunk(conn, routes, stream, Chunk::End(error)).await?;
            let _ = routes.close(stream, "an `end` message");
            Ok(pending)
        }
        other => Err(ProtocolError::UnexpectedMessage {
            expected: "an answer for a stream",
            received: other.kind().to_owned(),
        }),
    }
}

/// Hands `chunk` to the step reading download `stream`, or returns it as pending when the step's
/// channel is full.
async fn deliver_chunk<T>(
    conn: &mut Connection<T>,
    routes: &mut StreamTable<Route>,
    stream: u32,
    chunk: Chunk,
) -> Result<Option<Pending>, ProtocolError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let what = match chunk {
        Chunk::Data(_) => "a data frame",
        Chunk::End(_) => "an `end` message",
    };
    let tx = match routes.expect(stream, what)? {
        Route::Receiving(tx) => tx.clone(),
        Route::Abandoned => return Ok(None),
        Route::Asked(_) | Route::Uploading(_) => {
            return Err(ProtocolError::UnexpectedMessage {
                expected: "data only for a found download",
                received: format!("{what} for stream {stream}"),
            });
        }
    };
    match tx.try_send(chunk) {
        Ok(()) => Ok(None),
        Err(mpsc::error::TrySendError::Full(chunk)) => Ok(Some(Pending { stream, tx, chunk })),
        Err(mpsc::error::TrySendError::Closed(_)) => {
            abandon(conn, routes, stream).await?;
            Ok(None)
        }
    }
}

/// The step stopped reading download `stream`: ask the launch-agent to stop, drop the rest.
async fn abandon<T>(
    conn: &mut Connection<T>,
    routes: &mut StreamTable<Route>,
    stream: u32,
) -> Result<(), ProtocolError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let Ok(route) = routes.expect(stream, "abandon") else {
        // Its `End` came already: nothing more will.
        return Ok(());
    };
    if matches!(route, Route::Abandoned) {
        return Ok(());
    }
    *route = Route::Abandoned;
    conn.send(&Message::Abandon {
        stream,
        reason: "the task-agent stopped reading the download".to_owned(),
    })
    .await
}
