//! Workspace layers: one row per `persist_to_workspace` of a job, found by workflow.
//!
//! Like caches, layers expire by a server setting (`--workspace-retention`): reads take the
//! oldest creation time still alive.

use super::status::TaskStatus;
use super::{Store, StoreResult};

/// One stored workspace layer.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LayerRow {
    pub id: String,
    pub workflow_id: String,
    pub job_id: String,
    pub task_id: String,
    /// The layer's place among its job's layers, from 1.
    pub seq: i64,
    pub size: i64,
    pub sha256: String,
    pub blob_key: String,
    pub created_at: i64,
}

const LAYER_COLUMNS: &str =
    "id, workflow_id, job_id, task_id, seq, size, sha256, blob_key, created_at";

impl Store {
    /// Records a stored layer after the job's other layers (`row.seq` is ignored: the next
    /// number of the job is taken). Answers the number it got.
    pub async fn add_workspace_layer(&self, row: &LayerRow) -> StoreResult<i64> {
        Ok(sqlx::query_scalar(
            "INSERT INTO workspace_layers
                    (id, workflow_id, job_id, task_id, seq, size, sha256, blob_key, created_at)
             SELECT $1, $2, $3, $4, COALESCE(MAX(seq), 0) + 1, $5, $6, $7, $8
               FROM workspace_layers WHERE job_id = $3
             RETURNING seq",
        )
        .bind(&row.id)
        .bind(&row.workflow_id)
        .bind(&row.job_id)
        .bind(&row.task_id)
        .bind(row.size)
        .bind(&row.sha256)
        .bind(&row.blob_key)
        .bind(row.created_at)
        .fetch_one(&self.pool)
        .await?)
    }

    /// How many layers job `job_id` stored.
    pub async fn job_layer_count(&self, job_id: &str) -> StoreResult<i64> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM workspace_layers WHERE job_id = $1")
                .bind(job_id)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// The live layers of workflow `workflow_id` stored by tasks that succeeded (a failed
    /// attempt's layers are not the job's), in the order they were stored.
    pub async fn workflow_layers(
        &self,
        workflow_id: &str,
        created_after: i64,
    ) -> StoreResult<Vec<LayerRow>> {
        Ok(sqlx::query_as(
            "SELECT l.id, l.workflow_id, l.job_id, l.task_id, l.seq, l.size, l.sha256, l.blob_key,
                    l.created_at
               FROM workspace_layers l JOIN tasks t ON t.id = l.task_id
              WHERE l.workflow_id = $1 AND l.created_at > $2 AND t.status = $3
              ORDER BY l.created_at, l.seq, l.id",
        )
        .bind(workflow_id)
        .bind(created_after)
        .bind(TaskStatus::Success)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Deletes layer `id`'s row; `false` if it was gone.
    pub async fn delete_workspace_layer(&self, id: &str) -> StoreResult<bool> {
        let deleted = sqlx::query("DELETE FROM workspace_layers WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(deleted.rows_affected() > 0)
    }

    /// Up to `limit` layers created at or before `cutoff`, oldest first: the sweep's batch.
    pub async fn expired_workspace_layers(
        &self,
        cutoff: i64,
        limit: i64,
    ) -> StoreResult<Vec<LayerRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {LAYER_COLUMNS} FROM workspace_layers WHERE created_at <= $1
              ORDER BY created_at, id LIMIT $2"
        ))
        .bind(cutoff)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }
}
