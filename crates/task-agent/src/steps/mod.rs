//! Step types and what they share: the job's environment and directories, and how a process's
//! end becomes a step's status.
//!
//! Each step type is a module with an async `execute(job, log, step, control)` returning a
//! [`StepResult`]; the [`crate::engine`] sends `StepStarted`/`StepFinished` around it. New step
//! types (caches, workspaces, artifacts, test results) add a module here and a match arm there.

pub mod archive;
pub mod artifacts;
pub mod cache;
pub mod checkout;
pub mod git_auth;
pub mod run;
pub mod ssh_keys;
pub mod template;
pub mod test_results;
pub mod transfer;
pub mod workspace;

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use bosun_protocol::StepStatus;
use bosun_protocol::task::TaskSpec;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use tokio::sync::watch;

use crate::link::{Control, Lost, Outbox};
use crate::process::{Ended, Groups};

/// Shell for `run` steps when neither the step nor the job names one (CircleCI's default).
pub const DEFAULT_SHELL: &str = "/bin/bash -eo pipefail";

/// `PATH` behind [`Job::bin_dir`] when neither the task nor the agent has one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `no_output_timeout` when the step does not set one: 10 minutes.
pub const DEFAULT_NO_OUTPUT_TIMEOUT: Duration = Duration::from_secs(600);

/// Everything a step needs to know about its job. Shared (`Arc`) with background steps.
#[derive(Debug)]
pub struct Job {
    pub task: TaskSpec,
    /// The task's directory: the agent's working directory at start.
    pub task_dir: PathBuf,
    /// `$HOME`, for `~` in paths; the task directory if unset.
    pub home: PathBuf,
    /// The job's working directory, absolute.
    pub working_dir: PathBuf,
    /// Built-in CircleCI variables, then the task's secrets, then its `environment`.
    pub env: BTreeMap<String, String>,
    /// A private directory outside the checkout for step scripts.
    pub scripts_dir: PathBuf,
    /// `<scripts_dir>/bin`: `circleci` and `circleci-agent`, symlinks to this executable, first
    /// on every step's `PATH` (see [`Job::prepare_dirs`]).
    pub bin_dir: PathBuf,
    /// `<scripts_dir>/task-data` (0700), `$CIRCLE_INTERNAL_TASK_DATA` in every step: where
    /// `circleci-agent step halt` leaves its marker for the engine.
    pub task_data: PathBuf,
    pub out: Outbox,
    /// Grace between SIGTERM and SIGKILL when a step is stopped for its no-output timeout.
    pub kill_grace: Duration,
    /// Process groups of the steps started so far, swept at the end of the task.
    pub groups: Mutex<Groups>,
    /// What `add_ssh_keys` steps put into `~/.ssh`, removed at the end of the task
    /// ([`Job::remove_ssh_keys`]).
    pub ssh_keys_installed: Mutex<ssh_keys::Installed>,
}

impl Job {
    /// Prepares the job: resolves its working directory and environment.
    pub fn new(
        task: TaskSpec,
        task_dir: PathBuf,
        scripts_dir: PathBuf,
        out: Outbox,
        kill_grace: Duration,
    ) -> Job {
        let home = std::env::var_os("HOME")
            .filter(|home| !home.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| task_dir.clone());
        let working_dir = match &task.working_directory {
            None => task_dir.clone(),
            Some(dir) => resolve_path(&task_dir, dir, &home),
        };
        let bin_dir = scripts_dir.join("bin");
        let task_data = scripts_dir.join("task-data");
        // CircleCI's precedence: built-ins, then project and context variables (`secrets`, in
        // the order the server merged them), then the job's `environment`; a step's own
        // `environment` goes on top in `step_env`.
        let mut env = builtin_env(&task, &working_dir);
        env.extend(
            task.secrets
                .0
                .iter()
                .map(|(name, value)| (name.clone(), value.clone())),
        );
        env.extend(
            task.environment
                .iter()
                .map(|(name, value)| (name.clone(), value.clone())),
        );
        // Ours, whatever the task says: the CLI finds its directory by it.
        env.insert(
            crate::cli::TASK_DATA_ENV.to_owned(),
            task_data.to_string_lossy().into_owned(),
        );
        Job {
            task,
            task_dir,
            home,
            working_dir,
            env,
            scripts_dir,
            bin_dir,
            task_data,
            out,
            kill_grace,
            groups: Mutex::new(Groups::default()),
            ssh_keys_installed: Mutex::new(ssh_keys::Installed::default()),
        }
    }

    /// Makes [`Job::bin_dir`] (with its two symlinks to `/proc/self/exe`, resolved) and
    /// [`Job::task_data`], as the job user, before the first step. Errors name the path.
    pub fn prepare_dirs(&self) -> std::io::Result<()> {
        use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
        let named = |path: &Path, err: std::io::Error| {
            std::io::Error::new(err.kind(), format!("{}: {err}", path.display()))
        };
        let exe = std::fs::read_link("/proc/self/exe")
            .map_err(|err| named(Path::new("/proc/self/exe"), err))?;
        for dir in [&self.bin_dir, &self.task_data] {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .recursive(true)
                .create(dir)
                .map_err(|err| named(dir, err))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|err| named(dir, err))?;
        }
        for name in ["circleci", "circleci-agent"] {
            let link = self.bin_dir.join(name);
            match std::fs::remove_file(&link) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(named(&link, err)),
            }
            std::os::unix::fs::symlink(&exe, &link).map_err(|err| named(&link, err))?;
        }
        Ok(())
    }

    /// Whether a step ran `circleci-agent step halt`.
    pub fn halted(&self) -> bool {
        self.task_data.join(crate::cli::HALT_MARKER).exists()
    }

    /// Remembers a step's process group for the sweep at the end of the task.
    pub fn track(&self, pgid: Pid) {
        self.groups
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .add(pgid);
    }

    /// Kills what is left in the process groups of every step.
    pub fn sweep(&self) {
        self.groups
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .sweep();
    }

    /// Fails a step before it could start a process, with `message` in its log (stream `log`).
    pub async fn fail(&self, log: u32, message: String) -> Result<StepResult, Lost> {
        self.out.text(log, message).await?;
        Ok(StepResult::failed(None))
    }

    /// A directory named by a step (`working_directory`, `path`): relative to the job's working
    /// directory, `~` is `$HOME`.
    pub fn step_dir(&self, dir: Option<&str>) -> PathBuf {
        match dir {
            None => self.working_dir.clone(),
            Some(dir) => resolve_path(&self.working_dir, dir, &self.home),
        }
    }

    /// The job's environment with a step's `environment` on top, and [`Job::bin_dir`] first on
    /// its `PATH` (the task's, else the agent's, else a standard one), even when the host has a
    /// `circleci` of its own.
    pub fn step_env(&self, step_env: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut env = self.env.clone();
        env.extend(
            step_env
                .iter()
                .map(|(name, value)| (name.clone(), value.clone())),
        );
        let rest = env
            .get("PATH")
            .cloned()
            .or_else(|| std::env::var("PATH").ok())
            .filter(|path| !path.is_empty())
            .unwrap_or_else(|| DEFAULT_PATH.to_owned());
        env.insert(
            "PATH".to_owned(),
            format!("{}:{rest}", self.bin_dir.display()),
        );
        env
    }
}

/// How a step ended, for `StepFinished`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepResult {
    pub status: StepStatus,
    pub exit_code: Option<i32>,
}

impl StepResult {
    pub fn failed(exit_code: Option<i32>) -> StepResult {
        StepResult {
            status: StepStatus::Failed,
            exit_code,
        }
    }
}

impl StepResult {
    pub fn success() -> StepResult {
        StepResult {
            status: StepStatus::Success,
            exit_code: Some(0),
        }
    }
}

/// A step that was stopped (a cancel, the end of the task, the launch-agent gone) between or
/// during transfers: says so in its log and returns its result.
pub async fn canceled(
    out: &Outbox,
    log: u32,
    control: &watch::Receiver<Control>,
) -> Result<StepResult, Lost> {
    let reason = match &*control.borrow() {
        Control::Lost => return Err(Lost),
        Control::Cancel { reason, .. } => reason.clone(),
        Control::Run | Control::Finish { .. } => "the task is ending".to_owned(),
    };
    out.text(log, format!("\nCanceled: {reason}\n")).await?;
    Ok(StepResult {
        status: StepStatus::Canceled,
        exit_code: None,
    })
}

/// Maps a supervised process's end to the step's result and writes CircleCI's closing line, if
/// any, to the step's log.
pub async fn conclude(out: &Outbox, stream: u32, ended: Ended) -> Result<StepResult, Lost> {
    let (result, line) = match ended {
        Ended::Exited(status) => match (status.code(), exit_signal(&status)) {
            (Some(0), _) => (
                StepResult {
                    status: StepStatus::Success,
                    exit_code: Some(0),
                },
                None,
            ),
            (Some(code), _) => (
                StepResult::failed(Some(code)),
                Some(format!("\nExited with code exit status {code}\n")),
            ),
            (None, signal) => (
                StepResult::failed(None),
                Some(format!("\nExited with signal {signal}\n")),
            ),
        },
        Ended::TimedOut(after) => (
            StepResult::failed(None),
            Some(format!(
                "\nToo long with no output (exceeded {}): context deadline exceeded\n",
                go_duration(after)
            )),
        ),
        Ended::Canceled(reason) => (
            StepResult {
                status: StepStatus::Canceled,
                exit_code: None,
            },
            Some(format!("\nCanceled: {reason}\n")),
        ),
        // A background step still running when the job ended: stopping it is the normal end.
        Ended::Finished => (
            StepResult {
                status: StepStatus::Success,
                exit_code: None,
            },
            None,
        ),
        Ended::Lost => return Err(Lost),
        Ended::WaitFailed(err) => (
            StepResult::failed(None),
            Some(format!(
                "\ntask-agent: cannot wait for the step's process: {err}\n"
            )),
        ),
    };
    if let Some(line) = line {
        out.text(stream, line).await?;
    }
    Ok(result)
}

fn exit_signal(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match status.signal() {
        Some(number) => match Signal::try_from(number) {
            Ok(signal) => signal.as_str().to_owned(),
            Err(_) => format!("{number}"),
        },
        None => "(unknown)".to_owned(),
    }
}

/// CircleCI's built-in variables for a job.
pub fn builtin_env(task: &TaskSpec, working_dir: &Path) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let mut set = |name: &str, value: String| {
        env.insert(name.to_owned(), value);
    };
    set("CI", "true".into());
    set("CIRCLECI", "true".into());
    if let Some(branch) = &task.branch {
        set("CIRCLE_BRANCH", branch.clone());
    }
    if let Some(tag) = &task.tag {
        set("CIRCLE_TAG", tag.clone());
    }
    set("CIRCLE_SHA1", task.revision.clone());
    set("CIRCLE_JOB", task.job_name.clone());
    set("CIRCLE_BUILD_NUM", task.build_num.to_string());
    set(
        "CIRCLE_WORKING_DIRECTORY",
        working_dir.to_string_lossy().into_owned(),
    );
    set("CIRCLE_PIPELINE_ID", task.pipeline_id.clone());
    set("CIRCLE_WORKFLOW_ID", task.workflow_id.clone());
    set("CIRCLE_WORKFLOW_JOB_ID", task.job_id.clone());
    set("CIRCLE_NODE_INDEX", task.parallel_index.to_string());
    set("CIRCLE_NODE_TOTAL", task.parallel_total.to_string());
    set("CIRCLE_REPOSITORY_URL", task.repository_url.clone());
    // The task's marker: the launch-agent's startup sweep and the tests find a task's processes
    // by it in /proc/<pid>/environ.
    set("BOSUN_TASK_ID", task.task_id.clone());
    let mut segments = task
        .project_slug
        .split('/')
        .filter(|segment| !segment.is_empty())
        .rev();
    if let Some(repo) = segments.next() {
        set("CIRCLE_PROJECT_REPONAME", repo.to_owned());
    }
    if let Some(user) = segments.next() {
        set("CIRCLE_PROJECT_USERNAME", user.to_owned());
    }
    env
}

/// `path` resolved against `base`: `~` and `~/...` are under `home`, absolute paths stay, others
/// are joined to `base`. `.` components are dropped so the result reads cleanly.
pub fn resolve_path(base: &Path, path: &str, home: &Path) -> PathBuf {
    let joined = if path == "~" {
        home.to_path_buf()
    } else if let Some(rest) = path.strip_prefix("~/") {
        home.join(rest)
    } else {
        base.join(path)
    };
    joined
        .components()
        .filter(|component| !matches!(component, Component::CurDir))
        .collect()
}

/// A duration as Go prints it (`1s`, `1m30s`, `10m0s`, `1h0m0s`), which is what CircleCI shows.
pub fn go_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    let (hours, minutes, seconds) = (secs / 3600, secs % 3600 / 60, secs % 60);
    if hours > 0 {
        format!("{hours}h{minutes}m{seconds}s")
    } else if minutes > 0 {
        format!("{minutes}m{seconds}s")
    } else {
        format!("{seconds}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_like_go() {
        assert_eq!(go_duration(Duration::from_secs(1)), "1s");
        assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(go_duration(Duration::from_secs(600)), "10m0s");
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(go_duration(Duration::from_secs(3725)), "1h2m5s");
    }

    #[test]
    fn paths_resolve_like_circleci() {
        let base = Path::new("/task");
        let home = Path::new("/home/job");
        assert_eq!(resolve_path(base, ".", home), PathBuf::from("/task"));
        assert_eq!(
            resolve_path(base, "a/./b", home),
            PathBuf::from("/task/a/b")
        );
        assert_eq!(resolve_path(base, "~", home), PathBuf::from("/home/job"));
        assert_eq!(
            resolve_path(base, "~/project", home),
            PathBuf::from("/home/job/project")
        );
        assert_eq!(resolve_path(base, "/abs", home), PathBuf::from("/abs"));
        assert_eq!(resolve_path(base, "~x", home), PathBuf::from("/task/~x"));
    }
}
