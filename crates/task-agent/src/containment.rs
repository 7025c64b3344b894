//! Nothing a task starts outlives it.
//!
//! Steps run in their own process groups, and a stop signals the whole group. A process that
//! leaves its group (`setsid`, a double fork, `nohup … &` in a new session) escapes that, so the
//! task-agent is also a child subreaper (`PR_SET_CHILD_SUBREAPER`): when such a daemon's parent
//! exits, the kernel re-parents it to the task-agent instead of init, so it stays a descendant
//! and [`kill_descendants`] finds it at the end of the task. Where the host offers cgroup v2, the
//! launch-agent additionally puts the whole task in its own cgroup and kills it with `cgroup.kill`.

use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

/// Makes this process the subreaper of everything it starts.
pub fn become_subreaper() -> nix::Result<()> {
    nix::sys::prctl::set_child_subreaper(true)
}

/// One process from `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcInfo {
    pid: i32,
    ppid: i32,
    zombie: bool,
}

/// Parses the fields bosun needs from a `/proc/<pid>/stat` line. The command name sits in
/// parentheses and may itself contain spaces and parentheses, so parse from the last `)`.
fn parse_stat(text: &str) -> Option<ProcInfo> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text[..open].trim().parse().ok()?;
    let mut fields = text.get(close + 1..)?.split_whitespace();
    let state = fields.next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some(ProcInfo {
        pid,
        ppid,
        zombie: state == "Z" || state == "X",
    })
}

fn all_processes() -> Vec<ProcInfo> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            parse_stat(&text)
        })
        .collect()
}

/// Every process below `root` in the process tree (not `root` itself).
fn descendants_of(root: i32, processes: &[ProcInfo]) -> Vec<ProcInfo> {
    let mut found = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for process in processes.iter().filter(|p| p.ppid == parent) {
            // A pid can only appear once; guard against a malformed cycle anyway.
            if process.pid != root && !found.iter().any(|p: &ProcInfo| p.pid == process.pid) {
                found.push(*process);
                frontier.push(process.pid);
            }
        }
    }
    found
}

/// SIGKILLs every descendant of this process and reaps those that end up as its children,
/// repeating until none is left (a dying process may fork, or its orphans may be re-parented
/// here meanwhile). Returns how many processes were killed. Call it only once no step is being
/// awaited: it reaps any exited child.
pub fn kill_descendants() -> usize {
    let me = std::process::id() as i32;
    let mut killed = 0;
    for _ in 0..100 {
        let processes = all_processes();
        let below = descendants_of(me, &processes);
        if below.is_empty() {
            return killed;
        }
        for process in &below {
            if !process.zombie {
                match kill(Pid::from_raw(process.pid), Signal::SIGKILL) {
                    Ok(()) => killed += 1,
                    Err(Errno::ESRCH) => {}
                    Err(err) => {
                        tracing::warn!(pid = process.pid, %err, "cannot kill a leftover process")
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(10));
        reap_children(&all_processes(), me);
    }
    tracing::warn!("processes of the task keep appearing after 100 rounds of killing");
    killed
}

/// Reaps the exited children of `me` (daemons re-parented to the subreaper, once killed).
fn reap_children(processes: &[ProcInfo], me: i32) {
    for process in processes.iter().filter(|p| p.ppid == me && p.zombie) {
        let _ = waitpid(Pid::from_raw(process.pid), Some(WaitPidFlag::WNOHANG));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        let info = parse_stat("1234 (a) b (c)) S 77 1234 1234 0 -1").unwrap();
        assert_eq!(
            info,
            ProcInfo {
                pid: 1234,
                ppid: 77,
                zombie: false
            }
        );
        let info = parse_stat("9 (x) Z 1 9 9").unwrap();
        assert!(info.zombie);
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn descendants_follow_the_tree() {
        let p = |pid, ppid| ProcInfo {
            pid,
            ppid,
            zombie: false,
        };
        let processes = [p(1, 0), p(10, 1), p(11, 10), p(12, 11), p(20, 1), p(13, 10)];
        let mut below: Vec<i32> = descendants_of(10, &processes)
            .iter()
            .map(|p| p.pid)
            .collect();
        below.sort_unstable();
        assert_eq!(below, [11, 12, 13]);
    }
}
