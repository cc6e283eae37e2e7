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
