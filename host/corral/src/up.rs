//! `corral up`: runs the host ([`corral_host::Host`]) until SIGTERM or
//! Ctrl-C, printing what it serves and, at the end, what shutting down
//! left behind.
//!
//! On a signal it stops taking messages, lets the agents answer the ones
//! they hold (up to `--grace`), stops and removes their containers, and
//! flushes the audit log.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use corral_host::{Host, HostConfig, HostOptions};

#[derive(Args)]
pub struct UpArgs {
    /// The configuration file.
    #[arg(long, short, default_value = "corral.toml", env = "CORRAL_CONFIG")]
    config: PathBuf,
    /// Seconds to let agents answer the messages they hold when asked to
    /// stop.
    #[arg(long, default_value_t = 30)]
    grace: u64,
    /// Start no containers: something else runs `corral-agent run` against
    /// each agent's socket (for development without Docker).
    #[arg(long)]
    external_agents: bool,
}

pub fn run(args: UpArgs) -> Result<u8> {
    let (config, secrets) = HostConfig::load(&args.config)?;
    // Said on every start, where the operator looks, not only in the log.
    let observed = config
        .agents
        .iter()
        .filter(|a| a.mode == corral_host::AgentMode::Observe);
    for agent in observed {
        eprintln!(
            "corral: WARNING: agent `{}` runs in observe mode: calls and file/HTTP uses no permit allows are let through and recorded as would-deny (`corral audit query --decision would-deny`); forbids, errors and secrets are still enforced",
            agent.id
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let options = HostOptions {
        external_agents: args.external_agents,
    };
    let result = rt.block_on(async {
        let host = Host::start(config, secrets, options).await?;
        let shutdown = crate::ShutdownSignals::listen();
        for (agent, cause) in host.unavailable() {
            eprintln!("corral: agent `{agent}` is not served: {cause}");
        }
        for (agent, socket) in host.sockets() {
            println!("agent {agent} socket {}", socket.display());
        }
        println!("control {}", host.control_socket().display());
        if let Some(addr) = host.web_addr() {
            println!("web http://{addr}/");
        }
        println!("ready");

        shutdown.wait().await;
        tracing::info!("shutting down: no new messages");
        eprintln!("corral: shutting down; letting agents finish the messages they hold");
        let report = host.shutdown(Duration::from_secs(args.grace)).await;
        if report.unanswered > 0 {
            eprintln!(
                "corral: {} message(s) were not answered within {}s",
                report.unanswered, args.grace
            );
        }
        if let Some(why) = &report.containers_left {
            eprintln!("corral: {why}");
            eprintln!(
                "corral: leaving the agents' file systems mounted for the containers still running"
            );
        }
        if report.busy_connections > 0 {
            eprintln!(
                "corral: {} agent connection(s) still busy at shutdown; their last records may be missing",
                report.busy_connections
            );
        }
        eprintln!("corral: stopped");
        anyhow::Ok(0)
    });
    drop(rt);
    result
}
