//! Key pairs: CreateKeyPair generates an RSA (default, as EC2) or ed25519
//! key (the private key is returned once and never stored); ImportKeyPair
//! takes an OpenSSH public key line or an RFC 4716 block. Key material and
//! fingerprints live in `keymaterial`. Agents receive the public key (an
//! OpenSSH line) in the assignment spec.

use crate::domain::filters::{self, Filter};
use crate::domain::model::{now_ms, KeyPair};
use crate::domain::quotas::Resource;
use crate::domain::{validation, Caller, Domain};
use crate::error::{Error, Result};
use crate::ids::{AccountId, KeyPairId};
use crate::store::Tx;

pub use super::keymaterial::generate_ed25519;
use super::keymaterial::{self, GeneratedKey, KeyKind};

/// Filter names DescribeKeyPairs supports.
pub const KEYPAIR_FILTERS: &[&str] = &[
    "key-name",
    "key-pair-id",
    "fingerprint",
    "tag:",
    "tag-key",
    "tag-value",
];

fn duplicate(name: &str) -> Error {
    Error::AlreadyExists {
        code: "InvalidKeyPair.Duplicate".into(),
        message: format!("the key pair '{name}' already exists"),
    }
}

fn not_found(what: &str) -> Error {
    Error::not_found(
        "InvalidKeyPair.NotFound",
        format!("the key pair '{what}' does not exist"),
    )
}

impl Domain {
    /// A key pair by name.
    pub async fn keypair_by_name(&self, account: &AccountId, name: &str) -> Result<KeyPair> {
        self.store
            .keypairs()
            .get(account, name)
            .await?
            .map(|v| v.value)
            .ok_or_else(|| not_found(name))
    }

    /// Creates the key pair with its quota charge in one transaction
    /// (compared on the usage record and the key pair's absence).
    async fn insert_keypair(&self, account: &AccountId, kp: &KeyPair) -> Result<()> {
        let key = self.store.keypairs().key(account, &kp.name);
        // A taken name is a duplicate whatever the quota.
        if self.store.get_raw(&key).await?.is_some() {
            return Err(duplicate(&kp.name));
        }
        for attempt in 0..crate::store::repo::MAX_CAS_ATTEMPTS {
            let quota = self.quota_state(account).await?;
            quota.check(Resource::KeyPairs, 1)?;
            let mut tx = Tx::new();
            tx.create(&key, kp)?;
            quota.stage(
                &mut tx,
                &self.usage_key(account),
                &[(Resource::KeyPairs, 1)],
            )?;
            if self.store.commit(tx).await?.is_some() {
                return Ok(());
            }
            if self.store.get_raw(&key).await?.is_some() {
                return Err(duplicate(&kp.name));
            }
            crate::store::backoff(attempt).await;
        }
        Err(Error::Contention(key))
    }

    /// Deletes a key pair with its quota release, both compared (a missing
    /// key pair releases nothing: deleting it again is a no-op).
    async fn remove_keypair(&self, account: &AccountId, name: &str) -> Result<()> {
        let key = self.store.keypairs().key(account, name);
        for attempt in 0..crate::store::repo::MAX_CAS_ATTEMPTS {
            let Some(cur) = self.store.keypairs().get(account, name).await? else {
                return Ok(());
            };
            let quota = self.quota_state(account).await?;
            let mut tx = Tx::new();
            tx.delete_if_unchanged(&key, &cur);
            quota.stage(
                &mut tx,
                &self.usage_key(account),
                &[(Resource::KeyPairs, -1)],
            )?;
            if self.store.commit(tx).await?.is_some() {
                return Ok(());
            }
            crate::store::backoff(attempt).await;
        }
        Err(Error::Contention(key))
    }

    /// CreateKeyPair: returns the record and the private key (OpenSSH).
    pub async fn create_keypair(
        &self,
        caller: &Caller,
        name: &str,
        key_type: &str,
        tags: &[(String, String)],
    ) -> Result<(KeyPair, String)> {
        let account = caller.account()?;
        validation::key_name(name)?;
        let tags = validation::tags(tags)?;
        let kind = match key_type {
            "" | "rsa" => KeyKind::Rsa,
            "ed25519" => KeyKind::Ed25519,
            other => return Err(Error::invalid(format!("Invalid KeyType '{other}'"))),
        };
        if self.store.keypairs().get(&account, name).await?.is_some() {
            return Err(duplicate(name));
        }
        let comment = name.to_string();
        let key = match kind {
            KeyKind::Ed25519 => {
                let (public_line, private_pem, fingerprint) = generate_ed25519(&comment);
                GeneratedKey {
                    kind,
                    public_line,
                    private_pem,
                    fingerprint,
                }
            }
            // RSA key generation is CPU-bound: keep it off the executor.
            KeyKind::Rsa => {
                tokio::task::spawn_blocking(move || keymaterial::generate_rsa(&comment))
                    .await
                    .map_err(|e| Error::KeyMaterial("generate RSA", Box::new(e)))??
            }
        };
        let private_key = key.private_pem;
        let kp = KeyPair {
            id: KeyPairId::generate(),
            name: name.to_string(),
            fingerprint: key.fingerprint,
            key_type: key.kind.as_str().into(),
            public_key: key.public_line,
            tags,
            created_ms: now_ms(),
        };
        self.insert_keypair(&account, &kp).await?;
        Ok((kp, private_key))
    }

    /// ImportKeyPair.
    pub async fn import_keypair(
        &self,
        caller: &Caller,
        name: &str,
        material: &[u8],
        tags: &[(String, String)],
    ) -> Result<KeyPair> {
        let account = caller.account()?;
        validation::key_name(name)?;
        let tags = validation::tags(tags)?;
        let key = keymaterial::parse_public_key(material)?;
        let kp = KeyPair {
            id: KeyPairId::generate(),
            name: name.to_string(),
            fingerprint: key.fingerprint,
            key_type: key.kind.as_str().into(),
            public_key: key.public_line,
            tags,
            created_ms: now_ms(),
        };
        self.insert_keypair(&account, &kp).await?;
        Ok(kp)
    }

    /// DescribeKeyPairs.
    pub async fn describe_keypairs(
        &self,
        caller: &Caller,
        names: &[String],
        ids: &[String],
        filters: &[Filter],
    ) -> Result<Vec<KeyPair>> {
        let account = caller.account()?;
        filters::check(filters, KEYPAIR_FILTERS)?;
        let mut pids = Vec::new();
        for i in ids {
            pids.push(KeyPairId::parse(i)?);
        }
        let all = self.store.keypairs().of(&account).collect().await?;
        let all: Vec<KeyPair> = all.into_iter().map(|(_, v)| v.value).collect();
        for n in names {
            if !all.iter().any(|k| &k.name == n) {
                return Err(not_found(n));
            }
        }
        for i in &pids {
            if !all.iter().any(|k| &k.id == i) {
                return Err(not_found(i.as_str()));
            }
        }
        Ok(all
            .into_iter()
            .filter(|k| names.is_empty() || names.contains(&k.name))
            .filter(|k| pids.is_empty() || pids.contains(&k.id))
            .filter(|k| filters.iter().all(|f| keypair_matches(k, f)))
            .collect())
    }

    /// DeleteKeyPair (by name or id; deleting a missing key succeeds, as EC2).
    pub async fn delete_keypair(&self, caller: &Caller, name: &str, id: &str) -> Result<()> {
        let account = caller.account()?;
        let name = if !name.is_empty() {
            name.to_string()
        } else if !id.is_empty() {
            let id = KeyPairId::parse(id)?;
            let all = self.store.keypairs().of(&account).collect().await?;
            match all.into_iter().find(|(_, v)| v.value.id == id) {
                Some((_, v)) => v.value.name,
                None => return Ok(()),
            }
        } else {
            return Err(Error::missing("KeyName"));
        };
        self.remove_keypair(&account, &name).await
    }
}

fn keypair_matches(k: &KeyPair, f: &Filter) -> bool {
    if let Some(m) = filters::tag_filter(f, &k.tags) {
        return m;
    }
    match f.name.as_str() {
        "key-name" => filters::any_matches(&f.values, &[&k.name]),
        "key-pair-id" => filters::any_matches(&f.values, &[k.id.as_str()]),
        "fingerprint" => filters::any_matches(&f.values, &[&k.fingerprint]),
        _ => false,
    }
}
