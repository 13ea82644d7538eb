//! The event indexer against a real Anvil and a real Postgres: every read it serves must equal
//! the chain's own view functions at the indexed block, through backfill, head following,
//! reorgs of several depths, restarts and re-ingests.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use alloy::{
    eips::BlockId,
    eips::BlockNumberOrTag,
    eips::Encodable2718,
    network::{EthereumWallet, NetworkTransactionBuilder, TransactionBuilder},
    primitives::{Address, B256, Bytes, U256},
    providers::{DynProvider, Provider, ProviderBuilder},
    rpc::types::{Filter, TransactionRequest},
    signers::local::PrivateKeySigner,
    sol_types::SolCall,
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use reqwest::StatusCode;
use serde_json::{Value, json};
use streampay_relayer::{
    chain::{MockToken, StreamPay},
    indexer::{BlockHeader, IndexReader, Indexer, IndexerConfig, LogSource, RawLog, RpcLogSource, Step},
};

use crate::harness::Mined;
use crate::harness::{TestApp, assert_error, internal, spawn_app, spawn_app_with, tokens, wallet};
use streampay_relayer::api::Settings;

// ------------------------------------------------------------------------------------ helpers

fn test_config() -> IndexerConfig {
    IndexerConfig { poll_interval: Duration::from_millis(20), reorg_window: 64, ..IndexerConfig::default() }
}

fn indexer_with<S: LogSource>(app: &TestApp, source: S, cfg: IndexerConfig) -> Indexer<S> {
    Indexer::new(Arc::new(source), app.store.pool().clone(), app.chain_id, app.contract, 0, cfg)
}

fn indexer(app: &TestApp, cfg: IndexerConfig) -> Indexer<RpcLogSource> {
    indexer_with(app, RpcLogSource::new(app.provider.clone()), cfg)
}

fn reader(app: &TestApp) -> IndexReader {
    IndexReader::new(app.store.pool().clone(), app.chain_id)
}

/// Waits (at most 10 s) until the indexer whose `status` this is has indexed `chain`'s head.
async fn wait_synced(
    status: &tokio::sync::watch::Receiver<streampay_relayer::indexer::IndexerStatus>,
    chain: &impl Provider,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        // Read the head first, then the status: a `watch::Ref` held across an `.await` blocks the
        // indexer's next status update on this same thread (a deadlock, not a slow test).
        let head = chain.get_block_number().await.unwrap();
        let indexed = status.borrow().indexed_block;
        if indexed >= head {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "initial sync: indexed {indexed} of {head}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits (at most `within`) until `r` serves `who`'s balance in `contract` as `expected`; the
/// panic names `what` did not happen.
async fn wait_balance(r: &IndexReader, contract: Address, who: Address, expected: U256, within: Duration, what: &str) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let seen = r.balance(contract, who).await.unwrap();
        if seen.as_ref().is_some_and(|v| v.balance == expected) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: {seen:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A provider that signs as `signer`, given native coin by `anvil_setBalance`.
async fn funded_wallet(app: &TestApp) -> (PrivateKeySigner, DynProvider) {
    let signer = wallet();
    let _: Value = app
        .provider
        .raw_request("anvil_setBalance".into(), (signer.address(), U256::from(10u64).pow(U256::from(21))))
        .await
        .expect("anvil_setBalance");
    let p = ProviderBuilder::new().wallet(signer.clone()).connect_provider(app.provider.clone()).erased();
    (signer, p)
}

/// Mints `n` tokens to the provider's account and deposits them with plain transactions.
async fn deposit_direct(app: &TestApp, p: &DynProvider, who: Address, n: u64) {
    app.mint(who, tokens(n)).await;
    MockToken::new(app.token, p).approve(app.contract, U256::MAX).send().await.unwrap().mined().await;
    let sp = StreamPay::new(app.contract, p);
    let deposit = sp.deposit(tokens(n), false);
    if let Err(e) = deposit.call().await {
        panic!("deposit would revert: {e}");
    }
    let r = deposit.send().await.unwrap().mined().await;
    assert!(r.status());
}

/// Sends with a quarter of headroom over the estimate: what a StreamPay call costs depends on the
/// second it runs in (stream settlement writes), and a block can land in a later second than the
/// estimate's, so an exact estimate can run out of gas (this once failed a soak run).
async fn send_ok<P: Provider, C: SolCall>(call: alloy::contract::CallBuilder<P, std::marker::PhantomData<C>>) {
    let estimate = call.estimate_gas().await.expect("estimate");
    let pending = call.gas(estimate + estimate / 4).send().await.expect("send");
    let r = tokio::time::timeout(Duration::from_secs(20), pending.get_receipt())
        .await
        .expect("no receipt within 20 s")
        .expect("receipt");
    assert!(r.status(), "transaction reverted");
}

/// A fresh signing provider: no nonce cached from before a rollback.
fn signing(app: &TestApp, signer: &PrivateKeySigner) -> DynProvider {
    ProviderBuilder::new().wallet(signer.clone()).connect_provider(app.provider.clone()).erased()
}

/// Every account the index knows plus `extra`.
async fn all_accounts(app: &TestApp, extra: &[Address]) -> BTreeSet<Address> {
    let rows: Vec<Vec<u8>> = sqlx::query_scalar("SELECT account FROM idx_accounts WHERE contract = $1")
        .bind(app.contract.as_slice())
        .fetch_all(app.store.pool())
        .await
        .unwrap();
    rows.iter().map(|r| Address::from_slice(r)).chain(extra.iter().copied()).collect()
}

/// Asserts that, for every account, the index equals the chain's views at the indexed block:
/// `balanceOf`, `signedBalanceOf`, `accountInfo`, `allSubscriptions` (same order),
/// `bySigAccountNonces`, and the incoming streams against `subscriptions(from, to)`.
async fn assert_index_matches_chain(app: &TestApp, extra: &[Address]) -> u64 {
    let r = reader(app);
    let head = r.head(app.contract).await.unwrap().expect("indexed");
    let block = BlockId::number(head.block_number);
    let chain_block = app.provider.get_block_by_number(head.block_number.into()).await.unwrap().unwrap();
    assert_eq!(chain_block.header.timestamp, head.block_timestamp, "indexed head timestamp");
    let sp = app.streampay();
    for a in all_accounts(app, extra).await {
        let at = format!("account {a} at block {}", head.block_number);
        let view = r.balance(app.contract, a).await.unwrap().unwrap();
        assert_eq!(view.head, head);
        assert_eq!(view.balance, sp.balanceOf(a).block(block).call().await.unwrap(), "balanceOf, {at}");
        assert_eq!(
            view.signed_balance,
            sp.signedBalanceOf(a).block(block).call().await.unwrap(),
            "signedBalanceOf, {at}"
        );
        let info = sp.accountInfo(a).block(block).call().await.unwrap();
        assert_eq!(view.stored_balance, info.balance, "accountInfo.balance, {at}");
        assert_eq!(view.income_rate, info.incomeRate, "accountInfo.incomeRate, {at}");
        assert_eq!(view.outgoing_rate, info.outgoingRate, "accountInfo.outgoingRate, {at}");
        assert_eq!(U256::from(view.updated), info.updated, "accountInfo.updated, {at}");

        let subs = sp.allSubscriptions(a).block(block).call().await.unwrap();
        let indexed = r.subscriptions(app.contract, a).await.unwrap().unwrap();
        assert_eq!(
            indexed.streams.iter().map(|s| s.author).collect::<Vec<_>>(),
            subs.authors,
            "allSubscriptions authors, {at}"
        );
        assert_eq!(
            indexed.streams.iter().map(|s| s.encoded_rates).collect::<Vec<_>>(),
            subs.rates,
            "allSubscriptions rates, {at}"
        );
        assert_eq!(
            r.nonce(app.contract, a).await.unwrap(),
            sp.bySigAccountNonces(a).block(block).call().await.unwrap(),
            "bySigAccountNonces, {at}"
        );

        let incoming = r.incoming_streams(app.contract, a).await.unwrap().unwrap();
        assert_eq!(incoming.income_rate, info.incomeRate, "incoming income rate, {at}");
        for s in &incoming.streams {
            let (active, encoded) = sp.subscriptions(s.subscriber, a).block(block).call().await.unwrap().into();
            assert!(active, "indexed stream {} -> {a} not active on chain", s.subscriber);
            assert_eq!(encoded, s.encoded_rates, "incoming stream {} -> {a}", s.subscriber);
        }
    }
    head.block_number
}

/// Every StreamPay log on the chain must be stored exactly once.
async fn assert_events_complete(app: &TestApp) {
    let head = reader(app).head(app.contract).await.unwrap().unwrap().block_number;
    let logs = app.provider.get_logs(&Filter::new().address(app.contract).from_block(0).to_block(head)).await.unwrap();
    let rows: Vec<(Vec<u8>, i32)> = sqlx::query_as(
        "SELECT block_hash, log_index FROM idx_events WHERE contract = $1 ORDER BY block_number, log_index",
    )
    .bind(app.contract.as_slice())
    .fetch_all(app.store.pool())
    .await
    .unwrap();
    let chain: Vec<(Vec<u8>, i32)> =
        logs.iter().map(|l| (l.block_hash.unwrap().to_vec(), l.log_index.unwrap() as i32)).collect();
    assert_eq!(rows.len(), chain.len(), "stored events vs chain logs");
    assert_eq!(rows, chain, "stored events are exactly the chain's logs");
}

async fn raw(app: &TestApp, method: &str, params: Value) -> Value {
    app.provider.raw_request(method.to_string().into(), params).await.unwrap_or_else(|e| panic!("{method}: {e}"))
}

/// A `pay` transaction signed locally, as raw bytes for `anvil_reorg` (which can only sign for
/// its own dev accounts).
async fn signed_pay(app: &TestApp, signer: &PrivateKeySigner, to: Address, amount: U256, nonce: u64) -> Bytes {
    let tx = TransactionRequest::default()
        .with_from(signer.address())
        .with_to(app.contract)
        .with_input(pay_call(to, amount))
        .with_nonce(nonce)
        .with_chain_id(app.chain_id)
        .with_gas_limit(200_000)
        .with_max_fee_per_gas(100_000_000_000)
        .with_max_priority_fee_per_gas(1_000_000_000);
    let envelope = tx.build(&EthereumWallet::from(signer.clone())).await.expect("sign");
    envelope.encoded_2718().into()
}

fn pay_call(to: Address, amount: U256) -> Bytes {
    StreamPay::payCall { receiver: to, amount }.abi_encode().into()
}

// ------------------------------------------------------------------------------------ tests

#[tokio::test]
async fn index_serves_balances_streams_and_nonces_equal_to_the_chain() {
    let app = spawn_app().await;
    let (user, author) = (wallet(), wallet());
    app.fund(&user, 100).await;
    let built = app
        .build(
            "/api/v1/USDC/subscriptions",
            &json!({"from": user.address(), "author": author.address(), "subscription_rate": "30"}),
        )
        .await;
    app.execute_ok(&user, &built).await;
    app.advance(3_600).await;

    let ix = indexer(&app, test_config());
    ix.sync_to_head().await.unwrap();
    assert_index_matches_chain(&app, &[user.address(), author.address()]).await;
    assert_events_complete(&app).await;

    let r = reader(&app);
    let incoming = r.incoming_streams(app.contract, author.address()).await.unwrap().unwrap();
    assert_eq!(incoming.streams.len(), 1);
    assert_eq!(incoming.streams[0].subscriber, user.address());
    assert_eq!(incoming.streams_income_rate, incoming.income_rate);
    assert!(!incoming.income_rate.is_zero());
    // Deposit and subscribe used unique nonces (the build default): the account nonce is untouched.
    assert_eq!(r.nonce(app.contract, user.address()).await.unwrap(), U256::ZERO, "unique nonces by default");
    let author_balance = r.balance(app.contract, author.address()).await.unwrap().unwrap();
    assert!(author_balance.balance > U256::ZERO, "the author's balance grows with time");
}

/// `GET /meta/nonce` answers the account nonce from the index (at the indexed block), raised
/// past nonces the relayer saw mined before the index caught up; built calls reserve nothing.
#[tokio::test]
async fn nonce_endpoint_reads_the_index_and_its_own_writes() {
    let app = spawn_app().await;
    let user = wallet();
    let ordered = json!({"From": user.address(), "To": wallet().address(), "Amount": "1", "NonceType": "account"});
    async fn get(app: &TestApp, who: Address) -> (u64, u64, u64) {
        let (status, body) = app.get(&format!("/api/v1/USDC/meta/nonce/{who}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        (body["Nonce"].as_u64().unwrap(), body["ChainNonce"].as_u64().unwrap(), body["Block"].as_u64().unwrap())
    }
    async fn chain_nonce(app: &TestApp, who: Address) -> U256 {
        app.streampay().bySigAccountNonces(who).call().await.unwrap()
    }
    // Reads answer only from the index: before its first checkpoint there is no answer yet.
    for path in [
        format!("/api/v1/USDC/meta/nonce/{}", user.address()),
        format!("/api/v1/USDC/payments/balance/{}", user.address()),
        format!("/api/v1/USDC/subscriptions/{}", user.address()),
        format!("/api/v1/USDC/authors/{}/streams", user.address()),
    ] {
        assert_error(&app.get(&path).await, StatusCode::SERVICE_UNAVAILABLE, "index_not_ready");
    }
    app.mint(user.address(), crate::harness::tokens(10)).await;
    let deposit = json!({"From": user.address(), "Amount": "10", "NonceType": "account"});
    let built = app.build("/api/v1/USDC/payments/deposit", &deposit).await;
    app.execute_ok(&user, &built).await; // account nonce 0, relayed and mined

    let ix = indexer(&app, test_config());
    ix.sync_to_head().await.unwrap();
    let head = reader(&app).head(app.contract).await.unwrap().unwrap().block_number;
    assert_eq!(chain_nonce(&app, user.address()).await, U256::from(1u8));
    assert_eq!(get(&app, user.address()).await, (1, 1, head));

    let built = app.build("/api/v1/USDC/payments/", &ordered).await;
    assert_eq!(built["Transaction"]["Nonce"], 1);
    assert_eq!(get(&app, user.address()).await, (1, 1, head), "a built call reserves nothing");

    app.execute_ok(&user, &built).await;
    assert_eq!(chain_nonce(&app, user.address()).await, U256::from(2u8));
    assert_eq!(get(&app, user.address()).await.0, 2, "read-your-writes");

    ix.sync_to_head().await.unwrap();
    let new_head = reader(&app).head(app.contract).await.unwrap().unwrap().block_number;
    assert!(new_head > head);
    assert_eq!(get(&app, user.address()).await, (2, 2, new_head));

    // The index is the source: what it says is what the endpoint says.
    sqlx::query("UPDATE idx_nonces SET next_nonce = 7 WHERE contract = $1 AND signer = $2 AND nonce_type = 0")
        .bind(app.contract.as_slice())
        .bind(user.address().as_slice())
        .execute(app.store.pool())
        .await
        .unwrap();
    // A hand-made change sends no notification: drop the read cache as the indexer's would.
    app.chain().index.invalidate_cache();
    assert_eq!(get(&app, user.address()).await, (7, 7, new_head));
}

#[tokio::test]
async fn lag_is_reported_against_the_chain_head() {
    let app = spawn_app().await;
    let cfg = IndexerConfig { max_follow_range: 1, ..test_config() };
    let ix = indexer(&app, cfg);
    ix.sync_to_head().await.unwrap();
    let status = ix.status();
    assert_eq!(status.borrow().lag_blocks, 0);
    for _ in 0..3 {
        let _ = raw(&app, "evm_mine", json!([])).await;
    }
    assert!(matches!(ix.step().await.unwrap(), Step::Advanced { .. }));
    assert_eq!(status.borrow().lag_blocks, 2, "one block per step, two still to go");
    let lag = reader(&app).lag(app.contract).await.unwrap().unwrap();
    assert_eq!((lag.blocks, lag.chain_head - lag.indexed_block), (2, 2));
    ix.sync_to_head().await.unwrap();
    assert_eq!(status.borrow().lag_blocks, 0);
    assert_eq!(reader(&app).lag(app.contract).await.unwrap().unwrap().blocks, 0);
}

#[tokio::test]
async fn reorg_that_removes_a_subscription_rolls_the_stream_back() {
    let app = spawn_app().await;
    // Subscribed with the user's own transaction, not relayed: the relayer's pipeline would send
    // a relayed call again once a reorg drops it (as it should), and could get it mined again
    // before the index is read below.
    let ((user, p), author) = (funded_wallet(&app).await, wallet());
    deposit_direct(&app, &p, user.address(), 100).await;
    let ix = indexer(&app, test_config());
    ix.sync_to_head().await.unwrap();

    send_ok(StreamPay::new(app.contract, &p).subscribe(
        author.address(),
        alloy::primitives::Uint::from(1_000_000_000u64),
        U256::ZERO,
    ))
    .await;
    app.advance(600).await;
    ix.sync_to_head().await.unwrap();
    let r = reader(&app);
    assert_eq!(r.subscriptions(app.contract, user.address()).await.unwrap().unwrap().streams.len(), 1);

    // Replace the subscribe block and the block after it by two empty blocks: same height,
    // other hashes, no stream.
    let _ = raw(&app, "anvil_reorg", json!([2, []])).await;
    let (active, _) = app.streampay().subscriptions(user.address(), author.address()).call().await.unwrap().into();
    assert!(!active, "the reorg removed the subscription on chain");
    ix.sync_to_head().await.unwrap();
    assert!(r.subscriptions(app.contract, user.address()).await.unwrap().unwrap().streams.is_empty());
    assert!(r.incoming_streams(app.contract, author.address()).await.unwrap().unwrap().streams.is_empty());
    assert_index_matches_chain(&app, &[user.address(), author.address()]).await;
    assert_events_complete(&app).await;
    let undo: i64 = sqlx::query_scalar("SELECT count(*) FROM idx_undo").fetch_one(app.store.pool()).await.unwrap();
    assert!(undo > 0, "blocks inside the window keep undo entries");
}

#[tokio::test]
async fn reorg_that_reorders_payments_applies_the_new_order() {
    let app = spawn_app().await;
    let (alice, p) = funded_wallet(&app).await;
    let (bob, carol) = (wallet().address(), wallet().address());
    deposit_direct(&app, &p, alice.address(), 25).await;
    let ix = indexer(&app, test_config());
    ix.sync_to_head().await.unwrap();

    // Alice holds 25: paying bob 10 then carol 20 leaves the second payment reverted.
    let sp = StreamPay::new(app.contract, &p);
    send_ok(sp.pay(bob, internal(10))).await;
    let second = sp.pay(carol, internal(20)).gas(200_000).send().await.unwrap().mined().await;
    assert!(!second.status());
    ix.sync_to_head().await.unwrap();
    assert_eq!(reader(&app).balance(app.contract, bob).await.unwrap().unwrap().balance, internal(10));

    // The reorged chain mines carol's payment first: now bob's is the one that fails.
    let nonce = p.get_transaction_count(alice.address()).await.unwrap();
    let first = signed_pay(&app, &alice, carol, internal(20), nonce - 2).await;
    let then = signed_pay(&app, &alice, bob, internal(10), nonce - 1).await;
    let _ = raw(&app, "anvil_reorg", json!([2, [[first, 0], [then, 1]]])).await;
    ix.sync_to_head().await.unwrap();
    let r = reader(&app);
    assert_eq!(r.balance(app.contract, carol).await.unwrap().unwrap().balance, app.balance_of(carol).await);
    assert_eq!(r.balance(app.contract, carol).await.unwrap().unwrap().balance, internal(20));
    assert_eq!(r.balance(app.contract, bob).await.unwrap().unwrap().balance, U256::ZERO);
    assert_index_matches_chain(&app, &[alice.address(), bob, carol]).await;
    assert_events_complete(&app).await;
}

#[tokio::test]
async fn rollbacks_and_reorgs_at_several_depths_keep_the_index_equal_to_the_chain() {
    let app = spawn_app().await;
    let (alice, p) = funded_wallet(&app).await;
    deposit_direct(&app, &p, alice.address(), 1_000).await;
    let authors: Vec<Address> = (0..4).map(|_| wallet().address()).collect();
    let ix = indexer(&app, test_config());
    let mut accounts = vec![alice.address()];
    accounts.extend(&authors);

    for (round, depth) in [1u64, 3, 7].into_iter().enumerate() {
        // `depth` blocks of activity: subscribe, pay, unsubscribe, time passing.
        for i in 0..depth {
            let author = authors[(round + i as usize) % authors.len()];
            match i % 3 {
                0 => {
                    send_ok(StreamPay::new(app.contract, signing(&app, &alice)).subscribe(
                        author,
                        alloy::primitives::Uint::from(1_000_000_000u64 * (i + 1)),
                        U256::ZERO,
                    ))
                    .await
                }
                1 => send_ok(StreamPay::new(app.contract, signing(&app, &alice)).pay(author, internal(1))).await,
                _ => {
                    let _ = raw(&app, "evm_increaseTime", json!([120])).await;
                    let _ = raw(&app, "evm_mine", json!([])).await;
                }
            }
        }
        ix.sync_to_head().await.unwrap();
        assert_index_matches_chain(&app, &accounts).await;

        // anvil_rollback: the chain gets shorter, then grows again on another branch.
        let _ = raw(&app, "anvil_rollback", json!([depth])).await;
        ix.sync_to_head().await.unwrap();
        assert_index_matches_chain(&app, &accounts).await;
        send_ok(StreamPay::new(app.contract, signing(&app, &alice)).pay(authors[round], internal(2))).await;
        let _ = raw(&app, "evm_increaseTime", json!([60])).await;
        let _ = raw(&app, "evm_mine", json!([])).await;
        ix.sync_to_head().await.unwrap();
        assert_index_matches_chain(&app, &accounts).await;

        // anvil_reorg: same height, `depth` blocks replaced by one carrying another payment.
        // The replaced blocks' transactions are dropped, so alice's nonce is counted before them.
        let replaced = depth.min(2);
        let head = app.provider.get_block_number().await.unwrap();
        let nonce = p.get_transaction_count(alice.address()).block_id(BlockId::number(head - replaced)).await.unwrap();
        let tx = signed_pay(&app, &alice, authors[3 - round], internal(3), nonce).await;
        let _ = raw(&app, "anvil_reorg", json!([replaced, [[tx, 0]]])).await;
        ix.sync_to_head().await.unwrap();
        assert_index_matches_chain(&app, &accounts).await;
        assert_events_complete(&app).await;
    }
}

#[tokio::test]
async fn restart_mid_backfill_leaves_no_gap_and_no_duplicate() {
    let app = spawn_app().await;
    let (alice, p) = funded_wallet(&app).await;
    deposit_direct(&app, &p, alice.address(), 10_000).await;
    let sp = StreamPay::new(app.contract, &p);
    let receivers: Vec<Address> = (0..20).map(|_| wallet().address()).collect();
    for i in 0..40u64 {
        let calls: Vec<Bytes> =
            (0..25).map(|j| pay_call(receivers[(i as usize + j) % 20], U256::from(1_000 + i))).collect();
        send_ok(sp.multicall(calls)).await;
        if i % 7 == 0 {
            send_ok(sp.subscribe(receivers[i as usize % 20], alloy::primitives::Uint::from(1_000u64 + i), U256::ZERO))
                .await;
        }
    }
    // A small window and tiny ranges: most of the chain is backfilled, in many commits.
    let cfg = IndexerConfig { reorg_window: 4, initial_range: 1, max_range: 2, target_logs: 30, ..test_config() };
    let head = app.provider.get_block_number().await.unwrap();
    // The first indexer gets a pool of its own, closed after the kill below: a crashed process
    // takes its connections with it (Postgres then rolls back whatever they had open), while an
    // aborted task sharing the test's pool would hand a connection stuck mid-COPY to the next one.
    let first_pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect_with((*app.store.pool().connect_options()).clone())
        .await
        .unwrap();
    // Its source never answers past half the chain, so the kill below always lands mid-backfill
    // however fast this machine runs the indexer between the test's polls.
    let first = Indexer::new(
        Arc::new(StallingSource { inner: RpcLogSource::new(app.provider.clone()), stall_after: head / 2 }),
        first_pool.clone(),
        app.chain_id,
        app.contract,
        0,
        cfg.clone(),
    );
    let status = first.status();
    let task = tokio::spawn(first.run(std::future::pending()));
    let checkpoint = || async {
        sqlx::query_scalar::<_, i64>("SELECT block_number FROM idx_checkpoints")
            .fetch_optional(app.store.pool())
            .await
            .unwrap()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let at = checkpoint().await.unwrap_or(0) as u64;
        if at >= head / 3 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the indexer made no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    task.abort(); // killed mid-backfill, possibly inside a transaction
    let _ = task.await;
    first_pool.close().await;
    let stopped_at = checkpoint().await.unwrap() as u64;
    assert!(stopped_at < head - cfg.reorg_window, "stopped before the end of the backfill ({stopped_at} of {head})");
    drop(status);

    let second = indexer(&app, cfg);
    second.sync_to_head().await.unwrap();
    assert_events_complete(&app).await;
    let mut accounts = receivers.clone();
    accounts.push(alice.address());
    assert_index_matches_chain(&app, &accounts).await;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM idx_events").fetch_one(app.store.pool()).await.unwrap();
    assert!(total >= 1_000, "the chain had {total} events");
}

#[tokio::test]
async fn reingesting_stored_blocks_changes_nothing() {
    let app = spawn_app().await;
    let (user, friend) = (wallet(), wallet());
    app.fund(&user, 50).await;
    let built = app
        .build("/api/v1/USDC/payments/", &json!({"From": user.address(), "To": friend.address(), "Amount": "5"}))
        .await;
    app.execute_ok(&user, &built).await;
    let ix = indexer(&app, test_config());
    ix.sync_to_head().await.unwrap();
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM idx_events").fetch_one(app.store.pool()).await.unwrap();

    // Move the checkpoint back over stored events (as a crash between two writers could):
    // the COPY meets the unique key, the batch is redone with ON CONFLICT and applies nothing twice.
    sqlx::query(
        "UPDATE idx_checkpoints c SET block_number = b.number, block_hash = b.hash, block_timestamp = b.timestamp \
         FROM idx_blocks b WHERE b.number = 0 AND b.contract = c.contract",
    )
    .execute(app.store.pool())
    .await
    .unwrap();
    sqlx::query("DELETE FROM idx_undo").execute(app.store.pool()).await.unwrap();
    ix.sync_to_head().await.unwrap();
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM idx_events").fetch_one(app.store.pool()).await.unwrap();
    assert_eq!(before, after);
    assert_index_matches_chain(&app, &[user.address(), friend.address()]).await;
}

/// A real node behind a provider limit: ranges wider than `max_blocks` fail like a provider's
/// "query exceeds limit" error.
struct LimitedSource {
    inner: RpcLogSource,
    max_blocks: u64,
}

impl LogSource for LimitedSource {
    async fn head(&self) -> anyhow::Result<u64> {
        self.inner.head().await
    }
    async fn header(&self, n: u64) -> anyhow::Result<Option<streampay_relayer::indexer::BlockHeader>> {
        self.inner.header(n).await
    }
    async fn logs(&self, address: Address, from: u64, to: u64) -> anyhow::Result<Vec<RawLog>> {
        anyhow::ensure!(to - from < self.max_blocks, "query exceeds the limit of {} blocks", self.max_blocks);
        self.inner.logs(address, from, to).await
    }
}

/// A provider that never answers for logs past `stall_after`: an indexer using it is stuck
/// mid-backfill until it is killed.
struct StallingSource {
    inner: RpcLogSource,
    stall_after: u64,
}

impl LogSource for StallingSource {
    async fn head(&self) -> anyhow::Result<u64> {
        self.inner.head().await
    }
    async fn header(&self, n: u64) -> anyhow::Result<Option<streampay_relayer::indexer::BlockHeader>> {
        self.inner.header(n).await
    }
    async fn logs(&self, address: Address, from: u64, to: u64) -> anyhow::Result<Vec<RawLog>> {
        if to > self.stall_after {
            std::future::pending::<()>().await;
        }
        self.inner.logs(address, from, to).await
    }
}

#[tokio::test]
async fn backfill_shrinks_ranges_the_provider_refuses_and_still_completes() {
    let app = spawn_app().await;
    let (alice, p) = funded_wallet(&app).await;
    deposit_direct(&app, &p, alice.address(), 100).await;
    for _ in 0..12 {
        send_ok(StreamPay::new(app.contract, &p).pay(wallet().address(), internal(1))).await;
    }
    let cfg = IndexerConfig { reorg_window: 2, initial_range: 64, ..test_config() };
    let ix = indexer_with(&app, LimitedSource { inner: RpcLogSource::new(app.provider.clone()), max_blocks: 3 }, cfg);
    ix.sync_to_head().await.unwrap();
    assert!(ix.range() <= 3, "range adapted to the provider: {}", ix.range());
    assert_events_complete(&app).await;
    assert_index_matches_chain(&app, &[alice.address()]).await;
}

// ------------------------------------------------------------------ consistency property

#[derive(Debug, Clone, Copy)]
enum Op {
    Deposit,
    Pay,
    Subscribe,
    Unsubscribe,
    Withdraw,
    TimeJump,
    Liquidate,
}

/// Random operations through the API (plus time jumps and liquidations sent directly); after
/// each one, every account's indexed balance, streams and nonce equal the chain's views at the
/// same block, exactly.
#[tokio::test]
async fn random_operations_keep_the_index_equal_to_the_chain() {
    let seed: u64 = std::env::var("INDEXER_PROPTEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_2026);
    let steps: usize = std::env::var("INDEXER_PROPTEST_STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let mut rng = StdRng::seed_from_u64(seed);
    let app = spawn_app().await;
    let (keeper, keeper_p) = funded_wallet(&app).await;
    let users: Vec<PrivateKeySigner> = (0..4).map(|_| wallet()).collect();
    for u in &users[..3] {
        app.fund(u, 200).await;
    }
    let mut known: Vec<Address> = users.iter().map(|u| u.address()).collect();
    known.push(keeper.address());
    let ix = indexer(&app, test_config());
    ix.sync_to_head().await.unwrap();
    let sp = app.streampay();
    let ops = [
        Op::Deposit,
        Op::Pay,
        Op::Pay,
        Op::Subscribe,
        Op::Subscribe,
        Op::Subscribe,
        Op::Unsubscribe,
        Op::Unsubscribe,
        Op::Withdraw,
        Op::TimeJump,
        Op::Liquidate,
    ];

    for step in 0..steps {
        let op = ops[rng.random_range(0..ops.len())];
        let u = &users[rng.random_range(0..users.len())];
        let other =
            users.iter().filter(|o| o.address() != u.address()).nth(rng.random_range(0..users.len() - 1)).unwrap();
        let what = format!("seed {seed} step {step}: {op:?} by {}", u.address());
        let outcome = match op {
            Op::Deposit => {
                let n: u64 = rng.random_range(1..50);
                app.mint(u.address(), tokens(n)).await;
                exec(&app, u, "/api/v1/USDC/payments/deposit", &json!({"From": u.address(), "Amount": n.to_string()}))
                    .await
            }
            Op::Pay => {
                let amount = format!("{}.{:03}", rng.random_range(0..20), rng.random_range(1..1000));
                let body = json!({"From": u.address(), "To": other.address(), "Amount": amount});
                exec(&app, u, "/api/v1/USDC/payments/", &body).await
            }
            Op::Subscribe => {
                let rate = rng.random_range(30..3_000).to_string();
                let body = json!({"from": u.address(), "author": other.address(), "subscription_rate": rate});
                exec(&app, u, "/api/v1/USDC/subscriptions", &body).await
            }
            Op::Unsubscribe => {
                let authors = sp.allSubscriptions(u.address()).call().await.unwrap().authors;
                if authors.is_empty() {
                    continue;
                }
                let author = authors[rng.random_range(0..authors.len())];
                let (status, built) =
                    app.delete(&format!("/api/v1/USDC/subscriptions/{author}?From={}", u.address())).await;
                if status == StatusCode::OK { execute_or_expire(&app, u, &built).await } else { status }
            }
            Op::Withdraw => {
                let body = json!({"From": u.address(), "Amount": rng.random_range(1..30).to_string()});
                exec(&app, u, "/api/v1/USDC/payments/withdraw", &body).await
            }
            Op::TimeJump => {
                app.advance(rng.random_range(60..3 * 86_400)).await;
                StatusCode::OK
            }
            Op::Liquidate => {
                let mut any = StatusCode::NO_CONTENT;
                for v in &users {
                    if sp.isLiquidatable(v.address()).call().await.unwrap() {
                        send_ok(StreamPay::new(app.contract, &keeper_p).liquidate(v.address())).await;
                        any = StatusCode::OK;
                    }
                }
                any
            }
        };
        assert!(!outcome.is_server_error(), "{what}: server error");
        ix.sync_to_head().await.unwrap_or_else(|e| panic!("{what}: sync failed: {e:#}"));
        let block = assert_index_matches_chain(&app, &known).await;
        eprintln!("{what} -> {outcome} (indexed block {block})");
    }
    assert_events_complete(&app).await;
    let kinds: Vec<i16> = sqlx::query_scalar("SELECT DISTINCT kind FROM idx_events ORDER BY kind")
        .fetch_all(app.store.pool())
        .await
        .unwrap();
    assert!(
        kinds.contains(&2) && kinds.contains(&3) && kinds.contains(&8),
        "the run exercised streams and nonces: {kinds:?}"
    );
}

/// Builds and executes; returns the status of whichever failed first (a revert is a valid
/// outcome of a random operation, e.g. a payment larger than the balance).
async fn exec(app: &TestApp, signer: &PrivateKeySigner, path: &str, body: &Value) -> StatusCode {
    let (status, built) = app.post(path, body).await;
    if status != StatusCode::OK {
        return status;
    }
    execute_or_expire(app, signer, &built).await
}

/// Executes a built meta-transaction. When execution is refused (e.g. the simulation reverts),
/// the relayer keeps the built nonce reserved until its deadline, and later builds for the
/// signer would get 409 `nonce_gap`; moving the clock past the deadline frees it (a time jump
/// is one of the random operations anyway).
async fn execute_or_expire(app: &TestApp, signer: &PrivateKeySigner, built: &Value) -> StatusCode {
    let status = app.execute(signer, built).await.0;
    if status != StatusCode::OK {
        app.advance(3_601).await;
    }
    status
}

#[tokio::test]
async fn cached_reader_never_serves_a_balance_older_than_the_last_commit() {
    let app = spawn_app().await;
    let (alice, p) = funded_wallet(&app).await;
    deposit_direct(&app, &p, alice.address(), 100).await;
    let ix = indexer(&app, test_config());
    ix.sync_to_head().await.unwrap();
    let cached = IndexReader::with_cache(app.store.pool().clone(), app.chain_id);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cached.cache_active() {
        assert!(tokio::time::Instant::now() < deadline, "cache listener never connected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let bob = wallet().address();
    assert_eq!(cached.balance(app.contract, bob).await.unwrap().unwrap().balance, U256::ZERO);
    assert_eq!(cached.balance(app.contract, bob).await.unwrap().unwrap().balance, U256::ZERO, "served from the cache");

    for i in 1..=3u64 {
        send_ok(StreamPay::new(app.contract, &p).pay(bob, internal(1))).await;
        ix.sync_to_head().await.unwrap();
        // The commit's NOTIFY reaches the listener asynchronously: the new balance must show up
        // promptly, and once it has, the old one must never come back.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let seen = cached.balance(app.contract, bob).await.unwrap().unwrap();
            if seen.balance == internal(i) {
                break;
            }
            assert_eq!(seen.balance, internal(i - 1), "only the previous value may be seen meanwhile");
            assert!(tokio::time::Instant::now() < deadline, "cache kept serving block {}", seen.head.block_number);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for _ in 0..20 {
            assert_eq!(cached.balance(app.contract, bob).await.unwrap().unwrap().balance, internal(i));
        }
    }
    // A rollback notifies too.
    let _ = raw(&app, "anvil_rollback", json!([1])).await;
    ix.sync_to_head().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while cached.balance(app.contract, bob).await.unwrap().unwrap().balance != internal(2) {
        assert!(tokio::time::Instant::now() < deadline, "cache kept the rolled-back balance");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(app.balance_of(bob).await, internal(2));
}

/// `serve`'s configuration: the API's reads through the cached reader. After each commit the
/// endpoints reach the new state promptly and never go back to the old one.
#[tokio::test]
async fn api_reads_through_the_cache_follow_every_commit() {
    let mut settings = Settings { receipt_timeout: Duration::from_secs(30), ..crate::harness::serve_settings() };
    settings.indexer.read_cache = true;
    let app = spawn_app_with(settings).await;
    let (alice, p) = funded_wallet(&app).await;
    deposit_direct(&app, &p, alice.address(), 100).await;
    let ix = indexer(&app, test_config());
    ix.sync_to_head().await.unwrap();
    let bob = wallet().address();
    async fn api_balance(app: &TestApp, who: Address) -> U256 {
        let (status, body) = app.get(&format!("/api/v1/USDC/payments/balance/{who}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["BalanceRaw"].as_str().unwrap().parse::<U256>().unwrap()
    }
    assert_eq!(api_balance(&app, bob).await, U256::ZERO);
    for i in 1..=3u64 {
        send_ok(StreamPay::new(app.contract, &p).pay(bob, internal(1))).await;
        ix.sync_to_head().await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let seen = api_balance(&app, bob).await;
            if seen == internal(i) {
                break;
            }
            assert_eq!(seen, internal(i - 1), "only the previous value may be seen meanwhile");
            assert!(tokio::time::Instant::now() < deadline, "the API kept serving the old balance");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for _ in 0..10 {
            assert_eq!(api_balance(&app, bob).await, internal(i));
        }
        assert_eq!(app.balance_of(bob).await, internal(i), "equal to the chain");
    }
    assert!(app.chain().index.cache_active(), "the API's reader is the cached one");
}

#[tokio::test]
async fn websocket_new_heads_wake_the_indexer_before_its_poll() {
    let app = spawn_app().await;
    // A chain of our own, reached over a websocket; the database is the test's.
    let anvil = alloy::node_bindings::Anvil::new()
        .path(std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/bin/anvil"))
        .try_spawn()
        .unwrap();
    let deployer: PrivateKeySigner = anvil.keys()[0].clone().into();
    let admin = ProviderBuilder::new().wallet(deployer.clone()).connect_http(anvil.endpoint_url()).erased();
    let token = *MockToken::deploy(&admin, "T".into(), "T".into()).await.unwrap().address();
    let permit2 = alloy::primitives::address!("0x000000000022D473030F116dDEE9F6B43aC78BA3");
    let contract = *StreamPay::deploy(&admin, token, permit2, U256::from(86_400u64)).await.unwrap().address();
    send_ok(MockToken::new(token, &admin).mint(deployer.address(), tokens(10))).await;
    send_ok(MockToken::new(token, &admin).approve(contract, U256::MAX)).await;

    let source = RpcLogSource::connect(&anvil.ws_endpoint()).await.unwrap();
    // A 30 s poll: only the subscription can make the index follow within the deadline below.
    let cfg = IndexerConfig { poll_interval: Duration::from_secs(30), ..test_config() };
    let ix = Indexer::new(Arc::new(source), app.store.pool().clone(), anvil.chain_id(), contract, 0, cfg);
    let status = ix.status();
    let task = tokio::spawn(ix.run(std::future::pending()));
    let r = IndexReader::new(app.store.pool().clone(), anvil.chain_id());
    wait_synced(&status, &admin).await;
    tokio::time::sleep(Duration::from_millis(200)).await; // now idle, waiting on the subscription

    send_ok(StreamPay::new(contract, &admin).deposit(tokens(3), false)).await;
    let started = std::time::Instant::now();
    let within = Duration::from_secs(5);
    wait_balance(
        &r,
        contract,
        deployer.address(),
        internal(3),
        within,
        "the new block was not indexed before the next poll",
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(5));
    task.abort();
}

#[tokio::test]
async fn heads_the_pipeline_reads_wake_the_indexer_before_its_poll() {
    let app = spawn_app().await;
    let (tell, heads) = tokio::sync::watch::channel(None);
    let source = RpcLogSource::new(app.provider.clone()).with_heads(heads);
    // A 30 s poll: only a told head can make the index follow within the deadline below.
    let cfg = IndexerConfig { poll_interval: Duration::from_secs(30), ..test_config() };
    let ix = indexer_with(&app, source, cfg);
    let status = ix.status();
    let task = tokio::spawn(ix.run(std::future::pending()));
    wait_synced(&status, &app.provider).await;
    tokio::time::sleep(Duration::from_millis(200)).await; // now idle, waiting for a told head

    let (user, p) = funded_wallet(&app).await;
    deposit_direct(&app, &p, user.address(), 4).await;
    let head = app.provider.get_block_number().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(status.borrow().indexed_block < head, "the indexer followed without being told (its poll is 30 s)");
    tell.send(Some(latest_header(&app).await)).unwrap();
    let within = Duration::from_secs(5);
    wait_balance(
        &reader(&app),
        app.contract,
        user.address(),
        internal(4),
        within,
        "a told head did not wake the indexer",
    )
    .await;
    task.abort();
}

#[tokio::test]
async fn a_told_head_the_node_does_not_have_yet_is_not_asked_for_again_and_again() {
    let app = spawn_app().await;
    let (tell, heads) = tokio::sync::watch::channel(None);
    let source = RpcLogSource::new(app.provider.clone()).with_heads(heads);
    let head = source.head().await.unwrap();
    // The teller reads a node ahead of this source's (a load balancer): the first wait does not
    // wait, the next ones wait for the poll, however often they are asked.
    tell.send(Some(made_up_header(head + 5, B256::ZERO))).unwrap();
    let poll = Duration::from_millis(300);
    let started = std::time::Instant::now();
    source.wait_for_block(poll).await;
    assert!(started.elapsed() < Duration::from_millis(200), "a new told head was waited for: {:?}", started.elapsed());
    for _ in 0..2 {
        assert_eq!(source.head().await.unwrap(), head, "the node stays behind the teller");
        let started = std::time::Instant::now();
        source.wait_for_block(poll).await;
        assert!(started.elapsed() >= poll, "returned after {:?}, before the poll: a spin", started.elapsed());
    }
    // A head told later is again not waited for.
    tell.send(Some(made_up_header(head + 6, B256::ZERO))).unwrap();
    let started = std::time::Instant::now();
    source.wait_for_block(poll).await;
    assert!(started.elapsed() < Duration::from_millis(200), "a new told head was waited for: {:?}", started.elapsed());
}

/// A header for block `number` with parent `parent` and a hash no node has.
fn made_up_header(number: u64, parent: B256) -> BlockHeader {
    BlockHeader { number, hash: B256::repeat_byte(0xab), parent_hash: parent, timestamp: 1 }
}

#[tokio::test]
async fn a_told_head_is_indexed_from_its_header_and_a_block_the_node_lacks_is_never_indexed() {
    let app = spawn_app().await;
    let (tell, heads) = tokio::sync::watch::channel(None);
    let ix = indexer_with(&app, RpcLogSource::new(app.provider.clone()).with_heads(heads), test_config());
    ix.sync_to_head().await.unwrap();
    let tip = latest_header(&app).await;

    // A block without logs of the contract, told with a hash the node does not have (a teller
    // that read another node, one fork away): asked for by number, its logs would be "none" and
    // the made-up hash would become the index's. The step fails instead and indexes nothing.
    let _ = raw(&app, "evm_mine", json!([])).await;
    tell.send(Some(made_up_header(tip.number + 1, tip.hash))).unwrap();
    let stepped = ix.step().await;
    assert!(stepped.is_err(), "a block the node lacks was indexed: {stepped:?}");
    assert_eq!(checkpoint(&app).await, (tip.number, tip.hash), "the index moved past its tip");

    // The real header, told: the index takes it as the head and indexes its block.
    let mined = latest_header(&app).await;
    tell.send(Some(mined)).unwrap();
    ix.sync_to_head().await.unwrap();
    assert_eq!(checkpoint(&app).await, (mined.number, mined.hash), "the told block was not indexed");
}

/// The chain's latest block, as a worker tells it.
async fn latest_header(app: &TestApp) -> BlockHeader {
    let b = app.provider.get_block_by_number(BlockNumberOrTag::Latest).await.unwrap().unwrap();
    BlockHeader {
        number: b.header.number,
        hash: b.header.hash,
        parent_hash: b.header.parent_hash,
        timestamp: b.header.timestamp,
    }
}

/// The index checkpoint's block number and hash, as stored.
async fn checkpoint(app: &TestApp) -> (u64, B256) {
    let (number, hash): (i64, Vec<u8>) =
        sqlx::query_as("SELECT block_number, block_hash FROM idx_checkpoints WHERE chain_id = $1 AND contract = $2")
            .bind(app.chain_id as i64)
            .bind(app.contract.as_slice())
            .fetch_one(app.store.pool())
            .await
            .unwrap();
    (number as u64, B256::from_slice(&hash))
}

#[tokio::test]
async fn reorg_inside_a_multi_block_batch_rolls_back_the_whole_batch_and_reingests() {
    let app = spawn_app().await;
    let (alice, p) = funded_wallet(&app).await;
    deposit_direct(&app, &p, alice.address(), 100).await;
    let ix = indexer(&app, test_config());
    ix.sync_to_head().await.unwrap();
    let receivers: Vec<Address> = (0..4).map(|_| wallet().address()).collect();
    for r in &receivers {
        send_ok(StreamPay::new(app.contract, signing(&app, &alice)).pay(*r, internal(1))).await;
    }
    ix.sync_to_head().await.unwrap(); // the four blocks arrive in one batch
    let undo_batches: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT block_number) FROM idx_undo WHERE batch_to IS NOT NULL")
            .fetch_one(app.store.pool())
            .await
            .unwrap();
    assert!(undo_batches >= 1);

    // Replace the last two blocks: the common ancestor is inside the batch.
    let head = app.provider.get_block_number().await.unwrap();
    let nonce = p.get_transaction_count(alice.address()).block_id(BlockId::number(head - 2)).await.unwrap();
    let other = wallet().address();
    let tx = signed_pay(&app, &alice, other, internal(5), nonce).await;
    let _ = raw(&app, "anvil_reorg", json!([2, [[tx, 0]]])).await;
    ix.sync_to_head().await.unwrap();
    let r = reader(&app);
    assert_eq!(r.balance(app.contract, other).await.unwrap().unwrap().balance, internal(5));
    assert_eq!(r.balance(app.contract, receivers[1]).await.unwrap().unwrap().balance, internal(1), "kept");
    assert_eq!(r.balance(app.contract, receivers[3]).await.unwrap().unwrap().balance, U256::ZERO, "orphaned");
    let mut accounts = receivers.clone();
    accounts.extend([alice.address(), other]);
    assert_index_matches_chain(&app, &accounts).await;
    assert_events_complete(&app).await;
}

#[tokio::test]
async fn indexer_spawned_for_the_api_follows_its_deployments() {
    let app = spawn_app().await;
    let tasks = app.start_indexers();
    let user = wallet();
    app.fund(&user, 7).await;
    let within = Duration::from_secs(10);
    wait_balance(
        &reader(&app),
        app.contract,
        user.address(),
        internal(7),
        within,
        "the API's indexer did not index the deposit",
    )
    .await;
    assert_index_matches_chain(&app, &[user.address()]).await;
    drop(tasks);
}

#[tokio::test]
async fn balance_and_subscriptions_endpoints_serve_the_index_once_it_exists() {
    let app = spawn_app().await;
    let (user, author) = (wallet(), wallet());
    app.fund(&user, 40).await;
    let built = app
        .build(
            "/api/v1/USDC/subscriptions",
            &json!({"from": user.address(), "author": author.address(), "subscription_rate": "30"}),
        )
        .await;
    app.execute_ok(&user, &built).await;
    let ix = indexer(&app, test_config());
    ix.sync_to_head().await.unwrap();
    let indexed = reader(&app).balance(app.contract, user.address()).await.unwrap().unwrap();

    // The chain moves on without the indexer: the endpoints keep answering from the index.
    app.advance(3_600).await;
    let (status, body) = app.get(&format!("/api/v1/USDC/payments/balance/{}", user.address())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["BalanceRaw"], json!(indexed.balance.to_string()));
    assert_ne!(app.balance_of(user.address()).await, indexed.balance, "the chain's live balance moved on");
    let (_, list) = app.get(&format!("/api/v1/USDC/subscriptions/{}", user.address())).await;
    let subs = reader(&app).subscriptions(app.contract, user.address()).await.unwrap().unwrap();
    assert_eq!(list["Subscriptions"][0]["To"], json!(author.address().to_checksum(None)));
    assert_eq!(list["Subscriptions"][0]["EncodedRates"], json!(subs.streams[0].encoded_rates.to_string()));

    // Caught up, the index equals the chain again.
    ix.sync_to_head().await.unwrap();
    let (_, body) = app.get(&format!("/api/v1/USDC/payments/balance/{}", user.address())).await;
    assert_eq!(body["BalanceRaw"], json!(app.balance_of(user.address()).await.to_string()));
}

#[tokio::test]
async fn authors_incoming_streams_come_from_the_index_and_match_the_chain() {
    let app = spawn_app().await;
    let (alice, bob, author) = (wallet(), wallet(), wallet());
    let path = format!("/api/v1/USDC/authors/{}/streams", author.address());

    // No index yet: the chain has no per-author view to fall back on.
    let (status, body) = app.get(&path).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "index_not_ready");

    for (who, rate) in [(&alice, "30"), (&bob, "12.5")] {
        app.fund(who, 100).await;
        let built = app
            .build(
                "/api/v1/USDC/subscriptions",
                &json!({"from": who.address(), "author": author.address(), "subscription_rate": rate}),
            )
            .await;
        app.execute_ok(who, &built).await;
    }
    indexer(&app, test_config()).sync_to_head().await.unwrap();

    let (status, body) = app.get(&path).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["Author"], json!(author.address().to_checksum(None)));
    let sp = StreamPay::new(app.contract, &app.provider);
    let streams = body["Streams"].as_array().expect("Streams");
    assert_eq!(streams.len(), 2, "{body}");
    let mut sum = U256::ZERO;
    for (stream, who) in streams.iter().zip([&alice, &bob]) {
        assert_eq!(stream["From"], json!(who.address().to_checksum(None)));
        let on_chain = sp.subscriptions(who.address(), author.address()).call().await.unwrap();
        assert!(on_chain._0, "the chain has the stream");
        assert_eq!(stream["EncodedRates"], json!(on_chain._1.to_string()));
        let income = on_chain._1 & ((U256::from(1) << 96usize) - U256::from(1));
        assert_eq!(stream["IncomeRate"], json!(income.to_string()));
        sum += income;
    }
    assert_eq!(body["StreamsIncomeRate"], json!(sum.to_string()));
    let info = sp.accountInfo(author.address()).call().await.unwrap();
    assert_eq!(body["IncomeRate"], json!(info.incomeRate.to_string()));
    assert_eq!(body["IndexedBlock"], json!(app.provider.get_block_number().await.unwrap()));

    let (status, body) = app.get("/api/v1/USDC/authors/0xnope/streams").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid_address");
}

#[tokio::test]
async fn the_final_block_follows_the_window_never_splits_a_batch_and_what_is_below_it_is_pruned() {
    // A window of 3 blocks. First a batch of several blocks (one undo journal for all of them),
    // then blocks one at a time: the final block is the head less the window, except that it
    // stays below the batch's journal until the whole batch is out of the window; undo entries at
    // or below it and block hashes below it are gone, the final block's own hash is kept.
    const WINDOW: u64 = 3;
    let app = spawn_app().await;
    let (alice, p) = funded_wallet(&app).await;
    deposit_direct(&app, &p, alice.address(), 100).await;
    let ix = indexer(&app, IndexerConfig { reorg_window: WINDOW, ..test_config() });
    ix.sync_to_head().await.unwrap();
    let pay = || async {
        send_ok(StreamPay::new(app.contract, signing(&app, &alice)).pay(wallet().address(), internal(1))).await
    };
    for _ in 0..4 {
        pay().await;
    }
    ix.sync_to_head().await.unwrap();
    let batch_to = app.provider.get_block_number().await.unwrap();
    // The journal of the batch that ends at the head: its lowest block is what holds the final
    // block back while the batch straddles the window's edge.
    let (batch_from, others): (Option<i64>, i64) = sqlx::query_as(
        "SELECT min(block_number) FILTER (WHERE batch_to = $1), count(*) FILTER (WHERE batch_to IS DISTINCT FROM $1)
         FROM idx_undo",
    )
    .bind(batch_to as i64)
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    let batch_from = batch_from.expect("a journaled batch ends at the head") as u64;
    assert!(
        batch_from < batch_to,
        "the batch spans several blocks: {batch_from}..={batch_to} ({others} other entries)"
    );
    let mut last_final = 0u64;
    for _ in 0..7 {
        pay().await;
        ix.sync_to_head().await.unwrap();
        let (head, _) = checkpoint(&app).await;
        let (final_block, undo_floor, blocks_floor, final_hash_kept): (i64, Option<i64>, Option<i64>, bool) =
            sqlx::query_as(
                "SELECT c.final_block,
                        (SELECT min(block_number) FROM idx_undo u WHERE u.chain_id = c.chain_id AND u.contract = c.contract),
                        (SELECT min(number) FROM idx_blocks b WHERE b.chain_id = c.chain_id AND b.contract = c.contract),
                        EXISTS (SELECT 1 FROM idx_blocks b WHERE b.chain_id = c.chain_id AND b.contract = c.contract
                                AND b.number = c.final_block)
                 FROM idx_checkpoints c WHERE c.chain_id = $1 AND c.contract = $2",
            )
            .bind(app.chain_id as i64)
            .bind(app.contract.as_slice())
            .fetch_one(app.store.pool())
            .await
            .unwrap();
        let candidate = head - WINDOW;
        let expected = if (batch_from..batch_to).contains(&candidate) { batch_from - 1 } else { candidate };
        let expected = expected.max(last_final);
        assert_eq!(final_block as u64, expected, "head {head}: batch {batch_from}..={batch_to}");
        assert!(undo_floor.is_none_or(|u| u as u64 > expected), "head {head}: undo entry at {undo_floor:?}");
        assert_eq!(blocks_floor, Some(expected as i64), "head {head}: block hashes kept from the final block on");
        assert!(final_hash_kept, "head {head}");
        last_final = expected;
    }
    assert!(last_final >= batch_to, "the batch left the window during the test (final {last_final})");
}

#[tokio::test]
async fn a_unique_nonce_whose_block_is_reorged_out_is_unused_again_in_the_index() {
    let app = spawn_app().await;
    let user = wallet();
    app.fund(&user, 10).await;
    let ix = indexer(&app, test_config());
    ix.sync_to_head().await.unwrap();
    let body = json!({"From": user.address(), "To": wallet().address(), "Amount": "1"});
    let built = app.build("/api/v1/USDC/payments/", &body).await;
    assert_eq!(built["Transaction"]["NonceType"], "unique");
    let nonce = U256::from(built["Transaction"]["Nonce"].as_u64().unwrap());
    app.execute_ok(&user, &built).await;
    // Nobody sends the call again once its block is gone.
    app.stop_pipelines().await;
    let sp = app.streampay();
    let indexed = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM idx_unique_nonces WHERE chain_id = $1 AND contract = $2 AND signer = $3
               AND nonce = $4::text::numeric",
        )
        .bind(app.chain_id as i64)
        .bind(app.contract.as_slice())
        .bind(user.address().as_slice())
        .bind(nonce.to_string())
        .fetch_one(app.store.pool())
        .await
        .unwrap()
    };
    ix.sync_to_head().await.unwrap();
    assert!(sp.bySigUniqueNonces(user.address(), nonce).call().await.unwrap());
    assert_eq!(indexed().await, 1, "the index records the unique nonce used");

    // The block that used it is replaced by an empty one.
    let _ = raw(&app, "anvil_reorg", json!([1, []])).await;
    assert!(!sp.bySigUniqueNonces(user.address(), nonce).call().await.unwrap(), "unused on chain again");
    ix.sync_to_head().await.unwrap();
    assert_eq!(indexed().await, 0, "the rollback gave the unique nonce back in the index");
    assert_index_matches_chain(&app, &[user.address()]).await;
}
