//! Typed tool actions: each tool's input JSON Schema becomes the Cedar type
//! of `context.input` for that tool's action, so that a policy such as
//! `context.input.path like "notes/*"` is checked by the validator.
//!
//! # How JSON Schema maps to Cedar
//!
//! | JSON Schema | Cedar |
//! |---|---|
//! | `"type": "string"` (also `enum`/`const` of strings) | `String` |
//! | `"type": "string", "format": "workspace-path"` | `String`, and a value must already be normalized (see below) |
//! | `"type": "integer"` | `Long` (a value outside i64 makes the request invalid) |
//! | `"type": "boolean"` | `Bool` |
//! | `"type": "array"` with mappable `items` | `Set<T>` (order and duplicates are lost) |
//! | `"type": "object"` with `properties` | a record; `required` fields are required, others optional |
//!
//! Mapped conservatively — the field is **left out** of `context.input`, so
//! no policy can name it (the validator rejects one that tries), while the
//! tool still receives it:
//! - `"type": "number"`: Cedar has no floating point, and rounding could
//!   turn a denial into a permit.
//! - unions (`anyOf`, `oneOf`, `allOf`, a list of types, `$ref`), `null`,
//!   arrays without `items`, free-form objects without `properties`.
//! - properties the schema does not declare (`additionalProperties`).
//! - property names that are not plain text (containing `"`, `\` or control
//!   characters).
//!
//! A value that contradicts its declared type (a number where the schema
//! says string) makes the request invalid: it is refused, never coerced.
//!
//! A field a tool declares as a workspace path is what `like "notes/*"`
//! patterns are written against, so it must already be in the one form
//! the runtime decides on: relative, components separated by single `/`,
//! no `.` or `..` component, no trailing `/` (`""` is the workspace root).
//! `notes/../.env`, `./notes/a`, `notes//a` and `/etc/passwd` are refused
//! as invalid input before any policy is asked. Paths are compared as
//! bytes: the workspace's file system is case-sensitive, so `Notes/a` is
//! not `notes/a` on disk either. What a link inside the workspace leads
//! to is decided again, on the canonical path, when the tool touches it.

use std::fmt::Write as _;

use serde_json::Value;

/// A tool's input schema or input that does not fit Corral's mapping to
/// Cedar; the text names the field and what to change.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SchemaError(pub String);

/// Nesting deeper than this is left out rather than followed.
const MAX_DEPTH: usize = 8;

/// Names of actions in the base schema; a tool may not take one.
pub const RESERVED_ACTIONS: &[&str] = &[
    "call_tool",
    "read_file",
    "write_file",
    "http_request",
    "use_secret",
    "use_model",
    "post_message",
    "invoke",
    "approve",
    "mount",
];

/// A Cedar type derived from a JSON Schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CedarType {
    /// Any string.
    String,
    /// A string that must be a normalized workspace path.
    WorkspacePath,
    /// A 64-bit integer.
    Long,
    /// A boolean.
    Bool,
    /// A set of one element type.
    Set(Box<CedarType>),
    /// A record with these attributes.
    Record(Vec<Attr>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub name: String,
    pub required: bool,
    pub ty: CedarType,
}

/// Maps a JSON Schema; `None` means "left out" (see the module docs).
pub fn map_json_schema(schema: &Value) -> Option<CedarType> {
    map_at(schema, 0)
}

fn map_at(schema: &Value, depth: usize) -> Option<CedarType> {
    if depth > MAX_DEPTH {
        return None;
    }
    let obj = schema.as_object()?;
    if ["anyOf", "oneOf", "allOf", "$ref", "not", "if"]
        .iter()
        .any(|k| obj.contains_key(*k))
    {
        return None;
    }
    if let Some(values) = obj.get("enum").and_then(Value::as_array) {
        return values
            .iter()
            .all(Value::is_string)
            .then_some(CedarType::String);
    }
    if let Some(c) = obj.get("const") {
        return c.is_string().then_some(CedarType::String);
    }
    match obj.get("type")?.as_str()? {
        "string" if obj.get("format").and_then(Value::as_str) == Some("workspace-path") => {
            Some(CedarType::WorkspacePath)
        }
        "string" => Some(CedarType::String),
        "integer" => Some(CedarType::Long),
        "boolean" => Some(CedarType::Bool),
        "array" => Some(CedarType::Set(Box::new(map_at(
            obj.get("items")?,
            depth + 1,
        )?))),
        "object" => {
            let props = obj.get("properties")?.as_object()?;
            let required: Vec<&str> = obj
                .get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let mut attrs = Vec::new();
            for (name, sub) in props {
                if !plain_name(name) {
                    continue;
                }
                if let Some(ty) = map_at(sub, depth + 1) {
                    attrs.push(Attr {
                        name: name.clone(),
                        required: required.contains(&name.as_str()),
                        ty,
                    });
                }
            }
            attrs.sort_by(|a, b| a.name.cmp(&b.name));
            Some(CedarType::Record(attrs))
        }
        _ => None,
    }
}

fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c == '"' || c == '\\' || c.is_control())
}

impl CedarType {
    /// Writes the type in Cedar schema syntax.
    pub fn write_cedarschema(&self, out: &mut String, indent: usize) {
        match self {
            CedarType::String | CedarType::WorkspacePath => out.push_str("String"),
            CedarType::Long => out.push_str("Long"),
            CedarType::Bool => out.push_str("Bool"),
            CedarType::Set(t) => {
                out.push_str("Set<");
                t.write_cedarschema(out, indent);
                out.push('>');
            }
            CedarType::Record(attrs) => {
                if attrs.is_empty() {
                    out.push_str("{}");
                    return;
                }
                out.push_str("{\n");
                for a in attrs {
                    let _ = write!(
                        out,
                        "{:w$}\"{}\"{}: ",
                        "",
                        a.name,
                        if a.required { "" } else { "?" },
                        w = indent + 2
                    );
                    a.ty.write_cedarschema(out, indent + 2);
                    out.push_str(",\n");
                }
                let _ = write!(out, "{:w$}}}", "", w = indent);
            }
        }
    }

    /// Converts `value` (a tool input) into the Cedar value the context
    /// will carry: undeclared fields dropped, declared fields checked, no
    /// coercion. `at` names the position for error messages. Built straight
    /// into Cedar values: a JSON round trip was most of the cost of
    /// building a request.
    pub fn to_expr(
        &self,
        value: &Value,
        at: &str,
    ) -> Result<cedar_policy::RestrictedExpression, SchemaError> {
        use cedar_policy::RestrictedExpression as E;
        match (self, value) {
            (CedarType::String, Value::String(s)) => Ok(E::new_string(s.clone())),
            (CedarType::WorkspacePath, Value::String(s)) => {
                check_workspace_path(s).map_err(|e| SchemaError(format!("{at}: {e}")))?;
                Ok(E::new_string(s.clone()))
            }
            (CedarType::Bool, Value::Bool(b)) => Ok(E::new_bool(*b)),
            (CedarType::Long, Value::Number(n)) => match n.as_i64() {
                Some(i) => Ok(E::new_long(i)),
                None => Err(SchemaError(format!(
                    "{at}: {n} is not an integer that fits in 64 bits"
                ))),
            },
            (CedarType::Set(t), Value::Array(items)) => Ok(E::new_set(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| t.to_expr(v, &format!("{at}[{i}]")))
                    .collect::<Result<Vec<_>, _>>()?,
            )),
            (CedarType::Record(attrs), Value::Object(obj)) => {
                let mut fields = Vec::with_capacity(attrs.len());
                for a in attrs {
                    match obj.get(&a.name) {
                        Some(v) => fields.push((
                            a.name.clone(),
                            a.ty.to_expr(v, &format!("{at}.{}", a.name))?,
                        )),
                        None if a.required => {
                            return Err(SchemaError(format!(
                                "{at}.{}: required by the tool's input schema",
                                a.name
                            )));
                        }
                        None => {}
                    }
                }
                E::new_record(fields).map_err(|e| SchemaError(format!("{at}: {e}")))
            }
            (expected, got) => Err(SchemaError(format!(
                "{at}: expected {}, got {}",
                expected.describe(),
                kind_of(got)
            ))),
        }
    }

    /// Whether `value` converts ([`Self::to_expr`] would succeed), with
    /// the same error if not, but without building anything: the path for
    /// calls whose policies never read the input.
    pub fn check(&self, value: &Value, at: &str) -> Result<(), SchemaError> {
        self.check_at(value, &mut |out| out.push_str(at))
    }

    /// `at` writes the position into a string, only when there is an error
    /// to name it in: a call's path builds no strings.
    fn check_at(&self, value: &Value, at: &mut dyn FnMut(&mut String)) -> Result<(), SchemaError> {
        let here = |at: &mut dyn FnMut(&mut String)| {
            let mut s = String::new();
            at(&mut s);
            s
        };
        match (self, value) {
            (CedarType::String, Value::String(_)) | (CedarType::Bool, Value::Bool(_)) => Ok(()),
            (CedarType::WorkspacePath, Value::String(s)) => {
                check_workspace_path(s).map_err(|e| SchemaError(format!("{}: {e}", here(at))))
            }
            (CedarType::Long, Value::Number(n)) => match n.as_i64() {
                Some(_) => Ok(()),
                None => Err(SchemaError(format!(
                    "{}: {n} is not an integer that fits in 64 bits",
                    here(at)
                ))),
            },
            (CedarType::Set(t), Value::Array(items)) => {
                for (i, v) in items.iter().enumerate() {
                    t.check_at(v, &mut |out: &mut String| {
                        at(out);
                        out.push_str(&format!("[{i}]"));
                    })?;
                }
                Ok(())
            }
            (CedarType::Record(attrs), Value::Object(obj)) => {
                for a in attrs {
                    let mut field = |out: &mut String| {
                        at(out);
                        out.push('.');
                        out.push_str(&a.name);
                    };
                    match obj.get(&a.name) {
                        Some(v) => a.ty.check_at(v, &mut field)?,
                        None if a.required => {
                            return Err(SchemaError(format!(
                                "{}: required by the tool's input schema",
                                here(&mut field)
                            )));
                        }
                        None => {}
                    }
                }
                Ok(())
            }
            (expected, got) => Err(SchemaError(format!(
                "{}: expected {}, got {}",
                here(at),
                expected.describe(),
                kind_of(got)
            ))),
        }
    }

    fn describe(&self) -> &'static str {
        match self {
            CedarType::String => "a string",
            CedarType::WorkspacePath => "a workspace path",
            CedarType::Long => "an integer",
            CedarType::Bool => "a boolean",
            CedarType::Set(_) => "an array",
            CedarType::Record(_) => "an object",
        }
    }
}

/// Refuses a workspace path that is not already normalized (see the
/// module docs), naming what to write instead.
pub fn check_workspace_path(path: &str) -> Result<(), SchemaError> {
    if path.is_empty() {
        return Ok(());
    }
    let bad = |why: &str| {
        Err(SchemaError(format!(
            "`{path}` is not a normalized workspace path ({why}); write it relative to the workspace root, \
             with single `/` between names and no `.` or `..`"
        )))
    };
    if path.starts_with('/') {
        return bad("it is absolute");
    }
    if path.ends_with('/') {
        return bad("it ends with `/`");
    }
    for part in path.split('/') {
        match part {
            "" => return bad("it has an empty component (`//`)"),
            "." => return bad("it has a `.` component"),
            ".." => return bad("it has a `..` component"),
            p if p.contains('\0') => return bad("it contains a NUL byte"),
            _ => {}
        }
    }
    Ok(())
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A registered tool, as the policy engine needs it.
#[derive(Debug, Clone)]
pub struct ToolAction {
    /// The tool's name, which is its action's id.
    pub name: String,
    /// The Cedar type of `context.input` (always a record).
    pub input: CedarType,
    /// Where the tool's component came from and who signed it, when the
    /// host loaded it; becomes the `Tool` and `Plugin` entities'
    /// attributes ([`crate::provenance`]).
    pub provenance: Option<crate::provenance::Provenance>,
}

impl ToolAction {
    /// Derives the action from a tool's input schema. A schema that is not
    /// an object with properties yields an empty input record.
    pub fn new(name: &str, input_schema: &Value) -> Result<Self, SchemaError> {
        if RESERVED_ACTIONS.contains(&name) {
            return Err(SchemaError(format!(
                "tool name `{name}` is reserved for a built-in Cedar action; rename the tool"
            )));
        }
        let input = match map_json_schema(input_schema) {
            Some(t @ CedarType::Record(_)) => t,
            _ => CedarType::Record(Vec::new()),
        };
        Ok(ToolAction {
            name: name.to_string(),
            input,
            provenance: None,
        })
    }

    /// The same action, with what loading its component established.
    pub fn with_provenance(mut self, provenance: crate::provenance::Provenance) -> Self {
        self.provenance = Some(provenance);
        self
    }

    /// The schema fragment declaring this tool's action.
    pub fn cedarschema(&self) -> String {
        let mut s = String::new();
        let _ = write!(
            s,
            "action \"{}\" in [call_tool] appliesTo {{\n  principal: Agent,\n  resource: Tool,\n  context: {{\n    common: Common,\n    input: ",
            self.name
        );
        self.input.write_cedarschema(&mut s, 4);
        s.push_str(",\n  },\n};\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn workspace_paths_must_be_normalized_before_any_policy_sees_them() {
        let ty = map_json_schema(&json!({"type": "string", "format": "workspace-path"})).unwrap();
        assert_eq!(ty, CedarType::WorkspacePath);
        for ok in ["", "notes", "notes/today.md", "Notes/a", "a.b/.hidden"] {
            assert!(ty.check(&json!(ok), "input.path").is_ok(), "{ok}");
            assert!(ty.to_expr(&json!(ok), "input.path").is_ok(), "{ok}");
        }
        for bad in [
            "notes/../.env",
            "./notes/a",
            "notes//a",
            "notes/",
            "/etc/passwd",
            "notes/./a",
            "..",
        ] {
            let e = ty.check(&json!(bad), "input.path").unwrap_err();
            assert!(
                e.0.contains("not a normalized workspace path"),
                "{bad}: {e}"
            );
            assert!(ty.to_expr(&json!(bad), "input.path").is_err(), "{bad}");
        }
        // A plain string field is not a path: nothing is refused there.
        let plain = map_json_schema(&json!({"type": "string"})).unwrap();
        assert!(plain.check(&json!("notes/../.env"), "input.x").is_ok());
    }

    #[test]
    fn maps_the_supported_subset() {
        let schema = json!({
            "type": "object",
            "properties": {
                "path": {"type": "string"},
                "count": {"type": "integer"},
                "ratio": {"type": "number"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "mode": {"enum": ["a", "b"]},
                "either": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                "free": {"type": "object"},
                "nested": {"type": "object", "properties": {"x": {"type": "boolean"}}, "required": ["x"]},
            },
            "required": ["path"],
        });
        let CedarType::Record(attrs) = map_json_schema(&schema).unwrap() else {
            panic!()
        };
        let names: Vec<(&str, bool)> = attrs
            .iter()
            .map(|a| (a.name.as_str(), a.required))
            .collect();
        assert_eq!(
            names,
            [
                ("count", false),
                ("mode", false),
                ("nested", false),
                ("path", true),
                ("tags", false)
            ]
        );
    }

    // That undeclared fields are dropped is shown in tests/engine.rs: the
    // converted context passes strict schema validation.
    #[test]
    fn conversion_refuses_mismatches() {
        let t = map_json_schema(&json!({"type": "object", "properties": {"path": {"type": "string"}, "n": {"type": "integer"}}, "required": ["path"]})).unwrap();
        assert!(
            t.to_expr(&json!({"path": "a", "extra": 1.5}), "input")
                .is_ok()
        );
        let err = |v: serde_json::Value| t.to_expr(&v, "input").err().unwrap_or_default();
        assert!(
            err(json!({"path": 3}))
                .0
                .contains("input.path: expected a string")
        );
        assert!(err(json!({})).0.contains("required"));
        assert!(err(json!({"path": "a", "n": 1.5})).0.contains("input.n"));
        assert!(
            err(json!({"path": "a", "n": 18446744073709551615u64}))
                .0
                .contains("64 bits")
        );
    }

    /// `check` is `to_expr` without the building: same verdict, same
    /// message, for every shape of input.
    #[test]
    fn check_agrees_with_conversion() {
        let t = map_json_schema(&json!({"type": "object", "properties": {
            "path": {"type": "string"},
            "n": {"type": "integer"},
            "flags": {"type": "array", "items": {"type": "boolean"}},
            "deep": {"type": "object", "properties": {
                "xs": {"type": "array", "items": {"type": "object", "properties": {"v": {"type": "integer"}}, "required": ["v"]}},
            }, "required": ["xs"]},
        }, "required": ["path"]}))
        .unwrap();
        for v in [
            json!({"path": "a"}),
            json!({"path": "a", "extra": [1.5, null]}),
            json!({"path": 3}),
            json!({}),
            json!([]),
            json!(null),
            json!({"path": "a", "n": 1.5}),
            json!({"path": "a", "n": -7}),
            json!({"path": "a", "n": 18446744073709551615u64}),
            json!({"path": "a", "flags": [true, false]}),
            json!({"path": "a", "flags": [true, "no"]}),
            json!({"path": "a", "flags": {}}),
            json!({"path": "a", "deep": {"xs": []}}),
            json!({"path": "a", "deep": {"xs": [{"v": 1}, {"v": 2}]}}),
            json!({"path": "a", "deep": {"xs": [{"v": 1}, {}]}}),
            json!({"path": "a", "deep": {"xs": [{"v": 1}, {"v": "2"}]}}),
            json!({"path": "a", "deep": {}}),
        ] {
            assert_eq!(
                t.check(&v, "input"),
                t.to_expr(&v, "input").map(|_| ()),
                "{v}"
            );
        }
    }

    #[test]
    fn reserved_names_are_refused() {
        assert!(ToolAction::new("read_file", &json!({"type": "object"})).is_err());
        // Every action the base schema declares is reserved: a tool of the
        // same name would otherwise meet Cedar's duplicate-action error
        // instead of this one.
        let base = include_str!("../../../policies/schema.cedarschema");
        for line in base.lines() {
            if let Some(rest) = line.strip_prefix("action ") {
                let name = rest
                    .split(|c: char| c == ';' || c.is_whitespace())
                    .next()
                    .unwrap_or_default();
                let e = ToolAction::new(name, &json!({"type": "object"}))
                    .expect_err(name)
                    .to_string();
                assert!(e.contains("reserved"), "{name}: {e}");
            }
        }
    }
}
