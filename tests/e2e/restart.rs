//! A server killed (-9) and restarted in the middle of a job (issue 14): the job keeps running
//! on its runner while the server is down, longer than its lease; the restarted server gives
//! running tasks a lease's grace to heartbeat again, the launch-agent delivers the log it held,
//! and the job ends `success` with its log exactly the expected sequence, no line lost or
//! repeated.

use std::time::{Duration, Instant};

use bosun_tests::{AgentOptions, free_listen_addr, git_repo, launch_agent, shared_tempdir};

/// Lines the job prints, one every 100 ms: a 30 s counter.
const LINES: u32 = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_survives_a_server_kill_and_restart_with_its_log_whole() {
    let dir = shared_tempdir();
    let addr = free_listen_addr();
    let args = ["--listen", addr.as_str(), "--task-lease-secs", "2"];
    let server = bosun_tests::Server::start_with(dir.path(), &args);
    server.resource_class("e2e/restart").await;
    let token = server.token("e2e/restart").await;
    let agent = launch_agent(
        &server,
        &token,
        dir.path(),
        "agent",
        AgentOptions::default(),
    );
    let config = format!(
        "version: 2.1\njobs:\n  build:\n    machine: true\n    resource_class: e2e/restart\n    steps:\n      - run: for i in $(seq 1 {LINES}); do echo \"line $i\"; sleep 0.1; done\nworkflows:\n  main:\n    jobs: [build]\n"
    );
    let repo = git_repo(dir.path(), &[(".circleci/config.yml", &config)]);
    server.project("local/e2e/restart", &repo).await;
    let id = server.trigger("local/e2e/restart", "main").await;
    let job = server.job_id(&id, "build").await;
    server
        .wait_for_log(&job, 0, "line 100\n", Duration::from_secs(60))
        .await;
    let started = Instant::now();
    // kill -9, and stay down for twice the lease.
    let mut server = server;
    server.proc.child.kill().unwrap();
    server.proc.child.wait().unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let server = server.restart(dir.path(), &args);
    let detail = server.wait_job(&job, Duration::from_secs(120)).await;
    let ran = started.elapsed();
    assert_eq!(detail.status, "success", "{}", agent.log_text());
    let log = String::from_utf8_lossy(&server.step_log(&job, 0).await).into_owned();
    let expected: String = (1..=LINES).map(|i| format!("line {i}\n")).collect();
    assert_eq!(
        log, expected,
        "the stored log is not the job's output exactly"
    );
    // The job had 20 s left at the kill; it runs on through the outage (its output held by
    // the launch-agent), so what it ends later than that is what the restart cost it.
    eprintln!(
        "job ended {:.1} s after the kill (outage 4 s; the job had {:.1} s left)",
        ran.as_secs_f64(),
        f64::from(LINES - 100) / 10.0
    );
}

/// SIGTERM to a server whose agent is long-polling a claim (30 s): the claim answers at once,
/// so the server exits in well under its 10 s shutdown grace, and the agent, told "no task",
/// keeps trying without a fuss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_stops_promptly_under_long_polls() {
    let dir = shared_tempdir();
    let server = bosun_tests::Server::start(dir.path());
    server.resource_class("e2e/stop").await;
    let token = server.token("e2e/stop").await;
    let _agent = launch_agent(
        &server,
        &token,
        dir.path(),
        "agent",
        AgentOptions::default(),
    );
    // Let the agent's first claim reach the server and start waiting.
    let started = Instant::now();
    while !server
        .client
        .instances(
            &server.admin,
            bosun_api::InstanceFilter::ResourceClass("e2e/stop"),
        )
        .await
        .is_ok_and(|list| !list.is_empty())
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the agent never claimed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut server = server;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.proc.pid()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let stopping = Instant::now();
    let status = bosun_tests::wait_exit(&mut server.proc.child, Duration::from_secs(5));
    assert!(status.success(), "{status}");
    eprintln!("the server stopped {:?} after SIGTERM", stopping.elapsed());
}
