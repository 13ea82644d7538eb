//! The read model: what the API serves from the index. Every answer is computed at the chain
//! time of the indexed head and carries that block, so a caller can compare it with the chain's
//! own view functions at the same block. Each read is a single statement, hence one snapshot:
//! the checkpoint and the rows always belong to the same commit.
//!
//! [`IndexReader::with_cache`] adds a per-process cache in front of Postgres: the indexer's
//! commits and rollbacks `NOTIFY` [`NOTIFY_CHANNEL`] in their transaction, and every
//! notification (or a lost listener connection) invalidates the whole cache. An answer is
//! cached only if no notification arrived while it was read, so the cache never serves data
//! older than the latest commit it was told about; without a live listener it is bypassed.
//! Between blocks every replica answers repeated reads from memory.

use std::{sync::Arc, time::Duration};

use alloy::primitives::{Address, I256, U256};
use serde::Serialize;
use sqlx::PgPool;

use crate::store::{
    index::{self as db, read::StreamsOf},
    notify::{Invalidate, NotifyCache},
};

/// The indexed head of one deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct IndexedHead {
    pub block_number: u64,
    pub block_timestamp: u64,
}

/// An account as `balanceOf`, `signedBalanceOf` and `accountInfo` show it at `head`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountView {
    pub account: Address,
    /// `balanceOf`: live balance floored at zero.
    pub balance: U256,
    /// `signedBalanceOf`.
    pub signed_balance: I256,
    /// `accountInfo`: stored balance, rates, last settlement.
    pub stored_balance: I256,
    pub income_rate: U256,
    pub outgoing_rate: U256,
    pub updated: u64,
    pub head: IndexedHead,
}

/// One stream as `allSubscriptions` / `subscriptions(from, to)` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamView {
    pub subscriber: Address,
    pub author: Address,
    pub encoded_rates: U256,
    /// What the author receives per second.
    pub income_rate: U256,
    /// What the subscriber pays per second (income + project fee).
    pub outgoing_rate: U256,
    pub project_id: u64,
    pub since_block: u64,
    pub since_timestamp: u64,
}

/// A subscriber's outgoing streams, in `allSubscriptions` order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Subscriptions {
    pub streams: Vec<StreamView>,
    pub head: IndexedHead,
}

/// An author's incoming streams (the creators' view).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IncomingStreams {
    pub author: Address,
    pub streams: Vec<StreamView>,
    /// Sum of the streams' income rates.
    pub streams_income_rate: U256,
    /// The account's whole income rate (`accountInfo().incomeRate`): streams plus project fees
    /// it receives as a project owner.
    pub income_rate: U256,
    pub head: IndexedHead,
}

/// How far the index trails the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Lag {
    pub indexed_block: u64,
    pub chain_head: u64,
    pub blocks: u64,
    /// Time since the indexer last wrote its checkpoint (a stalled indexer shows here).
    pub since_update: Duration,
}

/// Channel the indexer notifies after each commit or rollback (payload `chain:contract:block`).
pub use crate::store::index::NOTIFY_CHANNEL;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum CacheKey {
    Balance(Address, Address),
    Subscriptions(Address, Address),
    Incoming(Address, Address),
    Nonce(Address, Address),
}

#[derive(Debug, Clone)]
enum Cached {
    Balance(AccountView),
    Subscriptions(Subscriptions),
    Incoming(IncomingStreams),
    Nonce(U256),
}

/// Answers valid until the next notification or local commit; see the module docs.
type ReadCache = NotifyCache<CacheKey, Cached>;

const CACHE_MAX_ENTRIES: usize = 200_000;

/// Queries over the index of one chain; cheap to clone.
#[derive(Debug, Clone)]
pub struct IndexReader {
    pool: PgPool,
    chain_id: u64,
    cache: Option<Arc<ReadCache>>,
}

impl IndexReader {
    /// A reader that queries Postgres on every call.
    pub fn new(pool: PgPool, chain_id: u64) -> Self {
        Self { pool, chain_id, cache: None }
    }

    /// A reader with the notification-invalidated cache (spawns its listener task; must be
    /// called inside a Tokio runtime).
    pub fn with_cache(pool: PgPool, chain_id: u64) -> Self {
        // The generation also counts commits made here ([`db::local_commits`]), so a read after
        // a local commit never sees an older cached answer.
        let cache = ReadCache::start(pool.clone(), NOTIFY_CHANNEL, CACHE_MAX_ENTRIES, db::local_commits);
        Self { pool, chain_id, cache: Some(cache) }
    }

    /// Drops every cached answer of this process (after the index was seen past a block that
    /// another process committed, before its notification arrived).
    pub fn invalidate_cache(&self) {
        if let Some(c) = &self.cache {
            Invalidate::invalidate(&**c);
        }
    }

    /// Whether the cache is active (its listener is connected).
    pub fn cache_active(&self) -> bool {
        self.cache.as_ref().is_some_and(|c| c.healthy())
    }

    fn lookup(&self, key: &CacheKey) -> (Option<Cached>, u64) {
        match &self.cache {
            Some(c) => {
                let at = c.current();
                (c.get(key, at), at)
            }
            None => (None, 0),
        }
    }

    fn store(&self, key: CacheKey, read_at: u64, value: Cached) {
        if let Some(c) = &self.cache {
            c.put(key, read_at, None, value);
        }
    }

    /// The indexed head, `None` before the first checkpoint.
    pub async fn head(&self, contract: Address) -> anyhow::Result<Option<IndexedHead>> {
        Ok(db::read::head(&self.pool, self.chain_id, contract).await?.map(IndexedHead::from))
    }

    /// `balanceOf` / `signedBalanceOf` / `accountInfo` of `account` at the indexed head.
    /// `None` while the deployment has no checkpoint yet.
    pub async fn balance(&self, contract: Address, account: Address) -> anyhow::Result<Option<AccountView>> {
        let key = CacheKey::Balance(contract, account);
        let (hit, read_at) = self.lookup(&key);
        if let Some(Cached::Balance(v)) = hit {
            return Ok(Some(v));
        }
        let v = self.balance_db(contract, account).await?;
        if let Some(v) = &v {
            self.store(key, read_at, Cached::Balance(v.clone()));
        }
        Ok(v)
    }

    async fn balance_db(&self, contract: Address, account: Address) -> anyhow::Result<Option<AccountView>> {
        let Some((head, state)) = db::read::account(&self.pool, self.chain_id, contract, account).await? else {
            return Ok(None);
        };
        let head = IndexedHead::from(head);
        let state = state.unwrap_or_default();
        let live = state.live_balance(head.block_timestamp);
        Ok(Some(AccountView {
            account,
            balance: if live.is_positive() { live.into_raw() } else { U256::ZERO },
            signed_balance: live,
            stored_balance: state.balance,
            income_rate: state.income_rate,
            outgoing_rate: state.outgoing_rate,
            updated: state.updated,
            head,
        }))
    }

    /// `allSubscriptions(subscriber)`, in the contract's order.
    pub async fn subscriptions(&self, contract: Address, subscriber: Address) -> anyhow::Result<Option<Subscriptions>> {
        let key = CacheKey::Subscriptions(contract, subscriber);
        let (hit, read_at) = self.lookup(&key);
        if let Some(Cached::Subscriptions(v)) = hit {
            return Ok(Some(v));
        }
        let (streams, head, _) = self.streams(contract, StreamsOf::Subscriber, subscriber).await?;
        let v = head.map(|head| Subscriptions { streams, head });
        if let Some(v) = &v {
            self.store(key, read_at, Cached::Subscriptions(v.clone()));
        }
        Ok(v)
    }

    /// Streams paying `author`, oldest first, with the per-stream and total income rates.
    pub async fn incoming_streams(
        &self,
        contract: Address,
        author: Address,
    ) -> anyhow::Result<Option<IncomingStreams>> {
        let key = CacheKey::Incoming(contract, author);
        let (hit, read_at) = self.lookup(&key);
        if let Some(Cached::Incoming(v)) = hit {
            return Ok(Some(v));
        }
        let (streams, head, income_rate) = self.streams(contract, StreamsOf::Author, author).await?;
        let Some(head) = head else { return Ok(None) };
        let streams_income_rate = streams.iter().map(|s| s.income_rate).fold(U256::ZERO, |a, b| a + b);
        let v = IncomingStreams { author, streams, streams_income_rate, income_rate, head };
        self.store(key, read_at, Cached::Incoming(v.clone()));
        Ok(Some(v))
    }

    /// `bySigAccountNonces(account)`: the next account nonce.
    pub async fn nonce(&self, contract: Address, account: Address) -> anyhow::Result<U256> {
        let key = CacheKey::Nonce(contract, account);
        let (hit, read_at) = self.lookup(&key);
        if let Some(Cached::Nonce(v)) = hit {
            return Ok(v);
        }
        let v = db::read::account_nonce(&self.pool, self.chain_id, contract, account).await?.unwrap_or_default();
        self.store(key, read_at, Cached::Nonce(v));
        Ok(v)
    }

    /// `bySigSelectorNonces(account, selector)`.
    pub async fn selector_nonce(&self, contract: Address, account: Address, selector: [u8; 4]) -> anyhow::Result<U256> {
        Ok(db::read::selector_nonce(&self.pool, self.chain_id, contract, account, selector).await?.unwrap_or_default())
    }

    /// Indexed head vs the chain head last seen by the indexer; `None` before the first run.
    pub async fn lag(&self, contract: Address) -> anyhow::Result<Option<Lag>> {
        Ok(db::read::checkpoint_age(&self.pool, self.chain_id, contract).await?.map(|c| Lag {
            indexed_block: c.indexed_block,
            chain_head: c.chain_head.max(c.indexed_block),
            blocks: c.chain_head.saturating_sub(c.indexed_block),
            since_update: c.since_update,
        }))
    }

    /// The checkpoint, the account's income rate, and the streams on `side` of `who`, read in
    /// one statement (see [`db::read::streams`]).
    async fn streams(
        &self,
        contract: Address,
        side: StreamsOf,
        who: Address,
    ) -> anyhow::Result<(Vec<StreamView>, Option<IndexedHead>, U256)> {
        let Some((head, income, rows)) = db::read::streams(&self.pool, self.chain_id, contract, side, who).await?
        else {
            return Ok((Vec::new(), None, U256::ZERO));
        };
        let streams = rows
            .into_iter()
            .map(|r| StreamView {
                subscriber: r.subscriber,
                author: r.author,
                encoded_rates: r.encoded_rates,
                income_rate: r.income_rate,
                outgoing_rate: r.outgoing_rate,
                project_id: r.project_id,
                since_block: r.since_block,
                since_timestamp: r.since_timestamp,
            })
            .collect();
        Ok((streams, Some(head.into()), income))
    }
}

impl From<db::read::Head> for IndexedHead {
    fn from(h: db::read::Head) -> Self {
        Self { block_number: h.block_number, block_timestamp: h.block_timestamp }
    }
}
