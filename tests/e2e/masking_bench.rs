//! The cost of masking, measured (issue 11): one step writing many log lines, run through
//! the real server, launch-agent and task-agent with no secrets and with 100 project variables
//! of 32 characters (about 400 patterns with their encoded forms), beside the same command
//! writing to /dev/null. A measurement, not a test of speed: it asserts that every byte arrived,
//! secrets or not, and prints the times. In the suite it writes 8 MiB per run; the figures in
//! the notes come from 1 GiB with the release binaries:
//!
//! ```text
//! cargo build --release --bins
//! BOSUN_MASKING_BENCH_BYTES=1073741824 BOSUN_TEST_BIN_DIR=$PWD/target/release \
//!     cargo nextest run -p bosun-tests masking_bench --no-capture
//! ```

use std::time::{Duration, Instant};

use bosun_api::types::CreateEnvVar;
use bosun_tests::{Server, git_repo, launch_agent, secret_value, shared_tempdir};

const SLUG: &str = "local/bench/masking";
const CLASS: &str = "bench/masking";
/// Bytes the step writes: `BOSUN_MASKING_BENCH_BYTES`, else 8 MiB.
fn log_bytes() -> u64 {
    std::env::var("BOSUN_MASKING_BENCH_BYTES")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(8 << 20)
}

/// The step: `bytes` of log lines. (`yes` ends on SIGPIPE, which `pipefail` would count as a
/// failure.)
fn command(bytes: u64) -> String {
    format!(
        "set +o pipefail; yes 'a log line of a chatty build, with some words and numbers 0123456789' | head -c {bytes}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masking_bench() {
    let bytes = log_bytes();
    let command = command(bytes);
    let dir = shared_tempdir();
    let config = format!(
        "version: 2.1\njobs:\n  build:\n    machine: true\n    resource_class: {CLASS}\n    steps:\n      - run: \"{command}\"\n"
    );
    let repo = git_repo(dir.path(), &[(".circleci/config.yml", &config)]);
    let server = Server::start_with(dir.path(), &["--max-step-log", "2GiB"]);
    server.resource_class(CLASS).await;
    let token = server.token(CLASS).await;
    let _agent = launch_agent(&server, &token, dir.path(), "agent", Default::default());
    server.project(SLUG, &repo).await;

    let started = Instant::now();
    let status = std::process::Command::new("bash")
        .args(["-c", &format!("{command} > /dev/null")])
        .status()
        .unwrap();
    assert!(status.success());
    let baseline = started.elapsed();

    let mut rows = Vec::new();
    let mut have = 0;
    for secrets in [0usize, 100].repeat(4) {
        if secrets == 100 && have == 0 {
            for i in 0..100 {
                server
                    .client
                    .set_project_env(
                        &server.admin,
                        SLUG,
                        &CreateEnvVar {
                            name: format!("SECRET_{i}"),
                            value: secret_value(i as u64 + 1),
                        },
                    )
                    .await
                    .unwrap();
            }
        }
        if secrets == 0 && have == 100 {
            for i in 0..100 {
                server
                    .client
                    .delete_project_env(&server.admin, SLUG, &format!("SECRET_{i}"))
                    .await
                    .unwrap();
            }
        }
        have = secrets;
        let id = server.trigger(SLUG, "main").await;
        let pipeline = server.wait_pipeline(&id, Duration::from_secs(600)).await;
        let job = &server.jobs(&id).await[0];
        assert_eq!(
            pipeline.status,
            "success",
            "{}",
            String::from_utf8_lossy(&server.step_log(&job.id, 0).await)
        );
        let detail = server.job(&job.id).await;
        let step = &detail.steps[0];
        assert_eq!(step.log_length, bytes, "every byte arrives");
        let ms = step.duration_ms.unwrap_or_default();
        rows.push((secrets, ms));
    }
    println!(
        "baseline (`{command} > /dev/null`): {:.2} s",
        baseline.as_secs_f64()
    );
    for secrets in [0, 100] {
        let mut runs: Vec<u64> = rows
            .iter()
            .filter(|(s, _)| *s == secrets)
            .map(|(_, ms)| *ms)
            .collect();
        runs.sort_unstable();
        let median = runs[runs.len() / 2] as f64 / 1000.0;
        println!(
            "{bytes}-byte step, {secrets:>3} secrets: runs {runs:?} ms; median {median:.2} s \
             ({:.2}x the baseline, {:.0} MiB/s)",
            median / baseline.as_secs_f64(),
            bytes as f64 / f64::from(1 << 20) / median
        );
    }
}
