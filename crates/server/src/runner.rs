//! The runner API the launch-agent talks to: claim (long-poll), task config, heartbeat, log
//! append by offset, step events and completion.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State as StateExt};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bosun_api::{
    ClaimRequest, ClaimResponse, CompleteRequest, HeartbeatResponse, LogAppendResponse, StepEvent,
    TaskSpec,
};
use serde::Deserialize;

use crate::State;
use crate::auth::{Runner, TaskAuth, generate_token, hash_token};
use crate::error::{AppError, AppResult};
use crate::util::now_ms;
use crate::{logs, scheduler};

/// Largest compressed log chunk accepted in one request.
const MAX_LOG_REQUEST: usize = 16 << 20;
/// Longest a claim may wait for work.
const MAX_CLAIM_WAIT: Duration = Duration::from_secs(60);

pub fn routes() -> Router<State> {
    Router::new()
        .route("/api/v3/runner/claim", post(claim))
        .route("/api/v2/task/config", get(task_config))
        .route("/api/v2/task/heartbeat", post(heartbeat))
        .route(
            "/api/v2/task/log",
            post(append_log).layer(DefaultBodyLimit::max(MAX_LOG_REQUEST)),
        )
        .route("/api/v2/task/step", post(step_event))
        .route("/api/v2/task/complete", post(complete))
}

#[derive(Deserialize)]
struct ClaimQuery {
    wait: Option<String>,
}

fn parse_wait(text: &str) -> Result<Duration, AppError> {
    let digits = text.strip_suffix('s').unwrap_or(text);
    let secs: u64 = digits.parse().map_err(|_| {
        AppError::bad_request(format!(
            "wait=`{text}` is not a number of seconds like `30s`"
        ))
    })?;
    Ok(Duration::from_secs(secs).min(MAX_CLAIM_WAIT))
}

fn check_field(name: &str, value: &str, max: usize) -> Result<(), AppError> {
    if value.len() > max || value.chars().any(char::is_control) {
        return Err(AppError::bad_request(format!(
            "`{name}` must be at most {max} bytes without control characters"
        )));
    }
    Ok(())
}

async fn claim(
    runner: Runner,
    StateExt(state): StateExt<State>,
    Query(query): Query<ClaimQuery>,
    Json(body): Json<ClaimRequest>,
) -> AppResult<Response> {
    check_field("name", &body.name, 128)?;
    check_field("hostname", &body.hostname, 255)?;
    check_field("ip", &body.ip, 64)?;
    check_field("version", &body.version, 64)?;
    if body.name.is_empty() {
        return Err(AppError::bad_request("`name` must not be empty"));
    }
    let now = now_ms();
    sqlx::query(
        "INSERT INTO runners (resource_class, name, hostname, ip, version, first_connected, last_connected)
         VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (resource_class, name) DO UPDATE SET
           hostname = excluded.hostname, ip = excluded.ip, version = excluded.version,
           last_connected = excluded.last_connected",
    )
    .bind(&runner.resource_class)
    .bind(&body.name)
    .bind(&body.hostname)
    .bind(&body.ip)
    .bind(&body.version)
    .bind(now)
    .bind(now)
    .execute(&state.db)
    .await?;

    let wait = match query.wait.as_deref() {
        Some(text) => parse_wait(text)?,
        None => Duration::ZERO,
    };
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        // Register for the wake-up before looking, so a task queued in between is not missed.
        let queued = state.queued.notified();
        if let Some(response) = try_claim(&state, &runner.resource_class, &body.name).await? {
            return Ok(Json(response).into_response());
        }
        if tokio::time::timeout_at(deadline, queued).await.is_err() {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
    }
}

async fn try_claim(
    state: &State,
    resource_class: &str,
    runner_name: &str,
) -> AppResult<Option<ClaimResponse>> {
    let token = generate_token("bosun_task_")?;
    let now = now_ms();
    let lease = now + state.task_lease.as_millis() as i64;
    // One statement, so two runners can never claim the same task; the org-wide concurrency
    // limit counts running tasks, not runners.
    let claimed: Option<(String, String)> = sqlx::query_as(
        "UPDATE tasks SET status = 'running', token_hash = ?, runner_name = ?, lease_expires = ?, claimed_at = ?
         WHERE id = (SELECT id FROM tasks WHERE status = 'queued' AND resource_class = ?
                     ORDER BY created_at, id LIMIT 1)
           AND status = 'queued'
           AND (SELECT COUNT(*) FROM tasks WHERE status = 'running') < ?
         RETURNING id, job_id",
    )
    .bind(hash_token(&token))
    .bind(runner_name)
    .bind(lease)
    .bind(now)
    .bind(resource_class)
    .bind(state.max_running_tasks as i64)
    .fetch_optional(&state.db)
    .await?;
    let Some((task_id, job_id)) = claimed else {
        return Ok(None);
    };
    scheduler::job_started(state, &job_id).await?;
    sqlx::query("UPDATE runners SET last_used = ? WHERE resource_class = ? AND name = ?")
        .bind(now)
        .bind(resource_class)
        .bind(runner_name)
        .execute(&state.db)
        .await?;
    tracing::info!(task = %task_id, job = %job_id, runner = runner_name, "task claimed");
    Ok(Some(ClaimResponse {
        task_token: token,
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        resource_class: resource_class.to_owned(),
        allocation: task_id,
        warning: None,
    }))
}

/// A task token authorizes its task only while the task runs. The token of a task that ended is
/// answered as an unknown one: the same 401, naming neither the task nor its status, so whoever
/// holds an old token learns nothing from it.
fn require_running(task: &TaskAuth) -> Result<(), AppError> {
    if task.status != "running" {
        return Err(ended_task());
    }
    Ok(())
}

fn ended_task() -> AppError {
    AppError::unauthorized("invalid bearer token")
}

/// The task's spec. A task of a setup workflow's job also gets a fresh continuation key here,
/// the only place the key exists outside the job: the database keeps its hash alone.
async fn task_config(
    task: TaskAuth,
    StateExt(state): StateExt<State>,
) -> AppResult<Json<TaskSpec>> {
    require_running(&task)?;
    let (spec, pipeline_id, continuation): (String, String, bool) =
        sqlx::query_as("SELECT spec, pipeline_id, continuation FROM jobs WHERE id = ?")
            .bind(&task.job_id)
            .fetch_one(&state.db)
            .await?;
    let mut spec: TaskSpec = serde_json::from_str(&spec).map_err(|err| {
        anyhow::anyhow!(
            "stored task spec of job {} is unreadable: {err}",
            task.job_id
        )
    })?;
    if continuation {
        let key = crate::continuation::issue_key(&state, &pipeline_id, &task.task_id).await?;
        spec.environment
            .insert("CIRCLE_CONTINUATION_KEY".to_owned(), key);
    }
    spec.task_id = task.task_id;
    Ok(Json(spec))
}

#[derive(Deserialize)]
struct HeartbeatQuery {
    wait: Option<String>,
}

/// Renews the lease. With `?wait=Ns` the answer is held up to N seconds (at most a third of the
/// lease) or until someone cancels the job, so a cancel reaches the runner at once while the
/// heartbeat rate stays low.
async fn heartbeat(
    task: TaskAuth,
    StateExt(state): StateExt<State>,
    Query(query): Query<HeartbeatQuery>,
) -> AppResult<Json<HeartbeatResponse>> {
    require_running(&task)?;
    let wait = match query.wait.as_deref() {
        Some(text) => parse_wait(text)?.min(state.task_lease / 3),
        None => Duration::ZERO,
    };
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let canceled = state.cancels.notified();
        let answer = renew_lease(&state, &task).await?;
        if answer.cancel || tokio::time::timeout_at(deadline, canceled).await.is_err() {
            return Ok(Json(renew_lease(&state, &task).await?));
        }
    }
}

async fn renew_lease(state: &State, task: &TaskAuth) -> AppResult<HeartbeatResponse> {
    let lease = now_ms() + state.task_lease.as_millis() as i64;
    let cancel: Option<i64> = sqlx::query_scalar(
        "UPDATE tasks SET lease_expires = ? WHERE id = ? AND status = 'running' RETURNING cancel_requested",
    )
    .bind(lease)
    .bind(&task.task_id)
    .fetch_optional(&state.db)
    .await?;
    let Some(cancel) = cancel else {
        // The task ended since the request was authenticated.
        return Err(ended_task());
    };
    Ok(HeartbeatResponse {
        cancel: cancel != 0,
        lease_secs: state.task_lease.as_secs(),
    })
}

#[derive(Deserialize)]
struct LogQuery {
    step: u32,
    offset: u64,
}

async fn append_log(
    task: TaskAuth,
    StateExt(state): StateExt<State>,
    Query(query): Query<LogQuery>,
    body: Bytes,
) -> AppResult<Json<LogAppendResponse>> {
    require_running(&task)?;
    let steps = step_count(&state, &task.job_id).await?;
    if query.step as usize >= steps {
        return Err(AppError::bad_request(format!(
            "step {} does not exist: the job has {steps} step(s)",
            query.step
        )));
    }
    let upload = logs::decompress(body)?;
    let appended = state
        .logs
        .append(&task.task_id, query.step, query.offset, upload)
        .await?;
    Ok(Json(LogAppendResponse {
        length: appended.length,
        truncated: appended.truncated,
    }))
}

/// How many steps the job has. Called for every log chunk, so SQLite reads the count out of the
/// stored spec instead of the server deserializing the whole spec each time.
async fn step_count(state: &State, job_id: &str) -> AppResult<usize> {
    let count: Option<i64> =
        sqlx::query_scalar("SELECT json_array_length(spec, '$.steps') FROM jobs WHERE id = ?")
            .bind(job_id)
            .fetch_one(&state.db)
            .await?;
    Ok(count.unwrap_or(0).max(0) as usize)
}

const STEP_STATUSES: &[&str] = &["running", "success", "failed", "canceled", "skipped"];

async fn step_event(
    task: TaskAuth,
    StateExt(state): StateExt<State>,
    Json(event): Json<StepEvent>,
) -> AppResult<Json<serde_json::Value>> {
    require_running(&task)?;
    if !STEP_STATUSES.contains(&event.status.as_str()) {
        return Err(AppError::bad_request(format!(
            "step status `{}` is not one of {STEP_STATUSES:?}",
            event.status
        )));
    }
    check_field("name", &event.name, 1024)?;
    let steps = step_count(&state, &task.job_id).await?;
    if event.step as usize >= steps {
        return Err(AppError::bad_request(format!(
            "step {} does not exist: the job has {steps} step(s)",
            event.step
        )));
    }
    sqlx::query(
        "INSERT INTO steps (task_id, idx, name, status, exit_code, duration_ms) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (task_id, idx) DO UPDATE SET
           name = excluded.name, status = excluded.status, exit_code = excluded.exit_code,
           duration_ms = excluded.duration_ms",
    )
    .bind(&task.task_id)
    .bind(event.step as i64)
    .bind(&event.name)
    .bind(&event.status)
    .bind(event.exit_code)
    .bind(event.duration_ms.map(|d| d as i64))
    .execute(&state.db)
    .await?;
    Ok(Json(serde_json::json!({ "message": "ok" })))
}

const TASK_RESULTS: &[&str] = &["success", "failed", "canceled", "infrastructure_fail"];

async fn complete(
    task: TaskAuth,
    StateExt(state): StateExt<State>,
    Json(body): Json<CompleteRequest>,
) -> AppResult<Json<serde_json::Value>> {
    if !TASK_RESULTS.contains(&body.status.as_str()) {
        return Err(AppError::bad_request(format!(
            "task status `{}` is not one of {TASK_RESULTS:?}",
            body.status
        )));
    }
    if task.status == body.status {
        // A retried completion: already recorded.
        return Ok(Json(serde_json::json!({ "message": "ok" })));
    }
    require_running(&task)?;
    let message = body
        .message
        .map(|m| m.chars().take(4096).collect::<String>());
    scheduler::finish_task(&state, &task.task_id, &body.status, message.as_deref()).await?;
    Ok(Json(serde_json::json!({ "message": "ok" })))
}
