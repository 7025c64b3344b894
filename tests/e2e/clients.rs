//! Third-party CircleCI API clients against a real bosun (issue 13): `pycircleci` and
//! `circleci-env-cli` from PyPI, `circle-client` and `circleci-api` from npm, pinned in
//! `tests/clients/` and installed by `cargo xtask test` into `target/clients`. A real pipeline
//! runs first (server, launch-agent, task-agent; an artifact and test results), then each
//! client's check script calls every method a self-hosted server has, as its users would, and
//! prints one PASS/FAIL line per call. Any FAIL fails this test, with the lines.

use std::path::PathBuf;
use std::process::Command;

use bosun_api::Auth;
use bosun_tests::{AgentOptions, bin_dir, git_repo, launch_agent, shared_tempdir};

const CONFIG: &str = r#"version: 2.1
jobs:
  build:
    machine: true
    resource_class: acme/clients
    steps:
      - run: |
          mkdir -p out results
          echo widget > out/widget.txt
          cat > results/junit.xml <<XML
          <testsuite name="unit" tests="2">
          <testcase classname="unit" name="works" file="t.py" time="0.1"/>
          <testcase classname="unit" name="also_works" file="t.py" time="0.2"/>
          </testsuite>
          XML
      - store_artifacts:
          path: out
      - store_test_results:
          path: results
workflows:
  main:
    jobs: [build]
"#;

/// Where `cargo xtask test` installs the clients (`tests/clients/install.sh`).
fn clients_dir() -> PathBuf {
    let dir = bin_dir()
        .parent()
        .expect("the target directory")
        .join("clients");
    assert!(
        dir.join("venv/bin/python").is_file() && dir.join("npm/node_modules").is_dir(),
        "the third-party clients are not installed in {}: `cargo xtask test` installs them \
         (bash tests/clients/install.sh {})",
        dir.display(),
        dir.display()
    );
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn third_party_clients_pass_every_call_against_a_real_pipeline() {
    let clients = clients_dir();
    let dir = shared_tempdir();
    let server = bosun_tests::Server::start(dir.path());
    server.resource_class("acme/clients").await;
    let token = server.token("acme/clients").await;
    let agent = launch_agent(
        &server,
        &token,
        dir.path(),
        "agent",
        AgentOptions::default(),
    );
    let repo = git_repo(dir.path(), &[(".circleci/config.yml", CONFIG)]);
    let slug = "gh/acme/widgets";
    server.project(slug, &repo).await;
    let id = server.trigger(slug, "main").await;
    let pipeline = server
        .wait_pipeline(&id, std::time::Duration::from_secs(120))
        .await;
    assert_eq!(pipeline.status, "success", "{}", agent.log_text());

    let Auth::CircleToken(admin) = &server.admin else {
        panic!("the admin's auth is a Circle-Token");
    };
    let scripts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients");
    let output = Command::new("bash")
        .arg(scripts.join("run_all.sh"))
        .arg(&clients)
        .env("BOSUN_URL", &server.url)
        .env("BOSUN_TOKEN", admin)
        .env("BOSUN_SLUG", slug)
        .env("BOSUN_PIPELINE_ID", &id)
        .output()
        .expect("running tests/clients/run_all.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let passed = stdout.lines().filter(|l| l.starts_with("PASS ")).count();
    let failed: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FAIL ")).collect();
    assert!(
        output.status.success() && failed.is_empty(),
        "{} calls failed ({passed} passed):\n{}\n\nstdout:\n{stdout}\nstderr:\n{stderr}",
        failed.len(),
        failed.join("\n")
    );
    eprintln!("third-party clients: {passed} calls passed, none failed");
    // The scripts ran: each client made its calls (a broken install would pass nothing).
    assert!(passed >= 90, "only {passed} calls passed:\n{stdout}");
}
