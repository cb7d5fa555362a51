//! Bindings for the `corral:tool@0.1.0` world, generated once here so that
//! every Rust tool shares them, plus helpers for the boilerplate every tool
//! repeats (parsing input, shaping errors).
//!
//! A tool implements [`Guest`] and calls [`export_tool!`]:
//!
//! ```ignore
//! struct Echo;
//! impl corral_tool_sdk::Guest for Echo { /* describe, call */ }
//! corral_tool_sdk::export_tool!(Echo);
//! ```

wit_bindgen::generate!({
    path: "../../../wit",
    world: "corral:tool/tool-component",
    pub_export_macro: true,
    export_macro_name: "export_tool",
    default_bindings_module: "corral_tool_sdk",
    generate_all,
});

pub use corral::tool::types::{Capabilities, Denial, ToolError, ToolInfo};
pub use corral::tool::{logging, workspace};
pub use exports::corral::tool::tool::Guest;

use serde::de::DeserializeOwned;

/// Parses a call's input into `T`, turning a mismatch into the
/// `invalid-input` error that names the problem.
pub fn parse_input<T: DeserializeOwned>(input: &str) -> Result<T, ToolError> {
    serde_json::from_str(input).map_err(|e| ToolError::InvalidInput(format!("input: {e}")))
}

/// Serializes a tool's output.
pub fn output<T: serde::Serialize>(value: &T) -> Result<String, ToolError> {
    serde_json::to_string(value).map_err(|e| ToolError::Failed(format!("serializing output: {e}")))
}

/// A tool error for a call naming a tool this component does not offer.
pub fn unknown_tool(tool: &str) -> ToolError {
    ToolError::InvalidInput(format!("this component offers no tool named `{tool}`"))
}

/// Capabilities for a tool that asks the host for nothing.
pub fn no_capabilities() -> Capabilities {
    Capabilities {
        http_hosts: Vec::new(),
        secrets: Vec::new(),
        workspace_read: false,
        workspace_write: false,
    }
}

/// Maps a workspace error into the tool error the caller should see,
/// keeping a denial's reason and policy ids intact.
impl From<workspace::FsError> for ToolError {
    fn from(e: workspace::FsError) -> Self {
        use workspace::FsError as E;
        match e {
            E::Denied(d) => ToolError::Denied(d),
            E::InvalidPath(m) => ToolError::InvalidInput(format!("invalid path: {m}")),
            E::NotFound(m) => ToolError::Failed(format!("not found: {m}")),
            E::WrongKind(m) => ToolError::Failed(m),
            E::TooLarge(n) => ToolError::Failed(format!("file too large: {n} bytes")),
            E::Io(m) => ToolError::Failed(format!("I/O error: {m}")),
        }
    }
}
