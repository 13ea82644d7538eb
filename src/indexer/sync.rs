//! The sync loop: backfill far behind the head with adaptive `eth_getLogs` ranges (fetching
//! ahead while the previous range is written), then follow the head block by block, detecting
//! reorgs by parent hash and rolling back to the common ancestor.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use alloy::primitives::Address;
use anyhow::Context;
use futures::{StreamExt, stream::FuturesOrdered};
use sqlx::PgPool;
use tokio::sync::{mpsc, watch};

use super::{IndexerConfig, IndexerStatus, derive::StateCache, events::decode_logs, source::LogSource};
use crate::store::index::{self as store, Batch, CommitError, Scope, lock};

/// What one call of [`Indexer::step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing new: the index is at the chain head.
    Idle,
    /// Indexed blocks up to `to`.
    Advanced { to: u64, events: usize },
    /// Rolled back `depth` blocks to the common ancestor `ancestor`.
    Reorg { ancestor: u64, depth: u64 },
    /// The chain moved while fetching (a reorg in flight); try again.
    Retry,
}

/// The indexed head of each `(chain id, deployment)` this process indexes, as its last commit
/// left it: a read-your-writes wait watches it instead of polling the database.
pub type LocalHeads = watch::Sender<HashMap<(u64, Address), u64>>;

/// Indexes one StreamPay deployment into Postgres.
pub struct Indexer<S: LogSource> {
    source: Arc<S>,
    pool: PgPool,
    scope: Scope,
    start_block: u64,
    cfg: IndexerConfig,
    /// Current `eth_getLogs` range in blocks, adapted to the provider.
    range: AtomicU64,
    /// Largest range not known to fail: set below a refused range, doubled back towards
    /// `max_range` after a run of successes (a limit may have been a transient timeout).
    ceiling: AtomicU64,
    successes: AtomicU64,
    status: watch::Sender<IndexerStatus>,
    /// Cuts an idle wait short (a relayed call was mined: read-your-writes).
    wake: Option<Arc<tokio::sync::Notify>>,
    /// Where each step's indexed head is told to this process (see [`LocalHeads`]).
    local_heads: Option<Arc<LocalHeads>>,
    /// Set once [`Indexer::run`] holds the deployment's lock: no other indexer writes the
    /// checkpoint after that, so this one's own last write of it ([`Indexer::known`]) is used
    /// instead of reading it back at every step.
    sole_writer: AtomicBool,
    /// The checkpoint as this indexer's last commit or head touch left it (`None`: read it; so
    /// after a failed commit, a rollback, or before the first step).
    known: Mutex<Option<store::Checkpoint>>,
}

impl<S: LogSource> Indexer<S> {
    pub fn new(
        source: Arc<S>,
        pool: PgPool,
        chain_id: u64,
        contract: Address,
        start_block: u64,
        cfg: IndexerConfig,
    ) -> Self {
        let range = AtomicU64::new(cfg.initial_range.max(1));
        let status = watch::Sender::new(IndexerStatus { chain_id, contract, ..Default::default() });
        let ceiling = AtomicU64::new(cfg.max_range.max(1));
        Self {
            source,
            pool,
            scope: Scope { chain_id, contract },
            start_block,
            cfg,
            range,
            ceiling,
            successes: AtomicU64::new(0),
            status,
            wake: None,
            local_heads: None,
            sole_writer: AtomicBool::new(false),
            known: Mutex::new(None),
        }
    }

    /// Wakes the idle loop of [`Indexer::run`] whenever `wake` is notified.
    pub fn with_wake(mut self, wake: Arc<tokio::sync::Notify>) -> Self {
        self.wake = Some(wake);
        self
    }

    /// Tells `heads` the indexed head after every step.
    pub fn with_local_heads(mut self, heads: Arc<LocalHeads>) -> Self {
        self.local_heads = Some(heads);
        self
    }

    /// Indexes up to the chain's head now, unless another indexer (of this process or of another
    /// replica) holds this deployment's lock; answers whether it ran. Used to catch the index up
    /// with a relayed call's receipt when no indexer runs for the deployment.
    pub async fn catch_up_if_idle(&self) -> anyhow::Result<bool> {
        let mut conn = self.pool.acquire().await?;
        if !lock::try_lock(&mut conn, self.scope).await? {
            return Ok(false);
        }
        let result = self.sync_to_head().await;
        let unlocked = lock::unlock(&mut conn, self.scope).await;
        if unlocked.is_err() {
            drop(conn.detach()); // closing the session frees the lock
        }
        result.map(|()| true)
    }

    /// [`Indexer::sync_to_head`] holding the deployment's lock (waiting for it), so it never
    /// races another indexer of the same deployment.
    pub async fn sync_to_head_exclusive(&self) -> anyhow::Result<()> {
        let mut conn = self.pool.acquire().await?;
        lock::lock(&mut conn, self.scope).await?;
        let result = self.sync_to_head().await;
        let unlocked = lock::unlock(&mut conn, self.scope).await;
        if unlocked.is_err() {
            drop(conn.detach());
        }
        result
    }

    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// Indexed head vs chain head, updated after every step.
    pub fn status(&self) -> watch::Receiver<IndexerStatus> {
        self.status.subscribe()
    }

    /// Current adaptive `eth_getLogs` range.
    pub fn range(&self) -> u64 {
        self.range.load(Ordering::Relaxed)
    }

    /// The checkpoint this indexer last wrote, while it is the deployment's sole writer.
    fn known(&self) -> Option<store::Checkpoint> {
        if !self.sole_writer.load(Ordering::Relaxed) {
            return None;
        }
        *self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_known(&self, cp: Option<store::Checkpoint>) {
        *self.known.lock().unwrap_or_else(|e| e.into_inner()) = cp;
    }

    /// The checkpoint: the one this indexer last wrote while it is the sole writer (a stale one
    /// cannot be committed on: the commit re-reads it under a row lock and checks that the batch
    /// continues it), otherwise read; created below the start block on first run.
    async fn checkpoint(&self) -> anyhow::Result<store::Checkpoint> {
        if let Some(cp) = self.known() {
            return Ok(cp);
        }
        let mut conn = self.pool.acquire().await?;
        if let Some(cp) = store::load_checkpoint(&mut conn, self.scope, false).await? {
            self.set_known(Some(cp));
            return Ok(cp);
        }
        drop(conn);
        // With a start block of 0 the checkpoint starts at genesis, whose logs are not read: no
        // contract emits events in the genesis block.
        let n = self.start_block.saturating_sub(1);
        let below = self.source.header(n).await?.with_context(|| format!("block {n} not found"))?;
        store::init_checkpoint(&self.pool, self.scope, below).await?;
        let mut conn = self.pool.acquire().await?;
        store::load_checkpoint(&mut conn, self.scope, false).await?.context("checkpoint vanished")
    }

    /// One iteration: backfill, follow, or roll back.
    pub async fn step(&self) -> anyhow::Result<Step> {
        let cp = self.checkpoint().await?;
        let head = self.source.head().await?;
        let step = if head > cp.block_number + self.cfg.reorg_window {
            self.backfill(cp, head - self.cfg.reorg_window, head).await?
        } else if head <= cp.block_number {
            let probe = self.source.header(head).await?.context("no header at the head")?;
            if head == cp.block_number && probe.hash == cp.block_hash {
                if cp.chain_head != head {
                    store::touch_head(&self.pool, self.scope, head).await?;
                    self.set_known(Some(store::Checkpoint { chain_head: head, ..cp }));
                }
                Step::Idle
            } else if head < cp.block_number
                && store::stored_blocks(&self.pool, self.scope, head, head)
                    .await?
                    .first()
                    .is_some_and(|(_, h)| *h == probe.hash)
            {
                // The chain got shorter (a rollback) but kept our block at its new head.
                self.roll_back(cp.block_number, head).await?
            } else {
                self.reorg(cp, head).await?
            }
        } else {
            self.follow(cp, head).await?
        };
        self.publish(head).await;
        Ok(step)
    }

    /// Steps until the index reaches the chain head (for tests and one-shot runs).
    pub async fn sync_to_head(&self) -> anyhow::Result<()> {
        let mut retries = 0;
        loop {
            match self.step().await? {
                Step::Idle => return Ok(()),
                Step::Retry => {
                    retries += 1;
                    anyhow::ensure!(retries < 50, "the chain kept moving under the indexer");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                _ => {}
            }
        }
    }

    /// Runs until `shutdown` resolves, holding a Postgres advisory lock so that of several
    /// relayer replicas exactly one writes this deployment's index (the others stand by).
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
        tokio::pin!(shutdown);
        let mut lock_conn = self.pool.acquire().await?.detach();
        loop {
            if lock::try_lock(&mut lock_conn, self.scope).await? {
                self.sole_writer.store(true, Ordering::Relaxed);
                break;
            }
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                _ = tokio::time::sleep(self.cfg.poll_interval * 10) => {}
            }
        }
        tracing::info!(contract = %self.scope.contract, "indexer started");
        let mut failures = 0u32;
        let mut last_log = Instant::now();
        loop {
            // A wake-up that comes while a step runs is kept (a `Notified` hears `notify_waiters`
            // from its creation on): the step may have read the head before the block the waker
            // waits for, so the next one starts at once.
            let woken = self.wake.as_ref().map(|w| w.notified());
            let step = tokio::select! {
                _ = &mut shutdown => break,
                s = self.step() => s,
            };
            let pause = match step {
                Ok(Step::Idle) | Ok(Step::Retry) => {
                    failures = 0;
                    self.cfg.poll_interval
                }
                Ok(Step::Advanced { .. }) => {
                    failures = 0;
                    Duration::ZERO
                }
                Ok(Step::Reorg { ancestor, depth }) => {
                    failures = 0;
                    tracing::warn!(contract = %self.scope.contract, ancestor, depth, "chain reorganised; rolled back");
                    Duration::ZERO
                }
                Err(e) => {
                    failures += 1;
                    let backoff = self.cfg.poll_interval * 2u32.saturating_pow(failures.min(6));
                    tracing::error!(contract = %self.scope.contract, error = format!("{e:#}"), "indexer step failed");
                    backoff
                }
            };
            if last_log.elapsed() >= Duration::from_secs(30) {
                let s = self.status.borrow().clone();
                tracing::info!(contract = %self.scope.contract, indexed = s.indexed_block, head = s.chain_head, lag = s.lag_blocks, "indexer lag");
                last_log = Instant::now();
            }
            if !pause.is_zero() {
                // Idle: a websocket source wakes us on the next head; errors back off fully.
                let wait = async {
                    if failures == 0 {
                        self.source.wait_for_block(pause).await
                    } else {
                        tokio::time::sleep(pause).await
                    }
                };
                let woken = async {
                    match woken {
                        Some(w) if failures == 0 => w.await,
                        _ => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = wait => {}
                    _ = woken => {}
                }
            }
        }
        let _ = lock::unlock(&mut lock_conn, self.scope).await;
        Ok(())
    }

    async fn publish(&self, head: u64) {
        let cp = match self.known() {
            Some(cp) => Some(cp),
            None => match self.pool.acquire().await {
                Ok(mut conn) => store::load_checkpoint(&mut conn, self.scope, false).await.ok().flatten(),
                Err(_) => None,
            },
        };
        if let Some(cp) = cp {
            self.status.send_modify(|s| {
                s.indexed_block = cp.block_number;
                s.indexed_timestamp = cp.block_timestamp;
                s.chain_head = head.max(cp.block_number);
                s.lag_blocks = head.saturating_sub(cp.block_number);
                s.updated_at = Some(std::time::SystemTime::now());
            });
            if let Some(heads) = &self.local_heads {
                let key = (self.scope.chain_id, self.scope.contract);
                heads.send_if_modified(|m| m.insert(key, cp.block_number) != Some(cp.block_number));
            }
        }
    }

    /// Commits, retrying once through the de-duplicating insert when the COPY met logs that are
    /// already stored (so a re-ingest never double-applies an event).
    async fn commit(&self, batch: &Batch) -> anyhow::Result<store::CommitStats> {
        // Journal once per key for a reorgable batch; far behind the head the blocks are final.
        let cache = || if batch.reorgable { StateCache::per_batch(batch.from) } else { StateCache::new(u64::MAX) };
        let committed = match store::commit(&self.pool, self.scope, self.cfg.reorg_window, batch, false, cache()).await
        {
            Err(e) if is_unique_violation(&e) => {
                tracing::warn!(from = batch.from, "logs already stored; re-ingesting without duplicates");
                store::commit(&self.pool, self.scope, self.cfg.reorg_window, batch, true, cache()).await
            }
            other => other,
        };
        self.set_known(committed.as_ref().ok().map(|stats| stats.checkpoint));
        committed
    }

    /// Indexes `(cp, until]`, blocks far enough behind the head to be final. A fetcher runs
    /// ahead of the writer through a bounded channel so RPC and database work overlap.
    async fn backfill(&self, cp: store::Checkpoint, until: u64, head: u64) -> anyhow::Result<Step> {
        let (tx, mut rx) = mpsc::channel::<Batch>(self.cfg.pipeline_depth.max(1));
        let fetcher = async move {
            let mut next = cp.block_number + 1;
            let mut failures = 0u32;
            // Ranges in flight, in block order. Each is fetched and decoded on its own task, so
            // JSON parsing, decoding and COPY-text building use the other core while the writer
            // waits on Postgres.
            let mut inflight: FuturesOrdered<_> = FuturesOrdered::new();
            loop {
                while next <= until && inflight.len() < self.cfg.fetch_concurrency.max(1) {
                    let range = self.range();
                    let to = until.min(next.saturating_add(range - 1));
                    let (source, scope) = (self.source.clone(), self.scope);
                    let task = tokio::spawn(fetch_final(source, scope, next, to, head));
                    inflight.push_back(async move { (next, to, range, task.await) });
                    next = to + 1;
                }
                let Some((from, to, range, result)) = inflight.next().await else { break };
                match result.map_err(anyhow::Error::from).and_then(|r| r) {
                    Ok(batch) => {
                        failures = 0;
                        self.adapt(batch.events.len(), range);
                        if tx.send(batch).await.is_err() {
                            break; // the writer failed; its error is reported
                        }
                    }
                    Err(e) => {
                        // Shrink and retry from the failed range (ranges after it are dropped):
                        // providers refuse large ranges (too many results, timeouts). At one
                        // block there is nothing left to shrink; back off.
                        inflight = FuturesOrdered::new();
                        next = from;
                        failures += 1;
                        self.range.store((range / 2).max(1), Ordering::Relaxed);
                        self.ceiling.store(range.saturating_sub(1).max(1), Ordering::Relaxed);
                        self.successes.store(0, Ordering::Relaxed);
                        tracing::warn!(
                            from,
                            to,
                            range,
                            error = format!("{e:#}"),
                            "eth_getLogs failed; shrinking the range"
                        );
                        if range == 1 {
                            anyhow::ensure!(failures < 8, "eth_getLogs keeps failing at block {from}: {e:#}");
                            tokio::time::sleep(Duration::from_millis(100 * u64::from(failures))).await;
                        }
                    }
                }
            }
            anyhow::Ok(())
        };
        let writer = async {
            let (mut to, mut events) = (cp.block_number, 0);
            while let Some(batch) = rx.recv().await {
                let stats = self.commit(&batch).await?;
                to = batch.to.number;
                events += stats.events;
            }
            anyhow::Ok((to, events))
        };
        let ((), (to, events)) = tokio::try_join!(fetcher, writer)?;
        Ok(Step::Advanced { to, events })
    }

    fn adapt(&self, logs: usize, range: u64) {
        let max = self.cfg.max_range.max(1);
        if self.successes.fetch_add(1, Ordering::Relaxed) >= 32 {
            self.successes.store(0, Ordering::Relaxed);
            let c = self.ceiling.load(Ordering::Relaxed);
            self.ceiling.store(c.saturating_mul(2).min(max), Ordering::Relaxed);
        }
        let ceiling = self.ceiling.load(Ordering::Relaxed);
        let target = self.cfg.target_logs.max(1);
        let next = if logs > target {
            (range / 2).max(1)
        } else if logs < target / 2 {
            range.saturating_mul(2).min(ceiling)
        } else {
            range
        };
        self.range.store(next, Ordering::Relaxed);
    }

    /// Indexes `(cp, head]` near the head: every header is fetched and chained to the
    /// checkpoint, and every log must belong to one of those headers.
    async fn follow(&self, cp: store::Checkpoint, head: u64) -> anyhow::Result<Step> {
        let to = head.min(cp.block_number + self.cfg.max_follow_range.max(1));
        let started = Instant::now();
        let headers = self.source.headers(cp.block_number + 1, to).await?;
        tracing::debug!(from = cp.block_number + 1, to, ms = started.elapsed().as_secs_f64() * 1e3, "fetched headers");
        let Some(first) = headers.first() else { return Ok(Step::Retry) };
        if first.parent_hash != cp.block_hash {
            return self.reorg(cp, cp.block_number).await;
        }
        if headers.windows(2).any(|w| w[1].parent_hash != w[0].hash) {
            return Ok(Step::Retry);
        }
        let last = *headers.last().expect("not empty");
        // The newest block's logs are asked for by its hash: a node that does not have the block
        // (behind the one its header came from) errors rather than answering none.
        let logs = if first.number == last.number {
            self.source.logs_at(self.scope.contract, last).await?
        } else {
            let (mut older, newest) = tokio::try_join!(
                self.source.logs(self.scope.contract, first.number, last.number - 1),
                self.source.logs_at(self.scope.contract, last)
            )?;
            older.extend(newest);
            older
        };
        let base = first.number;
        for l in &logs {
            let idx = l.block_number.checked_sub(base).map(|i| i as usize);
            if idx.and_then(|i| headers.get(i)).is_none_or(|h| h.hash != l.block_hash) {
                return Ok(Step::Retry); // the logs come from another fork than the headers
            }
        }
        let events = decode_logs(&logs, |n| headers.get((n - base) as usize).map(|h| h.timestamp))?;
        let batch = Batch { from: base, to: last, headers, events, copy: None, reorgable: true, chain_head: head };
        match self.commit(&batch).await {
            Ok(stats) => Ok(Step::Advanced { to: last.number, events: stats.events }),
            Err(e) if matches!(e.downcast_ref::<CommitError>(), Some(CommitError::ParentMismatch { .. })) => {
                Ok(Step::Retry)
            }
            Err(e) => Err(e),
        }
    }

    /// Walks back from `top` to the highest stored block the chain still has, then rolls back.
    async fn reorg(&self, cp: store::Checkpoint, top: u64) -> anyhow::Result<Step> {
        let top = top.min(cp.block_number);
        for (number, hash) in store::stored_blocks(&self.pool, self.scope, cp.final_block, top).await? {
            if let Some(h) = self.source.header(number).await?
                && h.hash == hash
            {
                return self.roll_back(cp.block_number, number).await;
            }
        }
        anyhow::bail!(
            "reorg deeper than the reorg window: no block between {} and {top} is still canonical",
            cp.final_block
        )
    }

    async fn roll_back(&self, from: u64, ancestor: u64) -> anyhow::Result<Step> {
        self.set_known(None);
        let (ancestor, removed) = store::rollback(&self.pool, self.scope, ancestor).await?;
        tracing::warn!(contract = %self.scope.contract, ancestor, depth = from - ancestor, removed, "rolled back orphaned blocks");
        Ok(Step::Reorg { ancestor, depth: from - ancestor })
    }
}

/// Fetches and decodes one final range: its logs, the header of its last block (the new
/// checkpoint), and the COPY text of its events.
async fn fetch_final<S: LogSource>(
    source: Arc<S>,
    scope: Scope,
    from: u64,
    to: u64,
    head: u64,
) -> anyhow::Result<Batch> {
    let started = Instant::now();
    let (logs, header) = tokio::try_join!(source.logs(scope.contract, from, to), source.header(to))?;
    let header = header.with_context(|| format!("block {to} not found"))?;
    // Nodes that do not put `blockTimestamp` in logs: fetch the headers of those blocks.
    let mut missing: Vec<u64> = logs.iter().filter(|l| l.block_timestamp.is_none()).map(|l| l.block_number).collect();
    missing.dedup();
    let mut times = std::collections::HashMap::new();
    for n in missing {
        let h = source.header(n).await?.with_context(|| format!("block {n} not found"))?;
        times.insert(n, h.timestamp);
    }
    let events = decode_logs(&logs, |n| times.get(&n).copied())?;
    let copy = Some(store::copy_text(scope, &events));
    tracing::debug!(from, to, logs = logs.len(), ms = started.elapsed().as_secs_f64() * 1e3, "fetched range");
    Ok(Batch { from, to: header, headers: vec![header], events, copy, reorgable: false, chain_head: head })
}

fn is_unique_violation(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<sqlx::Error>()
            .and_then(|e| e.as_database_error())
            .is_some_and(|d| d.code().as_deref() == Some("23505"))
    })
}
