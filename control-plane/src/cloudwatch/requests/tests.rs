use std::collections::BTreeMap;

use serde_json::json;

use super::*;

fn form(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn code(e: CwError) -> &'static str {
    e.code.as_str()
}

fn stats_json() -> Value {
    json!({
        "Namespace": "AWS/EC2", "MetricName": "CPUUtilization",
        "Dimensions": [{"Name": "InstanceId", "Value": "i-0123456789abcdef0"}],
        "StartTime": 1_800_000_030, "EndTime": 1_800_003_600.5, "Period": 300,
        "Statistics": ["Average", "Maximum"],
    })
}

#[test]
fn query_forms_fold_into_the_json_shape() {
    let f = form(&[
        ("Action", "GetMetricStatistics"),
        ("Version", "2010-08-01"),
        ("Namespace", "AWS/EC2"),
        ("MetricName", "CPUUtilization"),
        ("Dimensions.member.1.Name", "InstanceId"),
        ("Dimensions.member.1.Value", "i-0123456789abcdef0"),
        ("StartTime", "2027-01-15T08:00:30Z"),
        ("EndTime", "2027-01-15T09:00:00.000Z"),
        ("Period", "300"),
        ("Statistics.member.2", "Maximum"),
        ("Statistics.member.1", "Average"),
    ]);
    let tree = tree_of_form(&f).expect("tree");
    assert_eq!(tree["Statistics"], json!(["Average", "Maximum"]));
    assert_eq!(tree["Dimensions"][0]["Value"], "i-0123456789abcdef0");
    let r = GetMetricStatistics::parse(&tree).expect("parse");
    assert_eq!(r.start % 60, 0, "start rounded down to the minute");
    assert_eq!(r.end - r.start, 3600);
    assert_eq!(r.period, 300);
    assert_eq!(r.statistics, vec![Statistic::Average, Statistic::Maximum]);
    assert_eq!(
        r.metric.selector,
        Selector::Instance("i-0123456789abcdef0".into())
    );
    // Index 10 sorts after 9, not after 1.
    let mut many = vec![];
    for i in 1..=11 {
        many.push((format!("Statistics.member.{i}"), format!("s{i}")));
    }
    let f: BTreeMap<String, String> = many.into_iter().collect();
    let t = tree_of_form(&f).expect("tree");
    assert_eq!(t["Statistics"][9], "s10");
    assert_eq!(t["Statistics"][10], "s11");
    for bad in [
        "Statistics.member.0",
        "Statistics.member.x",
        "Statistics.member",
    ] {
        assert_eq!(
            code(tree_of_form(&form(&[(bad, "v")])).expect_err(bad)),
            "InvalidParameterValue"
        );
    }
}

#[test]
fn json_statistics_requests_are_validated() {
    let r = GetMetricStatistics::parse(&stats_json()).expect("valid");
    assert_eq!((r.start, r.end), (1_800_000_000, 1_800_003_600));
    let with = |k: &str, v: Value| {
        let mut j = stats_json();
        j[k] = v;
        GetMetricStatistics::parse(&j)
    };
    // Reversed range, bad periods, unknown metric / namespace / statistic.
    assert_eq!(
        code(with("EndTime", json!(1_700_000_000)).expect_err("reversed")),
        "InvalidParameterValue"
    );
    assert_eq!(
        code(with("Period", json!(90)).expect_err("90")),
        "InvalidParameterValue"
    );
    assert_eq!(
        code(with("Period", json!(0)).expect_err("0")),
        "InvalidParameterValue"
    );
    assert_eq!(
        code(with("Period", json!("x")).expect_err("x")),
        "InvalidParameterValue"
    );
    assert_eq!(
        code(with("MetricName", json!("CPUUtilisation")).expect_err("metric")),
        "InvalidParameterValue"
    );
    assert_eq!(
        code(with("Namespace", json!("AWS/EBS")).expect_err("ns")),
        "InvalidParameterValue"
    );
    assert_eq!(
        code(with("Statistics", json!(["p99"])).expect_err("stat")),
        "InvalidParameterValue"
    );
    assert_eq!(
        code(with("Statistics", json!([])).expect_err("none")),
        "MissingParameter"
    );
    assert_eq!(
        code(with("ExtendedStatistics", json!(["p99"])).expect_err("both")),
        "InvalidParameterCombination"
    );
    assert_eq!(
        code(with("StartTime", json!(null)).expect_err("start")),
        "MissingParameter"
    );
    assert_eq!(
        code(with("StartTime", json!("yesterday")).expect_err("time")),
        "InvalidParameterValue"
    );
    assert_eq!(
        code(with("Namespace", json!(7)).expect_err("type")),
        "InvalidParameterValue"
    );
    // More than 1440 datapoints.
    assert_eq!(
        code(
            with("Period", json!(60))
                .and_then(|_| {
                    let mut j = stats_json();
                    j["Period"] = json!(60);
                    j["EndTime"] = json!(1_800_000_000 + 1441 * 60);
                    GetMetricStatistics::parse(&j)
                })
                .expect_err("points")
        ),
        "InvalidParameterCombination"
    );
    // Dimensions select instances, groups, everything, or nothing.
    let sel = |d: Value| with("Dimensions", d).expect("valid").metric.selector;
    assert_eq!(sel(json!([])), Selector::All);
    assert_eq!(
        sel(json!([{"Name": "AutoScalingGroupName", "Value": "web"}])),
        Selector::Group("web".into())
    );
    assert_eq!(
        sel(json!([{"Name": "ImageId", "Value": "ami-1"}])),
        Selector::Unsupported
    );
    assert_eq!(
        code(with("Dimensions", json!([{"Name": "InstanceId"}])).expect_err("value")),
        "MissingParameter"
    );
    assert_eq!(
        code(GetMetricStatistics::parse(&json!([1])).expect_err("array")),
        "InvalidParameterValue"
    );
}

fn data_query(id: &str) -> Value {
    json!({"Id": id, "MetricStat": {"Metric": {"Namespace": "AWS/EC2", "MetricName": "NetworkIn",
        "Dimensions": [{"Name": "InstanceId", "Value": "i-0123456789abcdef0"}]},
        "Period": 60, "Stat": "Sum"}})
}

#[test]
fn get_metric_data_limits_and_ids() {
    let req = |queries: Vec<Value>| {
        GetMetricData::parse(&json!({"MetricDataQueries": queries,
            "StartTime": 1_800_000_000, "EndTime": 1_800_000_600}))
    };
    let ok = req(vec![data_query("a"), data_query("b_2")]).expect("valid");
    assert_eq!(ok.queries.len(), 2);
    assert!(ok.descending);
    assert_eq!(ok.queries[1].label, "NetworkIn");
    let many: Vec<Value> = (0..500).map(|i| data_query(&format!("q{i}"))).collect();
    assert_eq!(
        req(many.clone()).expect("500 is the limit").queries.len(),
        500
    );
    let mut too_many = many;
    too_many.push(data_query("q500"));
    assert_eq!(
        code(req(too_many).expect_err("501")),
        "InvalidParameterValue"
    );
    assert_eq!(code(req(vec![]).expect_err("none")), "MissingParameter");
    assert_eq!(
        code(req(vec![data_query("A")]).expect_err("uppercase id")),
        "InvalidParameterValue"
    );
    assert_eq!(
        code(req(vec![data_query("a"), data_query("a")]).expect_err("dup")),
        "InvalidParameterValue"
    );
    let mut expr = data_query("e");
    expr["Expression"] = json!("SUM(METRICS())");
    assert_eq!(
        code(req(vec![expr.clone()]).expect_err("both")),
        "InvalidParameterCombination"
    );
    expr.as_object_mut().expect("obj").remove("MetricStat");
    assert_eq!(
        code(req(vec![expr]).expect_err("math")),
        "InvalidParameterValue"
    );
    let mut bad_period = data_query("p");
    bad_period["MetricStat"]["Period"] = json!(45);
    assert_eq!(
        code(req(vec![bad_period]).expect_err("45")),
        "InvalidParameterValue"
    );
    let reversed = GetMetricData::parse(&json!({"MetricDataQueries": [data_query("a")],
        "StartTime": 1_800_000_600, "EndTime": 1_800_000_000}));
    assert_eq!(
        code(reversed.expect_err("reversed")),
        "InvalidParameterValue"
    );
}

#[test]
fn list_metrics_filters() {
    let l = ListMetrics::parse(
        &json!({"Namespace": "AWS/EC2", "MetricName": "CPUUtilization",
        "Dimensions": [{"Name": "InstanceId"}]}),
    )
    .expect("valid");
    assert_eq!(l.metric_name.as_deref(), Some("CPUUtilization"));
    assert_eq!(l.dimensions[0].value, None);
    assert!(!l.other_namespace);
    assert!(
        ListMetrics::parse(&json!({"Namespace": "AWS/EBS"}))
            .expect("valid")
            .other_namespace
    );
    assert!(ListMetrics::parse(&json!({})).is_ok());
}
