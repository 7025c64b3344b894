//! Self-update when idle (issue 15): the launch-agent replaces itself (and the task-agent beside
//! it, unless `runner.task_agent_path` pins one) with the release promoted for its resource
//! class, and comes back to its current version when the new one does not work.
//!
//! The order is what keeps a fleet from being bricked by a bad release:
//!
//! 1. `prepare`, while idle: the release is verified as task-agents are (`release::verify`:
//!    signature by a trusted key, the manifest's version and platform), a downgrade is refused
//!    unless an admin rolled back to it, and the new files are downloaded beside the binaries
//!    under fresh names (`.launch-agent.V.new`), each checked against the signed size and SHA-256.
//!    The new launch-agent must answer `--version` with V within 10 s.
//! 2. `apply`: a marker (`<ledger>/update.json`) says what is being tried, then the process
//!    re-executes the new file with the same arguments (same pid, so systemd sees one service).
//!    The installed binary is not touched yet: if the new one crashes, the service manager's
//!    restart starts the installed (previous) binary again, which finds the marker, skips V for
//!    good and reports it in its log.
//! 3. On probation, the new process must reach the server (a runner heartbeat) within
//!    [`PROBATION`] before it claims anything. It then `commit`s: the previous binaries are kept
//!    as `NAME.previous` (hard links) and the new ones renamed over the installed names
//!    (atomic). If the server stays out of reach, it records V as skipped and re-executes the
//!    installed binary: the previous version runs on.
//!
//! The marker and the skip list live in the root-only ledger directory.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine as _;
use bosun_api::{Auth, ClaimRequest, Client};
use serde::{Deserialize, Serialize};

use crate::release::{self, TrustedKey};

/// How long a new version has to reach the server before the previous one is restored.
pub const PROBATION: Duration = Duration::from_secs(120);
/// How long the new binary may take to answer `--version`.
const SMOKE_TEST: Duration = Duration::from_secs(10);

/// What is being tried, written before the re-exec (`<ledger>/update.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Marker {
    pub from: String,
    pub to: String,
    /// The installed launch-agent, and the new file that runs on probation.
    pub exe: PathBuf,
    pub new_exe: PathBuf,
    /// The installed task-agent and its new file, when the update replaces it.
    pub task_agent: Option<(PathBuf, PathBuf)>,
}

/// A verified release downloaded beside the binaries, ready to run.
#[derive(Debug)]
pub struct Prepared {
    marker: Marker,
}

impl Prepared {
    pub fn version(&self) -> &str {
        &self.marker.to
    }
}

/// The launch-agent's self-update.
pub struct Updater {
    keys: Vec<TrustedKey>,
    platform: String,
    ledger_dir: PathBuf,
    /// The installed launch-agent (what the service manager starts).
    exe: PathBuf,
    /// The installed task-agent to replace too, unless one is pinned.
    task_agent: Option<PathBuf>,
    /// Versions that failed and are not tried again, with why.
    skipped: BTreeMap<String, String>,
    /// The downgrade last refused (said once in the log).
    refused_downgrade: Option<String>,
    /// The version the server last said is promoted for this agent (`""`: none); `None` until
    /// a check succeeds. Claims carry it, so a promotion the agent missed ends its next claim.
    pub seen: Option<String>,
}

impl std::fmt::Debug for Updater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Updater")
            .field("exe", &self.exe)
            .field("skipped", &self.skipped)
            .finish_non_exhaustive()
    }
}

fn marker_path(ledger_dir: &Path) -> PathBuf {
    ledger_dir.join("update.json")
}

fn skipped_path(ledger_dir: &Path) -> PathBuf {
    ledger_dir.join("update-skipped.json")
}

/// Reads a small JSON file of the ledger (never through a symlink).
fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    use std::io::Read as _;
    let mut text = String::new();
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .ok()?
        .take(64 << 10)
        .read_to_string(&mut text)
        .ok()?;
    serde_json::from_str(&text).ok()
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let mut file = crate::privileged::create_private(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(serde_json::to_string(value)?.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

impl Updater {
    /// `task_agent`: the installed task-agent an update replaces (`None` when pinned).
    pub fn new(
        keys: Vec<TrustedKey>,
        ledger_dir: &Path,
        exe: PathBuf,
        task_agent: Option<PathBuf>,
    ) -> Updater {
        let skipped = read_json(&skipped_path(ledger_dir)).unwrap_or_default();
        Updater {
            keys,
            platform: release::platform(),
            ledger_dir: ledger_dir.to_owned(),
            exe,
            task_agent,
            skipped,
            refused_downgrade: None,
            seen: None,
        }
    }

    /// Remembers that `version` is not to be tried again, and says why in the log.
    pub fn skip(&mut self, version: &str, why: &str) {
        tracing::error!(
            version,
            "update to {version} refused or failed, not tried again: {why}"
        );
        self.skipped.insert(version.to_owned(), why.to_owned());
        if let Err(err) = write_json(&skipped_path(&self.ledger_dir), &self.skipped) {
            tracing::warn!("{err:#}");
        }
    }

    /// Asks the server which version this agent is to run and, when it is another one this
    /// agent may go to, verifies and downloads it. `Ok(None)`: nothing to do.
    pub async fn prepare(
        &mut self,
        client: &Client,
        auth: &Auth,
    ) -> anyhow::Result<Option<Prepared>> {
        let (os, arch) = self
            .platform
            .split_once('-')
            .unwrap_or((self.platform.as_str(), ""));
        self.seen = None;
        let Some(release) = client.runner_release(auth, os, arch, None).await? else {
            self.seen = Some(String::new());
            return Ok(None);
        };
        let version = release.version.clone();
        self.seen = Some(version.clone());
        if version == crate::VERSION || self.skipped.contains_key(&version) {
            return Ok(None);
        }
        if is_downgrade(&version) && !release.rollback {
            // Refused while promoted so, not for good: a rollback to it is taken.
            if self.refused_downgrade.as_deref() != Some(version.as_str()) {
                tracing::error!(
                    "release {version} is older than the running {}: refused (a downgrade is taken only when an admin rolls back to it: bosun release rollback)",
                    crate::VERSION
                );
                self.refused_downgrade = Some(version);
            }
            return Ok(None);
        }
        let prepared = async {
            // The new files are written beside the installed ones as root: only into a
            // directory no one else can write (nobody could swap a file between the check of
            // its hash and its use).
            for installed in std::iter::once(&self.exe).chain(self.task_agent.as_ref()) {
                check_install_dir(installed)?;
            }
            let signature = base64::engine::general_purpose::STANDARD
                .decode(release.signature.trim())
                .map_err(|_| anyhow::anyhow!("release {version}'s signature is not base64"))?;
            let verified = release::verify(
                &self.keys,
                &release.manifest,
                &signature,
                &version,
                &self.platform,
            )?;
            let fetch = |name: &'static str, installed: PathBuf| {
                fetch_new(client, auth, &verified, &release, name, installed)
            };
            let new_exe = fetch("launch-agent", self.exe.clone()).await?;
            smoke_test(&new_exe, &version).await?;
            let task_agent = match &self.task_agent {
                Some(installed) => Some((
                    installed.clone(),
                    fetch("task-agent", installed.clone()).await?,
                )),
                None => None,
            };
            Ok::<_, anyhow::Error>(Prepared {
                marker: Marker {
                    from: crate::VERSION.to_owned(),
                    to: version.clone(),
                    exe: self.exe.clone(),
                    new_exe,
                    task_agent,
                },
            })
        }
        .await;
        match prepared {
            Ok(prepared) => Ok(Some(prepared)),
            Err(err) => {
                for name in ["launch-agent", "task-agent"] {
                    let _ =
                        std::fs::remove_file(sibling(&self.exe, &format!(".{name}.{version}.new")));
                }
                self.skip(&version, &format!("{err:#}"));
                Ok(None)
            }
        }
    }

    /// Records the attempt and becomes the new version (same pid). Returns only on failure.
    pub fn apply(&mut self, prepared: Prepared) -> anyhow::Error {
        let marker = prepared.marker;
        if let Err(err) = write_json(&marker_path(&self.ledger_dir), &marker) {
            return err;
        }
        tracing::info!(from = %marker.from, to = %marker.to, "updating: running the new launch-agent");
        let err = reexec(&marker.new_exe);
        // Still here: the new binary could not even start.
        let _ = std::fs::remove_file(marker_path(&self.ledger_dir));
        self.skip(&marker.to, &format!("starting it: {err}"));
        cleanup(&marker);
        anyhow::anyhow!("re-executing {}: {err}", marker.new_exe.display())
    }
}

/// Downloads the release's `name` beside `installed` as `.NAME.VERSION.new`, checked against
/// the signed manifest.
async fn fetch_new(
    client: &Client,
    auth: &Auth,
    verified: &release::Verified,
    release: &bosun_api::RunnerRelease,
    name: &'static str,
    installed: PathBuf,
) -> anyhow::Result<PathBuf> {
    let version = &verified.version;
    let file = verified
        .files
        .get(name)
        .with_context(|| format!("release {version}'s signed manifest has no {name}"))?;
    let url = release
        .files
        .get(name)
        .with_context(|| format!("the server offers no {name} of release {version}"))?;
    let new = sibling(&installed, &format!(".{name}.{version}.new"));
    let _ = std::fs::remove_file(&new);
    release::fetch_file(client, auth, url, &new, file)
        .await
        .with_context(|| format!("downloading {name} {version}"))?;
    Ok(new)
}

/// The directory of an installed binary is the launch-agent user's (or root's) and writable by
/// no one else.
fn check_install_dir(installed: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let dir = installed.parent().unwrap_or(Path::new("/"));
    let meta =
        std::fs::symlink_metadata(dir).with_context(|| format!("reading {}", dir.display()))?;
    let euid = nix::unistd::Uid::effective().as_raw();
    if !meta.is_dir() || (meta.uid() != euid && meta.uid() != 0) || meta.mode() & 0o022 != 0 {
        bail!(
            "{} is not a directory only the launch-agent's user can write: it does not update itself there (runner.disable_auto_update)",
            dir.display()
        );
    }
    Ok(())
}

/// `dir/name` beside `path`.
fn sibling(path: &Path, name: &str) -> PathBuf {
    path.with_file_name(name)
}

fn is_downgrade(version: &str) -> bool {
    match (
        semver::Version::parse(version),
        semver::Version::parse(crate::VERSION),
    ) {
        (Ok(new), Ok(running)) => new < running,
        // Not semver: never taken for a downgrade by guess; the signature still decides.
        _ => false,
    }
}

/// The new launch-agent answers `--version` with `version` in time.
async fn smoke_test(binary: &Path, version: &str) -> anyhow::Result<()> {
    let mut command = tokio::process::Command::new(binary);
    command.arg("--version").kill_on_drop(true);
    let output = tokio::time::timeout(SMOKE_TEST, command.output())
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "`{} --version` did not answer within {SMOKE_TEST:?}",
                binary.display()
            )
        })?
        .with_context(|| format!("running {} --version", binary.display()))?;
    let said = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() || !said.split_whitespace().any(|word| word == version) {
        bail!(
            "the new launch-agent's --version answered {:?} ({}), not {version}",
            said.trim(),
            output.status
        );
    }
    Ok(())
}

/// Replaces this process with `binary`, same arguments (argv[0] kept). Returns only on failure.
fn reexec(binary: &Path) -> std::io::Error {
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_else(|| binary.as_os_str().to_owned());
    std::process::Command::new(binary)
        .arg0(argv0)
        .args(args)
        .exec()
}

/// Removes an attempt's new files.
fn cleanup(marker: &Marker) {
    let _ = std::fs::remove_file(&marker.new_exe);
    if let Some((_, new)) = &marker.task_agent {
        let _ = std::fs::remove_file(new);
    }
}

/// What the start finds in the ledger.
#[derive(Debug)]
pub enum Start {
    /// Nothing was being tried (or an attempt that failed was dealt with).
    Normal,
    /// This process is the new version on probation.
    Probation(Marker),
}

/// At start: a marker naming another version than this one means that version was started and
/// this (installed) binary runs again, so the new one died before it reached the server. It is
/// skipped. A marker naming this version: probation.
pub fn on_start(updater: &mut Updater) -> Start {
    let path = marker_path(&updater.ledger_dir);
    let Some(marker) = read_json::<Marker>(&path) else {
        let _ = std::fs::remove_file(&path);
        return Start::Normal;
    };
    if marker.to == crate::VERSION {
        return Start::Probation(marker);
    }
    let _ = std::fs::remove_file(&path);
    cleanup(&marker);
    updater.skip(
        &marker.to,
        &format!(
            "the new launch-agent exited before it reached the server; {} runs on",
            crate::VERSION
        ),
    );
    Start::Normal
}

/// Probation: reach the server within [`PROBATION`], then commit. Otherwise the previous
/// version is restored (this returns only if that fails).
pub async fn probation(
    updater: &mut Updater,
    marker: Marker,
    client: &Client,
    auth: &Auth,
    request: &ClaimRequest,
) -> anyhow::Result<()> {
    // This process runs from the new file; the installed binary is what a restore runs and
    // what a later update replaces.
    updater.exe = marker.exe.clone();
    let started = Instant::now();
    let mut pause = Duration::from_millis(200);
    let reached = loop {
        match client.runner_heartbeat(auth, request).await {
            Ok(()) => break true,
            Err(err) if err.status() == Some(bosun_api::StatusCode::UNAUTHORIZED) => break false,
            Err(err) => tracing::warn!(
                "updated to {}: the server is not reachable yet: {err}",
                marker.to
            ),
        }
        if started.elapsed() >= PROBATION {
            break false;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    };
    if reached {
        match commit(&marker) {
            Ok(()) => {
                let _ = std::fs::remove_file(marker_path(&updater.ledger_dir));
                tracing::info!(
                    from = %marker.from,
                    to = %marker.to,
                    "updated from {} to {} (the previous binaries are kept as .previous)",
                    marker.from,
                    marker.to
                );
                return Ok(());
            }
            Err(err) => tracing::error!("installing {}: {err:#}", marker.to),
        }
    }
    let _ = std::fs::remove_file(marker_path(&updater.ledger_dir));
    updater.skip(
        &marker.to,
        &format!(
            "it did not reach the server within {PROBATION:?}; restoring {}",
            marker.from
        ),
    );
    cleanup(&marker);
    let err = reexec(&marker.exe);
    bail!("restoring {}: {err}", marker.exe.display())
}

/// Keeps each installed binary as `NAME.previous` (a hard link) and renames the new file over
/// the installed name: at every moment the installed name is a whole binary.
fn commit(marker: &Marker) -> anyhow::Result<()> {
    let mut pairs = vec![(marker.exe.clone(), marker.new_exe.clone())];
    if let Some(pair) = &marker.task_agent {
        pairs.push(pair.clone());
    }
    for (installed, new) in pairs {
        let mut previous = installed.clone().into_os_string();
        previous.push(".previous");
        let previous = PathBuf::from(previous);
        let _ = std::fs::remove_file(&previous);
        std::fs::hard_link(&installed, &previous).with_context(|| {
            format!("keeping {} as {}", installed.display(), previous.display())
        })?;
        std::fs::rename(&new, &installed)
            .with_context(|| format!("installing {}", installed.display()))?;
    }
    Ok(())
}
