//! `corral broker`: serve agents' MCP sockets until interrupted.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use corral_audit::{AuditConfig, AuditLog, Durability};
use corral_broker::{AgentSpec, Broker, BrokerLimits};
use corral_policy::{EngineSources, PolicyStore, read_entities};
use corral_tools::{ToolSource, file_sha256};

use crate::audit_cmd::AuditPath;

#[derive(Args)]
pub struct BrokerArgs {
    /// An agent to serve, as ID=WORKSPACE_DIR (repeatable). ID is its Cedar
    /// principal `Agent::"ID"`.
    #[arg(long = "agent", value_name = "ID=DIR", required = true)]
    agents: Vec<String>,
    /// Serve this agent (one of --agent's) in observe mode: what only lacks
    /// a permit is let through and recorded would-deny (repeatable).
    #[arg(long = "observe", value_name = "ID")]
    observe: Vec<String>,
    /// A tool component, pinned as FILE.wasm@SHA256 (repeatable). Without a
    /// pin the file's current digest is used and printed.
    #[arg(long = "tool", value_name = "FILE.wasm[@SHA256]")]
    tools: Vec<String>,
    /// The policy directory (schema.cedarschema, *.cedar, entities.json).
    #[arg(long, default_value = "policies")]
    policies: PathBuf,
    /// Where each agent's socket directory is created.
    #[arg(long, default_value = ".corral/run")]
    socket_dir: PathBuf,
    /// UID:GID to own each agent's socket directory and socket: the user
    /// the agent's container runs as. Default: the broker's own user.
    #[arg(long, value_name = "UID:GID", value_parser = parse_owner)]
    socket_owner: Option<(u32, u32)>,
    #[command(flatten)]
    audit: AuditPath,
    /// strict: fsync each decision before its tool runs. batched: decisions
    /// reach the write-ahead log before the tool runs and are fsynced within
    /// --batch-window-ms.
    #[arg(long, value_enum, default_value = "strict")]
    durability: DurabilityArg,
    #[arg(long, default_value_t = 10)]
    batch_window_ms: u64,
    /// Sustained tool calls per second per agent.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// Burst above the sustained rate.
    #[arg(long, default_value_t = 100.0)]
    burst: f64,
    /// Tool calls running at once per agent.
    #[arg(long, default_value_t = 8)]
    max_in_flight: usize,
    /// Connections each agent may hold open at once.
    #[arg(long, default_value_t = 4)]
    max_connections: usize,
    /// Per-call timeout in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    call_timeout_ms: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum DurabilityArg {
    Strict,
    Batched,
}

fn parse_owner(spec: &str) -> Result<(u32, u32)> {
    let (uid, gid) = spec
        .split_once(':')
        .ok_or_else(|| anyhow::anyhow!("`{spec}`: write UID:GID, e.g. 10001:10001"))?;
    let num = |s: &str, what: &str| {
        s.parse::<u32>()
            .map_err(|_| anyhow::anyhow!("`{spec}`: {what} `{s}` is not a number"))
    };
    Ok((num(uid, "uid")?, num(gid, "gid")?))
}

fn parse_tool(spec: &str) -> Result<ToolSource> {
    let (path, pin) = match spec.rsplit_once('@') {
        Some((p, pin)) => (PathBuf::from(p), pin.to_string()),
        None => {
            let path = PathBuf::from(spec);
            let digest = file_sha256(&path)?;
            eprintln!("pinning {} to its current digest {digest}", path.display());
            (path, digest)
        }
    };
    Ok(ToolSource { path, sha256: pin })
}

fn parse_agent(spec: &str) -> Result<AgentSpec> {
    let Some((id, dir)) = spec.split_once('=') else {
        bail!("--agent `{spec}`: write ID=WORKSPACE_DIR, e.g. --agent assistant=work/assistant");
    };
    let workspace = PathBuf::from(dir);
    std::fs::create_dir_all(&workspace)
        .with_context(|| format!("--agent {id}: cannot create workspace {dir}"))?;
    Ok(AgentSpec::new(
        id,
        workspace
            .canonicalize()
            .with_context(|| format!("--agent {id}: workspace {dir}"))?,
    ))
}

pub fn run(args: BrokerArgs) -> Result<u8> {
    let agents = args
        .agents
        .iter()
        .map(|a| parse_agent(a))
        .collect::<Result<Vec<_>>>()?;
    let mut agents = agents;
    for id in &args.observe {
        let Some(agent) = agents.iter_mut().find(|a| &a.id == id) else {
            bail!("--observe {id}: no --agent {id}=DIR to observe");
        };
        agent.observe = true;
        eprintln!(
            "corral: WARNING: agent `{id}` runs in observe mode: what no permit allows is let through and recorded as would-deny"
        );
    }
    let sources = args
        .tools
        .iter()
        .map(|t| parse_tool(t).map(corral_host::PinnedTool::file))
        .collect::<Result<Vec<_>>>()?;
    let corral_host::LoadedTools {
        runtime,
        registry,
        actions,
    } = corral_host::load_tools(&sources, corral_tools::InternalNetworks::default())?;
    let entities_file = args.policies.join("entities.json");
    let store = PolicyStore::load(EngineSources {
        schema_file: args.policies.join("schema.cedarschema"),
        policy_dir: args.policies.clone(),
        tools: actions,
        entities: read_entities(&entities_file).map_err(|e| anyhow::anyhow!("{e}"))?,
    })
    .map_err(|e| {
        anyhow::anyhow!(
            "{e}\nfix the policies in {} and start again",
            args.policies.display()
        )
    })?;
    let store = Arc::new(store);
    let durability = match args.durability {
        DurabilityArg::Strict => Durability::Strict,
        DurabilityArg::Batched => Durability::Batched {
            window: Duration::from_millis(args.batch_window_ms.max(1)),
        },
    };
    let audit = AuditLog::open(AuditConfig::new(&args.audit.path).durability(durability))?;
    let limits = BrokerLimits {
        rate_per_second: args.rate,
        rate_burst: args.burst,
        max_in_flight: args.max_in_flight,
        max_connections: args.max_connections,
        call_timeout: Duration::from_millis(args.call_timeout_ms),
        ..BrokerLimits::default()
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let _watch = store
            .watch()
            .map_err(|e| tracing::warn!("policy hot reload is off: {e}"))
            .ok();
        let mut builder =
            Broker::builder(store, runtime, registry, audit, &args.socket_dir).limits(limits);
        if let Some((uid, gid)) = args.socket_owner {
            builder = builder.socket_owner(uid, gid);
        }
        let broker = builder.build();
        let mut endpoints = Vec::new();
        for agent in agents {
            let endpoint = broker.serve(agent)?;
            // Tests and supervisors wait for these lines.
            println!(
                "agent {} socket {}",
                endpoint.agent(),
                endpoint.socket().display()
            );
            endpoints.push(endpoint);
        }
        let shutdown = crate::ShutdownSignals::listen();
        println!("ready");
        shutdown.wait().await;
        drop(endpoints);
        // Connections' threads hold the audit log: they finish before it
        // is flushed, when the broker and the runtime are dropped.
        let running = tokio::task::block_in_place(|| {
            broker.close_connections(std::time::Duration::from_secs(10))
        });
        if running > 0 {
            eprintln!("corral: {running} agent connection(s) still busy at exit; their last records may be missing");
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(0)
}
