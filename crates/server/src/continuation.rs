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
use crate::store::ContinuationRow;
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
    let Some(ContinuationRow {
        pipeline_id,
        task_id,
    }) = state.store.continuation(&key_hash).await?
    else {
        return Err(AppError::not_found("unknown continuation key"));
    };
    // The key is this request's credential: a setup job's connection counts as authenticated
    // (and is served even when the server's anonymous share of connections is full).
    connection.mark_authenticated();
    if let Some(used_at) = state.store.continued_at(&pipeline_id).await? {
        return Err(already_used(used_at));
    }
    // A key works only while the task it was given to runs; keys from before keys were per task
    // (no task) while any task of their pipeline runs.
    let running = match &task_id {
        Some(task_id) => state.store.task_is_running(task_id).await?,
        None => state.store.pipeline_has_running_task(&pipeline_id).await?,
    };
    if !running {
        return Err(AppError::conflict(
            "the job this continuation key was given to has ended: a key works only while its job runs",
        ));
    }
    let pipeline = state.store.pipeline(&pipeline_id).await?.ok_or_else(|| {
        anyhow::anyhow!("pipeline {pipeline_id} of a continuation key is missing")
    })?;
    let number = pipeline.number;
    let project = pipelines::find_project(&state, &pipeline.project_slug).await?;
    let resolved = Resolved {
        branch: pipeline.branch,
        tag: pipeline.tag,
        revision: pipeline.revision,
    };
    let context = pipelines::pipeline_context(
        &project,
        &resolved,
        &pipeline_id,
        number,
        body.parameters.clone().unwrap_or_default(),
    );
    let continued = pipelines::compile_with_orbs(
        &state,
        &body.configuration,
        "continuation configuration",
        context,
    )
    .await
    .map_err(AppError::bad_request)?;
    let pipelines::Compiled {
        pipeline: compiled,
        yaml: compiled_yaml,
        orbs: continued_orbs,
        runnable,
    } = continued;
    if compiled.setup {
        return Err(AppError::bad_request(
            "the continuation configuration is itself a setup configuration (`setup: true`): \
             a pipeline is continued once, with a regular config",
        ));
    }
    runnable.map_err(AppError::bad_request)?;
    pipelines::check_resource_classes(&state, &compiled, &project)
        .await
        .map_err(AppError::bad_request)?;

    let now = now_ms();
    let mut tx = state.store.begin().await?;
    // Claim the key first: this write takes the write lock, so of two concurrent posts with
    // any keys of this pipeline exactly one finds none of them used.
    if !tx.use_continuation(&key_hash, &pipeline_id, now).await? {
        return Err(already_used(now));
    }
    let mut next_job = tx.lock_next_job_number(&project.id).await?;
    let existing = tx.count_workflows(&pipeline_id).await?;
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
    state
        .store
        .continue_pipeline_config(&pipeline_id, &body.configuration, &compiled_yaml)
        .await?;
    // The setup configuration's orbs and the continued one's.
    let mut orbs: Vec<bosun_api::ResolvedOrbRef> = state
        .store
        .pipeline_orbs(&pipeline_id)
        .await?
        .and_then(|json| serde_json::from_str(&json).ok())
        .unwrap_or_default();
    let continued_orbs: Vec<bosun_api::ResolvedOrbRef> =
        serde_json::from_str(&continued_orbs).unwrap_or_default();
    for orb in continued_orbs {
        if !orbs.contains(&orb) {
            orbs.push(orb);
        }
    }
    let orbs = serde_json::to_string(&orbs).unwrap_or_else(|_| "[]".into());
    state.store.set_pipeline_orbs(&pipeline_id, &orbs).await?;
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

/// A fresh continuation key for a task of a setup workflow's job, handed to it with its config.
/// Only the key's hash is stored, with the task it was given to; every fetch of the config gets
/// a new key (a fetch whose answer was lost leaves a hash no one holds).
pub(crate) async fn issue_key(
    state: &State,
    pipeline_id: &str,
    task_id: &str,
) -> AppResult<String> {
    let key = crate::auth::generate_token("bosun_ck_")?;
    state
        .store
        .add_continuation(
            &crate::auth::hash_token(&key),
            pipeline_id,
            task_id,
            now_ms(),
        )
        .await?;
    Ok(key)
}

fn already_used(used_at: i64) -> AppError {
    AppError::conflict(format!(
        "this continuation key was already used (at {}): a pipeline is continued once",
        rfc3339(used_at)
    ))
}
