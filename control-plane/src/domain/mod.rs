//! The domain layer: validation, authorization, state machines and
//! orchestration over the store. Both edges (gRPC in [`crate::api`], EC2
//! Query in [`crate::ec2`]) call [`Domain`]'s methods with plain Rust types.
//!
//! - [`lifecycle`]: the instance state machine (the only place states change).
//! - [`launch`]: RunInstances (placement + idempotency); [`reservations`]:
//!   calls too large for one transaction, as a resumable saga.
//! - [`instances`]: describe, start, stop, reboot, terminate, console, status.
//! - [`placement`]: one instance's update with its assignment and its node's
//!   allocation (stop keeps the node, start re-claims it, terminate leaves).
//! - [`events`]: the lifecycle event outbox (written with every state
//!   change, read by account and time range, kept `events.retention_days`).
//! - [`ipam`]: subnets and per-address claims (addresses are claimed with
//!   the placement, released with termination).
//! - [`nodes`]: agent registration, heartbeats, assignment streams, reports,
//!   and the operator's node operations.
//! - [`metrics`]: instance metrics (ownership, Auto Scaling groups, fan-out
//!   of queries to the agents; `average_cpu` for target tracking).
//! - [`images`], [`keypairs`], [`tags`], [`accounts`] (credentials and
//!   request authentication), [`catalogue`] and [`instance_types`] (the
//!   instance-type catalogue in etcd), [`network`]
//!   (addresses), [`filters`], [`validation`], [`model`] (stored records).
//! - [`quotas`]: per-account quotas (usage counted in the creating
//!   transactions, operator overrides).
//! - [`vpc`]: VPCs, VPC subnets, security groups and the default VPC.

pub mod access_keys;
pub mod accounts;
pub mod attributes;
pub mod autoscaling;
pub mod billing;
pub mod catalogue;
pub mod enrolment;
pub mod events;
pub mod filters;
pub mod image_locations;
pub mod image_sharing;
pub mod images;
pub mod instance_types;
pub mod instances;
pub mod ipam;
pub mod keymaterial;
pub mod keypairs;
pub mod launch;
pub mod lifecycle;
pub mod liveness;
pub mod metadata;
pub mod metrics;
pub mod model;
pub mod network;
pub mod nodecache;
pub mod nodes;
pub mod nonces;
pub mod offerings;
pub mod placement;
pub mod quotas;
pub mod reservations;
pub mod secrets;
pub mod tags;
pub mod validation;
pub mod views;
pub mod vpc;

use std::sync::Arc;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::ids::{AccountId, NodeId};
use crate::scheduler::Overcommit;
use crate::store::Store;

/// Who is calling (established by authentication at the edge).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A tenant account.
    Tenant(AccountId),
    /// The operator (Admin API; account 000000000000 on the Compute API).
    Operator,
    /// A registered node agent.
    Node(NodeId),
    /// An agent holding a shared enrolment token from the configuration
    /// (may only Register a host id not registered yet).
    Enrolment(String),
    /// An agent holding a one-time per-host enrolment token (its id; may only
    /// Register the host id the token names).
    HostToken(String),
}

impl Caller {
    /// The account the caller acts as on the Compute API.
    pub fn account(&self) -> Result<AccountId> {
        match self {
            Caller::Tenant(a) => Ok(a.clone()),
            Caller::Operator => Ok(AccountId::operator()),
            _ => Err(Error::Unauthorized(
                "node credentials cannot call the Compute API".into(),
            )),
        }
    }

    /// True for the operator.
    pub fn is_operator(&self) -> bool {
        matches!(self, Caller::Operator)
    }

    /// Requires the operator.
    pub fn require_operator(&self) -> Result<()> {
        if self.is_operator() {
            Ok(())
        } else {
            Err(Error::Unauthorized(
                "this operation needs the operator credential".into(),
            ))
        }
    }

    /// Requires the node `node` itself.
    pub fn require_node(&self, node: &NodeId) -> Result<()> {
        match self {
            Caller::Node(n) if n == node => Ok(()),
            _ => Err(Error::Unauthorized(format!(
                "only the credential of node {node} may act for it"
            ))),
        }
    }
}

/// The domain service: one per control-plane replica.
#[derive(Debug)]
pub struct Domain {
    pub(crate) store: Store,
    pub(crate) cfg: Arc<Config>,
    pub(crate) network: network::Network,
    pub(crate) nodes: nodecache::NodeCache,
    pub(crate) types: instance_types::TypeCache,
    pub(crate) creds: accounts::CredentialCache,
    /// Seals and opens access-key secrets at rest.
    pub(crate) secrets: secrets::SecretBox,
    /// This replica's background tasks (set once by the server).
    pub(crate) tasks: std::sync::OnceLock<crate::tasks::Handle>,
    /// Auto Scaling target tracking's metric source when not the agents'
    /// (tests inject one; [`autoscaling::tracking::MetricSource`]).
    pub(crate) asg_metrics: std::sync::OnceLock<Arc<dyn autoscaling::tracking::MetricSource>>,
    /// VPC addresses this replica's launches hold until their transaction
    /// is decided ([`vpc::addresses`]).
    pub(crate) addresses_in_flight: vpc::private_addresses::InFlight,
    /// The watch-fed cache `WatchNetwork` views are computed from, started
    /// by the first node that watches ([`vpc::netcache`]).
    pub(crate) netcache: tokio::sync::OnceCell<Arc<vpc::netcache::NetCache>>,
}

impl Domain {
    /// Builds the domain over a connected store, seeds the instance-type
    /// catalogue if no replica has, and starts the node and type caches.
    pub async fn new(store: Store, cfg: Arc<Config>) -> Result<Arc<Self>> {
        cfg.validate()?;
        let network = network::Network::from_config(&cfg.network)?;
        if instance_types::seed(&store, cfg.instance_types.seed).await? {
            tracing::info!(profile = ?cfg.instance_types.seed, "seeded the instance-type catalogue");
        }
        let nodes = nodecache::NodeCache::start(store.clone()).await?;
        let types = instance_types::TypeCache::start(store.clone()).await?;
        let secrets = secrets::SecretBox::load(&cfg.auth)?;
        if !secrets.seals() {
            tracing::warn!(
                "access-key secrets are stored in etcd in plaintext: set [auth] secrets_key_file"
            );
        }
        let creds = accounts::CredentialCache::new(cfg.grpc.rate_limit());
        let domain = Arc::new(Self {
            store: store.clone(),
            cfg,
            network,
            nodes,
            types,
            creds,
            secrets,
            tasks: std::sync::OnceLock::new(),
            asg_metrics: std::sync::OnceLock::new(),
            addresses_in_flight: Default::default(),
            netcache: tokio::sync::OnceCell::new(),
        });
        access_keys::follow_access_keys(store, Arc::downgrade(&domain));
        let resealed = domain.reseal_access_keys().await?;
        if resealed > 0 {
            tracing::info!(resealed, "sealed access-key secrets with the current key");
        }
        Ok(domain)
    }

    /// Attaches this replica's background tasks (first call wins).
    pub fn attach_tasks(&self, handle: crate::tasks::Handle) {
        let _ = self.tasks.set(handle);
    }

    /// ListTasks (operator): this replica's background tasks and the leader.
    pub async fn list_tasks(&self, caller: &Caller) -> Result<crate::tasks::TasksView> {
        caller.require_operator()?;
        match self.tasks.get() {
            Some(h) => h.view().await,
            None => Err(Error::Internal("background tasks not started".into())),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) fn overcommit(&self) -> Overcommit {
        Overcommit {
            cpu: self.cfg.scheduler.cpu_overcommit,
            memory: self.cfg.scheduler.memory_overcommit,
        }
    }

    /// Checks that a zone exists in this region.
    pub fn check_zone(&self, zone: &str) -> Result<()> {
        if self.cfg.zones.iter().any(|z| z == zone) {
            Ok(())
        } else {
            Err(Error::invalid(format!(
                "invalid availability zone: [{zone}] (this region has {})",
                self.cfg.zones.join(", ")
            )))
        }
    }
}
