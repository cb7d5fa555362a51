//! The gate on `wasi:http/outgoing-handler`.
//!
//! wasmtime-wasi-http hands every outgoing request to
//! [`WasiHttpHooks::send_request`] before any connection exists. There the
//! request is described from the parsed URI (never from guest claims),
//! put to the gate, and only then are secret placeholders filled and the
//! request sent. A refusal returns an error naming the reason and the
//! deciding policies; nothing touches the network.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderValue;
use http_body_util::BodyExt;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use crate::runtime::CapabilityUse;
use corral_gate::{Caller, Capability, CapabilityGate, GateDecision, HttpRequestInfo, SecretStore};

const PLACEHOLDER_OPEN: &str = "{{secret:";
const PLACEHOLDER_CLOSE: &str = "}}";

/// Per-call state of the HTTP gate; also the call's record of capability
/// decisions (workspace decisions are recorded here too).
pub(crate) struct CapabilityGuard {
    caller: Caller,
    gate: Arc<dyn CapabilityGate>,
    secrets: Arc<dyn SecretStore>,
    deadline: Instant,
    uses: Vec<CapabilityUse>,
    /// Set on entry to any of Corral's own host functions, whatever they
    /// then answer: an instance made ahead of its call that reached one
    /// would have met a caller, gate and workspace that are not its call's.
    reached: bool,
}

type SendFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                ),
                HttpError,
            >,
        > + Send,
>;

impl CapabilityGuard {
    pub(crate) fn new(
        caller: Caller,
        gate: Arc<dyn CapabilityGate>,
        secrets: Arc<dyn SecretStore>,
        deadline: Instant,
    ) -> Self {
        CapabilityGuard {
            caller,
            gate,
            secrets,
            deadline,
            uses: Vec::new(),
            reached: false,
        }
    }

    /// Notes that the guest called one of Corral's host functions.
    pub(crate) fn reach(&mut self) {
        self.reached = true;
    }

    /// Asks the gate and records the answer.
    pub(crate) fn check(&mut self, capability: Capability) -> GateDecision {
        let decision = self.gate.check(&self.caller, &capability);
        tracing::debug!(agent = %self.caller.agent, tool = %self.caller.tool, %capability, allowed = matches!(decision, GateDecision::Allow), "capability check");
        self.uses.push(CapabilityUse {
            capability,
            decision: decision.clone(),
        });
        decision
    }

    pub(crate) fn caller(&self) -> &Caller {
        &self.caller
    }

    pub(crate) fn take_uses(&mut self) -> Vec<CapabilityUse> {
        std::mem::take(&mut self.uses)
    }

    /// Whether the guest has called any of Corral's host functions (and
    /// so whether anything has asked the gate).
    pub(crate) fn was_reached(&self) -> bool {
        self.reached || !self.uses.is_empty()
    }

    /// Decides the request and fills its secrets, or says why not.
    fn authorize(&mut self, request: &mut http::Request<WasiBody>) -> Result<(), HttpError> {
        let uri = request.uri();
        let scheme = uri.scheme_str().unwrap_or("").to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            other => return Err(denied_error(&format!("scheme `{other}` is not supported"))),
        };
        let host = uri
            .host()
            .ok_or_else(|| denied_error("the request has no host"))?
            .trim_matches(['[', ']'])
            .to_ascii_lowercase();
        let info = HttpRequestInfo {
            method: request.method().as_str().to_string(),
            scheme,
            port: uri.port_u16().unwrap_or(default_port),
            path: uri
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "/".into()),
            host: host.clone(),
        };
        if let GateDecision::Deny(d) = self.check(Capability::Http(info)) {
            return Err(denied_error(&d.to_string()));
        }
        for value in request.headers_mut().values_mut() {
            let Ok(text) = value.to_str() else { continue };
            if !text.contains(PLACEHOLDER_OPEN) {
                continue;
            }
            let filled = self.fill_secrets(text, &host)?;
            let mut new_value = HeaderValue::from_str(&filled)
                .map_err(|_| denied_error("a secret's value is not a valid header value"))?;
            // Keeps the value out of hyper's debug output and HPACK tables.
            new_value.set_sensitive(true);
            *value = new_value;
        }
        Ok(())
    }

    fn fill_secrets(&mut self, text: &str, host: &str) -> Result<String, HttpError> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find(PLACEHOLDER_OPEN) {
            out.push_str(&rest[..start]);
            let after = &rest[start + PLACEHOLDER_OPEN.len()..];
            let end = after.find(PLACEHOLDER_CLOSE).ok_or_else(|| {
                denied_error("malformed secret placeholder: expected {{secret:NAME}}")
            })?;
            let name = &after[..end];
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(denied_error(&format!(
                    "malformed secret placeholder `{{{{secret:{name}}}}}`: names are letters, digits, `_` and `-`"
                )));
            }
            let capability = Capability::Secret {
                name: name.to_string(),
                host: host.to_string(),
            };
            if let GateDecision::Deny(d) = self.check(capability) {
                return Err(denied_error(&d.to_string()));
            }
            let value = self.secrets.get(name).ok_or_else(|| {
                denied_error(&format!(
                    "secret `{name}` is allowed but not configured on this host"
                ))
            })?;
            out.push_str(&value);
            rest = &after[end + PLACEHOLDER_CLOSE.len()..];
        }
        out.push_str(rest);
        Ok(out)
    }

    fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}

/// The guest sees this as `error-code.internal-error("denied: …")`; the
/// SDK turns it back into a `denied` tool error.
fn denied_error(reason: &str) -> HttpError {
    HttpError::InternalError(Some(format!("denied: {reason}")))
}

fn clamp(t: Option<Duration>, max: Duration) -> Option<Duration> {
    Some(t.map_or(max, |t| t.min(max)))
}

impl WasiHttpHooks for CapabilityGuard {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> SendFuture {
        self.reach();
        drop(fut);
        if let Err(e) = self.authorize(&mut request) {
            return Box::new(async move { Err(e) });
        }
        // Host-side waits are invisible to epoch interruption, so bound
        // every phase of the request by what is left of the call's time.
        let remaining = self.remaining();
        let options = options.unwrap_or_default();
        let options = RequestOptions {
            connect_timeout: clamp(options.connect_timeout, remaining),
            first_byte_timeout: clamp(options.first_byte_timeout, remaining),
            between_bytes_timeout: clamp(options.between_bytes_timeout, remaining),
        };
        Box::new(async move {
            let (response, io) =
                wasmtime_wasi_http::default_send_request(request, Some(options)).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = Result<(), HttpError>> + Send>,
            ))
        })
    }
}
