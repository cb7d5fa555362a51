//! `corral chat AGENT`: the terminal channel's client.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use corral_channels::terminal::{ChatClient, Interim};

use corral_host::HostConfig as Config;

use crate::shown;

#[derive(Args)]
pub struct ChatArgs {
    /// The agent to talk to.
    agent: String,
    /// The configuration `corral up` runs with (to find its control socket).
    #[arg(long, short, default_value = "corral.toml", env = "CORRAL_CONFIG")]
    config: PathBuf,
    /// The control socket, instead of reading the configuration.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Send this one message, print the reply and exit (exit 3 if refused).
    #[arg(long, short)]
    message: Option<String>,
}

pub fn run(args: ChatArgs) -> Result<u8> {
    let socket = match args.socket {
        Some(s) => s,
        None => Config::load(&args.config)?.0.control_socket(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async {
        let mut client = ChatClient::connect(&socket).await?;
        let agent = args.agent;
        if let Some(text) = args.message {
            return Ok(
                match client.ask(&agent, &text, |i| show(&agent, i)).await? {
                    Ok(reply) => {
                        // A script gets the reply as it is (controls
                        // escaped); a person sees whose lines they are,
                        // beside the host's notices on stderr.
                        if std::io::stdout().is_terminal() {
                            println!("{}", shown::attributed(&format!("{agent}> "), &reply));
                        } else {
                            println!("{}", shown::block(&reply));
                        }
                        0
                    }
                    Err(refusal) => {
                        eprintln!("{}", shown::block(&refusal.to_string()));
                        corral_agent::exit::DENIED
                    }
                },
            );
        }
        eprintln!("talking to `{agent}`; `/tool NAME JSON` calls a tool directly, Ctrl-D ends");
        let stdin = std::io::stdin();
        loop {
            eprint!("you> ");
            let _ = std::io::stderr().flush();
            let mut line = String::new();
            if stdin.lock().read_line(&mut line)? == 0 {
                return Ok(0);
            }
            let text = line.trim();
            if text.is_empty() {
                continue;
            }
            match client.ask(&agent, text, |i| show(&agent, i)).await? {
                Ok(reply) => println!("{}", shown::attributed(&format!("{agent}> "), &reply)),
                Err(refusal) => println!("{}", shown::attributed("corral> ", &refusal.to_string())),
            }
        }
    })
}

/// Prints what a chat hears before its reply: the agent's interim text on
/// stdout, the host's approval notices on stderr, marked as the host's.
/// Every line of the agent's text is shown as its own (see `shown`).
fn show(agent: &str, interim: Interim<'_>) {
    match interim {
        Interim::Reply(t) => println!("{}", shown::attributed(&format!("{agent}… "), t)),
        Interim::Approval(t) => eprintln!(
            "{}",
            shown::attributed(&format!("[corral, not {agent}] "), t)
        ),
    }
}
