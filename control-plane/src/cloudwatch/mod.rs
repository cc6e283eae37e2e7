//! The CloudWatch endpoint (`monitoring`, API version 2010-08-01) on the
//! EC2 gateway's listener: GetMetricStatistics, GetMetricData and
//! ListMetrics for namespace `AWS/EC2`, in both protocols clients speak:
//!
//! - JSON (current botocore): `X-Amz-Target:
//!   GraniteServiceVersion20100801.<Action>`, a JSON body
//!   (`application/x-amz-json-1.0`), JSON answers and
//!   `{"__type", "message"}` errors with `x-amzn-query-error`;
//! - Query (older clients): a form with `Action=...&Version=2010-08-01`,
//!   XML answers and `<ErrorResponse>` errors.
//!
//! Pipeline ([`handle`]): `POST /` -> body (size limit) -> SigV4 with
//! credential scope service `monitoring` and the region -> per-account rate
//! limit -> protocol -> typed request ([`requests`]) -> action over the
//! domain ([`actions`]) -> answer. [`route_by_service`] sends requests whose
//! credential scope names `monitoring` (or that carry CloudWatch's JSON
//! target) here and everything else to the EC2 gateway.

pub mod actions;
pub mod error;
pub mod requests;

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::response::{IntoResponse, Response};
use axum::Router;
use http::{header, HeaderMap, HeaderValue, Method, Request as HttpRequest, StatusCode};
use time::OffsetDateTime;
use tower::ServiceExt as _;

use crate::domain::{Caller, Domain};
use crate::ec2::ratelimit::{RateLimit, RateLimiter};
use crate::ec2::sigv4;
use error::{CwCode, CwError};

/// The JSON protocol's target prefix.
pub const TARGET_PREFIX: &str = "GraniteServiceVersion20100801.";
/// The SigV4 service name.
pub const SERVICE: &str = "monitoring";
/// The API version of the Query protocol.
pub const VERSION: &str = "2010-08-01";

/// Shared state of the endpoint.
#[derive(Debug)]
pub struct CloudWatch {
    domain: Arc<Domain>,
    limiter: RateLimiter,
    max_body: usize,
}

impl CloudWatch {
    /// The endpoint over `domain`.
    pub fn new(domain: Arc<Domain>, max_body: usize, limit: RateLimit) -> Self {
        CloudWatch {
            domain,
            limiter: RateLimiter::new(limit),
            max_body,
        }
    }
}

/// The credential scope's service of a SigV4 Authorization header.
fn scope_service(headers: &HeaderMap) -> Option<String> {
    let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let cred = auth.split("Credential=").nth(1)?;
    let cred = cred.split([',', ' ']).next()?;
    cred.split('/').nth(3).map(str::to_string)
}

fn is_cloudwatch(headers: &HeaderMap) -> bool {
    let json_target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with(TARGET_PREFIX));
    json_target || scope_service(headers).as_deref() == Some(SERVICE)
}

/// One router for the listener: CloudWatch requests to `cw`, the rest to
/// `ec2`.
pub fn route_by_service(ec2: Router, cw: Arc<CloudWatch>) -> Router {
    Router::new().fallback(move |req: HttpRequest<Body>| {
        let ec2 = ec2.clone();
        let cw = cw.clone();
        async move {
            if is_cloudwatch(req.headers()) {
                handle(&cw, req, OffsetDateTime::now_utc()).await
            } else {
                match ec2.oneshot(req).await {
                    Ok(r) => r,
                    Err(never) => match never {},
                }
            }
        }
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Json,
    Query,
}

/// Runs the pipeline for one request at `now`.
pub async fn handle(cw: &CloudWatch, req: HttpRequest<Body>, now: OffsetDateTime) -> Response {
    let rid = crate::ec2::request_id();
    let (parts, body) = req.into_parts();
    let proto = if parts.headers.contains_key("x-amz-target") {
        Protocol::Json
    } else {
        Protocol::Query
    };
    match run(cw, &rid, &parts, body, now, proto).await {
        Ok((action, body)) => {
            tracing::debug!(request_id = %rid, action, "cloudwatch request served");
            answer(StatusCode::OK, proto, body, &rid, None)
        }
        Err(e) => {
            if e.code.status().is_server_error() {
                tracing::warn!(request_id = %rid, error = %e, "cloudwatch request failed");
            } else {
                tracing::debug!(request_id = %rid, error = %e, "cloudwatch request rejected");
            }
            let body = match proto {
                Protocol::Json => e.to_json(),
                Protocol::Query => e.to_xml(&rid),
            };
            answer(e.code.status(), proto, body, &rid, Some(&e))
        }
    }
}

fn answer(
    status: StatusCode,
    proto: Protocol,
    body: String,
    rid: &str,
    e: Option<&CwError>,
) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(match proto {
            Protocol::Json => "application/x-amz-json-1.0",
            Protocol::Query => "text/xml",
        }),
    );
    if let Ok(v) = HeaderValue::from_str(rid) {
        h.insert("x-amzn-requestid", v);
    }
    if let Some(v) = e.and_then(|e| HeaderValue::from_str(&e.query_error_header()).ok()) {
        h.insert("x-amzn-query-error", v);
    }
    r
}

async fn run(
    cw: &CloudWatch,
    rid: &str,
    parts: &http::request::Parts,
    body: Body,
    now: OffsetDateTime,
    proto: Protocol,
) -> Result<(&'static str, String), CwError> {
    if parts.method != Method::POST || parts.uri.path() != "/" {
        return Err(CwError::new(
            CwCode::InvalidAction,
            "The CloudWatch API is served on POST / only",
        ));
    }
    let body = axum::body::to_bytes(body, cw.max_body).await.map_err(|_| {
        CwError::new(
            CwCode::RequestEntityTooLarge,
            format!("The request body exceeds {} bytes", cw.max_body),
        )
    })?;
    let caller = authenticate(cw, parts, &body, now).await?;
    let account = caller.account()?.to_string();
    if !cw.limiter.try_acquire(&account) {
        return Err(CwError::new(CwCode::Throttling, "Rate exceeded"));
    }
    let (action, tree) = decode(parts, &body, proto)?;
    let d = &cw.domain;
    let (name, out) = match action.as_str() {
        "GetMetricStatistics" => (
            "GetMetricStatistics",
            actions::get_metric_statistics(
                d,
                &caller,
                requests::GetMetricStatistics::parse(&tree)?,
            )
            .await?,
        ),
        "GetMetricData" => (
            "GetMetricData",
            actions::get_metric_data(d, &caller, requests::GetMetricData::parse(&tree)?).await?,
        ),
        "ListMetrics" => (
            "ListMetrics",
            actions::list_metrics(d, &caller, requests::ListMetrics::parse(&tree)?).await?,
        ),
        other => {
            return Err(CwError::new(
                CwCode::InvalidAction,
                format!("The action {other} is not valid for this web service."),
            ))
        }
    };
    Ok((
        name,
        match proto {
            Protocol::Json => out.to_json(),
            Protocol::Query => out.to_xml(name, rid),
        },
    ))
}

/// The action and the request tree of either protocol.
fn decode(
    parts: &http::request::Parts,
    body: &Bytes,
    proto: Protocol,
) -> Result<(String, serde_json::Value), CwError> {
    match proto {
        Protocol::Json => {
            let target = parts
                .headers
                .get("x-amz-target")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let action = target.strip_prefix(TARGET_PREFIX).ok_or_else(|| {
                CwError::new(CwCode::InvalidAction, format!("Unknown target {target}"))
            })?;
            let tree = if body.is_empty() {
                serde_json::Value::Object(Default::default())
            } else {
                serde_json::from_slice(body).map_err(|e| {
                    CwError::new(
                        CwCode::SerializationException,
                        format!("The body is not valid JSON: {e}"),
                    )
                })?
            };
            Ok((action.to_string(), tree))
        }
        Protocol::Query => {
            let mut form = std::collections::BTreeMap::new();
            let query = parts.uri.query().unwrap_or("");
            for src in [query.as_bytes(), body.as_ref()] {
                for (k, v) in form_urlencoded::parse(src) {
                    form.insert(k.into_owned(), v.into_owned());
                }
            }
            let action = form
                .get("Action")
                .cloned()
                .ok_or_else(|| CwError::missing("Action"))?;
            if let Some(v) = form.get("Version").filter(|v| v.as_str() != VERSION) {
                return Err(CwError::invalid(format!(
                    "The API version {v} is not supported: use {VERSION}."
                )));
            }
            Ok((action, requests::tree_of_form(&form)?))
        }
    }
}

async fn authenticate(
    cw: &CloudWatch,
    parts: &http::request::Parts,
    body: &[u8],
    now: OffsetDateTime,
) -> Result<Caller, CwError> {
    let header = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| {
            CwError::new(
                CwCode::MissingAuthenticationToken,
                "Request is missing Authentication Token",
            )
        })?
        .to_str()
        .map_err(|_| {
            CwError::new(
                CwCode::IncompleteSignature,
                "Malformed Authorization header",
            )
        })?;
    let auth = sigv4::Authorization::parse(header).map_err(sig_error)?;
    let region = &cw.domain.config().region;
    if auth.service != SERVICE || &auth.region != region {
        return Err(CwError::new(
            CwCode::IncompleteSignature,
            format!(
                "Credential should be scoped to service '{SERVICE}' in region '{region}', not '{}' in '{}'",
                auth.service, auth.region
            ),
        ));
    }
    let unknown = || {
        CwError::new(
            CwCode::InvalidClientTokenId,
            "The security token included in the request is invalid.",
        )
    };
    let (caller, secret) = match cw.domain.access_key_secret(&auth.access_key_id).await {
        Ok((c @ (Caller::Tenant(_) | Caller::Operator), s)) => (c, s),
        Ok(_) => return Err(unknown()),
        Err(e)
            if e.kind() == crate::error::ErrorKind::Internal
                || e.kind() == crate::error::ErrorKind::Unavailable =>
        {
            return Err(e.into())
        }
        Err(_) => return Err(unknown()),
    };
    let req = sigv4::RequestParts {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        headers: &parts.headers,
        body,
    };
    sigv4::verify(&auth, &secret, &req, now).map_err(sig_error)?;
    Ok(caller)
}

fn sig_error(e: sigv4::SigV4Error) -> CwError {
    use sigv4::SigV4Error::*;
    match e {
        Missing => CwError::new(
            CwCode::MissingAuthenticationToken,
            "Request is missing Authentication Token",
        ),
        Malformed(why) => CwError::new(
            CwCode::IncompleteSignature,
            format!("Malformed signature: {why}"),
        ),
        Expired => CwError::new(CwCode::RequestExpired, "Request has expired"),
        Mismatch => CwError::new(
            CwCode::SignatureDoesNotMatch,
            "The request signature we calculated does not match the signature you provided.",
        ),
    }
}

#[cfg(test)]
mod tests;
