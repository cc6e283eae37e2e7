//! The etcd key schema: every key Nubis reads or writes is built here (and
//! documented in docs/etcd-schema.md). Values are JSON records from
//! [`crate::domain::model`].
//!
//! Free-form names (client tokens, key-pair names, host ids) are hex-encoded
//! in keys so that no character can escape its path segment.

use crate::ids::{AccountId, InstanceId, NodeId};

/// Builds keys under one prefix (default `/nubis`).
#[derive(Debug, Clone)]
pub struct Keys {
    p: String,
}

impl Keys {
    /// Keys under `prefix` (no trailing slash).
    pub fn new(prefix: &str) -> Self {
        Self {
            p: format!("{}/v1", prefix.trim_end_matches('/')),
        }
    }

    /// `instances/<account>/<instance>`: the instance record.
    pub fn instance(&self, account: &AccountId, id: &InstanceId) -> String {
        format!("{}/instances/{account}/{id}", self.p)
    }
    /// All instances of an account.
    pub fn account_instances(&self, account: &AccountId) -> String {
        format!("{}/instances/{account}/", self.p)
    }
    /// All instances.
    pub fn all_instances(&self) -> String {
        format!("{}/instances/", self.p)
    }
    /// `user-data/<reservation>`: raw user data shared by a reservation's
    /// instances (kept out of the instance records so listings stay small).
    pub fn user_data(&self, id: &crate::ids::ReservationId) -> String {
        format!("{}/user-data/{id}", self.p)
    }
    /// `pending-reservations/<reservation>`: progress of a RunInstances call
    /// written in several transactions (deleted when it ends).
    pub fn pending_reservation(&self, id: &crate::ids::ReservationId) -> String {
        format!("{}/pending-reservations/{id}", self.p)
    }
    /// All pending reservations.
    pub fn pending_reservations(&self) -> String {
        format!("{}/pending-reservations/", self.p)
    }
    /// Prefix of every account's ClientToken records.
    pub fn all_client_tokens(&self) -> String {
        format!("{}/client-tokens/", self.p)
    }
    /// `client-tokens/<account>/<hex token>`: idempotency record of RunInstances.
    pub fn client_token(&self, account: &AccountId, token: &str) -> String {
        format!("{}/client-tokens/{account}/{}", self.p, hex::encode(token))
    }

    /// `events/<account>/<ms:013>/<instance>/<seq:010>`: an immutable
    /// lifecycle event ([`crate::domain::events`]). Keys of one account sort
    /// by time, then instance, then the instance's event sequence.
    pub fn event(&self, account: &AccountId, ms: i64, id: &InstanceId, seq: u64) -> String {
        format!(
            "{}/events/{account}/{:013}/{id}/{seq:010}",
            self.p,
            ms.max(0)
        )
    }
    /// All events of an account.
    pub fn account_events(&self, account: &AccountId) -> String {
        format!("{}/events/{account}/", self.p)
    }
    /// All events.
    pub fn all_events(&self) -> String {
        format!("{}/events/", self.p)
    }

    /// `accounts/<account>`.
    pub fn account(&self, id: &AccountId) -> String {
        format!("{}/accounts/{id}", self.p)
    }
    /// All accounts.
    pub fn accounts(&self) -> String {
        format!("{}/accounts/", self.p)
    }
    /// All access keys.
    pub fn access_keys(&self) -> String {
        format!("{}/access-keys/", self.p)
    }
    /// `access-keys/<key id>`: secret and principal of a tenant or node key.
    pub fn access_key(&self, key_id: &str) -> String {
        format!("{}/access-keys/{}", self.p, hex::encode(key_id))
    }

    /// `nonces/<hex SHA-256 of key id and nonce>`: a signed gRPC request
    /// already accepted ([`crate::domain::nonces`]), under a lease.
    pub fn nonce(&self, digest_hex: &str) -> String {
        format!("{}/nonces/{digest_hex}", self.p)
    }
    /// All recorded nonces.
    pub fn nonces(&self) -> String {
        format!("{}/nonces/", self.p)
    }

    /// `enrolment-tokens/<token id>`: a one-time per-host enrolment token.
    pub fn enrolment_token(&self, token_id: &str) -> String {
        format!("{}/enrolment-tokens/{}", self.p, hex::encode(token_id))
    }
    /// All enrolment tokens.
    pub fn enrolment_tokens(&self) -> String {
        format!("{}/enrolment-tokens/", self.p)
    }

    /// `instance-types/<name>`: one type of the catalogue (names are
    /// `<family>.<size>` of lower-case letters, digits and `-`, checked
    /// before any key is built).
    pub fn instance_type(&self, name: &str) -> String {
        format!("{}/instance-types/{name}", self.p)
    }
    /// Every instance type.
    pub fn instance_types(&self) -> String {
        format!("{}/instance-types/", self.p)
    }
    /// `instance-types-seeded`: written with the seed set, so the catalogue
    /// is seeded once per cluster (outside `instance-types/`).
    pub fn instance_types_seeded(&self) -> String {
        format!("{}/instance-types-seeded", self.p)
    }

    /// `images/<ami>`.
    pub fn image(&self, id: &crate::ids::ImageId) -> String {
        format!("{}/images/{id}", self.p)
    }
    /// All images.
    pub fn images(&self) -> String {
        format!("{}/images/", self.p)
    }

    /// `quota-usage/<account>`: what the account uses of its quotas
    /// ([`crate::domain::quotas::Usage`]), changed in the transactions
    /// that create and release what it counts.
    pub fn quota_usage(&self, account: &AccountId) -> String {
        format!("{}/quota-usage/{account}", self.p)
    }
    /// `quotas/<account>`: the operator's limits for the account
    /// ([`crate::domain::quotas::QuotaOverrides`]).
    pub fn quota_overrides(&self, account: &AccountId) -> String {
        format!("{}/quotas/{account}", self.p)
    }

    /// `keypairs/<account>/<hex name>`.
    pub fn keypair(&self, account: &AccountId, name: &str) -> String {
        format!("{}/keypairs/{account}/{}", self.p, hex::encode(name))
    }
    /// All key pairs of an account.
    pub fn account_keypairs(&self, account: &AccountId) -> String {
        format!("{}/keypairs/{account}/", self.p)
    }

    /// Everything the node cache watches: records, allocations, liveness.
    pub fn node_tree(&self) -> String {
        format!("{}/n/", self.p)
    }
    /// `n/rec/<node>`: the node record (zone, capacity, images, cordon).
    pub fn node(&self, id: &NodeId) -> String {
        format!("{}/n/rec/{id}", self.p)
    }
    /// Node record prefix.
    pub fn nodes(&self) -> String {
        format!("{}/n/rec/", self.p)
    }
    /// `n/alloc/<node>`: what the scheduler placed there. Every placement
    /// compares this key's mod_revision.
    pub fn node_alloc(&self, id: &NodeId) -> String {
        format!("{}/n/alloc/{id}", self.p)
    }
    /// Allocation prefix.
    pub fn node_allocs(&self) -> String {
        format!("{}/n/alloc/", self.p)
    }
    /// `n/alive/<node>`: bound to the node's lease; absent = node lost.
    pub fn node_alive(&self, id: &NodeId) -> String {
        format!("{}/n/alive/{id}", self.p)
    }
    /// Liveness prefix.
    pub fn node_alives(&self) -> String {
        format!("{}/n/alive/", self.p)
    }
    /// `node-hosts/<hex host id>` -> node id (create-if-absent on Register).
    pub fn node_host(&self, host_id: &str) -> String {
        format!("{}/node-hosts/{}", self.p, hex::encode(host_id))
    }
    /// `ip-blocks/<n>` -> node id owning address block n.
    pub fn ip_block(&self, n: u32) -> String {
        format!("{}/ip-blocks/{n:08}", self.p)
    }
    /// All address blocks.
    pub fn ip_blocks(&self) -> String {
        format!("{}/ip-blocks/", self.p)
    }

    /// `ipam/subnets/<subnet>`: a subnet ([`crate::domain::ipam::Subnet`]).
    pub fn subnet(&self, id: &crate::ids::SubnetId) -> String {
        format!("{}/ipam/subnets/{id}", self.p)
    }
    /// `ipam/addrs/<subnet>/<a.b.c.d>`: the claim of one address
    /// ([`crate::domain::ipam::AddressClaim`]).
    pub fn address_claim(&self, subnet: &crate::ids::SubnetId, ip: &str) -> String {
        format!("{}/ipam/addrs/{subnet}/{ip}", self.p)
    }
    /// All claims in a subnet.
    pub fn address_claims(&self, subnet: &crate::ids::SubnetId) -> String {
        format!("{}/ipam/addrs/{subnet}/", self.p)
    }

    /// Everything a node's assignment stream watches.
    pub fn desired(&self, node: &NodeId) -> String {
        format!("{}/desired/{node}/", self.p)
    }
    /// `desired/<node>/a/<instance>`: the assignment (desired state + spec).
    pub fn assignment(&self, node: &NodeId, id: &InstanceId) -> String {
        format!("{}/desired/{node}/a/{id}", self.p)
    }
    /// Assignment prefix of a node.
    pub fn assignments(&self, node: &NodeId) -> String {
        format!("{}/desired/{node}/a/", self.p)
    }
    /// `desired/<node>/c/<instance>`: the pending console request for an
    /// instance (short lease; at most one per instance).
    pub fn console_request(&self, node: &NodeId, instance: &str) -> String {
        format!("{}/desired/{node}/c/{instance}", self.p)
    }
    /// `console/<instance>`: the last console output an agent reported.
    pub fn console(&self, id: &InstanceId) -> String {
        format!("{}/console/{id}", self.p)
    }

    /// `lost-confirmations/<node>`: an operator confirmed the node lost.
    pub fn lost_confirmation(&self, node: &NodeId) -> String {
        format!("{}/lost-confirmations/{node}", self.p)
    }
    /// Every lost-node confirmation.
    pub fn lost_confirmations(&self) -> String {
        format!("{}/lost-confirmations/", self.p)
    }

    /// `launch-templates/<account>/<hex name>`: a launch template's header.
    pub fn launch_template(&self, account: &AccountId, name: &str) -> String {
        format!(
            "{}/launch-templates/{account}/{}",
            self.p,
            hex::encode(name)
        )
    }
    /// An account's launch templates.
    pub fn account_launch_templates(&self, account: &AccountId) -> String {
        format!("{}/launch-templates/{account}/", self.p)
    }
    /// `launch-template-versions/<lt-…>/<n:010>`: one immutable version.
    pub fn launch_template_version(&self, id: &crate::ids::LaunchTemplateId, n: u64) -> String {
        format!("{}/launch-template-versions/{id}/{n:010}", self.p)
    }
    /// Every version of a launch template.
    pub fn launch_template_versions(&self, id: &crate::ids::LaunchTemplateId) -> String {
        format!("{}/launch-template-versions/{id}/", self.p)
    }
    /// `asgs/<account>/<hex name>`: an Auto Scaling group.
    pub fn asg(&self, account: &AccountId, name: &str) -> String {
        format!("{}/asgs/{account}/{}", self.p, hex::encode(name))
    }
    /// An account's Auto Scaling groups.
    pub fn account_asgs(&self, account: &AccountId) -> String {
        format!("{}/asgs/{account}/", self.p)
    }
    /// Every Auto Scaling group.
    pub fn all_asgs(&self) -> String {
        format!("{}/asgs/", self.p)
    }
    /// `asg-activities/<account>/<hex group name>/<seq:010>`: one scaling activity.
    pub fn asg_activity(&self, account: &AccountId, group: &str, seq: u64) -> String {
        format!(
            "{}/asg-activities/{account}/{}/{seq:010}",
            self.p,
            hex::encode(group)
        )
    }
    /// A group's scaling activities.
    pub fn asg_activities(&self, account: &AccountId, group: &str) -> String {
        format!(
            "{}/asg-activities/{account}/{}/",
            self.p,
            hex::encode(group)
        )
    }

    /// `vpc-accounts/<account>`: an account's VPC index (its VPC ids and
    /// its default VPC), compared by every VPC create/delete.
    pub fn vpc_account(&self, account: &AccountId) -> String {
        format!("{}/vpc-accounts/{account}", self.p)
    }
    /// `vpcs/<account>/<vpc-…>`: a VPC ([`crate::domain::vpc::Vpc`]).
    pub fn vpc(&self, account: &AccountId, id: &crate::ids::VpcId) -> String {
        format!("{}/vpcs/{account}/{id}", self.p)
    }
    /// An account's VPCs.
    pub fn account_vpcs(&self, account: &AccountId) -> String {
        format!("{}/vpcs/{account}/", self.p)
    }
    /// Every account's VPCs.
    pub fn all_vpcs(&self) -> String {
        format!("{}/vpcs/", self.p)
    }
    /// `vpc-vnis/<vni:08>` -> the VPC holding the VNI
    /// ([`crate::domain::vpc::vni::VniGuard`]): created with the VPC
    /// (compare-absent), deleted with it.
    pub fn vpc_vni(&self, vni: u32) -> String {
        format!("{}/vpc-vnis/{vni:08}", self.p)
    }
    /// Every account's VPC subnets.
    pub fn all_vpc_subnets(&self) -> String {
        format!("{}/vpc-subnets/", self.p)
    }
    /// Every account's security groups.
    pub fn all_security_groups(&self) -> String {
        format!("{}/security-groups/", self.p)
    }
    /// Every account's instance public addresses.
    pub fn all_instance_public_ips(&self) -> String {
        format!("{}/instance-public-ips/", self.p)
    }
    /// Every account's internet gateways.
    pub fn all_internet_gateways(&self) -> String {
        format!("{}/internet-gateways/", self.p)
    }
    /// Every account's route tables.
    pub fn all_route_tables(&self) -> String {
        format!("{}/route-tables/", self.p)
    }
    /// Every account's explicit route table associations.
    pub fn all_route_table_subnets(&self) -> String {
        format!("{}/route-table-subnets/", self.p)
    }
    /// `vpc-subnets/<account>/<subnet-…>`: a VPC subnet
    /// ([`crate::domain::vpc::VpcSubnet`]).
    pub fn vpc_subnet(&self, account: &AccountId, id: &crate::ids::SubnetId) -> String {
        format!("{}/vpc-subnets/{account}/{id}", self.p)
    }
    /// An account's VPC subnets.
    pub fn account_vpc_subnets(&self, account: &AccountId) -> String {
        format!("{}/vpc-subnets/{account}/", self.p)
    }
    /// `security-groups/<account>/<sg-…>`: a security group with its rules
    /// ([`crate::domain::vpc::SecurityGroup`]).
    pub fn security_group(&self, account: &AccountId, id: &crate::ids::SecurityGroupId) -> String {
        format!("{}/security-groups/{account}/{id}", self.p)
    }
    /// An account's security groups.
    pub fn account_security_groups(&self, account: &AccountId) -> String {
        format!("{}/security-groups/{account}/", self.p)
    }
    /// `security-group-names/<account>/<vpc-…>/<hex name>` -> the group id:
    /// a group name is unique within its VPC (created with the group).
    pub fn security_group_name(
        &self,
        account: &AccountId,
        vpc: &crate::ids::VpcId,
        name: &str,
    ) -> String {
        format!(
            "{}/security-group-names/{account}/{vpc}/{}",
            self.p,
            hex::encode(name)
        )
    }

    /// `elastic-ip-accounts/<account>`: an account's Elastic IP index (its
    /// allocation ids; the per-account limit is decided there).
    pub fn elastic_ip_account(&self, account: &AccountId) -> String {
        format!("{}/elastic-ip-accounts/{account}", self.p)
    }
    /// `elastic-ips/<account>/<eipalloc-…>`: an Elastic IP
    /// ([`crate::domain::vpc::addresses::ElasticIp`]).
    pub fn elastic_ip(&self, account: &AccountId, id: &crate::ids::AllocationId) -> String {
        format!("{}/elastic-ips/{account}/{id}", self.p)
    }
    /// An account's Elastic IPs.
    pub fn account_elastic_ips(&self, account: &AccountId) -> String {
        format!("{}/elastic-ips/{account}/", self.p)
    }
    /// `public-ips/<a.b.c.d>`: the claim of one public address of the
    /// region's pool (created compare-absent: one holder per address).
    pub fn public_ip(&self, ip: std::net::Ipv4Addr) -> String {
        format!("{}/public-ips/{ip}", self.p)
    }
    /// Every public address claim.
    pub fn public_ips(&self) -> String {
        format!("{}/public-ips/", self.p)
    }
    /// `instance-public-ips/<account>/<i-…>`: the public address an
    /// instance has now (an Elastic IP's or an auto-assigned one).
    pub fn instance_public_ip(&self, account: &AccountId, id: &InstanceId) -> String {
        format!("{}/instance-public-ips/{account}/{id}", self.p)
    }
    /// An account's instance public addresses.
    pub fn account_instance_public_ips(&self, account: &AccountId) -> String {
        format!("{}/instance-public-ips/{account}/", self.p)
    }
    /// `internet-gateways/<account>/<igw-…>`: an internet gateway.
    pub fn internet_gateway(
        &self,
        account: &AccountId,
        id: &crate::ids::InternetGatewayId,
    ) -> String {
        format!("{}/internet-gateways/{account}/{id}", self.p)
    }
    /// An account's internet gateways.
    pub fn account_internet_gateways(&self, account: &AccountId) -> String {
        format!("{}/internet-gateways/{account}/", self.p)
    }
    /// `route-tables/<account>/<rtb-…>`: a route table.
    pub fn route_table(&self, account: &AccountId, id: &crate::ids::RouteTableId) -> String {
        format!("{}/route-tables/{account}/{id}", self.p)
    }
    /// An account's route tables.
    pub fn account_route_tables(&self, account: &AccountId) -> String {
        format!("{}/route-tables/{account}/", self.p)
    }
    /// `route-table-subnets/<account>/<subnet-…>`: a subnet's explicit
    /// route table association (one per subnet, created compare-absent).
    pub fn route_table_subnet(&self, account: &AccountId, subnet: &crate::ids::SubnetId) -> String {
        format!("{}/route-table-subnets/{account}/{subnet}", self.p)
    }
    /// An account's explicit route table associations.
    pub fn account_route_table_subnets(&self, account: &AccountId) -> String {
        format!("{}/route-table-subnets/{account}/", self.p)
    }

    /// `network-interfaces/<account>/<eni-…>`: an elastic network
    /// interface ([`crate::domain::vpc::enis::NetworkInterface`]).
    pub fn network_interface(
        &self,
        account: &AccountId,
        id: &crate::ids::NetworkInterfaceId,
    ) -> String {
        format!("{}/network-interfaces/{account}/{id}", self.p)
    }
    /// An account's network interfaces.
    pub fn account_network_interfaces(&self, account: &AccountId) -> String {
        format!("{}/network-interfaces/{account}/", self.p)
    }

    /// The election name of the leader-only background tasks.
    pub fn election(&self) -> String {
        format!("{}/election/reconciler", self.p)
    }

    /// Classifies a key under [`Keys::desired`]: assignment or console request.
    pub fn parse_desired<'a>(&self, node: &NodeId, key: &'a str) -> Option<DesiredKey<'a>> {
        let rest = key.strip_prefix(&self.desired(node))?;
        if let Some(id) = rest.strip_prefix("a/") {
            Some(DesiredKey::Assignment(id))
        } else {
            rest.strip_prefix("c/").map(DesiredKey::Console)
        }
    }

    /// Classifies a key under [`Keys::node_tree`].
    pub fn parse_node_tree<'a>(&self, key: &'a str) -> Option<NodeKey<'a>> {
        let rest = key.strip_prefix(&self.node_tree())?;
        if let Some(id) = rest.strip_prefix("rec/") {
            Some(NodeKey::Record(id))
        } else if let Some(id) = rest.strip_prefix("alloc/") {
            Some(NodeKey::Alloc(id))
        } else {
            rest.strip_prefix("alive/").map(NodeKey::Alive)
        }
    }
}

/// A key under a node's desired-state tree.
#[derive(Debug, PartialEq, Eq)]
pub enum DesiredKey<'a> {
    /// An assignment of this instance id.
    Assignment(&'a str),
    /// A console request with this id.
    Console(&'a str),
}

/// A key under the node tree.
#[derive(Debug, PartialEq, Eq)]
pub enum NodeKey<'a> {
    /// Node record of this node id.
    Record(&'a str),
    /// Allocation of this node id.
    Alloc(&'a str),
    /// Liveness of this node id.
    Alive(&'a str),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_back() {
        let k = Keys::new("/nubis/");
        let n = NodeId::generate();
        let i = InstanceId::generate();
        assert_eq!(
            k.parse_desired(&n, &k.assignment(&n, &i)),
            Some(DesiredKey::Assignment(i.as_str()))
        );
        assert_eq!(
            k.parse_desired(&n, &k.console_request(&n, "r1")),
            Some(DesiredKey::Console("r1"))
        );
        assert_eq!(
            k.parse_node_tree(&k.node_alloc(&n)),
            Some(NodeKey::Alloc(n.as_str()))
        );
        assert!(k.node(&n).starts_with("/nubis/v1/n/rec/node-"));
        // Free-form names cannot escape their segment.
        assert!(!k.keypair(&AccountId::operator(), "a/../b").contains("../"));
    }
}
