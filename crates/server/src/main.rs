//! `bosun-server`: parse flags, set up logging, serve until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

/// bosun's control plane: runner API, admin API, pipelines, on SQLite and a blob directory.
#[derive(Parser, Debug)]
#[command(name = "bosun-server", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8730")]
    listen: SocketAddr,
    /// Where the database, blobs, repository mirrors and the admin token live.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Database URL (`sqlite://PATH`); default `sqlite://DATA_DIR/bosun.db`.
    #[arg(long)]
    database_url: Option<String>,
    /// Blob directory (logs; caches, workspaces and artifacts); default `DATA_DIR/blobs`.
    #[arg(long, conflicts_with = "blob_url")]
    blob_dir: Option<PathBuf>,
    /// Blob store as a URL: `file:///DIR` (the same as --blob-dir DIR); S3-compatible storage
    /// (`s3://bucket/prefix`) is not built in yet.
    #[arg(long, value_name = "URL")]
    blob_url: Option<String>,
    /// URL agents and users reach this server at.
    #[arg(long)]
    public_url: Option<String>,
    /// Seconds a claimed task lives without a heartbeat before it is marked infrastructure_fail.
    #[arg(long, default_value_t = 60)]
    task_lease_secs: u64,
    /// Org-wide limit on concurrently running tasks.
    #[arg(long, default_value_t = 100)]
    max_running_tasks: u64,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key); SIGHUP reloads both.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// A runner instance not heard from for this long lists as `offline` (`3m`, `90s`).
    #[arg(long, value_name = "DURATION", default_value = "3m", value_parser = parse_duration)]
    runner_offline_after: Duration,
    /// Most concurrent client connections, a quarter of them reserved for authenticated clients.
    /// Ceiling: what the open-file limit allows (raised to its hard limit at start) after a
    /// margin for the database, blobs and git; default: that, at most 8192.
    #[arg(long)]
    max_connections: Option<usize>,
    /// Seconds a connection has to send a complete request head (slowloris bound).
    #[arg(long, default_value_t = 10)]
    header_timeout_secs: u64,
    /// Seconds an authenticated keep-alive connection may stay idle between requests.
    #[arg(long, default_value_t = 60)]
    idle_timeout_secs: u64,
    /// Largest log one step keeps (`1GiB`, `512MiB`, `100M`, bytes): past it the log says it was
    /// truncated and the job fails.
    #[arg(long, value_name = "SIZE", default_value = "1GiB", value_parser = parse_size)]
    max_step_log: u64,
    /// Largest log one job keeps, all its steps together: past it the log says it was truncated
    /// and the job fails.
    #[arg(long, value_name = "SIZE", default_value = "4GiB", value_parser = parse_size)]
    max_job_log: u64,
    /// Free space to keep on the blob directory's file system: below it new log bytes are
    /// refused (507) and the jobs writing them fail; `0` turns the check off.
    #[arg(long, value_name = "SIZE", default_value = "1GiB", value_parser = parse_size)]
    min_free_space: u64,
    /// Largest artifact one `store_artifacts` file may be: past it the upload is refused (413)
    /// and the step fails.
    #[arg(long, value_name = "SIZE", default_value = "10GiB", value_parser = parse_size)]
    max_artifact_size: u64,
    /// Largest cache (`save_cache`) or workspace layer (`persist_to_workspace`) archive: past it
    /// the upload is refused (413) and the step fails.
    #[arg(long, value_name = "SIZE", default_value = "10GiB", value_parser = parse_size)]
    max_archive_size: u64,
    /// How long a cache lives from its creation (`15d`, `36h`, `90m`).
    #[arg(long, value_name = "DURATION", default_value = "15d", value_parser = parse_duration)]
    cache_retention: Duration,
    /// How long a workspace layer lives from its creation.
    #[arg(long, value_name = "DURATION", default_value = "15d", value_parser = parse_duration)]
    workspace_retention: Duration,
    /// How long an artifact lives from its creation.
    #[arg(long, value_name = "DURATION", default_value = "30d", value_parser = parse_duration)]
    artifact_retention: Duration,
    /// Time between sweeps deleting expired caches, workspace layers and artifacts (expired ones
    /// are unreadable at once; the sweep frees their space).
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    sweep_interval: Duration,
    /// Another orb registry to fetch orbs this one lacks from, and cache: CircleCI's
    /// (https://circleci.com) or another bosun server. Asked through CircleCI's GraphQL API.
    #[arg(long, value_name = "URL")]
    orb_upstream: Option<String>,
    /// A URL prefix URL orbs (`orbs: x: https://host/path/orb.yml`) may be fetched from; give it
    /// once per prefix. None by default: URL orbs are refused.
    #[arg(long, value_name = "PREFIX")]
    url_orb_allow: Vec<String>,
    /// Print the effective settings and exit, without opening the data directory.
    #[arg(long)]
    check_config: bool,
}

/// Reads a duration as people write it: `15d`, `36h`, `90m`, `30s`, `1h 30m`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text.trim()).map_err(|err| {
        format!(
            "`{text}` is not a duration ({err}): use a number and a unit, such as 15d, 36h or 90s"
        )
    })?;
    if duration.is_zero() {
        return Err(format!("`{text}` is zero: a duration must be positive"));
    }
    Ok(duration)
}

/// Reads a size as people write it: `4096`, `100K`, `512MiB`, `1GiB`, `10GB`, `1 TiB`.
/// `K`, `M`, `G`, `T` alone and with `iB` are powers of 1024 (as `ls -h`, systemd and most
/// tools mean them); `KB`, `MB`, `GB`, `TB` are powers of 1000.
fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(split);
    let unit = unit.trim();
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "`{text}` is not a size: use bytes or a unit such as 512MiB, 1GiB, 100M or 10GB"
            ));
        }
    };
    let number: u64 = digits.parse().map_err(|_| {
        format!("`{text}` is not a size: use a whole number with an optional unit, such as 1GiB")
    })?;
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("`{text}` is more bytes than bosun can count"))
}

fn default_data_dir() -> PathBuf {
    if nix_is_root() {
        PathBuf::from("/var/lib/bosun")
    } else {
        std::env::var_os("HOME")
            .map(|home| PathBuf::from(home).join(".local/share/bosun"))
            .unwrap_or_else(|| PathBuf::from("bosun-data"))
    }
}

fn nix_is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BOSUN_LOG")
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut config =
        bosun_server::Config::new(args.listen, args.data_dir.unwrap_or_else(default_data_dir));
    config.database_url = args.database_url;
    config.blob_dir = args.blob_dir;
    config.blob_url = args.blob_url;
    config.public_url = args.public_url;
    config.admin_token = std::env::var("BOSUN_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    config.secret_key = std::env::var(bosun_server::SECRET_KEY_ENV)
        .ok()
        .filter(|k| !k.is_empty());
    config.task_lease = Duration::from_secs(args.task_lease_secs.max(1));
    config.max_running_tasks = args.max_running_tasks;
    config.runner_offline_after = args.runner_offline_after;
    config.tls = match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => Some(bosun_server::tls::TlsFiles { cert, key }),
        _ => None,
    };
    config.max_step_log = args.max_step_log;
    config.max_job_log = args.max_job_log;
    config.min_free_space = args.min_free_space;
    config.max_artifact_size = args.max_artifact_size;
    config.max_archive_size = args.max_archive_size;
    config.retention = bosun_server::retention::Retention {
        caches: args.cache_retention,
        workspaces: args.workspace_retention,
        artifacts: args.artifact_retention,
    };
    config.sweep_interval = args.sweep_interval;
    config.orbs = bosun_server::orbs::OrbSettings {
        upstream: args.orb_upstream.clone(),
        url_allow: args.url_orb_allow.clone(),
    };
    config.connections.max_connections = args.max_connections;
    config.connections.header_timeout = Duration::from_secs(args.header_timeout_secs.max(1));
    config.connections.idle_timeout = Duration::from_secs(args.idle_timeout_secs.max(1));

    if args.check_config {
        print!("{}", config_summary(&config));
        return ExitCode::SUCCESS;
    }

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("bosun-server: cannot start the async runtime: {err}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async move {
        let data_dir = config.data_dir.clone();
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        bosun_server::run(
            config,
            move |addr| {
                let url = format!("{scheme}://{addr}");
                // Tools that start the server with port 0 read the address from this file.
                let _ = std::fs::write(data_dir.join("server-url"), format!("{url}\n"));
                println!("bosun-server listening on {url}");
            },
            shutdown_signal(),
        )
        .await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("bosun-server: {err:#}");
            ExitCode::from(1)
        }
    }
}

/// What `--check-config` prints: the settings the server would run with, one per line.
fn config_summary(config: &bosun_server::Config) -> String {
    let duration = |d: Duration| humantime::format_duration(d).to_string();
    let blobs = match (&config.blob_url, &config.blob_dir) {
        (Some(url), _) => url.clone(),
        (None, Some(dir)) => dir.display().to_string(),
        (None, None) => config.data_dir.join("blobs").display().to_string(),
    };
    let lines = [
        ("listen", config.listen.to_string()),
        ("data dir", config.data_dir.display().to_string()),
        (
            "database",
            config.database_url.clone().unwrap_or_else(|| {
                format!("sqlite://{}", config.data_dir.join("bosun.db").display())
            }),
        ),
        ("blobs", blobs),
        ("task lease", duration(config.task_lease)),
        ("max running tasks", config.max_running_tasks.to_string()),
        (
            "runner offline after",
            duration(config.runner_offline_after),
        ),
        ("max step log", format!("{} bytes", config.max_step_log)),
        ("max job log", format!("{} bytes", config.max_job_log)),
        ("min free space", format!("{} bytes", config.min_free_space)),
        (
            "max artifact size",
            format!("{} bytes", config.max_artifact_size),
        ),
        (
            "max archive size",
            format!(
                "{} bytes (caches, workspace layers)",
                config.max_archive_size
            ),
        ),
        ("cache retention", duration(config.retention.caches)),
        ("workspace retention", duration(config.retention.workspaces)),
        ("artifact retention", duration(config.retention.artifacts)),
        ("sweep interval", duration(config.sweep_interval)),
        (
            "orb upstream",
            config
                .orbs
                .upstream
                .clone()
                .unwrap_or_else(|| "none".into()),
        ),
        (
            "URL orbs allowed from",
            if config.orbs.url_allow.is_empty() {
                "none".into()
            } else {
                config.orbs.url_allow.join(", ")
            },
        ),
    ];
    let mut out = String::new();
    for (name, value) in lines {
        out.push_str(&format!("{name}: {value}\n"));
    }
    out
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    use super::{parse_duration, parse_size};
    use std::time::Duration;

    #[test]
    fn durations_parse_as_people_write_them() {
        assert_eq!(parse_duration("15d"), Ok(Duration::from_secs(15 * 86400)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("15").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn sizes_parse_as_people_write_them() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("4gib"), Ok(4 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("100M"), Ok(100 << 20));
        assert_eq!(parse_size("10GB"), Ok(10_000_000_000));
        assert_eq!(parse_size("1 TiB"), Ok(1 << 40));
        assert_eq!(parse_size("0"), Ok(0));
        assert!(parse_size("").is_err());
        assert!(parse_size("GiB").is_err());
        assert!(parse_size("1.5GiB").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("1PiB").is_err());
        assert!(parse_size("99999999999TiB").is_err());
    }
}
