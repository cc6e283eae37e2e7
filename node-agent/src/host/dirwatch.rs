//! Change notification for instance directories: one inotify descriptor per
//! agent (the per-user limit on inotify instances is small, watches are
//! cheap), one watch per directory, and a task that wakes the subscriber of
//! each directory when a file in it is created, written or renamed into it.
//!
//! The instance task uses this to see the VMM's API socket appear and the
//! guest's console log grow the moment it happens, instead of polling on a
//! timer. A subscriber is woken at least once after every change (a
//! [`Notify`] keeps one permit), never told what changed: it re-reads the
//! files, so coalesced or lost events (queue overflow wakes everyone) cannot
//! leave it behind. When inotify is unavailable, [`DirWatcher::watch`] returns
//! `None` and callers keep their timers.

use std::collections::BTreeMap;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use rustix::fs::inotify;
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;

/// What counts as a change: a new file (the API socket, the console log),
/// a write (console output), a rename into the directory.
fn interest() -> inotify::WatchFlags {
    inotify::WatchFlags::CREATE | inotify::WatchFlags::MODIFY | inotify::WatchFlags::MOVED_TO
}

#[derive(Debug, Default)]
struct Subscribers {
    next: u64,
    /// Watch descriptor -> (subscription id, its notifier).
    by_wd: BTreeMap<i32, Vec<(u64, Arc<Notify>)>>,
}

#[derive(Debug)]
struct Inner {
    fd: AsyncFd<OwnedFd>,
    subs: Mutex<Subscribers>,
}

fn lock(m: &Mutex<Subscribers>) -> std::sync::MutexGuard<'_, Subscribers> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The agent's inotify instance, started on first use (inside the runtime).
#[derive(Debug, Default)]
pub struct DirWatcher {
    inner: OnceLock<Option<Arc<Inner>>>,
}

/// A subscription to one directory; the watch is removed on drop.
#[derive(Debug)]
pub struct DirWatch {
    inner: Arc<Inner>,
    wd: i32,
    id: u64,
    notify: Arc<Notify>,
}

impl DirWatcher {
    fn inner(&self) -> Option<&Arc<Inner>> {
        self.inner
            .get_or_init(|| {
                // The dispatch task needs a runtime; without one, no watching.
                let rt = tokio::runtime::Handle::try_current().ok()?;
                let flags = inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK;
                let fd = match inotify::init(flags) {
                    Ok(fd) => fd,
                    Err(e) => {
                        tracing::warn!(error = %e, "inotify unavailable; polling instance files");
                        return None;
                    }
                };
                let _guard = rt.enter();
                // SAFETY: `fd` is an OwnedFd moved into the AsyncFd, which
                // owns it from here on: it stays open and refers to the same
                // inotify instance for the AsyncFd's whole lifetime.
                let registered =
                    unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) };
                let fd = match registered.map_err(|e| e.into_parts().1) {
                    Ok(fd) => fd,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot register inotify; polling instance files");
                        return None;
                    }
                };
                let inner = Arc::new(Inner {
                    fd,
                    subs: Mutex::new(Subscribers::default()),
                });
                rt.spawn(dispatch(inner.clone()));
                Some(inner)
            })
            .as_ref()
    }

    /// Watches `dir` (which must exist). `None` when inotify is unavailable
    /// or the watch cannot be added: the caller then relies on its timers.
    pub fn watch(&self, dir: &Path) -> Option<DirWatch> {
        let inner = self.inner()?.clone();
        let wd = match inotify::add_watch(inner.fd.get_ref(), dir, interest()) {
            Ok(wd) => wd,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch directory");
                return None;
            }
        };
        let notify = Arc::new(Notify::new());
        let mut subs = lock(&inner.subs);
        subs.next += 1;
        let id = subs.next;
        subs.by_wd.entry(wd).or_default().push((id, notify.clone()));
        drop(subs);
        Some(DirWatch {
            inner,
            wd,
            id,
            notify,
        })
    }
}

impl DirWatch {
    /// Resolves after the next change in the directory (immediately when one
    /// happened since the last call).
    pub async fn changed(&self) {
        self.notify.notified().await;
    }
}

impl Drop for DirWatch {
    fn drop(&mut self) {
        let mut subs = lock(&self.inner.subs);
        let last = match subs.by_wd.get_mut(&self.wd) {
            Some(v) => {
                v.retain(|(id, _)| *id != self.id);
                v.is_empty()
            }
            None => false,
        };
        if last {
            subs.by_wd.remove(&self.wd);
            // Fails harmlessly when the directory is already gone.
            let _ = inotify::remove_watch(self.inner.fd.get_ref(), self.wd);
        }
    }
}

/// Reads events and wakes the subscribers of their directories (for the
/// runtime's lifetime: the watcher lives as long as the agent).
async fn dispatch(inner: Arc<Inner>) {
    let mut buf = [MaybeUninit::<u8>::uninit(); 8192];
    loop {
        let mut guard = match inner.fd.readable().await {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(error = %e, "inotify poll failed; instance files are polled");
                return;
            }
        };
        let mut woken: Vec<i32> = Vec::new();
        let mut overflow = false;
        let mut reader = inotify::Reader::new(inner.fd.get_ref(), &mut buf);
        loop {
            match reader.next() {
                Ok(ev) => {
                    if ev.events().contains(inotify::ReadFlags::QUEUE_OVERFLOW) {
                        overflow = true;
                    } else if !woken.contains(&ev.wd()) {
                        woken.push(ev.wd());
                    }
                }
                Err(rustix::io::Errno::AGAIN) => {
                    guard.clear_ready();
                    break;
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "reading inotify events failed");
                    guard.clear_ready();
                    break;
                }
            }
        }
        let subs = lock(&inner.subs);
        for (wd, list) in &subs.by_wd {
            if overflow || woken.contains(wd) {
                for (_, n) in list {
                    n.notify_one();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_write_in_the_directory_wakes_its_subscriber_only() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        let w = DirWatcher::default();
        let wa = w.watch(&a).expect("inotify");
        let wb = w.watch(&b).expect("inotify");
        async fn wait(d: &DirWatch) -> bool {
            tokio::time::timeout(Duration::from_millis(300), d.changed())
                .await
                .is_ok()
        }
        // Nothing happened yet.
        assert!(!wait(&wa).await);
        std::fs::write(a.join("console.log"), b"x").unwrap();
        assert!(tokio::time::timeout(Duration::from_secs(30), wa.changed())
            .await
            .is_ok());
        assert!(!wait(&wb).await, "b was woken by a write in a");
        // Appending wakes again; dropping the watch stops it.
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(a.join("console.log"))
            .unwrap();
        f.write_all(b"y").unwrap();
        assert!(tokio::time::timeout(Duration::from_secs(30), wa.changed())
            .await
            .is_ok());
        drop(wa);
        assert!(lock(&w.inner().unwrap().subs).by_wd.len() == 1);
        // A missing directory cannot be watched.
        assert!(w.watch(&t.path().join("missing")).is_none());
    }
}
