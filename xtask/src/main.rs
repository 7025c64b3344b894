//! bosun's development tasks (the cargo-xtask pattern): `cargo xtask <task>`.
//!
//! - `quickstart [ARGS...]`: build the binaries, then run `bosun quickstart ARGS...`.
//! - `test [ARGS...]`: the README's test command: installs the tests' system prerequisites
//!   (`prereqs.rs`), builds once, runs the whole suite (`test.rs`) and reports its wall time.
//! - `ci`: what `.ci/run` runs before its CI-only stages: format check, clippy, `test`.
//! - `cross setup|build|test`: cross-compile for s390x, ppc64le and aarch64 with Debian's Rust and
//!   test under qemu-user (see `cross.rs`).
//! - `package [--target T]... [--no-rpm] [--no-server]`: .deb/.rpm and release artefacts in
//!   `target/dist/linux-<arch>/` (see `package.rs`, docs/deployment.md).
//! - `package-test [DEB | --debug]`: `dpkg -i` the amd64 runner package (with `--debug`: one
//!   made from the debug build, as CI does), check it, remove it (root).
//! - `bench [NAME...] [--quick] [--runners N] [--peer buildbot] [--debug]`: benchmarks against
//!   real processes, a table and `target/bench/results.json` (see `bench.rs`,
//!   docs/benchmarks.md).
//! - `release --version V --signing-key KEY.pem [--target T]... [--debug]`: a signed release of
//!   the agents in `target/dist/release/V/` (see `release.rs`, docs/deployment.md).

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{Context, bail};

mod bench;
mod clients;
mod cross;
mod package;
mod prereqs;
mod release;
mod test;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("quickstart") => quickstart(&args[1..]),
        Some("test") => test::main(&args[1..]),
        Some("ci") => ci(),
        Some("build-bins") => build_bins().map(|_| 0),
        Some("cross") => cross::main(&args[1..]),
        Some("package") => package::main(&args[1..]),
        Some("package-test") => package::install_test(&args[1..]),
        Some("release") => release::main(&args[1..]),
        Some("bench") => bench::main(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <quickstart [ARGS...] | test [ARGS...] | bench [NAME...] [--quick] [--runners N] [--peer buildbot] [--debug] | ci | build-bins | cross setup|build|test ... | package ... | package-test [DEB] | release --version V --signing-key KEY.pem ...>"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::from(1)
        }
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(root());
    command
}

fn run(mut command: Command) -> anyhow::Result<()> {
    let status = command
        .status()
        .with_context(|| format!("running {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed ({status})");
    }
    Ok(())
}

/// Builds every binary of the workspace into target/debug.
fn build_bins() -> anyhow::Result<PathBuf> {
    build_bins_with(false, &[])
}

/// Builds the binaries of the server, agents and CLI (and of `extra` packages) with the debug
/// or release profile; answers the directory they are in.
fn build_bins_with(release: bool, extra: &[&str]) -> anyhow::Result<PathBuf> {
    let mut command = cargo();
    command.args(["build", "--quiet", "--bins"]);
    for package in [
        "bosun-server",
        "bosun-launch-agent",
        "bosun-task-agent",
        "bosun-cli",
    ]
    .iter()
    .chain(extra)
    {
        command.args(["-p", package]);
    }
    if release {
        command.arg("--release");
    }
    run(command)?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    Ok(target.join(if release { "release" } else { "debug" }))
}

fn quickstart(args: &[String]) -> anyhow::Result<u8> {
    let bin_dir = build_bins()?;
    let status = Command::new(bin_dir.join("bosun"))
        .arg("quickstart")
        .args(args)
        .status()
        .context("running bosun quickstart")?;
    Ok(status.code().unwrap_or(1).clamp(0, 255) as u8)
}

fn ci() -> anyhow::Result<u8> {
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);
    run(fmt)?;
    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--quiet",
        "--",
        "-D",
        "warnings",
    ]);
    run(clippy)?;
    test::main(&[])
}
