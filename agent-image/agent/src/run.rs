//! `corral-agent run`: the agent loop inside the container.
//!
//! It takes the next message from the broker (`corral/next`), and answers
//! it with the model (`corral/model`) and the tools (`tools/call`), all over
//! the one broker socket, then posts the reply (`corral/reply`). The broker
//! decides and records every step; this loop holds no key and no grant.
//!
//! State lives in the workspace, so it survives a restarted container: the
//! conversation history under `.corral/conversations/`, and `AGENT.md`, the
//! agent's memory, which is part of every system prompt.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::{Client, ClientError};

/// Messages kept per conversation; older ones are dropped from the front.
const HISTORY: usize = 40;
/// The conversation sent to the model is kept under this many bytes of
/// JSON (the broker refuses frames over 1 MiB), oldest turns dropped first.
const HISTORY_BYTES: usize = 256 * 1024;
/// A tool result or the memory file is cut to this many bytes.
const PIECE_BYTES: usize = 16 * 1024;

const SYSTEM: &str = "You are an agent run by Corral. You can act only through the tools you are given; every call is checked against policy and recorded. When a tool call is denied, tell the person plainly what was denied and which policy decided, and do not try to work around it.";

/// How the agent loop runs.
#[derive(Debug, Clone)]
pub struct LoopOptions {
    /// The broker's socket.
    pub socket: PathBuf,
    /// The agent's workspace (history and `AGENT.md` live there).
    pub workspace: PathBuf,
    /// How long one `corral/next` waits before asking again.
    pub wait: Duration,
    /// Stop after this many messages (tests and benchmarks); None runs on.
    pub max_messages: Option<u64>,
}

/// Runs until the broker goes away (or `max_messages` are answered).
pub fn run(options: &LoopOptions) -> Result<(), ClientError> {
    let mut client = Client::connect(&options.socket)?;
    let mut answered = 0;
    loop {
        if options.max_messages.is_some_and(|m| answered >= m) {
            return Ok(());
        }
        let next = client.request(
            "corral/next",
            json!({ "wait_ms": options.wait.as_millis() as u64 }),
        )?;
        if let Some(error) = next.get("error") {
            return Err(ClientError::Protocol(format!(
                "corral/next: {}",
                error_text(error)
            )));
        }
        let work = &next["result"];
        if work.is_null() {
            continue;
        }
        let id = work["message"]["id"].as_u64().ok_or_else(|| {
            ClientError::Protocol(format!("corral/next without a message id: {work}"))
        })?;
        let reply = Turn {
            client: &mut client,
            workspace: &options.workspace,
            work,
        }
        .answer();
        let reply = match reply {
            Ok(text) => text,
            // The broker refused something this turn sent (too large, say):
            // tell the person instead of dying on the same message again.
            Err(ClientError::Protocol(problem)) => {
                format!("⚠ I could not finish this: {problem}")
            }
            Err(e) => return Err(e),
        };
        let posted = client.request("corral/reply", json!({ "message": id, "text": reply }))?;
        if let Some(error) = posted.get("error") {
            eprintln!(
                "corral-agent: reply to message {id} not delivered: {}",
                error_text(error)
            );
        }
        answered += 1;
    }
}

fn error_text(error: &Value) -> String {
    error["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| error.to_string())
}

struct Turn<'a> {
    client: &'a mut Client,
    workspace: &'a Path,
    work: &'a Value,
}

impl Turn<'_> {
    fn answer(mut self) -> Result<String, ClientError> {
        let text = self.work["message"]["text"]
            .as_str()
            .unwrap_or_default()
            .trim()
            .to_string();
        if let Some(rest) = text.strip_prefix("/tool") {
            return self.tool_command(rest.trim());
        }
        if text == "/tools" || text == "/help" {
            return self.help("");
        }
        if self.work["model"].is_null() {
            return self
                .help("No model is configured for this agent, so it runs in tools-only mode.\n");
        }
        self.converse(text)
    }

    fn help(&mut self, preface: &str) -> Result<String, ClientError> {
        let tools = self.client.list_tools()?;
        let mut out = format!(
            "{preface}`/tool NAME JSON` calls a tool directly, through the same policies as the model would. Tools this agent may call:"
        );
        if tools.is_empty() {
            out.push_str(" none (no policy permits any)");
        }
        for (name, description) in tools {
            out.push_str(&format!("\n• {name}: {description}"));
        }
        Ok(out)
    }

    fn tool_command(&mut self, rest: &str) -> Result<String, ClientError> {
        let (name, arguments) = match rest.split_once(char::is_whitespace) {
            Some((name, json)) => (name, json.trim()),
            None => (rest, "{}"),
        };
        if name.is_empty() {
            return self.help("Usage: `/tool NAME JSON`.\n");
        }
        let arguments: Value = match serde_json::from_str(arguments) {
            Ok(v @ Value::Object(_)) => v,
            Ok(other) => {
                return Ok(format!(
                    "The arguments for `{name}` must be a JSON object, not {other}."
                ));
            }
            Err(e) => return Ok(format!("The arguments for `{name}` are not JSON: {e}.")),
        };
        let result = self.client.call_tool(name, arguments)?;
        Ok(if result.is_error {
            format!("⚠ {}", result.text)
        } else {
            result.text
        })
    }

    fn tool_specs(&mut self) -> Result<Vec<Value>, ClientError> {
        let response = self.client.request("tools/list", json!({}))?;
        let tools = response["result"]["tools"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        Ok(tools
            .into_iter()
            .map(|t| {
                json!({
                    "name": t["name"],
                    "description": t["description"].as_str().unwrap_or_default(),
                    "input_schema": if t["inputSchema"].is_object() { t["inputSchema"].clone() } else { json!({"type": "object"}) },
                })
            })
            .collect())
    }

    fn converse(&mut self, text: String) -> Result<String, ClientError> {
        let history_file = self.history_file();
        let mut messages = load_history(&history_file);
        messages.push(json!({ "role": "user", "content": [{ "type": "text", "text": text }] }));
        trim_history(&mut messages);
        let tools = self.tool_specs()?;
        let mut system = SYSTEM.to_string();
        if let Ok(memory) = std::fs::read_to_string(self.workspace.join("AGENT.md")) {
            system.push_str("\n\nYour memory (AGENT.md in your workspace):\n");
            system.push_str(cut(&memory));
        }
        let max_steps = self.work["limits"]["max_steps"]
            .as_u64()
            .unwrap_or(8)
            .max(1);
        let max_tokens = self.work["limits"]["max_tokens"].as_u64().unwrap_or(1024);
        let mut reply = None;
        for _ in 0..max_steps {
            let response = self.client.request(
                "corral/model",
                json!({ "system": system, "messages": messages, "tools": tools, "max_tokens": max_tokens }),
            )?;
            if let Some(error) = response.get("error") {
                reply = Some(format!(
                    "⚠ I could not reach my model: {}",
                    error_text(error)
                ));
                break;
            }
            let content = response["result"]["content"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if content.is_empty() {
                // Providers refuse an empty assistant turn in the history.
                reply = Some("(the model gave no answer)".into());
                break;
            }
            messages.push(json!({ "role": "assistant", "content": content }));
            let mut results = Vec::new();
            let mut said = Vec::new();
            for block in &content {
                match block["type"].as_str() {
                    Some("text") => {
                        said.push(block["text"].as_str().unwrap_or_default().to_string())
                    }
                    Some("tool_use") => {
                        let name = block["name"].as_str().unwrap_or_default();
                        let input = if block["input"].is_object() {
                            block["input"].clone()
                        } else {
                            json!({})
                        };
                        let result = self.client.call_tool(name, input)?;
                        results.push(json!({
                            "type": "tool_result",
                            "tool_use_id": block["id"],
                            "content": cut(&result.text),
                            "is_error": result.is_error,
                        }));
                    }
                    _ => {}
                }
            }
            if results.is_empty() {
                let text = said.join("\n");
                reply = Some(if text.trim().is_empty() {
                    "(the model gave no text)".into()
                } else {
                    text
                });
                break;
            }
            messages.push(json!({ "role": "user", "content": results }));
        }
        let reply = reply.unwrap_or_else(|| {
            format!("I stopped after {max_steps} model steps, this turn's limit, before finishing. Ask me to continue, or ask an operator to raise max_steps.")
        });
        save_history(&history_file, &messages);
        Ok(reply)
    }

    fn history_file(&self) -> PathBuf {
        let conversation = self.work["message"]["conversation"]
            .as_str()
            .unwrap_or("default");
        let safe: String = conversation
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .take(100)
            .collect();
        self.workspace
            .join(".corral")
            .join("conversations")
            .join(format!("{safe}.json"))
    }
}

fn load_history(path: &Path) -> Vec<Value> {
    std::fs::read(path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Vec<Value>>(&bytes).ok())
        .unwrap_or_default()
}

/// At most `PIECE_BYTES` of `text`, cut at a character boundary.
fn cut(text: &str) -> &str {
    if text.len() <= PIECE_BYTES {
        return text;
    }
    let mut end = PIECE_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Drops the oldest messages until the history is within `HISTORY`
/// messages and `HISTORY_BYTES`, always starting at a person's text so that
/// no tool result is left without the call it answers. The newest message
/// is kept whatever its size.
fn trim_history(messages: &mut Vec<Value>) {
    let starts_turn = |m: &Value| m["role"] == "user" && m["content"][0]["type"] == "text";
    let size = |ms: &[Value]| serde_json::to_vec(ms).map_or(0, |b| b.len());
    let mut start = messages.len().saturating_sub(HISTORY);
    while start + 1 < messages.len()
        && (!starts_turn(&messages[start]) || size(&messages[start..]) > HISTORY_BYTES)
    {
        start += 1;
    }
    if start < messages.len() && !starts_turn(&messages[start]) {
        // No turn fits: an empty history beats one a provider refuses.
        start = messages.len();
    }
    messages.drain(..start);
}

fn save_history(path: &Path, messages: &[Value]) {
    let mut kept = messages.to_vec();
    trim_history(&mut kept);
    if let Some(dir) = path.parent()
        && std::fs::create_dir_all(dir).is_ok()
    {
        let tmp = path.with_extension("tmp");
        let written = serde_json::to_vec(&kept)
            .ok()
            .and_then(|bytes| std::fs::write(&tmp, bytes).ok())
            .and_then(|()| std::fs::rename(&tmp, path).ok());
        if written.is_none() {
            eprintln!(
                "corral-agent: could not save the conversation to {}",
                path.display()
            );
        }
    }
}
