//! `task-agent`: started only by bosun's launch-agent, as the job user, in the task's directory,
//! with the launch-agent's socket on fd 3.

use std::process::ExitCode;

use clap::Parser;

/// Runs one CI task's steps and streams their output to the launch-agent that started it.
#[derive(Debug, Parser)]
#[command(name = "task-agent", version = bosun_task_agent::VERSION)]
struct Args {
    /// File descriptor of the socket shared with the launch-agent.
    #[arg(long, value_name = "N", default_value_t = 3)]
    socket_fd: i32,
    /// Run even as root (uid 0). Only for containers, where root may be the only user, and for
    /// tests; on a host the launch-agent starts task-agent as the unprivileged job user.
    /// The environment variable takes 1/0, true/false, yes/no or on/off.
    #[arg(
        long,
        env = bosun_task_agent::ALLOW_ROOT_ENV,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    allow_root: bool,
    /// Connect to the launch-agent's socket at PATH (command-prefix mode), reading the one-time
    /// task token from stdin, instead of using an inherited descriptor.
    #[arg(long, value_name = "PATH", conflicts_with = "socket_fd")]
    connect: Option<std::path::PathBuf>,
    /// The task's directory (default: the current directory).
    #[arg(long, value_name = "DIR")]
    work_dir: Option<std::path::PathBuf>,
    /// The private directory (0700, the job user's) for step scripts; default: a private
    /// temporary directory.
    #[arg(long, value_name = "DIR")]
    scripts_dir: Option<std::path::PathBuf>,
    /// Milliseconds between SIGTERM and SIGKILL when a step exceeds its no-output timeout.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    kill_grace_ms: u64,
}

fn main() -> ExitCode {
    // Inside a job the task-agent is also `circleci` and `circleci-agent` (symlinks first on every
    // step's PATH): those names run the small synchronous CLI, never the agent.
    let mut argv = std::env::args_os();
    let name = argv
        .next()
        .and_then(|arg0| {
            std::path::Path::new(&arg0)
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
        })
        .unwrap_or_default();
    if name == "circleci" || name == "circleci-agent" {
        return bosun_task_agent::cli::main(&name, argv);
    }
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // stderr is a pipe the launch-agent logs from (with its own timestamps), never a
        // terminal: no colour codes, no second timestamp.
        .with_ansi(false)
        .without_time()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let options = bosun_task_agent::Options {
        socket_fd: args.socket_fd,
        connect: args.connect,
        work_dir: args.work_dir,
        scripts_dir: args.scripts_dir,
        allow_root: args.allow_root,
        kill_grace: std::time::Duration::from_millis(args.kill_grace_ms),
    };
    match bosun_task_agent::run(options) {
        Ok(_status) => ExitCode::SUCCESS,
        Err(err) => {
            // Not eprintln!: with the launch-agent gone, stderr is a broken pipe, and a panic here
            // would hide the exit code.
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "task-agent: error: {err}");
            ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(1))
        }
    }
}
