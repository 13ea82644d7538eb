//! Observability: Prometheus metrics (served by `GET /metrics`, see `docs/metrics.md`) and the
//! pieces that feed them.
//!
//! - [`install`]: the process-wide `metrics` recorder (Prometheus text exposition), idempotent.
//! - [`track_http`]: axum middleware timing every request by method, matched route and status.
//! - [`RpcMetricsLayer`]: a tower layer on the alloy transport timing every JSON-RPC call and
//!   counting its failures (see [`crate::chain::connect`]).
//! - queue depth and indexer lag are gauges set at scrape time from Postgres by `GET /metrics`
//!   (`api::metrics`), so every replica reports the shared truth.
//!
//! Pipeline stages and the keeper record their own series with one-line macro calls; the names
//! are the constants below.

use std::{
    sync::OnceLock,
    task::{Context, Poll},
    time::Instant,
};

use alloy::{
    rpc::json_rpc::{RequestPacket, ResponsePacket},
    transports::{TransportError, TransportFut},
};
use axum::{extract::MatchedPath, extract::Request, middleware::Next, response::Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Requests answered, by `method`, `route` (the matched route template) and `status`.
pub const HTTP_REQUESTS: &str = "streampay_http_requests_total";
/// Request latency in seconds, same labels as [`HTTP_REQUESTS`].
pub const HTTP_DURATION: &str = "streampay_http_request_duration_seconds";
/// Latency of a pipeline stage in seconds, by `stage` (`queue_wait`, `send`, `receipt`).
pub const PIPELINE_STAGE: &str = "streampay_pipeline_stage_seconds";
/// Queued transactions that reached an outcome, by `outcome`.
pub const PIPELINE_SETTLED: &str = "streampay_pipeline_settled_total";
/// Open queue rows, by `chain_id`, `sponsor` and `state` (`pending`, `submitted`, `mined`).
pub const QUEUE_DEPTH: &str = "streampay_queue_depth";
/// Blocks the index trails the chain head by, by `contract` (and `chain_id`).
pub const INDEXER_LAG: &str = "streampay_indexer_lag_blocks";
/// Highest indexed block, by `contract` (and `chain_id`).
pub const INDEXER_BLOCK: &str = "streampay_indexer_indexed_block";
/// JSON-RPC call latency in seconds, by `method`.
pub const RPC_DURATION: &str = "streampay_rpc_request_duration_seconds";
/// Failed JSON-RPC calls, by `method` and `kind` (`transport`: no answer; `rpc`: an error answer,
/// reverts of `eth_call`/`eth_estimateGas` included).
pub const RPC_ERRORS: &str = "streampay_rpc_errors_total";
/// Counter: batches of calls queued for a sponsor, by where their nonces came from: `leased`
/// (the lease holder's in-memory count, one statement), `locked` (the database counter under its
/// row lock), `stale` (a leased batch that found the lease or the counter moved and was queued
/// `locked` instead).
pub const SEQUENCER_BATCHES: &str = "streampay_sequencer_batches_total";
/// Liquidations the keeper queued, by `contract`.
pub const KEEPER_LIQUIDATIONS: &str = "streampay_keeper_liquidations_total";
pub const KEEPER_UNPROFITABLE: &str = "streampay_keeper_unprofitable_total";
/// Accounts with a net outflow the keeper is watching, by `contract`.
pub const KEEPER_WATCHED: &str = "streampay_keeper_watched_accounts";
/// Keeper passes that failed, by `contract`.
pub const KEEPER_ERRORS: &str = "streampay_keeper_errors_total";
/// Creator event streams this process has open (`api::creators`), set at scrape time.
pub const EVENT_STREAMS_OPEN: &str = "streampay_event_streams_open";

/// Histogram buckets (seconds) of every `*_seconds` series: 1 ms to 2 minutes.
const BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder as the process's `metrics` recorder (once; later calls
/// return the same handle). `None` if another recorder was installed first.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            describe();
            Some(handle)
        })
        .as_ref()
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(HTTP_REQUESTS, "HTTP requests answered, by method, matched route and status");
    describe_histogram!(HTTP_DURATION, Unit::Seconds, "HTTP request latency by method, matched route and status");
    describe_histogram!(PIPELINE_STAGE, Unit::Seconds, "Sponsor pipeline stage latency (queue_wait, send, receipt)");
    describe_counter!(PIPELINE_SETTLED, "Queued transactions that reached an outcome");
    describe_gauge!(QUEUE_DEPTH, "Open transactions in the sponsor queue, by sponsor and state");
    describe_gauge!(INDEXER_LAG, "Blocks the event index trails the chain head");
    describe_gauge!(INDEXER_BLOCK, "Highest block the event index has committed");
    describe_histogram!(RPC_DURATION, Unit::Seconds, "JSON-RPC call latency by method");
    describe_counter!(RPC_ERRORS, "Failed JSON-RPC calls by method and kind (transport, rpc)");
    describe_counter!(SEQUENCER_BATCHES, "Batches queued for a sponsor, by where their nonces came from");
    describe_counter!(KEEPER_LIQUIDATIONS, "Liquidations queued by the keeper");
    describe_counter!(
        KEEPER_UNPROFITABLE,
        "Liquidatable accounts the keeper skipped: the reward does not cover the gas"
    );
    describe_gauge!(KEEPER_WATCHED, "Accounts with a net outflow the keeper watches");
    describe_counter!(KEEPER_ERRORS, "Keeper passes that failed");
    describe_gauge!(EVENT_STREAMS_OPEN, "Creator event streams this process has open");
}

/// The route label of a request: its matched route template without a trailing slash
/// (`/api/v1/{contract}/payments`), or `unmatched` for the 404 fallback, so client-chosen paths
/// never become label values.
fn route_label(req: &Request) -> String {
    match req.extensions().get::<MatchedPath>().map(MatchedPath::as_str) {
        Some("/") => "/".into(),
        Some(p) => p.trim_end_matches('/').into(),
        None => "unmatched".into(),
    }
}

/// Standard methods as themselves, anything else as `other` (bounded label values).
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Middleware: counts and times every request (see [`HTTP_REQUESTS`], [`HTTP_DURATION`]).
pub async fn track_http(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(req.method());
    let route = route_label(&req);
    let response = next.run(req).await;
    let labels = [("method", method.to_string()), ("route", route), ("status", response.status().as_u16().to_string())];
    metrics::counter!(HTTP_REQUESTS, &labels).increment(1);
    metrics::histogram!(HTTP_DURATION, &labels).record(started.elapsed().as_secs_f64());
    response
}

/// Records one pipeline stage's latency.
pub fn pipeline_stage(stage: &'static str, seconds: f64) {
    metrics::histogram!(PIPELINE_STAGE, "stage" => stage).record(seconds.max(0.0));
}

/// Counts a settled pipeline row by its outcome (`mined`, `reverted`, `expired`, `rejected`,
/// `replaced`).
pub fn pipeline_settled(outcome: &'static str) {
    metrics::counter!(PIPELINE_SETTLED, "outcome" => outcome).increment(1);
}

/// Counts a batch queued for a sponsor (see [`SEQUENCER_BATCHES`]).
pub fn sequencer_batch(path: &'static str) {
    metrics::counter!(SEQUENCER_BATCHES, "path" => path).increment(1);
}

/// Tower layer for the alloy transport: times every JSON-RPC request by method and counts
/// failures (see [`RPC_DURATION`], [`RPC_ERRORS`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcMetricsLayer;

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;
    fn layer(&self, inner: S) -> RpcMetrics<S> {
        RpcMetrics { inner }
    }
}

/// The service [`RpcMetricsLayer`] wraps a transport in.
#[derive(Debug, Clone)]
pub struct RpcMetrics<S> {
    inner: S,
}

impl<S> tower::Service<RequestPacket> for RpcMetrics<S>
where
    S: tower::Service<RequestPacket, Response = ResponsePacket, Error = TransportError, Future = TransportFut<'static>>
        + Clone
        + Send
        + Sync
        + 'static,
{
    type Response = ResponsePacket;
    type Error = TransportError;
    type Future = TransportFut<'static>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: RequestPacket) -> Self::Future {
        let method = match &req {
            RequestPacket::Single(r) => r.method().to_string(),
            RequestPacket::Batch(_) => "batch".to_string(),
        };
        let started = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let result = fut.await;
            metrics::histogram!(RPC_DURATION, "method" => method.clone()).record(started.elapsed().as_secs_f64());
            match &result {
                Err(_) => metrics::counter!(RPC_ERRORS, "method" => method, "kind" => "transport").increment(1),
                Ok(packet) if packet.is_error() => {
                    metrics::counter!(RPC_ERRORS, "method" => method, "kind" => "rpc").increment(1)
                }
                Ok(_) => {}
            }
            result
        })
    }
}
