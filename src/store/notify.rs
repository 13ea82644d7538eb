//! In-memory caches kept exact by Postgres `NOTIFY`: every writer notifies a channel in the
//! transaction that changes the cached rows, and each process's listener clears its cache when
//! the notification arrives. While the listener is not connected (start-up, a lost connection)
//! the cache reports itself unhealthy and callers go to the database, so a missed notification
//! can never leave a stale answer in place.

use std::{
    collections::HashMap,
    hash::Hash,
    sync::{
        Arc, RwLock, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use sqlx::PgPool;

/// A cache cleared by notifications on one channel.
pub trait Invalidate: Send + Sync + 'static {
    /// Drops every entry (a notification arrived, or notifications may have been missed).
    fn invalidate(&self);
    /// Whether the listener is connected: an unhealthy cache must not answer.
    fn set_healthy(&self, healthy: bool);
}

/// A pool of one connection with `pool`'s connect options, for a `LISTEN`: a listener holds its
/// connection for as long as it listens, so it must not take one the API, the workers or the
/// indexer need from the shared pool. The pool also reconnects it.
pub fn listener_pool(pool: &PgPool) -> PgPool {
    sqlx::postgres::PgPoolOptions::new().max_connections(1).connect_lazy_with((*pool.connect_options()).clone())
}

/// Listens on `channel` for as long as `target` exists, reconnecting after errors, on a
/// connection of its own ([`listener_pool`]).
pub async fn listen<T: Invalidate>(pool: PgPool, channel: &'static str, target: Weak<T>) {
    let pool = listener_pool(&pool);
    loop {
        let Some(c) = target.upgrade() else { return };
        c.set_healthy(false);
        c.invalidate();
        drop(c);
        let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, channel, "cache listener cannot connect; reads bypass the cache");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if listener.listen(channel).await.is_err() {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        match target.upgrade() {
            Some(c) => {
                c.invalidate();
                c.set_healthy(true);
            }
            None => return,
        }
        loop {
            let next = tokio::time::timeout(Duration::from_secs(5), listener.try_recv()).await;
            let Some(c) = target.upgrade() else { return };
            match next {
                Err(_) => continue, // quiet; check that the cache still exists
                Ok(Ok(Some(_))) => c.invalidate(),
                // Connection lost: notifications may have been missed.
                Ok(Ok(None)) | Ok(Err(_)) => break,
            }
        }
    }
}

/// A map kept exact by [`listen`]: every answer is stored under the generation it was read at
/// (notifications received, plus an optional process-local counter such as
/// [`crate::store::index::local_commits`]), and is served only while that generation is current
/// and, if it has one, before its deadline. A value read while something changed is not stored.
/// When full, the map is cleared rather than evicting one by one.
#[derive(Debug)]
pub struct NotifyCache<K, V> {
    generation: AtomicU64,
    healthy: AtomicBool,
    local: fn() -> u64,
    max_entries: usize,
    entries: RwLock<HashMap<K, Entry<V>>>,
}

#[derive(Debug)]
struct Entry<V> {
    generation: u64,
    until: Option<Instant>,
    value: V,
}

impl<K: Eq + Hash + Send + Sync + 'static, V: Clone + Send + Sync + 'static> NotifyCache<K, V> {
    /// A cache of at most `max_entries`, whose generation also counts `local()` (process-local
    /// writes that must invalidate at once, before their notification arrives), with its listener
    /// on `channel` (must be called inside the Tokio runtime). It answers once the listener is
    /// connected.
    pub fn start(pool: PgPool, channel: &'static str, max_entries: usize, local: fn() -> u64) -> Arc<Self> {
        let cache = Arc::new(Self::detached(max_entries, local));
        tokio::spawn(listen(pool, channel, Arc::downgrade(&cache)));
        cache
    }

    /// A cache without a listener: unhealthy (answers nothing) until told otherwise.
    fn detached(max_entries: usize, local: fn() -> u64) -> Self {
        Self {
            generation: AtomicU64::new(0),
            healthy: AtomicBool::new(false),
            local,
            max_entries,
            entries: RwLock::new(HashMap::new()),
        }
    }

    /// No process-local counter: the generation is the notifications received.
    pub fn no_local_writes() -> u64 {
        0
    }

    /// Whether answers may come from memory (the listener is connected).
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// The generation to read at: take it before reading the database, pass it to [`Self::put`].
    pub fn current(&self) -> u64 {
        self.generation.load(Ordering::Acquire).wrapping_add((self.local)())
    }

    /// The answer stored for `key` at generation `at`, if still valid.
    pub fn get(&self, key: &K, at: u64) -> Option<V> {
        if !self.healthy() {
            return None;
        }
        let map = self.entries.read().unwrap_or_else(|e| e.into_inner());
        map.get(key)
            .filter(|e| e.generation == at && e.until.is_none_or(|u| Instant::now() < u))
            .map(|e| e.value.clone())
    }

    /// Stores `value`, read from the database at generation `read_at`, valid until `until` (or
    /// until the next change); nothing is stored if the generation moved on meanwhile.
    pub fn put(&self, key: K, read_at: u64, until: Option<Instant>, value: V) {
        if !self.healthy() || self.current() != read_at {
            return; // something changed while we read: the answer may already be stale
        }
        let mut map = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if self.current() != read_at {
            return;
        }
        if map.len() >= self.max_entries {
            map.clear();
        }
        map.insert(key, Entry { generation: read_at, until, value });
    }
}

impl<K: Send + Sync + 'static, V: Send + Sync + 'static> Invalidate for NotifyCache<K, V> {
    fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.entries.write().unwrap_or_else(|e| e.into_inner()).clear();
    }
    fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use super::*;

    static LOCAL: AtomicU64 = AtomicU64::new(0);
    fn local() -> u64 {
        LOCAL.load(Ordering::Acquire)
    }

    fn healthy(max: usize, local: fn() -> u64) -> NotifyCache<u32, &'static str> {
        let c = NotifyCache::detached(max, local);
        c.set_healthy(true);
        c
    }

    #[test]
    fn an_answer_is_served_only_at_the_generation_it_was_read_at() {
        let c = healthy(10, NotifyCache::<u32, &str>::no_local_writes);
        let at = c.current();
        c.put(1, at, None, "one");
        assert_eq!(c.get(&1, c.current()), Some("one"));
        c.invalidate();
        assert_eq!(c.get(&1, c.current()), None, "a notification drops it");
        // Read before the notification, stored after it: never stored.
        let before = c.current();
        c.invalidate();
        c.put(2, before, None, "stale");
        assert_eq!(c.get(&2, c.current()), None);
        assert_eq!(c.get(&2, before), None);
    }

    #[test]
    fn a_local_write_moves_the_generation_at_once() {
        let c = healthy(10, local);
        let at = c.current();
        c.put(1, at, None, "one");
        assert_eq!(c.get(&1, c.current()), Some("one"));
        LOCAL.fetch_add(1, Ordering::AcqRel);
        assert_eq!(c.get(&1, c.current()), None, "a commit made here hides the older answer");
        c.put(1, at, None, "read before the commit");
        assert_eq!(c.get(&1, c.current()), None);
    }

    #[test]
    fn an_unhealthy_cache_answers_nothing_and_stores_nothing() {
        let c = healthy(10, NotifyCache::<u32, &str>::no_local_writes);
        c.put(1, c.current(), None, "one");
        c.set_healthy(false);
        assert_eq!(c.get(&1, c.current()), None);
        c.put(2, c.current(), None, "two");
        c.set_healthy(true);
        assert_eq!(c.get(&2, c.current()), None);
    }

    #[test]
    fn deadlines_and_the_size_cap_hold() {
        let c = healthy(2, NotifyCache::<u32, &str>::no_local_writes);
        let at = c.current();
        c.put(1, at, Some(Instant::now() - Duration::from_millis(1)), "expired");
        assert_eq!(c.get(&1, at), None);
        c.put(2, at, Some(Instant::now() + Duration::from_secs(60)), "two");
        assert_eq!(c.get(&2, at), Some("two"));
        c.put(3, at, None, "three"); // full (1 and 2): cleared, then 3 stored
        assert_eq!(c.get(&2, at), None);
        assert_eq!(c.get(&3, at), Some("three"));
    }
}
