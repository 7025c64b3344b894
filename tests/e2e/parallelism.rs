//! `parallelism: N` end to end (issue 10): N tasks of one job, each with its node's
//! `CIRCLE_NODE_INDEX`, claimed by two launch-agents; one failed node fails the job; logs and
//! steps per node through the API, `bosun job logs --node` and `bosun pipeline run --follow`; a
//! cancel ends every node and leaves no process.

use std::time::{Duration, Instant};

use bosun_api::Auth;
use bosun_tests::{AgentOptions, Fixture, bin_dir, launch_agent};

const CLASS: &str = "e2e/parallel";

const THREE: &str = r#"version: 2.1
jobs:
  test:
    machine: true
    resource_class: e2e/parallel
    parallelism: 3
    steps:
      - run: echo "node $CIRCLE_NODE_INDEX of $CIRCLE_NODE_TOTAL"
      - run: '[ "$CIRCLE_NODE_INDEX" != 1 ] || { echo "node 1 fails"; exit 4; }'
workflows:
  main:
    jobs: [test]
"#;

fn cli(fixture: &Fixture, args: &[&str]) -> (i32, String) {
    let token = match &fixture.server.admin {
        Auth::CircleToken(token) => token.clone(),
        _ => unreachable!("the harness uses an admin token"),
    };
    let output = std::process::Command::new(bin_dir().join("bosun"))
        .args(["--host", &fixture.server.url, "--token", &token])
        .args(args)
        .output()
        .expect("bosun");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_run_with_their_index_and_one_failed_node_fails_the_job() {
    let fixture = Fixture::with_files(
        CLASS,
        &[(".circleci/config.yml", THREE)],
        AgentOptions::default(),
    )
    .await;
    let _second = launch_agent(
        &fixture.server,
        &fixture.token,
        fixture.dir.path(),
        "agent-2",
        AgentOptions::default(),
    );
    let (code, followed) = cli(
        &fixture,
        &[
            "pipeline",
            "run",
            &fixture.slug,
            "--branch",
            "main",
            "--follow",
        ],
    );
    assert_eq!(code, 1, "a failed node fails the pipeline:\n{followed}");
    for node in 1..=3 {
        assert!(
            followed.contains(&format!("[test {node}/3] ==> ")),
            "every node's steps are shown with its node: {followed}"
        );
    }
    let id = followed
        .lines()
        .find_map(|line| line.strip_prefix("pipeline "))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the pipeline id")
        .to_owned();
    let jobs = fixture.server.jobs(&id).await;
    let job = fixture.job(&jobs, "test");
    assert_eq!(job.status, "failed");
    let server = &fixture.server;
    for node in 0..3u32 {
        let detail = server
            .client
            .job_node(&server.admin, &job.id, node)
            .await
            .expect("job node");
        assert_eq!(detail.parallelism, 3);
        assert_eq!(detail.node, node);
        let log = server
            .client
            .node_step_log_page(&server.admin, &job.id, node, 0, 0)
            .await
            .expect("log");
        assert_eq!(
            String::from_utf8_lossy(&log),
            format!("node {node} of 3\n"),
            "node {node}'s own log"
        );
        let expected = if node == 1 { "failed" } else { "success" };
        assert_eq!(detail.steps[1].status, expected, "node {node}");
    }
    let message = server.job(&job.id).await.message.unwrap_or_default();
    // A plain failure carries no message; one that does names its node.
    assert!(
        message.is_empty() || message.starts_with("node 1: "),
        "{message}"
    );
    // A node the job does not have is a clear 404.
    let err = server
        .client
        .job_node(&server.admin, &job.id, 3)
        .await
        .unwrap_err();
    assert_eq!(
        err.status(),
        Some(bosun_api::StatusCode::NOT_FOUND),
        "{err}"
    );
    // CircleCI's job details, by the project's job number.
    let details = server
        .client
        .project_job(&server.admin, &fixture.slug, job.job_number)
        .await
        .expect("job details");
    assert_eq!(details["number"], job.job_number);
    assert_eq!(details["status"], "failed");
    assert_eq!(details["parallelism"], 3);
    assert_eq!(details["name"], "test");
    assert_eq!(
        details["parallel_runs"],
        serde_json::json!([
            {"index": 0, "status": "success"},
            {"index": 1, "status": "failed"},
            {"index": 2, "status": "success"},
        ])
    );
    assert_eq!(details["project"]["slug"], fixture.slug);
    assert!(details["duration"].as_i64().is_some(), "{details}");
    for field in [
        "web_url",
        "started_at",
        "stopped_at",
        "queued_at",
        "created_at",
        "latest_workflow",
        "executor",
        "pipeline",
        "messages",
        "contexts",
        "organization",
    ] {
        assert!(!details[field].is_null(), "{field} in {details}");
    }
    let (code, logs) = cli(&fixture, &["job", "logs", &job.id, "--node", "2"]);
    assert_eq!(code, 1);
    assert!(logs.contains("node 2 of 3"), "{logs}");
}

const SLOW: &str = r#"version: 2.1
jobs:
  test:
    machine: true
    resource_class: e2e/parallel
    parallelism: 4
    steps:
      - run: echo started; sleep 300
workflows:
  main:
    jobs: [test]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_ends_every_node_of_a_parallel_job_and_leaves_no_process() {
    let fixture = Fixture::with_files(
        CLASS,
        &[(".circleci/config.yml", SLOW)],
        AgentOptions::default(),
    )
    .await;
    let _second = launch_agent(
        &fixture.server,
        &fixture.token,
        fixture.dir.path(),
        "agent-2",
        AgentOptions::default(),
    );
    let server = &fixture.server;
    let id = server.trigger(&fixture.slug, "main").await;
    let job_id = server.job_id(&id, "test").await;
    // Two agents: two nodes run, two wait in the queue.
    let started = Instant::now();
    let mut running = 0;
    while running < 2 {
        running = 0;
        for node in 0..4 {
            let log = server
                .client
                .node_step_log_page(&server.admin, &job_id, node, 0, 0)
                .await
                .unwrap_or_default();
            running += usize::from(log.starts_with(b"started"));
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "two nodes never started: {}",
            fixture.agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.cancel(&job_id).await;
    let job = server.wait_job(&job_id, Duration::from_secs(60)).await;
    assert_eq!(job.status, "canceled");
    let pipeline = server.wait_pipeline(&id, Duration::from_secs(60)).await;
    assert_eq!(pipeline.status, "canceled", "{pipeline:?}");
    // Nothing of any node is left running.
    let workflow = format!(
        "CIRCLE_WORKFLOW_ID={}",
        server.job(&job_id).await.workflow_id
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = processes_with(&workflow);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "processes of the canceled job live on: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Live processes whose environment holds `var` exactly.
fn processes_with(var: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|b| *b == 0).any(|v| v == var.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

const SPLIT: &str = r#"version: 2.1
jobs:
  test:
    machine: true
    resource_class: e2e/parallel
    parallelism: 3
    steps:
      - run:
          name: split and run
          command: |
            for i in $(seq -w 1 30); do echo "test_$i"; done > all.txt
            circleci tests split --split-by=timings --timings-type=testname all.txt > mine.txt 2> split.err
            echo "SHARE $(tr '\n' ' ' < mine.txt)"
            cat split.err
            mkdir -p results
            {
              echo '<testsuite name="s">'
              while read -r name; do
                i=$((10#${name#test_}))
                t=$(awk "BEGIN { print (($i * $i) % 17 + 1) * 0.37 }")
                echo "<testcase classname=\"s\" name=\"$name\" time=\"$t\"/>"
              done < mine.txt
              echo '</testsuite>'
            } > results/junit.xml
      - store_test_results:
          path: results
workflows:
  main:
    jobs: [test]
"#;

/// The run time the job gives test `i` (the same formula as its awk line): uneven, so a split
/// by name is off balance and one by timings is not.
fn run_time(i: u32) -> f64 {
    f64::from((i * i) % 17 + 1) * 0.37
}

/// Each node's share, from the `SHARE ...` line its first step printed.
async fn shares(fixture: &Fixture, job_id: &str) -> (Vec<Vec<String>>, String) {
    let server = &fixture.server;
    let mut shares = Vec::new();
    let mut logs = String::new();
    for node in 0..3 {
        let log = server
            .client
            .node_step_log_page(&server.admin, job_id, node, 0, 0)
            .await
            .expect("log");
        let log = String::from_utf8_lossy(&log).into_owned();
        let share = log
            .lines()
            .find_map(|line| line.strip_prefix("SHARE "))
            .unwrap_or_else(|| panic!("node {node} printed no share: {log}"));
        shares.push(share.split_whitespace().map(str::to_owned).collect());
        logs.push_str(&log);
    }
    (shares, logs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_split_thirty_tests_by_the_timings_of_the_last_run() {
    let fixture = Fixture::with_files(
        CLASS,
        &[(".circleci/config.yml", SPLIT)],
        AgentOptions::default(),
    )
    .await;
    let _second = launch_agent(
        &fixture.server,
        &fixture.token,
        fixture.dir.path(),
        "agent-2",
        AgentOptions::default(),
    );
    let all: Vec<String> = (1..=30).map(|i| format!("test_{i:02}")).collect();
    let check_once = |shares: &[Vec<String>]| {
        let mut seen: Vec<String> = shares.iter().flatten().cloned().collect();
        seen.sort();
        assert_eq!(seen, all, "every name runs exactly once across the nodes");
    };

    // No history: names, and the fallback is said.
    let (_, jobs) = fixture.run().await;
    let first = fixture.job(&jobs, "test");
    assert_eq!(first.status, "success", "{}", fixture.agent.log_text());
    let (split, logs) = shares(&fixture, &first.id).await;
    check_once(&split);
    assert!(
        logs.contains("falling back to splitting by name"),
        "the fallback is said: {logs}"
    );
    let stored = fixture
        .server
        .client
        .job_tests(&fixture.server.admin, &first.id)
        .await
        .expect("tests");
    assert_eq!(stored.items.len(), 30, "every node stored its results");
    let mut nodes: Vec<u32> = stored.items.iter().map(|t| t.node_index).collect();
    nodes.sort();
    nodes.dedup();
    assert_eq!(nodes, [0, 1, 2], "results are kept per node");

    // With the first run's timings: balanced.
    let (_, jobs) = fixture.run().await;
    let second = fixture.job(&jobs, "test");
    assert_eq!(second.status, "success", "{}", fixture.agent.log_text());
    let (split, logs) = shares(&fixture, &second.id).await;
    check_once(&split);
    assert!(!logs.contains("falling back"), "{logs}");
    let load = |share: &Vec<String>| -> f64 {
        share
            .iter()
            .map(|name| run_time(name["test_".len()..].parse().unwrap()))
            .sum()
    };
    let loads: Vec<f64> = split.iter().map(load).collect();
    let ideal = loads.iter().sum::<f64>() / 3.0;
    let busiest = loads.iter().cloned().fold(0.0, f64::max);
    eprintln!("timings split: node loads {loads:.2?} s, ideal {ideal:.2} s");
    assert!(
        busiest <= ideal * 1.2,
        "the busiest node ({busiest:.2} s) is within 20 % of the ideal share ({ideal:.2} s): {loads:?}"
    );
}
