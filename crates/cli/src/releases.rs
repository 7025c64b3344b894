//! `bosun release …` (admin): publish a release `cargo xtask release` wrote, list releases,
//! promote a version for the fleet or one resource class, roll back.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use bosun_api::types::{PromoteRelease, PublishRelease, ReleaseManifest, ReleaseSummary};
use clap::Subcommand;

use crate::Failure;
use crate::commands::Ctx;

#[derive(Subcommand, Debug)]
pub enum ReleaseCommand {
    /// Upload the release in DIR (`target/dist/release/V`: manifest.json, manifest.json.sig and
    /// one directory per platform). Files already uploaded are skipped, so a publish that failed
    /// half-way can be run again.
    Publish { dir: PathBuf },
    /// List releases, newest first: version, complete or not, platforms, where promoted.
    List,
    /// Have the agents run version V: the whole fleet, or only one resource class (a canary).
    Promote {
        version: String,
        #[arg(long, value_name = "NS/NAME")]
        resource_class: Option<String>,
    },
    /// Go back to the version promoted before (agents may then go down to it).
    Rollback {
        #[arg(long, value_name = "NS/NAME")]
        resource_class: Option<String>,
    },
}

pub async fn release(ctx: &Ctx, command: ReleaseCommand) -> Result<u8, Failure> {
    match command {
        ReleaseCommand::Publish { dir } => publish(ctx, &dir).await?,
        ReleaseCommand::List => {
            for release in ctx.client.releases(&ctx.auth).await?.items {
                println!("{}", line(&release));
            }
        }
        ReleaseCommand::Promote {
            version,
            resource_class,
        } => {
            let request = PromoteRelease {
                version: Some(version),
                resource_class,
            };
            let promoted = ctx.client.promote_release(&ctx.auth, &request).await?;
            println!(
                "promoted {} for {} (was {})",
                promoted.version,
                promoted.scope,
                promoted.previous.as_deref().unwrap_or("none")
            );
        }
        ReleaseCommand::Rollback { resource_class } => {
            let request = PromoteRelease {
                version: None,
                resource_class,
            };
            let promoted = ctx.client.rollback_release(&ctx.auth, &request).await?;
            println!(
                "rolled {} back to {} (from {})",
                promoted.scope,
                promoted.version,
                promoted.previous.as_deref().unwrap_or("none")
            );
        }
    }
    Ok(0)
}

fn line(release: &ReleaseSummary) -> String {
    format!(
        "{:<24} {:<10} {:<40} promoted: {}",
        release.version,
        if release.complete {
            "complete"
        } else {
            "incomplete"
        },
        release.platforms.join(","),
        if release.promoted.is_empty() {
            "-".to_owned()
        } else {
            release.promoted.join(",")
        }
    )
}

fn read(path: &Path) -> Result<Vec<u8>, Failure> {
    std::fs::read(path).map_err(|err| Failure::input(format!("reading {}: {err}", path.display())))
}

async fn publish(ctx: &Ctx, dir: &Path) -> Result<(), Failure> {
    let manifest_bytes = read(&dir.join("manifest.json"))?;
    let signature = read(&dir.join("manifest.json.sig"))?;
    if signature.len() != 64 {
        return Err(Failure::input(format!(
            "{} is {} bytes: an ed25519 signature is 64",
            dir.join("manifest.json.sig").display(),
            signature.len()
        )));
    }
    let manifest_text = String::from_utf8(manifest_bytes).map_err(|_| {
        Failure::input(format!(
            "{} is not UTF-8",
            dir.join("manifest.json").display()
        ))
    })?;
    let manifest: ReleaseManifest = serde_json::from_str(&manifest_text)
        .map_err(|err| Failure::input(format!("{}: {err}", dir.join("manifest.json").display())))?;
    let version = manifest.version.clone();
    let request = PublishRelease {
        manifest: manifest_text,
        signature: base64::engine::general_purpose::STANDARD.encode(&signature),
    };
    let mut summary = ctx
        .client
        .publish_release(&ctx.auth, &version, &request)
        .await?;
    for (platform, entry) in &manifest.platforms {
        for (name, file) in &entry.files {
            let path = dir.join(platform).join(name);
            let opened = tokio::fs::File::open(&path)
                .await
                .map_err(|err| Failure::input(format!("opening {}: {err}", path.display())))?;
            let length = opened
                .metadata()
                .await
                .map_err(|err| Failure::input(format!("reading {}: {err}", path.display())))?
                .len();
            if length != file.size {
                return Err(Failure::input(format!(
                    "{} is {length} bytes; the manifest lists {}",
                    path.display(),
                    file.size
                )));
            }
            let body = bosun_api::Body::sized(
                length,
                tokio_util::io::ReaderStream::with_capacity(opened, 256 << 10),
            );
            summary = ctx
                .client
                .upload_release_file(&ctx.auth, &version, platform, name, body)
                .await?;
            eprintln!("uploaded {platform}/{name} ({length} bytes)");
        }
    }
    println!("published {}", line(&summary));
    Ok(())
}
