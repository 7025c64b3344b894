//! `cargo xtask cross setup|build|test`: cross-compile with Debian's Rust 1.85 and run tests
//! under qemu-user.
//!
//! rustup cannot add targets on this machine, but Debian's `rustc-web` (1.85) cross-compiles once
//! the target's standard library is in `/usr/lib/rustlib/<triple>`: `setup` installs the pinned
//! toolchain, the cross gcc and the target libc, extracts the standard library from
//! `libstd-rust-web-dev:<arch>` without adding the foreign architecture to dpkg (the foreign
//! index goes to a private lists directory), and extracts a static qemu-user 10 from
//! bookworm-backports into [`QEMU_DIR`] (bookworm's qemu 7.2 lacks `PR_SET_CHILD_SUBREAPER`). Linker and runner of each target are in
//! `.cargo/config.toml`; this module adds `CC_<triple>`/`AR_<triple>` for C-building crates and
//! exports `CARGO_TARGET_<TRIPLE>_RUNNER` so tests that spawn our binaries can prefix the runner.
//!
//! Cross builds use their own target directory, `target/cross`, so that Debian's rustc never
//! touches the artefacts the host (rustup) toolchain keeps in `target/debug`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};

use crate::{root, run};

/// The Debian version of the Rust toolchain whose target standard libraries bookworm ships.
pub const DEBIAN_RUST_VERSION: &str = "1.85.0+dfsg3-1~deb12u3";
/// Where `setup` puts qemu-user: bookworm's qemu 7.2 answers `prctl(PR_SET_CHILD_SUBREAPER)`
/// with EINVAL (task-agent needs it), so the static qemu-user of bookworm-backports (10.x) is
/// extracted here instead, without registering binfmt handlers.
pub const QEMU_DIR: &str = "/usr/local/lib/bosun-cross/bin";
/// Debian's cargo and rustc (not the rustup shims).
pub const DEBIAN_CARGO: &str = "/usr/bin/cargo";
pub const DEBIAN_RUSTC: &str = "/usr/bin/rustc";

/// One Linux target bosun builds for.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// Rust target triple.
    pub triple: &'static str,
    /// Debian architecture name (dpkg).
    pub deb_arch: &'static str,
    /// RPM architecture name.
    pub rpm_arch: &'static str,
    /// Release artefact architecture (`target/dist/linux-<arch>`), as `uname -m` says it.
    pub arch: &'static str,
    /// GNU triple of Debian's cross toolchain (`<prefix>-gcc`, `/usr/<prefix>`).
    pub gcc_prefix: &'static str,
    /// qemu-user binary; `None` for the host.
    pub qemu: Option<&'static str>,
}

pub const TARGETS: &[Target] = &[
    Target {
        triple: "x86_64-unknown-linux-gnu",
        deb_arch: "amd64",
        rpm_arch: "x86_64",
        arch: "x86_64",
        gcc_prefix: "x86_64-linux-gnu",
        qemu: None,
    },
    Target {
        triple: "aarch64-unknown-linux-gnu",
        deb_arch: "arm64",
        rpm_arch: "aarch64",
        arch: "aarch64",
        gcc_prefix: "aarch64-linux-gnu",
        qemu: Some("qemu-aarch64"),
    },
    Target {
        triple: "s390x-unknown-linux-gnu",
        deb_arch: "s390x",
        rpm_arch: "s390x",
        arch: "s390x",
        gcc_prefix: "s390x-linux-gnu",
        qemu: Some("qemu-s390x"),
    },
    Target {
        triple: "powerpc64le-unknown-linux-gnu",
        deb_arch: "ppc64el",
        rpm_arch: "ppc64le",
        arch: "ppc64le",
        gcc_prefix: "powerpc64le-linux-gnu",
        qemu: Some("qemu-ppc64le"),
    },
];

impl Target {
    pub fn is_host(&self) -> bool {
        self.qemu.is_none()
    }

    /// `S390X_UNKNOWN_LINUX_GNU`, as cargo's environment variables spell a triple.
    pub fn env_triple(&self) -> String {
        self.triple.to_uppercase().replace(['-', '.'], "_")
    }

    /// `qemu-s390x -L /usr/s390x-linux-gnu`, the same string as in `.cargo/config.toml`.
    pub fn runner(&self) -> Option<String> {
        self.qemu
            .map(|qemu| format!("{QEMU_DIR}/{qemu} -L /usr/{}", self.gcc_prefix))
    }

    fn rustlib(&self) -> PathBuf {
        PathBuf::from("/usr/lib/rustlib").join(self.triple)
    }
}

/// Accepts a triple or a short name (`s390x`, `ppc64le`, `ppc64el`, `arm64`, `amd64`, ...).
pub fn target(name: &str) -> anyhow::Result<Target> {
    TARGETS
        .iter()
        .find(|t| {
            [t.triple, t.deb_arch, t.rpm_arch, t.arch, t.gcc_prefix].contains(&name)
                || (name == "powerpc64le" && t.arch == "ppc64le")
        })
        .copied()
        .with_context(|| {
            let names: Vec<&str> = TARGETS.iter().map(|t| t.triple).collect();
            format!("unknown target {name:?}; known: {}", names.join(", "))
        })
}

fn cross_targets() -> impl Iterator<Item = &'static Target> {
    TARGETS.iter().filter(|t| !t.is_host())
}

pub fn main(args: &[String]) -> anyhow::Result<u8> {
    // An unknown target is a usage error (exit 2), not a failure.
    if let Some(Err(err)) = args
        .get(1)
        .filter(|a| !a.starts_with('-'))
        .map(|a| target(a))
    {
        eprintln!("xtask cross: {err:#}");
        return Ok(2);
    }
    match args.first().map(String::as_str) {
        Some("setup") => {
            let targets = match &args[1..] {
                [] => cross_targets().copied().collect(),
                names => names
                    .iter()
                    .map(|name| target(name))
                    .collect::<anyhow::Result<Vec<_>>>()?,
            };
            setup(&targets)?;
            Ok(0)
        }
        Some("build") if args.len() >= 2 => {
            let target = target(&args[1])?;
            build(&target, &args[2..])?;
            Ok(0)
        }
        Some("test") if args.len() >= 2 => {
            let target = target(&args[1])?;
            test(&target, &args[2..])?;
            Ok(0)
        }
        _ => {
            eprintln!(
                "usage: cargo xtask cross setup [TARGET...]\n       \
                 cargo xtask cross build TARGET [CARGO BUILD ARGS...]\n       \
                 cargo xtask cross test TARGET [-p CRATE...] [CARGO TEST ARGS...]\n\
                 TARGET: s390x, ppc64le, aarch64 (or a full triple)"
            );
            Ok(2)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// setup

fn apt_packages(targets: &[Target]) -> Vec<String> {
    let mut packages: Vec<String> = [
        "rustc-web",
        "cargo-web",
        "libstd-rust-web-dev",
        "libstd-rust-web-1.85",
    ]
    .iter()
    .map(|name| format!("{name}={DEBIAN_RUST_VERSION}"))
    .collect();
    for t in targets.iter().filter(|t| !t.is_host()) {
        packages.push(format!("gcc-{}", t.gcc_prefix));
        packages.push(format!("libc6-dev-{}-cross", t.deb_arch));
    }
    packages
}

/// Whether `package` (`name` or `name=version`) is installed (at that version).
fn dpkg_installed(package: &str) -> bool {
    let (name, version) = match package.split_once('=') {
        Some((name, version)) => (name, Some(version)),
        None => (package, None),
    };
    let Ok(output) = Command::new("dpkg-query")
        .args(["-W", "-f", "${Status}\t${Version}", name])
        .output()
    else {
        return false;
    };
    let text = String::from_utf8_lossy(&output.stdout);
    let Some((status, installed)) = text.split_once('\t') else {
        return false;
    };
    output.status.success()
        && status.ends_with(" installed")
        && version.is_none_or(|version| version == installed)
}

fn as_root(program: &str) -> Command {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.trim_ascii() == b"0")
        .unwrap_or(false);
    if is_root {
        Command::new(program)
    } else {
        let mut command = Command::new("sudo");
        command.arg(program);
        command
    }
}

/// Installs the toolchain, cross gcc, qemu-user and the targets' standard libraries; does only
/// what is missing, so running it again is quick.
pub fn setup(targets: &[Target]) -> anyhow::Result<()> {
    let started = Instant::now();
    let missing: Vec<String> = apt_packages(targets)
        .into_iter()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        println!("cross setup: apt packages present");
    } else {
        println!("cross setup: installing {}", missing.join(" "));
        let install = || {
            let mut command = as_root("apt-get");
            command
                .env("DEBIAN_FRONTEND", "noninteractive")
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(&missing);
            run(command)
        };
        if install().is_err() {
            // A fresh machine may have no (or stale) package lists.
            let mut update = as_root("apt-get");
            update.args(["update", "-qq"]);
            run(update)?;
            install()?;
        }
    }
    for t in targets.iter().filter(|t| !t.is_host()) {
        install_target_std(t)?;
    }
    install_qemu(targets)?;
    println!(
        "cross setup: done in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Whether `/usr/lib/rustlib/<triple>/lib` holds a `libstd-*.rlib`.
fn target_std_present(t: &Target) -> bool {
    std::fs::read_dir(t.rustlib().join("lib"))
        .map(|entries| {
            entries.flatten().any(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.starts_with("libstd-") && name.ends_with(".rlib")
            })
        })
        .unwrap_or(false)
}

/// Extracts `./usr/lib/rustlib/<triple>` of `libstd-rust-web-dev:<arch>` into `/`.
fn install_target_std(t: &Target) -> anyhow::Result<()> {
    if target_std_present(t) {
        println!("cross setup: {} standard library present", t.triple);
        return Ok(());
    }
    println!(
        "cross setup: fetching libstd-rust-web-dev:{} {DEBIAN_RUST_VERSION}",
        t.deb_arch
    );
    // A private apt state for the foreign architecture: dpkg's architecture list and the
    // system's package lists stay untouched.
    let state = std::env::temp_dir().join(format!("bosun-apt-{}", t.deb_arch));
    let lists = state.join("lists");
    let archives = state.join("archives");
    std::fs::create_dir_all(lists.join("partial"))?;
    std::fs::create_dir_all(archives.join("partial"))?;
    let apt_options = |command: &mut Command| {
        command.args([
            "-o".to_string(),
            format!("APT::Architectures={}", t.deb_arch),
            "-o".to_string(),
            format!("Dir::State::Lists={}", lists.display()),
            "-o".to_string(),
            format!("Dir::Cache::Archives={}", archives.display()),
            // No shared binary caches: they would mix this index into the system's.
            "-o".to_string(),
            "Dir::Cache::pkgcache=".to_string(),
            "-o".to_string(),
            "Dir::Cache::srcpkgcache=".to_string(),
            // The download lands in a directory apt's sandbox user cannot write to.
            "-o".to_string(),
            "APT::Sandbox::User=root".to_string(),
        ]);
    };
    let deb = format!("libstd-rust-web-dev:{}={DEBIAN_RUST_VERSION}", t.deb_arch);
    let download = || {
        let mut command = Command::new("apt-get");
        apt_options(&mut command);
        command.args(["download", "-qq", &deb]).current_dir(&state);
        run(command)
    };
    let have_index = std::fs::read_dir(&lists)?.flatten().any(|e| {
        e.file_name()
            .to_string_lossy()
            .contains(&format!("binary-{}_Packages", t.deb_arch))
    });
    if !have_index || download().is_err() {
        let mut update = as_root("apt-get");
        apt_options(&mut update);
        update.args(["update", "-qq"]);
        // A partly failing update of the foreign index is fine as long as the download works.
        if let Err(err) = run(update) {
            eprintln!(
                "cross setup: apt-get update for {} failed: {err:#} (continuing)",
                t.deb_arch
            );
        }
        download()?;
    }
    let file = std::fs::read_dir(&state)?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n.starts_with("libstd-rust-web-dev_")
                    && n.ends_with(&format!("_{}.deb", t.deb_arch))
            })
        })
        .context("apt-get download left no .deb")?;
    let script = format!(
        "dpkg-deb --fsys-tarfile '{}' | tar -x -C / ./usr/lib/rustlib/{}",
        file.display(),
        t.triple
    );
    let mut extract = as_root("sh");
    extract.args(["-c", &script]);
    run(extract)?;
    std::fs::remove_file(&file).ok();
    if !target_std_present(t) {
        bail!(
            "{} has no libstd after extracting {}",
            t.rustlib().display(),
            file.display()
        );
    }
    println!("cross setup: installed {}", t.rustlib().display());
    Ok(())
}

/// The major version of `QEMU_DIR/qemu`, if it runs.
fn qemu_major(qemu: &str) -> Option<u32> {
    let output = Command::new(Path::new(QEMU_DIR).join(qemu))
        .arg("--version")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let version = text.split("version ").nth(1)?;
    version.split('.').next()?.trim().parse().ok()
}

/// Extracts the static qemu-user binaries of bookworm-backports into [`QEMU_DIR`] (a private
/// sources list and lists directory: the system's apt configuration is not changed).
fn install_qemu(targets: &[Target]) -> anyhow::Result<()> {
    let wanted: Vec<&str> = targets.iter().filter_map(|t| t.qemu).collect();
    if wanted
        .iter()
        .all(|q| qemu_major(q).is_some_and(|major| major >= 8))
    {
        println!("cross setup: qemu-user present in {QEMU_DIR}");
        return Ok(());
    }
    println!("cross setup: fetching qemu-user (static) from bookworm-backports");
    let state = std::env::temp_dir().join("bosun-apt-backports");
    let lists = state.join("lists");
    std::fs::create_dir_all(lists.join("partial"))?;
    let sources = state.join("sources.list");
    std::fs::write(
        &sources,
        "deb http://deb.debian.org/debian bookworm-backports main\n",
    )?;
    let apt = |args: &[&str]| {
        let mut command = Command::new("apt-get");
        command.current_dir(&state);
        for option in [
            format!("Dir::Etc::SourceList={}", sources.display()),
            "Dir::Etc::SourceParts=/nonexistent".to_string(),
            format!("Dir::State::Lists={}", lists.display()),
            "Dir::Cache::pkgcache=".to_string(),
            "Dir::Cache::srcpkgcache=".to_string(),
            "APT::Sandbox::User=root".to_string(),
        ] {
            command.args(["-o", &option]);
        }
        command.args(args);
        run(command)
    };
    apt(&["update", "-qq"])?;
    apt(&["download", "-qq", "qemu-user/bookworm-backports"])?;
    let deb = std::fs::read_dir(&state)?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("qemu-user_"))
        })
        .context("apt-get download left no qemu-user .deb")?;
    let unpack = state.join("unpack");
    std::fs::create_dir_all(&unpack)?;
    let members: Vec<String> = wanted.iter().map(|q| format!("./usr/bin/{q}")).collect();
    let script = format!(
        "dpkg-deb --fsys-tarfile '{}' | tar -x -C '{}' {}",
        deb.display(),
        unpack.display(),
        members.join(" ")
    );
    let mut extract = Command::new("sh");
    extract.args(["-c", &script]);
    run(extract)?;
    let mut install = as_root("install");
    install.args(["-D", "-m", "0755", "-t", QEMU_DIR]);
    for q in &wanted {
        install.arg(unpack.join("usr/bin").join(q));
    }
    run(install)?;
    std::fs::remove_file(&deb).ok();
    std::fs::remove_dir_all(&unpack).ok();
    for q in &wanted {
        if qemu_major(q).is_none_or(|major| major < 8) {
            bail!("{QEMU_DIR}/{q} does not run or is older than qemu 8");
        }
    }
    println!("cross setup: installed {} in {QEMU_DIR}", wanted.join(" "));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// build and test

/// Where cross builds go (apart from the host's `target/debug`, which Debian's rustc would
/// otherwise fill with a second copy of every build script and proc macro).
pub fn cross_target_dir() -> PathBuf {
    root().join("target").join("cross")
}

/// Debian's cargo set up for `t`: Debian's rustc, the C cross compiler, the runner exported.
pub fn debian_cargo(t: &Target) -> anyhow::Result<Command> {
    for tool in [DEBIAN_CARGO, DEBIAN_RUSTC] {
        if !Path::new(tool).exists() {
            bail!("{tool} is missing: run `cargo xtask cross setup` first");
        }
    }
    if !t.is_host() && !target_std_present(t) {
        bail!(
            "no standard library for {} in {}: run `cargo xtask cross setup`",
            t.triple,
            t.rustlib().display()
        );
    }
    let mut command = Command::new(DEBIAN_CARGO);
    command.current_dir(root());
    // What the outer (rustup) cargo and rustup put into our environment must not leak into
    // Debian's cargo: toolchain overrides, and flags that would replace the config's per-target
    // settings.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        let cargo_internal = name.starts_with("CARGO_")
            && !matches!(
                name.as_str(),
                "CARGO_HOME" | "CARGO_TERM_COLOR" | "CARGO_NET_OFFLINE"
            )
            && !name.starts_with("CARGO_REGISTRIES_");
        if cargo_internal
            || name.starts_with("RUSTUP_")
            || matches!(
                name.as_str(),
                "CARGO"
                    | "RUSTC"
                    | "RUSTDOC"
                    | "RUSTC_WRAPPER"
                    | "RUSTC_WORKSPACE_WRAPPER"
                    | "RUSTFLAGS"
                    | "RUSTDOCFLAGS"
                    | "RUST_RECURSION_COUNT"
            )
        {
            command.env_remove(&name);
        }
    }
    let path = std::env::var("PATH").unwrap_or_default();
    command
        .env("PATH", format!("/usr/bin:{path}"))
        .env("RUSTC", DEBIAN_RUSTC)
        .env("RUSTDOC", "/usr/bin/rustdoc")
        .env("CARGO_TARGET_DIR", cross_target_dir());
    if !t.is_host() {
        let cc_triple = t.triple.replace('-', "_");
        command
            .env(format!("CC_{cc_triple}"), format!("{}-gcc", t.gcc_prefix))
            .env(format!("AR_{cc_triple}"), format!("{}-ar", t.gcc_prefix))
            .env(format!("CXX_{cc_triple}"), format!("{}-g++", t.gcc_prefix));
    }
    if let Some(runner) = t.runner() {
        // The same value as in .cargo/config.toml; exported so that tests which spawn our own
        // binaries (harness helpers) can prefix it.
        command.env(format!("CARGO_TARGET_{}_RUNNER", t.env_triple()), runner);
    }
    Ok(command)
}

/// The packages built and tested when none is named: the whole workspace but xtask.
const DEFAULT_PACKAGES: &[&str] = &[
    "bosun-protocol",
    "bosun-api",
    "bosun-config",
    "bosun-server",
    "bosun-launch-agent",
    "bosun-task-agent",
    "bosun-cli",
];

fn with_default_packages(args: &[String]) -> Vec<String> {
    if args
        .iter()
        .any(|a| a == "-p" || a.starts_with("--package") || a == "--workspace")
    {
        args.to_vec()
    } else {
        let mut all: Vec<String> = DEFAULT_PACKAGES
            .iter()
            .flat_map(|p| ["-p".to_string(), p.to_string()])
            .collect();
        all.extend_from_slice(args);
        all
    }
}

pub fn build(t: &Target, args: &[String]) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut command = debian_cargo(t)?;
    command
        .args(["build", "--target", t.triple])
        .args(with_default_packages(args));
    run(command)?;
    println!(
        "cross build {}: {:.1}s, binaries in {}",
        t.triple,
        started.elapsed().as_secs_f64(),
        cross_target_dir().join(t.triple).display()
    );
    Ok(())
}

/// Tests whose expectation depends on something qemu-user emulates differently from a kernel,
/// skipped under emulation (they run on the host), with the reason.
const EMULATION_SKIPS: &[(&str, &str)] = &[
    (
        "steps::a_missing_shell_fails_the_step_with_a_message",
        "qemu-user runs glibc's posix_spawn (CLONE_VM|CLONE_VFORK) as a plain fork, so a failed \
         exec shows up as a child exiting 127 instead of a spawn error",
    ),
    ("cli::argument_errors_exit_2_with_one_line", IN_JOB_CLI),
    (
        "cli::our_circleci_comes_before_the_hosts_and_the_tasks_path",
        IN_JOB_CLI,
    ),
    (
        "cli::the_binary_answers_as_circleci_and_circleci_agent",
        IN_JOB_CLI,
    ),
    (
        "cli::step_halt_skips_every_later_step_and_the_job_succeeds",
        IN_JOB_CLI,
    ),
    (
        "masking::a_value_registered_with_circleci_agent_mask_is_masked_from_then_on",
        IN_JOB_CLI,
    ),
];

/// Why the tests that run `circleci` from a step are host-only.
const IN_JOB_CLI: &str = "a step (or the test) execs the task-agent through its `circleci` links \
     by path, and binfmt handlers are not registered on purpose, so the kernel cannot run the \
     foreign binary (the CLI's logic is covered by the in-process tests, which run here)";

pub fn test(t: &Target, args: &[String]) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut command = debian_cargo(t)?;
    let mut args = with_default_packages(args);
    if !t.is_host() {
        if !args.iter().any(|a| a == "--") {
            args.push("--".into());
        }
        for (name, why) in EMULATION_SKIPS {
            println!("cross test: skipping {name} under qemu: {why}");
            args.extend(["--skip".to_string(), name.to_string()]);
        }
    }
    command.args(["test", "--target", t.triple]).args(args);
    run(command)?;
    println!(
        "cross test {}: passed in {:.1}s",
        t.triple,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
