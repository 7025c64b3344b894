//! Step logs in the blob store, appended by offset so a retried request never duplicates or drops
//! a byte.
//!
//! Objects in a blob store are immutable (S3 cannot append), so a step's log is a list of chunks,
//! each an object written once: `logs/<task>/<step>/<start>-<end>.zst` holds bytes
//! `start..end` of the log (offsets zero-padded to 20 digits, so names sort as numbers),
//! zstd-compressed. The chunk list is the log's index: the stored length is the last chunk's end,
//! and a read of a byte range fetches and decompresses only the chunks that overlap it (each at
//! most about 2 MiB of log, so a read of any byte costs at most that). The server keeps the
//! indexes of recently used tasks in memory, loaded from one listing of `logs/<task>/` on first
//! use; appends update them under one lock, so the offset check and the write are one step.
//! A chunk the agent sent compressed is stored as it came (decompressed once, to check it and
//! its overlap); the server compresses only what it had to cut (an overlap, a limit).
//! Logs written by older versions, `logs/<task>/<step>.log`, read as one uncompressed chunk.
//!
//! Logs are bounded three ways: a step's log stops at `--max-step-log`, the sum of a task's step
//! logs at `--max-job-log` (each ends with a `[bosun]` line saying so, and a `truncated` marker
//! object, `logs/<task>/truncated`, makes every later append of the task an acknowledged
//! no-op), and no log byte is written while the blob store's file system has less than
//! `--min-free-space` free (answered 507).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use bytes::Bytes;
use futures_util::StreamExt;

use crate::blobs::{BlobError, BlobKey, Blobs, Overwrite};
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
/// The marker object, in a task's log prefix, that closes the task's log.
const TRUNCATED_MARKER: &str = "truncated";
/// Largest stored chunk the server writes itself; an agent's chunk is stored as it came when it
/// holds at most twice this (the launch-agent flushes at 1 MiB, plus at most one frame).
const CHUNK_BYTES: usize = 1 << 20;
/// Largest stored (compressed) chunk object a read accepts: an agent's body is at most 16 MiB
/// (the request limit), a server-written chunk compresses [`CHUNK_BYTES`] to less than this.
const MAX_STORED_CHUNK: u64 = 16 << 20;
/// Largest `truncated` marker read back.
const MAX_MARKER: u64 = 64 << 10;
/// Decompressed bytes are produced and compared in pieces this big.
const PIECE: usize = 64 << 10;
/// Tasks whose log index stays in memory; past it the map starts afresh (and indexes are
/// loaded again from listings).
const MAX_INDEXED_TASKS: usize = 1024;
/// zstd level of chunks the server compresses: logs compress well even at the fastest one.
const ZSTD_LEVEL: i32 = 1;

/// The server's log limits.
pub struct Limits {
    pub max_step: u64,
    pub max_job: u64,
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

/// One uploaded log chunk: the body as the agent sent it (zstd) and its decompressed bytes.
pub struct Upload {
    compressed: Bytes,
    bytes: Vec<u8>,
}

/// Decompresses an agent's log body, refusing one that is not zstd or decompresses to more than
/// [`MAX_LOG_CHUNK`]. A body of one frame that declares its size (the launch-agent's) is
/// decompressed in one call into a buffer of exactly that size, which zstd checks the frame
/// against: for 1 MiB chunks of build-log text, 8 ms per 64 MiB against 63 ms streamed (the
/// stream decoder copies through its window in `read_to_end`'s growing reads). Any other body
/// is streamed.
pub fn decompress(body: Bytes) -> AppResult<Upload> {
    let too_big = || {
        AppError::bad_request(format!(
            "log chunk decompresses to more than {MAX_LOG_CHUNK} bytes"
        ))
    };
    let declared = zstd::zstd_safe::get_frame_content_size(&body);
    if let Ok(Some(size)) = declared {
        // The first frame alone is too big: nothing is allocated for it.
        if size > MAX_LOG_CHUNK {
            return Err(too_big());
        }
    }
    let one_frame = zstd::zstd_safe::find_frame_compressed_size(&body) == Ok(body.len());
    if let (true, Ok(Some(size))) = (one_frame, declared) {
        let bytes = zstd::bulk::decompress(&body, size as usize)
            .map_err(|err| AppError::bad_request(format!("log body is not valid zstd: {err}")))?;
        if bytes.len() as u64 != size {
            return Err(AppError::bad_request(format!(
                "log body decompresses to {} bytes, its frame declares {size}",
                bytes.len()
            )));
        }
        return Ok(Upload {
            compressed: body,
            bytes,
        });
    }
    let decoder = zstd::stream::read::Decoder::with_buffer(&body[..])
        .map_err(|err| AppError::bad_request(format!("log body is not zstd: {err}")))?;
    let mut out = Vec::new();
    decoder
        .take(MAX_LOG_CHUNK + 1)
        .read_to_end(&mut out)
        .map_err(|err| AppError::bad_request(format!("log body is not valid zstd: {err}")))?;
    if out.len() as u64 > MAX_LOG_CHUNK {
        return Err(too_big());
    }
    Ok(Upload {
        compressed: body,
        bytes: out,
    })
}

/// One stored chunk of a step's log: bytes `start..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Chunk {
    start: u64,
    end: u64,
    /// An older version's whole-step file, `logs/<task>/<step>.log`, uncompressed.
    legacy: bool,
}

/// What is stored of one task's logs.
#[derive(Debug, Clone, Default)]
struct TaskLog {
    /// Each step's chunks, in order, contiguous from 0.
    steps: BTreeMap<u32, Vec<Chunk>>,
    /// Bytes of all steps together.
    total: u64,
    /// Why the task's log was closed, once a limit was reached.
    closed: Option<String>,
}

impl TaskLog {
    fn length(&self, step: u32) -> u64 {
        self.steps
            .get(&step)
            .and_then(|chunks| chunks.last())
            .map_or(0, |chunk| chunk.end)
    }

    /// The chunks of `step` that overlap `from..to`.
    fn overlapping(&self, step: u32, from: u64, to: u64) -> Vec<Chunk> {
        let Some(chunks) = self.steps.get(&step) else {
            return Vec::new();
        };
        let first = chunks.partition_point(|chunk| chunk.end <= from);
        chunks[first..]
            .iter()
            .take_while(|chunk| chunk.start < to)
            .copied()
            .collect()
    }
}

/// What an append stored.
pub struct Appended {
    /// The step's stored length.
    pub length: u64,
    /// Why the task's log is closed, once a limit was reached.
    pub truncated: Option<String>,
}

/// The step logs: their blob store, limits and indexes.
pub struct Logs {
    inner: Arc<Inner>,
}

impl Logs {
    pub fn new(blobs: Arc<Blobs>, limits: Limits) -> Logs {
        Logs {
            inner: Arc::new(Inner {
                blobs,
                limits,
                lock: tokio::sync::Mutex::new(()),
                index: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Appends `upload`, whose bytes start at `offset` of the step's log. Bytes already stored
    /// are compared with what is stored (equal: an idempotent retry; different: 409); a gap is
    /// refused with 409. Once the task's log reached a limit, appends are acknowledged without
    /// storing anything.
    ///
    /// The append runs in its own task, to completion even when the request is dropped (the
    /// agent timed out and retries): a chunk written to the store but missing from the index
    /// would make the two disagree about the log's length.
    ///
    /// Errors name neither the blob store's location nor any path: internal failures go
    /// through `anyhow`, which the client sees only as "internal error".
    pub async fn append(
        &self,
        task_id: &str,
        step: u32,
        offset: u64,
        upload: Upload,
    ) -> AppResult<Appended> {
        let inner = self.inner.clone();
        let task_id = task_id.to_owned();
        tokio::spawn(async move { inner.append(&task_id, step, offset, &upload).await })
            .await
            .map_err(|err| anyhow::anyhow!("appending a log chunk failed: {err}"))?
    }

    /// Length of a step's log (0 if none yet).
    pub async fn length(&self, task_id: &str, step: u32) -> AppResult<u64> {
        self.inner.with_index(task_id, |log| log.length(step)).await
    }

    /// Up to `limit` bytes (at most [`MAX_LOG_PAGE`]) of a step's log from `offset`, as a
    /// stream that fetches and decompresses one chunk at a time. An offset at the end reads
    /// nothing (how a follower knows it caught up); one past the end is a 416.
    pub async fn read_stream(
        &self,
        task_id: &str,
        step: u32,
        offset: u64,
        limit: u64,
    ) -> AppResult<Page> {
        let limit = limit.min(MAX_LOG_PAGE);
        let (stored, chunks) = self
            .inner
            .with_index(task_id, |log| {
                let stored = log.length(step);
                let to = offset.saturating_add(limit).min(stored);
                (stored, log.overlapping(step, offset, to))
            })
            .await?;
        if offset > stored {
            return Err(AppError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                format!("offset {offset} is past the end of the log ({stored} bytes)"),
            ));
        }
        let to = offset.saturating_add(limit).min(stored);
        let inner = self.inner.clone();
        let task_id = task_id.to_owned();
        let stream = futures_util::stream::iter(chunks)
            .then(move |chunk| {
                let inner = inner.clone();
                let task_id = task_id.clone();
                async move {
                    let from = offset.max(chunk.start);
                    let until = to.min(chunk.end);
                    let mut out = Vec::with_capacity((until - from) as usize);
                    inner
                        .visit(&task_id, step, &[chunk], from, until, |_, piece| {
                            out.extend_from_slice(piece);
                            true
                        })
                        .await
                        // The cause is in the server's log; the client sees the body cut short.
                        .map_err(|err| std::io::Error::other(err.message))?;
                    Ok::<_, std::io::Error>(Bytes::from(out))
                }
            })
            .boxed();
        Ok(Page {
            length: to - offset,
            stream,
        })
    }

    /// [`Logs::read_stream`], collected.
    #[cfg(test)]
    pub async fn read(
        &self,
        task_id: &str,
        step: u32,
        offset: u64,
        limit: u64,
    ) -> AppResult<Vec<u8>> {
        let page = self.read_stream(task_id, step, offset, limit).await?;
        let mut out = Vec::new();
        let mut stream = page.stream;
        while let Some(piece) = stream.next().await {
            out.extend_from_slice(&piece.map_err(|err| anyhow::anyhow!(err))?);
        }
        assert_eq!(out.len() as u64, page.length);
        Ok(out)
    }
}

/// A page of a step's log being read.
pub struct Page {
    /// Bytes `stream` yields.
    pub length: u64,
    pub stream: futures_util::stream::BoxStream<'static, Result<Bytes, std::io::Error>>,
}

struct Inner {
    blobs: Arc<Blobs>,
    limits: Limits,
    /// Serializes appends (and index loads) so the offset check and the write are one step.
    lock: tokio::sync::Mutex<()>,
    /// Indexes of recently used tasks; changed only while `lock` is held.
    index: Mutex<HashMap<String, TaskLog>>,
}

impl Inner {
    /// Runs `look` on the task's index, if it is in memory.
    fn cached<T>(&self, task_id: &str, look: impl FnOnce(&TaskLog) -> T) -> Option<T> {
        let index = self.index.lock().unwrap_or_else(|e| e.into_inner());
        index.get(task_id).map(look)
    }

    fn update<T>(&self, task_id: &str, change: impl FnOnce(&mut TaskLog) -> T) -> T {
        let mut index = self.index.lock().unwrap_or_else(|e| e.into_inner());
        change(index.entry(task_id.to_owned()).or_default())
    }

    /// Runs `look` on the task's index, loading it first if it is not in memory.
    async fn with_index<T>(&self, task_id: &str, look: impl FnOnce(&TaskLog) -> T) -> AppResult<T> {
        // Most calls find the index in memory; a miss loads it under the append lock.
        {
            let index = self.index.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(log) = index.get(task_id) {
                return Ok(look(log));
            }
        }
        let _guard = self.lock.lock().await;
        self.ensure_loaded(task_id).await?;
        Ok(self
            .cached(task_id, look)
            .expect("the index was loaded under the lock"))
    }

    /// Loads the task's index from a listing unless it is in memory. Called with `lock` held, so
    /// no append changes the log between the listing and the insertion.
    async fn ensure_loaded(&self, task_id: &str) -> AppResult<()> {
        if self.cached(task_id, |_| ()).is_some() {
            return Ok(());
        }
        let log = self.load(task_id).await?;
        let mut index = self.index.lock().unwrap_or_else(|e| e.into_inner());
        if index.len() >= MAX_INDEXED_TASKS {
            index.clear();
        }
        index.insert(task_id.to_owned(), log);
        Ok(())
    }

    /// Reads the task's index from a listing of `logs/<task>/`.
    async fn load(&self, task_id: &str) -> AppResult<TaskLog> {
        let prefix = task_key(task_id)?;
        let mut listing = self.blobs.list(&prefix);
        let mut log = TaskLog::default();
        let mut marker = None;
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(internal)?;
            let relative = meta
                .key
                .as_str()
                .strip_prefix(prefix.as_str())
                .and_then(|rest| rest.strip_prefix('/'))
                .unwrap_or_default();
            let parts: Vec<&str> = relative.split('/').collect();
            let parsed = match parts.as_slice() {
                [name] if *name == TRUNCATED_MARKER => {
                    marker = Some(meta.key.clone());
                    continue;
                }
                [name] => name
                    .strip_suffix(".log")
                    .and_then(|step| step.parse::<u32>().ok())
                    .map(|step| {
                        (
                            step,
                            Chunk {
                                start: 0,
                                end: meta.size,
                                legacy: true,
                            },
                        )
                    }),
                [step, name] => parse_chunk_name(name).and_then(|(start, end)| {
                    let step = step.parse::<u32>().ok()?;
                    Some((
                        step,
                        Chunk {
                            start,
                            end,
                            legacy: false,
                        },
                    ))
                }),
                _ => None,
            };
            match parsed {
                Some((step, chunk)) => log.steps.entry(step).or_default().push(chunk),
                None => tracing::warn!("ignoring blob {} among task {task_id}'s logs", meta.key),
            }
        }
        for (step, chunks) in &mut log.steps {
            chunks.sort_by_key(|chunk| chunk.start);
            let mut at = 0;
            for chunk in chunks.iter() {
                if chunk.start != at || chunk.end < chunk.start {
                    return Err(anyhow::anyhow!(
                        "the log of task {task_id} step {step} is inconsistent: a chunk starts \
                         at byte {} where {at} was expected",
                        chunk.start
                    )
                    .into());
                }
                at = chunk.end;
            }
            log.total = log.total.saturating_add(at);
        }
        if let Some(key) = marker {
            let bytes = self
                .blobs
                .get_bytes(&key, MAX_MARKER)
                .await
                .map_err(internal)?;
            log.closed = Some(String::from_utf8_lossy(&bytes).into_owned());
        }
        Ok(log)
    }

    /// [`Logs::append`], run to completion.
    async fn append(
        &self,
        task_id: &str,
        step: u32,
        offset: u64,
        upload: &Upload,
    ) -> AppResult<Appended> {
        let bytes = &upload.bytes[..];
        let _guard = self.lock.lock().await;
        self.ensure_loaded(task_id).await?;
        let (stored, total, closed) = self
            .cached(task_id, |log| {
                (log.length(step), log.total, log.closed.clone())
            })
            .expect("the index was loaded under the lock");
        if let Some(message) = closed {
            return Ok(Appended {
                length: stored,
                truncated: Some(message),
            });
        }
        if offset > stored {
            return Err(AppError::conflict(format!(
                "offset {offset} is past the end of the stored log ({stored} bytes)"
            )));
        }
        let overlap = ((stored - offset) as usize).min(bytes.len());
        if overlap > 0 {
            self.check_overlap(task_id, step, offset, &bytes[..overlap])
                .await?;
        }
        let new = &bytes[overlap..];
        if new.is_empty() {
            return Ok(Appended {
                length: stored,
                truncated: None,
            });
        }

        // The limits: content stops at the step's and at the task's limit, whichever comes first.
        let limits = &self.limits;
        let step_room = limits.max_step.saturating_sub(stored);
        let job_room = limits.max_job.saturating_sub(total);
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
        self.blobs
            .check_free_space((keep.len() + line_len) as u64)
            .await
            .map_err(low_space)?;
        if let Some((_, message)) = &truncated {
            // The marker goes first: if the server dies between the two writes, a retry finds the
            // log closed instead of comparing its chunk with the truncation line.
            let marker = task_key(task_id)?
                .child(TRUNCATED_MARKER)
                .map_err(internal)?;
            self.blobs
                .put(&marker, Bytes::from(message.clone()), Overwrite::Allowed)
                .await
                .map_err(low_space)?;
            self.update(task_id, |log| log.closed = Some(message.clone()));
            tracing::warn!(task = task_id, step, "{message}");
        }

        // The agent's own compressed body, when it holds exactly the new bytes and is no bigger
        // than they are (zstd adds a few bytes to incompressible data; anything more would be
        // padding counted against no limit).
        let as_sent = overlap == 0
            && truncated.is_none()
            && keep.len() <= 2 * CHUNK_BYTES
            && upload.compressed.len() <= keep.len() + keep.len() / 64 + 256;
        let mut at = stored;
        if as_sent {
            self.put_chunk(task_id, step, at, keep.len(), upload.compressed.clone())
                .await?;
            at += keep.len() as u64;
        } else {
            let content: Cow<'_, [u8]> = match &truncated {
                None => Cow::Borrowed(keep),
                Some((line, _)) => {
                    let mut joined = Vec::with_capacity(keep.len() + line.len());
                    joined.extend_from_slice(keep);
                    joined.extend_from_slice(line.as_bytes());
                    Cow::Owned(joined)
                }
            };
            for piece in content.chunks(CHUNK_BYTES) {
                let compressed = zstd::bulk::compress(piece, ZSTD_LEVEL)
                    .map_err(|err| anyhow::anyhow!("compressing a log chunk: {err}"))?;
                self.put_chunk(task_id, step, at, piece.len(), Bytes::from(compressed))
                    .await?;
                at += piece.len() as u64;
            }
        }
        Ok(Appended {
            length: at,
            truncated: truncated.map(|(_, message)| message),
        })
    }

    /// Writes one chunk object and adds it to the index.
    async fn put_chunk(
        &self,
        task_id: &str,
        step: u32,
        start: u64,
        len: usize,
        compressed: Bytes,
    ) -> AppResult<()> {
        let chunk = Chunk {
            start,
            end: start + len as u64,
            legacy: false,
        };
        let key = chunk_key(task_id, step, &chunk)?;
        self.blobs
            .put(&key, compressed, Overwrite::Refused)
            .await
            .map_err(low_space)?;
        self.update(task_id, |log| {
            log.steps.entry(step).or_default().push(chunk);
            log.total = log.total.saturating_add(len as u64);
        });
        Ok(())
    }

    /// Refuses an upload whose bytes at `offset` differ from the stored ones: two writers (or a
    /// confused agent) disagree about the log, and keeping either silently would hide it.
    async fn check_overlap(
        &self,
        task_id: &str,
        step: u32,
        offset: u64,
        expected: &[u8],
    ) -> AppResult<()> {
        let end = offset + expected.len() as u64;
        let chunks = self
            .cached(task_id, |log| log.overlapping(step, offset, end))
            .unwrap_or_default();
        let mut differs = None;
        self.visit(task_id, step, &chunks, offset, end, |at, stored| {
            let from = (at - offset) as usize;
            let wanted = &expected[from..from + stored.len()];
            match stored.iter().zip(wanted).position(|(a, b)| a != b) {
                Some(first) => {
                    differs = Some(at + first as u64);
                    false
                }
                None => true,
            }
        })
        .await?;
        if let Some(differs) = differs {
            return Err(AppError::conflict(format!(
                "the upload differs from the stored log at byte {differs}: bytes {offset}..{end} \
                 are already stored with other content"
            )));
        }
        Ok(())
    }

    /// Feeds the stored bytes `from..to` of a step, in order and in pieces, to `visit` (given
    /// each piece's offset), fetching only `chunks` (those overlapping the range). `visit`
    /// answers whether to go on.
    async fn visit(
        &self,
        task_id: &str,
        step: u32,
        chunks: &[Chunk],
        from: u64,
        to: u64,
        mut visit: impl FnMut(u64, &[u8]) -> bool,
    ) -> AppResult<()> {
        let mut at = from;
        for chunk in chunks {
            if at >= to {
                break;
            }
            let key = chunk_key(task_id, step, chunk)?;
            let stop = to.min(chunk.end);
            if chunk.legacy {
                let mut download = self
                    .blobs
                    .get(&key, Some(at - chunk.start..stop - chunk.start))
                    .await
                    .map_err(internal)?;
                while let Some(piece) = download.stream.next().await {
                    let piece = piece.map_err(internal)?;
                    let piece = &piece[..piece.len().min((stop - at) as usize)];
                    if piece.is_empty() {
                        break;
                    }
                    if !visit(at, piece) {
                        return Ok(());
                    }
                    at += piece.len() as u64;
                }
            } else {
                let compressed = self
                    .blobs
                    .get_bytes(&key, MAX_STORED_CHUNK)
                    .await
                    .map_err(internal)?;
                let mut decoder = zstd::stream::read::Decoder::with_buffer(&compressed[..])
                    .map_err(|err| anyhow::anyhow!("decompressing blob {key}: {err}"))?;
                let mut position = chunk.start;
                let mut buffer = vec![0u8; PIECE];
                while position < stop {
                    let want = buffer.len().min((stop - position) as usize);
                    let read = decoder
                        .read(&mut buffer[..want])
                        .map_err(|err| anyhow::anyhow!("decompressing blob {key}: {err}"))?;
                    if read == 0 {
                        return Err(anyhow::anyhow!(
                            "blob {key} ends at byte {position} of the log, before its name says"
                        )
                        .into());
                    }
                    let piece_end = position + read as u64;
                    if piece_end > at {
                        let skip = at.saturating_sub(position) as usize;
                        if !visit(at, &buffer[skip..read]) {
                            return Ok(());
                        }
                        at = piece_end;
                    }
                    position = piece_end;
                }
            }
            if at < stop {
                return Err(anyhow::anyhow!("blob {key} is shorter than its name says").into());
            }
        }
        if at < to {
            return Err(anyhow::anyhow!(
                "the log of task {task_id} step {step} has no chunk for bytes {at}..{to}"
            )
            .into());
        }
        Ok(())
    }
}

/// `logs/<task>`.
fn task_key(task_id: &str) -> AppResult<BlobKey> {
    BlobKey::new(["logs", task_id]).map_err(internal)
}

/// The object holding `chunk` of a step's log.
fn chunk_key(task_id: &str, step: u32, chunk: &Chunk) -> AppResult<BlobKey> {
    let key = if chunk.legacy {
        BlobKey::new(["logs", task_id, &format!("{step}.log")])
    } else {
        BlobKey::new([
            "logs",
            task_id,
            &step.to_string(),
            &format!("{:020}-{:020}.zst", chunk.start, chunk.end),
        ])
    };
    key.map_err(internal)
}

/// `<start>-<end>.zst` -> `(start, end)`.
fn parse_chunk_name(name: &str) -> Option<(u64, u64)> {
    let (start, end) = name.strip_suffix(".zst")?.split_once('-')?;
    Some((start.parse().ok()?, end.parse().ok()?))
}

fn internal(err: BlobError) -> AppError {
    anyhow::Error::new(err).into()
}

/// A write refused for lack of space answers 507 with the floor; anything else is internal.
fn low_space(err: BlobError) -> AppError {
    match err {
        BlobError::LowSpace { free, floor } => AppError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            format!(
                "the server is low on disk space: {} free for logs, below its floor of {} \
                 (bosun-server --min-free-space); new log bytes are refused until space is freed",
                format_size(free),
                format_size(floor)
            ),
        ),
        other => internal(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blobs::Location;

    fn logs(dir: &std::path::Path, max_step: u64, max_job: u64) -> Logs {
        let blobs = Blobs::open(&Location::Dir(dir.to_owned()), 0).unwrap();
        Logs::new(Arc::new(blobs), Limits { max_step, max_job })
    }

    fn upload(bytes: &[u8]) -> Upload {
        decompress(Bytes::from(zstd::bulk::compress(bytes, 1).unwrap())).unwrap()
    }

    async fn append(logs: &Logs, step: u32, offset: u64, bytes: &[u8]) -> AppResult<Appended> {
        logs.append("task-1", step, offset, upload(bytes)).await
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(format_size(1 << 30), "1 GiB");
        assert_eq!(format_size(3 << 20), "3 MiB");
        assert_eq!(format_size(1536), "1.5 KiB");
        assert_eq!(format_size(1000), "1000 bytes");
        assert_eq!(format_size(1), "1 byte");
        assert_eq!(format_size(1000 << 40), "1000 TiB");
    }

    #[tokio::test]
    async fn appends_are_idempotent_by_offset_and_overlaps_are_compared() {
        let dir = tempfile::tempdir().unwrap();
        let logs = logs(dir.path(), 1 << 30, 1 << 30);
        assert_eq!(append(&logs, 0, 0, b"hello").await.unwrap().length, 5);
        // A retry, a longer retry, then the next chunk.
        assert_eq!(append(&logs, 0, 0, b"hello").await.unwrap().length, 5);
        assert_eq!(append(&logs, 0, 0, b"hello wor").await.unwrap().length, 9);
        assert_eq!(append(&logs, 0, 9, b"ld").await.unwrap().length, 11);
        assert_eq!(append(&logs, 0, 3, b"lo w").await.unwrap().length, 11);
        // Other bytes over stored ones, across a chunk boundary: 409 naming the byte.
        let err = append(&logs, 0, 7, b"orlD!").await.err().unwrap();
        assert_eq!(err.status, StatusCode::CONFLICT);
        assert!(err.message.contains("byte 10"), "{}", err.message);
        // A gap.
        let err = append(&logs, 0, 12, b"x").await.err().unwrap();
        assert_eq!(err.status, StatusCode::CONFLICT);
        assert!(err.message.contains("past the end"), "{}", err.message);
        assert_eq!(
            logs.read("task-1", 0, 0, 100).await.unwrap(),
            b"hello world"
        );
        assert_eq!(logs.length("task-1", 0).await.unwrap(), 11);

        // Three immutable chunks, and a fresh index (a restarted server) reads the same.
        let chunks = std::fs::read_dir(dir.path().join("logs/task-1/0"))
            .unwrap()
            .count();
        assert_eq!(chunks, 3);
        let again = self::logs(dir.path(), 1 << 30, 1 << 30);
        assert_eq!(
            again.read("task-1", 0, 0, 100).await.unwrap(),
            b"hello world"
        );
        assert_eq!(again.read("task-1", 0, 4, 3).await.unwrap(), b"o w");
        assert_eq!(again.read("task-1", 0, 11, 3).await.unwrap(), b"");
        let err = again.read("task-1", 0, 12, 3).await.err().unwrap();
        assert_eq!(err.status, StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(again.read("task-1", 1, 0, 3).await.unwrap(), b"");
        assert_eq!(append(&again, 0, 11, b"!").await.unwrap().length, 12);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_retries_store_one_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let logs = Arc::new(logs(dir.path(), 1 << 30, 1 << 30));
        let mut retries = Vec::new();
        for _ in 0..8 {
            let logs = logs.clone();
            retries.push(tokio::spawn(async move {
                append(&logs, 0, 0, b"hello").await.map(|done| done.length)
            }));
        }
        for retry in retries {
            assert_eq!(retry.await.unwrap().unwrap(), 5);
        }
        let chunks = std::fs::read_dir(dir.path().join("logs/task-1/0"))
            .unwrap()
            .count();
        assert_eq!(chunks, 1);
    }

    #[tokio::test]
    async fn range_reads_span_and_skip_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let logs = logs(dir.path(), 1 << 30, 1 << 30);
        let data: Vec<u8> = (0..5_000_000u32).map(|i| (i % 241) as u8).collect();
        let mut offset = 0;
        for piece in data.chunks(700_001) {
            offset = append(&logs, 2, offset, piece).await.unwrap().length;
        }
        // A chunk bigger than the server's own chunk size is split when the server compresses it.
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 13) as u8).collect();
        let both = [&data[..], &big[..]].concat();
        let length = append(&logs, 2, 4_000_000, &both[4_000_000..])
            .await
            .unwrap()
            .length;
        assert_eq!(length, both.len() as u64);
        for (from, len) in [
            (0, 10),
            (699_990, 20),
            (1_400_002, 3_000_000),
            (7_999_999, 5),
        ] {
            let read = logs.read("task-1", 2, from, len).await.unwrap();
            let end = (from + len).min(both.len() as u64) as usize;
            assert_eq!(read, &both[from as usize..end], "{from}+{len}");
        }
        let fresh = self::logs(dir.path(), 1 << 30, 1 << 30);
        let mut all = Vec::new();
        while (all.len() as u64) < length {
            all.extend(
                fresh
                    .read("task-1", 2, all.len() as u64, MAX_LOG_PAGE)
                    .await
                    .unwrap(),
            );
        }
        assert_eq!(all, both);
    }

    #[tokio::test]
    async fn limits_truncate_with_a_line_and_close_the_task() {
        let dir = tempfile::tempdir().unwrap();
        let logs = logs(dir.path(), 10, 15);
        let appended = append(&logs, 0, 0, b"0123456789abc").await.unwrap();
        let message = appended.truncated.expect("truncated at the step limit");
        assert!(message.contains("--max-step-log"), "{message}");
        let log = logs.read("task-1", 0, 0, 1000).await.unwrap();
        assert!(log.starts_with(b"0123456789\n[bosun] this step's log was truncated at 10 bytes"));
        assert_eq!(appended.length, log.len() as u64);
        // The task is closed: later appends are acknowledged, nothing is stored.
        let later = append(&logs, 1, 0, b"more").await.unwrap();
        assert!(later.truncated.is_some());
        assert_eq!(later.length, 0);
        let fresh = self::logs(dir.path(), 10, 15);
        assert!(
            append(&fresh, 1, 0, b"more")
                .await
                .unwrap()
                .truncated
                .is_some()
        );
        assert_eq!(fresh.read("task-1", 1, 0, 10).await.unwrap(), b"");
    }

    #[tokio::test]
    async fn a_job_limit_counts_every_step() {
        let dir = tempfile::tempdir().unwrap();
        let logs = logs(dir.path(), 100, 15);
        assert!(
            append(&logs, 0, 0, b"0123456789")
                .await
                .unwrap()
                .truncated
                .is_none()
        );
        let appended = append(&logs, 1, 0, b"0123456789").await.unwrap();
        assert!(appended.truncated.unwrap().contains("--max-job-log"));
        let log = logs.read("task-1", 1, 0, 1000).await.unwrap();
        assert!(log.starts_with(b"01234\n[bosun] this job's log was truncated"));
    }

    #[tokio::test]
    async fn a_log_of_an_older_version_reads_and_grows() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("logs/task-1")).unwrap();
        std::fs::write(dir.path().join("logs/task-1/0.log"), b"old bytes").unwrap();
        let logs = logs(dir.path(), 1 << 30, 1 << 30);
        assert_eq!(logs.length("task-1", 0).await.unwrap(), 9);
        assert_eq!(append(&logs, 0, 4, b"bytes, new").await.unwrap().length, 14);
        assert!(append(&logs, 0, 0, b"OLD").await.is_err());
        assert_eq!(
            logs.read("task-1", 0, 2, 100).await.unwrap(),
            b"d bytes, new"
        );
    }

    #[test]
    fn bodies_decompress_whether_one_sized_frame_or_not_and_bad_ones_are_refused() {
        let text: Vec<u8> = (0..200_000u32)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        // The launch-agent's body: one frame declaring its size.
        let one = zstd::bulk::compress(&text, 1).unwrap();
        assert_eq!(
            zstd::zstd_safe::get_frame_content_size(&one).ok(),
            Some(Some(text.len() as u64))
        );
        assert_eq!(decompress(Bytes::from(one.clone())).unwrap().bytes, text);
        // Two frames, and a streamed frame that declares no size.
        let mut two = one.clone();
        two.extend(zstd::bulk::compress(b"more\n", 1).unwrap());
        let mut joined = text.clone();
        joined.extend_from_slice(b"more\n");
        assert_eq!(decompress(Bytes::from(two)).unwrap().bytes, joined);
        let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
        std::io::Write::write_all(&mut encoder, &text).unwrap();
        let unsized_frame = encoder.finish().unwrap();
        assert_eq!(
            zstd::zstd_safe::get_frame_content_size(&unsized_frame).ok(),
            Some(None)
        );
        assert_eq!(decompress(Bytes::from(unsized_frame)).unwrap().bytes, text);

        // A frame declaring one byte more than it holds, cut short, or not zstd at all. (A
        // flipped byte of content is not caught: the agent's frames carry no checksum, and
        // the stored log is the agent's word.)
        let mut wrong_size = one.clone();
        let descriptor = wrong_size[4];
        assert_eq!(descriptor >> 6, 2, "a 4-byte content size");
        let single_segment = descriptor & 0x20 != 0;
        let at = 5 + usize::from(!single_segment);
        let declared = u32::from_le_bytes(wrong_size[at..at + 4].try_into().unwrap());
        assert_eq!(u64::from(declared), text.len() as u64);
        wrong_size[at..at + 4].copy_from_slice(&(declared + 1).to_le_bytes());
        for (body, what) in [
            (wrong_size, "declares more than it holds"),
            (one[..one.len() - 10].to_vec(), "cut short"),
            (b"plain text".to_vec(), "not zstd"),
        ] {
            let err = decompress(Bytes::from(body)).err().expect(what);
            assert_eq!(err.status, StatusCode::BAD_REQUEST, "{what}");
            assert!(err.message.contains("zstd"), "{what}: {}", err.message);
        }
        // A frame declaring more than a chunk may hold is refused before anything is
        // allocated for it (its header alone: the magic, a descriptor saying single segment
        // with an 8-byte size, the size).
        let mut huge = vec![0x28, 0xb5, 0x2f, 0xfd, 0xe0];
        huge.extend_from_slice(&(MAX_LOG_CHUNK + 1).to_le_bytes());
        let declared = zstd::zstd_safe::get_frame_content_size(&huge).ok();
        assert_eq!(declared, Some(Some(MAX_LOG_CHUNK + 1)));
        let err = decompress(Bytes::from(huge)).err().expect("too big");
        assert!(err.message.contains("more than"), "{}", err.message);
    }

    #[tokio::test]
    async fn bodies_padded_beyond_their_content_are_recompressed() {
        let dir = tempfile::tempdir().unwrap();
        let logs = logs(dir.path(), 1 << 30, 1 << 30);
        // A skippable frame (magic 0x184D2A50) of 100 KiB ahead of a one-byte frame.
        let mut body = vec![0x50, 0x2a, 0x4d, 0x18];
        body.extend_from_slice(&(100u32 << 10).to_le_bytes());
        body.resize(body.len() + (100 << 10), 0);
        body.extend(zstd::bulk::compress(b"x", 1).unwrap());
        let upload = decompress(Bytes::from(body)).unwrap();
        assert_eq!(upload.bytes, b"x");
        logs.append("task-1", 0, 0, upload).await.unwrap();
        let stored = std::fs::read_dir(dir.path().join("logs/task-1/0"))
            .unwrap()
            .map(|entry| entry.unwrap().metadata().unwrap().len())
            .sum::<u64>();
        assert!(stored < 100, "{stored} bytes stored for one byte of log");
    }
}
