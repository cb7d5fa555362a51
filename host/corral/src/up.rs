//! `corral up`: the daemon. It loads `corral.toml`, the tools and the
//! policies (hot-reloaded), opens the audit log, serves each agent's
//! broker socket, starts agent containers when a message arrives for them,
//! and routes messages between the channels and the agents.
//!
//! On SIGTERM or Ctrl-C it stops taking messages, lets the agents answer
//! the ones they hold (up to `--grace`), stops and removes their
//! containers, and flushes the audit log.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use corral_audit::{AuditConfig, AuditLog, Durability};
use corral_broker::{AgentSpec, Broker, BrokerLimits, Inbound, Mailbox, Models, TurnLimits};
use corral_channels::slack::{SlackChannel, SlackConfig};
use corral_channels::terminal::{Ops, TerminalChannel};
use corral_channels::{Message, Router};
use corral_models::{ApiKey, ModelClient, ModelEndpoint, Provider};
use corral_policy::{EngineSources, PolicyStore, read_entities};
use corral_sandbox::{AgentImage, ContainerSpec, Docker, LifecyclePolicy, Limits, Supervisor};
use corral_tools::{ToolRegistry, ToolSource, file_sha256};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::config::{Config, DurabilityName, ProviderName, Secrets};

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

struct RouterMailbox(Arc<Router>);

/// How long a reply's delivery may take before it is recorded as failed.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

fn inbound(m: Message) -> Inbound {
    Inbound {
        id: m.id,
        text: m.text,
        user: m.origin.user,
        channel: m.origin.channel,
        chat_workspace: m.origin.chat_workspace,
        conversation: m.origin.conversation,
    }
}

impl Mailbox for RouterMailbox {
    fn next<'a>(
        &'a self,
        agent: &'a str,
        holder: &'a str,
        wait: Duration,
    ) -> Pin<Box<dyn Future<Output = Option<Inbound>> + Send + 'a>> {
        Box::pin(async move { self.0.next(agent, holder, wait).await.map(inbound) })
    }

    fn release(&self, agent: &str, holder: &str) {
        self.0.release(agent, holder);
    }

    fn pending(&self, agent: &str, id: u64) -> Option<Inbound> {
        self.0.pending(agent, id).map(inbound)
    }

    fn reply<'a>(
        &'a self,
        agent: &'a str,
        id: u64,
        text: String,
        last: bool,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>> {
        let handed = self.0.reply(agent, id, text, last);
        Box::pin(async move {
            let receipt = handed?;
            match tokio::time::timeout(DELIVERY_TIMEOUT, receipt).await {
                Ok(Ok(outcome)) => outcome,
                Ok(Err(_)) => Err("the channel dropped the reply without delivering it".into()),
                Err(_) => Err(format!(
                    "the channel did not confirm delivery within {DELIVERY_TIMEOUT:?}"
                )),
            }
        })
    }
}

/// The uid that runs this process: a non-root host cannot hand sockets to
/// another user, so its containers run as itself.
fn own_ids() -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| (m.uid(), m.gid()))
        .unwrap_or((u32::MAX, u32::MAX))
}

/// entities.json, plus an `Agent` (with its `Workspace` and `Team`) for each
/// configured agent the file does not already describe.
fn entities(config: &Config) -> Result<Value> {
    let file = config.policies.join("entities.json");
    let mut list = match read_entities(&file).map_err(|e| anyhow::anyhow!("{e}"))? {
        Value::Array(list) => list,
        _ => bail!("{}: must be a JSON array of entities", file.display()),
    };
    let has = |list: &[Value], ty: &str, id: &str| {
        list.iter()
            .any(|e| e["uid"]["type"] == ty && e["uid"]["id"] == id)
    };
    for agent in &config.agents {
        if !has(&list, "Workspace", &agent.id) {
            list.push(json!({ "uid": { "type": "Workspace", "id": agent.id }, "attrs": {}, "parents": [] }));
        }
        if let Some(team) = &agent.team
            && !has(&list, "Team", team)
        {
            list.push(json!({ "uid": { "type": "Team", "id": team }, "attrs": {}, "parents": [] }));
        }
        if !has(&list, "Agent", &agent.id) {
            let parents: Vec<Value> = agent
                .team
                .iter()
                .map(|t| json!({ "type": "Team", "id": t }))
                .collect();
            list.push(json!({
                "uid": { "type": "Agent", "id": agent.id },
                "attrs": { "workspace": { "__entity": { "type": "Workspace", "id": agent.id } } },
                "parents": parents,
            }));
        }
    }
    Ok(Value::Array(list))
}

fn models(config: &Config, secrets: &Secrets) -> Result<Models> {
    let mut out = Models::new();
    for (name, m) in &config.models {
        let (provider, default_url) = match m.provider {
            ProviderName::Anthropic => (Provider::Anthropic, "https://api.anthropic.com"),
            ProviderName::Openai => (Provider::OpenAi, "https://api.openai.com/v1"),
        };
        let api_key = match &m.api_key_env {
            Some(var) => Some(ApiKey::new(
                secrets.require(var, &format!("models.{name}.api_key_env"))?,
            )),
            None => None,
        };
        let client = ModelClient::new(ModelEndpoint {
            name: name.clone(),
            provider,
            base_url: m.base_url.clone().unwrap_or_else(|| default_url.into()),
            model: m.model.clone(),
            api_key,
            max_tokens: m.max_tokens,
            timeout: Duration::from_secs(m.timeout_secs),
        })?;
        out.insert(name.clone(), Arc::new(client));
    }
    Ok(out)
}

fn private_dir(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path)
        .with_context(|| format!("cannot create the state directory {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot make {} private", path.display()))
}

pub fn run(args: UpArgs) -> Result<u8> {
    let (config, secrets) = Config::load(&args.config)?;
    // Every secret is looked up before anything starts, so a missing one
    // is the first and only error.
    let models = models(&config, &secrets)?;
    let tool_secrets = config.secrets.iter().try_fold(
        corral_gate::StaticSecrets::new(),
        |acc, (name, var)| -> Result<_> {
            Ok(acc.with(name, secrets.require(var, &format!("secrets.{name}"))?))
        },
    )?;
    let slack = match &config.slack {
        Some(s) => Some(SlackConfig {
            bot_token: secrets.require(&s.bot_token_env, "slack.bot_token_env")?,
            app_token: secrets.require(&s.app_token_env, "slack.app_token_env")?,
            api_url: s.api_url.clone(),
            channels: s.channels.clone(),
            direct_messages: s.direct_messages.clone(),
        }),
        None => None,
    };
    private_dir(&config.state_dir)?;

    let sources = config
        .tools
        .iter()
        .map(|t| {
            let sha256 = match &t.sha256 {
                Some(s) => s.clone(),
                None => {
                    let digest = file_sha256(&t.path)?;
                    tracing::warn!(tool = %t.path.display(), %digest, "tool not pinned in corral.toml; using its current digest");
                    digest
                }
            };
            Ok(ToolSource {
                path: t.path.clone(),
                sha256,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let entities = entities(&config)?;
    let internal = internal_networks(&config, &entities)?;
    let (runtime, registry, actions) = crate::load_tools(&sources, internal)?;
    let store = Arc::new(
        PolicyStore::load(EngineSources {
            schema_file: config.policies.join("schema.cedarschema"),
            policy_dir: config.policies.clone(),
            tools: actions,
            entities,
        })
        .map_err(|e| {
            anyhow::anyhow!(
                "{e}\nfix the policies in {} and start again",
                config.policies.display()
            )
        })?,
    );
    let durability = match config.durability {
        DurabilityName::Strict => Durability::Strict,
        DurabilityName::Batched => Durability::Batched {
            window: Duration::from_millis(10),
        },
    };
    let audit = AuditLog::open(AuditConfig::new(config.audit_path()).durability(durability))?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = rt.block_on(serve(
        args,
        config,
        store,
        runtime,
        registry,
        audit,
        models,
        Arc::new(tool_secrets),
        slack,
    ));
    drop(rt);
    result
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    args: UpArgs,
    config: Config,
    store: Arc<PolicyStore>,
    runtime: Arc<corral_tools::ToolRuntime>,
    registry: Arc<ToolRegistry>,
    audit: AuditLog,
    models: Models,
    secrets: Arc<corral_gate::StaticSecrets>,
    slack: Option<SlackConfig>,
) -> Result<u8> {
    let _watch = store
        .watch()
        .map_err(|e| tracing::warn!("policy hot reload is off: {e}"))
        .ok();
    let agent_ids: Vec<String> = config.agents.iter().map(|a| a.id.clone()).collect();
    let router = Arc::new(Router::new(store.clone(), audit.clone(), &agent_ids));

    // Before anything is created or mounted: a workspace that holds the
    // host's state, or another agent's workspace, must never be moved onto
    // a disk, handed over, or served.
    check_isolation(
        &config,
        &config
            .agents
            .iter()
            .map(|a| (a.id.as_str(), a.workspace.as_path()))
            .collect::<Vec<_>>(),
    )?;
    let (me_uid, me_gid) = own_ids();
    // Each agent runs as a uid of its own; a host that is not root cannot
    // hand sockets to other users, so its containers run as itself.
    let ids_of = |agent: &crate::config::AgentConfig| {
        if me_uid == 0 {
            agent.ids(config.image.user.as_deref())
        } else {
            (me_uid, me_gid)
        }
    };
    if me_uid == 0 && config.image.user.is_some() {
        tracing::warn!(
            "[image] user is set: every agent runs as the same uid, so a process of one can act as another"
        );
    }
    let socket_root = config.state_dir.join("agents");
    // File systems of their own for what agents share (see
    // `corral_sandbox::AgentDisk`); unmounted when these guards drop, after
    // the containers are gone.
    let mut mounted = Vec::new();
    if me_uid == 0 {
        mounted.push(corral_sandbox::socket_tmpfs(
            &socket_root,
            SOCKET_TMPFS_BYTES,
        )?);
    } else {
        tracing::warn!("not root: the agents' socket directories stay on the host's file system");
    }
    let broker = Broker::builder(store, runtime, registry, audit.clone(), &socket_root)
        .secrets(secrets)
        .limits(BrokerLimits {
            rate_per_second: config.broker.rate_per_second,
            rate_burst: config.broker.rate_burst,
            max_in_flight: config.broker.max_in_flight,
            max_connections: config.broker.max_connections,
            call_timeout: Duration::from_millis(config.broker.call_timeout_ms),
            ..BrokerLimits::default()
        })
        .mailbox(Arc::new(RouterMailbox(router.clone())))
        .models(models)
        .build();
    // Budgets survive a restart: today's model usage is in the log.
    let used_today = tokens_used_today(&config.audit_path());
    let docker = if args.external_agents {
        None
    } else {
        Some(Docker::connect().await?)
    };
    // Agents whose containers outlived the last host: their workspaces may
    // be changing, so they are never copied onto a new disk (a copy made
    // as root while the agent swaps a directory for a link could take host
    // files with it).
    let leftover: std::collections::BTreeSet<String> = match &docker {
        Some(d) => corral_sandbox::ContainerBackend::list(d)
            .await?
            .into_iter()
            .map(|c| c.agent)
            .collect(),
        None => Default::default(),
    };
    let mut endpoints = BTreeMap::new();
    let mut specs = Vec::new();
    for agent in &config.agents {
        let (uid, gid) = ids_of(agent);
        let disk = (agent.limits.disk_mib > 0).then(|| corral_sandbox::AgentDisk {
            image: config
                .state_dir
                .join("disks")
                .join(format!("{}.img", agent.id)),
            bytes: agent.limits.disk_mib << 20,
        });
        let prepared = match (&disk, me_uid) {
            (Some(_), uid) if uid != 0 => Err(format!(
                "its disk_mib = {} needs a host running as root (to mount the agent's own file system); \
                 run corral up as root, or set disk_mib = 0 in [agents.limits] to leave its workspace unbounded",
                agent.limits.disk_mib
            )),
            (Some(disk), _) => disk
                .mount(&agent.workspace, !leftover.contains(&agent.id))
                .map_err(|e| format!("cannot mount its own disk: {e}"))
                .and_then(|m| {
                    mounted.push(m);
                    prepare_workspace(&agent.workspace, uid, gid)
                }),
            (None, _) => prepare_workspace(&agent.workspace, uid, gid),
        };
        let workspace = match prepared {
            Ok(workspace) => workspace,
            Err(cause) => {
                eprintln!("corral: agent `{}` is not served: {cause}", agent.id);
                tracing::error!(agent = %agent.id, %cause, "agent not served");
                router.set_unavailable(&agent.id, &cause);
                continue;
            }
        };
        let mut spec = AgentSpec::new(&agent.id, &workspace);
        spec.owner = Some((uid, gid));
        spec.day_tokens = used_today.get(&agent.id).copied().unwrap_or(0);
        spec.model = agent.model.clone();
        spec.turn = TurnLimits {
            max_steps: agent.limits.max_steps,
            max_tokens: agent.limits.max_tokens,
        };
        // A socket that cannot be set up (something other than a socket at
        // its path, say) stops this agent, not the host.
        let endpoint = match broker.serve(spec) {
            Ok(endpoint) => endpoint,
            Err(e) => {
                eprintln!("corral: agent `{}` is not served: {e}", agent.id);
                tracing::error!(agent = %agent.id, error = %e, "agent not served");
                router.set_unavailable(&agent.id, &e.to_string());
                continue;
            }
        };
        println!("agent {} socket {}", agent.id, endpoint.socket().display());
        specs.push((agent, workspace, endpoint.dir().to_path_buf()));
        endpoints.insert(agent.id.clone(), endpoint);
    }

    let (wake_tx, wake_rx) = mpsc::unbounded_channel::<Wake>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let supervisor = if args.external_agents {
        None
    } else {
        let docker = match docker {
            Some(docker) => docker,
            None => Docker::connect().await?,
        };
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
        let container_specs: Vec<ContainerSpec> = specs
            .iter()
            .map(|(agent, workspace, socket_dir)| ContainerSpec {
                agent: agent.id.clone(),
                image: agent.image.clone().unwrap_or_else(|| default_image.clone()),
                workspace: workspace.clone(),
                socket_dir: socket_dir.clone(),
                user: {
                    let (uid, gid) = ids_of(agent);
                    format!("{uid}:{gid}")
                },
                limits: Limits {
                    memory_bytes: i64::from(agent.limits.memory_mib) << 20,
                    nano_cpus: (agent.limits.cpus * 1e9) as i64,
                    pids: i64::from(agent.limits.pids),
                    ..Limits::default()
                },
                command: vec!["run".into()],
                extra_mounts: Vec::new(),
            })
            .collect();
        let mut supervisor = Supervisor::new(
            docker,
            LifecyclePolicy::default(),
            container_specs,
            Instant::now(),
        );
        for agent in &config.agents {
            supervisor.set_idle_timeout(&agent.id, Duration::from_secs(agent.limits.idle_secs));
        }
        for event in supervisor.reconcile(Instant::now()).await? {
            tracing::info!(?event, "reconciled");
        }
        let wake = wake_tx.clone();
        router.on_wake(Box::new(move |agent| {
            let _ = wake.send(Wake::Message(agent.to_string()));
        }));
        Some(tokio::spawn(supervise(
            supervisor,
            wake_rx,
            stop_rx,
            router.clone(),
        )))
    };

    let control = config.control_socket();
    let ops: Ops = {
        let external = args.external_agents;
        Arc::new(move |op: String, agent: String| {
            let wake = wake_tx.clone();
            Box::pin(async move {
                if op != "start" && op != "stop" {
                    return Err(format!(
                        "unknown operation `{op}`; the host knows `start` and `stop`"
                    ));
                }
                if external {
                    return Err(
                        "this `corral up` runs with --external-agents: it starts no containers"
                            .into(),
                    );
                }
                let (done, result) = tokio::sync::oneshot::channel();
                let request = if op == "start" {
                    Wake::Start(agent, done)
                } else {
                    Wake::Stop(agent, done)
                };
                wake.send(request)
                    .map_err(|_| "the host is shutting down".to_string())?;
                result
                    .await
                    .map_err(|_| "the host is shutting down".to_string())?
            })
        })
    };
    let terminal = TerminalChannel::listen(&control, router.clone(), Some(ops))
        .with_context(|| format!("cannot listen on the control socket {}", control.display()))?;
    println!("control {}", control.display());
    let slack = match slack {
        Some(s) => Some(SlackChannel::start(s, router.clone()).await?),
        None => None,
    };
    println!("ready");

    crate::wait_for_shutdown().await;
    tracing::info!("shutting down: no new messages");
    eprintln!("corral: shutting down; letting agents finish the messages they hold");
    // Channels stay connected while agents finish, so their replies still
    // reach people; new messages are refused (saying the host is stopping).
    let left = router.drain(Duration::from_secs(args.grace)).await;
    if left > 0 {
        eprintln!(
            "corral: {left} message(s) were not answered within {}s",
            args.grace
        );
    }
    if let Some(s) = slack {
        s.shutdown().await;
    }
    drop(terminal);
    let _ = stop_tx.send(());
    let mut containers_left = false;
    if let Some(task) = supervisor {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                containers_left = true;
                eprintln!("corral: stopping containers: {e}");
            }
            Err(e) => {
                containers_left = true;
                eprintln!("corral: the container supervisor failed: {e}");
            }
        }
    }
    // The agents are gone; their connections' threads hold the audit log
    // and must finish before it is flushed.
    drop(endpoints);
    let running = tokio::task::block_in_place(|| broker.close_connections(CLOSE_GRACE));
    if containers_left {
        // A container may still use its disk and socket directory: the
        // next start takes them over, mounted as they are.
        eprintln!(
            "corral: leaving the agents' file systems mounted for the containers still running"
        );
        mounted.into_iter().for_each(corral_sandbox::Mounted::keep);
    } else {
        drop(mounted);
    }
    if running > 0 {
        eprintln!(
            "corral: {running} agent connection(s) still busy after {CLOSE_GRACE:?}; their last records may be missing"
        );
    }
    drop(broker);
    drop(router);
    drop(audit);
    eprintln!("corral: stopped");
    Ok(0)
}

/// The tmpfs that holds every agent's socket directory: sockets take no
/// data blocks, so this is room for inodes alone.
const SOCKET_TMPFS_BYTES: u64 = 1 << 20;

/// How long shutdown waits for agent connections to finish a tool call in
/// progress.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Starts containers when messages arrive, stops idle ones, restarts
/// crashed ones; stops them all when told to (shutdown).
async fn supervise(
    mut supervisor: Supervisor<Docker>,
    mut wake: mpsc::UnboundedReceiver<Wake>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
    router: Arc<Router>,
) -> Result<(), corral_sandbox::SandboxError> {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = &mut stop => break,
            wake = wake.recv() => {
                let Some(wake) = wake else { break };
                let (agent, done) = match wake {
                    Wake::Message(agent) => (agent, None),
                    Wake::Start(agent, done) => (agent, Some(done)),
                    Wake::Stop(agent, done) => {
                        let answer = match supervisor.stop(&agent).await {
                            Ok(true) => Ok(format!("stopped and removed agent `{agent}`'s container; its next message starts a new one")),
                            Ok(false) => Ok(format!("agent `{agent}` has no running container")),
                            Err(e) => Err(format!("agent `{agent}`: {e}")),
                        };
                        let _ = done.send(answer);
                        continue;
                    }
                };
                let result = supervisor.ensure_running(&agent, Instant::now()).await;
                let answer = match &result {
                    Ok((id, Some(event))) => {
                        tracing::info!(?event, "agent container");
                        Ok(format!("started agent `{agent}` in container {}", short(id)))
                    }
                    Ok((id, None)) => Ok(format!("agent `{agent}` is already running in container {}", short(id))),
                    Err(e) => {
                        tracing::error!(%agent, error = %e, "cannot start the agent's container");
                        router.fail_queued(&agent, &e.to_string());
                        Err(format!("agent `{agent}`: {e}"))
                    }
                };
                if let Some(done) = done {
                    let _ = done.send(answer);
                }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                for agent in router.busy() {
                    supervisor.touch(&agent, now);
                }
                match supervisor.tick(now).await {
                    Ok(events) => for event in events { tracing::info!(?event, "agent container") },
                    Err(e) => tracing::warn!(error = %e, "supervisor pass failed"),
                }
            }
        }
    }
    supervisor.stop_all().await
}

/// Creates the agent's workspace if missing and hands the agent its
/// `.corral` directory. What the agent could have put there stops this
/// agent, never the host.
fn prepare_workspace(workspace: &Path, uid: u32, gid: u32) -> Result<PathBuf, String> {
    std::fs::create_dir_all(workspace)
        .and_then(|()| workspace.canonicalize())
        .map_err(|e| format!("cannot create its workspace {}: {e}", workspace.display()))
        .and_then(|ws| {
            crate::handover::hand_over(&ws, uid, gid)
                .map(|()| ws)
                .map_err(|e| e.to_string())
        })
}

/// `[[http.internal]]`: each host group's ranges opened to the hosts in
/// it, as entities.json has them when the host starts (a later edit of
/// the file reaches policies, not these ranges, until a restart).
fn internal_networks(config: &Config, entities: &Value) -> Result<corral_tools::InternalNetworks> {
    let mut networks = corral_tools::InternalNetworks::default();
    let list = entities.as_array().map(Vec::as_slice).unwrap_or_default();
    let parent_groups = |e: &Value| -> Vec<String> {
        e["parents"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter(|p| p["type"] == "HostGroup")
            .filter_map(|p| p["id"].as_str().map(str::to_string))
            .collect()
    };
    for internal in &config.http.internal {
        // The group and every group inside it, transitively.
        let mut groups = std::collections::BTreeSet::from([internal.host_group.clone()]);
        loop {
            let before = groups.len();
            for e in list.iter().filter(|e| e["uid"]["type"] == "HostGroup") {
                if parent_groups(e).iter().any(|g| groups.contains(g))
                    && let Some(id) = e["uid"]["id"].as_str()
                {
                    groups.insert(id.to_string());
                }
            }
            if groups.len() == before {
                break;
            }
        }
        let hosts: Vec<String> = list
            .iter()
            .filter(|e| e["uid"]["type"] == "Host")
            .filter(|e| parent_groups(e).iter().any(|g| groups.contains(g)))
            .filter_map(|e| e["uid"]["id"].as_str().map(str::to_string))
            .collect();
        if hosts.is_empty() {
            bail!(
                "http.internal: host group `{}` has no hosts in {}; add Host entities with it as a parent, or remove the entry",
                internal.host_group,
                config.policies.join("entities.json").display()
            );
        }
        let ranges = internal
            .ranges
            .iter()
            .map(|r| r.parse::<corral_tools::Cidr>())
            .collect::<Result<Vec<_>, _>>()?;
        tracing::warn!(group = %internal.host_group, ?hosts, ranges = ?internal.ranges, "internal address ranges opened to tools");
        networks = networks.allow(hosts, ranges);
    }
    Ok(networks)
}

/// Model tokens each agent used since midnight UTC, from the outcome
/// records of its `use_model` calls. A log that cannot be read counts as
/// none used, with a warning.
fn tokens_used_today(audit: &Path) -> BTreeMap<String, u64> {
    let mut used = BTreeMap::new();
    let midnight = corral_audit::now_micros() / 86_400_000_000 * 86_400_000_000;
    let reader = match corral_audit::AuditReader::open(audit) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "model budgets start at zero today");
            return used;
        }
    };
    let mut after = 0;
    loop {
        let page = match reader.query(&corral_audit::Filter {
            action: Some("use_model".into()),
            kind: Some(corral_audit::Kind::Outcome),
            since_us: Some(midnight),
            after_seq: Some(after),
            limit: Some(5_000),
            ..Default::default()
        }) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "model budgets start at zero today");
                return used;
            }
        };
        let Some(last) = page.last() else { break };
        after = last.seq;
        for r in &page {
            let tokens = corral_broker::tokens_in_outcome(r.detail.as_deref().unwrap_or_default());
            *used.entry(r.agent.clone()).or_insert(0) += tokens;
        }
    }
    used
}

/// An agent can write anything in its workspace, so no workspace may hold
/// another agent's workspace, the policies, the host's state (sockets,
/// audit log) or the secrets file.
fn check_isolation(config: &Config, workspaces: &[(&str, &Path)]) -> Result<()> {
    let canonical = |p: &Path| -> PathBuf {
        p.canonicalize().unwrap_or_else(|_| {
            // A file not created yet: its directory, canonical, plus its name.
            match (
                p.parent().and_then(|d| d.canonicalize().ok()),
                p.file_name(),
            ) {
                (Some(dir), Some(name)) => dir.join(name),
                _ => p.to_path_buf(),
            }
        })
    };
    let mut guarded = vec![
        ("policies", canonical(&config.policies)),
        ("state_dir", canonical(&config.state_dir)),
        ("audit", canonical(&config.audit_path())),
    ];
    if let Some(secrets) = &config.secrets_file {
        guarded.push(("secrets_file", canonical(secrets)));
    }
    for (i, (agent, workspace)) in workspaces.iter().enumerate() {
        for (what, path) in &guarded {
            if path.starts_with(workspace) {
                bail!(
                    "{what} {} is inside agent `{agent}`'s workspace {}, where the agent could change it; move one of them",
                    path.display(),
                    workspace.display()
                );
            }
        }
        for (other, theirs) in &workspaces[i + 1..] {
            if theirs.starts_with(workspace) || workspace.starts_with(theirs) {
                bail!(
                    "agents `{agent}` and `{other}` share a workspace ({} and {}); give each its own",
                    workspace.display(),
                    theirs.display()
                );
            }
        }
    }
    Ok(())
}

/// What wakes the supervisor: a message queued for an agent, or an
/// operator's `corral agents start`.
enum Wake {
    Message(String),
    Start(String, tokio::sync::oneshot::Sender<Result<String, String>>),
    Stop(String, tokio::sync::oneshot::Sender<Result<String, String>>),
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}
