//! One reader of blocks per chain, shared by every sponsor's worker.
//!
//! Every worker needs the latest block each pass and the receipts of every block mined since
//! its last look; read per worker, each block's receipts would be read once per sponsor. Here the
//! latest block is read at most once per [`Blocks::latest`]'s short max age, and each block's
//! receipts once while they are kept (for [`RECEIPTS_MAX_AGE`], the newest [`KEEP_BLOCKS`]
//! numbers at most). Both are single flight: callers that find nothing usable while a read is
//! in flight wait for it and share its answer. Errors and "no such block" are not kept.
//!
//! Kept receipts are served only while they agree with the newest head read: not above it, and
//! at the head and its parent only from the block with that hash (a rollback or a reorg at the
//! tip is not served from before it). A deeper reorg can be served stale for at most
//! [`RECEIPTS_MAX_AGE`], which is no worse than a worker having read the block a moment earlier:
//! finality re-checks every mined row's block against the chain (`finality`).

use std::{collections::BTreeMap, future::Future, sync::Arc, time::Duration};

use alloy::{
    eips::BlockId,
    primitives::B256,
    providers::{DynProvider, Provider},
    rpc::types::TransactionReceipt,
};
use anyhow::Context;
use tokio::time::Instant;

use crate::{
    chain::{Head, HeadClock},
    indexer::BlockHeader,
};

/// Block numbers whose receipts are kept (the newest).
const KEEP_BLOCKS: usize = 128;

/// How long a block's receipts are served after they were read.
const RECEIPTS_MAX_AGE: Duration = Duration::from_secs(3);

/// Longest max age of the latest block (see [`Blocks::new`]).
const HEAD_MAX_AGE_CAP: Duration = Duration::from_millis(50);

/// A block's receipts as read, with the block's hash (`None`: no receipts, nothing to tell).
#[derive(Debug, Clone)]
struct Kept {
    at: Instant,
    hash: Option<B256>,
    receipts: Arc<Vec<TransactionReceipt>>,
}

/// One block number's place in the cache: its lock is held while its receipts are read.
type Slot = Arc<tokio::sync::Mutex<Option<Kept>>>;

#[derive(Debug)]
pub(super) struct Blocks {
    /// The newest head read, shared by the workers for a short max age.
    head: HeadClock,
    receipts: std::sync::Mutex<BTreeMap<u64, Slot>>,
    /// How fast the chain makes blocks, as the heads read show it.
    pace: std::sync::Mutex<Pace>,
    /// The newest head read, told to whoever watches ([`Blocks::heads`]).
    heads: tokio::sync::watch::Sender<Option<BlockHeader>>,
}

/// The chain's pace: the newest head number seen to change and when, and a moving average of
/// the time per block between such changes (microseconds; 0: not measured yet).
#[derive(Debug, Default)]
struct Pace {
    last: Option<(u64, Instant)>,
    per_block_us: u64,
}

impl Blocks {
    /// The latest block is served for `poll_interval / 2`, at most [`HEAD_MAX_AGE_CAP`].
    pub fn new(poll_interval: Duration) -> Self {
        Self {
            head: HeadClock::new((poll_interval / 2).min(HEAD_MAX_AGE_CAP)),
            receipts: std::sync::Mutex::new(BTreeMap::new()),
            pace: std::sync::Mutex::default(),
            heads: tokio::sync::watch::Sender::new(None),
        }
    }

    /// The newest head the workers read, changed as they see a new block (the indexer of the
    /// chain wakes on it rather than at its own next poll, and takes the block's header from it).
    pub fn heads(&self) -> tokio::sync::watch::Receiver<Option<BlockHeader>> {
        self.heads.subscribe()
    }

    /// The chain's time per block lately (a moving average over the head changes the workers
    /// saw, an idle stretch counting as one long block); `None` until two changes were seen.
    pub fn block_interval(&self) -> Option<Duration> {
        let pace = self.pace.lock().unwrap_or_else(|e| e.into_inner());
        (pace.per_block_us > 0).then(|| Duration::from_micros(pace.per_block_us))
    }

    fn note_head(&self, head: &Head) {
        let number = head.number;
        let told = BlockHeader { number, hash: head.hash, parent_hash: head.parent_hash, timestamp: head.timestamp };
        // Any other head: a newer block, or a rollback or a reorg at the tip.
        self.heads.send_if_modified(|h| h.replace(told) != Some(told));
        let now = Instant::now();
        let mut pace = self.pace.lock().unwrap_or_else(|e| e.into_inner());
        match pace.last {
            Some((n, _)) if number == n => {}
            Some((n, at)) if number > n => {
                let per_block = (now - at).as_micros() as u64 / (number - n);
                pace.per_block_us = match pace.per_block_us {
                    0 => per_block,
                    avg => (avg * 3 + per_block) / 4,
                }
                .max(1);
                pace.last = Some((number, now));
            }
            // First head, or the chain went back (a reorg, a restarted node): start over from it.
            _ => pace.last = Some((number, now)),
        }
    }

    /// The latest block, read at most `poll_interval / 2` (≤ 50 ms) ago, and not before
    /// `not_before` (a worker that has just sent a transaction asks for a head read after it).
    pub async fn latest(&self, provider: &DynProvider, not_before: Option<Instant>) -> anyhow::Result<Head> {
        let head = self.head.head(provider, not_before).await?;
        self.note_head(&head);
        Ok(head)
    }

    /// Block `n`'s receipts, read once for every worker while they are kept. `None`: the node
    /// has no block `n` (not kept, nor is an error).
    pub async fn receipts(
        &self,
        provider: &DynProvider,
        n: u64,
    ) -> anyhow::Result<Option<Arc<Vec<TransactionReceipt>>>> {
        self.receipts_with(n, || async {
            provider
                .get_block_receipts(BlockId::number(n))
                .await
                .with_context(|| format!("Failed to read the receipts of block {n}"))
        })
        .await
    }

    /// Whether receipts of block `n` with hash `hash` agree with the newest head read.
    fn agrees(&self, n: u64, hash: Option<B256>) -> bool {
        match self.head.last() {
            None => true,
            Some(h) if n > h.number => false,
            Some(h) if n == h.number => hash == Some(h.hash),
            Some(h) if n + 1 == h.number => hash == Some(h.parent_hash),
            Some(_) => true,
        }
    }

    fn usable(&self, n: u64, kept: &Kept) -> bool {
        kept.at.elapsed() < RECEIPTS_MAX_AGE && self.agrees(n, kept.hash)
    }

    async fn receipts_with<F, Fut>(&self, n: u64, read: F) -> anyhow::Result<Option<Arc<Vec<TransactionReceipt>>>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = anyhow::Result<Option<Vec<TransactionReceipt>>>>,
    {
        let slot = {
            let mut slots = self.receipts.lock().unwrap_or_else(|e| e.into_inner());
            if !slots.contains_key(&n) {
                // Receipts no longer served are not held either (a busy chain's blocks are large).
                // A slot being read (locked) or not read yet is left alone.
                slots.retain(|_, s| {
                    s.try_lock().map_or(true, |k| k.as_ref().is_none_or(|k| k.at.elapsed() < RECEIPTS_MAX_AGE))
                });
            }
            let slot = slots.entry(n).or_default().clone();
            while slots.len() > KEEP_BLOCKS {
                slots.pop_first();
            }
            slot
        };
        let mut kept = slot.lock().await;
        if let Some(k) = kept.as_ref()
            && self.usable(n, k)
        {
            return Ok(Some(k.receipts.clone()));
        }
        *kept = None;
        let at = Instant::now();
        let Some(receipts) = read().await? else { return Ok(None) };
        let hash = receipts.first().and_then(|r| r.block_hash);
        let receipts = Arc::new(receipts);
        *kept = Some(Kept { at, hash, receipts: receipts.clone() });
        Ok(Some(receipts))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn head(number: u64, hash: u8, parent: u8) -> Head {
        Head {
            number,
            timestamp: 1_000 + number,
            hash: B256::repeat_byte(hash),
            parent_hash: B256::repeat_byte(parent),
        }
    }

    /// A receipt of a transaction in block `n` with hash `hash`.
    fn receipt(n: u64, hash: u8) -> TransactionReceipt {
        serde_json::from_value(serde_json::json!({
            "type": "0x2",
            "status": "0x1",
            "cumulativeGasUsed": "0x5208",
            "logs": [],
            "logsBloom": format!("0x{}", "00".repeat(256)),
            "transactionHash": B256::repeat_byte(0xee),
            "transactionIndex": "0x0",
            "blockHash": B256::repeat_byte(hash),
            "blockNumber": format!("{n:#x}"),
            "gasUsed": "0x5208",
            "effectiveGasPrice": "0x1",
            "from": alloy::primitives::Address::repeat_byte(1),
            "to": alloy::primitives::Address::repeat_byte(2),
            "contractAddress": null,
        }))
        .expect("a receipt")
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_one_read_of_the_latest_block_until_it_is_old() {
        let blocks = Blocks::new(Duration::from_millis(100));
        let reads = AtomicUsize::new(0);
        let read = || async {
            reads.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok(head(7, 7, 6))
        };
        let all = futures::future::join_all((0..8).map(|_| blocks.head.head_with(None, read))).await;
        assert!(all.iter().all(|h| h.as_ref().unwrap().number == 7));
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        // Still fresh: served.
        blocks.head.head_with(None, read).await.unwrap();
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        // Asked before `not_before`: read again.
        blocks.head.head_with(Some(Instant::now()), read).await.unwrap();
        assert_eq!(reads.load(Ordering::SeqCst), 2);
        // Older than poll_interval / 2 = 50 ms: read again.
        tokio::time::advance(Duration::from_millis(50)).await;
        blocks.head.head_with(None, read).await.unwrap();
        assert_eq!(reads.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn an_error_is_not_kept() {
        let blocks = Blocks::new(Duration::from_millis(100));
        assert!(blocks.head.head_with(None, || async { anyhow::bail!("down") }).await.is_err());
        assert_eq!(blocks.head.head_with(None, || async { Ok(head(3, 3, 2)) }).await.unwrap().number, 3);
        let err = blocks.receipts_with(3, || async { anyhow::bail!("down") }).await;
        assert!(err.is_err());
        let none = blocks.receipts_with(3, || async { Ok(None) }).await.unwrap();
        assert!(none.is_none());
        let some = blocks.receipts_with(3, || async { Ok(Some(vec![receipt(3, 3)])) }).await.unwrap();
        assert_eq!(some.unwrap().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_blocks_receipts_are_read_once_for_concurrent_callers_and_kept_a_while() {
        let blocks = Blocks::new(Duration::from_millis(100));
        let reads = AtomicUsize::new(0);
        let read = || async {
            reads.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok(Some(vec![receipt(5, 5)]))
        };
        let all = futures::future::join_all((0..4).map(|_| blocks.receipts_with(5, read))).await;
        assert!(all.iter().all(|r| r.as_ref().unwrap().as_ref().unwrap().len() == 1));
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        // Another block is its own read.
        blocks.receipts_with(4, read).await.unwrap();
        assert_eq!(reads.load(Ordering::SeqCst), 2);
        tokio::time::advance(RECEIPTS_MAX_AGE - Duration::from_millis(100)).await;
        blocks.receipts_with(5, read).await.unwrap();
        assert_eq!(reads.load(Ordering::SeqCst), 2);
        tokio::time::advance(Duration::from_millis(100)).await;
        blocks.receipts_with(5, read).await.unwrap();
        assert_eq!(reads.load(Ordering::SeqCst), 3);
        // Expired receipts are dropped when another block is read.
        tokio::time::advance(RECEIPTS_MAX_AGE).await;
        blocks.receipts_with(6, read).await.unwrap();
        assert_eq!(blocks.receipts.lock().unwrap().keys().copied().collect::<Vec<_>>(), vec![6]);
    }

    #[tokio::test(start_paused = true)]
    async fn receipts_of_a_block_that_is_no_longer_the_head_or_its_parent_are_read_again() {
        let blocks = Blocks::new(Duration::from_millis(100));
        let reads = AtomicUsize::new(0);
        let read = |hash: u8| {
            let reads = &reads;
            move || async move {
                reads.fetch_add(1, Ordering::SeqCst);
                Ok(Some(vec![receipt(10, hash)]))
            }
        };
        blocks.head.head_with(None, || async { Ok(head(10, 0xa, 9)) }).await.unwrap();
        blocks.receipts_with(10, read(0xa)).await.unwrap();
        blocks.receipts_with(10, read(0xa)).await.unwrap();
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        // A new block 10 (a rollback, then another block at that height).
        tokio::time::advance(Duration::from_millis(50)).await;
        blocks.head.head_with(None, || async { Ok(head(10, 0xb, 9)) }).await.unwrap();
        let r = blocks.receipts_with(10, read(0xb)).await.unwrap().unwrap();
        assert_eq!(r[0].block_hash, Some(B256::repeat_byte(0xb)));
        assert_eq!(reads.load(Ordering::SeqCst), 2);
        // Block 11 on top of another block 10: block 10's receipts are read again.
        tokio::time::advance(Duration::from_millis(50)).await;
        blocks.head.head_with(None, || async { Ok(head(11, 0xc, 0xd)) }).await.unwrap();
        blocks.receipts_with(10, read(0xd)).await.unwrap();
        assert_eq!(reads.load(Ordering::SeqCst), 3);
        // The chain got shorter than a kept block: not served.
        tokio::time::advance(Duration::from_millis(50)).await;
        blocks.head.head_with(None, || async { Ok(head(9, 0x9, 8)) }).await.unwrap();
        blocks.receipts_with(10, read(0xe)).await.unwrap();
        assert_eq!(reads.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn only_the_newest_block_numbers_are_kept() {
        let blocks = Blocks::new(Duration::from_millis(100));
        for n in 0..(KEEP_BLOCKS as u64 + 10) {
            blocks.receipts_with(n, || async move { Ok(Some(vec![])) }).await.unwrap();
        }
        let slots = blocks.receipts.lock().unwrap();
        assert_eq!(slots.len(), KEEP_BLOCKS);
        assert_eq!(*slots.keys().next().unwrap(), 10);
    }
}
