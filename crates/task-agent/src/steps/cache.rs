//! `cache` steps (not built yet).

use bosun_protocol::task::{RestoreCacheStep, SaveCacheStep};
use tokio::sync::watch;

use super::{Job, StepResult};
use crate::link::{Control, Lost};

pub async fn save(
    job: &Job,
    log: u32,
    _step: &SaveCacheStep,
    _control: &mut watch::Receiver<Control>,
) -> Result<StepResult, Lost> {
    job.fail(log, "task-agent: this step is not built yet\n".to_owned())
        .await
}

pub async fn restore(
    job: &Job,
    log: u32,
    _step: &RestoreCacheStep,
    _control: &mut watch::Receiver<Control>,
) -> Result<StepResult, Lost> {
    job.fail(log, "task-agent: this step is not built yet\n".to_owned())
        .await
}
