//! `echo`: returns its input unchanged. The smallest useful tool, and the
//! one every benchmark of the call path uses.
use corral_tool::{Guest, ToolError, ToolInfo, export_tool, no_capabilities, unknown_tool};

struct Echo;

impl Guest for Echo {
    fn describe() -> Vec<ToolInfo> {
        vec![ToolInfo {
            name: "echo".into(),
            description: "Returns its input unchanged.".into(),
            input_schema: r#"{"type":"object","properties":{"message":{"type":"string","description":"Text to echo back."}},"additionalProperties":true}"#.into(),
            output_schema: Some(r#"{"type":"object"}"#.into()),
            capabilities: no_capabilities(),
        }]
    }

    fn call(tool: String, input: String) -> Result<String, ToolError> {
        match tool.as_str() {
            "echo" => Ok(input),
            other => Err(unknown_tool(other)),
        }
    }
}

export_tool!(Echo);
