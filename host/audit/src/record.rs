//! The record, and the canonical form its hash covers.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::redact::Redactor;

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
    /// A call that `@approval` permits allow only with a person's yes was
    /// put to people: who may answer, which policies asked, until when.
    /// `parent` is its `Call` record.
    ApprovalRequested,
    /// A person approved it: who, through which channel, for this call
    /// only or for a period. The record's decision is the `approve`
    /// action's. `parent` is the `Call` record.
    ApprovalGranted,
    /// A person refused it, with their reason. `parent` is the `Call`
    /// record.
    ApprovalDenied,
    /// Nobody answered in time, or the host shut down first: the call is
    /// denied. `parent` is the `Call` record.
    ApprovalExpired,
    /// An answer that did not count (the `approve` action refused the
    /// person, or the request was no longer waiting); the call still waits,
    /// or already ended. `parent` is the `Call` record, if known.
    ApprovalRefused,
    /// A scheduled run that did not happen: missed while the host was
    /// down (with `missed = "skip"`), or its schedule's previous run was
    /// still unanswered. No decision was made; `detail` says why.
    ScheduleSkipped,
}

impl Kind {
    /// The kind's name in records (`call`, `capability`, `outcome`,
    /// `approval_requested`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Call => "call",
            Kind::Capability => "capability",
            Kind::Outcome => "outcome",
            Kind::ApprovalRequested => "approval_requested",
            Kind::ApprovalGranted => "approval_granted",
            Kind::ApprovalDenied => "approval_denied",
            Kind::ApprovalExpired => "approval_expired",
            Kind::ApprovalRefused => "approval_refused",
            Kind::ScheduleSkipped => "schedule_skipped",
        }
    }

    /// Every kind, in the order the docs list them.
    pub const ALL: [Kind; 9] = [
        Kind::Call,
        Kind::Capability,
        Kind::Outcome,
        Kind::ApprovalRequested,
        Kind::ApprovalGranted,
        Kind::ApprovalDenied,
        Kind::ApprovalExpired,
        Kind::ApprovalRefused,
        Kind::ScheduleSkipped,
    ];

    /// The kind named `text`, if any.
    pub fn parse(text: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// What a decision came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Allowed.
    Allow,
    /// Denied.
    Deny,
    /// Allowed only once a person approves (`@approval` permits).
    Ask,
    /// No permit allowed it, and it was let through anyway because its
    /// agent runs in observe mode.
    WouldDeny,
}

impl Verdict {
    /// The name in records: `allow`, `deny`, `ask` or `would-deny`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::Ask => "ask",
            Verdict::WouldDeny => "would-deny",
        }
    }
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Returned.
    Ok,
    /// Failed (the tool's error or the host's).
    Error,
    /// Ran out of time.
    Timeout,
}

impl Outcome {
    /// The outcome's name in records (`ok`, `error`, `timeout`).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Timeout => "timeout",
        }
    }

    /// The outcome named `text`, if any.
    pub fn parse(text: &str) -> Option<Outcome> {
        match text {
            "ok" => Some(Outcome::Ok),
            "error" => Some(Outcome::Error),
            "timeout" => Some(Outcome::Timeout),
            _ => None,
        }
    }
}

/// The model tokens one `use_model` call used, as the provider counted
/// them: what daily and session budgets add up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TokenUsage {
    /// Tokens the provider counted in the request.
    pub input_tokens: u64,
    /// Tokens it generated.
    pub output_tokens: u64,
}

impl TokenUsage {
    /// Input and output together, as budgets count them.
    pub fn total(self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }

    /// Each count capped at `i64::MAX`, the most a SQLite integer holds.
    pub(crate) fn storable(self) -> TokenUsage {
        let cap = |n: u64| n.min(i64::MAX as u64);
        TokenUsage {
            input_tokens: cap(self.input_tokens),
            output_tokens: cap(self.output_tokens),
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
    /// What the record is about.
    pub kind: Kind,
    /// The agent it concerns.
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
    /// What a decision came to, for a `Call`, a `Capability` and an
    /// answer to an approval (the `approve` action's decision); `None` for
    /// an `Outcome`.
    pub verdict: Option<Verdict>,
    /// The policies that decided (see `corral_gate::DecisionSummary`).
    pub policy_ids: Vec<String>,
    /// Evaluation errors, each of which forced a deny.
    pub errors: Vec<String>,
    /// The hash of the policy set that decided.
    pub policy_hash: String,
    /// The sha256 of the tool component that ran, for a call.
    pub tool_sha256: Option<String>,
    /// How long the call took, for an outcome.
    pub duration_us: Option<i64>,
    /// How the call ended, for an outcome.
    pub outcome: Option<Outcome>,
    /// The `Call` record this one belongs to.
    pub parent: Option<i64>,
    /// A one-line explanation: the denial reason, or the tool's error.
    pub detail: Option<String>,
    /// For a model call's outcome: the tokens it used.
    pub usage: Option<TokenUsage>,
    /// For a decision: what enforcing the `@shadow` policies would have
    /// decided, when that differs.
    pub shadow: Option<String>,
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
            verdict: None,
            policy_ids: Vec::new(),
            errors: Vec::new(),
            policy_hash: String::new(),
            tool_sha256: None,
            duration_us: None,
            outcome: None,
            parent: None,
            detail: None,
            usage: None,
            shadow: None,
        }
    }

    /// The record of a decision: whether it allowed, the policies and the
    /// policy set that decided, their errors, and for a denial, why.
    pub fn decided(
        kind: Kind,
        agent: &str,
        action: &str,
        resource: impl Into<String>,
        decision: &corral_gate::DecisionSummary,
    ) -> Entry {
        let mut entry = Entry::new(kind, agent, action, resource);
        entry.verdict = Some(match (decision.allowed, decision.ask) {
            (true, _) => Verdict::Allow,
            (false, true) => Verdict::Ask,
            (false, false) => Verdict::Deny,
        });
        entry.policy_ids = decision.policy_ids.clone();
        entry.errors = decision.errors.clone();
        entry.policy_hash = decision.policy_set_hash.clone();
        if !decision.allowed {
            entry.detail = Some(decision.explanation.clone());
        }
        entry.shadow = decision.shadow.clone();
        entry
    }

    /// The record of how the call record `parent` ended.
    pub fn outcome_of(
        parent: i64,
        agent: &str,
        action: &str,
        resource: impl Into<String>,
        policy_hash: impl Into<String>,
        outcome: Outcome,
    ) -> Entry {
        let mut entry = Entry::new(Kind::Outcome, agent, action, resource);
        entry.parent = Some(parent);
        entry.policy_hash = policy_hash.into();
        entry.outcome = Some(outcome);
        entry
    }
}

/// One stored record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Its place in the chain, from 1.
    pub seq: i64,
    /// When it happened, microseconds since the epoch.
    pub time_us: i64,
    /// What it is about.
    pub kind: Kind,
    /// The agent.
    pub agent: String,
    /// The Cedar action id.
    pub action: String,
    /// The Cedar resource, as `Type::"id"`.
    pub resource: String,
    /// Redacted JSON text, stored and hashed exactly as written.
    pub arguments: String,
    /// Whether redaction changed `arguments`.
    pub redacted: bool,
    /// The `common` context, redacted JSON text.
    pub session: String,
    /// `allow`, `deny` or `ask` for a decision; none for an outcome.
    pub decision: Option<String>,
    /// The policies that decided.
    pub policy_ids: Vec<String>,
    /// Evaluation errors.
    pub errors: Vec<String>,
    /// The hash of the policy set that decided.
    pub policy_hash: String,
    /// The sha256 of the tool component, for calls and outcomes.
    pub tool_sha256: Option<String>,
    /// How long the call took, for an outcome.
    pub duration_us: Option<i64>,
    /// How the call ended, for an outcome.
    pub outcome: Option<Outcome>,
    /// The call record an outcome or capability belongs to.
    pub parent: Option<i64>,
    /// A one-line explanation: a denial's reason, or the tool's error.
    pub detail: Option<String>,
    /// Written only when present, so that records from before it was
    /// added keep their canonical form, and their hashes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<TokenUsage>,
    /// For a decision, what enforcing the `@shadow` policies would have
    /// decided, when that differs. Written only when present, like `usage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<String>,
    /// The previous record's hash (`GENESIS_HASH` for the first).
    pub prev_hash: String,
    /// This record's hash.
    pub hash: String,
}

/// The fields the hash covers, in a fixed order: serde writes struct fields
/// in declaration order, so this serializes identically on every platform
/// and version, whatever the JSON map ordering of the build.
#[derive(Serialize)]
struct Canonical<'a> {
    seq: i64,
    // serde_json writes a flattened struct's fields in place, in order:
    // the same bytes as the fields written out here.
    #[serde(flatten)]
    tail: CanonicalTail<'a>,
}

/// [`Canonical`] without `seq`, which the chain assigns: a record's JSON is
/// built before it takes the chain's lock, and the lock is held only to
/// number, hash and write it.
#[derive(Serialize)]
struct CanonicalTail<'a> {
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
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<TokenUsage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shadow: Option<&'a str>,
}

/// A record's canonical JSON after `{"seq":N,`: everything the hash covers
/// but the number and the previous hash. [`Sealed`] completes it.
pub(crate) struct Unsealed {
    pub record: Record,
    /// `"time_us":…}`, the canonical form's fields after `seq`.
    tail: Vec<u8>,
}

impl Unsealed {
    /// The record for `entry`, redacted and serialized, before the chain
    /// gives it a number and hashes: done outside the chain lock.
    pub(crate) fn from_entry(redactor: &Redactor, entry: Entry) -> Unsealed {
        let (arguments, redacted) = redactor.redact_to_string(&entry.arguments);
        let (session, session_redacted) = redactor.redact_to_string(&entry.session);
        Unsealed::new(Record {
            seq: 0,
            time_us: entry.time_us,
            kind: entry.kind,
            agent: entry.agent,
            action: entry.action,
            resource: entry.resource,
            arguments,
            redacted: redacted || session_redacted,
            session,
            decision: entry.verdict.map(|v| v.as_str().to_string()),
            policy_ids: entry.policy_ids,
            errors: entry.errors,
            policy_hash: entry.policy_hash,
            tool_sha256: entry.tool_sha256,
            duration_us: entry.duration_us,
            outcome: entry.outcome,
            parent: entry.parent,
            detail: entry.detail,
            // Sealed as SQLite (signed) will hold it, so the stored record
            // still hashes to its chain entry whatever a provider reports.
            usage: entry.usage.map(TokenUsage::storable),
            shadow: entry.shadow,
            prev_hash: String::new(),
            hash: String::new(),
        })
    }

    pub(crate) fn new(record: Record) -> Unsealed {
        let tail = record.canonical_tail();
        // Serializing borrowed strings, integers and booleans cannot fail;
        // were it to, an empty tail would be hashed as if it were the
        // record, so it stops here instead.
        let mut tail = serde_json::to_vec(&tail).expect("a record's canonical JSON");
        // `{"time_us":…}` → `"time_us":…}`
        tail.remove(0);
        Unsealed { record, tail }
    }

    /// Numbers the record `seq`, after the record whose hash is
    /// `prev_hash`, and writes its spool line (its `Record` JSON, as serde
    /// writes it) into `line`. The hash is [`Record::compute_hash`]'s.
    pub(crate) fn seal(mut self, seq: i64, prev_hash: String, line: &mut Vec<u8>) -> Record {
        let mut number = itoa_buf(seq);
        let number = number.format();
        let mut hasher = Sha256::new();
        hasher.update(prev_hash.as_bytes());
        hasher.update(b"\n{\"seq\":");
        hasher.update(number.as_bytes());
        hasher.update(b",");
        hasher.update(&self.tail);
        let hash = hex::encode(hasher.finalize());
        line.clear();
        line.extend_from_slice(b"{\"seq\":");
        line.extend_from_slice(number.as_bytes());
        line.push(b',');
        // The tail without its closing brace, then the two hashes (hex: no
        // escaping), as serde writes `Record`'s last two fields.
        line.extend_from_slice(&self.tail[..self.tail.len().saturating_sub(1)]);
        line.extend_from_slice(b",\"prev_hash\":\"");
        line.extend_from_slice(prev_hash.as_bytes());
        line.extend_from_slice(b"\",\"hash\":\"");
        line.extend_from_slice(hash.as_bytes());
        line.extend_from_slice(b"\"}\n");
        self.record.seq = seq;
        self.record.prev_hash = prev_hash;
        self.record.hash = hash;
        self.record
    }
}

/// A decimal formatter on the stack, for the one integer a record's number
/// needs on the chain lock's path.
struct ItoaBuf {
    bytes: [u8; 20],
    start: usize,
}

fn itoa_buf(n: i64) -> ItoaBuf {
    let mut b = ItoaBuf {
        bytes: [0; 20],
        start: 20,
    };
    // Record numbers start at 1; a negative one never reaches here, and
    // would only print as its magnitude's digits after a '-'.
    let negative = n < 0;
    let mut v = n.unsigned_abs();
    loop {
        b.start -= 1;
        b.bytes[b.start] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if negative && b.start > 0 {
        b.start -= 1;
        b.bytes[b.start] = b'-';
    }
    b
}

impl ItoaBuf {
    fn format(&mut self) -> &str {
        // Only ASCII digits and '-' were written.
        std::str::from_utf8(&self.bytes[self.start..]).unwrap_or("0")
    }
}

impl Record {
    fn canonical_tail(&self) -> CanonicalTail<'_> {
        CanonicalTail {
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
            usage: self.usage,
            shadow: self.shadow.as_deref(),
        }
    }

    /// `sha256(prev_hash ‖ "\n" ‖ canonical JSON)`, hex.
    pub fn compute_hash(&self) -> String {
        let canonical = Canonical {
            seq: self.seq,
            tail: self.canonical_tail(),
        };
        let mut hasher = Sha256::new();
        hasher.update(self.prev_hash.as_bytes());
        hasher.update(b"\n");
        // As in `Unsealed::new`: cannot fail, and must not hash nothing.
        let json = serde_json::to_vec(&canonical).expect("a record's canonical JSON");
        hasher.update(&json);
        hex::encode(hasher.finalize())
    }

    /// Whether a decision allowed; none for an outcome.
    pub fn allowed(&self) -> Option<bool> {
        self.decision.as_deref().map(|d| d == "allow")
    }

    /// The model tokens this record says were used: its usage, or for a
    /// record written before usage had fields of its own, the counts its
    /// detail gave as `input_tokens=N output_tokens=M`.
    pub fn tokens_used(&self) -> u64 {
        if let Some(usage) = self.usage {
            return usage.total();
        }
        self.detail
            .as_deref()
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                matches!(k, "input_tokens" | "output_tokens").then(|| v.parse::<u64>().ok())?
            })
            .fold(0u64, u64::saturating_add)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u64) -> Record {
        // Varied enough to reach every field's cases: escapes, unicode,
        // empty and absent values, negative and large numbers.
        let pick = |k: u64| n.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(k as u32) % 4;
        Record {
            seq: 0,
            time_us: n as i64 * 1_000_003 - 7,
            kind: [Kind::Call, Kind::Capability, Kind::Outcome][(n % 3) as usize],
            agent: ["a", "agent \"quoted\"", "ünï\u{1F600}", "tab\tnew\nline"][pick(1) as usize]
                .into(),
            action: format!("act{n}"),
            resource: "Tool::\"echo\"".into(),
            arguments: [
                r#"{"message":"hello"}"#,
                "{}",
                r#"{"x":"\\u0000"}"#,
                r#"{"p":[1,2.5,null]}"#,
            ][pick(2) as usize]
                .into(),
            redacted: n.is_multiple_of(2),
            session: r#"{"request_time":1,"session_id":"s","calls_in_session":2}"#.into(),
            decision: [None, Some("allow".into()), Some("deny".into()), None][pick(3) as usize]
                .clone(),
            policy_ids: (0..pick(4)).map(|i| format!("p-{i}")).collect(),
            errors: (0..pick(5) % 2).map(|i| format!("e \"{i}\"")).collect(),
            policy_hash: "ab".repeat(32),
            tool_sha256: n.is_multiple_of(3).then(|| "cd".repeat(32)),
            duration_us: (n % 2 == 1).then_some(n as i64),
            outcome: [
                None,
                Some(Outcome::Ok),
                Some(Outcome::Error),
                Some(Outcome::Timeout),
            ][pick(6) as usize],
            parent: (n % 4 == 1).then_some(i64::MAX - n as i64),
            detail: n.is_multiple_of(5).then(|| "a \\ b / c \u{7f}".into()),
            usage: (n % 7 == 2).then_some(TokenUsage {
                input_tokens: n,
                output_tokens: u64::MAX - n,
            }),
            shadow: None,
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    /// Sealing builds the record's hash and spool line in pieces, outside
    /// and inside the chain's lock; the result must be what hashing the
    /// whole canonical form and serializing the record give.
    #[test]
    fn sealing_matches_the_canonical_hash_and_serde_line() {
        let mut prev = GENESIS_HASH.to_string();
        let mut line = Vec::new();
        for (i, n) in (0..400u64).enumerate() {
            let seq = [1, 9, 10, 99, 100, 12345678, i64::MAX][i % 7];
            let sealed = Unsealed::new(record(n)).seal(seq, prev.clone(), &mut line);
            assert_eq!(sealed.seq, seq);
            assert_eq!(sealed.prev_hash, prev);
            assert_eq!(sealed.hash, sealed.compute_hash(), "record {n}");
            let mut expected = serde_json::to_vec(&sealed).unwrap();
            expected.push(b'\n');
            assert_eq!(
                String::from_utf8_lossy(&line),
                String::from_utf8_lossy(&expected),
                "record {n}"
            );
            let back: Record = serde_json::from_slice(&line).unwrap();
            assert_eq!(back, sealed);
            prev = sealed.hash.clone();
        }
    }

    /// Logs already written are verified against this form: it is spelled
    /// out byte for byte here, so that no change to the structs or to
    /// serde can move it unnoticed.
    #[test]
    fn the_canonical_form_is_fixed() {
        let r = Record {
            seq: 7,
            time_us: 1_700_000_000_000_001,
            kind: Kind::Capability,
            agent: "agent \"quoted\"".into(),
            action: "act1".into(),
            resource: "Tool::\"echo\"".into(),
            arguments: "{}".into(),
            redacted: false,
            session: r#"{"request_time":1,"session_id":"s","calls_in_session":2}"#.into(),
            decision: Some("allow".into()),
            policy_ids: vec!["p-0".into(), "p-1".into()],
            errors: vec![],
            policy_hash: "ab".repeat(32),
            tool_sha256: None,
            duration_us: Some(1),
            outcome: None,
            parent: Some(i64::MAX - 1),
            detail: None,
            usage: None,
            shadow: None,
            prev_hash: "ef".repeat(32),
            hash: String::new(),
        };
        let canonical = concat!(
            r#"{"seq":7,"time_us":1700000000000001,"kind":"capability","agent":"agent \"quoted\"","#,
            r#""action":"act1","resource":"Tool::\"echo\"","arguments":"{}","redacted":false,"#,
            r#""session":"{\"request_time\":1,\"session_id\":\"s\",\"calls_in_session\":2}","#,
            r#""decision":"allow","policy_ids":["p-0","p-1"],"errors":[],"#,
            r#""policy_hash":"abababababababababababababababababababababababababababababababab","#,
            r#""tool_sha256":null,"duration_us":1,"outcome":null,"parent":9223372036854775806,"detail":null}"#,
        );
        let expected = hex::encode(Sha256::digest(format!("{}\n{canonical}", r.prev_hash)));
        assert_eq!(r.compute_hash(), expected);
    }

    #[test]
    fn numbers_print_as_decimal() {
        for n in [0, 1, 9, 10, 1234567890, i64::MAX, -1, i64::MIN + 1] {
            assert_eq!(itoa_buf(n).format(), n.to_string());
        }
    }
}

#[cfg(test)]
mod usage_tests {
    use super::*;

    fn record(usage: Option<TokenUsage>, detail: Option<&str>) -> Record {
        Record {
            seq: 4,
            time_us: 10,
            kind: Kind::Outcome,
            agent: "a".into(),
            action: "use_model".into(),
            resource: "Model::\"m\"".into(),
            arguments: "{}".into(),
            redacted: false,
            session: "{}".into(),
            decision: None,
            policy_ids: vec![],
            errors: vec![],
            policy_hash: "p".into(),
            tool_sha256: None,
            duration_us: Some(3),
            outcome: Some(Outcome::Ok),
            parent: Some(3),
            detail: detail.map(str::to_string),
            usage,
            shadow: None,
            prev_hash: GENESIS_HASH.into(),
            hash: String::new(),
        }
    }

    #[test]
    fn a_record_without_usage_hashes_as_records_always_have() {
        // The hash of this record as written before usage had fields:
        // adding them must not change any existing record's hash.
        let old = record(
            None,
            Some("input_tokens=100 output_tokens=20 stop_reason=end"),
        );
        let json = serde_json::to_string(&old.canonical_tail()).unwrap();
        assert!(!json.contains("usage"), "{json}");
        assert!(json.ends_with(r#""detail":"input_tokens=100 output_tokens=20 stop_reason=end"}"#));
        let with = record(Some(TokenUsage::default()), None);
        assert_ne!(old.compute_hash(), with.compute_hash());
    }

    #[test]
    fn usage_is_sealed_into_the_spool_line_as_serde_writes_it() {
        let with = record(
            Some(TokenUsage {
                input_tokens: 100,
                output_tokens: 20,
            }),
            None,
        );
        let mut line = Vec::new();
        let sealed = Unsealed::new(with.clone()).seal(4, GENESIS_HASH.into(), &mut line);
        assert_eq!(sealed.hash, sealed.compute_hash());
        let parsed: Record = serde_json::from_slice(&line).unwrap();
        assert_eq!(parsed, sealed);
        assert_eq!(
            serde_json::to_vec(&sealed).unwrap(),
            line[..line.len() - 1].to_vec()
        );
    }

    #[test]
    fn tokens_used_reads_fields_or_an_older_record_s_detail() {
        let typed = record(
            Some(TokenUsage {
                input_tokens: 100,
                output_tokens: 20,
            }),
            Some("input_tokens=1"),
        );
        assert_eq!(typed.tokens_used(), 120);
        let older = record(
            None,
            Some("input_tokens=100 output_tokens=20 stop_reason=end"),
        );
        assert_eq!(older.tokens_used(), 120);
        assert_eq!(record(None, Some("tool failed")).tokens_used(), 0);
    }
}
