//! Authenticated API keys kept in memory, so a request does not cost two database queries
//! before its handler runs. Exact, not eventually consistent: every change to `api_keys` or
//! `api_key_sponsors` notifies [`KEYS_CHANNEL`] in its transaction (migration 0011) and clears
//! every process's cache, and a revocation, deletion or rotation this process commits clears its
//! own cache at once, before that notification arrives ([`crate::store::local_key_writes`]);
//! while the listener is disconnected the cache is bypassed. Active keys
//! are kept no longer than their remaining validity (expiry, or a rotation's grace period, by
//! the database's clock) and never longer than [`MAX_AGE`]. Refusals (unknown, revoked, expired)
//! are kept too, for [`NEGATIVE_MAX_AGE`], so a client repeating a bad key costs no query; with
//! `api::auth`'s per-address limit on refused keys in front, a flood of random keys costs
//! at most that limit's worth of queries per address.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use sqlx::PgPool;

use crate::store::{
    KeyLookup, Store, hash_api_key,
    notify::{Invalidate, NotifyCache},
};

/// The channel migration 0011's triggers notify.
pub const KEYS_CHANNEL: &str = "streampay_keys";

/// Upper bound on how long an entry lives even without a notification.
pub const MAX_AGE: Duration = Duration::from_secs(60);

/// How long a refusal (unknown, revoked, expired key) is remembered.
pub const NEGATIVE_MAX_AGE: Duration = Duration::from_secs(10);

const MAX_ENTRIES: usize = 100_000;

/// Lookups by the key's hash.
#[derive(Debug)]
pub struct KeyCache(Arc<NotifyCache<[u8; 32], KeyLookup>>);

impl KeyCache {
    /// A cache with its listener (must be called inside the Tokio runtime).
    pub fn start(pool: PgPool) -> Arc<Self> {
        Arc::new(Self(NotifyCache::start(pool, KEYS_CHANNEL, MAX_ENTRIES, crate::store::local_key_writes)))
    }

    /// Whether answers may come from memory (the listener is connected).
    pub fn active(&self) -> bool {
        self.0.healthy()
    }

    /// Drops every cached key at once (after a key change made by this process).
    pub fn invalidate(&self) {
        Invalidate::invalidate(&*self.0);
    }

    /// What memory says about `presented` (no query): `None` when it must be looked up.
    pub fn cached(&self, presented: &str) -> Option<KeyLookup> {
        self.0.get(&hash_api_key(presented), self.0.current())
    }

    /// [`Store::lookup_api_key`], answered from memory when it can be.
    pub async fn lookup(&self, store: &Store, presented: &str) -> anyhow::Result<KeyLookup> {
        let hash = hash_api_key(presented);
        let read_at = self.0.current();
        if let Some(hit) = self.0.get(&hash, read_at) {
            return Ok(hit);
        }
        let started = Instant::now();
        let (lookup, valid_for) = store.lookup_api_key_hash(&hash).await?;
        // Counted from before the query: the database's "time left" is at least that old.
        let age = match &lookup {
            KeyLookup::Active(_) => valid_for.map_or(MAX_AGE, |v| v.min(MAX_AGE)),
            _ => NEGATIVE_MAX_AGE,
        };
        self.0.put(hash, read_at, Some(started + age), lookup.clone());
        Ok(lookup)
    }
}
