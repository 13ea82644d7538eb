//! The in-memory sequencer: the holder of a sponsor's lease counts the sponsor's nonces itself and
//! writes each batch in one statement fenced by the lease and by the database counter; anything
//! else that takes a nonce moves the counter, and the holder's next batch then falls back to the
//! counter under its row lock. Sponsor nonces stay gap-free and each is handed out once.

use std::time::Duration;

use alloy::{
    primitives::{Address, B256, Bytes},
    providers::Provider,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use streampay_relayer::{
    pipeline::PipelineSettings,
    store::{AttemptKind, NewTransaction, SignedAttempt, Store},
};

use crate::{
    harness::{TestApp, internal, spawn_app, tokens, wallet},
    pipeline_stack::{Replica, Stack, fast_settings},
    rpc_proxy::RpcProxy,
};

/// The sponsor's counter as the database holds it.
async fn counter(app: &TestApp) -> u64 {
    let next: i64 = sqlx::query_scalar("SELECT next_nonce FROM sponsor_accounts WHERE chain_id = $1 AND address = $2")
        .bind(app.chain_id as i64)
        .bind(app.sponsor.as_slice())
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    next as u64
}

async fn rows(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM relay_transactions").fetch_one(app.store.pool()).await.unwrap()
}

/// Queues `n` fake calls (nobody sends them) as `owner` at `base`.
async fn leased(store: &Store, app: &TestApp, owner: &str, base: u64, n: usize) -> Option<Vec<u64>> {
    let batch: Vec<NewTransaction> =
        (0..n).map(|i| app.fake_call(Address::repeat_byte(7), base * 100 + i as u64)).collect();
    let slots: Vec<Vec<usize>> = (0..n).map(|i| vec![i]).collect();
    let queued = store
        .enqueue_leased(&batch, &slots, owner, base, |_, nonce| {
            Ok((
                SignedAttempt {
                    hash: B256::with_last_byte(nonce as u8),
                    raw: Bytes::from(vec![9]),
                    kind: AttemptKind::Call,
                    max_fee_per_gas: 2,
                    max_priority_fee_per_gas: 1,
                },
                None,
            ))
        })
        .await
        .unwrap();
    queued.map(|q| q.into_iter().map(|(_, nonce, _)| nonce).collect())
}

#[tokio::test]
async fn a_leased_batch_is_written_only_while_the_lease_is_held_and_the_counter_reads_its_base() {
    let app = spawn_app().await;
    // The app's own worker gives the lease up; "holder" takes it.
    app.stop_pipelines().await;
    let store = app.store.clone();
    store.ensure_sponsor_account(app.chain_id, app.sponsor, 0).await.unwrap();
    assert!(store.acquire_sponsor_lease(app.chain_id, app.sponsor, "holder", 60_000).await.unwrap());
    let n = counter(&app).await;

    // A base the counter does not read (behind it, or ahead of it: a gap), or another owner:
    // nothing is written and the counter does not move.
    assert_eq!(leased(&store, &app, "holder", n + 1, 2).await, None, "a base ahead of the counter");
    if n > 0 {
        assert_eq!(leased(&store, &app, "holder", n - 1, 2).await, None, "a base behind the counter");
    }
    assert_eq!(leased(&store, &app, "someone else", n, 2).await, None, "not the lease's owner");
    assert_eq!((counter(&app).await, rows(&app).await), (n, 0));

    // The holder at the counter's value: its nonces, and the counter moves past them.
    assert_eq!(leased(&store, &app, "holder", n, 3).await, Some(vec![n, n + 1, n + 2]));
    assert_eq!((counter(&app).await, rows(&app).await), (n + 3, 3));

    // Another writer takes a nonce while the holder's statement is on its way: the statement waits
    // for that writer's row lock, then finds the counter moved and writes nothing.
    let mut other = store.pool().begin().await.unwrap();
    sqlx::query("UPDATE sponsor_accounts SET next_nonce = next_nonce + 1 WHERE chain_id = $1 AND address = $2")
        .bind(app.chain_id as i64)
        .bind(app.sponsor.as_slice())
        .execute(&mut *other)
        .await
        .unwrap();
    let racing = {
        let (store, app_ref) = (store.clone(), &app);
        async move { leased(&store, app_ref, "holder", n + 3, 2).await }
    };
    let commit_once_it_waits = async {
        let end = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'WITH claimed%'",
            )
            .fetch_one(app.store.pool())
            .await
            .unwrap();
            if waiting == 1 {
                break;
            }
            assert!(tokio::time::Instant::now() < end, "the leased statement never waited for the row lock");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        other.commit().await.unwrap();
    };
    let (raced, ()) =
        tokio::time::timeout(Duration::from_secs(30), async { tokio::join!(racing, commit_once_it_waits) })
            .await
            .expect("the race ended within 30 s");
    assert_eq!(raced, None, "the counter moved under the holder");
    assert_eq!((counter(&app).await, rows(&app).await), (n + 4, 3));

    // The holder at the counter's new value writes again; once its lease has run out, it does not.
    assert_eq!(leased(&store, &app, "holder", n + 4, 1).await, Some(vec![n + 4]));
    sqlx::query("UPDATE sponsor_accounts SET lease_until = now() - interval '1 second' WHERE address = $1")
        .bind(app.sponsor.as_slice())
        .execute(store.pool())
        .await
        .unwrap();
    assert_eq!(leased(&store, &app, "holder", n + 5, 1).await, None, "an expired lease");
    assert_eq!((counter(&app).await, rows(&app).await), (n + 5, 4));
}

/// The value of `streampay_sequencer_batches_total{path}` (0 before the first such batch).
async fn batches(app: &TestApp, path: &str) -> u64 {
    let text = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let series = format!("streampay_sequencer_batches_total{{path=\"{path}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&series)).map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn the_lease_holder_counts_nonces_itself_and_counts_again_after_another_replica_queues() {
    let app = spawn_app().await;
    let users: Vec<_> = (0..6).map(|_| wallet()).collect();
    app.mint_many(&users.iter().map(|u| u.address()).collect::<Vec<_>>(), tokens(10)).await;
    wait_for_the_lease(app.store.pool(), app.sponsor).await;
    let deposit = |user: &alloy::signers::local::PrivateKeySigner| json!({"From": user.address(), "Amount": "10"});
    let mut hashes = Vec::new();

    // The holder's first batch reads the counter; the next ones are counted in memory.
    for user in &users[..3] {
        let built = app.build("/api/v1/USDC/payments/deposit", &deposit(user)).await;
        hashes.push(app.execute_ok(user, &built).await["TransactionHash"].clone());
    }
    assert_eq!((batches(&app, "leased").await, batches(&app, "stale").await), (2, 0));
    let locked = batches(&app, "locked").await;
    assert_eq!(locked, 1, "only the first batch read the counter");

    // A replica without the lease queues for the same sponsor (under the counter's row lock),
    // while the chain mines nothing: the holder's count is behind the counter, and the chain's
    // count does not tell it so.
    let _: Value = app.provider.raw_request("evm_setAutomine".into(), (false,)).await.unwrap();
    let replica = app.instance_with(crate::harness::serve_settings()).await;
    let mut accepted = Vec::new();
    for (i, user) in users.iter().enumerate().skip(3) {
        let built = app.build("/api/v1/USDC/payments/deposit", &deposit(user)).await;
        let body = app.signed_execute_body(user, &built).await;
        let base = if i == 3 { replica.clone() } else { app.url("") };
        let resp = app
            .http
            .post(format!("{base}/api/v1/USDC/meta/execute"))
            .header("X-API-Key", &app.api_key)
            .header("Prefer", "respond-async")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED, "call {i}");
        accepted.push(resp.json::<Value>().await.unwrap());
        if i == 3 {
            assert_eq!(batches(&app, "locked").await, locked + 1, "the replica read the counter");
        }
    }
    // The holder's next batch found its count stale and read the counter; the one after was
    // counted in memory again.
    assert_eq!(batches(&app, "stale").await, 1, "the holder's count went stale once");
    assert_eq!(batches(&app, "locked").await, locked + 2);
    assert_eq!(batches(&app, "leased").await, 3);
    let _: Value = app.provider.raw_request("evm_mine".into(), ()).await.unwrap();
    let _: Value = app.provider.raw_request("evm_setAutomine".into(), (true,)).await.unwrap();
    let end = tokio::time::Instant::now() + Duration::from_secs(30);
    for a in &accepted {
        let id = a["TransactionId"].as_i64().unwrap_or_else(|| panic!("no row id: {a}"));
        loop {
            let status: String = sqlx::query_scalar("SELECT status FROM relay_transactions WHERE id = $1")
                .bind(id)
                .fetch_one(app.store.pool())
                .await
                .unwrap();
            if status == "mined" || status == "confirmed" {
                break;
            }
            assert!(tokio::time::Instant::now() < end, "row {id} still {status}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        hashes.push(a["TransactionHash"].clone());
    }

    // On chain: six transactions of the sponsor at consecutive nonces, each call run once.
    let mut nonces = Vec::new();
    for hash in &hashes {
        let hash: B256 = hash.as_str().unwrap().parse().unwrap();
        let tx = app.provider.get_transaction_by_hash(hash).await.unwrap().expect("the transaction is on chain");
        nonces.push(alloy::consensus::Transaction::nonce(&tx));
    }
    assert!(nonces.windows(2).all(|w| w[1] == w[0] + 1), "sponsor nonces {nonces:?}");
    for (i, u) in users.iter().enumerate() {
        assert_eq!(app.balance_of(u.address()).await, internal(10), "user {i} deposited once");
    }
    let count = app.provider.get_transaction_count(app.sponsor).await.unwrap();
    assert_eq!(count, nonces[5] + 1, "no transaction of the sponsor beyond these: {nonces:?}");
}

const EXECUTE: &str = "/api/v1/USDC/meta/execute";
const ASYNC: &[(&str, &str)] = &[("Prefer", "respond-async")];

/// Waits (bounded) until some process holds `sponsor`'s lease.
async fn wait_for_the_lease(pool: &sqlx::PgPool, sponsor: Address) {
    let end = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let owner: Option<String> = sqlx::query_scalar("SELECT lease_owner FROM sponsor_accounts WHERE address = $1")
            .bind(sponsor.as_slice())
            .fetch_optional(pool)
            .await
            .unwrap()
            .flatten();
        if owner.is_some() {
            return;
        }
        assert!(tokio::time::Instant::now() < end, "no process took the sponsor's lease");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A stack (Anvil started with `anvil_args`) and one replica reaching its node through a proxy,
/// holding the sponsor's lease; `n` funded users, the first of whom has relayed a deposit (the
/// holder's first batch reads the counter, and it counts from there).
async fn a_holder_behind_a_proxy(
    anvil_args: &[&str],
    settings: PipelineSettings,
    n: usize,
) -> (Stack, RpcProxy, Replica, Vec<alloy::signers::local::PrivateKeySigner>) {
    let stack = Stack::start(anvil_args).await;
    let proxy = RpcProxy::start_at(stack.anvil_url().as_str()).await;
    let relayer = stack.replica_via(settings, proxy.provider()).await;
    let users = stack.users(n);
    stack.fund_wallets(&users, 10, true).await;
    wait_for_the_lease(stack.store.pool(), stack.sponsor()).await;
    let body = stack.signed_deposit(&relayer.base, &users[0], 10).await;
    let (status, resp) = stack.post(&relayer.base, EXECUTE, &body, &[]).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    (stack, proxy, relayer, users)
}

#[tokio::test]
async fn the_lease_holder_sends_a_batch_it_wrote_at_once_without_its_worker() {
    // The node refuses every read of the sponsor's transaction count, with which each pass of
    // the sponsor's worker starts: no pass gets as far as sending. A call the lease holder queues
    // still reaches the chain, sent by the enqueue that wrote it.
    let (stack, proxy, relayer, users) = a_holder_behind_a_proxy(&[], fast_settings(), 2).await;
    let body = stack.signed_deposit(&relayer.base, &users[1], 10).await;
    proxy.set(|req: &Value| {
        (req["method"] == "eth_getTransactionCount")
            .then(|| json!({ "error": { "code": -32000, "message": "count reads refused by the test" } }))
    });
    let (status, resp) = stack.post(&relayer.base, EXECUTE, &body, ASYNC).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{resp}");
    let end = tokio::time::Instant::now() + Duration::from_secs(15);
    while stack.balance_of(users[1].address()).await.is_zero() {
        assert!(tokio::time::Instant::now() < end, "the call never reached the chain while the worker could not pass");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // The worker passes again: it settles the row, and nothing ran twice.
    proxy.clear();
    stack.settle(false, Duration::from_secs(30)).await;
    stack.assert_exactly_once(&users, 10, 0).await;
}

#[tokio::test]
async fn the_worker_does_not_send_again_what_the_lease_holder_sent_at_once() {
    // On a chain with a block every second, a call sent at once waits in the node's pool for its
    // block while the worker, woken by the same write, reads the row: it must mark it, not send
    // the same bytes again. One broadcast per call.
    let settings = PipelineSettings { rebroadcast_after: Duration::from_secs(10), ..fast_settings() };
    let (stack, proxy, relayer, users) = a_holder_behind_a_proxy(&["--block-time", "1"], settings, 4).await;
    let mut bodies = Vec::new();
    for user in &users[1..] {
        bodies.push(stack.signed_deposit(&relayer.base, user, 10).await);
    }
    proxy.reset();
    for body in &bodies {
        let (status, resp) = stack.post(&relayer.base, EXECUTE, body, ASYNC).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{resp}");
    }
    stack.settle(false, Duration::from_secs(30)).await;
    let sends = proxy.calls_of(&["eth_sendRawTransaction"]);
    assert_eq!(sends.get("eth_sendRawTransaction"), Some(&3), "one broadcast per call: {sends:?}");
    stack.assert_exactly_once(&users, 10, 0).await;
}
