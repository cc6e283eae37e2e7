//! `nubis zones list` and `nubis types list`.

use nubis_proto::compute::v1 as pb;
use serde::Serialize;

use super::Ctx;
use crate::error::CliError;
use crate::output::{emit, render_list, Tabular};

/// An availability zone.
#[derive(Debug, Serialize)]
pub struct ZoneView {
    /// Zone name.
    pub zone_name: String,
    /// available | impaired | unavailable.
    pub state: String,
    /// Region.
    pub region_name: String,
    /// Zone id.
    pub zone_id: String,
}

impl Tabular for ZoneView {
    fn headers() -> &'static [&'static str] {
        &["ZONE", "STATE", "REGION", "ZONE_ID"]
    }
    fn row(&self) -> Vec<String> {
        vec![
            self.zone_name.clone(),
            self.state.clone(),
            self.region_name.clone(),
            self.zone_id.clone(),
        ]
    }
}

/// An instance type.
#[derive(Debug, Serialize)]
pub struct TypeView {
    /// Type name.
    pub instance_type: String,
    /// vCPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u32,
    /// Architecture.
    pub architecture: String,
    /// Hypervisor.
    pub hypervisor: String,
    /// Device rate limits per instance (absent: none; the table leaves
    /// them out).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsView>,
}

/// A type's device rate limits (0 = unlimited).
#[derive(Debug, Serialize)]
pub struct LimitsView {
    /// Disk bytes per second.
    pub disk_bps: u64,
    /// Disk operations per second.
    pub disk_iops: u64,
    /// Bytes per second the guest sends.
    pub net_tx_bps: u64,
    /// Frames per second the guest sends.
    pub net_tx_pps: u64,
    /// Bytes per second into the guest.
    pub net_rx_bps: u64,
    /// Frames per second into the guest.
    pub net_rx_pps: u64,
}

impl Tabular for TypeView {
    fn headers() -> &'static [&'static str] {
        &["TYPE", "VCPUS", "MEMORY_MIB", "ARCH", "HYPERVISOR"]
    }
    fn row(&self) -> Vec<String> {
        vec![
            self.instance_type.clone(),
            self.vcpus.to_string(),
            self.memory_mib.to_string(),
            self.architecture.clone(),
            self.hypervisor.clone(),
        ]
    }
}

impl From<pb::InstanceTypeInfo> for TypeView {
    fn from(t: pb::InstanceTypeInfo) -> Self {
        Self {
            instance_type: t.instance_type,
            vcpus: t.vcpus,
            memory_mib: t.memory_mib,
            architecture: t.architecture,
            hypervisor: t.hypervisor,
            limits: t.limits.map(|l| LimitsView {
                disk_bps: l.disk_bps,
                disk_iops: l.disk_iops,
                net_tx_bps: l.net_tx_bps,
                net_tx_pps: l.net_tx_pps,
                net_rx_bps: l.net_rx_bps,
                net_rx_pps: l.net_rx_pps,
            }),
        }
    }
}

/// `nubis zones list`.
pub async fn zones(ctx: &Ctx) -> Result<(), CliError> {
    let mut client = ctx.client().await?;
    let resp = client
        .compute
        .describe_availability_zones(pb::DescribeAvailabilityZonesRequest::default())
        .await?
        .into_inner();
    let views: Vec<ZoneView> = resp
        .availability_zones
        .into_iter()
        .map(|z| ZoneView {
            zone_name: z.zone_name,
            state: z.state,
            region_name: z.region_name,
            zone_id: z.zone_id,
        })
        .collect();
    emit(&render_list(ctx.format, "availability_zones", &views)?)
}

/// `nubis types list`.
pub async fn types(ctx: &Ctx) -> Result<(), CliError> {
    let mut client = ctx.client().await?;
    let mut views = Vec::new();
    let mut next_token = String::new();
    loop {
        let resp = client
            .compute
            .describe_instance_types(pb::DescribeInstanceTypesRequest {
                next_token: next_token.clone(),
                ..Default::default()
            })
            .await?
            .into_inner();
        views.extend(resp.instance_types.into_iter().map(TypeView::from));
        if resp.next_token.is_empty() || resp.next_token == next_token {
            break;
        }
        next_token = resp.next_token;
    }
    emit(&render_list(ctx.format, "instance_types", &views)?)
}
