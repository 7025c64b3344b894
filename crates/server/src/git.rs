//! Reading a project's repository with real `git`: a bare mirror per project under
//! `DATA_DIR/repos`, fetched before each pipeline, from which the server resolves the revision
//! and reads `.circleci/config.yml`.
//!
//! A project's credentials ([`GitAuth`]: a deploy key with its `known_hosts`, or an HTTPS token)
//! are given to the clone or fetch alone: written into a fresh 0700 directory under the repos
//! directory, passed through `GIT_SSH_COMMAND` or `-c credential.helper=...` before the git
//! subcommand (neither of which git stores in the mirror's config), and removed right after.
//! Without `known_hosts` the host's first key is accepted and returned (trust on first use):
//! the caller stores it, and later fetches insist on it.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::Command;

const GIT_TIMEOUT: Duration = Duration::from_secs(300);
/// Largest config file read from a repository.
pub const MAX_CONFIG_BYTES: usize = 4 << 20;

async fn git(dir: Option<&Path>, args: &[&str]) -> anyhow::Result<std::process::Output> {
    git_with(dir, &Credentials::default(), args).await
}

async fn git_with(
    dir: Option<&Path>,
    credentials: &Credentials,
    args: &[&str],
) -> anyhow::Result<std::process::Output> {
    let mut command = Command::new("git");
    // The repository may belong to another user (a developer's checkout read by a root server):
    // the server only reads objects from it, so the ownership check adds nothing here.
    command.args(["-c", "safe.directory=*"]);
    command.args(&credentials.git_options);
    command.envs(credentials.env.iter().map(|(name, value)| (name, value)));
    if let Some(dir) = dir {
        command.arg("--git-dir").arg(dir);
    }
    command
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        // The server's own secrets stay with the server: git, ssh and whatever a repository's
        // URL makes them run never see them.
        .env_remove(crate::secrets::SECRET_KEY_ENV)
        .env_remove("BOSUN_ADMIN_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = tokio::time::timeout(GIT_TIMEOUT, command.output())
        .await
        .with_context(|| format!("git {} took longer than {GIT_TIMEOUT:?}", args.join(" ")))?
        .context("running git (is it installed?)")?;
    Ok(output)
}

fn stderr_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).trim().to_owned()
}

/// Refuses URLs git would read as options.
pub fn validate_url(url: &str) -> Result<(), String> {
    if url.is_empty() || url.len() > 2048 {
        return Err("git URL must be 1 to 2048 bytes long".into());
    }
    if url.starts_with('-') || url.chars().any(char::is_control) {
        return Err(format!("`{url}` is not a git URL"));
    }
    Ok(())
}

/// A project's credentials for its repository.
#[derive(Clone, Default)]
pub struct GitAuth {
    /// An OpenSSH private key (a deploy key), for `ssh://` and scp-like `user@host:path` URLs.
    pub ssh_private_key: Option<String>,
    /// `known_hosts` lines the host must match; empty: accept its first key and return it.
    pub known_hosts: Vec<String>,
    /// A token for `https://` URLs (user `x-access-token`).
    pub https_token: Option<String>,
}

impl std::fmt::Debug for GitAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitAuth")
            .field(
                "ssh_private_key",
                &self.ssh_private_key.as_ref().map(|_| "********"),
            )
            .field("known_hosts", &self.known_hosts)
            .field(
                "https_token",
                &self.https_token.as_ref().map(|_| "********"),
            )
            .finish()
    }
}

/// A mirror after [`sync_mirror`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synced {
    /// The bare mirror's path.
    pub mirror: PathBuf,
    /// The `known_hosts` lines ssh accepted on first use (only when [`GitAuth::known_hosts`] was
    /// empty and a key was used): the caller stores them and passes them next time.
    pub learned_known_hosts: Vec<String>,
}

/// Clones or fetches the project's mirror, with `auth` if given, and returns its path.
pub async fn sync_mirror(
    repo_dir: &Path,
    project_id: &str,
    url: &str,
    auth: Option<&GitAuth>,
) -> anyhow::Result<Synced> {
    let mirror = repo_dir.join(format!("{project_id}.git"));
    // Dropped at the end of this function, which removes the credential files.
    let credentials = match auth {
        Some(auth) => Credentials::write(repo_dir, url, auth)
            .context("preparing the project's git credentials")?,
        None => Credentials::default(),
    };
    if mirror.join("HEAD").exists() {
        let args = ["fetch", "--prune", "--quiet", "origin"];
        let output = git_with(Some(&mirror), &credentials, &args).await?;
        if !output.status.success() {
            bail!("git fetch from {url} failed: {}", stderr_of(&output));
        }
    } else {
        let target = mirror.to_string_lossy().into_owned();
        let args = ["clone", "--mirror", "--quiet", "--", url, &target];
        let output = git_with(None, &credentials, &args).await?;
        if !output.status.success() {
            let _ = std::fs::remove_dir_all(&mirror);
            bail!("git clone of {url} failed: {}", stderr_of(&output));
        }
    }
    Ok(Synced {
        mirror,
        learned_known_hosts: credentials.learned_known_hosts(),
    })
}

/// The credential files of one clone or fetch, and how git gets them; the directory goes when
/// this is dropped.
#[derive(Default)]
struct Credentials {
    dir: Option<CredentialsDir>,
    env: Vec<(String, String)>,
    git_options: Vec<String>,
    /// The known_hosts file ssh may add the host's key to (`accept-new`).
    learning: Option<PathBuf>,
}

impl Credentials {
    fn write(repo_dir: &Path, url: &str, auth: &GitAuth) -> std::io::Result<Credentials> {
        let mut credentials = Credentials::default();
        let lower = url.to_ascii_lowercase();
        let https = lower.starts_with("https://");
        let ssh = ["ssh://", "git+ssh://", "ssh+git://"]
            .iter()
            .any(|scheme| lower.starts_with(scheme))
            || is_scp_like(url);
        // Every ssh fetch checks the host against the project's known hosts (learning them on
        // first use), with the deploy key when the project has one.
        if ssh {
            let dir = CredentialsDir::create(repo_dir)?;
            let identity = match &auth.ssh_private_key {
                Some(key) => {
                    let key_path = dir.0.join("key");
                    let mut key_text = key.replace("\r\n", "\n").trim().to_owned();
                    key_text.push('\n');
                    write_private(&key_path, key_text.as_bytes())?;
                    format!(
                        "-F /dev/null -i {} -o IdentitiesOnly=yes -o IdentityAgent=none ",
                        sh_quote(&key_path)
                    )
                }
                None => String::new(),
            };
            let known_hosts_path = dir.0.join("known_hosts");
            let lines: Vec<&str> = auth
                .known_hosts
                .iter()
                .map(|line| line.trim())
                .filter(|line| !line.is_empty())
                .collect();
            let mut text = lines.join("\n");
            if !text.is_empty() {
                text.push('\n');
            }
            write_private(&known_hosts_path, text.as_bytes())?;
            let strict = if lines.is_empty() {
                credentials.learning = Some(known_hosts_path.clone());
                "accept-new"
            } else {
                "yes"
            };
            let command = format!(
                "ssh {identity}-o BatchMode=yes -o UserKnownHostsFile={known_hosts} \
                 -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking={strict}",
                known_hosts = sh_quote(&known_hosts_path),
            );
            credentials.env.push(("GIT_SSH_COMMAND".into(), command));
            credentials.dir = Some(dir);
        } else if let (true, Some(token)) = (https, &auth.https_token) {
            let dir = CredentialsDir::create(repo_dir)?;
            let token_path = dir.0.join("token");
            write_private(&token_path, token.trim().as_bytes())?;
            let helper_path = dir.0.join("credential-helper");
            let helper = format!(
                "#!/bin/sh\n\
                 test \"$1\" = get || exit 0\n\
                 echo username=x-access-token\n\
                 printf 'password=%s\\n' \"$(cat {token})\"\n",
                token = sh_quote(&token_path),
            );
            write_private(&helper_path, helper.as_bytes())?;
            std::fs::set_permissions(&helper_path, std::fs::Permissions::from_mode(0o700))?;
            // The empty value first: no helper from the server's own git config sees the token.
            credentials.git_options.extend([
                "-c".into(),
                "credential.helper=".into(),
                "-c".into(),
                format!("credential.helper=!{}", sh_quote(&helper_path)),
            ]);
            credentials.dir = Some(dir);
        }
        Ok(credentials)
    }

    /// The lines ssh wrote into the empty known_hosts file.
    fn learned_known_hosts(&self) -> Vec<String> {
        let Some(path) = &self.learning else {
            return Vec::new();
        };
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(str::to_owned)
            .collect()
    }
}

/// A 0700 directory `.credentials-<uuid>` under the repos directory, removed on drop.
struct CredentialsDir(PathBuf);

impl CredentialsDir {
    fn create(repo_dir: &Path) -> std::io::Result<CredentialsDir> {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::create_dir_all(repo_dir)?;
        let path = repo_dir.join(format!(".credentials-{}", uuid::Uuid::new_v4().simple()));
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        // The umask can only have removed bits; set the mode exactly anyway.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))?;
        Ok(CredentialsDir(path))
    }
}

impl Drop for CredentialsDir {
    fn drop(&mut self) {
        if let Err(err) = std::fs::remove_dir_all(&self.0) {
            tracing::warn!(dir = %self.0.display(), %err, "cannot remove git credentials");
        }
    }
}

/// scp-like `[user@]host:path`: a colon before any slash, and no scheme.
fn is_scp_like(url: &str) -> bool {
    if url.contains("://") {
        return false;
    }
    match (url.find(':'), url.find('/')) {
        (Some(colon), Some(slash)) => colon < slash,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// Creates `path` 0600 with `O_EXCL|O_NOFOLLOW` and writes `bytes`.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)?;
    file.write_all(bytes)
}

/// `path` in single quotes for `sh`.
fn sh_quote(path: &Path) -> String {
    format!("'{}'", path.to_string_lossy().replace('\'', r"'\''"))
}

/// The branch the mirror's HEAD names.
pub async fn default_branch(mirror: &Path) -> anyhow::Result<Option<String>> {
    let output = git(Some(mirror), &["symbolic-ref", "--quiet", "HEAD"]).await?;
    if !output.status.success() {
        return Ok(None);
    }
    let head = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    Ok(head.strip_prefix("refs/heads/").map(str::to_owned))
}

/// Resolves a ref (`refs/heads/main`, a sha) to a full commit id, or `None` if it is not one.
pub async fn resolve_commit(mirror: &Path, reference: &str) -> anyhow::Result<Option<String>> {
    if reference.starts_with('-') {
        return Ok(None);
    }
    let spec = format!("{reference}^{{commit}}");
    let output = git(Some(mirror), &["rev-parse", "--verify", "--quiet", &spec]).await?;
    if !output.status.success() {
        return Ok(None);
    }
    Ok(Some(
        String::from_utf8_lossy(&output.stdout).trim().to_owned(),
    ))
}

/// Whether `ancestor` is reachable from `descendant`.
pub async fn is_ancestor(mirror: &Path, ancestor: &str, descendant: &str) -> anyhow::Result<bool> {
    let output = git(
        Some(mirror),
        &["merge-base", "--is-ancestor", ancestor, descendant],
    )
    .await?;
    Ok(output.status.success())
}

/// Reads `path` at `revision`; `None` if the file does not exist there.
pub async fn read_file(
    mirror: &Path,
    revision: &str,
    path: &str,
) -> anyhow::Result<Option<String>> {
    let spec = format!("{revision}:{path}");
    let size = git(Some(mirror), &["cat-file", "-s", &spec]).await?;
    if !size.status.success() {
        return Ok(None);
    }
    let bytes: usize = String::from_utf8_lossy(&size.stdout)
        .trim()
        .parse()
        .unwrap_or(usize::MAX);
    if bytes > MAX_CONFIG_BYTES {
        bail!("{path} at {revision} is {bytes} bytes, more than the limit of {MAX_CONFIG_BYTES}");
    }
    let output = git(Some(mirror), &["cat-file", "blob", &spec]).await?;
    if !output.status.success() {
        bail!("reading {path} at {revision}: {}", stderr_of(&output));
    }
    String::from_utf8(output.stdout)
        .map(Some)
        .map_err(|_| anyhow::anyhow!("{path} at {revision} is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_sshd as sshd;

    fn run_git(dir: &Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .args([
                "-c",
                "user.name=Test",
                "-c",
                "user.email=test@example.invalid",
            ])
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn leftovers(repo_dir: &Path) -> Vec<String> {
        std::fs::read_dir(repo_dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with(".credentials"))
            .collect()
    }

    #[tokio::test]
    async fn mirrors_over_ssh_learn_the_host_key_then_insist_on_it() {
        let dir = tempfile::tempdir().unwrap();
        let origin = dir.path().join("origin");
        std::fs::create_dir(&origin).unwrap();
        run_git(&origin, &["init", "--quiet", "--initial-branch=main"]);
        std::fs::write(origin.join("file.txt"), "x\n").unwrap();
        run_git(&origin, &["add", "file.txt"]);
        run_git(&origin, &["commit", "--quiet", "-m", "first"]);
        let key = sshd::ssh_keypair(dir.path(), "deploy");
        let mut server = sshd::Sshd::start(&dir.path().join("sshd"), &[&key.public_key]);
        let repos = dir.path().join("repos");
        std::fs::create_dir(&repos).unwrap();
        let url = server.url(&origin);
        let mut auth = GitAuth {
            ssh_private_key: Some(key.private_key.clone()),
            known_hosts: Vec::new(),
            https_token: None,
        };

        // First use: the host's key is accepted and returned.
        let synced = sync_mirror(&repos, "p1", &url, Some(&auth)).await.unwrap();
        assert_eq!(synced.learned_known_hosts, vec![server.known_hosts_line()]);
        assert!(
            resolve_commit(&synced.mirror, "refs/heads/main")
                .await
                .unwrap()
                .is_some()
        );
        let config = run_git(&synced.mirror, &["config", "-l"]).to_lowercase();
        assert!(
            !config.contains("sshcommand") && !config.contains("credential"),
            "{config}"
        );
        assert!(!config.contains("private"), "{config}");
        assert!(leftovers(&repos).is_empty());

        // Another key is refused: the key given is the one ssh used.
        let stranger_key = sshd::ssh_keypair(dir.path(), "stranger");
        let stranger = GitAuth {
            ssh_private_key: Some(stranger_key.private_key.clone()),
            known_hosts: synced.learned_known_hosts.clone(),
            https_token: None,
        };
        let err = sync_mirror(&repos, "p2", &url, Some(&stranger))
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("Permission denied"), "{err:#}");
        assert!(!repos.join("p2.git").exists());
        // Once the host knows it, the same key gets in.
        server.authorize(&stranger_key.public_key);
        let synced_p2 = sync_mirror(&repos, "p2", &url, Some(&stranger)).await;
        assert!(synced_p2.is_ok(), "{synced_p2:?}: {}", server.log());

        // With the stored line: fetched, nothing new learned.
        auth.known_hosts = synced.learned_known_hosts.clone();
        let again = sync_mirror(&repos, "p1", &url, Some(&auth)).await.unwrap();
        assert!(again.learned_known_hosts.is_empty());

        // The host's key changed: refused with ssh's message, for a fetch and for a clone.
        server.restart_with_new_host_key();
        for project in ["p1", "p3"] {
            let err = sync_mirror(&repos, project, &url, Some(&auth))
                .await
                .unwrap_err();
            let message = format!("{err:#}");
            assert!(
                message.contains("Host key verification failed"),
                "{message}"
            );
        }
        assert!(!repos.join("p3.git").exists());
        assert!(leftovers(&repos).is_empty());
    }

    #[tokio::test]
    async fn an_https_token_reaches_git_through_the_helper_only() {
        let repos = tempfile::tempdir().unwrap();
        let auth = GitAuth {
            ssh_private_key: None,
            known_hosts: Vec::new(),
            https_token: Some("s3cr3t-token".into()),
        };
        let credentials =
            Credentials::write(repos.path(), "https://git.example/r.git", &auth).unwrap();
        assert!(credentials.env.is_empty());
        assert!(
            credentials
                .git_options
                .iter()
                .all(|option| !option.contains("s3cr3t"))
        );
        let mut fill = std::process::Command::new("git")
            .args(&credentials.git_options)
            .args(["credential", "fill"])
            .env("GIT_TERMINAL_PROMPT", "0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        fill.stdin
            .take()
            .unwrap()
            .write_all(b"protocol=https\nhost=git.example\n\n")
            .unwrap();
        let answer = String::from_utf8(fill.wait_with_output().unwrap().stdout).unwrap();
        assert!(
            answer.contains("username=x-access-token\npassword=s3cr3t-token\n"),
            "{answer}"
        );
        drop(credentials);
        assert!(leftovers(repos.path()).is_empty());
        // A token is not given to an ssh URL (which still gets its host checked), nor a key to
        // an https one.
        let credentials = Credentials::write(repos.path(), "git@h:r.git", &auth).unwrap();
        assert!(credentials.git_options.is_empty());
        let ssh = &credentials.env[0].1;
        assert!(
            ssh.contains("StrictHostKeyChecking=accept-new") && !ssh.contains(" -i "),
            "{ssh}"
        );
        assert!(!ssh.contains("s3cr3t"));
    }
}
