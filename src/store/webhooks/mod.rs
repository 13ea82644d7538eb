//! Postgres side of webhooks: endpoints, deliveries and their attempt log, as the API serves them;
//! the producer's outbox writes ([`outbox`]) and the fan-out and delivery loop's claims and
//! records ([`delivery`]). Timestamps leave the database as RFC 3339 UTC strings with
//! milliseconds (`rfc3339_utc(…, 3)`, migration 0033). Every statement is checked at compile time.

pub mod delivery;
pub mod outbox;

use anyhow::Context;
use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;

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
    sqlx::query_scalar!(
        "SELECT id FROM api_keys WHERE id = (SELECT family_id FROM api_keys WHERE id = $1) FOR UPDATE",
        api_key_id,
    )
    .fetch_optional(&mut *tx)
    .await
    .context("Failed to lock the API key's family")?;
    let endpoint = sqlx::query_as!(
        Endpoint,
        r#"INSERT INTO webhook_endpoints (api_key_id, url, events, secret)
           SELECT $1, $2, $3, $4
           WHERE (SELECT count(*) FROM webhook_endpoints
                  WHERE api_key_id IN (SELECT api_key_family($1)) AND deleted_at IS NULL) < $5
           RETURNING id, url, events, rfc3339_utc(created_at, 3) AS "created_at!""#,
        api_key_id,
        url,
        events,
        secret,
        i64::from(max),
    )
    .fetch_optional(&mut *tx)
    .await
    .context("Failed to store the webhook endpoint")?;
    tx.commit().await.context("Failed to store the webhook endpoint")?;
    Ok(endpoint)
}

/// The live endpoints of `api_key_id`'s family (the key and the keys it was rotated from or
/// into), oldest first.
pub async fn list_endpoints(pool: &PgPool, api_key_id: i64) -> anyhow::Result<Vec<Endpoint>> {
    sqlx::query_as!(
        Endpoint,
        r#"SELECT id, url, events, rfc3339_utc(created_at, 3) AS "created_at!" FROM webhook_endpoints
           WHERE api_key_id IN (SELECT api_key_family($1)) AND deleted_at IS NULL ORDER BY id"#,
        api_key_id,
    )
    .fetch_all(pool)
    .await
    .context("Failed to list webhook endpoints")
}

/// The live endpoint `id` if `api_key_id`'s family owns it.
pub async fn get_endpoint(pool: &PgPool, api_key_id: i64, id: i64) -> anyhow::Result<Option<Endpoint>> {
    sqlx::query_as!(
        Endpoint,
        r#"SELECT id, url, events, rfc3339_utc(created_at, 3) AS "created_at!" FROM webhook_endpoints
           WHERE id = $1 AND api_key_id IN (SELECT api_key_family($2)) AND deleted_at IS NULL"#,
        id,
        api_key_id,
    )
    .fetch_optional(pool)
    .await
    .context("Failed to read the webhook endpoint")
}

/// Deletes (soft) the endpoint and cancels its pending deliveries; `None` if there is no such
/// live endpoint of this key.
pub async fn delete_endpoint(pool: &PgPool, api_key_id: i64, id: i64) -> anyhow::Result<Option<Endpoint>> {
    let mut tx = pool.begin().await?;
    let endpoint = sqlx::query_as!(
        Endpoint,
        r#"UPDATE webhook_endpoints SET deleted_at = now()
           WHERE id = $1 AND api_key_id IN (SELECT api_key_family($2)) AND deleted_at IS NULL
           RETURNING id, url, events, rfc3339_utc(created_at, 3) AS "created_at!""#,
        id,
        api_key_id,
    )
    .fetch_optional(&mut *tx)
    .await
    .context("Failed to delete the webhook endpoint")?;
    if endpoint.is_some() {
        sqlx::query!(
            "UPDATE webhook_deliveries SET state = 'canceled', next_attempt_at = NULL, updated_at = now(),
                 completed_at = now()
             WHERE endpoint_id = $1 AND state = 'pending'",
            id,
        )
        .execute(&mut *tx)
        .await
        .context("Failed to cancel the endpoint's deliveries")?;
    }
    tx.commit().await?;
    Ok(endpoint)
}

/// A delivery as [`list_deliveries`] and [`redeliver`] read it, before its attempt log.
struct DeliveryRow {
    id: i64,
    event_id: i64,
    event_type: String,
    state: String,
    attempts: i32,
    next_attempt_at: Option<String>,
    last_status_code: Option<i32>,
    last_error: Option<String>,
    redelivery_of: Option<i64>,
    created_at: String,
    completed_at: Option<String>,
}

fn delivery(r: DeliveryRow) -> Delivery {
    Delivery {
        id: r.id,
        event_id: format!("evt_{}", r.event_id),
        event_type: r.event_type,
        state: r.state,
        attempts: r.attempts,
        next_attempt_at: r.next_attempt_at,
        last_status_code: r.last_status_code,
        last_error: r.last_error,
        redelivery_of: r.redelivery_of,
        created_at: r.created_at,
        completed_at: r.completed_at,
        attempt_log: Vec::new(),
    }
}

async fn with_attempts(pool: &PgPool, mut deliveries: Vec<Delivery>) -> anyhow::Result<Vec<Delivery>> {
    let ids: Vec<i64> = deliveries.iter().map(|d| d.id).collect();
    let rows = sqlx::query!(
        r#"SELECT delivery_id, attempt, status_code, error, duration_ms,
                  rfc3339_utc(attempted_at, 3) AS "attempted_at!", rfc3339_utc(next_attempt_at, 3) AS "next_attempt_at?"
           FROM webhook_attempts WHERE delivery_id = ANY($1) ORDER BY delivery_id, attempt, id"#,
        &ids,
    )
    .fetch_all(pool)
    .await
    .context("Failed to read delivery attempts")?;
    for r in rows {
        if let Some(d) = deliveries.iter_mut().find(|d| d.id == r.delivery_id) {
            d.attempt_log.push(Attempt {
                attempt: r.attempt,
                status_code: r.status_code,
                error: r.error,
                duration_ms: r.duration_ms,
                attempted_at: r.attempted_at,
                next_attempt_at: r.next_attempt_at,
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
    let rows = sqlx::query_as!(
        DeliveryRow,
        r#"SELECT d.id, d.event_id, ev.type AS event_type, d.state, d.attempts,
                  rfc3339_utc(d.next_attempt_at, 3) AS "next_attempt_at?", d.last_status_code, d.last_error,
                  d.redelivery_of, rfc3339_utc(d.created_at, 3) AS "created_at!",
                  rfc3339_utc(d.completed_at, 3) AS "completed_at?"
           FROM webhook_deliveries d JOIN webhook_events ev ON ev.id = d.event_id
           WHERE d.endpoint_id = $1 AND ($2::BIGINT IS NULL OR d.id < $2) ORDER BY d.id DESC LIMIT $3"#,
        endpoint_id,
        before,
        limit,
    )
    .fetch_all(pool)
    .await
    .context("Failed to list deliveries")?;
    with_attempts(pool, rows.into_iter().map(delivery).collect()).await
}

/// Queues a new delivery of the event of `delivery_id` (a delivery of `endpoint_id`), due now.
pub async fn redeliver(pool: &PgPool, endpoint_id: i64, delivery_id: i64) -> anyhow::Result<Option<Delivery>> {
    let row = sqlx::query_as!(
        DeliveryRow,
        r#"WITH new AS (
               INSERT INTO webhook_deliveries (endpoint_id, event_id, redelivery_of, state, next_attempt_at)
               SELECT endpoint_id, event_id, id, 'pending', now() FROM webhook_deliveries
               WHERE id = $1 AND endpoint_id = $2
               RETURNING *)
           SELECT d.id AS "id!", d.event_id AS "event_id!", ev.type AS event_type, d.state AS "state!",
                  d.attempts AS "attempts!", rfc3339_utc(d.next_attempt_at, 3) AS "next_attempt_at?",
                  d.last_status_code AS "last_status_code?", d.last_error AS "last_error?",
                  d.redelivery_of AS "redelivery_of?", rfc3339_utc(d.created_at, 3) AS "created_at!",
                  rfc3339_utc(d.completed_at, 3) AS "completed_at?"
           FROM new d JOIN webhook_events ev ON ev.id = d.event_id"#,
        delivery_id,
        endpoint_id,
    )
    .fetch_optional(pool)
    .await
    .context("Failed to queue the redelivery")?;
    Ok(row.map(delivery))
}

/// Redeliveries requested in the last hour by `api_key_id`'s family, over all its endpoints.
pub async fn redeliveries_last_hour(pool: &PgPool, api_key_id: i64) -> anyhow::Result<u64> {
    let n = sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM webhook_deliveries d JOIN webhook_endpoints ep ON ep.id = d.endpoint_id
           WHERE d.redelivery_of IS NOT NULL AND d.created_at > now() - interval '1 hour'
             AND ep.api_key_id IN (SELECT api_key_family($1))"#,
        api_key_id,
    )
    .fetch_one(pool)
    .await
    .context("Failed to count redeliveries")?;
    Ok(n.max(0) as u64)
}
