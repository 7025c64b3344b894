//! The third-party CircleCI API clients the `e2e::clients` test drives (`tests/clients/`):
//! installed once into `TARGET/clients` by `tests/clients/install.sh` (a Python venv from PyPI,
//! npm packages through the lock file, every version pinned), and again only when the pins
//! change. A failed install (no registry) is reported and the suite goes on: the clients test
//! then fails naming what is missing.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

/// The pin files: the install is redone when their bytes change.
const PINS: &[&str] = &[
    "tests/clients/requirements.txt",
    "tests/clients/npm/package-lock.json",
];

pub fn ensure(root: &Path, target: &Path) {
    if let Err(err) = install(root, target) {
        println!("third-party clients: not installed ({err:#}); the e2e clients test will fail");
    }
}

fn install(root: &Path, target: &Path) -> anyhow::Result<()> {
    let dir = target.join("clients");
    let stamp_path = dir.join(".pins");
    let mut pins = Vec::new();
    for pin in PINS {
        let path = root.join(pin);
        pins.extend(std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?);
    }
    if std::fs::read(&stamp_path).is_ok_and(|stamp| stamp == pins) {
        println!("third-party clients: installed in {}", dir.display());
        return Ok(());
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    println!("third-party clients: installing into {}", dir.display());
    let output = Command::new("bash")
        .arg(root.join("tests/clients/install.sh"))
        .arg(&dir)
        .output()
        .context("running tests/clients/install.sh")?;
    if !output.status.success() {
        bail!(
            "tests/clients/install.sh failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .join(" / ")
        );
    }
    std::fs::write(&stamp_path, &pins)
        .with_context(|| format!("writing {}", stamp_path.display()))?;
    Ok(())
}
