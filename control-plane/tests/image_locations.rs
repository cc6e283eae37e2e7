//! Image location ACL (issue 16): a tenant may register an AMI only from a
//! location the operator published (a public image has it) or allowed to
//! every tenant (`[images] tenant_locations`); an operator's private image
//! cannot be wrapped and launched by a tenant. Refusals write nothing.

#![allow(clippy::unwrap_used)]

mod support;

use nubis_proto::compute::v1 as pb;
use support::*;

fn register(name: &str, location: &str, public: bool) -> pb::RegisterImageRequest {
    pb::RegisterImageRequest {
        name: name.into(),
        image_location: location.into(),
        public,
        ..Default::default()
    }
}

async fn image_count(c: &mut Compute) -> usize {
    c.describe_images(pb::DescribeImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_register_only_published_or_allowed_locations() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let mut cfg = config(&etcd);
    cfg.images.tenant_locations = vec!["scratch-*".into()];
    let cp = start(cfg).await;
    let ep = endpoint(&cp);
    let mut op = compute(&ep, admin()).await;
    // Published: hello (public). Private: the operator's licensed image.
    hello_image(&ep).await;
    op.register_image(register("licensed", "licensed-os", false))
        .await
        .unwrap();

    let mut t = compute(&ep, tenant(&ep, "t").await).await;
    let before = image_count(&mut t).await;
    let e = t
        .register_image(register("mine", "licensed-os", false))
        .await
        .unwrap_err();
    assert_eq!(ec2_code(&e), "UnauthorizedOperation");
    assert!(e.message().contains("licensed-os"), "{e:?}");
    // Unknown locations are no different from private ones (nothing to probe).
    let e = t
        .register_image(register("mine", "no-such-os", false))
        .await
        .unwrap_err();
    assert_eq!(ec2_code(&e), "UnauthorizedOperation");
    assert_eq!(
        image_count(&mut t).await,
        before,
        "a refusal wrote an image"
    );

    // A published location and an allowed pattern: registered.
    t.register_image(register("my-hello", "hello", false))
        .await
        .unwrap();
    t.register_image(register("my-scratch", "scratch-1", false))
        .await
        .unwrap();
    assert_eq!(image_count(&mut t).await, before + 2);

    // Once the operator publishes the location, the tenant may use it.
    op.register_image(register("licensed-public", "licensed-os", true))
        .await
        .unwrap();
    t.register_image(register("mine", "licensed-os", false))
        .await
        .unwrap();
}
