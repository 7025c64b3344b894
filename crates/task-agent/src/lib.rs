//! bosun's task-agent: runs one task's steps as the job user and streams their output to the
//! launch-agent that started it.
//!
//! The launch-agent starts `task-agent [--socket-fd N] [--allow-root]` with its working directory
//! set to the task's directory and one end of a `socketpair()` on fd `N` (3 by default). The agent
//! marks that fd close-on-exec (no step ever inherits it), says hello, receives the
//! [`TaskSpec`](bosun_protocol::task::TaskSpec) and runs its steps in order:
//!
//! - [`link`]: the one task that owns the socket: it writes what the steps send (messages, log
//!   and upload data, through a bounded channel, so a slow launch-agent slows the job instead of
//!   growing memory), allocates stream ids, reads `Cancel` or the end of the connection into a
//!   [`link::Control`] state and routes upload and download answers to the step that asked.
//! - [`engine`]: the step loop: `when` conditions, `StepStarted`/`StepFinished`, background steps,
//!   cancel, `TaskFinished`.
//! - [`steps`]: one module per step type (`run`, `checkout`), plus the job's environment and
//!   directories.
//! - [`process`]: spawning a step process in its own process group, killing the group, and
//!   supervising it (output, no-output timeout, cancel).
//! - [`mask`]: secret masking of every log byte, streaming across chunks; [`runtime_mask`]: the
//!   socket `circleci-agent mask` registers values on.
//! - [`output`]: the one pipe that carries a step's stdout and stderr.
//! - [`cli`]: what the same executable does when called `circleci` or `circleci-agent` inside a
//!   job (`tests glob/split/run`, `step halt`, `env subst`).
//! - [`isolation`]: what the agent does to itself first: not dumpable, no new privileges, a
//!   session of its own without a terminal, and the private directory for step scripts.

pub mod cli;
pub mod containment;
pub mod engine;
pub mod isolation;
pub mod junit;
pub mod link;
pub mod mask;
pub mod output;
pub mod process;
pub mod runtime_mask;
pub mod steps;

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use anyhow::Context as _;
use bosun_protocol::{Connection, FrameCodec, TaskStatus};
use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sys::stat::{SFlag, fstat};

/// This build's version: `BOSUN_VERSION` at build time (what `cargo xtask release --version`
/// sets), else the crate's.
pub const VERSION: &str = match option_env!("BOSUN_VERSION") {
    Some(version) => version,
    None => env!("CARGO_PKG_VERSION"),
};

/// Environment variable that has the same effect as `--allow-root`.
pub const ALLOW_ROOT_ENV: &str = "BOSUN_TASK_AGENT_ALLOW_ROOT";

/// How the task-agent was invoked.
#[derive(Debug, Clone)]
pub struct Options {
    /// The inherited socket to the launch-agent.
    pub socket_fd: RawFd,
    /// Command-prefix mode (`sudo -u job-user -- task-agent --connect PATH`): sudo closes
    /// inherited descriptors, so connect to the launch-agent's listening socket at this path
    /// instead, presenting the one-time token read from stdin.
    pub connect: Option<PathBuf>,
    /// The task's directory, when the current directory is not it (`sudo -i` starts in HOME).
    pub work_dir: Option<PathBuf>,
    /// The private (0700, ours) directory for step scripts the launch-agent made beside the task
    /// directory; without it, a private temporary directory.
    pub scripts_dir: Option<PathBuf>,
    /// Run even as uid 0. Only for containers (where root may be the only user) and tests: on a
    /// host the launch-agent always starts the task-agent as the unprivileged job user.
    pub allow_root: bool,
    /// Grace between SIGTERM and SIGKILL when a step is stopped for its no-output timeout
    /// (cancels carry their own grace).
    pub kill_grace: std::time::Duration,
}

/// Why the task-agent stopped without finishing its task.
#[derive(Debug)]
pub enum RunError {
    /// Wrong invocation (no socket, running as root): exit code 2.
    Usage(String),
    /// Anything else, such as losing the launch-agent: exit code 1.
    Internal(anyhow::Error),
}

impl RunError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Usage(_) => 2,
            RunError::Internal(_) => 1,
        }
    }
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Usage(message) => f.write_str(message),
            RunError::Internal(err) => write!(f, "{err:#}"),
        }
    }
}

impl std::error::Error for RunError {}

/// Runs the task-agent to completion: handshake, every step, `TaskFinished`.
///
/// Returns the task's status once the launch-agent has been told; the process should then exit 0
/// whatever the status (the launch-agent reads it from the messages).
pub fn run(options: Options) -> Result<TaskStatus, RunError> {
    // Before anything else: from here on the job user cannot read this process's memory or take
    // its descriptors, and nothing it starts can gain privileges.
    isolation::harden().map_err(RunError::Usage)?;
    // No terminal of anyone's (root's shell, when the launch-agent was started by hand) stays
    // reachable from a step.
    isolation::leave_terminal().map_err(RunError::Usage)?;
    // Then, so that nothing this process ever starts inherits the socket.
    let (socket, token) = match &options.connect {
        None => (
            take_socket(options.socket_fd).map_err(RunError::Usage)?,
            None,
        ),
        Some(path) => {
            let (socket, token) = connect(path).map_err(RunError::Usage)?;
            (socket, Some(token))
        }
    };
    if !options.allow_root && running_as_root() {
        return Err(RunError::Usage(format!(
            "refusing to run as root (uid 0): the launch-agent starts task-agent as the job user; \
             pass --allow-root or set {ALLOW_ROOT_ENV}=1 only inside containers and tests"
        )));
    }
    // Daemons a step leaves behind are re-parented here, not to init, so the end-of-task sweep
    // finds them (see `containment`).
    containment::become_subreaper()
        .context("cannot become a child subreaper")
        .map_err(RunError::Internal)?;
    if let Some(dir) = &options.work_dir {
        std::env::set_current_dir(dir)
            .with_context(|| format!("cannot enter the task's directory {}", dir.display()))
            .map_err(RunError::Internal)?;
    }
    let task_dir = std::env::current_dir()
        .context("cannot read the current directory (the task's directory)")
        .map_err(RunError::Internal)?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .map_err(RunError::Internal)?;
    let scripts = isolation::ScriptsDir::open(options.scripts_dir.as_deref())
        .map_err(|err| RunError::Internal(anyhow::anyhow!(err)))?;
    let result = runtime.block_on(agent(socket, token, task_dir, &scripts, options.kill_grace));
    scripts.clear();
    result.map_err(RunError::Internal)
}

async fn agent(
    socket: OwnedFd,
    token: Option<String>,
    task_dir: PathBuf,
    scripts: &isolation::ScriptsDir,
    kill_grace: std::time::Duration,
) -> anyhow::Result<TaskStatus> {
    // SIGTERM (the parent-death signal the launch-agent sets, or a stop) ends the task the way
    // losing the socket does: every step is killed and swept before the agent exits.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot handle SIGTERM")?;
    let stop = async move {
        terminate.recv().await;
    };
    let stream = std::os::unix::net::UnixStream::from(socket);
    stream.set_nonblocking(true)?;
    let stream = tokio::net::UnixStream::from_std(stream)?;
    let mut conn = Connection::new(stream, FrameCodec::default());
    let task = conn
        .handshake_as_task_agent_with_token(VERSION, token.as_deref())
        .await
        .context("handshake with the launch-agent failed")?;
    tracing::info!(
        task_id = %task.task_id,
        job = %task.job_name,
        steps = task.steps.len(),
        "task received"
    );

    let (outbox, control, link) = link::spawn_until(conn, stop);
    let result = engine::run_task(
        task,
        task_dir,
        scripts.path().to_path_buf(),
        outbox,
        control,
        kill_grace,
    )
    .await;
    // The engine dropped its outbox: the link flushes what is queued and ends.
    let link_result = link.await.context("the socket task panicked")?;
    match result {
        Ok(status) => {
            link_result.context("cannot send the task's end to the launch-agent")?;
            tracing::info!(status = status.as_str(), "task finished");
            Ok(status)
        }
        Err(link::Lost) => {
            let reason = match link_result {
                Ok(()) => "connection closed".to_owned(),
                Err(err) => err.to_string(),
            };
            anyhow::bail!("lost the connection to the launch-agent ({reason}); stopped the task")
        }
    }
}

/// Reads the one-time token (one line, at most 256 bytes) from stdin and connects to the
/// launch-agent's socket at `path`. The socket is opened close-on-exec.
fn connect(path: &std::path::Path) -> Result<(OwnedFd, String), String> {
    use std::io::Read as _;
    let mut token = Vec::new();
    std::io::stdin()
        .lock()
        .take(257)
        .read_to_end(&mut token)
        .map_err(|err| format!("cannot read the task token from stdin: {err}"))?;
    let token = String::from_utf8(token)
        .map_err(|_| "the task token on stdin is not text".to_owned())?
        .trim()
        .to_owned();
    if token.is_empty() || token.len() > 256 {
        return Err("--connect needs the one-time task token (1 to 256 bytes) on stdin".into());
    }
    let stream = std::os::unix::net::UnixStream::connect(path).map_err(|err| {
        format!(
            "cannot connect to the launch-agent at {}: {err}",
            path.display()
        )
    })?;
    Ok((OwnedFd::from(stream), token))
}

/// Marks `fd` close-on-exec, checks that it is a socket and takes ownership of it.
fn take_socket(fd: RawFd) -> Result<OwnedFd, String> {
    if fd < 3 {
        return Err(format!(
            "--socket-fd {fd}: the launch-agent's socket cannot be stdin, stdout or stderr"
        ));
    }
    // SAFETY: `fd` is not -1 (checked above) and nothing in this process closes it while this
    // borrow lives (it is used only for the probes below). If it is not open, fcntl reports EBADF.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let flags = fcntl(borrowed, FcntlArg::F_GETFD).map_err(|_| {
        format!(
            "file descriptor {fd} is not open: task-agent is started by launch-agent, \
             with its socket on fd {fd}"
        )
    })?;
    let flags = FdFlag::from_bits_retain(flags) | FdFlag::FD_CLOEXEC;
    fcntl(borrowed, FcntlArg::F_SETFD(flags))
        .map_err(|err| format!("cannot mark fd {fd} close-on-exec: {err}"))?;
    let stat = fstat(borrowed.as_fd()).map_err(|err| format!("cannot stat fd {fd}: {err}"))?;
    if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFSOCK {
        return Err(format!(
            "file descriptor {fd} is not a socket: task-agent is started by launch-agent"
        ));
    }
    // SAFETY: `fd` is open (F_GETFD succeeded), it is the socket the launch-agent handed to this
    // process, and nothing else in the process owns it: this is the one place that takes it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn running_as_root() -> bool {
    nix::unistd::getuid().is_root() || nix::unistd::geteuid().is_root()
}
