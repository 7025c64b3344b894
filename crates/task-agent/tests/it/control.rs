//! Process control: cancel, no-output timeout, background steps, stragglers, a vanished
//! launch-agent, and refusing root.

use std::time::{Duration, Instant};

use bosun_protocol::task::When;
use bosun_protocol::{Message, StepStatus, TaskStatus};

use crate::harness::{Agent, Report, RootMode, is_root, process_gone, run, run_task, step, task};

/// Reads frames into `report` until step `step`'s log contains `needle`.
async fn wait_for_output(agent: &mut Agent, report: &mut Report, step: u32, needle: &str) {
    while !report.log(step).contains(needle) {
        match agent.next().await {
            Some(incoming) => report.record(incoming),
            None => panic!("socket closed while waiting for {needle:?}: {report:?}"),
        }
    }
}

#[tokio::test]
async fn cancel_stops_the_running_step_and_skips_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let mut always = run("always", "echo should-not-start");
    always.when = When::Always;
    let task = task(vec![
        step(run("sleeps", "printf ready; sleep 100")),
        step(always),
    ]);
    let mut agent = Agent::start(&task, dir.path()).await;
    let mut report = Report::default();
    // `ready` has no newline: it only shows up here if output is not line-buffered.
    wait_for_output(&mut agent, &mut report, 0, "ready").await;
    let grace = Duration::from_millis(1000);
    let canceled_at = Instant::now();
    agent
        .send(Message::Cancel {
            reason: "canceled by a test".into(),
            grace_ms: 1000,
        })
        .await;
    let report = agent.finish(report).await;
    let took = canceled_at.elapsed();
    report.assert_clean_exit();
    assert!(
        took < grace + Duration::from_secs(2),
        "cancel took {took:?}"
    );
    assert_eq!(report.finished(0), (StepStatus::Canceled, None));
    assert!(report.log(0).starts_with("ready"), "{}", report.log(0));
    assert!(!report.started(1), "no step starts after a cancel");
    assert_eq!(report.task_status(), TaskStatus::Canceled);
}

#[tokio::test]
async fn cancel_escalates_to_sigkill_after_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let task = task(vec![step(run(
        "ignores TERM",
        "trap '' TERM; printf ready; while :; do sleep 0.1; done",
    ))]);
    let mut agent = Agent::start(&task, dir.path()).await;
    let mut report = Report::default();
    wait_for_output(&mut agent, &mut report, 0, "ready").await;
    let canceled_at = Instant::now();
    agent
        .send(Message::Cancel {
            reason: "stop".into(),
            grace_ms: 500,
        })
        .await;
    let report = agent.finish(report).await;
    let took = canceled_at.elapsed();
    assert!(
        took < Duration::from_millis(500) + Duration::from_secs(2),
        "cancel took {took:?}"
    );
    assert_eq!(report.finished(0), (StepStatus::Canceled, None));
    assert_eq!(report.task_status(), TaskStatus::Canceled);
}

#[tokio::test]
async fn no_output_timeout_stops_a_silent_step() {
    let dir = tempfile::tempdir().unwrap();
    let mut silent = run("silent", "echo start; sleep 30");
    silent.no_output_timeout_secs = Some(1);
    let task = task(vec![step(silent), step(run("next", "echo skipped"))]);
    let started = Instant::now();
    let report = run_task(&task, dir.path()).await;
    let took = started.elapsed();
    report.assert_clean_exit();
    assert!(took < Duration::from_secs(10), "timeout took {took:?}");
    assert_eq!(report.finished(0), (StepStatus::Failed, None));
    assert_eq!(
        report.log(0),
        "start\n\nToo long with no output (exceeded 1s): context deadline exceeded\n"
    );
    assert_eq!(report.finished(1), (StepStatus::Skipped, None));
    assert_eq!(report.task_status(), TaskStatus::Failed);
}

/// `max_auto_reruns`: a failed run runs again until it succeeds or the reruns run out.
#[tokio::test]
async fn max_auto_reruns_runs_a_failed_step_again() {
    let dir = tempfile::tempdir().unwrap();
    // Fails twice, then succeeds.
    let mut flaky = run(
        "flaky",
        "n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; echo run $n; [ $n -ge 3 ]",
    );
    flaky.max_auto_reruns = 3;
    flaky.auto_rerun_delay_secs = 1;
    let mut hopeless = run("hopeless", "echo no; exit 7");
    hopeless.max_auto_reruns = 1;
    hopeless.when = bosun_protocol::task::When::Always;
    let task = task(vec![step(flaky), step(hopeless)]);
    let started = Instant::now();
    let report = run_task(&task, dir.path()).await;
    report.assert_clean_exit();
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "the delay was not waited"
    );
    assert_eq!(report.finished(0), (StepStatus::Success, Some(0)));
    assert_eq!(
        report.log(0),
        "run 1\n\nExited with code exit status 1\ntask-agent: rerunning the step (rerun 1 of 3) \
         in 1s\nrun 2\n\nExited with code exit status 1\ntask-agent: rerunning the step (rerun 2 \
         of 3) in 1s\nrun 3\n"
    );
    assert_eq!(report.finished(1), (StepStatus::Failed, Some(7)));
    assert_eq!(report.log(1).matches("no\n").count(), 2);
    assert_eq!(report.task_status(), TaskStatus::Failed);
}

#[tokio::test]
async fn background_steps_stream_and_are_stopped_at_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = run("server", "echo $$ > bg.pid; printf bg-up; exec sleep 100");
    server.background = true;
    let task = task(vec![
        step(server),
        step(run(
            "uses it",
            "for i in $(seq 100); do [ -s bg.pid ] && break; sleep 0.1; done; echo fg",
        )),
    ]);
    let started = Instant::now();
    let report = run_task(&task, dir.path()).await;
    let took = started.elapsed();
    report.assert_clean_exit();
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert_eq!(report.log(0), "bg-up");
    assert_eq!(report.log(1), "fg\n");
    assert_eq!(report.finished(1), (StepStatus::Success, Some(0)));
    // Stopped because the job ended: that is how background steps normally end.
    assert_eq!(report.finished(0), (StepStatus::Success, None));
    assert_eq!(report.task_status(), TaskStatus::Success);
    let pid: i32 = std::fs::read_to_string(dir.path().join("bg.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        process_gone(pid).await,
        "background process {pid} survived the task"
    );
}

#[tokio::test]
async fn a_failed_background_step_fails_the_task() {
    let dir = tempfile::tempdir().unwrap();
    let mut failing = run("bg", "echo bg; exit 4");
    failing.background = true;
    let task = task(vec![step(failing), step(run("fg", "sleep 0.2; echo fg"))]);
    let report = run_task(&task, dir.path()).await;
    assert_eq!(report.finished(0), (StepStatus::Failed, Some(4)));
    assert_eq!(report.log(0), "bg\n\nExited with code exit status 4\n");
    assert_eq!(report.finished(1), (StepStatus::Success, Some(0)));
    assert_eq!(report.task_status(), TaskStatus::Failed);
}

#[tokio::test]
async fn a_grandchild_holding_the_pipe_does_not_hang_the_step() {
    let dir = tempfile::tempdir().unwrap();
    let task = task(vec![
        step(run(
            "leaves a child",
            "sleep 30 & echo $! > straggler.pid; echo done",
        )),
        step(run("next", "echo next")),
    ]);
    let started = Instant::now();
    let report = run_task(&task, dir.path()).await;
    let took = started.elapsed();
    report.assert_clean_exit();
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert_eq!(report.log(0), "done\n");
    assert_eq!(report.finished(0), (StepStatus::Success, Some(0)));
    assert_eq!(report.log(1), "next\n");
    let pid: i32 = std::fs::read_to_string(dir.path().join("straggler.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(process_gone(pid).await, "straggler {pid} survived the task");
}

#[tokio::test]
async fn losing_the_launch_agent_kills_the_step_and_fails_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let task = task(vec![step(run(
        "sleeps",
        "echo $$ > step.pid; printf go; exec sleep 100",
    ))]);
    let mut agent = Agent::start(&task, dir.path()).await;
    let mut report = Report::default();
    wait_for_output(&mut agent, &mut report, 0, "go").await;
    let (status, stderr) = agent.hang_up().await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("launch-agent"), "{stderr}");
    let pid: i32 = std::fs::read_to_string(dir.path().join("step.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(process_gone(pid).await, "step {pid} survived its agent");
}

#[tokio::test]
async fn refuses_to_run_as_root_without_allow_root() {
    if !is_root() {
        println!("skipped: not root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::spawn(dir.path(), RootMode::Refuse, &[]);
    let (status, stderr) = agent.exit().await;
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("root") && stderr.contains("--allow-root"),
        "{stderr}"
    );
}

#[tokio::test]
async fn without_the_socket_the_agent_explains_itself() {
    let dir = tempfile::tempdir().unwrap();
    let output = crate::harness::std_bin_command(env!("CARGO_BIN_EXE_task-agent"))
        .args(["--socket-fd", "97", "--allow-root"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not open"), "{stderr}");
}

#[tokio::test]
async fn sigterm_kills_every_step_and_daemon_before_the_agent_exits() {
    // SIGTERM is the parent-death signal the launch-agent sets: after a kill -9 of the
    // launch-agent nothing of the task may go on running.
    let dir = tempfile::tempdir().unwrap();
    let task = task(vec![step(run(
        "silent",
        "setsid sleep 100 & echo $! > daemon.pid; echo $$ > step.pid; printf go; sleep 100",
    ))]);
    let mut agent = Agent::start(&task, dir.path()).await;
    let mut report = Report::default();
    wait_for_output(&mut agent, &mut report, 0, "go").await;
    let agent_pid = agent.child.id().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent_pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let (status, stderr) = agent.exit().await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("SIGTERM"), "{stderr}");
    for file in ["step.pid", "daemon.pid"] {
        let pid: i32 = std::fs::read_to_string(dir.path().join(file))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(process_gone(pid).await, "{file} {pid} survived its agent");
    }
}

#[tokio::test]
async fn refuses_to_run_with_a_controlling_terminal_it_cannot_leave() {
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::process::CommandExt as _;
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty writes two descriptors into the integers; the other pointers may be null.
    let rc = unsafe {
        nix::libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0);
    // SAFETY: both were just opened by openpty and have no other owner.
    let (_master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let dir = tempfile::tempdir().unwrap();
    let mut command = crate::harness::std_bin_command(env!("CARGO_BIN_EXE_task-agent"));
    command
        .args(["--socket-fd", "97", "--allow-root"])
        .current_dir(dir.path())
        .stdin(std::process::Stdio::from(slave))
        .stdout(std::process::Stdio::null());
    // A session leader holding the pty as its controlling terminal: it cannot start another
    // session, and giving the terminal up would hang up its own session, so it must refuse.
    // SAFETY: setsid and ioctl are async-signal-safe; fd 0 is the pty slave by now.
    unsafe {
        command.pre_exec(|| {
            if nix::libc::setsid() < 0 || nix::libc::ioctl(0, nix::libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("controlling terminal"), "{stderr}");
}
