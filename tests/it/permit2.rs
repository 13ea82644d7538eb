//! Deposits through Uniswap Permit2 at its canonical address: the dev chain's Permit2 (the
//! canonical runtime code), a `PermitSingle` built and signed as wallets do, applied in the same
//! transaction as the deposit, and the `permit2_deposit` capability only where Permit2 exists.

use alloy::{
    network::EthereumWallet,
    primitives::{U160, U256},
    providers::{Provider, ProviderBuilder},
    signers::local::PrivateKeySigner,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use streampay_relayer::chain::{IErc20Allowance, IPermit2, PERMIT2, eip712};

use crate::harness::{Mined, TestApp, assert_error, internal, sign_document, spawn_app, tokens, wallet};

async fn capabilities(app: &TestApp) -> Vec<String> {
    let (status, body) = app.get_with_key("/api/v1/meta", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["Capabilities"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect()
}

/// The user's one on-chain step: approve Permit2 on the token (paying its own gas).
async fn approve_permit2(app: &TestApp, user: &PrivateKeySigner, amount: U256) {
    let _: Value = app
        .provider
        .raw_request("anvil_setBalance".into(), (user.address(), U256::from(10u64).pow(U256::from(18u64))))
        .await
        .expect("anvil_setBalance");
    let wallet =
        ProviderBuilder::new().wallet(EthereumWallet::from(user.clone())).connect_http(app.rpc_url.parse().unwrap());
    let receipt =
        IErc20Allowance::new(app.token, &wallet).approve(PERMIT2, amount).send().await.expect("approve").mined().await;
    assert!(receipt.status(), "approve(Permit2) succeeded");
}

fn deposit_body(user: &PrivateKeySigner, amount: &str) -> Value {
    json!({"From": user.address(), "Amount": amount, "IsPermit2": true})
}

#[tokio::test]
async fn a_deposit_through_permit2_is_gasless_after_one_approval_and_needs_permit2_deployed() {
    let app = spawn_app().await;
    let user = wallet();
    app.mint(user.address(), tokens(20)).await;

    // No Permit2 on the chain yet: not advertised, and a Permit2 deposit cannot be built.
    assert!(!capabilities(&app).await.iter().any(|c| c == "permit2_deposit"));
    let resp = app.post("/api/v1/USDC/payments/deposit", &deposit_body(&user, "7.5")).await;
    assert_error(&resp, StatusCode::UNPROCESSABLE_ENTITY, "permit2_unavailable");

    app.deploy_permit2().await;
    // `/api/v1/meta` is public: it believes "no Permit2" for a minute rather than ask the node on
    // every call, while a build asks at once (and what it finds shows in `/meta` too).
    assert!(!capabilities(&app).await.iter().any(|c| c == "permit2_deposit"), "a minute's cache");
    let resp = app.post("/api/v1/USDC/payments/deposit", &deposit_body(&user, "7.5")).await;
    assert_error(&resp, StatusCode::UNPROCESSABLE_ENTITY, "permit2_not_approved");
    assert!(capabilities(&app).await.iter().any(|c| c == "permit2_deposit"));
    // Off mainnet the canonical code derives its domain from the chain and its own address.
    let separator = IPermit2::new(PERMIT2, &app.provider).DOMAIN_SEPARATOR().call().await.expect("DOMAIN_SEPARATOR");
    assert_eq!(separator, eip712::permit2_domain(app.chain_id).separator());

    // Without the owner's ERC-20 approval of Permit2 the deposit could only revert.
    let resp = app.post("/api/v1/USDC/payments/deposit", &deposit_body(&user, "7.5")).await;
    assert_error(&resp, StatusCode::UNPROCESSABLE_ENTITY, "permit2_not_approved");

    approve_permit2(&app, &user, U256::MAX).await;
    let gas_money = app.native_balance(user.address()).await;
    let built = app.build("/api/v1/USDC/payments/deposit", &deposit_body(&user, "7.5")).await;
    assert_eq!(built["IsPermit2"], true);
    let permit = &built["Transaction"]["PermitTypedData"];
    assert_eq!(permit["primaryType"], "PermitSingle");
    assert_eq!(permit["domain"]["name"], "Permit2");
    assert_eq!(permit["domain"]["verifyingContract"], PERMIT2.to_checksum(None));
    assert_eq!(permit["message"]["details"]["token"], app.token.to_checksum(None));
    assert_eq!(permit["message"]["details"]["amount"], "7500000");
    assert_eq!(permit["message"]["details"]["nonce"], "0");
    assert_eq!(permit["message"]["spender"], app.contract.to_checksum(None));

    // Someone else's signature of the PermitSingle is refused before anything is sent.
    let mut forged = app.signed_execute_body(&user, &built).await;
    forged["Permit"]["Signature"] = json!(sign_document(&wallet(), permit).await);
    let resp = app.post("/api/v1/USDC/meta/execute", &forged).await;
    assert_error(&resp, StatusCode::UNPROCESSABLE_ENTITY, "permit_signature_mismatch");

    app.execute_ok(&user, &built).await;
    let deposited = U256::from(7_500_000u64);
    assert_eq!(app.balance_of(user.address()).await, internal(15) / U256::from(2));
    assert_eq!(app.token_balance(user.address()).await, tokens(20) - deposited);
    assert_eq!(app.native_balance(user.address()).await, gas_money, "the deposit itself cost the user no gas");
    let allowance =
        IPermit2::new(PERMIT2, &app.provider).allowance(user.address(), app.token, app.contract).call().await.unwrap();
    assert_eq!(allowance.nonce, alloy::primitives::aliases::U48::from(1u64), "the permit was used");
    assert_eq!(allowance.amount, U160::ZERO, "the deposit pulled exactly what was permitted");

    // The next deposit signs Permit2's next nonce; the API's balance equals the chain's.
    let built = app.build("/api/v1/USDC/payments/deposit", &deposit_body(&user, "2.5")).await;
    assert_eq!(built["Transaction"]["PermitTypedData"]["message"]["details"]["nonce"], "1");
    app.execute_ok(&user, &built).await;
    assert_eq!(app.balance_of(user.address()).await, internal(10));
    app.sync_index().await;
    let (status, body) = app.get(&format!("/api/v1/USDC/payments/balance/{}", user.address())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["BalanceRaw"], app.balance_of(user.address()).await.to_string());
}

#[tokio::test]
async fn a_permit2_permit_with_a_deadline_past_uint48_is_refused() {
    let app = spawn_app().await;
    app.deploy_permit2().await;
    let user = wallet();
    app.mint(user.address(), tokens(5)).await;
    approve_permit2(&app, &user, tokens(5)).await;
    let built = app.build("/api/v1/USDC/payments/deposit", &deposit_body(&user, "1")).await;
    let mut body = app.signed_execute_body(&user, &built).await;
    body["Permit"]["Deadline"] = json!((1u64 << 48).to_string());
    let resp = app.post("/api/v1/USDC/meta/execute", &body).await;
    assert_error(&resp, StatusCode::BAD_REQUEST, "invalid_deadline");
    // An amount over uint160 cannot be a Permit2 amount either.
    body["Permit"]["Deadline"] = built["Transaction"]["PermitTypedData"]["message"]["sigDeadline"].clone();
    body["Permit"]["Value"] = json!((U256::from(1u64) << 160usize).to_string());
    let resp = app.post("/api/v1/USDC/meta/execute", &body).await;
    assert_error(&resp, StatusCode::UNPROCESSABLE_ENTITY, "amount_out_of_range");
}

/// Replaces the deployment's token code with MockPlainToken's (no EIP-2612; the same storage
/// layout for balances and allowances), as a token that can only be pulled after an approval.
async fn drop_eip2612(app: &TestApp) {
    let path = crate::harness::repo_root().join("abi/MockPlainToken.json");
    let artifact: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let code = artifact["deployedBytecode"]["object"].as_str().unwrap().to_string();
    let _: Value = app.provider.raw_request("anvil_setCode".into(), (app.token, code)).await.expect("anvil_setCode");
}

#[tokio::test]
async fn a_token_without_eip2612_deposits_through_permit2_by_default_and_without_permit2_is_refused() {
    let app = spawn_app().await;
    let user = wallet();
    app.mint(user.address(), tokens(3)).await;
    drop_eip2612(&app).await;
    let plain = json!({"From": user.address(), "Amount": "3"});

    // No EIP-2612 and no Permit2: no permit can make this deposit gasless.
    let resp = app.post("/api/v1/USDC/payments/deposit", &plain).await;
    assert_error(&resp, StatusCode::UNPROCESSABLE_ENTITY, "permit_unsupported");

    app.deploy_permit2().await;
    approve_permit2(&app, &user, tokens(3)).await;
    let built = app.build("/api/v1/USDC/payments/deposit", &plain).await;
    assert_eq!(built["IsPermit2"], true, "Permit2 is the default where the token has no EIP-2612: {built}");
    assert_eq!(built["Transaction"]["PermitTypedData"]["primaryType"], "PermitSingle");
    app.execute_ok(&user, &built).await;
    assert_eq!(app.balance_of(user.address()).await, internal(3));
    assert_eq!(app.token_balance(user.address()).await, U256::ZERO);
}
