//! One store read, and one serialized answer, for all the long-polls that ask the same
//! thing at once.
//!
//! When a logout commits, every edge's `GET /v1/sync` wakes at the same moment, and
//! almost all of them hold the same `since`: without sharing, 10,000 edges meant 10,000
//! identical store reads and 10,000 serializations of the same JSON. Here the first poll
//! to ask for an answer reads the store; the others with the same question wait for
//! that read and get the same bytes.
//!
//! Why sharing is safe: a [`Coalesce`] cell is created for a store-watch version `at`
//! only once the watch has shown `at` (the caller read it *after* subscribing), so the
//! read it does begins after the commit of `at` was announced — it sees everything a
//! read of the caller's own would have seen. A newer cell serves a caller that saw an
//! older `at` (its read began later still); an older one never serves a newer caller:
//! a version above the slot's clears it.
//!
//! What an answer depends on is all in its key ([`SyncKey`]: `since`, `stream`, `tag`
//! and the paging fields); what is per edge (its receipt, its credential) stays out of
//! the answer and is handled per request. The map holds an answer until the next
//! version (polls woken by one commit do not all run at once: a late one must still find
//! it); a snapshot, which can be large, is held only weakly ([`Coalesce::weaken`]): as
//! long as a request holds it, not after the last edge that asked for it has it.
//!
//! The other half of each poll's cost is its receipt (the `since` it sent is what the
//! edge applied). [`Receipts`] commits the receipts of the polls arriving together in one
//! transaction, each poll waiting for the commit that holds its own, instead of one
//! transaction per poll behind the store's connection.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use tokio::sync::{watch, OnceCell};

use crate::store::{EdgeReceipt, Store, StoreError};

/// Cells shared by the requests that ask the same (`K`) as of one store-watch version.
#[derive(Debug)]
pub struct Coalesce<K, V> {
    slot: Mutex<Slot<K, V>>,
}

#[derive(Debug)]
struct Slot<K, V> {
    /// The newest watch version a caller has shown; the cells are of reads begun after it.
    version: u64,
    cells: HashMap<K, Held<V>>,
    /// Dead entries are swept when the map reaches this size (then it doubles from the
    /// live count), so a sweep costs O(1) per insert over time.
    sweep_at: usize,
}

const MIN_SWEEP: usize = 1024;

#[derive(Debug)]
enum Held<V> {
    Strong(Arc<OnceCell<V>>),
    Weak(Weak<OnceCell<V>>),
}

impl<V> Held<V> {
    fn get(&self) -> Option<Arc<OnceCell<V>>> {
        match self {
            Held::Strong(c) => Some(Arc::clone(c)),
            Held::Weak(w) => w.upgrade(),
        }
    }

    fn live(&self) -> bool {
        match self {
            Held::Strong(_) => true,
            Held::Weak(w) => w.strong_count() > 0,
        }
    }
}

impl<K, V> Default for Coalesce<K, V> {
    fn default() -> Self {
        Coalesce {
            slot: Mutex::new(Slot {
                version: 0,
                cells: HashMap::new(),
                sweep_at: MIN_SWEEP,
            }),
        }
    }
}

impl<K: Eq + Hash, V> Coalesce<K, V> {
    /// The cell for `key`, for a caller that has seen the store's watch at `at` (read
    /// after it subscribed). Initialize it with `OnceCell::get_or_try_init`: one caller
    /// reads, the others wait for that read; a failed read leaves the cell empty, so
    /// the next caller tries again.
    pub fn cell(&self, at: u64, key: K) -> Arc<OnceCell<V>> {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        if at > slot.version {
            slot.version = at;
            slot.cells.clear();
            slot.sweep_at = MIN_SWEEP;
        }
        if let Some(cell) = slot.cells.get(&key).and_then(Held::get) {
            return cell;
        }
        if slot.cells.len() >= slot.sweep_at {
            slot.cells.retain(|_, h| h.live());
            slot.sweep_at = (slot.cells.len() * 2).max(MIN_SWEEP);
        }
        let cell = Arc::new(OnceCell::new());
        slot.cells.insert(key, Held::Strong(Arc::clone(&cell)));
        cell
    }

    /// Keeps `key`'s answer only while requests hold it (a large one: a snapshot).
    pub fn weaken(&self, key: &K) {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(h) = slot.cells.get_mut(key) {
            if let Held::Strong(c) = h {
                *h = Held::Weak(Arc::downgrade(c));
            }
        }
    }

    /// How many keys are held (live or not yet swept), for tests.
    pub fn len(&self) -> usize {
        self.slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .cells
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Everything of a `GET /v1/sync` query that its answer depends on (not `edge`, not
/// `wait`: those are the request's own).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SyncKey {
    pub since: u64,
    pub stream: Option<String>,
    pub tag: Option<String>,
    pub limit: Option<usize>,
    pub snapshot: Option<u64>,
    pub after: Option<String>,
}

/// Edge receipts committed in batches (see the module doc).
#[derive(Debug)]
pub struct Receipts {
    queue: Mutex<Queue>,
    /// The last batch number committed (or failed: its polls are not held up).
    done: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct Queue {
    /// The receipts waiting, by (edge, instance): the latest of each instance. Ordered,
    /// so every batch upserts its rows in one order (no deadlock between two replicas'
    /// batches on Postgres).
    pending: BTreeMap<(String, String), EdgeReceipt>,
    /// The number of the batch the pending receipts will be committed in.
    next: u64,
    /// Whether a flush task is running.
    flushing: bool,
}

impl Default for Receipts {
    fn default() -> Self {
        Receipts {
            queue: Mutex::new(Queue {
                next: 1,
                ..Queue::default()
            }),
            done: watch::channel(0).0,
        }
    }
}

impl Receipts {
    /// Queues `receipt` and returns once a batch holding it has been written, or has
    /// failed (logged by the flush). `on_commit` runs once per
    /// committed batch. The flush runs in its own task: a poll dropped mid-wait (the
    /// edge hung up) does not stop the others' receipts.
    pub async fn record(
        self: &Arc<Self>,
        store: Arc<dyn Store>,
        receipt: EdgeReceipt,
        on_commit: impl Fn() + Send + 'static,
    ) {
        let mut done = self.done.subscribe();
        let batch = {
            let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            q.pending
                .insert((receipt.edge.clone(), receipt.instance.clone()), receipt);
            if !q.flushing {
                q.flushing = true;
                let this = Arc::clone(self);
                tokio::spawn(async move { this.flush(store, on_commit).await });
            }
            q.next
        };
        let _ = done.wait_for(|d| *d >= batch).await;
    }

    async fn flush(&self, store: Arc<dyn Store>, on_commit: impl Fn()) {
        loop {
            let (batch, receipts) = {
                let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
                if q.pending.is_empty() {
                    q.flushing = false;
                    return;
                }
                let batch = q.next;
                q.next += 1;
                (batch, std::mem::take(&mut q.pending))
            };
            let n = receipts.len();
            match store.record_edges(receipts.into_values().collect()).await {
                Ok(()) => on_commit(),
                Err(err) => log_failure(&err, n),
            }
            self.done.send_replace(batch);
        }
    }
}

fn log_failure(err: &StoreError, n: usize) {
    tracing::warn!(error = %err, receipts = n, "cannot record edges' receipts");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn callers_of_one_version_share_one_read_and_a_newer_version_reads_again() {
        let c: Coalesce<&str, u64> = Coalesce::default();
        let reads = std::sync::atomic::AtomicU64::new(0);
        let read = || async {
            reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok::<u64, ()>(7)
        };
        let a = c.cell(5, "q");
        let b = c.cell(5, "q");
        assert_eq!(*a.get_or_try_init(read).await.unwrap(), 7);
        assert_eq!(*b.get_or_try_init(read).await.unwrap(), 7);
        assert_eq!(reads.load(std::sync::atomic::Ordering::SeqCst), 1);
        // A caller that saw an older version is served the newer read.
        assert!(Arc::ptr_eq(&a, &c.cell(4, "q")));
        // Another question, or a newer version: a read of its own.
        assert!(!Arc::ptr_eq(&a, &c.cell(5, "other")));
        let newer = c.cell(6, "q");
        assert!(!Arc::ptr_eq(&a, &newer));
        newer.get_or_try_init(read).await.unwrap();
        assert_eq!(reads.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_failed_read_is_not_shared_and_an_answer_nobody_holds_is_dropped() {
        let c: Coalesce<&str, u64> = Coalesce::default();
        let a = c.cell(1, "q");
        assert!(a
            .get_or_try_init(|| async { Err::<u64, ()>(()) })
            .await
            .is_err());
        let b = c.cell(1, "q");
        assert!(
            Arc::ptr_eq(&a, &b),
            "the empty cell is still the one to fill"
        );
        assert_eq!(
            *b.get_or_try_init(|| async { Ok::<u64, ()>(3) })
                .await
                .unwrap(),
            3
        );
        drop((a, b));
        assert_eq!(c.cell(1, "q").get(), Some(&3), "kept for late callers");
        c.weaken(&"q");
        assert!(
            c.cell(1, "q").get().is_none(),
            "weakened, nobody held it: not kept"
        );
    }

    #[test]
    fn dead_entries_are_swept() {
        let c: Coalesce<u64, u64> = Coalesce::default();
        for k in 0..10 * MIN_SWEEP as u64 {
            drop(c.cell(1, k));
            c.weaken(&k);
        }
        assert!(c.len() <= MIN_SWEEP + 1, "{}", c.len());
    }
}
