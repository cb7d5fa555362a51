//! Each tool's provenance as entity attributes: `Tool::"NAME"` and its
//! `Plugin` carry `publisher` (the trusted publisher whose signature
//! verified, or `"unsigned"`), `digest` (`sha256:` of the component) and
//! `source` (`file:PATH` or `oci:REFERENCE@DIGEST`), so that a policy can
//! say `resource.publisher == "acme"`.
//!
//! For a tool the host loaded, these come from loading and verification
//! and replace whatever the entities file says: a file edit cannot make a
//! tool look signed. A tool without provenance (in `corral policy test`,
//! whose cases describe their own entities) keeps the file's attributes,
//! and any that are missing are filled with the least trusted values.

use serde_json::{Map, Value, json};

/// What loading a tool's component established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    /// The publisher whose signature verified, or `"unsigned"`.
    pub publisher: String,
    /// `sha256:<hex>` of the component's bytes.
    pub digest: String,
    /// `file:PATH` or `oci:REGISTRY/REPOSITORY[:TAG]@sha256:…`.
    pub source: String,
}

/// The attributes a tool gets when nothing says otherwise.
const DEFAULTS: [(&str, &str); 3] = [
    ("publisher", "unsigned"),
    ("digest", ""),
    ("source", "unknown"),
];

/// `entities` with every `Tool` entity's provenance attributes set, a
/// `Plugin` entity for each loaded component, and each loaded tool `in`
/// its plugin. `tools` are the registered tools' names, each with its
/// provenance when the host established one.
pub(crate) fn with_tool_provenance<'a>(
    entities: Value,
    tools: impl IntoIterator<Item = (&'a str, Option<&'a Provenance>)>,
) -> Value {
    let Value::Array(mut list) = entities else {
        // Not an array: Cedar reports it with its own message.
        return entities;
    };
    for (name, provenance) in tools {
        let exists = list.iter().any(|e| is_entity(e, "Tool", name));
        if !exists {
            list.push(json!({"uid": {"type": "Tool", "id": name}, "attrs": {}, "parents": []}));
        }
        let Some(p) = provenance else { continue };
        // The host's plugin replaces any the file defines under that id.
        list.retain(|e| !is_entity(e, "Plugin", &p.source));
        list.push(json!({
            "uid": {"type": "Plugin", "id": p.source},
            "attrs": {"publisher": p.publisher, "digest": p.digest, "source": p.source},
            "parents": [],
        }));
        if let Some(entity) = list.iter_mut().find(|e| is_entity(e, "Tool", name)) {
            if let Some(attrs) = attrs_of(entity) {
                attrs.insert("publisher".into(), json!(p.publisher));
                attrs.insert("digest".into(), json!(p.digest));
                attrs.insert("source".into(), json!(p.source));
            }
            // A loaded tool is in its own plugin and no other: the file may
            // not place it in a plugin it did not come from.
            let mut parents: Vec<Value> = entity
                .get("parents")
                .and_then(Value::as_array)
                .map(|ps| {
                    ps.iter()
                        .filter(|p| p.get("type").and_then(Value::as_str) != Some("Plugin"))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            parents.push(json!({"type": "Plugin", "id": p.source}));
            if let Some(obj) = entity.as_object_mut() {
                obj.insert("parents".into(), Value::Array(parents));
            }
        }
    }
    for entity in list.iter_mut() {
        if matches!(entity_type(entity), Some("Tool" | "Plugin"))
            && let Some(attrs) = attrs_of(entity)
        {
            for (key, value) in DEFAULTS {
                attrs.entry(key).or_insert_with(|| json!(value));
            }
        }
    }
    Value::Array(list)
}

fn entity_type(e: &Value) -> Option<&str> {
    e.get("uid")?.get("type")?.as_str()
}

fn is_entity(e: &Value, ty: &str, id: &str) -> bool {
    entity_type(e) == Some(ty)
        && e.get("uid")
            .and_then(|u| u.get("id"))
            .and_then(Value::as_str)
            == Some(id)
}

/// The entity's `attrs` object, created if missing; `None` for an entity
/// that is not an object, which Cedar refuses with its own message.
fn attrs_of(entity: &mut Value) -> Option<&mut Map<String, Value>> {
    let obj = entity.as_object_mut()?;
    if !obj.get("attrs").is_some_and(Value::is_object) {
        obj.insert("attrs".into(), json!({}));
    }
    obj.get_mut("attrs")?.as_object_mut()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loading_overrides_what_the_file_claims() {
        let file = json!([{"uid": {"type": "Tool", "id": "echo"}, "attrs": {"publisher": "acme"}, "parents": []}]);
        let p = Provenance {
            publisher: "unsigned".into(),
            digest: "sha256:ab".into(),
            source: "oci:r/echo@sha256:cd".into(),
        };
        let out = with_tool_provenance(file, [("echo", Some(&p))]);
        let tool = out
            .as_array()
            .unwrap()
            .iter()
            .find(|e| is_entity(e, "Tool", "echo"))
            .unwrap();
        assert_eq!(tool["attrs"]["publisher"], "unsigned");
        assert_eq!(
            tool["parents"][0],
            json!({"type": "Plugin", "id": "oci:r/echo@sha256:cd"})
        );
        let plugin = out
            .as_array()
            .unwrap()
            .iter()
            .find(|e| entity_type(e) == Some("Plugin"))
            .unwrap();
        assert_eq!(plugin["attrs"]["digest"], "sha256:ab");
    }

    #[test]
    fn the_file_cannot_put_a_loaded_tool_in_a_signed_plugin_or_restate_one() {
        let signed = "oci:r/acme@sha256:cd";
        let file = json!([
            {"uid": {"type": "Tool", "id": "shell"}, "attrs": {}, "parents": [{"type": "Plugin", "id": signed}]},
            {"uid": {"type": "Plugin", "id": "file:/x/shell.wasm"}, "attrs": {"publisher": "acme", "digest": "", "source": "file:/x/shell.wasm"}, "parents": []},
        ]);
        let p = Provenance {
            publisher: "unsigned".into(),
            digest: "sha256:ab".into(),
            source: "file:/x/shell.wasm".into(),
        };
        let out = with_tool_provenance(file, [("shell", Some(&p))]);
        let list = out.as_array().unwrap();
        let tool = list.iter().find(|e| is_entity(e, "Tool", "shell")).unwrap();
        assert_eq!(
            tool["parents"],
            json!([{"type": "Plugin", "id": "file:/x/shell.wasm"}])
        );
        let plugins: Vec<&Value> = list
            .iter()
            .filter(|e| is_entity(e, "Plugin", "file:/x/shell.wasm"))
            .collect();
        assert_eq!(plugins.len(), 1);
        assert_eq!(plugins[0]["attrs"]["publisher"], "unsigned");
    }

    #[test]
    fn without_provenance_the_file_stands_and_gaps_are_the_least_trusted() {
        let file = json!([
            {"uid": {"type": "Tool", "id": "a"}, "attrs": {"publisher": "acme", "source": "oci:x"}, "parents": []},
            {"uid": {"type": "Tool", "id": "b"}, "parents": []},
        ]);
        let out = with_tool_provenance(file, [("a", None), ("c", None)]);
        let get = |id: &str| {
            out.as_array()
                .unwrap()
                .iter()
                .find(|e| is_entity(e, "Tool", id))
                .unwrap()
                .clone()
        };
        assert_eq!(get("a")["attrs"]["publisher"], "acme");
        assert_eq!(get("a")["attrs"]["digest"], "");
        assert_eq!(get("b")["attrs"]["publisher"], "unsigned");
        assert_eq!(get("c")["attrs"]["source"], "unknown");
    }
}
