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

use super::keys::{DesiredKey, NodeKey};
use super::{Page, Record, Store, Tx, Versioned, MAX_PAGE};
use crate::domain::ipam::{AddressClaim, Subnet};
use crate::domain::liveness::LostConfirmation;
use crate::domain::model::{
    AccessKey, Account, Assignment, ClientTokenRecord, ConsoleRecord, ConsoleRequest,
    EnrolmentTokenRecord, Image, Instance, KeyPair, Node, NodeAlive, NodeAlloc,
};
use crate::domain::reservations::PendingReservation;
use crate::error::{Error, Result};
use crate::ids::{AccountId, ImageId, InstanceId, NodeId, ReservationId, SubnetId};

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
            limit: MAX_PAGE,
        }
    }
}

/// Paged iteration over a prefix: each [`Pages::next`] reads one page.
/// Records written while iterating may or may not be seen (each page is its
/// own read), as with any paged listing. A page of records too large for
/// one etcd response is read in smaller pages, and the smaller size is kept
/// for the pages after it ([`super::MAX_RESPONSE_BYTES`]).
#[derive(Debug)]
pub struct Pages<'a, R> {
    repo: Repo<'a, R>,
    prefix: String,
    after: Option<String>,
    done: bool,
    limit: i64,
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
            .page(&self.prefix, self.after.as_deref(), self.limit)
            .await?;
        self.limit = page.limit;
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
    /// Stages a new token record (the token must be unused).
    pub fn stage_create(
        &self,
        tx: &mut Tx,
        account: &AccountId,
        token: &str,
        rec: &ClientTokenRecord,
    ) -> Result<()> {
        tx.create(&self.key(account, token), rec)?;
        Ok(())
    }
    /// Stages a token record (overwriting).
    pub fn stage_put(
        &self,
        tx: &mut Tx,
        account: &AccountId,
        token: &str,
        rec: &ClientTokenRecord,
    ) -> Result<()> {
        tx.put(&self.key(account, token), rec)?;
        Ok(())
    }
    /// Stages the removal of a token record.
    pub fn stage_delete(&self, tx: &mut Tx, account: &AccountId, token: &str) {
        tx.delete(&self.key(account, token));
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
    /// Stages a new progress record (its id must be free).
    pub fn stage_create(&self, tx: &mut Tx, rec: &PendingReservation) -> Result<()> {
        tx.create(&self.key(&rec.reservation_id), rec)?;
        Ok(())
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
    /// Stages a new account (its id must be free).
    pub fn stage_create(&self, tx: &mut Tx, account: &Account) -> Result<()> {
        tx.create(&self.key(&account.id), account)?;
        Ok(())
    }
    /// Every account, page by page.
    pub fn all(&self) -> Pages<'a, Account> {
        self.0.repo().pages(self.0.keys().accounts())
    }
}

/// More aggregate repositories.
impl Store {
    /// The node aggregate: records (`n/rec`), allocations (`n/alloc`),
    /// liveness (`n/alive`), the host index (`node-hosts`), address blocks
    /// (`ip-blocks`) and lost-node confirmations (`lost-confirmations`).
    pub fn nodes(&self) -> Nodes<'_> {
        Nodes(self)
    }
    /// Console output (`console/<i-…>`) and console requests
    /// (`desired/<node>/c/<request>`).
    pub fn consoles(&self) -> Consoles<'_> {
        Consoles(self)
    }
    /// Raw user data of reservations (`user-data/<r-…>`).
    pub fn user_data(&self) -> UserData<'_> {
        UserData(self)
    }
    /// Access keys (`access-keys/<hex key id>`).
    pub fn access_keys(&self) -> AccessKeys<'_> {
        AccessKeys(self)
    }
    /// One-time enrolment tokens.
    pub fn enrolment_tokens(&self) -> EnrolmentTokens<'_> {
        EnrolmentTokens(self)
    }
    /// IPAM: subnets (`ipam/subnets`) and address claims (`ipam/addrs`).
    pub fn ipam(&self) -> Ipam<'_> {
        Ipam(self)
    }
}

/// The node aggregate.
#[derive(Debug, Clone, Copy)]
pub struct Nodes<'a>(&'a Store);

impl<'a> Nodes<'a> {
    /// The key of a node record.
    pub fn key(&self, id: &NodeId) -> String {
        self.0.keys().node(id)
    }
    /// The key of a node's allocation (every placement compares it).
    pub fn alloc_key(&self, id: &NodeId) -> String {
        self.0.keys().node_alloc(id)
    }
    /// The key of a node's liveness (bound to its lease).
    pub fn alive_key(&self, id: &NodeId) -> String {
        self.0.keys().node_alive(id)
    }
    /// The host-index key of a host id.
    pub fn host_key(&self, host_id: &str) -> String {
        self.0.keys().node_host(host_id)
    }
    /// The key of address block `n`.
    pub fn ip_block_key(&self, n: u32) -> String {
        self.0.keys().ip_block(n)
    }
    /// The key of a lost-node confirmation.
    pub fn lost_confirmation_key(&self, id: &NodeId) -> String {
        self.0.keys().lost_confirmation(id)
    }
    /// Everything the node cache watches (records, allocations, liveness).
    pub fn tree(&self) -> String {
        self.0.keys().node_tree()
    }
    /// Classifies a key under [`Nodes::tree`].
    pub fn parse_tree<'k>(&self, key: &'k str) -> Option<NodeKey<'k>> {
        self.0.keys().parse_node_tree(key)
    }
    /// Reads a node record.
    pub async fn get(&self, id: &NodeId) -> Result<Option<Versioned<Node>>> {
        self.0.repo().get(&self.key(id)).await
    }
    /// Reads a node's allocation.
    pub async fn alloc(&self, id: &NodeId) -> Result<Option<Versioned<NodeAlloc>>> {
        self.0.repo().get(&self.alloc_key(id)).await
    }
    /// The node registered for a host id.
    pub async fn by_host(&self, host_id: &str) -> Result<Option<Versioned<NodeId>>> {
        self.0.repo().get(&self.host_key(host_id)).await
    }
    /// Whether the node's liveness key exists (its lease lives).
    pub async fn is_alive(&self, id: &NodeId) -> Result<bool> {
        Ok(self.0.get_raw(&self.alive_key(id)).await?.is_some())
    }
    /// Whether a host id has a node (any value).
    pub async fn host_taken(&self, host_id: &str) -> Result<bool> {
        Ok(self.0.get_raw(&self.host_key(host_id)).await?.is_some())
    }
    /// How many address blocks are taken.
    pub async fn ip_blocks_taken(&self) -> Result<i64> {
        self.0.count(&self.0.keys().ip_blocks()).await
    }
    /// Reads several nodes' allocations in one request (in `ids` order).
    pub async fn allocs(&self, ids: &[NodeId]) -> Result<Vec<Option<Versioned<NodeAlloc>>>> {
        let keys: Vec<String> = ids.iter().map(|n| self.alloc_key(n)).collect();
        self.0.get_many::<NodeAlloc>(&keys).await
    }
    /// Stages a new node: host index and address block claimed (both must
    /// be absent), record, empty allocation and liveness on `lease`.
    pub fn stage_create(&self, tx: &mut Tx, node: &Node, alive: &NodeAlive) -> Result<()> {
        let host = self.host_key(&node.host_id);
        let block = self.ip_block_key(node.ip_block);
        tx.expect_absent(&host)
            .expect_absent(&block)
            .put(&host, &node.id)?
            .put(&block, &node.id)?
            .put(&self.key(&node.id), node)?
            .put(&self.alloc_key(&node.id), &NodeAlloc::default())?;
        self.stage_alive(tx, &node.id, alive, node.lease_id)
    }
    /// Stages a CAS update of a node record.
    pub fn stage_replace(&self, tx: &mut Tx, cur: &Versioned<Node>, next: &Node) -> Result<()> {
        tx.replace(&self.key(&next.id), cur, next)?;
        Ok(())
    }
    /// Stages the node's liveness record on `lease`.
    pub fn stage_alive(
        &self,
        tx: &mut Tx,
        id: &NodeId,
        alive: &NodeAlive,
        lease: i64,
    ) -> Result<()> {
        tx.put_with_lease(&self.alive_key(id), alive, lease)?;
        Ok(())
    }
    /// Requires the node to be alive (its liveness key present).
    pub fn expect_alive(&self, tx: &mut Tx, id: &NodeId) {
        tx.expect_present(&self.alive_key(id));
    }
    /// Requires the node to be lost (its liveness key absent).
    pub fn expect_lost(&self, tx: &mut Tx, id: &NodeId) {
        tx.expect_absent(&self.alive_key(id));
    }
    /// Stages a node's allocation over the one read (`cur`), CAS.
    pub fn stage_alloc(
        &self,
        tx: &mut Tx,
        id: &NodeId,
        cur: &Versioned<NodeAlloc>,
        next: &NodeAlloc,
    ) -> Result<()> {
        tx.replace(&self.alloc_key(id), cur, next)?;
        Ok(())
    }
    /// Stages a node's allocation over the one at `rev` (the node cache's
    /// view: no read needed).
    pub fn stage_alloc_at(
        &self,
        tx: &mut Tx,
        id: &NodeId,
        rev: i64,
        next: &NodeAlloc,
    ) -> Result<()> {
        let k = self.alloc_key(id);
        tx.expect_rev(&k, rev);
        tx.put(&k, next)?;
        Ok(())
    }
    /// Every lost-node confirmation (one consistent read).
    pub async fn lost_confirmations(&self) -> Result<Vec<(String, Versioned<LostConfirmation>)>> {
        Ok(self
            .0
            .list::<LostConfirmation>(&self.0.keys().lost_confirmations())
            .await?
            .0)
    }
    /// Stages a lost-node confirmation.
    pub fn stage_lost_confirmation(&self, tx: &mut Tx, rec: &LostConfirmation) -> Result<()> {
        tx.put(&self.lost_confirmation_key(&rec.node_id), rec)?;
        Ok(())
    }
    /// Deletes a node's lost confirmation (if any).
    pub async fn clear_lost_confirmation(&self, id: &NodeId) -> Result<()> {
        let mut tx = Tx::new();
        tx.delete(&self.lost_confirmation_key(id));
        self.0.commit(tx).await?;
        Ok(())
    }
}

impl<'a> Assignments<'a> {
    /// Everything a node's assignment stream watches (assignments and
    /// console requests).
    pub fn desired_tree(&self, node: &NodeId) -> String {
        self.0.keys().desired(node)
    }
    /// Classifies a key under [`Assignments::desired_tree`].
    pub fn parse_desired<'k>(&self, node: &NodeId, key: &'k str) -> Option<DesiredKey<'k>> {
        self.0.keys().parse_desired(node, key)
    }
    /// Whether an assignment exists (any value, even undecodable).
    pub async fn exists(&self, node: &NodeId, id: &InstanceId) -> Result<bool> {
        Ok(self.0.get_raw(&self.key(node, id)).await?.is_some())
    }
    /// A node's assignments (one consistent read).
    pub async fn list_of_node(
        &self,
        node: &NodeId,
    ) -> Result<Vec<(String, Versioned<Assignment>)>> {
        Ok(self
            .0
            .list::<Assignment>(&self.0.keys().assignments(node))
            .await?
            .0)
    }
    /// Stages a CAS update of an assignment.
    pub fn stage_replace(
        &self,
        tx: &mut Tx,
        node: &NodeId,
        cur: &Versioned<Assignment>,
        next: &Assignment,
    ) -> Result<()> {
        tx.replace(&self.key(node, &next.instance_id), cur, next)?;
        Ok(())
    }
    /// Stages an assignment (overwriting).
    pub fn stage_put(&self, tx: &mut Tx, node: &NodeId, a: &Assignment) -> Result<()> {
        tx.put(&self.key(node, &a.instance_id), a)?;
        Ok(())
    }
    /// Stages a new assignment (it must be absent).
    pub fn stage_create(&self, tx: &mut Tx, node: &NodeId, a: &Assignment) -> Result<()> {
        tx.create(&self.key(node, &a.instance_id), a)?;
        Ok(())
    }
    /// Stages the removal of an assignment.
    pub fn stage_delete(&self, tx: &mut Tx, node: &NodeId, id: &InstanceId) {
        tx.delete(&self.key(node, id));
    }
}

impl<'a> Instances<'a> {
    /// Reads several instances of an account in one request (in `ids`
    /// order, `None` for the absent).
    pub async fn get_many(
        &self,
        account: &AccountId,
        ids: &[InstanceId],
    ) -> Result<Vec<Option<Versioned<Instance>>>> {
        let keys: Vec<String> = ids.iter().map(|i| self.key(account, i)).collect();
        self.0.get_many::<Instance>(&keys).await
    }
    /// Stages an instance record (overwriting).
    pub fn stage_put(&self, tx: &mut Tx, inst: &Instance) -> Result<()> {
        tx.put(&self.key(&inst.account, &inst.id), inst)?;
        Ok(())
    }
    /// Every instance's prefix (for [`Instances::page_under`]).
    pub fn all_prefix(&self) -> String {
        self.0.keys().all_instances()
    }
    /// An account's instances' prefix (for [`Instances::page_under`]).
    pub fn account_prefix(&self, account: &AccountId) -> String {
        self.0.keys().account_instances(account)
    }
}

/// Lifecycle events (the outbox).
#[derive(Debug, Clone, Copy)]
pub struct Events<'a>(&'a Store);

impl Store {
    /// Lifecycle events (`events/<account>/<ms>/<i-…>/<seq>`).
    pub fn events(&self) -> Events<'_> {
        Events(self)
    }
}

impl<'a> Events<'a> {
    /// Stages the creation of an event (compare-absent: an event is never
    /// rewritten).
    pub fn stage(&self, tx: &mut Tx, ev: &crate::domain::events::InstanceEvent) -> Result<()> {
        crate::domain::events::stage(self.0.keys(), tx, ev)
    }
    /// The prefix of an account's events (time-ordered keys).
    pub fn account_prefix(&self, account: &AccountId) -> String {
        self.0.keys().account_events(account)
    }
    /// The prefix of every event.
    pub fn all_prefix(&self) -> String {
        self.0.keys().all_events()
    }
}

/// Console output and requests.
#[derive(Debug, Clone, Copy)]
pub struct Consoles<'a>(&'a Store);

impl<'a> Consoles<'a> {
    /// The key of an instance's last console output.
    pub fn key(&self, id: &InstanceId) -> String {
        self.0.keys().console(id)
    }
    /// The last console output an agent reported.
    pub async fn get(&self, id: &InstanceId) -> Result<Option<Versioned<ConsoleRecord>>> {
        self.0.repo().get(&self.key(id)).await
    }
    /// Stores console output.
    pub async fn put(&self, id: &InstanceId, rec: &ConsoleRecord) -> Result<()> {
        let mut tx = Tx::new();
        tx.put(&self.key(id), rec)?;
        self.0.commit(tx).await?;
        Ok(())
    }
    /// Stages the removal of an instance's console output.
    pub fn stage_delete(&self, tx: &mut Tx, id: &InstanceId) {
        tx.delete(&self.key(id));
    }
    /// Asks `node` for an instance's console, unless a request for that
    /// instance is already pending: one request key per instance
    /// (`desired/<node>/c/<instance>`, on `lease`), created only when absent,
    /// so callers on every replica share one refresh. `Ok(None)` = this
    /// request was written; `Ok(Some(pending))` = another caller's request is
    /// pending (wait for its answer instead).
    pub async fn request_once(
        &self,
        node: &NodeId,
        req: &ConsoleRequest,
        lease: i64,
    ) -> Result<Option<ConsoleRequest>> {
        let key = self
            .0
            .keys()
            .console_request(node, &req.instance_id.to_string());
        let mut tx = Tx::new();
        tx.expect_absent(&key).put_with_lease(&key, req, lease)?;
        if self.0.commit(tx).await?.is_some() {
            return Ok(None);
        }
        let pending = self.0.repo::<ConsoleRequest>().get(&key).await?;
        Ok(Some(
            pending.map(|p| p.value).unwrap_or_else(|| req.clone()),
        ))
    }
}

/// Raw user data of reservations.
#[derive(Debug, Clone, Copy)]
pub struct UserData<'a>(&'a Store);

impl<'a> UserData<'a> {
    /// The key of a reservation's user data.
    pub fn key(&self, id: &ReservationId) -> String {
        self.0.keys().user_data(id)
    }
    /// A reservation's raw user data.
    pub async fn get(&self, id: &ReservationId) -> Result<Option<Vec<u8>>> {
        Ok(self.0.get_raw(&self.key(id)).await?.map(|(v, _)| v))
    }
    /// Stages a reservation's user data.
    pub fn stage_put(&self, tx: &mut Tx, id: &ReservationId, data: Vec<u8>) {
        tx.put_raw(&self.key(id), data);
    }
    /// Stages the removal of a reservation's user data.
    pub fn stage_delete(&self, tx: &mut Tx, id: &ReservationId) {
        tx.delete(&self.key(id));
    }
}

/// Access keys.
#[derive(Debug, Clone, Copy)]
pub struct AccessKeys<'a>(&'a Store);

impl<'a> AccessKeys<'a> {
    /// The key of an access key id.
    pub fn key(&self, key_id: &str) -> String {
        self.0.keys().access_key(key_id)
    }
    /// Reads an access key.
    pub async fn get(&self, key_id: &str) -> Result<Option<Versioned<AccessKey>>> {
        self.0.repo().get(&self.key(key_id)).await
    }
    /// Stages an access key (overwriting).
    pub fn stage_put(&self, tx: &mut Tx, key: &AccessKey) -> Result<()> {
        tx.put(&self.key(&key.key_id), key)?;
        Ok(())
    }
    /// Stages a new access key (its id must be free).
    pub fn stage_create(&self, tx: &mut Tx, key: &AccessKey) -> Result<()> {
        tx.create(&self.key(&key.key_id), key)?;
        Ok(())
    }
    /// Stages the removal of an access key.
    pub fn stage_delete(&self, tx: &mut Tx, key_id: &str) {
        tx.delete(&self.key(key_id));
    }
    /// Every access key (tenants' and nodes'), page by page.
    pub fn all(&self) -> Pages<'a, AccessKey> {
        self.0.repo().pages(self.0.keys().access_keys())
    }
}

/// One-time per-host enrolment tokens.
#[derive(Debug, Clone, Copy)]
pub struct EnrolmentTokens<'a>(&'a Store);

impl<'a> EnrolmentTokens<'a> {
    /// The key of a token.
    pub fn key(&self, token_id: &str) -> String {
        self.0.keys().enrolment_token(token_id)
    }
    /// Reads a token.
    pub async fn get(&self, token_id: &str) -> Result<Option<Versioned<EnrolmentTokenRecord>>> {
        self.0.repo().get(&self.key(token_id)).await
    }
    /// Stages a new token (its id must be free).
    pub fn stage_create(&self, tx: &mut Tx, rec: &EnrolmentTokenRecord) -> Result<()> {
        tx.create(&self.key(&rec.token_id), rec)?;
        Ok(())
    }
    /// Stages the consumption of a token: deleted only if unchanged since
    /// read, so two registrations with one token cannot both commit.
    pub fn stage_consume(&self, tx: &mut Tx, cur: &Versioned<EnrolmentTokenRecord>) {
        let key = self.key(&cur.value.token_id);
        tx.delete_if_unchanged(&key, cur);
    }
    /// Every token, page by page.
    pub fn all(&self) -> Pages<'a, EnrolmentTokenRecord> {
        self.0.repo().pages(self.0.keys().enrolment_tokens())
    }
}

/// IPAM subnets and address claims.
#[derive(Debug, Clone, Copy)]
pub struct Ipam<'a>(&'a Store);

impl<'a> Ipam<'a> {
    /// The key of a subnet.
    pub fn subnet_key(&self, id: &SubnetId) -> String {
        self.0.keys().subnet(id)
    }
    /// Reads a subnet.
    pub async fn subnet(&self, id: &SubnetId) -> Result<Option<Versioned<Subnet>>> {
        self.0.repo().get(&self.subnet_key(id)).await
    }
    /// The claims of a subnet (one consistent read, address-key order).
    pub async fn claims(
        &self,
        subnet: &SubnetId,
    ) -> Result<Vec<(String, Versioned<AddressClaim>)>> {
        Ok(self
            .0
            .list::<AddressClaim>(&self.0.keys().address_claims(subnet))
            .await?
            .0)
    }
    /// Stages the claim of `net`'s address by `inst` (compare-absent: an
    /// address already claimed fails the transaction).
    pub fn stage_claim(
        &self,
        tx: &mut Tx,
        inst: &Instance,
        net: &crate::domain::model::NetworkAssignment,
    ) -> Result<()> {
        crate::domain::ipam::stage_claim(self.0.keys(), tx, inst, net)
    }
    /// Stages the release of `net`'s address (its claim deleted).
    pub fn stage_release(
        &self,
        tx: &mut Tx,
        network: &crate::domain::network::Network,
        net: &crate::domain::model::NetworkAssignment,
    ) {
        crate::domain::ipam::stage_release(self.0.keys(), tx, network, net)
    }
    /// Stages a subnet (overwriting).
    pub fn stage_subnet(&self, tx: &mut Tx, id: &SubnetId, subnet: &Subnet) -> Result<()> {
        tx.put(&self.subnet_key(id), subnet)?;
        Ok(())
    }
}
