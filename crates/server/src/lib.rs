//! `bosun-server`: the control plane bosun's agents poll. It serves CircleCI's runner API shapes
//! (claim, task config, heartbeats, logs), the admin API of `circleci runner`, projects and
//! pipelines compiled from `.circleci/config.yml`, and keeps everything in SQLite plus a blob
//! directory.
//!
//! Entry point: [`run`], which tests call in-process or through the `bosun-server` binary.

mod admin;
mod artifacts;
mod auth;
pub mod blobs;
mod caches;
mod contexts;
mod continuation;
mod datadir;
mod error;
mod git;
#[cfg(test)]
mod http_tests;
// The workspace's sshd harness for git.rs's tests, shared as a file (see tests/sshd.rs).
mod jobs;
mod logs;
mod metrics;
#[cfg(test)]
mod openapi;
#[cfg(test)]
mod openapi_tests;
pub mod orbs;
mod pagination;
#[cfg(test)]
mod pipeline_api_tests;
mod pipelines;
mod project_secrets;
mod releases;
pub mod retention;
mod runner;
mod scheduler;
mod secrets;
mod serve;
mod slug;
pub mod sshkeys;
mod store;
mod test_results;
#[cfg(test)]
#[allow(dead_code)]
#[path = "../../../tests/sshd.rs"]
mod test_sshd;
pub mod tls;
mod users;
#[cfg(test)]
mod users_tests;
mod util;
mod v1;
mod workspaces;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use tokio::sync::Notify;

pub use error::AppError;
pub use serve::ConnectionLimits;

/// Largest cache or workspace layer archive by default (`--max-archive-size`).
pub const DEFAULT_MAX_ARCHIVE_SIZE: u64 = 10 << 30;

/// Everything `bosun-server` needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// `sqlite://PATH`; `None` means `DATA_DIR/bosun.db`.
    pub database_url: Option<String>,
    /// `None` means `DATA_DIR/blobs` (unless `blob_url` is set).
    pub blob_dir: Option<PathBuf>,
    /// `--blob-url`: `file:///DIR` today (`s3://` is refused as not built in yet). Wins over
    /// `blob_dir`; the binary refuses both at once.
    pub blob_url: Option<String>,
    /// The URL agents and users reach the server at; `None` means `http://LISTEN`.
    pub public_url: Option<String>,
    /// The admin token from `BOSUN_ADMIN_TOKEN`, if set.
    pub admin_token: Option<String>,
    /// The key secrets are sealed with, from `BOSUN_SECRET_KEY` (64 hex digits or base64 of 32
    /// bytes); `None` means `DATA_DIR/secret-key`, generated on first start.
    pub secret_key: Option<String>,
    /// How long a claimed task's lease lasts without a heartbeat.
    pub task_lease: Duration,
    /// Org-wide limit on running tasks.
    pub max_running_tasks: u64,
    /// Bytes of one step's log kept; the rest is dropped and the job stopped.
    pub max_step_log: u64,
    /// Bytes of one task's logs (all its steps) kept; the rest is dropped and the job stopped.
    pub max_job_log: u64,
    /// Free bytes the blob directory's file system keeps: below it new blob bytes (log bytes
    /// today) are refused.
    pub min_free_space: u64,
    /// Largest artifact stored (`--max-artifact-size`).
    pub max_artifact_size: u64,
    /// Largest cache or workspace layer archive stored (`--max-archive-size`).
    pub max_archive_size: u64,
    /// How long caches, workspace layers and artifacts live from their creation
    /// (`--cache-retention`, `--workspace-retention`, `--artifact-retention`).
    pub retention: retention::Retention,
    /// Time between retention sweeps (`--sweep-interval`); the first runs at start.
    pub sweep_interval: Duration,
    /// Connection cap, header and idle timeouts of the HTTP listener.
    pub connections: ConnectionLimits,
    /// A runner instance not heard from for this long lists as `offline`
    /// (`--runner-offline-after`).
    pub runner_offline_after: Duration,
    /// `--tls-cert` and `--tls-key`: serve HTTPS (the certificate reloads on SIGHUP).
    pub tls: Option<tls::TlsFiles>,
    /// `--orb-upstream` and `--url-orb-allow`.
    pub orbs: orbs::OrbSettings,
}

impl Config {
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Config {
        Config {
            listen,
            data_dir,
            database_url: None,
            blob_dir: None,
            blob_url: None,
            public_url: None,
            admin_token: None,
            secret_key: None,
            task_lease: Duration::from_secs(60),
            max_running_tasks: 100,
            max_step_log: logs::DEFAULT_MAX_STEP_LOG,
            max_job_log: logs::DEFAULT_MAX_JOB_LOG,
            min_free_space: logs::DEFAULT_MIN_FREE_SPACE,
            max_artifact_size: artifacts::DEFAULT_MAX_ARTIFACT_SIZE,
            max_archive_size: DEFAULT_MAX_ARCHIVE_SIZE,
            retention: retention::Retention::default(),
            sweep_interval: retention::DEFAULT_SWEEP_INTERVAL,
            connections: ConnectionLimits::default(),
            runner_offline_after: Duration::from_secs(180),
            tls: None,
            orbs: orbs::OrbSettings::default(),
        }
    }

    /// Where the blobs live: `blob_url`, else `blob_dir`, else `DATA_DIR/blobs`.
    pub(crate) fn blob_location(&self) -> Result<blobs::Location, blobs::LocationError> {
        match (&self.blob_url, &self.blob_dir) {
            (Some(url), _) => blobs::Location::parse_url(url),
            (None, Some(dir)) => Ok(blobs::Location::Dir(dir.clone())),
            (None, None) => Ok(blobs::Location::Dir(self.data_dir.join("blobs"))),
        }
    }
}

pub use secrets::SECRET_KEY_ENV;

/// Shared state of the request handlers.
pub(crate) struct AppState {
    pub store: store::Store,
    /// The blob store: logs go through `logs`; caches, workspaces and artifacts use it
    /// directly.
    pub blobs: Arc<blobs::Blobs>,
    pub repo_dir: PathBuf,
    pub task_lease: Duration,
    pub max_running_tasks: u64,
    /// Largest artifact stored.
    pub max_artifact_size: u64,
    /// Largest cache or workspace layer archive stored.
    pub max_archive_size: u64,
    /// How long caches, workspace layers and artifacts stay readable.
    pub retention: retention::Retention,
    /// Wakes long-polling claims when a task is queued, so they answer at once.
    pub queued: runner::ClaimWakeups,
    /// Woken whenever a running task is asked to cancel, so long-polling heartbeats answer at once.
    pub cancels: Notify,
    /// Woken when a release is promoted or rolled back: long-polling claims answer 204 at once.
    pub promoted: Notify,
    /// Step logs: chunked objects in `blobs`, their limits and in-memory indexes.
    pub logs: logs::Logs,
    /// The server's URL as jobs reach it (`public_url`, else `http://<bound address>`), set once
    /// bound; given to setup-workflow jobs as `BOSUN_API_URL`.
    pub api_url: std::sync::OnceLock<String>,
    /// Seals and opens secrets at rest (`secrets.rs`).
    pub secrets: secrets::SecretBox,
    /// When a silent runner instance lists as `offline`.
    pub runner_offline_after: Duration,
    /// What `/metrics` shows.
    pub metrics: metrics::Metrics,
    /// Set when shutdown begins: long-polls (claims, heartbeats) answer at once instead of
    /// holding the shutdown up for their whole wait.
    pub stopping: std::sync::atomic::AtomicBool,
    /// The orb registry's upstream and URL allow-list.
    pub orbs: orbs::Registry,
}

pub(crate) type State = Arc<AppState>;

/// Starts the server and serves until `shutdown` resolves. `on_listening` gets the bound address
/// (useful with port 0).
pub async fn run(
    config: Config,
    on_listening: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    datadir::prepare(&config)?;
    let database_url = config
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", config.data_dir.join("bosun.db").display()));
    let store = store::Store::open(&database_url).await?;
    let blob_location = config.blob_location()?;
    let blobs = Arc::new(
        blobs::Blobs::open(&blob_location, config.min_free_space).with_context(|| {
            format!(
                "opening the blob directory {}",
                blob_location.dir().display()
            )
        })?,
    );
    match blobs.sweep_staging(Duration::ZERO).await {
        Ok(0) => {}
        Ok(swept) => tracing::info!("deleted {swept} unfinished upload(s) of an earlier run"),
        Err(err) => tracing::warn!("sweeping unfinished uploads: {err}"),
    }
    let repo_dir = config.data_dir.join("repos");
    std::fs::create_dir_all(&repo_dir)
        .with_context(|| format!("creating {}", repo_dir.display()))?;

    // Runners kept running their tasks while this server was down (or restarting): each gets a
    // whole lease from now to heartbeat again before it counts as gone.
    let grace_until = util::now_ms() + config.task_lease.as_millis() as i64;
    match store.extend_running_leases(grace_until).await? {
        0 => {}
        n => tracing::info!(
            "{n} running task(s) get {:?} to heartbeat before their leases count as lapsed",
            config.task_lease
        ),
    }
    let secrets = secrets::SecretBox::load(&config.data_dir, config.secret_key.as_deref())?;
    auth::ensure_admin_token(&store, &config.data_dir, config.admin_token.as_deref()).await?;

    let state: State = Arc::new(AppState {
        store,
        blobs: blobs.clone(),
        repo_dir,
        task_lease: config.task_lease,
        max_running_tasks: config.max_running_tasks,
        max_artifact_size: config.max_artifact_size,
        max_archive_size: config.max_archive_size,
        retention: config.retention,
        queued: runner::ClaimWakeups::default(),
        cancels: Notify::new(),
        promoted: Notify::new(),
        logs: logs::Logs::new(
            blobs,
            logs::Limits {
                max_step: config.max_step_log,
                max_job: config.max_job_log,
            },
        ),
        api_url: std::sync::OnceLock::new(),
        secrets,
        runner_offline_after: config.runner_offline_after,
        metrics: metrics::Metrics::new(),
        stopping: std::sync::atomic::AtomicBool::new(false),
        orbs: orbs::Registry::new(&config.orbs)?,
    });

    let tls = match &config.tls {
        Some(files) => Some(Arc::new(tls::Tls::new(files)?)),
        None => None,
    };
    let listener =
        serve::bind(config.listen).with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let _ = state.api_url.set(
        config
            .public_url
            .clone()
            .map(|url| url.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| format!("{scheme}://{addr}")),
    );
    on_listening(addr);

    let reaper = tokio::spawn(scheduler::reap_expired_leases(state.clone()));
    let sweeper = tokio::spawn(retention::sweep_loop(state.clone(), config.sweep_interval));
    let reloader = match &tls {
        Some(tls) => Some(tls::reload_on_sighup(tls.clone())?),
        None => None,
    };
    let shutdown = {
        let state = state.clone();
        async move {
            shutdown.await;
            state
                .stopping
                .store(true, std::sync::atomic::Ordering::SeqCst);
            state.queued.wake_all();
            state.cancels.notify_waiters();
        }
    };
    let app = router(state);
    let acceptor = tls.as_ref().map(|tls| tls.acceptor.clone());
    let result = serve::serve(listener, app, config.connections, acceptor, shutdown)
        .await
        .context("serving HTTP");
    reaper.abort();
    sweeper.abort();
    if let Some(reloader) = reloader {
        reloader.abort();
    }
    result
}

fn router(state: State) -> Router {
    let app = Router::new()
        .merge(admin::routes())
        .merge(runner::routes())
        .merge(releases::routes())
        .merge(orbs::routes())
        .merge(pipelines::routes())
        .merge(jobs::routes())
        .merge(artifacts::routes())
        .merge(caches::routes())
        .merge(workspaces::routes())
        .merge(test_results::routes())
        .merge(continuation::routes())
        .merge(project_secrets::routes())
        .merge(project_secrets::v1_routes())
        .merge(contexts::routes())
        .merge(users::routes())
        .merge(v1::routes())
        .merge(metrics::routes())
        .fallback(error::no_route)
        .with_state(state);
    // An outer router whose only service is the app: its middleware runs before the app's
    // routing, so an escaped slug can be opened first, and sees the app's whole answers (a
    // 405's `Allow` header is added after the app's own layers would run).
    Router::new()
        .fallback_service(app)
        .layer(axum::middleware::from_fn(error::json_errors))
        .layer(axum::middleware::from_fn(slug::open_escaped_slugs))
}
