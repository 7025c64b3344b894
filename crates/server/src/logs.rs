//! Step logs in the blob directory: `logs/<task>/<step>.log`, appended by offset so a retried
//! request never duplicates or drops a byte.
//!
//! Logs are bounded three ways: a step's log stops at `--max-step-log`, the sum of a task's step
//! logs at `--max-job-log` (each ends with a `[bosun]` line saying so, and a `truncated` marker
//! file in the task's directory makes every later append of the task an acknowledged no-op), and
//! no log byte is written while the blob directory's file system has less than `--min-free-space`
//! free (answered 507).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::State;
use crate::error::{AppError, AppResult};

/// Largest decompressed log chunk one request may carry.
pub const MAX_LOG_CHUNK: u64 = 32 << 20;
/// Largest log page one read returns.
pub const MAX_LOG_PAGE: u64 = 8 << 20;
/// Default `--max-step-log`.
pub const DEFAULT_MAX_STEP_LOG: u64 = 1 << 30;
/// Default `--max-job-log`.
pub const DEFAULT_MAX_JOB_LOG: u64 = 4 << 30;
/// Default `--min-free-space`.
pub const DEFAULT_MIN_FREE_SPACE: u64 = 1 << 30;
/// How long a measurement of the free space is trusted (less what was written since).
const FREE_SPACE_TTL: Duration = Duration::from_secs(1);
/// The marker file, in a task's log directory, that closes the task's log.
const TRUNCATED_MARKER: &str = "truncated";
/// Overlapping bytes are compared with the stored ones in pieces this big.
const COMPARE_PIECE: usize = 64 << 10;

/// The server's log limits, and its cached view of the free space.
pub struct Limits {
    pub max_step: u64,
    pub max_job: u64,
    pub min_free_space: u64,
    /// When the free space was last measured, and how much was free then less what was written
    /// since. Measured at most once per [`FREE_SPACE_TTL`], so the check costs nothing per chunk.
    free: Mutex<Option<(Instant, u64)>>,
}

impl Limits {
    pub fn new(max_step: u64, max_job: u64, min_free_space: u64) -> Limits {
        Limits {
            max_step,
            max_job,
            min_free_space,
            free: Mutex::new(None),
        }
    }

    /// Refuses to write `need` more bytes when that would leave less than the floor free.
    async fn check_free_space(&self, dir: &Path, need: u64) -> AppResult<()> {
        if self.min_free_space == 0 {
            return Ok(());
        }
        let cached = *self.free.lock().unwrap_or_else(|e| e.into_inner());
        let free = match cached {
            Some((at, free)) if at.elapsed() < FREE_SPACE_TTL => free,
            _ => {
                let dir = dir.to_owned();
                let measured = tokio::task::spawn_blocking(move || free_bytes(&dir))
                    .await
                    .map_err(|err| anyhow::anyhow!("measuring free space panicked: {err}"))?;
                let free = match measured {
                    Ok(free) => free,
                    Err(err) => {
                        // A file system that cannot say (some network mounts) is not a reason to
                        // stop every job; the warning repeats at most once per TTL.
                        tracing::warn!("cannot measure the blob directory's free space: {err}");
                        u64::MAX
                    }
                };
                *self.free.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), free));
                free
            }
        };
        if free.saturating_sub(need) < self.min_free_space {
            return Err(AppError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                format!(
                    "the server is low on disk space: {} free for logs, below its floor of {} \
                     (bosun-server --min-free-space); new log bytes are refused until space is freed",
                    format_size(free),
                    format_size(self.min_free_space)
                ),
            ));
        }
        Ok(())
    }

    fn wrote(&self, bytes: u64) {
        if let Some((_, free)) = self.free.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            *free = free.saturating_sub(bytes);
        }
    }
}

/// Bytes available to unprivileged writers on the file system holding `dir`.
fn free_bytes(dir: &Path) -> nix::Result<u64> {
    let stat = nix::sys::statvfs::statvfs(dir)?;
    #[allow(clippy::useless_conversion)] // The field types differ between targets.
    let free = u64::from(stat.blocks_available()).saturating_mul(u64::from(stat.fragment_size()));
    Ok(free)
}

/// A size as people read it: `1 GiB`, `512 MiB`, `1.5 KiB`, `17 bytes`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: &[(u64, &str)] = &[
        (1 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
    ];
    for &(unit, name) in UNITS {
        if bytes >= unit {
            if bytes % unit == 0 {
                return format!("{} {name}", bytes / unit);
            }
            return format!("{:.1} {name}", bytes as f64 / unit as f64);
        }
    }
    if bytes == 1 {
        "1 byte".into()
    } else {
        format!("{bytes} bytes")
    }
}

pub fn decompress(body: &[u8]) -> AppResult<Vec<u8>> {
    let decoder = zstd::stream::read::Decoder::new(body)
        .map_err(|err| AppError::bad_request(format!("log body is not zstd: {err}")))?;
    let mut out = Vec::new();
    decoder
        .take(MAX_LOG_CHUNK + 1)
        .read_to_end(&mut out)
        .map_err(|err| AppError::bad_request(format!("log body is not valid zstd: {err}")))?;
    if out.len() as u64 > MAX_LOG_CHUNK {
        return Err(AppError::bad_request(format!(
            "log chunk decompresses to more than {MAX_LOG_CHUNK} bytes"
        )));
    }
    Ok(out)
}

fn task_dir(state: &State, task_id: &str) -> PathBuf {
    state.blob_dir.join("logs").join(task_id)
}

pub fn path(state: &State, task_id: &str, step: u32) -> PathBuf {
    task_dir(state, task_id).join(format!("{step}.log"))
}

/// What an append stored.
pub struct Appended {
    /// The step's stored length.
    pub length: u64,
    /// Why the task's log is closed, once a limit was reached.
    pub truncated: Option<String>,
}

/// Appends `bytes`, which start at `offset` of the step's log. Bytes already stored are compared
/// with what is stored (equal: an idempotent retry; different: 409); a gap is refused with 409.
/// Once the task's log reached a limit, appends are acknowledged without storing anything.
///
/// Errors name neither the blob directory nor any path: internal failures go through
/// `anyhow`, which the client sees only as "internal error".
pub async fn append(
    state: &State,
    task_id: &str,
    step: u32,
    offset: u64,
    bytes: &[u8],
) -> AppResult<Appended> {
    let dir = task_dir(state, task_id);
    let path = path(state, task_id, step);
    let _guard = state.log_lock.lock().await;
    if let Some(message) = closed(&dir).await? {
        return Ok(Appended {
            length: length(state, task_id, step).await,
            truncated: Some(message),
        });
    }
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|err| anyhow::anyhow!("creating {}: {err}", dir.display()))?;
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .await
        .map_err(|err| anyhow::anyhow!("opening {}: {err}", path.display()))?;
    let stored = file
        .metadata()
        .await
        .map_err(|err| anyhow::anyhow!("reading {}: {err}", path.display()))?
        .len();
    if offset > stored {
        return Err(AppError::conflict(format!(
            "offset {offset} is past the end of the stored log ({stored} bytes)"
        )));
    }
    let overlap = ((stored - offset) as usize).min(bytes.len());
    if overlap > 0 {
        check_overlap(&path, offset, &bytes[..overlap]).await?;
    }
    let new = &bytes[overlap..];
    if new.is_empty() {
        return Ok(Appended {
            length: stored,
            truncated: None,
        });
    }

    // The limits: content stops at the step's and at the task's limit, whichever comes first.
    let limits = &state.log_limits;
    let step_room = limits.max_step.saturating_sub(stored);
    let job_room = limits.max_job.saturating_sub(task_total(&dir).await?);
    let room = step_room.min(job_room);
    let (keep, truncated) = if (new.len() as u64) <= room {
        (new, None)
    } else {
        let (line, message) = if step_room <= job_room {
            let size = format_size(limits.max_step);
            (
                format!(
                    "\n[bosun] this step's log was truncated at {size} (bosun-server --max-step-log); the step was stopped\n"
                ),
                format!(
                    "step {step}'s log reached the server's limit of {size} per step \
                     (bosun-server --max-step-log): the log was truncated and the job stopped"
                ),
            )
        } else {
            let size = format_size(limits.max_job);
            (
                format!(
                    "\n[bosun] this job's log was truncated at {size} (bosun-server --max-job-log); the job was stopped\n"
                ),
                format!(
                    "the job's log reached the server's limit of {size} per job \
                     (bosun-server --max-job-log) in step {step}: the log was truncated and the job stopped"
                ),
            )
        };
        (&new[..room as usize], Some((line, message)))
    };
    let line_len = truncated.as_ref().map_or(0, |(line, _)| line.len());
    limits
        .check_free_space(&dir, (keep.len() + line_len) as u64)
        .await?;
    if let Some((_, message)) = &truncated {
        // The marker goes first: if the server dies between the two writes, a retry finds the
        // log closed instead of comparing its chunk with the truncation line.
        let marker = dir.join(TRUNCATED_MARKER);
        tokio::fs::write(&marker, message)
            .await
            .map_err(|err| anyhow::anyhow!("writing {}: {err}", marker.display()))?;
        tracing::warn!(task = task_id, step, "{message}");
    }
    file.write_all(keep)
        .await
        .map_err(|err| anyhow::anyhow!("writing {}: {err}", path.display()))?;
    if let Some((line, _)) = &truncated {
        file.write_all(line.as_bytes())
            .await
            .map_err(|err| anyhow::anyhow!("writing {}: {err}", path.display()))?;
    }
    file.flush()
        .await
        .map_err(|err| anyhow::anyhow!("writing {}: {err}", path.display()))?;
    limits.wrote((keep.len() + line_len) as u64);
    Ok(Appended {
        length: stored + (keep.len() + line_len) as u64,
        truncated: truncated.map(|(_, message)| message),
    })
}

/// The reason the task's log was closed, if it was.
async fn closed(dir: &Path) -> AppResult<Option<String>> {
    let marker = dir.join(TRUNCATED_MARKER);
    match tokio::fs::read(&marker).await {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(anyhow::anyhow!("reading {}: {err}", marker.display()).into()),
    }
}

/// The stored length of all of a task's step logs: a directory listing and one `stat` per step,
/// no database query.
async fn task_total(dir: &Path) -> AppResult<u64> {
    let mut entries = tokio::fs::read_dir(dir)
        .await
        .map_err(|err| anyhow::anyhow!("listing {}: {err}", dir.display()))?;
    let mut total = 0u64;
    while let Some(entry) = entries
        .next_entry()
        .await
        .map_err(|err| anyhow::anyhow!("listing {}: {err}", dir.display()))?
    {
        if entry.file_name().to_string_lossy().ends_with(".log") {
            let metadata = entry
                .metadata()
                .await
                .map_err(|err| anyhow::anyhow!("reading {}: {err}", entry.path().display()))?;
            total = total.saturating_add(metadata.len());
        }
    }
    Ok(total)
}

/// Refuses an upload whose bytes at `offset` differ from the stored ones: two writers (or a
/// confused agent) disagree about the log, and keeping either silently would hide it.
async fn check_overlap(path: &Path, offset: u64, expected: &[u8]) -> AppResult<()> {
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|err| anyhow::anyhow!("opening {}: {err}", path.display()))?;
    file.seek(std::io::SeekFrom::Start(offset))
        .await
        .map_err(|err| anyhow::anyhow!("seeking {}: {err}", path.display()))?;
    let mut stored = vec![0u8; COMPARE_PIECE.min(expected.len())];
    let mut at = 0usize;
    while at < expected.len() {
        let piece = &expected[at..(at + COMPARE_PIECE).min(expected.len())];
        let buffer = &mut stored[..piece.len()];
        file.read_exact(buffer)
            .await
            .map_err(|err| anyhow::anyhow!("reading {}: {err}", path.display()))?;
        if let Some(first) = buffer.iter().zip(piece).position(|(a, b)| a != b) {
            let differs = offset + (at + first) as u64;
            return Err(AppError::conflict(format!(
                "the upload differs from the stored log at byte {differs}: bytes {offset}..{} \
                 are already stored with other content",
                offset + expected.len() as u64
            )));
        }
        at += piece.len();
    }
    Ok(())
}

/// Length of a step's log (0 if none yet).
pub async fn length(state: &State, task_id: &str, step: u32) -> u64 {
    tokio::fs::metadata(path(state, task_id, step))
        .await
        .map(|m| m.len())
        .unwrap_or(0)
}

/// Up to `limit` bytes of a step's log from `offset`. An offset at the end reads nothing (how a
/// follower knows it caught up); one past the end is a 416.
pub async fn read(
    state: &State,
    task_id: &str,
    step: u32,
    offset: u64,
    limit: u64,
) -> AppResult<Vec<u8>> {
    let path = path(state, task_id, step);
    let file = match tokio::fs::File::open(&path).await {
        Ok(file) => Some(file),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(err) => return Err(anyhow::anyhow!("opening {}: {err}", path.display()).into()),
    };
    let stored = match &file {
        Some(file) => file
            .metadata()
            .await
            .map_err(|err| anyhow::anyhow!("reading {}: {err}", path.display()))?
            .len(),
        None => 0,
    };
    if offset > stored {
        return Err(AppError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            format!("offset {offset} is past the end of the log ({stored} bytes)"),
        ));
    }
    let Some(mut file) = file else {
        return Ok(Vec::new());
    };
    file.seek(std::io::SeekFrom::Start(offset))
        .await
        .map_err(|err| anyhow::anyhow!("seeking {}: {err}", path.display()))?;
    let mut out = Vec::new();
    file.take(limit.min(MAX_LOG_PAGE))
        .read_to_end(&mut out)
        .await
        .map_err(|err| anyhow::anyhow!("reading {}: {err}", path.display()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::format_size;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(format_size(1 << 30), "1 GiB");
        assert_eq!(format_size(3 << 20), "3 MiB");
        assert_eq!(format_size(1536), "1.5 KiB");
        assert_eq!(format_size(1000), "1000 bytes");
        assert_eq!(format_size(1), "1 byte");
        assert_eq!(format_size(1000 << 40), "1000 TiB");
    }
}
