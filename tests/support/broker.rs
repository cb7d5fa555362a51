//! A real broker on real sockets, for tests: the repository's policies
//! (copied, so a test may add to them), the example tools, and a real
//! SQLite audit log.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use corral_audit::{AuditConfig, AuditLog, Durability};
use corral_broker::{AgentEndpoint, AgentSpec, Broker, BrokerLimits};
use corral_policy::{EngineSources, PolicyStore, ToolAction, read_entities};
use corral_tools::{Allocation, StaticSecrets, ToolRegistry, ToolRuntime, ToolSource, file_sha256};

pub struct BrokerOptions {
    pub limits: BrokerLimits,
    pub durability: Durability,
    /// Extra Cedar text, written to `extra.cedar` in the policy copy.
    pub extra_policy: Option<String>,
    pub agents: Vec<&'static str>,
    pub secrets: StaticSecrets,
    /// More Cedar entities (JSON, the entities.json format) to add, to the
    /// engine and to the copy's `entities.json`.
    pub extra_entities: Vec<serde_json::Value>,
    pub socket_owner: Option<(u32, u32)>,
    /// Agents served in observe mode.
    pub observe: Vec<&'static str>,
    /// Told of every audit record (the host's metrics and live stream).
    pub audit_observer: Option<Arc<dyn corral_audit::RecordObserver>>,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        BrokerOptions {
            limits: BrokerLimits::default(),
            durability: Durability::Strict,
            extra_policy: None,
            agents: vec!["assistant", "reporter"],
            secrets: StaticSecrets::new(),
            extra_entities: Vec::new(),
            socket_owner: None,
            observe: Vec::new(),
            audit_observer: None,
        }
    }
}

pub struct TestBroker {
    pub dir: tempfile::TempDir,
    pub audit_path: PathBuf,
    pub policy_dir: PathBuf,
    pub policies: Arc<PolicyStore>,
    endpoints: Vec<AgentEndpoint>,
    broker: Option<Broker>,
    rt: Option<tokio::runtime::Runtime>,
}

/// The example components every broker test loads.
/// `misbehave` is loaded too: no starter policy permits it, so it is
/// never listed unless a test adds a permit.
pub const TOOLS: [&str; 4] = ["echo", "files", "http-get", "misbehave"];

pub fn copy_policies(to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(crate::repo_root().join("policies")).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

impl TestBroker {
    pub fn start(options: BrokerOptions) -> TestBroker {
        let dir = tempfile::tempdir().unwrap();
        let policy_dir = dir.path().join("policies");
        copy_policies(&policy_dir);
        if let Some(extra) = &options.extra_policy {
            std::fs::write(policy_dir.join("extra.cedar"), extra).unwrap();
        }
        let runtime = Arc::new(
            ToolRuntime::builder()
                .allocation(Allocation::Pooling { max_instances: 64 })
                .internal_networks(crate::loopback_for_tests())
                .build()
                .unwrap(),
        );
        let sources: Vec<ToolSource> = TOOLS
            .iter()
            .map(|t| {
                let path = crate::component_path(t);
                let sha256 = file_sha256(&path).unwrap();
                ToolSource { path, sha256 }
            })
            .collect();
        let registry = Arc::new(ToolRegistry::load(&runtime, &sources).unwrap());
        let actions = registry
            .tools()
            .map(|(info, _)| ToolAction::new(&info.name, &info.input_schema).unwrap())
            .collect();
        let policies = Arc::new(
            PolicyStore::load(EngineSources {
                schema_file: policy_dir.join("schema.cedarschema"),
                policy_dir: policy_dir.clone(),
                tools: actions,
                entities: {
                    // Written back, so the CLI run over this copy (replay,
                    // suggest) sees the entities the broker decided with.
                    let file = policy_dir.join("entities.json");
                    let mut all = read_entities(&file).unwrap();
                    if let Some(list) = all.as_array_mut() {
                        list.extend(options.extra_entities.iter().cloned());
                    }
                    std::fs::write(&file, serde_json::to_vec_pretty(&all).unwrap()).unwrap();
                    all
                },
            })
            .unwrap_or_else(|e| panic!("test policies do not load: {e}")),
        );
        let audit_path = dir.path().join("audit.db");
        let mut audit_config = AuditConfig::new(&audit_path).durability(options.durability);
        if let Some(observer) = options.audit_observer.clone() {
            audit_config = audit_config.observer(observer);
        }
        let audit = AuditLog::open(audit_config).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let _enter = rt.enter();
        let mut builder = Broker::builder(
            policies.clone(),
            runtime,
            registry,
            audit,
            dir.path().join("run"),
        )
        .limits(options.limits)
        .secrets(Arc::new(options.secrets));
        if let Some((uid, gid)) = options.socket_owner {
            builder = builder.socket_owner(uid, gid);
        }
        let broker = builder.build();
        let endpoints = options
            .agents
            .iter()
            .map(|id| {
                let workspace = dir.path().join("workspaces").join(id);
                std::fs::create_dir_all(&workspace).unwrap();
                let mut spec = AgentSpec::new(*id, workspace);
                spec.observe = options.observe.contains(id);
                broker.serve(spec).unwrap()
            })
            .collect();
        drop(_enter);
        TestBroker {
            dir,
            audit_path,
            policy_dir,
            policies,
            endpoints,
            broker: Some(broker),
            rt: Some(rt),
        }
    }

    pub fn socket(&self, agent: &str) -> PathBuf {
        self.endpoints
            .iter()
            .find(|e| e.agent() == agent)
            .unwrap_or_else(|| panic!("no endpoint for {agent}"))
            .socket()
            .to_path_buf()
    }

    pub fn endpoint(&self, agent: &str) -> &AgentEndpoint {
        self.endpoints.iter().find(|e| e.agent() == agent).unwrap()
    }

    pub fn workspace(&self, agent: &str) -> PathBuf {
        self.dir.path().join("workspaces").join(agent)
    }

    pub fn client(&self, agent: &str) -> crate::mcp::McpClient {
        crate::mcp::McpClient::ready(&self.socket(agent))
    }

    /// Serves one more agent, with a fresh workspace.
    pub fn serve_more(&self, id: &str) -> Result<AgentEndpoint, corral_broker::BrokerError> {
        let _enter = self.rt.as_ref().unwrap().enter();
        let workspace = self.dir.path().join("workspaces").join(id);
        std::fs::create_dir_all(&workspace).unwrap();
        self.broker
            .as_ref()
            .unwrap()
            .serve(AgentSpec::new(id, workspace))
    }

    /// Stops serving and waits for the audit writer to commit everything
    /// queued (outcome records are written after the response is sent).
    pub fn stop(&mut self) {
        self.endpoints.clear();
        if let Some(broker) = &self.broker {
            let running = broker.close_connections(std::time::Duration::from_secs(10));
            assert_eq!(running, 0, "connections still running after 10 s");
        }
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(std::time::Duration::from_secs(10));
        }
        self.broker = None;
    }

    /// The log's records, after [`Self::stop`].
    pub fn records(&self) -> Vec<corral_audit::Record> {
        corral_audit::AuditReader::open(&self.audit_path)
            .unwrap()
            .query(&corral_audit::Filter::default())
            .unwrap()
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.stop();
    }
}
