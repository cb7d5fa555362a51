//! The Rust SDK for Corral tools.
//!
//! A Corral tool is a WebAssembly component for the `corral:tool/tool-component`
//! world in `wit/`. This crate generates that world's bindings once, so a
//! tool depends on it instead of on `wit-bindgen` and the WIT files, and
//! adds the helpers every tool repeats: parsing input into a typed struct,
//! serializing output, shaping errors, and turning a workspace denial into
//! the tool error that carries the deciding policies back to the caller.
//!
//! # A whole tool
//!
//! `Cargo.toml`:
//!
//! ```toml
//! [package]
//! name = "shout"
//! version = "0.1.0"
//! edition = "2024"
//!
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! corral-tool = { git = "https://example.invalid/corral" }  # or { path = ".../wit/rust" }
//! serde = { version = "1", features = ["derive"] }
//! ```
//!
//! `src/lib.rs`:
//!
//! ```ignore
//! use corral_tool::{Guest, ToolError, ToolInfo, export_tool, no_capabilities};
//! use corral_tool::{output, parse_input, unknown_tool};
//!
//! #[derive(serde::Deserialize)]
//! struct Input { text: String }
//!
//! struct Shout;
//!
//! impl Guest for Shout {
//!     fn describe() -> Vec<ToolInfo> {
//!         vec![ToolInfo {
//!             name: "shout".into(),
//!             description: "Upper-cases its text.".into(),
//!             input_schema: r#"{"type":"object","required":["text"],
//!                 "properties":{"text":{"type":"string"}}}"#.into(),
//!             output_schema: None,
//!             capabilities: no_capabilities(),
//!         }]
//!     }
//!
//!     fn call(tool: String, input: String) -> Result<String, ToolError> {
//!         match tool.as_str() {
//!             "shout" => {
//!                 let input: Input = parse_input(&input)?;
//!                 output(&serde_json::json!({ "text": input.text.to_uppercase() }))
//!             }
//!             other => Err(unknown_tool(other)),
//!         }
//!     }
//! }
//!
//! export_tool!(Shout);
//! ```
//!
//! Build it with `corral tool build` (or `cargo build --release --target
//! wasm32-wasip2`), which also runs the check Corral makes when it loads a
//! tool; `corral tool call target/…/shout.wasm shout '{"text":"hi"}'` runs
//! it once. `corral tool new NAME --lang rust` writes this project for you.
//! The example tools in `examples/tools/` (echo, files, http-get) use this
//! crate the same way and are built in CI.
//!
//! # What a tool can reach
//!
//! Only the world's imports: [`workspace`] (each use decided by policy),
//! [`logging`], outgoing HTTP through `wasi:http` (each request decided by
//! policy; secrets as `{{secret:NAME}}` header placeholders the host fills
//! in), the wall clock and random bytes. Anything else a toolchain links
//! (files, sockets, the environment) has nothing behind it.

wit_bindgen::generate!({
    path: "..",
    world: "corral:tool/tool-component",
    pub_export_macro: true,
    export_macro_name: "export_tool",
    default_bindings_module: "corral_tool",
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
