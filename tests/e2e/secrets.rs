//! Secrets end to end (issue 11): project variables and contexts set through the `bosun` CLI
//! (values on stdin), delivered only to the jobs that may have them with CircleCI's precedence,
//! contexts refused by their restrictions before a job is queued, and no secret value anywhere
//! under the server's data directory or in the server's and agents' logs.

use std::path::Path;
use std::time::Duration;

use bosun_tests::{AgentOptions, Fixture};

const CONFIG: &str = r#"version: 2.1
jobs:
  with-context:
    machine: true
    resource_class: e2e/secrets
    environment:
      BY_JOB: job
    steps:
      - run:
          name: report
          environment:
            BY_STEP: step
          command: |
            h() { printf '%s' "$1" | sha256sum | cut -c1-16; }
            echo "ctx=$(h "${CTX_TOKEN-}") proj=$(h "${PROJECT_TOKEN-}") layered=$(h "${LAYERED-}")"
            echo "by_job=$BY_JOB by_step=$BY_STEP"
            echo "short=${SHORT-} flag=${FLAG-}"
  without-context:
    machine: true
    resource_class: e2e/secrets
    steps:
      - run: echo "ctx=${CTX_TOKEN:-unset} proj_set=${PROJECT_TOKEN:+yes}"
  main-only:
    machine: true
    resource_class: e2e/secrets
    steps:
      - run: echo "main-only ran"
  other-project:
    machine: true
    resource_class: e2e/secrets
    steps:
      - run: echo "should not run"
  missing:
    machine: true
    resource_class: e2e/secrets
    steps:
      - run: echo "should not run"
  after-refusal:
    machine: true
    resource_class: e2e/secrets
    steps:
      - run: echo "should not run either"
workflows:
  secrets:
    jobs:
      - with-context:
          context: [deploy, layer]
      - without-context
      - main-only:
          context: main-only
      - other-project:
          context: other-only
      - missing:
          context: no-such-context
      - after-refusal:
          requires: [missing]
"#;

const PROJECT_TOKEN: &str = "proj-3c1f0a9e-secret-value-71d2";
const CTX_TOKEN: &str = "ctx-8b0e44f2-deploy-secret-a9c3";
const LAYERED_PROJECT: &str = "layer-from-project-5d1e9b";
const LAYERED_CONTEXT: &str = "layer-from-context-e27c40";
const BY_JOB_CONTEXT: &str = "context-loses-to-job-0f3a";

fn h(value: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(value.as_bytes());
    digest
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()[..16]
        .to_owned()
}

/// Runs `bosun ARGS` against the fixture's server with `stdin` fed in; answers stdout.
fn bosun(fixture: &Fixture, args: &[&str], stdin: &str) -> String {
    fixture.server.cli_ok(args, stdin)
}

/// Every file under `dir`, recursively (symlinks not followed).
fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            files_under(&entry.path(), out);
        } else if kind.is_file() {
            out.push(entry.path());
        }
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variables_reach_only_the_jobs_allowed_them_and_never_rest_in_plaintext() {
    let fixture = Fixture::with_files(
        "e2e/secrets",
        &[(".circleci/config.yml", CONFIG)],
        AgentOptions::default(),
    )
    .await;
    let slug = fixture.slug.clone();
    // A second project of the organization, for a `project` restriction.
    fixture
        .server
        .project("local/e2e/other", &fixture.repo)
        .await;

    bosun(
        &fixture,
        &["project", "env", "set", &slug, "PROJECT_TOKEN"],
        &format!("{PROJECT_TOKEN}\n"),
    );
    bosun(
        &fixture,
        &["project", "env", "set", &slug, "LAYERED"],
        LAYERED_PROJECT,
    );
    bosun(&fixture, &["project", "env", "set", &slug, "SHORT"], "abc");
    bosun(&fixture, &["project", "env", "set", &slug, "FLAG"], "true");
    let listed = bosun(&fixture, &["project", "env", "list", &slug], "");
    assert!(listed.contains("PROJECT_TOKEN\txxxx71d2"), "{listed}");
    assert!(listed.contains("SHORT\txxxx"), "{listed}");
    assert!(!listed.contains(PROJECT_TOKEN), "{listed}");

    for context in ["deploy", "layer", "main-only", "other-only"] {
        let out = bosun(&fixture, &["context", "create", context], "");
        assert!(out.contains(&format!("created context {context}")), "{out}");
    }
    bosun(
        &fixture,
        &["context", "env", "set", "deploy", "CTX_TOKEN"],
        CTX_TOKEN,
    );
    bosun(
        &fixture,
        &["context", "env", "set", "layer", "LAYERED"],
        LAYERED_CONTEXT,
    );
    bosun(
        &fixture,
        &["context", "env", "set", "layer", "BY_JOB"],
        BY_JOB_CONTEXT,
    );
    let names = bosun(&fixture, &["context", "env", "list", "deploy"], "");
    assert!(names.starts_with("CTX_TOKEN\t"), "{names}");
    assert!(!names.contains(CTX_TOKEN), "{names}");
    bosun(
        &fixture,
        &[
            "context",
            "restrict",
            "main-only",
            "--expression",
            r#"pipeline.git.branch == "main" and not (pipeline.git.tag starts-with "x")"#,
        ],
        "",
    );
    bosun(
        &fixture,
        &[
            "context",
            "restrict",
            "other-only",
            "--project",
            "local/e2e/other",
        ],
        "",
    );

    // On `main`.
    let (pipeline, jobs) = fixture.run().await;
    assert_eq!(pipeline.status, "failed", "{jobs:?}");
    let status = |jobs: &[bosun_api::Job], name: &str| fixture.job(jobs, name).status.clone();
    assert_eq!(status(&jobs, "with-context"), "success");
    assert_eq!(status(&jobs, "without-context"), "success");
    assert_eq!(status(&jobs, "main-only"), "success");
    assert_eq!(status(&jobs, "other-project"), "failed");
    assert_eq!(status(&jobs, "missing"), "failed");
    assert_eq!(status(&jobs, "after-refusal"), "not_run");

    let log = |job: &bosun_api::Job| {
        let id = job.id.clone();
        let server = &fixture.server;
        async move { String::from_utf8_lossy(&server.step_log(&id, 0).await).into_owned() }
    };
    let report = log(fixture.job(&jobs, "with-context")).await;
    assert!(
        report.contains(&format!(
            "ctx={} proj={} layered={}",
            h(CTX_TOKEN),
            h(PROJECT_TOKEN),
            h(LAYERED_CONTEXT)
        )),
        "context over project, both delivered: {report}"
    );
    assert!(report.contains("by_job=job by_step=step"), "{report}");
    assert!(report.contains("short=abc flag=true"), "{report}");
    let plain = log(fixture.job(&jobs, "without-context")).await;
    assert!(plain.contains("ctx=unset proj_set=yes"), "{plain}");

    let message = |jobs: &[bosun_api::Job], name: &str| {
        let id = fixture.job(jobs, name).id.clone();
        let server = &fixture.server;
        async move { server.job(&id).await.message.unwrap_or_default() }
    };
    let other = message(&jobs, "other-project").await;
    assert!(
        other.contains("context `other-only`")
            && other.contains("unauthorized")
            && other.contains("local/e2e/other"),
        "{other}"
    );
    let missing = message(&jobs, "missing").await;
    assert!(
        missing.contains("context `no-such-context`") && missing.contains("does not exist"),
        "{missing}"
    );

    // On another branch the expression refuses `main-only`; the rest runs as before.
    fixture_branch(&fixture.repo, "feature");
    let id = fixture.server.trigger(&slug, "feature").await;
    fixture
        .server
        .wait_pipeline(&id, Duration::from_secs(120))
        .await;
    let jobs = fixture.server.jobs(&id).await;
    assert_eq!(status(&jobs, "with-context"), "success");
    assert_eq!(status(&jobs, "main-only"), "failed");
    let refused = message(&jobs, "main-only").await;
    assert!(
        refused.contains("context `main-only`")
            && refused.contains("unauthorized")
            && refused.contains("pipeline.git.branch == \"main\"")
            && refused.contains("branch `feature`"),
        "{refused}"
    );

    // The API never shows a value.
    let vars = fixture
        .server
        .client
        .project_env(&fixture.server.admin, &slug)
        .await
        .unwrap();
    assert!(vars.next_page_token.is_none());
    assert!(vars.items.iter().all(|v| v.value.starts_with("xxxx")));

    // Nothing at rest, nothing in any log: every file under the data directory (the SQLite
    // file, its WAL, the blobs, the mirrors) and the server's and agents' logs.
    let mut files = Vec::new();
    files_under(&fixture.server.data_dir, &mut files);
    files_under(fixture.dir.path(), &mut files);
    assert!(
        files.iter().any(|f| f.ends_with("bosun.db")),
        "the data directory has no database: {files:?}"
    );
    for file in &files {
        let bytes = std::fs::read(file).unwrap_or_default();
        for secret in [
            PROJECT_TOKEN,
            CTX_TOKEN,
            LAYERED_PROJECT,
            LAYERED_CONTEXT,
            BY_JOB_CONTEXT,
        ] {
            assert!(
                !contains(&bytes, secret),
                "{} holds the secret {secret}",
                file.display()
            );
        }
    }
}

/// Creates branch `name` at `main`'s commit.
fn fixture_branch(repo: &Path, name: &str) {
    bosun_tests::git(repo, &["branch", name, "main"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_secret_no_longer_opens_ends_naming_it_and_never_runs() {
    use bosun_api::types::CreateEnvVar;
    let dir = bosun_tests::shared_tempdir();
    let listen = bosun_tests::free_listen_addr();
    let flags = ["--listen", listen.as_str()];
    let config = "version: 2.1\njobs:\n  build:\n    machine: true\n    resource_class: e2e/lost\n    steps:\n      - run: echo should-not-run\n";
    let repo = bosun_tests::git_repo(dir.path(), &[(".circleci/config.yml", config)]);
    let server = bosun_tests::Server::start_with(dir.path(), &flags);
    server.resource_class("e2e/lost").await;
    let token = server.token("e2e/lost").await;
    let _agent = bosun_tests::launch_agent(
        &server,
        &token,
        dir.path(),
        "agent",
        AgentOptions::default(),
    );
    let slug = "local/e2e/lost";
    server.project(slug, &repo).await;
    server
        .client
        .set_project_env(
            &server.admin,
            slug,
            &CreateEnvVar {
                name: "DEPLOY_TOKEN".into(),
                value: "a-value-sealed-under-the-old-key".into(),
            },
        )
        .await
        .unwrap();

    // The key is lost (a restore without it): the server starts with another.
    let key_file = server.data_dir.join("secret-key");
    assert!(key_file.exists(), "the server made its key on first start");
    std::fs::remove_file(&key_file).unwrap();
    let server = server.restart(dir.path(), &flags);

    let id = server.trigger(slug, "main").await;
    server.wait_pipeline(&id, Duration::from_secs(120)).await;
    let job = &server.jobs(&id).await[0];
    assert_eq!(job.status, "infrastructure_fail");
    let detail = server.job(&job.id).await;
    let message = detail.message.unwrap_or_default();
    assert!(
        message.contains("DEPLOY_TOKEN") && message.contains("cannot be decrypted"),
        "{message}"
    );
    let listed = server.client.project_env(&server.admin, slug).await;
    let err = listed.unwrap_err().to_string();
    assert!(err.contains("cannot be decrypted"), "{err}");
}
