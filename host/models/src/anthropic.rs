//! The Anthropic Messages API wire format. The neutral format is shaped
//! like it, so translation is mostly a copy.

use serde_json::{Value, json};

use crate::chat::Undecodable;
use crate::{Block, ChatRequest, ChatResponse, Usage};

pub(crate) fn request_body(model: &str, max_tokens: u32, request: &ChatRequest) -> Value {
    let mut body = json!({
        "model": model,
        "max_tokens": max_tokens,
        "messages": request.messages,
    });
    if !request.system.is_empty() {
        body["system"] = json!(request.system);
    }
    if !request.tools.is_empty() {
        body["tools"] = json!(request.tools);
    }
    body
}

pub(crate) fn parse_response(value: &Value) -> Result<ChatResponse, Undecodable> {
    let blocks = value
        .get("content")
        .and_then(Value::as_array)
        .ok_or("no `content` array in the Messages API answer")?;
    let mut content = Vec::new();
    for block in blocks {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => content.push(Block::Text {
                text: string(block, "text")?,
            }),
            Some("tool_use") => content.push(Block::ToolUse {
                id: string(block, "id")?,
                name: string(block, "name")?,
                input: block.get("input").cloned().unwrap_or(json!({})),
            }),
            // Thinking and other block kinds carry nothing an agent acts on.
            _ => {}
        }
    }
    Ok(ChatResponse {
        model: value
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        content,
        stop_reason: value
            .get("stop_reason")
            .and_then(Value::as_str)
            .unwrap_or("end_turn")
            .to_string(),
        usage: Usage {
            input_tokens: number(value, "/usage/input_tokens"),
            output_tokens: number(value, "/usage/output_tokens"),
        },
    })
}

fn string(block: &Value, key: &str) -> Result<String, Undecodable> {
    block
        .get(key)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| Undecodable(format!("a content block has no string `{key}`")))
}

pub(crate) fn number(value: &Value, pointer: &str) -> u64 {
    value.pointer(pointer).and_then(Value::as_u64).unwrap_or(0)
}
