//! The checkout's credentials on disk, for the checkout's own git commands alone.
//!
//! An SSH key, its `known_hosts` lines or an HTTPS token are written into a fresh 0700
//! directory inside the task's private scripts directory (never into the checkout target, whose
//! emptiness decides between clone and init), each file created 0600 with
//! `O_EXCL|O_NOFOLLOW`. The checkout's git commands get them through their environment
//! (`GIT_SSH_COMMAND`) or `-c credential.helper=...` before the subcommand, neither of which git
//! stores in the clone's config; later steps start from the job's environment, which never had
//! them. [`CheckoutCredentials`] removes the directory when it is dropped, so the files are gone
//! after the checkout whether it succeeded, failed or was canceled.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use bosun_protocol::task::CheckoutAuth;

/// The user name git sends with an HTTPS token (GitHub's and Gitea's convention for tokens).
pub const HTTPS_TOKEN_USER: &str = "x-access-token";

/// How the checkout reaches its repository, as far as credentials go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `ssh://`, `git+ssh://` or scp-like `user@host:path`.
    Ssh,
    /// `https://`.
    Https,
    /// Anything else (a local path, `file://`, `http://`, `git://`): no credentials are given.
    Other,
}

/// Which transport `url` uses (`is_local` tells local paths from scp-like URLs).
pub fn transport(url: &str, is_local: bool) -> Transport {
    let lower = url.to_ascii_lowercase();
    let ssh_scheme = ["ssh://", "git+ssh://", "ssh+git://"]
        .iter()
        .any(|scheme| lower.starts_with(scheme));
    // scp-like `user@host:path`: no scheme, and not a local path.
    let scp_like = !url.contains("://") && !is_local;
    if lower.starts_with("https://") {
        Transport::Https
    } else if ssh_scheme || scp_like {
        Transport::Ssh
    } else {
        Transport::Other
    }
}

/// The credential files of one checkout; the directory is removed on drop.
#[derive(Debug)]
pub struct CheckoutCredentials {
    dir: Option<tempfile::TempDir>,
    /// Environment variables for the checkout's git commands (`GIT_SSH_COMMAND`).
    pub env: Vec<(String, String)>,
    /// Options before the git subcommand (`-c credential.helper=...`).
    pub git_options: Vec<String>,
}

impl CheckoutCredentials {
    /// Writes what `auth` holds for `transport` into a fresh directory under `scripts_dir`. No
    /// directory is made when there is nothing to give. Errors name the path.
    pub fn write(
        scripts_dir: &Path,
        auth: &CheckoutAuth,
        transport: Transport,
    ) -> std::io::Result<CheckoutCredentials> {
        let mut credentials = CheckoutCredentials {
            dir: None,
            env: Vec::new(),
            git_options: Vec::new(),
        };
        match (transport, &auth.ssh_private_key, &auth.https_token) {
            // Without a key the host is still checked against the project's known hosts
            // (the job user's own keys, if any, authenticate).
            (Transport::Ssh, key, _) if key.is_some() || !auth.known_hosts.is_empty() => {
                let dir = credentials.make_dir(scripts_dir)?;
                let key_path = match key {
                    Some(key) => {
                        let path = dir.join("key");
                        write_private(&path, openssh_key_text(&key.0).as_bytes())?;
                        Some(path)
                    }
                    None => None,
                };
                let known_hosts_path = dir.join("known_hosts");
                let mut lines = auth.known_hosts.join("\n");
                if !lines.is_empty() {
                    lines.push('\n');
                }
                write_private(&known_hosts_path, lines.as_bytes())?;
                let command =
                    ssh_command(key_path.as_deref(), &known_hosts_path, &auth.known_hosts);
                credentials.env.push(("GIT_SSH_COMMAND".into(), command));
            }
            (Transport::Https, _, Some(token)) => {
                let dir = credentials.make_dir(scripts_dir)?;
                let token_path = dir.join("token");
                write_private(&token_path, token.0.trim().as_bytes())?;
                let helper_path = dir.join("credential-helper");
                write_private(&helper_path, credential_helper(&token_path).as_bytes())?;
                std::fs::set_permissions(&helper_path, std::fs::Permissions::from_mode(0o700))
                    .map_err(|err| named(&helper_path, err))?;
                // The empty value first: helpers from the user's or the system's git config
                // (a credential store) neither answer nor learn the token.
                credentials.git_options.extend([
                    "-c".into(),
                    "credential.helper=".into(),
                    "-c".into(),
                    format!("credential.helper=!{}", sh_quote(&helper_path)),
                ]);
            }
            _ => {}
        }
        Ok(credentials)
    }

    /// The directory the files are in, while they exist.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_ref().map(tempfile::TempDir::path)
    }

    fn make_dir(&mut self, scripts_dir: &Path) -> std::io::Result<PathBuf> {
        let dir = tempfile::Builder::new()
            .prefix("checkout-credentials-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir_in(scripts_dir)
            .map_err(|err| named(scripts_dir, err))?;
        // The umask can only have removed bits; set the mode exactly anyway.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .map_err(|err| named(dir.path(), err))?;
        let path = dir.path().to_owned();
        self.dir = Some(dir);
        Ok(path)
    }
}

/// `GIT_SSH_COMMAND` for a checkout: only our key, no agent, no user or system config, no
/// prompt, and the host checked against our `known_hosts` file alone. Without lines the first
/// key the host shows is accepted (`accept-new`): the server normally learned it already, so
/// this only happens for a project it has not fetched with these credentials.
pub fn ssh_command(key: Option<&Path>, known_hosts: &Path, known_hosts_lines: &[String]) -> String {
    let strict = if known_hosts_lines.iter().any(|line| !line.trim().is_empty()) {
        "yes"
    } else {
        "accept-new"
    };
    let identity = match key {
        Some(key) => format!(
            "-F /dev/null -i {} -o IdentitiesOnly=yes -o IdentityAgent=none ",
            sh_quote(key)
        ),
        None => String::new(),
    };
    format!(
        "ssh {identity}-o BatchMode=yes \
         -o UserKnownHostsFile={known_hosts} -o GlobalKnownHostsFile=/dev/null \
         -o StrictHostKeyChecking={strict}",
        known_hosts = sh_quote(known_hosts),
    )
}

/// A git credential helper that answers `get` with the token read from `token` (so the token is
/// never in an argument list or a config file).
fn credential_helper(token: &Path) -> String {
    format!(
        "#!/bin/sh\n\
         # bosun: the checkout's HTTPS token, for this checkout's git commands only.\n\
         test \"$1\" = get || exit 0\n\
         echo username={HTTPS_TOKEN_USER}\n\
         printf 'password=%s\\n' \"$(cat {token})\"\n",
        token = sh_quote(token),
    )
}

/// OpenSSH refuses a key file without its final newline, or with CRLF line ends (a key pasted
/// from a browser).
pub fn openssh_key_text(key: &str) -> String {
    let mut text = key.replace("\r\n", "\n").trim().to_owned();
    text.push('\n');
    text
}

/// Creates `path` 0600 with `O_EXCL|O_NOFOLLOW` (a file or symlink already there is an error,
/// not followed or truncated) and writes `bytes`.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .map_err(|err| named(path, err))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|err| named(path, err))
}

/// `path` quoted for `sh`: in single quotes, each `'` written as `'\''`.
pub fn sh_quote(path: &Path) -> String {
    let text = path.to_string_lossy();
    format!("'{}'", text.replace('\'', r"'\''"))
}

fn named(path: &Path, err: std::io::Error) -> std::io::Error {
    std::io::Error::new(err.kind(), format!("{}: {err}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bosun_protocol::task::SecretString;

    #[test]
    fn transports_follow_gits_url_forms() {
        assert_eq!(transport("ssh://git@h/r.git", false), Transport::Ssh);
        assert_eq!(transport("git+ssh://git@h/r.git", false), Transport::Ssh);
        assert_eq!(transport("git@github.com:o/r.git", false), Transport::Ssh);
        assert_eq!(transport("https://h/r.git", false), Transport::Https);
        assert_eq!(transport("http://h/r.git", false), Transport::Other);
        assert_eq!(transport("/srv/r", true), Transport::Other);
        assert_eq!(transport("file:///srv/r", true), Transport::Other);
    }

    #[test]
    fn paths_are_quoted_for_sh() {
        assert_eq!(sh_quote(Path::new("/a b/c")), "'/a b/c'");
        assert_eq!(sh_quote(Path::new("/it's")), r"'/it'\''s'");
    }

    #[test]
    fn files_are_private_and_go_with_the_guard() {
        let scripts = tempfile::tempdir().unwrap();
        let auth = CheckoutAuth {
            ssh_private_key: Some(SecretString("KEY\r\nDATA".into())),
            known_hosts: vec!["[h]:22 ssh-ed25519 AAAA".into()],
            https_token: Some(SecretString("s3cr3t-value".into())),
        };
        let credentials =
            CheckoutCredentials::write(scripts.path(), &auth, Transport::Ssh).unwrap();
        let dir = credentials.dir().unwrap().to_owned();
        assert!(dir.starts_with(scripts.path()));
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("key")), 0o600);
        assert_eq!(
            std::fs::read_to_string(dir.join("key")).unwrap(),
            "KEY\nDATA\n"
        );
        let (name, command) = &credentials.env[0];
        assert_eq!(name, "GIT_SSH_COMMAND");
        assert!(command.contains("StrictHostKeyChecking=yes"), "{command}");
        assert!(!command.contains("DATA"), "{command}");
        assert!(credentials.git_options.is_empty());
        drop(credentials);
        assert!(!dir.exists());

        let credentials =
            CheckoutCredentials::write(scripts.path(), &auth, Transport::Https).unwrap();
        assert!(credentials.env.is_empty());
        assert!(
            credentials
                .git_options
                .iter()
                .all(|o| !o.contains("s3cr3t")),
            "{:?}",
            credentials.git_options
        );
        let dir = credentials.dir().unwrap().to_owned();
        assert_eq!(mode(&dir.join("token")), 0o600);
        let helper = dir.join("credential-helper");
        let out = std::process::Command::new(&helper)
            .arg("get")
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            "username=x-access-token\npassword=s3cr3t-value\n"
        );
        // git itself asks the helper and gets the token.
        let mut fill = std::process::Command::new("git")
            .args(&credentials.git_options)
            .args(["credential", "fill"])
            .env("GIT_TERMINAL_PROMPT", "0")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        fill.stdin
            .take()
            .unwrap()
            .write_all(b"protocol=https\nhost=git.example\n\n")
            .unwrap();
        let out = fill.wait_with_output().unwrap();
        let answer = String::from_utf8(out.stdout).unwrap();
        assert!(
            answer.contains("username=x-access-token\npassword=s3cr3t-value\n"),
            "{answer}"
        );
        drop(credentials);
        assert!(!dir.exists());

        // Nothing to give: no directory at all.
        let credentials =
            CheckoutCredentials::write(scripts.path(), &auth, Transport::Other).unwrap();
        assert!(credentials.dir().is_none());
        assert_eq!(std::fs::read_dir(scripts.path()).unwrap().count(), 0);
    }
}
