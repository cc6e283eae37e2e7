//! Singleton background loops, run by whichever replica wins the etcd
//! election (`election/reconciler`, campaigned with this replica's own
//! lease). The leader's writes are fenced by its election key's create
//! revision ([`Fence`]): a deposed leader's late writes fail. Each pass is level-triggered and idempotent: it re-reads the
//! world and fixes what differs, so a new leader simply starts passing.
//!
//! - node loss: nodes whose liveness key is gone (lease expired) have their
//!   instances stopped with `Server.InternalError` ("node lost") and their
//!   capacity released ([`Domain::reap_lost_nodes`]);
//! - pending reservations: RunInstances calls written in batches whose
//!   caller died are finished ([`Domain::resume_pending_reservations`]);
//! - garbage collection: terminated instances are deleted
//!   `gc_terminated_after_seconds` after termination, and ClientToken
//!   records a day old whose instances are all gone ([`Domain::collect_garbage`]);
//!   scanned every min(60 s, that delay).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::domain::Domain;
use crate::error::Result;
use crate::store::Fence;

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Instances stopped because their node was lost.
    pub lost: usize,
    /// Terminated instances deleted.
    pub collected: usize,
}

/// Longest pause between garbage-collection scans (each scan lists every
/// instance, so it does not run on every pass).
pub const GC_PERIOD: Duration = Duration::from_secs(60);

/// A RunInstances call written in batches that has not ended this long
/// after it started is finished by the reconciler (its caller died).
pub const RESUME_PENDING_AFTER: Duration = Duration::from_secs(60);

/// One reconcile pass (also used by tests): node loss always, garbage
/// collection when `gc_due`.
pub async fn pass(domain: &Domain, gc_due: bool) -> Result<PassReport> {
    let lost = domain.reap_lost_nodes().await?;
    // RunInstances sagas whose caller died (domain::reservations). A
    // failure here (e.g. an unreadable record) must not starve garbage
    // collection: log it and go on; the next pass tries again.
    match domain
        .resume_pending_reservations(RESUME_PENDING_AFTER)
        .await
    {
        Ok(0) => {}
        Ok(resumed) => tracing::info!(resumed, "pending reservations finished"),
        Err(e) => tracing::warn!(error = %e, "resuming pending reservations failed"),
    }
    let gc = Duration::from_secs(domain.config().reconciler.gc_terminated_after_seconds);
    let collected = if gc_due {
        domain.collect_garbage(gc).await?
    } else {
        0
    };
    // Event retention (the outbox): a failure must not stop the pass.
    if gc_due {
        if let Err(e) = domain
            .collect_expired_events(crate::domain::model::now_ms())
            .await
        {
            tracing::warn!(error = %e, "collecting expired events failed");
        }
    }
    if lost > 0 || collected > 0 {
        tracing::info!(lost, collected, "reconcile pass");
    }
    Ok(PassReport { lost, collected })
}

/// Campaigns for leadership and, while leader, runs [`pass`] every
/// `interval_seconds`, until `shutdown` turns true.
pub async fn run(domain: Arc<Domain>, identity: String, mut shutdown: watch::Receiver<bool>) {
    let cfg = domain.config().reconciler.clone();
    loop {
        if *shutdown.borrow() {
            return;
        }
        match lead(&domain, &identity, &cfg, &mut shutdown).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, "reconciler leadership lost; campaigning again");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.changed() => return,
                }
            }
        }
    }
}

async fn lead(
    domain: &Domain,
    identity: &str,
    cfg: &crate::config::ReconcilerConfig,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<()> {
    let store = domain.store();
    let ttl = i64::from(cfg.election_ttl_seconds);
    let lease = store.grant_lease(ttl).await?;
    let mut election = store.client().election_client();
    let name = store.keys().election();

    // Keep our lease alive while campaigning and leading.
    let keeper_store = store.clone();
    let (lost_tx, mut lost_rx) = watch::channel(false);
    let keeper = tokio::spawn(async move {
        let period = Duration::from_secs((ttl as u64 / 3).max(1));
        loop {
            tokio::time::sleep(period).await;
            match keeper_store.keep_alive_once(lease).await {
                Ok(Some(_)) => {}
                _ => {
                    let _ = lost_tx.send(true);
                    return;
                }
            }
        }
    });
    let result = async {
        let leader = tokio::select! {
            r = election.campaign(name.as_str(), identity, lease) => r?,
            _ = shutdown.changed() => return Ok(()),
            _ = lost_rx.changed() => return Err(crate::error::Error::Internal("election lease lost".into())),
        };
        // Every write of a pass is fenced by our election key's create
        // revision: if we lose the key before noticing, our writes fail.
        let fence = leader
            .leader()
            .map(|l| Fence::new(l.key(), l.rev()))
            .ok_or_else(|| {
                crate::error::Error::Internal("campaign returned no leader key".into())
            })?;
        tracing::info!(identity, "reconciler leader");
        let interval = Duration::from_secs(cfg.interval_seconds.max(1));
        let gc_period = GC_PERIOD.min(Duration::from_secs(cfg.gc_terminated_after_seconds.max(1)));
        let mut last_gc: Option<tokio::time::Instant> = None;
        loop {
            let gc_due = last_gc.is_none_or(|t| t.elapsed() >= gc_period);
            if gc_due {
                last_gc = Some(tokio::time::Instant::now());
            }
            if let Err(e) = fence.clone().scope(pass(domain, gc_due)).await {
                tracing::warn!(error = %e, "reconcile pass failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => {
                    if let Some(l) = leader.leader() {
                        let _ = election
                            .resign(Some(etcd_client::ResignOptions::new().with_leader(l.clone())))
                            .await;
                    }
                    return Ok(());
                }
                _ = lost_rx.changed() => {
                    return Err(crate::error::Error::Internal("election lease lost".into()));
                }
            }
        }
    }
    .await;
    keeper.abort();
    let _ = store.revoke_lease(lease).await;
    result
}
