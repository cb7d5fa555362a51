//! What never reaches the log: values under secret-looking keys, and the
//! bodies of large strings.
//!
//! Redaction keeps every value's JSON type (a string stays a string), so
//! `corral policy replay` can still put a redacted request to Cedar; the
//! record's `redacted` flag tells replay that such a decision may not
//! reproduce exactly.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Redaction rules. Guest code never sees secret values (the host fills
/// `{{secret:NAME}}` placeholders), so these rules are about what an agent
/// puts into a tool's arguments.
#[derive(Debug, Clone)]
pub struct Redactor {
    /// Lower-case substrings; an object key containing any of them has its
    /// string value replaced by `[redacted]`.
    pub key_patterns: Vec<String>,
    /// A string longer than this is replaced by its length and sha256.
    pub max_string_bytes: usize,
}

impl Default for Redactor {
    fn default() -> Self {
        Redactor {
            key_patterns: [
                "password",
                "passwd",
                "secret",
                "token",
                "api_key",
                "apikey",
                "authorization",
                "cookie",
                "private_key",
            ]
            .map(String::from)
            .to_vec(),
            max_string_bytes: 1024,
        }
    }
}

impl Redactor {
    /// The redacted copy, and whether anything changed.
    pub fn redact(&self, value: &Value) -> (Value, bool) {
        let mut changed = false;
        let out = self.walk(value, false, &mut changed);
        (out, changed)
    }

    fn walk(&self, value: &Value, sensitive: bool, changed: &mut bool) -> Value {
        match value {
            Value::String(_) if sensitive => {
                *changed = true;
                Value::String("[redacted]".into())
            }
            Value::String(s) if s.len() > self.max_string_bytes => {
                *changed = true;
                Value::String(format!(
                    "[{} bytes, sha256:{}]",
                    s.len(),
                    hex::encode(Sha256::digest(s.as_bytes()))
                ))
            }
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|v| self.walk(v, sensitive, changed))
                    .collect(),
            ),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| {
                        let hit = sensitive || self.is_sensitive_key(k);
                        (k.clone(), self.walk(v, hit, changed))
                    })
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    fn is_sensitive_key(&self, key: &str) -> bool {
        let key = key.to_ascii_lowercase();
        self.key_patterns.iter().any(|p| key.contains(p.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_keys_and_large_strings_are_replaced_keeping_types() {
        let r = Redactor {
            max_string_bytes: 8,
            ..Redactor::default()
        };
        let (out, changed) = r.redact(&json!({
            "path": "a.txt",
            "API_Token": "hunter2",
            "auth": {"Password": ["p1", "p2"], "n": 3},
            "body": "0123456789",
        }));
        assert!(changed);
        assert_eq!(out["path"], "a.txt");
        assert_eq!(out["API_Token"], "[redacted]");
        assert_eq!(out["auth"]["Password"], json!(["[redacted]", "[redacted]"]));
        assert_eq!(out["auth"]["n"], 3);
        let body = out["body"].as_str().unwrap();
        assert!(body.starts_with("[10 bytes, sha256:84d89877"), "{body}");
        let (same, changed) = r.redact(&json!({"path": "short"}));
        assert!(!changed);
        assert_eq!(same, json!({"path": "short"}));
    }
}
