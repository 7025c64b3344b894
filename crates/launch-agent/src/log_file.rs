//! `logging.file`: the launch-agent's own log, created 0600 (it names tasks, jobs and the
//! task-agents' messages), rotated by size (`logging.max_size`, keeping `logging.max_files` old
//! files as `FILE.1` … `FILE.N`, newest first), and reopened on SIGHUP for an outside rotator
//! (logrotate's `create` mode).

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// The open log and how big it may grow.
pub struct LogFile {
    path: PathBuf,
    file: RwLock<Arc<File>>,
    /// Bytes in the current file.
    size: AtomicU64,
    /// Rotate once the file passes this many bytes; 0 never.
    max_size: u64,
    /// Old files kept.
    keep: u32,
}

fn open(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

impl LogFile {
    pub fn open(path: &Path, max_size: u64, keep: u32) -> anyhow::Result<LogFile> {
        let file = open(path)
            .map_err(|err| anyhow::anyhow!("opening logging.file {}: {err}", path.display()))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(LogFile {
            path: path.to_owned(),
            file: RwLock::new(Arc::new(file)),
            size: AtomicU64::new(size),
            max_size,
            keep,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the file at the path again (after an outside rotator moved it away).
    pub fn reopen(&self) -> anyhow::Result<()> {
        let file = open(&self.path).map_err(|err| {
            anyhow::anyhow!("opening logging.file {}: {err}", self.path.display())
        })?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        if let Ok(mut current) = self.file.write() {
            *current = Arc::new(file);
            self.size.store(size, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Writes one record (the subscriber writes each event whole), rotating first when it
    /// would take the file past `max_size`.
    pub fn write_record(&self, bytes: &[u8]) -> std::io::Result<usize> {
        let len = bytes.len() as u64;
        if self.max_size > 0 && self.size.load(Ordering::SeqCst) + len > self.max_size {
            self.rotate();
        }
        let file = match self.file.read() {
            Ok(file) => file.clone(),
            Err(_) => return Ok(bytes.len()),
        };
        (&*file).write_all(bytes)?;
        self.size.fetch_add(len, Ordering::SeqCst);
        Ok(bytes.len())
    }

    /// `FILE.N-1` → `FILE.N`, …, `FILE` → `FILE.1`, then a new `FILE`. Holding the write lock,
    /// so one thread rotates and the others write to the new file after.
    fn rotate(&self) {
        let Ok(mut current) = self.file.write() else {
            return;
        };
        // Another thread may have rotated while this one waited for the lock.
        if self.size.load(Ordering::SeqCst) == 0 {
            return;
        }
        let numbered = |n: u32| {
            let mut name = self.path.as_os_str().to_owned();
            name.push(format!(".{n}"));
            PathBuf::from(name)
        };
        if self.keep == 0 {
            let _ = std::fs::remove_file(&self.path);
        } else {
            for n in (1..self.keep).rev() {
                let _ = std::fs::rename(numbered(n), numbered(n + 1));
            }
            let _ = std::fs::rename(&self.path, numbered(1));
        }
        if let Ok(file) = open(&self.path) {
            *current = Arc::new(file);
            self.size.store(0, Ordering::SeqCst);
        }
    }
}

/// A writer the subscriber asks for per event.
pub struct Writer(pub Arc<LogFile>);

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write_record(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_log_rotates_keeping_the_newest_files_and_every_line_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.log");
        let log = LogFile::open(&path, 100, 2).unwrap();
        for i in 0..40 {
            log.write_record(format!("line {i:03}\n").as_bytes())
                .unwrap();
        }
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        let (now, one, two) = (
            read(&path),
            read(&dir.path().join("agent.log.1")),
            read(&dir.path().join("agent.log.2")),
        );
        assert!(!dir.path().join("agent.log.3").exists(), "only 2 are kept");
        for file in [&now, &one, &two] {
            assert!(!file.is_empty() && file.len() <= 100, "{file:?}");
        }
        // Oldest to newest, the kept lines are the last ones written, in order, none split.
        let kept = format!("{two}{one}{now}");
        let lines: Vec<&str> = kept.lines().collect();
        let last: Vec<String> = (40 - lines.len()..40)
            .map(|i| format!("line {i:03}"))
            .collect();
        assert_eq!(lines, last);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn reopen_follows_a_file_moved_away() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.log");
        let log = LogFile::open(&path, 0, 0).unwrap();
        log.write_record(b"before\n").unwrap();
        std::fs::rename(&path, dir.path().join("moved.log")).unwrap();
        log.write_record(b"still old\n").unwrap();
        log.reopen().unwrap();
        log.write_record(b"after\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "after\n");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("moved.log")).unwrap(),
            "before\nstill old\n"
        );
    }
}
