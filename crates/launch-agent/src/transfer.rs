//! The relay's data streams other than step logs: uploads (artifacts, caches, workspace layers)
//! and downloads (caches, workspace manifests and layers), and the one writer that sends to the
//! task-agent.
//!
//! Every transfer runs in a task of its own, so the relay's read loop never waits on the server
//! or on the task-agent for one: an upload's data frames go into its request body through a small
//! channel (the loop waits only while that channel is full: backpressure), and a download's
//! answer goes to the task-agent through [`ToAgent`]. The loop must never block on a write to the
//! socket: the task-agent's link stops reading while a step's download channel is full, and a
//! relay blocked writing would stop reading the logs that step writes, a deadlock. So the socket's
//! write half belongs to [`spawn_writer`]'s task, and the loop only queues.
//!
//! Nothing here opens, lists or unpacks what it carries: archives are bytes to the launch-agent,
//! which runs as root (only the task-agent, as the job user, unpacks).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use bosun_api::{Auth, Body, BodySender, Client, StatusCode};
use bosun_protocol::{
    BlobKind, ConnectionWriter, DEFAULT_MAX_OPEN_STREAMS, Message, ProtocolError, StreamTable,
    UploadOutcome,
};
use bytes::Bytes;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::upload::with_retry;

/// Data frames of one upload that wait between the relay and its HTTP request: past them the
/// relay waits for the server (backpressure), so a slow server slows the job, not memory.
pub const UPLOAD_QUEUE: usize = 16;
/// Download frames queued for the socket, all downloads together: past them a download waits
/// for the task-agent to read, so a slow unpack slows the download, not memory.
const DOWNLOAD_QUEUE: usize = 8;

/// What goes to the task-agent in order with a download's data.
#[derive(Debug)]
enum Ordered {
    Message(Message),
    Data { stream: u32, bytes: Bytes },
}

/// The relay's way to the task-agent. Control messages (answers, cancels) are few (one per
/// stream at most, and the streams are bounded) and jump ahead of download data, which waits in a
/// bounded queue; a download's `Found`, data and `End` travel together in that queue, in order.
#[derive(Debug, Clone)]
pub struct ToAgent {
    control: mpsc::UnboundedSender<Message>,
    ordered: mpsc::Sender<Ordered>,
}

/// The writer is gone: the socket failed, and the relay is ending.
#[derive(Debug)]
struct WriterGone;

impl ToAgent {
    /// Queues a control message; it never waits. If the writer is gone the relay is ending
    /// already (it watches the writer), so the message has nobody to go to.
    pub fn message(&self, message: Message) {
        let _ = self.control.send(message);
    }

    async fn ordered(&self, item: Ordered) -> Result<(), WriterGone> {
        self.ordered.send(item).await.map_err(|_| WriterGone)
    }
}

/// Starts the task that owns the socket's write half. It ends with the first write error, or
/// with `Ok` once every [`ToAgent`] is dropped and what they queued is written.
pub fn spawn_writer(
    mut writer: ConnectionWriter<UnixStream>,
) -> (ToAgent, JoinHandle<Result<(), ProtocolError>>) {
    let (control, mut control_rx) = mpsc::unbounded_channel();
    let (ordered, mut ordered_rx) = mpsc::channel(DOWNLOAD_QUEUE);
    let handle = tokio::spawn(async move {
        loop {
            tokio::select! {
                biased;
                Some(message) = control_rx.recv() => writer.send(&message).await?,
                Some(item) = ordered_rx.recv() => match item {
                    Ordered::Message(message) => writer.send(&message).await?,
                    Ordered::Data { stream, bytes } => writer.send_data(stream, bytes).await?,
                },
                else => return Ok(()),
            }
        }
    });
    (ToAgent { control, ordered }, handle)
}

/// What the transfers need: the server, the task's token, and the ways back to the relay.
#[derive(Clone)]
pub struct Context {
    pub client: Client,
    pub auth: Auth,
    pub to_agent: ToAgent,
    /// Answers of uploads, for the relay to mark their streams answered and tell the task-agent.
    pub answers: mpsc::Sender<(u32, UploadOutcome)>,
    /// Downloads that ended (their `End` or `NotFound` is queued), for the relay to close them.
    pub downloaded: mpsc::UnboundedSender<u32>,
}

/// What one of the task-agent's open data streams is, to the relay.
#[derive(Debug)]
enum Route {
    /// Step `step`'s log: its bytes go to the server's log of that step.
    Log { step: u32 },
    /// An upload this launch-agent refused or that was answered already: its data is dropped
    /// until its `End`.
    Refused,
    /// An upload streaming to the server from a task of its own.
    Upload(Relayed),
    /// A download running in a task of its own; `abandon` stops it.
    Download { abandon: watch::Sender<bool> },
}

/// Where a data frame goes.
pub enum DataRoute<'a> {
    Log(u32),
    Upload(&'a Relayed),
    Drop,
}

/// The relay's end of an upload running in its own task: data frames go into its request body.
#[derive(Debug)]
pub struct Relayed {
    body: BodySender,
    /// Set once the upload's task ended (stored, refused, failed), so that a frame waiting for
    /// room in a body nobody reads any more does not wait forever.
    done: watch::Receiver<bool>,
}

impl Relayed {
    /// Queues `bytes` for the server; waits only while the body's queue is full and the upload
    /// still runs (backpressure). Bytes for an upload that already ended are dropped: its
    /// answer is on the way to the task-agent.
    pub async fn send(&self, bytes: Bytes) {
        let mut done = self.done.clone();
        tokio::select! {
            _ = self.body.send(bytes) => {}
            _ = done.wait_for(|done| *done) => {}
        }
    }

    /// Ends the body, completely (`error: None`) or as failed.
    async fn end(self, error: Option<String>) {
        let mut done = self.done.clone();
        let body = self.body;
        tokio::select! {
            () = async move {
                match error {
                    None => body.finish().await,
                    Some(error) => body.fail(error).await,
                }
            } => {}
            _ = done.wait_for(|done| *done) => {}
        }
    }
}

/// The relay's view of the task-agent's streams and steps: every frame is checked against it, so
/// a task-agent (the job user's process) that breaks the protocol ends its task with a message
/// naming what it did, instead of writing into another step's log or growing memory.
pub struct Routes {
    streams: StreamTable<Route>,
    /// Name and log stream of each step started and not yet finished.
    steps: HashMap<u32, (String, u32)>,
    /// How many steps the task has: a step index at or past it is refused.
    step_count: usize,
    /// The running downloads; dropping the routes (the relay ended) aborts them.
    downloads: JoinSet<()>,
}

impl Routes {
    pub fn new(step_count: usize) -> Routes {
        Routes {
            streams: StreamTable::new(DEFAULT_MAX_OPEN_STREAMS),
            steps: HashMap::new(),
            step_count,
            downloads: JoinSet::new(),
        }
    }

    pub fn step_started(&mut self, step: u32, name: &str, log: u32) -> Result<(), ProtocolError> {
        if step as usize >= self.step_count || self.steps.contains_key(&step) {
            return Err(ProtocolError::UnexpectedMessage {
                expected: "a `step_started` for a step of the task that has not started",
                received: format!("`step_started` for step {step} of {}", self.step_count),
            });
        }
        self.streams.open(log, Route::Log { step })?;
        self.steps.insert(step, (name.to_owned(), log));
        Ok(())
    }

    /// Closes the step's log stream; returns the step's name.
    pub fn step_finished(&mut self, step: u32) -> Result<String, ProtocolError> {
        let Some((name, log)) = self.steps.remove(&step) else {
            return Err(ProtocolError::UnexpectedMessage {
                expected: "a `step_finished` for a running step",
                received: format!("`step_finished` for step {step}"),
            });
        };
        self.streams.close(log, "a `step_finished` message")?;
        Ok(name)
    }

    /// Where a data frame of `stream` goes.
    pub fn data(&mut self, stream: u32) -> Result<DataRoute<'_>, ProtocolError> {
        match self.streams.expect(stream, "a data frame")? {
            Route::Log { step } => Ok(DataRoute::Log(*step)),
            Route::Upload(upload) => Ok(DataRoute::Upload(upload)),
            Route::Refused => Ok(DataRoute::Drop),
            Route::Download { .. } => Err(ProtocolError::UnexpectedMessage {
                expected: "data only on logs and uploads (a download's data comes from the launch-agent)",
                received: format!("a data frame for download stream {stream}"),
            }),
        }
    }

    /// Upload `stream` was answered: if it is still open, the rest of its data is dropped.
    pub fn answered(&mut self, stream: u32) {
        if let Ok(route) = self.streams.expect(stream, "an answer") {
            if matches!(route, Route::Upload(_)) {
                *route = Route::Refused;
            }
        }
    }

    /// Download `stream` sent its last message: the stream is closed.
    pub fn downloaded(&mut self, stream: u32) {
        if matches!(
            self.streams.expect(stream, "a download's end"),
            Ok(Route::Download { .. })
        ) {
            let _ = self.streams.close(stream, "a download's end");
        }
    }

    /// Handles an upload or download message; returns the answer for the task-agent, if one
    /// is due at once.
    ///
    /// Every upload streams to the server from a task of its own, answered through
    /// `ctx.answers`; every download runs in a task of its own that answers through
    /// `ctx.to_agent`.
    pub async fn transfer(
        &mut self,
        message: Message,
        ctx: &Context,
    ) -> Result<Option<Message>, ProtocolError> {
        match message {
            Message::Upload { stream, kind, name } => {
                // The stream is opened first, so a bad id is refused before any request starts.
                self.streams.open(stream, Route::Refused)?;
                let upload = start_upload(ctx, stream, kind, name);
                *self.streams.expect(stream, "an `upload` message")? = Route::Upload(upload);
                Ok(None)
            }
            Message::Download { stream, kind, keys } => {
                let (abandon, abandoned) = watch::channel(false);
                self.streams.open(stream, Route::Download { abandon })?;
                let ctx = ctx.clone();
                self.downloads
                    .spawn(download(ctx, stream, kind, keys, abandoned));
                Ok(None)
            }
            Message::End { stream, error } => {
                match self.streams.expect(stream, "an `end` message")? {
                    Route::Log { .. } => {
                        return Err(ProtocolError::UnexpectedMessage {
                            expected: "`end` only for an upload (a step's log ends with its step)",
                            received: format!("`end` for log stream {stream}"),
                        });
                    }
                    Route::Download { .. } => {
                        return Err(ProtocolError::UnexpectedMessage {
                            expected: "`end` only for an upload (the launch-agent ends a download)",
                            received: format!("`end` for download stream {stream}"),
                        });
                    }
                    Route::Refused | Route::Upload(_) => {}
                }
                if let Route::Upload(upload) = self.streams.close(stream, "an `end` message")? {
                    upload.end(error).await;
                }
                Ok(None)
            }
            Message::Abandon { stream, reason } => {
                // A download that ended already: the abandon crossed its `End`, a race.
                if !self.streams.is_open(stream) && self.streams.was_opened(stream) {
                    return Ok(None);
                }
                match self.streams.expect(stream, "an `abandon` message") {
                    Ok(Route::Download { abandon }) => {
                        tracing::info!(stream, "the task-agent abandoned a download: {reason}");
                        let _ = abandon.send(true);
                        Ok(None)
                    }
                    Ok(_) => Err(ProtocolError::UnexpectedMessage {
                        expected: "`abandon` only for a download",
                        received: format!("`abandon` for stream {stream}"),
                    }),
                    Err(err) => Err(err),
                }
            }
            other => Err(ProtocolError::UnexpectedMessage {
                expected: "an upload or download message",
                received: other.kind().to_owned(),
            }),
        }
    }
}

/// Starts streaming upload `stream` (`kind` named `name`) to the server; its outcome goes to
/// `ctx.answers` for the task-agent.
fn start_upload(ctx: &Context, stream: u32, kind: BlobKind, name: String) -> Relayed {
    let (body, request) = Body::channel(UPLOAD_QUEUE);
    let (done_tx, done) = watch::channel(false);
    let client = ctx.client.clone();
    let auth = ctx.auth.clone();
    let answers = ctx.answers.clone();
    tokio::spawn(async move {
        let stored = match kind {
            BlobKind::Artifact => client.upload_artifact(&auth, &name, request).await,
            BlobKind::Cache => client.upload_cache(&auth, &name, request).await.map(drop),
            BlobKind::Workspace => client
                .upload_workspace_layer(&auth, request)
                .await
                .map(drop),
            BlobKind::TestResults => client
                .upload_test_results(&auth, &name, request)
                .await
                .map(drop),
        };
        let outcome = match stored {
            Ok(()) => UploadOutcome::Stored,
            // A cache key that exists is never overwritten: the server says so before it reads
            // the body, and the step succeeds saying so.
            Err(err) if kind == BlobKind::Cache && err.status() == Some(StatusCode::CONFLICT) => {
                UploadOutcome::Exists
            }
            Err(err) => {
                tracing::warn!(stream, "{} `{name}` was not stored: {err}", kind.as_str());
                UploadOutcome::Failed {
                    message: server_message(&err),
                }
            }
        };
        let _ = done_tx.send(true);
        let _ = answers.send((stream, outcome)).await;
    });
    Relayed { body, done }
}

/// What the job's log says about a failed transfer: the server's own message when it answered.
fn server_message(err: &bosun_api::ApiError) -> String {
    match err {
        bosun_api::ApiError::Status {
            status, message, ..
        } => format!("the server refused it ({status}): {message}"),
        other => format!("the transfer failed: {other}"),
    }
}

/// Runs download `stream`: asks the server, then sends `Found`, the data and `End` (or
/// `NotFound`) to the task-agent, until the end or an abandon; reports its end to the relay.
async fn download(
    ctx: Context,
    stream: u32,
    kind: BlobKind,
    keys: Vec<String>,
    mut abandoned: watch::Receiver<bool>,
) {
    let found = AtomicBool::new(false);
    let ended = tokio::select! {
        ended = fetch(&ctx, stream, kind, &keys, &found) => ended,
        () = async {
            // The guard `wait_for` returns must not live across the awaits below.
            // Its sender goes only with the relay, which aborts this task then.
            if abandoned.wait_for(|abandoned| *abandoned).await.is_err() {
                std::future::pending::<()>().await;
            }
        } => {
            // A download is abandoned only after its `Found` (the task-agent has no handle on
            // it before), so an `End` is what closes it.
            if found.load(Ordering::SeqCst) {
                ctx.to_agent
                    .ordered(Ordered::Message(Message::End {
                        stream,
                        error: Some("abandoned by the task-agent".into()),
                    }))
                    .await
            } else {
                ctx.to_agent.message(Message::NotFound { stream });
                Ok(())
            }
        }
    };
    if ended.is_ok() {
        let _ = ctx.downloaded.send(stream);
    }
}

/// The server's answer to download `stream`, relayed chunk by chunk. `found` is set once the
/// `Found` is queued.
async fn fetch(
    ctx: &Context,
    stream: u32,
    kind: BlobKind,
    keys: &[String],
    found: &AtomicBool,
) -> Result<(), WriterGone> {
    let client = &ctx.client;
    let auth = &ctx.auth;
    let answer = match (kind, keys) {
        (BlobKind::Cache, _) => {
            with_retry("cache lookup", || client.download_cache(auth, keys)).await
        }
        (BlobKind::Workspace, []) => {
            with_retry("workspace manifest", || client.workspace_manifest(auth))
                .await
                .map(|download| Some(("manifest".to_owned(), download)))
        }
        (BlobKind::Workspace, [layer]) => with_retry("workspace layer", || {
            client.download_workspace_layer(auth, layer)
        })
        .await
        .map(|download| download.map(|download| (layer.clone(), download))),
        // A job's timings for `circleci tests split`: the test results of its last good run.
        (BlobKind::TestResults, []) => with_retry("timings", || client.timings(auth))
            .await
            .map(|download| download.map(|download| ("timings".to_owned(), download))),
        // Nothing else is stored for downloading: a workspace layer is asked for one at a time,
        // and artifacts are not read back by jobs.
        _ => Ok(None),
    };
    let (key, mut body) = match answer {
        Ok(Some(found)) => found,
        Ok(None) => {
            ctx.to_agent.message(Message::NotFound { stream });
            return Ok(());
        }
        Err(err) => {
            // The task-agent must not mistake a server it could not reach for a miss: the
            // stream is found and at once ends with the reason, so the step fails saying it.
            tracing::warn!(stream, "{} download failed: {err}", kind.as_str());
            found.store(true, Ordering::SeqCst);
            let key = keys.first().cloned().unwrap_or_default();
            ctx.to_agent
                .ordered(Ordered::Message(Message::Found {
                    stream,
                    key,
                    size: None,
                }))
                .await?;
            return ctx
                .to_agent
                .ordered(Ordered::Message(Message::End {
                    stream,
                    error: Some(server_message(&err)),
                }))
                .await;
        }
    };
    ctx.to_agent
        .ordered(Ordered::Message(Message::Found {
            stream,
            key,
            size: body.content_length(),
        }))
        .await?;
    found.store(true, Ordering::SeqCst);
    let error = loop {
        match body.chunk().await {
            Ok(Some(bytes)) => {
                ctx.to_agent
                    .ordered(Ordered::Data { stream, bytes })
                    .await?;
            }
            Ok(None) => break None,
            Err(err) => {
                tracing::warn!(stream, "{} download broke off: {err}", kind.as_str());
                break Some(format!("the download broke off: {err}"));
            }
        }
    };
    ctx.to_agent
        .ordered(Ordered::Message(Message::End { stream, error }))
        .await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bosun_protocol::{Connection, FrameCodec, Incoming};

    use super::*;

    /// Where a data frame of `stream` goes, as a comparable value.
    fn data(routes: &mut Routes, stream: u32) -> Result<Option<u32>, ProtocolError> {
        Ok(match routes.data(stream)? {
            DataRoute::Log(step) => Some(step),
            DataRoute::Upload(_) | DataRoute::Drop => None,
        })
    }

    /// A context whose server does not answer (nothing listens on port 9), and the task-agent's
    /// end of the socket the writer writes to.
    struct Offline {
        ctx: Context,
        agent: Connection<UnixStream>,
        answers: mpsc::Receiver<(u32, UploadOutcome)>,
        downloaded: mpsc::UnboundedReceiver<u32>,
        _writer: JoinHandle<Result<(), ProtocolError>>,
    }

    fn offline() -> Offline {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let (_, writer) = Connection::new(ours, FrameCodec::default()).split();
        let (to_agent, writer) = spawn_writer(writer);
        let (answers_tx, answers) = mpsc::channel(8);
        let (downloaded_tx, downloaded) = mpsc::unbounded_channel();
        Offline {
            ctx: Context {
                client: Client::new("http://127.0.0.1:9").unwrap(),
                auth: Auth::None,
                to_agent,
                answers: answers_tx,
                downloaded: downloaded_tx,
            },
            agent: Connection::new(theirs, FrameCodec::default()),
            answers,
            downloaded,
            _writer: writer,
        }
    }

    #[test]
    fn log_data_goes_to_the_step_that_named_the_stream() {
        let mut routes = Routes::new(3);
        routes.step_started(0, "checkout", 1).unwrap();
        routes.step_started(2, "background", 4).unwrap();
        assert_eq!(data(&mut routes, 1).unwrap(), Some(0));
        assert_eq!(data(&mut routes, 4).unwrap(), Some(2));
        assert_eq!(routes.step_finished(0).unwrap(), "checkout");
        assert_eq!(
            data(&mut routes, 1).unwrap_err().to_string(),
            "a data frame for stream 1, which is not open"
        );
        // A step index the task does not have, a step started twice, a reused stream id.
        assert!(routes.step_started(3, "x", 9).is_err());
        assert!(routes.step_started(2, "again", 9).is_err());
        assert_eq!(
            routes.step_started(1, "reuse", 4).unwrap_err().to_string(),
            "stream 4 opened after stream 4: stream ids increase and are never reused"
        );
    }

    #[tokio::test]
    async fn a_download_the_server_cannot_answer_ends_with_the_reason_and_closes() {
        let mut t = offline();
        let mut routes = Routes::new(1);
        let download = Message::Download {
            stream: 3,
            kind: BlobKind::Cache,
            keys: vec!["v1-".into()],
        };
        assert_eq!(routes.transfer(download, &t.ctx).await.unwrap(), None);
        // A task-agent may not send data on, or end, a download.
        assert!(routes.data(3).is_err());
        let end = Message::End {
            stream: 3,
            error: None,
        };
        assert!(routes.transfer(end, &t.ctx).await.is_err());
        // The lookup is retried for a while; the answer the task-agent finally gets names the
        // failure instead of passing for a miss. The retry budget is long, so only the first
        // message is awaited here: abandoning ends it.
        let abandon = |stream| Message::Abandon {
            stream,
            reason: "x".into(),
        };
        assert_eq!(routes.transfer(abandon(3), &t.ctx).await.unwrap(), None);
        let answer = tokio::time::timeout(Duration::from_secs(10), t.agent.recv())
            .await
            .expect("an answer")
            .unwrap();
        assert_eq!(
            answer,
            Some(Incoming::Message(Message::NotFound { stream: 3 })),
            "abandoned before anything was found"
        );
        let closed = tokio::time::timeout(Duration::from_secs(10), t.downloaded.recv())
            .await
            .unwrap();
        assert_eq!(closed, Some(3));
        routes.downloaded(3);
        // Abandoning a download that ended is a race, not an error; one never asked is.
        assert_eq!(routes.transfer(abandon(3), &t.ctx).await.unwrap(), None);
        assert_eq!(
            routes
                .transfer(abandon(7), &t.ctx)
                .await
                .unwrap_err()
                .to_string(),
            "an `abandon` message for stream 7, which is not open"
        );
    }

    #[tokio::test]
    async fn a_log_stream_is_not_ended_like_an_upload() {
        let t = offline();
        let mut routes = Routes::new(1);
        routes.step_started(0, "run", 1).unwrap();
        let end = Message::End {
            stream: 1,
            error: None,
        };
        let err = routes.transfer(end, &t.ctx).await.unwrap_err();
        assert!(err.to_string().contains("`end` for log stream 1"), "{err}");
    }

    #[tokio::test]
    async fn an_upload_streams_and_its_failure_comes_back_as_its_answer() {
        // Nothing listens on port 9: the upload fails, and its answer must still arrive,
        // without a data frame or the `End` waiting forever on a body nobody reads.
        for kind in [
            BlobKind::Artifact,
            BlobKind::Cache,
            BlobKind::Workspace,
            BlobKind::TestResults,
        ] {
            let mut t = offline();
            let mut routes = Routes::new(1);
            let upload = Message::Upload {
                stream: 5,
                kind,
                name: "out/a.txt".into(),
            };
            let answer = routes.transfer(upload, &t.ctx).await.unwrap();
            assert_eq!(answer, None, "an upload is answered by its own task");
            for _ in 0..(UPLOAD_QUEUE * 4) {
                match routes.data(5).unwrap() {
                    DataRoute::Upload(upload) => upload.send(Bytes::from_static(b"x")).await,
                    DataRoute::Drop => {}
                    DataRoute::Log(_) => panic!("an upload's data is not a log"),
                }
            }
            let (stream, outcome) = tokio::time::timeout(Duration::from_secs(10), t.answers.recv())
                .await
                .expect("an answer")
                .unwrap();
            assert_eq!(stream, 5);
            assert!(
                matches!(&outcome, UploadOutcome::Failed { message } if message.contains("transfer failed")),
                "{kind:?}: {outcome:?}"
            );
            routes.answered(5);
            assert!(matches!(routes.data(5).unwrap(), DataRoute::Drop));
            let end = Message::End {
                stream: 5,
                error: None,
            };
            assert_eq!(routes.transfer(end, &t.ctx).await.unwrap(), None);
            assert!(routes.data(5).is_err(), "the stream is closed");
        }
    }
}
