//! `save_cache` and `restore_cache`, with CircleCI's semantics.
//!
//! `save_cache` renders its key ([`super::template`]), archives its `paths` ([`super::archive`]:
//! relative to the working directory, absolute, or under `~`; each stored beneath a root marker
//! so it restores into the new task's directories) and streams the archive as an upload of kind
//! `cache` named by the key. A key that exists is never overwritten: the launch-agent answers
//! `exists` (often before the archive is complete, which then stops) and the step says so and
//! succeeds. A path that does not exist is a warning; nothing at all to save is not an error.
//!
//! `restore_cache` renders each of its keys and asks once with all of them (the server picks the
//! most recently saved cache whose key starts with the first key that matches any). A miss is
//! not an error, as on CircleCI. A corrupt or truncated archive fails the step, and what it had
//! unpacked is removed.

use std::path::{Path, PathBuf};
use std::time::Instant;

use bosun_protocol::task::{RestoreCacheStep, SaveCacheStep};
use bosun_protocol::{BlobKind, UploadOutcome};
use tokio::sync::watch;

use super::archive::{Layout, Source, Unpacker};
use super::template::{self, Context};
use super::transfer::{self, Received, Sent, files, human};
use super::{Job, StepResult, canceled};
use crate::link::{Control, Fetched, Lost};

pub async fn save(
    job: &Job,
    log: u32,
    step: &SaveCacheStep,
    control: &mut watch::Receiver<Control>,
) -> Result<StepResult, Lost> {
    let started = Instant::now();
    let key = match template::render(&step.key, &Context::of(job)) {
        Ok(key) if key.trim().is_empty() => {
            return job
                .fail(
                    log,
                    format!("task-agent: the cache key `{}` renders empty\n", step.key),
                )
                .await;
        }
        Ok(key) => key,
        Err(err) => {
            return job
                .fail(
                    log,
                    format!("task-agent: the cache key `{}`: {err}\n", step.key),
                )
                .await;
        }
    };
    let mut sources = Vec::new();
    for path in &step.paths {
        let resolved = job.step_dir(Some(path));
        match std::fs::symlink_metadata(&resolved) {
            Ok(_) => {
                job.out
                    .text(log, format!("  * {}\n", resolved.display()))
                    .await?;
                sources.push(Source {
                    name: archive_name(&resolved, &job.working_dir, &job.home),
                    path: resolved,
                });
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                job.out
                    .text(
                        log,
                        format!(
                            "Warning: could not find {}: it is not in the cache\n",
                            resolved.display()
                        ),
                    )
                    .await?;
            }
            Err(err) => {
                return job
                    .fail(
                        log,
                        format!("task-agent: cannot read {}: {err}\n", resolved.display()),
                    )
                    .await;
            }
        }
    }
    if sources.is_empty() {
        job.out
            .text(
                log,
                format!("None of the paths exist: no cache is stored for key: {key}\n"),
            )
            .await?;
        return Ok(StepResult::success());
    }
    job.out
        .text(
            log,
            "Creating cache archive...\nUploading cache archive...\n",
        )
        .await?;
    let upload = job.out.upload(BlobKind::Cache, key.clone()).await?;
    let (created, compressed, outcome) =
        match transfer::send(&job.out, log, upload, sources, control).await? {
            Sent::Done {
                created,
                compressed,
                outcome,
            } => (Some(created), compressed, outcome),
            Sent::Answered(outcome) => (None, 0, outcome),
            Sent::Canceled => return canceled(&job.out, log, control).await,
            Sent::Failed(err) => {
                return job
                    .fail(
                        log,
                        format!("task-agent: cannot create the cache archive: {err}\n"),
                    )
                    .await;
            }
        };
    match outcome {
        UploadOutcome::Exists => {
            job.out
                .text(
                    log,
                    format!("Skipping cache generation, cache already exists for key: {key}\n"),
                )
                .await?;
        }
        UploadOutcome::Failed { message } => {
            return job
                .fail(
                    log,
                    format!("task-agent: the cache {key} was not stored: {message}\n"),
                )
                .await;
        }
        UploadOutcome::Stored => {
            let Some(created) = created else {
                job.out.text(log, format!("Stored cache {key}\n")).await?;
                return Ok(StepResult::success());
            };
            if created.skipped_count > 0 {
                let mut text = format!(
                    "Warning: {} socket(s), fifo(s) or device(s) are not in the cache:\n",
                    created.skipped_count
                );
                for path in &created.skipped {
                    text.push_str(&format!("  {}\n", path.display()));
                }
                job.out.text(log, text).await?;
            }
            job.out
                .text(
                    log,
                    format!(
                        "Stored cache {key} ({}, {}; {} compressed) in {:.1}s\n",
                        files(created.files),
                        human(created.bytes),
                        human(compressed),
                        started.elapsed().as_secs_f64()
                    ),
                )
                .await?;
        }
    }
    Ok(StepResult::success())
}

pub async fn restore(
    job: &Job,
    log: u32,
    step: &RestoreCacheStep,
    control: &mut watch::Receiver<Control>,
) -> Result<StepResult, Lost> {
    let started = Instant::now();
    let context = Context::of(job);
    let mut keys = Vec::new();
    for key in &step.keys {
        match template::render(key, &context) {
            Ok(rendered) if rendered.trim().is_empty() => {}
            Ok(rendered) => keys.push(rendered),
            Err(err) => {
                return job
                    .fail(log, format!("task-agent: the cache key `{key}`: {err}\n"))
                    .await;
            }
        }
    }
    if keys.is_empty() {
        return job
            .fail(log, "task-agent: restore_cache has no key\n".to_owned())
            .await;
    }
    let mut download = match transfer::ask(&job.out, BlobKind::Cache, keys.clone(), control).await?
    {
        None => return canceled(&job.out, log, control).await,
        Some(Fetched::NotFound) => {
            let mut text = String::new();
            for key in &keys {
                text.push_str(&format!("No cache is found for key: {key}\n"));
            }
            job.out.text(log, text).await?;
            return Ok(StepResult::success());
        }
        Some(Fetched::Found(download)) => download,
    };
    let key = std::mem::take(&mut download.key);
    let mut text = format!("Found a cache at {key}\n");
    if let Some(size) = download.size {
        text.push_str(&format!("Size: {}\n", human(size)));
    }
    text.push_str("Downloading and unarchiving cache...\n");
    job.out.text(log, text).await?;
    let unpacker = Unpacker::new(Layout::Cache {
        working_dir: job.working_dir.clone(),
        home: job.home.clone(),
    });
    let (_, received) = transfer::receive(&job.out, log, download, unpacker, None, control).await?;
    match received {
        Received::Done(unpacked) => {
            job.out
                .text(
                    log,
                    format!(
                        "Unarchived cache in {:.1}s ({}, {})\n",
                        started.elapsed().as_secs_f64(),
                        files(unpacked.files),
                        human(unpacked.bytes)
                    ),
                )
                .await?;
            Ok(StepResult::success())
        }
        Received::Canceled => canceled(&job.out, log, control).await,
        Received::Failed(err) => {
            job.fail(
                log,
                format!(
                    "task-agent: cannot restore the cache {key}: {err}; what it had unpacked was removed\n"
                ),
            )
            .await
        }
    }
}

/// A cache path's name in the archive: `wd/REL` beneath the working directory, `home/REL`
/// beneath `$HOME` (the deeper of the two when both hold it), `abs/PATH` otherwise.
pub fn archive_name(path: &Path, working_dir: &Path, home: &Path) -> PathBuf {
    let mut best: Option<(&str, &Path)> = None;
    for (marker, base) in [("wd", working_dir), ("home", home)] {
        if path.starts_with(base)
            && best
                .is_none_or(|(_, chosen)| base.components().count() > chosen.components().count())
        {
            best = Some((marker, base));
        }
    }
    match best {
        Some((marker, base)) => {
            Path::new(marker).join(path.strip_prefix(base).unwrap_or(Path::new("")))
        }
        None => Path::new("abs").join(path.strip_prefix("/").unwrap_or(path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_relative_to_the_deepest_root() {
        let wd = Path::new("/home/job/project");
        let home = Path::new("/home/job");
        assert_eq!(
            archive_name(Path::new("/home/job/project/node_modules"), wd, home),
            Path::new("wd/node_modules")
        );
        assert_eq!(
            archive_name(Path::new("/home/job/.npm"), wd, home),
            Path::new("home/.npm")
        );
        assert_eq!(
            archive_name(Path::new("/opt/cache"), wd, home),
            Path::new("abs/opt/cache")
        );
        assert_eq!(archive_name(wd, wd, home), Path::new("wd"));
    }
}
