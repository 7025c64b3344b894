//! Reading a project's repository with real `git`: a bare mirror per project under
//! `DATA_DIR/repos`, fetched before each pipeline, from which the server resolves the revision
//! and reads `.circleci/config.yml`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::Command;

const GIT_TIMEOUT: Duration = Duration::from_secs(300);
/// Largest config file read from a repository.
pub const MAX_CONFIG_BYTES: usize = 4 << 20;

async fn git(dir: Option<&Path>, args: &[&str]) -> anyhow::Result<std::process::Output> {
    let mut command = Command::new("git");
    // The repository may belong to another user (a developer's checkout read by a root server):
    // the server only reads objects from it, so the ownership check adds nothing here.
    command.args(["-c", "safe.directory=*"]);
    if let Some(dir) = dir {
        command.arg("--git-dir").arg(dir);
    }
    command
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = tokio::time::timeout(GIT_TIMEOUT, command.output())
        .await
        .with_context(|| format!("git {} took longer than {GIT_TIMEOUT:?}", args.join(" ")))?
        .context("running git (is it installed?)")?;
    Ok(output)
}

fn stderr_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).trim().to_owned()
}

/// Refuses URLs git would read as options.
pub fn validate_url(url: &str) -> Result<(), String> {
    if url.is_empty() || url.len() > 2048 {
        return Err("git URL must be 1 to 2048 bytes long".into());
    }
    if url.starts_with('-') || url.chars().any(char::is_control) {
        return Err(format!("`{url}` is not a git URL"));
    }
    Ok(())
}

/// Clones or fetches the project's mirror and returns its path.
pub async fn sync_mirror(repo_dir: &Path, project_id: &str, url: &str) -> anyhow::Result<PathBuf> {
    let mirror = repo_dir.join(format!("{project_id}.git"));
    if mirror.join("HEAD").exists() {
        let output = git(Some(&mirror), &["fetch", "--prune", "--quiet", "origin"]).await?;
        if !output.status.success() {
            bail!("git fetch from {url} failed: {}", stderr_of(&output));
        }
    } else {
        let target = mirror.to_string_lossy().into_owned();
        let output = git(None, &["clone", "--mirror", "--quiet", "--", url, &target]).await?;
        if !output.status.success() {
            let _ = std::fs::remove_dir_all(&mirror);
            bail!("git clone of {url} failed: {}", stderr_of(&output));
        }
    }
    Ok(mirror)
}

/// The branch the mirror's HEAD names.
pub async fn default_branch(mirror: &Path) -> anyhow::Result<Option<String>> {
    let output = git(Some(mirror), &["symbolic-ref", "--quiet", "HEAD"]).await?;
    if !output.status.success() {
        return Ok(None);
    }
    let head = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    Ok(head.strip_prefix("refs/heads/").map(str::to_owned))
}

/// Resolves a ref (`refs/heads/main`, a sha) to a full commit id, or `None` if it is not one.
pub async fn resolve_commit(mirror: &Path, reference: &str) -> anyhow::Result<Option<String>> {
    if reference.starts_with('-') {
        return Ok(None);
    }
    let spec = format!("{reference}^{{commit}}");
    let output = git(Some(mirror), &["rev-parse", "--verify", "--quiet", &spec]).await?;
    if !output.status.success() {
        return Ok(None);
    }
    Ok(Some(
        String::from_utf8_lossy(&output.stdout).trim().to_owned(),
    ))
}

/// Whether `ancestor` is reachable from `descendant`.
pub async fn is_ancestor(mirror: &Path, ancestor: &str, descendant: &str) -> anyhow::Result<bool> {
    let output = git(
        Some(mirror),
        &["merge-base", "--is-ancestor", ancestor, descendant],
    )
    .await?;
    Ok(output.status.success())
}

/// Reads `path` at `revision`; `None` if the file does not exist there.
pub async fn read_file(
    mirror: &Path,
    revision: &str,
    path: &str,
) -> anyhow::Result<Option<String>> {
    let spec = format!("{revision}:{path}");
    let size = git(Some(mirror), &["cat-file", "-s", &spec]).await?;
    if !size.status.success() {
        return Ok(None);
    }
    let bytes: usize = String::from_utf8_lossy(&size.stdout)
        .trim()
        .parse()
        .unwrap_or(usize::MAX);
    if bytes > MAX_CONFIG_BYTES {
        bail!("{path} at {revision} is {bytes} bytes, more than the limit of {MAX_CONFIG_BYTES}");
    }
    let output = git(Some(mirror), &["cat-file", "blob", &spec]).await?;
    if !output.status.success() {
        bail!("reading {path} at {revision}: {}", stderr_of(&output));
    }
    String::from_utf8(output.stdout)
        .map(Some)
        .map_err(|_| anyhow::anyhow!("{path} at {revision} is not UTF-8"))
}
