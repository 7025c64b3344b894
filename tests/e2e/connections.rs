//! Connection exhaustion (issue 8, finding 5): idle and slowloris connections from an
//! unauthenticated peer must neither exhaust the server's descriptors nor starve the admin CLI
//! and the runners, and the server closes them within its header timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bosun_api::{Auth, Client, Items, Method, ResourceClass, StatusCode};
use bosun_tests::{AgentOptions, Server, git_repo, launch_agent, shared_tempdir};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The server's descriptor limit: low enough that a few hundred sockets reach it.
const NOFILE: u64 = 256;
const IDLE: usize = 300;
const SLOWLORIS: usize = 100;
/// The header timeout the server is started with (seconds).
const HEADER_TIMEOUT: u64 = 5;
/// How long an attacking connection may stay open: the header timeout plus scheduling slack.
const HOLD_LIMIT: Duration = Duration::from_secs(HEADER_TIMEOUT + 4);

const CONFIG: &str = "version: 2.1\njobs:\n  build:\n    machine: true\n    resource_class: conn/flood\n    steps:\n      - run: echo served despite the flood\n";

/// Opens one attacking connection and holds it: silent, or (`trickle`) sending a request line and
/// then one header line a second, never finishing the head. Returns how long the server kept it
/// open, or `None` if it was still open after [`HOLD_LIMIT`].
async fn attack(addr: SocketAddr, trickle: bool, connected: Arc<AtomicUsize>) -> Option<Duration> {
    let connect = tokio::time::timeout(HOLD_LIMIT, TcpStream::connect(addr)).await;
    connected.fetch_add(1, Ordering::SeqCst);
    // The server's hold is counted from the handshake, not from the first SYN.
    let opened = Instant::now();
    let mut stream = match connect {
        Ok(Ok(stream)) => stream,
        // Refused outright: closed, as far as the attacker is concerned.
        Ok(Err(_)) => return Some(Duration::ZERO),
        Err(_) => return None,
    };
    if trickle
        && stream
            .write_all(b"GET /api/v3/runner/resource?namespace=conn HTTP/1.1\r\n")
            .await
            .is_err()
    {
        return Some(opened.elapsed());
    }
    let deadline = tokio::time::Instant::now() + HOLD_LIMIT;
    let mut buf = [0u8; 1024];
    let mut lines = 0u32;
    loop {
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                // EOF or a reset: the server closed it. An answer (a 408, a 503) is read on.
                Ok(0) | Err(_) => return Some(opened.elapsed()),
                Ok(_) => {}
            },
            _ = tokio::time::sleep(Duration::from_secs(1)), if trickle => {
                lines += 1;
                let line = format!("X-Slow-{lines}: still coming\r\n");
                if stream.write_all(line.as_bytes()).await.is_err() {
                    return Some(opened.elapsed());
                }
            }
            _ = tokio::time::sleep_until(deadline) => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slowloris_floods_do_not_starve_admin_requests_or_pipelines() {
    let dir = shared_tempdir();
    let server = Server::start_with_nofile(
        dir.path(),
        &["--header-timeout-secs", &HEADER_TIMEOUT.to_string()],
        NOFILE,
    );
    server.resource_class("conn/flood").await;
    let token = server.token("conn/flood").await;
    let repo = git_repo(dir.path(), &[(".circleci/config.yml", CONFIG)]);
    server.project("local/conn/flood", &repo).await;
    let addr: SocketAddr = server
        .url
        .trim_start_matches("http://")
        .parse()
        .expect("server address");

    // The flood: more connections than the server has descriptors, none of them authenticated.
    let connected = Arc::new(AtomicUsize::new(0));
    let mut attackers = tokio::task::JoinSet::new();
    for i in 0..IDLE + SLOWLORIS {
        attackers.spawn(attack(addr, i >= IDLE, connected.clone()));
    }
    // A server that stops accepting leaves connects hanging once its backlog is full; the
    // flood is in place either way, so wait at most a few seconds for it.
    let flood_started = Instant::now();
    while connected.load(Ordering::SeqCst) < IDLE + SLOWLORIS
        && flood_started.elapsed() < Duration::from_secs(3)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "{} of {} attacking connections connected in {:?}",
        connected.load(Ordering::SeqCst),
        IDLE + SLOWLORIS,
        flood_started.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Fresh clients, so no connection opened before the flood helps them.
    let anonymous = Client::new(&server.url).expect("client");
    let refused = tokio::time::timeout(
        Duration::from_secs(2),
        anonymous.send(
            Method::GET,
            "/api/v3/runner/resource?namespace=conn",
            &Auth::None,
            None,
            None,
        ),
    )
    .await
    .expect("an unauthenticated request during the flood got no answer within 2 s")
    .expect_err("an unauthenticated request during the flood was served");
    assert_eq!(
        refused.status(),
        Some(StatusCode::SERVICE_UNAVAILABLE),
        "an unauthenticated request while the anonymous share is full: {refused}"
    );
    assert!(refused.to_string().contains("busy"), "{refused}");

    let admin = Client::new(&server.url).expect("client");
    let asked = Instant::now();
    let classes: Items<ResourceClass> = tokio::time::timeout(
        Duration::from_secs(2),
        admin.get("/api/v3/runner/resource?namespace=conn", &server.admin),
    )
    .await
    .unwrap_or_else(|_| {
        panic!(
            "an admin request got no answer within 2 s during the flood; server log:\n{}",
            server.proc.log_text()
        )
    })
    .expect("admin request during the flood");
    assert_eq!(classes.items.len(), 1, "{:?}", classes.items);
    println!(
        "admin request answered in {:?} during the flood",
        asked.elapsed()
    );

    // A runner that starts now, while the flood still holds its connections, still gets work.
    let _agent = launch_agent(
        &server,
        &token,
        dir.path(),
        "agent",
        AgentOptions::default(),
    );
    let pipeline_id = server.trigger("local/conn/flood", "main").await;
    let pipeline = server
        .wait_pipeline(&pipeline_id, Duration::from_secs(30))
        .await;
    assert_eq!(
        pipeline.status,
        "success",
        "{pipeline:?}\nserver log:\n{}",
        server.proc.log_text()
    );

    // Every attacking connection was closed by the server within the header timeout (plus
    // slack), the slowloris ones although they kept sending.
    let mut lifetimes = Vec::new();
    while let Some(result) = attackers.join_next().await {
        lifetimes.push(result.expect("attacker task"));
    }
    let still_open = lifetimes.iter().filter(|l| l.is_none()).count();
    assert_eq!(
        still_open,
        0,
        "{still_open} of {} attacking connections were still open after {HOLD_LIMIT:?}",
        lifetimes.len()
    );
    let longest = lifetimes
        .iter()
        .flatten()
        .max()
        .copied()
        .unwrap_or_default();
    let at_once = lifetimes
        .iter()
        .flatten()
        .filter(|l| **l < Duration::from_millis(500))
        .count();
    println!(
        "{} attacking connections: {at_once} closed within 500 ms, the longest held {longest:?}",
        lifetimes.len()
    );
    let log = server.proc.log_text();
    assert!(
        !log.contains("Too many open files"),
        "the server ran out of descriptors:\n{log}"
    );
}

/// Sends a complete request head for an endpoint that reads its body before any token check,
/// then the body a byte a second. Returns how long the server kept the connection open, or
/// `None` if it was still open after `limit`.
async fn slow_body(addr: SocketAddr, limit: Duration) -> Option<Duration> {
    let opened = Instant::now();
    let mut stream = TcpStream::connect(addr).await.ok()?;
    let head = "POST /api/v2/pipeline/continue HTTP/1.1\r\nHost: bosun\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{";
    stream.write_all(head.as_bytes()).await.ok()?;
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = [0u8; 1024];
    loop {
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => return Some(opened.elapsed()),
                Ok(_) => {}
            },
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                if stream.write_all(b" ").await.is_err() {
                    return Some(opened.elapsed());
                }
            }
            _ = tokio::time::sleep_until(deadline) => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_sent_a_byte_a_second_without_a_token_do_not_hold_slots() {
    let dir = shared_tempdir();
    // Eight slots: six for unauthenticated connections, two on probation.
    let server = Server::start_with(
        dir.path(),
        &[
            "--max-connections",
            "8",
            "--header-timeout-secs",
            "2",
            "--idle-timeout-secs",
            "4",
        ],
    );
    let addr: SocketAddr = server
        .url
        .trim_start_matches("http://")
        .parse()
        .expect("server address");
    let limit = Duration::from_secs(4 + 4);
    let mut attackers = tokio::task::JoinSet::new();
    for _ in 0..8 {
        attackers.spawn(slow_body(addr, limit));
    }
    let mut lifetimes = Vec::new();
    while let Some(result) = attackers.join_next().await {
        lifetimes.push(result.expect("attacker task"));
    }
    assert!(
        lifetimes.iter().all(Option::is_some),
        "slow request bodies held connections for over {limit:?}: {lifetimes:?}"
    );
    println!("slow-body connections closed after {lifetimes:?}");

    // The slots are free again.
    let admin = Client::new(&server.url).expect("client");
    let classes: Items<ResourceClass> = tokio::time::timeout(
        Duration::from_secs(2),
        admin.get("/api/v3/runner/resource?namespace=conn", &server.admin),
    )
    .await
    .expect("an admin request after the slow bodies got no answer within 2 s")
    .expect("admin request after the slow bodies");
    assert!(classes.items.is_empty());
}

/// A setup config whose job waits for the test's go-ahead, then continues the pipeline: its key
/// is the request's only credential.
const CONTINUE: &str = r#"
version: 2.1
setup: true
jobs:
  setup:
    machine: true
    resource_class: conn/setup
    steps:
      - run:
          name: Continue
          command: |
            echo waiting
            while [ ! -e "$GO" ]; do sleep 0.05; done
            printf '{"continuation-key": "%s", "configuration": "version: 2.1\\njobs:\\n  after:\\n    machine: true\\n    resource_class: conn/setup\\n    steps:\\n      - run: echo continued\\nworkflows:\\n  next:\\n    jobs: [after]\\n"}' \
              "$CIRCLE_CONTINUATION_KEY" > body.json
            code=$(curl -s -o answer.json -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
              --data-binary @body.json "$BOSUN_API_URL/api/v2/pipeline/continue")
            echo "continue: $code $(cat answer.json)"
            test "$code" = 200
    environment:
      GO: GO_PATH
workflows:
  setup:
    jobs: [setup]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setup_job_continues_its_pipeline_while_anonymous_connections_fill_the_server() {
    bosun_tests::require_program("curl", "the setup job posts its continuation with curl");
    let dir = shared_tempdir();
    // Forty slots, thirty for connections that have not authenticated; idle ones are held long.
    let server = Server::start_with(
        dir.path(),
        &["--max-connections", "40", "--header-timeout-secs", "30"],
    );
    server.resource_class("conn/setup").await;
    let token = server.token("conn/setup").await;
    let go = dir.path().join("go");
    let config = CONTINUE.replace("GO_PATH", &go.display().to_string());
    let repo = git_repo(dir.path(), &[(".circleci/config.yml", &config)]);
    server.project("local/conn/setup", &repo).await;
    let _agent = launch_agent(
        &server,
        &token,
        dir.path(),
        "agent",
        AgentOptions::default(),
    );
    let pipeline_id = server.trigger("local/conn/setup", "main").await;
    let job_id = server.job_id(&pipeline_id, "setup").await;
    server
        .wait_for_log(&job_id, 0, "waiting", Duration::from_secs(30))
        .await;
    let addr: SocketAddr = server
        .url
        .trim_start_matches("http://")
        .parse()
        .expect("server address");
    // Fill the anonymous share with silent connections, as any local user can; the reserve
    // (ten slots, a few taken by the agent and the admin client) stays.
    let mut idle = Vec::new();
    for _ in 0..30 {
        idle.push(TcpStream::connect(addr).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Now the job's own connection arrives on probation: the continuation key must count as
    // its credential, or the server turns the pipeline's continuation away with a 503.
    std::fs::write(&go, "").expect("go");
    let job = server.wait_job(&job_id, Duration::from_secs(30)).await;
    let log = String::from_utf8_lossy(&server.step_log(&job_id, 0).await).into_owned();
    assert_eq!(job.status, "success", "{log}\n{}", server.proc.log_text());
    assert!(log.contains("continue: 200"), "{log}");
    let pipeline = server
        .wait_pipeline(&pipeline_id, Duration::from_secs(30))
        .await;
    assert_eq!(pipeline.status, "success", "{pipeline:?}");
    drop(idle);
}
