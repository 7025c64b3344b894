//! Artifacts: a row per stored file, found by job. They expire by `--artifact-retention`:
//! reads take the oldest creation time still alive (`created_after`).

use super::{BuildRow, JobStatus, Store, StoreResult};

/// The columns of a [`BuildRow`] and the joins they come from.
const BUILD_SELECT: &str =
    "SELECT jobs.id, jobs.number, jobs.name, jobs.status, jobs.started_at, jobs.stopped_at,
          workflows.id AS workflow_id, workflows.name AS workflow_name,
          workflows.created_at, pipelines.revision, pipelines.branch, pipelines.tag,
          pipelines.trigger_type, COALESCE(users.login, '') AS actor, projects.slug,
          projects.git_url
     FROM jobs
     JOIN workflows ON workflows.id = jobs.workflow_id
     JOIN pipelines ON pipelines.id = jobs.pipeline_id
     JOIN projects ON projects.id = pipelines.project_id
     LEFT JOIN users ON users.id = pipelines.actor_id";

/// One stored artifact.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ArtifactRow {
    pub id: String,
    pub task_id: String,
    pub job_id: String,
    pub node_index: i64,
    pub path: String,
    pub size: i64,
    pub sha256: String,
    pub blob_key: String,
    pub created_at: i64,
}

impl Store {
    /// Records a stored artifact.
    pub async fn add_artifact(&self, row: &ArtifactRow) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO artifacts (id, task_id, job_id, node_index, path, size, sha256, blob_key, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&row.id)
        .bind(&row.task_id)
        .bind(&row.job_id)
        .bind(row.node_index)
        .bind(&row.path)
        .bind(row.size)
        .bind(&row.sha256)
        .bind(&row.blob_key)
        .bind(row.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// How many artifacts task `task_id` stored.
    pub async fn artifact_count(&self, task_id: &str) -> StoreResult<i64> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM artifacts WHERE task_id = $1")
                .bind(task_id)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Job `job_id`'s live artifacts, by path (then by when they were stored).
    pub async fn job_artifacts(
        &self,
        job_id: &str,
        created_after: i64,
    ) -> StoreResult<Vec<ArtifactRow>> {
        Ok(sqlx::query_as(
            "SELECT id, task_id, job_id, node_index, path, size, sha256, blob_key, created_at
               FROM artifacts WHERE job_id = $1 AND created_at > $2 ORDER BY path, created_at",
        )
        .bind(job_id)
        .bind(created_after)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Artifact `id`, if it is live.
    pub async fn artifact(&self, id: &str, created_after: i64) -> StoreResult<Option<ArtifactRow>> {
        Ok(sqlx::query_as(
            "SELECT id, task_id, job_id, node_index, path, size, sha256, blob_key, created_at
               FROM artifacts WHERE id = $1 AND created_at > $2",
        )
        .bind(id)
        .bind(created_after)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Up to `limit` artifacts created at or before `cutoff`, oldest first: the sweep's batch.
    pub async fn expired_artifacts(
        &self,
        cutoff: i64,
        limit: i64,
    ) -> StoreResult<Vec<ArtifactRow>> {
        Ok(sqlx::query_as(
            "SELECT id, task_id, job_id, node_index, path, size, sha256, blob_key, created_at
               FROM artifacts WHERE created_at <= $1 ORDER BY created_at, id LIMIT $2",
        )
        .bind(cutoff)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Deletes artifact `id`'s row; `false` if it was gone.
    pub async fn delete_artifact(&self, id: &str) -> StoreResult<bool> {
        let deleted = sqlx::query("DELETE FROM artifacts WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(deleted.rows_affected() > 0)
    }

    /// The id of job number `number` of the project `slug` (either vcs form, as
    /// [`Store::project_by_slug`]).
    pub async fn job_by_number(&self, slug: &str, number: i64) -> StoreResult<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT jobs.id FROM jobs
               JOIN pipelines ON pipelines.id = jobs.pipeline_id
               JOIN projects ON projects.id = pipelines.project_id
              WHERE projects.slug IN ($1, $3) AND jobs.number = $2
              ORDER BY projects.slug = $3 DESC LIMIT 1",
        )
        .bind(slug)
        .bind(number)
        .bind(crate::slug::canonical(slug))
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Jobs of project `project_id` as API v1.1 lists builds: newest (highest number) first,
    /// `limit` of them after skipping `offset`, only those whose status is in `statuses` when
    /// it is given.
    pub async fn project_builds(
        &self,
        project_id: &str,
        statuses: Option<&[JobStatus]>,
        limit: i64,
        offset: i64,
    ) -> StoreResult<Vec<BuildRow>> {
        // The statuses are this enum's own strings, never a client's text.
        let filter = match statuses {
            Some(statuses) => format!(
                "AND jobs.status IN ({})",
                statuses
                    .iter()
                    .map(|status| format!("'{}'", status.as_str()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => String::new(),
        };
        let sql = format!(
            "{BUILD_SELECT} WHERE pipelines.project_id = $1 {filter}
              ORDER BY jobs.number DESC LIMIT $2 OFFSET $3"
        );
        Ok(sqlx::query_as(&sql)
            .bind(project_id)
            .bind(limit)
            .bind(offset)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Job `number` of project `project_id` as [`Store::project_builds`] lists it.
    pub async fn project_build(
        &self,
        project_id: &str,
        number: i64,
    ) -> StoreResult<Option<BuildRow>> {
        let sql = format!("{BUILD_SELECT} WHERE pipelines.project_id = $1 AND jobs.number = $2");
        Ok(sqlx::query_as(&sql)
            .bind(project_id)
            .bind(number)
            .fetch_optional(&self.pool)
            .await?)
    }
}
