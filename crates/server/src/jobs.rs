//! Acting on jobs: cancel.

use axum::extract::{Path, State as StateExt};
use axum::routing::post;
use axum::{Json, Router};

use crate::State;
use crate::auth::Admin;
use crate::error::{AppError, AppResult};
use crate::scheduler;

pub fn routes() -> Router<State> {
    Router::new()
        .route("/api/v2/job/{id}/cancel", post(cancel_job))
        .route(
            "/api/v2/project/{vcs}/{org}/{repo}/job/{number}/cancel",
            post(cancel_project_job),
        )
}

/// CircleCI's `POST /project/{project-slug}/job/{job-number}/cancel`: [`cancel_job`] by number.
async fn cancel_project_job(
    admin: Admin,
    state: StateExt<State>,
    Path((vcs, org, repo, number)): Path<(String, String, String, String)>,
) -> AppResult<Json<serde_json::Value>> {
    let slug = format!("{vcs}/{org}/{repo}");
    let Ok(number) = number.parse::<i64>() else {
        return Err(AppError::bad_request(format!(
            "job number `{number}` is not a number"
        )));
    };
    let Some(job_id) = state.0.store.job_by_number(&slug, number).await? else {
        return Err(AppError::not_found(format!(
            "project {slug} has no job {number}"
        )));
    };
    cancel_job(admin, state, Path(job_id)).await
}

/// Cancels a job. A job not yet running ends `canceled` at once (its dependents `not_run`); a
/// running one is asked to stop through its task's heartbeat, which answers at once, and ends
/// `canceled` when its runner reports back.
async fn cancel_job(
    _: Admin,
    StateExt(state): StateExt<State>,
    Path(id): Path<String>,
) -> AppResult<Json<serde_json::Value>> {
    let Some(status) = state.store.job_status(&id).await? else {
        return Err(AppError::not_found(format!("job {id} not found")));
    };
    if status.is_final() {
        return Err(AppError::conflict(format!(
            "job {id} already ended: {status}"
        )));
    }
    let outcome = scheduler::cancel_job(&state, &id).await?;
    Ok(Json(serde_json::json!({ "message": outcome })))
}
