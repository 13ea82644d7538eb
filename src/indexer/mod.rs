//! Event indexer (SPEC §6): mirrors every StreamPay event into Postgres and keeps the state the
//! API reads (balances, streams, nonces, projects) derived from them, reorg-safe.
//!
//! | module | what lives there |
//! |---|---|
//! | [`source`] | the [`LogSource`] trait in front of the RPC, and its alloy implementation |
//! | [`events`] | decoding logs into [`Event`]s and their flat row in `idx_events` |
//! | [`derive`] | the contract's accounting re-computed from events, with an undo journal |
//! | [`sync`] | the loop: adaptive-range backfill, head following, reorg detection |
//! | [`read`] | the read model the API serves: balance, subscriptions, incoming streams, nonce, lag |
//!
//! Its tables are written and read through [`crate::store::index`]: one transaction per batch
//! (COPY of events, derived rows, block hashes, checkpoint), the rollback, and the reads.
//!
//! Flow: far behind the head (more than `reorg_window` blocks) ranges are final, so the
//! backfill fetches `eth_getLogs` over adaptive ranges ahead of the writer and commits each
//! range without undo data. Near the head every block's header is fetched and chained to the
//! checkpoint by parent hash; changes are journaled per block so that a reorg — detected as a
//! parent-hash mismatch, or a head hash that changed — walks back to the common ancestor, restores
//! the derived rows from the journal, deletes the orphaned events and re-ingests.

pub mod derive;
pub mod events;
pub mod read;
pub mod source;
pub mod sync;

use std::{sync::Arc, time::Duration, time::SystemTime};

use alloy::primitives::Address;
use anyhow::Context;
use sqlx::PgPool;

pub use events::{Event, IndexedEvent, Rates};
pub use read::{AccountView, IncomingStreams, IndexReader, IndexedHead, Lag, StreamView, Subscriptions};
pub use source::{BlockHeader, LogSource, RawLog, RpcLogSource};
pub use sync::{Indexer, LocalHeads, Step};

/// Tunables of the indexer: the config file's `[indexer]` section ([`IndexerSettings`]), each
/// key overridden by the `STREAMPAY_INDEXER_*` variable named on its field.
#[derive(Debug, Clone)]
pub struct IndexerConfig {
    /// `STREAMPAY_INDEXER_POLL_MS`: how often to poll the head when caught up (default 500 ms).
    pub poll_interval: Duration,
    /// `STREAMPAY_INDEXER_REORG_WINDOW`: blocks below the head that may still be reorganised:
    /// their hashes and undo entries are kept, and the backfill treats only older blocks as
    /// final. Set it above the chain's confirmation depth (default 128).
    pub reorg_window: u64,
    /// `STREAMPAY_INDEXER_INITIAL_RANGE`: first `eth_getLogs` range in blocks (default 100; it
    /// doubles while ranges return less than half of `target_logs`).
    pub initial_range: u64,
    /// `STREAMPAY_INDEXER_MAX_RANGE`: largest range the adaptive backfill grows to (default 100,000).
    pub max_range: u64,
    /// `STREAMPAY_INDEXER_TARGET_LOGS`: logs per request the range adapts towards (default 10,000).
    pub target_logs: usize,
    /// `STREAMPAY_INDEXER_FOLLOW_RANGE`: most blocks fetched per step near the head (default 100).
    pub max_follow_range: u64,
    /// `STREAMPAY_INDEXER_PIPELINE`: ranges fetched ahead of the writer (default 4).
    pub pipeline_depth: usize,
    /// `STREAMPAY_INDEXER_FETCH_CONCURRENCY`: `eth_getLogs` requests in flight during the
    /// backfill (default 2).
    pub fetch_concurrency: usize,
    /// `STREAMPAY_INDEXER_READ_CACHE` (`true`/`false`): whether the API's reads keep answers in
    /// memory until the next index commit, which every replica hears as a Postgres `NOTIFY`
    /// (off in `IndexerConfig::default()`; `serve` turns it on unless configured off). An answer
    /// can then trail a commit by the notification's delivery time.
    pub read_cache: bool,
}

impl Default for IndexerConfig {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(500),
            reorg_window: 128,
            initial_range: 100,
            max_range: 100_000,
            target_logs: 10_000,
            max_follow_range: 100,
            pipeline_depth: 4,
            fetch_concurrency: 2,
            read_cache: false,
        }
    }
}

impl IndexerConfig {
    /// Defaults overridden by `STREAMPAY_INDEXER_*` variables read through `get`.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let mut c = Self::default();
        c.apply_env(get)?;
        Ok(c)
    }

    /// Applies the `STREAMPAY_INDEXER_*` variables read through `get` on top of `self`.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> anyhow::Result<()> {
        let num = |name: &str| -> anyhow::Result<Option<u64>> {
            get(name)
                .filter(|v| !v.trim().is_empty())
                .map(|v| v.trim().parse::<u64>().with_context(|| format!("{name}={v} is not a number")))
                .transpose()
        };
        let file = IndexerSettings {
            poll_interval_ms: num("STREAMPAY_INDEXER_POLL_MS")?,
            reorg_window: num("STREAMPAY_INDEXER_REORG_WINDOW")?,
            initial_range: num("STREAMPAY_INDEXER_INITIAL_RANGE")?,
            max_range: num("STREAMPAY_INDEXER_MAX_RANGE")?,
            target_logs: num("STREAMPAY_INDEXER_TARGET_LOGS")?,
            follow_range: num("STREAMPAY_INDEXER_FOLLOW_RANGE")?,
            pipeline_depth: num("STREAMPAY_INDEXER_PIPELINE")?,
            fetch_concurrency: num("STREAMPAY_INDEXER_FETCH_CONCURRENCY")?,
            read_cache: match get("STREAMPAY_INDEXER_READ_CACHE").as_deref().map(str::trim) {
                None | Some("") => None,
                Some("true" | "1") => Some(true),
                Some("false" | "0") => Some(false),
                Some(other) => anyhow::bail!("STREAMPAY_INDEXER_READ_CACHE={other}: expected true or false"),
            },
        };
        self.apply(&file);
        Ok(())
    }

    /// Applies the values set in a config file's `[indexer]` section.
    pub fn apply(&mut self, s: &IndexerSettings) {
        if let Some(v) = s.poll_interval_ms {
            self.poll_interval = Duration::from_millis(v.max(1));
        }
        if let Some(v) = s.reorg_window {
            self.reorg_window = v;
        }
        if let Some(v) = s.initial_range {
            self.initial_range = v.max(1);
        }
        if let Some(v) = s.max_range {
            self.max_range = v.max(1);
        }
        if let Some(v) = s.target_logs {
            self.target_logs = v.max(1) as usize;
        }
        if let Some(v) = s.follow_range {
            self.max_follow_range = v.max(1);
        }
        if let Some(v) = s.pipeline_depth {
            self.pipeline_depth = v.max(1) as usize;
        }
        if let Some(v) = s.fetch_concurrency {
            self.fetch_concurrency = v.max(1) as usize;
        }
        if let Some(v) = s.read_cache {
            self.read_cache = v;
        }
    }
}

/// The `[indexer]` section of the config file; each key has the `STREAMPAY_INDEXER_*` override
/// named on the matching [`IndexerConfig`] field.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IndexerSettings {
    pub poll_interval_ms: Option<u64>,
    pub reorg_window: Option<u64>,
    pub initial_range: Option<u64>,
    pub max_range: Option<u64>,
    pub target_logs: Option<u64>,
    pub follow_range: Option<u64>,
    pub pipeline_depth: Option<u64>,
    pub fetch_concurrency: Option<u64>,
    pub read_cache: Option<bool>,
}

/// Progress of one deployment's indexer, published after every step (for `/health` and logs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexerStatus {
    pub chain_id: u64,
    pub contract: Address,
    pub indexed_block: u64,
    pub indexed_timestamp: u64,
    pub chain_head: u64,
    pub lag_blocks: u64,
    pub updated_at: Option<SystemTime>,
}

/// Starts one indexer task per deployment; each stops when `shutdown` fires.
pub fn spawn_all(
    source: RpcLogSource,
    pool: PgPool,
    chain_id: u64,
    deployments: &[crate::chain::Deployment],
    cfg: IndexerConfig,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<anyhow::Result<()>>> {
    let source = Arc::new(source);
    deployments
        .iter()
        .map(|d| {
            let indexer = Indexer::new(source.clone(), pool.clone(), chain_id, d.address, d.start_block, cfg.clone());
            let mut stop = shutdown.clone();
            tokio::spawn(indexer.run(async move {
                let _ = stop.wait_for(|s| *s).await;
            }))
        })
        .collect()
}
