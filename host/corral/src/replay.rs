//! `corral policy replay`: put recorded requests to a candidate policy set
//! and list every decision that would flip.
//!
//! Both sides are evaluated now, over the same recorded requests: the
//! current policy directory and the candidate. So a flip is exactly what
//! the edit changes, not what changed since the record was written (the
//! record's own decision is shown too, for context).

use std::path::Path;
use std::str::FromStr;

use anyhow::{Context, Result};
use cedar_policy::EntityUid;
use corral_audit::{AuditReader, Filter, Kind, Record, format_micros};
use corral_policy::{Common, Decision, EngineSources, PolicyEngine, read_entities};
use serde_json::{Value, json};

use crate::exit;

/// The request a record describes, rebuilt and put to `engine`.
fn decide(engine: &PolicyEngine, r: &Record) -> Result<Decision, String> {
    let arguments: Value =
        serde_json::from_str(&r.arguments).map_err(|e| format!("arguments: {e}"))?;
    let session: Value = serde_json::from_str(&r.session).map_err(|e| format!("session: {e}"))?;
    match r.kind {
        Kind::Call => {
            let common = Common::from_json(&session);
            let request = engine
                .tool_request(&r.agent, &r.action, &arguments, &common)
                .map_err(|e| e.to_string())?;
            Ok(engine.authorize(&request))
        }
        Kind::Capability => {
            let mut context = arguments;
            if let Some(map) = context.as_object_mut() {
                map.insert("common".into(), session);
            }
            let resource =
                EntityUid::from_str(&r.resource).map_err(|e| format!("resource: {e}"))?;
            let request = engine
                .request(
                    corral_policy::uid("Agent", &r.agent),
                    corral_policy::uid("Action", &r.action),
                    resource,
                    context,
                )
                .map_err(|e| e.to_string())?;
            Ok(engine.authorize(&request))
        }
        Kind::Outcome => Err("outcome records hold no request".into()),
    }
}

fn verdict(allowed: bool) -> &'static str {
    if allowed { "allow" } else { "deny" }
}

fn by(d: &Decision) -> String {
    if d.policy_ids.is_empty() {
        if d.errors.is_empty() {
            "no policy applies".into()
        } else {
            format!(
                "errors: {}",
                d.errors
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        }
    } else {
        d.policy_ids.join(", ")
    }
}

pub fn candidate_sources(current: &EngineSources, dir: &Path) -> Result<EngineSources> {
    let schema = dir.join("schema.cedarschema");
    let entities = dir.join("entities.json");
    Ok(EngineSources {
        schema_file: if schema.exists() {
            schema
        } else {
            current.schema_file.clone()
        },
        policy_dir: dir.to_path_buf(),
        tools: current.tools.clone(),
        entities: if entities.exists() {
            read_entities(&entities).map_err(|e| anyhow::anyhow!("{e}"))?
        } else {
            current.entities.clone()
        },
    })
}

pub fn replay(
    current_sources: &EngineSources,
    candidate_dir: &Path,
    audit: &Path,
    since_us: Option<i64>,
    json_out: bool,
    fail_on_flip: bool,
) -> Result<u8> {
    let current = PolicyEngine::load(current_sources).map_err(|e| {
        anyhow::anyhow!(
            "current policies in {}: {e}",
            current_sources.policy_dir.display()
        )
    })?;
    let candidate = PolicyEngine::load(&candidate_sources(current_sources, candidate_dir)?)
        .map_err(|e| {
            anyhow::anyhow!(
                "candidate policies in {}: {e}\nfix them; nothing was replayed",
                candidate_dir.display()
            )
        })?;
    let reader = AuditReader::open(audit).context("replay reads the broker's audit log")?;
    let (mut replayed, mut to_deny, mut to_allow, mut unreplayable, mut redacted_flips) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut after = 0;
    loop {
        let page = reader.query(&Filter {
            after_seq: Some(after),
            since_us,
            limit: Some(5_000),
            ..Filter::default()
        })?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for r in page.iter().filter(|r| r.kind != Kind::Outcome) {
            let (now, next) = match (decide(&current, r), decide(&candidate, r)) {
                (Ok(a), Ok(b)) => (a, b),
                (Err(e), _) | (_, Err(e)) => {
                    unreplayable += 1;
                    if !json_out {
                        println!("cannot replay #{}: {e}", r.seq);
                    }
                    continue;
                }
            };
            replayed += 1;
            if now.allowed == next.allowed {
                continue;
            }
            if now.allowed {
                to_deny += 1
            } else {
                to_allow += 1
            }
            if r.redacted {
                redacted_flips += 1;
            }
            if json_out {
                println!(
                    "{}",
                    json!({
                        "seq": r.seq, "time": format_micros(r.time_us), "kind": r.kind,
                        "agent": r.agent, "action": r.action, "resource": r.resource,
                        "arguments": serde_json::from_str::<Value>(&r.arguments).unwrap_or(Value::Null),
                        "recorded": r.decision,
                        "current": {"decision": verdict(now.allowed), "policy_ids": now.policy_ids},
                        "candidate": {"decision": verdict(next.allowed), "policy_ids": next.policy_ids},
                        "redacted": r.redacted,
                    })
                );
            } else {
                println!(
                    "FLIP {}→{} #{} {} {} agent={} action={} resource={} arguments={}{}\n    current:   {} by {}\n    candidate: {} by {}",
                    verdict(now.allowed),
                    verdict(next.allowed),
                    r.seq,
                    format_micros(r.time_us),
                    r.kind.as_str(),
                    r.agent,
                    r.action,
                    r.resource,
                    r.arguments,
                    if r.redacted {
                        " (arguments were redacted; the flip may not reproduce exactly)"
                    } else {
                        ""
                    },
                    verdict(now.allowed),
                    by(&now),
                    verdict(next.allowed),
                    by(&next),
                );
            }
        }
    }
    let flips = to_deny + to_allow;
    let summary = format!(
        "{replayed} decisions replayed: {flips} would flip ({to_deny} allow→deny, {to_allow} deny→allow); {unreplayable} could not be replayed; {redacted_flips} flips involve redacted arguments. current {} vs candidate {}",
        current.policy_set_hash(),
        candidate.policy_set_hash()
    );
    if json_out {
        eprintln!("{summary}");
    } else {
        println!("{summary}");
    }
    Ok(if fail_on_flip && flips > 0 {
        exit::FAILED
    } else {
        0
    })
}
