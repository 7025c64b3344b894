//! Projects, pipelines, workflows and jobs.

use super::rows::{
    JobListRow, JobRow, NewJob, NewPipeline, PipelineRow, ProjectRow, StepRow, WorkflowRow,
};
use super::status::{JobStatus, WorkflowStatus};
use super::{Store, StoreResult, StoreTx};

const PIPELINE_COLUMNS: &str =
    "p.id, p.number, pr.slug AS project_slug, pr.git_url, p.state, p.status, p.errors,
     p.branch, p.tag, p.revision, p.created_at
     FROM pipelines p JOIN projects pr ON pr.id = p.project_id";

impl Store {
    /// Creates a project; `false` if one with its slug exists.
    pub async fn create_project(&self, project: &ProjectRow, now: i64) -> StoreResult<bool> {
        let inserted = sqlx::query(
            "INSERT INTO projects (id, slug, git_url, namespace, created_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (slug) DO NOTHING",
        )
        .bind(&project.id)
        .bind(&project.slug)
        .bind(&project.git_url)
        .bind(&project.namespace)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(inserted.rows_affected() > 0)
    }

    /// The project of slug `slug`, written either way CircleCI accepts (`github/…` or
    /// `gh/…`: projects are stored with the short form, `crate::slug::canonical`).
    pub async fn project_by_slug(&self, slug: &str) -> StoreResult<Option<ProjectRow>> {
        Ok(sqlx::query_as(
            "SELECT id, slug, git_url, namespace FROM projects WHERE slug = $1 OR slug = $2
             ORDER BY slug = $2 DESC LIMIT 1",
        )
        .bind(slug)
        .bind(crate::slug::canonical(slug))
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Whether resource class `name` exists.
    pub async fn resource_class_exists(&self, name: &str) -> StoreResult<bool> {
        Ok(self.resource_class_id(name).await?.is_some())
    }

    /// Takes the project's next pipeline number. A number taken by a request that then fails
    /// leaves a gap, as on CircleCI.
    pub async fn next_pipeline_number(&self, project_id: &str) -> StoreResult<i64> {
        Ok(sqlx::query_scalar(
            "UPDATE projects SET next_pipeline_number = next_pipeline_number + 1 WHERE id = $1
             RETURNING next_pipeline_number - 1",
        )
        .bind(project_id)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Pipeline `id`, with its project's slug and git URL.
    pub async fn pipeline(&self, id: &str) -> StoreResult<Option<PipelineRow>> {
        Ok(
            sqlx::query_as(&format!("SELECT {PIPELINE_COLUMNS} WHERE p.id = $1"))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Whether pipeline `id` exists.
    pub async fn pipeline_exists(&self, id: &str) -> StoreResult<bool> {
        let found: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pipelines WHERE id = $1)")
                .bind(id)
                .fetch_one(&self.pool)
                .await?;
        Ok(found)
    }

    /// The workflows of pipeline `pipeline_id`, in order.
    pub async fn workflows(&self, pipeline_id: &str) -> StoreResult<Vec<WorkflowRow>> {
        Ok(sqlx::query_as(
            "SELECT w.id, w.name, p.number AS pipeline_number, pr.slug AS project_slug, w.status,
                    w.created_at, w.stopped_at
             FROM workflows w JOIN pipelines p ON p.id = w.pipeline_id JOIN projects pr ON pr.id = p.project_id
             WHERE w.pipeline_id = $1 ORDER BY w.position",
        )
        .bind(pipeline_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Whether workflow `id` exists.
    pub async fn workflow_exists(&self, id: &str) -> StoreResult<bool> {
        let found: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM workflows WHERE id = $1)")
                .bind(id)
                .fetch_one(&self.pool)
                .await?;
        Ok(found)
    }

    /// The jobs of workflow `workflow_id`, in order.
    pub async fn jobs_of_workflow(&self, workflow_id: &str) -> StoreResult<Vec<JobListRow>> {
        Ok(sqlx::query_as(
            "SELECT id, name, number, status, started_at, stopped_at, requires FROM jobs
             WHERE workflow_id = $1 ORDER BY position",
        )
        .bind(workflow_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Job `id`.
    pub async fn job(&self, id: &str) -> StoreResult<Option<JobRow>> {
        Ok(sqlx::query_as(
            "SELECT id, name, number, status, pipeline_id, workflow_id, resource_class, message
             FROM jobs WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The status of job `id`.
    pub async fn job_status(&self, id: &str) -> StoreResult<Option<JobStatus>> {
        Ok(sqlx::query_scalar("SELECT status FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// The steps task `task_id` reported, in order.
    pub async fn steps(&self, task_id: &str) -> StoreResult<Vec<StepRow>> {
        Ok(sqlx::query_as(
            "SELECT idx, name, status, exit_code, duration_ms FROM steps WHERE task_id = $1 ORDER BY idx",
        )
        .bind(task_id)
        .fetch_all(&self.pool)
        .await?)
    }
}

impl StoreTx {
    /// The project's next job number, read with a write so the transaction holds the database's
    /// write lock from here on: two transactions adding jobs to one project never read the same
    /// number. [`StoreTx::set_next_job_number`] stores the advanced counter.
    pub async fn lock_next_job_number(&mut self, project_id: &str) -> StoreResult<i64> {
        Ok(sqlx::query_scalar(
            "UPDATE projects SET next_job_number = next_job_number WHERE id = $1 RETURNING next_job_number",
        )
        .bind(project_id)
        .fetch_one(&mut *self.tx)
        .await?)
    }

    /// Stores the project's next job number.
    pub async fn set_next_job_number(&mut self, project_id: &str, next: i64) -> StoreResult<()> {
        sqlx::query("UPDATE projects SET next_job_number = $1 WHERE id = $2")
            .bind(next)
            .bind(project_id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Inserts a pipeline.
    pub async fn insert_pipeline(&mut self, pipeline: &NewPipeline<'_>) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO pipelines (id, project_id, number, branch, tag, revision, state, status, errors,
                                    created_at, trigger_type, actor_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(pipeline.id)
        .bind(pipeline.project_id)
        .bind(pipeline.number)
        .bind(pipeline.branch)
        .bind(pipeline.tag)
        .bind(pipeline.revision)
        .bind(pipeline.state)
        .bind(pipeline.status)
        .bind(pipeline.errors)
        .bind(pipeline.created_at)
        .bind(pipeline.trigger_type)
        .bind(pipeline.actor_id)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Inserts a running workflow.
    pub async fn insert_workflow(
        &mut self,
        id: &str,
        pipeline_id: &str,
        name: &str,
        position: i64,
        now: i64,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO workflows (id, pipeline_id, name, position, status, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(pipeline_id)
        .bind(name)
        .bind(position)
        .bind(WorkflowStatus::Running)
        .bind(now)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// How many workflows pipeline `pipeline_id` has.
    pub async fn count_workflows(&mut self, pipeline_id: &str) -> StoreResult<i64> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM workflows WHERE pipeline_id = $1")
                .bind(pipeline_id)
                .fetch_one(&mut *self.tx)
                .await?,
        )
    }

    /// Inserts a `blocked` job.
    pub async fn insert_job(&mut self, job: &NewJob<'_>) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO jobs (id, workflow_id, pipeline_id, name, number, position, status, resource_class,
                               requires, spec, step_count, continuation, parallelism, contexts)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(job.id)
        .bind(job.workflow_id)
        .bind(job.pipeline_id)
        .bind(job.name)
        .bind(job.number)
        .bind(job.position)
        .bind(JobStatus::Blocked)
        .bind(job.resource_class)
        .bind(job.requires)
        .bind(job.spec)
        .bind(job.step_count)
        .bind(job.continuation)
        .bind(job.parallelism.max(1))
        .bind(job.contexts)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }
}
