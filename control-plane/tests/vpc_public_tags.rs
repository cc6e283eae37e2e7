//! Tags on Elastic IPs (`eipalloc-`), internet gateways (`igw-`) and route
//! tables (`rtb-`) against a real etcd, through the EC2 gateway's parser
//! and backend: TagSpecification at creation, CreateTags/DeleteTags/
//! DescribeTags, the `tag:`/`tag-key`/`tag-value` filters of the Describe
//! actions, the 50-tag limit, every refusal's EC2 code with nothing
//! written, and tenant isolation (another account's id is not found).

#![allow(clippy::unwrap_used)]

mod support;
mod vpc_common;

use support::*;
use vpc_common::{text, texts, Ec2};

/// One taggable kind: how to create one, describe it, and its codes.
struct Kind {
    resource_type: &'static str,
    create: &'static str,
    id_tag: &'static str,
    describe: &'static str,
    id_param: &'static str,
    not_found: &'static str,
    malformed: &'static str,
}

const KINDS: [Kind; 3] = [
    Kind {
        resource_type: "elastic-ip",
        create: "AllocateAddress",
        id_tag: "allocationId",
        describe: "DescribeAddresses",
        id_param: "AllocationId.1",
        not_found: "InvalidAllocationID.NotFound",
        malformed: "InvalidAllocationID.Malformed",
    },
    Kind {
        resource_type: "internet-gateway",
        create: "CreateInternetGateway",
        id_tag: "internetGatewayId",
        describe: "DescribeInternetGateways",
        id_param: "InternetGatewayId.1",
        not_found: "InvalidInternetGatewayID.NotFound",
        malformed: "InvalidInternetGatewayID.Malformed",
    },
    Kind {
        resource_type: "route-table",
        create: "CreateRouteTable",
        id_tag: "routeTableId",
        describe: "DescribeRouteTables",
        id_param: "RouteTableId.1",
        not_found: "InvalidRouteTableID.NotFound",
        malformed: "InvalidRouteTableID.Malformed",
    },
];

/// The `key=value` tags `describe` shows for `id` (sorted).
async fn tags_of(e: &Ec2, k: &Kind, id: &str) -> Vec<String> {
    let x = e.ok(k.describe, &[(k.id_param, id)]).await;
    let set = x
        .split("<tagSet>")
        .nth(1)
        .and_then(|s| s.split("</tagSet>").next())
        .unwrap_or("");
    let mut out: Vec<String> = texts(set, "key")
        .into_iter()
        .zip(texts(set, "value"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    out.sort();
    out
}

/// Creates one resource of kind `k` with `extra` parameters.
async fn create(e: &Ec2, k: &Kind, vpc: &str, extra: &[(&str, &str)]) -> Result<String, String> {
    let mut p: Vec<(&str, &str)> = Vec::new();
    if k.create == "CreateRouteTable" {
        p.push(("VpcId", vpc));
    }
    p.extend_from_slice(extra);
    e.call(k.create, &p)
        .await
        .map(|x| text(&x, k.id_tag))
        .map_err(|e| e.code.as_str().to_string())
}

/// How many `k` the account has.
async fn count(e: &Ec2, k: &Kind) -> usize {
    texts(&e.ok(k.describe, &[]).await, k.id_tag)
        .into_iter()
        .collect::<std::collections::BTreeSet<_>>()
        .len()
}

fn numbered(n: usize) -> Vec<(String, String)> {
    (0..n)
        .flat_map(|i| {
            [
                (format!("Tag.{}.Key", i + 1), format!("k{i}")),
                (format!("Tag.{}.Value", i + 1), format!("v{i}")),
            ]
        })
        .collect()
}

fn refs(p: &[(String, String)]) -> Vec<(&str, &str)> {
    p.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elastic_ips_gateways_and_route_tables_take_tags() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let mut cfg = config(&etcd);
    cfg.vpc.public_pool = Some("198.51.100.0/24".into());
    let cp = start(cfg).await;
    let a = Ec2::new(&cp.domain, "a").await;
    let b = Ec2::new(&cp.domain, "b").await;
    let vpc = text(&a.ok("DescribeVpcs", &[]).await, "vpcId");
    let bvpc = text(&b.ok("DescribeVpcs", &[]).await, "vpcId");

    for k in &KINDS {
        let ctx = k.resource_type;
        // TagSpecification at creation.
        let spec = [
            ("TagSpecification.1.ResourceType", k.resource_type),
            ("TagSpecification.1.Tag.1.Key", "Name"),
            ("TagSpecification.1.Tag.1.Value", "web"),
            ("TagSpecification.1.Tag.2.Key", "team"),
            ("TagSpecification.1.Tag.2.Value", "blue"),
        ];
        let id = create(&a, k, &vpc, &spec).await.unwrap();
        assert_eq!(
            tags_of(&a, k, &id).await,
            ["Name=web", "team=blue"],
            "{ctx}"
        );
        let plain = create(&a, k, &vpc, &[]).await.unwrap();
        let theirs = create(&b, k, &bvpc, &[]).await.unwrap();

        // Refused creations create nothing.
        let before = count(&a, k).await;
        let wrong_type = [
            ("TagSpecification.1.ResourceType", "vpc"),
            ("TagSpecification.1.Tag.1.Key", "a"),
        ];
        assert_eq!(
            create(&a, k, &vpc, &wrong_type).await.unwrap_err(),
            "InvalidParameterValue",
            "{ctx}"
        );
        let mut too_many: Vec<(String, String)> = numbered(51)
            .into_iter()
            .map(|(p, v)| (format!("TagSpecification.1.{p}"), v))
            .collect();
        too_many.push((
            "TagSpecification.1.ResourceType".into(),
            k.resource_type.into(),
        ));
        assert_eq!(
            create(&a, k, &vpc, &refs(&too_many)).await.unwrap_err(),
            "TagLimitExceeded",
            "{ctx}"
        );
        let aws = [
            ("TagSpecification.1.ResourceType", k.resource_type),
            ("TagSpecification.1.Tag.1.Key", "aws:x"),
        ];
        assert_eq!(
            create(&a, k, &vpc, &aws).await.unwrap_err(),
            "InvalidParameterValue",
            "{ctx}"
        );
        assert_eq!(count(&a, k).await, before, "{ctx}: nothing created");

        // CreateTags overwrites and adds.
        a.ok(
            "CreateTags",
            &[
                ("ResourceId.1", &id),
                ("ResourceId.2", &plain),
                ("Tag.1.Key", "team"),
                ("Tag.1.Value", "red"),
                ("Tag.2.Key", "env"),
                ("Tag.2.Value", ""),
            ],
        )
        .await;
        assert_eq!(
            tags_of(&a, k, &id).await,
            ["Name=web", "env=", "team=red"],
            "{ctx}"
        );
        assert_eq!(tags_of(&a, k, &plain).await, ["env=", "team=red"], "{ctx}");

        // Filters of the Describe action.
        for (name, value, want) in [
            ("tag:Name", "web", vec![id.clone()]),
            ("tag:team", "red", vec![id.clone(), plain.clone()]),
            ("tag:team", "blue", vec![]),
            ("tag-key", "Name", vec![id.clone()]),
            ("tag-value", "re*", vec![id.clone(), plain.clone()]),
        ] {
            let x = a
                .ok(
                    k.describe,
                    &[("Filter.1.Name", name), ("Filter.1.Value.1", value)],
                )
                .await;
            let mut got = texts(&x, k.id_tag);
            got.sort();
            got.dedup();
            let mut want = want;
            want.sort();
            assert_eq!(got, want, "{ctx} {name}={value}");
        }
        // DescribeTags by type and id.
        let x = a
            .ok(
                "DescribeTags",
                &[
                    ("Filter.1.Name", "resource-type"),
                    ("Filter.1.Value.1", k.resource_type),
                    ("Filter.2.Name", "resource-id"),
                    ("Filter.2.Value.1", &id),
                ],
            )
            .await;
        assert_eq!(texts(&x, "key"), ["Name", "env", "team"], "{ctx}: {x}");
        assert!(
            texts(&x, "resourceType")
                .iter()
                .all(|t| t == k.resource_type),
            "{x}"
        );

        // Refusals: nothing written.
        let before = (tags_of(&a, k, &id).await, tags_of(&b, k, &theirs).await);
        let malformed = format!("{}zz", &id[..id.find('-').unwrap() + 1]);
        let missing = format!("{}0123456789abcdef0", &id[..id.find('-').unwrap() + 1]);
        for (who, rid, code) in [
            (&a, theirs.as_str(), k.not_found),
            (&b, id.as_str(), k.not_found),
            (&a, missing.as_str(), k.not_found),
            (&a, malformed.as_str(), k.malformed),
        ] {
            // The valid first id is not tagged either (all or nothing).
            let first = if who.account == a.account {
                &plain
            } else {
                &theirs
            };
            who.fails(
                "CreateTags",
                &[
                    ("ResourceId.1", first),
                    ("ResourceId.2", rid),
                    ("Tag.1.Key", "x"),
                    ("Tag.1.Value", "y"),
                ],
                code,
            )
            .await;
            who.fails(
                "DeleteTags",
                &[("ResourceId.1", rid), ("Tag.1.Key", "team")],
                code,
            )
            .await;
        }
        a.fails(
            "CreateTags",
            &[("ResourceId.1", &id), ("Tag.1.Key", "aws:x")],
            "InvalidParameterValue",
        )
        .await;
        assert_eq!(
            (tags_of(&a, k, &id).await, tags_of(&b, k, &theirs).await),
            before,
            "{ctx}"
        );
        assert!(!tags_of(&a, k, &plain).await.contains(&"x=y".to_string()));
        // B's DescribeTags never shows A's.
        let x = b
            .ok(
                "DescribeTags",
                &[("Filter.1.Name", "resource-id"), ("Filter.1.Value.1", &id)],
            )
            .await;
        assert!(texts(&x, "key").is_empty(), "{x}");

        // The 50-tag limit: 50 fit, the 51st is refused and writes nothing.
        let fifty = numbered(50);
        let mut p = refs(&fifty);
        p.push(("ResourceId.1", &plain));
        a.fails("CreateTags", &p, "TagLimitExceeded").await;
        assert_eq!(tags_of(&a, k, &plain).await, ["env=", "team=red"], "{ctx}");
        a.ok(
            "DeleteTags",
            &[("ResourceId.1", &plain), ("Tag.1.Key", "env")],
        )
        .await;
        let forty_nine = numbered(49);
        let mut p = refs(&forty_nine);
        p.push(("ResourceId.1", &plain));
        a.ok("CreateTags", &p).await;
        assert_eq!(tags_of(&a, k, &plain).await.len(), 50, "{ctx}");
        a.fails(
            "CreateTags",
            &[
                ("ResourceId.1", &plain),
                ("Tag.1.Key", "one"),
                ("Tag.1.Value", "more"),
            ],
            "TagLimitExceeded",
        )
        .await;
        assert_eq!(tags_of(&a, k, &plain).await.len(), 50, "{ctx}");

        // DeleteTags: a value that differs keeps the tag; no tags = all.
        a.ok(
            "DeleteTags",
            &[
                ("ResourceId.1", &id),
                ("Tag.1.Key", "team"),
                ("Tag.1.Value", "blue"),
            ],
        )
        .await;
        assert!(tags_of(&a, k, &id).await.contains(&"team=red".to_string()));
        a.ok(
            "DeleteTags",
            &[("ResourceId.1", &id), ("Tag.1.Key", "team")],
        )
        .await;
        assert_eq!(tags_of(&a, k, &id).await, ["Name=web", "env="], "{ctx}");
        a.ok("DeleteTags", &[("ResourceId.1", &plain)]).await;
        assert!(tags_of(&a, k, &plain).await.is_empty(), "{ctx}");
    }

    // DescribeTags lists the three kinds side by side.
    let x = a
        .ok(
            "DescribeTags",
            &[("Filter.1.Name", "key"), ("Filter.1.Value.1", "Name")],
        )
        .await;
    let mut kinds = texts(&x, "resourceType");
    kinds.sort();
    assert_eq!(
        kinds,
        ["elastic-ip", "internet-gateway", "route-table"],
        "{x}"
    );
}
