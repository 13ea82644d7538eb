//! `GET /metrics`: Prometheus text exposition of [`crate::observability`]'s series.
//!
//! Open on the service port by default, like `/health`; when `metrics.token` /
//! `STREAMPAY_METRICS_TOKEN` is set, a scrape must send `Authorization: Bearer <token>`.

use axum::{
    extract::State,
    http::{HeaderMap, header},
    response::{IntoResponse, Response},
};

use super::ErrorCode;
use super::{AppError, AppState};
use crate::observability;

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
            observability::refresh_gauges(&state).await;
            *last = Some(std::time::Instant::now());
        }
    }
    handle.run_upkeep();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], handle.render()).into_response()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
