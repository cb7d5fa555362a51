//! `corral agents …`: the agent containers the engine holds.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use corral_sandbox::{ContainerBackend, ContainerSpec, Docker, Limits};

use crate::shown;

#[derive(Subcommand)]
pub enum AgentsCmd {
    /// List agent containers (labelled `corral.agent`), running or not.
    Ls,
    /// Start an agent's container now, through the running `corral up`
    /// (which otherwise starts it on the agent's first message).
    Start {
        agent: String,
        /// The configuration `corral up` runs with (to find its control
        /// socket).
        #[arg(long, short, default_value = "corral.toml", env = "CORRAL_CONFIG")]
        config: PathBuf,
        /// The control socket, instead of reading the configuration.
        #[arg(long)]
        socket: Option<PathBuf>,
    },
    /// Stop and remove an agent's container: through the running `corral
    /// up` when one is reachable (so it knows), else directly.
    Stop {
        agent: String,
        /// The configuration `corral up` runs with (to find its control
        /// socket).
        #[arg(long, short, default_value = "corral.toml", env = "CORRAL_CONFIG")]
        config: PathBuf,
        /// The control socket, instead of reading the configuration.
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Seconds to wait for a clean exit before killing.
        #[arg(long, default_value_t = 5)]
        grace: i32,
    },
    /// Print an agent container's output.
    Logs { agent: String },
    /// Run `corral-agent ARGS…` once in a hardened container for AGENT,
    /// print its output, and remove the container. Exits with its code.
    Run {
        agent: String,
        /// The agent's workspace on the host.
        #[arg(long)]
        workspace: PathBuf,
        /// The agent's broker-socket directory (`corral broker
        /// --socket-dir`/AGENT), owned by the container user.
        #[arg(long)]
        socket_dir: PathBuf,
        /// The image (`corral image build` prints it).
        #[arg(long)]
        image: String,
        /// UID:GID the container runs as; must own the socket directory.
        #[arg(long, default_value = "10001:10001")]
        user: String,
        /// Arguments to `corral-agent`.
        #[arg(last = true, required = true)]
        args: Vec<String>,
    },
}

/// Asks the running `corral up` behind `socket` to `op` the agent.
async fn host_op(socket: &std::path::Path, op: &str, agent: &str) -> Result<u8> {
    let mut client = corral_channels::terminal::ChatClient::connect(socket).await?;
    match client.op(op, agent).await? {
        Ok(done) => {
            println!("{done}");
            Ok(0)
        }
        Err(e) => bail!("{e}"),
    }
}

pub fn run(cmd: AgentsCmd) -> Result<u8> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    if let AgentsCmd::Start {
        agent,
        config,
        socket,
    } = &cmd
    {
        let socket = match socket {
            Some(s) => s.clone(),
            None => corral_host::HostConfig::load(config)?.0.control_socket(),
        };
        return rt.block_on(host_op(&socket, "start", agent));
    }
    if let AgentsCmd::Stop {
        agent,
        config,
        socket,
        ..
    } = &cmd
    {
        // A host that manages the agent must do the stopping, or it would
        // go on believing the container runs.
        let socket = socket.clone().or_else(|| {
            config
                .exists()
                .then(|| corral_host::HostConfig::load(config).ok())
                .flatten()
                .map(|c| c.0.control_socket())
        });
        if let Some(socket) = socket.filter(|s| std::os::unix::net::UnixStream::connect(s).is_ok())
        {
            return rt.block_on(host_op(&socket, "stop", agent));
        }
    }
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
            AgentsCmd::Start { .. } => unreachable!("handled above"),
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
            AgentsCmd::Stop { agent, grace, .. } => {
                let c = find(&agent, &docker.list().await?)?;
                if c.running {
                    ContainerBackend::stop(&docker, &agent, &c.id, grace).await?;
                }
                ContainerBackend::remove(&docker, &agent, &c.id).await?;
                println!("stopped and removed agent `{agent}`'s container");
                Ok(0)
            }
            AgentsCmd::Run {
                agent,
                workspace,
                socket_dir,
                image,
                user,
                args,
            } => {
                let canonical = |p: &PathBuf, what: &str| {
                    p.canonicalize()
                        .with_context(|| format!("--{what} {}", p.display()))
                };
                let spec = ContainerSpec {
                    agent: agent.clone(),
                    image,
                    workspace: canonical(&workspace, "workspace")?,
                    socket_dir: canonical(&socket_dir, "socket-dir")?,
                    user,
                    limits: Limits::default(),
                    command: args,
                    extra_mounts: Vec::new(),
                };
                docker.remove_named(&spec.name()).await;
                let id = docker.create(&spec).await?;
                let result = async {
                    docker.start(&agent, &id).await?;
                    docker.wait(&agent, &id).await
                }
                .await;
                let _ = docker.remove(&agent, &id).await;
                let exited = result?;
                // The agent's own output, with its lines but never its
                // terminal controls (see `shown`).
                print!("{}", shown::block(&exited.stdout));
                eprint!("{}", shown::block(&exited.stderr));
                if exited.oom_killed {
                    eprintln!("agent `{agent}`'s container was stopped by its memory limit");
                }
                Ok(u8::try_from(exited.code).unwrap_or(1))
            }
            AgentsCmd::Logs { agent } => {
                let c = find(&agent, &docker.list().await?)?;
                let (out, err) = ContainerBackend::logs(&docker, &agent, &c.id).await?;
                print!("{}", shown::block(&out));
                eprint!("{}", shown::block(&err));
                if out.is_empty() && err.is_empty() && c.running {
                    bail!("agent `{agent}` has written nothing yet");
                }
                Ok(0)
            }
        }
    })
}
