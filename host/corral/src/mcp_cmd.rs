//! `corral mcp …`: talk to an agent's broker socket as the agent would,
//! with the same client the agent image carries (`corral-agent`).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use corral_agent::{Client, bridge};

use crate::shown;

#[derive(Subcommand)]
pub enum McpCmd {
    /// List the tools the agent behind SOCKET may call.
    Tools {
        /// The agent's broker socket.
        #[arg(long)]
        socket: PathBuf,
    },
    /// Bridge stdin/stdout to SOCKET, so an MCP client configured with a
    /// stdio server command talks to the broker unchanged.
    Bridge {
        #[arg(long)]
        socket: PathBuf,
    },
    /// Call one tool as the agent behind SOCKET; print its result.
    ///
    /// Exit codes: 0 success, 1 the tool failed, 3 denied, 4 invalid input
    /// or unknown tool, 5 a limit was exceeded.
    Call {
        #[arg(long)]
        socket: PathBuf,
        tool: String,
        /// The arguments, a JSON object.
        #[arg(default_value = "{}")]
        arguments: String,
    },
}

pub fn run(cmd: McpCmd) -> Result<u8> {
    match cmd {
        McpCmd::Bridge { socket } => {
            bridge(&socket, std::io::stdin(), std::io::stdout().lock())?;
            Ok(0)
        }
        McpCmd::Tools { socket } => {
            for (name, description) in Client::connect(&socket)?.list_tools()? {
                println!(
                    "{:<14} {}",
                    shown::inline(&name),
                    shown::inline(&description)
                );
            }
            Ok(0)
        }
        McpCmd::Call {
            socket,
            tool,
            arguments,
        } => {
            let args: serde_json::Value = serde_json::from_str(&arguments)
                .with_context(|| format!("the arguments for `{tool}` are not JSON"))?;
            if !args.is_object() {
                bail!("the arguments for `{tool}` must be a JSON object, got {args}");
            }
            let result = Client::connect(&socket)?.call_tool(&tool, args)?;
            if result.is_error {
                eprintln!("{}", shown::block(&result.text));
            } else {
                println!("{}", shown::block(&result.text));
            }
            Ok(result.exit_code())
        }
    }
}
