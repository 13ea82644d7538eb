//! The liquidation keeper against a real Anvil and a real Postgres: its prediction equals the
//! contract's own `isLiquidatable` to the second, it liquidates an account that runs dry once
//! that second comes (through the sponsor pipeline, exactly once), leaves a healthy account
//! alone, and trusts the chain over a lagging index.

use std::{sync::Arc, time::Duration};

use alloy::{
    primitives::{Address, U256},
    providers::Provider,
    signers::local::PrivateKeySigner,
};
use serde_json::{Value, json};
use sqlx::Row;
use streampay_relayer::{
    indexer::{Indexer, IndexerConfig, RpcLogSource},
    keeper::{Keeper, KeeperSettings, liquidatable_at},
    supervisor::CancellationToken,
};

use crate::harness::{LIQUIDATION_WINDOW, ServeProcess, TestApp, spawn_app, wallet};

/// Fast passes; one native coin priced at 10^6 tokens so these timing tests' rewards (about one
/// token) always pay for their gas (profitability has its own test with the default price).
fn settings() -> KeeperSettings {
    KeeperSettings {
        poll_interval: Duration::from_millis(100),
        native_price_in_token: U256::from(1u64),
        ..KeeperSettings::default()
    }
}

fn indexer(app: &TestApp) -> Indexer<RpcLogSource> {
    let cfg = IndexerConfig { poll_interval: Duration::from_millis(20), ..IndexerConfig::default() };
    Indexer::new(
        Arc::new(RpcLogSource::new(app.provider.clone())),
        app.store.pool().clone(),
        app.chain_id,
        app.contract,
        0,
        cfg,
    )
}

/// Funds `user` with `n` tokens and subscribes it to `author` at `monthly` tokens a month.
async fn subscribe(app: &TestApp, user: &PrivateKeySigner, author: Address, n: u64, monthly: &str) {
    app.fund(user, n).await;
    let built = app
        .build(
            "/api/v1/USDC/subscriptions",
            &json!({"from": user.address(), "author": author, "subscription_rate": monthly}),
        )
        .await;
    app.execute_ok(user, &built).await;
}

/// Mines the next block at exactly `t`.
async fn mine_at(app: &TestApp, t: u64) {
    let _: Value = app.provider.raw_request("evm_setNextBlockTimestamp".into(), (t,)).await.expect("set timestamp");
    let _: Value = app.provider.raw_request("evm_mine".into(), ()).await.expect("evm_mine");
    assert_eq!(app.chain_time().await, t);
}

/// The prediction from the chain's own `accountInfo`.
async fn predicted_from_chain(app: &TestApp, who: Address) -> u64 {
    let info = app.streampay().accountInfo(who).call().await.unwrap();
    liquidatable_at(
        info.balance,
        info.incomeRate,
        info.outgoingRate,
        info.updated.to::<u64>(),
        U256::from(LIQUIDATION_WINDOW),
    )
    .expect("an account with a net outflow has a liquidation time")
}

/// Rows the keeper queued (no API key).
async fn keeper_rows(app: &TestApp) -> Vec<(i64, String)> {
    sqlx::query("SELECT id, status FROM relay_transactions WHERE api_key_id IS NULL ORDER BY id")
        .fetch_all(app.store.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

async fn wait_for(what: &str, secs: u64, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn keeper_prediction_equals_the_contract_one_second_before_and_at_the_boundary() {
    let app = spawn_app().await;
    let (user, author) = (wallet(), wallet());
    // 30 tokens a month is 11_574_074_074_074 units/s: a window of outflow is not a round number.
    subscribe(&app, &user, author.address(), 10, "30").await;
    indexer(&app).sync_to_head().await.unwrap();

    let keeper = Keeper::new(app.store.clone(), app.chain().clone(), settings()).unwrap();
    let watched = keeper.watched(app.contract).await.unwrap();
    assert_eq!(watched.len(), 1, "{watched:?}");
    assert_eq!(watched[0].account, user.address());
    let due = watched[0].due;
    assert_eq!(due, predicted_from_chain(&app, user.address()).await, "index and chain predict the same second");
    let now = app.chain_time().await;
    assert!(due > now + LIQUIDATION_WINDOW, "a fresh subscription covers more than a window: due {due}, now {now}");

    let sp = app.streampay();
    mine_at(&app, due - 1).await;
    assert!(!sp.isLiquidatable(user.address()).call().await.unwrap(), "one second before: not liquidatable");
    let pass = keeper.pass().await.unwrap();
    assert!(pass.queued.is_empty() && pass.skipped.is_empty(), "{pass:?}");
    mine_at(&app, due).await;
    assert!(sp.isLiquidatable(user.address()).call().await.unwrap(), "at the predicted second: liquidatable");
}

#[tokio::test]
async fn keeper_liquidates_an_account_that_runs_dry_on_time_and_leaves_a_healthy_one_alone() {
    let app = spawn_app().await;
    let (poor, rich, author) = (wallet(), wallet(), wallet());
    subscribe(&app, &poor, author.address(), 10, "30").await;
    subscribe(&app, &rich, author.address(), 100, "30").await;
    let index = tokio::spawn(indexer(&app).run(std::future::pending()));
    let keeper = Keeper::new(app.store.clone(), app.chain().clone(), settings()).unwrap();
    assert_eq!(keeper.sponsor(), app.sponsor);
    let keeper = tokio::spawn(async move { keeper.run(CancellationToken::new()).await });

    let due = predicted_from_chain(&app, poor.address()).await;
    assert!(predicted_from_chain(&app, rich.address()).await > due + 80 * 86_400);
    let sp = app.streampay();

    // Shortly before: nothing is sent.
    mine_at(&app, due - 5).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(keeper_rows(&app).await.is_empty(), "nothing queued before the predicted time");
    assert_eq!(sp.allSubscriptions(poor.address()).call().await.unwrap().authors.len(), 1);

    // The predicted second comes: the keeper liquidates from its sponsor.
    mine_at(&app, due).await;
    wait_for("the liquidation", 15, async || {
        sp.accountInfo(poor.address()).call().await.unwrap().outgoingRate.is_zero()
    })
    .await;
    assert!(sp.allSubscriptions(poor.address()).call().await.unwrap().authors.is_empty(), "every stream stopped");
    assert_eq!(app.balance_of(poor.address()).await, U256::ZERO, "the remaining balance went to the liquidator");
    assert!(!sp.isLiquidatable(poor.address()).call().await.unwrap());

    // The Liquidated event, indexed: liquidator is the keeper's sponsor, its reward credited.
    let mut event = None;
    wait_for("the indexed Liquidated event", 10, async || {
        event =
            sqlx::query("SELECT a2, v1::text, v2::text, block_timestamp FROM idx_events WHERE kind = 4 AND a1 = $1")
                .bind(poor.address().as_slice())
                .fetch_optional(app.store.pool())
                .await
                .unwrap();
        event.is_some()
    })
    .await;
    let event = event.unwrap();
    assert_eq!(Address::from_slice(event.get::<&[u8], _>(0)), app.sponsor);
    let reward: U256 = event.get::<&str, _>(1).parse().unwrap();
    assert!(reward > U256::ZERO, "liquidated on time: a window's worth was still there");
    assert_eq!(event.get::<&str, _>(2), "1", "one stream stopped");
    assert_eq!(app.balance_of(app.sponsor).await, reward);
    let mined_at = event.get::<i64, _>(3) as u64;
    assert!((due..due + 30).contains(&mined_at), "liquidated at {mined_at}, due {due}");

    // The healthy account keeps streaming; exactly one liquidation was ever queued.
    assert!(!sp.isLiquidatable(rich.address()).call().await.unwrap());
    assert_eq!(sp.allSubscriptions(rich.address()).call().await.unwrap().authors, vec![author.address()]);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let rows = keeper_rows(&app).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(["mined", "confirmed"].contains(&rows[0].1.as_str()), "{rows:?}");
    // Keeper rows belong to no API key: clients never see them.
    let (status, _) = app.get(&format!("/api/v1/transactions/{}", rows[0].0)).await;
    assert_eq!(status, reqwest::StatusCode::NOT_FOUND);
    keeper.abort();
    index.abort();
}

#[tokio::test]
async fn keeper_queues_once_per_episode_and_trusts_the_chain_over_a_lagging_index() {
    let app = spawn_app().await;
    let (poor, rescued, author) = (wallet(), wallet(), wallet());
    subscribe(&app, &poor, author.address(), 10, "30").await;
    subscribe(&app, &rescued, author.address(), 10, "30").await;
    indexer(&app).sync_to_head().await.unwrap();
    let keeper = Keeper::new(app.store.clone(), app.chain().clone(), settings()).unwrap();
    let watched = keeper.watched(app.contract).await.unwrap();
    assert_eq!(watched.len(), 2);

    // `rescued` tops up on its own (not through the relayer); the index (not running) does not know.
    app.deposit_directly(rescued.address(), 50).await;
    let due = watched.iter().map(|w| w.due).max().unwrap();
    mine_at(&app, due).await;

    let pass = keeper.pass().await.unwrap();
    assert_eq!(pass.queued.iter().map(|q| q.account).collect::<Vec<_>>(), vec![poor.address()], "{pass:?}");
    assert_eq!(pass.skipped, vec![rescued.address()], "the chain says the rescued account is fine");
    // Again at once, and after it is mined (the index still shows the old state): no second send.
    assert!(keeper.pass().await.unwrap().queued.is_empty());
    let id = pass.queued[0].transaction_id;
    wait_for("the liquidation to be mined", 15, async || {
        keeper_rows(&app).await.iter().any(|(i, s)| *i == id && (s == "mined" || s == "confirmed"))
    })
    .await;
    assert!(keeper.pass().await.unwrap().queued.is_empty());
    assert_eq!(keeper_rows(&app).await.len(), 1);
    assert!(app.streampay().accountInfo(poor.address()).call().await.unwrap().outgoingRate.is_zero());

    // Caught up, the index no longer has the liquidated account at risk, and predicts the
    // rescued one later.
    indexer(&app).sync_to_head().await.unwrap();
    let watched = keeper.watched(app.contract).await.unwrap();
    assert_eq!(watched.iter().map(|w| w.account).collect::<Vec<_>>(), vec![rescued.address()]);
    assert!(watched[0].due > app.chain_time().await);
    assert_eq!(watched[0].due, predicted_from_chain(&app, rescued.address()).await);
}

#[tokio::test]
async fn keeper_runs_on_one_replica_and_a_standby_takes_over_when_it_dies() {
    let app = spawn_app().await;
    let (poor, author) = (wallet(), wallet());
    subscribe(&app, &poor, author.address(), 10, "30").await;
    indexer(&app).sync_to_head().await.unwrap();

    // Another replica's keeper holds the lock (on its own connection) and then dies.
    let mut other = app.store.pool().acquire().await.unwrap().detach();
    let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
        .bind(format!("streampay-keeper:{}", app.chain_id))
        .fetch_one(&mut other)
        .await
        .unwrap();
    assert!(got);
    let standby = Keeper::new(app.store.clone(), app.chain().clone(), settings()).unwrap();
    let standby = tokio::spawn(async move { standby.run(CancellationToken::new()).await });
    mine_at(&app, predicted_from_chain(&app, poor.address()).await).await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert!(keeper_rows(&app).await.is_empty(), "the standby does nothing while the lock is held elsewhere");

    sqlx::Connection::close(other).await.unwrap();
    let sp = app.streampay();
    wait_for("the standby to take over and liquidate", 15, async || {
        sp.accountInfo(poor.address()).call().await.unwrap().outgoingRate.is_zero()
    })
    .await;
    assert_eq!(keeper_rows(&app).await.len(), 1);
    standby.abort();
}

/// The first of `serve`'s log lines, all of which must be JSON, that satisfies `pred`.
fn find_json(serve: &ServeProcess, pred: impl Fn(&Value) -> bool) -> Option<Value> {
    serve
        .lines()
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}")))
        .find(|v| pred(v))
}

#[tokio::test]
async fn keeper_and_json_logs_with_request_ids_in_the_streampay_serve_binary() {
    let app = spawn_app().await;
    let (poor, author) = (wallet(), wallet());
    subscribe(&app, &poor, author.address(), 10, "30").await;
    let dir = std::env::temp_dir().join(format!("streampay-keeper-serve-{}", poor.address()));
    std::fs::create_dir_all(&dir).unwrap();
    let serve = ServeProcess::start(
        &app,
        &dir,
        &[("STREAMPAY_KEEPER_POLL_INTERVAL_MS", "100"), ("STREAMPAY_INDEXER_POLL_MS", "50")],
    )
    .await;

    // Every line is JSON (checked by the reader); a request's lines carry its id.
    let resp =
        app.http.get(format!("{}/api/v1/meta", serve.base)).header("X-Request-Id", "e2e-req-7").send().await.unwrap();
    assert_eq!(resp.headers()["x-request-id"], "e2e-req-7");
    wait_for("the request's log line", 10, async || {
        find_json(&serve, |l| l["span"]["request_id"] == "e2e-req-7" && l["message"] == "finished processing request")
            .is_some()
    })
    .await;

    // The keeper serve started liquidates once the chain reaches the predicted second.
    mine_at(&app, predicted_from_chain(&app, poor.address()).await).await;
    let sp = app.streampay();
    wait_for("serve's keeper to liquidate", 20, async || {
        sp.accountInfo(poor.address()).call().await.unwrap().outgoingRate.is_zero()
    })
    .await;
    let checksum = poor.address().to_string();
    wait_for("the keeper's log line", 10, async || {
        find_json(&serve, |l| l["message"] == "liquidation queued" && l["account"] == checksum.as_str()).is_some()
    })
    .await;
    let mut child = serve.child;
    child.kill().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Review S5: the keeper liquidates only when the reward covers its gas with the margin (at the
/// default price), and within its own daily budget.
#[tokio::test]
async fn keeper_skips_dust_liquidates_what_pays_and_stays_within_its_budget() {
    let app = spawn_app().await;
    let (dust, rich, author) = (wallet(), wallet(), wallet());
    // 1 token a month: a window of outflow is ~0.03 tokens, the most a liquidation can earn.
    subscribe(&app, &dust, author.address(), 1, "1").await;
    // 100 a month from 100 tokens: due the same day, with a window (~3.3 tokens) left to earn.
    subscribe(&app, &rich, author.address(), 100, "100").await;
    let t = predicted_from_chain(&app, dust.address()).await.max(predicted_from_chain(&app, rich.address()).await);
    mine_at(&app, t).await;
    app.sync_index().await;
    let sp = app.streampay();
    assert!(
        sp.isLiquidatable(dust.address()).call().await.unwrap()
            && sp.isLiquidatable(rich.address()).call().await.unwrap()
    );

    // Default price and margin, a budget of 1 wei: the dust is unprofitable, the rich one over budget.
    let defaults = KeeperSettings::default();
    assert!(defaults.daily_budget_wei.is_some() && defaults.min_profit_percent > 100);
    let broke = Keeper::new(
        app.store.clone(),
        app.chain().clone(),
        KeeperSettings { daily_budget_wei: Some(U256::from(1u64)), ..defaults.clone() },
    )
    .unwrap();
    let pass = broke.pass().await.unwrap();
    assert_eq!(pass.unprofitable, vec![dust.address()], "{pass:?}");
    assert_eq!(pass.over_budget, vec![rich.address()], "{pass:?}");
    assert!(pass.queued.is_empty(), "{pass:?}");
    assert!(keeper_rows(&app).await.is_empty(), "nothing queued");

    // Defaults: the rich one is liquidated, the dust still is not.
    let keeper = Keeper::new(app.store.clone(), app.chain().clone(), defaults).unwrap();
    let pass = keeper.pass().await.unwrap();
    assert_eq!(pass.queued.iter().map(|q| q.account).collect::<Vec<_>>(), vec![rich.address()], "{pass:?}");
    assert_eq!(pass.unprofitable, vec![dust.address()], "{pass:?}");
    wait_for("the rich account's liquidation", 30, async || !sp.isLiquidatable(rich.address()).call().await.unwrap())
        .await;
    assert!(sp.isLiquidatable(dust.address()).call().await.unwrap(), "the dust account is left alone");
}
