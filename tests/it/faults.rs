//! Fault tests of the sponsor pipeline against real processes: each ends with every accepted
//! request executed exactly once and the sponsor's nonces gap-free
//! ([`Stack::assert_exactly_once`]).

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

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
use crate::rpc_proxy::RpcProxy;

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
    stack.wait_sent().await;
    // The database's clock before the drop: every row must be sent again after it. (Asserting
    // that a block mined right after the drop is empty would race the worker, which may already
    // have sent a call again; that once failed CI.)
    let dropped_at: String =
        sqlx::query_scalar("SELECT clock_timestamp()::text").fetch_one(stack.store.pool()).await.unwrap();
    let _: Value = stack.provider.raw_request("anvil_dropAllTransactions".into(), ()).await.unwrap();
    stack.settle(true, Duration::from_secs(30)).await;
    stack.assert_exactly_once(&users, 10, 0).await;
    let sent_again: i64 =
        sqlx::query_scalar("SELECT count(*) FROM relay_transactions WHERE last_sent_at >= $1::text::timestamptz")
            .bind(&dropped_at)
            .fetch_one(stack.store.pool())
            .await
            .unwrap();
    assert_eq!(sent_again, 6, "every dropped call was sent again after the drop");
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
    stack.wait_sent().await;
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
    stack.wait_sent().await;
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
    stack.wait_sent().await;
    stack.settle(true, Duration::from_secs(40)).await;
    stack.assert_exactly_once(&users, 10, 0).await;
}

#[tokio::test]
async fn a_bundle_killed_between_its_commit_and_its_broadcast_is_sent_once() {
    // While a ghost holds the sponsor's lease (nothing is sent), six executes are queued: one
    // alone, then five in one bundle, committed (rows, nonce, signed bytes) and never broadcast.
    // The relayer is SIGKILLed; the next one must send that bundle once, and every call must run
    // exactly once. Blocks are mined by hand once the node holds every transaction (see
    // `Stack::wait_sent`): with automine, a block could mine the lone call while the bundle after
    // it was being taken, and Anvil would then keep the bundle until a fee bump replaced it.
    let stack = Stack::start(&["--no-mining"]).await;
    let users = stack.users(6);
    stack.fund_wallets(&users, 10, false).await;
    let mut first = stack.spawn_serve(&[]).await;
    // Its worker creates the sponsor's row as it starts; then a ghost takes the lease over.
    let end = tokio::time::Instant::now() + Duration::from_secs(20);
    while sqlx::query_scalar::<_, i64>("SELECT count(*) FROM sponsor_accounts")
        .fetch_one(stack.store.pool())
        .await
        .unwrap()
        == 0
    {
        assert!(tokio::time::Instant::now() < end, "the sponsor's row was not created");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ghost_lease(&stack, "now() + interval '1 hour'").await;
    let mut bodies = Vec::new();
    for u in &users {
        bodies.push(stack.signed_deposit(&first.base, u, 10).await);
    }
    stack.execute_behind_a_blocker(&first.base, &bodies).await;
    let (bundled, pending): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE bundle_id IS NOT NULL), count(*) FILTER (WHERE status = 'pending')
         FROM relay_transactions",
    )
    .fetch_one(stack.store.pool())
    .await
    .unwrap();
    assert_eq!((bundled, pending), (5, 6), "a lone call and a bundle of five, queued and not sent");
    let hashes = || async {
        sqlx::query_as::<_, (i64, Vec<u8>)>("SELECT id, tx_hash FROM relay_transactions ORDER BY id")
            .fetch_all(stack.store.pool())
            .await
            .unwrap()
    };
    let committed = hashes().await;
    first.kill();
    ghost_lease(&stack, "now()").await;

    let _second = stack.spawn_serve(&[]).await;
    stack.wait_sent().await;
    stack.settle(true, Duration::from_secs(40)).await;
    stack.assert_exactly_once(&users, 10, 0).await;
    assert_eq!(hashes().await, committed, "the transactions committed before the kill are the ones mined");
}

#[tokio::test]
async fn a_bundle_whose_nonce_is_used_outside_moves_and_its_call_run_elsewhere_is_replaced() {
    // A blocker call is queued alone (nonce 0), then three calls in one bundle (nonce 1). Someone
    // with the sponsor key uses both nonces, the second by running the bundle's second call
    // itself. The blocker and the bundle must move to fresh nonces; the call run elsewhere must
    // end `replaced` (its row not overwritten when the moved bundle, where it fails alone, is
    // mined), the other two mined; every deposit made exactly once.
    let stack = Stack::start(&["--no-mining"]).await;
    let relayer = stack.replica(fast_settings()).await;
    let users = stack.users(4);
    stack.fund_wallets(&users, 10, false).await;
    let mut bodies = Vec::new();
    for u in &users {
        bodies.push(stack.signed_deposit(&relayer.base, u, 10).await);
    }
    let ids = stack.execute_behind_a_blocker(&relayer.base, &bodies).await;
    stack.wait_sent().await;
    let placed: Vec<(i64, i64, Option<i32>, Vec<u8>)> =
        sqlx::query_as("SELECT id, sponsor_nonce, bundle_index, calldata FROM relay_transactions ORDER BY id")
            .fetch_all(stack.store.pool())
            .await
            .unwrap();
    let shape: Vec<(i64, Option<i32>)> = placed.iter().map(|p| (p.1, p.2)).collect();
    assert_eq!(shape, vec![(0, None), (1, Some(0)), (1, Some(1)), (1, Some(2))], "a lone call, then a bundle of three");

    // Someone with the sponsor key outbids both: a transfer at nonce 0, and the bundle's second
    // call, run as a transaction of its own, at nonce 1.
    let outsider = ProviderBuilder::new()
        .wallet(EthereumWallet::from(stack.sponsor_signer.clone()))
        .connect_http(stack.anvil_url());
    let fees = stack.provider.estimate_eip1559_fees().await.unwrap();
    let outbid = |tx: TransactionRequest, nonce: u64, gas: u64| {
        tx.with_nonce(nonce)
            .with_gas_limit(gas)
            .with_max_fee_per_gas(fees.max_fee_per_gas * 10)
            .with_max_priority_fee_per_gas(fees.max_priority_fee_per_gas * 10)
    };
    let transfer = outbid(TransactionRequest::default().with_to(stack.sponsor()).with_value(U256::from(1)), 0, 21_000);
    let call =
        outbid(TransactionRequest::default().with_to(stack.contract).with_input(placed[2].3.clone()), 1, 1_000_000);
    let a = outsider.send_transaction(transfer).await.expect("outside transfer");
    let b = outsider.send_transaction(call).await.expect("outside call");
    stack.mine().await;
    a.mined().await;
    let receipt = b.get_receipt().await.unwrap();
    assert!(receipt.status(), "the signed call ran outside the relayer");
    stack.settle(true, Duration::from_secs(30)).await;

    for u in &users {
        assert_eq!(stack.balance_of(u.address()).await, U256::from(10) * U256::from(10u64).pow(U256::from(18)));
    }
    let rows: Vec<(i64, String, i64)> =
        sqlx::query_as("SELECT id, status, sponsor_nonce FROM relay_transactions ORDER BY id")
            .fetch_all(stack.store.pool())
            .await
            .unwrap();
    let mut listed: Vec<i64> = rows.iter().map(|r| r.0).collect();
    let mut accepted = ids.clone();
    listed.sort();
    accepted.sort();
    assert_eq!(listed, accepted, "one row per accepted call");
    for (id, status, nonce) in &rows {
        if *id == placed[2].0 {
            assert_eq!(status, "replaced", "the call run elsewhere: {rows:?}");
        } else {
            assert!(status == "mined" || status == "confirmed", "{rows:?}");
            assert!(*nonce >= 2, "moved off the used nonces: {rows:?}");
        }
    }
    // Two nonces used outside, then the blocker and the bundle, moved: no gap, nothing twice.
    assert_eq!(stack.sponsor_chain_nonce().await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_lease_owner_resumes_after_a_takeover_and_sends_nothing() {
    let stack = Stack::start(&[]).await;
    let users = stack.users(9);
    stack.fund_wallets(&users, 10, true).await;
    // Replica A reaches the node through a proxy that records every transaction it broadcasts.
    let proxy = RpcProxy::start_at(stack.anvil_url().as_str()).await;
    let sent_by_a: Arc<Mutex<Vec<String>>> = Arc::default();
    let recorder = sent_by_a.clone();
    proxy.set(move |req| {
        if req["method"] == "eth_sendRawTransaction" {
            recorder.lock().unwrap().push(req["params"][0].as_str().unwrap_or_default().to_lowercase());
        }
        None
    });
    let mut a = stack.spawn_serve_via(&proxy.url, &[]).await;
    let owner_a = wait_lease_owner(&stack, |o| o.is_some()).await.unwrap();
    // A relays three calls, each answered with its receipt.
    for u in &users[..3] {
        let body = stack.signed_deposit(&a.base, u, 10).await;
        let (status, resp) = stack.post(&a.base, EXECUTE, &body, &[]).await;
        assert_eq!(status, StatusCode::OK, "{resp}");
    }
    assert!(sent_by_a.lock().unwrap().len() >= 3, "A sent its calls");

    // A freezes (SIGSTOP: a stop-the-world pause, a VM migration) holding the lease, past it.
    signal(&a, libc::SIGSTOP);
    let expired = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let over: bool = sqlx::query_scalar("SELECT coalesce(lease_until < now(), true) FROM sponsor_accounts")
            .fetch_one(stack.store.pool())
            .await
            .unwrap();
        if over {
            break;
        }
        assert!(tokio::time::Instant::now() < expired, "A's lease never ran out");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // B takes the sponsor over and relays three calls.
    let b = stack.spawn_serve(&[]).await;
    let owner_b = wait_lease_owner(&stack, |o| o.is_some_and(|o| o != owner_a)).await.unwrap();
    let bodies = futures::future::join_all(users[3..6].iter().map(|u| stack.signed_deposit(&b.base, u, 10))).await;
    let answers = futures::future::join_all(bodies.iter().map(|body| stack.post(&b.base, EXECUTE, body, &[]))).await;
    for (status, resp) in answers {
        assert_mined_answer(status, &resp);
    }

    // A resumes. Whatever its worker was doing when it froze, it finds its lease gone: the calls
    // queued through A's API from now on (which wake A's worker at once) are sent by B, and A's
    // waiters learn of them from B's settles.
    let before_resume: std::collections::HashSet<String> = sent_by_a.lock().unwrap().iter().cloned().collect();
    signal(&a, libc::SIGCONT);
    let bodies = futures::future::join_all(users[6..].iter().map(|u| stack.signed_deposit(&a.base, u, 10))).await;
    let answers = futures::future::join_all(bodies.iter().map(|body| stack.post(&a.base, EXECUTE, body, &[]))).await;
    for (status, resp) in answers {
        assert_mined_answer(status, &resp);
    }
    stack.settle(false, Duration::from_secs(30)).await;
    stack.assert_exactly_once(&users, 10, 0).await;
    // Nothing new went out from A after it resumed: at most the same bytes again of a call it
    // had sent before it froze (a send already under way), never a call queued since.
    let after: Vec<String> =
        sent_by_a.lock().unwrap().iter().filter(|raw| !before_resume.contains(*raw)).cloned().collect();
    assert!(after.is_empty(), "A broadcast {} new transaction(s) after it lost the lease", after.len());
    assert_eq!(lease_owner_now(&stack).await.as_deref(), Some(owner_b.as_str()), "B still holds the lease");
    a.kill();
}

/// An execute answered once its call was mined: 200 with the receipt, or (while the frozen
/// process still holds the indexer's lock, so the index cannot catch up) 202 saying it is mined.
fn assert_mined_answer(status: StatusCode, resp: &Value) {
    let mined = status == StatusCode::OK
        || (status == StatusCode::ACCEPTED && resp["Message"].as_str().is_some_and(|m| m.starts_with("Mined")));
    assert!(mined, "{status}: {resp}");
}

fn signal(p: &crate::pipeline_stack::ServeProcess, sig: libc::c_int) {
    // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped.
    let r = unsafe { libc::kill(p.child.id() as libc::pid_t, sig) };
    assert_eq!(r, 0, "kill({sig}) failed");
}

async fn lease_owner_now(stack: &Stack) -> Option<String> {
    sqlx::query_scalar("SELECT lease_owner FROM sponsor_accounts")
        .fetch_optional(stack.store.pool())
        .await
        .unwrap()
        .flatten()
}

/// Waits (bounded) until the sponsor's lease owner satisfies `pred`; answers it.
async fn wait_lease_owner(stack: &Stack, pred: impl Fn(Option<&str>) -> bool) -> Option<String> {
    let end = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let owner = lease_owner_now(stack).await;
        if pred(owner.as_deref()) {
            return owner;
        }
        assert!(tokio::time::Instant::now() < end, "lease owner stayed {owner:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
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
    stack.wait_sent().await;
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
/// recorded in the block it is in now. At the default finality depth (review T2).
async fn reorged_out(reorg: Reorg) {
    let stack = Stack::start(&["--no-mining"]).await;
    let settings = fast_settings();
    assert_eq!(settings.confirmations, streampay_relayer::pipeline::DEFAULT_FINALITY_DEPTH);
    let relayer = stack.replica(settings.clone()).await;
    let users = stack.users(3);
    stack.fund_wallets(&users, 10, false).await;
    for u in &users {
        let body = stack.signed_deposit(&relayer.base, u, 10).await;
        assert_eq!(stack.post(&relayer.base, EXECUTE, &body, ASYNC).await.0, StatusCode::ACCEPTED);
    }
    stack.wait_sent().await;
    stack.mine().await;
    let end = tokio::time::Instant::now() + Duration::from_secs(20);
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
    // Seen: every row has left the block reorged out (back in the queue, or already mined again).
    // A block a round: after a rollback the chain must first be as high as that block again.
    let end = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now: Vec<Option<Vec<u8>>> = sqlx::query_scalar("SELECT block_hash FROM relay_transactions ORDER BY id")
            .fetch_all(stack.store.pool())
            .await
            .unwrap();
        if now.iter().zip(&first).all(|(now, before)| now.as_ref() != Some(before)) {
            break;
        }
        assert!(tokio::time::Instant::now() < end, "the reorg was never seen: {:?}", stack.rows().await);
        stack.mine().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stack.settle(true, Duration::from_secs(30)).await;
    // Wait for the final depth too: confirmed rows are the ones checked against the new chain.
    let _: Value = stack.provider.raw_request("anvil_mine".into(), (settings.confirmations,)).await.unwrap();
    let end = tokio::time::Instant::now() + Duration::from_secs(20);
    while stack.rows().await.iter().any(|(s, _)| s != "confirmed") {
        assert!(tokio::time::Instant::now() < end, "{:?}", stack.rows().await);
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

/// Review S4/T2, at the default settings: a relayed call mined and then buried under three more
/// blocks (under the old default of one confirmation it was final at once and never looked at
/// again) is still re-checked until the finality depth. A reorg that drops it puts the row back
/// in the queue, gives its bySig nonce back (`GET meta/nonce`), and delivers `transaction.reorged`
/// naming the orphaned block; mined again, the row records its new block and
/// `transaction.mined` is delivered again with it; at the finality depth the row is `confirmed`
/// and `transaction.finalized` is delivered.
#[tokio::test]
async fn a_call_reorged_out_under_several_blocks_at_default_settings_is_reopened_its_nonce_given_back_and_reported() {
    use crate::harness::{serve_settings, spawn_app_with, tokens, wallet};
    use crate::webhooks::{Receiver, register, test_settings};
    use serde_json::json;
    use streampay_relayer::{api::Settings, pipeline::DEFAULT_FINALITY_DEPTH, webhooks::WebhookSettings};

    // Default pipeline and finality (the harness's chain takes the pipeline's defaults); webhooks
    // polled fast, to a local receiver.
    let webhooks = WebhookSettings { confirmations: WebhookSettings::default().confirmations, ..test_settings() };
    let app = &spawn_app_with(Settings { webhooks, ..serve_settings() }).await;
    assert_eq!(app.chain().finality_depth, DEFAULT_FINALITY_DEPTH);
    assert_eq!(app.chain().pipeline.settings().confirmations, DEFAULT_FINALITY_DEPTH);
    app.keep(app.start_webhooks());
    let _indexer = app.start_indexers();
    let receiver = Receiver::start(&[], 200).await;
    register(app, &receiver.url, &["transaction.mined", "transaction.reorged", "transaction.finalized"]).await;

    let user = wallet();
    app.mint(user.address(), tokens(5)).await;
    let built = app
        .build("/api/v1/USDC/payments/deposit", &json!({"From": user.address(), "Amount": "5", "NonceType": "account"}))
        .await;
    let mut body = app.signed_execute_body(&user, &built).await;
    body["NonceType"] = built["Transaction"]["NonceType"].clone();
    // From here blocks come only when the test mines them.
    let _: Value = app.provider.raw_request("evm_setAutomine".into(), (false,)).await.unwrap();
    let resp = app.execute_async(&body).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let id = resp.json::<Value>().await.unwrap()["TransactionId"].as_i64().unwrap();
    let mine = |n: u64| async move {
        let _: Value = app.provider.raw_request("anvil_mine".into(), (n,)).await.unwrap();
    };
    let row = || async {
        let (status, block, hash): (String, Option<i64>, Option<Vec<u8>>) =
            sqlx::query_as("SELECT status, block_number, block_hash FROM relay_transactions WHERE id = $1")
                .bind(id)
                .fetch_one(app.store.pool())
                .await
                .unwrap();
        (status, block.map(|b| b as u64), hash.map(|h| alloy::primitives::B256::from_slice(&h).to_string()))
    };
    let wait_row = |what: &'static str, pred: fn(&str) -> bool| async move {
        let end = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let r = row().await;
            if pred(&r.0) {
                return r;
            }
            assert!(tokio::time::Instant::now() < end, "the row never became {what}: {r:?}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    };
    let meta_nonce = || async {
        sqlx::query_scalar::<_, String>("SELECT status FROM meta_nonces WHERE nonce = 0 AND nonce_type = 0")
            .fetch_one(app.store.pool())
            .await
            .unwrap()
    };
    let nonce_path = format!("/api/v1/USDC/meta/nonce/{}", user.address());
    // `GET meta/nonce` as of an indexed block at or past `block`.
    let wait_nonce = |block: u64, chain_nonce: u64, nonce: u64| {
        let path = nonce_path.clone();
        async move {
            let end = tokio::time::Instant::now() + Duration::from_secs(30);
            loop {
                let (status, got) = app.get(&path).await;
                if status == StatusCode::OK
                    && got["Block"].as_u64().unwrap() >= block
                    && got["ChainNonce"] == chain_nonce
                    && got["Nonce"] == nonce
                {
                    return;
                }
                assert!(
                    tokio::time::Instant::now() < end,
                    "GET meta/nonce never said ChainNonce {chain_nonce}, Nonce {nonce} at block {block}: {status} {got}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };

    wait_row("submitted", |s| s == "submitted").await;
    mine(1).await;
    let (_, first_block, first_hash) = wait_row("mined", |s| s == "mined").await;
    let (first_block, first_hash) = (first_block.unwrap(), first_hash.unwrap());
    let of_row = |v: &Value| v["Data"]["TransactionId"] == id;
    let mined = receiver.wait_for("transaction.mined", 1, |v| v["Type"] == "transaction.mined" && of_row(v)).await;
    assert_eq!(mined[0]["Data"]["BlockNumber"], first_block);
    assert_eq!(mined[0]["Data"]["BlockHash"], first_hash);
    assert_eq!(meta_nonce().await, "mined");
    wait_nonce(first_block, 1, 1).await;

    // Three blocks on top, then all four replaced by empty ones.
    mine(3).await;
    let head = app.provider.get_block_number().await.unwrap();
    assert_eq!(head, first_block + 3);
    let sponsor_nonce = app.provider.get_transaction_count(app.sponsor).latest().await.unwrap();
    let no_transactions: Vec<Value> = Vec::new();
    let _: Value = app.provider.raw_request("anvil_reorg".into(), (4u64, no_transactions)).await.unwrap();
    assert_eq!(app.provider.get_transaction_count(app.sponsor).latest().await.unwrap(), sponsor_nonce - 1);

    let (_, block, _) = wait_row("submitted again", |s| s == "submitted" || s == "pending").await;
    assert_eq!(block, None);
    assert_eq!(meta_nonce().await, "submitted", "the bySig nonce is in flight again, not used");
    let reorged =
        receiver.wait_for("transaction.reorged", 1, |v| v["Type"] == "transaction.reorged" && of_row(v)).await;
    assert_eq!(reorged[0]["Data"]["ReorgedBlockNumber"], first_block);
    assert_eq!(reorged[0]["Data"]["ReorgedBlockHash"], first_hash);
    // Not used on chain any more, still in flight: the next nonce to sign is still 1.
    wait_nonce(head, 0, 1).await;

    // Mined again (the worker sent it again, or the node kept it): a new block, a new event.
    mine(1).await;
    let (_, second_block, second_hash) = wait_row("mined again", |s| s == "mined").await;
    let (second_block, second_hash) = (second_block.unwrap(), second_hash.unwrap());
    assert_ne!(second_hash, first_hash);
    let mined = receiver.wait_for("transaction.mined", 2, |v| v["Type"] == "transaction.mined" && of_row(v)).await;
    assert_eq!(mined[1]["Data"]["BlockNumber"], second_block);
    assert_eq!(mined[1]["Data"]["BlockHash"], second_hash);
    assert_eq!(meta_nonce().await, "mined");
    wait_nonce(second_block, 1, 1).await;

    // Final at the finality depth (the including block counts as one).
    mine(DEFAULT_FINALITY_DEPTH - 1).await;
    let (_, block, hash) = wait_row("confirmed", |s| s == "confirmed").await;
    assert_eq!((block, hash), (Some(second_block), Some(second_hash.clone())));
    let finalized =
        receiver.wait_for("transaction.finalized", 1, |v| v["Type"] == "transaction.finalized" && of_row(v)).await;
    assert_eq!(finalized[0]["Data"]["BlockHash"], second_hash);
    assert_eq!(finalized[0]["Data"]["State"], "confirmed");
    // Executed once.
    assert_eq!(app.balance_of(user.address()).await, crate::harness::internal(5));
}

#[tokio::test]
async fn a_call_queued_on_a_replica_without_the_lease_is_sent_at_once_by_the_holder() {
    // Two replicas whose workers look at the queue only every 5 s by themselves. A holds the
    // sponsor's lease; a call posted to B is queued by B, whose worker cannot send it. A's worker
    // must be woken by the queued-rows notification and send it at once, not at its next look.
    let stack = Stack::start(&[]).await;
    let slow = PipelineSettings {
        poll_interval: Duration::from_secs(5),
        lease_ttl: Duration::from_secs(20),
        rebroadcast_after: Duration::from_secs(20),
        ..PipelineSettings::default()
    };
    let users = stack.users(2);
    stack.fund_wallets(&users, 10, true).await;
    let a = stack.replica(slow.clone()).await;
    let owner_a = wait_lease_owner(&stack, |o| o.is_some()).await.unwrap();
    let b = stack.replica(slow).await;
    let path = "/api/v1/USDC/meta/execute";
    let async_ = &[("Prefer", "respond-async")];
    // One call through A first: both replicas' workers are past their first look.
    let body = stack.signed_deposit(&a.base, &users[0], 10).await;
    let (status, out) = stack.post(&a.base, path, &body, async_).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{out}");
    stack.settle(false, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let body = stack.signed_deposit(&b.base, &users[1], 10).await;
    let (status, out) = stack.post(&b.base, path, &body, async_).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{out}");
    let queued = tokio::time::Instant::now();
    stack.settle(false, Duration::from_secs(20)).await;
    let took = queued.elapsed();
    assert_eq!(lease_owner_now(&stack).await.as_deref(), Some(owner_a.as_str()), "A held the lease throughout");
    assert!(took < Duration::from_millis(2500), "the holder sent B's call only at its next look: {took:?}");
    stack.assert_exactly_once(&users, 10, 0).await;
}
