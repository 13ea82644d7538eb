//! The producer's side of the outbox: per-deployment cursors over the index's events, the
//! sponsor-balance alert episodes, the event rows themselves, and pruning. Each step's statements
//! run on the caller's transaction (`&mut PgConnection`), which holds the row locks that let one
//! replica at a time advance a cursor or an alert. Every statement is checked at compile time.

use std::time::Duration;

use alloy::primitives::{Address, B256};
use sqlx::{PgConnection, PgPool};

use crate::store::index::{EventKind, bytes32};

/// One indexed event as the producer reads it, with the kind of the log right after it in the
/// same block (to tell a fee or a reward from a payment).
#[derive(Debug, Clone)]
pub struct CursorEvent {
    pub block_number: i64,
    pub block_hash: B256,
    pub block_timestamp: i64,
    pub tx_hash: B256,
    pub log_index: i32,
    pub kind: EventKind,
    pub a1: Option<Vec<u8>>,
    pub a2: Option<Vec<u8>>,
    pub v1: Option<String>,
    pub v2: Option<String>,
    pub next_kind: Option<EventKind>,
}

/// Deletes events older than `retention` none of whose deliveries is still pending (their
/// deliveries and attempt log go with them), and endpoints deleted longer ago than that.
/// Returns how many events went.
pub async fn prune(pool: &PgPool, retention: Duration) -> anyhow::Result<u64> {
    // Milliseconds as float8 (exact below 2^53 ms, some 285,000 years).
    let ms = retention.as_millis() as f64;
    let events = sqlx::query!(
        "DELETE FROM webhook_events ev
         WHERE ev.fanned_out AND ev.created_at < now() - $1::FLOAT8 * INTERVAL '1 millisecond'
           AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = ev.id AND d.state = 'pending')",
        ms,
    )
    .execute(pool)
    .await
    .map_err(|e| anyhow::Error::new(e).context("Failed to prune webhook events"))?
    .rows_affected();
    sqlx::query!(
        "DELETE FROM webhook_endpoints ep
         WHERE ep.deleted_at < now() - $1::FLOAT8 * INTERVAL '1 millisecond'
           AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.endpoint_id = ep.id AND d.state = 'pending')",
        ms,
    )
    .execute(pool)
    .await
    .map_err(|e| anyhow::Error::new(e).context("Failed to prune deleted webhook endpoints"))?;
    Ok(events)
}

/// Event types some live endpoint subscribes to (others are not written at all).
pub async fn subscribed_types(conn: &mut PgConnection) -> anyhow::Result<Vec<String>> {
    Ok(sqlx::query_scalar!(
        r#"SELECT DISTINCT unnest(events) AS "event_type!" FROM webhook_endpoints WHERE deleted_at IS NULL"#
    )
    .fetch_all(conn)
    .await?)
}

/// The deployment's cursor `(block_number, log_index)`, created at `(-1, -1)` if missing, locked
/// until the end of the caller's transaction.
pub async fn lock_cursor(conn: &mut PgConnection, chain_id: i64, contract: Address) -> anyhow::Result<(i64, i32)> {
    sqlx::query!(
        "INSERT INTO webhook_cursors (chain_id, contract, block_number, log_index) VALUES ($1, $2, -1, -1)
         ON CONFLICT DO NOTHING",
        chain_id,
        contract.as_slice(),
    )
    .execute(&mut *conn)
    .await?;
    let cursor = sqlx::query!(
        "SELECT block_number, log_index FROM webhook_cursors WHERE chain_id = $1 AND contract = $2 FOR UPDATE",
        chain_id,
        contract.as_slice(),
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok((cursor.block_number, cursor.log_index))
}

/// The index's checkpoint block of the deployment, `None` before its first checkpoint.
pub async fn indexed_block(conn: &mut PgConnection, chain_id: i64, contract: Address) -> anyhow::Result<Option<i64>> {
    Ok(sqlx::query_scalar!(
        "SELECT block_number FROM idx_checkpoints WHERE chain_id = $1 AND contract = $2",
        chain_id,
        contract.as_slice(),
    )
    .fetch_optional(conn)
    .await?)
}

/// Up to `limit` events of `kinds` after `(from_block, from_log)` up to block `to_block`, in
/// chain order.
pub async fn events_after(
    conn: &mut PgConnection,
    chain_id: i64,
    contract: Address,
    (from_block, from_log): (i64, i32),
    to_block: i64,
    kinds: &[EventKind],
    limit: i64,
) -> anyhow::Result<Vec<CursorEvent>> {
    let kinds: Vec<i16> = kinds.iter().map(|k| k.code()).collect();
    let rows = sqlx::query!(
        r#"SELECT e.block_number, e.block_hash, e.block_timestamp, e.tx_hash, e.log_index, e.kind,
                  e.a1 AS "a1?", e.a2 AS "a2?", e.v1::TEXT AS "v1?", e.v2::TEXT AS "v2?", n.kind AS "next_kind?"
           FROM idx_events e
           LEFT JOIN idx_events n ON n.chain_id = e.chain_id AND n.contract = e.contract
                AND n.block_hash = e.block_hash AND n.log_index = e.log_index + 1
           WHERE e.chain_id = $1 AND e.contract = $2 AND (e.block_number, e.log_index) > ($3, $4)
                 AND e.block_number <= $5 AND e.kind = ANY($7)
           ORDER BY e.block_number, e.log_index LIMIT $6"#,
        chain_id,
        contract.as_slice(),
        from_block,
        from_log,
        to_block,
        limit,
        &kinds,
    )
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(CursorEvent {
                block_number: r.block_number,
                block_hash: bytes32(&r.block_hash)?,
                block_timestamp: r.block_timestamp,
                tx_hash: bytes32(&r.tx_hash)?,
                log_index: r.log_index,
                kind: EventKind::try_from(r.kind)?,
                a1: r.a1,
                a2: r.a2,
                v1: r.v1,
                v2: r.v2,
                next_kind: r.next_kind.map(EventKind::try_from).transpose()?,
            })
        })
        .collect()
}

/// Moves the deployment's cursor to `(block_number, log_index)`.
pub async fn advance_cursor(
    conn: &mut PgConnection,
    chain_id: i64,
    contract: Address,
    (block_number, log_index): (i64, i32),
) -> anyhow::Result<()> {
    sqlx::query!(
        "UPDATE webhook_cursors SET block_number = $3, log_index = $4 WHERE chain_id = $1 AND contract = $2",
        chain_id,
        contract.as_slice(),
        block_number,
        log_index,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Writes an outbox event unless one with the same key exists.
pub async fn insert_event(
    conn: &mut PgConnection,
    key: &str,
    chain_id: i64,
    event_type: &str,
    sponsor: Option<Address>,
    data: serde_json::Value,
) -> anyhow::Result<()> {
    sqlx::query!(
        // The data goes as JSON text: the crate's sqlx has no JSON type mapping for the macros.
        "INSERT INTO webhook_events (event_key, chain_id, type, sponsor, data) VALUES ($1, $2, $3, $4, $5::text::jsonb)
         ON CONFLICT (event_key) DO NOTHING",
        key,
        chain_id,
        event_type,
        sponsor.as_ref().map(|s| s.as_slice()),
        data.to_string(),
    )
    .execute(conn)
    .await
    .map_err(|e| anyhow::Error::new(e).context("Failed to write a webhook event"))?;
    Ok(())
}

/// The sponsor's alert state `(low, episode)`, created as `(false, 0)` if missing, locked until
/// the end of the caller's transaction.
pub async fn lock_sponsor_alert(
    conn: &mut PgConnection,
    chain_id: i64,
    sponsor: Address,
) -> anyhow::Result<(bool, i32)> {
    sqlx::query!(
        "INSERT INTO webhook_sponsor_alerts (chain_id, sponsor, low, episode) VALUES ($1, $2, false, 0)
         ON CONFLICT DO NOTHING",
        chain_id,
        sponsor.as_slice(),
    )
    .execute(&mut *conn)
    .await?;
    let row = sqlx::query!(
        "SELECT low, episode FROM webhook_sponsor_alerts WHERE chain_id = $1 AND sponsor = $2 FOR UPDATE",
        chain_id,
        sponsor.as_slice(),
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok((row.low, row.episode))
}

/// Sets the sponsor's alert state.
pub async fn set_sponsor_alert(
    conn: &mut PgConnection,
    chain_id: i64,
    sponsor: Address,
    low: bool,
    episode: i32,
) -> anyhow::Result<()> {
    sqlx::query!(
        "UPDATE webhook_sponsor_alerts SET low = $3, episode = $4 WHERE chain_id = $1 AND sponsor = $2",
        chain_id,
        sponsor.as_slice(),
        low,
        episode,
    )
    .execute(conn)
    .await?;
    Ok(())
}
