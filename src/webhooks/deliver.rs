//! Fan-out and delivery.
//!
//! Fan-out takes outbox events not yet fanned out (`FOR UPDATE SKIP LOCKED`), builds each one's
//! body once (so every attempt and redelivery sends the same bytes) and creates a delivery for
//! every live endpoint subscribed to its type that existed when the event was written (and, for
//! `transaction.*`, belongs to the key that relayed it; for `sponsor.balance_low`, to a key
//! allowed to use the sponsor).
//!
//! Delivery claims due deliveries with `FOR UPDATE SKIP LOCKED`, moving `next_attempt_at` ahead
//! by a lease (timeout + 30 s) in the same statement, so a replica that crashes mid-attempt only
//! delays that delivery until the lease ends; then POSTs each in a task of its own (one per
//! endpoint at a time in a process) and logs each attempt. Endpoints whose key family has no live
//! key (every key revoked, expired or deleted) get no new deliveries and their pending ones are
//! canceled.
//! A 2xx ends the delivery; anything else (non-2xx, timeout, connection error) schedules the next
//! attempt after `backoff(attempt)` until `max_attempts`.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context;
use serde_json::{Value, json};
use sqlx::PgPool;

use tokio_util::sync::CancellationToken;

use super::{Dispatcher, WebhookSettings};
use crate::{
    API_VERSION,
    chains::Chain,
    store::webhooks::delivery::{self, Due, RelayedTransaction},
    views::{TransactionFacts, TransactionView},
};

/// The delivery loop: fan out, then start what is due; sleeps `poll_interval` when idle.
///
/// Attempts run as tasks of their own, at most `batch_size` at once and one per endpoint: a
/// slow or hanging endpoint (up to `timeout` an attempt) holds only its own slot, and the loop
/// goes on claiming other endpoints' deliveries meanwhile. No batch waits for its slowest member.
/// Returns when `stop` is cancelled, after the attempts in flight have been recorded (each is
/// bounded by `timeout`).
pub async fn run(state: Arc<Dispatcher>, stop: CancellationToken) -> anyhow::Result<()> {
    let settings = state.settings.clone();
    let client = client(&settings)?;
    let mut attempts = tokio::task::JoinSet::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(settings.batch_size.max(1) as usize));
    let busy_endpoints: Arc<std::sync::Mutex<std::collections::HashSet<i64>>> = Arc::default();
    while !stop.is_cancelled() {
        let mut busy = false;
        for chain in &state.chains {
            match fan_out(&state, chain).await {
                Ok(n) => busy |= n > 0,
                Err(e) => tracing::warn!(chain = %chain.name, error = format!("{e:#}"), "webhook fan-out failed"),
            }
        }
        while attempts.try_join_next().is_some() {}
        let free = slots.available_permits();
        if free > 0 {
            let skip: Vec<i64> = busy_endpoints.lock().unwrap_or_else(|e| e.into_inner()).iter().copied().collect();
            match claim_due(state.store.pool(), &settings, free as i64, &skip).await {
                Ok(due) => {
                    busy |= !due.is_empty();
                    for d in due {
                        let Ok(permit) = slots.clone().try_acquire_owned() else { break };
                        busy_endpoints.lock().unwrap_or_else(|e| e.into_inner()).insert(d.endpoint_id);
                        let (pool, client, settings, busy_endpoints) =
                            (state.store.pool().clone(), client.clone(), settings.clone(), busy_endpoints.clone());
                        attempts.spawn(async move {
                            let endpoint = d.endpoint_id;
                            if let Err(e) = attempt(&pool, &client, &settings, d).await {
                                tracing::warn!(error = format!("{e:#}"), "failed to record a webhook attempt");
                            }
                            busy_endpoints.lock().unwrap_or_else(|e| e.into_inner()).remove(&endpoint);
                            drop(permit);
                        });
                    }
                }
                Err(e) => tracing::warn!(error = format!("{e:#}"), "webhook delivery failed"),
            }
        }
        if !busy {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(settings.poll_interval) => {}
            }
        }
    }
    while attempts.join_next().await.is_some() {}
    Ok(())
}

/// The HTTP client of deliveries: rustls, no redirects followed (a 3xx is not a 2xx), no proxy
/// from the environment; unless `allow_private_targets`, host names resolving to a non-public
/// address are refused (see [`super::is_public`]).
pub fn client(settings: &WebhookSettings) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder();
    if !settings.allow_private_targets {
        builder = builder.dns_resolver(Arc::new(PublicOnly));
    }
    builder
        .no_proxy()
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("StreamPay-Webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("Failed to build the webhook HTTP client")
}

/// Resolves with the system resolver and keeps public addresses only, so a host name cannot point
/// a delivery into the relayer's own network (checked on every connection: no DNS rebinding gap).
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let all: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<std::net::SocketAddr> = all.iter().copied().filter(|a| super::is_public(a.ip())).collect();
            if public.is_empty() {
                // Never which addresses: the delivery log is the key holder's to read, and the
                // answers of the relayer's resolver (split-horizon names) are not theirs.
                let err: Box<dyn std::error::Error + Send + Sync> =
                    format!("{host} does not resolve to a public address; webhooks.allow_private_targets is off")
                        .into();
                return Err(err);
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Why `url` may not be a target: a non-public IP literal or `localhost` (host names are checked
/// again at delivery, by their resolved addresses).
pub fn private_target(url: &reqwest::Url) -> Option<String> {
    let host = url.host_str()?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        return (!super::is_public(ip)).then(|| format!("{ip} is not a public address"));
    }
    let name = bare.trim_end_matches('.').to_ascii_lowercase();
    (name == "localhost" || name.ends_with(".localhost")).then(|| format!("{host} is this machine"))
}

/// The `data` of a `transaction.*` event `id`, from its relay_transactions row `r`.
fn transaction_data(chain: &Chain, id: i64, r: Option<RelayedTransaction>) -> anyhow::Result<Value> {
    // A row deleted since (never by the relayer itself) must not block the outbox.
    let Some(r) = r else { return Ok(json!({ "TransactionId": id })) };
    let facts = TransactionFacts {
        id: r.id,
        chain_id: r.chain_id,
        contract: r.contract,
        signer: r.signer,
        meta_nonce: r.meta_nonce,
        sponsor: r.sponsor,
        sponsor_nonce: r.sponsor_nonce,
        tx_hash: r.tx_hash,
        state: r.status,
        gas_used: r.gas_used,
        block_number: r.block_number,
        failure: r.failure,
        revert_reason: r.revert_reason,
    };
    Ok(serde_json::to_value(TransactionView::new(&chain.deployments, facts))?)
}

/// Creates the deliveries of up to 100 events; returns how many events it handled. Five
/// statements whatever the number of events: BEGIN, the events with their transaction rows,
/// their bodies, their deliveries, COMMIT (none but the read and its transaction when the outbox
/// is empty).
pub async fn fan_out(state: &Dispatcher, chain: &Chain) -> anyhow::Result<usize> {
    let mut tx = state.store.pool().begin().await?;
    let events = delivery::lock_pending_events(&mut tx, chain.chain_id as i64)
        .await
        .context("Failed to read the webhook outbox")?;
    if events.is_empty() {
        tx.commit().await?;
        return Ok(0);
    }
    let (mut ids, mut bodies, mut payloads) =
        (Vec::with_capacity(events.len()), Vec::with_capacity(events.len()), Vec::with_capacity(events.len()));
    let handled = events.len();
    for (e, transaction) in events {
        let (id, event_type) = (e.id, &e.event_type);
        let data = match (e.data.clone().map(pascal_case_keys), e.transaction_id) {
            // A transaction event: the transaction's view now, with what the event is about
            // written over it (the block it was mined in, or the block it was reorged out of),
            // so a body built after a later change still describes its own event.
            (at_event, Some(t)) => {
                let mut data =
                    transaction_data(chain, t, transaction).context("Failed to build a transaction event's data")?;
                if let (Some(Value::Object(fields)), Value::Object(view)) = (at_event, &mut data) {
                    view.extend(fields);
                }
                data
            }
            (Some(d), None) => d,
            (None, None) => json!({}),
        };
        // The `WebhookEvent` schema. Stored once: every attempt and redelivery sends these bytes
        // (so an event fanned out before the 2026-12-03 release keeps its snake_case body).
        let payload = json!({
            "Id": format!("evt_{id}"),
            "Type": event_type,
            "Created": e.created,
            "ApiVersion": API_VERSION,
            "ChainId": chain.chain_id,
            "Data": data,
        })
        .to_string();
        ids.push(id);
        bodies.push(data);
        payloads.push(payload);
    }
    delivery::mark_fanned_out(&mut tx, &ids, &bodies, &payloads).await.context("Failed to store the events' bodies")?;
    delivery::create_deliveries(&mut tx, &ids).await.context("Failed to create deliveries")?;
    tx.commit().await?;
    Ok(handled)
}

/// An event's stored `data` with its top-level keys in PascalCase, as every body carries them.
/// The trigger on `relay_transactions` (migrations 0007 and 0017) writes the facts of the moment
/// under snake_case keys (`block_hash`, `reorged_block_number`, …), as every producer did before
/// the 2026-12-03 release (events still in the outbox at an upgrade); keys already in PascalCase
/// are kept as they are.
fn pascal_case_keys(data: Value) -> Value {
    match data {
        Value::Object(fields) => Value::Object(fields.into_iter().map(|(k, v)| (pascal_case(&k), v)).collect()),
        other => other,
    }
}

/// `reorged_block_hash` → `ReorgedBlockHash`; `BlockHash` stays `BlockHash`.
fn pascal_case(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for word in key.split('_') {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            out.extend(first.to_uppercase());
            out.push_str(chars.as_str());
        }
    }
    out
}

/// What one attempt came to.
struct Outcome {
    status_code: Option<i32>,
    error: Option<String>,
    duration_ms: i64,
}

impl Outcome {
    fn succeeded(&self) -> bool {
        self.error.is_none()
    }
}

/// Claims up to `limit` due deliveries, the oldest due one of each endpoint not in `skip` (an
/// endpoint with an attempt in flight here), moving `next_attempt_at` ahead by a lease. A
/// delivery whose endpoint was deleted, or whose key family has no live key left (revoked,
/// expired, deleted), comes back marked `deleted` and is canceled, never sent.
async fn claim_due(pool: &PgPool, settings: &WebhookSettings, limit: i64, skip: &[i64]) -> anyhow::Result<Vec<Due>> {
    let lease_ms = (settings.timeout + Duration::from_secs(30)).as_millis() as i64;
    delivery::claim_due(pool, lease_ms, limit, skip).await.context("Failed to claim due deliveries")
}

async fn attempt(pool: &PgPool, client: &reqwest::Client, settings: &WebhookSettings, d: Due) -> anyhow::Result<()> {
    if d.deleted {
        delivery::cancel_claimed(pool, d.id).await?;
        return Ok(());
    }
    let outcome = send(client, settings, &d).await;
    let attempt = d.attempt.max(1) as u32;
    let done = outcome.succeeded();
    let next_ms: Option<i64> =
        (!done && attempt < settings.max_attempts).then(|| settings.backoff(attempt).as_millis() as i64);
    let state = if done {
        "succeeded"
    } else if next_ms.is_some() {
        "pending"
    } else {
        "failed"
    };
    // Only the claim that is still current records (a stale one, whose lease ran out and whose
    // delivery was claimed again, writes nothing). The delivery and its log change together.
    let record = delivery::AttemptRecord {
        state,
        next_ms,
        status_code: outcome.status_code,
        error: outcome.error.as_deref(),
        duration_ms: outcome.duration_ms,
    };
    let recorded =
        delivery::record_attempt(pool, d.id, d.attempt, record).await.context("Failed to record a webhook attempt")?;
    if !recorded {
        return Ok(());
    }
    tracing::info!(
        delivery = d.id,
        event = d.event_id,
        attempt = d.attempt,
        status = outcome.status_code,
        error = outcome.error,
        state,
        "webhook attempt"
    );
    Ok(())
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

/// One signed POST.
async fn send(client: &reqwest::Client, settings: &WebhookSettings, d: &Due) -> Outcome {
    if !settings.allow_private_targets {
        // IP literals never reach the resolver.
        if let Some(why) = reqwest::Url::parse(&d.url).ok().as_ref().and_then(private_target) {
            return Outcome { status_code: None, error: Some(format!("refused: {why}")), duration_ms: 0 };
        }
    }
    let t = now_unix();
    let started = Instant::now();
    let result = client
        .post(&d.url)
        .header("Content-Type", "application/json")
        .header("Webhook-Id", format!("evt_{}", d.event_id))
        .header("StreamPay-Event", &d.event_type)
        .header("StreamPay-Delivery", d.id.to_string())
        .header("StreamPay-Attempt", d.attempt.to_string())
        .header("StreamPay-Signature", super::sign(&d.secret, t, d.payload.as_bytes()))
        .body(d.payload.clone())
        .send()
        .await;
    let duration_ms = started.elapsed().as_millis() as i64;
    match result {
        Ok(resp) if resp.status().is_success() => {
            Outcome { status_code: Some(resp.status().as_u16() as i32), error: None, duration_ms }
        }
        Ok(resp) => Outcome {
            status_code: Some(resp.status().as_u16() as i32),
            error: Some(format!("the endpoint answered {}", resp.status())),
            duration_ms,
        },
        Err(e) if e.is_timeout() => Outcome {
            status_code: None,
            error: Some(format!("timeout: no complete answer after {duration_ms} ms")),
            duration_ms,
        },
        Err(e) if e.is_connect() => {
            Outcome { status_code: None, error: Some(format!("connection failed: {}", root(&e))), duration_ms }
        }
        Err(e) => Outcome { status_code: None, error: Some(format!("request failed: {}", root(&e))), duration_ms },
    }
}

/// The innermost cause of a reqwest error (its Display hides it).
fn root(e: &reqwest::Error) -> String {
    let mut s: &dyn std::error::Error = e;
    while let Some(next) = s.source() {
        s = next;
    }
    s.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_keys_become_pascal_case_and_pascal_case_keys_stay() {
        let stored = json!({
            "reorged_block_number": 7,
            "block_hash": "0x01",
            "state": "mined",
            "TransactionId": 3,
            "ContractAddress": "0xAb",
            "nested": {"inner_key": 1}
        });
        assert_eq!(
            pascal_case_keys(stored),
            json!({
                "ReorgedBlockNumber": 7,
                "BlockHash": "0x01",
                "State": "mined",
                "TransactionId": 3,
                "ContractAddress": "0xAb",
                // Values are never rewritten.
                "Nested": {"inner_key": 1}
            })
        );
        assert_eq!(pascal_case_keys(json!(null)), json!(null));
    }
}
