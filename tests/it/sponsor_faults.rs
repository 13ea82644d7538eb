//! The sponsor worker under faults the review found it mishandling (S6–S8), each on a real Anvil
//! and Postgres: a stale lease owner, a nonce gap, a node error nobody has seen before, a base
//! fee above the operator's cap, and a node that hides receipts while drift is being decided.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use alloy::{primitives::U256, providers::Provider};
use reqwest::StatusCode;
use serde_json::{Value, json};

use streampay_relayer::{
    chain::traits::NonceType,
    pipeline::PipelineSettings,
    store::{AttemptKind, Lease, LeaseLost, NonceScope, NonceStatus, Outcome, SignedAttempt},
};

use crate::pipeline_stack::{Stack, fast_settings};
use crate::rpc_proxy::RpcProxy;

const EXECUTE: &str = "/api/v1/USDC/meta/execute";
const ASYNC: &[(&str, &str)] = &[("Prefer", "respond-async")];

/// Waits (bounded) until `cond` holds, failing with `what` otherwise.
async fn wait_for<F: std::future::Future<Output = bool>>(what: &str, secs: u64, mut cond: impl FnMut() -> F) {
    let end = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !cond().await {
        assert!(tokio::time::Instant::now() < end, "never happened within {secs} s: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn lease_owner(stack: &Stack) -> Option<String> {
    sqlx::query_scalar("SELECT lease_owner FROM sponsor_accounts").fetch_one(stack.store.pool()).await.unwrap()
}

/// `(status, last_error, tx_hash, sponsor_nonce)` of row `id`.
async fn row(stack: &Stack, id: i64) -> (String, Option<String>, Vec<u8>, i64) {
    sqlx::query_as("SELECT status, last_error, tx_hash, sponsor_nonce FROM relay_transactions WHERE id = $1")
        .bind(id)
        .fetch_one(stack.store.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_stale_lease_owner_cannot_write_the_sponsor_queue() {
    let stack = Stack::start(&[]).await;
    let relayer = stack.replica(fast_settings()).await;
    let user = stack.users(1).remove(0);
    stack.fund_wallets(std::slice::from_ref(&user), 10, true).await;
    let body = stack.signed_deposit(&relayer.base, &user, 10).await;
    let (status, resp) = stack.post(&relayer.base, EXECUTE, &body, &[]).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let id = resp["TransactionId"].as_i64().unwrap();

    // Process "stale" holds the lease (the replica's worker cannot take it while it is live).
    sqlx::query("UPDATE sponsor_accounts SET lease_owner = 'stale', lease_until = now() + interval '1 hour'")
        .execute(stack.store.pool())
        .await
        .unwrap();
    let stale = Lease { chain_id: stack.chain_id, sponsor: stack.sponsor(), owner: "stale".into() };
    stack.store.note_error(&stale, id, "written while holding the lease").await.expect("a live lease writes");
    assert_eq!(row(&stack, id).await.1.as_deref(), Some("written while holding the lease"));

    // Its lease runs out (a tick stalled on the node, a pause) and the replica takes over.
    sqlx::query("UPDATE sponsor_accounts SET lease_until = now() - interval '1 second'")
        .execute(stack.store.pool())
        .await
        .unwrap();
    wait_for("the replica takes the lease over", 20, || async {
        lease_owner(&stack).await.as_deref() != Some("stale")
    })
    .await;
    let before = row(&stack, id).await;

    // Every write the stale process could still attempt is refused, and changes nothing.
    let lost = |r: anyhow::Result<()>, what: &str| {
        let e = r.expect_err(what);
        assert!(e.is::<LeaseLost>(), "{what}: {e:#}");
    };
    lost(stack.store.note_error(&stale, id, "stale").await, "note_error");
    lost(stack.store.mark_submitted(&stale, &[id]).await, "mark_submitted");
    let attempt = SignedAttempt {
        hash: alloy::primitives::B256::repeat_byte(7),
        raw: vec![1, 2, 3].into(),
        kind: AttemptKind::Cancel,
        max_fee_per_gas: 1,
        max_priority_fee_per_gas: 1,
    };
    lost(stack.store.add_attempt(&stale, id, before.3 as u64, &attempt).await, "add_attempt");
    let scope = NonceScope {
        chain_id: stack.chain_id,
        contract: stack.contract,
        signer: user.address(),
        nonce_type: NonceType::Account,
    };
    lost(
        stack.store.settle_transaction(&stale, id, &Outcome::Expired, (scope, 0, NonceStatus::Failed)).await,
        "settle_transaction",
    );
    let mined = streampay_relayer::store::MinedRow {
        id,
        hash: attempt.hash,
        gas_used: 1,
        block_number: 1,
        block_hash: attempt.hash,
        effective_gas_price: 1,
        scope,
        meta_nonce: 0,
    };
    lost(stack.store.settle_mined(&stale, &[mined]).await, "settle_mined");
    let requeued = stack.store.requeue_transaction(&stale, id, 0, |_| Ok(attempt.clone())).await;
    lost(requeued.map(|_| ()), "requeue_transaction");
    assert!(!stack.store.raise_sponsor_nonce(&stale, 1_000).await.unwrap(), "raise_sponsor_nonce");

    assert_eq!(row(&stack, id).await, before, "the stale owner changed nothing");
    let next: i64 =
        sqlx::query_scalar("SELECT next_nonce FROM sponsor_accounts").fetch_one(stack.store.pool()).await.unwrap();
    assert!(next < 1_000, "the counter was not raised by the stale owner: {next}");
    let attempts: i64 = sqlx::query_scalar("SELECT count(*) FROM tx_attempts WHERE transaction_id = $1")
        .bind(id)
        .fetch_one(stack.store.pool())
        .await
        .unwrap();
    assert_eq!(attempts, 1, "no attempt recorded by the stale owner");
}

#[tokio::test]
async fn a_nonce_no_row_holds_is_filled_and_the_queue_behind_it_moves() {
    let stack = Stack::start(&[]).await;
    // The replica's worker is held off while the gap is made.
    sqlx::query(
        "INSERT INTO sponsor_accounts (chain_id, address, next_nonce, lease_owner, lease_until)
         VALUES ($1, $2, 0, 'ghost', now() + interval '1 hour')",
    )
    .bind(stack.chain_id as i64)
    .bind(stack.sponsor().as_slice())
    .execute(stack.store.pool())
    .await
    .unwrap();
    let relayer = stack.replica(fast_settings()).await;
    let users = stack.users(2);
    stack.fund_wallets(&users, 10, true).await;
    for u in &users {
        let body = stack.signed_deposit(&relayer.base, u, 10).await;
        let (status, resp) = stack.post(&relayer.base, EXECUTE, &body, ASYNC).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{resp}");
    }
    assert_eq!(stack.rows().await.iter().map(|(_, n)| *n).collect::<Vec<_>>(), [0, 1]);
    // What a double requeue by a stale process left behind: the row at nonce 0 moved to nonce 2
    // (re-signed there), and nothing holds nonce 0 any more.
    let id0: i64 = sqlx::query_scalar("SELECT id FROM relay_transactions WHERE sponsor_nonce = 0")
        .fetch_one(stack.store.pool())
        .await
        .unwrap();
    let ghost = Lease { chain_id: stack.chain_id, sponsor: stack.sponsor(), owner: "ghost".into() };
    let (calldata, gas): (Vec<u8>, i64) =
        sqlx::query_as("SELECT calldata, gas_limit FROM relay_transactions WHERE id = $1")
            .bind(id0)
            .fetch_one(stack.store.pool())
            .await
            .unwrap();
    let sponsor = streampay_relayer::pipeline::Sponsor::new(stack.sponsor_signer.clone(), stack.chain_id);
    let fees = stack.provider.estimate_eip1559_fees().await.unwrap();
    let moved = stack
        .store
        .requeue_transaction(&ghost, id0, 2, |nonce| {
            sponsor.sign_call(
                nonce,
                stack.contract,
                calldata.clone().into(),
                gas as u64,
                streampay_relayer::pipeline::Fees {
                    max_fee_per_gas: fees.max_fee_per_gas,
                    max_priority_fee_per_gas: fees.max_priority_fee_per_gas,
                },
            )
        })
        .await
        .unwrap();
    assert_eq!(moved, 2);
    // The ghost goes away; the replica's worker takes over and finds nonce 0 held by nobody.
    sqlx::query("UPDATE sponsor_accounts SET lease_until = now() - interval '1 second'")
        .execute(stack.store.pool())
        .await
        .unwrap();
    stack.settle(false, Duration::from_secs(60)).await;
    // Both calls ran once; the gap took one cancellation (the one "outside" transaction).
    stack.assert_exactly_once(&users, 10, 1).await;
    assert_eq!(stack.sponsor_chain_nonce().await, 3);
}

#[tokio::test]
async fn an_unknown_node_error_is_retried_and_never_cancels_the_call() {
    let stack = Stack::start(&[]).await;
    let proxy = RpcProxy::start_at(stack.anvil_url().as_str()).await;
    let refusals = Arc::new(AtomicU32::new(0));
    let counted = refusals.clone();
    // The node refuses the first broadcasts with an error no table lists (a provider's own).
    proxy.set(move |req: &Value| {
        (req["method"] == "eth_sendRawTransaction" && counted.fetch_add(1, Ordering::SeqCst) < 5)
            .then(|| json!({ "error": { "code": -32000, "message": "upstream said no (code 0x17)" } }))
    });
    let relayer = stack.replica_via(fast_settings(), proxy.provider()).await;
    let user = stack.users(1).remove(0);
    stack.fund_wallets(std::slice::from_ref(&user), 10, true).await;
    let body = stack.signed_deposit(&relayer.base, &user, 10).await;
    let (status, resp) = stack.post(&relayer.base, EXECUTE, &body, ASYNC).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{resp}");
    stack.settle(false, Duration::from_secs(60)).await;
    assert!(refusals.load(Ordering::SeqCst) > 5, "the refusals happened");
    // Executed once, not cancelled: no cancellation was ever signed.
    stack.assert_exactly_once(std::slice::from_ref(&user), 10, 0).await;
    let cancels: i64 = sqlx::query_scalar("SELECT count(*) FROM tx_attempts WHERE kind = 'cancel'")
        .fetch_one(stack.store.pool())
        .await
        .unwrap();
    assert_eq!(cancels, 0);
}

#[tokio::test]
async fn the_fee_cap_holds_on_a_first_send_while_the_base_fee_is_above_it() {
    let stack = Stack::start(&["--no-mining"]).await;
    let market = stack.provider.estimate_eip1559_fees().await.unwrap();
    let cap = market.max_fee_per_gas * 2;
    let proxy = RpcProxy::start_at(stack.anvil_url().as_str()).await;
    let sends = Arc::new(AtomicU32::new(0));
    let counted = sends.clone();
    proxy.set(move |req: &Value| {
        if req["method"] == "eth_sendRawTransaction" {
            counted.fetch_add(1, Ordering::SeqCst);
        }
        None
    });
    let settings =
        PipelineSettings { max_fee_cap: Some(cap), bump_after: Duration::from_millis(200), ..fast_settings() };
    let relayer = stack.replica_via(settings, proxy.provider()).await;
    let user = stack.users(1).remove(0);
    stack.fund_wallets(std::slice::from_ref(&user), 10, false).await;
    let body = stack.signed_deposit(&relayer.base, &user, 10).await;
    // The next block's base fee is four times the cap: no send within the cap can be taken.
    let spike = U256::from(cap * 4);
    let _: Value = stack.provider.raw_request("anvil_setNextBlockBaseFeePerGas".into(), (spike,)).await.unwrap();
    let (status, resp) = stack.post(&relayer.base, EXECUTE, &body, ASYNC).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{resp}");
    let id = resp["TransactionId"].as_i64().unwrap();
    // Many refused sends and bump rounds later…
    wait_for("thirty sends", 30, || async { sends.load(Ordering::SeqCst) >= 30 }).await;
    let highest: i64 = sqlx::query_scalar("SELECT max(max_fee_per_gas) FROM tx_attempts WHERE transaction_id = $1")
        .bind(id)
        .fetch_one(stack.store.pool())
        .await
        .unwrap();
    assert!(highest as u128 <= cap, "signed above the cap: {highest} > {cap}");
    assert_eq!(stack.sponsor_chain_nonce().await, 0);
    let (status, ..) = row(&stack, id).await;
    assert!(status == "pending" || status == "submitted", "not mined: {status}");
    // The market comes back under the cap: the call goes, still within it.
    let _: Value = stack
        .provider
        .raw_request("anvil_setNextBlockBaseFeePerGas".into(), (U256::from(market.max_fee_per_gas / 4),))
        .await
        .unwrap();
    stack.mine().await;
    stack.settle(true, Duration::from_secs(60)).await;
    stack.assert_exactly_once(std::slice::from_ref(&user), 10, 0).await;
    let highest: i64 =
        sqlx::query_scalar("SELECT max(max_fee_per_gas) FROM tx_attempts").fetch_one(stack.store.pool()).await.unwrap();
    assert!(highest as u128 <= cap, "signed above the cap: {highest} > {cap}");
}

/// A proxy in front of the stack's Anvil whose backend serving receipts lags: it has none of
/// them (one by one or a block's at once); calls and counts come from an up-to-date one. Answers
/// the proxy, how many receipt reads it hid, and how many `eth_call`s went through.
async fn lagging_receipts(stack: &Stack) -> (RpcProxy, Arc<AtomicU32>, Arc<AtomicU32>) {
    let proxy = RpcProxy::start_at(stack.anvil_url().as_str()).await;
    let hidden = Arc::new(AtomicU32::new(0));
    let bysig_reads = Arc::new(AtomicU32::new(0));
    let (h, b) = (hidden.clone(), bysig_reads.clone());
    proxy.set(move |req: &Value| {
        if req["method"] == "eth_getTransactionReceipt" || req["method"] == "eth_getBlockReceipts" {
            h.fetch_add(1, Ordering::SeqCst);
            return Some(json!({ "result": null }));
        }
        if req["method"] == "eth_call" {
            b.fetch_add(1, Ordering::SeqCst);
        }
        None
    });
    (proxy, hidden, bysig_reads)
}

#[tokio::test]
async fn a_receipt_a_lagging_node_hides_during_drift_detection_never_turns_into_replaced() {
    let stack = Stack::start(&[]).await;
    let (proxy, hidden, bysig_reads) = lagging_receipts(&stack).await;
    let relayer = stack.replica_via(fast_settings(), proxy.provider()).await;
    let user = stack.users(1).remove(0);
    stack.fund_wallets(std::slice::from_ref(&user), 10, true).await;
    let body = stack.signed_deposit(&relayer.base, &user, 10).await;
    let (status, resp) = stack.post(&relayer.base, EXECUTE, &body, ASYNC).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{resp}");
    let id = resp["TransactionId"].as_i64().unwrap();
    // Mined on chain (automine), its receipt hidden: the worker waits out the drift grace and
    // then reads the signed call's nonce, which is used.
    wait_for("the transaction is mined", 30, || async { stack.sponsor_chain_nonce().await == 1 }).await;
    // The worker has asked for the receipt and been told there is none (under load it may not
    // have yet: the other reads counted below come from any eth_call, not only the worker's).
    wait_for("the worker asks for the hidden receipt", 30, || async { hidden.load(Ordering::SeqCst) > 0 }).await;
    let calls_then = bysig_reads.load(Ordering::SeqCst);
    // (or decides without the receipt, which the next assertion then shows)
    wait_for("the worker reads the signed call's nonce (drift decision)", 30, || async {
        bysig_reads.load(Ordering::SeqCst) >= calls_then + 3 || row(&stack, id).await.0 != "submitted"
    })
    .await;
    let (status, ..) = row(&stack, id).await;
    assert_eq!(status, "submitted", "no decision without the receipt");
    // The lagging backend catches up.
    proxy.clear();
    stack.settle(false, Duration::from_secs(30)).await;
    assert!(hidden.load(Ordering::SeqCst) > 0);
    stack.assert_exactly_once(std::slice::from_ref(&user), 10, 0).await;
    let (status, _, hash, _) = row(&stack, id).await;
    assert!(status == "mined" || status == "confirmed", "{status}");
    let ours: Vec<Vec<u8>> = sqlx::query_scalar("SELECT tx_hash FROM tx_attempts WHERE transaction_id = $1")
        .bind(id)
        .fetch_all(stack.store.pool())
        .await
        .unwrap();
    assert!(ours.contains(&hash), "recorded with its own hash");
}

#[tokio::test]
async fn a_bundle_whose_receipt_a_lagging_node_hides_is_never_moved_or_replaced() {
    // As above, for a bundle: a lone call and a bundle of three are mined while the node hides
    // every receipt. Drift detection must find each bundled call's nonce used by the bundle's
    // own transaction and wait, rather than move the bundle or call any of its calls replaced.
    let stack = Stack::start(&[]).await;
    let (proxy, hidden, bysig_reads) = lagging_receipts(&stack).await;
    let relayer = stack.replica_via(fast_settings(), proxy.provider()).await;
    let users = stack.users(4);
    stack.fund_wallets(&users, 10, true).await;
    let mut bodies = Vec::new();
    for u in &users {
        bodies.push(stack.signed_deposit(&relayer.base, u, 10).await);
    }
    let ids = stack.execute_behind_a_blocker(&relayer.base, &bodies).await;
    let bundled: i64 = sqlx::query_scalar("SELECT count(*) FROM relay_transactions WHERE bundle_id IS NOT NULL")
        .fetch_one(stack.store.pool())
        .await
        .unwrap();
    assert_eq!(bundled, 3, "a lone call and a bundle of three");
    wait_for("both transactions are mined", 30, || async { stack.sponsor_chain_nonce().await == 2 }).await;
    wait_for("the worker asks for the hidden receipts", 30, || async { hidden.load(Ordering::SeqCst) > 0 }).await;
    let calls_then = bysig_reads.load(Ordering::SeqCst);
    // Past the drift grace the worker reads each call's nonce: four calls, four reads at least.
    wait_for("the worker reads the signed calls' nonces (drift decision)", 30, || async {
        bysig_reads.load(Ordering::SeqCst) >= calls_then + 8
            || futures::future::join_all(ids.iter().map(|id| row(&stack, *id))).await.iter().any(|r| r.0 != "submitted")
    })
    .await;
    for id in &ids {
        let (status, ..) = row(&stack, *id).await;
        assert_eq!(status, "submitted", "no decision without the receipt (row {id})");
    }
    proxy.clear();
    stack.settle(false, Duration::from_secs(30)).await;
    stack.assert_exactly_once(&users, 10, 0).await;
    for id in &ids {
        let (status, _, _, nonce) = row(&stack, *id).await;
        assert!(status == "mined" || status == "confirmed", "row {id}: {status}");
        assert!(nonce < 2, "row {id} was not moved (nonce {nonce})");
    }
}

#[tokio::test]
async fn a_node_that_never_answers_ends_ticks_not_the_worker_and_the_call_goes_once_it_answers() {
    let stack = Stack::start(&[]).await;
    // The worker is held off while the call is queued.
    sqlx::query(
        "INSERT INTO sponsor_accounts (chain_id, address, next_nonce, lease_owner, lease_until)
         VALUES ($1, $2, 0, 'ghost', now() + interval '1 hour')",
    )
    .bind(stack.chain_id as i64)
    .bind(stack.sponsor().as_slice())
    .execute(stack.store.pool())
    .await
    .unwrap();
    let proxy = RpcProxy::start_at(stack.anvil_url().as_str()).await;
    let relayer = stack.replica_via(fast_settings(), proxy.provider()).await;
    let user = stack.users(1).remove(0);
    stack.fund_wallets(std::slice::from_ref(&user), 10, true).await;
    let body = stack.signed_deposit(&relayer.base, &user, 10).await;
    let (status, resp) = stack.post(&relayer.base, EXECUTE, &body, ASYNC).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{resp}");
    // The node stops answering (it holds every request), and the worker may start.
    proxy.stall(true);
    proxy.reset();
    sqlx::query("UPDATE sponsor_accounts SET lease_until = now() - interval '1 second'")
        .execute(stack.store.pool())
        .await
        .unwrap();
    // Each tick ends at its deadline (a third of the 2 s lease) and the next asks again: three
    // reads of the sponsor's nonce come long before one RPC timeout (10 s) could end a tick.
    wait_for("three ticks, each ended by its deadline", 8, || async {
        proxy.calls_of(&["eth_getTransactionCount"]).values().sum::<u64>() >= 3
    })
    .await;
    assert_eq!(stack.sponsor_chain_nonce().await, 0, "nothing went out while the node was silent");
    proxy.stall(false);
    stack.settle(false, Duration::from_secs(60)).await;
    stack.assert_exactly_once(std::slice::from_ref(&user), 10, 0).await;
}
