//! Nonces and `execute`: every check before a sponsor spends gas, and what reaches the chain.

use alloy::{
    primitives::{Address, Bytes, U256},
    sol_types::SolCall,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use streampay_relayer::chain::{
    StreamPay,
    eip712::{self, Domain},
    traits::Traits,
};

use crate::harness::{TestApp, assert_error, internal, sign_document, spawn_app, wallet};

fn pay_body(from: Address, to: Address, amount: &str) -> Value {
    json!({"From": from, "To": to, "Amount": amount})
}

async fn nonce_of(app: &TestApp, who: Address) -> Value {
    app.sync_index().await;
    let (status, body) = app.get(&format!("/api/v1/USDC/meta/nonce/{who}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

#[tokio::test]
async fn nonce_is_the_account_nonce_and_builds_reserve_none() {
    let app = spawn_app().await;
    let user = wallet();
    assert_eq!(
        nonce_of(&app, user.address()).await,
        json!({
            "Account": user.address().to_checksum(None), "Nonce": 0, "ChainNonce": 0,
            "Block": alloy::providers::Provider::get_block_number(&app.provider).await.unwrap(),
        })
    );
    let mut body = pay_body(user.address(), wallet().address(), "1");
    body["NonceType"] = json!("account");
    let first = app.build("/api/v1/USDC/payments/", &body).await;
    let second = app.build("/api/v1/USDC/payments/", &body).await;
    assert_eq!(first["Transaction"]["Nonce"], 0);
    assert_eq!(second["Transaction"]["Nonce"], 0, "the first build reserved nothing");
    assert_eq!(nonce_of(&app, user.address()).await["Nonce"], 0);
    assert_eq!(app.streampay().bySigAccountNonces(user.address()).call().await.unwrap(), U256::ZERO);
}

#[tokio::test]
async fn typed_data_and_digest_match_the_contracts_hash() {
    let app = spawn_app().await;
    let user = wallet();
    let built = app.build("/api/v1/USDC/payments/", &pay_body(user.address(), wallet().address(), "1")).await;
    let t = &built["Transaction"];
    let traits: U256 = t["Traits"].as_str().unwrap().parse().unwrap();
    let data: Bytes = t["Data"].as_str().unwrap().parse().unwrap();
    let on_chain = app
        .streampay()
        .hashBySig(
            user.address(),
            streampay_relayer::chain::bindings::IStreamPay::SignedCall { traits, data: data.clone() },
        )
        .call()
        .await
        .unwrap();
    assert_eq!(t["Digest"], on_chain.to_string());
    let typed: alloy::dyn_abi::TypedData = serde_json::from_value(t["TypedData"].clone()).unwrap();
    assert_eq!(typed.eip712_signing_hash().unwrap(), on_chain);
    assert_eq!(t["TypedData"]["primaryType"], "SignedCall");
    // The signer is part of the signed struct (a signature never runs as another account).
    assert_eq!(t["TypedData"]["message"]["signer"], json!(user.address().to_checksum(None)));
    assert!(t["TypedData"]["types"]["EIP712Domain"].is_array());
    assert_eq!(t["TypedData"]["domain"]["name"], "StreamPay");
    assert_eq!(t["To"], json!(app.contract.to_checksum(None)));
    assert_eq!(t["ChainId"], app.chain_id);
    // The traits bind the call to the sponsor and carry nonce and deadline.
    let decoded = Traits::decode(traits).unwrap();
    assert!(decoded.allows_relayer(app.sponsor) && !decoded.allows_relayer(app.other_sponsor));
    assert_eq!(decoded.deadline, t["Deadline"].as_u64().unwrap());
    assert_eq!(decoded.nonce, u128::from(t["Nonce"].as_u64().unwrap()));
    assert_eq!(decoded.nonce_type, streampay_relayer::chain::traits::NonceType::Unique);
}

#[tokio::test]
async fn two_calls_built_in_a_row_both_execute() {
    let app = spawn_app().await;
    let (user, a, b) = (wallet(), wallet().address(), wallet().address());
    app.fund(&user, 10).await;
    let first = app.build("/api/v1/USDC/payments/", &pay_body(user.address(), a, "1")).await;
    let second = app.build("/api/v1/USDC/payments/", &pay_body(user.address(), b, "2")).await;
    app.execute_ok(&user, &first).await;
    app.execute_ok(&user, &second).await;
    assert_eq!(app.balance_of(a).await, internal(1));
    assert_eq!(app.balance_of(b).await, internal(2));
}

#[tokio::test]
async fn execute_out_of_order_is_409_nonce_gap_then_succeeds_in_order() {
    let app = spawn_app().await;
    let user = wallet();
    app.fund(&user, 10).await;
    // Strict ordering on request: account nonces 0 and 1.
    let mut body = pay_body(user.address(), wallet().address(), "1");
    body["NonceType"] = json!("account");
    let first = app.build("/api/v1/USDC/payments/", &body).await;
    body["Nonce"] = json!(1);
    let second = app.build("/api/v1/USDC/payments/", &body).await;
    assert_eq!((first["Transaction"]["Nonce"].clone(), second["Transaction"]["Nonce"].clone()), (json!(0), json!(1)));
    assert_error(&app.execute(&user, &second).await, StatusCode::CONFLICT, "nonce_gap");
    app.execute_ok(&user, &first).await;
    app.execute_ok(&user, &second).await;
}

#[tokio::test]
async fn execute_rejects_a_reused_nonce_with_409() {
    let app = spawn_app().await;
    let user = wallet();
    app.fund(&user, 10).await;
    let built = app.build("/api/v1/USDC/payments/", &pay_body(user.address(), wallet().address(), "1")).await;
    let body = app.signed_execute_body(&user, &built).await;
    assert_eq!(app.post("/api/v1/USDC/meta/execute", &body).await.0, StatusCode::OK);
    assert_error(&app.post("/api/v1/USDC/meta/execute", &body).await, StatusCode::CONFLICT, "nonce_already_used");
    assert_eq!(app.balance_of(user.address()).await, internal(9), "paid once");
}

#[tokio::test]
async fn concurrent_executes_of_one_call_send_it_once() {
    let app = spawn_app().await;
    let user = wallet();
    app.fund(&user, 10).await;
    let built = app.build("/api/v1/USDC/payments/", &pay_body(user.address(), wallet().address(), "1")).await;
    let body = app.signed_execute_body(&user, &built).await;
    let (r1, r2) =
        tokio::join!(app.post("/api/v1/USDC/meta/execute", &body), app.post("/api/v1/USDC/meta/execute", &body));
    let statuses = [r1.0, r2.0];
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::OK).count(), 1, "{} / {}", r1.1, r2.1);
    let loser = if r1.0 == StatusCode::OK { &r2 } else { &r1 };
    assert_eq!(loser.0, StatusCode::CONFLICT, "{}", loser.1);
    let code = loser.1["error"]["code"].as_str().unwrap();
    assert!(code == "nonce_in_flight" || code == "nonce_already_used", "{code}");
    assert_eq!(app.balance_of(user.address()).await, internal(9));
}

#[tokio::test]
async fn execute_rejects_a_signature_by_someone_else_with_422() {
    let app = spawn_app().await;
    let (user, mallory) = (wallet(), wallet());
    app.fund(&user, 10).await;
    let built = app.build("/api/v1/USDC/payments/", &pay_body(user.address(), mallory.address(), "5")).await;
    let mut body = app.signed_execute_body(&user, &built).await;
    body["Signature"] = json!(sign_document(&mallory, &built["Transaction"]["TypedData"]).await);
    let resp = app.post("/api/v1/USDC/meta/execute", &body).await;
    assert_error(&resp, StatusCode::UNPROCESSABLE_ENTITY, "signature_mismatch");
    assert!(resp.1["error"]["message"].as_str().unwrap().contains(&mallory.address().to_string()), "{}", resp.1);
    assert!(app.balance_of(mallory.address()).await.is_zero());
}

#[tokio::test]
async fn execute_rejects_data_changed_after_signing_with_422() {
    let app = spawn_app().await;
    let user = wallet();
    app.fund(&user, 10).await;
    let thief = wallet().address();
    let built = app.build("/api/v1/USDC/payments/", &pay_body(user.address(), wallet().address(), "1")).await;
    let mut body = app.signed_execute_body(&user, &built).await;
    let tampered: Bytes = StreamPay::payCall { receiver: thief, amount: internal(10) }.abi_encode().into();
    body["Data"] = json!(tampered);
    assert_error(
        &app.post("/api/v1/USDC/meta/execute", &body).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "signature_mismatch",
    );
    // A different deadline than signed is the same mismatch.
    let mut body = app.signed_execute_body(&user, &built).await;
    body["Deadline"] = json!(body["Deadline"].as_u64().unwrap() + 1);
    assert_error(
        &app.post("/api/v1/USDC/meta/execute", &body).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "signature_mismatch",
    );
}

#[tokio::test]
async fn execute_rejects_malformed_signatures_with_400() {
    let app = spawn_app().await;
    let user = wallet();
    let built = app.build("/api/v1/USDC/payments/", &pay_body(user.address(), wallet().address(), "1")).await;
    let mut body = app.signed_execute_body(&user, &built).await;
    for bad in ["0x1234", "nothex", "0x"] {
        body["Signature"] = json!(bad);
        assert_error(
            &app.post("/api/v1/USDC/meta/execute", &body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_signature",
        );
    }
}

#[tokio::test]
async fn execute_rejects_an_expired_deadline_with_422() {
    let app = spawn_app().await;
    let user = wallet();
    app.fund(&user, 10).await;
    let built = app.build("/api/v1/USDC/payments/", &pay_body(user.address(), wallet().address(), "1")).await;
    app.advance(3601).await;
    assert_error(&app.execute(&user, &built).await, StatusCode::UNPROCESSABLE_ENTITY, "deadline_expired");
    // The expired build holds nothing: the next build goes through.
    let again = app.build("/api/v1/USDC/payments/", &pay_body(user.address(), wallet().address(), "1")).await;
    app.execute_ok(&user, &again).await;
}

#[tokio::test]
async fn execute_refuses_calls_that_are_not_user_operations_with_422() {
    let app = spawn_app().await;
    let user = wallet();
    let now = app.chain_time().await;
    let domain = Domain::streampay(app.chain_id, app.contract);
    let calls: Vec<Bytes> = vec![
        StreamPay::liquidateCall { account: wallet().address() }.abi_encode().into(),
        StreamPay::claimProjectIdCall {}.abi_encode().into(),
        StreamPay::useBySigAccountNonceCall { advance: 5 }.abi_encode().into(),
        Bytes::from(vec![0xde, 0xad, 0xbe, 0xef]),
    ];
    for data in calls {
        let traits = Traits::account(0, now + 600, Some(app.sponsor)).encode();
        let doc = eip712::signed_call_typed_data(&domain, user.address(), traits, &data);
        let body = json!({"From": user.address(), "Signature": sign_document(&user, &doc).await, "Data": data,
                          "Nonce": 0, "Deadline": now + 600});
        assert_error(
            &app.post("/api/v1/USDC/meta/execute", &body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "call_not_allowed",
        );
    }
}

#[tokio::test]
async fn execute_refuses_a_batch_over_100_calls_with_422() {
    let app = spawn_app().await;
    let user = wallet();
    let now = app.chain_time().await;
    let pay: Bytes = StreamPay::payCall { receiver: wallet().address(), amount: U256::from(1) }.abi_encode().into();
    let data: Bytes = StreamPay::multicallCall { data: vec![pay; 101] }.abi_encode().into();
    let body = json!({"From": user.address(), "Signature": format!("0x{}", "11".repeat(65)), "Data": data,
                      "Nonce": 0, "Deadline": now + 600});
    assert_error(
        &app.post("/api/v1/USDC/meta/execute", &body).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "batch_too_large",
    );
}

#[tokio::test]
async fn execute_decodes_a_revert_into_the_contracts_custom_error() {
    let app = spawn_app().await;
    let user = wallet();
    app.fund(&user, 1).await;
    let built = app.build("/api/v1/USDC/payments/", &pay_body(user.address(), wallet().address(), "2")).await;
    let resp = app.execute(&user, &built).await;
    assert_error(&resp, StatusCode::UNPROCESSABLE_ENTITY, "simulation_reverted");
    let message = resp.1["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("StreamPayInsufficientBalance") && message.contains(&user.address().to_checksum(None)),
        "{message}"
    );
}

#[tokio::test]
async fn execute_accepts_a_call_signed_for_any_relayer() {
    // A dapp that builds its own call may leave the relayer bits zero; execute tries them too.
    let app = spawn_app().await;
    let (user, to) = (wallet(), wallet().address());
    app.fund(&user, 3).await;
    let nonce = nonce_of(&app, user.address()).await["Nonce"].as_u64().unwrap();
    let deadline = app.chain_time().await + 600;
    let data: Bytes = StreamPay::payCall { receiver: to, amount: internal(1) }.abi_encode().into();
    let traits = Traits::account(nonce, deadline, None).encode();
    let doc =
        eip712::signed_call_typed_data(&Domain::streampay(app.chain_id, app.contract), user.address(), traits, &data);
    let body = json!({"From": user.address(), "Signature": sign_document(&user, &doc).await, "Data": data,
                      "Nonce": nonce, "Deadline": deadline});
    let (status, resp) = app.post("/api/v1/USDC/meta/execute", &body).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_eq!(app.balance_of(to).await, internal(1));
}

#[tokio::test]
async fn execute_answers_hash_and_gas_and_records_the_transaction() {
    let app = spawn_app().await;
    let user = wallet();
    app.fund(&user, 5).await;
    let built = app.build("/api/v1/USDC/payments/", &pay_body(user.address(), wallet().address(), "1")).await;
    let done = app.execute_ok(&user, &built).await;
    assert_eq!(done["From"], json!(user.address().to_checksum(None)));
    let hash = done["TransactionHash"].as_str().unwrap();
    let row: (String, i64, Vec<u8>) =
        sqlx::query_as("SELECT status, gas_used, sponsor FROM relay_transactions WHERE tx_hash = decode($1, 'hex')")
            .bind(&hash[2..])
            .fetch_one(app.store.pool())
            .await
            .unwrap();
    // `confirmed` once final, at the chain's finality depth (64 blocks by default).
    assert!(row.0 == "mined" || row.0 == "confirmed", "{}", row.0);
    assert_eq!(row.1 as u64, done["GasUsed"].as_u64().unwrap());
    assert_eq!(row.2, app.sponsor.to_vec());
}

#[tokio::test]
async fn execute_with_a_number_that_is_not_one_is_400() {
    let app = spawn_app().await;
    let body = json!({"From": wallet().address(), "Signature": "0x00", "Data": "0x00", "Nonce": "-1", "Deadline": 5});
    assert_error(&app.post("/api/v1/USDC/meta/execute", &body).await, StatusCode::BAD_REQUEST, "invalid_number");
    let body =
        json!({"From": wallet().address(), "Signature": "0x00", "Data": "0x00", "Nonce": 0, "Deadline": 1u64 << 41});
    assert_error(&app.post("/api/v1/USDC/meta/execute", &body).await, StatusCode::BAD_REQUEST, "invalid_deadline");
}

#[tokio::test]
async fn a_permit_signed_by_someone_else_is_422_permit_signature_mismatch() {
    let app = spawn_app().await;
    let (user, mallory) = (wallet(), wallet());
    app.mint(user.address(), crate::harness::tokens(10)).await;
    let built = app.build("/api/v1/USDC/payments/deposit", &json!({"From": user.address(), "Amount": "5"})).await;
    let mut body = app.signed_execute_body(&user, &built).await;
    body["Permit"]["Signature"] = json!(sign_document(&mallory, &built["Transaction"]["PermitTypedData"]).await);
    assert_error(
        &app.post("/api/v1/USDC/meta/execute", &body).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "permit_signature_mismatch",
    );
    // Without any permit the deposit has no allowance: the token's own error comes back decoded.
    let mut body = app.signed_execute_body(&user, &built).await;
    body.as_object_mut().unwrap().remove("Permit");
    let resp = app.post("/api/v1/USDC/meta/execute", &body).await;
    assert_error(&resp, StatusCode::UNPROCESSABLE_ENTITY, "simulation_reverted");
    assert!(resp.1["error"]["message"].as_str().unwrap().contains("ERC20InsufficientAllowance"), "{}", resp.1);
}

#[tokio::test]
async fn a_nonce_far_ahead_is_409_nonce_gap_not_a_server_error() {
    let app = spawn_app().await;
    let user = wallet();
    let mut build = pay_body(user.address(), wallet().address(), "1");
    build["NonceType"] = json!("account");
    build["Nonce"] = json!(u64::MAX);
    let built = app.build("/api/v1/USDC/payments/", &build).await;
    let body = app.signed_execute_body(&user, &built).await;
    assert_error(&app.post("/api/v1/USDC/meta/execute", &body).await, StatusCode::CONFLICT, "nonce_gap");
}

/// Runtime code of a minimal ERC-1271 wallet whose `isValidSignature` always answers `magic`.
fn erc1271_wallet_code(magic: [u8; 4]) -> Bytes {
    // PUSH4 magic; PUSH1 0xe0; SHL; PUSH1 0; MSTORE; PUSH1 0x20; PUSH1 0; RETURN
    let mut code = vec![0x63];
    code.extend_from_slice(&magic);
    code.extend_from_slice(&[0x60, 0xe0, 0x1b, 0x60, 0x00, 0x52, 0x60, 0x20, 0x60, 0x00, 0xf3]);
    code.into()
}

async fn set_code(app: &TestApp, at: Address, code: Bytes) {
    use alloy::providers::Provider;
    let _: Value = app.provider.raw_request("anvil_setCode".into(), (at, code)).await.unwrap();
}

#[tokio::test]
async fn contract_wallets_sign_through_erc1271() {
    let app = spawn_app().await;
    let (user, to) = (wallet(), wallet().address());
    let (approving, refusing) = (wallet().address(), wallet().address());
    set_code(&app, approving, erc1271_wallet_code([0x16, 0x26, 0xba, 0x7e])).await;
    set_code(&app, refusing, erc1271_wallet_code([0xff, 0xff, 0xff, 0xff])).await;
    app.fund(&user, 10).await;
    for wallet_addr in [approving, refusing] {
        let built = app.build("/api/v1/USDC/payments/", &pay_body(user.address(), wallet_addr, "2")).await;
        app.execute_ok(&user, &built).await;
    }

    // The wallet's own signature scheme decides; the relayer forwards the bytes untouched.
    let built = app.build("/api/v1/USDC/payments/", &pay_body(approving, to, "1.5")).await;
    let t = &built["Transaction"];
    let body = json!({"From": approving, "Signature": "0xc0ffee", "Data": t["Data"], "Nonce": t["Nonce"],
                      "Deadline": t["Deadline"]});
    let (status, resp) = app.post("/api/v1/USDC/meta/execute", &body).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_eq!(app.balance_of(to).await, internal(3) / U256::from(2));

    let built = app.build("/api/v1/USDC/payments/", &pay_body(refusing, to, "1")).await;
    let t = &built["Transaction"];
    let body = json!({"From": refusing, "Signature": "0xc0ffee", "Data": t["Data"], "Nonce": t["Nonce"],
                      "Deadline": t["Deadline"]});
    assert_error(
        &app.post("/api/v1/USDC/meta/execute", &body).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "signature_mismatch",
    );
    assert_eq!(app.balance_of(refusing).await, internal(2));
}

/// Runtime code of an ERC-1271 wallet that loops `rounds` times (26 gas each) before answering
/// the magic value: a valid signature, however expensive.
fn erc1271_costly_wallet_code(rounds: u32) -> Bytes {
    assert!(rounds > 0 && rounds < 1 << 24);
    // PUSH3 rounds; loop: JUMPDEST; PUSH1 1; SWAP1; SUB; DUP1; PUSH1 4; JUMPI; POP; then as above.
    let mut code = vec![0x62];
    code.extend_from_slice(&rounds.to_be_bytes()[1..]);
    code.extend_from_slice(&[0x5b, 0x60, 0x01, 0x90, 0x03, 0x80, 0x60, 0x04, 0x57, 0x50]);
    code.extend_from_slice(&erc1271_wallet_code([0x16, 0x26, 0xba, 0x7e]));
    code.into()
}

#[tokio::test]
async fn a_contract_wallet_that_burns_gas_in_is_valid_signature_is_422_signature_check_gas_exceeded() {
    let app = spawn_app().await;
    let (user, to) = (wallet(), wallet().address());
    // About 312,000 gas, then "valid"; and a wallet that loops until the gas is gone.
    let (costly, endless) = (wallet().address(), wallet().address());
    set_code(&app, costly, erc1271_costly_wallet_code(12_000)).await;
    set_code(&app, endless, Bytes::from_static(&[0x5b, 0x60, 0x00, 0x56])).await;
    app.fund(&user, 10).await;
    for wallet_addr in [costly, endless] {
        let built = app.build("/api/v1/USDC/payments/", &pay_body(user.address(), wallet_addr, "2")).await;
        app.execute_ok(&user, &built).await;
    }
    for signer in [costly, endless] {
        let built = app.build("/api/v1/USDC/payments/", &pay_body(signer, to, "1")).await;
        let t = &built["Transaction"];
        let body = json!({"From": signer, "Signature": "0xc0ffee", "Data": t["Data"], "Nonce": t["Nonce"],
                          "Deadline": t["Deadline"]});
        let started = std::time::Instant::now();
        let resp = app.post("/api/v1/USDC/meta/execute", &body).await;
        assert_error(&resp, StatusCode::UNPROCESSABLE_ENTITY, "signature_check_gas_exceeded");
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "refused only after {:?}", started.elapsed());
        assert_eq!(app.balance_of(signer).await, internal(2), "nothing was relayed for {signer}");
    }
    // A cheap wallet under the cap is still checked as before (contract_wallets_sign_through_erc1271).
    let cheap = wallet().address();
    set_code(&app, cheap, erc1271_costly_wallet_code(1_000)).await;
    let built = app.build("/api/v1/USDC/payments/", &pay_body(user.address(), cheap, "2")).await;
    app.execute_ok(&user, &built).await;
    let built = app.build("/api/v1/USDC/payments/", &pay_body(cheap, to, "1")).await;
    let t = &built["Transaction"];
    let body = json!({"From": cheap, "Signature": "0xc0ffee", "Data": t["Data"], "Nonce": t["Nonce"],
                      "Deadline": t["Deadline"]});
    let (status, resp) = app.post("/api/v1/USDC/meta/execute", &body).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
}

#[tokio::test]
async fn prefer_respond_async_answers_202_and_the_transaction_can_be_polled() {
    let app = spawn_app().await;
    let user = wallet();
    app.fund(&user, 5).await;
    let built = app.build("/api/v1/USDC/payments/", &pay_body(user.address(), wallet().address(), "1")).await;
    let body = app.signed_execute_body(&user, &built).await;
    let resp = app.execute_async(&body).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(resp.headers()["preference-applied"], "respond-async");
    let accepted: Value = resp.json().await.unwrap();
    let status_path = accepted["Status"].as_str().unwrap().to_string();
    let mut polled = Value::Null;
    for _ in 0..100 {
        let (status, body) = app.get(&status_path).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        polled = body;
        if polled["Status"] != "submitted" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(polled["Status"], "mined", "{polled}");
    assert_eq!(polled["TransactionHash"], accepted["TransactionHash"]);
    assert!(polled["GasUsed"].as_u64().unwrap() > 0);
    assert_eq!(app.balance_of(user.address()).await, internal(4));
}

#[tokio::test]
async fn another_keys_or_an_unknown_transaction_is_404() {
    let app = spawn_app().await;
    let user = wallet();
    app.fund(&user, 1).await;
    let (_, listed) = app.get("/api/v1/transactions/1").await;
    assert_eq!(listed["Status"], "mined", "{listed}");
    let other = app.store.create_api_key("other", &[app.sponsor], true).await.unwrap();
    let resp = app.get_with_key("/api/v1/transactions/1", Some(&other.key)).await;
    assert_error(&resp, StatusCode::NOT_FOUND, "transaction_not_found");
    assert_error(&app.get("/api/v1/transactions/999").await, StatusCode::NOT_FOUND, "transaction_not_found");
    assert_error(&app.get("/api/v1/transactions/abc").await, StatusCode::NOT_FOUND, "transaction_not_found");
}

#[tokio::test]
async fn a_nonce_already_being_executed_is_409_nonce_in_flight() {
    let app = spawn_app().await;
    let user = wallet();
    app.fund(&user, 5).await;
    let built = app.build("/api/v1/USDC/payments/", &pay_body(user.address(), wallet().address(), "1")).await;
    // Another relayer process has claimed this nonce and not finished yet.
    // Built calls use unique nonces by default.
    assert_eq!(built["Transaction"]["NonceType"], "unique");
    let scope = streampay_relayer::store::NonceScope {
        chain_id: app.chain_id,
        contract: app.contract,
        signer: user.address(),
        nonce_type: streampay_relayer::chain::traits::NonceType::Unique,
    };
    let nonce = built["Transaction"]["Nonce"].as_u64().unwrap();
    let deadline = built["Transaction"]["Deadline"].as_u64().unwrap();
    assert_eq!(app.store.claim_nonce(scope, nonce, deadline).await.unwrap(), streampay_relayer::store::Claim::Claimed);
    assert_error(&app.execute(&user, &built).await, StatusCode::CONFLICT, "nonce_in_flight");
    assert_eq!(app.balance_of(user.address()).await, internal(5), "nothing sent");
}

#[tokio::test]
async fn malformed_data_is_400_invalid_data() {
    let app = spawn_app().await;
    let body = json!({"From": wallet().address(), "Signature": "0x00", "Data": "0xabc", "Nonce": 0, "Deadline": 5});
    assert_error(&app.post("/api/v1/USDC/meta/execute", &body).await, StatusCode::BAD_REQUEST, "invalid_data");
}

#[tokio::test]
async fn traits_must_match_the_request_and_allow_the_sponsor() {
    let app = spawn_app().await;
    let user = wallet();
    app.fund(&user, 5).await;
    let built = app.build("/api/v1/USDC/payments/", &pay_body(user.address(), wallet().address(), "1")).await;
    let mut body = app.signed_execute_body(&user, &built).await;
    body["Traits"] = json!("not a number");
    assert_error(
        &app.post("/api/v1/USDC/meta/execute", &body).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_traits",
    );
    // Traits of another nonce than the request's.
    let other = Traits::account(7, body["Deadline"].as_u64().unwrap(), Some(app.sponsor)).encode();
    body["Traits"] = json!(other.to_string());
    assert_error(
        &app.post("/api/v1/USDC/meta/execute", &body).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_traits",
    );
    // A call bound to another relayer cannot be relayed by this sponsor.
    let bound =
        Traits::account(body["Nonce"].as_u64().unwrap(), body["Deadline"].as_u64().unwrap(), Some(app.other_sponsor))
            .encode();
    body["Traits"] = json!(bound.to_string());
    assert_error(
        &app.post("/api/v1/USDC/meta/execute", &body).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "sponsor_mismatch",
    );
    // The exact traits from the build response work.
    body["Traits"] = built["Transaction"]["Traits"].clone();
    assert_eq!(app.post("/api/v1/USDC/meta/execute", &body).await.0, StatusCode::OK);
}
