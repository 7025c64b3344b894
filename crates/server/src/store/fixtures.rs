//! Rows for tests: a project, workflows of jobs, tasks with known tokens, without going through
//! triggers and claims.

use std::collections::HashMap;

use super::Store;
use super::rows::{NewJob, NewPipeline, ProjectRow};
use super::status::{PipelineState, PipelineStatus, TaskStatus};
use crate::util::new_id;

/// A workflow made by [`workflow`]: its id and each job's id by name.
pub(crate) struct Workflow {
    pub id: String,
    pub jobs: HashMap<String, String>,
}

/// Creates project `slug`; answers its id.
pub(crate) async fn project(store: &Store, slug: &str) -> String {
    let id = new_id();
    let row = ProjectRow {
        id: id.clone(),
        slug: slug.to_owned(),
        git_url: "/dev/null".into(),
        namespace: "acme".into(),
    };
    assert!(store.create_project(&row, 1).await.unwrap());
    id
}

/// A pipeline of project `project_id` with one workflow of `jobs` (name, requires), all blocked.
pub(crate) async fn workflow(
    store: &Store,
    project_id: &str,
    jobs: &[(&str, &[&str])],
) -> Workflow {
    let pipeline_id = new_id();
    let workflow_id = new_id();
    let mut tx = store.begin().await.unwrap();
    tx.insert_pipeline(&NewPipeline {
        id: &pipeline_id,
        project_id,
        number: 1,
        branch: Some("main"),
        tag: None,
        revision: "abc",
        state: PipelineState::Created,
        status: PipelineStatus::Running,
        errors: "[]",
        created_at: 1,
        trigger_type: "api",
        actor_id: crate::store::BOOTSTRAP_ADMIN_ID,
    })
    .await
    .unwrap();
    tx.insert_workflow(&workflow_id, &pipeline_id, "build", 0, 1)
        .await
        .unwrap();
    let mut ids = HashMap::new();
    for (position, (name, requires)) in jobs.iter().enumerate() {
        let id = new_id();
        tx.insert_job(&NewJob {
            id: &id,
            workflow_id: &workflow_id,
            pipeline_id: &pipeline_id,
            name,
            number: position as i64 + 1,
            position: position as i64,
            resource_class: "acme/linux",
            requires: &serde_json::to_string(requires).unwrap(),
            spec: "{}",
            step_count: 1,
            continuation: false,
            parallelism: 1,
            contexts: "[]",
        })
        .await
        .unwrap();
        ids.insert(name.to_string(), id);
    }
    tx.commit().await.unwrap();
    Workflow {
        id: workflow_id,
        jobs: ids,
    }
}

/// A task of job `job_id` in `status` whose token hashes to `token_hash`; answers its id.
pub(crate) async fn task(
    store: &Store,
    job_id: &str,
    status: TaskStatus,
    token_hash: &str,
) -> String {
    let id = new_id();
    sqlx::query(
        "INSERT INTO tasks (id, job_id, resource_class, status, token_hash, created_at)
         VALUES ($1, $2, 'acme/linux', $3, $4, 1)",
    )
    .bind(&id)
    .bind(job_id)
    .bind(status)
    .bind(token_hash)
    .execute(&store.pool)
    .await
    .unwrap();
    id
}

/// Sets task `task_id`'s status.
pub(crate) async fn set_task_status(store: &Store, task_id: &str, status: TaskStatus) {
    sqlx::query("UPDATE tasks SET status = $1 WHERE id = $2")
        .bind(status)
        .bind(task_id)
        .execute(&store.pool)
        .await
        .unwrap();
}

/// How many rows `table` (one of the server's tables) has.
pub(crate) async fn count(store: &Store, table: &str) -> i64 {
    assert!(
        ["caches", "workspace_layers", "artifacts"].contains(&table),
        "{table}"
    );
    sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(&store.pool)
        .await
        .unwrap()
}
