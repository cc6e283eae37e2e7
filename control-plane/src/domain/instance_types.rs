//! The instance-type catalogue in etcd: seeding a new cluster once, this
//! replica's cache of it (kept current by a compaction-safe prefix watch, so
//! a launch reads memory, not etcd), lookups for the launch paths, and the
//! operator's changes (list, put, delete). The record and its rules live in
//! [`crate::domain::catalogue`].
//!
//! A type's size is copied into every instance at launch, so changing or
//! deleting a type never changes an existing instance; deletion is refused
//! while a non-terminated instance of the type exists so that the catalogue
//! still describes every instance tenants can see.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock, Weak};

use crate::domain::catalogue::{self, InstanceType, SeedProfile};
use crate::domain::filters::Filter;
use crate::domain::lifecycle::State;
use crate::domain::model::now_ms;
use crate::domain::{Caller, Domain};
use crate::error::{Error, Result};
use crate::store::watch::{watch_prefix, WatchItem};
use crate::store::{decode, Store, Tx};

type Types = BTreeMap<String, InstanceType>;

/// This replica's copy of the catalogue.
#[derive(Debug, Clone)]
pub struct TypeCache {
    inner: Arc<RwLock<Types>>,
}

impl TypeCache {
    /// Lists the catalogue once, then follows changes in the background.
    pub async fn start(store: Store) -> Result<Self> {
        let cache = Self {
            inner: Arc::new(RwLock::new(Types::new())),
        };
        let prefix = store.keys().instance_types();
        let (kvs, _) = store.list_raw(&prefix).await?;
        *cache.write() = load(&prefix, kvs.into_iter().map(|(k, v, _)| (k, v)));
        let weak: Weak<RwLock<Types>> = Arc::downgrade(&cache.inner);
        let mut rx = watch_prefix(store.clone(), prefix.clone());
        tokio::spawn(async move {
            while let Some(item) = rx.recv().await {
                let Some(inner) = weak.upgrade() else { return };
                let mut types = inner.write().unwrap_or_else(PoisonError::into_inner);
                match item {
                    WatchItem::Snapshot { kvs, .. } => {
                        *types = load(&prefix, kvs.into_iter().map(|(k, v, _)| (k, v)));
                    }
                    WatchItem::Put { key, value, .. } => {
                        if let Some(t) = decode_one(&prefix, &key, &value) {
                            types.insert(t.name.clone(), t);
                        }
                    }
                    WatchItem::Delete { key, .. } => {
                        if let Some(name) = key.strip_prefix(&prefix) {
                            types.remove(name);
                        }
                    }
                }
            }
        });
        Ok(cache)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Types> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Types> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The type named `name`.
    pub fn get(&self, name: &str) -> Option<InstanceType> {
        self.read().get(name).cloned()
    }

    /// Every type, in [`catalogue::sort_key`] order.
    pub fn all(&self) -> Vec<InstanceType> {
        let mut all: Vec<InstanceType> = self.read().values().cloned().collect();
        all.sort_by_key(|t| catalogue::sort_key(&t.name));
        all
    }
}

fn decode_one(prefix: &str, key: &str, value: &[u8]) -> Option<InstanceType> {
    key.strip_prefix(prefix)?;
    match decode::<InstanceType>(key.as_bytes(), value) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::error!(error = %e, "ignoring a corrupt instance type");
            None
        }
    }
}

fn load(prefix: &str, kvs: impl Iterator<Item = (String, Vec<u8>)>) -> Types {
    kvs.filter_map(|(k, v)| decode_one(prefix, &k, &v))
        .map(|t| (t.name.clone(), t))
        .collect()
}

/// Seeds the catalogue with `profile`'s types unless some replica already
/// did (one transaction, on condition that the `instance-types-seeded`
/// marker is absent; a lost race is the other replica's success). Returns
/// whether this call seeded.
pub async fn seed(store: &Store, profile: SeedProfile) -> Result<bool> {
    let keys = store.keys();
    let marker = keys.instance_types_seeded();
    let mut tx = Tx::new();
    tx.expect_absent(&marker);
    let note = serde_json::json!({ "profile": profile, "ms": now_ms() });
    tx.put_raw(&marker, note.to_string().into_bytes());
    for t in catalogue::seed(profile) {
        tx.put(&keys.instance_type(&t.name), &t)?;
    }
    Ok(store.commit(tx).await?.is_some())
}

fn unknown(name: &str) -> Error {
    Error::invalid(format!("The instance type '{name}' does not exist"))
}

impl Domain {
    /// The type named `name`, or EC2's error for an unknown one
    /// (`InvalidParameterValue`, as RunInstances answers).
    pub fn instance_type(&self, name: &str) -> Result<InstanceType> {
        self.types.get(name).ok_or_else(|| unknown(name))
    }

    /// DescribeInstanceTypes (any caller: the catalogue is public).
    pub fn describe_instance_types(
        &self,
        names: &[String],
        filters: &[Filter],
        max_results: u32,
        next_token: Option<&str>,
    ) -> Result<(Vec<InstanceType>, Option<String>)> {
        catalogue::describe(&self.types.all(), names, filters, max_results, next_token)
    }

    /// ListInstanceTypes (operator): every type, read from etcd (not the
    /// cache, so the operator sees their own change at once).
    pub async fn list_instance_types(&self, caller: &Caller) -> Result<Vec<InstanceType>> {
        caller.require_operator()?;
        let prefix = self.store.keys().instance_types();
        let mut all: Vec<InstanceType> = self
            .store
            .list::<InstanceType>(&prefix)
            .await?
            .0
            .into_iter()
            .map(|(_, v)| v.value)
            .collect();
        all.sort_by_key(|t| catalogue::sort_key(&t.name));
        Ok(all)
    }

    /// PutInstanceType (operator): creates or replaces a type. Instances
    /// already launched keep the size they were launched with.
    pub async fn put_instance_type(&self, caller: &Caller, t: InstanceType) -> Result<()> {
        caller.require_operator()?;
        catalogue::validate(&t, self.cfg.nodes.max_vcpus, self.cfg.nodes.max_memory_mib)?;
        let mut tx = Tx::new();
        tx.put(&self.store.keys().instance_type(&t.name), &t)?;
        self.store.commit(tx).await?;
        self.types.write().insert(t.name.clone(), t);
        Ok(())
    }

    /// DeleteInstanceType (operator): refused (`InvalidInstanceType.InUse`)
    /// while an instance of the type that is not terminated exists. A launch
    /// racing the deletion may still place one; it keeps its size and can
    /// be terminated as usual.
    pub async fn delete_instance_type(&self, caller: &Caller, name: &str) -> Result<()> {
        caller.require_operator()?;
        if !catalogue::name_ok(name) {
            return Err(unknown(name));
        }
        let key = self.store.keys().instance_type(name);
        let Some(cur) = self.store.get::<InstanceType>(&key).await? else {
            return Err(Error::not_found(
                "InvalidInstanceType",
                format!("The instance type '{name}' does not exist"),
            ));
        };
        let mut pages = self.store.instances().all();
        let mut users = 0usize;
        let mut example = None;
        while let Some(page) = pages.next().await? {
            for (_, v) in page {
                if v.value.instance_type == name && v.value.state != State::Terminated {
                    users += 1;
                    example.get_or_insert(v.value.id.to_string());
                }
            }
        }
        if let Some(example) = example {
            return Err(Error::incorrect_state(
                "InvalidInstanceType.InUse",
                format!(
                    "{users} instance(s) of type {name} exist (e.g. {example}); terminate them first"
                ),
            ));
        }
        let mut tx = Tx::new();
        tx.delete_if_unchanged(&key, &cur);
        if self.store.commit(tx).await?.is_none() {
            return Err(Error::Contention(format!("instance type {name}")));
        }
        self.types.write().remove(name);
        Ok(())
    }
}
