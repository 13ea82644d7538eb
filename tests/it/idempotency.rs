//! `Idempotency-Key` on POST: replay, never a second transaction; another body is a 422.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{TestApp, assert_error, internal, spawn_app, wallet};

async fn post_with_key(app: &TestApp, path: &str, body: &Value, key: &str) -> (StatusCode, Value, bool) {
    let resp = app
        .http
        .post(app.url(path))
        .header("X-API-Key", &app.api_key)
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let replayed = resp.headers().get("idempotent-replayed").is_some_and(|v| v == "true");
    (status, resp.json().await.unwrap(), replayed)
}

async fn sponsor_tx_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM relay_transactions").fetch_one(app.store.pool()).await.unwrap()
}

#[tokio::test]
async fn an_execute_retried_with_the_same_key_replays_the_first_answer_and_sends_once() {
    let app = spawn_app().await;
    let user = wallet();
    app.fund(&user, 10).await;
    let before = sponsor_tx_count(&app).await;
    let built = app
        .build("/api/v1/USDC/payments/", &json!({"From": user.address(), "To": wallet().address(), "Amount": "1"}))
        .await;
    let body = app.signed_execute_body(&user, &built).await;
    let (s1, first, replayed1) = post_with_key(&app, "/api/v1/USDC/meta/execute", &body, "pay-42").await;
    assert_eq!(s1, StatusCode::OK, "{first}");
    assert!(!replayed1);
    let (s2, second, replayed2) = post_with_key(&app, "/api/v1/USDC/meta/execute", &body, "pay-42").await;
    assert_eq!(s2, StatusCode::OK, "{second}");
    assert!(replayed2, "marked as a replay");
    assert_eq!(first, second, "the first answer, byte for byte");
    assert_eq!(sponsor_tx_count(&app).await, before + 1, "one transaction");
    assert_eq!(app.balance_of(user.address()).await, internal(9), "paid once");
}

#[tokio::test]
async fn the_same_key_with_another_body_is_422_idempotency_key_reused() {
    let app = spawn_app().await;
    let user = wallet();
    let path = "/api/v1/USDC/payments/";
    let a = json!({"From": user.address(), "To": wallet().address(), "Amount": "1"});
    let b = json!({"From": user.address(), "To": wallet().address(), "Amount": "2"});
    assert_eq!(post_with_key(&app, path, &a, "k1").await.0, StatusCode::OK);
    let (status, body, _) = post_with_key(&app, path, &b, "k1").await;
    assert_error(&(status, body), StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused");
}

#[tokio::test]
async fn a_build_retried_with_the_same_key_hands_out_the_same_nonce() {
    let app = spawn_app().await;
    let user = wallet();
    let body = json!({"From": user.address(), "To": wallet().address(), "Amount": "1"});
    let (_, first, _) = post_with_key(&app, "/api/v1/USDC/payments", &body, "build-1").await;
    let (_, again, replayed) = post_with_key(&app, "/api/v1/USDC/payments", &body, "build-1").await;
    assert!(replayed);
    assert_eq!(first["Transaction"]["Nonce"], again["Transaction"]["Nonce"]);
    // Without the key, a new build is a new call with its own unique nonce.
    let fresh = app.build("/api/v1/USDC/payments", &body).await;
    assert_ne!(fresh["Transaction"]["Nonce"], first["Transaction"]["Nonce"]);
}

#[tokio::test]
async fn keys_are_per_api_key_and_errors_are_replayed_too() {
    let app = spawn_app().await;
    let user = wallet();
    let bad = json!({"From": user.address(), "To": wallet().address(), "Amount": "-1"});
    let (s1, b1, _) = post_with_key(&app, "/api/v1/USDC/payments", &bad, "same").await;
    assert_eq!(s1, StatusCode::BAD_REQUEST);
    let (s2, b2, replayed) = post_with_key(&app, "/api/v1/USDC/payments", &bad, "same").await;
    assert!(replayed && s2 == s1 && b1 == b2);
    // Another API key's "same" is its own.
    let other = app.store.create_api_key("other", &[app.sponsor], true).await.unwrap();
    let good = json!({"From": user.address(), "To": wallet().address(), "Amount": "1"});
    let resp = app
        .http
        .post(app.url("/api/v1/USDC/payments"))
        .header("X-API-Key", &other.key)
        .header("Idempotency-Key", "same")
        .json(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_overlong_key_is_400_invalid_idempotency_key() {
    let app = spawn_app().await;
    let body = json!({"From": wallet().address(), "To": wallet().address(), "Amount": "1"});
    let (status, resp, _) = post_with_key(&app, "/api/v1/USDC/payments", &body, &"x".repeat(256)).await;
    assert_error(&(status, resp), StatusCode::BAD_REQUEST, "invalid_idempotency_key");
}
