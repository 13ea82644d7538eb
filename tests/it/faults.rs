//! Fault tests of the sponsor pipeline against real processes: each ends with every accepted
//! request executed exactly once and the sponsor's nonces gap-free
//! ([`Stack::assert_exactly_once`]).

use std::time::Duration;

use alloy::{
    network::{EthereumWallet, TransactionBuilder},
    primitives::U256,
    providers::{Provider, ProviderBuilder},
    rpc::types::TransactionRequest,
};
use reqwest::StatusCode;
use serde_json::Value;

use streampay_relayer::pipeline::PipelineSettings;

use crate::harness::Mined;
use crate::pipeline_stack::{Stack, fast_settings};

const EXECUTE: &str = "/api/v1/USDC/meta/execute";
const ASYNC: &[(&str, &str)] = &[("Prefer", "respond-async")];

#[tokio::test]
async fn transactions_dropped_by_the_node_are_sent_again_and_mined_once() {
    let stack = Stack::start(&["--no-mining"]).await;
    let relayer = stack.replica(fast_settings()).await;
    let users = stack.users(6);
    stack.fund_wallets(&users, 10, false).await;
    for u in &users {
        let body = stack.signed_deposit(&relayer.base, u, 10).await;
        let (status, resp) = stack.post(&relayer.base, EXECUTE, &body, ASYNC).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{resp}");
    }
    // Wait until the node holds all six, then make it forget them.
    let end = tokio::time::Instant::now() + Duration::from_secs(20);
    while stack.rows().await.iter().any(|(s, _)| s != "submitted") {
        assert!(tokio::time::Instant::now() < end, "{:?}", stack.rows().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _: Value = stack.provider.raw_request("anvil_dropAllTransactions".into(), ()).await.unwrap();
    stack.mine().await;
    assert_eq!(stack.sponsor_chain_nonce().await, 0, "dropped: nothing mined");
    stack.settle(true, Duration::from_secs(30)).await;
    stack.assert_exactly_once(&users, 10, 0).await;
}

#[tokio::test]
async fn a_sponsor_nonce_used_outside_the_relayer_is_detected_and_the_call_moved() {
    let stack = Stack::start(&["--no-mining"]).await;
    let relayer = stack.replica(fast_settings()).await;
    let users = stack.users(3);
    stack.fund_wallets(&users, 10, false).await;
    for u in &users {
        let body = stack.signed_deposit(&relayer.base, u, 10).await;
        assert_eq!(stack.post(&relayer.base, EXECUTE, &body, ASYNC).await.0, StatusCode::ACCEPTED);
    }
    let end = tokio::time::Instant::now() + Duration::from_secs(20);
    while stack.rows().await.iter().any(|(s, _)| s != "submitted") {
        assert!(tokio::time::Instant::now() < end);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Someone with the sponsor key sends their own transaction at nonce 0, outbidding ours.
    let outsider = ProviderBuilder::new()
        .wallet(EthereumWallet::from(stack.sponsor_signer.clone()))
        .connect_http(stack.anvil_url());
    let fees = stack.provider.estimate_eip1559_fees().await.unwrap();
    let tx = TransactionRequest::default()
        .with_to(stack.sponsor())
        .with_value(U256::from(1))
        .with_nonce(0)
        .with_gas_limit(21_000)
        .with_max_fee_per_gas(fees.max_fee_per_gas * 10)
        .with_max_priority_fee_per_gas(fees.max_priority_fee_per_gas * 10);
    let pending = outsider.send_transaction(tx).await.expect("outside transaction");
    stack.mine().await;
    pending.mined().await;
    stack.settle(true, Duration::from_secs(30)).await;
    stack.assert_exactly_once(&users, 10, 1).await;
    let nonces: Vec<u64> = stack.rows().await.iter().map(|(_, n)| *n).collect();
    assert!(!nonces.contains(&0), "the call at nonce 0 moved: {nonces:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_database_never_share_a_nonce_or_send_twice() {
    // Two `streampay serve` processes on one database and one chain take 1,000 executes at once,
    // half each, every one waiting for its receipt.
    const N: usize = 1000;
    let t0 = std::time::Instant::now();
    let stack = Stack::start(&[]).await;
    let replica = [("STREAMPAY_DATABASE_MAX_CONNECTIONS", "20")];
    let (a, b) = (stack.spawn_serve(&replica).await, stack.spawn_serve(&replica).await);
    let users = stack.users(N);
    stack.fund_wallets(&users, 10, true).await;
    let t_funded = t0.elapsed();
    let bodies = stack.signed_deposits(&users, 10, |i| if i % 2 == 0 { a.base.clone() } else { b.base.clone() }).await;
    let t_signed = t0.elapsed();
    // All at once. A replica short of database connections for longer than its acquire timeout
    // answers 503 (retry); the client retries those, as clients are told to.
    let results =
        futures::future::join_all(bodies.iter().map(|(base, body)| execute_until_accepted(&stack, base, body, false)))
            .await;
    let t_executed = t0.elapsed();
    let ok = results.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    let retries: u32 = results.iter().map(|(_, r)| r).sum();
    stack.settle(false, Duration::from_secs(30)).await;
    stack.assert_exactly_once(&users, 10, 0).await;
    eprintln!(
        "{N} executes ({ok} answered 200 with their receipt, {retries} retries after a 503): funded {t_funded:?}, \
         built and signed {t_signed:?}, all executed {t_executed:?}, checked {:?}",
        t0.elapsed()
    );
}

#[tokio::test]
async fn a_relayer_killed_mid_flight_resumes_without_losing_or_doubling() {
    let stack = Stack::start(&["--no-mining"]).await;
    let users = stack.users(6);
    stack.fund_wallets(&users, 10, false).await;

    // Killed between broadcast and receipt: three calls submitted, then SIGKILL.
    let mut first = stack.spawn_serve(&[]).await;
    for u in &users[..3] {
        let body = stack.signed_deposit(&first.base, u, 10).await;
        assert_eq!(stack.post(&first.base, EXECUTE, &body, ASYNC).await.0, StatusCode::ACCEPTED);
    }
    let end = tokio::time::Instant::now() + Duration::from_secs(20);
    while stack.rows().await.iter().any(|(s, _)| s != "submitted") {
        assert!(tokio::time::Instant::now() < end, "{:?}", stack.rows().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.kill();
    stack.mine().await;

    // Killed between nonce allocation and broadcast: while another (ghost) process holds the
    // sponsor's lease, a relayer queues three calls (nonce allocated, transaction signed, row
    // committed) and is SIGKILLed before anything is broadcast.
    ghost_lease(&stack, "now() + interval '1 hour'").await;
    let mut second = stack.spawn_serve(&[]).await;
    for u in &users[3..] {
        let body = stack.signed_deposit(&second.base, u, 10).await;
        assert_eq!(stack.post(&second.base, EXECUTE, &body, ASYNC).await.0, StatusCode::ACCEPTED);
    }
    assert_eq!(stack.rows().await.iter().filter(|(s, _)| s == "pending").count(), 3);
    second.kill();
    ghost_lease(&stack, "now()").await;

    let _third = stack.spawn_serve(&[]).await;
    stack.settle(true, Duration::from_secs(40)).await;
    stack.assert_exactly_once(&users, 10, 0).await;
}

async fn ghost_lease(stack: &Stack, until: &str) {
    sqlx::query(&format!("UPDATE sponsor_accounts SET lease_owner = 'ghost', lease_until = {until}"))
        .execute(stack.store.pool())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_base_fee_spike_is_outbid_with_a_replacement_at_the_same_nonce() {
    let stack = Stack::start(&["--no-mining"]).await;
    let settings = PipelineSettings { bump_after: Duration::from_secs(1), ..fast_settings() };
    let relayer = stack.replica(settings).await;
    let users = stack.users(2);
    stack.fund_wallets(&users, 10, false).await;
    let mut ids = Vec::new();
    for u in &users {
        let body = stack.signed_deposit(&relayer.base, u, 10).await;
        let (status, resp) = stack.post(&relayer.base, EXECUTE, &body, ASYNC).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{resp}");
        ids.push(resp["TransactionId"].as_i64().unwrap());
    }
    let end = tokio::time::Instant::now() + Duration::from_secs(20);
    while stack.rows().await.iter().any(|(s, _)| s != "submitted") {
        assert!(tokio::time::Instant::now() < end);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let signed_fee: i64 =
        sqlx::query_scalar("SELECT max(max_fee_per_gas) FROM tx_attempts").fetch_one(stack.store.pool()).await.unwrap();
    // The next block's base fee jumps to 4× what the transactions offer: they cannot be included.
    let spike = U256::from(signed_fee as u128 * 4);
    let _: Value = stack.provider.raw_request("anvil_setNextBlockBaseFeePerGas".into(), (spike,)).await.unwrap();
    stack.mine().await;
    assert_eq!(stack.sponsor_chain_nonce().await, 0, "priced out of the spiked block");
    stack.settle(true, Duration::from_secs(30)).await;
    stack.assert_exactly_once(&users, 10, 0).await;
    // The replacements are on record beside the originals, each ≥ 12.5% above the one before.
    for id in ids {
        let fees: Vec<i64> =
            sqlx::query_scalar("SELECT max_fee_per_gas FROM tx_attempts WHERE transaction_id = $1 ORDER BY id")
                .bind(id)
                .fetch_all(stack.store.pool())
                .await
                .unwrap();
        assert!(fees.len() >= 2, "replaced: {fees:?}");
        assert!(fees.windows(2).all(|w| w[1] as i128 * 1000 >= w[0] as i128 * 1125), "{fees:?}");
        let (status, tx) = stack.get(&relayer.base, &format!("/api/v1/transactions/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{tx}");
        // "mined" once the index has its block (read-your-writes); no indexer runs here.
        assert_eq!(tx["Status"], if tx["Indexed"] == true { "mined" } else { "submitted" }, "{tx}");
        assert!(tx["State"] == "mined" || tx["State"] == "confirmed", "{tx}");
        assert_eq!(tx["Hashes"].as_array().unwrap().len(), fees.len(), "{tx}");
        assert!(tx["Hashes"].as_array().unwrap().contains(&tx["TransactionHash"]), "{tx}");
    }
}

/// Posts an execute until it is accepted, retrying only what a client is told to retry (503s,
/// `409 nonce_in_flight` while an earlier attempt's claim is still held). Never a 500. Answers
/// the final status and how many retries it took.
async fn execute_until_accepted(stack: &Stack, base: &str, body: &Value, respond_async: bool) -> (StatusCode, u32) {
    let end = tokio::time::Instant::now() + Duration::from_secs(90);
    let mut retries = 0;
    loop {
        let (status, resp) = stack.post(base, EXECUTE, body, if respond_async { ASYNC } else { &[] }).await;
        let code = resp["error"]["code"].as_str().unwrap_or_default().to_string();
        match status {
            StatusCode::OK | StatusCode::ACCEPTED => return (status, retries),
            // An earlier attempt was queued after all (its answer was an error): done.
            StatusCode::CONFLICT if code == "nonce_already_used" => return (status, retries),
            StatusCode::SERVICE_UNAVAILABLE if code == "database_unavailable" || code == "chain_unavailable" => {}
            StatusCode::CONFLICT if code == "nonce_in_flight" => {}
            _ => panic!("{status}: {resp}"),
        }
        retries += 1;
        assert!(tokio::time::Instant::now() < end, "never accepted; last answer {status}: {resp}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls the queue until `pred` holds of its rows (bounded: fails saying what never happened).
async fn wait_rows(stack: &Stack, what: &str, pred: impl Fn(&[(String, u64)]) -> bool) -> Vec<(String, u64)> {
    let end = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let rows = stack.rows().await;
        if pred(&rows) {
            return rows;
        }
        assert!(tokio::time::Instant::now() < end, "never saw {what}: {rows:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `bodies` executed against `base`, one every `spacing` (alternately waiting for the receipt
/// and `Prefer: respond-async`), each retried until accepted; answers the total retries and the
/// longest time one request took from first try to acceptance.
async fn staggered_load(stack: &Stack, base: &str, bodies: &[Value], spacing: Duration) -> (u32, Duration) {
    let results = futures::future::join_all(bodies.iter().enumerate().map(|(i, body)| async move {
        tokio::time::sleep(spacing * i as u32).await;
        let started = tokio::time::Instant::now();
        let (_, retries) = execute_until_accepted(stack, base, body, i % 2 == 1).await;
        (retries, started.elapsed())
    }))
    .await;
    (results.iter().map(|(r, _)| r).sum(), results.iter().map(|(_, t)| *t).max().unwrap_or_default())
}

#[tokio::test]
async fn postgres_restarted_mid_load_loses_nothing_and_sends_nothing_twice() {
    const N: usize = 60;
    let stack = Stack::start(&[]).await;
    let relayer = stack.replica(fast_settings()).await;
    let users = stack.users(N);
    stack.fund_wallets(&users, 10, true).await;
    let bodies: Vec<Value> =
        stack.signed_deposits(&users, 10, |_| relayer.base.clone()).await.into_iter().map(|(_, b)| b).collect();
    // Executes arrive over ~1.8 s; Postgres goes down (fast shutdown, every session cut) for
    // 1.5 s once the first of them are queued: a condition, not a fixed delay, so a slow machine
    // cannot move the restart before the load or after it.
    let load = staggered_load(&stack, &relayer.base, &bodies, Duration::from_millis(30));
    let fault = async {
        let before = wait_rows(&stack, "a first queued execute", |rows| !rows.is_empty()).await.len();
        stack.restart_postgres(Duration::from_millis(1500)).await;
        before
    };
    let ((retries, longest), queued_before) = tokio::join!(load, fault);
    assert!(queued_before > 0 && queued_before < N, "the restart came mid-load: {queued_before} of {N} queued before");
    // A request meets the outage either as a 503 to retry (its query was cut) or by waiting in
    // the pool for a connection until Postgres is back; which one is down to timing.
    assert!(
        retries > 0 || longest >= Duration::from_millis(1000),
        "no execute met the outage: 0 retries, longest {longest:?}"
    );
    stack.settle(false, Duration::from_secs(60)).await;
    stack.assert_exactly_once(&users, 10, 0).await;
}

#[tokio::test]
async fn anvil_restarted_from_its_state_dump_mid_load_loses_nothing_and_sends_nothing_twice() {
    const N: usize = 40;
    // A block a second: at the restart some transactions sit in the pool, which the restarted
    // node has forgotten; the relayer must send them again.
    let stack = Stack::start(&["--block-time", "1"]).await;
    let relayer = stack.replica(fast_settings()).await;
    let users = stack.users(N);
    stack.fund_wallets(&users, 10, true).await;
    let bodies: Vec<Value> =
        stack.signed_deposits(&users, 10, |_| relayer.base.clone()).await.into_iter().map(|(_, b)| b).collect();
    let load = staggered_load(&stack, &relayer.base, &bodies, Duration::from_millis(50));
    // Anvil restarts once a call waits in its pool while at most half the executes are
    // queued, so the later half meets the outage (a condition, not a fixed delay).
    let fault = async {
        let rows = wait_rows(&stack, "a call in the pool with half the load to come", |rows| {
            rows.len() <= N / 2 && rows.iter().any(|(s, _)| s == "submitted")
        })
        .await;
        let in_pool = rows.iter().filter(|(s, _)| s == "submitted").count();
        stack.restart_anvil(Duration::from_secs(1)).await;
        in_pool
    };
    let ((retries, _), in_pool) = tokio::join!(load, fault);
    assert!(in_pool > 0, "transactions were waiting in the pool when Anvil stopped");
    assert!(retries > 0, "some executes met the outage and were told to retry");
    stack.settle(false, Duration::from_secs(60)).await;
    stack.assert_exactly_once(&users, 10, 0).await;
}

#[tokio::test]
async fn a_mined_call_whose_block_is_rolled_back_is_detected_and_ends_mined_once() {
    reorged_out(Reorg::Rollback).await;
}

#[tokio::test]
async fn a_mined_call_whose_block_is_replaced_by_a_reorg_is_detected_and_ends_mined_once() {
    reorged_out(Reorg::EmptyBlock).await;
}

enum Reorg {
    /// The chain gets shorter: the block holding the calls is gone (`anvil_rollback`).
    Rollback,
    /// Same height, another block: an empty one replaces it (`anvil_reorg`).
    EmptyBlock,
}

/// Three calls are mined in one block, which a reorg then removes from the chain before they
/// are final; each must be re-detected (sent again if the node forgot it) and end mined once,
/// recorded in the block it is in now.
async fn reorged_out(reorg: Reorg) {
    let stack = Stack::start(&["--no-mining"]).await;
    // Three confirmations: a mined row stays `mined` (not final) for two more blocks.
    let relayer = stack.replica(PipelineSettings { confirmations: 3, ..fast_settings() }).await;
    let users = stack.users(3);
    stack.fund_wallets(&users, 10, false).await;
    for u in &users {
        let body = stack.signed_deposit(&relayer.base, u, 10).await;
        assert_eq!(stack.post(&relayer.base, EXECUTE, &body, ASYNC).await.0, StatusCode::ACCEPTED);
    }
    let end = tokio::time::Instant::now() + Duration::from_secs(20);
    while stack.rows().await.iter().any(|(s, _)| s != "submitted") {
        assert!(tokio::time::Instant::now() < end, "{:?}", stack.rows().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stack.mine().await;
    while stack.rows().await.iter().any(|(s, _)| s != "mined") {
        assert!(tokio::time::Instant::now() < end, "{:?}", stack.rows().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first: Vec<Vec<u8>> = sqlx::query_scalar("SELECT block_hash FROM relay_transactions ORDER BY id")
        .fetch_all(stack.store.pool())
        .await
        .unwrap();
    match reorg {
        Reorg::Rollback => {
            let _: Value = stack.provider.raw_request("anvil_rollback".into(), (1u64,)).await.expect("anvil_rollback");
        }
        Reorg::EmptyBlock => {
            let no_transactions: Vec<Value> = Vec::new();
            let _: Value =
                stack.provider.raw_request("anvil_reorg".into(), (1u64, no_transactions)).await.expect("anvil_reorg");
        }
    }
    assert_eq!(stack.sponsor_chain_nonce().await, 0, "rolled back: nothing of ours on chain");
    stack.settle(true, Duration::from_secs(30)).await;
    // Wait for the final depth too: confirmed rows are the ones checked against the new chain.
    let end = tokio::time::Instant::now() + Duration::from_secs(20);
    while stack.rows().await.iter().any(|(s, _)| s != "confirmed") {
        assert!(tokio::time::Instant::now() < end, "{:?}", stack.rows().await);
        stack.mine().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stack.assert_exactly_once(&users, 10, 0).await;
    let last: Vec<Vec<u8>> = sqlx::query_scalar("SELECT block_hash FROM relay_transactions ORDER BY id")
        .fetch_all(stack.store.pool())
        .await
        .unwrap();
    for (before, after) in first.iter().zip(&last) {
        assert_ne!(before, after, "each row records the block it is in now, not the one reorged out");
    }
}
