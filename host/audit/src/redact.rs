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
            key_patterns: corral_gate::redaction::SECRET_KEY_PATTERNS
                .map(String::from)
                .to_vec(),
            max_string_bytes: corral_gate::redaction::MAX_STRING_BYTES,
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

    /// The redacted JSON text, and whether anything changed. Most
    /// arguments have nothing to redact: they are serialized as they are,
    /// without a redacted copy.
    pub fn redact_to_string(&self, value: &Value) -> (String, bool) {
        if self.changes(value, false) {
            (self.redact(value).0.to_string(), true)
        } else {
            (value.to_string(), false)
        }
    }

    /// Whether [`Self::redact`] would change `value`.
    fn changes(&self, value: &Value, sensitive: bool) -> bool {
        match value {
            Value::String(s) => sensitive || s.len() > self.max_string_bytes,
            Value::Array(items) => items.iter().any(|v| self.changes(v, sensitive)),
            Value::Object(map) => map
                .iter()
                .any(|(k, v)| self.changes(v, sensitive || self.is_sensitive_key(k))),
            _ => false,
        }
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

    /// Whether `key` contains a pattern, ignoring ASCII case (patterns
    /// are lower-case; a pattern with other letters matches as it is).
    fn is_sensitive_key(&self, key: &str) -> bool {
        corral_gate::redaction::matches_any(key, &self.key_patterns)
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

    /// The text form redacts exactly as the value form, and says so.
    #[test]
    fn the_text_form_agrees_with_the_value_form() {
        let r = Redactor {
            max_string_bytes: 8,
            ..Redactor::default()
        };
        for v in [
            json!({"path": "a.txt"}),
            json!({"path": "a.txt", "n": 3, "ok": true, "x": null}),
            json!({"API_Token": "hunter2"}),
            json!({"xSECRETx": 5}),
            json!({"auth": {"Password": ["p1", 2]}}),
            json!({"body": "0123456789"}),
            json!([{"deep": [{"cookie": "c"}]}]),
            json!("0123456789"),
        ] {
            let (value, changed) = r.redact(&v);
            assert_eq!(r.redact_to_string(&v), (value.to_string(), changed), "{v}");
        }
    }
}
