//! Node enrolment: the operator's one-time, per-host enrolment tokens
//! (`enrolment-tokens/<id>`, only the secret's SHA-256 stored, with an
//! expiry), the rules deciding who may `Register` which host id (checked
//! before anything is written), the bound on the capacity a node may
//! advertise, and the approval hold for new nodes.
//!
//! Who may register what:
//! - the operator: any host id;
//! - a node's own credential: only the host id that node was registered for;
//! - a per-host token: only the host id (and zone) it names; `Register`
//!   deletes the token in the transaction that writes the node, so a token
//!   enrols once;
//! - a shared configuration token (`[[auth.enrolment_tokens]]`, kept for
//!   bootstrap): only a host id not registered yet (never a take-over).

use nubis_proto::auth::{constant_time_eq, host_token_digest, HOST_TOKEN_PREFIX};

use crate::domain::accounts::{random_secret, random_upper};
use crate::domain::model::{now_ms, EnrolmentTokenRecord, Resources};
use crate::domain::nodes::RegisterInput;
use crate::domain::views::NodeInfo;
use crate::domain::{Caller, Domain};
use crate::error::{Error, Result};
use crate::ids::NodeId;
use crate::store::{Tx, Versioned};

/// Longest lifetime an enrolment token may be given (30 days).
pub const MAX_TOKEN_TTL_SECONDS: u32 = 30 * 24 * 3600;

/// What authorized a registration.
#[derive(Debug, Clone)]
pub(crate) enum RegisterGrant {
    /// The operator, or a shared token on a new host id.
    Plain,
    /// The node re-registering itself.
    OwnCredential,
    /// A per-host token, to be consumed by the registration's transaction.
    Token(Box<Versioned<EnrolmentTokenRecord>>),
}

/// A token is not usable: one message, whatever the reason (unknown,
/// expired, another host), so a caller learns nothing about other tokens.
fn token_refused() -> Error {
    Error::Unauthorized("the enrolment token is not valid for this host".into())
}

/// Checks `host_id` the way Register does.
pub(crate) fn check_host_id(host_id: &str) -> Result<()> {
    if host_id.is_empty()
        || host_id.len() > 128
        || !host_id.bytes().all(|b| (0x21..0x7f).contains(&b))
    {
        return Err(Error::invalid(
            "host_id must be 1 to 128 printable ASCII characters",
        ));
    }
    Ok(())
}

impl Domain {
    /// The capacity a node advertises must have vCPUs and memory and stay
    /// within `[nodes] max_vcpus` / `max_memory_mib`.
    pub(crate) fn check_node_capacity(&self, c: &Resources) -> Result<()> {
        let n = &self.cfg.nodes;
        if c.vcpus == 0 || c.memory_mib == 0 {
            return Err(Error::invalid("capacity must have vCPUs and memory"));
        }
        if c.vcpus > n.max_vcpus || c.memory_mib > n.max_memory_mib {
            return Err(Error::invalid(format!(
                "capacity {} vCPUs / {} MiB exceeds the operator's limit of {} vCPUs / {} MiB per node",
                c.vcpus, c.memory_mib, n.max_vcpus, n.max_memory_mib
            )));
        }
        Ok(())
    }

    /// EnrolNode (operator): a one-time token for `host_id` (and `zone` when
    /// not empty), valid `ttl_seconds` (0: the configured default). Returns
    /// the record and the secret (shown only here).
    pub async fn create_enrolment_token(
        &self,
        caller: &Caller,
        host_id: &str,
        zone: &str,
        ttl_seconds: u32,
    ) -> Result<(EnrolmentTokenRecord, String)> {
        caller.require_operator()?;
        check_host_id(host_id)?;
        if !zone.is_empty() {
            self.check_zone(zone)?;
        }
        let ttl = if ttl_seconds == 0 {
            self.cfg.nodes.enrolment_token_ttl_seconds
        } else {
            ttl_seconds
        };
        if ttl > MAX_TOKEN_TTL_SECONDS {
            return Err(Error::invalid(format!(
                "an enrolment token lives at most {MAX_TOKEN_TTL_SECONDS} seconds"
            )));
        }
        let secret = random_secret();
        let now = now_ms();
        let rec = EnrolmentTokenRecord {
            token_id: format!("{HOST_TOKEN_PREFIX}{}", random_upper(16)),
            secret_sha256: host_token_digest(&secret),
            host_id: host_id.to_string(),
            availability_zone: zone.to_string(),
            created_ms: now,
            expires_ms: now + i64::from(ttl) * 1000,
        };
        let mut tx = Tx::new();
        self.store.enrolment_tokens().stage_create(&mut tx, &rec)?;
        if self.store.commit(tx).await?.is_none() {
            return Err(Error::Contention("enrolment token id".into()));
        }
        tracing::info!(token = %rec.token_id, host = host_id, "enrolment token created");
        Ok((rec, secret))
    }

    /// The HMAC key of a per-host token (its secret's digest), for the
    /// request authentication; unknown and expired tokens are unknown keys.
    pub(crate) async fn host_token_key(&self, token_id: &str) -> Result<String> {
        let rec = self
            .store
            .enrolment_tokens()
            .get(token_id)
            .await?
            .ok_or(Error::UnknownAccessKey)?;
        if rec.value.expires_ms <= now_ms() {
            return Err(Error::UnknownAccessKey);
        }
        Ok(rec.value.secret_sha256)
    }

    /// Decides whether `caller` may register `input` given the node
    /// currently registered for its host id (`existing`). Reads only.
    pub(crate) async fn authorize_register(
        &self,
        caller: &Caller,
        input: &RegisterInput,
        existing: Option<&NodeId>,
    ) -> Result<RegisterGrant> {
        match caller {
            Caller::Operator => Ok(RegisterGrant::Plain),
            Caller::Node(n) => match existing {
                Some(e) if e == n => Ok(RegisterGrant::OwnCredential),
                _ => Err(Error::Unauthorized(
                    "a node may only re-register its own host id".into(),
                )),
            },
            Caller::Enrolment(_) => match existing {
                None => Ok(RegisterGrant::Plain),
                Some(_) => Err(Error::Unauthorized(
                    "this host id is registered: re-register with the node's own credential \
                     or a per-host enrolment token"
                        .into(),
                )),
            },
            Caller::HostToken(id) => {
                let rec = self
                    .store
                    .enrolment_tokens()
                    .get(id)
                    .await?
                    .ok_or_else(token_refused)?;
                let t = &rec.value;
                let secret_ok = constant_time_eq(
                    host_token_digest(&input.enrolment_secret).as_bytes(),
                    t.secret_sha256.as_bytes(),
                );
                if !secret_ok
                    || t.expires_ms <= now_ms()
                    || t.host_id != input.host_id
                    || (!t.availability_zone.is_empty()
                        && t.availability_zone != input.availability_zone)
                {
                    return Err(token_refused());
                }
                Ok(RegisterGrant::Token(Box::new(rec)))
            }
            Caller::Tenant(_) => Err(Error::Unauthorized(
                "Register needs an enrolment token".into(),
            )),
        }
    }

    /// ApproveNode (operator): releases a node held for approval (it
    /// becomes placeable).
    pub async fn approve_node(&self, caller: &Caller, node_id: &str) -> Result<NodeInfo> {
        caller.require_operator()?;
        let id = NodeId::parse(node_id)?;
        let nodes = self.store.nodes();
        for _ in 0..16 {
            let cur = nodes.get(&id).await?.ok_or_else(|| {
                Error::not_found(
                    "InvalidNodeID.NotFound",
                    format!("the node '{id}' does not exist"),
                )
            })?;
            if !cur.value.pending_approval {
                return Err(Error::incorrect_state(
                    "IncorrectNodeState",
                    format!("node {id} is not waiting for approval"),
                ));
            }
            let mut n = cur.value.clone();
            n.pending_approval = false;
            n.cordoned = false;
            let mut tx = Tx::new();
            nodes.stage_replace(&mut tx, &cur, &n)?;
            if let Some(rev) = self.store.commit(tx).await? {
                self.nodes.note_node(n.clone(), rev);
                tracing::info!(node = %id, "node approved");
                let v = self.nodes.get(&id);
                return Ok(NodeInfo {
                    allocatable: crate::scheduler::allocatable(&n, self.overcommit()),
                    alive: self.nodes.alive(&id),
                    alloc: v.map(|v| v.alloc).unwrap_or_default(),
                    node: n,
                });
            }
        }
        Err(Error::Contention(nodes.key(&id)))
    }

    /// Deletes expired enrolment tokens (background GC). Returns how many.
    pub async fn collect_enrolment_tokens(&self) -> Result<usize> {
        let now = now_ms();
        let mut n = 0;
        let mut pages = self.store.enrolment_tokens().all();
        while let Some(page) = pages.next().await? {
            for (k, v) in page {
                if v.value.expires_ms <= now
                    && self.store.repo().delete_if_unchanged(&k, &v).await?
                {
                    n += 1;
                }
            }
        }
        Ok(n)
    }
}
