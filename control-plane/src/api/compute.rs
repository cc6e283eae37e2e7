//! `nubis.compute.v1.Compute` handlers.

use std::sync::Arc;
use std::time::Duration;

use nubis_proto::compute::v1 as pb;
use tonic::{Request, Response, Status};

use crate::api::Edge;
use crate::domain::events::{EventQuery, StoredEvent};
use crate::domain::filters::Filter;
use crate::domain::images::RegisterImageInput;
use crate::domain::instances::{DescribeInput, RunInstancesInput};
use crate::domain::lifecycle::State;
use crate::domain::metadata::{self, MetadataOptionsInput};
use crate::domain::model::{Image, Instance, KeyPair, MetadataOptions};
use crate::domain::views::{Reservation, StateChange};
use crate::domain::Domain;
use crate::error::Error;

/// The Compute service.
#[derive(Debug)]
pub struct ComputeApi {
    edge: Edge,
}

impl ComputeApi {
    /// Over a domain.
    pub fn new(domain: Arc<Domain>) -> Self {
        Self {
            edge: Edge::new(domain, "nubis.compute.v1.Compute"),
        }
    }

    fn domain(&self) -> &Domain {
        self.edge.domain()
    }

    fn region(&self) -> &str {
        &self.domain().config().region
    }
}

fn filters_in(f: Vec<pb::Filter>) -> Vec<Filter> {
    f.into_iter()
        .map(|f| Filter {
            name: f.name,
            values: f.values,
        })
        .collect()
}

fn tags_in(t: Vec<pb::Tag>) -> Vec<(String, String)> {
    t.into_iter().map(|t| (t.key, t.value)).collect()
}

fn tags_out(t: &std::collections::BTreeMap<String, String>) -> Vec<pb::Tag> {
    t.iter()
        .map(|(k, v)| pb::Tag {
            key: k.clone(),
            value: v.clone(),
        })
        .collect()
}

/// Proto state of a domain state.
pub fn state_out(s: State) -> pb::InstanceState {
    pb::InstanceState {
        code: s.code(),
        name: s.name().to_string(),
    }
}

/// Proto instance (node id only for the operator).
pub fn instance_out(i: &Instance, operator: bool, region: &str) -> pb::Instance {
    let ip = i.network.as_ref().map(|n| n.ip.clone()).unwrap_or_default();
    pb::Instance {
        instance_id: i.id.to_string(),
        image_id: i.image_id.to_string(),
        instance_type: i.instance_type.clone(),
        state: Some(state_out(i.state)),
        state_reason: i.state_reason.as_ref().map(|r| pb::StateReason {
            code: r.code.clone(),
            message: r.message.clone(),
        }),
        state_transition_reason: i.state_transition_reason.clone(),
        availability_zone: i.availability_zone.clone(),
        node_id: if operator {
            i.node_id
                .as_ref()
                .map(|n| n.to_string())
                .unwrap_or_default()
        } else {
            String::new()
        },
        private_dns_name: if ip.is_empty() {
            String::new()
        } else {
            format!("ip-{}.{region}.compute.internal", ip.replace('.', "-"))
        },
        private_ip_address: ip,
        mac_address: i
            .network
            .as_ref()
            .map(|n| n.mac.clone())
            .unwrap_or_default(),
        launch_time_unix_ms: i.launch_time_ms,
        key_name: i.key_name.clone().unwrap_or_default(),
        tags: tags_out(&i.tags),
        reservation_id: i.reservation_id.to_string(),
        client_token: i.client_token.clone(),
        vcpus: i.vcpus,
        memory_mib: i.memory_mib,
        ami_launch_index: i.launch_index,
        owner_id: i.account.to_string(),
        architecture: "x86_64".into(),
        root_volume_gib: i.options.root_volume_gib.unwrap_or(0),
        vpc_id: i
            .vpc
            .as_ref()
            .and_then(|v| v.vpc_id.as_ref())
            .map(|v| v.to_string())
            .unwrap_or_default(),
        subnet_id: i
            .vpc
            .as_ref()
            .and_then(|v| v.subnet_id.as_ref())
            .map(|v| v.to_string())
            .unwrap_or_default(),
        security_group_ids: i
            .vpc
            .as_ref()
            .map(|v| v.security_group_ids.iter().map(|g| g.to_string()).collect())
            .unwrap_or_default(),
        public_ip_address: i
            .vpc
            .as_ref()
            .and_then(|v| v.public_ip.as_ref())
            .map(|p| p.public_ip.clone())
            .unwrap_or_default(),
        network_interfaces: crate::domain::vpc::eni_secondary::interfaces_of(i)
            .into_iter()
            .map(|n| pb::InstanceNetworkInterface {
                network_interface_id: n.interface_id.to_string(),
                device_index: n.device_index,
                attachment_id: n.attachment_id.to_string(),
                subnet_id: n.subnet_id.map(|s| s.to_string()).unwrap_or_default(),
                private_ip_address: n.ip.to_string(),
                mac_address: n.mac.to_string(),
                security_group_ids: n.security_group_ids.iter().map(|g| g.to_string()).collect(),
                delete_on_termination: n.delete_on_termination,
            })
            .collect(),
        metadata_options: Some(metadata_options_out(
            &i.metadata_options,
            metadata::options_state(i),
        )),
    }
}

/// The VPC placement a RunInstances request asks for (resolved and checked
/// by the domain, crate::domain::vpc::launch); `None` = the default VPC.
fn vpc_in(
    subnet: &str,
    groups: &[String],
) -> crate::error::Result<Option<Box<crate::domain::vpc::InstanceVpc>>> {
    if subnet.is_empty() && groups.is_empty() {
        return Ok(None);
    }
    if groups.len() > 16 {
        return Err(crate::error::Error::invalid("at most 16 security groups"));
    }
    Ok(Some(Box::new(crate::domain::vpc::InstanceVpc {
        subnet_id: Some(subnet)
            .filter(|s| !s.is_empty())
            .map(crate::ids::SubnetId::parse)
            .transpose()?,
        security_group_ids: groups
            .iter()
            .map(|g| crate::ids::SecurityGroupId::parse(g))
            .collect::<Result<_, _>>()?,
        ..Default::default()
    })))
}

/// Proto metadata options.
pub fn metadata_options_out(o: &MetadataOptions, state: &str) -> pb::InstanceMetadataOptions {
    pb::InstanceMetadataOptions {
        state: state.to_string(),
        http_tokens: metadata::http_tokens(o).into(),
        http_put_response_hop_limit: u32::from(o.hop_limit),
        http_endpoint: metadata::enabled(o.endpoint_enabled).into(),
        http_protocol_ipv6: metadata::enabled(o.ipv6_enabled).into(),
        instance_metadata_tags: metadata::enabled(o.tags_enabled).into(),
    }
}

/// Domain input of requested metadata options (empty / 0 = unset).
pub fn metadata_options_in(r: Option<pb::InstanceMetadataOptionsRequest>) -> MetadataOptionsInput {
    let r = r.unwrap_or_default();
    MetadataOptionsInput {
        http_tokens: opt(r.http_tokens),
        http_put_response_hop_limit: (r.http_put_response_hop_limit != 0)
            .then_some(i64::from(r.http_put_response_hop_limit)),
        http_endpoint: opt(r.http_endpoint),
        http_protocol_ipv6: opt(r.http_protocol_ipv6),
        instance_metadata_tags: opt(r.instance_metadata_tags),
    }
}

fn reservation_out(r: &Reservation, operator: bool, region: &str) -> pb::Reservation {
    pb::Reservation {
        reservation_id: r.reservation_id.to_string(),
        owner_id: r.owner.to_string(),
        instances: r
            .instances
            .iter()
            .map(|i| instance_out(i, operator, region))
            .collect(),
    }
}

/// Proto state changes.
pub(crate) fn changes_out(c: Vec<StateChange>) -> Vec<pb::InstanceStateChange> {
    c.into_iter()
        .map(|c| pb::InstanceStateChange {
            instance_id: c.instance_id.to_string(),
            current_state: Some(state_out(c.current)),
            previous_state: Some(state_out(c.previous)),
        })
        .collect()
}

fn image_out(i: &Image) -> pb::Image {
    pb::Image {
        image_id: i.id.to_string(),
        name: i.name.clone(),
        description: i.description.clone(),
        image_location: i.image_location.clone(),
        manifest_sha256: i.manifest_sha256.clone(),
        owner_id: i.owner.to_string(),
        state: "available".into(),
        public: i.public,
        architecture: i.architecture.clone(),
        creation_date_unix_ms: i.created_ms,
        min_memory_mib: i.min_memory_mib,
        tags: tags_out(&i.tags),
        root_device_type: "ebs".into(),
        root_volume_gib: i.root_volume_gib,
        // Cleared by the domain for callers other than the owner.
        launch_permissions: i.launch_permissions.iter().map(|a| a.to_string()).collect(),
    }
}

fn keypair_out(k: &KeyPair) -> pb::KeyPairInfo {
    pb::KeyPairInfo {
        key_pair_id: k.id.to_string(),
        key_name: k.name.clone(),
        key_fingerprint: k.fingerprint.clone(),
        key_type: k.key_type.clone(),
        public_key: k.public_key.clone(),
        tags: tags_out(&k.tags),
        create_time_unix_ms: k.created_ms,
    }
}

fn event_out(e: StoredEvent) -> pb::InstanceEvent {
    let ev = e.event;
    let (reason_code, reason_message) = ev.reason.map(|r| (r.code, r.message)).unwrap_or_default();
    pb::InstanceEvent {
        instance_id: ev.instance_id.to_string(),
        account_id: ev.account.to_string(),
        seq: ev.seq,
        kind: ev.kind.as_str().to_string(),
        old_state: ev
            .old_state
            .map(|s| s.name().to_string())
            .unwrap_or_default(),
        new_state: ev.new_state.name().to_string(),
        instance_type: ev.instance_type,
        vcpus: ev.vcpus,
        memory_mib: ev.memory_mib,
        availability_zone: ev.availability_zone,
        node_id: ev.node_id.map(|n| n.to_string()).unwrap_or_default(),
        time_ms: ev.time_ms,
        reason_code,
        reason_message,
        revision: e.revision,
    }
}

/// A status check summary (`ok`, `impaired`, ...) with its reachability.
fn status_summary(s: &str) -> pb::StatusSummary {
    pb::StatusSummary {
        status: s.to_string(),
        reachability: match s {
            "ok" => "passed",
            "impaired" => "failed",
            "initializing" => "initializing",
            _ => "insufficient-data",
        }
        .to_string(),
    }
}

fn opt(s: String) -> Option<String> {
    if s.is_empty() {
        None
    } else {
        Some(s)
    }
}

#[tonic::async_trait]
impl pb::compute_server::Compute for ComputeApi {
    async fn run_instances(
        &self,
        req: Request<pb::RunInstancesRequest>,
    ) -> Result<Response<pb::RunInstancesResponse>, Status> {
        self.edge
            .call(req, "RunInstances", |caller, r| async move {
                let input = RunInstancesInput {
                    image_id: r.image_id,
                    instance_type: r.instance_type,
                    min_count: r.min_count,
                    max_count: r.max_count,
                    availability_zone: opt(r.availability_zone),
                    tags: tags_in(r.tags),
                    user_data: r.user_data,
                    key_name: opt(r.key_name),
                    client_token: opt(r.client_token),
                    options: crate::domain::model::LaunchOptions {
                        root_volume_gib: Some(r.root_volume_gib).filter(|g| *g != 0),
                        vpc: vpc_in(&r.subnet_id, &r.security_group_ids)?,
                        ..Default::default()
                    },
                    metadata_options: metadata_options_in(r.metadata_options),
                };
                let res = self.domain().run_instances(&caller, input).await?;
                Ok(pb::RunInstancesResponse {
                    reservation: Some(reservation_out(&res, caller.is_operator(), self.region())),
                })
            })
            .await
    }

    async fn describe_instances(
        &self,
        req: Request<pb::DescribeInstancesRequest>,
    ) -> Result<Response<pb::DescribeInstancesResponse>, Status> {
        self.edge
            .call(req, "DescribeInstances", |caller, r| async move {
                let input = DescribeInput {
                    instance_ids: r.instance_ids,
                    filters: filters_in(r.filters),
                    max_results: r.max_results,
                    next_token: opt(r.next_token),
                };
                let (res, next) = self.domain().describe_instances(&caller, input).await?;
                // Default subnets and public addresses, as EC2's DescribeInstances shows them.
                let res = self.domain().with_default_subnets(res).await?;
                Ok(pb::DescribeInstancesResponse {
                    reservations: res
                        .iter()
                        .map(|r| reservation_out(r, caller.is_operator(), self.region()))
                        .collect(),
                    next_token: next.unwrap_or_default(),
                })
            })
            .await
    }

    async fn start_instances(
        &self,
        req: Request<pb::StartInstancesRequest>,
    ) -> Result<Response<pb::StartInstancesResponse>, Status> {
        self.edge
            .call(req, "StartInstances", |caller, r| async move {
                let c = self
                    .domain()
                    .start_instances(&caller, &r.instance_ids)
                    .await?;
                Ok(pb::StartInstancesResponse {
                    starting_instances: changes_out(c),
                })
            })
            .await
    }

    async fn stop_instances(
        &self,
        req: Request<pb::StopInstancesRequest>,
    ) -> Result<Response<pb::StopInstancesResponse>, Status> {
        self.edge
            .call(req, "StopInstances", |caller, r| async move {
                let c = self
                    .domain()
                    .stop_instances(&caller, &r.instance_ids, r.force)
                    .await?;
                Ok(pb::StopInstancesResponse {
                    stopping_instances: changes_out(c),
                })
            })
            .await
    }

    async fn reboot_instances(
        &self,
        req: Request<pb::RebootInstancesRequest>,
    ) -> Result<Response<pb::RebootInstancesResponse>, Status> {
        self.edge
            .call(req, "RebootInstances", |caller, r| async move {
                self.domain()
                    .reboot_instances(&caller, &r.instance_ids)
                    .await?;
                Ok(pb::RebootInstancesResponse {})
            })
            .await
    }

    async fn terminate_instances(
        &self,
        req: Request<pb::TerminateInstancesRequest>,
    ) -> Result<Response<pb::TerminateInstancesResponse>, Status> {
        self.edge
            .call(req, "TerminateInstances", |caller, r| async move {
                let c = self
                    .domain()
                    .terminate_instances(&caller, &r.instance_ids)
                    .await?;
                Ok(pb::TerminateInstancesResponse {
                    terminating_instances: changes_out(c),
                })
            })
            .await
    }

    async fn get_console_output(
        &self,
        req: Request<pb::GetConsoleOutputRequest>,
    ) -> Result<Response<pb::GetConsoleOutputResponse>, Status> {
        self.edge
            .call(req, "GetConsoleOutput", |caller, r| async move {
                let wait = if r.latest {
                    Duration::from_secs(10)
                } else {
                    Duration::from_secs(3)
                };
                let out = self
                    .domain()
                    .console_output(&caller, &r.instance_id, wait)
                    .await?;
                Ok(pb::GetConsoleOutputResponse {
                    instance_id: out.instance_id.to_string(),
                    timestamp_unix_ms: out.timestamp_ms,
                    output: out.output,
                })
            })
            .await
    }

    async fn modify_instance_metadata_options(
        &self,
        req: Request<pb::ModifyInstanceMetadataOptionsRequest>,
    ) -> Result<Response<pb::ModifyInstanceMetadataOptionsResponse>, Status> {
        self.edge
            .call(
                req,
                "ModifyInstanceMetadataOptions",
                |caller, r| async move {
                    let input = metadata_options_in(r.options);
                    let (id, o) = self
                        .domain()
                        .modify_instance_metadata_options(&caller, &r.instance_id, &input)
                        .await?;
                    Ok(pb::ModifyInstanceMetadataOptionsResponse {
                        instance_id: id.to_string(),
                        instance_metadata_options: Some(metadata_options_out(&o, "pending")),
                    })
                },
            )
            .await
    }

    async fn describe_instance_status(
        &self,
        req: Request<pb::DescribeInstanceStatusRequest>,
    ) -> Result<Response<pb::DescribeInstanceStatusResponse>, Status> {
        self.edge
            .call(req, "DescribeInstanceStatus", |caller, r| async move {
                let input = DescribeInput {
                    instance_ids: r.instance_ids,
                    filters: filters_in(r.filters),
                    max_results: r.max_results,
                    next_token: opt(r.next_token),
                };
                let (st, next) = self
                    .domain()
                    .describe_instance_status(&caller, input, r.include_all_instances)
                    .await?;
                Ok(pb::DescribeInstanceStatusResponse {
                    instance_statuses: st
                        .iter()
                        .map(|s| pb::InstanceStatus {
                            instance_id: s.instance_id.to_string(),
                            availability_zone: s.availability_zone.clone(),
                            instance_state: Some(state_out(s.state)),
                            system_status: Some(status_summary(s.system_status)),
                            instance_status: Some(status_summary(s.instance_status)),
                        })
                        .collect(),
                    next_token: next.unwrap_or_default(),
                })
            })
            .await
    }

    async fn describe_availability_zones(
        &self,
        req: Request<pb::DescribeAvailabilityZonesRequest>,
    ) -> Result<Response<pb::DescribeAvailabilityZonesResponse>, Status> {
        self.edge
            .call(req, "DescribeAvailabilityZones", |_, r| async move {
                let zones = self
                    .domain()
                    .describe_zones(&r.zone_names, &filters_in(r.filters))
                    .await?;
                Ok(pb::DescribeAvailabilityZonesResponse {
                    availability_zones: zones
                        .into_iter()
                        .map(|z| pb::AvailabilityZone {
                            zone_name: z.name,
                            state: z.state.to_string(),
                            region_name: z.region,
                            zone_id: z.zone_id,
                        })
                        .collect(),
                })
            })
            .await
    }

    async fn describe_regions(
        &self,
        req: Request<pb::DescribeRegionsRequest>,
    ) -> Result<Response<pb::DescribeRegionsResponse>, Status> {
        self.edge
            .call(req, "DescribeRegions", |_, r| async move {
                let region = self.region();
                if let Some(n) = r.region_names.iter().find(|n| *n != region) {
                    return Err(Error::invalid(format!("invalid region: {n}")));
                }
                Ok(pb::DescribeRegionsResponse {
                    regions: vec![pb::Region {
                        endpoint: format!("ec2.{region}.nubis.local"),
                        region_name: region.to_string(),
                        opt_in_status: "opt-in-not-required".into(),
                    }],
                })
            })
            .await
    }

    async fn describe_instance_types(
        &self,
        req: Request<pb::DescribeInstanceTypesRequest>,
    ) -> Result<Response<pb::DescribeInstanceTypesResponse>, Status> {
        self.edge
            .call(req, "DescribeInstanceTypes", |_, r| async move {
                let fs = filters_in(r.filters);
                let next_token = (!r.next_token.is_empty()).then_some(r.next_token.as_str());
                let (types, next) = self.domain().describe_instance_types(
                    &r.instance_types,
                    &fs,
                    r.max_results,
                    next_token,
                )?;
                Ok(pb::DescribeInstanceTypesResponse {
                    instance_types: types.into_iter().map(crate::api::admin::type_out).collect(),
                    next_token: next.unwrap_or_default(),
                })
            })
            .await
    }

    async fn register_image(
        &self,
        req: Request<pb::RegisterImageRequest>,
    ) -> Result<Response<pb::RegisterImageResponse>, Status> {
        self.edge
            .call(req, "RegisterImage", |caller, r| async move {
                let input = RegisterImageInput {
                    name: r.name,
                    description: r.description,
                    image_location: r.image_location,
                    manifest_sha256: r.manifest_sha256,
                    public: r.public,
                    min_memory_mib: r.min_memory_mib,
                    architecture: r.architecture,
                    root_volume_gib: r.root_volume_gib,
                };
                let img = self.domain().register_image(&caller, input).await?;
                Ok(pb::RegisterImageResponse {
                    image_id: img.id.to_string(),
                })
            })
            .await
    }

    async fn describe_images(
        &self,
        req: Request<pb::DescribeImagesRequest>,
    ) -> Result<Response<pb::DescribeImagesResponse>, Status> {
        self.edge
            .call(req, "DescribeImages", |caller, r| async move {
                let (imgs, next) = self
                    .domain()
                    .describe_images_page(
                        &caller,
                        &r.image_ids,
                        &r.owners,
                        &r.executable_by,
                        &filters_in(r.filters),
                        crate::domain::images::ImagePage {
                            max_results: r.max_results,
                            next_token: Some(r.next_token.as_str()).filter(|t| !t.is_empty()),
                        },
                    )
                    .await?;
                Ok(pb::DescribeImagesResponse {
                    images: imgs.iter().map(image_out).collect(),
                    next_token: next.unwrap_or_default(),
                })
            })
            .await
    }

    async fn deregister_image(
        &self,
        req: Request<pb::DeregisterImageRequest>,
    ) -> Result<Response<pb::DeregisterImageResponse>, Status> {
        self.edge
            .call(req, "DeregisterImage", |caller, r| async move {
                self.domain().deregister_image(&caller, &r.image_id).await?;
                Ok(pb::DeregisterImageResponse {})
            })
            .await
    }

    async fn create_key_pair(
        &self,
        req: Request<pb::CreateKeyPairRequest>,
    ) -> Result<Response<pb::CreateKeyPairResponse>, Status> {
        self.edge
            .call(req, "CreateKeyPair", |caller, r| async move {
                let (kp, material) = self
                    .domain()
                    .create_keypair(&caller, &r.key_name, &r.key_type, &tags_in(r.tags))
                    .await?;
                Ok(pb::CreateKeyPairResponse {
                    key_pair: Some(keypair_out(&kp)),
                    key_material: material,
                })
            })
            .await
    }

    async fn import_key_pair(
        &self,
        req: Request<pb::ImportKeyPairRequest>,
    ) -> Result<Response<pb::ImportKeyPairResponse>, Status> {
        self.edge
            .call(req, "ImportKeyPair", |caller, r| async move {
                let kp = self
                    .domain()
                    .import_keypair(
                        &caller,
                        &r.key_name,
                        &r.public_key_material,
                        &tags_in(r.tags),
                    )
                    .await?;
                Ok(pb::ImportKeyPairResponse {
                    key_pair: Some(keypair_out(&kp)),
                })
            })
            .await
    }

    async fn describe_key_pairs(
        &self,
        req: Request<pb::DescribeKeyPairsRequest>,
    ) -> Result<Response<pb::DescribeKeyPairsResponse>, Status> {
        self.edge
            .call(req, "DescribeKeyPairs", |caller, r| async move {
                let kps = self
                    .domain()
                    .describe_keypairs(
                        &caller,
                        &r.key_names,
                        &r.key_pair_ids,
                        &filters_in(r.filters),
                    )
                    .await?;
                Ok(pb::DescribeKeyPairsResponse {
                    key_pairs: kps.iter().map(keypair_out).collect(),
                })
            })
            .await
    }

    async fn delete_key_pair(
        &self,
        req: Request<pb::DeleteKeyPairRequest>,
    ) -> Result<Response<pb::DeleteKeyPairResponse>, Status> {
        self.edge
            .call(req, "DeleteKeyPair", |caller, r| async move {
                self.domain()
                    .delete_keypair(&caller, &r.key_name, &r.key_pair_id)
                    .await?;
                Ok(pb::DeleteKeyPairResponse {})
            })
            .await
    }

    async fn create_tags(
        &self,
        req: Request<pb::CreateTagsRequest>,
    ) -> Result<Response<pb::CreateTagsResponse>, Status> {
        self.edge
            .call(req, "CreateTags", |caller, r| async move {
                self.domain()
                    .create_tags(&caller, &r.resource_ids, &tags_in(r.tags))
                    .await?;
                Ok(pb::CreateTagsResponse {})
            })
            .await
    }

    async fn delete_tags(
        &self,
        req: Request<pb::DeleteTagsRequest>,
    ) -> Result<Response<pb::DeleteTagsResponse>, Status> {
        self.edge
            .call(req, "DeleteTags", |caller, r| async move {
                let tags: Vec<(String, Option<String>)> =
                    r.tags.into_iter().map(|t| (t.key, t.value)).collect();
                self.domain()
                    .delete_tags(&caller, &r.resource_ids, &tags)
                    .await?;
                Ok(pb::DeleteTagsResponse {})
            })
            .await
    }

    async fn describe_tags(
        &self,
        req: Request<pb::DescribeTagsRequest>,
    ) -> Result<Response<pb::DescribeTagsResponse>, Status> {
        self.edge
            .call(req, "DescribeTags", |caller, r| async move {
                let (tags, next) = self
                    .domain()
                    .describe_tags(
                        &caller,
                        &filters_in(r.filters),
                        r.max_results,
                        opt(r.next_token).as_deref(),
                    )
                    .await?;
                Ok(pb::DescribeTagsResponse {
                    tags: tags
                        .into_iter()
                        .map(|t| pb::TagDescription {
                            resource_id: t.resource_id,
                            resource_type: t.resource_type.to_string(),
                            key: t.key,
                            value: t.value,
                        })
                        .collect(),
                    next_token: next.unwrap_or_default(),
                })
            })
            .await
    }

    async fn describe_instance_events(
        &self,
        req: Request<pb::DescribeInstanceEventsRequest>,
    ) -> Result<Response<pb::DescribeInstanceEventsResponse>, Status> {
        self.edge
            .call(req, "DescribeInstanceEvents", |caller, r| async move {
                let q = EventQuery {
                    account: opt(r.account_id),
                    from_ms: r.from_ms,
                    to_ms: (r.to_ms != 0).then_some(r.to_ms),
                    max_results: (r.max_results != 0).then_some(r.max_results),
                    next_token: opt(r.next_token),
                };
                let page = self.domain().list_events(&caller, &q).await?;
                Ok(pb::DescribeInstanceEventsResponse {
                    events: page.events.into_iter().map(event_out).collect(),
                    next_token: page.next_token.unwrap_or_default(),
                })
            })
            .await
    }
}
