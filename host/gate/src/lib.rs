//! The capability gate: the host's decision point for everything a tool
//! touches outside its own memory.
//!
//! This crate holds only the vocabulary, so that the tool runtime
//! (wasmtime) and the policy engine (Cedar) can share it without either
//! compiling the other.
//!
//! The runtime asks the gate *before* each workspace operation, each HTTP
//! request and each secret substitution, and does nothing the gate did not
//! allow. The gate is a trait so that the runtime does not depend on how
//! decisions are made: [`AllowList`] serves tests and `corral tool call`;
//! the policy engine implements the same trait on Cedar, and the broker
//! wraps it to audit each decision.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// What the audit log never keeps, shared by the log's redaction and by
/// anything else that writes an agent's values into a record (a denial's
/// explanation).
pub mod redaction {
    /// Lower-case substrings: a key containing any of them holds a secret.
    pub const SECRET_KEY_PATTERNS: [&str; 9] = [
        "password",
        "passwd",
        "secret",
        "token",
        "api_key",
        "apikey",
        "authorization",
        "cookie",
        "private_key",
    ];

    /// A string longer than this is kept only as its length and digest.
    pub const MAX_STRING_BYTES: usize = 1024;

    /// Whether `key` contains one of `patterns`, ignoring ASCII case.
    pub fn matches_any(key: &str, patterns: &[impl AsRef<str>]) -> bool {
        let key = key.as_bytes();
        patterns.iter().any(|p| {
            let p = p.as_ref().as_bytes();
            p.is_empty()
                || key
                    .windows(p.len())
                    .any(|w| w.iter().zip(p).all(|(k, p)| k.to_ascii_lowercase() == *p))
        })
    }

    /// Whether `key` names a secret under the default patterns.
    pub fn is_secret_key(key: &str) -> bool {
        matches_any(key, &SECRET_KEY_PATTERNS)
    }
}

/// What a workspace operation does, for the gate's purposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileOp {
    /// Reading a file's contents.
    Read,
    /// Listing a directory.
    List,
    /// Reading a file's or directory's metadata.
    Stat,
    /// Creating or replacing a file (or a directory).
    Write,
    /// Removing a file or an empty directory.
    Remove,
}

impl FileOp {
    /// Whether the operation can change the workspace. Policies usually
    /// grant reading and writing separately.
    pub fn is_write(self) -> bool {
        matches!(self, FileOp::Write | FileOp::Remove)
    }

    /// The operation's name in policies and records (`read`, `write`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            FileOp::Read => "read",
            FileOp::List => "list",
            FileOp::Stat => "stat",
            FileOp::Write => "write",
            FileOp::Remove => "remove",
        }
    }
}

/// One outgoing HTTP request, as the gate sees it: already parsed by the
/// host, never the guest's own claims about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequestInfo {
    /// The HTTP method, upper case.
    pub method: String,
    /// `http` or `https`.
    pub scheme: String,
    /// Lowercased host name or IP literal (IPv6 without brackets).
    pub host: String,
    /// The port the connection will use, explicit or the scheme's default.
    pub port: u16,
    /// Path and query, e.g. `/v1/items?page=2`.
    pub path: String,
    /// The address the host name resolved to, and the only one the
    /// request will connect to. `None` only before resolution.
    pub address: Option<std::net::IpAddr>,
}

/// What a tool is about to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capability {
    /// A workspace operation.
    File {
        /// What it does.
        op: FileOp,
        /// A normalized path relative to the workspace root (`""` is the
        /// root itself).
        path: String,
    },
    /// An outgoing HTTP request.
    Http(HttpRequestInfo),
    /// Placing a secret into a request.
    Secret {
        /// The secret's name, as policies and tools know it.
        name: String,
        /// The host the request is bound for.
        host: String,
    },
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Capability::File { op, path } => {
                let shown = if path.is_empty() { "." } else { path };
                write!(f, "{} workspace file `{shown}`", op.as_str())
            }
            Capability::Http(r) => {
                write!(
                    f,
                    "HTTP {} {}://{}:{}{}",
                    r.method, r.scheme, r.host, r.port, r.path
                )?;
                match r.address {
                    Some(a) => write!(f, " (at {a})"),
                    None => Ok(()),
                }
            }
            Capability::Secret { name, host } => write!(f, "send secret `{name}` to {host}"),
        }
    }
}

/// Who is asking: the agent on whose behalf the tool runs, and the tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The agent's id.
    pub agent: String,
    /// The tool's name.
    pub tool: String,
}

/// Why something was refused. Carried unchanged to the guest (as the
/// `denied` case of `tool-error` or `fs-error`) and to the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// What a person reads: which policy, rule or default refused, and why.
    pub reason: String,
    /// Ids of the policies that decided; empty for the default deny and for
    /// the host's built-in rules.
    pub policy_ids: Vec<String>,
}

impl Denial {
    /// A refusal with no deciding policy (a built-in rule or the default deny).
    pub fn new(reason: impl Into<String>) -> Self {
        Denial {
            reason: reason.into(),
            policy_ids: Vec::new(),
        }
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The reason says whether a policy, the default deny or a built-in
        // rule refused; only deciding ids are added here. The format is
        // parsed back by guests (see the SDK), so it must stay stable.
        f.write_str(&self.reason)?;
        if !self.policy_ids.is_empty() {
            write!(f, " [policies: {}]", self.policy_ids.join(", "))?;
        }
        Ok(())
    }
}

/// Why a call was refused or failed, as the `error` field of the broker's
/// structured error result names it. Agents' exit codes and clients'
/// retry logic key on these names, so they never change spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// A policy (or the default deny) refused.
    Denied,
    /// No loaded tool has that name.
    UnknownTool,
    /// The arguments do not match the tool's input schema.
    InvalidInput,
    /// The agent is calling faster than its rate limit.
    RateLimited,
    /// A limit other than the rate (memory, fuel, output, a turn's steps).
    LimitExceeded,
    /// The call did not finish, or did not start, in time.
    TimedOut,
    /// The decision could not be recorded, so nothing ran.
    AuditUnavailable,
    /// The tool ran and reported a failure of its own.
    Failed,
    /// The tool trapped.
    Trap,
    /// The tool's output was not what its world promises.
    BadOutput,
    /// The host itself failed (a bug, caught).
    HostError,
}

impl Refusal {
    /// The name clients see, kebab-case.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Denied => "denied",
            Refusal::UnknownTool => "unknown-tool",
            Refusal::InvalidInput => "invalid-input",
            Refusal::RateLimited => "rate-limited",
            Refusal::LimitExceeded => "limit-exceeded",
            Refusal::TimedOut => "timed-out",
            Refusal::AuditUnavailable => "audit-unavailable",
            Refusal::Failed => "failed",
            Refusal::Trap => "trap",
            Refusal::BadOutput => "bad-output",
            Refusal::HostError => "host-error",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a policy decision comes to, in the terms every record of one uses:
/// the broker's calls, the capability gate's uses and the channels'
/// messages all reach the audit log through this one shape.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DecisionSummary {
    /// Whether it allowed.
    pub allowed: bool,
    /// Not allowed yet: a person must approve it first (`allowed` is
    /// false).
    pub ask: bool,
    /// The policies that decided.
    pub policy_ids: Vec<String>,
    /// Evaluation errors, each of which forced a deny.
    pub errors: Vec<String>,
    /// Identity of the policy set that decided.
    pub policy_set_hash: String,
    /// One line a person can read, for the record of a denial.
    pub explanation: String,
    /// Set when enforcing the `@shadow` policies would have decided
    /// otherwise: what they would have decided, and by which policies.
    pub shadow: Option<String>,
}

/// The gate's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateDecision {
    /// Go ahead.
    Allow,
    /// Refused, and why.
    Deny(Denial),
}

/// Decides each capability use of a running tool. Implementations must be
/// cheap and must not block for long: they run on the call's thread while
/// the guest waits.
pub trait CapabilityGate: Send + Sync {
    /// The decision on `capability`, used on behalf of `caller`.
    fn check(&self, caller: &Caller, capability: &Capability) -> GateDecision;

    /// The runtime refused `capability` itself, before asking: a host
    /// name that resolved to an address no tool may reach, for example. A
    /// gate that keeps a record records this refusal too, so that nothing
    /// a tool tried is missing from it.
    fn refused(&self, caller: &Caller, capability: &Capability, denial: &Denial) {
        let _ = (caller, capability, denial);
    }
}

/// Supplies secret values on the host side. The runtime asks only after
/// the gate allowed the secret for the request's host.
pub trait SecretStore: Send + Sync {
    /// The value, or `None` when no secret of that name is configured.
    fn get(&self, name: &str) -> Option<String>;
}

/// A gate that allows exactly what it was built with and nothing else.
///
/// Used by `corral tool call` and by tests; deployments use the Cedar gate.
/// Hosts are matched case-insensitively, optionally with a port
/// (`example.com:8443`); a host without a port matches any port.
#[derive(Debug, Clone, Default)]
pub struct AllowList {
    workspace_read: bool,
    workspace_write: bool,
    hosts: BTreeSet<(String, Option<u16>)>,
    /// Secret name → the hosts it may go to; an empty set means "any host
    /// this list allows".
    secrets: BTreeMap<String, BTreeSet<String>>,
}

impl AllowList {
    /// Allows nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Allows or refuses every workspace read (read, list, stat).
    pub fn workspace_read(mut self, yes: bool) -> Self {
        self.workspace_read = yes;
        self
    }

    /// Allows or refuses every workspace write (write, remove).
    pub fn workspace_write(mut self, yes: bool) -> Self {
        self.workspace_write = yes;
        self
    }

    /// Allows HTTP to `host` or `host:port`.
    pub fn allow_host(mut self, host: &str) -> Self {
        let host = host.trim().to_ascii_lowercase();
        let entry = match host.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') || h.ends_with(']') => match p.parse::<u16>() {
                Ok(port) => (h.trim_matches(['[', ']']).to_string(), Some(port)),
                Err(_) => (host.clone(), None),
            },
            _ => (host.trim_matches(['[', ']']).to_string(), None),
        };
        self.hosts.insert(entry);
        self
    }

    /// Lets secret `name` be sent to `host`, or to every allowed host when
    /// `host` is `None`.
    pub fn allow_secret(mut self, name: &str, host: Option<&str>) -> Self {
        let hosts = self.secrets.entry(name.to_string()).or_default();
        if let Some(h) = host {
            hosts.insert(h.to_ascii_lowercase());
        }
        self
    }

    fn host_allowed(&self, host: &str, port: Option<u16>) -> bool {
        self.hosts
            .iter()
            .any(|(h, p)| h == host && (p.is_none() || port.is_none() || *p == port))
    }
}

impl CapabilityGate for AllowList {
    fn check(&self, _caller: &Caller, capability: &Capability) -> GateDecision {
        let allowed = match capability {
            Capability::File { op, .. } if op.is_write() => self.workspace_write,
            Capability::File { .. } => self.workspace_read,
            Capability::Http(r) => self.host_allowed(&r.host, Some(r.port)),
            Capability::Secret { name, host } => match self.secrets.get(name) {
                Some(hosts) if hosts.is_empty() => self.host_allowed(host, None),
                Some(hosts) => hosts.contains(host),
                None => false,
            },
        };
        if allowed {
            GateDecision::Allow
        } else {
            GateDecision::Deny(Denial::new(format!("not granted: {capability}")))
        }
    }
}

/// Secrets held in memory, e.g. read from environment variables by the CLI.
#[derive(Default, Clone)]
pub struct StaticSecrets(BTreeMap<String, String>);

impl StaticSecrets {
    /// No secrets.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a secret by name.
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.0.insert(name.into(), value.into());
        self
    }
}

impl fmt::Debug for StaticSecrets {
    // Never print values: this type ends up in logs through Debug derives.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl SecretStore for StaticSecrets {
    fn get(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller() -> Caller {
        Caller {
            agent: "a".into(),
            tool: "t".into(),
        }
    }

    fn http(host: &str, port: u16) -> Capability {
        Capability::Http(HttpRequestInfo {
            method: "GET".into(),
            scheme: "http".into(),
            host: host.into(),
            port,
            path: "/".into(),
            address: None,
        })
    }

    #[test]
    fn empty_allow_list_denies_everything() {
        let g = AllowList::new();
        for c in [
            Capability::File {
                op: FileOp::Read,
                path: "a".into(),
            },
            Capability::File {
                op: FileOp::Write,
                path: "a".into(),
            },
            http("example.com", 80),
            Capability::Secret {
                name: "k".into(),
                host: "example.com".into(),
            },
        ] {
            assert!(
                matches!(g.check(&caller(), &c), GateDecision::Deny(_)),
                "{c}"
            );
        }
    }

    #[test]
    fn host_with_and_without_port() {
        let g = AllowList::new()
            .allow_host("Example.com")
            .allow_host("127.0.0.1:8080");
        assert_eq!(
            g.check(&caller(), &http("example.com", 443)),
            GateDecision::Allow
        );
        assert_eq!(
            g.check(&caller(), &http("127.0.0.1", 8080)),
            GateDecision::Allow
        );
        assert!(matches!(
            g.check(&caller(), &http("127.0.0.1", 8081)),
            GateDecision::Deny(_)
        ));
        assert!(matches!(
            g.check(&caller(), &http("evil.com", 80)),
            GateDecision::Deny(_)
        ));
    }

    #[test]
    fn secrets_follow_hosts() {
        let g = AllowList::new()
            .allow_host("a.test")
            .allow_host("b.test")
            .allow_secret("any", None)
            .allow_secret("only_b", Some("b.test"));
        let s = |n: &str, h: &str| Capability::Secret {
            name: n.into(),
            host: h.into(),
        };
        assert_eq!(g.check(&caller(), &s("any", "a.test")), GateDecision::Allow);
        assert!(matches!(
            g.check(&caller(), &s("any", "c.test")),
            GateDecision::Deny(_)
        ));
        assert!(matches!(
            g.check(&caller(), &s("only_b", "a.test")),
            GateDecision::Deny(_)
        ));
        assert_eq!(
            g.check(&caller(), &s("only_b", "b.test")),
            GateDecision::Allow
        );
    }

    #[test]
    fn secret_values_stay_out_of_debug() {
        let s = StaticSecrets::new().with("token", "hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
