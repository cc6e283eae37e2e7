//! The tower services that sign (client) and digest (server) request
//! bodies: what makes the signature cover the body, which tonic's
//! interceptors never see.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};

use super::{sign, BodyDigest, Credentials};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A gRPC channel (or any service below a generated client) that signs
/// every request with `creds`: the body is buffered, digested and signed
/// together with the method path, date and a fresh nonce.
///
/// ```ignore
/// let channel = nubis_proto::transport::connect("unix:/run/nubis/cp.sock").await?;
/// let client = ComputeClient::new(Signed::new(channel, creds));
/// ```
#[derive(Debug, Clone)]
pub struct Signed<S> {
    inner: S,
    creds: Arc<Credentials>,
}

/// The usual signed client transport.
pub type SignedChannel = Signed<tonic::transport::Channel>;

impl<S> Signed<S> {
    /// Signs the requests sent through `inner` with `creds`.
    pub fn new(inner: S, creds: Credentials) -> Self {
        Self {
            inner,
            creds: Arc::new(creds),
        }
    }

    /// The credentials used.
    pub fn credentials(&self) -> &Credentials {
        &self.creds
    }
}

impl<S, ResBody> tower::Service<http::Request<tonic::body::Body>> for Signed<S>
where
    S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    type Response = http::Response<ResBody>;
    type Error = BoxError;
    type Future = BoxFuture<Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        // The clone is not ready; keep it and use the one poll_ready readied.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let creds = self.creds.clone();
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            let bytes = body
                .collect()
                .await
                .map_err(|e| Box::new(e) as BoxError)?
                .to_bytes();
            let digest = BodyDigest::of(&bytes);
            let headers = sign(&creds, parts.uri.path(), &digest, SystemTime::now());
            headers
                .apply_http(&mut parts.headers)
                .map_err(|e| Box::new(e) as BoxError)?;
            let req = http::Request::from_parts(parts, tonic::body::Body::new(Full::new(bytes)));
            inner.call(req).await.map_err(Into::into)
        })
    }
}

/// Server side: buffers each request body (at most `max_bytes`), puts its
/// [`BodyDigest`] into the request's extensions and passes the request on.
/// A larger body is answered `RESOURCE_EXHAUSTED` without reaching the
/// service.
#[derive(Debug, Clone, Copy)]
pub struct BodyDigestLayer {
    max_bytes: usize,
}

impl BodyDigestLayer {
    /// Digests bodies of at most `max_bytes` (the largest message the
    /// services decode, plus its 5-byte frame header).
    pub fn new(max_bytes: usize) -> Self {
        Self { max_bytes }
    }
}

impl Default for BodyDigestLayer {
    /// tonic's default largest decoded message (4 MiB) and its frame header.
    fn default() -> Self {
        Self::new(4 * 1024 * 1024 + 5)
    }
}

impl<S> tower::Layer<S> for BodyDigestLayer {
    type Service = BodyDigestService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BodyDigestService {
            inner,
            max_bytes: self.max_bytes,
        }
    }
}

/// The service of [`BodyDigestLayer`].
#[derive(Debug, Clone)]
pub struct BodyDigestService<S> {
    inner: S,
    max_bytes: usize,
}

impl<S, B, ResBody> tower::Service<http::Request<B>> for BodyDigestService<S>
where
    S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    ResBody: Default + Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = BoxError;
    type Future = BoxFuture<Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let max = self.max_bytes;
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            let bytes: Bytes = match Limited::new(body, max).collect().await {
                Ok(c) => c.to_bytes(),
                Err(e) => {
                    let status = if e.is::<http_body_util::LengthLimitError>() {
                        tonic::Status::resource_exhausted(format!(
                            "request body larger than {max} bytes"
                        ))
                    } else {
                        tonic::Status::cancelled(format!("reading the request body: {e}"))
                    };
                    return Ok(status.into_http());
                }
            };
            parts.extensions.insert(BodyDigest::of(&bytes));
            let req = http::Request::from_parts(parts, tonic::body::Body::new(Full::new(bytes)));
            inner.call(req).await.map_err(Into::into)
        })
    }
}
