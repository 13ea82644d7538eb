//! API keys (401) and the sponsors a key may use (403). The key lifecycle (scopes, expiry,
//! allowlists, rate limits, rotation, the admin API) is in `keys`.

use reqwest::StatusCode;
use serde_json::{Value, json};
use streampay_relayer::{api::auth::InvalidKeyLimiter, store::parse_cidr};

use crate::harness::{assert_error, serve_settings, spawn_app, spawn_app_with, wallet};

#[tokio::test]
async fn requests_without_a_key_are_401_missing_api_key() {
    let app = spawn_app().await;
    assert_error(&app.get_with_key("/api/v1/contracts", None).await, StatusCode::UNAUTHORIZED, "missing_api_key");
    let body = json!({"From": wallet().address(), "Amount": "1"});
    assert_error(
        &app.post_with_key("/api/v1/USDC/payments/deposit", None, &body).await,
        StatusCode::UNAUTHORIZED,
        "missing_api_key",
    );
}

#[tokio::test]
async fn unknown_keys_are_401_invalid_api_key() {
    let app = spawn_app().await;
    let forged = format!("sp_test_{}", "0".repeat(64));
    assert_error(
        &app.get_with_key("/api/v1/contracts", Some(&forged)).await,
        StatusCode::UNAUTHORIZED,
        "invalid_api_key",
    );
}

#[tokio::test]
async fn revoked_keys_are_401_key_revoked() {
    let app = spawn_app().await;
    assert_eq!(app.get("/api/v1/contracts").await.0, StatusCode::OK);
    assert!(app.store.revoke_api_key(app.api_key_id).await.unwrap());
    assert_error(&app.get("/api/v1/contracts").await, StatusCode::UNAUTHORIZED, "key_revoked");
}

#[tokio::test]
async fn keys_are_stored_only_as_hashes() {
    let app = spawn_app().await;
    let rows: Vec<(Vec<u8>,)> =
        sqlx::query_as("SELECT key_hash FROM api_keys").fetch_all(app.store.pool()).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0, streampay_relayer::store::hash_api_key(&app.api_key).to_vec());
    let dump: Vec<(String,)> =
        sqlx::query_as("SELECT row_to_json(k)::text FROM api_keys k").fetch_all(app.store.pool()).await.unwrap();
    assert!(!dump[0].0.contains(&app.api_key[8..]), "the secret part of the key must not be stored");
}

#[tokio::test]
async fn a_sponsor_the_key_may_not_use_is_403_sponsor_not_allowed() {
    let app = spawn_app().await;
    let body = json!({"From": wallet().address(), "Amount": "1", "Sponsor": app.other_sponsor});
    assert_error(&app.post("/api/v1/USDC/payments/deposit", &body).await, StatusCode::FORBIDDEN, "sponsor_not_allowed");
    let exec = json!({"From": wallet().address(), "Signature": "0x00", "Data": "0x00", "Nonce": 0, "Deadline": 1,
                      "Sponsor": app.other_sponsor});
    assert_error(&app.post("/api/v1/USDC/meta/execute", &exec).await, StatusCode::FORBIDDEN, "sponsor_not_allowed");
}

#[tokio::test]
async fn a_sponsor_allowed_but_not_configured_is_422_sponsor_unavailable() {
    let app = spawn_app().await;
    let stranger = wallet().address();
    let key = app.store.create_api_key("elsewhere", &[stranger], true).await.unwrap();
    let body = json!({"From": wallet().address(), "Amount": "1"});
    assert_error(
        &app.post_with_key("/api/v1/USDC/payments/deposit", Some(&key.key), &body).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "sponsor_unavailable",
    );
}

#[tokio::test]
async fn the_default_sponsor_is_the_keys_first() {
    let app = spawn_app().await;
    let built = app.build("/api/v1/USDC/payments/deposit", &json!({"From": wallet().address(), "Amount": "1"})).await;
    assert_eq!(built["Sponsor"], json!(app.sponsor.to_checksum(None)));
}

#[tokio::test]
async fn a_flood_of_unknown_keys_from_one_address_is_429_too_many_invalid_keys_without_a_lookup() {
    let mut settings = serve_settings();
    // Clients told apart by X-Forwarded-For from the local proxy.
    settings.auth.trusted_proxies = vec![parse_cidr("127.0.0.1/32").unwrap()];
    settings.auth.invalid_keys = InvalidKeyLimiter::per_minute(5);
    let app = spawn_app_with(settings).await;
    let call = |key: String, client: &'static str| {
        let req = app.http.get(app.url("/api/v1/contracts")).header("X-API-Key", key).header("X-Forwarded-For", client);
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status();
            let retry_after = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
            (status, retry_after, resp.json::<Value>().await.unwrap())
        }
    };
    let random = || format!("sk_test_{}", alloy::hex::encode(wallet().to_bytes()));
    let (attacker, neighbour) = ("203.0.113.7", "203.0.113.8");
    // A valid key used from the attacker's address beforehand (now cached, once the key cache
    // listens for changes).
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !app.state.key_cache().expect("serve's key cache").active() {
        assert!(tokio::time::Instant::now() < deadline, "the key cache never started listening");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(call(app.api_key.clone(), attacker).await.0, StatusCode::OK);
    for _ in 0..5 {
        let (status, _, body) = call(random(), attacker).await;
        assert_error(&(status, body), StatusCode::UNAUTHORIZED, "invalid_api_key");
    }
    let (status, retry_after, body) = call(random(), attacker).await;
    assert_error(&(status, body), StatusCode::TOO_MANY_REQUESTS, "too_many_invalid_keys");
    let wait: u64 = retry_after.expect("Retry-After").parse().unwrap();
    assert!((1..=12).contains(&wait), "one refused key per 12 s: {wait}");
    // A repeated bad key is refused the same way (the negative cache answers, the budget counts it).
    let (status, _, body) = call(format!("sp_test_{}", "0".repeat(64)), attacker).await;
    assert_error(&(status, body), StatusCode::TOO_MANY_REQUESTS, "too_many_invalid_keys");
    // The address's valid, cached key still works; another address is not affected.
    assert_eq!(call(app.api_key.clone(), attacker).await.0, StatusCode::OK);
    let (status, _, body) = call(random(), neighbour).await;
    assert_error(&(status, body), StatusCode::UNAUTHORIZED, "invalid_api_key");

    // No lookup is made for the blocked address: with the database gone, it still gets its 429,
    // where a lookup answers 503.
    app.state.store.pool().close().await;
    let (status, _, body) = call(random(), neighbour).await;
    assert_error(&(status, body), StatusCode::SERVICE_UNAVAILABLE, "database_unavailable");
    let (status, _, body) = call(random(), attacker).await;
    assert_error(&(status, body), StatusCode::TOO_MANY_REQUESTS, "too_many_invalid_keys");
}
