//! `workspace` steps (not built yet).

use bosun_protocol::task::{AttachWorkspaceStep, PersistToWorkspaceStep};
use tokio::sync::watch;

use super::{Job, StepResult};
use crate::link::{Control, Lost};

pub async fn persist(
    job: &Job,
    log: u32,
    _step: &PersistToWorkspaceStep,
    _control: &mut watch::Receiver<Control>,
) -> Result<StepResult, Lost> {
    job.fail(log, "task-agent: this step is not built yet\n".to_owned())
        .await
}

pub async fn attach(
    job: &Job,
    log: u32,
    _step: &AttachWorkspaceStep,
    _control: &mut watch::Receiver<Control>,
) -> Result<StepResult, Lost> {
    job.fail(log, "task-agent: this step is not built yet\n".to_owned())
        .await
}
