//! Where `corral policy` reads a policy set from: `--dir` (a directory or
//! one file), the schema, the entities and the tools whose actions join
//! the schema; shared by every policy command.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, Result};
use cedar_policy::EntityUid;
use clap::Args;
use corral_policy::{EngineSources, PolicyEngine, PolicyIds, ToolAction, read_entities};

#[derive(Args, Clone)]
pub struct Sources {
    /// The policy directory, or one policies file.
    #[arg(long, default_value = "policies")]
    pub dir: PathBuf,
    /// The base schema [default: DIR/schema.cedarschema].
    #[arg(long)]
    schema: Option<PathBuf>,
    /// Cedar entities JSON [default: DIR/entities.json, if present].
    #[arg(long)]
    entities: Option<PathBuf>,
    /// A tool component whose tools become typed actions (repeatable).
    #[arg(long = "tool", value_name = "FILE.wasm")]
    tools: Vec<PathBuf>,
    /// Name a policy without @id by its position (policy0, policy1, …) as
    /// the Cedar CLI does, for a set written for plain Cedar. `policy
    /// test` always does; `corral up` never does.
    #[arg(long)]
    cedar_ids: bool,
}

impl Sources {
    /// The directory the defaults are looked up in: `--dir`, or the
    /// directory of a policies file.
    pub(crate) fn home(&self) -> PathBuf {
        if self.dir.is_file() {
            self.dir
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."))
        } else {
            self.dir.clone()
        }
    }

    pub(crate) fn schema_file(&self) -> PathBuf {
        if let Some(s) = &self.schema {
            return s.clone();
        }
        let home = self.home();
        // The text form first, then Cedar's JSON form under the names the
        // Cedar CLI's examples use.
        [
            "schema.cedarschema",
            "schema.cedarschema.json",
            "schema.json",
        ]
        .iter()
        .map(|n| home.join(n))
        .find(|p| p.exists())
        .unwrap_or_else(|| home.join("schema.cedarschema"))
    }

    pub(crate) fn tool_actions(&self) -> Result<Vec<ToolAction>> {
        if self.tools.is_empty() {
            return Ok(Vec::new());
        }
        // Through the artifact cache: a Python component takes seconds to
        // compile, and policy authors run these commands again and again.
        let rt = corral_host::runtime_with_cache(
            corral_tools::Limits::default(),
            corral_tools::InternalNetworks::default(),
        )?;
        let mut actions = Vec::new();
        for file in &self.tools {
            let bytes =
                std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
            let component = rt
                .load(&bytes)
                .with_context(|| format!("cannot load {}", file.display()))?;
            for t in component.tools() {
                actions.push(
                    ToolAction::new(&t.name, &t.input_schema)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?,
                );
            }
        }
        Ok(actions)
    }

    pub(crate) fn engine_sources(&self) -> Result<EngineSources> {
        let entities_file = self
            .entities
            .clone()
            .unwrap_or_else(|| self.home().join("entities.json"));
        Ok(EngineSources {
            schema_file: self.schema_file(),
            policy_dir: self.dir.clone(),
            tools: self.tool_actions()?,
            entities: read_entities(&entities_file).map_err(|e| anyhow::anyhow!("{e}"))?,
        })
    }

    pub(crate) fn engine(&self) -> Result<PolicyEngine> {
        self.engine_with(if self.cedar_ids {
            PolicyIds::Positional
        } else {
            PolicyIds::Required
        })
    }

    /// The engine, naming policies as `ids` says; warns when any policy
    /// was named by position.
    pub(crate) fn engine_with(&self, ids: PolicyIds) -> Result<PolicyEngine> {
        let sources = self.engine_sources()?;
        let engine = PolicyEngine::load_with(&sources, ids).map_err(|e| {
            anyhow::anyhow!(
                "{e}\n{} problem(s) in {}; fix them and run `corral policy validate` again",
                e.0.len(),
                self.dir.display()
            )
        })?;
        let unnamed = &engine.policies().unnamed;
        if !unnamed.is_empty() {
            eprintln!(
                "warning: {} of the policies in {} have no @id and are named by position ({}), as the Cedar CLI names them; `corral up` refuses such a set: give each policy an @id before using it",
                unnamed.len(),
                self.dir.display(),
                unnamed.iter().cloned().collect::<Vec<_>>().join(", ")
            );
        }
        Ok(engine)
    }
}

pub(crate) fn parse_uid(text: &str, what: &str) -> Result<EntityUid> {
    EntityUid::from_str(text).map_err(|e| {
        anyhow::anyhow!("{what} `{text}` is not a Cedar entity uid like Type::\"id\": {e}")
    })
}
