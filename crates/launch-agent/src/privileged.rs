//! Everything the launch-agent does with root's power, in one place to audit:
//!
//! 1. [`create_work_dir`] / [`remove_work_dir`]: a task's working directory (and its private
//!    scripts directory beside it), made for the job user, 0700, and removed without ever
//!    following a symlink the job planted.
//! 2. [`task_agent_command`]: the task-agent's process, set up in the forked child before exec,
//!    in this order: a new session (no controlling terminal), socket on fd 3, every other fd
//!    closed, join the task's cgroup, the process limit, umask 022, supplementary groups, gid,
//!    uid, parent-death signal (SIGTERM, which the task-agent answers by killing its steps), no
//!    new privileges, and a check that root cannot be regained. The environment is rebuilt from
//!    scratch; stdin is /dev/null, stdout and stderr a pipe the launch-agent reads, never its own
//!    descriptors.
//! 3. [`TaskCgroup`]: a cgroup v2 per task where the host offers one, with `pids.max` and
//!    `memory.max`, killed whole at the end (`RLIMIT_NPROC` stands in for `pids.max` without it).
//! 4. [`sweep_task`]: right after each task, its cgroup, its marked processes and (for a job
//!    user dedicated to bosun) the user's processes started since the task began.
//! 5. [`Ledger`] and [`sweep_leftovers`]: a root-only record of running tasks, so that after a
//!    crash the next start kills what the tasks left and removes their directories.
//! 6. [`Rendezvous`]: the command-prefix mode's socket, in a directory only root can change.
//!
//! Nothing else in the launch-agent needs root.

use std::ffi::CString;
use std::io::Write as _;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
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
    /// `RLIMIT_NPROC` for the task-agent and its steps: the fallback for `runner.max_pids` where
    /// no cgroup `pids.max` bounds the task. Set by the caller after [`Identity::resolve`].
    pub rlimit_nproc: Option<u64>,
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
                    rlimit_nproc: None,
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
                    rlimit_nproc: None,
                })
            }
        }
    }
}

/// Creates a task's working directory and its scripts directory ([`scripts_dir`]): parents as
/// the launch-agent's user (0755), the two directories owned by the job user with mode 0700, so
/// no other user (another job user among them) can list or read them. A leftover directory of
/// either name is removed first (symlink-safe).
pub fn create_work_dir(path: &Path, identity: &Identity) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    for dir in [path.to_path_buf(), scripts_dir(path)] {
        if std::fs::symlink_metadata(&dir).is_ok() {
            remove_work_dir(&dir)?;
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        if let Some(switch) = &identity.switch {
            // The directory was just created by us and is empty: chown cannot be redirected.
            nix::unistd::chown(&dir, Some(switch.uid), Some(switch.gid))
                .with_context(|| format!("giving {} to the job user", dir.display()))?;
        }
        // Exactly 0700 whatever the umask.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Where a task's step scripts go: a private directory beside the task directory
/// (`<parent>/.<name>.scripts`), not inside it, because the task directory is by default the
/// job's working directory, where the checkout goes. Removed after every task, whatever
/// `runner.cleanup_working_directory` says.
pub fn scripts_dir(work_dir: &Path) -> PathBuf {
    let name = work_dir
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    work_dir.with_file_name(format!(".{name}.scripts"))
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

/// The task-agent's whole environment: who it is and where programs are, nothing of the
/// launch-agent's own (tokens may be there). `keep_path`: without a user switch the job runs with
/// the launch-agent's `PATH`; the job user gets the system's.
fn clean_environment(command: &mut Command, identity: &Identity, keep_path: bool) {
    let system_path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    let path = match std::env::var("PATH") {
        Ok(path) if keep_path => path,
        _ => system_path.to_owned(),
    };
    command
        .env_clear()
        .env("HOME", &identity.home)
        .env("USER", &identity.name)
        .env("LOGNAME", &identity.name)
        .env("SHELL", &identity.shell)
        .env("PATH", path)
        .env(
            "LANG",
            std::env::var("LANG").unwrap_or_else(|_| "C.UTF-8".into()),
        );
    if let Ok(filter) = std::env::var("BOSUN_LOG") {
        command.env("BOSUN_LOG", filter);
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
    cgroup: Option<&TaskCgroup>,
) -> Command {
    let mut command = Command::new(binary);
    clean_environment(&mut command, identity, identity.switch.is_none());
    // Never the launch-agent's own stdout/stderr (root's terminal or log file, which a job could
    // otherwise reach): pipes the caller reads and logs.
    command
        .current_dir(work_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let plan = ChildPlan {
        socket: socket.as_raw_fd(),
        cgroup_procs: cgroup.map(|cgroup| cgroup.procs_path.clone()),
        nproc: identity.rlimit_nproc,
        switch: identity.switch.clone(),
        parent: nix::unistd::getpid().as_raw(),
    };
    // SAFETY: the closure runs in the forked child before exec; `task_agent_child` calls only
    // async-signal-safe syscalls on values prepared here, before the fork, and allocates
    // nothing (see its comment and `tests::the_child_side_of_a_spawn_never_allocates`).
    unsafe {
        command.pre_exec(move || task_agent_child(&plan));
    }
    command
}

/// The errno a child set-up reports when it could regain root after dropping it. Between fork
/// and exec an error can carry only an errno (std sends the parent nothing else, and building a
/// message would allocate), so the two failures of our own have errnos no syscall there returns;
/// [`spawn_error`] names them.
const ERRNO_REGAINED_ROOT: i32 = nix::libc::ENOTRECOVERABLE;
/// The errno a child set-up reports when the launch-agent exited during the spawn.
const ERRNO_PARENT_GONE: i32 = nix::libc::EOWNERDEAD;

/// What the task-agent's child side does between fork and exec, prepared before the fork.
struct ChildPlan {
    socket: i32,
    cgroup_procs: Option<CString>,
    nproc: Option<u64>,
    switch: Option<Switch>,
    /// The launch-agent's pid: the child checks it is still its parent.
    parent: i32,
}

/// The child side of the task-agent spawn: runs after `fork` in a multi-threaded process, where
/// another thread may have held the allocator's lock, so it must not allocate: only
/// async-signal-safe syscalls on `plan`, and errors only as errnos (`last_os_error`,
/// `from_raw_os_error`; never `io::Error::other`, `format!` or anything that builds a value).
fn task_agent_child(plan: &ChildPlan) -> std::io::Result<()> {
    new_session()?;
    // Move the socket to fd 3 with close-on-exec cleared, so it survives exec.
    if plan.socket == TASK_AGENT_SOCKET_FD {
        let flags = libc_fcntl_getfd(plan.socket)?;
        libc_fcntl_setfd(plan.socket, flags & !nix::libc::FD_CLOEXEC)?;
    } else {
        dup_to(plan.socket, TASK_AGENT_SOCKET_FD)?;
    }
    // Nothing of the launch-agent but stdio and the socket crosses into the job, even a
    // descriptor someone forgot to open close-on-exec.
    close_fds_from(TASK_AGENT_SOCKET_FD + 1);
    // Join the task's cgroup while still root (the cgroup belongs to root).
    if let Some(procs) = &plan.cgroup_procs {
        write_c_file(procs, b"0")?;
    }
    set_process_limit(plan.nproc)?;
    // SAFETY: umask, setuid, setgid, prctl and getppid are async-signal-safe syscalls that
    // read nothing but their arguments (nix's setgroups/setgid/setuid are the same syscalls,
    // safe wrappers that pass the slice as it is and map a failure to its errno).
    unsafe {
        nix::libc::umask(0o022);
        if let Some(switch) = &plan.switch {
            // Order matters: groups and gid while still root, uid last. nix passes the slice
            // as it is (Gid is a transparent gid_t) and maps errors to an errno.
            nix::unistd::setgroups(&switch.groups).map_err(std::io::Error::from)?;
            nix::unistd::setgid(switch.gid).map_err(std::io::Error::from)?;
            nix::unistd::setuid(switch.uid).map_err(std::io::Error::from)?;
            // Regaining root must now fail; if it does not, refuse to run the job.
            if nix::libc::setuid(0) == 0 || nix::libc::setgid(0) == 0 {
                return Err(std::io::Error::from_raw_os_error(ERRNO_REGAINED_ROOT));
            }
        }
        // Set after the uid change, which clears it: if the launch-agent dies, the task-agent
        // gets SIGTERM and kills its steps before it exits (SIGKILL would end it at once and
        // leave them running). The kernel sends it when the spawning *thread* exits: spawn only
        // from one that lives as long as the launch-agent (the claim loop's, which `block_on`
        // drives on the main thread; the running tasks are futures of that loop), never from
        // one that `block_in_place` may hand to the blocking pool while the task-agent runs.
        if nix::libc::prctl(nix::libc::PR_SET_PDEATHSIG, nix::libc::SIGTERM, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if nix::libc::getppid() != plan.parent {
            return Err(std::io::Error::from_raw_os_error(ERRNO_PARENT_GONE));
        }
        // No setuid binary (sudo, su, ping) can raise the job's privileges.
        if nix::libc::prctl(nix::libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The child side of a prefixed spawn (`runner.command_prefix`), allocation-free as
/// [`task_agent_child`].
fn prefixed_child(cgroup_procs: Option<&CString>, nproc: Option<u64>) -> std::io::Result<()> {
    new_session()?;
    close_fds_from(3);
    if let Some(procs) = cgroup_procs {
        write_c_file(procs, b"0")?;
    }
    set_process_limit(nproc)?;
    // SAFETY: umask and prctl are async-signal-safe syscalls reading only their arguments.
    unsafe {
        nix::libc::umask(0o022);
        // SIGTERM, which the prefix (sudo) relays to the task-agent, which stops its steps.
        if nix::libc::prctl(nix::libc::PR_SET_PDEATHSIG, nix::libc::SIGTERM, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// What a failed spawn of the task-agent (or its prefix) means, in words: the child side can
/// report only an errno, and two of them are ours.
pub fn spawn_error(err: &std::io::Error) -> String {
    match err.raw_os_error() {
        Some(ERRNO_REGAINED_ROOT) => {
            "the job user could regain root after the launch-agent dropped it; refusing to run \
             the job"
                .to_owned()
        }
        Some(ERRNO_PARENT_GONE) => "the launch-agent exited during the spawn".to_owned(),
        _ => err.to_string(),
    }
}

/// Starts a new session, so the child has no controlling terminal: if the launch-agent was
/// started from root's shell, a job must not reach that terminal (`TIOCSTI` types into it).
/// Called between fork and exec, where the child is never a process group leader.
fn new_session() -> std::io::Result<()> {
    // SAFETY: setsid is async-signal-safe and touches no memory.
    if unsafe { nix::libc::setsid() } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Closes every descriptor from `first` up. Called between fork and exec.
fn close_fds_from(first: i32) {
    // SAFETY: close_range only closes descriptors; in the single-threaded child nothing else
    // uses them.
    let done =
        unsafe { nix::libc::syscall(nix::libc::SYS_close_range, first as u32, u32::MAX, 0u32) }
            == 0;
    if !done {
        // Kernels before 5.9: close them one by one, up to a generous bound.
        for fd in first..65_536 {
            // SAFETY: as above; closing a descriptor that is not open is harmless (EBADF).
            unsafe {
                nix::libc::close(fd);
            }
        }
    }
}

/// Writes `bytes` to the file at `path` with raw syscalls. Called between fork and exec.
fn write_c_file(path: &CString, bytes: &[u8]) -> std::io::Result<()> {
    // SAFETY: `path` is a valid NUL-terminated string built before the fork; open, write and
    // close are async-signal-safe and touch no memory but the buffer passed.
    unsafe {
        let fd = nix::libc::open(path.as_ptr(), nix::libc::O_WRONLY | nix::libc::O_CLOEXEC);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let written = nix::libc::write(fd, bytes.as_ptr().cast(), bytes.len());
        nix::libc::close(fd);
        if written < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Sets `RLIMIT_NPROC` (soft and hard, so the job cannot raise it) when `limit` is given. Called
/// between fork and exec. The kernel counts every process and thread of the real uid against it,
/// not only this task's; root (the prefix, before it switches) is exempt, and sudo hands the
/// limits it was started with on to the command.
fn set_process_limit(limit: Option<u64>) -> std::io::Result<()> {
    let Some(limit) = limit else {
        return Ok(());
    };
    let rlimit = nix::libc::rlimit {
        rlim_cur: limit as nix::libc::rlim_t,
        rlim_max: limit as nix::libc::rlim_t,
    };
    // SAFETY: setrlimit is an async-signal-safe syscall reading only the struct passed.
    if unsafe { nix::libc::setrlimit(nix::libc::RLIMIT_NPROC, &rlimit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `dup2(fd, target)`. Called between fork and exec.
fn dup_to(fd: i32, target: i32) -> std::io::Result<()> {
    // SAFETY: dup2 on descriptor numbers has no memory effects.
    if unsafe { nix::libc::dup2(fd, target) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
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

/// Where the cgroup v2 hierarchy is mounted, from `/proc/self/mountinfo` (hosts in hybrid mode
/// mount it at `/sys/fs/cgroup/unified`, not `/sys/fs/cgroup`).
fn cgroup2_mount() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        left.split_whitespace().nth(4).map(PathBuf::from)
    })
}

/// The parent of all task cgroups: `<cgroup2 mount>/bosun`, if root can create and use it.
/// `None` (said once in the log by the caller) means tasks rely on the task-agent's subreaper.
pub fn cgroup_root() -> Result<PathBuf, String> {
    if !Uid::effective().is_root() {
        return Err("the launch-agent is not root".into());
    }
    let mount = cgroup2_mount().ok_or("no cgroup2 hierarchy is mounted")?;
    let root = mount.join("bosun");
    match std::fs::create_dir(&root) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(err) => return Err(format!("cannot create {}: {err}", root.display())),
    }
    if !root.join("cgroup.procs").exists() {
        return Err(format!("{} is not a cgroup", root.display()));
    }
    Ok(root)
}

/// The controllers listed in a cgroup's `cgroup.controllers` (those it may use).
fn cgroup_controllers(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path.join("cgroup.controllers"))
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Makes `pids` and `memory` available to the task cgroups under `root`, as far as the host
/// allows: enabled in the parent's `cgroup.subtree_control` if `root` lacks them, then in
/// `root`'s own (which holds no process, as the kernel requires). Returns the controllers task
/// cgroups can use.
pub fn enable_task_controllers(root: &Path) -> Vec<String> {
    let mut enabled = Vec::new();
    for controller in ["pids", "memory"] {
        if !cgroup_controllers(root).iter().any(|c| c == controller) {
            if let Some(parent) = root.parent() {
                let _ = std::fs::write(
                    parent.join("cgroup.subtree_control"),
                    format!("+{controller}"),
                );
            }
        }
        if !cgroup_controllers(root).iter().any(|c| c == controller) {
            continue;
        }
        match std::fs::write(
            root.join("cgroup.subtree_control"),
            format!("+{controller}"),
        ) {
            Ok(()) => enabled.push(controller.to_owned()),
            Err(err) => tracing::warn!(
                "cannot enable the {controller} controller under {}: {err}",
                root.display()
            ),
        }
    }
    enabled
}

/// A task's own cgroup v2.
#[derive(Debug)]
pub struct TaskCgroup {
    pub path: PathBuf,
    procs_path: CString,
}

impl TaskCgroup {
    pub fn create(root: &Path, task_id: &str) -> anyhow::Result<TaskCgroup> {
        let path = root.join(task_id);
        match std::fs::create_dir(&path) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(err).with_context(|| format!("creating {}", path.display())),
        }
        let procs_path = CString::new(path.join("cgroup.procs").as_os_str().as_encoded_bytes())?;
        Ok(TaskCgroup { path, procs_path })
    }

    /// Writes `pids.max` and `memory.max` (with `memory.swap.max` 0, so the limit is not
    /// sidestepped into swap) where the controllers are enabled. Returns whether `pids.max` was
    /// written; if not, the caller falls back to `RLIMIT_NPROC`.
    pub fn apply_limits(&self, max_pids: Option<u64>, max_memory: Option<u64>) -> bool {
        // Never created: a file the controller does not provide is simply not there.
        let write = |file: &str, value: String| match std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(self.path.join(file))
            .and_then(|mut f| f.write_all(value.as_bytes()))
        {
            Ok(()) => true,
            Err(err) => {
                if err.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!("cannot set {file} of {}: {err}", self.path.display());
                }
                false
            }
        };
        let pids = match max_pids {
            Some(max) => write("pids.max", max.to_string()),
            None => true,
        };
        if let Some(max) = max_memory {
            if write("memory.max", max.to_string()) && self.path.join("memory.swap.max").exists() {
                write("memory.swap.max", "0".into());
            }
        }
        pids
    }

    /// Kills every process in the cgroup and removes it. Returns how many were killed.
    pub fn kill_and_remove(&self) -> usize {
        kill_cgroup(&self.path)
    }
}

fn cgroup_pids(path: &Path) -> Vec<i32> {
    std::fs::read_to_string(path.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect()
}

/// `cgroup.kill` where the kernel has it (5.14+), else SIGKILL to each member until it is empty;
/// then removes the cgroup.
fn kill_cgroup(path: &Path) -> usize {
    let mut killed = cgroup_pids(path).len();
    let kill_file = path.join("cgroup.kill");
    let has_kill = kill_file.exists() && std::fs::write(&kill_file, b"1").is_ok();
    for _ in 0..500 {
        let pids = cgroup_pids(path);
        if pids.is_empty() {
            break;
        }
        if !has_kill {
            for pid in &pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(*pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            killed = killed.max(pids.len());
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    if let Err(err) = std::fs::remove_dir(path) {
        if err.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!("cannot remove cgroup {}: {err}", path.display());
        }
    }
    killed
}

/// SIGKILLs every process whose environment carries the task's marker `BOSUN_TASK_ID=<id>`
/// (set by the task-agent for every step). Returns how many were killed.
pub fn kill_marked_processes(task_id: &str) -> usize {
    let marker = format!("BOSUN_TASK_ID={task_id}");
    kill_matching(20, |pid| {
        std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|environ| {
            environ
                .split(|b| *b == 0)
                .any(|var| var == marker.as_bytes())
        })
    })
}

/// SIGKILLs every process for which `matches(pid)` holds (never this process), scanning
/// `/proc` again until a scan finds none or `rounds` scans are done: a dying process may fork,
/// and what it leaves may appear between two scans. Returns how many were killed.
fn kill_matching(rounds: usize, matches: impl Fn(i32) -> bool) -> usize {
    let me = std::process::id() as i32;
    let mut killed = 0;
    for _ in 0..rounds {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return killed;
        };
        let mut found = 0;
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            if pid == me || !matches(pid) {
                continue;
            }
            found += 1;
            if nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            )
            .is_ok()
            {
                killed += 1;
            }
        }
        if found == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    killed
}

/// Now, in the unit of `/proc/<pid>/stat`'s start time: clock ticks since boot.
pub fn boot_ticks_now() -> u64 {
    // SAFETY: sysconf and clock_gettime only write the timespec passed.
    let (ticks_per_second, now) = unsafe {
        let mut now = std::mem::zeroed::<nix::libc::timespec>();
        nix::libc::clock_gettime(nix::libc::CLOCK_BOOTTIME, &mut now);
        (
            nix::libc::sysconf(nix::libc::_SC_CLK_TCK).max(1) as u64,
            now,
        )
    };
    now.tv_sec as u64 * ticks_per_second + now.tv_nsec as u64 * ticks_per_second / 1_000_000_000
}

/// `(state, start time in ticks since boot)` of a process, from `/proc/<pid>/stat` (fields 3 and
/// 22, counted after the parenthesized command name).
fn process_state_and_start(pid: i32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after_name) = stat.rsplit_once(')')?;
    let mut fields = after_name.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// Whether the real or effective uid of a process (from `/proc/<pid>/status`) is `uid`.
fn process_has_uid(pid: i32, uid: Uid) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .map(|ids| {
            ids.split_whitespace()
                .take(2)
                .any(|id| id == uid.as_raw().to_string())
        })
        .unwrap_or(false)
}

/// SIGKILLs every live process of `uid` started at or after `since` (ticks since boot), until
/// none is left or a bound of rounds. Only for a job user dedicated to this launch-agent: it
/// cannot tell a task's process from anything else of that user. Returns how many were killed.
pub fn kill_user_processes(uid: Uid, since: u64) -> usize {
    if uid.is_root() {
        return 0;
    }
    kill_matching(50, |pid| {
        process_has_uid(pid, uid)
            && matches!(process_state_and_start(pid), Some((state, start)) if state != 'Z' && start >= since)
    })
}

/// After a task, whatever became of its task-agent: kills its cgroup (and removes it), then every
/// process carrying its marker, then, with `owner` (the dedicated job user's uid and the task's
/// start in ticks since boot), every process of that user started since. Returns how many were
/// killed.
pub fn sweep_task(task_id: &str, cgroup: Option<&TaskCgroup>, owner: Option<(Uid, u64)>) -> usize {
    let mut killed = cgroup.map_or(0, TaskCgroup::kill_and_remove);
    killed += kill_marked_processes(task_id);
    if let Some((uid, since)) = owner {
        killed += kill_user_processes(uid, since);
    }
    killed
}

/// The directory that holds the per-task directories of `runner.working_directory`: the parent
/// of the path component with `%s` (or of the fixed working directory). The ledger and the
/// task-agent cache live beside the task directories, in it.
pub fn tasks_base_dir(template: &str) -> PathBuf {
    let prefix = match template.find("%s") {
        Some(at) => &template[..at],
        None => template,
    };
    match prefix.rfind('/') {
        Some(0) | None => PathBuf::from("/"),
        Some(slash) => PathBuf::from(&prefix[..slash]),
    }
}

/// Creates (or truncates) a file of the launch-agent's own in the root-only ledger directory:
/// read and write for its owner only, and never through a symlink (`O_NOFOLLOW`), so even a
/// link planted there could not make root write elsewhere. The ledger's records, a task's
/// `.done` result and its `.spool` all open through here.
pub fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
}

/// A root-only record (`<dir>/<task id>`, mode 0600 in a 0700 directory) of each running task's
/// working directory and cgroup, so a restart after a crash can clean up after it.
#[derive(Debug, Clone)]
pub struct Ledger {
    dir: PathBuf,
}

/// One task in the ledger.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerEntry {
    pub task_id: String,
    pub work_dir: PathBuf,
    pub cgroup: Option<PathBuf>,
}

impl Ledger {
    /// The ledger beside the task directories: `<parent of the first %s component>/.bosun-tasks`.
    pub fn for_working_directory(template: &str) -> Ledger {
        Ledger {
            dir: tasks_base_dir(template).join(".bosun-tasks"),
        }
    }

    /// Creates the directory if needed and checks nobody else could have planted it.
    fn ensure(&self) -> anyhow::Result<()> {
        // The parent also holds the task directories, which the job user must reach: 0755.
        if let Some(parent) = self.dir.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        match std::fs::DirBuilder::new().mode(0o700).create(&self.dir) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(err) => {
                return Err(err).with_context(|| format!("creating {}", self.dir.display()));
            }
        }
        let meta = std::fs::symlink_metadata(&self.dir)?;
        if !meta.is_dir() || meta.uid() != Uid::effective().as_raw() || meta.mode() & 0o077 != 0 {
            bail!(
                "{} must be a directory owned by the launch-agent's user with mode 0700",
                self.dir.display()
            );
        }
        Ok(())
    }

    pub fn record(&self, entry: &LedgerEntry) -> anyhow::Result<()> {
        self.ensure()?;
        let mut text = format!("{}\n", entry.work_dir.display());
        if let Some(cgroup) = &entry.cgroup {
            text.push_str(&format!("{}\n", cgroup.display()));
        }
        let path = self.dir.join(&entry.task_id);
        let mut file =
            create_private(&path).with_context(|| format!("writing {}", path.display()))?;
        file.write_all(text.as_bytes())?;
        Ok(())
    }

    /// Forgets the task, and the spool its output left if any (a task's `.done` record stays
    /// until the server has its result).
    pub fn forget(&self, task_id: &str) {
        let _ = std::fs::remove_file(self.dir.join(task_id));
        let _ = std::fs::remove_file(self.spool_path(task_id));
    }

    /// The root-only directory (created if needed: see [`Ledger::entries`]).
    pub fn dir(&self) -> &Path {
        let _ = self.ensure();
        &self.dir
    }

    /// Where the task's output waits for an unreachable server (see `spool`).
    pub fn spool_path(&self, task_id: &str) -> PathBuf {
        self.dir.join(format!("{task_id}.spool"))
    }

    pub fn entries(&self) -> Vec<LedgerEntry> {
        if self.ensure().is_err() {
            return Vec::new();
        }
        let Ok(list) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        list.flatten()
            .filter_map(|entry| {
                let task_id = entry.file_name().to_str()?.to_owned();
                if !task_id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                {
                    return None;
                }
                let text = std::fs::read_to_string(entry.path()).ok()?;
                let mut lines = text.lines();
                let work_dir = PathBuf::from(lines.next()?);
                let cgroup = lines.next().map(PathBuf::from);
                Some(LedgerEntry {
                    task_id,
                    work_dir,
                    cgroup,
                })
            })
            .collect()
    }
}

/// After a crash: kills what each recorded task left running (its cgroup, then every process with
/// its marker), removes its working directory if `cleanup`, and forgets it. With `dedicated` (the
/// uid of a job user that runs nothing but this launch-agent's tasks, none of which runs yet),
/// every process of that user goes too, whatever its environment.
pub fn sweep_leftovers(ledger: &Ledger, cleanup: bool, dedicated: Option<Uid>) {
    if let Some(uid) = dedicated {
        let killed = kill_user_processes(uid, 0);
        if killed > 0 {
            tracing::warn!(
                killed,
                "killed processes the dedicated job user had left from an earlier run"
            );
        }
    }
    for entry in ledger.entries() {
        let mut killed = 0;
        if let Some(cgroup) = &entry.cgroup {
            if cgroup.exists() {
                killed += kill_cgroup(cgroup);
            }
        }
        killed += kill_marked_processes(&entry.task_id);
        // The step scripts are bosun's, not the user's: they go whatever `cleanup` says.
        let _ = remove_work_dir(&scripts_dir(&entry.work_dir));
        let mut removed = false;
        if cleanup {
            match remove_work_dir(&entry.work_dir) {
                Ok(()) => removed = true,
                Err(err) => tracing::warn!("{err:#}"),
            }
        }
        tracing::warn!(
            task = %entry.task_id,
            killed,
            removed_dir = removed,
            "swept a task left over from an earlier run of the launch-agent"
        );
        ledger.forget(&entry.task_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts allocations while `COUNTING` is set: the forked child of
    /// [`the_child_side_of_a_spawn_never_allocates`] sets it around the code under test.
    struct CountingAllocator;

    static COUNTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    static ALLOCATIONS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    // SAFETY: forwards every call to the system allocator unchanged; counting touches only
    // atomics.
    unsafe impl std::alloc::GlobalAlloc for CountingAllocator {
        unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
            if COUNTING.load(std::sync::atomic::Ordering::Relaxed) {
                ALLOCATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            // SAFETY: the caller's contract is passed on as it is.
            unsafe { std::alloc::System.alloc(layout) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
            // SAFETY: as above.
            unsafe { std::alloc::System.dealloc(ptr, layout) }
        }

        unsafe fn realloc(
            &self,
            ptr: *mut u8,
            layout: std::alloc::Layout,
            new_size: usize,
        ) -> *mut u8 {
            if COUNTING.load(std::sync::atomic::Ordering::Relaxed) {
                ALLOCATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            // SAFETY: as above.
            unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
        }
    }

    #[global_allocator]
    static ALLOCATOR: CountingAllocator = CountingAllocator;

    /// Runs `setup` in a forked child with allocations counted; answers whether it allocated
    /// and the errno of the error it returned (0 for none). The child reports through its exit
    /// status (the set-up closes every descriptor above 3): the errno, or 255 if it allocated.
    fn in_forked_child(setup: impl FnOnce() -> std::io::Result<()>) -> (bool, i32) {
        // Fd 3 is where the task-agent's socket goes: something must be open there.
        let null = std::fs::File::open("/dev/null").unwrap();
        // SAFETY: the child calls only dup2, `setup` (what a pre_exec closure would run),
        // atomics and _exit; no destructor of the parent runs. The one `setup` that allocates
        // on purpose (the counter's own check) may: glibc's malloc takes its locks around fork,
        // so the child's allocator is usable even if another test thread was allocating.
        match unsafe { nix::unistd::fork() }.expect("fork") {
            // SAFETY: dup2 and _exit are syscalls on plain values; see above.
            nix::unistd::ForkResult::Child => unsafe {
                nix::libc::dup2(null.as_raw_fd(), TASK_AGENT_SOCKET_FD);
                ALLOCATIONS.store(0, std::sync::atomic::Ordering::Relaxed);
                COUNTING.store(true, std::sync::atomic::Ordering::Relaxed);
                let errno = match setup() {
                    Ok(()) => 0,
                    Err(err) => err.raw_os_error().unwrap_or(254),
                };
                COUNTING.store(false, std::sync::atomic::Ordering::Relaxed);
                if ALLOCATIONS.load(std::sync::atomic::Ordering::Relaxed) > 0 {
                    nix::libc::_exit(255);
                }
                nix::libc::_exit(errno.clamp(0, 254));
            },
            nix::unistd::ForkResult::Parent { child } => {
                match nix::sys::wait::waitpid(child, None).expect("waitpid") {
                    nix::sys::wait::WaitStatus::Exited(_, 255) => (true, 0),
                    nix::sys::wait::WaitStatus::Exited(_, errno) => (false, errno),
                    other => panic!("the child ended {other:?}"),
                }
            }
        }
    }

    /// The child side of each spawn, on its error paths (the ones that would build a message)
    /// and to its end: no allocation, and errors are the errnos the parent can read.
    #[test]
    fn the_child_side_of_a_spawn_never_allocates() {
        let missing = CString::new("/nonexistent/bosun-test/cgroup.procs").unwrap();
        // The process limit as it is (raising it could need a capability the test lacks).
        let (_, nproc) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NPROC)
            .expect("getrlimit");
        let plan = |cgroup_procs: Option<CString>, parent: i32| ChildPlan {
            socket: TASK_AGENT_SOCKET_FD,
            cgroup_procs,
            nproc: Some(nproc),
            switch: None,
            parent,
        };
        let cases: Vec<(&str, ChildPlan, i32)> = vec![
            (
                "a cgroup that cannot be joined",
                plan(Some(missing.clone()), nix::unistd::getpid().as_raw()),
                nix::libc::ENOENT,
            ),
            // The child's parent is this test process, not pid 1: the "launch-agent exited"
            // path.
            ("a parent that is gone", plan(None, 1), ERRNO_PARENT_GONE),
        ];
        for (what, plan, errno) in cases {
            assert_eq!(
                in_forked_child(|| task_agent_child(&plan)),
                (false, errno),
                "{what}: (allocated, errno)"
            );
        }
        // To its end: this test process is the parent.
        let whole = plan(None, nix::unistd::getpid().as_raw());
        assert_eq!(in_forked_child(|| task_agent_child(&whole)), (false, 0));
        assert_eq!(
            in_forked_child(|| prefixed_child(Some(&missing), Some(nproc))),
            (false, nix::libc::ENOENT)
        );
        assert_eq!(in_forked_child(|| prefixed_child(None, None)), (false, 0));
        // The privilege drop (setgroups, setgid, setuid, the regain check), to its end, when
        // there is a privilege to drop.
        if Uid::effective().is_root() {
            let nobody = ChildPlan {
                switch: Some(Switch {
                    uid: Uid::from_raw(65534),
                    gid: Gid::from_raw(65534),
                    groups: vec![Gid::from_raw(65534)],
                }),
                ..plan(None, nix::unistd::getpid().as_raw())
            };
            assert_eq!(in_forked_child(|| task_agent_child(&nobody)), (false, 0));
        } else {
            println!("skipped the privilege-drop case: it needs root");
        }
        // And the counter counts: an error built with a message allocates.
        assert!(in_forked_child(|| Err(std::io::Error::other("a message"))).0);
        assert!(
            spawn_error(&std::io::Error::from_raw_os_error(ERRNO_PARENT_GONE))
                .contains("exited during the spawn")
        );
    }

    #[test]
    fn the_ledger_sits_beside_the_task_directories() {
        let ledger = |t: &str| Ledger::for_working_directory(t).dir;
        assert_eq!(
            ledger("/var/opt/circleci/workdir/%s"),
            PathBuf::from("/var/opt/circleci/workdir/.bosun-tasks")
        );
        assert_eq!(ledger("/w/%s/x"), PathBuf::from("/w/.bosun-tasks"));
        assert_eq!(ledger("/w/job-%s"), PathBuf::from("/w/.bosun-tasks"));
        assert_eq!(ledger("/w/fixed"), PathBuf::from("/w/.bosun-tasks"));
    }

    #[test]
    fn the_rendezvous_refuses_a_peer_of_another_uid() {
        if !Uid::effective().is_root() {
            eprintln!("skipped: needs root to hand the rendezvous to another user");
            return;
        }
        let Some(nobody) = User::from_name("nobody").ok().flatten() else {
            eprintln!("skipped: no `nobody` user");
            return;
        };
        let identity = Identity::resolve(&JobUser::Named("nobody".into()), None).unwrap();
        let rendezvous = Rendezvous::create(&identity).unwrap();
        // The directory stays root's, 0711 (traversable, not listable or writable); only the
        // socket belongs to the job user, 0600; nothing of the token is in the path.
        let dir = rendezvous.socket_path.parent().unwrap().to_path_buf();
        let meta = std::fs::symlink_metadata(&dir).unwrap();
        assert_eq!(meta.uid(), 0);
        assert_eq!(meta.mode() & 0o777, 0o711);
        let meta = std::fs::symlink_metadata(&rendezvous.socket_path).unwrap();
        assert_eq!(meta.uid(), nobody.uid.as_raw());
        assert_eq!(meta.mode() & 0o777, 0o600);
        let path = rendezvous.socket_path.to_string_lossy().into_owned();
        for window in rendezvous.token.as_bytes().windows(8) {
            assert!(
                !path.contains(std::str::from_utf8(window).unwrap()),
                "{path}"
            );
        }
        // Root connects: not the expected uid, so refused.
        let stream = std::os::unix::net::UnixStream::connect(&rendezvous.socket_path).unwrap();
        let (accepted, _) = rendezvous.listener.accept().unwrap();
        let err = rendezvous
            .check_peer(&accepted, Some(std::process::id()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("uid 0 connected instead"), "{err}");
        drop(stream);
        drop(rendezvous);
        assert!(!dir.exists(), "the rendezvous directory is removed");
    }

    #[test]
    fn task_limits_are_written_where_the_controllers_offer_them() {
        // A stand-in for a task cgroup: the files the kernel creates when `pids` and `memory`
        // are enabled, so the names and formats written are checked (this host's cgroup2 has
        // neither controller).
        let dir = tempfile::tempdir().unwrap();
        for file in ["cgroup.procs", "pids.max", "memory.max", "memory.swap.max"] {
            std::fs::write(dir.path().join(file), "max\n").unwrap();
        }
        let cgroup = TaskCgroup::create(dir.path(), "task-1").unwrap();
        assert!(
            !cgroup.apply_limits(Some(64), Some(512 << 20)),
            "no pids.max yet"
        );
        for file in ["pids.max", "memory.max", "memory.swap.max"] {
            std::fs::write(cgroup.path.join(file), "max\n").unwrap();
        }
        assert!(cgroup.apply_limits(Some(64), Some(512 << 20)));
        let read = |file: &str| std::fs::read_to_string(cgroup.path.join(file)).unwrap();
        assert_eq!(read("pids.max"), "64");
        assert_eq!(read("memory.max"), (512u64 << 20).to_string());
        assert_eq!(read("memory.swap.max"), "0");
    }

    #[test]
    fn ancestry_is_walked_through_parent_pids() {
        let me = std::process::id() as i32;
        let mut child = Command::new("sleep").arg("10").spawn().unwrap();
        let child_pid = child.id() as i32;
        assert!(descends_from(child_pid, me), "a child descends from us");
        assert!(
            descends_from(me, me),
            "a process counts as its own descendant"
        );
        assert!(
            !descends_from(me, child_pid),
            "we do not descend from our child"
        );
        assert!(!descends_from(1, child_pid));
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn ledger_round_trips_and_forgets() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::for_working_directory(&format!("{}/work/%s", dir.path().display()));
        let entry = LedgerEntry {
            task_id: "abc-123".into(),
            work_dir: dir.path().join("work/abc-123"),
            cgroup: Some(PathBuf::from("/sys/fs/cgroup/bosun/abc-123")),
        };
        ledger.record(&entry).unwrap();
        assert_eq!(ledger.entries(), vec![entry]);
        ledger.forget("abc-123");
        assert!(ledger.entries().is_empty());
    }
}

/// Command-prefix mode (`sudo -niHu USER --` and the like, which close inherited descriptors):
/// a listening socket the task-agent connects back to, presenting a one-time token it reads on
/// stdin.
///
/// The socket is in a fresh directory that stays root's, mode 0711: the job user can traverse it
/// to reach the socket (which it owns, 0600) but cannot list it, watch it with inotify, or create,
/// rename or remove anything in it, so a concurrent job of the same user can neither swap the
/// socket for its own nor find anything but the path the task-agent's command line already
/// shows. The directory's name is random and shares nothing with the token. A peer that can
/// connect anyway (same uid) is taken only if it descends from the process the launch-agent
/// spawned ([`Rendezvous::check_peer`]) and then presents the token.
#[derive(Debug)]
pub struct Rendezvous {
    dir: PathBuf,
    pub socket_path: PathBuf,
    pub listener: std::os::unix::net::UnixListener,
    pub token: String,
    /// The uid the connecting task-agent must run as.
    pub expected_uid: Uid,
}

/// Random bytes as lower-case hex.
fn random_hex(bytes: usize) -> anyhow::Result<String> {
    let mut random = vec![0u8; bytes];
    getrandom::fill(&mut random).map_err(|err| anyhow::anyhow!("no randomness: {err}"))?;
    Ok(random.iter().map(|b| format!("{b:02x}")).collect())
}

/// How many parents [`descends_from`] walks up at most: a prefix adds one or two (sudo, a
/// shell), never dozens.
const MAX_ANCESTRY_DEPTH: usize = 32;

/// The parent pid of `pid`, from `/proc/<pid>/stat` (the field after the parenthesized command
/// name, which may itself contain spaces and parentheses).
fn parent_pid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after_name) = stat.rsplit_once(')')?;
    after_name.split_whitespace().nth(1)?.parse().ok()
}

/// Whether `pid` is `ancestor` or one of its descendants, walking parent pids up.
pub fn descends_from(pid: i32, ancestor: i32) -> bool {
    let mut current = pid;
    for _ in 0..MAX_ANCESTRY_DEPTH {
        if current == ancestor {
            return true;
        }
        if current <= 1 {
            return false;
        }
        match parent_pid(current) {
            Some(parent) => current = parent,
            None => return false,
        }
    }
    false
}

impl Rendezvous {
    pub fn create(identity: &Identity) -> anyhow::Result<Rendezvous> {
        let token = random_hex(32)?;
        // A fresh, unpredictable name of its own: mkdir fails if anything is there already.
        let dir = std::env::temp_dir().join(format!("bosun-rendezvous-{}", random_hex(16)?));
        std::fs::DirBuilder::new()
            .mode(0o711)
            .create(&dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        // Set explicitly: the mode given to mkdir is narrowed by the umask.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))
            .with_context(|| format!("setting the mode of {}", dir.display()))?;
        let socket_path = dir.join("agent.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket_path)
            .with_context(|| format!("listening on {}", socket_path.display()))?;
        // Only we can create entries in the directory, so these paths cannot be redirected.
        let expected_uid = match &identity.switch {
            Some(switch) => {
                nix::unistd::chown(&socket_path, Some(switch.uid), Some(switch.gid))
                    .with_context(|| format!("giving {} to the job user", socket_path.display()))?;
                switch.uid
            }
            None => Uid::effective(),
        };
        std::fs::set_permissions(&socket_path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("setting the mode of {}", socket_path.display()))?;
        Ok(Rendezvous {
            dir,
            socket_path,
            listener,
            token,
            expected_uid,
        })
    }

    /// Checks the peer of an accepted connection is the job user and descends from `spawned`,
    /// the process the launch-agent started for this task (the prefix, which starts the
    /// task-agent). `SO_PEERCRED` gives the pid and uid the peer had when it connected.
    pub fn check_peer(
        &self,
        stream: &std::os::unix::net::UnixStream,
        spawned: Option<u32>,
    ) -> anyhow::Result<()> {
        let creds =
            nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)
                .context("reading the peer's credentials")?;
        if creds.uid() != self.expected_uid.as_raw() {
            bail!(
                "a process of uid {} connected instead of the task-agent (uid {})",
                creds.uid(),
                self.expected_uid
            );
        }
        let spawned = spawned.and_then(|pid| i32::try_from(pid).ok());
        match spawned {
            Some(spawned) if descends_from(creds.pid(), spawned) => Ok(()),
            _ => bail!(
                "process {} (uid {}) connected, but it is not one the launch-agent started for this task",
                creds.pid(),
                creds.uid()
            ),
        }
    }
}

impl Drop for Rendezvous {
    fn drop(&mut self) {
        let _ = remove_work_dir(&self.dir);
    }
}

/// The task-agent started through `prefix` (which switches users itself, so no uid change and
/// no `PR_SET_NO_NEW_PRIVS` here: sudo must be able to raise and drop; the task-agent sets it on
/// itself first thing). It connects back to `socket_path` and reads its token on stdin. The
/// prefix starts in a new session without a terminal (`sudo -n` needs none), with stdout and
/// stderr on pipes the caller reads.
pub fn prefixed_command(
    prefix: &[String],
    binary: &Path,
    work_dir: &Path,
    identity: &Identity,
    socket_path: &Path,
    cgroup: Option<&TaskCgroup>,
) -> Command {
    let mut command = Command::new(&prefix[0]);
    clean_environment(&mut command, identity, false);
    command
        .args(&prefix[1..])
        .arg(binary)
        .arg("--connect")
        .arg(socket_path)
        .arg("--work-dir")
        .arg(work_dir)
        .current_dir(work_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let cgroup_procs = cgroup.map(|cgroup| cgroup.procs_path.clone());
    let nproc = identity.rlimit_nproc;
    // SAFETY: as in `task_agent_command`: `prefixed_child` makes only async-signal-safe
    // syscalls on values prepared before the fork, and allocates nothing.
    unsafe {
        command.pre_exec(move || prefixed_child(cgroup_procs.as_ref(), nproc));
    }
    command
}
