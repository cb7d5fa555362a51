//! A policy set read from disk: every statement parsed, named by its `@id`
//! (or, for a foreign set, by Cedar's positional id), sorted into enforced,
//! `@approval` and `@shadow` policies, and validated strictly.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use cedar_policy::{Policy, PolicyId, PolicySet, Schema, Template, ValidationMode, Validator};
use sha2::{Digest, Sha256};

use crate::approval::Approvers;
use crate::load::{LoadErrors, Origin, Problem, diagnostic_problem, split_statements};

/// How policies are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PolicyIds {
    /// Every policy carries `@id("…")`: Corral's own sets.
    #[default]
    Required,
    /// A policy without `@id` takes Cedar's positional id (`policy0`,
    /// `policy1`, … in statement order), as the Cedar CLI names it: sets
    /// written for plain Cedar, run by `corral policy test`.
    Positional,
}

/// A validated policy set with where each policy came from.
#[derive(Debug, Clone)]
pub struct LoadedPolicies {
    /// The enforced policies: everything but `@shadow` ones.
    pub set: PolicySet,
    /// `@shadow` policies: evaluated and recorded, never enforced.
    pub shadow: PolicySet,
    /// Where each policy, enforced or shadow, came from.
    pub origins: BTreeMap<String, Origin>,
    /// Each `@approval` permit's approvers, by policy id.
    pub approvals: BTreeMap<String, Approvers>,
    /// Policies that had no `@id` and were named by position.
    pub unnamed: BTreeSet<String>,
    /// sha256 over the files' names and contents, in name order: the
    /// identity of this policy set in every decision.
    pub hash: String,
}

impl LoadedPolicies {
    /// The enforced policies without the `@approval` permits: what allows
    /// a request without asking anyone.
    pub fn outright(&self) -> PolicySet {
        let mut set = PolicySet::new();
        for p in self.set.policies() {
            if !self.approvals.contains_key(&p.id().to_string()) {
                // Ids are unique in `self.set`, so adding cannot clash.
                let _ = set.add(p.clone());
            }
        }
        set
    }

    /// The enforced policies plus the shadow ones: the set as it would be
    /// were the shadow policies enforced.
    pub fn with_shadow(&self) -> PolicySet {
        let mut set = self.set.clone();
        for p in self.shadow.policies() {
            let _ = set.add(p.clone());
        }
        set
    }
}

/// Reads every `.cedar` file in `path` (not recursive), in name order; or
/// `path` itself when it is a file, as the Cedar CLI's `--policies` takes
/// one.
pub fn read_policy_dir(path: &Path) -> Result<Vec<(PathBuf, String)>, LoadErrors> {
    let err = |message: String| {
        LoadErrors(vec![Problem {
            location: None,
            policy_id: None,
            message,
            help: None,
        }])
    };
    if path.is_file() {
        let text = std::fs::read_to_string(path)
            .map_err(|e| err(format!("cannot read {}: {e}", path.display())))?;
        return Ok(vec![(path.to_path_buf(), text)]);
    }
    let entries = std::fs::read_dir(path).map_err(|e| {
        err(format!(
            "cannot read policy directory {}: {e}",
            path.display()
        ))
    })?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| err(format!("{}: {e}", path.display())))?
            .path();
        if path.extension().is_some_and(|x| x == "cedar") && path.is_file() {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| err(format!("cannot read {}: {e}", path.display())))?;
            files.push((path, text));
        }
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(files)
}

/// One statement: a static policy or a template.
enum Statement {
    Policy(Policy),
    Template(Template),
}

impl Statement {
    fn annotation(&self, key: &str) -> Option<&str> {
        match self {
            Statement::Policy(p) => p.annotation(key),
            Statement::Template(t) => t.annotation(key),
        }
    }

    fn effect(&self) -> cedar_policy::Effect {
        match self {
            Statement::Policy(p) => p.effect(),
            Statement::Template(t) => t.effect(),
        }
    }
}

/// Parses, names, sorts and validates (strict) `files` against `schema`;
/// every policy must carry an `@id`.
pub fn load_policies(
    files: &[(PathBuf, String)],
    schema: &Schema,
) -> Result<LoadedPolicies, LoadErrors> {
    load_policies_with(files, schema, PolicyIds::Required)
}

/// [`load_policies`], naming policies as `ids` says.
pub fn load_policies_with(
    files: &[(PathBuf, String)],
    schema: &Schema,
    ids: PolicyIds,
) -> Result<LoadedPolicies, LoadErrors> {
    let mut problems = Vec::new();
    let mut set = PolicySet::new();
    let mut shadow = PolicySet::new();
    let mut origins: BTreeMap<String, Origin> = BTreeMap::new();
    let mut approvals = BTreeMap::new();
    let mut unnamed = BTreeSet::new();
    let mut hasher = Sha256::new();
    let mut position = 0usize;
    for (file, text) in files {
        hasher.update(
            file.file_name()
                .map(|n| n.as_encoded_bytes())
                .unwrap_or_default(),
        );
        hasher.update([0]);
        hasher.update(text.as_bytes());
        hasher.update([0]);
        let shared: std::sync::Arc<str> = text.as_str().into();
        for (offset, text) in split_statements(text) {
            let origin = Origin::new(file.clone(), offset, shared.clone());
            let this_position = position;
            position += 1;
            let parsed = match PolicySet::from_str(text) {
                Ok(p) => p,
                Err(e) => {
                    problems.push(diagnostic_problem(&e, &origin, None));
                    continue;
                }
            };
            let statement = match (parsed.policies().next(), parsed.templates().next()) {
                (Some(p), None) => Statement::Policy(p.clone()),
                (None, Some(t)) => Statement::Template(t.clone()),
                _ => {
                    problems.push(Problem {
                        location: Some(origin.start()),
                        policy_id: None,
                        message: "expected exactly one policy or template".into(),
                        help: None,
                    });
                    continue;
                }
            };
            let named = statement
                .annotation("id")
                .map(str::to_string)
                .filter(|id| !id.trim().is_empty());
            let id = match (named, ids) {
                (Some(id), _) => id,
                (None, PolicyIds::Positional) => {
                    let id = format!("policy{this_position}");
                    unnamed.insert(id.clone());
                    id
                }
                (None, PolicyIds::Required) => {
                    problems.push(Problem {
                        location: Some(origin.start()),
                        policy_id: None,
                        message: "policy has no @id annotation".into(),
                        help: Some("every policy starts with @id(\"a-unique-name\"); the id is what decisions and audit records cite (a set written for plain Cedar runs in `corral policy test`, or with --cedar-ids, named by position)".into()),
                    });
                    continue;
                }
            };
            if let Some(first) = origins.get(&id) {
                problems.push(Problem {
                    location: Some(origin.start()),
                    policy_id: Some(id.clone()),
                    message: format!("duplicate @id; first used at {}", first.start()),
                    help: Some("policy ids must be unique across the directory".into()),
                });
                continue;
            }
            let problem = |message: String, help: Option<&str>| Problem {
                location: Some(origin.start()),
                policy_id: Some(id.clone()),
                message,
                help: help.map(str::to_string),
            };
            if let Some(kind) = ["never", "always"]
                .into_iter()
                .find(|k| statement.annotation(k).is_some())
            {
                problems.push(problem(
                    format!("@{kind} marks a property, and properties are proven, not enforced"),
                    Some("move it to the properties directory (policies/properties/) and run `corral policy prove`"),
                ));
                continue;
            }
            let is_shadow = statement.annotation("shadow").is_some();
            if let Some(text) = statement.annotation("approval") {
                let parsed = match (statement.effect(), is_shadow) {
                    (cedar_policy::Effect::Forbid, _) => Err((
                        "@approval on a forbid: a forbid always wins and can never be approved away".to_string(),
                        Some("remove @approval from the forbid; to ask before allowing, write a permit with @approval"),
                    )),
                    (_, true) => Err((
                        "@approval on a @shadow policy: a shadow policy is recorded, never enforced, so it cannot ask anyone".to_string(),
                        Some("try the permit as @shadow without @approval first; add @approval when you enforce it"),
                    )),
                    (cedar_policy::Effect::Permit, false) => {
                        Approvers::parse(text).map_err(|m| (m, None))
                    }
                };
                match parsed {
                    Ok(approvers) => {
                        approvals.insert(id.clone(), approvers);
                    }
                    Err((message, help)) => {
                        problems.push(problem(message, help));
                        continue;
                    }
                }
            }
            let pid = PolicyId::new(&id);
            let into = if is_shadow { &mut shadow } else { &mut set };
            let added = match statement {
                Statement::Policy(p) => into.add(p.new_id(pid)).map_err(|e| e.to_string()),
                Statement::Template(_) if is_shadow => {
                    Err("@shadow on a template: only static policies can be shadowed".into())
                }
                Statement::Template(t) => {
                    into.add_template(t.new_id(pid)).map_err(|e| e.to_string())
                }
            };
            if let Err(message) = added {
                problems.push(problem(message, None));
                continue;
            }
            origins.insert(id, origin);
        }
    }
    if problems.is_empty() {
        let validator = Validator::new(schema.clone());
        for checked in [&set, &shadow] {
            let result = validator.validate(checked, ValidationMode::Strict);
            for e in result.validation_errors() {
                let id = e.policy_id().to_string();
                let problem = match origins.get(&id) {
                    Some(origin) => diagnostic_problem(e, origin, Some(id)),
                    None => Problem {
                        location: None,
                        policy_id: Some(id),
                        message: e.to_string(),
                        help: None,
                    },
                };
                problems.push(problem);
            }
        }
    }
    if !problems.is_empty() {
        return Err(LoadErrors(problems));
    }
    Ok(LoadedPolicies {
        set,
        shadow,
        origins,
        approvals,
        unnamed,
        hash: hex::encode(&hasher.finalize()[..16]),
    })
}
