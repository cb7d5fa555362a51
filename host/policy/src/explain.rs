//! Why a request was denied, in the terms of the policy text: for each
//! permit whose scope matched, the first `when` condition that was false
//! (or `unless` condition that held), with the values it compared; for a
//! forbid that applied, the condition that held; for an evaluation error,
//! the expression that failed.
//!
//! Computed only for denials, so an allowed call pays nothing for it.
//! Conditions are taken from Cedar's JSON form of each policy: a `when`
//! body is split at its top-level `&&`, an `unless` or a forbid's body at
//! its top-level `||`, and each part is printed back as Cedar text and
//! evaluated on its own.

use std::str::FromStr;

use cedar_policy::{
    Authorizer, Decision as CedarDecision, Effect, Entities, Expression, Policy, PolicySet,
    Request, eval_expression,
};
use serde_json::{Value, json};

/// How many values one finding shows, and how long each may be.
const MAX_VALUES: usize = 4;
const MAX_VALUE_CHARS: usize = 120;

/// Why one policy did, or did not, apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The policy.
    pub policy_id: String,
    /// What was found, e.g. `context.path like "notes/*" is false`.
    pub condition: String,
    /// The values the condition compared, e.g. `context.path is ".env"`.
    pub values: Vec<String>,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.policy_id, self.condition)?;
        if !self.values.is_empty() {
            write!(f, " ({})", self.values.join(", "))?;
        }
        Ok(())
    }
}

/// Splits `expr` at its top-level `op` (`&&` or `||`), left to right.
fn split<'a>(expr: &'a Value, op: &str, out: &mut Vec<&'a Value>) {
    match expr.get(op) {
        Some(both) => {
            split(&both["left"], op, out);
            split(&both["right"], op, out);
        }
        None => out.push(expr),
    }
}

/// Cedar text for one expression of a policy's JSON form.
fn text_of(expr: &Value) -> Option<String> {
    let wrapper = json!({
        "effect": "permit",
        "principal": { "op": "All" },
        "action": { "op": "All" },
        "resource": { "op": "All" },
        "conditions": [{ "kind": "when", "body": expr }],
    });
    let policy = Policy::from_json(None, wrapper).ok()?;
    let text = policy.to_string();
    let start = text.find("when")?;
    let open = start + text[start..].find('{')? + 1;
    let close = text.rfind('}')?;
    (open <= close).then(|| text[open..close].trim().to_string())
}

/// The attribute paths (`context.input.path`, `principal.workspace`) and
/// bare `principal`/`resource` an expression reads, outermost first.
fn operands<'a>(expr: &'a Value, out: &mut Vec<&'a Value>) {
    if expr.get(".").is_some() {
        out.push(expr);
        return;
    }
    if let Some(var) = expr.get("Var").and_then(Value::as_str) {
        if var == "principal" || var == "resource" {
            out.push(expr);
        }
        return;
    }
    match expr {
        Value::Object(map) => map.values().for_each(|v| operands(v, out)),
        Value::Array(list) => list.iter().for_each(|v| operands(v, out)),
        _ => {}
    }
}

/// Whether an attribute path (`context.input.api_token`) passes through a
/// key the audit log would redact.
fn reads_secret_key(operand: &Value) -> bool {
    let mut at = operand;
    while let Some(access) = at.get(".") {
        if access["attr"]
            .as_str()
            .is_some_and(corral_gate::redaction::is_secret_key)
        {
            return true;
        }
        at = &access["left"];
    }
    false
}

/// The secret-looking attribute paths `part` reads, as Cedar text, if any.
fn secret_paths(part: &Value) -> Option<String> {
    let mut found = Vec::new();
    operands(part, &mut found);
    let secret: Vec<String> = found
        .into_iter()
        .filter(|o| reads_secret_key(o))
        .filter_map(text_of)
        .collect();
    (!secret.is_empty()).then(|| secret.join(", "))
}

/// Where one part of a condition evaluated to.
enum Outcome {
    Value(bool),
    Error(String),
}

struct Evaluator<'a> {
    request: &'a Request,
    entities: &'a Entities,
}

impl Evaluator<'_> {
    fn eval(&self, text: &str) -> Result<cedar_policy::EvalResult, String> {
        let expr = Expression::from_str(text).map_err(|e| e.to_string())?;
        eval_expression(self.request, self.entities, &expr).map_err(|e| e.to_string())
    }

    fn outcome(&self, text: &str) -> Outcome {
        match self.eval(text) {
            Ok(cedar_policy::EvalResult::Bool(b)) => Outcome::Value(b),
            Ok(other) => Outcome::Error(format!("evaluates to {other}, not a boolean")),
            Err(e) => Outcome::Error(e),
        }
    }

    fn values(&self, expr: &Value) -> Vec<String> {
        let mut found = Vec::new();
        operands(expr, &mut found);
        let mut out: Vec<String> = Vec::new();
        for operand in found {
            let Some(text) = text_of(operand) else {
                continue;
            };
            let shown = match self.eval(&text) {
                // The explanation lands in the record's detail, which the
                // log's redaction of arguments does not reach: a value read
                // through a secret-looking attribute, or too long to log,
                // is not shown.
                Ok(_) if reads_secret_key(operand) => format!("{text} is [redacted]"),
                Ok(cedar_policy::EvalResult::String(s))
                    if s.len() > corral_gate::redaction::MAX_STRING_BYTES =>
                {
                    format!("{text} is [{} bytes]", s.len())
                }
                Ok(v) => {
                    let mut v = v.to_string();
                    if v.chars().count() > MAX_VALUE_CHARS {
                        v = v.chars().take(MAX_VALUE_CHARS).collect::<String>() + "…";
                    }
                    format!("{text} is {v}")
                }
                Err(_) => format!("{text} is missing"),
            };
            if !out.contains(&shown) {
                out.push(shown);
            }
            if out.len() == MAX_VALUES {
                break;
            }
        }
        out
    }

    /// Whether `policy`'s scope (principal, action, resource) matches.
    fn scope_matches(&self, policy: &Policy) -> bool {
        self.scope_matches_but(policy, &[])
    }

    /// Whether `policy`'s scope matches with the parts named in `ignored`
    /// (`principal`, `resource`) taken as unconstrained.
    fn scope_matches_but(&self, policy: &Policy, ignored: &[&str]) -> bool {
        let Ok(mut est) = policy.to_json() else {
            return false;
        };
        est["conditions"] = json!([]);
        est["effect"] = json!("permit");
        for part in ignored {
            est[*part] = json!({ "op": "All" });
        }
        let Ok(scope) = Policy::from_json(None, est) else {
            return false;
        };
        let Ok(set) = PolicySet::from_policies([scope]) else {
            return false;
        };
        Authorizer::new()
            .is_authorized(self.request, &set, self.entities)
            .decision()
            == CedarDecision::Allow
    }

    /// The first part of `policy`'s conditions that decides it: for a
    /// policy that did not apply, the false `when` part or true `unless`
    /// part; for one that applied, the `when` part that held.
    fn finding(&self, policy: &Policy, applied: bool) -> Option<Finding> {
        let est = policy.to_json().ok()?;
        let conditions = est["conditions"].as_array().cloned().unwrap_or_default();
        for condition in &conditions {
            let when = condition["kind"] == "when";
            let mut parts = Vec::new();
            // Not applying: a `when` fails at its first false conjunct, an
            // `unless` at its first true disjunct. Applying: a `when`
            // holds through its first true disjunct.
            split(
                &condition["body"],
                if when && !applied { "&&" } else { "||" },
                &mut parts,
            );
            for part in parts {
                let Some(text) = text_of(part) else { continue };
                let outcome = self.outcome(&text);
                // A condition on a secret-looking attribute may hold the
                // secret it expects: it is named, never quoted.
                let text = match secret_paths(part) {
                    Some(paths) => format!("a condition on {paths}"),
                    None => text,
                };
                let decisive = match (outcome, when, applied) {
                    (Outcome::Error(e), _, _) => Some(format!("evaluating `{text}` failed: {e}")),
                    (Outcome::Value(false), true, false) => Some(format!("`{text}` is false")),
                    (Outcome::Value(true), false, false) => {
                        Some(format!("`unless {{ {text} }}` holds"))
                    }
                    (Outcome::Value(true), true, true) => Some(format!("`{text}` holds")),
                    (Outcome::Value(false), false, true) => {
                        Some(format!("`unless {{ {text} }}` is false"))
                    }
                    _ => None,
                };
                if let Some(condition) = decisive {
                    return Some(Finding {
                        policy_id: policy.id().to_string(),
                        condition,
                        values: self.values(part),
                    });
                }
            }
        }
        applied.then(|| Finding {
            policy_id: policy.id().to_string(),
            condition: "its scope matches and it has no conditions".into(),
            values: Vec::new(),
        })
    }
}

/// A scope constraint as Cedar writes it: `principal in Team::"a"`.
fn scope_text(var: &str, constraint: &Value) -> String {
    let uid = |e: &Value| {
        format!(
            "{}::{}",
            e["type"].as_str().unwrap_or("?"),
            Value::String(e["id"].as_str().unwrap_or("?").to_string())
        )
    };
    match constraint["op"].as_str() {
        Some("==") => format!("{var} == {}", uid(&constraint["entity"])),
        Some("in") => format!("{var} in {}", uid(&constraint["entity"])),
        Some("is") => {
            let ty = constraint["entity_type"].as_str().unwrap_or("?");
            match constraint.get("in") {
                Some(inner) => format!("{var} is {ty} in {}", uid(&inner["entity"])),
                None => format!("{var} is {ty}"),
            }
        }
        _ => format!("{var} (a template slot)"),
    }
}

/// For a request no permit's scope covers: the permits for its action
/// whose principal or resource constraint is what left it out.
fn near_misses<'a>(
    evaluator: &Evaluator<'_>,
    all: impl Iterator<Item = &'a Policy>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    for policy in all.filter(|p| p.effect() == Effect::Permit) {
        if !evaluator.scope_matches_but(policy, &["principal", "resource"])
            || evaluator.scope_matches(policy)
        {
            continue;
        }
        let Ok(est) = policy.to_json() else { continue };
        let culprits: &[&str] = if evaluator.scope_matches_but(policy, &["principal"]) {
            &["principal"]
        } else if evaluator.scope_matches_but(policy, &["resource"]) {
            &["resource"]
        } else {
            &["principal", "resource"]
        };
        let conditions: Vec<String> = culprits
            .iter()
            .map(|var| format!("`{}`", scope_text(var, &est[*var])))
            .collect();
        out.push(Finding {
            policy_id: policy.id().to_string(),
            condition: format!("{} does not hold", conditions.join(" and ")),
            values: culprits
                .iter()
                .filter_map(|var| evaluator.eval(var).ok().map(|v| format!("{var} is {v}")))
                .collect(),
        });
    }
    out
}

/// The findings for a denied request. `candidates` are the policies that
/// might apply (the index's candidates), `all` every enforced policy (for
/// a request no permit's scope covers); `deciding` the
/// decision's policies (the forbids that applied, or those that erred).
pub fn explain_denial<'a>(
    request: &Request,
    entities: &Entities,
    candidates: impl Iterator<Item = &'a Policy>,
    all: impl Iterator<Item = &'a Policy>,
    deciding: &[String],
) -> Vec<Finding> {
    let evaluator = Evaluator { request, entities };
    let mut out = Vec::new();
    let mut permits_in_scope = 0;
    for policy in candidates {
        let id = policy.id().to_string();
        let decided = deciding.contains(&id);
        let finding = match policy.effect() {
            // A forbid (or a policy whose error denied): why it applied.
            _ if decided => evaluator.finding(policy, policy.effect() == Effect::Forbid),
            Effect::Permit if deciding.is_empty() && evaluator.scope_matches(policy) => {
                permits_in_scope += 1;
                evaluator.finding(policy, false)
            }
            _ => None,
        };
        out.extend(finding);
    }
    if deciding.is_empty() && permits_in_scope == 0 {
        out.extend(near_misses(&evaluator, all));
    }
    if deciding.is_empty() && permits_in_scope == 0 && out.is_empty() {
        out.push(Finding {
            policy_id: "(no permit)".into(),
            condition: "no permit's scope covers this principal, action and resource".into(),
            values: Vec::new(),
        });
    }
    out
}
