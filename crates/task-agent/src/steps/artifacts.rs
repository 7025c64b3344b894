//! `store_artifacts`: a file, or every regular file under a directory, uploaded as artifacts.
//!
//! As on CircleCI, an artifact's path is the `destination` (the `path` as written when there is
//! none, without a leading `/`, `~/` or `./`) followed, for a directory, by the file's path
//! relative to it. A missing `path` is not an error on CircleCI: the log says no artifact was
//! found and the step succeeds. Symlinks are never followed (a link inside the directory could
//! point anywhere the job user can read): each one is skipped with a line in the log. Each file
//! is read in chunks of [`CHUNK`] bytes and streamed through [`Outbox::upload`], so memory stays
//! flat however large it is.

use std::path::{Path, PathBuf};
use std::time::Instant;

use bosun_protocol::task::StoreArtifactsStep;
use bosun_protocol::{BlobKind, UploadOutcome};
use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

use super::{Job, StepResult};
use crate::link::{Control, Lost, UploadStop};

/// Bytes read from a file per data frame.
const CHUNK: usize = 256 << 10;
/// Most files one `store_artifacts` step uploads.
pub const MAX_FILES: usize = 10_000;
/// Longest artifact path, in bytes.
pub const MAX_PATH_LEN: usize = 1024;

/// Uploads the step's `path`; the step's log is stream `log`.
pub async fn execute(
    job: &Job,
    log: u32,
    step: &StoreArtifactsStep,
    control: &mut watch::Receiver<Control>,
) -> Result<StepResult, Lost> {
    let started = Instant::now();
    let source = job.step_dir(Some(&step.path));
    let prefix = destination_prefix(step.destination.as_deref().unwrap_or(&step.path));
    job.out
        .text(
            log,
            format!("Uploading {} to {}\n", source.display(), display(&prefix)),
        )
        .await?;
    let meta = match std::fs::symlink_metadata(&source) {
        Ok(meta) => meta,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            job.out
                .text(
                    log,
                    format!("No artifact files found at {}\n", source.display()),
                )
                .await?;
            return Ok(success());
        }
        Err(err) => {
            return job
                .fail(
                    log,
                    format!("task-agent: cannot read {}: {err}\n", source.display()),
                )
                .await;
        }
    };
    let files = if meta.is_dir() {
        match walk(&source, &prefix) {
            Ok(walked) => {
                for skipped in &walked.skipped {
                    job.out
                        .text(
                            log,
                            format!(
                                "Skipping {}: a symlink or special file, which is not stored\n",
                                skipped.display()
                            ),
                        )
                        .await?;
                }
                walked.files
            }
            Err(message) => return job.fail(log, format!("task-agent: {message}\n")).await,
        }
    } else if meta.is_file() {
        let name = if prefix.is_empty() {
            file_name(&source)
        } else {
            prefix.clone()
        };
        vec![(source.clone(), name)]
    } else {
        return job
            .fail(
                log,
                format!(
                    "task-agent: {} is a symlink or special file: store_artifacts stores regular files and directories\n",
                    source.display()
                ),
            )
            .await;
    };
    for (_, name) in &files {
        if name.len() > MAX_PATH_LEN {
            return job
                .fail(
                    log,
                    format!(
                        "task-agent: the artifact path `{}...` is longer than {MAX_PATH_LEN} bytes\n",
                        &name[..name.floor_char_boundary_compat(64)]
                    ),
                )
                .await;
        }
    }
    let mut bytes_total = 0u64;
    for (path, name) in &files {
        job.out
            .text(log, format!("  {} -> {name}\n", path.display()))
            .await?;
        match upload_file(job, path, name, control).await? {
            Ok(size) => bytes_total += size,
            Err(Stopped::Canceled) => return canceled(job, log, control).await,
            Err(Stopped::Failed(message)) => {
                return job
                    .fail(
                        log,
                        format!("task-agent: storing {}: {message}\n", path.display()),
                    )
                    .await;
            }
        }
    }
    job.out
        .text(
            log,
            format!(
                "Uploaded {} file{} ({bytes_total} bytes) in {:.1}s\n",
                files.len(),
                if files.len() == 1 { "" } else { "s" },
                started.elapsed().as_secs_f64()
            ),
        )
        .await?;
    Ok(success())
}

/// Why a file was not stored.
enum Stopped {
    Canceled,
    Failed(String),
}

async fn canceled(
    job: &Job,
    log: u32,
    control: &watch::Receiver<Control>,
) -> Result<StepResult, Lost> {
    super::canceled(&job.out, log, control).await
}

fn success() -> StepResult {
    StepResult::success()
}

/// `floor_char_boundary` is not stable on Rust 1.85.
trait FloorCharBoundary {
    fn floor_char_boundary_compat(&self, index: usize) -> usize;
}

impl FloorCharBoundary for String {
    fn floor_char_boundary_compat(&self, index: usize) -> usize {
        let mut index = index.min(self.len());
        while !self.is_char_boundary(index) {
            index -= 1;
        }
        index
    }
}

fn display(prefix: &str) -> &str {
    if prefix.is_empty() { "." } else { prefix }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The artifact path prefix for a `destination` (or a `path` used as one): its normal
/// components joined by `/`, without a root, `~`, `.` or `..`.
pub fn destination_prefix(destination: &str) -> String {
    let trimmed = destination
        .strip_prefix("~/")
        .unwrap_or(if destination == "~" { "" } else { destination });
    Path::new(trimmed)
        .components()
        .filter_map(|component| match component {
            std::path::Component::Normal(part) => Some(part.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// A directory's regular files, each with its artifact path, and what was skipped.
#[derive(Debug, Default)]
pub struct Walked {
    pub files: Vec<(PathBuf, String)>,
    pub skipped: Vec<PathBuf>,
}

/// Lists the regular files under `root` without following symlinks, sorted, at most
/// [`MAX_FILES`] of them.
pub fn walk(root: &Path, prefix: &str) -> Result<Walked, String> {
    let mut walked = Walked::default();
    let mut pending = vec![(root.to_path_buf(), prefix.to_owned())];
    while let Some((dir, at)) = pending.pop() {
        let entries = std::fs::read_dir(&dir)
            .map_err(|err| format!("cannot list {}: {err}", dir.display()))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|err| format!("cannot list {}: {err}", dir.display()))?;
            names.push(entry);
        }
        names.sort_by_key(|entry| entry.file_name());
        for entry in names {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let artifact = if at.is_empty() {
                name
            } else {
                format!("{at}/{name}")
            };
            // `file_type` does not follow symlinks.
            let kind = entry
                .file_type()
                .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
            if kind.is_dir() {
                pending.push((path, artifact));
            } else if kind.is_file() {
                if walked.files.len() >= MAX_FILES {
                    return Err(format!(
                        "{} holds more than {MAX_FILES} files: store_artifacts stores at most {MAX_FILES} per step",
                        root.display()
                    ));
                }
                walked.files.push((path, artifact));
            } else {
                walked.skipped.push(path);
            }
        }
    }
    walked.files.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(walked)
}

/// Streams one file as artifact `name`; the inner error says why it was not stored. A cancel
/// is checked before every chunk, so a large file does not hold up a stop.
async fn upload_file(
    job: &Job,
    path: &Path,
    name: &str,
    control: &watch::Receiver<Control>,
) -> Result<Result<u64, Stopped>, Lost> {
    // `O_NOFOLLOW`: a file swapped for a symlink after the walk is refused, not followed.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags_nofollow()
        .open(path);
    let mut file = match file {
        Ok(file) => tokio::fs::File::from_std(file),
        Err(err) => return Ok(Err(Stopped::Failed(format!("cannot open it: {err}")))),
    };
    let mut upload = job.out.upload(BlobKind::Artifact, name.to_owned()).await?;
    let mut size = 0u64;
    loop {
        if !matches!(*control.borrow(), Control::Run) {
            upload.abort("the step was canceled".to_owned()).await?;
            return Ok(Err(Stopped::Canceled));
        }
        let mut buf = vec![0u8; CHUNK];
        let read = match file.read(&mut buf).await {
            Ok(0) => break,
            Ok(read) => read,
            Err(err) => {
                let message = format!("cannot read it: {err}");
                upload.abort(message.clone()).await?;
                return Ok(Err(Stopped::Failed(message)));
            }
        };
        buf.truncate(read);
        size += read as u64;
        match upload.write(Bytes::from(buf)).await {
            Ok(()) => {}
            Err(UploadStop::Answered) => break,
            Err(UploadStop::Lost) => return Err(Lost),
        }
    }
    match upload.finish().await? {
        UploadOutcome::Stored => Ok(Ok(size)),
        UploadOutcome::Exists => Ok(Err(Stopped::Failed(format!(
            "an artifact `{name}` exists already"
        )))),
        UploadOutcome::Failed { message } => Ok(Err(Stopped::Failed(message))),
    }
}

trait NoFollow {
    fn custom_flags_nofollow(&mut self) -> &mut Self;
}

impl NoFollow for std::fs::OpenOptions {
    fn custom_flags_nofollow(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(nix::libc::O_NOFOLLOW)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_lose_their_root_home_and_dots() {
        assert_eq!(destination_prefix("/tmp/artifacts"), "tmp/artifacts");
        assert_eq!(destination_prefix("~/out"), "out");
        assert_eq!(destination_prefix("./a/../b"), "a/b");
        assert_eq!(destination_prefix("~"), "");
    }

    #[test]
    fn a_walk_lists_files_and_skips_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/b.txt"), "b").unwrap();
        std::fs::write(dir.path().join("a b.txt"), "a").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("link")).unwrap();
        let walked = walk(dir.path(), "out").unwrap();
        let names: Vec<_> = walked.files.iter().map(|(_, name)| name.as_str()).collect();
        assert_eq!(names, ["out/a b.txt", "out/sub/b.txt"]);
        assert_eq!(walked.skipped, [dir.path().join("link")]);
    }
}
