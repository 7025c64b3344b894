//! Permissions of the server's data: nothing the server stores (database, WAL, blobs with every
//! step's log, git mirrors, the admin token) is readable by another local user, a job's user
//! included.
//!
//! [`prepare`] runs first in [`crate::run`]: it sets the process umask to 077, so every file the
//! server (and SQLite, and the `git` it runs) creates from then on is 0600 or stricter and every
//! directory 0700; it creates the data directory 0700 or tightens an existing one; and it
//! tightens what an older version left readable (`bosun.db*` were 0644, `blobs/` and `repos/`
//! 0755). Contents of `blobs/` and `repos/` are not walked: once those directories are 0700 no
//! one else can reach what is inside, whatever its mode.
//!
//! A data directory of mode 0750 (or 0710, 0740: group bits without write, no bits for others) is
//! kept: it is the packaged layout (`install -d -m 0750 -o bosun -g bosun`), where the group is
//! the service's own. Its members see the names at the top level and nothing else, since every
//! entry there is 0600 or 0700. Anything more open (other bits, group write) becomes 0700.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::Config;

/// The umask the server runs with: no bits for group or others on anything it creates.
const UMASK: u32 = 0o077;

/// Sets the umask, then creates or tightens the data directory and what lives in it. Errors
/// (a directory of another owner that cannot be tightened) stop the server: it refuses to serve
/// from a place others can read.
pub(crate) fn prepare(config: &Config) -> anyhow::Result<()> {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(UMASK));

    let data_dir = &config.data_dir;
    if data_dir.exists() {
        tighten_data_dir(data_dir)?;
    } else {
        // Under the umask above, every directory created here is 0700.
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating data directory {}", data_dir.display()))?;
    }

    let mut files: Vec<PathBuf> = vec![
        data_dir.join("admin-token"),
        data_dir.join("server-url"),
        data_dir.join(crate::secrets::SECRET_KEY_FILE),
    ];
    let database = match &config.database_url {
        Some(url) => sqlite_path(url),
        None => Some(data_dir.join("bosun.db")),
    };
    if let Some(database) = database {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut name = database.clone().into_os_string();
            name.push(suffix);
            files.push(PathBuf::from(name));
        }
    }
    for file in &files {
        tighten(file, 0o600)?;
    }

    let blob_dir = config.blob_location()?.dir().to_owned();
    for dir in [blob_dir, data_dir.join("repos")] {
        tighten(&dir, 0o700)?;
    }
    Ok(())
}

/// Makes an existing data directory 0700, unless it is already 0700 or a service group's 0750.
fn tighten_data_dir(dir: &Path) -> anyhow::Result<()> {
    let metadata = std::fs::metadata(dir)
        .with_context(|| format!("reading data directory {}", dir.display()))?;
    if !metadata.is_dir() {
        anyhow::bail!("data directory {} is not a directory", dir.display());
    }
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & 0o027 == 0 {
        return Ok(());
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).with_context(|| {
        format!(
            "data directory {} is mode {mode:04o}, readable by other users, and cannot be made 0700",
            dir.display()
        )
    })?;
    tracing::warn!(
        "data directory {} was mode {mode:04o}, open to other users: made it 0700",
        dir.display()
    );
    Ok(())
}

/// Clears the group and other bits of `path` if it exists (a file from an older version).
fn tighten(path: &Path, mode: u32) -> anyhow::Result<()> {
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
    };
    let current = metadata.permissions().mode() & 0o7777;
    if current & 0o077 == 0 {
        return Ok(());
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).with_context(|| {
        format!(
            "{} is mode {current:04o}, readable by other users, and cannot be made {mode:04o}",
            path.display()
        )
    })?;
    tracing::warn!(
        "{} was mode {current:04o}, open to other users: made it {mode:04o}",
        path.display()
    );
    Ok(())
}

/// The file of a `sqlite:` URL (`sqlite://PATH?options`), or `None` for an in-memory database.
fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or("");
    if path.is_empty() || path == ":memory:" {
        return None;
    }
    Some(PathBuf::from(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_name_their_file() {
        assert_eq!(
            sqlite_path("sqlite:///var/lib/bosun/bosun.db?mode=rwc"),
            Some(PathBuf::from("/var/lib/bosun/bosun.db"))
        );
        assert_eq!(
            sqlite_path("sqlite:data.db"),
            Some(PathBuf::from("data.db"))
        );
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("postgres://x"), None);
    }

    #[test]
    fn open_files_and_directories_are_tightened_and_a_service_group_dir_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bosun.db");
        std::fs::write(&file, b"x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        tighten(&file, 0o600).unwrap();
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600);
        tighten(&dir.path().join("missing"), 0o600).unwrap();

        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o750)).unwrap();
        tighten_data_dir(&data).unwrap();
        let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o750);
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        tighten_data_dir(&data).unwrap();
        let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o700);
    }
}
