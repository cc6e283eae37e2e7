//! Access-key lifecycle (operator): rotation (a second key, then deleting
//! the first), revocation, account disable/enable/delete, secrets sealed at
//! rest ([`super::secrets`]) and keeping every replica's key cache in step.
//!
//! Revocation and disabling reach every replica at once: each replica
//! watches `access-keys/` and drops a changed or deleted key from its cache
//! ([`follow_access_keys`]); disabling an account rewrites its keys
//! (`account_disabled`) in the transaction that disables it, so a key lookup
//! alone refuses them.

use std::sync::Weak;

use crate::domain::accounts::{random_secret, random_upper};
use crate::domain::model::{now_ms, AccessKey, Account, Principal};
use crate::domain::{Caller, Domain};
use crate::error::{Error, Result};
use crate::ids::AccountId;
use crate::store::watch::{watch_prefix, WatchItem};
use crate::store::{Store, Tx, Versioned};

/// Access keys an account may hold at once (EC2/IAM: two, for rotation).
pub const MAX_KEYS_PER_ACCOUNT: usize = 2;

/// An access key as the operator sees it (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessKeyInfo {
    /// Key id.
    pub key_id: String,
    /// Created.
    pub created_ms: i64,
}

impl Domain {
    /// A new key record for `secret`, sealed when a key is configured.
    pub(crate) fn access_key_record(
        &self,
        key_id: &str,
        secret: &str,
        principal: Principal,
    ) -> Result<AccessKey> {
        let (plain, sealed) = if self.secrets.seals() {
            (String::new(), Some(self.secrets.seal(key_id, secret)?))
        } else {
            (secret.to_string(), None)
        };
        Ok(AccessKey {
            key_id: key_id.to_string(),
            secret: plain,
            sealed_secret: sealed,
            principal,
            created_ms: now_ms(),
            account_disabled: false,
        })
    }

    /// The plain secret of a stored key.
    pub(crate) fn secret_of(&self, key: &AccessKey) -> Result<String> {
        match &key.sealed_secret {
            Some(s) => self.secrets.open(&key.key_id, s),
            None => Ok(key.secret.clone()),
        }
    }

    /// Reseals every access key stored in plaintext or under a previous key
    /// (at start; each rewrite is a compare-and-swap, so racing replicas
    /// write each key once). Returns how many were rewritten.
    pub async fn reseal_access_keys(&self) -> Result<usize> {
        if !self.secrets.seals() {
            return Ok(0);
        }
        let mut done = 0;
        let mut pages = self.store.access_keys().all();
        while let Some(page) = pages.next().await? {
            for (key, cur) in page {
                let stale = match &cur.value.sealed_secret {
                    Some(s) => self.secrets.needs_reseal(s),
                    None => true,
                };
                if !stale {
                    continue;
                }
                let secret = self.secret_of(&cur.value)?;
                let mut next = cur.value.clone();
                next.secret = String::new();
                next.sealed_secret = Some(self.secrets.seal(&next.key_id, &secret)?);
                let mut tx = Tx::new();
                tx.replace(&key, &cur, &next)?;
                if self.store.commit(tx).await?.is_some() {
                    done += 1;
                }
            }
        }
        Ok(done)
    }

    async fn account_of(&self, account: &str) -> Result<Versioned<Account>> {
        let id = AccountId::parse(account)?;
        self.store
            .accounts()
            .get(&id)
            .await?
            .ok_or_else(|| Error::NotFound {
                code: "InvalidAccount.NotFound".into(),
                message: format!("the account '{account}' does not exist"),
            })
    }

    /// CreateAccessKey (operator): a new key for `account`, for rotation.
    /// Returns the key id and its secret (shown only here).
    pub async fn create_access_key(
        &self,
        caller: &Caller,
        account: &str,
    ) -> Result<(String, String)> {
        caller.require_operator()?;
        let cur = self.account_of(account).await?;
        if cur.value.access_key_ids.len() >= MAX_KEYS_PER_ACCOUNT {
            return Err(Error::invalid_code(
                "LimitExceeded",
                format!(
                    "the account already has {MAX_KEYS_PER_ACCOUNT} access keys: delete one first"
                ),
            ));
        }
        let key_id = format!("NKIA{}", random_upper(16));
        let secret = random_secret();
        let mut key = self.access_key_record(
            &key_id,
            &secret,
            Principal::Tenant {
                account: cur.value.id.clone(),
            },
        )?;
        key.account_disabled = cur.value.disabled;
        let mut next = cur.value.clone();
        next.access_key_ids.push(key_id.clone());
        let mut tx = Tx::new();
        tx.replace(&self.store.accounts().key(&cur.value.id), &cur, &next)?;
        self.store.access_keys().stage_create(&mut tx, &key)?;
        if self.store.commit(tx).await?.is_none() {
            return Err(Error::Contention("account".into()));
        }
        Ok((key_id, secret))
    }

    /// ListAccessKeys (operator): an account's keys, without secrets.
    pub async fn list_access_keys(
        &self,
        caller: &Caller,
        account: &str,
    ) -> Result<Vec<AccessKeyInfo>> {
        caller.require_operator()?;
        let cur = self.account_of(account).await?;
        let mut out = Vec::new();
        for k in &cur.value.access_key_ids {
            if let Some(key) = self.store.access_keys().get(k).await? {
                out.push(AccessKeyInfo {
                    key_id: key.value.key_id,
                    created_ms: key.value.created_ms,
                });
            }
        }
        Ok(out)
    }

    /// DeleteAccessKey (operator): revokes a tenant key. Every replica
    /// refuses it from the moment this returns (their caches follow the
    /// key's deletion through a watch).
    pub async fn delete_access_key(&self, caller: &Caller, key_id: &str) -> Result<()> {
        caller.require_operator()?;
        let not_found = || Error::NotFound {
            code: "InvalidAccessKeyId.NotFound".into(),
            message: format!("the access key '{key_id}' does not exist"),
        };
        let key = self
            .store
            .access_keys()
            .get(key_id)
            .await?
            .ok_or_else(not_found)?;
        let Principal::Tenant { account } = &key.value.principal else {
            // Node credentials are the node's (re-enrol the host instead).
            return Err(not_found());
        };
        let cur = self.account_of(account.as_str()).await?;
        let mut next = cur.value.clone();
        next.access_key_ids.retain(|k| k != key_id);
        let mut tx = Tx::new();
        tx.replace(&self.store.accounts().key(&cur.value.id), &cur, &next)?;
        tx.delete_if_unchanged(&self.store.access_keys().key(key_id), &key);
        if self.store.commit(tx).await?.is_none() {
            return Err(Error::Contention("access key".into()));
        }
        self.creds.forget(key_id);
        Ok(())
    }

    /// DisableAccount / EnableAccount (operator). A disabled account's keys
    /// are refused (`AuthFailure`) on every API; its instances keep running
    /// (stop or terminate them as the operator if needed).
    pub async fn set_account_disabled(
        &self,
        caller: &Caller,
        account: &str,
        disabled: bool,
    ) -> Result<()> {
        caller.require_operator()?;
        let cur = self.account_of(account).await?;
        let mut next = cur.value.clone();
        next.disabled = disabled;
        let mut tx = Tx::new();
        tx.replace(&self.store.accounts().key(&cur.value.id), &cur, &next)?;
        let mut ids = Vec::new();
        for k in &cur.value.access_key_ids {
            if let Some(key) = self.store.access_keys().get(k).await? {
                let mut nk = key.value.clone();
                nk.account_disabled = disabled;
                tx.replace(&self.store.access_keys().key(k), &key, &nk)?;
                ids.push(k.clone());
            }
        }
        if self.store.commit(tx).await?.is_none() {
            return Err(Error::Contention("account".into()));
        }
        for k in ids {
            self.creds.forget(&k);
        }
        Ok(())
    }

    /// DeleteAccount (operator): only a disabled account without instances
    /// (other than terminated ones) may go; its record and keys are removed.
    pub async fn delete_account(&self, caller: &Caller, account: &str) -> Result<()> {
        caller.require_operator()?;
        let cur = self.account_of(account).await?;
        if !cur.value.disabled {
            return Err(Error::invalid_code(
                "IncorrectState",
                "disable the account before deleting it",
            ));
        }
        let mut pages = self.store.instances().of(&cur.value.id);
        while let Some(page) = pages.next().await? {
            if let Some((_, i)) = page
                .iter()
                .find(|(_, i)| i.value.state != crate::domain::lifecycle::State::Terminated)
            {
                return Err(Error::invalid_code(
                    "DependencyViolation",
                    format!(
                        "the account still has instance {} ({}): terminate its instances first",
                        i.value.id,
                        i.value.state.name()
                    ),
                ));
            }
        }
        let mut tx = Tx::new();
        tx.delete_if_unchanged(&self.store.accounts().key(&cur.value.id), &cur);
        for k in &cur.value.access_key_ids {
            self.store.access_keys().stage_delete(&mut tx, k);
        }
        if self.store.commit(tx).await?.is_none() {
            return Err(Error::Contention("account".into()));
        }
        for k in &cur.value.access_key_ids {
            self.creds.forget(k);
        }
        Ok(())
    }
}

/// Keeps `domain`'s key cache in step with `access-keys/`: a changed or
/// deleted key is dropped from the cache, so the next request reads it anew.
/// Ends when the domain is dropped.
pub fn follow_access_keys(store: Store, domain: Weak<Domain>) {
    let prefix = store.keys().access_keys();
    let mut rx = watch_prefix(store.clone(), prefix.clone());
    tokio::spawn(async move {
        while let Some(item) = rx.recv().await {
            let Some(d) = domain.upgrade() else { return };
            match item {
                // A (re)started watch lists every key: drop those whose
                // record changed (or vanished) while it was not watching.
                // The rest stay cached, so an etcd hiccup does not turn every
                // request into a key read (the cache's TTL bounds any miss).
                WatchItem::Snapshot { kvs, .. } => {
                    let current: std::collections::HashMap<String, Vec<u8>> = kvs
                        .into_iter()
                        .filter_map(|(k, v, _)| key_id(&prefix, &k).map(|id| (id, v)))
                        .collect();
                    d.creds.retain(|id, cached| {
                        current.get(id).is_some_and(|raw| {
                            crate::store::decode::<crate::domain::model::AccessKey>(
                                id.as_bytes(),
                                raw,
                            )
                            .is_ok_and(|k| &k == cached)
                        })
                    });
                }
                WatchItem::Put { key, .. } | WatchItem::Delete { key, .. } => {
                    if let Some(id) = key_id(&prefix, &key) {
                        d.creds.forget(&id);
                    }
                }
            }
        }
    });
}

/// The access key id of an `access-keys/<hex id>` key.
fn key_id(prefix: &str, key: &str) -> Option<String> {
    key.strip_prefix(prefix)
        .and_then(|h| hex::decode(h).ok())
        .and_then(|b| String::from_utf8(b).ok())
}
