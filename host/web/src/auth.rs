//! The bearer token a non-loopback listener requires: read from a file
//! only its owner may read, or from an environment variable, and compared
//! in constant time.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use sha2::{Digest, Sha256};

/// A token too short to resist guessing is refused.
const MIN_TOKEN_LEN: usize = 16;

/// The token requests must bear (`Authorization: Bearer …`).
#[derive(Clone)]
pub struct Token {
    /// Only the digest is kept: comparing digests takes the same time
    /// whatever the presented token's length or first wrong byte.
    digest: [u8; 32],
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token([hidden])")
    }
}

/// Why a token could not be had.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TokenError(String);

impl Token {
    /// The token in `value`, trimmed of surrounding white space.
    pub fn new(value: &str, source: &str) -> Result<Token, TokenError> {
        let value = value.trim();
        if value.len() < MIN_TOKEN_LEN {
            return Err(TokenError(format!(
                "{source}: the token has {} characters; use at least {MIN_TOKEN_LEN} (e.g. `openssl rand -hex 32`)",
                value.len()
            )));
        }
        Ok(Token {
            digest: Sha256::digest(value.as_bytes()).into(),
        })
    }

    /// The token in `path`, which must be a regular file of mode 0600 or
    /// stricter: anyone else who can read it could use it.
    pub fn from_file(path: &Path) -> Result<Token, TokenError> {
        let shown = path.display();
        let meta =
            std::fs::metadata(path).map_err(|e| TokenError(format!("token file {shown}: {e}")))?;
        if !meta.is_file() {
            return Err(TokenError(format!("token file {shown} is not a file")));
        }
        if meta.mode() & 0o077 != 0 {
            return Err(TokenError(format!(
                "token file {shown} has mode {:o}; others could read it: run `chmod 600 {shown}`",
                meta.mode() & 0o777
            )));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| TokenError(format!("token file {shown}: {e}")))?;
        Token::new(&text, &format!("token file {shown}"))
    }

    /// Whether `presented` is this token.
    pub fn matches(&self, presented: &str) -> bool {
        let other: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        self.digest
            .iter()
            .zip(other)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_token_matches_only_itself() {
        let t = Token::new("0123456789abcdef0123\n", "test").unwrap();
        assert!(t.matches("0123456789abcdef0123"));
        assert!(!t.matches("0123456789abcdef012"));
        assert!(!t.matches(""));
        assert!(Token::new("short", "test").is_err());
        assert_eq!(format!("{t:?}"), "Token([hidden])");
    }

    #[test]
    fn a_token_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "0123456789abcdef0123").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Token::from_file(&path).unwrap_err().to_string();
        assert!(e.contains("mode 644") && e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(
            Token::from_file(&path)
                .unwrap()
                .matches("0123456789abcdef0123")
        );
    }
}
