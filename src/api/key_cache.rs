//! Authenticated API keys kept in memory, so a request does not cost two database queries
//! before its handler runs. Exact, not eventually consistent: every change to `api_keys` or
//! `api_key_sponsors` notifies [`KEYS_CHANNEL`] in its transaction (migration 0011) and clears
//! every process's cache; while the listener is disconnected the cache is bypassed. Active keys
//! are kept no longer than their remaining validity (expiry, or a rotation's grace period, by
//! the database's clock) and never longer than [`MAX_AGE`]. Refusals (unknown, revoked, expired)
//! are kept too, for [`NEGATIVE_MAX_AGE`], so a client repeating a bad key costs no query; with
//! `api::auth`'s per-address limit on refused keys in front, a flood of random keys costs
//! at most that limit's worth of queries per address.

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use sqlx::PgPool;

use crate::store::{
    KeyLookup, Store, hash_api_key,
    notify::{Invalidate, listen},
};

/// The channel migration 0011's triggers notify.
pub const KEYS_CHANNEL: &str = "streampay_keys";

/// Upper bound on how long an entry lives even without a notification.
pub const MAX_AGE: Duration = Duration::from_secs(60);

/// How long a refusal (unknown, revoked, expired key) is remembered.
pub const NEGATIVE_MAX_AGE: Duration = Duration::from_secs(10);

const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Default)]
pub struct KeyCache {
    generation: AtomicU64,
    healthy: AtomicBool,
    entries: RwLock<HashMap<[u8; 32], Entry>>,
}

#[derive(Debug)]
struct Entry {
    generation: u64,
    until: Instant,
    lookup: KeyLookup,
}

impl Invalidate for KeyCache {
    fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.entries.write().unwrap_or_else(|e| e.into_inner()).clear();
    }
    fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Release);
    }
}

impl KeyCache {
    /// A cache with its listener (must be called inside the Tokio runtime).
    pub fn start(pool: PgPool) -> Arc<Self> {
        let cache = Arc::new(Self::default());
        tokio::spawn(listen(pool, KEYS_CHANNEL, Arc::downgrade(&cache)));
        cache
    }

    /// Whether answers may come from memory (the listener is connected).
    pub fn active(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// What memory says about `presented` (no query): `None` when it must be looked up.
    pub fn cached(&self, presented: &str) -> Option<KeyLookup> {
        self.cached_hash(&hash_api_key(presented), self.generation.load(Ordering::Acquire))
    }

    fn cached_hash(&self, hash: &[u8; 32], read_at: u64) -> Option<KeyLookup> {
        if !self.active() {
            return None;
        }
        let map = self.entries.read().unwrap_or_else(|e| e.into_inner());
        map.get(hash).filter(|e| e.generation == read_at && Instant::now() < e.until).map(|e| e.lookup.clone())
    }

    /// [`Store::lookup_api_key`], answered from memory when it can be.
    pub async fn lookup(&self, store: &Store, presented: &str) -> anyhow::Result<KeyLookup> {
        let hash = hash_api_key(presented);
        let read_at = self.generation.load(Ordering::Acquire);
        if let Some(hit) = self.cached_hash(&hash, read_at) {
            return Ok(hit);
        }
        let started = Instant::now();
        let (lookup, valid_for) = store.lookup_api_key_hash(&hash).await?;
        if self.active() && self.generation.load(Ordering::Acquire) == read_at {
            // Counted from before the query: the database's "time left" is at least that old.
            let age = match &lookup {
                KeyLookup::Active(_) => valid_for.map_or(MAX_AGE, |v| v.min(MAX_AGE)),
                _ => NEGATIVE_MAX_AGE,
            };
            let mut map = self.entries.write().unwrap_or_else(|e| e.into_inner());
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
            map.insert(hash, Entry { generation: read_at, until: started + age, lookup: lookup.clone() });
        }
        Ok(lookup)
    }
}
