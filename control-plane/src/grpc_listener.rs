//! The gRPC listeners' accept side (TCP and the local Unix socket):
//! connection limits, the TLS handshake and a deadline for a new connection
//! to start speaking HTTP/2, as a stream of ready connections for tonic's
//! `serve_with_incoming`.
//!
//! Owns, per listener (`[grpc]`, [`GrpcLimits`]; the Unix socket's peers
//! have no address, so only its total cap applies, see [`Accept`]):
//! - connection limits: at most `max_connections` open connections and
//!   `max_connections_per_ip` per client address ([`ConnTable`]); a
//!   connection over either is closed at once, before any byte of it is
//!   read (nothing meaningful can be answered before the HTTP/2 handshake);
//! - the handshake deadline: a connection must complete its TLS handshake
//!   (when `[grpc.tls]` is set) **and** deliver the 24-byte HTTP/2 client
//!   preface within `handshake_timeout` of its accept, or it is closed
//!   ([`Guarded`]). Handshakes run in their own tasks, so a slow one never
//!   delays another connection; each holds its slot while it runs.
//!
//! After the preface the connection belongs to tonic/hyper: HTTP/2
//! keep-alive pings (`Server::http2_keepalive_interval`, set in
//! [`crate::server`]) close dead peers; an idle but live client keeps its
//! slot, bounded by the per-address limit.
//!
//! TLS is rustls from [`crate::tls::grpc_server_config`]: the accepted
//! stream is a `tokio_rustls::server::TlsStream`, for which tonic puts the
//! client's certificates into each request (`Request::peer_certs`, used by
//! [`crate::api::peer`]), as when tonic ran the handshake itself.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tonic::transport::server::Connected;

use crate::connlimit::{ConnTable, Slot};

/// The HTTP/2 client connection preface (RFC 9113, section 3.4).
const PREFACE_LEN: usize = 24;

/// `[grpc]`'s connection limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcLimits {
    /// Open connections per replica.
    pub max_connections: usize,
    /// Open connections per client IP address.
    pub max_connections_per_ip: usize,
    /// TLS handshake and HTTP/2 preface complete within this of the accept.
    pub handshake_timeout: Duration,
}

/// A listening socket [`Incoming`] accepts from.
pub trait Accept: std::fmt::Debug + Send + 'static {
    /// An accepted connection.
    type Stream: Send + 'static;
    /// The next connection and the address its per-client limit counts
    /// against.
    fn poll_accept_from(&self, cx: &mut Context<'_>) -> Poll<io::Result<(Self::Stream, IpAddr)>>;
}

impl Accept for TcpListener {
    type Stream = TcpStream;

    fn poll_accept_from(&self, cx: &mut Context<'_>) -> Poll<io::Result<(TcpStream, IpAddr)>> {
        self.poll_accept(cx).map_ok(|(tcp, peer)| {
            // Accepted sockets need TCP_NODELAY themselves: without it,
            // Nagle and delayed ACKs add ~40 ms to small responses.
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "TCP_NODELAY on a gRPC socket");
            }
            (tcp, peer.ip())
        })
    }
}

/// The key every Unix-socket peer counts against: they have no address,
/// so the listener's total cap is the limit that applies (give it a
/// per-address limit equal to the total).
pub const UNIX_PEER: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);

impl Accept for UnixListener {
    type Stream = UnixStream;

    fn poll_accept_from(&self, cx: &mut Context<'_>) -> Poll<io::Result<(UnixStream, IpAddr)>> {
        self.poll_accept(cx).map_ok(|(s, _)| (s, UNIX_PEER))
    }
}

/// Turns an accepted socket `S` into the stream tonic serves (itself, or
/// TLS over it).
pub type Handshake<S, IO> =
    Arc<dyn Fn(S) -> Pin<Box<dyn Future<Output = io::Result<IO>> + Send>> + Send + Sync>;

/// No handshake: the socket as it is.
pub fn plain<S: Send + 'static>() -> Handshake<S, S> {
    Arc::new(|s| Box::pin(async move { Ok(s) }))
}

/// The TLS handshake with `acceptor`.
pub fn tls(
    acceptor: tokio_rustls::TlsAcceptor,
) -> Handshake<TcpStream, tokio_rustls::server::TlsStream<TcpStream>> {
    Arc::new(move |tcp| {
        let accept = acceptor.accept(tcp);
        Box::pin(accept)
    })
}

/// Accepted connections within the limits, handshaken, in the order their
/// handshakes finish. Never ends and never yields an error (accept errors
/// are logged and retried after a short pause, so that tonic keeps serving).
/// Dropping it closes the listener and every connection still handshaking.
pub struct Incoming<L: Accept, IO> {
    listener: L,
    table: Arc<ConnTable>,
    timeout: Duration,
    handshake: Handshake<L::Stream, IO>,
    pending: JoinSet<Option<Guarded<IO>>>,
    /// After an accept error (EMFILE...): no accepts until it fires.
    backoff: Option<Pin<Box<Sleep>>>,
}

impl<L: Accept, IO> std::fmt::Debug for Incoming<L, IO> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("listener", &self.listener)
            .field("handshaking", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl<L: Accept, IO: Send + 'static> Incoming<L, IO> {
    /// Connections of `listener` under `limits`, after `handshake`.
    pub fn new(listener: L, limits: GrpcLimits, handshake: Handshake<L::Stream, IO>) -> Self {
        Self {
            listener,
            table: Arc::new(ConnTable::new(
                limits.max_connections,
                limits.max_connections_per_ip,
            )),
            timeout: limits.handshake_timeout,
            handshake,
            pending: JoinSet::new(),
            backoff: None,
        }
    }

    /// Takes `conn` from `peer` if the limits allow and starts its handshake.
    fn admit(&mut self, conn: L::Stream, peer: IpAddr) {
        let Some(slot) = self.table.admit(peer) else {
            tracing::debug!(%peer, "gRPC connection refused: connection limit");
            return;
        };
        let deadline = Instant::now() + self.timeout;
        let handshake = (self.handshake)(conn);
        self.pending.spawn(async move {
            match tokio::time::timeout_at(deadline, handshake).await {
                Ok(Ok(io)) => Some(Guarded::new(io, slot, deadline)),
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "gRPC TLS handshake failed");
                    None
                }
                Err(_) => {
                    tracing::debug!(%peer, "gRPC handshake not complete in time");
                    None
                }
            }
        });
    }
}

impl<L: Accept + Unpin, IO: Send + 'static> futures::Stream for Incoming<L, IO> {
    type Item = io::Result<Guarded<IO>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(b) = &mut this.backoff {
            if b.as_mut().poll(cx).is_ready() {
                this.backoff = None;
            }
        }
        while this.backoff.is_none() {
            match this.listener.poll_accept_from(cx) {
                Poll::Ready(Ok((conn, peer))) => this.admit(conn, peer),
                Poll::Ready(Err(e)) => {
                    // EMFILE and the like: pause instead of spinning.
                    tracing::warn!(error = %e, "gRPC accept failed");
                    let mut b = Box::pin(tokio::time::sleep(Duration::from_millis(50)));
                    // Registers the waker for the end of the pause.
                    let _ = b.as_mut().poll(cx);
                    this.backoff = Some(b);
                }
                Poll::Pending => break,
            }
        }
        loop {
            match this.pending.poll_join_next(cx) {
                Poll::Ready(Some(Ok(Some(io)))) => return Poll::Ready(Some(Ok(io))),
                // A failed handshake, or a panicked task: the next one.
                Poll::Ready(Some(_)) => continue,
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// A connection with its [`Slot`], closed (a read fails with `TimedOut`)
/// when its first [`PREFACE_LEN`] bytes (the HTTP/2 preface, after TLS) have
/// not arrived by its deadline.
pub struct Guarded<IO> {
    io: IO,
    _slot: Slot,
    /// Bytes read so far and the deadline, until the preface is in.
    preface: Option<(usize, Pin<Box<Sleep>>)>,
}

impl<IO> std::fmt::Debug for Guarded<IO> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarded")
            .field("preface", &self.preface.as_ref().map(|p| p.0))
            .finish_non_exhaustive()
    }
}

impl<IO> Guarded<IO> {
    fn new(io: IO, slot: Slot, deadline: Instant) -> Self {
        Self {
            io,
            _slot: slot,
            preface: Some((0, Box::pin(tokio::time::sleep_until(deadline)))),
        }
    }
}

impl<IO: Connected> Connected for Guarded<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if let Some((n, _)) = &mut this.preface {
                    *n += buf.filled().len() - before;
                    if *n >= PREFACE_LEN {
                        this.preface = None;
                    }
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                let expired = match &mut this.preface {
                    Some((_, sleep)) => sleep.as_mut().poll(cx).is_ready(),
                    None => false,
                };
                if expired {
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no HTTP/2 preface in time",
                    )))
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
