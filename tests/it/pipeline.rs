//! The sponsor pipeline: many transactions in flight per sponsor, none waiting for another's
//! receipt.

use alloy::{primitives::U256, providers::Provider};
use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{assert_error, internal, sign_document, spawn_app, tokens, wallet};

#[tokio::test]
async fn one_sponsor_has_many_transactions_in_flight_at_once() {
    // Executes that waited for each other's receipts could never share a block; in flight
    // together, they do, with consecutive nonces. Blocks are mined by the test, once all four
    // wait in the node's pool, so no block boundary of the node's own can split them.
    let app = spawn_app().await;
    let users: Vec<_> = (0..4).map(|_| wallet()).collect();
    app.mint_many(&users.iter().map(|u| u.address()).collect::<Vec<_>>(), tokens(10)).await;
    let mut built = Vec::new();
    for user in &users {
        built.push(app.build("/api/v1/USDC/payments/deposit", &json!({"From": user.address(), "Amount": "10"})).await);
    }
    let mut bodies = Vec::new();
    for (user, b) in users.iter().zip(&built) {
        bodies.push(app.signed_execute_body(user, b).await);
    }
    let _: serde_json::Value = app.provider.raw_request("evm_setAutomine".into(), (false,)).await.unwrap();
    let executes = futures::future::join_all(bodies.iter().map(|body| app.post("/api/v1/USDC/meta/execute", body)));
    let mine_when_all_wait = async {
        let end = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let waiting: i64 = sqlx::query_scalar("SELECT count(*) FROM relay_transactions WHERE status = 'submitted'")
                .fetch_one(app.store.pool())
                .await
                .unwrap();
            if waiting == 4 {
                break;
            }
            assert!(tokio::time::Instant::now() < end, "only {waiting} of 4 executes reached the node");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let _: serde_json::Value = app.provider.raw_request("evm_mine".into(), ()).await.unwrap();
        let _: serde_json::Value = app.provider.raw_request("evm_setAutomine".into(), (true,)).await.unwrap();
    };
    let (results, ()) = tokio::join!(executes, mine_when_all_wait);
    let mut blocks = Vec::new();
    let mut sponsor_nonces = Vec::new();
    for (status, resp) in &results {
        assert_eq!(*status, StatusCode::OK, "{resp}");
        blocks.push(resp["BlockNumber"].as_u64().unwrap());
        let tx = app
            .provider
            .get_transaction_by_hash(resp["TransactionHash"].as_str().unwrap().parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        sponsor_nonces.push(alloy::consensus::Transaction::nonce(&tx));
    }
    blocks.dedup();
    assert_eq!(blocks.len(), 1, "all four mined in one block: {blocks:?}");
    sponsor_nonces.sort();
    assert!(sponsor_nonces.windows(2).all(|w| w[1] == w[0] + 1), "consecutive sponsor nonces: {sponsor_nonces:?}");
    for user in &users {
        assert_eq!(app.balance_of(user.address()).await, internal(10));
    }
    assert!(app.native_balance(users[0].address()).await == U256::ZERO);
}

fn pay(from: alloy::primitives::Address, amount: &str) -> serde_json::Value {
    json!({"From": from, "To": wallet().address(), "Amount": amount})
}

#[tokio::test]
async fn a_refused_execute_changes_nothing_and_the_signed_call_can_still_run() {
    let app = spawn_app().await;
    let (user, mallory) = (wallet(), wallet());
    app.fund(&user, 10).await;

    // Signed by someone else: 422, and the user's own signature of the same call still runs.
    let built = app.build("/api/v1/USDC/payments/", &pay(user.address(), "1")).await;
    let mut body = app.signed_execute_body(&user, &built).await;
    body["Signature"] = json!(sign_document(&mallory, &built["Transaction"]["TypedData"]).await);
    assert_error(
        &app.post("/api/v1/USDC/meta/execute", &body).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "signature_mismatch",
    );
    app.execute_ok(&user, &built).await;

    // Would revert in simulation (pays more than the balance): 422; other calls are unaffected.
    let too_much = app.build("/api/v1/USDC/payments/", &pay(user.address(), "100")).await;
    assert_error(&app.execute(&user, &too_much).await, StatusCode::UNPROCESSABLE_ENTITY, "simulation_reverted");
    let next = app.build("/api/v1/USDC/payments/", &pay(user.address(), "2")).await;
    app.execute_ok(&user, &next).await;
    assert_eq!(app.balance_of(user.address()).await, internal(7));

    // The executed call cannot run twice: a used nonce, never a 500.
    let stale = app.execute(&user, &built).await;
    assert_error(&stale, StatusCode::CONFLICT, "nonce_already_used");
}

#[tokio::test]
async fn a_key_with_several_sponsors_sends_each_call_to_the_least_busy_one() {
    const EXECUTE: &str = "/api/v1/USDC/meta/execute";
    let app = spawn_app().await;
    let (a, b) = (app.sponsor, app.other_sponsor);
    let key = app.store.create_api_key("pool", &[a, b], true).await.unwrap().key;
    let build = |from: alloy::primitives::Address, sponsor: Option<alloy::primitives::Address>| {
        let mut body = json!({"From": from, "Amount": "10"});
        if let Some(s) = sponsor {
            body["Sponsor"] = json!(s);
        }
        let key = key.clone();
        let app = &app;
        async move {
            let (status, built) = app.post_with_key("/api/v1/USDC/payments/deposit", Some(&key), &body).await;
            assert_eq!(status, StatusCode::OK, "{built}");
            built
        }
    };
    let sponsor_of =
        |built: &serde_json::Value| built["Sponsor"].as_str().unwrap().parse::<alloy::primitives::Address>().unwrap();
    let execute_async = |body: serde_json::Value| {
        let key = key.clone();
        let app = &app;
        async move {
            let resp = app
                .http
                .post(app.url(EXECUTE))
                .header("X-API-Key", key)
                .header("Prefer", "respond-async")
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::ACCEPTED, "{}", resp.text().await.unwrap());
        }
    };

    // Idle: a burst of builds naming no sponsor is spread over both, not all sent to the first.
    let burst = futures::future::join_all((0..4).map(|_| build(wallet().address(), None))).await;
    let used: std::collections::BTreeSet<_> = burst.iter().map(sponsor_of).collect();
    assert_eq!(used, [a, b].into_iter().collect(), "both sponsors used by an idle burst");

    // A_CALLS calls go to A, then B_CALLS builds name no sponsor. Each of those builds counts one
    // pick for B, and so does the execute that names no sponsor, until the pool's next count
    // (every 100 ms) replaces the picks by B's open rows; so B's load before the last build is at
    // most 2 × (B_CALLS − 1), which stays below A's A_CALLS whenever the count runs.
    const A_CALLS: usize = 5;
    const B_CALLS: usize = 3;
    let users: Vec<_> = (0..A_CALLS + B_CALLS).map(|_| wallet()).collect();
    app.mint_many(&users.iter().map(|u| u.address()).collect::<Vec<_>>(), tokens(10)).await;
    // Sponsor A gets busy: with automine off nothing is mined, so A's calls stay open (pending or
    // submitted) until the test mines them below; the chain cannot overtake the assertions.
    let _: serde_json::Value = app.provider.raw_request("evm_setAutomine".into(), (false,)).await.unwrap();
    for u in &users[..A_CALLS] {
        let built = build(u.address(), Some(a)).await;
        assert_eq!(sponsor_of(&built), a);
        execute_async(app.signed_execute_body(u, &built).await).await;
    }
    let open: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM relay_transactions WHERE sponsor = $1 AND status IN ('pending', 'submitted')",
    )
    .bind(a.as_slice())
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!(open, A_CALLS as i64, "A's calls wait unmined");
    // Wait (bounded) until the pool's own count has seen them, instead of sleeping a poll or two.
    let counted = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while app.chain().sponsors.load_of(&a) < A_CALLS as u64 {
        assert!(
            tokio::time::Instant::now() < counted,
            "the pool never counted A's {A_CALLS} open calls (counts {})",
            app.chain().sponsors.load_of(&a)
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for (i, u) in users[A_CALLS..].iter().enumerate() {
        let built = build(u.address(), None).await;
        assert_eq!(
            sponsor_of(&built),
            b,
            "A has {A_CALLS} calls in flight, B at most {}: the next go to B",
            app.chain().sponsors.load_of(&b)
        );
        let mut body = app.signed_execute_body(u, &built).await;
        if i == 0 {
            // Executed without naming the sponsor: the signature's traits say which one.
            body.as_object_mut().unwrap().remove("Sponsor");
        }
        execute_async(body).await;
    }
    let _: serde_json::Value = app.provider.raw_request("evm_setAutomine".into(), (true,)).await.unwrap();
    let end = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let open: i64 =
            sqlx::query_scalar("SELECT count(*) FROM relay_transactions WHERE status IN ('pending', 'submitted')")
                .fetch_one(app.store.pool())
                .await
                .unwrap();
        if open == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < end, "{open} still open");
        let _: serde_json::Value = app.provider.raw_request("evm_mine".into(), ()).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    for (i, u) in users.iter().enumerate() {
        assert_eq!(app.balance_of(u.address()).await, internal(10), "user {i} deposited once");
        let (sponsor, status): (Vec<u8>, String) =
            sqlx::query_as("SELECT sponsor, status FROM relay_transactions WHERE signer = $1")
                .bind(u.address().as_slice())
                .fetch_one(app.store.pool())
                .await
                .unwrap();
        assert_eq!(alloy::primitives::Address::from_slice(&sponsor), if i < A_CALLS { a } else { b }, "user {i}");
        assert!(status == "mined" || status == "confirmed", "user {i}: {status}");
    }
}

#[tokio::test]
async fn a_batch_of_queued_calls_is_written_whole_or_not_at_all() {
    use alloy::primitives::{B256, Bytes};
    use streampay_relayer::store::{AttemptKind, NewTransaction, SignedAttempt};
    let app = spawn_app().await;
    let item = |meta_nonce: u64| NewTransaction {
        chain_id: app.chain_id,
        contract: app.contract,
        api_key_id: app.api_key_id,
        signer: wallet().address(),
        meta_nonce,
        meta_nonce_type: streampay_relayer::chain::traits::NonceType::Account,
        call_digest: None,
        deadline: 1,
        sponsor: app.sponsor,
        calldata: Bytes::from(vec![1, 2, 3]),
        gas_limit: 100_000,
        history: None,
    };
    let attempt = |hash: B256| SignedAttempt {
        hash,
        raw: Bytes::from(vec![9]),
        kind: AttemptKind::Call,
        max_fee_per_gas: 2,
        max_priority_fee_per_gas: 1,
    };
    let batch = [item(0), item(0), item(0)];
    // Two items signed to the same hash: the batch violates a unique key and must leave nothing.
    let clash = app
        .store
        .enqueue_transactions(&batch, 5, |i, _| Ok(attempt(B256::repeat_byte(if i == 2 { 1 } else { 2 }))))
        .await;
    let clash = clash.map(|_| ()).unwrap_err();
    assert!(format!("{clash:#}").contains("queue"), "{clash:#}");
    let rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM relay_transactions").fetch_one(app.store.pool()).await.unwrap();
    assert_eq!(rows, 0, "no row of a failed batch is kept");
    // The nonces it took were given back: the next batch starts at the chain's count.
    let queued = app
        .store
        .enqueue_transactions(&batch, 5, |i, nonce| Ok(attempt(B256::with_last_byte(i as u8 + 10 * nonce as u8))))
        .await
        .unwrap();
    let nonces: Vec<u64> = queued.iter().map(|(_, n, _)| *n).collect();
    assert_eq!(nonces, vec![5, 6, 7]);
    let attempts: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tx_attempts").fetch_one(app.store.pool()).await.unwrap();
    assert_eq!(attempts, 3, "one attempt per row");
}
