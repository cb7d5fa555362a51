//! The metrics `/metrics` serves, in the OpenMetrics text format that
//! Prometheus scrapes. Decisions, outcomes, tool durations, model tokens,
//! approvals and audit syncs are counted from the audit log as each record
//! is written ([`RecordObserver`]), so their counts are the log's; what the
//! log does not hold (refusals before policy, decision latency) comes from
//! the broker ([`Metrics::call_refused`], [`Metrics::call_decided`]).

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use corral_audit::{Kind, Record, RecordObserver};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Distinct action names labelled, when the host has not said which
/// actions exist ([`Metrics::label_actions`]), before the rest are counted
/// as [`OTHER`]: an agent chooses the tool names it calls, and a label per
/// made-up name would grow the metrics without bound.
pub const MAX_ACTIONS: usize = 256;
/// The label that stands for every other action.
pub const OTHER: &str = "_other";
/// The longest action name that gets a label of its own.
const MAX_ACTION_LEN: usize = 64;
/// Records a live page may fall behind by (a stream drains them every
/// 100 ms) before it is told to reload.
const LIVE_BACKLOG: usize = 4096;
/// A live record's arguments are cut to this many bytes: the stream holds
/// up to [`LIVE_BACKLOG`] of them for its slowest page.
const LIVE_ARGUMENTS: usize = 4096;

/// Which action names get labels of their own.
#[derive(Debug, Default)]
struct ActionLabels {
    names: HashSet<String>,
    /// The host named every action: anything else is [`OTHER`].
    closed: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    kind: &'static str,
    action: String,
    decision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    action: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolLabels {
    action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    agent: String,
    model: String,
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ContainerLabels {
    event: &'static str,
}

/// 100 µs to about 6.5 s: from a decision to a slow tool.
fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

/// The host's metrics; one per host, shared by the audit log, the broker
/// and the HTTP endpoint.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    actions: RwLock<ActionLabels>,
    decisions: Family<DecisionLabels, Counter>,
    outcomes: Family<OutcomeLabels, Counter>,
    tool_seconds: Family<ToolLabels, Histogram, fn() -> Histogram>,
    tokens: Family<TokenLabels, Counter>,
    records: Counter,
    audit_sync_seconds: Histogram,
    approvals_pending: Gauge,
    refused: Family<ReasonLabels, Counter>,
    decision_seconds: Histogram,
    containers: Family<ContainerLabels, Counter>,
    containers_running: Gauge,
    schedule_skipped: Counter,
    /// Each record as it is written, for the dashboard's live stream; sent
    /// only while a page listens.
    live: tokio::sync::broadcast::Sender<Arc<Record>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric registered, all at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "corral_decisions",
            "Decisions recorded, by record kind (call or capability), action and decision",
            decisions.clone(),
        );
        let outcomes = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "corral_outcomes",
            "Tool calls and model calls that ran, by action and outcome",
            outcomes.clone(),
        );
        let tool_seconds = Family::<ToolLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            seconds_histogram as fn() -> Histogram,
        );
        registry.register(
            "corral_tool_duration_seconds",
            "How long each tool call that ran took, by action",
            tool_seconds.clone(),
        );
        let tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "corral_model_tokens",
            "Model tokens used, by agent, model and direction (input or output)",
            tokens.clone(),
        );
        let records = Counter::default();
        registry.register(
            "corral_audit_records",
            "Records written to the audit log since the host started",
            records.clone(),
        );
        let audit_sync_seconds = seconds_histogram();
        registry.register(
            "corral_audit_sync_seconds",
            "How long an append waited for the audit spool's fsync",
            audit_sync_seconds.clone(),
        );
        let approvals_pending = Gauge::default();
        registry.register(
            "corral_approvals_pending",
            "Calls waiting for a person's approval, asked since the host started",
            approvals_pending.clone(),
        );
        let refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "corral_calls_refused",
            "Tool calls refused by the broker's limits before any policy decision, by reason",
            refused.clone(),
        );
        let decision_seconds = seconds_histogram();
        registry.register(
            "corral_decision_duration_seconds",
            "From a tool call's arrival to its decision being recorded",
            decision_seconds.clone(),
        );
        let containers = Family::<ContainerLabels, Counter>::default();
        registry.register(
            "corral_containers",
            "Agent containers started, crashed and restarted",
            containers.clone(),
        );
        let containers_running = Gauge::default();
        registry.register(
            "corral_containers_running",
            "Agent containers running now",
            containers_running.clone(),
        );
        let schedule_skipped = Counter::default();
        registry.register(
            "corral_schedule_runs_skipped",
            "Scheduled runs that did not happen (missed while down, or the previous run unanswered)",
            schedule_skipped.clone(),
        );
        Metrics {
            registry,
            actions: RwLock::new(ActionLabels::default()),
            decisions,
            outcomes,
            tool_seconds,
            tokens,
            records,
            audit_sync_seconds,
            approvals_pending,
            refused,
            decision_seconds,
            containers,
            containers_running,
            schedule_skipped,
            live: tokio::sync::broadcast::channel(LIVE_BACKLOG).0,
        }
    }

    /// Every record written from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<Record>> {
        self.live.subscribe()
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Labels exactly these actions (the loaded tools and the host's own,
    /// which the host names: this crate does not link Cedar); every other
    /// name, such as a tool an agent made up, is counted as [`OTHER`].
    /// Without this call the first [`MAX_ACTIONS`] plausible names get
    /// labels.
    pub fn label_actions(&self, actions: impl IntoIterator<Item = String>) {
        let mut labels = self.actions.write().unwrap_or_else(|p| p.into_inner());
        labels.names.extend(actions);
        labels.closed = true;
    }

    /// `action`'s label: its own, or [`OTHER`].
    fn action_label(&self, action: &str) -> String {
        let known = self
            .actions
            .read()
            .map(|labels| labels.names.contains(action))
            .unwrap_or(false);
        if known {
            return action.to_string();
        }
        let plausible = action.len() <= MAX_ACTION_LEN
            && action
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c));
        let mut labels = self.actions.write().unwrap_or_else(|p| p.into_inner());
        if !labels.closed && plausible && labels.names.len() < MAX_ACTIONS {
            labels.names.insert(action.to_string());
            action.to_string()
        } else {
            OTHER.to_string()
        }
    }

    /// How many live streams are open.
    pub fn live_listeners(&self) -> usize {
        self.live.receiver_count()
    }

    /// A tool call was refused by a limit before policy (`rate`, `busy`,
    /// `connections`); such refusals are not recorded in the log.
    pub fn call_refused(&self, reason: &'static str) {
        self.refused.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// A tool call's decision was recorded `took` after it arrived.
    pub fn call_decided(&self, took: Duration) {
        self.decision_seconds.observe(took.as_secs_f64());
    }

    /// A container `event`: `started`, `crashed` or `restarted`.
    pub fn container(&self, event: &'static str) {
        self.containers
            .get_or_create(&ContainerLabels { event })
            .inc();
    }

    /// How many agent containers run now.
    pub fn containers_running(&self, count: usize) {
        self.containers_running
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }
}

/// `record` with its arguments cut to [`LIVE_ARGUMENTS`] bytes (at a
/// character boundary), copied without copying what is cut.
fn clipped(record: &Record) -> Record {
    let mut end = record.arguments.len().min(LIVE_ARGUMENTS);
    while !record.arguments.is_char_boundary(end) {
        end -= 1;
    }
    Record {
        seq: record.seq,
        time_us: record.time_us,
        kind: record.kind,
        agent: record.agent.clone(),
        action: record.action.clone(),
        resource: record.resource.clone(),
        arguments: record.arguments[..end].to_string(),
        redacted: record.redacted,
        session: String::new(),
        decision: record.decision.clone(),
        policy_ids: record.policy_ids.clone(),
        errors: Vec::new(),
        policy_hash: String::new(),
        tool_sha256: None,
        duration_us: record.duration_us,
        outcome: record.outcome,
        parent: record.parent,
        detail: record.detail.clone(),
        usage: record.usage,
        shadow: None,
        prev_hash: String::new(),
        hash: String::new(),
    }
}

/// `Model::"main"` → `main`.
fn entity_id(uid: &str) -> &str {
    uid.split_once("::\"")
        .and_then(|(_, rest)| rest.strip_suffix('"'))
        .unwrap_or(uid)
}

impl RecordObserver for Metrics {
    fn recorded(&self, record: &Record) {
        self.records.inc();
        if self.live.receiver_count() > 0 {
            let _ = self.live.send(Arc::new(clipped(record)));
        }
        match record.kind {
            Kind::Call | Kind::Capability => {
                if let Some(decision) = &record.decision {
                    let kind = if record.kind == Kind::Call {
                        "call"
                    } else {
                        "capability"
                    };
                    self.decisions
                        .get_or_create(&DecisionLabels {
                            kind,
                            action: self.action_label(&record.action),
                            decision: decision.clone(),
                        })
                        .inc();
                }
            }
            Kind::Outcome => {
                let action = self.action_label(&record.action);
                if let Some(outcome) = record.outcome {
                    self.outcomes
                        .get_or_create(&OutcomeLabels {
                            action: action.clone(),
                            outcome: outcome.as_str(),
                        })
                        .inc();
                }
                if let Some(us) = record.duration_us.filter(|_| record.action != "use_model") {
                    self.tool_seconds
                        .get_or_create(&ToolLabels { action })
                        .observe(us.max(0) as f64 / 1e6);
                }
                if let Some(usage) = record.usage {
                    let model = entity_id(&record.resource).to_string();
                    for (direction, n) in [
                        ("input", usage.input_tokens),
                        ("output", usage.output_tokens),
                    ] {
                        self.tokens
                            .get_or_create(&TokenLabels {
                                agent: record.agent.clone(),
                                model: model.clone(),
                                direction,
                            })
                            .inc_by(n);
                    }
                }
            }
            Kind::ApprovalRequested => {
                self.approvals_pending.inc();
            }
            Kind::ApprovalGranted | Kind::ApprovalDenied | Kind::ApprovalExpired => {
                self.approvals_pending.dec();
            }
            Kind::ApprovalRefused => {}
            Kind::ScheduleSkipped => {
                self.schedule_skipped.inc();
            }
        }
    }

    fn synced(&self, took: Duration) {
        self.audit_sync_seconds.observe(took.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_audit::{AuditConfig, AuditLog, Entry, Outcome, Verdict};

    #[test]
    fn counts_are_the_log_s_and_made_up_tool_names_share_one_label() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::new());
        let log =
            AuditLog::open(AuditConfig::new(dir.path().join("audit.db")).observer(metrics.clone()))
                .unwrap();
        let call = |action: &str, verdict| {
            let mut e = Entry::new(Kind::Call, "a", action, format!("Tool::\"{action}\""));
            e.verdict = Some(verdict);
            e
        };
        log.append_blocking(call("echo", Verdict::Allow)).unwrap();
        log.append_blocking(call("echo", Verdict::Deny)).unwrap();
        log.append_blocking(Entry::outcome_of(
            1,
            "a",
            "echo",
            "Tool::\"echo\"",
            "p",
            Outcome::Ok,
        ))
        .unwrap();
        // A hostile agent's made-up tool names.
        for i in 0..(MAX_ACTIONS + 50) {
            log.append_blocking(call(&format!("made-up-{i}"), Verdict::Deny))
                .unwrap();
        }
        let text = metrics.encode();
        assert!(
            text.contains(
                r#"corral_decisions_total{kind="call",action="echo",decision="allow"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"corral_outcomes_total{action="echo",outcome="ok"} 1"#));
        let labelled = text
            .lines()
            .filter(|l| l.starts_with("corral_decisions_total"))
            .count();
        assert_eq!(
            labelled,
            MAX_ACTIONS + 2,
            "echo's two, 255 made-up names, one for the rest"
        );
        assert!(
            text.contains(r#"action="_other",decision="deny"} 51"#),
            "{text}"
        );
        assert!(text.contains(&format!("corral_audit_records_total {}", MAX_ACTIONS + 53)));
        assert!(text.contains("corral_audit_sync_seconds_count"));
    }
}
