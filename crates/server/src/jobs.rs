//! Acting on jobs: cancel.

use axum::extract::{Path, State as StateExt};
use axum::routing::post;
use axum::{Json, Router};

use crate::State;
use crate::auth::Admin;
use crate::error::{AppError, AppResult};
use crate::scheduler;

pub fn routes() -> Router<State> {
    Router::new().route("/api/v2/job/{id}/cancel", post(cancel_job))
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
