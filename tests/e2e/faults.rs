//! Network faults between a launch-agent and its server (issue 14), through a real TCP fault
//! proxy in the test: every connection reset and new ones refused for a while (a cut), then
//! bytes held back (a stall), then slowed. The job prints a counter every 100 ms all along: it
//! ends `success` and the stored log is the exact sequence, nothing lost or repeated.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use bosun_tests::{AgentOptions, git_repo, launch_agent_with_env, shared_tempdir};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const NORMAL: u8 = 0;
/// Reset every connection; refuse new ones (accept, then reset).
const CUT: u8 = 1;
/// Hold every byte back (connections stay open).
const STALL: u8 = 2;
/// Forward in small pieces with a pause between them.
const SLOW: u8 = 3;

/// Forwards one direction until either side closes, obeying `mode`.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mode: Arc<AtomicU8>,
) {
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            // A cut ends the connection even while nobody sends.
            _ = wait_for(&mode, CUT) => return,
        };
        let mut sent = 0;
        while sent < n {
            match mode.load(Ordering::SeqCst) {
                CUT => return,
                STALL => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                SLOW => {
                    let piece = (n - sent).min(512);
                    if to.write_all(&buf[sent..sent + piece]).await.is_err() {
                        return;
                    }
                    sent += piece;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                _ => {
                    if to.write_all(&buf[sent..n]).await.is_err() {
                        return;
                    }
                    sent = n;
                }
            }
        }
    }
}

async fn wait_for(mode: &AtomicU8, wanted: u8) {
    while mode.load(Ordering::SeqCst) != wanted {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A proxy on a free loopback port to `target`; answers its address.
async fn fault_proxy(target: String, mode: Arc<AtomicU8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                continue;
            };
            if mode.load(Ordering::SeqCst) == CUT {
                // A reset, as a dead path or a rebooting middlebox gives.
                let _ = client.set_zero_linger();
                drop(client);
                continue;
            }
            let Ok(server) = TcpStream::connect(&target).await else {
                continue;
            };
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            let mode = mode.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = pump(client_read, server_write, mode.clone()) => {}
                    _ = pump(server_read, client_write, mode.clone()) => {}
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_survives_cuts_stalls_and_slowness_with_its_log_exact() {
    let dir = shared_tempdir();
    let server = bosun_tests::Server::start(dir.path());
    server.resource_class("e2e/faults").await;
    let token = server.token("e2e/faults").await;
    let mode = Arc::new(AtomicU8::new(NORMAL));
    let target = server.url.trim_start_matches("http://").to_owned();
    let proxy = fault_proxy(target, mode.clone()).await;
    // The agent reaches the server only through the proxy (the variable wins over the file).
    let proxy_url = format!("http://{proxy}");
    let agent = launch_agent_with_env(
        &server,
        &token,
        dir.path(),
        "agent",
        AgentOptions::default(),
        &[],
        &[("LAUNCH_AGENT_API_URL", &proxy_url)],
    );
    let lines = 80;
    let config = format!(
        "version: 2.1\njobs:\n  build:\n    machine: true\n    resource_class: e2e/faults\n    steps:\n      - run: for i in $(seq 1 {lines}); do echo \"line $i\"; sleep 0.1; done\nworkflows:\n  main:\n    jobs: [build]\n"
    );
    let repo = git_repo(dir.path(), &[(".circleci/config.yml", &config)]);
    server.project("local/e2e/faults", &repo).await;
    let id = server.trigger("local/e2e/faults", "main").await;
    let job = server.job_id(&id, "build").await;
    server
        .wait_for_log(&job, 0, "line 3\n", Duration::from_secs(30))
        .await;
    for (fault, how_long) in [(CUT, 2), (NORMAL, 1), (STALL, 2), (SLOW, 2), (NORMAL, 0)] {
        mode.store(fault, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(how_long)).await;
    }
    let detail = server.wait_job(&job, Duration::from_secs(120)).await;
    assert_eq!(detail.status, "success", "{}", agent.log_text());
    let log = String::from_utf8_lossy(&server.step_log(&job, 0).await).into_owned();
    let expected: String = (1..=lines).map(|i| format!("line {i}\n")).collect();
    assert_eq!(
        log, expected,
        "the stored log is not the job's output exactly"
    );
    assert!(
        agent.log_text().contains("failed, retrying"),
        "the faults never reached the agent:\n{}",
        agent.log_text()
    );
}
