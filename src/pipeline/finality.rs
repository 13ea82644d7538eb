//! Finality: a mined row is re-checked against the chain until its block is at the chain's
//! finality depth ([`PipelineSettings::confirmations`](super::PipelineSettings), set per chain by
//! `finality_depth`, [`DEFAULT_FINALITY_DEPTH`] by default); only then is it `confirmed`, which
//! is final: never looked at again.
//!
//! A re-check compares the block hash recorded with the row against the chain's block at that
//! height. A row whose block left the chain is put back in the queue (`submitted`, its bySig nonce
//! back in flight, `transaction.reorged` written by the trigger): the worker then looks its
//! hashes up again like any sent row, records the new block if the call was mined again, or sends
//! it again if the node forgot it.
//!
//! Cost: one pass per sponsor at most every [`EVERY`] (or `poll_interval` if longer), and none
//! of its RPC calls while the sponsor has no mined row short of final. Rows checked once are not
//! checked again while the block that was the head at that pass is still on the chain (a block
//! hash commits to every block below it): a pass reads the new head, the old head's height, and
//! the blocks of rows not checked yet (at most [`HEADERS_PER_PASS`], lowest first). A reorg
//! below the old head makes the next pass check every row again.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use alloy::{eips::BlockNumberOrTag, primitives::B256, providers::Provider};
use anyhow::Context;

use super::{Lane, Pipeline};
use crate::store::{Lease, UnfinalTx};

/// Blocks under which a mined transaction is final when neither the chain's `finality_depth`
/// nor `pipeline.confirmations` says otherwise: 64, two Ethereum epochs, about the depth at
/// which Ethereum's `finalized` block trails the head (some 13 minutes). Chains that finalize
/// sooner (or later) set their own `finality_depth`.
pub const DEFAULT_FINALITY_DEPTH: u64 = 64;

/// Shortest time between two passes of one sponsor.
pub const EVERY: Duration = Duration::from_millis(500);

/// Rows read per pass (lowest block first; the rest wait for the next pass).
const ROWS_PER_PASS: i64 = 5_000;

/// Block headers read per pass for rows not checked yet.
const HEADERS_PER_PASS: usize = 64;

/// Header reads in flight at once.
const CONCURRENCY: usize = 16;

/// What a sponsor's worker remembers between passes.
#[derive(Debug, Default)]
pub(super) struct Finality {
    last: Option<Instant>,
    /// The head `(number, hash)` at the last pass: every row in `verified` was in a canonical
    /// block of the chain that had this block.
    tip: Option<(u64, B256)>,
    /// Rows checked canonical, with the block hash they were checked in.
    verified: HashMap<i64, B256>,
}

/// Runs a pass if one is due; errors are logged (the next pass tries again), never stop the
/// worker's tick.
pub(super) async fn recheck(p: &Pipeline, lane: &Lane, lease: &Lease) {
    let every = p.settings.poll_interval.max(EVERY);
    {
        let mut f = lane.finality.lock().unwrap_or_else(|e| e.into_inner());
        if f.last.is_some_and(|t| t.elapsed() < every) {
            return;
        }
        f.last = Some(Instant::now());
    }
    if let Err(e) = pass(p, lane, lease).await {
        tracing::warn!(sponsor = %lane.sponsor.address, error = format!("{e:#}"), "finality re-check failed");
    }
}

/// `(number, hash)` of the chain's block `at`, `None` if the node has none there.
async fn header(p: &Pipeline, at: BlockNumberOrTag) -> anyhow::Result<Option<(u64, B256)>> {
    let block = p.provider.get_block_by_number(at).await.with_context(|| format!("Failed to read block {at}"))?;
    Ok(block.map(|b| (b.header.number, b.header.hash)))
}

async fn pass(p: &Pipeline, lane: &Lane, lease: &Lease) -> anyhow::Result<()> {
    let (chain_id, sponsor) = (lane.sponsor.chain_id, lane.sponsor.address);
    let rows = p.store.unfinal_transactions(chain_id, sponsor, ROWS_PER_PASS).await?;
    if rows.is_empty() {
        let mut f = lane.finality.lock().unwrap_or_else(|e| e.into_inner());
        f.tip = None;
        f.verified.clear();
        return Ok(());
    }
    // The head the workers share (read at most `poll_interval / 2` ago).
    let head = p.blocks.latest(&p.provider, None).await?;
    let head = (head.number, head.hash);
    // Taken out for the pass: a pass that fails leaves nothing verified (the next checks all).
    let (tip, mut verified) = {
        let mut f = lane.finality.lock().unwrap_or_else(|e| e.into_inner());
        (f.tip.take(), std::mem::take(&mut f.verified))
    };
    let tip_still_canonical = match tip {
        Some((n, h)) if n == head.0 => h == head.1,
        Some((n, h)) if n < head.0 => header(p, n.into()).await?.is_some_and(|b| b.1 == h),
        _ => false,
    };
    if !tip_still_canonical {
        verified.clear();
    }
    // Only rows still recorded in the block they were checked in.
    let current: HashMap<i64, B256> = rows.iter().map(|r| (r.id, r.block_hash)).collect();
    verified.retain(|id, hash| current.get(id) == Some(hash));

    let mut unchecked: BTreeMap<u64, Vec<&UnfinalTx>> = BTreeMap::new();
    for r in rows.iter().filter(|r| verified.get(&r.id) != Some(&r.block_hash)) {
        unchecked.entry(r.block_number).or_default().push(r);
    }
    let numbers: Vec<u64> = unchecked.keys().copied().take(HEADERS_PER_PASS).collect();
    let mut reorged: Vec<&UnfinalTx> = Vec::new();
    for chunk in numbers.chunks(CONCURRENCY) {
        let headers = futures::future::join_all(chunk.iter().map(|&n| async move {
            // Above the head: not known yet (the chain got shorter, or this node lags); checked
            // again once the chain is that high.
            if n > head.0 { Ok(None) } else { header(p, n.into()).await }
        }))
        .await;
        for (n, canonical) in chunk.iter().zip(headers) {
            let Some((_, hash)) = canonical? else { continue };
            for r in &unchecked[n] {
                if r.block_hash == hash {
                    verified.insert(r.id, r.block_hash);
                } else {
                    reorged.push(r);
                }
            }
        }
    }
    for r in &reorged {
        verified.remove(&r.id);
        if p.store.unmine(lease, r.id, r.block_hash).await? {
            tracing::warn!(
                id = r.id,
                block = r.block_number,
                block_hash = %r.block_hash,
                "the block holding the transaction left the chain before it was final: back in the queue"
            );
        }
    }
    if !reorged.is_empty() {
        // The reopened rows are looked up (or sent again) on the worker's next pass, at once.
        lane.wake.notify_one();
    }

    let depth = p.settings.confirmations.max(1);
    let final_rows: Vec<(i64, B256)> = rows
        .iter()
        .filter(|r| verified.get(&r.id) == Some(&r.block_hash) && head.0 + 1 >= r.block_number + depth)
        .map(|r| (r.id, r.block_hash))
        .collect();
    if !final_rows.is_empty() {
        p.store.finalize_transactions(lease, &final_rows).await?;
        for (id, _) in &final_rows {
            verified.remove(id);
        }
    }
    let mut f = lane.finality.lock().unwrap_or_else(|e| e.into_inner());
    f.tip = Some(head);
    f.verified = verified;
    Ok(())
}
