//! `corral agents …`: the agent containers the engine holds.

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use corral_sandbox::{ContainerBackend, Docker};

#[derive(Subcommand)]
pub enum AgentsCmd {
    /// List agent containers (labelled `corral.agent`), running or not.
    Ls,
    /// Stop and remove an agent's container.
    Stop {
        agent: String,
        /// Seconds to wait for a clean exit before killing.
        #[arg(long, default_value_t = 5)]
        grace: i32,
    },
    /// Print an agent container's output.
    Logs { agent: String },
}

pub fn run(cmd: AgentsCmd) -> Result<u8> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async {
        let docker = Docker::connect().await?;
        let find = |agent: &str, all: &[corral_sandbox::ContainerInfo]| {
            all.iter()
                .find(|c| c.agent == agent)
                .cloned()
                .with_context(|| {
                    format!("agent `{agent}` has no container; `corral agents ls` lists them")
                })
        };
        match cmd {
            AgentsCmd::Ls => {
                let all = docker.list().await?;
                if all.is_empty() {
                    eprintln!("no agent containers");
                }
                for c in all {
                    let id: String = c.id.chars().take(12).collect();
                    let state = if c.running { "running" } else { "stopped" };
                    println!("{:<20} {id} {state:<8} {}", c.agent, c.image);
                }
                Ok(0)
            }
            AgentsCmd::Stop { agent, grace } => {
                let c = find(&agent, &docker.list().await?)?;
                if c.running {
                    ContainerBackend::stop(&docker, &agent, &c.id, grace).await?;
                }
                ContainerBackend::remove(&docker, &agent, &c.id).await?;
                println!("stopped and removed agent `{agent}`'s container");
                Ok(0)
            }
            AgentsCmd::Logs { agent } => {
                let c = find(&agent, &docker.list().await?)?;
                let (out, err) = ContainerBackend::logs(&docker, &agent, &c.id).await?;
                print!("{out}");
                eprint!("{err}");
                if out.is_empty() && err.is_empty() && c.running {
                    bail!("agent `{agent}` has written nothing yet");
                }
                Ok(0)
            }
        }
    })
}
