//! Leadership of the leader-only tasks: each replica campaigns on the etcd
//! election `election/reconciler` with its own lease; the winner publishes a
//! [`Term`] (the fence of its election key and when the term began) until it
//! loses the lease, resigns at shutdown, or fails. The leader's writes are
//! fenced by its election key's create revision
//! ([`Fence`](crate::store::Fence)): a deposed leader's late writes fail.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::ReconcilerConfig;
use crate::error::{Error, Result};
use crate::store::{Fence, Store};

/// One leadership term of this replica.
#[derive(Debug, Clone)]
pub struct Term {
    /// Unique per term within this process.
    pub id: u64,
    /// The fence of the election key.
    pub fence: Fence,
    /// When this replica became leader.
    pub started: Instant,
}

static TERMS: AtomicU64 = AtomicU64::new(1);

impl Term {
    /// A new term (also used by tests that run leader-only work directly).
    pub fn new(fence: Fence) -> Self {
        Self {
            id: TERMS.fetch_add(1, Ordering::Relaxed),
            fence,
            started: Instant::now(),
        }
    }
}

/// This replica's campaign: publishes the current term (None while not
/// leading) and answers who leads.
#[derive(Debug)]
pub struct Leadership {
    store: Store,
    identity: String,
    tx: watch::Sender<Option<Term>>,
}

impl Leadership {
    /// A campaign of replica `identity` (not started).
    pub fn new(store: Store, identity: String) -> Arc<Self> {
        let (tx, _) = watch::channel(None);
        Arc::new(Self {
            store,
            identity,
            tx,
        })
    }

    /// This replica's identity (the election value).
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Follows this replica's terms.
    pub fn subscribe(&self) -> watch::Receiver<Option<Term>> {
        self.tx.subscribe()
    }

    /// Whether this replica leads now.
    pub fn is_leader(&self) -> bool {
        self.tx.borrow().is_some()
    }

    /// The identity of the current leader (any replica), if there is one.
    pub async fn leader(&self) -> Result<Option<String>> {
        let name = self.store.keys().election();
        let mut c = self.store.client().election_client();
        match c.leader(name.as_str()).await {
            Ok(r) => Ok(r
                .kv()
                .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())),
            // etcd answers "election: no leader" as an error.
            Err(etcd_client::Error::GRpcStatus(s)) if s.message().contains("no leader") => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Campaigns until `shutdown` turns true, campaigning again after any
    /// loss of leadership.
    pub async fn run(self: Arc<Self>, cfg: ReconcilerConfig, mut shutdown: watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                return;
            }
            let r = self.lead(&cfg, &mut shutdown).await;
            self.tx.send_replace(None);
            match r {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "leadership lost; campaigning again");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.changed() => return,
                    }
                }
            }
        }
    }

    async fn lead(
        &self,
        cfg: &ReconcilerConfig,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<()> {
        let store = &self.store;
        let ttl = i64::from(cfg.election_ttl_seconds);
        let lease = store.grant_lease(ttl).await?;
        let mut election = store.client().election_client();
        let name = store.keys().election();

        // Keep our lease alive while campaigning and leading.
        let keeper_store = store.clone();
        let (lost_tx, mut lost_rx) = watch::channel(false);
        // Aborted with this future too (a crashed replica's lease must lapse).
        let keeper = AbortOnDrop(tokio::spawn(async move {
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
        }));
        let lost = || Error::Internal("election lease lost".into());
        let result = async {
            let leader = tokio::select! {
                r = election.campaign(name.as_str(), self.identity.as_str(), lease) => r?,
                _ = shutdown.changed() => return Ok(()),
                _ = lost_rx.changed() => return Err(lost()),
            };
            let fence = leader
                .leader()
                .map(|l| Fence::new(l.key(), l.rev()))
                .ok_or_else(|| Error::Internal("campaign returned no leader key".into()))?;
            tracing::info!(identity = %self.identity, "leader of the background tasks");
            self.tx.send_replace(Some(Term::new(fence)));
            tokio::select! {
                _ = shutdown.changed() => {
                    self.tx.send_replace(None);
                    if let Some(l) = leader.leader() {
                        let _ = election
                            .resign(Some(etcd_client::ResignOptions::new().with_leader(l.clone())))
                            .await;
                    }
                    Ok(())
                }
                _ = lost_rx.changed() => Err(lost()),
            }
        }
        .await;
        drop(keeper);
        self.tx.send_replace(None);
        let _ = store.revoke_lease(lease).await;
        result
    }
}

/// Aborts the task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
