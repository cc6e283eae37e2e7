//! Results the domain hands to the edges (gRPC, EC2 XML).

use crate::domain::lifecycle::State;
use crate::domain::model::{Instance, Node, NodeAlive, NodeAlloc, Resources};
use crate::ids::{AccountId, InstanceId, ReservationId};

/// A reservation and its instances.
#[derive(Debug, Clone, PartialEq)]
pub struct Reservation {
    /// Id.
    pub reservation_id: ReservationId,
    /// Owner.
    pub owner: AccountId,
    /// Instances (launch order).
    pub instances: Vec<Instance>,
}

/// Groups instances by reservation, keeping first-appearance order.
pub fn group(instances: Vec<Instance>) -> Vec<Reservation> {
    let mut out: Vec<Reservation> = Vec::new();
    for i in instances {
        match out
            .iter_mut()
            .find(|r| r.reservation_id == i.reservation_id)
        {
            Some(r) => r.instances.push(i),
            None => out.push(Reservation {
                reservation_id: i.reservation_id.clone(),
                owner: i.account.clone(),
                instances: vec![i],
            }),
        }
    }
    out
}

/// One state change (owned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    /// Instance.
    pub instance_id: InstanceId,
    /// Before.
    pub previous: State,
    /// After.
    pub current: State,
}

/// Instance status (DescribeInstanceStatus).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceStatus {
    /// Instance.
    pub instance_id: InstanceId,
    /// Zone.
    pub availability_zone: String,
    /// State.
    pub state: State,
    /// Host status: ok | impaired | not-applicable.
    pub system_status: &'static str,
    /// Guest status: ok | initializing | impaired | not-applicable.
    pub instance_status: &'static str,
}

/// Console output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleOutput {
    /// Instance.
    pub instance_id: InstanceId,
    /// When captured (0 = never).
    pub timestamp_ms: i64,
    /// Raw bytes.
    pub output: Vec<u8>,
}

/// A node for the operator.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeInfo {
    /// Record.
    pub node: Node,
    /// Allocation.
    pub alloc: NodeAlloc,
    /// Allocatable after overcommit.
    pub allocatable: Resources,
    /// Liveness (None = lost).
    pub alive: Option<NodeAlive>,
}

/// An availability zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    /// Name.
    pub name: String,
    /// available | impaired.
    pub state: &'static str,
    /// Region.
    pub region: String,
    /// Zone id (`<region>-az<n>`).
    pub zone_id: String,
}
