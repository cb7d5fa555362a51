//! `corral approvals …`: list and answer the calls a running `corral up`
//! holds for a person's approval, through its control socket. The answer
//! is given as `User::"local:<uid>"` of whoever runs this command, taken
//! from the socket's peer credentials by the host.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use corral_channels::terminal::{ApprovalAnswer, ChatClient};

use crate::shown::{self, inline};

/// Where the running host is.
#[derive(Args)]
pub struct HostSocket {
    /// The configuration `corral up` runs with (to find its control
    /// socket).
    #[arg(long, short, default_value = "corral.toml", env = "CORRAL_CONFIG")]
    config: PathBuf,
    /// The control socket, instead of reading the configuration.
    #[arg(long)]
    socket: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum ApprovalsCmd {
    /// List the calls waiting for an answer, oldest first.
    Ls {
        #[command(flatten)]
        host: HostSocket,
        /// Print JSON lines instead of one line per approval.
        #[arg(long)]
        json: bool,
    },
    /// Print a waiting call's arguments whole, including what `ls`, Slack
    /// and the audit log hide (long values, secret-looking keys).
    Show {
        /// The approval's id (`corral approvals ls`).
        id: i64,
        #[command(flatten)]
        host: HostSocket,
    },
    /// Approve a waiting call: this call only, or with `--for`, the same
    /// agent's identical calls of the same tool for that long.
    Approve {
        /// The approval's id (`corral approvals ls`).
        id: i64,
        /// A period such as `30m`, `2h` or `1d` (at most
        /// approvals.max_grant).
        #[arg(long = "for", value_name = "DURATION")]
        period: Option<String>,
        #[command(flatten)]
        host: HostSocket,
    },
    /// Deny a waiting call; the agent is told, with your reason.
    Deny {
        /// The approval's id (`corral approvals ls`).
        id: i64,
        /// Why, for the agent and the audit log.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        host: HostSocket,
    },
}

impl HostSocket {
    fn path(&self) -> Result<PathBuf> {
        Ok(match &self.socket {
            Some(s) => s.clone(),
            None => corral_host::HostConfig::load(&self.config)?
                .0
                .control_socket(),
        })
    }
}

pub fn run(cmd: ApprovalsCmd) -> Result<u8> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async {
        let (host, answer) = match &cmd {
            ApprovalsCmd::Ls { host, json } => return list(host, *json).await,
            ApprovalsCmd::Show { id, host } => {
                let mut client = ChatClient::connect(&host.path()?).await?;
                return match client.approval_arguments(*id).await? {
                    Ok(arguments) => {
                        let whole = serde_json::to_string_pretty(&arguments)?;
                        println!("{}", shown::block(&whole));
                        Ok(corral_agent::exit::OK)
                    }
                    Err(refused) => {
                        eprintln!("error: {refused}");
                        Ok(corral_agent::exit::FAILED)
                    }
                };
            }
            ApprovalsCmd::Approve { id, period, host } => (
                host,
                (
                    *id,
                    ApprovalAnswer::Approve {
                        period: period.as_deref(),
                    },
                ),
            ),
            ApprovalsCmd::Deny { id, reason, host } => (
                host,
                (
                    *id,
                    ApprovalAnswer::Deny {
                        reason: reason.as_deref(),
                    },
                ),
            ),
        };
        let mut client = ChatClient::connect(&host.path()?).await?;
        match client.answer_approval(answer.0, answer.1).await? {
            Ok(done) => {
                println!("{}", shown::block(&done));
                Ok(corral_agent::exit::OK)
            }
            Err(refused) => {
                eprintln!("error: {refused}");
                Ok(corral_agent::exit::DENIED)
            }
        }
    })
}

async fn list(host: &HostSocket, json: bool) -> Result<u8> {
    let mut client = ChatClient::connect(&host.path()?).await?;
    let pending = match client.pending_approvals().await? {
        Ok(p) => p,
        Err(refused) => {
            eprintln!("error: {refused}");
            return Ok(corral_agent::exit::FAILED);
        }
    };
    if pending.is_empty() && !json {
        eprintln!("no calls are waiting for approval");
    }
    for p in pending {
        if json {
            println!("{p}");
            continue;
        }
        let expires = p["expires_at_us"]
            .as_i64()
            .map(corral_audit::format_micros)
            .unwrap_or_default();
        let approvers: Vec<&str> = p["approvers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str())
            .collect();
        println!(
            "{id:<6} agent {agent} tool {tool} {args}{hidden}  approvers: {approvers}  expires {expires}{from}",
            id = p["id"],
            agent = inline(p["agent"].as_str().unwrap_or("?")),
            tool = inline(p["tool"].as_str().unwrap_or("?")),
            args = inline(&p["arguments"].to_string()),
            hidden = if p["hidden"] == true {
                "  (values hidden: `corral approvals show ID` prints them whole)"
            } else {
                ""
            },
            approvers = approvers.join(", "),
            from = p["requested_by"]
                .as_str()
                .map(|u| format!("  for a message from {}", inline(u)))
                .unwrap_or_default(),
        );
    }
    Ok(corral_agent::exit::OK)
}
