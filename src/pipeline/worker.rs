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
    sync::{Arc, Weak, atomic::Ordering},
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
use tokio_util::sync::CancellationToken;

use super::{
    Lane, Pipeline,
    fault::{self, SendFault},
    fees::{self, BumpDecision, Fees},
};
use crate::{
    chain::{StreamPay, revert::decode_revert, traits::NonceType},
    store::{AttemptKind, NonceScope, NonceStatus, Outcome, QueuedTx, SignedAttempt, TxStatus},
};

/// RPC calls a worker has in flight at once.
const CONCURRENCY: usize = 16;

pub(super) async fn run(pipeline: Weak<Pipeline>, lane: Arc<Lane>, stop: CancellationToken) {
    let mut initialised = false;
    let mut hurry = false;
    let mut leased = false;
    loop {
        let Some(p) = pipeline.upgrade() else { return };
        if !hurry {
            let poll = p.settings.poll_interval;
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = lane.wake.notified() => {}
                _ = tokio::time::sleep(poll) => {}
            }
        }
        if stop.is_cancelled() {
            // Between two ticks: nothing is half-sent. Give the lease up so another replica
            // takes the queue over now rather than when the lease runs out.
            if leased
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
        match p.store.acquire_sponsor_lease(p.chain_id(&lane), lane.sponsor.address, &p.owner, ttl).await {
            Ok(true) => leased = true,
            Ok(false) => {
                leased = false;
                continue;
            }
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), "sponsor lease check failed");
                continue;
            }
        }
        let tick = Tick { p: &p, lane: &lane };
        match tick.run().await {
            Ok(sent_new) => hurry = sent_new,
            Err(e) => tracing::warn!(sponsor = %lane.sponsor.address, error = format!("{e:#}"), "pipeline tick failed"),
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
}

/// What the chain looks like this tick.
struct View {
    chain_nonce: u64,
    time: u64,
}

impl Tick<'_> {
    fn sponsor(&self) -> Address {
        self.lane.sponsor.address
    }

    fn chain_id(&self) -> u64 {
        self.lane.sponsor.chain_id
    }

    /// One pass over the sponsor's open rows; answers whether a new transaction went out (so
    /// the next pass comes at once: an automining node has its receipt already).
    async fn run(&self) -> anyhow::Result<bool> {
        let provider = &self.p.provider;
        let chain_nonce = provider
            .get_transaction_count(self.sponsor())
            .latest()
            .await
            .context("Failed to read the sponsor's nonce")?;
        self.lane.chain_nonce.store(chain_nonce + 1, Ordering::Relaxed);
        if self.p.store.raise_sponsor_nonce(self.chain_id(), self.sponsor(), chain_nonce).await? {
            tracing::warn!(sponsor = %self.sponsor(), chain_nonce, "nonce drift: the sponsor key was used outside the relayer; next nonce raised");
        }
        // Mined rows not yet final: re-checked against the chain (throttled, see `finality`);
        // one reorged out is back among the open rows read next.
        super::finality::recheck(self.p, self.lane).await;
        let rows = self.p.store.open_transactions(self.chain_id(), self.sponsor()).await?;
        if rows.is_empty() {
            return Ok(false);
        }
        let block = provider
            .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
            .await
            .context("Failed to read the latest block")?
            .context("no latest block")?;
        let view = View { chain_nonce, time: block.header.timestamp };

        // Rows whose nonce the chain has used are independent of each other: settled
        // concurrently. Open rows are sent concurrently too, keeping their order for the
        // answers; a node takes a later nonce into its queue until the earlier one arrives.
        let (done, open): (Vec<QueuedTx>, Vec<QueuedTx>) =
            rows.into_iter().partition(|r| r.sponsor_nonce < view.chain_nonce);
        for chunk in done.chunks(CONCURRENCY) {
            let settled = futures::future::join_all(chunk.iter().map(|row| self.settle_done(row, &view))).await;
            settled.into_iter().collect::<anyhow::Result<()>>()?;
        }
        let mut steps = Vec::with_capacity(open.len());
        for chunk in open.chunks(CONCURRENCY) {
            steps.extend(futures::future::join_all(chunk.iter().map(|row| self.open_step(row, &view))).await);
        }
        let mut sent_new = false;
        for step in steps {
            if step? == (TxStatus::Pending, Step::Sent) {
                sent_new = true;
            }
        }
        Ok(sent_new)
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
            if let Some(attempt) = self.replace(row, AttemptKind::Cancel, true).await? {
                return self.broadcast(row, &attempt).await;
            }
            return Ok(Step::Waiting);
        }
        if row.status == TxStatus::Pending {
            return self.broadcast(row, &row.latest).await;
        }
        if row.attempt_age_secs >= s.bump_after.as_secs_f64() {
            if let Some(attempt) = self.replace(row, row.latest.kind, unjams).await? {
                tracing::info!(id = row.id, nonce = row.sponsor_nonce, hash = %attempt.hash, max_fee = attempt.max_fee_per_gas, "fee bump");
                return self.broadcast(row, &attempt).await;
            }
            return Ok(Step::Waiting);
        }
        if row.sent_age_secs.is_none_or(|a| a >= s.rebroadcast_after.as_secs_f64()) {
            // The node may have dropped it (restart, eviction, anvil_dropAllTransactions): the
            // same bytes again are harmless ("already known") if it did not.
            return self.broadcast(row, &row.latest).await;
        }
        Ok(Step::Waiting)
    }

    /// Signs a replacement of the row's latest transaction at its nonce (12.5% more, or the
    /// market's fee); `None` if the cap says wait.
    async fn replace(&self, row: &QueuedTx, kind: AttemptKind, unjams: bool) -> anyhow::Result<Option<SignedAttempt>> {
        let old = Fees {
            max_fee_per_gas: row.latest.max_fee_per_gas,
            max_priority_fee_per_gas: row.latest.max_priority_fee_per_gas,
        };
        let estimate = self.p.estimate_fees().await?;
        // A cancellation is never held back by the cap.
        let unjams = unjams || kind == AttemptKind::Cancel;
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
        self.p.store.add_attempt(row.id, row.sponsor_nonce, &attempt).await?;
        Ok(Some(attempt))
    }

    /// Sends `attempt` (already on record) and acts on the node's answer.
    async fn broadcast(&self, row: &QueuedTx, attempt: &SignedAttempt) -> anyhow::Result<Step> {
        let started = Instant::now();
        let sent = self.p.provider.send_raw_transaction(&attempt.raw).await;
        crate::observability::pipeline_stage("send", started.elapsed().as_secs_f64());
        let err = match sent {
            Ok(_) => {
                if row.status == TxStatus::Pending {
                    crate::observability::pipeline_stage("queue_wait", row.attempt_age_secs);
                }
                self.p.store.mark_submitted(row.id).await?;
                return Ok(Step::Sent);
            }
            Err(e) => e,
        };
        let fault = fault::classify(&err);
        let message = err.to_string();
        tracing::debug!(id = row.id, nonce = row.sponsor_nonce, ?fault, %message, "broadcast refused");
        match fault {
            SendFault::AlreadyKnown => {
                self.p.store.mark_submitted(row.id).await?;
                Ok(Step::Sent)
            }
            SendFault::NonceTooLow => {
                // Never retried as is: one of this row's own transactions may be the one that
                // used the nonce. The next pass reads the new count and settles the row.
                self.p.store.note_error(row.id, &message).await?;
                Ok(Step::Blocked)
            }
            SendFault::Underpriced => {
                // Something sits at this nonce (an earlier attempt, or someone else's) or the
                // base fee rose: replace it with more.
                self.p.store.note_error(row.id, &message).await?;
                if let Some(bumped) = self.replace(row, attempt.kind, true).await? {
                    return Box::pin(self.broadcast(row, &bumped)).await;
                }
                Ok(Step::Blocked)
            }
            SendFault::InsufficientFunds => {
                tracing::warn!(sponsor = %self.sponsor(), "sponsor cannot pay for gas: top it up");
                self.p.store.note_error(row.id, &message).await?;
                Ok(Step::Blocked)
            }
            SendFault::Transient => {
                self.p.store.note_error(row.id, &message).await?;
                Ok(Step::Blocked)
            }
            SendFault::Rejected => {
                self.p.store.note_error(row.id, &message).await?;
                if attempt.kind == AttemptKind::Cancel {
                    tracing::error!(id = row.id, %message, "the node refuses even a cancellation; the queue is stuck");
                    return Ok(Step::Blocked);
                }
                tracing::warn!(id = row.id, %message, "the node refuses the transaction: cancelling at its nonce");
                if let Some(cancel) = self.replace(row, AttemptKind::Cancel, true).await? {
                    return Box::pin(self.broadcast(row, &cancel)).await;
                }
                Ok(Step::Blocked)
            }
        }
    }

    /// The chain used this row's nonce: find which transaction did.
    async fn settle_used_nonce(&self, row: &QueuedTx, view: &View) -> anyhow::Result<()> {
        // Almost always the latest attempt is the one mined: look it up before reading the
        // row's other hashes.
        if let Some(receipt) = self.receipt(row.latest.hash).await? {
            return self.record_receipt(row, row.latest.kind, &receipt, view).await;
        }
        for (hash, kind) in self.p.store.attempt_hashes(row.id).await? {
            if hash == row.latest.hash {
                continue;
            }
            if let Some(receipt) = self.receipt(hash).await? {
                return self.record_receipt(row, kind, &receipt, view).await;
            }
        }
        // None of ours, as far as this node can tell right now. Nodes answer from different
        // views (Anvil under load counts a nonce before serving the receipt; load-balanced RPCs
        // lag each other), and moving a call that did get mined would send it twice: so this is
        // only believed once it has held for a while.
        {
            let mut suspects = self.lane.suspects.lock().unwrap_or_else(|e| e.into_inner());
            let since = *suspects.entry(row.id).or_insert_with(Instant::now);
            if since.elapsed() < self.p.settings.drift_grace() {
                return Ok(());
            }
            suspects.remove(&row.id);
        }
        // The key was used outside the relayer. Did the signed call run anyway (another relayer
        // sent it)?
        let streampay = StreamPay::new(row.contract, &self.p.provider);
        let used = if row.meta_nonce_type == NonceType::Unique {
            streampay
                .bySigUniqueNonces(row.signer, alloy::primitives::U256::from(row.meta_nonce))
                .call()
                .await
                .context("Failed to read the signer's unique bySig nonce")?
        } else {
            streampay.bySigAccountNonces(row.signer).call().await.context("Failed to read the signer's bySig nonce")?
                > alloy::primitives::U256::from(row.meta_nonce)
        };
        let scope = row_scope(self.chain_id(), row);
        if used {
            tracing::warn!(id = row.id, "the signed call was executed by another transaction");
            self.finish(row, scope, NonceStatus::Mined, &Outcome::Replaced).await
        } else if row.latest.kind == AttemptKind::Cancel {
            let error = "the nonce was used by another transaction while cancelling".to_string();
            self.finish(row, scope, NonceStatus::Failed, &Outcome::Rejected { error }).await
        } else if row.deadline > 0 && view.time > row.deadline {
            self.finish(row, scope, NonceStatus::Failed, &Outcome::Expired).await
        } else {
            let sponsor = &self.lane.sponsor;
            let estimate = fees::initial(self.p.estimate_fees().await?, self.p.settings.max_fee_cap);
            let nonce = self
                .p
                .store
                .requeue_transaction(self.chain_id(), self.sponsor(), row.id, view.chain_nonce, |nonce| {
                    sponsor.sign_call(nonce, row.contract, row.calldata.clone(), row.gas_limit, estimate)
                })
                .await?;
            tracing::warn!(
                id = row.id,
                old = row.sponsor_nonce,
                new = nonce,
                "nonce drift: nonce used outside the relayer; call moved to a new nonce"
            );
            Ok(())
        }
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
        self.p.store.settle_transaction(row.id, outcome).await?;
        crate::observability::pipeline_settled(outcome.label());
        self.p.store.finish_nonce(scope, row.meta_nonce, status).await?;
        self.p.notify_settled(row.id);
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The node took a transaction.
    Sent,
    /// Nothing to do yet.
    Waiting,
    /// The node refused it for now (the next pass tries again).
    Blocked,
}

/// The nonce space of a queued row's signed call.
fn row_scope(chain_id: u64, row: &QueuedTx) -> NonceScope {
    NonceScope { chain_id, contract: row.contract, signer: row.signer, nonce_type: row.meta_nonce_type }
}
