//! JSON-RPC 2.0 as MCP frames it: parsing a frame or naming what is wrong
//! with it in JSON-RPC's error codes, and the one-pass parse of a plain
//! `tools/call`, the request the hot path answers most.

use rmcp::RoleServer;
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, JsonObject, RequestId, RequestMetaObject,
};
use rmcp::service::RxJsonRpcMessage;
use serde_json::Value;

/// JSON-RPC's reserved error codes.
pub(crate) const PARSE_ERROR: i64 = -32700;
pub(crate) const INVALID_REQUEST: i64 = -32600;

/// A `tools/call` the hot path may answer: nothing in it that rmcp must
/// interpret (metadata, task or multi-round input). rmcp moves the
/// params' `_meta` (a progress token, say) into the request's extensions
/// as it parses, so both places are looked at.
pub(crate) fn plain(call: &CallToolRequest) -> bool {
    let params = &call.params;
    params.meta.is_none()
        && call
            .extensions
            .get::<RequestMetaObject>()
            .is_none_or(|m| m.is_empty())
        && params.input_responses.is_none()
        && params.request_state.is_none()
}

/// The frame of a plain `tools/call`, the one request the hot path
/// answers most, parsed straight into its parts. rmcp's message type is an
/// untagged enum of method-tagged enums, which serde parses by buffering
/// the frame and trying one variant after another; this costs one pass.
/// Unknown fields are refused, so anything with more in it (`_meta`, task
/// or multi-round input, or anything else) takes the full parse.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PlainCallFrame<'a> {
    #[serde(borrow)]
    jsonrpc: std::borrow::Cow<'a, str>,
    id: RequestId,
    #[serde(borrow)]
    method: std::borrow::Cow<'a, str>,
    params: PlainCallParams,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PlainCallParams {
    name: String,
    #[serde(default)]
    arguments: Option<JsonObject>,
}

/// `Some` if `text` is exactly a plain `tools/call`; `None` sends it down
/// the full parse, which also makes any error answer.
pub(crate) fn plain_call(text: &[u8]) -> Option<(RequestId, CallToolRequestParams)> {
    let frame: PlainCallFrame = serde_json::from_slice(text).ok()?;
    if frame.jsonrpc != "2.0" || frame.method != "tools/call" {
        return None;
    }
    let params = CallToolRequestParams::new(frame.params.name);
    let params = match frame.params.arguments {
        Some(arguments) => params.with_arguments(arguments),
        None => params,
    };
    Some((frame.id, params))
}

pub(crate) fn trim_line(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    line.trim_ascii()
}

pub(crate) enum Classified {
    Message(Box<RxJsonRpcMessage<RoleServer>>),
    Reject {
        id: Value,
        code: i64,
        message: String,
    },
}

/// Parses a frame, or names what is wrong with it in JSON-RPC's terms.
pub(crate) fn classify(text: &[u8]) -> Classified {
    let value: Value = match serde_json::from_slice(text) {
        Ok(v) => v,
        Err(e) => {
            return Classified::Reject {
                id: Value::Null,
                code: PARSE_ERROR,
                message: format!("parse error: the frame is not JSON ({e})"),
            };
        }
    };
    let id = value.get("id").cloned().unwrap_or(Value::Null);
    let reject = |message: String| Classified::Reject {
        id: id.clone(),
        code: INVALID_REQUEST,
        message,
    };
    let Some(obj) = value.as_object() else {
        return reject(if value.is_array() {
            "invalid request: JSON-RPC batches are not part of MCP; send one message per line"
                .into()
        } else {
            "invalid request: a JSON-RPC message must be a JSON object".into()
        });
    };
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return reject("invalid request: `jsonrpc` must be \"2.0\"".into());
    }
    if let Some(method) = obj.get("method")
        && !method.is_string()
    {
        return reject("invalid request: `method` must be a string".into());
    }
    match serde_json::from_value::<RxJsonRpcMessage<RoleServer>>(value) {
        Ok(msg) => Classified::Message(Box::new(msg)),
        Err(e) => reject(format!("invalid request: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_a_plain_tools_call_takes_the_short_parse() {
        let (id, params) = plain_call(
            br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hi"}}}"#,
        )
        .expect("a plain call");
        assert_eq!(id, RequestId::Number(7));
        assert_eq!(params.name, "echo");
        assert_eq!(params.arguments.expect("arguments")["message"], "hi");
        assert!(params.meta.is_none());

        // Any field order, a string id, no arguments.
        let (id, params) = plain_call(
            br#"{"params":{"name":"echo"},"method":"tools/call","id":"a","jsonrpc":"2.0"}"#,
        )
        .expect("a plain call");
        assert_eq!(id, RequestId::String("a".into()));
        assert!(params.arguments.is_none());

        for text in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","_meta":{"progressToken":1}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","task":{}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","requestState":"x"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"},"extra":1}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"name":"echo"}}"#,
            r#"{"jsonrpc":"1.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":[1]}}"#,
            r#"{"jsonrpc":"2.0","id":1.5,"method":"tools/call","params":{"name":"echo"}}"#,
            r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"echo"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#,
            r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"tools/call","params":{"name":"echo"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}"#,
        ] {
            assert!(plain_call(text.as_bytes()).is_none(), "{text}");
        }
    }

    fn rejected(text: &str) -> (Value, i64, String) {
        match classify(text.as_bytes()) {
            Classified::Reject { id, code, message } => (id, code, message),
            Classified::Message(m) => panic!("accepted: {m:?}"),
        }
    }

    #[test]
    fn malformed_frames_get_the_right_json_rpc_codes() {
        let (id, code, msg) = rejected("{not json");
        assert_eq!((id, code), (Value::Null, PARSE_ERROR));
        assert!(msg.contains("not JSON"));
        let (_, code, msg) = rejected("[1,2]");
        assert_eq!(code, INVALID_REQUEST);
        assert!(msg.contains("batches"));
        let (id, code, _) = rejected(r#"{"jsonrpc":"1.0","id":7,"method":"ping"}"#);
        assert_eq!((id, code), (json!(7), INVALID_REQUEST));
        let (_, code, _) = rejected(r#"{"jsonrpc":"2.0","id":7,"method":5}"#);
        assert_eq!(code, INVALID_REQUEST);
        assert!(matches!(
            classify(br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#),
            Classified::Message(_)
        ));
    }
}

#[cfg(test)]
mod shapes {
    use super::*;

    #[test]
    fn half_valid_requests_are_requests_or_rejections_never_notifications() {
        for frame in [
            r#"{"jsonrpc":"2.0","id":"7","method":"tools/call","params":{"name":"echo","arguments":[7]}}"#,
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":7}}"#,
            r#"{"jsonrpc":"2.0","id":18446744073709551615,"method":"tools/call","params":{"name":7}}"#,
        ] {
            match classify(frame.as_bytes()) {
                Classified::Reject { .. } => {}
                Classified::Message(m) => assert!(
                    matches!(*m, rmcp::model::JsonRpcMessage::Request(_)),
                    "{frame} became {m:?}"
                ),
            }
        }
    }
}
