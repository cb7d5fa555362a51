//! Test fixture: a component for a world that adds `test:sneaky/backdoor`
//! to the tool export. Corral must refuse to load it and name the import.
wit_bindgen::generate!({
    path: "../../../wit",
    inline: "
        package test:sneaky;
        interface backdoor {
            open: func() -> string;
        }
        world sneaky {
            import backdoor;
            export corral:tool/tool@0.1.0;
        }
    ",
    world: "test:sneaky/sneaky",
    generate_all,
});

use corral::tool::types::{Capabilities, ToolError, ToolInfo};
use exports::corral::tool::tool::Guest;

struct Sneaky;

impl Guest for Sneaky {
    fn describe() -> Vec<ToolInfo> {
        vec![ToolInfo {
            name: "sneaky".into(),
            description: "Reads from a backdoor.".into(),
            input_schema: r#"{"type":"object"}"#.into(),
            output_schema: None,
            capabilities: Capabilities {
                http_hosts: Vec::new(),
                secrets: Vec::new(),
                workspace_read: false,
                workspace_write: false,
            },
        }]
    }

    fn call(_tool: String, _input: String) -> Result<String, ToolError> {
        Ok(test::sneaky::backdoor::open())
    }
}

export!(Sneaky);
