//! Dynamic configuration: `POST /api/v2/pipeline/continue`, CircleCI's continuation API.
//!
//! A pipeline whose config says `setup: true` runs its setup workflows; their jobs are marked
//! `continuation`, and each of their tasks gets a fresh one-use key (`CIRCLE_CONTINUATION_KEY`)
//! and bosun's URL (`BOSUN_API_URL`) in the config it fetches ([`issue_key`]). The key itself is
//! never stored, only its SHA-256 and the task it was given to, and it works only while that task
//! runs. A job posts `{"continuation-key", "configuration", "parameters"}`; the key alone
//! authenticates it (no `Circle-Token`). The configuration is compiled with the pipeline's
//! context (branch, tag, revision, number, id; the posted `parameters` as pipeline parameters),
//! must not itself be a setup config, must use only the project's namespace's resource classes,
//! and its workflows join the same pipeline. A pipeline is continued once, whichever of its keys
//! is used (a retried setup task has a key of its own): a second use is a 409. A configuration
//! that does not compile is a 400 and leaves the key unused, so the job can fix it and post again.

use std::collections::BTreeMap;

use axum::extract::State as StateExt;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;

use crate::State;
use crate::error::{AppError, AppResult};
use crate::pipelines::{self, AddWorkflows, Resolved};
use crate::serve::RequestConnection;
use crate::util::{now_ms, rfc3339};

pub fn routes() -> Router<State> {
    Router::new().route("/api/v2/pipeline/continue", post(continue_pipeline))
}

#[derive(Deserialize)]
struct ContinueBody {
    #[serde(rename = "continuation-key")]
    continuation_key: String,
    configuration: String,
    #[serde(default)]
    parameters: Option<serde_json::Map<String, serde_json::Value>>,
}

async fn continue_pipeline(
    StateExt(state): StateExt<State>,
    connection: RequestConnection,
    Json(body): Json<ContinueBody>,
) -> AppResult<(StatusCode, Json<serde_json::Value>)> {
    let key_hash = crate::auth::hash_token(&body.continuation_key);
    let found: Option<(String, Option<String>)> =
        sqlx::query_as("SELECT pipeline_id, task_id FROM continuations WHERE key_hash = ?")
            .bind(&key_hash)
            .fetch_optional(state.store.pool())
            .await?;
    let Some((pipeline_id, task_id)) = found else {
        return Err(AppError::not_found("unknown continuation key"));
    };
    // The key is this request's credential: a setup job's connection counts as authenticated
    // (and is served even when the server's anonymous share of connections is full).
    connection.mark_authenticated();
    if let Some(used_at) = continued_at(&state, &pipeline_id).await? {
        return Err(already_used(used_at));
    }
    // A key works only while the task it was given to runs; keys from before keys were per task
    // (no task) while any task of their pipeline runs.
    let running: Option<i64> = match &task_id {
        Some(task_id) => {
            sqlx::query_scalar("SELECT 1 FROM tasks WHERE id = ? AND status = 'running'")
                .bind(task_id)
                .fetch_optional(state.store.pool())
                .await?
        }
        None => {
            sqlx::query_scalar(
                "SELECT 1 FROM tasks t JOIN jobs j ON j.id = t.job_id
                 WHERE j.pipeline_id = ? AND t.status = 'running' LIMIT 1",
            )
            .bind(&pipeline_id)
            .fetch_optional(state.store.pool())
            .await?
        }
    };
    if running.is_none() {
        return Err(AppError::conflict(
            "the job this continuation key was given to has ended: a key works only while its job runs",
        ));
    }
    type Row = (String, i64, Option<String>, Option<String>, String);
    let (project_id, number, branch, tag, revision): Row = sqlx::query_as(
        "SELECT project_id, number, branch, tag, revision FROM pipelines WHERE id = ?",
    )
    .bind(&pipeline_id)
    .fetch_one(state.store.pool())
    .await?;
    let slug: String = sqlx::query_scalar("SELECT slug FROM projects WHERE id = ?")
        .bind(&project_id)
        .fetch_one(state.store.pool())
        .await?;
    let project = pipelines::find_project(&state, &slug).await?;
    let resolved = Resolved {
        branch,
        tag,
        revision,
    };
    let context = pipelines::pipeline_context(
        &project,
        &resolved,
        &pipeline_id,
        number,
        body.parameters.clone().unwrap_or_default(),
    );
    let compiled =
        bosun_config::compile_pipeline(&body.configuration, "continuation configuration", &context)
            .map_err(|err| AppError::bad_request(err.to_string()))?;
    if compiled.setup {
        return Err(AppError::bad_request(
            "the continuation configuration is itself a setup configuration (`setup: true`): \
             a pipeline is continued once, with a regular config",
        ));
    }
    pipelines::check_runnable(&compiled).map_err(AppError::bad_request)?;
    pipelines::check_resource_classes(&state, &compiled, &project)
        .await
        .map_err(AppError::bad_request)?;

    let now = now_ms();
    let mut tx = state.store.pool().begin().await?;
    // Claim the key first: this write takes SQLite's write lock, so of two concurrent posts
    // with any keys of this pipeline exactly one finds none of them used.
    let claimed = sqlx::query(
        "UPDATE continuations SET used_at = ? WHERE key_hash = ? AND used_at IS NULL
           AND NOT EXISTS (SELECT 1 FROM continuations WHERE pipeline_id = ? AND used_at IS NOT NULL)",
    )
    .bind(now)
    .bind(&key_hash)
    .bind(&pipeline_id)
    .execute(&mut *tx)
    .await?;
    if claimed.rows_affected() == 0 {
        return Err(already_used(now));
    }
    let mut next_job: i64 = sqlx::query_scalar(
        "UPDATE projects SET next_job_number = next_job_number WHERE id = ? RETURNING next_job_number",
    )
    .bind(&project.id)
    .fetch_one(&mut *tx)
    .await?;
    let existing: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM workflows WHERE pipeline_id = ?")
        .bind(&pipeline_id)
        .fetch_one(&mut *tx)
        .await?;
    let queued = pipelines::add_workflows(
        &mut tx,
        &compiled,
        &AddWorkflows {
            pipeline_id: &pipeline_id,
            pipeline_number: number,
            first_position: existing,
            project: &project,
            resolved: &resolved,
            environment: &BTreeMap::new(),
            continuation: false,
        },
        &mut next_job,
        now,
    )
    .await?;
    pipelines::commit_jobs(&state, tx, &project.id, next_job, queued).await?;
    tracing::info!(
        pipeline = %pipeline_id,
        workflows = compiled.workflows.len(),
        "pipeline continued"
    );
    Ok((
        StatusCode::OK,
        Json(serde_json::json!({
            "message": "Pipeline continued.",
            "pipeline_id": pipeline_id,
            "workflows": compiled.workflows.iter().map(|w| w.name.clone()).collect::<Vec<_>>(),
        })),
    ))
}

/// When the pipeline was continued, with any of its keys.
async fn continued_at(state: &State, pipeline_id: &str) -> AppResult<Option<i64>> {
    Ok(sqlx::query_scalar(
        "SELECT MIN(used_at) FROM continuations WHERE pipeline_id = ? AND used_at IS NOT NULL",
    )
    .bind(pipeline_id)
    .fetch_one(state.store.pool())
    .await?)
}

/// A fresh continuation key for a task of a setup workflow's job, handed to it with its config.
/// Only the key's hash is stored, with the task it was given to; every fetch of the config gets
/// a new key (a fetch whose answer was lost leaves a hash no one holds).
pub(crate) async fn issue_key(
    state: &State,
    pipeline_id: &str,
    task_id: &str,
) -> AppResult<String> {
    let key = crate::auth::generate_token("bosun_ck_")?;
    sqlx::query(
        "INSERT INTO continuations (key_hash, pipeline_id, task_id, created_at) VALUES (?, ?, ?, ?)",
    )
    .bind(crate::auth::hash_token(&key))
    .bind(pipeline_id)
    .bind(task_id)
    .bind(now_ms())
    .execute(state.store.pool())
    .await?;
    Ok(key)
}

fn already_used(used_at: i64) -> AppError {
    AppError::conflict(format!(
        "this continuation key was already used (at {}): a pipeline is continued once",
        rfc3339(used_at)
    ))
}
