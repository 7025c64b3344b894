//! What the task-agent does to itself before anything else, so that a job cannot reach through it
//! to the launch-agent, root's terminal or another task.
//!
//! - [`harden`]: not dumpable (`PR_SET_DUMPABLE` 0: the job user cannot ptrace it, take its
//!   descriptors with `pidfd_getfd` or read its `/proc/<pid>/{fd,environ,mem}`; `execve` of a
//!   step resets it, so steps stay ordinary processes), no new privileges (`PR_SET_NO_NEW_PRIVS`,
//!   whichever way it was started, so no setuid binary gives a step more than the job user has),
//!   and SIGTERM when its parent dies (the engine stops every step on it).
//! - [`leave_terminal`]: a session of its own with no controlling terminal, and stdin, stdout and
//!   stderr that are not terminals. Steps run in their own process groups inside this session;
//!   they are not session leaders, so opening a terminal never makes it theirs, and `/dev/tty`
//!   (the only way to `TIOCSTI` without `CAP_SYS_ADMIN`) has nothing behind it.
//! - [`ScriptsDir`]: the private directory for step scripts, 0700, files 0600, whatever the umask.
//!
//! The task-agent leads its session without a terminal, so a terminal it opened without
//! `O_NOCTTY` would become its controlling terminal, inherited by later steps. Only terminals
//! the job user can open are at stake (the job's own ptys, never root's), but code that opens
//! paths a job controls should still pass `O_NOCTTY` (or `O_NOFOLLOW` on a regular file).

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::libc;

/// Not dumpable, no new privileges, SIGTERM on the parent's death.
pub fn harden() -> Result<(), String> {
    prctl(libc::PR_SET_DUMPABLE, 0)
        .map_err(|err| format!("cannot make itself undumpable: {err}"))?;
    prctl(libc::PR_SET_NO_NEW_PRIVS, 1)
        .map_err(|err| format!("cannot set no_new_privs on itself: {err}"))?;
    // The launch-agent sets this too (before exec); through a command prefix the parent is the
    // prefix (sudo), whose own parent-death signal reaches it first and is relayed.
    prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong)
        .map_err(|err| format!("cannot set its parent-death signal: {err}"))?;
    Ok(())
}

fn prctl(option: libc::c_int, value: libc::c_ulong) -> io::Result<()> {
    let zero: libc::c_ulong = 0;
    // SAFETY: these prctl options take one integer argument (the kernel reads all four as
    // unsigned longs, so that is what is passed) and touch no memory of ours.
    if unsafe { libc::prctl(option, value, zero, zero, zero) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Leaves any terminal: a new session if this process does not lead one (the launch-agent
/// already starts it in one), no controlling terminal, and `/dev/null` in place of any of fds
/// 0, 1, 2 that is a terminal. Refuses (an error) when a controlling terminal remains.
pub fn leave_terminal() -> Result<(), String> {
    let me = nix::unistd::getpid();
    let leader = nix::unistd::getsid(None)
        .map(|sid| sid == me)
        .unwrap_or(false);
    if !leader && nix::unistd::setsid().is_err() {
        // A process group leader cannot start a session (a prefix that put it in a group of its
        // own). Then give up the controlling terminal for this process alone; its children
        // inherit having none, and as non-leaders they cannot acquire one.
        if let Ok(tty) = open_controlling_terminal() {
            // SAFETY: TIOCNOTTY takes no argument; `tty` is an open descriptor we own.
            unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCNOTTY) };
        }
    }
    if open_controlling_terminal().is_ok() {
        return Err(
            "refusing to run with a controlling terminal: a step could type into it (TIOCSTI); \
             start task-agent through the launch-agent, which gives it a session of its own"
                .into(),
        );
    }
    for fd in 0..=2 {
        if nix::unistd::isatty(borrow(fd)).unwrap_or(false) {
            replace_with_dev_null(fd)
                .map_err(|err| format!("cannot replace terminal fd {fd} with /dev/null: {err}"))?;
        }
    }
    Ok(())
}

/// `/dev/tty` names the caller's controlling terminal; it fails to open (ENXIO) when there is none.
/// `O_NOCTTY`: the check itself must never make a terminal ours.
fn open_controlling_terminal() -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open("/dev/tty")
}

fn borrow(fd: RawFd) -> std::os::fd::BorrowedFd<'static> {
    // SAFETY: fds 0, 1 and 2 stay open for the life of the process (at worst as /dev/null), and
    // the borrow is used only for the isatty probe right away.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
}

fn replace_with_dev_null(fd: RawFd) -> io::Result<()> {
    let null = std::fs::OpenOptions::new()
        .read(fd == 0)
        .write(fd != 0)
        .open("/dev/null")?;
    // SAFETY: dup2 onto one of the standard descriptors; the old terminal descriptor is closed
    // by it atomically and nothing in this process holds a Rust owner of fds 0-2.
    if unsafe { libc::dup2(null.as_raw_fd(), fd) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The private directory step scripts are written to.
///
/// The launch-agent creates one per task beside the task directory (not inside it: by default
/// the task directory is the job's working directory and its checkout) and removes it with the
/// task directory; the task-agent checks it is its own and private, and empties it at the end.
/// Without one (tests), a private temporary directory is made and removed.
#[derive(Debug)]
pub struct ScriptsDir {
    path: PathBuf,
    /// Removed on drop when we made it.
    _temp: Option<tempfile::TempDir>,
}

impl ScriptsDir {
    pub fn open(given: Option<&Path>) -> Result<ScriptsDir, String> {
        match given {
            Some(path) => {
                check_private_dir(path)?;
                Ok(ScriptsDir {
                    path: path.to_owned(),
                    _temp: None,
                })
            }
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("bosun-task-")
                    .permissions(std::fs::Permissions::from_mode(0o700))
                    .tempdir()
                    .map_err(|err| format!("cannot create a directory for step scripts: {err}"))?;
                // The umask can only have removed bits; set the mode exactly anyway.
                std::fs::set_permissions(temp.path(), std::fs::Permissions::from_mode(0o700))
                    .map_err(|err| {
                        format!("cannot make {} private: {err}", temp.path().display())
                    })?;
                check_private_dir(temp.path())?;
                Ok(ScriptsDir {
                    path: temp.path().to_owned(),
                    _temp: Some(temp),
                })
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the scripts (best effort); the directory itself goes with the task directory.
    pub fn clear(&self) {
        if let Ok(entries) = std::fs::read_dir(&self.path) {
            for entry in entries.flatten() {
                // The CLI's `bin` and the task-data directory are directories; their symlinks
                // and markers go with them (remove_dir_all does not follow symlinks).
                let is_dir = entry.file_type().is_ok_and(|kind| kind.is_dir());
                let _ = if is_dir {
                    std::fs::remove_dir_all(entry.path())
                } else {
                    std::fs::remove_file(entry.path())
                };
            }
        }
    }
}

/// A directory (not a symlink) owned by this process's uid with no group or other bits.
fn check_private_dir(path: &Path) -> Result<(), String> {
    let meta = std::fs::symlink_metadata(path)
        .map_err(|err| format!("cannot use {} for step scripts: {err}", path.display()))?;
    let uid = nix::unistd::geteuid().as_raw();
    if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o077 != 0 {
        return Err(format!(
            "{} cannot hold step scripts: it must be a directory owned by uid {uid} with mode 0700 \
             (it is {} owned by uid {}, mode {:04o})",
            path.display(),
            if meta.is_dir() {
                "a directory"
            } else {
                "not a directory"
            },
            meta.uid(),
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

/// Writes a step's script as a new 0600 file (never through a symlink), replacing an old one.
pub fn write_script(path: &Path, text: &str) -> io::Result<()> {
    use std::io::Write as _;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    file.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_are_private_whatever_the_umask() {
        // SAFETY: umask only changes this process's file creation mask.
        let old = unsafe { libc::umask(0) };
        let dir = ScriptsDir::open(None).unwrap();
        let script = dir.path().join("step-0.sh");
        write_script(&script, "echo hi\n").unwrap();
        write_script(&script, "echo again\n").unwrap();
        // SAFETY: as above.
        unsafe { libc::umask(old) };
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(dir.path()), 0o700);
        assert_eq!(mode(&script), 0o600);
        assert_eq!(std::fs::read_to_string(&script).unwrap(), "echo again\n");
        dir.clear();
        assert!(!script.exists());
    }

    #[test]
    fn a_shared_directory_is_refused_for_scripts() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = ScriptsDir::open(Some(dir.path())).unwrap_err();
        assert!(err.contains("mode 0755"), "{err}");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        ScriptsDir::open(Some(dir.path())).unwrap();
    }
}
