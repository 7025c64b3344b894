//! Running one claimed task: fetch its spec, make its working directory, start the task-agent
//! on a socketpair, relay logs and step events, heartbeat the lease, report completion, clean up.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use bosun_api::{Auth, ClaimResponse, Client, CompleteRequest, StepEvent, TaskSpec};
use bosun_protocol::{
    Connection, DEFAULT_MAX_OPEN_STREAMS, FrameCodec, Incoming, Message, StepStatus, TaskStatus,
    UploadOutcome,
};
use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::privileged::{self, Identity, Ledger, LedgerEntry, TaskCgroup};
use crate::spool::Spool;
use crate::transfer::{self, Routes, ToAgent};
use crate::upload::{LogUploader, with_retry};

/// How often buffered log bytes are sent even when less than a flush's worth.
const FLUSH_PERIOD: Duration = Duration::from_millis(200);
/// How long the task-agent has to say hello.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the relay stopped.
enum Outcome {
    /// The task-agent reported its result.
    Finished(TaskStatus),
    /// The task-agent went away without a result.
    AgentLost(String),
}

/// Shutdown levels the main loop hands to a running task: 0 run, 1 drain, 2 cancel tasks.
pub type StopLevel = watch::Receiver<u8>;

/// How many tasks this launch-agent runs right now: the sweep of a dedicated job user's
/// processes is only safe while no other task of it runs.
static RUNNING_TASKS: AtomicUsize = AtomicUsize::new(0);

/// Counts a task in [`RUNNING_TASKS`] for as long as it lives.
struct Running;

impl Running {
    fn start() -> Running {
        RUNNING_TASKS.fetch_add(1, Ordering::SeqCst);
        Running
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING_TASKS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What every task of this launch-agent shares.
#[derive(Clone, Copy)]
pub struct Host<'a> {
    pub client: &'a Client,
    pub config: &'a Config,
    /// The task-agents downloaded by version.
    pub task_agents: &'a crate::release::TaskAgents,
    pub identity: &'a Identity,
    pub ledger: &'a Ledger,
    /// Where task cgroups go, when the host offers cgroup v2.
    pub cgroup_root: Option<&'a std::path::Path>,
}

/// [`run_task`] owning its (copied) [`Host`], so the claim loop can hold several at once.
pub async fn run_task_owned(
    host: Host<'_>,
    claim: ClaimResponse,
    stop: StopLevel,
) -> anyhow::Result<()> {
    run_task(&host, claim, stop).await
}

pub async fn run_task(
    host: &Host<'_>,
    claim: ClaimResponse,
    mut stop: StopLevel,
) -> anyhow::Result<()> {
    let Host { client, config, .. } = *host;
    let _running = Running::start();
    // Before anything of the task runs: what the job user starts from now on may be its.
    let started_ticks = privileged::boot_ticks_now();
    let auth = Auth::Bearer(claim.task_token.clone());
    let spec: TaskSpec = match with_retry("task config", || client.task_config(&auth)).await {
        Ok(spec) => spec,
        Err(err) => {
            // The server refused to hand out the config (a context deleted since the job was
            // queued, say): end the task with its reason instead of letting the lease lapse.
            let refused = err
                .status()
                .is_some_and(|status| status.is_client_error() && status.as_u16() != 401);
            if refused {
                let message = format!("the server refused the task's config: {err}");
                complete(client, &auth, "infrastructure_fail", Some(message)).await;
            }
            return Err(anyhow::Error::new(err).context("fetching the task config"));
        }
    };
    tracing::info!(task = %spec.task_id, job = %spec.job_name, "running task");
    if !spec
        .task_id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        let message = format!("task id `{}` is not safe as a directory name", spec.task_id);
        complete(client, &auth, "infrastructure_fail", Some(message.clone())).await;
        anyhow::bail!(message);
    }
    let work_dir = PathBuf::from(config.working_directory.replace("%s", &spec.task_id));
    let cgroup = match host.cgroup_root {
        Some(root) => match TaskCgroup::create(root, &spec.task_id) {
            Ok(cgroup) => Some(cgroup),
            Err(err) => {
                tracing::warn!("no cgroup for this task: {err:#}");
                None
            }
        },
        None => None,
    };
    // `pids.max` where the task's cgroup takes it; otherwise this task falls back to
    // RLIMIT_NPROC, whatever the host offered at start.
    let pids_in_cgroup = cgroup
        .as_ref()
        .is_some_and(|cgroup| cgroup.apply_limits(config.max_pids, config.max_memory));
    let fallback_identity;
    let limited_host;
    let host =
        if !pids_in_cgroup && host.identity.rlimit_nproc.is_none() && config.max_pids.is_some() {
            fallback_identity = Identity {
                rlimit_nproc: config.max_pids,
                ..host.identity.clone()
            };
            limited_host = Host {
                identity: &fallback_identity,
                ..*host
            };
            &limited_host
        } else {
            host
        };
    // Recorded before anything runs, forgotten after cleanup: a crash in between leaves the entry
    // for the next start's sweep.
    host.ledger.record(&LedgerEntry {
        task_id: spec.task_id.clone(),
        work_dir: work_dir.clone(),
        cgroup: cgroup.as_ref().map(|c| c.path.clone()),
    })?;

    let result = run_in_dir(
        host,
        &auth,
        &spec,
        &claim.agent_version,
        &work_dir,
        cgroup.as_ref(),
        &mut stop,
    )
    .await;
    // Whatever the steps left goes now, whether the task-agent swept its descendants or was
    // killed before it could: the cgroup, the marked processes, and for a dedicated job user
    // (while no other task of this agent runs) every process of it started since the task began.
    let owner = match &host.identity.switch {
        Some(switch) if config.dedicated_user && RUNNING_TASKS.load(Ordering::SeqCst) == 1 => {
            Some((switch.uid, started_ticks))
        }
        _ => None,
    };
    // spawn_blocking, never block_in_place, here and everywhere in the launch-agent: a worker
    // thread moved to the blocking pool may exit later, and a task-agent it spawned would then
    // get its parent-death signal (PR_SET_PDEATHSIG follows the spawning thread).
    let task_id = spec.task_id.clone();
    let swept = tokio::task::spawn_blocking(move || {
        privileged::sweep_task(&task_id, cgroup.as_ref(), owner)
    })
    .await;
    match swept {
        Ok(0) => {}
        Ok(killed) => {
            tracing::info!(task = %spec.task_id, killed, "killed processes the task left behind")
        }
        Err(err) => tracing::warn!("sweeping the task panicked: {err}"),
    }
    // The step scripts are bosun's, not the user's: removed whatever cleanup_working_directory says.
    let scripts = privileged::scripts_dir(&work_dir);
    match tokio::task::spawn_blocking(move || privileged::remove_work_dir(&scripts)).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::warn!("{err:#}"),
        Err(err) => tracing::warn!("removing the scripts directory panicked: {err}"),
    }
    let (status, message) = match result {
        Ok((status, message)) => (status, message),
        Err(err) => ("infrastructure_fail", Some(format!("{err:#}"))),
    };
    if let Some(message) = &message {
        tracing::warn!(task = %spec.task_id, status, "{message}");
    }
    // Held on disk until the server has it (a restart reports it), then reported.
    hold_result(host, &auth, &spec.task_id, status, message.clone(), true);
    if complete(client, &auth, status, message).await {
        crate::done::remove(host.ledger.dir(), &spec.task_id);
    }
    if config.cleanup_working_directory {
        let dir = work_dir.clone();
        let removed = tokio::task::spawn_blocking(move || privileged::remove_work_dir(&dir)).await;
        match removed {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!("{err:#}"),
            Err(err) => tracing::warn!("cleanup of {} panicked: {err}", work_dir.display()),
        }
    }
    host.ledger.forget(&spec.task_id);
    tracing::info!(task = %spec.task_id, status, "task done");
    Ok(())
}

/// Reports the task's result; whether the server took it or refused it for good (either way
/// nothing is left to report).
pub(crate) async fn complete(
    client: &Client,
    auth: &Auth,
    status: &str,
    message: Option<String>,
) -> bool {
    crate::metrics::task_ended(status);
    let body = CompleteRequest {
        status: status.to_owned(),
        message,
    };
    match with_retry("task completion", || client.complete(auth, &body)).await {
        Ok(()) => true,
        Err(err) => {
            let refused = err.status().is_some_and(|status| status.is_client_error());
            if refused {
                tracing::warn!("the server refused the task's result: {err}");
            } else {
                tracing::error!("could not report the task's result: {err}");
            }
            refused
        }
    }
}

/// The task-agent binary the task runs: `runner.task_agent_path` when set; the one beside the
/// launch-agent when the claim names no version or this launch-agent's own; otherwise the
/// version the claim names, verified (downloaded once, then from the cache).
async fn task_agent_for(host: &Host<'_>, version: &str) -> anyhow::Result<PathBuf> {
    let config = host.config;
    if config.task_agent_pinned || version.is_empty() || version == crate::VERSION {
        return Ok(config.task_agent_path.clone());
    }
    let auth = Auth::Bearer(config.auth_token.clone());
    host.task_agents
        .get(host.client, &auth, version)
        .await
        .with_context(|| format!("the task-agent {version} this task is to run was refused"))
}

#[allow(clippy::too_many_arguments)]
async fn run_in_dir(
    host: &Host<'_>,
    auth: &Auth,
    spec: &TaskSpec,
    agent_version: &str,
    work_dir: &std::path::Path,
    cgroup: Option<&TaskCgroup>,
    stop: &mut StopLevel,
) -> anyhow::Result<(&'static str, Option<String>)> {
    let Host {
        client,
        config,
        identity,
        ..
    } = *host;
    {
        let dir = work_dir.to_owned();
        let identity = identity.clone();
        tokio::task::spawn_blocking(move || privileged::create_work_dir(&dir, &identity))
            .await
            .context("creating the working directory")??;
    }

    let task_agent = task_agent_for(host, agent_version).await?;
    let (mut child, conn) = if config.command_prefix.is_empty() {
        start_with_socketpair(config, &task_agent, identity, spec, work_dir, cgroup).await?
    } else {
        start_with_prefix(config, &task_agent, identity, spec, work_dir, cgroup).await?
    };

    let (cancel_tx, mut cancel_rx) = watch::channel(None::<String>);
    let heartbeat = tokio::spawn(heartbeat_loop(client.clone(), auth.clone(), cancel_tx));
    let spool = Spool::start(
        client.clone(),
        auth.clone(),
        host.ledger.spool_path(&spec.task_id),
        config.max_spool_size,
    );
    let (outcome, reason, uploader) = relay(
        client,
        auth,
        config,
        spec.steps.len(),
        conn,
        &mut cancel_rx,
        stop,
        LogUploader::new(spool),
    )
    .await;

    // The task-agent exits after its last message (the relay dropped the socket); give it a
    // moment, then make sure.
    let exit = match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
        Ok(status) => status.ok(),
        Err(_) => {
            tracing::warn!("task-agent did not exit after the task: killing it");
            let _ = child.kill().await;
            None
        }
    };
    let (status, message) = task_result(outcome, reason, exit);
    // The result is on disk before the wait for the server: a launch-agent restarted meanwhile
    // reports it at its next start.
    hold_result(host, auth, &spec.task_id, status, message.clone(), false);
    let delivery = uploader.finish().await;
    // The heartbeat keeps the lease while the outbox drains.
    heartbeat.abort();
    // The server stopped storing the log (a limit, or its disk), or the output could not be
    // held for it: the job ends with that reason whatever the task-agent reported, since its
    // log is incomplete.
    if let Some(stop) = delivery.log_stop {
        return Ok((stop.status, Some(stop.message)));
    }
    if let Some(failed) = delivery.failed {
        return Ok(("infrastructure_fail", Some(failed)));
    }
    Ok((status, message))
}

/// Writes the task's result to the ledger (see `done`); a failure to is logged, not fatal: the
/// result is still reported now.
fn hold_result(
    host: &Host<'_>,
    auth: &Auth,
    task_id: &str,
    status: &str,
    message: Option<String>,
    delivered: bool,
) {
    let Auth::Bearer(task_token) = auth else {
        return;
    };
    let record = crate::done::Done {
        task_id: task_id.to_owned(),
        status: status.to_owned(),
        message,
        delivered,
        task_token: task_token.clone(),
    };
    if let Err(err) = crate::done::write(host.ledger.dir(), &host.config.auth_token, &record) {
        tracing::warn!(
            task = task_id,
            "could not hold the task's result on disk: {err:#}"
        );
    }
}

/// The task's status and message from how the relay ended.
fn task_result(
    outcome: Outcome,
    reason: Option<String>,
    exit: Option<std::process::ExitStatus>,
) -> (&'static str, Option<String>) {
    match outcome {
        Outcome::Finished(TaskStatus::Success) => ("success", None),
        Outcome::Finished(TaskStatus::Failed) => ("failed", None),
        Outcome::Finished(TaskStatus::Canceled) => match reason {
            Some(reason) if reason.contains("max_run_time") => ("failed", Some(reason)),
            other => ("canceled", other),
        },
        Outcome::AgentLost(why) => (
            "infrastructure_fail",
            Some(match exit {
                Some(status) => format!("{why} (task-agent {status})"),
                None => why,
            }),
        ),
    }
}

fn grace_arg(config: &Config) -> String {
    format!(
        "--kill-grace-ms={}",
        config.termination_grace_period.as_millis()
    )
}

/// Longest line of the task-agent's own output logged; the rest of a longer line is dropped.
const MAX_AGENT_LINE: usize = 4096;

/// Logs what the task-agent (and a command prefix) writes on its stdout and stderr, which are
/// pipes of ours rather than our own descriptors: each line through tracing, prefixed with the
/// task id, bounded in length, control characters escaped. Runs until the pipes close.
fn log_agent_output(child: &mut tokio::process::Child, task_id: &str) {
    if let Some(stdout) = child.stdout.take() {
        tokio::spawn(log_lines(stdout, task_id.to_owned()));
    }
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(log_lines(stderr, task_id.to_owned()));
    }
}

async fn log_lines(mut pipe: impl tokio::io::AsyncRead + Unpin, task: String) {
    use tokio::io::AsyncReadExt as _;
    let mut line = Vec::with_capacity(256);
    let mut cut = false;
    let mut chunk = [0u8; 4096];
    loop {
        let read = match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        for &byte in &chunk[..read] {
            if byte == b'\n' {
                log_agent_line(&task, &line, cut);
                line.clear();
                cut = false;
            } else if line.len() < MAX_AGENT_LINE {
                line.push(byte);
            } else {
                cut = true;
            }
        }
    }
    if !line.is_empty() {
        log_agent_line(&task, &line, cut);
    }
}

fn log_agent_line(task: &str, line: &[u8], cut: bool) {
    let mut text = String::with_capacity(line.len());
    for c in String::from_utf8_lossy(line).chars() {
        if c.is_control() && c != '\t' {
            text.extend(c.escape_default());
        } else {
            text.push(c);
        }
    }
    let cut = if cut { " [line cut]" } else { "" };
    tracing::info!(task = %task, "task-agent: {text}{cut}");
}

/// Starts the task-agent with bosun's own privilege drop, its socket inherited as fd 3.
async fn start_with_socketpair(
    config: &Config,
    task_agent: &std::path::Path,
    identity: &Identity,
    spec: &TaskSpec,
    work_dir: &std::path::Path,
    cgroup: Option<&TaskCgroup>,
) -> anyhow::Result<(tokio::process::Child, Connection<tokio::net::UnixStream>)> {
    let (ours, theirs) =
        std::os::unix::net::UnixStream::pair().context("creating the agent socketpair")?;
    let theirs: OwnedFd = theirs.into();
    let mut command =
        privileged::task_agent_command(task_agent, work_dir, identity, &theirs, cgroup);
    command
        .arg(grace_arg(config))
        .arg("--scripts-dir")
        .arg(privileged::scripts_dir(work_dir));
    let mut command = tokio::process::Command::from(command);
    command.kill_on_drop(true);
    let mut child = command.spawn().map_err(|err| {
        anyhow::anyhow!(
            "starting {}: {}",
            task_agent.display(),
            privileged::spawn_error(&err)
        )
    })?;
    log_agent_output(&mut child, &spec.task_id);
    // Our copy of the child's end must close, or we would never see the child hang up.
    drop(theirs);
    ours.set_nonblocking(true)?;
    let mut conn = Connection::new(
        tokio::net::UnixStream::from_std(ours)?,
        FrameCodec::default(),
    );
    let handshake =
        tokio::time::timeout(HANDSHAKE_TIMEOUT, conn.handshake_as_launch_agent(spec)).await;
    check_handshake(&mut child, handshake).await?;
    Ok((child, conn))
}

/// Starts the task-agent through `runner.command_prefix` (sudo and friends close inherited
/// descriptors): it connects back to a one-connection listening socket with a one-time token.
async fn start_with_prefix(
    config: &Config,
    task_agent: &std::path::Path,
    identity: &Identity,
    spec: &TaskSpec,
    work_dir: &std::path::Path,
    cgroup: Option<&TaskCgroup>,
) -> anyhow::Result<(tokio::process::Child, Connection<tokio::net::UnixStream>)> {
    let rendezvous = privileged::Rendezvous::create(identity)?;
    let mut command = privileged::prefixed_command(
        &config.command_prefix,
        task_agent,
        work_dir,
        identity,
        &rendezvous.socket_path,
        cgroup,
    );
    command
        .arg(grace_arg(config))
        .arg("--scripts-dir")
        .arg(privileged::scripts_dir(work_dir));
    let mut command = tokio::process::Command::from(command);
    command.kill_on_drop(true);
    let mut child = command.spawn().with_context(|| {
        format!(
            "starting {} through {:?}",
            task_agent.display(),
            config.command_prefix
        )
    })?;
    log_agent_output(&mut child, &spec.task_id);
    if let Some(mut stdin) = child.stdin.take() {
        use tokio::io::AsyncWriteExt as _;
        stdin
            .write_all(format!("{}\n", rendezvous.token).as_bytes())
            .await?;
    }
    let spawned = child.id();
    let listener = rendezvous.listener.try_clone()?;
    listener.set_nonblocking(true)?;
    let listener = tokio::net::UnixListener::from_std(listener)?;
    let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
    // Any process of the job user can connect (the path is on the task-agent's command line):
    // such an intruder is turned away and the wait goes on, so it can neither take the task's
    // Welcome nor make the real task-agent's connection fail.
    let mut refused = 0u32;
    let conn = loop {
        let accepted = tokio::select! {
            accepted = tokio::time::timeout_at(deadline, listener.accept()) => accepted,
            exited = child.wait() => {
                anyhow::bail!("{:?} exited before the task-agent connected ({})", config.command_prefix, exited?);
            }
        };
        let stream = match accepted {
            Ok(Ok((stream, _))) => stream.into_std()?,
            Ok(Err(err)) => {
                let _ = child.kill().await;
                return Err(err).context("accepting the task-agent's connection");
            }
            Err(_) => {
                let _ = child.kill().await;
                anyhow::bail!("the task-agent did not connect within {HANDSHAKE_TIMEOUT:?}");
            }
        };
        if let Err(err) = rendezvous.check_peer(&stream, spawned) {
            refused += 1;
            // A few lines say what happens; a flood of connections does not flood root's log.
            if refused <= 3 {
                tracing::warn!(task = %spec.task_id, "refused a connection to the task's rendezvous: {err:#}");
            }
            continue;
        }
        stream.set_nonblocking(true)?;
        let mut conn = Connection::new(
            tokio::net::UnixStream::from_std(stream)?,
            FrameCodec::default(),
        );
        let handshake = tokio::time::timeout_at(
            deadline,
            conn.handshake_as_launch_agent_expecting(spec, Some(&rendezvous.token)),
        )
        .await;
        match handshake {
            Ok(Ok(version)) => {
                tracing::debug!(%version, "task-agent connected");
                break conn;
            }
            Ok(Err(err)) => {
                refused += 1;
                tracing::warn!(task = %spec.task_id, "refused a connection to the task's rendezvous: {err}");
            }
            Err(_) => {
                let _ = child.kill().await;
                anyhow::bail!("task-agent did not say hello within {HANDSHAKE_TIMEOUT:?}");
            }
        }
    };
    // No other connection is taken: the listener and its directory go now.
    drop(listener);
    drop(rendezvous);
    Ok((child, conn))
}

async fn check_handshake(
    child: &mut tokio::process::Child,
    handshake: Result<Result<String, bosun_protocol::ProtocolError>, tokio::time::error::Elapsed>,
) -> anyhow::Result<()> {
    match handshake {
        Ok(Ok(version)) => {
            tracing::debug!(%version, "task-agent connected");
            Ok(())
        }
        Ok(Err(err)) => {
            let _ = child.kill().await;
            anyhow::bail!("task-agent handshake failed: {err}");
        }
        Err(_) => {
            let _ = child.kill().await;
            anyhow::bail!("task-agent did not say hello within {HANDSHAKE_TIMEOUT:?}");
        }
    }
}

/// Relays frames until the task-agent reports its result or goes away; log bytes and step
/// events go to `uploader` (the task's outbox), which the caller drains. Returns the outcome,
/// why the task was canceled, and the uploader.
#[allow(clippy::too_many_arguments)]
async fn relay(
    client: &Client,
    auth: &Auth,
    config: &Config,
    step_count: usize,
    conn: Connection<tokio::net::UnixStream>,
    cancel_rx: &mut watch::Receiver<Option<String>>,
    stop: &mut StopLevel,
    mut uploader: LogUploader,
) -> (Outcome, Option<String>, LogUploader) {
    let mut routes = Routes::new(step_count);
    // The read loop below never writes to the socket itself: a writer task does (see
    // `transfer`), so the loop keeps reading logs while a download waits for the task-agent.
    let (mut conn, writer) = conn.split();
    let (to_agent, mut writer) = transfer::spawn_writer(writer);
    // Answers of the uploads running in their own tasks, for the task-agent.
    let (answers_tx, mut answers) = mpsc::channel::<(u32, UploadOutcome)>(DEFAULT_MAX_OPEN_STREAMS);
    // Downloads that sent their last message.
    let (downloaded_tx, mut downloaded) = mpsc::unbounded_channel::<u32>();
    let ctx = transfer::Context {
        client: client.clone(),
        auth: auth.clone(),
        to_agent: to_agent.clone(),
        answers: answers_tx,
        downloaded: downloaded_tx,
    };
    let mut flush = tokio::time::interval(FLUSH_PERIOD);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let deadline = tokio::time::Instant::now() + config.max_run_time;
    let mut cancel_reason: Option<String> = None;
    let outcome = loop {
        tokio::select! {
            incoming = conn.recv() => match incoming {
                Ok(Some(Incoming::Data { stream, bytes })) => match routes.data(stream) {
                    Ok(transfer::DataRoute::Log(step)) => uploader.push(step, bytes).await,
                    Ok(transfer::DataRoute::Upload(upload)) => upload.send(bytes).await,
                    Ok(transfer::DataRoute::Drop) => {}
                    Err(err) => break Outcome::AgentLost(format!("task-agent broke the protocol: {err}")),
                },
                Ok(Some(Incoming::Message(Message::StepStarted { step, name, log }))) => {
                    if let Err(err) = routes.step_started(step, &name, log) {
                        break Outcome::AgentLost(format!("task-agent broke the protocol: {err}"));
                    }
                    uploader.step_event(StepEvent {
                        step, name, status: "running".into(), exit_code: None, duration_ms: None,
                    }).await;
                }
                Ok(Some(Incoming::Message(Message::StepFinished { step, status, exit_code, duration_ms }))) => {
                    let name = match routes.step_finished(step) {
                        Ok(name) => name,
                        Err(err) => break Outcome::AgentLost(format!("task-agent broke the protocol: {err}")),
                    };
                    // The outbox's sender marks the step failed if the server stopped storing
                    // its log.
                    uploader.step_event(StepEvent {
                        step,
                        name,
                        status: step_status(status).into(),
                        exit_code,
                        duration_ms: Some(duration_ms),
                    }).await;
                }
                Ok(Some(Incoming::Message(Message::TaskFinished { status }))) => break Outcome::Finished(status),
                Ok(Some(Incoming::Message(message @ (Message::Upload { .. }
                | Message::Download { .. }
                | Message::End { .. }
                | Message::Abandon { .. })))) => {
                    match routes.transfer(message, &ctx).await {
                        Ok(Some(answer)) => to_agent.message(answer),
                        Ok(None) => {}
                        Err(err) => break Outcome::AgentLost(format!("task-agent broke the protocol: {err}")),
                    }
                }
                Ok(Some(Incoming::Message(other))) => {
                    break Outcome::AgentLost(format!("task-agent sent an unexpected `{}` message", other.kind()));
                }
                Ok(None) => break Outcome::AgentLost("task-agent exited before reporting a result".into()),
                Err(err) => break Outcome::AgentLost(format!("task-agent socket: {err}")),
            },
            Some((stream, outcome)) = answers.recv() => {
                routes.answered(stream);
                to_agent.message(Message::Uploaded { stream, outcome });
            }
            Some(stream) = downloaded.recv() => routes.downloaded(stream),
            written = &mut writer => {
                let why = match written {
                    Ok(Err(err)) => err.to_string(),
                    Ok(Ok(())) => "the writer ended".to_owned(),
                    Err(err) => err.to_string(),
                };
                break Outcome::AgentLost(format!("task-agent socket: {why}"));
            }
            _ = flush.tick() => uploader.flush_all().await,
            changed = cancel_rx.changed(), if cancel_reason.is_none() => {
                let reason = match changed {
                    Ok(()) => cancel_rx.borrow().clone(),
                    Err(_) => None,
                };
                if let Some(reason) = reason {
                    cancel_reason = Some(reason.clone());
                    send_cancel(&to_agent, &reason, config.termination_grace_period);
                }
            }
            _ = tokio::time::sleep_until(deadline), if cancel_reason.is_none() => {
                let reason = format!("the job exceeded runner.max_run_time ({:?})", config.max_run_time);
                cancel_reason = Some(reason.clone());
                send_cancel(&to_agent, &reason, config.termination_grace_period);
            }
            changed = stop.changed(), if cancel_reason.is_none() => {
                if changed.is_err() || *stop.borrow() >= 2 {
                    let reason = "the launch-agent is shutting down".to_owned();
                    cancel_reason = Some(reason.clone());
                    send_cancel(&to_agent, &reason, config.termination_grace_period);
                }
            }
        }
        // The server keeps no more of this task's log, or its output cannot be held for an
        // unreachable server: stop the task (unless it is already stopping).
        if cancel_reason.is_none() {
            if let Some(stopped) = uploader.stopped() {
                cancel_reason = Some(stopped.message.clone());
                send_cancel(&to_agent, &stopped.message, config.termination_grace_period);
            }
        }
    };
    (outcome, cancel_reason, uploader)
}

fn send_cancel(to_agent: &ToAgent, reason: &str, grace: Duration) {
    tracing::info!("canceling the task: {reason}");
    to_agent.message(Message::Cancel {
        reason: reason.to_owned(),
        grace_ms: grace.as_millis() as u64,
    });
}

fn step_status(status: StepStatus) -> &'static str {
    match status {
        StepStatus::Success => "success",
        StepStatus::Failed => "failed",
        StepStatus::Canceled => "canceled",
        StepStatus::Skipped => "skipped",
    }
}

/// Renews the lease; reports a cancel request (or the loss of the task) through `cancel`.
async fn heartbeat_loop(client: Client, auth: Auth, cancel: watch::Sender<Option<String>>) {
    // The server holds each heartbeat up to `period` and answers at once on a cancel, so a cancel
    // reaches the task within a round trip while the request rate stays at one per period.
    let mut period = Duration::from_secs(2);
    // After a failed beat: a capped exponential backoff with full jitter.
    let mut backoff = Duration::from_millis(250);
    loop {
        let started = tokio::time::Instant::now();
        let answer = client.heartbeat(&auth, period).await;
        let failed = answer.is_err();
        match answer {
            Ok(answer) => {
                backoff = Duration::from_millis(250);
                if answer.cancel {
                    let _ = cancel.send(Some("the job was canceled".into()));
                }
                // Three beats per lease, each held at most 10 s.
                period = Duration::from_secs(answer.lease_secs.max(1))
                    .div_f64(3.0)
                    .min(Duration::from_secs(10))
                    .max(Duration::from_millis(500));
            }
            // The server refuses the token of a task that ended (it timed out, or someone ended
            // it): 401 today, 409 from older servers. Either way the task is over.
            Err(err)
                if matches!(
                    err.status(),
                    Some(bosun_api::StatusCode::UNAUTHORIZED | bosun_api::StatusCode::CONFLICT)
                ) =>
            {
                let _ = cancel.send(Some(format!("the server ended the task: {err}")));
                return;
            }
            Err(err) => tracing::warn!("heartbeat failed: {err}"),
        }
        if failed {
            // Never longer than a third of the lease: a restarted server waits one lease for
            // the beat before it counts the task as gone.
            tokio::time::sleep(crate::upload::jitter(backoff.min(period))).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        // A held heartbeat already waited; an early answer (error, old server) must not spin.
        tokio::time::sleep_until(started + Duration::from_millis(500)).await;
    }
}
