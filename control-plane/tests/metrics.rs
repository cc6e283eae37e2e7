//! `/metrics` of a replica against a real etcd with a simulated agent: the
//! OpenMetrics text parses (every sample belongs to a declared family, label
//! sets are well formed, values are numbers, `# EOF` ends it) and shows
//! gRPC calls per method, EC2 requests, etcd transactions, placements,
//! instances by state and launch durations.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, HashMap};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn http(addr: std::net::SocketAddr, request: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

/// One sample: family name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// A strict parser of the OpenMetrics text format (the subset a
/// prometheus-client registry writes): `# HELP`/`# TYPE` before a family's
/// samples, `name{k="v",...} value`, `# EOF` last. Panics on anything else.
fn parse(text: &str) -> Vec<Sample> {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut out = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "ends with # EOF");
    for line in &lines[..lines.len() - 1] {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').unwrap();
            assert!(["counter", "gauge", "histogram"].contains(&ty), "type {ty}");
            types.insert(name.to_string(), ty.to_string());
            continue;
        }
        if line.starts_with("# HELP ") || line.starts_with("# UNIT ") {
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment {line}");
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value in {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.strip_suffix('}').unwrap()),
            None => (series, ""),
        };
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':'),
            "name {name}"
        );
        let family = ["_total", "_bucket", "_count", "_sum", "_created"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| types.contains_key(*f)))
            .unwrap_or(name);
        assert!(types.contains_key(family), "{name} has no # TYPE");
        let mut map = BTreeMap::new();
        let mut rest = labels;
        while !rest.is_empty() {
            let (k, r) = rest.split_once("=\"").unwrap();
            let end = r.find('"').unwrap();
            map.insert(k.to_string(), r[..end].to_string());
            rest = r[end + 1..].strip_prefix(',').unwrap_or(&r[end + 1..]);
        }
        out.push((name.to_string(), map, value));
    }
    out
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .filter(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.2)
        .reduce(|a, b| a + b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_count_requests_placements_and_instances() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let mut cfg = config(&etcd);
    cfg.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
    cfg.http.listen = Some("127.0.0.1:0".parse().unwrap());
    let cp = start(cfg).await;
    let ep = endpoint(&cp);
    let image = hello_image(&ep).await;
    let _agent = nubis_control_plane::sim::SimAgent::start(
        &ep,
        enrol(),
        nubis_control_plane::sim::SimOptions::new("h1", ZONES[0], 8, 8192),
    )
    .await
    .unwrap();
    let mut c = compute(&ep, tenant(&ep, "m").await).await;
    let r = c
        .run_instances(run_req(&image, 2))
        .await
        .unwrap()
        .into_inner();
    for i in &r.reservation.unwrap().instances {
        wait_state(&c, &i.instance_id, "running").await;
    }
    // An unsigned EC2 request: refused, and counted.
    let gw = cp.http_addr.unwrap();
    let body = "Action=DescribeInstances&Version=2016-11-15";
    let (st, _) = http(
        gw,
        &format!(
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    assert!(st >= 400);

    let addr = cp.metrics_addr.unwrap();
    let (st, text) = http(
        addr,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(st, 200);
    let s = parse(&text);
    let run = value(
        &s,
        "nubis_cp_grpc_requests_total",
        &[("method", "RunInstances"), ("code", "Ok")],
    );
    assert!(run >= Some(1.0), "{text}");
    assert!(
        value(
            &s,
            "nubis_cp_grpc_request_duration_seconds_count",
            &[("service", "Compute"), ("method", "RunInstances")]
        ) >= Some(1.0)
    );
    assert!(
        value(
            &s,
            "nubis_cp_ec2_requests_total",
            &[
                ("action", "unknown"),
                ("code", "MissingAuthenticationToken")
            ]
        ) >= Some(1.0),
        "{text}"
    );
    assert!(value(&s, "nubis_cp_etcd_txns_total", &[("outcome", "committed")]) >= Some(3.0));
    assert!(value(&s, "nubis_cp_etcd_txn_duration_seconds_count", &[]) >= Some(3.0));
    assert!(value(&s, "nubis_cp_placements_total", &[]) >= Some(2.0));
    assert!(
        value(&s, "nubis_cp_instances", &[("state", "running")]) >= Some(2.0),
        "{text}"
    );
    assert!(value(&s, "nubis_cp_launch_to_running_seconds_count", &[]) >= Some(2.0));
    // Histogram buckets are cumulative and end at +Inf = count.
    let inf = value(
        &s,
        "nubis_cp_etcd_txn_duration_seconds_bucket",
        &[("le", "+Inf")],
    );
    assert_eq!(
        inf,
        value(&s, "nubis_cp_etcd_txn_duration_seconds_count", &[])
    );

    let (st, _) = http(
        addr,
        "GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(st, 404);
}
