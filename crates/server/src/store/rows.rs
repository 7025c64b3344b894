//! Rows as the store returns them: named fields, typed statuses. Times are unix milliseconds.

use super::status::{
    JobStatus, PipelineState, PipelineStatus, StepStatus, TaskStatus, WorkflowStatus,
};

/// A resource class (`namespace/name`).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ResourceClassRow {
    pub id: String,
    pub name: String,
    pub description: String,
}

/// A runner token, without its hash.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RunnerTokenRow {
    pub id: String,
    pub resource_class: String,
    pub nickname: String,
    pub created_at: i64,
}

/// A runner instance, as claiming registered it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RunnerRow {
    pub resource_class: String,
    pub hostname: String,
    pub name: String,
    pub ip: String,
    pub version: String,
    pub first_connected: i64,
    pub last_connected: i64,
    pub last_used: Option<i64>,
    pub running: i64,
    pub capacity: i64,
    pub draining: bool,
}

/// What a claiming runner tells about itself.
#[derive(Debug, Clone)]
pub struct RunnerSeen<'a> {
    pub resource_class: &'a str,
    pub name: &'a str,
    pub hostname: &'a str,
    pub ip: &'a str,
    pub version: &'a str,
    /// Tasks it runs now, of at most `capacity` at once.
    pub running: i64,
    pub capacity: i64,
    pub draining: bool,
    pub now: i64,
}

/// What [`super::Store::delete_resource_class`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResourceClassDeletion {
    Deleted,
    NotFound,
    /// Not deleted: the class still has tokens and the deletion was not forced.
    HasTokens {
        name: String,
        tokens: i64,
    },
}

/// The task a task token belongs to.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TaskTokenRow {
    pub task_id: String,
    pub job_id: String,
    pub status: TaskStatus,
}

/// A claim to try: the oldest queued task of `resource_class` becomes `runner_name`'s, unless
/// `max_running` tasks already run.
#[derive(Debug, Clone)]
pub struct Claim<'a> {
    pub resource_class: &'a str,
    pub runner_name: &'a str,
    pub token_hash: &'a str,
    pub lease_expires: i64,
    pub max_running: u64,
    pub now: i64,
}

/// A task a claim won.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedTask {
    pub task_id: String,
    pub job_id: String,
    /// When the task was queued.
    pub created_at: i64,
}

/// What renewing a task's lease found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// The task runs and its lease was extended; someone may have asked it to cancel.
    Renewed { cancel_requested: bool },
    /// The task does not run (any more): nothing was renewed.
    Ended,
}

/// What a task needs to build its config.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobSpecRow {
    pub spec: String,
    pub pipeline_id: String,
    pub continuation: bool,
}

/// A step event to record.
#[derive(Debug, Clone)]
pub struct StepUpdate<'a> {
    pub task_id: &'a str,
    pub index: u32,
    pub name: &'a str,
    pub status: StepStatus,
    pub exit_code: Option<i32>,
    pub duration_ms: Option<u64>,
}

/// A job of a workflow, as the scheduler sees it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SchedulerJobRow {
    pub id: String,
    pub name: String,
    pub status: JobStatus,
    /// JSON list of job names.
    pub requires: String,
    pub resource_class: String,
    /// JSON list of the context names the job uses.
    pub contexts: String,
    /// 0 for a `type: no-op` job (every other job has a step).
    pub step_count: i64,
}

/// The task a finished task's result was recorded for.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FinishedTask {
    pub job_id: String,
    /// The job's workflow, when this task was the job's last node to end (the job ended).
    pub workflow_id: Option<String>,
}

/// A project.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProjectRow {
    pub id: String,
    pub slug: String,
    pub git_url: String,
    pub namespace: String,
}

/// A pipeline to insert.
#[derive(Debug, Clone)]
pub struct NewPipeline<'a> {
    pub id: &'a str,
    pub project_id: &'a str,
    pub number: i64,
    pub branch: Option<&'a str>,
    pub tag: Option<&'a str>,
    pub revision: &'a str,
    pub state: PipelineState,
    pub status: PipelineStatus,
    /// JSON list of `{type, message}`.
    pub errors: &'a str,
    pub created_at: i64,
    /// CircleCI's `trigger.type`: `api`, `webhook`, `explicit`, `scheduled_pipeline`.
    pub trigger_type: &'a str,
    /// The user who triggered it (`trigger.actor`, workflows' `started_by`).
    pub actor_id: &'a str,
}

/// A pipeline with its project's slug and git URL.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PipelineRow {
    pub id: String,
    pub number: i64,
    pub project_slug: String,
    pub git_url: String,
    pub state: PipelineState,
    pub status: PipelineStatus,
    /// JSON list of `{type, message}`.
    pub errors: String,
    pub branch: Option<String>,
    pub tag: Option<String>,
    pub revision: String,
    pub created_at: i64,
    pub trigger_type: String,
    pub actor_id: String,
    /// The actor's login; empty if the user was deleted since.
    pub actor_login: String,
    /// When a workflow of it last changed (created or stopped).
    pub updated_at: Option<i64>,
}

/// The configuration a pipeline ran.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PipelineConfigRow {
    pub source: String,
    pub compiled: String,
    pub setup_source: Option<String>,
    pub setup_compiled: Option<String>,
    /// JSON list of the orbs it resolved ([`bosun_api::ResolvedOrbRef`]).
    pub orbs: String,
}

/// A workflow looked up by id, with its pipeline.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WorkflowByIdRow {
    #[sqlx(flatten)]
    pub workflow: WorkflowRow,
    pub pipeline_id: String,
    pub actor_id: String,
}

/// A workflow with its pipeline's number and project's slug.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WorkflowRow {
    pub id: String,
    pub name: String,
    pub pipeline_number: i64,
    pub project_slug: String,
    pub status: WorkflowStatus,
    pub created_at: i64,
    pub stopped_at: Option<i64>,
}

/// A job to insert, `blocked` until the scheduler queues it.
#[derive(Debug, Clone)]
pub struct NewJob<'a> {
    pub id: &'a str,
    pub workflow_id: &'a str,
    pub pipeline_id: &'a str,
    pub name: &'a str,
    pub number: i64,
    pub position: i64,
    pub resource_class: &'a str,
    /// JSON list of job names.
    pub requires: &'a str,
    /// The task spec, JSON.
    pub spec: &'a str,
    /// How many steps the spec has (read on every log chunk and step event).
    pub step_count: i64,
    pub continuation: bool,
    /// `parallelism`: how many tasks (nodes) the job runs as.
    pub parallelism: i64,
    /// JSON list of the context names the job uses.
    pub contexts: &'a str,
}

/// A job of a workflow's job list.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobListRow {
    pub id: String,
    pub name: String,
    pub number: i64,
    pub status: JobStatus,
    pub started_at: Option<i64>,
    pub stopped_at: Option<i64>,
    /// JSON list of job names.
    pub requires: String,
}

/// One job in detail.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    pub id: String,
    pub name: String,
    pub number: i64,
    pub status: JobStatus,
    pub pipeline_id: String,
    pub workflow_id: String,
    pub resource_class: String,
    pub message: Option<String>,
}

/// A job as API v1.1 lists it (a "build"), with its pipeline's git facts.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BuildRow {
    pub id: String,
    pub number: i64,
    pub name: String,
    pub status: JobStatus,
    pub started_at: Option<i64>,
    pub stopped_at: Option<i64>,
    pub workflow_id: String,
    pub workflow_name: String,
    /// When the workflow was made: the job was queued (or blocked) from then.
    pub created_at: i64,
    pub revision: String,
    pub branch: Option<String>,
    pub tag: Option<String>,
    pub trigger_type: String,
    /// The login of who triggered the pipeline.
    pub actor: String,
    pub slug: String,
    pub git_url: String,
}

/// One step of a task.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StepRow {
    pub idx: i64,
    pub name: String,
    pub status: StepStatus,
    pub exit_code: Option<i32>,
    pub duration_ms: Option<i64>,
}

/// A continuation key's row (found by its hash).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ContinuationRow {
    pub pipeline_id: String,
    /// The task the key was given to; `None` for keys from before keys were per task.
    pub task_id: Option<String>,
}

/// A user.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    /// A UUID, as CircleCI's user ids are.
    pub id: String,
    pub login: String,
    pub name: String,
    pub role: super::status::Role,
    pub created_at: i64,
}

/// A personal API token, without its hash.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserTokenRow {
    pub id: String,
    pub user_id: String,
    /// The owner's login.
    pub login: String,
    pub label: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
}
