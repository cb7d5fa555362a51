//! The set of tools a host offers: components listed in configuration,
//! each pinned by sha256, with tool names unique across all of them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::error::LoadError;
use crate::info::ToolInfo;
use crate::runtime::{LoadedComponent, ToolRuntime};

/// One configured component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolSource {
    /// The component file.
    pub path: PathBuf,
    /// Expected sha256 of the file, 64 hex digits.
    pub sha256: String,
}

/// A registered component and where it came from.
#[derive(Debug)]
pub struct RegisteredComponent {
    /// The file it was loaded from.
    pub path: PathBuf,
    /// The loaded component.
    pub component: LoadedComponent,
}

/// Tools by name, each pointing at the component that offers it.
#[derive(Debug, Default)]
pub struct ToolRegistry {
    components: Vec<Arc<RegisteredComponent>>,
    by_name: BTreeMap<String, usize>,
}

/// Hex sha256 of a file's contents, as pinned in configuration.
pub fn file_sha256(path: &Path) -> Result<String, LoadError> {
    let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

impl ToolRegistry {
    /// Loads every source, or none: the first problem is returned and no
    /// partial registry exists.
    pub fn load(runtime: &ToolRuntime, sources: &[ToolSource]) -> Result<Self, LoadError> {
        let mut registry = ToolRegistry::default();
        for source in sources {
            let component = load_pinned(runtime, source)?;
            registry.add(source.path.clone(), component)?;
        }
        Ok(registry)
    }

    fn add(&mut self, path: PathBuf, component: LoadedComponent) -> Result<(), LoadError> {
        let index = self.components.len();
        for tool in component.tools() {
            if let Some(&other) = self.by_name.get(&tool.name) {
                return Err(LoadError::DuplicateTool {
                    tool: tool.name.clone(),
                    first: self.components[other].path.display().to_string(),
                    second: path.display().to_string(),
                });
            }
        }
        for tool in component.tools() {
            self.by_name.insert(tool.name.clone(), index);
        }
        self.components
            .push(Arc::new(RegisteredComponent { path, component }));
        Ok(())
    }

    /// The component offering `tool`, and the tool's description.
    pub fn get(&self, tool: &str) -> Option<(&Arc<RegisteredComponent>, &ToolInfo)> {
        let component = &self.components[*self.by_name.get(tool)?];
        let info = component.component.tool(tool)?;
        Some((component, info))
    }

    /// Every tool, sorted by name.
    pub fn tools(&self) -> impl Iterator<Item = (&ToolInfo, &Arc<RegisteredComponent>)> {
        self.by_name.iter().filter_map(|(name, &i)| {
            let c = &self.components[i];
            c.component.tool(name).map(|t| (t, c))
        })
    }

    /// Every component, in load order.
    pub fn components(&self) -> &[Arc<RegisteredComponent>] {
        &self.components
    }
}

/// Reads a component, checks it against its pin, and loads it.
pub fn load_pinned(
    runtime: &ToolRuntime,
    source: &ToolSource,
) -> Result<LoadedComponent, LoadError> {
    let pin = source.sha256.trim().to_ascii_lowercase();
    if pin.len() != 64 || !pin.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(LoadError::BadPin {
            path: source.path.clone(),
            pin: source.sha256.clone(),
        });
    }
    let bytes = std::fs::read(&source.path).map_err(|e| LoadError::Read {
        path: source.path.clone(),
        source: e,
    })?;
    let actual = hex::encode(Sha256::digest(&bytes));
    if actual != pin {
        return Err(LoadError::DigestMismatch {
            path: source.path.clone(),
            expected: pin,
            actual,
        });
    }
    runtime.load(&bytes)
}
