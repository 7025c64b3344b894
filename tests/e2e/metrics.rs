//! Prometheus metrics (issue 14): the server's `/metrics` (a user token needed) and the
//! launch-agent's opt-in `runner.metrics_addr`, read after a real pipeline ran and with a task
//! left queued for a resource class no runner serves.

use std::io::{Read as _, Write as _};
use std::time::Duration;

use bosun_api::Method;
use bosun_tests::{AgentOptions, git_repo, launch_agent, shared_tempdir};

/// A line of `text` that starts with `prefix`, and the number after it.
fn value(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|line| line.starts_with(prefix))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `{prefix}` in\n{text}"))
}

fn get(addr: &str, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_and_agent_metrics_count_what_happened() {
    let dir = shared_tempdir();
    let server = bosun_tests::Server::start(dir.path());
    server.resource_class("e2e/metrics").await;
    server.resource_class("e2e/nobody").await;
    let token = server.token("e2e/metrics").await;
    let metrics_addr = bosun_tests::free_listen_addr();
    let agent = launch_agent(
        &server,
        &token,
        dir.path(),
        "agent",
        AgentOptions {
            extra_config: format!("  metrics_addr: {metrics_addr}\n"),
            ..AgentOptions::default()
        },
    );
    let config = "version: 2.1\njobs:\n  build:\n    machine: true\n    resource_class: e2e/metrics\n    steps:\n      - run: echo counted\n  stuck:\n    machine: true\n    resource_class: e2e/nobody\n    steps:\n      - run: echo never\nworkflows:\n  main:\n    jobs: [build, stuck]\n";
    let repo = git_repo(dir.path(), &[(".circleci/config.yml", config)]);
    server.project("local/e2e/metrics", &repo).await;
    let id = server.trigger("local/e2e/metrics", "main").await;
    let build = server.job_id(&id, "build").await;
    let done = server.wait_job(&build, Duration::from_secs(60)).await;
    assert_eq!(done.status, "success", "{}", agent.log_text());

    let answer = server
        .client
        .send(Method::GET, "/metrics", &server.admin, None, None)
        .await
        .expect("/metrics");
    let text = String::from_utf8_lossy(&answer.body).into_owned();
    assert_eq!(value(&text, "bosun_claims_total"), 1.0);
    assert_eq!(value(&text, "bosun_claim_wait_seconds_count"), 1.0);
    assert_eq!(
        value(&text, "bosun_queued_tasks{resource_class=\"e2e/nobody\"}"),
        1.0
    );
    assert_eq!(value(&text, "bosun_running_tasks"), 0.0);
    assert_eq!(value(&text, "bosun_runner_instances{state=\"idle\"}"), 1.0);
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    let refused = server
        .client
        .send(Method::GET, "/metrics", &bosun_api::Auth::None, None, None)
        .await;
    assert_eq!(
        refused.unwrap_err().status(),
        Some(bosun_api::StatusCode::UNAUTHORIZED)
    );

    let agent_metrics = get(&metrics_addr, "/metrics");
    assert!(agent_metrics.starts_with("HTTP/1.1 200"), "{agent_metrics}");
    assert_eq!(value(&agent_metrics, "bosun_agent_claims_total"), 1.0);
    assert_eq!(
        value(
            &agent_metrics,
            "bosun_agent_tasks_total{outcome=\"success\"}"
        ),
        1.0
    );
    assert!(value(&agent_metrics, "bosun_agent_log_bytes_total") >= 8.0);
    // Everything reached the server: nothing is held for it.
    assert_eq!(value(&agent_metrics, "bosun_agent_spool_bytes"), 0.0);
    assert!(get(&metrics_addr, "/other").starts_with("HTTP/1.1 404"));
}
