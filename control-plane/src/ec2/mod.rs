//! The EC2 Query protocol gateway (API version 2016-11-15): SigV4
//! verification, form parsing, XML responses, mapped onto the domain layer.
//!
//! Request pipeline ([`handle`]): `POST /` only -> body read with a size limit
//! -> form-encoded content type -> SigV4 ([`sigv4`]) with the secret of the
//! access key ([`Backend::credentials`]) and the region/service of the scope
//! (the service routes the request: `ec2` continues below, `autoscaling`
//! goes to [`Backend::dispatch_autoscaling`], see [`autoscaling`])
//! -> per-account rate limit ([`ratelimit`]) -> form parsing into a typed
//! [`requests::Request`] -> the action ([`Backend::dispatch`], implemented over
//! the domain layer in [`actions`]) -> XML ([`xml`]). Every failure is an EC2
//! XML error ([`error`]) with a 4xx/5xx status; never an HTML page.
//!
//! The control plane mounts [`router`] on its HTTP listener.

pub mod actions;
pub mod attribute_requests;
pub mod autoscaling;
pub mod error;
pub mod image_requests;
pub mod query;
pub mod ratelimit;
pub mod requests;
pub mod run_options;
pub mod sigv4;
pub mod xml;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Router;
use http::{header, HeaderMap, HeaderValue, Method, Request as HttpRequest, StatusCode};
use time::OffsetDateTime;

use error::{Ec2Error, ErrorCode};
use ratelimit::{RateLimit, RateLimiter};
use requests::Request;

pub use actions::{router, router_with_config, DomainBackend};

/// Largest accepted request body (UserData is at most 16 KiB, ~22 KiB in base64).
pub const DEFAULT_MAX_BODY: usize = 256 * 1024;

/// Bodies declared larger than the limit but at most this size are read and
/// discarded before the `RequestEntityTooLarge` answer (see `read_body`).
const DRAIN_LIMIT: usize = 4 * 1024 * 1024;

/// A boxed future, for the object-safe [`Backend`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An authenticated caller's access key.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// The account the key belongs to (12 digits).
    pub account: String,
    /// The secret access key.
    pub secret: String,
}

impl std::fmt::Debug for KeyInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyInfo")
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

/// What the gateway needs from the layer below it.
pub trait Backend: Send + Sync + 'static {
    /// The region this endpoint serves (the credential scope must name it).
    fn region(&self) -> &str;

    /// The account and secret of `access_key_id`; `None` when unknown.
    fn credentials<'a>(
        &'a self,
        access_key_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<KeyInfo>, Ec2Error>>;

    /// Performs `req` for `account` and returns the XML response document.
    fn dispatch<'a>(
        &'a self,
        account: &'a str,
        request_id: &'a str,
        req: Request,
    ) -> BoxFuture<'a, Result<String, Ec2Error>>;

    /// Performs an Auto Scaling API request (its form, `Action` included)
    /// for `account` and returns the XML response document. By default the
    /// service is not offered.
    fn dispatch_autoscaling<'a>(
        &'a self,
        account: &'a str,
        request_id: &'a str,
        form: std::collections::BTreeMap<String, String>,
    ) -> BoxFuture<'a, Result<String, Ec2Error>> {
        let _ = (account, request_id, form);
        Box::pin(async {
            Err(Ec2Error::new(
                ErrorCode::InvalidAction,
                "The Auto Scaling API is not served here",
            ))
        })
    }
}

/// Gateway settings.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayConfig {
    /// Largest request body in bytes.
    pub max_body: usize,
    /// Per-account rate limit.
    pub rate_limit: RateLimit,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            max_body: DEFAULT_MAX_BODY,
            rate_limit: RateLimit::default(),
        }
    }
}

/// Shared state of the gateway's handlers.
pub struct Gateway {
    backend: Arc<dyn Backend>,
    limiter: RateLimiter,
    cfg: GatewayConfig,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("region", &self.backend.region())
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// The gateway as an axum router over `backend`: every method and path is
/// answered (anything but `POST /` with an EC2 XML error).
pub fn router_with(backend: Arc<dyn Backend>, cfg: GatewayConfig) -> Router {
    let state = Arc::new(Gateway {
        backend,
        limiter: RateLimiter::new(cfg.rate_limit),
        cfg,
    });
    Router::new().fallback(entry).with_state(state)
}

async fn entry(State(gw): State<Arc<Gateway>>, req: HttpRequest<Body>) -> Response {
    handle(&gw, req, OffsetDateTime::now_utc()).await
}

/// A fresh request ID (UUID v4 form, as EC2's).
pub fn request_id() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Runs the whole pipeline for one HTTP request at time `now`.
pub async fn handle(gw: &Gateway, req: HttpRequest<Body>, now: OffsetDateTime) -> Response {
    let rid = request_id();
    let (parts, body) = req.into_parts();
    let started = std::time::Instant::now();
    let mut seen = "";
    let mut service = sigv4::Service::Ec2;
    let result = run(gw, &rid, &parts, body, now, &mut seen, &mut service).await;
    let code = result.as_ref().map_or_else(|e| e.code.as_str(), |_| "ok");
    crate::metrics::global().ec2(seen, code, started.elapsed());
    match result {
        Ok((action, xml)) => {
            tracing::debug!(request_id = %rid, action, "ec2 request served");
            xml_response(StatusCode::OK, xml)
        }
        Err(e) => {
            if e.status().is_server_error() {
                tracing::warn!(request_id = %rid, code = e.code.as_str(), message = %e.message, "ec2 request failed");
            } else {
                tracing::debug!(request_id = %rid, code = e.code.as_str(), message = %e.message, "ec2 request rejected");
            }
            let body = match service {
                sigv4::Service::Ec2 => e.to_xml(&rid),
                sigv4::Service::AutoScaling => autoscaling::error_xml(&e, &rid),
            };
            xml_response(e.status(), body)
        }
    }
}

fn xml_response(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/xml;charset=UTF-8"),
    );
    r
}

async fn run(
    gw: &Gateway,
    rid: &str,
    parts: &http::request::Parts,
    body: Body,
    now: OffsetDateTime,
    seen: &mut &'static str,
    service: &mut sigv4::Service,
) -> Result<(&'static str, String), Ec2Error> {
    if parts.method != Method::POST || parts.uri.path() != "/" {
        return Err(Ec2Error::new(
            ErrorCode::InvalidRequest,
            "The EC2 Query API is served on POST / only",
        ));
    }
    let body = read_body(&parts.headers, body, gw.cfg.max_body).await?;
    check_content_type(&parts.headers)?;
    let (account, svc) = authenticate(gw, parts, &body, now).await?;
    *service = svc;
    if !gw.limiter.try_acquire(&account) {
        return Err(Ec2Error::new(
            ErrorCode::RequestLimitExceeded,
            "Request limit exceeded.",
        ));
    }
    let form = query::parse_form(&body)?;
    match svc {
        sigv4::Service::Ec2 => {
            let req = Request::parse(form)?;
            let action = req.action();
            *seen = action;
            let xml = gw.backend.dispatch(&account, rid, req).await?;
            Ok((action, xml))
        }
        sigv4::Service::AutoScaling => {
            let xml = gw.backend.dispatch_autoscaling(&account, rid, form).await?;
            *seen = "autoscaling";
            Ok(("autoscaling", xml))
        }
    }
}

async fn read_body(headers: &HeaderMap, body: Body, max: usize) -> Result<Bytes, Ec2Error> {
    let too_large = || {
        Ec2Error::new(
            ErrorCode::RequestEntityTooLarge,
            format!("The request body exceeds {max} bytes"),
        )
    };
    if let Some(len) = headers.get(header::CONTENT_LENGTH) {
        let len: usize = len
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Ec2Error::new(ErrorCode::InvalidRequest, "Invalid Content-Length"))?;
        if len > max {
            // Most HTTP clients send the whole body before reading the answer;
            // closing on unread data resets the connection and they never see
            // the 413. Read and discard a moderately oversized body first.
            if len <= DRAIN_LIMIT {
                let _ = axum::body::to_bytes(body, DRAIN_LIMIT).await;
            }
            return Err(too_large());
        }
    }
    axum::body::to_bytes(body, max)
        .await
        .map_err(|_| too_large())
}

fn check_content_type(headers: &HeaderMap) -> Result<(), Ec2Error> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim();
    if mime.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        Ok(())
    } else {
        Err(Ec2Error::new(
            ErrorCode::InvalidRequest,
            "Content-Type must be application/x-www-form-urlencoded",
        ))
    }
}

/// Verifies the request's signature and returns the caller's account and
/// the service its credential scope names.
async fn authenticate(
    gw: &Gateway,
    parts: &http::request::Parts,
    body: &[u8],
    now: OffsetDateTime,
) -> Result<(String, sigv4::Service), Ec2Error> {
    let header = match parts.headers.get(header::AUTHORIZATION) {
        None => {
            return Err(Ec2Error::new(
                ErrorCode::MissingAuthenticationToken,
                "Request is missing Authentication Token",
            ))
        }
        Some(h) => h
            .to_str()
            .map_err(|_| Ec2Error::new(ErrorCode::AuthFailure, "Malformed Authorization header"))?,
    };
    let auth = sigv4::Authorization::parse(header).map_err(sig_error)?;
    let Some(service) = sigv4::Service::from_scope(&auth.service) else {
        return Err(Ec2Error::new(
            ErrorCode::AuthFailure,
            format!(
                "Credential should be scoped to the correct service: 'ec2' or 'autoscaling', not '{}'",
                auth.service
            ),
        ));
    };
    let region = gw.backend.region();
    if auth.region != region {
        return Err(Ec2Error::new(
            ErrorCode::AuthFailure,
            format!(
                "Credential should be scoped to a valid region: '{region}', not '{}'",
                auth.region
            ),
        ));
    }
    let key = gw
        .backend
        .credentials(&auth.access_key_id)
        .await?
        .ok_or_else(|| {
            Ec2Error::new(
                ErrorCode::AuthFailure,
                "AWS was not able to validate the provided access credentials",
            )
        })?;
    let req = sigv4::RequestParts {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        headers: &parts.headers,
        body,
    };
    sigv4::verify(&auth, &key.secret, &req, now).map_err(sig_error)?;
    Ok((key.account, service))
}

fn sig_error(e: sigv4::SigV4Error) -> Ec2Error {
    use sigv4::SigV4Error::*;
    match e {
        Missing => Ec2Error::new(
            ErrorCode::MissingAuthenticationToken,
            "Request is missing Authentication Token",
        ),
        Malformed(why) => Ec2Error::new(
            ErrorCode::AuthFailure,
            format!("Malformed signature: {why}"),
        ),
        Expired => Ec2Error::new(
            ErrorCode::RequestExpired,
            "Request has expired: its X-Amz-Date is more than 15 minutes from the server time",
        ),
        Mismatch => Ec2Error::new(
            ErrorCode::SignatureDoesNotMatch,
            "The request signature we calculated does not match the signature you provided. \
             Check your AWS Secret Access Key and signing method.",
        ),
    }
}

#[cfg(test)]
mod tests;
