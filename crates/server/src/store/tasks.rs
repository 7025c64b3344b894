//! Tasks and their lifecycle: queue, claim, lease, steps, finish, cancel; and the statements the
//! scheduler advances workflows with.

use super::rows::{
    Claim, ClaimedTask, FinishedTask, JobSpecRow, Lease, SchedulerJobRow, StepUpdate, TaskTokenRow,
};
use super::status::{JobStatus, PipelineStatus, StepStatus, TaskStatus, WorkflowStatus};
use super::{Store, StoreResult, StoreTx};

/// See [`Store::job_details`].
#[derive(Debug, Clone)]
pub struct JobDetailsRow {
    pub workflow_name: String,
    /// When the job's workflow was made (the job was made with it).
    pub created_at: i64,
    pub project_id: String,
    pub project_slug: String,
    pub parallelism: i64,
    pub started_at: Option<i64>,
    pub stopped_at: Option<i64>,
    /// When its first task was queued.
    pub queued_at: Option<i64>,
    /// Each node's task status, by node.
    pub nodes: Vec<(i64, TaskStatus)>,
}

impl Store {
    /// The task whose token hashes to `hash`.
    pub async fn task_by_token(&self, hash: &str) -> StoreResult<Option<TaskTokenRow>> {
        Ok(
            sqlx::query_as("SELECT id AS task_id, job_id, status FROM tasks WHERE token_hash = $1")
                .bind(hash)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Claims the oldest queued task of the claim's resource class for its runner, unless the
    /// org-wide limit of running tasks is reached; marks its job running and the runner used,
    /// in the same transaction (a crash in between cannot leave a running task's job queued).
    pub async fn claim_task(&self, claim: &Claim<'_>) -> StoreResult<Option<ClaimedTask>> {
        let mut tx = self.pool.begin().await?;
        // One statement, so two runners can never claim the same task; the org-wide concurrency
        // limit counts running tasks, not runners.
        let claimed: Option<ClaimedTask> = sqlx::query_as(
            "UPDATE tasks SET status = $1, token_hash = $2, runner_name = $3, lease_expires = $4, claimed_at = $5
             WHERE id = (SELECT id FROM tasks WHERE status = $6 AND resource_class = $7
                         ORDER BY created_at, id LIMIT 1)
               AND status = $8
               AND (SELECT COUNT(*) FROM tasks WHERE status = $9) < $10
             RETURNING id AS task_id, job_id, created_at",
        )
        .bind(TaskStatus::Running)
        .bind(claim.token_hash)
        .bind(claim.runner_name)
        .bind(claim.lease_expires)
        .bind(claim.now)
        .bind(TaskStatus::Queued)
        .bind(claim.resource_class)
        .bind(TaskStatus::Queued)
        .bind(TaskStatus::Running)
        .bind(claim.max_running.min(i64::MAX as u64) as i64)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(claimed) = claimed else {
            return Ok(None);
        };
        // A parallel job starts with its first node; later claims keep that time.
        sqlx::query(
            "UPDATE jobs SET status = $1, started_at = COALESCE(started_at, $2) WHERE id = $3",
        )
        .bind(JobStatus::Running)
        .bind(claim.now)
        .bind(&claimed.job_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE runners SET last_used = $1 WHERE resource_class = $2 AND name = $3")
            .bind(claim.now)
            .bind(claim.resource_class)
            .bind(claim.runner_name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(claimed))
    }

    /// Extends a running task's lease to `lease_expires`.
    pub async fn renew_lease(&self, task_id: &str, lease_expires: i64) -> StoreResult<Lease> {
        let cancel: Option<bool> = sqlx::query_scalar(
            "UPDATE tasks SET lease_expires = $1 WHERE id = $2 AND status = $3 RETURNING cancel_requested",
        )
        .bind(lease_expires)
        .bind(task_id)
        .bind(TaskStatus::Running)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match cancel {
            Some(cancel_requested) => Lease::Renewed { cancel_requested },
            None => Lease::Ended,
        })
    }

    /// The running tasks whose lease ended before `now`.
    /// Gives every running task a lease until at least `until`; answers how many. At start: a
    /// lease that lapsed while the server itself was down says nothing of the runner.
    pub async fn extend_running_leases(&self, until: i64) -> StoreResult<u64> {
        let updated = sqlx::query(
            "UPDATE tasks SET lease_expires = $2 WHERE status = $1 AND lease_expires < $2",
        )
        .bind(TaskStatus::Running)
        .bind(until)
        .execute(&self.pool)
        .await?;
        Ok(updated.rows_affected())
    }

    pub async fn expired_tasks(&self, now: i64) -> StoreResult<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT id FROM tasks WHERE status = $1 AND lease_expires < $2")
                .bind(TaskStatus::Running)
                .bind(now)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// The stored spec of job `job_id`, with what its task's config needs besides.
    pub async fn job_spec(&self, job_id: &str) -> StoreResult<Option<JobSpecRow>> {
        Ok(
            sqlx::query_as("SELECT spec, pipeline_id, continuation FROM jobs WHERE id = $1")
                .bind(job_id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// How many steps job `job_id` has (0 for no such job). Read on every log chunk and step
    /// event: a column, not the spec.
    pub async fn step_count(&self, job_id: &str) -> StoreResult<u32> {
        let count: Option<i64> = sqlx::query_scalar("SELECT step_count FROM jobs WHERE id = $1")
            .bind(job_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(count.unwrap_or(0).clamp(0, u32::MAX as i64) as u32)
    }

    /// Records a step event (the latest one of a step wins).
    pub async fn record_step(&self, step: &StepUpdate<'_>) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO steps (task_id, idx, name, status, exit_code, duration_ms) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (task_id, idx) DO UPDATE SET
               name = excluded.name, status = excluded.status, exit_code = excluded.exit_code,
               duration_ms = excluded.duration_ms",
        )
        .bind(step.task_id)
        .bind(i64::from(step.index))
        .bind(step.name)
        .bind(step.status)
        .bind(step.exit_code)
        .bind(step.duration_ms.map(|d| d.min(i64::MAX as u64) as i64))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Which node of its job task `task_id` runs (0 for a job without parallelism).
    pub async fn task_node(&self, task_id: &str) -> StoreResult<u32> {
        let node: Option<i64> = sqlx::query_scalar("SELECT node_index FROM tasks WHERE id = $1")
            .bind(task_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(node.unwrap_or(0).clamp(0, i64::from(u32::MAX)) as u32)
    }

    /// The task that runs node `node` of job `job_id` (the latest, should there be several).
    pub async fn node_task(&self, job_id: &str, node: u32) -> StoreResult<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM tasks WHERE job_id = $1 AND node_index = $2
             ORDER BY created_at DESC LIMIT 1",
        )
        .bind(job_id)
        .bind(i64::from(node))
        .fetch_optional(&self.pool)
        .await?)
    }

    /// What CircleCI's job details (`GET /project/{slug}/job/{number}`) say of job `job_id`
    /// besides its row: its workflow's name and creation, its project, and each node's task.
    pub async fn job_details(&self, job_id: &str) -> StoreResult<Option<JobDetailsRow>> {
        /// Workflow name and creation, project id and slug, parallelism, started, stopped.
        type Head = (String, i64, String, String, i64, Option<i64>, Option<i64>);
        let row: Option<Head> = sqlx::query_as(
            "SELECT workflows.name, workflows.created_at, projects.id, projects.slug,
                        jobs.parallelism, jobs.started_at, jobs.stopped_at
                   FROM jobs
                   JOIN workflows ON workflows.id = jobs.workflow_id
                   JOIN pipelines ON pipelines.id = jobs.pipeline_id
                   JOIN projects ON projects.id = pipelines.project_id
                  WHERE jobs.id = $1",
        )
        .bind(job_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some((
            workflow_name,
            created_at,
            project_id,
            project_slug,
            parallelism,
            started_at,
            stopped_at,
        )) = row
        else {
            return Ok(None);
        };
        let nodes: Vec<(i64, TaskStatus, i64)> = sqlx::query_as(
            "SELECT node_index, status, created_at FROM tasks WHERE job_id = $1 ORDER BY node_index",
        )
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(Some(JobDetailsRow {
            workflow_name,
            created_at,
            project_id,
            project_slug,
            parallelism,
            started_at,
            stopped_at,
            queued_at: nodes.iter().map(|(_, _, created)| *created).min(),
            nodes: nodes
                .into_iter()
                .map(|(node, status, _)| (node, status))
                .collect(),
        }))
    }

    /// How many nodes job `job_id` runs as.
    pub async fn job_parallelism(&self, job_id: &str) -> StoreResult<u32> {
        let parallelism: Option<i64> =
            sqlx::query_scalar("SELECT parallelism FROM jobs WHERE id = $1")
                .bind(job_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(parallelism.unwrap_or(1).clamp(1, i64::from(u32::MAX)) as u32)
    }

    /// Whether task `task_id` runs.
    pub async fn task_is_running(&self, task_id: &str) -> StoreResult<bool> {
        let found: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tasks WHERE id = $1 AND status = $2)")
                .bind(task_id)
                .bind(TaskStatus::Running)
                .fetch_one(&self.pool)
                .await?;
        Ok(found)
    }

    /// Whether any task of pipeline `pipeline_id` runs.
    pub async fn pipeline_has_running_task(&self, pipeline_id: &str) -> StoreResult<bool> {
        let found: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM tasks t JOIN jobs j ON j.id = t.job_id
             WHERE j.pipeline_id = $1 AND t.status = $2)",
        )
        .bind(pipeline_id)
        .bind(TaskStatus::Running)
        .fetch_one(&self.pool)
        .await?;
        Ok(found)
    }
}

impl StoreTx {
    /// Adds the queued tasks of job `job_id`, one per node of its `parallelism`, and marks the
    /// job queued. Answers the tasks' ids, by node.
    pub async fn queue_job(
        &mut self,
        job_id: &str,
        resource_class: &str,
        now: i64,
    ) -> StoreResult<Vec<String>> {
        let parallelism: i64 = sqlx::query_scalar("SELECT parallelism FROM jobs WHERE id = $1")
            .bind(job_id)
            .fetch_one(&mut *self.tx)
            .await?;
        let mut ids = Vec::new();
        for node in 0..parallelism.max(1) {
            let task_id = crate::util::new_id();
            sqlx::query(
                "INSERT INTO tasks (id, job_id, resource_class, status, created_at, node_index)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&task_id)
            .bind(job_id)
            .bind(resource_class)
            .bind(TaskStatus::Queued)
            .bind(now)
            .bind(node)
            .execute(&mut *self.tx)
            .await?;
            ids.push(task_id);
        }
        sqlx::query("UPDATE jobs SET status = $1 WHERE id = $2")
            .bind(JobStatus::Queued)
            .bind(job_id)
            .execute(&mut *self.tx)
            .await?;
        Ok(ids)
    }

    /// Ends job `job_id` once every one of its nodes ended: `failed` if any node failed, else
    /// the first of `infrastructure_fail`, `canceled` a node ended with, else
    /// `success`; its message is the first failing node's (prefixed with the node when the job
    /// has several). Answers the job's workflow when the job ended here.
    pub async fn settle_job(&mut self, job_id: &str, now: i64) -> StoreResult<Option<String>> {
        let nodes: Vec<(TaskStatus, Option<String>, i64)> = sqlx::query_as(
            "SELECT status, message, node_index FROM tasks WHERE job_id = $1 ORDER BY node_index",
        )
        .bind(job_id)
        .fetch_all(&mut *self.tx)
        .await?;
        if nodes.is_empty()
            || nodes
                .iter()
                .any(|(status, _, _)| matches!(status, TaskStatus::Queued | TaskStatus::Running))
        {
            return Ok(None);
        }
        let worst = [
            TaskStatus::Failed,
            TaskStatus::InfrastructureFail,
            TaskStatus::Canceled,
        ]
        .into_iter()
        .find(|worst| nodes.iter().any(|(status, _, _)| status == worst))
        .unwrap_or(TaskStatus::Success);
        let several = nodes.len() > 1;
        let message = nodes
            .iter()
            .find(|(status, message, _)| *status == worst && message.is_some())
            .and_then(|(_, message, node)| {
                message.as_ref().map(|message| {
                    if several {
                        format!("node {node}: {message}")
                    } else {
                        message.clone()
                    }
                })
            });
        Ok(sqlx::query_scalar(
            "UPDATE jobs SET status = $1, stopped_at = $2, message = $3
             WHERE id = $4 AND status IN ($5, $6) RETURNING workflow_id",
        )
        .bind(worst.job_status())
        .bind(now)
        .bind(message)
        .bind(job_id)
        .bind(JobStatus::Queued)
        .bind(JobStatus::Running)
        .fetch_optional(&mut *self.tx)
        .await?)
    }

    /// Cancels the nodes of job `job_id` that have not started; answers how many.
    pub async fn cancel_queued_nodes(&mut self, job_id: &str, now: i64) -> StoreResult<u64> {
        Ok(sqlx::query(
            "UPDATE tasks SET status = $1, finished_at = $2, message = 'canceled before it ran'
             WHERE job_id = $3 AND status = $4",
        )
        .bind(TaskStatus::Canceled)
        .bind(now)
        .bind(job_id)
        .bind(TaskStatus::Queued)
        .execute(&mut *self.tx)
        .await?
        .rows_affected())
    }

    /// Ends running task `task_id` with `status` and `message`, and its steps still marked
    /// running (as `step_status`); ends its job too when it was the job's last running node.
    /// `None` if the task did not run: someone else (the lease reaper, a retry) ended it first.
    pub async fn finish_task(
        &mut self,
        task_id: &str,
        status: TaskStatus,
        step_status: StepStatus,
        message: Option<&str>,
        now: i64,
    ) -> StoreResult<Option<FinishedTask>> {
        let job_id: Option<String> = sqlx::query_scalar(
            "UPDATE tasks SET status = $1, finished_at = $2, lease_expires = NULL, message = $3
             WHERE id = $4 AND status = $5
             RETURNING job_id",
        )
        .bind(status)
        .bind(now)
        .bind(message)
        .bind(task_id)
        .bind(TaskStatus::Running)
        .fetch_optional(&mut *self.tx)
        .await?;
        let Some(job_id) = job_id else {
            return Ok(None);
        };
        sqlx::query("UPDATE steps SET status = $1 WHERE task_id = $2 AND status = $3")
            .bind(step_status)
            .bind(task_id)
            .bind(StepStatus::Running)
            .execute(&mut *self.tx)
            .await?;
        let workflow_id = self.settle_job(&job_id, now).await?;
        Ok(Some(FinishedTask {
            job_id,
            workflow_id,
        }))
    }

    /// Cancels job `job_id` if it has not started: its queued task and the job itself end
    /// `canceled`. Answers the job's workflow, or `None` if the job was not waiting.
    pub async fn cancel_waiting_job(
        &mut self,
        job_id: &str,
        now: i64,
    ) -> StoreResult<Option<String>> {
        sqlx::query(
            "UPDATE tasks SET status = $1, finished_at = $2 WHERE job_id = $3 AND status = $4",
        )
        .bind(TaskStatus::Canceled)
        .bind(now)
        .bind(job_id)
        .bind(TaskStatus::Queued)
        .execute(&mut *self.tx)
        .await?;
        Ok(sqlx::query_scalar(
            "UPDATE jobs SET status = $1, stopped_at = $2, message = 'canceled before it ran'
             WHERE id = $3 AND status IN ($4, $5)
             RETURNING workflow_id",
        )
        .bind(JobStatus::Canceled)
        .bind(now)
        .bind(job_id)
        .bind(JobStatus::Blocked)
        .bind(JobStatus::Queued)
        .fetch_optional(&mut *self.tx)
        .await?)
    }

    /// Asks the running tasks of job `job_id` to cancel; answers how many there were.
    pub async fn request_cancel(&mut self, job_id: &str) -> StoreResult<u64> {
        Ok(
            sqlx::query("UPDATE tasks SET cancel_requested = 1 WHERE job_id = $1 AND status = $2")
                .bind(job_id)
                .bind(TaskStatus::Running)
                .execute(&mut *self.tx)
                .await?
                .rows_affected(),
        )
    }

    /// The jobs of workflow `workflow_id`, in order.
    pub async fn workflow_jobs(&mut self, workflow_id: &str) -> StoreResult<Vec<SchedulerJobRow>> {
        Ok(sqlx::query_as(
            "SELECT id, name, status, requires, resource_class, contexts, step_count FROM jobs
             WHERE workflow_id = $1 ORDER BY position",
        )
        .bind(workflow_id)
        .fetch_all(&mut *self.tx)
        .await?)
    }

    /// Ends a `type: no-op` job as a success without running it: its requirements succeeded.
    pub async fn succeed_no_op_job(&mut self, job_id: &str, now: i64) -> StoreResult<()> {
        sqlx::query(
            "UPDATE jobs SET status = $1, started_at = $2, stopped_at = $2
             WHERE id = $3 AND status = 'blocked'",
        )
        .bind(JobStatus::Success)
        .bind(now)
        .bind(job_id)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Marks job `job_id` `not_run`: a requirement failed.
    pub async fn mark_not_run(&mut self, job_id: &str, now: i64) -> StoreResult<()> {
        sqlx::query("UPDATE jobs SET status = $1, stopped_at = $2 WHERE id = $3")
            .bind(JobStatus::NotRun)
            .bind(now)
            .bind(job_id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Ends workflow `workflow_id` with `status`; answers its pipeline.
    pub async fn end_workflow(
        &mut self,
        workflow_id: &str,
        status: WorkflowStatus,
        now: i64,
    ) -> StoreResult<String> {
        Ok(sqlx::query_scalar(
            "UPDATE workflows SET status = $1, stopped_at = $2 WHERE id = $3 RETURNING pipeline_id",
        )
        .bind(status)
        .bind(now)
        .bind(workflow_id)
        .fetch_one(&mut *self.tx)
        .await?)
    }

    /// The statuses of pipeline `pipeline_id`'s workflows.
    pub async fn workflow_statuses(
        &mut self,
        pipeline_id: &str,
    ) -> StoreResult<Vec<WorkflowStatus>> {
        Ok(
            sqlx::query_scalar("SELECT status FROM workflows WHERE pipeline_id = $1")
                .bind(pipeline_id)
                .fetch_all(&mut *self.tx)
                .await?,
        )
    }

    /// Sets pipeline `pipeline_id`'s status.
    pub async fn set_pipeline_status(
        &mut self,
        pipeline_id: &str,
        status: PipelineStatus,
    ) -> StoreResult<()> {
        sqlx::query("UPDATE pipelines SET status = $1 WHERE id = $2")
            .bind(status)
            .bind(pipeline_id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }
}
