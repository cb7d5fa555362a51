//! The HTTP side: one connection pool per endpoint, the key added here.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::{ChatRequest, ChatResponse, anthropic, openai};

/// The largest provider answer read; a bigger one is refused.
const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

/// The API a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// The Anthropic Messages API: `POST {base_url}/v1/messages`.
    Anthropic,
    /// OpenAI-compatible Chat Completions: `POST {base_url}/chat/completions`,
    /// where the base URL ends in the API version (`https://api.openai.com/v1`).
    OpenAi,
}

/// An API key. It is only ever written into a request header on the host;
/// `Debug` and `Display` do not show it.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key.
    pub fn new(value: impl Into<String>) -> Self {
        ApiKey(value.into())
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey([hidden])")
    }
}

/// One configured model.
#[derive(Debug, Clone)]
pub struct ModelEndpoint {
    /// The name agents and policies use: `Model::"<name>"`.
    pub name: String,
    /// The API it speaks.
    pub provider: Provider,
    /// Where the API is, up to the path the provider's requests add.
    pub base_url: String,
    /// The provider's model id, e.g. `claude-sonnet-4-5` or `gpt-4.1`.
    pub model: String,
    /// None for local servers that need no key.
    pub api_key: Option<ApiKey>,
    /// The most output tokens one call may ask for.
    pub max_tokens: u32,
    /// The longest one call may take.
    pub timeout: Duration,
}

/// Why a model call failed; every text names the model and never holds
/// the key.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The base URL does not parse.
    #[error("model `{model}`: bad base URL `{url}`: {message}")]
    BadUrl {
        /// The model's name.
        model: String,
        /// The URL.
        url: String,
        /// What is wrong with it.
        message: String,
    },
    /// The provider could not be reached.
    #[error("model `{model}`: cannot reach {url}: {message}")]
    Unreachable {
        /// The model's name.
        model: String,
        /// Where it was asked.
        url: String,
        /// The connection's error.
        message: String,
    },
    /// No answer in time.
    #[error("model `{model}`: no answer within {timeout:?}")]
    Timeout {
        /// The model's name.
        model: String,
        /// The time allowed.
        timeout: Duration,
    },
    /// The provider answered with an error status.
    #[error("model `{model}`: the provider answered HTTP {status}: {message}")]
    Status {
        /// The model's name.
        model: String,
        /// The HTTP status.
        status: u16,
        /// The provider's message.
        message: String,
    },
    /// The answer does not have the shape the API documents.
    #[error("model `{model}`: the provider's answer could not be read: {message}")]
    Decode {
        /// The model's name.
        model: String,
        /// What is missing or wrong.
        message: String,
    },
    /// The key cannot be sent in a header.
    #[error(
        "model `{model}`: the API key is empty or holds characters an HTTP header cannot carry; check the variable named by api_key_env"
    )]
    BadKey {
        /// The model's name.
        model: String,
    },
    /// The TLS client could not be set up.
    #[error("model `{model}`: cannot set up TLS: {message}")]
    Tls {
        /// The model's name.
        model: String,
        /// Why.
        message: String,
    },
}

/// A client for one [`ModelEndpoint`].
pub struct ModelClient {
    endpoint: ModelEndpoint,
    http: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// The provider's key header, built and checked once, marked sensitive.
    auth: Option<(&'static str, http::HeaderValue)>,
}

impl std::fmt::Debug for ModelClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelClient")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

impl ModelClient {
    /// A client for `endpoint`; checks its URL and key once, here.
    pub fn new(endpoint: ModelEndpoint) -> Result<Self, ModelError> {
        let auth = match &endpoint.api_key {
            None => None,
            Some(key) => {
                let (name, text) = match endpoint.provider {
                    Provider::Anthropic => ("x-api-key", key.0.clone()),
                    Provider::OpenAi => ("authorization", format!("Bearer {}", key.0)),
                };
                let mut value = http::HeaderValue::from_str(&text)
                    .ok()
                    .filter(|_| !key.0.is_empty())
                    .ok_or_else(|| ModelError::BadKey {
                        model: endpoint.name.clone(),
                    })?;
                value.set_sensitive(true);
                Some((name, value))
            }
        };
        let url: http::Uri = endpoint.base_url.parse().map_err(|e| ModelError::BadUrl {
            model: endpoint.name.clone(),
            url: endpoint.base_url.clone(),
            message: format!("{e}"),
        })?;
        if !matches!(url.scheme_str(), Some("http" | "https")) || url.host().is_none() {
            return Err(ModelError::BadUrl {
                model: endpoint.name.clone(),
                url: endpoint.base_url.clone(),
                message: "use http:// or https:// with a host".into(),
            });
        }
        // The provider is named explicitly: more than one rustls provider
        // can be compiled into the host, and the process default would then
        // be ambiguous.
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(std::sync::Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .map_err(|e| ModelError::Tls {
                model: endpoint.name.clone(),
                message: e.to_string(),
            })?
            .https_or_http()
            .enable_http1()
            .build();
        let http = Client::builder(TokioExecutor::new()).build(https);
        Ok(ModelClient {
            endpoint,
            http,
            auth,
        })
    }

    /// The endpoint it calls.
    pub fn endpoint(&self) -> &ModelEndpoint {
        &self.endpoint
    }

    /// Sends one request, with `max_tokens` clamped to the endpoint's.
    pub async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, ModelError> {
        let e = &self.endpoint;
        let max_tokens = request
            .max_tokens
            .unwrap_or(e.max_tokens)
            .min(e.max_tokens)
            .max(1);
        let base = e.base_url.trim_end_matches('/');
        let (url, body) = match e.provider {
            Provider::Anthropic => (
                format!("{base}/v1/messages"),
                anthropic::request_body(&e.model, max_tokens, request),
            ),
            Provider::OpenAi => (
                format!("{base}/chat/completions"),
                openai::request_body(&e.model, max_tokens, request),
            ),
        };
        let mut builder = http::Request::post(&url).header("content-type", "application/json");
        if e.provider == Provider::Anthropic {
            builder = builder.header("anthropic-version", "2023-06-01");
        }
        if let Some((name, value)) = &self.auth {
            builder = builder.header(*name, value.clone());
        }
        let req = builder
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|err| ModelError::BadUrl {
                model: e.name.clone(),
                url: url.clone(),
                message: err.to_string(),
            })?;
        let exchange = async {
            let response = self
                .http
                .request(req)
                .await
                .map_err(|err| ModelError::Unreachable {
                    model: e.name.clone(),
                    url: url.clone(),
                    message: error_chain(&err),
                })?;
            let status = response.status().as_u16();
            let bytes = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|err| ModelError::Decode {
                    model: e.name.clone(),
                    message: format!("reading the body: {err}"),
                })?
                .to_bytes();
            Ok::<_, ModelError>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(e.timeout, exchange)
            .await
            .map_err(|_| ModelError::Timeout {
                model: e.name.clone(),
                timeout: e.timeout,
            })??;
        let value: Value = serde_json::from_slice(&bytes).map_err(|err| ModelError::Decode {
            model: e.name.clone(),
            message: self.scrub(format!("not JSON ({err}): {}", preview(&bytes))),
        })?;
        if !(200..300).contains(&status) {
            let message = provider_message(&value).unwrap_or_else(|| preview(&bytes));
            return Err(ModelError::Status {
                model: e.name.clone(),
                status,
                message: self.scrub(message),
            });
        }
        let parsed = match e.provider {
            Provider::Anthropic => anthropic::parse_response(&value),
            Provider::OpenAi => openai::parse_response(&value),
        };
        parsed.map_err(|undecodable| ModelError::Decode {
            model: e.name.clone(),
            message: undecodable.0,
        })
    }
}

impl ModelClient {
    /// Provider text goes to the agent and the audit log: a provider or a
    /// proxy that echoes the key must not carry it there.
    fn scrub(&self, text: String) -> String {
        match &self.endpoint.api_key {
            Some(key) if !key.0.is_empty() && text.contains(&key.0) => {
                text.replace(&key.0, "[api key]")
            }
            _ => text,
        }
    }
}

/// Both providers put a human message at `error.message`.
fn provider_message(value: &Value) -> Option<String> {
    value
        .pointer("/error/message")
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn preview(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut cut: String = text.chars().take(200).collect();
    if text.chars().count() > 200 {
        cut.push('…');
    }
    cut
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
