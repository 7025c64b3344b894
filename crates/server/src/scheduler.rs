//! Moves pipelines forward: queues jobs whose `requires` succeeded, marks the rest `not_run`,
//! rolls job results up into workflow and pipeline status, and ends tasks whose lease lapsed.
//!
//! The rules live here; the statements are the store's ([`StoreTx`]), so the same rules run on
//! any backend.

use std::collections::HashMap;
use std::time::Duration;

use crate::State;
use crate::error::{AppError, AppResult};
use crate::store::{
    JobStatus, Outcome, PipelineStatus, StepStatus, Store, StoreResult, StoreTx, TaskStatus,
};
use crate::util::now_ms;

/// Records a task's result, then advances its workflow.
pub async fn finish_task(
    state: &State,
    task_id: &str,
    status: TaskStatus,
    message: Option<&str>,
) -> AppResult<()> {
    let queued = finish_task_in(&state.store, task_id, status, message).await?;
    if queued {
        state.queued.wake();
    }
    Ok(())
}

/// [`finish_task`] without the wake-up: answers whether a job was queued.
async fn finish_task_in(
    store: &Store,
    task_id: &str,
    status: TaskStatus,
    message: Option<&str>,
) -> StoreResult<bool> {
    let now = now_ms();
    let mut tx = store.begin().await?;
    // A step still marked running when its task ended did not finish.
    let step_status = if status == TaskStatus::Canceled {
        StepStatus::Canceled
    } else {
        StepStatus::Failed
    };
    let Some(finished) = tx
        .finish_task(task_id, status, step_status, message, now)
        .await?
    else {
        // Someone else (the lease reaper, a retry) finished it first.
        return Ok(false);
    };
    // The job's other nodes may still run: then its workflow does not move yet.
    let queued = match &finished.workflow_id {
        Some(workflow_id) => advance_workflow(&mut tx, workflow_id).await?,
        None => false,
    };
    tx.commit().await?;
    tracing::info!(task = task_id, job = %finished.job_id, status = status.as_str(), "task finished");
    Ok(queued)
}

/// What [`settle`] decided for one blocked job.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Decision {
    Queue,
    NotRun,
}

/// The scheduling rule: a blocked job is queued once every job it requires succeeded, and is
/// `not_run` once any of them failed, was canceled or did not run (a requirement naming no job
/// of the workflow counts as not run). Settles transitively: `jobs` maps each job's name to its
/// status and requirements, and is updated in place. Answers the decisions, in settling order.
fn settle(
    order: &[String],
    jobs: &mut HashMap<String, (JobStatus, Vec<String>)>,
) -> Vec<(String, Decision)> {
    let mut decisions = Vec::new();
    // Each pass settles at least one blocked job or stops; jobs form a DAG (checked at compile).
    loop {
        let mut changed = false;
        for name in order {
            let Some((JobStatus::Blocked, requires)) = jobs.get(name) else {
                continue;
            };
            let states: Vec<JobStatus> = requires
                .iter()
                .map(|r| jobs.get(r).map_or(JobStatus::NotRun, |(status, _)| *status))
                .collect();
            let decision = if states
                .iter()
                .any(|s| matches!(s.outcome(), Some(Outcome::Failed | Outcome::Canceled)))
            {
                Decision::NotRun
            } else if states.iter().all(|s| *s == JobStatus::Success) {
                Decision::Queue
            } else {
                continue;
            };
            let status = match decision {
                Decision::Queue => JobStatus::Queued,
                Decision::NotRun => JobStatus::NotRun,
            };
            if let Some(entry) = jobs.get_mut(name) {
                entry.0 = status;
            }
            decisions.push((name.clone(), decision));
            changed = true;
        }
        if !changed {
            return decisions;
        }
    }
}

/// Queues the blocked jobs whose requirements all succeeded, marks `not_run` the ones with a
/// failed requirement, and updates the workflow and pipeline status. Returns whether a job was
/// queued.
pub async fn advance_workflow(tx: &mut StoreTx, workflow_id: &str) -> StoreResult<bool> {
    let mut queued_any = false;
    // A job a context refuses fails instead of being queued, and a no-op job succeeds, either
    // of which may settle its dependents: settle again until nothing more ends that way. Each
    // pass ends at least one blocked job, so there are at most as many passes as jobs; the
    // bound only guards that reasoning.
    for _ in 0..MAX_SETTLE_PASSES {
        let (queued, refused) = advance_once(tx, workflow_id).await?;
        queued_any |= queued;
        if !refused {
            return Ok(queued_any);
        }
    }
    tracing::error!(workflow = %workflow_id, "the workflow did not settle in {MAX_SETTLE_PASSES} passes");
    Ok(queued_any)
}

/// More passes than any workflow has jobs.
const MAX_SETTLE_PASSES: usize = 10_000;

/// One pass of [`advance_workflow`]: answers whether a job was queued and whether one was
/// refused by its contexts (failed before it was queued).
async fn advance_once(tx: &mut StoreTx, workflow_id: &str) -> StoreResult<(bool, bool)> {
    let rows = tx.workflow_jobs(workflow_id).await?;
    let order: Vec<String> = rows.iter().map(|row| row.name.clone()).collect();
    let mut jobs: HashMap<String, (JobStatus, Vec<String>)> = rows
        .iter()
        .map(|row| {
            let requires: Vec<String> = serde_json::from_str(&row.requires).unwrap_or_default();
            (row.name.clone(), (row.status, requires))
        })
        .collect();
    let by_name: HashMap<&str, &crate::store::SchedulerJobRow> =
        rows.iter().map(|row| (row.name.as_str(), row)).collect();
    let mut queued_any = false;
    let mut refused_any = false;
    for (name, decision) in settle(&order, &mut jobs) {
        let Some(row) = by_name.get(name.as_str()) else {
            continue;
        };
        match decision {
            Decision::NotRun => tx.mark_not_run(&row.id, now_ms()).await?,
            // A no-op job runs nothing: it succeeds now, which may settle its dependents.
            Decision::Queue if row.step_count == 0 => {
                tx.succeed_no_op_job(&row.id, now_ms()).await?;
                refused_any = true;
            }
            Decision::Queue => {
                let refusal = if row.contexts == "[]" {
                    None
                } else {
                    crate::contexts::check_job(tx, &row.id, &row.name).await?
                };
                if let Some(message) = refusal {
                    tracing::info!(job = %row.id, "{message}");
                    tx.fail_unqueued_job(&row.id, &message, now_ms()).await?;
                    refused_any = true;
                } else {
                    tx.queue_job(&row.id, &row.resource_class, now_ms()).await?;
                    queued_any = true;
                }
            }
        }
    }
    if refused_any {
        // The settled statuses above assumed the refused (or no-op) jobs were queued.
        return Ok((queued_any, true));
    }
    let outcomes: Option<Vec<Outcome>> =
        jobs.values().map(|(status, _)| status.outcome()).collect();
    if let Some(outcomes) = outcomes {
        let status = Outcome::roll_up(outcomes).into();
        let pipeline_id = tx.end_workflow(workflow_id, status, now_ms()).await?;
        rollup_pipeline(tx, &pipeline_id).await?;
    }
    Ok((queued_any, false))
}

/// Sets the pipeline's status once every workflow is final.
pub async fn rollup_pipeline(tx: &mut StoreTx, pipeline_id: &str) -> StoreResult<()> {
    let statuses = tx.workflow_statuses(pipeline_id).await?;
    let outcomes: Option<Vec<Outcome>> = statuses.iter().map(|s| s.outcome()).collect();
    let Some(outcomes) = outcomes else {
        return Ok(());
    };
    let status: PipelineStatus = Outcome::roll_up(outcomes).into();
    tx.set_pipeline_status(pipeline_id, status).await
}

/// Ends running tasks whose lease lapsed (their runner died) as `infrastructure_fail`.
pub async fn reap_expired_leases(state: State) {
    let period = (state.task_lease / 4).clamp(Duration::from_millis(200), Duration::from_secs(5));
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        match reap_once(&state.store, now_ms()).await {
            Ok(true) => state.queued.wake(),
            Ok(false) => {}
            Err(err) => tracing::error!("lease check failed: {err}"),
        }
    }
}

/// Ends the tasks whose lease lapsed before `now`; answers whether a job was queued.
async fn reap_once(store: &Store, now: i64) -> StoreResult<bool> {
    let mut queued = false;
    for id in store.expired_tasks(now).await? {
        tracing::warn!(task = %id, "task lease lapsed: marking it infrastructure_fail");
        match finish_task_in(
            store,
            &id,
            TaskStatus::InfrastructureFail,
            Some("the runner stopped sending heartbeats"),
        )
        .await
        {
            Ok(q) => queued |= q,
            Err(err) => tracing::error!(task = %id, "could not end task: {err}"),
        }
    }
    Ok(queued)
}

/// What [`cancel_job`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The job had not started: it ended `canceled`.
    Canceled,
    /// It runs: its runner was asked to stop.
    Canceling,
    /// It ended in between.
    AlreadyEnded,
}

impl CancelOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            CancelOutcome::Canceled => "canceled",
            CancelOutcome::Canceling => "canceling",
            CancelOutcome::AlreadyEnded => "ended",
        }
    }
}

/// Cancels job `job_id`; returns what happened, for the answer.
pub async fn cancel_job(state: &State, job_id: &str) -> AppResult<&'static str> {
    let (outcome, queued) = cancel_job_in(&state.store, job_id).await?;
    if queued {
        state.queued.wake();
    }
    match outcome {
        CancelOutcome::Canceled => Ok(outcome.as_str()),
        CancelOutcome::Canceling => {
            state.cancels.notify_waiters();
            Ok(outcome.as_str())
        }
        CancelOutcome::AlreadyEnded => Err(AppError::conflict(format!(
            "job {job_id} is not running any more"
        ))),
    }
}

/// [`cancel_job`] without the wake-ups: answers what happened and whether a job was queued.
async fn cancel_job_in(store: &Store, job_id: &str) -> StoreResult<(CancelOutcome, bool)> {
    let now = now_ms();
    let mut tx = store.begin().await?;
    // Not claimed yet: the queued task (if any) and the job end here.
    if let Some(workflow_id) = tx.cancel_waiting_job(job_id, now).await? {
        let queued = advance_workflow(&mut tx, &workflow_id).await?;
        tx.commit().await?;
        return Ok((CancelOutcome::Canceled, queued));
    }
    // Running: its nodes that have not started end here, and the runners of the others are
    // asked, through the heartbeat. A job whose nodes all ended by now ends here.
    let dropped = tx.cancel_queued_nodes(job_id, now).await?;
    let asked = tx.request_cancel(job_id).await?;
    let mut queued = false;
    let mut ended = false;
    if dropped > 0 {
        if let Some(workflow_id) = tx.settle_job(job_id, now).await? {
            queued = advance_workflow(&mut tx, &workflow_id).await?;
            ended = true;
        }
    }
    tx.commit().await?;
    if asked > 0 {
        Ok((CancelOutcome::Canceling, queued))
    } else if ended {
        Ok((CancelOutcome::Canceled, queued))
    } else {
        Ok((CancelOutcome::AlreadyEnded, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{
        Claim, Lease, NewJob, NewPipeline, PipelineState, ProjectRow, WorkflowStatus, test_store,
    };
    use crate::util::new_id;

    const CLASS: &str = "acme/linux";

    /// One pipeline with one workflow of `jobs` (name, requires), advanced once, as a trigger
    /// leaves it. Answers the pipeline's id and each job's id by name.
    async fn pipeline(
        store: &Store,
        jobs: &[(&str, &[&str])],
    ) -> (String, HashMap<String, String>) {
        let project = ProjectRow {
            id: new_id(),
            slug: format!("gh/acme/{}", new_id()),
            git_url: "/dev/null".into(),
            namespace: "acme".into(),
        };
        assert!(store.create_project(&project, 1).await.unwrap());
        let pipeline_id = new_id();
        let workflow_id = new_id();
        let mut tx = store.begin().await.unwrap();
        tx.insert_pipeline(&NewPipeline {
            id: &pipeline_id,
            project_id: &project.id,
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
                resource_class: CLASS,
                requires: &serde_json::to_string(requires).unwrap(),
                spec: "{}",
                step_count: 2,
                continuation: false,
                parallelism: 1,
                contexts: "[]",
            })
            .await
            .unwrap();
            ids.insert(name.to_string(), id);
        }
        advance_workflow(&mut tx, &workflow_id).await.unwrap();
        tx.commit().await.unwrap();
        (pipeline_id, ids)
    }

    fn claim<'a>(runner_name: &'a str, token_hash: &'a str, now: i64) -> Claim<'a> {
        Claim {
            resource_class: CLASS,
            runner_name,
            token_hash,
            lease_expires: now + 1_000,
            max_running: 10,
            now,
        }
    }

    async fn status(store: &Store, job: &str) -> JobStatus {
        store.job_status(job).await.unwrap().unwrap()
    }

    async fn statuses(store: &Store, pipeline_id: &str) -> (WorkflowStatus, PipelineStatus) {
        let workflow = store.workflows(pipeline_id).await.unwrap()[0].status;
        let pipeline = store.pipeline(pipeline_id).await.unwrap().unwrap().status;
        (workflow, pipeline)
    }

    #[test]
    fn settling_queues_jobs_whose_requirements_succeeded_and_skips_the_rest_transitively() {
        let order: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        let graph = |a: JobStatus| -> HashMap<String, (JobStatus, Vec<String>)> {
            [
                ("a", a, vec![]),
                ("b", JobStatus::Blocked, vec!["a".to_owned()]),
                (
                    "c",
                    JobStatus::Blocked,
                    vec!["a".to_owned(), "ghost".to_owned()],
                ),
                (
                    "d",
                    JobStatus::Blocked,
                    vec!["b".to_owned(), "c".to_owned()],
                ),
            ]
            .into_iter()
            .map(|(name, status, requires)| (name.to_owned(), (status, requires)))
            .collect()
        };
        // `c` requires a job the workflow does not have: that one counts as not run, so `c` and
        // `d` are settled at once, while `b` waits for `a`.
        let mut jobs = graph(JobStatus::Running);
        assert_eq!(
            settle(&order, &mut jobs),
            vec![
                ("c".to_owned(), Decision::NotRun),
                ("d".to_owned(), Decision::NotRun),
            ]
        );
        assert_eq!(jobs["b"].0, JobStatus::Blocked);

        let mut jobs = graph(JobStatus::Success);
        assert_eq!(
            settle(&order, &mut jobs),
            vec![
                ("b".to_owned(), Decision::Queue),
                ("c".to_owned(), Decision::NotRun),
                ("d".to_owned(), Decision::NotRun),
            ]
        );

        let mut jobs = graph(JobStatus::Canceled);
        let decided: Vec<Decision> = settle(&order, &mut jobs)
            .into_iter()
            .map(|(_, d)| d)
            .collect();
        assert_eq!(decided, vec![Decision::NotRun; 3]);
        assert_eq!(jobs["d"].0, JobStatus::NotRun);
    }

    #[tokio::test]
    async fn claims_take_the_oldest_task_once_and_respect_the_running_limit() {
        let (store, _dir) = test_store().await;
        // Two pipelines, so their tasks are queued at different times (tasks queued in the same
        // millisecond are taken in id order).
        let (first_pipeline, mut jobs) = pipeline(&store, &[("a", &[])]).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        let (second_pipeline, more) = pipeline(&store, &[("b", &[])]).await;
        jobs.extend(more);
        assert_eq!(status(&store, &jobs["a"]).await, JobStatus::Queued);
        assert_eq!(
            store.count_tasks(CLASS, TaskStatus::Queued).await.unwrap(),
            2
        );

        let mut limited = claim("r1", "hash-1", 10);
        limited.max_running = 0;
        assert!(store.claim_task(&limited).await.unwrap().is_none());
        let first = store
            .claim_task(&claim("r1", "hash-1", 10))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first.job_id, jobs["a"], "the oldest task first");
        assert_eq!(status(&store, &jobs["a"]).await, JobStatus::Running);
        let mut limited = claim("r2", "hash-2", 10);
        limited.max_running = 1;
        assert!(
            store.claim_task(&limited).await.unwrap().is_none(),
            "one runs already"
        );
        let second = store
            .claim_task(&claim("r2", "hash-2", 10))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(second.job_id, jobs["b"]);
        assert!(
            store
                .claim_task(&claim("r3", "hash-3", 10))
                .await
                .unwrap()
                .is_none()
        );

        let by_token = store.task_by_token("hash-2").await.unwrap().unwrap();
        assert_eq!(by_token.task_id, second.task_id);
        assert_eq!(by_token.status, TaskStatus::Running);
        assert_eq!(store.step_count(&jobs["b"]).await.unwrap(), 2);

        for task in [&first.task_id, &second.task_id] {
            finish_task_in(&store, task, TaskStatus::Success, None)
                .await
                .unwrap();
        }
        for pipeline_id in [&first_pipeline, &second_pipeline] {
            assert_eq!(
                statuses(&store, pipeline_id).await,
                (WorkflowStatus::Success, PipelineStatus::Success)
            );
        }
        // A second report of the same task changes nothing.
        let again = finish_task_in(&store, &first.task_id, TaskStatus::Failed, None).await;
        assert!(!again.unwrap());
        assert_eq!(status(&store, &jobs["a"]).await, JobStatus::Success);
    }

    #[tokio::test]
    async fn a_finished_job_queues_its_dependents_and_a_failed_one_skips_them() {
        let (store, _dir) = test_store().await;
        let (pipeline_id, jobs) =
            pipeline(&store, &[("a", &[]), ("b", &["a"]), ("c", &["b"])]).await;
        assert_eq!(status(&store, &jobs["b"]).await, JobStatus::Blocked);
        let a = store
            .claim_task(&claim("r", "h-a", 10))
            .await
            .unwrap()
            .unwrap();
        let queued = finish_task_in(&store, &a.task_id, TaskStatus::Success, None).await;
        assert!(queued.unwrap(), "b was queued");
        assert_eq!(status(&store, &jobs["b"]).await, JobStatus::Queued);

        let b = store
            .claim_task(&claim("r", "h-b", 20))
            .await
            .unwrap()
            .unwrap();
        store
            .record_step(&crate::store::StepUpdate {
                task_id: &b.task_id,
                index: 0,
                name: "build",
                status: StepStatus::Running,
                exit_code: None,
                duration_ms: None,
            })
            .await
            .unwrap();
        finish_task_in(&store, &b.task_id, TaskStatus::Failed, Some("exit 1"))
            .await
            .unwrap();
        assert_eq!(status(&store, &jobs["b"]).await, JobStatus::Failed);
        assert_eq!(status(&store, &jobs["c"]).await, JobStatus::NotRun);
        let steps = store.steps(&b.task_id).await.unwrap();
        assert_eq!(
            steps[0].status,
            StepStatus::Failed,
            "a step left running failed"
        );
        let job = store.job(&jobs["b"]).await.unwrap().unwrap();
        assert_eq!(job.message.as_deref(), Some("exit 1"));
        assert_eq!(
            statuses(&store, &pipeline_id).await,
            (WorkflowStatus::Failed, PipelineStatus::Failed)
        );
    }

    #[tokio::test]
    async fn a_lapsed_lease_ends_the_task_as_infrastructure_fail_and_a_renewed_one_does_not() {
        let (store, _dir) = test_store().await;
        let (pipeline_id, jobs) = pipeline(&store, &[("a", &[]), ("b", &["a"])]).await;
        let a = store
            .claim_task(&claim("r", "h", 10))
            .await
            .unwrap()
            .unwrap();
        // The lease runs until 1010; renewing it moves it to 2000.
        assert!(!reap_once(&store, 500).await.unwrap());
        assert_eq!(
            store.renew_lease(&a.task_id, 2_000).await.unwrap(),
            Lease::Renewed {
                cancel_requested: false
            }
        );
        reap_once(&store, 1_500).await.unwrap();
        assert_eq!(status(&store, &jobs["a"]).await, JobStatus::Running);

        reap_once(&store, 2_001).await.unwrap();
        assert_eq!(
            status(&store, &jobs["a"]).await,
            JobStatus::InfrastructureFail
        );
        assert_eq!(status(&store, &jobs["b"]).await, JobStatus::NotRun);
        assert_eq!(
            store.renew_lease(&a.task_id, 3_000).await.unwrap(),
            Lease::Ended
        );
        let job = store.job(&jobs["a"]).await.unwrap().unwrap();
        assert_eq!(
            job.message.as_deref(),
            Some("the runner stopped sending heartbeats")
        );
        assert_eq!(
            statuses(&store, &pipeline_id).await,
            (WorkflowStatus::Failed, PipelineStatus::Failed)
        );
    }

    #[tokio::test]
    async fn cancel_ends_a_waiting_job_asks_a_running_one_and_refuses_an_ended_one() {
        let (store, _dir) = test_store().await;
        let (pipeline_id, jobs) =
            pipeline(&store, &[("a", &[]), ("b", &[]), ("c", &["a", "b"])]).await;
        let claimed = store
            .claim_task(&claim("r", "h", 10))
            .await
            .unwrap()
            .unwrap();
        // Both roots were queued at once; whichever was claimed runs, the other waits.
        let (running, waiting) = if claimed.job_id == jobs["a"] {
            (&jobs["a"], &jobs["b"])
        } else {
            (&jobs["b"], &jobs["a"])
        };
        assert_eq!(&claimed.job_id, running);

        // The waiting job is queued: it ends at once, and `c`, which requires it, does not run.
        let (outcome, _) = cancel_job_in(&store, waiting).await.unwrap();
        assert_eq!(outcome, CancelOutcome::Canceled);
        assert_eq!(status(&store, waiting).await, JobStatus::Canceled);
        assert_eq!(status(&store, &jobs["c"]).await, JobStatus::NotRun);
        assert_eq!(
            store.count_tasks(CLASS, TaskStatus::Queued).await.unwrap(),
            0
        );

        // The running job's heartbeat learns of the cancel, and its runner reports it canceled.
        let (outcome, _) = cancel_job_in(&store, running).await.unwrap();
        assert_eq!(outcome, CancelOutcome::Canceling);
        assert_eq!(
            store.renew_lease(&claimed.task_id, 500).await.unwrap(),
            Lease::Renewed {
                cancel_requested: true
            }
        );
        finish_task_in(&store, &claimed.task_id, TaskStatus::Canceled, None)
            .await
            .unwrap();
        let (outcome, _) = cancel_job_in(&store, running).await.unwrap();
        assert_eq!(outcome, CancelOutcome::AlreadyEnded);
        assert_eq!(
            statuses(&store, &pipeline_id).await,
            (WorkflowStatus::Canceled, PipelineStatus::Canceled)
        );
    }
}
