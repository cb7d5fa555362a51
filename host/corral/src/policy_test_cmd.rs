//! `corral policy test`: test files in the Cedar CLI's `run-tests` format,
//! as the Cedar CLI writes them (unnamed cases, entities inline or in a
//! file, positional policy ids), plus Corral's `ask`.

use std::path::Path;

use anyhow::{Context, Result};
use corral_policy::{PolicyEngine, PolicyIds, read_entities};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::policy_sources::{Sources, parse_uid};

/// One case of the Cedar CLI's `run-tests` format.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestCase {
    /// Optional in Cedar's format; an unnamed case is shown by its place.
    #[serde(default)]
    name: Option<String>,
    request: TestRequest,
    /// Entities for this case: inline, or the name of an entities file
    /// (relative to the test file); Corral's entities file when omitted.
    #[serde(default)]
    entities: Option<Value>,
    decision: TestDecision,
    /// Corral's extension: the request is allowed only by `@approval`
    /// permits, so Corral asks a person. Cedar's own `decision` for it is
    /// `allow` (the approval permits are permits).
    #[serde(default)]
    ask: bool,
    /// Expected deciding policies: each must be among the actual ones.
    #[serde(default)]
    reason: Vec<String>,
    num_errors: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestRequest {
    principal: String,
    action: String,
    resource: String,
    #[serde(default)]
    context: Value,
}

#[derive(Deserialize, PartialEq, Eq, Clone, Copy, Debug)]
#[serde(rename_all = "lowercase")]
enum TestDecision {
    Allow,
    Deny,
}

pub(crate) fn run_test_file(
    engine: &PolicyEngine,
    src: &Sources,
    file: &Path,
) -> Result<(usize, usize)> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let cases: Vec<TestCase> = serde_json::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "{}:{}:{}: not a run-tests file: {e}",
            file.display(),
            e.line(),
            e.column()
        )
    })?;
    println!("{}", file.display());
    let (mut passed, mut failed) = (0, 0);
    for (n, mut case) in cases.into_iter().enumerate() {
        let name = case
            .name
            .take()
            .unwrap_or_else(|| format!("(unnamed case {})", n + 1));
        let own;
        let engine = match &case.entities {
            None => engine,
            Some(entities) => {
                let entities = match entities {
                    // Cedar's format may name an entities file instead.
                    Value::String(path) => {
                        let path = file.parent().unwrap_or(Path::new(".")).join(path);
                        read_entities(&path)
                            .map_err(|e| anyhow::anyhow!("{}: case {name}: {e}", file.display()))?
                    }
                    inline => inline.clone(),
                };
                let mut sources = src.engine_sources()?;
                sources.entities = entities;
                own = PolicyEngine::load_with(&sources, PolicyIds::Positional)
                    .map_err(|e| anyhow::anyhow!("{}: case {name}: {e}", file.display()))?;
                &own
            }
        };
        let result = (|| -> Result<corral_policy::Decision> {
            let req = engine
                .request(
                    parse_uid(&case.request.principal, "principal")?,
                    parse_uid(&case.request.action, "action")?,
                    parse_uid(&case.request.resource, "resource")?,
                    if case.request.context.is_null() {
                        json!({})
                    } else {
                        case.request.context.clone()
                    },
                )
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            Ok(engine.authorize(&req))
        })();
        let verdict = match result {
            Err(e) => Err(format!("request is invalid: {e}")),
            Ok(d) => {
                let got = d.verdict();
                let expected = match (case.decision, case.ask) {
                    (TestDecision::Allow, false) => "allow",
                    (TestDecision::Deny, false) => "deny",
                    (TestDecision::Allow, true) => "ask",
                    (TestDecision::Deny, true) => {
                        anyhow::bail!(
                            "{}: case {name}: \"ask\": true needs \"decision\": \"allow\" (Cedar allows a request that Corral asks about)",
                            file.display(),
                        )
                    }
                };
                let missing: Vec<&String> = case
                    .reason
                    .iter()
                    .filter(|r| !d.policy_ids.contains(r))
                    .collect();
                if got != expected {
                    let fail_closed = if expected == "allow" && !d.errors.is_empty() {
                        "; Cedar may still allow a request when a policy's evaluation fails, Corral denies it (fail closed)"
                    } else {
                        ""
                    };
                    Err(format!(
                        "expected {}, got {} ({}){fail_closed}",
                        titled(expected),
                        titled(got),
                        d.explain()
                    ))
                } else if !missing.is_empty() {
                    Err(format!(
                        "expected deciding policies {missing:?} among {:?}",
                        d.policy_ids
                    ))
                } else if d.errors.len() != case.num_errors {
                    Err(format!(
                        "expected {} errors, got {}: {:?}",
                        case.num_errors,
                        d.errors.len(),
                        d.errors
                    ))
                } else {
                    Ok(d.policy_ids)
                }
            }
        };
        match verdict {
            Ok(ids) => {
                passed += 1;
                let by = if ids.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", ids.join(", "))
                };
                println!("  PASS {name}{by}");
            }
            Err(why) => {
                failed += 1;
                println!("  FAIL {name}: {why}");
            }
        }
    }
    Ok((passed, failed))
}

/// A verdict as test results have always printed it: `Allow`, `Deny`,
/// `Ask`.
fn titled(verdict: &str) -> String {
    let mut chars = verdict.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}
