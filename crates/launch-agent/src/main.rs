//! `launch-agent`: parse flags, read the config (before anything else, while still root), set up
//! logging, run the claim loop until a signal.

use std::path::PathBuf;
use std::process::ExitCode;

use bosun_launch_agent::config;
use clap::Parser;

const DEFAULT_CONFIG: &str = "/etc/opt/circleci/launch-agent-config.yaml";

/// bosun's launch-agent: claims tasks and runs them through task-agent as the job user.
#[derive(Parser, Debug)]
#[command(name = "launch-agent", version)]
struct Args {
    /// The launch-agent-config.yaml to read (LAUNCH_AGENT_* variables override its keys).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Check the configuration, print a summary, and exit.
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let running_as_root = nix::unistd::Uid::effective().is_root();
    let path = match &args.config {
        Some(path) => Some(path.clone()),
        None if std::path::Path::new(DEFAULT_CONFIG).exists() => {
            Some(PathBuf::from(DEFAULT_CONFIG))
        }
        None => None,
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
    let result = runtime.block_on(async move {
        let (_keep, stop) = bosun_launch_agent::stop_on_signals()?;
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

fn init_logging(config: &config::Config) -> anyhow::Result<()> {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("BOSUN_LOG").unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match &config.logging_file {
        Some(path) if path.as_os_str() != "-" => {
            // 0600 when created: the log names tasks, jobs and the task-agents' messages.
            use std::os::unix::fs::OpenOptionsExt as _;
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path)
                .map_err(|err| anyhow::anyhow!("opening logging.file {}: {err}", path.display()))?;
            builder
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(file))
                .init();
        }
        _ => builder.with_writer(std::io::stderr).init(),
    }
    Ok(())
}
