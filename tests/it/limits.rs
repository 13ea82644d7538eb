//! The server's own limits (review S11): a request timeout and a concurrency limit in front of
//! every route, each answered with a typed JSON error.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::{
    harness::{TestApp, assert_error, serve_settings, spawn_app},
    rpc_proxy::RpcProxy,
};

async fn get(app: &TestApp, base: &str, path: &str) -> (StatusCode, Option<String>, Value) {
    let resp = app.http.get(format!("{base}{path}")).header("X-API-Key", &app.api_key).send().await.unwrap();
    let status = resp.status();
    let retry_after = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("non-JSON body ({status}): {text}"));
    (status, retry_after, body)
}

#[tokio::test]
async fn a_request_past_the_timeout_is_503_request_timeout_and_one_past_the_limit_is_503_server_busy() {
    let app = spawn_app().await;
    let proxy = RpcProxy::start(&app).await;
    let mut settings = serve_settings();
    settings.request_timeout = Duration::from_secs(2);
    settings.max_concurrent_requests = 1;
    let (base, _state) = app.instance_via(&proxy.url, settings).await;

    // The node stalls: `GET /sponsors` (a balance per sponsor) hangs on it, holding the one slot.
    proxy.stall(true);
    let slow = {
        let (app_http, base, key) = (app.http.clone(), base.clone(), app.api_key.clone());
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let resp = app_http.get(format!("{base}/api/v1/sponsors")).header("X-API-Key", key).send().await.unwrap();
            let status = resp.status();
            (status, resp.json::<Value>().await.unwrap(), started.elapsed())
        })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while proxy.stalled() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the request never reached the node");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Any other request meanwhile is shed at once, with a typed body and Retry-After.
    let (status, retry_after, body) = get(&app, &base, "/api/v1/contracts").await;
    assert_error(&(status, body), StatusCode::SERVICE_UNAVAILABLE, "server_busy");
    assert_eq!(retry_after.as_deref(), Some("1"));

    // The stuck one ends at the timeout, not when the node answers.
    let (status, body, took) = tokio::time::timeout(Duration::from_secs(30), slow).await.unwrap().unwrap();
    assert_error(&(status, body), StatusCode::SERVICE_UNAVAILABLE, "request_timeout");
    assert!(took < Duration::from_secs(20), "answered after {took:?}");
    assert!(proxy.stalled() > 0, "the node had not answered yet");

    // Its slot is free again.
    proxy.stall(false);
    let (status, _, body) = get(&app, &base, "/api/v1/contracts").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[test]
fn the_limits_are_configurable_and_the_timeout_covers_a_synchronous_execute() {
    use streampay_relayer::config::Config;
    let defaults = Config::default();
    assert!(defaults.request_timeout_secs >= defaults.receipt_timeout_secs);
    assert!(defaults.max_concurrent_requests > 0);
}
