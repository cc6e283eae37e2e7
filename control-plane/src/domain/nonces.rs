//! The replay guard of signed gRPC requests: a store of accepted nonces
//! shared by every replica and surviving restarts.
//!
//! Each accepted request's (access key id, nonce) is written once to
//! `nonces/<hex SHA-256 of key id "\n" nonce>` in a transaction that requires
//! the key to be absent: a second use of a nonce fails on whichever replica
//! it reaches, also after a restart. A request is usable only while its date
//! is within [`MAX_SKEW`] of the verifier's clock, so its nonce must be
//! remembered for `2 × MAX_SKEW` after it is first seen. Keys are attached to
//! a lease of `2 × MAX_SKEW +` [`LEASE_ROTATION`] seconds that a replica
//! shares across the requests of one [`LEASE_ROTATION`] period (granting a
//! lease per nonce would double the writes), so every nonce lives at least
//! `2 × MAX_SKEW` and etcd drops it at most [`LEASE_ROTATION`] later. The
//! store is bounded by the accepted request rate (per-account rate limits
//! apply before a nonce is written) times that window.

use std::time::Duration;

use nubis_proto::auth::MAX_SKEW;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::error::Result;
use crate::store::{Store, Tx};

/// How long one lease takes new nonces.
pub const LEASE_ROTATION: Duration = Duration::from_secs(60);

/// A replica's current nonce lease.
#[derive(Debug, Default)]
pub struct NonceLeases {
    current: Mutex<Option<(i64, Instant)>>,
}

impl NonceLeases {
    /// The lease new nonces go under, granting one when the current one is
    /// older than [`LEASE_ROTATION`] (or unknown).
    async fn lease(&self, store: &Store) -> Result<i64> {
        let mut cur = self.current.lock().await;
        if let Some((id, granted)) = *cur {
            if granted.elapsed() < LEASE_ROTATION {
                return Ok(id);
            }
        }
        let ttl = (2 * MAX_SKEW + LEASE_ROTATION).as_secs();
        let id = store
            .grant_lease(i64::try_from(ttl).unwrap_or(i64::MAX))
            .await?;
        *cur = Some((id, Instant::now()));
        Ok(id)
    }

    async fn forget(&self, lease: i64) {
        let mut cur = self.current.lock().await;
        if cur.is_some_and(|(id, _)| id == lease) {
            *cur = None;
        }
    }

    /// Records the first use of `nonce` with `key_id`: `true` when it was
    /// new, `false` when it was seen before (a replay).
    pub async fn record(&self, store: &Store, key_id: &str, nonce: &str) -> Result<bool> {
        let mut h = Sha256::new();
        h.update(key_id.as_bytes());
        h.update(b"\n");
        h.update(nonce.as_bytes());
        let key = store.keys().nonce(&hex::encode(h.finalize()));
        let mut attempt = 0;
        loop {
            let lease = self.lease(store).await?;
            let mut tx = Tx::new();
            tx.expect_absent(&key)
                .put_raw_with_lease(&key, Vec::new(), lease);
            match store.commit(tx).await {
                Ok(r) => return Ok(r.is_some()),
                // The lease may be gone (revoked, or etcd restored from a
                // snapshot): take a fresh one, once.
                Err(e) if attempt == 0 => {
                    tracing::debug!(error = %e, lease, "nonce write failed; new lease");
                    self.forget(lease).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}
