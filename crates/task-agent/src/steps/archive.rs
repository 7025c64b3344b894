//! The archives of caches and workspace layers: tar compressed with zstd, streamed both ways.
//!
//! Creating: [`create`] walks its [`Source`]s (never following a symlink: a link is stored as a
//! link) and writes tar into a multithreaded zstd encoder (level 1, a content checksum) that
//! writes into a [`ChannelWriter`]: chunks of [`CHUNK`] bytes on a channel of [`PIPE_CHUNKS`],
//! which the step's async side sends with `Upload::write`. It runs in `spawn_blocking`; when the
//! upload stops (the key exists, a cancel), the channel closes and the walk ends at its next
//! write. Nothing is buffered beyond those few chunks and zstd's own window.
//!
//! Unpacking: the step feeds download chunks into a [`ChannelReader`] that an [`Unpacker`]
//! reads in `spawn_blocking` through zstd and tar. The unpacker writes only beneath its roots:
//! it refuses absolute names, `..`, hard links, devices and fifos, symlinks whose target leaves
//! the root, and never goes through a symlink that is on disk (each parent directory is checked
//! with `lstat`, and files are created with `O_EXCL`, so a final symlink is never followed
//! either). Limits on entries ([`MAX_ENTRIES`]), path length ([`MAX_PATH_LEN`]) and bytes
//! ([`MAX_RESTORED_BYTES`]) are errors naming them. On any error (a corrupt or truncated
//! archive: zstd's checksum, a bad tar header, a stream that ended early; a refusal; a limit)
//! the unpacker removes what it wrote, without following symlinks, so a failed restore leaves
//! no half-restored tree behind; it keeps only the topmost entry of each tree it created, so
//! that record stays small.
//!
//! Names in an archive: a workspace layer's are relative to the persisted `root`. A cache's
//! start with a root marker, so that they restore relative to the new task's directories:
//! `wd/...` (the working directory), `home/...` (`$HOME`) and `abs/...` (anything else,
//! restored at that absolute path, as CircleCI does).

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, BufRead, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Buf, Bytes, BytesMut};
use tokio::sync::mpsc;

/// Bytes per chunk between the archiver and the step's async side.
pub const CHUNK: usize = 256 << 10;
/// Chunks that may wait between the archiver and the socket, either way: with [`CHUNK`], 1 MiB.
pub const PIPE_CHUNKS: usize = 4;
/// Most entries (files, directories, links) one archive may hold, creating or unpacking.
pub const MAX_ENTRIES: u64 = 1_000_000;
/// Longest entry name or symlink target, in bytes (Linux's `PATH_MAX`).
pub const MAX_PATH_LEN: usize = 4096;
/// Most bytes of file contents one step restores (all layers of an attach together).
pub const MAX_RESTORED_BYTES: u64 = 64 << 30;

/// zstd level: the fastest, as the issue asks; caches are mostly compressed once and read often.
const LEVEL: i32 = 1;
/// Most zstd worker threads: each holds about two jobs of [`JOB_SIZE`], so this bounds the
/// compressor's memory whatever the machine's core count.
const MAX_THREADS: u32 = 8;
/// zstd's job size with workers. Its default at level 1 is 2 MiB; 1 MiB halves the memory per
/// worker and costs little ratio (each job still sees the previous one's tail).
const JOB_SIZE: u32 = 1 << 20;
/// Largest zstd window a decoder accepts (8 MiB; level 1 uses 512 KiB): a crafted archive
/// cannot make the task-agent allocate more.
const WINDOW_LOG_MAX: u32 = 23;
/// Copy buffer for file contents while unpacking.
const COPY_BUFFER: usize = 128 << 10;
/// Most skipped paths (sockets, devices) a [`Created`] names.
const MAX_SKIPPED_NAMED: usize = 20;

/// What went wrong with an archive.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The bytes do not decode: zstd (its checksum), tar, or a stream that ended early.
    #[error("corrupt or incomplete archive: {0}")]
    Corrupt(String),
    #[error("refused the entry `{path}`: {reason}")]
    Refused { path: String, reason: String },
    #[error("{what} is over the limit of {limit}")]
    Limit { what: String, limit: String },
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// Two workspace layers of jobs that do not depend on each other hold the same path.
    #[error(
        "Concurrent upstream jobs persisted the same file(s) into the workspace: `{path}` by both `{first}` and `{second}`"
    )]
    Conflict {
        path: String,
        first: String,
        second: String,
    },
    /// The other side stopped (the upload was answered, the step was canceled).
    #[error("the transfer was interrupted")]
    Interrupted,
}

impl ArchiveError {
    fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ArchiveError + 'a {
        move |source| ArchiveError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }

    fn refused(path: &[u8], reason: impl Into<String>) -> ArchiveError {
        ArchiveError::Refused {
            path: shorten(path),
            reason: reason.into(),
        }
    }
}

/// At most 200 bytes of `name`, for messages.
fn shorten(name: &[u8]) -> String {
    let text = String::from_utf8_lossy(name);
    if text.len() <= 200 {
        return text.into_owned();
    }
    let mut end = 200;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// One thing to archive: `path` on disk (a file, a symlink, or a directory added recursively),
/// stored as `name`. An empty `name` stores a directory's contents without the directory itself.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: PathBuf,
    pub name: PathBuf,
}

/// What [`create`] archived.
#[derive(Debug, Default, Clone)]
pub struct Created {
    /// Files, directories and symlinks.
    pub entries: u64,
    pub files: u64,
    /// Bytes of file contents (before compression).
    pub bytes: u64,
    /// Sockets, fifos and devices, which are not archived (the first [`MAX_SKIPPED_NAMED`]).
    pub skipped: Vec<PathBuf>,
    pub skipped_count: u64,
}

/// The number of zstd workers: the cores this process may use, at most [`MAX_THREADS`].
pub fn threads() -> u32 {
    std::thread::available_parallelism()
        .map(|cores| cores.get() as u32)
        .unwrap_or(1)
        .clamp(1, MAX_THREADS)
}

/// Archives `sources`, in order, into `out`. Blocking: run it in `spawn_blocking`.
pub fn create(sources: &[Source], out: ChannelWriter) -> Result<Created, ArchiveError> {
    let closed = out.closed.clone();
    let result = create_into(sources, out);
    // Whatever failed, a closed channel means the reader stopped first: that is the cause.
    match result {
        Err(_) if closed.load(Ordering::SeqCst) => Err(ArchiveError::Interrupted),
        other => other,
    }
}

fn create_into<W: Write>(sources: &[Source], out: W) -> Result<Created, ArchiveError> {
    let zstd_error = |source: io::Error| ArchiveError::Io {
        action: "set up zstd for",
        path: PathBuf::from("the archive"),
        source,
    };
    let mut encoder = zstd::stream::write::Encoder::new(out, LEVEL).map_err(zstd_error)?;
    encoder.include_checksum(true).map_err(zstd_error)?;
    let workers = threads();
    if workers > 1 {
        encoder.multithread(workers).map_err(zstd_error)?;
        encoder
            .set_parameter(zstd::stream::raw::CParameter::JobSize(JOB_SIZE))
            .map_err(zstd_error)?;
    }
    let mut builder = tar::Builder::new(encoder);
    let mut created = Created::default();
    for source in sources {
        append_tree(&mut builder, source, &mut created)?;
    }
    let finish = |source| ArchiveError::Io {
        action: "finish",
        path: PathBuf::from("the archive"),
        source,
    };
    let encoder = builder.into_inner().map_err(finish)?;
    let mut out = encoder.finish().map_err(finish)?;
    out.flush().map_err(finish)?;
    Ok(created)
}

/// Appends `source` and, for a directory, everything beneath it in depth-first order (each
/// directory's entries sorted by name), without following symlinks.
fn append_tree<W: Write>(
    builder: &mut tar::Builder<W>,
    source: &Source,
    created: &mut Created,
) -> Result<(), ArchiveError> {
    let meta =
        fs::symlink_metadata(&source.path).map_err(ArchiveError::io("read", &source.path))?;
    if !source.name.as_os_str().is_empty() || !meta.is_dir() {
        append_one(builder, &source.path, &source.name, &meta, created)?;
    }
    if !meta.is_dir() {
        return Ok(());
    }
    let mut stack = vec![(
        source.path.clone(),
        source.name.clone(),
        sorted_names(&source.path)?,
    )];
    while let Some((dir, name, children)) = stack.last_mut() {
        let Some(child) = children.next() else {
            stack.pop();
            continue;
        };
        let path = dir.join(&child);
        let child_name = name.join(&child);
        let meta = match fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            // Removed since the directory was listed: nothing to store.
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(err) => return Err(ArchiveError::io("read", &path)(err)),
        };
        append_one(builder, &path, &child_name, &meta, created)?;
        if meta.is_dir() {
            let names = sorted_names(&path)?;
            stack.push((path, child_name, names));
        }
    }
    Ok(())
}

fn sorted_names(dir: &Path) -> Result<std::vec::IntoIter<OsString>, ArchiveError> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(ArchiveError::io("list", dir))? {
        names.push(entry.map_err(ArchiveError::io("list", dir))?.file_name());
    }
    names.sort();
    Ok(names.into_iter())
}

fn append_one<W: Write>(
    builder: &mut tar::Builder<W>,
    path: &Path,
    name: &Path,
    meta: &fs::Metadata,
    created: &mut Created,
) -> Result<(), ArchiveError> {
    let kind = meta.file_type();
    if !(kind.is_dir() || kind.is_file() || kind.is_symlink()) {
        created.skipped_count += 1;
        if created.skipped.len() < MAX_SKIPPED_NAMED {
            created.skipped.push(path.to_path_buf());
        }
        return Ok(());
    }
    created.entries += 1;
    if created.entries > MAX_ENTRIES {
        return Err(ArchiveError::Limit {
            what: "the number of entries in the archive".into(),
            limit: format!("{MAX_ENTRIES} entries"),
        });
    }
    if name.as_os_str().len() > MAX_PATH_LEN {
        return Err(ArchiveError::Limit {
            what: format!("the path `{}`", shorten(name.as_os_str().as_bytes())),
            limit: format!("{MAX_PATH_LEN} bytes"),
        });
    }
    let write_error = ArchiveError::io("archive", path);
    let mut header = tar::Header::new_gnu();
    header.set_metadata_in_mode(meta, tar::HeaderMode::Complete);
    if kind.is_symlink() {
        let target = fs::read_link(path).map_err(ArchiveError::io("read the symlink", path))?;
        if target.as_os_str().len() > MAX_PATH_LEN {
            return Err(ArchiveError::Limit {
                what: format!("the target of the symlink {}", path.display()),
                limit: format!("{MAX_PATH_LEN} bytes"),
            });
        }
        header.set_size(0);
        builder
            .append_link(&mut header, name, &target)
            .map_err(write_error)
    } else if kind.is_dir() {
        header.set_size(0);
        builder
            .append_data(&mut header, name, io::empty())
            .map_err(write_error)
    } else {
        // `O_NOFOLLOW`: a file swapped for a symlink since the walk is refused, not followed.
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(path)
            .map_err(ArchiveError::io("open", path))?;
        let meta = file.metadata().map_err(ArchiveError::io("read", path))?;
        let size = meta.len();
        header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
        header.set_size(size);
        created.files += 1;
        created.bytes += size;
        // The header promised `size` bytes: a file that shrinks meanwhile is padded with zeros
        // and one that grows is cut, so the archive stays well-formed.
        let reader = ReadFailure::new(file.take(size))
            .chain(io::repeat(0))
            .take(size);
        builder
            .append_data(&mut header, name, reader)
            .map_err(write_error)
    }
}

/// A reader whose errors keep their kind but say they come from reading the file (the tar
/// builder reports reading and writing errors alike).
struct ReadFailure<R>(R);

impl<R> ReadFailure<R> {
    fn new(reader: R) -> ReadFailure<R> {
        ReadFailure(reader)
    }
}

impl<R: Read> Read for ReadFailure<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0
            .read(buf)
            .map_err(|err| io::Error::new(err.kind(), format!("reading it: {err}")))
    }
}

/// The archiver's output: chunks of [`CHUNK`] bytes sent on a bounded channel. When the
/// receiver is gone, writes fail with `BrokenPipe` and the archiver stops.
#[derive(Debug)]
pub struct ChannelWriter {
    tx: mpsc::Sender<Bytes>,
    buf: BytesMut,
    closed: Arc<AtomicBool>,
}

impl ChannelWriter {
    pub fn new(tx: mpsc::Sender<Bytes>) -> ChannelWriter {
        ChannelWriter {
            tx,
            buf: BytesMut::with_capacity(CHUNK),
            closed: Arc::new(AtomicBool::new(false)),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.buf.reserve(CHUNK);
        self.tx.blocking_send(chunk).map_err(|_| {
            self.closed.store(true, Ordering::SeqCst);
            io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped")
        })
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let taken = data.len().min(room);
        self.buf.extend_from_slice(&data[..taken]);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// One piece of a download for the unpacker.
#[derive(Debug)]
pub enum Piece {
    Data(Bytes),
    /// The download's last byte came: the stream ended cleanly.
    End,
    /// The stream ended with an error; what came is incomplete.
    Failed(String),
}

/// The unpacker's input: the pieces of a download. A channel closed without [`Piece::End`]
/// (the step stopped feeding it) reads as an interruption.
#[derive(Debug)]
pub struct ChannelReader {
    rx: mpsc::Receiver<Piece>,
    current: Bytes,
    ended: bool,
    interrupted: Arc<AtomicBool>,
}

impl ChannelReader {
    pub fn new(rx: mpsc::Receiver<Piece>) -> ChannelReader {
        ChannelReader {
            rx,
            current: Bytes::new(),
            ended: false,
            interrupted: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let taken = available.len().min(buf.len());
        buf[..taken].copy_from_slice(&available[..taken]);
        self.consume(taken);
        Ok(taken)
    }
}

impl BufRead for ChannelReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.current.is_empty() && !self.ended {
            match self.rx.blocking_recv() {
                Some(Piece::Data(bytes)) => self.current = bytes,
                Some(Piece::End) => self.ended = true,
                Some(Piece::Failed(message)) => {
                    return Err(io::Error::other(format!("the download failed: {message}")));
                }
                None => {
                    self.interrupted.store(true, Ordering::SeqCst);
                    return Err(io::Error::other("the download was interrupted"));
                }
            }
        }
        Ok(&self.current)
    }

    fn consume(&mut self, amount: usize) {
        self.current.advance(amount);
    }
}

/// Where an archive's names land.
#[derive(Debug, Clone)]
pub enum Layout {
    /// Names start with `wd/`, `home/` or `abs/`.
    Cache { working_dir: PathBuf, home: PathBuf },
    /// Names are relative to `at`.
    Workspace { at: PathBuf },
}

/// The job that persisted a workspace layer, for the conflict rule.
#[derive(Debug, Clone)]
pub struct LayerOwner {
    pub job_name: String,
    /// The jobs `job_name` requires, directly or not.
    pub requires: Vec<String>,
}

/// The limits an [`Unpacker`] enforces; [`Limits::default`] is [`MAX_ENTRIES`],
/// [`MAX_PATH_LEN`] and [`MAX_RESTORED_BYTES`].
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub entries: u64,
    pub path_len: usize,
    pub bytes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            entries: MAX_ENTRIES,
            path_len: MAX_PATH_LEN,
            bytes: MAX_RESTORED_BYTES,
        }
    }
}

/// What an [`Unpacker`] restored so far.
#[derive(Debug, Default, Clone, Copy)]
pub struct Unpacked {
    pub entries: u64,
    pub files: u64,
    pub bytes: u64,
}

/// A directory whose mode and mtime are set once its entries are written.
#[derive(Debug)]
struct OpenDir {
    path: PathBuf,
    mode: u32,
    mtime: u64,
}

/// Unpacks archives under a [`Layout`], one or several (the layers of an attach), and removes
/// what it wrote when one fails.
#[derive(Debug)]
pub struct Unpacker {
    layout: Layout,
    /// Absolute symlink targets are allowed (caches: virtualenvs link to the system's
    /// interpreter, and a cache may name absolute paths itself). Unpacking never writes through
    /// a symlink, so such a link cannot make it write outside its root.
    absolute_links: bool,
    /// What this unpacker wrote that did not exist before, or replaced, topmost first: removed
    /// when unpacking fails. An entry beneath a directory created here is not listed.
    written: Vec<PathBuf>,
    /// The parent directories of the last entry, checked: each path and whether it was
    /// created here.
    checked: Vec<(PathBuf, bool)>,
    /// Directories made here, entered and not yet left, outermost first.
    open_dirs: Vec<OpenDir>,
    /// For the workspace conflict rule: which layer (an index into `owners`) wrote each file.
    writers: HashMap<PathBuf, usize>,
    owners: Vec<LayerOwner>,
    limits: Limits,
    pub unpacked: Unpacked,
}

/// Where one entry goes.
struct Target {
    base: PathBuf,
    /// The components beneath `base`; empty for `base` itself.
    parts: Vec<OsString>,
}

impl Target {
    fn path(&self) -> PathBuf {
        let mut path = self.base.clone();
        path.extend(&self.parts);
        path
    }
}

impl Unpacker {
    pub fn new(layout: Layout) -> Unpacker {
        let absolute_links = matches!(layout, Layout::Cache { .. });
        Unpacker {
            layout,
            absolute_links,
            written: Vec::new(),
            checked: Vec::new(),
            open_dirs: Vec::new(),
            writers: HashMap::new(),
            owners: Vec::new(),
            limits: Limits::default(),
            unpacked: Unpacked::default(),
        }
    }

    /// An unpacker with other limits (tests use small ones).
    pub fn with_limits(layout: Layout, limits: Limits) -> Unpacker {
        Unpacker {
            limits,
            ..Unpacker::new(layout)
        }
    }

    /// Unpacks one archive from `input`; on an error, removes everything this unpacker wrote
    /// (this archive's and earlier ones'). Blocking: run it in `spawn_blocking`.
    pub fn unpack(
        &mut self,
        input: ChannelReader,
        owner: Option<LayerOwner>,
    ) -> Result<Unpacked, ArchiveError> {
        let interrupted = input.interrupted.clone();
        let before = self.unpacked;
        let result = self.unpack_from(input, owner);
        match result {
            Ok(()) => Ok(Unpacked {
                entries: self.unpacked.entries - before.entries,
                files: self.unpacked.files - before.files,
                bytes: self.unpacked.bytes - before.bytes,
            }),
            Err(err) => {
                self.remove_written();
                if interrupted.load(Ordering::SeqCst) {
                    Err(ArchiveError::Interrupted)
                } else {
                    Err(err)
                }
            }
        }
    }

    /// Removes what this unpacker wrote, without following symlinks; best effort.
    pub fn remove_written(&mut self) {
        self.open_dirs.clear();
        self.checked.clear();
        for path in self.written.drain(..).rev() {
            let removed = match fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => fs::remove_dir_all(&path),
                Ok(_) => fs::remove_file(&path),
                Err(_) => Ok(()),
            };
            if let Err(err) = removed {
                tracing::warn!(path = %path.display(), %err, "cannot remove a partly restored entry");
            }
        }
    }

    fn unpack_from(
        &mut self,
        input: ChannelReader,
        owner: Option<LayerOwner>,
    ) -> Result<(), ArchiveError> {
        let owner_index = owner.map(|owner| {
            self.owners.push(owner);
            self.owners.len() - 1
        });
        let corrupt = |err: io::Error| ArchiveError::Corrupt(err.to_string());
        let mut decoder = zstd::stream::read::Decoder::with_buffer(input).map_err(corrupt)?;
        decoder.window_log_max(WINDOW_LOG_MAX).map_err(corrupt)?;
        let mut archive = tar::Archive::new(io::BufReader::with_capacity(COPY_BUFFER, decoder));
        let mut copy_buffer = vec![0u8; COPY_BUFFER];
        let mut count = 0u64;
        for entry in archive.entries().map_err(corrupt)? {
            let mut entry = entry.map_err(corrupt)?;
            count += 1;
            if count > self.limits.entries {
                return Err(ArchiveError::Limit {
                    what: "the number of entries in the archive".into(),
                    limit: format!("{} entries", self.limits.entries),
                });
            }
            self.entry(&mut entry, owner_index, &mut copy_buffer)?;
        }
        self.close_dirs(None)?;
        // Read to the end of the zstd frame, so that its checksum is verified and a truncated
        // stream is noticed even after the tar end marker.
        let mut rest = archive.into_inner();
        io::copy(&mut rest, &mut io::sink()).map_err(corrupt)?;
        Ok(())
    }

    /// Where `name` goes, or why it may not go anywhere.
    fn target(&self, name: &[u8]) -> Result<Target, ArchiveError> {
        if name.len() > self.limits.path_len {
            return Err(ArchiveError::Limit {
                what: format!("the path `{}`", shorten(name)),
                limit: format!("{} bytes", self.limits.path_len),
            });
        }
        if name.starts_with(b"/") {
            return Err(ArchiveError::refused(name, "an absolute name"));
        }
        let mut parts = Vec::new();
        for part in name.split(|byte| *byte == b'/') {
            match part {
                b"" | b"." => {}
                b".." => return Err(ArchiveError::refused(name, "a `..` component")),
                part => parts.push(OsStr::from_bytes(part).to_os_string()),
            }
        }
        let base = match &self.layout {
            Layout::Workspace { at } => at.clone(),
            Layout::Cache { working_dir, home } => {
                if parts.is_empty() {
                    return Err(ArchiveError::refused(name, "no root marker"));
                }
                match parts.remove(0).as_bytes() {
                    b"wd" => working_dir.clone(),
                    b"home" => home.clone(),
                    b"abs" => PathBuf::from("/"),
                    _ => {
                        return Err(ArchiveError::refused(
                            name,
                            "not under `wd/`, `home/` or `abs/`",
                        ));
                    }
                }
            }
        };
        Ok(Target { base, parts })
    }

    fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        owner: Option<usize>,
        copy_buffer: &mut [u8],
    ) -> Result<(), ArchiveError> {
        let name = entry.path_bytes().into_owned();
        let target = self.target(&name)?;
        let path = target.path();
        self.close_dirs(Some(&path))?;
        let header = entry.header();
        let kind = header.entry_type();
        let corrupt = |err: io::Error| ArchiveError::Corrupt(err.to_string());
        let mode = header.mode().map_err(corrupt)?;
        let mtime = header.mtime().map_err(corrupt)?;
        if kind.is_dir() {
            if target.parts.is_empty() {
                return Ok(());
            }
            self.check_parents(&target, &name)?;
            // A directory that exists keeps its mode and mtime (it may not be the job user's:
            // `/opt`, a shared cache root); one made here gets the archive's when it is left.
            let made = match fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => false,
                Ok(_) => {
                    self.remove_in_the_way(&path)?;
                    self.make_dir(&path)?;
                    true
                }
                Err(err) if err.kind() == io::ErrorKind::NotFound => {
                    self.make_dir(&path)?;
                    true
                }
                Err(err) => return Err(ArchiveError::io("read", &path)(err)),
            };
            if made {
                self.open_dirs.push(OpenDir { path, mode, mtime });
            }
            self.unpacked.entries += 1;
            return Ok(());
        }
        if target.parts.is_empty() {
            return Err(ArchiveError::refused(&name, "not a directory at the root"));
        }
        if kind.is_file() {
            let size = entry.size();
            if self.unpacked.bytes.saturating_add(size) > self.limits.bytes {
                return Err(ArchiveError::Limit {
                    what: "the bytes restored".into(),
                    limit: format!("{} bytes", self.limits.bytes),
                });
            }
            self.claim(&target, owner)?;
            self.check_parents(&target, &name)?;
            self.clear_spot(&path)?;
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(ArchiveError::io("create", &path))?;
            loop {
                let read = entry.read(copy_buffer).map_err(corrupt)?;
                if read == 0 {
                    break;
                }
                file.write_all(&copy_buffer[..read])
                    .map_err(ArchiveError::io("write", &path))?;
            }
            // Set-user and set-group bits are dropped: the job user restores files it owns.
            file.set_permissions(fs::Permissions::from_mode(mode & 0o1777))
                .map_err(ArchiveError::io("set the mode of", &path))?;
            file.set_times(fs::FileTimes::new().set_modified(system_time(mtime)))
                .map_err(ArchiveError::io("set the mtime of", &path))?;
            self.unpacked.entries += 1;
            self.unpacked.files += 1;
            self.unpacked.bytes += size;
            return Ok(());
        }
        if kind.is_symlink() {
            let link = entry
                .link_name_bytes()
                .ok_or_else(|| ArchiveError::refused(&name, "a symlink without a target"))?
                .into_owned();
            self.check_link(&target, &name, &link)?;
            self.claim(&target, owner)?;
            self.check_parents(&target, &name)?;
            self.clear_spot(&path)?;
            std::os::unix::fs::symlink(OsStr::from_bytes(&link), &path)
                .map_err(ArchiveError::io("create the symlink", &path))?;
            set_link_mtime(&path, mtime)?;
            self.unpacked.entries += 1;
            return Ok(());
        }
        let reason = if kind.is_hard_link() {
            "a hard link (bosun's archives never hold one)"
        } else if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            "a device or fifo"
        } else {
            "an entry type bosun does not restore"
        };
        Err(ArchiveError::refused(&name, reason))
    }

    /// Applies the mode and mtime of the open directories that `next` (the next entry) is not
    /// beneath; all of them for `None`.
    fn close_dirs(&mut self, next: Option<&Path>) -> Result<(), ArchiveError> {
        while let Some(top) = self.open_dirs.last() {
            if let Some(next) = next {
                if next != top.path && next.starts_with(&top.path) {
                    break;
                }
            }
            let Some(dir) = self.open_dirs.pop() else {
                break;
            };
            // The owner keeps rwx, so that later layers and the clean-up can still write there.
            fs::set_permissions(
                &dir.path,
                fs::Permissions::from_mode(dir.mode & 0o1777 | 0o700),
            )
            .map_err(ArchiveError::io("set the mode of", &dir.path))?;
            set_link_mtime(&dir.path, dir.mtime)?;
        }
        Ok(())
    }

    /// Makes sure every directory between the target's base and the entry exists and is a real
    /// directory (creating the missing ones), never going through a symlink.
    fn check_parents(&mut self, target: &Target, name: &[u8]) -> Result<(), ArchiveError> {
        let mut dir = target.base.clone();
        let parents = target.parts.len() - 1;
        for (depth, part) in target.parts[..parents].iter().enumerate() {
            dir.push(part);
            if self
                .checked
                .get(depth)
                .is_some_and(|(checked, _)| *checked == dir)
            {
                continue;
            }
            self.checked.truncate(depth);
            let created = match fs::symlink_metadata(&dir) {
                Ok(meta) if meta.is_dir() => false,
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(ArchiveError::refused(
                        name,
                        format!(
                            "{} is a symlink on disk, and bosun does not restore through one",
                            dir.display()
                        ),
                    ));
                }
                Ok(_) => {
                    return Err(ArchiveError::refused(
                        name,
                        format!("{} is not a directory", dir.display()),
                    ));
                }
                Err(err) if err.kind() == io::ErrorKind::NotFound => {
                    self.make_dir(&dir)?;
                    true
                }
                Err(err) => return Err(ArchiveError::io("read", &dir)(err)),
            };
            self.checked.push((dir.clone(), created));
        }
        self.checked.truncate(parents);
        Ok(())
    }

    /// Whether the entry's parent is a directory created here (then removing that removes the
    /// entry too, and it need not be listed). Valid after [`Self::check_parents`].
    fn under_created(&self) -> bool {
        self.checked.iter().any(|(_, created)| *created)
    }

    fn make_dir(&mut self, path: &Path) -> Result<(), ArchiveError> {
        fs::create_dir(path).map_err(ArchiveError::io("create the directory", path))?;
        if !self.under_created_dir(path) {
            self.written.push(path.to_path_buf());
        }
        Ok(())
    }

    /// Whether one of the checked directories above `path` was created here.
    fn under_created_dir(&self, path: &Path) -> bool {
        self.checked
            .iter()
            .any(|(dir, created)| *created && path != dir && path.starts_with(dir))
    }

    /// Removes a file or symlink that is where an entry goes (it is replaced, so it counts as
    /// written); a directory in the way is an error.
    fn clear_spot(&mut self, path: &Path) -> Result<(), ArchiveError> {
        match fs::symlink_metadata(path) {
            Ok(meta) if meta.is_dir() => Err(ArchiveError::Io {
                action: "restore",
                path: path.to_path_buf(),
                source: io::Error::other("a directory is in the way"),
            }),
            Ok(_) => {
                fs::remove_file(path).map_err(ArchiveError::io("replace", path))?;
                self.note_written(path);
                Ok(())
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                self.note_written(path);
                Ok(())
            }
            Err(err) => Err(ArchiveError::io("read", path)(err)),
        }
    }

    fn remove_in_the_way(&mut self, path: &Path) -> Result<(), ArchiveError> {
        fs::remove_file(path).map_err(ArchiveError::io("replace", path))
    }

    fn note_written(&mut self, path: &Path) {
        if !self.under_created() {
            self.written.push(path.to_path_buf());
        }
    }

    /// A symlink's target must stay beneath the base: a relative target may start with `..`
    /// components (no more than the link is deep) and has none after a name, so it resolves
    /// from the link's real parent directory; absolute ones only in caches.
    fn check_link(&self, target: &Target, name: &[u8], link: &[u8]) -> Result<(), ArchiveError> {
        if link.len() > self.limits.path_len {
            return Err(ArchiveError::Limit {
                what: format!("the target of the symlink `{}`", shorten(name)),
                limit: format!("{} bytes", self.limits.path_len),
            });
        }
        if link.is_empty() {
            return Err(ArchiveError::refused(
                name,
                "a symlink with an empty target",
            ));
        }
        if link.starts_with(b"/") {
            if self.absolute_links {
                return Ok(());
            }
            return Err(ArchiveError::refused(
                name,
                format!("a symlink to the absolute path {}", shorten(link)),
            ));
        }
        let mut ups = 0usize;
        let mut named = false;
        for part in link.split(|byte| *byte == b'/') {
            match part {
                b"" | b"." => {}
                b".." if named => {
                    return Err(ArchiveError::refused(
                        name,
                        format!("a symlink to {} (`..` after a name)", shorten(link)),
                    ));
                }
                b".." => ups += 1,
                _ => named = true,
            }
        }
        if ups > target.parts.len() - 1 {
            return Err(ArchiveError::refused(
                name,
                format!("a symlink to {}, outside the restored tree", shorten(link)),
            ));
        }
        Ok(())
    }

    /// The workspace conflict rule: a file an earlier layer wrote may be written again by a
    /// layer of the same job or of a job that requires the earlier one's.
    fn claim(&mut self, target: &Target, owner: Option<usize>) -> Result<(), ArchiveError> {
        let Some(owner) = owner else {
            return Ok(());
        };
        let relative: PathBuf = target.parts.iter().collect();
        if let Some(&previous) = self.writers.get(&relative) {
            let (first, second) = (&self.owners[previous], &self.owners[owner]);
            if first.job_name != second.job_name && !second.requires.contains(&first.job_name) {
                return Err(ArchiveError::Conflict {
                    path: relative.display().to_string(),
                    first: first.job_name.clone(),
                    second: second.job_name.clone(),
                });
            }
        }
        self.writers.insert(relative, owner);
        Ok(())
    }
}

fn system_time(mtime: u64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime)
}

/// Sets the mtime of `path` itself, not of what a symlink points to.
fn set_link_mtime(path: &Path, mtime: u64) -> Result<(), ArchiveError> {
    use nix::sys::stat::{UtimensatFlags, utimensat};
    use nix::sys::time::TimeSpec;
    let seconds = nix::libc::time_t::try_from(mtime).unwrap_or(nix::libc::time_t::MAX);
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &TimeSpec::UTIME_OMIT,
        &TimeSpec::new(seconds, 0),
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|errno| ArchiveError::Io {
        action: "set the mtime of",
        path: path.to_path_buf(),
        source: io::Error::from(errno),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// An archive of `sources`, in memory.
    fn archive_of(sources: &[Source]) -> Vec<u8> {
        let mut out = Vec::new();
        create_into(sources, &mut out).unwrap();
        out
    }

    /// Unpacks `bytes` (in pieces of 1000 bytes), ended by `last`.
    fn unpack_with(
        unpacker: &mut Unpacker,
        bytes: &[u8],
        last: Option<Piece>,
        owner: Option<LayerOwner>,
    ) -> Result<Unpacked, ArchiveError> {
        let (tx, rx) = mpsc::channel(PIPE_CHUNKS);
        let chunks: Vec<Bytes> = bytes.chunks(1000).map(Bytes::copy_from_slice).collect();
        let feeder = std::thread::spawn(move || {
            for chunk in chunks {
                if tx.blocking_send(Piece::Data(chunk)).is_err() {
                    return;
                }
            }
            if let Some(last) = last {
                let _ = tx.blocking_send(last);
            }
        });
        let result = unpacker.unpack(ChannelReader::new(rx), owner);
        feeder.join().unwrap();
        result
    }

    fn unpack(layout: Layout, bytes: &[u8]) -> Result<Unpacked, ArchiveError> {
        unpack_with(&mut Unpacker::new(layout), bytes, Some(Piece::End), None)
    }

    fn workspace(at: &Path) -> Layout {
        Layout::Workspace {
            at: at.to_path_buf(),
        }
    }

    /// Every path under `root`, relative, sorted.
    fn listing(root: &Path) -> Vec<String> {
        let mut found = Vec::new();
        let mut pending = vec![root.to_path_buf()];
        while let Some(dir) = pending.pop() {
            for entry in fs::read_dir(&dir).unwrap() {
                let entry = entry.unwrap();
                let path = entry.path();
                found.push(path.strip_prefix(root).unwrap().display().to_string());
                if entry.file_type().unwrap().is_dir() {
                    pending.push(path);
                }
            }
        }
        found.sort();
        found
    }

    fn set_mtime(path: &Path, secs: u64) {
        set_link_mtime(path, secs).unwrap();
    }

    /// A tree with nested and empty directories, modes, a relative symlink and mtimes.
    fn sample_tree(root: &Path) {
        fs::create_dir_all(root.join("a/b/c")).unwrap();
        fs::create_dir_all(root.join("empty")).unwrap();
        fs::write(root.join("a/b/c/deep.txt"), "deep").unwrap();
        fs::write(root.join("a/run.sh"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(root.join("a/run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(root.join("secret"), vec![7u8; 300_000]).unwrap();
        fs::set_permissions(root.join("secret"), fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink("../a/run.sh", root.join("empty/../a/b/link")).unwrap();
        set_mtime(&root.join("a/b/c/deep.txt"), 1_600_000_000);
        set_mtime(&root.join("a/b/link"), 1_600_000_001);
        set_mtime(&root.join("empty"), 1_600_000_002);
    }

    #[test]
    fn a_tree_round_trips() {
        let source = tempfile::tempdir().unwrap();
        sample_tree(source.path());
        let bytes = archive_of(&[Source {
            path: source.path().to_path_buf(),
            name: PathBuf::new(),
        }]);
        let target = tempfile::tempdir().unwrap();
        let unpacked = unpack(workspace(target.path()), &bytes).unwrap();
        assert_eq!(unpacked.files, 3);
        assert_eq!(unpacked.bytes, 4 + 10 + 300_000);
        assert_eq!(listing(target.path()), listing(source.path()));
        let t = target.path();
        assert_eq!(fs::read(t.join("a/b/c/deep.txt")).unwrap(), b"deep");
        assert_eq!(fs::read(t.join("secret")).unwrap(), vec![7u8; 300_000]);
        let mode = |path: &str| fs::symlink_metadata(t.join(path)).unwrap().mode() & 0o777;
        assert_eq!(mode("a/run.sh"), 0o755);
        assert_eq!(mode("secret"), 0o600);
        assert_eq!(
            fs::read_link(t.join("a/b/link")).unwrap(),
            Path::new("../a/run.sh")
        );
        let mtime = |path: &str| fs::symlink_metadata(t.join(path)).unwrap().mtime();
        assert_eq!(mtime("a/b/c/deep.txt"), 1_600_000_000);
        assert_eq!(mtime("a/b/link"), 1_600_000_001);
        assert_eq!(mtime("empty"), 1_600_000_002);
    }

    #[test]
    fn cache_names_restore_under_the_new_directories() {
        let old = tempfile::tempdir().unwrap();
        fs::create_dir_all(old.path().join("wd/node_modules/x")).unwrap();
        fs::write(old.path().join("wd/node_modules/x/index.js"), "x").unwrap();
        fs::create_dir_all(old.path().join("home/.npm")).unwrap();
        fs::write(old.path().join("home/.npm/blob"), "npm").unwrap();
        let bytes = archive_of(&[
            Source {
                path: old.path().join("wd/node_modules"),
                name: PathBuf::from("wd/node_modules"),
            },
            Source {
                path: old.path().join("home/.npm"),
                name: PathBuf::from("home/.npm"),
            },
        ]);
        let new = tempfile::tempdir().unwrap();
        fs::create_dir_all(new.path().join("project")).unwrap();
        fs::create_dir_all(new.path().join("user")).unwrap();
        let layout = Layout::Cache {
            working_dir: new.path().join("project"),
            home: new.path().join("user"),
        };
        unpack(layout, &bytes).unwrap();
        assert_eq!(
            fs::read(new.path().join("project/node_modules/x/index.js")).unwrap(),
            b"x"
        );
        assert_eq!(fs::read(new.path().join("user/.npm/blob")).unwrap(), b"npm");
    }

    /// A hand-made tar entry: `name` and `link` written raw, so that the tar crate's own
    /// checks do not stop the test from making a hostile archive.
    fn raw_entry(kind: tar::EntryType, name: &[u8], link: &[u8], data: &[u8]) -> Vec<u8> {
        let mut header = tar::Header::new_old();
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        header.as_old_mut().linkname[..link.len()].copy_from_slice(link);
        header.set_entry_type(kind);
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        header.set_cksum();
        let mut bytes = header.as_bytes().to_vec();
        bytes.extend_from_slice(data);
        bytes.resize(bytes.len().div_ceil(512) * 512, 0);
        bytes
    }

    fn hostile(entries: &[Vec<u8>]) -> Vec<u8> {
        let mut tar = entries.concat();
        tar.extend_from_slice(&[0u8; 1024]);
        zstd::encode_all(&tar[..], 1).unwrap()
    }

    fn refused(layout: Layout, entries: &[Vec<u8>]) -> String {
        match unpack(layout, &hostile(entries)) {
            Err(err @ (ArchiveError::Refused { .. } | ArchiveError::Limit { .. })) => {
                err.to_string()
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn hostile_entries_are_refused_and_nothing_is_left() {
        use tar::EntryType;
        let dir = tempfile::tempdir().unwrap();
        let at = dir.path().join("at");
        fs::create_dir(&at).unwrap();
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let ok = raw_entry(EntryType::Regular, b"fine.txt", b"", b"fine");
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                raw_entry(EntryType::Regular, b"../escape", b"", b"x"),
                "`..`",
            ),
            (
                raw_entry(EntryType::Regular, b"a/../../escape", b"", b"x"),
                "`..`",
            ),
            (
                raw_entry(EntryType::Regular, b"/etc/escape", b"", b"x"),
                "absolute name",
            ),
            (
                raw_entry(EntryType::Symlink, b"up", b"../../outside", b""),
                "outside",
            ),
            (
                raw_entry(EntryType::Symlink, b"mid", b"a/../../x", b""),
                "after a name",
            ),
            (
                raw_entry(EntryType::Symlink, b"abs", b"/etc", b""),
                "absolute path",
            ),
            (
                raw_entry(EntryType::Link, b"hard", b"fine.txt", b""),
                "hard link",
            ),
            (
                raw_entry(EntryType::Fifo, b"fifo", b"", b""),
                "device or fifo",
            ),
            (
                raw_entry(EntryType::Char, b"tty", b"", b""),
                "device or fifo",
            ),
        ];
        for (entry, expected) in cases {
            let message = refused(workspace(&at), &[ok.clone(), entry]);
            assert!(message.contains(expected), "{message} lacks {expected}");
            assert_eq!(listing(&at), Vec::<String>::new(), "after {message}");
        }
        assert!(listing(&outside).is_empty());
    }

    #[test]
    fn a_symlink_on_disk_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let at = dir.path().join("at");
        let outside = dir.path().join("outside");
        fs::create_dir(&at).unwrap();
        fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, at.join("dir")).unwrap();
        let entry = raw_entry(tar::EntryType::Regular, b"dir/planted", b"", b"x");
        let message = refused(workspace(&at), &[entry]);
        assert!(message.contains("symlink on disk"), "{message}");
        assert!(listing(&outside).is_empty());
        // A link in the archive and then an entry beneath it: the same.
        let cache = Layout::Cache {
            working_dir: at.clone(),
            home: at.clone(),
        };
        let link = raw_entry(tar::EntryType::Symlink, b"wd/l", b"/tmp", b"");
        let beneath = raw_entry(tar::EntryType::Regular, b"wd/l/planted", b"", b"x");
        let message = refused(cache, &[link, beneath]);
        assert!(message.contains("symlink on disk"), "{message}");
        assert!(!Path::new("/tmp/planted").exists());
        assert!(!at.join("l").exists(), "the link it made was removed");
    }

    #[test]
    fn limits_are_errors_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        let entries: Vec<Vec<u8>> = (0..5)
            .map(|i| {
                raw_entry(
                    tar::EntryType::Regular,
                    format!("f{i}").as_bytes(),
                    b"",
                    b"12345",
                )
            })
            .collect();
        let tight = |limits| {
            let mut unpacker = Unpacker::with_limits(workspace(dir.path()), limits);
            unpack_with(&mut unpacker, &hostile(&entries), Some(Piece::End), None)
                .unwrap_err()
                .to_string()
        };
        let base = Limits::default();
        let message = tight(Limits { entries: 3, ..base });
        assert!(
            message.contains("the number of entries in the archive is over the limit of 3 entries"),
            "{message}"
        );
        let message = tight(Limits { bytes: 12, ..base });
        assert!(
            message.contains("the bytes restored is over the limit of 12 bytes"),
            "{message}"
        );
        let message = tight(Limits {
            path_len: 1,
            ..base
        });
        assert!(message.contains("over the limit of 1 bytes"), "{message}");
        assert!(listing(dir.path()).is_empty());
    }

    fn big_archive(dir: &Path) -> Vec<u8> {
        for i in 0..50 {
            let data: Vec<u8> = (0..20_000u32).map(|n| (n * 31 + i) as u8).collect();
            fs::create_dir_all(dir.join(format!("d{}", i % 5))).unwrap();
            fs::write(dir.join(format!("d{}/f{i}", i % 5)), data).unwrap();
        }
        archive_of(&[Source {
            path: dir.to_path_buf(),
            name: PathBuf::from("tree"),
        }])
    }

    #[test]
    fn truncated_and_corrupted_archives_fail_and_leave_nothing() {
        let source = tempfile::tempdir().unwrap();
        let bytes = big_archive(source.path());
        let target = tempfile::tempdir().unwrap();
        fs::write(target.path().join("kept"), "mine").unwrap();
        let check = |result: Result<Unpacked, ArchiveError>, what: &str| {
            let err = result.unwrap_err();
            assert!(matches!(err, ArchiveError::Corrupt(_)), "{what}: {err:?}");
            assert_eq!(listing(target.path()), ["kept"], "{what}");
        };
        let half = &bytes[..bytes.len() / 2];
        check(unpack(workspace(target.path()), half), "truncated");
        // Only the last bytes missing: the tar end marker may be there, the checksum is not.
        let almost = &bytes[..bytes.len() - 4];
        check(unpack(workspace(target.path()), almost), "checksum missing");
        let mut flipped = bytes.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0x55;
        check(unpack(workspace(target.path()), &flipped), "corrupted");
        let failed = unpack_with(
            &mut Unpacker::new(workspace(target.path())),
            half,
            Some(Piece::Failed("the server went away".into())),
            None,
        );
        let err = failed.unwrap_err();
        assert!(err.to_string().contains("the server went away"), "{err}");
        assert_eq!(listing(target.path()), ["kept"]);
        let interrupted = unpack_with(
            &mut Unpacker::new(workspace(target.path())),
            half,
            None,
            None,
        );
        assert!(
            matches!(interrupted, Err(ArchiveError::Interrupted)),
            "{interrupted:?}"
        );
        assert_eq!(listing(target.path()), ["kept"]);
        // And the whole archive restores.
        unpack(workspace(target.path()), &bytes).unwrap();
        assert_eq!(listing(target.path()).len(), 1 + 1 + 5 + 50);
    }

    #[test]
    fn layers_of_unrelated_jobs_conflict_on_a_file() {
        let source = tempfile::tempdir().unwrap();
        fs::create_dir(source.path().join("out")).unwrap();
        fs::write(source.path().join("out/x"), "x").unwrap();
        let bytes = archive_of(&[Source {
            path: source.path().join("out"),
            name: PathBuf::from("out"),
        }]);
        let owner = |job: &str, requires: &[&str]| LayerOwner {
            job_name: job.into(),
            requires: requires.iter().map(|name| name.to_string()).collect(),
        };
        let at = tempfile::tempdir().unwrap();
        let mut unpacker = Unpacker::new(workspace(at.path()));
        let layer = |unpacker: &mut Unpacker, owner| {
            unpack_with(unpacker, &bytes, Some(Piece::End), Some(owner))
        };
        layer(&mut unpacker, owner("build-a", &[])).unwrap();
        layer(&mut unpacker, owner("build-a", &[])).unwrap();
        layer(&mut unpacker, owner("test", &["build-a"])).unwrap();
        let err = layer(&mut unpacker, owner("build-b", &[])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Concurrent upstream jobs persisted the same file(s) into the workspace: `out/x` by both `test` and `build-b`"
        );
        assert!(
            listing(at.path()).is_empty(),
            "the attach's files were removed"
        );
    }
}
