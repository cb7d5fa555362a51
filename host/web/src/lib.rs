//! The host's HTTP endpoint: Prometheus metrics at `/metrics`.
//!
//! It listens on loopback unless told otherwise, and any other address
//! requires a bearer token ([`Token`]): the metrics name agents, tools and
//! models, which is more than a stranger on the network should learn. It
//! is read-only: nothing it serves changes what an agent may do.

mod auth;
mod metrics;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

pub use auth::{Token, TokenError};
pub use metrics::{MAX_ACTIONS, Metrics, OTHER};

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

/// A running endpoint; dropping it stops it.
pub struct WebServer {
    addr: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl WebServer {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

#[derive(Clone)]
struct Shared {
    metrics: Arc<Metrics>,
    token: Option<Token>,
}

/// Binds `config.listen` and serves until the [`WebServer`] is dropped.
pub async fn serve(config: WebConfig, metrics: Arc<Metrics>) -> Result<WebServer, WebError> {
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
    let shared = Shared {
        metrics,
        token: config.token,
    };
    let app = axum::Router::new()
        .route("/metrics", get(metrics_page))
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            require_token,
        ))
        .with_state(shared);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
        if let Err(e) = served {
            tracing::warn!(%addr, "the web endpoint stopped: {e}");
        }
    });
    Ok(WebServer { addr, _stop: stop })
}

async fn require_token(State(shared): State<Shared>, request: Request, next: Next) -> Response {
    let Some(token) = &shared.token else {
        return next.run(request).await;
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(p) if token.matches(p) => next.run(request).await,
        _ => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))],
            "a bearer token is required: send `Authorization: Bearer <token>` with the token from [web] in corral.toml\n",
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
