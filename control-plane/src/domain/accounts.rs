//! Accounts, access keys and request authentication.
//!
//! Secrets: HMAC verification (our gRPC signing and EC2 SigV4) needs the
//! plain secret, so access keys (`access-keys/<id>`) hold it sealed with the
//! operator's key ([`super::secrets`]) or, without one, as it is. Rotation,
//! revocation and disabling are in [`super::access_keys`]. The operator key and agent
//! enrolment tokens come from the configuration file.
//!
//! Each replica caches looked-up keys for [`KEY_CACHE_TTL`]. A signed gRPC
//! request (its signature covers the body digest) is accepted once: its
//! nonce is recorded in etcd for the skew window ([`super::nonces`]), after
//! the caller's per-account rate limit ([`crate::ratelimit`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use nubis_proto::auth::{AuthError, BodyDigest, SignedHeaders};

use crate::domain::model::{now_ms, AccessKey, Account, Principal};
use crate::domain::{Caller, Domain};
use crate::error::{Error, Result};
use crate::ids::AccountId;
use crate::store::Tx;

/// How long a replica trusts a cached access key.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(30);

/// Per-replica cache of access keys, the replica's nonce lease and the
/// gRPC per-account rate limiter.
#[derive(Debug)]
pub struct CredentialCache {
    keys: Mutex<HashMap<String, (Instant, AccessKey)>>,
    nonces: super::nonces::NonceLeases,
    limiter: crate::ratelimit::RateLimiter,
}

impl CredentialCache {
    /// A cache whose gRPC callers are limited to `limit` per account.
    pub fn new(limit: crate::ratelimit::RateLimit) -> Self {
        Self {
            keys: Mutex::default(),
            nonces: super::nonces::NonceLeases::default(),
            limiter: crate::ratelimit::RateLimiter::new(limit),
        }
    }

    /// Forgets a key (after rotation).
    pub fn forget(&self, key_id: &str) {
        if let Ok(mut k) = self.keys.lock() {
            k.remove(key_id);
        }
    }

    /// Keeps the cached keys for which `keep(id, key)` holds.
    pub fn retain(&self, mut keep: impl FnMut(&String, &AccessKey) -> bool) {
        if let Ok(mut k) = self.keys.lock() {
            k.retain(|id, (_, key)| keep(id, key));
        }
    }
}

/// Random string over `[A-Z0-9]`.
pub fn random_upper(n: usize) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    (0..n)
        .map(|_| A[(rand::random::<u8>() & 31) as usize] as char)
        .collect()
}

/// Random secret over `[A-Za-z0-9+/]`, 40 characters.
pub fn random_secret() -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    (0..40)
        .map(|_| A[(rand::random::<u8>() & 63) as usize] as char)
        .collect()
}

impl Domain {
    /// CreateAccount (operator): returns the account, key id and secret.
    pub async fn create_account(
        &self,
        caller: &Caller,
        name: &str,
    ) -> Result<(Account, String, String)> {
        caller.require_operator()?;
        if name.is_empty() || name.chars().count() > 64 || name.chars().any(|c| c.is_control()) {
            return Err(Error::invalid(
                "account names are 1 to 64 printable characters",
            ));
        }
        let mut pages = self.store.accounts().all();
        let mut taken = false;
        while let Some(page) = pages.next().await? {
            taken |= page.iter().any(|(_, a)| a.value.name == name);
        }
        if taken {
            return Err(Error::AlreadyExists {
                code: "InvalidAccount.Duplicate".into(),
                message: format!("an account named '{name}' already exists"),
            });
        }
        let id = AccountId::generate();
        let key_id = format!("NKIA{}", random_upper(16));
        let secret = random_secret();
        let account = Account {
            id: id.clone(),
            name: name.to_string(),
            created_ms: now_ms(),
            access_key_ids: vec![key_id.clone()],
            disabled: false,
        };
        let key = self.access_key_record(
            &key_id,
            &secret,
            Principal::Tenant {
                account: id.clone(),
            },
        )?;
        let mut tx = Tx::new();
        self.store.accounts().stage_create(&mut tx, &account)?;
        self.store.access_keys().stage_create(&mut tx, &key)?;
        if self.store.commit(tx).await?.is_none() {
            return Err(Error::Contention("account id".into()));
        }
        Ok((account, key_id, secret))
    }

    /// ListAccounts (operator).
    pub async fn list_accounts(&self, caller: &Caller) -> Result<Vec<Account>> {
        caller.require_operator()?;
        let all = self.store.accounts().all().collect().await?;
        Ok(all.into_iter().map(|(_, v)| v.value).collect())
    }

    /// Who owns `key_id` and its secret (also used by the EC2 gateway's
    /// SigV4 verification).
    pub async fn access_key_secret(&self, key_id: &str) -> Result<(Caller, String)> {
        let auth = &self.cfg.auth;
        if key_id == auth.admin_access_key_id {
            return Ok((Caller::Operator, auth.admin_secret_access_key.clone()));
        }
        if let Some(t) = auth.enrolment_tokens.iter().find(|t| t.id == key_id) {
            return Ok((Caller::Enrolment(t.id.clone()), t.secret.clone()));
        }
        if key_id.starts_with(nubis_proto::auth::HOST_TOKEN_PREFIX) {
            let digest = self.host_token_key(key_id).await?;
            return Ok((Caller::HostToken(key_id.to_string()), digest));
        }
        let cached = self.creds.keys.lock().ok().and_then(|k| {
            k.get(key_id)
                .filter(|(t, _)| t.elapsed() < KEY_CACHE_TTL)
                .map(|(_, v)| v.clone())
        });
        let key = match cached {
            Some(k) => k,
            None => {
                let k = self
                    .store
                    .access_keys()
                    .get(key_id)
                    .await?
                    .ok_or(Error::UnknownAccessKey)?
                    .value;
                if let Ok(mut c) = self.creds.keys.lock() {
                    c.insert(key_id.to_string(), (Instant::now(), k.clone()));
                }
                k
            }
        };
        if key.account_disabled {
            return Err(Error::AccountDisabled);
        }
        let secret = self.secret_of(&key)?;
        let caller = match key.principal {
            Principal::Tenant { account } => Caller::Tenant(account),
            Principal::Node { node } => Caller::Node(node),
        };
        Ok((caller, secret))
    }

    /// Records the first use of an EC2 request's SigV4 signature in the
    /// shared nonce store (the gateway's optional replay cache for mutating
    /// calls): `false` when it was used before, on any replica.
    pub async fn first_use_of_sigv4(&self, signature: &[u8]) -> Result<bool> {
        self.creds
            .nonces
            .record(&self.store, "sigv4", &hex::encode(signature))
            .await
    }

    /// Verifies a signed gRPC request to `method_path` whose body has
    /// digest `body`: the signature, then the caller's rate limit (tenants
    /// and the operator, per account; agents and enrolment tokens are not
    /// limited), then the nonce's first use (recorded in etcd, so a replay
    /// fails on every replica and after restarts).
    pub async fn authenticate(
        &self,
        method_path: &str,
        headers: &SignedHeaders,
        body: &BodyDigest,
    ) -> Result<Caller> {
        let (caller, secret) = self.access_key_secret(&headers.access_key_id).await?;
        headers
            .verify(&secret, method_path, body, SystemTime::now())
            .map_err(Error::AuthFailure)?;
        let account = match &caller {
            Caller::Tenant(a) => Some(a.to_string()),
            Caller::Operator => Some(crate::ids::AccountId::operator().to_string()),
            _ => None,
        };
        if let Some(a) = account {
            if !self.creds.limiter.try_acquire(&a) {
                return Err(Error::RateLimited);
            }
        }
        if !self
            .creds
            .nonces
            .record(&self.store, &headers.access_key_id, &headers.nonce)
            .await?
        {
            return Err(Error::AuthFailure(AuthError::Replayed));
        }
        Ok(caller)
    }
}
