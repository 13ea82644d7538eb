//! Producing webhook events from what the database (and the chain) already record, without
//! touching the pipeline or the indexer:
//!
//! - `transaction.mined` / `transaction.reorged` / `transaction.finalized` / `transaction.failed`:
//!   a trigger on `relay_transactions` writes the outbox row in the same database transaction as
//!   the state change (migrations 0007 and 0017).
//! - contract events: a cursor per deployment over the index's `idx_events`, reading only blocks
//!   at least `confirmations` below the index's checkpoint (the chain's finality depth unless
//!   `webhooks.confirmations` is set), so an event is sent only once it is that deep. An index
//!   rollback moves the cursor back in its own database transaction, withdraws the undelivered
//!   events of the blocks it orphans and writes `event.retracted` for the ones that may have been
//!   delivered (`store::webhooks::outbox::follow_rollback`); the canonical events are then
//!   produced again from the cursor. An event's key carries its block hash, so the orphaned
//!   event and its canonical replacement at the same height and log index are two events. Transfers become
//!   `deposit.completed` (minted), `withdrawal.completed` (burnt) or `payment.completed` (between
//!   accounts; not the relayer fee of a sponsored call nor a liquidation reward);
//!   `StreamCreated`/`StreamRevoked`/`Liquidated` become `stream.created`/`stream.revoked`/
//!   `account.liquidated`.
//! - `sponsor.balance_low`: each sponsor's native balance is checked every
//!   `balance_check_interval` against `/health`'s threshold; an alert fires once per episode.
//!
//! Events older than `retention` whose deliveries have all ended are pruned hourly.
//!
//! Every step is one database transaction under row locks, and every event has a stable key, so a
//! crash or several replicas never lose or duplicate an event.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use alloy::{
    primitives::{Address, U256},
    providers::Provider,
};
use anyhow::Context;
use serde_json::json;

use tokio_util::sync::CancellationToken;

use super::Dispatcher;
use crate::{
    amount::{INTERNAL_DECIMALS, format_units},
    chain::Deployment,
    chains::Chain,
    indexer::{Rates, events::EventKind},
    store::webhooks::outbox,
    views::checksum,
};

/// Events read per deployment per step.
const CHAIN_BATCH: i64 = 500;

/// The producer loop over every chain: contract events every poll, sponsor balances every
/// `balance_check_interval`. Errors are logged and retried on the next poll. Returns when `stop`
/// is cancelled (between two steps; each step is one database transaction).
pub async fn run(state: Arc<Dispatcher>, stop: CancellationToken) -> anyhow::Result<()> {
    let settings = state.settings.clone();
    let mut last_balance_check: Option<Instant> = None;
    let mut last_prune: Option<Instant> = None;
    while !stop.is_cancelled() {
        for chain in &state.chains {
            for contract in &chain.deployments {
                loop {
                    match contract_events(&state, chain, contract).await {
                        Ok(true) => continue,
                        Ok(false) => break,
                        Err(e) => {
                            tracing::warn!(
                                error = format!("{e:#}"),
                                contract = contract.name,
                                "webhook events: index read failed"
                            );
                            break;
                        }
                    }
                }
            }
        }
        if last_balance_check.is_none_or(|t| t.elapsed() >= settings.balance_check_interval) {
            last_balance_check = Some(Instant::now());
            for chain in &state.chains {
                if let Err(e) = sponsor_balances(&state, chain).await {
                    tracing::warn!(chain = %chain.name, error = format!("{e:#}"), "webhook events: sponsor balance check failed");
                }
            }
        }
        if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
            last_prune = Some(Instant::now());
            match prune(state.store.pool(), settings.retention).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(events = n, "pruned old webhook events"),
                Err(e) => tracing::warn!(error = format!("{e:#}"), "webhook pruning failed"),
            }
        }
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(settings.poll_interval) => {}
        }
    }
    Ok(())
}

/// How often old events are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Deletes events older than `retention` none of whose deliveries is still pending (their
/// deliveries and attempt log go with them), and endpoints deleted longer ago than that.
/// Returns how many events went.
pub async fn prune(pool: &sqlx::PgPool, retention: Duration) -> anyhow::Result<u64> {
    outbox::prune(pool, retention).await
}

fn address(bytes: Option<Vec<u8>>) -> Address {
    bytes.filter(|b| b.len() == 20).map(|b| Address::from_slice(&b)).unwrap_or_default()
}

fn number(text: Option<String>) -> U256 {
    text.and_then(|t| U256::from_str_radix(&t, 10).ok()).unwrap_or_default()
}

/// Turns the next confirmed events of `contract` into outbox rows; `true` if there may be more.
async fn contract_events(state: &Dispatcher, chain: &Chain, contract: &Deployment) -> anyhow::Result<bool> {
    let chain_id = chain.chain_id as i64;
    // By default an event is sent once final, when a relayed transaction in its block would be
    // `confirmed`: the chain's finality depth counts the including block, these blocks on top.
    let confirmations = state.settings.confirmations.unwrap_or(chain.finality_depth.saturating_sub(1));
    let mut tx = state.store.pool().begin().await?;
    // The lock makes one replica at a time advance this deployment's cursor.
    let (from_block, from_log) = outbox::lock_cursor(&mut tx, chain_id, contract.address).await?;
    let head = outbox::indexed_block(&mut tx, chain_id, contract.address).await?;
    let Some(safe) = head.and_then(|h| u64::try_from(h).ok()).and_then(|h| h.checked_sub(confirmations)) else {
        return Ok(false);
    };
    let safe = safe as i64;
    if (from_block, from_log) >= (safe, i32::MAX) {
        return Ok(false);
    }
    let rows = outbox::events_after(
        &mut tx,
        chain_id,
        contract.address,
        (from_block, from_log),
        safe,
        &[EventKind::Transfer, EventKind::StreamCreated, EventKind::StreamRevoked, EventKind::Liquidated],
        CHAIN_BATCH,
    )
    .await
    .context("Failed to read indexed events")?;
    let more = rows.len() as i64 == CHAIN_BATCH;
    let types = outbox::subscribed_types(&mut tx).await?;
    for r in &rows {
        let (block_hash, log_index) = (r.block_hash, r.log_index);
        let (a1, a2) = (address(r.a1.clone()), address(r.a2.clone()));
        let (v1, v2) = (number(r.v1.clone()), number(r.v2.clone()));
        let (kind, next_kind) = (r.kind, r.next_kind);
        let (event_type, mut data) = match kind {
            EventKind::Transfer if a1.is_zero() => ("deposit.completed", json!({"Account": checksum(a2)})),
            EventKind::Transfer if a2.is_zero() => ("withdrawal.completed", json!({"Account": checksum(a1)})),
            // A Transfer right before SponsoredCallCharged or Liquidated is the relayer's fee or
            // the liquidator's reward, not a payment.
            EventKind::Transfer
                if matches!(next_kind, Some(EventKind::Liquidated | EventKind::SponsoredCallCharged)) =>
            {
                continue;
            }
            EventKind::Transfer => ("payment.completed", json!({"From": checksum(a1), "To": checksum(a2)})),
            EventKind::StreamCreated | EventKind::StreamRevoked => {
                let rates = Rates::decode(v1);
                (
                    if kind == EventKind::StreamCreated { "stream.created" } else { "stream.revoked" },
                    json!({
                        "Subscriber": checksum(a1),
                        "Author": checksum(a2),
                        "EncodedRates": v1.to_string(),
                        "IncomeRate": rates.income.to_string(),
                        "OutgoingRate": rates.outgoing.to_string(),
                        "ProjectId": rates.project_id.to_string(),
                    }),
                )
            }
            EventKind::Liquidated => (
                "account.liquidated",
                json!({
                    "Account": checksum(a1),
                    "Liquidator": checksum(a2),
                    "Reward": format_units(v1, INTERNAL_DECIMALS),
                    "RewardRaw": v1.to_string(),
                    "StreamsStopped": v2.to_string(),
                }),
            ),
            _ => continue,
        };
        if !types.iter().any(|t| t == event_type) {
            continue;
        }
        if kind == EventKind::Transfer {
            data["Amount"] = json!(format_units(v1, INTERNAL_DECIMALS));
            data["AmountRaw"] = json!(v1.to_string());
        }
        data["Contract"] = json!(contract.name);
        data["ContractAddress"] = json!(checksum(contract.address));
        data["BlockNumber"] = json!(r.block_number);
        data["BlockHash"] = json!(block_hash.to_string());
        data["BlockTimestamp"] = json!(r.block_timestamp);
        data["TransactionHash"] = json!(r.tx_hash.to_string());
        data["LogIndex"] = json!(log_index);
        let key = format!("{event_type}:{}:{block_hash}:{log_index}", chain.chain_id);
        // With its origin, so a rollback of the index finds it (`outbox::follow_rollback`).
        let origin = outbox::Origin { contract: contract.address, block_number: r.block_number, block_hash };
        outbox::insert_event(&mut tx, &key, chain_id, event_type, None, Some(origin), data).await?;
    }
    let (to_block, to_log) = match rows.last() {
        Some(r) if more => (r.block_number, r.log_index),
        _ => (safe, i32::MAX),
    };
    outbox::advance_cursor(&mut tx, chain_id, contract.address, (to_block, to_log)).await?;
    tx.commit().await?;
    Ok(more)
}

/// Checks every sponsor's native balance; a sponsor going below the threshold fires
/// `sponsor.balance_low` once, until it is topped up above the threshold again.
async fn sponsor_balances(state: &Dispatcher, chain: &Chain) -> anyhow::Result<()> {
    let min = state.sponsor_min_balance_wei;
    let chain_id = chain.chain_id as i64;
    for &sponsor in chain.sponsors.addresses() {
        let balance = tokio::time::timeout(Duration::from_secs(10), chain.provider.get_balance(sponsor))
            .await
            .context("the node did not answer eth_getBalance")??;
        let low = balance < min;
        let mut tx = state.store.pool().begin().await?;
        let (was_low, episode) = outbox::lock_sponsor_alert(&mut tx, chain_id, sponsor).await?;
        if low == was_low {
            continue;
        }
        let episode = if low { episode + 1 } else { episode };
        outbox::set_sponsor_alert(&mut tx, chain_id, sponsor, low, episode).await?;
        if low {
            let data = json!({
                "Sponsor": checksum(sponsor),
                "BalanceWei": balance.to_string(),
                "Balance": format_units(balance, INTERNAL_DECIMALS),
                "MinBalanceWei": min.to_string(),
                "MinBalance": format_units(min, INTERNAL_DECIMALS),
            });
            let key = format!("sponsor.balance_low:{}:{sponsor}:{episode}", chain.chain_id);
            outbox::insert_event(&mut tx, &key, chain_id, "sponsor.balance_low", Some(sponsor), None, data).await?;
            tracing::warn!(sponsor = %sponsor, balance = %balance, "sponsor balance below the threshold");
        }
        tx.commit().await?;
    }
    Ok(())
}
