//! Step processes: spawn one in its own process group with its output on one pipe, signal the
//! group, and supervise it to its end (forward output, no-output timeout, cancel, drain).
//!
//! Containment today is the process group: every signal goes to the whole group, and at the end of
//! the task [`Groups::sweep`] kills whatever is left in the groups of every step. A process that
//! leaves its group (`setsid`, a double fork into a new group) escapes that; the later containment
//! work (the launch-agent as child subreaper, a cgroup v2 per task) closes the gap where
//! [`supervise`] notes `Containment`.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};

use crate::link::{Control, Outbox};
use crate::output::{DRAIN_LIMIT, DRAIN_QUIET, OutputPipe, OutputReader};

/// Default grace between SIGTERM and SIGKILL when a step exceeds its no-output timeout; the
/// launch-agent passes its `runner.termination_grace_period` instead.
pub const TIMEOUT_KILL_GRACE: Duration = Duration::from_secs(10);

/// Grace between SIGTERM and SIGKILL for background steps still running when the task ends.
pub const BACKGROUND_KILL_GRACE: Duration = Duration::from_secs(2);

/// What to start.
#[derive(Debug)]
pub struct CommandSpec<'a> {
    pub program: &'a str,
    pub args: Vec<OsString>,
    pub dir: &'a Path,
    /// Added to (and overriding) the agent's own environment.
    pub env: &'a BTreeMap<String, String>,
}

/// A running step process: the leader of its own process group.
#[derive(Debug)]
pub struct StepProcess {
    child: Child,
    pgid: Pid,
    output: OutputReader,
}

impl StepProcess {
    /// The process group (equal to the leader's pid).
    pub fn pgid(&self) -> Pid {
        self.pgid
    }
}

/// Starts `spec` in a new process group, stdin `/dev/null`, stdout and stderr on one pipe.
pub fn spawn(spec: &CommandSpec<'_>) -> io::Result<StepProcess> {
    let (output, stdout, stderr) = OutputPipe::new()?.into_stdio()?;
    let mut command = Command::new(spec.program);
    command
        .args(&spec.args)
        .current_dir(spec.dir)
        .envs(spec.env)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0);
    let child = command.spawn()?;
    // The command holds the parent's copies of the write end; without dropping it the pipe never
    // reaches end of file.
    drop(command);
    let pid = child
        .id()
        .and_then(|pid| i32::try_from(pid).ok())
        .ok_or_else(|| io::Error::other("spawned process has no pid"))?;
    Ok(StepProcess {
        child,
        pgid: Pid::from_raw(pid),
        output,
    })
}

/// Sends `signal` to every process of group `pgid`; a group that no longer exists is not an error.
pub fn signal_group(pgid: Pid, signal: Signal) {
    match killpg(pgid, signal) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(err) => {
            tracing::warn!(pgid = pgid.as_raw(), %signal, %err, "cannot signal process group")
        }
    }
}

/// The process groups of a task's steps, killed at the end of the task.
#[derive(Debug, Default)]
pub struct Groups {
    pgids: Vec<Pid>,
}

impl Groups {
    pub fn add(&mut self, pgid: Pid) {
        self.pgids.push(pgid);
    }

    /// SIGKILLs whatever is left in every group (such as `server &` started by a step), then
    /// every other descendant of the task-agent: daemons that left their group were re-parented
    /// here, since the task-agent is a child subreaper (see [`crate::containment`]).
    pub fn sweep(&mut self) {
        for pgid in self.pgids.drain(..) {
            signal_group(pgid, Signal::SIGKILL);
        }
        let killed = crate::containment::kill_descendants();
        if killed > 0 {
            tracing::info!(killed, "killed processes the task left behind");
        }
    }
}

/// How a supervised process ended.
#[derive(Debug)]
pub enum Ended {
    /// It exited (or was killed by a signal nobody here sent).
    Exited(ExitStatus),
    /// No output for this long: stopped.
    TimedOut(Duration),
    /// Stopped because the launch-agent canceled the task.
    Canceled(String),
    /// Stopped because the task ended (background steps).
    Finished,
    /// The launch-agent is gone: killed.
    Lost,
    /// Waiting for it failed (should not happen).
    WaitFailed(io::Error),
}

#[derive(Debug)]
enum StopWhy {
    TimedOut,
    Canceled(String),
    Finished,
    Lost,
}

impl StopWhy {
    fn rank(&self) -> u8 {
        match self {
            StopWhy::Finished => 0,
            StopWhy::TimedOut => 1,
            StopWhy::Canceled(_) => 2,
            StopWhy::Lost => 3,
        }
    }
}

#[derive(Debug)]
struct Stop {
    why: StopWhy,
    /// When to SIGKILL the group; `None` once it has been.
    kill_at: Option<Instant>,
}

/// Runs `process` to its end.
///
/// Output is forwarded on `stream` as it is read. If there is no output for `no_output_timeout`,
/// or `control` leaves [`Control::Run`], the group gets SIGTERM and, after the grace, SIGKILL.
/// Once the process has exited, the pipe is drained until end of file, or until it has been quiet
/// for [`DRAIN_QUIET`] (a background grandchild may hold it open), at most [`DRAIN_LIMIT`].
pub async fn supervise(
    process: StepProcess,
    stream: u32,
    out: &Outbox,
    no_output_timeout: Duration,
    kill_grace: Duration,
    control: &mut watch::Receiver<Control>,
) -> Ended {
    let StepProcess {
        mut child,
        pgid,
        mut output,
    } = process;
    let far_future = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
    let mut status: Option<io::Result<ExitStatus>> = None;
    let mut exited_at = far_future;
    let mut eof = false;
    let mut last_output = Instant::now();
    let mut stop: Option<Stop> = None;
    let mut control_open = true;
    // Look at the current state once even if it changed before this step began.
    control.mark_changed();

    loop {
        if eof && status.is_some() {
            break;
        }
        let idle_deadline = last_output
            .checked_add(no_output_timeout)
            .unwrap_or(far_future);
        let kill_at = stop.as_ref().and_then(|stop| stop.kill_at);
        let drain_deadline =
            (last_output.max(exited_at) + DRAIN_QUIET).min(exited_at + DRAIN_LIMIT);
        let running = status.is_none();

        tokio::select! {
            chunk = output.next_chunk(), if !eof => match chunk {
                Ok(Some(bytes)) => {
                    if out.data(stream, bytes).await.is_err() {
                        // Nobody to report to: stop reading and kill the step.
                        eof = true;
                        escalate(&mut stop, pgid, running, StopWhy::Lost, Duration::ZERO);
                    }
                    // Counted after the send: time spent waiting for a slow launch-agent
                    // (backpressure) is not silence.
                    last_output = Instant::now();
                }
                Ok(None) => eof = true,
                Err(err) => {
                    tracing::warn!(stream, %err, "cannot read step output");
                    eof = true;
                }
            },
            waited = child.wait(), if running => {
                status = Some(waited);
                exited_at = Instant::now();
                if stop.is_some() {
                    // The step was being stopped: nothing of it may go on running.
                    signal_group(pgid, Signal::SIGKILL);
                }
                if matches!(stop, Some(Stop { why: StopWhy::Lost, .. })) {
                    // Nobody is left to read its output: do not wait for a daemon holding the
                    // pipe, the sweep kills it now.
                    eof = true;
                }
                // Containment: this is where the subreaper / cgroup work will also collect
                // descendants that left the process group.
            },
            () = sleep_until(idle_deadline), if running && stop.is_none() => {
                escalate(&mut stop, pgid, running, StopWhy::TimedOut, kill_grace);
            },
            () = sleep_until(kill_at.unwrap_or(far_future)), if running && kill_at.is_some() => {
                signal_group(pgid, Signal::SIGKILL);
                if let Some(stop) = stop.as_mut() {
                    stop.kill_at = None;
                }
            },
            changed = control.changed(), if control_open => {
                if changed.is_err() {
                    control_open = false;
                    continue;
                }
                let state = control.borrow_and_update().clone();
                if !running {
                    if state != Control::Run {
                        // Finished already; do not wait for a straggler's output.
                        break;
                    }
                    continue;
                }
                match state {
                    Control::Run => {}
                    Control::Cancel { reason, grace } => {
                        escalate(&mut stop, pgid, running, StopWhy::Canceled(reason), grace);
                    }
                    Control::Finish { grace } => {
                        escalate(&mut stop, pgid, running, StopWhy::Finished, grace);
                    }
                    Control::Lost => {
                        escalate(&mut stop, pgid, running, StopWhy::Lost, Duration::ZERO);
                    }
                }
            },
            () = sleep_until(drain_deadline), if !running && !eof => {
                tracing::debug!(stream, "step exited but its output pipe stays open; moving on");
                break;
            },
        }
    }

    let status = match status {
        Some(Ok(status)) => status,
        Some(Err(err)) => return Ended::WaitFailed(err),
        None => unreachable!("the loop ends only after the process exited"),
    };
    match stop.map(|stop| stop.why) {
        None => Ended::Exited(status),
        Some(StopWhy::TimedOut) => Ended::TimedOut(no_output_timeout),
        Some(StopWhy::Canceled(reason)) => Ended::Canceled(reason),
        Some(StopWhy::Finished) => Ended::Finished,
        Some(StopWhy::Lost) => Ended::Lost,
    }
}

/// Starts stopping the group (or escalates an ongoing stop to a stronger reason / shorter grace).
fn escalate(stop: &mut Option<Stop>, pgid: Pid, running: bool, why: StopWhy, grace: Duration) {
    if !running {
        return;
    }
    let now = Instant::now();
    match stop {
        None => {
            if grace.is_zero() {
                signal_group(pgid, Signal::SIGKILL);
                *stop = Some(Stop { why, kill_at: None });
            } else {
                signal_group(pgid, Signal::SIGTERM);
                *stop = Some(Stop {
                    why,
                    kill_at: Some(now + grace),
                });
            }
        }
        Some(current) => {
            if why.rank() > current.why.rank() {
                current.why = why;
            }
            if let Some(kill_at) = current.kill_at {
                if now + grace < kill_at {
                    if grace.is_zero() {
                        signal_group(pgid, Signal::SIGKILL);
                        current.kill_at = None;
                    } else {
                        current.kill_at = Some(now + grace);
                    }
                }
            }
        }
    }
}
