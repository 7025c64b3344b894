//! `store_test_results` (not built yet).

use bosun_protocol::task::StoreTestResultsStep;
use tokio::sync::watch;

use super::{Job, StepResult};
use crate::link::{Control, Lost};

pub async fn execute(
    job: &Job,
    log: u32,
    _step: &StoreTestResultsStep,
    _control: &mut watch::Receiver<Control>,
) -> Result<StepResult, Lost> {
    job.fail(
        log,
        "task-agent: store_test_results is not built yet\n".to_owned(),
    )
    .await
}
