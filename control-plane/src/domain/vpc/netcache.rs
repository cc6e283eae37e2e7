//! The replica's watch-fed cache of what network views are made of, shared
//! by every `WatchNetwork` stream the replica serves: instances with a VPC
//! address (`instances/`), node underlay addresses (`n/rec/`), VPCs
//! (`vpcs/`), their subnets (`vpc-subnets/`), security groups
//! (`security-groups/`), instances' public addresses
//! (`instance-public-ips/`), internet gateways (`internet-gateways/`) and
//! route tables with their subnet associations (`route-tables/`,
//! `route-table-subnets/`). Each prefix is followed by a compaction-safe
//! watch ([`crate::store::watch`]: a snapshot, then changes), so the cache
//! costs one listing per prefix at start and then only the changes; a view
//! is computed from memory ([`super::view`]). Started by the first
//! `WatchNetwork` call a replica serves ([`Domain::network_cache`]).
//!
//! Every applied change bumps a generation that the streams wait on; each
//! stream then waits [`DEBOUNCE`] for further changes, computes its node's
//! view and sends it only when it differs from the last one sent.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::addresses::InstancePublicIp;
use super::gateways::InternetGateway;
use super::routes::{RouteTable, SubnetRouteTable};
use super::view::{view_of, NetworkView};
use super::{SecurityGroup, Vpc, VpcSubnet};
use crate::domain::lifecycle::State;
use crate::domain::model::{Instance, Node};
use crate::domain::{Caller, Domain};
use crate::error::Result;
use crate::ids::{
    InstanceId, InternetGatewayId, NodeId, RouteTableId, SecurityGroupId, SubnetId, VpcId,
};
use crate::store::watch::{watch_prefix, WatchItem};
use crate::store::{decode, Store};

/// How long a stream waits after a change for further ones before it
/// computes a view.
pub const DEBOUNCE: Duration = Duration::from_millis(50);

/// What the cache keeps of an instance that is an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedEndpoint {
    /// Instance.
    pub instance_id: InstanceId,
    /// VPC.
    pub vpc_id: VpcId,
    /// Node.
    pub node_id: NodeId,
    /// Subnet.
    pub subnet_id: SubnetId,
    /// Address.
    pub ip: String,
    /// MAC.
    pub mac: String,
    /// Current groups.
    pub security_group_ids: Vec<SecurityGroupId>,
    /// The interface the instance was launched with (empty: derived).
    pub interface_id: String,
    /// Its secondary interfaces (each one endpoint more).
    pub secondaries: Vec<super::eni_secondary::SecondaryInterface>,
}

impl CachedEndpoint {
    /// The endpoint of an instance record, if it is one: a VPC address, a
    /// node, not terminated.
    pub fn of(i: &Instance) -> Option<Self> {
        if i.state == State::Terminated {
            return None;
        }
        let node = i.node_id.clone()?;
        let net = i.network.as_ref()?;
        let vpc = net.vpc.as_ref()?;
        Some(Self {
            instance_id: i.id.clone(),
            vpc_id: vpc.vpc_id.clone(),
            node_id: node,
            subnet_id: net.subnet_id.clone()?,
            ip: net.ip.clone(),
            mac: net.mac.clone(),
            security_group_ids: i
                .vpc
                .as_ref()
                .map(|v| v.security_group_ids.clone())
                .unwrap_or_default(),
            interface_id: i
                .vpc
                .as_ref()
                .and_then(|v| v.network_interface_id.as_ref())
                .map(|e| e.to_string())
                .unwrap_or_default(),
            secondaries: super::eni_secondary::secondaries_of(i).to_vec(),
        })
    }
}

/// The prefixes the cache follows (index = bit in `NetState::listed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Instances = 0,
    Nodes = 1,
    Vpcs = 2,
    Subnets = 3,
    Groups = 4,
    PublicIps = 5,
    Gateways = 6,
    RouteTables = 7,
    TableSubnets = 8,
}

const ALL_LISTED: u16 = 0b1_1111_1111;

/// The cached records (see the module docs) with the indexes views need.
#[derive(Debug, Default)]
pub struct NetState {
    revision: i64,
    listed: u16,
    /// Something views are made of changed since the streams were last
    /// told (an instance update that changes no endpoint does not count).
    changed: bool,
    endpoints: HashMap<InstanceId, CachedEndpoint>,
    by_vpc: HashMap<VpcId, BTreeSet<InstanceId>>,
    by_node: HashMap<NodeId, BTreeSet<InstanceId>>,
    underlay: HashMap<NodeId, String>,
    vpcs: HashMap<VpcId, Vpc>,
    subnets: HashMap<SubnetId, VpcSubnet>,
    subnets_by_vpc: HashMap<VpcId, BTreeSet<SubnetId>>,
    groups: HashMap<SecurityGroupId, SecurityGroup>,
    public_ips: HashMap<InstanceId, String>,
    /// Internet gateways and the VPC each is attached to.
    gateways: HashMap<InternetGatewayId, Option<VpcId>>,
    route_tables: HashMap<RouteTableId, RouteTable>,
    /// Explicit route table associations.
    subnet_tables: HashMap<SubnetId, RouteTableId>,
}

impl NetState {
    /// The newest etcd revision applied.
    pub fn revision(&self) -> i64 {
        self.revision
    }
    /// A node's underlay address (empty when unknown or none).
    pub fn underlay_of(&self, node: &NodeId) -> &str {
        self.underlay.get(node).map_or("", String::as_str)
    }
    /// The endpoints placed on `node`.
    pub fn endpoints_on<'a>(
        &'a self,
        node: &NodeId,
    ) -> impl Iterator<Item = &'a CachedEndpoint> + 'a {
        self.by_node
            .get(node)
            .into_iter()
            .flatten()
            .filter_map(|i| self.endpoints.get(i))
    }
    /// The endpoints of a VPC, by instance id.
    pub fn endpoints_in<'a>(
        &'a self,
        vpc: &VpcId,
    ) -> impl Iterator<Item = &'a CachedEndpoint> + 'a {
        self.by_vpc
            .get(vpc)
            .into_iter()
            .flatten()
            .filter_map(|i| self.endpoints.get(i))
    }
    /// A VPC.
    pub fn vpc(&self, id: &VpcId) -> Option<&Vpc> {
        self.vpcs.get(id)
    }
    /// The subnets of a VPC, by id.
    pub fn subnets_of<'a>(&'a self, vpc: &VpcId) -> impl Iterator<Item = &'a VpcSubnet> + 'a {
        self.subnets_by_vpc
            .get(vpc)
            .into_iter()
            .flatten()
            .filter_map(|s| self.subnets.get(s))
    }
    /// A security group.
    pub fn group(&self, id: &SecurityGroupId) -> Option<&SecurityGroup> {
        self.groups.get(id)
    }
    /// An instance's public address (an Elastic IP's or an auto-assigned
    /// one).
    pub fn public_ip_of(&self, id: &InstanceId) -> Option<&str> {
        self.public_ips.get(id).map(String::as_str)
    }
    /// Whether `subnet`'s route table (its explicit one, else its VPC's main
    /// table) sends 0.0.0.0/0 to the internet gateway attached to its VPC.
    pub fn internet_routed(&self, subnet: &VpcSubnet) -> bool {
        let vpc = &subnet.vpc_id;
        let igw = self
            .gateways
            .iter()
            .find(|(_, v)| v.as_ref() == Some(vpc))
            .map(|(id, _)| id.clone());
        let main = RouteTableId::main_of(vpc);
        let table = self.subnet_tables.get(&subnet.id).unwrap_or(&main);
        self.route_tables
            .get(table)
            .is_some_and(|t| super::routes::default_route_to(t, igw.as_ref()))
    }

    fn remove_endpoint(&mut self, id: &InstanceId) {
        if let Some(old) = self.endpoints.remove(id) {
            self.changed = true;
            if let Some(s) = self.by_vpc.get_mut(&old.vpc_id) {
                s.remove(id);
                if s.is_empty() {
                    self.by_vpc.remove(&old.vpc_id);
                }
            }
            if let Some(s) = self.by_node.get_mut(&old.node_id) {
                s.remove(id);
                if s.is_empty() {
                    self.by_node.remove(&old.node_id);
                }
            }
        }
    }

    fn put_endpoint(&mut self, id: InstanceId, ep: Option<CachedEndpoint>) {
        if self.endpoints.get(&id) == ep.as_ref() {
            return;
        }
        self.changed = true;
        self.remove_endpoint(&id);
        if let Some(ep) = ep {
            self.by_vpc
                .entry(ep.vpc_id.clone())
                .or_default()
                .insert(id.clone());
            self.by_node
                .entry(ep.node_id.clone())
                .or_default()
                .insert(id.clone());
            self.endpoints.insert(id, ep);
        }
    }

    fn remove_subnet(&mut self, id: &SubnetId) {
        if let Some(old) = self.subnets.remove(id) {
            if let Some(s) = self.subnets_by_vpc.get_mut(&old.vpc_id) {
                s.remove(id);
            }
        }
    }

    fn clear(&mut self, kind: Kind) {
        match kind {
            Kind::Instances => {
                self.endpoints.clear();
                self.by_vpc.clear();
                self.by_node.clear();
            }
            Kind::Nodes => self.underlay.clear(),
            Kind::Vpcs => self.vpcs.clear(),
            Kind::Subnets => {
                self.subnets.clear();
                self.subnets_by_vpc.clear();
            }
            Kind::Groups => self.groups.clear(),
            Kind::PublicIps => self.public_ips.clear(),
            Kind::Gateways => self.gateways.clear(),
            Kind::RouteTables => self.route_tables.clear(),
            Kind::TableSubnets => self.subnet_tables.clear(),
        }
    }

    /// Applies a stored value (`None`: deleted) of `kind` at `key`.
    fn apply(&mut self, kind: Kind, key: &str, value: Option<&[u8]>) {
        let Some(id) = key.rsplit('/').next() else {
            return;
        };
        let res = match kind {
            Kind::Instances => InstanceId::parse(id).map(|id| match value {
                Some(v) => match decode::<Instance>(key.as_bytes(), v) {
                    Ok(i) => self.put_endpoint(id, CachedEndpoint::of(&i)),
                    Err(e) => tracing::error!(error = %e, "network cache: instance skipped"),
                },
                None => self.remove_endpoint(&id),
            }),
            Kind::Nodes => NodeId::parse(id).map(|id| match value {
                Some(v) => match decode::<Node>(key.as_bytes(), v) {
                    Ok(n) => {
                        if self.underlay.get(&id) != Some(&n.underlay_ip) {
                            self.changed = true;
                            self.underlay.insert(id, n.underlay_ip);
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "network cache: node skipped"),
                },
                None => {
                    self.changed |= self.underlay.remove(&id).is_some();
                }
            }),
            Kind::Vpcs => VpcId::parse(id).map(|id| match value {
                Some(v) => match decode::<Vpc>(key.as_bytes(), v) {
                    Ok(vpc) => {
                        self.changed |= self.vpcs.get(&id) != Some(&vpc);
                        self.vpcs.insert(id, vpc);
                    }
                    Err(e) => tracing::error!(error = %e, "network cache: VPC skipped"),
                },
                None => {
                    self.changed |= self.vpcs.remove(&id).is_some();
                }
            }),
            Kind::Subnets => SubnetId::parse(id).map(|id| {
                // Subnets change rarely: any write counts.
                self.changed = true;
                self.remove_subnet(&id);
                if let Some(v) = value {
                    match decode::<VpcSubnet>(key.as_bytes(), v) {
                        Ok(s) => {
                            self.subnets_by_vpc
                                .entry(s.vpc_id.clone())
                                .or_default()
                                .insert(id.clone());
                            self.subnets.insert(id, s);
                        }
                        Err(e) => tracing::error!(error = %e, "network cache: subnet skipped"),
                    }
                }
            }),
            Kind::Groups => SecurityGroupId::parse(id).map(|id| match value {
                Some(v) => match decode::<SecurityGroup>(key.as_bytes(), v) {
                    Ok(g) => {
                        self.changed |= self.groups.get(&id) != Some(&g);
                        self.groups.insert(id, g);
                    }
                    Err(e) => tracing::error!(error = %e, "network cache: group skipped"),
                },
                None => {
                    self.changed |= self.groups.remove(&id).is_some();
                }
            }),
            Kind::PublicIps => InstanceId::parse(id).map(|id| {
                let new = value.and_then(|v| {
                    decode::<InstancePublicIp>(key.as_bytes(), v)
                        .map_err(|e| tracing::error!(error = %e, "network cache: public address skipped"))
                        .ok()
                        .map(|p| p.public_ip)
                });
                if self.public_ips.get(&id) != new.as_ref() {
                    self.changed = true;
                    match new {
                        Some(ip) => self.public_ips.insert(id, ip),
                        None => self.public_ips.remove(&id),
                    };
                }
            }),
            Kind::Gateways => InternetGatewayId::parse(id).map(|id| {
                // Gateways change rarely: any write counts.
                self.changed = true;
                match value.map(|v| decode::<InternetGateway>(key.as_bytes(), v)) {
                    Some(Ok(g)) => {
                        self.gateways.insert(id, g.vpc_id);
                    }
                    Some(Err(e)) => {
                        tracing::error!(error = %e, "network cache: gateway skipped");
                        self.gateways.remove(&id);
                    }
                    None => {
                        self.gateways.remove(&id);
                    }
                }
            }),
            Kind::RouteTables => RouteTableId::parse(id).map(|id| {
                self.changed = true;
                match value.map(|v| decode::<RouteTable>(key.as_bytes(), v)) {
                    Some(Ok(t)) => {
                        self.route_tables.insert(id, t);
                    }
                    Some(Err(e)) => {
                        tracing::error!(error = %e, "network cache: route table skipped");
                        self.route_tables.remove(&id);
                    }
                    None => {
                        self.route_tables.remove(&id);
                    }
                }
            }),
            Kind::TableSubnets => SubnetId::parse(id).map(|id| {
                self.changed = true;
                match value.map(|v| decode::<SubnetRouteTable>(key.as_bytes(), v)) {
                    Some(Ok(a)) => {
                        self.subnet_tables.insert(id, a.route_table_id);
                    }
                    Some(Err(e)) => {
                        tracing::error!(error = %e, "network cache: route table association skipped");
                        self.subnet_tables.remove(&id);
                    }
                    None => {
                        self.subnet_tables.remove(&id);
                    }
                }
            }),
        };
        if res.is_err() {
            tracing::debug!(key, "network cache: key without an id skipped");
        }
    }

    fn apply_item(&mut self, kind: Kind, item: WatchItem) {
        match item {
            WatchItem::Snapshot { kvs, revision } => {
                self.changed = true;
                self.clear(kind);
                for (k, v, _) in &kvs {
                    self.apply(kind, k, Some(v));
                }
                self.revision = self.revision.max(revision);
                self.listed |= 1 << (kind as u8);
            }
            WatchItem::Put {
                key,
                value,
                mod_revision,
            } => {
                self.apply(kind, &key, Some(&value));
                self.revision = self.revision.max(mod_revision);
            }
            WatchItem::Delete { key, revision } => {
                self.apply(kind, &key, None);
                self.revision = self.revision.max(revision);
            }
        }
    }
}

/// The cache (see the module docs).
#[derive(Debug)]
pub struct NetCache {
    state: RwLock<NetState>,
    generation: watch::Sender<u64>,
}

impl NetCache {
    /// Starts following the prefixes (one task each, ended when the cache
    /// is dropped).
    pub fn start(store: &Store) -> Arc<Self> {
        let (generation, _) = watch::channel(0);
        let cache = Arc::new(Self {
            state: RwLock::new(NetState::default()),
            generation,
        });
        let keys = store.keys();
        for (kind, prefix) in [
            (Kind::Instances, keys.all_instances()),
            (Kind::Nodes, keys.nodes()),
            (Kind::Vpcs, keys.all_vpcs()),
            (Kind::Subnets, keys.all_vpc_subnets()),
            (Kind::Groups, keys.all_security_groups()),
            (Kind::PublicIps, keys.all_instance_public_ips()),
            (Kind::Gateways, keys.all_internet_gateways()),
            (Kind::RouteTables, keys.all_route_tables()),
            (Kind::TableSubnets, keys.all_route_table_subnets()),
        ] {
            let rx = watch_prefix(store.clone(), prefix);
            tokio::spawn(follow(Arc::downgrade(&cache), kind, rx));
        }
        cache
    }

    /// The view of `node` now.
    pub fn view_of(&self, node: &NodeId) -> NetworkView {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        view_of(&state, node)
    }

    fn ready(&self) -> bool {
        self.state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .listed
            == ALL_LISTED
    }
}

async fn follow(cache: Weak<NetCache>, kind: Kind, mut rx: mpsc::Receiver<WatchItem>) {
    while let Some(item) = rx.recv().await {
        let Some(cache) = cache.upgrade() else { return };
        let changed = {
            let mut state = cache.state.write().unwrap_or_else(PoisonError::into_inner);
            state.apply_item(kind, item);
            // Whatever else is queued, applied under the same lock.
            while let Ok(more) = rx.try_recv() {
                state.apply_item(kind, more);
            }
            std::mem::take(&mut state.changed)
        };
        if changed {
            cache.generation.send_modify(|g| *g += 1);
        }
    }
}

impl Domain {
    /// This replica's network cache (started by the first call).
    pub(crate) async fn network_cache(&self) -> Arc<NetCache> {
        self.netcache
            .get_or_init(|| async { NetCache::start(&self.store) })
            .await
            .clone()
    }

    /// WatchNetwork: the node's network view now (once the cache has listed
    /// everything), then a new one whenever it changes (debounced; an
    /// identical view is not sent again). Only the node itself may watch.
    pub async fn watch_network(
        &self,
        caller: &Caller,
        node_id: &str,
    ) -> Result<mpsc::Receiver<NetworkView>> {
        let id = NodeId::parse(node_id)?;
        caller.require_node(&id)?;
        self.store.nodes().get(&id).await?.ok_or_else(|| {
            crate::error::Error::not_found(
                "InvalidNodeID.NotFound",
                format!("the node '{id}' does not exist"),
            )
        })?;
        let cache = self.network_cache().await;
        let (tx, out) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut changes = cache.generation.subscribe();
            let mut sent: Option<Vec<super::view::VpcView>> = None;
            let mut last_revision = 0i64;
            loop {
                if cache.ready() {
                    let mut view = cache.view_of(&id);
                    if sent.as_ref() != Some(&view.vpcs) {
                        // The watches of the five prefixes advance on
                        // their own: a change seen late may carry an older
                        // revision than one already applied.
                        view.revision = view.revision.max(last_revision + 1);
                        last_revision = view.revision;
                        sent = Some(view.vpcs.clone());
                        if tx.send(view).await.is_err() {
                            return;
                        }
                    }
                }
                tokio::select! {
                    r = changes.changed() => if r.is_err() { return },
                    _ = tx.closed() => return,
                }
                tokio::time::sleep(DEBOUNCE).await;
                changes.borrow_and_update();
            }
        });
        Ok(out)
    }
}
