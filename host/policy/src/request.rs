//! The parts of a Cedar request Corral builds: the common context every
//! request carries, the entities one decision adds, and entity uids from
//! the schema's type names (parsed once).

use std::collections::HashMap;
use std::sync::RwLock;

use cedar_policy::EntityUid;
use serde_json::{Value, json};

/// The common context every request carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Common {
    /// Seconds since the Unix epoch when the request was made.
    pub request_time: i64,
    /// The MCP session the request came in on.
    pub session_id: String,
    /// Calls made in the session so far, this one included.
    pub calls_in_session: i64,
}

impl Common {
    /// The common context of a request made now.
    pub fn now(session_id: &str, calls_in_session: i64) -> Self {
        let request_time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        Common {
            request_time,
            session_id: session_id.to_string(),
            calls_in_session,
        }
    }

    /// The JSON form the context, the audit log and replay use.
    pub fn to_json(&self) -> Value {
        json!({
            "request_time": self.request_time,
            "session_id": self.session_id,
            "calls_in_session": self.calls_in_session,
        })
    }

    /// Reads [`Self::to_json`]'s form back; a missing field reads as zero
    /// or empty.
    pub fn from_json(value: &Value) -> Common {
        Common {
            request_time: value["request_time"].as_i64().unwrap_or(0),
            session_id: value["session_id"].as_str().unwrap_or("").to_string(),
            calls_in_session: value["calls_in_session"].as_i64().unwrap_or(0),
        }
    }

    pub(crate) fn expr(&self) -> cedar_policy::RestrictedExpression {
        use cedar_policy::RestrictedExpression as E;
        E::new_record([
            ("request_time".to_string(), E::new_long(self.request_time)),
            (
                "session_id".to_string(),
                E::new_string(self.session_id.clone()),
            ),
            (
                "calls_in_session".to_string(),
                E::new_long(self.calls_in_session),
            ),
        ])
        .unwrap_or_else(|_| unreachable!("a record with fixed, distinct keys always builds"))
    }
}

/// An entity for one decision ([`PolicyEngine::decide`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RequestEntity {
    /// The entity type (`Channel`, `User`, …).
    pub ty: String,
    /// The entity id.
    pub id: String,
    /// Attributes as Cedar JSON values (strings, longs, booleans).
    pub attrs: serde_json::Map<String, Value>,
    /// `(type, id)` of each parent.
    pub parents: Vec<(String, String)>,
}

impl RequestEntity {
    /// An entity with no attributes and no parents.
    pub fn new(ty: &str, id: &str) -> Self {
        RequestEntity {
            ty: ty.to_string(),
            id: id.to_string(),
            attrs: Default::default(),
            parents: Vec::new(),
        }
    }

    /// Adds the attribute `name`.
    pub fn attr(mut self, name: &str, value: Value) -> Self {
        self.attrs.insert(name.to_string(), value);
        self
    }

    /// Adds a parent.
    pub fn parent(mut self, ty: &str, id: &str) -> Self {
        self.parents.push((ty.to_string(), id.to_string()));
        self
    }

    pub(crate) fn to_json(&self) -> Value {
        json!({
            "uid": { "type": self.ty, "id": self.id },
            "attrs": self.attrs,
            "parents": self.parents.iter().map(|(t, i)| json!({ "type": t, "id": i })).collect::<Vec<_>>(),
        })
    }
}

/// `Type::"id"` as an `EntityUid`; ids are arbitrary strings.
pub fn uid(ty: &str, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(type_name(ty), cedar_policy::EntityId::new(id))
}

/// `ty` parsed, once per name: Cedar parses a type name with a regex and
/// its grammar, which was a visible share of building a call's request.
/// Callers pass the schema's own type names, so the cache stays small; it
/// stops growing at a bound all the same.
fn type_name(ty: &str) -> cedar_policy::EntityTypeName {
    static PARSED: std::sync::LazyLock<RwLock<HashMap<String, cedar_policy::EntityTypeName>>> =
        std::sync::LazyLock::new(Default::default);
    const MAX_TYPE_NAMES: usize = 256;
    if let Ok(parsed) = PARSED.read()
        && let Some(t) = parsed.get(ty)
    {
        return t.clone();
    }
    let t: cedar_policy::EntityTypeName = ty.parse().unwrap_or_else(|_| unreachable_type(ty));
    if let Ok(mut parsed) = PARSED.write()
        && parsed.len() < MAX_TYPE_NAMES
    {
        parsed.insert(ty.to_string(), t.clone());
    }
    t
}

#[cold]
fn unreachable_type(ty: &str) -> cedar_policy::EntityTypeName {
    // Only called with the schema's own type names, which always parse.
    panic!("internal error: `{ty}` is not a valid Cedar type name")
}
