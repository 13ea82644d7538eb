//! Batches: one signature, one atomic multicall.

use alloy::{primitives::U256, providers::Provider};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{assert_error, internal, spawn_app, wallet};

#[tokio::test]
async fn batch_payments_pay_every_recipient_in_one_transaction() {
    let app = spawn_app().await;
    let user = wallet();
    let recipients: Vec<_> = (0..3).map(|_| wallet().address()).collect();
    app.fund(&user, 10).await;
    let built = app
        .build("/api/v1/USDC/batch/payments", &json!({"From": user.address(), "Payments": [
            {"To": recipients[0], "Amount": "1"}, {"To": recipients[1], "Amount": "2.5"}, {"To": recipients[2], "Amount": "0.000000000000000001"},
        ]}))
        .await;
    assert_eq!(built["TotalRaw"], "3500000000000000001");
    let done = app.execute_ok(&user, &built).await;
    assert_eq!(app.balance_of(recipients[0]).await, internal(1));
    assert_eq!(app.balance_of(recipients[1]).await, internal(5) / U256::from(2));
    assert_eq!(app.balance_of(recipients[2]).await, U256::from(1));
    assert_eq!(app.balance_of(user.address()).await, internal(10) - U256::from(3_500_000_000_000_000_001u128));
    let receipt = app
        .provider
        .get_transaction_receipt(done["TransactionHash"].as_str().unwrap().parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(receipt.to, Some(app.contract), "one transaction to StreamPay");
}

#[tokio::test]
async fn batch_subscriptions_create_every_stream() {
    let app = spawn_app().await;
    let user = wallet();
    let authors: Vec<_> = (0..2).map(|_| wallet().address()).collect();
    app.fund(&user, 100).await;
    let built = app
        .build(
            "/api/v1/USDC/batch/subscriptions",
            &json!({"From": user.address(), "Subscriptions": [
                {"Author": authors[0], "SubscriptionRate": "5", "ProjectId": "0"},
                {"Author": authors[1], "SubscriptionRate": "7.5"},
            ]}),
        )
        .await;
    app.execute_ok(&user, &built).await;
    let subs = app.streampay().allSubscriptions(user.address()).call().await.unwrap();
    assert_eq!(subs.authors, authors);
    app.sync_index().await;
    let (_, listed) = app.get(&format!("/api/v1/USDC/subscriptions/{}", user.address())).await;
    let listed: Vec<&Value> = listed["Subscriptions"].as_array().unwrap().iter().collect();
    assert_eq!(listed.len(), 2);
    for (item, rate) in listed.iter().zip(&subs.rates) {
        assert_eq!(item["EncodedRates"], rate.to_string());
    }
}

#[tokio::test]
async fn batches_over_100_items_are_422_batch_too_large() {
    let app = spawn_app().await;
    let to = wallet().address();
    let payments: Vec<Value> = (0..101).map(|_| json!({"To": to, "Amount": "1"})).collect();
    let resp =
        app.post("/api/v1/USDC/batch/payments", &json!({"From": wallet().address(), "Payments": payments})).await;
    assert_error(&resp, StatusCode::UNPROCESSABLE_ENTITY, "batch_too_large");
    let subs: Vec<Value> = (0..101).map(|_| json!({"Author": to, "SubscriptionRate": "1"})).collect();
    let resp =
        app.post("/api/v1/USDC/batch/subscriptions", &json!({"From": wallet().address(), "Subscriptions": subs})).await;
    assert_error(&resp, StatusCode::UNPROCESSABLE_ENTITY, "batch_too_large");
    // Exactly 100 is fine.
    let payments: Vec<Value> = (0..100).map(|_| json!({"To": to, "Amount": "1"})).collect();
    let resp =
        app.post("/api/v1/USDC/batch/payments", &json!({"From": wallet().address(), "Payments": payments})).await;
    assert_eq!(resp.0, StatusCode::OK, "{}", resp.1);
}

#[tokio::test]
async fn empty_batches_are_422_empty_batch() {
    let app = spawn_app().await;
    let resp = app.post("/api/v1/USDC/batch/payments", &json!({"From": wallet().address(), "Payments": []})).await;
    assert_error(&resp, StatusCode::UNPROCESSABLE_ENTITY, "empty_batch");
}

#[tokio::test]
async fn a_bad_item_is_named_in_the_error() {
    let app = spawn_app().await;
    let to = wallet().address();
    let resp = app
        .post(
            "/api/v1/USDC/batch/payments",
            &json!({"From": wallet().address(), "Payments": [
                {"To": to, "Amount": "1"}, {"To": to, "Amount": "-2"},
            ]}),
        )
        .await;
    assert_error(&resp, StatusCode::BAD_REQUEST, "invalid_amount");
    assert!(resp.1["error"]["message"].as_str().unwrap().starts_with("Payments[1].Amount"), "{}", resp.1);
}

#[tokio::test]
async fn a_batch_with_one_failing_item_changes_nothing() {
    let app = spawn_app().await;
    let (user, a, b) = (wallet(), wallet().address(), wallet().address());
    app.fund(&user, 5).await;
    let built = app
        .build(
            "/api/v1/USDC/batch/payments",
            &json!({"From": user.address(), "Payments": [
                {"To": a, "Amount": "3"}, {"To": b, "Amount": "3"},
            ]}),
        )
        .await;
    let resp = app.execute(&user, &built).await;
    assert_error(&resp, StatusCode::UNPROCESSABLE_ENTITY, "simulation_reverted");
    assert!(resp.1["error"]["message"].as_str().unwrap().contains("StreamPayInsufficientBalance"), "{}", resp.1);
    assert!(app.balance_of(a).await.is_zero());
    assert_eq!(app.balance_of(user.address()).await, internal(5));
}
