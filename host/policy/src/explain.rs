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
//! evaluated on its own. That preparation is done once per policy set
//! ([`Explainer::new`], on its first denial), so a denial costs only the
//! evaluations.

use std::collections::HashMap;
use std::str::FromStr;

use cedar_policy::{
    Authorizer, Decision as CedarDecision, Effect, Entities, EvalResult, Expression, Policy,
    PolicySet, Request, eval_expression,
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

/// One part of a condition, ready to evaluate.
struct Part {
    /// As the finding shows it: its Cedar text, or for a part that reads a
    /// secret-looking attribute, which attributes it reads.
    shown: String,
    expr: Expression,
    operands: Vec<Operand>,
}

/// An attribute path or variable a part compares.
struct Operand {
    text: String,
    expr: Expression,
    /// Read through a secret-looking key: its value is never shown.
    secret: bool,
}

/// A `when` or `unless` condition, split both ways.
struct Condition {
    when: bool,
    /// Split at `&&`: where a `when` that did not hold failed.
    conjuncts: Vec<Part>,
    /// Split at `||`: where an `unless` held, or a forbid's `when` did.
    disjuncts: Vec<Part>,
}

/// What [`Explainer`] keeps of one policy.
struct Prepared {
    effect: Effect,
    /// The scope alone as a permit: with nothing left out, without the
    /// principal constraint, without the resource constraint, without
    /// both.
    scopes: [PolicySet; 4],
    principal: String,
    resource: String,
    conditions: Vec<Condition>,
}

fn part(expr: &Value) -> Option<Part> {
    let text = text_of(expr)?;
    let mut found = Vec::new();
    operands(expr, &mut found);
    let mut operands_out: Vec<Operand> = Vec::new();
    for o in found {
        let Some(text) = text_of(o) else { continue };
        if operands_out.iter().any(|x| x.text == text) {
            continue;
        }
        let Ok(parsed) = Expression::from_str(&text) else {
            continue;
        };
        operands_out.push(Operand {
            secret: reads_secret_key(o),
            text,
            expr: parsed,
        });
    }
    Some(Part {
        // A condition on a secret-looking attribute may hold the secret
        // it expects: it is named, never quoted.
        shown: secret_paths(expr)
            .map(|paths| format!("a condition on {paths}"))
            .unwrap_or_else(|| text.clone()),
        expr: Expression::from_str(&text).ok()?,
        operands: operands_out,
    })
}

fn parts(body: &Value, op: &str) -> Vec<Part> {
    let mut split_parts = Vec::new();
    split(body, op, &mut split_parts);
    split_parts.into_iter().filter_map(part).collect()
}

impl Prepared {
    fn new(policy: &Policy) -> Option<Prepared> {
        let est = policy.to_json().ok()?;
        let scope = |ignored: &[&str]| -> Option<PolicySet> {
            let mut est = est.clone();
            est["conditions"] = json!([]);
            est["effect"] = json!("permit");
            for part in ignored {
                est[*part] = json!({ "op": "All" });
            }
            PolicySet::from_policies([Policy::from_json(None, est).ok()?]).ok()
        };
        let conditions = est["conditions"]
            .as_array()
            .map(|list| {
                list.iter()
                    .map(|c| Condition {
                        when: c["kind"] == "when",
                        conjuncts: parts(&c["body"], "&&"),
                        disjuncts: parts(&c["body"], "||"),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Some(Prepared {
            effect: policy.effect(),
            scopes: [
                scope(&[])?,
                scope(&["principal"])?,
                scope(&["resource"])?,
                scope(&["principal", "resource"])?,
            ],
            principal: scope_text("principal", &est["principal"]),
            resource: scope_text("resource", &est["resource"]),
            conditions,
        })
    }
}

/// Where one part of a condition evaluated to.
enum Outcome {
    Value(bool),
    Error(String),
}

/// Every policy of a set, prepared to explain denials.
pub struct Explainer {
    policies: HashMap<String, Prepared>,
    /// Policy ids in the set's order, for the near misses.
    order: Vec<String>,
    authorizer: Authorizer,
}

impl std::fmt::Debug for Explainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Explainer")
            .field("policies", &self.order.len())
            .finish()
    }
}

/// One denial being explained.
struct Denial<'a> {
    request: &'a Request,
    entities: &'a Entities,
    authorizer: &'a Authorizer,
}

impl Denial<'_> {
    fn eval(&self, expr: &Expression) -> Result<EvalResult, String> {
        eval_expression(self.request, self.entities, expr).map_err(|e| e.to_string())
    }

    fn outcome(&self, expr: &Expression) -> Outcome {
        match self.eval(expr) {
            Ok(EvalResult::Bool(b)) => Outcome::Value(b),
            Ok(other) => Outcome::Error(format!("evaluates to {other}, not a boolean")),
            Err(e) => Outcome::Error(e),
        }
    }

    fn values(&self, part: &Part) -> Vec<String> {
        part.operands
            .iter()
            .take(MAX_VALUES)
            .map(|o| match self.eval(&o.expr) {
                // The explanation lands in the record's detail, which the
                // log's redaction of arguments does not reach: a value
                // read through a secret-looking attribute, or too long to
                // log, is not shown.
                Ok(_) if o.secret => format!("{} is [redacted]", o.text),
                Ok(EvalResult::String(s)) if s.len() > corral_gate::redaction::MAX_STRING_BYTES => {
                    format!("{} is [{} bytes]", o.text, s.len())
                }
                Ok(v) => {
                    let mut v = v.to_string();
                    if v.chars().count() > MAX_VALUE_CHARS {
                        v = v.chars().take(MAX_VALUE_CHARS).collect::<String>() + "…";
                    }
                    format!("{} is {v}", o.text)
                }
                Err(_) => format!("{} is missing", o.text),
            })
            .collect()
    }

    /// Whether `p`'s scope matches, with `ignoring` its principal (1), its
    /// resource (2) or both (3) constraints left out.
    fn in_scope(&self, p: &Prepared, ignoring: usize) -> bool {
        self.authorizer
            .is_authorized(self.request, &p.scopes[ignoring], self.entities)
            .decision()
            == CedarDecision::Allow
    }

    /// The first part of `p`'s conditions that decides it: for a policy
    /// that did not apply, the false `when` part or true `unless` part; for
    /// one that applied, the `when` part that held.
    fn finding(&self, id: &str, p: &Prepared, applied: bool) -> Option<Finding> {
        for condition in &p.conditions {
            let when = condition.when;
            // Not applying: a `when` fails at its first false conjunct, an
            // `unless` at its first true disjunct. Applying: a `when`
            // holds through its first true disjunct.
            let candidates = if when && !applied {
                &condition.conjuncts
            } else {
                &condition.disjuncts
            };
            for part in candidates {
                let text = &part.shown;
                let decisive = match (self.outcome(&part.expr), when, applied) {
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
                        policy_id: id.to_string(),
                        condition,
                        values: self.values(part),
                    });
                }
            }
        }
        applied.then(|| Finding {
            policy_id: id.to_string(),
            condition: "its scope matches and it has no conditions".into(),
            values: Vec::new(),
        })
    }

    /// For a permit whose action matches but whose principal or resource
    /// constraint left the request out: which one.
    fn near_miss(&self, id: &str, p: &Prepared) -> Option<Finding> {
        if p.effect != Effect::Permit || !self.in_scope(p, 3) || self.in_scope(p, 0) {
            return None;
        }
        let culprits: &[(&str, &str)] = if self.in_scope(p, 1) {
            &[("principal", &p.principal)]
        } else if self.in_scope(p, 2) {
            &[("resource", &p.resource)]
        } else {
            &[("principal", &p.principal), ("resource", &p.resource)]
        };
        let conditions: Vec<String> = culprits.iter().map(|(_, t)| format!("`{t}`")).collect();
        Some(Finding {
            policy_id: id.to_string(),
            condition: format!("{} does not hold", conditions.join(" and ")),
            values: culprits
                .iter()
                .filter_map(|(var, _)| {
                    let expr = Expression::from_str(var).ok()?;
                    self.eval(&expr).ok().map(|v| format!("{var} is {v}"))
                })
                .collect(),
        })
    }
}

impl Explainer {
    /// Prepares every policy of `set`.
    pub fn new(set: &PolicySet) -> Explainer {
        let mut policies = HashMap::new();
        let mut order = Vec::new();
        for policy in set.policies() {
            let id = policy.id().to_string();
            if let Some(p) = Prepared::new(policy) {
                policies.insert(id.clone(), p);
                order.push(id);
            }
        }
        Explainer {
            policies,
            order,
            authorizer: Authorizer::new(),
        }
    }

    /// The findings for a denied request. `candidates` are the ids of the
    /// policies that might apply (the index's candidates); `deciding` the
    /// decision's policies (the forbids that applied, or those that erred).
    pub fn explain_denial<'a>(
        &self,
        request: &Request,
        entities: &Entities,
        candidates: impl Iterator<Item = &'a str>,
        deciding: &[String],
    ) -> Vec<Finding> {
        let denial = Denial {
            request,
            entities,
            authorizer: &self.authorizer,
        };
        let mut out = Vec::new();
        let mut permits_in_scope = 0;
        for id in candidates {
            let Some(p) = self.policies.get(id) else {
                continue;
            };
            let decided = deciding.iter().any(|d| d == id);
            let finding = if decided {
                // A forbid that applied, or a policy whose error denied.
                denial.finding(id, p, p.effect == Effect::Forbid)
            } else if p.effect == Effect::Permit && deciding.is_empty() && denial.in_scope(p, 0) {
                permits_in_scope += 1;
                denial.finding(id, p, false)
            } else {
                None
            };
            out.extend(finding);
        }
        if deciding.is_empty() && permits_in_scope == 0 {
            for id in &self.order {
                if let Some(p) = self.policies.get(id) {
                    out.extend(denial.near_miss(id, p));
                }
            }
            if out.is_empty() {
                out.push(Finding {
                    policy_id: "(no permit)".into(),
                    condition: "no permit's scope covers this principal, action and resource"
                        .into(),
                    values: Vec::new(),
                });
            }
        }
        out
    }
}
