use http::HeaderValue;

use super::actions::{DataResult, Output};
use super::requests::{Dimension, Statistic};
use super::*;

#[test]
fn routing_looks_at_the_scope_and_the_json_target() {
    let mut h = HeaderMap::new();
    assert!(!is_cloudwatch(&h));
    h.insert(
        header::AUTHORIZATION,
        HeaderValue::from_static(
            "AWS4-HMAC-SHA256 Credential=AKID/20270115/test-1/monitoring/aws4_request, SignedHeaders=host;x-amz-date, Signature=00",
        ),
    );
    assert_eq!(scope_service(&h).as_deref(), Some("monitoring"));
    assert!(is_cloudwatch(&h));
    h.insert(
        header::AUTHORIZATION,
        HeaderValue::from_static(
            "AWS4-HMAC-SHA256 Credential=AKID/20270115/test-1/ec2/aws4_request, SignedHeaders=host, Signature=00",
        ),
    );
    assert!(!is_cloudwatch(&h));
    h.insert(
        "x-amz-target",
        HeaderValue::from_static("GraniteServiceVersion20100801.ListMetrics"),
    );
    assert!(
        is_cloudwatch(&h),
        "the JSON target wins over a wrong scope (answered with IncompleteSignature)"
    );
}

#[test]
fn errors_in_both_protocols() {
    let e = CwError::invalid("The parameter Period must be a multiple of 60.");
    let j: serde_json::Value = serde_json::from_str(&e.to_json()).expect("json");
    assert_eq!(j["__type"], "InvalidParameterValueException");
    assert_eq!(
        j["message"],
        "The parameter Period must be a multiple of 60."
    );
    assert_eq!(e.query_error_header(), "InvalidParameterValue;Sender");
    let x = CwError::new(CwCode::InternalServiceError, "a < b").to_xml("rid-1");
    assert!(
        x.contains(
            "<Type>Receiver</Type><Code>InternalServiceError</Code><Message>a &lt; b</Message>"
        ),
        "{x}"
    );
    assert!(x.contains("<RequestId>rid-1</RequestId>"));
    assert_eq!(
        CwCode::SignatureDoesNotMatch.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        CwCode::MissingParameter.json_type(),
        "MissingRequiredParameterException"
    );
}

#[test]
fn outputs_in_both_protocols() {
    let stats = Output::Statistics {
        label: "CPUUtilization".into(),
        unit: "Percent",
        points: vec![(
            1_800_000_000,
            vec![(Statistic::Average, 97.5), (Statistic::Maximum, 100.0)],
        )],
    };
    let j: serde_json::Value = serde_json::from_str(&stats.to_json()).expect("json");
    assert_eq!(j["Datapoints"][0]["Timestamp"], 1_800_000_000);
    assert_eq!(j["Datapoints"][0]["Average"], 97.5);
    assert_eq!(j["Datapoints"][0]["Unit"], "Percent");
    let x = stats.to_xml("GetMetricStatistics", "r");
    assert!(x.contains("<GetMetricStatisticsResult><Label>CPUUtilization</Label><Datapoints><member><Timestamp>2027-01-15T08:00:00Z</Timestamp><Average>97.5</Average><Maximum>100</Maximum><Unit>Percent</Unit></member>"), "{x}");
    let data = Output::Data(vec![DataResult {
        id: "a".into(),
        label: "L".into(),
        timestamps: vec![1_800_000_060, 1_800_000_000],
        values: vec![1.0, 2.0],
        status: "Complete",
    }]);
    let j: serde_json::Value = serde_json::from_str(&data.to_json()).expect("json");
    assert_eq!(
        j["MetricDataResults"][0]["Values"],
        serde_json::json!([1.0, 2.0])
    );
    assert!(data
        .to_xml("GetMetricData", "r")
        .contains("<Timestamps><member>2027-01-15T08:01:00Z</member><member>2027-01-15T08:00:00Z</member></Timestamps><Values><member>1</member><member>2</member></Values><StatusCode>Complete</StatusCode>"));
    let list = Output::List(vec![(
        "NetworkIn".into(),
        vec![Dimension {
            name: "InstanceId".into(),
            value: Some("i-1".into()),
        }],
    )]);
    assert!(list
        .to_xml("ListMetrics", "r")
        .contains("<member><Namespace>AWS/EC2</Namespace><MetricName>NetworkIn</MetricName><Dimensions><member><Name>InstanceId</Name><Value>i-1</Value></member></Dimensions></member>"));
}
