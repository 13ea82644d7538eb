//! One task per sponsor: broadcasts queued rows in nonce order, follows them to a receipt,
//! replaces stuck ones, and repairs the queue when the sponsor's nonces were used elsewhere.
//!
//! Every step starts from the database and the chain, never from memory, so the same loop is
//! also the crash recovery: rows left `pending` are sent (the recorded bytes, so nothing is
//! signed twice at one nonce by accident), rows left `submitted` get their receipts looked up.
//!
//! What can happen to a row's nonce (after rundler's transaction tracker):
//! - still open on chain (`nonce ≥ chain count`): (re)send, bump after `bump_after`, cancel once
//!   the signed call's deadline has passed;
//! - used (`nonce < chain count`) by one of the row's hashes: mined (or reverted) — recorded;
//! - used by another transaction (the key was used outside this relayer): the call is moved to
//!   a fresh nonce, unless it was executed elsewhere (`replaced`) or its deadline has passed
//!   (`expired`).

use std::{
    sync::{Arc, Mutex, Weak, atomic::Ordering},
    time::Instant,
};

use alloy::{
    eips::BlockId,
    network::TransactionBuilder,
    primitives::{Address, B256},
    providers::Provider,
    rpc::types::{TransactionReceipt, TransactionRequest},
    transports::RpcError,
};
use anyhow::Context;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{
    Lane, Pipeline,
    fault::{self, SendFault},
    fees::{self, BumpDecision, Fees},
};
use crate::{
    chain::{StreamPay, revert::decode_revert, traits::NonceType},
    store::{
        AttemptKind, BundleRow, Lease, LeaseLost, MinedRow, NonceScope, NonceStatus, Outcome, QueuedTx, SignedAttempt,
        TxStatus,
    },
};

/// RPC calls a worker has in flight at once (receipt lookups, block receipts, gap fills).
const CONCURRENCY: usize = 16;

/// Sends a worker has in flight at once.
const SEND_CONCURRENCY: usize = 64;

/// Most blocks whose receipts one tick reads (the newest; rows mined in older ones are looked
/// up one by one).
const MAX_RECEIPT_BLOCKS: u64 = 64;

/// Blocks whose receipts the first look (after a start or a takeover) reads, up to the head.
const RECEIPT_BLOCKS_AT_START: u64 = 16;

/// What one tick found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// No open or unfinal row: the next tick may wait longer (see [`idle_wait`]).
    Idle,
    /// Rows were handled; `sent_new`: a new transaction went out (the next tick comes at once:
    /// an automining node has its receipt already).
    Busy { sent_new: bool },
}

/// The longest a busy worker goes without a full pass (the sponsor's count, its open rows):
/// ten polls, at most an eighth of the lease and half of `rebroadcast_after`, never less than a
/// poll. In between it passes only when asked or when a new block carries the sponsor's
/// transaction; re-sends, fee bumps, deadlines and drift are seen at the next full pass.
fn full_pass_every(settings: &super::PipelineSettings) -> std::time::Duration {
    let poll = settings.poll_interval;
    (poll * 10).min(settings.lease_ttl / 8).min(settings.rebroadcast_after / 2).max(poll)
}

/// How long a worker with nothing open waits for a wake-up before it looks again: ten polls, at
/// most a second and a quarter of the lease (so the holder keeps it), never less than a poll.
/// Calls this process queues wake it at once; only rows queued by another process, and nonce
/// drift while idle, wait this long to be seen.
fn idle_wait(settings: &super::PipelineSettings) -> std::time::Duration {
    let poll = settings.poll_interval;
    (poll * 10).min(std::time::Duration::from_secs(1)).min(settings.lease_ttl / 4).max(poll)
}

pub(super) async fn run(pipeline: Weak<Pipeline>, lane: Arc<Lane>, stop: CancellationToken) {
    let mut initialised = false;
    let mut hurry = false;
    let mut idle = false;
    // When the lease was last taken or renewed (the moment before asking); `None` while this
    // process does not hold it. Renewed once a quarter of it has passed, not every tick: a tick
    // started within that quarter ends (its deadline is a third of the lease) before the lease
    // can run out, and every write is fenced by the lease in the database anyway.
    let mut lease_taken: Option<std::time::Instant> = None;
    // After a tick that sent a new transaction: the next one reads a head asked for after that
    // tick ended (an automining node has mined it), not one shared from before.
    let mut head_after: Option<tokio::time::Instant> = None;
    // When the last pass started, and the newest block already looked at for the sponsor's
    // transactions between passes (see `Pipeline::sponsor_mined_since`).
    let mut last_pass: Option<std::time::Instant> = None;
    let mut looked: Option<u64> = None;
    loop {
        let Some(p) = pipeline.upgrade() else { return };
        let mut wanted = hurry;
        if !hurry {
            let poll = if idle { idle_wait(&p.settings) } else { p.settings.poll_interval };
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = lane.wake.notified() => wanted = true,
                _ = tokio::time::sleep(poll) => {}
            }
        }
        if stop.is_cancelled() {
            // Between two ticks: nothing is half-sent. Give the lease up so another replica
            // takes the queue over now rather than when the lease runs out.
            p.lease_gone(&lane);
            if lease_taken.is_some()
                && let Err(e) = p.store.release_sponsor_lease(p.chain_id(&lane), lane.sponsor.address, &p.owner).await
            {
                tracing::warn!(sponsor = %lane.sponsor.address, error = format!("{e:#}"), "sponsor lease release failed");
            }
            return;
        }
        hurry = false;
        if !initialised {
            match p.chain_nonce(&lane).await {
                Ok(n) => match p.store.ensure_sponsor_account(p.chain_id(&lane), lane.sponsor.address, n).await {
                    Ok(()) => initialised = true,
                    Err(e) => tracing::warn!(error = format!("{e:#}"), "sponsor account setup failed"),
                },
                Err(e) => tracing::warn!(error = format!("{e:#}"), "sponsor nonce read failed"),
            }
            if !initialised {
                continue;
            }
        }
        let ttl = p.settings.lease_ttl.as_millis() as u64;
        let fresh = lease_taken.is_some_and(|t| t.elapsed() < p.settings.lease_ttl / 4);
        // Between the passes something asks for (a call queued here or by another process, a
        // send just made, nothing open) and the full pass every `full_pass_every`, a busy worker
        // only looks at the new blocks: a pass is due when one carries a transaction from the
        // sponsor (a call of ours mined, or the key used elsewhere).
        if fresh
            && !wanted
            && !idle
            && last_pass.is_some_and(|t| t.elapsed() < full_pass_every(&p.settings))
            && matches!(p.sponsor_mined_since(&lane, &mut looked).await, Ok(false))
        {
            continue;
        }
        last_pass = Some(std::time::Instant::now());
        if !fresh {
            let asked = std::time::Instant::now();
            match p.store.acquire_sponsor_lease(p.chain_id(&lane), lane.sponsor.address, &p.owner, ttl).await {
                Ok(true) => {
                    if lease_taken.is_none() {
                        // Taken over (or first taken): the blocks another process read are not
                        // ours, and the nonces it queued are counted from the database again.
                        *lane.receipts_seen.lock().unwrap_or_else(|e| e.into_inner()) = None;
                        p.forget_sequence(&lane);
                    }
                    lease_taken = Some(asked);
                    lane.leased.store(true, Ordering::Release);
                }
                Ok(false) => {
                    lease_taken = None;
                    p.lease_gone(&lane);
                    continue;
                }
                Err(e) => {
                    lease_taken = None;
                    p.lease_gone(&lane);
                    tracing::warn!(error = format!("{e:#}"), "sponsor lease check failed");
                    continue;
                }
            }
        }
        let lease = Lease { chain_id: p.chain_id(&lane), sponsor: lane.sponsor.address, owner: p.owner.clone() };
        let tick = Tick { p: &p, lane: &lane, lease: &lease, sent: Mutex::default(), head_after: head_after.take() };
        // A tick ends well inside the lease it runs under: a node that stops answering, or a slow
        // database, cannot carry it past the lease (its writes are fenced anyway).
        idle = false;
        match tokio::time::timeout(p.settings.tick_timeout(), tick.run()).await {
            Ok(Ok(Pass::Busy { sent_new })) => {
                hurry = sent_new;
                head_after = sent_new.then(tokio::time::Instant::now);
            }
            Ok(Ok(Pass::Idle)) => idle = true,
            Ok(Err(e)) if e.is::<LeaseLost>() => {
                lease_taken = None;
                p.lease_gone(&lane);
                tracing::warn!(sponsor = %lane.sponsor.address, "the sponsor lease ran out mid-tick; nothing more was written");
            }
            Ok(Err(e)) => {
                tracing::warn!(sponsor = %lane.sponsor.address, error = format!("{e:#}"), "pipeline tick failed")
            }
            Err(_) => tracing::warn!(
                sponsor = %lane.sponsor.address,
                timeout_ms = p.settings.tick_timeout().as_millis() as u64,
                "pipeline tick timed out; the next one starts over from the database and the chain"
            ),
        }
    }
}

impl Pipeline {
    fn chain_id(&self, lane: &Lane) -> u64 {
        lane.sponsor.chain_id
    }
}

struct Tick<'a> {
    p: &'a Pipeline,
    lane: &'a Lane,
    /// Fences every write of the tick.
    lease: &'a Lease,
    /// Rows whose latest transaction the node took this pass, marked `submitted` in one write
    /// once the pass's sends are done. A crash before that write leaves them `pending`, and the
    /// next owner sends the same bytes again (the node answers "already known"), as before.
    sent: Mutex<Vec<i64>>,
    /// The latest block must have been asked for after this (see [`super::blocks::Blocks::latest`]).
    head_after: Option<tokio::time::Instant>,
}

/// What the chain looks like this tick.
struct View {
    chain_nonce: u64,
    /// The latest block's number: drift evidence is read at it.
    head: u64,
    time: u64,
}

impl Tick<'_> {
    fn sponsor(&self) -> Address {
        self.lane.sponsor.address
    }

    fn chain_id(&self) -> u64 {
        self.lane.sponsor.chain_id
    }

    /// One pass over the sponsor's open rows.
    async fn run(&self) -> anyhow::Result<Pass> {
        let provider = &self.p.provider;
        let chain_nonce = provider
            .get_transaction_count(self.sponsor())
            .latest()
            .await
            .context("Failed to read the sponsor's nonce")?;
        self.lane.saw_count(chain_nonce);
        // Only a count above every nonce known to be allocated can be above `next_nonce`.
        if chain_nonce > self.lane.nonce_floor.load(Ordering::Relaxed)
            && self.p.store.raise_sponsor_nonce(self.lease, chain_nonce).await?
        {
            self.lane.nonce_floor.fetch_max(chain_nonce, Ordering::Relaxed);
            tracing::warn!(sponsor = %self.sponsor(), chain_nonce, "nonce drift: the sponsor key was used outside the relayer; next nonce raised");
        }
        // Mined rows not yet final: re-checked against the chain (throttled, see `finality`);
        // one reorged out is back among the open rows read next.
        super::finality::recheck(self.p, self.lane, self.lease).await;
        let rows = self.p.store.open_transactions(self.chain_id(), self.sponsor()).await?;
        if rows.is_empty() {
            return Ok(Pass::Idle);
        }
        // Shared with the other sponsors' workers (read at most `poll_interval / 2` ago): possibly
        // a little behind the count read above. A row whose nonce the count shows used but whose
        // block is above this head is looked up by its hashes; drift evidence is read at this head
        // (a count there that does not show the nonce used makes the row wait).
        let head = self.p.blocks.latest(provider, self.head_after).await?;
        let mut view = View { chain_nonce, head: head.number, time: head.timestamp };

        // Inclusion per block: the receipts of the blocks mined since the last look, read once
        // per block, settle every row they show mined without a receipt lookup per row. A row a
        // receipt shows mined has had its nonce used, whatever the count read above said.
        let included = self.included(&rows, &view).await?;
        if let Some(n) = rows.iter().filter(|r| included.contains_key(&r.id)).map(|r| r.sponsor_nonce).max() {
            view.chain_nonce = view.chain_nonce.max(n + 1);
            self.lane.saw_count(view.chain_nonce);
        }
        // Rows whose nonce the chain has used are independent of each other: settled
        // concurrently, from the block receipts above or (rows they did not show: after a
        // restart, a reorg, a block not read) by looking their hashes up one by one. Open rows
        // are sent meanwhile, not after: a node takes a later nonce into its queue until the
        // earlier one arrives, and first sends start in nonce order.
        let mut matched = Vec::with_capacity(included.len());
        let mut done = Vec::new();
        let mut open = Vec::new();
        let mut included = included;
        for row in rows {
            if let Some((kind, receipt)) = included.remove(&row.id) {
                matched.push((row, kind, receipt));
            } else if row.sponsor_nonce < view.chain_nonce {
                // Sent by the enqueue that wrote it (`Pipeline::express`) and already in a block
                // this pass has no receipt of: marked `submitted` as it is looked up.
                if row.status == TxStatus::Pending
                    && self.lane.express_of(row.latest.hash) == Some(super::Express::Sent)
                {
                    self.note_sent(row.id);
                }
                done.push(row);
            } else {
                open.push(row);
            }
        }
        let view = &view;
        let settle = async {
            let from_blocks = self.settle_included(&matched, view);
            // Futures collected first: a lazy `map` over borrowed rows makes the worker's future
            // fail the `Send` check of `tokio::spawn` (a higher-ranked lifetime).
            let settles: Vec<_> = done.iter().map(|row| self.settle_done(row, view)).collect();
            let one_by_one = futures::stream::iter(settles).buffer_unordered(CONCURRENCY).collect::<Vec<_>>();
            let (from_blocks, one_by_one) = tokio::join!(from_blocks, one_by_one);
            from_blocks?;
            one_by_one.into_iter().collect::<anyhow::Result<()>>()
        };
        let send = async {
            // A nonce below every open row that the chain has not used and no row holds (a row
            // moved twice by a stale process, a row lost by hand) would hold every later nonce
            // back for ever: fill it with a cancellation.
            if let Some(lowest) = open.first().map(|r| r.sponsor_nonce)
                && lowest > view.chain_nonce
            {
                self.fill_gap(view.chain_nonce, lowest).await?;
            }
            // `buffered` starts the sends in nonce order and keeps SEND_CONCURRENCY in flight,
            // with no barrier between groups of them.
            let sends: Vec<_> = open.iter().map(|row| self.open_step(row, view)).collect();
            let steps = futures::stream::iter(sends).buffered(SEND_CONCURRENCY).collect::<Vec<_>>().await;
            // Every row the node took, marked in one write (also when a later step failed).
            let sent = std::mem::take(&mut *self.sent.lock().unwrap_or_else(|e| e.into_inner()));
            self.p.store.mark_submitted(self.lease, &sent).await?;
            let mut sent_new = false;
            for step in steps {
                if step? == (TxStatus::Pending, Step::Sent) {
                    sent_new = true;
                }
            }
            anyhow::Ok(sent_new)
        };
        let (settled, sent_new) = tokio::join!(settle, send);
        settled?;
        Ok(Pass::Busy { sent_new: sent_new? })
    }

    /// The rows among `rows` that the receipts of the blocks mined since the last look show
    /// mined, with the receipt to record: only where the receipt is the one
    /// [`Tick::best_receipt`] would pick (a successful call, which no other attempt of the row
    /// can beat; or any receipt of a row whose attempts all share one nonce, of which the chain
    /// mines one). Others are left to the lookup one by one. A block whose receipts cannot be
    /// read ends the look there (its rows are looked up one by one, or at the next look).
    async fn included(
        &self,
        rows: &[QueuedTx],
        view: &View,
    ) -> anyhow::Result<std::collections::HashMap<i64, (AttemptKind, TransactionReceipt)>> {
        use std::collections::HashMap;
        let mut found = HashMap::new();
        // Only rows that may have been mined: sent, or at a nonce the chain has used.
        let candidates: Vec<&QueuedTx> =
            rows.iter().filter(|r| r.status == TxStatus::Submitted || r.sponsor_nonce < view.chain_nonce).collect();
        if candidates.is_empty() {
            return Ok(found);
        }
        let from = {
            let seen = *self.lane.receipts_seen.lock().unwrap_or_else(|e| e.into_inner());
            match seen {
                Some(s) if s < view.head => s + 1,
                Some(s) if s == view.head => return Ok(found),
                // The chain got shorter (a rollback): look at the head again.
                Some(_) => view.head,
                None => view.head.saturating_sub(RECEIPT_BLOCKS_AT_START - 1),
            }
        }
        .max(view.head.saturating_sub(MAX_RECEIPT_BLOCKS - 1));
        // Each block's receipts are read once for every sponsor's worker (see `blocks`).
        let provider = &self.p.provider;
        let reads: Vec<_> = (from..=view.head).map(|n| self.p.blocks.receipts(provider, n)).collect();
        let blocks = futures::stream::iter(reads).buffered(CONCURRENCY).collect::<Vec<_>>().await;
        let mut ours: HashMap<B256, TransactionReceipt> = HashMap::new();
        let mut seen = None;
        for (n, block) in (from..=view.head).zip(blocks) {
            match block {
                Ok(Some(receipts)) => {
                    ours.extend(
                        receipts.iter().filter(|r| r.from == self.sponsor()).map(|r| (r.transaction_hash, r.clone())),
                    );
                    seen = Some(n);
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(
                        block = n,
                        error = format!("{e:#}"),
                        "block receipts unavailable; receipts are looked up one by one"
                    );
                    break;
                }
            }
        }
        if let Some(n) = seen {
            *self.lane.receipts_seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(n);
        }
        if ours.is_empty() {
            return Ok(found);
        }
        let success = |kind: AttemptKind, r: &TransactionReceipt| kind == AttemptKind::Call && r.status();
        // Most rows are mined by their latest transaction, a successful call: no read needed.
        let mut unsure = Vec::new();
        for row in candidates {
            match ours.get(&row.latest.hash) {
                Some(r) if success(row.latest.kind, r) => {
                    found.insert(row.id, (row.latest.kind, r.clone()));
                }
                _ => unsure.push(row.id),
            }
        }
        let claimed = found.len();
        if unsure.is_empty() || claimed == ours.len() {
            return Ok(found);
        }
        let attempts = self.p.store.attempts_of(&unsure).await?;
        for id in unsure {
            let Some(attempts) = attempts.get(&id) else { continue };
            let one_nonce = attempts.windows(2).all(|w| w[0].sponsor_nonce == w[1].sponsor_nonce);
            let mut first = None;
            for a in attempts {
                let Some(r) = ours.get(&a.hash) else { continue };
                if success(a.kind, r) {
                    first = Some((a.kind, r));
                    break;
                }
                first.get_or_insert((a.kind, r));
            }
            match first {
                Some((kind, r)) if success(kind, r) || one_nonce => {
                    found.insert(id, (kind, r.clone()));
                }
                _ => {}
            }
        }
        Ok(found)
    }

    /// Records the rows [`Tick::included`] found: every mined call in one write, the rest
    /// (reverted calls, cancellations) one by one.
    async fn settle_included(
        &self,
        matched: &[(QueuedTx, AttemptKind, TransactionReceipt)],
        view: &View,
    ) -> anyhow::Result<()> {
        if matched.is_empty() {
            return Ok(());
        }
        {
            let mut suspects = self.lane.suspects.lock().unwrap_or_else(|e| e.into_inner());
            for (row, _, _) in matched {
                suspects.remove(&row.id);
            }
        }
        // A bundle's rows are settled from its logs (see `record_bundle`), with the others.
        let (mined, others): (Vec<_>, Vec<_>) = matched
            .iter()
            .partition(|(row, kind, r)| *kind == AttemptKind::Call && r.status() && row.bundle_size.is_none());
        let rows: Vec<MinedRow> = mined
            .iter()
            .map(|(row, _, r)| MinedRow {
                id: row.id,
                hash: r.transaction_hash,
                gas_used: r.gas_used,
                block_number: r.block_number.unwrap_or_default(),
                block_hash: r.block_hash.unwrap_or_default(),
                effective_gas_price: r.effective_gas_price,
                scope: row_scope(self.chain_id(), row),
                meta_nonce: row.meta_nonce,
            })
            .collect();
        let batch = async {
            self.p.store.settle_mined(self.lease, &rows).await?;
            for (row, _, _) in &mined {
                crate::observability::pipeline_stage("receipt", row.attempt_age_secs);
                crate::observability::pipeline_settled("mined");
                self.p.notify_settled(row.id);
            }
            anyhow::Ok(())
        };
        let records: Vec<_> = others.iter().map(|(row, kind, r)| self.record_receipt(row, *kind, r, view)).collect();
        let singles = futures::stream::iter(records).buffer_unordered(CONCURRENCY).collect::<Vec<_>>();
        let (batch, singles) = tokio::join!(batch, singles);
        batch?;
        singles.into_iter().collect()
    }

    async fn settle_done(&self, row: &QueuedTx, view: &View) -> anyhow::Result<()> {
        self.settle_used_nonce(row, view).await
    }

    async fn open_step(&self, row: &QueuedTx, view: &View) -> anyhow::Result<(TxStatus, Step)> {
        Ok((row.status, self.open_row(row, view).await?))
    }

    /// A row whose nonce the chain has not used yet: send, re-send, bump or cancel it.
    async fn open_row(&self, row: &QueuedTx, view: &View) -> anyhow::Result<Step> {
        let s = &self.p.settings;
        let unjams = row.sponsor_nonce == view.chain_nonce;
        // A call past its deadline would only revert: fill its nonce with a cancellation.
        if row.latest.kind == AttemptKind::Call && row.deadline > 0 && view.time > row.deadline {
            tracing::info!(id = row.id, nonce = row.sponsor_nonce, "deadline passed before inclusion: cancelling");
            if let Some(attempt) = self.replace(row, &row.latest, AttemptKind::Cancel, unjams).await? {
                return self.broadcast(row, &attempt, unjams).await;
            }
            return Ok(Step::Waiting);
        }
        if row.status == TxStatus::Pending {
            // Being sent, or sent, by the enqueue that wrote it (`Pipeline::express`): left to
            // it, or only marked.
            match self.lane.express_of(row.latest.hash) {
                Some(super::Express::Sending) => return Ok(Step::Waiting),
                Some(super::Express::Sent) => {
                    self.note_sent(row.id);
                    return Ok(Step::Sent);
                }
                None => {}
            }
            return self.broadcast(row, &row.latest, unjams).await;
        }
        if row.attempt_age_secs >= s.bump_after.as_secs_f64() {
            if let Some(attempt) = self.replace(row, &row.latest, row.latest.kind, unjams).await? {
                tracing::info!(id = row.id, nonce = row.sponsor_nonce, hash = %attempt.hash, max_fee = attempt.max_fee_per_gas, "fee bump");
                return self.broadcast(row, &attempt, unjams).await;
            }
            return Ok(Step::Waiting);
        }
        if row.sent_age_secs.is_none_or(|a| a >= s.rebroadcast_after.as_secs_f64()) {
            // The node may have dropped it (restart, eviction, anvil_dropAllTransactions): the
            // same bytes again are harmless ("already known") if it did not.
            return self.broadcast(row, &row.latest, unjams).await;
        }
        Ok(Step::Waiting)
    }

    /// Signs a replacement of `old` (the row's latest transaction, or the one the node just
    /// refused) at the row's nonce: 12.5% more, or the market's fee; `None` if the cap says wait.
    /// The cap holds for every replacement, cancellations included, unless the operator allows
    /// unjamming above it (`pipeline.unjam_above_cap`) and this nonce holds the queue up.
    async fn replace(
        &self,
        row: &QueuedTx,
        old: &SignedAttempt,
        kind: AttemptKind,
        unjams: bool,
    ) -> anyhow::Result<Option<SignedAttempt>> {
        let old = Fees { max_fee_per_gas: old.max_fee_per_gas, max_priority_fee_per_gas: old.max_priority_fee_per_gas };
        let estimate = self.p.estimate_fees().await?;
        let unjams = unjams && self.p.settings.unjam_above_cap;
        let fees = match fees::replacement(old, estimate, self.p.settings.max_fee_cap, unjams) {
            BumpDecision::Send(f) => f,
            BumpDecision::Wait => return Ok(None),
        };
        let sponsor = &self.lane.sponsor;
        let attempt = match kind {
            AttemptKind::Call => {
                sponsor.sign_call(row.sponsor_nonce, row.contract, row.calldata.clone(), row.gas_limit, fees)?
            }
            AttemptKind::Cancel => sponsor.sign_cancel(row.sponsor_nonce, fees)?,
        };
        self.p.store.add_attempt(self.lease, row.id, row.sponsor_nonce, &attempt).await?;
        Ok(Some(attempt))
    }

    /// Sends `attempt` (already on record) and acts on the node's answer. A refusal that asks
    /// for a replacement (underpriced, or a permanent refusal that needs a cancellation) signs
    /// it from the refused attempt's fees and sends it once; anything further waits for the
    /// next tick.
    async fn broadcast(&self, row: &QueuedTx, attempt: &SignedAttempt, unjams: bool) -> anyhow::Result<Step> {
        match self.send(row, attempt).await? {
            Sent::Done(step) => Ok(step),
            Sent::Replace(kind) => match self.replace(row, attempt, kind, unjams).await? {
                Some(next) => match self.send(row, &next).await? {
                    Sent::Done(step) => Ok(step),
                    Sent::Replace(_) => Ok(Step::Blocked),
                },
                None => Ok(Step::Blocked),
            },
        }
    }

    /// One `eth_sendRawTransaction` of `attempt` and what its answer asks for.
    async fn send(&self, row: &QueuedTx, attempt: &SignedAttempt) -> anyhow::Result<Sent> {
        let started = Instant::now();
        let sent = self.p.provider.send_raw_transaction(&attempt.raw).await;
        crate::observability::pipeline_stage("send", started.elapsed().as_secs_f64());
        let err = match sent {
            Ok(_) => {
                if row.status == TxStatus::Pending {
                    crate::observability::pipeline_stage("queue_wait", row.attempt_age_secs);
                    self.lane.sent_first(row.sponsor_nonce);
                }
                self.forget_refusals(row.id);
                self.note_sent(row.id);
                return Ok(Sent::Done(Step::Sent));
            }
            Err(e) => e,
        };
        let mut fault = fault::classify(&err);
        let message = err.to_string();
        tracing::debug!(id = row.id, nonce = row.sponsor_nonce, ?fault, %message, "broadcast refused");
        if fault == SendFault::Unknown {
            // Retried like a transient fault until the budget is spent: only then is the node
            // believed and the call cancelled.
            if self.refusal_budget_spent(row.id) {
                tracing::warn!(id = row.id, %message, "the node kept refusing with an unknown error: treating it as permanent");
                fault = SendFault::Rejected;
            } else {
                fault = SendFault::Transient;
            }
        }
        match fault {
            SendFault::AlreadyKnown => {
                self.forget_refusals(row.id);
                self.note_sent(row.id);
                Ok(Sent::Done(Step::Sent))
            }
            SendFault::NonceTooLow => {
                // Never retried as is: one of this row's own transactions may be the one that
                // used the nonce. The next pass reads the new count and settles the row.
                self.p.store.note_error(self.lease, row.id, &message).await?;
                Ok(Sent::Done(Step::Blocked))
            }
            SendFault::Underpriced => {
                // Something sits at this nonce (an earlier attempt, or someone else's) or the
                // base fee rose: replace it with more, within the cap.
                self.p.store.note_error(self.lease, row.id, &message).await?;
                Ok(Sent::Replace(attempt.kind))
            }
            SendFault::InsufficientFunds => {
                tracing::warn!(sponsor = %self.sponsor(), "sponsor cannot pay for gas: top it up");
                self.p.store.note_error(self.lease, row.id, &message).await?;
                Ok(Sent::Done(Step::Blocked))
            }
            SendFault::Transient | SendFault::Unknown => {
                self.p.store.note_error(self.lease, row.id, &message).await?;
                Ok(Sent::Done(Step::Blocked))
            }
            SendFault::Rejected => {
                self.p.store.note_error(self.lease, row.id, &message).await?;
                if attempt.kind == AttemptKind::Cancel {
                    tracing::error!(id = row.id, %message, "the node refuses even a cancellation; the queue is stuck");
                    return Ok(Sent::Done(Step::Blocked));
                }
                tracing::warn!(id = row.id, %message, "the node refuses the transaction: cancelling at its nonce");
                self.forget_refusals(row.id);
                Ok(Sent::Replace(AttemptKind::Cancel))
            }
        }
    }

    fn note_sent(&self, id: i64) {
        self.sent.lock().unwrap_or_else(|e| e.into_inner()).push(id);
    }

    /// Counts an unknown refusal of row `id`; true once there have been
    /// [`UNKNOWN_REFUSALS`] of them over at least [`UNKNOWN_REFUSAL_WINDOW`].
    fn refusal_budget_spent(&self, id: i64) -> bool {
        let mut refusals = self.lane.refusals.lock().unwrap_or_else(|e| e.into_inner());
        let (count, since) = refusals.entry(id).or_insert((0, Instant::now()));
        *count += 1;
        *count >= UNKNOWN_REFUSALS && since.elapsed() >= UNKNOWN_REFUSAL_WINDOW
    }

    fn forget_refusals(&self, id: i64) {
        self.lane.refusals.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
    }

    /// The chain used this row's nonce: find which transaction did.
    ///
    /// Receipts of every attempt are looked at, and a successful call wins over a reverted or
    /// cancelled one (a row moved to a new nonce has attempts at two nonces, and a lagging node
    /// may have hidden the first one's receipt when it was moved). Without any receipt, the call
    /// is only moved or given up on evidence read at one block `N`: the sponsor's count at `N`
    /// shows the nonce used, and the signed call's bySig nonce at `N` (and the `NonceUsed` log
    /// naming the transaction that used it) says whether the call ran. A node that does not have
    /// block `N` yet answers with an error instead of an older state, and the row waits.
    async fn settle_used_nonce(&self, row: &QueuedTx, view: &View) -> anyhow::Result<()> {
        if let Some((kind, receipt)) = self.best_receipt(row).await? {
            self.lane.suspects.lock().unwrap_or_else(|e| e.into_inner()).remove(&row.id);
            return self.record_receipt(row, kind, &receipt, view).await;
        }
        // None of ours, as far as this node can tell right now. Nodes answer from different
        // views (Anvil under load counts a nonce before serving the receipt; load-balanced RPCs
        // lag each other), and moving a call that did get mined would send it twice: so this is
        // only believed once it has held for a while, and then only on evidence pinned to a block.
        {
            let mut suspects = self.lane.suspects.lock().unwrap_or_else(|e| e.into_inner());
            let since = *suspects.entry(row.id).or_insert_with(Instant::now);
            if since.elapsed() < self.p.settings.drift_grace() {
                return Ok(());
            }
        }
        let at = BlockId::number(view.head);
        let count_at = self
            .p
            .provider
            .get_transaction_count(self.sponsor())
            .block_id(at)
            .await
            .with_context(|| format!("Failed to read the sponsor's nonce at block {}", view.head))?;
        if count_at <= row.sponsor_nonce {
            // The count that said "used" came from a node ahead of block N: look again later.
            return Ok(());
        }
        // The key was used outside the relayer (or our receipt is still hidden). Did the signed
        // call (each call of a bundle) run by block N, and in which transaction?
        let calls: Vec<SignedCall> = match row.bundle_size {
            None => vec![SignedCall::of(row)],
            Some(_) => self.p.store.bundle_rows(row.id).await?.iter().map(SignedCall::of_member).collect(),
        };
        let mut ran = Vec::with_capacity(calls.len());
        let mut ours: Option<Vec<B256>> = None;
        for call in &calls {
            let used = self.call_ran(call, at).await?;
            if used && let Some(hash) = self.nonce_used_by(call, view.head).await? {
                if ours.is_none() {
                    ours = Some(self.p.store.attempt_hashes(row.id).await?.into_iter().map(|(h, _)| h).collect());
                }
                if ours.as_ref().is_some_and(|o| o.contains(&hash)) {
                    // Our own transaction ran it: its receipt will show; never call this replaced.
                    tracing::info!(id = row.id, call = call.id, %hash, "the call ran in one of its own transactions; waiting for the receipt");
                    return Ok(());
                }
            }
            ran.push(used);
        }
        if row.bundle_size.is_some() {
            return self.settle_displaced_bundle(row, &calls, &ran, view).await;
        }
        let used = ran[0];
        self.lane.suspects.lock().unwrap_or_else(|e| e.into_inner()).remove(&row.id);
        let scope = row_scope(self.chain_id(), row);
        if used {
            tracing::warn!(id = row.id, "the signed call was executed by another transaction");
            self.finish(row, scope, NonceStatus::Mined, &Outcome::Replaced).await
        } else if let Some(outcome) = displaced_ending(row, view) {
            self.finish(row, scope, NonceStatus::Failed, &outcome).await
        } else {
            self.move_to_fresh_nonce(row, view).await
        }
    }

    /// Moves row `row` (a call, or a bundle with the calls it still carries), whose nonce another
    /// transaction used, to the sponsor's next nonce with a freshly signed transaction.
    async fn move_to_fresh_nonce(&self, row: &QueuedTx, view: &View) -> anyhow::Result<()> {
        let sponsor = &self.lane.sponsor;
        let estimate = fees::initial(self.p.estimate_fees().await?, self.p.settings.max_fee_cap);
        let nonce = self
            .p
            .store
            .requeue_transaction(self.lease, row.id, view.chain_nonce, |nonce| {
                sponsor.sign_call(nonce, row.contract, row.calldata.clone(), row.gas_limit, estimate)
            })
            .await?;
        tracing::warn!(
            id = row.id,
            old = row.sponsor_nonce,
            new = nonce,
            bundle = row.bundle_size,
            "nonce drift: nonce used outside the relayer; moved to a new nonce"
        );
        Ok(())
    }

    /// Whether `call`'s bySig nonce is used at block `at`.
    async fn call_ran(&self, call: &SignedCall, at: BlockId) -> anyhow::Result<bool> {
        let streampay = StreamPay::new(call.contract, &self.p.provider);
        Ok(if call.nonce_type == NonceType::Unique {
            streampay
                .bySigUniqueNonces(call.signer, alloy::primitives::U256::from(call.nonce))
                .call()
                .block(at)
                .await
                .context("Failed to read the signer's unique bySig nonce")?
        } else {
            streampay
                .bySigAccountNonces(call.signer)
                .call()
                .block(at)
                .await
                .context("Failed to read the signer's bySig nonce")?
                > alloy::primitives::U256::from(call.nonce)
        })
    }

    /// A bundle whose nonce another transaction used, none of whose calls ran in one of its own
    /// transactions (see [`Tick::settle_used_nonce`]): a call that ran elsewhere is `replaced`;
    /// the others move with the bundle to a fresh nonce, unless the bundle was being cancelled
    /// or its earliest deadline has passed (then they end `rejected` or `expired`). A call that
    /// ran elsewhere stays in the moved bundle, where it fails alone on its used nonce; its row,
    /// already settled, is not written again.
    async fn settle_displaced_bundle(
        &self,
        row: &QueuedTx,
        calls: &[SignedCall],
        ran: &[bool],
        view: &View,
    ) -> anyhow::Result<()> {
        self.lane.suspects.lock().unwrap_or_else(|e| e.into_inner()).remove(&row.id);
        let ending = displaced_ending(row, view);
        let mut settled = Vec::new();
        for (call, ran) in calls.iter().zip(ran) {
            if call.settled {
                continue;
            }
            let scope = call.scope(self.chain_id());
            if *ran {
                tracing::warn!(id = call.id, bundle = row.id, "the signed call was executed by another transaction");
                settled.push((call.id, Outcome::Replaced, (scope, call.nonce, NonceStatus::Mined)));
            } else if let Some(outcome) = &ending {
                settled.push((call.id, outcome.clone(), (scope, call.nonce, NonceStatus::Failed)));
            }
        }
        if ending.is_none() {
            // The leader's row carries the bundle: it stays open (and is moved) even if its own
            // call ran elsewhere, and is settled with the bundle's receipt.
            settled.retain(|(id, _, _)| *id != row.id);
        }
        if !settled.is_empty() {
            self.write_settled(&[], &settled).await?;
        }
        if ending.is_some() {
            return Ok(());
        }
        self.move_to_fresh_nonce(row, view).await
    }

    /// Sends cancellations at the sponsor's nonces `from..to` (at most [`CONCURRENCY`] of them),
    /// which no row holds and the chain has not used. Each is re-sent as is until it is
    /// `bump_after` old, then replaced with higher fees (within the cap, as any replacement).
    async fn fill_gap(&self, from: u64, to: u64) -> anyhow::Result<()> {
        let to = to.min(from + CONCURRENCY as u64);
        let s = &self.p.settings;
        let mut fills = Vec::new();
        for nonce in from..to {
            let known = self.lane.gap_fills.lock().unwrap_or_else(|e| e.into_inner()).get(&nonce).cloned();
            let attempt = match known {
                Some((old, at)) if at.elapsed() < s.bump_after => old,
                Some((old, _)) => {
                    let old_fees = Fees {
                        max_fee_per_gas: old.max_fee_per_gas,
                        max_priority_fee_per_gas: old.max_priority_fee_per_gas,
                    };
                    let unjams = nonce == from && s.unjam_above_cap;
                    match fees::replacement(old_fees, self.p.estimate_fees().await?, s.max_fee_cap, unjams) {
                        BumpDecision::Send(f) => self.lane.sponsor.sign_cancel(nonce, f)?,
                        BumpDecision::Wait => old,
                    }
                }
                None => {
                    tracing::warn!(sponsor = %self.sponsor(), nonce, "nonce gap: no row holds this nonce; filling it with a cancellation");
                    self.lane.sponsor.sign_cancel(nonce, fees::initial(self.p.estimate_fees().await?, s.max_fee_cap))?
                }
            };
            let mut gap_fills = self.lane.gap_fills.lock().unwrap_or_else(|e| e.into_inner());
            gap_fills.retain(|n, _| *n >= from);
            let entry = gap_fills.entry(nonce).or_insert_with(|| (attempt.clone(), Instant::now()));
            if entry.0.hash != attempt.hash {
                *entry = (attempt.clone(), Instant::now());
            }
            fills.push(attempt);
        }
        for attempt in fills {
            if let Err(e) = self.p.provider.send_raw_transaction(&attempt.raw).await {
                let fault = fault::classify(&e);
                if fault != SendFault::AlreadyKnown {
                    tracing::warn!(sponsor = %self.sponsor(), ?fault, error = %e, "nonce gap: the cancellation was refused");
                }
            }
        }
        Ok(())
    }

    /// The receipt to record for a row whose nonce is used, if any of its attempts has one: a
    /// successful call first, else the first found (the latest attempt is looked at first).
    async fn best_receipt(&self, row: &QueuedTx) -> anyhow::Result<Option<(AttemptKind, TransactionReceipt)>> {
        let success = |kind: AttemptKind, r: &TransactionReceipt| kind == AttemptKind::Call && r.status();
        let mut first = None;
        if let Some(r) = self.receipt(row.latest.hash).await? {
            if success(row.latest.kind, &r) {
                return Ok(Some((row.latest.kind, r)));
            }
            first = Some((row.latest.kind, r));
        }
        for (hash, kind) in self.p.store.attempt_hashes(row.id).await? {
            if hash == row.latest.hash {
                continue;
            }
            if let Some(r) = self.receipt(hash).await? {
                if success(kind, &r) {
                    return Ok(Some((kind, r)));
                }
                first.get_or_insert((kind, r));
            }
        }
        Ok(first)
    }

    /// The transaction whose `NonceUsed` log, at or below block `to`, used the call's signed
    /// meta nonce (searched over the last [`NONCE_LOG_LOOKBACK`] blocks).
    async fn nonce_used_by(&self, row: &SignedCall, to: u64) -> anyhow::Result<Option<B256>> {
        use alloy::{rpc::types::Filter, sol_types::SolEvent};
        let filter = Filter::new()
            .address(row.contract)
            .event_signature(StreamPay::NonceUsed::SIGNATURE_HASH)
            .topic1(row.signer.into_word())
            .from_block(to.saturating_sub(NONCE_LOG_LOOKBACK))
            .to_block(to);
        let logs = self.p.provider.get_logs(&filter).await.context("Failed to read NonceUsed logs")?;
        for log in logs {
            let Ok(event) = StreamPay::NonceUsed::decode_log_data(log.data()) else { continue };
            if event.nonceType == row.nonce_type as u8
                && event.nonce == alloy::primitives::U256::from(row.nonce)
                && let Some(hash) = log.transaction_hash
            {
                return Ok(Some(hash));
            }
        }
        Ok(None)
    }

    async fn receipt(&self, hash: B256) -> anyhow::Result<Option<TransactionReceipt>> {
        self.p
            .provider
            .get_transaction_receipt(hash)
            .await
            .with_context(|| format!("Failed to fetch the receipt of {hash}"))
    }

    async fn record_receipt(
        &self,
        row: &QueuedTx,
        kind: AttemptKind,
        r: &TransactionReceipt,
        view: &View,
    ) -> anyhow::Result<()> {
        if row.bundle_size.is_some() {
            return self.record_bundle(row, kind, r, view).await;
        }
        let scope = row_scope(self.chain_id(), row);
        crate::observability::pipeline_stage("receipt", row.attempt_age_secs);
        let (hash, gas_used, block_number) = (r.transaction_hash, r.gas_used, r.block_number.unwrap_or_default());
        let block_hash = r.block_hash.unwrap_or_default();
        let (status, outcome) = match kind {
            AttemptKind::Call if r.status() => {
                (NonceStatus::Mined, Outcome::Mined { hash, gas_used, block_number, block_hash })
            }
            AttemptKind::Call => {
                let reason = self.revert_reason(row, block_number).await;
                (NonceStatus::Failed, Outcome::Reverted { hash, gas_used, block_number, block_hash, reason })
            }
            AttemptKind::Cancel => {
                let expired = row.deadline > 0 && view.time > row.deadline;
                let error = if expired {
                    "the call's deadline passed before it was mined; its nonce was filled by a cancellation".to_string()
                } else {
                    "the node refused the call; its nonce was filled by a cancellation".to_string()
                };
                (NonceStatus::Failed, Outcome::Cancelled { hash, gas_used, block_number, block_hash, error, expired })
            }
        };
        self.finish(row, scope, status, &outcome).await
    }

    async fn finish(
        &self,
        row: &QueuedTx,
        scope: NonceScope,
        status: NonceStatus,
        outcome: &Outcome,
    ) -> anyhow::Result<()> {
        self.p.store.settle_transaction(self.lease, row.id, outcome, (scope, row.meta_nonce, status)).await?;
        crate::observability::pipeline_settled(outcome.label());
        self.p.notify_settled(row.id);
        Ok(())
    }

    /// Records the receipt of a bundle led by `row`: each call's outcome is its
    /// `BundleCallResult` log (a whole bundle that reverted, or a cancellation at its nonce, ends
    /// every call the same way), and each call is charged a share of the transaction's gas in
    /// proportion to its gas limit. Every row of the bundle is written in one transaction.
    async fn record_bundle(
        &self,
        row: &QueuedTx,
        kind: AttemptKind,
        r: &TransactionReceipt,
        view: &View,
    ) -> anyhow::Result<()> {
        let members = self.p.store.bundle_rows(row.id).await?;
        anyhow::ensure!(
            Some(members.len()) == row.bundle_size && members.first().is_some_and(|m| m.id == row.id),
            "bundle {} has {} rows on record, {:?} expected",
            row.id,
            members.len(),
            row.bundle_size
        );
        let (hash, gas_used, block_number) = (r.transaction_hash, r.gas_used, r.block_number.unwrap_or_default());
        let block_hash = r.block_hash.unwrap_or_default();
        let shares = gas_shares(gas_used, &members);
        let mut mined = Vec::new();
        let mut others = Vec::new();
        match kind {
            AttemptKind::Call if r.status() => {
                let results = bundle_results(r, row.contract)?;
                for (m, gas_used) in members.iter().zip(&shares).filter(|(m, _)| !m.settled) {
                    let scope = member_scope(self.chain_id(), m);
                    match results.get(&m.index) {
                        Some((true, _)) => mined.push(MinedRow {
                            id: m.id,
                            hash,
                            gas_used: *gas_used,
                            block_number,
                            block_hash,
                            effective_gas_price: r.effective_gas_price,
                            scope,
                            meta_nonce: m.meta_nonce,
                        }),
                        Some((false, data)) => {
                            let reason = decode_revert(data).display;
                            let outcome =
                                Outcome::Reverted { hash, gas_used: *gas_used, block_number, block_hash, reason };
                            others.push((m.id, outcome, (scope, m.meta_nonce, NonceStatus::Failed)));
                        }
                        None => anyhow::bail!("the receipt of bundle {hash} has no result for call {}", m.index),
                    }
                }
            }
            AttemptKind::Call => {
                let reason = self.revert_reason(row, block_number).await;
                for (m, gas_used) in members.iter().zip(&shares).filter(|(m, _)| !m.settled) {
                    let outcome = Outcome::Reverted {
                        hash,
                        gas_used: *gas_used,
                        block_number,
                        block_hash,
                        reason: reason.clone(),
                    };
                    others.push((m.id, outcome, (member_scope(self.chain_id(), m), m.meta_nonce, NonceStatus::Failed)));
                }
            }
            AttemptKind::Cancel => {
                let expired = row.deadline > 0 && view.time > row.deadline;
                let error = if expired {
                    "the earliest deadline of the bundle holding the call passed before it was mined; its nonce was filled by a cancellation"
                } else {
                    "the node refused the bundle holding the call; its nonce was filled by a cancellation"
                };
                for (m, gas_used) in members.iter().zip(&shares).filter(|(m, _)| !m.settled) {
                    let outcome = Outcome::Cancelled {
                        hash,
                        gas_used: *gas_used,
                        block_number,
                        block_hash,
                        error: error.to_string(),
                        expired,
                    };
                    others.push((m.id, outcome, (member_scope(self.chain_id(), m), m.meta_nonce, NonceStatus::Failed)));
                }
            }
        }
        crate::observability::pipeline_stage("receipt", row.attempt_age_secs);
        self.settle_bundle(row, &members, &mined, &others).await
    }

    async fn settle_bundle(
        &self,
        row: &QueuedTx,
        members: &[BundleRow],
        mined: &[MinedRow],
        others: &[(i64, Outcome, (NonceScope, u64, NonceStatus))],
    ) -> anyhow::Result<()> {
        let open = members.iter().filter(|m| !m.settled).count();
        anyhow::ensure!(mined.len() + others.len() == open, "bundle {}: every open call settles once", row.id);
        self.write_settled(mined, others).await
    }

    /// Writes the outcomes of rows of one bundle in one transaction (see [`crate::store::Store::settle_rows`]),
    /// then counts them and wakes their waiters.
    async fn write_settled(
        &self,
        mined: &[MinedRow],
        others: &[(i64, Outcome, (NonceScope, u64, NonceStatus))],
    ) -> anyhow::Result<()> {
        self.p.store.settle_rows(self.lease, mined, others).await?;
        for m in mined {
            crate::observability::pipeline_settled("mined");
            self.p.notify_settled(m.id);
        }
        for (id, outcome, _) in others {
            crate::observability::pipeline_settled(outcome.label());
            self.p.notify_settled(*id);
        }
        Ok(())
    }

    /// Why a mined call reverted: the call replayed on the state before its block, decoded into
    /// the contract's own error.
    async fn revert_reason(&self, row: &QueuedTx, block_number: u64) -> String {
        let request = TransactionRequest::default()
            .with_from(self.sponsor())
            .with_to(row.contract)
            .with_input(row.calldata.clone())
            .with_gas_limit(row.gas_limit);
        match self.p.provider.call(request).block(BlockId::number(block_number.saturating_sub(1))).await {
            Ok(_) => "reverted (not reproducible on the previous block's state)".into(),
            Err(RpcError::ErrorResp(payload)) => match payload.as_revert_data() {
                Some(data) => decode_revert(&data).display,
                None => payload.message.to_string(),
            },
            Err(e) => format!("reverted (replay failed: {e})"),
        }
    }
}

/// How far back [`Tick::nonce_used_by`] looks for the log of a used meta nonce.
const NONCE_LOG_LOOKBACK: u64 = 5_000;

/// What one send asks for next.
enum Sent {
    Done(Step),
    /// Sign a replacement of this kind (from the refused attempt's fees) and send it.
    Replace(AttemptKind),
}

/// An unknown refusal is retried (each tick) until it has been seen this many times…
const UNKNOWN_REFUSALS: u32 = 20;
/// …over at least this long; only then is the call cancelled at its nonce.
const UNKNOWN_REFUSAL_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The node took a transaction.
    Sent,
    /// Nothing to do yet.
    Waiting,
    /// The node refused it for now (the next pass tries again).
    Blocked,
}

/// How a transaction whose nonce another transaction used ends without moving: `rejected` if
/// it was being cancelled, `expired` past its deadline (a bundle's: the earliest of its calls');
/// `None`: it moves to a fresh nonce.
fn displaced_ending(row: &QueuedTx, view: &View) -> Option<Outcome> {
    if row.latest.kind == AttemptKind::Cancel {
        Some(Outcome::Rejected { error: "the nonce was used by another transaction while cancelling".to_string() })
    } else if row.deadline > 0 && view.time > row.deadline {
        Some(Outcome::Expired)
    } else {
        None
    }
}

/// A relayed call's signature, as drift detection asks the chain about it.
struct SignedCall {
    id: i64,
    contract: Address,
    signer: Address,
    nonce_type: NonceType,
    nonce: u64,
    /// Already settled (a bundle's call that ran elsewhere).
    settled: bool,
}

impl SignedCall {
    fn of(row: &QueuedTx) -> Self {
        Self {
            id: row.id,
            contract: row.contract,
            signer: row.signer,
            nonce_type: row.meta_nonce_type,
            nonce: row.meta_nonce,
            settled: false,
        }
    }

    fn of_member(m: &BundleRow) -> Self {
        Self {
            id: m.id,
            contract: m.contract,
            signer: m.signer,
            nonce_type: m.meta_nonce_type,
            nonce: m.meta_nonce,
            settled: m.settled,
        }
    }

    fn scope(&self, chain_id: u64) -> NonceScope {
        NonceScope { chain_id, contract: self.contract, signer: self.signer, nonce_type: self.nonce_type }
    }
}

/// The nonce space of a bundle row's signed call.
fn member_scope(chain_id: u64, m: &BundleRow) -> NonceScope {
    NonceScope { chain_id, contract: m.contract, signer: m.signer, nonce_type: m.meta_nonce_type }
}

/// Each call's share of a bundle's `gas_used`, in proportion to its gas limit; the shares add up
/// to `gas_used` exactly (what rounding leaves goes to the first call, the leader).
fn gas_shares(gas_used: u64, members: &[BundleRow]) -> Vec<u64> {
    let total: u128 = members.iter().map(|m| u128::from(m.gas_limit)).sum::<u128>().max(1);
    let mut shares: Vec<u64> =
        members.iter().map(|m| (u128::from(gas_used) * u128::from(m.gas_limit) / total) as u64).collect();
    let rest = gas_used - shares.iter().sum::<u64>();
    if let Some(first) = shares.first_mut() {
        *first += rest;
    }
    shares
}

/// The `BundleCallResult(index, success, revertData)` logs `contract` wrote in receipt `r`, by
/// index. A bundle's calls cannot hold a bundle of their own (execute takes only the user
/// operations of `chain::calls`), so each index is written once; a receipt that shows one twice
/// is refused rather than read one way or the other (the bundle then stays open, and is reported
/// by the failing ticks).
fn bundle_results(
    r: &TransactionReceipt,
    contract: Address,
) -> anyhow::Result<std::collections::HashMap<u64, (bool, alloy::primitives::Bytes)>> {
    use alloy::sol_types::SolEvent;
    let mut out = std::collections::HashMap::new();
    let events = r
        .inner
        .logs()
        .iter()
        .filter(|l| l.address() == contract)
        .filter_map(|l| StreamPay::BundleCallResult::decode_log_data(l.data()).ok());
    for e in events {
        let index = u64::try_from(e.index).context("a bundle call index beyond u64")?;
        anyhow::ensure!(
            out.insert(index, (e.success, e.revertData)).is_none(),
            "the receipt of bundle {} shows call {index} twice",
            r.transaction_hash
        );
    }
    Ok(out)
}

/// The nonce space of a queued row's signed call.
fn row_scope(chain_id: u64, row: &QueuedTx) -> NonceScope {
    NonceScope { chain_id, contract: row.contract, signer: row.signer, nonce_type: row.meta_nonce_type }
}
