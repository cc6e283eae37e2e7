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
//! `NUBIS2-HMAC-SHA256\n<method path>\n<date>\n<nonce>\n<body digest>` where
//! the method path is the gRPC path, e.g.
//! `/nubis.compute.v1.Compute/RunInstances`, and the body digest is the hex
//! SHA-256 of the whole HTTP/2 request body: the gRPC length-prefixed frame
//! of the prost-encoded request message ([`grpc_body_digest`]). Signed
//! headers replayed with another body therefore fail.
//!
//! Interceptors do not see the body, so signing happens one level lower:
//! clients wrap their channel in [`Signed`] (a tower service that buffers
//! the request body, digests it and adds the headers), and servers put
//! [`BodyDigestLayer`] in front of their routes, which buffers the body (up
//! to a limit), digests it and hands the [`BodyDigest`] to the handlers in
//! the request's extensions. Every Nubis request message is a single message
//! (no client streaming), so buffering it is what decoding does anyway.
//!
//! The verifier rejects dates more than [`MAX_SKEW`] away from its clock;
//! the control plane also remembers nonces for that window (in etcd) to
//! reject replays.

mod service;

pub use service::{BodyDigestLayer, BodyDigestService, Signed, SignedChannel};

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
pub const ALGORITHM: &str = "NUBIS2-HMAC-SHA256";
/// Largest accepted difference between the request date and the verifier's
/// clock (as EC2's SigV4 in the control plane's gateway): a signed request
/// is usable for 10 minutes at most.
pub const MAX_SKEW: Duration = Duration::from_secs(5 * 60);

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
    #[error("request date more than 5 minutes from the server's clock")]
    Skew,
    /// The signature does not match.
    #[error("signature does not match")]
    BadSignature,
    /// The nonce was seen before within the skew window (replay).
    #[error("nonce already used")]
    Replayed,
    /// The server did not digest the request body ([`BodyDigestLayer`] is
    /// missing in front of the service): nothing can be verified.
    #[error("request body digest unavailable")]
    NoBodyDigest,
}

/// SHA-256 of a request's HTTP body, as signed. Servers find it in the
/// request extensions (put there by [`BodyDigestLayer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyDigest(pub [u8; 32]);

impl BodyDigest {
    /// The digest of `body` (the raw HTTP request body).
    pub fn of(body: &[u8]) -> Self {
        use sha2::Digest;
        Self(Sha256::digest(body).into())
    }

    /// Lower-case hex, as in the string to sign.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// The body digest of a unary gRPC request carrying `msg` uncompressed:
/// the SHA-256 of its length-prefixed frame (flag byte 0, big-endian u32
/// length, prost encoding). What [`Signed`] signs for that request.
pub fn grpc_body_digest<M: prost::Message>(msg: &M) -> BodyDigest {
    let body = msg.encode_to_vec();
    let mut framed = Vec::with_capacity(body.len() + 5);
    framed.push(0);
    framed.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes());
    framed.extend_from_slice(&body);
    BodyDigest::of(&framed)
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

/// The string to sign for a method path, date, nonce and body digest.
pub fn string_to_sign(method_path: &str, date: &str, nonce: &str, body: &BodyDigest) -> String {
    format!(
        "{ALGORITHM}\n{method_path}\n{date}\n{nonce}\n{}",
        body.hex()
    )
}

fn mac(
    secret: &str,
    method_path: &str,
    date: &str,
    nonce: &str,
    body: &BodyDigest,
) -> Hmac<Sha256> {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC-SHA256 takes keys of any length"),
    };
    mac.update(string_to_sign(method_path, date, nonce, body).as_bytes());
    mac
}

/// Hex HMAC-SHA256 signature.
pub fn signature(
    secret: &str,
    method_path: &str,
    date: &str,
    nonce: &str,
    body: &BodyDigest,
) -> String {
    hex::encode(
        mac(secret, method_path, date, nonce, body)
            .finalize()
            .into_bytes(),
    )
}

/// Signs a request to `method_path` whose body has digest `body`, at time
/// `now`, with a fresh random nonce.
pub fn sign(
    creds: &Credentials,
    method_path: &str,
    body: &BodyDigest,
    now: SystemTime,
) -> SignedHeaders {
    let nonce = hex::encode(rand::random::<[u8; 16]>());
    let date = format_date(now);
    let signature = signature(&creds.secret, method_path, &date, &nonce, body);
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

    /// Inserts the headers into an HTTP header map (what [`Signed`] does).
    pub fn apply_http(&self, headers: &mut http::HeaderMap) -> Result<(), AuthError> {
        for (name, v) in [
            (HEADER_ACCESS_KEY, &self.access_key_id),
            (HEADER_DATE, &self.date),
            (HEADER_NONCE, &self.nonce),
            (HEADER_SIGNATURE, &self.signature),
        ] {
            let v = http::HeaderValue::from_str(v).map_err(|_| AuthError::MalformedHeader(name))?;
            headers.insert(http::HeaderName::from_static(name), v);
        }
        Ok(())
    }

    /// Checks that the date is well-formed and at most [`MAX_SKEW`] from
    /// `now`, either way (servers do this before reading a body, too).
    pub fn check_date(&self, now: SystemTime) -> Result<(), AuthError> {
        let when = parse_date(&self.date).ok_or(AuthError::MalformedHeader(HEADER_DATE))?;
        let skew = match now.duration_since(when) {
            Ok(d) => d,
            Err(e) => e.duration(),
        };
        if skew > MAX_SKEW {
            return Err(AuthError::Skew);
        }
        Ok(())
    }

    /// Checks date skew against `now` and the signature against `secret`
    /// for a request to `method_path` whose body has digest `body`
    /// (constant-time comparison).
    pub fn verify(
        &self,
        secret: &str,
        method_path: &str,
        body: &BodyDigest,
        now: SystemTime,
    ) -> Result<(), AuthError> {
        self.check_date(now)?;
        if self.nonce.len() < 16 || !self.nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(AuthError::MalformedHeader(HEADER_NONCE));
        }
        let sig = hex::decode(&self.signature)
            .map_err(|_| AuthError::MalformedHeader(HEADER_SIGNATURE))?;
        mac(secret, method_path, &self.date, &self.nonce, body)
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

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "/nubis.compute.v1.Compute/RunInstances";

    fn body() -> BodyDigest {
        BodyDigest::of(b"\0\0\0\0\x02\x08\x01")
    }

    #[test]
    fn sign_then_verify() {
        let creds = Credentials::new("NKIAEXAMPLE", "s3cret");
        let now = SystemTime::now();
        let h = sign(&creds, PATH, &body(), now);
        assert_eq!(h.verify("s3cret", PATH, &body(), now), Ok(()));
        assert_eq!(
            h.verify("other", PATH, &body(), now),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            h.verify(
                "s3cret",
                "/nubis.compute.v1.Compute/TerminateInstances",
                &body(),
                now
            ),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn the_signature_covers_the_body() {
        let creds = Credentials::new("k", "s");
        let now = SystemTime::now();
        let h = sign(&creds, PATH, &body(), now);
        let other = BodyDigest::of(b"\0\0\0\0\x02\x08\x02");
        assert_eq!(
            h.verify("s", PATH, &other, now),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn grpc_body_digest_is_the_digest_of_the_frame() {
        // A message with field 1 (varint) = 1 encodes as 08 01.
        let msg = prost_types::Duration {
            seconds: 1,
            nanos: 0,
        };
        assert_eq!(
            grpc_body_digest(&msg),
            BodyDigest::of(b"\0\0\0\0\x02\x08\x01")
        );
    }

    #[test]
    fn skew_is_limited_to_5_minutes() {
        let creds = Credentials::new("k", "s");
        let now = SystemTime::now();
        for (offset, ok) in [
            (-6 * 60, false),
            (6 * 60, false),
            (-4 * 60, true),
            (4 * 60, true),
        ] {
            let at = if offset < 0 {
                now - Duration::from_secs((-offset) as u64)
            } else {
                now + Duration::from_secs(offset as u64)
            };
            let h = sign(&creds, PATH, &body(), at);
            let want = if ok { Ok(()) } else { Err(AuthError::Skew) };
            assert_eq!(h.verify("s", PATH, &body(), now), want, "offset {offset} s");
        }
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
        let h = sign(&creds, PATH, &body(), SystemTime::now());
        let mut md = tonic::metadata::MetadataMap::new();
        h.apply(&mut md).unwrap();
        assert_eq!(SignedHeaders::from_metadata(&md), Ok(h.clone()));
        let mut hm = http::HeaderMap::new();
        h.apply_http(&mut hm).unwrap();
        assert_eq!(
            SignedHeaders::from_metadata(&tonic::metadata::MetadataMap::from_headers(hm)),
            Ok(h)
        );
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
