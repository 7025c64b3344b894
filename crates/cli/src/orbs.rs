//! `bosun orb …`: pack an orb's source tree, validate a packed orb, and publish, list and read
//! orbs in a server's registry, as `circleci orb …` does. Also how `bosun config validate` and
//! `process` resolve orbs through a server.

use std::path::{Path, PathBuf};

use bosun_api::{Auth, Client};
use clap::Subcommand;

use crate::Failure;

#[derive(Subcommand, Debug)]
pub enum OrbCommand {
    /// Print the packed orb of a source tree (`@orb.yml`, `commands/`, `jobs/`, `executors/`,
    /// `examples/`, `<<include(file)>>`), as `circleci orb pack` does.
    Pack { dir: PathBuf },
    /// Check a packed orb with the compiler pipelines use. The orbs it imports are resolved
    /// through the server when --host is given, else from --orb-dir.
    Validate {
        file: PathBuf,
        /// A directory of vendored orbs, one `namespace/name@version.yml` each.
        #[arg(long)]
        orb_dir: Option<PathBuf>,
    },
    /// Publish a packed orb as NAMESPACE/NAME@X.Y.Z (or @dev:LABEL). Published versions never
    /// change; a dev version is replaced by its next publish and expires after 90 days.
    Publish { file: PathBuf, reference: String },
    /// List the orbs of the registry, or of one namespace.
    List { namespace: Option<String> },
    /// An orb's versions, newest first.
    Info { name: String },
    /// Print the source of NAMESPACE/NAME@VERSION (X.Y.Z, X.Y, X, volatile or dev:LABEL).
    Source { reference: String },
}

/// Where the registry is: the client, and the token if one was given (reads need none).
pub struct Registry {
    pub client: Client,
    pub auth: Auth,
}

/// Runs an orb command. `given` is the server when `--host` was given (validation resolves
/// imports through it); `server` is the one the registry commands talk to.
pub async fn orb(
    command: OrbCommand,
    given: Option<Registry>,
    server: Result<Registry, Failure>,
) -> Result<u8, Failure> {
    let mut server = Some(server);
    let mut need_registry = move || {
        server
            .take()
            .unwrap_or_else(|| Err(Failure::input("the registry was already used")))
    };
    match command {
        OrbCommand::Pack { dir } => {
            let packed = bosun_config::pack(&dir).map_err(|e| Failure::input(e.to_string()))?;
            print!("{packed}");
        }
        OrbCommand::Validate { file, orb_dir } => {
            let text = read(&file)?;
            let label = file.display().to_string();
            let mut ctx = bosun_config::PipelineContext {
                orb_dir,
                ..Default::default()
            };
            if let Some(registry) = &given {
                ctx.orbs = resolve_through(registry, &text, &label).await?.shared();
            }
            let summary = bosun_config::validate_orb(&text, &label, &ctx)
                .map_err(|e| Failure::input(e.to_string()))?;
            println!(
                "Orb `{label}` is valid: {} command(s), {} job(s), {} executor(s), {} example(s).",
                summary.commands, summary.jobs, summary.executors, summary.examples
            );
        }
        OrbCommand::Publish { file, reference } => {
            let registry = need_registry()?;
            let r = bosun_config::OrbRef::parse(&reference).map_err(Failure::input)?;
            let text = read(&file)?;
            let published = registry
                .client
                .publish_orb(
                    &registry.auth,
                    &r.namespace,
                    &r.name,
                    &r.version.to_string(),
                    &text,
                )
                .await?;
            println!(
                "{} {} (sha256 {})",
                if published.replaced {
                    "replaced"
                } else {
                    "published"
                },
                published.orb,
                published.sha256
            );
        }
        OrbCommand::List { namespace } => {
            let registry = need_registry()?;
            let list = registry
                .client
                .orbs(&registry.auth, namespace.as_deref())
                .await?;
            if list.items.is_empty() {
                eprintln!("no orbs");
            }
            for orb in list.items {
                println!(
                    "{} ({} version(s), latest {})",
                    orb.name,
                    orb.versions,
                    orb.latest.as_deref().unwrap_or("none: dev versions only")
                );
            }
        }
        OrbCommand::Info { name } => {
            let registry = need_registry()?;
            let (namespace, orb_name) = name
                .split_once('/')
                .filter(|(ns, n)| bosun_config::is_orb_name(ns) && bosun_config::is_orb_name(n))
                .ok_or_else(|| {
                    Failure::input(format!("`{name}` is not an orb name like `namespace/name`"))
                })?;
            let info = registry
                .client
                .orb_info(&registry.auth, namespace, orb_name)
                .await?;
            println!(
                "{} (latest {})",
                info.name,
                info.latest.as_deref().unwrap_or("none")
            );
            for v in info.versions {
                let mut line = format!("  {}  {}  sha256 {}", v.version, v.created_at, v.sha256);
                if let Some(expires) = &v.expires_at {
                    line.push_str(&format!("  expires {expires}"));
                }
                if let Some(upstream) = &v.upstream {
                    line.push_str(&format!("  cached from {upstream}"));
                }
                println!("{line}");
            }
        }
        OrbCommand::Source { reference } => {
            let registry = need_registry()?;
            bosun_config::OrbRef::parse(&reference).map_err(Failure::input)?;
            match registry
                .client
                .resolve_orb(&registry.auth, &reference)
                .await?
            {
                Some(orb) => print!("{}", orb.source),
                None => return Err(Failure::input(format!("orb {reference} not found"))),
            }
        }
    }
    Ok(0)
}

fn read(file: &Path) -> Result<String, Failure> {
    let meta = std::fs::metadata(file)
        .map_err(|err| Failure::input(format!("reading {}: {err}", file.display())))?;
    if meta.len() > bosun_config::MAX_ORB_BYTES as u64 {
        return Err(Failure::input(format!(
            "{} is larger than {} bytes",
            file.display(),
            bosun_config::MAX_ORB_BYTES
        )));
    }
    std::fs::read_to_string(file)
        .map_err(|err| Failure::input(format!("reading {}: {err}", file.display())))
}

/// Resolves the orbs `text` imports (recursively) through the server's registry.
pub async fn resolve_through(
    registry: &Registry,
    text: &str,
    file: &str,
) -> Result<bosun_config::ResolvedOrbs, Failure> {
    bosun_config::resolve_orbs(text, file, |reference| async move {
        match registry
            .client
            .resolve_orb(&registry.auth, &reference)
            .await
        {
            Ok(Some(orb)) => Ok(Some(bosun_config::ResolvedOrb {
                reference,
                version: orb.version,
                source: orb.source,
            })),
            Ok(None) => Ok(None),
            Err(err) => Err(format!("resolving orb {reference}: {err}")),
        }
    })
    .await
    .map_err(|e| Failure::input(e.to_string()))
}
