//! The fan-out and delivery loop's statements: the outbox events not yet fanned out, the
//! deliveries they create, the claim of due deliveries (`FOR UPDATE SKIP LOCKED`, with a lease)
//! and the record of each attempt. Every statement is checked at compile time.

use alloy::primitives::{Address, B256};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};

use crate::store::{
    decode::{opt_u64, u64_of},
    index::{address, bytes32},
};

/// A `relay_transactions` row as a `transaction.*` event shows it.
#[derive(Debug, Clone)]
pub struct RelayedTransaction {
    pub id: i64,
    pub chain_id: u64,
    pub contract: Address,
    pub signer: Address,
    pub meta_nonce: u64,
    pub sponsor: Address,
    pub sponsor_nonce: u64,
    pub tx_hash: B256,
    pub status: String,
    pub gas_used: Option<u64>,
    pub block_number: Option<u64>,
    pub failure: Option<String>,
    pub revert_reason: Option<String>,
}

/// An outbox event not yet fanned out.
#[derive(Debug, Clone)]
pub struct PendingEvent {
    pub id: i64,
    pub event_type: String,
    pub api_key_id: Option<i64>,
    pub sponsor: Option<Vec<u8>>,
    pub transaction_id: Option<i64>,
    pub data: Option<Value>,
    /// `event.retracted`: the event it retracts.
    pub retracts: Option<i64>,
    /// Unix seconds.
    pub created: i64,
}

/// A claimed delivery.
#[derive(Debug, Clone)]
pub struct Due {
    pub id: i64,
    pub endpoint_id: i64,
    /// The attempt this claim makes (1 for the first).
    pub attempt: i32,
    pub event_id: i64,
    pub event_type: String,
    pub url: String,
    pub secret: String,
    /// The endpoint was deleted or its key family has no live key: cancel, never send.
    pub deleted: bool,
    pub payload: String,
}

/// The transaction row `id`, `None` if it is gone.
pub async fn relayed_transaction(pool: &PgPool, id: i64) -> anyhow::Result<Option<RelayedTransaction>> {
    let r = sqlx::query!(
        "SELECT id, chain_id, contract, signer, meta_nonce, sponsor, sponsor_nonce, tx_hash, status, gas_used,
                block_number, failure, revert_reason
         FROM relay_transactions WHERE id = $1",
        id,
    )
    .fetch_optional(pool)
    .await?;
    r.map(|r| {
        Ok(RelayedTransaction {
            id: r.id,
            chain_id: u64_of(r.chain_id)?,
            contract: address(&r.contract)?,
            signer: address(&r.signer)?,
            meta_nonce: u64_of(r.meta_nonce)?,
            sponsor: address(&r.sponsor)?,
            sponsor_nonce: u64_of(r.sponsor_nonce)?,
            tx_hash: bytes32(&r.tx_hash)?,
            status: r.status,
            gas_used: opt_u64(r.gas_used)?,
            block_number: opt_u64(r.block_number)?,
            failure: r.failure,
            revert_reason: r.revert_reason,
        })
    })
    .transpose()
}

/// Up to 100 events of `chain_id` not yet fanned out, oldest first, locked (skipping those
/// another replica holds) until the end of the caller's transaction.
pub async fn lock_pending_events(conn: &mut PgConnection, chain_id: i64) -> anyhow::Result<Vec<PendingEvent>> {
    let rows = sqlx::query!(
        // The data comes as JSONB decoded by serde_json (the macros have no JSON type mapping of
        // their own, hence the override).
        r#"SELECT id, type AS event_type, api_key_id, sponsor, transaction_id, data AS "data: Value", retracts,
                  extract(epoch FROM created_at)::BIGINT AS "created!"
           FROM webhook_events WHERE NOT fanned_out AND chain_id = $1
           ORDER BY id LIMIT 100 FOR UPDATE SKIP LOCKED"#,
        chain_id,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|e| PendingEvent {
            id: e.id,
            event_type: e.event_type,
            api_key_id: e.api_key_id,
            sponsor: e.sponsor,
            transaction_id: e.transaction_id,
            data: e.data,
            retracts: e.retracts,
            created: e.created,
        })
        .collect())
}

/// Stores the event's final data and body and marks it fanned out.
pub async fn mark_fanned_out(conn: &mut PgConnection, id: i64, data: &Value, payload: &str) -> anyhow::Result<()> {
    sqlx::query!(
        // The data goes as JSON text: the crate's sqlx has no JSON type mapping for the macros.
        "UPDATE webhook_events SET data = $2::text::jsonb, payload = $3, fanned_out = true WHERE id = $1",
        id,
        data.to_string(),
        payload,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Creates a delivery, due now, for every live endpoint subscribed to the event's type that
/// existed when the event was written, whose key family has a live key, and (for
/// `transaction.*`) that belongs to the relaying key's family, or (for a sponsor's event) whose
/// key may use the sponsor. `transaction.reorged` also goes to endpoints subscribed to
/// `transaction.mined` (what they were told is no longer true). An `event.retracted` goes to
/// the live endpoints that may have received the event it retracts (a delivery of it with an
/// attempt made), subscribed or not.
pub async fn create_deliveries(conn: &mut PgConnection, event: &PendingEvent) -> anyhow::Result<()> {
    if let Some(original) = event.retracts {
        sqlx::query!(
            "INSERT INTO webhook_deliveries (endpoint_id, event_id, state, next_attempt_at)
                 SELECT DISTINCT ep.id, $1::BIGINT, 'pending', now()
                 FROM webhook_deliveries d JOIN webhook_endpoints ep ON ep.id = d.endpoint_id
                 WHERE d.event_id = $2 AND (d.attempts > 0 OR d.state = 'succeeded')
                   AND ep.deleted_at IS NULL AND api_key_family_live(ep.api_key_id)
                 ON CONFLICT DO NOTHING",
            event.id,
            original,
        )
        .execute(conn)
        .await?;
        return Ok(());
    }
    sqlx::query!(
        "INSERT INTO webhook_deliveries (endpoint_id, event_id, state, next_attempt_at)
             SELECT ep.id, $1, 'pending', now() FROM webhook_endpoints ep
             WHERE ep.deleted_at IS NULL
               AND ($2 = ANY(ep.events) OR ($2 = 'transaction.reorged' AND 'transaction.mined' = ANY(ep.events)))
               AND ep.created_at <= (SELECT created_at FROM webhook_events WHERE id = $1)
               AND api_key_family_live(ep.api_key_id)
               AND ($3::BIGINT IS NULL OR ep.api_key_id IN (SELECT api_key_family($4)))
               AND ($5::BYTEA IS NULL OR EXISTS (
                   SELECT 1 FROM api_key_sponsors s WHERE s.api_key_id = ep.api_key_id AND s.sponsor = $5))
             ON CONFLICT DO NOTHING",
        event.id,
        event.event_type,
        event.transaction_id,
        event.api_key_id,
        event.sponsor.as_deref(),
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Claims up to `limit` due deliveries, the oldest due one of each endpoint not in `skip`,
/// moving `next_attempt_at` ahead by `lease_ms` and counting the attempt.
pub async fn claim_due(pool: &PgPool, lease_ms: i64, limit: i64, skip: &[i64]) -> anyhow::Result<Vec<Due>> {
    let rows = sqlx::query!(
        r#"WITH candidates AS (
               SELECT id, endpoint_id, next_attempt_at FROM webhook_deliveries
               WHERE state = 'pending' AND next_attempt_at <= now() AND NOT (endpoint_id = ANY($3))
               ORDER BY next_attempt_at, id LIMIT $1::BIGINT * 8 FOR UPDATE SKIP LOCKED),
           picked AS (
               SELECT id FROM (SELECT DISTINCT ON (endpoint_id) id, next_attempt_at FROM candidates
                               ORDER BY endpoint_id, next_attempt_at, id) first_of_each
               ORDER BY next_attempt_at, id LIMIT $1)
           UPDATE webhook_deliveries d
           SET attempts = d.attempts + 1, next_attempt_at = now() + $2::BIGINT::FLOAT8 * INTERVAL '1 millisecond',
               updated_at = now()
           FROM picked, webhook_endpoints ep, webhook_events ev
           WHERE d.id = picked.id AND ep.id = d.endpoint_id AND ev.id = d.event_id
           RETURNING d.id, d.endpoint_id, d.attempts, d.event_id, ev.type AS event_type, ep.url, ep.secret,
                     ep.deleted_at IS NOT NULL OR NOT api_key_family_live(ep.api_key_id) AS "deleted!", ev.payload"#,
        limit,
        lease_ms,
        skip,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Due {
            id: r.id,
            endpoint_id: r.endpoint_id,
            attempt: r.attempts,
            event_id: r.event_id,
            event_type: r.event_type,
            url: r.url,
            secret: r.secret,
            deleted: r.deleted,
            payload: r.payload.unwrap_or_default(),
        })
        .collect())
}

/// Cancels a claimed delivery that must not be sent, giving back the attempt the claim counted.
pub async fn cancel_claimed(pool: &PgPool, id: i64) -> anyhow::Result<()> {
    sqlx::query!(
        "UPDATE webhook_deliveries SET state = 'canceled', next_attempt_at = NULL, completed_at = now(),
                 updated_at = now(), attempts = attempts - 1
             WHERE id = $1 AND state = 'pending'",
        id,
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// What one attempt came to, as recorded.
#[derive(Debug, Clone)]
pub struct AttemptRecord<'a> {
    /// `succeeded`, `pending` (another attempt after `next_ms`) or `failed`.
    pub state: &'a str,
    pub next_ms: Option<i64>,
    pub status_code: Option<i32>,
    pub error: Option<&'a str>,
    pub duration_ms: i64,
}

/// Records attempt `attempt` of delivery `id` and its log row together, only if that claim is
/// still current (a stale one, whose lease ran out and whose delivery was claimed again, writes
/// nothing); answers whether it recorded.
pub async fn record_attempt(pool: &PgPool, id: i64, attempt: i32, r: AttemptRecord<'_>) -> anyhow::Result<bool> {
    let recorded = sqlx::query_scalar!(
        "WITH d AS (
             UPDATE webhook_deliveries
             SET state = $3, next_attempt_at = clock_timestamp() + $4::BIGINT::FLOAT8 * INTERVAL '1 millisecond',
                 last_status_code = $5, last_error = $6, updated_at = now(),
                 completed_at = CASE WHEN $3 = 'pending' THEN NULL ELSE clock_timestamp() END
             WHERE id = $1 AND attempts = $2 AND state = 'pending'
             RETURNING id, next_attempt_at)
         INSERT INTO webhook_attempts (delivery_id, attempt, status_code, error, duration_ms, attempted_at,
                                       next_attempt_at)
         SELECT id, $2, $5, $6, $7::BIGINT, clock_timestamp() - $7::BIGINT::FLOAT8 * INTERVAL '1 millisecond',
                next_attempt_at FROM d
         RETURNING id",
        id,
        attempt,
        r.state,
        r.next_ms,
        r.status_code,
        r.error,
        r.duration_ms,
    )
    .fetch_optional(pool)
    .await?;
    Ok(recorded.is_some())
}
