//! Signed releases (issue 15): the keys a release must be signed by, the check of a release's
//! manifest and files, and the task-agent cache (a claim names the task-agent version its task
//! runs; one not cached is downloaded, verified and kept).
//!
//! Trust comes only from the keys: a release is its manifest's exact bytes, an ed25519
//! signature over them, and files whose size and SHA-256 the manifest lists. The server is not
//! trusted for any of it: whatever it answers, a file runs only once the signature verifies
//! against a key this agent trusts and the file's bytes hash to what the signed manifest says,
//! for this version and this platform. A cached copy is checked again the same way each time
//! it is used, so a copy that was altered on disk never runs.
//!
//! Root-only: the cache directory is root's (0755, so the job user can execute what is in it
//! but change nothing); each version is written into a fresh directory of a random name and
//! renamed into place only once verified, so a half-written or unverified file is never at
//! the path a task runs.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use base64::Engine as _;
use bosun_api::{Auth, Client, ReleaseFile, ReleaseManifest};
use ed25519_dalek::pkcs8::DecodePublicKey as _;
use ed25519_dalek::{Signature, VerifyingKey};
use sha2::Digest as _;

/// Largest manifest read (from the server or the cache).
const MAX_MANIFEST: u64 = 64 << 10;

/// One key releases may be signed by, with where it came from (for messages).
#[derive(Clone)]
pub struct TrustedKey {
    key: VerifyingKey,
    pub from: String,
}

impl std::fmt::Debug for TrustedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustedKey")
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

impl TrustedKey {
    /// An ed25519 public key in PEM (SPKI, as `openssl pkey -pubout` writes it).
    pub fn parse(pem: &str, from: &str) -> anyhow::Result<TrustedKey> {
        let key = VerifyingKey::from_public_key_pem(pem.trim()).map_err(|err| {
            anyhow::anyhow!(
                "{from} is not an ed25519 public key in PEM (openssl pkey -pubout): {err}"
            )
        })?;
        Ok(TrustedKey {
            key,
            from: from.to_owned(),
        })
    }

    /// Reads a key file. When the launch-agent is root the file must be root's and writable by
    /// no one else: whoever can change it can make this agent run any binary as root.
    pub fn read(path: &Path, running_as_root: bool) -> anyhow::Result<TrustedKey> {
        let from = path.display().to_string();
        let meta = std::fs::metadata(path).with_context(|| format!("reading {from}"))?;
        if running_as_root && (meta.uid() != 0 || meta.mode() & 0o022 != 0) {
            bail!(
                "{from} must be owned by root and writable by no one else (it decides what binaries root runs)"
            );
        }
        let mut text = String::new();
        std::fs::File::open(path)
            .with_context(|| format!("reading {from}"))?
            .take(16 << 10)
            .read_to_string(&mut text)
            .with_context(|| format!("reading {from}"))?;
        TrustedKey::parse(&text, &from)
    }
}

/// The keys compiled in: `BOSUN_RELEASE_KEYS` at build time, one or more PEM public keys.
pub fn compiled_keys() -> anyhow::Result<Vec<TrustedKey>> {
    match option_env!("BOSUN_RELEASE_KEYS") {
        None => Ok(Vec::new()),
        Some(text) => parse_keys(text, "BOSUN_RELEASE_KEYS"),
    }
}

/// Every PEM block of `text` as a key.
fn parse_keys(text: &str, from: &str) -> anyhow::Result<Vec<TrustedKey>> {
    const END: &str = "-----END PUBLIC KEY-----";
    text.split_inclusive(END)
        .filter(|block| block.contains("-----BEGIN"))
        .enumerate()
        .map(|(index, block)| TrustedKey::parse(block, &format!("{from} key {}", index + 1)))
        .collect()
}

/// This machine's platform as releases name it: `linux-` and the architecture as `uname -m`
/// says it (`x86_64`, `aarch64`, `s390x`, `ppc64le`).
pub fn platform() -> String {
    let arch = match std::env::consts::ARCH {
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        arch => arch,
    };
    format!("{}-{arch}", std::env::consts::OS)
}

/// A release whose signature verified: this platform's files as the signed manifest lists them.
#[derive(Debug, Clone)]
pub struct Verified {
    pub version: String,
    pub files: BTreeMap<String, ReleaseFile>,
}

/// Checks `signature` over `manifest` against `keys`, then that the manifest is of `version`
/// and has a build for `platform`.
pub fn verify(
    keys: &[TrustedKey],
    manifest: &str,
    signature: &[u8],
    version: &str,
    platform: &str,
) -> anyhow::Result<Verified> {
    if keys.is_empty() {
        bail!(
            "release {version} cannot be verified: no release key is trusted (runner.update.trusted_keys)"
        );
    }
    let signature = Signature::from_slice(signature).map_err(|_| {
        anyhow::anyhow!("release {version}'s signature is not an ed25519 signature (64 bytes)")
    })?;
    if !keys.iter().any(|key| {
        key.key
            .verify_strict(manifest.as_bytes(), &signature)
            .is_ok()
    }) {
        bail!(
            "release {version} is not signed by a trusted key: its manifest's signature does not verify against any of the {} key(s) of runner.update.trusted_keys",
            keys.len()
        );
    }
    let parsed: ReleaseManifest = serde_json::from_str(manifest)
        .with_context(|| format!("release {version}'s signed manifest does not parse"))?;
    if parsed.version != version {
        bail!(
            "release {version}'s signed manifest is of version {}: refused",
            parsed.version
        );
    }
    let Some(build) = parsed.platforms.get(platform) else {
        bail!(
            "release {version} has no {platform} build (its signed manifest lists {})",
            parsed
                .platforms
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    Ok(Verified {
        version: version.to_owned(),
        files: build.files.clone(),
    })
}

/// A version as a release spells it, safe as a directory name.
fn check_version(version: &str) -> anyhow::Result<()> {
    if !bosun_api::is_release_version(version) {
        bail!(
            "`{}` is not a release version",
            version
                .escape_debug()
                .to_string()
                .chars()
                .take(80)
                .collect::<String>()
        );
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of a file, streamed.
fn file_sha256(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buffer = vec![0u8; 256 << 10];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hex(&hasher.finalize()))
}

/// Reads at most `max` bytes of a file of the cache (never through a symlink).
fn read_bounded(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)?
        .take(max)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The task-agents downloaded by version, in `runner.task_agent_directory`.
pub struct TaskAgents {
    dir: PathBuf,
    keys: Vec<TrustedKey>,
    platform: String,
    /// One download at a time: tasks claimed together for the same new version wait for the
    /// first's download instead of fetching it again.
    fetching: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for TaskAgents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskAgents")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

const TASK_AGENT: &str = "task-agent";

impl TaskAgents {
    pub fn new(dir: PathBuf, keys: Vec<TrustedKey>) -> TaskAgents {
        TaskAgents {
            dir,
            keys,
            platform: platform(),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// The verified task-agent binary of `version`, downloading it from the server (runner
    /// token `auth`) when it is not cached, or when the cached copy no longer verifies.
    pub async fn get(
        &self,
        client: &Client,
        auth: &Auth,
        version: &str,
    ) -> anyhow::Result<PathBuf> {
        check_version(version)?;
        let _one = self.fetching.lock().await;
        let dir = self.dir.clone();
        let cached = dir.join(version);
        let (keys, platform, wanted) =
            (self.keys.clone(), self.platform.clone(), version.to_owned());
        let checked = tokio::task::spawn_blocking(move || {
            ensure_cache_dir(&dir)?;
            verify_cached(&cached, &keys, &wanted, &platform)
        })
        .await
        .context("checking the task-agent cache")??;
        if let Some(path) = checked {
            return Ok(path);
        }
        self.download(client, auth, version).await
    }

    async fn download(
        &self,
        client: &Client,
        auth: &Auth,
        version: &str,
    ) -> anyhow::Result<PathBuf> {
        let release = crate::upload::with_retry("release", || {
            client.runner_release(
                auth,
                os(&self.platform),
                arch(&self.platform),
                Some(version),
            )
        })
        .await
        .with_context(|| format!("asking the server for task-agent {version}"))?
        .with_context(|| format!("the server has no release {version} for {}", self.platform))?;
        let signature = base64::engine::general_purpose::STANDARD
            .decode(release.signature.trim())
            .map_err(|_| anyhow::anyhow!("release {version}'s signature is not base64"))?;
        let verified = verify(
            &self.keys,
            &release.manifest,
            &signature,
            version,
            &self.platform,
        )?;
        let file = verified.files.get(TASK_AGENT).with_context(|| {
            format!(
                "release {version}'s signed manifest has no {TASK_AGENT} for {}",
                self.platform
            )
        })?;
        let url = release.files.get(TASK_AGENT).with_context(|| {
            format!("the server offers no {TASK_AGENT} file of release {version}")
        })?;
        // A fresh directory of a random name: nothing else is at this path, so nothing in it is
        // followed or overwritten.
        let partial = self.dir.join(format!(".partial-{}", random_suffix()?));
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(&partial)
            .with_context(|| format!("creating {}", partial.display()))?;
        let result = async {
            let binary = partial.join(TASK_AGENT);
            fetch_file(client, auth, url, &binary, file)
                .await
                .with_context(|| format!("downloading task-agent {version}"))?;
            std::fs::write(partial.join("manifest.json"), &release.manifest)?;
            std::fs::write(partial.join("manifest.json.sig"), &signature)?;
            let target = self.dir.join(version);
            if std::fs::symlink_metadata(&target).is_ok() {
                // A copy that did not verify: it goes (remove_dir_all never follows links).
                std::fs::remove_dir_all(&target)
                    .with_context(|| format!("removing {}", target.display()))?;
            }
            std::fs::rename(&partial, &target).with_context(|| {
                format!("moving task-agent {version} into {}", target.display())
            })?;
            Ok::<_, anyhow::Error>(target.join(TASK_AGENT))
        }
        .await;
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&partial);
        }
        let path = result?;
        tracing::info!(
            version,
            bytes = file.size,
            path = %path.display(),
            "downloaded and verified task-agent {version}"
        );
        Ok(path)
    }
}

fn os(platform: &str) -> &str {
    platform.split_once('-').map_or(platform, |(os, _)| os)
}

fn arch(platform: &str) -> &str {
    platform.split_once('-').map_or("", |(_, arch)| arch)
}

fn random_suffix() -> anyhow::Result<String> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|err| anyhow::anyhow!("no randomness: {err}"))?;
    Ok(hex(&bytes))
}

/// Creates the cache directory (root's, 0755) and checks no one else could have planted it or
/// can write into it.
fn ensure_cache_dir(dir: &Path) -> anyhow::Result<()> {
    if let Some(parent) = dir.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    match std::fs::DirBuilder::new().mode(0o755).create(dir) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(err) => return Err(err).with_context(|| format!("creating {}", dir.display())),
    }
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.is_dir()
        || meta.uid() != nix::unistd::Uid::effective().as_raw()
        || meta.mode() & 0o022 != 0
    {
        bail!(
            "{} must be a directory of the launch-agent's user that no one else can write (runner.task_agent_directory)",
            dir.display()
        );
    }
    Ok(())
}

/// The cached task-agent in `dir` if it verifies now: its stored manifest's signature, the
/// version and platform, and the binary's size and SHA-256. `None` when there is no copy or it
/// does not verify (it is then downloaded again).
fn verify_cached(
    dir: &Path,
    keys: &[TrustedKey],
    version: &str,
    platform: &str,
) -> anyhow::Result<Option<PathBuf>> {
    if std::fs::symlink_metadata(dir).is_err() {
        return Ok(None);
    }
    let checked = (|| -> anyhow::Result<PathBuf> {
        let manifest = String::from_utf8(read_bounded(&dir.join("manifest.json"), MAX_MANIFEST)?)
            .context("the cached manifest is not UTF-8")?;
        let signature = read_bounded(&dir.join("manifest.json.sig"), 64)?;
        let verified = verify(keys, &manifest, &signature, version, platform)?;
        let file = verified
            .files
            .get(TASK_AGENT)
            .context("the cached manifest has no task-agent")?;
        let binary = dir.join(TASK_AGENT);
        let meta = std::fs::symlink_metadata(&binary)?;
        if !meta.is_file() || meta.len() != file.size || file_sha256(&binary)? != file.sha256 {
            bail!("the cached binary is not the one the signed manifest lists");
        }
        Ok(binary)
    })();
    match checked {
        Ok(binary) => Ok(Some(binary)),
        Err(err) => {
            tracing::warn!(
                version,
                dir = %dir.display(),
                "the cached task-agent does not verify ({err:#}): downloading it again"
            );
            Ok(None)
        }
    }
}

/// Downloads `url` into `path` (a new file, 0755), checking the bytes against `file` as they
/// come: more than the manifest's size stops the download; fewer, or another SHA-256, fails it.
pub(crate) async fn fetch_file(
    client: &Client,
    auth: &Auth,
    url: &str,
    path: &Path,
    file: &ReleaseFile,
) -> anyhow::Result<()> {
    let mut download = client
        .download_release_file(auth, url)
        .await?
        .limit(file.size);
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o755)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    let mut hasher = sha2::Sha256::new();
    let mut size = 0u64;
    loop {
        let chunk = match download.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(bosun_api::ApiError::TooLong { .. }) => {
                bail!(
                    "the server sent more than the signed manifest's {} bytes",
                    file.size
                )
            }
            Err(err) => return Err(err.into()),
        };
        size += chunk.len() as u64;
        hasher.update(&chunk);
        out.write_all(&chunk)?;
    }
    if size != file.size {
        bail!(
            "the download ended after {size} bytes; the signed manifest lists {} (truncated)",
            file.size
        );
    }
    let sha256 = hex(&hasher.finalize());
    if sha256 != file.sha256 {
        bail!(
            "the downloaded file's SHA-256 is {sha256}; the signed manifest lists {}",
            file.sha256
        );
    }
    out.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::Signer as _;

    fn key(seed: u8) -> (ed25519_dalek::SigningKey, TrustedKey) {
        let signing = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
        let trusted = TrustedKey {
            key: signing.verifying_key(),
            from: format!("test key {seed}"),
        };
        (signing, trusted)
    }

    const MANIFEST: &str = r#"{"version":"2.0.0","platforms":{"linux-x86_64":{"files":{"task-agent":{"size":3,"sha256":"ab"}}}}}"#;

    #[test]
    fn only_a_trusted_signature_over_the_exact_manifest_verifies() {
        let (signing, trusted) = key(1);
        let (_, other) = key(2);
        let signature = signing.sign(MANIFEST.as_bytes()).to_bytes();
        let verified = verify(
            std::slice::from_ref(&trusted),
            MANIFEST,
            &signature,
            "2.0.0",
            "linux-x86_64",
        )
        .unwrap();
        assert_eq!(verified.files["task-agent"].size, 3);

        let untrusted = verify(&[other], MANIFEST, &signature, "2.0.0", "linux-x86_64");
        assert!(format!("{:#}", untrusted.unwrap_err()).contains("not signed by a trusted key"));
        let altered = MANIFEST.replace("\"size\":3", "\"size\":4");
        let tampered = verify(
            std::slice::from_ref(&trusted),
            &altered,
            &signature,
            "2.0.0",
            "linux-x86_64",
        );
        assert!(tampered.is_err());
        let renamed = verify(
            std::slice::from_ref(&trusted),
            MANIFEST,
            &signature,
            "3.0.0",
            "linux-x86_64",
        );
        assert!(format!("{:#}", renamed.unwrap_err()).contains("is of version 2.0.0"));
        let other_arch = verify(
            std::slice::from_ref(&trusted),
            MANIFEST,
            &signature,
            "2.0.0",
            "linux-s390x",
        );
        assert!(format!("{:#}", other_arch.unwrap_err()).contains("no linux-s390x build"));
        let none = verify(&[], MANIFEST, &signature, "2.0.0", "linux-x86_64");
        assert!(format!("{:#}", none.unwrap_err()).contains("no release key is trusted"));
    }

    #[test]
    fn pem_keys_parse_one_or_many_and_a_bad_one_is_named() {
        // `openssl genpkey -algorithm ed25519 | openssl pkey -pubout`
        let pem = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n";
        assert_eq!(parse_keys(pem, "x").unwrap().len(), 1);
        assert_eq!(parse_keys(&format!("{pem}{pem}"), "x").unwrap().len(), 2);
        let bad = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
        let err = parse_keys(bad, "BOSUN_RELEASE_KEYS").unwrap_err();
        assert!(
            format!("{err:#}").contains("BOSUN_RELEASE_KEYS key 1"),
            "{err:#}"
        );
    }

    #[test]
    fn the_platform_is_named_as_uname_names_it() {
        let platform = platform();
        assert!(platform.starts_with("linux-"), "{platform}");
        assert!(!platform.contains("powerpc64"), "{platform}");
    }
}
