//! A task's result, made durable before it is reported: `<ledger>/<task>.done` holds the status,
//! the message and the task's token (sealed), so a launch-agent restarted before the server took
//! the result reports it at its next start instead of losing it.
//!
//! The token is sealed with XChaCha20-Poly1305 under a key derived from the runner's own
//! `api.auth_token` (SHA-256 with a context string), bound to the task id: the record alone, a
//! backup of the ledger directory say, gives nobody a usable token. The file is root's, 0600, in
//! the root-only ledger directory, written through a temporary file and a rename.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use bosun_api::{Auth, Client};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::Digest as _;

const NONCE_LEN: usize = 24;
/// Longest record read back (a message is bounded by the server anyway).
const MAX_RECORD: u64 = 64 << 10;

/// A result not yet taken by the server.
#[derive(Debug, Clone, PartialEq)]
pub struct Done {
    pub task_id: String,
    pub status: String,
    pub message: Option<String>,
    /// Whether the task's whole output had reached the server when the record was written.
    pub delivered: bool,
    pub task_token: String,
}

fn cipher(auth_token: &str) -> XChaCha20Poly1305 {
    let key = sha2::Sha256::new()
        .chain_update(b"bosun launch-agent ledger v1\0")
        .chain_update(auth_token.as_bytes())
        .finalize();
    XChaCha20Poly1305::new(&key)
}

pub fn path(ledger_dir: &Path, task_id: &str) -> PathBuf {
    ledger_dir.join(format!("{task_id}.done"))
}

/// Writes the record (replacing an earlier one of the task).
pub fn write(ledger_dir: &Path, auth_token: &str, done: &Done) -> anyhow::Result<()> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|err| anyhow::anyhow!("no randomness: {err}"))?;
    let sealed = cipher(auth_token)
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: done.task_token.as_bytes(),
                aad: done.task_id.as_bytes(),
            },
        )
        .map_err(|_| anyhow::anyhow!("sealing the task token failed"))?;
    let record = serde_json::json!({
        "status": done.status,
        "message": done.message,
        "delivered": done.delivered,
        "nonce": hex(&nonce),
        "token": hex(&sealed),
    });
    let target = path(ledger_dir, &done.task_id);
    let temporary = ledger_dir.join(format!("{}.done.tmp", done.task_id));
    let mut file = crate::privileged::create_private(&temporary)
        .with_context(|| format!("writing {}", temporary.display()))?;
    file.write_all(record.to_string().as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, &target)
        .with_context(|| format!("writing {}", target.display()))?;
    Ok(())
}

pub fn remove(ledger_dir: &Path, task_id: &str) {
    let _ = std::fs::remove_file(path(ledger_dir, task_id));
}

/// Every readable record in the ledger directory; a record that cannot be read or opened (the
/// runner token changed, say) is logged and removed, since no one could ever report it.
pub fn read_all(ledger_dir: &Path, auth_token: &str) -> Vec<Done> {
    let Ok(list) = std::fs::read_dir(ledger_dir) else {
        return Vec::new();
    };
    let mut records = Vec::new();
    for entry in list.flatten() {
        let name = entry.file_name();
        let Some(task_id) = name.to_str().and_then(|name| name.strip_suffix(".done")) else {
            continue;
        };
        if task_id.is_empty()
            || !task_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            continue;
        }
        match read_one(&entry.path(), task_id, auth_token) {
            Ok(done) => records.push(done),
            Err(err) => {
                tracing::warn!(
                    task = task_id,
                    "dropping an unreadable task result: {err:#}"
                );
                remove(ledger_dir, task_id);
            }
        }
    }
    records
}

fn read_one(path: &Path, task_id: &str, auth_token: &str) -> anyhow::Result<Done> {
    use std::io::Read as _;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)?;
    let mut text = String::new();
    file.take(MAX_RECORD).read_to_string(&mut text)?;
    let record: serde_json::Value = serde_json::from_str(&text).context("not JSON")?;
    let field = |name: &str| record.get(name).and_then(|v| v.as_str());
    let nonce = unhex(field("nonce").unwrap_or_default()).context("no nonce")?;
    let sealed = unhex(field("token").unwrap_or_default()).context("no token")?;
    anyhow::ensure!(nonce.len() == NONCE_LEN, "the nonce has the wrong length");
    let token = cipher(auth_token)
        .decrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: &sealed,
                aad: task_id.as_bytes(),
            },
        )
        .map_err(|_| anyhow::anyhow!("the task token does not open with this runner's token"))?;
    Ok(Done {
        task_id: task_id.to_owned(),
        status: field("status").context("no status")?.to_owned(),
        message: field("message").map(str::to_owned),
        delivered: record
            .get("delivered")
            .and_then(|v| v.as_bool())
            .unwrap_or(false),
        task_token: String::from_utf8(token).context("the task token is not text")?,
    })
}

/// Reports `done` to the server (retrying for the retry budget). Returns whether the record
/// can go: the server took it, or refused it for good (the task had already ended there).
pub async fn report(client: &Client, done: &Done) -> bool {
    let auth = Auth::Bearer(done.task_token.clone());
    crate::task::complete(client, &auth, &done.status, done.message.clone()).await
}

/// At start: reports the results an earlier run of the launch-agent could not, in the
/// background.
pub fn replay(client: &Client, ledger_dir: &Path, auth_token: &str) {
    for mut done in read_all(ledger_dir, auth_token) {
        if !done.delivered {
            let note =
                "the launch-agent restarted before all of the task's output reached the server";
            done.message = Some(match done.message.take() {
                Some(message) => format!("{message} ({note})"),
                None => note.to_owned(),
            });
        }
        tracing::info!(task = %done.task_id, status = %done.status, "reporting a result held from an earlier run");
        let client = client.clone();
        let dir = ledger_dir.to_owned();
        tokio::spawn(async move {
            if report(&client, &done).await {
                remove(&dir, &done.task_id);
            }
        });
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Done {
        Done {
            task_id: "4e0e0d20-0a92".into(),
            status: "success".into(),
            message: None,
            delivered: true,
            task_token: "task-token-secret".into(),
        }
    }

    #[test]
    fn a_record_reads_back_and_holds_no_token_in_the_clear() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "runner-token", &sample()).unwrap();
        let text = std::fs::read_to_string(path(dir.path(), "4e0e0d20-0a92")).unwrap();
        assert!(!text.contains("task-token-secret"), "{text}");
        assert_eq!(read_all(dir.path(), "runner-token"), vec![sample()]);
    }

    #[test]
    fn a_record_sealed_under_another_runner_token_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "runner-token", &sample()).unwrap();
        assert_eq!(read_all(dir.path(), "another-token"), vec![]);
        assert!(!path(dir.path(), "4e0e0d20-0a92").exists());
    }

    #[test]
    fn a_record_renamed_to_another_task_does_not_open() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "runner-token", &sample()).unwrap();
        std::fs::rename(
            path(dir.path(), "4e0e0d20-0a92"),
            path(dir.path(), "other-task"),
        )
        .unwrap();
        assert_eq!(read_all(dir.path(), "runner-token"), vec![]);
    }
}
