//! Properties: Cedar permits that describe a set of requests, annotated
//! with what the policy set must do with every request in it.
//!
//! ```cedar
//! @id("no-agent-writes-a-dotfile")
//! @never
//! permit (principal, action == Action::"write_file", resource)
//! when { context.path like ".*" || context.path like "*/.*" };
//! ```
//!
//! They live in their own directory (`policies/properties/`), which the
//! policy loader never reads, and are validated strictly against the same
//! schema as the policies.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use cedar_policy::{Policy, PolicyId, PolicySet, Schema, ValidationMode, Validator};
use corral_policy::{LoadErrors, Problem, read_policy_dir};

/// What the policy set must do with the requests a property describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropertyKind {
    /// It allows none of them, not even after a person approves.
    Never,
    /// It allows every one of them, without asking anyone.
    Always,
}

impl PropertyKind {
    /// `never` or `always`, as the annotation spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            PropertyKind::Never => "never",
            PropertyKind::Always => "always",
        }
    }
}

/// One property.
#[derive(Debug, Clone)]
pub struct Property {
    /// Its `@id`.
    pub id: String,
    /// `@never` or `@always`.
    pub kind: PropertyKind,
    /// The permit that describes its requests, renamed to its id.
    pub policy: Policy,
    /// The file it came from.
    pub file: PathBuf,
}

impl Property {
    /// The property's requests as a one-policy set, for the compiler.
    pub fn as_set(&self) -> PolicySet {
        // One policy cannot clash with itself.
        PolicySet::from_policies([self.policy.clone()]).unwrap_or_default()
    }
}

fn problem(file: &Path, id: Option<&str>, message: String, help: Option<&str>) -> Problem {
    Problem {
        location: Some(corral_policy::Location {
            file: file.to_path_buf(),
            line: 1,
            column: 1,
        }),
        policy_id: id.map(str::to_string),
        message,
        help: help.map(str::to_string),
    }
}

/// Reads every `.cedar` file in `dir` as properties and validates them
/// against `schema`. A missing directory holds no properties.
pub fn load_properties(dir: &Path, schema: &Schema) -> Result<Vec<Property>, LoadErrors> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let files = read_policy_dir(dir)?;
    let mut problems = Vec::new();
    let mut properties: Vec<Property> = Vec::new();
    for (file, text) in &files {
        let parsed = match PolicySet::from_str(text) {
            Ok(set) => set,
            Err(e) => {
                problems.push(problem(file, None, format!("cannot parse: {e}"), None));
                continue;
            }
        };
        if parsed.templates().next().is_some() {
            problems.push(problem(
                file,
                None,
                "a property cannot be a template".into(),
                Some("write it as a static permit"),
            ));
        }
        for policy in parsed.policies() {
            let Some(id) = policy.annotation("id").filter(|id| !id.trim().is_empty()) else {
                problems.push(problem(
                    file,
                    None,
                    "property has no @id annotation".into(),
                    Some("start it with @id(\"what-must-hold\"); failures name it"),
                ));
                continue;
            };
            let kind = match (
                policy.annotation("never").is_some(),
                policy.annotation("always").is_some(),
            ) {
                (true, false) => PropertyKind::Never,
                (false, true) => PropertyKind::Always,
                (both, _) => {
                    problems.push(problem(
                        file,
                        Some(id),
                        if both {
                            "a property is @never or @always, not both".into()
                        } else {
                            "a property needs @never or @always".into()
                        },
                        Some("@never: the policies allow none of these requests; @always: they allow all of them"),
                    ));
                    continue;
                }
            };
            if policy.effect() != cedar_policy::Effect::Permit {
                problems.push(problem(
                    file,
                    Some(id),
                    "a property is written as a permit: it describes requests, it does not decide them".into(),
                    Some("change `forbid` to `permit`; @never already says the requests must be denied"),
                ));
                continue;
            }
            if properties.iter().any(|p| p.id == id) {
                problems.push(problem(
                    file,
                    Some(id),
                    "duplicate property id".into(),
                    None,
                ));
                continue;
            }
            properties.push(Property {
                id: id.to_string(),
                kind,
                policy: policy.new_id(PolicyId::new(id)),
                file: file.clone(),
            });
        }
    }
    if problems.is_empty() {
        let set = PolicySet::from_policies(properties.iter().map(|p| p.policy.clone()))
            .map_err(|e| LoadErrors(vec![problem(dir, None, e.to_string(), None)]))?;
        let result = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
        for e in result.validation_errors() {
            let id = e.policy_id().to_string();
            let file = properties
                .iter()
                .find(|p| p.id == id)
                .map_or(dir.to_path_buf(), |p| p.file.clone());
            problems.push(problem(&file, Some(&id), e.to_string(), None));
        }
    }
    if problems.is_empty() {
        Ok(properties)
    } else {
        Err(LoadErrors(problems))
    }
}
