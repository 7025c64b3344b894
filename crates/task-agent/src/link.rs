//! The socket to the launch-agent, owned by one task.
//!
//! Steps never touch the [`Connection`]: they queue [`Outgoing`] items on an [`Outbox`] (a bounded
//! channel, so when the launch-agent stops reading, the queue fills, the step's pipe fills and the
//! job blocks: backpressure, not buffering). The link task writes them in order and, at the same
//! time, reads what the launch-agent sends: a `Cancel` or the end of the connection becomes the
//! [`Control`] state that every running step watches.

use std::time::Duration;

use bosun_protocol::{Connection, Incoming, Message, ProtocolError};
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// How many items may wait for the socket. Each data item is at most one 64 KiB chunk, so this
/// bounds the agent's log memory at about 1 MiB whatever the job prints.
const OUTBOX_CAPACITY: usize = 16;

/// One item for the launch-agent.
#[derive(Debug)]
pub enum Outgoing {
    Message(Message),
    Data { stream: u32, bytes: Bytes },
}

/// The connection to the launch-agent is gone: the task cannot report anything any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lost;

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
}

impl Outbox {
    pub async fn message(&self, message: Message) -> Result<(), Lost> {
        self.tx
            .send(Outgoing::Message(message))
            .await
            .map_err(|_| Lost)
    }

    pub async fn data(&self, stream: u32, bytes: Bytes) -> Result<(), Lost> {
        self.tx
            .send(Outgoing::Data { stream, bytes })
            .await
            .map_err(|_| Lost)
    }

    /// Writes a line of the agent's own (not the job's) into a step's log.
    pub async fn text(&self, stream: u32, text: impl Into<String>) -> Result<(), Lost> {
        self.data(stream, Bytes::from(text.into())).await
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
    (Outbox { tx }, control_rx, handle)
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
    loop {
        tokio::select! {
            item = rx.recv() => match item {
                Some(Outgoing::Message(message)) => {
                    conn.send(&message).await?;
                    task_finished |= matches!(message, Message::TaskFinished { .. });
                }
                Some(Outgoing::Data { stream, bytes }) => conn.send_data(stream, bytes).await?,
                None => return Ok(()),
            },
            incoming = conn.recv() => match incoming? {
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
                Some(Incoming::Message(other)) => {
                    tracing::warn!(message = other.kind(), "ignoring an unexpected message");
                }
                Some(Incoming::Data { stream, bytes }) => {
                    tracing::warn!(stream, len = bytes.len(), "ignoring unexpected data");
                }
                None if task_finished => return Ok(()),
                None => return Err(ProtocolError::Closed("the end of the task")),
            },
        }
    }
}
