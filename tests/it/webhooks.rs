//! Webhooks: endpoints, signed deliveries to a real local HTTP receiver that fails on purpose,
//! retries with backoff, the delivery log, redelivery, and the events of real relayed calls on
//! Anvil (through the real indexer).

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use alloy::{primitives::U256, providers::Provider};

use axum::{body::Bytes, extract::State, http::HeaderMap, http::StatusCode as AxStatus, routing::post};
use reqwest::StatusCode;
use serde_json::{Value, json};
use streampay_relayer::{
    api::{Settings, health::HealthSettings},
    chain::StreamPay,
    webhooks::{self, WebhookSettings},
};

use crate::harness::Mined;
use crate::harness::{TestApp, assert_error, spawn_app_with, tokens, wallet};

/// What the receiver does with the next request.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Reply {
    Status(u16),
    /// Answers 200 only after this long (longer than the relayer's timeout).
    Hang(Duration),
}

#[derive(Debug, Clone)]
pub(crate) struct Received {
    headers: HeaderMap,
    body: String,
    at: std::time::Instant,
}

#[derive(Default)]
struct ReceiverState {
    plan: Mutex<VecDeque<Reply>>,
    /// Reply once the plan is used up.
    otherwise: Mutex<Option<u16>>,
    got: Mutex<Vec<Received>>,
}

/// A real local HTTP receiver on a random port.
#[derive(Clone)]
pub(crate) struct Receiver {
    pub(crate) url: String,
    state: Arc<ReceiverState>,
}

impl Receiver {
    pub(crate) async fn start(plan: &[Reply], otherwise: u16) -> Self {
        let state = Arc::new(ReceiverState::default());
        state.plan.lock().unwrap().extend(plan.iter().copied());
        *state.otherwise.lock().unwrap() = Some(otherwise);
        async fn hook(State(s): State<Arc<ReceiverState>>, headers: HeaderMap, body: Bytes) -> AxStatus {
            let at = std::time::Instant::now();
            s.got.lock().unwrap().push(Received { headers, body: String::from_utf8_lossy(&body).into_owned(), at });
            let next = s.plan.lock().unwrap().pop_front();
            match next {
                Some(Reply::Status(code)) => AxStatus::from_u16(code).unwrap(),
                Some(Reply::Hang(d)) => {
                    tokio::time::sleep(d).await;
                    AxStatus::OK
                }
                None => AxStatus::from_u16(s.otherwise.lock().unwrap().unwrap_or(200)).unwrap(),
            }
        }
        let app = axum::Router::new().route("/hook", post(hook)).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url: format!("http://{addr}/hook"), state }
    }

    pub(crate) fn got(&self) -> Vec<Received> {
        self.state.got.lock().unwrap().clone()
    }

    /// The bodies received of `event_type`, parsed.
    fn events(&self, event_type: &str) -> Vec<Value> {
        self.got()
            .iter()
            .map(|r| serde_json::from_str::<Value>(&r.body).unwrap())
            .filter(|v| v["Type"] == event_type)
            .collect()
    }

    /// Waits until `n` received bodies satisfy `pred`. Every body received is checked to name
    /// all its fields in PascalCase (issue 15.1), so every test that waits for an event checks it.
    pub(crate) async fn wait_for(&self, what: &str, n: usize, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let all: Vec<Value> = self.got().iter().map(|r| serde_json::from_str::<Value>(&r.body).unwrap()).collect();
            all.iter().for_each(|body| assert_pascal_case("a delivered event", body));
            let got: Vec<Value> = all.into_iter().filter(&pred).collect();
            if got.len() >= n {
                return got;
            }
            assert!(tokio::time::Instant::now() < deadline, "receiver never got {n} × {what}; got {:?}", self.got());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// The keys of `v` at every level (`$.Data.BlockHash`, `$.Data[0].Id`) that are not PascalCase:
/// an ASCII capital first, then letters and digits only. The error envelope's `error`, `code` and
/// `message` are the exception.
fn non_pascal_keys(v: &Value, path: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(fields) => {
            for (k, v) in fields {
                let at = format!("{path}.{k}");
                let envelope = matches!(at.as_str(), "$.error" | "$.error.code" | "$.error.message");
                let pascal =
                    k.starts_with(|c: char| c.is_ascii_uppercase()) && k.chars().all(|c| c.is_ascii_alphanumeric());
                if !pascal && !envelope {
                    out.push(at.clone());
                }
                non_pascal_keys(v, &at, out);
            }
        }
        Value::Array(items) => {
            items.iter().enumerate().for_each(|(i, v)| non_pascal_keys(v, &format!("{path}[{i}]"), out))
        }
        _ => {}
    }
}

#[track_caller]
pub(crate) fn assert_pascal_case(what: &str, v: &Value) {
    let mut bad = Vec::new();
    non_pascal_keys(v, "$", &mut bad);
    assert!(bad.is_empty(), "{what}: keys not in PascalCase: {bad:?}\n{v:#}");
}

pub(crate) fn test_settings() -> WebhookSettings {
    WebhookSettings {
        poll_interval: Duration::from_millis(40),
        timeout: Duration::from_millis(400),
        max_attempts: 4,
        backoff_base: Duration::from_millis(300),
        backoff_cap: Duration::from_secs(5),
        confirmations: Some(0),
        balance_check_interval: Duration::from_millis(100),
        // The receivers of these tests are on 127.0.0.1.
        allow_private_targets: true,
        ..WebhookSettings::default()
    }
}

fn settings(webhooks: WebhookSettings) -> Settings {
    Settings {
        meta_deadline_secs: 3600,
        receipt_timeout: Duration::from_secs(30),
        webhooks,
        ..crate::harness::serve_settings()
    }
}

/// The app with the webhook dispatcher running.
async fn app_with(webhooks: WebhookSettings) -> TestApp {
    spawn_with(settings(webhooks)).await
}

async fn spawn_with(settings: Settings) -> TestApp {
    let app = spawn_app_with(settings).await;
    app.keep(app.start_webhooks());
    app
}

/// Registers an endpoint; returns (id, secret).
pub(crate) async fn register(app: &TestApp, url: &str, events: &[&str]) -> (i64, String) {
    let (status, body) = app.post("/api/v1/webhooks", &json!({"Url": url, "Events": events})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let secret = body["Secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"));
    (body["Id"].as_i64().unwrap(), secret)
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

#[track_caller]
fn assert_signed(r: &Received, secret: &str) {
    let sig = r.headers["streampay-signature"].to_str().unwrap();
    assert!(webhooks::verify(secret, sig, r.body.as_bytes(), now_unix(), 300), "bad signature {sig} on {}", r.body);
    assert!(!webhooks::verify("whsec_wrong", sig, r.body.as_bytes(), now_unix(), 300));
    // A receiver can check it with nothing but HMAC-SHA256 (the documented recipe).
    let t = sig.split(',').find_map(|p| p.strip_prefix("t=")).unwrap();
    let v1 = sig.split(',').find_map(|p| p.strip_prefix("v1=")).unwrap();
    let expected = webhooks::signature(secret, t.parse().unwrap(), r.body.as_bytes());
    assert_eq!(v1, alloy::hex::encode(expected));
    let body: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(r.headers["webhook-id"].to_str().unwrap(), body["Id"].as_str().unwrap());
}

async fn deliveries(app: &TestApp, id: i64) -> Vec<Value> {
    let (status, body) = app.get(&format!("/api/v1/webhooks/{id}/deliveries")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["Data"].as_array().unwrap().clone()
}

/// Waits until some delivery of endpoint `id` satisfies `pred`.
async fn wait_delivery(app: &TestApp, id: i64, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    // Retries wait out a back-off; on a loaded machine that and the relayed call behind it take
    // well over the few seconds they take on a quiet one.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let all = deliveries(app, id).await;
        if let Some(d) = all.iter().find(|d| pred(d)) {
            return d.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "no delivery {what} for endpoint {id}: {all:#?}");
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
}

#[tokio::test]
async fn webhook_endpoints_refuse_bad_input_and_belong_to_their_key() {
    let app = app_with(test_settings()).await;
    let ok_url = "https://example.com/hooks";
    for url in ["not a url", "ftp://example.com/x", "http://user:pw@example.com/", "", "https://"] {
        let resp = app.post("/api/v1/webhooks", &json!({"Url": url, "Events": ["transaction.mined"]})).await;
        if url.is_empty() {
            assert_error(&resp, StatusCode::BAD_REQUEST, "missing_field");
        } else {
            assert_error(&resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid_webhook_url");
        }
    }
    let long = format!("https://example.com/{}", "a".repeat(2100));
    assert_error(
        &app.post("/api/v1/webhooks", &json!({"Url": long, "Events": ["transaction.mined"]})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_webhook_url",
    );
    assert_error(
        &app.post("/api/v1/webhooks", &json!({"Url": ok_url, "Events": ["transaction.mined", "transaction.exploded"]}))
            .await,
        StatusCode::BAD_REQUEST,
        "unknown_event",
    );
    assert_error(
        &app.post("/api/v1/webhooks", &json!({"Url": ok_url, "Events": []})).await,
        StatusCode::BAD_REQUEST,
        "missing_field",
    );
    assert_error(
        &app.post("/api/v1/webhooks", &json!({"Url": ok_url})).await,
        StatusCode::BAD_REQUEST,
        "missing_field",
    );
    assert_error(
        &app.post("/api/v1/webhooks", &json!({"Url": ok_url, "Events": "transaction.mined"})).await,
        StatusCode::BAD_REQUEST,
        "invalid_json",
    );
    assert_error(
        &app.post_with_key("/api/v1/webhooks", None, &json!({"Url": ok_url, "Events": ["transaction.mined"]})).await,
        StatusCode::UNAUTHORIZED,
        "missing_api_key",
    );

    // Registered: the secret is shown once; the list never shows it. Duplicate events collapse.
    let (status, created) = app
        .post("/api/v1/webhooks", &json!({"Url": ok_url, "Events": ["payment.completed", "payment.completed"]}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["Events"], json!(["payment.completed"]));
    assert_eq!(created["Url"], ok_url);
    let id = created["Id"].as_i64().unwrap();
    let (status, one) = app.get(&format!("/api/v1/webhooks/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{one}");
    assert_eq!(one["Events"], json!(["payment.completed"]));
    assert!(one.get("Secret").is_none(), "{one}");
    assert_error(&app.get("/api/v1/webhooks/999999").await, StatusCode::NOT_FOUND, "webhook_not_found");
    let (_, list) = app.get("/api/v1/webhooks").await;
    assert_eq!(list["Data"].as_array().unwrap().len(), 1);
    assert_eq!(list["Data"][0]["Id"], id);
    assert!(list["Data"][0].get("Secret").is_none(), "{list}");

    // Unknown ids.
    for path in ["/api/v1/webhooks/999999/deliveries", "/api/v1/webhooks/abc/deliveries"] {
        assert_error(&app.get(path).await, StatusCode::NOT_FOUND, "webhook_not_found");
    }
    assert_error(&app.delete("/api/v1/webhooks/999999").await, StatusCode::NOT_FOUND, "webhook_not_found");
    assert_error(
        &app.post(&format!("/api/v1/webhooks/{id}/deliveries/424242/redeliver"), &json!({})).await,
        StatusCode::NOT_FOUND,
        "webhook_delivery_not_found",
    );
    assert_error(
        &app.get(&format!("/api/v1/webhooks/{id}/deliveries?Limit=0")).await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    );
    assert_error(
        &app.get(&format!("/api/v1/webhooks/{id}/deliveries?Limit=lots")).await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    );

    // Another key sees nothing of it and cannot delete it.
    let other = app.store.create_api_key("other", &[app.sponsor], true).await.unwrap();
    let (status, list) = app.get_with_key("/api/v1/webhooks", Some(&other.key)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["Data"], json!([]));
    let resp = app.http.delete(app.url(&format!("/api/v1/webhooks/{id}"))).header("X-API-Key", &other.key).send().await;
    let resp = resp.unwrap();
    let resp = (resp.status(), resp.json::<Value>().await.unwrap());
    assert_error(&resp, StatusCode::NOT_FOUND, "webhook_not_found");
    let resp = app.get_with_key(&format!("/api/v1/webhooks/{id}/deliveries"), Some(&other.key)).await;
    assert_error(&resp, StatusCode::NOT_FOUND, "webhook_not_found");
    let resp = app.get_with_key(&format!("/api/v1/webhooks/{id}"), Some(&other.key)).await;
    assert_error(&resp, StatusCode::NOT_FOUND, "webhook_not_found");

    // Deleted: gone from the list, a second delete is a 404.
    let (status, body) = app.delete(&format!("/api/v1/webhooks/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"Id": id, "Deleted": true}));
    let (_, list) = app.get("/api/v1/webhooks").await;
    assert_eq!(list["Data"], json!([]));
    assert_error(&app.delete(&format!("/api/v1/webhooks/{id}")).await, StatusCode::NOT_FOUND, "webhook_not_found");
    assert_error(&app.get(&format!("/api/v1/webhooks/{id}")).await, StatusCode::NOT_FOUND, "webhook_not_found");
}

#[tokio::test]
async fn webhook_endpoints_are_documented_in_openapi_with_schemas_and_error_codes() {
    let app = spawn_app_with(settings(test_settings())).await;
    let doc: Value = app.http.get(app.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    let schemas = &doc["components"]["schemas"];
    assert_eq!(schemas["WebhookEventType"]["enum"], json!(webhooks::EVENT_TYPES));
    assert_eq!(
        schemas["CreateWebhook"]["properties"]["Events"]["items"]["$ref"],
        "#/components/schemas/WebhookEventType"
    );
    assert_eq!(schemas["Endpoint"]["properties"]["Events"]["items"]["$ref"], "#/components/schemas/WebhookEventType");
    let mut required: Vec<&str> =
        schemas["CreateWebhook"]["required"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    required.sort();
    assert_eq!(required, ["Events", "Url"]);
    for field in ["Attempt", "StatusCode", "Error", "DurationMs", "NextAttemptAt"] {
        assert!(schemas["Attempt"]["properties"].get(field).is_some(), "Attempt.{field} undocumented");
    }
    let op = |method: &str, path: &str| doc["paths"][path][method].clone();
    let post = op("post", "/api/v1/webhooks");
    let bad = post["responses"]["400"]["description"].as_str().unwrap();
    assert!(bad.contains("unknown_event"), "{bad}");
    let refused = post["responses"]["422"]["description"].as_str().unwrap();
    assert!(refused.contains("invalid_webhook_url"), "{refused}");
    assert!(post["responses"]["201"]["content"]["application/json"]["schema"]["$ref"].is_string());
    assert_eq!(post["security"], json!([{"api_key": ["webhooks"]}]), "the webhooks scope");
    for field in ["Id", "Type", "Created", "ApiVersion", "ChainId", "Data"] {
        assert!(schemas["WebhookEvent"]["properties"].get(field).is_some(), "WebhookEvent.{field} undocumented");
    }
    for (method, path) in [
        ("get", "/api/v1/webhooks/{id}"),
        ("get", "/api/v1/webhooks"),
        ("delete", "/api/v1/webhooks/{id}"),
        ("get", "/api/v1/webhooks/{id}/deliveries"),
        ("post", "/api/v1/webhooks/{id}/deliveries/{delivery_id}/redeliver"),
    ] {
        let o = op(method, path);
        assert_eq!(o["tags"], json!(["Webhooks"]), "{method} {path}");
        assert!(o["responses"]["401"].is_object(), "{method} {path}");
    }
    let log = op("get", "/api/v1/webhooks/{id}/deliveries");
    let params: Vec<&str> = log["parameters"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert!(params.contains(&"Limit") && params.contains(&"Before"), "{params:?}");
    let redeliver = op("post", "/api/v1/webhooks/{id}/deliveries/{delivery_id}/redeliver");
    assert!(redeliver["responses"]["404"]["description"].as_str().unwrap().contains("webhook_delivery_not_found"));
    assert!(redeliver["responses"]["202"].is_object());
}

#[tokio::test]
async fn webhook_private_targets_are_refused_unless_allowed() {
    let app = app_with(WebhookSettings { allow_private_targets: false, ..test_settings() }).await;
    for url in [
        "http://127.0.0.1:8080/hook",
        "http://[::1]/hook",
        "http://10.0.0.7/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://localhost:9000/hook",
        "http://api.localhost/hook",
        "http://[::ffff:192.168.1.1]/hook",
        // IPv6 forms that embed a private IPv4 address (NAT64, 6to4, IPv4-compatible), Teredo.
        "http://[64:ff9b::a00:7]/hook",
        "http://[2002:c0a8:101::1]/hook",
        "http://[::a00:7]/hook",
        "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/hook",
    ] {
        let resp = app.post("/api/v1/webhooks", &json!({"Url": url, "Events": ["transaction.mined"]})).await;
        assert_error(&resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid_webhook_url");
    }
    let (status, body) = app
        .post("/api/v1/webhooks", &json!({"Url": "https://example.com/hook", "Events": ["transaction.mined"]}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // A host name is checked by what it resolves to, at delivery: a real receiver on loopback
    // reached through a name gets nothing.
    let receiver = Receiver::start(&[], 200).await;
    let port = receiver.url.split(':').nth(2).unwrap().split('/').next().unwrap().to_string();
    let strict =
        webhooks::deliver::client(&WebhookSettings { allow_private_targets: false, ..test_settings() }).unwrap();
    let lax = webhooks::deliver::client(&test_settings()).unwrap();
    let via_name = format!("http://localhost:{port}/hook");
    let err = strict.post(&via_name).body("{}").send().await.unwrap_err();
    let mut chain = String::new();
    let mut e: Option<&dyn std::error::Error> = Some(&err);
    while let Some(x) = e {
        chain.push_str(&format!("{x}; "));
        e = x.source();
    }
    assert!(chain.contains("does not resolve to a public address"), "{chain}");
    // The key holder reads this in the delivery log: it never says what the name resolved to.
    assert!(!chain.contains("127.0.0.1") && !chain.contains("::1"), "{chain}");
    assert!(receiver.got().is_empty());
    assert_eq!(lax.post(&via_name).body("{}").send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(receiver.got().len(), 1);
}

#[tokio::test]
async fn webhook_deliveries_are_signed_retried_with_backoff_until_2xx_and_redelivered_on_demand() {
    let settings = test_settings();
    let app = app_with(settings.clone()).await;
    // Fails the first attempt with a 500, lets the second time out, accepts the third.
    let flaky = Receiver::start(&[Reply::Status(500), Reply::Hang(Duration::from_millis(1500))], 200).await;
    // Never accepts: gives up after max_attempts.
    let broken = Receiver::start(&[], 503).await;
    // Registered by another key: never sees this key's transactions.
    let foreign = Receiver::start(&[], 200).await;
    let (flaky_id, secret) = register(&app, &flaky.url, &["transaction.mined"]).await;
    let (broken_id, _) = register(&app, &broken.url, &["transaction.mined"]).await;
    let other = app.store.create_api_key("other", &[app.sponsor], true).await.unwrap();
    let (status, body) = app
        .post_with_key(
            "/api/v1/webhooks",
            Some(&other.key),
            &json!({"Url": foreign.url, "Events": ["transaction.mined"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // A real relayed deposit.
    let user = wallet();
    app.mint(user.address(), tokens(5)).await;
    let built = app.build("/api/v1/USDC/payments/deposit", &json!({"From": user.address(), "Amount": "5"})).await;
    let executed = app.execute_ok(&user, &built).await;

    let d = wait_delivery(&app, flaky_id, "succeeded", |d| d["State"] == "succeeded").await;
    assert_eq!(d["EventType"], "transaction.mined");
    assert_eq!(d["Attempts"], 3, "{d:#}");
    let log = d["AttemptLog"].as_array().unwrap();
    assert_eq!(log.len(), 3, "{d:#}");
    assert_eq!(log[0]["StatusCode"], 500);
    assert!(log[0]["Error"].as_str().unwrap().contains("500"), "{d:#}");
    assert!(log[0]["NextAttemptAt"].is_string());
    assert_eq!(log[1]["StatusCode"], Value::Null);
    assert!(log[1]["Error"].as_str().unwrap().contains("timeout"), "{d:#}");
    assert!(log[1]["DurationMs"].as_i64().unwrap() >= 400, "{d:#}");
    assert_eq!(log[2]["StatusCode"], 200);
    assert_eq!(log[2]["Error"], Value::Null);
    assert_eq!(log[2]["NextAttemptAt"], Value::Null, "no retry after a 2xx");
    assert_eq!(d["LastStatusCode"], 200);

    // The backoff as the database recorded it: each attempt starts no earlier than
    // base × 2^(n−1) after the previous one ended.
    let times: Vec<(f64, i64)> = sqlx::query_as(
        "SELECT (extract(epoch FROM a.attempted_at) * 1000)::FLOAT8, a.duration_ms FROM webhook_attempts a
         WHERE a.delivery_id = $1 ORDER BY a.attempt",
    )
    .bind(d["Id"].as_i64().unwrap())
    .fetch_all(app.store.pool())
    .await
    .unwrap();
    for n in 1..times.len() {
        let prev_end = times[n - 1].0 + times[n - 1].1 as f64;
        let gap = times[n].0 - prev_end;
        let want = settings.backoff(n as u32).as_millis() as f64;
        assert!(gap >= want - 5.0, "attempt {} came {gap} ms after the previous, backoff is {want} ms", n + 1);
    }

    // Every attempt carried the same event id and a valid signature; the body is the event.
    let got = flaky.got();
    assert_eq!(got.len(), 3);
    for r in &got {
        assert_signed(r, &secret);
        assert_eq!(r.body, got[0].body, "every attempt sends the same bytes");
        assert_eq!(r.headers["streampay-event"], "transaction.mined");
    }
    let event: Value = serde_json::from_str(&got[0].body).unwrap();
    let mut keys: Vec<&str> = event.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["ApiVersion", "ChainId", "Created", "Data", "Id", "Type"], "the documented WebhookEvent");
    assert_eq!(event["Type"], "transaction.mined");
    assert_eq!(event["ChainId"], app.chain_id);
    assert_eq!(event["Data"]["TransactionId"], executed["TransactionId"]);
    assert_eq!(event["Data"]["TransactionHash"], executed["TransactionHash"]);
    assert_eq!(event["Data"]["From"], user.address().to_checksum(None));
    assert_eq!(event["Data"]["Sponsor"], app.sponsor.to_checksum(None));
    assert_eq!(event["Data"]["Contract"], "USDC");

    // 2xx stops retries: nothing more arrives.
    tokio::time::sleep(settings.backoff(3) + Duration::from_millis(300)).await;
    assert_eq!(flaky.got().len(), 3, "delivered again after a 2xx");

    // The broken endpoint got exactly max_attempts, then the delivery failed.
    let failed = wait_delivery(&app, broken_id, "failed", |d| d["State"] == "failed").await;
    assert_eq!(failed["Attempts"], settings.max_attempts);
    assert_eq!(failed["AttemptLog"].as_array().unwrap().len(), settings.max_attempts as usize);
    assert!(failed["AttemptLog"].as_array().unwrap().iter().all(|a| a["StatusCode"] == 503));
    assert_eq!(broken.got().len(), settings.max_attempts as usize);
    assert!(foreign.got().is_empty(), "another key's endpoint received this key's transaction");

    // Redelivery on demand: a new delivery of the same event, freshly signed.
    let (status, re) =
        app.post(&format!("/api/v1/webhooks/{flaky_id}/deliveries/{}/redeliver", d["Id"]), &json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{re}");
    assert_ne!(re["Id"], d["Id"]);
    assert_eq!(re["RedeliveryOf"], d["Id"]);
    assert_eq!(re["EventId"], d["EventId"]);
    assert_eq!(re["State"], "pending");
    let re_id = re["Id"].clone();
    wait_delivery(&app, flaky_id, "redelivered", |x| x["Id"] == re_id && x["State"] == "succeeded").await;
    let got = flaky.got();
    assert_eq!(got.len(), 4);
    assert_signed(&got[3], &secret);
    assert_eq!(got[3].body, got[0].body);
    assert_eq!(got[3].headers["webhook-id"], got[0].headers["webhook-id"], "receivers dedupe on Webhook-Id");
    let all = deliveries(&app, flaky_id).await;
    assert_eq!(all.len(), 2, "{all:#?}");
    assert_eq!(all[0]["Id"], re_id, "newest first");

    // Paging.
    let (_, page) = app.get(&format!("/api/v1/webhooks/{flaky_id}/deliveries?Limit=1")).await;
    assert_eq!(page["Data"].as_array().unwrap().len(), 1);
    assert_eq!(page["NextBefore"], re_id);
    let (_, page2) =
        app.get(&format!("/api/v1/webhooks/{flaky_id}/deliveries?Limit=1&Before={}", page["NextBefore"])).await;
    assert_eq!(page2["Data"][0]["Id"], d["Id"]);
    // The first version's parameter names still page the same way.
    let (_, old) =
        app.get(&format!("/api/v1/webhooks/{flaky_id}/deliveries?limit=1&before={}", page["NextBefore"])).await;
    assert_eq!(old, page2);

    // A deleted endpoint receives nothing more.
    app.delete(&format!("/api/v1/webhooks/{flaky_id}")).await;
    app.fund(&user, 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(flaky.got().len(), 4, "a deleted endpoint was delivered to");
    let resp = app.post(&format!("/api/v1/webhooks/{flaky_id}/deliveries/{}/redeliver", d["Id"]), &json!({})).await;
    assert_error(&resp, StatusCode::NOT_FOUND, "webhook_not_found");
}

/// Issue 15.1, one naming convention: the webhooks API answers and the events delivered name every
/// field in PascalCase, at every level (only the error envelope keeps `error`, `code`, `message`);
/// the snake_case request body of the first version is still accepted. The answers also match
/// the schemas `/openapi.json` publishes for them.
#[tokio::test]
async fn webhook_answers_and_deliveries_name_every_field_in_pascal_case() {
    // The walk itself finds snake_case keys at any depth, and spares the error envelope only.
    let mut bad = Vec::new();
    non_pascal_keys(
        &json!({"Data": [{"Id": 1, "created_at": "x"}], "Ok": {"block_hash": "0x"}, "error": {"code": "c"}}),
        "$",
        &mut bad,
    );
    assert_eq!(bad, ["$.Data[0].created_at", "$.Ok.block_hash"]);
    let mut bad = Vec::new();
    non_pascal_keys(&json!({"Data": {"error": {"code": "c", "message": "m"}}}), "$", &mut bad);
    assert_eq!(bad, ["$.Data.error", "$.Data.error.code", "$.Data.error.message"]);

    let app = app_with(test_settings()).await;
    let _indexer = app.start_indexers();
    let doc: Value = app.http.get(app.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    let documented = |method: &str, path: &str, status: StatusCode, body: &Value| {
        assert_pascal_case(&format!("{method} {path}"), body);
        let schema = &doc["paths"][path][method]["responses"][status.as_str()]["content"]["application/json"]["schema"];
        let mut drift = Vec::new();
        crate::openapi_drift::check(&doc, schema, body, "$", &mut drift);
        assert!(drift.is_empty(), "{method} {path} {status} drifted from its schema: {drift:?}\n{body:#}");
    };
    // Fails the first attempt: the delivery log then holds a failed attempt and a retry.
    let receiver = Receiver::start(&[Reply::Status(500)], 200).await;

    // The snake_case body of the first version, still accepted.
    let (status, created) = app
        .post("/api/v1/webhooks", &json!({"url": receiver.url, "events": ["transaction.mined", "deposit.completed"]}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["Url"], receiver.url.as_str());
    assert_eq!(created["Events"], json!(["transaction.mined", "deposit.completed"]));
    assert!(created["Secret"].as_str().unwrap().starts_with("whsec_"), "{created}");
    assert!(created["CreatedAt"].is_string(), "{created}");
    documented("post", "/api/v1/webhooks", status, &created);
    let id = created["Id"].as_i64().unwrap();
    // Its errors name the PascalCase fields.
    let (status, missing) = app.post("/api/v1/webhooks", &json!({"events": ["transaction.mined"]})).await;
    assert_error(&(status, missing.clone()), StatusCode::BAD_REQUEST, "missing_field");
    assert!(missing["error"]["message"].as_str().unwrap().contains("Url"), "{missing}");
    assert_pascal_case("an error", &missing);

    // A relayed deposit: a transaction event (the transaction's view and the trigger's facts)
    // and a contract event (from the index).
    app.fund(&wallet(), 1).await;
    let mined = receiver.wait_for("transaction.mined", 1, |v| v["Type"] == "transaction.mined").await;
    let deposit = receiver.wait_for("deposit.completed", 1, |v| v["Type"] == "deposit.completed").await;
    for event in [&mined[0], &deposit[0]] {
        assert_pascal_case("a delivered event", event);
        let mut keys: Vec<&str> = event.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["ApiVersion", "ChainId", "Created", "Data", "Id", "Type"], "{event:#}");
        assert_eq!(event["ApiVersion"], streampay_relayer::API_VERSION);
    }
    for key in ["TransactionId", "TransactionHash", "BlockNumber", "BlockHash", "GasUsed", "ContractAddress", "From"] {
        assert!(!mined[0]["Data"][key].is_null(), "transaction.mined lacks Data.{key}: {:#}", mined[0]);
    }
    assert_eq!(mined[0]["Data"]["State"], "mined", "values keep their vocabulary");
    for key in ["Account", "Amount", "AmountRaw", "BlockTimestamp", "LogIndex", "TransactionHash", "Contract"] {
        assert!(!deposit[0]["Data"][key].is_null(), "deposit.completed lacks Data.{key}: {:#}", deposit[0]);
    }

    // Every answer of the webhooks API.
    let failed_then_sent =
        wait_delivery(&app, id, "a retried delivery", |d| d["State"] == "succeeded" && d["Attempts"] == 2).await;
    assert!(failed_then_sent["AttemptLog"][0]["Error"].is_string(), "{failed_then_sent:#}");
    let (status, one) = app.get(&format!("/api/v1/webhooks/{id}")).await;
    documented("get", "/api/v1/webhooks/{id}", status, &one);
    let (status, list) = app.get("/api/v1/webhooks").await;
    documented("get", "/api/v1/webhooks", status, &list);
    let (status, page) = app.get(&format!("/api/v1/webhooks/{id}/deliveries?limit=1")).await;
    assert!(page["NextBefore"].is_i64(), "{page:#}");
    documented("get", "/api/v1/webhooks/{id}/deliveries", status, &page);
    let (status, all) = app.get(&format!("/api/v1/webhooks/{id}/deliveries")).await;
    assert!(all["Data"].as_array().unwrap().iter().any(|d| d["AttemptLog"].as_array().unwrap().len() == 2), "{all:#}");
    documented("get", "/api/v1/webhooks/{id}/deliveries", status, &all);
    let (status, re) =
        app.post(&format!("/api/v1/webhooks/{id}/deliveries/{}/redeliver", failed_then_sent["Id"]), &json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{re}");
    assert_eq!(re["RedeliveryOf"], failed_then_sent["Id"]);
    documented("post", "/api/v1/webhooks/{id}/deliveries/{delivery_id}/redeliver", status, &re);
    let (status, deleted) = app.delete(&format!("/api/v1/webhooks/{id}")).await;
    assert_eq!(deleted, json!({"Id": id, "Deleted": true}));
    documented("delete", "/api/v1/webhooks/{id}", status, &deleted);
    let (status, gone) = app.get(&format!("/api/v1/webhooks/{id}")).await;
    assert_error(&(status, gone.clone()), StatusCode::NOT_FOUND, "webhook_not_found");
    documented("get", "/api/v1/webhooks/{id}", status, &gone);
}

/// Waits for the event of `event_type` whose data matches `pred`.
async fn event(r: &Receiver, event_type: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let t = event_type.to_string();
    let mut got = r.wait_for(event_type, 1, move |v| v["Type"] == t.as_str() && pred(&v["Data"])).await;
    got.remove(0)
}

#[tokio::test]
async fn webhook_events_follow_a_real_relayed_deposit_subscribe_payment_withdraw_and_unsubscribe() {
    let app = app_with(test_settings()).await;
    // A second replica's dispatcher on the same database: still one delivery per event.
    let _webhooks = app.start_webhooks();
    let indexer = app.start_indexers();
    let receiver = Receiver::start(&[], 200).await;
    let all: Vec<&str> = webhooks::EVENT_TYPES.iter().copied().filter(|t| *t != "sponsor.balance_low").collect();
    let (_, secret) = register(&app, &receiver.url, &all).await;
    let (user, author, friend) = (wallet(), wallet(), wallet());
    let cs = |a: alloy::primitives::Address| a.to_checksum(None);

    // Deposit 100 (gasless, permit).
    app.fund(&user, 100).await;
    let dep = event(&receiver, "deposit.completed", |d| d["Account"] == cs(user.address())).await;
    assert_eq!(dep["Data"]["Amount"], "100");
    assert_eq!(dep["Data"]["AmountRaw"], "100000000000000000000");
    assert_eq!(dep["Data"]["Contract"], "USDC");
    event(&receiver, "transaction.mined", |d| d["From"] == cs(user.address())).await;

    // Subscribe at 30 per month.
    let built = app
        .build(
            "/api/v1/USDC/subscriptions/",
            &json!({"from": user.address(), "author": author.address(), "subscription_rate": "30"}),
        )
        .await;
    let sub = app.execute_ok(&user, &built).await;
    let created = event(&receiver, "stream.created", |d| d["Author"] == cs(author.address())).await;
    assert_eq!(created["Data"]["Subscriber"], cs(user.address()));
    assert_eq!(created["Data"]["OutgoingRate"], built["RatePerSecond"]);
    assert_eq!(created["Data"]["TransactionHash"], sub["TransactionHash"]);

    // Pay 2.5.
    let built = app
        .build("/api/v1/USDC/payments/", &json!({"From": user.address(), "To": friend.address(), "Amount": "2.5"}))
        .await;
    app.execute_ok(&user, &built).await;
    let paid = event(&receiver, "payment.completed", |d| d["To"] == cs(friend.address())).await;
    assert_eq!(paid["Data"]["From"], cs(user.address()));
    assert_eq!(paid["Data"]["Amount"], "2.5");
    assert_eq!(paid["Data"]["AmountRaw"], "2500000000000000000");

    // Withdraw 10.
    let built = app.build("/api/v1/USDC/payments/withdraw", &json!({"From": user.address(), "Amount": "10"})).await;
    app.execute_ok(&user, &built).await;
    let w = event(&receiver, "withdrawal.completed", |d| d["Account"] == cs(user.address())).await;
    assert_eq!(w["Data"]["Amount"], "10");

    // Unsubscribe.
    let (status, built) = app
        .delete(&format!(
            "/api/v1/USDC/subscriptions/{}?From={}&Sponsor={}",
            author.address(),
            user.address(),
            app.sponsor
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{built}");
    app.execute_ok(&user, &built).await;
    let revoked = event(&receiver, "stream.revoked", |d| d["Author"] == cs(author.address())).await;
    assert_eq!(revoked["Data"]["Subscriber"], cs(user.address()));

    // One event per fact: five relayed calls, one payment, and every delivery signed.
    receiver.wait_for("5 transaction.mined", 5, |v| v["Type"] == "transaction.mined").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.events("transaction.mined").len(), 5);
    assert_eq!(receiver.events("payment.completed").len(), 1, "{:#?}", receiver.events("payment.completed"));
    assert_eq!(receiver.events("deposit.completed").len(), 1);
    assert_eq!(receiver.events("stream.created").len(), 1);
    assert_eq!(receiver.events("stream.revoked").len(), 1);
    let got = receiver.got();
    let mut ids: Vec<String> = got.iter().map(|r| r.headers["webhook-id"].to_str().unwrap().to_string()).collect();
    for r in &got {
        assert_signed(r, &secret);
    }
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "each event delivered once to a 2xx receiver, by either replica");
    drop(indexer);
}

#[tokio::test]
async fn webhook_contract_events_wait_for_confirmations_and_report_liquidations() {
    let app = app_with(WebhookSettings { confirmations: Some(2), ..test_settings() }).await;
    let indexer = app.start_indexers();
    let receiver = Receiver::start(&[], 200).await;
    register(&app, &receiver.url, &["stream.created", "account.liquidated", "payment.completed"]).await;
    let (user, author) = (wallet(), wallet());
    let cs = |a: alloy::primitives::Address| a.to_checksum(None);
    app.fund(&user, 10).await;
    // 150 a month is 5 a day: 10 covers the one-day window now, not after 36 hours.
    let built = app
        .build(
            "/api/v1/USDC/subscriptions/",
            &json!({"from": user.address(), "author": author.address(), "subscription_rate": "150"}),
        )
        .await;
    let executed = app.execute_ok(&user, &built).await;
    let block = executed["BlockNumber"].as_u64().unwrap();

    // Indexed but only 0 blocks deep: not sent yet.
    wait_indexed(&app, block).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(receiver.events("stream.created").is_empty(), "sent before 2 confirmations");
    mine(&app, 1).await;
    wait_indexed(&app, block + 1).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(receiver.events("stream.created").is_empty(), "sent before 2 confirmations");
    mine(&app, 1).await;
    let created = event(&receiver, "stream.created", |d| d["Author"] == cs(author.address())).await;
    assert_eq!(created["Data"]["BlockNumber"], block);

    // 36 hours later 2.5 are left, less than a day of outflow: a keeper liquidates it.
    app.advance(36 * 3600).await;
    let keeper = app.admin.get_accounts().await.unwrap()[0];
    let receipt =
        StreamPay::new(app.contract, &app.admin).liquidate(user.address()).send().await.unwrap().mined().await;
    assert!(receipt.status());
    mine(&app, 2).await;
    let liq = event(&receiver, "account.liquidated", |d| d["Account"] == cs(user.address())).await;
    assert_eq!(liq["Data"]["Liquidator"], cs(keeper));
    assert_eq!(liq["Data"]["StreamsStopped"], "1");
    let reward = U256::from_str_radix(liq["Data"]["RewardRaw"].as_str().unwrap(), 10).unwrap();
    assert!(reward > U256::ZERO);
    assert_eq!(app.balance_of(keeper).await, reward, "the reward reported is what the keeper got");
    // The reward is a Transfer, but not a payment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(receiver.events("payment.completed").is_empty(), "{:#?}", receiver.events("payment.completed"));
    drop(indexer);
}

async fn mine(app: &TestApp, blocks: u64) {
    let _: Value = app.provider.raw_request("anvil_mine".into(), (blocks,)).await.unwrap();
}

async fn wait_indexed(app: &TestApp, block: u64) {
    let reader = streampay_relayer::indexer::IndexReader::new(app.store.pool().clone(), app.chain_id);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while reader.head(app.contract).await.unwrap().is_none_or(|h| h.block_number < block) {
        assert!(tokio::time::Instant::now() < deadline, "index never reached block {block}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn webhook_sponsor_balance_low_fires_once_for_keys_allowed_to_use_the_sponsor_and_old_events_are_pruned() {
    let app = spawn_app_with(Settings {
        health: HealthSettings { sponsor_min_balance_wei: U256::MAX, ..HealthSettings::default() },
        ..settings(test_settings())
    })
    .await;
    let receiver = Receiver::start(&[], 200).await;
    let (_, secret) = register(&app, &receiver.url, &["sponsor.balance_low"]).await;
    let broken = Receiver::start(&[], 500).await;
    let (broken_id, _) = register(&app, &broken.url, &["sponsor.balance_low"]).await;
    // Endpoints receive events written after they were registered.
    let _webhooks = app.start_webhooks();
    let low = receiver.wait_for("sponsor.balance_low", 1, |v| v["Type"] == "sponsor.balance_low").await;
    let data = &low[0]["Data"];
    assert_eq!(data["Sponsor"], app.sponsor.to_checksum(None));
    assert_eq!(data["BalanceWei"], app.native_balance(app.sponsor).await.to_string());
    assert_eq!(data["MinBalanceWei"], U256::MAX.to_string());
    // Checked every 100 ms: still one alert (the episode lasts), and none for the sponsor this key
    // may not use.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let got = receiver.got();
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_signed(&got[0], &secret);
    // The other sponsor is low too (its alert is on record), but this key may not use it.
    let alerts: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_events WHERE type = 'sponsor.balance_low'")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(alerts, 2);
    assert_ne!(app.other_sponsor, app.sponsor);

    // Pruning keeps an event while one of its deliveries is pending (the broken endpoint's retries)…
    let pool = app.store.pool().clone();
    let count = |sql: &'static str| {
        let pool = pool.clone();
        async move { sqlx::query_scalar::<_, i64>(sql).fetch_one(&pool).await.unwrap() }
    };
    assert_eq!(deliveries(&app, broken_id).await[0]["State"], "pending");
    let pruned = webhooks::produce::prune(app.store.pool(), Duration::ZERO).await.unwrap();
    assert_eq!(pruned, 1, "only the other sponsor's alert (no deliveries) goes");
    assert_eq!(count("SELECT count(*) FROM webhook_events").await, 1);
    // … and removes it with its deliveries and log once they have all ended.
    wait_delivery(&app, broken_id, "failed", |d| d["State"] == "failed").await;
    let pruned = webhooks::produce::prune(app.store.pool(), Duration::ZERO).await.unwrap();
    assert_eq!(pruned, 1);
    assert_eq!(count("SELECT count(*) FROM webhook_events").await, 0);
    assert_eq!(count("SELECT count(*) FROM webhook_attempts").await, 0);
    assert_eq!(deliveries(&app, broken_id).await, Vec::<Value>::new());
    // A long retention keeps everything.
    assert_eq!(webhooks::produce::prune(app.store.pool(), Duration::from_secs(86_400)).await.unwrap(), 0);
}

#[tokio::test]
async fn webhook_dispatcher_stopped_mid_retry_resumes_from_the_database() {
    // A backoff long enough that the dispatcher is surely stopped between the attempts.
    let settings = WebhookSettings { backoff_base: Duration::from_secs(1), ..test_settings() };
    let app = spawn_app_with(self::settings(settings.clone())).await;
    let receiver = Receiver::start(&[Reply::Status(500)], 200).await;
    let (id, secret) = register(&app, &receiver.url, &["transaction.mined"]).await;
    // The first dispatcher runs as another process would: with connections of its own, which
    // die with it. (Aborted tasks sharing the test's pool could hand back a connection cut
    // mid-statement, still holding its locks, which no crashed process leaves behind.)
    let own_pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect_with((*app.store.pool().connect_options()).clone())
        .await
        .unwrap();
    let first_process = streampay_relayer::api::AppState::new(streampay_relayer::api::Inner {
        store: streampay_relayer::store::Store::from_pool(own_pool.clone()),
        chains: app.state.chains.clone(),
        settings: app.state.settings.clone(),
    });
    let first = streampay_relayer::supervisor::Supervisor::new();
    streampay_relayer::server::start_webhooks(&first_process, &first);
    let user = wallet();
    app.fund(&user, 3).await;
    // The first attempt failed; the dispatcher dies before the retry.
    let d = wait_delivery(&app, id, "a failed first attempt", |d| d["Attempts"] == 1 && d["State"] == "pending").await;
    // Killed: no time to finish what it was doing.
    first.shutdown(Duration::ZERO).await;
    own_pool.close().await;
    // While it is down: another relayed deposit (its event waits in the outbox).
    app.fund(&user, 2).await;
    tokio::time::sleep(settings.backoff(1) + Duration::from_millis(200)).await;
    assert_eq!(receiver.got().len(), 1, "delivered while no dispatcher runs");

    // A new process picks both up: the retry and the new event, each delivered once.
    let _second = app.start_webhooks();
    let did = d["Id"].clone();
    wait_delivery(&app, id, "the retry", |x| x["Id"] == did && x["State"] == "succeeded").await;
    receiver.wait_for("two transaction.mined", 3, |v| v["Type"] == "transaction.mined").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = receiver.got();
    assert_eq!(got.len(), 3, "one failed attempt, its retry, the event written while down");
    assert_eq!(got[0].headers["webhook-id"], got[1].headers["webhook-id"]);
    assert_ne!(got[1].headers["webhook-id"], got[2].headers["webhook-id"]);
    got.iter().for_each(|r| assert_signed(r, &secret));
}

#[tokio::test]
async fn webhook_transaction_failed_for_a_relayed_call_that_reverts_on_chain() {
    let app = app_with(test_settings()).await;
    let receiver = Receiver::start(&[], 200).await;
    let (_, secret) = register(&app, &receiver.url, &["transaction.failed", "transaction.mined"]).await;
    let (user, friend) = (wallet(), wallet());
    app.fund(&user, 10).await;
    receiver.wait_for("the deposit mined", 1, |v| v["Type"] == "transaction.mined").await;

    // Both land in one block: the relayed payment, simulated fine and sent first, then the user's
    // own withdrawal of everything with a higher tip, so mined before it: the payment reverts.
    let raw = |method: &'static str, params: Value| {
        let p = app.provider.clone();
        async move { p.raw_request::<_, Value>(method.into(), params).await.unwrap() }
    };
    raw("evm_setAutomine", json!([false])).await;
    raw("anvil_setBalance", json!([user.address(), "0xde0b6b3a7640000"])).await;
    raw("anvil_impersonateAccount", json!([user.address()])).await;
    let built = app
        .build("/api/v1/USDC/payments/", &json!({"From": user.address(), "To": friend.address(), "Amount": "8"}))
        .await;
    let body = app.signed_execute_body(&user, &built).await;
    let resp = app.execute_async(&body).await;
    let status = resp.status();
    let accepted: Value = resp.json().await.unwrap();
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let gwei = 1_000_000_000u128;
    let own = StreamPay::new(app.contract, &app.provider)
        .withdraw(crate::harness::internal(10))
        .from(user.address())
        .gas(200_000)
        .max_priority_fee_per_gas(1000 * gwei)
        .max_fee_per_gas(2000 * gwei)
        .send()
        .await
        .unwrap();
    raw("evm_mine", json!([])).await;
    raw("evm_setAutomine", json!([true])).await;
    assert!(own.mined().await.status(), "the user's own withdrawal");

    let failed = event(&receiver, "transaction.failed", |d| d["TransactionId"] == accepted["TransactionId"]).await;
    assert_eq!(failed["Data"]["State"], "failed");
    assert_eq!(failed["Data"]["From"], user.address().to_checksum(None));
    assert!(failed["Data"]["Failure"].is_string(), "{failed:#}");
    let got = receiver.got();
    let r = got.iter().find(|r| r.body.contains("transaction.failed")).unwrap();
    assert_signed(r, &secret);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.events("transaction.mined").len(), 1, "the reverted call is not reported mined");
}

async fn register_with_key(app: &TestApp, key: &str, url: &str, events: &[&str]) -> i64 {
    let (status, body) = app.post_with_key("/api/v1/webhooks", Some(key), &json!({"Url": url, "Events": events})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["Id"].as_i64().unwrap()
}

#[tokio::test]
async fn a_slow_webhook_endpoint_delays_only_its_own_deliveries() {
    // Each attempt may take up to 8 s; the tarpit holds every request for 30 s.
    let settings = WebhookSettings { timeout: Duration::from_secs(8), ..test_settings() };
    let app = app_with(settings).await;
    let tarpit = Receiver::start(&[Reply::Hang(Duration::from_secs(30)); 4], 200).await;
    let healthy = Receiver::start(&[], 200).await;
    register(&app, &tarpit.url, &["transaction.mined"]).await;
    register(&app, &healthy.url, &["transaction.mined"]).await;
    let user = wallet();
    let mut mined_at = Vec::new();
    for _ in 0..3 {
        app.fund(&user, 1).await;
        mined_at.push(std::time::Instant::now());
    }
    healthy.wait_for("three transaction.mined", 3, |v| v["Type"] == "transaction.mined").await;
    let got: Vec<Received> = healthy
        .got()
        .into_iter()
        .filter(|r| serde_json::from_str::<Value>(&r.body).unwrap()["Type"] == "transaction.mined")
        .collect();
    let tarpit_first = tarpit.got().first().map(|r| r.at).expect("the tarpit got the first event");
    for (i, (r, mined)) in got.iter().zip(&mined_at).enumerate().skip(1) {
        // Only deliveries made while the tarpit's first attempt is still running say anything.
        if *mined < tarpit_first + Duration::from_secs(8) {
            let latency = r.at.saturating_duration_since(*mined);
            assert!(
                latency < Duration::from_secs(3),
                "the healthy endpoint's delivery {i} waited {latency:?} behind the tarpit"
            );
        }
    }
    // Once the first attempt times out (8 s: a loaded machine gets there before the healthy
    // deliveries finish) the retry may come; before that, no second attempt.
    let overlapping = tarpit.got().iter().filter(|r| r.at < tarpit_first + Duration::from_secs(8)).count();
    assert_eq!(overlapping, 1, "one attempt at a time per endpoint: the tarpit still holds the first");
}

#[tokio::test]
async fn endpoints_of_a_revoked_key_receive_nothing_and_a_rotation_keeps_its_endpoints() {
    let app = app_with(test_settings()).await;
    // Contract events come from the index.
    let _indexer = app.start_indexers();
    let control = Receiver::start(&[], 200).await;
    let revoked = Receiver::start(&[], 200).await;
    let rotated = Receiver::start(&[], 200).await;
    register(&app, &control.url, &["deposit.completed"]).await;
    let gone = app.store.create_api_key("gone", &[app.sponsor], true).await.unwrap();
    let gone_endpoint = register_with_key(&app, &gone.key, &revoked.url, &["deposit.completed"]).await;
    let old = app.store.create_api_key("old", &[app.sponsor], true).await.unwrap();
    let kept_endpoint = register_with_key(&app, &old.key, &rotated.url, &["deposit.completed"]).await;

    app.store.revoke_key(gone.id).await.unwrap();
    let streampay_relayer::store::KeyChange::Done(new) = app.store.rotate_key(old.id, 0).await.unwrap() else {
        panic!("rotation refused")
    };
    // The new key sees (and manages) the endpoint registered by the key it replaced.
    let (status, list) = app.get_with_key("/api/v1/webhooks", Some(&new.key)).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let ids: Vec<i64> = list["Data"].as_array().unwrap().iter().map(|e| e["Id"].as_i64().unwrap()).collect();
    assert_eq!(ids, vec![kept_endpoint], "{list}");

    let user = wallet();
    app.fund(&user, 2).await;
    // Once the control endpoint has the event, its fan-out is done: the others were decided too.
    control.wait_for("deposit.completed", 1, |v| v["Type"] == "deposit.completed").await;
    rotated.wait_for("deposit.completed after the rotation", 1, |v| v["Type"] == "deposit.completed").await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = $1")
        .bind(gone_endpoint)
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(rows, 0, "no delivery for an endpoint whose key is revoked");
    assert!(revoked.got().is_empty());
}

#[tokio::test]
async fn webhook_endpoints_and_redeliveries_per_key_are_limited() {
    let settings = WebhookSettings { max_endpoints_per_key: 2, max_redeliveries_per_hour: 1, ..test_settings() };
    let app = app_with(settings).await;
    let receiver = Receiver::start(&[], 200).await;
    let (first, _) = register(&app, &receiver.url, &["transaction.mined"]).await;
    register(&app, &receiver.url, &["deposit.completed"]).await;
    assert_error(
        &app.post("/api/v1/webhooks", &json!({"Url": receiver.url, "Events": ["payment.completed"]})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "webhook_limit_reached",
    );
    // Deleting one makes room.
    assert_eq!(app.delete(&format!("/api/v1/webhooks/{first}")).await.0, StatusCode::OK);
    let (third, _) = register(&app, &receiver.url, &["transaction.mined"]).await;

    app.fund(&wallet(), 1).await;
    let d = wait_delivery(&app, third, "a delivery", |d| d["State"] == "succeeded").await;
    let path = format!("/api/v1/webhooks/{third}/deliveries/{}/redeliver", d["Id"]);
    assert_eq!(app.post(&path, &json!({})).await.0, StatusCode::ACCEPTED);
    assert_error(&app.post(&path, &json!({})).await, StatusCode::TOO_MANY_REQUESTS, "redelivery_limit_reached");
}

/// Review S4/T2, at the default settings (contract events sent once their block is at the
/// chain's finality depth): a reorg deeper than that orphans the block of an event already
/// delivered. The index's rollback withdraws it: the receiver gets `event.retracted` naming it
/// (without subscribing to it), then the canonical event, at the same height and log index but
/// in the new block (its own key, so it is not mistaken for the orphaned one). The webhook cursor
/// moves back in the rollback's own transaction: right after a rollback it is at or below the
/// block rolled back to, and the canonical event is itself withdrawn and retracted.
#[tokio::test]
async fn webhook_contract_events_follow_index_rollbacks_with_a_retraction_then_the_canonical_event() {
    let defaults = WebhookSettings::default();
    assert_eq!(defaults.confirmations, None, "by default contract events wait for the chain's finality depth");
    let app = app_with(WebhookSettings { confirmations: defaults.confirmations, ..test_settings() }).await;
    let depth = app.chain().finality_depth;
    assert_eq!(depth, streampay_relayer::pipeline::DEFAULT_FINALITY_DEPTH);
    let indexer = app.start_indexers();
    let receiver = Receiver::start(&[], 200).await;
    register(&app, &receiver.url, &["deposit.completed"]).await;
    let user = wallet();
    let cs = |a: alloy::primitives::Address| a.to_checksum(None);
    app.fund(&user, 5).await;
    let (hash, block): (Vec<u8>, i64) = sqlx::query_as("SELECT tx_hash, block_number FROM relay_transactions")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    let (hash, block) = (alloy::primitives::B256::from_slice(&hash), block as u64);

    // Final: the including block and depth − 1 on top of it.
    mine(&app, depth - 1).await;
    let first = event(&receiver, "deposit.completed", |d| d["Account"] == cs(user.address())).await;
    assert_eq!(first["Data"]["BlockNumber"], block);
    let orphaned_hash = first["Data"]["BlockHash"].clone();

    // Every block from the deposit's up is replaced; the new chain carries the same transaction
    // in its first block, so the canonical event is at the same height and log index.
    let raw_tx: alloy::primitives::Bytes =
        app.provider.raw_request("eth_getRawTransactionByHash".into(), (hash,)).await.unwrap();
    let head = app.provider.get_block_number().await.unwrap();
    let reorged = head - block + 1;
    let _: Value = app.provider.raw_request("anvil_reorg".into(), json!([reorged, [[raw_tx, 0]]])).await.unwrap();
    let new_hash = app.provider.get_block_by_number(block.into()).await.unwrap().unwrap().header.hash;
    assert_ne!(json!(new_hash.to_string()), orphaned_hash, "the deposit's block was replaced");

    let retraction = event(&receiver, "event.retracted", |d| d["RetractedEventId"] == first["Id"]).await;
    assert_eq!(retraction["Data"]["RetractedType"], "deposit.completed");
    assert_eq!(retraction["Data"]["BlockNumber"], block);
    assert_eq!(retraction["Data"]["BlockHash"], orphaned_hash);
    assert_eq!(retraction["Data"]["LogIndex"], first["Data"]["LogIndex"]);
    let canonical = event(&receiver, "deposit.completed", |d| {
        d["Account"] == cs(user.address()) && d["BlockHash"] != orphaned_hash
    })
    .await;
    assert_ne!(canonical["Id"], first["Id"]);
    assert_eq!(canonical["Data"]["BlockHash"], new_hash.to_string());
    for field in ["BlockNumber", "LogIndex", "TransactionHash", "AmountRaw"] {
        assert_eq!(canonical["Data"][field], first["Data"][field], "{field}");
    }
    let order: Vec<Value> =
        receiver.got().iter().map(|r| serde_json::from_str::<Value>(&r.body).unwrap()["Id"].clone()).collect();
    let at = |id: &Value| order.iter().position(|x| x == id).unwrap();
    assert!(at(&first["Id"]) < at(&retraction["Id"]) && at(&retraction["Id"]) < at(&canonical["Id"]), "{order:?}");
    // Delivered once each: the orphaned event is never sent again.
    assert_eq!(order.iter().filter(|x| **x == first["Id"]).count(), 1, "{order:?}");

    // The cursor moves back in the rollback's own transaction: with the indexer stopped (so
    // nothing re-ingests), a rollback below the deposit leaves the cursor at or below its block.
    let aborted = indexer.shutdown(Duration::from_secs(10)).await;
    assert!(aborted.is_empty(), "the indexer did not stop: {aborted:?}");
    let scope = streampay_relayer::store::index::Scope { chain_id: app.chain_id, contract: app.contract };
    let (cursor_before,): (i64,) =
        sqlx::query_as("SELECT block_number FROM webhook_cursors").fetch_one(app.store.pool()).await.unwrap();
    assert!(cursor_before >= block as i64, "the cursor was past the deposit: {cursor_before}");
    let (ancestor, _) = streampay_relayer::store::index::rollback(app.store.pool(), scope, block - 1).await.unwrap();
    let (cursor, log): (i64, i32) = sqlx::query_as("SELECT block_number, log_index FROM webhook_cursors")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert!(cursor <= ancestor as i64, "cursor {cursor}:{log} after a rollback to {ancestor}");
    let canonical_id: i64 = canonical["Id"].as_str().unwrap().trim_start_matches("evt_").parse().unwrap();
    let (orphaned, key): (bool, String) =
        sqlx::query_as("SELECT orphaned_at IS NOT NULL, event_key FROM webhook_events WHERE id = $1")
            .bind(canonical_id)
            .fetch_one(app.store.pool())
            .await
            .unwrap();
    assert!(orphaned && key.contains(":orphaned:"), "{key}");
    event(&receiver, "event.retracted", |d| d["RetractedEventId"] == canonical["Id"]).await;
}

#[tokio::test]
async fn a_backlog_of_events_fans_out_in_one_pass_to_exactly_the_endpoints_each_concerns_in_event_order() {
    // The dispatcher starts only once the outbox holds a backlog: relayed calls' `transaction.mined`
    // and two sponsors' `sponsor.balance_low`, interleaved. One fan-out pass builds them all.
    let app = spawn_app_with(settings(test_settings())).await;
    let mine = Receiver::start(&[], 200).await;
    let theirs = Receiver::start(&[], 200).await;
    let both = ["transaction.mined", "sponsor.balance_low"];
    register(&app, &mine.url, &both).await;
    // Another key, which may use the other sponsor only: none of this key's transactions and only
    // the other sponsor's alert are its endpoint's.
    let other = app.store.create_api_key("other", &[app.other_sponsor], true).await.unwrap();
    let their_endpoint = register_with_key(&app, &other.key, &theirs.url, &both).await;
    let (pool, chain_id) = (app.store.pool().clone(), app.chain_id as i64);
    let alert = |sponsor: alloy::primitives::Address| {
        let pool = pool.clone();
        async move {
            let mut conn = pool.acquire().await.unwrap();
            streampay_relayer::store::webhooks::outbox::insert_event(
                &mut conn,
                &format!("test-alert:{sponsor}"),
                chain_id,
                "sponsor.balance_low",
                Some(sponsor),
                None,
                json!({ "Sponsor": sponsor.to_checksum(None) }),
            )
            .await
            .unwrap();
        }
    };
    let user = wallet();
    app.fund(&user, 1).await;
    app.fund(&user, 1).await;
    alert(app.sponsor).await;
    alert(app.other_sponsor).await;
    app.fund(&user, 1).await;
    let pending: Vec<(i64, String, Option<i64>)> =
        sqlx::query_as("SELECT id, type, transaction_id FROM webhook_events WHERE NOT fanned_out ORDER BY id")
            .fetch_all(app.store.pool())
            .await
            .unwrap();
    let mined: Vec<&(i64, String, Option<i64>)> = pending.iter().filter(|e| e.1 == "transaction.mined").collect();
    assert_eq!(mined.len(), 3, "the backlog: {pending:?}");

    let _webhooks = app.start_webhooks();
    let got = mine.wait_for("3 transaction.mined and 1 sponsor.balance_low", 4, |_| true).await;
    let got_theirs = theirs.wait_for("the other sponsor's alert", 1, |_| true).await;
    // In event order: the endpoint's deliveries were written in the order of their events.
    let ids: Vec<i64> = got.iter().map(|v| v["Id"].as_str().unwrap()["evt_".len()..].parse().unwrap()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "deliveries out of event order: {got:#?}");
    let types: Vec<&str> = got.iter().map(|v| v["Type"].as_str().unwrap()).collect();
    assert_eq!(types, ["transaction.mined", "transaction.mined", "sponsor.balance_low", "transaction.mined"]);
    assert_eq!(got[2]["Data"]["Sponsor"], app.sponsor.to_checksum(None));
    // Each transaction event's body is its own transaction's, as stored.
    for (body, event) in got.iter().filter(|v| v["Type"] == "transaction.mined").zip(&mined) {
        assert_eq!(body["Id"], format!("evt_{}", event.0));
        let id = event.2.expect("a transaction event names its transaction");
        let (hash, block): (Vec<u8>, i64) =
            sqlx::query_as("SELECT tx_hash, block_number FROM relay_transactions WHERE id = $1")
                .bind(id)
                .fetch_one(app.store.pool())
                .await
                .unwrap();
        assert_eq!(body["Data"]["TransactionId"], id, "{body}");
        assert_eq!(body["Data"]["TransactionHash"], format!("0x{}", alloy::hex::encode(hash)), "{body}");
        assert_eq!(body["Data"]["BlockNumber"], block, "{body}");
        assert_eq!(body["Data"]["State"], "mined", "{body}");
    }
    assert_eq!(got_theirs.len(), 1, "{got_theirs:#?}");
    assert_eq!(got_theirs[0]["Data"]["Sponsor"], app.other_sponsor.to_checksum(None));
    // The other key's endpoint has that delivery and nothing else; everything was fanned out.
    let (theirs_rows, left): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = $1),
                (SELECT count(*) FROM webhook_events WHERE NOT fanned_out)",
    )
    .bind(their_endpoint)
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!((theirs_rows, left), (1, 0));
}
