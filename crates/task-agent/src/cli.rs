//! `circleci` and `circleci-agent`: the job's side of CircleCI's environment CLI.
//!
//! The task-agent's executable answers to these names (it puts symlinks to itself first on every
//! step's `PATH`, see [`crate::steps::Job::bin_dir`]); `main` dispatches on `argv[0]`. Everything
//! here is synchronous and local: no runtime, no server, and no socket but `mask`'s. As on
//! CircleCI, both names accept every subcommand:
//!
//! - `tests glob PATTERN...`: files matching the patterns, sorted, once each.
//! - `tests split [FILE]`: this node's share of the names in FILE (or stdin), by name, file size
//!   or timings.
//! - `tests run --command CMD`: the same split of stdin, piped into `/bin/sh -c CMD`.
//! - `step halt`: ends the job successfully after the current step.
//! - `env subst`: `$VAR` and `${VAR}` on stdin replaced from the environment.
//! - `mask`: the value on stdin is masked in every log byte the job writes after the command
//!   returns (the one subcommand that talks to the task-agent, over its socket in the task-data
//!   directory: see [`crate::runtime_mask`]).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Environment variable naming the per-task directory where `step halt` leaves its marker.
pub const TASK_DATA_ENV: &str = "CIRCLE_INTERNAL_TASK_DATA";
/// Environment variable naming the JSON file of earlier test timings for `--split-by=timings`.
pub const TIMINGS_FILE_ENV: &str = "CIRCLE_INTERNAL_TIMINGS_FILE";
/// The timings file in the task-data directory when `$CIRCLE_INTERNAL_TIMINGS_FILE` is unset
/// (where CircleCI keeps it).
pub const TASK_DATA_TIMINGS: &str = "circle-test-results/results.json";
/// The marker file `step halt` creates in the task-data directory.
pub const HALT_MARKER: &str = "halt";
/// Most bytes read from stdin, a names file or the timings file.
pub const MAX_INPUT: u64 = 64 << 20;
/// Most patterns one glob pattern's `{a,b}` alternatives expand to.
pub const MAX_BRACE_EXPANSIONS: usize = 4096;
/// Most nodes a split is for (the shares are allocated up front).
pub const MAX_TOTAL: usize = 10_000;
/// Time for a name without timing data when `--time-default` is not given.
pub const DEFAULT_TIME: Duration = Duration::from_secs(10);

/// The subcommands, for the one-line message about an unknown one.
const KNOWN: &str = "tests glob, tests split, tests run, step halt, env subst, mask";

#[derive(Debug, Parser)]
#[command(about = "bosun's CircleCI environment CLI (inside a job)", version = crate::VERSION)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Test globbing and splitting.
    #[command(subcommand)]
    Tests(Tests),
    /// Control of the running job.
    #[command(subcommand)]
    Step(StepCmd),
    /// Masks the value on stdin (one trailing newline stripped) in the job's log from now on:
    /// the value, its base64 and its URL-encoded forms, as for project secrets.
    Mask,
    /// Environment helpers.
    #[command(subcommand)]
    Env(EnvCmd),
}

#[derive(Debug, Subcommand)]
enum Tests {
    /// Prints the files matching the patterns (`*`, `?`, `[...]`, `**`, `{a,b}`), one per line.
    Glob {
        #[arg(required = true, value_name = "PATTERN")]
        patterns: Vec<String>,
    },
    /// Prints this node's share of the names in FILE (default: stdin).
    Split {
        #[command(flatten)]
        split: SplitArgs,
        file: Option<PathBuf>,
    },
    /// Runs COMMAND with this node's share of the names on stdin as its stdin.
    Run {
        /// The command, run by `/bin/sh -c`.
        #[arg(long)]
        command: String,
        /// Prints this node's share to stderr.
        #[arg(long)]
        verbose: bool,
        #[command(flatten)]
        split: SplitArgs,
    },
}

#[derive(Debug, Args)]
struct SplitArgs {
    /// This node's index (default: $CIRCLE_NODE_INDEX, else 0).
    #[arg(long)]
    index: Option<usize>,
    /// The number of nodes (default: $CIRCLE_NODE_TOTAL, else 1).
    #[arg(long)]
    total: Option<usize>,
    #[arg(long, value_enum, default_value_t = SplitBy::Name)]
    split_by: SplitBy,
    #[arg(long, value_enum, default_value_t = TimingsType::Autodetect)]
    timings_type: TimingsType,
    /// Time for names without timing data, e.g. `10s`, `1.5s`, `200ms`, `2m`.
    #[arg(long, value_parser = parse_duration)]
    time_default: Option<Duration>,
    /// Prints how many names this node got to stderr.
    #[arg(long)]
    show_counts: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SplitBy {
    Name,
    Filesize,
    Timings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TimingsType {
    Filename,
    Classname,
    Testname,
    Autodetect,
}

#[derive(Debug, Subcommand)]
enum StepCmd {
    /// Ends the job successfully after the current step; the remaining steps do not run.
    Halt,
}

#[derive(Debug, Subcommand)]
enum EnvCmd {
    /// Copies stdin to stdout with `$VAR` and `${VAR}` replaced by their values (unset: empty).
    Subst,
}

/// Errors of the CLI, each printed as one line.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{what} is larger than {MAX_INPUT} bytes")]
    TooLarge { what: String },
    #[error("cannot read {what}: {source}")]
    Read {
        what: String,
        source: std::io::Error,
    },
    #[error("invalid glob pattern `{pattern}`: {message}")]
    Pattern { pattern: String, message: String },
    #[error("--index {index} is not below --total {total}")]
    Index { index: usize, total: usize },
    #[error("--total must be between 1 and {MAX_TOTAL}")]
    Total,
    #[error("${TASK_DATA_ENV} is not set: `step halt` works only inside a bosun job")]
    NoTaskData,
    #[error("cannot halt the job: cannot create {path}: {source}")]
    Halt {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot run `/bin/sh -c {command}`: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("cannot write the output: {0}")]
    Write(std::io::Error),
}

/// Runs the CLI as `name` (`circleci` or `circleci-agent`) with `args` (without `argv[0]`).
pub fn main(name: &str, args: impl IntoIterator<Item = OsString>) -> ExitCode {
    use clap::CommandFactory as _;
    use clap::FromArgMatches as _;
    // clap wants a 'static name; there are only two.
    let shown: &'static str = if name == "circleci" {
        "circleci"
    } else {
        "circleci-agent"
    };
    let command = Cli::command().name(shown).bin_name(shown);
    let argv = std::iter::once(OsString::from(name)).chain(args);
    let parsed = command
        .try_get_matches_from(argv)
        .and_then(|matches| Cli::from_arg_matches(&matches));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(err) => return usage_error(name, err),
    };
    match execute(cli) {
        Ok(code) => code,
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "{name}: error: {err}");
            // Bad arguments exit 2, as clap's own errors do; failures to do the work, 1.
            match err {
                CliError::Index { .. } | CliError::Total | CliError::Pattern { .. } => {
                    ExitCode::from(2)
                }
                _ => ExitCode::FAILURE,
            }
        }
    }
}

fn usage_error(name: &str, err: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match err.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = err.print();
            ExitCode::SUCCESS
        }
        ErrorKind::InvalidSubcommand
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        | ErrorKind::MissingSubcommand => {
            // One line, not clap's usage block: scripts grep the message.
            let got = err
                .get(clap::error::ContextKind::InvalidSubcommand)
                .map(|value| format!("unknown command `{value}`"))
                .unwrap_or_else(|| "missing command".to_owned());
            let _ = writeln!(
                std::io::stderr(),
                "{name}: {got}; the commands are: {KNOWN} (see `{name} --help`)"
            );
            ExitCode::from(2)
        }
        _ => {
            let _ = err.print();
            ExitCode::from(2)
        }
    }
}

fn execute(cli: Cli) -> Result<ExitCode, CliError> {
    match cli.command {
        Command::Mask => Ok(mask()),
        Command::Tests(Tests::Glob { patterns }) => {
            let files = glob(&patterns, Path::new("."))?;
            print_lines(&files)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Tests(Tests::Split { split, file }) => {
            let input = match &file {
                Some(path) => read_file_bounded(path)?,
                None => read_stdin_bounded()?,
            };
            let share = split_names(&split, &input)?;
            print_lines(&share)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Tests(Tests::Run {
            command,
            verbose,
            split,
        }) => {
            let input = read_stdin_bounded()?;
            let share = split_names(&split, &input)?;
            if verbose {
                let _ = writeln!(std::io::stderr(), "running `{command}` on: {share:?}");
            }
            run_command(&command, &share)
        }
        Command::Step(StepCmd::Halt) => {
            let dir = std::env::var_os(TASK_DATA_ENV)
                .filter(|dir| !dir.is_empty())
                .ok_or(CliError::NoTaskData)?;
            halt(Path::new(&dir))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Env(EnvCmd::Subst) => {
            let input = read_stdin_bounded()?;
            let env: BTreeMap<String, String> = std::env::vars().collect();
            let output = subst(&input, |name| env.get(name).map(String::as_str));
            std::io::stdout()
                .lock()
                .write_all(output.as_bytes())
                .map_err(CliError::Write)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `circleci-agent mask`: reads the value (bounded) and registers it; errors are printed as
/// `circleci-agent mask: ...`, and never show the value.
fn mask() -> ExitCode {
    let fail = |message: String| {
        let _ = writeln!(std::io::stderr(), "circleci-agent mask: {message}");
        ExitCode::FAILURE
    };
    let limit = crate::mask::MAX_RUNTIME_VALUE;
    let mut value = Vec::new();
    // Room for the value, a `\r\n`, and one byte to tell a value that is too long.
    let read = std::io::stdin()
        .lock()
        .take(u64::try_from(limit).unwrap_or(u64::MAX) + 3)
        .read_to_end(&mut value);
    if let Err(err) = read {
        return fail(format!("cannot read the value from stdin: {err}"));
    }
    if value.last() == Some(&b'\n') {
        value.pop();
        if value.last() == Some(&b'\r') {
            value.pop();
        }
    }
    if value.is_empty() {
        return fail("the value on stdin is empty: nothing to mask".to_owned());
    }
    if value.len() > limit {
        return fail(format!("the value is longer than {limit} bytes"));
    }
    let Some(dir) = std::env::var_os(TASK_DATA_ENV).filter(|dir| !dir.is_empty()) else {
        return fail(format!(
            "${TASK_DATA_ENV} is not set: `mask` works only inside a bosun job"
        ));
    };
    match crate::runtime_mask::register(Path::new(&dir), &value) {
        Ok(crate::runtime_mask::Registered::Masked) => ExitCode::SUCCESS,
        Ok(crate::runtime_mask::Registered::NotMaskable) => {
            let _ = writeln!(
                std::io::stderr(),
                "circleci-agent mask: the value is not masked: values shorter than {} characters \
                 and true/false never are",
                crate::mask::MIN_CHARS
            );
            ExitCode::SUCCESS
        }
        Err(message) => fail(message),
    }
}

fn print_lines(lines: &[String]) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    for line in lines {
        writeln!(out, "{line}").map_err(CliError::Write)?;
    }
    out.flush().map_err(CliError::Write)
}

fn read_bounded(reader: impl Read, what: &str) -> Result<String, CliError> {
    let mut bytes = Vec::new();
    reader
        .take(MAX_INPUT + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| CliError::Read {
            what: what.to_owned(),
            source,
        })?;
    if bytes.len() as u64 > MAX_INPUT {
        return Err(CliError::TooLarge {
            what: what.to_owned(),
        });
    }
    // Names and templates are text; a stray invalid byte is not worth failing a job for.
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn read_stdin_bounded() -> Result<String, CliError> {
    read_bounded(std::io::stdin().lock(), "stdin")
}

fn read_file_bounded(path: &Path) -> Result<String, CliError> {
    let what = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|source| CliError::Read {
        what: what.clone(),
        source,
    })?;
    read_bounded(file, &what)
}

/// Creates the halt marker in the task-data directory `dir`.
pub fn halt(dir: &Path) -> Result<(), CliError> {
    let path = dir.join(HALT_MARKER);
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map(drop)
        .map_err(|source| CliError::Halt { path, source })
}

fn run_command(command: &str, share: &[String]) -> Result<ExitCode, CliError> {
    let mut child = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .map_err(|source| CliError::Spawn {
            command: command.to_owned(),
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        let mut text = share.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        // A command that does not read its stdin closes the pipe early; that is its business.
        let _ = stdin.write_all(text.as_bytes());
    }
    let status = child.wait().map_err(|source| CliError::Spawn {
        command: command.to_owned(),
        source,
    })?;
    use std::os::unix::process::ExitStatusExt as _;
    let code = match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => 1,
    };
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

// ---------------------------------------------------------------------------------------------
// glob

/// The files (not directories) under `base` matching any of `patterns`, relative as the
/// patterns are, sorted and deduplicated.
pub fn glob(patterns: &[String], base: &Path) -> Result<Vec<String>, CliError> {
    let options = glob::MatchOptions {
        case_sensitive: true,
        // `*` and `?` do not cross `/`; only `**` does.
        require_literal_separator: true,
        require_literal_leading_dot: false,
    };
    let mut found = BTreeSet::new();
    for pattern in patterns {
        for expanded in expand_braces(pattern)? {
            let rooted = if Path::new(&expanded).is_absolute() {
                expanded.clone()
            } else {
                base.join(&expanded).to_string_lossy().into_owned()
            };
            let paths = glob::glob_with(&rooted, options).map_err(|err| CliError::Pattern {
                pattern: pattern.clone(),
                message: err.to_string(),
            })?;
            for path in paths.flatten() {
                if path.is_dir() {
                    continue;
                }
                let shown = if Path::new(&expanded).is_absolute() {
                    path
                } else {
                    path.strip_prefix(base)
                        .map(Path::to_path_buf)
                        .unwrap_or(path)
                };
                found.insert(shown.to_string_lossy().into_owned());
            }
        }
    }
    Ok(found.into_iter().collect())
}

/// `{a,b}` alternatives expanded (nested too), at most [`MAX_BRACE_EXPANSIONS`] patterns.
/// Braces without a comma at their level stay literal, as in the shell.
pub fn expand_braces(pattern: &str) -> Result<Vec<String>, CliError> {
    let mut out = Vec::new();
    expand_into(pattern, &mut out, pattern)?;
    Ok(out)
}

fn expand_into(pattern: &str, out: &mut Vec<String>, original: &str) -> Result<(), CliError> {
    let bytes = pattern.as_bytes();
    // The first `{` with a matching `}` and a comma at depth one.
    let mut start = 0;
    while let Some(open) = pattern[start..].find('{').map(|at| at + start) {
        let mut depth = 0usize;
        let mut commas = Vec::new();
        let mut close = None;
        for (at, &byte) in bytes.iter().enumerate().skip(open) {
            match byte {
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        close = Some(at);
                        break;
                    }
                }
                b',' if depth == 1 => commas.push(at),
                _ => {}
            }
        }
        let Some(close) = close else { break };
        if commas.is_empty() {
            start = open + 1;
            continue;
        }
        let prefix = &pattern[..open];
        let suffix = &pattern[close + 1..];
        let mut from = open + 1;
        for end in commas.into_iter().chain(std::iter::once(close)) {
            let alternative = &pattern[from..end];
            expand_into(&format!("{prefix}{alternative}{suffix}"), out, original)?;
            from = end + 1;
        }
        return Ok(());
    }
    if out.len() >= MAX_BRACE_EXPANSIONS {
        return Err(CliError::Pattern {
            pattern: original.to_owned(),
            message: format!("more than {MAX_BRACE_EXPANSIONS} alternatives"),
        });
    }
    out.push(pattern.to_owned());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// split

fn env_number(name: &str) -> Option<usize> {
    std::env::var(name).ok()?.trim().parse().ok()
}

fn split_names(args: &SplitArgs, input: &str) -> Result<Vec<String>, CliError> {
    let index = args
        .index
        .or_else(|| env_number("CIRCLE_NODE_INDEX"))
        .unwrap_or(0);
    let total = args
        .total
        .or_else(|| env_number("CIRCLE_NODE_TOTAL"))
        .unwrap_or(1);
    if total == 0 || total > MAX_TOTAL {
        return Err(CliError::Total);
    }
    if index >= total {
        return Err(CliError::Index { index, total });
    }
    let names: Vec<String> = input
        .split_whitespace()
        .map(str::to_owned)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let timings = match args.split_by {
        SplitBy::Timings => match load_timings() {
            Ok(timings) => Some(timings),
            Err(reason) => {
                let _ = writeln!(std::io::stderr(), "{reason}");
                None
            }
        },
        _ => None,
    };
    let mut warn = |line: &str| {
        let _ = writeln!(std::io::stderr(), "{line}");
    };
    let plan = Plan {
        split_by: args.split_by,
        timings_type: args.timings_type,
        time_default: args.time_default.unwrap_or(DEFAULT_TIME),
        timings: timings.as_deref(),
    };
    let shares = split(&names, total, &plan, &mut warn);
    let share = shares.into_iter().nth(index).unwrap_or_default();
    if args.show_counts {
        warn(&format!(
            "node {index} of {total}: {} of {} names",
            share.len(),
            names.len()
        ));
    }
    Ok(share)
}

/// One earlier test's timing, from the timings file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timing {
    pub name: String,
    pub classname: String,
    pub file: String,
    pub run_time: f64,
}

/// How to split.
#[derive(Debug, Clone, Copy)]
pub struct Plan<'a> {
    pub split_by: SplitBy,
    pub timings_type: TimingsType,
    pub time_default: Duration,
    /// The earlier timings (`None`: none could be read; split by name).
    pub timings: Option<&'a [Timing]>,
}

/// The message when `--split-by=timings` finds nothing to go by (CircleCI's words).
pub const NO_TIMINGS: &str = "No timing data found: falling back to splitting by name.";

fn load_timings() -> Result<Vec<Timing>, String> {
    // `$CIRCLE_INTERNAL_TIMINGS_FILE`, else where CircleCI keeps it in the task's data.
    let path = std::env::var_os(TIMINGS_FILE_ENV)
        .filter(|path| !path.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os(TASK_DATA_ENV)
                .filter(|dir| !dir.is_empty())
                .map(|dir| PathBuf::from(dir).join(TASK_DATA_TIMINGS))
        });
    let Some(path) = path else {
        return Err(format!("{NO_TIMINGS} (${TIMINGS_FILE_ENV} is not set)"));
    };
    let text =
        read_file_bounded(Path::new(&path)).map_err(|err| format!("{NO_TIMINGS} ({err})"))?;
    parse_timings(&text).map_err(|err| {
        format!(
            "{NO_TIMINGS} ({} is not a timings file: {err})",
            Path::new(&path).display()
        )
    })
}

/// Parses `{"tests":[{"name","classname","file","run_time"}]}`; missing fields are empty (0 for
/// `run_time`).
pub fn parse_timings(text: &str) -> Result<Vec<Timing>, serde_json::Error> {
    let value: serde_json::Value = serde_json::from_str(text)?;
    let field = |test: &serde_json::Value, key: &str| {
        test.get(key)
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let tests = value
        .get("tests")
        .and_then(serde_json::Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    Ok(tests
        .iter()
        .map(|test| Timing {
            name: field(test, "name"),
            classname: field(test, "classname"),
            file: field(test, "file"),
            run_time: test
                .get("run_time")
                .and_then(serde_json::Value::as_f64)
                .filter(|time| time.is_finite() && *time >= 0.0)
                .unwrap_or(0.0),
        })
        .collect())
}

/// `name` as the timings file writes file names: no leading `./`.
fn clean_file(name: &str) -> &str {
    let mut name = name;
    while let Some(rest) = name.strip_prefix("./") {
        name = rest;
    }
    name
}

/// A path, or a name ending in something that reads as a file extension (`.py`, `.rb`, `.java`:
/// at most five lowercase letters or digits), so that `com.example.FooTest` stays a class name.
fn looks_like_file(name: &str) -> bool {
    name.contains('/')
        || name.rsplit_once('.').is_some_and(|(stem, extension)| {
            !stem.is_empty()
                && (1..=5).contains(&extension.len())
                && extension
                    .bytes()
                    .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit())
        })
}

/// Splits the sorted, deduplicated `names` into `total` shares (each sorted by name). Every
/// node computes the same shares from the same input, and every name is in exactly one.
///
/// By name: contiguous runs of the sorted names, the first `len % total` nodes one longer. By
/// file size or timings: largest first onto the least loaded node (ties: lower index), names
/// without timing weighing `time_default`. Timings that match no name fall back to by name, with
/// [`NO_TIMINGS`] passed to `warn`.
pub fn split(
    names: &[String],
    total: usize,
    plan: &Plan<'_>,
    warn: &mut dyn FnMut(&str),
) -> Vec<Vec<String>> {
    let total = total.max(1);
    let weights: Option<Vec<u128>> = match plan.split_by {
        SplitBy::Name => None,
        SplitBy::Filesize => Some(
            names
                .iter()
                .map(|name| {
                    std::fs::metadata(name)
                        .map(|meta| u128::from(meta.len()))
                        .unwrap_or(0)
                })
                .collect(),
        ),
        SplitBy::Timings => plan.timings.and_then(|timings| {
            let weights =
                timing_weights(names, timings, plan.timings_type, plan.time_default, warn);
            if weights.is_none() {
                warn(NO_TIMINGS);
            }
            weights
        }),
    };
    let mut shares = vec![Vec::new(); total];
    match weights {
        None => {
            let base = names.len() / total;
            let extra = names.len() % total;
            let mut rest = names;
            for (node, share) in shares.iter_mut().enumerate() {
                let take = base + usize::from(node < extra);
                let (mine, later) = rest.split_at(take);
                share.extend(mine.iter().cloned());
                rest = later;
            }
        }
        Some(weights) => {
            let mut order: Vec<usize> = (0..names.len()).collect();
            order.sort_by(|&a, &b| weights[b].cmp(&weights[a]).then(names[a].cmp(&names[b])));
            let mut loads = vec![0u128; total];
            for item in order {
                let node = (0..total)
                    .min_by_key(|&node| (loads[node], node))
                    .unwrap_or(0);
                loads[node] += weights[item];
                shares[node].push(names[item].clone());
            }
            for share in &mut shares {
                share.sort();
            }
        }
    }
    shares
}

/// Each name's weight in microseconds, or `None` when no name has timing data.
fn timing_weights(
    names: &[String],
    timings: &[Timing],
    kind: TimingsType,
    time_default: Duration,
    warn: &mut dyn FnMut(&str),
) -> Option<Vec<u128>> {
    let kind = match kind {
        TimingsType::Autodetect => {
            if names.iter().any(|name| looks_like_file(name)) {
                warn("Autodetected filename timings.");
                TimingsType::Filename
            } else {
                warn("Autodetected classname timings.");
                TimingsType::Classname
            }
        }
        kind => kind,
    };
    let mut by_key: BTreeMap<&str, f64> = BTreeMap::new();
    for timing in timings {
        let key = match kind {
            TimingsType::Filename => clean_file(&timing.file),
            TimingsType::Classname => timing.classname.as_str(),
            _ => timing.name.as_str(),
        };
        if !key.is_empty() {
            *by_key.entry(key).or_default() += timing.run_time;
        }
    }
    let mut matched = false;
    let mut missing = Vec::new();
    let weights = names
        .iter()
        .map(|name| {
            let key = if kind == TimingsType::Filename {
                clean_file(name)
            } else {
                name.as_str()
            };
            match by_key.get(key) {
                Some(seconds) => {
                    matched = true;
                    // Microseconds: integers sort and add exactly, so every node agrees.
                    (seconds * 1e6) as u128
                }
                None => {
                    missing.push(name.as_str());
                    time_default.as_micros()
                }
            }
        })
        .collect();
    if matched {
        for name in missing {
            warn(&format!("No timing found for {name:?}"));
        }
    }
    matched.then_some(weights)
}

/// Parses `10s`, `1.5s`, `200ms`, `2m`, `1h` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration such as 10s, 500ms or 2m"))?;
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("`{text}`: unknown unit `{unit}` (ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(value * scale).map_err(|err| format!("`{text}`: {err}"))
}

// ---------------------------------------------------------------------------------------------
// env subst

/// `$NAME` and `${NAME}` in `input` replaced by `lookup(NAME)` (unset: empty, as `envsubst`
/// does). A `$` not followed by a name, or `${` without a valid name and `}`, stays as it is.
pub fn subst<'a>(input: &str, lookup: impl Fn(&str) -> Option<&'a str>) -> String {
    fn name_len(text: &str) -> usize {
        let mut chars = text.char_indices();
        match chars.next() {
            Some((_, c)) if c.is_ascii_alphabetic() || c == '_' => {}
            _ => return 0,
        }
        chars
            .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_'))
            .map(|(at, _)| at)
            .unwrap_or(text.len())
    }
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(braced) = after.strip_prefix('{') {
            let len = name_len(braced);
            if len > 0 && braced[len..].starts_with('}') {
                out.push_str(lookup(&braced[..len]).unwrap_or_default());
                rest = &braced[len + 1..];
                continue;
            }
        } else {
            let len = name_len(after);
            if len > 0 {
                out.push_str(lookup(&after[..len]).unwrap_or_default());
                rest = &after[len..];
                continue;
            }
        }
        out.push('$');
        rest = after;
    }
    out.push_str(rest);
    out
}
