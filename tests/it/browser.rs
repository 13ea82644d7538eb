//! Credentials for web pages (docs/keys.md, "Keys in the browser"): CORS per key and for the
//! public routes, publishable keys and what they can never do, client tokens bound to a signer,
//! operations and ten minutes. Real Anvil, real Postgres, real signatures.

use std::time::Duration;

use alloy::signers::local::PrivateKeySigner;
use reqwest::{Method, StatusCode, header::HeaderMap};
use serde_json::{Value, json};
use streampay_relayer::{api::auth::mint_admin_token, secret::Secret};

use crate::harness::{TestApp, assert_error, internal, serve_settings, spawn_app_with, tokens, wallet};

const SECRET: &str = "test-admin-secret-0123456789abcdef";
const APP: &str = "https://app.example";
const SHOP: &str = "https://shop.example";
const EVIL: &str = "https://evil.example";
const DEPOSIT: &str = "/api/v1/USDC/payments/deposit";
const EXECUTE: &str = "/api/v1/USDC/meta/execute";

async fn spawn() -> TestApp {
    let mut settings = serve_settings();
    settings.auth.admin_jwt_secret = Some(Secret::new(SECRET));
    spawn_app_with(settings).await
}

/// An answer: status, JSON body (`null` when empty), headers.
struct Answer {
    status: StatusCode,
    body: Value,
    headers: HeaderMap,
}

impl Answer {
    fn pair(&self) -> (StatusCode, Value) {
        (self.status, self.body.clone())
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

async fn call(
    app: &TestApp,
    method: Method,
    base: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Answer {
    let mut req = app.http.request(method, format!("{base}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("non-JSON body ({status}): {text}"))
    };
    Answer { status, body, headers }
}

async fn admin_create(app: &TestApp, body: Value) -> (StatusCode, Value) {
    let token = mint_admin_token(SECRET, Duration::from_secs(600), "tests").unwrap();
    let bearer = format!("Bearer {token}");
    call(app, Method::POST, &app.base, "/api/v1/admin/keys", &[("Authorization", &bearer)], Some(&body)).await.pair()
}

async fn created_key(app: &TestApp, body: Value) -> (i64, String) {
    let (status, created) = admin_create(app, body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    (created["Id"].as_i64().unwrap(), created["Key"].as_str().unwrap().to_string())
}

async fn revoke(app: &TestApp, id: i64) {
    let token = mint_admin_token(SECRET, Duration::from_secs(600), "tests").unwrap();
    let bearer = format!("Bearer {token}");
    let path = format!("/api/v1/admin/keys/{id}/revoke");
    assert_eq!(
        call(app, Method::POST, &app.base, &path, &[("Authorization", &bearer)], None).await.status,
        StatusCode::OK
    );
}

async fn preflight(app: &TestApp, base: &str, path: &str, origin: &str) -> Answer {
    let headers = [
        ("Origin", origin),
        ("Access-Control-Request-Method", "POST"),
        ("Access-Control-Request-Headers", "x-api-key,content-type,idempotency-key"),
    ];
    call(app, Method::OPTIONS, base, path, &headers, None).await
}

/// Signs a build answer as `signer` and relays it with `auth` headers.
async fn execute(app: &TestApp, signer: &PrivateKeySigner, built: &Value, auth: &[(&str, &str)]) -> Answer {
    let body = app.signed_execute_body(signer, built).await;
    call(app, Method::POST, &app.base, EXECUTE, auth, Some(&body)).await
}

#[tokio::test]
async fn preflights_and_answers_carry_cors_headers_only_for_listed_origins() {
    let app = spawn().await;
    assert_error(
        &admin_create(&app, json!({"name": "bad", "allowed_origins": ["https://app.example/path"]})).await,
        StatusCode::BAD_REQUEST,
        "invalid_origin",
    );
    assert_error(
        &admin_create(&app, json!({"name": "bad", "allowed_origins": ["*"]})).await,
        StatusCode::BAD_REQUEST,
        "invalid_origin",
    );
    let (id, key) =
        created_key(&app, json!({"name": "web", "allowed_origins": [APP], "scopes": ["read", "relay"]})).await;

    // Preflight from the listed origin: every header the API takes, cached for 10 minutes.
    let ok = preflight(&app, &app.base, DEPOSIT, APP).await;
    assert_eq!(ok.status, StatusCode::NO_CONTENT);
    assert_eq!(ok.header("access-control-allow-origin"), Some(APP));
    assert!(ok.header("access-control-allow-methods").unwrap().contains("POST"));
    let allowed = ok.header("access-control-allow-headers").unwrap().to_ascii_lowercase();
    for h in ["x-api-key", "authorization", "content-type", "idempotency-key", "reference", "prefer"] {
        assert!(allowed.contains(h), "{h} in {allowed}");
    }
    assert_eq!(ok.header("access-control-max-age"), Some("600"));
    // From an origin no key lists: refused, and nothing a browser would accept.
    let refused = preflight(&app, &app.base, DEPOSIT, EVIL).await;
    assert_error(&refused.pair(), StatusCode::FORBIDDEN, "origin_not_allowed");
    assert_eq!(refused.header("access-control-allow-origin"), None);

    // The actual request from the listed origin: readable, with the API's headers exposed.
    let who = wallet().address();
    let build = json!({"From": who, "Amount": "1"});
    let answer =
        call(&app, Method::POST, &app.base, DEPOSIT, &[("X-API-Key", &key), ("Origin", APP)], Some(&build)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.header("access-control-allow-origin"), Some(APP));
    let exposed = answer.header("access-control-expose-headers").unwrap();
    for h in ["X-Api-Version", "X-Request-Id", "Retry-After"] {
        assert!(exposed.contains(h), "{h} in {exposed}");
    }
    assert!(answer.headers.get_all("vary").iter().any(|v| v.to_str().unwrap().contains("Origin")));
    // An error of that key from that origin is readable too.
    let denied =
        call(&app, Method::GET, &app.base, "/api/v1/webhooks", &[("X-API-Key", &key), ("Origin", APP)], None).await;
    assert_error(&denied.pair(), StatusCode::FORBIDDEN, "insufficient_scope");
    assert_eq!(denied.header("access-control-allow-origin"), Some(APP));
    // The same key sent by another page: refused, unreadable.
    let other =
        call(&app, Method::POST, &app.base, DEPOSIT, &[("X-API-Key", &key), ("Origin", EVIL)], Some(&build)).await;
    assert_error(&other.pair(), StatusCode::FORBIDDEN, "origin_not_allowed");
    assert_eq!(other.header("access-control-allow-origin"), None);
    // A server key without origins answers servers as before, never with CORS headers.
    let server =
        call(&app, Method::POST, &app.base, DEPOSIT, &[("X-API-Key", &app.api_key), ("Origin", EVIL)], Some(&build))
            .await;
    assert_eq!(server.status, StatusCode::OK, "{}", server.body);
    assert_eq!(server.header("access-control-allow-origin"), None);

    // Public routes: any page by default.
    let health = call(&app, Method::GET, &app.base, "/health", &[("Origin", EVIL)], None).await;
    assert_eq!(health.header("access-control-allow-origin"), Some("*"));
    let doc = preflight(&app, &app.base, "/openapi.json", EVIL).await;
    assert_eq!((doc.status, doc.header("access-control-allow-origin")), (StatusCode::NO_CONTENT, Some("*")));
    // ... or only the configured ones.
    let mut settings = serve_settings();
    settings.auth.cors.public_origins = vec!["https://docs.example".into()];
    let restricted = app.instance_with(settings).await;
    let docs = call(&app, Method::GET, &restricted, "/", &[("Origin", "https://docs.example")], None).await;
    assert_eq!(docs.header("access-control-allow-origin"), Some("https://docs.example"));
    let stranger = call(&app, Method::GET, &restricted, "/", &[("Origin", EVIL)], None).await;
    assert_eq!(stranger.status, StatusCode::OK);
    assert_eq!(stranger.header("access-control-allow-origin"), None);

    // Once the only key listing an origin is revoked, its preflights are refused.
    revoke(&app, id).await;
    assert_error(&preflight(&app, &app.base, DEPOSIT, APP).await.pair(), StatusCode::FORBIDDEN, "origin_not_allowed");
}

/// A publishable key as a shop's page would hold it: deposits on USDC only, from the shop.
fn publishable(name: &str, daily_budget: &str) -> Value {
    json!({
        "Name": name, "Kind": "publishable", "AllowedOrigins": [SHOP], "AllowedContracts": ["USDC"],
        "AllowedOperations": ["deposit"], "RateLimitPerMinute": 100, "SignerRateLimitPerMinute": 1,
        "DailyBudget": daily_budget, "SignerDailyBudget": "0.5",
    })
}

#[tokio::test]
async fn a_publishable_key_builds_and_relays_only_what_it_lists() {
    let app = spawn().await;
    // Every bound is mandatory, and only `relay`.
    let (status, body) =
        admin_create(&app, json!({"name": "page", "kind": "publishable", "allowed_origins": [SHOP]})).await;
    assert_error(&(status, body.clone()), StatusCode::BAD_REQUEST, "invalid_key_kind");
    assert!(body["error"]["message"].as_str().unwrap().contains("SignerDailyBudget"), "{body}");
    let mut with_read = publishable("page", "1");
    with_read["Scopes"] = json!(["read", "relay"]);
    assert_error(&admin_create(&app, with_read).await, StatusCode::BAD_REQUEST, "invalid_key_kind");
    let mut unknown = publishable("page", "1");
    unknown["AllowedContracts"] = json!(["DAI"]);
    assert_error(&admin_create(&app, unknown).await, StatusCode::NOT_FOUND, "unknown_contract");

    let (status, created) = admin_create(&app, publishable("page", "1")).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let pk = created["Key"].as_str().unwrap().to_string();
    assert!(pk.starts_with("pk_test_"), "{pk}");
    assert_eq!((created["Kind"].as_str(), created["Scopes"].clone()), (Some("publishable"), json!(["relay"])));
    assert_eq!(created["Sponsors"].as_array().unwrap().len(), 1, "one sponsor unless listed: {created}");
    let page = [("X-API-Key", pk.as_str()), ("Origin", SHOP)];

    let user = wallet();
    app.mint(user.address(), tokens(10)).await;
    let deposit = json!({"From": user.address(), "Amount": "4"});
    // Only from its origins.
    let no_origin = call(&app, Method::POST, &app.base, DEPOSIT, &[("X-API-Key", &pk)], Some(&deposit)).await;
    assert_error(&no_origin.pair(), StatusCode::FORBIDDEN, "origin_not_allowed");
    let elsewhere =
        call(&app, Method::POST, &app.base, DEPOSIT, &[("X-API-Key", &pk), ("Origin", EVIL)], Some(&deposit)).await;
    assert_error(&elsewhere.pair(), StatusCode::FORBIDDEN, "origin_not_allowed");

    // What it lists works end to end, and the page can read the answers.
    let built = call(&app, Method::POST, &app.base, DEPOSIT, &page, Some(&deposit)).await;
    assert_eq!(built.status, StatusCode::OK, "{}", built.body);
    assert_eq!(built.header("access-control-allow-origin"), Some(SHOP));
    let done = execute(&app, &user, &built.body, &page).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert_eq!(done.header("access-control-allow-origin"), Some(SHOP));
    assert_eq!(app.balance_of(user.address()).await, internal(4));

    // Everything else is refused.
    let sponsor_elsewhere = json!({"From": user.address(), "Amount": "1", "Sponsor": app.other_sponsor});
    let mint_token = json!({"Signer": user.address()});
    let forbidden: Vec<(Method, &str, Option<&Value>, &str)> = vec![
        (Method::GET, "/api/v1/transactions", None, "insufficient_scope"),
        (Method::GET, "/api/v1/transactions/summary", None, "insufficient_scope"),
        (
            Method::GET,
            "/api/v1/USDC/payments/balance/0x0000000000000000000000000000000000000001",
            None,
            "insufficient_scope",
        ),
        (Method::GET, "/api/v1/webhooks", None, "insufficient_scope"),
        (Method::POST, "/api/v1/webhooks", Some(&deposit), "insufficient_scope"),
        (Method::GET, "/api/v1/admin/keys", None, "insufficient_scope"),
        (Method::POST, "/api/v1/admin/keys", Some(&deposit), "insufficient_scope"),
        (Method::POST, "/api/v1/auth/token", Some(&mint_token), "operation_not_allowed"),
        (Method::POST, "/api/v1/USDC/payments/withdraw", Some(&deposit), "operation_not_allowed"),
        (Method::POST, "/api/v1/USDC/payments", Some(&deposit), "operation_not_allowed"),
        (Method::POST, "/api/v1/USDC/subscriptions", Some(&deposit), "operation_not_allowed"),
        (Method::POST, "/api/v1/OTHER/payments/deposit", Some(&deposit), "contract_not_allowed"),
        (Method::POST, DEPOSIT, Some(&sponsor_elsewhere), "sponsor_not_allowed"),
    ];
    for (method, path, body, code) in forbidden {
        let answer = call(&app, method.clone(), &app.base, path, &page, body).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{method} {path}: {}", answer.body);
        assert_eq!(answer.body["error"]["code"], code, "{method} {path}: {}", answer.body);
    }
    // A call of an operation it does not list, built elsewhere, is not relayed through it.
    let payer = wallet();
    app.fund(&payer, 5).await;
    let pay = app
        .build("/api/v1/USDC/payments", &json!({"From": payer.address(), "To": user.address(), "Amount": "1"}))
        .await;
    assert_error(&execute(&app, &payer, &pay, &page).await.pair(), StatusCode::FORBIDDEN, "operation_not_allowed");

    // One relayed call per signer per minute under this key.
    let again =
        call(&app, Method::POST, &app.base, DEPOSIT, &page, Some(&json!({"From": user.address(), "Amount": "1"})))
            .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    let limited = execute(&app, &user, &again.body, &page).await;
    assert_error(&limited.pair(), StatusCode::TOO_MANY_REQUESTS, "signer_rate_limited");
    assert!(limited.header("retry-after").is_some_and(|s| s.parse::<u64>().unwrap() >= 1));
    assert_eq!(limited.header("access-control-allow-origin"), Some(SHOP));

    // Its own daily budget binds below the relayer's: one wei a day admits nothing.
    let (_, tiny) = created_key(&app, publishable("tiny", "0.000000000000000001")).await;
    let other = wallet();
    app.mint(other.address(), tokens(5)).await;
    let tiny_page = [("X-API-Key", tiny.as_str()), ("Origin", SHOP)];
    let built = call(
        &app,
        Method::POST,
        &app.base,
        DEPOSIT,
        &tiny_page,
        Some(&json!({"From": other.address(), "Amount": "1"})),
    )
    .await;
    assert_eq!(built.status, StatusCode::OK, "{}", built.body);
    assert_error(
        &execute(&app, &other, &built.body, &tiny_page).await.pair(),
        StatusCode::TOO_MANY_REQUESTS,
        "key_daily_budget_exceeded",
    );
    assert_eq!(app.balance_of(other.address()).await, alloy::primitives::U256::ZERO);
}

#[tokio::test]
async fn client_tokens_are_bound_to_one_signer_their_operations_and_ten_minutes() {
    let app = spawn().await;
    let (key_id, server_key) = created_key(
        &app,
        json!({"name": "backend", "allowed_origins": [APP], "scopes": ["read", "relay"], "rate_limit_per_minute": 12}),
    )
    .await;
    let server = [("X-API-Key", server_key.as_str())];
    let user = wallet();
    app.mint(user.address(), tokens(10)).await;
    let mint = |body: Value| {
        let app = &app;
        async move { call(app, Method::POST, &app.base, "/api/v1/auth/token", &server, Some(&body)).await }
    };
    assert_error(
        &mint(json!({"Signer": user.address(), "ExpiresIn": 601})).await.pair(),
        StatusCode::BAD_REQUEST,
        "invalid_token_ttl",
    );
    assert_error(
        &mint(json!({"Signer": user.address(), "Operations": ["steal"]})).await.pair(),
        StatusCode::BAD_REQUEST,
        "invalid_operation",
    );
    assert_error(&mint(json!({"Operations": ["deposit"]})).await.pair(), StatusCode::BAD_REQUEST, "missing_field");
    let minted = mint(json!({"Signer": user.address(), "Operations": ["deposit"]})).await;
    assert_eq!(minted.status, StatusCode::CREATED, "{}", minted.body);
    let token = minted.body["Token"].as_str().unwrap().to_string();
    assert!(token.starts_with("ct_"), "{token}");
    assert_eq!(minted.body["Operations"], json!(["deposit"]));
    assert_eq!(minted.body["Signer"], user.address().to_checksum(None));
    let ttl = minted.body["ExpiresIn"].as_u64().unwrap();
    assert!((595..=600).contains(&ttl), "{ttl}");

    // Validation spends nothing: far more checks than the key's 12 requests a minute (which this
    // test's 11 other requests of the key and its tokens stay within).
    let bearer = format!("Bearer {token}");
    for _ in 0..30 {
        let v = call(&app, Method::GET, &app.base, "/api/v1/auth/token/validate", &[("Authorization", &bearer)], None)
            .await;
        assert_eq!(v.status, StatusCode::OK, "{}", v.body);
        assert_eq!((v.body["Valid"].as_bool(), v.body["Operations"].clone()), (Some(true), json!(["deposit"])));
    }
    let with_key = call(&app, Method::GET, &app.base, "/api/v1/auth/token/validate", &server, None).await;
    assert_error(&with_key.pair(), StatusCode::UNAUTHORIZED, "invalid_client_token");
    let junk = format!("Bearer ct_{}", "0".repeat(64));
    let unknown =
        call(&app, Method::GET, &app.base, "/api/v1/auth/token/validate", &[("Authorization", &junk)], None).await;
    assert_error(&unknown.pair(), StatusCode::UNAUTHORIZED, "invalid_client_token");

    // The page: a deposit of its own signer, read from its origin (the key's).
    let page = [("Authorization", bearer.as_str()), ("Origin", APP)];
    let deposit = json!({"From": user.address(), "Amount": "3"});
    let built = call(&app, Method::POST, &app.base, DEPOSIT, &page, Some(&deposit)).await;
    assert_eq!(built.status, StatusCode::OK, "{}", built.body);
    assert_eq!(built.header("access-control-allow-origin"), Some(APP));
    let done = execute(&app, &user, &built.body, &page).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert_eq!(app.balance_of(user.address()).await, internal(3));

    // Nothing else: another signer, another operation, reads, minting.
    let stranger = wallet();
    let other_signer =
        call(&app, Method::POST, &app.base, DEPOSIT, &page, Some(&json!({"From": stranger.address(), "Amount": "1"})))
            .await;
    assert_error(&other_signer.pair(), StatusCode::FORBIDDEN, "signer_not_allowed");
    let withdraw = call(&app, Method::POST, &app.base, "/api/v1/USDC/payments/withdraw", &page, Some(&deposit)).await;
    assert_error(&withdraw.pair(), StatusCode::FORBIDDEN, "operation_not_allowed");
    let path = format!("/api/v1/USDC/payments/balance/{}", user.address());
    assert_error(
        &call(&app, Method::GET, &app.base, &path, &page, None).await.pair(),
        StatusCode::FORBIDDEN,
        "operation_not_allowed",
    );
    let again =
        call(&app, Method::POST, &app.base, "/api/v1/auth/token", &page, Some(&json!({"Signer": user.address()})))
            .await;
    assert_error(&again.pair(), StatusCode::FORBIDDEN, "operation_not_allowed");

    // A token expires (waited on, bounded), and dies with its key.
    let short = mint(json!({"Signer": user.address(), "ExpiresIn": 1})).await;
    assert_eq!(short.status, StatusCode::CREATED, "{}", short.body);
    let short_bearer = format!("Bearer {}", short.body["Token"].as_str().unwrap());
    let end = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let v = call(
            &app,
            Method::GET,
            &app.base,
            "/api/v1/auth/token/validate",
            &[("Authorization", &short_bearer)],
            None,
        )
        .await;
        if v.status == StatusCode::UNAUTHORIZED {
            assert_error(&v.pair(), StatusCode::UNAUTHORIZED, "client_token_expired");
            break;
        }
        assert_eq!(v.status, StatusCode::OK, "{}", v.body);
        assert!(tokio::time::Instant::now() < end, "a 1-second token still validates after 15 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    revoke(&app, key_id).await;
    let dead =
        call(&app, Method::GET, &app.base, "/api/v1/auth/token/validate", &[("Authorization", &bearer)], None).await;
    assert_error(&dead.pair(), StatusCode::UNAUTHORIZED, "key_revoked");
}
