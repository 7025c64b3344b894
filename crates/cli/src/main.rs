//! `bosun`: the command-line client of bosun-server, in the shape of CircleCI's `circleci runner`
//! CLI, plus pipelines, jobs, config checks and the quickstart.
//!
//! Exit codes: 0 success, 1 a failed pipeline or job (or an unreachable server), 2 usage or
//! input errors.

mod commands;
mod follow;
mod orbs;
mod quickstart;
mod releases;
mod secrets;
mod users;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "bosun",
    version,
    about = "Self-hosted CircleCI-style runner: client of bosun-server"
)]
pub struct Cli {
    /// Server URL.
    #[arg(
        long,
        global = true,
        env = "BOSUN_HOST",
        default_value = "http://127.0.0.1:8730"
    )]
    pub host: String,
    /// PEM certificates to trust besides the system's roots, for an https:// server whose
    /// certificate a private CA signed.
    #[arg(long, global = true, env = "BOSUN_CA_FILE")]
    pub ca_file: Option<std::path::PathBuf>,
    /// API token (sent as Circle-Token): the server's admin token or a personal token.
    #[arg(long, global = true, env = "BOSUN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[command(subcommand)]
    pub command: Command,
    /// Whether `--host` (or `BOSUN_HOST`) was given rather than defaulted: `config` and
    /// `orb validate` then resolve orbs through that server.
    #[arg(skip)]
    pub host_given: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Resource classes, tokens and runner instances.
    #[command(subcommand)]
    Runner(RunnerCommand),
    /// Projects.
    #[command(subcommand)]
    Project(ProjectCommand),
    /// Pipelines.
    #[command(subcommand)]
    Pipeline(PipelineCommand),
    /// Jobs.
    #[command(subcommand)]
    Job(JobCommand),
    /// List a job's artifacts (`path size url`), or download them.
    Artifacts {
        /// The job: its id, or SLUG/NUMBER (`gh/acme/widgets/42`).
        job: String,
        /// Write each artifact under DIR at its path (never outside DIR).
        #[arg(long, value_name = "DIR")]
        download: Option<std::path::PathBuf>,
    },
    /// A job's test results (`store_test_results`): failures first, then a summary line.
    Tests {
        /// The job: its id, or SLUG/NUMBER (`gh/acme/widgets/42`).
        job: String,
        /// Only the flaky tests: those that both failed and passed in runs of this job on its
        /// revision.
        #[arg(long)]
        flaky: bool,
    },
    /// Users and their roles (admin): `admin` (runners, contexts, users), `member` (the
    /// projects they are given), `viewer` (read only).
    #[command(subcommand)]
    User(users::UserCommand),
    /// Personal API tokens (sent as Circle-Token, like CircleCI's).
    #[command(subcommand)]
    Token(users::UserTokenCommand),
    /// Signed releases of the agents (admin): publish, list, promote (fleet-wide or a canary
    /// resource class), roll back.
    #[command(subcommand)]
    Release(releases::ReleaseCommand),
    /// Contexts: shared secret variables of an organization, with restrictions.
    #[command(subcommand)]
    Context(secrets::ContextCommand),
    /// A project's caches (`save_cache` / `restore_cache`).
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Check `.circleci/config.yml` files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Orbs: pack and validate them, publish them into the server's registry, read them.
    #[command(subcommand)]
    Orb(orbs::OrbCommand),
    /// Start a server and a launch-agent on embedded defaults and run a pipeline end to end.
    Quickstart(quickstart::QuickstartArgs),
}

#[derive(Subcommand, Debug)]
pub enum RunnerCommand {
    #[command(subcommand, name = "resource-class")]
    ResourceClass(ResourceClassCommand),
    #[command(subcommand)]
    Token(TokenCommand),
    #[command(subcommand)]
    Instance(InstanceCommand),
}

#[derive(Subcommand, Debug)]
pub enum ResourceClassCommand {
    /// Create NAMESPACE/NAME.
    Create {
        resource_class: String,
        description: Option<String>,
        /// Also create a token for it.
        #[arg(long)]
        generate_token: bool,
    },
    /// List the resource classes of a namespace.
    List { namespace: String },
    /// Delete NAMESPACE/NAME (with --force, its tokens too).
    Delete {
        resource_class: String,
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a runner token for NAMESPACE/NAME (printed once).
    Create {
        resource_class: String,
        nickname: String,
    },
    /// List the tokens of NAMESPACE/NAME.
    List { resource_class: String },
    /// Delete a token by id.
    Delete { id: String },
}

#[derive(Subcommand, Debug)]
pub enum InstanceCommand {
    /// List runner instances of a namespace or resource class.
    List {
        namespace: Option<String>,
        #[arg(long)]
        resource_class: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ProjectCommand {
    /// Register a project: SLUG is vcs/org/repo.
    Create {
        slug: String,
        #[arg(long)]
        git_url: String,
        /// The namespace whose resource classes the project's jobs run on (default: the slug's
        /// organization, lower-cased).
        #[arg(long)]
        namespace: Option<String>,
    },
    /// Project environment variables (values from stdin, never from the command line).
    #[command(subcommand)]
    Env(secrets::ProjectEnvCommand),
    /// Checkout (deploy) keys the server generates for `checkout` of an ssh:// repository.
    #[command(subcommand, name = "checkout-key")]
    CheckoutKey(secrets::CheckoutKeyCommand),
    /// Additional SSH keys for `add_ssh_keys` (private keys from stdin).
    #[command(subcommand, name = "ssh-key")]
    SshKey(secrets::SshKeyCommand),
    /// The repository host keys `checkout` enforces (empty: trust on first use).
    #[command(subcommand, name = "known-hosts")]
    KnownHosts(secrets::KnownHostsCommand),
    /// The token `checkout` uses for an https:// repository (from stdin).
    #[command(subcommand, name = "checkout-token")]
    CheckoutToken(secrets::CheckoutTokenCommand),
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Project slug (vcs/org/repo).
    pub slug: String,
    #[arg(long, conflicts_with = "tag")]
    pub branch: Option<String>,
    #[arg(long)]
    pub tag: Option<String>,
    /// Run this commit of the branch or tag.
    #[arg(long)]
    pub revision: Option<String>,
    /// Pipeline parameters as a JSON object.
    #[arg(long)]
    pub parameters: Option<String>,
    /// Follow the pipeline live; exit 0 only if every job succeeded.
    #[arg(long)]
    pub follow: bool,
}

#[derive(Subcommand, Debug)]
pub enum PipelineCommand {
    /// Trigger a pipeline.
    Run(RunArgs),
    /// Show a pipeline's workflows and jobs.
    Status {
        /// The pipeline: its id, or SLUG/NUMBER (`gh/acme/widgets/7`).
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum JobCommand {
    /// Print a job's step logs.
    Logs {
        /// The job: its id, or SLUG/NUMBER (`gh/acme/widgets/42`).
        job: String,
        /// Which node of a parallel job (`parallelism`), from 0.
        #[arg(long, default_value_t = 0)]
        node: u32,
    },
    /// Cancel a job: a running one is stopped (SIGTERM, grace, SIGKILL) and ends `canceled`.
    Cancel {
        /// The job: its id, or SLUG/NUMBER (`gh/acme/widgets/42`).
        job: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum CacheCommand {
    /// List a project's caches, newest first: key, size, created, expires.
    List {
        /// Project slug (vcs/org/repo).
        slug: String,
    },
    /// Delete every cache of a project whose key starts with KEY_PREFIX (`""`: all of them).
    Delete {
        /// Project slug (vcs/org/repo).
        slug: String,
        key_prefix: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Check a config file; print the error with its line and column. Registry orbs are
    /// resolved through the server when --host is given, else from --orb-dir.
    Validate {
        file: std::path::PathBuf,
        /// A directory of vendored orbs, one `namespace/name@version.yml` each.
        #[arg(long)]
        orb_dir: Option<std::path::PathBuf>,
    },
    /// Print the config with 2.1 processing done (orbs, commands, executors, parameters,
    /// matrices and `when` expanded), as 2.0-style YAML, like `circleci config process`.
    /// Registry orbs are resolved through the server when --host is given, else from --orb-dir.
    Process {
        file: std::path::PathBuf,
        /// Pipeline parameters, as a JSON object: `{"deploy": true}`.
        #[arg(long)]
        pipeline_parameters: Option<String>,
        /// A directory of vendored orbs, one `namespace/name@version.yml` each.
        #[arg(long)]
        orb_dir: Option<std::path::PathBuf>,
    },
}

/// An error with the exit code it maps to.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn input(message: impl Into<String>) -> Failure {
        Failure {
            code: 2,
            message: message.into(),
        }
    }
    pub fn failed(message: impl Into<String>) -> Failure {
        Failure {
            code: 1,
            message: message.into(),
        }
    }
}

impl From<bosun_api::ApiError> for Failure {
    fn from(err: bosun_api::ApiError) -> Failure {
        // The server said our input was wrong: that is a usage error; anything else is a failure.
        let code = match err.status() {
            Some(status) if status.is_client_error() => 2,
            _ => 1,
        };
        Failure {
            code,
            message: err.to_string(),
        }
    }
}

impl From<std::io::Error> for Failure {
    fn from(err: std::io::Error) -> Failure {
        Failure::failed(err.to_string())
    }
}

impl From<anyhow::Error> for Failure {
    fn from(err: anyhow::Error) -> Failure {
        Failure::failed(format!("{err:#}"))
    }
}

fn main() -> ExitCode {
    use clap::{CommandFactory as _, FromArgMatches as _};
    let matches = Cli::command().get_matches();
    let mut cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(err) => err.exit(),
    };
    cli.host_given = matches!(
        matches.value_source("host"),
        Some(clap::parser::ValueSource::CommandLine | clap::parser::ValueSource::EnvVariable)
    );
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("bosun: cannot start the async runtime: {err}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(commands::dispatch(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("bosun: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}
