//! Step logs in the blob directory: `logs/<task>/<step>.log`, appended by offset so a retried
//! request never duplicates or drops a byte.

use std::io::Read;
use std::path::PathBuf;

use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::State;
use crate::error::{AppError, AppResult};

/// Largest decompressed log chunk one request may carry.
pub const MAX_LOG_CHUNK: u64 = 32 << 20;
/// Largest log page one read returns.
pub const MAX_LOG_PAGE: u64 = 8 << 20;

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

pub fn path(state: &State, task_id: &str, step: u32) -> PathBuf {
    state
        .blob_dir
        .join("logs")
        .join(task_id)
        .join(format!("{step}.log"))
}

/// Appends `bytes`, which start at `offset` of the step's log. Bytes already stored are skipped;
/// a gap is refused. Returns the stored length.
pub async fn append(
    state: &State,
    task_id: &str,
    step: u32,
    offset: u64,
    bytes: &[u8],
) -> AppResult<u64> {
    let path = path(state, task_id, step);
    let _guard = state.log_lock.lock().await;
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|err| anyhow::anyhow!("creating {}: {err}", parent.display()))?;
    }
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
    let already = (stored - offset) as usize;
    if already < bytes.len() {
        file.write_all(&bytes[already..])
            .await
            .map_err(|err| anyhow::anyhow!("writing {}: {err}", path.display()))?;
        file.flush()
            .await
            .map_err(|err| anyhow::anyhow!("writing {}: {err}", path.display()))?;
        return Ok(offset + bytes.len() as u64);
    }
    Ok(stored)
}

/// Length of a step's log (0 if none yet).
pub async fn length(state: &State, task_id: &str, step: u32) -> u64 {
    tokio::fs::metadata(path(state, task_id, step))
        .await
        .map(|m| m.len())
        .unwrap_or(0)
}

/// Up to `limit` bytes of a step's log from `offset`.
pub async fn read(
    state: &State,
    task_id: &str,
    step: u32,
    offset: u64,
    limit: u64,
) -> AppResult<Vec<u8>> {
    let path = path(state, task_id, step);
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(anyhow::anyhow!("opening {}: {err}", path.display()).into()),
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
