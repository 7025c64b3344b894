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
