//! The dashboard's HTML, rendered on the server with maud, which escapes
//! every value it interpolates: what an agent or a person wrote is always
//! shown as text, never run as markup. The one script (`live.js`) is part
//! of the binary and adds rows with `textContent` only.

use corral_audit::{Record, VerifyReport, format_micros};
use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::query::{Denied, Filters, Series};
use crate::view::PolicyText;

const CSS: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}\
nav a{margin-right:1em}table{border-collapse:collapse;font-size:13px}\
td,th{border:1px solid #ccc;padding:3px 6px;vertical-align:top;text-align:left}\
tr.deny td{background:#fde8e8}tr.ask td,tr.would-deny td{background:#fff4d6}\
pre{background:#f6f6f6;padding:8px;white-space:pre-wrap}\
.ok{color:#176c2c;font-weight:bold}.bad{color:#b00;font-weight:bold}\
code{word-break:break-all}form input{width:8em;margin-right:.5em}";

const LIVE_JS: &str = include_str!("live.js");

/// A whole page around `body`.
pub fn layout(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "Corral — " (title) }
                style { (PreEscaped(CSS)) }
            }
            body {
                nav {
                    a href="/" { "Overview" }
                    a href="/decisions" { "Decisions" }
                    a href="/policies" { "Policies" }
                    a href="/metrics" { "Metrics" }
                }
                h1 { (title) }
                (body)
            }
        }
    }
}

/// What the overview shows.
pub struct Overview<'a> {
    /// `audit verify` over the whole chain, or why it could not run.
    pub verify: Result<VerifyReport, String>,
    /// The policy set in force, if the host gave it.
    pub policy_set: Option<(String, usize)>,
    /// The tools denied most, in the recent window.
    pub top_denied: &'a [(String, Denied)],
    /// Decisions over time.
    pub series: &'a Series,
    /// How many records the window held.
    pub window: usize,
}

/// The overview: the chain's state, the policy set, the chart and the
/// tools denied most.
pub fn overview(o: &Overview<'_>) -> Markup {
    layout(
        "Overview",
        html! {
            h2 { "Audit chain" }
            @match &o.verify {
                Ok(v) if v.ok() => {
                    p id="chain-state" class="ok" { "Chain intact: " (v.records) " records verified" }
                }
                Ok(v) => {
                    p id="chain-state" class="bad" {
                        "Chain BROKEN at record " (v.first_bad.as_ref().map(|b| b.0).unwrap_or_default())
                        ": " (v.first_bad.as_ref().map(|b| b.1.as_str()).unwrap_or_default())
                    }
                    p { "Records after it cannot be vouched for. Compare with a copy of the log and the head hash pinned elsewhere." }
                }
                Err(e) => { p id="chain-state" class="bad" { "Cannot verify: " (e) } }
            }
            @if let Ok(v) = &o.verify {
                p { "Head: record " (v.head_seq) ", hash " code id="head-hash" { (v.head_hash) } }
                p { "Pin this hash somewhere the host cannot write; a later truncation of the log shows as a head that no longer matches." }
                @if v.spooled > 0 { p { (v.spooled) " record(s) are in the spool, not yet in the database." } }
            }
            h2 { "Policy set in force" }
            @match &o.policy_set {
                Some((hash, count)) => p { (count) " policies, hash " code id="policy-hash" { (hash) } " — " a href="/policies" { "read them" } }
                None => p { "Not loaded here (a log served without its policies)." }
            }
            h2 { "Decisions over time" }
            p { "Tool-call decisions in the last " (o.window) " records, per agent: allowed, denied, and asked or observed." }
            (chart(o.series))
            h2 { "Denied most" }
            @if o.top_denied.is_empty() {
                p id="top-denied" { "No denied calls in the window." }
            } @else {
                table id="top-denied" {
                    tr { th { "Tool" } th { "Denied calls" } th { "Denied by" } }
                    @for (tool, d) in o.top_denied {
                        tr {
                            td { a href={ "/decisions?decision=deny&tool=" (crate::query_safe(tool)) } { (tool) } }
                            td { (d.count) }
                            td {
                                @for (id, n) in &d.by {
                                    span class="policy" { (id) " (" (n) ")" } " "
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

const CHART_WIDTH: i64 = 720;
const ROW_HEIGHT: i64 = 70;
const LABEL_WIDTH: i64 = 120;

fn colour(decision: &str) -> &'static str {
    match decision {
        "allow" => "#3a8f4b",
        "deny" => "#c0392b",
        _ => "#d4a017",
    }
}

/// One bar of the chart: a decision's count in one agent's time bucket.
struct Bar<'a> {
    x: i64,
    y: i64,
    width: i64,
    height: i64,
    agent: &'a str,
    decision: &'a str,
    count: u64,
    from_us: i64,
}

/// Each agent's buckets as stacked bars, one row per agent.
fn bars(series: &Series) -> Vec<Bar<'_>> {
    let most = series
        .agents
        .values()
        .flat_map(|row| row.iter().map(|b| b.values().sum::<u64>()))
        .max()
        .unwrap_or(0)
        .max(1) as i64;
    let mut out = Vec::new();
    for (i, (agent, buckets)) in series.agents.iter().enumerate() {
        let top = i as i64 * ROW_HEIGHT;
        let width = (CHART_WIDTH - LABEL_WIDTH) / (buckets.len().max(1) as i64);
        for (j, bucket) in buckets.iter().enumerate() {
            let mut y = top + ROW_HEIGHT - 6;
            for (decision, n) in bucket {
                let height =
                    (i64::try_from(*n).unwrap_or(i64::MAX) * (ROW_HEIGHT - 12) / most).max(1);
                y -= height;
                out.push(Bar {
                    x: LABEL_WIDTH + j as i64 * width,
                    y,
                    width: (width - 2).max(1),
                    height,
                    agent,
                    decision,
                    count: *n,
                    from_us: series.start_us + j as i64 * series.width_us,
                });
            }
        }
    }
    out
}

/// Stacked bars per agent and time bucket, as SVG.
pub fn chart(series: &Series) -> Markup {
    let rows = series.agents.len() as i64;
    let height = rows.max(1) * ROW_HEIGHT + 30;
    let legend = rows.max(1) * ROW_HEIGHT + 20;
    html! {
        svg id="decisions-chart" xmlns="http://www.w3.org/2000/svg" width=(CHART_WIDTH) height=(height)
            viewBox={ "0 0 " (CHART_WIDTH) " " (height) } role="img" {
            title { "Tool-call decisions over time, per agent" }
            @if series.agents.is_empty() {
                text x="10" y="20" { "No tool calls in the window." }
            }
            @for (i, agent) in series.agents.keys().enumerate() {
                text class="agent" x="4" y=(i as i64 * ROW_HEIGHT + ROW_HEIGHT / 2) { (agent) }
            }
            @for b in bars(series) {
                rect class={ "bar " (b.decision) } x=(b.x) y=(b.y) width=(b.width) height=(b.height) fill=(colour(b.decision)) {
                    title { (b.agent) ": " (b.count) " " (b.decision) " from " (format_micros(b.from_us)) }
                }
            }
            @for (k, (name, decision)) in [("allowed", "allow"), ("denied", "deny"), ("asked or observed", "ask")].iter().enumerate() {
                rect x=(LABEL_WIDTH + k as i64 * 160) y=(legend - 10) width="12" height="12" fill=(colour(decision)) {}
                text x=(LABEL_WIDTH + 16 + k as i64 * 160) y=(legend) { (name) }
            }
        }
    }
}

/// The decisions page: the filter form, the matching records newest
/// first, and the live stream that adds to them.
pub fn decisions(filters: &Filters, rows: &[Record], error: Option<&str>, live: bool) -> Markup {
    let value = |v: &Option<String>| v.clone().unwrap_or_default();
    layout(
        "Decisions",
        html! {
            form method="get" action="/decisions" {
                label { "agent " input name="agent" value=(value(&filters.agent)); }
                label { "tool " input name="tool" value=(value(&filters.tool)); }
                label { "action " input name="action" value=(value(&filters.action)); }
                label { "decision " input name="decision" value=(value(&filters.decision)); }
                label { "policy " input name="policy" value=(value(&filters.policy)); }
                label { "since " input name="since" placeholder="1h" value=(value(&filters.since)); }
                button type="submit" { "Filter" }
            }
            @if let Some(e) = error {
                p id="filter-error" class="bad" { (e) }
            }
            @if live {
                p { span id="live-status" { "connecting" } " — newest first; new decisions appear as they are recorded." }
            } @else {
                p { span id="live-status" { "not live" } " — newest first; this log is served on its own, and nothing writes it." }
            }
            table {
                thead { tr { th { "#" } th { "time" } th { "agent" } th { "kind" } th { "action" } th { "decision" } th { "policies" } th { "arguments" } th { "why" } } }
                tbody id="decisions-body" {
                    @for r in rows.iter().rev() {
                        tr class=(r.decision.clone().unwrap_or_default()) data-seq=(r.seq) {
                            td { a href={ "/records/" (r.seq) } { (r.seq) } }
                            td { (format_micros(r.time_us)) }
                            td { (r.agent) }
                            td { (r.kind.as_str()) }
                            td { (r.action) }
                            td { (r.decision.clone().unwrap_or_default()) }
                            td { (r.policy_ids.join(", ")) }
                            td { code { (r.arguments) } }
                            td { (r.detail.clone().unwrap_or_default()) }
                        }
                    }
                }
            }
            @if live { script { (PreEscaped(LIVE_JS)) } }
        },
    )
}

/// A policy that decided a record, as the set in force has it (or not).
pub struct Decider {
    /// The id the record names.
    pub id: String,
    /// Its text in the set in force, if it is there.
    pub text: Option<PolicyText>,
}

/// What one record's page shows beside the record.
pub struct RecordPage<'a> {
    /// The record.
    pub record: &'a Record,
    /// Records whose `parent` it is (capability uses, outcome, approvals).
    pub children: &'a [Record],
    /// The policies that decided it.
    pub deciders: &'a [Decider],
    /// The hash of the set in force, if the host gave it.
    pub current_hash: Option<&'a str>,
}

/// One record: every field, the policies that decided it with their
/// source, its explanation, and its place in the chain.
pub fn record(page: &RecordPage<'_>) -> Markup {
    let r = page.record;
    layout(
        &format!("Record {}", r.seq),
        html! {
            table id="record" {
                tr { th { "time" } td { (format_micros(r.time_us)) } }
                tr { th { "kind" } td { (r.kind.as_str()) } }
                tr { th { "agent" } td { (r.agent) } }
                tr { th { "action" } td { (r.action) } }
                tr { th { "resource" } td { (r.resource) } }
                tr { th { "decision" } td id="decision" { (r.decision.clone().unwrap_or_default()) } }
                @if let Some(o) = r.outcome { tr { th { "outcome" } td { (o.as_str()) } } }
                @if let Some(d) = r.duration_us { tr { th { "duration" } td { (d) " µs" } } }
                tr { th { "arguments" } td { code id="arguments" { (r.arguments) } @if r.redacted { " (redacted)" } } }
                tr { th { "session" } td { code { (r.session) } } }
                @if let Some(p) = r.parent { tr { th { "parent" } td { a href={ "/records/" (p) } { (p) } } } }
                @if !r.errors.is_empty() { tr { th { "errors" } td { (r.errors.join("; ")) } } }
                @if let Some(s) = &r.shadow { tr { th { "shadow" } td { (s) } } }
            }
            h2 { "Why" }
            p id="explanation" { (r.detail.clone().unwrap_or_else(|| "(no explanation recorded)".into())) }
            h2 { "Deciding policies" }
            @if page.deciders.is_empty() {
                p { "No policy is named: a denial by default (no permit matched), or a record that is not a decision." }
            }
            @if let Some(now) = page.current_hash {
                @if now != r.policy_hash {
                    p class="bad" { "Decided by policy set " code { (r.policy_hash) } "; the set in force now is " code { (now) } ". The text below is today's." }
                }
            }
            @for d in page.deciders {
                h3 { (d.id) }
                @match &d.text {
                    Some(t) => { p { (t.location) @if t.shadow { " (shadow)" } } pre class="policy-source" { (t.text) } }
                    None => p { "Not in the policy set in force." },
                }
            }
            @if !page.children.is_empty() {
                h2 { "Belonging to it" }
                ul { @for c in page.children {
                    li { a href={ "/records/" (c.seq) } { (c.seq) } " " (c.kind.as_str()) " " (c.action) " " (c.decision.clone().or_else(|| c.outcome.map(|o| o.as_str().to_string())).unwrap_or_default()) }
                } }
            }
            h2 { "Place in the chain" }
            table id="chain-position" {
                tr { th { "sequence" } td { (r.seq) } }
                tr { th { "previous hash" } td { code { (r.prev_hash) } } }
                tr { th { "hash" } td { code { (r.hash) } } }
            }
            p {
                @if r.seq > 1 { a href={ "/records/" (r.seq - 1) } { "previous" } " " }
                a href={ "/records/" (r.seq + 1) } { "next" }
            }
        },
    )
}

/// The policy set in force.
pub fn policies(hash: &str, list: &[PolicyText]) -> Markup {
    layout(
        "Policies",
        html! {
            p { (list.len()) " policies; set hash " code { (hash) } }
            @for p in list {
                h3 id={ "policy-" (p.id) } { (p.id) @if p.shadow { " (shadow)" } }
                p { (p.location) }
                pre class="policy-source" { (p.text) }
            }
        },
    )
}

/// A page that says what went wrong and what to do.
pub fn problem(title: &str, message: &str) -> Markup {
    layout(title, html! { p class="bad" { (message) } })
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(crate::query_safe("a&b #c+d%"), "a%26b%20%23c%2Bd%25");
        assert_eq!(crate::query_safe("files_write"), "files_write");
        assert_eq!(
            crate::percent_decoded(&crate::query_safe("tök=n;")),
            "tök=n;"
        );
    }
}
