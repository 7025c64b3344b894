//! `cargo xtask package`: `.deb` and `.rpm` packages and release artefacts per target.
//!
//! For each target: a stripped release build of launch-agent, task-agent and bosun-server (the
//! host with the rustup toolchain, the others with Debian's Rust through `cross`), then cargo-deb
//! and cargo-generate-rpm (installed with `cargo install --locked` when missing) read the
//! `[package.metadata.deb]` / `[package.metadata.generate-rpm]` sections of
//! crates/launch-agent and crates/server. Everything lands in `target/dist/linux-<arch>/` with a
//! `manifest.json`; docs/deployment.md describes the layout.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};

use crate::cross::{self, TARGETS, Target};
use crate::{cargo, root, run};

const USAGE: &str = "usage: cargo xtask package [--target T]... [--no-rpm] [--no-server]\n\
    T: amd64, arm64, s390x, ppc64el (or a triple); default: all four";

#[derive(Debug)]
struct Options {
    targets: Vec<Target>,
    rpm: bool,
    server: bool,
}

fn parse(args: &[String]) -> anyhow::Result<Options> {
    let mut options = Options {
        targets: Vec::new(),
        rpm: true,
        server: true,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--target" => {
                let name = args.next().context("--target needs a value")?;
                options.targets.push(cross::target(name)?);
            }
            "--no-rpm" => options.rpm = false,
            "--no-server" => options.server = false,
            _ => bail!("unknown argument {arg:?}\n{USAGE}"),
        }
    }
    if options.targets.is_empty() {
        options.targets = TARGETS.to_vec();
    }
    Ok(options)
}

pub fn main(args: &[String]) -> anyhow::Result<u8> {
    let options = match parse(args) {
        Ok(options) => options,
        Err(err) => {
            eprintln!("xtask package: {err:#}");
            return Ok(2);
        }
    };
    ensure_tool("deb", "cargo-deb@3.8.0")?;
    if options.rpm {
        ensure_tool("generate-rpm", "cargo-generate-rpm@0.21.1")?;
    }
    for t in &options.targets {
        package(t, &options)?;
    }
    Ok(0)
}

/// Installs `cargo <subcommand>` with the project's (rustup) toolchain when it is missing.
/// `krate` carries a pinned version (`name@x.y.z`): CI packages the debug build with
/// `--profile dev`, which cargo-deb 3.8 accepts with a warning and later versions may refuse.
fn ensure_tool(subcommand: &str, krate: &str) -> anyhow::Result<()> {
    let present = cargo()
        .args([subcommand, "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !present {
        println!("package: installing {krate}");
        let mut install = cargo();
        install.args(["install", "--locked", krate]);
        run(install)?;
    }
    Ok(())
}

/// The target directory a build for `t` uses.
fn target_dir(t: &Target) -> PathBuf {
    if t.is_host() {
        std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root().join("target"))
    } else {
        cross::cross_target_dir()
    }
}

fn package(t: &Target, options: &Options) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut crates = vec!["bosun-launch-agent", "bosun-task-agent"];
    if options.server {
        crates.push("bosun-server");
    }
    // Build: stripped release binaries (rustc strips through the target's linker, so this works
    // for every target without a cross `strip`).
    let mut build = if t.is_host() {
        cargo()
    } else {
        cross::debian_cargo(t)?
    };
    build
        .args(["build", "--release", "--target", t.triple])
        .env("CARGO_PROFILE_RELEASE_STRIP", "symbols");
    for krate in &crates {
        build.args(["-p", krate]);
    }
    run(build)?;
    let built = started.elapsed();

    let target_dir = target_dir(t);
    let bin_dir = target_dir.join(t.triple).join("release");
    let dist = root()
        .join("target")
        .join("dist")
        .join(format!("linux-{}", t.arch));
    if dist.exists() {
        std::fs::remove_dir_all(&dist)?;
    }
    std::fs::create_dir_all(&dist)?;

    let mut files = Vec::new();
    let mut bins = vec!["launch-agent", "task-agent"];
    if options.server {
        bins.push("bosun-server");
    }
    for bin in &bins {
        let dest = dist.join(bin);
        std::fs::copy(bin_dir.join(bin), &dest)
            .with_context(|| format!("copying {}", bin_dir.join(bin).display()))?;
        files.push(dest);
    }

    // cargo-generate-rpm's -p takes the crate's directory.
    let mut packages = vec![("bosun-launch-agent", "crates/launch-agent")];
    if options.server {
        packages.push(("bosun-server", "crates/server"));
    }
    for (name, dir) in &packages {
        let mut deb = cargo();
        deb.env("CARGO_TARGET_DIR", &target_dir)
            .args(["deb", "--no-build", "--no-strip", "--target", t.triple])
            .args(["-p", name, "-o"])
            .arg(&dist);
        run(deb)?;
        if options.rpm {
            let mut rpm = cargo();
            // No automatic requirements: they come from ldd, which cannot read foreign binaries.
            rpm.args(["generate-rpm", "-p", dir, "--auto-req", "disabled"])
                .args(["--target", t.triple, "--arch", t.rpm_arch])
                .arg("--target-dir")
                .arg(&target_dir)
                .arg("-o")
                .arg(&dist);
            run(rpm)?;
        }
    }
    let mut artefacts: Vec<PathBuf> = std::fs::read_dir(&dist)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb" || e == "rpm"))
        .collect();
    artefacts.sort();
    files.extend(artefacts);
    write_manifest(t, &dist, &files)?;

    println!(
        "package {}: built in {:.0}s, packaged in {:.0}s total, {}",
        t.triple,
        built.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        dist.display()
    );
    for file in &files {
        let size = std::fs::metadata(file)?.len();
        println!(
            "  {:>10} bytes  {}",
            size,
            file.file_name().unwrap().to_string_lossy()
        );
    }
    Ok(())
}

fn sha256(path: &Path) -> anyhow::Result<String> {
    let output = Command::new("sha256sum")
        .arg(path)
        .output()
        .context("running sha256sum")?;
    if !output.status.success() {
        bail!("sha256sum {} failed", path.display());
    }
    let text = String::from_utf8(output.stdout)?;
    Ok(text
        .split_whitespace()
        .next()
        .context("sha256sum printed nothing")?
        .to_string())
}

fn json_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `manifest.json`: the self-update entry (`file`/`sha256`: the launch-agent binary) and every
/// artefact of the directory. Format documented in docs/deployment.md.
fn write_manifest(t: &Target, dist: &Path, files: &[PathBuf]) -> anyhow::Result<()> {
    let version = env!("CARGO_PKG_VERSION");
    let mut entries = Vec::new();
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let kind = match file.extension().and_then(|e| e.to_str()) {
            Some("deb") => "deb",
            Some("rpm") => "rpm",
            _ => "binary",
        };
        entries.push(format!(
            "    {{\"file\": {}, \"kind\": {}, \"size\": {}, \"sha256\": {}}}",
            json_string(&name),
            json_string(kind),
            std::fs::metadata(file)?.len(),
            json_string(&sha256(file)?)
        ));
    }
    let launch_agent = dist.join("launch-agent");
    let manifest = format!(
        "{{\n  \"version\": {},\n  \"os\": \"linux\",\n  \"arch\": {},\n  \"target\": {},\n  \
         \"deb_arch\": {},\n  \"rpm_arch\": {},\n  \"file\": \"launch-agent\",\n  \"sha256\": {},\n  \
         \"artifacts\": [\n{}\n  ]\n}}\n",
        json_string(version),
        json_string(t.arch),
        json_string(t.triple),
        json_string(t.deb_arch),
        json_string(t.rpm_arch),
        json_string(&sha256(&launch_agent)?),
        entries.join(",\n")
    );
    std::fs::write(dist.join("manifest.json"), manifest)?;
    Ok(())
}

/// `cargo xtask package-test [DEB]`: installs the runner .deb (default: the amd64 one in
/// target/dist) with `dpkg -i`, checks what the package promises, runs `launch-agent --version`
/// and `--check-config`, then removes the package again (the circleci user and /var/opt/circleci
/// stay, as after a real removal). Needs root.
pub fn install_test(args: &[String]) -> anyhow::Result<u8> {
    let deb = match args {
        [] => {
            let dist = root().join("target/dist/linux-x86_64");
            std::fs::read_dir(&dist)
                .with_context(|| {
                    format!(
                        "reading {}: run `cargo xtask package --target amd64` first",
                        dist.display()
                    )
                })?
                .flatten()
                .map(|e| e.path())
                .find(|p| {
                    p.file_name().is_some_and(|n| {
                        let n = n.to_string_lossy();
                        n.starts_with("bosun-launch-agent_") && n.ends_with("_amd64.deb")
                    })
                })
                .context("no bosun-launch-agent amd64 .deb in target/dist/linux-x86_64")?
        }
        [flag] if flag == "--debug" => debug_deb()?,
        [deb] => PathBuf::from(deb),
        _ => {
            eprintln!("usage: cargo xtask package-test [DEB | --debug]");
            return Ok(2);
        }
    };
    let mut install = Command::new("dpkg");
    install.arg("-i").arg(&deb);
    run(install)?;
    let result = check_installed();
    let mut remove = Command::new("dpkg");
    remove.args(["-r", "bosun-launch-agent"]);
    run(remove)?;
    for gone in ["/usr/bin/launch-agent", "/opt/circleci/bin/circleci"] {
        if Path::new(gone).symlink_metadata().is_ok() {
            bail!("{gone} is still there after dpkg -r");
        }
    }
    result?;
    println!(
        "package-test: {} installs, checks out and removes cleanly",
        deb.display()
    );
    Ok(0)
}

/// CI's variant: the runner .deb made with cargo-deb from the debug binaries the test run
/// already built in target/debug, so CI checks the packaging without a second, release build.
fn debug_deb() -> anyhow::Result<PathBuf> {
    ensure_tool("deb", "cargo-deb@3.8.0")?;
    let mut build = cargo();
    build.args([
        "build",
        "--quiet",
        "-p",
        "bosun-launch-agent",
        "-p",
        "bosun-task-agent",
    ]);
    run(build)?;
    let out = root().join("target/dist/ci");
    if out.exists() {
        std::fs::remove_dir_all(&out)?;
    }
    std::fs::create_dir_all(&out)?;
    let mut deb = cargo();
    deb.args(["deb", "--no-build", "--no-strip", "--profile", "dev"])
        .args(["-p", "bosun-launch-agent", "-o"])
        .arg(&out);
    run(deb)?;
    std::fs::read_dir(&out)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("cargo deb wrote no .deb")
}

fn check_installed() -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let config = Path::new("/etc/opt/circleci/launch-agent-config.yaml");
    let mode = std::fs::metadata(config)?.permissions().mode() & 0o777;
    if mode != 0o600 {
        bail!("{} has mode {mode:o}, not 600", config.display());
    }
    for dir in ["/var/opt/circleci", "/var/opt/circleci/workdir"] {
        if !Path::new(dir).is_dir() {
            bail!("{dir} was not created");
        }
    }
    for link in ["circleci", "circleci-agent"] {
        let target = std::fs::read_link(Path::new("/opt/circleci/bin").join(link))?;
        if target != Path::new("task-agent") {
            bail!("/opt/circleci/bin/{link} points to {}", target.display());
        }
    }
    if !Path::new("/lib/systemd/system/bosun-launch-agent.service").is_file() {
        bail!("the systemd unit is missing");
    }
    let id = Command::new("id").arg("circleci").output()?;
    if !id.status.success() {
        bail!("postinst did not create the circleci user");
    }
    let mut version = Command::new("launch-agent");
    version.arg("--version");
    run(version)?;
    // The template has no token: --check-config must refuse it, and accept it with one.
    let refused = Command::new("launch-agent")
        .arg("--check-config")
        .env_remove("LAUNCH_AGENT_API_AUTH_TOKEN")
        .output()?;
    if refused.status.code() != Some(2) {
        bail!("--check-config without a token exited {}", refused.status);
    }
    let mut check = Command::new("launch-agent");
    check
        .arg("--check-config")
        .env("LAUNCH_AGENT_API_AUTH_TOKEN", "package-test-token")
        .env("LAUNCH_AGENT_RUNNER_USER", "circleci");
    run(check)?;
    Ok(())
}
