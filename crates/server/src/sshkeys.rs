//! Placeholder for the SSH key module (replaced by the `expr` branch's implementation).
#![allow(dead_code)]

pub struct KeyPair {
    pub private_openssh: String,
    pub public_openssh: String,
    pub fingerprint_sha256: String,
    pub fingerprint_md5: String,
}

pub fn generate_ed25519(_comment: &str) -> anyhow::Result<KeyPair> {
    anyhow::bail!("SSH key generation is not built yet")
}

pub struct ParsedKey {
    pub public_openssh: String,
    pub fingerprint_sha256: String,
    pub fingerprint_md5: String,
    pub algorithm: String,
}

pub fn parse_private_key(_text: &str) -> Result<ParsedKey, String> {
    Err("SSH keys are not supported yet".into())
}

pub fn parse_known_hosts(text: &str) -> Result<Vec<String>, String> {
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect())
}
