//! Harness for bosun's end-to-end tests: real `bosun-server`, `launch-agent` and `task-agent`
//! processes on loopback, real git repositories, real SQLite files.
//!
//! The binaries are built once per test run with the same cargo and profile (`cargo build
//! --bins`), so `cargo test` alone is enough.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bosun_api::{
    Auth, Client, CreateProject, CreateResourceClass, CreateToken, Job, JobDetail, Pipeline,
    PipelineCreated, TriggerPipeline,
};

mod sshd;
pub use sshd::{SshKeyPair, Sshd, ssh_keypair};

/// The unprivileged user end-to-end tests run jobs as when they run as root.
pub const TEST_JOB_USER: &str = "bosun-test";

/// Where the workspace's binaries are, after building them once. `cargo xtask test` builds them
/// before the suite and says where in `BOSUN_TEST_BIN_DIR`, so no test process runs cargo.
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("BOSUN_TEST_BIN_DIR") {
            return PathBuf::from(dir);
        }
        // target/debug/deps/e2e-HASH -> target/debug
        let exe = std::env::current_exe().expect("test binary path");
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test binary lives in target/PROFILE/deps")
            .to_path_buf();
        let profile = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("debug")
            .to_owned();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut command = Command::new(cargo);
        command.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
        command.args([
            "build",
            "--quiet",
            "--bins",
            "-p",
            "bosun-server",
            "-p",
            "bosun-launch-agent",
            "-p",
            "bosun-task-agent",
            "-p",
            "bosun-cli",
        ]);
        if profile == "release" {
            command.arg("--release");
        }
        let status = command
            .status()
            .expect("running cargo build for the e2e binaries");
        assert!(status.success(), "building the binaries failed: {status}");
        dir
    })
}

/// Fails the test with a message naming the missing system program, where the list of the
/// tests' prerequisites lives and the command that installs them.
pub fn require_program(program: &str, why: &str) {
    let found =
        std::env::split_paths("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .any(|dir| dir.join(program).is_file());
    assert!(
        found,
        "`{program}` is not installed ({why}): it is a test prerequisite listed in \
         xtask/src/prereqs.rs; `cargo xtask test` installs it (as root)"
    );
}

pub fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// As root, makes sure the throwaway job user exists and returns its name.
pub fn job_user() -> Option<&'static str> {
    static USER: OnceLock<Option<&'static str>> = OnceLock::new();
    *USER.get_or_init(|| {
        if !is_root() {
            eprintln!(
                "note: not root: jobs run as the current user (privilege drop not exercised)"
            );
            return None;
        }
        ensure_user(TEST_JOB_USER);
        Some(TEST_JOB_USER)
    })
}

/// As root, creates the throwaway system user `name` (with a home and bash) unless it exists.
fn ensure_user(name: &str) {
    if let Some(user) = nix::unistd::User::from_name(name).ok().flatten() {
        own_home(&user);
        return;
    }
    require_program("useradd", "as root the harness creates throwaway job users");
    let status = Command::new("useradd")
        .args([
            "--system",
            "--user-group",
            "--create-home",
            "--shell",
            "/bin/bash",
            name,
        ])
        .status()
        .expect("running useradd");
    // Another test process may have created it meanwhile.
    assert!(
        status.success() || nix::unistd::User::from_name(name).ok().flatten().is_some(),
        "useradd {name} failed"
    );
    if let Some(user) = nix::unistd::User::from_name(name).ok().flatten() {
        own_home(&user);
    }
}

/// Gives `user` its home back if another owns it: test processes running `useradd` for
/// different users at the same moment on a fresh machine have been seen to leave one user's
/// home owned by the other.
fn own_home(user: &nix::unistd::User) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(&user.dir) else {
        return;
    };
    if meta.uid() == user.uid.as_raw() {
        return;
    }
    let status = Command::new("chown")
        .arg("-R")
        .arg(format!("{}:{}", user.uid, user.gid))
        .arg(&user.dir)
        .status()
        .expect("running chown");
    assert!(status.success(), "chown of {} failed", user.dir.display());
}

/// A secret's value for a measurement: 32 characters of `A-Z0-9` from a small generator seeded
/// by `seed`, distinct for distinct seeds, and in no benchmark's output.
pub fn secret_value(seed: u64) -> String {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..32)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"[(x % 36) as usize])
        })
        .collect()
}

/// A temporary directory every user may traverse (the job user must reach work dirs and repos).
pub fn shared_tempdir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("bosun-e2e-")
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

/// A child process killed when dropped.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(mut command: Command, log: PathBuf) -> Proc {
    let file = std::fs::File::create(&log).expect("log file");
    command
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log file"))
        .stderr(file);
    let child = command
        .spawn()
        .unwrap_or_else(|err| panic!("starting {command:?}: {err}"));
    Proc { child, log }
}

/// The admin token the harness's servers are started with.
const E2E_ADMIN_TOKEN: &str = "bosun-e2e-admin-token-0123456789";

/// A running bosun-server with its admin client.
pub struct Server {
    pub proc: Proc,
    pub url: String,
    pub data_dir: PathBuf,
    pub client: Client,
    pub admin: Auth,
}

impl Server {
    pub fn start(dir: &Path) -> Server {
        Server::start_with(dir, &[])
    }

    pub fn start_with(dir: &Path, extra: &[&str]) -> Server {
        Server::start_custom(dir, extra, Some(E2E_ADMIN_TOKEN), |_| {})
    }

    /// A server speaking HTTPS with `cert` and `key` (PEM files), whose admin client trusts
    /// the CA in `ca`.
    pub fn start_tls(dir: &Path, cert: &Path, key: &Path, ca: &Path) -> Server {
        let (cert, key) = (cert.display().to_string(), key.display().to_string());
        let mut server = Server::start_custom(
            dir,
            &["--tls-cert", &cert, "--tls-key", &key],
            Some(E2E_ADMIN_TOKEN),
            |_| {},
        );
        assert!(server.url.starts_with("https://"), "{}", server.url);
        server.client = Client::with_options(
            &server.url,
            bosun_api::Timeouts::default(),
            &bosun_api::ConnectOptions {
                ca_file: Some(ca.to_owned()),
                proxy: Some(bosun_api::ProxyChoice::Direct),
            },
        )
        .expect("a TLS client");
        server
    }

    /// Starts `bosun-server` with `extra` arguments, data in `dir/server`, the admin token from
    /// `BOSUN_ADMIN_TOKEN` (or, with `None`, the one the server generates and writes to
    /// `DATA_DIR/admin-token`), `setup` applied to the command last; waits until it listens.
    fn start_custom(
        dir: &Path,
        extra: &[&str],
        admin_token: Option<&str>,
        setup: impl FnOnce(&mut Command),
    ) -> Server {
        let data_dir = dir.join("server");
        std::fs::create_dir_all(&data_dir).expect("server dir");
        let mut command = Command::new(bin_dir().join("bosun-server"));
        // A caller that picks its own address (to restart on the same port) passes `--listen`.
        if !extra.contains(&"--listen") {
            command.args(["--listen", "127.0.0.1:0"]);
        }
        command.arg("--data-dir").arg(&data_dir).args(extra);
        match admin_token {
            Some(token) => command.env("BOSUN_ADMIN_TOKEN", token),
            None => command.env_remove("BOSUN_ADMIN_TOKEN"),
        };
        setup(&mut command);
        let mut proc = spawn(command, dir.join("server.log"));
        let read_line = |name: &str| {
            std::fs::read_to_string(data_dir.join(name))
                .ok()
                .filter(|text| text.ends_with('\n'))
                .map(|text| text.trim().to_owned())
        };
        let started = Instant::now();
        let (url, token) = loop {
            let token = match admin_token {
                Some(token) => Some(token.to_owned()),
                None => read_line("admin-token"),
            };
            if let (Some(url), Some(token)) = (read_line("server-url"), token) {
                break (url, token);
            }
            if let Ok(Some(status)) = proc.child.try_wait() {
                panic!("bosun-server exited ({status}):\n{}", proc.log_text());
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "server did not start:\n{}",
                proc.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let client = Client::new(&url).expect("client");
        Server {
            proc,
            url,
            data_dir,
            client,
            admin: Auth::CircleToken(token),
        }
    }

    pub async fn resource_class(&self, name: &str) {
        self.client
            .create_resource_class(
                &self.admin,
                &CreateResourceClass {
                    resource_class: name.into(),
                    description: String::new(),
                },
            )
            .await
            .expect("create resource class");
    }

    pub async fn token(&self, resource_class: &str) -> String {
        let token = self
            .client
            .create_token(
                &self.admin,
                &CreateToken {
                    resource_class: resource_class.into(),
                    nickname: "e2e".into(),
                },
            )
            .await
            .expect("create token");
        token.token.expect("token shown at creation")
    }

    pub async fn project(&self, slug: &str, repo: &Path) {
        self.client
            .create_project(
                &self.admin,
                &CreateProject {
                    slug: slug.into(),
                    git_url: repo.to_string_lossy().into_owned(),
                    namespace: None,
                },
            )
            .await
            .expect("create project");
    }

    pub async fn trigger(&self, slug: &str, branch: &str) -> String {
        let body = TriggerPipeline {
            branch: Some(branch.into()),
            ..TriggerPipeline::default()
        };
        self.trigger_with(slug, &body).await.id
    }

    /// Triggers a pipeline with a whole request body (parameters, tag, revision).
    pub async fn trigger_with(&self, slug: &str, body: &TriggerPipeline) -> PipelineCreated {
        self.client
            .trigger_pipeline(&self.admin, slug, body)
            .await
            .expect("trigger pipeline")
    }

    pub async fn pipeline(&self, id: &str) -> Pipeline {
        self.client
            .pipeline(&self.admin, id)
            .await
            .expect("pipeline")
    }

    /// Polls until the pipeline is no longer running.
    pub async fn wait_pipeline(&self, id: &str, limit: Duration) -> Pipeline {
        let started = Instant::now();
        loop {
            let pipeline = self.pipeline(id).await;
            if pipeline.status != "running" {
                return pipeline;
            }
            assert!(
                started.elapsed() < limit,
                "pipeline {id} still running after {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every job of the pipeline, by name.
    pub async fn jobs(&self, pipeline_id: &str) -> Vec<Job> {
        let workflows = self
            .client
            .workflows(&self.admin, pipeline_id)
            .await
            .expect("workflows");
        let mut jobs = Vec::new();
        for workflow in workflows {
            let list = self
                .client
                .jobs(&self.admin, &workflow.id)
                .await
                .expect("jobs");
            jobs.extend(list);
        }
        jobs
    }

    pub async fn job(&self, id: &str) -> JobDetail {
        self.client.job(&self.admin, id).await.expect("job")
    }

    /// A step's whole log, read back through the API page by page.
    pub async fn step_log(&self, job_id: &str, step: u32) -> Vec<u8> {
        let mut log = Vec::new();
        loop {
            let page = self
                .client
                .step_log_page(&self.admin, job_id, step, log.len() as u64)
                .await
                .expect("step log");
            if page.is_empty() {
                return log;
            }
            log.extend_from_slice(&page);
        }
    }
}

/// Options for a launch-agent.
pub struct AgentOptions {
    pub cleanup: bool,
    pub extra_config: String,
    /// Leave `runner.task_agent_path` unset, so a claim naming a task-agent version is served
    /// from releases (the default is the task-agent beside the launch-agent all the same).
    pub task_agent_by_version: bool,
    /// Let the agent update itself. Off by default: an agent of the shared debug build that
    /// updated itself would replace the binaries every other test runs.
    pub auto_update: bool,
}

impl Default for AgentOptions {
    fn default() -> AgentOptions {
        AgentOptions {
            cleanup: true,
            extra_config: String::new(),
            task_agent_by_version: false,
            auto_update: false,
        }
    }
}

/// Starts a launch-agent for `token` whose tasks live under `dir/work`.
pub fn launch_agent(
    server: &Server,
    token: &str,
    dir: &Path,
    name: &str,
    options: AgentOptions,
) -> Proc {
    launch_agent_with_args(server, token, dir, name, options, &[])
}

/// [`launch_agent`] with `args` after `--config FILE` (`--drain-timeout 1s`, say).
pub fn launch_agent_with_args(
    server: &Server,
    token: &str,
    dir: &Path,
    name: &str,
    options: AgentOptions,
    args: &[&str],
) -> Proc {
    launch_agent_with_env(server, token, dir, name, options, args, &[])
}

/// [`launch_agent_with_args`] with `env` set for the launch-agent (`HTTPS_PROXY`, say).
pub fn launch_agent_with_env(
    server: &Server,
    token: &str,
    dir: &Path,
    name: &str,
    options: AgentOptions,
    args: &[&str],
    env: &[(&str, &str)],
) -> Proc {
    let config = write_agent_config(server, token, dir, name, &options);
    let mut command = Command::new(bin_dir().join("launch-agent"));
    command.arg("--config").arg(&config).args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    spawn(command, dir.join(format!("{name}.log")))
}

/// Writes the config [`launch_agent`] starts an agent with (`dir/<name>.yaml`); its path.
pub fn write_agent_config(
    server: &Server,
    token: &str,
    dir: &Path,
    name: &str,
    options: &AgentOptions,
) -> PathBuf {
    let config = agent_config(
        server,
        token,
        dir,
        name,
        "work",
        job_user(),
        options.cleanup,
        &options.extra_config,
    );
    let dropped = |line: &str| {
        let key = line.trim_start();
        (options.task_agent_by_version && key.starts_with("task_agent_path:"))
            || (options.auto_update && key.starts_with("disable_auto_update:"))
    };
    let text = std::fs::read_to_string(&config).expect("agent config");
    let kept: String = text
        .lines()
        .filter(|line| !dropped(line))
        .map(|line| format!("{line}\n"))
        .collect();
    std::fs::write(&config, kept).expect("agent config");
    config
}

/// Waits up to `limit` for `child` to exit; its status. Fails the test past `limit`.
pub fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(
            started.elapsed() < limit,
            "process {} did not exit within {limit:?}",
            child.id()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Writes `dir/<name>.yaml` (0600) for a launch-agent of `token` whose tasks live under
/// `dir/<work>/`, run as `user` when given, with `extra` appended to the `runner` section; it
/// does not update itself (see [`AgentOptions::auto_update`]).
#[allow(clippy::too_many_arguments)]
fn agent_config(
    server: &Server,
    token: &str,
    dir: &Path,
    name: &str,
    work: &str,
    user: Option<&str>,
    cleanup: bool,
    extra: &str,
) -> PathBuf {
    let config = dir.join(format!("{name}.yaml"));
    let mut text = format!(
        "api:\n  auth_token: {token}\n  url: {}\nrunner:\n  disable_auto_update: true\n  name: {name}\n  working_directory: {}/{work}/%s\n  cleanup_working_directory: {cleanup}\n  task_agent_path: {}\n",
        server.url,
        dir.display(),
        bin_dir().join("task-agent").display()
    );
    if let Some(user) = user {
        text.push_str(&format!("  user: {user}\n"));
    }
    text.push_str(extra);
    std::fs::write(&config, text).expect("agent config");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    config
}

/// A git repository with `files` committed on branch `main`; returns its path.
pub fn git_repo(dir: &Path, files: &[(&str, &str)]) -> PathBuf {
    let repo = dir.join("repo");
    std::fs::create_dir_all(&repo).expect("repo dir");
    git(&repo, &["init", "--quiet", "--initial-branch=main"]);
    commit(&repo, files, "initial");
    repo
}

/// Commits `files` (path, content) to the repository; returns the new commit id.
pub fn commit(repo: &Path, files: &[(&str, &str)], message: &str) -> String {
    for (path, content) in files {
        let path = repo.join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, content).expect("write");
    }
    git(repo, &["add", "."]);
    git(
        repo,
        &[
            "-c",
            "user.name=e2e",
            "-c",
            "user.email=e2e@bosun.invalid",
            "commit",
            "--quiet",
            "-m",
            message,
        ],
    );
    git(repo, &["rev-parse", "HEAD"])
}

pub fn git(repo: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .output()
        .expect("git");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Everything a test needs for one pipeline: a server, a resource class with a launch-agent,
/// and a project on a fresh repository holding `config`.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub server: Server,
    pub agent: Proc,
    pub repo: PathBuf,
    pub slug: String,
    pub token: String,
}

impl Fixture {
    pub async fn new(resource_class: &str, config: &str) -> Fixture {
        Fixture::with_files(
            resource_class,
            &[(".circleci/config.yml", config)],
            AgentOptions::default(),
        )
        .await
    }

    pub async fn with_files(
        resource_class: &str,
        files: &[(&str, &str)],
        options: AgentOptions,
    ) -> Fixture {
        let dir = shared_tempdir();
        let server = Server::start(dir.path());
        server.resource_class(resource_class).await;
        let token = server.token(resource_class).await;
        let agent = launch_agent(&server, &token, dir.path(), "agent", options);
        let repo = git_repo(dir.path(), files);
        let slug = "local/e2e/repo".to_owned();
        server.project(&slug, &repo).await;
        Fixture {
            dir,
            server,
            agent,
            repo,
            slug,
            token,
        }
    }

    /// Triggers a pipeline on `main` and waits for it to end.
    pub async fn run(&self) -> (Pipeline, Vec<Job>) {
        let id = self.server.trigger(&self.slug, "main").await;
        let pipeline = self
            .server
            .wait_pipeline(&id, Duration::from_secs(120))
            .await;
        let jobs = self.server.jobs(&id).await;
        (pipeline, jobs)
    }

    pub fn job<'a>(&self, jobs: &'a [Job], name: &str) -> &'a Job {
        jobs.iter()
            .find(|j| j.name == name)
            .unwrap_or_else(|| panic!("no job `{name}` in {jobs:?}"))
    }
}

/// Pids of live processes whose environment carries `BOSUN_TASK_ID=<task_id>` (the marker the
/// task-agent gives every step). Zombies have an empty environment and do not count.
pub fn marked_processes(task_id: &str) -> Vec<i32> {
    let marker = format!("BOSUN_TASK_ID={task_id}");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) {
            if environ
                .split(|b| *b == 0)
                .any(|var| var == marker.as_bytes())
            {
                found.push(pid);
            }
        }
    }
    found
}

impl Server {
    /// The id of the first job of the pipeline named `name`, once it exists.
    pub async fn job_id(&self, pipeline_id: &str, name: &str) -> String {
        let started = Instant::now();
        loop {
            if let Some(job) = self
                .jobs(pipeline_id)
                .await
                .into_iter()
                .find(|j| j.name == name)
            {
                return job.id;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "no job {name}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until step `step` of `job_id` has logged `needle`; returns the log so far.
    pub async fn wait_for_log(
        &self,
        job_id: &str,
        step: u32,
        needle: &str,
        limit: Duration,
    ) -> String {
        let started = Instant::now();
        loop {
            let log = String::from_utf8_lossy(&self.step_log(job_id, step).await).into_owned();
            if log.contains(needle) {
                return log;
            }
            assert!(
                started.elapsed() < limit,
                "step {step} of job {job_id} never printed {needle:?}; log: {log:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the job's status is final; returns it.
    pub async fn wait_job(&self, job_id: &str, limit: Duration) -> JobDetail {
        let started = Instant::now();
        loop {
            let job = self.job(job_id).await;
            if bosun_api::job_status_is_final(&job.status) {
                return job;
            }
            assert!(
                started.elapsed() < limit,
                "job {job_id} still {} after {limit:?}",
                job.status
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn cancel(&self, job_id: &str) {
        self.client
            .cancel_job(&self.admin, job_id)
            .await
            .expect("cancel job");
    }
}

// ---- server hardening (issue 8: the data directory, namespaces, ended tasks' tokens) ----

impl Server {
    /// Starts a server as a first start by hand does: without `BOSUN_ADMIN_TOKEN`, so it
    /// generates the admin token and writes it to `DATA_DIR/admin-token`, read back here (the
    /// tests run as the server's own user). The data directory is made beforehand with the
    /// umask's usual 0755, as `Server::start` does.
    pub fn start_generating_admin_token(dir: &Path) -> Server {
        Server::start_custom(dir, &[], None, |_| {})
    }
}

// Hardening (issue 8): job users no other test shares, for tests whose launch-agent kills every
// process of its (dedicated) job user or limits the processes of that user.

/// As root, makes sure the throwaway system user `name` exists and returns it; `None` when not
/// root. Give each test its own name: nothing else may run as that user.
pub fn dedicated_job_user(name: &'static str) -> Option<&'static str> {
    if !is_root() {
        return None;
    }
    ensure_user(name);
    Some(name)
}

/// Like [`launch_agent`], with jobs run as `user` instead of [`TEST_JOB_USER`].
pub fn launch_agent_as(
    server: &Server,
    token: &str,
    dir: &Path,
    name: &str,
    user: &str,
    options: AgentOptions,
) -> Proc {
    let config = agent_config(
        server,
        token,
        dir,
        name,
        "work",
        Some(user),
        options.cleanup,
        &options.extra_config,
    );
    let mut command = Command::new(bin_dir().join("launch-agent"));
    command.arg("--config").arg(&config);
    spawn(command, dir.join(format!("{name}.log")))
}

// Isolation (issue 8: terminals, descriptors, cross-job reads): a second throwaway job user and a
// launch-agent whose job user, working directory and process setup a test chooses.

/// A second unprivileged job user, for tests of what one job user's jobs can see of another's.
pub const SECOND_JOB_USER: &str = "bosun-test2";

/// As root, makes sure [`SECOND_JOB_USER`] exists and returns its name.
pub fn second_job_user() -> Option<&'static str> {
    dedicated_job_user(SECOND_JOB_USER)
}

/// Starts a launch-agent like [`launch_agent`], with tasks under `dir/<name>-work`, jobs run as
/// `user` (when root), `extra_config` appended to the `runner` section, and `setup` applied to
/// the command last (it may replace the log file as stdio, add a `pre_exec`).
pub fn launch_agent_with(
    server: &Server,
    token: &str,
    dir: &Path,
    name: &str,
    user: Option<&str>,
    extra_config: &str,
    setup: impl FnOnce(&mut Command),
) -> Proc {
    let work = format!("{name}-work");
    let config = agent_config(server, token, dir, name, &work, user, true, extra_config);
    let log = dir.join(format!("{name}.log"));
    let file = std::fs::File::create(&log).expect("log file");
    let mut command = Command::new(bin_dir().join("launch-agent"));
    command
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log file"))
        .stderr(file);
    setup(&mut command);
    let child = command
        .spawn()
        .unwrap_or_else(|err| panic!("starting {command:?}: {err}"));
    Proc { child, log }
}

// Connections (issue 8, finding 5): a server started under a low open-file limit.

impl Server {
    /// Like [`Server::start_with`], with the server's soft and hard `RLIMIT_NOFILE` set to
    /// `nofile` before it starts, so a test can reach the descriptor limit with a few hundred
    /// connections.
    pub fn start_with_nofile(dir: &Path, extra: &[&str], nofile: u64) -> Server {
        Server::start_custom(dir, extra, Some(E2E_ADMIN_TOKEN), |command| {
            use std::os::unix::process::CommandExt;
            // SAFETY: the closure runs in the forked child before exec and calls only
            // setrlimit, which is async-signal-safe; it allocates nothing and touches no lock.
            unsafe {
                command.pre_exec(move || {
                    nix::sys::resource::setrlimit(
                        nix::sys::resource::Resource::RLIMIT_NOFILE,
                        nofile,
                        nofile,
                    )
                    .map_err(std::io::Error::from)
                });
            }
        })
    }
}

// ---- caches and workspaces (issue 9): a server restarted on its own data ----

/// A loopback address whose port is free now, for a server that is restarted on it.
pub fn free_listen_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    format!(
        "127.0.0.1:{}",
        listener.local_addr().expect("address").port()
    )
}

impl Server {
    /// Kills this server (SIGKILL, as a crash would) and starts it again on the same data
    /// directory with `extra` arguments (which name the same `--listen` address, so agents and
    /// clients find it where they left it).
    pub fn restart(self, dir: &Path, extra: &[&str]) -> Server {
        let Server { proc, data_dir, .. } = self;
        drop(proc);
        // The new server writes its address again once it listens; the old one's file must not
        // pass for it.
        let _ = std::fs::remove_file(data_dir.join("server-url"));
        Server::start_with(dir, extra)
    }
}

/// `VmHWM` (peak resident set) of process `pid`, in KiB.
pub fn peak_rss_kib(pid: i32) -> u64 {
    proc_status_kib(pid, "VmHWM:").expect("VmHWM")
}

/// A `kB` field of `/proc/PID/status` (`VmRSS:`, `VmHWM:`, ...), if the process and field exist.
pub fn proc_status_kib(pid: i32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
}

impl Server {
    /// Runs `bosun ARGS` against this server as its admin (`BOSUN_HOST`, `BOSUN_TOKEN`), with
    /// `stdin` fed in (where secrets go); answers the whole output, whatever the exit status.
    pub fn cli(&self, args: &[&str], stdin: &str) -> std::process::Output {
        use std::io::Write as _;
        let Auth::CircleToken(token) = &self.admin else {
            panic!("the admin's auth is a Circle-Token");
        };
        let mut child = Command::new(bin_dir().join("bosun"))
            .args(args)
            .env("BOSUN_HOST", &self.url)
            .env("BOSUN_TOKEN", token)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("bosun");
        child
            .stdin
            .take()
            .expect("bosun's stdin")
            .write_all(stdin.as_bytes())
            .expect("writing bosun's stdin");
        child.wait_with_output().expect("bosun's output")
    }

    /// [`Server::cli`] that must succeed; answers its stdout.
    pub fn cli_ok(&self, args: &[&str], stdin: &str) -> String {
        let output = self.cli(args, stdin);
        assert!(
            output.status.success(),
            "bosun {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("bosun's stdout is UTF-8")
    }
}
