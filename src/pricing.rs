//! Fee pricing of one chain, in the background (review S11): the fees a new transaction would be
//! signed with now, and the effective gas price of every mined relayed transaction the sponsor
//! workers did not price as they settled it (they record it from the block's receipts with the
//! row's outcome), read from its receipt once and stored.
//!
//! Request handlers and the per-sponsor budget lock only read what this task last published
//! ([`Pricing::fees`]) and what it stored, so no request ever waits on `eth_feeHistory` or on up
//! to hundreds of `eth_getTransactionReceipt` calls, and many requests cost the node nothing.
//!
//! [`Pricing::run`] refreshes every [`REFRESH_EVERY`] (sooner when [`Pricing::wake`] is called, as
//! `execute` does when its call was mined, but never more often than every [`MIN_PASS_GAP`]): one
//! fee estimate, then up to [`RECEIPTS_PER_PASS`] receipts of mined rows without a price, newest
//! first. Until a row is priced, spend counts it at
//! its signed max fee, an upper bound, so budgets err on the safe side. A row whose receipt is not
//! (or no longer) in its recorded block is left to the pipeline and not asked about again for
//! [`RETRY_UNRESOLVED_AFTER`].

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use alloy::providers::{DynProvider, Provider};
use anyhow::Context;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::{
    pipeline::{Fees, fees},
    store::Store,
};

/// How often the fee estimate is refreshed and unpriced receipts are looked up.
pub const REFRESH_EVERY: Duration = Duration::from_secs(1);

/// An estimate older than this is not used: a request then waits (up to [`FRESH_WAIT`]) for the
/// next one, and fails with "chain unavailable" if none comes.
pub const MAX_AGE: Duration = Duration::from_secs(30);

/// How long a request waits for a fresh estimate when the last one is too old (or, right after
/// start-up, when there is none yet).
pub const FRESH_WAIT: Duration = Duration::from_secs(5);

/// Receipts looked up per pass at most. Newest first, so today's spend is priced before older
/// history (after an upgrade, rows mined before it are priced at this pace, in the background).
pub const RECEIPTS_PER_PASS: i64 = 100;

/// Passes start at least this far apart, however often [`Pricing::wake`] is called: the node
/// sees at most `RECEIPTS_PER_PASS` receipt calls per this interval.
pub const MIN_PASS_GAP: Duration = Duration::from_millis(250);

/// A row whose receipt did not match its block is skipped this long.
pub const RETRY_UNRESOLVED_AFTER: Duration = Duration::from_secs(60);

/// One fee estimate and when it was made.
#[derive(Debug, Clone, Copy)]
struct Estimate {
    fees: Fees,
    at: Instant,
}

/// The chain's fee estimate and receipt pricing; see the module docs.
#[derive(Debug)]
pub struct Pricing {
    chain_id: u64,
    provider: DynProvider,
    store: Store,
    /// The pipeline's cap on a first transaction's max fee.
    max_fee_cap: Option<u128>,
    latest: watch::Sender<Option<Estimate>>,
    wake: Notify,
}

impl Pricing {
    pub fn new(chain_id: u64, provider: DynProvider, store: Store, max_fee_cap: Option<u128>) -> Arc<Self> {
        Arc::new(Self { chain_id, provider, store, max_fee_cap, latest: watch::Sender::new(None), wake: Notify::new() })
    }

    /// The fees a new transaction would be signed with now (the pipeline's estimate under its
    /// cap), as last estimated by [`Pricing::run`]. Makes no RPC call; waits up to
    /// [`FRESH_WAIT`] when the estimate is older than [`MAX_AGE`] (or missing).
    pub async fn fees(&self) -> anyhow::Result<Fees> {
        let fresh = |e: &Option<Estimate>| e.is_some_and(|e| e.at.elapsed() < MAX_AGE);
        if let Some(e) = *self.latest.borrow()
            && fresh(&Some(e))
        {
            return Ok(e.fees);
        }
        self.wake.notify_one();
        let mut rx = self.latest.subscribe();
        match tokio::time::timeout(FRESH_WAIT, rx.wait_for(fresh)).await {
            Ok(Ok(e)) => Ok(e.expect("fresh implies some").fees),
            _ => anyhow::bail!("no fee estimate from the chain node in the last {} s", MAX_AGE.as_secs()),
        }
    }

    /// When the published fee estimate was made (`None`: none yet).
    pub fn estimated_at(&self) -> Option<Instant> {
        self.latest.borrow().map(|e| e.at)
    }

    /// Asks [`Pricing::run`] to refresh now (a relayed call was mined).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Refreshes until `stop` is cancelled; a failing node is logged and retried next time.
    pub async fn run(&self, stop: CancellationToken) -> anyhow::Result<()> {
        let mut unresolved: HashMap<i64, Instant> = HashMap::new();
        loop {
            let started = tokio::time::Instant::now();
            if let Err(e) = self.refresh_fees().await {
                tracing::warn!(chain_id = self.chain_id, error = format!("{e:#}"), "fee estimate failed");
            }
            if let Err(e) = self.price_receipts(&mut unresolved).await {
                tracing::warn!(chain_id = self.chain_id, error = format!("{e:#}"), "receipt pricing failed");
            }
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep_until(started + REFRESH_EVERY) => {}
            }
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = tokio::time::sleep_until(started + MIN_PASS_GAP) => {}
            }
        }
    }

    async fn refresh_fees(&self) -> anyhow::Result<()> {
        let est = self.provider.estimate_eip1559_fees().await.context("Failed to estimate fees")?;
        let fees = fees::initial(
            Fees { max_fee_per_gas: est.max_fee_per_gas, max_priority_fee_per_gas: est.max_priority_fee_per_gas },
            self.max_fee_cap,
        );
        self.latest.send_replace(Some(Estimate { fees, at: Instant::now() }));
        Ok(())
    }

    /// Records the receipts' effective gas prices of mined rows that lack one. A node that does
    /// not answer ends the pass (the upper bound stays in place until the next).
    async fn price_receipts(&self, unresolved: &mut HashMap<i64, Instant>) -> anyhow::Result<()> {
        unresolved.retain(|_, since| since.elapsed() < RETRY_UNRESOLVED_AFTER);
        let skip: Vec<i64> = unresolved.keys().copied().collect();
        let rows = self.store.unpriced_transactions(self.chain_id, &skip, RECEIPTS_PER_PASS).await?;
        for (id, hash, block_hash) in rows {
            match self.provider.get_transaction_receipt(hash).await {
                Ok(Some(r)) if r.block_hash == Some(block_hash) => {
                    self.store.set_effective_gas_price(id, hash, block_hash, r.effective_gas_price).await?
                }
                // Not (or no longer) in that block: the pipeline will update the row.
                Ok(_) => {
                    unresolved.insert(id, Instant::now());
                }
                Err(e) => {
                    tracing::warn!(error = %e, "no receipt for the effective gas price; spend uses the max fee");
                    break;
                }
            }
        }
        Ok(())
    }
}
