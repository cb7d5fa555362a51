//! `corral policy suggest`: the permits that allow what an agent was seen
//! doing (allowed, or let through in observe mode), generalized as a person
//! would write them and checked by replay before they are shown.
//!
//! Per tool, and per capability action and resource, each argument that
//! varied is constrained to what was seen: a path to the folders it was
//! seen under (`like "notes/*"`), a string or number seen with few values
//! to that set, a number seen with many to its range. Anything else (many
//! free-form strings, redacted values, nested objects) is left
//! unconstrained, and the output says so beside the permit.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use corral_audit::{AuditReader, Filter, Kind, Record};
use corral_policy::{EngineSources, PolicyEngine};
use serde_json::Value;

use crate::policy_sources::Sources;

/// A set of exact values is written out when it has at most this many.
const MAX_EXACT: usize = 5;
/// Paths are generalized to at most this many top folders.
const MAX_FOLDERS: usize = 4;
/// Fields that carry free-form payload, not a choice a policy makes.
const FREE_FORM: [&str; 6] = ["content", "body", "message", "text", "data", "query"];

/// What one suggested permit covers: records of one action and resource.
#[derive(Default)]
struct Group<'a> {
    records: Vec<&'a Record>,
    /// Each argument's values, one per record (`None` where it was absent).
    fields: BTreeMap<String, Vec<Option<Value>>>,
}

/// One constraint and why it is as it is.
struct Constraint {
    cedar: Option<String>,
    note: Option<String>,
}

fn quote(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

fn like_literal(s: &str) -> String {
    // `*` is the wildcard in `like`; a literal one is written `\*`.
    let escaped = s
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('*', "\\*");
    format!("\"{escaped}")
}

/// The constraint on `expr` (Cedar text) from the values seen.
fn constrain(field: &str, expr: &str, values: &[Option<Value>]) -> Constraint {
    let present: Vec<&Value> = values.iter().flatten().collect();
    let optional = present.len() < values.len();
    let wrap = |cond: String| -> String {
        if optional {
            let (parent, attr) = expr.rsplit_once('.').unwrap_or(("context", field));
            format!("(!({parent} has {attr}) || {cond})")
        } else {
            cond
        }
    };
    let dropped = |why: String| Constraint {
        cedar: None,
        note: Some(format!("{field}: {why}; left unconstrained, review it")),
    };
    if present.is_empty() {
        return Constraint {
            cedar: None,
            note: None,
        };
    }
    if FREE_FORM.contains(&field) {
        return Constraint {
            cedar: None,
            note: Some(format!("{field}: free-form content, left unconstrained")),
        };
    }
    if let Some(strings) = present
        .iter()
        .map(|v| v.as_str())
        .collect::<Option<Vec<&str>>>()
    {
        if strings
            .iter()
            .any(|s| s.contains("[redacted]") || s.starts_with("[") && s.contains("bytes"))
        {
            return dropped("some values were redacted in the log".into());
        }
        let distinct: BTreeSet<&str> = strings.iter().copied().collect();
        let pathlike = field.contains("path") || strings.iter().all(|s| s.contains('/'));
        if pathlike && strings.iter().all(|s| s.contains('/')) {
            let folders: BTreeSet<&str> = strings
                .iter()
                .filter_map(|s| s.split_once('/').map(|(first, _)| first))
                .collect();
            if folders.len() <= MAX_FOLDERS && folders.iter().all(|f| !f.is_empty()) {
                let parts: Vec<String> = folders
                    .iter()
                    .map(|f| format!("{expr} like {}/*\"", like_literal(f)))
                    .collect();
                return Constraint {
                    cedar: Some(wrap(format!("({})", parts.join(" || ")))),
                    note: Some(format!(
                        "{field}: {} value(s) under {} folder(s), generalized to those folders",
                        distinct.len(),
                        folders.len()
                    )),
                };
            }
        }
        if distinct.len() <= MAX_EXACT {
            let set: Vec<String> = distinct.iter().map(|s| quote(s)).collect();
            return Constraint {
                cedar: Some(wrap(format!("[{}].contains({expr})", set.join(", ")))),
                note: None,
            };
        }
        return dropped(format!(
            "{} distinct values with no common folder",
            distinct.len()
        ));
    }
    if let Some(numbers) = present
        .iter()
        .map(|v| v.as_i64())
        .collect::<Option<Vec<i64>>>()
    {
        let distinct: BTreeSet<i64> = numbers.iter().copied().collect();
        if distinct.len() <= MAX_EXACT {
            let set: Vec<String> = distinct.iter().map(i64::to_string).collect();
            return Constraint {
                cedar: Some(wrap(format!("[{}].contains({expr})", set.join(", ")))),
                note: None,
            };
        }
        let (lo, hi) = (distinct.first().copied(), distinct.last().copied());
        if let (Some(lo), Some(hi)) = (lo, hi) {
            return Constraint {
                cedar: Some(wrap(format!("{expr} >= {lo} && {expr} <= {hi}"))),
                note: Some(format!(
                    "{field}: {} distinct values, generalized to their range",
                    distinct.len()
                )),
            };
        }
    }
    if let Some(bools) = present
        .iter()
        .map(|v| v.as_bool())
        .collect::<Option<Vec<bool>>>()
    {
        let distinct: BTreeSet<bool> = bools.into_iter().collect();
        if distinct.len() == 1 {
            let b = distinct.first().copied().unwrap_or(false);
            return Constraint {
                cedar: Some(wrap(format!("{expr} == {b}"))),
                note: None,
            };
        }
        return Constraint {
            cedar: None,
            note: None,
        };
    }
    dropped("values are not strings, integers or booleans".into())
}

/// The permit for one group, with its comments.
fn permit(agent: &str, kind: Kind, action: &str, resource: &str, group: &Group<'_>) -> String {
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
    let mut conditions = Vec::new();
    for (field, values) in &group.fields {
        let c = constrain(field, &format!("{prefix}.{field}"), values);
        if let Some(note) = c.note {
            out.push_str(&format!("// {note}\n"));
        }
        conditions.extend(c.cedar);
    }
    let id = format!("suggested-{agent}-{action}")
        + &match kind {
            Kind::Call => String::new(),
            // `Workspace::"reporter"` → `-workspace-reporter`.
            _ => resource
                .split(|c: char| !c.is_ascii_alphanumeric())
                .filter(|w| !w.is_empty())
                .fold(String::new(), |id, w| id + "-" + &w.to_ascii_lowercase()),
        };
    out.push_str(&format!(
        "@id({})\npermit (principal == Agent::{}, action == Action::{}, resource == {resource})",
        quote(&id),
        quote(agent),
        quote(action)
    ));
    if !conditions.is_empty() {
        out.push_str(&format!("\nwhen {{ {} }}", conditions.join(" && ")));
    }
    out.push_str(";\n");
    out
}

/// What `suggest` was asked.
pub struct SuggestRequest<'a> {
    pub agent: &'a str,
    pub audit: &'a Path,
    pub since_us: Option<i64>,
    pub out: Option<&'a Path>,
    pub merge: Option<&'a Path>,
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
                && matches!(r.decision.as_deref(), Some("allow" | "would-deny"))
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
        let group = groups
            .entry((kind_key, r.action.clone(), r.resource.clone()))
            .or_default();
        let index = group.records.len();
        group.records.push(r);
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
    for ((kind_key, action, resource), group) in &groups {
        let kind = if *kind_key == 0 {
            Kind::Call
        } else {
            Kind::Capability
        };
        text.push_str(&permit(req.agent, kind, action, resource, group));
        text.push('\n');
    }
    let config = cedar_policy_formatter::Config::default();
    let text = cedar_policy_formatter::policies_str_to_pretty(&text, &config)
        .map_err(|e| anyhow!("the suggestion does not format (a bug): {e:?}"))?;

    // Checked before it is shown: it loads beside the current policies, and
    // replayed over the same records it allows every one of them.
    let engine = engine_with(src, &src.dir, Some(&text))
        .context("the suggested permits do not validate beside the current policies")?;
    let mut not_allowed = Vec::new();
    for r in &wanted {
        match crate::replay::decide(&engine, r) {
            Ok(d) if d.allowed => {}
            Ok(d) => not_allowed.push(format!("#{}: {}", r.seq, d.explain())),
            Err(e) => not_allowed.push(format!("#{}: cannot be replayed: {e}", r.seq)),
        }
    }
    let denied_then = records_denied_then(&reader, req, &engine)?;
    match req.out {
        Some(path) => std::fs::write(path, &text)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => print!("{text}"),
    }
    eprintln!(
        "checked: {} of {} observed record(s) allowed by the suggestion beside the current policies; {} call(s) denied at the time it would allow",
        wanted.len() - not_allowed.len(),
        wanted.len(),
        denied_then
    );
    if !not_allowed.is_empty() {
        for line in &not_allowed {
            eprintln!("  not allowed: {line}");
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
