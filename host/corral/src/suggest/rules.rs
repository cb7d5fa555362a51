//! The rules that turn the values one argument was seen with into a
//! Cedar condition, as a person would write it: a path to the folders it
//! was seen under, a URL to its origins, a few values to their set, many
//! integers to their range; and, for the observed envelope, a field held
//! to exactly what was seen. A value left unconstrained always carries a
//! note saying why.

use std::collections::BTreeSet;

use serde_json::Value;

/// A set of exact values is written out when it has at most this many.
const MAX_EXACT: usize = 5;
/// Paths are generalized to at most this many top folders.
const MAX_FOLDERS: usize = 4;
/// Fields that carry free-form payload, not a choice a policy makes.
const FREE_FORM: [&str; 6] = ["content", "body", "message", "text", "data", "query"];
/// Facts the host resolved, not choices the agent made: the address a
/// host name resolved to changes with DNS, and the host already scopes it.
const RESOLVED: [&str; 1] = ["address"];

/// One constraint and why it is as it is.
pub(super) struct Constraint {
    pub(super) cedar: Option<String>,
    pub(super) note: Option<String>,
}

pub(super) fn quote(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

fn like_literal(s: &str) -> String {
    // `*` is the wildcard in `like`; a literal one is written `\*`.
    let escaped = s
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('*', "\\*");
    format!("\"{escaped}")
}

/// `cond` on attribute `expr`, guarded by `has` so that it validates
/// whether or not the schema makes the attribute optional: an attribute
/// seen in only some records may be absent, one seen in all must be there.
fn guarded(field: &str, expr: &str, optional: bool, cond: String) -> String {
    let (parent, attr) = expr.rsplit_once('.').unwrap_or(("context", field));
    if optional {
        format!("(!({parent} has {attr}) || {cond})")
    } else {
        format!("({parent} has {attr} && {cond})")
    }
}

/// The constraint on `expr` (Cedar text) from the values seen.
pub(super) fn constrain(field: &str, expr: &str, values: &[Option<Value>]) -> Constraint {
    let present: Vec<&Value> = values.iter().flatten().collect();
    let optional = present.len() < values.len();
    let wrap = |cond: String| guarded(field, expr, optional, cond);
    let dropped = |why: String| Constraint {
        cedar: None,
        note: Some(format!("{field}: {why}; left unconstrained, review it")),
    };
    if present.is_empty() {
        return Constraint {
            cedar: None,
            note: None,
        };
    }
    if FREE_FORM.contains(&field) {
        return Constraint {
            cedar: None,
            note: Some(format!("{field}: free-form content, left unconstrained")),
        };
    }
    if RESOLVED.contains(&field) {
        return Constraint {
            cedar: None,
            note: Some(format!(
                "{field}: resolved by the host, not chosen by the agent; the resource scopes it"
            )),
        };
    }
    if let Some(strings) = present
        .iter()
        .map(|v| v.as_str())
        .collect::<Option<Vec<&str>>>()
    {
        if strings
            .iter()
            .any(|s| s.contains("[redacted]") || s.starts_with("[") && s.contains("bytes"))
        {
            return dropped("some values were redacted in the log".into());
        }
        let distinct: BTreeSet<&str> = strings.iter().copied().collect();
        if let Some(origins) = url_origins(&strings).filter(|o| o.len() <= MAX_FOLDERS) {
            return Constraint {
                cedar: Some(wrap(under_any(expr, &origins))),
                note: Some(format!(
                    "{field}: {} URL(s) at {} origin(s), generalized to any path there",
                    distinct.len(),
                    origins.len()
                )),
            };
        }
        let pathlike = field.contains("path") || strings.iter().all(|s| s.contains('/'));
        if pathlike && strings.iter().all(|s| s.contains('/')) {
            let folders: BTreeSet<&str> = strings
                .iter()
                .filter_map(|s| s.split_once('/').map(|(first, _)| first))
                .collect();
            if folders.len() <= MAX_FOLDERS && folders.iter().all(|f| !f.is_empty()) {
                return Constraint {
                    cedar: Some(wrap(under_any(expr, &folders))),
                    note: Some(format!(
                        "{field}: {} value(s) under {} folder(s), generalized to those folders",
                        distinct.len(),
                        folders.len()
                    )),
                };
            }
        }
        if distinct.len() <= MAX_EXACT {
            let set: Vec<String> = distinct.iter().map(|s| quote(s)).collect();
            return Constraint {
                cedar: Some(wrap(format!("[{}].contains({expr})", set.join(", ")))),
                note: None,
            };
        }
        return dropped(format!(
            "{} distinct values with no common folder",
            distinct.len()
        ));
    }
    if let Some(numbers) = present
        .iter()
        .map(|v| v.as_i64())
        .collect::<Option<Vec<i64>>>()
    {
        let distinct: BTreeSet<i64> = numbers.iter().copied().collect();
        if distinct.len() <= MAX_EXACT {
            let set: Vec<String> = distinct.iter().map(i64::to_string).collect();
            return Constraint {
                cedar: Some(wrap(format!("[{}].contains({expr})", set.join(", ")))),
                note: None,
            };
        }
        let (lo, hi) = (distinct.first().copied(), distinct.last().copied());
        if let (Some(lo), Some(hi)) = (lo, hi) {
            return Constraint {
                cedar: Some(wrap(format!("{expr} >= {lo} && {expr} <= {hi}"))),
                note: Some(format!(
                    "{field}: {} distinct values, generalized to their range",
                    distinct.len()
                )),
            };
        }
    }
    if let Some(bools) = present
        .iter()
        .map(|v| v.as_bool())
        .collect::<Option<Vec<bool>>>()
    {
        let distinct: BTreeSet<bool> = bools.into_iter().collect();
        if distinct.len() == 1 {
            let b = distinct.first().copied().unwrap_or(false);
            return Constraint {
                cedar: Some(wrap(format!("{expr} == {b}"))),
                note: None,
            };
        }
        return Constraint {
            cedar: None,
            note: None,
        };
    }
    dropped("values are not strings, integers or booleans".into())
}

/// `expr` under any of `prefixes`: `(expr like "p/*" || …)`.
fn under_any(expr: &str, prefixes: &BTreeSet<&str>) -> String {
    let parts: Vec<String> = prefixes
        .iter()
        .map(|p| format!("{expr} like {}/*\"", like_literal(p)))
        .collect();
    format!("({})", parts.join(" || "))
}

/// The origins (`scheme://authority`) of `strings` when every one is an
/// absolute URL with a path: `like "origin/*"` then allows any path there
/// and no other host (`origin*` would allow `origin.evil.example`).
fn url_origins<'s>(strings: &[&'s str]) -> Option<BTreeSet<&'s str>> {
    strings
        .iter()
        .map(|s| {
            let (scheme, rest) = s.split_once("://")?;
            if scheme.is_empty()
                || !scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
            {
                return None;
            }
            let authority = rest.find(['/', '?', '#'])?;
            (authority > 0 && rest[authority..].starts_with('/'))
                .then(|| &s[..scheme.len() + 3 + authority])
        })
        .collect()
}

/// A field held to exactly the values seen, for the observed envelope.
pub(super) fn exactly(field: &str, expr: &str, values: &[Option<Value>]) -> Constraint {
    if RESOLVED.contains(&field) {
        return Constraint {
            cedar: None,
            note: None,
        };
    }
    let present: Vec<&Value> = values.iter().flatten().collect();
    let optional = present.len() < values.len();
    let literals: Option<BTreeSet<String>> = present
        .iter()
        .map(|v| match v {
            Value::String(s) => Some(quote(s)),
            Value::Number(n) => n.as_i64().map(|i| i.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        })
        .collect();
    match literals {
        Some(set) if !set.is_empty() => {
            let list: Vec<String> = set.into_iter().collect();
            let cond = format!("[{}].contains({expr})", list.join(", "));
            Constraint {
                cedar: Some(guarded(field, expr, optional, cond)),
                note: None,
            }
        }
        _ => Constraint {
            cedar: None,
            note: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn seen(values: &[Value]) -> Vec<Option<Value>> {
        values.iter().cloned().map(Some).collect()
    }

    #[test]
    fn paths_generalize_to_their_folders_and_few_values_to_their_set() {
        let c = constrain(
            "path",
            "context.input.path",
            &seen(&[json!("notes/a"), json!("docs/b"), json!("docs/c/d")]),
        );
        assert_eq!(
            c.cedar.as_deref(),
            Some(
                r#"(context.input has path && (context.input.path like "docs/*" || context.input.path like "notes/*"))"#
            )
        );
        let c = constrain(
            "method",
            "context.method",
            &seen(&[json!("GET"), json!("GET")]),
        );
        assert_eq!(
            c.cedar.as_deref(),
            Some(r#"(context has method && ["GET"].contains(context.method))"#)
        );
        let ports: Vec<Value> = (0..8).map(|p| json!(8000 + p)).collect();
        let c = constrain("port", "context.port", &seen(&ports));
        assert!(
            c.cedar
                .as_deref()
                .is_some_and(|t| t.contains(">= 8000") && t.contains("<= 8007")),
            "{:?}",
            c.cedar
        );
    }

    #[test]
    fn nothing_is_widened_to_any_without_a_note() {
        let many: Vec<Value> = (0..9).map(|i| json!(format!("q{i}"))).collect();
        let c = constrain("topic", "context.input.topic", &seen(&many));
        assert!(c.cedar.is_none());
        assert!(c.note.is_some_and(|n| n.contains("left unconstrained")));
        let c = constrain(
            "token",
            "context.input.token",
            &seen(&[json!("[redacted]")]),
        );
        assert!(c.cedar.is_none() && c.note.is_some_and(|n| n.contains("redacted")));
        let c = constrain("content", "context.input.content", &seen(&[json!("x")]));
        assert!(c.cedar.is_none() && c.note.is_some_and(|n| n.contains("free-form")));
    }

    #[test]
    fn urls_generalize_to_their_origins_and_addresses_are_left_to_the_host() {
        let c = constrain(
            "url",
            "context.input.url",
            &seen(&[
                json!("http://127.0.0.1:8080/a?x=1"),
                json!("http://127.0.0.1:8080/b"),
                json!("https://api.github.com/repos"),
            ]),
        );
        assert_eq!(
            c.cedar.as_deref(),
            Some(
                r#"(context.input has url && (context.input.url like "http://127.0.0.1:8080/*" || context.input.url like "https://api.github.com/*"))"#
            )
        );
        // A URL with no path is not an origin to widen from.
        assert!(url_origins(&["https://h.example", "https://h.example/x"]).is_none());
        let c = constrain("address", "context.address", &seen(&[json!("127.0.0.1")]));
        assert!(c.cedar.is_none() && c.note.is_some_and(|n| n.contains("resolved by the host")));
    }

    #[test]
    fn a_field_seen_only_sometimes_may_be_absent() {
        let c = constrain("mode", "context.input.mode", &[Some(json!("fast")), None]);
        assert_eq!(
            c.cedar.as_deref(),
            Some(r#"(!(context.input has mode) || ["fast"].contains(context.input.mode))"#)
        );
    }
}
