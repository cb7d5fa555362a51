//! Loading a policy directory: every `.cedar` file, every statement with an
//! `@id`, strict validation against the combined schema; every error names
//! file, line and column.

use std::fmt;
use std::path::{Path, PathBuf};

use cedar_policy::{Schema, SchemaFragment};
use miette::Diagnostic;
use serde_json::{Value, json};

use crate::schema::ToolAction;

/// A place in a policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// One problem found while loading policies or the schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where, when it is in a file.
    pub location: Option<Location>,
    /// The policy it concerns, if one.
    pub policy_id: Option<String>,
    /// What is wrong.
    pub message: String,
    /// How to fix it, when Cedar or Corral knows.
    pub help: Option<String>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(l) = &self.location {
            write!(f, "{l}: ")?;
        }
        if let Some(id) = &self.policy_id {
            write!(f, "policy `{id}`: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(h) = &self.help {
            write!(f, " (help: {h})")?;
        }
        Ok(())
    }
}

/// Loading failed; every problem found is listed, not just the first.
#[derive(Debug, Clone, thiserror::Error)]
pub struct LoadErrors(pub Vec<Problem>);

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Where a policy came from, kept for error messages and `explain`.
#[derive(Debug, Clone)]
pub struct Origin {
    pub file: PathBuf,
    /// Byte offset of the statement in the file.
    offset: usize,
    /// The file's text, shared by every statement of the file.
    text: std::sync::Arc<str>,
}

impl Origin {
    pub(crate) fn new(file: PathBuf, offset: usize, text: std::sync::Arc<str>) -> Origin {
        Origin { file, offset, text }
    }

    fn location(&self, offset_in_statement: usize) -> Location {
        let at = (self.offset + offset_in_statement).min(self.text.len());
        let before = &self.text[..at];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        Location {
            file: self.file.clone(),
            line,
            column,
        }
    }

    pub fn start(&self) -> Location {
        self.location(0)
    }
}

/// The schema: the base file plus the fragment of every registered tool.
#[derive(Debug, Clone)]
pub struct CombinedSchema {
    /// Cedar's schema.
    pub schema: Schema,
    /// The text `corral policy schema` prints.
    pub text: String,
}

impl CombinedSchema {
    /// The base schema from `base_file` plus each tool's action and input type.
    pub fn build(base_file: &Path, tools: &[ToolAction]) -> Result<Self, LoadErrors> {
        let base = std::fs::read_to_string(base_file).map_err(|e| {
            LoadErrors(vec![Problem {
                location: None,
                policy_id: None,
                message: format!("cannot read schema {}: {e}", base_file.display()),
                help: None,
            }])
        })?;
        Self::from_text(base_file, &base, tools)
    }

    /// The same from the base schema's text, for tests and `corral policy` tooling.
    pub fn from_text(
        base_file: &Path,
        base: &str,
        tools: &[ToolAction],
    ) -> Result<Self, LoadErrors> {
        let origin = Origin {
            file: base_file.to_path_buf(),
            offset: 0,
            text: base.into(),
        };
        // Cedar's JSON schema form is accepted as the Cedar CLI accepts it;
        // `corral policy schema` prints it back in the text form.
        let json_form = base_file.extension().is_some_and(|x| x == "json")
            || base.trim_start().starts_with('{');
        let (base_fragment, base_text) = if json_form {
            let fragment = SchemaFragment::from_json_str(base)
                .map_err(|e| LoadErrors(vec![diagnostic_problem(&e, &origin, None)]))?;
            let text = fragment.to_cedarschema().map_err(|e| {
                LoadErrors(vec![Problem {
                    location: None,
                    policy_id: None,
                    message: format!(
                        "{}: cannot print as Cedar schema text: {e}",
                        base_file.display()
                    ),
                    help: None,
                }])
            })?;
            (fragment, text)
        } else {
            let (fragment, _) = SchemaFragment::from_cedarschema_str(base)
                .map_err(|e| LoadErrors(vec![diagnostic_problem(&e, &origin, None)]))?;
            (fragment, base.to_string())
        };
        let mut fragments = vec![base_fragment];
        let mut text = base_text.trim_end().to_string();
        text.push_str("\n\n// ---- generated from the registered tools ----\n");
        for tool in tools {
            let fragment_text = tool.cedarschema();
            let tool_origin = Origin {
                file: PathBuf::from(format!("<tool {}>", tool.name)),
                offset: 0,
                text: fragment_text.as_str().into(),
            };
            let (fragment, _) = SchemaFragment::from_cedarschema_str(&fragment_text)
                .map_err(|e| LoadErrors(vec![diagnostic_problem(&e, &tool_origin, None)]))?;
            fragments.push(fragment);
            text.push('\n');
            text.push_str(&fragment_text);
        }
        let schema = Schema::from_schema_fragments(fragments)
            .map_err(|e| LoadErrors(vec![diagnostic_problem(&e, &origin, None)]))?;
        Ok(CombinedSchema { schema, text })
    }
}

pub(crate) fn diagnostic_problem(
    e: &(dyn Diagnostic + Send + Sync + 'static),
    origin: &Origin,
    policy_id: Option<String>,
) -> Problem {
    let offset = e.labels().and_then(|mut l| l.next()).map(|l| l.offset());
    // Parse errors carry their detail in related diagnostics.
    let mut message = e.to_string();
    if let Some(related) = e.related() {
        for r in related {
            message.push_str("; ");
            message.push_str(&r.to_string());
        }
    }
    let offset = offset.or_else(|| {
        e.related().and_then(|mut r| {
            r.find_map(|d| d.labels().and_then(|mut l| l.next()).map(|l| l.offset()))
        })
    });
    Problem {
        location: Some(origin.location(offset.unwrap_or(0))),
        policy_id,
        message,
        help: e.help().map(|h| h.to_string()),
    }
}

/// Splits Cedar text into statements at top-level `;`, skipping strings
/// and `//` comments, and returns each with its byte offset (at its first
/// significant character, so locations point at the statement itself).
pub fn split_statements(text: &str) -> Vec<(usize, &str)> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'"' => {
                start.get_or_insert(i);
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b';' => {
                if let Some(s) = start.take() {
                    out.push((s, &text[s..=i]));
                }
            }
            c if c.is_ascii_whitespace() => {}
            _ => {
                start.get_or_insert(i);
            }
        }
        i += 1;
    }
    if let Some(s) = start {
        // A trailing statement without `;`: let the parser say so.
        out.push((s, &text[s..]));
    }
    out
}

/// Reads the entities file, if any; a missing file means no entities.
pub fn read_entities(path: &Path) -> Result<Value, LoadErrors> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| {
            LoadErrors(vec![Problem {
                location: Some(Location {
                    file: path.to_path_buf(),
                    line: e.line(),
                    column: e.column(),
                }),
                policy_id: None,
                message: format!("entities file is not valid JSON: {e}"),
                help: None,
            }])
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(json!([])),
        Err(e) => Err(LoadErrors(vec![Problem {
            location: None,
            policy_id: None,
            message: format!("cannot read {}: {e}", path.display()),
            help: None,
        }])),
    }
}

#[cfg(test)]
mod tests {
    use super::split_statements;

    #[test]
    fn splits_around_strings_and_comments() {
        let text = "// a; comment\n@id(\"a;b\")\npermit(principal, action, resource);\n\n  forbid(principal, action, resource) when { context.x like \"*;*\" };\n";
        let parts = split_statements(text);
        assert_eq!(parts.len(), 2);
        assert!(parts[0].1.starts_with("@id(\"a;b\")"));
        assert!(parts[1].1.starts_with("forbid"));
        assert!(parts[1].1.ends_with("};"));
    }
}
