//! The gate on `wasi:http/outgoing-handler`.
//!
//! wasmtime-wasi-http hands every outgoing request to
//! [`WasiHttpHooks::send_request`] before any connection exists. There the
//! request is described from the parsed URI (never from guest claims) and
//! put to the gate on its host name alone (so a name policy refuses is
//! never resolved); the name is then resolved once, an internal address
//! refused unless an operator opened its range to that host
//! ([`crate::address`]), the request put to the gate again with the
//! address, and only then are secret placeholders filled and the request
//! sent, to exactly that address ([`crate::connect`]). A refusal returns an
//! error naming the reason and the deciding policies; nothing connects.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use http::HeaderValue;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use crate::address::{canonical, internal_class, local_addresses};
use crate::connect::{self, Target};
use crate::guard::{CapabilityGuard, CapabilityUse};
use corral_gate::{Capability, Denial, GateDecision, HttpRequestInfo};

const PLACEHOLDER_OPEN: &str = "{{secret:";
const PLACEHOLDER_CLOSE: &str = "}}";

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
    /// Decides the request on its host name, resolves the name, refuses an
    /// internal address, decides again with the address it will reach, and
    /// fills its secrets; or says why not.
    fn authorize(&mut self, request: &mut http::Request<WasiBody>) -> Result<Target, HttpError> {
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
        let port = uri.port_u16().unwrap_or(default_port);
        let mut info = HttpRequestInfo {
            method: request.method().as_str().to_string(),
            scheme: scheme.clone(),
            port,
            path: uri
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "/".into()),
            host: host.clone(),
            address: None,
        };
        // First the name alone: a request that policy refuses by its name
        // is never resolved, so a tool cannot carry data out in DNS queries
        // for names it may not reach.
        if let GateDecision::Deny(d) = self.check(Capability::Http(info.clone())) {
            return Err(denied_error(&d.to_string()));
        }
        let ip = canonical(resolve(&host, port, self.remaining())?);
        info.address = Some(ip);
        let refusal = if let Some(class) = internal_class(ip) {
            (!self.internal.allows(&host, ip)).then(|| article(class))
        } else {
            local_addresses()
                .contains(&ip)
                .then(|| "an address of this host".to_string())
        };
        if let Some(what) = refusal {
            // The address is in the record; the tool is told the class only.
            let denial = Denial::new(format!(
                "`{host}` resolves to {what}, which tools may not reach; \
                 if this host is an internal API that is really wanted, an operator can open \
                 its range to the host's group ([[http.internal]] in corral.toml)"
            ));
            let capability = Capability::Http(info);
            self.gate.refused(&self.caller, &capability, &denial);
            self.uses.push(CapabilityUse {
                capability,
                decision: GateDecision::Deny(denial.clone()),
            });
            return Err(denied_error(&denial.reason));
        }
        // Then the address it will connect to.
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
        Ok(Target {
            addr: SocketAddr::new(ip, port),
            host,
            tls: scheme == "https",
        })
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

/// `loopback` → `a loopback address`, `unspecified` → `an unspecified address`.
fn article(class: &str) -> String {
    let a = if class.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{a} {class} address")
}

/// The first address `host` resolves to, within `within`. An IP literal
/// is its own address. The lookup runs on a thread of its own, so a
/// resolver that never answers cannot hold the call past its time.
fn resolve(host: &str, port: u16, within: Duration) -> Result<IpAddr, HttpError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ip);
    }
    use std::sync::atomic::{AtomicUsize, Ordering};
    /// Lookups that outlived their call still hold a thread until the
    /// resolver gives up; past this many, a new lookup is refused.
    const MAX_LOOKUPS: usize = 64;
    static LOOKUPS: AtomicUsize = AtomicUsize::new(0);
    if LOOKUPS.fetch_add(1, Ordering::AcqRel) >= MAX_LOOKUPS {
        LOOKUPS.fetch_sub(1, Ordering::AcqRel);
        return Err(HttpError::DnsTimeout);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let name = host.to_string();
    std::thread::Builder::new()
        .name("corral-dns".into())
        .spawn(move || {
            let found = (name.as_str(), port)
                .to_socket_addrs()
                .map(|mut a| a.next());
            LOOKUPS.fetch_sub(1, Ordering::AcqRel);
            let _ = tx.send(found);
        })
        .map_err(|e| {
            LOOKUPS.fetch_sub(1, Ordering::AcqRel);
            HttpError::InternalError(Some(format!("cannot resolve: {e}")))
        })?;
    match rx.recv_timeout(within) {
        Ok(Ok(Some(addr))) => Ok(addr.ip()),
        Ok(Ok(None)) | Ok(Err(_)) => Err(HttpError::DnsError {
            rcode: Some(format!("`{host}` did not resolve")),
            info_code: None,
        }),
        Err(_) => Err(HttpError::DnsTimeout),
    }
}

impl WasiHttpHooks for CapabilityGuard {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> SendFuture {
        self.reach();
        drop(fut);
        let target = match self.authorize(&mut request) {
            Ok(target) => target,
            Err(e) => return Box::new(async move { Err(e) }),
        };
        // Host-side waits are invisible to epoch interruption, so every
        // phase of the request, whatever the guest asked for, ends at the
        // call's deadline.
        let deadline = tokio::time::Instant::from_std(self.deadline);
        Box::new(async move {
            let (response, io) = connect::send(target, request, deadline).await?;
            Ok((response, io))
        })
    }
}
