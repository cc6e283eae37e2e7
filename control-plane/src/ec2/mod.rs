//! The EC2 Query protocol gateway (API version 2016-11-15): SigV4
//! verification, form parsing, XML responses, mapped onto the domain layer.
//!
//! Request pipeline ([`handle`]): `POST /` only -> declared `Content-Length`
//! within the size limit -> form-encoded content type -> the `Authorization`
//! header, its region/service scope and the access key's secret
//! ([`Backend::credentials`]), all before any byte of the body is read, so
//! requests without a known key are never buffered -> body read with the
//! size limit (and, on the listener, a deadline) -> SigV4 ([`sigv4`]) over
//! it (the scope's service routes the request: `ec2` continues below,
//! `autoscaling` goes to [`Backend::dispatch_autoscaling`], see
//! [`autoscaling`]) -> per-account rate limit ([`ratelimit`]) -> form parsing into a typed
//! [`requests::Request`] -> the action ([`Backend::dispatch`], implemented over
//! the domain layer in [`actions`]) -> XML ([`xml`]). Every failure is an EC2
//! XML error ([`error`]) with a 4xx/5xx status; never an HTML page.
//!
//! The control plane serves [`router`] with [`listener::serve`], which owns
//! the connection limits and the header/body/idle timeouts.

pub mod actions;
pub mod attribute_requests;
pub mod autoscaling;
pub mod error;
pub mod image_requests;
pub mod listener;
pub mod query;
pub use crate::ratelimit;
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

    /// Records the first use of a mutating request's SigV4 signature
    /// (the optional replay cache, `[http] replay_cache`): `false` when it
    /// was used before. By default there is no cache: always `true`.
    fn first_use<'a>(&'a self, signature: &'a [u8]) -> BoxFuture<'a, Result<bool, Ec2Error>> {
        let _ = signature;
        Box::pin(async { Ok(true) })
    }

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
    /// How long reading a body may take (the listener enforces it on the
    /// socket; this bounds bodies that come another way).
    pub body_timeout: std::time::Duration,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            max_body: DEFAULT_MAX_BODY,
            rate_limit: RateLimit::default(),
            body_timeout: std::time::Duration::from_secs(30),
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
            let mut r = xml_response(e.status(), body);
            if matches!(
                e.code,
                ErrorCode::RequestEntityTooLarge | ErrorCode::RequestTimeout
            ) {
                // The rest of the body is never read: the connection cannot
                // carry another request.
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            r
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
    check_length(&parts.headers, gw.cfg.max_body)?;
    check_content_type(&parts.headers)?;
    let (auth, key, svc) = identify(gw, parts).await?;
    *service = svc;
    let body = read_body(body, gw.cfg.max_body, gw.cfg.body_timeout).await?;
    let req = sigv4::RequestParts {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        headers: &parts.headers,
        body: &body,
    };
    sigv4::verify(&auth, &key.secret, &req, now).map_err(sig_error)?;
    let account = key.account;
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
            refuse_replay(gw, action, &auth.signature).await?;
            let xml = gw.backend.dispatch(&account, rid, req).await?;
            Ok((action, xml))
        }
        sigv4::Service::AutoScaling => {
            let action = form.get("Action").map_or("", String::as_str);
            refuse_replay(gw, action, &auth.signature).await?;
            let xml = gw.backend.dispatch_autoscaling(&account, rid, form).await?;
            *seen = "autoscaling";
            Ok(("autoscaling", xml))
        }
    }
}

/// Whether `action` changes anything (everything but `Describe*`, `Get*`
/// and `List*`).
pub fn is_mutating(action: &str) -> bool {
    !["Describe", "Get", "List"]
        .iter()
        .any(|p| action.starts_with(p))
}

/// The replay cache: a mutating request whose signature was seen before is
/// refused (`AuthFailure`) before it runs.
async fn refuse_replay(gw: &Gateway, action: &str, signature: &[u8]) -> Result<(), Ec2Error> {
    if is_mutating(action) && !gw.backend.first_use(signature).await? {
        return Err(Ec2Error::new(
            ErrorCode::AuthFailure,
            "This signed request was already used: sign each request anew",
        ));
    }
    Ok(())
}

fn too_large(max: usize) -> Ec2Error {
    Ec2Error::new(
        ErrorCode::RequestEntityTooLarge,
        format!("The request body exceeds {max} bytes"),
    )
}

/// Refuses a declared body larger than `max` before reading any of it.
fn check_length(headers: &HeaderMap, max: usize) -> Result<(), Ec2Error> {
    let Some(len) = headers.get(header::CONTENT_LENGTH) else {
        return Ok(());
    };
    let len: u64 = len
        .to_str()
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Ec2Error::new(ErrorCode::InvalidRequest, "Invalid Content-Length"))?;
    if len > max as u64 {
        return Err(too_large(max));
    }
    Ok(())
}

/// Reads the body, at most `max` bytes (a streamed body is cut off there)
/// and within `timeout`.
async fn read_body(
    body: Body,
    max: usize,
    timeout: std::time::Duration,
) -> Result<Bytes, Ec2Error> {
    let timed_out = || {
        Ec2Error::new(
            ErrorCode::RequestTimeout,
            "The request body did not arrive in time",
        )
    };
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, max)).await {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(e)) => {
            let cause = e.into_inner();
            let mut src: Option<&(dyn std::error::Error + 'static)> = Some(cause.as_ref());
            while let Some(e) = src {
                if e.is::<listener::BodyTimeout>() {
                    return Err(timed_out());
                }
                src = e.source();
            }
            Err(too_large(max))
        }
        Err(_) => Err(timed_out()),
    }
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

/// Reads the `Authorization` header, checks its scope and looks up its
/// access key: everything about the caller that needs no body. The
/// signature itself is verified once the body is read.
async fn identify(
    gw: &Gateway,
    parts: &http::request::Parts,
) -> Result<(sigv4::Authorization, KeyInfo, sigv4::Service), Ec2Error> {
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
    Ok((auth, key, service))
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
            "Request has expired: its X-Amz-Date is more than 5 minutes from the server time",
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
