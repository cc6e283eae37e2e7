//! The event outbox: every lifecycle change of an instance writes one
//! immutable [`InstanceEvent`] in the same etcd transaction that changes the
//! instance record, so an event exists exactly when its change committed (a
//! lost compare-and-swap writes neither; a retried step re-reads the
//! instance and writes at most one). Metering and audit read them.
//!
//! This module owns the event record, its key order, the read API (by
//! account and time range, paged) and the retention pass. The writers are
//! the choke points of instance records: creation
//! ([`launch`](super::launch)), every update
//! ([`Domain::update_instance`](super::placement)) and the removal of a
//! rolled-back large reservation ([`reservations`](super::reservations)).
//!
//! Key: `events/<account>/<ms:013>/<instance>/<seq:010>`. `seq` is the
//! instance's own event sequence (`Instance::event_seq`: `created` = 0, each
//! later change + 1, compared through the instance record's revision), so an
//! instance's events never share a key; each is created with
//! compare-absent and never rewritten. `ms` is the writing replica's clock
//! when it built the transaction: a reader that resumes after a key must
//! leave a few seconds of margin at the end of its range for events of
//! replicas whose clocks lag; the etcd revision each event is returned with
//! is its exact global commit order.

use serde::{Deserialize, Serialize};

use crate::domain::lifecycle::State;
use crate::domain::model::{Instance, StateReason};
use crate::domain::{Caller, Domain};
use crate::error::{Error, Result};
use crate::ids::{AccountId, InstanceId, NodeId};
use crate::store::{prefix_end, Keys, Tx};

/// Most events one [`Domain::list_events`] call returns.
pub const MAX_PAGE: u32 = 1000;

/// Events returned when the caller does not say.
pub const DEFAULT_PAGE: u32 = 100;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// RunInstances created the instance (`pending`).
    Created,
    /// A state change other than the last one.
    StateChange,
    /// The instance became `terminated`.
    Terminated,
    /// A large reservation that could not reach MinCount removed the
    /// instance again (it never ran).
    RolledBack,
}

impl EventKind {
    /// The wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::StateChange => "state-change",
            EventKind::Terminated => "terminated",
            EventKind::RolledBack => "rolled-back",
        }
    }
}

/// One lifecycle event (`events/<account>/<ms>/<instance>/<seq>`), written
/// once, never updated; deleted only by retention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceEvent {
    /// Owner.
    pub account: AccountId,
    /// Instance.
    pub instance_id: InstanceId,
    /// The instance's event sequence number (0 = created).
    pub seq: u64,
    /// What happened.
    pub kind: EventKind,
    /// State before (none for `created`).
    pub old_state: Option<State>,
    /// State after.
    pub new_state: State,
    /// Instance type (what metering bills by).
    pub instance_type: String,
    /// Size.
    pub vcpus: u32,
    /// Size.
    pub memory_mib: u32,
    /// Zone.
    pub availability_zone: String,
    /// The node that held the instance at the change (none if it had none).
    pub node_id: Option<NodeId>,
    /// When (ms since the Unix epoch, the writing replica's clock).
    pub time_ms: i64,
    /// The instance's state reason after the change, if any.
    pub reason: Option<StateReason>,
}

impl InstanceEvent {
    fn of(inst: &Instance, kind: EventKind, old: Option<State>, new: State, ms: i64) -> Self {
        Self {
            account: inst.account.clone(),
            instance_id: inst.id.clone(),
            seq: 0,
            kind,
            old_state: old,
            new_state: new,
            instance_type: inst.instance_type.clone(),
            vcpus: inst.vcpus,
            memory_mib: inst.memory_mib,
            availability_zone: inst.availability_zone.clone(),
            node_id: inst.node_id.clone(),
            time_ms: ms,
            reason: inst.state_reason.clone(),
        }
    }

    /// The `created` event of a new instance (sequence 0).
    pub fn created(inst: &Instance, ms: i64) -> Self {
        Self::of(inst, EventKind::Created, None, inst.state, ms)
    }

    /// The event of an update from `before` to `after`, or none when the
    /// state did not change. Sets `after.event_seq` to the event's sequence
    /// (write `after` in the same transaction). `node` is the node that held
    /// the instance (the one it leaves on termination).
    pub fn transition(
        before: &Instance,
        after: &mut Instance,
        node: Option<NodeId>,
        ms: i64,
    ) -> Option<Self> {
        if before.state == after.state {
            return None;
        }
        let kind = if after.state == State::Terminated {
            EventKind::Terminated
        } else {
            EventKind::StateChange
        };
        after.event_seq = before.event_seq + 1;
        let mut ev = Self::of(after, kind, Some(before.state), after.state, ms);
        ev.seq = after.event_seq;
        ev.node_id = node;
        Some(ev)
    }

    /// The event of an instance removed by a reservation's rollback.
    pub fn rolled_back(inst: &Instance, ms: i64) -> Self {
        let mut ev = Self::of(
            inst,
            EventKind::RolledBack,
            Some(inst.state),
            State::Terminated,
            ms,
        );
        ev.seq = inst.event_seq + 1;
        ev
    }

    /// Its key.
    pub fn key(&self, keys: &Keys) -> String {
        keys.event(&self.account, self.time_ms, &self.instance_id, self.seq)
    }
}

/// Adds the creation of `ev` (compare-absent: an event is never rewritten)
/// to `tx`.
pub fn stage(keys: &Keys, tx: &mut Tx, ev: &InstanceEvent) -> Result<()> {
    let k = ev.key(keys);
    tx.expect_absent(&k);
    tx.put(&k, ev)?;
    Ok(())
}

/// A read of events.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// Whose (operator: any account; tenants: their own). None = the caller's.
    pub account: Option<String>,
    /// From this time (ms, inclusive).
    pub from_ms: i64,
    /// To this time (ms, exclusive); none = now + 1 ms.
    pub to_ms: Option<i64>,
    /// Page size (1..=[`MAX_PAGE`]; none = [`DEFAULT_PAGE`]).
    pub max_results: Option<u32>,
    /// Where the previous page ended.
    pub next_token: Option<String>,
}

/// An event and the etcd revision that created it (the global commit order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// The event.
    pub event: InstanceEvent,
    /// Its create revision.
    pub revision: i64,
}

/// One page of events, in key order (time, instance, sequence).
#[derive(Debug, Clone, Default)]
pub struct EventPage {
    /// The events.
    pub events: Vec<StoredEvent>,
    /// Set when more events follow in the range.
    pub next_token: Option<String>,
}

/// The part of an event key after its account prefix, checked:
/// `<ms:013>/<instance>/<seq:010>`.
fn parse_position(s: &str) -> Option<()> {
    let mut parts = s.split('/');
    let (ms, inst, seq) = (parts.next()?, parts.next()?, parts.next()?);
    let digits = |x: &str, n: usize| x.len() == n && x.bytes().all(|b| b.is_ascii_digit());
    if parts.next().is_some() || !digits(ms, 13) || !digits(seq, 10) {
        return None;
    }
    InstanceId::parse(inst).ok().map(|_| ())
}

fn bad_token() -> Error {
    Error::invalid_code("InvalidNextToken", "the next token is not valid")
}

impl Domain {
    /// Events of one account in a time range, paged (DescribeInstanceEvents).
    /// Tenants read only their own account; the operator any.
    pub async fn list_events(&self, caller: &Caller, q: &EventQuery) -> Result<EventPage> {
        let own = caller.account()?;
        let account = match &q.account {
            None => own,
            Some(a) if a.is_empty() => own,
            Some(a) => {
                let a = AccountId::parse(a)?;
                if a != own && !caller.is_operator() {
                    return Err(Error::Unauthorized(
                        "events of another account can be read only by the operator".into(),
                    ));
                }
                a
            }
        };
        let to_ms = q
            .to_ms
            .unwrap_or_else(|| crate::domain::model::now_ms() + 1);
        if q.from_ms < 0 || to_ms < 0 {
            return Err(Error::invalid("times must not be negative"));
        }
        if q.from_ms > to_ms {
            return Err(Error::invalid(
                "the start of the time range is after its end",
            ));
        }
        let limit = q.max_results.unwrap_or(DEFAULT_PAGE);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(Error::invalid(format!(
                "max results must be within 1..={MAX_PAGE}"
            )));
        }
        let prefix = self.store.events().account_prefix(&account);
        let mut start = format!("{prefix}{:013}", q.from_ms);
        if let Some(t) = q.next_token.as_deref().filter(|t| !t.is_empty()) {
            let raw = hex::decode(t).map_err(|_| bad_token())?;
            let pos = String::from_utf8(raw).map_err(|_| bad_token())?;
            parse_position(&pos).ok_or_else(bad_token)?;
            // Strictly after the last key returned.
            let after = format!("{prefix}{pos}\0");
            if after > start {
                start = after;
            }
        }
        let end = format!("{prefix}{to_ms:013}");
        if start >= end {
            return Ok(EventPage::default());
        }
        let mut got = self
            .store
            .list_range::<InstanceEvent>(&start, &end, i64::from(limit) + 1)
            .await?;
        let more = got.len() > limit as usize;
        got.truncate(limit as usize);
        let next_token = match (more, got.last()) {
            (true, Some((k, _))) => Some(hex::encode(&k[prefix.len()..])),
            _ => None,
        };
        Ok(EventPage {
            events: got
                .into_iter()
                .map(|(_, v)| StoredEvent {
                    event: v.value,
                    revision: v.mod_revision,
                })
                .collect(),
            next_token,
        })
    }

    /// Retention: deletes the events older than `events.retention_days`
    /// before `now_ms`, one range deletion per account that has events (the
    /// accounts are found by skipping from one account's events to the
    /// next, so no event is read). Events are never otherwise deleted:
    /// collecting a terminated instance keeps its events. Returns how many
    /// were deleted.
    pub async fn collect_expired_events(&self, now_ms: i64) -> Result<i64> {
        let retention = i64::from(self.cfg.events.retention_days) * 86_400_000;
        let cutoff = (now_ms - retention).max(0);
        let all = self.store.events().all_prefix();
        let end = prefix_end(&all);
        let mut cursor = all.as_bytes().to_vec();
        let mut deleted = 0;
        while let Some(k) = self.store.first_key(&cursor, &end).await? {
            let Some(account) = k
                .strip_prefix(all.as_str())
                .and_then(|r| r.split('/').next())
                .filter(|a| !a.is_empty())
            else {
                return Err(Error::Internal(format!("unexpected event key {k}")));
            };
            let prefix = format!("{all}{account}/");
            deleted += self
                .store
                .delete_range(&prefix, &format!("{prefix}{cutoff:013}"))
                .await?;
            cursor = prefix_end(&prefix);
        }
        if deleted > 0 {
            tracing::info!(deleted, "expired instance events collected");
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_checked() {
        let i = InstanceId::generate();
        assert!(parse_position(&format!("0000000001000/{i}/0000000003")).is_some());
        for bad in [
            format!("1000/{i}/0000000003"),
            format!("0000000001000/{i}/3"),
            "0000000001000/i-zz/0000000003".to_string(),
            format!("0000000001000/{i}/0000000003/x"),
            "".to_string(),
        ] {
            assert!(parse_position(&bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn kinds_have_wire_names() {
        let s = serde_json::to_string(&EventKind::RolledBack).unwrap_or_default();
        assert_eq!(s, "\"rolled-back\"");
        assert_eq!(EventKind::StateChange.as_str(), "state-change");
    }
}
