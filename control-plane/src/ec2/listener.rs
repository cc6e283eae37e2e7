//! The EC2 gateway's HTTP/1.1 listener: the accept loop and per-connection
//! limits that keep slow or hostile clients from taking the gateway down.
//!
//! Owns, per replica ([`Limits`], from `[http]`):
//! - connection limits: at most `max_connections` open connections and
//!   `max_connections_per_ip` per client address; a connection beyond either
//!   is answered `503 RequestLimitExceeded` and closed at once (nothing of
//!   it is read);
//! - timeouts, enforced on the socket ([`TimedIo`]): a connection waiting
//!   for a request (new, or kept alive after one) with no byte for
//!   `idle_timeout` is closed; once a request's first byte has arrived, its
//!   headers must be complete within `header_timeout` (one byte every few
//!   seconds does not extend it); a request's body must arrive within
//!   `body_timeout` of its headers ([`DeadlineBody`]; the gateway answers
//!   `408 RequestTimeout` and closes);
//! - the body size: a `Content-Length` above `max_body` is answered
//!   `413 RequestEntityTooLarge` before any byte of the body is read (the
//!   handlers cap streamed bodies at the same size); a declared body of at
//!   most 4 MiB is then read and thrown away, never kept, so that clients
//!   that send it all before reading see the answer.
//!
//! - TLS (`[http] tls_cert_file` / `tls_key_file`, rustls through
//!   tokio-rustls, [`crate::tls`]): the handshake runs in the connection's
//!   own task, over the timed socket, after the connection took its slot;
//!   it must be complete within `header_timeout` of the accept, and the first
//!   request's head within `header_timeout` of the handshake's first byte
//!   (the socket wrapper sees the handshake as the start of the first
//!   request). A connection over a limit is closed without an answer (a
//!   plain-text 503 means nothing to a TLS client, and a handshake would
//!   cost the CPU the limit protects).
//!
//! Requests themselves go to the gateway's axum router ([`super::router`]).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

use super::error::{Ec2Error, ErrorCode};
use crate::connlimit::{ConnTable, Slot};

/// How long open connections get to finish when the replica stops.
const DRAIN_ON_SHUTDOWN: Duration = Duration::from_secs(3);

/// A body declared over the limit but at most this large is read and
/// discarded (never kept) after the 413 has been sent, within the body
/// timeout: most HTTP clients send the whole body before reading the
/// answer, and closing on unread data resets the connection before they
/// see it. Larger ones are not read at all.
const DISCARD_LIMIT: u64 = 4 * 1024 * 1024;

/// The listener's limits (`[http]` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A request's headers must be complete this long after their first byte.
    pub header_timeout: Duration,
    /// A request's body must be complete this long after its headers.
    pub body_timeout: Duration,
    /// A connection waiting for a request with no byte for this long is closed.
    pub idle_timeout: Duration,
    /// Open connections.
    pub max_connections: usize,
    /// Open connections per client IP address.
    pub max_connections_per_ip: usize,
    /// Largest declared `Content-Length`.
    pub max_body: usize,
}

impl From<&crate::config::HttpConfig> for Limits {
    fn from(c: &crate::config::HttpConfig) -> Self {
        Self {
            header_timeout: Duration::from_secs(c.header_timeout_seconds),
            body_timeout: Duration::from_secs(c.body_timeout_seconds),
            idle_timeout: Duration::from_secs(c.idle_timeout_seconds),
            max_connections: c.max_connections,
            max_connections_per_ip: c.max_connections_per_ip,
            max_body: c.max_body_bytes,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::from(&crate::config::HttpConfig::default())
    }
}

/// Serves `app` on `listener` under `limits` until `stop` turns true; then
/// open connections get [`DRAIN_ON_SHUTDOWN`] to finish their request.
/// Dropping (aborting) the returned future closes every connection.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
) {
    let table = Arc::new(ConnTable::new(
        limits.max_connections,
        limits.max_connections_per_ip,
    ));
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            a = listener.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and the like: back off instead of spinning.
                tracing::warn!(error = %e, "EC2 gateway accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Small XML answers: without TCP_NODELAY, Nagle's algorithm and
        // delayed ACKs add ~40 ms to a request/response exchange.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY on an EC2 gateway socket");
        }
        let Some(slot) = table.admit(peer.ip()) else {
            refuse(tcp, peer, tls.is_some());
            continue;
        };
        conns.spawn(connection(
            tcp,
            slot,
            app.clone(),
            limits,
            tls.clone(),
            stop.clone(),
        ));
    }
    let drain = async { while conns.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(DRAIN_ON_SHUTDOWN, drain).await;
}

/// Answers a connection over a limit with `503 RequestLimitExceeded` (the
/// socket's send buffer is empty: the write does not block) and closes it;
/// on a TLS listener it is closed without an answer.
fn refuse(tcp: TcpStream, peer: SocketAddr, tls: bool) {
    tracing::debug!(%peer, "EC2 gateway connection refused: connection limit");
    crate::metrics::global().ec2("", "ConnectionLimitExceeded", Duration::ZERO);
    if tls {
        return;
    }
    let xml = Ec2Error::new(
        ErrorCode::RequestLimitExceeded,
        "Too many open connections; retry later",
    )
    .to_xml(&super::request_id());
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/xml;charset=UTF-8\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{xml}",
        xml.len()
    );
    let _ = tcp.try_write(answer.as_bytes());
    drop(tcp);
}

async fn connection(
    tcp: TcpStream,
    _slot: Slot,
    app: Router,
    limits: Limits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
) {
    let state = Arc::new(ConnState::default());
    let io = TimedIo::new(tcp, limits, state.clone());
    let Some(tls) = tls else {
        return http(io, state, app, limits, stop).await;
    };
    let handshake = tokio::time::timeout(limits.header_timeout, tls.accept(io));
    let io = tokio::select! {
        r = handshake => match r {
            Ok(Ok(io)) => io,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "EC2 gateway TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!("EC2 gateway TLS handshake not complete in time");
                return;
            }
        },
        _ = stop.wait_for(|s| *s) => return,
    };
    http(io, state, app, limits, stop).await
}

/// Serves HTTP/1.1 requests on `io` (the timed socket, or TLS over it).
async fn http<I>(
    io: I,
    state: Arc<ConnState>,
    app: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let app = app.clone();
        let busy = Busy::start(state.clone());
        async move {
            let _busy = busy;
            Ok::<_, std::convert::Infallible>(request(app, req, limits).await)
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), svc);
    let mut conn = std::pin::pin!(conn);
    let stopping = tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "EC2 gateway connection ended");
            }
            false
        }
        r = stop.wait_for(|s| *s) => r.is_ok(),
    };
    if stopping {
        conn.as_mut().graceful_shutdown();
        let _ = conn.await;
    }
}

/// One request: the size check on `Content-Length`, then the router with
/// the body under its deadline.
async fn request(
    app: Router,
    req: http::Request<hyper::body::Incoming>,
    limits: Limits,
) -> http::Response<Body> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body as u64) {
        crate::metrics::global().ec2("", "RequestEntityTooLarge", Duration::ZERO);
        let e = Ec2Error::new(
            ErrorCode::RequestEntityTooLarge,
            format!("The request body exceeds {} bytes", limits.max_body),
        );
        if declared.is_some_and(|n| n <= DISCARD_LIMIT) {
            tokio::spawn(discard(req.into_body(), limits.body_timeout));
        }
        return closing(e.status(), e.to_xml(&super::request_id()));
    }
    let req = req.map(|b| Body::new(DeadlineBody::new(b, limits.body_timeout)));
    match app.oneshot(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    }
}

/// Reads and drops what arrives of `body` (at most its declared length,
/// [`DISCARD_LIMIT`]) until it ends, fails or `timeout` passes.
async fn discard(mut body: hyper::body::Incoming, timeout: Duration) {
    use http_body_util::BodyExt;
    let _ = tokio::time::timeout(timeout, async {
        while let Some(Ok(_frame)) = body.frame().await {}
    })
    .await;
}

/// An XML answer after which the connection is closed (the rest of the
/// request is never read).
pub(crate) fn closing(status: StatusCode, xml: String) -> http::Response<Body> {
    let mut r = http::Response::new(Body::from(xml));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/xml;charset=UTF-8"),
    );
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// What a connection's socket wrapper knows of its requests.
#[derive(Debug, Default)]
struct ConnState {
    /// Requests being handled (the handler runs: the body timeout applies).
    busy: AtomicUsize,
    /// Requests started so far.
    started: AtomicU64,
}

/// Marks a request as being handled while alive.
#[derive(Debug)]
struct Busy(Arc<ConnState>);

impl Busy {
    fn start(state: Arc<ConnState>) -> Self {
        state.started.fetch_add(1, Ordering::SeqCst);
        state.busy.fetch_add(1, Ordering::SeqCst);
        Self(state)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The socket with the idle and header timeouts: while no request is being
/// handled, a read that waits past the deadline fails with `TimedOut` and
/// hyper closes the connection. The deadline is `idle_timeout` after the
/// last byte moved, or `header_timeout` after the first byte of the next
/// request's head.
struct TimedIo {
    io: TcpStream,
    limits: Limits,
    state: Arc<ConnState>,
    /// `started` when `head_from` was last reset.
    seen: u64,
    /// First byte of the request head being read.
    head_from: Option<Instant>,
    last: Instant,
    sleep: Pin<Box<Sleep>>,
}

impl TimedIo {
    fn new(io: TcpStream, limits: Limits, state: Arc<ConnState>) -> Self {
        let now = Instant::now();
        Self {
            io,
            limits,
            state,
            seen: 0,
            head_from: None,
            last: now,
            sleep: Box::pin(tokio::time::sleep_until(now + limits.idle_timeout)),
        }
    }

    fn deadline(&self) -> Instant {
        match self.head_from {
            Some(t) => t + self.limits.header_timeout,
            None => self.last + self.limits.idle_timeout,
        }
    }
}

impl AsyncRead for TimedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let started = this.state.started.load(Ordering::SeqCst);
        if started != this.seen {
            // A request head was complete: the next one starts afresh.
            this.seen = started;
            this.head_from = None;
        }
        let busy = this.state.busy.load(Ordering::SeqCst) > 0;
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    let now = Instant::now();
                    this.last = now;
                    if !busy && this.head_from.is_none() {
                        this.head_from = Some(now);
                    }
                }
                Poll::Ready(r)
            }
            Poll::Pending if busy => Poll::Pending,
            Poll::Pending => {
                let deadline = this.deadline();
                if this.sleep.deadline() != deadline {
                    this.sleep.as_mut().reset(deadline);
                }
                match this.sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        if this.head_from.is_some() {
                            "request headers not complete in time"
                        } else {
                            "idle connection"
                        },
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl AsyncWrite for TimedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.last = Instant::now();
        }
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// The body read did not finish within `[http] body_timeout_seconds`.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct BodyTimeout;

/// A request body that fails with [`BodyTimeout`] once its deadline passes.
pub struct DeadlineBody<B> {
    inner: B,
    sleep: Pin<Box<Sleep>>,
}

impl<B> std::fmt::Debug for DeadlineBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadlineBody")
            .field("deadline", &self.sleep.deadline())
            .finish_non_exhaustive()
    }
}

impl<B> DeadlineBody<B> {
    /// `inner`, to be complete within `timeout` from now.
    pub fn new(inner: B, timeout: Duration) -> Self {
        Self {
            inner,
            sleep: Box::pin(tokio::time::sleep(timeout)),
        }
    }
}

impl<B> http_body::Body for DeadlineBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(f) => Poll::Ready(f.map(|r| r.map_err(Into::into))),
            Poll::Pending => match this.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout)))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
