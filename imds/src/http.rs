//! The HTTP layer of the metadata service: a bounded HTTP/1.x request
//! parser, the IMDSv2 token store and [`handle_http`], which maps one request
//! to one response (pure apart from the token store; unit-tested path by
//! path).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Serialize;

use crate::metadata::{HttpTokens, InstanceMetadata, MetadataOptions};

/// Largest request (head and body) accepted; larger ones get 400.
pub const MAX_REQUEST: usize = 16 * 1024;
/// Most live tokens kept; issuing one more drops the one expiring first.
pub const MAX_TOKENS: usize = 256;
/// Token TTL bounds, as EC2 (`X-aws-ec2-metadata-token-ttl-seconds`).
pub const MIN_TTL: u32 = 1;
pub const MAX_TTL: u32 = 21_600;

const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
/// API versions listed at `/` and accepted in place of `latest` (cloud-init
/// asks for dated versions).
const VERSIONS: &[&str] = &[
    "1.0",
    "2009-04-04",
    "2016-09-02",
    "2018-09-24",
    "2021-03-23",
    "latest",
];

/// One parsed HTTP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// Request target without the query string.
    pub path: String,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Whether the connection stays open after the response.
    pub keep_alive: bool,
}

impl Request {
    /// A request with the given method, path and headers (tests, tools).
    pub fn new(method: &str, path: &str, headers: &[(&str, &str)]) -> Self {
        Self {
            method: method.to_owned(),
            path: path.to_owned(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), (*v).to_owned()))
                .collect(),
            body: Vec::new(),
            keep_alive: true,
        }
    }

    /// The first header named `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why bytes are not a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Over [`MAX_REQUEST`].
    TooLarge,
    /// Not HTTP/1.x as we accept it.
    Malformed,
}

/// Parses one request from the start of `buf`: `Ok(None)` if more bytes are
/// needed, else the request and how many bytes it used.
pub fn parse_request(buf: &[u8]) -> Result<Option<(Request, usize)>, ParseError> {
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() >= MAX_REQUEST {
            Err(ParseError::TooLarge)
        } else {
            Ok(None)
        };
    };
    if head_end + 4 > MAX_REQUEST {
        return Err(ParseError::TooLarge);
    }
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| ParseError::Malformed)?;
    let mut lines = head.split("\r\n");
    let request_line = lines.next().ok_or(ParseError::Malformed)?;
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::Malformed);
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(ParseError::Malformed);
    }
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => return Err(ParseError::Malformed),
    };
    if !target.starts_with('/') {
        return Err(ParseError::Malformed);
    }
    let path = target.split(['?', '#']).next().unwrap_or(target);
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line.split_once(':').ok_or(ParseError::Malformed)?;
        if name.is_empty() || name.bytes().any(|b| b.is_ascii_whitespace()) {
            return Err(ParseError::Malformed);
        }
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    let mut req = Request {
        method: method.to_owned(),
        path: path.to_owned(),
        headers,
        body: Vec::new(),
        keep_alive: !http10,
    };
    if req.header("transfer-encoding").is_some() {
        return Err(ParseError::Malformed);
    }
    let body_len = match req.header("content-length") {
        Some(v) => v.parse::<usize>().map_err(|_| ParseError::Malformed)?,
        None => 0,
    };
    let total = head_end + 4 + body_len;
    if total > MAX_REQUEST {
        return Err(ParseError::TooLarge);
    }
    if buf.len() < total {
        return Ok(None);
    }
    req.body = buf[head_end + 4..total].to_vec();
    match req
        .header("connection")
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("close") => req.keep_alive = false,
        Some("keep-alive") => req.keep_alive = true,
        _ => {}
    }
    Ok(Some((req, total)))
}

/// One HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    fn new(status: u16, content_type: &str, body: Vec<u8>) -> Self {
        Self {
            status,
            headers: vec![("Content-Type".to_owned(), content_type.to_owned())],
            body,
        }
    }

    fn text(status: u16, body: &str) -> Self {
        Self::new(status, "text/plain", body.as_bytes().to_vec())
    }

    fn error(status: u16) -> Self {
        Self::text(status, reason(status))
    }

    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The response on the wire (`head_only` for HEAD).
    pub fn to_bytes(&self, head_only: bool, keep_alive: bool) -> Vec<u8> {
        let mut out = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (k, v) in &self.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str(&format!(
            "Content-Length: {}\r\nServer: nubis-imds\r\nConnection: {}\r\n\r\n",
            self.body.len(),
            if keep_alive { "keep-alive" } else { "close" }
        ));
        let mut bytes = out.into_bytes();
        if !head_only {
            bytes.extend_from_slice(&self.body);
        }
        bytes
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        _ => "Error",
    }
}

/// IMDSv2 session tokens of one instance, bounded to [`MAX_TOKENS`].
#[derive(Debug, Default)]
pub struct TokenStore {
    tokens: HashMap<String, Instant>,
}

impl TokenStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Issues a token valid for `ttl` from `now`.
    pub fn issue(&mut self, ttl: Duration, now: Instant) -> String {
        self.tokens.retain(|_, exp| *exp > now);
        if self.tokens.len() >= MAX_TOKENS {
            if let Some(first) = self
                .tokens
                .iter()
                .min_by_key(|(_, exp)| **exp)
                .map(|(t, _)| t.clone())
            {
                self.tokens.remove(&first);
            }
        }
        let mut raw = [0u8; 32];
        if getrandom::fill(&mut raw).is_err() {
            // No entropy: refuse to mint a guessable token; an all-zero
            // token is never stored, so it never validates.
            return String::new();
        }
        let token = URL_SAFE_NO_PAD.encode(raw);
        self.tokens.insert(token.clone(), now + ttl);
        token
    }

    /// Whether `token` was issued and has not expired at `now`.
    pub fn valid(&self, token: &str, now: Instant) -> bool {
        self.tokens.get(token).is_some_and(|exp| *exp > now)
    }

    /// Number of tokens held (expired ones included until the next issue).
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

/// Answers one request for the instance `md` under `opts`.
pub fn handle_http(
    req: &Request,
    md: &InstanceMetadata,
    opts: &MetadataOptions,
    tokens: &mut TokenStore,
    now: Instant,
) -> Response {
    if !opts.http_endpoint_enabled {
        return Response::error(403);
    }
    let token_path = req.path == "/latest/api/token";
    match req.method.as_str() {
        "PUT" if token_path => put_token(req, tokens, now),
        "GET" | "HEAD" if !token_path => {
            match req.header(TOKEN_HEADER) {
                Some(t) if !tokens.valid(t, now) => return Response::error(401),
                None if opts.http_tokens == HttpTokens::Required => return Response::error(401),
                _ => {}
            }
            get(req, md, opts)
        }
        _ => {
            let mut r = Response::error(405);
            let allow = if token_path { "PUT" } else { "GET, HEAD" };
            r.headers.push(("Allow".to_owned(), allow.to_owned()));
            r
        }
    }
}

fn put_token(req: &Request, tokens: &mut TokenStore, now: Instant) -> Response {
    // As EC2: a token request that went through a proxy is refused.
    if req.header("x-forwarded-for").is_some() {
        return Response::error(403);
    }
    let Some(ttl) = req
        .header(TTL_HEADER)
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|t| (MIN_TTL..=MAX_TTL).contains(t))
    else {
        return Response::error(400);
    };
    let token = tokens.issue(Duration::from_secs(u64::from(ttl)), now);
    if token.is_empty() {
        return Response::error(403);
    }
    let mut r = Response::text(200, &token);
    r.headers.push((
        "X-aws-ec2-metadata-token-ttl-seconds".to_owned(),
        ttl.to_string(),
    ));
    r
}

/// A node of the metadata tree.
enum Node {
    Leaf(Vec<u8>, &'static str),
    /// (listed name, path segment, child); directories are listed with `/`.
    Dir(Vec<(String, String, Node)>),
}

fn leaf(s: &str) -> Node {
    Node::Leaf(s.as_bytes().to_vec(), "text/plain")
}

fn dir(entries: Vec<(&str, Node)>) -> Node {
    Node::Dir(
        entries
            .into_iter()
            .map(|(name, node)| {
                let listed = match node {
                    Node::Dir(_) => format!("{name}/"),
                    Node::Leaf(..) => name.to_owned(),
                };
                (listed, name.to_owned(), node)
            })
            .collect(),
    )
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IdentityDocument<'a> {
    account_id: &'a str,
    architecture: &'a str,
    availability_zone: &'a str,
    billing_products: Option<()>,
    devpay_product_codes: Option<()>,
    marketplace_product_codes: Option<()>,
    image_id: &'a str,
    instance_id: &'a str,
    instance_type: &'a str,
    kernel_id: Option<()>,
    pending_time: &'a str,
    private_ip: &'a str,
    ramdisk_id: Option<()>,
    region: &'a str,
    version: &'a str,
}

fn identity_document(md: &InstanceMetadata) -> Vec<u8> {
    let doc = IdentityDocument {
        account_id: &md.account_id,
        architecture: &md.architecture,
        availability_zone: &md.availability_zone,
        billing_products: None,
        devpay_product_codes: None,
        marketplace_product_codes: None,
        image_id: &md.ami_id,
        instance_id: &md.instance_id,
        instance_type: &md.instance_type,
        kernel_id: None,
        pending_time: &md.launch_time,
        private_ip: &md.local_ipv4,
        ramdisk_id: None,
        region: &md.region,
        version: "2017-09-30",
    };
    serde_json::to_vec_pretty(&doc).unwrap_or_default()
}

fn meta_data(md: &InstanceMetadata, opts: &MetadataOptions) -> Node {
    let groups = md.security_groups.join("\n");
    let mut iface = vec![
        ("device-number", leaf("0")),
        ("local-hostname", leaf(&md.hostname)),
        ("local-ipv4s", leaf(&md.local_ipv4)),
        ("mac", leaf(&md.mac)),
        ("owner-id", leaf(&md.account_id)),
    ];
    if let Some(p) = &md.public_ipv4 {
        iface.push(("public-ipv4s", leaf(p)));
    }
    iface.push(("security-groups", leaf(&groups)));
    let mut macs = vec![(md.mac.as_str(), dir(iface))];
    for x in &md.extra_interfaces {
        macs.push((
            x.mac.as_str(),
            dir(vec![
                ("device-number", leaf(&x.device_number.to_string())),
                ("interface-id", leaf(&x.interface_id)),
                ("local-ipv4s", leaf(&x.local_ipv4)),
                ("mac", leaf(&x.mac)),
                ("owner-id", leaf(&md.account_id)),
                ("security-group-ids", leaf(&x.security_group_ids.join("\n"))),
                ("subnet-id", leaf(&x.subnet_id)),
                ("subnet-ipv4-cidr-block", leaf(&x.subnet_cidr)),
                ("vpc-id", leaf(&x.vpc_id)),
            ]),
        ));
    }
    let macs = dir(macs);
    let mut entries = vec![
        ("ami-id", leaf(&md.ami_id)),
        ("ami-launch-index", leaf("0")),
        ("hostname", leaf(&md.hostname)),
        ("instance-action", leaf("none")),
        ("instance-id", leaf(&md.instance_id)),
        ("instance-life-cycle", leaf("on-demand")),
        ("instance-type", leaf(&md.instance_type)),
        ("local-hostname", leaf(&md.hostname)),
        ("local-ipv4", leaf(&md.local_ipv4)),
        ("mac", leaf(&md.mac)),
        (
            "network",
            dir(vec![("interfaces", dir(vec![("macs", macs)]))]),
        ),
        (
            "placement",
            dir(vec![
                ("availability-zone", leaf(&md.availability_zone)),
                ("region", leaf(&md.region)),
            ]),
        ),
    ];
    if let Some(p) = &md.public_ipv4 {
        entries.push(("public-ipv4", leaf(p)));
    }
    let keys = public_keys(md);
    if let Some(keys) = keys {
        entries.push(("public-keys", keys));
    }
    entries.push(("security-groups", leaf(&groups)));
    entries.push((
        "services",
        dir(vec![
            ("domain", leaf("amazonaws.com")),
            ("partition", leaf("aws")),
        ]),
    ));
    if opts.instance_metadata_tags {
        let tags = md
            .tags
            .iter()
            .map(|(k, v)| (k.clone(), k.clone(), leaf(v)))
            .collect();
        entries.push(("tags", dir(vec![("instance", Node::Dir(tags))])));
    }
    dir(entries)
}

/// `public-keys/` lists `N=name`; `public-keys/N/` lists `openssh-key`.
fn public_keys(md: &InstanceMetadata) -> Option<Node> {
    if md.public_keys.is_empty() {
        return None;
    }
    Some(Node::Dir(
        md.public_keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let key = dir(vec![(
                    "openssh-key",
                    leaf(&format!("{}\n", k.openssh.trim_end())),
                )]);
                (format!("{i}={}", k.name), i.to_string(), key)
            })
            .collect(),
    ))
}

fn version_root(md: &InstanceMetadata, opts: &MetadataOptions) -> Node {
    let mut entries = vec![
        (
            "dynamic".to_owned(),
            "dynamic".to_owned(),
            dir(vec![(
                "instance-identity",
                dir(vec![(
                    "document",
                    Node::Leaf(identity_document(md), "text/plain"),
                )]),
            )]),
        ),
        (
            "meta-data".to_owned(),
            "meta-data".to_owned(),
            meta_data(md, opts),
        ),
    ];
    if let Some(ud) = &md.user_data {
        entries.push((
            "user-data".to_owned(),
            "user-data".to_owned(),
            Node::Leaf(ud.clone(), "application/octet-stream"),
        ));
    }
    // EC2 lists the top level of a version without trailing slashes.
    Node::Dir(entries)
}

fn get(req: &Request, md: &InstanceMetadata, opts: &MetadataOptions) -> Response {
    let mut segments = req.path.split('/').filter(|s| !s.is_empty());
    let Some(version) = segments.next() else {
        return Response::text(200, &VERSIONS.join("\n"));
    };
    if !VERSIONS.contains(&version) {
        return Response::error(404);
    }
    let mut node = version_root(md, opts);
    for seg in segments {
        let Node::Dir(entries) = node else {
            return Response::error(404);
        };
        let Some((_, _, child)) = entries.into_iter().find(|(_, key, _)| key == seg) else {
            return Response::error(404);
        };
        node = child;
    }
    match node {
        Node::Leaf(body, ct) => Response::new(200, ct, body),
        Node::Dir(entries) => {
            let listing: Vec<&str> = entries.iter().map(|(l, _, _)| l.as_str()).collect();
            Response::text(200, &listing.join("\n"))
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::metadata::PublicKey;

    pub(crate) fn sample() -> InstanceMetadata {
        InstanceMetadata {
            instance_id: "i-0123456789abcdef0".into(),
            account_id: "123456789012".into(),
            ami_id: "ami-0abcdef1234567890".into(),
            instance_type: "t3.nano".into(),
            hostname: "ip-10-0-0-5.nubis.internal".into(),
            local_ipv4: "10.0.0.5".into(),
            public_ipv4: Some("198.51.100.7".into()),
            mac: "02:00:0a:00:00:05".into(),
            availability_zone: "nubis-1a".into(),
            region: "nubis-1".into(),
            security_groups: vec!["default".into(), "web".into()],
            launch_time: "2026-12-06T05:00:00Z".into(),
            user_data: Some(b"#cloud-config\n".to_vec()),
            public_keys: vec![PublicKey {
                name: "my-key".into(),
                openssh: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA my-key".into(),
            }],
            architecture: "x86_64".into(),
            tags: vec![("Name".into(), "web-1".into())],
            extra_interfaces: vec![crate::InterfaceMetadata {
                device_number: 1,
                interface_id: "eni-0123456789abcdef0".into(),
                mac: "02:4e:0a:00:02:14".into(),
                local_ipv4: "10.0.2.20".into(),
                security_group_ids: vec!["sg-1".into(), "sg-2".into()],
                subnet_id: "subnet-2".into(),
                subnet_cidr: "10.0.2.0/24".into(),
                vpc_id: "vpc-1".into(),
            }],
        }
    }

    fn get_ok(path: &str) -> String {
        let mut t = TokenStore::new();
        let r = handle_http(
            &Request::new("GET", path, &[]),
            &sample(),
            &MetadataOptions::default(),
            &mut t,
            Instant::now(),
        );
        assert_eq!(r.status, 200, "GET {path}");
        String::from_utf8(r.body).expect("utf-8")
    }

    fn status(req: &Request, opts: &MetadataOptions, t: &mut TokenStore, now: Instant) -> u16 {
        handle_http(req, &sample(), opts, t, now).status
    }

    #[test]
    fn every_leaf_path_answers_the_instances_own_values() {
        let cases = [
            ("/latest/meta-data/instance-id", "i-0123456789abcdef0"),
            ("/latest/meta-data/ami-id", "ami-0abcdef1234567890"),
            ("/latest/meta-data/instance-type", "t3.nano"),
            ("/latest/meta-data/hostname", "ip-10-0-0-5.nubis.internal"),
            (
                "/latest/meta-data/local-hostname",
                "ip-10-0-0-5.nubis.internal",
            ),
            ("/latest/meta-data/local-ipv4", "10.0.0.5"),
            ("/latest/meta-data/public-ipv4", "198.51.100.7"),
            ("/latest/meta-data/mac", "02:00:0a:00:00:05"),
            ("/latest/meta-data/placement/availability-zone", "nubis-1a"),
            ("/latest/meta-data/placement/region", "nubis-1"),
            ("/latest/meta-data/security-groups", "default\nweb"),
            (
                "/latest/meta-data/network/interfaces/macs/02:00:0a:00:00:05/local-ipv4s",
                "10.0.0.5",
            ),
            (
                "/latest/meta-data/network/interfaces/macs/02:00:0a:00:00:05/owner-id",
                "123456789012",
            ),
            (
                "/latest/meta-data/network/interfaces/macs/02:00:0a:00:00:05/public-ipv4s",
                "198.51.100.7",
            ),
            (
                "/latest/meta-data/public-keys/0/openssh-key",
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA my-key\n",
            ),
            ("/latest/user-data", "#cloud-config\n"),
            ("/2021-03-23/meta-data/instance-id", "i-0123456789abcdef0"),
        ];
        for (path, want) in cases {
            assert_eq!(get_ok(path), want, "{path}");
        }
    }

    #[test]
    fn directories_list_their_children_as_ec2() {
        assert!(get_ok("/").ends_with("\nlatest"));
        assert_eq!(get_ok("/latest/"), "dynamic\nmeta-data\nuser-data");
        let md = get_ok("/latest/meta-data/");
        for want in [
            "instance-id",
            "placement/",
            "network/",
            "public-keys/",
            "public-ipv4",
        ] {
            assert!(md.lines().any(|l| l == want), "{want} in {md}");
        }
        assert!(!md.contains("tags/"), "tags served only when enabled");
        assert_eq!(get_ok("/latest/meta-data"), md, "without trailing slash");
        assert_eq!(get_ok("/latest/meta-data/public-keys/"), "0=my-key");
        assert_eq!(get_ok("/latest/meta-data/public-keys/0/"), "openssh-key");
        assert_eq!(
            get_ok("/latest/meta-data/network/interfaces/macs/"),
            "02:00:0a:00:00:05/\n02:4e:0a:00:02:14/"
        );
        // A secondary interface, as EC2 lists it.
        let second = "/latest/meta-data/network/interfaces/macs/02:4e:0a:00:02:14/";
        for (leaf, want) in [
            ("device-number", "1"),
            ("interface-id", "eni-0123456789abcdef0"),
            ("local-ipv4s", "10.0.2.20"),
            ("mac", "02:4e:0a:00:02:14"),
            ("owner-id", "123456789012"),
            ("security-group-ids", "sg-1\nsg-2"),
            ("subnet-id", "subnet-2"),
            ("subnet-ipv4-cidr-block", "10.0.2.0/24"),
            ("vpc-id", "vpc-1"),
        ] {
            assert_eq!(get_ok(&format!("{second}{leaf}")), want, "{leaf}");
        }
        assert_eq!(
            get_ok("/latest/meta-data/network/interfaces/macs/02:00:0a:00:00:05/device-number"),
            "0"
        );
        assert_eq!(get_ok("/latest/dynamic/instance-identity/"), "document");
    }

    #[test]
    fn identity_document_is_ec2_shaped_json() {
        let doc: serde_json::Value =
            serde_json::from_str(&get_ok("/latest/dynamic/instance-identity/document"))
                .expect("json");
        assert_eq!(doc["instanceId"], "i-0123456789abcdef0");
        assert_eq!(doc["accountId"], "123456789012");
        assert_eq!(doc["imageId"], "ami-0abcdef1234567890");
        assert_eq!(doc["privateIp"], "10.0.0.5");
        assert_eq!(doc["region"], "nubis-1");
        assert_eq!(doc["availabilityZone"], "nubis-1a");
        assert_eq!(doc["pendingTime"], "2026-12-06T05:00:00Z");
        assert_eq!(doc["version"], "2017-09-30");
        assert!(doc["kernelId"].is_null());
    }

    #[test]
    fn unknown_paths_and_absent_items_are_404() {
        let mut t = TokenStore::new();
        let now = Instant::now();
        let o = MetadataOptions::default();
        for p in [
            "/latest/meta-data/nope",
            "/1999-01-01/meta-data/",
            "/latest/meta-data/instance-id/x",
        ] {
            assert_eq!(
                status(&Request::new("GET", p, &[]), &o, &mut t, now),
                404,
                "{p}"
            );
        }
        let mut md = sample();
        md.user_data = None;
        md.public_keys.clear();
        md.public_ipv4 = None;
        for p in [
            "/latest/user-data",
            "/latest/meta-data/public-keys/",
            "/latest/meta-data/public-ipv4",
        ] {
            let r = handle_http(&Request::new("GET", p, &[]), &md, &o, &mut t, now);
            assert_eq!(r.status, 404, "{p}");
        }
    }

    #[test]
    fn tags_are_served_only_when_enabled() {
        let mut t = TokenStore::new();
        let o = MetadataOptions {
            instance_metadata_tags: true,
            ..Default::default()
        };
        let r = handle_http(
            &Request::new("GET", "/latest/meta-data/tags/instance/Name", &[]),
            &sample(),
            &o,
            &mut t,
            Instant::now(),
        );
        assert_eq!((r.status, r.body.as_slice()), (200, &b"web-1"[..]));
    }

    #[test]
    fn token_flow_issues_checks_and_expires_tokens() {
        let mut t = TokenStore::new();
        let now = Instant::now();
        let req = MetadataOptions {
            http_tokens: HttpTokens::Required,
            ..Default::default()
        };
        let put = Request::new("PUT", "/latest/api/token", &[(TTL_HEADER, "2")]);
        let r = handle_http(&put, &sample(), &req, &mut t, now);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-aws-ec2-metadata-token-ttl-seconds"), Some("2"));
        let token = String::from_utf8(r.body).expect("token");
        assert!(token.len() >= 40);
        let path = "/latest/meta-data/instance-id";
        let with = Request::new("GET", path, &[(TOKEN_HEADER, &token)]);
        assert_eq!(status(&with, &req, &mut t, now), 200);
        // Required: missing token -> 401.
        assert_eq!(
            status(&Request::new("GET", path, &[]), &req, &mut t, now),
            401
        );
        // Wrong token -> 401, in either mode.
        let wrong = Request::new("GET", path, &[(TOKEN_HEADER, "AAAA")]);
        assert_eq!(status(&wrong, &req, &mut t, now), 401);
        assert_eq!(
            status(&wrong, &MetadataOptions::default(), &mut t, now),
            401
        );
        // Expired -> 401.
        let later = now + Duration::from_secs(2);
        assert_eq!(status(&with, &req, &mut t, later), 401);
        // Optional: no token is fine.
        let o = MetadataOptions::default();
        assert_eq!(
            status(&Request::new("GET", path, &[]), &o, &mut t, now),
            200
        );
    }

    #[test]
    fn token_requests_with_bad_ttl_or_proxy_header_are_refused() {
        let mut t = TokenStore::new();
        let now = Instant::now();
        let o = MetadataOptions::default();
        let p = "/latest/api/token";
        assert_eq!(status(&Request::new("PUT", p, &[]), &o, &mut t, now), 400);
        for ttl in ["0", "21601", "-1", "abc", ""] {
            let r = Request::new("PUT", p, &[(TTL_HEADER, ttl)]);
            assert_eq!(status(&r, &o, &mut t, now), 400, "ttl {ttl:?}");
        }
        for ttl in ["1", "21600"] {
            let r = Request::new("PUT", p, &[(TTL_HEADER, ttl)]);
            assert_eq!(status(&r, &o, &mut t, now), 200, "ttl {ttl:?}");
        }
        let fwd = Request::new(
            "PUT",
            p,
            &[(TTL_HEADER, "60"), ("X-Forwarded-For", "10.0.0.9")],
        );
        assert_eq!(status(&fwd, &o, &mut t, now), 403);
        assert_eq!(status(&Request::new("GET", p, &[]), &o, &mut t, now), 405);
        let post = Request::new("POST", "/latest/meta-data/", &[]);
        assert_eq!(status(&post, &o, &mut t, now), 405);
    }

    #[test]
    fn token_store_is_bounded() {
        let mut t = TokenStore::new();
        let now = Instant::now();
        let first = t.issue(Duration::from_secs(10), now);
        for i in 0..MAX_TOKENS + 10 {
            t.issue(Duration::from_secs(100 + i as u64), now);
        }
        assert_eq!(t.len(), MAX_TOKENS);
        assert!(
            !t.valid(&first, now),
            "the earliest-expiring token was dropped"
        );
    }

    #[test]
    fn disabled_endpoint_answers_nothing_useful() {
        let mut t = TokenStore::new();
        let o = MetadataOptions {
            http_endpoint_enabled: false,
            ..Default::default()
        };
        let r = Request::new("GET", "/latest/meta-data/instance-id", &[]);
        assert_eq!(status(&r, &o, &mut t, Instant::now()), 403);
    }

    #[test]
    fn user_data_of_16_kib_round_trips_byte_for_byte() {
        let mut md = sample();
        let data: Vec<u8> = (0..16 * 1024).map(|i| (i * 7 % 256) as u8).collect();
        md.user_data = Some(data.clone());
        let mut t = TokenStore::new();
        let r = handle_http(
            &Request::new("GET", "/latest/user-data", &[]),
            &md,
            &MetadataOptions::default(),
            &mut t,
            Instant::now(),
        );
        assert_eq!(r.body, data);
    }

    #[test]
    fn parser_handles_partial_pipelined_oversized_and_malformed_requests() {
        let raw = b"GET /latest/meta-data/?x=1 HTTP/1.1\r\nHost: a\r\nX-aws-ec2-metadata-token: T\r\n\r\nGET / HTTP/1.0\r\n\r\n";
        assert_eq!(parse_request(&raw[..20]), Ok(None));
        let (req, used) = parse_request(raw).expect("ok").expect("complete");
        assert_eq!(req.path, "/latest/meta-data/");
        assert_eq!(req.header("x-aws-ec2-metadata-token"), Some("T"));
        assert!(req.keep_alive);
        let (req2, _) = parse_request(&raw[used..]).expect("ok").expect("complete");
        assert_eq!(req2.path, "/");
        assert!(!req2.keep_alive, "HTTP/1.0 closes");
        let put = b"PUT /latest/api/token HTTP/1.1\r\nContent-Length: 3\r\n\r\nab";
        assert_eq!(parse_request(put), Ok(None));
        let big = vec![b'a'; MAX_REQUEST];
        assert_eq!(parse_request(&big), Err(ParseError::TooLarge));
        let huge_body = b"PUT / HTTP/1.1\r\nContent-Length: 99999\r\n\r\n";
        assert_eq!(parse_request(huge_body), Err(ParseError::TooLarge));
        for bad in [
            &b"GET /\r\n\r\n"[..],
            b"get / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/2\r\n\r\n",
            b"GET x HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nNoColon\r\n\r\n",
            b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
            b"GET /\xff HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(parse_request(bad), Err(ParseError::Malformed), "{bad:?}");
        }
    }
}
