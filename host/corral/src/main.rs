//! The `corral` command line.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

mod agents_cmd;
mod approvals_cmd;
mod audit_cmd;
mod broker_cmd;
mod chat_cmd;
mod image_cmd;
mod log_lines;
mod mcp_cmd;
mod policy_assure;
mod policy_cmd;
mod policy_sources;
mod policy_test_cmd;
mod replay;
mod schedules_cmd;
mod shown;
mod suggest;
mod tool_build;
mod tool_cmd;
mod tool_new;
mod tool_oci;
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
    /// How log lines are written to standard error: `text` (coloured only
    /// on a terminal) or `json`, one object per line, for log collectors.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Inspect and run tool components.
    #[command(subcommand)]
    Tool(tool_cmd::ToolCmd),
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
    /// List, approve and deny the calls a running `corral up` holds for a
    /// person's approval.
    #[command(subcommand)]
    Approvals(approvals_cmd::ApprovalsCmd),
    /// List the scheduled messages of corral.toml, and run one now.
    #[command(subcommand)]
    Schedules(schedules_cmd::SchedulesCmd),
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
    let thp = corral_broker::disable_transparent_huge_pages();
    let cli = Cli::parse();
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| cli.log.clone());
    // Colour codes only where a person reads them: a file or a journal
    // gets plain text.
    let colours = matches!(cli.log_format, LogFormat::Text)
        && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(log_lines::OneLinePerEvent {
            make: std::io::stderr,
            style: match cli.log_format {
                LogFormat::Json => log_lines::Style::Json,
                LogFormat::Text => log_lines::Style::Text { colours },
            },
        });
    match cli.log_format {
        LogFormat::Json => logs.json().flatten_event(true).init(),
        LogFormat::Text => logs.with_ansi(colours).init(),
    }
    if let Err(e) = thp {
        tracing::warn!(error = %e, "cannot turn transparent huge pages off; each idle agent connection may hold more memory");
    }
    match run(cli.command) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit::FAILED)
        }
    }
}

fn run(command: Command) -> Result<u8> {
    match command {
        Command::Policy(cmd) => policy_cmd::run(cmd),
        Command::Audit(cmd) => audit_cmd::run(cmd),
        Command::Broker(args) => broker_cmd::run(args),
        Command::Mcp(cmd) => mcp_cmd::run(cmd),
        Command::Up(args) => up::run(args),
        Command::Chat(args) => chat_cmd::run(args),
        Command::Approvals(cmd) => approvals_cmd::run(cmd),
        Command::Schedules(cmd) => schedules_cmd::run(cmd),
        Command::Image(cmd) => image_cmd::run(cmd),
        Command::Agents(cmd) => agents_cmd::run(cmd),
        Command::Tool(cmd) => tool_cmd::run(cmd),
    }
}

/// SIGTERM and SIGINT (Ctrl-C), how `corral broker` and `corral up` are
/// asked to stop. Listened for from the moment this is made, so it is made
/// before a process says `ready`: a signal sent right after would
/// otherwise meet the default action and end the process without its
/// shutdown.
pub(crate) struct ShutdownSignals {
    term: Option<tokio::signal::unix::Signal>,
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignals {
    /// Starts listening; call inside the runtime.
    pub(crate) fn listen() -> ShutdownSignals {
        use tokio::signal::unix::{SignalKind, signal};
        ShutdownSignals {
            term: signal(SignalKind::terminate()).ok(),
            interrupt: signal(SignalKind::interrupt()).ok(),
        }
    }

    /// Resolves on the first of them.
    pub(crate) async fn wait(mut self) {
        let term = async {
            match &mut self.term {
                Some(term) => term.recv().await,
                None => std::future::pending().await,
            }
        };
        let interrupt = async {
            match &mut self.interrupt {
                Some(interrupt) => interrupt.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = term => {}
            _ = interrupt => {}
        }
    }
}
