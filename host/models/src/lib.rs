//! The model broker's client side.
//!
//! Agents have no network, so every model call crosses the broker socket in
//! one neutral format ([`ChatRequest`] / [`ChatResponse`], shaped like the
//! Anthropic Messages API) and leaves the host from here, translated to the
//! provider's wire format, with the provider's API key added on the way
//! out. The key lives in an [`ApiKey`], whose `Debug` never shows it, and is
//! never part of an error message.
//!
//! Providers: the Anthropic Messages API, and OpenAI-compatible Chat
//! Completions (OpenAI itself, and local servers such as llama.cpp, vLLM or
//! Ollama). Base URLs are configuration, which is also how tests point the
//! real client code at loopback stand-ins.

mod anthropic;
mod chat;
mod client;
mod openai;

pub use chat::{Block, ChatRequest, ChatResponse, Message, Role, ToolSpec, Usage};
pub use client::{ApiKey, ModelClient, ModelEndpoint, ModelError, Provider};
