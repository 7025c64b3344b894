//! `launch-agent-config.yaml`, CircleCI's keys, with `LAUNCH_AGENT_*` environment overrides.
//! Read before any privilege drop: the file may be mode 0600 root and hold the runner token.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use yaml_rust2::{Yaml, YamlLoader};

/// Largest config file accepted.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

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
    /// Problems that do not stop the agent (unknown keys), reported once at start.
    pub warnings: Vec<String>,
}

impl std::fmt::Debug for Config {
    // The token never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("api_url", &self.api_url)
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
    key: &str,
    parse: impl Fn(&str) -> Result<u64, String>,
) -> anyhow::Result<Option<u64>> {
    match text.trim() {
        "unlimited" | "none" | "0" => Ok(None),
        other => parse(other)
            .map(Some)
            .map_err(|err| anyhow::anyhow!("{key}: {err}")),
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

fn scalar(value: &Yaml, key: &str) -> anyhow::Result<Option<String>> {
    Ok(match value {
        Yaml::BadValue | Yaml::Null => None,
        Yaml::String(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Real(r) => Some(r.clone()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => bail!("`{key}` must be a single value"),
    })
}

fn parse_bool(text: &str, key: &str) -> anyhow::Result<bool> {
    match text {
        "true" | "True" | "1" | "yes" => Ok(true),
        "false" | "False" | "0" | "no" => Ok(false),
        other => bail!("`{key}` must be true or false, not `{other}`"),
    }
}

/// Raw key/value pairs from the file, flattened to `section.key` names.
fn read_file(path: &Path, warnings: &mut Vec<String>) -> anyhow::Result<Vec<(String, String)>> {
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
    let docs = YamlLoader::load_from_str(&text)
        .map_err(|err| anyhow::anyhow!("{}: {err}", path.display()))?;
    let mut pairs = Vec::new();
    let Some(doc) = docs.into_iter().next() else {
        return Ok(pairs);
    };
    let Yaml::Hash(top) = doc else {
        if matches!(doc, Yaml::Null) {
            return Ok(pairs);
        }
        bail!(
            "{}: the top level must be a map of sections (api, runner, logging)",
            path.display()
        );
    };
    for (section, body) in top {
        let section = scalar(&section, "section")?.unwrap_or_default();
        let Yaml::Hash(body) = body else {
            if matches!(body, Yaml::Null) {
                continue;
            }
            bail!("{}: `{section}` must be a map", path.display());
        };
        for (key, value) in body {
            let key = scalar(&key, &section)?.unwrap_or_default();
            let name = format!("{section}.{key}");
            if name == "runner.command_prefix" {
                if let Yaml::Array(items) = &value {
                    let words: Vec<String> = items
                        .iter()
                        .map(|item| scalar(item, &name).map(Option::unwrap_or_default))
                        .collect::<anyhow::Result<_>>()?;
                    pairs.push((name, words.join("\u{1f}")));
                    continue;
                }
            }
            if name == "runner.ssh" {
                warnings.push("`runner.ssh` is not supported yet: SSH reruns are off".into());
                continue;
            }
            if let Some(value) = scalar(&value, &name)? {
                pairs.push((name, value));
            }
        }
    }
    Ok(pairs)
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

/// `(file key, LAUNCH_AGENT_* variable)` for every key bosun understands.
const KEYS: &[(&str, &str)] = &[
    ("api.auth_token", "LAUNCH_AGENT_API_AUTH_TOKEN"),
    ("api.url", "LAUNCH_AGENT_API_URL"),
    ("runner.name", "LAUNCH_AGENT_RUNNER_NAME"),
    ("runner.working_directory", "LAUNCH_AGENT_RUNNER_WORK_DIR"),
    (
        "runner.cleanup_working_directory",
        "LAUNCH_AGENT_RUNNER_CLEANUP_WORK_DIR",
    ),
    ("runner.mode", "LAUNCH_AGENT_RUNNER_MODE"),
    ("runner.max_run_time", "LAUNCH_AGENT_RUNNER_MAX_RUN_TIME"),
    ("runner.idle_timeout", "LAUNCH_AGENT_RUNNER_IDLE_TIMEOUT"),
    (
        "runner.termination_grace_period",
        "LAUNCH_AGENT_RUNNER_TERMINATION_GRACE_PERIOD",
    ),
    (
        "runner.disable_auto_update",
        "LAUNCH_AGENT_RUNNER_DISABLE_AUTO_UPDATE",
    ),
    (
        "runner.command_prefix",
        "LAUNCH_AGENT_RUNNER_COMMAND_PREFIX",
    ),
    ("runner.user", "LAUNCH_AGENT_RUNNER_USER"),
    ("runner.group", "LAUNCH_AGENT_RUNNER_GROUP"),
    (
        "runner.task_agent_path",
        "LAUNCH_AGENT_RUNNER_TASK_AGENT_PATH",
    ),
    ("runner.cgroups", "LAUNCH_AGENT_RUNNER_CGROUPS"),
    (
        "runner.dedicated_user",
        "LAUNCH_AGENT_RUNNER_DEDICATED_USER",
    ),
    ("runner.max_pids", "LAUNCH_AGENT_RUNNER_MAX_PIDS"),
    ("runner.max_memory", "LAUNCH_AGENT_RUNNER_MAX_MEMORY"),
    ("logging.file", "LAUNCH_AGENT_LOGGING_FILE"),
];

/// Loads the file (if given) and applies the environment overrides from `env`.
pub fn load(
    path: Option<&Path>,
    env: impl Fn(&str) -> Option<String>,
    running_as_root: bool,
) -> anyhow::Result<Config> {
    let mut warnings = Vec::new();
    let mut pairs = match path {
        Some(path) => read_file(path, &mut warnings)?,
        None => Vec::new(),
    };
    if let Some(path) = path {
        if pairs
            .iter()
            .any(|(name, value)| name == "api.auth_token" && !value.is_empty())
        {
            if let Some(warning) = token_file_warning(path) {
                warnings.push(warning);
            }
        }
    }
    for (name, _) in &pairs {
        if !KEYS.iter().any(|(key, _)| key == name) {
            warnings.push(format!(
                "unknown key `{name}` in the config file is ignored"
            ));
        }
    }
    for (key, variable) in KEYS {
        if let Some(value) = env(variable) {
            pairs.retain(|(name, _)| name != key);
            pairs.push(((*key).to_owned(), value));
        }
    }
    let get = |key: &str| {
        pairs
            .iter()
            .rev()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.clone())
    };

    let auth_token = get("api.auth_token")
        .filter(|t| !t.is_empty())
        .context("`api.auth_token` is required (or LAUNCH_AGENT_API_AUTH_TOKEN)")?;
    let api_url = get("api.url").unwrap_or_else(|| "http://127.0.0.1:8730".into());
    let runner_name = match get("runner.name") {
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
        bail!("runner.name `{runner_name}` must contain only letters, numbers, .()_-, and spaces");
    }
    let working_directory = get("runner.working_directory").unwrap_or_else(|| {
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
        bail!("runner.working_directory `{working_directory}` must be an absolute path");
    }
    let cleanup_working_directory = match get("runner.cleanup_working_directory") {
        Some(text) => parse_bool(&text, "runner.cleanup_working_directory")?,
        None => false,
    };
    let mode = match get("runner.mode").as_deref() {
        None | Some("continuous") => Mode::Continuous,
        Some("single-task") => Mode::SingleTask,
        Some(other) => bail!("runner.mode `{other}` must be `continuous` or `single-task`"),
    };
    let max_run_time = match get("runner.max_run_time") {
        Some(text) => {
            parse_duration(&text).map_err(|err| anyhow::anyhow!("runner.max_run_time: {err}"))?
        }
        None => Duration::from_secs(5 * 3600),
    };
    let termination_grace_period = match get("runner.termination_grace_period") {
        Some(text) => parse_duration(&text)
            .map_err(|err| anyhow::anyhow!("runner.termination_grace_period: {err}"))?,
        None => Duration::from_secs(10),
    };
    let idle_timeout = match get("runner.idle_timeout") {
        Some(text) => Some(
            parse_duration(&text).map_err(|err| anyhow::anyhow!("runner.idle_timeout: {err}"))?,
        ),
        None => None,
    };
    let command_prefix: Vec<String> = match get("runner.command_prefix") {
        // From the file: words joined by U+001F; from LAUNCH_AGENT_RUNNER_COMMAND_PREFIX: words
        // separated by spaces.
        Some(text) if text.contains('\u{1f}') => text.split('\u{1f}').map(str::to_owned).collect(),
        Some(text) => text.split_whitespace().map(str::to_owned).collect(),
        None => Vec::new(),
    };
    let user = match get("runner.user") {
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
    let task_agent_path = match get("runner.task_agent_path") {
        Some(path) => PathBuf::from(path),
        None => std::env::current_exe()
            .context("locating the launch-agent binary")?
            .with_file_name("task-agent"),
    };
    let cgroups = match get("runner.cgroups") {
        Some(text) => parse_bool(&text, "runner.cgroups")?,
        None => true,
    };
    let dedicated_user = match get("runner.dedicated_user") {
        Some(text) => parse_bool(&text, "runner.dedicated_user")?,
        None => false,
    };
    if dedicated_user && user == JobUser::Current {
        warnings.push(
            "runner.dedicated_user is ignored: jobs run as the launch-agent's own user".into(),
        );
    }
    let dedicated_user = dedicated_user && user != JobUser::Current;
    let max_pids = match get("runner.max_pids") {
        Some(text) => parse_limit(&text, "runner.max_pids", |t| {
            t.parse::<u64>()
                .map_err(|_| format!("`{t}` is not a number of processes"))
        })?,
        None => Some(DEFAULT_MAX_PIDS),
    };
    let max_memory = match get("runner.max_memory") {
        Some(text) => parse_limit(&text, "runner.max_memory", parse_size)?,
        None => default_max_memory(),
    };
    Ok(Config {
        api_url,
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
        group: get("runner.group").filter(|g| !g.is_empty()),
        task_agent_path,
        logging_file: get("logging.file").map(PathBuf::from),
        cgroups,
        dedicated_user,
        max_pids,
        max_memory,
        warnings,
    })
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
        assert!(config.warnings[0].contains("runner.surprise"));
        assert!(!format!("{config:?}").contains("from-file"));
    }

    #[test]
    fn bad_values_name_the_key() {
        let file = write("api:\n  auth_token: t\nrunner:\n  mode: sometimes\n");
        let err = load(Some(file.path()), |_| None, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("runner.mode `sometimes`"), "{err}");
        let err = load(None, |_| None, false).unwrap_err().to_string();
        assert!(err.contains("api.auth_token"), "{err}");
        let file = write("api:\n  auth_token: t\nrunner:\n  name: 'bad/name'\n");
        let err = load(Some(file.path()), |_| None, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("must contain only"), "{err}");
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
