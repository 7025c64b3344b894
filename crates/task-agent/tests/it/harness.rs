//! Plays the launch-agent: starts the real `task-agent` binary with the child end of a socketpair
//! on fd 3, hands it a task and records what comes back.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, IntoRawFd, RawFd};
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use bosun_protocol::task::{RunStep, Step, TaskSpec, When};
use bosun_protocol::{Connection, FrameCodec, Incoming, Message, StepStatus, TaskStatus};
use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

/// Upper bound for anything a test waits for, so a bug fails a test instead of hanging it.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub const ALLOW_ROOT_ENV: &str = "BOSUN_TASK_AGENT_ALLOW_ROOT";

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

pub fn task(steps: Vec<Step>) -> TaskSpec {
    TaskSpec {
        task_id: "task-1".into(),
        job_id: "job-1".into(),
        job_name: "build".into(),
        build_num: 42,
        pipeline_id: "pipeline-1".into(),
        pipeline_number: 7,
        workflow_id: "workflow-1".into(),
        project_slug: "gh/acme/rocket".into(),
        repository_url: "/nonexistent/repo".into(),
        branch: Some("main".into()),
        tag: None,
        revision: "0123456789abcdef0123456789abcdef01234567".into(),
        parallel_index: 1,
        parallel_total: 3,
        environment: BTreeMap::new(),
        working_directory: None,
        shell: None,
        steps,
        secrets: Default::default(),
        checkout_auth: None,
        ssh_keys: Vec::new(),
    }
}

pub fn run(name: &str, command: &str) -> RunStep {
    RunStep {
        name: name.into(),
        command: command.into(),
        shell: None,
        environment: BTreeMap::new(),
        working_directory: None,
        background: false,
        no_output_timeout_secs: None,
        max_auto_reruns: 0,
        auto_rerun_delay_secs: 0,
        when: When::OnSuccess,
    }
}

pub fn step(run: RunStep) -> Step {
    Step::Run(run)
}

/// How the test lets a root-run agent start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootMode {
    /// `--allow-root` when running as root (the usual test setting).
    Flag,
    /// `BOSUN_TASK_AGENT_ALLOW_ROOT=1` when running as root.
    Env,
    /// Neither.
    Refuse,
}

/// A started task-agent, before or after the handshake.
pub struct Agent {
    pub child: Child,
    pub conn: Connection<UnixStream>,
    stderr: JoinHandle<String>,
    /// Inode of the socket the agent got, to recognize it in `/proc/*/fd`.
    pub socket_inode: u64,
}

impl Agent {
    /// Starts the binary in `dir` with `extra_env`, the child end of a socketpair on fd 3.
    pub fn spawn(dir: &Path, root: RootMode, extra_env: &[(&str, &str)]) -> Agent {
        Agent::spawn_as(dir, root, extra_env, None)
    }

    /// Like [`Agent::spawn`], as user `uid` (group `gid`) when given (needs root).
    pub fn spawn_as(
        dir: &Path,
        root: RootMode,
        extra_env: &[(&str, &str)],
        user: Option<(u32, u32)>,
    ) -> Agent {
        let (parent, child_end) = std::os::unix::net::UnixStream::pair().unwrap();
        let socket_inode = nix::sys::stat::fstat(&child_end).unwrap().st_ino;
        let fd = child_end.as_raw_fd();
        let mut command = bin_command(env!("CARGO_BIN_EXE_task-agent"));
        command
            .current_dir(dir)
            .env_remove(ALLOW_ROOT_ENV)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        match root {
            RootMode::Flag if is_root() => {
                command.arg("--allow-root");
            }
            RootMode::Env if is_root() => {
                command.env(ALLOW_ROOT_ENV, "1");
            }
            _ => {}
        }
        for (name, value) in extra_env {
            command.env(name, value);
        }
        if let Some((uid, gid)) = user {
            command.uid(uid).gid(gid);
        }
        // SAFETY: the closure runs in the forked child before exec and only calls fcntl/dup2
        // (async-signal-safe) on fds that are open in the child: `fd` (kept alive by `child_end`
        // until after spawn) and 3.
        unsafe {
            command.pre_exec(move || place_on_fd3(fd));
        }
        let mut child = command.spawn().unwrap();
        drop(child_end);
        let mut stderr_pipe = child.stderr.take().unwrap();
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            let _ = stderr_pipe.read_to_string(&mut text).await;
            text
        });
        parent.set_nonblocking(true).unwrap();
        let conn = Connection::new(UnixStream::from_std(parent).unwrap(), FrameCodec::default());
        Agent {
            child,
            conn,
            stderr,
            socket_inode,
        }
    }

    /// Starts the agent (as root with `--allow-root`) and hands it `task`.
    pub async fn start(task: &TaskSpec, dir: &Path) -> Agent {
        Agent::start_with(task, dir, RootMode::Flag, &[]).await
    }

    pub async fn start_with(
        task: &TaskSpec,
        dir: &Path,
        root: RootMode,
        extra_env: &[(&str, &str)],
    ) -> Agent {
        let mut agent = Agent::spawn(dir, root, extra_env);
        tokio::time::timeout(PATIENCE, agent.conn.handshake_as_launch_agent(task))
            .await
            .expect("handshake timed out")
            .expect("handshake failed");
        agent
    }

    /// The next frame from the agent (`None` when it closed the socket). The timings download
    /// a task of a parallel job asks for before its first step is answered `NotFound` here
    /// (the tests' task is node 1 of 3), so tests see only what their steps send.
    pub async fn next(&mut self) -> Option<Incoming> {
        loop {
            let incoming = tokio::time::timeout(PATIENCE, self.conn.recv())
                .await
                .expect("no frame from the task-agent in time")
                .expect("bad frame from the task-agent");
            if let Some(Incoming::Message(Message::Download {
                stream,
                kind: bosun_protocol::BlobKind::TestResults,
                keys,
            })) = &incoming
            {
                if keys.is_empty() {
                    let stream = *stream;
                    self.send(Message::NotFound { stream }).await;
                    continue;
                }
            }
            return incoming;
        }
    }

    pub async fn send(&mut self, message: Message) {
        self.conn.send(&message).await.unwrap();
    }

    /// Reads until `TaskFinished`, then waits for the agent to exit.
    pub async fn finish(mut self, mut report: Report) -> Report {
        loop {
            match self.next().await {
                None => panic!("task-agent closed the socket before TaskFinished: {report:?}"),
                Some(incoming) => {
                    let done = matches!(incoming, Incoming::Message(Message::TaskFinished { .. }));
                    report.record(incoming);
                    if done {
                        break;
                    }
                }
            }
        }
        let (exit, stderr) = self.exit().await;
        report.exit = Some(exit);
        report.stderr = stderr;
        report
    }

    /// Waits for the agent to exit; returns its status and stderr.
    pub async fn exit(self) -> (ExitStatus, String) {
        let Agent {
            child,
            conn,
            stderr,
            ..
        } = self;
        let result = wait(child, stderr).await;
        drop(conn);
        result
    }

    /// Closes the launch-agent's end of the socket (as if it died), then waits for the agent.
    pub async fn hang_up(self) -> (ExitStatus, String) {
        let Agent {
            child,
            conn,
            stderr,
            ..
        } = self;
        drop(conn);
        wait(child, stderr).await
    }
}

/// A command that starts our binary `path`, through the cross-test runner when there is one
/// (`qemu-s390x -L /usr/s390x-linux-gnu PATH` when the tests run under qemu-user, as
/// `cargo xtask cross test` arranges; binfmt handlers are not registered on purpose).
pub fn bin_command(path: &str) -> Command {
    Command::from(std_bin_command(path))
}

/// [`bin_command`] for `std::process`.
pub fn std_bin_command(path: &str) -> std::process::Command {
    match cross_runner() {
        Some(mut runner) => {
            let mut command = std::process::Command::new(runner.remove(0));
            command.args(runner).arg(path);
            command
        }
        None => std::process::Command::new(path),
    }
}

/// The runner cargo uses for this test binary's target: `CARGO_TARGET_<TRIPLE>_RUNNER`, which
/// `cargo xtask cross test` exports with the value of `.cargo/config.toml`. Matched by the
/// architecture this binary was compiled for, so a runner for another target is ignored.
fn cross_runner() -> Option<Vec<String>> {
    let arch = match std::env::consts::ARCH {
        "powerpc64" => "POWERPC64LE".to_string(),
        arch => arch.to_uppercase(),
    };
    let prefix = format!("CARGO_TARGET_{arch}_");
    std::env::vars().find_map(|(name, value)| {
        let words: Vec<String> = value.split_whitespace().map(str::to_string).collect();
        (name.starts_with(&prefix) && name.ends_with("_RUNNER") && !words.is_empty())
            .then_some(words)
    })
}

async fn wait(mut child: Child, stderr: JoinHandle<String>) -> (ExitStatus, String) {
    let status = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .expect("task-agent did not exit")
        .unwrap();
    (status, stderr.await.unwrap())
}

fn place_on_fd3(fd: RawFd) -> io::Result<()> {
    if fd == 3 {
        // SAFETY: fd 3 is the child end of the socketpair, open in this (forked) process.
        let fd3 = unsafe { BorrowedFd::borrow_raw(3) };
        fcntl(fd3, FcntlArg::F_SETFD(FdFlag::empty()))?;
    } else {
        // SAFETY: `fd` is the child end of the socketpair, open in this (forked) process.
        let source = unsafe { BorrowedFd::borrow_raw(fd) };
        // SAFETY: between fork and exec nothing else in this process uses fd 3; dup2 replaces
        // whatever was there (close-on-exec copies of the parent's fds) with the socket, without
        // the close-on-exec flag.
        let placed = unsafe { nix::unistd::dup2_raw(source, 3) }?;
        // Keep fd 3 open for the exec.
        let _ = placed.into_raw_fd();
    }
    Ok(())
}

/// What the agent sent.
#[derive(Debug, Default)]
pub struct Report {
    pub messages: Vec<Message>,
    pub data: BTreeMap<u32, Vec<u8>>,
    pub exit: Option<ExitStatus>,
    pub stderr: String,
}

impl Report {
    pub fn record(&mut self, incoming: Incoming) {
        match incoming {
            Incoming::Message(message) => self.messages.push(message),
            Incoming::Data { stream, bytes } => self
                .data
                .entry(stream)
                .or_default()
                .extend_from_slice(&bytes),
        }
    }

    /// The id of step `step`'s log stream, as its `StepStarted` named it.
    pub fn log_stream(&self, step: u32) -> Option<u32> {
        self.messages.iter().find_map(|message| match message {
            Message::StepStarted { step: s, log, .. } if *s == step => Some(*log),
            _ => None,
        })
    }

    /// Step `step`'s log as text.
    pub fn log(&self, step: u32) -> String {
        let bytes = self
            .log_stream(step)
            .and_then(|stream| self.data.get(&stream));
        String::from_utf8_lossy(bytes.map_or(&[][..], |bytes| bytes)).into_owned()
    }

    pub fn started(&self, step: u32) -> bool {
        self.messages
            .iter()
            .any(|message| matches!(message, Message::StepStarted { step: s, .. } if *s == step))
    }

    /// Status and exit code of step `step`.
    pub fn finished(&self, step: u32) -> (StepStatus, Option<i32>) {
        self.messages
            .iter()
            .find_map(|message| match message {
                Message::StepFinished {
                    step: s,
                    status,
                    exit_code,
                    ..
                } if *s == step => Some((*status, *exit_code)),
                _ => None,
            })
            .unwrap_or_else(|| panic!("step {step} never finished: {self:?}"))
    }

    pub fn task_status(&self) -> TaskStatus {
        match self.messages.last() {
            Some(Message::TaskFinished { status }) => *status,
            other => panic!("last message is not TaskFinished: {other:?}"),
        }
    }

    /// The agent exited 0, as it does whatever the task's status.
    pub fn assert_clean_exit(&self) {
        let exit = self.exit.expect("agent not waited for");
        assert!(
            exit.success(),
            "task-agent exited with {exit}: {}",
            self.stderr
        );
    }
}

/// Runs `task` in `dir` to the end.
pub async fn run_task(task: &TaskSpec, dir: &Path) -> Report {
    Agent::start(task, dir)
        .await
        .finish(Report::default())
        .await
}

/// Whether process `pid` is gone (or a zombie about to be), waiting up to a few seconds.
pub async fn process_gone(pid: i32) -> bool {
    for _ in 0..50 {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return true,
            Ok(stat) => {
                // The state follows the `(comm)` field.
                let state = stat.rsplit(')').next().unwrap_or("").trim_start();
                if state.starts_with('Z') || state.starts_with('X') {
                    return true;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}
