//! Secrets at rest: project and context variables, checkout and SSH private keys, checkout
//! tokens. Each value is sealed with XChaCha20-Poly1305 under the server's key before it reaches
//! the database, and opened only to answer `GET /api/v2/task/config` for the running task that
//! needs it. No plaintext column holds a secret, and no log line names a value.
//!
//! The key is 32 random bytes: `BOSUN_SECRET_KEY` (64 hex digits or base64) if set, else
//! `DATA_DIR/secret-key` (0600), generated on first start. Losing it loses every secret (the rows
//! stay, unreadable); the server then refuses to hand them out rather than give a task garbage.
//!
//! A sealed value is `version byte || 24-byte random nonce || ciphertext+tag`, and its associated
//! data names the row it belongs to (`project-env/<project id>/<NAME>`), so a value copied into
//! another row, or another project's, fails to open instead of leaking there.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use anyhow::Context as _;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

/// Environment variable that carries the key instead of `DATA_DIR/secret-key`.
pub const SECRET_KEY_ENV: &str = "BOSUN_SECRET_KEY";
/// File name of the generated key in the data directory.
pub const SECRET_KEY_FILE: &str = "secret-key";

const VERSION: u8 = 1;
const NONCE_LEN: usize = 24;

/// The server's sealing key. Its `Debug` shows nothing.
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

impl SecretBox {
    /// The key from `from_env` (the value of [`SECRET_KEY_ENV`]) if given, else from
    /// `DATA_DIR/secret-key`, made on first start.
    pub fn load(data_dir: &Path, from_env: Option<&str>) -> anyhow::Result<SecretBox> {
        if let Some(text) = from_env {
            let key = parse_key(text).with_context(|| format!("{SECRET_KEY_ENV} is unusable"))?;
            return Ok(SecretBox::new(&key));
        }
        let path = data_dir.join(SECRET_KEY_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let key = parse_key(&text)
                    .with_context(|| format!("the secret key in {} is unusable", path.display()))?;
                Ok(SecretBox::new(&key))
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                getrandom::fill(&mut key).map_err(|err| anyhow::anyhow!("no randomness: {err}"))?;
                // `create_new`: two servers starting on one directory cannot both write a key.
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .with_context(|| format!("creating {}", path.display()))?;
                file.write_all(format!("{}\n", hex(&key)).as_bytes())
                    .and_then(|()| file.sync_all())
                    .with_context(|| format!("writing {}", path.display()))?;
                tracing::info!("generated the secret key {}", path.display());
                Ok(SecretBox::new(&key))
            }
            Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
        }
    }

    pub fn new(key: &[u8; 32]) -> SecretBox {
        SecretBox {
            cipher: XChaCha20Poly1305::new(key.into()),
        }
    }

    /// Seals `plaintext` for the row `aad` names.
    pub fn seal(&self, aad: &str, plaintext: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|err| anyhow::anyhow!("no randomness: {err}"))?;
        let sealed = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| anyhow::anyhow!("sealing a secret failed"))?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens a value [`SecretBox::seal`] sealed for `aad`. The error names the row, never the
    /// value: a wrong key, a damaged row, or a value moved from another row.
    pub fn open(&self, aad: &str, sealed: &[u8]) -> Result<String, Unreadable> {
        let unreadable = || {
            Unreadable(format!(
                "the stored secret {aad} cannot be decrypted (was the server's secret key \
                 changed? see {SECRET_KEY_ENV}); set it again"
            ))
        };
        if sealed.len() < 1 + NONCE_LEN || sealed[0] != VERSION {
            return Err(unreadable());
        }
        let (nonce, ciphertext) = sealed[1..].split_at(NONCE_LEN);
        let plain = self
            .cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| unreadable())?;
        String::from_utf8(plain).map_err(|_| unreadable())
    }
}

/// A stored secret that does not open under the server's key. Its message names the row and is
/// safe to show: clients (and the task that needed it) get it as a 409.
#[derive(Debug)]
pub struct Unreadable(pub String);

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unreadable {}

impl From<Unreadable> for crate::error::AppError {
    fn from(err: Unreadable) -> crate::error::AppError {
        tracing::error!("{err}");
        crate::error::AppError::conflict(err.0)
    }
}

/// 64 hex digits, or base64 of 32 bytes.
fn parse_key(text: &str) -> anyhow::Result<[u8; 32]> {
    let text = text.trim();
    let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        (0..32)
            .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()?
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|_| anyhow::anyhow!("expected 64 hex digits or the base64 of 32 bytes"))?
    };
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("expected 32 bytes (64 hex digits or base64)"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a read of a write-only value shows: `xxxx` and its last four characters, as CircleCI
/// does (the whole value is hidden when it is four characters or fewer).
pub fn masked_value(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    if chars.len() <= 4 {
        return "xxxx".to_owned();
    }
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("xxxx{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_for_their_row_and_key() {
        let key = SecretBox::new(&[7u8; 32]);
        let sealed = key.seal("project-env/p1/TOKEN", b"hunter22").unwrap();
        assert!(!sealed.windows(8).any(|w| w == b"hunter22"));
        assert_eq!(
            key.open("project-env/p1/TOKEN", &sealed).unwrap(),
            "hunter22"
        );
        let err = key.open("project-env/p2/TOKEN", &sealed).unwrap_err();
        assert!(err.to_string().contains("project-env/p2/TOKEN"), "{err}");
        assert!(!err.to_string().contains("hunter22"));
        let other = SecretBox::new(&[8u8; 32]);
        assert!(other.open("project-env/p1/TOKEN", &sealed).is_err());
        // Two seals of one value differ (fresh nonces).
        assert_ne!(
            sealed,
            key.seal("project-env/p1/TOKEN", b"hunter22").unwrap()
        );
        assert!(key.open("x", &[]).is_err());
    }

    #[test]
    fn the_key_is_generated_once_0600_or_taken_from_the_environment() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let first = SecretBox::load(dir.path(), None).unwrap();
        let path = dir.path().join(SECRET_KEY_FILE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let sealed = first.seal("a", b"value").unwrap();
        let again = SecretBox::load(dir.path(), None).unwrap();
        assert_eq!(again.open("a", &sealed).unwrap(), "value");

        let hex_key = std::fs::read_to_string(&path).unwrap();
        let from_env = SecretBox::load(Path::new("/nonexistent"), Some(&hex_key)).unwrap();
        assert_eq!(from_env.open("a", &sealed).unwrap(), "value");
        let b64 = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert!(SecretBox::load(Path::new("/nonexistent"), Some(&b64)).is_ok());
        let err = SecretBox::load(Path::new("/nonexistent"), Some("short")).unwrap_err();
        assert!(format!("{err:#}").contains(SECRET_KEY_ENV), "{err:#}");
    }

    #[test]
    fn reads_show_xxxx_and_the_last_four_characters() {
        assert_eq!(masked_value("s3cr3t-value"), "xxxxalue");
        assert_eq!(masked_value("abcd"), "xxxx");
        assert_eq!(masked_value(""), "xxxx");
    }
}
