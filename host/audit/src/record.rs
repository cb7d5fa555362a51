//! The record, and the canonical form its hash covers.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The `prev_hash` of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What a record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The decision on a tool call, written before the tool runs.
    Call,
    /// The decision on one file, HTTP or secret use inside a running tool.
    Capability,
    /// How an allowed call ended; `parent` is its `Call` record.
    Outcome,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Call => "call",
            Kind::Capability => "capability",
            Kind::Outcome => "outcome",
        }
    }

    pub fn parse(text: &str) -> Option<Kind> {
        match text {
            "call" => Some(Kind::Call),
            "capability" => Some(Kind::Capability),
            "outcome" => Some(Kind::Outcome),
            _ => None,
        }
    }
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    Error,
    Timeout,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Timeout => "timeout",
        }
    }

    pub fn parse(text: &str) -> Option<Outcome> {
        match text {
            "ok" => Some(Outcome::Ok),
            "error" => Some(Outcome::Error),
            "timeout" => Some(Outcome::Timeout),
            _ => None,
        }
    }
}

/// What the broker hands the log. The writer adds sequence, time and hashes,
/// and redacts `arguments`.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// When it happened (set by [`Entry::new`]), not when it was committed:
    /// an outcome may be committed a little after it is queued.
    pub time_us: i64,
    pub kind: Kind,
    pub agent: String,
    /// The Cedar action id: the tool name for a call, `read_file`,
    /// `http_request`, … for a capability.
    pub action: String,
    /// The Cedar resource, as `Type::"id"`.
    pub resource: String,
    /// The request's context minus `common`: the tool's input for a call,
    /// the path or URL parts for a capability.
    pub arguments: serde_json::Value,
    /// The `common` context (request time, session id, session counters).
    pub session: serde_json::Value,
    /// `Some(allowed)` for `Call` and `Capability`; `None` for `Outcome`.
    pub allowed: Option<bool>,
    pub policy_ids: Vec<String>,
    pub errors: Vec<String>,
    pub policy_hash: String,
    pub tool_sha256: Option<String>,
    pub duration_us: Option<i64>,
    pub outcome: Option<Outcome>,
    /// The `Call` record this one belongs to.
    pub parent: Option<i64>,
    /// A one-line explanation: the denial reason, or the tool's error.
    pub detail: Option<String>,
}

impl Entry {
    /// A record with only its subject set; the caller fills in the rest.
    pub fn new(kind: Kind, agent: &str, action: &str, resource: impl Into<String>) -> Entry {
        Entry {
            time_us: crate::time::now_micros(),
            kind,
            agent: agent.to_string(),
            action: action.to_string(),
            resource: resource.into(),
            arguments: serde_json::Value::Object(Default::default()),
            session: serde_json::Value::Object(Default::default()),
            allowed: None,
            policy_ids: Vec::new(),
            errors: Vec::new(),
            policy_hash: String::new(),
            tool_sha256: None,
            duration_us: None,
            outcome: None,
            parent: None,
            detail: None,
        }
    }
}

/// One stored record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub seq: i64,
    pub time_us: i64,
    pub kind: Kind,
    pub agent: String,
    pub action: String,
    pub resource: String,
    /// Redacted JSON text, stored and hashed exactly as written.
    pub arguments: String,
    /// Whether redaction changed `arguments`.
    pub redacted: bool,
    pub session: String,
    pub decision: Option<String>,
    pub policy_ids: Vec<String>,
    pub errors: Vec<String>,
    pub policy_hash: String,
    pub tool_sha256: Option<String>,
    pub duration_us: Option<i64>,
    pub outcome: Option<Outcome>,
    pub parent: Option<i64>,
    pub detail: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

/// The fields the hash covers, in a fixed order: serde writes struct fields
/// in declaration order, so this serializes identically on every platform
/// and version, whatever the JSON map ordering of the build.
#[derive(Serialize)]
struct Canonical<'a> {
    seq: i64,
    time_us: i64,
    kind: &'a str,
    agent: &'a str,
    action: &'a str,
    resource: &'a str,
    arguments: &'a str,
    redacted: bool,
    session: &'a str,
    decision: Option<&'a str>,
    policy_ids: &'a [String],
    errors: &'a [String],
    policy_hash: &'a str,
    tool_sha256: Option<&'a str>,
    duration_us: Option<i64>,
    outcome: Option<&'a str>,
    parent: Option<i64>,
    detail: Option<&'a str>,
}

impl Record {
    /// `sha256(prev_hash ‖ "\n" ‖ canonical JSON)`, hex.
    pub fn compute_hash(&self) -> String {
        let canonical = Canonical {
            seq: self.seq,
            time_us: self.time_us,
            kind: self.kind.as_str(),
            agent: &self.agent,
            action: &self.action,
            resource: &self.resource,
            arguments: &self.arguments,
            redacted: self.redacted,
            session: &self.session,
            decision: self.decision.as_deref(),
            policy_ids: &self.policy_ids,
            errors: &self.errors,
            policy_hash: &self.policy_hash,
            tool_sha256: self.tool_sha256.as_deref(),
            duration_us: self.duration_us,
            outcome: self.outcome.map(Outcome::as_str),
            parent: self.parent,
            detail: self.detail.as_deref(),
        };
        let mut hasher = Sha256::new();
        hasher.update(self.prev_hash.as_bytes());
        hasher.update(b"\n");
        // Serializing borrowed strings, integers and booleans cannot fail.
        let json = serde_json::to_vec(&canonical).unwrap_or_default();
        hasher.update(&json);
        hex::encode(hasher.finalize())
    }

    pub fn allowed(&self) -> Option<bool> {
        self.decision.as_deref().map(|d| d == "allow")
    }
}
