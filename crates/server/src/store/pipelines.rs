//! Projects, pipelines, workflows and jobs.

use super::rows::{
    JobListRow, JobRow, NewJob, NewPipeline, PipelineConfigRow, PipelineRow, ProjectRow, StepRow,
    WorkflowByIdRow, WorkflowRow,
};
use super::status::{JobStatus, WorkflowStatus};
use super::{Store, StoreResult, StoreTx};

const PIPELINE_COLUMNS: &str =
    "p.id, p.number, pr.slug AS project_slug, pr.git_url, p.state, p.status, p.errors,
     p.branch, p.tag, p.revision, p.created_at, p.trigger_type, p.actor_id,
     COALESCE(u.login, '') AS actor_login,
     (SELECT MAX(COALESCE(w.stopped_at, w.created_at)) FROM workflows w WHERE w.pipeline_id = p.id)
         AS updated_at
     FROM pipelines p JOIN projects pr ON pr.id = p.project_id
     LEFT JOIN users u ON u.id = p.actor_id";

/// Which pipelines [`Store::list_pipelines`] lists.
#[derive(Debug, Clone, Default)]
pub struct PipelineFilter<'a> {
    /// One project's, ordered by number; else every project's, by creation.
    pub project_id: Option<&'a str>,
    /// Projects whose slug starts with this (`gh/acme/`).
    pub slug_prefix: Option<&'a str>,
    /// Projects of this namespace.
    pub namespace: Option<&'a str>,
    pub branch: Option<&'a str>,
    /// Triggered by this user.
    pub actor_id: Option<&'a str>,
    /// Only projects this user was given (members).
    pub member_id: Option<&'a str>,
}

/// Where a page of pipelines starts: after the pipeline with this creation time, id and
/// number, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineCursor {
    pub created_at: i64,
    pub id: String,
    pub number: i64,
}

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

    /// Every project, by slug; only those given to `member` if set.
    pub async fn projects(&self, member: Option<&str>) -> StoreResult<Vec<ProjectRow>> {
        Ok(sqlx::query_as(
            "SELECT id, slug, git_url, namespace FROM projects p
             WHERE $1 IS NULL
                OR EXISTS (SELECT 1 FROM project_members m WHERE m.project_id = p.id AND m.user_id = $1)
             ORDER BY slug",
        )
        .bind(member)
        .fetch_all(&self.pool)
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

    /// A page of pipelines, newest first, after `after`: one project's by number (unique and
    /// only growing, so a page never shifts when pipelines are added), several projects' by
    /// (creation time, id).
    pub async fn list_pipelines(
        &self,
        filter: &PipelineFilter<'_>,
        after: Option<&PipelineCursor>,
        limit: i64,
    ) -> StoreResult<Vec<PipelineRow>> {
        let mut query = sqlx::QueryBuilder::<sqlx::Sqlite>::new(format!(
            "SELECT {PIPELINE_COLUMNS} WHERE 1 = 1"
        ));
        if let Some(project_id) = filter.project_id {
            query.push(" AND p.project_id = ").push_bind(project_id);
        }
        if let Some(prefix) = filter.slug_prefix {
            query
                .push(" AND substr(pr.slug, 1, length(")
                .push_bind(prefix)
                .push(")) = ")
                .push_bind(prefix);
        }
        if let Some(namespace) = filter.namespace {
            query.push(" AND pr.namespace = ").push_bind(namespace);
        }
        if let Some(branch) = filter.branch {
            query.push(" AND p.branch = ").push_bind(branch);
        }
        if let Some(actor) = filter.actor_id {
            query.push(" AND p.actor_id = ").push_bind(actor);
        }
        if let Some(member) = filter.member_id {
            query
                .push(
                    " AND p.project_id IN (SELECT project_id FROM project_members WHERE user_id = ",
                )
                .push_bind(member)
                .push(")");
        }
        let by_number = filter.project_id.is_some();
        if let Some(after) = after {
            if by_number {
                query.push(" AND p.number < ").push_bind(after.number);
            } else {
                query
                    .push(" AND (p.created_at < ")
                    .push_bind(after.created_at)
                    .push(" OR (p.created_at = ")
                    .push_bind(after.created_at)
                    .push(" AND p.id < ")
                    .push_bind(after.id.clone())
                    .push("))");
            }
        }
        query.push(if by_number {
            " ORDER BY p.number DESC"
        } else {
            " ORDER BY p.created_at DESC, p.id DESC"
        });
        query.push(" LIMIT ").push_bind(limit);
        Ok(query.build_query_as().fetch_all(&self.pool).await?)
    }

    /// Pipeline `number` of project `project_id`.
    pub async fn pipeline_by_number(
        &self,
        project_id: &str,
        number: i64,
    ) -> StoreResult<Option<PipelineRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {PIPELINE_COLUMNS} WHERE p.project_id = $1 AND p.number = $2"
        ))
        .bind(project_id)
        .bind(number)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The configuration pipeline `id` ran, if it got as far as reading one.
    pub async fn pipeline_config(&self, id: &str) -> StoreResult<Option<PipelineConfigRow>> {
        Ok(sqlx::query_as(
            "SELECT source, compiled, setup_source, setup_compiled, orbs FROM pipeline_configs
             WHERE pipeline_id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// A setup pipeline continued: what ran so far becomes its setup configuration, and the
    /// continued configuration its source and compiled form.
    pub async fn continue_pipeline_config(
        &self,
        id: &str,
        source: &str,
        compiled: &str,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE pipeline_configs
             SET setup_source = source, setup_compiled = compiled, source = $2, compiled = $3
             WHERE pipeline_id = $1",
        )
        .bind(id)
        .bind(source)
        .bind(compiled)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Workflow `id`, with its pipeline's id, number and actor.
    pub async fn workflow(&self, id: &str) -> StoreResult<Option<(String, String, WorkflowRow)>> {
        let row: Option<WorkflowByIdRow> = sqlx::query_as(
            "SELECT w.id, w.name, p.number AS pipeline_number, pr.slug AS project_slug, w.status,
                    w.created_at, w.stopped_at, p.id AS pipeline_id, p.actor_id
             FROM workflows w JOIN pipelines p ON p.id = w.pipeline_id JOIN projects pr ON pr.id = p.project_id
             WHERE w.id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|row| (row.pipeline_id, row.actor_id, row.workflow)))
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

    /// Records the configuration of pipeline `id`: the file and its compiled form.
    pub async fn set_pipeline_config(
        &mut self,
        id: &str,
        source: &str,
        compiled: &str,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO pipeline_configs (pipeline_id, source, compiled) VALUES ($1, $2, $3)
             ON CONFLICT (pipeline_id) DO UPDATE SET source = $2, compiled = $3",
        )
        .bind(id)
        .bind(source)
        .bind(compiled)
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
