//! Hardening of the launch-agent's boundaries (issue 8): the command-prefix rendezvous, the
//! sweep after a task-agent dies, process limits, and claiming promptly after an outage. Each
//! test is written as the attack or the failure it pins.

use std::time::{Duration, Instant};

use bosun_tests::{AgentOptions, Server, git_repo, launch_agent, shared_tempdir};

fn job(resource_class: &str, steps: &str) -> String {
    format!(
        "version: 2.1\njobs:\n  build:\n    machine: true\n    resource_class: {resource_class}\n    steps:\n{steps}"
    )
}

/// Waits until `proc`'s log contains `needle`.
fn wait_for_agent_log(proc: &bosun_tests::Proc, needle: &str, limit: Duration) {
    let started = Instant::now();
    while !proc.log_text().contains(needle) {
        assert!(
            started.elapsed() < limit,
            "the launch-agent never logged {needle:?}:\n{}",
            proc.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_outage_the_agent_claims_within_a_second_of_the_server_returning() {
    // A fixed port, so the server comes back where the agent looks for it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let listen = format!("127.0.0.1:{port}");
    let dir = shared_tempdir();
    let server = Server::start_with(dir.path(), &["--listen", &listen]);
    server.resource_class("e2e/outage").await;
    let token = server.token("e2e/outage").await;
    let agent = launch_agent(
        &server,
        &token,
        dir.path(),
        "agent",
        AgentOptions::default(),
    );
    let config = job("e2e/outage", "      - run: echo first-step-running\n");
    let repo = git_repo(dir.path(), &[(".circleci/config.yml", &config)]);
    server.project("local/e2e/outage", &repo).await;
    wait_for_agent_log(&agent, "claiming tasks", Duration::from_secs(30));

    // The outage: long enough that a doubling backoff (0.5, 1, 2, 4, 8, 16 s, each give or
    // take 20 %) is certainly inside its 16 s pause when the server returns, and a backoff
    // capped at 10 s without probing inside its 10 s one.
    let data_dir = server.data_dir.clone();
    drop(server);
    let _ = std::fs::remove_file(data_dir.join("server-url"));
    tokio::time::sleep(Duration::from_secs(19)).await;

    let server = Server::start_with(dir.path(), &["--listen", &listen]);
    let back = Instant::now();
    let pipeline = server.trigger("local/e2e/outage", "main").await;
    let job_id = server.job_id(&pipeline, "build").await;
    server
        .wait_for_log(&job_id, 0, "first-step-running", Duration::from_secs(40))
        .await;
    let elapsed = back.elapsed();
    eprintln!("after a 19 s outage the first step ran {elapsed:?} after the server returned");
    assert!(
        elapsed < Duration::from_secs(2),
        "the first step started {elapsed:?} after the server returned:\n{}",
        agent.log_text()
    );
}

/// The `command_prefix` of the rendezvous test, run by the launch-agent as root with the
/// task-agent's command line as arguments. As the job user it tries what a concurrent job could
/// (list, watch, rename, remove, bind beside the socket), records each outcome, hands the socket
/// path and the token (as if stolen) to the intruder, waits until the intruder has connected,
/// and only then starts the real task-agent.
const PREFIX_WRAPPER: &str = r#"#!/bin/bash
out="$BOSUN_HARDENING_DIR/outcomes"
exchange="$BOSUN_HARDENING_DIR/exchange"
read -r token
sock=
prev=
for arg in "$@"; do
  if [ "$prev" = --connect ]; then sock=$arg; fi
  prev=$arg
done
rdir=$(dirname "$sock")
as_job() { sudo -nu bosun-test -- "$@" < /dev/null > /dev/null 2>&1; }
attempt() {
  local what=$1
  shift
  if as_job "$@"; then echo "$what=allowed"; else echo "$what=denied"; fi >> "$out"
}
echo "socket=$sock" >> "$out"
echo "token=$token" >> "$out"
attempt ls ls "$rdir"
attempt inotify /usr/bin/python3 -c 'import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init()
sys.exit(0 if fd >= 0 and libc.inotify_add_watch(fd, sys.argv[1].encode(), 0xfff) >= 0 else 1)' "$rdir"
attempt mv mv "$sock" "$rdir/moved.sock"
attempt rm rm "$sock"
attempt bind /usr/bin/python3 -c 'import socket, sys
socket.socket(socket.AF_UNIX).bind(sys.argv[1])' "$rdir/own.sock"
attempt bind_in_place /usr/bin/python3 -c 'import socket, sys
socket.socket(socket.AF_UNIX).bind(sys.argv[1])' "$sock"
printf '%s\n%s\n' "$sock" "$token" > "$exchange/target.tmp"
chmod 644 "$exchange/target.tmp"
mv "$exchange/target.tmp" "$exchange/target"
for _ in $(seq 200); do
  [ -e "$exchange/connected" ] && break
  sleep 0.05
done
echo "wrapper=exec" >> "$out"
exec sudo -niHu bosun-test -- "$@" <<< "$token"
"#;

/// The intruder: a process of the job user outside the task's process tree (a concurrent job).
/// It connects first, presents the stolen token and records whatever it is sent.
const INTRUDER: &str = r#"
import json, os, socket, struct, sys, time
exchange = sys.argv[1]
deadline = time.time() + 60
while not os.path.exists(os.path.join(exchange, "target")):
    if time.time() > deadline:
        sys.exit("no target")
    time.sleep(0.02)
sock_path, token = open(os.path.join(exchange, "target")).read().split("\n")[:2]
s = socket.socket(socket.AF_UNIX)
s.connect(sock_path)
open(os.path.join(exchange, "connected"), "w").close()
hello = json.dumps({"type": "hello", "protocol_version": 1, "agent_version": "intruder", "token": token}).encode()
received = b""
try:
    s.sendall(struct.pack(">IB", len(hello) + 1, 1) + hello)
    s.settimeout(5)
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        received += chunk
except OSError:
    pass
with open(os.path.join(exchange, "received"), "wb") as f:
    f.write(received)
open(os.path.join(exchange, "done"), "w").close()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_job_of_the_same_user_cannot_hijack_the_prefix_rendezvous() {
    if !bosun_tests::is_root() {
        eprintln!("skipped: needs root (command_prefix with sudo switches users)");
        return;
    }
    bosun_tests::require_program(
        "sudo",
        "runner.command_prefix runs the task-agent through sudo",
    );
    bosun_tests::require_program(
        "python3",
        "the intruder and the tampering attempts are python",
    );
    let user = bosun_tests::job_user().expect("root has a job user");
    let job_user = nix::unistd::User::from_name(user).unwrap().unwrap();
    let scripts = shared_tempdir();
    let exchange = scripts.path().join("exchange");
    std::fs::create_dir(&exchange).unwrap();
    nix::unistd::chown(&exchange, Some(job_user.uid), Some(job_user.gid)).unwrap();
    let wrapper = scripts.path().join("prefix.sh");
    std::fs::write(
        &wrapper,
        PREFIX_WRAPPER.replace("$BOSUN_HARDENING_DIR", &scripts.path().to_string_lossy()),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let intruder_script = scripts.path().join("intruder.py");
    std::fs::write(&intruder_script, INTRUDER).unwrap();

    let steps = "      - run: echo the-real-job-ran-$((6 * 7))\n";
    let config = job("e2e/prefix", steps);
    let options = AgentOptions {
        cleanup: true,
        extra_config: format!("  command_prefix: [\"{}\"]\n", wrapper.display()),
        ..AgentOptions::default()
    };
    let fixture = bosun_tests::Fixture::with_files(
        "e2e/prefix",
        &[(".circleci/config.yml", &config)],
        options,
    )
    .await;
    // Started by the test, not by the launch-agent: the intruder is of another process tree,
    // as a concurrent job of the same user would be.
    let mut intruder = std::process::Command::new("sudo")
        .args(["-nu", user, "--", "/usr/bin/python3"])
        .arg(&intruder_script)
        .arg(&exchange)
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("starting the intruder");
    let (pipeline, jobs) = fixture.run().await;
    let started = Instant::now();
    while intruder.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(20) {
            let _ = intruder.kill();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let outcomes = std::fs::read_to_string(scripts.path().join("outcomes")).unwrap_or_default();
    let received = std::fs::read(exchange.join("received")).unwrap_or_default();
    eprintln!(
        "rendezvous attack: {outcomes:?}; the intruder received {} bytes",
        received.len()
    );
    let value = |key: &str| {
        outcomes
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key} in {outcomes:?}"))
            .to_owned()
    };
    let socket = value("socket");
    let token = value("token");
    assert_eq!(token.len(), 64, "{outcomes}");
    for window in token.as_bytes().windows(8) {
        let window = std::str::from_utf8(window).unwrap();
        assert!(
            !socket.contains(window),
            "the socket path {socket} holds part of the token"
        );
    }
    for attempt in ["ls", "inotify", "mv", "rm", "bind", "bind_in_place"] {
        assert_eq!(
            value(attempt),
            "denied",
            "the job user could {attempt} the rendezvous"
        );
    }
    assert_eq!(value("wrapper"), "exec");
    assert!(
        exchange.join("done").exists(),
        "the intruder connected and finished"
    );
    let text = String::from_utf8_lossy(&received).to_lowercase();
    assert!(
        !text.contains("welcome") && !text.contains("the-real-job-ran"),
        "the intruder got the task: {text}"
    );
    assert_eq!(pipeline.status, "success", "{}", fixture.agent.log_text());
    let job_id = &fixture.job(&jobs, "build").id;
    assert_eq!(
        fixture.server.step_log(job_id, 0).await,
        b"the-real-job-ran-42\n"
    );
    assert!(
        fixture
            .agent
            .log_text()
            .contains("refused a connection to the task's rendezvous"),
        "the launch-agent says it turned the intruder away"
    );
}

/// Pids of live processes whose command line is exactly `argv` (zombies have none).
fn processes_running(argv: &[&str]) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            let args: Vec<&[u8]> = cmdline
                .strip_suffix(b"\0")
                .unwrap_or(&cmdline)
                .split(|b| *b == 0)
                .collect();
            if args.len() == argv.len() && args.iter().zip(argv).all(|(a, b)| *a == b.as_bytes()) {
                found.push(pid);
            }
        }
    }
    found
}

/// A server, a launch-agent whose jobs run as `user` with `extra_config`, and a project holding
/// `config`; returns the pieces and the project's slug.
async fn agent_for(
    resource_class: &str,
    user: &str,
    extra_config: &str,
    config: &str,
) -> (tempfile::TempDir, Server, bosun_tests::Proc, String) {
    let dir = shared_tempdir();
    let server = Server::start(dir.path());
    server.resource_class(resource_class).await;
    let token = server.token(resource_class).await;
    let agent = bosun_tests::launch_agent_as(
        &server,
        &token,
        dir.path(),
        "agent",
        user,
        AgentOptions {
            cleanup: true,
            extra_config: extra_config.to_owned(),
            ..AgentOptions::default()
        },
    );
    let repo = git_repo(dir.path(), &[(".circleci/config.yml", config)]);
    let slug = "local/e2e/hardening".to_owned();
    server.project(&slug, &repo).await;
    (dir, server, agent, slug)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_task_agent_without_cgroups_leaves_no_process_behind() {
    // A user of its own: with `dedicated_user: true` the launch-agent kills every process of it.
    let Some(user) = bosun_tests::dedicated_job_user("bosun-hard-sweep") else {
        eprintln!("skipped: needs root (the sweep of a dedicated job user kills by uid)");
        return;
    };
    let marked = format!("1000.{}", std::process::id());
    let unmarked = format!("1001.{}", std::process::id());
    let steps = format!(
        r#"      - run:
          name: escape
          command: |
            setsid sleep {marked} &
            a=$!
            env -u BOSUN_TASK_ID setsid sleep {unmarked} &
            b=$!
            sleep 0.5
            kill -0 $a && kill -0 $b && echo both-sleepers-running
            # Time for the line to reach the server before its relay dies.
            sleep 1
            kill -9 $PPID
            sleep 1000
"#
    );
    let config = job("e2e/sweep", &steps);
    let (_dir, server, mut agent, slug) = agent_for(
        "e2e/sweep",
        user,
        "  cgroups: false\n  dedicated_user: true\n",
        &config,
    )
    .await;
    let pipeline = server.trigger(&slug, "main").await;
    let job_id = server.job_id(&pipeline, "build").await;
    let job = server.wait_job(&job_id, Duration::from_secs(60)).await;
    let ended = Instant::now();
    let mut left = (Vec::new(), Vec::new());
    while ended.elapsed() < Duration::from_secs(5) {
        left = (
            processes_running(&["sleep", &marked]),
            processes_running(&["sleep", &unmarked]),
        );
        if left.0.is_empty() && left.1.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "task-agent killed: job {} ({:?}); sleepers left {:?} {:?} {:?} after the job ended",
        job.status,
        job.message,
        left.0,
        left.1,
        ended.elapsed()
    );
    let log = String::from_utf8_lossy(&server.step_log(&job_id, 0).await).into_owned();
    assert!(
        log.contains("both-sleepers-running"),
        "the sleepers did not start: {log:?}"
    );
    assert!(
        job.status == "infrastructure_fail" || job.status == "failed",
        "{job:?}"
    );
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "the launch-agent kept running:\n{}",
        agent.log_text()
    );
    for pid in left.0.iter().chain(&left.1) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    assert!(
        left.0.is_empty(),
        "the marked sleeper outlived its task: {:?}\n{}",
        left.0,
        agent.log_text()
    );
    assert!(
        left.1.is_empty(),
        "the sleeper without the marker outlived its task: {:?}\n{}",
        left.1,
        agent.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_bomb_is_bounded_by_runner_max_pids() {
    // A user of its own: RLIMIT_NPROC, the fallback without a cgroup pids controller, counts
    // every process of the user, so another test's jobs would eat into the budget.
    let Some(user) = bosun_tests::dedicated_job_user("bosun-hard-pids") else {
        eprintln!("skipped: needs root (limits are set while switching to the job user)");
        return;
    };
    let steps = r#"      - run:
          name: fork bomb
          command: |
            /usr/bin/python3 - <<'EOF'
            import os, signal, time
            children = []
            error = None
            for _ in range(300):
                try:
                    pid = os.fork()
                except OSError as err:
                    error = err.errno
                    break
                if pid == 0:
                    time.sleep(20)
                    os._exit(0)
                children.append(pid)
            print("started", len(children), "error", error, flush=True)
            for pid in children:
                os.kill(pid, signal.SIGKILL)
            for pid in children:
                os.waitpid(pid, 0)
            EOF
"#;
    let config = job("e2e/pids", steps);
    let (_dir, server, agent, slug) =
        agent_for("e2e/pids", user, "  max_pids: 64\n", &config).await;
    let triggered = Instant::now();
    let pipeline = server.trigger(&slug, "main").await;
    let job_id = server.job_id(&pipeline, "build").await;
    let job = server.wait_job(&job_id, Duration::from_secs(60)).await;
    let elapsed = triggered.elapsed();
    let log = String::from_utf8_lossy(&server.step_log(&job_id, 0).await).into_owned();
    eprintln!(
        "fork bomb against max_pids 64: {log:?}, job {} after {elapsed:?}",
        job.status
    );
    // The host can still fork.
    assert!(
        std::process::Command::new("true")
            .status()
            .unwrap()
            .success()
    );
    let line = log
        .lines()
        .find(|line| line.starts_with("started "))
        .unwrap_or_else(|| panic!("the bomb did not report: {log:?}\n{}", agent.log_text()));
    let started: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(
        started <= 64,
        "a step started {started} processes under runner.max_pids 64"
    );
    assert!(started >= 8, "the bomb could barely start: {line}");
    assert!(
        line.ends_with("error 11"),
        "forking ended with EAGAIN: {line}"
    );
    assert_eq!(job.status, "success", "{}", agent.log_text());
    assert!(elapsed < Duration::from_secs(60));
}
