//! A task's outbox: log chunks and step events for the server, in order, sent by one sender
//! task, so a running job never waits on the server.
//!
//! While the server answers, the outbox holds at most [`MEMORY_BYTES`] in memory and a job that
//! writes faster than the server stores waits for room (backpressure, as before). While the
//! server cannot be reached (the sender is retrying), entries spill to a spool file in the
//! ledger directory (root-only, `<task>.spool`), up to `runner.max_spool_size`; past that the
//! job is failed with a message that says so. Once the server is back the sender replays the
//! spool in order, each log chunk appended at its offset (idempotent on the server).
//!
//! Order is kept by one rule: once something is in the file, everything after it goes to the
//! file too, until the sender has read the file to its end (then it is emptied and memory is
//! used again).

use std::collections::{HashMap, VecDeque};
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bosun_api::{ApiError, Auth, Client, StatusCode, StepEvent};
use bytes::Bytes;
use tokio::sync::Notify;

use crate::upload::{LogStop, with_retry_observed};

/// Bytes of entries held in memory before a job waits (server up) or the spool file takes them
/// (server unreachable).
pub const MEMORY_BYTES: u64 = 8 << 20;
/// What a step event counts for against the bounds.
const EVENT_BYTES: u64 = 256;
/// A record's header in the spool file: kind (1 byte), step (4), payload length (4).
const HEADER: usize = 9;
const KIND_LOG: u8 = 1;
const KIND_STEP: u8 = 2;

/// What the server is sent.
#[derive(Debug)]
enum Entry {
    Log { step: u32, bytes: Bytes },
    Step(StepEvent),
}

impl Entry {
    fn size(&self) -> u64 {
        match self {
            Entry::Log { bytes, .. } => bytes.len() as u64,
            Entry::Step(_) => EVENT_BYTES,
        }
    }
}

/// Why the outbox takes nothing more: the task must end with this.
#[derive(Debug, Clone)]
pub struct SpoolError {
    pub message: String,
}

/// How the sender ended.
#[derive(Debug, Default)]
pub struct Delivery {
    /// The server refused or truncated the log (the task ends with its reason).
    pub log_stop: Option<LogStop>,
    /// The sender gave up: not everything reached the server.
    pub failed: Option<String>,
}

struct State {
    memory: VecDeque<Entry>,
    memory_bytes: u64,
    /// Bytes held in all (memory and file), for the bound and the metric.
    held: u64,
    file: Option<std::fs::File>,
    /// Where the next record is written, and read.
    write_at: u64,
    read_at: u64,
    /// No more entries will come.
    closed: bool,
    /// Since when the sender's current call has been failing (the server unreachable or
    /// erroring); `None` while it succeeds.
    failing_since: Option<Instant>,
    /// The sender gave up for good: entries are refused.
    dead: Option<String>,
    /// The server stores no more of this task's log.
    log_stop: Option<LogStop>,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the sender: an entry arrived, or the outbox closed.
    arrived: Notify,
    /// Wakes a waiting producer: the sender took an entry.
    taken: Notify,
    path: PathBuf,
    limit: u64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// The producer's side; the sender runs in its own task until [`Spool::finish`].
pub struct Spool {
    shared: Arc<Shared>,
    sender: tokio::task::JoinHandle<()>,
}

impl Spool {
    /// Starts the sender. `path` is where the spool file goes if it is needed (created by root,
    /// mode 0600, never through a symlink); `limit` bounds memory and file together.
    pub fn start(client: Client, auth: Auth, path: PathBuf, limit: u64) -> Spool {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                memory: VecDeque::new(),
                memory_bytes: 0,
                held: 0,
                file: None,
                write_at: 0,
                read_at: 0,
                closed: false,
                failing_since: None,
                dead: None,
                log_stop: None,
            }),
            arrived: Notify::new(),
            taken: Notify::new(),
            path,
            limit: limit.max(MEMORY_BYTES),
        });
        let sender = tokio::spawn(send_all(client, auth, shared.clone()));
        Spool { shared, sender }
    }

    /// Queues log bytes of `step`.
    pub async fn log(&self, step: u32, bytes: Bytes) -> Result<(), SpoolError> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.push(Entry::Log { step, bytes }).await
    }

    /// Queues a step event (after every log chunk queued before it).
    pub async fn step(&self, event: StepEvent) -> Result<(), SpoolError> {
        self.push(Entry::Step(event)).await
    }

    /// Why the server stores no more of this task's log, once the sender learned it.
    pub fn log_stop(&self) -> Option<LogStop> {
        self.shared.lock().log_stop.clone()
    }

    async fn push(&self, entry: Entry) -> Result<(), SpoolError> {
        let size = entry.size();
        let mut entry = Some(entry);
        loop {
            let taken = self.shared.taken.notified();
            tokio::pin!(taken);
            taken.as_mut().enable();
            {
                let mut state = self.shared.lock();
                if let Some(why) = &state.dead {
                    return Err(SpoolError {
                        message: why.clone(),
                    });
                }
                let in_file = state.write_at > state.read_at;
                let fits_memory = !in_file && state.memory_bytes + size <= MEMORY_BYTES;
                let fits = state.held == 0 || state.held + size <= self.shared.limit;
                let place = if fits_memory || state.held == 0 {
                    Some(false)
                } else if fits && (in_file || state.failing_since.is_some()) {
                    Some(true)
                } else {
                    None
                };
                match place {
                    Some(to_file) => {
                        let entry = entry.take().expect("pushed once");
                        if to_file {
                            self.write_record(&mut state, &entry)?;
                        } else {
                            state.memory_bytes += size;
                            state.memory.push_back(entry);
                        }
                        state.held += size;
                        crate::metrics::spool_bytes(size as i64);
                        drop(state);
                        self.shared.arrived.notify_one();
                        return Ok(());
                    }
                    None => {
                        if let Some(since) = state.failing_since {
                            if !fits {
                                return Err(SpoolError {
                                    message: format!(
                                        "the server has been unreachable for {:.0?} and this task's \
                                         output passed the launch-agent's spool bound \
                                         (runner.max_spool_size, {} bytes)",
                                        since.elapsed(),
                                        self.shared.limit
                                    ),
                                });
                            }
                        }
                    }
                }
            }
            // Room comes when the sender takes an entry; a sender that starts failing meanwhile
            // turns the wait into spooling (or the bound's error), so look again each second.
            tokio::select! {
                _ = &mut taken => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// Appends `entry` to the spool file, creating it on first use.
    fn write_record(&self, state: &mut State, entry: &Entry) -> Result<(), SpoolError> {
        let io_error = |err: std::io::Error| SpoolError {
            message: format!(
                "spooling the task's output to {}: {err}",
                self.shared.path.display()
            ),
        };
        if state.file.is_none() {
            tracing::warn!(
                path = %self.shared.path.display(),
                "the server is unreachable: spooling the task's output to disk"
            );
            // Root creates it in the root-only ledger directory (0600, never through a symlink).
            let file = crate::privileged::create_private(&self.shared.path).map_err(io_error)?;
            state.file = Some(file);
        }
        let (kind, step, payload) = match entry {
            Entry::Log { step, bytes } => (KIND_LOG, *step, bytes.clone()),
            Entry::Step(event) => (
                KIND_STEP,
                event.step,
                Bytes::from(serde_json::to_vec(event).expect("a step event serializes")),
            ),
        };
        let mut record = Vec::with_capacity(HEADER + payload.len());
        record.push(kind);
        record.extend_from_slice(&step.to_le_bytes());
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&payload);
        let file = state.file.as_ref().expect("opened above");
        file.write_all_at(&record, state.write_at)
            .map_err(io_error)?;
        state.write_at += record.len() as u64;
        Ok(())
    }

    /// Closes the outbox and waits until the sender has sent everything (or given up); removes
    /// the spool file.
    pub async fn finish(mut self) -> Delivery {
        self.shared.lock().closed = true;
        self.shared.arrived.notify_one();
        if let Err(err) = (&mut self.sender).await {
            tracing::error!("the task's sender panicked: {err}");
        }
        let mut state = self.shared.lock();
        if state.file.take().is_some() {
            let _ = std::fs::remove_file(&self.shared.path);
        }
        crate::metrics::spool_bytes(-(state.held as i64));
        state.held = 0;
        Delivery {
            log_stop: state.log_stop.clone(),
            failed: state.dead.clone(),
        }
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        // A task dropped mid-way (the launch-agent stopping) takes its sender and file along.
        self.sender.abort();
        let state = self.shared.lock();
        if state.file.is_some() {
            let _ = std::fs::remove_file(&self.shared.path);
        }
    }
}

/// Takes the next entry, waiting for one; `None` once the outbox is closed and empty.
async fn next(shared: &Shared) -> Option<Entry> {
    loop {
        let arrived = shared.arrived.notified();
        tokio::pin!(arrived);
        arrived.as_mut().enable();
        {
            let mut state = shared.lock();
            match take(&mut state, shared) {
                Ok(Some(entry)) => {
                    let size = entry.size();
                    state.held -= size;
                    crate::metrics::spool_bytes(-(size as i64));
                    drop(state);
                    shared.taken.notify_waiters();
                    return Some(entry);
                }
                Ok(None) if state.closed => return None,
                Ok(None) => {}
                Err(why) => {
                    state.dead = Some(why);
                    return None;
                }
            }
        }
        arrived.await;
    }
}

/// The oldest entry: memory first (everything there came before the file's first record).
fn take(state: &mut State, shared: &Shared) -> Result<Option<Entry>, String> {
    if let Some(entry) = state.memory.pop_front() {
        state.memory_bytes -= entry.size();
        return Ok(Some(entry));
    }
    if state.read_at >= state.write_at {
        return Ok(None);
    }
    let file = state.file.as_ref().expect("records were written");
    let broken =
        |err: std::io::Error| format!("reading the task's spool {}: {err}", shared.path.display());
    let mut header = [0u8; HEADER];
    file.read_exact_at(&mut header, state.read_at)
        .map_err(broken)?;
    let step = u32::from_le_bytes(header[1..5].try_into().expect("4 bytes"));
    let len = u32::from_le_bytes(header[5..9].try_into().expect("4 bytes")) as usize;
    let mut payload = vec![0u8; len];
    file.read_exact_at(&mut payload, state.read_at + HEADER as u64)
        .map_err(broken)?;
    state.read_at += (HEADER + len) as u64;
    if state.read_at == state.write_at {
        // Read to its end: empty it, and memory takes new entries again.
        let _ = file.set_len(0);
        state.read_at = 0;
        state.write_at = 0;
    }
    match header[0] {
        KIND_LOG => Ok(Some(Entry::Log {
            step,
            bytes: Bytes::from(payload),
        })),
        KIND_STEP => serde_json::from_slice(&payload)
            .map(|event| Some(Entry::Step(event)))
            .map_err(|err| format!("the task's spool holds a broken step event: {err}")),
        kind => Err(format!(
            "the task's spool holds a record of unknown kind {kind}"
        )),
    }
}

/// The sender: sends entries in order until the outbox is closed and empty, or the server fails
/// for good.
async fn send_all(client: Client, auth: Auth, shared: Arc<Shared>) {
    // Bytes of each step the server has stored: where the next chunk goes.
    let mut offsets: HashMap<u32, u64> = HashMap::new();
    let observe = |failing: bool| {
        let mut state = shared.lock();
        match (failing, state.failing_since) {
            (true, None) => state.failing_since = Some(Instant::now()),
            (false, Some(_)) => state.failing_since = None,
            _ => {}
        }
    };
    while let Some(entry) = next(&shared).await {
        let sent = match entry {
            Entry::Log { step, bytes } => {
                if shared.lock().log_stop.is_some() {
                    continue;
                }
                let offset = offsets.entry(step).or_default();
                send_log(&client, &auth, &shared, step, offset, bytes, &observe).await
            }
            Entry::Step(mut event) => {
                // The step whose log the server stopped storing failed, whether it was stopped
                // for it or ended first.
                let stopped_here = shared
                    .lock()
                    .log_stop
                    .as_ref()
                    .is_some_and(|stop| stop.step == event.step);
                if stopped_here && event.status != "running" {
                    event.status = "failed".into();
                }
                with_retry_observed(
                    "step event",
                    ApiError::is_retryable,
                    || client.step_event(&auth, &event),
                    &observe,
                )
                .await
            }
        };
        observe(false);
        if let Err(err) = sent {
            tracing::error!("giving up on the server: {err}");
            let mut state = shared.lock();
            state.dead = Some(format!("the server could not be reached: {err}"));
            // Nothing more is sent: what is held goes, and waiting producers hear of it.
            state.memory.clear();
            state.memory_bytes = 0;
            crate::metrics::spool_bytes(-(state.held as i64));
            state.held = 0;
            drop(state);
            shared.taken.notify_waiters();
            return;
        }
    }
}

async fn send_log(
    client: &Client,
    auth: &Auth,
    shared: &Shared,
    step: u32,
    offset: &mut u64,
    bytes: Bytes,
    observe: &impl Fn(bool),
) -> Result<(), ApiError> {
    // Level 1: logs compress well even so, and the agent's CPU belongs to the job.
    let body = match zstd::bulk::compress(&bytes, 1) {
        Ok(body) => Bytes::from(body),
        Err(err) => {
            return Err(ApiError::Transport {
                method: bosun_api::Method::POST,
                url: "zstd".into(),
                message: err.to_string(),
                refused: false,
            });
        }
    };
    let at = *offset;
    // A server out of disk space (507) stays so for longer than a retry budget is worth
    // waiting: the task ends at once with the server's message, and what is stored stays.
    let answer = with_retry_observed(
        "log upload",
        |err| err.is_retryable() && err.status() != Some(StatusCode::INSUFFICIENT_STORAGE),
        || client.append_log(auth, step, at, body.clone()),
        observe,
    )
    .await;
    let stored = match answer {
        Ok(stored) => stored,
        Err(ApiError::Status {
            status, message, ..
        }) if status == StatusCode::INSUFFICIENT_STORAGE => {
            tracing::warn!(step, "the server refused log bytes: {message}");
            stop_logging(shared, "infrastructure_fail", message, step);
            return Ok(());
        }
        Err(err) => return Err(err),
    };
    if let Some(message) = stored.truncated {
        tracing::warn!(step, "the server truncated the log: {message}");
        stop_logging(shared, "failed", message, step);
        return Ok(());
    }
    *offset += bytes.len() as u64;
    crate::metrics::log_bytes(bytes.len() as u64);
    if stored.length != *offset {
        tracing::warn!(
            step,
            expected = *offset,
            stored = stored.length,
            "the server's log length differs from what this agent sent"
        );
    }
    Ok(())
}

/// The server will take no more of this task's log: the task ends with `status` and the
/// server's message once its step does (see [`Spool::log_stop`]).
fn stop_logging(shared: &Shared, status: &'static str, message: String, step: u32) {
    shared.lock().log_stop = Some(LogStop {
        status,
        message,
        step,
    });
}
