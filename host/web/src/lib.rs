//! The host's HTTP endpoint: the audit dashboard (`/`, `/decisions` and
//! its live stream `/events`, `/records/N`, `/policies`) and Prometheus
//! metrics at `/metrics`.
//!
//! It listens on loopback unless told otherwise, and any other address
//! requires a bearer token ([`Token`]), sent as `Authorization: Bearer`
//! or, for a browser, as the cookie `/login` sets: the pages show agents'
//! arguments and the policies. It is read-only: nothing it serves changes
//! what an agent may do.

mod auth;
mod dashboard;
mod metrics;
mod pages;
mod query;
mod view;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

pub use auth::{Token, TokenError};
pub use dashboard::Dashboard;
pub use metrics::{MAX_ACTIONS, Metrics, OTHER};
pub use query::Filters;
pub use view::{PolicyText, PolicyView};

/// Where and how to listen.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// The address to bind; port 0 picks a free one ([`WebServer::addr`]).
    pub listen: SocketAddr,
    /// Required of every request when set; must be set unless `listen` is
    /// a loopback address.
    pub token: Option<Token>,
}

/// Why the endpoint did not start.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// A non-loopback address without a token.
    #[error(
        "web listen address {0} is not loopback, so it needs a token: set `token_file` (mode 0600) or `token_env` under [web], or listen on 127.0.0.1"
    )]
    TokenRequired(SocketAddr),
    /// The address could not be bound.
    #[error("web listen address {addr}: {message}; pick another `listen` under [web]")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What the system said.
        message: String,
    },
}

/// A running endpoint; dropping it stops it, live streams included.
pub struct WebServer {
    addr: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Drop for WebServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

impl WebServer {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) metrics: Arc<Metrics>,
    /// Turns for reading the log: two at once.
    pub(crate) readers: Arc<tokio::sync::Semaphore>,
    token: Option<Token>,
    pub(crate) dashboard: Option<Dashboard>,
    /// Turns true when the server stops.
    pub(crate) stop: tokio::sync::watch::Receiver<bool>,
}

/// The cookie `/login` sets, for browsers, which cannot add a header to
/// a page load or an event stream.
const TOKEN_COOKIE: &str = "corral_token";

/// Binds `config.listen` and serves `/metrics` and, given one, the
/// dashboard, until the [`WebServer`] is dropped.
pub async fn serve(
    config: WebConfig,
    metrics: Arc<Metrics>,
    dashboard: Option<Dashboard>,
) -> Result<WebServer, WebError> {
    if config.token.is_none() && !config.listen.ip().is_loopback() {
        return Err(WebError::TokenRequired(config.listen));
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| WebError::Bind {
            addr: config.listen,
            message: e.to_string(),
        })?;
    let addr = listener.local_addr().map_err(|e| WebError::Bind {
        addr: config.listen,
        message: e.to_string(),
    })?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let shared = Shared {
        metrics,
        readers: Arc::new(tokio::sync::Semaphore::new(2)),
        token: config.token,
        dashboard,
        stop: stopped.clone(),
    };
    let guarded = axum::Router::new()
        .route("/metrics", get(metrics_page))
        .route("/", get(dashboard::overview))
        .route("/decisions", get(dashboard::decisions))
        .route("/events", get(dashboard::events))
        .route("/records/{seq}", get(dashboard::record))
        .route("/policies", get(dashboard::policies))
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            require_token,
        ));
    let app = guarded
        .route("/login", get(login_page).post(login))
        .with_state(shared);
    let mut shutdown = stopped;
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = shutdown.wait_for(|stopping| *stopping).await;
            })
            .await;
        if let Err(e) = served {
            tracing::warn!(%addr, "the web endpoint stopped: {e}");
        }
    });
    Ok(WebServer { addr, stop })
}

async fn require_token(State(shared): State<Shared>, request: Request, next: Next) -> Response {
    let Some(token) = &shared.token else {
        // Without a token the listener is loopback, and only loopback
        // names may ask: a web page whose own name an attacker re-points
        // at 127.0.0.1 (DNS rebinding) would otherwise read the log
        // through the operator's browser.
        // And no other site's page may make the operator's browser ask
        // (each page reads the log: a flood of image tags would do it).
        let cross_site = request
            .headers()
            .get("sec-fetch-site")
            .is_some_and(|v| v.as_bytes() == b"cross-site");
        if loopback_host(request.headers()) && !cross_site {
            return next.run(request).await;
        }
        return (
            StatusCode::FORBIDDEN,
            "this endpoint answers only to loopback names (127.0.0.1, [::1], localhost) unless [web] sets a token\n",
        )
            .into_response();
    };
    let headers = request.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == TOKEN_COOKIE)
        .map(|(_, value)| percent_decoded(value));
    match bearer.map(str::to_string).or(cookie) {
        Some(p) if token.matches(&p) => next.run(request).await,
        _ => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))],
            "a token is required: send `Authorization: Bearer <token>` with the token from [web] in corral.toml, or sign in a browser at /login\n",
        )
            .into_response(),
    }
}

async fn metrics_page(State(shared): State<Shared>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        shared.metrics.encode(),
    )
        .into_response()
}

/// The sign-in form for browsers, which cannot add a header to a page
/// load or an event stream.
async fn login_page() -> Response {
    const LOGIN: &str = r#"<p>Paste the token from <code>[web]</code> in corral.toml. This browser keeps it in a cookie for this site, which scripts cannot read.</p>
<form method="post" action="/login"><input name="token" type="password" autocomplete="off" size="40"> <button type="submit">Sign in</button></form>"#;
    axum::response::Html(
        pages::layout("Sign in", maud::PreEscaped(LOGIN.to_string())).into_string(),
    )
    .into_response()
}

#[derive(serde::Deserialize)]
struct LoginForm {
    token: String,
}

/// Checks the token and, if it is the one, sets it as an `HttpOnly`,
/// same-site cookie; the token never travels in a URL.
async fn login(State(shared): State<Shared>, axum::Form(form): axum::Form<LoginForm>) -> Response {
    let token = form.token.trim();
    let good = match &shared.token {
        Some(t) => t.matches(token),
        // Nothing to sign in to.
        None => true,
    };
    if !good {
        return (
            StatusCode::UNAUTHORIZED,
            axum::response::Html(
                pages::problem(
                    "Sign in",
                    "That is not the token in [web]; try again at /login.",
                )
                .into_string(),
            ),
        )
            .into_response();
    }
    let cookie = format!(
        "{TOKEN_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
        query_safe(token)
    );
    match HeaderValue::from_str(&cookie) {
        Ok(value) => (
            StatusCode::SEE_OTHER,
            [
                (header::SET_COOKIE, value),
                (header::LOCATION, HeaderValue::from_static("/")),
            ],
        )
            .into_response(),
        Err(_) => (
            StatusCode::BAD_REQUEST,
            "the token cannot be kept in a cookie\n",
        )
            .into_response(),
    }
}

/// `text` with every byte outside `[A-Za-z0-9-_.~]` percent-encoded: for
/// query strings, and for the cookie, read back with [`percent_decoded`].
pub(crate) fn query_safe(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Whether the request's `Host` names loopback: an IP literal on it, or
/// `localhost`, with or without a port.
fn loopback_host(headers: &axum::http::HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let port_ok = |port: &str| {
        port.is_empty()
            || port
                .strip_prefix(':')
                .is_some_and(|p| p.parse::<u16>().is_ok())
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((name, port)) if port_ok(port) => name,
            _ => return false,
        },
        None => match host.rsplit_once(':') {
            Some((name, port)) if port.parse::<u16>().is_ok() => name,
            Some(_) => return false,
            None => host,
        },
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `%XX` escapes decoded (the login form writes the cookie with
/// `encodeURIComponent`); anything malformed is kept as it is, and then
/// simply does not match.
pub(crate) fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_loopback_names_pass_without_a_token() {
        let with = |host: &str| {
            let mut h = axum::http::HeaderMap::new();
            h.insert(axum::http::header::HOST, host.parse().unwrap());
            super::loopback_host(&h)
        };
        for ok in [
            "127.0.0.1:8787",
            "127.0.0.1",
            "[::1]:8787",
            "localhost:8787",
            "LOCALHOST",
        ] {
            assert!(with(ok), "{ok}");
        }
        for bad in [
            "evil.example:8787",
            "evil.example",
            "10.0.0.1:8787",
            "127.0.0.1.evil.example",
        ] {
            assert!(!with(bad), "{bad}");
        }
        assert!(!super::loopback_host(&axum::http::HeaderMap::new()));
    }

    #[test]
    fn cookies_are_percent_decoded() {
        assert_eq!(super::percent_decoded("a%2Bb%3D%3d"), "a+b==");
        assert_eq!(super::percent_decoded("100%"), "100%");
        assert_eq!(super::percent_decoded("%zz"), "%zz");
    }
}
