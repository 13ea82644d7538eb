//! The in-memory key cache `serve` runs with: it answers from memory, and a change to a key made
//! by any process (here: straight in the database, as another replica would) reaches it through
//! the trigger's `NOTIFY`, promptly and for good.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use streampay_relayer::api::Settings;

use crate::harness::{TestApp, assert_error, spawn_app_with, wallet};

async fn cached_app() -> TestApp {
    let mut settings = Settings { receipt_timeout: Duration::from_secs(30), ..crate::harness::serve_settings() };
    settings.auth.key_cache = true;
    let app = spawn_app_with(settings).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !app.state.key_cache().expect("enabled").active() {
        assert!(tokio::time::Instant::now() < deadline, "key cache listener never connected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    app
}

/// Polls `path` until it answers `want`, then checks it keeps answering that.
async fn becomes(app: &TestApp, path: &str, want: StatusCode) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = app.get(path).await;
        if status == want {
            break;
        }
        assert_eq!(status, StatusCode::OK, "only the old answer may be seen meanwhile: {body}");
        assert!(tokio::time::Instant::now() < deadline, "the cache kept the old answer for {path}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for _ in 0..10 {
        assert_eq!(app.get(path).await.0, want, "{path} went back to the old answer");
    }
}

#[tokio::test]
async fn a_key_revoked_elsewhere_stops_working_at_once() {
    let app = cached_app().await;
    assert_eq!(app.get("/api/v1/contracts").await.0, StatusCode::OK);
    // Another replica revokes it: this process only hears the NOTIFY.
    app.store.revoke_key(app.api_key_id).await.unwrap();
    becomes(&app, "/api/v1/contracts", StatusCode::UNAUTHORIZED).await;
    assert_error(&app.get("/api/v1/contracts").await, StatusCode::UNAUTHORIZED, "key_revoked");
}

#[tokio::test]
async fn answers_come_from_memory_until_a_key_changes() {
    let app = cached_app().await;
    let build = json!({"From": wallet().address(), "To": wallet().address(), "Amount": "1"});
    assert_eq!(app.post("/api/v1/USDC/payments/", &build).await.0, StatusCode::OK);

    // A change the triggers do not announce is not seen: the key is served from memory.
    let pool = app.store.pool();
    sqlx::query("ALTER TABLE api_keys DISABLE TRIGGER api_keys_changed").execute(pool).await.unwrap();
    sqlx::query("UPDATE api_keys SET scopes = '{read}' WHERE id = $1")
        .bind(app.api_key_id)
        .execute(pool)
        .await
        .unwrap();
    assert_eq!(app.post("/api/v1/USDC/payments/", &build).await.0, StatusCode::OK, "served from the cache");

    // Any announced change to the keys table clears it.
    sqlx::query("ALTER TABLE api_keys ENABLE TRIGGER api_keys_changed").execute(pool).await.unwrap();
    sqlx::query("UPDATE api_keys SET name = name WHERE id = $1").bind(app.api_key_id).execute(pool).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let resp = app.post("/api/v1/USDC/payments/", &build).await;
        if resp.0 == StatusCode::FORBIDDEN {
            assert_error(&resp, StatusCode::FORBIDDEN, "insufficient_scope");
            break;
        }
        assert_eq!(resp.0, StatusCode::OK, "{}", resp.1);
        assert!(tokio::time::Instant::now() < deadline, "the cache kept the old scopes");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A key that expires is dropped by its own deadline, with no notification needed.
    sqlx::query("UPDATE api_keys SET scopes = '{read,relay}' WHERE id = $1")
        .bind(app.api_key_id)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("ALTER TABLE api_keys DISABLE TRIGGER api_keys_changed").execute(pool).await.unwrap();
    sqlx::query("UPDATE api_keys SET expires_at = now() + interval '1 second' WHERE id = $1")
        .bind(app.api_key_id)
        .execute(pool)
        .await
        .unwrap();
    becomes(&app, "/api/v1/contracts", StatusCode::OK).await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_error(&app.get("/api/v1/contracts").await, StatusCode::UNAUTHORIZED, "key_expired");
}
