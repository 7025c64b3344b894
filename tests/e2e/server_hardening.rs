//! The server's boundaries, tried as an attacker would (issue 8): a job copying the server's
//! database, logs and admin token, or looking for its continuation key in them (#2); a project
//! running its jobs on another namespace's runners (#7); the token of an ended task probing the
//! task endpoints (#13).

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bosun_api::{Auth, ClaimRequest, ClaimResponse, CreateProject, Method, Project, StatusCode};
use bosun_tests::{
    AgentOptions, Server, bin_dir, commit, git, git_repo, is_root, launch_agent, shared_tempdir,
};

/// Every file and directory under `dir`, `dir` included.
fn walk(dir: &Path) -> Vec<(PathBuf, std::fs::Metadata)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let metadata = std::fs::symlink_metadata(&path).expect("metadata");
        if metadata.is_dir() {
            for entry in std::fs::read_dir(&path).expect("read_dir").flatten() {
                pending.push(entry.path());
            }
        }
        found.push((path, metadata));
    }
    found
}

fn mode(metadata: &std::fs::Metadata) -> u32 {
    metadata.permissions().mode() & 0o7777
}

/// Creates a project through the API; `git_url` is a `file://` URL so that git copies the
/// objects instead of hard-linking the test repository's (which are the repository's, not the
/// server's).
async fn project(server: &Server, slug: &str, repo: &Path, namespace: Option<&str>) -> Project {
    server
        .client
        .post(
            "/api/v2/project",
            &server.admin,
            &CreateProject {
                slug: slug.into(),
                git_url: format!("file://{}", repo.display()),
                namespace: namespace.map(str::to_owned),
            },
        )
        .await
        .expect("create project")
}

/// A setup workflow's job, running as the job user, tries to read and copy the server's
/// database, its WAL, a step log and the admin token, and prints its continuation key reversed
/// (so the key itself is in no log). Everything is denied; the data directory is 0700 with
/// nothing in it open to group or others, and the key is in no file the server keeps: only its
/// hash is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_cannot_copy_the_servers_database_or_find_a_continuation_key_in_it() {
    if !is_root() {
        eprintln!("skipped: needs root (the job must run as another user than the server)");
        return;
    }
    let dir = shared_tempdir();
    let server = Server::start_generating_admin_token(dir.path());
    let data = server.data_dir.clone();
    server.resource_class("e2e/linux").await;
    let token = server.token("e2e/linux").await;
    let _agent = launch_agent(
        &server,
        &token,
        dir.path(),
        "agent",
        AgentOptions::default(),
    );
    let config = format!(
        r#"version: 2.1
setup: true
jobs:
  steal:
    machine: true
    resource_class: e2e/linux
    steps:
      - run: echo a step log to steal
      - run:
          name: steal
          command: |
            DATA={data}
            # The first chunk of step 0's log ("a step log to steal\n", 20 bytes).
            LOG="$DATA/blobs/logs/$BOSUN_TASK_ID/0/$(printf '%020d-%020d.zst' 0 20)"
            # Where the directories are open (as before the fix), wait for the first log.
            if ls "$DATA/blobs/logs" > /dev/null 2>&1; then
              for i in $(seq 50); do test -s "$LOG" && break; sleep 0.1; done
            fi
            for f in "$DATA/bosun.db" "$DATA/bosun.db-wal" "$LOG" "$DATA/admin-token"; do
              if cat "$f" > /dev/null 2>&1; then echo "READ by cat: $f"; else echo "denied cat: $f"; fi
              if cp "$f" ./copy 2> /dev/null; then echo "READ by cp: $f"; else echo "denied cp: $f"; fi
            done
            echo "reversed key: $(printf %s "$CIRCLE_CONTINUATION_KEY" | rev)"
workflows:
  setup:
    jobs:
      - steal
"#,
        data = data.display()
    );
    let repo = git_repo(dir.path(), &[(".circleci/config.yml", &config)]);
    project(&server, "local/e2e/steal", &repo, None).await;
    let pipeline = server.trigger("local/e2e/steal", "main").await;
    let job = server.job_id(&pipeline, "steal").await;
    let detail = server.wait_job(&job, Duration::from_secs(60)).await;
    let log = String::from_utf8_lossy(&server.step_log(&job, 1).await).into_owned();
    assert_eq!(detail.status, "success", "{detail:?}\n{log}");

    for file in ["bosun.db", "bosun.db-wal", "admin-token"] {
        let path = data.join(file);
        assert!(path.exists(), "{} missing", path.display());
        for how in ["cat", "cp"] {
            assert!(
                log.contains(&format!("denied {how}: {}", path.display())),
                "{how} of {file}: {log}"
            );
        }
    }
    assert!(
        log.matches("denied cat: ").count() == 4 && log.matches("denied cp: ").count() == 4,
        "{log}"
    );
    assert!(
        !log.contains("READ"),
        "the job read the server's data:\n{log}"
    );

    let reversed = log
        .lines()
        .find_map(|line| line.strip_prefix("reversed key: "))
        .unwrap_or_else(|| panic!("no key printed: {log}"));
    let key: String = reversed.trim().chars().rev().collect();
    assert!(
        key.starts_with("bosun_ck_") && key.len() == "bosun_ck_".len() + 64,
        "the job got no continuation key: {key:?}"
    );

    let entries = walk(&data);
    assert!(
        entries
            .iter()
            .any(|(path, _)| path.to_string_lossy().contains("/blobs/logs/")
                && path.extension().is_some_and(|ext| ext == "zst")),
        "no step log under {}",
        data.display()
    );
    for (path, metadata) in &entries {
        if path == &data {
            assert_eq!(mode(metadata), 0o700, "{}", path.display());
        } else {
            assert_eq!(
                mode(metadata) & 0o077,
                0,
                "{} is mode {:04o}",
                path.display(),
                mode(metadata)
            );
        }
        if metadata.is_file() {
            let bytes = std::fs::read(path).expect("read");
            assert!(
                !bytes
                    .windows(key.len())
                    .any(|window| window == key.as_bytes()),
                "the continuation key is stored in {}",
                path.display()
            );
        }
    }
}

/// A data directory left open by an older version (0755, `bosun.db*` 0644, `blobs/` 0755) is
/// tightened when the server starts, and the log says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_left_open_by_an_older_version_is_tightened_at_start() {
    let dir = shared_tempdir();
    let data = {
        let server = Server::start(dir.path());
        server.resource_class("e2e/linux").await;
        server.data_dir.clone()
    };
    // What an older version left: everything readable by everyone.
    for (path, metadata) in walk(&data) {
        let open = if metadata.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(open)).expect("chmod");
    }
    // The harness waits for a fresh `server-url`.
    std::fs::remove_file(data.join("server-url")).expect("remove server-url");
    let server = Server::start(dir.path());
    server.resource_class("e2e/other").await;
    for (path, metadata) in walk(&data) {
        let expected = if path == data { 0o700 } else { 0 };
        let actual = if path == data {
            mode(&metadata)
        } else {
            mode(&metadata) & 0o077
        };
        assert_eq!(
            actual,
            expected,
            "{} is mode {:04o}",
            path.display(),
            mode(&metadata)
        );
    }
    let log = server.proc.log_text();
    assert!(
        log.contains("was mode 0755, open to other users: made it 0700")
            && log.contains("bosun.db was mode 0644"),
        "{log}"
    );
}

fn deploy_config(resource_class: &str, command: &str) -> String {
    format!(
        "version: 2.1\njobs:\n  deploy:\n    machine: true\n    resource_class: {resource_class}\n    steps:\n      - run: {command}\nworkflows:\n  w:\n    jobs:\n      - deploy\n"
    )
}

/// Project `gh/evil/xns` (namespace `evil`, its slug's organization) names acme's resource class
/// `acme/prod-deploy`, which has a running launch-agent: the pipeline errors naming the job, the
/// class, both namespaces, and has no job a runner could claim. A setup job of evil's own runner
/// cannot continue onto acme's class either. The acme runner is alive all along: a project of
/// namespace `acme` (made with the CLI's `--namespace`) runs on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_cannot_run_jobs_on_another_namespaces_runners() {
    let dir = shared_tempdir();
    let server = Server::start(dir.path());
    server.resource_class("acme/prod-deploy").await;
    let acme_token = server.token("acme/prod-deploy").await;
    let acme_agent = launch_agent(
        &server,
        &acme_token,
        dir.path(),
        "acme",
        AgentOptions::default(),
    );

    let repo = git_repo(
        dir.path(),
        &[(
            ".circleci/config.yml",
            &deploy_config("acme/prod-deploy", "echo deployed"),
        )],
    );
    let evil = project(&server, "gh/evil/xns", &repo, None).await;
    assert_eq!(evil.namespace, "evil");
    assert!(
        evil.warning
            .as_deref()
            .is_some_and(|w| w.contains("namespace `evil` has no resource class")),
        "{evil:?}"
    );

    let pipeline = server.trigger("gh/evil/xns", "main").await;
    let pipeline = server.pipeline(&pipeline).await;
    assert_eq!(pipeline.state, "errored", "{pipeline:?}");
    let message = &pipeline.errors[0].message;
    for part in [
        "job `deploy`",
        "`acme/prod-deploy`",
        "namespace `acme`",
        "namespace `evil`",
    ] {
        assert!(message.contains(part), "{part:?} not in {message:?}");
    }
    assert!(server.jobs(&pipeline.id).await.is_empty());

    // Through a setup workflow on evil's own runner: the continuation names acme's class.
    server.resource_class("evil/linux").await;
    let evil_token = server.token("evil/linux").await;
    let _evil_agent = launch_agent(
        &server,
        &evil_token,
        dir.path(),
        "evil",
        AgentOptions::default(),
    );
    let setup = r#"version: 2.1
setup: true
jobs:
  setup:
    machine: true
    resource_class: evil/linux
    steps:
      - run:
          name: continue onto acme
          command: |
            config='version: 2.1\njobs:\n  deploy:\n    machine: true\n    resource_class: acme/prod-deploy\n    steps:\n      - run: echo deployed\nworkflows:\n  w:\n    jobs:\n      - deploy\n'
            printf '{"continuation-key": "%s", "configuration": "%s"}' "$CIRCLE_CONTINUATION_KEY" "$config" > body.json
            code=$(curl -s -o answer.json -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
              --data-binary @body.json "$BOSUN_API_URL/api/v2/pipeline/continue")
            echo "continue: $code $(cat answer.json)"
workflows:
  setup:
    jobs:
      - setup
"#;
    git(&repo, &["checkout", "--quiet", "-b", "setup"]);
    commit(&repo, &[(".circleci/config.yml", setup)], "setup");
    git(&repo, &["checkout", "--quiet", "main"]);
    let pipeline = server.trigger("gh/evil/xns", "setup").await;
    let job = server.job_id(&pipeline, "setup").await;
    let detail = server.wait_job(&job, Duration::from_secs(60)).await;
    let log = String::from_utf8_lossy(&server.step_log(&job, 0).await).into_owned();
    assert_eq!(detail.status, "success", "{detail:?}\n{log}");
    assert!(
        log.contains("continue: 400")
            && log.contains("acme/prod-deploy")
            && log.contains("namespace `acme`")
            && log.contains("namespace `evil`"),
        "{log}"
    );
    let jobs = server.jobs(&pipeline).await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");

    // acme's runner is up and takes acme's own jobs, here of a project put in namespace acme.
    let output = std::process::Command::new(bin_dir().join("bosun"))
        .args(["project", "create", "gh/partner/tool", "--git-url"])
        .arg(format!("file://{}", repo.display()))
        .args(["--namespace", "acme"])
        .env("BOSUN_HOST", &server.url)
        .env("BOSUN_TOKEN", "bosun-e2e-admin-token-0123456789")
        .output()
        .expect("bosun project create");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("in namespace acme"),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let pipeline = server.trigger("gh/partner/tool", "main").await;
    let done = server
        .wait_pipeline(&pipeline, Duration::from_secs(60))
        .await;
    let jobs = server.jobs(&pipeline).await;
    assert_eq!(done.status, "success", "{done:?} {jobs:?}");
    assert_eq!(server.step_log(&jobs[0].id, 0).await, b"deployed\n");
    // Nothing of evil's ever reached acme's runner: it ran exactly the one task above.
    let agent_log = acme_agent.log_text();
    assert_eq!(agent_log.matches("running task").count(), 1, "{agent_log}");
}

/// One HTTP/1.1 request with a bearer token; the status and the whole body.
fn raw_request(url: &str, method: &str, path: &str, token: &str, body: &[u8]) -> (u16, String) {
    let address = url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("write");
    stream.write_all(body).expect("write");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("read");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// `x\n` as a zstd frame, for a log upload.
const ZSTD_LOG: &[u8] = &[
    0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x58, 0x11, 0x00, 0x00, 0x78, 0x0a,
];

/// The test claims a task with its runner token, as a launch-agent would, completes it, and
/// then probes every task endpoint with the ended task's token: each answers exactly what a
/// made-up token gets (401 `invalid bearer token`), naming neither the task nor its status. A
/// retried completion with the recorded status is still a 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_tasks_token_is_refused_without_naming_the_task() {
    let dir = shared_tempdir();
    let server = Server::start(dir.path());
    server.resource_class("e2e/linux").await;
    let runner_token = server.token("e2e/linux").await;
    let repo = git_repo(
        dir.path(),
        &[(
            ".circleci/config.yml",
            &deploy_config("e2e/linux", "echo hi"),
        )],
    );
    server.project("local/e2e/tokens", &repo).await;
    let _pipeline = server.trigger("local/e2e/tokens", "main").await;

    let answer = server
        .client
        .send_json(
            Method::POST,
            "/api/v3/runner/claim?wait=10s",
            &Auth::Bearer(runner_token),
            Some(&ClaimRequest {
                name: "probe".into(),
                hostname: "h".into(),
                ip: "127.0.0.1".into(),
                version: "0".into(),
                ..ClaimRequest::default()
            }),
            Some(Duration::from_secs(20)),
        )
        .await
        .expect("claim");
    assert_eq!(answer.status, StatusCode::OK);
    let claim: ClaimResponse = answer.json().expect("claim answer");
    let task = claim.allocation.clone();
    let token = claim.task_token.clone();
    let (status, _) = raw_request(&server.url, "GET", "/api/v2/task/config", &token, b"");
    assert_eq!(status, 200);
    let (status, body) = raw_request(
        &server.url,
        "POST",
        "/api/v2/task/complete",
        &token,
        br#"{"status": "success"}"#,
    );
    assert_eq!(status, 200, "{body}");

    let made_up = format!("bosun_task_{}", "0".repeat(64));
    let probes: [(&str, &str, &[u8]); 5] = [
        ("GET", "/api/v2/task/config", b""),
        ("POST", "/api/v2/task/heartbeat", b"{}"),
        (
            "POST",
            "/api/v2/task/step",
            br#"{"step": 0, "name": "x", "status": "running"}"#,
        ),
        ("POST", "/api/v2/task/log?step=0&offset=0", ZSTD_LOG),
        ("POST", "/api/v2/task/complete", br#"{"status": "failed"}"#),
    ];
    let started = Instant::now();
    for (method, path, body) in probes {
        let ended = raw_request(&server.url, method, path, &token, body);
        let unknown = raw_request(&server.url, method, path, &made_up, body);
        assert_eq!(ended.0, 401, "{method} {path}: {}", ended.1);
        assert_eq!(ended, unknown, "{method} {path}");
        assert!(
            !ended.1.contains(&task) && !ended.1.contains("success"),
            "{method} {path}: {}",
            ended.1
        );
        let message: serde_json::Value = serde_json::from_str(&ended.1).expect("json body");
        assert_eq!(
            message,
            serde_json::json!({"message": "invalid bearer token"})
        );
    }
    assert!(started.elapsed() < Duration::from_secs(20));

    // A retried completion with the status already recorded stays a success.
    let (status, body) = raw_request(
        &server.url,
        "POST",
        "/api/v2/task/complete",
        &token,
        br#"{"status": "success"}"#,
    );
    assert_eq!(status, 200, "{body}");
}

/// The server ends a task whose launch-agent went silent (stopped with SIGSTOP past its lease);
/// when the agent comes back, its heartbeat gets the 401 of an ended task's token, and the agent
/// stops the task at once instead of letting the job run on unsupervised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_stops_a_task_the_server_ended_when_its_token_is_refused() {
    let dir = shared_tempdir();
    let server = Server::start_with(dir.path(), &["--task-lease-secs", "2"]);
    server.resource_class("e2e/linux").await;
    let token = server.token("e2e/linux").await;
    let agent = launch_agent(
        &server,
        &token,
        dir.path(),
        "agent",
        AgentOptions {
            extra_config: "  termination_grace_period: 1s\n".into(),
            ..AgentOptions::default()
        },
    );
    let repo = git_repo(
        dir.path(),
        &[(
            ".circleci/config.yml",
            &deploy_config(
                "e2e/linux",
                "echo \"marker=$BOSUN_TASK_ID\"; sleep 60; echo survived",
            ),
        )],
    );
    server.project("local/e2e/lapse", &repo).await;
    let pipeline = server.trigger("local/e2e/lapse", "main").await;
    let job = server.job_id(&pipeline, "deploy").await;
    let log = server
        .wait_for_log(&job, 0, "marker=", Duration::from_secs(30))
        .await;
    let task = log
        .lines()
        .find_map(|line| line.strip_prefix("marker="))
        .expect("marker")
        .trim()
        .to_owned();
    assert!(!bosun_tests::marked_processes(&task).is_empty());

    let agent_pid = nix::unistd::Pid::from_raw(agent.pid());
    nix::sys::signal::kill(agent_pid, nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP");
    let ended = server.wait_job(&job, Duration::from_secs(15)).await;
    nix::sys::signal::kill(agent_pid, nix::sys::signal::Signal::SIGCONT).expect("SIGCONT");
    assert_eq!(ended.status, "infrastructure_fail", "{ended:?}");

    let started = Instant::now();
    while !bosun_tests::marked_processes(&task).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the job still runs after the server ended its task:\n{}",
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        agent.log_text().contains("the server ended the task"),
        "{}",
        agent.log_text()
    );
}
