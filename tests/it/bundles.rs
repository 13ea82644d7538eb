//! Bundles: users' calls queued together for one sponsor go out in one transaction through the
//! contract's `bundle`, each keeping its own row and outcome.

use std::time::Duration;

use alloy::providers::Provider;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{internal, spawn_app, wallet};

/// Polls `GET /transactions/{id}` until the row is settled (at most 30 s).
async fn settled(app: &crate::harness::TestApp, id: i64) -> Value {
    let end = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, t) = app.get(&format!("/api/v1/transactions/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{t}");
        if !matches!(t["State"].as_str(), Some("pending" | "submitted")) {
            return t;
        }
        assert!(tokio::time::Instant::now() < end, "transaction {id} not settled in 30 s: {t}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (at most 60 s) until `n` executes hold an admission reservation: past admission, at (or
/// a policy read before) the enqueue.
async fn admitted(conn: &mut sqlx::PgConnection, n: i64) {
    reached(conn, "SELECT count(*) FROM admission_reservations", n).await
}

/// Waits (at most 60 s) until the count `sql` answers reaches `n` executes.
async fn reached(conn: &mut sqlx::PgConnection, sql: &str, n: i64) {
    let end = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let there: i64 = sqlx::query_scalar(sql).fetch_one(&mut *conn).await.unwrap();
        if there >= n {
            return;
        }
        assert!(tokio::time::Instant::now() < end, "only {there} of {n} executes reached the queue");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn calls_queued_together_go_out_as_one_bundle_and_a_call_that_fails_fails_alone() {
    // Six users each pay 4 of the 10 tokens they deposited, after a "blocker" user. The sponsor's
    // nonce row is held, so the blocker's call is queued alone and holds the sponsor's enqueue
    // lock; the six calls are admitted behind it and queued in one batch: one bundle.
    // Before the bundles go out, user 0 withdraws its deposit on chain itself: its payment, which
    // passed simulation, now fails inside its bundle; the other calls must stand, each row must
    // show its own outcome, and the chain's view functions must agree.
    let app = spawn_app().await;
    const B: usize = 1;
    const N: usize = 6;
    let users: Vec<_> = (0..B + N).map(|_| wallet()).collect();
    let recipients: Vec<_> = (0..B + N).map(|_| wallet().address()).collect();
    for u in &users {
        app.deposit_directly(u.address(), 10).await;
    }
    app.sync_index().await;
    let mut bodies = Vec::new();
    for (u, to) in users.iter().zip(&recipients) {
        let built = app.build("/api/v1/USDC/payments", &json!({"From": u.address(), "To": to, "Amount": "4"})).await;
        bodies.push(app.signed_execute_body(u, &built).await);
    }

    use sqlx::Connection;
    let mut locker = sqlx::PgConnection::connect(&app.db_url).await.unwrap();
    let mut watcher = sqlx::PgConnection::connect(&app.db_url).await.unwrap();
    // The workers create their sponsors' rows as they start.
    let end = tokio::time::Instant::now() + Duration::from_secs(20);
    let lock = loop {
        let mut lock = locker.begin().await.unwrap();
        let held: Vec<i32> = sqlx::query_scalar("SELECT 1 FROM sponsor_accounts WHERE chain_id = $1 FOR UPDATE")
            .bind(app.chain_id as i64)
            .fetch_all(&mut *lock)
            .await
            .unwrap();
        if held.len() >= 2 {
            break lock;
        }
        lock.rollback().await.unwrap();
        assert!(tokio::time::Instant::now() < end, "the sponsors' rows were not created");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let app_ref = &app;
    let execute = move |b: &Value| {
        let b = b.clone();
        async move {
            let resp = app_ref.execute_async(&b).await;
            let status = resp.status();
            let out: Value = resp.json().await.unwrap();
            assert_eq!(status, StatusCode::ACCEPTED, "{out}");
            out["TransactionId"].as_i64().unwrap_or_else(|| panic!("no transaction id: {out}"))
        }
    };
    let mut watcher2 = sqlx::PgConnection::connect(&app.db_url).await.unwrap();
    let (blockers, bodies) = bodies.split_at(B);
    let blockers_f = futures::future::join_all(blockers.iter().map(execute));
    let others_f = async {
        admitted(&mut watcher2, B as i64).await;
        // The blocker was admitted; give it a moment to reach the sponsor's nonce row (one RPC),
        // so that the six queue behind it. Were it not there yet, the six would still share a
        // batch with it (the assertions below would show it).
        tokio::time::sleep(Duration::from_millis(300)).await;
        futures::future::join_all(bodies.iter().map(execute)).await
    };
    let drain_then_release = async {
        admitted(&mut watcher, (B + N) as i64).await;
        // All six were simulated and admitted: now user 0 takes its deposit out directly.
        let all = app.balance_of(users[B].address()).await;
        assert_eq!(all, internal(10), "user 0's deposit");
        let r =
            app.streampay().withdraw(all).from(users[B].address()).send().await.unwrap().get_receipt().await.unwrap();
        assert!(r.status(), "direct withdrawal");
        lock.rollback().await.unwrap();
    };
    let (_, ids, ()) = tokio::join!(blockers_f, others_f, drain_then_release);
    let users = &users[B..];
    let recipients = &recipients[B..];

    let mut rows = Vec::new();
    for id in &ids {
        rows.push(settled(&app, *id).await);
    }
    // Each sponsor's calls shared one transaction.
    let bundled: Vec<(i64, i64, i32)> = sqlx::query_as(
        "SELECT id, bundle_id, bundle_index FROM relay_transactions WHERE id = ANY($1) AND bundle_id IS NOT NULL",
    )
    .bind(&ids)
    .fetch_all(app.store.pool())
    .await
    .unwrap();
    assert_eq!(bundled.len(), N, "every one of the six calls was bundled: {bundled:?}");
    assert!(bundled.iter().any(|(id, _, _)| *id == ids[0]), "user 0's call is in a bundle: {bundled:?}");
    let mut by_hash: std::collections::HashMap<String, Vec<&Value>> = Default::default();
    for r in &rows {
        by_hash.entry(r["TransactionHash"].as_str().unwrap().to_string()).or_default().push(r);
    }
    assert_eq!(by_hash.len(), 1, "six calls queued together, one bundle: {rows:?}");

    // User 0's call failed alone, decoded; every other call was mined.
    for (i, r) in rows.iter().enumerate() {
        if i == 0 {
            assert_eq!(r["State"], "failed", "{r}");
            assert_eq!(r["Failure"], "reverted", "{r}");
            let reason = r["RevertReason"].as_str().unwrap_or_default();
            assert!(!reason.is_empty() && !reason.contains("not reproducible"), "{r}");
        } else {
            assert!(matches!(r["State"].as_str(), Some("mined" | "confirmed")), "call {i}: {r}");
        }
        assert!(r["Hashes"].as_array().is_some_and(|h| h.len() == 1 && h[0] == r["TransactionHash"]), "call {i}: {r}");
    }
    // The chain agrees: paid where mined, nothing moved for user 0.
    for (i, (u, to)) in users.iter().zip(recipients).enumerate() {
        let (paid, left) = if i == 0 { (0, 0) } else { (4, 6) };
        assert_eq!(app.balance_of(*to).await, internal(paid), "recipient of call {i}");
        assert_eq!(app.balance_of(u.address()).await, internal(left), "user {i}");
    }
    // Each transaction's gas is shared out exactly among its calls.
    for (hash, rows) in &by_hash {
        let receipt = app.provider.get_transaction_receipt(hash.parse().unwrap()).await.unwrap().unwrap();
        let shared: u64 = rows.iter().map(|r| r["GasUsed"].as_u64().unwrap()).sum();
        assert_eq!(shared, receipt.gas_used, "transaction {hash}");
        if rows.len() > 1 {
            assert!(receipt.status(), "a bundle stands when one of its calls fails: {hash}");
        }
    }
    // Admission's daily spend (the ledger) prices each bundled call at the bundle's fee, as the
    // sum over the day's rows does: for a signer in the bundle and for the key.
    let (ledger, rows) = crate::admission::spend_both_ways(&mut watcher, &app, users[1].address()).await;
    assert_eq!(ledger, rows, "(signer, key) spend: ledger vs rows");
    assert!(ledger.0 != "0" && ledger.1 != ledger.0, "a bundled signer's spend is counted: {ledger:?}");
}

/// The hold: synchronous calls queued while the sponsor's previous transaction is on its way to a
/// block wait for it (the chain has made its blocks quickly so far) and then go out together in
/// one bundle, in a later block. Five calls are posted (`respond_async`: asking for the 202) while
/// the chain holds that transaction; answers the rows `(id, bundle_id, block_number)` and how many
/// rows were written before the chain mined it.
async fn calls_behind_a_transaction_on_its_way(
    hold: Duration,
    respond_async: bool,
) -> (Vec<(i64, Option<i64>, Option<i64>)>, usize) {
    use crate::pipeline_stack::{Stack, fast_settings};
    use sqlx::Connection;
    use streampay_relayer::pipeline::PipelineSettings;
    let stack = Stack::start(&[]).await;
    let relayer = stack.replica(PipelineSettings { bundle_hold: hold, ..fast_settings() }).await;
    const N: usize = 5;
    let users = stack.users(N + 2);
    stack.fund_wallets(&users, 10, true).await;
    let mut bodies = Vec::new();
    for u in &users {
        bodies.push(stack.signed_deposit(&relayer.base, u, 10).await);
    }
    let path = "/api/v1/USDC/meta/execute";
    // One call mined at once (automine): the relayer sees the chain make blocks quickly (well
    // within a tenth of the hold).
    let (status, out) = stack.post(&relayer.base, path, &bodies[0], &[]).await;
    assert_eq!(status, StatusCode::OK, "{out}");
    // Then the chain stops mining: the next call is sent and stays on its way.
    let _: Value = stack.provider.raw_request("evm_setAutomine".into(), (false,)).await.unwrap();
    let async_: &[(&str, &str)] = &[("Prefer", "respond-async")];
    let (status, out) = stack.post(&relayer.base, path, &bodies[1], async_).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{out}");
    let end = tokio::time::Instant::now() + Duration::from_secs(20);
    while stack.rows().await.iter().filter(|(s, _)| s == "submitted").count() < 1 {
        assert!(tokio::time::Instant::now() < end, "the second call was not sent: {:?}", stack.rows().await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut watcher = sqlx::PgConnection::connect(&stack.db_url).await.unwrap();
    let headers = if respond_async { async_ } else { &[] };
    let posts = futures::future::join_all(bodies[2..].iter().map(|b| stack.post(&relayer.base, path, b, headers)));
    let mine = async {
        // Each of the five is either admitted and on its way to the queue, or already queued.
        let sql =
            "SELECT (SELECT count(*) FROM admission_reservations) + (SELECT count(*) - 2 FROM relay_transactions)";
        reached(&mut watcher, sql, N as i64).await;
        // A moment more and each waits in the sponsor's queue (or was queued).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let written: i64 =
            sqlx::query_scalar("SELECT count(*) FROM relay_transactions").fetch_one(stack.store.pool()).await.unwrap();
        stack.mine().await;
        // The five are queued and sent (held until now, or sent before); then the chain mines again.
        let end = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let rows = stack.rows().await;
            if rows.len() == N + 2 && rows.iter().all(|(s, _)| s != "pending") {
                break;
            }
            assert!(tokio::time::Instant::now() < end, "the five were not sent: {rows:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _: Value = stack.provider.raw_request("evm_setAutomine".into(), (true,)).await.unwrap();
        stack.mine().await;
        written as usize
    };
    let (answers, written) = tokio::join!(posts, mine);
    let expected = if respond_async { StatusCode::ACCEPTED } else { StatusCode::OK };
    for (status, out) in &answers {
        assert_eq!(*status, expected, "{out}");
    }
    stack.settle(true, Duration::from_secs(30)).await;
    stack.assert_exactly_once(&users, 10, 0).await;
    let rows: Vec<(i64, Option<i64>, Option<i64>)> =
        sqlx::query_as("SELECT id, bundle_id, block_number FROM relay_transactions ORDER BY id")
            .fetch_all(stack.store.pool())
            .await
            .unwrap();
    (rows, written)
}

#[tokio::test]
async fn calls_queued_while_the_sponsors_transaction_is_on_its_way_wait_for_it_and_share_one_bundle() {
    let (rows, written) = calls_behind_a_transaction_on_its_way(Duration::from_secs(30), false).await;
    assert_eq!(written, 2, "the five calls were held until the transaction before them was mined: {rows:?}");
    let (held, before) = (&rows[2..], &rows[1]);
    let leader = held[0].1.unwrap_or_else(|| panic!("the five calls were bundled: {rows:?}"));
    assert!(held.iter().all(|r| r.1 == Some(leader)), "the five calls share one bundle: {rows:?}");
    assert!(
        held.iter().all(|r| r.2 > before.2),
        "the bundle went out after the transaction it waited for was mined, in a later block: {rows:?}"
    );
}

#[tokio::test]
async fn without_the_hold_the_same_calls_go_out_at_once_beside_the_transaction_on_its_way() {
    // The test above, with `pipeline.bundle_hold_ms` 0: its assertions would fail.
    let (rows, written) = calls_behind_a_transaction_on_its_way(Duration::ZERO, false).await;
    assert!(written > 2, "with no hold the calls were queued before the block: {rows:?}");
    assert!(rows[2..].iter().all(|r| r.2 == rows[1].2), "and mined in the same block as it: {rows:?}");
}

#[tokio::test]
async fn calls_whose_callers_asked_for_the_202_are_not_held() {
    // The same five calls, each posted with `Prefer: respond-async`: their callers wait only for
    // the call to be queued, so they are not held for the transaction on its way.
    let (rows, written) = calls_behind_a_transaction_on_its_way(Duration::from_secs(30), true).await;
    assert!(written > 2, "the calls were queued at once: {rows:?}");
    assert!(rows[2..].iter().all(|r| r.2 == rows[1].2), "and mined in the same block as the one before: {rows:?}");
}

#[tokio::test]
async fn where_the_chain_makes_blocks_slowly_a_call_does_not_wait_for_the_transaction_before_it() {
    // The chain makes a block every 4 s or so, slower than a tenth of the 3 s hold: a call queued
    // while the sponsor's previous transaction is on its way must go out at once, not wait for it
    // (it would only miss the block it could share).
    use crate::pipeline_stack::{Stack, fast_settings};
    use streampay_relayer::pipeline::PipelineSettings;
    let stack = Stack::start(&["--no-mining"]).await;
    let hold = Duration::from_secs(3);
    let relayer = stack.replica(PipelineSettings { bundle_hold: hold, ..fast_settings() }).await;
    let users = stack.users(3);
    stack.fund_wallets(&users, 10, false).await;
    let mut bodies = Vec::new();
    for u in &users {
        bodies.push(stack.signed_deposit(&relayer.base, u, 10).await);
    }
    let path = "/api/v1/USDC/meta/execute";
    let async_ = &[("Prefer", "respond-async")];
    let submitted = |n: usize| {
        let stack = &stack;
        async move {
            let end = tokio::time::Instant::now() + Duration::from_secs(20);
            while stack.rows().await.iter().filter(|(s, _)| s == "submitted").count() < n {
                assert!(tokio::time::Instant::now() < end, "not sent: {:?}", stack.rows().await);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let (status, out) = stack.post(&relayer.base, path, &bodies[0], async_).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{out}");
    submitted(1).await;
    // The chain takes 4 s to mine it.
    tokio::time::sleep(Duration::from_secs(4)).await;
    stack.settle(true, Duration::from_secs(20)).await;
    let (status, out) = stack.post(&relayer.base, path, &bodies[1], async_).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{out}");
    submitted(1).await;
    // A synchronous execute (its caller waits for the block anyway, so it could be held).
    let started = tokio::time::Instant::now();
    let post = stack.post(&relayer.base, path, &bodies[2], &[]);
    let queued_then_mined = async {
        // Both are on their way together, each its own transaction.
        submitted(2).await;
        let queued = started.elapsed();
        stack.mine().await;
        queued
    };
    let ((status, out), queued) = tokio::join!(post, queued_then_mined);
    assert_eq!(status, StatusCode::OK, "{out}");
    assert!(queued < hold / 2, "the call was held behind the transaction on its way: sent after {queued:?}");
    stack.settle(true, Duration::from_secs(20)).await;
    stack.assert_exactly_once(&users, 10, 0).await;
}
