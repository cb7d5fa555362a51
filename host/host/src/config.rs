//! `corral.toml`: what `corral up` runs.
//!
//! Relative paths are relative to the file's own directory. Unknown keys
//! and bad values are errors naming the key and the file. Secrets (Slack
//! tokens, model API keys, tool secrets) are never written here: the file
//! names environment variables, looked up in the environment first and
//! then in the optional secrets file, which must be private to its owner
//! and is never mounted into any container.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use corral_channels::ChannelSection;
use corral_channels::slack::SlackSection;
use serde::Deserialize;

pub use crate::approvals_config::ApprovalsSection;
pub use crate::broker_config::BrokerConfig;
pub use crate::error::ConfigError;
use crate::secrets::{Secrets, read_secrets_file};
pub use crate::tool_config::{RegistryConfig, ToolConfig, TrustConfig};

type Result<T> = std::result::Result<T, ConfigError>;

macro_rules! bail {
    ($($arg:tt)*) => {
        return Err(ConfigError(format!($($arg)*)))
    };
}

/// `corral.toml`, parsed and checked: what the host runs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// Sockets, the control socket and (by default) the audit log.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// schema.cedarschema, *.cedar and entities.json.
    pub policies: PathBuf,
    /// The audit database; default `<state_dir>/audit.db`.
    pub audit: Option<PathBuf>,
    /// When a decision counts as recorded (`strict`, the default, or `batched`).
    #[serde(default)]
    pub durability: DurabilityName,
    /// A TOML file of `NAME = "value"` secrets; mode 0600 or stricter.
    pub secrets_file: Option<PathBuf>,
    /// `[image]`: the agent image and the user agents run as.
    #[serde(default)]
    pub image: ImageConfig,
    /// `[sandbox]`: the container engine.
    #[serde(default)]
    pub sandbox: SandboxConfig,
    /// `[broker]`: the broker's limits.
    #[serde(default)]
    pub broker: BrokerConfig,
    /// `[[tools]]`: the tool components served, each pinned.
    #[serde(default)]
    pub tools: Vec<ToolConfig>,
    /// `[trust]`: the publishers whose signatures registry tools carry.
    #[serde(default)]
    pub trust: TrustConfig,
    /// `[registry]`: how registries are reached.
    #[serde(default)]
    pub registry: RegistryConfig,
    /// `[[agents]]`: the agents.
    pub agents: Vec<AgentConfig>,
    /// `[models.NAME]`: the models agents may use, by name.
    #[serde(default)]
    pub models: BTreeMap<String, ModelConfig>,
    /// Channels: each one's section (see `channels.rs`).
    pub slack: Option<SlackSection>,
    /// Secrets tools may ask for: secret name → variable name.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    /// `[http]`: what tools' HTTP requests may reach.
    #[serde(default)]
    pub http: HttpConfig,
    /// `[approvals]`: how calls that `@approval` permits ask are put to
    /// people.
    #[serde(default)]
    pub approvals: ApprovalsSection,
    /// `[observe]`: the agents and teams allowed observe mode.
    #[serde(default)]
    pub observe: crate::observe_config::ObserveSection,
    /// `[web]`: the host's HTTP endpoint (`/metrics`); off without it.
    pub web: Option<crate::web_config::WebSection>,
    /// `[[schedules]]`: messages sent to agents on time.
    #[serde(default)]
    pub schedules: Vec<corral_schedules::ScheduleSection>,
}

/// `[sandbox]`: which container engine runs the agents.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxConfig {
    /// The engine; `docker`, the default, is the only one built.
    #[serde(default)]
    pub backend: BackendName,
}

/// The container engines Corral runs agents on.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BackendName {
    /// The local Docker engine, through its socket.
    #[default]
    Docker,
}

/// How tools' HTTP requests may reach internal addresses.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Internal ranges opened to the hosts of a host group. Without one, a
    /// host that resolves to a loopback, private, link-local, unique-local,
    /// multicast, unspecified or metadata address is refused, whatever
    /// policy permits.
    #[serde(default)]
    pub internal: Vec<InternalConfig>,
}

/// `[[http.internal]]`: internal address ranges opened to one host group's hosts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InternalConfig {
    /// A `HostGroup` id in entities.json; its hosts (and its subgroups')
    /// may reach `ranges`.
    pub host_group: String,
    /// `ADDRESS/BITS` ranges, e.g. `10.20.0.0/16`.
    pub ranges: Vec<String>,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from(".corral")
}

/// `durability`'s values.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityName {
    /// Fsynced before the append returns.
    #[default]
    Strict,
    /// Fsynced within 10 ms.
    Batched,
}

/// `[image]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageConfig {
    /// Use this image as it is, instead of building the default one.
    pub tag: Option<String>,
    /// The default image's build directory and static agent binary.
    #[serde(default = "default_image_dir")]
    pub dir: PathBuf,
    /// The static `corral-agent` binary the image is built from.
    #[serde(default = "default_agent_binary")]
    pub agent_binary: PathBuf,
    /// `uid:gid` every container runs as. Without it (the default) each
    /// agent runs as a uid of its own (see [`AgentConfig::ids`]), so no
    /// process of one agent's uid can act as another agent.
    pub user: Option<String>,
}

impl Default for ImageConfig {
    fn default() -> Self {
        ImageConfig {
            tag: None,
            dir: default_image_dir(),
            agent_binary: default_agent_binary(),
            user: None,
        }
    }
}

fn default_image_dir() -> PathBuf {
    PathBuf::from("agent-image")
}
fn default_agent_binary() -> PathBuf {
    PathBuf::from("target/x86_64-unknown-linux-musl/release/corral-agent")
}

/// One `[[agents]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The agent's id: its Cedar principal `Agent::"<id>"`.
    pub id: String,
    /// The agent's team, if it is not already in entities.json.
    pub team: Option<String>,
    /// Its workspace on the host.
    pub workspace: PathBuf,
    /// A key of `[models]`; without one the agent runs tools-only.
    pub model: Option<String>,
    /// Overrides `[image].tag` for this agent.
    pub image: Option<String>,
    /// `UID:GID` this agent's container runs as; default: derived from its
    /// id (see [`AgentConfig::ids`]).
    pub user: Option<String>,
    /// `[agents.limits]`.
    #[serde(default)]
    pub limits: AgentLimits,
    /// `enforce` (the default) or `observe`, which `[observe]` must allow.
    #[serde(default)]
    pub mode: crate::observe_config::AgentMode,
}

/// An agent's resource limits and budgets.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentLimits {
    /// Container memory, MiB.
    #[serde(default = "d_memory")]
    pub memory_mib: u32,
    /// Container CPUs.
    #[serde(default = "d_cpus")]
    pub cpus: f64,
    /// Container processes.
    #[serde(default = "d_pids")]
    pub pids: u32,
    /// Model calls per message.
    #[serde(default = "d_steps")]
    pub max_steps: u32,
    /// Output tokens per model call.
    #[serde(default = "d_tokens")]
    pub max_tokens: u32,
    /// Stop the container after this long without messages.
    #[serde(default = "d_idle")]
    pub idle_secs: u64,
    /// The size of the agent's own disk: its workspace is a file system of
    /// this many MiB, reserved when it is made, which bounds what the agent
    /// and its tools can write. 0: the workspace is a plain directory on
    /// the host's file system, and nothing bounds it.
    #[serde(default = "d_disk")]
    pub disk_mib: u64,
}

fn d_memory() -> u32 {
    256
}
fn d_cpus() -> f64 {
    1.0
}
fn d_pids() -> u32 {
    64
}
fn d_steps() -> u32 {
    8
}
fn d_tokens() -> u32 {
    1024
}
fn d_idle() -> u64 {
    900
}
fn d_disk() -> u64 {
    1024
}

impl Default for AgentLimits {
    fn default() -> Self {
        AgentLimits {
            memory_mib: d_memory(),
            cpus: d_cpus(),
            pids: d_pids(),
            max_steps: d_steps(),
            max_tokens: d_tokens(),
            idle_secs: d_idle(),
            disk_mib: d_disk(),
        }
    }
}

/// The model APIs Corral speaks.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ProviderName {
    /// Anthropic's Messages API.
    Anthropic,
    /// OpenAI's Chat Completions API, or one compatible with it.
    Openai,
}

/// One `[models.NAME]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Which API the provider speaks.
    pub provider: ProviderName,
    /// The provider's model id.
    pub model: String,
    /// Default: the provider's public API.
    pub base_url: Option<String>,
    /// The variable holding the API key; none for local servers.
    pub api_key_env: Option<String>,
    /// The most output tokens one call may ask for.
    #[serde(default = "d_tokens")]
    pub max_tokens: u32,
    /// The longest one call may take, in seconds.
    #[serde(default = "d_timeout")]
    pub timeout_secs: u64,
}

fn d_timeout() -> u64 {
    120
}

impl HostConfig {
    /// Reads and checks `path`; relative paths become relative to it.
    pub fn load(path: &Path) -> Result<(HostConfig, Secrets)> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError(format!(
                "cannot read the configuration {}: {e}",
                path.display()
            ))
        })?;
        let mut config: HostConfig =
            toml::from_str(&text).map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .canonicalize()
            .map_err(|e| {
                ConfigError(format!(
                    "cannot resolve the directory of {}: {e}",
                    path.display()
                ))
            })?;
        // Every path absolute and canonical once, here: Docker refuses a
        // relative bind source, and a path with `..` in it names two things.
        let at = |p: &mut PathBuf| *p = absolute(&base.join(&*p));
        at(&mut config.state_dir);
        at(&mut config.policies);
        if let Some(a) = &mut config.audit {
            at(a);
        }
        if let Some(s) = &mut config.secrets_file {
            at(s);
        }
        if let Some(web) = &mut config.web {
            web.resolve_paths(at);
        }
        at(&mut config.image.dir);
        at(&mut config.image.agent_binary);
        for t in &mut config.tools {
            if let Some(p) = &mut t.path {
                at(p);
            }
        }
        for p in config.trust.publishers.values_mut() {
            at(p);
        }
        for a in &mut config.agents {
            at(&mut a.workspace);
        }
        config.check(path)?;
        let secrets = Secrets {
            file: match &config.secrets_file {
                Some(p) => read_secrets_file(p)?,
                None => BTreeMap::new(),
            },
            file_path: config.secrets_file.clone(),
        };
        Ok((config, secrets))
    }

    fn check(&self, path: &Path) -> Result<()> {
        let file = path.display();
        crate::tool_config::check_tools(&self.tools, path)?;
        self.approvals.resolve(path)?;
        self.observe.check(
            path,
            self.agents
                .iter()
                .map(|a| (a.id.as_str(), a.team.as_deref(), a.mode)),
        )?;
        if self.agents.is_empty() {
            bail!("{file}: `agents` is empty; add an [[agents]] table with an id and a workspace");
        }
        let mut seen = std::collections::BTreeSet::new();
        for a in &self.agents {
            let ok = !a.id.is_empty()
                && a.id.len() <= 64
                && a.id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !ok {
                bail!(
                    "{file}: agents.id `{}`: use 1–64 characters from A–Z, a–z, 0–9, `-` and `_`",
                    a.id
                );
            }
            if !seen.insert(&a.id) {
                bail!("{file}: agents.id `{}` appears twice", a.id);
            }
            if let Some(m) = &a.model
                && !self.models.contains_key(m)
            {
                bail!(
                    "{file}: agent `{}`: model `{m}` is not defined; add a [models.{m}] table",
                    a.id
                );
            }
            let l = &a.limits;
            if l.memory_mib < 16
                || !(l.cpus > 0.0 && l.cpus <= 64.0)
                || l.pids < 8
                || l.max_steps == 0
                || l.max_tokens == 0
                || (l.disk_mib != 0 && !(32..=1 << 20).contains(&l.disk_mib))
            {
                bail!(
                    "{file}: agent `{}`: limits out of range (memory_mib ≥ 16, 0 < cpus ≤ 64, pids ≥ 8, max_steps ≥ 1, max_tokens ≥ 1, disk_mib 0 or 32 to 1048576)",
                    a.id
                );
            }
        }
        let b = &self.broker;
        if !(b.rate_per_second > 0.0 && b.rate_burst >= 1.0)
            || b.max_in_flight == 0
            || b.max_connections == 0
            || b.call_timeout_ms == 0
        {
            bail!(
                "{file}: [broker] limits out of range (rate_per_second > 0, rate_burst ≥ 1, max_in_flight, max_connections and call_timeout_ms ≥ 1)"
            );
        }
        for (name, m) in &self.models {
            if m.max_tokens == 0 || m.timeout_secs == 0 {
                bail!("{file}: models.{name}: max_tokens and timeout_secs must be at least 1");
            }
        }
        for section in self.channel_sections() {
            for (key, agent) in section.agents() {
                if !seen.contains(&agent) {
                    bail!("{file}: {key} names agent `{agent}`, which is not in [[agents]]");
                }
            }
        }
        let channels: Vec<&str> = self.channel_sections().iter().map(|c| c.key()).collect();
        crate::schedules_config::check(&self.schedules, &seen, &channels)
            .map_err(|e| ConfigError(format!("{file}: {e}")))?;
        for (i, internal) in self.http.internal.iter().enumerate() {
            for r in &internal.ranges {
                if let Err(e) = r.parse::<corral_tools::Cidr>() {
                    bail!(
                        "{file}: http.internal[{i}] (host_group `{}`): {e}",
                        internal.host_group
                    );
                }
            }
            if internal.ranges.is_empty() {
                bail!(
                    "{file}: http.internal[{i}] (host_group `{}`): `ranges` is empty; name at least one ADDRESS/BITS",
                    internal.host_group
                );
            }
        }
        for (key, user) in self
            .image
            .user
            .iter()
            .map(|u| ("image.user".to_string(), u))
            .chain(self.agents.iter().filter_map(|a| {
                a.user
                    .as_ref()
                    .map(|u| (format!("agent `{}`: user", a.id), u))
            }))
        {
            if parse_ids(user).is_none() {
                bail!("{file}: {key} `{user}`: write UID:GID, e.g. 200001:200001");
            }
        }
        if self.image.user.is_none() {
            let mut by_uid = BTreeMap::new();
            for a in &self.agents {
                let (uid, _) = a.ids(None);
                if let Some(other) = by_uid.insert(uid, &a.id) {
                    bail!(
                        "{file}: agents `{other}` and `{}` would run as the same uid {uid}; \
                         give one of them `user = \"UID:GID\"` of its own",
                        a.id
                    );
                }
            }
        }
        Ok(())
    }

    /// The configured channels' sections, in the order they start. The
    /// terminal channel (the control socket) always runs besides them. A
    /// new channel adds its section's field above and one line here.
    pub fn channel_sections(&self) -> Vec<&dyn ChannelSection> {
        let configured: Vec<Option<&dyn ChannelSection>> = vec![
            self.slack.as_ref().map(|s| s as _),
            // A new channel: `self.NAME.as_ref().map(|s| s as _),`
        ];
        configured.into_iter().flatten().collect()
    }

    /// The audit database: `audit`, or `<state_dir>/audit.db`.
    pub fn audit_path(&self) -> PathBuf {
        self.audit
            .clone()
            .unwrap_or_else(|| self.state_dir.join("audit.db"))
    }

    /// The runs each schedule handled: `<state_dir>/schedules.json`.
    pub fn schedules_file(&self) -> PathBuf {
        self.state_dir.join("schedules.json")
    }

    /// The control socket: `<state_dir>/control.sock`.
    pub fn control_socket(&self) -> PathBuf {
        self.state_dir.join("control.sock")
    }
}

fn parse_ids(user: &str) -> Option<(u32, u32)> {
    let (uid, gid) = user.split_once(':')?;
    let ids = (uid.parse().ok()?, gid.parse().ok()?);
    (ids.0 != 0 && ids.1 != 0).then_some(ids)
}

/// Where derived agent uids start: above the ids a Linux host gives its
/// own users and services.
const AGENT_UID_BASE: u32 = 200_000;
/// How many uids agents' ids are spread over.
const AGENT_UID_SPAN: u32 = 800_000;

impl AgentConfig {
    /// The uid and gid this agent's container runs as: `user` if set,
    /// else `shared` (`[image] user`), else one derived from the agent's
    /// id (FNV-1a over the id, so the same agent gets the same uid on
    /// every host and restart). `HostConfig::check` refuses two agents that
    /// would share one.
    pub fn ids(&self, shared: Option<&str>) -> (u32, u32) {
        if let Some(ids) = self.user.as_deref().or(shared).and_then(parse_ids) {
            return ids;
        }
        let hash = self.id.bytes().fold(0x811c_9dc5_u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
        let uid = AGENT_UID_BASE + hash % AGENT_UID_SPAN;
        (uid, uid)
    }
}

/// `path` made canonical: its longest existing ancestor resolved, the rest
/// (not created yet) appended with `.` and `..` taken lexically.
fn absolute(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out = out.canonicalize().unwrap_or(out);
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    let mut existing = out.clone();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.file_name(), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name.to_os_string());
                existing = parent.to_path_buf();
            }
            _ => return out,
        }
    }
    let mut resolved = existing.canonicalize().unwrap_or(existing);
    resolved.extend(rest.iter().rev());
    resolved
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: &str, user: Option<&str>) -> AgentConfig {
        AgentConfig {
            id: id.into(),
            team: None,
            workspace: PathBuf::from("/w"),
            model: None,
            image: None,
            user: user.map(str::to_string),
            limits: AgentLimits::default(),
            mode: Default::default(),
        }
    }

    #[test]
    fn each_agent_gets_a_uid_of_its_own_that_does_not_change() {
        let (a, b) = (agent("assistant", None), agent("reporter", None));
        assert_eq!(a.ids(None), agent("assistant", None).ids(None));
        assert_ne!(a.ids(None).0, b.ids(None).0);
        assert!(a.ids(None).0 >= AGENT_UID_BASE);
        assert_eq!(
            agent("x", Some("300001:300002")).ids(None),
            (300001, 300002)
        );
        assert_eq!(a.ids(Some("10001:10001")), (10001, 10001));
        assert_eq!(parse_ids("0:0"), None, "never root");
    }

    #[test]
    fn relative_paths_become_absolute_and_lose_their_dots() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        std::fs::create_dir(base.join("a")).unwrap();
        assert_eq!(absolute(&base.join("a/../b/./c")), base.join("b/c"));
        assert_eq!(absolute(&base.join("a")), base.join("a"));
        assert!(absolute(&base.join("x/../../y")).is_absolute());
    }
}
