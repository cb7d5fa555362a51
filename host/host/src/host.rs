//! The running host: [`Host::start`] wires the policy store, the audit
//! log, the broker and its agents, the models, the container supervisor
//! and the channels from a [`HostConfig`]; [`Host::shutdown`] takes them
//! down in the order that loses no decision and no reply.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_approvals::Approvals;
use corral_audit::{AuditConfig, AuditLog};
use corral_broker::{AgentEndpoint, AgentSpec, Broker, TurnLimits};
use corral_channels::terminal::TerminalChannel;
use corral_channels::{Channel, ChannelStart, Router};
use corral_policy::{EngineSources, PolicyStore};
use corral_sandbox::{
    AgentImage, ContainerBackend, ContainerSpec, Docker, LifecyclePolicy, Limits, Mounted,
    SandboxError, Supervisor,
};
use tokio::sync::{mpsc, oneshot};

use crate::agents::{Ids, check_isolation, place, private_dir};
use crate::config::{BackendName, HostConfig};
use crate::error::HostError;
use crate::mailbox::RouterMailbox;
use crate::secrets::Secrets;
use crate::supervise::{Wake, operator_requests, supervise};

/// How the host runs, beyond its configuration.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostOptions {
    /// Start no containers: something else runs `corral-agent run` against
    /// each agent's socket (for development without a container engine).
    pub external_agents: bool,
}

/// The tmpfs that holds every agent's socket directory: sockets take no
/// data blocks, so this is room for inodes alone.
const SOCKET_TMPFS_BYTES: u64 = 1 << 20;

/// How long shutdown waits for agent connections to finish a tool call in
/// progress.
const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// A running host.
pub struct Host {
    router: Arc<Router>,
    approvals: Approvals,
    broker: Broker,
    audit: AuditLog,
    endpoints: BTreeMap<String, AgentEndpoint>,
    unavailable: Vec<(String, String)>,
    control: PathBuf,
    channels: Vec<Box<dyn Channel>>,
    supervisor: Option<tokio::task::JoinHandle<Result<(), SandboxError>>>,
    stop_supervisor: oneshot::Sender<()>,
    mounted: Vec<Mounted>,
    _watch: Option<corral_policy::WatchGuard>,
    web: Option<corral_web::WebServer>,
    schedules: crate::schedules_config::SchedulerSlot,
}

/// What shutting down left behind.
#[derive(Debug, Default)]
pub struct ShutdownReport {
    /// Messages agents had not answered when the grace period ended.
    pub unanswered: usize,
    /// Why containers may still be running, if they may.
    pub containers_left: Option<String>,
    /// Agent connections still busy after the close grace; their last
    /// records may be missing.
    pub busy_connections: usize,
}

impl Host {
    /// Starts everything `config` describes. Every secret is looked up and
    /// every tool and policy loaded before anything starts, so a mistake
    /// in any of them is the first and only error. An agent that cannot
    /// be served (its disk, its socket) is reported by
    /// [`Host::unavailable`] and the others still start.
    pub async fn start(
        config: HostConfig,
        secrets: Secrets,
        options: HostOptions,
    ) -> Result<Host, HostError> {
        let models = crate::parts::models(&config, &secrets)?;
        let web = match &config.web {
            Some(section) => Some(section.resolve(Path::new("corral.toml"), &secrets)?),
            None => None,
        };
        let metrics = Arc::new(corral_web::Metrics::new());
        let tool_secrets = crate::parts::tool_secrets(&config, &secrets)?;
        let channel_starts: Vec<Box<dyn ChannelStart>> = config
            .channel_sections()
            .into_iter()
            .map(|s| s.resolve(&secrets))
            .collect::<Result<_, _>>()?;
        private_dir(&config.state_dir)?;
        let sources = crate::tool_sources::pinned_tools(&config).await?;
        let entities = crate::parts::entities(&config)?;
        let internal = crate::parts::internal_networks(&config, &entities)?;
        let tools = crate::tools::load_tools(&sources, internal)?;
        // Metric labels for these tools and the host's own actions only:
        // a tool name an agent makes up is counted, under `_other`.
        metrics.label_actions(
            tools
                .registry
                .tools()
                .map(|(info, _)| info.name.clone())
                .chain(
                    corral_policy::RESERVED_ACTIONS
                        .iter()
                        .map(|a| a.to_string()),
                ),
        );
        let store = Arc::new(
            PolicyStore::load(EngineSources {
                schema_file: config.policies.join("schema.cedarschema"),
                policy_dir: config.policies.clone(),
                tools: tools.actions,
                entities,
            })
            .map_err(|e| {
                HostError::Setup(format!(
                    "{e}\nfix the policies in {} and start again",
                    config.policies.display()
                ))
            })?,
        );
        let audit = AuditLog::open(
            AuditConfig::new(config.audit_path())
                .durability(crate::parts::durability(&config))
                .observer(metrics.clone()),
        )?;
        // Bound before any agent starts: a taken port is a start-up error.
        let web = match web {
            Some(web) => {
                let dashboard = corral_web::Dashboard {
                    audit: config.audit_path(),
                    policies: Some(Arc::new(crate::web_config::StorePolicies(store.clone()))),
                    live: true,
                };
                Some(
                    corral_web::serve(web, metrics.clone(), Some(dashboard))
                        .await
                        .map_err(|e| HostError::Setup(e.to_string()))?,
                )
            }
            None => None,
        };
        let watch = store
            .watch()
            .map_err(|e| tracing::warn!("policy hot reload is off: {e}"))
            .ok();
        let agent_ids: Vec<String> = config.agents.iter().map(|a| a.id.clone()).collect();
        let router = Arc::new(Router::new(store.clone(), audit.clone(), &agent_ids));
        let approvals = Approvals::new(
            store.clone(),
            audit.clone(),
            config.approvals.resolve(Path::new("corral.toml"))?,
        );
        router.take_approvals(approvals.clone());

        // Before anything is created or mounted: a workspace that holds the
        // host's state, or another agent's workspace, must never be moved
        // onto a disk, handed over, or served.
        check_isolation(&config)?;
        let ids = Ids::new(&config);
        if ids.root() && config.image.user.is_some() {
            tracing::warn!(
                "[image] user is set: every agent runs as the same uid, so a process of one can act as another"
            );
        }
        let socket_root = config.state_dir.join("agents");
        // File systems of their own for what agents share (see
        // `corral_sandbox::AgentDisk`); unmounted when these guards drop,
        // after the containers are gone.
        let mut mounted = Vec::new();
        if ids.root() {
            mounted.push(corral_sandbox::socket_tmpfs(
                &socket_root,
                SOCKET_TMPFS_BYTES,
            )?);
        } else {
            tracing::warn!(
                "not root: the agents' socket directories stay on the host's file system"
            );
        }
        let broker = Broker::builder(
            store,
            tools.runtime,
            tools.registry,
            audit.clone(),
            &socket_root,
        )
        .secrets(Arc::new(tool_secrets))
        .limits(crate::parts::broker_limits(&config))
        .mailbox(Arc::new(RouterMailbox(router.clone())))
        .approvals(approvals.clone())
        .models(models)
        .observer(Arc::new(crate::web_config::BrokerMetrics(metrics.clone())))
        .build();
        // Budgets survive a restart: today's model usage is in the log.
        let used_today = crate::budgets::tokens_used_today(&config.audit_path());
        let backend = if options.external_agents {
            None
        } else {
            Some(match config.sandbox.backend {
                BackendName::Docker => Docker::connect().await?,
            })
        };
        let leftover: BTreeSet<String> = match &backend {
            Some(b) => b.list().await?.into_iter().map(|c| c.agent).collect(),
            None => BTreeSet::new(),
        };
        let mut endpoints = BTreeMap::new();
        let mut unavailable = Vec::new();
        let mut served = Vec::new();
        for agent in &config.agents {
            let mut refuse = |cause: String| {
                tracing::error!(agent = %agent.id, %cause, "agent not served");
                router.set_unavailable(&agent.id, &cause);
                unavailable.push((agent.id.clone(), cause));
            };
            let workspace = match place(&config, agent, &ids, &leftover, &mut mounted) {
                Ok(workspace) => workspace,
                Err(cause) => {
                    refuse(cause.0);
                    continue;
                }
            };
            let mut spec = AgentSpec::new(&agent.id, &workspace);
            spec.owner = Some(ids.of(agent));
            spec.day_tokens = used_today.get(&agent.id).copied().unwrap_or(0);
            spec.observe = agent.mode == crate::AgentMode::Observe;
            spec.model = agent.model.clone();
            spec.turn = TurnLimits {
                max_steps: agent.limits.max_steps,
                max_tokens: agent.limits.max_tokens,
            };
            // A socket that cannot be set up (something other than a
            // socket at its path, say) stops this agent, not the host.
            let endpoint = match broker.serve(spec) {
                Ok(endpoint) => endpoint,
                Err(e) => {
                    refuse(e.to_string());
                    continue;
                }
            };
            served.push((agent, workspace, endpoint.dir().to_path_buf()));
            endpoints.insert(agent.id.clone(), endpoint);
        }

        let (wake_tx, wake_rx) = mpsc::unbounded_channel::<Wake>();
        let (stop_supervisor, stop_rx) = oneshot::channel::<()>();
        let supervisor = match backend {
            None => None,
            Some(docker) => {
                let default_image = match &config.image.tag {
                    Some(tag) => tag.clone(),
                    None => {
                        AgentImage {
                            dir: config.image.dir.clone(),
                            binary: config.image.agent_binary.clone(),
                        }
                        .build(&docker, |line| tracing::info!("image: {line}"))
                        .await?
                    }
                };
                let specs = served
                    .iter()
                    .map(|(agent, workspace, socket_dir)| {
                        let (uid, gid) = ids.of(agent);
                        ContainerSpec {
                            agent: agent.id.clone(),
                            image: agent.image.clone().unwrap_or_else(|| default_image.clone()),
                            workspace: workspace.clone(),
                            socket_dir: socket_dir.clone(),
                            user: format!("{uid}:{gid}"),
                            limits: Limits {
                                memory_bytes: i64::from(agent.limits.memory_mib) << 20,
                                nano_cpus: (agent.limits.cpus * 1e9) as i64,
                                pids: i64::from(agent.limits.pids),
                                ..Limits::default()
                            },
                            command: vec!["run".into()],
                            extra_mounts: Vec::new(),
                        }
                    })
                    .collect();
                Some(
                    start_supervisor(
                        docker,
                        specs,
                        &config,
                        (wake_tx.clone(), wake_rx),
                        stop_rx,
                        &router,
                        metrics.clone(),
                    )
                    .await?,
                )
            }
        };

        let control = config.control_socket();
        let schedules = crate::schedules_config::SchedulerSlot::default();
        let ops = operator_requests(wake_tx, options.external_agents, schedules.clone());
        let terminal =
            TerminalChannel::listen(&control, router.clone(), Some(ops)).map_err(|e| {
                HostError::Setup(format!(
                    "cannot listen on the control socket {}: {e}",
                    control.display()
                ))
            })?;
        let mut channels: Vec<Box<dyn Channel>> = vec![Box::new(terminal)];
        for start in channel_starts {
            channels.push(start.start(router.clone()).await?);
        }
        // After the channels: a schedule's reply may go through one.
        crate::schedules_config::start(
            (&config.schedules, config.schedules_file()),
            &router,
            &audit,
            &channels,
            &schedules,
        )
        .await?;
        Ok(Host {
            router,
            approvals,
            broker,
            audit,
            endpoints,
            unavailable,
            control,
            channels,
            supervisor,
            stop_supervisor,
            mounted,
            _watch: watch,
            web,
            schedules,
        })
    }

    /// Each served agent and its broker socket.
    pub fn sockets(&self) -> impl Iterator<Item = (&str, &Path)> {
        self.endpoints
            .iter()
            .map(|(id, endpoint)| (id.as_str(), endpoint.socket()))
    }

    /// The agents that are not served, each with why.
    pub fn unavailable(&self) -> &[(String, String)] {
        &self.unavailable
    }

    /// Where the HTTP endpoint (`[web]`) listens, if it does.
    pub fn web_addr(&self) -> Option<std::net::SocketAddr> {
        self.web.as_ref().map(corral_web::WebServer::addr)
    }

    /// The terminal channel's control socket (`corral chat`, `corral
    /// agents`).
    pub fn control_socket(&self) -> &Path {
        &self.control
    }

    /// Stops taking messages, lets agents answer the ones they hold for up
    /// to `grace` (channels stay connected so the replies reach people),
    /// disconnects the channels, stops the containers, closes the agents'
    /// connections and flushes the audit log.
    pub async fn shutdown(self, grace: Duration) -> ShutdownReport {
        crate::schedules_config::stop(&self.schedules).await;
        // First, so calls waiting for a person are denied, saying why, and
        // their agents can answer before the grace ends.
        let approvals = self.approvals.clone();
        tokio::task::block_in_place(|| approvals.close("the host is shutting down"));
        let mut report = ShutdownReport {
            unanswered: self.router.drain(grace).await,
            ..ShutdownReport::default()
        };
        // The terminal channel (the control socket) was started first and
        // closes last, so operators can reach the host while the others close.
        for channel in self.channels.into_iter().rev() {
            let name = channel.name();
            channel.shutdown().await;
            tracing::info!(channel = name, "channel closed");
        }
        let _ = self.stop_supervisor.send(());
        if let Some(task) = self.supervisor {
            report.containers_left = match task.await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(format!("stopping containers: {e}")),
                Err(e) => Some(format!("the container supervisor failed: {e}")),
            };
        }
        // The agents are gone; their connections' threads hold the audit
        // log and must finish before it is flushed.
        drop(self.endpoints);
        let broker = self.broker;
        report.busy_connections =
            tokio::task::block_in_place(|| broker.close_connections(CLOSE_GRACE));
        if report.containers_left.is_some() {
            // A container may still use its disk and socket directory: the
            // next start takes them over, mounted as they are.
            self.mounted.into_iter().for_each(Mounted::keep);
        } else {
            drop(self.mounted);
        }
        drop(broker);
        drop(self.router);
        drop(self.audit);
        report
    }
}

/// Reconciles what the engine runs with `specs`, then supervises the
/// containers on a task of their own.
async fn start_supervisor<B: ContainerBackend + Send + Sync + 'static>(
    backend: B,
    specs: Vec<ContainerSpec>,
    config: &HostConfig,
    (wake, woken): (mpsc::UnboundedSender<Wake>, mpsc::UnboundedReceiver<Wake>),
    stop: oneshot::Receiver<()>,
    router: &Arc<Router>,
    metrics: Arc<corral_web::Metrics>,
) -> Result<tokio::task::JoinHandle<Result<(), SandboxError>>, HostError> {
    let mut supervisor =
        Supervisor::new(backend, LifecyclePolicy::default(), specs, Instant::now());
    for agent in &config.agents {
        supervisor.set_idle_timeout(&agent.id, Duration::from_secs(agent.limits.idle_secs));
    }
    for event in supervisor.reconcile(Instant::now()).await? {
        tracing::info!(?event, "reconciled");
    }
    router.on_wake(Box::new(move |agent| {
        let _ = wake.send(Wake::Message(agent.to_string()));
    }));
    let counted = crate::supervise::Counted {
        metrics,
        agents: config.agents.iter().map(|a| a.id.clone()).collect(),
    };
    Ok(tokio::spawn(supervise(
        supervisor,
        woken,
        stop,
        router.clone(),
        counted,
    )))
}
