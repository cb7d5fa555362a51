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
use corral_policy::{Common, Decision, EngineSources, PolicyEngine, RequestEntity, read_entities};
use serde_json::{Value, json};

use crate::exit;
use crate::shown::inline;

/// Why a record cannot be decided again: the text names the field.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Unreplayable(String);

impl From<String> for Unreplayable {
    fn from(why: String) -> Unreplayable {
        Unreplayable(why)
    }
}

impl From<&str> for Unreplayable {
    fn from(why: &str) -> Unreplayable {
        Unreplayable(why.to_string())
    }
}

/// The request a record describes, rebuilt and put to `engine`.
pub(crate) fn decide(engine: &PolicyEngine, r: &Record) -> Result<Decision, Unreplayable> {
    let arguments: Value =
        serde_json::from_str(&r.arguments).map_err(|e| format!("arguments: {e}"))?;
    let session: Value = serde_json::from_str(&r.session).map_err(|e| format!("session: {e}"))?;
    match r.kind {
        Kind::Call if matches!(r.action.as_str(), "invoke" | "use_model" | "post_message") => {
            host_action(engine, r, &arguments, session)
        }
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
        Kind::ApprovalRequested
        | Kind::ApprovalGranted
        | Kind::ApprovalDenied
        | Kind::ApprovalExpired
        | Kind::ApprovalRefused => Err("approval records are replayed through their call".into()),
        Kind::ScheduleSkipped => Err("a skipped scheduled run was never decided".into()),
    }
}

/// `Type::"id"` text → the id.
fn id_of(uid_text: &str, what: &str) -> Result<(EntityUid, String), Unreplayable> {
    let uid = EntityUid::from_str(uid_text).map_err(|e| format!("{what}: {e}"))?;
    let id = uid.id().unescaped().to_string();
    Ok((uid, id))
}

/// The channel (and its chat workspace) a record names, as request-time
/// entities, the way the host built them.
fn channel_entities(arguments: &Value, channel_id: &str) -> Vec<RequestEntity> {
    let mut channel = RequestEntity::new("Channel", channel_id);
    let mut extra = Vec::new();
    if let Some(ws) = arguments["chat_workspace"].as_str() {
        channel = channel.parent("ChatWorkspace", ws);
        extra.push(RequestEntity::new("ChatWorkspace", ws));
    }
    extra.push(channel);
    extra
}

/// The requests the host itself makes: a person asking an agent, an agent
/// using a model or posting a reply.
fn host_action(
    engine: &PolicyEngine,
    r: &Record,
    arguments: &Value,
    session: Value,
) -> Result<Decision, Unreplayable> {
    let resource_text = r.resource.as_str();
    let number = |key: &str| {
        arguments[key].as_i64().ok_or_else(|| {
            format!("the record has no `{key}` (written before budgets were recorded)")
        })
    };
    match r.action.as_str() {
        "use_model" => {
            let (resource, _) = id_of(resource_text, "resource")?;
            let context = json!({
                "common": session,
                "estimated_tokens": number("estimated_tokens")?,
                "session_tokens": number("session_tokens")?,
                "day_tokens": number("day_tokens")?,
            });
            Ok(engine.decide(
                corral_policy::uid("Agent", &r.agent),
                "use_model",
                resource,
                context,
                &[],
            ))
        }
        "post_message" => {
            let (resource, channel) = id_of(resource_text, "resource")?;
            let extra = channel_entities(arguments, &channel);
            Ok(engine.decide(
                corral_policy::uid("Agent", &r.agent),
                "post_message",
                resource,
                json!({ "common": session }),
                &extra,
            ))
        }
        _ => {
            let channel_text = arguments["channel"]
                .as_str()
                .ok_or("the record names no channel")?;
            let (_, channel) = id_of(channel_text, "channel")?;
            let (resource, _) = id_of(resource_text, "resource")?;
            let mut extra = channel_entities(arguments, &channel);
            // A schedule's message names its schedule; a person's, its user.
            let principal = if let Some(schedule) = arguments["schedule"].as_str() {
                let (principal, name) = id_of(schedule, "schedule")?;
                extra.push(
                    RequestEntity::new("Schedule", &name).attr("channel_kind", json!("schedule")),
                );
                principal
            } else {
                let user_text = arguments["user"]
                    .as_str()
                    .ok_or("the record names no user and no schedule")?;
                let (principal, user) = id_of(user_text, "user")?;
                let kind = if user.starts_with("slack:") {
                    "slack"
                } else {
                    "terminal"
                };
                extra.push(RequestEntity::new("User", &user).attr("channel_kind", json!(kind)));
                principal
            };
            let context = json!({
                "common": session,
                "channel": { "__entity": { "type": "Channel", "id": channel } },
            });
            Ok(engine.decide(principal, "invoke", resource, context, &extra))
        }
    }
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
    let (mut replayed, mut unreplayable, mut redacted_flips) = (0u64, 0u64, 0u64);
    let (mut to_deny, mut to_allow, mut to_ask, mut from_ask) = (0u64, 0u64, 0u64, 0u64);
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
        // An approval's record holds no request of its own; its call's
        // record is replayed, and says whether it would now ask.
        for r in page
            .iter()
            .filter(|r| matches!(r.kind, Kind::Call | Kind::Capability))
        {
            let (now, next) = match (decide(&current, r), decide(&candidate, r)) {
                (Ok(a), Ok(b)) => (a, b),
                (Err(e), _) | (_, Err(e)) => {
                    unreplayable += 1;
                    if !json_out {
                        println!("cannot replay #{}: {}", r.seq, inline(&e.to_string()));
                    }
                    continue;
                }
            };
            replayed += 1;
            let (was, will) = (now.verdict(), next.verdict());
            if was == will {
                continue;
            }
            match (was, will) {
                (_, "ask") => to_ask += 1,
                ("ask", _) => from_ask += 1,
                ("allow", _) => to_deny += 1,
                _ => to_allow += 1,
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
                        "current": {"decision": was, "policy_ids": now.policy_ids},
                        "candidate": {"decision": will, "policy_ids": next.policy_ids},
                        "redacted": r.redacted,
                    })
                );
            } else {
                println!(
                    "FLIP {}→{} #{} {} {} agent={} action={} resource={} arguments={}{}\n    current:   {} by {}\n    candidate: {} by {}",
                    was,
                    will,
                    r.seq,
                    format_micros(r.time_us),
                    r.kind.as_str(),
                    inline(&r.agent),
                    inline(&r.action),
                    inline(&r.resource),
                    inline(&r.arguments),
                    if r.redacted {
                        " (arguments were redacted; the flip may not reproduce exactly)"
                    } else {
                        ""
                    },
                    was,
                    by(&now),
                    will,
                    by(&next),
                );
            }
        }
    }
    let flips = to_deny + to_allow + to_ask + from_ask;
    let summary = format!(
        "{replayed} decisions replayed: {flips} would flip ({to_deny} allow→deny, {to_allow} deny→allow, {to_ask} would now need approval, {from_ask} would no longer need it); {unreplayable} could not be replayed; {redacted_flips} flips involve redacted arguments. current {} vs candidate {}",
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
