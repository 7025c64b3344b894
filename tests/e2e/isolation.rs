//! Isolation, written as the attacks of issue 8: a job typing into the terminal of the root shell
//! that started the launch-agent, stealing the task-agent's descriptors, gaining privileges
//! through a setuid binary in command-prefix mode, outliving a killed launch-agent, and reading
//! another job user's running job. Also the warning for a token file others can read.

use std::io::Read as _;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bosun_tests::{
    AgentOptions, Fixture, Server, bin_dir, commit, git_repo, is_root, job_user, launch_agent,
    launch_agent_with, marked_processes, second_job_user, shared_tempdir,
};

fn job(resource_class: &str, steps: &str) -> String {
    format!(
        "version: 2.1\njobs:\n  build:\n    machine: true\n    resource_class: {resource_class}\n    steps:\n{steps}"
    )
}

/// The value of `key=` on a line of `log`.
fn value<'a>(log: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key}=");
    log.lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no `{key}=` in {log:?}"))
        .trim()
}

/// A pseudo-terminal pair: (master, slave).
fn openpty() -> (OwnedFd, OwnedFd) {
    let mut master = -1;
    let mut slave = -1;
    // SAFETY: openpty writes two descriptors into the given integers; the name, termios and
    // window size pointers may be null.
    let rc = unsafe {
        nix::libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened by openpty and are owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

/// `tty_nr` of `/proc/<pid>/stat`: 0 when the process has no controlling terminal.
fn tty_nr(pid: i32) -> i64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 1..];
    // state ppid pgrp session tty_nr
    after.split_whitespace().nth(4).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_cannot_type_into_the_terminal_of_a_pty_held_launch_agent() {
    bosun_tests::require_program("perl", "the step types into the terminal with perl's ioctl");
    bosun_tests::require_program("ps", "the step reads its controlling terminal with ps");
    let dir = shared_tempdir();
    let server = Server::start(dir.path());
    server.resource_class("e2e/tty").await;
    let token = server.token("e2e/tty").await;

    // The launch-agent runs as if started by hand from root's shell: the pty is its controlling
    // terminal and its stdin, stdout and stderr. What reaches the master is what "root" sees.
    let (master, slave) = openpty();
    let screen = Arc::new(Mutex::new(Vec::<u8>::new()));
    {
        let screen = Arc::clone(&screen);
        let mut master = std::fs::File::from(master);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Ends with EIO once every holder of the slave is gone.
            while let Ok(read) = master.read(&mut buf) {
                if read == 0 {
                    break;
                }
                screen.lock().unwrap().extend_from_slice(&buf[..read]);
            }
        });
    }
    let agent = launch_agent_with(
        &server,
        &token,
        dir.path(),
        "agent",
        job_user(),
        "",
        |command| {
            let stdio = |fd: &OwnedFd| Stdio::from(fd.try_clone().unwrap());
            command
                .stdin(stdio(&slave))
                .stdout(stdio(&slave))
                .stderr(stdio(&slave));
            // SAFETY: setsid and ioctl are async-signal-safe; fd 0 is the slave by now.
            unsafe {
                command.pre_exec(|| {
                    if nix::libc::setsid() < 0 || nix::libc::ioctl(0, nix::libc::TIOCSCTTY, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        },
    );
    drop(slave);
    assert_ne!(
        tty_nr(agent.pid()),
        0,
        "the launch-agent holds the pty as its terminal"
    );

    // The payload is assembled by perl so that its text appears nowhere a log could echo it.
    let steps = r#"      - run:
          name: probe
          command: |
            echo "tty=$(ps -o tty= -p $$ | tr -d ' ')"
            if (: < /dev/tty) 2> /dev/null; then echo "devtty=open"; else echo "devtty=denied"; fi
            perl -e 'open(my $t, "+<", "/dev/tty") or die "no tty: $!\n"; for (split //, "echo IN" . "JECTED\n") { ioctl($t, 0x5412, $_) or die "TIOCSTI: $!\n" } print "typed\n"' 2>&1 || true
            echo probed
"#;
    let repo = git_repo(
        dir.path(),
        &[(".circleci/config.yml", &job("e2e/tty", steps))],
    );
    server.project("local/e2e/tty", &repo).await;
    let pipeline_id = server.trigger("local/e2e/tty", "main").await;
    let pipeline = server
        .wait_pipeline(&pipeline_id, Duration::from_secs(60))
        .await;
    let screen_text = || String::from_utf8_lossy(&screen.lock().unwrap()).into_owned();
    assert_eq!(pipeline.status, "success", "{}", screen_text());
    let job_id = server.job_id(&pipeline_id, "build").await;
    let log = String::from_utf8_lossy(&server.step_log(&job_id, 0).await).into_owned();
    // Echoed input would have arrived by now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = screen_text();
    eprintln!("step log: {log:?}");
    assert!(
        seen.contains("running task"),
        "the launch-agent's log goes to the pty: {seen:?}"
    );
    assert_eq!(
        value(&log, "tty"),
        "?",
        "the step has a controlling terminal"
    );
    assert_eq!(value(&log, "devtty"), "denied", "the step opened /dev/tty");
    assert!(!log.contains("typed"), "TIOCSTI worked: {log:?}");
    assert!(
        !seen.contains("INJECTED"),
        "the step typed into the launch-agent's terminal: {seen:?}"
    );
}

/// Python: take fds 0..3 of the task-agent (`argv[1]`) with pidfd_getfd and write a forged line.
const STEAL: &str = r#"import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
agent = int(sys.argv[1])
pidfd = libc.syscall(ctypes.c_long(434), ctypes.c_long(agent), ctypes.c_long(0))
if pidfd < 0:
    print("pidfd_open failed errno=%d" % ctypes.get_errno())
    sys.exit(0)
for fd in range(4):
    got = libc.syscall(ctypes.c_long(438), ctypes.c_long(pidfd), ctypes.c_long(fd), ctypes.c_long(0))
    if got < 0:
        print("getfd %d denied errno=%d" % (fd, ctypes.get_errno()))
        continue
    try:
        os.write(got, b"FORGED launch-agent line\n")
        print("getfd %d STOLEN and written" % fd)
    except OSError as err:
        print("getfd %d STOLEN, write failed: %s" % (fd, err))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_cannot_steal_the_task_agents_descriptors() {
    bosun_tests::require_program(
        "python3",
        "the step calls pidfd_getfd through python's ctypes",
    );
    let indented: String = STEAL
        .lines()
        .map(|line| format!("            {line}\n"))
        .collect();
    let steps = format!(
        r#"      - run:
          name: steal
          command: |
            echo "agent=$PPID"
            if ls -l /proc/$PPID/fd > /dev/null 2>&1; then echo "fd-list=visible"; else echo "fd-list=denied"; fi
            python3 - "$PPID" <<'EOF'
{indented}            EOF
            echo "attack=done"
            sleep 3
"#
    );
    let fixture = Fixture::new("e2e/linux", &job("e2e/linux", &steps)).await;
    let pipeline_id = fixture.server.trigger(&fixture.slug, "main").await;
    let job_id = fixture.server.job_id(&pipeline_id, "build").await;
    let log = fixture
        .server
        .wait_for_log(&job_id, 0, "attack=done", Duration::from_secs(60))
        .await;
    let agent_pid: i32 = value(&log, "agent").parse().unwrap();
    // The step sleeps: its task-agent is still running.
    let agent_fds: Vec<String> = if is_root() {
        (1..=2)
            .map(|fd| {
                std::fs::read_link(format!("/proc/{agent_pid}/fd/{fd}"))
                    .map(|target| target.display().to_string())
                    .unwrap_or_else(|err| format!("unreadable: {err}"))
            })
            .collect()
    } else {
        Vec::new()
    };
    let pipeline = fixture
        .server
        .wait_pipeline(&pipeline_id, Duration::from_secs(30))
        .await;
    eprintln!("step log: {log:?}; task-agent stdout/stderr: {agent_fds:?}");
    assert_eq!(pipeline.status, "success", "{}", fixture.agent.log_text());
    assert_eq!(
        value(&log, "fd-list"),
        "denied",
        "the step listed the task-agent's descriptors"
    );
    for fd in 0..4 {
        assert!(
            log.contains(&format!("getfd {fd} denied")),
            "pidfd_getfd of the task-agent's fd {fd} was not denied: {log:?}"
        );
    }
    assert!(!log.contains("STOLEN"), "{log:?}");
    assert!(
        !fixture.agent.log_text().contains("FORGED"),
        "a forged line reached the launch-agent's log"
    );
    // What the task-agent says still reaches the log, through the launch-agent, tagged with the
    // task.
    let agent_text = fixture.agent.log_text();
    assert!(
        agent_text
            .lines()
            .any(|line| line.contains("task-agent: ") && line.contains("task received")),
        "the task-agent's own log lines are missing from the launch-agent's log: {agent_text}"
    );
    let agent_log = fixture.agent.log.display().to_string();
    for target in &agent_fds {
        assert!(
            target.starts_with("pipe:"),
            "the task-agent's stdout/stderr is {target}, not a pipe of the launch-agent's \
             (its log is {agent_log})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_started_through_sudo_cannot_gain_privileges() {
    if !is_root() {
        eprintln!("skipped: needs root (sudo -n as root is what the command_prefix mode is for)");
        return;
    }
    bosun_tests::require_program(
        "sudo",
        "runner.command_prefix runs the task-agent through sudo",
    );
    let user = job_user().expect("root has a job user");
    let steps = "      - run: |\n          grep NoNewPrivs /proc/self/status\n          echo \"tty=$(ps -o tty= -p $$ | tr -d ' ')\"\n";
    let options = AgentOptions {
        cleanup: true,
        extra_config: format!("  command_prefix: [\"sudo\", \"-niHu\", \"{user}\", \"--\"]\n"),
        ..AgentOptions::default()
    };
    let fixture = Fixture::with_files(
        "e2e/linux",
        &[(".circleci/config.yml", &job("e2e/linux", steps))],
        options,
    )
    .await;
    let (pipeline, jobs) = fixture.run().await;
    assert_eq!(pipeline.status, "success", "{}", fixture.agent.log_text());
    let id = &fixture.job(&jobs, "build").id;
    let log = String::from_utf8_lossy(&fixture.server.step_log(id, 0).await).into_owned();
    let nnp = log
        .lines()
        .find_map(|line| line.strip_prefix("NoNewPrivs:"))
        .unwrap_or_else(|| panic!("no NoNewPrivs line: {log:?}"))
        .trim();
    assert_eq!(nnp, "1", "a setuid binary could raise a step's privileges");
    assert_eq!(value(&log, "tty"), "?", "{log:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_launch_agent_ends_its_tasks_processes_without_a_restart() {
    let steps = "      - run: echo \"marker=$BOSUN_TASK_ID\"\n      - run: |\n          setsid sleep 1000 &\n          echo started\n          sleep 1000\n";
    let dir = shared_tempdir();
    let server = Server::start(dir.path());
    server.resource_class("e2e/linux").await;
    let token = server.token("e2e/linux").await;
    let mut agent = launch_agent(
        &server,
        &token,
        dir.path(),
        "agent",
        AgentOptions::default(),
    );
    let repo = git_repo(
        dir.path(),
        &[(".circleci/config.yml", &job("e2e/linux", steps))],
    );
    server.project("local/e2e/orphan", &repo).await;
    let pipeline_id = server.trigger("local/e2e/orphan", "main").await;
    let job_id = server.job_id(&pipeline_id, "build").await;
    server
        .wait_for_log(&job_id, 1, "started", Duration::from_secs(60))
        .await;
    let marker = value(
        &String::from_utf8_lossy(&server.step_log(&job_id, 0).await),
        "marker",
    )
    .to_owned();
    let before = marked_processes(&marker);
    assert!(
        before.len() >= 3,
        "the step, its sleep and the setsid sleep run: {before:?}"
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.pid()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = agent.child.wait();
    let killed = Instant::now();
    let mut left = marked_processes(&marker);
    while !left.is_empty() && killed.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        left = marked_processes(&marker);
    }
    eprintln!(
        "after kill -9 of the launch-agent: {} process(es) of the task left after {:?}",
        left.len(),
        killed.elapsed()
    );
    assert!(
        left.is_empty(),
        "processes of task {marker} outlived their launch-agent: {left:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_of_another_user_cannot_read_a_running_jobs_directory_scripts_or_environment() {
    if !is_root() {
        eprintln!("skipped: needs root (two job users)");
        return;
    }
    let (user_a, user_b) = (job_user().unwrap(), second_job_user().unwrap());
    let dir = shared_tempdir();
    let server = Server::start(dir.path());
    server.resource_class("e2e/a").await;
    server.resource_class("e2e/b").await;
    let token_a = server.token("e2e/a").await;
    let token_b = server.token("e2e/b").await;
    let _agent_a = launch_agent_with(&server, &token_a, dir.path(), "a", Some(user_a), "", |_| {});
    let _agent_b = launch_agent_with(&server, &token_b, dir.path(), "b", Some(user_b), "", |_| {});
    let release = dir.path().join("release");

    // Job A: says where it is, proves it can read its own files, then waits to be released.
    let steps_a = format!(
        r#"      - run:
          name: victim
          environment:
            A_SECRET: hush-hush
          command: |
            echo "taskdir=$PWD"
            echo "script=$0"
            echo "pid=$$"
            ls . > /dev/null && cat "$0" > /dev/null && cat /proc/$$/environ > /dev/null && echo "self=ok"
            for i in $(seq 400); do [ -e {release} ] && break; sleep 0.1; done
"#,
        release = release.display()
    );
    let repo = git_repo(
        dir.path(),
        &[(".circleci/config.yml", &job("e2e/a", &steps_a))],
    );
    server.project("local/e2e/xjob", &repo).await;
    let pipeline_a = server.trigger("local/e2e/xjob", "main").await;
    let job_a = server.job_id(&pipeline_a, "build").await;
    let log_a = server
        .wait_for_log(&job_a, 0, "self=ok", Duration::from_secs(60))
        .await;
    let task_dir = value(&log_a, "taskdir").to_owned();
    let script = value(&log_a, "script").to_owned();
    let pid = value(&log_a, "pid").to_owned();
    let script_dir = Path::new(&script).parent().unwrap().display().to_string();
    let modes: Vec<String> = [&task_dir, &script_dir, &script]
        .iter()
        .map(|path| {
            let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
            format!("{path} {mode:o}")
        })
        .collect();
    assert!(
        !script.starts_with(&format!("{task_dir}/")),
        "the step script is inside the job's working directory (the checkout): {script}"
    );

    // Job B, another job user on another launch-agent, tries to read job A while it runs.
    let steps_b = format!(
        r#"      - run:
          name: snoop
          command: |
            id -un
            probe() {{ if "$@" > /dev/null 2>&1; then echo "LEAKED: $*"; else echo "denied: $*"; fi; }}
            probe ls {task_dir}
            probe cat {script}
            probe ls {script_dir}
            probe cat /proc/{pid}/environ
            grep -a hush-hush /proc/{pid}/environ && echo "LEAKED: the secret" || true
"#
    );
    commit(
        &repo,
        &[(".circleci/config.yml", &job("e2e/b", &steps_b))],
        "snoop",
    );
    let pipeline_b = server.trigger("local/e2e/xjob", "main").await;
    let finished_b = server
        .wait_pipeline(&pipeline_b, Duration::from_secs(60))
        .await;
    let job_b = server.job_id(&pipeline_b, "build").await;
    let log_b = String::from_utf8_lossy(&server.step_log(&job_b, 0).await).into_owned();
    std::fs::write(&release, b"").unwrap();
    let finished_a = server
        .wait_pipeline(&pipeline_a, Duration::from_secs(60))
        .await;
    eprintln!("modes: {modes:?}\njob B's log: {log_b}");
    assert_eq!(finished_a.status, "success");
    assert_eq!(finished_b.status, "success");
    assert_eq!(log_b.lines().next(), Some(user_b), "job B ran as {user_b}");
    assert_eq!(log_b.matches("denied: ").count(), 4, "{log_b}");
    assert!(!log_b.contains("LEAKED"), "{log_b}");
}

#[test]
fn check_config_warns_when_the_token_file_is_readable_by_others() {
    let dir = shared_tempdir();
    let config = dir.path().join("launch-agent-config.yaml");
    let log = dir.path().join("launch-agent.log");
    let mut text = format!(
        "api:\n  auth_token: secret-token\nrunner:\n  name: check\n  working_directory: {}/work/%s\nlogging:\n  file: {}\n",
        dir.path().display(),
        log.display()
    );
    if let Some(user) = job_user() {
        text = text.replace("runner:\n", &format!("runner:\n  user: {user}\n"));
    }
    std::fs::write(&config, text).unwrap();
    let check = || {
        let output = std::process::Command::new(bin_dir().join("launch-agent"))
            .arg("--config")
            .arg(&config)
            .arg("--check-config")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "{text}");
        text
    };
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let loose = check();
    assert!(
        loose.contains(&format!("run `chmod 600 {}`", config.display())) && loose.contains("0644"),
        "no warning about a 0644 token file: {loose}"
    );
    assert!(!loose.contains("secret-token"), "{loose}");
    // The effective configuration names where each value came from.
    for line in [
        "api.auth_token".to_owned(),
        "= <redacted>".to_owned(),
        format!("[{}:2]", config.display()),
        "runner.max_run_time                = 5h".to_owned(),
        "[default]".to_owned(),
    ] {
        assert!(loose.contains(&line), "no `{line}` in {loose}");
    }
    let mode = std::fs::metadata(&log).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "logging.file was created {mode:o}");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    let tight = check();
    assert!(!tight.contains("chmod"), "{tight}");
}
