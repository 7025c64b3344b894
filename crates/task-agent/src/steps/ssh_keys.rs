//! `add_ssh_keys`: the project's additional SSH keys, installed into the job user's `~/.ssh`
//! for this task.

use bosun_protocol::task::AddSshKeysStep;
use tokio::sync::watch;

use super::{Job, StepResult};
use crate::link::{Control, Lost};

/// Installs the keys the step names.
pub async fn execute(
    job: &Job,
    log: u32,
    _step: &AddSshKeysStep,
    _control: &mut watch::Receiver<Control>,
) -> Result<StepResult, Lost> {
    job.fail(
        log,
        "task-agent: add_ssh_keys is not supported yet\n".to_owned(),
    )
    .await
}
