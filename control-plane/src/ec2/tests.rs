//! Pipeline tests: a tiny in-process backend, real signed requests.

use super::*;
use crate::ec2::xml::XmlWriter;

pub(crate) const KEY: &str = "AKIDEXAMPLE";
pub(crate) const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const REGION: &str = "nubis-test-1";

struct EchoBackend;

impl Backend for EchoBackend {
    fn region(&self) -> &str {
        REGION
    }

    fn credentials<'a>(
        &'a self,
        access_key_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<KeyInfo>, Ec2Error>> {
        Box::pin(async move {
            Ok((access_key_id == KEY).then(|| KeyInfo {
                account: "111111111111".into(),
                secret: SECRET.into(),
            }))
        })
    }

    fn dispatch<'a>(
        &'a self,
        account: &'a str,
        request_id: &'a str,
        req: Request,
    ) -> BoxFuture<'a, Result<String, Ec2Error>> {
        Box::pin(async move {
            if req.dry_run() {
                return Err(Ec2Error::dry_run());
            }
            let mut w = XmlWriter::response(req.action(), request_id);
            w.leaf("account", account);
            Ok(w.finish())
        })
    }
}

/// Signs `body` with the example key, as botocore does.
pub(crate) fn signed(
    body: &str,
    secret: &str,
    region: &str,
    t: OffsetDateTime,
) -> HttpRequest<Body> {
    signed_as(KEY, secret, region, body, t)
}

/// Signs `body` as botocore does, for host 127.0.0.1:8773 at `t`.
pub(crate) fn signed_as(
    key: &str,
    secret: &str,
    region: &str,
    body: &str,
    t: OffsetDateTime,
) -> HttpRequest<Body> {
    signed_for(key, secret, region, "ec2", body, t)
}

/// Signs `body` for `service` (the credential scope's service).
pub(crate) fn signed_for(
    key: &str,
    secret: &str,
    region: &str,
    service: &str,
    body: &str,
    t: OffsetDateTime,
) -> HttpRequest<Body> {
    let amz_date = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_static("127.0.0.1:8773"));
    headers.insert(
        "content-type",
        HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8"),
    );
    headers.insert("x-amz-date", HeaderValue::from_str(&amz_date).unwrap());
    let auth = sigv4::Authorization {
        access_key_id: key.into(),
        date: amz_date[..8].into(),
        region: region.into(),
        service: service.into(),
        signed_headers: vec!["content-type".into(), "host".into(), "x-amz-date".into()],
        signature: vec![],
    };
    let sig = sigv4::sign(
        &auth,
        secret,
        &sigv4::RequestParts {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            body: body.as_bytes(),
        },
    )
    .unwrap();
    let mut b = HttpRequest::builder().method("POST").uri("/");
    for (k, v) in &headers {
        b = b.header(k, v);
    }
    b.header(
        "authorization",
        format!(
            "AWS4-HMAC-SHA256 Credential={key}/{}/{region}/{service}/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, Signature={sig}",
            &amz_date[..8]
        ),
    )
    .header("content-length", body.len())
    .body(Body::from(body.to_owned()))
    .unwrap()
}

/// A gateway over `backend` (tests call [`handle`] on it directly).
pub(crate) fn gateway_over(backend: Arc<dyn Backend>, cfg: GatewayConfig) -> Gateway {
    Gateway {
        limiter: RateLimiter::new(cfg.rate_limit),
        backend,
        cfg,
    }
}

fn gateway(cfg: GatewayConfig) -> Gateway {
    Gateway {
        backend: Arc::new(EchoBackend),
        limiter: RateLimiter::new(cfg.rate_limit),
        cfg,
    }
}

async fn call(gw: &Gateway, req: HttpRequest<Body>) -> (StatusCode, String) {
    let r = handle(gw, req, OffsetDateTime::now_utc()).await;
    let status = r.status();
    assert_eq!(r.headers()["content-type"], "text/xml;charset=UTF-8");
    let body = axum::body::to_bytes(r.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

fn code_of(xml: &str) -> &str {
    let start = xml.find("<Code>").expect("an error document") + 6;
    let end = xml.find("</Code>").unwrap();
    assert!(xml.starts_with("<?xml"));
    assert!(xml.contains("<RequestID>"));
    &xml[start..end]
}

const DESCRIBE: &str = "Action=DescribeRegions&Version=2016-11-15";

#[tokio::test]
async fn a_signed_request_reaches_the_backend_with_its_account() {
    let gw = gateway(GatewayConfig::default());
    let (status, xml) = call(
        &gw,
        signed(DESCRIBE, SECRET, REGION, OffsetDateTime::now_utc()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{xml}");
    assert!(xml
        .contains("<DescribeRegionsResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">"));
    assert!(xml.contains("<account>111111111111</account>"));
}

#[tokio::test]
async fn requests_are_routed_by_the_scope_service() {
    let gw = gateway(GatewayConfig::default());
    let now = OffsetDateTime::now_utc();
    // `autoscaling` goes to the Auto Scaling dispatcher (not offered by this
    // backend), whose errors are Auto Scaling error documents.
    let body = "Action=DescribeAutoScalingGroups&Version=2011-01-01";
    let (s, xml) = call(
        &gw,
        signed_for(KEY, SECRET, REGION, "autoscaling", body, now),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{xml}");
    assert!(
        xml.contains("<ErrorResponse xmlns=\"https://autoscaling.amazonaws.com/doc/2011-01-01/\"><Error><Type>Sender</Type><Code>InvalidAction</Code>"),
        "{xml}"
    );
    assert!(xml.contains("<RequestId>"), "{xml}");
    // A signature for another service's scope is still checked.
    let (s, xml) = call(
        &gw,
        signed_for(KEY, "bad", REGION, "autoscaling", body, now),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{xml}");
    assert!(xml.contains("<Code>SignatureDoesNotMatch</Code>"), "{xml}");
    // A service not served here.
    let (s, xml) = call(&gw, signed_for(KEY, SECRET, REGION, "s3", body, now)).await;
    assert_eq!((s.as_u16(), code_of(&xml)), (401, "AuthFailure"), "{xml}");
    // `ec2` still goes to the EC2 dispatcher.
    let (s, xml) = call(&gw, signed_for(KEY, SECRET, REGION, "ec2", DESCRIBE, now)).await;
    assert_eq!(s, StatusCode::OK, "{xml}");
}

#[tokio::test]
async fn authentication_failures_have_ec2_codes() {
    let gw = gateway(GatewayConfig::default());
    let now = OffsetDateTime::now_utc();
    let cases = [
        (
            signed(DESCRIBE, "wrong-secret", REGION, now),
            403,
            "SignatureDoesNotMatch",
        ),
        (
            signed(DESCRIBE, SECRET, "us-east-1", now),
            401,
            "AuthFailure",
        ),
        (
            signed(DESCRIBE, SECRET, REGION, now - time::Duration::minutes(20)),
            400,
            "RequestExpired",
        ),
    ];
    for (req, status, code) in cases {
        let (s, xml) = call(&gw, req).await;
        assert_eq!((s.as_u16(), code_of(&xml)), (status, code), "{xml}");
    }
    // Unknown key.
    let mut req = signed(DESCRIBE, SECRET, REGION, now);
    let h = req.headers()["authorization"]
        .to_str()
        .unwrap()
        .replace(KEY, "AKIDOTHER");
    req.headers_mut()
        .insert("authorization", HeaderValue::from_str(&h).unwrap());
    let (s, xml) = call(&gw, req).await;
    assert_eq!((s.as_u16(), code_of(&xml)), (401, "AuthFailure"));
    // Unsigned.
    let mut req = signed(DESCRIBE, SECRET, REGION, now);
    req.headers_mut().remove("authorization");
    let (s, xml) = call(&gw, req).await;
    assert_eq!(
        (s.as_u16(), code_of(&xml)),
        (401, "MissingAuthenticationToken")
    );
    // Garbage.
    let mut req = signed(DESCRIBE, SECRET, REGION, now);
    req.headers_mut()
        .insert("authorization", HeaderValue::from_static("Basic Zm9v"));
    let (s, xml) = call(&gw, req).await;
    assert_eq!((s.as_u16(), code_of(&xml)), (401, "AuthFailure"));
}

#[tokio::test]
async fn bad_requests_are_xml_errors_not_500s() {
    let gw = gateway(GatewayConfig {
        max_body: 1024,
        ..GatewayConfig::default()
    });
    let now = OffsetDateTime::now_utc();
    let get = HttpRequest::builder()
        .uri("/index.html")
        .body(Body::empty())
        .unwrap();
    let (s, xml) = call(&gw, get).await;
    assert_eq!((s.as_u16(), code_of(&xml)), (400, "InvalidRequest"));

    let big = format!("{DESCRIBE}&X={}", "a".repeat(2000));
    let (s, xml) = call(&gw, signed(&big, SECRET, REGION, now)).await;
    assert_eq!((s.as_u16(), code_of(&xml)), (413, "RequestEntityTooLarge"));

    let mut req = signed(DESCRIBE, SECRET, REGION, now);
    req.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    let (s, xml) = call(&gw, req).await;
    assert_eq!((s.as_u16(), code_of(&xml)), (400, "InvalidRequest"));

    for (body, code) in [
        ("Action=Nope&Version=2016-11-15", "InvalidAction"),
        ("Version=2016-11-15", "MissingAction"),
        (
            "Action=DescribeRegions&Version=2016-11-15&Bogus=1",
            "UnknownParameter",
        ),
        (
            "Action=TerminateInstances&Version=2016-11-15&InstanceId.1=x",
            "InvalidInstanceID.Malformed",
        ),
        (
            "Action=GetConsoleOutput&Version=2016-11-15",
            "MissingParameter",
        ),
        (
            "Action=DescribeRegions&Version=2016-11-15&DryRun=maybe",
            "InvalidParameterValue",
        ),
    ] {
        let (s, xml) = call(&gw, signed(body, SECRET, REGION, now)).await;
        assert_eq!((s.as_u16(), code_of(&xml)), (400, code), "{body}");
    }
    let (s, xml) = call(
        &gw,
        signed(
            "Action=DescribeRegions&Version=2016-11-15&DryRun=true",
            SECRET,
            REGION,
            now,
        ),
    )
    .await;
    assert_eq!((s.as_u16(), code_of(&xml)), (412, "DryRunOperation"));
}

#[tokio::test]
async fn the_rate_limit_answers_request_limit_exceeded() {
    let gw = gateway(GatewayConfig {
        rate_limit: RateLimit {
            rate: 0.001,
            burst: 3.0,
        },
        ..GatewayConfig::default()
    });
    let now = OffsetDateTime::now_utc();
    for _ in 0..3 {
        let (s, _) = call(&gw, signed(DESCRIBE, SECRET, REGION, now)).await;
        assert_eq!(s, StatusCode::OK);
    }
    let (s, xml) = call(&gw, signed(DESCRIBE, SECRET, REGION, now)).await;
    assert_eq!((s.as_u16(), code_of(&xml)), (503, "RequestLimitExceeded"));
}

#[tokio::test]
async fn the_router_serves_over_http() {
    let app = router_with(Arc::new(EchoBackend), GatewayConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(out.contains("<Code>InvalidRequest</Code>"));
    server.abort();
}

#[test]
fn request_ids_look_like_uuids() {
    let a = request_id();
    assert_eq!(a.len(), 36);
    assert_eq!(&a[14..15], "4");
    assert_ne!(a, request_id());
}
