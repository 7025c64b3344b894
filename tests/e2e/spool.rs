//! While the server is down a running job keeps running (issue 14): its output goes to the
//! launch-agent's spool on disk (root-only, under the ledger), and is replayed by offset once the
//! server is back; past `runner.max_spool_size` the job fails and says why; a result the server
//! could not take survives a launch-agent kill -9 and is reported by the next start.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bosun_tests::{
    AgentOptions, Proc, Server, free_listen_addr, git_repo, launch_agent, shared_tempdir,
};
use sha2::Digest as _;

/// Bytes the job writes while the server is down: over the outbox's 8 MiB in memory, so the
/// spool file must take the rest.
const OUTAGE_BYTES: u64 = 24 << 20;

fn config(resource_class: &str, steps: &str) -> String {
    format!(
        "version: 2.1\njobs:\n  build:\n    machine: true\n    resource_class: {resource_class}\n    steps:\n{steps}workflows:\n  main:\n    jobs: [build]\n"
    )
}

/// The job's first step: prints `started`, waits for `go` (written by the test once the server
/// is down), then writes `bytes` of numbered lines and `finished`.
fn outage_step(dir: &Path, bytes: u64) -> String {
    let go = dir.join("go");
    format!(
        "      - run: |\n          echo started\n          while [ ! -e {go} ]; do sleep 0.05; done\n          (seq 1 100000000 || true) | head -c {bytes}\n          echo\n          echo finished\n",
        go = go.display()
    )
}

fn expected_log(bytes: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes as usize + 64);
    out.extend_from_slice(b"started\n");
    let mut n = 1u64;
    let mut numbers = Vec::with_capacity(bytes as usize);
    while (numbers.len() as u64) < bytes {
        numbers.extend_from_slice(format!("{n}\n").as_bytes());
        n += 1;
    }
    numbers.truncate(bytes as usize);
    out.extend_from_slice(&numbers);
    out.extend_from_slice(b"\nfinished\n");
    out
}

fn ledger(dir: &Path) -> PathBuf {
    dir.join("work").join(".bosun-tasks")
}

/// Waits until `what` holds, failing the test with the agent's log past `limit`.
fn wait_until(agent: &Proc, limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < limit,
            "{what} did not happen within {limit:?}:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|list| {
            list.flatten()
                .map(|entry| entry.path())
                .filter(|path| path.to_string_lossy().ends_with(suffix))
                .collect()
        })
        .unwrap_or_default()
}

/// Starts the server again on the arguments `setup` gave it (its fixed address).
fn restart(server: Server, dir: &Path, args: &[String]) -> Server {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    server.restart(dir, &args)
}

/// Starts a server on a fixed address with a project whose job is `steps`.
/// Returns the server, the agent, the job id, the server's arguments and the runner token.
async fn setup(
    dir: &Path,
    class: &str,
    steps: &str,
    extra: &str,
) -> (Server, Proc, String, Vec<String>, String) {
    let addr = free_listen_addr();
    let args = vec!["--listen".to_owned(), addr];
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start_with(dir, &arg_refs);
    server.resource_class(class).await;
    let token = server.token(class).await;
    let agent = launch_agent(
        &server,
        &token,
        dir,
        "agent",
        AgentOptions {
            extra_config: extra.to_owned(),
            ..AgentOptions::default()
        },
    );
    let repo = git_repo(dir, &[(".circleci/config.yml", &config(class, steps))]);
    let slug = format!("local/{class}");
    server.project(&slug, &repo).await;
    let pipeline = server.trigger(&slug, "main").await;
    let job = server.job_id(&pipeline, "build").await;
    server
        .wait_for_log(&job, 0, "started\n", Duration::from_secs(30))
        .await;
    (server, agent, job, args, token)
}

/// kill -9.
fn kill(server: &mut Server) {
    server.proc.child.kill().unwrap();
    server.proc.child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_on_through_an_outage_and_its_spooled_log_arrives_whole() {
    let dir = shared_tempdir();
    let (mut server, agent, job, args, _) = setup(
        dir.path(),
        "e2e/spool",
        &outage_step(dir.path(), OUTAGE_BYTES),
        "",
    )
    .await;
    kill(&mut server);
    std::fs::write(dir.path().join("go"), "").unwrap();
    // The job runs to its end with the server down: its output waits in the spool file.
    let ledger = ledger(dir.path());
    wait_until(&agent, Duration::from_secs(60), "spooling to disk", || {
        !files_ending(&ledger, ".spool").is_empty()
    });
    wait_until(&agent, Duration::from_secs(60), "the job's end", || {
        agent
            .log_text()
            .contains("task finished status=\"success\"")
    });
    let spool = files_ending(&ledger, ".spool");
    let spooled = spool
        .iter()
        .map(|path| std::fs::metadata(path).map(|m| m.len()).unwrap_or(0))
        .sum::<u64>();
    let mode = std::fs::metadata(&spool[0]).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    eprintln!("the job ended with the server down; {spooled} bytes spooled to disk");
    assert!(spooled > 8 << 20, "only {spooled} bytes went to the spool");

    let server = restart(server, dir.path(), &args);
    let detail = server.wait_job(&job, Duration::from_secs(120)).await;
    assert_eq!(detail.status, "success", "{detail:?}\n{}", agent.log_text());
    let log = server.step_log(&job, 0).await;
    let expected = expected_log(OUTAGE_BYTES);
    assert_eq!(log.len(), expected.len(), "the stored log's length");
    assert_eq!(
        sha2::Sha256::digest(&log),
        sha2::Sha256::digest(&expected),
        "the stored log is not the job's output exactly"
    );
    wait_until(
        &agent,
        Duration::from_secs(10),
        "the spool's removal",
        || files_ending(&ledger, ".spool").is_empty(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_spool_bound_the_job_fails_and_says_why() {
    let dir = shared_tempdir();
    let (mut server, agent, job, args, _) = setup(
        dir.path(),
        "e2e/spool-bound",
        &outage_step(dir.path(), 40 << 20),
        "  max_spool_size: 12M\n",
    )
    .await;
    kill(&mut server);
    std::fs::write(dir.path().join("go"), "").unwrap();
    wait_until(&agent, Duration::from_secs(60), "the job's cancel", || {
        agent.log_text().contains("task finished")
    });
    let server = restart(server, dir.path(), &args);
    let detail = server.wait_job(&job, Duration::from_secs(120)).await;
    assert_eq!(detail.status, "infrastructure_fail", "{detail:?}");
    let message = detail.message.unwrap_or_default();
    assert!(
        message.contains("runner.max_spool_size") && message.contains("unreachable"),
        "{message}"
    );
    // What was spooled before the bound reached the server, from the start, in order.
    let log = server.step_log(&job, 0).await;
    let expected = expected_log(40 << 20);
    assert!(log.len() > 8 << 20, "only {} bytes stored", log.len());
    assert_eq!(
        &log[..],
        &expected[..log.len()],
        "the stored part is not a prefix of the output"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_held_on_disk_survives_a_launch_agent_kill() {
    let dir = shared_tempdir();
    let (mut server, agent, job, args, token) =
        setup(dir.path(), "e2e/held", &outage_step(dir.path(), 1000), "").await;
    kill(&mut server);
    std::fs::write(dir.path().join("go"), "").unwrap();
    let ledger = ledger(dir.path());
    wait_until(
        &agent,
        Duration::from_secs(60),
        "the result on disk",
        || {
            agent
                .log_text()
                .contains("task finished status=\"success\"")
                && !files_ending(&ledger, ".done").is_empty()
        },
    );
    // The record holds the task token sealed, not in the clear.
    let record = std::fs::read_to_string(&files_ending(&ledger, ".done")[0]).unwrap();
    assert!(!record.contains("token\":\"ey"), "{record}");
    let mut agent = agent;
    agent.child.kill().unwrap();
    agent.child.wait().unwrap();

    let server = restart(server, dir.path(), &args);
    let again = launch_agent(
        &server,
        &token,
        dir.path(),
        "agent2",
        AgentOptions::default(),
    );
    let detail = server.wait_job(&job, Duration::from_secs(60)).await;
    assert_eq!(detail.status, "success", "{detail:?}\n{}", again.log_text());
    let message = detail.message.unwrap_or_default();
    assert!(
        message.contains("restarted before all of the task's output"),
        "{message}"
    );
    wait_until(
        &again,
        Duration::from_secs(10),
        "the record's removal",
        || files_ending(&ledger, ".done").is_empty(),
    );
}
