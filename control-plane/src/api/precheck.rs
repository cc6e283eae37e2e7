//! The gRPC listeners' look at a request's signing headers before its body
//! is read ([`HeaderCheckLayer`], outside
//! [`nubis_proto::auth::BodyDigestLayer`]): a request without well-formed
//! signing headers, dated more than 5 minutes off, or signed with an unknown
//! access key (or one of a disabled account) is answered
//! `UNAUTHENTICATED` (`AuthFailure`) at once, so that only callers holding a
//! known key id can make the listener buffer a body (at most one message,
//! [`super::MAX_BODY`]). The full check (signature over the body digest,
//! rate limit, nonce) stays in [`super::Edge::call`]; this one only refuses
//! earlier what it would refuse anyway, with the same status.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use nubis_proto::auth::SignedHeaders;

use crate::domain::Domain;
use crate::error::Error;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Checks signing headers before the body is read; see the module docs.
#[derive(Debug, Clone)]
pub struct HeaderCheckLayer {
    domain: Arc<Domain>,
}

impl HeaderCheckLayer {
    /// Checks keys against `domain`'s access keys and tokens.
    pub fn new(domain: Arc<Domain>) -> Self {
        Self { domain }
    }
}

impl<S> tower::Layer<S> for HeaderCheckLayer {
    type Service = HeaderCheck<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HeaderCheck {
            inner,
            domain: self.domain.clone(),
        }
    }
}

/// The service of [`HeaderCheckLayer`].
#[derive(Debug, Clone)]
pub struct HeaderCheck<S> {
    inner: S,
    domain: Arc<Domain>,
}

impl<S, B, ResBody> tower::Service<http::Request<B>> for HeaderCheck<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let domain = self.domain.clone();
        Box::pin(async move {
            if let Err(e) = check(&domain, req.headers()).await {
                return Ok(super::to_status(e).into_http());
            }
            inner.call(req).await.map_err(Into::into)
        })
    }
}

/// What can be refused from the headers alone.
async fn check(domain: &Domain, headers: &http::HeaderMap) -> Result<(), Error> {
    let h = SignedHeaders::from_lookup(|n| headers.get(n).and_then(|v| v.to_str().ok()))
        .map_err(Error::AuthFailure)?;
    h.check_date(SystemTime::now())
        .map_err(Error::AuthFailure)?;
    domain.access_key_secret(&h.access_key_id).await?;
    Ok(())
}
