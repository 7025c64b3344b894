//! Relaying a task's results to the server: step logs appended by offset (zstd bodies), step
//! events and completion, each retried with capped exponential backoff and full jitter for up
//! to ten minutes. The relay awaits each
//! upload before reading more from the task-agent, so a slow server slows the job instead of
//! growing memory (backpressure, not buffering).

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use bosun_api::{ApiError, Auth, Client, Method};
use bytes::Bytes;

/// Flush a step's buffered log once it holds this much.
pub const FLUSH_BYTES: usize = 1 << 20;
/// Give up on the server after this long of failed retries. Long enough for a server restart,
/// an upgrade or a network blip (the restarted server gives running tasks a lease's grace);
/// meanwhile the relay holds the job's output back instead of buffering it.
const RETRY_BUDGET: Duration = Duration::from_secs(600);
/// The longest pause between two tries.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);

/// Runs `call` until it succeeds, fails for good, or the retry budget is spent.
pub async fn with_retry<T, F, Fut>(what: &str, call: F) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ApiError>>,
{
    with_retry_if(what, ApiError::is_retryable, call).await
}

/// [`with_retry`], retrying only the errors `retryable` accepts.
async fn with_retry_if<T, F, Fut>(
    what: &str,
    retryable: impl Fn(&ApiError) -> bool,
    mut call: F,
) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ApiError>>,
{
    let started = Instant::now();
    let mut delay = Duration::from_millis(100);
    loop {
        match call().await {
            Ok(value) => return Ok(value),
            Err(err) if retryable(&err) && started.elapsed() < RETRY_BUDGET => {
                let pause = jitter(delay);
                tracing::warn!("{what} failed, retrying in {pause:?}: {err}");
                tokio::time::sleep(pause).await;
                delay = (delay * 2).min(MAX_RETRY_DELAY);
            }
            Err(err) => return Err(err),
        }
    }
}

/// "Full jitter": a uniform pause from nothing to `delay`, so agents that failed together
/// (a server restart) come back spread out rather than in lockstep.
pub fn jitter(delay: Duration) -> Duration {
    let mut bytes = [0u8; 2];
    let _ = getrandom::fill(&mut bytes);
    delay.mul_f64(f64::from(u16::from_le_bytes(bytes)) / f64::from(u16::MAX))
}

#[derive(Default)]
struct StepLog {
    /// Bytes of this step the server has stored.
    offset: u64,
    pending: Vec<u8>,
}

/// Why the server stores no more of this task's log: the task must stop, and ends with this
/// status and message.
#[derive(Debug, Clone)]
pub struct LogStop {
    /// `failed` when the job's log passed a limit (the job's doing), `infrastructure_fail` when
    /// the server is out of disk space (the server's).
    pub status: &'static str,
    pub message: String,
    /// The step whose upload was refused or truncated.
    pub step: u32,
}

/// Buffers log bytes per step and appends them to the server by offset.
pub struct LogUploader {
    client: Client,
    auth: Auth,
    steps: HashMap<u32, StepLog>,
    /// Set once the server refused to store more; later bytes are dropped here.
    stopped: Option<LogStop>,
}

impl LogUploader {
    pub fn new(client: Client, auth: Auth) -> LogUploader {
        LogUploader {
            client,
            auth,
            steps: HashMap::new(),
            stopped: None,
        }
    }

    /// Why the server stopped storing this task's log, once it did.
    pub fn stopped(&self) -> Option<&LogStop> {
        self.stopped.as_ref()
    }

    /// Adds bytes of `step`; uploads once enough are buffered.
    pub async fn push(&mut self, step: u32, bytes: Bytes) -> Result<(), ApiError> {
        if self.stopped.is_some() {
            // The server keeps nothing more of this task; the relay is stopping it.
            return Ok(());
        }
        let log = self.steps.entry(step).or_default();
        log.pending.extend_from_slice(&bytes);
        if log.pending.len() >= FLUSH_BYTES {
            self.flush(step).await?;
        }
        Ok(())
    }

    /// Uploads what is buffered for `step`.
    pub async fn flush(&mut self, step: u32) -> Result<(), ApiError> {
        let Some(log) = self.steps.get_mut(&step) else {
            return Ok(());
        };
        if log.pending.is_empty() {
            return Ok(());
        }
        if self.stopped.is_some() {
            log.pending.clear();
            return Ok(());
        }
        // Level 1: logs compress well even so, and the agent's CPU belongs to the job.
        let body = Bytes::from(zstd::bulk::compress(&log.pending, 1).map_err(|err| {
            ApiError::Transport {
                method: Method::POST,
                url: "zstd".into(),
                message: err.to_string(),
                refused: false,
            }
        })?);
        let client = &self.client;
        let auth = &self.auth;
        let offset = log.offset;
        // A server out of disk space (507) stays so for longer than a retry budget is worth
        // waiting: the task ends at once with the server's message, and what is stored stays.
        let answer = with_retry_if(
            "log upload",
            |err| err.is_retryable() && !is_out_of_space(err),
            || client.append_log(auth, step, offset, body.clone()),
        )
        .await;
        let stored = match answer {
            Ok(stored) => stored,
            Err(ApiError::Status {
                status, message, ..
            }) if status == bosun_api::StatusCode::INSUFFICIENT_STORAGE => {
                tracing::warn!(step, "the server refused log bytes: {message}");
                log.pending.clear();
                self.stopped = Some(LogStop {
                    status: "infrastructure_fail",
                    message,
                    step,
                });
                return Ok(());
            }
            Err(err) => return Err(err),
        };
        if let Some(message) = stored.truncated {
            tracing::warn!(step, "the server truncated the log: {message}");
            log.pending.clear();
            self.stopped = Some(LogStop {
                status: "failed",
                message,
                step,
            });
            return Ok(());
        }
        log.offset += log.pending.len() as u64;
        crate::metrics::log_bytes(log.pending.len() as u64);
        if stored.length != log.offset {
            tracing::warn!(
                step,
                expected = log.offset,
                stored = stored.length,
                "the server's log length differs from what this agent sent"
            );
        }
        log.pending.clear();
        Ok(())
    }

    pub async fn flush_all(&mut self) -> Result<(), ApiError> {
        let mut steps: Vec<u32> = self.steps.keys().copied().collect();
        steps.sort_unstable();
        for step in steps {
            self.flush(step).await?;
        }
        Ok(())
    }
}

fn is_out_of_space(err: &ApiError) -> bool {
    err.status() == Some(bosun_api::StatusCode::INSUFFICIENT_STORAGE)
}

#[cfg(test)]
mod jitter_tests {
    use super::*;

    #[test]
    fn full_jitter_spreads_pauses_over_the_whole_range() {
        let cap = Duration::from_secs(1);
        let pauses: Vec<Duration> = (0..400).map(|_| jitter(cap)).collect();
        assert!(pauses.iter().all(|p| *p <= cap));
        // Both halves of the range are used (a ±20 % jitter would never go below 0.8 s).
        assert!(pauses.iter().any(|p| *p < Duration::from_millis(250)));
        assert!(pauses.iter().any(|p| *p > Duration::from_millis(750)));
    }
}
