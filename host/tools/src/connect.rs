//! Sending a decided HTTP request to the one address that was decided.
//!
//! wasmtime-wasi-http's own sender connects to whatever the request's host
//! name resolves to when it connects, which may not be the address policy
//! saw. This one is handed the address and never resolves: TLS still
//! checks the certificate against the host name. The whole exchange,
//! response body included, ends at the call's deadline.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error as HttpError, WasiBody};

/// Where a decided request goes.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The decided address and port.
    pub addr: SocketAddr,
    /// The host name, for TLS's server name.
    pub host: String,
    /// Whether the connection is HTTPS.
    pub tls: bool,
}

type IoFuture = Box<dyn Future<Output = Result<(), HttpError>> + Send>;

static TLS: LazyLock<Arc<rustls::ClientConfig>> = LazyLock::new(|| {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.into(),
    };
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
        // ring supports the default versions; this cannot fail.
        .unwrap_or_else(|_| unreachable!("ring supports TLS 1.2 and 1.3")),
    )
});

trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// Connects to `target.addr`, sends `request`, and returns the response
/// whose body ends with an error at `deadline`.
pub(crate) async fn send(
    target: Target,
    mut request: http::Request<WasiBody>,
    deadline: Instant,
) -> Result<(http::Response<WasiBody>, IoFuture), HttpError> {
    let tcp = tokio::time::timeout_at(deadline, TcpStream::connect(target.addr))
        .await
        .map_err(|_| HttpError::ConnectionTimeout)?
        .map_err(HttpError::Connect)?;
    let stream: Box<dyn Stream> = if target.tls {
        let name = rustls::pki_types::ServerName::try_from(target.host.clone())
            .map_err(HttpError::InvalidDnsNameError)?;
        let tls = tokio::time::timeout_at(
            deadline,
            tokio_rustls::TlsConnector::from(TLS.clone()).connect(name, tcp),
        )
        .await
        .map_err(|_| HttpError::ConnectionTimeout)?
        .map_err(HttpError::Tls)?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    let (mut sender, conn) = tokio::time::timeout_at(
        deadline,
        hyper::client::conn::http1::handshake(TokioIo::new(stream)),
    )
    .await
    .map_err(|_| HttpError::ConnectionTimeout)??;
    // Origin form on the wire: the host travels in the Host header.
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    *request.uri_mut() = http::Uri::try_from(path).map_err(|_| HttpError::HttpRequestUriInvalid)?;
    let mut conn = Box::pin(conn);
    let mut conn_done = false;
    let exchange = async {
        let send = sender.send_request(request);
        tokio::pin!(send);
        tokio::select! {
            response = &mut send => response.map_err(HttpError::from),
            ended = &mut conn => {
                conn_done = true;
                ended.map_err(HttpError::from)?;
                send.await.map_err(HttpError::from)
            }
        }
    };
    let response = tokio::time::timeout_at(deadline, exchange)
        .await
        .map_err(|_| HttpError::ConnectionReadTimeout)??;
    let io: IoFuture = if conn_done {
        Box::new(async { Ok(()) })
    } else {
        Box::new(async move {
            tokio::time::timeout_at(deadline, conn)
                .await
                .map_err(|_| HttpError::HttpResponseTimeout)?
                .map_err(HttpError::from)
        })
    };
    let response = response.map(|incoming| {
        UntilDeadline {
            inner: incoming,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
        }
        .boxed_unsync()
    });
    Ok((response, io))
}

/// A response body that fails once the call's time is up, however slowly
/// the server sends it.
struct UntilDeadline {
    inner: hyper::body::Incoming,
    deadline: Pin<Box<Sleep>>,
}

impl Body for UntilDeadline {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(HttpError::from)));
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(HttpError::ConnectionReadTimeout))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
