//! bosun's `launch-agent`: the privileged half of a runner. It reads
//! `launch-agent-config.yaml`, claims tasks of its resource class from the server, and for each
//! one makes a working directory and starts `task-agent` as the unprivileged job user on a
//! socketpair, relaying logs, step events and the result. Only this process holds the runner
//! token and task tokens, and only it talks to the server.
//!
//! Root-only code lives in [`privileged`].

pub mod config;
mod done;
pub mod log_file;
mod metrics;
mod notify;
pub mod privileged;
pub mod release;
mod spool;
mod task;
mod transfer;
mod update;
mod upload;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use anyhow::Context;
use bosun_api::{Auth, ClaimRequest, ClaimResponse, Client, StatusCode};
use tokio::sync::watch;

use crate::config::{Config, Mode};
use crate::privileged::Identity;
pub use crate::task::StopLevel;

/// This build's version: `BOSUN_VERSION` at build time (what `cargo xtask release --version`
/// sets), else the crate's.
pub const VERSION: &str = match option_env!("BOSUN_VERSION") {
    Some(version) => version,
    None => env!("CARGO_PKG_VERSION"),
};

/// How long one claim waits on the server for work.
const CLAIM_WAIT_SECS: u64 = 30;
/// The longest pause between failed claims. Low, because while the server is unreachable the
/// pause also ends as soon as a TCP probe finds it listening again.
const MAX_CLAIM_BACKOFF: Duration = Duration::from_secs(10);
/// How often an agent that is not claiming (busy to capacity, draining) reports its state.
const REPORT_PERIOD: Duration = Duration::from_secs(30);
/// How often the server's port is probed while a claim backoff waits out an outage.
const PROBE_PERIOD: Duration = Duration::from_millis(500);

/// What the main loop reacts to.
enum Event {
    Claimed(Box<ClaimResponse>),
    NoWork,
    ClaimFailed(bosun_api::ApiError),
    /// A running task ended (`Err`: it could not run to its end).
    Ended(anyhow::Result<()>),
    /// Time to tell systemd's watchdog the loop is alive.
    Watchdog,
    /// Time to tell the inventory this agent is still here (no claim in flight says so).
    Report,
    Stop,
}

/// Claims and runs tasks, up to `runner.max_concurrent_tasks` at once, until `stop` reaches 1
/// (drain: no new claims, the running tasks finish) or, in single-task mode, after one task.
pub async fn run(config: Config, mut stop: StopLevel) -> anyhow::Result<()> {
    let mut identity = Identity::resolve(&config.user, config.group.as_deref())?;
    let client = Client::with_options(
        &config.api_url,
        bosun_api::Timeouts::default(),
        &bosun_api::ConnectOptions {
            ca_file: config.ca_file.clone(),
            proxy: None,
        },
    )?;
    let auth = Auth::Bearer(config.auth_token.clone());
    let request = ClaimRequest {
        name: config.runner_name.clone(),
        hostname: nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default(),
        ip: local_ip(&config.api_url).unwrap_or_default(),
        version: VERSION.to_owned(),
        capacity: config.max_concurrent_tasks as u32,
        ..ClaimRequest::default()
    };
    let ledger = privileged::Ledger::for_working_directory(&config.working_directory);
    // A crash or kill -9 of an earlier run may have left tasks behind: end them first.
    let dedicated = match &identity.switch {
        Some(switch) if config.dedicated_user => Some(switch.uid),
        _ => None,
    };
    privileged::sweep_leftovers(&ledger, config.cleanup_working_directory, dedicated);
    // Self-update: an attempt this start finds is dealt with first (the new version on
    // probation must reach the server before it claims; a failed one is skipped).
    let installed_exe = std::env::current_exe().context("locating the launch-agent binary")?;
    let mut updater = update::Updater::new(
        config.trusted_keys.clone(),
        ledger.dir(),
        installed_exe,
        (!config.task_agent_pinned).then(|| config.task_agent_path.clone()),
    );
    if let update::Start::Probation(marker) = update::on_start(&mut updater) {
        update::probation(&mut updater, marker, &client, &auth, &request).await?;
    }
    let auto_update = !config.disable_auto_update && config.mode == Mode::Continuous;
    let mut next_update_check = Instant::now();
    let mut pending_update: Option<update::Prepared> = None;
    // Results an earlier run finished but could not report go to the server now.
    done::replay(&client, ledger.dir(), &config.auth_token);
    let cgroup_root = if !config.cgroups {
        tracing::info!(
            "runner.cgroups is false: containment relies on the task-agent's subreaper and the sweep after each task"
        );
        None
    } else {
        match privileged::cgroup_root() {
            Ok(root) => {
                tracing::info!("each task runs in its own cgroup under {}", root.display());
                Some(root)
            }
            Err(why) => {
                tracing::warn!(
                    "no cgroup v2 for tasks ({why}): containment relies on the task-agent's subreaper"
                );
                None
            }
        }
    };
    let controllers = cgroup_root
        .as_deref()
        .map(privileged::enable_task_controllers)
        .unwrap_or_default();
    log_limits(&config, &controllers, &mut identity);
    let task_agents = release::TaskAgents::new(
        config.task_agent_directory.clone(),
        config.trusted_keys.clone(),
    );
    let host = task::Host {
        client: &client,
        config: &config,
        task_agents: &task_agents,
        identity: &identity,
        ledger: &ledger,
        cgroup_root: cgroup_root.as_deref(),
    };
    let mut backoff = Duration::from_millis(500);
    let mut last_work = Instant::now();
    tracing::info!(
        name = %config.runner_name,
        server = %config.api_url,
        job_user = %identity.name,
        max_concurrent_tasks = config.max_concurrent_tasks,
        "launch-agent {} claiming tasks",
        VERSION
    );
    // Running tasks, each a future of its own (its directory, cgroup and task-agent); a task's
    // end is an event of the loop below, like a claim's answer. They run on this task, so the
    // spawning thread (which PR_SET_PDEATHSIG follows) is the one that runs the loop.
    let mut running = futures_util::stream::FuturesUnordered::new();
    // One claim in flight at most, kept across the loop's turns: dropping it while the server
    // answers could leave a task claimed by nobody until its lease lapses.
    let mut claim: Option<std::pin::Pin<Box<dyn std::future::Future<Output = _> + '_>>> = None;
    let mut claimed_any = false;
    let mut claim_started = Instant::now();
    if let Some(addr) = config.metrics_addr {
        metrics::serve(addr).await?;
    }
    let notifier = notify::Notifier::from_env();
    let mut watchdog = notifier.watchdog.map(tokio::time::interval);
    notifier.ready();
    let mut told_stopping = false;
    // (running tasks, draining) as the inventory last heard it.
    let mut reported = (0, false);
    let mut report = tokio::time::interval(REPORT_PERIOD);
    report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let draining = *stop.borrow() >= 1;
        let single_done = config.mode == Mode::SingleTask && claimed_any;
        if (draining || single_done) && !told_stopping {
            notifier.stopping();
            told_stopping = true;
        }
        if (draining || single_done) && running.is_empty() {
            if draining {
                tracing::info!("stopping: no task is running");
            } else {
                tracing::info!("runner.mode is single-task: exiting after one task");
            }
            return Ok(());
        }
        // Idle (nothing running, no claim in flight, not draining): the update, if one is
        // ready, goes in now; otherwise look for one when it is time.
        if !draining && running.is_empty() && claim.is_none() {
            if let Some(prepared) = pending_update.take() {
                let err = updater.apply(prepared);
                tracing::error!("the update did not start: {err:#}");
            }
        }
        if auto_update
            && !draining
            && running.is_empty()
            && pending_update.is_none()
            && Instant::now() >= next_update_check
        {
            next_update_check = Instant::now() + config.update_check_interval;
            // The download may take a while on a slow link: systemd's watchdog hears from the
            // loop meanwhile.
            let prepared = {
                let work = updater.prepare(&client, &auth);
                tokio::pin!(work);
                loop {
                    tokio::select! {
                        result = &mut work => break result,
                        _ = async { watchdog.as_mut().expect("polled only when set").tick().await }, if watchdog.is_some() => {
                            notifier.watchdog_ping();
                        }
                    }
                }
            };
            match prepared {
                Ok(Some(prepared)) => {
                    tracing::info!(
                        "release {} verified and downloaded: updating once idle",
                        prepared.version()
                    );
                    pending_update = Some(prepared);
                    // At the top of the loop it goes in at once if nothing is in flight.
                    continue;
                }
                Ok(None) => {}
                Err(err) => {
                    tracing::warn!("checking for a release: {err:#}");
                    // Claims say nothing of releases until a check succeeds (`seen` is None),
                    // so a server failing this answer cannot make them spin.
                    next_update_check =
                        Instant::now() + config.update_check_interval.min(Duration::from_secs(60));
                }
            }
        }
        if draining || single_done {
            claim = None;
        } else if pending_update.is_some() {
            // An update waits for the claim in flight: no new one.
        } else if claim.is_none() && running.len() < config.max_concurrent_tasks {
            let body = ClaimRequest {
                running: running.len() as u32,
                release_seen: if auto_update {
                    updater.seen.clone()
                } else {
                    None
                },
                ..request.clone()
            };
            let (client, auth) = (&client, &auth);
            claim_started = Instant::now();
            claim = Some(Box::pin(async move {
                client
                    .claim(auth, &body, Duration::from_secs(CLAIM_WAIT_SECS))
                    .await
            }));
        }
        // The inventory hears of every change of state, and every REPORT_PERIOD while no claim
        // (which carries the same) is in flight.
        metrics::running(running.len());
        let now_state = (running.len(), draining);
        if now_state != reported {
            report_state(&client, &auth, &request, now_state);
            reported = now_state;
        }
        let event = tokio::select! {
            answer = async { claim.as_mut().expect("polled only when set").await }, if claim.is_some() => {
                claim = None;
                match answer {
                    Ok(None) => Event::NoWork,
                    Ok(Some(claim)) => Event::Claimed(Box::new(claim)),
                    Err(err) => Event::ClaimFailed(err),
                }
            }
            Some(result) = futures_util::StreamExt::next(&mut running), if !running.is_empty() => {
                Event::Ended(result)
            }
            _ = async { watchdog.as_mut().expect("polled only when set").tick().await }, if watchdog.is_some() => {
                Event::Watchdog
            }
            _ = report.tick(), if claim.is_none() => Event::Report,
            _ = stop.changed() => Event::Stop,
        };
        match event {
            Event::Watchdog => notifier.watchdog_ping(),
            Event::Report => report_state(&client, &auth, &request, reported),
            Event::Stop => {
                if *stop.borrow() >= 1 && !running.is_empty() {
                    tracing::info!(
                        "draining: waiting for {} running task(s); no new tasks will be claimed",
                        running.len()
                    );
                }
            }
            Event::NoWork => {
                backoff = Duration::from_millis(500);
                // A long-poll that ended early: the server had news (a release promoted, or
                // it is stopping); ask for a release now rather than at the next interval.
                if claim_started.elapsed() + Duration::from_secs(2)
                    < Duration::from_secs(CLAIM_WAIT_SECS)
                {
                    next_update_check = Instant::now();
                }
                notifier.status("Healthy");
                if let Some(idle) = config.idle_timeout {
                    if running.is_empty() && last_work.elapsed() >= idle {
                        tracing::info!("no task for {idle:?} (runner.idle_timeout): exiting");
                        return Ok(());
                    }
                }
            }
            Event::ClaimFailed(err) => {
                if err.status() == Some(StatusCode::UNAUTHORIZED) {
                    return Err(err).context(
                        "the server refused the runner token: check api.auth_token and the resource class",
                    );
                }
                // Only an unreachable server is probed: one that answers with an error must not
                // be asked again at the probe's rate.
                let (unreachable, refused) = match err {
                    bosun_api::ApiError::Transport { refused, .. } => (true, refused),
                    _ => (false, false),
                };
                tracing::warn!("claim failed, retrying in {backoff:?}: {err}");
                metrics::claim_failed();
                notifier.status(&format!("Unhealthy: claim failed: {err}"));
                let pause = tokio::time::sleep(upload::jitter(backoff));
                tokio::pin!(pause);
                // Tasks that end meanwhile are taken as they end (their results are not held
                // up by the pause).
                loop {
                    tokio::select! {
                        _ = &mut pause => break,
                        _ = listening_again(&config.api_url, refused), if unreachable => {
                            tracing::info!("the server is reachable again: claiming now");
                            break;
                        }
                        Some(result) = futures_util::StreamExt::next(&mut running), if !running.is_empty() => {
                            task_ended(result);
                            last_work = Instant::now();
                        }
                        _ = async { watchdog.as_mut().expect("polled only when set").tick().await }, if watchdog.is_some() => {
                            notifier.watchdog_ping();
                        }
                        _ = stop.changed() => break,
                    }
                }
                backoff = (backoff * 2).min(MAX_CLAIM_BACKOFF);
            }
            Event::Claimed(claimed) => {
                metrics::claimed();
                backoff = Duration::from_millis(500);
                notifier.status("Healthy");
                claimed_any = true;
                last_work = Instant::now();
                running.push(task::run_task_owned(host, *claimed, stop.clone()));
            }
            Event::Ended(result) => {
                task_ended(result);
                last_work = Instant::now();
                // A release promoted while the task ran ended no claim of ours: look now.
                next_update_check = Instant::now();
            }
        }
    }
}

/// Sends the agent's state (tasks running, draining) to the inventory in the background: a slow
/// server must not hold up the claim loop, and a lost report is repaired by the next.
fn report_state(client: &Client, auth: &Auth, request: &ClaimRequest, state: (usize, bool)) {
    let body = ClaimRequest {
        running: state.0 as u32,
        draining: state.1,
        ..request.clone()
    };
    let (client, auth) = (client.clone(), auth.clone());
    tokio::spawn(async move {
        if let Err(err) = client.runner_heartbeat(&auth, &body).await {
            tracing::debug!("reporting the agent's state: {err}");
        }
    });
}

/// Logs a task that could not run to its end.
fn task_ended(result: anyhow::Result<()>) {
    if let Err(err) = result {
        tracing::error!("task failed to run: {err:#}");
    }
}

/// Says once which limit bounds each task, and sets the `RLIMIT_NPROC` fallback where no cgroup
/// `pids` controller is there to take `runner.max_pids`.
fn log_limits(config: &Config, controllers: &[String], identity: &mut Identity) {
    let has = |name: &str| controllers.iter().any(|c| c == name);
    match config.max_pids {
        None => {
            tracing::info!("runner.max_pids is unlimited: tasks may start any number of processes")
        }
        Some(max) if has("pids") => {
            tracing::info!("each task may run {max} processes and threads (cgroup pids.max)")
        }
        Some(max) => {
            identity.rlimit_nproc = Some(max);
            tracing::warn!(
                "no cgroup pids controller for tasks: runner.max_pids ({max}) is applied as RLIMIT_NPROC, \
                 which counts every process and thread of the job user, not only one task's"
            );
        }
    }
    match config.max_memory {
        None => tracing::info!("runner.max_memory is unlimited"),
        Some(max) if has("memory") => {
            tracing::info!("each task may use {max} bytes of memory (cgroup memory.max, no swap)")
        }
        Some(max) => tracing::warn!(
            "no cgroup memory controller for tasks: runner.max_memory ({max} bytes) is not enforced"
        ),
    }
}

/// Returns once the server's address accepts a TCP connection after it was seen not to, i.e.
/// once the server has come back from an outage; probes at once, then every [`PROBE_PERIOD`].
/// `refused`: the failed claim's connection was refused, so the server was down then, and the
/// first accepting probe already ends the wait (the server may have come back between the claim
/// and the probe). Otherwise a server whose port accepts from the first probe on (up, yet the
/// claim failed: a reset, a TLS failure) never ends the wait, so the backoff then runs its
/// course instead of retrying at the probe's rate.
async fn listening_again(api_url: &str, refused: bool) {
    let Some(address) = host_port(api_url) else {
        return std::future::pending().await;
    };
    let mut was_down = refused;
    loop {
        let probe = tokio::time::timeout(PROBE_PERIOD, tokio::net::TcpStream::connect(&address));
        match probe.await {
            Ok(Ok(_)) if was_down => return,
            Ok(Ok(_)) => {}
            _ => was_down = true,
        }
        tokio::time::sleep(PROBE_PERIOD).await;
    }
}

/// `host:port` of an `http://` or `https://` server URL (port 80 or 443 when it names none).
fn host_port(api_url: &str) -> Option<String> {
    let (rest, default_port) = match api_url.strip_prefix("https://") {
        Some(rest) => (rest, 443),
        None => (api_url.strip_prefix("http://")?, 80),
    };
    let authority = rest.split('/').next()?;
    if authority.is_empty() {
        return None;
    }
    // A port is there when the text after the last `:` is digits outside any `[v6]` brackets.
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, port)| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()));
    Some(if has_port {
        authority.to_owned()
    } else {
        format!("{authority}:{default_port}")
    })
}

/// The local address used to reach the server (no packet is sent).
fn local_ip(api_url: &str) -> Option<String> {
    let host_port = host_port(api_url)?;
    let socket = UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect(host_port).ok()?;
    Some(socket.local_addr().ok()?.ip().to_string())
}

/// A stop channel driven by SIGTERM/SIGINT: the first asks to drain (no new claims, running
/// tasks finish), the second cancels the running tasks (each with its grace period), as does
/// `drain_timeout` elapsing after the first.
pub fn stop_on_signals(
    drain_timeout: Option<Duration>,
) -> anyhow::Result<(watch::Sender<u8>, StopLevel)> {
    let (tx, rx) = watch::channel(0u8);
    let sender = tx.clone();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            let level = (*sender.borrow()).saturating_add(1).min(2);
            if level == 1 {
                match drain_timeout {
                    Some(timeout) => {
                        tracing::info!(
                            "signal received: draining (no new tasks; running ones finish, for at \
                             most {}; send again to cancel them now)",
                            humantime::format_duration(timeout)
                        );
                        let sender = sender.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(timeout).await;
                            if *sender.borrow() == 1 {
                                tracing::warn!(
                                    "--drain-timeout elapsed: canceling the running tasks"
                                );
                                let _ = sender.send(2);
                            }
                        });
                    }
                    None => tracing::info!(
                        "signal received: draining (no new tasks; running ones finish; send again \
                         to cancel them)"
                    ),
                }
            } else {
                tracing::info!("second signal: canceling the running tasks");
            }
            let _ = sender.send(level);
        }
    });
    Ok((tx, rx))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_probe_address_comes_from_the_server_url() {
        let host_port = super::host_port;
        assert_eq!(
            host_port("http://127.0.0.1:8730").as_deref(),
            Some("127.0.0.1:8730")
        );
        assert_eq!(
            host_port("http://ci.example/api").as_deref(),
            Some("ci.example:80")
        );
        assert_eq!(host_port("http://[::1]").as_deref(), Some("[::1]:80"));
        assert_eq!(host_port("http://[::1]:9/").as_deref(), Some("[::1]:9"));
        assert_eq!(host_port("https://x").as_deref(), Some("x:443"));
        assert_eq!(host_port("https://x:8443/").as_deref(), Some("x:8443"));
        assert_eq!(host_port("ftp://x"), None);
    }
}
