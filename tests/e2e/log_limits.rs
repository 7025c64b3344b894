//! Logs as an attacker writes them: a step printing hundreds of megabytes, a job spreading its
//! output over many steps, a server whose disk is (nearly) full, log reads past the end, and
//! uploads that rewrite stored bytes.

use std::path::Path;
use std::time::{Duration, Instant};

use bosun_api::{ApiError, Auth, ClaimRequest, ClaimResponse, Method, StatusCode};
use bosun_tests::{AgentOptions, Proc, Server, git_repo, launch_agent, shared_tempdir};

const CLASS: &str = "logs/limits";
const SLUG: &str = "local/logs/limits";
const STEP_LINE: &str = "\n[bosun] this step's log was truncated at 1 MiB (bosun-server --max-step-log); the step was stopped\n";
const JOB_LINE: &str = "\n[bosun] this job's log was truncated at 2 MiB (bosun-server --max-job-log); the job was stopped\n";

fn config(steps: &[&str]) -> String {
    let mut text = format!(
        "version: 2.1\njobs:\n  build:\n    machine: true\n    resource_class: {CLASS}\n    steps:\n"
    );
    for step in steps {
        text.push_str(&format!("      - run: {step}\n"));
    }
    text
}

/// A server started with `flags`, a resource class with its token, and a project holding `steps`.
async fn setup(dir: &Path, flags: &[&str], steps: &[&str]) -> (Server, String) {
    let server = Server::start_with(dir, flags);
    server.resource_class(CLASS).await;
    let token = server.token(CLASS).await;
    let repo = git_repo(dir, &[(".circleci/config.yml", &config(steps))]);
    server.project(SLUG, &repo).await;
    (server, token)
}

fn agent(server: &Server, token: &str, dir: &Path) -> Proc {
    launch_agent(server, token, dir, "agent", AgentOptions::default())
}

/// Bytes of every file under `dir`.
fn disk_usage(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(metadata) = entry.metadata() else {
            continue;
        };
        if metadata.is_dir() {
            total += disk_usage(&entry.path());
        } else {
            total += metadata.len();
        }
    }
    total
}

/// Claims the queued task of `CLASS` as a runner would, without a launch-agent.
async fn claim(server: &Server, token: &str) -> ClaimResponse {
    let body = ClaimRequest {
        name: "probe".into(),
        hostname: "h".into(),
        ip: "127.0.0.1".into(),
        version: "0".into(),
        ..ClaimRequest::default()
    };
    let answer = server
        .client
        .send_json(
            Method::POST,
            "/api/v3/runner/claim?wait=10s",
            &Auth::Bearer(token.into()),
            Some(&body),
            Some(Duration::from_secs(20)),
        )
        .await
        .expect("claim");
    assert_eq!(answer.status, StatusCode::OK, "no task to claim");
    answer.json().expect("claim answer")
}

/// Appends `bytes` at `offset` of step 0, as the launch-agent does (zstd body).
async fn append(
    server: &Server,
    claim: &ClaimResponse,
    offset: u64,
    bytes: &[u8],
) -> Result<bosun_api::Response, ApiError> {
    let body = zstd::bulk::compress(bytes, 1).expect("zstd");
    server
        .client
        .send(
            Method::POST,
            &format!("/api/v2/task/log?step=0&offset={offset}"),
            &Auth::Bearer(claim.task_token.clone()),
            Some(("application/zstd", body.into())),
            None,
        )
        .await
}

/// `GET path` with the admin token over a plain socket: the status and the body exactly as the
/// server sent them (the client would parse a JSON error for us and hide what the body was).
fn get_raw(server: &Server, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = server.url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let token = match &server.admin {
        Auth::CircleToken(token) => token.clone(),
        _ => unreachable!("the harness's admin token is a Circle-Token"),
    };
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nCircle-Token: {token}\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("answer");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    (status, body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_printing_400_megabytes_is_stopped_at_the_step_limit() {
    let dir = shared_tempdir();
    let (server, token) = setup(
        dir.path(),
        &["--max-step-log", "1MiB", "--max-job-log", "3MiB"],
        &[
            r"head -c 400000000 /dev/zero | tr '\0' x",
            "echo never printed",
        ],
    )
    .await;
    let _agent = agent(&server, &token, dir.path());
    let started = Instant::now();
    let pipeline = server.trigger(SLUG, "main").await;
    let job_id = server.job_id(&pipeline, "build").await;
    let job = server.wait_job(&job_id, Duration::from_secs(30)).await;
    let took = started.elapsed();

    assert_eq!(job.status, "failed", "{job:?}");
    let message = job.message.clone().unwrap_or_default();
    assert!(
        message.contains("1 MiB") && message.contains("--max-step-log"),
        "the job's message must name the limit: {message:?}"
    );
    let log = server.step_log(&job_id, 0).await;
    assert!(
        log.len() <= (1 << 20) + STEP_LINE.len(),
        "step log is {} bytes, more than the 1 MiB limit and its last line",
        log.len()
    );
    assert!(
        log.ends_with(STEP_LINE.as_bytes()),
        "the log must end saying it was truncated: {:?}",
        String::from_utf8_lossy(&log[log.len().saturating_sub(200)..])
    );
    assert_eq!(
        log.len(),
        (1 << 20) + STEP_LINE.len(),
        "the log keeps 1 MiB"
    );
    assert!(log[..1 << 20].iter().all(|b| *b == b'x'));
    assert_eq!(job.steps[0].status, "failed", "{:?}", job.steps);
    assert!(
        server.step_log(&job_id, 1).await.is_empty(),
        "no later step runs"
    );
    let usage = disk_usage(&server.data_dir);
    assert!(
        usage < 8 << 20,
        "the server's data directory holds {usage} bytes after a 400 MB step"
    );
    eprintln!("stopped after {took:?}; data directory {usage} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_spreading_its_output_over_steps_is_stopped_at_the_job_limit() {
    let dir = shared_tempdir();
    let print = r"head -c 600000 /dev/zero | tr '\0' y";
    let (server, token) = setup(
        dir.path(),
        &["--max-step-log", "1MiB", "--max-job-log", "2MiB"],
        &[print, print, print, print, print],
    )
    .await;
    let _agent = agent(&server, &token, dir.path());
    let pipeline = server.trigger(SLUG, "main").await;
    let job_id = server.job_id(&pipeline, "build").await;
    let job = server.wait_job(&job_id, Duration::from_secs(30)).await;

    assert_eq!(job.status, "failed", "{job:?}");
    let message = job.message.clone().unwrap_or_default();
    assert!(
        message.contains("2 MiB") && message.contains("--max-job-log"),
        "the job's message must name the limit: {message:?}"
    );
    let mut total = 0;
    for step in 0..3 {
        let log = server.step_log(&job_id, step).await;
        assert_eq!(log.len(), 600_000, "step {step} is under both limits");
        total += log.len();
    }
    // The fourth step crosses 2 MiB: it keeps what fits and says why the rest is gone.
    let fourth = server.step_log(&job_id, 3).await;
    assert_eq!(fourth.len(), (2 << 20) - total + JOB_LINE.len());
    assert!(
        fourth.ends_with(JOB_LINE.as_bytes()),
        "{:?}",
        String::from_utf8_lossy(&fourth[fourth.len().saturating_sub(200)..])
    );
    assert_eq!(job.steps[3].status, "failed", "{:?}", job.steps);
    // Nothing after it is stored, whether the fifth step started or not.
    assert!(server.step_log(&job_id, 4).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_below_its_free_space_floor_refuses_log_bytes_with_507() {
    let dir = shared_tempdir();
    let (server, token) = setup(
        dir.path(),
        &["--min-free-space", "1000TiB"],
        &["echo hello from a full disk"],
    )
    .await;

    // As a runner sees it: 507 with a message, and no server path in it.
    let first = server.trigger(SLUG, "main").await;
    let claimed = claim(&server, &token).await;
    let err = append(&server, &claimed, 0, b"hello")
        .await
        .expect_err("log bytes below the floor");
    let (status, message) = match &err {
        ApiError::Status {
            status, message, ..
        } => (*status, message.clone()),
        other => panic!("{other}"),
    };
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{err}");
    assert!(
        message.contains("--min-free-space") && message.contains("1000 TiB"),
        "{message:?}"
    );
    let data_dir = server.data_dir.to_string_lossy().into_owned();
    assert!(!message.contains(&data_dir) && !message.contains("/blobs"));

    // As a job sees it: the launch-agent ends the job at once with the server's message.
    let _agent = agent(&server, &token, dir.path());
    let second = server.trigger(SLUG, "main").await;
    let job_id = server.job_id(&second, "build").await;
    let started = Instant::now();
    let job = server.wait_job(&job_id, Duration::from_secs(30)).await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the job waited out retries: {:?}",
        started.elapsed()
    );
    assert_eq!(job.status, "infrastructure_fail", "{job:?}");
    let job_message = job.message.clone().unwrap_or_default();
    assert!(
        job_message.contains("--min-free-space"),
        "the job's message must say why: {job_message:?}"
    );
    // The server still answers reads.
    assert!(server.step_log(&job_id, 0).await.is_empty());
    let _ = server.pipeline(&first).await;
    assert_eq!(server.pipeline(&second).await.status, "failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_read_past_the_end_is_a_416_without_internal_paths() {
    let dir = shared_tempdir();
    let (server, token) = setup(dir.path(), &[], &["echo hi"]).await;
    let pipeline = server.trigger(SLUG, "main").await;
    let job_id = server.job_id(&pipeline, "build").await;
    let claimed = claim(&server, &token).await;
    append(&server, &claimed, 0, b"hello")
        .await
        .expect("append");

    let data_dir = server.data_dir.to_string_lossy().into_owned();
    for offset in [u64::MAX, 6, 1 << 40] {
        let path = format!("/api/v2/job/{job_id}/step/0/log?offset={offset}");
        let (status, body) = get_raw(&server, &path);
        assert_eq!(status, 416, "{body}");
        let body: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body:?}"));
        let message = body["message"].as_str().expect("a message");
        assert_eq!(
            message,
            format!("offset {offset} is past the end of the log (5 bytes)")
        );
        assert!(
            !message.contains(&data_dir) && !message.contains("/blobs"),
            "{message}"
        );
    }
    // At the end: an empty page, which is how followers know they caught up.
    let (status, body) = get_raw(
        &server,
        &format!("/api/v2/job/{job_id}/step/0/log?offset=5"),
    );
    assert_eq!((status, body.as_str()), (200, ""));
    assert_eq!(server.step_log(&job_id, 0).await, b"hello");
    // A step with no log yet reads as empty at 0, and past its end after that.
    let (status, _) = get_raw(
        &server,
        &format!("/api/v2/job/{job_id}/step/1/log?offset=0"),
    );
    assert_eq!(status, 200);
    let (status, body) = get_raw(
        &server,
        &format!("/api/v2/job/{job_id}/step/1/log?offset=1"),
    );
    assert_eq!(status, 416, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_overlapping_stored_bytes_with_other_content_is_a_409() {
    let dir = shared_tempdir();
    let (server, token) = setup(dir.path(), &[], &["echo hi"]).await;
    let pipeline = server.trigger(SLUG, "main").await;
    let job_id = server.job_id(&pipeline, "build").await;
    let claimed = claim(&server, &token).await;

    let length = |response: bosun_api::Response| -> u64 {
        response
            .json::<bosun_api::LogAppendResponse>()
            .expect("append answer")
            .length
    };
    assert_eq!(
        length(append(&server, &claimed, 0, b"hello").await.unwrap()),
        5
    );
    // Other bytes over the stored ones: refused, and nothing changes.
    let err = append(&server, &claimed, 0, b"hellX")
        .await
        .expect_err("a rewrite of stored bytes");
    assert_eq!(err.status(), Some(StatusCode::CONFLICT), "{err}");
    assert!(err.to_string().contains("byte 4"), "{err}");
    let err = append(&server, &claimed, 3, b"LO world")
        .await
        .expect_err("a rewrite of stored bytes");
    assert_eq!(err.status(), Some(StatusCode::CONFLICT), "{err}");
    assert_eq!(server.step_log(&job_id, 0).await, b"hello");
    // The same bytes again (a retry) are acknowledged; a longer retry adds only what is new.
    assert_eq!(
        length(append(&server, &claimed, 0, b"hello").await.unwrap()),
        5
    );
    assert_eq!(
        length(append(&server, &claimed, 0, b"hello world").await.unwrap()),
        11
    );
    assert_eq!(server.step_log(&job_id, 0).await, b"hello world");
}
