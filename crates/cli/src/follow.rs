//! Following a pipeline live: workflow and job status changes, each step's name and its output as
//! it arrives, and the final status.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use bosun_api::job_status_is_final;

use crate::Failure;
use crate::commands::Ctx;

const POLL: Duration = Duration::from_millis(250);

pub async fn read_log(
    ctx: &Ctx,
    job_id: &str,
    node: u32,
    step: u32,
    offset: u64,
) -> Result<Vec<u8>, Failure> {
    let page = ctx
        .client
        .node_step_log_page(&ctx.auth, job_id, node, step, offset)
        .await?;
    Ok(page.to_vec())
}

/// How a job's node is named in the output: `test`, or `test 2/3` for node 1 of three.
fn node_label(name: &str, node: u32, parallelism: u32) -> String {
    if parallelism > 1 {
        format!("{name} {}/{parallelism}", node + 1)
    } else {
        name.to_owned()
    }
}

#[derive(Default)]
struct StepView {
    offset: u64,
    started: bool,
    finished: bool,
}

#[derive(Default)]
struct JobView {
    status: String,
    /// Steps by node, then by index.
    steps: HashMap<(u32, u32), StepView>,
}

/// Where the last printed bytes came from, so a switch of stream starts on a fresh line.
#[derive(Default)]
struct Printer {
    current: Option<(String, u32, u32)>,
    at_line_start: bool,
}

impl Printer {
    fn line(&mut self, text: &str) {
        let mut out = std::io::stdout().lock();
        if !self.at_line_start {
            let _ = writeln!(out);
        }
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
        self.at_line_start = true;
        self.current = None;
    }

    fn bytes(
        &mut self,
        job: &str,
        node: u32,
        job_name: &str,
        step: u32,
        step_name: &str,
        bytes: &[u8],
    ) {
        if bytes.is_empty() {
            return;
        }
        let stream = (job.to_owned(), node, step);
        if self.current.as_ref() != Some(&stream) && self.current.is_some() {
            self.line(&format!("[{job_name}] ... {step_name}"));
        }
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(bytes);
        let _ = out.flush();
        self.at_line_start = bytes.ends_with(b"\n");
        self.current = Some(stream);
    }
}

/// Follows until the pipeline is final; returns its status.
pub async fn follow(ctx: &Ctx, pipeline_id: &str) -> Result<String, Failure> {
    let mut printer = Printer {
        at_line_start: true,
        ..Printer::default()
    };
    let mut workflows_seen: HashMap<String, String> = HashMap::new();
    let mut jobs: HashMap<String, JobView> = HashMap::new();
    loop {
        let pipeline = ctx.client.pipeline(&ctx.auth, pipeline_id).await?;
        if pipeline.state == "errored" {
            for error in &pipeline.errors {
                printer.line(&format!(
                    "pipeline error ({}): {}",
                    error.kind, error.message
                ));
            }
            printer.line(&format!("pipeline #{}: error", pipeline.number));
            return Ok("error".into());
        }
        let pipeline_final = pipeline.status != "running";
        let workflows = ctx.client.workflows(&ctx.auth, pipeline_id).await?;
        let mut pending_output = false;
        for workflow in &workflows {
            let job_list = ctx.client.jobs(&ctx.auth, &workflow.id).await?;
            for job in &job_list {
                let view = jobs.entry(job.id.clone()).or_default();
                // A job starting is said before its steps; a job ending, after them.
                if view.status != job.status && !job_status_is_final(&job.status) {
                    printer.line(&format!(
                        "job {} #{}: {}",
                        job.name, job.job_number, job.status
                    ));
                    view.status = job.status.clone();
                }
                let has_steps =
                    matches!(job.status.as_str(), "running") || job_status_is_final(&job.status);
                if has_steps && job.status != "not_run" {
                    let first = ctx.client.job(&ctx.auth, &job.id).await?;
                    let parallelism = first.parallelism.max(1);
                    let mut message = first.message.clone();
                    for node in 0..parallelism {
                        let detail = if node == 0 {
                            first.clone()
                        } else {
                            ctx.client.job_node(&ctx.auth, &job.id, node).await?
                        };
                        let label = node_label(&job.name, node, parallelism);
                        for step in &detail.steps {
                            let step_view = view.steps.entry((node, step.index)).or_default();
                            if !step_view.started {
                                printer.line(&format!("[{label}] ==> {}", step.name));
                                step_view.started = true;
                            }
                            while step_view.offset < step.log_length {
                                let bytes =
                                    read_log(ctx, &job.id, node, step.index, step_view.offset)
                                        .await?;
                                if bytes.is_empty() {
                                    break;
                                }
                                step_view.offset += bytes.len() as u64;
                                printer
                                    .bytes(&job.id, node, &label, step.index, &step.name, &bytes);
                            }
                            if step.status != "running"
                                && !step_view.finished
                                && step_view.offset >= step.log_length
                            {
                                step_view.finished = true;
                                let detail = match (step.exit_code, step.duration_ms) {
                                    (Some(code), Some(ms)) => {
                                        format!(" (exit {code}, {:.2} s)", ms as f64 / 1000.0)
                                    }
                                    (None, Some(ms)) => {
                                        format!(" ({:.2} s)", ms as f64 / 1000.0)
                                    }
                                    _ => String::new(),
                                };
                                printer.line(&format!(
                                    "[{label}] <== {}: {}{detail}",
                                    step.name, step.status
                                ));
                            }
                            if step_view.offset < step.log_length {
                                pending_output = true;
                            }
                        }
                        if message.is_none() {
                            message = detail.message.clone();
                        }
                    }
                    if job_status_is_final(&job.status) {
                        if let Some(message) = &message {
                            if view.status != job.status {
                                printer.line(&format!("[{}] {message}", job.name));
                            }
                        }
                    }
                }
                if view.status != job.status {
                    printer.line(&format!(
                        "job {} #{}: {}",
                        job.name, job.job_number, job.status
                    ));
                    view.status = job.status.clone();
                }
            }
            if workflows_seen.get(&workflow.id) != Some(&workflow.status) {
                printer.line(&format!("workflow {}: {}", workflow.name, workflow.status));
                workflows_seen.insert(workflow.id.clone(), workflow.status.clone());
            }
        }
        if pipeline_final && !pending_output {
            printer.line(&format!(
                "pipeline #{}: {}",
                pipeline.number, pipeline.status
            ));
            return Ok(pipeline.status);
        }
        tokio::time::sleep(POLL).await;
    }
}
