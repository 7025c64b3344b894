//! `run`: the command goes into a script file, run as `<shell words...> <script>` (CircleCI's
//! way, so shells such as `python3` work), in the step's working directory and environment.

use std::ffi::OsString;
use std::time::Duration;

use bosun_protocol::task::RunStep;
use tokio::sync::watch;

use super::{DEFAULT_NO_OUTPUT_TIMEOUT, DEFAULT_SHELL, Job, StepResult, StepStatus, conclude};
use crate::link::{Control, Lost};
use crate::process::{CommandSpec, spawn, supervise};

/// Runs `step` (index `index` in the task, whose log is stream `log`) to its end.
///
/// Background steps run through the same function, in their own task, with a `control` that the
/// engine moves to [`Control::Finish`] when the job ends.
pub async fn execute(
    job: &Job,
    index: u32,
    log: u32,
    step: &RunStep,
    control: &mut watch::Receiver<Control>,
) -> Result<StepResult, Lost> {
    let dir = job.step_dir(step.working_directory.as_deref());
    if let Err(err) = std::fs::create_dir_all(&dir) {
        return job
            .fail(
                log,
                format!(
                    "task-agent: cannot create the working directory {}: {err}\n",
                    dir.display()
                ),
            )
            .await;
    }
    let script = job.scripts_dir.join(format!("step-{index}.sh"));
    // A new 0600 file in the private scripts directory, whatever the umask: another job must not
    // read it (it may carry secrets pasted into the command).
    if let Err(err) = crate::isolation::write_script(&script, &step.command) {
        return job
            .fail(
                log,
                format!(
                    "task-agent: cannot write the step's script {}: {err}\n",
                    script.display()
                ),
            )
            .await;
    }
    let shell = step
        .shell
        .as_deref()
        .or(job.task.shell.as_deref())
        .filter(|shell| !shell.trim().is_empty())
        .unwrap_or(DEFAULT_SHELL);
    let mut words = shell.split_whitespace();
    let program = words.next().unwrap_or("/bin/bash");
    let mut args: Vec<OsString> = words.map(OsString::from).collect();
    args.push(script.into_os_string());
    let env = job.step_env(&step.environment);

    let timeout = step
        .no_output_timeout_secs
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_NO_OUTPUT_TIMEOUT);
    // `max_auto_reruns`: a failed run runs again, after `auto_rerun_delay`, up to that many
    // times; the step's result is its last run's.
    let mut attempt = 0;
    loop {
        let spec = CommandSpec {
            program,
            args: args.clone(),
            dir: &dir,
            env: &env,
        };
        let process = match spawn(&spec) {
            Ok(process) => process,
            Err(err) => {
                return job
                    .fail(log, format!("task-agent: cannot start `{shell}`: {err}\n"))
                    .await;
            }
        };
        job.track(process.pgid());
        let ended = supervise(process, log, &job.out, timeout, job.kill_grace, control).await;
        let result = conclude(&job.out, log, ended).await?;
        if result.status != StepStatus::Failed || attempt >= step.max_auto_reruns {
            return Ok(result);
        }
        attempt += 1;
        let delay = Duration::from_secs(step.auto_rerun_delay_secs);
        job.out
            .text(
                log,
                format!(
                    "task-agent: rerunning the step (rerun {attempt} of {}){}\n",
                    step.max_auto_reruns,
                    if delay.is_zero() {
                        String::new()
                    } else {
                        format!(" in {}s", delay.as_secs())
                    }
                ),
            )
            .await?;
        if !delay.is_zero() {
            // A cancel during the wait ends the step as canceled rather than after the delay.
            let waited =
                tokio::time::timeout(delay, control.wait_for(|c| !matches!(c, Control::Run)));
            if let Ok(Ok(_)) = waited.await {
                return Ok(StepResult {
                    status: StepStatus::Canceled,
                    exit_code: None,
                });
            }
        }
    }
}
