//! Tags over the gateway: EC2's limits and error codes (TagLimitExceeded,
//! key/value lengths, the reserved `aws:` prefix, MissingParameter), the
//! `aws:` tags' exemption, DescribeTags' filters, and tenant isolation.

use super::{cloud, texts, V};

fn tags_param(prefix: &str, from: usize, n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "&{prefix}.{}.Key=k{}&{prefix}.{}.Value=v",
                i + 1,
                from + i,
                i + 1
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_limits_errors_filters_and_isolation() {
    let Some(c) = cloud().await else { return };
    let ami = texts(
        &c.ok(&format!(
            "Action=DescribeImages&{V}&Filter.1.Name=name&Filter.1.Value.1=hello"
        ))
        .await,
        "imageId",
    )
    .remove(0);
    let run = |tags: &str| {
        format!(
            "Action=RunInstances&{V}&ImageId={ami}&InstanceType=t3.nano&MinCount=1&MaxCount=1{tags}"
        )
    };
    let i1 = texts(&c.ok(&run("")).await, "instanceId").remove(0);
    let i2 = texts(
        &c.ok(&run(
            "&TagSpecification.1.ResourceType=instance&TagSpecification.1.Tag.1.Key=team&TagSpecification.1.Tag.1.Value=blue",
        ))
        .await,
        "instanceId",
    )
    .remove(0);
    let create = |ids: &[&str], tags: &str| {
        let ids: String = ids
            .iter()
            .enumerate()
            .map(|(n, id)| format!("&ResourceId.{}={id}", n + 1))
            .collect();
        format!("Action=CreateTags&{V}{ids}{tags}")
    };

    // 51 tags in one request: TagLimitExceeded (also at launch).
    let (s, code) = c.err(&create(&[&i1], &tags_param("Tag", 0, 51))).await;
    assert_eq!((s, code.as_str()), (400, "TagLimitExceeded"));
    let (_, code) = c
        .err(&run(&format!(
            "&TagSpecification.1.ResourceType=instance{}",
            tags_param("TagSpecification.1.Tag", 0, 51)
        )))
        .await;
    assert_eq!(code, "TagLimitExceeded");
    // 50 fit; one more on the resource is over the limit (resources before
    // it in the call are tagged: one compare-and-swap per resource).
    c.ok(&create(&[&i1], &tags_param("Tag", 0, 50))).await;
    let (_, code) = c
        .err(&create(&[&i2, &i1], "&Tag.1.Key=extra&Tag.1.Value=x"))
        .await;
    assert_eq!(code, "TagLimitExceeded");
    // Overwriting an existing key is not a new tag.
    c.ok(&create(&[&i1], "&Tag.1.Key=k0&Tag.1.Value=new")).await;

    // aws: tags are the system's: they do not count, and DeleteTags without
    // keys leaves them.
    let d = &c.replica.as_ref().unwrap().domain;
    let (key, _) = d
        .store()
        .instances()
        .all()
        .collect()
        .await
        .unwrap()
        .into_iter()
        .find(|(_, v)| v.value.id.to_string() == i1)
        .unwrap();
    d.store()
        .repo::<crate::domain::model::Instance>()
        .update(&key, |cur| {
            let mut v = cur.clone();
            v.tags
                .insert("aws:autoscaling:groupName".into(), "g".into());
            Ok(Some(v))
        })
        .await
        .unwrap();
    c.ok(&create(&[&i1], "&Tag.1.Key=k1&Tag.1.Value=again"))
        .await;
    c.ok(&format!("Action=DeleteTags&{V}&ResourceId.1={i1}"))
        .await;
    let xml = c
        .ok(&format!(
            "Action=DescribeTags&{V}&Filter.1.Name=resource-id&Filter.1.Value.1={i1}"
        ))
        .await;
    assert_eq!(texts(&xml, "key"), ["aws:autoscaling:groupName"], "{xml}");

    // Keys and values: lengths and the reserved prefix.
    let k129 = "k".repeat(129);
    let v257 = "v".repeat(257);
    for (tags, want) in [
        (
            format!("&Tag.1.Key={k129}&Tag.1.Value=x"),
            "InvalidParameterValue",
        ),
        (
            format!("&Tag.1.Key=ok&Tag.1.Value={v257}"),
            "InvalidParameterValue",
        ),
        (
            "&Tag.1.Key=aws:mine&Tag.1.Value=x".to_string(),
            "InvalidParameterValue",
        ),
        (
            "&Tag.1.Key=AWS:mine&Tag.1.Value=x".to_string(),
            "InvalidParameterValue",
        ),
        ("&Tag.1.Key=&Tag.1.Value=x".to_string(), "MissingParameter"),
        (String::new(), "MissingParameter"),
    ] {
        let (_, code) = c.err(&create(&[&i2], &tags)).await;
        assert_eq!(code, want, "{tags}");
    }
    let (_, code) = c
        .err(&format!("Action=CreateTags&{V}&Tag.1.Key=a&Tag.1.Value=b"))
        .await;
    assert_eq!(code, "MissingParameter");
    let (_, code) = c.err(&format!("Action=DeleteTags&{V}")).await;
    assert_eq!(code, "MissingParameter");
    let (_, code) = c
        .err(&format!(
            "Action=DeleteTags&{V}&ResourceId.1={i1}&Tag.1.Key=aws:autoscaling:groupName"
        ))
        .await;
    assert_eq!(code, "InvalidParameterValue");
    c.ok(&create(
        &[&i2],
        &format!(
            "&Tag.1.Key={}&Tag.1.Value={}",
            "k".repeat(128),
            "v".repeat(256)
        ),
    ))
    .await;

    // DescribeTags filters.
    c.ok(&create(
        &[&i1],
        "&Tag.1.Key=team&Tag.1.Value=red&Tag.2.Key=env&Tag.2.Value=prod",
    ))
    .await;
    let q = |f: &str| format!("Action=DescribeTags&{V}{f}");
    let xml = c.ok(&q("&Filter.1.Name=key&Filter.1.Value.1=team")).await;
    let mut ids = texts(&xml, "resourceId");
    ids.sort();
    let mut want = vec![i1.clone(), i2.clone()];
    want.sort();
    assert_eq!(ids, want);
    let xml = c
        .ok(&q(
            "&Filter.1.Name=key&Filter.1.Value.1=team&Filter.2.Name=value&Filter.2.Value.1=bl*",
        ))
        .await;
    assert_eq!(texts(&xml, "resourceId"), std::slice::from_ref(&i2));
    // tag:KEY selects resources and returns all their tags.
    let xml = c
        .ok(&q("&Filter.1.Name=tag:team&Filter.1.Value.1=red"))
        .await;
    assert!(texts(&xml, "resourceId").iter().all(|r| *r == i1), "{xml}");
    let mut keys = texts(&xml, "key");
    keys.sort();
    assert_eq!(keys, ["aws:autoscaling:groupName", "env", "team"]);
    let xml = c
        .ok(&q("&Filter.1.Name=resource-type&Filter.1.Value.1=image"))
        .await;
    assert!(xml.contains("<tagSet/>"), "{xml}");
    let xml = c
        .ok(&q(
            "&Filter.1.Name=resource-type&Filter.1.Value.1=instance&MaxResults=5",
        ))
        .await;
    assert_eq!(texts(&xml, "key").len(), 5);
    assert_eq!(texts(&xml, "nextToken").len(), 1);
    let (_, code) = c.err(&q("&Filter.1.Name=owner&Filter.1.Value.1=x")).await;
    assert_eq!(code, "InvalidParameterValue");

    // Tenant isolation: B neither sees nor changes A's tags.
    let xml = c.call_as(&c.b, &q("")).await.1;
    assert!(xml.contains("<tagSet/>"), "{xml}");
    let (_, code) = c
        .err_as(&c.b, &create(&[&i1], "&Tag.1.Key=x&Tag.1.Value=y"))
        .await;
    assert_eq!(code, "InvalidInstanceID.NotFound");
    let (_, code) = c
        .err_as(&c.b, &format!("Action=DeleteTags&{V}&ResourceId.1={i1}"))
        .await;
    assert_eq!(code, "InvalidInstanceID.NotFound");
    let xml = c
        .ok(&q(&format!(
            "&Filter.1.Name=resource-id&Filter.1.Value.1={i1}"
        )))
        .await;
    assert!(!texts(&xml, "key").contains(&"x".to_string()), "{xml}");
}
