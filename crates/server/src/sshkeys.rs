//! SSH keys: checkout (deploy) keys the server generates, additional keys users upload, and the
//! `known_hosts` lines that go with them.
//!
//! Pure functions over text; nothing here touches the database or the disk. Fingerprints are
//! the forms users compare against: `fingerprint_sha256` exactly as `ssh-keygen -lf` prints it
//! (`SHA256:` and unpadded base64), `fingerprint_md5` as CircleCI shows it and
//! `ssh-keygen -E md5 -lf` prints it without its `MD5:` prefix (`aa:bb:...`).
//!
//! Private keys are secrets: no error message, `Debug` output or log line here contains key
//! material or the text a user uploaded, only what kind of thing it is and what is wrong.

use std::fmt;

use md5::{Digest, Md5};
use ssh_key::private::{Ed25519Keypair, KeypairData};
use ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey, PublicKey};

/// The largest private key text [`parse_private_key`] accepts. An RSA-8192 key in the OpenSSH
/// format is about 6.5 KiB.
pub const MAX_PRIVATE_KEY_LEN: usize = 16 * 1024;

/// The largest `known_hosts` text [`parse_known_hosts`] accepts, in bytes.
pub const MAX_KNOWN_HOSTS_LEN: usize = 16 * 1024;

/// The most lines (blank and comment lines included) [`parse_known_hosts`] accepts.
pub const MAX_KNOWN_HOSTS_LINES: usize = 64;

/// A generated key pair, in OpenSSH formats.
pub struct KeyPair {
    /// `-----BEGIN OPENSSH PRIVATE KEY-----`, unencrypted, LF line endings.
    pub private_openssh: String,
    /// `ssh-ed25519 AAAA... comment`, the line for a deploy-key form or `authorized_keys`.
    pub public_openssh: String,
    pub fingerprint_sha256: String,
    pub fingerprint_md5: String,
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field("private_openssh", &"<redacted>")
            .field("public_openssh", &self.public_openssh)
            .field("fingerprint_sha256", &self.fingerprint_sha256)
            .field("fingerprint_md5", &self.fingerprint_md5)
            .finish()
    }
}

/// What the server keeps about an uploaded private key besides the key itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedKey {
    /// The public half, `ALGORITHM BASE64[ COMMENT]`.
    pub public_openssh: String,
    pub fingerprint_sha256: String,
    pub fingerprint_md5: String,
    /// The key type as SSH names it: `ssh-ed25519`, `ssh-rsa`, `ecdsa-sha2-nistp256`, ...
    pub algorithm: String,
}

/// Generates an ed25519 key pair from the operating system's CSPRNG.
pub fn generate_ed25519(comment: &str) -> anyhow::Result<KeyPair> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|err| anyhow::anyhow!("no randomness: {err}"))?;
    let keypair = Ed25519Keypair::from_seed(&seed);
    // The seed is the private key: do not leave a copy on the stack.
    seed.fill(0);
    std::hint::black_box(&seed);
    let private = PrivateKey::new(KeypairData::Ed25519(keypair), comment)
        .map_err(|err| anyhow::anyhow!("cannot build an ed25519 key: {err}"))?;
    let private_openssh = private
        .to_openssh(LineEnding::LF)
        .map_err(|err| anyhow::anyhow!("cannot encode the ed25519 private key: {err}"))?
        .to_string();
    let public = private.public_key();
    Ok(KeyPair {
        private_openssh,
        public_openssh: public_line(public)?,
        fingerprint_sha256: fingerprint_sha256(public),
        fingerprint_md5: fingerprint_md5(public)?,
    })
}

/// Reads an unencrypted private key in the OpenSSH format (ed25519, ECDSA or RSA).
///
/// Refuses other formats (PEM PKCS#1/PKCS#8, PuTTY) and passphrase-protected keys with a message
/// that says how to convert them: the runner hands the key to `ssh` with no one to type a
/// passphrase.
pub fn parse_private_key(text: &str) -> Result<ParsedKey, String> {
    if text.len() > MAX_PRIVATE_KEY_LEN {
        return Err(format!(
            "the private key is {} bytes long, more than the limit of {MAX_PRIVATE_KEY_LEN}",
            text.len()
        ));
    }
    let trimmed = text.trim();
    const CONVERT: &str = "convert it to the OpenSSH format with `ssh-keygen -p -m RFC4716 -f FILE` \
                           (this rewrites FILE in place)";
    if !trimmed.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----") {
        let kind = if trimmed.starts_with("-----BEGIN RSA PRIVATE KEY-----") {
            "a PEM (PKCS#1) RSA private key"
        } else if trimmed.starts_with("-----BEGIN EC PRIVATE KEY-----") {
            "a PEM (SEC1) EC private key"
        } else if trimmed.starts_with("-----BEGIN DSA PRIVATE KEY-----") {
            return Err(
                "this is a DSA private key, which OpenSSH no longer supports: \
                        use an ed25519 key (`ssh-keygen -t ed25519`)"
                    .to_string(),
            );
        } else if trimmed.starts_with("-----BEGIN PRIVATE KEY-----") {
            "a PKCS#8 private key"
        } else if trimmed.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
            "an encrypted PKCS#8 private key"
        } else if trimmed.starts_with("PuTTY-User-Key-File") {
            return Err(
                "this is a PuTTY private key: export it in the OpenSSH format with \
                        `puttygen KEY.ppk -O private-openssh-new -o FILE`"
                    .to_string(),
            );
        } else if trimmed.starts_with("ssh-") || trimmed.starts_with("ecdsa-") {
            return Err(
                "this is a public key: upload the private key (the file without .pub)".to_string(),
            );
        } else {
            return Err("not an OpenSSH private key: expected text starting with \
                 `-----BEGIN OPENSSH PRIVATE KEY-----`"
                .to_string());
        };
        return Err(format!(
            "this is {kind}, not an OpenSSH private key: {CONVERT}"
        ));
    }
    // The parser's error messages name the encoding problem, never the key's bytes.
    // Keys pasted into a browser form arrive with CRLF line endings; the PEM decoder wants LF.
    let unix = trimmed.replace("\r\n", "\n");
    let private = PrivateKey::from_openssh(&unix)
        .map_err(|err| format!("not a valid OpenSSH private key: {err}"))?;
    if private.is_encrypted() {
        return Err(
            "the private key is protected by a passphrase, which a CI job cannot type: \
                    remove it with `ssh-keygen -p -f FILE` (enter the old passphrase, then an \
                    empty one), or generate a key without one"
                .to_string(),
        );
    }
    let algorithm = private.algorithm();
    match algorithm {
        Algorithm::Ed25519 | Algorithm::Ecdsa { .. } | Algorithm::Rsa { .. } => {}
        other => {
            return Err(format!(
                "unsupported key type `{}`: use an ed25519, ECDSA or RSA key",
                other.as_str()
            ));
        }
    }
    let public = private.public_key();
    Ok(ParsedKey {
        public_openssh: public_line(public).map_err(|err| err.to_string())?,
        fingerprint_sha256: fingerprint_sha256(public),
        fingerprint_md5: fingerprint_md5(public).map_err(|err| err.to_string())?,
        algorithm: algorithm.as_str().to_string(),
    })
}

/// Validates `known_hosts` text and returns its entries, one normalized line each
/// (`[@marker ]HOSTS KEYTYPE BASE64[ COMMENT]`, single spaces); blank lines and `#` comments are
/// dropped.
pub fn parse_known_hosts(text: &str) -> Result<Vec<String>, String> {
    if text.len() > MAX_KNOWN_HOSTS_LEN {
        return Err(format!(
            "known_hosts is {} bytes long, more than the limit of {MAX_KNOWN_HOSTS_LEN}",
            text.len()
        ));
    }
    let line_count = text.lines().count();
    if line_count > MAX_KNOWN_HOSTS_LINES {
        return Err(format!(
            "known_hosts has {line_count} lines, more than the limit of {MAX_KNOWN_HOSTS_LINES}"
        ));
    }
    let mut entries = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let entry =
            parse_known_hosts_line(line).map_err(|message| format!("line {number}: {message}"))?;
        entries.push(entry);
    }
    Ok(entries)
}

fn parse_known_hosts_line(line: &str) -> Result<String, String> {
    let mut fields = line.split_whitespace();
    let mut first = fields.next().unwrap_or_default();
    let marker = if first.starts_with('@') {
        if first != "@cert-authority" && first != "@revoked" {
            return Err(format!(
                "unknown marker `{first}`: expected `@cert-authority` or `@revoked`"
            ));
        }
        let marker = first;
        first = fields
            .next()
            .ok_or_else(|| "expected host patterns after the marker".to_string())?;
        Some(marker)
    } else {
        None
    };
    let hosts = first;
    check_host_patterns(hosts)?;
    let key_type = fields
        .next()
        .ok_or_else(|| "expected a key type after the host patterns".to_string())?;
    if key_type.parse::<Algorithm>().is_err() {
        return Err(format!(
            "unknown key type `{}`: expected e.g. `ssh-ed25519`, `ecdsa-sha2-nistp256` or `ssh-rsa`",
            key_type.escape_debug()
        ));
    }
    let key_base64 = fields
        .next()
        .ok_or_else(|| format!("expected a base64 key after `{key_type}`"))?;
    let public = PublicKey::from_openssh(&format!("{key_type} {key_base64}"))
        .map_err(|err| format!("invalid `{key_type}` key: {err}"))?;
    if public.algorithm().as_str() != key_type {
        return Err(format!(
            "the key is `{}` but the line says `{key_type}`",
            public.algorithm().as_str()
        ));
    }
    let comment: Vec<&str> = fields.collect();
    let mut normalized = String::new();
    if let Some(marker) = marker {
        normalized.push_str(marker);
        normalized.push(' ');
    }
    normalized.push_str(hosts);
    normalized.push(' ');
    normalized.push_str(key_type);
    normalized.push(' ');
    normalized.push_str(key_base64);
    if !comment.is_empty() {
        normalized.push(' ');
        normalized.push_str(&comment.join(" "));
    }
    Ok(normalized)
}

/// Checks a comma-separated list of host patterns (`github.com,*.example.org,[host]:2222,!bad`)
/// or one hashed host name (`|1|SALT|HASH`).
fn check_host_patterns(hosts: &str) -> Result<(), String> {
    if hosts.starts_with("|1|") {
        return hosts
            .parse::<ssh_key::known_hosts::HostPatterns>()
            .map(|_| ())
            .map_err(|_| {
                "invalid hashed host name: expected `|1|SALT|HASH` in base64".to_string()
            });
    }
    for pattern in hosts.split(',') {
        let bare = pattern.strip_prefix('!').unwrap_or(pattern);
        let host = match bare.strip_prefix('[') {
            Some(rest) => {
                let (host, port) = rest.split_once("]:").ok_or_else(|| {
                    format!("invalid host pattern `{pattern}`: expected `[HOST]:PORT`")
                })?;
                if port.is_empty() || !port.chars().all(|c| c.is_ascii_digit()) || port.len() > 5 {
                    return Err(format!("invalid port in host pattern `{pattern}`"));
                }
                host
            }
            None => bare,
        };
        let valid = !host.is_empty()
            && host.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '*' | '?' | ':')
            });
        if !valid {
            return Err(format!(
                "invalid host pattern `{}`: expected host names, addresses or `*`/`?` globs",
                pattern.escape_debug()
            ));
        }
    }
    Ok(())
}

fn public_line(public: &PublicKey) -> anyhow::Result<String> {
    public
        .to_openssh()
        .map_err(|err| anyhow::anyhow!("cannot encode the public key: {err}"))
}

fn fingerprint_sha256(public: &PublicKey) -> String {
    // `Fingerprint`'s Display is `SHA256:` and unpadded base64, as `ssh-keygen -l` prints it.
    public.fingerprint(HashAlg::Sha256).to_string()
}

fn fingerprint_md5(public: &PublicKey) -> anyhow::Result<String> {
    // The MD5 fingerprint is over the public key blob, the bytes the base64 field encodes.
    let blob = public
        .to_bytes()
        .map_err(|err| anyhow::anyhow!("cannot encode the public key: {err}"))?;
    let digest = Md5::digest(&blob);
    let hex: Vec<String> = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    Ok(hex.join(":"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    const SSH_KEYGEN: &str = "/usr/bin/ssh-keygen";

    fn ssh_keygen() -> &'static str {
        assert!(
            Path::new(SSH_KEYGEN).exists(),
            "these tests need OpenSSH's ssh-keygen at {SSH_KEYGEN} (apt-get install openssh-client)"
        );
        SSH_KEYGEN
    }

    fn run(args: &[&str]) -> String {
        let output = Command::new(ssh_keygen())
            .args(args)
            .output()
            .expect("run ssh-keygen");
        assert!(
            output.status.success(),
            "ssh-keygen {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    fn write_0600(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .unwrap();
        file.write_all(text.as_bytes()).unwrap();
        path
    }

    /// `ssh-keygen -l` prints `BITS FINGERPRINT COMMENT (TYPE)`: the fingerprint field.
    fn keygen_fingerprint(path: &Path, hash: &str) -> String {
        let line = run(&["-E", hash, "-lf", path.to_str().unwrap()]);
        line.split_whitespace().nth(1).unwrap().to_string()
    }

    /// `ALGORITHM BASE64`, without the comment.
    fn key_fields(line: &str) -> String {
        line.split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn generated_key_is_accepted_by_ssh_keygen() {
        let dir = tempfile::tempdir().unwrap();
        let pair = generate_ed25519("bosun checkout key").unwrap();
        assert!(
            pair.private_openssh
                .starts_with("-----BEGIN OPENSSH PRIVATE KEY-----\n")
        );
        assert!(pair.public_openssh.starts_with("ssh-ed25519 AAAA"));
        assert!(pair.public_openssh.ends_with(" bosun checkout key"));
        let path = write_0600(dir.path(), "id_ed25519", &pair.private_openssh);

        let derived = run(&["-y", "-f", path.to_str().unwrap()]);
        assert_eq!(key_fields(&derived), key_fields(&pair.public_openssh));

        assert_eq!(keygen_fingerprint(&path, "sha256"), pair.fingerprint_sha256);
        let md5 = keygen_fingerprint(&path, "md5");
        assert_eq!(
            md5.strip_prefix("MD5:"),
            Some(pair.fingerprint_md5.as_str())
        );
        assert_eq!(pair.fingerprint_md5.len(), 16 * 3 - 1);

        // Our own parser agrees with ourselves.
        let parsed = parse_private_key(&pair.private_openssh).unwrap();
        assert_eq!(parsed.public_openssh, pair.public_openssh);
        assert_eq!(parsed.fingerprint_sha256, pair.fingerprint_sha256);
        assert_eq!(parsed.algorithm, "ssh-ed25519");

        // Two keys are never the same, and Debug never shows the private half.
        let other = generate_ed25519("").unwrap();
        assert_ne!(other.fingerprint_sha256, pair.fingerprint_sha256);
        let debug = format!("{pair:?}");
        assert!(debug.contains("<redacted>"), "{debug}");
        assert!(!debug.contains("PRIVATE KEY"), "{debug}");
    }

    fn check_keygen_key(key_type: &str, extra: &[&str], algorithm: &str) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let path_str = path.to_str().unwrap();
        let mut args = vec![
            "-q",
            "-t",
            key_type,
            "-N",
            "",
            "-C",
            "user@host",
            "-f",
            path_str,
        ];
        args.extend_from_slice(extra);
        run(&args);
        let text = std::fs::read_to_string(&path).unwrap();
        let parsed = parse_private_key(&text).unwrap_or_else(|err| panic!("{key_type}: {err}"));
        assert_eq!(parsed.algorithm, algorithm);
        let crlf = text.replace('\n', "\r\n");
        assert_eq!(
            parse_private_key(&crlf).as_ref(),
            Ok(&parsed),
            "CRLF line endings"
        );
        let public = std::fs::read_to_string(dir.path().join("key.pub")).unwrap();
        assert_eq!(parsed.public_openssh, public.trim());
        assert_eq!(
            keygen_fingerprint(&path, "sha256"),
            parsed.fingerprint_sha256
        );
        assert_eq!(
            keygen_fingerprint(&path, "md5"),
            format!("MD5:{}", parsed.fingerprint_md5)
        );
    }

    #[test]
    fn ssh_keygen_ed25519_key_parses() {
        check_keygen_key("ed25519", &[], "ssh-ed25519");
    }

    #[test]
    fn ssh_keygen_rsa_key_parses() {
        check_keygen_key("rsa", &["-b", "2048"], "ssh-rsa");
    }

    #[test]
    fn ssh_keygen_ecdsa_key_parses() {
        check_keygen_key("ecdsa", &["-b", "256"], "ecdsa-sha2-nistp256");
    }

    #[test]
    fn passphrase_protected_key_is_refused_without_echoing_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        run(&[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "pass",
            "-f",
            path.to_str().unwrap(),
        ]);
        let text = std::fs::read_to_string(&path).unwrap();
        let err = parse_private_key(&text).unwrap_err();
        assert!(err.contains("passphrase"), "{err}");
        assert!(err.contains("ssh-keygen -p"), "{err}");
        assert_no_key_material(&err, &text);
    }

    #[test]
    fn other_formats_and_garbage_are_refused_without_echoing_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        run(&[
            "-q",
            "-t",
            "rsa",
            "-b",
            "2048",
            "-m",
            "PEM",
            "-N",
            "",
            "-f",
            path.to_str().unwrap(),
        ]);
        let pem = std::fs::read_to_string(&path).unwrap();
        let err = parse_private_key(&pem).unwrap_err();
        assert!(err.contains("PKCS#1"), "{err}");
        assert!(err.contains("ssh-keygen -p -m RFC4716"), "{err}");
        assert_no_key_material(&err, &pem);
        // The advice works: the converted key parses, with ssh-keygen's fingerprint.
        let path_str = path.to_str().unwrap();
        run(&[
            "-q", "-p", "-m", "RFC4716", "-P", "", "-N", "", "-f", path_str,
        ]);
        let converted = parse_private_key(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(
            converted.fingerprint_sha256,
            keygen_fingerprint(&path, "sha256")
        );

        let public = std::fs::read_to_string(dir.path().join("key.pub")).unwrap();
        let err = parse_private_key(&public).unwrap_err();
        assert!(err.contains("public key"), "{err}");
        assert_no_key_material(&err, &public);

        let garbage = "hunter2-secret-garbage-text";
        let err = parse_private_key(garbage).unwrap_err();
        assert!(err.starts_with("not an OpenSSH private key"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");

        // The right armour around a broken body: refused, the body not echoed.
        let broken = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAAc2VjcmV0c2VjcmV0\n-----END OPENSSH PRIVATE KEY-----\n";
        let err = parse_private_key(broken).unwrap_err();
        assert!(err.starts_with("not a valid OpenSSH private key"), "{err}");
        assert!(!err.contains("b3BlbnNzaC1rZXkt"), "{err}");

        let huge = "x".repeat(MAX_PRIVATE_KEY_LEN + 1);
        assert!(
            parse_private_key(&huge)
                .unwrap_err()
                .contains("limit of 16384")
        );
    }

    /// No line of the key's body (and no long piece of one) appears in the message.
    fn assert_no_key_material(message: &str, key: &str) {
        for line in key.lines().filter(|line| !line.starts_with("-----")) {
            for piece in line.as_bytes().chunks(12) {
                let piece = std::str::from_utf8(piece).unwrap();
                if piece.len() == 12 {
                    assert!(
                        !message.contains(piece),
                        "message echoes key material: {message}"
                    );
                }
            }
        }
    }

    #[test]
    fn known_hosts_lines_validate() {
        let pair = generate_ed25519("").unwrap();
        let key = key_fields(&pair.public_openssh);
        let text = format!(
            "# GitHub\n\n  github.com,140.82.112.3 {key}\n\
             [git.example.org]:2222\t{key}   a comment\n\
             @cert-authority *.example.org,!bad.example.org {key}\n\
             |1|F1E1KeoE/eEWhi10WpGv4OdiO6Y=|3988QV0VE8wmZL7suNrYQLITLCg= {key}\n"
        );
        let lines = parse_known_hosts(&text).unwrap();
        assert_eq!(
            lines,
            vec![
                format!("github.com,140.82.112.3 {key}"),
                format!("[git.example.org]:2222 {key} a comment"),
                format!("@cert-authority *.example.org,!bad.example.org {key}"),
                format!("|1|F1E1KeoE/eEWhi10WpGv4OdiO6Y=|3988QV0VE8wmZL7suNrYQLITLCg= {key}"),
            ]
        );

        // What ssh-keygen itself writes for a host is accepted.
        let dir = tempfile::tempdir().unwrap();
        let path = write_0600(dir.path(), "known_hosts", &format!("example.org {key}\n"));
        run(&["-H", "-f", path.to_str().unwrap()]);
        let hashed = std::fs::read_to_string(&path).unwrap();
        assert_eq!(parse_known_hosts(&hashed).unwrap().len(), 1, "{hashed}");
    }

    #[test]
    fn known_hosts_errors_name_the_line() {
        let pair = generate_ed25519("").unwrap();
        let key = key_fields(&pair.public_openssh);
        let (key_type, base64) = key.split_once(' ').unwrap();
        let cases = [
            (
                "# ok\ngithub.com\n".to_string(),
                "line 2: expected a key type after the host patterns",
            ),
            (
                format!("github.com {key_type}\n"),
                "line 1: expected a base64 key after `ssh-ed25519`",
            ),
            (
                format!("ok.org {key}\ngithub.com {key_type} AAAA!!!\n"),
                "line 2: invalid `ssh-ed25519` key",
            ),
            (
                format!("github.com ssh-rsa {base64}\n"),
                "line 1: invalid `ssh-rsa` key",
            ),
            (
                format!("\n\ngit hub.com {key}\n"),
                "line 3: unknown key type `hub.com`",
            ),
            (
                format!("git,hub.com; {key}\n"),
                "line 1: invalid host pattern `hub.com;`",
            ),
            (
                format!("a.org;rm {key}\n"),
                "line 1: invalid host pattern `a.org;rm`",
            ),
            (format!("[a.org]:x {key}\n"), "line 1: invalid port"),
            (
                format!("@revoke a.org {key}\n"),
                "line 1: unknown marker `@revoke`",
            ),
            (
                format!("|1|nope a.org {key}\n"),
                "line 1: invalid hashed host name",
            ),
        ];
        for (text, expected) in cases {
            let err = parse_known_hosts(&text).unwrap_err();
            assert!(err.starts_with(expected), "{text:?}: {err}");
        }
        let many = format!("a.org {key}\n").repeat(MAX_KNOWN_HOSTS_LINES + 1);
        assert!(parse_known_hosts(&many).unwrap_err().contains("65 lines"));
        let long = format!("# {}\n", "x".repeat(MAX_KNOWN_HOSTS_LEN));
        assert!(
            parse_known_hosts(&long)
                .unwrap_err()
                .contains("limit of 16384")
        );
        assert_eq!(
            parse_known_hosts("# only a comment\n\n").unwrap(),
            Vec::<String>::new()
        );
    }
}
