//! Payments: deposit (gasless, with permit), pay, withdraw, balance.

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{assert_error, internal, spawn_app, tokens, wallet};

#[tokio::test]
async fn deposit_with_permit_is_gasless_for_the_user() {
    let app = spawn_app().await;
    let user = wallet();
    app.mint(user.address(), tokens(100)).await;

    let built = app
        .build("/api/v1/USDC/payments/deposit", &json!({"From": user.address(), "Amount": "12.5", "Sponsor": app.sponsor}))
        .await;
    let t = &built["Transaction"];
    assert_eq!(built["AmountRaw"], "12500000");
    assert_eq!(t["PermitTypedData"]["primaryType"], "Permit");
    assert_eq!(t["PermitTypedData"]["message"]["value"], "12500000");
    assert_eq!(t["PermitTypedData"]["message"]["spender"], app.contract.to_checksum(None));

    let done = app.execute_ok(&user, &built).await;
    assert!(done["GasUsed"].as_u64().unwrap() > 0);
    assert!(done["TransactionHash"].as_str().unwrap().starts_with("0x"));
    assert_eq!(app.balance_of(user.address()).await, internal(25) / alloy::primitives::U256::from(2));
    assert_eq!(app.token_balance(user.address()).await, tokens(100) - alloy::primitives::U256::from(12_500_000u64));
    assert!(app.native_balance(user.address()).await.is_zero(), "the user never needed ETH");
}
