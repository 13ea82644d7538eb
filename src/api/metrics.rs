//! `GET /metrics`: Prometheus text exposition of [`crate::observability`]'s series.
//!
//! Open on the service port by default, like `/health`; when `metrics.token` /
//! `STREAMPAY_METRICS_TOKEN` is set, a scrape must send `Authorization: Bearer <token>`.

use axum::{
    extract::State,
    http::{HeaderMap, header},
    response::{IntoResponse, Response},
};

use std::time::Duration;

use super::ErrorCode;
use super::{AppError, AppState};
use crate::{chains::Chain, observability, store::TxStatus};

/// `GET /metrics`: request latency by route, pipeline stage latency, queue depth, indexer lag,
/// RPC latency and errors, keeper activity. See `docs/metrics.md`.
#[utoipa::path(get, path = "/metrics", tag = "Status",
    responses(
        (status = 200, description = "Prometheus text exposition format 0.0.4", content_type = "text/plain"),
        (status = 401, description = "`invalid_metrics_token`: a metrics token is configured and the request lacks it",
            body = super::error::ErrorBody),
    ))]
pub async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(token) = &state.settings.metrics_token {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        if !presented.is_some_and(|p| constant_time_eq(p.as_bytes(), token.expose().as_bytes())) {
            return AppError::new(
                ErrorCode::InvalidMetricsToken,
                "GET /metrics needs Authorization: Bearer <metrics token>",
            )
            .into_response();
        }
    }
    let Some(handle) = observability::install() else {
        return AppError::Internal(anyhow::anyhow!("another metrics recorder is installed")).into_response();
    };
    {
        // At most one refresh a second, whatever the scrape rate (the endpoint may be public).
        let mut last = state.probes.gauges.lock().await;
        if last.is_none_or(|at| at.elapsed() >= super::health::PROBE_EVERY) {
            refresh_gauges(&state).await;
            *last = Some(std::time::Instant::now());
        }
    }
    handle.run_upkeep();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], handle.render()).into_response()
}

/// Longest the scrape waits for Postgres before serving the series it has.
const GAUGE_TIMEOUT: Duration = Duration::from_secs(2);

/// Sets the queue-depth and indexer-lag gauges of every chain from Postgres (shared by every
/// replica). A database that does not answer leaves the previous values and is logged, never
/// fails a scrape.
async fn refresh_gauges(state: &AppState) {
    // This process's own count, unlike the gauges below (read from the shared Postgres).
    metrics::gauge!(observability::EVENT_STREAMS_OPEN).set(state.events.open() as f64);
    for chain in &state.chains {
        match tokio::time::timeout(GAUGE_TIMEOUT, refresh(state, chain)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(chain = %chain.name, error = format!("{e:#}"), "metrics: gauges not refreshed")
            }
            Err(_) => tracing::warn!(chain = %chain.name, "metrics: gauges not refreshed (database timeout)"),
        }
    }
}

async fn refresh(state: &AppState, chain: &Chain) -> anyhow::Result<()> {
    let chain_id = chain.chain_id.to_string();
    let rows = state.store.queue_depth(chain.chain_id).await?;
    // Every configured sponsor × state gets a value (0 included), so a drained queue reads 0
    // rather than its last non-zero depth.
    for sponsor in chain.sponsors.addresses() {
        for status in [TxStatus::Pending, TxStatus::Submitted, TxStatus::Mined] {
            let n = rows.iter().find(|r| r.sponsor == *sponsor && r.status == status).map_or(0, |r| r.count);
            metrics::gauge!(observability::QUEUE_DEPTH, "chain_id" => chain_id.clone(), "sponsor" => sponsor.to_checksum(None), "state" => status.as_str())
                .set(n as f64);
        }
    }
    // Lag against the node's head now, not only the head the indexer last saw: a stalled
    // indexer shows as growing lag. Without an answer from the node the last value stays.
    let head = alloy::providers::Provider::get_block_number(&chain.provider).await.ok();
    let reader = &chain.index;
    for c in &chain.deployments {
        if let Some(lag) = reader.lag(c.address).await? {
            let labels = [("chain_id", chain_id.clone()), ("contract", c.name.clone())];
            if let Some(head) = head {
                let blocks = head.max(lag.chain_head).saturating_sub(lag.indexed_block);
                metrics::gauge!(observability::INDEXER_LAG, &labels).set(blocks as f64);
            }
            metrics::gauge!(observability::INDEXER_BLOCK, &labels).set(lag.indexed_block as f64);
        }
    }
    Ok(())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
