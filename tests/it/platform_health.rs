//! `GET /health`: ok, degraded (indexer lag, sponsor low balance) and down (RPC stopped, database
//! stopped), each by breaking the real dependency.

use alloy::{primitives::U256, providers::Provider};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::Connection;

use crate::harness::{TestApp, spawn_app};

/// `/health` as it is now: an answer may be reused for `PROBE_EVERY`, so a check made right after
/// changing a dependency first lets the previous answer expire.
async fn health(app: &TestApp) -> (StatusCode, Value) {
    tokio::time::sleep(streampay_relayer::api::health::PROBE_EVERY).await;
    cached_health(app).await
}

async fn cached_health(app: &TestApp) -> (StatusCode, Value) {
    let resp = app.http.get(app.url("/health")).send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn health_probes_at_most_once_a_second_however_often_it_is_asked() {
    let mut app = spawn_app().await;
    let (status, first) = cached_health(&app).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    // Within the second, the same answer: the dead node is not asked.
    app.stop_chain();
    let asked = std::time::Instant::now();
    let (status, again) = cached_health(&app).await;
    if asked.elapsed() < streampay_relayer::api::health::PROBE_EVERY / 2 {
        assert_eq!(status, StatusCode::OK, "{again}");
        assert_eq!(again, first, "served from the cache");
    }
    // After it, a fresh probe sees the node gone.
    let (status, fresh) = health(&app).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{fresh}");
    assert_eq!(fresh["Checks"]["Rpc"]["Ok"], false);
}

/// An admin connection to the cluster's `postgres` database, and this test's database name.
async fn admin(app: &TestApp) -> (sqlx::PgConnection, String) {
    let opts = app.store.pool().connect_options();
    let db = opts.get_database().expect("test database name").to_string();
    let conn = sqlx::PgConnection::connect_with(&(*opts).clone().database("postgres")).await.unwrap();
    (conn, db)
}

#[tokio::test]
async fn health_reports_every_check_when_all_is_well() {
    let app = spawn_app().await;
    let (status, body) = health(&app).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["Status"], "ok");
    assert_eq!(body["DegradedSubsystems"], json!([]));
    let checks = &body["Checks"];
    assert_eq!(checks["Database"]["Ok"], true);
    assert_eq!(checks["Rpc"]["Ok"], true);
    assert!(checks["Rpc"]["BlockNumber"].as_u64().is_some());
    // The indexer does not run in this test: reported, not counted as a fault.
    assert_eq!(checks["Indexer"][0]["Contract"], "USDC");
    assert_eq!(checks["Indexer"][0]["Status"], "not_started");
    let sponsors = checks["Sponsors"].as_array().unwrap();
    assert_eq!(sponsors.len(), 2, "every configured sponsor");
    assert!(sponsors.iter().all(|s| s["Low"] == false), "{sponsors:?}");
}

#[tokio::test]
async fn health_is_down_503_when_the_rpc_node_stops() {
    let mut app = spawn_app().await;
    app.stop_chain();
    let started = std::time::Instant::now();
    let (status, body) = health(&app).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["Status"], "down");
    let subsystems = body["DegradedSubsystems"].as_array().unwrap();
    assert!(subsystems.contains(&json!("rpc")), "{body}");
    assert!(!subsystems.contains(&json!("database")), "{body}");
    assert_eq!(body["Checks"]["Rpc"]["Ok"], false);
    assert!(body["Checks"]["Rpc"]["Error"].as_str().is_some());
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "health must not hang on a dead node");
    assert!(resp_has_version(&app).await);
}

async fn resp_has_version(app: &TestApp) -> bool {
    app.http.get(app.url("/health")).send().await.unwrap().headers().contains_key("x-api-version")
}

#[tokio::test]
async fn health_is_down_503_while_the_database_refuses_connections_and_recovers_after() {
    let app = spawn_app().await;
    let (mut admin, db) = admin(&app).await;
    // Stop this test's database: refuse new connections and kill the pool's open ones.
    sqlx::query(&format!("ALTER DATABASE \"{db}\" ALLOW_CONNECTIONS false")).execute(&mut admin).await.unwrap();
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(&db)
    .execute(&mut admin)
    .await
    .unwrap();

    let (status, body) = health(&app).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["Status"], "down");
    assert_eq!(body["DegradedSubsystems"], json!(["database"]), "{body}");
    assert_eq!(body["Checks"]["Database"]["Ok"], false);
    assert_eq!(body["Checks"]["Indexer"][0]["Status"], "unknown");
    assert_eq!(body["Checks"]["Rpc"]["Ok"], true);

    sqlx::query(&format!("ALTER DATABASE \"{db}\" ALLOW_CONNECTIONS true")).execute(&mut admin).await.unwrap();
    let (status, body) = health(&app).await;
    assert_eq!(status, StatusCode::OK, "recovers once the database is back: {body}");
    assert_eq!(body["Status"], "ok");
}

#[tokio::test]
async fn health_is_degraded_when_a_sponsor_runs_low_on_native_coin() {
    let app = spawn_app().await;
    // 0.01 ETH, below the default 0.1 threshold.
    let low = U256::from(10_000_000_000_000_000u64);
    let _: Value = app.provider.raw_request("anvil_setBalance".into(), (app.sponsor, low)).await.unwrap();
    let (status, body) = health(&app).await;
    assert_eq!(status, StatusCode::OK, "degraded still serves: {body}");
    assert_eq!(body["Status"], "degraded");
    assert_eq!(body["DegradedSubsystems"], json!(["sponsor_balance_low"]));
    let sponsors = body["Checks"]["Sponsors"].as_array().unwrap();
    let me = sponsors.iter().find(|s| s["Address"] == json!(app.sponsor.to_checksum(None))).unwrap();
    assert_eq!(me["Low"], true);
    assert_eq!(me["BalanceWei"], low.to_string());
    assert_eq!(me["Balance"], "0.01");
    let other = sponsors.iter().find(|s| s["Address"] == json!(app.other_sponsor.to_checksum(None))).unwrap();
    assert_eq!(other["Low"], false);
}

#[tokio::test]
async fn health_is_degraded_when_the_index_trails_the_chain_beyond_the_threshold() {
    let app = spawn_app().await;
    let head = app.provider.get_block_number().await.unwrap();
    // An indexer checkpoint at the current head: caught up.
    sqlx::query(
        "INSERT INTO idx_checkpoints (chain_id, contract, block_number, block_hash, block_timestamp, final_block, chain_head) \
         VALUES ($1, $2, $3, $4, 0, 0, $3)",
    )
    .bind(app.chain_id as i64)
    .bind(app.contract.as_slice())
    .bind(head as i64)
    .bind(&[0u8; 32][..])
    .execute(app.store.pool())
    .await
    .unwrap();
    let (_, body) = health(&app).await;
    assert_eq!(body["Status"], "ok", "{body}");
    assert_eq!(body["Checks"]["Indexer"][0]["Status"], "ok");
    assert_eq!(body["Checks"]["Indexer"][0]["LagBlocks"], 0);

    // The chain moves 101 blocks on while the indexer stands still (default threshold: 100).
    let _: Value = app.provider.raw_request("anvil_mine".into(), (101u64,)).await.unwrap();
    let (status, body) = health(&app).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["Status"], "degraded");
    assert_eq!(body["DegradedSubsystems"], json!(["indexer_lag"]));
    let ix = &body["Checks"]["Indexer"][0];
    assert_eq!(ix["Status"], "lagging");
    assert_eq!(ix["IndexedBlock"], head);
    assert_eq!(ix["LagBlocks"], 101);
    assert_eq!(ix["MaxLagBlocks"], 100);
}

#[tokio::test]
async fn health_counts_a_deployment_never_indexed_past_the_threshold_as_lag() {
    let app = spawn_app().await;
    let (_, body) = health(&app).await;
    let ix = &body["Checks"]["Indexer"][0];
    assert_eq!(ix["Status"], "not_started", "{body}");
    let first = ix["LagBlocks"].as_u64().expect("lag counted from the start block");
    assert!(first <= 100, "{body}");
    // No indexer runs while the chain moves past the threshold.
    let _: Value = app.provider.raw_request("anvil_mine".into(), (101u64,)).await.unwrap();
    let (status, body) = health(&app).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["Status"], "degraded");
    assert_eq!(body["DegradedSubsystems"], json!(["indexer_lag"]));
    let ix = &body["Checks"]["Indexer"][0];
    assert_eq!(ix["Status"], "lagging");
    assert_eq!(ix["LagBlocks"], first + 101);
    assert_eq!(ix["IndexedBlock"], Value::Null);
}
