//! Postgres side of webhooks: endpoints, deliveries and their attempt log, as the API serves them;
//! the producer's outbox writes ([`outbox`]) and the fan-out and delivery loop's claims and
//! records ([`delivery`]). Timestamps leave the database as RFC 3339 UTC strings.

pub mod delivery;
pub mod outbox;

use anyhow::Context;
use serde::Serialize;
use sqlx::{PgPool, Row, postgres::PgRow};
use utoipa::ToSchema;

/// SQL rendering a `timestamptz` column as RFC 3339 UTC with milliseconds.
macro_rules! rfc3339 {
    ($col:literal) => {
        concat!("to_char(", $col, " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')")
    };
}

/// The event types as an OpenAPI schema (the API takes and returns them as plain strings, one of
/// `webhooks::EVENT_TYPES`).
#[derive(Debug, Clone, Copy, serde::Serialize, utoipa::ToSchema)]
pub enum WebhookEventType {
    #[serde(rename = "transaction.mined")]
    TransactionMined,
    #[serde(rename = "transaction.failed")]
    TransactionFailed,
    /// A mined transaction's block left the chain before it was final; it is back in the queue.
    #[serde(rename = "transaction.reorged")]
    TransactionReorged,
    /// A mined transaction is final (its block is at the chain's finality depth).
    #[serde(rename = "transaction.finalized")]
    TransactionFinalized,
    #[serde(rename = "stream.created")]
    StreamCreated,
    #[serde(rename = "stream.revoked")]
    StreamRevoked,
    #[serde(rename = "payment.completed")]
    PaymentCompleted,
    #[serde(rename = "deposit.completed")]
    DepositCompleted,
    #[serde(rename = "withdrawal.completed")]
    WithdrawalCompleted,
    #[serde(rename = "account.liquidated")]
    AccountLiquidated,
    #[serde(rename = "sponsor.balance_low")]
    SponsorBalanceLow,
    /// A contract event already sent came from a block an index rollback orphaned: forget it.
    /// Sent to every endpoint that may have received the event, subscribed or not.
    #[serde(rename = "event.retracted")]
    EventRetracted,
}

/// A registered endpoint (its secret is only ever shown by the create answer).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct Endpoint {
    /// Endpoint id, `{id}` in the paths.
    pub id: i64,
    #[schema(example = "https://example.com/streampay/webhooks")]
    pub url: String,
    /// Event types it receives.
    #[schema(value_type = Vec<WebhookEventType>, example = json!(["transaction.mined", "payment.completed"]))]
    pub events: Vec<String>,
    #[schema(example = "2026-11-21T07:30:00.000Z")]
    pub created_at: String,
}

/// One HTTP attempt of a delivery.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct Attempt {
    /// 1 for the first.
    pub attempt: i32,
    /// The endpoint's HTTP status; null when it did not answer (timeout, connection error).
    pub status_code: Option<i32>,
    /// Why the attempt failed, if it did.
    pub error: Option<String>,
    pub duration_ms: i64,
    pub attempted_at: String,
    /// When the next attempt was scheduled; null after a 2xx or the last attempt.
    pub next_attempt_at: Option<String>,
}

/// A delivery of one event to one endpoint, with every attempt.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct Delivery {
    pub id: i64,
    /// The event's id (`Webhook-Id` header, `Id` in the body): the same on every attempt and
    /// redelivery, so receivers can dedupe on it.
    #[schema(example = "evt_42")]
    pub event_id: String,
    #[schema(value_type = WebhookEventType)]
    pub event_type: String,
    /// `pending` (an attempt is due at `NextAttemptAt`), `succeeded` (2xx), `failed` (attempts
    /// exhausted), `canceled` (endpoint deleted).
    #[schema(example = "succeeded")]
    pub state: String,
    pub attempts: i32,
    pub next_attempt_at: Option<String>,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    /// The delivery this one repeats (redelivery on demand), if any.
    pub redelivery_of: Option<i64>,
    pub created_at: String,
    pub completed_at: Option<String>,
    /// Oldest first.
    pub attempt_log: Vec<Attempt>,
}

fn endpoint(r: &PgRow) -> Endpoint {
    Endpoint { id: r.get("id"), url: r.get("url"), events: r.get("events"), created_at: r.get("created_at") }
}

const ENDPOINT_COLUMNS: &str = concat!("id, url, events, ", rfc3339!("created_at"), " AS created_at");

/// Registers an endpoint for `api_key_id`, unless its family already has `max` live endpoints
/// (`None` then). The count and the insert are one statement under a lock on the family's
/// first key, so concurrent requests cannot pass the limit together.
pub async fn create_endpoint(
    pool: &PgPool,
    api_key_id: i64,
    url: &str,
    events: &[String],
    secret: &str,
    max: u32,
) -> anyhow::Result<Option<Endpoint>> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT 1 FROM api_keys WHERE id = (SELECT family_id FROM api_keys WHERE id = $1) FOR UPDATE")
        .bind(api_key_id)
        .execute(&mut *tx)
        .await
        .context("Failed to lock the API key's family")?;
    let row = sqlx::query(&format!(
        "INSERT INTO webhook_endpoints (api_key_id, url, events, secret)
         SELECT $1, $2, $3, $4
         WHERE (SELECT count(*) FROM webhook_endpoints
                WHERE api_key_id IN (SELECT api_key_family($1)) AND deleted_at IS NULL) < $5
         RETURNING {ENDPOINT_COLUMNS}"
    ))
    .bind(api_key_id)
    .bind(url)
    .bind(events)
    .bind(secret)
    .bind(i64::from(max))
    .fetch_optional(&mut *tx)
    .await
    .context("Failed to store the webhook endpoint")?;
    tx.commit().await.context("Failed to store the webhook endpoint")?;
    Ok(row.as_ref().map(endpoint))
}

/// The live endpoints of `api_key_id`'s family (the key and the keys it was rotated from or
/// into), oldest first.
pub async fn list_endpoints(pool: &PgPool, api_key_id: i64) -> anyhow::Result<Vec<Endpoint>> {
    let rows = sqlx::query(&format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints
         WHERE api_key_id IN (SELECT api_key_family($1)) AND deleted_at IS NULL ORDER BY id"
    ))
    .bind(api_key_id)
    .fetch_all(pool)
    .await
    .context("Failed to list webhook endpoints")?;
    Ok(rows.iter().map(endpoint).collect())
}

/// The live endpoint `id` if `api_key_id`'s family owns it.
pub async fn get_endpoint(pool: &PgPool, api_key_id: i64, id: i64) -> anyhow::Result<Option<Endpoint>> {
    let row = sqlx::query(&format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints
         WHERE id = $1 AND api_key_id IN (SELECT api_key_family($2)) AND deleted_at IS NULL"
    ))
    .bind(id)
    .bind(api_key_id)
    .fetch_optional(pool)
    .await
    .context("Failed to read the webhook endpoint")?;
    Ok(row.as_ref().map(endpoint))
}

/// Deletes (soft) the endpoint and cancels its pending deliveries; `None` if there is no such
/// live endpoint of this key.
pub async fn delete_endpoint(pool: &PgPool, api_key_id: i64, id: i64) -> anyhow::Result<Option<Endpoint>> {
    let mut tx = pool.begin().await?;
    let row = sqlx::query(&format!(
        "UPDATE webhook_endpoints SET deleted_at = now()
         WHERE id = $1 AND api_key_id IN (SELECT api_key_family($2)) AND deleted_at IS NULL
         RETURNING {ENDPOINT_COLUMNS}"
    ))
    .bind(id)
    .bind(api_key_id)
    .fetch_optional(&mut *tx)
    .await
    .context("Failed to delete the webhook endpoint")?;
    if row.is_some() {
        sqlx::query(
            "UPDATE webhook_deliveries SET state = 'canceled', next_attempt_at = NULL, updated_at = now(),
                 completed_at = now()
             WHERE endpoint_id = $1 AND state = 'pending'",
        )
        .bind(id)
        .execute(&mut *tx)
        .await
        .context("Failed to cancel the endpoint's deliveries")?;
    }
    tx.commit().await?;
    Ok(row.as_ref().map(endpoint))
}

const DELIVERY_COLUMNS: &str = concat!(
    "d.id, d.event_id, ev.type AS event_type, d.state, d.attempts, ",
    rfc3339!("d.next_attempt_at"),
    " AS next_attempt_at, d.last_status_code, d.last_error, d.redelivery_of, ",
    rfc3339!("d.created_at"),
    " AS created_at, ",
    rfc3339!("d.completed_at"),
    " AS completed_at"
);

fn delivery(r: &PgRow) -> Delivery {
    Delivery {
        id: r.get("id"),
        event_id: format!("evt_{}", r.get::<i64, _>("event_id")),
        event_type: r.get("event_type"),
        state: r.get("state"),
        attempts: r.get("attempts"),
        next_attempt_at: r.get("next_attempt_at"),
        last_status_code: r.get("last_status_code"),
        last_error: r.get("last_error"),
        redelivery_of: r.get("redelivery_of"),
        created_at: r.get("created_at"),
        completed_at: r.get("completed_at"),
        attempt_log: Vec::new(),
    }
}

async fn with_attempts(pool: &PgPool, mut deliveries: Vec<Delivery>) -> anyhow::Result<Vec<Delivery>> {
    let ids: Vec<i64> = deliveries.iter().map(|d| d.id).collect();
    let rows = sqlx::query(concat!(
        "SELECT delivery_id, attempt, status_code, error, duration_ms, ",
        rfc3339!("attempted_at"),
        " AS attempted_at, ",
        rfc3339!("next_attempt_at"),
        " AS next_attempt_at FROM webhook_attempts WHERE delivery_id = ANY($1) ORDER BY delivery_id, attempt, id"
    ))
    .bind(&ids)
    .fetch_all(pool)
    .await
    .context("Failed to read delivery attempts")?;
    for r in rows {
        let id: i64 = r.get("delivery_id");
        if let Some(d) = deliveries.iter_mut().find(|d| d.id == id) {
            d.attempt_log.push(Attempt {
                attempt: r.get("attempt"),
                status_code: r.get("status_code"),
                error: r.get("error"),
                duration_ms: r.get("duration_ms"),
                attempted_at: r.get("attempted_at"),
                next_attempt_at: r.get("next_attempt_at"),
            });
        }
    }
    Ok(deliveries)
}

/// The deliveries of `endpoint_id`, newest first, `limit` of them with ids below `before`.
pub async fn list_deliveries(
    pool: &PgPool,
    endpoint_id: i64,
    before: Option<i64>,
    limit: i64,
) -> anyhow::Result<Vec<Delivery>> {
    let rows = sqlx::query(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d JOIN webhook_events ev ON ev.id = d.event_id
         WHERE d.endpoint_id = $1 AND ($2::BIGINT IS NULL OR d.id < $2) ORDER BY d.id DESC LIMIT $3"
    ))
    .bind(endpoint_id)
    .bind(before)
    .bind(limit)
    .fetch_all(pool)
    .await
    .context("Failed to list deliveries")?;
    with_attempts(pool, rows.iter().map(delivery).collect()).await
}

/// Queues a new delivery of the event of `delivery_id` (a delivery of `endpoint_id`), due now.
pub async fn redeliver(pool: &PgPool, endpoint_id: i64, delivery_id: i64) -> anyhow::Result<Option<Delivery>> {
    let row = sqlx::query(&format!(
        "WITH new AS (
             INSERT INTO webhook_deliveries (endpoint_id, event_id, redelivery_of, state, next_attempt_at)
             SELECT endpoint_id, event_id, id, 'pending', now() FROM webhook_deliveries
             WHERE id = $1 AND endpoint_id = $2
             RETURNING *)
         SELECT {DELIVERY_COLUMNS} FROM new d JOIN webhook_events ev ON ev.id = d.event_id"
    ))
    .bind(delivery_id)
    .bind(endpoint_id)
    .fetch_optional(pool)
    .await
    .context("Failed to queue the redelivery")?;
    Ok(row.as_ref().map(delivery))
}

/// Redeliveries requested in the last hour by `api_key_id`'s family, over all its endpoints.
pub async fn redeliveries_last_hour(pool: &PgPool, api_key_id: i64) -> anyhow::Result<u64> {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM webhook_deliveries d JOIN webhook_endpoints ep ON ep.id = d.endpoint_id
         WHERE d.redelivery_of IS NOT NULL AND d.created_at > now() - interval '1 hour'
           AND ep.api_key_id IN (SELECT api_key_family($1))",
    )
    .bind(api_key_id)
    .fetch_one(pool)
    .await
    .context("Failed to count redeliveries")?;
    Ok(n.max(0) as u64)
}
