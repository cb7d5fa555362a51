//! The tools a host serves: the runtime (with its artifact cache), the
//! pinned components, and the Cedar action each tool becomes.

use std::sync::Arc;

use corral_distribution::UNSIGNED;
use corral_policy::provenance::Provenance;

use corral_tools::{
    ArtifactCache, InternalNetworks, Limits, LoadError, ToolRegistry, ToolRuntime, ToolSource,
};

/// A component ready to load, and what loading it established.
#[derive(Debug, Clone)]
pub struct PinnedTool {
    /// The file and its pin.
    pub source: ToolSource,
    /// Publisher, digest and source, for the tool's Cedar entities.
    pub provenance: Provenance,
}

impl PinnedTool {
    /// A local file, pinned to `sha256`: unsigned, from `file:PATH`.
    pub fn file(source: ToolSource) -> Self {
        let provenance = Provenance {
            publisher: UNSIGNED.to_string(),
            digest: format!("sha256:{}", source.sha256.trim().to_ascii_lowercase()),
            source: format!("file:{}", source.path.display()),
        };
        PinnedTool { source, provenance }
    }
}

/// A runtime with the on-disk artifact cache, when it is usable.
pub fn runtime_with_cache(
    limits: Limits,
    internal: InternalNetworks,
) -> Result<ToolRuntime, LoadError> {
    let mut builder = ToolRuntime::builder()
        .default_limits(limits)
        .internal_networks(internal);
    if let Some(dir) = ArtifactCache::default_dir() {
        // A cache we may not use is a warning, not a failure: it only costs
        // compile time.
        match ArtifactCache::open(&dir) {
            Ok(_) => builder = builder.cache_dir(dir),
            Err(e) => tracing::warn!("not using the artifact cache: {e}"),
        }
    }
    builder.build()
}

/// Pinned components loaded, and each tool's Cedar action: what
/// `corral broker` and the host serve.
pub struct LoadedTools {
    /// The runtime the tools run in.
    pub runtime: Arc<ToolRuntime>,
    /// The tools by name, each with its component.
    pub registry: Arc<ToolRegistry>,
    /// Each tool's typed Cedar action.
    pub actions: Vec<corral_policy::ToolAction>,
}

/// Why tools could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ToolsError {
    /// A component could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A tool's input schema does not map to a Cedar type.
    #[error("tool `{tool}`: {problem}")]
    Action {
        /// The tool.
        tool: String,
        /// What does not map, and how.
        problem: String,
    },
}

/// Loads pinned tool components and derives each tool's Cedar action,
/// carrying its component's provenance.
pub fn load_tools(
    tools: &[PinnedTool],
    internal: InternalNetworks,
) -> Result<LoadedTools, ToolsError> {
    let runtime = Arc::new(runtime_with_cache(Limits::default(), internal)?);
    let sources: Vec<ToolSource> = tools.iter().map(|t| t.source.clone()).collect();
    let registry = Arc::new(ToolRegistry::load(&runtime, &sources)?);
    let mut actions = Vec::new();
    for (info, component) in registry.tools() {
        let action =
            corral_policy::ToolAction::new(&info.name, &info.input_schema).map_err(|e| {
                ToolsError::Action {
                    tool: info.name.clone(),
                    problem: e.to_string(),
                }
            })?;
        let provenance = tools
            .iter()
            .find(|t| t.source.path == component.path)
            .map(|t| t.provenance.clone());
        actions.push(match provenance {
            Some(p) => action.with_provenance(p),
            None => action,
        });
    }
    Ok(LoadedTools {
        runtime,
        registry,
        actions,
    })
}
