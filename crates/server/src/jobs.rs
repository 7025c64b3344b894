//! Acting on jobs: cancel.

use axum::extract::{Path, State as StateExt};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};

use crate::State;
use crate::auth::{Access, Caller};
use crate::error::{AppError, AppResult};
use crate::scheduler;
use crate::store::Owned;

pub fn routes() -> Router<State> {
    Router::new()
        .route("/api/v2/job/{id}/cancel", post(cancel_job))
        .route(
            "/api/v2/project/{vcs}/{org}/{repo}/job/{number}/cancel",
            post(cancel_project_job),
        )
        .route("/api/v2/workflow/{id}/cancel", post(cancel_workflow))
}

/// The id of job `number` of project `slug` (CircleCI's `/project/{slug}/job/{number}/...`
/// routes), if `caller` may `access` the project: 400 for a number that is not one, 403 or 404.
pub(crate) async fn job_by_number(
    state: &State,
    caller: &Caller,
    slug: &str,
    number: &str,
    access: Access,
) -> AppResult<String> {
    let Ok(number) = number.parse::<i64>() else {
        return Err(AppError::bad_request(format!(
            "job number `{number}` is not a number"
        )));
    };
    let project = crate::pipelines::project_for(state, caller, slug, access).await?;
    state
        .store
        .job_by_number(&project.slug, number)
        .await?
        .ok_or_else(|| AppError::not_found(format!("project {slug} has no job {number}")))
}

/// CircleCI's `POST /project/{project-slug}/job/{job-number}/cancel`: [`cancel_job`] by number.
async fn cancel_project_job(
    caller: Caller,
    state: StateExt<State>,
    Path((vcs, org, repo, number)): Path<(String, String, String, String)>,
) -> AppResult<Json<serde_json::Value>> {
    let slug = format!("{vcs}/{org}/{repo}");
    let job_id = job_by_number(&state.0, &caller, &slug, &number, Access::Write).await?;
    cancel_job(caller, state, Path(job_id)).await
}

/// Cancels a job. A job not yet running ends `canceled` at once (its dependents `not_run`); a
/// running one is asked to stop through its task's heartbeat, which answers at once, and ends
/// `canceled` when its runner reports back.
async fn cancel_job(
    caller: Caller,
    StateExt(state): StateExt<State>,
    Path(id): Path<String>,
) -> AppResult<Json<serde_json::Value>> {
    caller
        .check_owned(&state, Owned::Job(&id), Access::Write)
        .await?;
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

/// CircleCI's `POST /workflow/{id}/cancel`: cancels every job of the workflow that has not
/// ended, as [`cancel_job`] cancels one; 202 `{"message": "Accepted."}`.
async fn cancel_workflow(
    caller: Caller,
    StateExt(state): StateExt<State>,
    Path(id): Path<String>,
) -> AppResult<(StatusCode, Json<serde_json::Value>)> {
    caller
        .check_owned(&state, Owned::Workflow(&id), Access::Write)
        .await?;
    if state.store.workflow(&id).await?.is_none() {
        return Err(AppError::not_found(format!("workflow {id} not found")));
    }
    // In order, reading each status afresh: cancelling a job ends its dependents (`not_run`).
    for job in state.store.jobs_of_workflow(&id).await? {
        let Some(status) = state.store.job_status(&job.id).await? else {
            continue;
        };
        if status.is_final() {
            continue;
        }
        match scheduler::cancel_job(&state, &job.id).await {
            Ok(_) => {}
            // It ended meanwhile.
            Err(err) if err.status == StatusCode::CONFLICT => {}
            Err(err) => return Err(err),
        }
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "message": "Accepted." })),
    ))
}
