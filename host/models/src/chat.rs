//! The neutral chat format spoken over the broker socket.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
}

/// One piece of a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Block {
    Text {
        text: String,
    },
    /// The model asks for a tool call.
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    /// The answer to a `tool_use`, sent back in a user message.
    ToolResult {
        tool_use_id: String,
        content: String,
        #[serde(default)]
        is_error: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    pub role: Role,
    pub content: Vec<Block>,
}

/// A tool the model may ask for (from the agent's `tools/list`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolSpec {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub input_schema: Value,
}

/// What an agent asks of a model. The broker picks the model and clamps
/// `max_tokens` to the agent's configured budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatRequest {
    #[serde(default)]
    pub system: String,
    pub messages: Vec<Message>,
    #[serde(default)]
    pub tools: Vec<ToolSpec>,
    #[serde(default)]
    pub max_tokens: Option<u32>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    pub model: String,
    pub content: Vec<Block>,
    /// `end_turn`, `tool_use`, `max_tokens`, or what the provider said.
    pub stop_reason: String,
    pub usage: Usage,
}

impl ChatRequest {
    /// A rough upper estimate of the prompt's tokens (4 bytes per token),
    /// for budget policies before the provider reports the real count.
    pub fn estimated_tokens(&self) -> u64 {
        let bytes = self.system.len()
            + serde_json::to_string(&self.messages).map_or(0, |s| s.len())
            + serde_json::to_string(&self.tools).map_or(0, |s| s.len());
        (bytes as u64).div_ceil(4)
    }
}

impl ChatResponse {
    /// The text blocks, joined.
    pub fn text(&self) -> String {
        let parts: Vec<&str> = self
            .content
            .iter()
            .filter_map(|b| match b {
                Block::Text { text } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        parts.join("\n")
    }
}

/// A provider's answer that does not have the shape its API documents;
/// the text names what is missing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Undecodable(pub String);

impl From<&str> for Undecodable {
    fn from(what: &str) -> Undecodable {
        Undecodable(what.to_string())
    }
}

impl From<String> for Undecodable {
    fn from(what: String) -> Undecodable {
        Undecodable(what)
    }
}
