//! A small expiring cache for what a node reads from the API server on demand (its pods'
//! SecretProviderClasses and ServiceAccounts): bounded in entries, each kept for a fixed time,
//! one read in flight per key however many publishes ask at once, failures never kept.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

type Cell<V> = Arc<OnceCell<(Instant, V)>>;

/// Values of `K` read by a caller-given fetch, reused for `ttl`, at most `capacity` of them.
pub(crate) struct TtlCache<K, V> {
    ttl: Duration,
    capacity: usize,
    cells: Mutex<HashMap<K, Cell<V>>>,
}

impl<K, V> fmt::Debug for TtlCache<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TtlCache")
            .field("ttl", &self.ttl)
            .field("capacity", &self.capacity)
            .field("entries", &self.cells.lock().map_or(0, |cells| cells.len()))
            .finish()
    }
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    /// A cache keeping each value for `ttl` (zero: only concurrent reads are shared), with room
    /// for `capacity` keys (at least one).
    pub(crate) fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity: capacity.max(1),
            cells: Mutex::new(HashMap::new()),
        }
    }

    /// Keys held, fresh or in flight (expired ones go on the next insert).
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when nothing is held.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value of `key`: a fresh cached one, the result of a read already in flight, or the
    /// result of `fetch`. A failed read is not kept: its error goes to the caller whose `fetch`
    /// it was, and each caller waiting on it reads again in turn.
    pub(crate) async fn get_or_fetch<E, F, Fut>(&self, key: &K, fetch: F) -> Result<V, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let cell = self.cell(key);
        let fetched = cell
            .get_or_try_init(|| async { fetch().await.map(|value| (Instant::now(), value)) })
            .await;
        match fetched {
            Ok((_, value)) => Ok(value.clone()),
            Err(error) => {
                let mut cells = self.lock();
                if cells
                    .get(key)
                    .is_some_and(|held| Arc::ptr_eq(held, &cell) && !held.initialized())
                {
                    cells.remove(key);
                }
                Err(error)
            }
        }
    }

    /// The cell to read `key` through: the held one while fresh or in flight, else a new one.
    fn cell(&self, key: &K) -> Cell<V> {
        let mut cells = self.lock();
        let now = Instant::now();
        if let Some(cell) = cells.get(key)
            && !self.expired(cell, now)
        {
            return cell.clone();
        }
        cells.remove(key);
        if cells.len() >= self.capacity {
            cells.retain(|_, cell| !self.expired(cell, now));
        }
        if cells.len() >= self.capacity {
            let oldest = cells
                .iter()
                .filter_map(|(key, cell)| cell.get().map(|(at, _)| (*at, key)))
                .min_by_key(|(at, _)| *at)
                .map(|(_, key)| key.clone());
            // Every held key is in flight: the new one is read without being kept.
            let Some(oldest) = oldest else {
                return Arc::new(OnceCell::new());
            };
            cells.remove(&oldest);
        }
        let cell: Cell<V> = Arc::new(OnceCell::new());
        cells.insert(key.clone(), cell.clone());
        cell
    }

    fn expired(&self, cell: &Cell<V>, now: Instant) -> bool {
        cell.get()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) >= self.ttl)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Cell<V>>> {
        self.cells
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    async fn read(cache: &TtlCache<&'static str, usize>, key: &'static str, reads: &AtomicUsize) {
        let n = cache
            .get_or_fetch(&key, || async {
                Ok::<_, ()>(reads.fetch_add(1, Ordering::SeqCst) + 1)
            })
            .await
            .unwrap();
        assert!(n >= 1);
    }

    #[tokio::test]
    async fn a_fresh_value_is_reused_and_an_expired_one_read_again() {
        let cache = TtlCache::new(Duration::from_millis(200), 8);
        let reads = AtomicUsize::new(0);
        for _ in 0..5 {
            read(&cache, "a", &reads).await;
        }
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_millis(250)).await;
        read(&cache, "a", &reads).await;
        assert_eq!(reads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_read() {
        let cache = Arc::new(TtlCache::new(Duration::from_secs(60), 8));
        let reads = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let (cache, reads) = (cache.clone(), reads.clone());
                tokio::spawn(async move {
                    cache
                        .get_or_fetch(&"class", || async {
                            reads.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            Ok::<_, ()>(7)
                        })
                        .await
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap(), Ok(7));
        }
        assert_eq!(reads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_failed_read_is_not_kept() {
        let cache: TtlCache<&str, u8> = TtlCache::new(Duration::from_secs(60), 8);
        let failed = cache.get_or_fetch(&"a", || async { Err("down") }).await;
        assert_eq!(failed, Err("down"));
        assert!(cache.is_empty(), "a failure holds no entry");
        let read = cache
            .get_or_fetch(&"a", || async { Ok::<_, &str>(1) })
            .await;
        assert_eq!(read, Ok(1));
    }

    #[tokio::test]
    async fn the_capacity_bounds_the_entries_and_the_oldest_goes_first() {
        let cache = TtlCache::new(Duration::from_secs(60), 3);
        for n in 0..10_u32 {
            let got = cache
                .get_or_fetch(&n, || async move { Ok::<_, ()>(n) })
                .await;
            assert_eq!(got, Ok(n));
            assert!(cache.len() <= 3);
        }
        let reads = AtomicUsize::new(0);
        // 9 is held; 0 was evicted long ago.
        for key in [9_u32, 0] {
            cache
                .get_or_fetch(&key, || async {
                    reads.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, ()>(key)
                })
                .await
                .unwrap();
        }
        assert_eq!(
            reads.load(Ordering::SeqCst),
            1,
            "only the evicted key is read"
        );
    }

    #[tokio::test]
    async fn a_zero_ttl_shares_only_concurrent_reads() {
        let cache = TtlCache::new(Duration::ZERO, 8);
        let reads = AtomicUsize::new(0);
        read(&cache, "a", &reads).await;
        read(&cache, "a", &reads).await;
        assert_eq!(reads.load(Ordering::SeqCst), 2);
    }
}
