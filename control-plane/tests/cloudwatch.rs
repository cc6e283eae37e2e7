//! The CloudWatch endpoint end to end minus the VMMs: a real etcd, a
//! control-plane replica, a simulated agent registering a metrics endpoint
//! and, behind that endpoint, the agent's real metrics server and rollup
//! store holding samples. Requests go through the listener's router (SigV4
//! with scope `monitoring`) in both protocols; tenant isolation, bad input,
//! the agent's credential check and its Prometheus exposition are checked.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use http::{HeaderMap, HeaderValue, Request};
use nubis_agent::config::MetricsListen;
use nubis_agent::metrics::store::{Metric, Sample, METRIC_COUNT};
use nubis_agent::metrics::{server, Metrics};
use nubis_control_plane::domain::Caller;
use nubis_control_plane::ec2::sigv4;
use nubis_control_plane::sim::{SimAgent, SimOptions};
use nubis_proto::auth::Credentials;
use nubis_proto::node::v1 as npb;
use serde_json::{json, Value};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt as _;

const REGION: &str = "test-1";

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A request signed as botocore signs it, for service `monitoring`.
fn signed(creds: &Credentials, target: Option<&str>, body: &str) -> Request<Body> {
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
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_static("127.0.0.1:8773"));
    let ct = if target.is_some() {
        "application/x-amz-json-1.0"
    } else {
        "application/x-www-form-urlencoded; charset=utf-8"
    };
    headers.insert("content-type", HeaderValue::from_static(ct));
    headers.insert("x-amz-date", HeaderValue::from_str(&amz_date).unwrap());
    let mut signed_headers = vec!["content-type", "host", "x-amz-date"];
    if let Some(t) = target {
        headers.insert("x-amz-target", HeaderValue::from_str(t).unwrap());
        headers.insert("x-amzn-query-mode", HeaderValue::from_static("true"));
        signed_headers.extend(["x-amz-target", "x-amzn-query-mode"]);
    }
    let auth = sigv4::Authorization {
        access_key_id: creds.access_key_id.clone(),
        date: amz_date[..8].into(),
        region: REGION.into(),
        service: "monitoring".into(),
        signed_headers: signed_headers.iter().map(|s| s.to_string()).collect(),
        signature: vec![],
    };
    let sig = sigv4::sign(
        &auth,
        &creds.secret,
        &sigv4::RequestParts {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            body: body.as_bytes(),
        },
    )
    .unwrap();
    let mut b = Request::builder().method("POST").uri("/");
    for (k, v) in &headers {
        b = b.header(k, v);
    }
    b.header(
        "authorization",
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{}/{REGION}/monitoring/aws4_request, SignedHeaders={}, Signature={sig}",
            creds.access_key_id,
            &amz_date[..8],
            signed_headers.join(";")
        ),
    )
    .body(Body::from(body.to_owned()))
    .unwrap()
}

struct Answer {
    status: u16,
    query_error: String,
    body: String,
}

async fn call(router: &axum::Router, req: Request<Body>) -> Answer {
    let r = router.clone().oneshot(req).await.unwrap();
    let status = r.status().as_u16();
    let query_error = r
        .headers()
        .get("x-amzn-query-error")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = axum::body::to_bytes(r.into_body(), usize::MAX)
        .await
        .unwrap();
    Answer {
        status,
        query_error,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

async fn json_call(
    router: &axum::Router,
    creds: &Credentials,
    action: &str,
    body: Value,
) -> (u16, Value, String) {
    let a = call(
        router,
        signed(
            creds,
            Some(&format!("GraniteServiceVersion20100801.{action}")),
            &body.to_string(),
        ),
    )
    .await;
    (
        a.status,
        serde_json::from_str(&a.body).unwrap(),
        a.query_error,
    )
}

fn cpu_stats(id: &str, from: i64, to: i64) -> Value {
    json!({"Namespace": "AWS/EC2", "MetricName": "CPUUtilization",
        "Dimensions": [{"Name": "InstanceId", "Value": id}],
        "StartTime": from, "EndTime": to, "Period": 60,
        "Statistics": ["Average", "Maximum", "SampleCount"]})
}

async fn launch(c: &mut Compute, image: &str) -> String {
    let mut req = run_req(image, 1);
    req.availability_zone = ZONES[0].into();
    let id = c
        .run_instances(req)
        .await
        .unwrap()
        .into_inner()
        .reservation
        .unwrap()
        .instances[0]
        .instance_id
        .clone();
    wait_state(c, &id, "running").await;
    id
}

/// A parsed sample: metric name, labels, value.
type PromSample = (String, Vec<(String, String)>, f64);

/// One Prometheus text-format sample line: `name{labels} value`.
fn parse_sample(line: &str) -> Option<PromSample> {
    let (series, value) = line.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        Some((n, rest)) => {
            let inner = rest.strip_suffix('}')?;
            let mut labels = Vec::new();
            for pair in inner.split(',').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=')?;
                let v = v.strip_prefix('"')?.strip_suffix('"')?;
                labels.push((k.to_string(), v.to_string()));
            }
            (n, labels)
        }
        None => (series, Vec::new()),
    };
    let valid_name = name.bytes().enumerate().all(|(i, b)| {
        b.is_ascii_alphabetic() || b == b'_' || b == b':' || (i > 0 && b.is_ascii_digit())
    });
    (valid_name && !name.is_empty()).then(|| (name.to_string(), labels, value))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudwatch_reads_agent_rollups_for_the_owner_only() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cp = start(config(&etcd)).await;
    let ep = endpoint(&cp);
    let image = hello_image(&ep).await;
    let alice = tenant(&ep, "alice").await;
    let bob = tenant(&ep, "bob").await;
    let mut c = compute(&ep, alice.clone()).await;

    // The agent side: rollups + the metrics server on a Unix socket.
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("metrics.sock");
    let metrics = Arc::new(Metrics::open(dir.path().join("metrics")).unwrap());
    let served = server::start(&MetricsListen::Unix(sock.clone()), None, metrics.clone())
        .await
        .unwrap();
    assert_eq!(served.endpoint, format!("unix:{}", sock.display()));
    let mut opts = SimOptions::new("metrics-host", ZONES[0], 4, 4096);
    opts.metrics_endpoint = served.endpoint.clone();
    let sim = SimAgent::start(&ep, enrol(), opts).await.unwrap();
    served.set_credential(sim.credential.clone());

    let id = launch(&mut c, &image).await;
    let aid = nubis_agent::types::InstanceId::new(id.clone()).unwrap();
    // Five minutes of 10-s samples: CPU 97 %, 1000 bytes in per sample.
    let now = now_s();
    let start = now - now % 60 - 300;
    for t in (start..start + 300).step_by(10) {
        let mut values = [None; METRIC_COUNT];
        values[Metric::CpuUtilization as usize] = Some(97.0);
        values[Metric::NetworkIn as usize] = Some(1000.0);
        values[Metric::StatusCheckFailed as usize] = Some(0.0);
        metrics.record(
            &aid,
            &Sample {
                at_s: t as u64,
                values,
            },
            None,
        );
    }
    let router = nubis_control_plane::ec2::router(cp.domain.clone());

    // JSON protocol: five one-minute buckets of six samples at 97 %.
    let (st, v, _) = json_call(
        &router,
        &alice,
        "GetMetricStatistics",
        cpu_stats(&id, start, start + 300),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let dps = v["Datapoints"].as_array().unwrap();
    assert_eq!(dps.len(), 5, "{v}");
    for d in dps {
        assert_eq!(d["Average"], 97.0);
        assert_eq!(d["Maximum"], 97.0);
        assert_eq!(d["SampleCount"], 6.0);
        assert_eq!(d["Unit"], "Percent");
    }
    assert_eq!(v["Label"], "CPUUtilization");

    // Query protocol, same question.
    let form = format!(
        "Action=GetMetricStatistics&Version=2010-08-01&Namespace=AWS%2FEC2&MetricName=CPUUtilization\
         &Dimensions.member.1.Name=InstanceId&Dimensions.member.1.Value={id}&StartTime={}&EndTime={}\
         &Period=300&Statistics.member.1=Average",
        start,
        start + 300
    );
    let a = call(&router, signed(&alice, None, &form)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.body.contains("<GetMetricStatisticsResult>"), "{}", a.body);
    assert_eq!(
        a.body.matches("<Average>97</Average>").count(),
        1,
        "{}",
        a.body
    );

    // GetMetricData: two queries, newest first; one hidden.
    let q = |qid: &str, metric: &str, stat: &str, ret: bool| {
        json!({"Id": qid, "ReturnData": ret, "MetricStat": {"Metric": {"Namespace": "AWS/EC2",
            "MetricName": metric, "Dimensions": [{"Name": "InstanceId", "Value": id}]},
            "Period": 60, "Stat": stat}})
    };
    let (st, v, _) = json_call(
        &router,
        &alice,
        "GetMetricData",
        json!({"MetricDataQueries": [q("cpu", "CPUUtilization", "Average", true),
            q("net", "NetworkIn", "Sum", true), q("hidden", "NetworkIn", "Sum", false)],
            "StartTime": start, "EndTime": start + 300}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let res = v["MetricDataResults"].as_array().unwrap();
    assert_eq!(res.len(), 2, "{v}");
    assert_eq!(res[0]["Values"], json!([97.0, 97.0, 97.0, 97.0, 97.0]));
    assert_eq!(
        res[1]["Values"],
        json!([6000.0, 6000.0, 6000.0, 6000.0, 6000.0])
    );
    let ts = res[0]["Timestamps"].as_array().unwrap();
    assert!(ts[0].as_i64() > ts[4].as_i64(), "newest first: {ts:?}");
    assert_eq!(res[0]["StatusCode"], "Complete");

    // The domain function target tracking uses.
    let Caller::Tenant(account) = cp
        .domain
        .access_key_secret(&alice.access_key_id)
        .await
        .unwrap()
        .0
    else {
        panic!("alice is a tenant");
    };
    let avg = cp
        .domain
        .average_cpu(
            &account,
            &[id.parse().unwrap()],
            UNIX_EPOCH + Duration::from_secs(start as u64),
            UNIX_EPOCH + Duration::from_secs(start as u64 + 300),
        )
        .await
        .unwrap();
    assert_eq!(avg, Some(97.0));

    // ListMetrics: alice sees her instance's ten metrics, bob nothing.
    let (st, v, _) = json_call(
        &router,
        &alice,
        "ListMetrics",
        json!({"Namespace": "AWS/EC2",
        "Dimensions": [{"Name": "InstanceId", "Value": id}]}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["Metrics"].as_array().unwrap().len(), 10, "{v}");
    let (_, v, _) = json_call(&router, &bob, "ListMetrics", json!({})).await;
    assert_eq!(v["Metrics"], json!([]), "{v}");

    // Tenant isolation: bob asking for alice's instance gets no data.
    let (st, v, _) = json_call(
        &router,
        &bob,
        "GetMetricStatistics",
        cpu_stats(&id, start, start + 300),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["Datapoints"], json!([]), "{v}");

    // Bad input -> CloudWatch codes, both protocols.
    let bad = [
        (
            "GetMetricStatistics",
            cpu_stats(&id, start + 300, start),
            "InvalidParameterValue",
        ),
        (
            "GetMetricStatistics",
            {
                let mut b = cpu_stats(&id, start, start + 300);
                b["Period"] = json!(90);
                b
            },
            "InvalidParameterValue",
        ),
        (
            "GetMetricStatistics",
            {
                let mut b = cpu_stats(&id, start, start + 300);
                b["MetricName"] = json!("MemoryUtilization");
                b
            },
            "InvalidParameterValue",
        ),
        (
            "GetMetricData",
            json!({"MetricDataQueries": (0..501).map(|i| q(&format!("q{i}"), "CPUUtilization", "Average", true)).collect::<Vec<_>>(),
            "StartTime": start, "EndTime": start + 300}),
            "InvalidParameterValue",
        ),
        (
            "GetMetricStatistics",
            json!({"Namespace": "AWS/EC2"}),
            "MissingParameter",
        ),
        ("DeleteAlarms", json!({}), "InvalidAction"),
    ];
    for (action, body, code) in bad {
        let (st, v, qe) = json_call(&router, &alice, action, body).await;
        assert_eq!(st, 400, "{action}: {v}");
        assert_eq!(qe.split(';').next(), Some(code), "{action}: {v}");
    }
    let a = call(
        &router,
        signed(&alice, None, &form.replace("Period=300", "Period=61")),
    )
    .await;
    assert_eq!(a.status, 400);
    assert!(
        a.body.contains("<Code>InvalidParameterValue</Code>"),
        "{}",
        a.body
    );

    // A wrong secret is refused before anything else.
    let forged = Credentials::new(alice.access_key_id.clone(), "not-the-secret");
    let (st, v, qe) = json_call(&router, &forged, "ListMetrics", json!({})).await;
    assert_eq!(
        (st, qe.as_str()),
        (403, "SignatureDoesNotMatch;Sender"),
        "{v}"
    );

    // The agent accepts only its node credential.
    let ch = nubis_proto::transport::connect(&served.endpoint)
        .await
        .unwrap();
    let mut wrong = npb::agent_metrics_client::AgentMetricsClient::new(
        nubis_proto::auth::Signed::new(ch, alice.clone()),
    );
    let err = wrong
        .query_metrics(npb::QueryMetricsRequest {
            instance_ids: vec![id.clone()],
            metric: "CPUUtilization".into(),
            from_unix_s: start,
            to_unix_s: start + 300,
            period_s: 60,
        })
        .await
        .expect_err("tenant keys cannot query an agent");
    assert_eq!(err.code(), tonic::Code::Unauthenticated);

    // Prometheus exposition on the same socket.
    let mut s = tokio::net::UnixStream::connect(&sock).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    let text = raw.split("\r\n\r\n").nth(1).unwrap();
    let mut cpu = None;
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (name, labels, value) =
            parse_sample(line).unwrap_or_else(|| panic!("bad line {line:?}"));
        if name == "nubis_agent_instance_cpu_utilization_percent" {
            assert_eq!(labels, vec![("instance_id".to_string(), id.clone())]);
            cpu = Some(value);
        }
    }
    assert_eq!(cpu, Some(97.0), "{text}");
    assert!(
        text.contains("# TYPE nubis_agent_sampling_duration_seconds histogram"),
        "{text}"
    );
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    drop(sim);
}

/// Target tracking with the production metric source: the controller
/// reads the group's CPU from the agent's real metrics server (issue 14).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_tracking_reads_the_agents_cpu_samples() {
    use nubis_control_plane::domain::autoscaling::policies::PutPolicyInput;
    use nubis_control_plane::domain::autoscaling::templates::{LaunchTemplateData, TemplateRef};
    use nubis_control_plane::domain::autoscaling::CreateGroupInput;

    let Some(etcd) = start_etcd() else {
        return;
    };
    let cp = start(config(&etcd)).await;
    let ep = endpoint(&cp);
    let d = cp.domain.clone();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("metrics.sock");
    let metrics = Arc::new(Metrics::open(dir.path().join("metrics")).unwrap());
    let served = server::start(&MetricsListen::Unix(sock.clone()), None, metrics.clone())
        .await
        .unwrap();
    let mut opts = SimOptions::new("metrics-host", ZONES[0], 8, 8192);
    opts.metrics_endpoint = served.endpoint.clone();
    let sim = SimAgent::start(&ep, enrol(), opts).await.unwrap();
    served.set_credential(sim.credential.clone());

    let image = register_image(&d).await;
    let c = setup_account(&d).await;
    d.create_launch_template(
        &c,
        "web",
        "",
        LaunchTemplateData {
            image_id: Some(image),
            instance_type: Some("t3.nano".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    d.create_auto_scaling_group(
        &c,
        CreateGroupInput {
            name: "web".into(),
            template: Some(TemplateRef::Name("web".into())),
            min_size: 1,
            max_size: 3,
            desired: Some(1),
            zones: vec![ZONES[0].into()],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let first = eventually(Duration::from_secs(20), "the first instance", || async {
        d.describe_auto_scaling_instances(&c, &[])
            .await
            .unwrap()
            .into_iter()
            .find(|gi| gi.lifecycle == "InService")
            .map(|gi| gi.instance.id.to_string())
    })
    .await;
    // Its last two minutes at 90 % CPU.
    let aid = nubis_agent::types::InstanceId::new(first.clone()).unwrap();
    let now = now_s();
    for t in ((now - 120)..=now).step_by(10) {
        let mut values = [None; METRIC_COUNT];
        values[Metric::CpuUtilization as usize] = Some(90.0);
        metrics.record(
            &aid,
            &Sample {
                at_s: t as u64,
                values,
            },
            None,
        );
    }
    d.put_scaling_policy(
        &c,
        PutPolicyInput {
            group: "web".into(),
            name: "cpu".into(),
            policy_type: Some("TargetTrackingScaling".into()),
            target_metric: Some("ASGAverageCPUUtilization".into()),
            target_value: Some(40.0),
            warmup: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // 1 instance at 90 % against 40 %: ceil(2.25) = 3.
    eventually(Duration::from_secs(20), "scale-out to 3", || async {
        (d.auto_scaling_group(&c, "web").await.unwrap().value.desired == 3).then_some(())
    })
    .await;
    let acts = d
        .describe_scaling_activities(&c, Some("web"), 100)
        .await
        .unwrap();
    assert!(
        acts.iter().any(
            |a| a.description == "Changing the desired capacity from 1 to 3"
                && a.cause.contains("ASGAverageCPUUtilization 90.0")
        ),
        "{acts:?}"
    );
    drop(sim);
    cp.shutdown().await;
}
