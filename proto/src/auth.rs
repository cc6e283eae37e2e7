//! Request signing for Nubis' gRPC APIs, shared by the CLI, the node agents
//! and the control plane.
//!
//! Every gRPC request carries four metadata headers:
//!
//! | header               | value                                                   |
//! |----------------------|---------------------------------------------------------|
//! | `x-nubis-access-key` | the access key id (tenant key, operator key, enrolment  |
//! |                      | token id or node credential id)                         |
//! | `x-nubis-date`       | request time, UTC, `YYYYMMDDTHHMMSSZ`                   |
//! | `x-nubis-nonce`      | 32 random hex digits, fresh per request                 |
//! | `x-nubis-signature`  | hex HMAC-SHA256(secret, string-to-sign)                 |
//!
//! The string to sign is
//! `NUBIS1-HMAC-SHA256\n<method path>\n<date>\n<nonce>` where the method path
//! is the gRPC path, e.g. `/nubis.compute.v1.Compute/RunInstances`. The body
//! is not signed (interceptors do not see it): integrity of the body comes
//! from the transport (mTLS in production, see docs/compute-api.md). The
//! verifier rejects dates more than [`MAX_SKEW`] away from its clock; it may
//! additionally remember nonces for that window to reject replays.

use std::time::{Duration, SystemTime};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Header naming the access key id.
pub const HEADER_ACCESS_KEY: &str = "x-nubis-access-key";
/// Header carrying the request time.
pub const HEADER_DATE: &str = "x-nubis-date";
/// Header carrying the per-request nonce.
pub const HEADER_NONCE: &str = "x-nubis-nonce";
/// Header carrying the signature.
pub const HEADER_SIGNATURE: &str = "x-nubis-signature";
/// The signature algorithm, first line of the string to sign.
pub const ALGORITHM: &str = "NUBIS1-HMAC-SHA256";
/// Largest accepted difference between the request date and the verifier's clock.
pub const MAX_SKEW: Duration = Duration::from_secs(15 * 60);

const DATE_FORMAT: &[time::format_description::FormatItem<'static>] =
    time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");

/// Why a request's signature was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// A signing header is absent.
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    /// A signing header is not well-formed.
    #[error("malformed header {0}")]
    MalformedHeader(&'static str),
    /// The request date is too far from the verifier's clock.
    #[error("request date outside the allowed 15-minute skew")]
    Skew,
    /// The signature does not match.
    #[error("signature does not match")]
    BadSignature,
    /// The nonce was seen before within the skew window (replay).
    #[error("nonce already used")]
    Replayed,
}

/// An access key id with its secret. `Debug` does not print the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The public key id.
    pub access_key_id: String,
    /// The shared secret.
    pub secret: String,
}

impl Credentials {
    /// Bundles a key id and its secret.
    pub fn new(access_key_id: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            access_key_id: access_key_id.into(),
            secret: secret.into(),
        }
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// The four signing headers of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    /// `x-nubis-access-key`.
    pub access_key_id: String,
    /// `x-nubis-date`.
    pub date: String,
    /// `x-nubis-nonce`.
    pub nonce: String,
    /// `x-nubis-signature`.
    pub signature: String,
}

/// Formats a time as `YYYYMMDDTHHMMSSZ`.
pub fn format_date(t: SystemTime) -> String {
    let odt = time::OffsetDateTime::from(t);
    odt.format(DATE_FORMAT)
        .unwrap_or_else(|_| "19700101T000000Z".to_string())
}

/// Parses `YYYYMMDDTHHMMSSZ`.
pub fn parse_date(s: &str) -> Option<SystemTime> {
    let pdt = time::PrimitiveDateTime::parse(s, DATE_FORMAT).ok()?;
    Some(pdt.assume_utc().into())
}

/// The string to sign for a method path, date and nonce.
pub fn string_to_sign(method_path: &str, date: &str, nonce: &str) -> String {
    format!("{ALGORITHM}\n{method_path}\n{date}\n{nonce}")
}

fn mac(secret: &str, method_path: &str, date: &str, nonce: &str) -> Hmac<Sha256> {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC-SHA256 takes keys of any length"),
    };
    mac.update(string_to_sign(method_path, date, nonce).as_bytes());
    mac
}

/// Hex HMAC-SHA256 signature.
pub fn signature(secret: &str, method_path: &str, date: &str, nonce: &str) -> String {
    hex::encode(
        mac(secret, method_path, date, nonce)
            .finalize()
            .into_bytes(),
    )
}

/// Signs a request to `method_path` at time `now` with a fresh random nonce.
pub fn sign(creds: &Credentials, method_path: &str, now: SystemTime) -> SignedHeaders {
    let nonce = hex::encode(rand::random::<[u8; 16]>());
    let date = format_date(now);
    let signature = signature(&creds.secret, method_path, &date, &nonce);
    SignedHeaders {
        access_key_id: creds.access_key_id.clone(),
        date,
        nonce,
        signature,
    }
}

impl SignedHeaders {
    /// Reads the headers through `get(name)` (works for tonic metadata and
    /// `http::HeaderMap`).
    pub fn from_lookup<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Result<Self, AuthError> {
        let field = |name: &'static str| -> Result<String, AuthError> {
            let v = get(name).ok_or(AuthError::MissingHeader(name))?;
            if v.is_empty() || v.len() > 256 || !v.is_ascii() {
                return Err(AuthError::MalformedHeader(name));
            }
            Ok(v.to_string())
        };
        Ok(Self {
            access_key_id: field(HEADER_ACCESS_KEY)?,
            date: field(HEADER_DATE)?,
            nonce: field(HEADER_NONCE)?,
            signature: field(HEADER_SIGNATURE)?,
        })
    }

    /// Reads the headers from tonic request metadata.
    pub fn from_metadata(md: &tonic::metadata::MetadataMap) -> Result<Self, AuthError> {
        Self::from_lookup(|name| md.get(name).and_then(|v| v.to_str().ok()))
    }

    /// Inserts the headers into tonic request metadata.
    pub fn apply(&self, md: &mut tonic::metadata::MetadataMap) -> Result<(), AuthError> {
        let put = |md: &mut tonic::metadata::MetadataMap,
                   name: &'static str,
                   v: &str|
         -> Result<(), AuthError> {
            let v = v.parse().map_err(|_| AuthError::MalformedHeader(name))?;
            md.insert(name, v);
            Ok(())
        };
        put(md, HEADER_ACCESS_KEY, &self.access_key_id)?;
        put(md, HEADER_DATE, &self.date)?;
        put(md, HEADER_NONCE, &self.nonce)?;
        put(md, HEADER_SIGNATURE, &self.signature)?;
        Ok(())
    }

    /// Checks date skew against `now` and the signature against `secret`
    /// (constant-time comparison).
    pub fn verify(
        &self,
        secret: &str,
        method_path: &str,
        now: SystemTime,
    ) -> Result<(), AuthError> {
        let when = parse_date(&self.date).ok_or(AuthError::MalformedHeader(HEADER_DATE))?;
        let skew = match now.duration_since(when) {
            Ok(d) => d,
            Err(e) => e.duration(),
        };
        if skew > MAX_SKEW {
            return Err(AuthError::Skew);
        }
        if self.nonce.len() < 16 || !self.nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(AuthError::MalformedHeader(HEADER_NONCE));
        }
        let sig = hex::decode(&self.signature)
            .map_err(|_| AuthError::MalformedHeader(HEADER_SIGNATURE))?;
        mac(secret, method_path, &self.date, &self.nonce)
            .verify_slice(&sig)
            .map_err(|_| AuthError::BadSignature)
    }
}

/// Key-id prefix of the control plane's one-time, per-host enrolment tokens
/// (`nubis admin nodes enrol`).
pub const HOST_TOKEN_PREFIX: &str = "NKET";

/// Hex SHA-256 of a host enrolment token's secret: what the control plane
/// stores, and the HMAC key `Register` is signed with (the secret itself
/// travels in `RegisterRequest.enrolment_secret`).
pub fn host_token_digest(secret: &str) -> String {
    use sha2::Digest;
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// The credentials an agent signs `Register` with for the enrolment token
/// `key_id`/`secret`, and the secret to send in the request (empty for a
/// shared configuration token, which signs with its secret directly).
pub fn enrolment_signing(key_id: &str, secret: &str) -> (Credentials, String) {
    if key_id.starts_with(HOST_TOKEN_PREFIX) {
        (
            Credentials::new(key_id, host_token_digest(secret)),
            secret.to_string(),
        )
    } else {
        (Credentials::new(key_id, secret), String::new())
    }
}

/// Constant-time equality of two byte strings (length is not secret).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A tonic client interceptor that signs every request.
///
/// ```ignore
/// let channel = nubis_proto::transport::connect("unix:/run/nubis/cp.sock").await?;
/// let client = ComputeClient::with_interceptor(channel, Signer::new(creds));
/// ```
#[derive(Debug, Clone)]
pub struct Signer {
    creds: Credentials,
}

impl Signer {
    /// A signer for these credentials.
    pub fn new(creds: Credentials) -> Self {
        Self { creds }
    }

    /// The credentials used.
    pub fn credentials(&self) -> &Credentials {
        &self.creds
    }
}

impl tonic::service::Interceptor for Signer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let path = match req.extensions().get::<tonic::GrpcMethod>() {
            Some(m) => format!("/{}/{}", m.service(), m.method()),
            None => {
                return Err(tonic::Status::internal(
                    "request has no gRPC method extension to sign",
                ))
            }
        };
        let headers = sign(&self.creds, &path, SystemTime::now());
        headers
            .apply(req.metadata_mut())
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "/nubis.compute.v1.Compute/RunInstances";

    #[test]
    fn sign_then_verify() {
        let creds = Credentials::new("NKIAEXAMPLE", "s3cret");
        let now = SystemTime::now();
        let h = sign(&creds, PATH, now);
        assert_eq!(h.verify("s3cret", PATH, now), Ok(()));
        assert_eq!(h.verify("other", PATH, now), Err(AuthError::BadSignature));
        assert_eq!(
            h.verify(
                "s3cret",
                "/nubis.compute.v1.Compute/TerminateInstances",
                now
            ),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn skew_is_limited() {
        let creds = Credentials::new("k", "s");
        let now = SystemTime::now();
        let h = sign(&creds, PATH, now - Duration::from_secs(16 * 60));
        assert_eq!(h.verify("s", PATH, now), Err(AuthError::Skew));
        let h = sign(&creds, PATH, now + Duration::from_secs(16 * 60));
        assert_eq!(h.verify("s", PATH, now), Err(AuthError::Skew));
        let h = sign(&creds, PATH, now - Duration::from_secs(14 * 60));
        assert_eq!(h.verify("s", PATH, now), Ok(()));
    }

    #[test]
    fn date_round_trip() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        let s = format_date(t);
        assert_eq!(s.len(), 16);
        assert_eq!(parse_date(&s), Some(t));
        assert_eq!(parse_date("2026-11-27"), None);
    }

    #[test]
    fn metadata_round_trip_and_missing_header() {
        let creds = Credentials::new("k", "s");
        let h = sign(&creds, PATH, SystemTime::now());
        let mut md = tonic::metadata::MetadataMap::new();
        h.apply(&mut md).unwrap();
        assert_eq!(SignedHeaders::from_metadata(&md), Ok(h));
        md.remove(HEADER_NONCE);
        assert_eq!(
            SignedHeaders::from_metadata(&md),
            Err(AuthError::MissingHeader(HEADER_NONCE))
        );
    }

    #[test]
    fn debug_redacts_secret() {
        let c = Credentials::new("k", "topsecret");
        assert!(!format!("{c:?}").contains("topsecret"));
    }
}
