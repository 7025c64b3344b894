//! `launch-agent-config.yaml` (or machine runner 3's `circleci-runner-config.yaml`), CircleCI's
//! keys, with `LAUNCH_AGENT_*` and `CIRCLECI_RUNNER_*` environment overrides. Read before any
//! privilege drop: the file may be mode 0600 root and hold the runner token. Every value keeps
//! where it came from (file and line, variable, default): errors and `--check-config` name it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};

/// Largest config file accepted.
const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// The default `logging.max_size`.
const DEFAULT_LOG_MAX_SIZE: u64 = 100 << 20;
/// `runner.max_spool_size` unless set.
const DEFAULT_MAX_SPOOL_SIZE: u64 = 1 << 30;
/// Most `runner.max_concurrent_tasks`.
const MAX_CONCURRENT_TASKS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Continuous,
    SingleTask,
}

/// Who the task-agent runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobUser {
    /// The launch-agent's own user (not root): no switch.
    Current,
    /// A user name or numeric uid to switch to (launch-agent runs as root).
    Named(String),
}

#[derive(Clone)]
pub struct Config {
    pub api_url: String,
    /// `api.ca_file`: PEM certificates trusted besides the system's roots, for a server whose
    /// certificate a private CA signed.
    pub ca_file: Option<PathBuf>,
    pub auth_token: String,
    pub runner_name: String,
    /// May contain `%s`, replaced by the task id.
    pub working_directory: String,
    pub cleanup_working_directory: bool,
    pub mode: Mode,
    pub max_run_time: Duration,
    /// Between SIGTERM and SIGKILL when a step is canceled or times out.
    pub termination_grace_period: Duration,
    pub idle_timeout: Option<Duration>,
    pub user: JobUser,
    /// CircleCI's `runner.command_prefix` (e.g. `["sudo", "-niHu", "circleci", "--"]`): the
    /// task-agent is started through it instead of by bosun's own privilege drop.
    pub command_prefix: Vec<String>,
    pub group: Option<String>,
    pub task_agent_path: PathBuf,
    /// `runner.task_agent_path` was set: that binary runs every task, whatever version a claim
    /// names (no task-agent is downloaded).
    pub task_agent_pinned: bool,
    /// `runner.task_agent_directory` (machine runner 3's key): where downloaded task-agents are
    /// kept, one verified directory per version (default `.bosun-task-agents` beside the task
    /// directories).
    pub task_agent_directory: PathBuf,
    /// `runner.update.trusted_keys` (PEM ed25519 public keys, root-only files when root) and
    /// the keys compiled in (`BOSUN_RELEASE_KEYS`): a release must be signed by one of them.
    pub trusted_keys: Vec<crate::release::TrustedKey>,
    /// `runner.disable_auto_update`: no self-update (task-agents are still fetched by version).
    pub disable_auto_update: bool,
    /// `runner.update.check_interval` (bosun's; default 5m): how often an idle agent asks which
    /// release it is to run (a promotion also ends idle claims at once, so agents ask then).
    pub update_check_interval: Duration,
    pub logging_file: Option<PathBuf>,
    /// `runner.cgroups` (default true): a cgroup v2 per task where the host offers one; false
    /// for hosts where bosun must not touch the cgroup tree.
    pub cgroups: bool,
    /// `runner.dedicated_user` (default false): the job user runs nothing but this launch-agent's
    /// tasks, so after a task every process of that user started since the task began may be
    /// killed, and at start every process of that user.
    pub dedicated_user: bool,
    /// `runner.max_pids` (default 4096; `unlimited` for none): processes and threads per task.
    pub max_pids: Option<u64>,
    /// `runner.max_memory` (default 3/4 of the host's memory; `unlimited` for none): bytes of
    /// memory per task, enforced where the cgroup memory controller is available.
    pub max_memory: Option<u64>,
    /// `runner.max_concurrent_tasks` (bosun's; default 1): tasks run at once, each with its own
    /// directory, cgroup and task-agent.
    pub max_concurrent_tasks: usize,
    /// `runner.max_spool_size` (bosun's; default 1G): bytes of one task's output (log chunks,
    /// step events) held for an unreachable server, spooled to disk under the ledger; past it
    /// the task fails.
    pub max_spool_size: u64,
    /// `runner.metrics_addr` (bosun's; off by default): where `GET /metrics` is served.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// `logging.level` (default `info`; `BOSUN_LOG` wins).
    pub logging_level: String,
    /// `logging.format` (default `text`).
    pub logging_format: LogFormat,
    /// `logging.max_size` (bosun's; default 100 MiB; `0` or `unlimited`: never): `logging.file`
    /// rotates past it.
    pub logging_max_size: u64,
    /// `logging.max_files` (bosun's; default 5): rotated files kept.
    pub logging_max_files: u32,
    /// Problems that do not stop the agent (unknown keys), reported once at start.
    pub warnings: Vec<String>,
    /// Every key with its value as given (`""` when not set; the token redacted) and where it
    /// came from, for `--check-config`.
    pub effective: Vec<(String, String, Origin)>,
}

impl std::fmt::Debug for Config {
    // The token never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("api_url", &self.api_url)
            .field("ca_file", &self.ca_file)
            .field("auth_token", &"<redacted>")
            .field("runner_name", &self.runner_name)
            .field("working_directory", &self.working_directory)
            .field("cleanup_working_directory", &self.cleanup_working_directory)
            .field("mode", &self.mode)
            .field("max_run_time", &self.max_run_time)
            .field("termination_grace_period", &self.termination_grace_period)
            .field("idle_timeout", &self.idle_timeout)
            .field("user", &self.user)
            .field("group", &self.group)
            .field("task_agent_path", &self.task_agent_path)
            .field("task_agent_directory", &self.task_agent_directory)
            .field("trusted_keys", &self.trusted_keys.len())
            .field("disable_auto_update", &self.disable_auto_update)
            .field("cgroups", &self.cgroups)
            .field("dedicated_user", &self.dedicated_user)
            .field("max_pids", &self.max_pids)
            .field("max_memory", &self.max_memory)
            .finish()
    }
}

/// Parses Go-style durations as CircleCI writes them: `5h`, `1h30m20s`, `90s`, `500ms`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("`{text}` is not a duration like `5h` or `1h30m`"));
        }
        let number: f64 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{text}` is not a duration like `5h` or `1h30m`"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "" => return Err(format!("`{text}` needs a unit (h, m, s or ms)")),
            other => return Err(format!("unknown unit `{other}` in `{text}`")),
        };
        rest = &rest[unit_len..];
        total += Duration::from_secs_f64(number * unit);
    }
    Ok(total)
}

/// The default `runner.max_pids`. Real builds stay far below it (a `make -j64` with its
/// compilers, a JVM with a few hundred threads), while a fork bomb stops long before the host's
/// `pid_max` (32768 on many hosts) and below systemd's own default cap for a service (15 % of
/// `pid_max`, 4915 there).
pub const DEFAULT_MAX_PIDS: u64 = 4096;

/// Parses a byte size: `4G`, `512M`, `64k`, `1GiB`, `1048576` (binary multiples).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let number: u64 = text[..digits]
        .parse()
        .map_err(|_| format!("`{text}` is not a size like `4G` or `512M`"))?;
    let unit = text[digits..].trim().to_ascii_lowercase();
    let unit = unit.trim_end_matches('b').trim_end_matches('i');
    let multiple: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return Err(format!("unknown unit in `{text}` (use K, M, G or T)")),
    };
    number
        .checked_mul(multiple)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// `unlimited` (or `none`, `0`) means no limit; anything else goes through `parse`.
fn parse_limit(
    text: &str,
    parse: impl Fn(&str) -> Result<u64, String>,
) -> Result<Option<u64>, String> {
    match text.trim() {
        "unlimited" | "none" | "0" => Ok(None),
        other => parse(other).map(Some),
    }
}

/// Three quarters of `MemTotal`: a task that leaks is stopped while the rest of the host (the
/// launch-agent, the server, sshd) still has a quarter to work with.
fn default_max_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024 / 4 * 3)
}

/// Where a configuration value came from, for errors and `--check-config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A line of the config file.
    File { path: PathBuf, line: usize },
    /// An environment variable (`LAUNCH_AGENT_*` or `CIRCLECI_RUNNER_*`).
    Env(String),
    /// Nobody set it.
    Default,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::File { path, line } => write!(f, "{}:{line}", path.display()),
            Origin::Env(name) => write!(f, "env {name}"),
            Origin::Default => f.write_str("default"),
        }
    }
}

/// One value as given, before it is parsed.
#[derive(Debug, Clone)]
struct Given {
    /// Scalar text; a list's items joined by U+001F.
    text: String,
    is_list: bool,
    origin: Origin,
}

/// What the YAML parser saw of the file, flattened to dotted names with their lines.
#[derive(Debug, Default)]
struct FileEntries {
    /// Scalars and lists of scalars: `(name, text, is_list, line)`.
    values: Vec<(String, String, bool, usize)>,
    /// Maps below the top level: `(name, line)`.
    maps: Vec<(String, usize)>,
    /// The first thing that cannot be read (a list of maps, an alias), with its line.
    error: Option<(String, usize)>,
    /// Whether the top level is a map (or the file is empty).
    top_is_map: Option<bool>,
}

/// A YAML event receiver that flattens maps to dotted names and keeps each key's line
/// (`YamlLoader` drops the positions).
#[derive(Default)]
struct Flatten {
    out: FileEntries,
    /// Open maps and lists: for a map, its name and the key whose value comes next.
    stack: Vec<Frame>,
}

enum Frame {
    Map {
        name: String,
        key: Option<(String, usize)>,
    },
    List {
        name: String,
        line: usize,
        items: Vec<String>,
    },
}

impl Flatten {
    /// The dotted name of the value that starts now, and its key's line.
    fn value_name(&mut self) -> Option<(String, usize)> {
        match self.stack.last_mut()? {
            Frame::Map { name, key } => {
                let (key, line) = key.take()?;
                let full = if name.is_empty() {
                    key
                } else {
                    format!("{name}.{key}")
                };
                Some((full, line))
            }
            Frame::List { .. } => None,
        }
    }

    fn fail(&mut self, what: String, line: usize) {
        if self.out.error.is_none() {
            self.out.error = Some((what, line));
        }
    }
}

impl yaml_rust2::parser::MarkedEventReceiver for Flatten {
    fn on_event(&mut self, event: yaml_rust2::Event, mark: yaml_rust2::scanner::Marker) {
        use yaml_rust2::Event;
        let line = mark.line();
        match event {
            Event::MappingStart(..) => {
                if self.stack.is_empty() {
                    self.out.top_is_map.get_or_insert(true);
                    self.stack.push(Frame::Map {
                        name: String::new(),
                        key: None,
                    });
                    return;
                }
                if matches!(self.stack.last(), Some(Frame::List { .. })) {
                    self.fail("a list may hold only plain values".into(), line);
                }
                let (name, line) = self.value_name().unwrap_or_default();
                self.out.maps.push((name.clone(), line));
                self.stack.push(Frame::Map { name, key: None });
            }
            Event::SequenceStart(..) => {
                if self.stack.is_empty() {
                    self.out.top_is_map = Some(false);
                }
                if matches!(self.stack.last(), Some(Frame::List { .. })) {
                    self.fail("a list may hold only plain values".into(), line);
                }
                let (name, line) = self.value_name().unwrap_or_default();
                self.stack.push(Frame::List {
                    name,
                    line,
                    items: Vec::new(),
                });
            }
            Event::MappingEnd => {
                self.stack.pop();
            }
            Event::SequenceEnd => {
                if let Some(Frame::List { name, line, items }) = self.stack.pop() {
                    if !name.is_empty() {
                        self.out
                            .values
                            .push((name, items.join("\u{1f}"), true, line));
                    }
                }
            }
            Event::Scalar(text, style, ..) => {
                let null = style == yaml_rust2::scanner::TScalarStyle::Plain
                    && matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL");
                match self.stack.last_mut() {
                    None => self.out.top_is_map = Some(null),
                    Some(Frame::List { items, .. }) => items.push(text),
                    Some(Frame::Map { key, .. }) if key.is_none() => *key = Some((text, line)),
                    Some(Frame::Map { .. }) => {
                        let (name, line) = self.value_name().unwrap_or_default();
                        if !null {
                            self.out.values.push((name, text, false, line));
                        }
                    }
                }
            }
            Event::Alias(_) => self.fail("YAML aliases are not supported here".into(), line),
            _ => {}
        }
    }
}

fn parse_bool(text: &str) -> Result<bool, String> {
    match text {
        "true" | "True" | "1" | "yes" => Ok(true),
        "false" | "False" | "0" | "no" => Ok(false),
        other => Err(format!("must be true or false, not `{other}`")),
    }
}

/// The file's values by dotted name (`runner.name`), with their lines; unknown keys and
/// values of the wrong shape are reported naming the key and line.
fn read_file(path: &Path, warnings: &mut Vec<String>) -> anyhow::Result<Vec<(String, Given)>> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if meta.len() > MAX_CONFIG_BYTES {
        bail!(
            "{} is {} bytes; the limit is {MAX_CONFIG_BYTES}",
            path.display(),
            meta.len()
        );
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut flatten = Flatten::default();
    yaml_rust2::parser::Parser::new_from_str(&text)
        .load(&mut flatten, false)
        .map_err(|err| anyhow::anyhow!("{}: {err}", path.display()))?;
    let entries = flatten.out;
    let at = |line: usize| format!("{}:{line}", path.display());
    if let Some((what, line)) = entries.error {
        bail!("{}: {what}", at(line));
    }
    if entries.top_is_map == Some(false) {
        bail!(
            "{}: the top level must be a map of sections (api, runner, logging)",
            path.display()
        );
    }
    let known = |name: &str| KEYS.iter().any(|(key, _)| *key == name);
    // A map where a value belongs, or a value where a section belongs.
    for (name, line) in &entries.maps {
        if known(name) {
            bail!("`{name}` ({}) must be a single value, not a map", at(*line));
        }
    }
    let mut given = Vec::new();
    for (name, text, is_list, line) in entries.values {
        if SECTIONS.contains(&name.as_str()) || name == "runner.ssh" {
            bail!("`{name}` ({}) must be a map of keys", at(line));
        }
        if !known(&name) {
            if !entries
                .maps
                .iter()
                .any(|(map, _)| name.starts_with(&format!("{map}.")))
                && !name.contains('.')
            {
                warnings.push(format!(
                    "unknown section `{name}` ({}) is ignored",
                    at(line)
                ));
            } else {
                warnings.push(format!("unknown key `{name}` ({}) is ignored", at(line)));
            }
            continue;
        }
        if is_list && !LIST_KEYS.contains(&name.as_str()) {
            bail!("`{name}` ({}) must be a single value, not a list", at(line));
        }
        given.push((
            name,
            Given {
                text,
                is_list,
                origin: Origin::File {
                    path: path.to_owned(),
                    line,
                },
            },
        ));
    }
    Ok(given)
}

/// A warning when the file holding the runner token can be read by its group or others (as ssh
/// says of a private key), naming the file, its mode and the fix.
fn token_file_warning(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o7777;
    (mode & 0o077 != 0).then(|| {
        format!(
            "{} holds api.auth_token but its mode is {mode:04o}, readable by group or others: \
             run `chmod 600 {}`",
            path.display(),
            path.display()
        )
    })
}

/// The sections of the file.
const SECTIONS: &[&str] = &["api", "runner", "logging"];

/// Every key bosun understands, with the suffix of its environment variables: CircleCI's
/// launch-agent reads `LAUNCH_AGENT_<suffix>` for `api.*` and `logging.*` and
/// `LAUNCH_AGENT_RUNNER_<suffix>` for `runner.*`; machine runner 3 reads
/// `CIRCLECI_RUNNER_<suffix>` for all ([`env_names`]).
pub const KEYS: &[(&str, &str)] = &[
    ("api.auth_token", "API_AUTH_TOKEN"),
    ("api.url", "API_URL"),
    ("api.ca_file", "API_CA_FILE"),
    ("runner.name", "NAME"),
    ("runner.working_directory", "WORK_DIR"),
    ("runner.cleanup_working_directory", "CLEANUP_WORK_DIR"),
    ("runner.mode", "MODE"),
    ("runner.max_run_time", "MAX_RUN_TIME"),
    ("runner.idle_timeout", "IDLE_TIMEOUT"),
    (
        "runner.termination_grace_period",
        "TERMINATION_GRACE_PERIOD",
    ),
    ("runner.disable_auto_update", "DISABLE_AUTO_UPDATE"),
    ("runner.command_prefix", "COMMAND_PREFIX"),
    ("runner.ssh.advertise_addr", "SSH_ADVERTISE_ADDR"),
    ("runner.user", "USER"),
    ("runner.group", "GROUP"),
    ("runner.task_agent_path", "TASK_AGENT_PATH"),
    ("runner.task_agent_directory", "TASK_AGENT_DIRECTORY"),
    ("runner.update.trusted_keys", "UPDATE_TRUSTED_KEYS"),
    ("runner.update.check_interval", "UPDATE_CHECK_INTERVAL"),
    ("runner.cgroups", "CGROUPS"),
    ("runner.dedicated_user", "DEDICATED_USER"),
    ("runner.max_pids", "MAX_PIDS"),
    ("runner.max_memory", "MAX_MEMORY"),
    ("runner.max_concurrent_tasks", "MAX_CONCURRENT_TASKS"),
    ("runner.max_spool_size", "MAX_SPOOL_SIZE"),
    ("runner.metrics_addr", "METRICS_ADDR"),
    ("logging.file", "LOGGING_FILE"),
    ("logging.level", "LOGGING_LEVEL"),
    ("logging.format", "LOGGING_FORMAT"),
    ("logging.max_size", "LOGGING_MAX_SIZE"),
    ("logging.max_files", "LOGGING_MAX_FILES"),
];

/// The keys whose value is a list (from the environment: words separated by spaces).
const LIST_KEYS: &[&str] = &["runner.command_prefix", "runner.update.trusted_keys"];

/// The environment variables that set `key`, strongest first: the launch-agent's
/// `LAUNCH_AGENT_*`, then machine runner 3's `CIRCLECI_RUNNER_*`.
pub fn env_names(key: &str, suffix: &str) -> [String; 2] {
    let launch_agent = if key.starts_with("runner.") {
        format!("LAUNCH_AGENT_RUNNER_{suffix}")
    } else {
        format!("LAUNCH_AGENT_{suffix}")
    };
    [launch_agent, format!("CIRCLECI_RUNNER_{suffix}")]
}

/// How the launch-agent's own log lines are written (`logging.format`, machine runner 3's
/// key): `text` (the default), `color` (text with ANSI colours, never into a file), `json`
/// (one object per line), `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Color,
    Json,
    None,
}

/// Loads the file (if given) and applies the environment overrides from `env`.
pub fn load(
    path: Option<&Path>,
    env: impl Fn(&str) -> Option<String>,
    running_as_root: bool,
) -> anyhow::Result<Config> {
    let mut warnings = Vec::new();
    let mut given: Vec<(String, Given)> = match path {
        Some(path) => read_file(path, &mut warnings)?,
        None => Vec::new(),
    };
    if let Some(path) = path {
        if given
            .iter()
            .any(|(name, value)| name == "api.auth_token" && !value.text.is_empty())
        {
            if let Some(warning) = token_file_warning(path) {
                warnings.push(warning);
            }
        }
    }
    for (key, suffix) in KEYS {
        if let Some((variable, text)) = env_names(key, suffix)
            .into_iter()
            .find_map(|name| env(&name).map(|text| (name, text)))
        {
            given.retain(|(name, _)| name != key);
            given.push((
                (*key).to_owned(),
                Given {
                    text,
                    is_list: false,
                    origin: Origin::Env(variable),
                },
            ));
        }
    }
    let values = Values { given };
    let v = &values;

    let auth_token = v
        .text("api.auth_token")
        .filter(|t| !t.is_empty())
        .context("`api.auth_token` is required (or LAUNCH_AGENT_API_AUTH_TOKEN)")?;
    let api_url = v
        .text("api.url")
        .unwrap_or_else(|| "http://127.0.0.1:8730".into());
    if !(api_url.starts_with("http://") || api_url.starts_with("https://")) {
        bail!(
            "api.url `{api_url}` ({}) must start with http:// or https://",
            v.origin("api.url")
        );
    }
    let ca_file = v
        .text("api.ca_file")
        .filter(|f| !f.is_empty())
        .map(PathBuf::from);
    if let Some(path) = &ca_file {
        if !path.is_file() {
            bail!(
                "api.ca_file `{}` ({}) is not a readable file",
                path.display(),
                v.origin("api.ca_file")
            );
        }
    }
    let runner_name = match v.text("runner.name") {
        Some(name) => name,
        None => nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .context("`runner.name` is required when the hostname is unreadable")?,
    };
    let name_ok = !runner_name.is_empty()
        && runner_name.len() <= 128
        && runner_name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " .()-_".contains(c));
    if !name_ok {
        bail!(
            "runner.name `{runner_name}` ({}) must contain only letters, numbers, .()_-, and spaces",
            v.origin("runner.name")
        );
    }
    let working_directory = v.text("runner.working_directory").unwrap_or_else(|| {
        if running_as_root {
            "/var/opt/circleci/workdir/%s".into()
        } else {
            std::env::temp_dir()
                .join("bosun-workdir/%s")
                .to_string_lossy()
                .into_owned()
        }
    });
    if !working_directory.starts_with('/') {
        bail!(
            "runner.working_directory `{working_directory}` ({}) must be an absolute path",
            v.origin("runner.working_directory")
        );
    }
    let cleanup_working_directory = v
        .parse("runner.cleanup_working_directory", parse_bool)?
        .unwrap_or(false);
    let mode = v
        .parse("runner.mode", |text| match text {
            "continuous" => Ok(Mode::Continuous),
            "single-task" => Ok(Mode::SingleTask),
            other => Err(format!("`{other}` must be `continuous` or `single-task`")),
        })?
        .unwrap_or(Mode::Continuous);
    let max_run_time = v
        .parse("runner.max_run_time", parse_duration)?
        .unwrap_or(Duration::from_secs(5 * 3600));
    let termination_grace_period = v
        .parse("runner.termination_grace_period", parse_duration)?
        .unwrap_or(Duration::from_secs(10));
    let idle_timeout = v.parse("runner.idle_timeout", parse_duration)?;
    let disable_auto_update = v
        .parse("runner.disable_auto_update", parse_bool)?
        .unwrap_or(false);
    let update_check_interval = v
        .parse("runner.update.check_interval", parse_duration)?
        .unwrap_or(Duration::from_secs(300));
    let command_prefix = v.list("runner.command_prefix");
    let mut trusted_keys = crate::release::compiled_keys()
        .context("the release keys compiled in (BOSUN_RELEASE_KEYS)")?;
    for path in v.list("runner.update.trusted_keys") {
        let key = crate::release::TrustedKey::read(std::path::Path::new(&path), running_as_root)
            .with_context(|| {
                format!(
                    "runner.update.trusted_keys ({})",
                    v.origin("runner.update.trusted_keys")
                )
            })?;
        trusted_keys.push(key);
    }
    if v.get("runner.ssh.advertise_addr").is_some() {
        warnings.push("runner.ssh.advertise_addr is not supported yet: SSH reruns are off".into());
    }
    let user = match v.text("runner.user") {
        Some(user) if !user.is_empty() => {
            if !running_as_root {
                warnings.push(format!(
                    "runner.user `{user}` is ignored: the launch-agent is not root, so jobs run as its own user"
                ));
                JobUser::Current
            } else {
                JobUser::Named(user)
            }
        }
        _ => JobUser::Current,
    };
    if running_as_root && user == JobUser::Current {
        if command_prefix.is_empty() {
            bail!(
                "the launch-agent runs as root: set `runner.user` to the unprivileged user jobs run as"
            );
        }
        bail!(
            "runner.command_prefix needs `runner.user` too when the launch-agent runs as root: \
             the user the prefix switches to, who owns the task's directory and must be the one \
             connecting back"
        );
    }
    let task_agent_pinned = v.text("runner.task_agent_path").is_some();
    let task_agent_path = match v.text("runner.task_agent_path") {
        Some(path) => PathBuf::from(path),
        None => std::env::current_exe()
            .context("locating the launch-agent binary")?
            .with_file_name("task-agent"),
    };
    let task_agent_directory = match v.text("runner.task_agent_directory") {
        Some(dir) if dir.starts_with('/') => PathBuf::from(dir),
        Some(dir) => bail!(
            "runner.task_agent_directory `{dir}` ({}) must be an absolute path",
            v.origin("runner.task_agent_directory")
        ),
        None => crate::privileged::tasks_base_dir(&working_directory).join(".bosun-task-agents"),
    };
    let cgroups = v.parse("runner.cgroups", parse_bool)?.unwrap_or(true);
    let dedicated_user = v
        .parse("runner.dedicated_user", parse_bool)?
        .unwrap_or(false);
    if dedicated_user && user == JobUser::Current {
        warnings.push(
            "runner.dedicated_user is ignored: jobs run as the launch-agent's own user".into(),
        );
    }
    let dedicated_user = dedicated_user && user != JobUser::Current;
    let max_pids = match v.parse("runner.max_pids", |text| {
        parse_limit(text, |t| {
            t.parse::<u64>()
                .map_err(|_| format!("`{t}` is not a number of processes"))
        })
    })? {
        Some(limit) => limit,
        None => Some(DEFAULT_MAX_PIDS),
    };
    let max_memory = match v.parse("runner.max_memory", |text| parse_limit(text, parse_size))? {
        Some(limit) => limit,
        None => default_max_memory(),
    };
    let max_spool_size = v
        .parse("runner.max_spool_size", |text| match parse_size(text)? {
            0 => Err("the spool bound must be more than 0 bytes".to_owned()),
            n => Ok(n),
        })?
        .unwrap_or(DEFAULT_MAX_SPOOL_SIZE);
    let max_concurrent_tasks = v
        .parse("runner.max_concurrent_tasks", |text| {
            match text.parse::<usize>() {
                Ok(n) if (1..=MAX_CONCURRENT_TASKS).contains(&n) => Ok(n),
                _ => Err(format!(
                    "`{text}` must be a whole number from 1 to {MAX_CONCURRENT_TASKS}"
                )),
            }
        })?
        .unwrap_or(1);
    if max_concurrent_tasks > 1 && dedicated_user {
        bail!(
            "runner.dedicated_user ({}) kills every process of the job user a task started, which \
             would end the other tasks: it needs runner.max_concurrent_tasks 1, not {max_concurrent_tasks} ({})",
            v.origin("runner.dedicated_user"),
            v.origin("runner.max_concurrent_tasks")
        );
    }
    let logging_level = v
        .parse("logging.level", |text| match text {
            "trace" | "debug" | "info" | "warn" | "error" => Ok(text.to_owned()),
            other => Err(format!(
                "`{other}` must be one of trace, debug, info, warn, error"
            )),
        })?
        .unwrap_or_else(|| "info".to_owned());
    let logging_format = v
        .parse("logging.format", |text| match text {
            "text" => Ok(LogFormat::Text),
            "color" => Ok(LogFormat::Color),
            "json" => Ok(LogFormat::Json),
            "none" => Ok(LogFormat::None),
            other => Err(format!("`{other}` must be one of text, color, json, none")),
        })?
        .unwrap_or(LogFormat::Text);
    let metrics_addr = v.parse("runner.metrics_addr", |text| {
        text.parse::<std::net::SocketAddr>()
            .map_err(|_| format!("`{text}` is not an address like 127.0.0.1:9464"))
    })?;
    let logging_max_size = v
        .parse("logging.max_size", |text| parse_limit(text, parse_size))?
        .map_or(Some(DEFAULT_LOG_MAX_SIZE), |limit| limit)
        .unwrap_or(0);
    let logging_max_files = v
        .parse("logging.max_files", |text| match text.parse::<u32>() {
            Ok(n) if n <= 100 => Ok(n),
            _ => Err(format!("`{text}` must be a whole number from 0 to 100")),
        })?
        .unwrap_or(5);
    let mut config = Config {
        api_url,
        ca_file,
        auth_token,
        runner_name,
        working_directory,
        cleanup_working_directory,
        mode,
        max_run_time,
        termination_grace_period,
        idle_timeout,
        user,
        command_prefix,
        group: v.text("runner.group").filter(|g| !g.is_empty()),
        task_agent_path,
        task_agent_pinned,
        task_agent_directory,
        trusted_keys,
        disable_auto_update,
        update_check_interval,
        logging_file: v.text("logging.file").map(PathBuf::from),
        logging_level,
        logging_format,
        logging_max_size,
        logging_max_files,
        cgroups,
        dedicated_user,
        max_pids,
        max_memory,
        max_concurrent_tasks,
        max_spool_size,
        metrics_addr,
        warnings,
        effective: Vec::new(),
    };
    config.effective = KEYS
        .iter()
        .map(|(key, _)| {
            let shown = match v.get(key) {
                _ if *key == "api.auth_token" => "<redacted>".to_owned(),
                Some(given) => given.text.replace('\u{1f}', " "),
                None => default_shown(&config, key),
            };
            ((*key).to_owned(), shown, v.origin(key))
        })
        .collect();
    Ok(config)
}

/// The value `key` took by default, as `--check-config` shows it.
fn default_shown(config: &Config, key: &str) -> String {
    let duration = |d: Duration| humantime::format_duration(d).to_string();
    let limit = |value: Option<u64>| value.map_or("unlimited".to_owned(), |n| n.to_string());
    match key {
        "api.url" => config.api_url.clone(),
        "api.ca_file" => "(none: the system's roots)".into(),
        "runner.name" => config.runner_name.clone(),
        "runner.working_directory" => config.working_directory.clone(),
        "runner.cleanup_working_directory" => config.cleanup_working_directory.to_string(),
        "runner.mode" => match config.mode {
            Mode::Continuous => "continuous".into(),
            Mode::SingleTask => "single-task".into(),
        },
        "runner.max_run_time" => duration(config.max_run_time),
        "runner.idle_timeout" => config.idle_timeout.map_or("never".into(), duration),
        "runner.termination_grace_period" => duration(config.termination_grace_period),
        "runner.disable_auto_update" => config.disable_auto_update.to_string(),
        "runner.task_agent_path" => config.task_agent_path.display().to_string(),
        "runner.task_agent_directory" => config.task_agent_directory.display().to_string(),
        "runner.update.check_interval" => duration(config.update_check_interval),
        "runner.update.trusted_keys" => format!("({} compiled in)", config.trusted_keys.len()),
        "runner.cgroups" => config.cgroups.to_string(),
        "runner.dedicated_user" => config.dedicated_user.to_string(),
        "runner.max_pids" => limit(config.max_pids),
        "runner.max_memory" => limit(config.max_memory),
        "runner.max_concurrent_tasks" => config.max_concurrent_tasks.to_string(),
        "runner.max_spool_size" => config.max_spool_size.to_string(),
        "runner.metrics_addr" => "(off)".into(),
        "logging.file" => "stderr".into(),
        "logging.level" => config.logging_level.clone(),
        "logging.format" => "text".into(),
        "logging.max_size" => config.logging_max_size.to_string(),
        "logging.max_files" => config.logging_max_files.to_string(),
        _ => "(none)".into(),
    }
}

/// The values given, by key, each with where it came from.
struct Values {
    given: Vec<(String, Given)>,
}

impl Values {
    fn get(&self, key: &str) -> Option<&Given> {
        self.given
            .iter()
            .rev()
            .find(|(name, _)| name == key)
            .map(|(_, given)| given)
    }

    fn text(&self, key: &str) -> Option<String> {
        self.get(key).map(|given| given.text.clone())
    }

    /// A list key's items: from the file a YAML list, from the environment words separated by
    /// spaces; empty when not set.
    fn list(&self, key: &str) -> Vec<String> {
        match self.get(key) {
            Some(given) if given.is_list => given.text.split('\u{1f}').map(str::to_owned).collect(),
            Some(given) => given.text.split_whitespace().map(str::to_owned).collect(),
            None => Vec::new(),
        }
    }

    fn origin(&self, key: &str) -> Origin {
        self.get(key)
            .map_or(Origin::Default, |given| given.origin.clone())
    }

    /// `key` parsed by `parse`; an error names the key, where it was set and what is wrong.
    fn parse<T>(
        &self,
        key: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> anyhow::Result<Option<T>> {
        let Some(given) = self.get(key) else {
            return Ok(None);
        };
        parse(given.text.trim())
            .map(Some)
            .map_err(|err| anyhow::anyhow!("{key} ({}): {err}", given.origin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    #[test]
    fn reads_circleci_keys_and_env_overrides_win() {
        let file = write(
            "api:\n  auth_token: from-file\n  url: http://127.0.0.1:1\nrunner:\n  name: box-1\n  working_directory: /tmp/w/%s\n  cleanup_working_directory: true\n  mode: single-task\n  max_run_time: 1h30m\n  surprise: 1\n",
        );
        let env = |name: &str| match name {
            "LAUNCH_AGENT_RUNNER_NAME" => Some("from-env".to_owned()),
            _ => None,
        };
        let config = load(Some(file.path()), env, false).unwrap();
        assert_eq!(config.auth_token, "from-file");
        assert_eq!(config.api_url, "http://127.0.0.1:1");
        assert_eq!(config.runner_name, "from-env");
        assert_eq!(config.working_directory, "/tmp/w/%s");
        assert!(config.cleanup_working_directory);
        assert_eq!(config.mode, Mode::SingleTask);
        assert_eq!(config.max_run_time, Duration::from_secs(5400));
        assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
        assert!(
            config.warnings[0].contains(&format!(
                "unknown key `runner.surprise` ({}:10)",
                file.path().display()
            )),
            "{:?}",
            config.warnings
        );
        assert!(!format!("{config:?}").contains("from-file"));
    }

    #[test]
    fn bad_values_name_the_key() {
        let file = write("api:\n  auth_token: t\nrunner:\n  mode: sometimes\n");
        let err = load(Some(file.path()), |_| None, false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!(
                "runner.mode ({}:4): `sometimes` must be",
                file.path().display()
            )),
            "{err}"
        );
        let err = load(None, |_| None, false).unwrap_err().to_string();
        assert!(err.contains("api.auth_token"), "{err}");
        let file = write("api:\n  auth_token: t\nrunner:\n  name: 'bad/name'\n");
        let err = load(Some(file.path()), |_| None, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("must contain only"), "{err}");
    }

    #[test]
    fn wrong_shapes_name_the_key_and_line() {
        for (text, expected) in [
            (
                "api:\n  auth_token: t\nrunner:\n  name:\n    first: x\n",
                "`runner.name` (PATH:4) must be a single value, not a map",
            ),
            (
                "api:\n  auth_token: t\nrunner:\n  max_run_time: [1h, 2h]\n",
                "`runner.max_run_time` (PATH:4) must be a single value, not a list",
            ),
            ("api: 3\n", "`api` (PATH:1) must be a map of keys"),
            (
                "api:\n  auth_token: t\nrunner:\n  command_prefix:\n    - a: b\n",
                "PATH:5: a list may hold only plain values",
            ),
            ("- a\n- b\n", "the top level must be a map"),
            (
                "api:\n  auth_token: t\nrunner:\n  cgroups: maybe\n",
                "runner.cgroups (PATH:4): must be true or false, not `maybe`",
            ),
        ] {
            let file = write(text);
            let err = load(Some(file.path()), |_| None, false)
                .unwrap_err()
                .to_string();
            let expected = expected.replace("PATH", &file.path().display().to_string());
            assert!(err.contains(&expected), "{text:?}: {err}");
        }
    }

    #[test]
    fn machine_runner_3_variables_work_and_launch_agent_ones_win() {
        let file = write(
            "api:\n  auth_token: from-file\nrunner:\n  name: box-1\n  command_prefix: [\"sudo\", \"-niHu\", \"ci\", \"--\"]\n  ssh:\n    advertise_addr: 10.0.0.1:54782\n  disable_auto_update: true\nlogging:\n  level: debug\n  format: json\n",
        );
        let env = |name: &str| match name {
            "CIRCLECI_RUNNER_API_AUTH_TOKEN" => Some("from-mr3".to_owned()),
            "CIRCLECI_RUNNER_NAME" => Some("mr3-name".to_owned()),
            "LAUNCH_AGENT_RUNNER_NAME" => Some("la-name".to_owned()),
            "CIRCLECI_RUNNER_WORK_DIR" => Some("/srv/work".to_owned()),
            _ => None,
        };
        let config = load(Some(file.path()), env, false).unwrap();
        assert_eq!(config.auth_token, "from-mr3");
        assert_eq!(config.runner_name, "la-name");
        assert_eq!(config.working_directory, "/srv/work");
        assert_eq!(config.command_prefix, ["sudo", "-niHu", "ci", "--"]);
        assert_eq!(config.logging_level, "debug");
        assert_eq!(config.logging_format, LogFormat::Json);
        assert!(
            config.warnings.iter().any(|w| w.contains("advertise_addr")),
            "{:?}",
            config.warnings
        );
        let origin = |key: &str| {
            config
                .effective
                .iter()
                .find(|(name, _, _)| name == key)
                .map(|(_, value, origin)| (value.clone(), origin.to_string()))
                .unwrap()
        };
        assert_eq!(
            origin("api.auth_token"),
            (
                "<redacted>".into(),
                "env CIRCLECI_RUNNER_API_AUTH_TOKEN".into()
            )
        );
        assert_eq!(
            origin("runner.name"),
            ("la-name".into(), "env LAUNCH_AGENT_RUNNER_NAME".into())
        );
        assert_eq!(
            origin("logging.level"),
            ("debug".into(), format!("{}:10", file.path().display()))
        );
        assert_eq!(
            origin("runner.max_run_time"),
            ("5h".into(), "default".into())
        );
        assert_eq!(config.effective.len(), KEYS.len());
        assert!(!format!("{:?}", config.effective).contains("from-"));
    }

    #[test]
    fn root_needs_a_job_user() {
        let file = write("api:\n  auth_token: t\nrunner:\n  name: r\n");
        let err = load(Some(file.path()), |_| None, true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("runner.user"), "{err}");
    }

    #[test]
    fn limits_and_sizes() {
        assert_eq!(parse_size("4G").unwrap(), 4 << 30);
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("64k").unwrap(), 64 << 10);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(parse_size("4X").is_err());
        assert!(parse_size("G").is_err());
        let file = write(
            "api:\n  auth_token: t\nrunner:\n  max_pids: 64\n  max_memory: 512M\n  cgroups: false\n",
        );
        let config = load(Some(file.path()), |_| None, false).unwrap();
        assert_eq!(config.max_pids, Some(64));
        assert_eq!(config.max_memory, Some(512 << 20));
        assert!(!config.cgroups);
        assert!(!config.dedicated_user);
        let file = write("api:\n  auth_token: t\nrunner:\n  max_pids: unlimited\n");
        let config = load(Some(file.path()), |_| None, false).unwrap();
        assert_eq!(config.max_pids, None);
        assert!(config.cgroups);
        let file = write("api:\n  auth_token: t\nrunner:\n  max_memory: lots\n");
        let err = load(Some(file.path()), |_| None, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("runner.max_memory"), "{err}");
    }

    #[test]
    fn a_token_file_readable_by_others_is_warned_about() {
        use std::os::unix::fs::PermissionsExt as _;
        let file = write("api:\n  auth_token: t\nrunner:\n  name: r\n");
        std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
        let config = load(Some(file.path()), |_| None, false).unwrap();
        let warning = config
            .warnings
            .iter()
            .find(|w| w.contains("chmod 600"))
            .expect("a warning about the mode");
        assert!(warning.contains("0644"), "{warning}");
        assert!(
            warning.contains(&file.path().display().to_string()),
            "{warning}"
        );
        std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(0o600)).unwrap();
        let config = load(Some(file.path()), |_| None, false).unwrap();
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("5h").unwrap(), Duration::from_secs(18000));
        assert_eq!(
            parse_duration("1h30m20s").unwrap(),
            Duration::from_secs(5420)
        );
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("h").is_err());
    }
}
