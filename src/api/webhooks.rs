//! Webhook endpoints of an API key: register, list, delete; the delivery log; redelivery.
//! Delivery itself is [`crate::webhooks`]; the guide for receivers is `docs/webhooks.md`.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::ErrorCode;
use super::{
    AppError, AppState,
    error::ErrorBody,
    extract::{ApiJson, ApiKey, ApiQuery},
};
use crate::{
    store::webhooks::{self as store, Delivery, Endpoint},
    webhooks::EVENT_TYPES,
};

/// Longest URL accepted.
const MAX_URL_LEN: usize = 2048;

/// `POST /api/v1/webhooks` request. Every delivery is a POST of a `WebhookEvent` signed with
/// `StreamPay-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`; `Webhook-Id` (= `Id`)
/// is the same on every retry and redelivery (docs/webhooks.md). The snake_case names of the
/// first version (`url`, `events`) are still accepted.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct CreateWebhook {
    /// `http` or `https` URL receiving the POSTs.
    #[serde(alias = "url")]
    #[schema(value_type = String, required = true, min_length = 1, max_length = 2048, example = "https://example.com/streampay/webhooks")]
    pub url: Option<String>,
    /// Event types to receive, at least one.
    #[serde(alias = "events")]
    #[schema(value_type = Vec<crate::webhooks::WebhookEventType>, required = true, min_items = 1, example = json!(["transaction.mined", "payment.completed"]))]
    pub events: Option<Vec<String>>,
}

/// `POST /api/v1/webhooks` answer: the endpoint and its signing secret, shown only here.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct CreatedWebhook {
    #[serde(flatten)]
    pub endpoint: Endpoint,
    /// Verifies `StreamPay-Signature`; store it now, it is never shown again: an idempotent
    /// replay of this answer (same `Idempotency-Key`) has `null` here, as the secret is never
    /// stored with the replay.
    #[schema(example = "whsec_5f0c…", value_type = Option<String>)]
    pub secret: String,
}

/// The body of every delivery (what your endpoint receives), signed as described in the
/// `WebhookEventType` schema. Built by `webhooks::deliver::fan_out`; events sent before the
/// 2026-12-03 release keep their snake_case body on redelivery (docs/webhooks.md).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct WebhookEvent {
    /// Stable event id, also the `Webhook-Id` header: the same on every retry and redelivery.
    #[schema(example = "evt_42")]
    pub id: String,
    #[serde(rename = "Type")]
    pub event_type: crate::webhooks::WebhookEventType,
    /// Unix seconds at which the event was recorded.
    pub created: i64,
    #[schema(example = "2026-11-21")]
    pub api_version: String,
    pub chain_id: u64,
    /// The event's fields, PascalCase (docs/webhooks.md lists them per type); amounts are exact
    /// decimal strings.
    #[schema(value_type = Object, example = json!({"Contract": "USDC", "From": "0x…", "To": "0x…", "Amount": "2.5", "AmountRaw": "2500000000000000000"}))]
    pub data: serde_json::Value,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct WebhookList {
    pub data: Vec<Endpoint>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct DeletedWebhook {
    pub id: i64,
    pub deleted: bool,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct DeliveryList {
    /// Newest first.
    pub data: Vec<Delivery>,
    /// Pass as `Before` for the next (older) page; null on the last page.
    pub next_before: Option<i64>,
}

/// The delivery log's query (`limit` and `before`, the first version's names, are still accepted).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "PascalCase")]
pub struct DeliveryQuery {
    /// Page size (default 50).
    #[serde(alias = "limit")]
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// Only deliveries with a smaller id (the previous page's `NextBefore`).
    #[serde(alias = "before")]
    pub before: Option<i64>,
}

fn not_found(id: &str) -> AppError {
    AppError::new(ErrorCode::WebhookNotFound, format!("no webhook endpoint {id:?} for this API key"))
}

fn validate_url(url: &str, allow_private: bool) -> Result<String, AppError> {
    let bad = |why: &str| AppError::new(ErrorCode::InvalidWebhookUrl, format!("Url: {why}"));
    let url = url.trim();
    if url.len() > MAX_URL_LEN {
        return Err(bad("longer than 2048 characters"));
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(&format!("{url:?} is not a URL ({e})")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad("only http and https URLs can receive webhooks"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(bad("the URL has no host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad("credentials in the URL are not accepted; authenticate deliveries by their signature"));
    }
    if !allow_private && let Some(why) = crate::webhooks::deliver::private_target(&parsed) {
        return Err(bad(&format!("{why}; webhooks go to public addresses only")));
    }
    Ok(parsed.to_string())
}

fn validate_events(events: &[String]) -> Result<Vec<String>, AppError> {
    if events.is_empty() {
        return Err(AppError::missing("Events"));
    }
    let mut out: Vec<String> = Vec::new();
    for e in events {
        let e = e.trim();
        if !EVENT_TYPES.contains(&e) {
            return Err(AppError::new(
                ErrorCode::UnknownEvent,
                format!("Events: {e:?} is not an event type; known: {}", EVENT_TYPES.join(", ")),
            ));
        }
        if !out.iter().any(|o| o == e) {
            out.push(e.to_string());
        }
    }
    Ok(out)
}

/// Registers an endpoint receiving the given events. The answer carries the signing secret,
/// shown only this once.
#[utoipa::path(post, path = "/api/v1/webhooks", tag = "Webhooks",
    request_body = CreateWebhook,
    responses(
        (status = 201, description = "Registered; `Secret` is shown only here", body = CreatedWebhook),
        (status = 400, description = "`invalid_json`, `missing_field`, `invalid_webhook_url` (also a loopback or private address, unless private targets are allowed), `unknown_event`", body = ErrorBody),
        (status = 401, description = "`missing_api_key`, `invalid_api_key`", body = ErrorBody),
        (status = 422, description = "`webhook_limit_reached`: the key has as many live endpoints as webhooks.max_endpoints_per_key allows", body = ErrorBody),
    ),
    security(("api_key" = [])))]
pub async fn create(
    State(state): State<AppState>,
    key: ApiKey,
    ApiJson(body): ApiJson<CreateWebhook>,
) -> Result<(StatusCode, Json<CreatedWebhook>), AppError> {
    let url = validate_url(super::extract::required("Url", &body.url)?, state.settings.webhooks.allow_private_targets)?;
    let events = validate_events(body.events.as_deref().unwrap_or_default())?;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret = format!("whsec_{}", alloy::hex::encode(bytes));
    let max = state.settings.webhooks.max_endpoints_per_key;
    let endpoint =
        store::create_endpoint(state.store.pool(), key.0.id, &url, &events, &secret, max).await?.ok_or_else(|| {
            AppError::new(
                ErrorCode::WebhookLimitReached,
                format!("this API key already has {max} webhook endpoints; delete one first"),
            )
        })?;
    Ok((StatusCode::CREATED, Json(CreatedWebhook { endpoint, secret })))
}

/// The endpoints of this API key (secrets are never listed).
#[utoipa::path(get, path = "/api/v1/webhooks", tag = "Webhooks",
    responses(
        (status = 200, description = "This key's live endpoints, oldest first", body = WebhookList),
        (status = 401, description = "`missing_api_key`, `invalid_api_key`", body = ErrorBody),
    ),
    security(("api_key" = [])))]
pub async fn list(State(state): State<AppState>, key: ApiKey) -> Result<Json<WebhookList>, AppError> {
    Ok(Json(WebhookList { data: store::list_endpoints(state.store.pool(), key.0.id).await? }))
}

fn endpoint_id(id: &str) -> Result<i64, AppError> {
    id.trim().parse::<i64>().map_err(|_| not_found(id))
}

/// One endpoint of this API key (never its secret).
#[utoipa::path(get, path = "/api/v1/webhooks/{id}", tag = "Webhooks",
    params(("id" = i64, Path, description = "Endpoint id (`Id` of the endpoint); another key's endpoint is 404 like a missing one")),
    responses(
        (status = 200, description = "The endpoint", body = Endpoint),
        (status = 401, description = "`missing_api_key`, `invalid_api_key`", body = ErrorBody),
        (status = 404, description = "`webhook_not_found`", body = ErrorBody),
    ),
    security(("api_key" = [])))]
pub async fn get(
    State(state): State<AppState>,
    key: ApiKey,
    Path(id): Path<String>,
) -> Result<Json<Endpoint>, AppError> {
    let n = endpoint_id(&id)?;
    Ok(Json(store::get_endpoint(state.store.pool(), key.0.id, n).await?.ok_or_else(|| not_found(&id))?))
}

/// Deletes an endpoint: nothing more is sent to it; its pending deliveries are canceled.
#[utoipa::path(delete, path = "/api/v1/webhooks/{id}", tag = "Webhooks",
    params(("id" = i64, Path, description = "Endpoint id (`Id` of the endpoint); another key's endpoint is 404 like a missing one")),
    responses(
        (status = 200, description = "Deleted", body = DeletedWebhook),
        (status = 401, description = "`missing_api_key`, `invalid_api_key`", body = ErrorBody),
        (status = 404, description = "`webhook_not_found`", body = ErrorBody),
    ),
    security(("api_key" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    key: ApiKey,
    Path(id): Path<String>,
) -> Result<Json<DeletedWebhook>, AppError> {
    let n = endpoint_id(&id)?;
    let deleted = store::delete_endpoint(state.store.pool(), key.0.id, n).await?.ok_or_else(|| not_found(&id))?;
    Ok(Json(DeletedWebhook { id: deleted.id, deleted: true }))
}

/// The delivery log of an endpoint: every delivery with every attempt (status code, error,
/// duration, next attempt), newest first.
#[utoipa::path(get, path = "/api/v1/webhooks/{id}/deliveries", tag = "Webhooks",
    params(("id" = i64, Path, description = "Endpoint id (`Id` of the endpoint); another key's endpoint is 404 like a missing one"), DeliveryQuery),
    responses(
        (status = 200, description = "Deliveries, newest first", body = DeliveryList),
        (status = 400, description = "`invalid_query`", body = ErrorBody),
        (status = 401, description = "`missing_api_key`, `invalid_api_key`", body = ErrorBody),
        (status = 404, description = "`webhook_not_found`", body = ErrorBody),
    ),
    security(("api_key" = [])))]
pub async fn deliveries(
    State(state): State<AppState>,
    key: ApiKey,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<DeliveryQuery>,
) -> Result<Json<DeliveryList>, AppError> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=100).contains(&limit) {
        return Err(AppError::new(ErrorCode::InvalidQuery, "Limit: expected 1 to 100"));
    }
    let n = endpoint_id(&id)?;
    store::get_endpoint(state.store.pool(), key.0.id, n).await?.ok_or_else(|| not_found(&id))?;
    let data = store::list_deliveries(state.store.pool(), n, q.before, limit).await?;
    let next_before = (data.len() as i64 == limit).then(|| data.last().map(|d| d.id)).flatten();
    Ok(Json(DeliveryList { data, next_before }))
}

/// Sends an event again: a new delivery of the same event (same `Webhook-Id`, same body,
/// freshly signed), due now, with its own attempts and retries.
#[utoipa::path(post, path = "/api/v1/webhooks/{id}/deliveries/{delivery_id}/redeliver", tag = "Webhooks",
    params(("id" = i64, Path, description = "Endpoint id (`Id` of the endpoint); another key's endpoint is 404 like a missing one"), ("delivery_id" = i64, Path, description = "A delivery of that endpoint (`Id` in its delivery log)")),
    responses(
        (status = 202, description = "Queued: the new delivery", body = Delivery),
        (status = 401, description = "`missing_api_key`, `invalid_api_key`", body = ErrorBody),
        (status = 404, description = "`webhook_not_found`, `webhook_delivery_not_found`", body = ErrorBody),
        (status = 429, description = "`redelivery_limit_reached`: as many redeliveries this hour as webhooks.max_redeliveries_per_hour allows", body = ErrorBody),
    ),
    security(("api_key" = [])))]
pub async fn redeliver(
    State(state): State<AppState>,
    key: ApiKey,
    Path((id, delivery_id)): Path<(String, String)>,
) -> Result<(StatusCode, Json<Delivery>), AppError> {
    let n = endpoint_id(&id)?;
    store::get_endpoint(state.store.pool(), key.0.id, n).await?.ok_or_else(|| not_found(&id))?;
    let missing = || {
        AppError::new(
            ErrorCode::WebhookDeliveryNotFound,
            format!("no delivery {delivery_id:?} of webhook endpoint {id}"),
        )
    };
    let d: i64 = delivery_id.trim().parse().map_err(|_| missing())?;
    let max = state.settings.webhooks.max_redeliveries_per_hour;
    if store::redeliveries_last_hour(state.store.pool(), key.0.id).await? >= u64::from(max) {
        return Err(AppError::new(
            ErrorCode::RedeliveryLimitReached,
            format!("this API key requested {max} redeliveries in the last hour; retry later"),
        ));
    }
    let new = store::redeliver(state.store.pool(), n, d).await?.ok_or_else(missing)?;
    Ok((StatusCode::ACCEPTED, Json(new)))
}
