//! What the dashboard reads from the log: the recent window, filtered the
//! way the page asks, and the figures the overview draws from it.

use std::collections::BTreeMap;

use corral_audit::{Kind, Record};
use serde::Deserialize;

/// How many of the newest records the pages look at.
pub const WINDOW: usize = 5_000;
/// How many matching records a page lists.
pub const SHOWN: usize = 200;

/// The filters of the decisions page and its live stream, as the query
/// string gives them; an empty field filters nothing.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct Filters {
    /// The agent.
    pub agent: Option<String>,
    /// The tool: a call's action, or the tool a capability use came from.
    pub tool: Option<String>,
    /// The action (`files_write`, `write_file`, `http_request`, …).
    pub action: Option<String>,
    /// `allow`, `deny`, `ask`, `would-deny`.
    pub decision: Option<String>,
    /// A policy id among those that decided.
    pub policy: Option<String>,
    /// Only records younger than this: `90s`, `15m`, `1h`, `7d`.
    pub since: Option<String>,
}

/// [`Filters`] checked: the age parsed into a cut-off time.
#[derive(Debug, Default, Clone)]
pub struct Checked {
    /// The filters, blanks made `None`.
    pub filters: Filters,
    since_us: Option<i64>,
}

fn set(field: &Option<String>) -> Option<&str> {
    field.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl Filters {
    /// Checks the filters; a bad age names the field and the forms
    /// accepted.
    pub fn check(self) -> Result<Checked, String> {
        let since_us = match set(&self.since) {
            None => None,
            Some(age) => {
                let age = corral_audit::parse_age(age).map_err(|e| format!("since: {e}"))?;
                Some(
                    corral_audit::now_micros() - i64::try_from(age.as_micros()).unwrap_or(i64::MAX),
                )
            }
        };
        Ok(Checked {
            filters: self,
            since_us,
        })
    }
}

/// The tool a record is about: a call's or outcome's action, or the
/// `tool` a capability use names.
pub fn tool_of(r: &Record) -> Option<String> {
    match r.kind {
        Kind::Call | Kind::Outcome => Some(r.action.clone()),
        _ => serde_json::from_str::<serde_json::Value>(&r.arguments)
            .ok()
            .and_then(|v| v["tool"].as_str().map(str::to_string)),
    }
}

impl Checked {
    /// Whether `r` is a decision these filters keep.
    pub fn matches(&self, r: &Record) -> bool {
        let f = &self.filters;
        let Some(decision) = r.decision.as_deref() else {
            return false;
        };
        set(&f.agent).is_none_or(|a| r.agent == a)
            && set(&f.action).is_none_or(|a| r.action == a)
            && set(&f.decision).is_none_or(|d| decision == d)
            && set(&f.policy).is_none_or(|p| r.policy_ids.iter().any(|id| id == p))
            && set(&f.tool).is_none_or(|t| tool_of(r).as_deref() == Some(t))
            && self.since_us.is_none_or(|cut| r.time_us >= cut)
    }
}

/// A tool that policy denied, how often, and by which policies.
#[derive(Debug, Default)]
pub struct Denied {
    /// Denied calls.
    pub count: u64,
    /// The policies that denied them, with counts; `no permit matched`
    /// where none did.
    pub by: BTreeMap<String, u64>,
}

/// The tools denied most in `records`, most first: a call denied, or a
/// file, HTTP or secret use inside it denied, counts against the tool.
pub fn top_denied(records: &[Record], most: usize) -> Vec<(String, Denied)> {
    let mut tools: BTreeMap<String, Denied> = BTreeMap::new();
    for r in records {
        if !matches!(r.kind, Kind::Call | Kind::Capability) || r.decision.as_deref() != Some("deny")
        {
            continue;
        }
        let Some(tool) = tool_of(r) else { continue };
        let entry = tools.entry(tool).or_default();
        entry.count += 1;
        if r.policy_ids.is_empty() {
            *entry.by.entry("no permit matched".into()).or_default() += 1;
        }
        for id in &r.policy_ids {
            *entry.by.entry(id.clone()).or_default() += 1;
        }
    }
    let mut list: Vec<(String, Denied)> = tools.into_iter().collect();
    list.sort_by(|a, b| b.1.count.cmp(&a.1.count).then_with(|| a.0.cmp(&b.0)));
    list.truncate(most);
    list
}

/// Decisions over time: for each agent, per time bucket, the count of
/// each decision.
#[derive(Debug, Default)]
pub struct Series {
    /// The first bucket's start and each bucket's width, in microseconds.
    pub start_us: i64,
    /// See `start_us`.
    pub width_us: i64,
    /// Agent → bucket → decision → count.
    pub agents: BTreeMap<String, Vec<BTreeMap<String, u64>>>,
}

/// The tool-call decisions in `records`, in `buckets` equal spans from the
/// first to the last.
pub fn series(records: &[Record], buckets: usize) -> Series {
    let calls: Vec<&Record> = records
        .iter()
        .filter(|r| r.kind == Kind::Call && r.decision.is_some())
        .collect();
    let (Some(first), Some(last)) = (calls.first(), calls.last()) else {
        return Series::default();
    };
    let start_us = first.time_us;
    let span = (last.time_us - start_us).max(1);
    let buckets = buckets.max(1);
    let width_us = (span / buckets as i64).max(1) + 1;
    let mut agents: BTreeMap<String, Vec<BTreeMap<String, u64>>> = BTreeMap::new();
    for r in calls {
        let i = usize::try_from((r.time_us - start_us) / width_us)
            .unwrap_or(0)
            .min(buckets - 1);
        let row = agents
            .entry(r.agent.clone())
            .or_insert_with(|| vec![BTreeMap::new(); buckets]);
        *row[i]
            .entry(r.decision.clone().unwrap_or_default())
            .or_default() += 1;
    }
    Series {
        start_us,
        width_us,
        agents,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: i64, agent: &str, action: &str, decision: &str, ids: &[&str]) -> Record {
        Record {
            seq,
            time_us: seq * 1_000_000,
            kind: Kind::Call,
            agent: agent.into(),
            action: action.into(),
            resource: format!("Tool::\"{action}\""),
            arguments: "{}".into(),
            redacted: false,
            session: "{}".into(),
            decision: Some(decision.into()),
            policy_ids: ids.iter().map(|s| s.to_string()).collect(),
            errors: Vec::new(),
            policy_hash: "h".into(),
            tool_sha256: None,
            duration_us: None,
            outcome: None,
            parent: None,
            detail: None,
            usage: None,
            shadow: None,
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    #[test]
    fn filters_keep_what_they_name_and_blanks_keep_all() {
        let r = record(1, "a", "echo", "deny", &["p1"]);
        let f = |filters: Filters| filters.check().unwrap().matches(&r);
        assert!(f(Filters::default()));
        assert!(f(Filters {
            agent: Some(" ".into()),
            policy: Some("p1".into()),
            tool: Some("echo".into()),
            ..Filters::default()
        }));
        assert!(!f(Filters {
            decision: Some("allow".into()),
            ..Filters::default()
        }));
        let e = Filters {
            since: Some("soon".into()),
            ..Filters::default()
        }
        .check()
        .unwrap_err();
        assert!(e.starts_with("since:"), "{e}");
    }

    #[test]
    fn the_most_denied_tools_come_first_with_their_policies() {
        let records = vec![
            record(1, "a", "echo", "deny", &[]),
            record(2, "a", "files_write", "deny", &["no-dotfiles"]),
            record(3, "b", "files_write", "deny", &["no-dotfiles"]),
            record(4, "b", "files_write", "allow", &["ok"]),
            Record {
                kind: Kind::Capability,
                action: "write_file".into(),
                arguments: r#"{"path":".env","tool":"files_write"}"#.into(),
                ..record(5, "b", "write_file", "deny", &["no-dotfiles"])
            },
        ];
        let top = top_denied(&records, 5);
        assert_eq!(top[0].0, "files_write");
        assert_eq!(top[0].1.count, 3, "two calls and one write inside one");
        assert_eq!(top[0].1.by["no-dotfiles"], 3);
        assert_eq!(top[1].1.by["no permit matched"], 1);
        let s = series(&records, 4);
        assert_eq!(
            s.agents["a"]
                .iter()
                .map(|b| b.values().sum::<u64>())
                .sum::<u64>(),
            2
        );
        assert_eq!(s.agents["b"].len(), 4);
    }
}
