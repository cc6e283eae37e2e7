//! The metadata side of the debian image test: Nubis's metadata responder
//! (`nubis-imds`, the code nubis-vmm runs on an instance's virtio-net) as the
//! frame bridge's interceptor.

use std::time::Instant;

use nubis_imds::{HttpTokens, InstanceMetadata, MetadataOptions, PublicKey, Responder};
use nubis_tests::frame_bridge::Interceptor;

/// [`Responder`] behind the bridge's [`Interceptor`] interface.
struct Imds(Responder);

impl Interceptor for Imds {
    fn intercepts(&mut self, frame: &[u8]) -> bool {
        self.0.intercepts(frame)
    }
    fn receive(&mut self, frame: &[u8], now: Instant) {
        self.0.receive(frame, now);
    }
    fn transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        self.0.transmit(now)
    }
    fn poll_at(&mut self, now: Instant) -> Option<Instant> {
        self.0.poll_at(now)
    }
}

fn parse_mac(mac: &str) -> [u8; 6] {
    let mut out = [0u8; 6];
    let parts: Vec<u8> = mac
        .split(':')
        .map(|p| u8::from_str_radix(p, 16).expect("hex MAC octet"))
        .collect();
    out.copy_from_slice(&parts);
    out
}

/// The responder for one test instance. HttpTokens=required: a guest that reads
/// its metadata without an IMDSv2 session token gets 401s.
pub fn responder(
    instance_id: &str,
    ip: &str,
    mac: &str,
    public_key: &str,
    user_data: &str,
) -> Box<dyn Interceptor> {
    let md = InstanceMetadata {
        instance_id: instance_id.into(),
        account_id: "123456789012".into(),
        ami_id: "ami-0de61a2b3c4d5e6f7".into(),
        instance_type: "t3.medium".into(),
        hostname: format!("ip-{}.nubis.internal", ip.replace('.', "-")),
        local_ipv4: ip.into(),
        public_ipv4: None,
        mac: mac.into(),
        availability_zone: "nubis-local-1a".into(),
        region: "nubis-local-1".into(),
        security_groups: vec!["default".into()],
        launch_time: "2026-12-06T00:00:00Z".into(),
        user_data: Some(user_data.as_bytes().to_vec()),
        public_keys: vec![PublicKey {
            name: "debian-test".into(),
            openssh: public_key.into(),
        }],
        architecture: "x86_64".into(),
        tags: Vec::new(),
        extra_interfaces: Vec::new(),
    };
    let opts = MetadataOptions {
        http_tokens: HttpTokens::Required,
        ..MetadataOptions::default()
    };
    Box::new(Imds(Responder::new(md, opts, Some(parse_mac(mac)))))
}
