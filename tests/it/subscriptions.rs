//! Subscriptions: create, list, cancel; rate conversion; simulation reverts.

use alloy::primitives::U256;
use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{assert_error, spawn_app, wallet};

/// floor(10e18 / 2_592_000): $10 per 30-day month in 18-decimal units per second.
const TEN_PER_MONTH: u64 = 3_858_024_691_358;

#[tokio::test]
async fn subscribe_streams_the_per_second_rate_to_the_author() {
    let app = spawn_app().await;
    let (user, author) = (wallet(), wallet());
    app.fund(&user, 100).await;
    let built = app
        .build(
            "/api/v1/USDC/subscriptions/",
            &json!({"from": user.address(), "author": author.address(), "subscription_rate": "10", "project_id": "0"}),
        )
        .await;
    assert_eq!(built["RatePerSecond"], TEN_PER_MONTH.to_string());
    assert_eq!(built["EffectiveMonthlyRate"], "9.999999999999936");
    app.execute_ok(&user, &built).await;

    let (active, encoded) =
        app.streampay().subscriptions(user.address(), author.address()).call().await.unwrap().into();
    assert!(active);
    let rate = U256::from(TEN_PER_MONTH);
    assert_eq!(encoded, rate | (rate << 96usize), "income == outgoing without a project fee");

    app.sync_index().await;
    let (status, list) = app.get(&format!("/api/v1/USDC/subscriptions/{}", user.address())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["Address"], json!(user.address().to_checksum(None)));
    assert_eq!(
        list["Subscriptions"],
        json!([{
            "To": author.address().to_checksum(None), "EncodedRates": encoded.to_string(),
            "IncomeRate": TEN_PER_MONTH.to_string(), "OutgoingRate": TEN_PER_MONTH.to_string(), "ProjectId": "0",
        }])
    );
}

#[tokio::test]
async fn cancel_builds_unsubscribe_and_stops_the_stream() {
    let app = spawn_app().await;
    let (user, author) = (wallet(), wallet());
    app.fund(&user, 100).await;
    let built = app
        .build(
            "/api/v1/USDC/subscriptions",
            &json!({"from": user.address(), "author": author.address(), "subscription_rate": "10"}),
        )
        .await;
    app.execute_ok(&user, &built).await;
    let (status, built) =
        app.delete(&format!("/api/v1/USDC/subscriptions/{}?From={}", author.address(), user.address())).await;
    assert_eq!(status, StatusCode::OK, "{built}");
    app.execute_ok(&user, &built).await;
    let (active, encoded) =
        app.streampay().subscriptions(user.address(), author.address()).call().await.unwrap().into();
    assert!(!active);
    assert!(encoded.is_zero());
    app.sync_index().await;
    let (_, list) = app.get(&format!("/api/v1/USDC/subscriptions/{}", user.address())).await;
    assert_eq!(list["Subscriptions"], json!([]));
}

#[tokio::test]
async fn cancel_without_from_is_400_missing_field() {
    let app = spawn_app().await;
    let resp = app.delete(&format!("/api/v1/USDC/subscriptions/{}", wallet().address())).await;
    assert_error(&resp, StatusCode::BAD_REQUEST, "missing_field");
}

#[tokio::test]
async fn bad_rates_are_400_invalid_amount_or_422_amount_out_of_range() {
    let app = spawn_app().await;
    let (from, author) = (wallet().address(), wallet().address());
    // Below 1 wei/s, 19 decimals, negative, zero, overflowing uint96, malformed.
    for rate in ["0.000000000001", "1.0000000000000000001", "-10", "0", "300000000000000000", "ten"] {
        let resp = app
            .post("/api/v1/USDC/subscriptions/", &json!({"from": from, "author": author, "subscription_rate": rate}))
            .await;
        if ["-10", "ten"].contains(&rate) {
            assert_error(&resp, StatusCode::BAD_REQUEST, "invalid_amount");
        } else {
            assert_error(&resp, StatusCode::UNPROCESSABLE_ENTITY, "amount_out_of_range");
        }
    }
}

#[tokio::test]
async fn subscribing_to_yourself_or_nobody_is_422_address_refused() {
    let app = spawn_app().await;
    let from = wallet().address();
    for author in [from.to_string(), "0x0000000000000000000000000000000000000000".into(), "0x12".into()] {
        let resp = app
            .post("/api/v1/USDC/subscriptions/", &json!({"from": from, "author": author, "subscription_rate": "1"}))
            .await;
        if author == "0x12" {
            assert_error(&resp, StatusCode::BAD_REQUEST, "invalid_address");
        } else {
            assert_error(&resp, StatusCode::UNPROCESSABLE_ENTITY, "address_refused");
        }
    }
}

#[tokio::test]
async fn a_non_integer_project_id_is_400_invalid_project_id() {
    let app = spawn_app().await;
    let body = json!({"from": wallet().address(), "author": wallet().address(), "subscription_rate": "1", "project_id": "1.5"});
    assert_error(&app.post("/api/v1/USDC/subscriptions/", &body).await, StatusCode::BAD_REQUEST, "invalid_project_id");
}

#[tokio::test]
async fn subscribing_beyond_the_balance_is_422_with_the_contracts_error() {
    let app = spawn_app().await;
    let (user, author) = (wallet(), wallet());
    app.fund(&user, 1).await;
    // 1000/month needs ~33 tokens to cover the one-day liquidation window.
    let built = app
        .build(
            "/api/v1/USDC/subscriptions/",
            &json!({"from": user.address(), "author": author.address(), "subscription_rate": "1000"}),
        )
        .await;
    let resp = app.execute(&user, &built).await;
    assert_error(&resp, StatusCode::UNPROCESSABLE_ENTITY, "simulation_reverted");
    assert!(resp.1["error"]["message"].as_str().unwrap().contains("StreamPayInsufficientBalance"), "{}", resp.1);
    // Nothing was sent, so the same signed call's unique nonce is still unused on chain.
    let nonce = U256::from(built["Transaction"]["Nonce"].as_u64().unwrap());
    assert!(!app.streampay().bySigUniqueNonces(user.address(), nonce).call().await.unwrap());
}

#[tokio::test]
async fn a_malformed_query_is_400_invalid_query() {
    let app = spawn_app().await;
    let (a, b) = (wallet().address(), wallet().address());
    let resp = app.delete(&format!("/api/v1/USDC/subscriptions/{}?From={a}&From={b}", wallet().address())).await;
    assert_error(&resp, StatusCode::BAD_REQUEST, "invalid_query");
}
