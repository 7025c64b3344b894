//! `cargo xtask bench [NAME...] [--quick] [--runners N] [--peer buildbot] [--debug]` (issue 16):
//! builds the release binaries (with `--debug`, reuses the debug build: a check that the
//! benchmarks run, not figures), then runs `bosun-bench` (tests/bench/main.rs) against them,
//! which prints the table and writes `target/bench/results.json`. With `--peer buildbot`, as
//! root, Debian's buildbot and buildbot-worker are installed first when missing.
//! See docs/benchmarks.md.

use std::process::Command;

use anyhow::Context;

pub fn main(args: &[String]) -> anyhow::Result<u8> {
    let debug = args.iter().any(|a| a == "--debug");
    let passed: Vec<&String> = args.iter().filter(|a| *a != "--debug").collect();
    if args.iter().any(|a| a == "--peer") {
        // Not root: bosun-bench says what is missing and how to install it.
        crate::prereqs::ensure_set(
            crate::prereqs::BENCH_PEER,
            "bench peer",
            crate::prereqs::is_root(),
        )?;
    }
    let bins = crate::build_bins_with(!debug, &["bosun-tests"])?;
    let out = crate::root().join("target/bench/results.json");
    // A file left by an earlier run must not pass for this one's.
    let _ = std::fs::remove_file(&out);
    let status = Command::new(bins.join("bosun-bench"))
        .args(&passed)
        .arg("--out")
        .arg(&out)
        .env("BOSUN_TEST_BIN_DIR", &bins)
        .current_dir(crate::root())
        .status()
        .context("running bosun-bench")?;
    let text =
        std::fs::read_to_string(&out).with_context(|| format!("reading {}", out.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", out.display()))?;
    let measures = json["measures"].as_array().map_or(0, Vec::len);
    anyhow::ensure!(
        status.success() && measures > 0,
        "bosun-bench failed ({status}, {measures} figures)"
    );
    if debug {
        eprintln!("bench: debug binaries: the figures check that the benchmarks run, nothing more");
    }
    Ok(0)
}
