//! `cargo xtask test [ARGS...]`: the README's test command, and what `.ci/run` calls.
//!
//! 1. Checks the system programs the tests need ([`crate::prereqs`]); as root installs what is
//!    missing, as another user says what is missing and which tests need root.
//! 2. Builds every binary the end-to-end tests start, once, and tells the harness where they are
//!    (`BOSUN_TEST_BIN_DIR`), so no test process runs cargo itself.
//!    Installs the pinned third-party API clients the clients test drives ([`crate::clients`]),
//!    and first builds the signed test release the releases tests publish
//!    ([`crate::release::test_fixture`], `BOSUN_TEST_RELEASES`).
//! 3. Runs the doc tests, then every other test with cargo-nextest when it is installed (each test
//!    in its own process, end-to-end tests concurrently: see `.config/nextest.toml`), else with
//!    `cargo test --workspace`. `ARGS` go to `cargo nextest run` (or to `cargo test` with
//!    `--cargo-test`), e.g. `cargo xtask test -- e2e::isolation`.
//! 4. Prints the suite's wall time.

use std::process::Command;
use std::time::Instant;

use anyhow::Context;

use crate::{build_bins, cargo, prereqs, run};

pub fn main(args: &[String]) -> anyhow::Result<u8> {
    let started = Instant::now();
    let mut use_nextest = true;
    let mut passthrough = Vec::new();
    for arg in args {
        match arg.as_str() {
            "--cargo-test" => use_nextest = false,
            "--" if passthrough.is_empty() => {}
            _ => passthrough.push(arg.clone()),
        }
    }
    let root = prereqs::is_root();
    if !root {
        println!("not root: these tests skip (each says why), the rest run:");
        for (tests, why) in prereqs::ROOT_ONLY_TESTS {
            println!("  - {tests}: {why}");
        }
    }
    let missing = prereqs::ensure(root)?;

    // Before the build: the release is built with its own version, and the build that follows
    // gives target/debug back its binaries of the crate's version.
    let releases = match crate::release::test_fixture() {
        Ok(dir) => Some(dir),
        Err(err) => {
            println!("test release: not built ({err:#}); the e2e releases tests will fail");
            None
        }
    };
    let bin_dir = build_bins()?;
    crate::clients::ensure(&crate::root(), bin_dir.parent().unwrap_or(&bin_dir));
    let nextest = use_nextest && nextest_installed();
    let code = if nextest {
        let mut doc = cargo();
        doc.args(["test", "--workspace", "--doc", "--quiet"]);
        run(doc)?;
        let mut tests = cargo();
        tests
            .args(["nextest", "run", "--workspace", "--no-fail-fast"])
            .args(&passthrough)
            .env("BOSUN_TEST_BIN_DIR", &bin_dir);
        if let Some(dir) = &releases {
            tests.env("BOSUN_TEST_RELEASES", dir);
        }
        status_code(tests)?
    } else {
        if use_nextest {
            println!("cargo-nextest is not installed: running the suite with cargo test");
        }
        let mut tests = cargo();
        tests
            .args(["test", "--workspace"])
            .args(&passthrough)
            .env("BOSUN_TEST_BIN_DIR", &bin_dir);
        if let Some(dir) = &releases {
            tests.env("BOSUN_TEST_RELEASES", dir);
        }
        status_code(tests)?
    };
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "test suite wall time: {elapsed:.0}s ({}{})",
        if nextest {
            "cargo nextest"
        } else {
            "cargo test"
        },
        if root { ", as root" } else { ", not root" }
    );
    if !missing.is_empty() {
        let names: Vec<&str> = missing.iter().map(|p| p.program).collect();
        println!(
            "missing test prerequisites (see above): {}",
            names.join(", ")
        );
    }
    Ok(code)
}

fn nextest_installed() -> bool {
    cargo()
        .args(["nextest", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn status_code(mut command: Command) -> anyhow::Result<u8> {
    let status = command
        .status()
        .with_context(|| format!("running {command:?}"))?;
    Ok(match status.code() {
        Some(0) => 0,
        _ => 1,
    })
}
