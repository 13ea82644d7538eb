//! Payments: deposit (gasless, with permit), pay, withdraw, balance.

use reqwest::StatusCode;
use serde_json::json;

use alloy::primitives::U256;

use crate::harness::{assert_error, internal, spawn_app, tokens, wallet};

#[tokio::test]
async fn deposit_with_permit_is_gasless_for_the_user() {
    let app = spawn_app().await;
    let user = wallet();
    app.mint(user.address(), tokens(100)).await;

    let built = app
        .build(
            "/api/v1/USDC/payments/deposit",
            &json!({"From": user.address(), "Amount": "12.5", "Sponsor": app.sponsor}),
        )
        .await;
    let t = &built["Transaction"];
    assert_eq!(built["AmountRaw"], "12500000");
    assert_eq!(t["PermitTypedData"]["primaryType"], "Permit");
    assert_eq!(t["PermitTypedData"]["message"]["value"], "12500000");
    assert_eq!(t["PermitTypedData"]["message"]["spender"], app.contract.to_checksum(None));

    let done = app.execute_ok(&user, &built).await;
    assert!(done["GasUsed"].as_u64().unwrap() > 0);
    assert!(done["TransactionHash"].as_str().unwrap().starts_with("0x"));
    assert_eq!(app.balance_of(user.address()).await, internal(25) / U256::from(2));
    assert_eq!(app.token_balance(user.address()).await, tokens(100) - U256::from(12_500_000u64));
    assert!(app.native_balance(user.address()).await.is_zero(), "the user never needed ETH");
}

#[tokio::test]
async fn pay_moves_exact_internal_units_between_balances() {
    let app = spawn_app().await;
    let (alice, bob) = (wallet(), wallet());
    app.fund(&alice, 50).await;
    let built = app
        .build(
            "/api/v1/USDC/payments/",
            &json!({"From": alice.address(), "To": bob.address(), "Amount": "12.345678901234567891"}),
        )
        .await;
    assert_eq!(built["AmountRaw"], "12345678901234567891");
    app.execute_ok(&alice, &built).await;
    let paid = U256::from(12_345_678_901_234_567_891u128);
    assert_eq!(app.balance_of(bob.address()).await, paid);
    assert_eq!(app.balance_of(alice.address()).await, internal(50) - paid);

    app.sync_index().await;
    let (status, body) = app.get(&format!("/api/v1/USDC/payments/balance/{}", bob.address())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["Address"], json!(bob.address().to_checksum(None)));
    assert_eq!(body["Balance"], "12.345678901234567891");
    assert_eq!(body["BalanceRaw"], paid.to_string());
}

#[tokio::test]
async fn trailing_slash_is_optional() {
    let app = spawn_app().await;
    let body = json!({"From": wallet().address(), "To": wallet().address(), "Amount": "1"});
    assert_eq!(app.post("/api/v1/USDC/payments", &body).await.0, StatusCode::OK);
    assert_eq!(app.post("/api/v1/USDC/payments/", &body).await.0, StatusCode::OK);
    assert_eq!(
        app.post("/api/v1/USDC/payments/deposit/", &json!({"From": wallet().address(), "Amount": "1"})).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn bad_amounts_are_400_invalid_amount_or_422_amount_out_of_range() {
    let app = spawn_app().await;
    let (from, to) = (wallet().address(), wallet().address());
    for amount in ["-1", "0", "0.000", "abc", "1e3", "", "1.0000000000000000001"] {
        let resp = app.post("/api/v1/USDC/payments/", &json!({"From": from, "To": to, "Amount": amount})).await;
        if amount.is_empty() {
            assert_error(&resp, StatusCode::BAD_REQUEST, "missing_field");
        } else if ["0", "0.000", "1.0000000000000000001"].contains(&amount) {
            // The decimal grammar's, but zero or finer than 18 decimals.
            assert_error(&resp, StatusCode::UNPROCESSABLE_ENTITY, "amount_out_of_range");
        } else {
            assert_error(&resp, StatusCode::BAD_REQUEST, "invalid_amount");
        }
    }
    // Deposits are in token units: a 6-decimal token takes at most 6 decimals.
    let resp = app.post("/api/v1/USDC/payments/deposit", &json!({"From": from, "Amount": "1.0000001"})).await;
    assert_error(&resp, StatusCode::UNPROCESSABLE_ENTITY, "amount_out_of_range");
    assert!(resp.1["error"]["message"].as_str().unwrap().contains("6 decimal"), "{}", resp.1);
    // Withdrawals leave in whole token base units, so the same limit applies.
    let resp = app.post("/api/v1/USDC/payments/withdraw", &json!({"From": from, "Amount": "0.0000001"})).await;
    assert_error(&resp, StatusCode::UNPROCESSABLE_ENTITY, "amount_out_of_range");
}

#[tokio::test]
async fn bad_addresses_are_400_invalid_address_or_422_address_refused() {
    let app = spawn_app().await;
    let from = wallet().address();
    let good = from.to_checksum(None);
    // Flip the case of one letter: a checksum typo.
    let idx = good.char_indices().skip(2).find(|(_, c)| c.is_ascii_alphabetic()).unwrap().0;
    let mut typo: Vec<char> = good.chars().collect();
    typo[idx] =
        if typo[idx].is_ascii_uppercase() { typo[idx].to_ascii_lowercase() } else { typo[idx].to_ascii_uppercase() };
    let typo: String = typo.into_iter().collect();
    for to in [
        "0x1234",
        "not an address",
        "0xZZ00000000000000000000000000000000000000",
        typo.as_str(),
        "0x0000000000000000000000000000000000000000",
    ] {
        let resp = app.post("/api/v1/USDC/payments/", &json!({"From": from, "To": to, "Amount": "1"})).await;
        // Well-formed but unusable (a checksum typo, the zero address): 422; not an address: 400.
        if to.len() == 42 && to[2..].bytes().all(|b| b.is_ascii_hexdigit()) {
            assert_error(&resp, StatusCode::UNPROCESSABLE_ENTITY, "address_refused");
        } else {
            assert_error(&resp, StatusCode::BAD_REQUEST, "invalid_address");
        }
    }
    assert_error(&app.get("/api/v1/USDC/payments/balance/0x12").await, StatusCode::BAD_REQUEST, "invalid_address");
    // All-lowercase addresses carry no checksum and are fine.
    let lower = good.to_lowercase();
    assert_eq!(
        app.post("/api/v1/USDC/payments/", &json!({"From": from, "To": lower, "Amount": "1"})).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn missing_fields_are_400_missing_field_and_bad_json_is_400_invalid_json() {
    let app = spawn_app().await;
    assert_error(
        &app.post("/api/v1/USDC/payments/", &json!({"To": wallet().address(), "Amount": "1"})).await,
        StatusCode::BAD_REQUEST,
        "missing_field",
    );
    assert_error(&app.post_raw("/api/v1/USDC/payments/", "{not json").await, StatusCode::BAD_REQUEST, "invalid_json");
    assert_error(
        &app.post_raw("/api/v1/USDC/payments/", r#"{"From": 5}"#).await,
        StatusCode::BAD_REQUEST,
        "invalid_json",
    );
}

#[tokio::test]
async fn withdraw_sends_whole_tokens_to_the_wallet_or_another_address() {
    let app = spawn_app().await;
    let (user, friend) = (wallet(), wallet());
    app.fund(&user, 40).await;

    let built = app.build("/api/v1/USDC/payments/withdraw", &json!({"From": user.address(), "Amount": "10.5"})).await;
    assert_eq!(built["AmountRaw"], "10500000000000000000");
    assert_eq!(built["TokenAmountRaw"], "10500000");
    app.execute_ok(&user, &built).await;
    assert_eq!(app.token_balance(user.address()).await, U256::from(10_500_000u64));
    assert_eq!(app.balance_of(user.address()).await, internal(40) - U256::from(10_500_000_000_000_000_000u128));

    let built = app
        .build(
            "/api/v1/USDC/payments/withdraw",
            &json!({"From": user.address(), "Amount": "4", "To": friend.address()}),
        )
        .await;
    app.execute_ok(&user, &built).await;
    assert_eq!(app.token_balance(friend.address()).await, tokens(4));
    assert_eq!(app.balance_of(user.address()).await, internal(40) - U256::from(14_500_000_000_000_000_000u128));
}
