//! `launch-agent`: parse flags, read the config (before anything else, while still root), set up
//! logging, run the claim loop until a signal.

use std::path::PathBuf;
use std::process::ExitCode;

use bosun_launch_agent::config;
use bosun_launch_agent::log_file::{self, LogFile};
use clap::Parser;

/// Where CircleCI's installers put the config: the launch-agent's, then machine runner 3's
/// (the first that exists is read when `--config` is not given).
const DEFAULT_CONFIGS: &[&str] = &[
    "/etc/opt/circleci/launch-agent-config.yaml",
    "/etc/circleci-runner/circleci-runner-config.yaml",
];

/// bosun's launch-agent: claims tasks and runs them through task-agent as the job user.
#[derive(Parser, Debug)]
#[command(name = "launch-agent", version = bosun_launch_agent::VERSION)]
struct Args {
    /// The launch-agent-config.yaml to read (LAUNCH_AGENT_* variables override its keys).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Check the configuration, print a summary, and exit.
    #[arg(long)]
    check_config: bool,
    /// After the first SIGTERM or SIGINT, how long running tasks may take to finish before
    /// they are canceled (as a second signal does), e.g. `30m`. Default: no limit.
    #[arg(long, value_parser = parse_drain_timeout)]
    drain_timeout: Option<std::time::Duration>,
}

fn parse_drain_timeout(text: &str) -> Result<std::time::Duration, String> {
    config::parse_duration(text)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let running_as_root = nix::unistd::Uid::effective().is_root();
    let path = match &args.config {
        Some(path) => Some(path.clone()),
        None => DEFAULT_CONFIGS
            .iter()
            .map(PathBuf::from)
            .find(|path| path.exists()),
    };
    let config = match config::load(
        path.as_deref(),
        |name| std::env::var(name).ok(),
        running_as_root,
    ) {
        Ok(config) => config,
        Err(err) => {
            let place = path
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "environment".into());
            eprintln!("launch-agent: invalid configuration ({place}): {err:#}");
            return ExitCode::from(2);
        }
    };
    if let Err(err) = init_logging(&config) {
        eprintln!("launch-agent: {err:#}");
        return ExitCode::from(2);
    }
    // `--check-config` prints them in its summary instead (logging may go to a file).
    if !args.check_config {
        for warning in &config.warnings {
            tracing::warn!("{warning}");
        }
    }
    if !running_as_root {
        tracing::warn!(
            "running as uid {} (not root): jobs run as this same user, without privilege separation",
            nix::unistd::Uid::effective()
        );
    }
    if args.check_config {
        return match bosun_launch_agent::privileged::Identity::resolve(
            &config.user,
            config.group.as_deref(),
        ) {
            Ok(identity) => {
                println!("configuration OK");
                match &path {
                    Some(path) => println!("  file:              {}", path.display()),
                    None => println!("  file:              none (environment and defaults)"),
                }
                println!("  server:            {}", config.api_url);
                println!("  runner name:       {}", config.runner_name);
                println!("  working directory: {}", config.working_directory);
                println!("  cleanup:           {}", config.cleanup_working_directory);
                println!("  job user:          {}", identity.name);
                println!("  task-agent:        {}", config.task_agent_path.display());
                let limit = |value: Option<u64>| match value {
                    Some(value) => value.to_string(),
                    None => "unlimited".to_owned(),
                };
                println!("  max pids:          {}", limit(config.max_pids));
                println!(
                    "  max memory:        {}",
                    match config.max_memory {
                        Some(bytes) => format!("{} MiB", bytes >> 20),
                        None => "unlimited".to_owned(),
                    }
                );
                println!("  cgroups:           {}", config.cgroups);
                println!("  dedicated user:    {}", config.dedicated_user);
                println!("effective configuration (key = value, and where it came from):");
                for (key, value, origin) in &config.effective {
                    println!("  {key:<34} = {value:<30} [{origin}]");
                }
                for warning in &config.warnings {
                    println!("warning: {warning}");
                }
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("launch-agent: invalid configuration: {err:#}");
                ExitCode::from(2)
            }
        };
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("launch-agent: cannot start the async runtime: {err}");
            return ExitCode::from(1);
        }
    };
    let drain_timeout = args.drain_timeout;
    let result = runtime.block_on(async move {
        let (_keep, stop) = bosun_launch_agent::stop_on_signals(drain_timeout)?;
        reopen_log_on_sighup()?;
        bosun_launch_agent::run(config, stop).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("launch-agent: {err:#}");
            ExitCode::from(1)
        }
    }
}

/// Logging as `logging.*` says: the level (`BOSUN_LOG` wins, as a filter), the format, and the
/// file (created 0600; `-` or none is stderr).
fn init_logging(config: &config::Config) -> anyhow::Result<()> {
    use config::LogFormat;
    let filter = tracing_subscriber::EnvFilter::try_from_env("BOSUN_LOG")
        .unwrap_or_else(|_| config.logging_level.as_str().into());
    if config.logging_format == LogFormat::None {
        return Ok(());
    }
    let writer: Box<dyn Fn() -> Box<dyn std::io::Write> + Send + Sync> = match &config.logging_file
    {
        Some(path) if path.as_os_str() != "-" => {
            let log = std::sync::Arc::new(LogFile::open(
                path,
                config.logging_max_size,
                config.logging_max_files,
            )?);
            let _ = LOG_FILE.set(log.clone());
            Box::new(move || Box::new(log_file::Writer(log.clone())))
        }
        _ => Box::new(|| Box::new(std::io::stderr())),
    };
    let to_file = config
        .logging_file
        .as_ref()
        .is_some_and(|path| path.as_os_str() != "-");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match config.logging_format {
        LogFormat::Json => builder.json().init(),
        // Colours only on a terminal's stream, never into a file.
        LogFormat::Color => builder.with_ansi(!to_file).init(),
        LogFormat::Text | LogFormat::None => builder.with_ansi(false).init(),
    }
    Ok(())
}

/// `logging.file`, for SIGHUP to reopen.
static LOG_FILE: std::sync::OnceLock<std::sync::Arc<LogFile>> = std::sync::OnceLock::new();

/// On SIGHUP, opens `logging.file` again (a log rotated away keeps its old lines; new ones go
/// to the file at the path). Without a log file, SIGHUP is ignored.
fn reopen_log_on_sighup() -> anyhow::Result<()> {
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            let Some(log) = LOG_FILE.get() else {
                continue;
            };
            match log.reopen() {
                Ok(()) => tracing::info!("SIGHUP: reopened {}", log.path().display()),
                Err(err) => tracing::error!("SIGHUP: {err:#}; logging to the old file"),
            }
        }
    });
    Ok(())
}
