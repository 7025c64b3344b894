//! Continuation keys of setup workflows, stored by hash.

use super::rows::ContinuationRow;
use super::{Store, StoreResult, StoreTx};

impl Store {
    /// The continuation key whose hash is `key_hash`.
    pub async fn continuation(&self, key_hash: &str) -> StoreResult<Option<ContinuationRow>> {
        Ok(
            sqlx::query_as("SELECT pipeline_id, task_id FROM continuations WHERE key_hash = $1")
                .bind(key_hash)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// When pipeline `pipeline_id` was continued, with any of its keys.
    pub async fn continued_at(&self, pipeline_id: &str) -> StoreResult<Option<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT MIN(used_at) FROM continuations WHERE pipeline_id = $1 AND used_at IS NOT NULL",
        )
        .bind(pipeline_id)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Stores the hash of a continuation key given to task `task_id`.
    pub async fn add_continuation(
        &self,
        key_hash: &str,
        pipeline_id: &str,
        task_id: &str,
        now: i64,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO continuations (key_hash, pipeline_id, task_id, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(key_hash)
        .bind(pipeline_id)
        .bind(task_id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

impl StoreTx {
    /// Marks key `key_hash` used, unless a key of its pipeline was used already; answers whether
    /// it was marked. Run it first in its transaction: the write takes the write lock, so of
    /// two concurrent continuations of a pipeline exactly one succeeds.
    pub async fn use_continuation(
        &mut self,
        key_hash: &str,
        pipeline_id: &str,
        now: i64,
    ) -> StoreResult<bool> {
        let claimed = sqlx::query(
            "UPDATE continuations SET used_at = $1 WHERE key_hash = $2 AND used_at IS NULL
               AND NOT EXISTS (SELECT 1 FROM continuations WHERE pipeline_id = $3 AND used_at IS NOT NULL)",
        )
        .bind(now)
        .bind(key_hash)
        .bind(pipeline_id)
        .execute(&mut *self.tx)
        .await?;
        Ok(claimed.rows_affected() > 0)
    }
}
