//! End to end: per-instance metrics through the real stack. A hello guest in
//! CPU-burning mode (`nubis.burn=1`) and an idle one run under real
//! `nubis-vmm`s; the agent samples their vCPU threads every 10 s; the
//! CloudWatch endpoint (JSON and Query protocols, SigV4 scope `monitoring`)
//! reports the burner near 100 % within 30 s of its ready line and the idle
//! one near 0 %; the agent's Prometheus `/metrics` shows the same series.

use std::io::{Read, Write};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue};
use nubis_control_plane::ec2::sigv4;
use nubis_tests::cluster::ops::{hello_variant_images, ids_of};
use nubis_tests::cluster::{self, Cluster, ClusterSpec, Creds};
use serde_json::{json, Value};

/// Lowest CPUUtilization accepted for the burner: it burns one vCPU at CPL3
/// without exits, so its thread takes a whole core on a quiet host (99.8 %
/// measured); CPUUtilization reports the CPU time the vCPU really got, so on
/// an overcommitted host (`load` runnable threads on `ncpu` cores: about
/// ncpu/load of a core each) the bound is half of that fair share.
fn burn_min() -> f64 {
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let load: f64 = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(1.0);
    (50.0 * ncpu / load.max(1.0)).min(50.0)
}
/// Highest accepted for the idle guest (halted in `hlt`).
const IDLE_MAX: f64 = 10.0;

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// POSTs a CloudWatch request signed for service `monitoring`; returns
/// (status, body).
fn cloudwatch(c: &Cluster, creds: &Creds, target: Option<&str>, body: &str) -> (u16, String) {
    let hostport = c
        .ec2_endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let t = time::OffsetDateTime::now_utc();
    let amz_date = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    let ct = if target.is_some() {
        "application/x-amz-json-1.0"
    } else {
        "application/x-www-form-urlencoded; charset=utf-8"
    };
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static(ct));
    headers.insert("host", HeaderValue::from_str(&hostport).expect("host"));
    headers.insert(
        "x-amz-date",
        HeaderValue::from_str(&amz_date).expect("date"),
    );
    let mut names = vec!["content-type", "host", "x-amz-date"];
    if let Some(t) = target {
        headers.insert("x-amz-target", HeaderValue::from_str(t).expect("target"));
        names.push("x-amz-target");
    }
    let auth = sigv4::Authorization {
        access_key_id: creds.access_key_id.clone(),
        date: amz_date[..8].into(),
        region: c.region.clone(),
        service: "monitoring".into(),
        signed_headers: names.iter().map(|s| s.to_string()).collect(),
        signature: vec![],
    };
    let parts = sigv4::RequestParts {
        method: "POST",
        path: "/",
        query: "",
        headers: &headers,
        body: body.as_bytes(),
    };
    let sig = sigv4::sign(&auth, &creds.secret, &parts).expect("sign");
    let mut req = format!(
        "POST / HTTP/1.1\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in &headers {
        req.push_str(&format!("{k}: {}\r\n", v.to_str().expect("ascii")));
    }
    req.push_str(&format!(
        "authorization: AWS4-HMAC-SHA256 Credential={}/{}/{}/monitoring/aws4_request, SignedHeaders={}, Signature={sig}\r\n\r\n{body}",
        creds.access_key_id,
        &amz_date[..8],
        c.region,
        names.join(";")
    ));
    let mut s = std::net::TcpStream::connect(&hostport).expect("connect to the gateway");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    s.write_all(req.as_bytes()).expect("send");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    let raw = String::from_utf8_lossy(&raw).to_string();
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    // Chunked bodies: good enough to join the chunks for these small answers.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((len, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
            if n == 0 || tail.len() < n {
                break;
            }
            out.push_str(&tail[..n]);
            rest = tail[n..].trim_start_matches("\r\n");
        }
        out
    } else {
        body.to_string()
    };
    (status, body)
}

/// Maximum of the 1-minute CPUUtilization averages of `id` over the last
/// five minutes (JSON protocol), if any.
fn cpu_json(c: &Cluster, creds: &Creds, id: &str) -> Option<f64> {
    let now = now_s();
    let body = json!({"Namespace": "AWS/EC2", "MetricName": "CPUUtilization",
        "Dimensions": [{"Name": "InstanceId", "Value": id}],
        "StartTime": now - 300, "EndTime": now + 60, "Period": 60, "Statistics": ["Average"]});
    let (st, text) = cloudwatch(
        c,
        creds,
        Some("GraniteServiceVersion20100801.GetMetricStatistics"),
        &body.to_string(),
    );
    assert_eq!(st, 200, "{text}");
    let v: Value = serde_json::from_str(&text).expect("JSON answer");
    v["Datapoints"]
        .as_array()
        .expect("Datapoints")
        .iter()
        .filter_map(|d| d["Average"].as_f64())
        .reduce(f64::max)
}

#[test]
fn burning_guest_shows_full_cpu_in_cloudwatch() {
    if !cluster::prerequisites_met() {
        return;
    }
    let images = tempfile::tempdir().expect("tempdir");
    hello_variant_images(images.path(), "hello-burn", "nubis.burn=1");
    // The harness reads the image directory from the environment; this test
    // process runs only this test (nextest), so nothing else sees the change.
    std::env::set_var("NUBIS_IMAGE_DIR", images.path());
    let mut spec = ClusterSpec::three_zones(2);
    spec.agents.truncate(1);
    let zone = spec.agents[0].zone.clone();
    let c = Cluster::start(spec).expect("cluster");
    let t = c.tenant.clone().expect("tenant");
    let manifest = images.path().join("hello-burn/manifest.json");
    let burn_image = c
        .register_public_image("hello-burn", &manifest)
        .expect("register hello-burn");
    let run = |image: &str| {
        ids_of(
            &c.cli(
                &t,
                &[
                    "instances",
                    "run",
                    "--image",
                    image,
                    "--type",
                    "t3.nano",
                    "--zone",
                    &zone,
                    "-o",
                    "json",
                ],
            )
            .json(),
        )
    };
    let burner = run(&burn_image);
    let idle = c.run_hello(&t, 1, Some(&zone));
    c.wait_state(&t, &burner, "ready");
    c.wait_state(&t, &idle, "ready");
    let console = c.wait_console(&t, &burner[0], "NUBIS-BURN", 1);
    assert!(
        console.contains("NUBIS-BURN"),
        "hello image without burn mode? rebuild it: {console}"
    );
    let ready_at = Instant::now();

    // Within 30 s of the ready line the burner reads near 100 %.
    let mut seen = None;
    while ready_at.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_secs(2));
        if let Some(v) = cpu_json(&c, &t, &burner[0]).filter(|v| *v >= burn_min()) {
            seen = Some((v, ready_at.elapsed()));
            break;
        }
    }
    let (burn, after) = seen.unwrap_or_else(|| {
        panic!(
            "no CPUUtilization >= {:.1} within 30 s (last: {:?})\n--- agent log:\n{}",
            burn_min(),
            cpu_json(&c, &t, &burner[0]),
            c.agent_log(0)
        )
    });
    eprintln!(
        "burner CPUUtilization {burn:.1} % after {after:?} (bound {:.1} %)",
        burn_min()
    );
    assert!(burn <= 100.0);
    let idle_cpu = cpu_json(&c, &t, &idle[0]).expect("the idle instance is sampled too");
    eprintln!("idle CPUUtilization {idle_cpu:.1} %");
    assert!(idle_cpu <= IDLE_MAX, "idle guest at {idle_cpu} %");

    // The Query protocol reports the same metric.
    let now = now_s();
    let form = format!(
        "Action=GetMetricStatistics&Version=2010-08-01&Namespace=AWS%2FEC2&MetricName=CPUUtilization\
         &Dimensions.member.1.Name=InstanceId&Dimensions.member.1.Value={}&StartTime={}&EndTime={}\
         &Period=60&Statistics.member.1=Maximum",
        burner[0],
        now - 300,
        now + 60
    );
    let (st, xml) = cloudwatch(&c, &t, None, &form);
    assert_eq!(st, 200, "{xml}");
    let max: f64 = xml
        .split("<Maximum>")
        .skip(1)
        .filter_map(|s| s.split('<').next()?.parse().ok())
        .fold(0.0, f64::max);
    assert!(max >= burn_min(), "{xml}");

    // The agent's Prometheus exposition (its Unix socket in the state dir).
    let sock = c.dir.join("agents/a0/state/metrics.sock");
    let mut s = std::os::unix::net::UnixStream::connect(&sock).expect("agent metrics socket");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("nubis_agent_instance_cpu_utilization_percent{")
                && l.contains(&format!("instance_id=\"{}\"", burner[0]))
        })
        .unwrap_or_else(|| panic!("no CPU series for the burner:\n{text}"));
    let v: f64 = line
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("value");
    assert!(v > 0.0, "{line}");
}
