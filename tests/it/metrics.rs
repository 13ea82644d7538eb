//! `GET /metrics`: the Prometheus series named in docs/metrics.md exist after real traffic
//! (HTTP requests, a relayed transaction through the sponsor pipeline, RPC calls, an indexer
//! run) with values that match what happened.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use alloy::providers::Provider;
use reqwest::StatusCode;
use serde_json::{Value, json};
use streampay_relayer::{
    api::Settings,
    indexer::{Indexer, IndexerConfig, RpcLogSource},
    secret::Secret,
};

use crate::harness::{TestApp, assert_error, spawn_app, spawn_app_with, spawn_app_with_block_time, wallet};

/// One sample: name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the text exposition format (no escaped quotes or commas in our label values).
fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {line}"));
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line}"));
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let inner = rest.strip_suffix('}').unwrap_or_else(|| panic!("bad labels in {line}"));
                    let labels = inner
                        .split("\",")
                        .filter(|kv| !kv.is_empty())
                        .map(|kv| {
                            let (k, v) = kv.split_once("=\"").unwrap_or_else(|| panic!("bad label {kv} in {line}"));
                            (k.to_string(), v.trim_end_matches('"').to_string())
                        })
                        .collect();
                    (name.to_string(), labels)
                }
                None => (series.to_string(), BTreeMap::new()),
            };
            Sample { name, labels, value }
        })
        .collect()
}

fn matching<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    samples
        .iter()
        .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
        .collect()
}

/// The value of the one series `name` whose labels include `labels`.
#[track_caller]
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let found = matching(samples, name, labels);
    assert_eq!(found.len(), 1, "expected one {name}{labels:?}, found {found:?}");
    found[0].value
}

/// How much a counter grew between two scrapes (tests sharing a process share the recorder).
#[track_caller]
fn grew(before: &[Sample], after: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let old = matching(before, name, labels).first().map_or(0.0, |s| s.value);
    value(after, name, labels) - old
}

/// Scrapes until every configured sponsor's rows not yet mined (`streampay_queue_depth` in
/// states `pending` and `submitted`) sum to `n`. (Mined rows stay in the gauge, state `mined`,
/// until final: 64 blocks by default.)
async fn wait_open(app: &TestApp, n: f64) -> Vec<Sample> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let m = scrape(app).await;
        let open: f64 = ["pending", "submitted"]
            .iter()
            .flat_map(|state| matching(&m, "streampay_queue_depth", &[("state", *state)]))
            .map(|s| s.value)
            .sum();
        if open == n {
            return m;
        }
        assert!(tokio::time::Instant::now() < deadline, "queue depth stayed {open}, expected {n}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A scrape that sees this moment's gauges: they are refreshed at most once per `PROBE_EVERY`,
/// so it first lets the previous refresh expire.
async fn scrape(app: &TestApp) -> Vec<Sample> {
    tokio::time::sleep(streampay_relayer::api::health::PROBE_EVERY).await;
    let resp = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/plain"), "{ct}");
    assert!(resp.headers().contains_key("x-request-id"));
    parse(&resp.text().await.unwrap())
}

#[tokio::test]
async fn metrics_expose_http_pipeline_rpc_queue_and_indexer_series_after_real_traffic() {
    let app = spawn_app().await;
    let before = scrape(&app).await;
    let user = wallet();
    app.fund(&user, 5).await; // build + execute: one transaction through the pipeline
    let cfg = IndexerConfig { poll_interval: Duration::from_millis(20), ..IndexerConfig::default() };
    Indexer::new(
        Arc::new(RpcLogSource::new(app.provider.clone())),
        app.store.pool().clone(),
        app.chain_id,
        app.contract,
        0,
        cfg,
    )
    .sync_to_head()
    .await
    .unwrap();
    for _ in 0..3 {
        let (status, body) = app.get(&format!("/api/v1/USDC/payments/balance/{}", user.address())).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    assert_eq!(app.get("/nowhere/0xabc").await.0, StatusCode::NOT_FOUND);
    // A JSON-RPC error answer (Anvil does not know the method) counts as an RPC error.
    assert!(app.provider.raw_request::<_, Value>("streampay_no_such_method".into(), ()).await.is_err());

    let m = wait_open(&app, 0.0).await;

    // HTTP: by matched route template, method and status; latency histogram agrees with the count.
    let balance = [("method", "GET"), ("route", "/api/v1/{contract}/payments/balance/{address}"), ("status", "200")];
    assert_eq!(grew(&before, &m, "streampay_http_requests_total", &balance), 3.0);
    assert_eq!(grew(&before, &m, "streampay_http_request_duration_seconds_count", &balance), 3.0);
    let sum = value(&m, "streampay_http_request_duration_seconds_sum", &balance);
    assert!(sum > 0.0 && sum < 30.0, "latency sum {sum}");
    let inf = [balance.as_slice(), &[("le", "+Inf")]].concat();
    assert_eq!(grew(&before, &m, "streampay_http_request_duration_seconds_bucket", &inf), 3.0);
    let execute = [("method", "POST"), ("route", "/api/v1/{contract}/meta/execute"), ("status", "200")];
    assert_eq!(grew(&before, &m, "streampay_http_requests_total", &execute), 1.0);
    assert_eq!(grew(&before, &m, "streampay_http_requests_total", &[("route", "unmatched"), ("status", "404")]), 1.0);
    assert!(
        !m.iter().any(|s| s.labels.values().any(|v| v.contains("nowhere") || v.contains(&app.contract.to_string()))),
        "request paths never become label values"
    );

    // Pipeline stages of the one relayed deposit, and its outcome.
    for stage in ["queue_wait", "send", "receipt"] {
        let n = grew(&before, &m, "streampay_pipeline_stage_seconds_count", &[("stage", stage)]);
        assert!(n >= 1.0, "{stage}: {n}");
    }
    assert_eq!(grew(&before, &m, "streampay_pipeline_settled_total", &[("outcome", "mined")]), 1.0);

    // Queue depth, per configured sponsor and state: drained; the mined deposit waits for the
    // finality depth (64 blocks by default) as `mined`.
    for sponsor in [app.sponsor, app.other_sponsor] {
        for state in ["pending", "submitted", "mined"] {
            let d = value(&m, "streampay_queue_depth", &[("sponsor", &sponsor.to_checksum(None)), ("state", state)]);
            let expected = if sponsor == app.sponsor && state == "mined" { 1.0 } else { 0.0 };
            assert_eq!(d, expected, "{sponsor} {state}");
        }
    }

    // Indexer: at the head it synced to.
    let head = app.provider.get_block_number().await.unwrap() as f64;
    assert_eq!(value(&m, "streampay_indexer_indexed_block", &[("contract", "USDC")]), head);
    assert_eq!(value(&m, "streampay_indexer_lag_blocks", &[("contract", "USDC")]), 0.0);

    // RPC: latency by method, errors by method and kind.
    let sends = [("method", "eth_sendRawTransaction")];
    assert!(grew(&before, &m, "streampay_rpc_request_duration_seconds_count", &sends) >= 1.0);
    assert!(grew(&before, &m, "streampay_rpc_request_duration_seconds_count", &[("method", "eth_call")]) >= 1.0);
    // The execute's one simulation (the relay benchmark counts these as EVM runs).
    let simulations = [("method", "eth_simulateV1")];
    assert!(grew(&before, &m, "streampay_rpc_request_duration_seconds_count", &simulations) >= 1.0);
    let errors = [("method", "streampay_no_such_method"), ("kind", "rpc")];
    assert_eq!(value(&m, "streampay_rpc_errors_total", &errors), 1.0);
    assert!(
        !m.iter().any(|s| s.name == "streampay_rpc_errors_total" && s.labels["method"] == "eth_sendRawTransaction")
    );

    // The chain moves on without the indexer: lag is measured against the node's head.
    for _ in 0..3 {
        let _: Value = app.provider.raw_request("evm_mine".into(), ()).await.unwrap();
    }
    let m = scrape(&app).await;
    assert_eq!(value(&m, "streampay_indexer_lag_blocks", &[("contract", "USDC")]), 3.0);
    assert_eq!(value(&m, "streampay_indexer_indexed_block", &[("contract", "USDC")]), head);

    // The node goes away: calls fail at the transport, and a scrape still answers.
    let mut app = app;
    app.stop_chain();
    assert!(app.provider.get_block_number().await.is_err());
    let m = scrape(&app).await;
    let transport = [("method", "eth_blockNumber"), ("kind", "transport")];
    assert!(value(&m, "streampay_rpc_errors_total", &transport) >= 1.0);
    assert_eq!(value(&m, "streampay_indexer_lag_blocks", &[("contract", "USDC")]), 3.0, "the last known lag stays");
}

#[tokio::test]
async fn metrics_queue_depth_follows_a_transaction_in_flight() {
    // Blocks every 4 s: an async execute sits in the queue long enough to be seen.
    let app = spawn_app_with_block_time(4).await;
    let user = wallet();
    app.fund(&user, 5).await;
    let before = wait_open(&app, 0.0).await;
    let built = app
        .build("/api/v1/USDC/payments/", &json!({"From": user.address(), "To": wallet().address(), "Amount": "1"}))
        .await;
    let body = app.signed_execute_body(&user, &built).await;
    // No block until the scrape below has seen the call: a 4 s block landing between the 202
    // and the scrape would otherwise settle it first.
    let _: Value = app.provider.raw_request("evm_setIntervalMining".into(), (0u64,)).await.unwrap();
    let resp = app.execute_async(&body).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let sponsor = app.sponsor.to_checksum(None);
    let open = |m: &[Sample]| -> f64 {
        ["pending", "submitted"]
            .iter()
            .map(|s| value(m, "streampay_queue_depth", &[("sponsor", &sponsor), ("state", s)]))
            .sum()
    };
    let m = scrape(&app).await;
    assert_eq!(open(&m), 1.0, "the relayed call is in the queue");
    let _: Value = app.provider.raw_request("evm_setIntervalMining".into(), (1u64,)).await.unwrap();
    let after = wait_open(&app, 0.0).await;
    assert_eq!(grew(&before, &after, "streampay_pipeline_settled_total", &[("outcome", "mined")]), 1.0);
}

#[tokio::test]
async fn metrics_token_when_configured_is_required() {
    let app =
        spawn_app_with(Settings { metrics_token: Some(Secret::new("scrape-me")), ..crate::harness::serve_settings() })
            .await;
    let resp = app.http.get(app.url("/metrics")).send().await.unwrap();
    let status = resp.status();
    assert_error(&(status, resp.json().await.unwrap()), StatusCode::UNAUTHORIZED, "invalid_metrics_token");
    let wrong = app.http.get(app.url("/metrics")).bearer_auth("scrape-you").send().await.unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let ok = app.http.get(app.url("/metrics")).bearer_auth("scrape-me").send().await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let text = ok.text().await.unwrap();
    assert!(text.contains("streampay_queue_depth{"), "{text}");
}
