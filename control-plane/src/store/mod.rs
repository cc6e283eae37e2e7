//! The etcd store: the key schema ([`keys`]), versioned records
//! ([`record`]), typed reads and paged listing, optimistic transactions on
//! `mod_revision` ([`Tx`]), the repositories the domain uses ([`repo`]),
//! leases and prefix watches that survive compaction ([`watch`]), and
//! routing to live etcd members only ([`members`]).
//!
//! Every mutation in Nubis is a [`Tx`]: a list of compares (a key's
//! `mod_revision` is what we read, `0` for create-if-absent) and the writes
//! that depend on them. A failed compare means someone else won; callers
//! re-read and retry (bounded).

pub mod keys;
pub mod members;
pub mod record;
pub mod repo;
pub mod repo_asg;
pub mod repo_public;
pub mod repo_vpc;
pub mod watch;

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
};

use crate::error::{Error, Result};
pub use keys::Keys;
pub use record::{decode, Record, MAX_VALUE_BYTES};
use record::{decode_record, encode, encode_over, Newer};

/// The most records one listing request reads: every listing is paged.
pub const MAX_PAGE: i64 = 500;

/// The largest etcd response this client decodes (tonic's default,
/// stated here so the paging below is written against it): 4 MiB.
/// A page is a count of keys, not of bytes, so a page of large records can
/// exceed it (500 images of 50 maximum-size tags each are ~38 MiB). Such a
/// response is refused by the client ([`too_large`]); the read is asked
/// again for half as many keys, down to one key, which always fits (one
/// value is at most [`MAX_VALUE_BYTES`], 1 MiB). A paged listing keeps the
/// smaller page size for its next pages.
pub const MAX_RESPONSE_BYTES: usize = 4 << 20;

/// True when etcd's answer was refused for being larger than
/// [`MAX_RESPONSE_BYTES`] (tonic: `OutOfRange` "decoded message length too
/// large"; `ResourceExhausted` from servers or proxies that check it).
pub fn too_large(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => matches!(
            s.code(),
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
        ),
        _ => false,
    }
}

/// A decoded value with the `mod_revision` it was read at.
#[derive(Debug, Clone)]
pub struct Versioned<T> {
    /// The record.
    pub value: T,
    /// The key's mod_revision (for compare-and-swap).
    pub mod_revision: i64,
    /// What a newer schema stored beyond what this code knows (kept when the
    /// record is rewritten with [`Tx::replace`]).
    pub newer: Option<Newer>,
}

impl<T> Versioned<T> {
    /// A record read at `mod_revision`, written by this code's schema or older.
    pub fn new(value: T, mod_revision: i64) -> Self {
        Self {
            value,
            mod_revision,
            newer: None,
        }
    }
}

impl<T: Record> Versioned<T> {
    fn decode(key: &[u8], value: &[u8], mod_revision: i64) -> Result<Self> {
        let (value, newer) = decode_record(key, value)?;
        Ok(Self {
            value,
            mod_revision,
            newer,
        })
    }
}

/// One page of a listing: records in key order, the store revision of the
/// read, and whether more keys follow.
#[derive(Debug)]
pub struct Page<T> {
    /// `(key, record)` in key order.
    pub items: Vec<(String, Versioned<T>)>,
    /// Store revision of the read.
    pub revision: i64,
    /// True when keys after the last one remain (ask again with it as `after`).
    pub more: bool,
    /// The page size the read ended with: the asked one, or less when the
    /// records were too large for one response (see [`MAX_RESPONSE_BYTES`]).
    pub limit: i64,
}

/// A handle on etcd (cheap to clone).
#[derive(Clone)]
pub struct Store {
    client: Client,
    keys: Keys,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("keys", &self.keys).finish()
    }
}

/// How the control plane proves itself to etcd and verifies it: client TLS
/// (`[etcd.tls]`) and an etcd user (`[etcd] username`, `password_file`), read
/// from the operator's files by [`EtcdSecurity::load`].
#[derive(Clone, Default)]
pub struct EtcdSecurity {
    /// Client TLS, if any.
    pub tls: Option<EtcdTls>,
    /// User name and password, if etcd has auth enabled.
    pub user: Option<(String, String)>,
}

impl std::fmt::Debug for EtcdSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdSecurity")
            .field("tls", &self.tls.is_some())
            .field("user", &self.user.as_ref().map(|(u, _)| u))
            .finish()
    }
}

/// Client TLS material for etcd (PEM).
#[derive(Clone)]
pub struct EtcdTls {
    /// CA of the members' server certificates.
    pub ca_pem: Vec<u8>,
    /// Client certificate and key, for `--client-cert-auth`.
    pub identity_pem: Option<(Vec<u8>, Vec<u8>)>,
    /// Name verified in the server certificate, instead of the endpoint's host.
    pub server_name: Option<String>,
}

impl std::fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdTls")
            .field("identity", &self.identity_pem.is_some())
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl EtcdSecurity {
    /// Reads the files `[etcd]` names. A missing or unreadable file is an
    /// error naming it; an empty password file too.
    pub fn load(cfg: &crate::config::EtcdConfig) -> Result<Self> {
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| {
                Error::invalid(format!("configuration: etcd: reading {}: {e}", p.display()))
            })
        };
        let tls = match &cfg.tls {
            None => None,
            Some(t) => Some(EtcdTls {
                ca_pem: read(&t.ca_file)?,
                identity_pem: match (&t.cert_file, &t.key_file) {
                    (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
                    _ => None,
                },
                server_name: t.server_name.clone(),
            }),
        };
        let user = match (&cfg.username, &cfg.password_file) {
            (Some(u), Some(p)) => {
                let text = String::from_utf8(read(p)?).map_err(|_| {
                    Error::invalid(format!("configuration: etcd: {} is not UTF-8", p.display()))
                })?;
                let password = text.lines().next().unwrap_or("").to_string();
                if password.is_empty() {
                    return Err(Error::invalid(format!(
                        "configuration: etcd: {} holds no password",
                        p.display()
                    )));
                }
                Some((u.clone(), password))
            }
            _ => None,
        };
        Ok(Self { tls, user })
    }
}

impl Store {
    /// Connects to etcd. Requests require a leader (no stale reads from a
    /// partitioned member).
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<Self> {
        Self::connect_secure(endpoints, prefix, &EtcdSecurity::default()).await
    }

    /// [`Store::connect`] with client TLS and/or an etcd user.
    pub async fn connect_secure(
        endpoints: &[String],
        prefix: &str,
        security: &EtcdSecurity,
    ) -> Result<Self> {
        let mut opts = ConnectOptions::new()
            .with_require_leader(true)
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(10))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        if let Some(tls) = &security.tls {
            let mut t = etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(&tls.ca_pem));
            if let Some((cert, key)) = &tls.identity_pem {
                t = t.identity(etcd_client::Identity::from_pem(cert, key));
            }
            if let Some(name) = &tls.server_name {
                t = t.domain_name(name.clone());
            }
            opts = opts.with_tls(t);
        }
        if let Some((user, password)) = &security.user {
            opts = opts.with_user(user.clone(), password.clone());
        }
        let client = Client::connect(endpoints, Some(opts)).await?;
        // With several members, route requests only to those that answer.
        let _prober = members::spawn(client.clone(), endpoints.to_vec());
        Ok(Self {
            client,
            keys: Keys::new(prefix),
        })
    }

    /// The key schema.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The raw client (for elections and watches).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Reads one JSON record.
    pub async fn get<T: Record>(&self, key: &str) -> Result<Option<Versioned<T>>> {
        let resp = self.client.kv_client().get(key, None).await?;
        match resp.kvs().first() {
            None => Ok(None),
            Some(kv) => Ok(Some(Versioned::decode(
                kv.key(),
                kv.value(),
                kv.mod_revision(),
            )?)),
        }
    }

    /// Reads one raw value.
    pub async fn get_raw(&self, key: &str) -> Result<Option<(Vec<u8>, i64)>> {
        let resp = self.client.kv_client().get(key, None).await?;
        Ok(resp
            .kvs()
            .first()
            .map(|kv| (kv.value().to_vec(), kv.mod_revision())))
    }

    /// Reads many keys in one round trip (a read-only txn); missing keys are `None`.
    pub async fn get_many<T: Record>(&self, keys: &[String]) -> Result<Vec<Option<Versioned<T>>>> {
        let raw = self.get_many_kv(keys).await?;
        let mut out = Vec::with_capacity(raw.len());
        for (k, r) in keys.iter().zip(raw) {
            out.push(match r {
                None => None,
                Some((v, rev)) => Some(Versioned::decode(k.as_bytes(), &v, rev)?),
            });
        }
        Ok(out)
    }

    /// Reads many raw values (value, mod_revision) in one round trip per 100 keys.
    pub async fn get_many_raw(&self, keys: &[String]) -> Result<Vec<Option<(Vec<u8>, i64)>>> {
        self.get_many_kv(keys).await
    }

    /// Raw values of `keys` in read-only transactions of at most 100 gets
    /// (etcd limits operations per txn, default 128); a chunk whose answer
    /// is over [`MAX_RESPONSE_BYTES`] is read again in halves.
    async fn get_many_kv(&self, keys: &[String]) -> Result<Vec<Option<(Vec<u8>, i64)>>> {
        let mut out = Vec::with_capacity(keys.len());
        let mut chunk = 100usize;
        let mut at = 0usize;
        while at < keys.len() {
            let end = (at + chunk).min(keys.len());
            let ops: Vec<TxnOp> = keys[at..end]
                .iter()
                .map(|k| TxnOp::get(k.as_str(), None))
                .collect();
            let resp = match self.client.kv_client().txn(Txn::new().and_then(ops)).await {
                Ok(r) => r,
                Err(e) if too_large(&e) && chunk > 1 => {
                    chunk /= 2;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            for r in resp.op_responses() {
                match r {
                    etcd_client::TxnOpResponse::Get(g) => out.push(
                        g.kvs()
                            .first()
                            .map(|kv| (kv.value().to_vec(), kv.mod_revision())),
                    ),
                    _ => return Err(Error::Internal("unexpected txn response".into())),
                }
            }
            at = end;
        }
        Ok(out)
    }

    /// Lists JSON records under a prefix, sorted by key, and the store
    /// revision of the read: every page of it (at most [`MAX_PAGE`] records
    /// a request, all read at the first page's revision, so the whole is one
    /// consistent snapshot), for the callers that need a whole prefix at once.
    /// Prefer [`repo::Repo::pages`] where records can be handled page by page.
    pub async fn list<T: Record>(
        &self,
        prefix: &str,
    ) -> Result<(Vec<(String, Versioned<T>)>, i64)> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        let mut at: Option<i64> = None;
        let mut limit = MAX_PAGE;
        loop {
            let page = self
                .read_page::<T>(prefix, after.as_deref(), limit, at)
                .await?;
            limit = page.limit;
            let rev = *at.get_or_insert(page.revision);
            after = page.items.last().map(|(k, _)| k.clone());
            out.extend(page.items);
            if !page.more || after.is_none() {
                return Ok((out, rev));
            }
        }
    }

    /// Every raw `(key, value, mod_revision)` under `prefix` and the
    /// revision they were read at: pages of [`MAX_PAGE`], all read at the
    /// first page's revision (one consistent snapshot, e.g. to watch from).
    pub async fn list_raw(
        &self,
        prefix: &str,
    ) -> std::result::Result<(Vec<(String, Vec<u8>, i64)>, i64), etcd_client::Error> {
        let end = prefix_end(prefix);
        let mut out = Vec::new();
        let mut start = prefix.as_bytes().to_vec();
        let mut at: Option<i64> = None;
        let mut limit = MAX_PAGE;
        loop {
            let (resp, used) = self.range(&start, &end, limit, at).await?;
            limit = used;
            let rev = *at.get_or_insert(resp.header().map(|h| h.revision()).unwrap_or(0));
            for kv in resp.kvs() {
                out.push((
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    kv.value().to_vec(),
                    kv.mod_revision(),
                ));
            }
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => return Ok((out, rev)),
            }
        }
    }

    /// One range read of at most `limit` keys in `[start, end)` (at
    /// `revision` when given), asked again for half as many keys while the
    /// answer is over [`MAX_RESPONSE_BYTES`]. Returns the response and the
    /// limit it was read with.
    async fn range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: i64,
        revision: Option<i64>,
    ) -> std::result::Result<(etcd_client::GetResponse, i64), etcd_client::Error> {
        let mut limit = limit.clamp(1, MAX_PAGE);
        loop {
            // No explicit sort: a range comes back in key order anyway, and
            // any sort order makes etcd (3.4) read the whole range before
            // applying the limit (etcd 3.4.23 measured through its JSON
            // gateway: a page of 100 of 10,000 1-KB keys took 23-27 ms with
            // a key-ascending sort, 7-9 ms without; Go's clientv3 drops that
            // sort for this reason).
            let mut opts = GetOptions::new().with_range(end).with_limit(limit);
            if let Some(rev) = revision {
                opts = opts.with_revision(rev);
            }
            match self.client.kv_client().get(start, Some(opts)).await {
                Ok(resp) => return Ok((resp, limit)),
                Err(e) if too_large(&e) && limit > 1 => {
                    tracing::debug!(limit, "etcd page over the response cap; halving");
                    limit /= 2;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Lists up to `limit` (0 or over [`MAX_PAGE`] = `MAX_PAGE`) records
    /// under `prefix` with keys strictly greater than `after`, sorted by key.
    pub async fn list_from<T: Record>(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<(Vec<(String, Versioned<T>)>, i64)> {
        let page = self.list_page(prefix, after, limit).await?;
        Ok((page.items, page.revision))
    }

    /// One page of records under `prefix` after `after` (see [`Page`]).
    pub async fn list_page<T: Record>(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Page<T>> {
        self.read_page(prefix, after, limit, None).await
    }

    async fn read_page<T: Record>(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: i64,
        at_revision: Option<i64>,
    ) -> Result<Page<T>> {
        let limit = if limit <= 0 {
            MAX_PAGE
        } else {
            limit.min(MAX_PAGE)
        };
        let end = prefix_end(prefix);
        let start = match after {
            Some(a) => {
                let mut k = a.as_bytes().to_vec();
                k.push(0);
                k
            }
            None => prefix.as_bytes().to_vec(),
        };
        let (resp, limit) = self.range(&start, &end, limit, at_revision).await?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        let mut items = Vec::with_capacity(resp.kvs().len());
        for kv in resp.kvs() {
            items.push((
                String::from_utf8_lossy(kv.key()).into_owned(),
                Versioned::decode(kv.key(), kv.value(), kv.mod_revision())?,
            ));
        }
        Ok(Page {
            items,
            revision,
            more: resp.more(),
            limit,
        })
    }

    /// Lists up to `limit` records with keys in `[start, end)`, in key
    /// order, in requests of at most [`MAX_PAGE`] (0 or less = one page).
    pub async fn list_range<T: Record>(
        &self,
        start: &str,
        end: &str,
        limit: i64,
    ) -> Result<Vec<(String, Versioned<T>)>> {
        let want = if limit <= 0 { MAX_PAGE } else { limit };
        let mut out = Vec::new();
        let mut from = start.as_bytes().to_vec();
        let mut page = MAX_PAGE;
        while (out.len() as i64) < want {
            let (resp, used) = self
                .range(
                    &from,
                    end.as_bytes(),
                    (want - out.len() as i64).min(page),
                    None,
                )
                .await?;
            page = used;
            for kv in resp.kvs() {
                out.push((
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    Versioned::decode(kv.key(), kv.value(), kv.mod_revision())?,
                ));
            }
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => break,
            }
        }
        Ok(out)
    }

    /// The first key in `[start, end)`, if any (keys only, one key read).
    pub async fn first_key(&self, start: &[u8], end: &[u8]) -> Result<Option<String>> {
        let opts = GetOptions::new()
            .with_range(end)
            .with_limit(1)
            .with_keys_only();
        let resp = self.client.kv_client().get(start, Some(opts)).await?;
        Ok(resp
            .kvs()
            .first()
            .map(|kv| String::from_utf8_lossy(kv.key()).into_owned()))
    }

    /// Deletes every key in `[start, end)` unconditionally (not fenced: only
    /// for deletions that are idempotent and safe from any replica, such as
    /// expired events). Returns how many keys were deleted.
    pub async fn delete_range(&self, start: &str, end: &str) -> Result<i64> {
        let opts = etcd_client::DeleteOptions::new().with_range(end);
        let resp = self.client.kv_client().delete(start, Some(opts)).await?;
        Ok(resp.deleted())
    }

    /// Counts keys under a prefix.
    pub async fn count(&self, prefix: &str) -> Result<i64> {
        let opts = GetOptions::new()
            .with_range(prefix_end(prefix))
            .with_count_only();
        let resp = self.client.kv_client().get(prefix, Some(opts)).await?;
        Ok(resp.count())
    }

    /// Grants a lease of `ttl` seconds.
    pub async fn grant_lease(&self, ttl: i64) -> Result<i64> {
        Ok(self.client.lease_client().grant(ttl, None).await?.id())
    }

    /// Renews a lease once. Returns the remaining TTL, or `None` when the
    /// lease no longer exists (expired or revoked).
    pub async fn keep_alive_once(&self, lease: i64) -> Result<Option<i64>> {
        let (mut keeper, mut stream) = self.client.lease_client().keep_alive(lease).await?;
        keeper.keep_alive().await?;
        match stream.message().await? {
            Some(resp) if resp.ttl() > 0 => Ok(Some(resp.ttl())),
            _ => Ok(None),
        }
    }

    /// Revokes a lease (its keys disappear). A lease already gone is fine.
    pub async fn revoke_lease(&self, lease: i64) -> Result<()> {
        match self.client.lease_client().revoke(lease).await {
            Ok(_) => Ok(()),
            Err(etcd_client::Error::GRpcStatus(s)) if s.message().contains("not found") => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Puts a JSON value attached to a lease, unconditionally.
    pub async fn put_with_lease<T: Record>(&self, key: &str, value: &T, lease: i64) -> Result<()> {
        self.client
            .kv_client()
            .put(
                key,
                encode(value)?,
                Some(PutOptions::new().with_lease(lease)),
            )
            .await?;
        Ok(())
    }

    /// Commits a transaction: `Ok(Some(revision))` (every key written now
    /// has this mod_revision), `Ok(None)` when a compare failed.
    /// Inside a [`Fence::scope`] whose leadership is lost, `Err(Error::Fenced)`
    /// instead: no retry of the caller's can succeed, so it must stop rather
    /// than take the failure for a lost race and try again.
    pub async fn commit(&self, tx: Tx) -> Result<Option<i64>> {
        let fence = FENCE.try_with(Fence::clone).ok();
        let mut compares = tx.compares;
        let mut otherwise = Vec::new();
        if let Some(f) = &fence {
            compares.push(f.compare());
            // Read on failure, in the same round trip: was it the fence?
            otherwise.push(TxnOp::get(f.key.clone(), None));
        }
        let txn = Txn::new()
            .when(compares)
            .and_then(tx.ops)
            .or_else(otherwise);
        let started = std::time::Instant::now();
        let resp = self.client.kv_client().txn(txn).await;
        let outcome = match &resp {
            Ok(r) if r.succeeded() => "committed",
            Ok(_) => "compare-failed",
            Err(_) => "error",
        };
        crate::metrics::global().etcd_txn(outcome, started.elapsed());
        let resp = resp?;
        if resp.succeeded() {
            return Ok(Some(resp.header().map(|h| h.revision()).unwrap_or(0)));
        }
        if let Some(f) = &fence {
            let held = resp.op_responses().iter().any(|op| match op {
                TxnOpResponse::Get(g) => g
                    .kvs()
                    .first()
                    .is_some_and(|kv| kv.create_revision() == f.create_revision),
                _ => false,
            });
            if !held {
                return Err(Error::Fenced);
            }
        }
        Ok(None)
    }
}

tokio::task_local! {
    static FENCE: Fence;
}

/// A leadership fence: the election key a leader was elected with and that
/// key's create revision. Every transaction committed inside
/// [`Fence::scope`] (on that task) also compares the key's create revision,
/// so a leader that lost its key (lease expired while it was paused, or it
/// resigned) writes nothing, even if it has not noticed yet; a new leader's
/// key has a new create revision. Such a commit fails with
/// [`Error::Fenced`], so the deposed leader's retry loops stop at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    key: Vec<u8>,
    create_revision: i64,
}

impl Fence {
    /// The fence of the election key `key` created at `create_revision`.
    pub fn new(key: impl Into<Vec<u8>>, create_revision: i64) -> Self {
        Self {
            key: key.into(),
            create_revision,
        }
    }

    /// Runs `f` with every [`Store::commit`] it makes on this task fenced.
    pub async fn scope<F: std::future::Future>(self, f: F) -> F::Output {
        FENCE.scope(self, f).await
    }

    fn compare(&self) -> Compare {
        Compare::create_revision(self.key.clone(), CompareOp::Equal, self.create_revision)
    }
}

/// Randomised, growing pause after a lost compare-and-swap.
pub async fn backoff(attempt: u32) {
    let max = 2u64.saturating_pow(attempt.min(6)).min(50);
    let ms = rand::random::<u64>() % (max + 1);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// The smallest key greater than every key with this prefix.
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// An optimistic transaction being built: compares plus writes.
#[derive(Default)]
pub struct Tx {
    compares: Vec<Compare>,
    ops: Vec<TxnOp>,
}

impl std::fmt::Debug for Tx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tx")
            .field("compares", &self.compares.len())
            .field("ops", &self.ops.len())
            .finish()
    }
}

impl Tx {
    /// An empty transaction.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requires `key` to still be at `mod_revision` (0 = absent).
    pub fn expect_rev(&mut self, key: &str, mod_revision: i64) -> &mut Self {
        self.compares
            .push(Compare::mod_revision(key, CompareOp::Equal, mod_revision));
        self
    }

    /// Requires `key` to be absent (create-if-absent).
    pub fn expect_absent(&mut self, key: &str) -> &mut Self {
        self.expect_rev(key, 0)
    }

    /// Requires `key` to exist.
    pub fn expect_present(&mut self, key: &str) -> &mut Self {
        self.compares
            .push(Compare::mod_revision(key, CompareOp::Greater, 0));
        self
    }

    /// Writes a JSON record.
    pub fn put<T: Record>(&mut self, key: &str, value: &T) -> Result<&mut Self> {
        self.ops.push(TxnOp::put(key, encode(value)?, None));
        Ok(self)
    }

    /// Requires `key` to be absent and writes `value` (create).
    pub fn create<T: Record>(&mut self, key: &str, value: &T) -> Result<&mut Self> {
        self.expect_absent(key).put(key, value)
    }

    /// Requires `key` to be unchanged since `cur` was read and writes `value`
    /// over it, keeping what a newer schema stored there (typed CAS update).
    pub fn replace<T: Record>(
        &mut self,
        key: &str,
        cur: &Versioned<T>,
        value: &T,
    ) -> Result<&mut Self> {
        self.expect_rev(key, cur.mod_revision);
        self.ops.push(TxnOp::put(
            key,
            encode_over(value, cur.newer.as_ref())?,
            None,
        ));
        Ok(self)
    }

    /// Requires `key` to be unchanged since `cur` was read and deletes it.
    pub fn delete_if_unchanged<T>(&mut self, key: &str, cur: &Versioned<T>) -> &mut Self {
        self.expect_rev(key, cur.mod_revision).delete(key)
    }

    /// Writes a JSON record attached to a lease.
    pub fn put_with_lease<T: Record>(
        &mut self,
        key: &str,
        value: &T,
        lease: i64,
    ) -> Result<&mut Self> {
        self.ops.push(TxnOp::put(
            key,
            encode(value)?,
            Some(PutOptions::new().with_lease(lease)),
        ));
        Ok(self)
    }

    /// Writes raw bytes attached to a lease.
    pub fn put_raw_with_lease(&mut self, key: &str, value: Vec<u8>, lease: i64) -> &mut Self {
        self.ops.push(TxnOp::put(
            key,
            value,
            Some(PutOptions::new().with_lease(lease)),
        ));
        self
    }

    /// Writes raw bytes.
    pub fn put_raw(&mut self, key: &str, value: Vec<u8>) -> &mut Self {
        self.ops.push(TxnOp::put(key, value, None));
        self
    }

    /// Deletes a key.
    pub fn delete(&mut self, key: &str) -> &mut Self {
        self.ops.push(TxnOp::delete(key, None));
        self
    }

    /// Deletes every key under `prefix` (one write).
    pub fn delete_prefix(&mut self, prefix: &str) -> &mut Self {
        self.ops.push(TxnOp::delete(
            prefix,
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        ));
        self
    }

    /// Number of writes so far.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}
