//! CloudWatch requests: both protocols decoded into one tree and then into
//! typed, validated requests.
//!
//! The JSON protocol's body is already the tree. A Query-protocol form
//! (`Dimensions.member.1.Name=InstanceId`) is folded into the same shape
//! (`{"Dimensions": [{"Name": "InstanceId"}]}`) with string leaves, so one
//! set of accessors (which accept numbers and numeric strings alike)
//! decodes both. Validation follows CloudWatch's rules and error codes.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::error::{CwCode, CwError};
use crate::domain::metrics::EC2_METRICS;

/// The only namespace served.
pub const NAMESPACE: &str = "AWS/EC2";
/// Most queries in one GetMetricData call.
pub const MAX_QUERIES: usize = 500;
/// Most datapoints one GetMetricStatistics call may return.
pub const MAX_STATISTICS_POINTS: i64 = 1440;
/// Most datapoints one GetMetricData call may return (per query here).
pub const MAX_DATA_POINTS: i64 = 100_800;
/// Most dimensions on a metric.
pub const MAX_DIMENSIONS: usize = 30;

type R<T> = Result<T, CwError>;

/// Folds a Query-protocol form into the JSON protocol's tree.
pub fn tree_of_form(form: &BTreeMap<String, String>) -> R<Value> {
    let mut root = Value::Object(Map::new());
    for (k, v) in form {
        if k == "Action" || k == "Version" {
            continue;
        }
        let parts: Vec<&str> = k.split('.').collect();
        insert(&mut root, &parts, v.clone())
            .map_err(|()| CwError::invalid(format!("The parameter {k} is not well-formed.")))?;
    }
    // Lists were built as index-keyed objects: turn them into arrays.
    Ok(listify(root))
}

const LIST_MARK: &str = "\u{0}list";

fn insert(node: &mut Value, parts: &[&str], v: String) -> Result<(), ()> {
    let Some((first, rest)) = parts.split_first() else {
        return Err(());
    };
    let obj = node.as_object_mut().ok_or(())?;
    if rest.is_empty() {
        obj.insert((*first).to_string(), Value::String(v));
        return Ok(());
    }
    if rest.first() == Some(&"member") {
        let idx: usize = rest.get(1).and_then(|s| s.parse().ok()).ok_or(())?;
        if idx == 0 || idx > 1000 {
            return Err(());
        }
        let list = obj
            .entry((*first).to_string())
            .or_insert_with(|| {
                let mut m = Map::new();
                m.insert(LIST_MARK.into(), Value::Bool(true));
                Value::Object(m)
            })
            .as_object_mut()
            .ok_or(())?;
        let key = format!("{idx:05}");
        if rest.len() == 2 {
            list.insert(key, Value::String(v));
            return Ok(());
        }
        let item = list.entry(key).or_insert_with(|| Value::Object(Map::new()));
        return insert(item, &rest[2..], v);
    }
    let child = obj
        .entry((*first).to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    insert(child, rest, v)
}

fn listify(v: Value) -> Value {
    match v {
        Value::Object(mut m) => {
            if m.remove(LIST_MARK).is_some() {
                // Keys are zero-padded indices: map order is list order.
                Value::Array(m.into_iter().map(|(_, v)| listify(v)).collect())
            } else {
                Value::Object(m.into_iter().map(|(k, v)| (k, listify(v))).collect())
            }
        }
        other => other,
    }
}

fn obj<'a>(v: &'a Value, what: &str) -> R<&'a Map<String, Value>> {
    v.as_object()
        .ok_or_else(|| CwError::invalid(format!("{what} must be a structure")))
}

fn opt_str<'a>(o: &'a Map<String, Value>, k: &str) -> R<Option<&'a str>> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(CwError::invalid(format!(
            "The parameter {k} must be a string."
        ))),
    }
}

fn req_str<'a>(o: &'a Map<String, Value>, k: &str) -> R<&'a str> {
    opt_str(o, k)?.ok_or_else(|| CwError::missing(k))
}

fn opt_i64(o: &Map<String, Value>, k: &str) -> R<Option<i64>> {
    let bad = || CwError::invalid(format!("The parameter {k} must be an integer."));
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(bad),
        Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| bad()),
        Some(_) => Err(bad()),
    }
}

fn opt_bool(o: &Map<String, Value>, k: &str) -> R<Option<bool>> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if s == "true" => Ok(Some(true)),
        Some(Value::String(s)) if s == "false" => Ok(Some(false)),
        Some(_) => Err(CwError::invalid(format!(
            "The parameter {k} must be a boolean."
        ))),
    }
}

fn list<'a>(o: &'a Map<String, Value>, k: &str) -> R<&'a [Value]> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(CwError::invalid(format!(
            "The parameter {k} must be a list."
        ))),
    }
}

/// A timestamp: epoch seconds (JSON number or numeric string) or ISO 8601.
fn time_of(o: &Map<String, Value>, k: &str) -> R<i64> {
    let bad = || CwError::invalid(format!("The parameter {k} must be a timestamp."));
    match o.get(k) {
        None | Some(Value::Null) => Err(CwError::missing(k)),
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|f| f.is_finite())
            .map(|f| f.floor() as i64)
            .ok_or_else(bad),
        Some(Value::String(s)) => {
            if let Ok(f) = s.parse::<f64>() {
                return if f.is_finite() {
                    Ok(f.floor() as i64)
                } else {
                    Err(bad())
                };
            }
            OffsetDateTime::parse(s, &Rfc3339)
                .map(|t| t.unix_timestamp())
                .map_err(|_| bad())
        }
        Some(_) => Err(bad()),
    }
}

/// A metric's dimension.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dimension {
    /// Name.
    pub name: String,
    /// Value (ListMetrics filters may omit it).
    pub value: Option<String>,
}

fn dimensions(o: &Map<String, Value>, k: &str, value_required: bool) -> R<Vec<Dimension>> {
    let items = list(o, k)?;
    if items.len() > MAX_DIMENSIONS {
        return Err(CwError::invalid(format!(
            "The collection {k} must not have a size greater than {MAX_DIMENSIONS}."
        )));
    }
    let mut out = Vec::new();
    for d in items {
        let d = obj(d, "Dimension")?;
        let name = req_str(d, "Name")?.to_string();
        let value = if value_required {
            Some(req_str(d, "Value")?.to_string())
        } else {
            opt_str(d, "Value")?.map(str::to_string)
        };
        if name.is_empty()
            || name.len() > 255
            || value
                .as_ref()
                .is_some_and(|v| v.is_empty() || v.len() > 1024)
        {
            return Err(CwError::invalid(
                "Dimension names are 1-255 and values 1-1024 characters long.",
            ));
        }
        out.push(Dimension { name, value });
    }
    Ok(out)
}

/// A statistic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Statistic {
    /// Sum / SampleCount.
    Average,
    /// Sum.
    Sum,
    /// Samples.
    SampleCount,
    /// Minimum.
    Minimum,
    /// Maximum.
    Maximum,
}

impl Statistic {
    /// From its name.
    pub fn parse(s: &str) -> R<Statistic> {
        Ok(match s {
            "Average" => Statistic::Average,
            "Sum" => Statistic::Sum,
            "SampleCount" => Statistic::SampleCount,
            "Minimum" => Statistic::Minimum,
            "Maximum" => Statistic::Maximum,
            other => {
                return Err(CwError::invalid(format!(
                    "The statistic {other} is not supported: use Average, Sum, SampleCount, Minimum or Maximum."
                )))
            }
        })
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Statistic::Average => "Average",
            Statistic::Sum => "Sum",
            Statistic::SampleCount => "SampleCount",
            Statistic::Minimum => "Minimum",
            Statistic::Maximum => "Maximum",
        }
    }
}

/// Which instances a metric covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// `InstanceId=<id>`.
    Instance(String),
    /// `AutoScalingGroupName=<name>`.
    Group(String),
    /// No dimension: every instance of the account.
    All,
    /// Dimensions AWS/EC2 has but Nubis does not keep: no data.
    Unsupported,
}

/// A metric of AWS/EC2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricRef {
    /// Name (one of the agents' metrics).
    pub name: String,
    /// Dimensions as given (echoed back).
    pub dimensions: Vec<Dimension>,
    /// What they select.
    pub selector: Selector,
}

fn metric_ref(o: &Map<String, Value>, name_key: &str) -> R<MetricRef> {
    let ns = req_str(o, "Namespace")?;
    if ns != NAMESPACE {
        return Err(CwError::invalid(format!(
            "The namespace {ns} is not served here: only {NAMESPACE}."
        )));
    }
    let name = req_str(o, name_key)?;
    if !EC2_METRICS.contains(&name) {
        return Err(CwError::invalid(format!(
            "The metric {name} does not exist in namespace {NAMESPACE}."
        )));
    }
    let dims = dimensions(o, "Dimensions", true)?;
    let selector = match dims.as_slice() {
        [] => Selector::All,
        [d] if d.name == "InstanceId" => Selector::Instance(d.value.clone().unwrap_or_default()),
        [d] if d.name == "AutoScalingGroupName" => {
            Selector::Group(d.value.clone().unwrap_or_default())
        }
        _ => Selector::Unsupported,
    };
    Ok(MetricRef {
        name: name.to_string(),
        dimensions: dims,
        selector,
    })
}

fn check_period(period: i64) -> R<u32> {
    if period <= 0 || period % 60 != 0 {
        return Err(CwError::invalid(
            "The parameter Period must be a multiple of 60.",
        ));
    }
    u32::try_from(period).map_err(|_| CwError::invalid("The parameter Period is too large."))
}

fn check_range(start: i64, end: i64) -> R<()> {
    if start >= end {
        return Err(CwError::invalid(
            "The parameter StartTime must be less than the parameter EndTime.",
        ));
    }
    if start < 0 {
        return Err(CwError::invalid(
            "The parameter StartTime must be after 1970.",
        ));
    }
    Ok(())
}

/// GetMetricStatistics.
#[derive(Debug, Clone, PartialEq)]
pub struct GetMetricStatistics {
    /// The metric.
    pub metric: MetricRef,
    /// Range start (seconds, rounded down to the minute).
    pub start: i64,
    /// Range end (exclusive).
    pub end: i64,
    /// Bucket width.
    pub period: u32,
    /// Statistics wanted.
    pub statistics: Vec<Statistic>,
}

impl GetMetricStatistics {
    /// Decodes and validates.
    pub fn parse(v: &Value) -> R<Self> {
        let o = obj(v, "The request")?;
        let metric = metric_ref(o, "MetricName")?;
        let start = time_of(o, "StartTime")?;
        let end = time_of(o, "EndTime")?;
        let period = opt_i64(o, "Period")?.ok_or_else(|| CwError::missing("Period"))?;
        let period = check_period(period)?;
        check_range(start, end)?;
        let stats = list(o, "Statistics")?;
        let ext = list(o, "ExtendedStatistics")?;
        if !stats.is_empty() && !ext.is_empty() {
            return Err(CwError::new(
                CwCode::InvalidParameterCombination,
                "The parameters Statistics and ExtendedStatistics are mutually exclusive.",
            ));
        }
        if !ext.is_empty() {
            return Err(CwError::invalid(
                "ExtendedStatistics (percentiles) are not kept for AWS/EC2 metrics here.",
            ));
        }
        if stats.is_empty() {
            return Err(CwError::new(
                CwCode::MissingParameter,
                "Must specify either Statistics or ExtendedStatistics.",
            ));
        }
        if stats.len() > 5 {
            return Err(CwError::invalid(
                "The collection Statistics must not have a size greater than 5.",
            ));
        }
        let statistics = stats
            .iter()
            .map(|s| Statistic::parse(s.as_str().unwrap_or_default()))
            .collect::<R<Vec<_>>>()?;
        let start = start.div_euclid(60) * 60;
        let points = (end - start + i64::from(period) - 1) / i64::from(period);
        if points > MAX_STATISTICS_POINTS {
            return Err(CwError::new(
                CwCode::InvalidParameterCombination,
                format!(
                    "You have requested up to {points} datapoints, which exceeds the limit of {MAX_STATISTICS_POINTS}. You may reduce the datapoints requested by increasing Period, or decreasing the time range."
                ),
            ));
        }
        Ok(GetMetricStatistics {
            metric,
            start,
            end,
            period,
            statistics,
        })
    }
}

/// One query of GetMetricData.
#[derive(Debug, Clone, PartialEq)]
pub struct DataQuery {
    /// Id.
    pub id: String,
    /// Label (default: the metric name).
    pub label: String,
    /// Return its data.
    pub return_data: bool,
    /// The metric.
    pub metric: MetricRef,
    /// Bucket width.
    pub period: u32,
    /// Statistic.
    pub stat: Statistic,
}

/// GetMetricData.
#[derive(Debug, Clone, PartialEq)]
pub struct GetMetricData {
    /// Queries.
    pub queries: Vec<DataQuery>,
    /// Range start (rounded down to the minute).
    pub start: i64,
    /// Range end.
    pub end: i64,
    /// Newest first (the default) or oldest first.
    pub descending: bool,
    /// Most datapoints per query.
    pub max_datapoints: i64,
}

fn valid_id(id: &str) -> bool {
    let mut b = id.bytes();
    id.len() <= 255
        && b.next().is_some_and(|c| c.is_ascii_lowercase())
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

impl GetMetricData {
    /// Decodes and validates.
    pub fn parse(v: &Value) -> R<Self> {
        let o = obj(v, "The request")?;
        let raw = list(o, "MetricDataQueries")?;
        if raw.is_empty() {
            return Err(CwError::missing("MetricDataQueries"));
        }
        if raw.len() > MAX_QUERIES {
            return Err(CwError::invalid(format!(
                "The collection MetricDataQueries must not have a size greater than {MAX_QUERIES}."
            )));
        }
        let start = time_of(o, "StartTime")?;
        let end = time_of(o, "EndTime")?;
        check_range(start, end)?;
        let start = start.div_euclid(60) * 60;
        let descending = match opt_str(o, "ScanBy")? {
            None | Some("TimestampDescending") => true,
            Some("TimestampAscending") => false,
            Some(other) => {
                return Err(CwError::invalid(format!(
                    "The value {other} of ScanBy is not valid."
                )))
            }
        };
        let max_datapoints = opt_i64(o, "MaxDatapoints")?.unwrap_or(MAX_DATA_POINTS);
        if max_datapoints <= 0 {
            return Err(CwError::invalid("MaxDatapoints must be positive."));
        }
        let mut queries = Vec::with_capacity(raw.len());
        let mut ids = std::collections::BTreeSet::new();
        for q in raw {
            let q = obj(q, "MetricDataQuery")?;
            let id = req_str(q, "Id")?;
            if !valid_id(id) {
                return Err(CwError::invalid(format!(
                    "The value {id} for parameter MetricDataQueries.member.Id is not valid: it must start with a lowercase letter and contain only letters, digits and underscores."
                )));
            }
            if !ids.insert(id.to_string()) {
                return Err(CwError::invalid(format!(
                    "The Id {id} is used more than once."
                )));
            }
            let has_stat = q.get("MetricStat").is_some_and(|v| !v.is_null());
            let has_expr = opt_str(q, "Expression")?.is_some();
            let stat_obj = match (has_stat, has_expr) {
                (true, true) => {
                    return Err(CwError::new(
                        CwCode::InvalidParameterCombination,
                        format!("The query {id} has both MetricStat and Expression."),
                    ))
                }
                (false, true) => {
                    return Err(CwError::invalid(
                        "Metric math expressions are not supported: use MetricStat.",
                    ))
                }
                (false, false) => {
                    return Err(CwError::new(
                        CwCode::MissingParameter,
                        format!("The query {id} needs a MetricStat."),
                    ))
                }
                (true, false) => obj(&q["MetricStat"], "MetricStat")?,
            };
            let metric_v = stat_obj
                .get("Metric")
                .ok_or_else(|| CwError::missing("MetricStat.Metric"))?;
            let metric = metric_ref(obj(metric_v, "Metric")?, "MetricName")?;
            let period = opt_i64(stat_obj, "Period")?
                .ok_or_else(|| CwError::missing("MetricStat.Period"))?;
            let period = check_period(period)?;
            let stat = Statistic::parse(req_str(stat_obj, "Stat")?)?;
            let label = opt_str(q, "Label")?.unwrap_or(&metric.name).to_string();
            queries.push(DataQuery {
                id: id.to_string(),
                label,
                return_data: opt_bool(q, "ReturnData")?.unwrap_or(true),
                metric,
                period,
                stat,
            });
        }
        Ok(GetMetricData {
            queries,
            start,
            end,
            descending,
            max_datapoints,
        })
    }
}

/// ListMetrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListMetrics {
    /// Only this metric name.
    pub metric_name: Option<String>,
    /// Only metrics with these dimensions (value optional).
    pub dimensions: Vec<Dimension>,
    /// Namespace filter matched nothing we serve.
    pub other_namespace: bool,
}

impl ListMetrics {
    /// Decodes and validates.
    pub fn parse(v: &Value) -> R<Self> {
        let o = obj(v, "The request")?;
        let other_namespace = opt_str(o, "Namespace")?.is_some_and(|n| n != NAMESPACE);
        let metric_name = opt_str(o, "MetricName")?.map(str::to_string);
        let dimensions = dimensions(o, "Dimensions", false)?;
        if dimensions.len() > 10 {
            return Err(CwError::invalid(
                "The collection Dimensions must not have a size greater than 10.",
            ));
        }
        Ok(ListMetrics {
            metric_name,
            dimensions,
            other_namespace,
        })
    }
}

#[cfg(test)]
mod tests;
