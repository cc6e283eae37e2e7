//! This replica's view of all nodes (records, allocations, liveness), kept
//! current by a compaction-safe prefix watch. The scheduler reads it instead
//! of listing thousands of keys per placement; staleness is harmless because
//! every placement compares the allocation `mod_revision` it read here, and
//! a failed compare makes the caller [`NodeCache::refresh`].

use std::collections::HashMap;
use std::sync::{Arc, RwLock, Weak};

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
}

impl Snap {
    fn apply_put(&mut self, store: &Store, key: &str, value: &[u8], rev: i64) {
        let Some(k) = store.keys().parse_node_tree(key) else {
            return;
        };
        let res = match k {
            NodeKey::Record(id) => {
                decode::<Node>(key.as_bytes(), value).map(|v| upsert(&mut self.recs, id, v, rev))
            }
            NodeKey::Alloc(id) => decode::<NodeAlloc>(key.as_bytes(), value)
                .map(|v| upsert(&mut self.allocs, id, v, rev)),
            NodeKey::Alive(id) => decode::<NodeAlive>(key.as_bytes(), value)
                .map(|v| upsert(&mut self.alive, id, v, rev)),
        };
        if let Err(e) = res {
            tracing::error!(error = %e, "ignoring corrupt node record");
        }
    }

    fn apply_delete(&mut self, store: &Store, key: &str) {
        match store.keys().parse_node_tree(key) {
            Some(NodeKey::Record(id)) => {
                self.recs.remove(id);
            }
            Some(NodeKey::Alloc(id)) => {
                self.allocs.remove(id);
            }
            Some(NodeKey::Alive(id)) => {
                self.alive.remove(id);
            }
            None => {}
        }
    }
}

fn upsert<T>(m: &mut HashMap<String, (T, i64)>, id: &str, v: T, rev: i64) {
    match m.get(id) {
        Some((_, old)) if *old > rev => {}
        _ => {
            m.insert(id.to_string(), (v, rev));
        }
    }
}

/// The node cache (cheap to share; the watch stops when it is dropped).
#[derive(Debug)]
pub struct NodeCache {
    inner: Arc<RwLock<Snap>>,
    store: Store,
}

impl NodeCache {
    /// Lists the nodes once, then follows changes in the background.
    pub async fn start(store: Store) -> Result<Self> {
        let cache = Self {
            inner: Arc::new(RwLock::new(Snap::default())),
            store: store.clone(),
        };
        cache.refresh().await?;
        let weak: Weak<RwLock<Snap>> = Arc::downgrade(&cache.inner);
        let mut rx = watch_prefix(store.clone(), store.keys().node_tree());
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

    /// Re-lists every node key now (after a failed compare or an empty result).
    pub async fn refresh(&self) -> Result<()> {
        let prefix = self.store.keys().node_tree();
        let resp = self
            .store
            .client()
            .kv_client()
            .get(
                prefix.as_str(),
                Some(etcd_client::GetOptions::new().with_prefix()),
            )
            .await?;
        let mut fresh = Snap::default();
        for kv in resp.kvs() {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            fresh.apply_put(&self.store, &key, kv.value(), kv.mod_revision());
        }
        if let Ok(mut snap) = self.inner.write() {
            *snap = fresh;
        }
        Ok(())
    }

    /// Re-reads the allocation and liveness of some nodes (after a failed
    /// compare on them).
    pub async fn refresh_some(&self, ids: &[NodeId]) -> Result<()> {
        let keys = self.store.keys();
        let mut ops = Vec::new();
        for id in ids {
            ops.push(keys.node_alloc(id));
            ops.push(keys.node_alive(id));
        }
        let got = self.store.get_many_raw(&ops).await?;
        let Ok(mut snap) = self.inner.write() else {
            return Ok(());
        };
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
        if let Ok(mut snap) = self.inner.write() {
            upsert(&mut snap.allocs, id.as_str(), alloc, rev);
        }
    }

    /// Records a node record this replica just wrote at `rev`.
    pub fn note_node(&self, node: Node, rev: i64) {
        if let Ok(mut snap) = self.inner.write() {
            let id = node.id.to_string();
            upsert(&mut snap.recs, &id, node, rev);
        }
    }

    /// Every known node joined with its allocation and liveness.
    pub fn views(&self) -> Vec<NodeView> {
        let Ok(snap) = self.inner.read() else {
            return Vec::new();
        };
        let mut out: Vec<NodeView> = snap
            .recs
            .iter()
            .map(|(id, (node, _))| {
                let (alloc, alloc_rev) = snap.allocs.get(id).cloned().unwrap_or_default();
                NodeView {
                    node: node.clone(),
                    alloc,
                    alloc_rev,
                    alive: snap.alive.contains_key(id),
                }
            })
            .collect();
        out.sort_by(|a, b| a.node.id.cmp(&b.node.id));
        out
    }

    /// One node.
    pub fn get(&self, id: &NodeId) -> Option<NodeView> {
        let snap = self.inner.read().ok()?;
        let (node, _) = snap.recs.get(id.as_str())?;
        let (alloc, alloc_rev) = snap.allocs.get(id.as_str()).cloned().unwrap_or_default();
        Some(NodeView {
            node: node.clone(),
            alloc,
            alloc_rev,
            alive: snap.alive.contains_key(id.as_str()),
        })
    }

    /// Liveness records by node id.
    pub fn alive(&self, id: &NodeId) -> Option<NodeAlive> {
        let snap = self.inner.read().ok()?;
        snap.alive.get(id.as_str()).map(|(a, _)| a.clone())
    }
}
