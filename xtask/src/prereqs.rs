//! The system programs bosun's tests need, in one place: `cargo xtask test` checks them and, as
//! root, installs what is missing from Debian's packages (one `apt-get install` for all, after
//! one `apt-get update` if the package lists are missing or stale). Tests that need one of them
//! say so through `bosun_tests::require_program`, naming this file.
//!
//! Everything here is idempotent and quiet: when every program is present it prints one line.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

/// One program a test needs.
#[derive(Debug)]
pub struct Prereq {
    /// The program the tests run, looked up on `PATH`.
    pub program: &'static str,
    /// The Debian package that provides it.
    pub package: &'static str,
    /// Which tests need it, for the message when it is missing.
    pub why: &'static str,
    /// Only tests that run as root use it (as another user they skip and say why).
    pub root_only: bool,
}

/// Every program a test runs, besides cargo and the workspace's own binaries.
pub const PREREQS: &[Prereq] = &[
    Prereq {
        program: "git",
        package: "git",
        why: "checkout steps, project mirrors and every end-to-end test's repository",
        root_only: false,
    },
    Prereq {
        program: "useradd",
        package: "passwd",
        why: "as root, the end-to-end harness creates throwaway job users (bosun-test, bosun-test2)",
        root_only: true,
    },
    Prereq {
        program: "sudo",
        package: "sudo",
        why: "the runner.command_prefix tests start the task-agent through `sudo -niHu USER --`",
        root_only: true,
    },
    Prereq {
        program: "curl",
        package: "curl",
        why: "setup-workflow jobs post their continuation with curl, as CircleCI's docs do",
        root_only: false,
    },
    Prereq {
        program: "python3",
        package: "python3",
        why: "attack tests (pidfd_getfd, rendezvous intruder) and the task-agent's shell test",
        root_only: false,
    },
    Prereq {
        program: "perl",
        package: "perl-base",
        why: "the TIOCSTI attack test types into a terminal with perl's ioctl",
        root_only: false,
    },
    Prereq {
        program: "ps",
        package: "procps",
        why: "tests that read a step's controlling terminal with `ps -o tty=`",
        root_only: false,
    },
    Prereq {
        program: "sha256sum",
        package: "coreutils",
        why: "the 50 MB output test checks its bytes with sha256sum",
        root_only: false,
    },
    Prereq {
        program: "sshd",
        package: "openssh-server",
        why: "checkout over ssh:// and add_ssh_keys tests run a real sshd on loopback",
        root_only: false,
    },
    Prereq {
        program: "tinyproxy",
        package: "tinyproxy",
        why: "the proxy test tunnels the launch-agent's HTTPS through a real tinyproxy",
        root_only: false,
    },
    Prereq {
        program: "node",
        package: "nodejs",
        why: "the third-party clients test runs circle-client and circleci-api (npm) on node",
        root_only: false,
    },
    Prereq {
        program: "npm",
        package: "npm",
        why: "the third-party clients test installs circle-client and circleci-api from npm",
        root_only: false,
    },
    Prereq {
        program: "openssl",
        package: "openssl",
        why: "the releases tests make their signing keys and sign manifests with openssl, as operators do",
        root_only: false,
    },
    Prereq {
        program: "ssh",
        package: "openssh-client",
        why: "git over ssh:// and ssh-keygen for the ssh checkout and add_ssh_keys tests",
        root_only: false,
    },
];

/// What `cargo xtask bench --peer buildbot` measures bosun beside (issue 16): Debian's Buildbot.
pub const BENCH_PEER: &[Prereq] = &[
    Prereq {
        program: "buildbot",
        package: "buildbot",
        why: "`cargo xtask bench --peer buildbot` runs a Buildbot master",
        root_only: false,
    },
    Prereq {
        program: "buildbot-worker",
        package: "buildbot-worker",
        why: "`cargo xtask bench --peer buildbot` runs a Buildbot worker",
        root_only: false,
    },
];

/// The tests that need root, and why: they print `skipped: …` when run as another user.
pub const ROOT_ONLY_TESTS: &[(&str, &str)] = &[
    (
        "e2e containment, isolation, hardening and server_hardening tests",
        "the privilege drop, per-user isolation, cgroups and process limits exist only when the \
         launch-agent runs as root",
    ),
    (
        "command_prefix tests",
        "sudo -n as root is what runner.command_prefix is for",
    ),
    (
        "task-agent ssh::an_unprivileged_job_user_checks_out_over_ssh",
        "the task-agent runs as nobody, which only root can start",
    ),
    (
        "package-test (.ci/run only)",
        "dpkg -i installs the runner package system-wide",
    ),
];

/// The `PATH` the launch-agent gives job users, where steps find these programs (the developer's
/// own `PATH`, with pyenv shims and the like, does not count: steps never see it).
pub const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Whether `program` is an executable file on [`SYSTEM_PATH`].
pub fn on_path(program: &str) -> bool {
    std::env::split_paths(SYSTEM_PATH).any(|dir| is_executable(&dir.join(program)))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.trim_ascii() == b"0")
        .unwrap_or(false)
}

/// Checks every test prerequisite; as root installs the missing ones, otherwise says how to.
/// Returns the programs still missing (empty when everything is there).
pub fn ensure(root: bool) -> anyhow::Result<Vec<&'static Prereq>> {
    ensure_set(PREREQS, "test prerequisites", root)
}

/// [`ensure`] for the programs of `set`, its messages starting with `label`.
pub fn ensure_set(
    set: &'static [Prereq],
    label: &str,
    root: bool,
) -> anyhow::Result<Vec<&'static Prereq>> {
    let missing: Vec<&Prereq> = set.iter().filter(|p| !on_path(p.program)).collect();
    if missing.is_empty() {
        println!("{label}: all present");
        return Ok(Vec::new());
    }
    if !root {
        for prereq in &missing {
            let effect = if prereq.root_only {
                "only tests that need root use it (they skip as this user)"
            } else {
                "the tests that need it will fail"
            };
            println!(
                "{label}: `{}` is missing ({}; {effect}): sudo apt-get install {}",
                prereq.program, prereq.why, prereq.package
            );
        }
        return Ok(missing.into_iter().filter(|p| !p.root_only).collect());
    }
    let mut packages: Vec<&str> = missing.iter().map(|p| p.package).collect();
    packages.sort_unstable();
    packages.dedup();
    for prereq in &missing {
        println!(
            "{label}: installing {} for `{}`: {}",
            prereq.package, prereq.program, prereq.why
        );
    }
    apt_install(&packages)?;
    let still: Vec<&Prereq> = missing
        .into_iter()
        .filter(|p| !on_path(p.program))
        .collect();
    if !still.is_empty() {
        let names: Vec<&str> = still.iter().map(|p| p.program).collect();
        bail!(
            "installed {} but {} is still not on PATH",
            packages.join(" "),
            names.join(", ")
        );
    }
    Ok(Vec::new())
}

/// `apt-get install` of `packages`; an `apt-get update` first when the package lists are absent
/// (a fresh machine), and once more on failure (stale lists).
fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    let install = || -> anyhow::Result<()> {
        let output = Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(packages)
            .output()
            .context("running apt-get install")?;
        if !output.status.success() {
            bail!(
                "apt-get install {} failed: {}",
                packages.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    };
    let update = || -> anyhow::Result<()> {
        let status = Command::new("apt-get")
            .args(["update", "-qq"])
            .status()
            .context("running apt-get update")?;
        if !status.success() {
            bail!("apt-get update failed ({status})");
        }
        Ok(())
    };
    let lists_present = std::fs::read_dir("/var/lib/apt/lists")
        .map(|dir| {
            dir.flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with("_Packages"))
        })
        .unwrap_or(false);
    if !lists_present {
        update()?;
    }
    if install().is_err() {
        update()?;
        install()?;
    }
    Ok(())
}
