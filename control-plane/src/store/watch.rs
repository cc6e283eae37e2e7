//! Prefix watches that survive compaction: list, then watch from the list's
//! revision + 1; when etcd cancels the watch (a compacted start revision
//! arrives as `canceled` with `compact_revision` set, not as an error) or the
//! stream breaks, list again and deliver a fresh [`WatchItem::Snapshot`].
//! Consumers are therefore level-triggered: a snapshot replaces all they knew.

use std::time::Duration;

use etcd_client::{EventType, WatchOptions};
use tokio::sync::mpsc;

use crate::store::{prefix_end, Store};

/// One change under the watched prefix.
#[derive(Debug, Clone)]
pub enum WatchItem {
    /// Everything under the prefix at `revision` (replaces earlier state).
    Snapshot {
        /// (key, value, mod_revision) of every key.
        kvs: Vec<(String, Vec<u8>, i64)>,
        /// The store revision of the listing.
        revision: i64,
    },
    /// A key was created or changed.
    Put {
        /// The key.
        key: String,
        /// Its new value.
        value: Vec<u8>,
        /// Its new mod_revision.
        mod_revision: i64,
    },
    /// A key was deleted (or its lease expired).
    Delete {
        /// The key.
        key: String,
        /// The revision of the deletion.
        revision: i64,
    },
}

/// Watches `prefix` in a background task. The task ends when the receiver is
/// dropped. Transient etcd errors are retried with backoff (each retry
/// begins with a snapshot).
pub fn watch_prefix(store: Store, prefix: String) -> mpsc::Receiver<WatchItem> {
    watch_prefix_from(store, prefix, None)
}

/// Like [`watch_prefix`], but when `resume` is given the first round skips
/// the listing and watches from that revision (a consumer resuming where it
/// left off). If that revision was compacted, etcd cancels the watch and the
/// consumer gets a fresh snapshot instead.
pub fn watch_prefix_from(
    store: Store,
    prefix: String,
    resume: Option<i64>,
) -> mpsc::Receiver<WatchItem> {
    let (tx, rx) = mpsc::channel(1024);
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        let mut resume = resume;
        loop {
            match run_once(&store, &prefix, &tx, resume.take()).await {
                Ok(()) => return, // receiver gone
                Err(e) => {
                    if tx.is_closed() {
                        return;
                    }
                    tracing::warn!(prefix = %prefix, error = %e, "watch interrupted; re-listing");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    });
    rx
}

/// Why a watch round ended (other than the receiver going away).
#[derive(Debug, thiserror::Error)]
enum RoundEnd {
    #[error("etcd")]
    Etcd(#[from] etcd_client::Error),
    #[error("watch canceled (compact revision {0})")]
    Canceled(i64),
    #[error("watch stream ended")]
    Ended,
}

async fn run_once(
    store: &Store,
    prefix: &str,
    tx: &mpsc::Sender<WatchItem>,
    resume: Option<i64>,
) -> Result<(), RoundEnd> {
    let revision = match resume {
        Some(r) => r - 1,
        None => list(store, prefix, tx).await?,
    };
    if tx.is_closed() {
        return Ok(());
    }
    let opts = WatchOptions::new()
        .with_range(prefix_end(prefix))
        .with_start_revision(revision + 1);
    let mut stream = store
        .client()
        .watch_client()
        .watch(prefix, Some(opts))
        .await?;
    loop {
        let msg = tokio::select! {
            m = stream.message() => m?,
            _ = tx.closed() => return Ok(()),
        };
        let Some(msg) = msg else {
            return Err(RoundEnd::Ended);
        };
        if msg.canceled() {
            return Err(RoundEnd::Canceled(msg.compact_revision()));
        }
        for ev in msg.events() {
            let Some(kv) = ev.kv() else { continue };
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let item = match ev.event_type() {
                EventType::Put => WatchItem::Put {
                    key,
                    value: kv.value().to_vec(),
                    mod_revision: kv.mod_revision(),
                },
                EventType::Delete => WatchItem::Delete {
                    key,
                    revision: kv.mod_revision(),
                },
            };
            if tx.send(item).await.is_err() {
                return Ok(());
            }
        }
    }
}

/// Lists the prefix, sends the snapshot, returns its revision.
async fn list(store: &Store, prefix: &str, tx: &mpsc::Sender<WatchItem>) -> Result<i64, RoundEnd> {
    // Paged (store::MAX_PAGE a request) at one revision.
    let (kvs, revision) = store.list_raw(prefix).await?;
    let _ = tx.send(WatchItem::Snapshot { kvs, revision }).await;
    Ok(revision)
}
