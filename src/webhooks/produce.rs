//! Producing webhook events from what the database (and the chain) already record, without
//! touching the pipeline or the indexer:
//!
//! - `transaction.mined` / `transaction.failed`: a trigger on `relay_transactions` writes the
//!   outbox row in the same database transaction as the state change (migration 0007).
//! - contract events: a cursor per deployment over the index's `idx_events`, reading only blocks
//!   at least `confirmations` below the index's checkpoint, so an event is sent only once it is
//!   that deep (a reorg shallower than that never reaches a receiver). Transfers become
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
    primitives::{Address, B256, U256},
    providers::Provider,
};
use anyhow::Context;
use serde_json::{Value, json};
use sqlx::{Postgres, Row, Transaction};

use tokio_util::sync::CancellationToken;

use super::Dispatcher;
use crate::{
    amount::{INTERNAL_DECIMALS, format_units},
    chain::Deployment,
    chains::Chain,
    indexer::Rates,
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
    let ms = retention.as_millis() as i64;
    let events = sqlx::query(
        "DELETE FROM webhook_events ev
         WHERE ev.fanned_out AND ev.created_at < now() - $1::FLOAT8 * INTERVAL '1 millisecond'
           AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = ev.id AND d.state = 'pending')",
    )
    .bind(ms)
    .execute(pool)
    .await
    .context("Failed to prune webhook events")?
    .rows_affected();
    sqlx::query(
        "DELETE FROM webhook_endpoints ep
         WHERE ep.deleted_at < now() - $1::FLOAT8 * INTERVAL '1 millisecond'
           AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.endpoint_id = ep.id AND d.state = 'pending')",
    )
    .bind(ms)
    .execute(pool)
    .await
    .context("Failed to prune deleted webhook endpoints")?;
    Ok(events)
}

/// Event types some live endpoint subscribes to (others are not written at all).
async fn subscribed(tx: &mut Transaction<'_, Postgres>) -> anyhow::Result<Vec<String>> {
    Ok(sqlx::query_scalar("SELECT DISTINCT unnest(events) FROM webhook_endpoints WHERE deleted_at IS NULL")
        .fetch_all(&mut **tx)
        .await?)
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
    let confirmations = state.settings.confirmations;
    let mut tx = state.store.pool().begin().await?;
    sqlx::query(
        "INSERT INTO webhook_cursors (chain_id, contract, block_number, log_index) VALUES ($1, $2, -1, -1)
         ON CONFLICT DO NOTHING",
    )
    .bind(chain_id)
    .bind(contract.address.as_slice())
    .execute(&mut *tx)
    .await?;
    // The lock makes one replica at a time advance this deployment's cursor.
    let cursor = sqlx::query(
        "SELECT block_number, log_index FROM webhook_cursors WHERE chain_id = $1 AND contract = $2 FOR UPDATE",
    )
    .bind(chain_id)
    .bind(contract.address.as_slice())
    .fetch_one(&mut *tx)
    .await?;
    let (from_block, from_log): (i64, i32) = (cursor.get("block_number"), cursor.get("log_index"));
    let head: Option<i64> =
        sqlx::query_scalar("SELECT block_number FROM idx_checkpoints WHERE chain_id = $1 AND contract = $2")
            .bind(chain_id)
            .bind(contract.address.as_slice())
            .fetch_optional(&mut *tx)
            .await?;
    let Some(safe) = head.and_then(|h| u64::try_from(h).ok()).and_then(|h| h.checked_sub(confirmations)) else {
        return Ok(false);
    };
    let safe = safe as i64;
    if (from_block, from_log) >= (safe, i32::MAX) {
        return Ok(false);
    }
    let rows = sqlx::query(
        "SELECT e.block_number, e.block_hash, e.block_timestamp, e.tx_hash, e.log_index, e.kind, e.a1, e.a2,
                e.v1::TEXT AS v1, e.v2::TEXT AS v2, n.kind AS next_kind
         FROM idx_events e
         LEFT JOIN idx_events n ON n.chain_id = e.chain_id AND n.contract = e.contract
              AND n.block_hash = e.block_hash AND n.log_index = e.log_index + 1
         WHERE e.chain_id = $1 AND e.contract = $2 AND (e.block_number, e.log_index) > ($3, $4)
               AND e.block_number <= $5 AND e.kind IN (1, 2, 3, 4)
         ORDER BY e.block_number, e.log_index LIMIT $6",
    )
    .bind(chain_id)
    .bind(contract.address.as_slice())
    .bind(from_block)
    .bind(from_log)
    .bind(safe)
    .bind(CHAIN_BATCH)
    .fetch_all(&mut *tx)
    .await
    .context("Failed to read indexed events")?;
    let more = rows.len() as i64 == CHAIN_BATCH;
    let types = subscribed(&mut tx).await?;
    for r in &rows {
        let block_hash = B256::from_slice(&r.get::<Vec<u8>, _>("block_hash"));
        let log_index: i32 = r.get("log_index");
        let (a1, a2) = (address(r.get("a1")), address(r.get("a2")));
        let (v1, v2) = (number(r.get("v1")), number(r.get("v2")));
        let kind: i16 = r.get("kind");
        let next_kind: Option<i16> = r.get("next_kind");
        let (event_type, mut data) = match kind {
            1 if a1.is_zero() => ("deposit.completed", json!({"account": checksum(a2)})),
            1 if a2.is_zero() => ("withdrawal.completed", json!({"account": checksum(a1)})),
            // A Transfer right before SponsoredCallCharged (9) or Liquidated (4) is the relayer's
            // fee or the liquidator's reward, not a payment.
            1 if matches!(next_kind, Some(4 | 9)) => continue,
            1 => ("payment.completed", json!({"from": checksum(a1), "to": checksum(a2)})),
            2 | 3 => {
                let rates = Rates::decode(v1);
                (
                    if kind == 2 { "stream.created" } else { "stream.revoked" },
                    json!({
                        "subscriber": checksum(a1),
                        "author": checksum(a2),
                        "encoded_rates": v1.to_string(),
                        "income_rate": rates.income.to_string(),
                        "outgoing_rate": rates.outgoing.to_string(),
                        "project_id": rates.project_id.to_string(),
                    }),
                )
            }
            4 => (
                "account.liquidated",
                json!({
                    "account": checksum(a1),
                    "liquidator": checksum(a2),
                    "reward": format_units(v1, INTERNAL_DECIMALS),
                    "reward_raw": v1.to_string(),
                    "streams_stopped": v2.to_string(),
                }),
            ),
            _ => continue,
        };
        if !types.iter().any(|t| t == event_type) {
            continue;
        }
        if kind == 1 {
            data["amount"] = json!(format_units(v1, INTERNAL_DECIMALS));
            data["amount_raw"] = json!(v1.to_string());
        }
        data["contract"] = json!(contract.name);
        data["contract_address"] = json!(checksum(contract.address));
        data["block_number"] = json!(r.get::<i64, _>("block_number"));
        data["block_hash"] = json!(block_hash.to_string());
        data["block_timestamp"] = json!(r.get::<i64, _>("block_timestamp"));
        data["transaction_hash"] = json!(B256::from_slice(&r.get::<Vec<u8>, _>("tx_hash")).to_string());
        data["log_index"] = json!(log_index);
        let key = format!("{event_type}:{}:{block_hash}:{log_index}", chain.chain_id);
        insert_event(&mut tx, &key, chain_id, event_type, None, data).await?;
    }
    let (to_block, to_log) = match rows.last() {
        Some(r) if more => (r.get::<i64, _>("block_number"), r.get::<i32, _>("log_index")),
        _ => (safe, i32::MAX),
    };
    sqlx::query("UPDATE webhook_cursors SET block_number = $3, log_index = $4 WHERE chain_id = $1 AND contract = $2")
        .bind(chain_id)
        .bind(contract.address.as_slice())
        .bind(to_block)
        .bind(to_log)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(more)
}

async fn insert_event(
    tx: &mut Transaction<'_, Postgres>,
    key: &str,
    chain_id: i64,
    event_type: &str,
    sponsor: Option<Address>,
    data: Value,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO webhook_events (event_key, chain_id, type, sponsor, data) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (event_key) DO NOTHING",
    )
    .bind(key)
    .bind(chain_id)
    .bind(event_type)
    .bind(sponsor.as_ref().map(|s| s.as_slice()))
    .bind(data)
    .execute(&mut **tx)
    .await
    .context("Failed to write a webhook event")?;
    Ok(())
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
        sqlx::query(
            "INSERT INTO webhook_sponsor_alerts (chain_id, sponsor, low, episode) VALUES ($1, $2, false, 0)
             ON CONFLICT DO NOTHING",
        )
        .bind(chain_id)
        .bind(sponsor.as_slice())
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(
            "SELECT low, episode FROM webhook_sponsor_alerts WHERE chain_id = $1 AND sponsor = $2 FOR UPDATE",
        )
        .bind(chain_id)
        .bind(sponsor.as_slice())
        .fetch_one(&mut *tx)
        .await?;
        let (was_low, episode): (bool, i32) = (row.get("low"), row.get("episode"));
        if low == was_low {
            continue;
        }
        let episode = if low { episode + 1 } else { episode };
        sqlx::query("UPDATE webhook_sponsor_alerts SET low = $3, episode = $4 WHERE chain_id = $1 AND sponsor = $2")
            .bind(chain_id)
            .bind(sponsor.as_slice())
            .bind(low)
            .bind(episode)
            .execute(&mut *tx)
            .await?;
        if low {
            let data = json!({
                "sponsor": checksum(sponsor),
                "balance_wei": balance.to_string(),
                "balance": format_units(balance, INTERNAL_DECIMALS),
                "min_balance_wei": min.to_string(),
                "min_balance": format_units(min, INTERNAL_DECIMALS),
            });
            let key = format!("sponsor.balance_low:{}:{sponsor}:{episode}", chain.chain_id);
            insert_event(&mut tx, &key, chain_id, "sponsor.balance_low", Some(sponsor), data).await?;
            tracing::warn!(sponsor = %sponsor, balance = %balance, "sponsor balance below the threshold");
        }
        tx.commit().await?;
    }
    Ok(())
}
