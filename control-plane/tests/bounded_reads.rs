//! Listings stay within etcd's response cap whatever one tenant stores
//! (issue 16, "unbounded reads"). On main, a tenant that registered 55
//! images with 50 maximum-size tags each (keys of 128 and values of 256
//! four-byte characters, ~77 KB a record, ~4.2 MB in all) made every read
//! of the `images/` prefix answer more than the client's 4 MiB decode
//! limit: DescribeImages, RegisterImage (its duplicate-name scan) and
//! DescribeTags answered 503 for every tenant; the GC's listing of every
//! instance failed the same way for instances so tagged.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashSet;
use std::time::Duration;

use nubis_control_plane::domain::images::ImagePage;
use nubis_control_plane::domain::images::RegisterImageInput;
use nubis_control_plane::domain::instances::DescribeInput;
use nubis_control_plane::domain::{Caller, Domain};
use nubis_control_plane::sim::{SimAgent, SimOptions};
use support::*;

/// 50 tags of the largest size EC2 allows: 128-character keys and
/// 256-character values, of 4-byte UTF-8 characters.
fn big_tags() -> Vec<(String, String)> {
    (0..50)
        .map(|i| {
            let key = format!("{i:02}{}", "\u{1D538}".repeat(126));
            (key, "\u{1D539}".repeat(256))
        })
        .collect()
}

async fn register(d: &Domain, c: &Caller, name: &str) -> String {
    d.register_image(
        c,
        RegisterImageInput {
            name: name.into(),
            image_location: "hello".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .id
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenants_large_images_do_not_break_other_tenants_listings() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cp = start(config(&etcd)).await;
    let d = cp.domain.clone();
    register_image(&d).await;
    let heavy = named_account(&d, "t1").await;
    let other = named_account(&d, "t2").await;
    let tags = big_tags();
    let mut heavy_ids = HashSet::new();
    for n in 0..55 {
        let id = register(&d, &heavy, &format!("heavy-{n:02}")).await;
        d.create_tags(&heavy, std::slice::from_ref(&id), &tags)
            .await
            .unwrap();
        heavy_ids.insert(id);
    }

    // Every tenant's calls that read the whole `images/` prefix answer.
    let imgs = d.describe_images(&other, &[], &[], &[], &[]).await.unwrap();
    assert_eq!(imgs.len(), 1, "the other tenant sees the public image only");
    let mine = register(&d, &other, "other-image").await;
    let (t, _) = d.describe_tags(&other, &[], 0, None).await.unwrap();
    assert!(t.is_empty(), "the other tenant has no tags: {t:?}");
    d.create_tags(
        &other,
        std::slice::from_ref(&mine),
        &[("k".into(), "v".into())],
    )
    .await
    .unwrap();
    let (t, _) = d.describe_tags(&other, &[], 0, None).await.unwrap();
    assert_eq!(t.len(), 1);
    // The heavy tenant's duplicate check still sees its own images.
    let e = d
        .register_image(
            &heavy,
            RegisterImageInput {
                name: "heavy-54".into(),
                image_location: "hello".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), "InvalidAMIName.Duplicate");

    // The heavy tenant pages through its images with MaxResults/NextToken.
    let mut seen = HashSet::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let (page, next) = d
            .describe_images_page(
                &heavy,
                &[],
                &["self".to_string()],
                &[],
                &[],
                ImagePage {
                    max_results: 10,
                    next_token: token.as_deref(),
                },
            )
            .await
            .unwrap();
        pages += 1;
        assert!(page.len() <= 10);
        for i in page {
            assert_eq!(i.tags.len(), 50);
            assert!(seen.insert(i.id.to_string()), "{} twice", i.id);
        }
        match next {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    assert_eq!(seen, heavy_ids);
    assert_eq!(pages, 6, "55 images in pages of 10");
    // Without MaxResults, one answer with every image.
    let all = d.describe_images(&heavy, &[], &[], &[], &[]).await.unwrap();
    assert_eq!(all.len(), 56, "55 own + the public one");
    let (t, _) = d.describe_tags(&heavy, &[], 0, None).await.unwrap();
    assert_eq!(t.len(), 55 * 50);
    // Bad paging input: EC2 codes.
    let e = d
        .describe_images_page(
            &heavy,
            &[],
            &[],
            &[],
            &[],
            ImagePage {
                max_results: 3,
                next_token: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), "InvalidParameterValue");
    let e = d
        .describe_images_page(
            &heavy,
            &[],
            &[],
            &[],
            &[],
            ImagePage {
                max_results: 10,
                next_token: Some("bm90LWEta2V5"),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), "InvalidNextToken");
    cp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gc_and_describe_instances_page_through_large_instances() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cp = start(config(&etcd)).await;
    let d = cp.domain.clone();
    let ep = endpoint(&cp);
    let mut o = SimOptions::new("big", ZONES[0], 64, 64 * 1024);
    o.run_instances = false;
    let _agent = SimAgent::start(&ep, enrol(), o).await.unwrap();
    let image = register_image(&d).await;
    let heavy = named_account(&d, "t3").await;
    let other = named_account(&d, "t4").await;
    let tags = big_tags();
    let mut ids = Vec::new();
    for _ in 0..55 {
        let r = d
            .run_instances(&heavy, nano_input(&image, 1))
            .await
            .unwrap();
        let id = r.instances[0].id.to_string();
        d.create_tags(&heavy, std::slice::from_ref(&id), &tags)
            .await
            .unwrap();
        ids.push(id);
    }
    d.run_instances(&other, nano_input(&image, 1))
        .await
        .unwrap();

    // The GC reads every instance of every account.
    let (n, live) = d
        .collect_terminated(Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(n, 0);
    assert_eq!(live.len(), 56, "every reservation seen");
    // The operator's DescribeInstances reads every account's instances.
    let (all, next) = d
        .describe_instances(&Caller::Operator, DescribeInput::default())
        .await
        .unwrap();
    let count = |r: &[nubis_control_plane::domain::views::Reservation]| {
        r.iter().map(|r| r.instances.len()).sum::<usize>()
    };
    let mut total = count(&all);
    let mut token = next;
    while let Some(t) = token {
        let (more, next) = d
            .describe_instances(
                &Caller::Operator,
                DescribeInput {
                    next_token: Some(t),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        total += count(&more);
        token = next;
    }
    assert_eq!(total, 56);
    // The heavy tenant terminates all at once (one read of 55 records).
    d.terminate_instances(&heavy, &ids).await.unwrap();
    let (mine, _) = d
        .describe_instances(&other, DescribeInput::default())
        .await
        .unwrap();
    assert_eq!(count(&mine), 1);
    cp.shutdown().await;
}
