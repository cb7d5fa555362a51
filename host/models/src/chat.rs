//! The neutral chat format spoken over the broker socket.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Who says a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The person, or the tool results the agent sends back.
    User,
    /// The model.
    Assistant,
}

/// One piece of a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Block {
    /// Text.
    Text {
        /// The text.
        text: String,
    },
    /// The model asks for a tool call.
    ToolUse {
        /// The call's id, which its result names.
        id: String,
        /// The tool.
        name: String,
        /// The tool's input.
        input: Value,
    },
    /// The answer to a `tool_use`, sent back in a user message.
    ToolResult {
        /// The `tool_use` it answers.
        tool_use_id: String,
        /// The tool's output, or its error.
        content: String,
        /// Whether the call failed or was refused.
        #[serde(default)]
        is_error: bool,
    },
}

/// One turn of the conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    /// Who says it.
    pub role: Role,
    /// What it says.
    pub content: Vec<Block>,
}

/// A tool the model may ask for (from the agent's `tools/list`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolSpec {
    /// The tool's name.
    pub name: String,
    /// What it does, for the model.
    #[serde(default)]
    pub description: String,
    /// The JSON Schema of its input.
    pub input_schema: Value,
}

/// What an agent asks of a model. The broker picks the model and clamps
/// `max_tokens` to the agent's configured budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatRequest {
    /// The system prompt.
    #[serde(default)]
    pub system: String,
    /// The conversation so far.
    pub messages: Vec<Message>,
    /// The tools the model may ask for.
    #[serde(default)]
    pub tools: Vec<ToolSpec>,
    /// The most output tokens wanted (the broker clamps it).
    #[serde(default)]
    pub max_tokens: Option<u32>,
}

/// Tokens a call used, as the provider counted them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the request.
    pub input_tokens: u64,
    /// Tokens generated.
    pub output_tokens: u64,
}

/// A model's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// The model that answered, as the provider names it.
    pub model: String,
    /// What it said: text and tool calls.
    pub content: Vec<Block>,
    /// `end_turn`, `tool_use`, `max_tokens`, or what the provider said.
    pub stop_reason: String,
    /// Tokens used.
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
