//! The whole product in one story, each step checked against the chain's own view functions:
//! mint to a wallet with no ETH → gasless deposit with permit → subscribe → time passes → the
//! author's balance grows by rate × time → pay → batch pay → batch subscribe → two calls built
//! before either is executed both succeed → unsubscribe → withdraw.

use alloy::{
    primitives::{Address, U256},
    providers::Provider,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{TestApp, internal, spawn_app, tokens, wallet};

/// floor(30e18 / 2_592_000)
const THIRTY_PER_MONTH: u64 = 11_574_074_074_074;
const FIVE_PER_MONTH: u64 = 1_929_012_345_679;
/// floor(7.5e18 / 2_592_000)
const SEVEN_AND_A_HALF_PER_MONTH: u64 = 2_893_518_518_518;

async fn block_time_of(app: &TestApp, executed: &Value) -> u64 {
    let hash = executed["TransactionHash"].as_str().unwrap().parse().unwrap();
    let receipt = app.provider.get_transaction_receipt(hash).await.unwrap().unwrap();
    let block = app.provider.get_block_by_number(receipt.block_number.unwrap().into()).await.unwrap().unwrap();
    block.header.timestamp
}

/// The API's balance equals the chain's `balanceOf`, which equals `expected`.
async fn assert_balance(app: &TestApp, who: Address, expected: U256) {
    let on_chain = app.balance_of(who).await;
    assert_eq!(on_chain, expected, "chain balance of {who}");
    app.sync_index().await;
    let (status, body) = app.get(&format!("/api/v1/USDC/payments/balance/{who}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["BalanceRaw"], on_chain.to_string(), "API balance of {who}");
}

#[tokio::test]
async fn full_story_from_gasless_deposit_to_withdrawal() {
    let app = spawn_app().await;
    let user = wallet();
    let (author, author2, author3, friend) =
        (wallet().address(), wallet().address(), wallet().address(), wallet().address());

    // 1. Mint to a wallet that holds no ETH.
    app.mint(user.address(), tokens(1_000)).await;
    assert!(app.native_balance(user.address()).await.is_zero());

    // 2. Gasless deposit: two signatures (call + permit), no transaction of the user's own.
    let built = app.build("/api/v1/USDC/payments/deposit", &json!({"From": user.address(), "Amount": "100"})).await;
    app.execute_ok(&user, &built).await;
    assert_balance(&app, user.address(), internal(100)).await;
    assert_eq!(app.token_balance(user.address()).await, tokens(900));
    assert_eq!(app.token_balance(app.contract).await, tokens(100));

    // 3. Subscribe at 30 per month.
    let built = app
        .build(
            "/api/v1/USDC/subscriptions/",
            &json!({"from": user.address(), "author": author, "subscription_rate": "30"}),
        )
        .await;
    assert_eq!(built["RatePerSecond"], THIRTY_PER_MONTH.to_string());
    let executed = app.execute_ok(&user, &built).await;
    let t0 = block_time_of(&app, &executed).await;
    let rate = U256::from(THIRTY_PER_MONTH);
    let (active, encoded) = app.streampay().subscriptions(user.address(), author).call().await.unwrap().into();
    assert!(active);
    assert_eq!(encoded, rate | (rate << 96usize));

    // 4. Time passes; 5. the author's balance grows by exactly rate × elapsed.
    app.advance(7 * 86_400).await;
    let t1 = app.chain_time().await;
    assert!(t1 >= t0 + 7 * 86_400);
    let streamed = |t: u64| rate * U256::from(t - t0);
    assert_balance(&app, author, streamed(t1)).await;
    assert_balance(&app, user.address(), internal(100) - streamed(t1)).await;

    // 6. A one-time payment.
    let built =
        app.build("/api/v1/USDC/payments/", &json!({"From": user.address(), "To": author2, "Amount": "5"})).await;
    app.execute_ok(&user, &built).await;
    let mut paid = internal(5);
    assert_balance(&app, author2, internal(5)).await;
    let now = app.chain_time().await;
    assert_balance(&app, user.address(), internal(100) - streamed(now) - paid).await;

    // 7. Batch payment.
    let built = app
        .build(
            "/api/v1/USDC/batch/payments",
            &json!({"From": user.address(), "Payments": [
            {"To": author2, "Amount": "1.5"}, {"To": author3, "Amount": "2.25"}]}),
        )
        .await;
    app.execute_ok(&user, &built).await;
    paid += U256::from(3_750_000_000_000_000_000u128);
    assert_balance(&app, author2, U256::from(6_500_000_000_000_000_000u128)).await;
    assert_balance(&app, author3, U256::from(2_250_000_000_000_000_000u128)).await;

    // 8. Batch subscribe.
    let built = app
        .build(
            "/api/v1/USDC/batch/subscriptions",
            &json!({"From": user.address(), "Subscriptions": [
            {"Author": author2, "SubscriptionRate": "5", "ProjectId": "0"},
            {"Author": author3, "SubscriptionRate": "7.5", "ProjectId": "0"}]}),
        )
        .await;
    let executed = app.execute_ok(&user, &built).await;
    let t2 = block_time_of(&app, &executed).await;
    let subs = app.streampay().allSubscriptions(user.address()).call().await.unwrap();
    assert_eq!(subs.authors, vec![author, author2, author3]);
    let (r2, r3) = (U256::from(FIVE_PER_MONTH), U256::from(SEVEN_AND_A_HALF_PER_MONTH));
    assert_eq!(subs.rates[1], r2 | (r2 << 96usize));
    assert_eq!(subs.rates[2], r3 | (r3 << 96usize));
    app.sync_index().await;
    let (_, listed) = app.get(&format!("/api/v1/USDC/subscriptions/{}", user.address())).await;
    let listed_rates: Vec<String> = listed["Subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["EncodedRates"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed_rates, subs.rates.iter().map(U256::to_string).collect::<Vec<_>>());

    // 9. Two calls built before either is executed both go through.
    let nonce_before = app.streampay().bySigAccountNonces(user.address()).call().await.unwrap();
    let first =
        app.build("/api/v1/USDC/payments/", &json!({"From": user.address(), "To": friend, "Amount": "1"})).await;
    let second =
        app.build("/api/v1/USDC/payments/", &json!({"From": user.address(), "To": friend, "Amount": "2"})).await;
    assert_ne!(first["Transaction"]["Nonce"], second["Transaction"]["Nonce"]);
    app.execute_ok(&user, &first).await;
    app.execute_ok(&user, &second).await;
    paid += internal(3);
    assert_balance(&app, friend, internal(3)).await;
    // Unique nonces (the default): both are used, the ordered account nonce is untouched.
    assert_eq!(app.streampay().bySigAccountNonces(user.address()).call().await.unwrap(), nonce_before);
    for built in [&first, &second] {
        let n = U256::from(built["Transaction"]["Nonce"].as_u64().unwrap());
        assert!(app.streampay().bySigUniqueNonces(user.address(), n).call().await.unwrap());
    }

    // 10. Unsubscribe from the first author: their income stops growing.
    let (status, built) = app
        .delete(&format!("/api/v1/USDC/subscriptions/{author}?From={}&Sponsor={}", user.address(), app.sponsor))
        .await;
    assert_eq!(status, StatusCode::OK, "{built}");
    let executed = app.execute_ok(&user, &built).await;
    let t3 = block_time_of(&app, &executed).await;
    let (active, _) = app.streampay().subscriptions(user.address(), author).call().await.unwrap().into();
    assert!(!active);
    app.advance(3_600).await;
    assert_balance(&app, author, streamed(t3)).await;
    let now = app.chain_time().await;
    let out_2_3 = (r2 + r3) * U256::from(now - t2);
    assert_balance(&app, author2, U256::from(6_500_000_000_000_000_000u128) + r2 * U256::from(now - t2)).await;
    let user_expected = internal(100) - streamed(t3) - paid - out_2_3;
    assert_balance(&app, user.address(), user_expected).await;

    // 11. Withdraw 10 tokens back to the wallet.
    let built = app.build("/api/v1/USDC/payments/withdraw", &json!({"From": user.address(), "Amount": "10"})).await;
    let executed = app.execute_ok(&user, &built).await;
    let t4 = block_time_of(&app, &executed).await;
    assert_eq!(app.token_balance(user.address()).await, tokens(910));
    let out_2_3 = (r2 + r3) * U256::from(t4 - t2);
    let user_at_t4 = internal(100) - streamed(t3) - paid - out_2_3 - internal(10);
    let now = app.chain_time().await;
    assert_eq!(now, t4, "no block since the withdrawal");
    assert_balance(&app, user.address(), user_at_t4).await;

    // The user never held or spent native coin.
    assert!(app.native_balance(user.address()).await.is_zero());
}
