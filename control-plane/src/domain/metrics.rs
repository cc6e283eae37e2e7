//! Instance metrics (namespace `AWS/EC2`): which instances a caller may see
//! and the fan-out of a query to the agents that hold their rollups.
//!
//! The agents sample and store (node-agent/src/metrics, docs/metrics.md);
//! this module owns the rules: a tenant names instances of its own account
//! only (instances of other accounts read as absent, so they yield no data,
//! as in CloudWatch an unknown dimension value does), Auto Scaling groups
//! resolve through the `aws:autoscaling:groupName` tag, and each node's
//! agent is asked once per query with the node's current credential over
//! `nubis.node.v1.AgentMetrics`. An agent that cannot be reached makes the
//! answer partial, not an error.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nubis_proto::auth::Credentials;
use nubis_proto::node::v1 as pb;
use pb::agent_metrics_client::AgentMetricsClient;

use crate::domain::model::Instance;
use crate::domain::{Caller, Domain};
use crate::error::{Error, Result};
use crate::ids::{AccountId, InstanceId, NodeId};

/// The metric names of namespace `AWS/EC2` the agents sample.
pub const EC2_METRICS: [&str; 10] = [
    "CPUUtilization",
    "NetworkIn",
    "NetworkOut",
    "NetworkPacketsIn",
    "NetworkPacketsOut",
    "DiskReadBytes",
    "DiskWriteBytes",
    "DiskReadOps",
    "DiskWriteOps",
    "StatusCheckFailed",
];

/// The tag naming an instance's Auto Scaling group.
pub const ASG_TAG: &str = "aws:autoscaling:groupName";

/// How long one agent may take to answer.
const AGENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Instances terminated longer ago than this are not listed by ListMetrics
/// (CloudWatch lists metrics with data in the last two weeks).
const LIST_WINDOW_MS: i64 = 14 * 86_400 * 1000;

/// Statistics of one bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Bucket start, seconds since the Unix epoch.
    pub start_s: i64,
    /// Samples.
    pub count: f64,
    /// Sum.
    pub sum: f64,
    /// Minimum.
    pub min: f64,
    /// Maximum.
    pub max: f64,
}

impl Point {
    /// Average of the samples.
    pub fn average(&self) -> f64 {
        if self.count > 0.0 {
            self.sum / self.count
        } else {
            0.0
        }
    }

    fn merge(&mut self, o: &Point) {
        self.count += o.count;
        self.sum += o.sum;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
    }
}

/// A metric query over some instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricQuery {
    /// One of [`EC2_METRICS`].
    pub metric: String,
    /// Range start (inclusive), seconds since the Unix epoch.
    pub from_s: i64,
    /// Range end (exclusive).
    pub to_s: i64,
    /// Bucket width, a positive multiple of 60.
    pub period_s: u32,
}

/// Buckets merged over the instances asked for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricAnswer {
    /// Buckets with data, oldest first.
    pub points: Vec<Point>,
    /// Some agent did not answer: data may be missing.
    pub partial: bool,
}

/// Checks the endpoint an agent registers (`host:port`, `unix:/path`, or
/// empty).
pub fn check_endpoint(ep: &str) -> Result<()> {
    if ep.is_empty() {
        return Ok(());
    }
    let bad = || Error::invalid("metrics_endpoint must be host:port or unix:/path");
    if ep.len() > 255 {
        return Err(bad());
    }
    if let Some(path) = ep.strip_prefix("unix:") {
        let ok = path.starts_with('/')
            && !path.split('/').any(|c| c == "..")
            && path
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/-._".contains(&b));
        return if ok { Ok(()) } else { Err(bad()) };
    }
    let (host, port) = ep.rsplit_once(':').ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty()
        || port.parse::<u16>().map_or(true, |p| p == 0)
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:".contains(&b))
    {
        return Err(bad());
    }
    Ok(())
}

/// The URI to dial for a registered endpoint.
fn dial_uri(ep: &str) -> String {
    if ep.starts_with("unix:") {
        ep.to_string()
    } else {
        format!("http://{ep}")
    }
}

fn check_query(q: &MetricQuery) -> Result<()> {
    if !EC2_METRICS.contains(&q.metric.as_str()) {
        return Err(Error::invalid(format!("unknown metric {}", q.metric)));
    }
    if q.period_s == 0 || !q.period_s.is_multiple_of(60) {
        return Err(Error::invalid(
            "the period must be a positive multiple of 60",
        ));
    }
    if q.to_s <= q.from_s || q.from_s < 0 {
        return Err(Error::invalid("the start time must be before the end time"));
    }
    Ok(())
}

/// Merges per-instance buckets into one series (bucket starts are aligned
/// to the query's start, so equal starts are the same bucket).
fn merge(series: impl IntoIterator<Item = Vec<Point>>) -> Vec<Point> {
    let mut by_start: BTreeMap<i64, Point> = BTreeMap::new();
    for s in series {
        for p in s {
            by_start
                .entry(p.start_s)
                .and_modify(|acc| acc.merge(&p))
                .or_insert(p);
        }
    }
    by_start.into_values().collect()
}

impl Domain {
    /// The caller's instances among `ids` (others and unknown ids are
    /// dropped: they have no data for this caller).
    async fn own_instances(&self, account: &AccountId, ids: &[String]) -> Result<Vec<Instance>> {
        let mut parsed: Vec<InstanceId> = ids
            .iter()
            .filter_map(|s| InstanceId::parse(s).ok())
            .collect();
        parsed.sort();
        parsed.dedup();
        if parsed.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self
            .store
            .instances()
            .get_many(account, &parsed)
            .await?
            .into_iter()
            .flatten()
            .map(|v| v.value)
            .collect())
    }

    /// The instances of the caller's Auto Scaling group `group` (by tag).
    pub async fn group_instance_ids(&self, caller: &Caller, group: &str) -> Result<Vec<String>> {
        let account = caller.account()?;
        let all = self.store.instances().of(&account).collect().await?;
        Ok(all
            .into_iter()
            .map(|(_, v)| v.value)
            .filter(|i| i.tags.get(ASG_TAG).is_some_and(|g| g == group))
            .map(|i| i.id.to_string())
            .collect())
    }

    /// Instances whose metrics ListMetrics shows: the caller's instances
    /// that were placed on a node and are not terminated for more than two
    /// weeks; with their group tag.
    pub async fn metric_instances(&self, caller: &Caller) -> Result<Vec<(String, Option<String>)>> {
        let account = caller.account()?;
        let now = crate::domain::model::now_ms();
        let all = self.store.instances().of(&account).collect().await?;
        Ok(all
            .into_iter()
            .map(|(_, v)| v.value)
            .filter(|i| i.node_id.is_some())
            .filter(|i| i.terminated_ms.is_none_or(|t| now - t < LIST_WINDOW_MS))
            .map(|i| (i.id.to_string(), i.tags.get(ASG_TAG).cloned()))
            .collect())
    }

    /// Statistics of `q` over the caller's instances among `instance_ids`,
    /// merged into one series (one instance: its own series; several, e.g.
    /// an Auto Scaling group: the aggregate over them).
    pub async fn instance_metric(
        &self,
        caller: &Caller,
        instance_ids: &[String],
        q: &MetricQuery,
    ) -> Result<MetricAnswer> {
        check_query(q)?;
        let account = caller.account()?;
        let instances = self.own_instances(&account, instance_ids).await?;
        let mut by_node: BTreeMap<NodeId, Vec<String>> = BTreeMap::new();
        for i in instances {
            if let Some(n) = i.node_id {
                by_node.entry(n).or_default().push(i.id.to_string());
            }
        }
        let nodes: Vec<NodeId> = by_node.keys().cloned().collect();
        let mut asks = Vec::with_capacity(nodes.len());
        for (node, ids) in by_node {
            asks.push(self.ask_agent(node, ids, q));
        }
        let mut answer = MetricAnswer::default();
        let mut series = Vec::new();
        for (node, r) in nodes.iter().zip(futures::future::join_all(asks).await) {
            match r {
                Ok(s) => series.extend(s),
                Err(e) => {
                    tracing::warn!(%node, error = %e, "metrics: agent did not answer");
                    answer.partial = true;
                }
            }
        }
        answer.points = merge(series);
        Ok(answer)
    }

    /// Average CPUUtilization (percent) of `instance_ids` of `account` over
    /// `[from, to)`: the mean of all 10-s samples of all those instances in
    /// the range, `None` when there are none. For target tracking (the Auto
    /// Scaling controller); the range is widened to whole minutes.
    pub async fn average_cpu(
        &self,
        account: &AccountId,
        instance_ids: &[InstanceId],
        from: SystemTime,
        to: SystemTime,
    ) -> Result<Option<f64>> {
        let secs = |t: SystemTime| {
            t.duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0)
        };
        let from_s = secs(from) / 60 * 60;
        let to_s = (secs(to) + 59) / 60 * 60;
        if to_s <= from_s {
            return Ok(None);
        }
        let span =
            u32::try_from(to_s - from_s).map_err(|_| Error::invalid("the range is too long"))?;
        let q = MetricQuery {
            metric: "CPUUtilization".into(),
            from_s,
            to_s,
            period_s: span,
        };
        let ids: Vec<String> = instance_ids.iter().map(|i| i.to_string()).collect();
        let a = self
            .instance_metric(&Caller::Tenant(account.clone()), &ids, &q)
            .await?;
        let (count, sum) = a
            .points
            .iter()
            .fold((0.0, 0.0), |(c, s), p| (c + p.count, s + p.sum));
        Ok((count > 0.0).then(|| sum / count))
    }

    /// One agent's series for `ids`.
    async fn ask_agent(
        &self,
        node: NodeId,
        ids: Vec<String>,
        q: &MetricQuery,
    ) -> Result<Vec<Vec<Point>>> {
        let rec = self
            .store
            .nodes()
            .get(&node)
            .await?
            .ok_or_else(|| Error::Internal(format!("node {node} has no record")))?
            .value;
        if rec.metrics_endpoint.is_empty() {
            return Err(Error::Internal(format!("node {node} serves no metrics")));
        }
        let (_, secret) = self.access_key_secret(&rec.credential_key_id).await?;
        let creds = Credentials::new(rec.credential_key_id.clone(), secret);
        let endpoint = dial_uri(&rec.metrics_endpoint);
        let call = async {
            let channel = nubis_proto::transport::connect(&endpoint)
                .await
                .map_err(|e| Error::Internal(format!("dialing {endpoint}: {e}")))?;
            let mut client =
                AgentMetricsClient::new(nubis_proto::auth::Signed::new(channel, creds));
            client
                .query_metrics(pb::QueryMetricsRequest {
                    instance_ids: ids,
                    metric: q.metric.clone(),
                    from_unix_s: q.from_s,
                    to_unix_s: q.to_s,
                    period_s: q.period_s,
                })
                .await
                .map_err(|s| Error::Internal(format!("agent {endpoint}: {}", s.message())))
        };
        let resp = tokio::time::timeout(AGENT_TIMEOUT, call)
            .await
            .map_err(|_| Error::Internal(format!("agent {endpoint} timed out")))??
            .into_inner();
        Ok(resp
            .series
            .into_iter()
            .map(|s| {
                s.points
                    .into_iter()
                    .filter(|p| p.sample_count > 0.0 && p.sample_count.is_finite())
                    .map(|p| Point {
                        start_s: p.start_unix_s,
                        count: p.sample_count,
                        sum: p.sum,
                        min: p.minimum,
                        max: p.maximum,
                    })
                    .collect()
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(start_s: i64, v: f64) -> Point {
        Point {
            start_s,
            count: 1.0,
            sum: v,
            min: v,
            max: v,
        }
    }

    #[test]
    fn series_merge_by_bucket() {
        let m = merge([
            vec![p(0, 10.0), p(60, 20.0)],
            vec![p(60, 40.0), p(120, 1.0)],
        ]);
        assert_eq!(m.len(), 3);
        assert_eq!(m[1].count, 2.0);
        assert_eq!(m[1].average(), 30.0);
        assert_eq!((m[1].min, m[1].max), (20.0, 40.0));
    }

    #[test]
    fn endpoints_and_queries_are_checked() {
        for ok in [
            "",
            "127.0.0.1:9101",
            "node-1.example:80",
            "[::1]:9101",
            "unix:/var/lib/nubis/metrics.sock",
        ] {
            assert!(check_endpoint(ok).is_ok(), "{ok}");
        }
        for bad in [
            "127.0.0.1",
            "host:0",
            "host:x",
            ":80",
            "a/b:80",
            "h:80\n",
            "unix:relative.sock",
            "unix:/a/../b",
            "unix:/a b",
        ] {
            assert!(check_endpoint(bad).is_err(), "{bad}");
        }
        let q = |m: &str, from, to, period| MetricQuery {
            metric: m.into(),
            from_s: from,
            to_s: to,
            period_s: period,
        };
        assert!(check_query(&q("CPUUtilization", 0, 60, 60)).is_ok());
        assert!(check_query(&q("CPUUtilisation", 0, 60, 60)).is_err());
        assert!(check_query(&q("CPUUtilization", 60, 0, 60)).is_err());
        assert!(check_query(&q("CPUUtilization", 0, 60, 90)).is_err());
    }
}
