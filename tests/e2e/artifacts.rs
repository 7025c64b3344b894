//! `store_artifacts` end to end: a job stores a directory and a file, with and without a
//! `destination`, fails, stores more after the failure, and the test reads every artifact back
//! through CircleCI's listing, its `url`, and `bosun artifacts --download`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use bosun_api::Auth;
use bosun_tests::{AgentOptions, Server, bin_dir, git_repo, launch_agent, shared_tempdir};
use sha2::{Digest, Sha256};

const CLASS: &str = "artifacts/e2e";
const SLUG: &str = "local/artifacts/e2e";

const CONFIG: &str = r#"version: 2.1
jobs:
  build:
    machine: true
    resource_class: artifacts/e2e
    steps:
      - run:
          name: write
          command: |
            mkdir -p out/sub
            head -c 3145728 /dev/urandom > out/big.bin
            echo small > out/sub/small.txt
            echo spaced > "out/with space.txt"
            echo single > single.txt
            ln -s /etc/passwd out/link
            sha256sum out/big.bin out/sub/small.txt "out/with space.txt" single.txt
      - store_artifacts:
          path: out
      - store_artifacts:
          path: single.txt
          destination: renamed/single.txt
      - run: exit 3
      - store_artifacts:
          path: out/sub
          destination: after-failure
          when: always
      - store_artifacts:
          path: single.txt
          destination: default-when/single.txt
      - store_artifacts:
          path: does-not-exist
      - run: echo never
"#;

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn start(dir: &Path, flags: &[&str], config: &str) -> (Server, bosun_tests::Proc) {
    let server = Server::start_with(dir, flags);
    server.resource_class(CLASS).await;
    let token = server.token(CLASS).await;
    let agent = launch_agent(&server, &token, dir, "agent", AgentOptions::default());
    let repo = git_repo(dir, &[(".circleci/config.yml", config)]);
    server.project(SLUG, &repo).await;
    (server, agent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_are_stored_after_a_failure_listed_and_downloaded() {
    let dir = shared_tempdir();
    let (server, agent) = start(dir.path(), &[], CONFIG).await;
    let id = server.trigger(SLUG, "main").await;
    server.wait_pipeline(&id, Duration::from_secs(120)).await;
    let jobs = server.jobs(&id).await;
    let job = &jobs[0];
    let detail = server.job(&job.id).await;
    let statuses: Vec<&str> = detail.steps.iter().map(|s| s.status.as_str()).collect();
    assert_eq!(job.status, "failed", "{statuses:?}\n{}", agent.log_text());
    assert_eq!(
        statuses,
        [
            "success", "success", "success", "failed", "success", "success", "success", "skipped"
        ],
        "{}",
        agent.log_text()
    );

    // The sums the job printed, by the file it wrote.
    let log = String::from_utf8(server.step_log(&job.id, 0).await).unwrap();
    let sums: BTreeMap<String, String> = log
        .lines()
        .filter_map(|line| line.split_once("  "))
        .map(|(sum, file)| (file.to_owned(), sum.to_owned()))
        .collect();
    assert_eq!(sums.len(), 4, "{log}");
    let expected: BTreeMap<&str, &str> = [
        ("after-failure/small.txt", "out/sub/small.txt"),
        ("default-when/single.txt", "single.txt"),
        ("out/big.bin", "out/big.bin"),
        ("out/sub/small.txt", "out/sub/small.txt"),
        ("out/with space.txt", "out/with space.txt"),
        ("renamed/single.txt", "single.txt"),
    ]
    .into_iter()
    .collect();

    let stored = String::from_utf8(server.step_log(&job.id, 1).await).unwrap();
    assert!(stored.contains("Uploading "), "{stored}");
    assert!(
        stored.contains("Skipping "),
        "the symlink is skipped: {stored}"
    );
    assert!(stored.contains("Uploaded 3 files"), "{stored}");
    let missing = String::from_utf8(server.step_log(&job.id, 6).await).unwrap();
    assert!(missing.contains("No artifact files found at"), "{missing}");

    let list = server
        .client
        .project_job_artifacts(&server.admin, SLUG, job.job_number)
        .await
        .expect("artifact listing");
    assert_eq!(list.next_page_token, None);
    let paths: Vec<&str> = list.items.iter().map(|a| a.path.as_str()).collect();
    assert_eq!(paths, expected.keys().copied().collect::<Vec<_>>());
    for artifact in &list.items {
        assert_eq!(artifact.node_index, 0);
        let download = server
            .client
            .download_artifact(&server.admin, &artifact.url)
            .await
            .expect("download");
        assert_eq!(download.content_length(), artifact.size);
        let bytes = download.bytes().await.expect("bytes");
        let written = expected[artifact.path.as_str()];
        assert_eq!(
            sha256_hex(&bytes),
            sums[written],
            "artifact {} differs from {written}",
            artifact.path
        );
        if artifact.path == "out/big.bin" {
            assert_eq!(bytes.len(), 3 << 20);
        }
    }
    // Without a token, nothing is listed or downloaded.
    let denied = server
        .client
        .download_artifact(&Auth::None, &list.items[0].url)
        .await;
    assert!(denied.is_err());

    // The CLI lists, then downloads the same tree.
    let token = match &server.admin {
        Auth::CircleToken(token) => token.clone(),
        _ => unreachable!(),
    };
    let cli = |args: &[&str]| {
        let output = std::process::Command::new(bin_dir().join("bosun"))
            .args(["--host", &server.url, "--token", &token])
            .args(args)
            .output()
            .expect("bosun");
        assert!(
            output.status.success(),
            "bosun {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let listed = cli(&["artifacts", &job.id]);
    assert!(
        listed.contains(&format!("out/big.bin {} http", 3 << 20)),
        "{listed}"
    );
    let target = dir.path().join("downloaded");
    cli(&["artifacts", &job.id, "--download", target.to_str().unwrap()]);
    for (path, written) in &expected {
        let bytes = std::fs::read(target.join(path)).expect("downloaded file");
        assert_eq!(sha256_hex(&bytes), sums[*written], "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_artifact_over_the_server_limit_fails_its_step() {
    let dir = shared_tempdir();
    let config = format!(
        "version: 2.1\njobs:\n  build:\n    machine: true\n    resource_class: {CLASS}\n    steps:\n      \
         - run: head -c 2097152 /dev/zero > big.bin\n      \
         - store_artifacts:\n          path: big.bin\n"
    );
    let (server, agent) = start(dir.path(), &["--max-artifact-size", "1MiB"], &config).await;
    let id = server.trigger(SLUG, "main").await;
    server.wait_pipeline(&id, Duration::from_secs(120)).await;
    let job = &server.jobs(&id).await[0];
    assert_eq!(job.status, "failed", "{}", agent.log_text());
    let log = String::from_utf8(server.step_log(&job.id, 1).await).unwrap();
    assert!(
        log.contains("larger than the server's limit of 1048576 bytes (--max-artifact-size)"),
        "{log}"
    );
    let list = server
        .client
        .job_artifacts(&server.admin, &job.id)
        .await
        .expect("listing");
    assert!(list.items.is_empty(), "{list:?}");
}
