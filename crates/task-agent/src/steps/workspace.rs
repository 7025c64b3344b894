//! `persist_to_workspace` and `attach_workspace`, with CircleCI's semantics.
//!
//! `persist_to_workspace` archives what its `paths` match (globs relative to `root`, Go
//! `filepath.Match` syntax plus `**`; a directory is added recursively) as one layer, an upload
//! of kind `workspace`. Names in the layer are relative to `root`. A root that does not exist,
//! or paths that match nothing, fail the step, as on CircleCI.
//!
//! `attach_workspace` downloads the manifest (a workspace download without keys answers the
//! JSON of a [`WorkspaceManifest`]: the layers of the jobs this job requires, directly or not,
//! in dependency order), then each layer by its id, unpacking it at `at`. A job with nothing
//! to attach fails, as CircleCI's `attach_workspace` errors when no upstream job persisted
//! anything. When a layer writes a file that an earlier layer wrote, the later layer's job must
//! require the earlier one's (or be the same job); otherwise the attach fails naming the path
//! and both jobs (CircleCI's rule for concurrent jobs). Any failure removes what the attach had
//! unpacked, whichever layer it came from.

use std::path::{Component, Path, PathBuf};
use std::time::Instant;

use bosun_protocol::task::{AttachWorkspaceStep, PersistToWorkspaceStep, WorkspaceManifest};
use bosun_protocol::{BlobKind, UploadOutcome};
use tokio::sync::watch;

use super::archive::{LayerOwner, Layout, Source, Unpacker};
use super::transfer::{self, Received, Sent, files, human};
use super::{Job, StepResult, canceled};
use crate::link::{Control, Fetched, Lost};

/// Largest workspace manifest the task-agent reads.
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;
/// Most paths one `persist_to_workspace` may match (each then added with what is beneath it).
pub const MAX_MATCHES: usize = 100_000;
/// Longest layer description sent as the upload's name.
const MAX_DESCRIPTION: usize = 200;

pub async fn persist(
    job: &Job,
    log: u32,
    step: &PersistToWorkspaceStep,
    control: &mut watch::Receiver<Control>,
) -> Result<StepResult, Lost> {
    let started = Instant::now();
    let root = job.step_dir(Some(&step.root));
    match std::fs::metadata(&root) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return job
                .fail(
                    log,
                    format!(
                        "Error locating workspace root directory: {} is not a directory\n",
                        root.display()
                    ),
                )
                .await;
        }
        Err(err) => {
            return job
                .fail(
                    log,
                    format!(
                        "Error locating workspace root directory: stat {}: {err}\n",
                        root.display()
                    ),
                )
                .await;
        }
    }
    let matched = match matches(&root, &step.paths) {
        Ok(matched) => matched,
        Err(message) => return job.fail(log, format!("task-agent: {message}\n")).await,
    };
    if matched.is_empty() {
        return job
            .fail(
                log,
                format!(
                    "The specified paths did not match any files in {}\n",
                    root.display()
                ),
            )
            .await;
    }
    let mut text = String::from("Creating workspace archive...\n");
    for relative in &matched {
        let shown = if relative.as_os_str().is_empty() {
            root.display().to_string()
        } else {
            root.join(relative).display().to_string()
        };
        text.push_str(&format!("  * {shown}\n"));
    }
    text.push_str("Uploading workspace archive...\n");
    job.out.text(log, text).await?;
    let sources = matched
        .into_iter()
        .map(|relative| Source {
            path: root.join(&relative),
            name: relative,
        })
        .collect();
    let upload = job
        .out
        .upload(BlobKind::Workspace, description(step))
        .await?;
    let (created, compressed, outcome) =
        match transfer::send(&job.out, log, upload, sources, control).await? {
            Sent::Done {
                created,
                compressed,
                outcome,
            } => (created, compressed, outcome),
            Sent::Answered(outcome) => (Default::default(), 0, outcome),
            Sent::Canceled => return canceled(&job.out, log, control).await,
            Sent::Failed(err) => {
                return job
                    .fail(
                        log,
                        format!("task-agent: cannot create the workspace archive: {err}\n"),
                    )
                    .await;
            }
        };
    match outcome {
        UploadOutcome::Stored => {
            job.out
                .text(
                    log,
                    format!(
                        "Persisted {} ({}; {} uploaded) to the workspace in {:.1}s\n",
                        files(created.files),
                        human(created.bytes),
                        human(compressed),
                        started.elapsed().as_secs_f64()
                    ),
                )
                .await?;
            Ok(StepResult::success())
        }
        UploadOutcome::Exists => {
            job.fail(
                log,
                "task-agent: the workspace layer was not stored: it exists already\n".to_owned(),
            )
            .await
        }
        UploadOutcome::Failed { message } => {
            job.fail(
                log,
                format!("task-agent: the workspace layer was not stored: {message}\n"),
            )
            .await
        }
    }
}

/// The layer's name on the wire: its root and paths, shortened.
fn description(step: &PersistToWorkspaceStep) -> String {
    let mut text = format!("{}: {}", step.root, step.paths.join(" "));
    if text.len() > MAX_DESCRIPTION {
        let mut end = MAX_DESCRIPTION;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// What `patterns` match under `root`, relative to it, sorted, without a path that another
/// match holds (it is added with that one). A match beneath a symlink is left out: globbing may
/// go through links, archiving never does.
pub fn matches(root: &Path, patterns: &[String]) -> Result<Vec<PathBuf>, String> {
    let options = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: false,
    };
    let mut found = Vec::new();
    for pattern in patterns {
        let relative = Path::new(pattern.as_str());
        if relative.is_absolute()
            || relative
                .components()
                .any(|component| matches!(component, Component::ParentDir))
        {
            return Err(format!(
                "the workspace path `{pattern}` must be relative to the root, without `..`"
            ));
        }
        // Go writes a negated class `[^...]`; the glob crate `[!...]`.
        let translated = pattern.replace("[^", "[!");
        let root_text = glob::Pattern::escape(&root.to_string_lossy());
        let full = format!("{root_text}/{translated}");
        let paths = glob::glob_with(&full, options)
            .map_err(|err| format!("the workspace path `{pattern}` is not a valid glob: {err}"))?;
        for path in paths {
            let path =
                path.map_err(|err| format!("cannot read {}: {err}", err.path().display()))?;
            let Ok(relative) = path.strip_prefix(root) else {
                continue;
            };
            let relative: PathBuf = relative
                .components()
                .filter(|component| matches!(component, Component::Normal(_)))
                .collect();
            if beneath_a_symlink(root, &relative) {
                continue;
            }
            found.push(relative);
            if found.len() > MAX_MATCHES {
                return Err(format!(
                    "the workspace paths match more than {MAX_MATCHES} paths"
                ));
            }
        }
    }
    found.sort();
    found.dedup();
    let mut kept: Vec<PathBuf> = Vec::new();
    for path in found {
        if kept.last().is_some_and(|last| path.starts_with(last)) {
            continue;
        }
        kept.push(path);
    }
    Ok(kept)
}

fn beneath_a_symlink(root: &Path, relative: &Path) -> bool {
    let mut dir = root.to_path_buf();
    let mut parts = relative.components().peekable();
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            return false;
        }
        dir.push(part);
        match std::fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => {}
            _ => return true,
        }
    }
    false
}

pub async fn attach(
    job: &Job,
    log: u32,
    step: &AttachWorkspaceStep,
    control: &mut watch::Receiver<Control>,
) -> Result<StepResult, Lost> {
    let started = Instant::now();
    let at = job.step_dir(Some(&step.at));
    let nothing = "Error: no workspace to attach: none of the jobs this job requires persisted \
                   files with persist_to_workspace\n";
    let download = match transfer::ask(&job.out, BlobKind::Workspace, Vec::new(), control).await? {
        None => return canceled(&job.out, log, control).await,
        Some(Fetched::NotFound) => return job.fail(log, nothing.to_owned()).await,
        Some(Fetched::Found(download)) => download,
    };
    let manifest = match transfer::read_small(download, MAX_MANIFEST_BYTES).await? {
        Ok(bytes) => serde_json::from_slice::<WorkspaceManifest>(&bytes)
            .map_err(|err| format!("it is not valid JSON: {err}")),
        Err(message) => Err(message),
    };
    let manifest = match manifest {
        Ok(manifest) => manifest,
        Err(message) => {
            return job
                .fail(
                    log,
                    format!("task-agent: cannot read the workspace manifest: {message}\n"),
                )
                .await;
        }
    };
    if manifest.layers.is_empty() {
        return job.fail(log, nothing.to_owned()).await;
    }
    if let Err(err) = std::fs::create_dir_all(&at) {
        return job
            .fail(
                log,
                format!("task-agent: cannot create {}: {err}\n", at.display()),
            )
            .await;
    }
    let mut text = format!("Downloading workspace layers to {}\n", at.display());
    for layer in &manifest.layers {
        text.push_str(&format!(
            "  {} ({}): {}\n",
            layer.job_name,
            layer.id,
            human(layer.size)
        ));
    }
    text.push_str("Applying workspace layers\n");
    job.out.text(log, text).await?;
    let mut unpacker = Unpacker::new(Layout::Workspace { at: at.clone() });
    for layer in &manifest.layers {
        let fetched = transfer::ask(
            &job.out,
            BlobKind::Workspace,
            vec![layer.id.clone()],
            control,
        )
        .await?;
        let download = match fetched {
            Some(Fetched::Found(download)) => download,
            Some(Fetched::NotFound) => {
                remove_written(unpacker).await;
                return job
                    .fail(
                        log,
                        format!(
                            "task-agent: the workspace layer {} of job `{}` is gone; what the attach had unpacked was removed\n",
                            layer.id, layer.job_name
                        ),
                    )
                    .await;
            }
            None => {
                remove_written(unpacker).await;
                return canceled(&job.out, log, control).await;
            }
        };
        let owner = LayerOwner {
            job_name: layer.job_name.clone(),
            requires: layer.requires.clone(),
        };
        let (next, received) =
            transfer::receive(&job.out, log, download, unpacker, Some(owner), control).await?;
        unpacker = next;
        match received {
            Received::Done(_) => {}
            Received::Canceled => return canceled(&job.out, log, control).await,
            Received::Failed(err) => {
                return job
                    .fail(
                        log,
                        format!(
                            "task-agent: cannot apply the workspace layer {} of job `{}`: {err}; what the attach had unpacked was removed\n",
                            layer.id, layer.job_name
                        ),
                    )
                    .await;
            }
        }
    }
    let unpacked = unpacker.unpacked;
    job.out
        .text(
            log,
            format!(
                "Attached {} layer{} ({}, {}) in {:.1}s\n",
                manifest.layers.len(),
                if manifest.layers.len() == 1 { "" } else { "s" },
                files(unpacked.files),
                human(unpacked.bytes),
                started.elapsed().as_secs_f64()
            ),
        )
        .await?;
    Ok(StepResult::success())
}

/// Removes what earlier layers unpacked (in a blocking thread: it may be a large tree).
async fn remove_written(mut unpacker: Unpacker) {
    let _ = tokio::task::spawn_blocking(move || unpacker.remove_written()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_go_plus_double_star() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for file in [
            "dist/a.js",
            "dist/sub/b.js",
            "out/x.txt",
            "out/y.log",
            "top.txt",
        ] {
            let path = root.join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, file).unwrap();
        }
        std::os::unix::fs::symlink(root.join("dist"), root.join("linked")).unwrap();
        let patterns = |list: &[&str]| list.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        assert_eq!(
            matches(root, &patterns(&["dist", "dist/a.js", "out/*.txt"])).unwrap(),
            [PathBuf::from("dist"), PathBuf::from("out/x.txt")]
        );
        assert_eq!(
            matches(root, &patterns(&["**/*.js"])).unwrap(),
            [PathBuf::from("dist/a.js"), PathBuf::from("dist/sub/b.js")]
        );
        assert_eq!(
            matches(root, &patterns(&["out/[^x]*"])).unwrap(),
            [PathBuf::from("out/y.log")]
        );
        // `*` does not cross a separator, as in Go.
        assert_eq!(
            matches(root, &patterns(&["*.js"])).unwrap(),
            Vec::<PathBuf>::new()
        );
        assert_eq!(matches(root, &patterns(&["."])).unwrap(), [PathBuf::new()]);
        assert!(matches(root, &patterns(&["../x"])).is_err());
        assert!(matches(root, &patterns(&["/etc"])).is_err());
    }
}
