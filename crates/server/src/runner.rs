//! The runner API the launch-agent talks to: claim (long-poll), task config, heartbeat, log
//! append by offset, step events and completion.

use std::sync::Arc;
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
use tokio::sync::Notify;

use crate::State;
use crate::auth::{Runner, TaskAuth, generate_token, hash_token};
use crate::error::{AppError, AppResult};
use crate::store::{Claim, ClaimedTask, Lease, RunnerSeen, StepStatus, StepUpdate, TaskStatus};
use crate::util::now_ms;
use crate::{logs, scheduler};

/// Largest compressed log chunk accepted in one request.
const MAX_LOG_REQUEST: usize = 16 << 20;
/// Longest a claim may wait for work.
const MAX_CLAIM_WAIT: Duration = Duration::from_secs(60);

pub fn routes() -> Router<State> {
    Router::new()
        .route("/api/v3/runner/claim", post(claim))
        .route("/api/v3/runner/heartbeat", post(runner_heartbeat))
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

/// Most tasks one runner says it runs at once.
const MAX_RUNNER_CAPACITY: u32 = 1024;

/// Checks what a runner says of itself (a claim's or a runner heartbeat's body) and records it
/// in the inventory.
async fn runner_seen(state: &State, runner: &Runner, body: &ClaimRequest) -> AppResult<()> {
    check_field("name", &body.name, 128)?;
    check_field("hostname", &body.hostname, 255)?;
    check_field("ip", &body.ip, 64)?;
    check_field("version", &body.version, 64)?;
    if body.name.is_empty() {
        return Err(AppError::bad_request("`name` must not be empty"));
    }
    if body.capacity == 0 || body.capacity > MAX_RUNNER_CAPACITY || body.running > body.capacity {
        return Err(AppError::bad_request(format!(
            "`capacity` must be 1 to {MAX_RUNNER_CAPACITY} and `running` at most `capacity`"
        )));
    }
    state
        .store
        .runner_seen(&RunnerSeen {
            resource_class: &runner.resource_class,
            name: &body.name,
            hostname: &body.hostname,
            ip: &body.ip,
            version: &body.version,
            running: i64::from(body.running),
            capacity: i64::from(body.capacity),
            draining: body.draining,
            now: now_ms(),
        })
        .await?;
    Ok(())
}

/// bosun's `POST /api/v3/runner/heartbeat` (runner token): what an agent that is not claiming
/// (busy to its capacity, or draining) tells the inventory; 204.
async fn runner_heartbeat(
    runner: Runner,
    StateExt(state): StateExt<State>,
    Json(body): Json<ClaimRequest>,
) -> AppResult<StatusCode> {
    runner_seen(&state, &runner, &body).await?;
    Ok(StatusCode::NO_CONTENT)
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
    runner_seen(&state, &runner, &body).await?;

    let wait = match query.wait.as_deref() {
        Some(text) => parse_wait(text)?,
        None => Duration::ZERO,
    };
    // An agent that updates itself and has not heard of the release promoted for it now
    // looks for it before it waits.
    if let Some(seen) = &body.release_seen {
        check_field("release_seen", seen, 64)?;
        let current = crate::releases::promotion_for(&state, &runner.resource_class)
            .await?
            .map(|promoted| promoted.version)
            .unwrap_or_default();
        if *seen != current {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
    }
    let deadline = tokio::time::Instant::now() + wait;
    let wakeup = state.queued.notifier(&runner.resource_class);
    // A release promoted meanwhile ends the wait at once (204), so idle agents look for their
    // new version now instead of at the end of their long-poll.
    let promoted = state.promoted.notified();
    tokio::pin!(promoted);
    loop {
        // Register for the wake-up before looking, so a task queued in between is not missed.
        let queued = wakeup.notified();
        tokio::pin!(queued);
        queued.as_mut().enable();
        // A server shutting down hands out no task and holds no claim.
        if state.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        let claimed = try_claim(&state, &runner.resource_class, &body.name).await;
        if !matches!(claimed, Ok(None)) {
            // More tasks may be queued: the next waiting claim of the class looks too (this
            // one took a task, or failed and did not look).
            wakeup.notify_one();
        }
        if let Some(response) = claimed? {
            return Ok(Json(response).into_response());
        }
        tokio::select! {
            woken = tokio::time::timeout_at(deadline, queued) => {
                if woken.is_err() {
                    return Ok(StatusCode::NO_CONTENT.into_response());
                }
            }
            _ = &mut promoted => return Ok(StatusCode::NO_CONTENT.into_response()),
        }
    }
}

/// Long-polling claims wait here, by resource class. A queued task wakes one waiting claim of
/// each class, not all of them (with thousands of runners waiting, waking all made every task
/// cost thousands of claim attempts); a claim that takes a task wakes the next one of its class,
/// so tasks queued together are all claimed, one claim after another.
#[derive(Default)]
pub struct ClaimWakeups {
    classes: std::sync::Mutex<std::collections::HashMap<String, Arc<Notify>>>,
}

impl ClaimWakeups {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Arc<Notify>>> {
        self.classes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What the claims of `class` wait on.
    pub fn notifier(&self, class: &str) -> Arc<Notify> {
        self.lock().entry(class.to_owned()).or_default().clone()
    }

    /// A task may have become claimable (queued, requeued, or a concurrency slot freed): one
    /// waiting claim of every class looks (a class with none keeps the wake-up for its next
    /// claim).
    pub fn wake(&self) {
        for notify in self.lock().values() {
            notify.notify_one();
        }
    }

    /// Ends every wait (the server is stopping).
    pub fn wake_all(&self) {
        for notify in self.lock().values() {
            notify.notify_waiters();
        }
    }
}

async fn try_claim(
    state: &State,
    resource_class: &str,
    runner_name: &str,
) -> AppResult<Option<ClaimResponse>> {
    // The task-agent the task runs: the release promoted for the class, or (none promoted) the
    // one the launch-agent has beside it (""). Read before the claim, so that no failure after
    // it can leave a task claimed with no one told.
    let agent_version = crate::releases::promotion_for(state, resource_class)
        .await?
        .map(|promoted| promoted.version)
        .unwrap_or_default();
    let token = generate_token("bosun_task_")?;
    let now = now_ms();
    let lease = now + state.task_lease.as_millis() as i64;
    let claimed = state
        .store
        .claim_task(&Claim {
            resource_class,
            runner_name,
            token_hash: &hash_token(&token),
            lease_expires: lease,
            max_running: state.max_running_tasks,
            now,
        })
        .await?;
    let Some(ClaimedTask {
        task_id,
        job_id,
        created_at,
    }) = claimed
    else {
        return Ok(None);
    };
    state.metrics.claimed(created_at, now);
    tracing::info!(task = %task_id, job = %job_id, runner = runner_name, "task claimed");
    state
        .store
        .runner_used(resource_class, runner_name, now)
        .await?;
    Ok(Some(ClaimResponse {
        task_token: token,
        agent_version,
        resource_class: resource_class.to_owned(),
        allocation: task_id,
        warning: None,
    }))
}

/// A task token authorizes its task only while the task runs. The token of a task that ended is
/// answered as an unknown one: the same 401, naming neither the task nor its status, so whoever
/// holds an old token learns nothing from it.
fn require_running(task: &TaskAuth) -> Result<(), AppError> {
    if task.status != TaskStatus::Running {
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
    let row = state.store.job_spec(&task.job_id).await?.ok_or_else(|| {
        anyhow::anyhow!("job {} of task {} is missing", task.job_id, task.task_id)
    })?;
    let mut spec: TaskSpec = serde_json::from_str(&row.spec).map_err(|err| {
        anyhow::anyhow!(
            "stored task spec of job {} is unreadable: {err}",
            task.job_id
        )
    })?;
    if row.continuation {
        let key = crate::continuation::issue_key(&state, &row.pipeline_id, &task.task_id).await?;
        spec.environment
            .insert("CIRCLE_CONTINUATION_KEY".to_owned(), key);
    }
    // Secrets exist in the clear only in this answer, to the running task's token.
    let job = state
        .store
        .job_pipeline(&task.job_id)
        .await?
        .ok_or_else(|| {
            anyhow::anyhow!("job {} of task {} is missing", task.job_id, task.task_id)
        })?;
    spec.secrets = bosun_api::task::Secrets(crate::contexts::task_secrets(&state, &job).await?);
    let (checkout_auth, ssh_keys) =
        crate::project_secrets::task_credentials(&state, &job.project_id, &spec.steps).await?;
    spec.checkout_auth = checkout_auth;
    spec.ssh_keys = ssh_keys;
    spec.parallel_index = state.store.task_node(&task.task_id).await?;
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
        let stopping = state.stopping.load(std::sync::atomic::Ordering::SeqCst);
        if answer.cancel || stopping {
            return Ok(Json(answer));
        }
        if tokio::time::timeout_at(deadline, canceled).await.is_err() {
            return Ok(Json(renew_lease(&state, &task).await?));
        }
    }
}

async fn renew_lease(state: &State, task: &TaskAuth) -> AppResult<HeartbeatResponse> {
    let lease = now_ms() + state.task_lease.as_millis() as i64;
    let Lease::Renewed { cancel_requested } = state.store.renew_lease(&task.task_id, lease).await?
    else {
        // The task ended since the request was authenticated.
        return Err(ended_task());
    };
    Ok(HeartbeatResponse {
        cancel: cancel_requested,
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
    let steps = state.store.step_count(&task.job_id).await?;
    if query.step >= steps {
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

/// `["a", "b"]`: the statuses an error message lists as allowed.
fn spelled<T: Copy>(statuses: &[T], as_str: fn(T) -> &'static str) -> String {
    format!(
        "{:?}",
        statuses.iter().map(|s| as_str(*s)).collect::<Vec<_>>()
    )
}

async fn step_event(
    task: TaskAuth,
    StateExt(state): StateExt<State>,
    Json(event): Json<StepEvent>,
) -> AppResult<Json<serde_json::Value>> {
    require_running(&task)?;
    let Some(status) = StepStatus::parse(&event.status) else {
        return Err(AppError::bad_request(format!(
            "step status `{}` is not one of {}",
            event.status,
            spelled(StepStatus::ALL, StepStatus::as_str)
        )));
    };
    check_field("name", &event.name, 1024)?;
    let steps = state.store.step_count(&task.job_id).await?;
    if event.step >= steps {
        return Err(AppError::bad_request(format!(
            "step {} does not exist: the job has {steps} step(s)",
            event.step
        )));
    }
    state
        .store
        .record_step(&StepUpdate {
            task_id: &task.task_id,
            index: event.step,
            name: &event.name,
            status,
            exit_code: event.exit_code,
            duration_ms: event.duration_ms,
        })
        .await?;
    Ok(Json(serde_json::json!({ "message": "ok" })))
}

async fn complete(
    task: TaskAuth,
    StateExt(state): StateExt<State>,
    Json(body): Json<CompleteRequest>,
) -> AppResult<Json<serde_json::Value>> {
    let status = TaskStatus::parse(&body.status).filter(|s| TaskStatus::RESULTS.contains(s));
    let Some(status) = status else {
        return Err(AppError::bad_request(format!(
            "task status `{}` is not one of {}",
            body.status,
            spelled(TaskStatus::RESULTS, TaskStatus::as_str)
        )));
    };
    if task.status == status {
        // A retried completion: already recorded.
        return Ok(Json(serde_json::json!({ "message": "ok" })));
    }
    require_running(&task)?;
    let message = body
        .message
        .map(|m| m.chars().take(4096).collect::<String>());
    scheduler::finish_task(&state, &task.task_id, status, message.as_deref()).await?;
    Ok(Json(serde_json::json!({ "message": "ok" })))
}
