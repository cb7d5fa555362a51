//! OpenAI-compatible Chat Completions: tool calls live on the assistant
//! message, tool results are messages of role `tool`, and arguments travel
//! as JSON text.

use serde_json::{Value, json};

use crate::anthropic::number;
use crate::chat::Undecodable;
use crate::{Block, ChatRequest, ChatResponse, Role, Usage};

pub(crate) fn request_body(model: &str, max_tokens: u32, request: &ChatRequest) -> Value {
    let mut messages = Vec::new();
    if !request.system.is_empty() {
        messages.push(json!({ "role": "system", "content": request.system }));
    }
    for message in &request.messages {
        let mut text = Vec::new();
        let mut calls = Vec::new();
        for block in &message.content {
            match block {
                Block::Text { text: t } => text.push(t.as_str()),
                Block::ToolUse { id, name, input } => calls.push(json!({
                    "id": id,
                    "type": "function",
                    "function": { "name": name, "arguments": input.to_string() },
                })),
                Block::ToolResult {
                    tool_use_id,
                    content,
                    is_error,
                } => {
                    let content = if *is_error {
                        format!("error: {content}")
                    } else {
                        content.clone()
                    };
                    messages.push(json!({
                        "role": "tool", "tool_call_id": tool_use_id, "content": content,
                    }));
                }
            }
        }
        match message.role {
            Role::User if !text.is_empty() => {
                messages.push(json!({ "role": "user", "content": text.join("\n") }));
            }
            Role::User => {}
            Role::Assistant => {
                let mut m = json!({ "role": "assistant", "content": text.join("\n") });
                if !calls.is_empty() {
                    m["tool_calls"] = json!(calls);
                }
                messages.push(m);
            }
        }
    }
    let mut body = json!({ "model": model, "max_tokens": max_tokens, "messages": messages });
    if !request.tools.is_empty() {
        let tools: Vec<Value> = request
            .tools
            .iter()
            .map(|t| {
                json!({ "type": "function", "function": {
                    "name": t.name, "description": t.description, "parameters": t.input_schema,
                }})
            })
            .collect();
        body["tools"] = json!(tools);
    }
    body
}

pub(crate) fn parse_response(value: &Value) -> Result<ChatResponse, Undecodable> {
    let choice = value
        .pointer("/choices/0")
        .ok_or("no `choices[0]` in the Chat Completions answer")?;
    let message = choice
        .get("message")
        .ok_or("no `message` in `choices[0]`")?;
    let mut content = Vec::new();
    if let Some(text) = message.get("content").and_then(Value::as_str)
        && !text.is_empty()
    {
        content.push(Block::Text {
            text: text.to_string(),
        });
    }
    for call in message
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let id = call
            .get("id")
            .and_then(Value::as_str)
            .ok_or("a tool call has no `id`")?;
        let name = call
            .pointer("/function/name")
            .and_then(Value::as_str)
            .ok_or("a tool call has no `function.name`")?;
        let arguments = call
            .pointer("/function/arguments")
            .and_then(Value::as_str)
            .unwrap_or("{}");
        let input: Value = serde_json::from_str(arguments)
            .map_err(|e| format!("tool call `{id}` has arguments that are not JSON: {e}"))?;
        content.push(Block::ToolUse {
            id: id.to_string(),
            name: name.to_string(),
            input,
        });
    }
    let stop_reason = match choice.get("finish_reason").and_then(Value::as_str) {
        Some("tool_calls") => "tool_use",
        Some("length") => "max_tokens",
        _ => "end_turn",
    };
    Ok(ChatResponse {
        model: value
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        content,
        stop_reason: stop_reason.to_string(),
        usage: Usage {
            input_tokens: number(value, "/usage/prompt_tokens"),
            output_tokens: number(value, "/usage/completion_tokens"),
        },
    })
}
