//! Moves pipelines forward: queues jobs whose `requires` succeeded, marks the rest `not_run`,
//! rolls job results up into workflow and pipeline status, and ends tasks whose lease lapsed.

use std::collections::HashMap;
use std::time::Duration;

use sqlx::{Sqlite, Transaction};

use crate::State;
use crate::error::AppResult;
use crate::util::{new_id, now_ms};

const FAILED_RESULTS: &[&str] = &["failed", "canceled", "not_run", "infrastructure_fail"];

/// Inserts the task of a job and marks the job queued. The caller wakes claimers after commit.
pub async fn queue_job(
    tx: &mut Transaction<'_, Sqlite>,
    job_id: &str,
    resource_class: &str,
) -> AppResult<()> {
    sqlx::query(
        "INSERT INTO tasks (id, job_id, resource_class, status, created_at) VALUES (?, ?, ?, 'queued', ?)",
    )
    .bind(new_id())
    .bind(job_id)
    .bind(resource_class)
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    sqlx::query("UPDATE jobs SET status = 'queued' WHERE id = ?")
        .bind(job_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub async fn job_started(state: &State, job_id: &str) -> AppResult<()> {
    let now = now_ms();
    sqlx::query("UPDATE jobs SET status = 'running', started_at = ? WHERE id = ?")
        .bind(now)
        .bind(job_id)
        .execute(state.store.pool())
        .await?;
    Ok(())
}

/// Records a task's result, then advances its workflow.
pub async fn finish_task(
    state: &State,
    task_id: &str,
    status: &str,
    message: Option<&str>,
) -> AppResult<()> {
    let now = now_ms();
    let mut tx = state.store.pool().begin().await?;
    let job: Option<(String, String)> = sqlx::query_as(
        "UPDATE tasks SET status = ?, finished_at = ?, lease_expires = NULL
         WHERE id = ? AND status = 'running' RETURNING job_id, (SELECT workflow_id FROM jobs WHERE jobs.id = tasks.job_id)",
    )
    .bind(status)
    .bind(now)
    .bind(task_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((job_id, workflow_id)) = job else {
        // Someone else (the lease reaper, a retry) finished it first.
        return Ok(());
    };
    sqlx::query("UPDATE jobs SET status = ?, stopped_at = ?, message = ? WHERE id = ?")
        .bind(status)
        .bind(now)
        .bind(message)
        .bind(&job_id)
        .execute(&mut *tx)
        .await?;
    // A step still marked running when its task ended did not finish.
    sqlx::query("UPDATE steps SET status = ? WHERE task_id = ? AND status = 'running'")
        .bind(if status == "canceled" {
            "canceled"
        } else {
            "failed"
        })
        .bind(task_id)
        .execute(&mut *tx)
        .await?;
    let queued = advance_workflow(&mut tx, &workflow_id).await?;
    tx.commit().await?;
    tracing::info!(task = task_id, job = %job_id, status, "task finished");
    if queued {
        state.queued.notify_waiters();
    }
    Ok(())
}

/// Queues the blocked jobs whose requirements all succeeded, marks `not_run` the ones with a
/// failed requirement, and updates the workflow and pipeline status. Returns whether a job was
/// queued.
pub async fn advance_workflow(
    tx: &mut Transaction<'_, Sqlite>,
    workflow_id: &str,
) -> AppResult<bool> {
    let rows: Vec<(String, String, String, String, String)> = sqlx::query_as(
        "SELECT id, name, status, requires, resource_class FROM jobs WHERE workflow_id = ? ORDER BY position",
    )
    .bind(workflow_id)
    .fetch_all(&mut **tx)
    .await?;
    let mut status: HashMap<String, String> = rows
        .iter()
        .map(|(_, name, status, _, _)| (name.clone(), status.clone()))
        .collect();
    let mut queued_any = false;
    // Each pass settles at least one blocked job or stops; jobs form a DAG (checked at compile).
    loop {
        let mut changed = false;
        for (id, name, _, requires, resource_class) in &rows {
            if status.get(name).map(String::as_str) != Some("blocked") {
                continue;
            }
            let requires: Vec<String> = serde_json::from_str(requires).unwrap_or_default();
            let states: Vec<&str> = requires
                .iter()
                .map(|r| status.get(r).map(String::as_str).unwrap_or("not_run"))
                .collect();
            if states.iter().any(|s| FAILED_RESULTS.contains(s)) {
                sqlx::query("UPDATE jobs SET status = 'not_run', stopped_at = ? WHERE id = ?")
                    .bind(now_ms())
                    .bind(id)
                    .execute(&mut **tx)
                    .await?;
                status.insert(name.clone(), "not_run".into());
                changed = true;
            } else if states.iter().all(|s| *s == "success") {
                queue_job(tx, id, resource_class).await?;
                status.insert(name.clone(), "queued".into());
                queued_any = true;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let all_final = status.values().all(|s| bosun_api::job_status_is_final(s));
    if all_final {
        let workflow_status = if status.values().all(|s| s == "success") {
            "success"
        } else if status.values().any(|s| s == "canceled") {
            "canceled"
        } else {
            "failed"
        };
        sqlx::query("UPDATE workflows SET status = ?, stopped_at = ? WHERE id = ?")
            .bind(workflow_status)
            .bind(now_ms())
            .bind(workflow_id)
            .execute(&mut **tx)
            .await?;
        let pipeline_id: String =
            sqlx::query_scalar("SELECT pipeline_id FROM workflows WHERE id = ?")
                .bind(workflow_id)
                .fetch_one(&mut **tx)
                .await?;
        rollup_pipeline(tx, &pipeline_id).await?;
    }
    Ok(queued_any)
}

/// Sets the pipeline's status once every workflow is final.
pub async fn rollup_pipeline(tx: &mut Transaction<'_, Sqlite>, pipeline_id: &str) -> AppResult<()> {
    let statuses: Vec<String> =
        sqlx::query_scalar("SELECT status FROM workflows WHERE pipeline_id = ?")
            .bind(pipeline_id)
            .fetch_all(&mut **tx)
            .await?;
    if statuses.iter().any(|s| s == "running") {
        return Ok(());
    }
    let status = if statuses.iter().all(|s| s == "success") {
        "success"
    } else if statuses.iter().any(|s| s == "canceled") {
        "canceled"
    } else {
        "failed"
    };
    sqlx::query("UPDATE pipelines SET status = ? WHERE id = ?")
        .bind(status)
        .bind(pipeline_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Ends running tasks whose lease lapsed (their runner died) as `infrastructure_fail`.
pub async fn reap_expired_leases(state: State) {
    let period = (state.task_lease / 4).clamp(Duration::from_millis(200), Duration::from_secs(5));
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        let expired: Result<Vec<String>, sqlx::Error> = sqlx::query_scalar(
            "SELECT id FROM tasks WHERE status = 'running' AND lease_expires < ?",
        )
        .bind(now_ms())
        .fetch_all(state.store.pool())
        .await;
        match expired {
            Ok(ids) => {
                for id in ids {
                    tracing::warn!(task = %id, "task lease lapsed: marking it infrastructure_fail");
                    if let Err(err) = finish_task(
                        &state,
                        &id,
                        "infrastructure_fail",
                        Some("the runner stopped sending heartbeats"),
                    )
                    .await
                    {
                        tracing::error!(task = %id, "could not end task: {}", err.message);
                    }
                }
            }
            Err(err) => tracing::error!("lease check failed: {err}"),
        }
    }
}

/// Cancels job `job_id`; returns what happened, for the answer.
pub async fn cancel_job(state: &State, job_id: &str) -> AppResult<&'static str> {
    let now = now_ms();
    let mut tx = state.store.pool().begin().await?;
    // Not claimed yet: the queued task (if any) and the job end here.
    sqlx::query(
        "UPDATE tasks SET status = 'canceled', finished_at = ? WHERE job_id = ? AND status = 'queued'",
    )
    .bind(now)
    .bind(job_id)
    .execute(&mut *tx)
    .await?;
    let waiting = sqlx::query(
        "UPDATE jobs SET status = 'canceled', stopped_at = ?, message = 'canceled before it ran'
         WHERE id = ? AND status IN ('blocked', 'queued')
         RETURNING workflow_id",
    )
    .bind(now)
    .bind(job_id)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(row) = waiting {
        let workflow_id: String = sqlx::Row::get(&row, 0);
        let queued = advance_workflow(&mut tx, &workflow_id).await?;
        tx.commit().await?;
        if queued {
            state.queued.notify_waiters();
        }
        return Ok("canceled");
    }
    // Running: ask its runner, through the heartbeat.
    let asked = sqlx::query(
        "UPDATE tasks SET cancel_requested = 1 WHERE job_id = ? AND status = 'running'",
    )
    .bind(job_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    if asked > 0 {
        state.cancels.notify_waiters();
        return Ok("canceling");
    }
    Err(crate::error::AppError::conflict(format!(
        "job {job_id} is not running any more"
    )))
}
