//! DescribeInstanceTypes over the gateway: the catalogue in etcd (an
//! operator's new type appears), EC2's filters and fields, InstanceType.N
//! and its errors.

use super::{cloud, texts, V};
use crate::domain::catalogue::InstanceType;
use crate::domain::Caller;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_instance_types_filters_fields_and_errors() {
    let Some(c) = cloud().await else { return };
    let q = |rest: &str| format!("Action=DescribeInstanceTypes&{V}{rest}");

    // EC2's families are there (compact seed: t2 keeps EC2's sizes).
    let xml = c
        .ok(&q("&InstanceType.1=t2.micro&InstanceType.2=r5.large"))
        .await;
    assert_eq!(texts(&xml, "instanceType"), ["r5.large", "t2.micro"]);
    assert_eq!(texts(&xml, "sizeInMiB"), ["16384", "1024"]);
    assert_eq!(texts(&xml, "defaultVCpus"), ["2", "1"]);
    assert_eq!(texts(&xml, "defaultCores"), ["1", "1"]);
    assert_eq!(texts(&xml, "defaultThreadsPerCore"), ["2", "1"]);
    assert_eq!(
        texts(&xml, "burstablePerformanceSupported"),
        ["false", "true"]
    );
    assert_eq!(texts(&xml, "freeTierEligible"), ["false", "true"]);
    assert!(xml.contains("<supportedUsageClasses><item>on-demand</item></supportedUsageClasses>"));
    assert!(xml.contains("<currentGeneration>true</currentGeneration>"));

    // Filters.
    let xml = c
        .ok(&q(
            "&Filter.1.Name=vcpu-info.default-vcpus&Filter.1.Value.1=16\
                &Filter.2.Name=memory-info.size-in-mib&Filter.2.Value.1=65536",
        ))
        .await;
    assert_eq!(texts(&xml, "instanceType"), ["m5.4xlarge"]);
    let xml = c
        .ok(&q(
            "&Filter.1.Name=instance-type&Filter.1.Value.1=t3a.*\
                &Filter.2.Name=burstable-performance-supported&Filter.2.Value.1=true",
        ))
        .await;
    assert_eq!(texts(&xml, "instanceType").len(), 7, "{xml}");
    let xml = c
        .ok(&q(
            "&Filter.1.Name=current-generation&Filter.1.Value.1=false",
        ))
        .await;
    assert!(texts(&xml, "instanceType").is_empty(), "{xml}");

    // Errors as EC2.
    let (s, code) = c
        .err(&q("&InstanceType.1=t3.micro&InstanceType.2=x9.huge"))
        .await;
    assert_eq!((s, code.as_str()), (400, "InvalidInstanceType"));
    let (_, code) = c.err(&q("&Filter.1.Name=nope&Filter.1.Value.1=x")).await;
    assert_eq!(code, "InvalidParameterValue");
    let (_, code) = c.err(&q("&MaxResults=3")).await;
    assert_eq!(code, "InvalidParameterValue");

    // A type the operator adds is described (same replica: no wait).
    let d = &c.replica.as_ref().unwrap().domain;
    d.put_instance_type(
        &Caller::Operator,
        InstanceType {
            name: "x1.medium".into(),
            vcpus: 3,
            memory_mib: 96,
            limits: None,
        },
    )
    .await
    .unwrap();
    let xml = c
        .ok(&q(
            "&Filter.1.Name=vcpu-info.default-vcpus&Filter.1.Value.1=3",
        ))
        .await;
    assert_eq!(texts(&xml, "instanceType"), ["x1.medium"]);
    assert_eq!(texts(&xml, "defaultThreadsPerCore"), ["1"]);
    // Tenants cannot change the catalogue.
    let tenant = d
        .put_instance_type(
            &Caller::Tenant(crate::ids::AccountId::operator()),
            InstanceType {
                name: "x1.small".into(),
                vcpus: 1,
                memory_mib: 64,
                limits: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(tenant.code(), "UnauthorizedOperation");
}
