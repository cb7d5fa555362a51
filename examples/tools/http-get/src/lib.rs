//! `http_get`: fetches a URL through the standard `wasi:http` interface and
//! returns the status, a few headers and the body, capped.
//!
//! It uses the host's `wasi:http/outgoing-handler` directly: the host
//! decides every request before a connection is made, and fills in
//! `{{secret:NAME}}` header placeholders only for hosts allowed to receive
//! that secret. The tool never sees a secret's value.
use std::collections::BTreeMap;

use corral_tool::wasi::http::outgoing_handler;
use corral_tool::wasi::http::types::{ErrorCode, Fields, Method, OutgoingRequest, Scheme};
use corral_tool::wasi::io::streams::StreamError;
use corral_tool::{
    Capabilities, Denial, Guest, ToolError, ToolInfo, export_tool, output, parse_input,
    unknown_tool,
};
use serde::Deserialize;

const DEFAULT_MAX_BODY: u64 = 64 * 1024;
const HARD_MAX_BODY: u64 = 1024 * 1024;
/// Response headers worth returning to a model; the rest is noise.
const SELECTED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "location",
    "etag",
    "last-modified",
    "retry-after",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    url: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    max_body_bytes: Option<u64>,
}

struct Url<'a> {
    scheme: Scheme,
    authority: &'a str,
    path_and_query: &'a str,
}

fn parse_url(url: &str) -> Result<Url<'_>, ToolError> {
    let bad = |why: &str| ToolError::InvalidInput(format!("url `{url}`: {why}"));
    let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("missing scheme"))?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        _ => return Err(bad("only http and https are supported")),
    };
    let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(split);
    if authority.is_empty() {
        return Err(bad("missing host"));
    }
    if authority.contains('@') {
        return Err(bad(
            "credentials in the URL are not allowed; use a secret placeholder",
        ));
    }
    let tail = tail.split('#').next().unwrap_or("");
    let path_and_query = if tail.is_empty() { "/" } else { tail };
    Ok(Url {
        scheme,
        authority,
        path_and_query,
    })
}

fn http_error(e: ErrorCode) -> ToolError {
    match e {
        // The host reports a policy refusal as an internal error whose text
        // starts with "denied:"; pass it on as a denial so the caller sees
        // the reason and deciding policies.
        ErrorCode::InternalError(Some(msg)) if msg.starts_with("denied:") => {
            let body = msg.trim_start_matches("denied:").trim();
            let (reason, ids) = match body.rsplit_once(" [policies: ") {
                Some((r, ids)) => (
                    r.to_string(),
                    ids.trim_end_matches(']')
                        .split(", ")
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect(),
                ),
                None => (body.to_string(), Vec::new()),
            };
            ToolError::Denied(Denial {
                reason,
                policy_ids: ids,
            })
        }
        ErrorCode::ConnectionTimeout | ErrorCode::ConnectionReadTimeout => {
            ToolError::TimedOut(format!("{e:?}"))
        }
        other => ToolError::Failed(format!("HTTP request failed: {other:?}")),
    }
}

fn fetch(input: Input) -> Result<String, ToolError> {
    let url = parse_url(&input.url)?;
    let cap = input
        .max_body_bytes
        .unwrap_or(DEFAULT_MAX_BODY)
        .min(HARD_MAX_BODY);

    let header_list: Vec<(String, Vec<u8>)> = input
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone().into_bytes()))
        .collect();
    let headers = Fields::from_list(&header_list)
        .map_err(|e| ToolError::InvalidInput(format!("headers: {e:?}")))?;
    let request = OutgoingRequest::new(headers);
    let invalid =
        |what: &str| ToolError::InvalidInput(format!("url `{}`: invalid {what}", input.url));
    request
        .set_method(&Method::Get)
        .map_err(|()| invalid("method"))?;
    request
        .set_scheme(Some(&url.scheme))
        .map_err(|()| invalid("scheme"))?;
    request
        .set_authority(Some(url.authority))
        .map_err(|()| invalid("host"))?;
    request
        .set_path_with_query(Some(url.path_and_query))
        .map_err(|()| invalid("path"))?;

    let pending = outgoing_handler::handle(request, None).map_err(http_error)?;
    pending.subscribe().block();
    let response = pending
        .get()
        .ok_or_else(|| ToolError::Failed("response not ready after waiting".into()))?
        .map_err(|()| ToolError::Failed("response already taken".into()))?
        .map_err(http_error)?;

    let status = response.status();
    let mut selected = BTreeMap::new();
    for (name, value) in response.headers().entries() {
        if SELECTED_HEADERS.contains(&name.as_str()) {
            selected.insert(name, String::from_utf8_lossy(&value).into_owned());
        }
    }

    let body = response
        .consume()
        .map_err(|()| ToolError::Failed("body already taken".into()))?;
    let mut bytes = Vec::new();
    let mut truncated = false;
    {
        let stream = body
            .stream()
            .map_err(|()| ToolError::Failed("body stream taken".into()))?;
        loop {
            let want = (cap + 1).saturating_sub(bytes.len() as u64).min(64 * 1024);
            if want == 0 {
                truncated = true;
                break;
            }
            match stream.blocking_read(want) {
                Ok(chunk) => bytes.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(ToolError::Failed(format!(
                        "reading body: {}",
                        e.to_debug_string()
                    )));
                }
            }
        }
    }
    if bytes.len() as u64 > cap {
        bytes.truncate(cap as usize);
        truncated = true;
    }
    output(&serde_json::json!({
        "status": status,
        "headers": selected,
        "body": String::from_utf8_lossy(&bytes),
        "body_bytes": bytes.len(),
        "truncated": truncated,
    }))
}

impl Guest for HttpGet {
    fn describe() -> Vec<ToolInfo> {
        vec![ToolInfo {
            name: "http_get".into(),
            description: "Fetches a URL with HTTP GET and returns the status, selected headers and the body (capped, lossy UTF-8). Header values may name a secret as {{secret:NAME}}.".into(),
            input_schema: r#"{"type":"object","properties":{"url":{"type":"string","description":"http:// or https:// URL."},"headers":{"type":"object","additionalProperties":{"type":"string"},"description":"Request headers; a value may contain {{secret:NAME}}."},"max_body_bytes":{"type":"integer","minimum":0,"maximum":1048576}},"required":["url"],"additionalProperties":false}"#.into(),
            output_schema: Some(r#"{"type":"object","properties":{"status":{"type":"integer"},"headers":{"type":"object"},"body":{"type":"string"},"body_bytes":{"type":"integer"},"truncated":{"type":"boolean"}}}"#.into()),
            capabilities: Capabilities {
                http_hosts: vec!["*".into()],
                secrets: Vec::new(),
                workspace_read: false,
                workspace_write: false,
            },
        }]
    }

    fn call(tool: String, input: String) -> Result<String, ToolError> {
        match tool.as_str() {
            "http_get" => fetch(parse_input(&input)?),
            other => Err(unknown_tool(other)),
        }
    }
}

struct HttpGet;

export_tool!(HttpGet);
