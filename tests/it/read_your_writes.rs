//! Issue 12, reads follow writes: when `meta/execute` answers 200, every read endpoint already
//! reflects the call, to the wei, with the read cache on (as `serve` runs) and no indexer of the
//! test's own. The async mode says "mined" only then.

use std::time::Duration;

use alloy::primitives::{Address, U256};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{TestApp, spawn_app, tokens, wallet};

async fn ok(app: &TestApp, path: &str) -> Value {
    let (status, body) = app.get(path).await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    body
}

/// The balance endpoint against `balanceOf`, to the wei.
async fn assert_balance_is_the_chains(app: &TestApp, who: Address) {
    let served = ok(app, &format!("/api/v1/USDC/payments/balance/{who}")).await;
    let chain = app.balance_of(who).await;
    assert_eq!(served["BalanceRaw"], json!(chain.to_string()), "balance of {who}: {served}");
}

#[tokio::test]
async fn reads_right_after_a_200_equal_the_chains_views_to_the_wei() {
    let app = spawn_app().await;
    assert!(app.state.settings.indexer.read_cache && app.state.settings.auth.key_cache, "as serve runs");
    let (user, author) = (wallet(), wallet());
    app.mint(user.address(), tokens(100)).await;

    // A first write creates the index; reads right after it already see it.
    let deposit = app.build("/api/v1/USDC/payments/deposit", &json!({"From": user.address(), "Amount": "100"})).await;
    app.execute_ok(&user, &deposit).await;
    assert_balance_is_the_chains(&app, user.address()).await;
    assert_eq!(app.balance_of(user.address()).await, crate::harness::internal(100));

    // Cache the author's and the user's reads, then write: the next reads are not the cached ones.
    assert_eq!(ok(&app, &format!("/api/v1/USDC/subscriptions/{}", user.address())).await["Subscriptions"], json!([]));
    let streams = ok(&app, &format!("/api/v1/USDC/authors/{}/streams", author.address())).await;
    assert_eq!(streams["Streams"], json!([]));
    let subscribe = app
        .build(
            "/api/v1/USDC/subscriptions/",
            &json!({"from": user.address(), "author": author.address(), "subscription_rate": "30", "NonceType": "account"}),
        )
        .await;
    let done = app.execute_ok(&user, &subscribe).await;

    let subs = ok(&app, &format!("/api/v1/USDC/subscriptions/{}", user.address())).await;
    let (authors, rates) = app.streampay().allSubscriptions(user.address()).call().await.unwrap().into();
    let authors: Vec<Address> = authors;
    let rates: Vec<U256> = rates;
    assert_eq!(authors, vec![author.address()]);
    assert_eq!(subs["Subscriptions"].as_array().unwrap().len(), 1, "{subs}");
    assert_eq!(subs["Subscriptions"][0]["To"], json!(author.address().to_checksum(None)));
    assert_eq!(subs["Subscriptions"][0]["EncodedRates"], json!(rates[0].to_string()));
    let streams = ok(&app, &format!("/api/v1/USDC/authors/{}/streams", author.address())).await;
    assert_eq!(streams["Streams"].as_array().unwrap().len(), 1, "{streams}");
    assert_eq!(streams["IndexedBlock"], done["BlockNumber"]);
    assert_balance_is_the_chains(&app, user.address()).await;
    assert_balance_is_the_chains(&app, author.address()).await;
    let nonce = ok(&app, &format!("/api/v1/USDC/meta/nonce/{}", user.address())).await;
    let chain_nonce = app.streampay().bySigAccountNonces(user.address()).call().await.unwrap();
    assert_eq!(chain_nonce, U256::from(1));
    assert_eq!(nonce["Nonce"], json!(1), "{nonce}");
    // History lists both calls.
    let history = ok(&app, "/api/v1/transactions").await;
    assert!(history.to_string().contains(&format!("{:?}", done["TransactionHash"].as_str().unwrap())), "{history}");

    // A payment: both balances right after the 200.
    let friend = wallet().address();
    let _ = ok(&app, &format!("/api/v1/USDC/payments/balance/{friend}")).await; // cached zero
    let paid =
        app.build("/api/v1/USDC/payments/", &json!({"From": user.address(), "To": friend, "Amount": "12.5"})).await;
    app.execute_ok(&user, &paid).await;
    assert_balance_is_the_chains(&app, friend).await;
    assert_balance_is_the_chains(&app, user.address()).await;
}

#[tokio::test]
async fn the_async_status_says_mined_only_once_the_index_has_the_block() {
    let app = spawn_app().await;
    let user = wallet();
    app.fund(&user, 10).await;
    let built = app
        .build("/api/v1/USDC/payments/", &json!({"From": user.address(), "To": wallet().address(), "Amount": "1"}))
        .await;
    let body = app.signed_execute_body(&user, &built).await;
    let resp = app.execute_async(&body).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let accepted: Value = resp.json().await.unwrap();
    let id = accepted["TransactionId"].as_i64().unwrap();
    // Whenever the status says "mined", the index has the block and the reads reflect the call.
    let mined = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let t = ok(&app, &format!("/api/v1/transactions/{id}")).await;
            if t["Status"] == "mined" {
                return t;
            }
            assert_eq!(t["Indexed"], json!(false), "{t}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("mined within 30 s");
    assert_eq!(mined["Indexed"], json!(true), "{mined}");
    let head = app.chain().index.head(app.contract).await.unwrap().unwrap().block_number;
    assert!(head >= mined["BlockNumber"].as_u64().unwrap(), "{mined}");
    assert_balance_is_the_chains(&app, user.address()).await;
    assert_eq!(app.balance_of(user.address()).await, crate::harness::internal(9));
}
