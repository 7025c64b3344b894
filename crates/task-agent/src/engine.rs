//! The step loop.
//!
//! For each step in order: decide from its `when` whether it runs (`on_success` after no failure,
//! `on_fail` after a failure, `always`), send `StepStarted`, which names the step's log stream
//! (an id the link allocates, not the step's index), run it, send `StepFinished`. A skipped step is still started and finished (status
//! `skipped`) so the server records it. A canceled step ends the loop: the remaining steps are not
//! started. Background steps run in their own tasks and send their own `StepFinished` when they
//! end; when the loop is over they are stopped (SIGTERM, grace, SIGKILL) and awaited. Then every
//! step's process group is swept, what `add_ssh_keys` installed is removed and `TaskFinished`
//! goes out.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use bosun_protocol::task::{RunStep, Step, TaskSpec, When};
use bosun_protocol::{BlobKind, Message, StepStatus, TaskStatus};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::link::{Control, Fetched, Lost, Outbox};
use crate::process::BACKGROUND_KILL_GRACE;
use crate::steps::{
    Job, StepResult, artifacts, cache, checkout, run, ssh_keys, test_results, transfer, workspace,
};

/// A background step still (maybe) running.
struct Background {
    index: u32,
    stop: watch::Sender<Control>,
    handle: JoinHandle<Result<StepStatus, Lost>>,
}

#[derive(Default)]
struct Progress {
    failed: bool,
    /// A step ran `circleci-agent step halt`: every later step is skipped.
    halted: bool,
    canceled: bool,
    background: Vec<Background>,
}

/// Runs every step of `task` and sends `TaskFinished`. `Err(Lost)` when the launch-agent went away
/// (every step process has been killed by then).
pub async fn run_task(
    task: TaskSpec,
    task_dir: PathBuf,
    scripts_dir: PathBuf,
    out: Outbox,
    mut control: watch::Receiver<Control>,
    kill_grace: std::time::Duration,
) -> Result<TaskStatus, Lost> {
    let job = Arc::new(Job::new(task, task_dir, scripts_dir, out, kill_grace));
    if let Err(err) = std::fs::create_dir_all(&job.working_dir) {
        // Each step reports it in its own log when it needs the directory.
        tracing::warn!(dir = %job.working_dir.display(), %err, "cannot create the working directory");
    }
    // Before any byte of any log: the task's secrets are masked from the first step on.
    match job.out.masks().add_task_secrets(&job.task) {
        Ok(count) => tracing::info!(secrets = count, "secrets masked in the logs"),
        Err(err) => {
            // Fail closed: a task whose secrets cannot be masked runs nothing.
            tracing::error!(%err, "cannot mask the task's secrets; no step runs");
            job.out
                .message(Message::TaskFinished {
                    status: TaskStatus::Failed,
                })
                .await?;
            return Ok(TaskStatus::Failed);
        }
    }
    let mut mask_socket = None;
    match job.prepare_dirs() {
        Ok(()) => match crate::runtime_mask::listen(&job.task_data, Arc::clone(job.out.masks())) {
            Ok(handle) => mask_socket = Some(handle),
            // Only `circleci-agent mask` is missing (it says so).
            Err(err) => tracing::warn!(%err, "cannot listen for `circleci-agent mask`"),
        },
        // The steps still run; only `circleci` and `step halt` are missing.
        Err(err) => tracing::warn!(%err, "cannot prepare the circleci CLI's directories"),
    }

    if job.task.parallel_total > 1 {
        fetch_timings(&job, &mut control).await?;
    }

    let mut progress = Progress::default();
    let outcome = run_steps(&job, &mut control, &mut progress).await;

    // Stop the background steps the way the foreground ended.
    let stop = match (&outcome, control.borrow().clone()) {
        (Err(Lost), _) | (_, Control::Lost) => Control::Lost,
        (Ok(()), cancel @ Control::Cancel { .. }) => {
            // Canceled during the last step or after it: the task reports the cancel.
            progress.canceled = true;
            cancel
        }
        (Ok(()), _) => Control::Finish {
            grace: BACKGROUND_KILL_GRACE,
        },
    };
    for background in &progress.background {
        background.stop.send_replace(stop.clone());
    }
    let mut lost = outcome.is_err();
    for background in progress.background.drain(..) {
        match background.handle.await {
            Ok(Ok(StepStatus::Failed)) => progress.failed = true,
            Ok(Ok(_)) => {}
            Ok(Err(Lost)) => lost = true,
            Err(err) => {
                tracing::error!(step = background.index, %err, "background step task failed");
                progress.failed = true;
            }
        }
    }
    // Containment: what the steps left behind in their process groups does not outlive the task.
    job.sweep();
    // After the sweep, so no step process still uses them; also after failed or canceled steps
    // and when the launch-agent is gone.
    job.remove_ssh_keys();
    if let Some(handle) = mask_socket {
        handle.abort();
    }
    if lost {
        return Err(Lost);
    }

    let status = if progress.canceled {
        TaskStatus::Canceled
    } else if progress.failed {
        TaskStatus::Failed
    } else {
        TaskStatus::Success
    };
    job.out.message(Message::TaskFinished { status }).await?;
    Ok(status)
}

async fn run_steps(
    job: &Arc<Job>,
    control: &mut watch::Receiver<Control>,
    progress: &mut Progress,
) -> Result<(), Lost> {
    for (index, step) in (0u32..).zip(&job.task.steps) {
        let state = control.borrow_and_update().clone();
        match state {
            Control::Run => {}
            Control::Lost => return Err(Lost),
            Control::Cancel { .. } | Control::Finish { .. } => {
                progress.canceled = true;
                return Ok(());
            }
        }
        // After `step halt` nothing runs, not even `when: always` steps (CircleCI's rule).
        let runs = !progress.halted
            && match step.when() {
                When::OnSuccess => !progress.failed,
                When::OnFail => progress.failed,
                When::Always => true,
            };
        let log = job.out.step_started(index, step.name().to_owned()).await?;
        let started = Instant::now();
        if !runs {
            let skipped = StepResult {
                status: StepStatus::Skipped,
                exit_code: None,
            };
            finish(&job.out, index, skipped, started).await?;
            continue;
        }
        let result = match step {
            Step::Run(step) if step.background => {
                progress
                    .background
                    .push(start_background(job, index, log, step.clone()));
                continue;
            }
            Step::Run(step) => run::execute(job, index, log, step, control).await?,
            Step::Checkout(step) => checkout::execute(job, log, step, control).await?,
            Step::StoreArtifacts(step) => artifacts::execute(job, log, step, control).await?,
            Step::SaveCache(step) => cache::save(job, log, step, control).await?,
            Step::RestoreCache(step) => cache::restore(job, log, step, control).await?,
            Step::PersistToWorkspace(step) => workspace::persist(job, log, step, control).await?,
            Step::AttachWorkspace(step) => workspace::attach(job, log, step, control).await?,
            Step::StoreTestResults(step) => test_results::execute(job, log, step, control).await?,
            Step::AddSshKeys(step) => ssh_keys::execute(job, log, step, control).await?,
        };
        if job.halted() && !progress.halted {
            progress.halted = true;
            tracing::info!(
                step = index,
                "the job was halted by `circleci-agent step halt`"
            );
            job.out
                .text(
                    log,
                    "task-agent: the job was halted (circleci-agent step halt); \
                     the remaining steps do not run\n",
                )
                .await?;
        }
        finish(&job.out, index, result, started).await?;
        match result.status {
            StepStatus::Failed => progress.failed = true,
            StepStatus::Canceled => {
                progress.canceled = true;
                return Ok(());
            }
            StepStatus::Success | StepStatus::Skipped => {}
        }
    }
    Ok(())
}

/// Most bytes of timings a task keeps (the test results of the job's last good run).
const MAX_TIMINGS_BYTES: usize = 64 << 20;

/// Downloads the timings of the job's last successful run (its stored test results) to the file
/// `circleci tests split --split-by=timings` reads, before the first step; without any, the
/// split falls back to names and says so. Nothing here fails the task: a missing or unreadable
/// answer only leaves the file out.
async fn fetch_timings(job: &Job, control: &mut watch::Receiver<Control>) -> Result<(), Lost> {
    let download = match transfer::ask(&job.out, BlobKind::TestResults, Vec::new(), control).await?
    {
        Some(Fetched::Found(download)) => download,
        Some(Fetched::NotFound) | None => return Ok(()),
    };
    let bytes = match transfer::read_small(download, MAX_TIMINGS_BYTES).await? {
        Ok(bytes) => bytes,
        Err(message) => {
            tracing::warn!("timings were not received: {message}");
            return Ok(());
        }
    };
    let path = job.task_data.join(crate::cli::TASK_DATA_TIMINGS);
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(&path, &bytes));
    if let Err(err) = written {
        tracing::warn!(path = %path.display(), %err, "cannot keep the timings");
    }
    Ok(())
}

fn start_background(job: &Arc<Job>, index: u32, log: u32, step: RunStep) -> Background {
    let (stop, mut control) = watch::channel(Control::Run);
    let job = Arc::clone(job);
    let handle = tokio::spawn(async move {
        let started = Instant::now();
        let result = run::execute(&job, index, log, &step, &mut control).await?;
        finish(&job.out, index, result, started).await?;
        Ok(result.status)
    });
    Background {
        index,
        stop,
        handle,
    }
}

async fn finish(
    out: &Outbox,
    index: u32,
    result: StepResult,
    started: Instant,
) -> Result<(), Lost> {
    out.message(Message::StepFinished {
        step: index,
        status: result.status,
        exit_code: result.exit_code,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
    .await
}
