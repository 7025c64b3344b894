//! The launch-agent's Prometheus metrics, served only when `runner.metrics_addr` names an
//! address (opt-in: the agent runs as root, so it listens nowhere unless told to; bind it to
//! loopback or a management network). `GET /metrics` answers the OpenMetrics text of: tasks
//! claimed, tasks ended by outcome, claims that failed (the server unreachable or refusing),
//! log bytes relayed to the server, and the tasks running now. Any other request gets 404.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

struct Metrics {
    registry: Registry,
    claims: Counter,
    claim_failures: Counter,
    tasks: Family<OutcomeLabel, Counter>,
    log_bytes: Counter,
    running: Gauge,
    spool_bytes: Gauge,
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let claims = Counter::default();
        let claim_failures = Counter::default();
        let tasks = Family::<OutcomeLabel, Counter>::default();
        let log_bytes = Counter::default();
        let running = Gauge::default();
        let spool_bytes = Gauge::default();
        let mut registry = Registry::with_prefix("bosun_agent");
        registry.register("claims", "Tasks this agent claimed", claims.clone());
        registry.register(
            "claim_failures",
            "Claims that failed: the server unreachable, or answering an error",
            claim_failures.clone(),
        );
        registry.register("tasks", "Tasks ended, by outcome", tasks.clone());
        registry.register(
            "log_bytes",
            "Log bytes relayed to the server (before compression)",
            log_bytes.clone(),
        );
        registry.register("running_tasks", "Tasks running now", running.clone());
        registry.register(
            "spool_bytes",
            "Bytes of logs and step events held for the server (in memory and spooled to disk)",
            spool_bytes.clone(),
        );
        Metrics {
            registry,
            claims,
            claim_failures,
            tasks,
            log_bytes,
            running,
            spool_bytes,
        }
    })
}

pub fn claimed() {
    metrics().claims.inc();
}

pub fn claim_failed() {
    metrics().claim_failures.inc();
}

pub fn task_ended(outcome: &str) {
    metrics()
        .tasks
        .get_or_create(&OutcomeLabel {
            outcome: outcome.to_owned(),
        })
        .inc();
}

pub fn log_bytes(n: u64) {
    metrics().log_bytes.inc_by(n);
}

/// `delta` bytes more (or fewer) held for the server.
pub fn spool_bytes(delta: i64) {
    metrics().spool_bytes.inc_by(delta);
}

pub fn running(n: usize) {
    metrics().running.set(n as i64);
}

/// The exposition text.
fn encode() -> String {
    let mut text = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut text, &metrics().registry);
    text
}

/// Serves `GET /metrics` on `addr` until the process ends. Each connection gets one answer and
/// is closed; a request head longer than 8 KiB or slower than 5 s is dropped.
pub async fn serve(addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|err| anyhow::anyhow!("runner.metrics_addr {addr}: {err}"))?;
    tracing::info!("serving metrics at http://{addr}/metrics");
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            tokio::spawn(async move {
                let mut head = Vec::with_capacity(1024);
                let read = tokio::time::timeout(Duration::from_secs(5), async {
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
                        let n = stream.read(&mut buf).await?;
                        if n == 0 {
                            break;
                        }
                        head.extend_from_slice(&buf[..n]);
                    }
                    Ok::<_, std::io::Error>(())
                })
                .await;
                if !matches!(read, Ok(Ok(()))) {
                    return;
                }
                let answer = if head.starts_with(b"GET /metrics ") {
                    let body = encode();
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                } else {
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        .to_owned()
                };
                let _ = stream.write_all(answer.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    Ok(())
}
