//! `echo`: returns its input unchanged. The smallest useful tool, and the
//! one every benchmark of the call path uses.
use corral_tool::{Guest, ToolError, ToolInfo, export_tool, no_capabilities, unknown_tool};

/// The tool's name: `echo`, unless the build sets `CORRAL_ECHO_NAME`, as
/// the registry benchmark does to get ten distinct components.
const NAME: &str = match option_env!("CORRAL_ECHO_NAME") {
    Some(name) => name,
    None => "echo",
};

struct Echo;

impl Guest for Echo {
    fn describe() -> Vec<ToolInfo> {
        vec![ToolInfo {
            name: NAME.into(),
            description: "Returns its input unchanged.".into(),
            input_schema: r#"{"type":"object","properties":{"message":{"type":"string","description":"Text to echo back."}},"additionalProperties":true}"#.into(),
            output_schema: Some(r#"{"type":"object"}"#.into()),
            capabilities: no_capabilities(),
        }]
    }

    fn call(tool: String, input: String) -> Result<String, ToolError> {
        match tool.as_str() {
            t if t == NAME => Ok(input),
            other => Err(unknown_tool(other)),
        }
    }
}

export_tool!(Echo);
