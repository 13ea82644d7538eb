//! The producer's side of the outbox: per-deployment cursors over the index's events, the
//! sponsor-balance alert episodes, the event rows themselves, what an index rollback does to them
//! ([`follow_rollback`]), and pruning. Each step's statements run on the caller's transaction
//! (`&mut PgConnection`), which holds the row locks that let one replica at a time advance a
//! cursor or an alert. Every statement is checked at compile time.

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

/// Where a contract event came from: its deployment and block.
#[derive(Debug, Clone, Copy)]
pub struct Origin {
    pub contract: Address,
    pub block_number: i64,
    pub block_hash: B256,
}

/// Writes an outbox event unless one with the same key exists.
pub async fn insert_event(
    conn: &mut PgConnection,
    key: &str,
    chain_id: i64,
    event_type: &str,
    sponsor: Option<Address>,
    origin: Option<Origin>,
    data: serde_json::Value,
) -> anyhow::Result<()> {
    sqlx::query!(
        // The data goes as JSON text: the crate's sqlx has no JSON type mapping for the macros.
        "INSERT INTO webhook_events (event_key, chain_id, type, sponsor, data, contract, block_number, block_hash)
         VALUES ($1, $2, $3, $4, $5::text::jsonb, $6, $7, $8)
         ON CONFLICT (event_key) DO NOTHING",
        key,
        chain_id,
        event_type,
        sponsor.as_ref().map(|s| s.as_slice()),
        data.to_string(),
        origin.as_ref().map(|o| o.contract.as_slice()),
        origin.map(|o| o.block_number),
        origin.as_ref().map(|o| o.block_hash.as_slice()),
    )
    .execute(conn)
    .await
    .map_err(|e| anyhow::Error::new(e).context("Failed to write a webhook event"))?;
    Ok(())
}

/// What [`follow_rollback`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Followed {
    /// Events of orphaned blocks (none of them is sent from now on).
    pub orphaned: u64,
    /// Retractions written for those some endpoint may have received.
    pub retracted: u64,
}

/// Makes the webhooks follow a rollback of the deployment's index to block `ancestor`, on the
/// rollback's own transaction: the cursor moves back to the end of `ancestor` (if it was past
/// it), so the canonical events of the blocks above are produced; the events already written for
/// those blocks are orphaned (their key freed, their pending deliveries withdrawn, never sent),
/// and each one some endpoint may have received (a delivery with an attempt made) gets an
/// `event.retracted` event, fanned out to exactly those endpoints.
///
/// The cursor is locked first: a producer step in flight for this deployment finishes (and its
/// events are orphaned here) or starts after the rollback (from the moved cursor).
pub async fn follow_rollback(
    conn: &mut PgConnection,
    chain_id: i64,
    contract: Address,
    ancestor: i64,
) -> anyhow::Result<Followed> {
    sqlx::query!(
        "UPDATE webhook_cursors SET block_number = $3, log_index = 2147483647
         WHERE chain_id = $1 AND contract = $2 AND block_number > $3",
        chain_id,
        contract.as_slice(),
        ancestor,
    )
    .execute(&mut *conn)
    .await
    .map_err(|e| anyhow::Error::new(e).context("Failed to move the webhook cursor back"))?;
    // Not fanned out yet: withdrawn (marked fanned out, with no delivery). The key gets the id
    // appended, so the same event can be produced again should its block come back.
    let orphans: Vec<i64> = sqlx::query_scalar!(
        "UPDATE webhook_events SET orphaned_at = now(), fanned_out = true, event_key = event_key || ':orphaned:' || id
         WHERE chain_id = $1 AND contract = $2 AND block_number > $3 AND orphaned_at IS NULL
         RETURNING id",
        chain_id,
        contract.as_slice(),
        ancestor,
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| anyhow::Error::new(e).context("Failed to orphan webhook events"))?;
    if orphans.is_empty() {
        return Ok(Followed::default());
    }
    // A delivery with an attempt made (in flight, failed, or answered) may have reached its
    // endpoint: that endpoint is told to forget the event. An event written before the 2026-12-03
    // release has snake_case keys in its data; the retraction has PascalCase ones either way.
    let retracted = sqlx::query!(
        r#"INSERT INTO webhook_events (event_key, chain_id, type, data, retracts)
           SELECT 'event.retracted:' || ev.id, ev.chain_id, 'event.retracted',
                  jsonb_build_object('RetractedEventId', 'evt_' || ev.id, 'RetractedType', ev.type,
                                     'Contract', coalesce(ev.data -> 'Contract', ev.data -> 'contract'),
                                     'ContractAddress',
                                     coalesce(ev.data -> 'ContractAddress', ev.data -> 'contract_address'),
                                     'BlockNumber', ev.block_number,
                                     'BlockHash', coalesce(ev.data -> 'BlockHash', ev.data -> 'block_hash'),
                                     'TransactionHash',
                                     coalesce(ev.data -> 'TransactionHash', ev.data -> 'transaction_hash'),
                                     'LogIndex', coalesce(ev.data -> 'LogIndex', ev.data -> 'log_index')),
                  ev.id
           FROM webhook_events ev
           WHERE ev.id = ANY($1)
             AND EXISTS (SELECT 1 FROM webhook_deliveries d
                         WHERE d.event_id = ev.id AND (d.attempts > 0 OR d.state = 'succeeded'))
           ORDER BY ev.id
           ON CONFLICT (event_key) DO NOTHING"#,
        &orphans,
    )
    .execute(&mut *conn)
    .await
    .map_err(|e| anyhow::Error::new(e).context("Failed to write event retractions"))?
    .rows_affected();
    sqlx::query!(
        "UPDATE webhook_deliveries SET state = 'canceled', next_attempt_at = NULL, completed_at = now(),
             updated_at = now(), last_error = 'withdrawn: the block of the event left the chain'
         WHERE event_id = ANY($1) AND state = 'pending'",
        &orphans,
    )
    .execute(&mut *conn)
    .await
    .map_err(|e| anyhow::Error::new(e).context("Failed to withdraw deliveries"))?;
    Ok(Followed { orphaned: orphans.len() as u64, retracted })
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
