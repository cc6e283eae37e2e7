//! AWS Signature Version 4 verification (header form, `AWS4-HMAC-SHA256`).
//!
//! Owns parsing the `Authorization` header, rebuilding the canonical request
//! from what was received (raw body, `Host` exactly as sent, the signed headers
//! only), the clock-skew check (5 minutes either way: a request signed
//! for the future cannot be replayed for longer than that) and the constant-time signature
//! comparison. Region and service come from the credential scope; the caller
//! decides whether that scope is acceptable and which secret the key maps to.

use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::{Digest, Sha256};
use time::{macros::format_description, OffsetDateTime, PrimitiveDateTime};

type HmacSha256 = Hmac<Sha256>;

/// The only algorithm accepted.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The largest accepted difference between the request's time and ours.
pub const MAX_SKEW: time::Duration = time::Duration::minutes(5);

/// Why a request's signature was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SigV4Error {
    /// No `Authorization` header.
    #[error("request is not signed: no Authorization header")]
    Missing,
    /// The header or the signed headers are not well formed.
    #[error("malformed authorization: {0}")]
    Malformed(&'static str),
    /// The request time is too far from ours.
    #[error("request timestamp is more than 15 minutes from the server time")]
    Expired,
    /// The signature does not match the request.
    #[error("the request signature we calculated does not match the signature you provided")]
    Mismatch,
}

/// The service a request is for, from its credential scope: the gateway
/// serves several AWS Query APIs on one listener and routes by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// `ec2`: the EC2 API (2016-11-15).
    Ec2,
    /// `autoscaling`: the Auto Scaling API (2011-01-01).
    AutoScaling,
}

impl Service {
    /// The service of a scope's service component (`None`: not served here).
    pub fn from_scope(s: &str) -> Option<Self> {
        match s {
            "ec2" => Some(Self::Ec2),
            "autoscaling" => Some(Self::AutoScaling),
            _ => None,
        }
    }
}

/// The parsed `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// Access key ID (the first credential component).
    pub access_key_id: String,
    /// Scope date, `YYYYMMDD`.
    pub date: String,
    /// Scope region, e.g. `us-east-1`.
    pub region: String,
    /// Scope service, e.g. `ec2`.
    pub service: String,
    /// Lower-cased signed header names, in the order given.
    pub signed_headers: Vec<String>,
    /// The 32-byte signature.
    pub signature: Vec<u8>,
}

impl Authorization {
    /// Parses `AWS4-HMAC-SHA256 Credential=K/D/R/S/aws4_request, SignedHeaders=a;b, Signature=hex`.
    pub fn parse(value: &str) -> Result<Self, SigV4Error> {
        let rest = value
            .strip_prefix(ALGORITHM)
            .ok_or(SigV4Error::Malformed("unsupported algorithm"))?;
        if !rest.starts_with(' ') {
            return Err(SigV4Error::Malformed("unsupported algorithm"));
        }
        let (mut credential, mut signed, mut signature) = (None, None, None);
        for part in rest.split(',') {
            let part = part.trim();
            let (k, v) = part
                .split_once('=')
                .ok_or(SigV4Error::Malformed("authorization component without '='"))?;
            let slot = match k {
                "Credential" => &mut credential,
                "SignedHeaders" => &mut signed,
                "Signature" => &mut signature,
                _ => return Err(SigV4Error::Malformed("unknown authorization component")),
            };
            if slot.replace(v).is_some() {
                return Err(SigV4Error::Malformed("repeated authorization component"));
            }
        }
        let credential = credential.ok_or(SigV4Error::Malformed("missing Credential"))?;
        let signed = signed.ok_or(SigV4Error::Malformed("missing SignedHeaders"))?;
        let signature = signature.ok_or(SigV4Error::Malformed("missing Signature"))?;

        let parts: Vec<&str> = credential.split('/').collect();
        let [key, date, region, service, terminator] = parts[..] else {
            return Err(SigV4Error::Malformed("credential must have 5 components"));
        };
        if terminator != "aws4_request" {
            return Err(SigV4Error::Malformed("credential must end in aws4_request"));
        }
        if key.is_empty() || region.is_empty() || service.is_empty() {
            return Err(SigV4Error::Malformed("empty credential component"));
        }
        if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SigV4Error::Malformed("credential date must be YYYYMMDD"));
        }
        let signed_headers: Vec<String> = signed.split(';').map(str::to_owned).collect();
        if signed_headers
            .iter()
            .any(|h| h.is_empty() || h.bytes().any(|b| b.is_ascii_uppercase()))
        {
            return Err(SigV4Error::Malformed(
                "signed headers must be lower-case names",
            ));
        }
        if !signed_headers.iter().any(|h| h == "host") {
            return Err(SigV4Error::Malformed("the host header must be signed"));
        }
        if signature.len() != 64 {
            return Err(SigV4Error::Malformed("signature must be 64 hex digits"));
        }
        let signature =
            hex::decode(signature).map_err(|_| SigV4Error::Malformed("signature is not hex"))?;
        Ok(Self {
            access_key_id: key.to_owned(),
            date: date.to_owned(),
            region: region.to_owned(),
            service: service.to_owned(),
            signed_headers,
            signature,
        })
    }

    /// `DATE/REGION/SERVICE/aws4_request`.
    pub fn scope(&self) -> String {
        format!(
            "{}/{}/{}/aws4_request",
            self.date, self.region, self.service
        )
    }
}

/// The parts of a received request that the signature covers.
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'a> {
    /// HTTP method, e.g. `POST`.
    pub method: &'a str,
    /// Path as received, e.g. `/`.
    pub path: &'a str,
    /// Raw query string (without `?`), possibly empty.
    pub query: &'a str,
    /// All received headers.
    pub headers: &'a HeaderMap,
    /// The raw body.
    pub body: &'a [u8],
}

/// Reads and parses `X-Amz-Date` (`YYYYMMDDTHHMMSSZ`).
pub fn request_time(headers: &HeaderMap) -> Result<(String, OffsetDateTime), SigV4Error> {
    let raw = headers
        .get("x-amz-date")
        .ok_or(SigV4Error::Malformed("missing X-Amz-Date header"))?
        .to_str()
        .map_err(|_| SigV4Error::Malformed("X-Amz-Date is not ASCII"))?;
    let fmt = format_description!("[year][month][day]T[hour][minute][second]Z");
    let t = PrimitiveDateTime::parse(raw, fmt)
        .map_err(|_| SigV4Error::Malformed("X-Amz-Date must be YYYYMMDDTHHMMSSZ"))?
        .assume_utc();
    Ok((raw.to_owned(), t))
}

/// Verifies `auth` over `req` with `secret`, at time `now`.
///
/// Checks, in order: the date header is present, signed and agrees with the
/// scope date; the clock skew; the signature. The caller has already
/// checked the scope's region and service and looked up `secret`.
pub fn verify(
    auth: &Authorization,
    secret: &str,
    req: &RequestParts<'_>,
    now: OffsetDateTime,
) -> Result<(), SigV4Error> {
    if !auth.signed_headers.iter().any(|h| h == "x-amz-date") {
        return Err(SigV4Error::Malformed(
            "the x-amz-date header must be signed",
        ));
    }
    let (amz_date, t) = request_time(req.headers)?;
    if !amz_date.starts_with(&auth.date) {
        return Err(SigV4Error::Malformed(
            "credential date does not match X-Amz-Date",
        ));
    }
    if (now - t).abs() > MAX_SKEW {
        return Err(SigV4Error::Expired);
    }
    let canonical = canonical_request(auth, req)?;
    let string_to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{}\n{}",
        auth.scope(),
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let key = signing_key(secret, &auth.date, &auth.region, &auth.service);
    let mut mac = hmac(&key);
    mac.update(string_to_sign.as_bytes());
    mac.verify_slice(&auth.signature)
        .map_err(|_| SigV4Error::Mismatch)
}

/// Computes the hex signature a client holding `secret` would send (used by
/// tests and tools that sign requests to the gateway).
pub fn sign(
    auth: &Authorization,
    secret: &str,
    req: &RequestParts<'_>,
) -> Result<String, SigV4Error> {
    let (amz_date, _) = request_time(req.headers)?;
    let canonical = canonical_request(auth, req)?;
    let string_to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{}\n{}",
        auth.scope(),
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let key = signing_key(secret, &auth.date, &auth.region, &auth.service);
    let mut mac = hmac(&key);
    mac.update(string_to_sign.as_bytes());
    Ok(hex::encode(mac.finalize().into_bytes()))
}

fn hmac(key: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length; this cannot fail.
    match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC-SHA256 takes keys of any length"),
    }
}

fn hmac_bytes(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = hmac(key);
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// The SigV4 signing key for one day, region and service.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let k = hmac_bytes(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k = hmac_bytes(&k, region.as_bytes());
    let k = hmac_bytes(&k, service.as_bytes());
    hmac_bytes(&k, b"aws4_request")
}

/// Builds the canonical request over the signed headers of `req`.
pub fn canonical_request(
    auth: &Authorization,
    req: &RequestParts<'_>,
) -> Result<String, SigV4Error> {
    let mut out = String::with_capacity(256);
    out.push_str(req.method);
    out.push('\n');
    out.push_str(&canonical_uri(req.path));
    out.push('\n');
    out.push_str(&canonical_query(req.query));
    out.push('\n');
    for name in &auth.signed_headers {
        let mut values = req.headers.get_all(name.as_str()).iter().peekable();
        if values.peek().is_none() {
            return Err(SigV4Error::Malformed("a signed header is missing"));
        }
        out.push_str(name);
        out.push(':');
        let mut first = true;
        for v in values {
            let v = std::str::from_utf8(v.as_bytes())
                .map_err(|_| SigV4Error::Malformed("a signed header is not UTF-8"))?;
            if !first {
                out.push(',');
            }
            first = false;
            // Trim and collapse runs of spaces, as the signer does.
            let mut words = v.split_whitespace();
            if let Some(w) = words.next() {
                out.push_str(w);
                for w in words {
                    out.push(' ');
                    out.push_str(w);
                }
            }
        }
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&auth.signed_headers.join(";"));
    out.push('\n');
    out.push_str(&hex::encode(Sha256::digest(req.body)));
    Ok(out)
}

const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn canonical_uri(path: &str) -> String {
    if path.is_empty() {
        return "/".to_owned();
    }
    // Non-S3 services: each segment URI-encoded (a received `%2F` is encoded again).
    path.split('/')
        .map(|seg| percent_encoding::utf8_percent_encode(seg, UNRESERVED).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

fn canonical_query(query: &str) -> String {
    if query.is_empty() {
        return String::new();
    }
    let mut pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| {
            (
                percent_encoding::utf8_percent_encode(&k, UNRESERVED).to_string(),
                percent_encoding::utf8_percent_encode(&v, UNRESERVED).to_string(),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use http::{HeaderName, HeaderValue};

    pub(crate) const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    /// A captured request: headers and raw body.
    pub(crate) struct Capture {
        pub headers: HeaderMap,
        pub body: Vec<u8>,
    }

    /// Parses one of the wire captures in `testdata/` (request part only).
    pub(crate) fn capture(text: &str) -> Capture {
        let mut lines = text.split("\n");
        let request_line = lines.next().unwrap();
        assert!(request_line.starts_with("POST / "));
        let mut headers = HeaderMap::new();
        for line in lines.by_ref() {
            if line.is_empty() {
                break;
            }
            let (k, v) = line.split_once(": ").unwrap();
            headers.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let body = lines.next().unwrap().as_bytes().to_vec();
        let len: usize = headers["content-length"].to_str().unwrap().parse().unwrap();
        assert_eq!(body.len(), len, "capture body length");
        Capture { headers, body }
    }

    pub(crate) const CAPTURES: [&str; 4] = [
        include_str!("testdata/cli_006_RunInstances.txt"),
        include_str!("testdata/cli_003_CreateKeyPair.txt"),
        include_str!("testdata/boto3_030_RunInstances.txt"),
        include_str!("testdata/boto3_033_GetConsoleOutput.txt"),
    ];

    fn parts<'a>(c: &'a Capture) -> RequestParts<'a> {
        RequestParts {
            method: "POST",
            path: "/",
            query: "",
            headers: &c.headers,
            body: &c.body,
        }
    }

    fn auth(c: &Capture) -> Authorization {
        Authorization::parse(c.headers["authorization"].to_str().unwrap()).unwrap()
    }

    fn at(c: &Capture) -> OffsetDateTime {
        request_time(&c.headers).unwrap().1
    }

    #[test]
    fn real_client_signatures_verify() {
        for text in CAPTURES {
            let c = capture(text);
            let a = auth(&c);
            assert_eq!(a.access_key_id, "AKIDEXAMPLE");
            assert_eq!(a.service, "ec2");
            verify(&a, SECRET, &parts(&c), at(&c)).unwrap();
            // Within the skew window on either side.
            verify(&a, SECRET, &parts(&c), at(&c) + time::Duration::minutes(4)).unwrap();
            verify(&a, SECRET, &parts(&c), at(&c) - time::Duration::minutes(4)).unwrap();
            assert_eq!(
                sign(&a, SECRET, &parts(&c)).unwrap(),
                hex::encode(&a.signature)
            );
        }
    }

    #[test]
    fn the_session_token_header_is_covered() {
        let c = capture(CAPTURES[2]);
        let a = auth(&c);
        assert_eq!(a.region, "eu-west-1");
        assert!(a
            .signed_headers
            .contains(&"x-amz-security-token".to_owned()));
        let mut changed = c.headers.clone();
        changed.insert("x-amz-security-token", HeaderValue::from_static("other"));
        let p = RequestParts {
            headers: &changed,
            ..parts(&c)
        };
        assert_eq!(verify(&a, SECRET, &p, at(&c)), Err(SigV4Error::Mismatch));
    }

    #[test]
    fn wrong_secret_body_or_host_does_not_verify() {
        let c = capture(CAPTURES[0]);
        let a = auth(&c);
        assert_eq!(
            verify(&a, "wrong", &parts(&c), at(&c)),
            Err(SigV4Error::Mismatch)
        );
        let mut body = c.body.clone();
        body[0] ^= 1;
        let p = RequestParts {
            body: &body,
            ..parts(&c)
        };
        assert_eq!(verify(&a, SECRET, &p, at(&c)), Err(SigV4Error::Mismatch));
        let mut h = c.headers.clone();
        h.insert("host", HeaderValue::from_static("127.0.0.1:5057"));
        let p = RequestParts {
            headers: &h,
            ..parts(&c)
        };
        assert_eq!(verify(&a, SECRET, &p, at(&c)), Err(SigV4Error::Mismatch));
        // An unsigned header may change freely.
        let mut h = c.headers.clone();
        h.insert("user-agent", HeaderValue::from_static("other"));
        let p = RequestParts {
            headers: &h,
            ..parts(&c)
        };
        verify(&a, SECRET, &p, at(&c)).unwrap();
    }

    #[test]
    fn clock_skew_beyond_5_minutes_is_expired() {
        let c = capture(CAPTURES[1]);
        let a = auth(&c);
        let late = at(&c) + time::Duration::minutes(5) + time::Duration::seconds(1);
        assert_eq!(
            verify(&a, SECRET, &parts(&c), late),
            Err(SigV4Error::Expired)
        );
        // Issue 16: a request dated 14 minutes ahead stayed replayable ~29 min.
        let early = at(&c) - time::Duration::minutes(14);
        assert_eq!(
            verify(&a, SECRET, &parts(&c), early),
            Err(SigV4Error::Expired)
        );
    }

    #[test]
    fn scope_date_must_match_the_request_date() {
        let c = capture(CAPTURES[1]);
        let mut a = auth(&c);
        a.date = "20261126".into();
        assert!(matches!(
            verify(&a, SECRET, &parts(&c), at(&c)),
            Err(SigV4Error::Malformed(_))
        ));
    }

    #[test]
    fn malformed_headers_are_rejected() {
        let good = "AWS4-HMAC-SHA256 Credential=AK/20261127/us-east-1/ec2/aws4_request, \
                    SignedHeaders=content-type;host;x-amz-date, Signature=";
        let sig = "0".repeat(64);
        Authorization::parse(&format!("{good}{sig}")).unwrap();
        for bad in [
            String::new(),
            "AWS4-HMAC-SHA1 Credential=x".into(),
            format!("AWS4-HMAC-SHA256Credential=AK/20261127/r/ec2/aws4_request, SignedHeaders=host, Signature={sig}"),
            format!("{good}{}", "0".repeat(63)),
            format!("{good}{}", "g".repeat(64)),
            format!("AWS4-HMAC-SHA256 Credential=AK/2026112/r/ec2/aws4_request, SignedHeaders=host, Signature={sig}"),
            format!("AWS4-HMAC-SHA256 Credential=AK/20261127/r/ec2/aws5_request, SignedHeaders=host, Signature={sig}"),
            format!("AWS4-HMAC-SHA256 Credential=AK/20261127/r/ec2/aws4_request, SignedHeaders=content-type, Signature={sig}"),
            format!("AWS4-HMAC-SHA256 Credential=AK/20261127/r/ec2/aws4_request, SignedHeaders=Host, Signature={sig}"),
            format!("AWS4-HMAC-SHA256 Credential=AK/20261127/r/ec2/aws4_request, Signature={sig}"),
            format!("{good}{sig}, Signature={sig}"),
        ] {
            assert!(
                matches!(Authorization::parse(&bad), Err(SigV4Error::Malformed(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn canonical_request_matches_the_documented_form() {
        let c = capture(CAPTURES[1]);
        let a = auth(&c);
        let canon = canonical_request(&a, &parts(&c)).unwrap();
        let body_hash = hex::encode(Sha256::digest(&c.body));
        assert_eq!(
            canon,
            format!(
                "POST\n/\n\ncontent-type:application/x-www-form-urlencoded; charset=utf-8\n\
                 host:127.0.0.1:5056\nx-amz-date:20261127T070032Z\n\n\
                 content-type;host;x-amz-date\n{body_hash}"
            )
        );
        assert_eq!(
            canonical_query("b=2&a=1&a=0&c=%2F x"),
            "a=0&a=1&b=2&c=%2F%20x"
        );
    }
}
