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

async fn idempotency_rows(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM idempotency_keys").fetch_one(app.store.pool()).await.unwrap()
}

#[tokio::test]
async fn an_unauthenticated_request_with_an_idempotency_key_writes_nothing() {
    let app = spawn_app().await;
    let body = json!({"From": wallet().address(), "To": wallet().address(), "Amount": "1"});
    for (path, key, want) in [
        ("/api/v1/USDC/payments", "sk_test_not-a-key", StatusCode::UNAUTHORIZED),
        ("/api/v1/nothing-here", "sk_test_not-a-key", StatusCode::NOT_FOUND),
        ("/nothing-here", "sk_test_not-a-key", StatusCode::NOT_FOUND),
    ] {
        let resp = app
            .http
            .post(app.url(path))
            .header("X-API-Key", key)
            .header("Idempotency-Key", "flood-1")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), want, "{path}");
    }
    assert_eq!(idempotency_rows(&app).await, 0, "nothing stored for requests nobody authenticated");
}

#[tokio::test]
async fn a_retry_later_answer_is_not_replayed_and_the_retry_runs() {
    use streampay_relayer::store::SponsorPolicy;
    let app = spawn_app().await;
    let user = wallet();
    app.fund(&user, 10).await;
    let built = app
        .build("/api/v1/USDC/payments/", &json!({"From": user.address(), "To": wallet().address(), "Amount": "1"}))
        .await;
    let body = app.signed_execute_body(&user, &built).await;
    // The sponsor's fee cap is below the network's fee: "retry later".
    let shut = SponsorPolicy { max_fee_per_gas: Some(alloy::primitives::U256::ZERO), ..Default::default() };
    app.store.set_sponsor_policy(app.chain_id, app.sponsor, Some(&shut)).await.unwrap();
    let (status, first, _) = post_with_key(&app, "/api/v1/USDC/meta/execute", &body, "later-1").await;
    assert_error(&(status, first), StatusCode::UNPROCESSABLE_ENTITY, "sponsor_fee_cap_exceeded");
    assert_eq!(idempotency_rows(&app).await, 0, "a retry-later answer is not kept");
    // Later the cap is lifted: the same request with the same key runs for real.
    app.store.set_sponsor_policy(app.chain_id, app.sponsor, None).await.unwrap();
    let (status, second, replayed) = post_with_key(&app, "/api/v1/USDC/meta/execute", &body, "later-1").await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert!(!replayed);
    assert_eq!(app.balance_of(user.address()).await, internal(9), "paid once");
}

#[tokio::test]
async fn a_webhook_secret_is_shown_once_and_never_stored_for_replay() {
    let app = spawn_app().await;
    let body = json!({"Url": "https://hooks.example.com/streampay", "Events": ["transaction.mined"]});
    let (status, first, _) = post_with_key(&app, "/api/v1/webhooks", &body, "hook-1").await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert!(first["Secret"].as_str().is_some_and(|s| s.starts_with("whsec_")), "{first}");
    let stored: Vec<u8> = sqlx::query_scalar("SELECT body FROM idempotency_keys WHERE idempotency_key = 'hook-1'")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert!(!String::from_utf8_lossy(&stored).contains("whsec_"), "the secret is not kept");
    let (status, replay, replayed) = post_with_key(&app, "/api/v1/webhooks", &body, "hook-1").await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(replayed);
    assert_eq!(replay["Id"], first["Id"], "the same endpoint, not a second one");
    assert_eq!(replay["Secret"], Value::Null, "{replay}");
}

#[tokio::test]
async fn an_idempotency_key_expires_after_its_ttl_and_is_pruned() {
    let app = spawn_app().await;
    let user = wallet();
    let path = "/api/v1/USDC/payments/";
    let a = json!({"From": user.address(), "To": wallet().address(), "Amount": "1"});
    let b = json!({"From": user.address(), "To": wallet().address(), "Amount": "2"});
    assert_eq!(post_with_key(&app, path, &a, "old").await.0, StatusCode::OK);
    assert_eq!(post_with_key(&app, path, &a, "young").await.0, StatusCode::OK);
    sqlx::query("UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE idempotency_key = 'old'")
        .execute(app.store.pool())
        .await
        .unwrap();
    // Past the TTL the key is free again: another body is a new request, not a reuse.
    let (status, resp, replayed) = post_with_key(&app, path, &b, "old").await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert!(!replayed);
    sqlx::query("UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE idempotency_key = 'old'")
        .execute(app.store.pool())
        .await
        .unwrap();
    let ttl = streampay_relayer::api::idempotency::TTL;
    assert_eq!(app.store.prune_idempotency(ttl).await.unwrap(), 1, "the expired entry goes");
    assert_eq!(idempotency_rows(&app).await, 1, "the young one stays");
}
