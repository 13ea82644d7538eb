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

/// Up to 100 events of `chain_id` not yet fanned out, oldest first, locked (skipping those
/// another replica holds) until the end of the caller's transaction; a `transaction.*` event
/// comes with its `relay_transactions` row as it is now (`None` if the row is gone), read in the
/// same statement.
pub async fn lock_pending_events(
    conn: &mut PgConnection,
    chain_id: i64,
) -> anyhow::Result<Vec<(PendingEvent, Option<RelayedTransaction>)>> {
    let rows = sqlx::query!(
        // The data comes as JSONB decoded by serde_json (the macros have no JSON type mapping of
        // their own, hence the override). Only the events are locked: the transaction row is
        // read as it is.
        r#"SELECT e.id, e.type AS event_type, e.api_key_id, e.sponsor, e.transaction_id, e.data AS "data: Value",
                  e.retracts, extract(epoch FROM e.created_at)::BIGINT AS "created!",
                  t.id AS "t_id?", t.chain_id AS "t_chain_id?", t.contract AS "t_contract?", t.signer AS "t_signer?",
                  t.meta_nonce AS "t_meta_nonce?", t.sponsor AS "t_sponsor?", t.sponsor_nonce AS "t_sponsor_nonce?",
                  t.tx_hash AS "t_tx_hash?", t.status AS "t_status?", t.gas_used AS "t_gas_used?",
                  t.block_number AS "t_block_number?", t.failure AS "t_failure?", t.revert_reason AS "t_revert_reason?"
           FROM webhook_events e LEFT JOIN relay_transactions t ON t.id = e.transaction_id
           WHERE NOT e.fanned_out AND e.chain_id = $1
           ORDER BY e.id LIMIT 100 FOR UPDATE OF e SKIP LOCKED"#,
        chain_id,
    )
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|r| {
            let event = PendingEvent {
                id: r.id,
                event_type: r.event_type,
                api_key_id: r.api_key_id,
                sponsor: r.sponsor,
                transaction_id: r.transaction_id,
                data: r.data,
                retracts: r.retracts,
                created: r.created,
            };
            let transaction = match r.t_id {
                Some(id) => Some(RelayedTransaction {
                    id,
                    chain_id: u64_of(joined("chain_id", r.t_chain_id)?)?,
                    contract: address(&joined("contract", r.t_contract)?)?,
                    signer: address(&joined("signer", r.t_signer)?)?,
                    meta_nonce: u64_of(joined("meta_nonce", r.t_meta_nonce)?)?,
                    sponsor: address(&joined("sponsor", r.t_sponsor)?)?,
                    sponsor_nonce: u64_of(joined("sponsor_nonce", r.t_sponsor_nonce)?)?,
                    tx_hash: bytes32(&joined("tx_hash", r.t_tx_hash)?)?,
                    status: joined("status", r.t_status)?,
                    gas_used: opt_u64(r.t_gas_used)?,
                    block_number: opt_u64(r.t_block_number)?,
                    failure: r.t_failure,
                    revert_reason: r.t_revert_reason,
                }),
                None => None,
            };
            Ok((event, transaction))
        })
        .collect()
}

/// A NOT NULL column of a `relay_transactions` row read through a LEFT JOIN: there whenever the
/// row is.
fn joined<T>(column: &str, v: Option<T>) -> anyhow::Result<T> {
    anyhow::Context::with_context(v, || format!("the joined transaction row has no {column}"))
}

/// Stores each event's final data and body and marks it fanned out, in one statement: `ids`,
/// `data` and `payloads` are parallel.
pub async fn mark_fanned_out(
    conn: &mut PgConnection,
    ids: &[i64],
    data: &[Value],
    payloads: &[String],
) -> anyhow::Result<()> {
    let data: Vec<String> = data.iter().map(Value::to_string).collect();
    sqlx::query!(
        // The data goes as JSON text: the crate's sqlx has no JSON type mapping for the macros.
        "UPDATE webhook_events e SET data = k.data::jsonb, payload = k.payload, fanned_out = true
         FROM UNNEST($1::bigint[], $2::text[], $3::text[]) AS k(id, data, payload)
         WHERE e.id = k.id",
        ids,
        &data,
        payloads,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Creates, in one statement, the deliveries of the events `ids`, each due now, in the order of
/// the events (a delivery's id orders an endpoint's deliveries due at the same moment):
/// - for an event: one for every live endpoint subscribed to its type that existed when the
///   event was written, whose key family has a live key, and (for `transaction.*`) that belongs
///   to the relaying key's family, or (for a sponsor's event) whose key may use the sponsor.
///   `transaction.reorged` also goes to endpoints subscribed to `transaction.mined` (what they
///   were told is no longer true);
/// - for an `event.retracted`: one for every live endpoint that may have received the event it
///   retracts (a delivery of it with an attempt made), subscribed or not.
pub async fn create_deliveries(conn: &mut PgConnection, ids: &[i64]) -> anyhow::Result<()> {
    sqlx::query!(
        "INSERT INTO webhook_deliveries (endpoint_id, event_id, state, next_attempt_at)
         SELECT endpoint_id, event_id, 'pending', now() FROM (
             SELECT ep.id AS endpoint_id, ev.id AS event_id
             FROM webhook_events ev JOIN webhook_endpoints ep
               ON ep.deleted_at IS NULL
              AND (ev.type = ANY(ep.events) OR (ev.type = 'transaction.reorged' AND 'transaction.mined' = ANY(ep.events)))
              AND ep.created_at <= ev.created_at
             WHERE ev.id = ANY($1) AND ev.retracts IS NULL
               AND api_key_family_live(ep.api_key_id)
               AND (ev.transaction_id IS NULL OR ep.api_key_id IN (SELECT api_key_family(ev.api_key_id)))
               AND (ev.sponsor IS NULL OR EXISTS (
                   SELECT 1 FROM api_key_sponsors s WHERE s.api_key_id = ep.api_key_id AND s.sponsor = ev.sponsor))
             UNION
             SELECT ep.id, ev.id
             FROM webhook_events ev
             JOIN webhook_deliveries d ON d.event_id = ev.retracts
             JOIN webhook_endpoints ep ON ep.id = d.endpoint_id
             WHERE ev.id = ANY($1) AND (d.attempts > 0 OR d.state = 'succeeded')
               AND ep.deleted_at IS NULL AND api_key_family_live(ep.api_key_id)
         ) due
         ORDER BY event_id, endpoint_id
         ON CONFLICT DO NOTHING",
        ids,
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
