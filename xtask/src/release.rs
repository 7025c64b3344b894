//! `cargo xtask release --version V --signing-key KEY.pem [--target T]... [--debug]`: a signed
//! release of the agents (issue 15).
//!
//! Builds launch-agent and task-agent with `BOSUN_VERSION=V` (their `--version`, the version
//! they report and the task-agent's handshake all say V), for the host by default and for other
//! targets through the cross toolchain, and writes
//!
//! ```text
//! target/dist/release/V/manifest.json        {"version", "platforms": {"linux-<arch>": {"files": {name: {size, sha256}}}}}
//! target/dist/release/V/manifest.json.sig    ed25519 over the manifest's bytes (64 raw bytes)
//! target/dist/release/V/linux-<arch>/{launch-agent,task-agent}
//! ```
//!
//! The key is PKCS#8 PEM as `openssl genpkey -algorithm ed25519 -out KEY.pem` writes it; its
//! public half (`openssl pkey -in KEY.pem -pubout`) is what agents trust. The signature is the
//! one `openssl pkeyutl -sign -rawin -inkey KEY.pem -in manifest.json` makes, so
//! `openssl pkeyutl -verify -pubin -inkey PUB.pem -rawin -in manifest.json -sigfile
//! manifest.json.sig` checks a release without bosun.
//!
//! `--debug` builds with the dev profile into the usual target directory (the tests and CI use
//! it, to reuse the debug build instead of compiling the tree again with optimizations); the
//! host's copies are stripped with binutils' `strip`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use ed25519_dalek::pkcs8::DecodePrivateKey as _;
use ed25519_dalek::{Signer as _, SigningKey};
use sha2::Digest as _;

use crate::cross::{self, Target};
use crate::{cargo, root, run};

const USAGE: &str = "usage: cargo xtask release --version V --signing-key KEY.pem [--target T]... [--debug]\n\
    T: amd64, arm64, s390x, ppc64el (or a triple); default: the host";

const BINARIES: &[&str] = &["launch-agent", "task-agent"];

#[derive(Debug)]
struct Options {
    version: String,
    key: PathBuf,
    targets: Vec<Target>,
    debug: bool,
}

fn parse(args: &[String]) -> anyhow::Result<Options> {
    let (mut version, mut key, mut targets, mut debug) = (None, None, Vec::new(), false);
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--version" => version = Some(args.next().context("--version needs a value")?.clone()),
            "--signing-key" => {
                key = Some(PathBuf::from(
                    args.next().context("--signing-key needs a file")?,
                ))
            }
            "--target" => targets.push(cross::target(
                args.next().context("--target needs a value")?,
            )?),
            "--debug" => debug = true,
            _ => bail!("unknown argument {arg:?}"),
        }
    }
    let version = version.context("--version is required")?;
    let valid = version.len() <= 64
        && version.starts_with(|c: char| c.is_ascii_digit())
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'));
    if !valid {
        bail!("--version `{version}` is not a version like 1.2.3 or 1.2.3-rc.1");
    }
    if targets.is_empty() {
        targets.push(*cross::TARGETS.iter().find(|t| t.is_host()).expect("a host"));
    }
    Ok(Options {
        version,
        key: key.context("--signing-key is required")?,
        targets,
        debug,
    })
}

pub fn main(args: &[String]) -> anyhow::Result<u8> {
    let options = match parse(args) {
        Ok(options) => options,
        Err(err) => {
            eprintln!("xtask release: {err:#}\n{USAGE}");
            return Ok(2);
        }
    };
    let dir = release(&options)?;
    println!("release {}: {}", options.version, dir.display());
    Ok(0)
}

/// Reads an ed25519 private key from PKCS#8 PEM.
fn signing_key(path: &Path) -> anyhow::Result<SigningKey> {
    let pem = std::fs::read_to_string(path)
        .with_context(|| format!("reading the signing key {}", path.display()))?;
    SigningKey::from_pkcs8_pem(&pem).map_err(|err| {
        anyhow::anyhow!(
            "{} is not an ed25519 private key in PKCS#8 PEM (openssl genpkey -algorithm ed25519): {err}",
            path.display()
        )
    })
}

fn release(options: &Options) -> anyhow::Result<PathBuf> {
    // Read the key before building, so a wrong path fails in a second, not after the build.
    let key = signing_key(&options.key)?;
    let dir = root().join("target/dist/release").join(&options.version);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let mut platforms = serde_json::Map::new();
    for t in &options.targets {
        let bin_dir = build(t, options)?;
        let platform = format!("linux-{}", t.arch);
        let out = dir.join(&platform);
        std::fs::create_dir_all(&out)?;
        let mut files = serde_json::Map::new();
        for bin in BINARIES {
            let dest = out.join(bin);
            std::fs::copy(bin_dir.join(bin), &dest)
                .with_context(|| format!("copying {}", bin_dir.join(bin).display()))?;
            if options.debug && t.is_host() {
                // The dev profile keeps line tables: a fifth of the size without them, which
                // is what the tests download and hash over and over.
                let mut strip = Command::new("strip");
                strip.arg(&dest);
                run(strip)?;
            }
            let bytes = std::fs::read(&dest)?;
            let sha256: String = sha2::Sha256::digest(&bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            files.insert(
                (*bin).to_owned(),
                serde_json::json!({ "size": bytes.len(), "sha256": sha256 }),
            );
        }
        if t.is_host() {
            check_version(&out.join("launch-agent"), &options.version)?;
        }
        platforms.insert(platform, serde_json::json!({ "files": files }));
    }
    let manifest = serde_json::json!({
        "version": options.version,
        "platforms": platforms,
    });
    let mut text = serde_json::to_string_pretty(&manifest)?;
    text.push('\n');
    let signature = key.sign(text.as_bytes());
    std::fs::write(dir.join("manifest.json"), &text)?;
    std::fs::write(dir.join("manifest.json.sig"), signature.to_bytes())?;
    Ok(dir)
}

/// Builds the agents for `t` with the release's version; returns where the binaries are.
fn build(t: &Target, options: &Options) -> anyhow::Result<PathBuf> {
    let mut command = if t.is_host() {
        cargo()
    } else {
        cross::debian_cargo(t)?
    };
    command.arg("build").env("BOSUN_VERSION", &options.version);
    if !options.debug {
        // Stripped (rustc strips through the target's linker, so every target works).
        command
            .arg("--release")
            .env("CARGO_PROFILE_RELEASE_STRIP", "symbols");
    }
    // The host's debug build goes where `cargo build` puts it, so it reuses that build.
    let cross_dir = !(t.is_host() && options.debug);
    if cross_dir {
        command.args(["--target", t.triple]);
    }
    command.args([
        "-p",
        "bosun-launch-agent",
        "-p",
        "bosun-task-agent",
        "--bins",
    ]);
    run(command)?;
    let target_dir = if t.is_host() {
        std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root().join("target"))
    } else {
        cross::cross_target_dir()
    };
    let profile = if options.debug { "debug" } else { "release" };
    Ok(if cross_dir {
        target_dir.join(t.triple).join(profile)
    } else {
        target_dir.join(profile)
    })
}

/// The built launch-agent says it is `version` (the build took `BOSUN_VERSION`).
fn check_version(binary: &Path, version: &str) -> anyhow::Result<()> {
    let output = Command::new(binary)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version", binary.display()))?;
    let said = String::from_utf8_lossy(&output.stdout);
    if !said.split_whitespace().any(|word| word == version) {
        bail!(
            "{} --version says {:?}, not {version}",
            binary.display(),
            said.trim()
        );
    }
    Ok(())
}

/// The versions of the releases the end-to-end tests use (an agent updates from the first to
/// the second).
pub const TEST_VERSIONS: &[&str] = &["9.1.0-test", "9.2.0-test"];

/// What the release tests need, in `target/test-releases`: a signing key and another
/// (untrusted) one, made with openssl as an operator would (`key.pem`, `key.pub.pem`,
/// `other.pem`, `other.pub.pem`), and releases of this tree as [`TEST_VERSIONS`] built by the
/// same code as `cargo xtask release --debug` (in `VERSION/`). Called by `cargo xtask
/// test`, which tells the tests where (`BOSUN_TEST_RELEASES`).
pub fn test_fixture() -> anyhow::Result<PathBuf> {
    let started = std::time::Instant::now();
    let dir = root().join("target/test-releases");
    std::fs::create_dir_all(&dir)?;
    for name in ["key", "other"] {
        let private = dir.join(format!("{name}.pem"));
        if !private.exists() {
            let mut generate = Command::new("openssl");
            generate
                .args(["genpkey", "-algorithm", "ed25519", "-out"])
                .arg(&private);
            run(generate)?;
        }
        let mut public = Command::new("openssl");
        public
            .args(["pkey", "-pubout", "-in"])
            .arg(&private)
            .arg("-out")
            .arg(dir.join(format!("{name}.pub.pem")));
        run(public)?;
    }
    for version in TEST_VERSIONS {
        let options = Options {
            version: (*version).to_owned(),
            key: dir.join("key.pem"),
            targets: vec![*cross::TARGETS.iter().find(|t| t.is_host()).expect("a host")],
            debug: true,
        };
        let built = release(&options)?;
        let fixture = dir.join(version);
        if fixture.exists() {
            std::fs::remove_dir_all(&fixture)?;
        }
        std::fs::rename(&built, &fixture)
            .with_context(|| format!("moving {} to {}", built.display(), fixture.display()))?;
    }
    println!(
        "test releases {}: built in {:.0}s, {}",
        TEST_VERSIONS.join(", "),
        started.elapsed().as_secs_f64(),
        dir.display()
    );
    Ok(dir)
}
