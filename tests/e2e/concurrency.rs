//! Concurrency and drain (issue 14): one launch-agent runs `runner.max_concurrent_tasks` tasks
//! at once, each with its own task-agent; the server's org-wide `--max-running-tasks` holds
//! across agents; the first SIGTERM drains (the running task finishes, nothing new is
//! claimed, exit 0) and `--drain-timeout` cancels what is still running.

use std::os::unix::fs::PermissionsExt as _;
use std::time::{Duration, Instant};

use bosun_tests::{
    AgentOptions, Fixture, git_repo, launch_agent, launch_agent_with_args, shared_tempdir,
    wait_exit,
};

/// Two jobs that succeed only if they run at the same time: each marks itself in `DIR` and
/// waits for the other's mark.
fn rendezvous_config(resource_class: &str, dir: &std::path::Path) -> String {
    let job = |me: &str, other: &str| {
        format!(
            "  {me}:\n    machine: true\n    resource_class: {resource_class}\n    steps:\n      - run: |\n          touch {dir}/{me}\n          for i in $(seq 300); do [ -e {dir}/{other} ] && exit 0; sleep 0.1; done\n          echo \"{other} never ran beside me\"; exit 1\n",
            dir = dir.display()
        )
    };
    format!(
        "version: 2.1\njobs:\n{}{}workflows:\n  main:\n    jobs: [left, right]\n",
        job("left", "right"),
        job("right", "left")
    )
}

/// A directory every job user may write to.
fn meeting_point(dir: &std::path::Path) -> std::path::PathBuf {
    let meet = dir.join("meet");
    std::fs::create_dir(&meet).unwrap();
    std::fs::set_permissions(&meet, std::fs::Permissions::from_mode(0o1777)).unwrap();
    meet
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_agent_runs_max_concurrent_tasks_at_once() {
    let outer = shared_tempdir();
    let meet = meeting_point(outer.path());
    let config = rendezvous_config("e2e/concurrent", &meet);
    let fixture = Fixture::with_files(
        "e2e/concurrent",
        &[(".circleci/config.yml", &config)],
        AgentOptions {
            extra_config: "  max_concurrent_tasks: 2\n".into(),
            ..AgentOptions::default()
        },
    )
    .await;
    let (pipeline, jobs) = fixture.run().await;
    assert_eq!(
        pipeline.status,
        "success",
        "{jobs:?}\n{}",
        fixture.agent.log_text()
    );
    assert_eq!(jobs.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_runs_at_most_max_running_tasks_across_agents() {
    let dir = shared_tempdir();
    let server = bosun_tests::Server::start_with(dir.path(), &["--max-running-tasks", "2"]);
    server.resource_class("e2e/limited").await;
    let token = server.token("e2e/limited").await;
    let _agents: Vec<_> = ["a1", "a2", "a3"]
        .iter()
        .map(|name| launch_agent(&server, &token, dir.path(), name, AgentOptions::default()))
        .collect();
    let job = |name: &str| {
        format!(
            "  {name}:\n    machine: true\n    resource_class: e2e/limited\n    steps:\n      - run: sleep 1.5\n"
        )
    };
    let config = format!(
        "version: 2.1\njobs:\n{}{}{}{}workflows:\n  main:\n    jobs: [j1, j2, j3, j4]\n",
        job("j1"),
        job("j2"),
        job("j3"),
        job("j4")
    );
    let repo = git_repo(dir.path(), &[(".circleci/config.yml", &config)]);
    server.project("local/e2e/limited", &repo).await;
    let id = server.trigger("local/e2e/limited", "main").await;
    // Sample the server's running count while the pipeline runs.
    let mut most = 0;
    let started = Instant::now();
    loop {
        let count = server
            .client
            .running_task_count(&server.admin, "e2e/limited")
            .await
            .expect("running count")
            .running_runner_tasks;
        most = most.max(count);
        let pipeline = server.pipeline(&id).await;
        if pipeline.status != "running" {
            assert_eq!(pipeline.status, "success");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "still running");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(most, 2, "at most 2 running, and the limit was reached");
    // The jobs' own times agree: never more than two overlap.
    let mut spans = Vec::new();
    for job in server.jobs(&id).await {
        let detail = server
            .client
            .project_job(&server.admin, "local/e2e/limited", job.job_number)
            .await
            .unwrap();
        let time = |field: &str| {
            humantime::parse_rfc3339(detail[field].as_str().expect(field)).expect("a time")
        };
        spans.push((time("started_at"), time("stopped_at")));
    }
    for (start, _) in &spans {
        let overlapping = spans
            .iter()
            .filter(|(s, e)| s <= start && start < e)
            .count();
        assert!(
            overlapping <= 2,
            "{overlapping} jobs ran at once: {spans:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_the_drain_timeout_cancels() {
    let config = "version: 2.1\njobs:\n  build:\n    machine: true\n    resource_class: e2e/drain\n    steps:\n      - run: |\n          echo started\n          sleep $(( << pipeline.number >> == 1 ? 2 : 60 ))\n          echo finished\n";
    let fixture = Fixture::new("e2e/drain", config).await;
    let server = &fixture.server;
    let first = server.trigger(&fixture.slug, "main").await;
    let job = server.job_id(&first, "build").await;
    server
        .wait_for_log(&job, 0, "started", Duration::from_secs(30))
        .await;
    let pid = nix::unistd::Pid::from_raw(fixture.agent.pid());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    // A pipeline triggered while draining is not claimed.
    let second = server.trigger(&fixture.slug, "main").await;
    let done = server.wait_job(&job, Duration::from_secs(30)).await;
    assert_eq!(done.status, "success", "{}", fixture.agent.log_text());
    let log = String::from_utf8_lossy(&server.step_log(&job, 0).await).into_owned();
    assert!(log.contains("finished"), "{log}");
    let mut agent = fixture.agent;
    let status = wait_exit(&mut agent.child, Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "{}", agent.log_text());
    let queued = server.job_id(&second, "build").await;
    assert_eq!(server.job(&queued).await.status, "queued");

    // A new agent with --drain-timeout takes the queued job (pipeline 2 sleeps a minute);
    // after SIGTERM and the timeout, the job is canceled and the agent exits.
    let mut slow = launch_agent_with_args(
        server,
        &fixture.token,
        fixture.dir.path(),
        "slow",
        AgentOptions::default(),
        &["--drain-timeout", "1s"],
    );
    server
        .wait_for_log(&queued, 0, "started", Duration::from_secs(30))
        .await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(slow.pid()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let begun = Instant::now();
    let ended = server.wait_job(&queued, Duration::from_secs(30)).await;
    assert_eq!(ended.status, "canceled", "{}", slow.log_text());
    let status = wait_exit(&mut slow.child, Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "{}", slow.log_text());
    assert!(
        begun.elapsed() < Duration::from_secs(15),
        "the drain took {:?}",
        begun.elapsed()
    );
}

/// systemd's notify protocol against a real datagram socket standing in for systemd: READY and
/// Healthy at start, watchdog pings from the loop, Unhealthy while the server is down,
/// STOPPING on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_speaks_systemds_notify_protocol() {
    let dir = shared_tempdir();
    let server = bosun_tests::Server::start(dir.path());
    server.resource_class("e2e/notify").await;
    let token = server.token("e2e/notify").await;
    let socket_path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let config = dir.path().join("notify.yaml");
    let mut text = format!(
        "api:\n  auth_token: {token}\n  url: {}\nrunner:\n  name: notify\n  working_directory: {}/work/%s\n  task_agent_path: {}\n",
        server.url,
        dir.path().display(),
        bosun_tests::bin_dir().join("task-agent").display()
    );
    if let Some(user) = bosun_tests::job_user() {
        text.push_str(&format!("  user: {user}\n"));
    }
    std::fs::write(&config, text).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    let log = std::fs::File::create(dir.path().join("notify.log")).unwrap();
    let mut agent = std::process::Command::new(bosun_tests::bin_dir().join("launch-agent"))
        .arg("--config")
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "400000")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    // WATCHDOG_PID names another process once the agent runs: systemd sets it for the main
    // process only, so here it is left unset (the agent takes the pings as its own).
    let mut messages = Vec::new();
    let read_until = |needle: &str, messages: &mut Vec<String>| {
        let mut buf = [0u8; 4096];
        loop {
            let n = socket
                .recv(&mut buf)
                .unwrap_or_else(|err| panic!("no {needle:?} in {messages:?}: {err}"));
            let message = String::from_utf8_lossy(&buf[..n]).into_owned();
            let found = message.contains(needle);
            messages.push(message);
            if found {
                return;
            }
        }
    };
    read_until("READY=1", &mut messages);
    assert!(messages[0].contains("STATUS=Healthy"), "{messages:?}");
    read_until("WATCHDOG=1", &mut messages);
    read_until("WATCHDOG=1", &mut messages);
    // The server goes away: claims fail and the status says so, while the pings go on.
    let mut server = server;
    let _ = server.proc.child.kill();
    let _ = server.proc.child.wait();
    read_until("STATUS=Unhealthy", &mut messages);
    read_until("WATCHDOG=1", &mut messages);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    read_until("STOPPING=1", &mut messages);
    let status = wait_exit(&mut agent, Duration::from_secs(20));
    assert_eq!(status.code(), Some(0));
}

/// The inventory follows an agent through its states: busy N/M while it runs a task (reported
/// though it is not claiming), draining after SIGTERM, offline once it is gone; `bosun runner
/// instance list` shows them, with when it was last used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inventory_shows_busy_draining_and_offline() {
    let dir = shared_tempdir();
    let server = bosun_tests::Server::start_with(dir.path(), &["--runner-offline-after", "3s"]);
    server.resource_class("e2e/inventory").await;
    let token = server.token("e2e/inventory").await;
    let agent = launch_agent(
        &server,
        &token,
        dir.path(),
        "inv",
        AgentOptions {
            extra_config: "  max_concurrent_tasks: 2\n".into(),
            ..AgentOptions::default()
        },
    );
    let config = "version: 2.1\njobs:\n  build:\n    machine: true\n    resource_class: e2e/inventory\n    steps:\n      - run: echo started; sleep 4\n";
    let repo = git_repo(dir.path(), &[(".circleci/config.yml", config)]);
    server.project("local/e2e/inventory", &repo).await;
    let state = || async {
        let list = server
            .client
            .instances(
                &server.admin,
                bosun_api::InstanceFilter::ResourceClass("e2e/inventory"),
            )
            .await
            .expect("instances");
        assert_eq!(list.len(), 1, "{list:?}");
        list.into_iter().next().unwrap()
    };
    let wait_state = |want: &'static str| async move {
        let started = Instant::now();
        loop {
            let instance = state().await;
            if instance.state == want {
                return instance;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the instance is {:?}, never {want:?}",
                instance.state
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let idle = wait_state("idle").await;
    assert_eq!(idle.last_used, None);
    assert_eq!(idle.capacity, 2);
    let id = server.trigger("local/e2e/inventory", "main").await;
    let job = server.job_id(&id, "build").await;
    server
        .wait_for_log(&job, 0, "started", Duration::from_secs(30))
        .await;
    let busy = wait_state("busy 1/2").await;
    assert!(busy.last_used.is_some(), "{busy:?}");
    assert!(
        !busy.hostname.is_empty() && !busy.version.is_empty(),
        "{busy:?}"
    );
    let listed = server.cli_ok(
        &[
            "runner",
            "instance",
            "list",
            "--resource-class",
            "e2e/inventory",
        ],
        "",
    );
    assert!(
        listed.contains("busy 1/2") && listed.contains("inv"),
        "{listed}"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.pid()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    wait_state("draining").await;
    assert_eq!(
        server.wait_job(&job, Duration::from_secs(30)).await.status,
        "success"
    );
    drop(agent);
    wait_state("offline").await;
}
