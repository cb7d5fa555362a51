//! The broker: one listener per agent, one MCP session per connection.

use std::collections::BTreeSet;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use corral_audit::AuditLog;
use corral_gate::SecretStore;
use corral_policy::PolicyStore;
use corral_tools::{ToolRegistry, ToolRuntime};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::connection::Live;
use crate::frame_reader::FrameLimits;
use crate::jsonrpc::INVALID_REQUEST;
use crate::limits::{BrokerLimits, RateLimiter, Slots};
use crate::serve::serve_connection;
use crate::services::{Mailbox, Models, TurnLimits};
use crate::session::Session;
use crate::socket_dir;
use crate::state::{AgentState, Shared};

/// What can stop the broker from serving an agent.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The id does not fit the allowed alphabet or length.
    #[error("agent id `{0}` is not allowed: use 1–64 characters from A–Z, a–z, 0–9, `-` and `_`")]
    BadAgentId(String),
    /// The agent already has a socket on this broker.
    #[error("agent `{0}` is already being served")]
    AlreadyServed(String),
    /// The socket's directory could not be set up safely.
    #[error("agent `{agent}`: socket directory {path}: {message}")]
    SocketDir {
        /// The agent.
        agent: String,
        /// The directory.
        path: PathBuf,
        /// What was found there, or what failed.
        message: String,
    },
    /// The socket could not be bound.
    #[error("agent `{agent}`: cannot listen on {path}: {source}")]
    Bind {
        /// The agent.
        agent: String,
        /// The socket's path.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
}

/// One agent the broker serves.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    /// The agent's id: its Cedar principal `Agent::"<id>"`.
    pub id: String,
    /// The agent's workspace on the host: the only directory its tools see.
    pub workspace: PathBuf,
    /// The model its loop may ask for (a key of the broker's models), if any.
    pub model: Option<String>,
    /// What one turn of its loop may spend.
    pub turn: TurnLimits,
    /// Model tokens the agent already used today (UTC), so a restarted
    /// host keeps counting against the day's budget.
    pub day_tokens: u64,
    /// The uid and gid this agent's container runs as, when it is not the
    /// broker's default ([`BrokerBuilder::socket_owner`]).
    pub owner: Option<(u32, u32)>,
    /// Observe mode: a tool call or capability use that only lacks a
    /// permit is let through and recorded as `would-deny`; forbids,
    /// evaluation errors and secrets are enforced as ever. The host allows
    /// it only for agents its operator setting names.
    pub observe: bool,
}

impl AgentSpec {
    /// An agent with no model, default turn limits and no usage today.
    pub fn new(id: impl Into<String>, workspace: impl Into<PathBuf>) -> Self {
        AgentSpec {
            id: id.into(),
            workspace: workspace.into(),
            model: None,
            turn: TurnLimits::default(),
            day_tokens: 0,
            observe: false,
            owner: None,
        }
    }
}

/// Builds a [`Broker`].
pub struct BrokerBuilder {
    policies: Arc<PolicyStore>,
    runtime: Arc<ToolRuntime>,
    registry: Arc<ToolRegistry>,
    audit: AuditLog,
    secrets: Arc<dyn SecretStore>,
    limits: BrokerLimits,
    socket_root: PathBuf,
    socket_owner: Option<(u32, u32)>,
    mailbox: Option<Arc<dyn Mailbox>>,
    approvals: Option<corral_approvals::Approvals>,
    models: Models,
    observer: Option<Arc<dyn crate::CallObserver>>,
}

impl BrokerBuilder {
    /// Told of refusals before policy and of decision times, for metrics.
    pub fn observer(mut self, observer: Arc<dyn crate::CallObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Where agents' messages come from and replies go (`corral/next`,
    /// `corral/reply`). Without one, those methods say so.
    pub fn mailbox(mut self, mailbox: Arc<dyn Mailbox>) -> Self {
        self.mailbox = Some(mailbox);
        self
    }

    /// Where calls that `@approval` permits allow only with a person's yes
    /// are put to people. Without it, such calls are denied, saying so.
    pub fn approvals(mut self, approvals: corral_approvals::Approvals) -> Self {
        self.approvals = Some(approvals);
        self
    }

    /// The models agents may ask for (`corral/model`), by name.
    pub fn models(mut self, models: Models) -> Self {
        self.models = models;
        self
    }

    /// Sets the broker's limits.
    pub fn limits(mut self, limits: BrokerLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets the secrets tools may place into requests.
    pub fn secrets(mut self, secrets: Arc<dyn SecretStore>) -> Self {
        self.secrets = secrets;
        self
    }

    /// The uid and gid the agent's container runs as: the socket is theirs,
    /// and the gid may enter the socket directory, which stays the
    /// broker's. Default: the broker's own user.
    pub fn socket_owner(mut self, uid: u32, gid: u32) -> Self {
        self.socket_owner = Some((uid, gid));
        self
    }

    /// The broker, serving no agent yet.
    pub fn build(self) -> Broker {
        Broker {
            shared: Arc::new(Shared {
                policies: self.policies,
                runtime: self.runtime,
                registry: self.registry,
                audit: self.audit,
                secrets: self.secrets,
                limits: self.limits,
                mailbox: self.mailbox,
                approvals: self.approvals,
                models: self.models,
                live: Live::default(),
                observer: self.observer,
            }),
            socket_root: self.socket_root,
            socket_owner: self.socket_owner,
            served: Arc::new(Mutex::new(BTreeSet::new())),
        }
    }
}

/// The host side of every agent's only way out.
pub struct Broker {
    shared: Arc<Shared>,
    socket_root: PathBuf,
    socket_owner: Option<(u32, u32)>,
    served: Arc<Mutex<BTreeSet<String>>>,
}

/// A listening agent endpoint. Dropping it stops the listener, closes the
/// agent's connections and removes the socket.
pub struct AgentEndpoint {
    agent: String,
    dir: PathBuf,
    socket: PathBuf,
    accept: JoinHandle<()>,
    served: Arc<Mutex<BTreeSet<String>>>,
}

impl AgentEndpoint {
    /// The directory to bind-mount into the agent's container.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The socket inside [`Self::dir`].
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The agent's id.
    pub fn agent(&self) -> &str {
        &self.agent
    }
}

impl Drop for AgentEndpoint {
    fn drop(&mut self) {
        self.accept.abort();
        let _ = std::fs::remove_file(&self.socket);
        if let Ok(mut served) = self.served.lock() {
            served.remove(&self.agent);
        }
    }
}

/// The socket's file name inside an agent's socket directory.
pub const SOCKET_NAME: &str = "mcp.sock";

pub(crate) fn check_agent_id(id: &str) -> Result<(), BrokerError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(BrokerError::BadAgentId(id.to_string()))
    }
}

impl Broker {
    /// `socket_root` holds one directory per agent; the broker creates it
    /// (mode 0700) if missing. It must not be writable by any agent.
    pub fn builder(
        policies: Arc<PolicyStore>,
        runtime: Arc<ToolRuntime>,
        registry: Arc<ToolRegistry>,
        audit: AuditLog,
        socket_root: impl Into<PathBuf>,
    ) -> BrokerBuilder {
        BrokerBuilder {
            policies,
            runtime,
            registry,
            audit,
            secrets: Arc::new(corral_gate::StaticSecrets::new()),
            limits: BrokerLimits::default(),
            socket_root: socket_root.into(),
            socket_owner: None,
            mailbox: None,
            approvals: None,
            models: Models::new(),
            observer: None,
        }
    }

    /// The broker's limits.
    pub fn limits(&self) -> &BrokerLimits {
        &self.shared.limits
    }

    /// Ends every agent connection and waits up to `grace` for their
    /// threads (a tool call in progress runs to its end, and its outcome is
    /// recorded). Call it before flushing the audit log on shutdown: a
    /// connection's thread holds a handle to the log. Returns how many
    /// connections were still running when `grace` ran out. Blocking.
    pub fn close_connections(&self, grace: std::time::Duration) -> usize {
        self.shared.live.close(grace)
    }

    /// Starts serving `agent` on `<socket_root>/<id>/mcp.sock`. Must be
    /// called inside a tokio runtime.
    pub fn serve(&self, agent: AgentSpec) -> Result<AgentEndpoint, BrokerError> {
        check_agent_id(&agent.id)?;
        let dir = self.socket_root.join(&agent.id);
        let socket = dir.join(SOCKET_NAME);
        {
            let mut served = self.served.lock().unwrap_or_else(|p| p.into_inner());
            if !served.insert(agent.id.clone()) {
                return Err(BrokerError::AlreadyServed(agent.id));
            }
        }
        let unserve = |e| {
            if let Ok(mut served) = self.served.lock() {
                served.remove(&agent.id);
            }
            e
        };
        let owner = agent.owner.or(self.socket_owner);
        let listener = bind(&self.socket_root, &socket, &agent.id, owner).map_err(unserve)?;
        let state = Arc::new(AgentState {
            id: Arc::from(agent.id.as_str()),
            workspace: agent.workspace.clone(),
            running: Slots::new(self.shared.limits.max_in_flight),
            rate: Mutex::new(RateLimiter::new(
                self.shared.limits.rate_per_second,
                self.shared.limits.rate_burst,
            )),
            sessions: Default::default(),
            model: agent.model.clone(),
            turn: agent.turn,
            day: Mutex::new((AgentState::today(), agent.day_tokens)),
            model_turn: tokio::sync::Mutex::new(()),
            steps: Default::default(),
            observe: agent.observe,
        });
        let accept = tokio::spawn(accept_loop(listener, self.shared.clone(), state));
        tracing::info!(agent = %agent.id, socket = %socket.display(), "serving agent");
        if agent.observe {
            tracing::warn!(
                agent = %agent.id,
                "observe mode: calls and capability uses no permit allows are let through and recorded as would-deny"
            );
        }
        Ok(AgentEndpoint {
            agent: agent.id,
            dir,
            socket,
            accept,
            served: self.served.clone(),
        })
    }
}

fn bind(
    root: &Path,
    socket: &Path,
    agent: &str,
    owner: Option<(u32, u32)>,
) -> Result<UnixListener, BrokerError> {
    let dir_err = |message: String| BrokerError::SocketDir {
        agent: agent.to_string(),
        path: root.join(agent),
        message,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)
        .map_err(|e| dir_err(format!("cannot create {}: {e}", root.display())))?;
    let (dir, found) = socket_dir::prepare(root, agent, SOCKET_NAME, owner.map(|(_, gid)| gid))
        .map_err(|e| dir_err(e.to_string()))?;
    if found == socket_dir::Found::StaleSocket {
        tracing::info!(%agent, socket = %socket.display(), "removed a socket left by an earlier broker");
    }
    let listener = UnixListener::bind(socket).map_err(|source| BrokerError::Bind {
        agent: agent.to_string(),
        path: socket.to_path_buf(),
        source,
    })?;
    socket_dir::own_socket(&dir, SOCKET_NAME, owner).map_err(|e| dir_err(e.to_string()))?;
    Ok(listener)
}

async fn accept_loop(listener: UnixListener, shared: Arc<Shared>, agent: Arc<AgentState>) {
    let connections = Arc::new(Semaphore::new(shared.limits.max_connections.max(1)));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(agent = %agent.id, error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            if let Some(observer) = &shared.observer {
                observer.refused("connections");
            }
            tokio::spawn(refuse(
                stream,
                agent.id.clone(),
                shared.limits.max_connections,
            ));
            continue;
        };
        let session = Session::new(shared.clone(), agent.clone());
        let (session_id, gone) = (session.id.clone(), session.gone.clone());
        let limits = frame_limits(&shared.limits);
        let id = agent.id.clone();
        let mailbox = shared.mailbox.clone();
        let owner = shared.clone();
        tokio::spawn(async move {
            serve_connection(
                stream,
                limits,
                session,
                id.clone(),
                gone.clone(),
                Some(&owner.live),
            )
            .await;
            // Marked first (the reader usually has already), then release:
            // a message taken after the mark is released by its taker (see
            // `Session::next_message`).
            gone.mark();
            if let Some(mailbox) = mailbox {
                mailbox.release(&id, &session_id);
            }
            drop(permit);
        });
    }
}

pub(crate) fn frame_limits(limits: &BrokerLimits) -> FrameLimits {
    FrameLimits {
        max_frame_bytes: limits.max_frame_bytes,
        max_unanswered: limits.max_in_flight.max(1),
        idle_timeout: limits.idle_timeout,
        frame_timeout: limits.frame_timeout,
    }
}

async fn refuse(mut stream: UnixStream, agent: Arc<str>, max: usize) {
    use tokio::io::AsyncWriteExt;
    tracing::warn!(%agent, max, "connection refused: too many connections");
    let frame = serde_json::json!({
        "jsonrpc": "2.0", "id": null,
        "error": { "code": INVALID_REQUEST, "message": format!(
            "agent `{agent}` already has {max} connections open to the broker; close one and retry") },
    });
    let _ = stream.write_all(format!("{frame}\n").as_bytes()).await;
    let _ = stream.shutdown().await;
}
