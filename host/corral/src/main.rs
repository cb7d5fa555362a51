//! The `corral` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use corral_tools::{
    AllowList, CallContext, CallFailure, Caller, Limits, StaticSecrets, ToolRuntime,
};

mod agents_cmd;
mod audit_cmd;
mod broker_cmd;
mod chat_cmd;
mod image_cmd;
mod mcp_cmd;
mod policy_cmd;
mod replay;
mod up;

/// Exit codes, so scripts can tell outcomes apart without parsing text; one
/// table for `corral` and `corral-agent`.
use corral_agent::exit;

#[derive(Parser)]
#[command(
    name = "corral",
    version,
    about = "Run AI agents that can do only what they were granted"
)]
struct Cli {
    /// Log filter (e.g. `info`, `corral=debug`); also read from RUST_LOG.
    #[arg(long, global = true, default_value = "warn")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Inspect and run tool components.
    #[command(subcommand)]
    Tool(ToolCmd),
    /// Validate, format, test, check and print Cedar policies.
    #[command(subcommand)]
    Policy(policy_cmd::PolicyCmd),
    /// Query, follow, export and verify the decision log.
    #[command(subcommand)]
    Audit(audit_cmd::AuditCmd),
    /// Serve agents' MCP sockets: authorize, record, then run each tool call.
    Broker(broker_cmd::BrokerArgs),
    /// List, stop and read the logs of agent containers.
    #[command(subcommand)]
    Agents(agents_cmd::AgentsCmd),
    /// Build the agent image through the Docker Engine API.
    #[command(subcommand)]
    Image(image_cmd::ImageCmd),
    /// Talk to a broker socket as its agent would.
    #[command(subcommand)]
    Mcp(mcp_cmd::McpCmd),
    /// Run the host: agents in containers, the broker, the model broker,
    /// and the Slack and terminal channels, from corral.toml.
    Up(up::UpArgs),
    /// Talk to an agent of a running `corral up` from this terminal.
    Chat(chat_cmd::ChatArgs),
}

#[derive(Subcommand)]
// Parsed once per process: the size of its largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
enum ToolCmd {
    /// Show a component's tools, input schemas, declared capabilities and digest.
    Inspect {
        /// The component (.wasm).
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        runtime: RuntimeArgs,
    },
    /// Run one tool call with exactly the grants given here, and print its JSON output.
    ///
    /// Exit codes: 0 success, 1 failure, 3 denied, 4 invalid input, 5 a limit was exceeded.
    Call {
        /// The component (.wasm).
        file: PathBuf,
        /// The tool to call (see `corral tool inspect`).
        tool: String,
        /// The input, a JSON object.
        input: String,
        /// Grant read and write access to this directory as the workspace.
        #[arg(long)]
        workspace: Option<PathBuf>,
        /// Grant HTTP to HOST or HOST:PORT (repeatable).
        #[arg(long = "allow-host", value_name = "HOST")]
        allow_hosts: Vec<String>,
        /// Let the --allow-host hosts reach this internal address range,
        /// e.g. 127.0.0.0/8 for a server on this machine (repeatable).
        /// Without it, a host that resolves to a loopback, private,
        /// link-local or metadata address is refused.
        #[arg(long = "allow-internal", value_name = "CIDR")]
        allow_internal: Vec<String>,
        /// Make secret NAME available from environment variable ENVVAR, for the
        /// allowed hosts, or only for HOST with `NAME=ENVVAR@HOST` (repeatable).
        #[arg(long = "secret", value_name = "NAME=ENVVAR[@HOST]")]
        secrets: Vec<String>,
        /// The agent name recorded for the call.
        #[arg(long, default_value = "cli")]
        agent: String,
        #[command(flatten)]
        limits: LimitArgs,
        #[command(flatten)]
        runtime: RuntimeArgs,
    },
}

#[derive(Args)]
struct RuntimeArgs {
    /// Do not use the on-disk artifact cache.
    #[arg(long)]
    no_cache: bool,
}

#[derive(Args)]
struct LimitArgs {
    /// Wall-time limit in milliseconds.
    #[arg(long, value_name = "MS")]
    timeout_ms: Option<u64>,
    /// Linear-memory limit in MiB.
    #[arg(long, value_name = "MIB")]
    memory_mib: Option<u64>,
    /// Output limit in bytes.
    #[arg(long, value_name = "BYTES")]
    max_output: Option<u64>,
}

/// mimalloc rather than glibc's malloc: the broker's hot path allocates
/// small, short-lived JSON and audit values on one thread per connection,
/// and glibc's malloc and free took about a sixth of the CPU samples of
/// the broker benchmark (`perf -e cpu-clock`). In A/B runs of
/// `tests/benches/broker.rs`, which uses the same allocator, mimalloc
/// raised 8-agent throughput (batched audit) from 12.1k and 15.4k to
/// 18.5k and 15.7k calls/s, and the bare echo's from 38.8k and 31.7k to
/// 45.1k and 37.2k.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| cli.log.clone());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
    match run(cli.command) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit::FAILED)
        }
    }
}

fn runtime(
    args: &RuntimeArgs,
    limits: Limits,
    internal: corral_tools::InternalNetworks,
) -> Result<ToolRuntime> {
    if args.no_cache {
        return Ok(ToolRuntime::builder()
            .default_limits(limits)
            .internal_networks(internal)
            .build()?);
    }
    Ok(corral_host::runtime_with_cache(limits, internal)?)
}

fn load(rt: &ToolRuntime, file: &PathBuf) -> Result<corral_tools::LoadedComponent> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    rt.load(&bytes)
        .with_context(|| format!("cannot load {}", file.display()))
}

fn run(command: Command) -> Result<u8> {
    match command {
        Command::Policy(cmd) => policy_cmd::run(cmd),
        Command::Audit(cmd) => audit_cmd::run(cmd),
        Command::Broker(args) => broker_cmd::run(args),
        Command::Mcp(cmd) => mcp_cmd::run(cmd),
        Command::Up(args) => up::run(args),
        Command::Chat(args) => chat_cmd::run(args),
        Command::Image(cmd) => image_cmd::run(cmd),
        Command::Agents(cmd) => agents_cmd::run(cmd),
        Command::Tool(ToolCmd::Inspect {
            file,
            json,
            runtime: rargs,
        }) => {
            let rt = runtime(
                &rargs,
                Limits::default(),
                corral_tools::InternalNetworks::default(),
            )?;
            let component = load(&rt, &file)?;
            if json {
                let doc = serde_json::json!({
                    "file": file.display().to_string(),
                    "sha256": component.sha256(),
                    "tools": component.tools(),
                });
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                print_inspect(&file, &component)?;
            }
            Ok(0)
        }
        Command::Tool(ToolCmd::Call {
            file,
            tool,
            input,
            workspace,
            allow_hosts,
            allow_internal,
            secrets,
            agent,
            limits,
            runtime: rargs,
        }) => {
            let ranges = allow_internal
                .iter()
                .map(|r| r.parse::<corral_tools::Cidr>())
                .collect::<Result<Vec<_>, _>>()
                .context("--allow-internal")?;
            let internal = corral_tools::InternalNetworks::default().allow(
                allow_hosts.iter().map(|h| match h.rsplit_once(':') {
                    Some((name, port)) if port.parse::<u16>().is_ok() => {
                        name.trim_matches(['[', ']']).to_string()
                    }
                    _ => h.trim_matches(['[', ']']).to_string(),
                }),
                ranges,
            );
            let mut l = Limits::default();
            if let Some(ms) = limits.timeout_ms {
                l.wall_time = Duration::from_millis(ms);
            }
            if let Some(mib) = limits.memory_mib {
                l.memory_bytes = mib << 20;
            }
            if let Some(b) = limits.max_output {
                l.output_bytes = b;
            }
            let rt = runtime(&rargs, l, internal)?;
            let component = load(&rt, &file)?;

            let workspace = match workspace {
                Some(dir) => Some(
                    dir.canonicalize()
                        .with_context(|| format!("workspace {} does not exist", dir.display()))?,
                ),
                None => None,
            };
            let mut gate = AllowList::new()
                .workspace_read(workspace.is_some())
                .workspace_write(workspace.is_some());
            for host in &allow_hosts {
                gate = gate.allow_host(host);
            }
            let mut store = StaticSecrets::new();
            for spec in &secrets {
                let (name, env, host) = parse_secret_spec(spec)?;
                let value = std::env::var(&env).with_context(|| {
                    format!("--secret {spec}: environment variable {env} is not set")
                })?;
                store = store.with(name.clone(), value);
                gate = gate.allow_secret(&name, host.as_deref());
            }
            let ctx = CallContext {
                caller: Caller {
                    agent,
                    tool: tool.clone(),
                },
                workspace,
                gate: Arc::new(gate),
                secrets: Arc::new(store),
                limits: None,
            };
            match rt.call(&component, &tool, &input, &ctx) {
                Ok(out) => {
                    for line in &out.logs {
                        eprintln!("[tool {}] {}", line.level, line.message);
                    }
                    println!("{}", out.output);
                    Ok(0)
                }
                Err(report) => {
                    for line in &report.logs {
                        eprintln!("[tool {}] {}", line.level, line.message);
                    }
                    eprintln!("error: {}", report.error);
                    if matches!(report.error.failure, CallFailure::Denied(_)) {
                        eprintln!(
                            "hint: `corral tool call` grants only its flags: --workspace, --allow-host, --secret"
                        );
                    }
                    Ok(match report.error.failure {
                        CallFailure::Denied(_) => exit::DENIED,
                        CallFailure::InvalidInput(_) | CallFailure::UnknownTool => {
                            exit::INVALID_INPUT
                        }
                        CallFailure::LimitExceeded(_) => exit::LIMIT,
                        _ => exit::FAILED,
                    })
                }
            }
        }
    }
}

/// `NAME=ENVVAR` or `NAME=ENVVAR@HOST`.
fn parse_secret_spec(spec: &str) -> Result<(String, String, Option<String>)> {
    let Some((name, rest)) = spec.split_once('=') else {
        bail!("--secret {spec}: expected NAME=ENVVAR or NAME=ENVVAR@HOST");
    };
    let (env, host) = match rest.split_once('@') {
        Some((e, h)) => (e, Some(h.to_string())),
        None => (rest, None),
    };
    if name.is_empty() || env.is_empty() || host.as_deref() == Some("") {
        bail!("--secret {spec}: expected NAME=ENVVAR or NAME=ENVVAR@HOST");
    }
    Ok((name.to_string(), env.to_string(), host))
}

fn print_inspect(file: &std::path::Path, c: &corral_tools::LoadedComponent) -> Result<()> {
    println!("component {}", file.display());
    println!("  sha256  {}", c.sha256());
    for t in c.tools() {
        println!();
        println!("tool {}", t.name);
        println!("  {}", t.description);
        let caps = &t.capabilities;
        let mut declared = Vec::new();
        if caps.workspace_read {
            declared.push("workspace read".to_string());
        }
        if caps.workspace_write {
            declared.push("workspace write".to_string());
        }
        if !caps.http_hosts.is_empty() {
            declared.push(format!("http: {}", caps.http_hosts.join(", ")));
        }
        if !caps.secrets.is_empty() {
            declared.push(format!("secrets: {}", caps.secrets.join(", ")));
        }
        println!(
            "  capabilities: {}",
            if declared.is_empty() {
                "none".to_string()
            } else {
                declared.join("; ")
            }
        );
        println!(
            "  input schema: {}",
            serde_json::to_string(&t.input_schema)?
        );
        if let Some(o) = &t.output_schema {
            println!("  output schema: {}", serde_json::to_string(o)?);
        }
    }
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C: how `corral broker` and `corral up` are
/// asked to stop.
pub(crate) async fn wait_for_shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::parse_secret_spec;

    #[test]
    fn secret_specs() {
        assert_eq!(
            parse_secret_spec("TOKEN=MY_ENV").unwrap(),
            ("TOKEN".into(), "MY_ENV".into(), None)
        );
        assert_eq!(
            parse_secret_spec("TOKEN=MY_ENV@api.test").unwrap(),
            ("TOKEN".into(), "MY_ENV".into(), Some("api.test".into()))
        );
        for bad in ["TOKEN", "=X", "T=", "T=X@"] {
            assert!(parse_secret_spec(bad).is_err(), "{bad}");
        }
    }
}
