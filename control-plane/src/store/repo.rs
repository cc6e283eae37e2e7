//! Repositories: typed access to one aggregate's records, so the domain
//! states rules instead of composing etcd keys and transactions.
//!
//! [`Repo`] is the generic table of one record kind; the aggregate
//! repositories ([`Store::instances`], [`Store::nodes`], …) pair it with the
//! keys of [`super::Keys`]. Every read decodes through
//! [`super::record`] (loud errors naming the key, max value size), every
//! listing is paged ([`super::MAX_PAGE`]), and updates are typed
//! compare-and-swap with bounded retry. Writes that must commit together
//! (placement: an instance, its assignment and a node's capacity claim) are
//! staged into one shared [`Tx`] with [`Tx::create`] / [`Tx::replace`].

use std::marker::PhantomData;

use super::{Page, Record, Store, Tx, Versioned, MAX_PAGE};
use crate::error::{Error, Result};

/// How many times [`Repo::update`] re-reads after a lost compare-and-swap.
pub const MAX_CAS_ATTEMPTS: u32 = 32;

/// The records of one kind (cheap: borrows the store).
#[derive(Debug)]
pub struct Repo<'a, R> {
    store: &'a Store,
    kind: PhantomData<fn() -> R>,
}

impl<R> Clone for Repo<'_, R> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<R> Copy for Repo<'_, R> {}

impl Store {
    /// The repository of records of kind `R`.
    pub fn repo<R: Record>(&self) -> Repo<'_, R> {
        Repo {
            store: self,
            kind: PhantomData,
        }
    }
}

impl<'a, R: Record> Repo<'a, R> {
    /// Reads one record (`None` = absent; a value that does not decode is an
    /// error naming its key, never an absence).
    pub async fn get(&self, key: &str) -> Result<Option<Versioned<R>>> {
        self.store.get(key).await
    }

    /// Creates `rec` at `key` if absent: `Ok(false)` when the key exists.
    pub async fn create(&self, key: &str, rec: &R) -> Result<bool> {
        let mut tx = Tx::new();
        tx.create(key, rec)?;
        Ok(self.store.commit(tx).await?.is_some())
    }

    /// Typed compare-and-swap update: `f` sees the current record and
    /// returns the new one (`None`: leave it as it is). Re-read and retried
    /// on a lost race, at most [`MAX_CAS_ATTEMPTS`] times. Returns the record
    /// as stored afterwards, `None` when there is none.
    pub async fn update<F>(&self, key: &str, mut f: F) -> Result<Option<R>>
    where
        F: FnMut(&R) -> Result<Option<R>>,
    {
        for attempt in 0..MAX_CAS_ATTEMPTS {
            let Some(cur) = self.get(key).await? else {
                return Ok(None);
            };
            let Some(next) = f(&cur.value)? else {
                return Ok(Some(cur.value));
            };
            let mut tx = Tx::new();
            tx.replace(key, &cur, &next)?;
            if self.store.commit(tx).await?.is_some() {
                return Ok(Some(next));
            }
            super::backoff(attempt).await;
        }
        Err(Error::Contention(key.to_string()))
    }

    /// Deletes `key` if it is still as `cur` was read: `Ok(false)` otherwise.
    pub async fn delete_if_unchanged(&self, key: &str, cur: &Versioned<R>) -> Result<bool> {
        let mut tx = Tx::new();
        tx.delete_if_unchanged(key, cur);
        Ok(self.store.commit(tx).await?.is_some())
    }

    /// One page (at most `limit`, capped at [`MAX_PAGE`]) of the records
    /// under `prefix` with keys after `after`.
    pub async fn page(&self, prefix: &str, after: Option<&str>, limit: i64) -> Result<Page<R>> {
        self.store.list_page(prefix, after, limit).await
    }

    /// Pages through every record under `prefix` ([`MAX_PAGE`] at a time).
    pub fn pages(&self, prefix: impl Into<String>) -> Pages<'a, R> {
        Pages {
            repo: *self,
            prefix: prefix.into(),
            after: None,
            done: false,
        }
    }
}

/// Paged iteration over a prefix: each [`Pages::next`] reads one page.
/// Records written while iterating may or may not be seen (each page is its
/// own read), as with any paged listing.
#[derive(Debug)]
pub struct Pages<'a, R> {
    repo: Repo<'a, R>,
    prefix: String,
    after: Option<String>,
    done: bool,
}

impl<R: Record> Pages<'_, R> {
    /// Every remaining record (for callers that answer with the whole set,
    /// e.g. a Describe call: memory grows with the result, requests stay
    /// bounded).
    pub async fn collect(mut self) -> Result<Vec<(String, Versioned<R>)>> {
        let mut out = Vec::new();
        while let Some(page) = self.next().await? {
            out.extend(page);
        }
        Ok(out)
    }

    /// The next page, `None` after the last.
    pub async fn next(&mut self) -> Result<Option<Vec<(String, Versioned<R>)>>> {
        if self.done {
            return Ok(None);
        }
        let page = self
            .repo
            .page(&self.prefix, self.after.as_deref(), MAX_PAGE)
            .await?;
        self.after = page.items.last().map(|(k, _)| k.clone());
        self.done = !page.more || self.after.is_none();
        if page.items.is_empty() {
            return Ok(None);
        }
        Ok(Some(page.items))
    }
}

/// The aggregate repositories: each owns its records' keys.
impl Store {
    /// Instances (`instances/<account>/<i-…>`).
    pub fn instances(&self) -> Instances<'_> {
        Instances(self)
    }
    /// Assignments of nodes (`desired/<node>/a/<i-…>`).
    pub fn assignments(&self) -> Assignments<'_> {
        Assignments(self)
    }
    /// ClientToken records (`client-tokens/<account>/<hex token>`).
    pub fn client_tokens(&self) -> ClientTokens<'_> {
        ClientTokens(self)
    }
    /// Large reservations in progress (`pending-reservations/<r-…>`).
    pub fn pending_reservations(&self) -> PendingReservations<'_> {
        PendingReservations(self)
    }
    /// Images (`images/<ami-…>`).
    pub fn images(&self) -> Images<'_> {
        Images(self)
    }
    /// Key pairs (`keypairs/<account>/<hex name>`).
    pub fn keypairs(&self) -> KeyPairs<'_> {
        KeyPairs(self)
    }
    /// Accounts (`accounts/<id>`).
    pub fn accounts(&self) -> Accounts<'_> {
        Accounts(self)
    }
}

use crate::domain::model::{Account, Assignment, ClientTokenRecord, Image, Instance, KeyPair};
use crate::domain::reservations::PendingReservation;
use crate::ids::{AccountId, ImageId, InstanceId, NodeId, ReservationId};

/// Instances.
#[derive(Debug, Clone, Copy)]
pub struct Instances<'a>(&'a Store);

impl<'a> Instances<'a> {
    /// The key of an instance.
    pub fn key(&self, account: &AccountId, id: &InstanceId) -> String {
        self.0.keys().instance(account, id)
    }
    /// Reads one instance.
    pub async fn get(
        &self,
        account: &AccountId,
        id: &InstanceId,
    ) -> Result<Option<Versioned<Instance>>> {
        self.0.repo().get(&self.key(account, id)).await
    }
    /// Every instance, page by page.
    pub fn all(&self) -> Pages<'a, Instance> {
        self.0.repo().pages(self.0.keys().all_instances())
    }
    /// One page of instances under `prefix` (all instances, or one
    /// account's) after `after` (a key).
    pub async fn page_under(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Page<Instance>> {
        self.0.repo().page(prefix, after, limit).await
    }
    /// An account's instances, page by page.
    pub fn of(&self, account: &AccountId) -> Pages<'a, Instance> {
        self.0
            .repo()
            .pages(self.0.keys().account_instances(account))
    }
}

/// Assignments.
#[derive(Debug, Clone, Copy)]
pub struct Assignments<'a>(&'a Store);

impl<'a> Assignments<'a> {
    /// The key of an instance's assignment on a node.
    pub fn key(&self, node: &NodeId, id: &InstanceId) -> String {
        self.0.keys().assignment(node, id)
    }
    /// Reads one assignment.
    pub async fn get(
        &self,
        node: &NodeId,
        id: &InstanceId,
    ) -> Result<Option<Versioned<Assignment>>> {
        self.0.repo().get(&self.key(node, id)).await
    }
    /// A node's assignments, page by page.
    pub fn of_node(&self, node: &NodeId) -> Pages<'a, Assignment> {
        self.0.repo().pages(self.0.keys().assignments(node))
    }
}

/// ClientToken records.
#[derive(Debug, Clone, Copy)]
pub struct ClientTokens<'a>(&'a Store);

impl<'a> ClientTokens<'a> {
    /// The key of an account's token.
    pub fn key(&self, account: &AccountId, token: &str) -> String {
        self.0.keys().client_token(account, token)
    }
    /// Reads one token record.
    pub async fn get(
        &self,
        account: &AccountId,
        token: &str,
    ) -> Result<Option<Versioned<ClientTokenRecord>>> {
        self.0.repo().get(&self.key(account, token)).await
    }
    /// Every token record, page by page.
    pub fn all(&self) -> Pages<'a, ClientTokenRecord> {
        self.0.repo().pages(self.0.keys().all_client_tokens())
    }
}

/// Large reservations in progress.
#[derive(Debug, Clone, Copy)]
pub struct PendingReservations<'a>(&'a Store);

impl<'a> PendingReservations<'a> {
    /// The key of a reservation's progress record.
    pub fn key(&self, id: &ReservationId) -> String {
        self.0.keys().pending_reservation(id)
    }
    /// Reads one progress record.
    pub async fn get(&self, id: &ReservationId) -> Result<Option<Versioned<PendingReservation>>> {
        self.0.repo().get(&self.key(id)).await
    }
    /// Every progress record, page by page.
    pub fn all(&self) -> Pages<'a, PendingReservation> {
        self.0.repo().pages(self.0.keys().pending_reservations())
    }
}

/// Images.
#[derive(Debug, Clone, Copy)]
pub struct Images<'a>(&'a Store);

impl<'a> Images<'a> {
    /// The key of an image.
    pub fn key(&self, id: &ImageId) -> String {
        self.0.keys().image(id)
    }
    /// Reads one image.
    pub async fn get(&self, id: &ImageId) -> Result<Option<Versioned<Image>>> {
        self.0.repo().get(&self.key(id)).await
    }
    /// Registers an image: `Ok(false)` when its id exists.
    pub async fn create(&self, image: &Image) -> Result<bool> {
        self.0.repo().create(&self.key(&image.id), image).await
    }
    /// Every image, page by page.
    pub fn all(&self) -> Pages<'a, Image> {
        self.0.repo().pages(self.0.keys().images())
    }
}

/// Key pairs.
#[derive(Debug, Clone, Copy)]
pub struct KeyPairs<'a>(&'a Store);

impl<'a> KeyPairs<'a> {
    /// The key of an account's key pair.
    pub fn key(&self, account: &AccountId, name: &str) -> String {
        self.0.keys().keypair(account, name)
    }
    /// Reads one key pair.
    pub async fn get(&self, account: &AccountId, name: &str) -> Result<Option<Versioned<KeyPair>>> {
        self.0.repo().get(&self.key(account, name)).await
    }
    /// Creates a key pair: `Ok(false)` when the account has one of that name.
    pub async fn create(&self, account: &AccountId, kp: &KeyPair) -> Result<bool> {
        self.0.repo().create(&self.key(account, &kp.name), kp).await
    }
    /// An account's key pairs, page by page.
    pub fn of(&self, account: &AccountId) -> Pages<'a, KeyPair> {
        self.0.repo().pages(self.0.keys().account_keypairs(account))
    }
}

/// Accounts.
#[derive(Debug, Clone, Copy)]
pub struct Accounts<'a>(&'a Store);

impl<'a> Accounts<'a> {
    /// The key of an account.
    pub fn key(&self, id: &AccountId) -> String {
        self.0.keys().account(id)
    }
    /// Reads one account.
    pub async fn get(&self, id: &AccountId) -> Result<Option<Versioned<Account>>> {
        self.0.repo().get(&self.key(id)).await
    }
    /// Every account, page by page.
    pub fn all(&self) -> Pages<'a, Account> {
        self.0.repo().pages(self.0.keys().accounts())
    }
}
