//! The blob store: every byte the server keeps outside SQL (step logs today; caches, workspaces
//! and artifacts next) goes through [`Blobs`], a thin layer over the `object_store` crate.
//!
//! `object_store` is the abstraction: today a [`LocalFileSystem`] rooted at `--blob-dir`
//! (default `DATA_DIR/blobs`), later S3 or another backend behind the same [`ObjectStore`]
//! trait, so the callers here never learn which. Objects are immutable once written: an object
//! is put whole (atomically: the local store writes a staging file and links it into place) and
//! never modified in place, which is what S3 offers too. Step logs, which grow, are therefore
//! stored as a list of immutable chunks (see `logs.rs`).
//!
//! What this layer adds to `object_store`:
//! - [`BlobKey`]: validated keys built by the server from ids (`logs/<task>/<step>/...`),
//!   never from a user's string, so a key cannot climb out of the store or collide with the
//!   local store's staging names (`#`).
//! - Streaming in and out: [`Blobs::put_stream`] takes a stream of byte chunks (an axum body)
//!   with a size limit, computes the size and SHA-256 on the way, and never holds more than a
//!   couple of parts in memory; [`Blobs::get`] answers a stream, optionally of a byte range.
//! - The free-space floor (`--min-free-space`) of the local file system, checked before bytes
//!   are written and cached for a second so the check costs nothing per chunk.
//!
//! Privacy: the server sets umask 077 before the store is opened (`datadir.rs`), and
//! `LocalFileSystem` creates files and directories with the default modes (0666 / 0777) less
//! the umask, so every object is 0600 and every directory 0700 (a test checks it).

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{
    GetOptions, GetRange, GetResultPayload, ObjectStore, ObjectStoreExt, PutMode, PutOptions,
    PutPayload, WriteMultipart,
};
use sha2::{Digest, Sha256};

/// How long a measurement of the free space is trusted (less what was written since).
const FREE_SPACE_TTL: Duration = Duration::from_secs(1);
/// Part size of streamed uploads: S3's smallest multipart part is 5 MiB; bigger parts mean
/// fewer requests, and at most [`UPLOAD_PARTS_IN_FLIGHT`] of them are in memory at once.
const UPLOAD_PART: usize = 8 << 20;
/// Parts of one streamed upload written concurrently.
const UPLOAD_PARTS_IN_FLIGHT: usize = 2;
/// Longest key, and longest segment of a key.
const MAX_KEY_LEN: usize = 1024;
const MAX_SEGMENT_LEN: usize = 255;
/// Where streamed uploads are staged before they are published under their key.
const STAGING_PREFIX: &str = "staging";

/// Where the blobs live, from `--blob-dir DIR` or `--blob-url URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A local directory (`--blob-dir`, `file:///path`).
    Dir(PathBuf),
}

/// A `--blob-url` this build cannot use.
#[derive(Debug, thiserror::Error)]
pub enum LocationError {
    #[error(
        "--blob-url `{0}`: S3-compatible storage is not built into this bosun-server yet; use --blob-dir DIR or file:///DIR"
    )]
    NotBuiltIn(String),
    #[error(
        "--blob-url `{0}`: a file URL names an absolute directory, as file:///var/lib/bosun/blobs"
    )]
    NotAbsolute(String),
    #[error("--blob-url `{0}`: unsupported scheme; use file:///DIR (s3:// comes later)")]
    Scheme(String),
}

impl Location {
    /// Reads a `--blob-url`: `file:///DIR` today; `s3://bucket/prefix` is recognized and refused
    /// with a message saying it is not built in yet.
    pub fn parse_url(url: &str) -> Result<Location, LocationError> {
        if let Some(rest) = url.strip_prefix("file://") {
            // Only local files: `file://host/path` names another machine.
            if !rest.starts_with('/') || rest.contains(['?', '#']) || rest.contains('%') {
                return Err(LocationError::NotAbsolute(url.to_owned()));
            }
            return Ok(Location::Dir(PathBuf::from(rest)));
        }
        let scheme = url.split_once("://").map(|(scheme, _)| scheme);
        match scheme {
            Some("s3" | "s3a" | "gs" | "az" | "abfs" | "http" | "https") => {
                Err(LocationError::NotBuiltIn(url.to_owned()))
            }
            _ => Err(LocationError::Scheme(url.to_owned())),
        }
    }

    /// The local directory, for the data-directory permission checks.
    pub fn dir(&self) -> &Path {
        match self {
            Location::Dir(dir) => dir,
        }
    }
}

/// A blob's key: `/`-separated segments of `[A-Za-z0-9._=-]`, none empty, none starting with
/// `.`, at most [`MAX_KEY_LEN`] bytes. Keys are built from server-chosen ids; a user's string
/// (a cache key, an artifact path) is mapped to a key (hashed or numbered), never used as one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BlobKey(ObjectPath);

impl BlobKey {
    /// Joins validated segments into a key.
    pub fn new<'a>(segments: impl IntoIterator<Item = &'a str>) -> Result<BlobKey, BlobError> {
        let mut joined = String::new();
        for segment in segments {
            if !joined.is_empty() {
                joined.push('/');
            }
            joined.push_str(segment);
        }
        BlobKey::parse(&joined)
    }

    /// Reads a key from its text form (`logs/abc/0/...`).
    pub fn parse(text: &str) -> Result<BlobKey, BlobError> {
        let invalid = |reason: &'static str| BlobError::InvalidKey {
            key: text.chars().take(MAX_KEY_LEN).collect(),
            reason,
        };
        if text.is_empty() {
            return Err(invalid("it is empty"));
        }
        if text.len() > MAX_KEY_LEN {
            return Err(invalid("it is longer than 1024 bytes"));
        }
        for segment in text.split('/') {
            if segment.is_empty() {
                return Err(invalid("it has an empty segment"));
            }
            if segment.len() > MAX_SEGMENT_LEN {
                return Err(invalid("a segment is longer than 255 bytes"));
            }
            if segment.starts_with('.') {
                return Err(invalid("a segment starts with `.`"));
            }
            if !segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'='))
            {
                return Err(invalid(
                    "a segment has a character outside A-Z a-z 0-9 . _ = -",
                ));
            }
        }
        let path = ObjectPath::parse(text).map_err(|_| invalid("object_store refuses it"))?;
        Ok(BlobKey(path))
    }

    /// The key below this one named `segment`.
    pub fn child(&self, segment: &str) -> Result<BlobKey, BlobError> {
        BlobKey::new([self.as_str(), segment])
    }

    pub fn as_str(&self) -> &str {
        self.0.as_ref()
    }

    /// The last segment.
    pub fn name(&self) -> &str {
        self.0.filename().unwrap_or_default()
    }
}

impl std::fmt::Display for BlobKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What went wrong with a blob. Messages name the key, never the directory behind it; the
/// callers decide which of them a client may see.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob key `{key}` is invalid: {reason}")]
    InvalidKey { key: String, reason: &'static str },
    #[error("blob {key} not found")]
    NotFound { key: BlobKey },
    #[error("blob {key} already exists")]
    AlreadyExists { key: BlobKey },
    #[error("blob {key} is larger than the limit of {limit} bytes")]
    TooLarge { key: BlobKey, limit: u64 },
    #[error("range {start}..{end} of blob {key} is past its end ({size} bytes)")]
    BadRange {
        key: BlobKey,
        start: u64,
        end: u64,
        size: u64,
    },
    #[error("the blob store is low on space: {free} bytes free, below its floor of {floor} bytes")]
    LowSpace { free: u64, floor: u64 },
    #[error("reading the upload of blob {key}: {source}")]
    Body {
        key: BlobKey,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("blob store: {operation} {key}: {source}")]
    Store {
        operation: &'static str,
        key: String,
        source: object_store::Error,
    },
}

impl BlobError {
    fn store(operation: &'static str, key: &BlobKey, source: object_store::Error) -> BlobError {
        match source {
            object_store::Error::NotFound { .. } => BlobError::NotFound { key: key.clone() },
            object_store::Error::AlreadyExists { .. } => {
                BlobError::AlreadyExists { key: key.clone() }
            }
            source => BlobError::Store {
                operation,
                key: key.to_string(),
                source,
            },
        }
    }
}

/// One stored object, as a listing or [`Blobs::head`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobMeta {
    pub key: BlobKey,
    /// Stored bytes.
    pub size: u64,
    /// Last modification, milliseconds since the Unix epoch (the unit of the database's times).
    pub modified_ms: i64,
}

/// What a put stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub size: u64,
    pub sha256: [u8; 32],
}

/// Whether a put may replace an object already under its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overwrite {
    /// Replace it (atomically: readers see the old or the new object, never a mix).
    Allowed,
    /// Refuse with [`BlobError::AlreadyExists`] (a cache key is never overwritten; log chunks
    /// are written once).
    Refused,
}

/// A blob being read: its size, the range returned, and the bytes as a stream.
pub struct Download {
    /// Size of the whole object.
    pub size: u64,
    /// The bytes `stream` yields.
    pub range: Range<u64>,
    pub stream: BoxStream<'static, Result<Bytes, BlobError>>,
}

impl std::fmt::Debug for Download {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Download")
            .field("size", &self.size)
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

/// The server's blob store.
pub struct Blobs {
    store: Arc<dyn ObjectStore>,
    /// The local directory behind the store, whose file system's free space is checked.
    local_root: Option<PathBuf>,
    /// Free bytes the file system keeps (`--min-free-space`); 0 turns the check off.
    min_free_space: u64,
    /// When the free space was last measured, and how much was free then less what was written
    /// since. Measured at most once per [`FREE_SPACE_TTL`].
    free: Mutex<Option<(Instant, u64)>>,
}

impl std::fmt::Debug for Blobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blobs")
            .field("store", &self.store.to_string())
            .finish_non_exhaustive()
    }
}

impl Blobs {
    /// Opens the store at `location`, creating a local directory if needed.
    pub fn open(location: &Location, min_free_space: u64) -> std::io::Result<Blobs> {
        match location {
            Location::Dir(dir) => {
                std::fs::create_dir_all(dir)?;
                let store = LocalFileSystem::new_with_prefix(dir)
                    .map_err(std::io::Error::other)?
                    // Deleting the last object of a directory removes the directory, so a
                    // deleted task's log leaves nothing behind.
                    .with_automatic_cleanup(true);
                Ok(Blobs {
                    store: Arc::new(store),
                    local_root: Some(dir.clone()),
                    min_free_space,
                    free: Mutex::new(None),
                })
            }
        }
    }

    /// Stores `bytes` (already in memory, such as a log chunk) under `key`.
    pub async fn put(
        &self,
        key: &BlobKey,
        bytes: Bytes,
        overwrite: Overwrite,
    ) -> Result<Stored, BlobError> {
        self.check_free_space(bytes.len() as u64).await?;
        let stored = Stored {
            size: bytes.len() as u64,
            sha256: Sha256::digest(&bytes).into(),
        };
        let options = PutOptions {
            mode: match overwrite {
                Overwrite::Allowed => PutMode::Overwrite,
                Overwrite::Refused => PutMode::Create,
            },
            ..PutOptions::default()
        };
        self.store
            .put_opts(&key.0, PutPayload::from_bytes(bytes), options)
            .await
            .map_err(|err| BlobError::store("writing", key, err))?;
        self.wrote(stored.size);
        Ok(stored)
    }

    /// Streams `body` into `key`, refusing it once it passes `limit` bytes. The object appears
    /// only once complete: the bytes go to a staging key first and are then moved into place,
    /// so a failed or refused upload leaves nothing under `key`.
    pub async fn put_stream<S, E>(
        &self,
        key: &BlobKey,
        mut body: S,
        limit: u64,
        overwrite: Overwrite,
    ) -> Result<Stored, BlobError>
    where
        S: futures_util::Stream<Item = Result<Bytes, E>> + Unpin + Send,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if overwrite == Overwrite::Refused && self.head(key).await?.is_some() {
            return Err(BlobError::AlreadyExists { key: key.clone() });
        }
        let staging = BlobKey::new([STAGING_PREFIX, &uuid::Uuid::new_v4().simple().to_string()])?;
        let upload = self
            .store
            .put_multipart(&staging.0)
            .await
            .map_err(|err| BlobError::store("starting upload of", key, err))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, UPLOAD_PART);
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let failure = loop {
            let piece = match body.next().await {
                None => break None,
                Some(Ok(piece)) => piece,
                Some(Err(err)) => {
                    break Some(BlobError::Body {
                        key: key.clone(),
                        source: err.into(),
                    });
                }
            };
            size = size.saturating_add(piece.len() as u64);
            if size > limit {
                break Some(BlobError::TooLarge {
                    key: key.clone(),
                    limit,
                });
            }
            if let Err(err) = self.check_free_space(piece.len() as u64).await {
                break Some(err);
            }
            hasher.update(&piece);
            writer.put(piece);
            if let Err(err) = writer.wait_for_capacity(UPLOAD_PARTS_IN_FLIGHT).await {
                break Some(BlobError::store("writing", key, err));
            }
        };
        if let Some(failure) = failure {
            if let Err(err) = writer.abort().await {
                tracing::warn!("aborting the upload of blob {key}: {err}");
            }
            return Err(failure);
        }
        writer
            .finish()
            .await
            .map_err(|err| BlobError::store("writing", key, err))?;
        self.wrote(size);
        let published = match overwrite {
            Overwrite::Allowed => self.store.rename(&staging.0, &key.0).await,
            Overwrite::Refused => self.store.rename_if_not_exists(&staging.0, &key.0).await,
        };
        if let Err(err) = published {
            let _ = self.store.delete(&staging.0).await;
            return Err(BlobError::store("publishing", key, err));
        }
        Ok(Stored {
            size,
            sha256: hasher.finalize().into(),
        })
    }

    /// Reads `key`, all of it or the bytes in `range` (which may end past the object's end; it
    /// may not start past it).
    pub async fn get(
        &self,
        key: &BlobKey,
        range: Option<Range<u64>>,
    ) -> Result<Download, BlobError> {
        if let Some(range) = &range {
            if range.start >= range.end {
                // `object_store` refuses empty ranges; an empty read at or before the end is
                // how a follower learns it caught up.
                let meta = self
                    .head(key)
                    .await?
                    .ok_or_else(|| BlobError::NotFound { key: key.clone() })?;
                if range.start > meta.size {
                    return Err(BlobError::BadRange {
                        key: key.clone(),
                        start: range.start,
                        end: range.end,
                        size: meta.size,
                    });
                }
                return Ok(Download {
                    size: meta.size,
                    range: range.start..range.start,
                    stream: futures_util::stream::empty().boxed(),
                });
            }
        }
        let options = GetOptions {
            range: range.clone().map(GetRange::Bounded),
            ..GetOptions::default()
        };
        let result = match self.store.get_opts(&key.0, options).await {
            Ok(result) => result,
            Err(object_store::Error::Generic { .. }) if range.is_some() => {
                // A range starting past the end: say so with the object's size.
                let meta = self
                    .head(key)
                    .await?
                    .ok_or_else(|| BlobError::NotFound { key: key.clone() })?;
                let range = range.unwrap_or_default();
                return Err(BlobError::BadRange {
                    key: key.clone(),
                    start: range.start,
                    end: range.end,
                    size: meta.size,
                });
            }
            Err(err) => return Err(BlobError::store("reading", key, err)),
        };
        let size = result.meta.size;
        let returned = result.range.clone();
        let stream = match result.payload {
            // `into_stream` reads a local file 8 KiB per blocking call, which costs more than the
            // read; a bigger buffer keeps a local download near the disk's speed.
            GetResultPayload::File(file, _) => file_stream(file, key.clone(), returned.clone()),
            GetResultPayload::Stream(stream) => {
                let stream_key = key.clone();
                stream
                    .map_err(move |err| BlobError::store("reading", &stream_key, err))
                    .boxed()
            }
        };
        Ok(Download {
            size,
            range: returned,
            stream,
        })
    }

    /// Reads a whole object that the caller knows is small (a log chunk), refusing one larger
    /// than `max` bytes before reading it.
    pub async fn get_bytes(&self, key: &BlobKey, max: u64) -> Result<Bytes, BlobError> {
        let result = self
            .store
            .get_opts(&key.0, GetOptions::default())
            .await
            .map_err(|err| BlobError::store("reading", key, err))?;
        if result.meta.size > max {
            return Err(BlobError::TooLarge {
                key: key.clone(),
                limit: max,
            });
        }
        // One read of the whole (small) object.
        result
            .bytes()
            .await
            .map_err(|err| BlobError::store("reading", key, err))
    }

    /// The object under `key`, if there is one.
    pub async fn head(&self, key: &BlobKey) -> Result<Option<BlobMeta>, BlobError> {
        match self.store.head(&key.0).await {
            Ok(meta) => Ok(Some(BlobMeta {
                key: key.clone(),
                size: meta.size,
                modified_ms: meta.last_modified.timestamp_millis(),
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(err) => Err(BlobError::store("reading", key, err)),
        }
    }

    /// Deletes `key`; deleting a missing object is not an error (a retried sweep).
    pub async fn delete(&self, key: &BlobKey) -> Result<(), BlobError> {
        match self.store.delete(&key.0).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(BlobError::store("deleting", key, err)),
        }
    }

    /// Every object whose key starts with the segments of `prefix` (`logs/<task>` lists
    /// `logs/<task>/...`, not `logs/<task>2/...`), in no particular order.
    pub fn list(&self, prefix: &BlobKey) -> BoxStream<'static, Result<BlobMeta, BlobError>> {
        let prefix_text = prefix.to_string();
        self.store
            .list(Some(&prefix.0))
            .map(move |entry| {
                let meta = entry.map_err(|source| BlobError::Store {
                    operation: "listing",
                    key: prefix_text.clone(),
                    source,
                })?;
                Ok(BlobMeta {
                    key: BlobKey::parse(meta.location.as_ref())?,
                    size: meta.size,
                    modified_ms: meta.last_modified.timestamp_millis(),
                })
            })
            .boxed()
    }

    /// Deletes every object under `prefix`; answers how many there were.
    pub async fn delete_prefix(&self, prefix: &BlobKey) -> Result<u64, BlobError> {
        let mut listing = self.list(prefix);
        let mut deleted = 0u64;
        while let Some(meta) = listing.next().await {
            self.delete(&meta?.key).await?;
            deleted += 1;
        }
        Ok(deleted)
    }

    /// Deletes streamed uploads left in the staging area by a server that died mid-upload,
    /// those last written more than `older_than` ago; answers how many. One server calls it at
    /// start with zero (nothing of its own is in flight yet); replicas sharing a store would
    /// pass the longest upload they allow.
    pub async fn sweep_staging(&self, older_than: Duration) -> Result<u64, BlobError> {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as i64;
        let cutoff = now_ms - older_than.as_millis() as i64;
        let mut listing = self.list(&BlobKey::parse(STAGING_PREFIX)?);
        let mut deleted = 0;
        while let Some(meta) = listing.next().await {
            let meta = meta?;
            if meta.modified_ms <= cutoff {
                self.delete(&meta.key).await?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// Refuses to write `need` more bytes when that would leave less than the floor free.
    pub async fn check_free_space(&self, need: u64) -> Result<(), BlobError> {
        let Some(root) = &self.local_root else {
            return Ok(());
        };
        if self.min_free_space == 0 {
            return Ok(());
        }
        let cached = *self.free.lock().unwrap_or_else(|e| e.into_inner());
        let free = match cached {
            Some((at, free)) if at.elapsed() < FREE_SPACE_TTL => free,
            _ => {
                let root = root.clone();
                let measured = tokio::task::spawn_blocking(move || free_bytes(&root)).await;
                let free = match measured {
                    Ok(Ok(free)) => free,
                    Ok(Err(err)) => {
                        // A file system that cannot say (some network mounts) is not a reason to
                        // stop every job; the warning repeats at most once per TTL.
                        tracing::warn!("cannot measure the blob directory's free space: {err}");
                        u64::MAX
                    }
                    Err(err) => {
                        tracing::warn!("measuring the blob directory's free space failed: {err}");
                        u64::MAX
                    }
                };
                *self.free.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), free));
                free
            }
        };
        if free.saturating_sub(need) < self.min_free_space {
            return Err(BlobError::LowSpace {
                free,
                floor: self.min_free_space,
            });
        }
        Ok(())
    }

    fn wrote(&self, bytes: u64) {
        if let Some((_, free)) = self.free.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            *free = free.saturating_sub(bytes);
        }
    }
}

/// Bytes of a local download read per blocking call.
const READ_PIECE: usize = 256 << 10;

/// `range` of a local file as a stream, [`READ_PIECE`] bytes per blocking read.
fn file_stream(
    file: std::fs::File,
    key: BlobKey,
    range: Range<u64>,
) -> BoxStream<'static, Result<Bytes, BlobError>> {
    futures_util::stream::try_unfold(
        (file, range.start, range.end, key),
        |(mut file, at, end, key)| async move {
            if at >= end {
                return Ok(None);
            }
            let want = (end - at).min(READ_PIECE as u64);
            let read_key = key.clone();
            let read = tokio::task::spawn_blocking(move || {
                use std::io::{Read, Seek, SeekFrom};
                let mut buffer = Vec::with_capacity(want as usize);
                file.seek(SeekFrom::Start(at))?;
                (&mut file).take(want).read_to_end(&mut buffer)?;
                Ok::<_, std::io::Error>((file, buffer))
            })
            .await;
            let (file, buffer) = match read {
                Ok(Ok(done)) => done,
                Ok(Err(err)) => return Err(local_read_error(&read_key, err)),
                Err(err) => return Err(local_read_error(&read_key, std::io::Error::other(err))),
            };
            if buffer.is_empty() {
                // The file shrank under us: objects are immutable, so it was replaced or cut.
                return Err(local_read_error(
                    &read_key,
                    std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
                ));
            }
            let next = at + buffer.len() as u64;
            Ok(Some((Bytes::from(buffer), (file, next, end, key))))
        },
    )
    .boxed()
}

fn local_read_error(key: &BlobKey, err: std::io::Error) -> BlobError {
    BlobError::Store {
        operation: "reading",
        key: key.to_string(),
        source: object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(err),
        },
    }
}

/// Bytes available to unprivileged writers on the file system holding `dir`.
fn free_bytes(dir: &Path) -> nix::Result<u64> {
    let stat = nix::sys::statvfs::statvfs(dir)?;
    #[allow(clippy::useless_conversion)] // The field types differ between targets.
    let free = u64::from(stat.blocks_available()).saturating_mul(u64::from(stat.fragment_size()));
    Ok(free)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn store(dir: &Path) -> Blobs {
        Blobs::open(&Location::Dir(dir.to_owned()), 0).unwrap()
    }

    fn key(text: &str) -> BlobKey {
        BlobKey::parse(text).unwrap()
    }

    async fn read_all(download: Download) -> Vec<u8> {
        download
            .stream
            .try_fold(Vec::new(), |mut out, piece| async move {
                out.extend_from_slice(&piece);
                Ok(out)
            })
            .await
            .unwrap()
    }

    fn pieces(
        data: &[u8],
        size: usize,
    ) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Unpin + Send + use<>
    {
        let owned: Vec<Result<Bytes, std::io::Error>> = data
            .chunks(size)
            .map(|piece| Ok(Bytes::copy_from_slice(piece)))
            .collect();
        futures_util::stream::iter(owned)
    }

    #[test]
    fn keys_are_validated() {
        assert_eq!(key("logs/abc/0/x.zst").as_str(), "logs/abc/0/x.zst");
        assert_eq!(key("a/b").name(), "b");
        for bad in [
            "", "a//b", "/a", "a/", "../a", "a/.b", "a/b#1", "a b", "a/ü", "a\\b",
        ] {
            assert!(BlobKey::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(BlobKey::parse(&"a".repeat(256)).is_err());
        assert_eq!(
            BlobKey::new(["caches", "p1", "k"]).unwrap(),
            key("caches/p1/k")
        );
    }

    #[test]
    fn blob_urls_accept_files_and_refuse_s3_clearly() {
        assert_eq!(
            Location::parse_url("file:///var/lib/bosun/blobs").unwrap(),
            Location::Dir(PathBuf::from("/var/lib/bosun/blobs"))
        );
        assert!(Location::parse_url("file://host/blobs").is_err());
        let s3 = Location::parse_url("s3://bucket/prefix").unwrap_err();
        assert!(s3.to_string().contains("not built into"), "{s3}");
        assert!(Location::parse_url("ftp://x/y").is_err());
    }

    #[tokio::test]
    async fn put_get_range_head_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = store(dir.path());
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let stored = blobs
            .put(&key("a/one"), Bytes::from(data.clone()), Overwrite::Refused)
            .await
            .unwrap();
        assert_eq!(stored.size, data.len() as u64);
        assert_eq!(stored.sha256, <[u8; 32]>::from(Sha256::digest(&data)));

        let whole = blobs.get(&key("a/one"), None).await.unwrap();
        assert_eq!(whole.size, data.len() as u64);
        assert_eq!(read_all(whole).await, data);
        let part = blobs.get(&key("a/one"), Some(1000..5000)).await.unwrap();
        assert_eq!(part.range, 1000..5000);
        assert_eq!(read_all(part).await, &data[1000..5000]);
        let tail = blobs
            .get(&key("a/one"), Some(199_990..300_000))
            .await
            .unwrap();
        assert_eq!(read_all(tail).await, &data[199_990..]);
        let at_end = blobs
            .get(&key("a/one"), Some(200_000..200_000))
            .await
            .unwrap();
        assert!(read_all(at_end).await.is_empty());
        assert!(matches!(
            blobs.get(&key("a/one"), Some(200_001..200_002)).await,
            Err(BlobError::BadRange { size: 200_000, .. })
        ));
        assert!(matches!(
            blobs.get(&key("a/missing"), None).await,
            Err(BlobError::NotFound { .. })
        ));

        assert!(matches!(
            blobs
                .put(&key("a/one"), Bytes::from_static(b"x"), Overwrite::Refused)
                .await,
            Err(BlobError::AlreadyExists { .. })
        ));
        blobs
            .put(&key("a/two"), Bytes::from_static(b"xy"), Overwrite::Refused)
            .await
            .unwrap();
        blobs
            .put(
                &key("ab/three"),
                Bytes::from_static(b"z"),
                Overwrite::Refused,
            )
            .await
            .unwrap();
        let head = blobs.head(&key("a/two")).await.unwrap().unwrap();
        assert_eq!(head.size, 2);
        assert!(head.modified_ms > 1_600_000_000_000);
        assert_eq!(blobs.head(&key("a/none")).await.unwrap(), None);

        let mut listed: Vec<(String, u64)> = blobs
            .list(&key("a"))
            .map_ok(|meta| (meta.key.to_string(), meta.size))
            .try_collect()
            .await
            .unwrap();
        listed.sort();
        assert_eq!(
            listed,
            vec![("a/one".to_owned(), 200_000), ("a/two".to_owned(), 2)]
        );

        blobs.delete(&key("a/one")).await.unwrap();
        blobs.delete(&key("a/one")).await.unwrap();
        assert_eq!(blobs.head(&key("a/one")).await.unwrap(), None);
        assert_eq!(blobs.delete_prefix(&key("a")).await.unwrap(), 1);
        assert_eq!(blobs.head(&key("ab/three")).await.unwrap().unwrap().size, 1);
        assert!(
            !dir.path().join("a").exists(),
            "an emptied directory is removed"
        );
    }

    #[tokio::test]
    async fn streamed_puts_hash_bound_and_publish_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = store(dir.path());
        let data: Vec<u8> = (0..(20u32 << 20)).map(|i| (i * 7 % 253) as u8).collect();
        let stored = blobs
            .put_stream(
                &key("caches/p/k1"),
                pieces(&data, 100_000),
                data.len() as u64,
                Overwrite::Refused,
            )
            .await
            .unwrap();
        assert_eq!(stored.size, data.len() as u64);
        assert_eq!(stored.sha256, <[u8; 32]>::from(Sha256::digest(&data)));
        let read = blobs.get(&key("caches/p/k1"), None).await.unwrap();
        assert_eq!(read_all(read).await, data);

        // An existing key is kept.
        assert!(matches!(
            blobs
                .put_stream(
                    &key("caches/p/k1"),
                    pieces(b"other", 2),
                    100,
                    Overwrite::Refused
                )
                .await,
            Err(BlobError::AlreadyExists { .. })
        ));
        let replaced = blobs
            .put_stream(
                &key("caches/p/k1"),
                pieces(b"other", 2),
                100,
                Overwrite::Allowed,
            )
            .await
            .unwrap();
        assert_eq!(replaced.size, 5);

        // Too large, or a failing body: nothing is published, and no staging file is left.
        assert!(matches!(
            blobs
                .put_stream(
                    &key("caches/p/k2"),
                    pieces(&data, 65536),
                    1 << 20,
                    Overwrite::Refused
                )
                .await,
            Err(BlobError::TooLarge { limit: 1048576, .. })
        ));
        let failing = futures_util::stream::iter(vec![
            Ok(Bytes::from_static(b"abc")),
            Err(std::io::Error::other("connection reset")),
        ]);
        assert!(matches!(
            blobs
                .put_stream(&key("caches/p/k3"), failing, 100, Overwrite::Refused)
                .await,
            Err(BlobError::Body { .. })
        ));
        assert_eq!(blobs.head(&key("caches/p/k2")).await.unwrap(), None);
        assert_eq!(blobs.head(&key("caches/p/k3")).await.unwrap(), None);
        let staged: Vec<BlobMeta> = blobs
            .list(&key(STAGING_PREFIX))
            .try_collect()
            .await
            .unwrap();
        assert!(staged.is_empty(), "{staged:?}");

        // What a server that died mid-upload leaves is swept at the next start.
        blobs
            .put(
                &key("staging/left-over"),
                Bytes::from_static(b"x"),
                Overwrite::Refused,
            )
            .await
            .unwrap();
        assert_eq!(
            blobs
                .sweep_staging(Duration::from_secs(3600))
                .await
                .unwrap(),
            0
        );
        assert_eq!(blobs.sweep_staging(Duration::ZERO).await.unwrap(), 1);
        assert_eq!(
            blobs.head(&key("caches/p/k1")).await.unwrap().unwrap().size,
            5
        );
    }

    #[tokio::test]
    async fn an_axum_request_body_streams_into_a_blob() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = store(dir.path());
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 199) as u8).collect();
        let body = axum::body::Body::from_stream(pieces(&data, 8192));
        let stored = blobs
            .put_stream(
                &key("artifacts/job-1/0"),
                body.into_data_stream(),
                10 << 20,
                Overwrite::Refused,
            )
            .await
            .unwrap();
        assert_eq!(stored.size, data.len() as u64);
        let read = blobs
            .get(&key("artifacts/job-1/0"), Some(5..2_500_000))
            .await;
        assert_eq!(read_all(read.unwrap()).await, &data[5..2_500_000]);
    }

    #[tokio::test]
    async fn objects_are_private_under_the_servers_umask() {
        // The server's umask (datadir.rs); setting it here only makes this process stricter.
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("blobs");
        let blobs = store(&root);
        blobs
            .put(
                &key("logs/t/0/c"),
                Bytes::from_static(b"x"),
                Overwrite::Refused,
            )
            .await
            .unwrap();
        blobs
            .put_stream(
                &key("caches/p/k"),
                pieces(b"abc", 1),
                10,
                Overwrite::Refused,
            )
            .await
            .unwrap();
        let mode = |path: PathBuf| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(root.clone()), 0o700);
        assert_eq!(mode(root.join("logs/t/0")), 0o700);
        assert_eq!(mode(root.join("logs/t/0/c")), 0o600);
        assert_eq!(mode(root.join("caches/p/k")), 0o600);
    }

    #[tokio::test]
    async fn the_free_space_floor_refuses_writes() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::open(&Location::Dir(dir.path().to_owned()), u64::MAX / 2).unwrap();
        assert!(matches!(
            blobs
                .put(&key("a"), Bytes::from_static(b"x"), Overwrite::Refused)
                .await,
            Err(BlobError::LowSpace { .. })
        ));
        assert_eq!(blobs.head(&key("a")).await.unwrap(), None);
    }
}
