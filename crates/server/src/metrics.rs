//! `GET /metrics`: Prometheus' text exposition (OpenMetrics, through `prometheus-client`) of
//! what an operator watches: queued tasks per resource class, running tasks, runner instances
//! by state (as `GET /api/v3/runner` derives it), claims and the time tasks waited in the queue
//! before a runner claimed them. Gauges are read from the store at scrape time; the counter and
//! histogram are kept as claims happen. Any valid user token may scrape (Prometheus'
//! `basic_auth: {username: TOKEN}` sends it the way CircleCI's clients do).

use std::sync::Mutex;

use axum::Router;
use axum::extract::State as StateExt;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::State;
use crate::auth::Caller;
use crate::error::AppResult;
use crate::store::TaskStatus;
use crate::util::now_ms;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabel {
    resource_class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

/// The server's metrics.
pub struct Metrics {
    registry: Mutex<Registry>,
    claims: Counter,
    claim_wait: Histogram,
    queued: Family<ClassLabel, Gauge>,
    running: Gauge,
    instances: Family<StateLabel, Gauge>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let claims = Counter::default();
        // 10 ms to about 45 min.
        let claim_wait = Histogram::new(exponential_buckets(0.01, 3.0, 13));
        let queued = Family::<ClassLabel, Gauge>::default();
        let running = Gauge::default();
        let instances = Family::<StateLabel, Gauge>::default();
        let mut registry = Registry::with_prefix("bosun");
        registry.register("claims", "Tasks claimed by runners", claims.clone());
        registry.register(
            "claim_wait_seconds",
            "Time a task waited in the queue before a runner claimed it",
            claim_wait.clone(),
        );
        registry.register(
            "queued_tasks",
            "Tasks waiting for a runner, by resource class",
            queued.clone(),
        );
        registry.register("running_tasks", "Tasks running on runners", running.clone());
        registry.register(
            "runner_instances",
            "Runner instances heard from in the last 3 days, by state",
            instances.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            claims,
            claim_wait,
            queued,
            running,
            instances,
        }
    }

    /// A runner claimed a task queued at `queued_at` (ms), now.
    pub fn claimed(&self, queued_at: i64, now: i64) {
        self.claims.inc();
        self.claim_wait
            .observe((now - queued_at).max(0) as f64 / 1000.0);
    }
}

pub fn routes() -> Router<State> {
    Router::new().route("/metrics", get(metrics))
}

async fn metrics(_: Caller, StateExt(state): StateExt<State>) -> AppResult<impl IntoResponse> {
    let metrics = &state.metrics;
    let queued = state.store.tasks_by_class(TaskStatus::Queued).await?;
    let running: i64 = state
        .store
        .tasks_by_class(TaskStatus::Running)
        .await?
        .iter()
        .map(|(_, n)| n)
        .sum();
    let now = now_ms();
    let mut by_state: Vec<(String, i64)> = ["idle", "busy", "draining", "offline"]
        .iter()
        .map(|name| ((*name).to_owned(), 0))
        .collect();
    for row in state
        .store
        .runners_since(now - crate::admin::INVENTORY_WINDOW_MS)
        .await?
    {
        let shown = crate::admin::instance_state(&row, now, state.runner_offline_after);
        // `busy N/M` counts as `busy`: a label per N/M would make series without bound.
        let name = shown.split(' ').next().unwrap_or("idle");
        if let Some((_, count)) = by_state.iter_mut().find(|(state, _)| state == name) {
            *count += 1;
        }
    }
    let mut text = String::new();
    {
        // One scrape at a time sets the gauges and encodes them, so two never mix.
        let registry = metrics
            .registry
            .lock()
            .map_err(|_| anyhow::anyhow!("the metrics registry's lock is poisoned"))?;
        // A class whose queue emptied reads no series rather than its last count.
        metrics.queued.clear();
        for (class, count) in queued {
            metrics
                .queued
                .get_or_create(&ClassLabel {
                    resource_class: class,
                })
                .set(count);
        }
        metrics.running.set(running);
        for (name, count) in by_state {
            metrics
                .instances
                .get_or_create(&StateLabel { state: name })
                .set(count);
        }
        prometheus_client::encoding::text::encode(&mut text, &registry)
            .map_err(|err| anyhow::anyhow!("encoding the metrics: {err}"))?;
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    ))
}
