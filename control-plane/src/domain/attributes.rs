//! Instance attributes (DescribeInstanceAttribute, ModifyInstanceAttribute).
//!
//! Owns which attributes can be read and changed, in which states (the
//! instance type and user data only while `stopped`, as EC2), which security
//! groups an instance may be moved to (the caller's, in its VPC), and keeping
//! the instance record and its node assignment in step: a change is one
//! transaction comparing both records' revisions, retried on conflict, so a
//! repeated call converges on the same state.

use crate::domain::instances::b64;
use crate::domain::lifecycle::State;
use crate::domain::model::{Instance, ShutdownBehavior};
use crate::domain::{validation, Caller, Domain};
use crate::error::{Error, Result};
use crate::ids::{InstanceId, SecurityGroupId};
use crate::store::{backoff, Tx};

const MAX_ATTEMPTS: u32 = 32;

/// A change ModifyInstanceAttribute asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttributeChange {
    /// `instanceType` (stopped only).
    InstanceType(String),
    /// `userData`, raw (stopped only).
    UserData(Vec<u8>),
    /// `disableApiTermination`.
    DisableApiTermination(bool),
    /// `disableApiStop`.
    DisableApiStop(bool),
    /// `instanceInitiatedShutdownBehavior`.
    ShutdownBehavior(ShutdownBehavior),
    /// `sourceDestCheck`.
    SourceDestCheck(bool),
    /// `groupSet`: the instance's security groups (replaced as a whole).
    SecurityGroups(Vec<SecurityGroupId>),
}

impl AttributeChange {
    fn needs_stopped(&self) -> bool {
        matches!(
            self,
            AttributeChange::InstanceType(_) | AttributeChange::UserData(_)
        )
    }
}

/// An instance and its user data, for DescribeInstanceAttribute.
#[derive(Debug, Clone)]
pub struct InstanceAttributes {
    /// The instance record.
    pub instance: Instance,
    /// Its user data (empty when none or when the instance has left its node).
    pub user_data: Vec<u8>,
}

fn not_found(id: &InstanceId) -> Error {
    Error::not_found(
        "InvalidInstanceID.NotFound",
        format!("The instance ID '{id}' does not exist"),
    )
}

impl Domain {
    /// The caller's instance `id` with its user data.
    pub async fn instance_attributes(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<InstanceAttributes> {
        let account = caller.account()?;
        let id = InstanceId::parse(id)?;
        let inst = self
            .store
            .instances()
            .get(&account, &id)
            .await?
            .ok_or_else(|| not_found(&id))?
            .value;
        let user_data = match &inst.node_id {
            Some(node) => match self.store.assignments().get(node, &id).await? {
                Some(a) => base64::Engine::decode(
                    &base64::engine::general_purpose::STANDARD,
                    a.value.user_data_b64.as_bytes(),
                )
                .map_err(|e| Error::Internal(format!("stored user data of {id}: {e}")))?,
                None => Vec::new(),
            },
            None => Vec::new(),
        };
        Ok(InstanceAttributes {
            instance: inst,
            user_data,
        })
    }

    /// Changes one attribute of the caller's instance `id`.
    pub async fn modify_instance_attribute(
        &self,
        caller: &Caller,
        id: &str,
        change: &AttributeChange,
    ) -> Result<()> {
        let account = caller.account()?;
        let id = InstanceId::parse(id)?;
        let new_type = match change {
            AttributeChange::InstanceType(t) => Some(self.types.get(t).ok_or_else(|| {
                Error::invalid(format!("The instance type '{t}' does not exist"))
            })?),
            _ => None,
        };
        if let AttributeChange::UserData(d) = change {
            validation::user_data(d)?;
        }
        for attempt in 0..MAX_ATTEMPTS {
            let mut tx = Tx::new();
            let instances = self.store.instances();
            let v = instances
                .get(&account, &id)
                .await?
                .ok_or_else(|| not_found(&id))?;
            let mut inst = v.value.clone();
            if inst.state == State::Terminated
                || (change.needs_stopped() && inst.state != State::Stopped)
            {
                return Err(Error::incorrect_state(
                    "IncorrectInstanceState",
                    format!(
                        "The instance '{id}' is not in the 'stopped' state (it is '{}')",
                        inst.state.name()
                    ),
                ));
            }
            match change {
                AttributeChange::InstanceType(_) | AttributeChange::UserData(_) => {}
                AttributeChange::DisableApiTermination(b) => {
                    inst.options.disable_api_termination = *b
                }
                AttributeChange::DisableApiStop(b) => inst.options.disable_api_stop = *b,
                AttributeChange::ShutdownBehavior(s) => inst.options.shutdown_behavior = *s,
                AttributeChange::SourceDestCheck(b) => inst.options.source_dest_check = *b,
                AttributeChange::SecurityGroups(ids) => {
                    let groups = self.check_groups(&inst, ids, &mut tx).await?;
                    self.stage_interface_groups(&inst, &groups, &mut tx).await?;
                    if let Some(placed) = inst.vpc.as_mut() {
                        placed.security_group_ids = groups;
                    }
                }
            }
            if let Some(t) = &new_type {
                inst.instance_type = t.name.to_string();
                inst.vcpus = t.vcpus;
                inst.memory_mib = t.memory_mib;
            }
            tx.expect_rev(&instances.key(&account, &id), v.mod_revision);
            if inst != v.value {
                instances.stage_put(&mut tx, &inst)?;
            }
            if change.needs_stopped() {
                // The node keeps the stopped instance's assignment: what it
                // boots from on the next start.
                if let Some(node) = &inst.node_id {
                    let assignments = self.store.assignments();
                    if let Some(a) = assignments.get(node, &id).await? {
                        let mut new = a.value.clone();
                        match change {
                            AttributeChange::UserData(d) => new.user_data_b64 = b64(d),
                            _ => {
                                new.instance_type = inst.instance_type.clone();
                                new.vcpus = inst.vcpus;
                                new.memory_mib = inst.memory_mib;
                            }
                        }
                        tx.expect_rev(&assignments.key(node, &id), a.mod_revision);
                        if new != a.value {
                            assignments.stage_put(&mut tx, node, &new)?;
                        }
                    }
                }
            }
            if self.store.commit(tx).await?.is_some() {
                return Ok(());
            }
            backoff(attempt).await;
        }
        Err(Error::Contention(format!("instance {id}")))
    }

    /// The groups `ids` for instance `inst`, sorted and without repeats:
    /// each must be the owner's (`InvalidGroup.NotFound`) and in the
    /// instance's VPC (`InvalidParameterValue`). Each group's revision is
    /// compared in `tx`, so a group deleted meanwhile fails the change.
    async fn check_groups(
        &self,
        inst: &Instance,
        ids: &[SecurityGroupId],
        tx: &mut Tx,
    ) -> Result<Vec<SecurityGroupId>> {
        let Some(vpc_id) = inst.vpc.as_ref().and_then(|v| v.vpc_id.clone()) else {
            return Err(Error::invalid(format!(
                "The instance '{}' is not in a VPC: its security groups cannot be changed",
                inst.id
            )));
        };
        let vpcs = self.store.vpcs();
        let mut out = Vec::with_capacity(ids.len());
        for g in ids {
            let grp = vpcs
                .group(&inst.account, g)
                .await?
                .ok_or_else(|| crate::domain::vpc::group_not_found(g.as_str()))?;
            if grp.value.vpc_id != vpc_id {
                return Err(Error::invalid(format!(
                    "The security group '{g}' belongs to VPC {}, the instance '{}' to VPC {vpc_id}",
                    grp.value.vpc_id, inst.id
                )));
            }
            let key = self.store.keys().security_group(&inst.account, g);
            tx.expect_rev(&key, grp.mod_revision);
            out.push(grp.value.id);
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}
