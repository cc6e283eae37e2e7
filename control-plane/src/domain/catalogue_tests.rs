//! Tests of the seed sets, ordering, validation and DescribeInstanceTypes.

use super::*;

fn f(name: &str, v: &str) -> Filter {
    Filter {
        name: name.into(),
        values: vec![v.into()],
    }
}

fn find<'a>(all: &'a [InstanceType], name: &str) -> &'a InstanceType {
    all.iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("{name} missing"))
}

#[test]
fn ec2_seed_has_ec2_sizes() {
    let all = seed(SeedProfile::Ec2);
    assert_eq!(all.len(), 3 * 7 + 3 * 4);
    let size = |n: &str| {
        let t = find(&all, n);
        (t.vcpus, t.memory_mib)
    };
    assert_eq!(size("t2.nano"), (1, 512));
    assert_eq!(size("t2.micro"), (1, 1024));
    assert_eq!(size("t2.2xlarge"), (8, 32768));
    assert_eq!(size("t3.nano"), (2, 512));
    assert_eq!(size("t3.micro"), (2, 1024));
    assert_eq!(size("t3a.medium"), (2, 4096));
    assert_eq!(size("t3a.2xlarge"), (8, 32768));
    assert_eq!(size("m5.large"), (2, 8192));
    assert_eq!(size("m5.4xlarge"), (16, 65536));
    assert_eq!(size("c5.large"), (2, 4096));
    assert_eq!(size("c5.2xlarge"), (8, 16384));
    assert_eq!(size("r5.large"), (2, 16384));
    assert_eq!(size("r5.4xlarge"), (16, 131072));
    for t in &all {
        validate(t, 1024, 4 << 20).unwrap();
    }
}

#[test]
fn compact_seed_keeps_the_small_types() {
    let all = seed(SeedProfile::Compact);
    assert_eq!(all.len(), seed(SeedProfile::Ec2).len());
    assert_eq!(find(&all, "t3.nano").memory_mib, 64);
    assert_eq!(find(&all, "t3.micro").vcpus, 1);
    assert_eq!(find(&all, "m5.xlarge").memory_mib, 4096);
    // Names the old catalogue did not have keep EC2's sizes.
    assert_eq!(find(&all, "r5.large").memory_mib, 16384);
}

#[test]
fn seeded_limits_scale_with_vcpus_and_burstables_get_half() {
    let all = seed(SeedProfile::Ec2);
    let l = |n: &str| find(&all, n).limits.unwrap();
    assert_eq!(l("m5.large"), FIXED_PER_VCPU.times(2));
    assert_eq!(l("m5.4xlarge").disk_iops, 16 * 2_000);
    assert_eq!(l("c5.xlarge").net_rx_bps, 4 * (50 << 20));
    assert_eq!(l("t3.micro").disk_iops, 2 * 1_000);
    assert_eq!(l("t2.nano").net_tx_pps, 25_000);
    assert!(all.iter().all(|t| t.limits.is_some()));
    // The compact set scales by its own (smaller) vCPU counts.
    let compact = seed(SeedProfile::Compact);
    assert_eq!(find(&compact, "t3.micro").limits.unwrap().disk_iops, 1_000);
    // Saturating, not wrapping.
    assert_eq!(
        FIXED_PER_VCPU.times(u32::MAX).disk_bps,
        (40u64 << 20) * u64::from(u32::MAX)
    );
    let huge = TypeLimits {
        disk_bps: u64::MAX / 2 + 1,
        ..TypeLimits::default()
    };
    assert_eq!(huge.times(2).disk_bps, u64::MAX);
}

#[test]
fn records_without_limits_decode_and_none_is_not_written() {
    // A schema-1 record (before limits existed).
    let old = br#"{"schema":1,"name":"x1.a","vcpus":1,"memory_mib":64}"#;
    let (t, _) = crate::store::record::decode_record::<InstanceType>(b"/k", old).unwrap();
    assert_eq!(t.limits, None);
    let json = serde_json::to_value(&t).unwrap();
    assert!(json.get("limits").is_none(), "{json}");
    // A partial limits object: the rest are 0 (unlimited).
    let t: InstanceType = serde_json::from_str(
        r#"{"name":"x1.a","vcpus":1,"memory_mib":64,"limits":{"disk_iops":9}}"#,
    )
    .unwrap();
    assert_eq!(
        t.limits,
        Some(TypeLimits {
            disk_iops: 9,
            ..TypeLimits::default()
        })
    );
}

#[test]
fn sizes_sort_as_ec2_lists_them() {
    let mut names = vec![
        "t3.2xlarge",
        "t3.nano",
        "m5.12xlarge",
        "t3.large",
        "m5.4xlarge",
        "m5.odd",
    ];
    names.sort_by_key(|n| sort_key(n));
    assert_eq!(
        names,
        [
            "m5.4xlarge",
            "m5.12xlarge",
            "m5.odd",
            "t3.nano",
            "t3.large",
            "t3.2xlarge"
        ]
    );
}

#[test]
fn derived_fields_follow_ec2() {
    let all = seed(SeedProfile::Ec2);
    let t2 = find(&all, "t2.medium");
    assert_eq!((t2.cores(), t2.threads_per_core()), (2, 1));
    let m5 = find(&all, "m5.xlarge");
    assert_eq!((m5.cores(), m5.threads_per_core()), (2, 2));
    assert!(t2.burstable() && !m5.burstable());
    assert!(find(&all, "t3.micro").free_tier_eligible());
    assert!(!find(&all, "t3.small").free_tier_eligible());
}

#[test]
fn operator_definitions_are_checked() {
    let t = |n: &str, v, m| InstanceType::new(n, v, m);
    assert!(validate(&t("x1.big", 2, 1024), 64, 65536).is_ok());
    for bad in [
        t("nodot", 1, 64),
        t("X1.big", 1, 64),
        t("1x.big", 1, 64),
        t("x1.", 1, 64),
        t("x1.big/../a", 1, 64),
        t(&format!("x1.{}", "a".repeat(33)), 1, 64),
        t("x1.big", 0, 64),
        t("x1.big", 65, 64),
        t("x1.big", 1, 15),
        t("x1.big", 1, 65537),
    ] {
        assert!(validate(&bad, 64, 65536).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn all_types_in_one_page_by_default() {
    let all = seed(SeedProfile::Ec2);
    let (page, next) = describe(&all, &[], &[], 0, None).unwrap();
    assert_eq!(page.len(), all.len());
    assert!(next.is_none());
    assert_eq!(page[0].name, "c5.large");
}

#[test]
fn pages_cover_every_type_once() {
    let all = seed(SeedProfile::Ec2);
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let (page, next) = describe(&all, &[], &[], 5, token.as_deref()).unwrap();
        assert!(page.len() <= 5 && !page.is_empty());
        seen.extend(page.into_iter().map(|t| t.name));
        match next {
            Some(n) => token = Some(n),
            None => break,
        }
    }
    let mut want: Vec<String> = all.iter().map(|t| t.name.clone()).collect();
    want.sort_by_key(|n| sort_key(n));
    assert_eq!(seen, want);
}

#[test]
fn names_and_filters_narrow() {
    let all = seed(SeedProfile::Ec2);
    let (page, _) = describe(&all, &["t3.micro".into()], &[], 0, None).unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].memory_mib, 1024);
    let (page, _) = describe(&all, &[], &[f("vcpu-info.default-vcpus", "16")], 0, None).unwrap();
    assert!(page.iter().all(|t| t.vcpus == 16) && page.len() == 3);
    let (page, _) = describe(&all, &[], &[f("instance-type", "t3.*")], 0, None).unwrap();
    assert_eq!(page.len(), 7);
    let (page, _) = describe(&all, &[], &[f("memory-info.size-in-mib", "16384")], 0, None).unwrap();
    let names: Vec<_> = page.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "c5.2xlarge",
            "m5.xlarge",
            "r5.large",
            "t2.xlarge",
            "t3.xlarge",
            "t3a.xlarge"
        ]
    );
    let (page, _) = describe(
        &all,
        &[],
        &[f("burstable-performance-supported", "false")],
        0,
        None,
    )
    .unwrap();
    assert_eq!(page.len(), 12);
    let (page, _) = describe(&all, &[], &[f("free-tier-eligible", "true")], 0, None).unwrap();
    assert_eq!(page.len(), 2);
    let (page, _) = describe(&all, &[], &[f("current-generation", "false")], 0, None).unwrap();
    assert!(page.is_empty());
    let (page, _) = describe(&all, &[], &[f("vcpu-info.default-cores", "1")], 0, None).unwrap();
    // t3 and t3a with 2 vCPUs are one core with two threads; t2 with one vCPU is one core.
    assert!(page.iter().all(|t| t.cores() == 1));
    assert!(page.iter().any(|t| t.name == "t3.nano") && page.iter().any(|t| t.name == "t2.micro"));
}

#[test]
fn bad_input_is_refused() {
    let all = seed(SeedProfile::Ec2);
    let code = |r: Result<_>| match r {
        Err(Error::InvalidInput { code, message }) => (code.into_owned(), message),
        other => panic!("{other:?}"),
    };
    let (c, m) = code(describe(
        &all,
        &["x9.huge".into(), "t3.micro".into(), "y.z".into()],
        &[],
        0,
        None,
    ));
    assert_eq!(c, "InvalidInstanceType");
    assert!(m.contains("[x9.huge, y.z]"), "{m}");
    assert_eq!(
        code(describe(&all, &[], &[], 4, None)).0,
        "InvalidParameterValue"
    );
    assert_eq!(
        code(describe(&all, &[], &[], 101, None)).0,
        "InvalidParameterValue"
    );
    assert_eq!(
        code(describe(&all, &[], &[], 5, Some("!!"))).0,
        "InvalidNextToken"
    );
    assert_eq!(
        code(describe(&all, &[], &[], 5, Some(&encode_token("nope")))).0,
        "InvalidNextToken"
    );
    assert_eq!(
        code(describe(
            &all,
            &[],
            &[f("network-info.ena-support", "supported")],
            0,
            None
        ))
        .0,
        "InvalidParameterValue"
    );
}
