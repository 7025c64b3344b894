//! `add_ssh_keys`: the project's additional SSH keys, installed into the job user's `~/.ssh`
//! for this task.
//!
//! As CircleCI does: each key the step names (by its `SHA256:` or MD5 fingerprint; every key of
//! the task when it names none) becomes `~/.ssh/id_rsa_<md5 hex>` (0600), and a key with a
//! hostname gets a `Host <hostname>` block with its `IdentityFile` in `~/.ssh/config`. Keys
//! without one are listed under `Host *`, so `ssh` offers them everywhere (CircleCI loads them
//! into an ssh-agent instead). The user's own config stays as it was around our block, which is
//! marked with the task's id.
//!
//! Everything added is recorded in [`Installed`] on the job and removed exactly at the end of
//! the task ([`Job::remove_ssh_keys`], called by the engine after every step, failed or
//! canceled ones included). Only a kill of the task-agent itself leaves the files behind.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use bosun_protocol::task::{AddSshKeysStep, SshKey};
use tokio::sync::watch;

use super::git_auth::{openssh_key_text, write_private};
use super::{Job, StepResult};
use crate::link::{Control, Lost};

/// What `add_ssh_keys` steps added to `~/.ssh` in this task, to be removed at its end.
#[derive(Debug, Default)]
pub struct Installed {
    /// `~/.ssh`, when a step created it.
    created_dir: Option<PathBuf>,
    /// Key files written.
    key_files: Vec<PathBuf>,
    /// `~/.ssh/config`, when a step created it.
    created_config: Option<PathBuf>,
    /// Text appended to `~/.ssh/config`, each removed again by exact match.
    config_blocks: Vec<(PathBuf, String)>,
}

impl Installed {
    /// Removes what was added; returns a message per thing that could not be removed.
    pub fn remove(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        for path in self.key_files.drain(..) {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => problems.push(format!("{}: {err}", path.display())),
            }
        }
        for (config, block) in self.config_blocks.drain(..).rev() {
            if let Err(err) = remove_block(&config, &block) {
                problems.push(format!("{}: {err}", config.display()));
            }
        }
        if let Some(config) = self.created_config.take() {
            // Ours from the start: gone if nothing but our blocks was ever in it.
            if std::fs::read(&config).is_ok_and(|bytes| bytes.iter().all(u8::is_ascii_whitespace)) {
                let _ = std::fs::remove_file(&config);
            }
        }
        if let Some(dir) = self.created_dir.take() {
            // Fails (and stays) when a step put something of its own there.
            let _ = std::fs::remove_dir(&dir);
        }
        problems
    }
}

impl Job {
    /// Removes the keys and config blocks this task's `add_ssh_keys` steps added (the engine
    /// calls it when the task ends). Problems are logged, they do not change the task's status.
    pub fn remove_ssh_keys(&self) {
        let problems = self
            .ssh_keys_installed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove();
        for problem in problems {
            tracing::warn!("cannot remove what add_ssh_keys added: {problem}");
        }
    }
}

/// Installs the keys the step names.
pub async fn execute(
    job: &Job,
    log: u32,
    step: &AddSshKeysStep,
    _control: &mut watch::Receiver<Control>,
) -> Result<StepResult, Lost> {
    let keys = match select(&job.task.ssh_keys, &step.fingerprints) {
        Ok(keys) => keys,
        Err(message) => return job.fail(log, format!("{message}\n")).await,
    };
    if keys.is_empty() {
        job.out
            .text(log, "The project has no additional SSH keys\n".to_owned())
            .await?;
        return Ok(StepResult::success());
    }
    let result = {
        let mut installed = job
            .ssh_keys_installed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        install(
            &job.home.join(".ssh"),
            &job.task.task_id,
            &keys,
            &mut installed,
        )
    };
    match result {
        Ok(lines) => {
            job.out.text(log, lines).await?;
            Ok(StepResult::success())
        }
        Err(message) => job.fail(log, format!("add_ssh_keys: {message}\n")).await,
    }
}

/// The keys `fingerprints` names (SHA-256 `SHA256:...` or MD5 `aa:bb:...`, with or without
/// `MD5:`), all of them when it is empty; an unknown fingerprint is an error naming it.
fn select<'a>(keys: &'a [SshKey], fingerprints: &[String]) -> Result<Vec<&'a SshKey>, String> {
    if fingerprints.is_empty() {
        return Ok(keys.iter().collect());
    }
    let mut selected: Vec<&SshKey> = Vec::new();
    for wanted in fingerprints {
        let wanted = wanted.trim();
        let md5 = wanted.strip_prefix("MD5:").unwrap_or(wanted);
        let found = keys
            .iter()
            .find(|key| key.fingerprint == wanted || key.md5_fingerprint.eq_ignore_ascii_case(md5));
        match found {
            Some(key) => {
                if !selected.iter().any(|k| std::ptr::eq(*k, key)) {
                    selected.push(key);
                }
            }
            None => {
                return Err(format!(
                    "add_ssh_keys: the project has no SSH key with fingerprint {wanted}"
                ));
            }
        }
    }
    Ok(selected)
}

/// Writes the keys and the config block into `ssh_dir`, recording each addition in
/// `installed` as soon as it is made (a later error leaves nothing unrecorded). Returns the
/// lines for the step's log.
fn install(
    ssh_dir: &Path,
    task_id: &str,
    keys: &[&SshKey],
    installed: &mut Installed,
) -> Result<String, String> {
    let named = |path: &Path, err: std::io::Error| format!("{}: {err}", path.display());
    match std::fs::symlink_metadata(ssh_dir) {
        Ok(meta) if meta.file_type().is_symlink() => {
            return Err(format!(
                "{} is a symbolic link; refusing to write keys through it",
                ssh_dir.display()
            ));
        }
        Ok(meta) if !meta.is_dir() => {
            return Err(format!("{} is not a directory", ssh_dir.display()));
        }
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            use std::os::unix::fs::DirBuilderExt as _;
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(ssh_dir)
                .map_err(|err| named(ssh_dir, err))?;
            installed.created_dir = Some(ssh_dir.to_owned());
        }
        Err(err) => return Err(named(ssh_dir, err)),
    }

    let mut lines = String::new();
    let mut hosts: Vec<(String, PathBuf)> = Vec::new();
    for key in keys {
        let hex: String = key.md5_fingerprint.chars().filter(|c| *c != ':').collect();
        if hex.is_empty() || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!(
                "key {} has an invalid MD5 fingerprint",
                key.fingerprint
            ));
        }
        let hostname = key
            .hostname
            .as_deref()
            .map(str::trim)
            .filter(|h| !h.is_empty());
        if let Some(host) = hostname {
            if !valid_host_pattern(host) {
                return Err(format!(
                    "key {} has an invalid hostname {host:?}",
                    key.fingerprint
                ));
            }
        }
        let path = ssh_dir.join(format!("id_rsa_{}", hex.to_ascii_lowercase()));
        let text = openssh_key_text(&key.private_key.0);
        let same = std::fs::symlink_metadata(&path).is_ok_and(|meta| meta.is_file())
            && std::fs::read(&path).is_ok_and(|bytes| bytes == text.as_bytes());
        if !same {
            // A previous file of ours (an earlier step, a task that was killed): replaced.
            // Unlinking a symlink removes the link only.
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(named(&path, err)),
            }
            write_private(&path, text.as_bytes()).map_err(|err| err.to_string())?;
            if !installed.key_files.contains(&path) {
                installed.key_files.push(path.clone());
            }
        }
        match hostname {
            Some(host) => {
                lines.push_str(&format!(
                    "Added SSH key {} ({}) for host {host} as {}\n",
                    key.fingerprint,
                    key.md5_fingerprint,
                    path.display()
                ));
                hosts.push((host.to_owned(), path));
            }
            None => {
                lines.push_str(&format!(
                    "Added SSH key {} ({}) for every host as {}\n",
                    key.fingerprint,
                    key.md5_fingerprint,
                    path.display()
                ));
                hosts.push(("*".to_owned(), path));
            }
        }
    }

    let config = ssh_dir.join("config");
    let existing = match std::fs::symlink_metadata(&config) {
        Ok(meta) if meta.file_type().is_symlink() => {
            return Err(format!(
                "{} is a symbolic link; refusing to write through it",
                config.display()
            ));
        }
        Ok(_) => Some(std::fs::read(&config).map_err(|err| named(&config, err))?),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(err) => return Err(named(&config, err)),
    };
    let mut block = String::new();
    if existing
        .as_ref()
        .is_some_and(|bytes| !bytes.is_empty() && !bytes.ends_with(b"\n"))
    {
        block.push('\n');
    }
    block.push_str(&format!("# >>> bosun add_ssh_keys, task {task_id} >>>\n"));
    for (host, path) in &hosts {
        block.push_str(&format!(
            "Host {host}\n  IdentityFile \"{}\"\n",
            path.display()
        ));
    }
    block.push_str(&format!("# <<< bosun add_ssh_keys, task {task_id} <<<\n"));
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&config)
        .map_err(|err| named(&config, err))?;
    if existing.is_none() {
        installed.created_config = Some(config.clone());
    }
    file.write_all(block.as_bytes())
        .map_err(|err| named(&config, err))?;
    installed.config_blocks.push((config.clone(), block));
    lines.push_str(&format!("Updated {}\n", config.display()));
    Ok(lines)
}

/// Whether `host` can go on a `Host` line as it is: one word of host name characters and
/// ssh's pattern characters, nothing that would end the line or start another keyword.
fn valid_host_pattern(host: &str) -> bool {
    host.len() <= 255
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._*?[]:!".contains(c))
}

/// Removes the first exact occurrence of `block` from `config` (refusing a symlink).
fn remove_block(config: &Path, block: &str) -> std::io::Result<()> {
    let meta = match std::fs::symlink_metadata(config) {
        Ok(meta) => meta,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err),
    };
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file any more"));
    }
    let text = std::fs::read_to_string(config)?;
    let Some(at) = text.find(block) else {
        return Ok(());
    };
    let mut rest = String::with_capacity(text.len() - block.len());
    rest.push_str(&text[..at]);
    rest.push_str(&text[at + block.len()..]);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(config)?;
    file.write_all(rest.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bosun_protocol::task::SecretString;

    fn key(sha: &str, md5: &str, host: Option<&str>) -> SshKey {
        SshKey {
            fingerprint: sha.into(),
            md5_fingerprint: md5.into(),
            hostname: host.map(str::to_owned),
            private_key: SecretString(format!("PRIVATE {sha}")),
        }
    }

    #[test]
    fn keys_are_selected_by_either_fingerprint() {
        let keys = [
            key("SHA256:one", "aa:bb", None),
            key("SHA256:two", "cc:dd", Some("h")),
        ];
        assert_eq!(select(&keys, &[]).unwrap().len(), 2);
        let by_md5 = select(&keys, &["CC:DD".into()]).unwrap();
        assert_eq!(by_md5[0].fingerprint, "SHA256:two");
        let both = select(&keys, &["SHA256:one".into(), "MD5:aa:bb".into()]).unwrap();
        assert_eq!(both.len(), 1);
        let err = select(&keys, &["SHA256:three".into()]).unwrap_err();
        assert!(err.contains("SHA256:three"), "{err}");
    }

    #[test]
    fn installs_and_removes_exactly_what_it_added() {
        use std::os::unix::fs::PermissionsExt as _;
        let home = tempfile::tempdir().unwrap();
        let ssh = home.path().join(".ssh");
        std::fs::create_dir(&ssh).unwrap();
        let user_config = "Host mine\n  User me";
        std::fs::write(ssh.join("config"), user_config).unwrap();
        let keys = [key("SHA256:one", "aa:bb", Some("git.example"))];
        let refs: Vec<&SshKey> = keys.iter().collect();
        let mut installed = Installed::default();
        let lines = install(&ssh, "t1", &refs, &mut installed).unwrap();
        assert!(lines.contains("SHA256:one"), "{lines}");
        assert!(!lines.contains("PRIVATE"), "{lines}");
        let file = ssh.join("id_rsa_aabb");
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            "PRIVATE SHA256:one\n"
        );
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let config = std::fs::read_to_string(ssh.join("config")).unwrap();
        assert!(
            config.starts_with("Host mine\n  User me\n# >>> bosun"),
            "{config}"
        );
        assert!(
            config.contains(&format!(
                "Host git.example\n  IdentityFile \"{}\"\n",
                file.display()
            )),
            "{config}"
        );
        assert!(installed.remove().is_empty());
        assert!(!file.exists());
        assert_eq!(
            std::fs::read_to_string(ssh.join("config")).unwrap(),
            user_config
        );
        assert!(ssh.is_dir());
    }

    #[test]
    fn a_missing_ssh_dir_is_created_and_removed_and_a_symlink_refused() {
        let home = tempfile::tempdir().unwrap();
        let ssh = home.path().join(".ssh");
        let keys = [key("SHA256:one", "aa:bb", None)];
        let refs: Vec<&SshKey> = keys.iter().collect();
        let mut installed = Installed::default();
        install(&ssh, "t1", &refs, &mut installed).unwrap();
        let config = std::fs::read_to_string(ssh.join("config")).unwrap();
        assert!(config.contains("Host *\n"), "{config}");
        assert!(installed.remove().is_empty());
        assert!(!ssh.exists());

        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), &ssh).unwrap();
        let err = install(&ssh, "t1", &refs, &mut installed).unwrap_err();
        assert!(err.contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);
    }
}
