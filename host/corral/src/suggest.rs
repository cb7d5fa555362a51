//! `corral policy suggest`: the permits that allow what an agent was seen
//! doing (allowed, or let through in observe mode), generalized as a person
//! would write them and checked by replay before they are shown.
//!
//! One permit per tool, and per capability action and resource; each
//! argument that varied is constrained by the rules in `rules.rs`, and the
//! hosts of HTTP requests are written as the host group they share.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use corral_audit::{AuditReader, Filter, Kind, Record};
use corral_policy::{EngineSources, PolicyEngine};
use serde_json::Value;

use crate::policy_sources::Sources;
use crate::shown::inline;

mod rules;

use rules::{constrain, exactly, quote};

/// What one suggested permit covers: records of one action and resource.
#[derive(Default)]
struct Group<'a> {
    records: Vec<&'a Record>,
    /// The resources seen (one, except for `http_request`, whose hosts
    /// share a permit).
    resources: BTreeSet<String>,
    /// Each argument's values, one per record (`None` where it was absent).
    fields: BTreeMap<String, Vec<Option<Value>>>,
}

/// How a group's resources are written: the scope's `resource` part, a
/// condition, and a note.
fn resource_scope(
    engine: &PolicyEngine,
    group: &Group<'_>,
) -> (String, Option<String>, Option<String>) {
    let list: Vec<&String> = group.resources.iter().collect();
    if let [one] = list.as_slice() {
        return (format!("resource == {one}"), None, None);
    }
    // Hosts already grouped: the host group they all belong to.
    let groups_of = |text: &str| -> BTreeSet<String> {
        text.parse::<cedar_policy::EntityUid>()
            .ok()
            .and_then(|uid| {
                engine.entities().ancestors(&uid).map(|a| {
                    a.filter(|g| g.type_name().to_string() == "HostGroup")
                        .map(ToString::to_string)
                        .collect()
                })
            })
            .unwrap_or_default()
    };
    let mut common: Option<BTreeSet<String>> = None;
    for r in &list {
        let g = groups_of(r);
        common = Some(match common {
            None => g,
            Some(c) => c.intersection(&g).cloned().collect(),
        });
    }
    if let Some(group_uid) = common.and_then(|c| c.into_iter().next()) {
        let hosts: Vec<&str> = list.iter().map(|s| s.as_str()).collect();
        return (
            format!("resource in {group_uid}"),
            None,
            Some(format!(
                "resource: {} generalized to the host group they share, {group_uid}",
                hosts.join(", ")
            )),
        );
    }
    let set: Vec<&str> = list.iter().map(|s| s.as_str()).collect();
    (
        "resource".to_string(),
        Some(format!("[{}].contains(resource)", set.join(", "))),
        Some("resource: the hosts seen share no host group; listed one by one".into()),
    )
}

/// The permit for one group, with its comments; with `exact`, the
/// observed envelope instead: every field held to exactly the values seen.
fn permit(
    engine: &PolicyEngine,
    (agent, id): (&str, &str),
    (kind, action): (Kind, &str),
    group: &Group<'_>,
    exact: bool,
) -> String {
    let seqs: Vec<String> = group
        .records
        .iter()
        .map(|r| format!("#{}", r.seq))
        .collect();
    let mut out = format!(
        "// Suggested from {} record(s) of agent `{agent}`: {}.\n",
        group.records.len(),
        seqs.join(", ")
    );
    let prefix = match kind {
        Kind::Call => "context.input",
        _ => "context",
    };
    let (scope, resource_condition, resource_note) = if exact {
        let list: Vec<&str> = group.resources.iter().map(|s| s.as_str()).collect();
        (
            "resource".to_string(),
            Some(format!("[{}].contains(resource)", list.join(", "))),
            None,
        )
    } else {
        resource_scope(engine, group)
    };
    out.extend(resource_note.map(|n| format!("// {n}\n")));
    let mut conditions: Vec<String> = resource_condition.into_iter().collect();
    for (field, values) in &group.fields {
        let expr = format!("{prefix}.{field}");
        let c = if exact {
            exactly(field, &expr, values)
        } else {
            constrain(field, &expr, values)
        };
        if let Some(note) = c.note {
            out.push_str(&format!("// {note}\n"));
        }
        conditions.extend(c.cedar);
    }
    out.push_str(&format!(
        "@id({})\npermit (principal == Agent::{}, action == Action::{}, {scope})",
        quote(id),
        quote(agent),
        quote(action)
    ));
    if !conditions.is_empty() {
        out.push_str(&format!("\nwhen {{ {} }}", conditions.join(" && ")));
    }
    out.push_str(";\n");
    out
}

/// The `@id` for one group's permit: agent, action and, for capabilities
/// other than HTTP, the resource (`Workspace::"reporter"` →
/// `-workspace-reporter`); `taken` ids get a number after them.
fn permit_id(
    agent: &str,
    (kind, action): (Kind, &str),
    group: &Group<'_>,
    taken: impl Fn(&str) -> bool,
) -> String {
    let resource_words = group
        .resources
        .iter()
        .next()
        .filter(|_| kind != Kind::Call && action != "http_request")
        .map(|r| {
            r.split(|c: char| !c.is_ascii_alphanumeric())
                .filter(|w| !w.is_empty())
                .fold(String::new(), |id, w| id + "-" + &w.to_ascii_lowercase())
        })
        .unwrap_or_default();
    let base = format!("suggested-{agent}-{action}{resource_words}");
    std::iter::once(base.clone())
        .chain((2..).map(|n| format!("{base}-{n}")))
        .find(|id| !taken(id))
        .unwrap_or(base)
}

/// What `suggest` was asked.
pub struct SuggestRequest<'a> {
    pub agent: &'a str,
    pub audit: &'a Path,
    pub since_us: Option<i64>,
    pub out: Option<&'a Path>,
    pub merge: Option<&'a Path>,
    /// Suggest from calls denied at the time too.
    pub include_denied: bool,
}

fn engine_with(src: &Sources, dir: &Path, extra: Option<&str>) -> Result<PolicyEngine> {
    let mut sources: EngineSources = src.engine_sources()?;
    let tmp = tempfile::tempdir()?;
    for (path, text) in
        corral_policy::read_policy_dir(dir).map_err(|e| anyhow!("{}: {e}", dir.display()))?
    {
        let name = path.file_name().map(PathBuf::from).unwrap_or_default();
        std::fs::write(tmp.path().join(name), text)?;
    }
    if let Some(extra) = extra {
        std::fs::write(tmp.path().join("zz-suggested.cedar"), extra)?;
    }
    sources.policy_dir = tmp.path().to_path_buf();
    PolicyEngine::load(&sources).map_err(|e| anyhow!("{e}"))
}

/// `corral policy suggest`.
pub fn suggest(src: &Sources, req: &SuggestRequest<'_>) -> Result<u8> {
    let reader = AuditReader::open(req.audit).context("suggest reads the broker's audit log")?;
    let mut records = Vec::new();
    let mut after = 0;
    loop {
        let page = reader.query(&Filter {
            agent: Some(req.agent.to_string()),
            since_us: req.since_us,
            after_seq: Some(after),
            limit: Some(5_000),
            ..Filter::default()
        })?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        records.extend(page.into_iter().filter(|r| {
            matches!(r.kind, Kind::Call | Kind::Capability)
                && match r.decision.as_deref() {
                    Some("allow" | "would-deny") => true,
                    Some("deny") => req.include_denied,
                    _ => false,
                }
                && !matches!(r.action.as_str(), "invoke" | "use_model" | "post_message")
        }));
    }
    let merge_engine = match req.merge {
        Some(dir) => Some(engine_with(src, dir, None)?),
        None => None,
    };
    let wanted: Vec<&Record> = records
        .iter()
        .filter(|r| match &merge_engine {
            Some(engine) => !crate::replay::decide(engine, r).is_ok_and(|d| d.allowed),
            None => true,
        })
        .collect();
    if wanted.is_empty() {
        bail!(
            "no records of agent `{}` to suggest from{}: run it (in observe mode, to see what it would need) and try again",
            req.agent,
            if req.merge.is_some() {
                " that the current policies do not already allow"
            } else {
                ""
            }
        );
    }
    let mut groups: BTreeMap<(u8, String, String), Group<'_>> = BTreeMap::new();
    for r in &wanted {
        let kind_key = if r.kind == Kind::Call { 0 } else { 1 };
        // The hosts of HTTP requests share one permit, to be generalized to
        // their host group; every other action keeps one per resource.
        let resource_key = if r.action == "http_request" {
            String::new()
        } else {
            r.resource.clone()
        };
        let group = groups
            .entry((kind_key, r.action.clone(), resource_key))
            .or_default();
        let index = group.records.len();
        group.records.push(r);
        group.resources.insert(r.resource.clone());
        let arguments: Value = serde_json::from_str(&r.arguments).unwrap_or(Value::Null);
        let fields = arguments.as_object().cloned().unwrap_or_default();
        for key in fields.keys() {
            group
                .fields
                .entry(key.clone())
                .or_insert_with(|| vec![None; index]);
        }
        for (key, values) in group.fields.iter_mut() {
            values.push(fields.get(key).cloned());
        }
    }
    let mut text = format!(
        "// Permits suggested by `corral policy suggest --agent {}` from {} record(s).\n// Review each before enforcing it.\n\n",
        req.agent,
        wanted.len()
    );
    let current = src.engine()?;
    let mut envelope = String::new();
    for ((kind_key, action, _), group) in &groups {
        let kind = if *kind_key == 0 {
            Kind::Call
        } else {
            Kind::Capability
        };
        // A suggestion merged before holds the same ids: the new permits
        // take the next free number instead of clashing with them.
        let id = permit_id(req.agent, (kind, action), group, |id| {
            current.policy_location(id).is_some()
                || merge_engine
                    .as_ref()
                    .is_some_and(|e| e.policy_location(id).is_some())
        });
        let who = (req.agent, id.as_str());
        text.push_str(&permit(&current, who, (kind, action), group, false));
        text.push('\n');
        envelope.push_str(&permit(&current, who, (kind, action), group, true));
    }
    let config = cedar_policy_formatter::Config::default();
    let text = cedar_policy_formatter::policies_str_to_pretty(&text, &config)
        .map_err(|e| anyhow!("the suggestion does not format (a bug): {e:?}"))?;

    // Checked before it is shown: it loads beside the current policies, and
    // replayed over the same records it allows every one of them.
    let engine = engine_with(src, &src.dir, Some(&text))
        .context("the suggested permits do not validate beside the current policies")?;
    let mut not_allowed = Vec::new();
    // A call denied at the time that is still denied (a forbid, an error)
    // is reported, not a failure: no permit can override what decided it.
    let mut still_denied = Vec::new();
    for r in &wanted {
        let denied_then = r.decision.as_deref() == Some("deny");
        match crate::replay::decide(&engine, r) {
            Ok(d) if d.allowed => {}
            Ok(d) if denied_then => still_denied.push(format!("#{}: {}", r.seq, d.explain())),
            Ok(d) => not_allowed.push(format!("#{}: {}", r.seq, d.explain())),
            Err(e) => not_allowed.push(format!("#{}: cannot be replayed: {e}", r.seq)),
        }
    }
    let denied_then = records_denied_then(&reader, req, &engine)?;
    let wider = wider_than_observed(&current, &envelope, &text);
    match req.out {
        Some(path) => std::fs::write(path, &text)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => print!("{text}"),
    }
    eprintln!(
        "checked: {} of {} observed record(s) allowed by the suggestion beside the current policies; {} call(s) denied at the time it would allow{}",
        wanted.len() - not_allowed.len() - still_denied.len(),
        wanted.len() - still_denied.len(),
        denied_then,
        if req.include_denied {
            " (asked for with --include-denied)"
        } else {
            ""
        }
    );
    for line in &still_denied {
        eprintln!(
            "  still denied, as at the time (a forbid or an error decides it): {}",
            inline(line)
        );
    }
    match wider {
        Ok(wider) if wider.is_empty() => {
            eprintln!("proved: the suggestion allows nothing beyond the observed requests");
        }
        Ok(wider) => {
            eprintln!(
                "proved wider than observed where it generalizes (review these; each is a request no record shows):"
            );
            for line in &wider {
                eprintln!("  {}", inline(line));
            }
        }
        Err(e) => eprintln!("not proven against the observed requests: {e}"),
    }
    if !not_allowed.is_empty() {
        for line in &not_allowed {
            eprintln!("  not allowed: {}", inline(line));
        }
        return Ok(crate::exit::FAILED);
    }
    Ok(0)
}

/// How many of the agent's denied records the suggestion would allow.
fn records_denied_then(
    reader: &AuditReader,
    req: &SuggestRequest<'_>,
    engine: &PolicyEngine,
) -> Result<usize> {
    let denied = reader.query(&Filter {
        agent: Some(req.agent.to_string()),
        since_us: req.since_us,
        verdict: Some(corral_audit::Verdict::Deny),
        ..Filter::default()
    })?;
    Ok(denied
        .iter()
        .filter(|r| matches!(r.kind, Kind::Call | Kind::Capability))
        .filter(|r| crate::replay::decide(engine, r).is_ok_and(|d| d.allowed))
        .count())
}

/// Where the suggestion allows more than the observed envelope (every
/// field held to exactly what was seen), by request type, each with a
/// request the envelope does not allow: what generalizing admitted.
fn wider_than_observed(
    current: &PolicyEngine,
    envelope: &str,
    suggested: &str,
) -> Result<Vec<String>> {
    let schema = &current.schema().schema;
    let load = |text: &str, what: &str| {
        corral_policy::load_policies(&[(PathBuf::from(what), text.to_string())], schema)
            .map_err(|e| anyhow!("{what}: {e}"))
    };
    let (envelope, suggested) = (load(envelope, "envelope")?, load(suggested, "suggestion")?);
    let mut prover = corral_assurance::Prover::start().map_err(|e| anyhow!("{e}"))?;
    let diffs = corral_assurance::diff(&mut prover, schema, &envelope, &suggested)
        .map_err(|e| anyhow!("{e}"))?;
    Ok(diffs
        .iter()
        .filter_map(|d| match &d.change {
            corral_assurance::Change::AllowsMore(more)
            | corral_assurance::Change::Both { more, .. } => {
                let (p, a, r) = more.triple();
                Some(format!(
                    "{}: e.g. {p} {a} {r} with context {}",
                    d.env,
                    more.context()
                ))
            }
            _ => None,
        })
        .collect())
}
