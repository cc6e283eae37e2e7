//! Route tables: every VPC has a main table (id derived from the VPC's,
//! created with it, or on first use for VPCs older than route tables) with
//! the implicit `local` route of the VPC's block; CreateRouteTable,
//! CreateRoute / DeleteRoute (an IPv4 block to an internet gateway attached
//! to the table's VPC), AssociateRouteTable / DisassociateRouteTable (a
//! subnet of the same VPC, one explicit table per subnet; the others use
//! the main table), DeleteRouteTable (`DependencyViolation` for the main
//! table or one with associations), DescribeRouteTables.
//!
//! Consistency: a subnet's association is one key created compare-absent
//! (`route-table-subnets/<account>/<subnet>`); associating rewrites the
//! table, so DeleteRouteTable (delete-if-unchanged) cannot miss a racing
//! association. CreateRoute compares the gateway record (a racing detach
//! wins or loses as a whole). Routes to a gateway that is no longer
//! attached stay, shown `blackhole`, as in EC2.
//!
//! [`Domain::subnet_internet_routes`] is the data plane's view of this:
//! which subnets send 0.0.0.0/0 to an attached gateway.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::vpcs::bool_str;
use super::{dependency, subnet_not_found, Cidr, MAX_ATTEMPTS};
use crate::domain::filters::{self, Filter};
use crate::domain::model::now_ms;
use crate::domain::{validation, Caller, Domain};
use crate::error::{Error, Result};
use crate::ids::{
    AccountId, InternetGatewayId, RouteTableAssociationId, RouteTableId, SubnetId, VpcId,
};
use crate::store::{Keys, Record, Tx, Versioned};

/// One route of a table (besides the implicit local route).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// `a.b.c.d/len`.
    pub destination: String,
    /// The internet gateway it sends traffic to.
    pub gateway_id: InternetGatewayId,
}

/// A route table (`route-tables/<account>/<rtb>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteTable {
    /// Id.
    pub id: RouteTableId,
    /// Owner.
    pub account: AccountId,
    /// The VPC.
    pub vpc_id: VpcId,
    /// The VPC's main table (used by subnets without an explicit one).
    pub main: bool,
    /// Routes other than the local one, in creation order.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Created.
    pub created_ms: i64,
}

/// A subnet's explicit association (`route-table-subnets/<account>/<subnet>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetRouteTable {
    /// The subnet.
    pub subnet_id: SubnetId,
    /// Its table.
    pub route_table_id: RouteTableId,
    /// Association id.
    pub association_id: RouteTableAssociationId,
}

impl Record for RouteTable {
    const KIND: &'static str = "route-table";
    const SCHEMA: u32 = 1;
}
impl Record for SubnetRouteTable {
    const KIND: &'static str = "route-table-subnet";
    const SCHEMA: u32 = 1;
}

/// Filter names DescribeRouteTables supports.
pub const ROUTE_TABLE_FILTERS: &[&str] = &[
    "route-table-id",
    "vpc-id",
    "association.main",
    "association.subnet-id",
    "association.route-table-association-id",
    "route.gateway-id",
    "route.destination-cidr-block",
    "route.state",
    "owner-id",
    "tag:",
    "tag-key",
    "tag-value",
];

/// Most route tables per VPC and routes per table (EC2's default quotas).
pub const MAX_TABLES_PER_VPC: usize = 200;
/// Most routes per table (EC2's default quota).
pub const MAX_ROUTES_PER_TABLE: usize = 50;

/// The state of a route: `active`, or `blackhole` when its gateway is no
/// longer attached to the table's VPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteView {
    /// Destination block.
    pub destination: String,
    /// `local` or the gateway id.
    pub target: String,
    /// `active` or `blackhole`.
    pub state: &'static str,
    /// `CreateRouteTable` (local) or `CreateRoute`.
    pub origin: &'static str,
}

/// One association as DescribeRouteTables shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssociationView {
    /// Id.
    pub id: RouteTableAssociationId,
    /// The subnet (`None`: the main association).
    pub subnet_id: Option<SubnetId>,
    /// The main association.
    pub main: bool,
}

/// A route table as DescribeRouteTables shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTableView {
    /// The record.
    pub table: RouteTable,
    /// The local route first, then the others.
    pub routes: Vec<RouteView>,
    /// The main association (main table) and the subnets'.
    pub associations: Vec<AssociationView>,
}

/// `InvalidRouteTableID.NotFound`.
pub(crate) fn table_not_found(id: &str) -> Error {
    Error::not_found(
        "InvalidRouteTableID.NotFound",
        format!("The routeTable ID '{id}' does not exist"),
    )
}

/// The main table of a new VPC (with a default route to `igw` for the
/// default VPC).
pub(crate) fn main_table(
    account: &AccountId,
    vpc: &VpcId,
    igw: Option<&InternetGatewayId>,
) -> RouteTable {
    RouteTable {
        id: RouteTableId::main_of(vpc),
        account: account.clone(),
        vpc_id: vpc.clone(),
        main: true,
        routes: igw
            .map(|g| Route {
                destination: "0.0.0.0/0".into(),
                gateway_id: g.clone(),
            })
            .into_iter()
            .collect(),
        tags: BTreeMap::new(),
        created_ms: now_ms(),
    }
}

/// Stages the creation of `vpc`'s main table.
pub(crate) fn stage_main_table(keys: &Keys, tx: &mut Tx, table: &RouteTable) -> Result<()> {
    tx.create(&keys.route_table(&table.account, &table.id), table)?;
    Ok(())
}

/// Whether `table` sends 0.0.0.0/0 to `igw` (the gateway attached to its VPC).
pub(crate) fn default_route_to(table: &RouteTable, igw: Option<&InternetGatewayId>) -> bool {
    let Some(igw) = igw else { return false };
    table
        .routes
        .iter()
        .any(|r| r.destination == "0.0.0.0/0" && &r.gateway_id == igw)
}

impl Domain {
    /// Creates the main table of every VPC of `account` that has none (VPCs
    /// made before route tables existed). Idempotent: the main table's id
    /// is derived from the VPC's and created compare-absent.
    pub(crate) async fn ensure_main_tables(&self, account: &AccountId) -> Result<()> {
        let tables = self.store.public_net().tables_of(account).await?;
        let keys = self.store.keys();
        for vpc in self.store.vpcs().vpcs_of(account).await? {
            if tables
                .iter()
                .any(|t| t.value.id == RouteTableId::main_of(&vpc.value.id))
            {
                continue;
            }
            let mut tx = Tx::new();
            stage_main_table(keys, &mut tx, &main_table(account, &vpc.value.id, None))?;
            // The VPC must still exist (a racing DeleteVpc wins).
            tx.expect_rev(&keys.vpc(account, &vpc.value.id), vpc.mod_revision);
            self.store.commit(tx).await?;
        }
        Ok(())
    }

    /// A route table of the caller's account.
    pub(crate) async fn own_table(
        &self,
        account: &AccountId,
        id: &str,
    ) -> Result<Versioned<RouteTable>> {
        let tid = RouteTableId::parse(id)?;
        if let Some(t) = self.store.public_net().table(account, &tid).await? {
            return Ok(t);
        }
        self.ensure_main_tables(account).await?;
        self.store
            .public_net()
            .table(account, &tid)
            .await?
            .ok_or_else(|| table_not_found(id))
    }

    /// The table a subnet uses: its explicit one, or its VPC's main table.
    pub(crate) async fn table_of_subnet(
        &self,
        account: &AccountId,
        vpc: &VpcId,
        subnet: &SubnetId,
    ) -> Result<Option<RouteTable>> {
        let id = match self
            .store
            .public_net()
            .subnet_table(account, subnet)
            .await?
        {
            Some(a) => a.value.route_table_id,
            None => RouteTableId::main_of(vpc),
        };
        Ok(self
            .store
            .public_net()
            .table(account, &id)
            .await?
            .map(|t| t.value))
    }

    /// CreateRouteTable.
    pub async fn create_route_table(
        &self,
        caller: &Caller,
        vpc_id: &str,
        tags: &[(String, String)],
    ) -> Result<RouteTable> {
        let account = caller.account()?;
        let vid = VpcId::parse(vpc_id)?;
        let tags = validation::tags(tags)?;
        self.ensure_default_vpc(&account).await?;
        self.ensure_main_tables(&account).await?;
        let keys = self.store.keys();
        for attempt in 0..MAX_ATTEMPTS {
            let vpc = self.own_vpc(&account, &vid).await?;
            let n = self
                .store
                .public_net()
                .tables_of(&account)
                .await?
                .iter()
                .filter(|t| t.value.vpc_id == vid)
                .count();
            if n >= MAX_TABLES_PER_VPC {
                return Err(Error::invalid_code(
                    "RouteTableLimitExceeded",
                    format!("The VPC {vid} has the maximum number of route tables ({MAX_TABLES_PER_VPC})."),
                ));
            }
            let table = RouteTable {
                id: RouteTableId::generate(),
                account: account.clone(),
                vpc_id: vid.clone(),
                main: false,
                routes: Vec::new(),
                tags: tags.clone(),
                created_ms: now_ms(),
            };
            let mut tx = Tx::new();
            tx.create(&keys.route_table(&account, &table.id), &table)?;
            // Serialises with DeleteVpc (dependencies).
            tx.replace(&keys.vpc(&account, &vid), &vpc, &vpc.value)?;
            if self.store.commit(tx).await?.is_some() {
                return Ok(table);
            }
            crate::store::backoff(attempt).await;
        }
        Err(Error::Contention(vpc_id.to_string()))
    }

    /// CreateRoute (an IPv4 block to an internet gateway).
    pub async fn create_route(
        &self,
        caller: &Caller,
        table_id: &str,
        destination: &str,
        gateway_id: &str,
    ) -> Result<()> {
        let account = caller.account()?;
        let dest = Cidr::parse(destination)?;
        let keys = self.store.keys();
        for attempt in 0..MAX_ATTEMPTS {
            let table = self.own_table(&account, table_id).await?;
            let igw = self.own_igw(&account, gateway_id).await?;
            if igw.value.vpc_id.as_ref() != Some(&table.value.vpc_id) {
                return Err(Error::invalid(format!(
                    "route table {table_id} and network gateway {gateway_id} belong to different networks (the gateway is not attached to {})",
                    table.value.vpc_id
                )));
            }
            let vpc = self.own_vpc(&account, &table.value.vpc_id).await?;
            let vpc_block = Cidr::parse(&vpc.value.cidr)?;
            if vpc_block.contains(&dest) {
                return Err(Error::invalid(format!(
                    "The destination CIDR block {dest} is equal to or more specific than one of this VPC's CIDR blocks ({vpc_block}). This route can target only an interface or an instance."
                )));
            }
            let dest_s = dest.to_string();
            if table.value.routes.iter().any(|r| r.destination == dest_s) {
                return Err(Error::invalid_code(
                    "RouteAlreadyExists",
                    format!("The route identified by {dest_s} already exists."),
                ));
            }
            if table.value.routes.len() >= MAX_ROUTES_PER_TABLE {
                return Err(Error::invalid_code(
                    "RouteLimitExceeded",
                    format!("The route table {table_id} has the maximum number of routes ({MAX_ROUTES_PER_TABLE})."),
                ));
            }
            let mut next = table.value.clone();
            next.routes.push(Route {
                destination: dest_s,
                gateway_id: igw.value.id.clone(),
            });
            let mut tx = Tx::new();
            tx.replace(&keys.route_table(&account, &next.id), &table, &next)?;
            tx.expect_rev(
                &keys.internet_gateway(&account, &igw.value.id),
                igw.mod_revision,
            );
            if self.store.commit(tx).await?.is_some() {
                return Ok(());
            }
            crate::store::backoff(attempt).await;
        }
        Err(Error::Contention(table_id.to_string()))
    }

    /// DeleteRoute.
    pub async fn delete_route(
        &self,
        caller: &Caller,
        table_id: &str,
        destination: &str,
    ) -> Result<()> {
        let account = caller.account()?;
        let dest = Cidr::parse(destination)?.to_string();
        let keys = self.store.keys();
        for attempt in 0..MAX_ATTEMPTS {
            let table = self.own_table(&account, table_id).await?;
            let vpc = self.own_vpc(&account, &table.value.vpc_id).await?;
            if vpc.value.cidr == dest {
                return Err(Error::invalid(format!(
                    "cannot remove local route {dest} in route table {table_id}"
                )));
            }
            if !table.value.routes.iter().any(|r| r.destination == dest) {
                return Err(Error::not_found(
                    "InvalidRoute.NotFound",
                    format!(
                        "no route with destination-cidr-block {dest} in route table {table_id}"
                    ),
                ));
            }
            let mut next = table.value.clone();
            next.routes.retain(|r| r.destination != dest);
            let mut tx = Tx::new();
            tx.replace(&keys.route_table(&account, &next.id), &table, &next)?;
            if self.store.commit(tx).await?.is_some() {
                return Ok(());
            }
            crate::store::backoff(attempt).await;
        }
        Err(Error::Contention(table_id.to_string()))
    }

    /// AssociateRouteTable: returns the association id.
    pub async fn associate_route_table(
        &self,
        caller: &Caller,
        table_id: &str,
        subnet_id: &str,
    ) -> Result<RouteTableAssociationId> {
        let account = caller.account()?;
        let keys = self.store.keys();
        for attempt in 0..MAX_ATTEMPTS {
            let table = self.own_table(&account, table_id).await?;
            let subnet = self.own_subnet(&account, subnet_id).await?;
            if subnet.value.vpc_id != table.value.vpc_id {
                return Err(Error::invalid(format!(
                    "route table {table_id} and subnet {subnet_id} belong to different networks"
                )));
            }
            let guard_key = keys.route_table_subnet(&account, &subnet.value.id);
            if let Some(cur) = self
                .store
                .public_net()
                .subnet_table(&account, &subnet.value.id)
                .await?
            {
                return Err(Error::invalid_code(
                    "Resource.AlreadyAssociated",
                    format!(
                        "the specified association for route table {} conflicts with an existing association ({})",
                        cur.value.route_table_id, cur.value.association_id
                    ),
                ));
            }
            let assoc = SubnetRouteTable {
                subnet_id: subnet.value.id.clone(),
                route_table_id: table.value.id.clone(),
                association_id: RouteTableAssociationId::generate(),
            };
            let mut tx = Tx::new();
            tx.create(&guard_key, &assoc)?;
            tx.replace(
                &keys.route_table(&account, &table.value.id),
                &table,
                &table.value,
            )?;
            tx.expect_rev(
                &keys.vpc_subnet(&account, &subnet.value.id),
                subnet.mod_revision,
            );
            if self.store.commit(tx).await?.is_some() {
                return Ok(assoc.association_id);
            }
            crate::store::backoff(attempt).await;
        }
        Err(Error::Contention(subnet_id.to_string()))
    }

    /// DisassociateRouteTable (by association id).
    pub async fn disassociate_route_table(
        &self,
        caller: &Caller,
        association_id: &str,
    ) -> Result<()> {
        let account = caller.account()?;
        let aid = RouteTableAssociationId::parse(association_id)?;
        let not_found = || {
            Error::not_found(
                "InvalidAssociationID.NotFound",
                format!("The association ID '{association_id}' does not exist"),
            )
        };
        let found = self
            .store
            .public_net()
            .subnet_tables_of(&account)
            .await?
            .into_iter()
            .find(|a| a.value.association_id == aid);
        let Some(assoc) = found else {
            let is_main = self
                .store
                .vpcs()
                .vpcs_of(&account)
                .await?
                .iter()
                .any(|v| RouteTableAssociationId::main_of(&v.value.id) == aid);
            if is_main {
                return Err(Error::invalid(format!(
                    "cannot disassociate the main route table association {association_id}"
                )));
            }
            return Err(not_found());
        };
        let mut tx = Tx::new();
        tx.delete_if_unchanged(
            &self
                .store
                .keys()
                .route_table_subnet(&account, &assoc.value.subnet_id),
            &assoc,
        );
        if self.store.commit(tx).await?.is_none() {
            return Err(not_found());
        }
        Ok(())
    }

    /// DeleteRouteTable.
    pub async fn delete_route_table(&self, caller: &Caller, table_id: &str) -> Result<()> {
        let account = caller.account()?;
        let keys = self.store.keys();
        for attempt in 0..MAX_ATTEMPTS {
            let table = self.own_table(&account, table_id).await?;
            if table.value.main {
                return Err(dependency(format!(
                    "The routeTable '{table_id}' has dependencies and cannot be deleted: it is the main route table of {}",
                    table.value.vpc_id
                )));
            }
            let assoc = self
                .store
                .public_net()
                .subnet_tables_of(&account)
                .await?
                .into_iter()
                .find(|a| a.value.route_table_id == table.value.id);
            if let Some(a) = assoc {
                return Err(dependency(format!(
                    "The routeTable '{table_id}' has dependencies and cannot be deleted: associated with {}",
                    a.value.subnet_id
                )));
            }
            let vpc = self.own_vpc(&account, &table.value.vpc_id).await?;
            let mut tx = Tx::new();
            tx.delete_if_unchanged(&keys.route_table(&account, &table.value.id), &table);
            tx.replace(&keys.vpc(&account, &vpc.value.id), &vpc, &vpc.value)?;
            if self.store.commit(tx).await?.is_some() {
                return Ok(());
            }
            crate::store::backoff(attempt).await;
        }
        Err(Error::Contention(table_id.to_string()))
    }

    /// DescribeRouteTables.
    pub async fn describe_route_tables(
        &self,
        caller: &Caller,
        ids: &[String],
        filters: &[Filter],
    ) -> Result<Vec<RouteTableView>> {
        let account = caller.account()?;
        filters::check(filters, ROUTE_TABLE_FILTERS)?;
        let ids: Vec<RouteTableId> = ids
            .iter()
            .map(|i| RouteTableId::parse(i))
            .collect::<Result<_>>()?;
        self.ensure_default_vpc(&account).await?;
        self.ensure_main_tables(&account).await?;
        let net = self.store.public_net();
        let tables: Vec<RouteTable> = net
            .tables_of(&account)
            .await?
            .into_iter()
            .map(|t| t.value)
            .collect();
        if let Some(missing) = ids.iter().find(|i| !tables.iter().any(|t| &t.id == *i)) {
            return Err(table_not_found(missing.as_str()));
        }
        let vpcs: BTreeMap<VpcId, String> = self
            .store
            .vpcs()
            .vpcs_of(&account)
            .await?
            .into_iter()
            .map(|v| (v.value.id, v.value.cidr))
            .collect();
        let attached: BTreeMap<InternetGatewayId, VpcId> = net
            .igws_of(&account)
            .await?
            .into_iter()
            .filter_map(|g| g.value.vpc_id.map(|v| (g.value.id, v)))
            .collect();
        let assocs = net.subnet_tables_of(&account).await?;
        let mut out = Vec::new();
        for t in tables {
            if !ids.is_empty() && !ids.contains(&t.id) {
                continue;
            }
            let mut routes = Vec::new();
            if let Some(cidr) = vpcs.get(&t.vpc_id) {
                routes.push(RouteView {
                    destination: cidr.clone(),
                    target: "local".into(),
                    state: "active",
                    origin: "CreateRouteTable",
                });
            }
            for r in &t.routes {
                let active = attached.get(&r.gateway_id) == Some(&t.vpc_id);
                routes.push(RouteView {
                    destination: r.destination.clone(),
                    target: r.gateway_id.to_string(),
                    state: if active { "active" } else { "blackhole" },
                    origin: "CreateRoute",
                });
            }
            let mut associations = Vec::new();
            if t.main {
                associations.push(AssociationView {
                    id: RouteTableAssociationId::main_of(&t.vpc_id),
                    subnet_id: None,
                    main: true,
                });
            }
            for a in assocs.iter().filter(|a| a.value.route_table_id == t.id) {
                associations.push(AssociationView {
                    id: a.value.association_id.clone(),
                    subnet_id: Some(a.value.subnet_id.clone()),
                    main: false,
                });
            }
            let view = RouteTableView {
                table: t,
                routes,
                associations,
            };
            if filters.iter().all(|f| table_matches(&view, f)) {
                out.push(view);
            }
        }
        Ok(out)
    }

    /// **Data plane hook.** For each subnet of `vpc` (of `account`): whether
    /// the route table it uses (its explicit one, else the VPC's main table)
    /// sends `0.0.0.0/0` to an internet gateway attached to `vpc` — i.e.
    /// whether its instances with a public address reach the internet
    /// (`SubnetView.internet_route` of the node API's NetworkView). Reads
    /// the VPC's subnets, the account's gateways, tables and associations;
    /// a VPC that does not exist (or another account's) has no subnets.
    pub async fn subnet_internet_routes(
        &self,
        account: &AccountId,
        vpc: &VpcId,
    ) -> Result<BTreeMap<SubnetId, bool>> {
        let net = self.store.public_net();
        let igw = net
            .igws_of(account)
            .await?
            .into_iter()
            .find(|g| g.value.vpc_id.as_ref() == Some(vpc))
            .map(|g| g.value.id);
        let tables: BTreeMap<RouteTableId, RouteTable> = net
            .tables_of(account)
            .await?
            .into_iter()
            .filter(|t| &t.value.vpc_id == vpc)
            .map(|t| (t.value.id.clone(), t.value))
            .collect();
        let explicit: BTreeMap<SubnetId, RouteTableId> = net
            .subnet_tables_of(account)
            .await?
            .into_iter()
            .map(|a| (a.value.subnet_id, a.value.route_table_id))
            .collect();
        let main = RouteTableId::main_of(vpc);
        let mut out = BTreeMap::new();
        for s in self.store.vpcs().subnets_of(account).await? {
            if &s.value.vpc_id != vpc {
                continue;
            }
            let tid = explicit.get(&s.value.id).unwrap_or(&main);
            let routed = tables
                .get(tid)
                .is_some_and(|t| default_route_to(t, igw.as_ref()));
            out.insert(s.value.id, routed);
        }
        Ok(out)
    }

    /// Whether `subnet` (of `vpc`) routes 0.0.0.0/0 to the attached gateway
    /// `igw` (AssociateAddress's check).
    pub(crate) async fn subnet_routes_to(
        &self,
        account: &AccountId,
        vpc: &VpcId,
        subnet: &SubnetId,
        igw: &InternetGatewayId,
    ) -> Result<bool> {
        self.store
            .vpcs()
            .subnet(account, subnet)
            .await?
            .ok_or_else(|| subnet_not_found(subnet.as_str()))?;
        Ok(self
            .table_of_subnet(account, vpc, subnet)
            .await?
            .is_some_and(|t| default_route_to(&t, Some(igw))))
    }
}

fn table_matches(v: &RouteTableView, f: &Filter) -> bool {
    let t = &v.table;
    if let Some(m) = filters::tag_filter(f, &t.tags) {
        return m;
    }
    let vals = &f.values;
    let any = |c: &[&str]| filters::any_matches(vals, c);
    match f.name.as_str() {
        "route-table-id" => any(&[t.id.as_str()]),
        "vpc-id" => any(&[t.vpc_id.as_str()]),
        "owner-id" => any(&[t.account.as_str()]),
        "association.main" => v.associations.iter().any(|a| any(&[bool_str(a.main)])),
        "association.subnet-id" => v
            .associations
            .iter()
            .filter_map(|a| a.subnet_id.as_ref())
            .any(|s| any(&[s.as_str()])),
        "association.route-table-association-id" => {
            v.associations.iter().any(|a| any(&[a.id.as_str()]))
        }
        "route.gateway-id" => v.routes.iter().any(|r| any(&[&r.target])),
        "route.destination-cidr-block" => v.routes.iter().any(|r| any(&[&r.destination])),
        "route.state" => v.routes.iter().any(|r| any(&[r.state])),
        _ => false,
    }
}
