//! This replica's view of all nodes (records, allocations, liveness), kept
//! current by a compaction-safe prefix watch. The scheduler reads it instead
//! of listing thousands of keys per placement; staleness is harmless because
//! every placement compares the allocation `mod_revision` it read here, and
//! a failed compare makes the caller [`NodeCache::refresh_some`].
//!
//! The joined, id-sorted [`NodeView`] list is maintained incrementally, so
//! a placement reads it in place under a read lock ([`NodeCache::place`])
//! instead of copying every node per call. [`NodeCache::place`] also keeps
//! this replica's in-flight placements apart: the nodes a placement chose
//! stay *claimed* until its transaction is decided (and, on success, its
//! new allocation noted here), and other placements of this replica avoid
//! claimed nodes while others have room, so concurrent calls of one
//! replica do not lose compare-and-swaps to each other.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};

use crate::domain::model::{Node, NodeAlive, NodeAlloc};
use crate::error::Result;
use crate::ids::NodeId;
use crate::scheduler::NodeView;
use crate::store::keys::NodeKey;
use crate::store::watch::{watch_prefix, WatchItem};
use crate::store::{decode, Store};

#[derive(Debug, Default)]
struct Snap {
    recs: HashMap<String, (Node, i64)>,
    allocs: HashMap<String, (NodeAlloc, i64)>,
    alive: HashMap<String, (NodeAlive, i64)>,
    /// Nodes with a record joined with their allocation and liveness,
    /// sorted by id.
    views: Vec<NodeView>,
    /// Node id -> position in `views`.
    index: HashMap<String, usize>,
}

impl Snap {
    fn apply_put(&mut self, store: &Store, key: &str, value: &[u8], rev: i64) {
        let Some(k) = store.nodes().parse_tree(key) else {
            return;
        };
        let res = match k {
            NodeKey::Record(id) => decode::<Node>(key.as_bytes(), value).map(|v| {
                if upsert(&mut self.recs, id, v.clone(), rev) {
                    self.set_record(id, v);
                }
            }),
            NodeKey::Alloc(id) => decode::<NodeAlloc>(key.as_bytes(), value).map(|v| {
                if upsert(&mut self.allocs, id, v.clone(), rev) {
                    if let Some(&i) = self.index.get(id) {
                        self.views[i].alloc = v;
                        self.views[i].alloc_rev = rev;
                    }
                }
            }),
            NodeKey::Alive(id) => decode::<NodeAlive>(key.as_bytes(), value).map(|v| {
                if upsert(&mut self.alive, id, v, rev) {
                    if let Some(&i) = self.index.get(id) {
                        self.views[i].alive = true;
                    }
                }
            }),
        };
        if let Err(e) = res {
            tracing::error!(error = %e, "ignoring corrupt node record");
        }
    }

    fn apply_delete(&mut self, store: &Store, key: &str) {
        match store.nodes().parse_tree(key) {
            Some(NodeKey::Record(id)) => {
                self.recs.remove(id);
                if let Some(i) = self.index.remove(id) {
                    self.views.remove(i);
                    self.reindex();
                }
            }
            Some(NodeKey::Alloc(id)) => {
                self.allocs.remove(id);
                if let Some(&i) = self.index.get(id) {
                    self.views[i].alloc = NodeAlloc::default();
                    self.views[i].alloc_rev = 0;
                }
            }
            Some(NodeKey::Alive(id)) => {
                self.alive.remove(id);
                if let Some(&i) = self.index.get(id) {
                    self.views[i].alive = false;
                }
            }
            None => {}
        }
    }

    /// A node record was stored: update its view or insert it in order.
    fn set_record(&mut self, id: &str, node: Node) {
        if let Some(&i) = self.index.get(id) {
            self.views[i].node = node;
            return;
        }
        let (alloc, alloc_rev) = self.allocs.get(id).cloned().unwrap_or_default();
        let view = NodeView {
            node,
            alloc,
            alloc_rev,
            alive: self.alive.contains_key(id),
        };
        let pos = self
            .views
            .partition_point(|v| v.node.id.as_str() < view.node.id.as_str());
        self.views.insert(pos, view);
        if pos + 1 == self.views.len() {
            self.index.insert(id.to_string(), pos);
        } else {
            self.reindex();
        }
    }

    fn reindex(&mut self) {
        self.index = self
            .views
            .iter()
            .enumerate()
            .map(|(i, v)| (v.node.id.to_string(), i))
            .collect();
    }
}

/// Stores `v` unless a newer revision is already there; true when stored.
fn upsert<T>(m: &mut HashMap<String, (T, i64)>, id: &str, v: T, rev: i64) -> bool {
    match m.get(id) {
        Some((_, old)) if *old > rev => false,
        _ => {
            m.insert(id.to_string(), (v, rev));
            true
        }
    }
}

/// Node ids claimed by this replica's in-flight placements (with counts:
/// a fallback placement may claim a node another one holds).
type Claims = Arc<Mutex<HashMap<String, u32>>>;

/// The outcome of [`NodeCache::place`]: the chosen nodes (as read), the
/// node of each placed instance, and the claim on those nodes, released
/// when this is dropped.
#[derive(Debug)]
pub struct Claimed {
    /// The distinct chosen nodes as this replica saw them.
    pub nodes: Vec<NodeView>,
    /// Per placed instance, its node's position in `nodes`.
    pub placed: Vec<usize>,
    _claim: ClaimGuard,
}

#[derive(Debug)]
struct ClaimGuard {
    claims: Claims,
    ids: Vec<String>,
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        // Also through a poisoned lock (a placement that panicked while
        // holding it): skipping the release would leave these nodes claimed,
        // avoided by every later placement of this replica, for good.
        let mut c = self.claims.lock().unwrap_or_else(PoisonError::into_inner);
        for id in &self.ids {
            if let Some(n) = c.get_mut(id) {
                *n -= 1;
                if *n == 0 {
                    c.remove(id);
                }
            }
        }
    }
}

/// The node cache (cheap to share; the watch stops when it is dropped).
#[derive(Debug)]
pub struct NodeCache {
    inner: Arc<RwLock<Snap>>,
    claims: Claims,
    store: Store,
}

impl NodeCache {
    /// Lists the nodes once, then follows changes in the background.
    pub async fn start(store: Store) -> Result<Self> {
        let cache = Self {
            inner: Arc::new(RwLock::new(Snap::default())),
            claims: Claims::default(),
            store: store.clone(),
        };
        cache.refresh().await?;
        let weak: Weak<RwLock<Snap>> = Arc::downgrade(&cache.inner);
        let mut rx = watch_prefix(store.clone(), store.nodes().tree());
        tokio::spawn(async move {
            while let Some(item) = rx.recv().await {
                let Some(inner) = weak.upgrade() else { return };
                let Ok(mut snap) = inner.write() else { return };
                match item {
                    WatchItem::Snapshot { kvs, .. } => {
                        let mut fresh = Snap::default();
                        for (k, v, rev) in kvs {
                            fresh.apply_put(&store, &k, &v, rev);
                        }
                        *snap = fresh;
                    }
                    WatchItem::Put {
                        key,
                        value,
                        mod_revision,
                    } => snap.apply_put(&store, &key, &value, mod_revision),
                    WatchItem::Delete { key, .. } => snap.apply_delete(&store, &key),
                }
            }
        });
        Ok(cache)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Snap> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Snap> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Re-lists every node key now (after a failed compare or an empty result).
    pub async fn refresh(&self) -> Result<()> {
        let prefix = self.store.nodes().tree();
        let (kvs, _) = self.store.list_raw(&prefix).await?;
        let mut fresh = Snap::default();
        for (key, value, rev) in kvs {
            fresh.apply_put(&self.store, &key, &value, rev);
        }
        *self.write() = fresh;
        Ok(())
    }

    /// Re-reads the allocation and liveness of some nodes (after a failed
    /// compare on them).
    pub async fn refresh_some(&self, ids: &[NodeId]) -> Result<()> {
        let nodes = self.store.nodes();
        let mut ops = Vec::new();
        for id in ids {
            ops.push(nodes.alloc_key(id));
            ops.push(nodes.alive_key(id));
        }
        let got = self.store.get_many_raw(&ops).await?;
        let mut snap = self.write();
        for (key, val) in ops.iter().zip(got) {
            match val {
                Some((v, rev)) => snap.apply_put(&self.store, key, &v, rev),
                None => snap.apply_delete(&self.store, key),
            }
        }
        Ok(())
    }

    /// Records an allocation this replica just wrote at `rev`.
    pub fn note_alloc(&self, id: &NodeId, alloc: NodeAlloc, rev: i64) {
        let mut snap = self.write();
        if upsert(&mut snap.allocs, id.as_str(), alloc.clone(), rev) {
            if let Some(&i) = snap.index.get(id.as_str()) {
                snap.views[i].alloc = alloc;
                snap.views[i].alloc_rev = rev;
            }
        }
    }

    /// Records a node record this replica just wrote at `rev`.
    pub fn note_node(&self, node: Node, rev: i64) {
        let mut snap = self.write();
        let id = node.id.to_string();
        if upsert(&mut snap.recs, &id, node.clone(), rev) {
            snap.set_record(&id, node);
        }
    }

    /// Runs a placement over the current nodes and claims the chosen ones
    /// (see the module docs). `choose` gets the nodes (sorted by id) and the
    /// sorted positions of nodes other in-flight placements of this replica
    /// hold, and returns the position of each placed instance's node. When
    /// it fails with nodes excluded, it runs once more over all nodes (a
    /// claimed node may still have room; the compare-and-swap decides).
    pub fn place<F>(&self, choose: F) -> Result<Claimed>
    where
        F: Fn(&[NodeView], &[usize]) -> Result<Vec<usize>>,
    {
        // Claims first, then the snapshot: placements of this replica are
        // decided one at a time, each seeing the others' claims.
        let mut claims = self.claims.lock().unwrap_or_else(PoisonError::into_inner);
        let snap = self.read();
        let mut skip: Vec<usize> = claims
            .keys()
            .filter_map(|id| snap.index.get(id).copied())
            .collect();
        skip.sort_unstable();
        let chosen = match choose(&snap.views, &skip) {
            Ok(c) => c,
            Err(e) if skip.is_empty() => return Err(e),
            Err(_) => choose(&snap.views, &[])?,
        };
        let mut nodes: Vec<NodeView> = Vec::new();
        let mut at: HashMap<usize, usize> = HashMap::new();
        let mut placed = Vec::with_capacity(chosen.len());
        for i in chosen {
            let Some(v) = snap.views.get(i) else {
                continue;
            };
            let p = *at.entry(i).or_insert_with(|| {
                nodes.push(v.clone());
                nodes.len() - 1
            });
            placed.push(p);
        }
        let ids: Vec<String> = nodes.iter().map(|v| v.node.id.to_string()).collect();
        for id in &ids {
            *claims.entry(id.clone()).or_default() += 1;
        }
        Ok(Claimed {
            nodes,
            placed,
            _claim: ClaimGuard {
                claims: self.claims.clone(),
                ids,
            },
        })
    }

    /// Every known node joined with its allocation and liveness (a copy).
    pub fn views(&self) -> Vec<NodeView> {
        self.read().views.clone()
    }

    /// One node.
    pub fn get(&self, id: &NodeId) -> Option<NodeView> {
        let snap = self.read();
        snap.index.get(id.as_str()).map(|&i| snap.views[i].clone())
    }

    /// Liveness records by node id.
    pub fn alive(&self, id: &NodeId) -> Option<NodeAlive> {
        self.read().alive.get(id.as_str()).map(|(a, _)| a.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_is_released_through_a_poisoned_lock() {
        let claims = Claims::default();
        claims.lock().unwrap().insert("n-1".into(), 1);
        let guard = ClaimGuard {
            claims: claims.clone(),
            ids: vec!["n-1".into()],
        };
        // A placement panics while it holds the lock.
        let c = claims.clone();
        let _ = std::thread::spawn(move || {
            let _held = c.lock().unwrap();
            panic!("placement panicked");
        })
        .join();
        assert!(claims.is_poisoned());
        drop(guard);
        let left = claims.lock().unwrap_or_else(PoisonError::into_inner);
        assert!(left.is_empty(), "claim leaked: {left:?}");
    }
}
