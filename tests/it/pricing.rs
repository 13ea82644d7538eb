//! Fee pricing runs in the background (review S11): `GET /sponsors`, `GET /fees`,
//! `GET /transactions/summary` and an execute under a sponsor budget make no fee-estimate or
//! receipt call to the node; they read what the chain's pricing task last published and stored,
//! and the figures still equal the chain's.
//!
//! The relayer instance under test reaches Anvil through a proxy that counts the JSON-RPC
//! methods it forwards.

use std::{collections::HashMap, time::Duration};

use alloy::{primitives::U256, providers::Provider};
use reqwest::StatusCode;
use serde_json::{Value, json};
use streampay_relayer::{server, store::SponsorPolicy, supervisor::Supervisor};

use crate::{
    harness::{TestApp, serve_settings, spawn_app, wallet},
    rpc_proxy::RpcProxy,
};

/// RPC methods that price: fee estimates and receipts.
const PRICING_METHODS: &[&str] =
    &["eth_feeHistory", "eth_maxPriorityFeePerGas", "eth_gasPrice", "eth_getTransactionReceipt"];

async fn get(app: &TestApp, base: &str, path: &str) -> (StatusCode, Value) {
    let resp = app.http.get(format!("{base}{path}")).header("X-API-Key", &app.api_key).send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn requests_and_the_budget_check_make_no_pricing_calls_and_spend_still_matches_the_chain() {
    let app = spawn_app().await;
    let alice = wallet();
    app.fund(&alice, 10).await;
    // Only the instance under test prices (through the proxy): the app's own pricing task, which
    // reaches Anvil directly, would price its rows too.
    app.stop_kept().await;
    let proxy = RpcProxy::start(&app).await;
    let (base, state) = app.instance_via(&proxy.url, serve_settings()).await;
    let pricing = Supervisor::new();
    server::start_pricing(&state, &pricing);
    let (status, quote) = get(&app, &base, "/api/v1/USDC/fees?operation=pay").await;
    assert_eq!(status, StatusCode::OK, "{quote}");

    // The pricing task stopped (before the price is forgotten, so it cannot price the row again
    // first): whatever the requests below cost the node is theirs alone.
    assert!(pricing.shutdown(Duration::from_secs(10)).await.is_empty());
    // The deposit's price forgotten (as if just mined), and a budget it already exhausts at its
    // upper bound: the refused execute below runs the whole budget check under the lock.
    sqlx::query("UPDATE relay_transactions SET priced_block_hash = NULL").execute(app.store.pool()).await.unwrap();
    let policy = SponsorPolicy { daily_budget: Some(U256::from(1u64)), ..Default::default() };
    app.store.set_sponsor_policy(app.chain_id, app.sponsor, Some(&policy)).await.unwrap();
    let built = app.build_pay(&alice, "1").await;
    let body = app.signed_execute_body(&alice, &built).await;

    proxy.reset();
    for _ in 0..5 {
        let (status, view) = get(&app, &base, "/api/v1/sponsors").await;
        assert_eq!(status, StatusCode::OK, "{view}");
        let (status, quote) = get(&app, &base, "/api/v1/USDC/fees?operation=pay").await;
        assert_eq!(status, StatusCode::OK, "{quote}");
        assert_eq!(quote["PolicyBlocks"], "sponsor_daily_budget_exceeded");
        let (status, summary) = get(&app, &base, "/api/v1/transactions/summary?reference=r").await;
        assert_eq!(status, StatusCode::OK, "{summary}");
        let resp = app
            .http
            .post(format!("{base}/api/v1/USDC/meta/execute"))
            .header("X-API-Key", &app.api_key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        let refused: Value = resp.json().await.unwrap();
        assert_eq!(refused["error"]["code"], "sponsor_daily_budget_exceeded", "{refused}");
    }
    assert_eq!(proxy.calls_of(PRICING_METHODS), HashMap::new(), "requests priced on the node themselves");

    // Running again, the pricing records the receipt's price: spend is the chain's figure.
    let pricing = Supervisor::new();
    server::start_pricing(&state, &pricing);
    let hash = app.store.list_history(app.api_key_id, &Default::default(), 10).await.unwrap()[0].tx_hash;
    let receipt = app.provider.get_transaction_receipt(hash).await.unwrap().unwrap();
    let paid = U256::from(receipt.gas_used) * U256::from(receipt.effective_gas_price);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, view) = get(&app, &base, "/api/v1/sponsors").await;
        if view["Sponsors"][0]["MinedSpendToday"] == json!(paid.to_string()) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "spend never reached the receipt's figure {paid}: {view}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        proxy.calls_of(PRICING_METHODS).contains_key("eth_getTransactionReceipt"),
        "the pricing task read the receipt"
    );
}

#[tokio::test]
async fn a_call_the_worker_settles_is_priced_with_its_outcome_without_the_pricing_task() {
    let app = spawn_app().await;
    let alice = wallet();
    app.fund(&alice, 10).await;
    // No pricing task from here on: only the worker that settles the next call can price it.
    app.stop_kept().await;
    let built = app.build_pay(&alice, "1").await;
    let done = app.execute_ok(&alice, &built).await;
    let hash: alloy::primitives::B256 = done["TransactionHash"].as_str().unwrap().parse().unwrap();
    let receipt = app.provider.get_transaction_receipt(hash).await.unwrap().unwrap();
    let (price, priced_block): (Option<String>, Option<Vec<u8>>) = sqlx::query_as(
        "SELECT effective_gas_price::text, priced_block_hash FROM relay_transactions WHERE tx_hash = $1",
    )
    .bind(hash.as_slice())
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!(price, Some(receipt.effective_gas_price.to_string()), "the 200's row is not priced as the receipt says");
    assert_eq!(priced_block.as_deref(), receipt.block_hash.as_ref().map(|h| h.as_slice()), "priced for another block");
    // Spend is the chain's figure at once (the deposit's and the payment's receipts), not the
    // max-fee upper bound until a pricing pass.
    assert!(app.store.unpriced_transactions(app.chain_id, &[], 10).await.unwrap().is_empty(), "rows left unpriced");
    let mut paid = U256::ZERO;
    for row in app.store.list_history(app.api_key_id, &Default::default(), 10).await.unwrap() {
        let r = app.provider.get_transaction_receipt(row.tx_hash).await.unwrap().unwrap();
        paid += U256::from(r.gas_used) * U256::from(r.effective_gas_price);
    }
    let (status, view) = app.get("/api/v1/sponsors").await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["Sponsors"][0]["MinedSpendToday"], json!(paid.to_string()), "{view}");
}
