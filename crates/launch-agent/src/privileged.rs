//! Everything the launch-agent does with root's power, in one place to audit:
//! creating and removing a task's working directory, and starting the task-agent as the job
//! user. Nothing else in the launch-agent needs root.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use nix::unistd::{Gid, Group, Uid, User};

use crate::config::JobUser;

/// The fd number the task-agent finds its socket on.
pub const TASK_AGENT_SOCKET_FD: i32 = 3;

/// The identity a task-agent runs with, resolved before any fork.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `None`: run as the launch-agent's own user, no switch.
    pub switch: Option<Switch>,
    pub home: PathBuf,
    pub name: String,
    pub shell: String,
}

#[derive(Debug, Clone)]
pub struct Switch {
    pub uid: Uid,
    pub gid: Gid,
    /// Supplementary groups, from the group database, looked up before fork.
    pub groups: Vec<Gid>,
}

impl Identity {
    pub fn resolve(user: &JobUser, group: Option<&str>) -> anyhow::Result<Identity> {
        match user {
            JobUser::Current => {
                let uid = Uid::current();
                let entry = User::from_uid(uid).ok().flatten();
                Ok(Identity {
                    switch: None,
                    home: std::env::var_os("HOME")
                        .map(PathBuf::from)
                        .or_else(|| entry.as_ref().map(|u| u.dir.clone()))
                        .unwrap_or_else(|| PathBuf::from("/")),
                    name: entry
                        .as_ref()
                        .map(|u| u.name.clone())
                        .unwrap_or_else(|| uid.to_string()),
                    shell: "/bin/bash".into(),
                })
            }
            JobUser::Named(name) => {
                let entry = match name.parse::<u32>() {
                    Ok(uid) => User::from_uid(Uid::from_raw(uid))?,
                    Err(_) => User::from_name(name)?,
                }
                .with_context(|| format!("runner.user `{name}` does not exist"))?;
                if entry.uid.is_root() {
                    bail!("runner.user `{name}` is root: jobs must run as an unprivileged user");
                }
                let gid = match group {
                    None => entry.gid,
                    Some(group) => match group.parse::<u32>() {
                        Ok(gid) => Gid::from_raw(gid),
                        Err(_) => {
                            Group::from_name(group)?
                                .with_context(|| format!("runner.group `{group}` does not exist"))?
                                .gid
                        }
                    },
                };
                if gid.as_raw() == 0 {
                    bail!("the job user's group is root (gid 0): pick another runner.group");
                }
                let c_name = CString::new(entry.name.as_bytes())?;
                let groups: Vec<Gid> = nix::unistd::getgrouplist(&c_name, gid)
                    .context("reading the job user's groups")?
                    .into_iter()
                    .filter(|g| g.as_raw() != 0)
                    .collect();
                Ok(Identity {
                    switch: Some(Switch {
                        uid: entry.uid,
                        gid,
                        groups,
                    }),
                    home: entry.dir,
                    name: entry.name,
                    shell: entry.shell.to_string_lossy().into_owned(),
                })
            }
        }
    }
}

/// Creates a task's working directory: parents as the launch-agent's user (0755), the task
/// directory itself owned by the job user with mode 0750. A leftover directory of the same name is
/// removed first (symlink-safe).
pub fn create_work_dir(path: &Path, identity: &Identity) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    if std::fs::symlink_metadata(path).is_ok() {
        remove_work_dir(path)?;
    }
    std::fs::DirBuilder::new()
        .mode(0o750)
        .create(path)
        .with_context(|| format!("creating {}", path.display()))?;
    if let Some(switch) = &identity.switch {
        // The directory was just created by us and is empty: chown cannot be redirected.
        nix::unistd::chown(path, Some(switch.uid), Some(switch.gid))
            .with_context(|| format!("giving {} to the job user", path.display()))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o750))?;
    Ok(())
}

/// Removes a task's working directory without following symlinks planted by the job: std's
/// `remove_dir_all` walks with `openat`/`unlinkat` and `O_NOFOLLOW` (the CVE-2022-21658 fix), so
/// a link to a root-owned file outside is unlinked, never followed.
pub fn remove_work_dir(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err).with_context(|| format!("removing {}", path.display())),
    }
}

/// Builds the task-agent command: a clean environment, the task directory as cwd, `socket` as
/// fd 3, and (as root) the job user's groups, gid and uid set in the child before exec.
/// The caller keeps `socket` open until the spawn and closes its copy right after.
pub fn task_agent_command(
    binary: &Path,
    work_dir: &Path,
    identity: &Identity,
    socket: &OwnedFd,
) -> Command {
    let mut command = Command::new(binary);
    command
        .current_dir(work_dir)
        .env_clear()
        .env("HOME", &identity.home)
        .env("USER", &identity.name)
        .env("LOGNAME", &identity.name)
        .env("SHELL", &identity.shell)
        .env(
            "PATH",
            std::env::var("PATH")
                .ok()
                .filter(|_| identity.switch.is_none())
                .unwrap_or_else(|| {
                    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
                }),
        )
        .env(
            "LANG",
            std::env::var("LANG").unwrap_or_else(|_| "C.UTF-8".into()),
        )
        .stdin(Stdio::null());
    if let Ok(filter) = std::env::var("BOSUN_LOG") {
        command.env("BOSUN_LOG", filter);
    }
    let switch = identity.switch.clone();
    let raw_socket = socket.as_raw_fd();
    // SAFETY: the closure runs in the forked child before exec and calls only async-signal-safe
    // syscalls (dup2, fcntl, setgroups, setgid, setuid, getuid); every value it needs (the
    // group list, the ids) was computed before the fork, so it neither allocates nor locks.
    unsafe {
        command.pre_exec(move || {
            // Move the socket to fd 3 with close-on-exec cleared, so it survives exec.
            if raw_socket == TASK_AGENT_SOCKET_FD {
                let flags = libc_fcntl_getfd(raw_socket)?;
                libc_fcntl_setfd(raw_socket, flags & !nix::libc::FD_CLOEXEC)?;
            } else if nix::libc::dup2(raw_socket, TASK_AGENT_SOCKET_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(switch) = &switch {
                // Order matters: groups and gid while still root, uid last.
                nix::unistd::setgroups(&switch.groups).map_err(std::io::Error::from)?;
                nix::unistd::setgid(switch.gid).map_err(std::io::Error::from)?;
                nix::unistd::setuid(switch.uid).map_err(std::io::Error::from)?;
                // Regaining root must now fail; if it does not, refuse to run the job.
                if nix::libc::setuid(0) == 0 {
                    return Err(std::io::Error::other("could regain root after dropping it"));
                }
            }
            Ok(())
        });
    }
    command
}

fn libc_fcntl_getfd(fd: i32) -> std::io::Result<i32> {
    // SAFETY: fcntl(F_GETFD) on an fd number has no memory effects.
    let flags = unsafe { nix::libc::fcntl(fd, nix::libc::F_GETFD) };
    if flags < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(flags)
    }
}

fn libc_fcntl_setfd(fd: i32, flags: i32) -> std::io::Result<()> {
    // SAFETY: fcntl(F_SETFD) on an fd number has no memory effects.
    if unsafe { nix::libc::fcntl(fd, nix::libc::F_SETFD, flags) } < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}
