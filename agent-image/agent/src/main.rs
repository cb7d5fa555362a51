//! `corral-agent`: the one program in the default agent image.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use corral_agent::{Client, ClientError, DEFAULT_SOCKET, bridge, exit};

mod selftest;

#[derive(Parser)]
#[command(
    name = "corral-agent",
    version,
    about = "Reach Corral's broker from inside an agent container"
)]
struct Cli {
    /// The broker socket.
    #[arg(long, env = "CORRAL_SOCKET", default_value = DEFAULT_SOCKET, global = true)]
    socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Bridge stdin/stdout to the broker: use as an MCP client's stdio
    /// server command.
    Mcp,
    /// List the tools this agent may call.
    Tools,
    /// The agent loop: answer messages from people with the model and the
    /// tools, all through the broker. Runs until the broker goes away.
    Run {
        /// The agent's workspace (its history and AGENT.md live here).
        #[arg(long, env = "CORRAL_WORKSPACE", default_value = "/workspace")]
        workspace: PathBuf,
        /// Answer this many messages, then exit.
        #[arg(long)]
        max_messages: Option<u64>,
    },
    /// Try what a compromised agent would (network, host files, the root
    /// filesystem, privileges, other sockets, the pids limit) and report;
    /// exit 1 if anything got through. `memory` runs the memory bomb alone.
    Selftest {
        /// One probe: network, dns, root-filesystem, host-paths,
        /// other-sockets, socket-dir, syscalls, identity, pids, or memory.
        /// `socket-race [TARGET]` runs until killed, trying all the while
        /// to put a link to TARGET (default /etc/shadow) where the host
        /// binds the socket, as an escape-room image's entrypoint.
        probe: Option<String>,
        /// The probe's arguments; anything after them (the command the
        /// host passes an image's entrypoint) is ignored.
        #[arg(trailing_var_arg = true, hide = true)]
        args: Vec<String>,
    },
    /// Call a tool and print its output.
    ///
    /// Exit codes: 0 success, 1 failure, 3 denied, 4 invalid input or
    /// unknown tool, 5 a limit was exceeded.
    Call {
        tool: String,
        /// The arguments, a JSON object.
        #[arg(default_value = "{}")]
        arguments: String,
    },
}

fn run(cli: Cli) -> Result<u8, ClientError> {
    match cli.command {
        Command::Mcp => {
            bridge(&cli.socket, std::io::stdin(), std::io::stdout().lock())?;
            Ok(exit::OK)
        }
        Command::Selftest { probe, args } => match probe.as_deref() {
            Some("socket-race") => Ok(selftest::socket_race(
                args.first().map_or("/etc/shadow", String::as_str),
            )),
            other => Ok(selftest::run(other)),
        },
        Command::Run {
            workspace,
            max_messages,
        } => {
            corral_agent::run::run(&corral_agent::run::LoopOptions {
                socket: cli.socket,
                workspace,
                wait: std::time::Duration::from_secs(25),
                max_messages,
            })?;
            Ok(exit::OK)
        }
        Command::Tools => {
            for (name, description) in Client::connect(&cli.socket)?.list_tools()? {
                println!("{name:<14} {description}");
            }
            Ok(exit::OK)
        }
        Command::Call { tool, arguments } => {
            let arguments: serde_json::Value = match serde_json::from_str(&arguments) {
                Ok(v @ serde_json::Value::Object(_)) => v,
                Ok(other) => {
                    eprintln!("the arguments for `{tool}` must be a JSON object, got {other}");
                    return Ok(exit::INVALID_INPUT);
                }
                Err(e) => {
                    eprintln!("the arguments for `{tool}` are not JSON: {e}");
                    return Ok(exit::INVALID_INPUT);
                }
            };
            let result = Client::connect(&cli.socket)?.call_tool(&tool, arguments)?;
            if result.is_error {
                eprintln!("{}", result.text);
            } else {
                println!("{}", result.text);
            }
            Ok(result.exit_code())
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("corral-agent: {e}");
            ExitCode::from(exit::FAILED)
        }
    }
}
