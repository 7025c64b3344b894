//! `checkout`: the project's repository at the task's revision, with the real `git`.
//!
//! Into a missing or empty directory: `git clone --no-checkout`. Into a non-empty directory
//! without `.git`: `git init` and a remote. An existing clone is fetched again. Then, if the
//! revision is still missing, it is fetched by id, and checked out: on the task's branch
//! (`checkout --force -B <branch> <revision>`) or detached (tags). Every git command runs like a
//! step process (own process group, output into the step's log, cancel, no-output timeout).
//!
//! The task's checkout credentials (an SSH key with its `known_hosts`, or an HTTPS token) are
//! given to these git commands alone, from files that are removed when the step ends: see
//! [`super::git_auth`].

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;

use bosun_protocol::StepStatus;
use bosun_protocol::task::CheckoutStep;
use tokio::sync::watch;

use super::git_auth::{self, CheckoutCredentials, Transport};
use super::{DEFAULT_NO_OUTPUT_TIMEOUT, Job, StepResult, conclude};
use crate::link::{Control, Lost};
use crate::process::{CommandSpec, Ended, spawn, supervise};

/// Options given to every git command: the checkout directory may have been prepared by another
/// user (root), which git refuses by default ("dubious ownership").
const GIT_OPTIONS: [&str; 2] = ["-c", "safe.directory=*"];

/// The `upload-pack` command for a repository on this machine. It may belong to another user
/// than the job user (a root-owned repository read by the job user); git refuses that unless
/// `safe.directory` allows it, and git does not pass `-c` options on to the `upload-pack` it
/// starts for a local clone or fetch, so the option goes into the command itself (run by `sh`,
/// hence the quotes). Remote repositories are left alone.
const LOCAL_UPLOAD_PACK: &str = "git -c safe.directory='*' upload-pack";

/// Checks out the task's revision; the step's log is stream `log`.
pub async fn execute(
    job: &Job,
    log: u32,
    step: &CheckoutStep,
    control: &mut watch::Receiver<Control>,
) -> Result<StepResult, Lost> {
    let task = &job.task;
    let target = job.step_dir(step.path.as_deref());
    let url = task.repository_url.as_str();
    let revision = task.revision.as_str();

    let at = match (&task.branch, &task.tag) {
        (Some(branch), _) => format!(" (branch {branch})"),
        (None, Some(tag)) => format!(" (tag {tag})"),
        (None, None) => String::new(),
    };
    job.out
        .text(log, format!("Cloning {url}{at} at {revision}\n"))
        .await?;

    let mut env = job.env.clone();
    env.insert("GIT_TERMINAL_PROMPT".into(), "0".into());
    // Held to the end of this function: dropping it removes the credential files, whichever way
    // the step ends.
    let credentials = match &task.checkout_auth {
        None => None,
        Some(auth) => {
            let transport = transport_of(url);
            match CheckoutCredentials::write(&job.scripts_dir, auth, transport) {
                Ok(credentials) => Some(credentials),
                Err(err) => {
                    let message =
                        format!("task-agent: cannot prepare the checkout's credentials: {err}\n");
                    return job.fail(log, message).await;
                }
            }
        }
    };
    let mut options: Vec<OsString> = GIT_OPTIONS.iter().map(OsString::from).collect();
    if let Some(credentials) = &credentials {
        env.extend(credentials.env.iter().cloned());
        options.extend(credentials.git_options.iter().map(OsString::from));
        if credentials.dir().is_some() {
            let what = match transport_of(url) {
                Transport::Https => "the project's HTTPS token",
                _ => "the project's checkout key",
            };
            job.out.text(log, format!("Using {what}\n")).await?;
        }
    }
    let mut git = Git {
        job,
        log,
        control,
        env,
        options,
    };

    let mut fresh_clone = false;
    if !target.join(".git").exists() {
        if is_missing_or_empty(&target) {
            let parent = target.parent().unwrap_or(&target).to_path_buf();
            if let Err(err) = std::fs::create_dir_all(&parent) {
                return job
                    .fail(
                        log,
                        format!("task-agent: cannot create {}: {err}\n", parent.display()),
                    )
                    .await;
            }
            let target_arg = target.as_os_str().to_owned();
            let mut args: Vec<OsString> = vec![
                "clone".into(),
                "--no-checkout".into(),
                // Through git's transport even for a local path: no hard links into the
                // source repository's objects.
                "--no-local".into(),
                "--quiet".into(),
            ];
            if is_local(url) {
                args.push(format!("--upload-pack={LOCAL_UPLOAD_PACK}").into());
            }
            args.extend(["--".into(), url.into(), target_arg]);
            if let Some(result) = git.run(&parent, args).await? {
                return Ok(result);
            }
            fresh_clone = true;
        } else if let Some(result) = git.run(&target, os(&["init", "--quiet"])).await? {
            return Ok(result);
        }
    }
    if is_local(url) {
        // Also for the job's own `git fetch` later.
        let args = os(&["config", "remote.origin.uploadpack", LOCAL_UPLOAD_PACK]);
        if let Some(result) = git.run(&target, args).await? {
            return Ok(result);
        }
    }
    if !fresh_clone {
        let commands: [&[&str]; 3] = [
            &["config", "remote.origin.url", url],
            &[
                "config",
                "--replace-all",
                "remote.origin.fetch",
                "+refs/heads/*:refs/remotes/origin/*",
            ],
            &["fetch", "--quiet", "--force", "--tags", "origin"],
        ];
        for args in commands {
            if let Some(result) = git.run(&target, os(args)).await? {
                return Ok(result);
            }
        }
    }
    if !has_commit(&target, revision, &git.env).await {
        let args = os(&["fetch", "--quiet", "--force", "origin", revision]);
        if let Some(result) = git.run(&target, args).await? {
            return Ok(result);
        }
    }
    let args = match &task.branch {
        Some(branch) => os(&["checkout", "--force", "-B", branch, revision]),
        None => os(&["checkout", "--force", "--detach", revision]),
    };
    if let Some(result) = git.run(&target, args).await? {
        return Ok(result);
    }
    Ok(StepResult {
        status: StepStatus::Success,
        exit_code: Some(0),
    })
}

struct Git<'a> {
    job: &'a Job,
    log: u32,
    control: &'a mut watch::Receiver<Control>,
    env: BTreeMap<String, String>,
    /// Before the subcommand: [`GIT_OPTIONS`] and the credential helper, if any.
    options: Vec<OsString>,
}

impl Git<'_> {
    /// Runs one git command in `dir`. `Ok(None)` when it succeeded, `Ok(Some(result))` when the
    /// step ends here (git failed, or the step was canceled or timed out).
    async fn run(&mut self, dir: &Path, args: Vec<OsString>) -> Result<Option<StepResult>, Lost> {
        let mut all = self.options.clone();
        all.extend(args);
        let spec = CommandSpec {
            program: "git",
            args: all,
            dir,
            env: &self.env,
        };
        let process = match spawn(&spec) {
            Ok(process) => process,
            Err(err) => {
                let message = format!("task-agent: cannot start git: {err}\n");
                return self.job.fail(self.log, message).await.map(Some);
            }
        };
        self.job.track(process.pgid());
        let ended = supervise(
            process,
            self.log,
            &self.job.out,
            DEFAULT_NO_OUTPUT_TIMEOUT,
            self.job.kill_grace,
            self.control,
        )
        .await;
        if let Ended::Exited(status) = &ended {
            if status.success() {
                return Ok(None);
            }
        }
        conclude(&self.job.out, self.log, ended).await.map(Some)
    }
}

/// Whether the clone in `dir` already has `revision` (quietly: a miss is not an error).
async fn has_commit(dir: &Path, revision: &str, env: &BTreeMap<String, String>) -> bool {
    let status = tokio::process::Command::new("git")
        .args(GIT_OPTIONS)
        .args(["cat-file", "-e", &format!("{revision}^{{commit}}")])
        .current_dir(dir)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
    matches!(status, Ok(status) if status.success())
}

/// Whether git reaches `url` through its local transport (a path or a `file://` URL), rather
/// than over the network (`https://`, `ssh://`, scp-like `host:path`).
fn is_local(url: &str) -> bool {
    if url.starts_with("file://") {
        return true;
    }
    if url.contains("://") {
        return false;
    }
    // scp-like syntax: a colon before the first slash.
    match (url.find(':'), url.find('/')) {
        (Some(colon), Some(slash)) => colon > slash,
        (Some(_), None) => false,
        (None, _) => true,
    }
}

fn transport_of(url: &str) -> Transport {
    git_auth::transport(url, is_local(url))
}

fn is_missing_or_empty(dir: &Path) -> bool {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => entries.next().is_none(),
        Err(err) => err.kind() == std::io::ErrorKind::NotFound,
    }
}

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

#[cfg(test)]
mod tests {
    use super::is_local;

    #[test]
    fn local_urls_are_paths_and_file_urls() {
        assert!(is_local("/srv/git/repo"));
        assert!(is_local("./repo"));
        assert!(is_local("file:///srv/git/repo"));
        assert!(is_local("/srv/a:b/repo"));
        assert!(!is_local("https://example.com/repo.git"));
        assert!(!is_local("ssh://git@example.com/repo.git"));
        assert!(!is_local("git@example.com:org/repo.git"));
    }
}
