//! Relaying a task's results to the server: retries with capped exponential backoff and full
//! jitter for up to ten minutes, and the per-step log buffers that feed the task's outbox
//! ([`crate::spool`]), which sends log chunks by offset (zstd bodies) and step events in order.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use bosun_api::{ApiError, StepEvent};
use bytes::Bytes;

use crate::spool::{Delivery, Spool, SpoolError};

/// Flush a step's buffered log once it holds this much.
pub const FLUSH_BYTES: usize = 1 << 20;
/// Give up on the server after this long of failed retries. Long enough for a server restart,
/// an upgrade or a network blip (the restarted server gives running tasks a lease's grace);
/// meanwhile the task's outbox holds its output, in memory and then spooled to disk.
const RETRY_BUDGET: Duration = Duration::from_secs(600);
/// The longest pause between two tries.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);

/// Runs `call` until it succeeds, fails for good, or the retry budget is spent.
pub async fn with_retry<T, F, Fut>(what: &str, call: F) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ApiError>>,
{
    with_retry_observed(what, ApiError::is_retryable, call, &|_| {}).await
}

/// [`with_retry`], retrying only the errors `retryable` accepts, and telling `observe` after
/// each try whether it failed.
pub async fn with_retry_observed<T, F, Fut>(
    what: &str,
    retryable: impl Fn(&ApiError) -> bool,
    mut call: F,
    observe: &impl Fn(bool),
) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ApiError>>,
{
    let started = Instant::now();
    let mut delay = Duration::from_millis(100);
    loop {
        let answer = call().await;
        observe(answer.is_err());
        match answer {
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

/// Why the server stores no more of this task's log: the task must stop, and ends with this
/// status and message.
#[derive(Debug, Clone)]
pub struct LogStop {
    /// `failed` when the job's log passed a limit (the job's doing), `infrastructure_fail` when
    /// the server is out of disk space (the server's) or the output could not be held for it.
    pub status: &'static str,
    pub message: String,
    /// The step whose upload was refused or truncated.
    pub step: u32,
}

/// Buffers log bytes per step and hands them to the task's outbox a flush at a time, so the
/// server sees a few large appends rather than one per frame.
pub struct LogUploader {
    spool: Spool,
    pending: HashMap<u32, Vec<u8>>,
    /// Set once the server refused to store more or the outbox refused more; later bytes are
    /// dropped here.
    stopped: Option<LogStop>,
}

impl LogUploader {
    pub fn new(spool: Spool) -> LogUploader {
        LogUploader {
            spool,
            pending: HashMap::new(),
            stopped: None,
        }
    }

    /// Why this task's output stops here, once it does: the server refused or truncated its
    /// log, or the outbox could take no more.
    pub fn stopped(&mut self) -> Option<&LogStop> {
        if self.stopped.is_none() {
            self.stopped = self.spool.log_stop();
        }
        self.stopped.as_ref()
    }

    /// Adds bytes of `step`; hands them on once enough are buffered.
    pub async fn push(&mut self, step: u32, bytes: Bytes) {
        if self.stopped().is_some() {
            // The server keeps nothing more of this task; the relay is stopping it.
            return;
        }
        let pending = self.pending.entry(step).or_default();
        pending.extend_from_slice(&bytes);
        if pending.len() >= FLUSH_BYTES {
            self.flush(step).await;
        }
    }

    /// Hands on what is buffered for `step`.
    pub async fn flush(&mut self, step: u32) {
        let Some(pending) = self.pending.get_mut(&step) else {
            return;
        };
        if pending.is_empty() {
            return;
        }
        let bytes = Bytes::from(std::mem::take(pending));
        if self.stopped().is_some() {
            return;
        }
        if let Err(err) = self.spool.log(step, bytes).await {
            self.refused(step, err);
        }
    }

    pub async fn flush_all(&mut self) {
        let mut steps: Vec<u32> = self.pending.keys().copied().collect();
        steps.sort_unstable();
        for step in steps {
            self.flush(step).await;
        }
    }

    /// Queues a step event behind the step's buffered log.
    pub async fn step_event(&mut self, event: StepEvent) {
        self.flush(event.step).await;
        if let Err(err) = self.spool.step(event.clone()).await {
            self.refused(event.step, err);
        }
    }

    fn refused(&mut self, step: u32, err: SpoolError) {
        if self.stopped.is_none() {
            tracing::warn!(step, "{}", err.message);
            self.stopped = Some(LogStop {
                status: "infrastructure_fail",
                message: err.message,
                step,
            });
        }
    }

    /// Hands on what is buffered and waits until the server has it all (or the sender gave
    /// up).
    pub async fn finish(mut self) -> Delivery {
        self.flush_all().await;
        let refused = self.stopped.take();
        let mut delivery = self.spool.finish().await;
        if delivery.log_stop.is_none() {
            delivery.log_stop = refused;
        }
        delivery
    }
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
