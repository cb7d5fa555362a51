//! The host's copy of a tool's self-description, and the rules it must
//! follow to be loaded.

use serde::Serialize;

use crate::bindings::types as wit;
use crate::error::LoadError;

/// What a tool may ask the host for (declared, not granted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// Hosts it may send HTTP requests to.
    pub http_hosts: Vec<String>,
    /// Secrets it may place into requests.
    pub secrets: Vec<String>,
    /// Whether it reads the workspace.
    pub workspace_read: bool,
    /// Whether it writes the workspace.
    pub workspace_write: bool,
}

/// One tool as `describe` reported it, with its schemas parsed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolInfo {
    /// The tool's name, its Cedar action's id.
    pub name: String,
    /// What it does, for models and policy authors.
    pub description: String,
    /// The JSON Schema of its input.
    pub input_schema: serde_json::Value,
    /// The JSON Schema of its output, if it gives one.
    pub output_schema: Option<serde_json::Value>,
    /// What it declares it may ask for.
    pub capabilities: Capabilities,
    /// Kept as written so errors can quote it if it fails to parse.
    #[serde(skip)]
    raw_input_schema: String,
    #[serde(skip)]
    raw_output_schema: Option<String>,
}

impl From<wit::ToolInfo> for ToolInfo {
    fn from(t: wit::ToolInfo) -> Self {
        ToolInfo {
            input_schema: serde_json::from_str(&t.input_schema).unwrap_or(serde_json::Value::Null),
            output_schema: t
                .output_schema
                .as_deref()
                .map(|s| serde_json::from_str(s).unwrap_or(serde_json::Value::Null)),
            name: t.name,
            description: t.description,
            capabilities: Capabilities {
                http_hosts: t.capabilities.http_hosts,
                secrets: t.capabilities.secrets,
                workspace_read: t.capabilities.workspace_read,
                workspace_write: t.capabilities.workspace_write,
            },
            raw_input_schema: t.input_schema,
            raw_output_schema: t.output_schema,
        }
    }
}

/// The longest tool name.
pub const MAX_TOOL_NAME: usize = 64;

/// Why a tool name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadToolName(pub String);

/// Tool names become Cedar action ids, MCP tool names and CLI arguments,
/// so they stay in a conservative alphabet.
pub fn check_tool_name(name: &str) -> Result<(), BadToolName> {
    let mut chars = name.chars();
    match chars.next() {
        None => return Err(BadToolName("the name is empty".into())),
        Some(c) if !c.is_ascii_lowercase() => {
            return Err(BadToolName(
                "the name must start with a lowercase letter".into(),
            ));
        }
        _ => {}
    }
    if name.len() > MAX_TOOL_NAME {
        return Err(BadToolName(format!(
            "the name is longer than {MAX_TOOL_NAME} characters"
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-'))
    {
        return Err(BadToolName(format!(
            "the name contains `{c}`; use lowercase letters, digits, `_` and `-`"
        )));
    }
    Ok(())
}

pub(crate) fn validate_tool_info(info: &ToolInfo) -> Result<(), LoadError> {
    let bad = |problem: String| LoadError::BadToolInfo {
        tool: info.name.clone(),
        problem,
    };
    check_tool_name(&info.name).map_err(|e| bad(e.0))?;
    if info.description.trim().is_empty() {
        return Err(bad(
            "the description is empty; models and policy authors need it".into(),
        ));
    }
    match serde_json::from_str::<serde_json::Value>(&info.raw_input_schema) {
        Ok(serde_json::Value::Object(o)) => {
            if o.get("type").and_then(|t| t.as_str()) != Some("object") {
                return Err(bad("the input schema must have \"type\": \"object\"".into()));
            }
        }
        Ok(_) => return Err(bad("the input schema is not a JSON object".into())),
        Err(e) => return Err(bad(format!("the input schema is not valid JSON: {e}"))),
    }
    if let Some(raw) = &info.raw_output_schema
        && let Err(e) = serde_json::from_str::<serde_json::Value>(raw)
    {
        return Err(bad(format!("the output schema is not valid JSON: {e}")));
    }
    for s in &info.capabilities.secrets {
        if s.is_empty()
            || !s
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(bad(format!(
                "secret name `{s}` must be letters, digits, `_` or `-`"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_tool_name;

    #[test]
    fn tool_names() {
        for ok in ["echo", "files_read", "http-get", "a1"] {
            assert!(check_tool_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Echo", "1x", "a b", "a.b", "é", &"a".repeat(65)] {
            assert!(check_tool_name(bad).is_err(), "{bad}");
        }
    }
}
