//! `files`: read, write and list files in the agent's workspace, through
//! the host's `workspace` interface. The host decides every operation; this
//! tool only shapes input and output.
use corral_tool::workspace::{self, EntryKind};
use corral_tool::{
    Capabilities, Guest, ToolError, ToolInfo, export_tool, output, parse_input, unknown_tool,
};
use serde::{Deserialize, Serialize};

struct Files;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PathInput {
    path: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteInput {
    path: String,
    content: String,
}

#[derive(Serialize)]
struct Entry {
    name: String,
    kind: &'static str,
    size: u64,
}

fn kind_name(k: EntryKind) -> &'static str {
    match k {
        EntryKind::File => "file",
        EntryKind::Directory => "directory",
        EntryKind::Symlink => "symlink",
        EntryKind::Other => "other",
    }
}

const PATH_SCHEMA: &str = r#"{"type":"object","properties":{"path":{"type":"string","format":"workspace-path","description":"Path relative to the workspace root: single `/` between names, no `.` or `..`."}},"required":["path"],"additionalProperties":false}"#;

fn caps(read: bool, write: bool) -> Capabilities {
    Capabilities {
        http_hosts: Vec::new(),
        secrets: Vec::new(),
        workspace_read: read,
        workspace_write: write,
    }
}

impl Guest for Files {
    fn describe() -> Vec<ToolInfo> {
        vec![
            ToolInfo {
                name: "files_read".into(),
                description: "Reads a UTF-8 text file from the workspace.".into(),
                input_schema: PATH_SCHEMA.into(),
                output_schema: Some(r#"{"type":"object","properties":{"path":{"type":"string"},"content":{"type":"string"},"bytes":{"type":"integer"}}}"#.into()),
                capabilities: caps(true, false),
            },
            ToolInfo {
                name: "files_write".into(),
                description: "Creates or replaces a UTF-8 text file in the workspace.".into(),
                input_schema: r#"{"type":"object","properties":{"path":{"type":"string","format":"workspace-path","description":"Path relative to the workspace root: single `/` between names, no `.` or `..`."},"content":{"type":"string","description":"The file's new contents."}},"required":["path","content"],"additionalProperties":false}"#.into(),
                output_schema: Some(r#"{"type":"object","properties":{"path":{"type":"string"},"bytes_written":{"type":"integer"}}}"#.into()),
                capabilities: caps(false, true),
            },
            ToolInfo {
                name: "files_list".into(),
                description: "Lists a directory of the workspace (\"\" is the root).".into(),
                input_schema: PATH_SCHEMA.into(),
                output_schema: Some(r#"{"type":"object","properties":{"path":{"type":"string"},"entries":{"type":"array"}}}"#.into()),
                capabilities: caps(true, false),
            },
        ]
    }

    fn call(tool: String, input: String) -> Result<String, ToolError> {
        match tool.as_str() {
            "files_read" => {
                let PathInput { path } = parse_input(&input)?;
                let bytes = workspace::read(&path)?;
                let len = bytes.len();
                let content = String::from_utf8(bytes).map_err(|_| {
                    ToolError::Failed(format!("`{path}` is not UTF-8 text ({len} bytes)"))
                })?;
                output(&serde_json::json!({ "path": path, "content": content, "bytes": len }))
            }
            "files_write" => {
                let WriteInput { path, content } = parse_input(&input)?;
                workspace::write(&path, content.as_bytes())?;
                output(&serde_json::json!({ "path": path, "bytes_written": content.len() }))
            }
            "files_list" => {
                let PathInput { path } = parse_input(&input)?;
                let entries: Vec<Entry> = workspace::list_dir(&path)?
                    .into_iter()
                    .map(|e| Entry {
                        name: e.name,
                        kind: kind_name(e.kind),
                        size: e.size,
                    })
                    .collect();
                output(&serde_json::json!({ "path": path, "entries": entries }))
            }
            other => Err(unknown_tool(other)),
        }
    }
}

export_tool!(Files);
