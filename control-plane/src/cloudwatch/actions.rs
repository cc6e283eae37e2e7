//! The CloudWatch actions over the domain ([`crate::domain::metrics`]) and
//! their answers in both protocols (JSON documents, Query XML).

use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::error::CwError;
use super::requests::{
    DataQuery, Dimension, GetMetricData, GetMetricStatistics, ListMetrics, MetricRef, Selector,
    Statistic, NAMESPACE,
};
use crate::domain::metrics::{MetricAnswer, MetricQuery, Point, EC2_METRICS};
use crate::domain::{Caller, Domain};
use crate::ec2::xml::escape_into;

/// How many GetMetricData queries run at once.
const PARALLEL_QUERIES: usize = 16;

/// The CloudWatch unit of a metric.
pub fn unit(metric: &str) -> &'static str {
    match metric {
        "CPUUtilization" => "Percent",
        "NetworkIn" | "NetworkOut" | "DiskReadBytes" | "DiskWriteBytes" => "Bytes",
        _ => "Count",
    }
}

fn value(p: &Point, s: Statistic) -> f64 {
    match s {
        Statistic::Average => p.average(),
        Statistic::Sum => p.sum,
        Statistic::SampleCount => p.count,
        Statistic::Minimum => p.min,
        Statistic::Maximum => p.max,
    }
}

/// A result to render.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// GetMetricStatistics.
    Statistics {
        /// Label (the metric name).
        label: String,
        /// Unit.
        unit: &'static str,
        /// Per bucket: start and the statistics asked for.
        points: Vec<(i64, Vec<(Statistic, f64)>)>,
    },
    /// GetMetricData.
    Data(Vec<DataResult>),
    /// ListMetrics.
    List(Vec<(String, Vec<Dimension>)>),
}

/// One GetMetricData result.
#[derive(Debug, Clone, PartialEq)]
pub struct DataResult {
    /// Query id.
    pub id: String,
    /// Label.
    pub label: String,
    /// Timestamps, in the requested order.
    pub timestamps: Vec<i64>,
    /// Values, same order.
    pub values: Vec<f64>,
    /// `Complete` or `PartialData`.
    pub status: &'static str,
}

async fn instances_of(
    domain: &Domain,
    caller: &Caller,
    m: &MetricRef,
) -> Result<Vec<String>, CwError> {
    Ok(match &m.selector {
        Selector::Instance(id) => vec![id.clone()],
        Selector::Group(g) => domain.group_instance_ids(caller, g).await?,
        Selector::All => domain
            .metric_instances(caller)
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .collect(),
        Selector::Unsupported => Vec::new(),
    })
}

async fn fetch(
    domain: &Domain,
    caller: &Caller,
    m: &MetricRef,
    start: i64,
    end: i64,
    period: u32,
) -> Result<MetricAnswer, CwError> {
    let ids = instances_of(domain, caller, m).await?;
    if ids.is_empty() {
        return Ok(MetricAnswer::default());
    }
    let q = MetricQuery {
        metric: m.name.clone(),
        from_s: start,
        to_s: end,
        period_s: period,
    };
    Ok(domain.instance_metric(caller, &ids, &q).await?)
}

/// GetMetricStatistics.
pub async fn get_metric_statistics(
    domain: &Domain,
    caller: &Caller,
    r: GetMetricStatistics,
) -> Result<Output, CwError> {
    let a = fetch(domain, caller, &r.metric, r.start, r.end, r.period).await?;
    Ok(Output::Statistics {
        label: r.metric.name.clone(),
        unit: unit(&r.metric.name),
        points: a
            .points
            .iter()
            .map(|p| {
                (
                    p.start_s,
                    r.statistics.iter().map(|s| (*s, value(p, *s))).collect(),
                )
            })
            .collect(),
    })
}

async fn data_query(
    domain: &Domain,
    caller: &Caller,
    q: &DataQuery,
    r: &GetMetricData,
) -> Result<DataResult, CwError> {
    let a = fetch(domain, caller, &q.metric, r.start, r.end, q.period).await?;
    let mut pts: Vec<(i64, f64)> = a
        .points
        .iter()
        .map(|p| (p.start_s, value(p, q.stat)))
        .collect();
    if r.descending {
        pts.reverse();
    }
    let mut status = if a.partial { "PartialData" } else { "Complete" };
    if pts.len() as i64 > r.max_datapoints {
        pts.truncate(r.max_datapoints as usize);
        status = "PartialData";
    }
    Ok(DataResult {
        id: q.id.clone(),
        label: q.label.clone(),
        timestamps: pts.iter().map(|p| p.0).collect(),
        values: pts.iter().map(|p| p.1).collect(),
        status,
    })
}

/// GetMetricData (queries run concurrently, results in query order).
pub async fn get_metric_data(
    domain: &Domain,
    caller: &Caller,
    r: GetMetricData,
) -> Result<Output, CwError> {
    let wanted: Vec<&DataQuery> = r.queries.iter().filter(|q| q.return_data).collect();
    let mut results = Vec::with_capacity(wanted.len());
    for chunk in wanted.chunks(PARALLEL_QUERIES) {
        let mut running = Vec::with_capacity(chunk.len());
        for q in chunk {
            running.push(data_query(domain, caller, q, &r));
        }
        for res in futures::future::join_all(running).await {
            results.push(res?);
        }
    }
    Ok(Output::Data(results))
}

/// ListMetrics: every metric of every instance the caller has had placed
/// in the last two weeks (InstanceId dimension, plus AutoScalingGroupName
/// for grouped instances), filtered.
pub async fn list_metrics(
    domain: &Domain,
    caller: &Caller,
    r: ListMetrics,
) -> Result<Output, CwError> {
    if r.other_namespace {
        return Ok(Output::List(Vec::new()));
    }
    let mut out = Vec::new();
    let mut groups = std::collections::BTreeSet::new();
    let mut candidates: Vec<Vec<Dimension>> = Vec::new();
    for (id, group) in domain.metric_instances(caller).await? {
        candidates.push(vec![Dimension {
            name: "InstanceId".into(),
            value: Some(id),
        }]);
        if let Some(g) = group {
            groups.insert(g);
        }
    }
    for g in groups {
        candidates.push(vec![Dimension {
            name: "AutoScalingGroupName".into(),
            value: Some(g),
        }]);
    }
    let matches = |dims: &[Dimension]| {
        r.dimensions.iter().all(|f| {
            dims.iter().any(|d| {
                d.name == f.name && f.value.as_ref().is_none_or(|v| Some(v) == d.value.as_ref())
            })
        })
    };
    for dims in candidates.into_iter().filter(|d| matches(d)) {
        for m in EC2_METRICS {
            if r.metric_name.as_deref().is_none_or(|n| n == m) {
                out.push((m.to_string(), dims.clone()));
            }
        }
    }
    Ok(Output::List(out))
}

fn iso(t: i64) -> String {
    OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| d.format(&Rfc3339).ok())
        .unwrap_or_default()
}

fn dims_json(d: &[Dimension]) -> Value {
    Value::Array(
        d.iter()
            .map(|d| json!({"Name": d.name, "Value": d.value.clone().unwrap_or_default()}))
            .collect(),
    )
}

impl Output {
    /// The JSON protocol's response document.
    pub fn to_json(&self) -> String {
        let v = match self {
            Output::Statistics {
                label,
                unit,
                points,
            } => json!({
                "Label": label,
                "Datapoints": points.iter().map(|(t, stats)| {
                    let mut m = serde_json::Map::new();
                    m.insert("Timestamp".into(), json!(t));
                    for (s, v) in stats {
                        m.insert(s.name().into(), json!(v));
                    }
                    m.insert("Unit".into(), json!(unit));
                    Value::Object(m)
                }).collect::<Vec<_>>(),
            }),
            Output::Data(results) => json!({
                "MetricDataResults": results.iter().map(|r| json!({
                    "Id": r.id, "Label": r.label, "Timestamps": r.timestamps,
                    "Values": r.values, "StatusCode": r.status,
                })).collect::<Vec<_>>(),
                "Messages": [],
            }),
            Output::List(metrics) => json!({
                "Metrics": metrics.iter().map(|(name, d)| json!({
                    "Namespace": NAMESPACE, "MetricName": name, "Dimensions": dims_json(d),
                })).collect::<Vec<_>>(),
            }),
        };
        v.to_string()
    }

    /// The Query protocol's XML response for `action`.
    pub fn to_xml(&self, action: &str, request_id: &str) -> String {
        let mut s = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{action}Response xmlns=\"http://monitoring.amazonaws.com/doc/2010-08-01/\"><{action}Result>"
        );
        let el = |s: &mut String, name: &str, text: &str| {
            s.push('<');
            s.push_str(name);
            s.push('>');
            escape_into(s, text);
            s.push_str("</");
            s.push_str(name);
            s.push('>');
        };
        let dims = |s: &mut String, d: &[Dimension]| {
            s.push_str("<Dimensions>");
            for d in d {
                s.push_str("<member>");
                el(s, "Name", &d.name);
                el(s, "Value", d.value.as_deref().unwrap_or(""));
                s.push_str("</member>");
            }
            s.push_str("</Dimensions>");
        };
        match self {
            Output::Statistics {
                label,
                unit,
                points,
            } => {
                el(&mut s, "Label", label);
                s.push_str("<Datapoints>");
                for (t, stats) in points {
                    s.push_str("<member>");
                    el(&mut s, "Timestamp", &iso(*t));
                    for (st, v) in stats {
                        el(&mut s, st.name(), &v.to_string());
                    }
                    el(&mut s, "Unit", unit);
                    s.push_str("</member>");
                }
                s.push_str("</Datapoints>");
            }
            Output::Data(results) => {
                s.push_str("<MetricDataResults>");
                for r in results {
                    s.push_str("<member>");
                    el(&mut s, "Id", &r.id);
                    el(&mut s, "Label", &r.label);
                    s.push_str("<Timestamps>");
                    for t in &r.timestamps {
                        el(&mut s, "member", &iso(*t));
                    }
                    s.push_str("</Timestamps><Values>");
                    for v in &r.values {
                        el(&mut s, "member", &v.to_string());
                    }
                    s.push_str("</Values>");
                    el(&mut s, "StatusCode", r.status);
                    s.push_str("</member>");
                }
                s.push_str("</MetricDataResults><Messages/>");
            }
            Output::List(metrics) => {
                s.push_str("<Metrics>");
                for (name, d) in metrics {
                    s.push_str("<member>");
                    el(&mut s, "Namespace", NAMESPACE);
                    el(&mut s, "MetricName", name);
                    dims(&mut s, d);
                    s.push_str("</member>");
                }
                s.push_str("</Metrics>");
            }
        }
        s.push_str(&format!("</{action}Result><ResponseMetadata>"));
        el(&mut s, "RequestId", request_id);
        s.push_str(&format!("</ResponseMetadata></{action}Response>"));
        s
    }
}
